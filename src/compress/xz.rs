//! The xz container over liblzma's block encoder: one stream (header, blocks, index, footer;
//! the .xz file format, tukaani.org/xz/xz-file-format.txt), each block compressed on its own
//! by `lzma_block_buffer_encode`, which records the block's compressed and uncompressed sizes
//! in its header (what `xz -T0 -d` needs to decompress blocks in parallel). The index and the
//! stream header and footer are liblzma's own encoders too; this file only puts the pieces in
//! order.
//!
//! The `liblzma-sys` crate's hand-written declarations (the ones the `liblzma` crate uses) do
//! not cover the block and index functions: they are declared here, with `lzma_block` as in
//! liblzma's `api/lzma/block.h` (a stable ABI since liblzma 5.0).

use std::io;
use std::os::raw::{c_int, c_uchar, c_void};
use std::ptr;

use liblzma_sys as sys;

/// The compression preset (xz's default, `-6`).
const PRESET: u32 = 6;
/// xz's default integrity check.
const CHECK: sys::lzma_check = sys::LZMA_CHECK_CRC64;

/// LZMA_STREAM_HEADER_SIZE: the stream header and footer are 12 bytes each.
const STREAM_HEADER_SIZE: usize = 12;

/// `lzma_block` from liblzma's `api/lzma/block.h`.
#[repr(C)]
struct LzmaBlock {
    version: u32,
    header_size: u32,
    check: sys::lzma_check,
    compressed_size: u64,
    uncompressed_size: u64,
    filters: *mut sys::lzma_filter,
    raw_check: [u8; 64],
    reserved_ptr: [*mut c_void; 3],
    reserved_int1: u32,
    reserved_int2: u32,
    reserved_vli: [u64; 6],
    reserved_enum: [c_int; 4],
    ignore_check: c_uchar,
    reserved_bool: [c_uchar; 7],
}

/// `lzma_index` is opaque.
#[repr(C)]
struct LzmaIndex {
    _private: [u8; 0],
}

extern "C" {
    fn lzma_block_buffer_bound(uncompressed_size: usize) -> usize;
    fn lzma_block_buffer_encode(
        block: *mut LzmaBlock,
        allocator: *const c_void,
        input: *const u8,
        in_size: usize,
        out: *mut u8,
        out_pos: *mut usize,
        out_size: usize,
    ) -> sys::lzma_ret;
    fn lzma_block_unpadded_size(block: *const LzmaBlock) -> u64;
    fn lzma_index_init(allocator: *const c_void) -> *mut LzmaIndex;
    fn lzma_index_end(i: *mut LzmaIndex, allocator: *const c_void);
    fn lzma_index_append(
        i: *mut LzmaIndex,
        allocator: *const c_void,
        unpadded_size: u64,
        uncompressed_size: u64,
    ) -> sys::lzma_ret;
    fn lzma_index_size(i: *const LzmaIndex) -> u64;
    fn lzma_index_buffer_encode(
        i: *const LzmaIndex,
        out: *mut u8,
        out_pos: *mut usize,
        out_size: usize,
    ) -> sys::lzma_ret;
}

fn lzma_error(what: &str, ret: sys::lzma_ret) -> io::Error {
    io::Error::other(format!("liblzma could not {what} (error {ret})"))
}

/// The stream flags: format version 0, CRC64 checks, and (for the footer) the index size.
fn stream_flags(backward_size: u64) -> sys::lzma_stream_flags {
    // SAFETY: lzma_stream_flags is plain data (integers and enums) for which all-zero is
    // valid; liblzma's documentation asks for the reserved fields to be zero.
    let mut f: sys::lzma_stream_flags = unsafe { std::mem::zeroed() };
    f.version = 0;
    f.check = CHECK;
    f.backward_size = backward_size;
    f
}

/// The 12-byte stream header.
pub fn stream_header() -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; STREAM_HEADER_SIZE];
    let f = stream_flags(0);
    // SAFETY: `out` has the 12 bytes the function writes.
    let ret = unsafe { sys::lzma_stream_header_encode(&f, out.as_mut_ptr()) };
    if ret != sys::LZMA_OK {
        return Err(lzma_error("encode the stream header", ret));
    }
    Ok(out)
}

/// The index (one record per block: unpadded and uncompressed size) and the stream footer.
pub fn stream_tail(records: &[(u64, u64)]) -> io::Result<Vec<u8>> {
    // SAFETY: the index is created, filled, encoded and freed here; every pointer passed is
    // valid for the call.
    unsafe {
        let index = lzma_index_init(ptr::null());
        if index.is_null() {
            return Err(io::Error::other("liblzma could not allocate an index"));
        }
        let tail = (|| {
            for &(unpadded, uncompressed) in records {
                let ret = lzma_index_append(index, ptr::null(), unpadded, uncompressed);
                if ret != sys::LZMA_OK {
                    return Err(lzma_error("add a block to the index", ret));
                }
            }
            let size = lzma_index_size(index);
            let index_len =
                usize::try_from(size).map_err(|_| io::Error::other("index too large"))?;
            let mut out = vec![0u8; index_len + STREAM_HEADER_SIZE];
            let mut pos = 0usize;
            let ret = lzma_index_buffer_encode(index, out.as_mut_ptr(), &mut pos, index_len);
            if ret != sys::LZMA_OK || pos != index_len {
                return Err(lzma_error("encode the index", ret));
            }
            let f = stream_flags(size);
            let ret = sys::lzma_stream_footer_encode(&f, out.as_mut_ptr().add(index_len));
            if ret != sys::LZMA_OK {
                return Err(lzma_error("encode the stream footer", ret));
            }
            Ok(out)
        })();
        lzma_index_end(index, ptr::null());
        tail
    }
}

/// The LZMA2 options of every block: preset 6 with the dictionary no larger than a chunk.
fn lzma2_options() -> io::Result<sys::lzma_options_lzma> {
    // SAFETY: lzma_options_lzma is plain data for which all-zero is valid; the preset call
    // fills it.
    unsafe {
        let mut opts: sys::lzma_options_lzma = std::mem::zeroed();
        if sys::lzma_lzma_preset(&mut opts, PRESET) != 0 {
            return Err(io::Error::other("liblzma does not know preset 6"));
        }
        // A dictionary larger than the block only costs memory. LZMA_DICT_SIZE_MIN is 4 KiB.
        opts.dict_size = opts.dict_size.min((super::CHUNK as u32).max(4096));
        Ok(opts)
    }
}

/// The filter chain of every block: LZMA2 with `opts`, then the terminator. It points into
/// `opts`, which must outlive every use of the chain.
fn lzma2_chain(opts: &mut sys::lzma_options_lzma) -> [sys::lzma_filter; 2] {
    [
        sys::lzma_filter {
            id: sys::LZMA_FILTER_LZMA2,
            options: opts as *mut sys::lzma_options_lzma as *mut c_void,
        },
        sys::lzma_filter {
            id: sys::LZMA_VLI_UNKNOWN,
            options: ptr::null_mut(),
        },
    ]
}

/// What names this encoder: liblzma's version, the preset and the check
/// (`xz-50080012-p6-crc64`).
pub fn encoder_id() -> String {
    // SAFETY: no arguments; returns a number.
    let version = unsafe { sys::lzma_version_number() };
    format!("xz-{version}-p{PRESET}-crc64")
}

/// The memory one block encoder uses, bytes, as liblzma computes it for the filter chain of
/// [`encode_block`] (`lzma_raw_encoder_memusage`); 64 MiB if liblzma cannot say.
pub fn encoder_memory() -> u64 {
    const FALLBACK: u64 = 64 << 20;
    let Ok(mut opts) = lzma2_options() else {
        return FALLBACK;
    };
    let filters = lzma2_chain(&mut opts);
    // SAFETY: a valid filter chain that lives for the call.
    match unsafe { sys::lzma_raw_encoder_memusage(filters.as_ptr()) } {
        u64::MAX | 0 => FALLBACK,
        n => n,
    }
}

/// One xz block holding `chunk`: header (with both sizes), LZMA2 data at preset 6 with the
/// dictionary no larger than the chunk, padding and CRC64. Depends only on `chunk`.
pub fn encode_block(chunk: &[u8]) -> io::Result<super::Encoded> {
    // SAFETY: the options and filter chain live on this stack frame for the whole call;
    // `out` has the room lzma_block_buffer_bound asks for.
    let mut opts = lzma2_options()?;
    unsafe {
        let mut filters = lzma2_chain(&mut opts);
        let mut block: LzmaBlock = std::mem::zeroed();
        block.version = 0;
        block.check = CHECK;
        block.filters = filters.as_mut_ptr();
        block.compressed_size = sys::LZMA_VLI_UNKNOWN;
        block.uncompressed_size = sys::LZMA_VLI_UNKNOWN;
        let bound = lzma_block_buffer_bound(chunk.len());
        if bound == 0 {
            return Err(io::Error::other("a chunk too large for one xz block"));
        }
        let mut out = vec![0u8; bound];
        let mut pos = 0usize;
        let ret = lzma_block_buffer_encode(
            &mut block,
            ptr::null(),
            chunk.as_ptr(),
            chunk.len(),
            out.as_mut_ptr(),
            &mut pos,
            out.len(),
        );
        if ret != sys::LZMA_OK {
            return Err(lzma_error("compress a block", ret));
        }
        out.truncate(pos);
        Ok(super::Encoded {
            bytes: out,
            unpadded: lzma_block_unpadded_size(&block),
            uncompressed: chunk.len() as u64,
        })
    }
}
