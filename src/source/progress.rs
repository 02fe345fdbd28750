//! A `Read` adapter that reports how much of the input has been consumed.
//!
//! It knows nothing of decoders or terminals: the caller passes a [`Progress`] and decides
//! whether to draw anything (for example only when stderr is a terminal).

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::Arc;

use crate::progress::{Progress, Task};

/// Wraps the input file: counts the bytes read (and follows seeks), reports them to the hook,
/// and marks I/O errors as the input's own, so that they are not mistaken for corrupt data.
/// Reports `begin(task, total)` when made, and the position after every read; the caller
/// reports `finish` once the whole step has succeeded.
pub struct ProgressReader<R> {
    inner: R,
    progress: Option<Arc<dyn Progress>>,
    task: Task<'static>,
    done: u64,
}

impl<R> ProgressReader<R> {
    pub fn new(
        inner: R,
        progress: Option<Arc<dyn Progress>>,
        task: Task<'static>,
        total: u64,
    ) -> Self {
        if let Some(p) = &progress {
            p.begin(task, Some(total));
        }
        ProgressReader {
            inner,
            progress,
            task,
            done: 0,
        }
    }

    fn report(&self) {
        if let Some(p) = &self.progress {
            p.advance(self.task, self.done);
        }
    }
}

impl<R: Read> Read for ProgressReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(InputError::wrap)?;
        self.done += n as u64;
        self.report();
        Ok(n)
    }
}

impl<R: Seek> Seek for ProgressReader<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.done = self.inner.seek(pos).map_err(InputError::wrap)?;
        Ok(self.done)
    }
}

/// An I/O error of the input file itself (as opposed to bad data found by a decoder).
#[derive(Debug)]
pub(crate) struct InputError(io::Error);

impl InputError {
    fn wrap(e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::Interrupted {
            return e;
        }
        io::Error::new(e.kind(), InputError(e))
    }

    /// The input's own I/O error inside `e`, if `e` is one.
    pub(crate) fn unwrap_from(e: io::Error) -> Result<io::Error, io::Error> {
        let is_input = e.get_ref().is_some_and(|inner| inner.is::<InputError>());
        if !is_input {
            return Err(e);
        }
        match e.into_inner().map(|inner| inner.downcast::<InputError>()) {
            Some(Ok(input)) => Ok(input.0),
            Some(Err(other)) => Err(io::Error::other(other)),
            None => Err(io::Error::other("unknown I/O error")),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for InputError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::tests::Recorder;
    use std::io::Cursor;

    #[test]
    fn counts_reads_and_reports_them() {
        let rec = Arc::new(Recorder::default());
        let mut r = ProgressReader::new(
            Cursor::new(vec![7u8; 10]),
            Some(rec.clone() as Arc<dyn Progress>),
            Task::Decompress,
            10,
        );
        let mut buf = [0u8; 4];
        while r.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
        let seen: Vec<u64> = rec.calls().iter().map(|c| c.2).collect();
        assert_eq!(seen, [10, 4, 8, 10, 10]);
        assert_eq!(rec.calls()[0].0, "begin");
        r.seek(SeekFrom::Start(3)).unwrap();
        assert_eq!(r.done, 3);
    }

    #[test]
    fn input_errors_are_told_apart() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
        }
        let e = ProgressReader::new(Failing, None, Task::Checksum, 0)
            .read(&mut [0u8; 1])
            .unwrap_err();
        let inner = InputError::unwrap_from(e).unwrap();
        assert_eq!(inner.raw_os_error(), Some(libc::EIO));
        assert!(InputError::unwrap_from(io::Error::other("bad data")).is_err());
    }
}
