//! Which blocks the filesystem uses: its block bitmap plus every group's metadata, as runs of
//! blocks (for a block map that skips free blocks, whatever stale data they hold).

use std::os::raw::{c_int, c_void};

use super::*;

unsafe extern "C" fn collect_run(ctx: *mut c_void, first: u64, count: u64) -> c_int {
    // SAFETY: ctx is the Vec passed by used_blocks, alive for the whole walk.
    let out = &mut *(ctx as *mut Vec<(u64, u64)>);
    out.push((first, count));
    0
}

impl Ext4 {
    /// Every block in use, as `(first block, count)` runs in increasing order: the block
    /// bitmap, and the superblocks and their backups, group descriptors, reserved GDT blocks,
    /// bitmaps and inode tables of every group (marked from the group descriptors, not only
    /// trusted to the bitmap). Blocks are of [`FsInfo::block_size`] bytes from the start of the
    /// filesystem.
    pub fn used_blocks(&self) -> Result<Vec<(u64, u64)>> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        // SAFETY: a live handle; the callback only pushes into `runs`, which outlives the call.
        let code = unsafe {
            ffi::pf_used_blocks(
                self.handle,
                collect_run,
                &mut runs as *mut Vec<(u64, u64)> as *mut c_void,
            )
        };
        if code != 0 {
            return Err(self.lib_err(code, "read the block bitmap of", "/"));
        }
        Ok(runs)
    }
}
