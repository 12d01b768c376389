//! The XDP programs the xnic daemon attaches, each a short pipeline over `xnic_common`:
//!
//! - `xnic_uplink`, `xnic_vm`: the entry programs on host NICs and VM ports: parse →
//!   classify → guard, then either deliver or tail-call the stage the frame needs;
//! - `xnic_team`, `xnic_steer`: stages reached by tail calls (`CALLS`): a teamed VM's frame
//!   for the network, and software RSS for a frame for a VM;
//! - `xnic_cpumap`: runs on the CPU a frame was steered to and finishes it there;
//! - `xnic_flood`: filters broadcast copies bound for a team uplink.
//!
//! Every frame ends in `deliver`, the one place that counts a frame and redirects it.
#![no_std]
#![no_main]
// Atomic add on map values (see steer.rs, team.rs).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod calls;
mod classify;
mod deliver;
mod maps;
mod pipeline;
mod steer;
mod team;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use xnic_common::maps::PortRole;

/// Frames arriving from the network on a host uplink.
#[xdp(frags)]
pub fn xnic_uplink(ctx: XdpContext) -> u32 {
    pipeline::entry(&ctx, PortRole::Uplink)
}

/// Frames a VM sends, arriving on the host side of its virtual NIC.
#[xdp(frags)]
pub fn xnic_vm(ctx: XdpContext) -> u32 {
    pipeline::entry(&ctx, PortRole::Vm)
}

/// Stage `Call::TeamEgress`: a teamed VM's frame for the network.
#[xdp(frags)]
pub fn xnic_team(ctx: XdpContext) -> u32 {
    pipeline::team_egress(&ctx)
}

/// Stage `Call::Steer`: a frame for a VM, to the CPU its RSS state names.
#[xdp(frags)]
pub fn xnic_steer(ctx: XdpContext) -> u32 {
    pipeline::steer(&ctx)
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
