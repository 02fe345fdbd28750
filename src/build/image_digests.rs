//! A node's raw image as an entry of the build: its block map (as it will be once filled in),
//! its key ([`digest_memo::key`]), and its digests: remembered from an earlier build of the
//! same bytes ([`digest_memo`]), else taken in one read of the image, shared with its role
//! image where the bytes are the same ([`reuse`]).

use std::fs;
use std::path::Path;

use super::digest_memo;
use super::manifest::FileEntry;
use super::nodes::Over;
use super::reuse::{self, Sharing};
use super::{io_error, BuildError};

/// A node image's block map (as it will be once filled in, when `over` says it is being
/// filled) and, with `memo`, its key ([`digest_memo::key`]) with the cache and its length.
pub(super) struct Keyed<'a> {
    map: Option<crate::bmap::BlockMap>,
    ranges: Vec<(u64, u64)>,
    pub(super) memo: Option<(&'a Path, String, u64)>,
}

pub(super) fn keyed<'a>(
    f: &fs::File,
    path: &Path,
    bmap: bool,
    over: Option<&Over>,
    memo: Option<Remember<'a>>,
) -> Result<Keyed<'a>, BuildError> {
    let map = match (bmap, over) {
        (false, _) => None,
        (true, None) => Some(crate::bmap::map_image(path).map_err(io_error(path))?),
        // The file is being filled in from its source meanwhile: its map as it will be.
        (true, Some(o)) => {
            let base = o.from.try_clone().map_err(io_error(&o.source))?;
            let view = crate::disk::Overlay::new(base, o.top.clone(), &o.written)
                .map_err(io_error(path))?;
            Some(crate::bmap::map_over(&view, &o.source).map_err(io_error(path))?)
        }
    };
    let ranges = map.as_ref().map(|m| m.byte_ranges()).unwrap_or_default();
    let memo = match memo {
        Some(m) => {
            let len = f.metadata().map_err(io_error(path))?.len();
            let key =
                digest_memo::key(m.base, len, m.top, m.written, &ranges).map_err(io_error(path))?;
            Some((m.cache, key, len))
        }
        None => None,
    };
    Ok(Keyed { map, ranges, memo })
}

/// The entry of a finished raw image `f` (at `path`, its map and key `keyed`); with its block
/// map when it has one, the map's range checksums taken in the same read as the image's
/// digest (the image's data is read once for both), those of chunks the same as in its role
/// image from there when another node hashed them ([`reuse`]). With a key, its digests are
/// remembered in the cache, and taken from there when the same bytes were hashed before
/// ([`digest_memo`]); the last value says whether they were.
pub(super) fn raw_entry(
    f: &fs::File,
    path: &Path,
    name: String,
    keyed: Keyed<'_>,
    sharing: Option<&Sharing<'_>>,
) -> Result<(FileEntry, Option<String>, bool), BuildError> {
    let Keyed { map, ranges, memo } = keyed;
    let known = memo
        .as_ref()
        .and_then(|(cache, key, len)| digest_memo::lookup(cache, key, *len, ranges.len()));
    let remembered = known.is_some();
    let d = match known {
        Some(d) => d,
        None => {
            let (sha256, bytes, sums) =
                reuse::digests(f, &ranges, sharing).map_err(io_error(path))?;
            let d = digest_memo::Digests {
                sha256,
                bytes,
                sums,
            };
            if let Some((cache, key, _)) = &memo {
                digest_memo::store(cache, key, &d);
            }
            d
        }
    };
    let text = map.map(|m| crate::bmap::render_sums(&m, &d.sums));
    Ok((
        FileEntry {
            name,
            bytes: d.bytes,
            sha256: d.sha256,
        },
        text,
        remembered,
    ))
}

/// What a node image's digests are remembered by ([`digest_memo`]): its bytes are those of the
/// image named `base` (the input's digest for the upstream image, a role image's key), but for
/// the `written` ranges, read from `top`.
#[derive(Clone, Copy)]
pub(super) struct Remember<'a> {
    pub(super) cache: &'a Path,
    pub(super) base: &'a str,
    pub(super) top: &'a fs::File,
    pub(super) written: &'a [(u64, u64)],
}
