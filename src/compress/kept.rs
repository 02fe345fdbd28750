//! Compressed chunks kept in the cache between builds, so that building again (the same spec,
//! every CI run with the cache kept, a spec change touching one node) compresses only the
//! chunks no earlier build compressed: the rest of a node's `.img.xz` or `.img.zst` is
//! copied from the cache. xz at preset 6 compresses ~13 MB/s on two cores here: the 1.1 GB of
//! a node image's data are over a minute, where the chunk keys are a second of SHA-256.
//!
//! A chunk's compressed bytes depend only on its content and the encoder ([`super`]), so they
//! are kept under the chunk's SHA-256 in a directory named after the encoder: the format, the
//! library's version and the settings (`<cache>/blocks/xz-50080012-p6-crc64/<key>`). Another
//! liblzma or zstd, which could compress the same chunk to other bytes, uses another directory:
//! a build's output never depends on what an earlier build with another encoder left. Each
//! entry records the SHA-256 of its compressed bytes, checked when read; an entry that cannot be
//! read, does not parse, is not the expected size, or whose bytes do not match is ignored (the
//! chunk is compressed again and the entry rewritten); one that cannot be written is not an
//! error. The directory is kept under [`MAX_BYTES`], the least recently used entries going
//! first, when a build is done. `build --verify` does not read it: it compresses what it
//! rebuilt. As the other memos, it is no more trusted than the cache itself.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::{Codec, Encoded, CHUNK};

/// The most the kept chunks of one encoder take, bytes: a few builds' worth of distinct
/// chunks (a 2 GiB image holding 1.1 GB of data is ~100-130 MB of xz).
pub const MAX_BYTES: u64 = 2 << 30;

/// What remains after pruning: room for the next build's new chunks.
const PRUNED_TO: u64 = MAX_BYTES / 4 * 3;

/// The kept chunks of one encoder.
#[derive(Debug)]
pub struct Kept {
    dir: PathBuf,
}

fn hex_key(key: &[u8; 32]) -> String {
    hex::encode(key)
}

impl Kept {
    /// The kept chunks of `codec`'s encoder in the cache `cache`.
    pub fn new(cache: &Path, codec: Codec) -> Kept {
        Kept {
            dir: cache.join("blocks").join(codec.encoder_id()),
        }
    }

    /// The compressed chunk kept under `key` (the SHA-256 of its `uncompressed` bytes), if
    /// there is a whole one; its use is recorded (its modification time) for [`Kept::prune`].
    pub fn get(&self, key: &[u8; 32], uncompressed: u64) -> Option<Encoded> {
        let path = self.dir.join(hex_key(key));
        let mut f = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .ok()?;
        // The header line, then at most a chunk's compressed bound (a chunk plus the codec's
        // small overhead).
        let limit = 256 + CHUNK as u64 + (64 << 10);
        let mut data = Vec::new();
        (&mut f).take(limit + 1).read_to_end(&mut data).ok()?;
        let nl = data.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&data[..nl]).ok()?;
        let bytes = &data[nl + 1..];
        let mut w = head.split(' ');
        let (Some("pfblk1"), Some(unpadded), Some(size), Some(sha), None) =
            (w.next(), w.next(), w.next(), w.next(), w.next())
        else {
            return None;
        };
        let (unpadded, size): (u64, u64) = (unpadded.parse().ok()?, size.parse().ok()?);
        if size != uncompressed
            || unpadded > bytes.len() as u64
            || sha != hex::encode(Sha256::digest(bytes))
        {
            return None;
        }
        let _ = f.set_modified(SystemTime::now());
        Some(Encoded {
            bytes: bytes.to_vec(),
            unpadded,
            uncompressed,
        })
    }

    /// Keeps `e`, the compressed chunk whose SHA-256 is `key` (written whole under a
    /// temporary name, then renamed into place).
    pub fn put(&self, key: &[u8; 32], e: &Encoded) {
        if fs::create_dir_all(&self.dir).is_err() {
            return;
        }
        let head = format!(
            "pfblk1 {} {} {}\n",
            e.unpadded,
            e.uncompressed,
            hex::encode(Sha256::digest(&e.bytes))
        );
        let dest = self.dir.join(hex_key(key));
        let _ = crate::output::replace_unsynced(&dest, &[head.as_bytes(), &e.bytes]);
    }

    /// Keeps the directory under [`MAX_BYTES`]: above it, the least recently used entries are
    /// removed until [`PRUNED_TO`] is left. Leftover temporary files of killed builds go too.
    pub fn prune(&self) {
        crate::output::remove_stale_temps(&self.dir);
        prune_dir(&self.dir, MAX_BYTES, PRUNED_TO);
    }
}

fn prune_dir(dir: &Path, max: u64, to: u64) {
    let bytes = |bytes| crate::output::Bound {
        files: usize::MAX,
        bytes,
    };
    crate::output::remove_oldest(dir, bytes(max), bytes(to));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(n: u8) -> Encoded {
        Encoded {
            bytes: vec![n; 100 + n as usize],
            unpadded: 99,
            uncompressed: 4096,
        }
    }

    /// A kept chunk is found whole; one damaged in any way, of another size, or planted as a
    /// symlink is not.
    #[test]
    fn kept_chunks_are_found_only_when_whole() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Kept::new(dir.path(), Codec::Xz);
        let key = [7u8; 32];
        assert!(kept.get(&key, 4096).is_none());
        kept.put(&key, &encoded(1));
        let got = kept.get(&key, 4096).unwrap();
        assert_eq!((got.bytes, got.unpadded), (encoded(1).bytes, 99));
        assert!(kept.get(&key, 4095).is_none(), "another size");
        let path = kept.dir.join(hex_key(&key));
        let whole = fs::read(&path).unwrap();
        let mut flipped = whole.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        for damaged in [
            flipped,
            whole[..whole.len() - 1].to_vec(),
            [whole.as_slice(), b"x"].concat(),
            String::from_utf8_lossy(&whole)
                .replacen("pfblk1", "pfblk2", 1)
                .into_bytes(),
            Vec::new(),
        ] {
            fs::write(&path, &damaged).unwrap();
            assert!(kept.get(&key, 4096).is_none());
        }
        fs::remove_file(&path).unwrap();
        let elsewhere = dir.path().join("planted");
        fs::write(&elsewhere, &whole).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
        assert!(kept.get(&key, 4096).is_none(), "a symlink is not followed");
        // Each encoder has its own directory.
        assert_ne!(
            Kept::new(dir.path(), Codec::Xz).dir,
            Kept::new(dir.path(), Codec::Zstd).dir
        );
    }

    /// Above the limit, the least recently used entries go until the lower mark is reached.
    #[test]
    fn the_least_recently_used_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Kept::new(dir.path(), Codec::Zstd);
        for n in 0..6u8 {
            kept.put(&[n; 32], &encoded(n));
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + n as u64);
            File::options()
                .write(true)
                .open(kept.dir.join(hex_key(&[n; 32])))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        // Entry 0 used just now: the most recent.
        assert!(kept.get(&[0; 32], 4096).is_some());
        let size = |n: u8| {
            fs::metadata(kept.dir.join(hex_key(&[n; 32])))
                .unwrap()
                .len()
        };
        let all: u64 = (0..6).map(size).sum();
        prune_dir(&kept.dir, all, all);
        assert!((0..6).all(|n| kept.dir.join(hex_key(&[n; 32])).exists()));
        // Over the limit: 1, 2 and 3 (the oldest) go to get under three entries' worth.
        prune_dir(&kept.dir, all - 1, size(0) + size(4) + size(5));
        let left: Vec<bool> = (0..6)
            .map(|n| kept.dir.join(hex_key(&[n; 32])).exists())
            .collect();
        assert_eq!(left, [true, false, false, false, true, true]);
    }
}
