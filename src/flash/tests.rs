//! The flash pipeline on regular files (the block-device paths run in tests/flash.rs on loop
//! devices).

use super::*;
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
    // A target larger than the image, full of a pattern: stale data everywhere.
    std::fs::write(&target, vec![0x5au8; data.len() + 100_000]).unwrap();
    let ranges = [(0, 1), (100, 400), (600, 600), (700, 700)];
    let map = map_of(&data, &ranges, MapOrigin::Filesystems);
    let opts = FlashOptions {
        verify: true,
        ..Default::default()
    };
    let rec = crate::progress::tests::Recorder::default();
    let r = apply(&plan_for(&src, &target, map.clone()), &opts, Some(&rec)).unwrap();
    assert_eq!(r.written, map.mapped_bytes());
    assert!(r.verify_time.is_some());
    let got = std::fs::read(&target).unwrap();
    assert_eq!(got.len(), data.len());
    for (i, (g, d)) in got.iter().zip(&data).enumerate() {
        let want = if map.is_mapped_byte(i as u64) { *d } else { 0 };
        assert_eq!(*g, want, "byte {i}");
    }
    let calls = rec.calls();
    assert!(calls.contains(&("finish", "write".into(), 0)), "{calls:?}");
    assert!(calls.contains(&("finish", "verify".into(), 0)), "{calls:?}");
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
    let opts = FlashOptions {
        verify: true,
        hooks: TestHooks {
            corrupt_before_verify: Some(230 * 4096 + 17),
            pause_after: None,
        },
        ..Default::default()
    };
    let e = apply(&plan_for(&src, &target, map), &opts, None).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("blocks 200-250") && msg.contains("range 3 of 3"),
        "{msg}"
    );
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
    // The head (block 0, mapped) was never written: zeros.
    let got = std::fs::read(&target).unwrap();
    assert!(got[..4096].iter().all(|&b| b == 0));
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
