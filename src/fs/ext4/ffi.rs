//! Declarations for `shim.c`, the C layer over libext2fs.
//!
//! Only plain integers, byte buffers and one opaque handle cross this
//! boundary (see the comment at the top of `shim.c` for why this is a
//! hand-written shim rather than bindgen output). `#[repr(C)]` structs here
//! mirror structs defined in `shim.c` itself, never libext2fs structures.
//!
//! Both sides pin those layouts: `shim.c` has a `_Static_assert` on the size and every field
//! offset of each shared struct, this file the same numbers as `const` assertions, and the
//! shim exports `sizeof` of each so a test (and every `open`, in debug builds) compares them.

use std::os::raw::{c_char, c_int, c_long, c_void};

/// Opaque session handle (`struct pf_fs` in the shim).
#[repr(C)]
pub struct PfFs {
    _private: [u8; 0],
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PfInfo {
    pub blocks_count: u64,
    pub free_blocks: u64,
    pub reserved_blocks: u64,
    pub wtime: u64,
    pub block_size: u32,
    pub inodes_count: u32,
    pub free_inodes: u32,
    pub first_ino: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub last_orphan: u32,
    pub state: u16,
    pub inode_size: u16,
    pub uuid: [u8; 16],
    pub label: [c_char; 17],
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<PfInfo>() == 104);
    assert!(offset_of!(PfInfo, blocks_count) == 0);
    assert!(offset_of!(PfInfo, free_blocks) == 8);
    assert!(offset_of!(PfInfo, reserved_blocks) == 16);
    assert!(offset_of!(PfInfo, wtime) == 24);
    assert!(offset_of!(PfInfo, block_size) == 32);
    assert!(offset_of!(PfInfo, inodes_count) == 36);
    assert!(offset_of!(PfInfo, free_inodes) == 40);
    assert!(offset_of!(PfInfo, first_ino) == 44);
    assert!(offset_of!(PfInfo, compat) == 48);
    assert!(offset_of!(PfInfo, incompat) == 52);
    assert!(offset_of!(PfInfo, ro_compat) == 56);
    assert!(offset_of!(PfInfo, last_orphan) == 60);
    assert!(offset_of!(PfInfo, state) == 64);
    assert!(offset_of!(PfInfo, inode_size) == 66);
    assert!(offset_of!(PfInfo, uuid) == 68);
    assert!(offset_of!(PfInfo, label) == 84);
};

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PfStat {
    pub size: u64,
    pub atime: i64,
    pub mtime: i64,
    pub ctime: i64,
    pub blocks: u64,
    pub ino: u32,
    pub uid: u32,
    pub gid: u32,
    pub flags: u32,
    pub mode: u16,
    pub links: u16,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<PfStat>() == 64);
    assert!(offset_of!(PfStat, size) == 0);
    assert!(offset_of!(PfStat, atime) == 8);
    assert!(offset_of!(PfStat, mtime) == 16);
    assert!(offset_of!(PfStat, ctime) == 24);
    assert!(offset_of!(PfStat, blocks) == 32);
    assert!(offset_of!(PfStat, ino) == 40);
    assert!(offset_of!(PfStat, uid) == 44);
    assert!(offset_of!(PfStat, gid) == 48);
    assert!(offset_of!(PfStat, flags) == 52);
    assert!(offset_of!(PfStat, mode) == 56);
    assert!(offset_of!(PfStat, links) == 58);
};

/// Directory listing callback: return non-zero to stop.
pub type DirCb = unsafe extern "C" fn(
    ctx: *mut c_void,
    name: *const c_char,
    name_len: usize,
    ino: u32,
    file_type: c_int,
) -> c_int;

/// Commit callback: a run of `len` bytes the session wrote, at image offset `off`.
pub type WrittenCb = unsafe extern "C" fn(ctx: *mut c_void, off: u64, len: u64);

/// Allocation walk callback: a run of `count` used blocks from `first`; return non-zero to stop.
pub type RunCb = unsafe extern "C" fn(ctx: *mut c_void, first: u64, count: u64) -> c_int;

extern "C" {
    pub fn pf_error_message(code: c_long) -> *const c_char;

    pub fn pf_sizeof_info() -> usize;
    pub fn pf_sizeof_stat() -> usize;

    pub fn pf_open(
        path: *const c_char,
        offset: u64,
        length: u64,
        rw: c_int,
        now: i64,
        scratch_fd: c_int,
        split_fd: c_int,
        runs: *const u64,
        nruns: u64,
        out: *mut *mut PfFs,
    ) -> c_long;
    pub fn pf_abort(h: *mut PfFs);
    pub fn pf_io_refused(h: *mut PfFs) -> c_int;
    pub fn pf_commit(h: *mut PfFs, runs: Option<WrittenCb>, ctx: *mut c_void) -> c_long;
    pub fn pf_mark_checked(h: *mut PfFs) -> c_long;
    pub fn pf_get_info(h: *mut PfFs, out: *mut PfInfo);

    pub fn pf_stat(h: *mut PfFs, ino: u32, st: *mut PfStat) -> c_long;
    #[allow(clippy::too_many_arguments)]
    pub fn pf_set_meta(
        h: *mut PfFs,
        ino: u32,
        set_mode: c_int,
        perm: u16,
        set_owner: c_int,
        uid: u32,
        gid: u32,
        set_times: c_int,
        atime: i64,
        mtime: i64,
        ctime: i64,
        set_crtime: c_int,
    ) -> c_long;

    pub fn pf_namei(h: *mut PfFs, path: *const c_char, follow: c_int, ino: *mut u32) -> c_long;
    pub fn pf_lookup(h: *mut PfFs, dir: u32, name: *const c_char, ino: *mut u32) -> c_long;
    pub fn pf_readlink(
        h: *mut PfFs,
        ino: u32,
        buf: *mut c_char,
        cap: usize,
        len: *mut usize,
    ) -> c_long;
    pub fn pf_list_dir(h: *mut PfFs, ino: u32, cb: DirCb, ctx: *mut c_void) -> c_long;

    pub fn pf_file_open(h: *mut PfFs, ino: u32, write: c_int, out: *mut *mut c_void) -> c_long;
    pub fn pf_file_read(file: *mut c_void, buf: *mut c_void, len: usize, got: *mut usize)
        -> c_long;
    pub fn pf_file_close(file: *mut c_void) -> c_long;

    pub fn pf_write_open(h: *mut PfFs, ino: u32, size: u64, out: *mut *mut c_void) -> c_long;
    pub fn pf_write(writer: *mut c_void, buf: *const c_void, len: usize) -> c_long;
    pub fn pf_write_close(writer: *mut c_void, finish: c_int) -> c_long;

    pub fn pf_create_file(
        h: *mut PfFs,
        parent: u32,
        name: *const c_char,
        perm: u16,
        size: u64,
        out: *mut u32,
    ) -> c_long;
    pub fn pf_mkdir(h: *mut PfFs, parent: u32, name: *const c_char, out: *mut u32) -> c_long;
    pub fn pf_symlink(
        h: *mut PfFs,
        parent: u32,
        name: *const c_char,
        target: *const c_char,
        out: *mut u32,
    ) -> c_long;
    pub fn pf_unlink(h: *mut PfFs, parent: u32, name: *const c_char, ino: u32) -> c_long;
    pub fn pf_rmdir(h: *mut PfFs, parent: u32, name: *const c_char, ino: u32) -> c_long;

    pub fn pf_xattr_get(
        h: *mut PfFs,
        ino: u32,
        name: *const c_char,
        value: *mut *mut c_void,
        len: *mut usize,
    ) -> c_long;
    pub fn pf_xattr_put(
        h: *mut PfFs,
        ino: u32,
        name: *const c_char,
        value: *const c_void,
        len: usize,
    ) -> c_long;
    pub fn pf_free(p: *mut c_void);

    pub fn pf_used_blocks(h: *mut PfFs, cb: RunCb, ctx: *mut c_void) -> c_long;

    pub static pf_et_file_not_found: c_long;
    pub static pf_et_bad_magic: c_long;
    pub static pf_et_unsupp_feature: c_long;
    pub static pf_et_ro_unsupp_feature: c_long;
    pub static pf_et_block_alloc_fail: c_long;
    pub static pf_et_inode_alloc_fail: c_long;
    pub static pf_et_ea_key_not_found: c_long;
    pub static pf_et_no_directory: c_long;
    /// The shim's own code: libext2fs asked for bytes past the end of the partition.
    pub static pf_et_past_partition: c_long;

    pub static pf_incompat_recover: u32;
    pub static pf_incompat_extents: u32;
    pub static pf_ro_compat_orphan_present: u32;
    pub static pf_state_valid: u16;
    pub static pf_state_error: u16;
    pub static pf_lib_incompat_supp: u32;
    pub static pf_write_compat: u32;
    pub static pf_write_incompat: u32;
    pub static pf_write_ro_compat: u32;
}
