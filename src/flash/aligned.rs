//! Page-aligned buffers for O_DIRECT reads and writes (the kernel wants the memory aligned
//! to the device's logical block size; 4 KiB covers 512-byte and 4K-native devices).

use std::ops::{Deref, DerefMut};

/// 4 KiB of bytes, aligned to 4 KiB: a `Vec` of these is an aligned buffer.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// A zeroed buffer of whole pages, aligned to 4 KiB.
pub struct AlignedBuf {
    pages: Vec<Page>,
}

impl AlignedBuf {
    /// `len` bytes rounded up to whole pages.
    pub fn new(len: usize) -> AlignedBuf {
        AlignedBuf {
            pages: vec![Page([0; 4096]); len.div_ceil(4096)],
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `Page` is `repr(C)` over `[u8; 4096]` with no padding (its size equals its
        // alignment), so the pages are `len * 4096` contiguous, initialised bytes.
        unsafe { std::slice::from_raw_parts(self.pages.as_ptr().cast(), self.pages.len() * 4096) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and the borrow is exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(self.pages.as_mut_ptr().cast(), self.pages.len() * 4096)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligned_and_whole_pages() {
        let b = super::AlignedBuf::new(5000);
        assert_eq!(b.len(), 8192);
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        assert!(b.iter().all(|&x| x == 0));
    }
}
