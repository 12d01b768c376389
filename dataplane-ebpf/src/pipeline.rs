//! One frame through the dataplane. The entry programs parse, classify and guard it, then
//! either deliver it or tail-call the stage it needs; every stage ends in `deliver`.
//!
//! ```text
//! xnic_uplink / xnic_vm:  parse → classify → guard ─┬─ flow hit (rewrite) ─────────────→ deliver
//!                                                   ├─ RoCEv2 for a rings worker (XSK) ─→ deliver
//!                                                   ├─ CALLS[FlowDecap]  → xnic_decap → deliver
//!                                                   ├─ CALLS[TeamEgress] → xnic_team  → deliver
//!                                                   ├─ CALLS[Steer]      → xnic_steer → deliver
//!                                                   ├─ CALLS[Vnic] → xnic_vnic ─ CALLS[VnicOut]
//!                                                   │              → xnic_vnic_out → deliver
//!                                                   └─ CPUMAP → xnic_cpumap (the flow's worker
//!                                                      CPU): parse → classify ─ WORKER_CALLS
//!                                                      [Vnic] → xnic_worker_vnic ─ [VnicOut]
//!                                                      → xnic_worker_vnic_out → deliver
//! ```

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    helpers::bpf_xdp_get_buff_len,
    programs::{TcContext, XdpContext},
};
use xnic_common::{
    ctx::{CTX_WORKER, Call, FrameCtx},
    dry_run::{FlowOutcome, NO_DETAIL, Stage},
    frame::Frame,
    maps::PortRole,
    parse::parse,
};

use crate::{
    calls::{self, Stages},
    classify::{self, Route},
    deliver::deliver,
    dry_run, flow,
    maps::SCRATCH,
    rings, shape, steer, tag, team, vnic,
};

/// This CPU's frame context.
#[inline(always)]
fn scratch() -> Option<&'static mut FrameCtx> {
    let ptr = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's entry of a per-CPU map; programs on one CPU handle one frame at a
    // time (XDP, tc ingress and the CPU-map kthread's programs all run with bottom halves off
    // and never nest), and a tail call stays on the CPU.
    Some(unsafe { &mut *ptr })
}

/// A frame's first steps, wherever it starts (an entry program, a worker CPU): its context
/// begun, its headers parsed, its port and VM classified. Returns the frame.
#[inline(always)]
fn start<'a>(xdp: &XdpContext, cx: &mut FrameCtx, role: PortRole) -> Frame<'a> {
    // SAFETY: `xdp.ctx` is the live xdp_md of this invocation.
    let len = unsafe { bpf_xdp_get_buff_len(xdp.ctx) } as u64;
    cx.begin(len, xdp.ingress_ifindex() as u32);
    // SAFETY: the kernel guarantees [data, data_end) is readable for this invocation, and the
    // buffer length covers at least the linear part.
    let frame = unsafe { Frame::from_raw(xdp.data(), xdp.data_end(), len as usize) };
    let outcome = parse(&frame, &mut cx.parsed);
    cx.set_outcome(outcome);
    let shapes = u32::from(cx.parsed.shapes);
    dry_run::step(cx, Stage::Parse, shapes);
    classify::classify(cx, role);
    let slot = cx.port().map_or(NO_DETAIL, |p| p.slot);
    dry_run::step(cx, Stage::Classify, slot);
    frame
}

#[inline(always)]
pub fn entry(xdp: &XdpContext, role: PortRole) -> u32 {
    let Some(cx) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    let frame = start(xdp, cx, role);
    crate::monitor::arrived(xdp, cx);
    if role == PortRole::Uplink && rings::take(xdp, &frame, cx) {
        let queue = cx.next.target;
        dry_run::step(cx, Stage::Rings, queue);
        return deliver(xdp, cx);
    }
    if role == PortRole::Uplink && vnic::wants(cx) {
        if let Some(engine) = vnic::worker_engine()
            && let Some(cpu) = steer::vnic_worker(xdp, cx, engine)
        {
            if dry_run::active() {
                // A trace runs the worker's stages here, as that CPU would.
                tag::undo(xdp, cx);
                dry_run::step(cx, Stage::Worker, cpu);
            } else if let Some(action) = crate::deliver::to_worker(xdp, cx, cpu) {
                return action;
            }
        }
        return calls::jump(xdp, cx, Call::Vnic);
    }
    let offer = flow::offer(xdp, cx, role == PortRole::Uplink);
    let found = match offer {
        flow::Offer::Taken => FlowOutcome::Taken,
        flow::Offer::Decap => FlowOutcome::Decap,
        flow::Offer::Miss => FlowOutcome::Miss,
    };
    dry_run::step(cx, Stage::Flow, found as u32);
    match offer {
        flow::Offer::Taken => return deliver(xdp, cx),
        flow::Offer::Decap => return calls::jump(xdp, cx, Call::FlowDecap),
        flow::Offer::Miss => {}
    }
    match classify::route(cx, role) {
        Route::Deliver => {
            dry_run::step(cx, Stage::Route, NO_DETAIL);
            deliver(xdp, cx)
        }
        Route::Call(call) => {
            dry_run::step(cx, Stage::Route, call as u32);
            calls::jump(xdp, cx, call)
        }
    }
}

#[inline(always)]
pub fn team_egress(xdp: &XdpContext) -> u32 {
    let Some(cx) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    team::egress(cx);
    dry_run::step(cx, Stage::Team, NO_DETAIL);
    deliver(xdp, cx)
}

/// Stage `Call::FlowDecap`: a VXLAN packet on an uplink that may carry an offloaded flow.
#[inline(always)]
pub fn flow_decap(xdp: &XdpContext) -> u32 {
    let Some(cx) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    flow::decap(xdp, cx);
    dry_run::step(cx, Stage::Decap, NO_DETAIL);
    deliver(xdp, cx)
}

/// Stage `Call::Vnic`: a packet for VNIC routing on an uplink (see `vnic`), where it
/// arrived or on its worker CPU (`stages`).
#[inline(always)]
pub fn vnic_arrive(xdp: &XdpContext, stages: Stages) -> u32 {
    let Some(cx) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    let onward = vnic::arrive(xdp, cx);
    let target = cx.vnic.target;
    dry_run::step(cx, Stage::Vnic, target);
    if onward {
        return calls::jump_in(stages, xdp, cx, Call::VnicOut);
    }
    deliver(xdp, cx)
}

/// Stage `Call::VnicOut`: VNIC routing's next hop.
#[inline(always)]
pub fn vnic_leave(xdp: &XdpContext) -> u32 {
    let Some(cx) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    vnic::leave(xdp, cx);
    let target = cx.vnic.target;
    dry_run::step(cx, Stage::VnicOut, target);
    deliver(xdp, cx)
}

/// The CPU-map program: a steered frame on the CPU it was steered to. A VNIC-routing packet
/// goes on to the routing stages built for this CPU (`WORKER_CALLS`).
#[inline(always)]
pub fn on_cpu(xdp: &XdpContext) -> u32 {
    match steer::finish(xdp) {
        steer::Finished::Done(action) => action,
        steer::Finished::Route => route_on_worker(xdp),
    }
}

/// VNIC routing on a packet's worker CPU: the entry program's parse and classify again (the
/// frame context stayed on the CPU that received it), then the routing stages.
#[inline(always)]
fn route_on_worker(xdp: &XdpContext) -> u32 {
    let Some(cx) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    start(xdp, cx, PortRole::Uplink);
    cx.flags |= CTX_WORKER;
    if vnic::wants(cx) {
        return calls::jump_in(Stages::Worker, xdp, cx, Call::Vnic);
    }
    deliver(xdp, cx)
}

/// tc egress on every port, while flows are promoting (see `flow::exit`).
#[inline(always)]
pub fn flow_exit(tc: &TcContext) -> i32 {
    flow::exit(tc)
}

#[inline(always)]
pub fn steer(xdp: &XdpContext) -> u32 {
    let Some(cx) = scratch() else {
        return xdp_action::XDP_PASS;
    };
    steer::steer(xdp, cx);
    dry_run::step(cx, Stage::Steer, NO_DETAIL);
    deliver(xdp, cx)
}

/// A frame the team stage passed up on a VM port, at tc ingress (see `shape`).
#[inline(always)]
pub fn shape(tc: &TcContext) -> i32 {
    let Some(cx) = scratch() else {
        return TC_ACT_OK;
    };
    shape::shape(tc, cx)
}
