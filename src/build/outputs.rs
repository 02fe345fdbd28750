//! Phase 5 of a build: applying the layers, and the files in the output directory.
//!
//! - The common layer is applied once to a copy of the base, each role layer once to a copy of
//!   that (a single role applies both to one copy); each node then gets a copy of its role's
//!   image, by reflink where the output filesystem shares blocks (btrfs, XFS with reflink=1),
//!   else a sparse copy, and only its own layer (kilobytes) is written into it.
//! - Nodes are built `--jobs` at a time. The filesystem edits (milliseconds per node) run one
//!   at a time; the copies, digests and format writers run in parallel. Memory per job is a
//!   hashing buffer and whatever its format writers hold.
//! - Each output file is synced once, when whole, and hashed once: the raw image with its
//!   holes hashed without being read, other formats while they are written
//!   ([`crate::digest::HashingWriter`]).
//! - Everything is written into a staging directory and put in place by
//!   [`super::staging::Staging::commit`] when the whole build succeeded: `dist/` then holds
//!   exactly the spec's nodes' files, `SHA256SUMS` over every file, `manifest.json` and
//!   `sbom.spdx.json`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::edits::{edit_base_copy, edit_recorded};
use super::layers::{role_key, BuildPlan};
use super::manifest::{self, FileEntry, Manifest, NodeEntry};
use super::reuse::Sharing;
use super::staging::{self, Staging};
use super::{io_error, BuildError, BuildOptions, BuildReport, BuiltNode, Validated};
use crate::apply;
use crate::artifacts::FetchedArtifact;
use crate::digest::HashingWriter;
use crate::output;
use crate::progress::{Progress, Task};
use crate::spec::Role;

/// Node and role images hold the bootstrap token (and control planes the CA key): only their
/// owner may read them.
pub const IMAGE_MODE: u32 = 0o600;

/// A node's finished raw image, as each [`NodeOutput`] gets it.
pub struct NodeImage<'a> {
    /// The node's name.
    pub node: &'a str,
    /// The image, in the staging directory (read it, never change it).
    pub path: &'a Path,
    /// The image, open for reading (positional reads: share it between threads).
    pub file: &'a fs::File,
    /// The image's size in bytes.
    pub bytes: u64,
    /// The staging directory, where every output of the build is written.
    pub staging_dir: &'a Path,
    /// How the node image shares with the role image it was copied from, to take the digests
    /// of chunks the node layer left as they were from it ([`super::reuse`]); `None` when the
    /// build does not.
    pub sharing: Option<&'a Sharing<'a>>,
    /// Where to report a long write ([`Task::Compress`]); shared by the nodes built at once.
    pub progress: Option<&'a dyn Progress>,
}

/// A new file in the staging directory, being written by one [`NodeOutput`]. What is written
/// through it goes straight to the file (no buffer: once `write` returns, the bytes are in
/// the file, where [`StagedFile::reader`] handles read them) and is hashed on its way: the
/// build knows the file's digest and size when its last byte is written, without reading it
/// back. Write in large pieces.
pub struct StagedFile {
    path: PathBuf,
    w: HashingWriter<fs::File>,
}

impl StagedFile {
    pub(super) fn create(path: PathBuf) -> Result<StagedFile, BuildError> {
        let f = new_file(&path)?;
        Ok(StagedFile {
            path,
            w: HashingWriter::new(f),
        })
    }

    /// The file's path in the staging directory (it is renamed into the output directory
    /// when the build is whole; handles stay valid).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Another handle on the file, to read back (positionally) bytes already written: a
    /// compressed chunk later images copy instead of compressing it again.
    pub fn reader(&self) -> io::Result<fs::File> {
        fs::File::open(&self.path)
    }

    /// Syncs the file and returns its entry (digest and size of everything written).
    pub(super) fn finish(self, name: String) -> Result<FileEntry, BuildError> {
        let (sha256, bytes, f) = self.w.finish();
        f.sync_all().map_err(io_error(&self.path))?;
        Ok(FileEntry {
            name,
            bytes,
            sha256,
        })
    }
}

impl Write for StagedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// A file made from each finished node image, beside it: a compressed copy, a block map. The
/// output formats plug in here ([`NodeOutputs::extra`]; see [`super::formats`]); the build
/// gives each one the node's finished raw image and a new file in the staging directory that
/// hashes what passes, then syncs the file and records its size and digest in the manifest
/// and `SHA256SUMS`; the file is put in place with the rest of the build, and removed by a
/// later build that no longer makes it.
///
/// One value serves every node of a build, from several threads at once (`--jobs`): work
/// that nodes share (compressed blocks of regions identical across nodes) can be kept in it
/// until [`NodeOutput::build_done`].
pub trait NodeOutput: Send + Sync {
    /// The file's name for `node` (e.g. `pi-cp-1.img.xz`): a plain file name, no `/`.
    fn file_name(&self, node: &str) -> String;
    /// What makes the file's bytes from the raw image (an encoder with its version and
    /// settings): a file made by another is never taken for this one
    /// ([`super::unchanged::file_key`]).
    fn kind(&self) -> String;
    /// Writes the file for `image.node` from its finished raw image into `out`.
    fn write(&self, image: &NodeImage<'_>, out: &mut StagedFile) -> io::Result<()>;
    /// Every node of the build is written (or the build failed): forget what was kept for
    /// sharing between nodes; one line on what the output cost, if it has one.
    fn build_done(&self) -> Option<String> {
        None
    }
    /// Before the build: what earlier builds left in the cache `cache` may be used and added
    /// to (`None`: not, the build makes everything itself).
    fn use_cache(&self, _cache: Option<&Path>) {}
}

/// What files a build makes per node.
#[derive(Clone)]
pub struct NodeOutputs {
    /// Keep the raw image `<node>.img` in the output directory (it is always made: the other
    /// formats are written from it).
    pub raw: bool,
    /// Write `<node>.img.bmap` (bmaptool's block map, [`crate::bmap`]), its range checksums
    /// taken in the same read of the image as the raw image's digest.
    pub bmap: bool,
    pub extra: Vec<Arc<dyn NodeOutput>>,
    /// Take the digests of chunks a node image has in common with its role image from the
    /// role's nodes built before it ([`super::reuse`]); off only to test that the files are
    /// the same without (`build --test-no-reuse`).
    pub reuse: bool,
    /// Take a one-node build's digests from the cache when the same bytes were hashed
    /// before ([`super::digest_memo`]); off for `build --verify`, which must hash what it
    /// rebuilt.
    pub remember: bool,
    /// Write `os_list.json` for Raspberry Pi Imager, naming the files under this URL (a
    /// directory, ending in `/`; `Some("")`: the output directory as a `file://` URL).
    pub os_list: Option<String>,
}

impl Default for NodeOutputs {
    fn default() -> Self {
        NodeOutputs {
            raw: true,
            bmap: false,
            extra: Vec::new(),
            reuse: true,
            remember: true,
            os_list: None,
        }
    }
}

impl std::fmt::Debug for NodeOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOutputs")
            .field("raw", &self.raw)
            .field("bmap", &self.bmap)
            .field("extra", &self.extra.len())
            .field("reuse", &self.reuse)
            .field("remember", &self.remember)
            .field("os_list", &self.os_list)
            .finish()
    }
}

/// Runs one step of the apply phase between `begin` and `finish` of `task`, its size that of
/// the image it starts from (the bytes it copies). The copy itself reports no position: the
/// step's bar shows its elapsed time and, once done, its throughput.
pub(super) fn step<T>(
    progress: Option<&dyn Progress>,
    task: Task<'_>,
    from: &Path,
    run: impl FnOnce() -> Result<T, BuildError>,
) -> Result<T, BuildError> {
    let total = fs::metadata(from).map(|m| m.len()).ok();
    if let Some(p) = progress {
        p.begin(task, total);
    }
    let done = run()?;
    if let Some(p) = progress {
        if let Some(t) = total {
            p.advance(task, t);
        }
        p.finish(task);
    }
    Ok(done)
}

/// The role images, by role key.
pub(super) struct RoleImages {
    pub(super) paths: BTreeMap<&'static str, PathBuf>,
    /// What names each role image's bytes, for its nodes' digests to be remembered by
    /// ([`super::digest_memo`]): the SHA-256 of the input's digest and the ranges its layers
    /// wrote over the upstream image, with their bytes. Only for roles whose layers recorded
    /// what they wrote, from an input whose digest is known, when digests are remembered.
    pub(super) keys: BTreeMap<&'static str, String>,
}

/// The role images, in `dir`: the common layer applied once, then each role's layer on a copy
/// of that (the last role on the common image itself), the ranges each wrote recorded; and
/// their keys, with `base_sha256` (the input's digest) when given.
fn role_images(
    v: &Validated,
    plan: &BuildPlan,
    dir: &Path,
    cache: &Path,
    base_sha256: Option<&str>,
    progress: Option<&dyn Progress>,
) -> Result<RoleImages, BuildError> {
    let copy =
        |from: &Path, to: &Path| output::copy_image(from, to, IMAGE_MODE).map_err(io_error(to));
    let mut out = RoleImages {
        paths: BTreeMap::new(),
        keys: BTreeMap::new(),
    };
    // Always common, then role, in two sessions (also with one role): a node's image must
    // not depend on which other roles are built with it (`--node`).
    let common = dir.join("common.img");
    let (_, common_written) = step(progress, Task::Payload("common"), &v.base.path, || {
        edit_base_copy(&v.base.path, &common, &plan.common, cache)
    })?;
    for (i, layer) in plan.roles.iter().enumerate() {
        let key = role_key(layer.role);
        let path = dir.join(format!("{key}.img"));
        let (_, written) = step(progress, Task::Payload(key), &common, || {
            if i + 1 == plan.roles.len() {
                // The last role takes the common image itself.
                fs::rename(&common, &path).map_err(io_error(&path))?;
            } else {
                copy(&common, &path)?;
            }
            edit_recorded(&path, common_written.as_ref(), &layer.plan)
        })?;
        if let (Some(base), Some(r)) = (base_sha256, written) {
            let f = fs::File::open(&path).map_err(io_error(&path))?;
            let len = f.metadata().map_err(io_error(&path))?.len();
            let k = super::digest_memo::key(&r.named(base), len, &f, &r.written, &[])
                .map_err(io_error(&path))?;
            out.keys.insert(key, k);
        }
        out.paths.insert(key, path);
    }
    Ok(out)
}

/// A new private file (never through a link).
fn new_file(path: &Path) -> Result<fs::File, BuildError> {
    new_file_mode(path, IMAGE_MODE)
}

fn new_file_mode(path: &Path, mode: u32) -> Result<fs::File, BuildError> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_error(path))
}

/// Writes a role image per role in use (the common layer once), then each node's files from
/// its role's image, then `sbom.spdx.json`, `SHA256SUMS` and `manifest.json` (listing `arts`
/// and what else was `added` to the cards), and puts them in place.
pub(super) fn apply(
    v: &Validated,
    plan: &BuildPlan,
    arts: &[FetchedArtifact],
    added: manifest::Added,
    opts: &BuildOptions,
    progress: Option<&dyn Progress>,
    report: &mut BuildReport,
) -> Result<(), BuildError> {
    let staging = Staging::begin(&opts.out_dir)?;
    let dir = staging.dir().to_path_buf();
    // The role images live in the staging directory (0700) and go before the commit.
    let roles_dir = dir.join(".roles");
    fs::create_dir(&roles_dir).map_err(io_error(&roles_dir))?;
    // One node: its three layers written over the base into its own file, no role image
    // (`--test-no-reuse` keeps the role image path, for the tests to compare).
    // What names the base's bytes, for the nodes' digests to be remembered by (not when
    // they are not to be: `--verify`, and `--test-no-reuse`, whose digests are compared with
    // those taken the other way).
    let base_sha256 = v
        .base
        .input_sha256
        .as_deref()
        .filter(|_| opts.outputs.remember && opts.outputs.reuse);
    for o in &opts.outputs.extra {
        // The compressed chunks earlier builds kept, under the same conditions.
        let remember = opts.outputs.remember && opts.outputs.reuse;
        o.use_cache(remember.then_some(opts.cache_dir.as_path()));
    }
    let roles = match (plan.nodes.len(), plan.roles.len(), opts.outputs.reuse) {
        (1, 1, true) => None,
        _ => Some(role_images(
            v,
            plan,
            &roles_dir,
            &opts.cache_dir,
            base_sha256,
            progress,
        )?),
    };
    let images = match &roles {
        Some(r) => super::nodes::Images::Roles(r),
        None => super::nodes::Images::Base {
            path: &v.base.path,
            sha256: base_sha256,
        },
    };
    report.from_base = roles.is_none();
    // What the build before left in the output directory, for nodes that did not change to
    // keep (never for `--verify` or `--test-no-reuse`, which make everything).
    let earlier = (opts.outputs.remember && opts.outputs.reuse).then(|| {
        super::unchanged::Earlier::read(&opts.out_dir, &opts.cache_dir, |name| {
            staging.previous_file(name).map(str::to_string)
        })
    });
    let built = super::nodes::build_nodes(plan, &images, &dir, opts, earlier.as_ref(), progress);
    for o in &opts.outputs.extra {
        report.compressed.extend(o.build_done());
    }
    let built = built?;
    fs::remove_dir_all(&roles_dir).map_err(io_error(&roles_dir))?;

    let mut staged: Vec<String> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    let mut nodes: Vec<NodeEntry> = Vec::new();
    // What the record of the output directory will say of each node ([`super::unchanged`]).
    let mut made: Vec<super::unchanged::Made> = Vec::new();
    for (node, b) in plan.nodes.iter().zip(built) {
        let Some(b) = b else { continue };
        staged.extend(b.files.iter().map(|f| f.name.clone()));
        if let Some(key) = &b.key {
            made.push(super::unchanged::Made {
                node: node.name.clone(),
                key: key.clone(),
                raw_sha256: b.image_sha256.clone(),
                raw_bytes: b.image_bytes,
                files: b
                    .files
                    .iter()
                    .cloned()
                    .zip(b.kinds.iter().cloned())
                    .collect(),
            });
        }
        match b.taken {
            true => report.taken += 1,
            false => report.copies.push(b.copy),
        }
        report.shared_chunks.0 += b.shared_chunks.0;
        report.shared_chunks.1 += b.shared_chunks.1;
        report.remembered += usize::from(b.remembered);
        let raw = b
            .files
            .iter()
            .find(|f| f.name == format!("{}.img", node.name));
        // The raw image, else the first other file (a compressed image).
        let main = raw.or_else(|| b.files.iter().find(|f| !f.name.ends_with(".bmap")));
        report.nodes.push(BuiltNode {
            name: node.name.clone(),
            role: node.spec_role,
            address: node.address.clone(),
            image: opts
                .out_dir
                .join(main.map_or(format!("{}.img", node.name), |f| f.name.clone())),
            sha256: main.map(|f| f.sha256.clone()).unwrap_or_default(),
            bytes: b.image_bytes,
        });
        nodes.push(NodeEntry {
            name: node.name.clone(),
            role: node.spec_role.as_str().to_string(),
            address: node.address.clone(),
            raw_image: Some(manifest::RawImage {
                bytes: b.image_bytes,
                sha256: b.image_sha256,
            }),
            files: b.files,
        });
        // A reimage (or a node rebuilt with a token minted in the cluster): the card removes
        // its old self before joining; these commands are the fallback, should it say it
        // could not (see `render::first_boot::manual_rejoin_commands`).
        if opts.token.is_some() || v.rejoining.contains(&node.name) {
            report
                .before_flashing
                .extend(crate::render::first_boot::manual_rejoin_commands(
                    &node.name,
                    node.spec_role == Role::ControlPlane,
                ));
        }
    }
    // Nodes of the spec this build did not make (`--node`) keep the files an earlier build
    // made for them, when they are still there.
    let mut kept_nodes: Vec<(String, Vec<String>)> = Vec::new();
    for n in &v.spec.nodes {
        if nodes.iter().any(|x| x.name == *n.name) {
            continue;
        }
        let previous = staging
            .previous()
            .and_then(|m| m.nodes.iter().find(|x| x.name == *n.name).cloned());
        let entry = match previous {
            Some(e) => Some(e),
            None => {
                // An output directory from before the manifest: its SHA256SUMS entry.
                let name = format!("{}.img", n.name);
                staging.previous_file(&name).map(|d| NodeEntry {
                    name: n.name.to_string(),
                    role: n.role.as_str().to_string(),
                    address: n.address.map(|a| a.to_string()),
                    raw_image: None,
                    files: vec![FileEntry {
                        bytes: fs::metadata(opts.out_dir.join(&name)).map_or(0, |m| m.len()),
                        sha256: d.to_string(),
                        name,
                    }],
                })
            }
        };
        if let Some(e) = entry {
            if e.files
                .iter()
                .all(|f| staging.previous_file(&f.name).is_some())
            {
                kept.extend(e.files.iter().map(|f| f.name.clone()));
                kept_nodes.push((
                    e.name.clone(),
                    e.files.iter().map(|f| f.name.clone()).collect(),
                ));
                nodes.push(e);
            }
        }
    }
    // In spec order.
    nodes.sort_by_key(|e| v.spec.nodes.iter().position(|n| *n.name == e.name));

    let mut m = Manifest {
        piforge_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster: v.spec.name.clone(),
        spec_sha256: {
            let f = fs::File::open(&opts.spec_path).map_err(io_error(&opts.spec_path))?;
            crate::digest::sha256_reader(f)
                .map_err(io_error(&opts.spec_path))?
                .0
        },
        epoch: opts.epoch,
        kubernetes_version: v.release.kubernetes().to_string(),
        base_image: manifest::BaseImage {
            file: v
                .base_path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: v.base.input_sha256.clone().unwrap_or_default(),
        },
        artifacts: manifest::artifact_entries(v.release.versions(), arts),
        debs: added.debs,
        container_images: added.container_images,
        nodes,
        files: Vec::new(),
    };
    let sbom = manifest::sbom(&m, &distro(v), &base_packages(v)?);
    m.files.push(stage_text(&dir, staging::SBOM, &sbom)?);
    staged.push(staging::SBOM.to_string());
    if let Some(base) = &opts.outputs.os_list {
        let text = super::formats::os_list(&m, base, &opts.out_dir)?;
        m.files
            .push(stage_text(&dir, super::formats::OS_LIST, &text)?);
        staged.push(super::formats::OS_LIST.to_string());
    }

    // SHA256SUMS: every file of the output directory but itself, sorted by name.
    let mut sums: BTreeMap<&str, &str> = BTreeMap::new();
    for f in m.nodes.iter().flat_map(|n| n.files.iter()).chain(&m.files) {
        sums.insert(&f.name, &f.sha256);
    }
    let manifest_text = m.to_json();
    let manifest_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        manifest_text.as_bytes(),
    ));
    sums.insert(staging::MANIFEST, &manifest_digest);
    let text: String = sums.iter().map(|(f, h)| format!("{h}  {f}\n")).collect();
    stage_text(&dir, staging::SHA256SUMS, &text)?;
    staged.push(staging::SHA256SUMS.to_string());
    stage_text(&dir, staging::MANIFEST, &manifest_text)?;
    staged.push(staging::MANIFEST.to_string());

    staging.commit(&staged, &kept)?;
    // The files as they lie now, for the next build to keep those of nodes that do not change.
    if let Some(earlier) = &earlier {
        super::unchanged::record(&opts.out_dir, &opts.cache_dir, &made, earlier, &kept_nodes);
    }
    report.sha256sums = opts.out_dir.join(staging::SHA256SUMS);
    report.manifest = Some(m);
    Ok(())
}

/// What to run in the cluster before a rebuilt node's card boots, when the node cannot clean up
/// after itself (the fallback `build --node` and `piforge reimage` print): the old Node object,
/// and for a control plane its etcd member.
pub fn before_reimage(node: &str, role: Role) -> Vec<String> {
    crate::render::first_boot::manual_rejoin_commands(node, role == Role::ControlPlane)
}

/// Writes a small output file into the staging directory (0644: these hold no secret),
/// synced, and returns its entry.
fn stage_text(dir: &Path, name: &str, text: &str) -> Result<FileEntry, BuildError> {
    let path = dir.join(name);
    let mut f = new_file_mode(&path, 0o644)?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io_error(&path))?;
    Ok(FileEntry {
        name: name.to_string(),
        bytes: text.len() as u64,
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes())),
    })
}

/// The base's os-release `ID` (`debian`, `ubuntu`...), for package URLs in the SBOM.
fn distro(v: &Validated) -> String {
    v.facts
        .os
        .as_ref()
        .and_then(|o| o.id.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "debian".to_string())
}

/// The base image's installed packages, from its dpkg status.
fn base_packages(v: &Validated) -> Result<Vec<manifest::DebPackage>, BuildError> {
    let img = crate::disk::Image::open(&v.base.path).map_err(apply::ApplyError::from)?;
    let fs = img.root_fs().map_err(apply::ApplyError::from)?;
    let status = match fs
        .stat("/var/lib/dpkg/status")
        .map_err(apply::ApplyError::from)?
    {
        Some(_) => fs
            .read_config("/var/lib/dpkg/status")
            .map_err(apply::ApplyError::from)?,
        None => Vec::new(),
    };
    Ok(manifest::installed_packages(&String::from_utf8_lossy(
        &status,
    )))
}

/// Holds an exclusive lock on the output directory (`OUT/.piforge.lock`, `flock`) for a whole
/// build, so that two builds never write into one `--out` (issue 12 item 14). The lock file
/// holds the process id of the build that has it, for the other's message.
#[derive(Debug)]
pub struct OutDirLock(#[allow(dead_code)] fs::File);

/// Name of the lock file in the output directory (a `.piforge` name: the staging module
/// counts it as piforge's own).
pub const OUT_LOCK: &str = ".piforge.lock";

/// Locks `out` (creating it), or fails at once naming the build that holds it; then removes
/// the temporary images a build killed before its cleanup could run left there, which no
/// other build can be using while the lock is held (stale staging directories are removed by
/// [`Staging::begin`], under the same lock).
pub(super) fn lock_out_dir(out: &Path) -> Result<OutDirLock, BuildError> {
    use std::io::{Read as _, Seek as _};
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    fs::create_dir_all(out).map_err(io_error(out))?;
    let path = out.join(OUT_LOCK);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        // A link planted at the lock's name is refused, not followed.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io_error(&path))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_error(&path)(e));
        }
        let mut holder = String::new();
        let _ = (&file).take(32).read_to_string(&mut holder);
        let holder = match holder.trim().parse::<u32>() {
            Ok(pid) => format!("another piforge build (process {pid})"),
            Err(_) => "another piforge build".to_string(),
        };
        return Err(BuildError::OutDirBusy {
            out: out.display().to_string(),
            holder,
        });
    }
    let pid = std::process::id();
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| writeln!(file, "{pid}"))
        .map_err(io_error(&path))?;
    remove_leftovers(out);
    Ok(OutDirLock(file))
}

/// Removes the temporary images and staged image archives of builds that were killed before
/// their cleanup ran
/// (`kill -9`, a power cut). Only under the output directory's lock.
fn remove_leftovers(out: &Path) {
    let Ok(entries) = fs::read_dir(out) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(kind) = e.file_type() else { continue };
        if crate::output::is_temp_name(&name) && !kind.is_dir() {
            let _ = fs::remove_file(e.path());
        } else if name.starts_with(".piforge-images.") {
            // A killed build's staged image archives (remove_dir_all removes a planted link
            // itself, never what it points at).
            let _ = fs::remove_dir_all(e.path());
        }
    }
}
