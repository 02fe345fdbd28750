//! Byte-level views of an image: a partition as a device of its own ([`Slice`]), a device
//! that refuses writes ([`ReadOnly`]), and an image written over another ([`Overlay`],
//! [`Device`]).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A read-only view of a device that refuses writes (for libraries that want `Write`).
#[derive(Debug)]
pub struct ReadOnly<D>(pub D);

impl<D: Read> Read for ReadOnly<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl<D: Seek> Seek for ReadOnly<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}
impl<D> Write for ReadOnly<D> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the image is opened read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A window `[start, start+len)` of a device, seen as a device of its own: a partition.
#[derive(Debug)]
pub struct Slice<D> {
    inner: D,
    start: u64,
    len: u64,
    pos: u64,
}

impl<D: Seek> Slice<D> {
    pub fn new(inner: D, start: u64, len: u64) -> Self {
        Slice {
            inner,
            start,
            len,
            pos: 0,
        }
    }

    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: Read + Seek> Read for Slice<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.inner.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<D: Write + Seek> Write for Slice<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        if left == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        let n = (buf.len() as u64).min(left) as usize;
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let put = self.inner.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<D: Seek> Seek for Slice<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the partition",
            )),
        }
    }
}

/// Adds `[s, e)` to `ranges` (increasing, disjoint, not touching), merging what it meets.
pub fn add_range(ranges: &mut Vec<(u64, u64)>, s: u64, e: u64) {
    if s >= e {
        return;
    }
    // The first range that ends at or after `s`, and the first that starts after `e`.
    let a = ranges.partition_point(|r| r.1 < s);
    let b = ranges.partition_point(|r| r.0 <= e);
    if a == b {
        ranges.insert(a, (s, e));
        return;
    }
    let merged = (ranges[a].0.min(s), ranges[b - 1].1.max(e));
    ranges.splice(a..b, [merged]);
}

/// Calls `each(a, b)` for every part of `[from, to)` outside `ranges` (increasing, disjoint).
pub fn around(
    ranges: &[(u64, u64)],
    from: u64,
    to: u64,
    each: &mut impl FnMut(u64, u64) -> io::Result<()>,
) -> io::Result<()> {
    split(ranges, from, to, |a, b, inside| match inside {
        true => Ok(()),
        false => each(a, b),
    })
}

/// Calls `each(a, b, inside)` for the parts of `[from, to)` in order, cut where `ranges`
/// (increasing, disjoint) begin and end; `inside`: the part is in one of them.
pub fn split(
    ranges: &[(u64, u64)],
    from: u64,
    to: u64,
    mut each: impl FnMut(u64, u64, bool) -> io::Result<()>,
) -> io::Result<()> {
    let mut at = from;
    for &(s, e) in &ranges[ranges.partition_point(|r| r.1 <= from)..] {
        if s >= to {
            break;
        }
        if at < s {
            each(at, s, false)?;
        }
        let (a, b) = (s.max(at), e.min(to));
        if a < b {
            each(a, b, true)?;
        }
        at = at.max(e);
    }
    if at < to {
        each(at, to, false)?;
    }
    Ok(())
}

/// An image written over another of the same size, never into it: reads come from `top`
/// where something was written through the overlay, else from `base`; writes go to `top` and
/// are recorded ([`Overlay::written`]). `top` starts as a sparse file of `base`'s length; it
/// ends holding only the bytes written, which its owner then fills in from `base`
/// (`build::nodes`): a node image edited without first copying its role image.
#[derive(Debug)]
pub struct Overlay {
    base: File,
    top: Arc<File>,
    len: u64,
    written: RefCell<Vec<(u64, u64)>>,
    pos: Cell<u64>,
}

impl Overlay {
    /// `top` is set to `base`'s length; `written` (increasing, disjoint) are the ranges it
    /// already holds over `base` (an earlier overlay's [`Overlay::written`]; none for a new
    /// file).
    pub fn new(base: File, top: Arc<File>, written: &[(u64, u64)]) -> io::Result<Overlay> {
        let len = base.metadata()?.len();
        if top.metadata()?.len() != len {
            top.set_len(len)?;
        }
        let o = Overlay {
            base,
            top,
            len,
            written: RefCell::new(Vec::new()),
            pos: Cell::new(0),
        };
        o.mark_written(written);
        Ok(o)
    }

    /// Widens the written ranges inside `[start, end)` to whole `unit`s counted from `start`
    /// (cut at `end`), copying `base`'s bytes into `top` for the parts added: a reader that
    /// takes whole units from `top` (an ext4 session split into it) then sees the same bytes.
    pub fn align_within(&self, start: u64, end: u64, unit: u64) -> io::Result<()> {
        let down = |x: u64| start + (x - start) / unit * unit;
        let up = |x: u64| (start + (x - start).div_ceil(unit) * unit).min(end);
        let wanted: Vec<(u64, u64)> = self
            .written()
            .into_iter()
            .map(|(s, e)| (s.max(start), e.min(end)))
            .filter(|(s, e)| s < e)
            .map(|(s, e)| (down(s), up(e)))
            .collect();
        let mut buf = Vec::new();
        for (s, e) in wanted {
            // The parts of [s, e) not yet written: from the base.
            around(&self.written(), s, e, &mut |a, b| {
                self.copy_from_base(a, b, &mut buf)
            })?;
            self.mark_written(&[(s, e)]);
        }
        Ok(())
    }

    fn copy_from_base(&self, s: u64, e: u64, buf: &mut Vec<u8>) -> io::Result<()> {
        buf.resize((e - s) as usize, 0);
        self.base.read_exact_at(buf, s)?;
        self.top.write_all_at(buf, s)
    }

    /// The file written into.
    pub fn top(&self) -> &Arc<File> {
        &self.top
    }

    /// Records ranges written into `top` by someone else (an ext4 session split into it).
    pub fn mark_written(&self, ranges: &[(u64, u64)]) {
        let mut w = self.written.borrow_mut();
        for &(s, e) in ranges {
            add_range(&mut w, s, e.min(self.len));
        }
    }

    /// The byte ranges `[start, end)` written so far (increasing, disjoint).
    pub fn written(&self) -> Vec<(u64, u64)> {
        self.written.borrow().clone()
    }

    /// Fills `buf` from `at` (inside the image), each part from where its bytes are.
    pub fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        read_over(
            &self.base,
            &self.top,
            &self.written.borrow(),
            buf,
            at,
            |f, b, at| f.read_exact_at(b, at),
        )
    }

    /// The first offset at or after `at` that may hold data (not a hole of both files), as
    /// [`crate::sparse::next_data`]; `None`: only holes from `at` to the end.
    pub fn next_data(&self, at: u64) -> io::Result<Option<u64>> {
        let written = self.written.borrow();
        let i = written.partition_point(|r| r.1 <= at);
        let in_top = written.get(i).map(|&(s, _)| s.max(at));
        let in_base = crate::sparse::next_data(&self.base, at)?;
        Ok(match (in_top, in_base) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// The image's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Fills `buf` with the bytes at `at` of an image held by two files: `top` for the byte ranges
/// `written` (increasing, disjoint), `base` for the rest; each part read by `read` (e.g.
/// [`crate::sparse::read_at`]).
pub fn read_over(
    base: &File,
    top: &File,
    written: &[(u64, u64)],
    buf: &mut [u8],
    at: u64,
    read: impl Fn(&File, &mut [u8], u64) -> io::Result<()>,
) -> io::Result<()> {
    let end = at + buf.len() as u64;
    split(written, at, end, |a, b, in_top| {
        let part = &mut buf[(a - at) as usize..(b - at) as usize];
        read(if in_top { top } else { base }, part, a)
    })
}

impl Read for &Overlay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.pos.get();
        let n = (buf.len() as u64).min(self.len.saturating_sub(pos)) as usize;
        self.read_exact_at(&mut buf[..n], pos)?;
        self.pos.set(pos + n as u64);
        Ok(n)
    }
}

impl Write for &Overlay {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let pos = self.pos.get();
        if pos.saturating_add(buf.len() as u64) > self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the image",
            ));
        }
        self.top.write_all_at(buf, pos)?;
        add_range(&mut self.written.borrow_mut(), pos, pos + buf.len() as u64);
        self.pos.set(pos + buf.len() as u64);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for &Overlay {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.get().checked_add_signed(d),
        };
        let p = new
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        self.pos.set(p);
        Ok(p)
    }
}

/// What an [`crate::disk::Image`] reads and writes: the image file itself, or an [`Overlay`].
#[derive(Debug)]
pub enum Device {
    File(File),
    Overlay(Overlay),
}

impl Read for &Device {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Device::File(f) => (&*f).read(buf),
            Device::Overlay(o) => (&*o).read(buf),
        }
    }
}

impl Write for &Device {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Device::File(f) => (&*f).write(buf),
            Device::Overlay(o) => (&*o).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Device::File(f) => (&*f).flush(),
            Device::Overlay(o) => (&*o).flush(),
        }
    }
}

impl Seek for &Device {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        match self {
            Device::File(f) => (&*f).seek(pos),
            Device::Overlay(o) => (&*o).seek(pos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn slice_bounds_reads_and_writes() {
        let mut s = Slice::new(Cursor::new(vec![0u8; 100]), 10, 20);
        s.write_all(&[1u8; 20]).unwrap();
        assert!(s.write(&[1]).is_err());
        s.seek(SeekFrom::Start(0)).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out, vec![1u8; 20]);
        let inner = s.into_inner().into_inner();
        assert_eq!(inner[9], 0);
        assert_eq!(inner[10], 1);
        assert_eq!(inner[30], 0);
    }

    #[test]
    fn ranges_merge_what_they_meet() {
        let mut r = Vec::new();
        add_range(&mut r, 10, 20);
        add_range(&mut r, 30, 40);
        add_range(&mut r, 0, 5);
        assert_eq!(r, [(0, 5), (10, 20), (30, 40)]);
        add_range(&mut r, 20, 30);
        assert_eq!(r, [(0, 5), (10, 40)]);
        add_range(&mut r, 3, 12);
        assert_eq!(r, [(0, 40)]);
        add_range(&mut r, 50, 50);
        add_range(&mut r, 45, 60);
        add_range(&mut r, 41, 44);
        assert_eq!(r, [(0, 40), (41, 44), (45, 60)]);
        add_range(&mut r, 0, 100);
        assert_eq!(r, [(0, 100)]);
    }

    /// Written ranges widened to whole units inside a window: `top` then holds, over each
    /// widened unit, the written bytes and the base's around them; outside the window nothing
    /// changes.
    #[test]
    fn aligned_units_hold_the_base_around_the_writes() {
        let dir = tempfile::tempdir().unwrap();
        let base_p = dir.path().join("base");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&base_p, &data).unwrap();
        let top_p = dir.path().join("top");
        let top = Arc::new(
            File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&top_p)
                .unwrap(),
        );
        let written = [(100u64, 110u64), (1030, 1040), (2047, 2049), (8990, 9500)];
        for &(s, e) in &written {
            top.write_all_at(&vec![0xEE; (e - s) as usize], s).unwrap();
        }
        let o = Overlay::new(File::open(&base_p).unwrap(), top, &written).unwrap();
        // The window [1000, 9000), units of 1024 counted from 1000.
        o.align_within(1000, 9000, 1024).unwrap();
        assert_eq!(
            o.written(),
            [(100, 110), (1000, 3048), (8168, 9500)],
            "widened inside the window only"
        );
        let t = std::fs::read(&top_p).unwrap();
        let mut expect = data.clone();
        for &(s, e) in &written {
            expect[s as usize..e as usize].fill(0xEE);
        }
        for &(s, e) in &o.written() {
            assert!(
                t[s as usize..e as usize] == expect[s as usize..e as usize],
                "{s}..{e}"
            );
        }
        assert!(
            t[110..1000].iter().all(|&b| b == 0),
            "outside the window: untouched"
        );
    }

    /// Reads see what was written through the overlay and the base elsewhere; the base never
    /// changes; `top` holds only the written bytes.
    #[test]
    fn overlay_reads_its_writes_over_the_base() {
        let dir = tempfile::tempdir().unwrap();
        let base_p = dir.path().join("base");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&base_p, &data).unwrap();
        let top = Arc::new(
            File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.path().join("top"))
                .unwrap(),
        );
        let o = Overlay::new(File::open(&base_p).unwrap(), top.clone(), &[]).unwrap();
        let mut expect = data.clone();
        let mut d = &o;
        for (at, n, v) in [
            (100u64, 50usize, 1u8),
            (120, 100, 2),
            (9990, 10, 3),
            (0, 1, 4),
        ] {
            d.seek(SeekFrom::Start(at)).unwrap();
            d.write_all(&vec![v; n]).unwrap();
            expect[at as usize..at as usize + n].fill(v);
        }
        d.seek(SeekFrom::End(-1)).unwrap();
        assert!(d.write_all(&[3, 3]).is_err(), "a write past the end");
        o.mark_written(&[(5000, 5010)]);
        top.write_all_at(&[9u8; 10], 5000).unwrap();
        expect[5000..5010].fill(9);
        assert_eq!(
            o.written(),
            [(0, 1), (100, 220), (5000, 5010), (9990, 10_000)]
        );
        let mut got = Vec::new();
        d.seek(SeekFrom::Start(0)).unwrap();
        d.read_to_end(&mut got).unwrap();
        assert!(got == expect);
        // Odd windows across the pieces.
        for (at, n) in [(95u64, 30usize), (219, 2), (4999, 12), (9985, 15)] {
            let mut b = vec![0u8; n];
            d.seek(SeekFrom::Start(at)).unwrap();
            d.read_exact(&mut b).unwrap();
            assert_eq!(b, expect[at as usize..at as usize + n]);
        }
        assert!(std::fs::read(&base_p).unwrap() == data, "the base changed");
        let t = std::fs::read(dir.path().join("top")).unwrap();
        assert_eq!(t.len(), data.len());
        assert_eq!(t[99], 0);
        assert_eq!(t[150], 2);
    }
}
