//! Compressed outputs (`.img.xz`, `.img.zst`) written on several threads, with the work shared
//! between node images.
//!
//! An image is cut into chunks of [`CHUNK`] bytes at fixed offsets, and each chunk is
//! compressed on its own: an xz block (one stream, an index at the end: see [`xz`]) or a zstd
//! frame (frames concatenate: see [`zst`]). A chunk's compressed bytes depend only on its
//! content, so a [`BlockStore`] shared by every node of a build keys them by the chunk's
//! SHA-256: the common and role data that node images share is compressed once, and every
//! other node's file copies those bytes from the file that first holds them. The result does
//! not depend on the number of threads, on the order nodes are built in, or on which node
//! compressed a chunk first: the same image always gives the same bytes.
//!
//! Nodes are built several at a time (`build --jobs`) and reach their shared chunks at about the
//! same moment: a chunk one image is compressing is marked so, and the others wait for its
//! bytes (kept in memory until the first file holds them) instead of compressing it again.
//!
//! Memory is bounded whatever `--threads` and `--jobs` ask for ([`plan`]): a store runs at most
//! `workers` encoders at once across every image sharing it, and holds at most
//! `chunks_in_flight` chunks (read, being compressed, or compressed and waiting to be written
//! in order) across those images; `workers` is reduced until both fit in the store's share of
//! [`MEMORY_BUDGET`].

pub mod kept;
pub mod xz;
pub mod zst;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Arc, Condvar, Mutex};

use sha2::{Digest, Sha256};

use crate::sparse::is_hole;

/// Bytes of image per xz block or zstd frame, at fixed offsets (a multiple of 4 KiB, so that
/// the chunks of two images line up with their filesystems' blocks). 4 MiB: a node's few
/// changed kilobytes recompress a few chunks, and the ratio stays within a few percent of
/// one-block xz.
pub const CHUNK: usize = 4 << 20;

/// Memory the compressed outputs of one build may use, every format together (each format's
/// store gets an equal share): the encoders and the chunks in flight. With the rest of a build
/// (10-12 MiB for a raw build, see BENCHMARKS.md) it keeps a build's peak RSS well under
/// issue 13's 300 MB whatever the thread count.
pub const MEMORY_BUDGET: u64 = 200 << 20;

/// The most one chunk in flight holds: its bytes as read ([`CHUNK`]) and its compressed bytes
/// (at most the chunk plus the codec's small overhead, counted as a second chunk), plus
/// slack for the containers around them.
const CHUNK_MEMORY: u64 = 2 * CHUNK as u64 + (64 << 10);

/// Chunks in flight per encoder: one being compressed, one read or waiting to be written
/// (so that an encoder rarely waits for the writer).
const CHUNKS_PER_WORKER: usize = 2;

/// How a store compresses within its memory: encoders at once and chunks in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Encoders running at once (and threads per image).
    pub workers: usize,
    /// Chunks held at once across every image sharing the store.
    pub chunks_in_flight: usize,
    /// The estimated memory of the plan, bytes.
    pub memory: u64,
}

/// The plan for `requested` threads (at least 1) of `codec` within `budget` bytes: as many
/// workers as asked for while `workers x (encoder + 2 chunks in flight)` fits, and never fewer
/// than one (one xz worker needs ~64 MiB).
pub fn plan(codec: Codec, requested: usize, budget: u64) -> Plan {
    let per_worker = codec.encoder_memory() + CHUNKS_PER_WORKER as u64 * CHUNK_MEMORY;
    let fits = usize::try_from(budget / per_worker).unwrap_or(usize::MAX);
    let workers = requested.clamp(1, fits.max(1));
    Plan {
        workers,
        chunks_in_flight: workers * CHUNKS_PER_WORKER,
        memory: workers as u64 * per_worker,
    }
}

/// The compressed formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    Xz,
    Zstd,
}

impl Codec {
    /// What names the encoder: the format, its library's version and the settings (the
    /// compressed bytes of a chunk depend on nothing else).
    pub fn encoder_id(self) -> String {
        match self {
            Codec::Xz => xz::encoder_id(),
            Codec::Zstd => zst::encoder_id(),
        }
    }

    /// The file name extension, after `.img`.
    pub fn extension(self) -> &'static str {
        match self {
            Codec::Xz => "xz",
            Codec::Zstd => "zst",
        }
    }

    /// The memory one encoder of a [`CHUNK`] uses, bytes: xz asks liblzma for its filter chain
    /// (preset 6 with a 4 MiB dictionary: ~45 MiB, mostly the BT4 match finder); zstd level
    /// [`zst::LEVEL`] on a 4 MiB input uses windowLog 21, chainLog 16, hashLog 17 (zstd's
    /// lib/compress/clevels.h, the table for inputs over 256 KiB): a 2 MiB window plus 768 KiB
    /// of tables and its sequence buffers, counted as 8 MiB.
    pub fn encoder_memory(self) -> u64 {
        match self {
            Codec::Xz => xz::encoder_memory(),
            Codec::Zstd => 8 << 20,
        }
    }
}

/// One chunk compressed: the bytes as they go into the file, and (xz) what the index records.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// xz: the block's unpadded size (header, data and check, without padding).
    pub unpadded: u64,
    pub uncompressed: u64,
}

/// Where a chunk's compressed bytes already are: in an output file written earlier.
#[derive(Debug, Clone)]
struct Stored {
    file: Arc<File>,
    offset: u64,
    len: u64,
    unpadded: u64,
    uncompressed: u64,
}

/// A chunk in the store.
#[derive(Debug, Clone)]
enum Entry {
    /// Being compressed by one thread; the others wanting it wait (the nodes of a build built
    /// at once reach their shared chunks at about the same time: each is compressed once).
    Encoding,
    /// Compressed, not yet in any file.
    Ready(Arc<Encoded>),
    /// In an output file.
    Stored(Stored),
}

/// A counting semaphore: at most `n` encoders (or chunks in flight) at once.
#[derive(Debug)]
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

impl Slots {
    fn acquire(&self) -> SlotGuard<'_> {
        let mut n = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *n == 0 {
            n = self.cv.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n -= 1;
        SlotGuard(self)
    }
}

struct SlotGuard<'a>(&'a Slots);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// The compressed chunks of one format, shared by every image of a build.
#[derive(Debug)]
pub struct BlockStore {
    codec: Codec,
    threads: usize,
    slots: Slots,
    /// One per chunk in flight: taken before a chunk is claimed, given back once it is written.
    in_flight: Slots,
    window: usize,
    chunks: Mutex<HashMap<[u8; 32], Entry>>,
    /// Signalled when a chunk being compressed is ready (or its compression failed).
    done: Condvar,
    /// SHA-256 of [`CHUNK`] zero bytes: the key of a chunk that is a hole in the source.
    zero_key: [u8; 32],
    /// The chunks earlier builds compressed, kept in the cache ([`kept`]), when this build
    /// reads and adds to them.
    kept: Mutex<Option<Arc<kept::Kept>>>,
}

impl BlockStore {
    /// A store for `codec`, compressing on `threads` threads (at least 1), within
    /// [`MEMORY_BUDGET`] ([`plan`]: fewer threads when that many would not fit).
    pub fn new(codec: Codec, threads: usize) -> BlockStore {
        BlockStore::with_plan(codec, plan(codec, threads, MEMORY_BUDGET))
    }

    /// A store that runs `plan`.
    pub fn with_plan(codec: Codec, plan: Plan) -> BlockStore {
        let threads = plan.workers.max(1);
        let window = plan.chunks_in_flight.max(1);
        BlockStore {
            codec,
            threads,
            slots: Slots {
                free: Mutex::new(threads),
                cv: Condvar::new(),
            },
            in_flight: Slots {
                free: Mutex::new(window),
                cv: Condvar::new(),
            },
            window,
            chunks: Mutex::new(HashMap::new()),
            done: Condvar::new(),
            zero_key: Sha256::digest(vec![0u8; CHUNK]).into(),
            kept: Mutex::new(None),
        }
    }

    /// Takes chunks from, and adds them to, those kept in the cache `cache` by earlier builds
    /// ([`kept`]); `None`: neither (a build that must compress everything itself).
    pub fn keep_in(&self, cache: Option<&Path>) {
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) =
            cache.map(|c| Arc::new(kept::Kept::new(c, self.codec)));
    }

    fn kept(&self) -> Option<Arc<kept::Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The encoders that run at once.
    pub fn workers(&self) -> usize {
        self.threads
    }

    /// How many distinct chunks have been compressed (for tests and benchmarks).
    pub fn distinct_chunks(&self) -> usize {
        self.lock().len()
    }

    /// Forgets every chunk (and closes the files they were in): the end of a build. The
    /// chunks kept in the cache are pruned to their limit.
    pub fn clear(&self) {
        self.lock().clear();
        if let Some(k) = self.kept() {
            k.prune();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn encode(&self, chunk: &[u8]) -> io::Result<Encoded> {
        let _slot = self.slots.acquire();
        match self.codec {
            Codec::Xz => xz::encode_block(chunk),
            Codec::Zstd => zst::encode_frame(chunk),
        }
    }
}

/// What was written: the compressed file's size and SHA-256 (computed while writing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub sha256: String,
    /// Chunks compressed for this image; the rest were copied from earlier outputs.
    pub fresh_chunks: u64,
    pub chunks: u64,
}

/// What [`compress_stream`] wrote (its caller hashes the bytes as they pass).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streamed {
    pub bytes: u64,
    /// Chunks compressed for this image; the rest were copied from earlier outputs or from
    /// another image's compression.
    pub fresh_chunks: u64,
    pub chunks: u64,
}

/// A chunk ready to be written.
enum Piece {
    Stored(Stored),
    /// Compressed by this image's threads (`true`) or another image's, not yet in a file.
    Encoded([u8; 32], Arc<Encoded>, bool),
}

/// The output, its running offset, and the index records.
struct Sink<'a> {
    out: &'a mut dyn Write,
    shared: Arc<File>,
    pos: u64,
    records: Vec<(u64, u64)>,
}

impl Sink<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }
}

/// Compresses the image `src` into `dst` (an empty file, written from its start) with the
/// store's format; chunks already in the store are copied, the others compressed on the
/// store's threads and added to it (pointing into `dst`, which must stay open and unchanged
/// while the store is used: the store keeps a handle).
pub fn compress_file(store: &BlockStore, src: &File, dst: &mut File) -> io::Result<Written> {
    let shared = Arc::new(dst.try_clone()?);
    let mut w = crate::digest::HashingWriter::new(dst);
    let s = compress_stream(store, src, &mut w, shared, None, &|_| {})?;
    let (sha256, _, _) = w.finish();
    Ok(Written {
        bytes: s.bytes,
        sha256,
        fresh_chunks: s.fresh_chunks,
        chunks: s.chunks,
    })
}

/// Where a chunk's key (its SHA-256) comes from: by default hashing the chunk; a node image
/// takes the keys of chunks that are the same in its role image from there
/// (`build::reuse`).
pub trait ChunkKeys: Sync {
    /// The SHA-256 of `chunk`, chunk `index` of the image (its bytes as read).
    fn key(&self, index: u64, chunk: &[u8]) -> io::Result<[u8; 32]>;

    /// Another file whose chunk `index` holds the same bytes, to read them from instead
    /// (whose pages are more likely in memory), if there is one.
    fn source(&self, _index: u64) -> Option<&File> {
        None
    }
}

/// [`compress_file`] into any writer that passes each write through to the start of the file
/// `readback` reads (unbuffered: once `write` returns the bytes are in that file, where other
/// images' compressions may read them back with positional reads). Chunk keys come from
/// `keys` when given (they must be the chunks' SHA-256), else are hashed. `consumed` is told,
/// on the calling thread, how many bytes of `src` are compressed and written so far (after
/// each chunk, in order, ending with the image's size), for a progress bar.
pub fn compress_stream(
    store: &BlockStore,
    src: &File,
    dst: &mut dyn Write,
    readback: Arc<File>,
    keys: Option<&dyn ChunkKeys>,
    consumed: &dyn Fn(u64),
) -> io::Result<Streamed> {
    let len = src.metadata()?.len();
    let chunks = len.div_ceil(CHUNK as u64);
    let mut sink = Sink {
        out: dst,
        shared: readback,
        pos: 0,
        records: Vec::new(),
    };
    if store.codec == Codec::Xz {
        sink.write(&xz::stream_header()?)?;
    }
    let window = store.window as u64;
    // (next chunk to claim, chunks written, failed)
    let state = Mutex::new((0u64, 0u64, false));
    let cv = Condvar::new();
    let mut fresh = 0u64;
    let result: io::Result<()> = std::thread::scope(|s| {
        let (tx, rx) = mpsc::channel::<(u64, io::Result<Piece>, SlotGuard<'_>)>();
        for _ in 0..store.threads {
            let tx = tx.clone();
            let (state, cv) = (&state, &cv);
            s.spawn(move || loop {
                // A chunk's memory is taken before it is claimed (so this image's lowest
                // unwritten chunk always holds one, and every image makes progress), and
                // given back when the chunk is written.
                let token = store.in_flight.acquire();
                let i = {
                    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                    while !st.2 && st.0 < chunks && st.0 >= st.1 + window {
                        st = cv.wait(st).unwrap_or_else(|p| p.into_inner());
                    }
                    if st.2 || st.0 >= chunks {
                        return;
                    }
                    st.0 += 1;
                    st.0 - 1
                };
                let piece = produce(store, src, len, i, keys);
                if tx.send((i, piece, token)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<u64, (Piece, SlotGuard<'_>)> = BTreeMap::new();
        let mut next = 0u64;
        let fail = |e: io::Error| {
            state.lock().unwrap_or_else(|p| p.into_inner()).2 = true;
            cv.notify_all();
            e
        };
        while next < chunks {
            let Ok((i, piece, token)) = rx.recv() else {
                return Err(fail(io::Error::other("a compression thread stopped")));
            };
            pending.insert(i, (piece.map_err(fail)?, token));
            while let Some((p, token)) = pending.remove(&next) {
                if matches!(p, Piece::Encoded(_, _, true)) {
                    fresh += 1;
                }
                // A stored chunk is read back under its token.
                write_piece(store, &mut sink, p).map_err(fail)?;
                drop(token);
                next += 1;
                state.lock().unwrap_or_else(|p| p.into_inner()).1 = next;
                cv.notify_all();
                // Reported from the writer, not the encoders: chunks finish out of order, and
                // a position must only grow (and match what is in the file).
                consumed((next * CHUNK as u64).min(len));
            }
        }
        Ok(())
    });
    result?;
    if chunks == 0 && store.codec == Codec::Zstd {
        // An empty image: one empty frame (a file of no frames is not a zstd file).
        sink.write(&zst::encode_frame(&[])?.bytes)?;
    }
    if store.codec == Codec::Xz {
        let tail = xz::stream_tail(&sink.records)?;
        sink.write(&tail)?;
    }
    sink.out.flush()?;
    Ok(Streamed {
        bytes: sink.pos,
        fresh_chunks: fresh,
        chunks,
    })
}

/// Reads chunk `i`, and finds it in the store (waiting if another thread is compressing it)
/// or compresses it.
fn produce(
    store: &BlockStore,
    src: &File,
    len: u64,
    i: u64,
    keys: Option<&dyn ChunkKeys>,
) -> io::Result<Piece> {
    let from = i * CHUNK as u64;
    let to = (from + CHUNK as u64).min(len);
    let n = (to - from) as usize;
    let src = keys.and_then(|k| k.source(i)).unwrap_or(src);
    let hole = n == CHUNK && is_hole(src, from, to);
    let mut buf = vec![0u8; n];
    let key: [u8; 32] = if hole {
        store.zero_key
    } else {
        crate::sparse::read_at(src, &mut buf, from)?;
        match keys {
            Some(k) => k.key(i, &buf)?,
            None => Sha256::digest(&buf).into(),
        }
    };
    {
        let mut m = store.lock();
        loop {
            match m.get(&key) {
                Some(Entry::Stored(s)) => return Ok(Piece::Stored(s.clone())),
                Some(Entry::Ready(e)) => return Ok(Piece::Encoded(key, e.clone(), false)),
                Some(Entry::Encoding) => {
                    m = store.done.wait(m).unwrap_or_else(|p| p.into_inner());
                }
                None => {
                    m.insert(key, Entry::Encoding);
                    break;
                }
            }
        }
    }
    let kept = store.kept();
    let encoded = match kept.as_ref().and_then(|k| k.get(&key, n as u64)) {
        // Compressed by an earlier build: not fresh.
        Some(e) => {
            let e = Arc::new(e);
            store.lock().insert(key, Entry::Ready(e.clone()));
            store.done.notify_all();
            return Ok(Piece::Encoded(key, e, false));
        }
        None => store.encode(&buf),
    };
    if let (Ok(e), Some(k)) = (&encoded, &kept) {
        k.put(&key, e);
    }
    let mut m = store.lock();
    let r = match encoded {
        Ok(e) => {
            let e = Arc::new(e);
            m.insert(key, Entry::Ready(e.clone()));
            Ok(Piece::Encoded(key, e, true))
        }
        Err(e) => {
            // Whoever waits for it compresses it itself.
            m.remove(&key);
            Err(e)
        }
    };
    drop(m);
    store.done.notify_all();
    r
}

fn write_piece(store: &BlockStore, sink: &mut Sink<'_>, p: Piece) -> io::Result<()> {
    match p {
        Piece::Stored(s) => {
            let mut buf = vec![0u8; s.len as usize];
            s.file.read_exact_at(&mut buf, s.offset)?;
            sink.write(&buf)?;
            sink.records.push((s.unpadded, s.uncompressed));
        }
        Piece::Encoded(key, e, _) => {
            let offset = sink.pos;
            sink.write(&e.bytes)?;
            sink.records.push((e.unpadded, e.uncompressed));
            // The first file to hold the chunk keeps it for every later image (and the
            // memory is freed).
            let mut m = store.lock();
            if let Some(entry @ Entry::Ready(_)) = m.get_mut(&key) {
                *entry = Entry::Stored(Stored {
                    file: sink.shared.clone(),
                    offset,
                    len: e.bytes.len() as u64,
                    unpadded: e.unpadded,
                    uncompressed: e.uncompressed,
                });
            }
        }
    }
    Ok(())
}

/// Compresses `image` into `dest` (written under a temporary name, renamed when whole, mode
/// `mode` less the umask). The store keeps the file open to copy its chunks into later
/// outputs, so `dest` must not be rewritten while the store lives.
pub fn write(store: &BlockStore, image: &Path, dest: &Path, mode: u32) -> io::Result<Written> {
    let src = File::open(image)?;
    let mut out = crate::output::AtomicFile::create_with_mode(dest, mode)?;
    let w = compress_file(store, &src, out.file())?;
    out.commit()?;
    Ok(w)
}

#[cfg(test)]
mod tests;
