//! The delivery step, where every frame ends: the one place that redirects. The verdict's
//! reason fixes whether the frame goes (`Reason::action`); its next hop says where. A
//! redirect whose target is gone turns into the next hop's fallback, and the frame is
//! counted under the reason it ends with: exactly one verdict counter per frame, plus one
//! per notable shape, plus its VM's.

use aya_ebpf::{
    bindings::{BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS, xdp_action},
    maps::PerCpuArray,
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use xnic_common::{
    ctx::{CTX_WORKER, FAIL_TO_KERNEL, FrameCtx, NO_COUNTER, NextKind},
    limits::UNKNOWN_PORT_SLOT,
    maps::{Counter, shape_index, verdict_index},
    parse::Shape,
    rss::SteerCounter,
    verdict::{Action, Direction, Reason},
};

use crate::{
    flow,
    maps::{
        CPUMAP, FLOOD, FLOW_TX, SHAPES_V2, TEAM_VM_STATS, TX_PORTS, VERDICTS_V2, VM_STATS,
        XSK_SOCKS,
    },
    steer, tag, xmit,
};

/// Redirects to a port in `TX_PORTS` (a VM port or a team uplink).
#[inline(always)]
pub fn to_port(ifindex: u32) -> Option<u32> {
    TX_PORTS.redirect(ifindex, 0).ok()
}

/// Hands a packet for VNIC routing to its worker CPU, uncounted: the worker counts it
/// under the verdict it reaches there. `None` (no queue on that CPU): routed here instead.
#[inline(always)]
pub fn to_worker(xdp: &XdpContext, cx: &mut FrameCtx, cpu: u32) -> Option<u32> {
    match CPUMAP.redirect(cpu, 0) {
        Ok(action) => {
            steer::count(SteerCounter::Steered);
            Some(action)
        }
        Err(_) => {
            tag::undo(xdp, cx);
            steer::undo_enqueue(cx.flow_slot);
            steer::count(SteerCounter::NoCpu);
            None
        }
    }
}

/// What happens to a frame whose redirect failed: the kernel, or a drop with the next hop's
/// reason.
#[inline(always)]
fn failed(cx: &mut FrameCtx) -> u32 {
    match Reason::from_index(cx.next.fail_reason) {
        Some(r) if cx.next.fail_reason != FAIL_TO_KERNEL => {
            cx.verdict.reason = r;
            xdp_action::XDP_DROP
        }
        _ => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn redirect(xdp: &XdpContext, cx: &mut FrameCtx) -> u32 {
    let next = cx.next;
    if next.kind == NextKind::Port as u8 {
        return match to_port(next.target) {
            Some(action) => {
                xmit::mark_redirect();
                action
            }
            None => failed(cx),
        };
    }
    if next.kind == NextKind::FlowOut as u8 {
        return match FLOW_TX.redirect(next.target, 0) {
            Ok(action) => {
                xmit::mark_redirect();
                action
            }
            Err(_) => {
                tag::undo(xdp, cx);
                flow::undo_sent(cx);
                failed(cx)
            }
        };
    }
    if next.kind == NextKind::FlowCpu as u8 {
        return match CPUMAP.redirect(next.target, 0) {
            Ok(action) => action,
            Err(_) => {
                tag::undo(xdp, cx);
                flow::undo_behind(cx);
                xdp_action::XDP_PASS
            }
        };
    }
    if next.kind == NextKind::Back as u8 {
        if !cx.has(CTX_WORKER) {
            return xdp_action::XDP_TX;
        }
        return match to_port(cx.ifindex) {
            Some(action) => {
                xmit::mark_redirect();
                action
            }
            None => failed(cx),
        };
    }
    if next.kind == NextKind::Xsk as u8 {
        // No socket on this queue (the worker went away): the kernel's.
        return XSK_SOCKS
            .redirect(next.target, 0)
            .unwrap_or_else(|_| failed(cx));
    }
    if next.kind == NextKind::Flood as u8 {
        // Every port but the one it came in on; team uplinks filter their copies.
        xmit::mark_redirect();
        return FLOOD
            .redirect(0, (BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS) as u64)
            .unwrap_or(xdp_action::XDP_PASS);
    }
    if next.kind == NextKind::Cpu as u8 {
        return match CPUMAP.redirect(next.target, 0) {
            Ok(action) => {
                steer::count(SteerCounter::Steered);
                action
            }
            Err(_) => {
                // No queue on that CPU: the frame goes on where it is, unsteered.
                tag::undo(xdp, cx);
                steer::undo_enqueue(cx.flow_slot);
                steer::count(SteerCounter::NoCpu);
                if next.fallback_port != 0 {
                    to_port(next.fallback_port).unwrap_or(xdp_action::XDP_PASS)
                } else {
                    xdp_action::XDP_PASS
                }
            }
        };
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn bump(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU array slot is only touched by this CPU, and programs do not
        // preempt each other on one CPU.
        unsafe { (*c).add(bytes) };
    }
}

#[inline(always)]
fn count(cx: &FrameCtx, dropped: bool) {
    // A trace's frame is counted nowhere.
    if crate::dry_run::active() {
        return;
    }
    let bytes = cx.len;
    let slot = cx.port().map_or(UNKNOWN_PORT_SLOT, |p| p.slot);
    bump(&VERDICTS_V2, verdict_index(slot, cx.verdict.reason), bytes);
    if cx.parsed.shapes != 0 {
        for shape in Shape::ALL {
            if cx.parsed.has(shape) {
                bump(&SHAPES_V2, shape_index(slot, shape), bytes);
            }
        }
    }
    if let Some(vm) = cx.verdict.vm()
        && let Some(c) = VM_STATS.get_ptr_mut(vm)
    {
        // SAFETY: as in `bump`.
        let c = unsafe { &mut *c };
        match (dropped, cx.verdict.direction) {
            (true, _) => c.dropped.add(bytes),
            (_, Direction::FromVm) => c.from_vm.add(bytes),
            (_, Direction::ToVm) => c.to_vm.add(bytes),
        }
    }
    if !dropped && cx.member_counter != NO_COUNTER {
        bump(&TEAM_VM_STATS, cx.member_counter, bytes);
    }
}

/// Ends the frame: redirects or passes or drops it, and counts it.
#[inline(always)]
pub fn deliver(xdp: &XdpContext, cx: &mut FrameCtx) -> u32 {
    let action = match cx.verdict.reason.action() {
        Action::Drop => xdp_action::XDP_DROP,
        _ => redirect(xdp, cx),
    };
    let dropped = action == xdp_action::XDP_DROP;
    count(cx, dropped);
    crate::dry_run::step(cx, xnic_common::dry_run::Stage::Deliver, action);
    crate::monitor::delivered(xdp, cx, action);
    crate::monitor::watched(xdp, cx, action);
    if dropped {
        crate::monitor::dropped(xdp, cx);
        debug!(
            xdp,
            "drop: {} on ifindex {} ({} bytes)",
            cx.verdict.reason.name(),
            cx.ifindex,
            cx.len
        );
    }
    action
}
