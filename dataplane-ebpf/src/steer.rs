//! The steer step: a frame for a VM goes to the CPU its RSS state picks, through the CPU map;
//! the CPU-map program on that CPU finishes it. See `xnic_common::rss` for the design.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_ns, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use xnic_common::{
    ctx::{FrameCtx, Next},
    flow::FLOW_META_TAG,
    hash::flow_hash,
    maps::Counter,
    rss::{
        FLOW_SLOTS as FLOW_SLOTS_LEN, FlowDone, FlowSlot, Handover, NO_BUCKET, NO_ENGINE,
        STEER_TAG, SteerCounter, SteerMeta, bucket_index, handover, queued,
    },
    vnic::VNIC_META_TAG,
};

use crate::atomic::{add, load, sub};
use crate::maps::{
    BUCKET_STATS, DRY_FLOW_DONE, DRY_FLOW_SLOT, ENGINES, FLOW_DONE, FLOW_SLOTS_V2, RSS_CONFIG,
    RSS_TABLES, STEER_STATS_V2, VM_CPU_STATS, VM_RSS,
};
use crate::tag;

#[inline(always)]
pub fn count(c: SteerCounter) {
    if crate::dry_run::active() {
        return;
    }
    if let Some(v) = STEER_STATS_V2.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, touched only by this CPU's programs, which do not nest.
        unsafe { *v += 1 };
    }
}

/// The steer stage: a frame for a VM goes to the CPU that finishes that VM's frames (there
/// it goes to its port, or to the kernel), unless steering is off or impossible; then it is
/// delivered where it is.
#[inline(always)]
pub fn steer(ctx: &XdpContext, cx: &mut FrameCtx) {
    let deliver_port = cx.deliver_port;
    cx.next = Next::deliver(deliver_port);
    if let Some(vm) = cx.verdict.deliver_to()
        && let Some((cpu, flow_slot)) = prepare(ctx, cx, vm, deliver_port)
    {
        cx.flow_slot = flow_slot;
        cx.next = Next::cpu(cpu, deliver_port);
    }
}

/// VNIC routing's worker for the packet: the CPU of the fleet's engine its flow hashes to
/// (the outer header's: a VXLAN source port carries the inner flow's hash), with the
/// tag the CPU-map program needs in front of it. `None`: routed where it arrived (no
/// worker engine, a port that cannot steer, RSS off).
#[inline(always)]
pub fn vnic_worker(ctx: &XdpContext, cx: &mut FrameCtx, engine: u32) -> Option<u32> {
    if !cx.port()?.steers() {
        return None;
    }
    let (cpu, flow_slot) = place(ctx, cx, engine, VNIC_META_TAG, 0)?;
    cx.flow_slot = flow_slot;
    Some(cpu)
}

/// Picks the CPU for the frame's flow from its VM's engine, hands the flow over when it may
/// move, and puts the tag the CPU-map program needs in front of the frame. `None`: not
/// steered.
#[inline(always)]
fn prepare(
    ctx: &XdpContext,
    cx: &mut FrameCtx,
    vm: u32,
    deliver_ifindex: u32,
) -> Option<(u32, u32)> {
    let engine = VM_RSS.get(vm)?.engine;
    place(ctx, cx, engine, vm, deliver_ifindex)
}

/// [`prepare`] on `engine`, for a frame of `vm_slot` (or a tag) the CPU-map program
/// delivers to `deliver_ifindex` (0: the kernel).
#[inline(always)]
fn place(
    ctx: &XdpContext,
    cx: &mut FrameCtx,
    engine: u32,
    vm: u32,
    deliver_ifindex: u32,
) -> Option<(u32, u32)> {
    let parsed = &cx.parsed;
    let cfg = RSS_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let hash = flow_hash(parsed, cfg.seed, cfg.symmetric != 0);
    let (want, bucket) = if engine == NO_ENGINE {
        (cfg.default_cpu, NO_BUCKET)
    } else {
        let mask = ENGINES.get(engine)?.table_mask;
        let index = bucket_index(engine, hash & mask);
        (*RSS_TABLES.get(index)?, index)
    };

    // Hand the flow over to `want` only once nothing of it is queued on its current CPU.
    let flow_slot = hash & (FLOW_SLOTS_LEN - 1);
    let slot: *mut FlowSlot =
        crate::dry_run::private(FLOW_SLOTS_V2.get_ptr_mut(flow_slot)?, &DRY_FLOW_SLOT)?;
    // SAFETY: `slot` points into the FLOW_SLOTS_V2 array value for this index.
    let current = unsafe { (*slot).cpu };
    if current != want {
        // The other side's counts, read only while the flow waits to move.
        let done: *mut FlowDone =
            crate::dry_run::private(FLOW_DONE.get_ptr_mut(flow_slot)?, &DRY_FLOW_DONE)?;
        // Dequeued first: every dequeued frame was enqueued before, so in-flight ≥ 0.
        // SAFETY: `done` points into the FLOW_DONE array value; counts are read whole.
        let dequeued = load(unsafe { &raw mut (*done).dequeued });
        // SAFETY: as above, for `slot`.
        let enqueued = load(unsafe { &raw mut (*slot).enqueued });
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: as above.
        let (last, since) = unsafe { ((*done).last_dequeue_ns, (*slot).waiting_since_ns) };
        match handover(current, want, queued(enqueued, dequeued), last, since, now) {
            Handover::Stay => {}
            Handover::Switch | Handover::ForceSwitch => {
                // SAFETY: as above; a racing writer writes the same values.
                unsafe {
                    (*slot).cpu = want;
                    (*slot).waiting_since_ns = 0;
                }
                count(
                    if since != 0 && now.saturating_sub(since) >= xnic_common::rss::MAX_DRAIN_NS {
                        SteerCounter::SwitchForced
                    } else {
                        SteerCounter::SwitchDrained
                    },
                );
            }
            Handover::Wait => {
                if since == 0 {
                    // SAFETY: as above.
                    unsafe { (*slot).waiting_since_ns = now };
                }
                count(SteerCounter::HeldForOrder);
            }
        }
    }
    // SAFETY: as above.
    let cpu = unsafe { (*slot).cpu };

    // Tell the CPU-map program which flow slot and bucket this frame belongs to.
    let told = tag::push(
        ctx,
        cx,
        SteerMeta {
            magic: STEER_TAG,
            flow_slot,
            bucket,
            vm_slot: vm,
            deliver_ifindex,
            _pad: 0,
        },
    );
    if !told {
        return None;
    }
    // SAFETY: as above. Undone by `undo_enqueue` when the redirect fails.
    add(unsafe { &raw mut (*slot).enqueued });
    Some((cpu, flow_slot))
}

/// Takes back the enqueue of a frame whose redirect to its CPU failed.
#[inline(always)]
pub fn undo_enqueue(flow_slot: u32) {
    if crate::dry_run::active() {
        return;
    }
    if let Some(slot) = FLOW_SLOTS_V2.get_ptr_mut(flow_slot) {
        // SAFETY: `slot` points into the FLOW_SLOTS_V2 array value.
        sub(unsafe { &raw mut (*slot).enqueued });
    }
}

/// What the CPU-map program does with a frame once [`finish`] accounted it.
pub enum Finished {
    /// Ends with this action.
    Done(u32),
    /// A packet for VNIC routing, which runs here, on its worker CPU.
    Route,
}

/// The CPU-map program's work: account the frame to its flow, bucket and VM on this CPU, and
/// hand it to the kernel here, or to the VM's port when xnic switches, or to VNIC routing.
#[inline(always)]
pub fn finish(ctx: &XdpContext) -> Finished {
    let Some(m) = tag::peek::<SteerMeta>(ctx).filter(|m| m.magic == STEER_TAG) else {
        count(SteerCounter::NoMeta);
        return Finished::Done(xdp_action::XDP_PASS);
    };
    if !tag::pop(ctx, size_of::<SteerMeta>()) {
        // Not a frame the kernel could do anything with.
        count(SteerCounter::NoMeta);
        return Finished::Done(xdp_action::XDP_DROP);
    }
    if m.vm_slot == FLOW_META_TAG {
        // A leaving offloaded flow's packet, queued behind its fast-path frames.
        crate::flow::dequeued(m.flow_slot);
        return Finished::Done(xdp_action::XDP_PASS);
    }
    // An index past the array (a frame an older dataplane's program steered) counts nowhere.
    if let Some(done) = FLOW_DONE.get_ptr_mut(m.flow_slot) {
        // SAFETY: `done` points into the FLOW_DONE array value.
        add(unsafe { &raw mut (*done).dequeued });
        // SAFETY: as above; helper without arguments.
        unsafe { (*done).last_dequeue_ns = bpf_ktime_get_ns() };
    }
    // SAFETY: `ctx.ctx` is this invocation's xdp_md.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    let bump = |c: Option<*mut Counter>| {
        if let Some(c) = c {
            // SAFETY: per-CPU slot, touched only by this CPU.
            unsafe { (*c).add(len) };
        }
    };
    if m.bucket != NO_BUCKET {
        bump(BUCKET_STATS.get_ptr_mut(m.bucket));
    }
    if m.vm_slot == VNIC_META_TAG {
        return Finished::Route;
    }
    bump(VM_CPU_STATS.get_ptr_mut(m.vm_slot));
    count(SteerCounter::Delivered);
    if m.deliver_ifindex != 0
        && let Some(redirect) = crate::deliver::to_port(m.deliver_ifindex)
    {
        crate::xmit::mark_redirect();
        return Finished::Done(redirect);
    }
    Finished::Done(xdp_action::XDP_PASS)
}
