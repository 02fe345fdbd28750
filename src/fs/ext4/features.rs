//! ext4 feature bits: what libext2fs can read (its own masks, exported by the shim), what a
//! read-write session accepts, and the names e2fsprogs prints for them.

use super::ffi;

/// The feature masks and bits the shim exports from libext2fs' own headers, so none is copied
/// here by hand.
macro_rules! shim_const {
    ($(#[$doc:meta])* $name:ident: $ty:ty = $sym:ident) => {
        $(#[$doc])*
        pub(super) fn $name() -> $ty {
            // SAFETY: an immutable constant defined in shim.c.
            unsafe { ffi::$sym }
        }
    };
}

shim_const!(
    /// `EXT3_FEATURE_INCOMPAT_RECOVER`: the journal needs replaying.
    incompat_recover: u32 = pf_incompat_recover
);
shim_const!(
    /// `EXT3_FEATURE_INCOMPAT_EXTENTS`.
    incompat_extents: u32 = pf_incompat_extents
);
shim_const!(
    /// `EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT`.
    ro_compat_orphan_present: u32 = pf_ro_compat_orphan_present
);
shim_const!(
    /// `EXT2_VALID_FS`: cleanly unmounted.
    state_valid: u16 = pf_state_valid
);
shim_const!(
    /// `EXT2_ERROR_FS`: errors detected.
    state_error: u16 = pf_state_error
);
shim_const!(
    /// `EXT2_LIB_FEATURE_INCOMPAT_SUPP`: what the linked libext2fs can read.
    lib_incompat_supp: u32 = pf_lib_incompat_supp
);
shim_const!(
    /// Features a read-write session accepts (see `PF_WRITE_COMPAT` in shim.c for what is
    /// left out and why).
    write_compat: u32 = pf_write_compat
);
shim_const!(write_incompat: u32 = pf_write_incompat);
shim_const!(write_ro_compat: u32 = pf_write_ro_compat);

/// Feature names as e2fsprogs (libe2p) prints them, per bit.
const COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "dir_prealloc"),
    (0x2, "imagic_inodes"),
    (0x4, "has_journal"),
    (0x8, "ext_attr"),
    (0x10, "resize_inode"),
    (0x20, "dir_index"),
    (0x40, "lazy_bg"),
    (0x100, "snapshot_bitmap"),
    (0x200, "sparse_super2"),
    (0x400, "fast_commit"),
    (0x800, "stable_inodes"),
    (0x1000, "orphan_file"),
];
const INCOMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "compression"),
    (0x2, "filetype"),
    (0x4, "needs_recovery"),
    (0x8, "journal_dev"),
    (0x10, "meta_bg"),
    (0x40, "extent"),
    (0x80, "64bit"),
    (0x100, "mmp"),
    (0x200, "flex_bg"),
    (0x400, "ea_inode"),
    (0x1000, "dirdata"),
    (0x2000, "metadata_csum_seed"),
    (0x4000, "large_dir"),
    (0x8000, "inline_data"),
    (0x10000, "encrypt"),
    (0x20000, "casefold"),
];
const RO_COMPAT_NAMES: &[(u32, &str)] = &[
    (0x1, "sparse_super"),
    (0x2, "large_file"),
    (0x8, "huge_file"),
    (0x10, "uninit_bg"),
    (0x20, "dir_nlink"),
    (0x40, "extra_isize"),
    (0x100, "quota"),
    (0x200, "bigalloc"),
    (0x400, "metadata_csum"),
    (0x800, "replica"),
    (0x1000, "read-only"),
    (0x2000, "project"),
    (0x4000, "shared_blocks"),
    (0x8000, "verity"),
    (0x10000, "orphan_present"),
];

/// Names of the feature bits set in `mask`, in bit order (`FEATURE_C12`-style
/// for bits e2fsprogs does not know, as libe2p prints them).
pub(super) fn names_of(mask: u32, table: &[(u32, &str)], letter: char) -> Vec<String> {
    (0..32)
        .map(|b| 1u32 << b)
        .filter(|bit| mask & bit != 0)
        .map(|bit| match table.iter().find(|(m, _)| *m == bit) {
            Some((_, n)) => (*n).to_string(),
            None => format!("FEATURE_{letter}{}", bit.trailing_zeros()),
        })
        .collect()
}

pub(super) fn feature_names(compat: u32, incompat: u32, ro_compat: u32) -> Vec<String> {
    let mut v = names_of(compat, COMPAT_NAMES, 'C');
    v.extend(names_of(incompat, INCOMPAT_NAMES, 'I'));
    v.extend(names_of(ro_compat, RO_COMPAT_NAMES, 'R'));
    v
}
