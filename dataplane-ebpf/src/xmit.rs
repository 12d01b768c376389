//! The tracepoints that count frames the kernel dropped after a redirect (see
//! `xnic_common::xmit`).

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TracePointContext};
use xnic_common::xmit::{
    CPUMAP_ENQUEUE_DROPS, CPUMAP_ENQUEUE_MAP_ID, CPUMAP_ENQUEUE_TO_CPU, DEVMAP_XMIT_DROPS,
    DEVMAP_XMIT_FROM_IFINDEX, DEVMAP_XMIT_TO_IFINDEX, FLUSH_WINDOW_NS, REDIRECT_ERR_MAP_ID,
    REDIRECT_ERR_MAP_INDEX,
};

use crate::maps::{PORTS_V2, QUEUE_DROPS, REDIRECT_MARK, TRACE_CONFIG, XMIT_DROPS};

/// Counts one of this instance's redirects on this CPU (called by the delivery step).
#[inline(always)]
pub fn mark_redirect() {
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

/// `xdp:xdp_devmap_xmit`: a bulk of redirected frames went out of (or was dropped at) a port.
#[inline(always)]
pub fn devmap_xmit(ctx: &TracePointContext) {
    let Some(drops) = field::<i32>(ctx, DEVMAP_XMIT_DROPS) else {
        return;
    };
    if drops <= 0 {
        return;
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
    let (Some(from), Some(to)) = (
        field::<i32>(ctx, DEVMAP_XMIT_FROM_IFINDEX),
        field::<i32>(ctx, DEVMAP_XMIT_TO_IFINDEX),
    ) else {
        return;
    };
    // SAFETY: entries are plain data; the daemon replaces them whole.
    let ours = unsafe { PORTS_V2.get(from as u32) }.is_some();
    // SAFETY: as above.
    if let Some(port) = unsafe { PORTS_V2.get(to as u32) }
        && ours
    {
        add(&XMIT_DROPS, port.slot, drops as u64);
    }
}

/// `xdp:xdp_cpumap_enqueue`: a bulk of steered frames was queued to (or dropped at) a CPU.
#[inline(always)]
pub fn cpumap_enqueue(ctx: &TracePointContext) {
    let Some(drops) = field::<u32>(ctx, CPUMAP_ENQUEUE_DROPS) else {
        return;
    };
    if drops == 0 {
        return;
    }
    let (Some(map_id), Some(cpu)) = (
        field::<i32>(ctx, CPUMAP_ENQUEUE_MAP_ID),
        field::<i32>(ctx, CPUMAP_ENQUEUE_TO_CPU),
    ) else {
        return;
    };
    if TRACE_CONFIG
        .get(0)
        .is_some_and(|c| c.cpumap_id == map_id as u32)
    {
        add(&QUEUE_DROPS, cpu as u32, drops as u64);
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
        // SAFETY: entries are plain data; the daemon replaces them whole.
        if let Some(port) = unsafe { PORTS_V2.get(index as u32) } {
            add(&XMIT_DROPS, port.slot, 1);
        }
    } else if map_id == cfg.cpumap_id {
        add(&QUEUE_DROPS, index as u32, 1);
    }
}
