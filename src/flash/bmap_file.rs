//! Reading a bmaptool block map (`.bmap`, the XML that `bmaptool create` and `piforge build`
//! write; format 2.0 in bmaptool's `BmapCreate.py`, read as its `BmapCopy.py` reads it) into
//! a [`Map`], refusing one that lies: ranges out of order, overlapping or past the image,
//! counts that disagree, a checksum that is not SHA-256 hex, a file checksum that does not
//! match.
//!
//! The format is fixed and small, so this is a scanner for its few elements rather than an
//! XML library: `<ImageSize>`, `<BlockSize>`, `<BlocksCount>`, `<MappedBlocksCount>`,
//! `<ChecksumType>`, `<BmapFileChecksum>` and the `<Range chksum="...">first-last</Range>`
//! elements of `<BlockMap>`.

use sha2::{Digest, Sha256};

use super::{Map, MapOrigin, Range};

/// The largest bmap file read (a 64 GiB image with every other block mapped is about 1 GiB of
/// XML; real ones are kilobytes).
pub const MAX_BMAP_BYTES: u64 = 64 << 20;

/// What the comment of a bmap written by piforge says: its map is the filesystems'
/// allocation (every metadata block mapped), not the image file's holes.
const PIFORGE_MARK: &str = "written by piforge from the filesystems' own allocation";

/// Parses bmap XML; `Err` is one sentence saying what is wrong.
pub fn parse(full: &str) -> Result<Map, String> {
    // The elements are looked for outside comments: bmaptool's own header comment names
    // `<MappedBlocksCount>` and `<BlocksCount>` in its prose.
    let text = &strip_comments(full)?;
    let version = attr(text, "bmap", "version").ok_or("no <bmap version=...> element")?;
    let major = version.split('.').next().unwrap_or("");
    if major != "2" && major != "1" {
        return Err(format!(
            "bmap version {version} is not one piforge reads (1.x, 2.x)"
        ));
    }
    let image_bytes = number(text, "ImageSize")?;
    let block_size = number(text, "BlockSize")?;
    if block_size == 0 || block_size % 512 != 0 || block_size > (64 << 20) {
        return Err(format!(
            "BlockSize {block_size} is not a multiple of 512 bytes up to 64 MiB"
        ));
    }
    let blocks = number(text, "BlocksCount")?;
    if blocks != image_bytes.div_ceil(block_size) {
        return Err(format!(
            "BlocksCount {blocks} does not match ImageSize {image_bytes} in blocks of {block_size}"
        ));
    }
    let mapped_claimed = number(text, "MappedBlocksCount")?;
    let kind = element(text, "ChecksumType")
        .map(str::trim)
        .unwrap_or("sha256")
        .to_string();
    if kind != "sha256" {
        return Err(format!(
            "its checksums are {kind}; piforge reads bmaps with sha256 checksums (bmaptool 3.x and piforge write those)"
        ));
    }
    check_file_checksum(full)?;

    let body = element(text, "BlockMap").ok_or("no <BlockMap> element")?;
    let mut ranges: Vec<Range> = Vec::new();
    let mut rest = body;
    while let Some(at) = rest.find("<Range") {
        rest = &rest[at + "<Range".len()..];
        let close = rest.find('>').ok_or("an unterminated <Range> element")?;
        let attrs = &rest[..close];
        let after = &rest[close + 1..];
        let end = after.find("</Range>").ok_or("a <Range> without </Range>")?;
        let value = after[..end].trim();
        rest = &after[end..];
        let (first, last) = match value.split_once('-') {
            Some((a, b)) => (parse_u64(a.trim())?, parse_u64(b.trim())?),
            None => {
                let n = parse_u64(value)?;
                (n, n)
            }
        };
        if first > last {
            return Err(format!("range {value} ends before it starts"));
        }
        if last >= blocks {
            return Err(format!(
                "range {value} goes past the image's {blocks} blocks"
            ));
        }
        if let Some(prev) = ranges.last() {
            if first <= prev.last {
                return Err(format!(
                    "range {value} overlaps or comes before the range ending at block {}",
                    prev.last
                ));
            }
        }
        let sha256 = match attr_value(attrs, "chksum") {
            Some(h) => Some(parse_digest(h).ok_or_else(|| {
                format!("range {value} has checksum {h:?}, which is not 64 hex digits")
            })?),
            None if attr_value(attrs, "sha1").is_some() => {
                return Err("its ranges have sha1 checksums; piforge reads sha256 only".into())
            }
            None => None,
        };
        ranges.push(Range {
            first,
            last,
            sha256,
        });
    }
    let mapped: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
    if mapped != mapped_claimed {
        return Err(format!(
            "MappedBlocksCount says {mapped_claimed} blocks, its ranges hold {mapped}"
        ));
    }
    Ok(Map {
        image_bytes,
        block_size,
        ranges,
        origin: if full.contains(PIFORGE_MARK) {
            MapOrigin::Filesystems
        } else {
            MapOrigin::Foreign
        },
    })
}

/// The text without its `<!-- ... -->` comments.
fn strip_comments(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("<!--") {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find("-->")
            .ok_or("an unterminated <!-- comment")?;
        rest = &rest[at + end + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `BmapFileChecksum` is the SHA-256 of the file with its own value written as 64 `0`s
/// (`BmapCopy.py` `_verify_bmap_checksum`). Required: bmaptool has written it since 1.4.
fn check_file_checksum(text: &str) -> Result<(), String> {
    let tag = "<BmapFileChecksum>";
    let start = text.find(tag).ok_or("no <BmapFileChecksum> element")? + tag.len();
    let len = text[start..]
        .find("</BmapFileChecksum>")
        .ok_or("an unterminated <BmapFileChecksum>")?;
    let raw = &text[start..start + len];
    let value = raw.trim();
    let digest = parse_digest(value).ok_or("BmapFileChecksum is not 64 hex digits")?;
    let lead = raw.len() - raw.trim_start().len();
    let at = start + lead;
    let mut zeroed = String::with_capacity(text.len());
    zeroed.push_str(&text[..at]);
    zeroed.push_str(&"0".repeat(64));
    zeroed.push_str(&text[at + 64..]);
    if Sha256::digest(zeroed.as_bytes()).as_slice() != digest {
        return Err("its BmapFileChecksum does not match its content (edited or damaged)".into());
    }
    Ok(())
}

fn parse_digest(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

fn parse_u64(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .map_err(|_| format!("{s:?} is not a block number"))
}

/// The text between `<name>` and `</name>` (the first such element).
fn element<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&close)?;
    Some(&text[start..start + len])
}

fn number(text: &str, name: &str) -> Result<u64, String> {
    let v = element(text, name).ok_or_else(|| format!("no <{name}> element"))?;
    v.trim()
        .parse::<u64>()
        .map_err(|_| format!("<{name}> {:?} is not a number", v.trim()))
}

/// The value of attribute `name` of the first `<element ...>`.
fn attr<'a>(text: &'a str, element: &str, name: &str) -> Option<&'a str> {
    let open = format!("<{element} ");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find('>')?;
    attr_value(&text[start..start + end], name)
}

/// `name="value"` (or single quotes) in an element's attribute text.
fn attr_value<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attrs;
    while let Some(at) = rest.find(name) {
        let before_ok = at == 0 || rest[..at].ends_with(|c: char| c.is_whitespace());
        let after = rest[at + name.len()..].trim_start();
        if before_ok {
            if let Some(v) = after.strip_prefix('=') {
                let v = v.trim_start();
                let q = v.chars().next()?;
                if q == '"' || q == '\'' {
                    let end = v[1..].find(q)?;
                    return Some(&v[1..1 + end]);
                }
            }
        }
        rest = &rest[at + name.len()..];
    }
    None
}

/// Rewrites the file checksum so a test edit is judged on its own merits.
#[cfg(test)]
pub(crate) fn reseal(text: &str) -> String {
    let tag = "<BmapFileChecksum> ";
    let at = text.find(tag).unwrap() + tag.len();
    let mut t = text.to_string();
    t.replace_range(at..at + 64, &"0".repeat(64));
    let sum = hex::encode(Sha256::digest(t.as_bytes()));
    t.replace_range(at..at + 64, &sum);
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bmap::{render, BlockMap, BLOCK};

    fn sample() -> (tempfile::TempDir, String, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.img");
        let mut data = vec![0u8; 10 * BLOCK as usize + 512];
        data[0] = 1;
        data[3 * BLOCK as usize] = 2;
        data[10 * BLOCK as usize + 5] = 3;
        std::fs::write(&p, &data).unwrap();
        let map = BlockMap {
            image_bytes: data.len() as u64,
            ranges: vec![(0, 0), (3, 4), (10, 10)],
        };
        let text = render(&map, &std::fs::File::open(&p).unwrap()).unwrap();
        (dir, text, data)
    }

    #[test]
    fn reads_what_piforge_writes() {
        let (_d, text, data) = sample();
        let m = parse(&text).unwrap();
        assert_eq!(m.image_bytes, data.len() as u64);
        assert_eq!(m.block_size, BLOCK);
        assert_eq!(m.origin, MapOrigin::Filesystems);
        let r: Vec<(u64, u64)> = m.ranges.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(r, vec![(0, 0), (3, 4), (10, 10)]);
        let want: [u8; 32] = Sha256::digest(&data[3 * 4096..5 * 4096]).into();
        assert_eq!(m.ranges[1].sha256, Some(want));
        // The last block is short: its checksum covers the image's bytes only.
        let tail: [u8; 32] = Sha256::digest(&data[10 * 4096..]).into();
        assert_eq!(m.ranges[2].sha256, Some(tail));
    }

    #[test]
    fn refuses_a_bmap_that_lies() {
        let (_d, text, _) = sample();
        // An edit without resealing: the file checksum catches it.
        let e = parse(&text.replace("> 3-4 <", "> 3-5 <")).unwrap_err();
        assert!(e.contains("BmapFileChecksum does not match"), "{e}");
        let cases = [
            ("> 10 </Range>", "> 11 </Range>", "past the image"),
            ("> 3-4 <", "> 0-4 <", "overlaps"),
            ("> 3-4 <", "> 4-3 <", "ends before it starts"),
            ("<BlocksCount> 11 ", "<BlocksCount> 12 ", "BlocksCount 12"),
            (
                "<MappedBlocksCount> 4 ",
                "<MappedBlocksCount> 5 ",
                "MappedBlocksCount",
            ),
            ("sha256 </ChecksumType>", "md5 </ChecksumType>", "md5"),
        ];
        for (from, to, want) in cases {
            assert!(text.contains(from), "{from}");
            let e = parse(&reseal(&text.replacen(from, to, 1))).unwrap_err();
            assert!(e.contains(want), "{from} -> {to}: {e}");
        }
        let bad = text.replacen("chksum=\"", "chksum=\"zz", 1);
        let e = parse(&reseal(&bad)).unwrap_err();
        assert!(e.contains("not 64 hex digits"), "{e}");
        assert!(parse("<bmap version=\"2.0\"></bmap>").is_err());
        assert!(parse("not xml at all").is_err());
    }

    /// What bmaptool 3.x itself writes (its header comment names `<BlocksCount>` in prose)
    /// is read, and agrees with the image.
    #[test]
    fn reads_what_bmaptool_create_writes() {
        let (dir, _, data) = sample();
        let img = dir.path().join("x.img");
        let sparse = dir.path().join("sparse.img");
        let cp = std::process::Command::new("cp")
            .args(["--sparse=always"])
            .arg(&img)
            .arg(&sparse)
            .status()
            .unwrap();
        assert!(cp.success());
        let out = std::process::Command::new("bmaptool")
            .args(["create"])
            .arg(&sparse)
            .output()
            .expect("bmaptool (bmap-tools; tests/install-deps.sh)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("of <BlocksCount> blocks"),
            "the header changed: {text}"
        );
        let m = parse(&text).unwrap();
        assert_eq!(m.image_bytes, data.len() as u64);
        assert_eq!(m.origin, MapOrigin::Foreign);
        let r: Vec<(u64, u64)> = m.ranges.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(r, vec![(0, 0), (3, 3), (10, 10)]);
        let want: [u8; 32] = Sha256::digest(&data[3 * 4096..4 * 4096]).into();
        assert_eq!(m.ranges[1].sha256, Some(want));
    }

    #[test]
    fn a_foreign_bmap_is_marked_so() {
        let (_d, text, _) = sample();
        let m = parse(&reseal(&text.replace(PIFORGE_MARK, "written by bmaptool"))).unwrap();
        assert_eq!(m.origin, MapOrigin::Foreign);
    }
}
