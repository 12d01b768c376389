//! Flow offload, as the reconciler's feature: what the configuration asks for, how what
//! conntrack reports becomes the pure policy's inputs (`policy::offload`), and the book of
//! flows the daemon placed in the fast path.
//!
//! The flow table is not part of the rendered [`Image`](crate::policy::plan::Image): it holds
//! up to millions of entries that change every period. Each period the sampler brings a
//! [`FlowSample`] (conntrack's entries, the table as the programs left it, what changed in
//! the kernel); [`Offload::observe`] takes it in, [`Offload::decide`] runs the policy, and the
//! reconciler carries the decisions out (`reconcile::flows`), telling this book what it did
//! ([`Offload::place`], [`Offload::removed`], ...). Everything here is bookkeeping: no I/O.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv6Addr},
};

use netlink_packet_netfilter::conntrack::Status;
use xnic_common::flow::{FlowKey, FlowLive, FlowState, Leave, Mode, ORIGINAL, REPLY, Why};
use xnic_proto::config::{FlowSelect, FlowsSection, default_flow_period_ms};

use crate::{
    config::validate::{parse_mark, parse_port},
    dataplane::TableFlow,
    monitor::{
        changes::Changed,
        conntrack::{CtEntry, CtTuple, TCP_CONNTRACK_ESTABLISHED},
    },
    policy::offload::{
        self, Candidate, CtTimeouts, Decisions, FlowSlots, Hop, Inputs, Offloaded, Policy,
        RateMeter, Selection, TCP, Tuple, UDP, Unfit,
    },
};

const NS_PER_S: u64 = 1_000_000_000;

/// Promotions one period carries out: each costs a conntrack round trip and four map writes
/// (next hops are looked up once per destination and period), some 10-15 µs, so 4096 hold
/// the reconciler (and the link events waiting for it) for well under 100 ms, and a burst of
/// new connections is taken in over a few periods.
pub const MAX_PROMOTIONS_PER_ROUND: usize = 4096;

/// Flows that left, remembered for the cooldown: bounded so a churn of short connections
/// cannot grow it without limit (past this, those whose cooldown is over are forgotten).
const MAX_LEFT: usize = 1 << 20;

/// The policy a `[flows]` section asks for (`None`: no section, offload off). The section
/// was validated with the rest of the configuration.
pub fn policy_of(section: Option<&FlowsSection>, capacity: u32) -> Policy {
    let Some(f) = section else {
        return Policy {
            enabled: false,
            selection: Selection::default(),
            capacity,
            idle_timeout_ns: 0,
            cooldown_ns: 0,
        };
    };
    let selection = Selection {
        all: f.select == FlowSelect::All,
        min_bytes: f.min_bytes,
        min_packets: f.min_packets,
        min_rate_bps: f.min_rate_kbps.map(|k| k * 1000 / 8),
        mark: f.mark.as_deref().and_then(|m| parse_mark(m).ok()),
        ports: f.ports.iter().filter_map(|p| parse_port(p).ok()).collect(),
    };
    Policy {
        enabled: f.enabled,
        selection,
        capacity,
        idle_timeout_ns: f.idle_timeout_s * NS_PER_S,
        cooldown_ns: f.cooldown_s * NS_PER_S,
    }
}

/// A conntrack tuple as the policy takes it.
pub fn tuple(t: &CtTuple) -> Tuple {
    Tuple {
        src: t.src,
        dst: t.dst,
        proto: t.proto,
        src_port: t.src_port,
        dst_port: t.dst_port,
    }
}

/// conntrack's two tuples of an entry, as the policy takes them.
pub fn tuples_of(e: &CtEntry) -> (Tuple, Tuple) {
    (tuple(&e.orig), tuple(&e.reply))
}

/// An entry as a candidate for the fast path. `rate_bps`: its bytes per second since the
/// last period (0 the first time it is seen).
pub fn candidate_of(e: &CtEntry, rate_bps: u64) -> Candidate {
    let confirmed = match e.orig.proto {
        TCP => {
            e.tcp.is_some_and(|t| t.state == TCP_CONNTRACK_ESTABLISHED) && e.has(Status::Assured)
        }
        UDP => e.has(Status::SeenReply),
        _ => false,
    };
    let unspecified = |a: &IpAddr| a.is_unspecified();
    // Helpers (FTP, SIP...) rewrite payloads and expect related flows: the kernel's. So are
    // connections in a zone, dying ones, and what conntrack itself calls offloaded.
    let excluded = e.has(Status::Helper)
        || e.has(Status::Dying)
        || e.has(Status::Offload)
        || e.has(Status::Untracked)
        || e.zone != 0
        || unspecified(&e.orig.src)
        || unspecified(&e.reply.src);
    let (bytes, packets) = e.counters.map_or((0, 0), |c| {
        (c[0].bytes + c[1].bytes, c[0].packets + c[1].packets)
    });
    Candidate {
        id: e.id,
        proto: e.orig.proto,
        dst_port: e.orig.dst_port,
        confirmed,
        excluded,
        mark: e.mark,
        bytes,
        packets,
        rate_bps,
    }
}

/// conntrack's tuple of a key (the VNI, which conntrack does not know, left out).
pub fn tuple_of_key(k: &FlowKey) -> CtTuple {
    let addr = |a: [u8; 16]| {
        let v6 = Ipv6Addr::from(a);
        match (k.family, v6.to_ipv4_mapped()) {
            (4, Some(v4)) => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        }
    };
    CtTuple {
        src: addr(k.src),
        dst: addr(k.dst),
        proto: k.proto,
        src_port: k.src_port,
        dst_port: k.dst_port,
    }
}

/// What the sampler measured for one period.
#[derive(Clone, Debug, Default)]
pub struct FlowSample {
    /// Every conntrack entry, as the last dump and the events since left them (timeouts as
    /// of the sample).
    pub entries: Vec<CtEntry>,
    /// The live state of the slots the daemon had placed when the period began, as the
    /// programs left it (a slot placed since is not in it).
    pub live: HashMap<u32, FlowLive>,
    /// The ruleset, routes or neighbours changed since the last period.
    pub changed: Changed,
}

/// A flow the daemon placed in the fast path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub slot: u32,
    /// conntrack's id (0 until an adopted flow is found in conntrack).
    pub id: u32,
    pub orig: CtTuple,
    pub reply: CtTuple,
    pub keys: [FlowKey; 2],
    /// As written.
    pub state: FlowState,
    /// Where each direction goes, as resolved (`None`: adopted from an earlier daemon, not
    /// resolved again yet).
    pub hops: Option<[Hop; 2]>,
    /// As last sampled.
    pub live: FlowLive,
    /// conntrack's seconds left at the last sample.
    pub ct_timeout: u32,
    /// Why it is leaving, once that was counted.
    pub leaving: Option<Leave>,
}

impl Placed {
    fn mode(&self, d: usize) -> u8 {
        self.live.dirs[d].mode
    }

    /// Neither direction switched yet.
    pub fn promoting(&self) -> bool {
        (0..2).all(|d| self.mode(d) != Mode::Active as u8)
    }

    /// Promoting, with packets passed to the slow path that were never seen leaving it (a
    /// flow with no packets since its promotion just waits: nothing of it is in flight).
    pub fn stuck(&self) -> bool {
        self.promoting()
            && self.live.dirs.iter().any(|d| {
                d.mode == Mode::Pending as u8 && d.slow_passes != 0 && d.exit_fp != d.pass_fp
            })
    }

    /// Some direction still waits for its slow-path packets to leave (the egress programs
    /// look packets up while any flow does).
    pub fn pending(&self) -> bool {
        (0..2).any(|d| self.mode(d) == Mode::Pending as u8)
    }

    /// Why it leaves: what the daemon asked for, or what a program found.
    pub fn leave(&self) -> Option<Leave> {
        self.live.leaving(&self.state)
    }

    /// Bytes both directions moved on the fast path.
    pub fn fast_bytes(&self) -> u64 {
        self.live.dirs.iter().map(|d| d.bytes).sum()
    }
}

/// What offload did since the daemon started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffloadStats {
    pub promoted: u64,
    /// By [`Leave`].
    pub demoted: [u64; Leave::COUNT],
    /// Flows whose state went back to conntrack and whose slot was freed.
    pub handed_back: u64,
    /// Qualifying flows left on the slow path because the table was full (counted each
    /// period they were refused in).
    pub refused_full: u64,
    pub promote_timeouts: u64,
    /// Candidates the fast path cannot carry as they are (an output xnic does not serve,
    /// no next hop resolved yet, mixed families).
    pub unfit: u64,
    /// conntrack changes that failed (other than the connection being gone).
    pub conntrack_failed: u64,
    /// Flows adopted from an earlier daemon.
    pub adopted: u64,
}

/// What the API shows of offload without reading the table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OffloadSummary {
    pub enabled: bool,
    pub capacity: u32,
    pub in_use: u32,
    pub pending: u32,
    pub period_ms: Option<u64>,
    pub stats: OffloadStats,
    /// conntrack entries at the last period.
    pub tracked: usize,
}

/// A manual request's filter: conntrack ids, or the flows matching every given field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    pub ids: BTreeSet<u32>,
    /// Every flow (narrowed by the fields below).
    pub all: bool,
    pub proto: Option<u8>,
    /// Either address of either tuple.
    pub addr: Option<IpAddr>,
    /// Either port of either tuple.
    pub port: Option<u16>,
}

impl FlowFilter {
    pub fn matches(&self, id: u32, orig: &CtTuple, reply: &CtTuple) -> bool {
        if self.ids.contains(&id) {
            return true;
        }
        if !self.all && self.proto.is_none() && self.addr.is_none() && self.port.is_none() {
            return false;
        }
        let addr_ok = self
            .addr
            .is_none_or(|a| [orig.src, orig.dst, reply.src, reply.dst].contains(&a));
        let port_ok = self.port.is_none_or(|p| {
            [orig.src_port, orig.dst_port, reply.src_port, reply.dst_port].contains(&p)
        });
        self.proto.is_none_or(|p| p == orig.proto) && addr_ok && port_ok
    }
}

/// The feature's state: the policy, the table's slots and the flows in them.
#[derive(Clone, Debug)]
pub struct Offload {
    policy: Policy,
    period_ms: Option<u64>,
    /// `flows.ordered_moves`.
    ordered_moves: bool,
    slots: FlowSlots,
    placed: HashMap<u32, Placed>,
    /// Original tuple → slot.
    by_orig: HashMap<CtTuple, u32>,
    /// conntrack id → slot, as of the last sample.
    by_id: HashMap<u32, u32>,
    left: BTreeMap<u32, u64>,
    rates: RateMeter,
    manual_offload: BTreeSet<u32>,
    manual_demote: BTreeSet<u32>,
    route_changed: BTreeSet<u32>,
    ruleset_changed: bool,
    /// The last sample's entries, by id.
    entries: HashMap<u32, CtEntry>,
    pub timeouts: CtTimeouts,
    stats: OffloadStats,
}

impl Offload {
    /// The book for a table of `capacity` slots holding `table` (what an earlier daemon
    /// left: its flows keep forwarding and are taken over as they are).
    pub fn adopt(capacity: u32, table: &[TableFlow], timeouts: CtTimeouts) -> Offload {
        let used: Vec<(u32, u32)> = table.iter().map(|f| (f.slot, f.state.generation)).collect();
        let mut o = Offload {
            policy: policy_of(None, capacity),
            period_ms: None,
            ordered_moves: true,
            slots: FlowSlots::adopt(capacity, &used),
            placed: HashMap::new(),
            by_orig: HashMap::new(),
            by_id: HashMap::new(),
            left: BTreeMap::new(),
            rates: RateMeter::default(),
            manual_offload: BTreeSet::new(),
            manual_demote: BTreeSet::new(),
            route_changed: BTreeSet::new(),
            ruleset_changed: false,
            entries: HashMap::new(),
            timeouts,
            stats: OffloadStats::default(),
        };
        for f in table {
            if (f.slot as usize) >= capacity as usize {
                continue;
            }
            let orig = tuple_of_key(&f.keys[ORIGINAL]);
            let reply = tuple_of_key(&f.keys[REPLY]);
            o.by_orig.insert(orig, f.slot);
            o.placed.insert(
                f.slot,
                Placed {
                    slot: f.slot,
                    id: 0,
                    orig,
                    reply,
                    keys: f.keys,
                    state: f.state,
                    hops: None,
                    live: f.live,
                    ct_timeout: 0,
                    leaving: None,
                },
            );
            o.stats.adopted += 1;
        }
        o
    }

    /// Takes in a new desired state's `[flows]` section (validated with the rest).
    pub fn reconcile(&mut self, section: Option<&FlowsSection>) {
        self.policy = policy_of(section, self.slots.capacity());
        self.period_ms = section.filter(|f| f.enabled).map(|f| f.period_ms);
        self.ordered_moves = section.is_none_or(|f| f.ordered_moves);
    }

    /// Whether moves wait for what is in flight (`flows.ordered_moves`).
    pub fn ordered_moves(&self) -> bool {
        self.ordered_moves
    }

    /// How often the sampler should bring a [`FlowSample`] (`None`: never). Flows in the
    /// table are looked after, and sent back, even with offload off.
    pub fn period_ms(&self) -> Option<u64> {
        self.period_ms
            .or((!self.placed.is_empty()).then(default_flow_period_ms))
    }

    pub fn enabled(&self) -> bool {
        self.policy.enabled
    }

    pub fn placed(&self) -> impl Iterator<Item = &Placed> {
        self.placed.values()
    }

    pub fn get(&self, slot: u32) -> Option<&Placed> {
        self.placed.get(&slot)
    }

    pub fn entry(&self, id: u32) -> Option<&CtEntry> {
        self.entries.get(&id)
    }

    /// Flows the egress programs watch: a direction still promoting, or leaving.
    pub fn pending(&self) -> u32 {
        self.placed
            .values()
            .filter(|p| p.pending() || p.leaving.is_some())
            .count() as u32
    }

    pub fn summary(&self) -> OffloadSummary {
        OffloadSummary {
            enabled: self.policy.enabled,
            capacity: self.slots.capacity(),
            in_use: self.slots.in_use(),
            pending: self.pending(),
            period_ms: self.period_ms(),
            stats: self.stats.clone(),
            tracked: self.entries.len(),
        }
    }

    /// Takes in one period's measurements. Returns why each flow the programs sent leaving
    /// since the last period left.
    pub fn observe(&mut self, sample: FlowSample, now_ns: u64) -> Vec<Leave> {
        self.ruleset_changed |= sample.changed.ruleset;
        for p in self.placed.values_mut() {
            match sample.live.get(&p.slot) {
                Some(live) if live.generation == p.state.generation => p.live = *live,
                // Placed after the sample was taken: as it was.
                None => {}
                // Another generation in its slot (the maps edited by hand): nothing of it
                // is in the fast path any more, so it has left and drained.
                Some(_) => {
                    if p.live.leave == 0 {
                        p.live.leave = Leave::Conntrack as u8;
                    }
                    for d in &mut p.live.dirs {
                        d.cpu_done = d.cpu_sent;
                        d.fast_done = d.fast_sent;
                    }
                }
            }
        }
        self.entries = sample.entries.into_iter().map(|e| (e.id, e)).collect();
        self.by_id.clear();
        for e in self.entries.values() {
            if let Some(&slot) = self.by_orig.get(&e.orig)
                && let Some(p) = self.placed.get_mut(&slot)
            {
                p.id = e.id;
                p.ct_timeout = e.timeout;
                self.by_id.insert(e.id, slot);
            }
        }
        let alive: BTreeSet<u32> = self.entries.keys().copied().collect();
        self.rates.retain(&alive);
        self.manual_offload.retain(|id| alive.contains(id));
        // Flows the programs sent leaving: counted once.
        let mut left = Vec::new();
        for p in self.placed.values_mut() {
            if p.leaving.is_none()
                && let Some(why) = p.leave()
            {
                p.leaving = Some(why);
                self.stats.demoted[why as usize] += 1;
                left.push(why);
            }
        }
        if self.left.len() > MAX_LEFT {
            let cutoff = now_ns.saturating_sub(self.policy.cooldown_ns);
            self.left.retain(|_, t| *t >= cutoff);
        }
        left
    }

    /// The id a flow goes by in the policy: conntrack's, or for a flow conntrack does not
    /// have (adopted, then not found) one made up from its slot at the top of the range.
    pub fn id_of(p: &Placed) -> u32 {
        if p.id != 0 { p.id } else { u32::MAX - p.slot }
    }

    /// One period's decisions.
    pub fn decide(&mut self, now_ns: u64) -> Decisions {
        let mut offloaded = Vec::with_capacity(self.placed.len());
        for p in self.placed.values() {
            let id = Self::id_of(p);
            let entry = self.entries.get(&id);
            let ct_bytes = entry
                .and_then(|e| e.counters)
                .map_or(0, |c| c[0].bytes + c[1].bytes);
            // conntrack's bytes plus the fast path's: one counter that keeps growing across
            // the move.
            let rate = self.rates.observe(id, ct_bytes + p.fast_bytes(), now_ns);
            offloaded.push(Offloaded {
                id,
                last_seen_ns: p.live.last_seen_ns(),
                promoted_ns: p.state.promoted_ns,
                promoting: p.stuck(),
                leaving: p.leave(),
                drained: p.leave().is_some() && p.live.drained(now_ns),
                rate_bps: rate,
                in_conntrack: entry.is_some(),
            });
        }
        let mut candidates = Vec::with_capacity(self.entries.len());
        for e in self.entries.values() {
            if self.by_id.contains_key(&e.id) {
                continue;
            }
            let bytes = e.counters.map_or(0, |c| c[0].bytes + c[1].bytes);
            let rate = self.rates.observe(e.id, bytes, now_ns);
            candidates.push(candidate_of(e, rate));
        }
        // A deterministic order for the policy (the maps are hashed).
        candidates.sort_by_key(|c| c.id);
        offloaded.sort_by_key(|f| f.id);
        let inputs = Inputs {
            candidates,
            offloaded,
            left: std::mem::take(&mut self.left),
            ruleset_changed: std::mem::take(&mut self.ruleset_changed),
            manual_offload: self.manual_offload.clone(),
            manual_demote: std::mem::take(&mut self.manual_demote),
            route_changed: std::mem::take(&mut self.route_changed),
        };
        let mut d = offload::decide(&self.policy, &inputs, now_ns);
        self.left = inputs.left;
        d.promote.truncate(MAX_PROMOTIONS_PER_ROUND);
        self.stats.refused_full += d.refused_full;
        self.stats.promote_timeouts += d.promote_timeouts;
        d
    }

    /// The slot of the flow the policy calls `id`.
    pub fn slot_of(&self, id: u32) -> Option<u32> {
        self.by_id.get(&id).copied().or_else(|| {
            let slot = u32::MAX.wrapping_sub(id);
            self.placed.get(&slot).filter(|p| p.id == 0).map(|p| p.slot)
        })
    }

    /// Sends the flow in `slot` leaving: the state to write (`None`: it already is).
    pub fn demote(&mut self, slot: u32, why: Leave) -> Option<FlowState> {
        let p = self.placed.get_mut(&slot)?;
        if p.leaving.is_some() {
            return None;
        }
        p.state.leave = why as u8;
        p.leaving = Some(why);
        self.stats.demoted[why as usize] += 1;
        Some(p.state)
    }

    /// Takes back a demotion that could not be written.
    pub fn undo_demote(&mut self, slot: u32, why: Leave) {
        if let Some(p) = self.placed.get_mut(&slot) {
            p.state.leave = 0;
            p.leaving = None;
            self.stats.demoted[why as usize] -= 1;
        }
    }

    /// A candidate's keys and state in a free slot, from its resolved hops. `Err(None)`: the
    /// table is full (or the entry went).
    pub fn place(
        &mut self,
        id: u32,
        why: Why,
        hops: [Hop; 2],
        served: impl Fn(u32) -> bool,
        now_ns: u64,
    ) -> Result<Placed, Option<Unfit>> {
        let e = self.entries.get(&id).ok_or(None)?;
        let scales = e.tcp.map_or([0, 0], |t| [t.wscale_orig, t.wscale_reply]);
        let placed = offload::flow_state(&tuple(&e.orig), &tuple(&e.reply), &hops, scales, served);
        let (keys, mut state) = match placed {
            Ok(p) => p,
            Err(u) => {
                self.stats.unfit += 1;
                return Err(Some(u));
            }
        };
        let (orig, reply, timeout) = (e.orig, e.reply, e.timeout);
        let (slot, generation) = self.slots.take().ok_or(None)?;
        state.generation = generation;
        state.why = why as u8;
        state.promoted_ns = now_ns;
        let p = Placed {
            slot,
            id,
            orig,
            reply,
            keys,
            state,
            hops: Some(hops),
            live: FlowLive::promoted(&state, now_ns),
            ct_timeout: timeout,
            leaving: None,
        };
        self.placed.insert(slot, p.clone());
        self.by_orig.insert(orig, slot);
        self.by_id.insert(id, slot);
        self.manual_offload.remove(&id);
        self.stats.promoted += 1;
        Ok(p)
    }

    /// A placement that could not be written: its slot is free again.
    pub fn unplace(&mut self, slot: u32) {
        if let Some(p) = self.placed.remove(&slot) {
            self.by_orig.remove(&p.orig);
            self.by_id.remove(&p.id);
            self.slots.give_back(slot);
            self.stats.promoted -= 1;
        }
    }

    /// A candidate whose next hop is not known yet (no route, or the neighbour not
    /// resolved): it stays on the slow path and is tried again.
    pub fn unresolved(&mut self) {
        self.stats.unfit += 1;
    }

    /// The flow in `slot` left the table: its slot is free, and it cools down.
    pub fn removed(&mut self, slot: u32, now_ns: u64) -> Option<Placed> {
        let p = self.placed.remove(&slot)?;
        self.by_orig.remove(&p.orig);
        self.by_id.remove(&p.id);
        self.slots.give_back(slot);
        if p.id != 0 {
            self.left.insert(p.id, now_ns);
        }
        self.stats.handed_back += 1;
        Some(p)
    }

    /// The hops an offloaded flow's directions were resolved to (again).
    pub fn set_hops(&mut self, slot: u32, hops: [Hop; 2]) {
        if let Some(p) = self.placed.get_mut(&slot) {
            p.hops = Some(hops);
        }
    }

    /// The flow the policy calls `id` no longer goes where the fast path sends it.
    pub fn route_changed(&mut self, id: u32) {
        self.route_changed.insert(id);
    }

    pub fn conntrack_failed(&mut self) {
        self.stats.conntrack_failed += 1;
    }

    /// Manual offload: the matching conntrack entries come in at the next period whatever
    /// the selection and the cooldown say (when they qualify). How many matched.
    pub fn request_offload(&mut self, filter: &FlowFilter) -> usize {
        let ids: Vec<u32> = self
            .entries
            .values()
            .filter(|e| !self.by_id.contains_key(&e.id))
            .filter(|e| filter.matches(e.id, &e.orig, &e.reply))
            .map(|e| e.id)
            .collect();
        self.manual_offload.extend(&ids);
        ids.len()
    }

    /// Manual demotion of the matching offloaded flows at the next period. How many
    /// matched.
    pub fn request_demote(&mut self, filter: &FlowFilter) -> usize {
        let ids: Vec<u32> = self
            .placed
            .values()
            .filter(|p| p.leaving.is_none())
            .filter(|p| filter.matches(Self::id_of(p), &p.orig, &p.reply))
            .map(Self::id_of)
            .collect();
        self.manual_demote.extend(&ids);
        ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::conntrack::{CtCounter, CtTcp};

    fn entry(proto: u8, status: Status, state: u8) -> CtEntry {
        let t = CtTuple {
            src: "10.1.0.2".parse().unwrap(),
            dst: "198.51.100.7".parse().unwrap(),
            proto,
            src_port: 40000,
            dst_port: 443,
        };
        CtEntry {
            id: 9,
            orig: t,
            reply: CtTuple {
                src: t.dst,
                dst: "192.0.2.1".parse().unwrap(),
                src_port: 443,
                dst_port: 40000,
                ..t
            },
            status: status.bits(),
            timeout: 100,
            mark: 1,
            zone: 0,
            tcp: (proto == TCP).then_some(CtTcp {
                state,
                ..CtTcp::default()
            }),
            counters: Some([
                CtCounter {
                    packets: 10,
                    bytes: 1000,
                },
                CtCounter {
                    packets: 5,
                    bytes: 500,
                },
            ]),
        }
    }

    #[test]
    fn established_assured_tcp_and_answered_udp_are_confirmed() {
        let ok = Status::Assured | Status::SeenReply | Status::Confirmed;
        let c = candidate_of(&entry(TCP, ok, TCP_CONNTRACK_ESTABLISHED), 77);
        assert!(c.confirmed && !c.excluded);
        assert_eq!(
            (c.bytes, c.packets, c.rate_bps, c.dst_port),
            (1500, 15, 77, 443)
        );
        // SYN_SENT (1), or not assured yet: not yet.
        assert!(!candidate_of(&entry(TCP, ok, 1), 0).confirmed);
        assert!(!candidate_of(&entry(TCP, Status::SeenReply, 3), 0).confirmed);
        assert!(candidate_of(&entry(UDP, Status::SeenReply, 0), 0).confirmed);
        assert!(!candidate_of(&entry(UDP, Status::Confirmed, 0), 0).confirmed);
        // A helper's connection stays with the kernel.
        let helped = entry(TCP, ok | Status::Helper, TCP_CONNTRACK_ESTABLISHED);
        assert!(candidate_of(&helped, 0).excluded);
        let (o, r) = tuples_of(&helped);
        assert_eq!((o.dst_port, r.dst_port), (443, 40000));
    }

    #[test]
    fn the_section_becomes_the_policy() {
        let section: FlowsSection = toml::from_str(
            "select = \"selected\"\nmin_rate_kbps = 8000\nmark = \"0x1/0x1\"\nports = [\"udp/53\"]\nidle_timeout_s = 10",
        )
        .unwrap();
        let p = policy_of(Some(&section), 1000);
        assert!(p.enabled && !p.selection.all);
        assert_eq!(p.selection.min_rate_bps, Some(1_000_000));
        assert_eq!(p.selection.mark, Some((1, 1)));
        assert!(p.selection.ports.contains(&(UDP, 53)));
        assert_eq!((p.capacity, p.idle_timeout_ns), (1000, 10 * NS_PER_S));
        assert!(!policy_of(None, 1000).enabled);
    }

    #[test]
    fn moves_are_ordered_unless_the_section_says_otherwise() {
        let mut o = Offload::adopt(16, &[], CtTimeouts::default());
        assert!(o.ordered_moves());
        let at_once: FlowsSection = toml::from_str("ordered_moves = false").unwrap();
        o.reconcile(Some(&at_once));
        assert!(!o.ordered_moves());
        o.reconcile(Some(&toml::from_str("").unwrap()));
        assert!(o.ordered_moves());
        o.reconcile(None);
        assert!(o.ordered_moves());
    }
}
