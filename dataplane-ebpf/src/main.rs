//! The XDP programs the xnic daemon attaches, each a short pipeline over `xnic_common`:
//!
//! - `xnic_uplink`, `xnic_vm`: the entry programs on host NICs and VM ports: parse →
//!   classify → guard, then either deliver or tail-call the stage the frame needs;
//! - `xnic_team`, `xnic_steer`: stages reached by tail calls (`CALLS`): a teamed VM's frame
//!   for the network, and software RSS for a frame for a VM;
//! - `xnic_shape`: tc ingress on VM ports: a shaped VM's TCP frame, passed up by the team
//!   stage, to its class on its uplink's queue (`xnic_common::shaper`);
//! - `xnic_decap`: the stage that looks inside VXLAN packets for offloaded flows;
//! - `xnic_vnic`, `xnic_vnic_out`: VNIC routing's two stages (who sent it, its rules and
//!   route; the next hop's rewrite), and `xnic_worker_vnic`, `xnic_worker_vnic_out`, the
//!   same on the worker CPU a fleet host's flow hashes to (reached from `xnic_cpumap`);
//! - `xnic_flow_tx`, `xnic_flow_exit`: count offloaded flows' frames leaving the fast path
//!   (a devmap program) and the kernel (tc egress), so moves between them reorder nothing;
//! - `xnic_cpumap`: runs on the CPU a frame was steered to and finishes it there;
//! - `xnic_flood`: filters broadcast copies bound for a team uplink;
//! - `xnic_redirect_err`, `xnic_xmit_drops`, `xnic_queue_drops`: tracepoints (the last two
//!   raw, as they run on every flush) that count frames the kernel drops after a redirect (a
//!   target that cannot take them, a full port or CPU queue);
//! - `xnic_carrier_off`: fentry on `netif_carrier_off`, which marks a team member down for
//!   the team stage before the daemon hears of it.
//!
//! Every frame ends in `deliver`, the one place that counts a frame and redirects it.
#![no_std]
#![no_main]
// Atomic add on map values (see steer.rs, team.rs).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod atomic;
mod calls;
mod carrier;
mod classify;
mod deliver;
mod dry_run;
mod flow;
mod lookup;
mod maps;
mod monitor;
mod pipeline;
mod rings;
mod shape;
mod steer;
mod tag;
mod team;
mod vnic;
mod xmit;

use aya_ebpf::{
    macros::{classifier, fentry, raw_tracepoint, tracepoint, xdp},
    programs::{FEntryContext, RawTracePointContext, TcContext, TracePointContext, XdpContext},
};
use calls::Stages;
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

/// Stage `Call::FlowDecap`: the offloaded flow inside a VXLAN packet on an uplink.
#[xdp(frags)]
pub fn xnic_decap(ctx: XdpContext) -> u32 {
    pipeline::flow_decap(&ctx)
}

/// Stage `Call::Vnic`: a packet for VNIC routing: its VNIC, rules and route.
#[xdp(frags)]
pub fn xnic_vnic(ctx: XdpContext) -> u32 {
    pipeline::vnic_arrive(&ctx, Stages::Entry)
}

/// Stage `Call::VnicOut`: VNIC routing's next hop.
#[xdp(frags)]
pub fn xnic_vnic_out(ctx: XdpContext) -> u32 {
    pipeline::vnic_leave(&ctx)
}

/// `xnic_vnic` on a worker CPU (`WORKER_CALLS`, from the CPU-map program).
#[xdp(frags, map = "cpumap")]
pub fn xnic_worker_vnic(ctx: XdpContext) -> u32 {
    pipeline::vnic_arrive(&ctx, Stages::Worker)
}

/// `xnic_vnic_out` on a worker CPU.
#[xdp(frags, map = "cpumap")]
pub fn xnic_worker_vnic_out(ctx: XdpContext) -> u32 {
    pipeline::vnic_leave(&ctx)
}

/// Runs on each fast-path frame leaving through `FLOW_TX` (a devmap entry's program):
/// counts it out for its flow, so demotion knows when nothing is in flight.
#[xdp(frags, map = "devmap")]
pub fn xnic_flow_tx(ctx: XdpContext) -> u32 {
    flow::transmitted(&ctx)
}

/// tc egress on every port: notes promoting flows' packets leaving the kernel.
#[classifier]
pub fn xnic_flow_exit(ctx: TcContext) -> i32 {
    pipeline::flow_exit(&ctx)
}

/// tc ingress on VM ports: a shaped VM's TCP frame, which the team stage passed up, to its
/// class on its uplink's queue.
#[classifier]
pub fn xnic_shape(ctx: TcContext) -> i32 {
    pipeline::shape(&ctx)
}

/// Runs on the CPU a frame was steered to (a CPU-map entry's program): accounts it there and
/// hands it to the kernel on that CPU, or to the VM's port when xnic switches, or routes a
/// VNIC's packet on its worker CPU.
#[xdp(frags, map = "cpumap")]
pub fn xnic_cpumap(ctx: XdpContext) -> u32 {
    pipeline::on_cpu(&ctx)
}

/// Runs on each broadcast copy bound for a team uplink (a devmap entry's program): lets it
/// out only through the sending VM's flood uplink.
#[xdp(frags, map = "devmap")]
pub fn xnic_flood(ctx: XdpContext) -> u32 {
    team::flood_filter(&ctx)
}

/// Raw `xdp_devmap_xmit`: counts frames the kernel dropped at a port after a redirect.
#[raw_tracepoint(tracepoint = "xdp_devmap_xmit")]
pub fn xnic_xmit_drops(ctx: RawTracePointContext) -> i32 {
    xmit::devmap_xmit(&ctx);
    0
}

/// `xdp:xdp_redirect_err`: counts frames whose redirect failed in the kernel.
#[tracepoint]
pub fn xnic_redirect_err(ctx: TracePointContext) -> u32 {
    xmit::redirect_err(&ctx);
    0
}

/// Raw `xdp_cpumap_enqueue`: counts frames dropped at a full CPU-map queue.
#[raw_tracepoint(tracepoint = "xdp_cpumap_enqueue")]
pub fn xnic_queue_drops(ctx: RawTracePointContext) -> i32 {
    xmit::cpumap_enqueue(&ctx);
    0
}

/// fentry on `netif_carrier_off`: marks a team member down the moment its carrier goes.
#[fentry(function = "netif_carrier_off")]
pub fn xnic_carrier_off(ctx: FEntryContext) -> u32 {
    carrier::off(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
