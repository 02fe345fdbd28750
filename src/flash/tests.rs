//! The flash pipeline on regular files (the block-device paths run in tests/flash.rs on loop
//! devices).

use super::*;
use sha2::{Digest, Sha256};
use std::os::unix::fs::FileExt;

/// An image of `blocks` 4 KiB blocks plus `tail` bytes, each block filled with its number,
/// and a map of some of its blocks.
fn image(dir: &Path, blocks: u64, tail: usize) -> (PathBuf, Vec<u8>) {
    let mut data = Vec::new();
    for b in 0..blocks {
        data.extend(std::iter::repeat_n((b % 251) as u8 + 1, 4096));
    }
    data.extend(std::iter::repeat_n(0xee, tail));
    let p = dir.join("x.img");
    std::fs::write(&p, &data).unwrap();
    (p, data)
}

fn map_of(data: &[u8], ranges: &[(u64, u64)], origin: MapOrigin) -> Map {
    let mut m = Map {
        image_bytes: data.len() as u64,
        block_size: 4096,
        ranges: Vec::new(),
        origin,
    };
    for &(first, last) in ranges {
        let mut r = Range {
            first,
            last,
            sha256: None,
        };
        let (a, b) = m.byte_range(&r);
        r.sha256 = Some(Sha256::digest(&data[a as usize..b as usize]).into());
        m.ranges.push(r);
    }
    m
}

fn plan_for(src: &Path, target: &Path, map: Map) -> Plan {
    Plan {
        source: src.to_path_buf(),
        format: source::Format::Raw,
        raw: Some(src.to_path_buf()),
        map,
        map_source: MapSource::Computed(src.to_path_buf()),
        target: target.to_path_buf(),
        kind: Some(Kind::File),
        device: None,
    }
}

#[test]
fn a_file_target_gets_the_mapped_ranges_and_zeros_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = image(dir.path(), 700, 512);
    let target = dir.path().join("card");
    let ranges = [(0, 1), (100, 400), (600, 600), (700, 700)];
    let map = map_of(&data, &ranges, MapOrigin::Filesystems);
    // Ranges apart: every unmapped byte zero. Joined across gaps up to 512 KiB: the image's
    // own bytes in the gaps of 98 and 99 blocks, zeros in the one of 199 (blocks 401-599).
    // Up to 1 MiB: the whole image.
    let half = 128 * 4096;
    for (gap, written) in [
        (MAX_GAP, map.mapped_bytes()),
        (half, map.mapped_bytes() + 197 * 4096),
        (1 << 20, data.len() as u64),
    ] {
        // A target larger than the image, full of a pattern: stale data everywhere.
        std::fs::write(&target, vec![0x5au8; data.len() + 100_000]).unwrap();
        let opts = FlashOptions {
            verify: true,
            max_gap: Some(gap),
            ..Default::default()
        };
        let rec = crate::progress::tests::Recorder::default();
        let r = apply(&plan_for(&src, &target, map.clone()), &opts, Some(&rec)).unwrap();
        assert_eq!(r.written, written);
        assert!(r.verify_time.is_some());
        let got = std::fs::read(&target).unwrap();
        assert_eq!(got.len(), data.len());
        let extents = map.extents(gap);
        for (i, (g, d)) in got.iter().zip(&data).enumerate() {
            let i = i as u64;
            let written = extents.iter().any(|&(a, b)| (a..b).contains(&i));
            let want = if written { *d } else { 0 };
            assert_eq!(*g, want, "gap {gap}: byte {i}");
        }
        let calls = rec.calls();
        assert!(calls.contains(&("finish", "write".into(), 0)), "{calls:?}");
        assert!(calls.contains(&("finish", "verify".into(), 0)), "{calls:?}");
    }
}

#[test]
fn a_corrupted_range_is_caught_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = image(dir.path(), 300, 0);
    let target = dir.path().join("card");
    let map = map_of(
        &data,
        &[(0, 0), (10, 20), (200, 250)],
        MapOrigin::Filesystems,
    );
    // One range after the other: the read-back's readers take turns (range i by reader
    // i % 2), so each reader's share must be checked.
    for (block, name) in [
        (0, "blocks 0-0"),
        (15, "blocks 10-20"),
        (230, "blocks 200-250"),
    ] {
        let index = map
            .ranges
            .iter()
            .position(|r| r.first <= block && block <= r.last);
        let opts = FlashOptions {
            verify: true,
            hooks: TestHooks {
                corrupt_before_verify: Some(block * 4096 + 17),
                pause_after: None,
            },
            ..Default::default()
        };
        let e = apply(&plan_for(&src, &target, map.clone()), &opts, None).unwrap_err();
        let msg = e.to_string();
        let range = format!("range {} of 3", index.unwrap() + 1);
        assert!(msg.contains(name) && msg.contains(&range), "{msg}");
    }
}

#[test]
fn every_readers_share_is_verified_and_the_first_bad_range_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = image(dir.path(), 300, 0);
    let target = dir.path().join("card");
    // 29 ranges of 6 blocks (and the head): the read-back splits them between its readers.
    let mut ranges = vec![(0, 0)];
    ranges.extend((1..30).map(|j| (10 * j, 10 * j + 5)));
    let map = map_of(&data, &ranges, MapOrigin::Filesystems);
    let starts = super::verify::shares(&map);
    assert_eq!(starts.len(), super::verify::READERS, "{starts:?}");
    // A byte in the last range of each share, and in the first.
    let mut probes: Vec<usize> = starts[1..].iter().map(|s| s - 1).collect();
    probes.push(map.ranges.len() - 1);
    probes.extend(&starts);
    for i in probes {
        let r = map.ranges[i];
        let opts = FlashOptions {
            verify: true,
            hooks: TestHooks {
                corrupt_before_verify: Some(r.last * 4096 + 100),
                pause_after: None,
            },
            ..Default::default()
        };
        let e = apply(&plan_for(&src, &target, map.clone()), &opts, None).unwrap_err();
        let msg = e.to_string();
        let want = format!("blocks {}-{}", r.first, r.last);
        let range = format!("range {} of {}", i + 1, map.ranges.len());
        assert!(msg.contains(&want) && msg.contains(&range), "{i}: {msg}");
    }
    // And a clean write verifies.
    let opts = FlashOptions {
        verify: true,
        ..Default::default()
    };
    apply(&plan_for(&src, &target, map), &opts, None).unwrap();
}

#[test]
fn an_image_that_differs_from_its_map_is_refused_before_the_head_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = image(dir.path(), 300, 0);
    let map = map_of(&data, &[(0, 0), (10, 20)], MapOrigin::Filesystems);
    // The image changes after its map was made.
    File::options()
        .write(true)
        .open(&src)
        .unwrap()
        .write_all_at(b"x", 15 * 4096)
        .unwrap();
    let target = dir.path().join("card");
    let e = apply(
        &plan_for(&src, &target, map),
        &FlashOptions::default(),
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("blocks 10-20"), "{e}");
    // The head (block 0, mapped) was never written: zeros, or not there at all.
    let got = std::fs::read(&target).unwrap();
    assert!(got.iter().take(4096).all(|&b| b == 0));
}

#[test]
fn sibling_bmaps_are_found_as_bmaptool_finds_them() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("n.img.xz");
    std::fs::write(&img, b"x").unwrap();
    assert_eq!(sibling_bmap(&img), None);
    std::fs::write(dir.path().join("n.img.bmap"), b"x").unwrap();
    assert_eq!(sibling_bmap(&img), Some(dir.path().join("n.img.bmap")));
    std::fs::write(dir.path().join("n.img.xz.bmap"), b"x").unwrap();
    assert_eq!(sibling_bmap(&img), Some(dir.path().join("n.img.xz.bmap")));
}

#[test]
fn unmapped_is_the_complement() {
    let m = Map {
        image_bytes: 10 * 4096 + 100,
        block_size: 4096,
        ranges: vec![
            Range {
                first: 1,
                last: 2,
                sha256: None,
            },
            Range {
                first: 10,
                last: 10,
                sha256: None,
            },
        ],
        origin: MapOrigin::Foreign,
    };
    assert_eq!(m.unmapped(), vec![(0, 4096), (3 * 4096, 7 * 4096)]);
    assert_eq!(m.mapped_bytes(), 2 * 4096 + 100);
}

#[test]
fn only_the_unmapped_ranges_are_discarded_in_whole_logical_blocks() {
    // Mapped: [4096, 12288) and [40960, 41060) (the image's short last block).
    let extents = [(4096, 3 * 4096), (10 * 4096, 10 * 4096 + 100)];
    let len = 10 * 4096 + 100;
    assert_eq!(
        discard_ranges(&extents, len, 512),
        vec![(0, 4096), (3 * 4096, 7 * 4096)]
    );
    // 4K-native: the same; an unmapped tail shorter than a block is left alone.
    assert_eq!(
        discard_ranges(&[(0, 4096)], 3 * 4096 + 100, 4096),
        vec![(4096, 2 * 4096)]
    );
    // Ranges ending off a block boundary are shrunk, never grown into mapped bytes.
    assert_eq!(
        discard_ranges(&[(0, 1000), (5000, 6000)], 9000, 512),
        vec![(1024, 3584), (6144, 2560)]
    );
    assert!(discard_ranges(&[(0, 8192)], 8192, 512).is_empty());
}

/// A bmap for `data` (written as `build` writes one) whose ImageSize claims `claim` bytes,
/// with its counts and file checksum made consistent: a lie only the image can expose.
fn hostile_bmap(dir: &Path, src: &Path, data: &[u8], claim: u64) -> PathBuf {
    let blocks = (data.len() as u64).div_ceil(4096);
    let m = crate::bmap::BlockMap {
        image_bytes: data.len() as u64,
        ranges: vec![(0, 1), (blocks / 2, blocks / 2 + 1)],
    };
    let text = crate::bmap::render(&m, &File::open(src).unwrap()).unwrap();
    let text = text
        .replace(
            &format!("<ImageSize> {} </ImageSize>", data.len()),
            &format!("<ImageSize> {claim} </ImageSize>"),
        )
        .replace(
            &format!("<BlocksCount> {blocks} </BlocksCount>"),
            &format!("<BlocksCount> {} </BlocksCount>", claim.div_ceil(4096)),
        );
    let p = dir.join("hostile.bmap");
    std::fs::write(&p, bmap_file::reseal(&text)).unwrap();
    assert!(read_bmap(&p).is_ok(), "the edited bmap is well formed");
    p
}

#[test]
fn a_bmap_claiming_another_image_size_makes_no_large_file() {
    let dir = tempfile::tempdir().unwrap();
    let (src, data) = image(dir.path(), 64, 0);
    let huge = 1u64 << 50; // 1 PiB
    let bmap = hostile_bmap(dir.path(), &src, &data, huge);
    let target = dir.path().join("card");
    let opts = |source: &Path| FlashOptions {
        source: source.to_path_buf(),
        bmap: Some(bmap.clone()),
        target: target.clone(),
        verify: true,
        ..Default::default()
    };
    // Raw and xz: the image's real size is known up front; refused by the plan, the target
    // never opened.
    let xz = dir.path().join("x.img.xz");
    let out = std::process::Command::new("xz")
        .args(["-k", "-T2", src.to_str().unwrap()])
        .output()
        .expect("xz(1)");
    assert!(out.status.success());
    for (s, says) in [(&src, "has"), (&xz, "decompresses to")] {
        let e = plan(&opts(s)).unwrap_err().to_string();
        let want = format!(
            "an image of {huge} bytes, {} {says} {}",
            s.display(),
            data.len()
        );
        assert!(e.contains(&want), "{e}");
        assert!(!target.exists(), "the plan created the target");
    }
    // zstd: not known without decompressing; the write fails at the image's real end and
    // the file never grew past the bytes read (it is not the claimed 1 PiB, even sparse).
    let zst = dir.path().join("x.img.zst");
    std::fs::write(&zst, zstd::encode_all(&data[..], 3).unwrap()).unwrap();
    let p = plan(&opts(&zst)).unwrap();
    assert_eq!(p.map.image_bytes, huge);
    let e = apply(&p, &opts(&zst), None).unwrap_err().to_string();
    assert!(
        e.contains("ends before the end its block map describes"),
        "{e}"
    );
    let len = std::fs::metadata(&target).unwrap().len();
    assert!(len <= data.len() as u64, "the target grew to {len} bytes");
    // A smaller claim than the image: the reader finds bytes past the end.
    let small = hostile_bmap(dir.path(), &src, &data, data.len() as u64 - 4096);
    let o = FlashOptions {
        bmap: Some(small),
        ..opts(&zst)
    };
    let e = apply(&plan(&o).unwrap(), &o, None).unwrap_err().to_string();
    assert!(e.contains("decompresses to more than"), "{e}");
}

#[test]
fn a_file_target_must_fit_its_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("card");
    // Free space as statvfs sees it: whatever this filesystem has, 1 EiB does not fit.
    let e = check_room(&target, 1 << 60).unwrap_err().to_string();
    assert!(
        e.contains("its filesystem has") && e.contains("write it elsewhere"),
        "{e}"
    );
    check_room(&target, 4096).unwrap();
    // An existing file's own blocks count as room: it is rewritten in place.
    std::fs::write(&target, vec![1u8; 1 << 20]).unwrap();
    check_room(&target, 1 << 20).unwrap();
}
