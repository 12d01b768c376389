//! The least an XDP program can do, to measure the XDP path itself (passing, dropping,
//! redirecting): the benchmarks compare the
//! dataplane's programs against these on the same interface in the same run.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::DevMap,
    programs::XdpContext,
};

/// Where `baseline_redirect` sends every frame: one device, set by the benchmark.
#[map]
static REDIRECT_TO: DevMap = DevMap::with_max_entries(1, 0);

#[xdp(frags)]
pub fn baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp(frags)]
pub fn baseline_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

/// Every frame out of another device, untouched: the least a forwarding program can do.
#[xdp]
pub fn baseline_redirect(_ctx: XdpContext) -> u32 {
    REDIRECT_TO
        .redirect(0, 0)
        .unwrap_or(xdp_action::XDP_ABORTED)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
