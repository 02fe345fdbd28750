//! Checking and splitting the paths callers give.

use std::ffi::CString;

use super::{Ext4Error, Result};

/// Components of an absolute path to create or change: no ".", "..", empty
/// names beyond repeated slashes, NUL bytes or names over 255 bytes.
pub(super) fn components(path: &str) -> Result<Vec<&str>> {
    let bad = |reason| Ext4Error::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(bad("it must be absolute"));
    }
    if path.contains('\0') {
        return Err(bad("it contains a NUL byte"));
    }
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    for c in &comps {
        if *c == "." || *c == ".." {
            return Err(bad("it contains a \".\" or \"..\" component"));
        }
        if c.len() > 255 {
            return Err(bad("a component is longer than 255 bytes"));
        }
    }
    Ok(comps)
}

/// Parent directory path and final name of a path to create or change.
pub(super) fn split_parent(path: &str) -> Result<(String, &str)> {
    let comps = components(path)?;
    match comps.split_last() {
        Some((name, dirs)) => Ok((format!("/{}", dirs.join("/")), name)),
        None => Err(Ext4Error::InvalidPath {
            path: path.to_string(),
            reason: "it names the root directory",
        }),
    }
}

pub(super) fn cstring(path: &str, s: &[u8]) -> Result<CString> {
    CString::new(s).map_err(|_| Ext4Error::InvalidPath {
        path: path.to_string(),
        reason: "it contains a NUL byte",
    })
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}
