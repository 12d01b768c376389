//! Notes for the program that finishes a frame elsewhere (the CPU-map program on the CPU it
//! was steered to, `FLOW_TX`'s device program on its way out), carried as a small header in
//! front of the frame, which the reader takes off. Not in the XDP metadata area: some kernels
//! are built without `bpf_xdp_adjust_meta`, while every kernel and driver lets a program move
//! the frame's head. A frame whose redirect fails has its tag taken off by the delivery step.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use xnic_common::ctx::FrameCtx;

/// Puts `tag` in front of the frame; false (and the frame as it was) without headroom.
#[inline(always)]
pub fn push<T>(xdp: &XdpContext, cx: &mut FrameCtx, tag: T) -> bool {
    let len = size_of::<T>();
    // SAFETY: `xdp.ctx` is this invocation's xdp_md; a negative delta grows the frame at its
    // head, into the headroom.
    if unsafe { bpf_xdp_adjust_head(xdp.ctx, -(len as i32)) } != 0 {
        return false;
    }
    let start = xdp.data();
    if start + len > xdp.data_end() {
        // SAFETY: as above; gives back what was just taken (the verifier's bound).
        unsafe { bpf_xdp_adjust_head(xdp.ctx, len as i32) };
        return false;
    }
    // SAFETY: [start, start + len) was just added and checked against `data_end`; unaligned
    // writes are fine for BPF packet memory.
    unsafe { (start as *mut T).write_unaligned(tag) };
    cx.tag_len = len as u8;
    true
}

/// What the frame starts with, read as a tag (the caller checks its marker); it stays there.
#[inline(always)]
pub fn peek<T>(xdp: &XdpContext) -> Option<T> {
    let start = xdp.data();
    if start + size_of::<T>() > xdp.data_end() {
        return None;
    }
    // SAFETY: [start, start + size_of::<T>()) lies inside the frame, checked above;
    // unaligned reads are fine for BPF packet memory.
    Some(unsafe { (start as *const T).read_unaligned() })
}

/// Takes a `len`-byte tag off the front of the frame.
#[inline(always)]
pub fn pop(xdp: &XdpContext, len: usize) -> bool {
    // SAFETY: `xdp.ctx` is this invocation's xdp_md; a positive delta shrinks the frame at
    // its head by what `push` added.
    unsafe { bpf_xdp_adjust_head(xdp.ctx, len as i32) == 0 }
}

/// Takes off the tag this program put on, if any: its redirect did not happen.
#[inline(always)]
pub fn undo(xdp: &XdpContext, cx: &mut FrameCtx) {
    if cx.tag_len != 0 && pop(xdp, cx.tag_len as usize) {
        cx.tag_len = 0;
    }
}
