//! The tracepoints that count frames the kernel dropped after a redirect (see
//! `xnic_common::xmit`).

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    programs::{RawTracePointContext, TracePointContext},
};
use xnic_common::xmit::{
    CPUMAP_ENQUEUE_DROPS, CPUMAP_ENQUEUE_MAP_ID, CPUMAP_ENQUEUE_TO_CPU, DEVMAP_XMIT_DROPS,
    DEVMAP_XMIT_ERR, DEVMAP_XMIT_FROM_DEV, DEVMAP_XMIT_SENT, DEVMAP_XMIT_TO_DEV, FLUSH_WINDOW_NS,
    REDIRECT_ERR_MAP_ID, REDIRECT_ERR_MAP_INDEX, target_dead,
};

use crate::{
    lookup::port_entry,
    maps::{QUEUE_DROPS, REDIRECT_MARK, TRACE_CONFIG, XMIT_DROPS},
};

/// Counts one of this instance's redirects on this CPU (called by the delivery step).
#[inline(always)]
pub fn mark_redirect() {
    if crate::dry_run::active() {
        return;
    }
    if let Some(m) = REDIRECT_MARK.get_ptr_mut(0) {
        // SAFETY: this CPU's entry, touched only by programs on this CPU.
        unsafe { (*m).redirects += 1 };
    }
}

#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: usize) -> Option<T> {
    // SAFETY: reads from the tracepoint's record at an offset its format gives.
    unsafe { ctx.read_at::<T>(offset) }.ok()
}

#[inline(always)]
fn add(map: &aya_ebpf::maps::PerCpuArray<u64>, index: u32, n: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: this CPU's entry.
        unsafe { *c += n };
    }
}

/// The `ifindex` of the `struct net_device` at `dev`, at the offset the daemon read from the
/// kernel's BTF.
#[inline(always)]
fn ifindex(dev: u64, offset: u32) -> Option<u32> {
    let field = dev.checked_add(u64::from(offset))? as *const i32;
    // SAFETY: a checked kernel read of a tracepoint argument (a valid `net_device`) at the
    // offset the kernel's BTF gives.
    unsafe { bpf_probe_read_kernel(field) }
        .ok()
        .map(|i| i as u32)
}

/// Raw `xdp_devmap_xmit`: a bulk of redirected frames went out of (or was dropped at) a
/// port.
#[inline(always)]
pub fn devmap_xmit(ctx: &RawTracePointContext) {
    let drops = ctx.arg::<u64>(DEVMAP_XMIT_DROPS) as i32;
    if drops <= 0 {
        return;
    }
    if target_dead(
        ctx.arg::<u64>(DEVMAP_XMIT_SENT) as i32,
        ctx.arg::<u64>(DEVMAP_XMIT_ERR) as i32,
    ) {
        crate::carrier::mark_down(ctx.arg(DEVMAP_XMIT_TO_DEV));
    }
    let Some(mark) = REDIRECT_MARK.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: this CPU's entry.
    let m = unsafe { &mut *mark };
    if m.redirects != m.seen {
        m.seen = m.redirects;
        m.seen_at_ns = now;
    }
    if m.seen_at_ns == 0 || now.saturating_sub(m.seen_at_ns) > FLUSH_WINDOW_NS {
        return;
    }
    let Some(cfg) = TRACE_CONFIG.get(0) else {
        return;
    };
    let (Some(from), Some(to)) = (
        ifindex(ctx.arg(DEVMAP_XMIT_FROM_DEV), cfg.netdev_ifindex),
        ifindex(ctx.arg(DEVMAP_XMIT_TO_DEV), cfg.netdev_ifindex),
    ) else {
        return;
    };
    let ours = port_entry(from).is_some();
    if let Some(port) = port_entry(to)
        && ours
    {
        add(&XMIT_DROPS, port.slot, drops as u64);
    }
}

/// Raw `xdp_cpumap_enqueue`: a bulk of steered frames was queued to (or dropped at) a CPU.
#[inline(always)]
pub fn cpumap_enqueue(ctx: &RawTracePointContext) {
    let drops = ctx.arg::<u64>(CPUMAP_ENQUEUE_DROPS) as u32;
    if drops == 0 {
        return;
    }
    let map_id = ctx.arg::<u64>(CPUMAP_ENQUEUE_MAP_ID) as u32;
    let cpu = ctx.arg::<u64>(CPUMAP_ENQUEUE_TO_CPU) as u32;
    if TRACE_CONFIG.get(0).is_some_and(|c| c.cpumap_id == map_id) {
        add(&QUEUE_DROPS, cpu, u64::from(drops));
    }
}

/// `xdp:xdp_redirect_err`: one frame whose redirect failed in the kernel after the program
/// asked for it (a target that cannot take redirected frames, a CPU without a queue).
#[inline(always)]
pub fn redirect_err(ctx: &TracePointContext) {
    let (Some(map_id), Some(index)) = (
        field::<u32>(ctx, REDIRECT_ERR_MAP_ID),
        field::<i32>(ctx, REDIRECT_ERR_MAP_INDEX),
    ) else {
        return;
    };
    let Some(cfg) = TRACE_CONFIG.get(0) else {
        return;
    };
    if map_id == cfg.tx_ports_id {
        // `TX_PORTS` is keyed by the target's ifindex.
        if let Some(port) = port_entry(index as u32) {
            add(&XMIT_DROPS, port.slot, 1);
        }
    } else if map_id == cfg.cpumap_id {
        add(&QUEUE_DROPS, index as u32, 1);
    }
}
