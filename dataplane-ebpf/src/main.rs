//! The XDP programs the xnic daemon attaches: one for uplinks, one for VM ports. Each is the
//! same short pipeline (see `pipeline.rs`) with the logic in `xnic_common`.
#![no_std]
#![no_main]
// Atomic add on map values (see steer.rs).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod maps;
mod pipeline;
mod stats;
mod steer;
mod team;

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

/// Runs on the CPU a frame was steered to (a CPU-map entry's program): accounts it there and
/// hands it to the kernel on that CPU, or to the VM's port when xnic switches.
#[xdp(frags, map = "cpumap")]
pub fn xnic_cpumap(ctx: XdpContext) -> u32 {
    steer::finish(&ctx)
}

/// Runs on each broadcast copy bound for a team uplink (a devmap entry's program): lets it
/// out only through the sending VM's flood uplink.
#[xdp(frags, map = "devmap")]
pub fn xnic_flood(ctx: XdpContext) -> u32 {
    team::flood_filter(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
