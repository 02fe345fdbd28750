//! Applying a [`Plan`] to a copy of an image: the only code that changes image bytes.
//!
//! Order: copy the source image (sparse) to a temporary output, check the edits fit (growing
//! the root partition when the plan allows), edit the root filesystem through libext2fs, edit
//! the boot filesystem through fatfs, then rename the output into place. Any error leaves no
//! output.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use crate::bootcfg;
use crate::disk::{self, align_up, Image};
use crate::fs::ext4::{Attrs, Ext4, FileKind, OpenMode, OpenOptions};
use crate::fs::fat::FatVolume;
use crate::output::{self, AtomicFile};
use crate::plan::{BootOp, Content, Grow, Plan, RootOp};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Image(#[from] disk::ImageError),
    #[error("cannot write {path}: {source}")]
    Output {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Input {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Artifact(Box<crate::artifacts::Error>),
    #[error("root filesystem: {0}")]
    Ext4(#[from] crate::fs::ext4::Ext4Error),
    #[error("boot partition: {0}")]
    Fat(#[from] crate::fs::fat::FatError),
    #[error("boot partition: {0}")]
    BootCfg(#[from] bootcfg::BootCfgError),
    #[error(transparent)]
    Grow(#[from] disk::GrowError),
    #[error("the root filesystem needs {missing} more bytes ({needed} needed, {free} free) and --grow off forbids growing it")]
    NoSpace {
        needed: u64,
        free: u64,
        missing: u64,
    },
    #[error("the root filesystem needs {needed} inodes, {free} are free, and {why}")]
    NoInodes { needed: u64, free: u64, why: String },
    #[error(
        "--grow {want} is smaller than the root partition ({have} bytes); piforge never shrinks it"
    )]
    WouldShrink { want: u64, have: u64 },
    #[error("the boot partition has no {0}")]
    NoBootFile(&'static str),
    #[error(
        "{path} is a directory with files in it and the plan would replace it with a {with}; \
         remove it first with --rm {path} if that is meant"
    )]
    WouldReplaceTree { path: String, with: &'static str },
}

/// What applying a plan did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub output: PathBuf,
    pub image_bytes: u64,
    /// New root partition size when it grew.
    pub grew_root_to: Option<u64>,
    pub root_ops: usize,
    pub boot_ops: usize,
}

/// Space a plan needs in the root filesystem, estimated before any writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootNeeds {
    pub bytes: u64,
    pub inodes: u64,
}

/// Estimates the blocks and inodes the root operations take (removals are not credited, so the
/// estimate errs on the side of room).
pub fn root_needs(fs: &Ext4, plan: &Plan) -> RootNeeds {
    let bs = u64::from(fs.info().block_size);
    let mut bytes = 0;
    let mut inodes = 0;
    for op in &plan.root {
        match op {
            RootOp::Mkdir { .. } => {
                bytes += bs;
                inodes += 1;
            }
            RootOp::Write { content, .. } => {
                bytes += fs.bytes_needed_for_file(content.len());
                inodes += 1;
            }
            RootOp::Symlink { target, .. } => {
                bytes += if target.len() < 60 { 0 } else { bs };
                inodes += 1;
            }
            RootOp::Remove { .. } => {}
        }
    }
    // Directory blocks gained by new entries: one block per 64 new names, at least one.
    bytes += (inodes / 64 + 1) * bs;
    RootNeeds { bytes, inodes }
}

/// What the root filesystem has room for, and what growing it adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootRoom {
    pub free_bytes: u64,
    pub free_inodes: u64,
    /// Bytes of filesystem per inode (mkfs's inode ratio): growing by this many bytes adds
    /// about one inode.
    pub bytes_per_inode: u64,
    /// Bytes of one block group (`8 * block size` blocks): resize2fs adds inodes a whole
    /// group at a time.
    pub group_bytes: u64,
}

impl RootRoom {
    pub fn of(fs: &Ext4) -> RootRoom {
        let i = fs.info();
        let bs = u64::from(i.block_size);
        RootRoom {
            free_bytes: fs.free_bytes(),
            free_inodes: u64::from(i.free_inodes),
            bytes_per_inode: (i.blocks_count * bs)
                .checked_div(u64::from(i.inodes_count))
                .unwrap_or(u64::MAX),
            group_bytes: 8 * bs * bs,
        }
    }

    /// Growth in bytes that brings `needed` inodes (0 when they are free already; one group
    /// more than the ratio says, as the last group may be partial).
    fn growth_for_inodes(&self, needed: u64) -> u64 {
        match needed.checked_sub(self.free_inodes) {
            None | Some(0) => 0,
            Some(missing) => missing
                .saturating_mul(self.bytes_per_inode)
                .saturating_add(self.group_bytes),
        }
    }
}

/// The root partition size to grow to, or `None` when the edits fit as it is. A shortage of
/// inodes counts as much as a shortage of bytes (issue 12 item 14): `--grow auto` grows for
/// either; `--grow off`, or a `--grow SIZE` too small to bring the inodes, is refused.
pub fn grow_target(
    grow: Grow,
    part_bytes: u64,
    needs: RootNeeds,
    room: RootRoom,
) -> Result<Option<u64>, ApplyError> {
    let free = room.free_bytes;
    let for_inodes = room.growth_for_inodes(needs.inodes);
    let no_inodes = |why: String| ApplyError::NoInodes {
        needed: needs.inodes,
        free: room.free_inodes,
        why,
    };
    match grow {
        Grow::To(want) if want < part_bytes => Err(ApplyError::WouldShrink {
            want,
            have: part_bytes,
        }),
        Grow::To(want) if align_up(want) - part_bytes < for_inodes => Err(no_inodes(format!(
            "--grow {want} adds too few; use --grow auto or at least {}",
            align_up(part_bytes.saturating_add(for_inodes))
        ))),
        Grow::To(want) if align_up(want) > part_bytes => Ok(Some(want)),
        Grow::Off if for_inodes > 0 => Err(no_inodes("--grow off forbids growing it".into())),
        _ if needs.bytes <= free && for_inodes == 0 => Ok(None),
        Grow::Off | Grow::To(_) => Err(ApplyError::NoSpace {
            needed: needs.bytes,
            free,
            missing: needs.bytes - free,
        }),
        Grow::Auto => {
            let for_bytes = match needs.bytes.checked_sub(free) {
                None | Some(0) => 0,
                Some(missing) => missing + needs.bytes / 10,
            };
            Ok(Some(part_bytes.saturating_add(for_bytes.max(for_inodes))))
        }
    }
}

fn attrs(owner: &crate::plan::Owner, epoch: i64) -> Attrs {
    Attrs {
        mode: owner.mode,
        uid: owner.uid,
        gid: owner.gid,
        mtime: epoch,
    }
}

/// Creates the parent directories of `path` that do not exist yet (root:root 0755).
fn ensure_parent(fs: &mut Ext4, path: &str, dir_attrs: &Attrs) -> Result<(), ApplyError> {
    let parent = path
        .rfind('/')
        .map(|i| &path[..i])
        .filter(|p| !p.is_empty());
    if let Some(dir) = parent {
        if fs.stat(dir)?.is_none() {
            fs.mkdir_p(dir, dir_attrs)?;
        }
    }
    Ok(())
}

/// Applies the root operations to an open read-write filesystem.
pub fn apply_root(fs: &mut Ext4, plan: &Plan) -> Result<(), ApplyError> {
    let dir_attrs = Attrs {
        mode: 0o755,
        uid: 0,
        gid: 0,
        mtime: plan.epoch,
    };
    for op in &plan.root {
        match op {
            RootOp::Mkdir { path, owner, force } => {
                fs.mkdir_p(path, &attrs(owner, plan.epoch))?;
                if *force {
                    fs.set_attrs(path, &attrs(owner, plan.epoch))?;
                }
            }
            RootOp::Write {
                path,
                content,
                owner,
            } => {
                ensure_parent(fs, path, &dir_attrs)?;
                if let Some(st) = fs.stat(path)? {
                    if st.kind != FileKind::File {
                        replace_entry(fs, path, st.kind, "file")?;
                    }
                }
                let a = attrs(owner, plan.epoch);
                match content {
                    Content::Bytes(b) => fs.write_file(path, b, &a)?,
                    Content::Host { path: host, size } => {
                        let f = File::open(host).map_err(|source| ApplyError::Input {
                            path: host.display().to_string(),
                            source,
                        })?;
                        let mut r = BufReader::with_capacity(256 << 10, f);
                        fs.write_file_from(path, &mut r, *size, &a)?;
                    }
                    Content::TarMember {
                        archive,
                        member,
                        size,
                    } => crate::artifacts::with_tar_member(archive, member, |r, got| {
                        if got != *size {
                            return Err(member_changed(archive, member, *size, got));
                        }
                        let mut r = BufReader::with_capacity(256 << 10, r);
                        fs.write_file_from(path, &mut r, got, &a)
                            .map_err(ApplyError::from)
                    })?,
                }
            }
            RootOp::Symlink {
                path,
                target,
                owner,
            } => {
                ensure_parent(fs, path, &dir_attrs)?;
                if let Some(st) = fs.stat(path)? {
                    replace_entry(fs, path, st.kind, "symlink")?;
                }
                fs.symlink(path, target, &attrs(owner, plan.epoch))?;
            }
            RootOp::Remove { path } => {
                if let Some(st) = fs.stat(path)? {
                    remove_any(fs, path, st.kind)?;
                }
            }
        }
    }
    Ok(())
}

/// Removes what is at `path` so that a file or symlink can take its place, but never a
/// directory with entries: an overlay file named `etc`, or a symlink `usr -> /tmp`, must not
/// wipe a tree silently (issue 12 item 12). An explicit `--rm` (a [`RootOp::Remove`] earlier in
/// the plan) removes the tree first, and so is the way to mean it.
fn replace_entry(
    fs: &mut Ext4,
    path: &str,
    kind: FileKind,
    with: &'static str,
) -> Result<(), ApplyError> {
    if kind == FileKind::Dir && !fs.read_dir(path)?.is_empty() {
        return Err(ApplyError::WouldReplaceTree {
            path: path.to_string(),
            with,
        });
    }
    remove_any(fs, path, kind)
}

fn remove_any(fs: &mut Ext4, path: &str, kind: FileKind) -> Result<(), ApplyError> {
    if kind == FileKind::Dir {
        fs.remove_tree(path)?;
    } else {
        fs.remove(path)?;
    }
    Ok(())
}

impl From<crate::artifacts::Error> for ApplyError {
    fn from(e: crate::artifacts::Error) -> Self {
        ApplyError::Artifact(Box::new(e))
    }
}

/// A tarball member whose size is not the one planned: the archive changed under the build.
fn member_changed(archive: &Path, member: &str, planned: u64, got: u64) -> ApplyError {
    ApplyError::Input {
        path: format!("{}: {member}", archive.display()),
        source: std::io::Error::other(format!(
            "the member is {got} bytes, not the {planned} planned (the archive changed?)"
        )),
    }
}

fn read_content(c: &Content) -> Result<Vec<u8>, ApplyError> {
    match c {
        Content::Bytes(b) => Ok(b.clone()),
        Content::TarMember {
            archive,
            member,
            size,
        } => crate::artifacts::with_tar_member(archive, member, |r, got| {
            if got != *size {
                return Err(member_changed(archive, member, *size, got));
            }
            let mut data = Vec::new();
            r.read_to_end(&mut data)
                .map_err(|source| ApplyError::Input {
                    path: format!("{}: {member}", archive.display()),
                    source,
                })?;
            Ok(data)
        }),
        Content::Host { path, .. } => std::fs::read(path).map_err(|source| ApplyError::Input {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Applies the boot operations and cmdline/config edits to an open FAT volume.
pub fn apply_boot<D: std::io::Read + std::io::Write + std::io::Seek>(
    vol: &mut FatVolume<D>,
    plan: &Plan,
) -> Result<(), ApplyError> {
    for op in &plan.boot {
        match op {
            BootOp::Write { path, content } => vol.write_file(path, &read_content(content)?)?,
            BootOp::Remove { path } => {
                vol.remove(path)?;
            }
        }
    }
    if !plan.cmdline_add.is_empty() || !plan.cmdline_remove.is_empty() {
        let old = vol
            .read_file("/cmdline.txt")?
            .ok_or(ApplyError::NoBootFile("cmdline.txt"))?;
        let new = bootcfg::edit_cmdline(
            &String::from_utf8_lossy(&old),
            &plan.cmdline_add,
            &plan.cmdline_remove,
        )?;
        if new.as_bytes() != old.as_slice() {
            vol.write_file("/cmdline.txt", new.as_bytes())?;
        }
    }
    if !plan.config.is_empty() {
        let old = vol
            .read_file("/config.txt")?
            .ok_or(ApplyError::NoBootFile("config.txt"))?;
        let new = bootcfg::edit_config(&String::from_utf8_lossy(&old), &plan.config)?;
        if new.as_bytes() != old.as_slice() {
            vol.write_file("/config.txt", new.as_bytes())?;
        }
    }
    Ok(())
}

/// Checks the boot-side edits against the source image before any copying, so that bad input
/// (a multi-line cmdline.txt, a broken piforge block) fails fast.
fn precheck_boot(img: &Image, plan: &Plan) -> Result<(), ApplyError> {
    if plan.cmdline_add.is_empty() && plan.cmdline_remove.is_empty() && plan.config.is_empty() {
        return Ok(());
    }
    let vol = img.boot_fs(plan.epoch)?;
    if !plan.cmdline_add.is_empty() || !plan.cmdline_remove.is_empty() {
        let c = vol
            .read_file("/cmdline.txt")?
            .ok_or(ApplyError::NoBootFile("cmdline.txt"))?;
        bootcfg::edit_cmdline(
            &String::from_utf8_lossy(&c),
            &plan.cmdline_add,
            &plan.cmdline_remove,
        )?;
    }
    if !plan.config.is_empty() {
        let c = vol
            .read_file("/config.txt")?
            .ok_or(ApplyError::NoBootFile("config.txt"))?;
        bootcfg::edit_config(&String::from_utf8_lossy(&c), &plan.config)?;
    }
    Ok(())
}

/// The edits a new MBR disk id implies: `PARTUUID=<old id>-` becomes `PARTUUID=<new id>-` in
/// cmdline.txt and /etc/fstab (read from `img`), as operations to run before the plan's own.
fn disk_id_ops(
    img: &Image,
    new: u32,
    epoch: i64,
) -> Result<(Vec<RootOp>, Vec<BootOp>), ApplyError> {
    let (old, new) = (img.layout().disk_id.to_lowercase(), format!("{new:08x}"));
    let swap = |text: &str| bootcfg::retarget_partuuid(text, &old, &new);
    let vol = img.boot_fs(epoch)?;
    let mut boot_ops = Vec::new();
    if let Some(b) = vol.read_file("/cmdline.txt")? {
        let text = String::from_utf8_lossy(&b);
        let changed = swap(&text);
        if changed != text {
            boot_ops.push(BootOp::Write {
                path: "/cmdline.txt".into(),
                content: Content::Bytes(changed.into_bytes()),
            });
        }
    }
    let mut root_ops = Vec::new();
    let ext = img.root_fs()?;
    if let Some(st) = ext.stat("/etc/fstab")? {
        let text = String::from_utf8_lossy(&ext.read_config("/etc/fstab")?).into_owned();
        let changed = swap(&text);
        if changed != text {
            root_ops.push(RootOp::Write {
                path: "/etc/fstab".into(),
                content: Content::Bytes(changed.into_bytes()),
                owner: crate::plan::Owner {
                    mode: st.mode,
                    uid: st.uid,
                    gid: st.gid,
                },
            });
        }
    }
    Ok((root_ops, boot_ops))
}

/// Writes a customized copy of the raw image `raw` to `out` (mode 0644 less the umask).
pub fn customize(raw: &Path, out: &Path, plan: &Plan) -> Result<Applied, ApplyError> {
    customize_with_mode(raw, out, plan, 0o644)
}

/// [`customize`], the output created with `mode` (0600 for images that hold secrets).
pub fn customize_with_mode(
    raw: &Path,
    out: &Path,
    plan: &Plan,
    mode: u32,
) -> Result<Applied, ApplyError> {
    let plan = checked_plan(&Image::open(raw)?, plan, true)?;
    let plan = &*plan;
    let out_err = |source| ApplyError::Output {
        path: out.display().to_string(),
        source,
    };
    let mut dst = AtomicFile::create_with_mode(out, mode).map_err(out_err)?;
    let src = File::open(raw).map_err(|source| ApplyError::Input {
        path: raw.display().to_string(),
        source,
    })?;
    output::sparse_copy(&src, dst.file()).map_err(out_err)?;
    let grew_root_to = edit(dst.path(), plan)?;
    let image_bytes = dst.file().metadata().map_err(out_err)?.len();
    let output = dst.commit().map_err(out_err)?;
    Ok(applied(output, image_bytes, grew_root_to, plan))
}

/// Applies `plan` to the image file at `path` itself (a private copy the caller made, by
/// reflink or sparse copy, and removes on error). Not synced: the caller syncs the finished
/// file once. Its root filesystem is not checked by e2fsck: the caller checked the image it
/// copied (the build checks the upstream base once, `Image::check_root`, when
/// [`root_touched`]; the role and node images made from it are not checked again).
pub fn apply_in_place(path: &Path, plan: &Plan) -> Result<Applied, ApplyError> {
    let plan = checked_plan(&Image::open(path)?, plan, false)?;
    let grew_root_to = edit(path, &plan)?;
    let image_bytes = std::fs::metadata(path)
        .map_err(|source| ApplyError::Output {
            path: path.display().to_string(),
            source,
        })?
        .len();
    Ok(applied(
        path.to_path_buf(),
        image_bytes,
        grew_root_to,
        &plan,
    ))
}

/// Grows the root partition of the image file at `path` (a private copy, edited in place) as
/// `plan` needs it, and nothing else: the growth [`apply_in_place`] makes before the plan's
/// edits, made on its own so that the edits can then be applied and recorded over the grown
/// image ([`apply_over`] with the image as its own base: it has room then). The bytes end the
/// same: the growth rewrites the partition table's entry and the root filesystem, the plan's
/// disk id is another field. Returns the root partition's new size, `None` when it has room.
pub fn grow_for(path: &Path, plan: &Plan) -> Result<Option<u64>, ApplyError> {
    let mut img = Image::open_rw(path)?;
    let plan = checked_plan(&img, plan, false)?;
    match room_to_grow(&img, &plan)? {
        Some(size) => {
            img.grow_root(size, plan.epoch)?;
            Ok(Some(align_up(size)))
        }
        None => Ok(None),
    }
}

/// Applies `plan` to the image at `base` without changing it or copying it: every byte the
/// edits write goes into `top` instead (set to `base`'s length), at its place in the image,
/// and the rest of `top` is left a hole for the caller to fill from `base`. `written` are the
/// ranges `top` already holds (the layers applied before, each by an earlier call; none for
/// an empty file): the plan sees them, as it would on a copy they were applied to. Returns the
/// summary (`out` as its output) and the byte ranges written, those before included
/// (increasing, disjoint); `None` when the plan would grow the root partition, which needs the
/// whole image: then nothing was written. Not synced. As [`apply_in_place`], the root
/// filesystem is not checked by e2fsck.
pub fn apply_over(
    base: &Path,
    top: std::sync::Arc<File>,
    written: &[(u64, u64)],
    out: &Path,
    plan: &Plan,
) -> Result<Option<AppliedOver>, ApplyError> {
    let mut img = Image::open_over(base, top, written)?;
    let plan = checked_plan(&img, plan, false)?;
    if room_to_grow(&img, &plan)?.is_some() {
        return Ok(None);
    }
    let grew_root_to = edit_image(&mut img, &plan)?;
    let written = img.written().unwrap_or_default();
    let image_bytes = std::fs::metadata(base)
        .map_err(|source| ApplyError::Input {
            path: base.display().to_string(),
            source,
        })?
        .len();
    Ok(Some((
        applied(out.to_path_buf(), image_bytes, grew_root_to, &plan),
        written,
    )))
}

/// What [`apply_over`] did: its summary, and the byte ranges it wrote into the new file.
pub type AppliedOver = (Applied, Vec<(u64, u64)>);

fn applied(output: PathBuf, image_bytes: u64, grew_root_to: Option<u64>, plan: &Plan) -> Applied {
    Applied {
        output,
        image_bytes,
        grew_root_to,
        root_ops: plan.root.len(),
        boot_ops: plan.boot.len()
            + usize::from(!plan.cmdline_add.is_empty() || !plan.cmdline_remove.is_empty())
            + usize::from(!plan.config.is_empty()),
    }
}

/// The plan as it applies to the image `source` (a new MBR disk id brings the `PARTUUID=`
/// rewrites with it), checked against that image before anything is copied or written: boot
/// edits that cannot apply, and a root filesystem that is corrupt or claims more than its
/// partition, are refused here, naming the image. With `check_fs`, a root filesystem the plan
/// writes into is checked by e2fsck too (issue 12 item 7; only for an image opened as a file).
fn checked_plan<'a>(
    source: &Image,
    plan: &'a Plan,
    check_fs: bool,
) -> Result<std::borrow::Cow<'a, Plan>, ApplyError> {
    // A new disk id on an MBR disk: the PARTUUID references follow it (GPT disks keep theirs).
    let plan = match (plan.disk_id, source.scheme()) {
        (Some(id), disk::Scheme::Mbr) => {
            let (mut root_ops, mut boot_ops) = disk_id_ops(source, id, plan.epoch)?;
            let mut p = plan.clone();
            root_ops.append(&mut p.root);
            boot_ops.append(&mut p.boot);
            (p.root, p.boot) = (root_ops, boot_ops);
            std::borrow::Cow::Owned(p)
        }
        _ => std::borrow::Cow::Borrowed(plan),
    };
    precheck_boot(source, &plan)?;
    // A root filesystem that claims more than its partition is refused here, naming the
    // input, before anything is copied; one that will be written into is checked too
    // (e2fsck -fn), as libext2fs would build on a damaged one's bitmaps (issue 12 item 7).
    if check_fs && root_touched(&plan) {
        source.check_root()?;
    } else {
        drop(source.root_fs()?);
    }
    Ok(plan)
}

/// Whether `plan` writes into the root filesystem or grows it.
/// Whether `plan` writes into the root filesystem (files, or growing it).
pub fn root_touched(plan: &Plan) -> bool {
    !plan.root.is_empty() || matches!(plan.grow, Grow::To(_))
}

/// The edits of `plan` on the image file at `path` (a private copy): disk id, room (growing
/// when allowed), root filesystem, boot partition. Returns the new root partition size when
/// it grew.
fn edit(path: &Path, plan: &Plan) -> Result<Option<u64>, ApplyError> {
    edit_image(&mut Image::open_rw(path)?, plan)
}

/// The size the root partition must grow to for `plan` (when it writes into it and growing
/// is allowed), `None` when it has room.
fn room_to_grow(img: &Image, plan: &Plan) -> Result<Option<u64>, ApplyError> {
    if !root_touched(plan) {
        return Ok(None);
    }
    let fs = img.root_fs()?;
    let needs = root_needs(&fs, plan);
    let room = RootRoom::of(&fs);
    drop(fs);
    grow_target(plan.grow, img.root().size_bytes, needs, room)
}

/// [`edit`] on an opened image (in place, or over another: [`Image::open_over`]).
fn edit_image(img: &mut Image, plan: &Plan) -> Result<Option<u64>, ApplyError> {
    if let (Some(id), disk::Scheme::Mbr) = (plan.disk_id, img.scheme()) {
        img.set_disk_id(id)?;
    }

    // Room in the root filesystem, growing it when allowed.
    let mut grew_root_to = None;
    if let Some(size) = room_to_grow(img, plan)? {
        img.grow_root(size, plan.epoch)?;
        grew_root_to = Some(align_up(size));
    }

    if !plan.root.is_empty() {
        let mut opts = OpenOptions::new(OpenMode::ReadWrite);
        opts.clock = Some(plan.epoch);
        // The output is a private copy, removed on any error: no overlay needed. (Over
        // another image, the session writes into the new file through an overlay anyway.)
        opts.direct = true;
        let mut fs = img.root_fs_with(&opts)?;
        apply_root(&mut fs, plan)?;
        let written = fs.commit_written()?;
        img.mark_written(&written);
    }

    if plan.touches_boot() {
        let mut vol = img.boot_fs_mut(plan.epoch)?;
        apply_boot(&mut vol, plan)?;
        vol.close()?;
    }
    Ok(grew_root_to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::test_disk::{make_disk, sh, ROOT_START};
    use crate::plan::{Content, Owner};

    const ROOT_644: Owner = Owner {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };

    /// Over another image, a plan writes exactly what it writes in place: the new file filled
    /// around the written ranges is the in-place copy byte for byte (and e2fsck finds it
    /// clean); the base never changes; a plan that would grow the root writes nothing.
    #[test]
    fn over_another_image_the_edits_are_those_made_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let base = make_disk(tmp.path(), false);
        let before = std::fs::read(&base).unwrap();
        let owner = ROOT_644;
        let mut plan = Plan::new(crate::clock::DEFAULT_EPOCH);
        plan.disk_id = Some(0x1234_5678);
        plan.root.push(RootOp::Write {
            path: "/node".into(),
            content: Content::Bytes((0..300_000u32).map(|i| (i % 253) as u8).collect()),
            owner,
        });
        plan.root.push(RootOp::Write {
            path: "/hostname".into(),
            content: Content::Bytes(b"pi-w-2\n".to_vec()),
            owner,
        });
        plan.boot.push(BootOp::Write {
            path: "/user-data".into(),
            content: Content::Bytes(b"#cloud-config\n".to_vec()),
        });
        let copy = tmp.path().join("copy.img");
        std::fs::copy(&base, &copy).unwrap();
        apply_in_place(&copy, &plan).unwrap();

        let node = tmp.path().join("node.img");
        let open_new = |p: &Path| {
            std::sync::Arc::new(
                File::options()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(p)
                    .unwrap(),
            )
        };
        let top = open_new(&node);
        let (applied, written) = apply_over(&base, top.clone(), &[], &node, &plan)
            .unwrap()
            .expect("room enough: no growth");
        assert_eq!(applied.output, node);
        assert!(std::fs::read(&base).unwrap() == before, "the base changed");
        let bytes: u64 = written.iter().map(|(s, e)| e - s).sum();
        assert!(written.windows(2).all(|w| w[0].1 < w[1].0), "{written:?}");
        assert!(written[0].0 == 0, "the MBR's disk id: {written:?}");
        assert!(bytes > 300_000 && bytes < 2 << 20, "{bytes} bytes written");
        output::fill_around(&File::open(&base).unwrap(), &top, &written).unwrap();
        assert!(
            std::fs::read(&node).unwrap() == std::fs::read(&copy).unwrap(),
            "over the base and in place differ"
        );
        let (ok, out) = sh(
            "e2fsck",
            &[
                "-fn",
                &format!("{}?offset={}", node.display(), ROOT_START * 512),
            ],
            None,
        );
        assert!(ok, "{out}");

        // More than the root filesystem holds: it would grow, so nothing is written.
        let mut big = Plan::new(crate::clock::DEFAULT_EPOCH);
        big.root.push(RootOp::Write {
            path: "/big".into(),
            content: Content::Bytes(vec![1u8; 16 << 20]),
            owner,
        });
        let node2 = tmp.path().join("node2.img");
        let top2 = open_new(&node2);
        assert!(apply_over(&base, top2, &[], &node2, &big)
            .unwrap()
            .is_none());
        assert!(std::fs::read(&node2).unwrap().iter().all(|&b| b == 0));
        assert!(std::fs::read(&base).unwrap() == before, "the base changed");

        // The same plan on a copy: grown on its own (grow_for), then applied over itself with
        // its writes recorded, it gives the bytes of the plan applied in place, growth and all
        // (its new disk id included); what differs from the grown image lies in the ranges
        // recorded. On an MBR disk and on a GPT disk (whose backup header moves).
        big.disk_id = Some(0x0bad_cafe);
        let gpt_dir = tmp.path().join("gpt");
        std::fs::create_dir(&gpt_dir).unwrap();
        for base in [base.clone(), make_disk(&gpt_dir, true)] {
            let in_place = base.with_extension("in-place");
            std::fs::copy(&base, &in_place).unwrap();
            let done = apply_in_place(&in_place, &big).unwrap();
            assert!(done.grew_root_to.is_some());
            let split = base.with_extension("split");
            std::fs::copy(&base, &split).unwrap();
            let grew = grow_for(&split, &big).unwrap();
            assert_eq!(grew, done.grew_root_to);
            let grown = std::fs::read(&split).unwrap();
            let rw = std::sync::Arc::new(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&split)
                    .unwrap(),
            );
            let (_, written) = apply_over(&split, rw, &[], &split, &big)
                .unwrap()
                .expect("room after the growth");
            let after = std::fs::read(&split).unwrap();
            let name = base.display();
            assert!(
                after == std::fs::read(&in_place).unwrap(),
                "{name}: split differs"
            );
            assert_eq!(after.len(), grown.len());
            for (i, (a, b)) in after.iter().zip(&grown).enumerate() {
                let at = i as u64;
                assert!(
                    a == b || written.iter().any(|&(s, e)| s <= at && at < e),
                    "{name}: byte {i} changed outside the recorded ranges"
                );
            }
            assert!(grow_for(&split, &big).unwrap().is_none(), "room now");
        }
    }

    /// Layers applied one after the other over the same base into one file each see those
    /// before (the partition table, the boot files, the root filesystem's allocation): the
    /// result is the same bytes as the layers applied in place one after the other, and e2fsck
    /// finds it clean. The last layer's new disk id rewrites the `PARTUUID=` in the
    /// cmdline.txt and /etc/fstab that only the first layer wrote.
    #[test]
    fn layers_over_one_base_see_the_layers_before() {
        let tmp = tempfile::tempdir().unwrap();
        let base = make_disk(tmp.path(), false);
        let before = std::fs::read(&base).unwrap();
        let owner = ROOT_644;
        let epoch = crate::clock::DEFAULT_EPOCH;
        let write = |p: &mut Plan, path: &str, data: Vec<u8>| {
            p.root.push(RootOp::Write {
                path: path.into(),
                content: Content::Bytes(data),
                owner,
            })
        };
        let mut common = Plan::new(epoch);
        common.boot.push(BootOp::Write {
            path: "/cmdline.txt".into(),
            content: Content::Bytes(b"console=tty1 root=PARTUUID=11223344-02 rootwait\n".to_vec()),
        });
        write(
            &mut common,
            "/etc/fstab",
            b"PARTUUID=11223344-02 / ext4 defaults 0 1\n".to_vec(),
        );
        write(&mut common, "/usr/bin/kubelet", vec![7u8; 900_000]);
        let mut role = Plan::new(epoch);
        role.cmdline_add.push("cgroup_enable=memory".into());
        write(&mut role, "/etc/role", b"worker\n".to_vec());
        write(&mut role, "/opt/images.tar", vec![9u8; 500_000]);
        let mut node = Plan::new(epoch);
        node.disk_id = Some(0x0bad_cafe);
        write(&mut node, "/etc/hostname", b"w-2\n".to_vec());
        node.boot.push(BootOp::Write {
            path: "/user-data".into(),
            content: Content::Bytes(b"#cloud-config\n".to_vec()),
        });
        let layers = [&common, &role, &node];

        let copy = tmp.path().join("copy.img");
        std::fs::copy(&base, &copy).unwrap();
        for l in layers {
            apply_in_place(&copy, l).unwrap();
        }
        let out = tmp.path().join("node.img");
        let top = std::sync::Arc::new(
            File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&out)
                .unwrap(),
        );
        let mut written = Vec::new();
        for l in layers {
            let (_, w) = apply_over(&base, top.clone(), &written, &out, l)
                .unwrap()
                .expect("no growth");
            assert!(w.len() >= written.len() && w.iter().map(|r| r.1 - r.0).sum::<u64>() > 0);
            written = w;
        }
        assert!(std::fs::read(&base).unwrap() == before, "the base changed");
        output::fill_around(&File::open(&base).unwrap(), &top, &written).unwrap();
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&copy).unwrap(),
            "the layers over the base and in place differ"
        );
        // In place over itself (the image its own base, as the build edits role images and
        // reflinks: `build::edits::edit_recorded`): the same bytes, and every byte that
        // differs from the base inside the ranges recorded (what the remembered digests of
        // `build::digest_memo` rest on).
        let tracked = tmp.path().join("tracked.img");
        std::fs::copy(&base, &tracked).unwrap();
        let itself = std::sync::Arc::new(
            File::options()
                .read(true)
                .write(true)
                .open(&tracked)
                .unwrap(),
        );
        let mut recorded = Vec::new();
        for l in layers {
            let (_, w) = apply_over(&tracked, itself.clone(), &recorded, &tracked, l)
                .unwrap()
                .expect("no growth");
            recorded = w;
        }
        let edited = std::fs::read(&tracked).unwrap();
        assert!(
            edited == std::fs::read(&copy).unwrap(),
            "the layers in place over themselves and in place differ"
        );
        let inside = |at: u64| recorded.iter().any(|&(s, e)| s <= at && at < e);
        let changed: Vec<u64> = (0..before.len())
            .filter(|&i| before[i] != edited[i])
            .map(|i| i as u64)
            .collect();
        assert!(!changed.is_empty());
        let outside: Vec<&u64> = changed.iter().filter(|&&at| !inside(at)).collect();
        assert!(outside.is_empty(), "changed but not recorded: {outside:?}");
        let img = Image::open(&out).unwrap();
        let cmdline = img
            .boot_fs(epoch)
            .unwrap()
            .read_file("/cmdline.txt")
            .unwrap();
        let cmdline = String::from_utf8(cmdline.unwrap()).unwrap();
        assert!(
            cmdline.contains("PARTUUID=0badcafe-02") && cmdline.contains("cgroup_enable=memory"),
            "{cmdline}"
        );
        let fstab = img.root_fs().unwrap().read_config("/etc/fstab").unwrap();
        assert!(String::from_utf8_lossy(&fstab).contains("PARTUUID=0badcafe-02"));
        let (ok, fsck) = sh(
            "e2fsck",
            &[
                "-fn",
                &format!("{}?offset={}", out.display(), ROOT_START * 512),
            ],
            None,
        );
        assert!(ok, "{fsck}");
    }

    const NEEDS: RootNeeds = RootNeeds {
        bytes: 100,
        inodes: 1,
    };

    fn room(free_bytes: u64, free_inodes: u64) -> RootRoom {
        RootRoom {
            free_bytes,
            free_inodes,
            bytes_per_inode: 16,
            group_bytes: 1000,
        }
    }

    #[test]
    fn grow_policy() {
        assert_eq!(
            grow_target(Grow::Auto, 1000, NEEDS, room(500, 9)).unwrap(),
            None
        );
        assert_eq!(
            grow_target(Grow::Auto, 1000, NEEDS, room(40, 9)).unwrap(),
            Some(1000 + 60 + 10)
        );
        let e = grow_target(Grow::Off, 1000, NEEDS, room(40, 9)).unwrap_err();
        assert!(e.to_string().contains("needs 60 more bytes"), "{e}");
        assert_eq!(
            grow_target(Grow::Off, 1000, NEEDS, room(100, 9)).unwrap(),
            None
        );
        assert!(matches!(
            grow_target(Grow::To(500), 1000, NEEDS, room(500, 9)),
            Err(ApplyError::WouldShrink { .. })
        ));
        assert_eq!(
            grow_target(Grow::To(64 << 20), 1 << 20, NEEDS, room(500, 9)).unwrap(),
            Some(64 << 20)
        );
    }

    /// Issue 12 item 14: `--grow auto` ignored a shortage of inodes (bytes to spare, no inode).
    #[test]
    fn grow_policy_counts_inodes() {
        let needs = RootNeeds {
            bytes: 100,
            inodes: 50,
        };
        // 40 inodes missing: 40 * 16 bytes and one group.
        assert_eq!(
            grow_target(Grow::Auto, 1000, needs, room(5000, 10)).unwrap(),
            Some(1000 + 40 * 16 + 1000)
        );
        // Bytes missing too: the larger growth wins.
        assert_eq!(
            grow_target(Grow::Auto, 1000, needs, room(0, 10)).unwrap(),
            Some(1000 + 1640)
        );
        let e = grow_target(Grow::Off, 1000, needs, room(5000, 10)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the root filesystem needs 50 inodes, 10 are free, and --grow off forbids growing it"
        );
        // --grow SIZE: 4 MiB more brings 4 inodes at 1 MiB per inode.
        let part = 8 << 20;
        let mib_per_inode = |free_inodes| RootRoom {
            bytes_per_inode: 1 << 20,
            ..room(5000, free_inodes)
        };
        let e = grow_target(Grow::To(part + 1), part, needs, mib_per_inode(0)).unwrap_err();
        assert!(e.to_string().contains("--grow auto or at least"), "{e}");
        assert_eq!(
            grow_target(Grow::To(part + 1), part, needs, mib_per_inode(49)).unwrap(),
            Some(part + 1)
        );
    }
}
