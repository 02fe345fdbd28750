//! The output formats of a node image (`build --format img|xz|zst`), written into the build's
//! staging directory beside each raw node image: the bmap file ([`crate::bmap`], made by the
//! build itself in its digest pass over the image: [`NodeOutputs::bmap`]), the compressed copies
//! as [`NodeOutput`]s (sharing compressed chunks across nodes:
//! [`crate::compress`]), and the Raspberry Pi Imager list of every node ([`crate::os_list`]).

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::manifest::Manifest;
use super::outputs::{NodeImage, NodeOutput, NodeOutputs, StagedFile};
use super::{io_error, BuildError};
use crate::compress::{self, BlockStore, Codec};
use crate::os_list;
use crate::progress::Task;

/// One output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// The raw image, sparse.
    Img,
    Xz,
    Zst,
}

impl Format {
    /// The format's name on the command line (`--format`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Img => "img",
            Format::Xz => "xz",
            Format::Zst => "zst",
        }
    }
}

/// The file name of the Raspberry Pi Imager list in the output directory.
pub const OS_LIST: &str = "os_list.json";

/// The compressed formats among `formats`, each with its plan for `threads` threads (0: one
/// per CPU) within an equal share of [`compress::MEMORY_BUDGET`] (see [`compress::plan`]).
pub fn compression_plans(formats: &[Format], threads: usize) -> Vec<(Codec, compress::Plan)> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let codecs: Vec<Codec> = [(Format::Xz, Codec::Xz), (Format::Zst, Codec::Zstd)]
        .into_iter()
        .filter(|(f, _)| formats.contains(f))
        .map(|(_, c)| c)
        .collect();
    let share = compress::MEMORY_BUDGET / codecs.len().max(1) as u64;
    codecs
        .into_iter()
        .map(|c| (c, compress::plan(c, threads, share)))
        .collect()
}

/// One line per compressed format for which `--threads N` (given, not the default) was reduced
/// to keep compression within its memory.
pub fn threads_notes(formats: &[Format], threads: usize) -> Vec<String> {
    if threads == 0 {
        return Vec::new();
    }
    compression_plans(formats, threads)
        .into_iter()
        .filter(|(_, p)| p.workers < threads)
        .map(|(c, p)| {
            format!(
                "--threads {threads}: {} compresses on {} threads, each encoder needing about \
                 {} MiB, to stay within {} MiB",
                c.extension(),
                p.workers,
                c.encoder_memory().div_ceil(1 << 20),
                compress::MEMORY_BUDGET >> 20
            )
        })
        .collect()
}

/// What a build writes per node for `formats` (`img` when empty): the raw image only with
/// `img`; a `<node>.img.bmap` always; each compressed format on `threads` threads (0: one per
/// CPU; fewer when their memory would not fit, see [`compression_plans`]; the bytes do not
/// depend on it), its chunks shared across the build's nodes; and `os_list.json` naming the
/// files under `base_url` (`None`: the output directory as a `file://` URL).
pub fn node_outputs(
    formats: &[Format],
    threads: usize,
    base_url: Option<&str>,
) -> Result<NodeOutputs, BuildError> {
    let mut extra: Vec<Arc<dyn NodeOutput>> = Vec::new();
    for (c, plan) in compression_plans(formats, threads) {
        extra.push(Arc::new(Compressed {
            store: BlockStore::with_plan(c, plan),
            fresh: AtomicU64::new(0),
            chunks: AtomicU64::new(0),
        }));
    }
    Ok(NodeOutputs {
        raw: formats.is_empty() || formats.contains(&Format::Img),
        bmap: true,
        extra,
        reuse: true,
        remember: true,
        os_list: Some(match base_url {
            None => String::new(),
            Some(u) => check_base_url(u)?,
        }),
    })
}

/// `--base-url`: an absolute URL (Imager fetches a URL without a scheme as a remote one and
/// fails), made a directory (ending in `/`).
fn check_base_url(u: &str) -> Result<String, BuildError> {
    let scheme_ok = u.split_once("://").is_some_and(|(s, rest)| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !rest.is_empty()
    });
    if !scheme_ok || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(BuildError::BadBaseUrl(u.to_string()));
    }
    Ok(if u.ends_with('/') {
        u.to_string()
    } else {
        format!("{u}/")
    })
}

/// `<node>.img.xz` or `.img.zst`, its chunks shared with the build's other nodes.
struct Compressed {
    store: BlockStore,
    /// This build's chunks compressed by it, and all of them.
    fresh: AtomicU64,
    chunks: AtomicU64,
}

impl NodeOutput for Compressed {
    fn file_name(&self, node: &str) -> String {
        format!("{node}.img.{}", self.store.codec().extension())
    }

    fn kind(&self) -> String {
        self.store.codec().encoder_id()
    }

    fn use_cache(&self, cache: Option<&Path>) {
        self.store.keep_in(cache);
    }

    fn write(&self, image: &NodeImage<'_>, out: &mut StagedFile) -> io::Result<()> {
        // `compress <node>.img.xz`: its size the raw image's, its position the raw bytes
        // compressed so far (xz takes minutes on a real image: the bar's ETA is the point).
        let name = self.file_name(image.node);
        let task = Task::Compress(&name);
        if let Some(p) = image.progress {
            p.begin(task, Some(image.bytes));
        }
        let readback = Arc::new(out.reader()?);
        let keys = image
            .sharing
            .map(|sharing| super::reuse::NodeKeys { sharing });
        let s = compress::compress_stream(
            &self.store,
            image.file,
            out,
            readback,
            keys.as_ref().map(|k| k as &dyn compress::ChunkKeys),
            &|done| {
                if let Some(p) = image.progress {
                    p.advance(task, done);
                }
            },
        )?;
        self.fresh.fetch_add(s.fresh_chunks, Ordering::Relaxed);
        self.chunks.fetch_add(s.chunks, Ordering::Relaxed);
        if let Some(p) = image.progress {
            p.finish(task);
        }
        Ok(())
    }

    fn build_done(&self) -> Option<String> {
        self.store.clear();
        let (fresh, chunks) = (
            self.fresh.swap(0, Ordering::Relaxed),
            self.chunks.swap(0, Ordering::Relaxed),
        );
        (chunks > 0).then(|| {
            format!(
                "compressed: {} {fresh} of {chunks} 4 MiB chunks compressed by this build, the \
                 rest copied (the same chunk compressed earlier in this build, or kept in the \
                 cache by an earlier one)",
                self.store.codec().extension()
            )
        })
    }
}

/// `os_list.json` for the nodes the manifest lists (built now or kept): each entry downloads
/// the node's xz file if there is one, else its zst, else its raw image. `base_url` empty:
/// the output directory `out_dir` as a `file://` URL.
pub(super) fn os_list(m: &Manifest, base_url: &str, out_dir: &Path) -> Result<String, BuildError> {
    let base = if base_url.is_empty() {
        let dir = std::fs::canonicalize(out_dir).map_err(io_error(out_dir))?;
        os_list::file_uri_dir(&dir)
    } else {
        base_url.to_string()
    };
    let mut entries = Vec::new();
    for n in &m.nodes {
        let by_name = |name: String| n.files.iter().find(|f| f.name == name);
        let raw = by_name(format!("{}.img", n.name));
        let Some(download) = by_name(format!("{}.img.xz", n.name))
            .or_else(|| by_name(format!("{}.img.zst", n.name)))
            .or(raw)
        else {
            continue;
        };
        // The raw image: recorded by the build, or (an older manifest) its file's entry.
        let Some((extract_bytes, extract_sha256)) = n
            .raw_image
            .as_ref()
            .map(|r| (r.bytes, r.sha256.clone()))
            .or_else(|| raw.map(|f| (f.bytes, f.sha256.clone())))
        else {
            continue;
        };
        entries.push(os_list::Entry {
            name: n.name.clone(),
            description: format!("piforge node image {} ({})", n.name, n.role),
            file: download.name.clone(),
            download_bytes: download.bytes,
            download_sha256: download.sha256.clone(),
            extract_bytes,
            extract_sha256,
            bmap: by_name(format!("{}.img.bmap", n.name)).map(|f| f.name.clone()),
        });
    }
    Ok(os_list::render(&entries, &base, m.epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_stays_within_its_memory_whatever_the_thread_count() {
        for formats in [
            vec![Format::Xz],
            vec![Format::Zst],
            vec![Format::Img, Format::Xz, Format::Zst],
        ] {
            for threads in [1, 2, 4, 32, 1000] {
                let plans = compression_plans(&formats, threads);
                let total: u64 = plans.iter().map(|(_, p)| p.memory).sum();
                for (c, p) in &plans {
                    assert!(p.workers >= 1 && p.workers <= threads, "{c:?} {p:?}");
                    assert_eq!(p.chunks_in_flight, 2 * p.workers);
                }
                // One worker of each format always runs, even past the budget.
                if plans.iter().all(|(_, p)| p.workers > 1) {
                    assert!(
                        total <= compress::MEMORY_BUDGET,
                        "{formats:?} {threads}: {plans:?}"
                    );
                }
                let notes = threads_notes(&formats, threads);
                let reduced = plans.iter().filter(|(_, p)| p.workers < threads).count();
                assert_eq!(notes.len(), reduced, "{notes:?}");
                assert!(notes.iter().all(|n| !n.contains('\n')));
            }
        }
        // liblzma's own figure for one xz encoder of a 4 MiB-dictionary preset 6 chain.
        let xz = Codec::Xz.encoder_memory();
        assert!(xz > 20 << 20 && xz < 80 << 20, "{xz}");
        // xz alone: a few encoders, not 32.
        let (_, p) = compression_plans(&[Format::Xz], 32)[0];
        assert!(p.workers >= 2 && p.workers < 8, "{p:?}");
        assert_eq!(threads_notes(&[Format::Xz], 32).len(), 1);
        assert!(threads_notes(&[Format::Xz], 1).is_empty());
        // The default (one per CPU) is reduced silently.
        assert!(threads_notes(&[Format::Xz], 0).is_empty());
    }

    #[test]
    fn base_urls_are_absolute_directories() {
        assert_eq!(
            check_base_url("https://example.com/dist").unwrap(),
            "https://example.com/dist/"
        );
        assert_eq!(check_base_url("file:///srv/d/").unwrap(), "file:///srv/d/");
        for bad in [
            "dist/",
            "example.com/dist",
            "://x",
            "https://",
            "http://a b/",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad}");
        }
    }
}
