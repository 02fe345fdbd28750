//! Phase 5's nodes: each node image made from its role image (a reflink or sparse copy, or
//! the role image itself for a role's only node) with its layer written, its digests taken
//! (shared with its role image where the bytes are the same, [`super::reuse`]), its other
//! formats written; `--jobs` nodes at a time, and one syncer thread writing the raw images to
//! disk and dropping their pages from the page cache once their job has read them.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use super::edits::{edit, edit_over, edit_recorded, Record};
use super::image_digests::{keyed, raw_entry, Remember};
use super::layers::{role_key, BuildPlan, NodeLayer};
use super::manifest::FileEntry;
use super::outputs::{step, NodeImage, NodeOutputs, RoleImages, StagedFile, IMAGE_MODE};
use super::reuse::RoleImage;
use super::unchanged::Earlier;
use super::{io_error, BuildError, BuildOptions, BuildReport};
use crate::apply::Applied;
use crate::output::{self, CopyKind};
use crate::progress::{Progress, Task};

/// One node's files, in the staging directory.
pub(super) struct StagedNode {
    pub(super) files: Vec<FileEntry>,
    pub(super) image_bytes: u64,
    /// SHA-256 of the raw image (whether it is kept or not).
    pub(super) image_sha256: String,
    pub(super) copy: CopyKind,
    /// Chunks of the image read from the role image's blocks, and all its chunks.
    pub(super) shared_chunks: (usize, usize),
    /// Its digests were remembered from an earlier build of the same bytes
    /// ([`super::digest_memo`]), not taken.
    pub(super) remembered: bool,
    /// Its files are those the build before left in the output directory ([`super::unchanged`]).
    pub(super) taken: bool,
    /// Its image's key ([`super::digest_memo::key`]), when it has one.
    pub(super) key: Option<String>,
    /// The kind of each of `files` ([`super::unchanged::file_key`]).
    pub(super) kinds: Vec<String>,
}

/// The number of nodes built at once: `--jobs`, else the CPUs.
fn jobs(opts: &BuildOptions, nodes: usize) -> usize {
    let n = match opts.jobs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    n.clamp(1, nodes.max(1))
}

/// Where a node image is made from.
pub(super) enum Source<'a> {
    /// Its role's image: `alone`, the role's only node, takes the role image itself; `role`,
    /// the role image shared by several nodes, to write over and share digests with.
    Role {
        img: &'a Path,
        alone: bool,
        role: Option<&'a RoleImage>,
    },
    /// The upstream base (the build's only node): the common and role layers, then the
    /// node's, written over it into the node's file, which is then filled in from it.
    Base {
        base: &'a Path,
        layers: [&'a crate::plan::Plan; 2],
        image: &'a RoleImage,
        /// The cache, where a base that passed e2fsck is remembered.
        cache: &'a Path,
    },
}

/// A node image written over its source image ([`edit_over`]) and not yet filled in from it:
/// the ranges written into `top`; the rest is the source's, copied by
/// [`output::fill_around_direct`] while the digests are taken (they read those bytes from the
/// source).
pub(super) struct Over {
    pub(super) source: PathBuf,
    pub(super) from: fs::File,
    pub(super) top: Arc<fs::File>,
    pub(super) written: Vec<(u64, u64)>,
}

/// How a node image was made: the copy, the summary of its last edit, and the fill left to do;
/// for one edited in place (a reflink, its role's image itself, a copy whose root partition
/// grew), what its layers recorded when they were.
struct Made {
    copy: CopyKind,
    done: Applied,
    over: Option<Over>,
    written: Option<Record>,
}

/// What every node of a build is made with: the staging directory, the files to make, what
/// the build before left in the output directory ([`Earlier`]), the progress.
#[derive(Clone, Copy)]
struct Job<'a> {
    dir: &'a Path,
    outputs: &'a NodeOutputs,
    earlier: Option<&'a Earlier>,
    progress: Option<&'a dyn Progress>,
}

/// One node: its image made from `source` ([`Source`]), its layer, its files. The raw image,
/// when it is an output, goes to `syncer` to be written to disk ([`sync_images`]).
fn build_node(
    node: &NodeLayer,
    source: &Source<'_>,
    memo: Option<(&Path, &str)>,
    job: Job<'_>,
    syncer: &mpsc::Sender<ToDisk>,
) -> Result<StagedNode, BuildError> {
    let Job {
        dir,
        outputs,
        earlier,
        progress,
    } = job;
    let name = format!("{}.img", node.name);
    let img = dir.join(&name);
    let key = role_key(node.role);
    let (from, role) = match source {
        Source::Role { img, role, .. } => (*img, *role),
        Source::Base { base, image, .. } => (*base, Some(*image)),
    };
    let made = step(progress, Task::Copy(&node.name), from, || match *source {
        Source::Role {
            img: role_img,
            alone,
            role,
        } => match (alone, role) {
            (true, _) => {
                fs::rename(role_img, &img).map_err(io_error(&img))?;
                let (done, written) = edit_recorded(&img, Some(&Record::default()), &node.plan)?;
                Ok(Made {
                    copy: CopyKind::Renamed,
                    done,
                    over: None,
                    written,
                })
            }
            (false, Some(_)) => made_over(role_img, &img, &[&node.plan], key, progress),
            (false, None) => {
                let copy =
                    output::copy_image(role_img, &img, IMAGE_MODE).map_err(io_error(&img))?;
                Ok(Made {
                    copy,
                    done: edit(&img, &node.plan)?,
                    over: None,
                    written: None,
                })
            }
        },
        Source::Base {
            base,
            layers,
            cache,
            ..
        } => {
            super::edits::check_base(base, layers[0], cache)?;
            made_over(
                base,
                &img,
                &[layers[0], layers[1], &node.plan],
                key,
                progress,
            )
        }
    })?;
    let (copy, done) = (made.copy, made.done);
    let mut files = Vec::new();
    let file = fs::File::open(&img).map_err(io_error(&img))?;
    let len = file.metadata().map_err(io_error(&img))?.len();
    let sharing = role.map(|r| match &made.over {
        Some(o) => r.node_written(len, &o.written),
        None => r.node(&file, len, copy == CopyKind::Reflink),
    });
    let shared_chunks = sharing.as_ref().map_or(0, |s| s.shared_chunks());
    let written_to_disk = || -> Result<(), BuildError> {
        if outputs.raw {
            // Its writeback starts now, on the syncer's thread; this thread reads and hashes
            // the image meanwhile. (A syncer that stopped has its error to tell.)
            let _ = syncer.send(ToDisk::Written(
                img.clone(),
                file.try_clone().map_err(io_error(&img))?,
            ));
        }
        Ok(())
    };
    // The raw image's digest, kept or not (os_list.json records it as the extracted image's).
    let remember = |top, written| {
        memo.map(|(cache, base)| Remember {
            cache,
            base,
            top,
            written,
        })
    };
    // Made in place, its writes are recorded over the image its growths made, if any.
    let grown_base = match (&made.over, &made.written, memo) {
        (None, Some(r), Some((_, base))) if !r.growths.is_empty() => Some(r.named(base)),
        _ => None,
    };
    let remember_made = || match &made.over {
        Some(o) => remember(&o.top, &o.written),
        None => made.written.as_ref().and_then(|r| {
            let mut m = remember(&file, &r.written)?;
            if let Some(b) = &grown_base {
                m.base = b;
            }
            Some(m)
        }),
    };
    // The node's files, as the build before into this output directory left them, when they
    // are all there unchanged and its key (computed first then, not beside the fill) says the
    // node did not change either.
    let names = node_files(&node.name, outputs);
    let mut known = None;
    if let Some(e) = earlier.filter(|e| {
        let plain: Vec<String> = names.iter().map(|(n, _)| n.clone()).collect();
        memo.is_some() && e.has_all(&node.name, &plain)
    }) {
        let k = keyed(
            &file,
            &img,
            outputs.bmap,
            made.over.as_ref(),
            remember_made(),
        )?;
        let taken = k
            .memo
            .as_ref()
            .and_then(|(_, key, _)| Some((key.clone(), e.take(&node.name, key, &names, dir)?)));
        if let Some((key, t)) = taken {
            if !outputs.raw {
                fs::remove_file(&img).map_err(io_error(&img))?;
            }
            return Ok(StagedNode {
                kinds: names.into_iter().map(|(_, k)| k).collect(),
                files: t.files,
                image_bytes: t.raw_bytes,
                image_sha256: t.raw_sha256,
                copy,
                shared_chunks: (0, 0),
                remembered: false,
                taken: true,
                key: Some(key),
            });
        }
        known = Some(k);
    }
    let (raw, bmap, remembered, key) = match &made.over {
        None => {
            written_to_disk()?;
            let k = match known {
                Some(k) => k,
                None => keyed(&file, &img, outputs.bmap, None, remember_made())?,
            };
            let key = k.memo.as_ref().map(|m| m.1.clone());
            let (raw, bmap, remembered) = raw_entry(&file, &img, name, k, sharing.as_ref())?;
            (raw, bmap, remembered, key)
        }
        // Filled in from its source on one thread while its digests are taken on the others
        // (from the source where nothing was written).
        Some(o) => std::thread::scope(|s| {
            let fill = s.spawn(|| output::fill_around_direct(&o.from, &o.top, &img, &o.written));
            let entry = match known {
                Some(k) => Ok(k),
                None => keyed(&file, &img, outputs.bmap, Some(o), remember_made()),
            }
            .and_then(|k| {
                let key = k.memo.as_ref().map(|m| m.1.clone());
                let (raw, bmap, remembered) = raw_entry(&file, &img, name, k, sharing.as_ref())?;
                Ok((raw, bmap, remembered, key))
            });
            let filled = fill
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            filled.map_err(io_error(&img))?;
            written_to_disk()?;
            entry
        })?,
    };
    let raw_digest = raw.sha256.clone();
    let mut kinds = Vec::new();
    if outputs.raw {
        files.push(raw.clone());
        kinds.push(KIND_RAW.to_string());
    }
    if let Some(text) = bmap {
        let fname = format!("{}.img.bmap", node.name);
        let path = dir.join(&fname);
        let mut out = StagedFile::create(path.clone())?;
        out.write_all(text.as_bytes()).map_err(io_error(&path))?;
        files.push(out.finish(fname)?);
        kinds.push(KIND_BMAP.to_string());
    }
    if !outputs.extra.is_empty() {
        let image = NodeImage {
            node: &node.name,
            path: &img,
            file: &file,
            bytes: raw.bytes,
            staging_dir: dir,
            sharing: sharing.as_ref(),
            progress,
        };
        for o in &outputs.extra {
            let fname = o.file_name(&node.name);
            let path = dir.join(&fname);
            let mut out = StagedFile::create(path.clone())?;
            o.write(&image, &mut out).map_err(io_error(&path))?;
            files.push(out.finish(fname)?);
            kinds.push(o.kind());
        }
    }
    match outputs.raw {
        // This job is done reading it: to disk, and out of the page cache.
        true => {
            let _ = syncer.send(ToDisk::Read(img, file));
        }
        false => fs::remove_file(&img).map_err(io_error(&img))?,
    }
    Ok(StagedNode {
        files,
        image_bytes: done.image_bytes,
        image_sha256: raw_digest,
        copy,
        shared_chunks: match copy {
            CopyKind::Reflink | CopyKind::Around => (
                shared_chunks,
                len.div_ceil(crate::compress::CHUNK as u64) as usize,
            ),
            _ => (0, 0),
        },
        remembered,
        taken: false,
        key,
        kinds,
    })
}

/// The kinds of a node's raw image and block map ([`super::unchanged::file_key`]); the other formats
/// name their encoder ([`super::outputs::NodeOutput::kind`]).
const KIND_RAW: &str = "img";
const KIND_BMAP: &str = "bmap";

/// The files a node gets, with their kinds, in the order the build makes them.
fn node_files(node: &str, outputs: &NodeOutputs) -> Vec<(String, String)> {
    let mut names = Vec::new();
    if outputs.raw {
        names.push((format!("{node}.img"), KIND_RAW.to_string()));
    }
    if outputs.bmap {
        names.push((format!("{node}.img.bmap"), KIND_BMAP.to_string()));
    }
    for o in &outputs.extra {
        names.push((o.file_name(node), o.kind()));
    }
    names
}

/// The node image `img` made from the image `source` (its role image, or the upstream base)
/// with `layers` applied one after the other: a reflink with the layers written into it where
/// the filesystem shares blocks; else the layers written over the source into the new file,
/// each seeing those before, nothing copied first ([`edit_over`]); the source's data is then
/// copied around what they wrote by the caller, with `O_DIRECT` ([`Over`]: no page cache for
/// the node's data, which its digests read from the source): the source's bytes are copied
/// once, and the chunks nothing was written into are known to be the source's without
/// comparing them. A layer that needs the root partition grown gets the image filled in
/// first, and it and the layers after it are edited in place, their growth and writes
/// recorded ([`Record`]).
fn made_over(
    source: &Path,
    img: &Path,
    layers: &[&crate::plan::Plan],
    role: &str,
    progress: Option<&dyn Progress>,
) -> Result<Made, BuildError> {
    let from = fs::File::open(source).map_err(io_error(source))?;
    let top = output::new_image_file(img, IMAGE_MODE).map_err(io_error(img))?;
    // The layers edited in place, the ranges they write recorded from `written` on (`None`:
    // not recorded).
    let in_place = |layers: &[&crate::plan::Plan], mut written: Option<Record>| {
        let mut done = None;
        for (i, plan) in layers.iter().enumerate() {
            let (d, w) = layer_step(layers.len() - i, role, progress, img, || {
                edit_recorded(img, written.as_ref(), plan)
            })?;
            (done, written) = (Some(d), w);
        }
        Ok::<_, BuildError>((done, written))
    };
    if output::reflink(&from, &top).map_err(io_error(img))? {
        let (done, written) = in_place(layers, Some(Record::default()))?;
        return made(CopyKind::Reflink, done, None, written, img);
    }
    let top = Arc::new(top);
    let mut written: Vec<(u64, u64)> = Vec::new();
    let mut done = None;
    for (i, plan) in layers.iter().enumerate() {
        let over = layer_step(layers.len() - i, role, progress, source, || {
            edit_over(source, top.clone(), &written, img, plan)
        })?;
        match over {
            Some((applied, w)) => (done, written) = (Some(applied), w),
            None => {
                // This layer grows the root partition, which needs the whole image.
                output::fill_around(&from, &top, &written).map_err(io_error(img))?;
                let record = Record {
                    growths: Vec::new(),
                    written,
                };
                let (done, record) = in_place(&layers[i..], Some(record))?;
                return made(CopyKind::Sparse, done, None, record, img);
            }
        }
    }
    let over = Over {
        source: source.to_path_buf(),
        from,
        top,
        written,
    };
    made(CopyKind::Around, done, Some(over), None, img)
}

/// A layer's edit, shown as the `common` or `role` payload step when it is not the node's own
/// (`left`: the layers left, this one included; the node's is the last).
fn layer_step<T>(
    left: usize,
    role: &str,
    progress: Option<&dyn Progress>,
    from: &Path,
    run: impl FnOnce() -> Result<T, BuildError>,
) -> Result<T, BuildError> {
    match left {
        3 => step(progress, Task::Payload("common"), from, run),
        2 => step(progress, Task::Payload(role), from, run),
        _ => run(),
    }
}

fn made(
    copy: CopyKind,
    done: Option<Applied>,
    over: Option<Over>,
    written: Option<Record>,
    img: &Path,
) -> Result<Made, BuildError> {
    let done = done
        .ok_or_else(|| io_error(img)(io::Error::other("no layer to write into the node image")))?;
    Ok(Made {
        copy,
        done,
        over,
        written,
    })
}

/// What a node's job tells the syncer about its raw image.
enum ToDisk {
    /// Its layer is written: start writing it to disk.
    Written(PathBuf, fs::File),
    /// The job has read it for the last time (digests, other formats): sync it and drop its
    /// pages from the page cache ([`output::sync_and_drop`]).
    Read(PathBuf, fs::File),
}

/// Writes the node images it is sent to disk: each one's writeback is started when its layer
/// is written (the submission waits for the disk's queue here, not in a node's job), and it is
/// synced and dropped from the page cache once its job has read it. The disk then writes one
/// image while the next is copied and hashed, no job waits for it, and the page cache holds
/// about the images being built, not all of them; the kernel's dirty-page limits hold the jobs
/// back if the disk falls behind.
fn sync_images(images: mpsc::Receiver<ToDisk>) -> Result<(), BuildError> {
    for m in images {
        match m {
            ToDisk::Written(path, f) => {
                output::start_writeback(&f, 0, 0).map_err(io_error(&path))?
            }
            ToDisk::Read(path, f) => output::sync_and_drop(&f).map_err(io_error(&path))?,
        }
    }
    Ok(())
}

/// What the node images are made from.
pub(super) enum Images<'a> {
    /// The role images, and the keys their nodes' digests are remembered by.
    Roles(&'a RoleImages),
    /// The upstream base, for a build of one node: its layers are all written over it
    /// ([`Source::Base`]); the input's SHA-256, when the node's digests are to be remembered
    /// by it.
    Base {
        path: &'a Path,
        sha256: Option<&'a str>,
    },
}

/// Builds the nodes `jobs` at a time; the first error stops the others from starting new
/// nodes and is returned.
pub(super) fn build_nodes(
    plan: &BuildPlan,
    images: &Images<'_>,
    dir: &Path,
    opts: &BuildOptions,
    earlier: Option<&Earlier>,
    progress: Option<&dyn Progress>,
) -> Result<Vec<Option<StagedNode>>, BuildError> {
    let (empty, no_keys) = (BTreeMap::new(), BTreeMap::new());
    let cache = opts.cache_dir.as_path();
    let (roles, keys, base) = match images {
        Images::Roles(r) => (&r.paths, &r.keys, None),
        Images::Base { path, sha256 } => (&empty, &no_keys, Some((*path, *sha256))),
    };
    // The base, shared with the only node's image where nothing was written over it.
    let base_image = match base {
        Some((b, _)) => {
            let f = fs::File::open(b).map_err(io_error(b))?;
            Some(RoleImage::new(f, 1).map_err(io_error(b))?)
        }
        None => None,
    };
    let nodes_of = |key: &str| {
        plan.nodes
            .iter()
            .filter(|n| role_key(n.role) == key)
            .count()
    };
    // Each role image with more than one node built from it, open, for its nodes to compare
    // with; a role's only node takes the role image itself.
    let mut shared: BTreeMap<&'static str, RoleImage> = BTreeMap::new();
    if opts.outputs.reuse {
        for (key, path) in roles {
            let nodes = nodes_of(key);
            if nodes > 1 {
                let f = fs::File::open(path).map_err(io_error(path))?;
                shared.insert(key, RoleImage::new(f, nodes).map_err(io_error(path))?);
            }
        }
    }
    let job = Job {
        dir,
        outputs: &opts.outputs,
        earlier,
        progress,
    };
    let (tx, rx) = mpsc::channel();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<StagedNode, BuildError>>>> =
        Mutex::new((0..plan.nodes.len()).map(|_| None).collect());
    let work = |tx: mpsc::Sender<ToDisk>| {
        while !failed.load(Ordering::SeqCst) {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(node) = plan.nodes.get(i) else { break };
            let key = role_key(node.role);
            // What names the bytes the node is made from, for its digests to be remembered by.
            let (source, named) = match (base, &base_image) {
                (Some((base, sha256)), Some(image)) => {
                    let Some(layer) = plan.roles.iter().find(|r| r.role == node.role) else {
                        continue;
                    };
                    let source = Source::Base {
                        base,
                        layers: [&plan.common, &layer.plan],
                        image,
                        cache,
                    };
                    (source, sha256)
                }
                _ => {
                    let Some(role_img) = roles.get(key) else {
                        continue;
                    };
                    let source = Source::Role {
                        img: role_img,
                        alone: nodes_of(key) == 1,
                        role: shared.get(key),
                    };
                    (source, keys.get(key).map(String::as_str))
                }
            };
            let memo = named.map(|n| (cache, n));
            let r = build_node(node, &source, memo, job, &tx);
            if r.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
        }
    };
    let n = jobs(opts, plan.nodes.len());
    let synced = std::thread::scope(|s| {
        let syncer = s.spawn(move || sync_images(rx));
        // Each job has a sender; when the last job ends, the syncer finishes what it was
        // sent and ends.
        std::thread::scope(|s| {
            for _ in 1..n {
                let (work, tx) = (&work, tx.clone());
                s.spawn(move || work(tx));
            }
            work(tx);
        });
        syncer.join()
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::new();
    for r in results {
        out.push(match r {
            Some(r) => Some(r?),
            None => None,
        });
    }
    match synced {
        Ok(r) => r?,
        Err(_) => {
            return Err(io_error(dir)(io::Error::other(
                "the thread writing the images to disk stopped",
            )))
        }
    }
    Ok(out)
}

/// Said of nodes whose files were taken from the build before ([`super::unchanged`]).
const UNCHANGED: &str = "unchanged since the last build into this output directory (the files \
                         it left there kept, as hard links, not written again)";

impl BuildReport {
    /// One line on how the node images were made from their role images, when any were.
    pub fn copies_line(&self) -> Option<String> {
        use crate::output::CopyKind;
        let count = |k: CopyKind| self.copies.iter().filter(|c| **c == k).count();
        let remembered = "digests remembered from an earlier build of the same bytes, not \
                          taken again";
        if self.from_base {
            let (shared, all) = self.shared_chunks;
            let line = self.copies.first().map(|c| match c {
                CopyKind::Around => format!(
                    "copies: the only node written over the upstream image, layer after layer, \
                     and its data copied around the edits ({shared} of the {all} 4 MiB chunks \
                     untouched{})",
                    if self.remembered > 0 {
                        ""
                    } else {
                        ", hashed from the upstream image"
                    }
                ),
                CopyKind::Reflink => "copies: the only node a reflink of the upstream image, \
                                      its layers written into it"
                    .to_string(),
                _ => "copies: the only node a whole copy of the upstream image (its root \
                      partition grows), its layers written into it"
                    .to_string(),
            });
            if self.taken > 0 {
                return Some(format!("copies: the only node {UNCHANGED}"));
            }
            return line.map(|l| match self.remembered {
                0 => l,
                _ => format!("{l}; its {remembered}"),
            });
        }
        let mut parts = Vec::new();
        let reflinks = count(CopyKind::Reflink);
        if reflinks > 0 {
            let (shared, all) = self.shared_chunks;
            parts.push(format!(
                "{reflinks} by reflink ({shared} of their {all} 4 MiB chunks still the role \
                 image's blocks, read from it)"
            ));
        }
        let around = count(CopyKind::Around);
        if around > 0 {
            let (shared, all) = self.shared_chunks;
            parts.push(format!(
                "{around} written over their role image and its data copied around the edits \
                 ({shared} of their {all} 4 MiB chunks untouched, hashed from the role image; \
                 on btrfs or XFS with reflink=1 a copy shares its role image's blocks)"
            ));
        }
        let sparse = count(CopyKind::Sparse);
        if sparse > 0 {
            parts.push(format!(
                "{sparse} copied whole (the output directory's filesystem has no reflinks; on \
                 btrfs or XFS with reflink=1 a copy shares its role image's blocks)"
            ));
        }
        let renamed = count(CopyKind::Renamed);
        if renamed > 0 {
            parts.push(format!(
                "{renamed} the role image itself (its role's only node)"
            ));
        }
        let all = self.copies.len() + self.taken;
        if self.remembered > 0 {
            parts.push(format!(
                "{} of {all} with their {remembered}",
                self.remembered
            ));
        }
        if self.taken > 0 {
            parts.push(format!("{} of {all} {UNCHANGED}", self.taken));
        }
        (!parts.is_empty()).then(|| format!("copies: {}", parts.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_default_to_the_cpus_and_never_exceed_the_nodes() {
        let mut o = BuildOptions {
            spec_path: PathBuf::new(),
            catalog: None,
            out_dir: PathBuf::new(),
            nodes: vec![],
            token: None,
            artifacts_dir: None,
            allow_unpinned: false,
            mirror: None,
            cache_dir: PathBuf::new(),
            epoch: 0,
            now: 0,
            new_cluster: false,
            jobs: 0,
            outputs: NodeOutputs::default(),
        };
        assert!(jobs(&o, 64) >= 1);
        assert_eq!(jobs(&o, 1), 1);
        o.jobs = 3;
        assert_eq!(jobs(&o, 10), 3);
        assert_eq!(jobs(&o, 2), 2);
        assert_eq!(jobs(&o, 0), 1);
    }
}
