//! A bounds-checked view of a frame, the same in eBPF and in userspace.
//!
//! In eBPF the addresses come from `xdp_md.data` / `data_end`, and the check in [`Frame::header`]
//! is the exact `data + off + size > data_end` comparison the verifier needs to see before a
//! direct packet read. In userspace they come from a byte slice, so the parser runs unchanged
//! in unit and property tests.

use core::marker::PhantomData;

use crate::headers::Header;

pub struct Frame<'a> {
    /// Address of the first byte.
    start: usize,
    /// One past the last directly readable byte (the linear part of the frame).
    end: usize,
    /// Length of the whole frame, including fragments that are not directly readable
    /// (multi-buffer XDP). Equals `end - start` for ordinary frames.
    len: usize,
    _bytes: PhantomData<&'a [u8]>,
}

impl<'a> Frame<'a> {
    pub fn from_slice(bytes: &'a [u8]) -> Self {
        let start = bytes.as_ptr() as usize;
        Self {
            start,
            end: start + bytes.len(),
            len: bytes.len(),
            _bytes: PhantomData,
        }
    }

    /// # Safety
    /// `[start, end)` must stay readable for `'a`, and `len >= end - start`.
    #[inline(always)]
    pub unsafe fn from_raw(start: usize, end: usize, len: usize) -> Self {
        Self {
            start,
            end,
            len,
            _bytes: PhantomData,
        }
    }

    /// Length of the whole frame in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether part of the frame lies in fragments the parser cannot read directly.
    #[inline(always)]
    pub fn is_nonlinear(&self) -> bool {
        self.len > self.end - self.start
    }

    /// The header of type `T` at byte `offset`, or `None` if it does not fit in the linear part.
    ///
    /// Offsets the parser passes are below 2^17, so the additions cannot overflow.
    #[inline(always)]
    pub fn header<T: Header>(&self, offset: usize) -> Option<&'a T> {
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: `[at, at + size_of::<T>())` lies inside `[start, end)`, readable for `'a`;
        // `Header` types have alignment 1 and accept every bit pattern.
        Some(unsafe { &*(at as *const T) })
    }
}

/// A frame the fast path rewrites: like [`Frame`], with one header borrowed mutably at a
/// time.
pub struct FrameMut<'a> {
    start: usize,
    end: usize,
    _bytes: PhantomData<&'a mut [u8]>,
}

impl<'a> FrameMut<'a> {
    pub fn from_slice(bytes: &'a mut [u8]) -> Self {
        let start = bytes.as_mut_ptr() as usize;
        Self {
            start,
            end: start + bytes.len(),
            _bytes: PhantomData,
        }
    }

    /// # Safety
    /// `[start, end)` must stay readable and writable for `'a`, and nothing else may access
    /// it meanwhile.
    #[inline(always)]
    pub unsafe fn from_raw(start: usize, end: usize) -> Self {
        Self {
            start,
            end,
            _bytes: PhantomData,
        }
    }

    /// The header of type `T` at byte `offset`, or `None` if it does not fit in the linear
    /// part.
    #[inline(always)]
    pub fn header_mut<T: Header>(&mut self, offset: usize) -> Option<&mut T> {
        let at = self.start + offset;
        if at + size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: `[at, at + size_of::<T>())` lies inside `[start, end)`, writable for `'a`
        // and borrowed through `&mut self` alone; `Header` types have alignment 1 and accept
        // every bit pattern.
        Some(unsafe { &mut *(at as *mut T) })
    }
}
