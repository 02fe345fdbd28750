//! The output formats of a node image (`build --format img|xz|zst`): its bmap file, its
//! compressed copies (sharing compressed chunks across nodes: [`crate::compress`]), and the
//! Raspberry Pi Imager list of every node ([`crate::os_list`]).

use std::path::{Path, PathBuf};

use super::{io_error, BuildError, BuildOptions, BuiltNode};
use crate::compress::{self, BlockStore, Codec};
use crate::os_list;

/// One output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// The raw image, sparse.
    Img,
    Xz,
    Zst,
}

/// A file written for a node, with its size and SHA-256 (for SHA256SUMS and os_list.json).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

impl OutputFile {
    pub fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// The compressed-chunk stores of a build, one per compressed format asked for.
pub(super) struct Encoders {
    stores: Vec<BlockStore>,
}

impl Encoders {
    pub(super) fn new(opts: &BuildOptions) -> Encoders {
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        let mut stores = Vec::new();
        for (f, c) in [(Format::Xz, Codec::Xz), (Format::Zst, Codec::Zstd)] {
            if opts.formats.contains(&f) {
                stores.push(BlockStore::new(c, threads));
            }
        }
        Encoders { stores }
    }

    /// Writes `<out_dir>/<node>.img.bmap` and each compressed format of the node image at
    /// `image`, mode `mode`; returns them in that order.
    pub(super) fn write_node(
        &self,
        image: &Path,
        out_dir: &Path,
        node: &str,
        mode: u32,
    ) -> Result<Vec<OutputFile>, BuildError> {
        let mut files = Vec::new();
        let bmap_path = out_dir.join(format!("{node}.img.bmap"));
        let b = crate::bmap::write(image, &bmap_path).map_err(io_error(&bmap_path))?;
        files.push(OutputFile {
            path: bmap_path,
            bytes: b.bytes,
            sha256: b.sha256,
        });
        for store in &self.stores {
            let dest = out_dir.join(format!("{node}.img.{}", store.codec().extension()));
            let w = compress::write(store, image, &dest, mode).map_err(io_error(&dest))?;
            files.push(OutputFile {
                path: dest,
                bytes: w.bytes,
                sha256: w.sha256,
            });
        }
        Ok(files)
    }
}

/// Writes `<out_dir>/os_list.json` for the nodes of this build: each entry downloads the
/// node's xz file if there is one, else its zst, else its raw image.
pub(super) fn write_os_list(
    opts: &BuildOptions,
    nodes: &[BuiltNode],
) -> Result<PathBuf, BuildError> {
    let path = opts.out_dir.join("os_list.json");
    let dir = std::fs::canonicalize(&opts.out_dir).map_err(io_error(&opts.out_dir))?;
    let mut entries = Vec::new();
    for n in nodes {
        let by_ext = |ext: &str| n.outputs.iter().find(|f| f.file_name().ends_with(ext));
        let (file, bytes, sha256) = match by_ext(".img.xz").or_else(|| by_ext(".img.zst")) {
            Some(f) => (f.file_name(), f.bytes, f.sha256.clone()),
            None => (format!("{}.img", n.name), n.bytes, n.sha256.clone()),
        };
        entries.push(os_list::Entry {
            name: n.name.clone(),
            description: format!("piforge node image {} ({})", n.name, n.role),
            file,
            download_bytes: bytes,
            download_sha256: sha256,
            extract_bytes: n.bytes,
            extract_sha256: n.sha256.clone(),
            bmap: by_ext(".img.bmap").map(|f| f.file_name()),
        });
    }
    let text = os_list::render(&entries, &os_list::file_uri_dir(&dir), opts.epoch);
    let mut f = crate::output::AtomicFile::create(&path).map_err(io_error(&path))?;
    use std::io::Write as _;
    f.file()
        .write_all(text.as_bytes())
        .and_then(|_| f.commit().map(|_| ()))
        .map_err(io_error(&path))?;
    Ok(path)
}
