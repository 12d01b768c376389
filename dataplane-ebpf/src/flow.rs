//! The fast path for offloaded flows (`xnic_common::flow`): look the packet's tuple up, let
//! the flow's state decide (promoting, leaving, window), then rewrite it as the kernel's
//! router and NAT would and hand it to `deliver` for the redirect. A packet of no offloaded
//! flow is left exactly as it was.
//!
//! ```text
//! entry: classify → flow::offer ─┬─ miss ───────────────────────────→ the rest of the pipeline
//!                                ├─ hit: decide → rewrite ───────────→ deliver (FLOW_TX)
//!                                └─ VXLAN on an uplink → CALLS[FlowDecap] → xnic_decap:
//!                                    parse inside → decide → unwrap, rewrite → deliver
//! xnic_flow_tx   (FLOW_TX's program)    counts each flow's frames leaving the fast path
//! xnic_flow_exit (tc egress on ports)   records a promoting flow's packets leaving the kernel
//! xnic_cpumap                           counts a leaving flow's packets off the CPU-map queue
//! ```

use aya_ebpf::{
    bindings::TC_ACT_OK,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_xdp_adjust_head},
    programs::{TcContext, XdpContext},
};
use xnic_common::{
    ctx::{FrameCtx, Next, NextKind},
    flow::{
        self, DIR_DECAP, DIR_ENCAP, Decision, Events, FLOW_META_TAG, FlowCounter, FlowKey,
        FlowLive, FlowMeta, FlowState, Leave, Mode, Packet, Slow,
    },
    frame::{Frame, FrameMut},
    hash::flow_hash,
    headers::{EthHdr, IPPROTO_TCP, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr},
    parse::{L3, Parsed, parse},
    rewrite::{self, Check, L4Ports, OldAddrs, OuterV4, VXLAN_V4_OVERHEAD, VxlanHdr},
    rss::{NO_BUCKET, STEER_TAG, SteerMeta},
    tcp::OutOfWindow,
    verdict::Reason,
};

use crate::{
    atomic,
    maps::{
        DRY_FLOW_LIVE, FLOW_CONFIG, FLOW_LIVE, FLOW_STATE, FLOW_STATS, FLOW_TUNNELS, FLOW_TX, FLOWS,
    },
    tag,
};

#[inline(always)]
pub fn count(c: FlowCounter) {
    if crate::dry_run::active() {
        return;
    }
    if let Some(v) = FLOW_STATS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, touched only by this CPU's programs, which do not nest.
        unsafe { *v += 1 };
    }
}

/// What the entry program does next with a frame the fast path was offered.
pub enum Offer {
    /// Not an offloaded flow's: the pipeline goes on as if offload did not exist.
    Miss,
    /// An offloaded flow's: verdict and next hop are set, deliver it.
    Taken,
    /// A VXLAN packet that may carry one: look inside (`CALLS[FlowDecap]`).
    Decap,
}

/// The fast path's look at a frame the pipeline would hand to the kernel.
#[inline(always)]
pub fn offer(xdp: &XdpContext, cx: &mut FrameCtx, uplink: bool) -> Offer {
    let Some(config) = FLOW_CONFIG.get(0) else {
        return Offer::Miss;
    };
    if config.enabled == 0
        || !matches!(cx.verdict.reason, Reason::FromVm | Reason::NotForVm)
        || !cx.has(xnic_common::ctx::CTX_PARSED)
    {
        return Offer::Miss;
    }
    let p = &cx.parsed;
    if uplink && config.tunnels != 0 && is_vxlan(p) {
        return Offer::Decap;
    }
    let Some(key) = FlowKey::of(p, 0) else {
        return Offer::Miss;
    };
    if fast(xdp, cx, &key, 0) {
        Offer::Taken
    } else {
        Offer::Miss
    }
}

/// A VXLAN packet over IPv4 without options or VLAN tags: the only wrapping the fast path
/// takes apart (anything else stays with the kernel's VXLAN device).
#[inline(always)]
fn is_vxlan(p: &Parsed) -> bool {
    p.l3 == L3::Ipv4
        && p.ip_proto == IPPROTO_UDP
        && p.dst_port == xnic_common::headers::UDP_PORT_VXLAN
        && p.l4_offset as usize == EthHdr::LEN + Ipv4Hdr::MIN_LEN
}

/// Stage `Call::FlowDecap`: the flow inside a VXLAN packet on an uplink. Whatever is not an
/// offloaded flow's goes on to the kernel wrapped, as it came.
#[inline(always)]
pub fn decap(xdp: &XdpContext, cx: &mut FrameCtx) {
    let outer_shapes = cx.parsed.shapes;
    // SAFETY: the kernel guarantees [data, data_end) is readable for this invocation.
    let frame = unsafe { Frame::from_raw(xdp.data(), xdp.data_end(), cx.len as usize) };
    let Some(vx) = frame.header::<VxlanHdr>(EthHdr::LEN + Ipv4Hdr::MIN_LEN + 8) else {
        return;
    };
    let vni = vx.vni();
    let Some(inner) = inner_frame(xdp, cx.len as usize) else {
        return;
    };
    // The inner packet's headers replace the outer ones; what the rest needs of those (the
    // addresses, the VNI) is read from the frame again.
    let outcome = parse(&inner, &mut cx.parsed);
    let found = outcome.is_ok()
        && match FlowKey::of(&cx.parsed, vni) {
            Some(key) => fast(xdp, cx, &key, VXLAN_V4_OVERHEAD),
            None => false,
        };
    if !found {
        // Left to the kernel as it came: counted as the tunnel packet it is.
        cx.parsed.shapes = outer_shapes;
    }
}

/// The frame after the VXLAN outer headers, if it is that long.
#[inline(always)]
fn inner_frame(xdp: &XdpContext, len: usize) -> Option<Frame<'static>> {
    let start = xdp.data() + VXLAN_V4_OVERHEAD;
    let end = xdp.data_end();
    if start > end {
        return None;
    }
    // SAFETY: [start, end) is the tail of this invocation's readable packet data.
    Some(unsafe { Frame::from_raw(start, end, len.saturating_sub(VXLAN_V4_OVERHEAD)) })
}

/// The packet's flow, if it is offloaded: decides, and sets the verdict and next hop.
/// `outer_len`: the outer headers in front of the parsed (inner) packet. `false`: no flow.
#[inline(always)]
fn fast(xdp: &XdpContext, cx: &mut FrameCtx, key: &FlowKey, outer_len: usize) -> bool {
    // SAFETY: a value of a hash map the daemon alone writes; copied out at once.
    let Some(r) = (unsafe { FLOWS.get(key) }).copied() else {
        count(FlowCounter::Missed);
        return false;
    };
    let (Some(state), Some(live)) = (FLOW_STATE.get(r.slot), live_entry(r.slot)) else {
        return false;
    };
    // SAFETY: a value in the FLOW_LIVE array, which lives as long as the map; programs on
    // other CPUs write it too, field by field, the counts atomically.
    let live = unsafe { &mut *live };
    cx.verdict.reason = Reason::FlowSlow;
    if state.generation != r.generation || live.generation != r.generation {
        count(FlowCounter::Stale);
        return true;
    }
    let dir = (r.dir & 1) as usize;
    cx.offload = r.slot * 2 + dir as u32;
    let frame = if outer_len == 0 {
        // SAFETY: the kernel guarantees [data, data_end) is readable for this invocation.
        unsafe { Frame::from_raw(xdp.data(), xdp.data_end(), cx.len as usize) }
    } else {
        match inner_frame(xdp, cx.len as usize) {
            Some(f) => f,
            None => return true,
        }
    };
    let Some(pkt) = packet(&frame, &cx.parsed, dir, cx.ifindex) else {
        return true;
    };
    let mut ev = Events::default();
    let decision = flow::decide(state, live, &pkt, &mut ev);
    if let Some(w) = ev.window {
        count(match w {
            OutOfWindow::SeqOver => FlowCounter::WindowSeqOver,
            OutOfWindow::SeqUnder => FlowCounter::WindowSeqUnder,
            OutOfWindow::AckOver => FlowCounter::WindowAckOver,
            OutOfWindow::AckUnder => FlowCounter::WindowAckUnder,
        });
    }
    match ev.left {
        Some(Leave::OutOfWindow) => count(FlowCounter::LeaveWindow),
        Some(Leave::TcpOptions) => count(FlowCounter::LeaveOptions),
        Some(_) => count(FlowCounter::LeaveFlags),
        None => {}
    }
    if ev.drained {
        count(FlowCounter::PromoteDrained);
    }
    match decision {
        Decision::Forward => forward(xdp, cx, state, live, dir, key, outer_len),
        Decision::Slow(why) => count_slow(why),
        Decision::SlowBehind(why) => {
            count_slow(why);
            behind(xdp, cx);
        }
    }
    true
}

/// What window tracking and the decision need to know of the packet.
#[inline(always)]
fn packet(frame: &Frame, p: &Parsed, dir: usize, ingress: u32) -> Option<Packet> {
    let l3 = flow::l3_at(p);
    let (ttl, ip_len) = if p.l3 == L3::Ipv4 {
        let ip: &Ipv4Hdr = frame.header(l3)?;
        (ip.ttl, ip.total_len() as u32)
    } else {
        let ip: &Ipv6Hdr = frame.header(l3)?;
        (ip.hop_limit, (p.ip_end as usize).saturating_sub(l3) as u32)
    };
    let (tcp, options_unknown) = if p.ip_proto == IPPROTO_TCP {
        let (seg, unknown) = flow::segment(frame, p)?;
        (Some(seg), unknown)
    } else {
        (None, false)
    };
    Some(Packet {
        dir,
        ingress,
        ttl,
        ip_len,
        tcp,
        tcp_options_unknown: options_unknown,
        fingerprint: flow::fingerprint(frame, p).unwrap_or(1),
        // SAFETY: helper without arguments.
        now_ns: unsafe { bpf_ktime_get_ns() },
    })
}

#[inline(always)]
fn count_slow(why: Slow) {
    count(match why {
        Slow::Pending => FlowCounter::SlowPending,
        Slow::Leaving => FlowCounter::SlowLeaving,
        Slow::WrongPort => FlowCounter::WrongPort,
        Slow::TtlExpired => FlowCounter::TtlExpired,
        Slow::TooBig => FlowCounter::TooBig,
        Slow::Stale => FlowCounter::Stale,
    });
}

/// To the kernel through this CPU's CPU-map queue, behind the flow's frames in flight.
#[inline(always)]
fn behind(xdp: &XdpContext, cx: &mut FrameCtx) {
    let meta = SteerMeta {
        magic: STEER_TAG,
        flow_slot: cx.offload,
        bucket: NO_BUCKET,
        vm_slot: FLOW_META_TAG,
        deliver_ifindex: 0,
        _pad: 0,
    };
    if !tag::push(xdp, cx, meta) {
        undo_behind(cx);
        return;
    }
    count(FlowCounter::SlowBehind);
    // SAFETY: helper without arguments.
    let here = unsafe { bpf_get_smp_processor_id() };
    let cpu = match live_dir(cx.offload) {
        Some(d) => {
            // SAFETY: a field of the FLOW_LIVE value; a race between two CPUs setting it
            // first leaves one of them, and both of their packets are already counted.
            let pinned = unsafe { &mut (*d).behind_cpu };
            match u16::from_le_bytes(*pinned) {
                0 => {
                    *pinned = ((here as u16).wrapping_add(1)).to_le_bytes();
                    here
                }
                n => u32::from(n - 1),
            }
        }
        None => here,
    };
    cx.next = Next {
        kind: NextKind::FlowCpu as u8,
        target: cpu,
        ..Next::KERNEL
    };
}

/// Flow `slot`'s `FLOW_LIVE` entry, or in a dry run this CPU's copy of it.
#[inline(always)]
fn live_entry(slot: u32) -> Option<*mut FlowLive> {
    crate::dry_run::private(FLOW_LIVE.get_ptr_mut(slot)?, &DRY_FLOW_LIVE)
}

/// The live direction a frame context's `offload` names.
#[inline(always)]
fn live_dir(slot_dir: u32) -> Option<*mut flow::LiveDir> {
    let live = live_entry(slot_dir / 2)?;
    // SAFETY: `live` points into the FLOW_LIVE array value (or a dry run's copy).
    Some(unsafe { &raw mut (*live).dirs[(slot_dir & 1) as usize] })
}

/// The CPU-map redirect failed (no queue on this CPU): the packet goes up here.
#[inline(always)]
pub fn undo_behind(cx: &FrameCtx) {
    if let Some(d) = live_dir(cx.offload) {
        // SAFETY: a field of the FLOW_LIVE value.
        atomic::sub(unsafe { &raw mut (*d).cpu_sent });
    }
    count(FlowCounter::NoCpuQueue);
}

/// The device-map redirect failed after the rewrite: nothing is in flight after all.
#[inline(always)]
pub fn undo_sent(cx: &FrameCtx) {
    if let Some(d) = live_dir(cx.offload) {
        // SAFETY: a field of the FLOW_LIVE value.
        atomic::sub(unsafe { &raw mut (*d).fast_sent });
    }
    count(FlowCounter::RedirectFailed);
}

/// Rewrites the packet for its next hop and readies the redirect. Anything that cannot be
/// done leaves the packet untouched for the slow path.
#[inline(always)]
fn forward(
    xdp: &XdpContext,
    cx: &mut FrameCtx,
    state: &FlowState,
    live: &mut FlowLive,
    dir: usize,
    key: &FlowKey,
    outer_len: usize,
) {
    let out = &state.dirs[dir];
    // SAFETY: a value of a device map; only its presence matters.
    if FLOW_TX.get(out.out_ifindex).is_none() {
        count(FlowCounter::RedirectFailed);
        return;
    }
    let tunnel = if out.flags & DIR_ENCAP != 0 {
        match FLOW_TUNNELS.get(u32::from(out.tunnel)) {
            Some(t) if t.valid != 0 => Some(t),
            _ => {
                count(FlowCounter::TunnelFailed);
                return;
            }
        }
    } else {
        None
    };
    if out.flags & DIR_DECAP != 0 || outer_len != 0 {
        // The flow says it arrives wrapped, and it must have come from its tunnel.
        let from_tunnel = outer_len != 0
            && match FLOW_TUNNELS.get(u32::from(out.tunnel)) {
                Some(t) => {
                    // SAFETY: the kernel guarantees [data, data_end) is readable.
                    let f = unsafe { Frame::from_raw(xdp.data(), xdp.data_end(), 0) };
                    match (
                        f.header::<Ipv4Hdr>(EthHdr::LEN),
                        f.header::<VxlanHdr>(EthHdr::LEN + Ipv4Hdr::MIN_LEN + 8),
                    ) {
                        (Some(ip), Some(vx)) => rewrite::is_from(t, ip, vx),
                        _ => false,
                    }
                }
                None => false,
            };
        if !from_tunnel || out.flags & DIR_DECAP == 0 {
            count(FlowCounter::TunnelMismatch);
            return;
        }
        // SAFETY: `xdp.ctx` is this invocation's xdp_md; a positive delta drops the outer
        // headers, which `decap` found in the linear part.
        if unsafe { bpf_xdp_adjust_head(xdp.ctx, outer_len as i32) } != 0 {
            count(FlowCounter::TunnelFailed);
            return;
        }
    }
    if !rewrite_inner(xdp, &cx.parsed, key, out) {
        // Only a frame changed under us fails here; it is dropped rather than sent on
        // half-rewritten.
        cx.verdict.reason = Reason::FlowRedirectFailed;
        cx.next = Next::KERNEL;
        return;
    }
    if let Some(t) = tunnel {
        let inner_len = xdp.data_end() - xdp.data();
        let h = flow_hash(&cx.parsed, 0, false);
        let d = &live.dirs[dir];
        let (src_port, ip_id) = (flow::tunnel_src_port(t, h), d.packets as u16);
        // SAFETY: `xdp.ctx` is this invocation's xdp_md; a negative delta makes room in
        // front for the outer headers.
        if unsafe { bpf_xdp_adjust_head(xdp.ctx, -(VXLAN_V4_OVERHEAD as i32)) } != 0 {
            count(FlowCounter::TunnelFailed);
            cx.verdict.reason = Reason::FlowRedirectFailed;
            return;
        }
        // SAFETY: the kernel guarantees [data, data_end) is writable for this invocation.
        let mut f = unsafe { FrameMut::from_raw(xdp.data(), xdp.data_end()) };
        match f.header_mut::<OuterV4>(0) {
            Some(o) => rewrite::vxlan_v4(o, t, inner_len, src_port, ip_id),
            None => {
                cx.verdict.reason = Reason::FlowRedirectFailed;
                return;
            }
        }
    }
    let d = &mut live.dirs[dir];
    atomic::add64(&raw mut d.packets, 1);
    atomic::add64(&raw mut d.bytes, cx.len);
    atomic::add(&raw mut d.fast_sent);
    if !tag::push(xdp, cx, FlowMeta::new(cx.offload)) {
        // The device map's program will not count it: neither do we.
        atomic::sub(&raw mut d.fast_sent);
    }
    count(FlowCounter::Forwarded);
    cx.verdict.reason = Reason::FlowForward;
    cx.next = Next::port_or_drop(out.out_ifindex, Reason::FlowRedirectFailed);
    cx.next.kind = NextKind::FlowOut as u8;
}

/// MACs, addresses, ports, TTL and checksums of the (inner) packet now at the frame's start.
#[inline(always)]
fn rewrite_inner(xdp: &XdpContext, p: &Parsed, key: &FlowKey, out: &flow::FlowDir) -> bool {
    // SAFETY: the kernel guarantees [data, data_end) is writable for this invocation.
    let mut f = unsafe { FrameMut::from_raw(xdp.data(), xdp.data_end()) };
    let (l3, l4) = (flow::l3_at(p), flow::l4_at(p));
    let Some(eth) = f.header_mut::<EthHdr>(0) else {
        return false;
    };
    rewrite::ethernet(eth, out);
    if key.family == 4 {
        let Some(ip) = f.header_mut::<Ipv4Hdr>(l3) else {
            return false;
        };
        rewrite::ipv4(ip, out);
    } else {
        let Some(ip) = f.header_mut::<Ipv6Hdr>(l3) else {
            return false;
        };
        rewrite::ipv6(ip, out);
    }
    let old = OldAddrs {
        src: &p.src_ip,
        dst: &p.dst_ip,
        v4: key.family == 4,
    };
    let check_at = l4 + rewrite::check_offset(key.proto);
    let Some(check) = f.header_mut::<Check>(check_at).copied() else {
        return false;
    };
    let Some(ports) = f.header_mut::<L4Ports>(l4) else {
        return false;
    };
    let mut c = check;
    rewrite::transport(ports, &mut c, key.proto, old, out);
    match f.header_mut::<Check>(check_at) {
        Some(slot) => *slot = c,
        None => return false,
    }
    true
}

/// `FLOW_TX`'s program: a fast-path frame leaves; its flow counts it.
#[inline(always)]
pub fn transmitted(xdp: &XdpContext) -> u32 {
    use aya_ebpf::bindings::xdp_action::{XDP_DROP, XDP_PASS};
    // A frame without a tag (there was no headroom for one) was not counted as sent either.
    let Some(slot_dir) = tag::peek::<FlowMeta>(xdp).and_then(FlowMeta::slot_dir) else {
        return XDP_PASS;
    };
    if !tag::pop(xdp, size_of::<FlowMeta>()) {
        count(FlowCounter::RedirectFailed);
        return XDP_DROP;
    }
    if let Some(d) = live_dir(slot_dir) {
        // SAFETY: a field of the FLOW_LIVE value.
        atomic::add(unsafe { &raw mut (*d).fast_done });
    }
    XDP_PASS
}

/// The CPU-map program found a leaving flow's packet: it is off the queue.
#[inline(always)]
pub fn dequeued(slot_dir: u32) {
    if let Some(d) = live_dir(slot_dir) {
        // SAFETY: a field of the FLOW_LIVE value.
        atomic::add(unsafe { &raw mut (*d).cpu_done });
    }
}

/// tc egress on every port: while flows are promoting or leaving, notes each one's packets
/// leaving the kernel (their fingerprint), so the fast path knows when the slow path has let
/// go.
#[inline(always)]
pub fn exit(tc: &TcContext) -> i32 {
    match FLOW_CONFIG.get(0) {
        Some(c) if c.pending != 0 => {}
        _ => return TC_ACT_OK,
    }
    let len = tc.len() as usize;
    // SAFETY: the kernel guarantees [data, data_end) is readable for this invocation.
    let frame = unsafe { Frame::from_raw(tc.data(), tc.data_end(), len) };
    let mut p = Parsed::default();
    if parse(&frame, &mut p).is_err() {
        return TC_ACT_OK;
    }
    let tunnels = FLOW_CONFIG.get(0).is_some_and(|c| c.tunnels != 0);
    if tunnels && is_vxlan(&p) {
        let start = tc.data() + VXLAN_V4_OVERHEAD;
        let vni = match frame.header::<VxlanHdr>(EthHdr::LEN + Ipv4Hdr::MIN_LEN + 8) {
            Some(v) => v.vni(),
            None => return TC_ACT_OK,
        };
        if start > tc.data_end() {
            return TC_ACT_OK;
        }
        // SAFETY: the tail of this invocation's readable packet data.
        let inner = unsafe { Frame::from_raw(start, tc.data_end(), len - VXLAN_V4_OVERHEAD) };
        if parse(&inner, &mut p).is_err() {
            return TC_ACT_OK;
        }
        seen_leaving(&inner, &p, vni);
    } else {
        seen_leaving(&frame, &p, 0);
    }
    TC_ACT_OK
}

/// A packet leaving the kernel: if its flow's direction is promoting, it is the last one
/// passed when its fingerprint says so.
#[inline(always)]
fn seen_leaving(frame: &Frame, p: &Parsed, vni: u32) {
    let Some(key) = FlowKey::of(p, vni) else {
        return;
    };
    // Leaving rewritten, it is the other direction's key reversed (`flow::leaves_as`).
    // SAFETY: a value of a hash map the daemon alone writes; copied out at once.
    let Some(r) = (unsafe { FLOWS.get(key.reversed()) }).copied() else {
        return;
    };
    let Some(live) = FLOW_LIVE.get_ptr_mut(r.slot) else {
        return;
    };
    // SAFETY: a value in the FLOW_LIVE array.
    let live = unsafe { &mut *live };
    if live.generation != r.generation {
        return;
    }
    let leaving = live.leave != 0;
    let d = &mut live.dirs[((r.dir & 1) ^ 1) as usize];
    if d.mode != Mode::Pending as u8 && !leaving {
        return;
    }
    if let Some(fp) = flow::fingerprint(frame, p) {
        // Leaving, only the packet last sent through a CPU-map queue is waited for.
        if leaving && fp != d.pass_fp {
            return;
        }
        // The time first: the fast path reads the fingerprint, then the time.
        // SAFETY: a helper without arguments.
        d.since_ns = unsafe { bpf_ktime_get_ns() };
        d.exit_fp = fp;
        atomic::add(&raw mut d.slow_exits);
        count(FlowCounter::ExitSeen);
    }
}
