//! zstd outputs: one frame per chunk, with the chunk's size in the frame header and a
//! checksum, frames concatenated (RFC 8878 section 3.1: a zstd file may hold several frames;
//! `zstd -d` decodes them one after another into one output).

use std::io;

/// zstd's own default level (`zstd` without `-#`).
pub const LEVEL: i32 = 3;

/// What names this encoder: libzstd's version and the level (`zst-10507-l3`).
pub fn encoder_id() -> String {
    format!("zst-{}-l{LEVEL}", zstd::zstd_safe::version_number())
}

/// One zstd frame holding `chunk`; depends only on `chunk` (single-threaded zstd with fixed
/// parameters is deterministic).
pub fn encode_frame(chunk: &[u8]) -> io::Result<super::Encoded> {
    let mut c = zstd::bulk::Compressor::new(LEVEL)?;
    c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
    c.set_parameter(zstd::zstd_safe::CParameter::ContentSizeFlag(true))?;
    let bytes = c.compress(chunk)?;
    Ok(super::Encoded {
        unpadded: bytes.len() as u64,
        uncompressed: chunk.len() as u64,
        bytes,
    })
}
