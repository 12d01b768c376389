//! Counts shared between CPUs, in map values.
//!
//! The BPF target has atomic add but not the compare-and-swap `AtomicU32` is built on, so
//! the counts use the intrinsics directly. Each takes a pointer into a map value, which lives
//! as long as the map and is aligned for its type.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

/// A single aligned 32-bit load (the BPF backend cannot select an atomic load for the
/// generic CPU, and an aligned load is not torn).
#[inline(always)]
pub fn load(field: *mut u32) -> u32 {
    // SAFETY: see the module's comment.
    unsafe { core::ptr::read_volatile(field) }
}

#[inline(always)]
pub fn add(field: *mut u32) {
    // SAFETY: see the module's comment.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(field, 1) };
}

/// Subtracts one as a wrapping add (the backend has no 32-bit atomic subtract).
#[inline(always)]
pub fn sub(field: *mut u32) {
    // SAFETY: see the module's comment.
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(field, u32::MAX) };
}

#[inline(always)]
pub fn add64(field: *mut u64, n: u64) {
    // SAFETY: see the module's comment.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, n) };
}
