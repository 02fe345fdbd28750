//! `piforge flash`: write an image to a card (or a file) fast and provably.
//!
//! Plan, then apply. [`plan`] reads the source's block map (the `.bmap` beside it, else one
//! computed from the image's filesystems by [`crate::bmap::map_image`]) and everything about
//! the target, and refuses a target that would hurt (mounted, swap, the system disk, too
//! small, not removable without `force`) before a byte is written. [`apply`] then
//!
//! 1. makes what the map leaves out read as zeros, or discards it: a regular file is resized
//!    to the image and holes are punched; a block device gets BLKDISCARD over each unmapped
//!    range of the image, explicit zeros over its first MiB, and BLKZEROOUT over every
//!    unmapped range when the device offloads zeroing or the map is not one made from
//!    filesystem allocation (a `bmaptool create` map leaves out the image file's holes, which
//!    a filesystem may expect to read as zeros; a piforge map leaves out only free blocks,
//!    which no filesystem reads);
//! 2. writes the mapped ranges, read or decompressed on another thread ([`reader`]) and
//!    hashed on a third, in large writes (O_DIRECT on block devices), holding back the first
//!    MiB (the partition table): an interrupted write leaves a card that no system takes for
//!    a disk with partitions;
//! 3. syncs, writes the first MiB, syncs again;
//! 4. verifies: reads every mapped range back around the page cache (O_DIRECT, after
//!    BLKFLSBUF and `posix_fadvise(DONTNEED)`) and compares it with the block map's
//!    checksum, naming the first range that differs.
//!
//! `PIFORGE_FLASH_TRACE=1` (hidden, for benchmarks) prints on stderr when each write phase
//! ended (seconds since the target was opened) and how long the writer waited for the reader.

mod aligned;
pub mod bmap_file;
pub mod device;
mod reader;
pub mod target;
mod verify;
mod xz_size;

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::progress::{Progress, Task};
use crate::source;
use aligned::AlignedBuf;
pub use device::DeviceInfo;
use reader::{Input, Msg};
pub use target::Kind;
use target::Target;
use verify::{corrupt, verify};

/// The head of the target written last: the partition table and what follows it up to the
/// first partition (which starts at 1 MiB or later on every Pi image).
pub const HEAD: u64 = 1 << 20;

/// Mapped ranges at most this far apart are written as one, with the image's bytes between
/// them (`--max-gap`): one large write instead of two smaller ones and a seek. Writing those
/// bytes is correct, whatever they are: they are the image's own (a free block's old content,
/// or a hole's zeros), as `dd` would write them; the verify still reads back the mapped
/// ranges only. Off by default: measured (BENCHMARKS.md, a bmaptool map of 3,292 ranges of
/// 64 KiB with 4-508 KiB gaps), joining across 256 KiB or 1 MiB wrote 2-5x the bytes and was
/// slower on a file and on a loop device (file: write 0.7 s alone, 3.6 s joined at 1 MiB);
/// it may pay on a card whose random writes are slow, which this machine cannot measure.
pub const MAX_GAP: u64 = 0;

/// Which blocks of an image to write, with a SHA-256 per range where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Map {
    pub image_bytes: u64,
    pub block_size: u64,
    pub ranges: Vec<Range>,
    pub origin: MapOrigin,
}

/// Blocks `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub first: u64,
    pub last: u64,
    pub sha256: Option<[u8; 32]>,
}

/// What left the unmapped blocks out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOrigin {
    /// The filesystems' allocation (piforge's maps): every metadata block is mapped, what is
    /// left out is free space no filesystem reads.
    Filesystems,
    /// Another tool (`bmaptool create` maps the image file's data, not its holes): what is
    /// left out must read as zeros.
    Foreign,
}

impl Map {
    /// The bytes `[start, end)` of a range (the image's last block may be short).
    pub fn byte_range(&self, r: &Range) -> (u64, u64) {
        (
            r.first * self.block_size,
            ((r.last + 1) * self.block_size).min(self.image_bytes),
        )
    }

    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| {
                let (a, b) = self.byte_range(r);
                b - a
            })
            .sum()
    }

    /// The byte ranges `(start, len)` of the image that no range maps.
    pub fn unmapped(&self) -> Vec<(u64, u64)> {
        complement(&self.extents(0), self.image_bytes)
    }

    /// The byte ranges `[start, end)` written: the mapped ranges, those at most `gap` bytes
    /// apart joined with the image's bytes between them (see [`MAX_GAP`]).
    pub fn extents(&self, gap: u64) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for r in &self.ranges {
            let (a, b) = self.byte_range(r);
            match out.last_mut() {
                Some(last) if a - last.1 <= gap => last.1 = b,
                _ => out.push((a, b)),
            }
        }
        out
    }

    /// The bytes [`Map::extents`] covers.
    pub fn extent_bytes(&self, gap: u64) -> u64 {
        self.extents(gap).iter().map(|(a, b)| b - a).sum()
    }

    /// Whether byte `at` of the image is in a mapped range.
    pub fn is_mapped_byte(&self, at: u64) -> bool {
        let b = at / self.block_size;
        let i = self.ranges.partition_point(|r| r.last < b);
        i < self.ranges.len() && self.ranges[i].first <= b
    }

    fn from_block_map(m: &crate::bmap::BlockMap) -> Map {
        Map {
            image_bytes: m.image_bytes,
            block_size: crate::bmap::BLOCK,
            ranges: m
                .ranges
                .iter()
                .map(|&(first, last)| Range {
                    first,
                    last,
                    sha256: None,
                })
                .collect(),
            origin: MapOrigin::Filesystems,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    #[error("cannot read {path}: {err}")]
    Read { path: String, err: std::io::Error },
    #[error("{path} is not a usable block map: {msg}")]
    BadBmap { path: String, msg: String },
    #[error("{msg}")]
    Source { msg: String },
    #[error("the image does not match its block map: blocks {first}-{last} (range {index} of {count}) have another checksum; the image or its .bmap is damaged")]
    SourceMismatch {
        first: u64,
        last: u64,
        index: usize,
        count: usize,
    },
    #[error(transparent)]
    Open(#[from] source::SourceError),
    #[error("{target} is the image being written; name another target")]
    SameFile { target: String },
    #[error("refusing to write to {target}: {why}")]
    Refused { target: String, why: String },
    #[error("{target} holds {size} bytes, the image needs {need}; use a larger card")]
    TooSmall {
        target: String,
        size: u64,
        need: u64,
    },
    #[error("{target} needs {need} bytes for the image's mapped ranges, its filesystem has {free} free; write it elsewhere")]
    NoRoom {
        target: String,
        free: u64,
        need: u64,
    },
    #[error("{desc} is not a removable disk (sysfs removable is 0 and it is not on USB or MMC); pass --force if it really is the card to erase")]
    NotRemovable { desc: String },
    #[error("cannot open {target} for writing: {err}")]
    OpenTarget { target: String, err: std::io::Error },
    #[error(
        "writing {target} failed at byte {at}: {err}; the card holds no valid partition table"
    )]
    Write {
        target: String,
        at: u64,
        err: std::io::Error,
    },
    #[error("reading {target} back failed at byte {at}: {err}")]
    VerifyRead {
        target: String,
        at: u64,
        err: std::io::Error,
    },
    #[error("verify failed: {target} differs from the image in blocks {first}-{last} (bytes {start}-{end}, range {index} of {count}); do not use this card")]
    Verify {
        target: String,
        first: u64,
        last: u64,
        start: u64,
        end: u64,
        index: usize,
        count: usize,
    },
}

/// Hidden hooks for the integration tests (`piforge flash --test-...`): they change no
/// byte an ordinary run writes.
#[derive(Debug, Clone, Default)]
pub struct TestHooks {
    /// After the write and its sync, before verifying: flip the byte at this offset.
    pub corrupt_before_verify: Option<u64>,
    /// Once this many bytes are written: say so on stderr and stop, until killed.
    pub pause_after: Option<u64>,
}

/// What to flash where.
#[derive(Debug, Clone, Default)]
pub struct FlashOptions {
    /// An image: raw, xz, zstd, gzip (told by magic bytes).
    pub source: PathBuf,
    /// The block map; default: the `.bmap` beside the source, else computed.
    pub bmap: Option<PathBuf>,
    /// A block device or a regular file.
    pub target: PathBuf,
    /// Write to a disk that does not look removable.
    pub force: bool,
    pub verify: bool,
    /// Where a compressed image without a block map is decompressed (to map it).
    pub cache_dir: Option<PathBuf>,
    /// Join mapped ranges at most this many bytes apart (default [`MAX_GAP`]: never).
    pub max_gap: Option<u64>,
    pub hooks: TestHooks,
}

/// Where the map came from, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapSource {
    File(PathBuf),
    /// Computed from the raw image at this path (the source, or its decompressed copy).
    Computed(PathBuf),
}

/// Everything [`apply`] will do, decided before a byte is written.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: PathBuf,
    pub format: source::Format,
    /// The raw image to read when the source is not read as a stream.
    raw: Option<PathBuf>,
    pub map: Map,
    pub map_source: MapSource,
    pub target: PathBuf,
    /// `None`: a regular file that does not exist yet.
    pub kind: Option<Kind>,
    pub device: Option<DeviceInfo>,
}

impl Plan {
    /// Whether unmapped ranges of a device are zeroed (not only discarded).
    pub fn zero_unmapped(&self) -> bool {
        self.map.origin == MapOrigin::Foreign
            || self.device.as_ref().is_some_and(|d| d.write_zeroes)
    }
}

/// The `.bmap` bmaptool would find beside `image`: `a.img.xz` looks for `a.img.xz.bmap`,
/// `a.img.bmap`, `a.bmap` (bmaptool's `_discover_bmap`, stripping one extension at a time).
pub fn sibling_bmap(image: &Path) -> Option<PathBuf> {
    let name = image.file_name()?.to_string_lossy().into_owned();
    let mut stem = name.as_str();
    loop {
        let p = image.with_file_name(format!("{stem}.bmap"));
        if p.is_file() {
            return Some(p);
        }
        match stem.rsplit_once('.') {
            Some((s, _)) if !s.is_empty() => stem = s,
            _ => return None,
        }
    }
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> FlashError + '_ {
    move |err| FlashError::Read {
        path: path.display().to_string(),
        err,
    }
}

/// Reads and checks a bmap file.
pub fn read_bmap(path: &Path) -> Result<Map, FlashError> {
    let f = File::open(path).map_err(read_err(path))?;
    let mut text = String::new();
    f.take(bmap_file::MAX_BMAP_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err(path))?;
    if text.len() as u64 > bmap_file::MAX_BMAP_BYTES {
        return Err(FlashError::BadBmap {
            path: path.display().to_string(),
            msg: "it is larger than 64 MiB".into(),
        });
    }
    bmap_file::parse(&text).map_err(|msg| FlashError::BadBmap {
        path: path.display().to_string(),
        msg,
    })
}

/// Phase 1: the source, its map and the target, with every refusal; nothing is written.
pub fn plan(opts: &FlashOptions) -> Result<Plan, FlashError> {
    let src = &opts.source;
    let mut head = [0u8; source::MAGIC_LEN];
    let f = File::open(src).map_err(read_err(src))?;
    let n = f.read_at_most(&mut head).map_err(read_err(src))?;
    let format = source::detect(&head[..n]);
    let bmap_path = opts.bmap.clone().or_else(|| sibling_bmap(src));
    let (map, map_source, raw) = match bmap_path {
        Some(b) => {
            let map = read_bmap(&b)?;
            // The image's real size, where it can be known without decompressing: a bmap
            // claiming another size (a damaged or hostile ImageSize) is refused before the
            // target is opened. For zstd and gzip the reader checks it while writing, and a
            // file target only grows with the bytes actually read (see `apply`).
            let real = match format {
                source::Format::Raw => Some(f.metadata().map_err(read_err(src))?.len()),
                source::Format::Xz => xz_size::uncompressed_size(&f).map_err(read_err(src))?,
                _ => None,
            };
            if let Some(len) = real.filter(|&n| n != map.image_bytes) {
                return Err(FlashError::BadBmap {
                    path: b.display().to_string(),
                    msg: format!(
                        "it describes an image of {} bytes, {} {} {len}",
                        map.image_bytes,
                        src.display(),
                        if format == source::Format::Raw {
                            "has"
                        } else {
                            "decompresses to"
                        }
                    ),
                });
            }
            let raw = (format == source::Format::Raw).then(|| src.clone());
            (map, MapSource::File(b), raw)
        }
        None => {
            // No map: compute it from the filesystems, which needs the raw image at hand
            // (a compressed one is decompressed into the cache first).
            let raw = if format == source::Format::Raw {
                src.clone()
            } else {
                source::open_image(
                    src,
                    &source::OpenOptions {
                        cache_dir: opts.cache_dir.clone(),
                        skip_raw_digest: true,
                        ..Default::default()
                    },
                )?
                .path
            };
            let m = crate::bmap::map_image(&raw).map_err(read_err(&raw))?;
            (
                Map::from_block_map(&m),
                MapSource::Computed(raw.clone()),
                Some(raw),
            )
        }
    };

    let target = opts.target.clone();
    let shown = target.display().to_string();
    let kind = target::kind_of(&target).map_err(|err| FlashError::OpenTarget {
        target: shown.clone(),
        err,
    })?;
    let mut device = None;
    match kind {
        Some(Kind::File) => {
            let t = std::fs::metadata(&target).map_err(read_err(&target))?;
            for s in [Some(src), raw.as_ref()].into_iter().flatten() {
                if let Ok(m) = std::fs::metadata(s) {
                    if (m.dev(), m.ino()) == (t.dev(), t.ino()) {
                        return Err(FlashError::SameFile { target: shown });
                    }
                }
            }
            let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
            for s in device::parse_swaps(&swaps) {
                if let Ok(m) = std::fs::metadata(&s) {
                    if (m.dev(), m.ino()) == (t.dev(), t.ino()) {
                        return Err(FlashError::Refused {
                            target: shown,
                            why: "it is the running system's swap file".into(),
                        });
                    }
                }
            }
        }
        Some(Kind::Block) => {
            let f = File::open(&target).map_err(|err| FlashError::OpenTarget {
                target: shown.clone(),
                err,
            })?;
            let size = target::block_size_bytes(&f).map_err(read_err(&target))?;
            let mut d = device::info(&target, size).map_err(read_err(&target))?;
            if let Ok(layout) = crate::disk::read_layout(&mut BufReader::new(f)) {
                d.partitions = layout
                    .partitions
                    .iter()
                    .map(|p| {
                        let what = p.label.clone().unwrap_or_else(|| p.filesystem.to_string());
                        (p.index, what)
                    })
                    .collect();
            }
            let why = device::system_refusals(&d);
            if !why.is_empty() {
                return Err(FlashError::Refused {
                    target: shown,
                    why: why.join("; "),
                });
            }
            if size < map.image_bytes {
                return Err(FlashError::TooSmall {
                    target: shown,
                    size,
                    need: map.image_bytes,
                });
            }
            if !d.is_removable() && !opts.force {
                return Err(FlashError::NotRemovable { desc: d.describe() });
            }
            device = Some(d);
        }
        None => {}
    }
    if kind != Some(Kind::Block) {
        check_room(&target, map.extent_bytes(opts.max_gap.unwrap_or(MAX_GAP)))?;
    }
    Ok(Plan {
        source: src.clone(),
        format,
        raw,
        map,
        map_source,
        target,
        kind,
        device,
    })
}

/// A regular-file target must fit on its filesystem: `need` bytes against what is free
/// there plus what the file holds now (it is rewritten in place).
fn check_room(target: &Path, need: u64) -> Result<(), FlashError> {
    use std::os::unix::ffi::OsStrExt;
    let held = std::fs::metadata(target).map_or(0, |m| m.blocks() * 512);
    let dir = match target.parent() {
        _ if held > 0 || target.exists() => target,
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let c =
        std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| FlashError::OpenTarget {
            target: target.display().to_string(),
            err: std::io::Error::other("the path holds a NUL byte"),
        })?;
    // SAFETY: statvfs writes one struct through the pointer; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(read_err(dir)(std::io::Error::last_os_error()));
    }
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    if free.saturating_add(held) < need {
        return Err(FlashError::NoRoom {
            target: target.display().to_string(),
            free: free + held,
            need,
        });
    }
    Ok(())
}

/// What [`apply`] did.
#[derive(Debug, Clone)]
pub struct Report {
    pub image_bytes: u64,
    /// Bytes written: the mapped ranges, and the gaps of at most [`MAX_GAP`] between them.
    pub written: u64,
    pub write_time: Duration,
    /// `None` with verify off.
    pub verify_time: Option<Duration>,
    /// Unmapped bytes zeroed (or punched), rather than only discarded.
    pub zeroed: u64,
    pub discarded: bool,
}

trait ReadAtMost {
    fn read_at_most(&self, buf: &mut [u8]) -> std::io::Result<usize>;
}

impl ReadAtMost for File {
    fn read_at_most(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut n = 0;
        while n < buf.len() {
            match self.read_at(&mut buf[n..], n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

/// Phase 2: writes the plan's image to its target, then verifies it.
pub fn apply(
    plan: &Plan,
    opts: &FlashOptions,
    progress: Option<&dyn Progress>,
) -> Result<Report, FlashError> {
    let shown = plan.target.display().to_string();
    let mut t = Target::open(&plan.target).map_err(|err| FlashError::OpenTarget {
        target: shown.clone(),
        err: if err.raw_os_error() == Some(libc::EBUSY) {
            std::io::Error::other("it is in use (mounted, or held by another program)")
        } else {
            err
        },
    })?;
    let werr = |at: u64| {
        let target = shown.clone();
        move |err| FlashError::Write { target, at, err }
    };
    let map = &plan.map;
    let gap = opts.max_gap.unwrap_or(MAX_GAP);
    let extents = map.extents(gap);
    let size = t.size().map_err(werr(0))?;
    if t.kind == Kind::Block && size < map.image_bytes {
        return Err(FlashError::TooSmall {
            target: shown,
            size,
            need: map.image_bytes,
        });
    }
    let started = Instant::now();
    let trace = std::env::var_os("PIFORGE_FLASH_TRACE").is_some();
    let mark = |what: &str| {
        if trace {
            eprintln!("trace {:>8.3} {what}", started.elapsed().as_secs_f64());
        }
    };

    // 1. What is not mapped: zeros or discarded; the head zeroed first, durably.
    let head_end = HEAD.min(map.image_bytes);
    let mut zeroed = 0;
    let mut discarded = false;
    match t.kind {
        Kind::File => {
            // Emptied: everything reads as zeros, and the file grows only with the bytes
            // read from the image; it gets the map's length once the reader has seen the
            // image end exactly there. A bmap claiming a huge image never makes a huge file.
            t.set_file_len(0).map_err(werr(0))?;
            zeroed = map.image_bytes - map.extent_bytes(gap);
        }
        Kind::Block => {
            // Only what the map leaves out is discarded, each unmapped range on its own:
            // the mapped ranges are written next anyway. Discarding them too (one BLKDISCARD
            // over the whole image, as before) made the device deallocate blocks only to
            // allocate them again on the write: on a loop device (whose discard punches holes
            // in its backing file) the write took 1.8 s instead of 1.2 s (BENCHMARKS.md).
            discarded = true;
            for (s, n) in discard_ranges(&extents, map.image_bytes, t.logical_block) {
                if !t.discard(s, n).map_err(werr(s))? {
                    discarded = false;
                    break;
                }
            }
            mark("discarded");
            t.zero(0, head_end.next_multiple_of(t.logical_block).min(size))
                .map_err(werr(0))?;
            if plan.zero_unmapped() {
                for (s, n) in complement(&extents, map.image_bytes) {
                    let (s, n) = (s.max(head_end), (s + n).saturating_sub(s.max(head_end)));
                    if n > 0 {
                        t.zero(s, n).map_err(werr(s))?;
                        zeroed += n;
                    }
                }
            }
        }
    }
    mark("zeroed");
    t.sync().map_err(werr(0))?;
    mark("synced");

    // 2. The mapped ranges, the head held back.
    let input = match &plan.raw {
        Some(p) => Input::Raw(File::open(p).map_err(read_err(p))?),
        None => {
            let f = File::open(&plan.source).map_err(read_err(&plan.source))?;
            Input::Stream {
                r: source::decoder(plan.format, f).map_err(read_err(&plan.source))?,
                pos: 0,
            }
        }
    };
    let total: u64 = extents.iter().map(|(a, b)| b - a).sum();
    if let Some(p) = progress {
        p.begin(Task::Write, Some(total));
    }
    let reader::Reader {
        rx,
        recycle,
        handle,
    } = reader::spawn(input, map.clone(), gap);
    let mut held: Vec<(u64, AlignedBuf, usize)> = Vec::new();
    let mut written = 0u64;
    let mut digests = None;
    let mut failure = None;
    let mut waited = Duration::ZERO;
    let mut w0 = Instant::now();
    for msg in rx.iter() {
        waited += w0.elapsed();
        let batch = match msg {
            Ok(Msg::Batch(b)) => b,
            Ok(Msg::Done(d)) => {
                digests = Some(d);
                break;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        for s in &batch.segs {
            let data = &batch.buf[s.off..s.off + s.len];
            let (mut at, mut data) = (s.at, data);
            if at < HEAD {
                let n = ((HEAD - at) as usize).min(data.len());
                let mut b = AlignedBuf::new(n);
                b[..n].copy_from_slice(&data[..n]);
                held.push((at, b, n));
                at += n as u64;
                data = &data[n..];
            }
            if !data.is_empty() {
                if let Err(e) = t.write_at(data, at, true) {
                    failure = Some(werr(at)(e));
                    break;
                }
                t.write_behind(at, data.len() as u64);
            }
            written += s.len as u64;
            if let Some(p) = progress {
                p.advance(Task::Write, written);
            }
            if let Some(n) = opts.hooks.pause_after {
                if written >= n {
                    let _ = t.sync();
                    eprintln!("piforge: test hook: paused after {written} bytes");
                    loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    }
                }
            }
        }
        if failure.is_some() {
            break;
        }
        let _ = recycle.send(batch.buf);
        w0 = Instant::now();
    }
    if trace {
        eprintln!("trace writer waited on reader {:.3}", waited.as_secs_f64());
    }
    mark("written");
    drop(rx);
    let _ = handle.join();
    if let Some(e) = failure {
        return Err(e);
    }
    let digests = digests.ok_or_else(|| FlashError::Source {
        msg: "the image reader stopped before the end".into(),
    })?;
    if t.kind == Kind::File {
        t.set_file_len(map.image_bytes)
            .map_err(werr(map.image_bytes))?;
    }
    t.sync().map_err(werr(HEAD))?;
    mark("synced after write");

    // 3. The head, last.
    for (at, b, n) in &held {
        t.write_at(&b[..*n], *at, true).map_err(werr(*at))?;
    }
    t.sync().map_err(werr(0))?;
    let write_time = started.elapsed();
    if let Some(p) = progress {
        p.finish(Task::Write);
    }

    if let Some(at) = opts.hooks.corrupt_before_verify {
        corrupt(&mut t, at).map_err(werr(at))?;
    }

    // 4. Read back around the page cache.
    let verify_time = if opts.verify {
        let v = Instant::now();
        verify(&mut t, map, &digests, progress)?;
        Some(v.elapsed())
    } else {
        None
    };
    Ok(Report {
        image_bytes: map.image_bytes,
        written,
        write_time,
        verify_time,
        zeroed,
        discarded,
    })
}

/// What a block device gets discarded: the byte ranges `(start, len)` of the image outside
/// `extents`, shrunk to whole logical blocks of `lb` bytes (a discard rounds nothing up, and
/// never reaches into the mapped bytes around it).
fn discard_ranges(extents: &[(u64, u64)], image_bytes: u64, lb: u64) -> Vec<(u64, u64)> {
    complement(extents, image_bytes)
        .into_iter()
        .filter_map(|(s, n)| {
            let (a, b) = (s.next_multiple_of(lb), (s + n) / lb * lb);
            (b > a).then_some((a, b - a))
        })
        .collect()
}

/// The byte ranges `(start, len)` of `[0, len)` outside `extents` (sorted, disjoint).
fn complement(extents: &[(u64, u64)], len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(a, b) in extents {
        if a > at {
            out.push((at, a - at));
        }
        at = b;
    }
    if at < len {
        out.push((at, len - at));
    }
    out
}

#[cfg(test)]
mod tests;
