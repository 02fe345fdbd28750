//! The read-back after a write: every mapped range read around the page cache and compared
//! with the block map's checksum; and the test hook that corrupts a byte on the medium first.

use std::sync::mpsc::sync_channel;

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

/// Readers reading back at once, each its own share of the batches (batch `j` goes to reader
/// `j % READERS`): two reads in flight instead of one. A single reader left the disk idle
/// between its reads; reading a cold 1.1 GB file with two streams took about half the time of
/// one (BENCHMARKS.md, flash).
const READERS: usize = 2;

/// The batches of the read-back, in order: `(range index, offset, length)`.
fn batches(map: &Map) -> impl Iterator<Item = (usize, u64, usize)> + '_ {
    map.ranges.iter().enumerate().flat_map(move |(i, r)| {
        let (start, end) = map.byte_range(r);
        (start..end)
            .step_by(reader::BATCH)
            .map(move |at| (i, at, ((end - at) as usize).min(reader::BATCH)))
    })
}

type ReadBack = Result<(usize, AlignedBuf, usize), FlashError>;

/// Reads every mapped range back (pages dropped first; O_DIRECT where aligned) on
/// [`READERS`] threads while this one hashes in order, and compares with the range's
/// checksum.
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
    let mut readers = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        readers.push(t.reader().map_err(read_err(0))?);
    }
    let total = map.mapped_bytes();
    if let Some(p) = progress {
        p.begin(Task::Verify, Some(total));
    }
    let result = std::thread::scope(|scope| {
        // Dropped when this closure returns, before the scope joins the readers: a reader
        // blocked on a full channel then sees it closed.
        let mut rxs = Vec::with_capacity(READERS);
        let mut backs = Vec::with_capacity(READERS);
        for (k, mut rt) in readers.into_iter().enumerate() {
            let (tx, rx) = sync_channel::<ReadBack>(2);
            let (back_tx, back_rx) = sync_channel::<AlignedBuf>(3);
            rxs.push(rx);
            backs.push(back_tx);
            let read_err = &read_err;
            scope.spawn(move || {
                for (i, at, n) in batches(map).skip(k).step_by(READERS) {
                    let mut buf = back_rx
                        .try_recv()
                        .unwrap_or_else(|_| AlignedBuf::new(reader::BATCH));
                    let msg = rt
                        .read_at(&mut buf[..n], at, true)
                        .map(|()| (i, buf, n))
                        .map_err(read_err(at));
                    let failed = msg.is_err();
                    // A closed channel: the hasher stopped (a mismatch); so does this reader.
                    if tx.send(msg).is_err() || failed {
                        return;
                    }
                }
            });
        }
        let mut h = Sha256::new();
        let mut cur = 0usize;
        let mut left = map.ranges.first().map_or(0, |r| {
            let (a, b) = map.byte_range(r);
            b - a
        });
        let mut done = 0u64;
        for j in 0.. {
            let Ok(msg) = rxs[j % READERS].recv() else {
                break;
            };
            let (i, buf, n) = msg?;
            debug_assert_eq!(i, cur);
            h.update(&buf[..n]);
            left -= n as u64;
            done += n as u64;
            let _ = backs[j % READERS].try_send(buf);
            if let Some(p) = progress {
                p.advance(Task::Verify, done);
            }
            while left == 0 && cur < map.ranges.len() {
                let got: [u8; 32] = std::mem::take(&mut h).finalize().into();
                let r = &map.ranges[cur];
                if got != digests[cur] {
                    let (start, end) = map.byte_range(r);
                    return Err(FlashError::Verify {
                        target: shown.clone(),
                        first: r.first,
                        last: r.last,
                        start,
                        end,
                        index: cur + 1,
                        count: map.ranges.len(),
                    });
                }
                cur += 1;
                left = map.ranges.get(cur).map_or(0, |r| {
                    let (a, b) = map.byte_range(r);
                    b - a
                });
            }
        }
        if cur < map.ranges.len() {
            return Err(FlashError::VerifyRead {
                target: shown.clone(),
                at: map.byte_range(&map.ranges[cur]).0,
                err: std::io::Error::other("the read-back stopped early"),
            });
        }
        Ok(())
    });
    result?;
    if let Some(p) = progress {
        p.finish(Task::Verify);
    }
    Ok(())
}
