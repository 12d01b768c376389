//! VNIC routing (SPEC §2.3, `xnic_common::vnic`): a fleet host forwards for VNICs every host
//! of the fleet knows. Two stages, each a program of its own:
//!
//! ```text
//! entry (uplink, VNIC routing on, IPv4 for no VM) → CALLS[Vnic] → xnic_vnic:
//!   VXLAN to the fleet's VTEP or ours: unwrap, parse inside; then by VNI and inner MAC:
//!     a VNIC's  → spoofed? TTL? its egress rules → its VCN, else its route table
//!                 (through virtual routers) → the next hop
//!     a gateway's VNI (service, on-premises) → the VNIC of its VCN that has the address
//!     the hand-off VNI (to our VTEP) → as from the public side
//!   unwrapped, to a public address of the fleet: a VNIC's 1:1 one, or a NAT gateway's
//!     (its port's owner host: us, else hand it there)
//!   anything else: the host's own, as classified
//! → CALLS[VnicOut] → xnic_vnic_out: the next hop's part:
//!   VNIC: its ingress rules, NAT undone, TTL, inner MACs, wrapped to its host's VTEP
//!   internet gateway: 1:1 source, TTL, unwrapped; NAT gateway: a public port, unwrapped;
//!   service / on-premises gateway: wrapped to its VTEP in its VNI; hand-off: to the owner
//! → deliver: back out of the uplink (XDP_TX), to the router that brought it.
//! ```
//!
//! Every packet ends with a reason (`vnic_forward` or the drop's), counted against its VNIC
//! (`VNIC_STATS`), its route (`ROUTE_STATS`) and what happened (`VNIC_EVENTS`).

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_xdp_adjust_head, maps::lpm_trie::Key, programs::XdpContext,
};
use xnic_common::{
    ctx::{
        CTX_PARSED, FROM_GATEWAY, FROM_HANDOFF, FROM_INSTANCE, FROM_PUBLIC, FrameCtx, Next, VnicCtx,
    },
    frame::{Frame, FrameMut},
    hash::flow_hash,
    headers::{EthHdr, IPPROTO_TCP, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr},
    maps::Counter,
    parse::{Fragment, L3, parse},
    rewrite::{self, Check, L4Ports, OuterV4, VXLAN_FLAG_VNI, VxlanHdr, check_offset},
    verdict::Reason,
    vnic::{
        self, AclPacket, Admission, CachedRoute, GatewayEntry, MAX_ROUTER_HOPS, MAX_RULES, Matched,
        NAT_IN, NAT_OUT, NAT_PORT_TRIES, NatEntry, NatKey, NextHop, OUTER_LEN, PUBLIC_NAT,
        PUBLIC_VNIC, RouteAddrV4, RouteAddrV6, RouteCacheKey, RouteEntry, Side, VNIC_VALID,
        VnicAddrKey, VnicConfig, VnicCounter, VnicEntry, VnicMacKey, route_prefix_len, vcn_table,
    },
};

use crate::{
    atomic,
    maps::{
        ACL_RULES, FLEET_HOSTS, GATEWAY_VNIS, GATEWAYS, NAT_SESSIONS, PUBLIC_ADDRS, ROUTE_CACHE,
        ROUTE_GEN, ROUTE_STATS, ROUTES_V4, ROUTES_V6, VNIC_ADDRS, VNIC_CONFIG, VNIC_EVENTS,
        VNIC_MACS, VNIC_STATS, VNICS,
    },
};

/// `VnicCtx::hop` beyond the route kinds: a NAT answer for a port another host owns.
const HOP_HANDOFF: u8 = 16;
/// A NAT answer for one of our ports: its connection says where it goes.
const HOP_NAT_ANSWER: u8 = 17;

/// Where the outer UDP header of a wrapped packet starts, and its VXLAN header.
const OUTER_UDP: usize = EthHdr::LEN + Ipv4Hdr::MIN_LEN;
const OUTER_VXLAN: usize = OUTER_UDP + 8;

#[inline(always)]
fn event(c: VnicCounter) {
    if crate::dry_run::active() {
        return;
    }
    if let Some(v) = VNIC_EVENTS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, touched only by this CPU's programs, which do not nest.
        unsafe { *v += 1 };
    }
}

#[inline(always)]
fn config() -> Option<&'static VnicConfig> {
    VNIC_CONFIG.get(0).filter(|c| c.enabled != 0)
}

/// The RSS engine whose CPUs route the fleet's packets, if there is one.
#[inline(always)]
pub fn worker_engine() -> Option<u32> {
    config()
        .filter(|c| c.workers != 0)
        .map(|c| u32::from(c.engine))
}

/// Whether the entry program should hand a frame to VNIC routing: IPv4 on an uplink that no
/// VM's MAC claimed, while VNIC routing is on. The stage leaves what is not its own as it was.
#[inline(always)]
pub fn wants(cx: &FrameCtx) -> bool {
    cx.verdict.reason == Reason::NotForVm
        && cx.has(CTX_PARSED)
        && cx.parsed.l3 == L3::Ipv4
        && cx.parsed.vlan_count == 0
        && config().is_some()
}

#[inline(always)]
fn v4(a: &[u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

/// Ends the frame with `reason`, counted against the VNIC it belongs to.
#[inline(always)]
fn finish(cx: &mut FrameCtx, reason: Reason) {
    cx.verdict.reason = reason;
    if reason == Reason::VnicForward {
        cx.next = Next::BACK;
    } else {
        cx.next = Next::KERNEL;
        // Against the VNIC that sent it, and the one it was for once that is known.
        if cx.vnic.from == FROM_INSTANCE {
            count_vnic(cx.vnic.source, |c| &mut c.dropped, cx.len);
        }
        if cx.vnic.hop == NextHop::Vnic as u8 {
            count_vnic(cx.vnic.target, |c| &mut c.dropped, cx.len);
        }
    }
}

#[inline(always)]
fn count_vnic(slot: u32, which: impl FnOnce(&mut vnic::VnicCounters) -> &mut Counter, len: u64) {
    if crate::dry_run::active() {
        return;
    }
    if let Some(c) = VNIC_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, as in `event`.
        which(unsafe { &mut *c }).add(len);
    }
}

#[inline(always)]
fn count_route(id: u32, len: u64) {
    if crate::dry_run::active() {
        return;
    }
    if let Some(c) = ROUTE_STATS.get_ptr_mut(id) {
        // SAFETY: a map value, aligned; shared between CPUs, hence atomic adds.
        unsafe {
            atomic::add64(&raw mut (*c).packets, 1);
            atomic::add64(&raw mut (*c).bytes, len);
        }
    }
}

// --- the first stage: who sent it, may it, where to -------------------------------------

/// Stage `Call::Vnic`. Returns whether the next-hop stage follows; otherwise the verdict is
/// set (a drop, or the host's own frame left as classified).
#[inline(always)]
pub fn arrive(xdp: &XdpContext, cx: &mut FrameCtx) -> bool {
    let Some(config) = config() else {
        return false;
    };
    cx.vnic = VnicCtx {
        peer_mac: cx.parsed.src_mac,
        our_mac: cx.parsed.dst_mac,
        ..VnicCtx::default()
    };
    let dst = v4(&cx.parsed.dst_ip);
    let wrapped = cx.parsed.ip_proto == IPPROTO_UDP
        && cx.parsed.dst_port == config.vxlan_port
        && cx.parsed.l4_offset as usize == OUTER_UDP
        && cx.parsed.fragment == Fragment::None
        && (dst == config.anycast || dst == config.local);
    if wrapped {
        return unwrap(
            xdp,
            cx,
            config,
            dst == config.local && dst != config.anycast,
        );
    }
    match PUBLIC_ADDRS.get_ptr(dst) {
        Some(p) => {
            // SAFETY: a map value, valid while the program runs.
            let p = unsafe { *p };
            cx.vnic.from = FROM_PUBLIC;
            cx.vnic.inner = 0;
            public(cx, config, p.kind, p.target, dst)
        }
        // The host's own traffic: as classified.
        None => false,
    }
}

/// A VXLAN packet for the fleet: parse the inner frame and find whose it is.
#[inline(always)]
fn unwrap(xdp: &XdpContext, cx: &mut FrameCtx, config: &VnicConfig, to_us: bool) -> bool {
    let vni = {
        // SAFETY: the kernel guarantees [data, data_end) is readable for this invocation.
        let frame = unsafe { Frame::from_raw(xdp.data(), xdp.data_end(), cx.len as usize) };
        match frame.header::<VxlanHdr>(OUTER_VXLAN) {
            Some(vx) if vx.flags & VXLAN_FLAG_VNI != 0 => vx.vni(),
            Some(_) => {
                finish(cx, Reason::Malformed);
                return false;
            }
            None => {
                finish(cx, Reason::Truncated);
                return false;
            }
        }
    };
    let start = xdp.data() + OUTER_LEN;
    if start > xdp.data_end() {
        finish(cx, Reason::Truncated);
        return false;
    }
    // SAFETY: [start, data_end) is the tail of this invocation's readable packet data.
    let inner = unsafe {
        Frame::from_raw(
            start,
            xdp.data_end(),
            (cx.len as usize).saturating_sub(OUTER_LEN),
        )
    };
    cx.parsed.clear();
    let outcome = parse(&inner, &mut cx.parsed);
    cx.set_outcome(outcome);
    if cx.outcome().is_err() {
        let reason = match outcome {
            Err(xnic_common::parse::ParseError::Truncated(_)) => Reason::Truncated,
            _ => Reason::Malformed,
        };
        finish(cx, reason);
        return false;
    }
    cx.vnic.inner = OUTER_LEN as u32;
    if to_us && vni == config.handoff_vni {
        event(VnicCounter::HandedIn);
        if cx.parsed.l3 != L3::Ipv4 {
            finish(cx, Reason::Malformed);
            return false;
        }
        let dst = v4(&cx.parsed.dst_ip);
        cx.vnic.from = FROM_HANDOFF;
        return match PUBLIC_ADDRS.get_ptr(dst) {
            Some(p) => {
                // SAFETY: a map value, valid while the program runs.
                let p = unsafe { *p };
                public(cx, config, p.kind, p.target, dst)
            }
            None => {
                finish(cx, Reason::NoVnic);
                false
            }
        };
    }
    let key = VnicMacKey::new(vni, cx.parsed.src_mac);
    // SAFETY: a map value, valid while the program runs; copied out at once.
    if let Some(slot) = unsafe { VNIC_MACS.get(key) }.copied() {
        return from_instance(xdp, cx, slot);
    }
    // SAFETY: as above.
    if let Some(gateway) = unsafe { GATEWAY_VNIS.get(vni) }.copied() {
        return from_gateway(xdp, cx, gateway);
    }
    finish(cx, Reason::NoVnic);
    false
}

/// The inner packet's TTL or hop limit, where the inner IP header is.
#[inline(always)]
fn inner_ttl(xdp: &XdpContext, cx: &FrameCtx) -> u8 {
    // SAFETY: the kernel guarantees [data, data_end) is readable for this invocation.
    let frame = unsafe { Frame::from_raw(xdp.data(), xdp.data_end(), 0) };
    let at = (cx.vnic.inner as usize + cx.parsed.l3_offset as usize) & 0x1fff;
    if cx.parsed.l3 == L3::Ipv4 {
        frame.header::<Ipv4Hdr>(at).map_or(0, |ip| ip.ttl)
    } else {
        frame.header::<Ipv6Hdr>(at).map_or(0, |ip| ip.hop_limit)
    }
}

/// What every packet routed for a VNIC must be: IP, whole, with TTL left.
#[inline(always)]
fn routable(xdp: &XdpContext, cx: &mut FrameCtx) -> bool {
    if cx.parsed.l3 == L3::None {
        finish(cx, Reason::NoRoute);
        return false;
    }
    if cx.parsed.fragment != Fragment::None {
        finish(cx, Reason::Fragment);
        return false;
    }
    if inner_ttl(xdp, cx) <= 1 {
        finish(cx, Reason::TtlExpired);
        return false;
    }
    true
}

/// A compute instance's packet, from VNIC `slot`.
#[inline(always)]
fn from_instance(xdp: &XdpContext, cx: &mut FrameCtx, slot: u32) -> bool {
    cx.vnic.from = FROM_INSTANCE;
    cx.vnic.source = slot;
    let Some(v) = VNICS.get(slot).filter(|v| v.flags & VNIC_VALID != 0) else {
        finish(cx, Reason::NoVnic);
        return false;
    };
    if cx.parsed.l3 != L3::None {
        let key = VnicAddrKey {
            vcn: v.vcn,
            addr: cx.parsed.src_ip,
        };
        // SAFETY: a map value, valid while the program runs; copied out at once.
        if unsafe { VNIC_ADDRS.get(key) }.copied() != Some(slot) {
            finish(cx, Reason::SpoofedSource);
            return false;
        }
    }
    if !routable(xdp, cx) {
        return false;
    }
    if !rules_admit(cx, v, false) {
        return false;
    }
    route(cx, v)
}

/// A packet from a service or dynamic routing gateway's network, for its VCN.
#[inline(always)]
fn from_gateway(xdp: &XdpContext, cx: &mut FrameCtx, gateway: u32) -> bool {
    cx.vnic.from = FROM_GATEWAY;
    cx.vnic.source = gateway;
    let Some(g) = GATEWAYS.get(gateway) else {
        finish(cx, Reason::NoVnic);
        return false;
    };
    if !routable(xdp, cx) {
        return false;
    }
    let key = VnicAddrKey {
        vcn: g.vcn,
        addr: cx.parsed.dst_ip,
    };
    // SAFETY: a map value, valid while the program runs; copied out at once.
    match unsafe { VNIC_ADDRS.get(key) }.copied() {
        Some(target) => {
            event(VnicCounter::FromGateway);
            to(cx, NextHop::Vnic as u8, target, true)
        }
        None => {
            finish(cx, Reason::NoVnic);
            false
        }
    }
}

/// An unwrapped packet to a public address of the fleet (or one handed over by another
/// host): `kind` and `target` from `PUBLIC_ADDRS`.
#[inline(always)]
fn public(cx: &mut FrameCtx, config: &VnicConfig, kind: u8, target: u32, dst: [u8; 4]) -> bool {
    cx.vnic.public = dst;
    if cx.parsed.fragment != Fragment::None {
        finish(cx, Reason::Fragment);
        return false;
    }
    if kind == PUBLIC_VNIC {
        event(VnicCounter::FromInternet);
        cx.vnic.to_private = 1;
        return to(cx, NextHop::Vnic as u8, target, true);
    }
    if kind != PUBLIC_NAT || !matches!(cx.parsed.ip_proto, IPPROTO_TCP | IPPROTO_UDP) {
        finish(cx, Reason::NoVnic);
        return false;
    }
    match vnic::port_owner(cx.parsed.dst_port, u32::from(config.hosts)) {
        Some(owner) if owner == u32::from(config.host_index) => {
            to(cx, HOP_NAT_ANSWER, target, false)
        }
        // Handed on once at most: a host that gets one back for another drops it.
        Some(owner) if cx.vnic.from == FROM_PUBLIC => to(cx, HOP_HANDOFF, owner, false),
        _ => {
            event(VnicCounter::NatNoSession);
            finish(cx, Reason::NoRoute);
            false
        }
    }
}

#[inline(always)]
fn to(cx: &mut FrameCtx, hop: u8, target: u32, check_ingress: bool) -> bool {
    cx.vnic.hop = hop;
    cx.vnic.target = target;
    cx.vnic.check_ingress = u8::from(check_ingress);
    true
}

/// The route for the packet from VNIC `v`: its VCN's own addresses first, then its table
/// through virtual routers (remembered per destination, see [`routed`]).
#[inline(always)]
fn route(cx: &mut FrameCtx, v: &VnicEntry) -> bool {
    if let Some(e) = lookup(cx, vcn_table(v.vcn)).filter(|e| e.kind == NextHop::Local as u8) {
        let key = VnicAddrKey {
            vcn: v.vcn,
            addr: cx.parsed.dst_ip,
        };
        count_route(e.route, cx.len);
        // SAFETY: a map value, valid while the program runs; copied out at once.
        return match unsafe { VNIC_ADDRS.get(key) }.copied() {
            Some(target) => to(cx, NextHop::Vnic as u8, target, true),
            None => {
                finish(cx, Reason::NoRoute);
                false
            }
        };
    }
    if v.table == vnic::NO_TABLE {
        finish(cx, Reason::NoRoute);
        return false;
    }
    match routed(cx, v.table) {
        Some(e) => to(cx, e.kind, e.target, true),
        None => {
            finish(cx, Reason::NoRoute);
            false
        }
    }
}

/// The destination's route through `table`: remembered from an earlier packet of this
/// routes' generation, else looked up (and remembered). Counts every route taken.
#[inline(always)]
fn routed(cx: &FrameCtx, table: u32) -> Option<RouteEntry> {
    let generation = ROUTE_GEN.get(0).copied().unwrap_or(0);
    let key = RouteCacheKey {
        table,
        addr: cx.parsed.dst_ip,
    };
    // SAFETY: a map value, valid while the program runs; copied out at once.
    let cached = unsafe { ROUTE_CACHE.get(key) }
        .copied()
        .filter(|c| c.generation == generation);
    let c = match cached {
        Some(c) => c,
        None => {
            let c = chase(cx, table, generation)?;
            // Best effort: a full cache evicts its least recently used. A trace's lookup
            // leaves the cache as it was.
            if !crate::dry_run::active() {
                let _ = ROUTE_CACHE.insert(key, c, 0);
            }
            c
        }
    };
    for i in 0..MAX_ROUTER_HOPS {
        if i as u32 >= c.routers {
            break;
        }
        event(VnicCounter::RouterHop);
        count_route(c.router_routes[i], cx.len);
    }
    count_route(c.entry.route, cx.len);
    Some(c.entry)
}

/// The route of the packet's destination in `table`.
#[inline(always)]
fn lookup(cx: &FrameCtx, table: u32) -> Option<RouteEntry> {
    let found = if cx.parsed.l3 == L3::Ipv4 {
        let key = Key::new(
            route_prefix_len(32),
            RouteAddrV4 {
                table: table.to_be_bytes(),
                addr: v4(&cx.parsed.dst_ip),
            },
        );
        ROUTES_V4.get(&key)
    } else {
        let key = Key::new(
            route_prefix_len(128),
            RouteAddrV6 {
                table: table.to_be_bytes(),
                addr: cx.parsed.dst_ip,
            },
        );
        ROUTES_V6.get(&key)
    };
    found.copied()
}

/// Looks the destination up in `table` and, through virtual routers, in theirs: at most
/// [`MAX_ROUTER_HOPS`] of them.
#[inline(always)]
fn chase(cx: &FrameCtx, table: u32, generation: u32) -> Option<CachedRoute> {
    let mut table = table;
    let mut c = CachedRoute {
        generation,
        ..CachedRoute::default()
    };
    for i in 0..=MAX_ROUTER_HOPS {
        let e = lookup(cx, table)?;
        if e.kind != NextHop::Router as u8 {
            c.entry = e;
            return Some(c);
        }
        if i < MAX_ROUTER_HOPS {
            c.router_routes[i] = e.route;
            c.routers = i as u32 + 1;
        }
        table = e.target;
    }
    None
}

// --- security rules ------------------------------------------------------------------------

/// The first rule of set `set` (its first `len`) that matches `p`.
#[inline(always)]
fn first_rule(set: u16, len: u8, p: &AclPacket) -> Matched {
    let base = u32::from(set) * MAX_RULES;
    for i in 0..MAX_RULES {
        if i >= u32::from(len) {
            break;
        }
        let Some(r) = ACL_RULES.get(base + i) else {
            break;
        };
        if r.matches(p) {
            return Matched::of(r);
        }
    }
    Matched::NONE
}

/// Whether VNIC `v`'s rules let the packet through: its ingress rules when it is for `v`
/// (the peer is the source), its egress rules when `v` sent it (the peer is the
/// destination). Drops it (`acl_deny`) when they do not.
#[inline(always)]
fn rules_admit(cx: &mut FrameCtx, v: &VnicEntry, ingress: bool) -> bool {
    let p = &cx.parsed;
    let ports = p.l4_offset != 0 && matches!(p.ip_proto, IPPROTO_TCP | IPPROTO_UDP);
    let peer = if ingress { p.src_ip } else { p.dst_ip };
    let packet = AclPacket {
        proto: p.ip_proto,
        peer,
        dst_port: p.dst_port,
        ports,
    };
    // The connection this packet would answer: the same peer, our port its destination.
    let answered = AclPacket {
        dst_port: p.src_port,
        ..packet
    };
    let (own, other) = if ingress {
        ((v.ingress_set, v.ingress_len), (v.egress_set, v.egress_len))
    } else {
        ((v.egress_set, v.egress_len), (v.ingress_set, v.ingress_len))
    };
    let first = first_rule(own.0, own.1, &packet);
    let admission = if first.allows() {
        Admission::Allowed
    } else {
        let reply = first_rule(other.0, other.1, &answered);
        vnic::admits(first, reply, vnic::may_answer(p))
    };
    match admission {
        Admission::Allowed => true,
        Admission::Answer => {
            event(VnicCounter::AnswerAdmitted);
            true
        }
        Admission::Denied => {
            finish(cx, Reason::AclDeny);
            false
        }
    }
}

// --- the second stage: the next hop ------------------------------------------------------

/// Stage `Call::VnicOut`: carries out the next hop the first stage chose.
#[inline(always)]
pub fn leave(xdp: &XdpContext, cx: &mut FrameCtx) {
    let Some(config) = config() else {
        finish(cx, Reason::NoRoute);
        return;
    };
    if cx.vnic.hop == HOP_NAT_ANSWER && !nat_answer(xdp, cx) {
        return;
    }
    let hop = cx.vnic.hop;
    if hop == NextHop::Vnic as u8 {
        to_vnic(xdp, cx, config, cx.vnic.target);
    } else if hop == HOP_HANDOFF {
        hand_off(xdp, cx, config);
    } else if hop == NextHop::InternetGateway as u8 {
        to_internet(xdp, cx);
    } else if hop == NextHop::NatGateway as u8 {
        to_nat(xdp, cx, config);
    } else if hop == NextHop::ServiceGateway as u8 || hop == NextHop::DynamicRoutingGateway as u8 {
        to_gateway(xdp, cx, config);
    } else {
        finish(cx, Reason::NoRoute);
    }
}

/// The inner headers, writable: Ethernet, the IP header, and the transport ports and
/// checksum (TCP/UDP with ports).
#[inline(always)]
fn inner_l3(xdp: &XdpContext, cx: &FrameCtx) -> Option<&'static mut Ipv4Hdr> {
    // SAFETY: the kernel guarantees [data, data_end) is writable for this invocation.
    let mut f = unsafe { FrameMut::from_raw(xdp.data(), xdp.data_end()) };
    let at = (cx.vnic.inner as usize + cx.parsed.l3_offset as usize) & 0x1fff;
    f.header_mut::<Ipv4Hdr>(at)
        // SAFETY: packet data lives for the whole invocation; the reference is not kept
        // past a head adjustment (callers finish rewriting before they move the head).
        .map(|h| unsafe { &mut *(h as *mut Ipv4Hdr) })
}

#[inline(always)]
fn inner_l4(xdp: &XdpContext, cx: &FrameCtx) -> Option<(&'static mut L4Ports, &'static mut Check)> {
    let p = &cx.parsed;
    if p.l4_offset == 0 || !matches!(p.ip_proto, IPPROTO_TCP | IPPROTO_UDP) {
        return None;
    }
    // SAFETY: the kernel guarantees [data, data_end) is writable for this invocation.
    let mut f = unsafe { FrameMut::from_raw(xdp.data(), xdp.data_end()) };
    let at = (cx.vnic.inner as usize + p.l4_offset as usize) & 0x1fff;
    let ports = f.header_mut::<L4Ports>(at)? as *mut L4Ports;
    let check = f.header_mut::<Check>((at + check_offset(p.ip_proto)) & 0x1fff)? as *mut Check;
    // SAFETY: as in `inner_l3`; the two headers do not overlap (ports are bytes 0-3, the
    // checksum 6-7 or 16-17).
    Some(unsafe { (&mut *ports, &mut *check) })
}

/// The inner frame's Ethernet header.
#[inline(always)]
fn inner_eth(xdp: &XdpContext, cx: &FrameCtx) -> Option<&'static mut EthHdr> {
    // SAFETY: the kernel guarantees [data, data_end) is writable for this invocation.
    let mut f = unsafe { FrameMut::from_raw(xdp.data(), xdp.data_end()) };
    let at = (cx.vnic.inner as usize) & 0x1fff;
    // SAFETY: as in `inner_l3`.
    f.header_mut::<EthHdr>(at)
        .map(|h| unsafe { &mut *(h as *mut EthHdr) })
}

/// One router hop on the inner packet.
#[inline(always)]
fn inner_hop(xdp: &XdpContext, cx: &FrameCtx) -> bool {
    if cx.parsed.l3 == L3::Ipv4 {
        inner_l3(xdp, cx).is_some_and(vnic::hop4)
    } else {
        // SAFETY: the kernel guarantees [data, data_end) is writable for this invocation.
        let mut f = unsafe { FrameMut::from_raw(xdp.data(), xdp.data_end()) };
        let at = (cx.vnic.inner as usize + cx.parsed.l3_offset as usize) & 0x1fff;
        f.header_mut::<Ipv6Hdr>(at).is_some_and(vnic::hop6)
    }
}

/// Rewrites one IPv4 address (and port) of the inner packet.
#[inline(always)]
fn inner_nat(xdp: &XdpContext, cx: &FrameCtx, side: Side, addr: [u8; 4], port: u16) -> bool {
    let Some(ip) = inner_l3(xdp, cx) else {
        return false;
    };
    vnic::nat4(ip, inner_l4(xdp, cx), side, addr, port);
    true
}

/// Wraps the packet for `vtep` in `vni`: in place when it came wrapped, else in front.
#[inline(always)]
fn wrap(
    xdp: &XdpContext,
    cx: &mut FrameCtx,
    config: &VnicConfig,
    src: [u8; 4],
    vtep: [u8; 4],
    vni: u32,
) -> bool {
    let h = flow_hash(&cx.parsed, 0, false);
    if cx.vnic.inner == 0 {
        let inner_len = xdp.data_end() - xdp.data();
        if OUTER_LEN - EthHdr::LEN + inner_len > usize::from(config.underlay_mtu) {
            finish(cx, Reason::TooBig);
            return false;
        }
        // SAFETY: `xdp.ctx` is this invocation's xdp_md; a negative delta makes room in
        // front for the outer headers.
        if unsafe { bpf_xdp_adjust_head(xdp.ctx, -(OUTER_LEN as i32)) } != 0 {
            finish(cx, Reason::TooBig);
            return false;
        }
        cx.vnic.inner = OUTER_LEN as u32;
    }
    let inner_len = (xdp.data_end() - xdp.data()).saturating_sub(OUTER_LEN);
    // SAFETY: the kernel guarantees [data, data_end) is writable for this invocation.
    let mut f = unsafe { FrameMut::from_raw(xdp.data(), xdp.data_end()) };
    let Some(out) = f.header_mut::<OuterV4>(0) else {
        finish(cx, Reason::Truncated);
        return false;
    };
    let fields = vnic::outer(
        cx.vnic.our_mac,
        cx.vnic.peer_mac,
        src,
        vtep,
        h,
        config.vxlan_port,
        vni,
    );
    rewrite::write_vxlan_v4(out, &fields, inner_len);
    true
}

/// A virtual router's hop toward an overlay endpoint: TTL one less, the inner frame from the
/// router's MAC to `mac`, wrapped for `vtep` in `vni` from the fleet's VTEP.
#[inline(always)]
fn rewrap(
    xdp: &XdpContext,
    cx: &mut FrameCtx,
    config: &VnicConfig,
    mac: [u8; 6],
    vtep: [u8; 4],
    vni: u32,
) -> bool {
    if !inner_hop(xdp, cx) {
        finish(cx, Reason::TtlExpired);
        return false;
    }
    let Some(eth) = inner_eth(xdp, cx) else {
        finish(cx, Reason::Truncated);
        return false;
    };
    eth.src = config.router_mac;
    eth.dst = mac;
    wrap(xdp, cx, config, config.anycast, vtep, vni)
}

/// Unwraps the packet for the public side: the inner frame with the outer MACs.
#[inline(always)]
fn unwrap_out(xdp: &XdpContext, cx: &mut FrameCtx) -> bool {
    if cx.vnic.inner != 0 {
        // SAFETY: `xdp.ctx` is this invocation's xdp_md; a positive delta drops the outer
        // headers, which the first stage found in the linear part.
        if unsafe { bpf_xdp_adjust_head(xdp.ctx, OUTER_LEN as i32) } != 0 {
            finish(cx, Reason::Truncated);
            return false;
        }
        cx.vnic.inner = 0;
    }
    let Some(eth) = inner_eth(xdp, cx) else {
        finish(cx, Reason::Truncated);
        return false;
    };
    eth.dst = cx.vnic.peer_mac;
    eth.src = cx.vnic.our_mac;
    true
}

/// To VNIC `target`: its ingress rules, NAT undone for what came to a public address, one
/// router hop, its MAC, wrapped to its host.
#[inline(always)]
fn to_vnic(xdp: &XdpContext, cx: &mut FrameCtx, config: &VnicConfig, target: u32) {
    cx.vnic.target = target;
    cx.vnic.hop = NextHop::Vnic as u8;
    let Some(t) = VNICS.get(target).filter(|v| v.flags & VNIC_VALID != 0) else {
        finish(cx, Reason::NoVnic);
        return;
    };
    if cx.vnic.check_ingress != 0 && !rules_admit(cx, t, true) {
        return;
    }
    // A packet to a VNIC's 1:1 public address: to its private one.
    if cx.vnic.to_private != 0
        && !inner_nat(xdp, cx, Side::Destination, t.private, cx.parsed.dst_port)
    {
        finish(cx, Reason::Truncated);
        return;
    }
    if !rewrap(xdp, cx, config, t.mac, t.host, t.vni) {
        return;
    }
    event(VnicCounter::ToVnic);
    if cx.vnic.from == FROM_INSTANCE {
        count_vnic(cx.vnic.source, |c| &mut c.sent, cx.len);
    }
    count_vnic(target, |c| &mut c.received, cx.len);
    finish(cx, Reason::VnicForward);
}

/// Out through an internet gateway: the VNIC's public address for its private one (IPv4;
/// IPv6 addresses are public as they are), one hop, unwrapped.
#[inline(always)]
fn to_internet(xdp: &XdpContext, cx: &mut FrameCtx) {
    if cx.parsed.l3 == L3::Ipv4 {
        let Some(v) = VNICS.get(cx.vnic.source) else {
            finish(cx, Reason::NoVnic);
            return;
        };
        if v.public == [0; 4] {
            event(VnicCounter::NoPublicAddress);
            finish(cx, Reason::NoRoute);
            return;
        }
        if !inner_nat(xdp, cx, Side::Source, v.public, cx.parsed.src_port) {
            finish(cx, Reason::Truncated);
            return;
        }
    }
    leave_unwrapped(xdp, cx, VnicCounter::ToInternet);
}

/// The public side's last steps: one router hop, unwrapped, sent; counted as `what`.
#[inline(always)]
fn leave_unwrapped(xdp: &XdpContext, cx: &mut FrameCtx, what: VnicCounter) {
    if !inner_hop(xdp, cx) {
        finish(cx, Reason::TtlExpired);
        return;
    }
    if !unwrap_out(xdp, cx) {
        return;
    }
    event(what);
    count_vnic(cx.vnic.source, |c| &mut c.sent, cx.len);
    finish(cx, Reason::VnicForward);
}

/// To a service or dynamic routing gateway: wrapped to its VTEP in its VNI, its MAC inside.
#[inline(always)]
fn to_gateway(xdp: &XdpContext, cx: &mut FrameCtx, config: &VnicConfig) {
    let Some(g) = GATEWAYS.get(cx.vnic.target).copied() else {
        finish(cx, Reason::NoRoute);
        return;
    };
    if !rewrap(xdp, cx, config, g.mac, g.remote, g.vni) {
        return;
    }
    event(if g.kind == NextHop::ServiceGateway as u8 {
        VnicCounter::ToService
    } else {
        VnicCounter::ToOnPremises
    });
    count_vnic(cx.vnic.source, |c| &mut c.sent, cx.len);
    finish(cx, Reason::VnicForward);
}

/// Out through a NAT gateway: the connection's public address and port (a new connection
/// takes a free port of this host's block), one hop, unwrapped.
#[inline(always)]
fn to_nat(xdp: &XdpContext, cx: &mut FrameCtx, config: &VnicConfig) {
    let p = &cx.parsed;
    if p.l3 != L3::Ipv4 || p.l4_offset == 0 || !matches!(p.ip_proto, IPPROTO_TCP | IPPROTO_UDP) {
        event(VnicCounter::NatUnsupported);
        finish(cx, Reason::NoRoute);
        return;
    }
    let Some(g) = GATEWAYS.get(cx.vnic.target).copied() else {
        finish(cx, Reason::NoRoute);
        return;
    };
    let out = NatKey {
        local: v4(&p.src_ip),
        remote: v4(&p.dst_ip),
        local_port: p.src_port,
        remote_port: p.dst_port,
        proto: p.ip_proto,
        dir: NAT_OUT,
        _pad: [0; 2],
        vnic: cx.vnic.source,
    };
    let h = flow_hash(p, 0, false);
    let Some(public) = nat_session(config, &g, cx.vnic.target, &out, h) else {
        finish(cx, Reason::NatExhausted);
        return;
    };
    if !inner_nat(xdp, cx, Side::Source, public.addr, public.port) {
        finish(cx, Reason::Truncated);
        return;
    }
    leave_unwrapped(xdp, cx, VnicCounter::ToNat);
}

/// The connection's public side: found, or made with a free port of this host's block
/// (both keys written; a race with another CPU making the same connection keeps theirs).
#[inline(always)]
fn nat_session(
    config: &VnicConfig,
    g: &GatewayEntry,
    gateway: u32,
    out: &NatKey,
    h: u32,
) -> Option<NatEntry> {
    // SAFETY: a map value, valid while the program runs; copied out at once.
    if let Some(e) = unsafe { NAT_SESSIONS.get(out) }.copied() {
        return Some(e);
    }
    let (first, last) = (u32::from(config.nat_first), u32::from(config.nat_last));
    if last < first || g.nat_ips == 0 {
        return None;
    }
    let span = last - first + 1;
    if span == 0 {
        return None;
    }
    let addr = g.public[(vnic::public_index(out.local, u32::from(g.nat_ips)) & 3) as usize];
    let mut at = h % span;
    for _ in 0..NAT_PORT_TRIES {
        let port = (first + at) as u16;
        let answer = NatKey {
            local: addr,
            remote: out.remote,
            local_port: port,
            remote_port: out.remote_port,
            proto: out.proto,
            dir: NAT_IN,
            _pad: [0; 2],
            vnic: 0,
        };
        let back = NatEntry {
            addr: out.local,
            port: out.local_port,
            _pad: [0; 2],
            vnic: out.vnic,
            gateway,
        };
        if crate::dry_run::active() {
            // A trace takes the first free port it would, and keeps none.
            // SAFETY: a map value, valid while the program runs; only tested for presence.
            if unsafe { NAT_SESSIONS.get(answer) }.is_none() {
                return Some(NatEntry {
                    addr,
                    port,
                    _pad: [0; 2],
                    vnic: out.vnic,
                    gateway,
                });
            }
            at = (at + 1) % span;
            continue;
        }
        if NAT_SESSIONS
            .insert(answer, back, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            let forth = NatEntry {
                addr,
                port,
                _pad: [0; 2],
                vnic: out.vnic,
                gateway,
            };
            if NAT_SESSIONS
                .insert(out, forth, u64::from(BPF_NOEXIST))
                .is_ok()
            {
                event(VnicCounter::NatNew);
                return Some(forth);
            }
            // Another CPU made this connection in between: its port stands.
            let _ = NAT_SESSIONS.remove(answer);
            // SAFETY: as above.
            return unsafe { NAT_SESSIONS.get(out) }.copied();
        }
        event(VnicCounter::NatPortTaken);
        at += 1;
        if at >= span {
            at = 0;
        }
    }
    None
}

/// A NAT answer for one of our ports: its connection's private side; its VNIC the next hop.
#[inline(always)]
fn nat_answer(xdp: &XdpContext, cx: &mut FrameCtx) -> bool {
    let p = &cx.parsed;
    let key = NatKey {
        local: cx.vnic.public,
        remote: v4(&p.src_ip),
        local_port: p.dst_port,
        remote_port: p.src_port,
        proto: p.ip_proto,
        dir: NAT_IN,
        _pad: [0; 2],
        vnic: 0,
    };
    // SAFETY: a map value, valid while the program runs; copied out at once.
    let Some(e) = unsafe { NAT_SESSIONS.get(key) }.copied() else {
        event(VnicCounter::NatNoSession);
        finish(cx, Reason::NoRoute);
        return false;
    };
    // Keeps the outward key as fresh as the answers (the LRU would evict it first).
    let out = NatKey {
        local: e.addr,
        local_port: e.port,
        dir: NAT_OUT,
        vnic: e.vnic,
        ..key
    };
    // SAFETY: as above; only the lookup's side effect is wanted.
    let _ = unsafe { NAT_SESSIONS.get(out) };
    if !inner_nat(xdp, cx, Side::Destination, e.addr, e.port) {
        finish(cx, Reason::Truncated);
        return false;
    }
    event(VnicCounter::FromNat);
    to(cx, NextHop::Vnic as u8, e.vnic, false)
}

/// A NAT answer for a port host `owner` made: wrapped to its VTEP in the hand-off VNI.
#[inline(always)]
fn hand_off(xdp: &XdpContext, cx: &mut FrameCtx, config: &VnicConfig) {
    let Some(host) = FLEET_HOSTS.get(cx.vnic.target).copied() else {
        finish(cx, Reason::NoRoute);
        return;
    };
    if host.vtep == [0; 4] {
        finish(cx, Reason::NoRoute);
        return;
    }
    if !wrap(xdp, cx, config, config.local, host.vtep, config.handoff_vni) {
        return;
    }
    event(VnicCounter::HandedOff);
    finish(cx, Reason::VnicForward);
}
