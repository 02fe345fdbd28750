//! [`Ext4Error`]: everything an ext4 session can refuse or fail at.

use std::path::PathBuf;

/// Everything that can go wrong; each message is one sentence naming the
/// image or path and, for library failures, libext2fs' own error text.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("{path} in the root filesystem is {size} bytes, more than the {max} bytes piforge reads of a configuration file")]
    TooBig { path: String, size: u64, max: u64 },
    #[error("cannot open image {image}: {source}")]
    Image {
        image: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create a scratch file in {dir} for editing {image}: {source}")]
    Scratch {
        image: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{image} has no ext2/3/4 filesystem at byte offset {offset}")]
    NotExt4 { image: PathBuf, offset: u64 },
    #[error(
        "the ext4 filesystem in {image} at byte offset {offset} has a journal that needs \
         recovery; let e2fsck replay it first"
    )]
    NeedsRecovery { image: PathBuf, offset: u64 },
    #[error(
        "the ext4 filesystem in {image} at byte offset {offset} is marked as having errors; \
         repair it with e2fsck first"
    )]
    ErrorState { image: PathBuf, offset: u64 },
    #[error(
        "the ext4 filesystem in {image} at byte offset {offset} {reason}; check it with e2fsck \
         first"
    )]
    NotClean {
        image: PathBuf,
        offset: u64,
        reason: &'static str,
    },
    #[error(
        "the ext4 filesystem in {image} at byte offset {offset} uses features piforge cannot \
         {action}: {}", features.join(", ")
    )]
    UnsupportedFeatures {
        image: PathBuf,
        offset: u64,
        action: &'static str,
        features: Vec<String>,
    },
    #[error(
        "the ext4 filesystem in {image} at byte offset {offset} claims {fs_bytes} bytes, more \
         than the {part_bytes} bytes of its partition: the superblock or the partition table is \
         corrupt"
    )]
    LargerThanPartition {
        image: PathBuf,
        offset: u64,
        fs_bytes: u64,
        part_bytes: u64,
    },
    #[error(
        "could not {op} {path}: libext2fs asked for bytes past the end of the partition \
         ({length} bytes at byte offset {offset} of {image}); the filesystem is corrupt"
    )]
    PastPartition {
        image: PathBuf,
        offset: u64,
        length: u64,
        op: &'static str,
        path: String,
    },
    #[error("{image} is being edited by another piforge session")]
    Busy { image: PathBuf },
    #[error("the clock for editing {image} must be a non-zero number of seconds")]
    InvalidClock { image: PathBuf },
    #[error("{path} does not exist in the ext4 filesystem")]
    NotFound { path: String },
    #[error("{path} is not a directory in the ext4 filesystem")]
    NotADirectory { path: String },
    #[error("{path} is a directory in the ext4 filesystem")]
    IsADirectory { path: String },
    #[error("{path} is not a symbolic link in the ext4 filesystem")]
    NotASymlink { path: String },
    #[error("{path} is not a regular file in the ext4 filesystem")]
    NotAFile { path: String },
    #[error("{path} is not a directory that is empty")]
    DirectoryNotEmpty { path: String },
    #[error("{path:?} is not a usable ext4 path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("cannot {op} {path}: the filesystem was opened read-only")]
    ReadOnly { op: &'static str, path: String },
    #[error(
        "not enough space in the ext4 filesystem for {path}: it needs {needed_bytes} bytes but \
         only {free_bytes} bytes are free"
    )]
    NoSpace {
        path: String,
        needed_bytes: u64,
        free_bytes: u64,
    },
    #[error("cannot create {path}: the ext4 filesystem has no free inodes left")]
    NoFreeInodes { path: String },
    #[error("the content for {path} was {actual} bytes long, not the {expected} bytes announced")]
    SizeMismatch {
        path: String,
        expected: u64,
        actual: u64,
    },
    #[error("reading the content for {path} failed: {source}")]
    Source {
        path: String,
        source: std::io::Error,
    },
    #[error("writing the content of {path} out failed: {source}")]
    Sink {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "this ext4 edit session already failed ({first_error}); drop it, which leaves the image \
         unchanged"
    )]
    Poisoned { first_error: String },
    #[error("could not {op} {path} in the ext4 filesystem: {message}")]
    Lib {
        op: &'static str,
        path: String,
        code: i64,
        message: String,
    },
}
