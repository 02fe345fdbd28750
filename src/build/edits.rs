//! The layers' edits of an image file: in place ([`edit`]), over another image into a new
//! file ([`edit_over`]), or in place with what they write recorded ([`edit_recorded`], through
//! a growth of the root partition too), one at a time; and the check of the upstream base
//! before the build writes into a copy of it ([`check_base`]).

use std::fs;
use std::path::Path;
use std::sync::Mutex;

use super::outputs::IMAGE_MODE;
use super::{io_error, BuildError};
use crate::apply;
use crate::output;

/// The filesystem edits run one at a time (libext2fs and fatfs are not shared between
/// threads; the edits of a node layer take milliseconds).
static EDITS: Mutex<()> = Mutex::new(());

pub(super) fn edit(path: &Path, plan: &crate::plan::Plan) -> Result<apply::Applied, BuildError> {
    let _one_at_a_time = EDITS.lock().unwrap_or_else(|p| p.into_inner());
    Ok(apply::apply_in_place(path, plan)?)
}

/// What an image's layers recorded of their writes, so that its bytes can be named
/// ([`super::digest_memo`]): the growths of its root partition on the way (each rewrites the
/// image in place through resize2fs; the image after it is named by the image before it, what
/// was written into that, and the growth: [`super::digest_memo::growth`]), and the byte ranges
/// written since the last (or since its base) (increasing, disjoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) growths: Vec<String>,
    pub(super) written: Vec<(u64, u64)>,
}

impl Record {
    /// What names the image `written` is recorded over, when its base is named `base`: the
    /// base itself, or the image its growths made from it.
    pub(super) fn named(&self, base: &str) -> String {
        self.growths.iter().fold(base.to_string(), |name, g| {
            super::digest_memo::grown(&name, g)
        })
    }
}

/// An edit's summary, and what the image's layers recorded when they were ([`edit_recorded`]).
pub(super) type Recorded = (apply::Applied, Option<Record>);

/// `plan` applied to the image at `path` in place, with the byte ranges it writes recorded: the
/// image is its own base ([`apply::apply_over`] reading what nothing wrote from the file and
/// writing into it). `record`: what earlier edits of this file (or of the image it is a
/// copy of) recorded, given back with the new ranges when `Some`. A plan that grows the root
/// partition has the image grown first, on its own ([`apply::grow_for`]; the same bytes as
/// the growth inside the edit), the growth recorded ([`Record::growths`]: named by what was
/// written before it), then its edits recorded over the grown image. `None` (not given) edits
/// it as [`edit`] does, recording nothing: nothing then knows which of its bytes are the
/// base's.
pub(super) fn edit_recorded(
    path: &Path,
    record: Option<&Record>,
    plan: &crate::plan::Plan,
) -> Result<Recorded, BuildError> {
    use std::os::unix::fs::OpenOptionsExt;
    let Some(r) = record else {
        return Ok((edit(path, plan)?, None));
    };
    let open = || {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map(std::sync::Arc::new)
            .map_err(io_error(path))
    };
    if let Some((done, w)) = edit_over(path, open()?, &r.written, path, plan)? {
        let growths = r.growths.clone();
        return Ok((
            done,
            Some(Record {
                growths,
                written: w,
            }),
        ));
    }
    // The plan grows the root partition. What was written before is read first: the growth
    // rewrites the image.
    let top = open()?;
    let len = top.metadata().map_err(io_error(path))?.len();
    let delta = super::digest_memo::key("", len, &top, &r.written, &[]).map_err(io_error(path))?;
    drop(top);
    let grown = {
        let _one_at_a_time = EDITS.lock().unwrap_or_else(|p| p.into_inner());
        apply::grow_for(path, plan)?
    };
    let Some(root_bytes) = grown else {
        return Ok((edit(path, plan)?, None));
    };
    let tool = crate::disk::resize2fs_version();
    let growth = super::digest_memo::growth(&delta, root_bytes, plan.epoch, tool);
    match edit_over(path, open()?, &[], path, plan)? {
        Some((mut done, w)) => {
            done.grew_root_to = Some(root_bytes);
            let mut growths = r.growths.clone();
            growths.push(growth);
            Ok((
                done,
                Some(Record {
                    growths,
                    written: w,
                }),
            ))
        }
        None => Ok((edit(path, plan)?, None)),
    }
}

/// [`apply::apply_over`], one edit at a time as [`edit`].
pub(super) fn edit_over(
    base: &Path,
    top: std::sync::Arc<fs::File>,
    written: &[(u64, u64)],
    out: &Path,
    plan: &crate::plan::Plan,
) -> Result<Option<apply::AppliedOver>, BuildError> {
    let _one_at_a_time = EDITS.lock().unwrap_or_else(|p| p.into_inner());
    Ok(apply::apply_over(base, top, written, out, plan)?)
}

/// The check of the upstream base before the build writes into a copy of it, made on the base
/// itself (the copy is the same bytes): its root filesystem is checked by e2fsck when `plan`
/// writes into it ([`apply::root_touched`]; issue 12 item 7), and a damaged one is refused with e2fsck's
/// first complaint, naming the base (the role and node images made from it are then not
/// checked again). Run beside the copy, it costs no wall time of its own, and e2fsck's flush of
/// the file it opens falls on the base, already on disk, not on the copy just written. A base
/// that passed is remembered in the cache by its identity ([`crate::source::memo`]: the cached
/// decompressed image never changes, a raw input is checked again once it changed), so the
/// next build from it does not run e2fsck again.
pub(super) fn check_base(
    base: &Path,
    plan: &crate::plan::Plan,
    cache: &Path,
) -> Result<(), BuildError> {
    use crate::source::memo::{self, Kind};
    if !apply::root_touched(plan) {
        return Ok(());
    }
    let before = fs::metadata(base).map_err(io_error(base))?;
    let img = crate::disk::Image::open(base).map_err(apply::ApplyError::from)?;
    let passed = format!("e2fsck-fn@{}", img.root().start_bytes);
    // libext2fs (the bounds check before e2fsck) is used by one thread at a time.
    let _one_at_a_time = EDITS.lock().unwrap_or_else(|p| p.into_inner());
    if memo::lookup_kind(cache, Kind::Checked, &before).as_deref() == Some(passed.as_str()) {
        return Ok(());
    }
    img.check_root().map_err(apply::ApplyError::from)?;
    memo::store_kind(cache, Kind::Checked, base, &before, &passed);
    Ok(())
}

/// The copy of the upstream base at `to`, its root filesystem checked ([`check_base`], on the
/// base, on another thread while the copy runs), then `plan` applied to the copy, the ranges
/// it wrote recorded ([`edit_recorded`]).
pub(super) fn edit_base_copy(
    base: &Path,
    to: &Path,
    plan: &crate::plan::Plan,
    cache: &Path,
) -> Result<Recorded, BuildError> {
    let (copied, checked) = std::thread::scope(|s| {
        let check = s.spawn(|| check_base(base, plan, cache));
        let copied = output::copy_image(base, to, IMAGE_MODE).map_err(io_error(to));
        let checked = check
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (copied, checked)
    });
    copied?;
    checked?;
    edit_recorded(to, Some(&Record::default()), plan)
}
