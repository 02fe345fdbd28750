//! How the library tells its caller about long steps (checksumming, decompressing,
//! downloading), without knowing whether anything is drawn.
//!
//! The library never prints: the binary implements [`Progress`] (bars on a terminal, a plain
//! line per download otherwise) and passes it down; tests record the calls.

/// A long step the library reports on. Steps that run at once (downloads, nodes built in
/// parallel) have distinct labels, so a reporter can key its bars by [`Task::label`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Task<'a> {
    /// Computing the SHA-256 of an input image.
    Checksum,
    /// Decompressing an input image into the cache.
    Decompress,
    /// Downloading a file (an artifact or an image), by its upstream file name.
    Download(&'a str),
    /// Writing the node payload and a role's layer into a copy of the base image, by role.
    Payload(&'a str),
    /// Writing one node's image (a copy of its role's image and its own layer), by node name.
    Copy(&'a str),
    /// Compressing one output image, by its file name.
    Compress(&'a str),
    /// Writing an image's mapped ranges to a card (`piforge flash`).
    Write,
    /// Reading them back and comparing their checksums.
    Verify,
}

impl Task<'_> {
    /// A short label for a bar or a log line: `checksum`, `decompress`, the downloaded file's
    /// name, `payload <role>`, `copy <node>`, `compress <file>`.
    pub fn label(&self) -> String {
        match self {
            Task::Checksum => "checksum".into(),
            Task::Decompress => "decompress".into(),
            Task::Download(name) => name.to_string(),
            Task::Payload(role) => format!("payload {role}"),
            Task::Copy(node) => format!("copy {node}"),
            Task::Compress(file) => format!("compress {file}"),
            Task::Write => "write".into(),
            Task::Verify => "verify".into(),
        }
    }
}

/// Receives progress reports. Calls for one task come in the order `begin`, `advance`...,
/// `finish`; a task may begin again (a retried download) and may never finish (an error
/// ends the operation). `finish` means the step succeeded: a download is verified and in
/// the cache. Implementations must be cheap: `advance` is called after every buffer.
pub trait Progress: Send + Sync {
    /// `task` starts; `total` bytes when known.
    fn begin(&self, task: Task<'_>, total: Option<u64>);
    /// `done` bytes of `task` so far (a position, not an increment).
    fn advance(&self, task: Task<'_>, done: u64);
    /// `task` completed successfully.
    fn finish(&self, task: Task<'_>);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records every call as `(event, label, number)`; `number` is the total for `begin`
    /// (`u64::MAX` when unknown), the position for `advance`, 0 for `finish`.
    #[derive(Default)]
    pub(crate) struct Recorder(pub Mutex<Vec<(&'static str, String, u64)>>);

    impl Progress for Recorder {
        fn begin(&self, task: Task<'_>, total: Option<u64>) {
            self.push("begin", task, total.unwrap_or(u64::MAX));
        }
        fn advance(&self, task: Task<'_>, done: u64) {
            self.push("advance", task, done);
        }
        fn finish(&self, task: Task<'_>) {
            self.push("finish", task, 0);
        }
    }

    impl Recorder {
        fn push(&self, event: &'static str, task: Task<'_>, n: u64) {
            if let Ok(mut v) = self.0.lock() {
                v.push((event, task.label(), n));
            }
        }

        pub(crate) fn calls(&self) -> Vec<(&'static str, String, u64)> {
            self.0.lock().map(|v| v.clone()).unwrap_or_default()
        }
    }

    #[test]
    fn labels() {
        assert_eq!(Task::Checksum.label(), "checksum");
        assert_eq!(Task::Decompress.label(), "decompress");
        assert_eq!(Task::Download("kubeadm").label(), "kubeadm");
        assert_eq!(Task::Copy("pi-w-1").label(), "copy pi-w-1");
        assert_eq!(Task::Payload("worker").label(), "payload worker");
        assert_eq!(
            Task::Compress("pi-w-1.img.xz").label(),
            "compress pi-w-1.img.xz"
        );
        let r = Recorder::default();
        r.begin(Task::Download("x"), None);
        r.advance(Task::Download("x"), 3);
        r.finish(Task::Download("x"));
        assert_eq!(
            r.calls(),
            [
                ("begin", "x".to_string(), u64::MAX),
                ("advance", "x".to_string(), 3),
                ("finish", "x".to_string(), 0)
            ]
        );
    }
}
