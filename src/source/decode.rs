//! Decoders as `Read` adapters: each turns a compressed input into the raw image bytes.

use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use liblzma::stream::{Action, MtStreamBuilder, Status, Stream};
use zip::{result::ZipError, CompressionMethod, ZipArchive};

use super::{Format, BUF_SIZE};

/// A reader of the raw image inside `reader`, which holds data of the given format.
///
/// Every multi-part form is decoded completely: concatenated xz streams, several zstd frames,
/// several gzip members. Bad data is an `io::Error` from `read` (an early end of input is
/// `UnexpectedEof`), never a silently short image. Zip needs `Seek` to find its central
/// directory; the other formats are read front to back.
pub fn decoder<R>(format: Format, reader: R) -> io::Result<Box<dyn Read + Send>>
where
    R: Read + Seek + Send + 'static,
{
    let buffered = BufReader::with_capacity(BUF_SIZE, reader);
    Ok(match format {
        Format::Raw => Box::new(buffered),
        Format::Xz => Box::new(XzReader::new(buffered)?),
        Format::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(buffered)?;
            // Accept frames made with `zstd --long` (windows up to 2 GiB).
            d.window_log_max(31)?;
            Box::new(d)
        }
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Format::Zip => {
            Box::new(ZipEntryReader::open(buffered.into_inner()).map_err(io::Error::from)?)
        }
    })
}

/// The number of threads for the xz decoder: one per available core.
fn xz_threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
}

/// How much memory the xz decoder may use before it gives up on threads (not a hard stop):
/// a quarter of physical memory, as `xz -T0` does.
fn xz_memlimit_threading() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    match (u64::try_from(pages), u64::try_from(page_size)) {
        (Ok(pages), Ok(size)) if pages > 0 && size > 0 => {
            (pages.saturating_mul(size) / 4).max(64 << 20)
        }
        _ => 1 << 30,
    }
}

/// An xz decoder over a buffered reader: liblzma's multithreaded decoder (the blocks of a
/// multi-block file are decoded in parallel), reading every concatenated stream to the end of the
/// input.
///
/// liblzma 0.4's `MtStreamBuilder` cannot pass `LZMA_CONCATENATED` to the threaded decoder, so
/// this adapter does what that flag does: after each stream it skips the stream padding (null
/// bytes, a multiple of four) and starts a new decoder for the next stream, if there is one.
pub struct XzReader<R> {
    inner: R,
    /// The decoder of the current stream; `None` between streams.
    stream: Option<Stream>,
    finished: bool,
}

impl<R: BufRead> XzReader<R> {
    pub fn new(inner: R) -> io::Result<Self> {
        Ok(XzReader {
            inner,
            stream: Some(new_xz_stream()?),
            finished: false,
        })
    }

    /// Between streams: skips the stream padding, then returns whether another stream follows.
    fn next_stream(&mut self) -> io::Result<bool> {
        let mut padding = 0u64;
        loop {
            let input = self.inner.fill_buf()?;
            if input.is_empty() {
                break;
            }
            let zeros = input.iter().take_while(|&&b| b == 0).count();
            let more = zeros < input.len();
            self.inner.consume(zeros);
            padding += zeros as u64;
            if more {
                if !padding.is_multiple_of(4) {
                    return Err(invalid(
                        "the padding between xz streams is not a multiple of 4 bytes",
                    ));
                }
                return Ok(true);
            }
        }
        if !padding.is_multiple_of(4) {
            return Err(invalid(
                "the padding after the last xz stream is not a multiple of 4 bytes",
            ));
        }
        Ok(false)
    }
}

fn new_xz_stream() -> io::Result<Stream> {
    MtStreamBuilder::new()
        .threads(xz_threads())
        .memlimit_threading(xz_memlimit_threading())
        .memlimit_stop(u64::MAX)
        .timeout_ms(0)
        .decoder()
        .or_else(|_| Stream::new_stream_decoder(u64::MAX, 0))
        .map_err(|e| io::Error::other(format!("cannot start the xz decoder: {e}")))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn xz_error(e: liblzma::stream::Error) -> io::Error {
    use liblzma::stream::Error as E;
    invalid(match e {
        E::Data => "the compressed data is corrupt",
        E::Format => "the data is not in the xz format",
        E::Options => "it uses unsupported compression options",
        E::MemLimit => "it needs more memory than allowed",
        E::Mem => "out of memory",
        E::Program => "internal liblzma error",
        E::NoCheck | E::UnsupportedCheck => "unsupported integrity check",
    })
}

pub(crate) fn unexpected_end() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "the input ends early")
}

impl<R: BufRead> Read for XzReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.finished {
                return Ok(0);
            }
            let Some(stream) = self.stream.as_mut() else {
                if self.next_stream()? {
                    self.stream = Some(new_xz_stream()?);
                } else {
                    self.finished = true;
                }
                continue;
            };
            let input = self.inner.fill_buf()?;
            let eof = input.is_empty();
            let action = if eof { Action::Finish } else { Action::Run };
            let (in_before, out_before) = (stream.total_in(), stream.total_out());
            let status = stream.process(input, out, action).map_err(xz_error)?;
            let consumed = (stream.total_in() - in_before) as usize;
            let produced = (stream.total_out() - out_before) as usize;
            self.inner.consume(consumed);
            match status {
                Status::StreamEnd => {
                    self.stream = None;
                    if produced > 0 {
                        return Ok(produced);
                    }
                }
                // LZMA_BUF_ERROR: no progress is possible. At the end of the input that means
                // the stream is incomplete.
                Status::MemNeeded if produced == 0 && consumed == 0 => {
                    return Err(if eof {
                        unexpected_end()
                    } else {
                        invalid("the xz decoder cannot make progress")
                    });
                }
                _ if produced > 0 => return Ok(produced),
                // Nothing out yet: feed more input (liblzma reports LZMA_BUF_ERROR on the second
                // call without progress, so this loop ends).
                _ => {}
            }
        }
    }
}

/// Why a zip archive holds no usable image.
#[derive(Debug)]
pub enum ZipProblem {
    /// The archive itself cannot be read.
    Archive(ZipError),
    /// No file entries (directories and macOS metadata do not count).
    NoImage,
    /// More than one file entry: their names.
    ManyFiles(Vec<String>),
    /// The one entry uses something piforge cannot read.
    Unsupported { name: String, what: String },
}

impl From<ZipProblem> for io::Error {
    fn from(p: ZipProblem) -> io::Error {
        match p {
            ZipProblem::Archive(ZipError::Io(e)) => e,
            ZipProblem::Archive(e) => io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            ZipProblem::NoImage => {
                io::Error::new(io::ErrorKind::InvalidData, "the zip archive holds no file")
            }
            ZipProblem::ManyFiles(names) => io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the zip archive holds {} files, not one image: {}",
                    names.len(),
                    names.join(", ")
                ),
            ),
            ZipProblem::Unsupported { name, what } => io::Error::new(
                io::ErrorKind::InvalidData,
                format!("zip entry {name} {what}"),
            ),
        }
    }
}

/// Entries that are not an image: directories, and what macOS adds when it zips.
fn is_candidate(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name);
    !(name.ends_with('/')
        || name.starts_with("__MACOSX/")
        || base.starts_with("._")
        || base == ".DS_Store")
}

/// The one file inside a zip archive, stored or deflated, read straight from the archive file
/// (seek to its data, then read); its CRC-32 and size are checked at the end.
pub struct ZipEntryReader {
    name: String,
    body: Box<dyn Read + Send>,
    crc: flate2::Crc,
    size: u64,
    expected_crc: u32,
    expected_size: u64,
    checked: bool,
}

impl ZipEntryReader {
    pub fn open<R: Read + Seek + Send + 'static>(reader: R) -> Result<Self, ZipProblem> {
        let mut archive = ZipArchive::new(reader).map_err(ZipProblem::Archive)?;
        let candidates: Vec<(usize, String)> = (0..archive.len())
            .filter_map(|i| archive.name_for_index(i).map(|n| (i, n.to_string())))
            .filter(|(_, name)| is_candidate(name))
            .collect();
        let (index, name) = match candidates.as_slice() {
            [] => return Err(ZipProblem::NoImage),
            [one] => one.clone(),
            many => {
                return Err(ZipProblem::ManyFiles(
                    many.iter().map(|(_, n)| n.clone()).collect(),
                ))
            }
        };
        let unsupported = |what: String| ZipProblem::Unsupported {
            name: name.clone(),
            what,
        };
        let (method, start, compressed, expected_size, expected_crc) = {
            let entry = archive.by_index_raw(index).map_err(ZipProblem::Archive)?;
            if entry.encrypted() {
                return Err(unsupported("is encrypted".into()));
            }
            (
                entry.compression(),
                entry.data_start(),
                entry.compressed_size(),
                entry.size(),
                entry.crc32(),
            )
        };
        let mut file = archive.into_inner();
        file.seek(SeekFrom::Start(start))
            .map_err(|e| ZipProblem::Archive(ZipError::Io(e)))?;
        let data = BufReader::with_capacity(super::BUF_SIZE, file.take(compressed));
        let body: Box<dyn Read + Send> = match method {
            CompressionMethod::Stored => Box::new(data),
            CompressionMethod::Deflated => Box::new(flate2::bufread::DeflateDecoder::new(data)),
            other => {
                return Err(unsupported(format!(
                    "uses compression method {other}, not stored or deflated"
                )))
            }
        };
        Ok(ZipEntryReader {
            name,
            body,
            crc: flate2::Crc::new(),
            size: 0,
            expected_crc,
            expected_size,
            checked: false,
        })
    }

    /// The name of the entry inside the archive.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Read for ZipEntryReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.body.read(buf)?;
        if n > 0 {
            self.crc.update(&buf[..n]);
            self.size += n as u64;
        } else if !buf.is_empty() && !self.checked {
            self.checked = true;
            if self.size < self.expected_size {
                return Err(unexpected_end());
            }
            if self.size != self.expected_size || self.crc.sum() != self.expected_crc {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "zip entry {} does not match its recorded size and CRC-32",
                        self.name
                    ),
                ));
            }
        }
        Ok(n)
    }
}
