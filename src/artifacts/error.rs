use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where an expected digest came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestSource {
    /// The lock file at this path.
    Lock(PathBuf),
    /// The upstream checksum file at this URL.
    Upstream(String),
}

impl std::fmt::Display for DigestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DigestSource::Lock(p) => write!(f, "the lock file {}", p.display()),
            DigestSource::Upstream(url) => write!(f, "the checksum file {url}"),
        }
    }
}

/// What a network error says to do without the network: the three ways piforge takes files
/// from elsewhere, in one sentence.
pub const OFFLINE: &str = "without network access, pass --artifacts DIR or set `artifacts: DIR` \
    in cluster.yaml (a directory holding the files under their upstream names), or download \
    through a reachable mirror with --mirror URL";

/// Errors of the artifacts module. Each message is one sentence naming the URL or file
/// (and, for a digest mismatch, both digests).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `at` is `file:line:col` (or the file alone); the message names the table.
    #[error("{at}: {msg}")]
    Catalog { at: String, msg: String },

    #[error(
        "Kubernetes version {requested} is not in the artifact catalog (supported: {supported})"
    )]
    UnsupportedVersion {
        requested: String,
        supported: String,
    },

    #[error("lock file {path} is invalid: {msg}")]
    Lock { path: PathBuf, msg: String },

    #[error("mirror {0:?} is not an http:// or https:// base URL")]
    BadMirror(String),

    #[error("GET {url} failed with HTTP status {status}; {OFFLINE}")]
    HttpStatus { url: String, status: u16 },

    #[error("GET {url} failed after {attempts} attempt(s): {reason}; {OFFLINE}")]
    Transport {
        url: String,
        attempts: u32,
        reason: String,
    },

    #[error("{file} from {url} has SHA-256 {actual}, but {expected_from} says {expected}; the download was deleted")]
    DigestMismatch {
        file: String,
        url: String,
        expected: String,
        actual: String,
        expected_from: DigestSource,
    },

    #[error("{path} has SHA-256 {actual}, but the lock file {lock} says {expected} for {url}")]
    LocalMismatch {
        path: PathBuf,
        url: String,
        expected: String,
        actual: String,
        lock: PathBuf,
    },

    #[error("checksum file {url} has no SHA-256 for {file}")]
    NoChecksumInFile { url: String, file: String },

    #[error("{name} ({url}) has no upstream checksum and no entry in the lock file {lock}; pass --allow-unpinned to record its digest on this fetch")]
    NoUpstreamChecksum {
        name: String,
        url: String,
        lock: PathBuf,
    },

    #[error("{path} ({name}) has no entry in the lock file {lock}, so nothing says which digest it must have; pass --allow-unpinned to record its SHA-256 as the file is now (for files you trust), or put beside the spec the piforge.lock of a fetch that verified them upstream")]
    NotInLock {
        name: String,
        path: PathBuf,
        lock: PathBuf,
    },

    #[error("{name} is missing from {dir}: expected the upstream file {file} (from {url})")]
    MissingFile {
        name: String,
        dir: PathBuf,
        file: String,
        url: String,
    },

    #[error("{path} is a symbolic link; --artifacts DIR must hold the files themselves (a link is not followed)")]
    LinkedArtifact { path: PathBuf },
    #[error("archive {archive}: entry {entry:?} {reason}")]
    ArchiveEntry {
        archive: PathBuf,
        entry: String,
        reason: String,
    },

    #[error("archive {archive} cannot be read: {source}")]
    Archive {
        archive: PathBuf,
        source: std::io::Error,
    },

    #[error(transparent)]
    Oci(#[from] crate::oci::Error),

    #[error("{image} ({path}) has no entry in the lock file {lock}; run `piforge fetch` or pass --allow-unpinned")]
    ImageNotInLock {
        image: String,
        path: PathBuf,
        lock: PathBuf,
    },

    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            context,
            path: path.to_path_buf(),
            source,
        }
    }
}
