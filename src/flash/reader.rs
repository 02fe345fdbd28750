//! The source side of a flash: the mapped ranges of an image, read (raw, with positional
//! reads) or decompressed (xz, zstd, gzip: front to back, skipping what is not mapped) on a
//! thread of its own, hashed on a second one (each range checked against the block map's
//! checksum) and handed to the writer in batches through bounded channels. Reading and
//! hashing on one thread made it the slowest stage of the write (SHA-256 alone is about
//! 1.5 GB/s here): the writer waited on it for a third of its time.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use super::aligned::AlignedBuf;
use super::{FlashError, Map, Range};

/// Bytes per batch handed to the writer (large writes: at least 1 MiB each where the ranges
/// allow).
pub const BATCH: usize = 4 << 20;

/// Batches in flight between the hasher and the writer, and between the reader and the
/// hasher: memory stays at about `(DEPTH + HASH_DEPTH + 3) x BATCH`.
const DEPTH: usize = 4;
const HASH_DEPTH: usize = 2;

/// One piece of a range: `len` bytes at image offset `at`, at `off` in the batch's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Seg {
    pub at: u64,
    pub off: usize,
    pub len: usize,
}

pub struct Batch {
    pub buf: AlignedBuf,
    pub segs: Vec<Seg>,
    /// For the hasher, in order: which bytes of the buffer belong to the range being hashed
    /// (the gaps read with `--max-gap` do not), and where a range ends.
    hash: Vec<Hash>,
}

#[derive(Debug, Clone, Copy)]
enum Hash {
    Bytes { off: usize, len: usize },
    End,
}

pub enum Msg {
    Batch(Batch),
    /// Every mapped range read: the SHA-256 of each (equal to the map's where it has one).
    Done(Vec<[u8; 32]>),
}

/// Where the image bytes come from.
pub enum Input {
    /// A raw image file, read at any offset.
    Raw(File),
    /// A decoder, read front to back; `pos` bytes consumed so far.
    Stream { r: Box<dyn Read + Send>, pos: u64 },
}

impl Input {
    fn read_at(&mut self, buf: &mut [u8], at: u64) -> io::Result<()> {
        match self {
            Input::Raw(f) => f.read_exact_at(buf, at),
            Input::Stream { r, pos } => {
                skip(r, at - *pos)?;
                r.read_exact(buf)?;
                *pos = at + buf.len() as u64;
                Ok(())
            }
        }
    }

    /// A stream must end exactly at `image_bytes` (the map's size): no more, no less.
    fn check_end(&mut self, image_bytes: u64) -> Result<(), String> {
        match self {
            Input::Raw(f) => {
                let len = f.metadata().map_err(|e| e.to_string())?.len();
                if len != image_bytes {
                    return Err(format!(
                        "the image has {len} bytes, its block map describes {image_bytes}"
                    ));
                }
                Ok(())
            }
            Input::Stream { r, pos } => {
                skip(r, image_bytes - *pos).map_err(|e| e.to_string())?;
                let mut one = [0u8; 1];
                match r.read(&mut one) {
                    Ok(0) => Ok(()),
                    Ok(_) => Err(format!(
                        "the image decompresses to more than the {image_bytes} bytes its block map describes"
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }
}

/// Reads and drops `n` bytes.
fn skip(r: &mut Box<dyn Read + Send>, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
    if copied < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the image ends before the end its block map describes",
        ));
    }
    Ok(())
}

/// The reader's side of a flash: batches come in on `rx`; the writer hands each batch's
/// buffer back on `recycle` once written, and the reader fills it again (a fresh 4 MiB
/// buffer per batch cost the reader a page fault and a memset per page: measured, a fifth
/// of its time, which the writer spent waiting).
pub struct Reader {
    pub rx: Receiver<Result<Msg, FlashError>>,
    pub recycle: Sender<AlignedBuf>,
    pub handle: JoinHandle<()>,
}

/// Starts the reader and hasher threads over the mapped ranges of `map`; ranges at most
/// `gap` bytes apart are read (and so written) as one, the image's bytes between them
/// included.
pub fn spawn(mut input: Input, map: Map, gap: u64) -> Reader {
    let (to_hasher, from_reader) = sync_channel(HASH_DEPTH);
    let (tx, rx) = sync_channel(DEPTH);
    let (recycle, free) = channel::<AlignedBuf>();
    let ranges: Vec<_> = map.ranges.clone();
    let reader = std::thread::spawn(move || {
        let result = read_all(&mut input, &map, gap, &free, &mut |b| {
            to_hasher.send(Ok(Msg::Batch(b))).is_ok()
        });
        let _ = match result {
            Ok(true) => to_hasher.send(Ok(Msg::Done(Vec::new()))),
            Ok(false) => Ok(()), // the hasher stopped listening
            Err(e) => to_hasher.send(Err(e)),
        };
    });
    let handle = std::thread::spawn(move || {
        hash_all(&from_reader, &tx, &ranges);
        // The reader stops at its next batch once nobody listens.
        drop(from_reader);
        let _ = reader.join();
    });
    Reader {
        rx,
        recycle,
        handle,
    }
}

/// Fills batches of [`BATCH`] bytes and hands each full one on.
struct Batcher<'a> {
    batch: Batch,
    used: usize,
    /// Buffers the writer is done with; a new one is made only when none is back.
    free: &'a Receiver<AlignedBuf>,
    send: &'a mut dyn FnMut(Batch) -> bool,
}

impl Batcher<'_> {
    /// Reads the image's bytes `[at, end)` into batches, hashing them into `h` when given;
    /// `Ok(false)` when the writer stopped listening. Bytes that follow the batch's last
    /// segment in the image and in the buffer extend it: one write instead of two.
    fn read(
        &mut self,
        input: &mut Input,
        mut at: u64,
        end: u64,
        hashed: bool,
    ) -> Result<bool, FlashError> {
        while at < end {
            if self.used == BATCH {
                let buf = self
                    .free
                    .try_recv()
                    .unwrap_or_else(|_| AlignedBuf::new(BATCH));
                let full = std::mem::replace(
                    &mut self.batch,
                    Batch {
                        buf,
                        segs: Vec::new(),
                        hash: Vec::new(),
                    },
                );
                if !(self.send)(full) {
                    return Ok(false);
                }
                self.used = 0;
            }
            let used = self.used;
            let n = ((end - at) as usize).min(BATCH - used);
            let dst = &mut self.batch.buf[used..used + n];
            input.read_at(dst, at).map_err(|e| FlashError::Source {
                msg: format!("reading image bytes {at}..{}: {e}", at + n as u64),
            })?;
            if hashed {
                self.batch.hash.push(Hash::Bytes { off: used, len: n });
            }
            match self.batch.segs.last_mut() {
                Some(s) if s.at + s.len as u64 == at && s.off + s.len == used => s.len += n,
                _ => self.batch.segs.push(Seg {
                    at,
                    off: used,
                    len: n,
                }),
            }
            // Keep the next segment aligned in the buffer (the last block may be short).
            self.used += n.next_multiple_of(4096).min(BATCH - used);
            at += n as u64;
        }
        Ok(true)
    }
}

/// Hashes each batch's ranges, checks each range's digest against the map's, and passes
/// the batch on; at the end, the ranges' digests (of the ranges alone, gaps left out). A
/// range that differs stops everything before the batch holding its end is written.
fn hash_all(
    rx: &Receiver<Result<Msg, FlashError>>,
    tx: &SyncSender<Result<Msg, FlashError>>,
    ranges: &[Range],
) {
    let mut digests = Vec::with_capacity(ranges.len());
    let mut h = Sha256::new();
    for msg in rx.iter() {
        let b = match msg {
            Ok(Msg::Batch(b)) => b,
            Ok(Msg::Done(_)) => {
                let _ = tx.send(Ok(Msg::Done(digests)));
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        for op in &b.hash {
            match *op {
                Hash::Bytes { off, len } => h.update(&b.buf[off..off + len]),
                Hash::End => {
                    let d: [u8; 32] = std::mem::take(&mut h).finalize().into();
                    let i = digests.len();
                    if let Some(want) = ranges.get(i).and_then(|r| r.sha256) {
                        if want != d {
                            let _ = tx.send(Err(FlashError::SourceMismatch {
                                first: ranges[i].first,
                                last: ranges[i].last,
                                index: i + 1,
                                count: ranges.len(),
                            }));
                            return;
                        }
                    }
                    digests.push(d);
                }
            }
        }
        if tx.send(Ok(Msg::Batch(b))).is_err() {
            return; // the writer stopped listening
        }
    }
}

/// Reads every mapped range (and the gaps of at most `gap` bytes between them) into batches
/// passed to `send` (false: stop), marking which bytes the hasher hashes. `Ok(false)` when
/// stopped.
fn read_all(
    input: &mut Input,
    map: &Map,
    gap: u64,
    free: &Receiver<AlignedBuf>,
    send: &mut dyn FnMut(Batch) -> bool,
) -> Result<bool, FlashError> {
    let mut b = Batcher {
        batch: Batch {
            buf: AlignedBuf::new(BATCH),
            segs: Vec::new(),
            hash: Vec::new(),
        },
        used: 0,
        free,
        send,
    };
    let mut prev_end = None;
    for r in &map.ranges {
        let (start, end) = map.byte_range(r);
        if let Some(p) = prev_end.filter(|&p| start - p <= gap) {
            if !b.read(input, p, start, false)? {
                return Ok(false);
            }
        }
        if !b.read(input, start, end, true)? {
            return Ok(false);
        }
        b.batch.hash.push(Hash::End);
        prev_end = Some(end);
    }
    if !b.batch.hash.is_empty() && !(b.send)(b.batch) {
        return Ok(false);
    }
    input
        .check_end(map.image_bytes)
        .map_err(|msg| FlashError::Source { msg })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::MapOrigin;

    fn map(len: u64, ranges: &[(u64, u64)]) -> Map {
        Map {
            image_bytes: len,
            block_size: 4096,
            ranges: ranges
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

    /// The segments read (`(offset, bytes)`) and the ranges' digests.
    type Collected = (Vec<(u64, Vec<u8>)>, Vec<[u8; 32]>);

    fn collect(input: Input, m: Map) -> Result<Collected, FlashError> {
        collect_gap(input, m, 0)
    }

    fn collect_gap(input: Input, m: Map, gap: u64) -> Result<Collected, FlashError> {
        let Reader { rx, handle: h, .. } = spawn(input, m, gap);
        let mut segs = Vec::new();
        let mut done = None;
        for msg in rx {
            match msg? {
                Msg::Batch(b) => {
                    for s in &b.segs {
                        segs.push((s.at, b.buf[s.off..s.off + s.len].to_vec()));
                    }
                }
                Msg::Done(d) => done = Some(d),
            }
        }
        h.join().unwrap();
        Ok((segs, done.unwrap()))
    }

    #[test]
    fn a_stream_and_a_file_give_the_same_mapped_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.img");
        let data: Vec<u8> = (0..(3 * BATCH + 4096 * 3 + 100))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&p, &data).unwrap();
        let blocks = (data.len() as u64).div_ceil(4096);
        let m = map(
            data.len() as u64,
            &[(0, 0), (2, 1100), (blocks - 1, blocks - 1)],
        );
        let raw = collect(Input::Raw(File::open(&p).unwrap()), m.clone()).unwrap();
        let stream = Input::Stream {
            r: Box::new(io::Cursor::new(data.clone())),
            pos: 0,
        };
        let streamed = collect(stream, m.clone()).unwrap();
        assert_eq!(raw.1, streamed.1);
        let mut total = 0;
        for (at, bytes) in &raw.0 {
            assert_eq!(&data[*at as usize..*at as usize + bytes.len()], &bytes[..]);
            total += bytes.len();
        }
        assert_eq!(total, 4096 * 1100 + 100);
        assert_eq!(raw.0.len(), streamed.0.len());
        let want: [u8; 32] = Sha256::digest(&data[2 * 4096..1101 * 4096]).into();
        assert_eq!(raw.1[1], want);
    }

    #[test]
    fn a_short_stream_or_a_wrong_checksum_is_an_error() {
        let data = vec![5u8; 8192];
        let short = Input::Stream {
            r: Box::new(io::Cursor::new(data[..5000].to_vec())),
            pos: 0,
        };
        let e = collect(short, map(8192, &[(0, 1)]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("reading image bytes"), "{e}");
        let long = Input::Stream {
            r: Box::new(io::Cursor::new(vec![5u8; 9000])),
            pos: 0,
        };
        let e = collect(long, map(8192, &[(0, 0)]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("more than the 8192 bytes"), "{e}");
        let mut m = map(8192, &[(0, 0), (1, 1)]);
        m.ranges[1].sha256 = Some([0; 32]);
        let s = Input::Stream {
            r: Box::new(io::Cursor::new(data)),
            pos: 0,
        };
        let e = collect(s, m).err().unwrap().to_string();
        assert!(e.contains("range 2 of 2"), "{e}");
    }

    #[test]
    fn close_ranges_are_read_as_one_segment_with_the_bytes_between() {
        let data: Vec<u8> = (0..(40 * 4096)).map(|i| (i / 4096 + 1) as u8).collect();
        let m = map(data.len() as u64, &[(0, 1), (3, 4), (30, 30), (32, 39)]);
        let stream = || Input::Stream {
            r: Box::new(io::Cursor::new(data.clone())),
            pos: 0,
        };
        let (apart, d0) = collect(stream(), m.clone()).unwrap();
        assert_eq!(apart.len(), 4);
        // Gaps up to 8 KiB: blocks 0-4 and 30-39 each one segment, the image's bytes between.
        let (joined, d1) = collect_gap(stream(), m.clone(), 8192).unwrap();
        let spans: Vec<(u64, usize)> = joined.iter().map(|(a, b)| (*a, b.len())).collect();
        assert_eq!(spans, vec![(0, 5 * 4096), (30 * 4096, 10 * 4096)]);
        for (at, bytes) in &joined {
            assert_eq!(&data[*at as usize..*at as usize + bytes.len()], &bytes[..]);
        }
        // The digests are the ranges' own, gaps or not.
        assert_eq!(d0, d1);
        assert_eq!(m.extents(8192), vec![(0, 5 * 4096), (30 * 4096, 40 * 4096)]);
    }
}
