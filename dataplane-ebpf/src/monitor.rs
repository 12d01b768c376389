//! The monitor step of the delivery step: while `xnic monitor` holds its lease, a dropped
//! frame becomes a `DropEvent` in `MONITOR_RING`; while `xnic capture` holds its lease, every
//! frame of its port becomes one in `CAPTURE_RING`, with the action it got. Both are sampled
//! and rate-limited per CPU (see `xnic_common::monitor`); while `xnic monitor --trace`
//! watches a flow, each of its frames becomes one in `MONITOR_RING` with the stages it passed.
//! Off, each costs one array lookup.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{
        bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_xdp_load_bytes,
    },
    maps::{Array, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use xnic_common::{
    ctx::FrameCtx,
    limits::UNKNOWN_PORT_SLOT,
    maps::NO_VM,
    monitor::{
        Bucket, CAPTURE_IN, CAPTURE_OUT, DropEvent, EVENT_ARRIVED, EVENT_CAPTURE, EVENT_DROP,
        EVENT_TRACE, MonitorConfig, MonitorCounter, SNAP_LEN, WatchCounter, admit,
    },
};

use crate::maps::{
    CAPTURE_BUCKET, CAPTURE_CONFIG, CAPTURE_FILTER, CAPTURE_RING, MONITOR_BUCKET, MONITOR_CONFIG,
    MONITOR_RING, MONITOR_STATS, WATCH_BUCKET, WATCH_CONFIG, WATCH_STATS,
};

#[inline(always)]
fn count(c: MonitorCounter) {
    if crate::dry_run::active() {
        return;
    }
    if let Some(v) = MONITOR_STATS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, touched only by this CPU's programs, which do not nest.
        unsafe { *v += 1 };
    }
}

/// One stream of events: its settings, bucket and ring, and its counters. Built where it is
/// used, from the map statics, so each map reference stays a constant the loader relocates
/// (the verifier takes no map pointer read from memory).
struct Stream<'m> {
    config: &'m Array<MonitorConfig>,
    bucket: &'m PerCpuArray<Bucket>,
    ring: &'m RingBuf,
    sampled: MonitorCounter,
    limited: MonitorCounter,
    full: MonitorCounter,
    emitted: MonitorCounter,
}

/// Reports the frame `cx` describes, just dropped, if a monitor is listening.
#[inline(always)]
pub fn dropped(xdp: &XdpContext, cx: &FrameCtx) {
    // A trace's frame is not one the network sent.
    if crate::dry_run::active() {
        return;
    }
    let drops = Stream {
        config: &MONITOR_CONFIG,
        bucket: &MONITOR_BUCKET,
        ring: &MONITOR_RING,
        sampled: MonitorCounter::Sampled,
        limited: MonitorCounter::RateLimited,
        full: MonitorCounter::RingFull,
        emitted: MonitorCounter::Emitted,
    };
    report(&drops, xdp, cx, xdp_action::XDP_DROP, EVENT_DROP);
}

/// The capture's stream (its settings, bucket, ring and counters).
#[inline(always)]
fn capture() -> Stream<'static> {
    Stream {
        config: &CAPTURE_CONFIG,
        bucket: &CAPTURE_BUCKET,
        ring: &CAPTURE_RING,
        sampled: MonitorCounter::Sampled,
        limited: MonitorCounter::CaptureRateLimited,
        full: MonitorCounter::CaptureRingFull,
        emitted: MonitorCounter::CaptureEmitted,
    }
}

/// Reports the frame as it arrived, before any stage changed it, if a capture of its port
/// asked for that (`xnic capture --at in|both`).
#[inline(always)]
pub fn arrived(xdp: &XdpContext, cx: &FrameCtx) {
    if crate::dry_run::active() {
        return;
    }
    // No action yet: none of the XDP actions' numbers.
    report(&capture(), xdp, cx, u32::MAX, EVENT_ARRIVED);
}

/// Reports the frame `cx` describes with the action it got, if a capture of its port runs.
#[inline(always)]
pub fn delivered(xdp: &XdpContext, cx: &FrameCtx, action: u32) {
    if crate::dry_run::active() {
        return;
    }
    report(&capture(), xdp, cx, action, EVENT_CAPTURE);
}

/// Whether `xnic capture` keeps the frame at `point` (asked only while a capture runs).
#[inline(always)]
fn kept(cx: &FrameCtx, point: u32) -> bool {
    CAPTURE_FILTER
        .get(0)
        .is_none_or(|f| f.keeps(&cx.parsed, point))
}

#[inline(always)]
fn report(s: &Stream<'_>, xdp: &XdpContext, cx: &FrameCtx, action: u32, kind: u32) {
    let Some(cfg) = s.config.get(0) else {
        return;
    };
    if cfg.until_ns == 0 {
        return;
    }
    // A capture takes one port's frames, at the points it asked for.
    let point = if kind == EVENT_ARRIVED {
        CAPTURE_IN
    } else {
        CAPTURE_OUT
    };
    if kind != EVENT_DROP && (cfg.ifindex != cx.ifindex || !kept(cx, point)) {
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if now > cfg.until_ns {
        return;
    }
    // SAFETY: helper without arguments.
    if cfg.sample > 1 && unsafe { bpf_get_prandom_u32() } % cfg.sample != 0 {
        count(s.sampled);
        return;
    }
    let Some(bucket) = s.bucket.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, as in `count`.
    if !admit(unsafe { &mut *bucket }, now, cfg.rate, cfg.burst) {
        count(s.limited);
        return;
    }
    if write(s.ring, xdp, cx, action, kind, now) {
        count(s.emitted);
    } else {
        count(s.full);
    }
}

/// Reports a frame of the flow `xnic monitor --trace` watches, with the stages it passed and
/// where it went, whatever its verdict.
#[inline(always)]
pub fn watched(xdp: &XdpContext, cx: &FrameCtx, action: u32) {
    if crate::dry_run::active() {
        return;
    }
    let Some(w) = WATCH_CONFIG.get(0) else {
        return;
    };
    if w.limits.until_ns == 0 || !w.flow.matches(&cx.parsed) {
        return;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if now > w.limits.until_ns {
        return;
    }
    let Some(bucket) = WATCH_BUCKET.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, as in `count`.
    if !admit(unsafe { &mut *bucket }, now, w.limits.rate, w.limits.burst) {
        count_watch(WatchCounter::RateLimited);
        return;
    }
    if write(&MONITOR_RING, xdp, cx, action, EVENT_TRACE, now) {
        count_watch(WatchCounter::Emitted);
    } else {
        count_watch(WatchCounter::RingFull);
    }
}

#[inline(always)]
fn count_watch(c: WatchCounter) {
    if let Some(v) = WATCH_STATS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, touched only by this CPU's programs, which do not nest.
        unsafe { *v += 1 };
    }
}

/// Writes the event for the frame `cx` describes into `ring`; false when the ring is full.
#[inline(always)]
fn write(
    ring: &RingBuf,
    xdp: &XdpContext,
    cx: &FrameCtx,
    action: u32,
    kind: u32,
    now: u64,
) -> bool {
    let Some(mut entry) = ring.reserve::<DropEvent>(0) else {
        return false;
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
        (*e).action = action;
        (*e).kind = kind;
        (*e).path = cx.path;
        (*e).next_kind = u32::from(cx.next.kind);
        (*e).next_target = cx.next.target;
        // Written so the verifier sees 1..=SNAP_LEN (SNAP_LEN is a power of two).
        let n = (captured.wrapping_sub(1) & (SNAP_LEN as u32 - 1)) + 1;
        let got =
            captured > 0 && bpf_xdp_load_bytes(xdp.ctx, 0, (&raw mut (*e).head).cast(), n) == 0;
        (*e).captured = if got { captured } else { 0 };
    }
    entry.submit(0);
    true
}
