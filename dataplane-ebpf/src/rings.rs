//! The XSK step: a RoCEv2 packet for a queue pair a rings worker serves goes to the
//! worker's AF_XDP socket on the queue it arrived on (see `xnic_common::rings`).

use aya_ebpf::programs::XdpContext;
use xnic_common::{
    ctx::{CTX_PARSED, FrameCtx, Next},
    frame::Frame,
    rings::dest_qp,
    verdict::Reason,
};

use crate::maps::ROCE_QPS;

/// Whether the frame is for a rings worker; then its verdict and next hop say so.
#[inline(always)]
pub fn take(xdp: &XdpContext, frame: &Frame, cx: &mut FrameCtx) -> bool {
    if cx.verdict.reason != Reason::NotForVm || !cx.has(CTX_PARSED) {
        return false;
    }
    let Some(qp) = dest_qp(frame, &cx.parsed) else {
        return false;
    };
    // SAFETY: a lookup whose value is only tested for presence.
    if unsafe { ROCE_QPS.get(qp) }.is_none() {
        return false;
    }
    cx.verdict.reason = Reason::ToRings;
    cx.next = Next::xsk(xdp.rx_queue_index());
    true
}
