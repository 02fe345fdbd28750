//! The decompressed size of an `.xz` file, read from its indexes without decompressing: each
//! stream ends with a 12-byte footer whose Backward Size locates the stream's index, which
//! lists every block's unpadded and uncompressed size (the .xz file format 1.2.1, sections
//! 2.1.2 "Stream Footer", 4 "Index" and 2.2 "Stream Padding",
//! <https://tukaani.org/xz/xz-file-format.txt>). Streams are walked from the end, so
//! concatenated streams (and the padding between them) count too.
//!
//! [`super::plan`] compares this with a block map's `ImageSize` before anything is opened for
//! writing: a bmap that claims a larger (or smaller) image than the `.xz` holds is refused
//! at once, not after a large file was created. It is a pre-check only: the decoder checks
//! the index against the blocks it decodes, and the reader checks that the stream ends
//! exactly at `ImageSize`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const FOOTER: u64 = 12;
const HEADER: u64 = 12;
/// An index larger than this is not read (a 64 GiB image in 1 MiB blocks has a 1 MiB index).
const MAX_INDEX: u64 = 64 << 20;

fn bad(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a valid .xz file: {why}"),
    )
}

/// The sum of the uncompressed sizes every stream's index records; `Ok(None)` when an index
/// is too large to read here (the size is then checked while decoding).
pub fn uncompressed_size(f: &File) -> io::Result<Option<u64>> {
    let mut pos = f.metadata()?.len();
    let mut total = 0u64;
    let mut streams = 0;
    while pos > 0 {
        let mut word = [0u8; 4];
        if pos < 4 {
            return Err(bad("it ends in a partial stream padding"));
        }
        f.read_exact_at(&mut word, pos - 4)?;
        if word == [0; 4] {
            // Stream padding (null bytes, a multiple of four); a footer ends in "YZ".
            pos -= 4;
            continue;
        }
        if pos < HEADER + FOOTER {
            return Err(bad("it is shorter than a stream header and footer"));
        }
        let mut footer = [0u8; FOOTER as usize];
        f.read_exact_at(&mut footer, pos - FOOTER)?;
        if &footer[10..12] != b"YZ" {
            return Err(bad("no stream footer at its end"));
        }
        let backward = u32::from_le_bytes([footer[4], footer[5], footer[6], footer[7]]);
        let index_size = (u64::from(backward) + 1) * 4;
        if index_size > MAX_INDEX {
            return Ok(None);
        }
        let index_start = (pos - FOOTER)
            .checked_sub(index_size)
            .ok_or_else(|| bad("its index starts before the file"))?;
        let mut index = vec![0u8; index_size as usize];
        f.read_exact_at(&mut index, index_start)?;
        let (uncompressed, blocks) = parse_index(&index)?;
        total = total
            .checked_add(uncompressed)
            .ok_or_else(|| bad("its sizes overflow"))?;
        pos = index_start
            .checked_sub(blocks)
            .and_then(|p| p.checked_sub(HEADER))
            .ok_or_else(|| bad("its blocks start before the file"))?;
        streams += 1;
    }
    if streams == 0 {
        return Err(bad("it holds no stream"));
    }
    Ok(Some(total))
}

/// One index: the sum of its records' uncompressed sizes, and the bytes its blocks take in the
/// stream (each unpadded size rounded up to four).
fn parse_index(index: &[u8]) -> io::Result<(u64, u64)> {
    if index.first() != Some(&0) {
        return Err(bad("its index has no index indicator"));
    }
    let mut at = 1;
    let records = vli(index, &mut at)?;
    let (mut uncompressed, mut blocks) = (0u64, 0u64);
    for _ in 0..records {
        let unpadded = vli(index, &mut at)?;
        let size = vli(index, &mut at)?;
        uncompressed = uncompressed
            .checked_add(size)
            .ok_or_else(|| bad("its sizes overflow"))?;
        blocks = blocks
            .checked_add(unpadded.next_multiple_of(4))
            .ok_or_else(|| bad("its sizes overflow"))?;
    }
    Ok((uncompressed, blocks))
}

/// A variable-length integer: seven bits a byte, least significant first, at most nine bytes.
fn vli(buf: &[u8], at: &mut usize) -> io::Result<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let b = *buf
            .get(*at)
            .ok_or_else(|| bad("its index ends inside a number"))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("a number in its index is longer than nine bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Sizes read from files made by xz(1), one stream and three concatenated with padding,
    /// equal what `xz --robot --list` reports.
    #[test]
    fn sizes_equal_what_xz_lists() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(&raw, &data).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("xz").args(args).output().expect("xz(1)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        // Several blocks in one stream.
        let one = run(&["-T2", "--block-size=500KiB", "-c", raw.to_str().unwrap()]);
        let p1 = dir.path().join("one.xz");
        std::fs::write(&p1, &one).unwrap();
        let got = uncompressed_size(&File::open(&p1).unwrap()).unwrap();
        assert_eq!(got, Some(data.len() as u64));
        let listed = String::from_utf8(run(&["--robot", "--list", p1.to_str().unwrap()])).unwrap();
        let totals = listed.lines().find(|l| l.starts_with("totals")).unwrap();
        assert_eq!(totals.split('\t').nth(4), Some("3000000"), "{listed}");
        // Three streams, stream padding between them.
        let mut cat = one.clone();
        cat.extend_from_slice(&[0; 8]);
        cat.extend_from_slice(&one);
        cat.extend_from_slice(&one);
        cat.extend_from_slice(&[0; 4]);
        let p3 = dir.path().join("three.xz");
        std::fs::write(&p3, &cat).unwrap();
        let got = uncompressed_size(&File::open(&p3).unwrap()).unwrap();
        assert_eq!(got, Some(3 * data.len() as u64));
        // Not xz, or cut short: an error, not a size.
        let cut = dir.path().join("cut.xz");
        std::fs::write(&cut, &one[..one.len() - 5]).unwrap();
        assert!(uncompressed_size(&File::open(&cut).unwrap()).is_err());
        assert!(uncompressed_size(&File::open(&raw).unwrap()).is_err());
    }
}
