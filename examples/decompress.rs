//! Benchmark driver for `benches/decompress.sh` (no CLI involved):
//!
//!   decompress decode FILE        decode FILE with piforge's decoder into nothing
//!   decompress open FILE CACHE    open_image FILE into the cache directory CACHE
//!   decompress sha256 FILE        SHA-256 of FILE
//!
//! Prints one line: `bytes=N seconds=S mbps=M` (M = N / S / 10^6, N = bytes produced or hashed).

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use piforge::source::{decoder, detect, open_image, sha256_file, OpenOptions, MAGIC_LEN};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let start = Instant::now();
    let bytes = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["decode", file] => {
            let mut head = Vec::new();
            File::open(file)?
                .take(MAGIC_LEN as u64)
                .read_to_end(&mut head)?;
            let mut reader = decoder(detect(&head), File::open(file)?)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                match reader.read(&mut buf)? {
                    0 => break total,
                    n => total += n as u64,
                }
            }
        }
        ["open", file, cache] => {
            let opts = OpenOptions {
                cache_dir: Some(PathBuf::from(cache)),
                ..Default::default()
            };
            open_image(file.as_ref(), &opts)?.size
        }
        ["sha256", file] => {
            sha256_file(file)?;
            std::fs::metadata(file)?.len()
        }
        _ => return Err("usage: decompress decode FILE | open FILE CACHE | sha256 FILE".into()),
    };
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "bytes={bytes} seconds={seconds:.3} mbps={:.1}",
        bytes as f64 / seconds / 1e6
    );
    Ok(())
}
