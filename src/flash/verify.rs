//! The read-back after a write: every mapped range read around the page cache and compared
//! with the block map's checksum; and the test hook that corrupts a byte on the medium first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::channel;

use sha2::{Digest, Sha256};

use super::aligned::AlignedBuf;
use super::reader;
use super::target::Target;
use super::{FlashError, Map};
use crate::progress::{Progress, Task};

/// The test hook: one byte flipped, on the medium.
pub(super) fn corrupt(t: &mut Target, at: u64) -> std::io::Result<()> {
    let base = at / 4096 * 4096;
    let mut b = AlignedBuf::new(4096);
    t.drop_cache()?;
    t.read_at(&mut b, base, true)?;
    b[(at - base) as usize] ^= 0xff;
    t.write_at(&b, base, true)?;
    t.sync()
}

/// Readers reading back and hashing at once, each a contiguous share of the mapped bytes (read
/// front to back, so the kernel's read-ahead runs ahead of each): several reads in flight
/// instead of one, and the SHA-256 of several ranges on every core. One reader left the disk
/// idle between its reads, and one hasher made the read-back as slow as SHA-256 on one core;
/// readers taking turns range by range defeated the read-ahead (each jumped ahead by the
/// others' ranges). Reading the benchmark's cold 1.1 GB file with `dd` (page cache evicted
/// first, 3 reps): 2 streams 0.6-1.0 s, 4 streams 0.46-0.49 s (BENCHMARKS.md).
pub(super) const READERS: usize = 4;

/// The first range of each reader's share: `READERS` runs of ranges of about equal bytes.
pub(super) fn shares(map: &Map) -> Vec<usize> {
    let total = map.mapped_bytes().max(1);
    let mut starts = vec![0];
    let mut seen = 0u64;
    for (i, r) in map.ranges.iter().enumerate() {
        let (a, b) = map.byte_range(r);
        let k = starts.len() as u64;
        if k < READERS as u64 && seen >= total * k / READERS as u64 && i > 0 {
            starts.push(i);
        }
        seen += b - a;
    }
    starts
}

/// Reads range `i` of `map` from `t` into `buf`, hashing it; `read` counts the bytes read.
fn read_range(
    t: &mut Target,
    map: &Map,
    i: usize,
    buf: &mut AlignedBuf,
    read: &AtomicU64,
) -> Result<[u8; 32], (u64, std::io::Error)> {
    let (start, end) = map.byte_range(&map.ranges[i]);
    let mut h = Sha256::new();
    let mut at = start;
    while at < end {
        let n = ((end - at) as usize).min(reader::BATCH);
        t.read_at(&mut buf[..n], at, true).map_err(|e| (at, e))?;
        h.update(&buf[..n]);
        at += n as u64;
        read.fetch_add(n as u64, Ordering::Relaxed);
    }
    Ok(h.finalize().into())
}

/// Reads every mapped range back (pages dropped first; O_DIRECT where aligned) on up to
/// [`READERS`] threads, each hashing what it read, and compares each range's SHA-256 with its
/// checksum in the map's order, naming the first range that differs (or could not be read).
pub(super) fn verify(
    t: &mut Target,
    map: &Map,
    digests: &[[u8; 32]],
    progress: Option<&dyn Progress>,
) -> Result<(), FlashError> {
    let shown = t.path.display().to_string();
    let read_err = |at: u64| {
        let target = shown.clone();
        move |err| FlashError::VerifyRead { target, at, err }
    };
    t.drop_cache().map_err(read_err(0))?;
    let count = map.ranges.len();
    let starts = shares(map);
    let mut readers = Vec::with_capacity(starts.len());
    for (k, &first) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(count);
        readers.push((first..end, t.reader().map_err(read_err(0))?));
    }
    let total = map.mapped_bytes();
    if let Some(p) = progress {
        p.begin(Task::Verify, Some(total));
    }
    let read = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        // Range `i`'s SHA-256 (or why it could not be read), from any reader, in any order.
        let (tx, rx) = channel::<(usize, Result<[u8; 32], FlashError>)>();
        for (share, mut rt) in readers {
            let tx = tx.clone();
            let (read_err, read, stop) = (&read_err, &read, &stop);
            scope.spawn(move || {
                let mut buf = AlignedBuf::new(reader::BATCH);
                for i in share {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let r = read_range(&mut rt, map, i, &mut buf, read)
                        .map_err(|(at, err)| read_err(at)(err));
                    let failed = r.is_err();
                    if tx.send((i, r)).is_err() || failed {
                        return;
                    }
                }
            });
        }
        drop(tx);
        // The readers stop at their next range once this returns (a failure found).
        let _stop = StopOnDrop(&stop);
        let mut got: Vec<Option<Result<[u8; 32], FlashError>>> = Vec::new();
        got.resize_with(count, || None);
        let mut next = 0usize;
        while next < count {
            if got[next].is_none() {
                match rx.recv() {
                    Ok((i, r)) => {
                        got[i] = Some(r);
                        if let Some(p) = progress {
                            p.advance(Task::Verify, read.load(Ordering::Relaxed));
                        }
                        continue;
                    }
                    Err(_) => {
                        return Err(FlashError::VerifyRead {
                            target: shown.clone(),
                            at: map.byte_range(&map.ranges[next]).0,
                            err: std::io::Error::other("the read-back stopped early"),
                        })
                    }
                }
            }
            let i = next;
            next += 1;
            let d = match got[i].take() {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(e),
                None => continue,
            };
            // The source's hashes cover every range (the reader made one per range).
            if digests.get(i) != Some(&d) {
                let r = &map.ranges[i];
                let (start, end) = map.byte_range(r);
                return Err(FlashError::Verify {
                    target: shown.clone(),
                    first: r.first,
                    last: r.last,
                    start,
                    end,
                    index: i + 1,
                    count,
                });
            }
        }
        Ok(())
    });
    result?;
    if let Some(p) = progress {
        p.finish(Task::Verify);
    }
    Ok(())
}

/// Sets the flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
