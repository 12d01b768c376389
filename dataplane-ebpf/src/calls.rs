//! Tail calls into the pipeline's stages (`CALLS`, filled by the daemon).

use aya_ebpf::programs::XdpContext;
use xnic_common::{
    ctx::{Call, FrameCtx, Next},
    verdict::Reason,
};

use crate::{deliver::deliver, maps::CALLS};

/// Continues the frame in stage `call`. Returns only when the stage is missing (a daemon
/// filling a new table, say): the frame then goes to the kernel, counted as such.
#[inline(always)]
pub fn jump(xdp: &XdpContext, cx: &mut FrameCtx, call: Call) -> u32 {
    // SAFETY: a tail call into a program of the same type; control does not come back when
    // it succeeds, and nothing here needs dropping.
    unsafe { CALLS.tail_call(xdp, call as u32) };
    cx.verdict.reason = Reason::StageMissing;
    cx.next = Next::KERNEL;
    deliver(xdp, cx)
}
