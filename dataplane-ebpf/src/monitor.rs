//! The monitor step of the delivery step: a dropped frame becomes a `DropEvent` in
//! `MONITOR_RING` while a monitor holds the lease, sampled and rate-limited per CPU (see
//! `xnic_common::monitor`). Off, it costs a drop one array lookup.

use aya_ebpf::{
    helpers::{
        bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_xdp_load_bytes,
    },
    programs::XdpContext,
};
use xnic_common::{
    ctx::FrameCtx,
    limits::UNKNOWN_PORT_SLOT,
    maps::NO_VM,
    monitor::{DropEvent, MonitorCounter, SNAP_LEN, admit},
};

use crate::maps::{MONITOR_BUCKET, MONITOR_CONFIG, MONITOR_RING, MONITOR_STATS};

#[inline(always)]
fn count(c: MonitorCounter) {
    if let Some(v) = MONITOR_STATS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, touched only by this CPU's programs, which do not nest.
        unsafe { *v += 1 };
    }
}

/// Reports the frame `cx` describes, just dropped, if a monitor is listening.
#[inline(always)]
pub fn dropped(xdp: &XdpContext, cx: &FrameCtx) {
    let Some(cfg) = MONITOR_CONFIG.get(0) else {
        return;
    };
    if cfg.until_ns == 0 {
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if now > cfg.until_ns {
        return;
    }
    // SAFETY: helper without arguments.
    if cfg.sample > 1 && unsafe { bpf_get_prandom_u32() } % cfg.sample != 0 {
        count(MonitorCounter::Sampled);
        return;
    }
    let Some(bucket) = MONITOR_BUCKET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, as in `count`.
    if !admit(unsafe { &mut *bucket }, now, cfg.rate, cfg.burst) {
        count(MonitorCounter::RateLimited);
        return;
    }
    let Some(mut entry) = MONITOR_RING.reserve::<DropEvent>(0) else {
        count(MonitorCounter::RingFull);
        return;
    };
    let e = entry.as_mut_ptr();
    let linear = (xdp.data_end() - xdp.data()) as u32;
    let captured = linear.min(cx.len as u32).min(SNAP_LEN as u32);
    // SAFETY: `e` points at the reserved entry, written field by field before it is
    // submitted; the copy's length is at most SNAP_LEN, the size of `head`.
    unsafe {
        (*e).ts_ns = now;
        (*e).ifindex = cx.ifindex;
        (*e).port_slot = cx.port().map_or(UNKNOWN_PORT_SLOT, |p| p.slot);
        (*e).vm_slot = cx.verdict.vm().unwrap_or(NO_VM);
        (*e).reason = cx.verdict.reason as u32;
        (*e).len = cx.len as u32;
        (*e).cpu = bpf_get_smp_processor_id();
        (*e)._pad = 0;
        // Written so the verifier sees 1..=SNAP_LEN (SNAP_LEN is a power of two).
        let n = (captured.wrapping_sub(1) & (SNAP_LEN as u32 - 1)) + 1;
        let got =
            captured > 0 && bpf_xdp_load_bytes(xdp.ctx, 0, (&raw mut (*e).head).cast(), n) == 0;
        (*e).captured = if got { captured } else { 0 };
    }
    entry.submit(0);
    count(MonitorCounter::Emitted);
}
