//! Flow offload decisions: which connections conntrack knows move into the fast path, which
//! leave it and why, and what conntrack is told meanwhile. Pure: inputs in, decisions out;
//! the time is an argument (CLOCK_MONOTONIC nanoseconds), never read here.
//!
//! A connection qualifies when conntrack has confirmed it both ways and the fast path can
//! carry it: established TCP (no FIN or RST seen), or UDP that has seen a reply; no helper,
//! no zone, not dying. Among those, the policy's selection picks what to move:
//! - `all`: every one;
//! - elephants: the ones past a bytes, packets or rate threshold;
//! - a conntrack mark (`ct mark set 0x1` in the operator's own nft rule = offload);
//! - protocol and port (the original direction's destination).
//!
//! Flows leave the fast path when the fast path itself says so (FIN, RST, a segment outside
//! the window: the programs mark it), when idle for longer than the timeout, when conntrack
//! forgets the connection, when the ruleset changes (every flow goes back and earns its way
//! in again through the new ruleset: promotion needs its packets to leave the kernel), when
//! the table is full and a candidate is worth more than the least valuable flow in it
//! (`PRESSURE_MARGIN`), by hand, and when a promotion gets nowhere for `PROMOTE_WAIT_NS`.
//! A flow that left waits `cooldown` before it may come back, so flows do not flap.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use xnic_common::flow::{
    DIR_DECAP, DIR_DNAT, DIR_ENCAP, DIR_SNAT, FlowDir, FlowKey, FlowState, Leave, ORIGINAL,
    PROMOTE_WAIT_NS, REPLY, Why, leaves_as,
};

/// How much more a candidate must be worth (bytes per second) than the least valuable
/// offloaded flow to take its place when the table is full: enough that two flows of about
/// the same rate never trade places back and forth.
pub const PRESSURE_MARGIN: u64 = 2;

/// Evictions per round when the table is full: each needs its victim drained before its slot
/// frees, so a few at a time keep the table's churn (and conntrack's hand-back work) bounded.
pub const MAX_EVICTIONS_PER_ROUND: usize = 64;

/// What picks flows for the fast path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Every qualifying flow.
    pub all: bool,
    /// Elephants: at least this many bytes (both directions).
    pub min_bytes: Option<u64>,
    /// At least this many packets (both directions).
    pub min_packets: Option<u64>,
    /// At least this many bytes per second (both directions, over the last period).
    pub min_rate_bps: Option<u64>,
    /// `ct mark & mask == value`.
    pub mark: Option<(u32, u32)>,
    /// (protocol, destination port of the original direction).
    pub ports: BTreeSet<(u8, u16)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub enabled: bool,
    pub selection: Selection,
    /// Flows the table holds.
    pub capacity: u32,
    /// A flow with no packet for this long leaves.
    pub idle_timeout_ns: u64,
    /// A flow that left stays out this long.
    pub cooldown_ns: u64,
}

/// The protocol numbers the fast path carries.
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

/// A connection as conntrack reports it, reduced to what the policy needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// conntrack's id for it (stable while it lives).
    pub id: u32,
    pub proto: u8,
    /// The original direction's destination port.
    pub dst_port: u16,
    /// Established TCP, or UDP that has seen a reply.
    pub confirmed: bool,
    /// Has a helper, a zone, is dying, or is otherwise not for the fast path.
    pub excluded: bool,
    pub mark: u32,
    pub bytes: u64,
    pub packets: u64,
    /// Bytes per second over the last period (0 when unknown).
    pub rate_bps: u64,
}

/// An offloaded flow as the fast path reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offloaded {
    pub id: u32,
    /// When either direction last had a packet.
    pub last_seen_ns: u64,
    pub promoted_ns: u64,
    /// Neither direction has switched to the fast path yet, and packets it passed to the
    /// slow path were not seen leaving it (an idle flow, or the idle direction of a one-way
    /// stream, is not waited for: it switches whenever it has packets).
    pub promoting: bool,
    /// Why it is leaving, if it is.
    pub leaving: Option<Leave>,
    /// Leaving, with nothing of it in flight any more.
    pub drained: bool,
    /// Bytes per second over the last period, both directions.
    pub rate_bps: u64,
    /// conntrack still has the connection.
    pub in_conntrack: bool,
}

/// Everything one round looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inputs {
    pub candidates: Vec<Candidate>,
    pub offloaded: Vec<Offloaded>,
    /// Flows that left recently: id → when.
    pub left: BTreeMap<u32, u64>,
    /// The ruleset changed since the last round.
    pub ruleset_changed: bool,
    /// Asked for by hand.
    pub manual_offload: BTreeSet<u32>,
    pub manual_demote: BTreeSet<u32>,
    /// Offloaded flows whose next hop is no longer what the fast path has.
    pub route_changed: BTreeSet<u32>,
}

/// What one round decides.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// Candidates to move into the fast path, most valuable first, with why.
    pub promote: Vec<(u32, Why)>,
    /// Offloaded flows to send leaving.
    pub demote: Vec<(u32, Leave)>,
    /// Leaving flows that have drained: hand their state back and free their slots.
    pub remove: Vec<u32>,
    /// Qualifying candidates left on the slow path because the table is full.
    pub refused_full: u64,
    /// Promotions given up after `PROMOTE_WAIT_NS` (among `demote`).
    pub promote_timeouts: u64,
}

/// Why `c` should be offloaded under `s`, if it should.
pub fn selected(s: &Selection, c: &Candidate) -> Option<Why> {
    if s.all {
        return Some(Why::All);
    }
    if let Some((value, mask)) = s.mark
        && c.mark & mask == value
    {
        return Some(Why::Mark);
    }
    if s.ports.contains(&(c.proto, c.dst_port)) {
        return Some(Why::Port);
    }
    if s.min_bytes.is_some_and(|b| c.bytes >= b) {
        return Some(Why::Bytes);
    }
    if s.min_packets.is_some_and(|p| c.packets >= p) {
        return Some(Why::Packets);
    }
    if s.min_rate_bps.is_some_and(|r| c.rate_bps >= r) {
        return Some(Why::Rate);
    }
    None
}

fn qualifies(c: &Candidate) -> bool {
    c.confirmed && !c.excluded && (c.proto == TCP || c.proto == UDP)
}

/// One round of decisions.
pub fn decide(p: &Policy, inputs: &Inputs, now_ns: u64) -> Decisions {
    let mut d = Decisions::default();
    let offloaded: BTreeMap<u32, &Offloaded> = inputs.offloaded.iter().map(|f| (f.id, f)).collect();

    // Leaving flows: done once drained; everything else that must leave, leaves.
    for f in &inputs.offloaded {
        if f.leaving.is_some() {
            if f.drained {
                d.remove.push(f.id);
            }
            continue;
        }
        let why = if !p.enabled {
            Some(Leave::Disabled)
        } else if inputs.manual_demote.contains(&f.id) {
            Some(Leave::Manual)
        } else if !f.in_conntrack {
            Some(Leave::Conntrack)
        } else if inputs.ruleset_changed {
            Some(Leave::RuleChange)
        } else if inputs.route_changed.contains(&f.id) {
            Some(Leave::Route)
        } else if f.promoting && now_ns.saturating_sub(f.promoted_ns) > PROMOTE_WAIT_NS {
            d.promote_timeouts += 1;
            Some(Leave::PromoteTimeout)
        } else if now_ns.saturating_sub(f.last_seen_ns) > p.idle_timeout_ns {
            Some(Leave::Idle)
        } else {
            None
        };
        if let Some(why) = why {
            d.demote.push((f.id, why));
        }
    }
    if !p.enabled || inputs.ruleset_changed {
        return d;
    }

    // Candidates, most valuable first (rate, then bytes; the id keeps it deterministic).
    let mut wanted: Vec<(&Candidate, Why)> = inputs
        .candidates
        .iter()
        .filter(|c| !offloaded.contains_key(&c.id) && qualifies(c))
        .filter_map(|c| {
            if inputs.manual_offload.contains(&c.id) {
                return Some((c, Why::Manual));
            }
            let cooling = inputs
                .left
                .get(&c.id)
                .is_some_and(|t| now_ns.saturating_sub(*t) < p.cooldown_ns);
            if cooling {
                return None;
            }
            selected(&p.selection, c).map(|w| (c, w))
        })
        .collect();
    wanted
        .sort_by(|a, b| (b.0.rate_bps, b.0.bytes, a.0.id).cmp(&(a.0.rate_bps, a.0.bytes, b.0.id)));

    // Slots: what the table holds minus what stays in it (leaving flows hold theirs until
    // they drain).
    let demoted: BTreeSet<u32> = d.demote.iter().map(|(id, _)| *id).collect();
    let held = inputs.offloaded.len() as u64 - d.remove.len() as u64;
    let mut free = u64::from(p.capacity).saturating_sub(held);
    // Eviction victims: staying flows, least valuable first.
    let mut victims: Vec<&Offloaded> = inputs
        .offloaded
        .iter()
        .filter(|f| f.leaving.is_none() && !demoted.contains(&f.id) && !f.promoting)
        .collect();
    victims.sort_by_key(|f| (f.rate_bps, f.id));
    let mut victims = victims.into_iter();
    let mut evicted = 0;
    for (c, why) in wanted {
        if free > 0 {
            free -= 1;
            d.promote.push((c.id, why));
            continue;
        }
        d.refused_full += 1;
        // Full: the least valuable flow leaves if this one is worth clearly more; the
        // candidate comes in on a later round, once that slot has drained.
        if evicted < MAX_EVICTIONS_PER_ROUND
            && let Some(v) = victims.as_slice().first()
            && c.rate_bps > v.rate_bps.saturating_mul(PRESSURE_MARGIN)
        {
            d.demote.push((v.id, Leave::Pressure));
            victims.next();
            evicted += 1;
        }
    }
    d
}

/// One side of a connection's tuple as conntrack reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// A VXLAN tunnel a direction goes into (its slot in `FLOW_TUNNELS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelHop {
    pub index: u8,
    pub vni: u32,
    /// The underlay port wrapped packets leave by (and arrive on).
    pub underlay_ifindex: u32,
}

/// Where one direction's packets go, resolved: the output port, the next hop's MACs, the
/// largest IP packet the output takes, and the tunnel when the route is a VXLAN device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The port the packet leaves by (the VXLAN device itself for a tunnel).
    pub ifindex: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub mtu: u32,
    pub tunnel: Option<TunnelHop>,
}

/// Why a connection cannot be carried by the fast path as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfit {
    /// The directions mix IPv4 and IPv6 (NAT64 is the kernel's business).
    MixedFamilies,
    /// Not TCP or UDP.
    Protocol,
    /// A direction's output is not a port xnic serves.
    UnknownPort,
}

fn addr16(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
        IpAddr::V6(v) => v.octets(),
    }
}

/// The key packets of a tuple arrive with.
pub fn key_of(t: &Tuple, vni: u32) -> FlowKey {
    FlowKey {
        src: addr16(&t.src),
        dst: addr16(&t.dst),
        src_port: t.src_port,
        dst_port: t.dst_port,
        proto: t.proto,
        family: if t.src.is_ipv4() { 4 } else { 6 },
        _pad: [0; 2],
        vni,
    }
}

/// The fast path's state for a connection: conntrack's two tuples, and each direction's
/// resolved hop (`hops[ORIGINAL]`: where original packets go, after NAT). A direction's
/// packets arrive where the other direction's leave (routing is symmetric for the flows
/// conntrack tracks both ways), wrapped when the other direction goes into a tunnel.
/// `served(ifindex)` says whether xnic has a port there.
pub fn flow_state(
    orig: &Tuple,
    reply: &Tuple,
    hops: &[Hop; 2],
    scales: [u8; 2],
    served: impl Fn(u32) -> bool,
) -> Result<([FlowKey; 2], FlowState), Unfit> {
    if orig.src.is_ipv4() != reply.src.is_ipv4() || orig.src.is_ipv4() != orig.dst.is_ipv4() {
        return Err(Unfit::MixedFamilies);
    }
    if orig.proto != TCP && orig.proto != UDP {
        return Err(Unfit::Protocol);
    }
    let tuples = [orig, reply];
    // A direction arrives wrapped (with the tunnel's VNI in its key) when the other one
    // leaves into that tunnel.
    let vni = |d: usize| hops[d ^ 1].tunnel.map_or(0, |t| t.vni);
    let keys = [key_of(tuples[0], vni(0)), key_of(tuples[1], vni(1))];
    let mut dirs = [FlowDir::default(); 2];
    for d in [ORIGINAL, REPLY] {
        let hop = &hops[d];
        let back = &hops[d ^ 1];
        let to = leaves_as(&keys, d);
        let (out, in_port, mut flags, tunnel) = match (hop.tunnel, back.tunnel) {
            (Some(t), _) => (t.underlay_ifindex, back.ifindex, DIR_ENCAP, t.index),
            (None, Some(t)) => (hop.ifindex, t.underlay_ifindex, DIR_DECAP, t.index),
            (None, None) => (hop.ifindex, back.ifindex, 0, 0),
        };
        if !served(out) || !served(in_port) {
            return Err(Unfit::UnknownPort);
        }
        if to.src != keys[d].src || to.src_port != keys[d].src_port {
            flags |= DIR_SNAT;
        }
        if to.dst != keys[d].dst || to.dst_port != keys[d].dst_port {
            flags |= DIR_DNAT;
        }
        dirs[d] = FlowDir {
            new_src: to.src,
            new_dst: to.dst,
            new_src_port: to.src_port,
            new_dst_port: to.dst_port,
            in_ifindex: in_port,
            out_ifindex: out,
            src_mac: hop.src_mac,
            dst_mac: hop.dst_mac,
            mtu: hop.mtu.min(u32::from(u16::MAX)) as u16,
            flags,
            tunnel,
            tcp_scale: scales[d],
            _pad: [0; 3],
        };
    }
    Ok((
        keys,
        FlowState {
            dirs,
            proto: orig.proto,
            family: keys[0].family,
            ..FlowState::default()
        },
    ))
}

/// The flow table's slots: which are free, and each slot's generation (bumped on every
/// reuse, so a key read just before its slot was reused is told apart by the programs).
/// Taking and giving back a slot are O(1): the table holds hundreds of thousands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowSlots {
    /// Free slots; the lowest is taken first (popped from the end).
    free: Vec<u32>,
    generation: Vec<u32>,
    taken: Vec<bool>,
    in_use: u32,
}

impl FlowSlots {
    /// A table of `capacity` slots, of which `used` (slot, generation) are taken: what a
    /// new daemon finds pinned.
    pub fn adopt(capacity: u32, used: &[(u32, u32)]) -> FlowSlots {
        let mut generation = vec![0u32; capacity as usize];
        let mut taken = vec![false; capacity as usize];
        let mut in_use = 0;
        for &(slot, g) in used {
            if let Some(t) = taken.get_mut(slot as usize)
                && !*t
            {
                *t = true;
                generation[slot as usize] = g;
                in_use += 1;
            }
        }
        let free = (0..capacity)
            .rev()
            .filter(|s| !taken[*s as usize])
            .collect();
        FlowSlots {
            free,
            generation,
            taken,
            in_use,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.generation.len() as u32
    }

    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// A free slot and the generation it now has, if one is free.
    pub fn take(&mut self) -> Option<(u32, u32)> {
        let slot = self.free.pop()?;
        self.taken[slot as usize] = true;
        let g = &mut self.generation[slot as usize];
        // Never 0: a zeroed (never set up) slot must not match any key.
        *g = g.wrapping_add(1).max(1);
        self.in_use += 1;
        Some((slot, *g))
    }

    /// Gives `slot` back (its keys are already gone from the table).
    pub fn give_back(&mut self, slot: u32) {
        if let Some(t) = self.taken.get_mut(slot as usize)
            && *t
        {
            *t = false;
            self.free.push(slot);
            self.in_use -= 1;
        }
    }
}

/// conntrack's timeouts for the connections the fast path carries (its sysctls
/// `nf_conntrack_tcp_timeout_established` and `nf_conntrack_udp_timeout_stream`), in
/// seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtTimeouts {
    pub tcp_established_s: u32,
    pub udp_stream_s: u32,
}

impl Default for CtTimeouts {
    /// The kernel's defaults.
    fn default() -> Self {
        CtTimeouts {
            tcp_established_s: 5 * 24 * 3600,
            udp_stream_s: 120,
        }
    }
}

/// The timeout conntrack should have for an offloaded connection last seen at
/// `last_seen_ns`: what it would have if it had seen that packet itself. At least 1 s, so a
/// flow idle for longer than its timeout goes at once rather than never.
pub fn ct_timeout(proto: u8, t: &CtTimeouts, last_seen_ns: u64, now_ns: u64) -> u32 {
    let full = if proto == TCP {
        t.tcp_established_s
    } else {
        t.udp_stream_s
    };
    let idle_s = now_ns.saturating_sub(last_seen_ns) / 1_000_000_000;
    (u64::from(full).saturating_sub(idle_s)).max(1) as u32
}

/// Whether conntrack's `remaining` seconds are far enough from `wanted` to write: a
/// refresh per connection per period would be needless work for long timeouts, but a UDP
/// timeout of two minutes must not run out under a flow that is busy on the fast path.
pub fn refresh_due(remaining_s: u32, wanted_s: u32) -> bool {
    let slack = (wanted_s / 10).max(2);
    remaining_s + slack < wanted_s || remaining_s > wanted_s + slack
}

/// Bytes per second of each connection between two looks at its counters: what elephant
/// selection by rate and table pressure compare.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RateMeter {
    /// id → (bytes, when) at the last look.
    last: BTreeMap<u32, (u64, u64)>,
}

impl RateMeter {
    /// The rate of `id` since its last look (0 the first time, or when its counter went
    /// back: a new connection under a reused id).
    pub fn observe(&mut self, id: u32, bytes: u64, now_ns: u64) -> u64 {
        let rate = match self.last.get(&id) {
            Some(&(b, t)) if bytes >= b && now_ns > t => {
                ((bytes - b) as u128 * 1_000_000_000 / (now_ns - t) as u128) as u64
            }
            _ => 0,
        };
        self.last.insert(id, (bytes, now_ns));
        rate
    }

    /// Forgets connections not among `alive` (conntrack ended them).
    pub fn retain(&mut self, alive: &BTreeSet<u32>) {
        self.last.retain(|id, _| alive.contains(id));
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn policy() -> Policy {
        Policy {
            enabled: true,
            selection: Selection {
                all: true,
                ..Selection::default()
            },
            capacity: 4,
            idle_timeout_ns: 30 * SEC,
            cooldown_ns: 5 * SEC,
        }
    }

    fn cand(id: u32, rate: u64) -> Candidate {
        Candidate {
            id,
            proto: TCP,
            dst_port: 443,
            confirmed: true,
            excluded: false,
            mark: 0,
            bytes: rate,
            packets: 10,
            rate_bps: rate,
        }
    }

    fn flow(id: u32, rate: u64) -> Offloaded {
        Offloaded {
            id,
            last_seen_ns: 100 * SEC,
            promoted_ns: 50 * SEC,
            promoting: false,
            leaving: None,
            drained: false,
            rate_bps: rate,
            in_conntrack: true,
        }
    }

    #[test]
    fn established_flows_are_promoted_and_the_rest_stay() {
        let mut unconfirmed = cand(2, 10);
        unconfirmed.confirmed = false;
        let mut helper = cand(3, 10);
        helper.excluded = true;
        let mut icmp = cand(4, 10);
        icmp.proto = 1;
        let inputs = Inputs {
            candidates: vec![cand(1, 10), unconfirmed, helper, icmp],
            ..Inputs::default()
        };
        let d = decide(&policy(), &inputs, 100 * SEC);
        assert_eq!(d.promote, vec![(1, Why::All)]);
    }

    #[test]
    fn selections_say_why() {
        let s = Selection {
            min_bytes: Some(1000),
            min_rate_bps: Some(500),
            mark: Some((1, 0xff)),
            ports: [(UDP, 53)].into(),
            ..Selection::default()
        };
        let mut c = cand(1, 0);
        assert_eq!(selected(&s, &c), None);
        c.mark = 0x101;
        assert_eq!(selected(&s, &c), Some(Why::Mark));
        c.mark = 0;
        c.bytes = 1000;
        assert_eq!(selected(&s, &c), Some(Why::Bytes));
        c.bytes = 0;
        c.rate_bps = 600;
        assert_eq!(selected(&s, &c), Some(Why::Rate));
        let mut dns = cand(2, 0);
        dns.proto = UDP;
        dns.dst_port = 53;
        assert_eq!(selected(&s, &dns), Some(Why::Port));
    }

    #[test]
    fn flows_leave_for_their_reasons_and_go_once_drained() {
        let mut idle = flow(1, 0);
        idle.last_seen_ns = 10 * SEC;
        let mut gone = flow(2, 0);
        gone.in_conntrack = false;
        let mut stuck = flow(3, 0);
        stuck.promoting = true;
        stuck.promoted_ns = 100 * SEC - PROMOTE_WAIT_NS - 1;
        let mut fin = flow(4, 0);
        fin.leaving = Some(Leave::Fin);
        let mut done = flow(5, 0);
        done.leaving = Some(Leave::Rst);
        done.drained = true;
        let inputs = Inputs {
            offloaded: vec![idle, gone, stuck, fin, done, flow(6, 0), flow(7, 0)],
            manual_demote: [7].into(),
            route_changed: [6].into(),
            ..Inputs::default()
        };
        let d = decide(&policy(), &inputs, 100 * SEC);
        assert_eq!(
            d.demote,
            vec![
                (1, Leave::Idle),
                (2, Leave::Conntrack),
                (3, Leave::PromoteTimeout),
                (6, Leave::Route),
                (7, Leave::Manual)
            ]
        );
        assert_eq!(d.promote_timeouts, 1);
        assert_eq!(d.remove, vec![5]);
    }

    #[test]
    fn a_ruleset_change_sends_every_flow_back_and_promotes_nothing() {
        let inputs = Inputs {
            candidates: vec![cand(9, 10)],
            offloaded: vec![flow(1, 0), flow(2, 0)],
            ruleset_changed: true,
            ..Inputs::default()
        };
        let d = decide(&policy(), &inputs, 100 * SEC);
        assert_eq!(
            d.demote,
            vec![(1, Leave::RuleChange), (2, Leave::RuleChange)]
        );
        assert!(d.promote.is_empty());
    }

    #[test]
    fn a_full_table_refuses_and_evicts_only_for_a_clearly_better_flow() {
        let p = policy();
        let inputs = Inputs {
            candidates: vec![cand(10, 1000), cand(11, 150), cand(12, 50)],
            offloaded: vec![flow(1, 100), flow(2, 300), flow(3, 400), flow(4, 500)],
            ..Inputs::default()
        };
        let d = decide(&p, &inputs, 100 * SEC);
        assert!(d.promote.is_empty());
        assert_eq!(d.refused_full, 3);
        // 1000 > 2 × 100 evicts flow 1; 150 is not worth twice flow 2's 300.
        assert_eq!(d.demote, vec![(1, Leave::Pressure)]);
    }

    #[test]
    fn flows_that_left_cool_down_and_manual_offload_skips_the_wait() {
        let inputs = Inputs {
            candidates: vec![cand(1, 10), cand(2, 10)],
            left: [(1, 98 * SEC), (2, 98 * SEC)].into(),
            manual_offload: [2].into(),
            ..Inputs::default()
        };
        let d = decide(&policy(), &inputs, 100 * SEC);
        assert_eq!(d.promote, vec![(2, Why::Manual)]);
        let d = decide(&policy(), &inputs, 104 * SEC);
        assert_eq!(d.promote.len(), 2);
    }

    #[test]
    fn switching_offload_off_sends_everything_back() {
        let p = Policy {
            enabled: false,
            ..policy()
        };
        let inputs = Inputs {
            candidates: vec![cand(5, 10)],
            offloaded: vec![flow(1, 0)],
            ..Inputs::default()
        };
        let d = decide(&p, &inputs, 100 * SEC);
        assert_eq!(d.demote, vec![(1, Leave::Disabled)]);
        assert!(d.promote.is_empty());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn candidate() -> impl Strategy<Value = Candidate> {
            (
                0u32..64,
                any::<bool>(),
                any::<bool>(),
                0u64..10_000,
                prop_oneof![Just(TCP), Just(UDP), Just(1u8)],
            )
                .prop_map(|(id, confirmed, excluded, rate, proto)| Candidate {
                    proto,
                    confirmed,
                    excluded,
                    ..cand(id, rate)
                })
        }

        fn offloaded() -> impl Strategy<Value = Offloaded> {
            (
                0u32..64,
                0u64..200,
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
                0u64..10_000,
            )
                .prop_map(|(id, seen, promoting, leaving, drained, rate)| Offloaded {
                    last_seen_ns: seen * SEC,
                    promoting,
                    leaving: leaving.then_some(Leave::Fin),
                    drained,
                    ..flow(id, rate)
                })
        }

        proptest! {
            #[test]
            fn decisions_respect_the_table_and_the_flows_states(
                candidates in proptest::collection::btree_map(0u32..64, candidate(), 0..40),
                offloaded in proptest::collection::btree_map(0u32..64, offloaded(), 0..20),
                capacity in 0u32..24,
                changed in proptest::bool::weighted(0.1),
            ) {
                // conntrack's ids are unique.
                let candidates: Vec<Candidate> = candidates.into_iter().map(|(id, c)| Candidate { id, ..c }).collect();
                let offloaded: Vec<Offloaded> = offloaded.into_iter().map(|(id, f)| Offloaded { id, ..f }).collect();
                let p = Policy { capacity, ..policy() };
                let inputs = Inputs { candidates, offloaded, ruleset_changed: changed, ..Inputs::default() };
                let d = decide(&p, &inputs, 100 * SEC);
                let ids: BTreeSet<u32> = inputs.offloaded.iter().map(|f| f.id).collect();
                // Nothing offloaded twice; promotions fit in what is free.
                prop_assert!(d.promote.iter().all(|(id, _)| !ids.contains(id)));
                let held = inputs.offloaded.len() - d.remove.len();
                prop_assert!(held + d.promote.len() <= capacity.max(held as u32) as usize);
                // Only offloaded, not-yet-leaving flows are sent leaving, each once.
                let demoted: Vec<u32> = d.demote.iter().map(|(id, _)| *id).collect();
                let unique: BTreeSet<u32> = demoted.iter().copied().collect();
                prop_assert_eq!(unique.len(), demoted.len());
                for id in &demoted {
                    let f = inputs.offloaded.iter().find(|f| f.id == *id).unwrap();
                    prop_assert!(f.leaving.is_none());
                }
                // Only drained leaving flows are removed.
                for id in &d.remove {
                    let f = inputs.offloaded.iter().find(|f| f.id == *id).unwrap();
                    prop_assert!(f.leaving.is_some() && f.drained);
                }
                // Only qualifying candidates are promoted; none after a ruleset change.
                for (id, _) in &d.promote {
                    prop_assert!(!changed);
                    let c = inputs.candidates.iter().find(|c| c.id == *id).unwrap();
                    prop_assert!(qualifies(c));
                }
                // The same inputs decide the same.
                prop_assert_eq!(decide(&p, &inputs, 100 * SEC), d);
            }
        }
    }

    fn t(src: &str, sp: u16, dst: &str, dp: u16) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: UDP,
            src_port: sp,
            dst_port: dp,
        }
    }

    fn hop(ifindex: u32, mac: u8) -> Hop {
        Hop {
            ifindex,
            src_mac: [2, 0, 0, 0, 0, mac],
            dst_mac: [2, 0, 0, 0, 1, mac],
            mtu: 1500,
            tunnel: None,
        }
    }

    #[test]
    fn a_masqueraded_flow_rewrites_the_source_one_way_and_the_destination_back() {
        // VM 10.1.0.2:5000 → 198.51.100.7:53, masqueraded behind 192.0.2.1:40000.
        let orig = t("10.1.0.2", 5000, "198.51.100.7", 53);
        let reply = t("198.51.100.7", 53, "192.0.2.1", 40000);
        // Original packets leave by the uplink (7), replies by the VM's port (3).
        let (keys, s) =
            flow_state(&orig, &reply, &[hop(7, 7), hop(3, 3)], [7, 9], |_| true).unwrap();
        assert_eq!(keys[0], key_of(&orig, 0));
        let o = &s.dirs[ORIGINAL];
        assert_eq!((o.in_ifindex, o.out_ifindex), (3, 7));
        assert_eq!(o.flags, DIR_SNAT);
        assert_eq!(o.new_src, key_of(&reply, 0).dst);
        assert_eq!(o.new_src_port, 40000);
        assert_eq!(o.tcp_scale, 7);
        let r = &s.dirs[REPLY];
        assert_eq!((r.in_ifindex, r.out_ifindex), (7, 3));
        assert_eq!(r.flags, DIR_DNAT);
        assert_eq!((r.new_dst, r.new_dst_port), (key_of(&orig, 0).src, 5000));
        assert_eq!(r.dst_mac, [2, 0, 0, 0, 1, 3]);
    }

    #[test]
    fn a_flow_into_a_tunnel_is_wrapped_one_way_and_unwrapped_the_other() {
        let orig = t("10.1.0.2", 8000, "10.200.0.5", 7000);
        let reply = t("10.200.0.5", 7000, "10.1.0.2", 8000);
        let tunnel = TunnelHop {
            index: 5,
            vni: 42,
            underlay_ifindex: 7,
        };
        let into = Hop {
            tunnel: Some(tunnel),
            ..hop(20, 20)
        };
        let (keys, s) = flow_state(&orig, &reply, &[into, hop(3, 3)], [0, 0], |_| true).unwrap();
        // The VM's packets are wrapped out of the uplink; the answers arrive wrapped on it,
        // with the VNI in their key.
        assert_eq!(keys[REPLY].vni, 42);
        assert_eq!(keys[ORIGINAL].vni, 0);
        let o = &s.dirs[ORIGINAL];
        assert_eq!(
            (o.flags, o.tunnel, o.out_ifindex, o.in_ifindex),
            (DIR_ENCAP, 5, 7, 3)
        );
        let r = &s.dirs[REPLY];
        assert_eq!(
            (r.flags, r.tunnel, r.in_ifindex, r.out_ifindex),
            (DIR_DECAP, 5, 7, 3)
        );
    }

    #[test]
    fn connections_the_fast_path_cannot_carry_are_named() {
        let orig = t("10.1.0.2", 1, "198.51.100.7", 2);
        let v6 = t("fd00::2", 2, "fd00::1", 1);
        assert_eq!(
            flow_state(&orig, &v6, &[hop(1, 1), hop(2, 2)], [0, 0], |_| true),
            Err(Unfit::MixedFamilies)
        );
        let icmp = Tuple { proto: 1, ..orig };
        assert_eq!(
            flow_state(&icmp, &icmp, &[hop(1, 1), hop(2, 2)], [0, 0], |_| true),
            Err(Unfit::Protocol)
        );
        assert_eq!(
            flow_state(&orig, &orig, &[hop(1, 1), hop(2, 2)], [0, 0], |i| i == 1),
            Err(Unfit::UnknownPort)
        );
    }

    #[test]
    fn flow_slots_are_reused_with_a_new_generation_and_adopted_as_found() {
        let mut slots = FlowSlots::adopt(3, &[(1, 7)]);
        assert_eq!((slots.capacity(), slots.in_use()), (3, 1));
        assert_eq!(slots.take(), Some((0, 1)));
        assert_eq!(slots.take(), Some((2, 1)));
        assert_eq!(slots.take(), None, "full");
        slots.give_back(1);
        assert_eq!(
            slots.take(),
            Some((1, 8)),
            "the adopted slot's next generation"
        );
        slots.give_back(0);
        slots.give_back(0);
        assert_eq!(slots.in_use(), 2, "giving back twice frees once");
        assert_eq!(slots.take(), Some((0, 2)));
        // Slots out of range or adopted twice count once.
        let slots = FlowSlots::adopt(2, &[(1, 3), (1, 4), (9, 1)]);
        assert_eq!(slots.in_use(), 1);
    }

    #[test]
    fn conntrack_is_kept_as_if_it_had_seen_the_last_packet() {
        let t = CtTimeouts::default();
        let now = 1000 * SEC;
        assert_eq!(ct_timeout(UDP, &t, now - 30 * SEC, now), 90);
        assert_eq!(
            ct_timeout(UDP, &t, now - 500 * SEC, now),
            1,
            "idle too long: goes now"
        );
        assert_eq!(ct_timeout(TCP, &t, now, now), 432_000);
        // A busy UDP flow: conntrack's clock ran down while the fast path carried it.
        assert!(refresh_due(60, 120));
        assert!(!refresh_due(115, 120));
        assert!(
            !refresh_due(431_990, 432_000),
            "long timeouts are not rewritten every period"
        );
        assert!(
            refresh_due(100, 30),
            "a flow idle on the fast path: shorten"
        );
    }

    #[test]
    fn rates_come_from_two_looks_at_the_counters() {
        let mut m = RateMeter::default();
        assert_eq!(m.observe(1, 1000, SEC), 0, "nothing to compare with yet");
        assert_eq!(m.observe(1, 3000, 3 * SEC), 1000);
        assert_eq!(
            m.observe(1, 10, 4 * SEC),
            0,
            "a counter that went back: a new connection"
        );
        m.observe(2, 5, 4 * SEC);
        m.retain(&[2].into());
        assert_eq!(m.len(), 1);
    }
}
