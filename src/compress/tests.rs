use super::*;
use std::process::Command;

/// An "image": chunks of compressible text, one of pseudo-random bytes, a hole, and a short
/// tail, so blocks of every kind and a last chunk shorter than the rest are covered.
fn image(dir: &Path, name: &str, seed: u8) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut f = File::create(&p).unwrap();
    let mut text = Vec::new();
    for i in 0..(CHUNK / 40) {
        let _ = writeln!(text, "line {i:08} of a common layer ........");
    }
    f.write_all(&text[..CHUNK]).unwrap();
    let mut x: u32 = 0x1234_5678;
    let noise: Vec<u8> = (0..CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    f.write_all(&noise).unwrap();
    // A node's own chunk: differs by one byte per seed.
    let mut own = text[..CHUNK].to_vec();
    own[1000] = seed;
    f.write_all(&own).unwrap();
    f.set_len(5 * CHUNK as u64 + 12345).unwrap(); // chunk 3 a hole, chunk 4 zeros, tail
    drop(f);
    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(b"tail", 5 * CHUNK as u64 + 100).unwrap();
    p
}

use std::fs;

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (install xz-utils and zstd)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn compress(store: &BlockStore, img: &Path, dest: &Path) -> Written {
    write(store, img, dest, 0o644).unwrap()
}

#[test]
fn xz_is_one_multi_block_stream_that_xz_checks_and_decompresses_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img", 1);
    let xz_path = dir.path().join("a.img.xz");
    let store = BlockStore::new(Codec::Xz, 2);
    let w = compress(&store, &img, &xz_path);
    assert_eq!(w.chunks, 6);
    assert_eq!(w.bytes, fs::metadata(&xz_path).unwrap().len());
    assert_eq!(
        w.sha256,
        hex::encode(Sha256::digest(fs::read(&xz_path).unwrap()))
    );
    run(Command::new("xz").arg("-t").arg(&xz_path));
    let raw = fs::read(&img).unwrap();
    assert!(run(Command::new("xz").arg("-dc").arg(&xz_path)) == raw);
    assert!(run(Command::new("xz").args(["-T0", "-dc"]).arg(&xz_path)) == raw);
    // `xz --robot -lvv`: one stream, 6 blocks, each with both sizes in its header (the
    // "cu" flags: compressed and uncompressed size present), which the threaded decoder needs.
    let list = String::from_utf8(run(Command::new("xz")
        .args(["--robot", "-lvv"])
        .arg(&xz_path)))
    .unwrap();
    let streams: Vec<&str> = list.lines().filter(|l| l.starts_with("stream\t")).collect();
    assert_eq!(streams.len(), 1, "{list}");
    let blocks: Vec<&str> = list.lines().filter(|l| l.starts_with("block\t")).collect();
    assert_eq!(blocks.len(), 6, "{list}");
    for b in blocks {
        let flags = b.split('\t').nth(12).unwrap_or("");
        assert_eq!(flags, "cu", "block header flags in {b}");
    }
}

#[test]
fn identical_chunks_are_compressed_once_and_outputs_do_not_depend_on_threads() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 1);
    let b = image(dir.path(), "b.img", 2);
    for codec in [Codec::Xz, Codec::Zstd] {
        let ext = codec.extension();
        let shared = BlockStore::new(codec, 4);
        let wa = compress(&shared, &a, &dir.path().join(format!("a.4.{ext}")));
        let after_a = shared.distinct_chunks();
        let wb = compress(&shared, &b, &dir.path().join(format!("b.4.{ext}")));
        // a: text, noise, own, zeros (hole and zero chunk are one), tail = 5 distinct.
        assert_eq!(after_a, 5, "{codec:?}");
        // The hole and the zero chunk are one chunk, compressed once.
        assert_eq!(wa.fresh_chunks, 5, "{codec:?}");
        assert_eq!(wb.fresh_chunks, 1, "{codec:?}: only b's own chunk is new");
        assert_eq!(shared.distinct_chunks(), 6);
        // The same image on one thread with a store of its own: the same bytes.
        let alone = BlockStore::new(codec, 1);
        let wb1 = compress(&alone, &b, &dir.path().join(format!("b.1.{ext}")));
        assert_eq!(wb1.sha256, wb.sha256, "{codec:?}");
        assert_eq!(
            fs::read(dir.path().join(format!("b.1.{ext}"))).unwrap(),
            fs::read(dir.path().join(format!("b.4.{ext}"))).unwrap()
        );
    }
}

#[test]
fn images_compressed_at_once_compress_each_shared_chunk_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = image(dir.path(), "a.img", 1);
    let b = image(dir.path(), "b.img", 2);
    let store = BlockStore::new(Codec::Xz, 2);
    let (wa, wb) = std::thread::scope(|s| {
        let ta = s.spawn(|| compress(&store, &a, &dir.path().join("a.xz")));
        let tb = s.spawn(|| compress(&store, &b, &dir.path().join("b.xz")));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    // 6 distinct chunks between them (5 of a's, b's own): each compressed by one image only,
    // the other waiting for it; and the files are what each image alone gives.
    assert_eq!(wa.fresh_chunks + wb.fresh_chunks, 6);
    for (img, w) in [(&a, &wa), (&b, &wb)] {
        let alone = compress(
            &BlockStore::new(Codec::Xz, 1),
            img,
            &dir.path().join("x.xz"),
        );
        assert_eq!(alone.sha256, w.sha256);
    }
    store.clear();
    assert_eq!(store.distinct_chunks(), 0);
}

#[test]
fn zstd_frames_concatenate_into_a_file_zstd_checks_and_decompresses() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img", 3);
    let zst_path = dir.path().join("a.img.zst");
    let store = BlockStore::new(Codec::Zstd, 3);
    compress(&store, &img, &zst_path);
    run(Command::new("zstd").arg("-qt").arg(&zst_path));
    assert!(run(Command::new("zstd").args(["-qdc"]).arg(&zst_path)) == fs::read(&img).unwrap());
}

#[test]
fn an_empty_image_gives_a_valid_empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("e.img");
    File::create(&img).unwrap();
    for codec in [Codec::Xz, Codec::Zstd] {
        let p = dir.path().join(format!("e.img.{}", codec.extension()));
        compress(&BlockStore::new(codec, 2), &img, &p);
        let tool = if codec == Codec::Xz { "xz" } else { "zstd" };
        assert!(run(Command::new(tool).arg("-dc").arg(&p)).is_empty());
    }
}

/// Chunks kept in the cache by an earlier build ([`kept`]) are copied, not compressed again:
/// a new store (a new build) given the same cache compresses nothing and writes the same
/// bytes; a kept chunk damaged on disk is compressed again (the same bytes still), and a store
/// not given the cache compresses everything.
#[test]
fn chunks_kept_by_an_earlier_build_are_not_compressed_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let a = image(dir.path(), "a.img", 1);
    for codec in [Codec::Xz, Codec::Zstd] {
        let ext = codec.extension();
        let out = |n: &str| dir.path().join(format!("{n}.{ext}"));
        let first = BlockStore::new(codec, 2);
        first.keep_in(Some(&cache));
        let w1 = compress(&first, &a, &out("first"));
        first.clear();
        assert_eq!(w1.fresh_chunks, 5, "{codec:?}");
        let again = BlockStore::new(codec, 2);
        again.keep_in(Some(&cache));
        let w2 = compress(&again, &a, &out("again"));
        assert_eq!(w2.fresh_chunks, 0, "{codec:?}: every chunk kept");
        assert_eq!(w2.sha256, w1.sha256, "{codec:?}");
        assert!(fs::read(out("again")).unwrap() == fs::read(out("first")).unwrap());
        // One kept chunk damaged: compressed again, the same file still.
        let kept_dir = cache.join("blocks").join(codec.encoder_id());
        let entries: Vec<_> = fs::read_dir(&kept_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(entries.len(), 5, "{codec:?}: {entries:?}");
        let victim = &entries[0];
        let mut bytes = fs::read(victim).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x55;
        fs::write(victim, bytes).unwrap();
        let third = BlockStore::new(codec, 2);
        third.keep_in(Some(&cache));
        let w3 = compress(&third, &a, &out("third"));
        assert_eq!(w3.fresh_chunks, 1, "{codec:?}");
        assert_eq!(w3.sha256, w1.sha256, "{codec:?}");
        // Without the cache: everything compressed.
        let cold = BlockStore::new(codec, 2);
        cold.keep_in(None);
        assert_eq!(compress(&cold, &a, &out("cold")).fresh_chunks, 5);
    }
}

/// The progress of a compression: the raw bytes written so far, one report per chunk, in
/// order, the last the image's size, whatever order the threads finish chunks in.
#[test]
fn compression_reports_the_raw_bytes_written_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "a.img", 1);
    let len = fs::metadata(&img).unwrap().len();
    let store = BlockStore::new(Codec::Zstd, 3);
    let dest = dir.path().join("a.img.zst");
    let mut out = File::create(&dest).unwrap();
    let readback = Arc::new(File::open(&dest).unwrap());
    let seen = Mutex::new(Vec::new());
    let s = compress_stream(
        &store,
        &File::open(&img).unwrap(),
        &mut out,
        readback,
        None,
        &|done| seen.lock().unwrap().push(done),
    )
    .unwrap();
    let seen = seen.into_inner().unwrap();
    let want: Vec<u64> = (1..=s.chunks)
        .map(|i| (i * CHUNK as u64).min(len))
        .collect();
    assert_eq!(seen, want);
    assert_eq!(seen.last(), Some(&len));
}
