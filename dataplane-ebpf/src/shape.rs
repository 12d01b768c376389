//! The shaper's tc program on VM ports (see `xnic_common::shaper`): a shaped VM's TCP frame,
//! which the team stage passed up, is classified again, given its VM's HTB class and sent to
//! the egress of the uplink the team stage would pick, where the class's queue paces it.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::{bpf_ktime_get_ns, bpf_redirect},
    programs::TcContext,
};
use xnic_common::{
    ctx::{CTX_GROUP, FrameCtx},
    frame::Frame,
    maps::PortRole,
    parse::parse,
    shaper::{ShapeCounter, class_id, wants_shaper},
    team::NO_TEAM,
    verdict::Reason,
};

use crate::{
    classify,
    maps::{SHAPER_STATS, VM_TEAM},
    team,
};

#[inline(always)]
fn count(counter: ShapeCounter) {
    if let Some(c) = SHAPER_STATS.get_ptr_mut(counter as u32) {
        // SAFETY: this CPU's slot of a per-CPU array; programs do not preempt each other on
        // one CPU.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn shape(tc: &TcContext, cx: &mut FrameCtx) -> i32 {
    // SAFETY: `tc.skb.skb` is this invocation's __sk_buff.
    let (len, ifindex) = unsafe { ((*tc.skb.skb).len, (*tc.skb.skb).ifindex) };
    cx.begin(u64::from(len), ifindex);
    // SAFETY: the kernel guarantees [data, data_end) is readable for this invocation (the
    // linear part of the skb, which holds the headers of frames XDP passed up).
    let frame = unsafe { Frame::from_raw(tc.data(), tc.data_end(), len as usize) };
    let outcome = parse(&frame, &mut cx.parsed);
    cx.set_outcome(outcome);
    classify::classify(cx, PortRole::Vm);
    let for_network = cx.verdict.reason == Reason::FromVm
        && cx.verdict.deliver_to().is_none()
        && !cx.has(CTX_GROUP);
    let vm = match VM_TEAM.get(cx.port.vm_slot) {
        Some(vm) if for_network && vm.team != NO_TEAM && wants_shaper(vm, &cx.parsed) => vm,
        _ => {
            count(ShapeCounter::Passed);
            return TC_ACT_OK;
        }
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let Ok((_, uplink)) = team::uplink(cx, vm, now) else {
        count(ShapeCounter::NoUplink);
        return TC_ACT_SHOT;
    };
    // SAFETY: `priority` is writable for tc programs; HTB takes a priority naming one of its
    // classes as the frame's class.
    unsafe { (*tc.skb.skb).priority = class_id(cx.port.vm_slot) };
    // SAFETY: helper on scalars; flags 0 sends the frame out of `uplink`'s egress (its qdisc).
    let action = unsafe { bpf_redirect(uplink, 0) };
    if action == i64::from(TC_ACT_REDIRECT) {
        count(ShapeCounter::Queued);
        TC_ACT_REDIRECT
    } else {
        count(ShapeCounter::RedirectFailed);
        TC_ACT_SHOT
    }
}
