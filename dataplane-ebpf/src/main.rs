//! The XDP programs the xnic daemon attaches: one for uplinks, one for VM ports. Each is the
//! same short pipeline (see `pipeline.rs`) with the logic in `xnic_common`.
#![no_std]
#![no_main]

mod maps;
mod pipeline;
mod stats;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use xnic_common::maps::PortRole;

/// Frames arriving from the network on a host uplink.
#[xdp(frags)]
pub fn xnic_uplink(ctx: XdpContext) -> u32 {
    pipeline::run(&ctx, PortRole::Uplink)
}

/// Frames a VM sends, arriving on the host side of its virtual NIC.
#[xdp(frags)]
pub fn xnic_vm(ctx: XdpContext) -> u32 {
    pipeline::run(&ctx, PortRole::Vm)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
