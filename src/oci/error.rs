use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the OCI module: one sentence each, naming the image and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not an image reference with a registry, a repository and a tag (such as registry.k8s.io/pause:3.10.1)")]
    BadReference(String),

    #[error("{url} failed with HTTP status {status}")]
    HttpStatus { url: String, status: u16 },

    #[error("{url} failed after {attempts} attempt(s): {reason}")]
    Transport {
        url: String,
        attempts: u32,
        reason: String,
    },

    #[error("{url} asks for a token from {realm}, which is neither https nor on this machine (127.0.0.1, ::1, localhost)")]
    InsecureRealm { url: String, realm: String },

    #[error("{url} answered 401 without a usable `WWW-Authenticate: Bearer realm=...` header")]
    NoBearerChallenge { url: String },

    #[error("{what} of {image} is larger than {limit} bytes")]
    TooLarge {
        image: String,
        what: String,
        limit: u64,
    },

    #[error("{what} of {image} is not valid: {reason}")]
    BadManifest {
        image: String,
        what: String,
        reason: String,
    },

    #[error("{image} has no linux/arm64 image")]
    NoArm64 { image: String },

    #[error("blob {digest} of {image} has SHA-256 {actual}; the download was deleted")]
    BlobMismatch {
        image: String,
        digest: String,
        actual: String,
    },

    #[error("{} ({}) is now {}, but {pinned_by} pins {}; refusing it (`piforge fetch --update` accepts a new digest)", .changed.image, .changed.what, .changed.now, .changed.pinned)]
    DigestChanged { changed: Changed, pinned_by: String },

    #[error("{what} {path} is not a valid OCI image layout: {reason}")]
    BadLayout {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            context,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Raised by a pull whose tag no longer resolves to the digest the caller pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub image: String,
    pub what: &'static str,
    pub pinned: String,
    pub now: String,
}
