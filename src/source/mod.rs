//! Opening an input image: verify its SHA-256, tell its format by magic bytes, and decompress it
//! once into a cache of raw images.
//!
//! The reading side is a chain of small `Read` adapters, each unaware of the others:
//! input file -> [`ProgressReader`] (counts bytes, reports to a [`Progress`]) -> [`decoder`] (xz, zstd,
//! gzip, zip entry) -> sparse, atomic writer into the cache.

mod cache;
mod checksum;
mod decode;
mod detect;
pub(crate) mod memo;
mod progress;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cache::cache_dir;
pub use checksum::{sha256_file, sha256_file_cancellable};
pub use decode::{decoder, XzReader, ZipEntryReader, ZipProblem};
pub use detect::{detect, Format, MAGIC_LEN};
pub use progress::ProgressReader;

use crate::progress::{Progress, Task};
use cache::FillError;
use progress::InputError;

/// The size of the input buffers: 8 KiB buffers spend the time in syscalls.
pub(crate) const BUF_SIZE: usize = 256 << 10;

/// How much decoded data is handed to the sparse writer at once (a multiple of 4 KiB).
pub(crate) const CHUNK_SIZE: usize = 1 << 20;

/// Everything that can go wrong opening an input. Each message is one sentence naming the file.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read {}: {err}", path.display())]
    Read { path: PathBuf, err: io::Error },

    #[error("{} is not a regular file", path.display())]
    NotAFile { path: PathBuf },

    #[error("{} is not a valid {}: {detail} (truncated or corrupt)", path.display(), format.noun())]
    Corrupt {
        path: PathBuf,
        format: Format,
        detail: String,
    },

    #[error("{} holds no file to use as the image", path.display())]
    ZipNoImage { path: PathBuf },

    #[error("{} holds {} files, but piforge needs exactly one image in a zip: {}", path.display(), names.len(), names.join(", "))]
    ZipManyFiles { path: PathBuf, names: Vec<String> },

    #[error("{}: entry {name} {what}, which piforge cannot read", path.display())]
    ZipUnsupported {
        path: PathBuf,
        name: String,
        what: String,
    },

    #[error("{} has SHA-256 {actual}, but {from} expects {expected}", path.display())]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
        from: String,
    },

    #[error("{from} gives {value:?}, which is not a SHA-256 digest (64 hex digits)")]
    BadDigest { from: String, value: String },

    #[error("cannot read checksum file {}: {err}", path.display())]
    ChecksumFile { path: PathBuf, err: io::Error },

    #[error("{} {}", path.display(), if *decompressed { "decompresses to an empty image" } else { "is an empty file, not an image" })]
    Empty { path: PathBuf, decompressed: bool },

    #[error("{}: {} image is {size} bytes, not a whole number of 512-byte sectors", path.display(), if *decompressed { "decompressed" } else { "the" })]
    NotSectors {
        path: PathBuf,
        size: u64,
        decompressed: bool,
    },

    #[error("{} decompresses to data without a partition table in its first sector (not a disk image?)", path.display())]
    NoPartitionTable { path: PathBuf },

    #[error("{} decompresses to more than {max} bytes, the most piforge accepts (--max-image-size)", path.display())]
    TooLarge { path: PathBuf, max: u64 },

    #[error("decompressing {} stopped after {written} bytes: the cache filesystem has only {free} bytes free", path.display())]
    CacheFull {
        path: PathBuf,
        written: u64,
        free: u64,
    },

    #[error("no cache directory: set PIFORGE_CACHE, XDG_CACHE_HOME or HOME")]
    NoCacheDir,

    #[error("cannot write the image cache {}: {err}", path.display())]
    Cache { path: PathBuf, err: io::Error },
}

/// How to open an input.
#[derive(Clone, Default)]
pub struct OpenOptions {
    /// The expected SHA-256 of the input file (`--sha256 HEX`). When absent, `INPUT.sha256` or a
    /// `SHA256SUMS` beside the input is used if present.
    pub sha256: Option<String>,
    /// The cache directory; defaults to [`cache_dir()`].
    pub cache_dir: Option<PathBuf>,
    /// Told how much of the input has been read, while checksumming ([`Task::Checksum`]) and
    /// while decompressing ([`Task::Decompress`]). The caller decides whether to draw anything
    /// (e.g. only when stderr is a terminal).
    pub progress: Option<Arc<dyn Progress>>,
    /// Do not hash a raw input that has no expected digest (`input_sha256` is then `None`):
    /// commands that only read the image skip a full pass over a multi-GiB file.
    pub skip_raw_digest: bool,
    /// The most a compressed input may decode to; `None` is [`DEFAULT_MAX_IMAGE_SIZE`].
    pub max_image_size: Option<u64>,
}

/// The default bound on a decompressed image: larger than any Raspberry Pi OS or Ubuntu
/// image (a few GiB), small enough that a decompression bomb stops early.
pub const DEFAULT_MAX_IMAGE_SIZE: u64 = 64 << 30;

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("sha256", &self.sha256)
            .field("cache_dir", &self.cache_dir)
            .field("progress", &self.progress.is_some())
            .field("skip_raw_digest", &self.skip_raw_digest)
            .field("max_image_size", &self.max_image_size)
            .finish()
    }
}

/// An input, ready to read as a raw disk image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceImage {
    /// A raw image file: the input itself when it is raw, else the cached decompressed image
    /// (read-only; copy it, never write to it).
    pub path: PathBuf,
    /// The SHA-256 of the input file as given (compressed or not); `None` only for a raw input
    /// opened with [`OpenOptions::skip_raw_digest`] and no expected digest.
    pub input_sha256: Option<String>,
    /// The input's format.
    pub format: Format,
    /// The size of the raw image in bytes (a multiple of 512).
    pub size: u64,
    /// Whether the input's SHA-256 was checked against an expected digest.
    pub verified: bool,
    /// Whether the decompressed image was already in the cache.
    pub from_cache: bool,
}

/// Opens `input`: checks its SHA-256 against the expected digest if there is one, then returns a
/// raw image to read: the input itself if it is raw, else its decompressed copy in the cache
/// (decompressed on the first open only).
pub fn open_image(input: &Path, opts: &OpenOptions) -> Result<SourceImage, SourceError> {
    let read_error = |err: io::Error| SourceError::Read {
        path: input.to_path_buf(),
        err,
    };
    let meta = std::fs::metadata(input).map_err(read_error)?;
    if !meta.is_file() {
        return Err(SourceError::NotAFile {
            path: input.to_path_buf(),
        });
    }
    let format = {
        let mut head = Vec::with_capacity(MAGIC_LEN);
        File::open(input)
            .map_err(read_error)?
            .take(MAGIC_LEN as u64)
            .read_to_end(&mut head)
            .map_err(read_error)?;
        detect(&head)
    };

    // Checksum before any work: remembered for this very file in the cache ([`memo`]), else
    // read.
    let expected = checksum::expected_digest(input, opts.sha256.as_deref())?;
    let cache = opts.cache_dir.clone().or_else(|| cache_dir().ok());
    let remembered = cache.as_deref().and_then(|c| memo::lookup(c, &meta));
    if format == Format::Raw && expected.is_none() && opts.skip_raw_digest {
        check_size(input, meta.len(), false)?;
        return Ok(SourceImage {
            path: input.to_path_buf(),
            input_sha256: remembered,
            format,
            size: meta.len(),
            verified: false,
            from_cache: false,
        });
    }
    // A compressed input not remembered is hashed while it is decoded (cold: reading it from
    // the disk and hashing it took 0.2 s of a 7 s build, in front of everything): the decoded
    // image waits in a locked temporary file for its name, the digest. The decoding stops as
    // soon as the digest says it is not needed (the image is in the cache, or the digest is
    // not the expected one).
    // Where a compressed input's image is cached (a raw input is used in place).
    let images = match (format, &cache) {
        (Format::Raw, _) => None,
        (_, Some(dir)) => Some(dir.clone()),
        (_, None) => Some(cache_dir()?),
    };
    let mut decoded_early: Option<Result<cache::Filled, SourceError>> = None;
    let mut stopped = false;
    let hashed_here = remembered.is_none();
    let actual = match (remembered, &images) {
        (Some(d), _) => d,
        (None, None) => checksum::sha256_with_progress(input, opts.progress.clone())?,
        (None, Some(cache_dir)) => {
            let stop = std::sync::atomic::AtomicBool::new(false);
            let (digest, decoded) = std::thread::scope(|s| {
                let hashing = s.spawn(|| {
                    let d = checksum::sha256_with_progress(input, opts.progress.clone())?;
                    let unneeded = expected.as_ref().is_some_and(|e| e.digest != d)
                        || cached_size(input, &cache::image_path(cache_dir, &d)).is_some();
                    if unneeded {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    Ok::<_, SourceError>(d)
                });
                let decoded = decode(input, format, &meta, cache_dir, opts, Some(&stop));
                let digest = hashing
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (digest, decoded)
            });
            decoded_early = Some(decoded);
            stopped = stop.load(std::sync::atomic::Ordering::Relaxed);
            digest?
        }
    };
    if hashed_here {
        if let Some(c) = &cache {
            memo::store(c, input, &meta, &actual);
        }
    }
    if let Some(e) = &expected {
        if e.digest != actual {
            return Err(SourceError::ChecksumMismatch {
                path: input.to_path_buf(),
                expected: e.digest.clone(),
                actual,
                from: e.from.clone(),
            });
        }
    }
    let image = |path: PathBuf, size: u64, from_cache: bool| SourceImage {
        path,
        input_sha256: Some(actual.clone()),
        format,
        size,
        verified: expected.is_some(),
        from_cache,
    };

    let Some(cache) = images else {
        check_size(input, meta.len(), false)?;
        return Ok(image(input.to_path_buf(), meta.len(), false));
    };
    let dest = cache::image_path(&cache, &actual);
    if let Some(size) = cached_size(input, &dest) {
        if let (Some(p), true) = (&opts.progress, stopped) {
            p.finish(Task::Decompress);
        }
        return Ok(image(dest, size, true));
    }
    let filled = match decoded_early {
        // Decoded beside the hashing.
        Some(Ok(filled)) => filled,
        // Stopped because the image was cached, and gone since: decoded after all.
        Some(Err(_)) if stopped => decode(input, format, &meta, &cache, opts, None)?,
        Some(Err(e)) => return Err(e),
        None => decode(input, format, &meta, &cache, opts, None)?,
    };
    let size = filled.persist(&dest).map_err(|err| SourceError::Cache {
        path: dest.clone(),
        err,
    })?;
    if let Some(p) = &opts.progress {
        p.finish(Task::Decompress);
    }
    Ok(image(dest, size, false))
}

/// The size of a valid cached image at `dest`, decoded from `input`. An entry that fails
/// validation (an older piforge kept any) is removed: only complete images are ever renamed
/// into place, so a bad size means someone else wrote there.
fn cached_size(input: &Path, dest: &Path) -> Option<u64> {
    let cached = std::fs::metadata(dest).ok()?;
    if cached.is_file()
        && check_size(input, cached.len(), true).is_ok()
        && cached_head_ok(input, dest)
    {
        return Some(cached.len());
    }
    let _ = std::fs::remove_file(dest);
    None
}

/// Decodes `input` into a locked temporary file in the cache's image directory, checked as it
/// goes ([`cache::fill_temp`]), for the caller to name. `stop`, once set, ends the decoding
/// with an error.
fn decode(
    input: &Path,
    format: Format,
    meta: &std::fs::Metadata,
    cache_dir: &Path,
    opts: &OpenOptions,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<cache::Filled, SourceError> {
    let read_error = |err: io::Error| SourceError::Read {
        path: input.to_path_buf(),
        err,
    };
    let dir = cache_dir.join("images");
    let file = File::open(input).map_err(read_error)?;
    let counted = ProgressReader::new(file, opts.progress.clone(), Task::Decompress, meta.len());
    let mut decoded = Stoppable {
        inner: open_decoder(input, format, counted)?,
        stop,
    };
    let cache_error = |err: io::Error| SourceError::Cache {
        path: dir.clone(),
        err,
    };
    let max = opts.max_image_size.unwrap_or(DEFAULT_MAX_IMAGE_SIZE);
    let checks = cache::FillChecks {
        head: |head: &[u8]| {
            // A whole image smaller than the first chunk: its size problems come first.
            if head.len() < CHUNK_SIZE {
                check_size(input, head.len() as u64, true)?;
            }
            check_partition_table(input, head)
        },
        size: |size| check_size(input, size, true),
        max,
    };
    cache::fill_temp(&dir, &mut decoded, checks).map_err(|e| match e {
        FillError::Decode(e) => decode_error(input, format, e),
        FillError::Write(e) => cache_error(e),
        FillError::Rejected(e) => e,
        FillError::TooLarge(max) => SourceError::TooLarge {
            path: input.to_path_buf(),
            max,
        },
        FillError::NoRoom { free, written } => SourceError::CacheFull {
            path: input.to_path_buf(),
            written,
            free,
        },
    })
}

/// A reader that fails once `stop` is set.
struct Stoppable<'a, R> {
    inner: R,
    stop: Option<&'a std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for Stoppable<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self
            .stop
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
        {
            return Err(io::Error::other("not needed: stopped"));
        }
        self.inner.read(buf)
    }
}

/// The decoder for `input`; zip layout problems become their own errors.
fn open_decoder(
    input: &Path,
    format: Format,
    reader: ProgressReader<File>,
) -> Result<Box<dyn Read + Send>, SourceError> {
    let path = input.to_path_buf();
    if format != Format::Zip {
        return decoder(format, reader).map_err(|e| decode_error(input, format, e));
    }
    match ZipEntryReader::open(reader) {
        Ok(entry) => Ok(Box::new(entry)),
        Err(ZipProblem::NoImage) => Err(SourceError::ZipNoImage { path }),
        Err(ZipProblem::ManyFiles(names)) => Err(SourceError::ZipManyFiles { path, names }),
        Err(ZipProblem::Unsupported { name, what }) => {
            Err(SourceError::ZipUnsupported { path, name, what })
        }
        Err(ZipProblem::Archive(zip::result::ZipError::Io(e))) => {
            Err(decode_error(input, format, e))
        }
        Err(ZipProblem::Archive(e)) => Err(SourceError::Corrupt {
            path,
            format,
            detail: e.to_string(),
        }),
    }
}

/// An error from reading a decoder: the input file's own I/O error, or bad data.
fn decode_error(input: &Path, format: Format, e: io::Error) -> SourceError {
    match InputError::unwrap_from(e) {
        Ok(err) => SourceError::Read {
            path: input.to_path_buf(),
            err,
        },
        Err(e) => SourceError::Corrupt {
            path: input.to_path_buf(),
            format,
            detail: e.to_string(),
        },
    }
}

/// Whether a cached image still starts with a partition table.
fn cached_head_ok(input: &Path, cached: &Path) -> bool {
    let mut head = Vec::with_capacity(512);
    File::open(cached)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .is_ok()
        && check_partition_table(input, &head).is_ok()
}

/// The first sector of a disk image holds an MBR (or GPT's protective MBR): the boot signature
/// `55 AA` and at least one partition entry with a type. The full layout is judged later by
/// `disk::Image`; this only keeps a stream that is no disk image from filling the cache.
fn check_partition_table(input: &Path, head: &[u8]) -> Result<(), SourceError> {
    let has_table = head.len() >= 512
        && head[510..512] == [0x55, 0xAA]
        && (0..4).any(|i| head[446 + 16 * i + 4] != 0);
    if has_table {
        Ok(())
    } else {
        Err(SourceError::NoPartitionTable {
            path: input.to_path_buf(),
        })
    }
}

fn check_size(input: &Path, size: u64, decompressed: bool) -> Result<(), SourceError> {
    let path = input.to_path_buf();
    if size == 0 {
        Err(SourceError::Empty { path, decompressed })
    } else if !size.is_multiple_of(512) {
        Err(SourceError::NotSectors {
            path,
            size,
            decompressed,
        })
    } else {
        Ok(())
    }
}
