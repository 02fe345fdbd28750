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

/// Reads every mapped range back (pages dropped first; O_DIRECT where aligned) on one thread
/// while this one hashes, and compares with the range's checksum.
pub(super) fn verify(
    t: &mut Target,
    map: &Map,
    digests: &[[u8; 32]],
    progress: Option<&dyn Progress>,
) -> Result<(), FlashError> {
    let shown = t.path.display().to_string();
    t.drop_cache().map_err(|err| FlashError::VerifyRead {
        target: shown.clone(),
        at: 0,
        err,
    })?;
    let total = map.mapped_bytes();
    if let Some(p) = progress {
        p.begin(Task::Verify, Some(total));
    }
    let (tx, rx) = sync_channel::<Result<(usize, AlignedBuf, usize), FlashError>>(3);
    let (back_tx, back_rx) = sync_channel::<AlignedBuf>(4);
    let result = std::thread::scope(|scope| {
        // Dropped when this closure returns, before the scope joins the reader: a reader
        // blocked on a full channel then sees it closed.
        let rx = rx;
        let shown_r = shown.clone();
        scope.spawn(move || {
            for (i, r) in map.ranges.iter().enumerate() {
                let (start, end) = map.byte_range(r);
                let mut at = start;
                while at < end {
                    let n = ((end - at) as usize).min(reader::BATCH);
                    let mut buf = back_rx
                        .try_recv()
                        .unwrap_or_else(|_| AlignedBuf::new(reader::BATCH));
                    if let Err(err) = t.read_at(&mut buf[..n], at, true) {
                        let _ = tx.send(Err(FlashError::VerifyRead {
                            target: shown_r,
                            at,
                            err,
                        }));
                        return;
                    }
                    if tx.send(Ok((i, buf, n))).is_err() {
                        return;
                    }
                    at += n as u64;
                }
            }
        });
        let mut h = Sha256::new();
        let mut cur = 0usize;
        let mut left = map.ranges.first().map_or(0, |r| {
            let (a, b) = map.byte_range(r);
            b - a
        });
        let mut done = 0u64;
        for msg in rx.iter() {
            let (i, buf, n) = msg?;
            debug_assert_eq!(i, cur);
            h.update(&buf[..n]);
            left -= n as u64;
            done += n as u64;
            let _ = back_tx.try_send(buf);
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
