//! Team members the kernel found dead, noted in `MEMBER_DOWN` without a trip through the
//! daemon: by an fentry program on `netif_carrier_off` where the kernel allows tracing
//! programs, and always by the devmap tracepoint when a flush to a member fails because it
//! cannot transmit at all (`xmit.rs`). A member marked later than the daemon started using
//! it (`MEMBER_UP`) is down for the team stage, which sends the VMs placed on it to their
//! fallback members before the daemon hears of the change. The daemon never writes
//! `MEMBER_DOWN` and these programs never write `MEMBER_UP`, so neither undoes the other.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    programs::FEntryContext,
};
use xnic_common::team::CarrierKey;

use crate::maps::{CARRIER_WATCH, MEMBER_DOWN, TRACE_CONFIG};

/// Reads a `T` at `base + offset` of kernel memory.
#[inline(always)]
fn read<T>(base: u64, offset: u32) -> Option<T> {
    let at = base.checked_add(u64::from(offset))? as *const T;
    // SAFETY: a checked kernel read at an offset the kernel's BTF gives into a structure the
    // hook was handed (a live `net_device`, its `net`).
    unsafe { bpf_probe_read_kernel(at) }.ok()
}

/// `netif_carrier_off(dev)`.
#[inline(always)]
pub fn off(ctx: &FEntryContext) {
    mark_down(ctx.arg(0));
}

/// If `dev` (a `struct net_device *`) is a watched team member, notes that it is down now.
#[inline(always)]
pub fn mark_down(dev: u64) {
    let Some(cfg) = TRACE_CONFIG.get(0) else {
        return;
    };
    let (Some(ifindex), Some(net)) = (
        read::<i32>(dev, cfg.netdev_ifindex),
        read::<u64>(dev, cfg.netdev_net),
    ) else {
        return;
    };
    let Some(netns) = read::<u32>(net, cfg.net_inum) else {
        return;
    };
    let key = CarrierKey {
        netns,
        ifindex: ifindex as u32,
    };
    // SAFETY: entries are plain data, written whole by the daemon.
    let Some(&index) = (unsafe { CARRIER_WATCH.get(key) }) else {
        return;
    };
    if let Some(down) = MEMBER_DOWN.get_ptr_mut(index) {
        // SAFETY: `down` points into the MEMBER_DOWN array value; an aligned 64-bit store is
        // not torn, and a racing hook writes a time as good.
        unsafe { core::ptr::write_volatile(down, bpf_ktime_get_ns()) };
    }
}
