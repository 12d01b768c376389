//! What the dataplane's configuration maps should hold, and the ordered writes that take them
//! from what they hold to that.
//!
//! Features render an [`Image`] from the desired state; [`diff`] compares it with the image
//! last written (or read back from the pinned maps at start) and returns only the writes that
//! differ, in an order no frame can see half-done: *make before break*. Entries are written
//! before anything that refers to them (a CPU-map queue before a table names its CPU, an
//! engine's table before a VM points at the engine, a VM's records before its MACs, MACs
//! before the port entry that makes frames look them up, a hash map's entry before the index
//! slot that names it, the port entry before the program is attached); references are removed
//! before what they refer to (detach, then the index slots, then the port entry, then MACs,
//! ...). Every single write replaces a whole map entry, so a frame sees an entry either before
//! or after a write (index slots, which the kernel copies in place, are sealed against torn
//! reads: `xnic_common::index`).
//!
//! Pure: no I/O. The dataplane executes the [`Op`]s.

use std::collections::{BTreeMap, BTreeSet};

pub use super::vnic_plan::{VnicImage, VnicOp};
use xnic_common::{
    index::{IndexSlot, MacSlot, PortSlot, Sealable, mac_key, mac_slot, port_slot},
    maps::{MacOwner, PortEntry, PortRecord, PortRole, VmRecord},
    rss::{EngineEntry, RssConfig, VmRss},
    team::{CarrierKey, TeamEntry, VmTeam},
};

/// `PSCHED_SHIFT`: the kernel's packet scheduler counts time in ticks of 2^6 ns.
const PSCHED_SHIFT: u32 = 6;

/// One shaped VM's class on one uplink, as the kernel holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShapeClass {
    pub rate_bytes_per_sec: u64,
    /// The burst, in the kernel's scheduler ticks (64 ns) at the rate.
    pub buffer_ticks: u32,
}

impl ShapeClass {
    /// The class for a rate and a burst given as time at that rate.
    pub fn new(rate_bytes_per_sec: u64, burst_ns: u64) -> ShapeClass {
        ShapeClass {
            rate_bytes_per_sec,
            buffer_ticks: (burst_ns >> PSCHED_SHIFT).min(u64::from(u32::MAX)) as u32,
        }
    }

    pub fn burst_bytes(&self) -> u64 {
        let ns = u128::from(self.buffer_ticks) << PSCHED_SHIFT;
        (ns * u128::from(self.rate_bytes_per_sec) / 1_000_000_000) as u64
    }
}

/// A program attachment: the interface's index now, which program runs there, and its
/// kernel id (a newer daemon swaps its own program into the same link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub ifindex: u32,
    pub role: PortRole,
    pub program: u32,
}

/// Kernel ids of the programs this daemon loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Programs {
    pub uplink: u32,
    pub vm: u32,
    /// The flood filter on team uplinks' broadcast copies.
    pub flood: u32,
}

impl Programs {
    pub fn for_role(&self, role: xnic_common::maps::PortRole) -> u32 {
        match role {
            xnic_common::maps::PortRole::Uplink => self.uplink,
            xnic_common::maps::PortRole::Vm => self.vm,
        }
    }
}
/// A target of redirected frames (`TX_PORTS`, and `FLOOD` for broadcasts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxPort {
    /// A team uplink: the kernel id of the flood filter its broadcast copies go through.
    pub flood_filter: Option<u32>,
}

/// Everything the daemon writes into the dataplane. Array maps hold their default where an
/// index is absent; hash maps hold no entry.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Image {
    /// `CPUMAP`: CPUs with a queue running the CPU-map program.
    pub cpu_queues: BTreeSet<u32>,
    /// `TX_PORTS` and `FLOOD`, by ifindex.
    pub tx_ports: BTreeMap<u32, TxPort>,
    /// `ENGINES`, by engine index.
    pub engines: BTreeMap<u32, EngineEntry>,
    /// `RSS_TABLES`, by `bucket_index`.
    pub rss_tables: BTreeMap<u32, u32>,
    /// `TEAMS`, by team index.
    pub teams: BTreeMap<u32, TeamEntry>,
    /// `TEAM_TABLES`, by `table_index`.
    pub team_tables: BTreeMap<u32, u32>,
    /// `CARRIER_WATCH`: the uplinks the kernel's carrier hook marks down, with their
    /// `member_index`.
    pub carrier_watch: BTreeMap<CarrierKey, u32>,
    /// `MEMBER_UP`, by `member_index`: since when each member is in use.
    pub member_up: BTreeMap<u32, u64>,
    /// `VM_TEAM`, by VM slot.
    pub vm_team: BTreeMap<u32, VmTeam>,
    /// `VM_RSS`, by VM slot.
    pub vm_rss: BTreeMap<u32, VmRss>,
    /// `VM_TABLE`, by VM slot.
    pub vm_records: BTreeMap<u32, VmRecord>,
    /// `PORT_TABLE`, by port slot.
    pub port_records: BTreeMap<u32, PortRecord>,
    /// `RSS_CONFIG[0]`.
    pub rss_config: RssConfig,
    /// `MACS`.
    pub macs: BTreeMap<[u8; 6], MacOwner>,
    /// `PORTS_V2`, by ifindex.
    pub ports: BTreeMap<u32, PortEntry>,
    /// `MAC_INDEX`, by slot: derived from `macs` ([`Image::index`]).
    pub mac_index: BTreeMap<u32, MacSlot>,
    /// `PORT_INDEX`, by slot: derived from `ports` ([`Image::index`]).
    pub port_index: BTreeMap<u32, PortSlot>,
    /// Pinned XDP links, by interface name.
    pub attach: BTreeMap<String, Attachment>,
    /// The shaper's HTB roots: uplink ifindex → its name.
    pub shaper_roots: BTreeMap<u32, String>,
    /// The shaper's classes, by (uplink ifindex, VM slot).
    pub shaper_classes: BTreeMap<(u32, u32), ShapeClass>,
    /// VNIC routing's maps (shared: it holds up to a million routes, and changes only with
    /// the configuration).
    pub vnic: std::sync::Arc<VnicImage>,
}

/// One write. Writing an array entry's default is how an array entry is removed.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Zero a newly assigned VM slot's counters (and its token bucket).
    ResetVmCounters(u32),
    /// Zero a newly assigned port slot's counters.
    ResetPortCounters(u32),
    /// Zero an engine index's bucket counters (a new engine took it).
    ResetBucketCounters(u32),
    /// Zero a VNIC slot's counters (a new VNIC took it).
    ResetVnicCounters(u32),
    /// Zero a route id's counter (a new route took it).
    ResetRouteCounter(u32),
    SetCpuQueue(u32),
    SetTxPort(u32, TxPort),
    SetEngine(u32, EngineEntry),
    SetRssBucket(u32, u32),
    SetTeam(u32, TeamEntry),
    SetTeamBucket(u32, u32),
    SetCarrierWatch(CarrierKey, u32),
    SetMemberUp(u32, u64),
    SetVmTeam(u32, VmTeam),
    SetVmRss(u32, VmRss),
    SetVmRecord(u32, VmRecord),
    SetPortRecord(u32, PortRecord),
    SetRssConfig(RssConfig),
    SetMac([u8; 6], MacOwner),
    SetMacIndex(u32, MacSlot),
    SetPort(u32, PortEntry),
    SetPortIndex(u32, PortSlot),
    Attach(String, Attachment),
    Detach(String),
    /// Put the shaper's HTB root on an uplink (ifindex, name).
    SetShaperRoot(u32, String),
    RemoveShaperRoot(u32),
    /// A VM's class on an uplink: (uplink ifindex, VM slot).
    SetShaperClass((u32, u32), ShapeClass),
    RemoveShaperClass((u32, u32)),
    RemovePort(u32),
    RemoveMac([u8; 6]),
    RemoveTxPort(u32),
    RemoveCarrierWatch(CarrierKey),
    RemoveCpuQueue(u32),
    /// A write to VNIC routing's maps.
    Vnic(VnicOp),
}

/// One-shot writes that are not state (counter resets), to run before everything else.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resets {
    pub vm_slots: BTreeSet<u32>,
    pub port_slots: BTreeSet<u32>,
    pub engines: BTreeSet<u32>,
    /// VNIC slots and route ids given to new VNICs and routes.
    pub vnic_slots: BTreeSet<u32>,
    pub route_ids: BTreeSet<u32>,
}

impl Resets {
    pub fn is_empty(&self) -> bool {
        self.vm_slots.is_empty()
            && self.port_slots.is_empty()
            && self.engines.is_empty()
            && self.vnic_slots.is_empty()
            && self.route_ids.is_empty()
    }

    pub fn extend(&mut self, other: Resets) {
        self.vm_slots.extend(other.vm_slots);
        self.port_slots.extend(other.port_slots);
        self.engines.extend(other.engines);
        self.vnic_slots.extend(other.vnic_slots);
        self.route_ids.extend(other.route_ids);
    }
}

/// Writes of one array-like section: set what changed (to `set`), and collect indexes that
/// went back to the default (to `unset`).
fn section<K: Ord + Clone, V: PartialEq + Clone>(
    from: &BTreeMap<K, V>,
    to: &BTreeMap<K, V>,
    set: &mut Vec<Op>,
    mut put: impl FnMut(K, V) -> Op,
    unset: &mut Vec<K>,
) {
    for (k, v) in to {
        if from.get(k) != Some(v) {
            set.push(put(k.clone(), v.clone()));
        }
    }
    for k in from.keys() {
        if !to.contains_key(k) {
            unset.push(k.clone());
        }
    }
}

/// The writes that take the dataplane from `from` to `to`, after `resets`, in a safe order.
pub fn diff(from: &Image, to: &Image, resets: &Resets) -> Vec<Op> {
    let mut ops: Vec<Op> = Vec::new();
    ops.extend(resets.vm_slots.iter().map(|s| Op::ResetVmCounters(*s)));
    ops.extend(resets.port_slots.iter().map(|s| Op::ResetPortCounters(*s)));
    ops.extend(resets.engines.iter().map(|e| Op::ResetBucketCounters(*e)));
    ops.extend(resets.vnic_slots.iter().map(|s| Op::ResetVnicCounters(*s)));
    ops.extend(resets.route_ids.iter().map(|r| Op::ResetRouteCounter(*r)));

    // Make: entries before whatever refers to them.
    for cpu in to.cpu_queues.difference(&from.cpu_queues) {
        ops.push(Op::SetCpuQueue(*cpu));
    }
    // The shaper's queues, before a placement flags its VM as shaped.
    for (ifindex, name) in &to.shaper_roots {
        if from.shaper_roots.get(ifindex) != Some(name) {
            ops.push(Op::SetShaperRoot(*ifindex, name.clone()));
        }
    }
    let mut gone_classes = Vec::new();
    section(
        &from.shaper_classes,
        &to.shaper_classes,
        &mut ops,
        Op::SetShaperClass,
        &mut gone_classes,
    );
    let mut gone_tx = Vec::new();
    section(
        &from.tx_ports,
        &to.tx_ports,
        &mut ops,
        Op::SetTxPort,
        &mut gone_tx,
    );
    let mut gone_engines = Vec::new();
    section(
        &from.engines,
        &to.engines,
        &mut ops,
        Op::SetEngine,
        &mut gone_engines,
    );
    let mut gone_rss_buckets = Vec::new();
    section(
        &from.rss_tables,
        &to.rss_tables,
        &mut ops,
        Op::SetRssBucket,
        &mut gone_rss_buckets,
    );
    let mut gone_teams = Vec::new();
    section(
        &from.teams,
        &to.teams,
        &mut ops,
        Op::SetTeam,
        &mut gone_teams,
    );
    let mut gone_team_buckets = Vec::new();
    section(
        &from.team_tables,
        &to.team_tables,
        &mut ops,
        Op::SetTeamBucket,
        &mut gone_team_buckets,
    );
    // The carrier hook's watch list and the members' in-use times: before the placements
    // whose fallbacks name them.
    let mut gone_watch = Vec::new();
    section(
        &from.carrier_watch,
        &to.carrier_watch,
        &mut ops,
        Op::SetCarrierWatch,
        &mut gone_watch,
    );
    let mut gone_member_up = Vec::new();
    section(
        &from.member_up,
        &to.member_up,
        &mut ops,
        Op::SetMemberUp,
        &mut gone_member_up,
    );
    let mut gone_vm_team = Vec::new();
    section(
        &from.vm_team,
        &to.vm_team,
        &mut ops,
        Op::SetVmTeam,
        &mut gone_vm_team,
    );
    let mut gone_vm_rss = Vec::new();
    section(
        &from.vm_rss,
        &to.vm_rss,
        &mut ops,
        Op::SetVmRss,
        &mut gone_vm_rss,
    );
    let mut gone_vm_records = Vec::new();
    section(
        &from.vm_records,
        &to.vm_records,
        &mut ops,
        Op::SetVmRecord,
        &mut gone_vm_records,
    );
    let mut gone_port_records = Vec::new();
    section(
        &from.port_records,
        &to.port_records,
        &mut ops,
        Op::SetPortRecord,
        &mut gone_port_records,
    );
    if from.rss_config != to.rss_config {
        ops.push(Op::SetRssConfig(to.rss_config));
    }
    let mut gone_macs = Vec::new();
    section(&from.macs, &to.macs, &mut ops, Op::SetMac, &mut gone_macs);
    let mut gone_mac_slots = Vec::new();
    section(
        &from.mac_index,
        &to.mac_index,
        &mut ops,
        Op::SetMacIndex,
        &mut gone_mac_slots,
    );
    let mut gone_ports = Vec::new();
    section(
        &from.ports,
        &to.ports,
        &mut ops,
        Op::SetPort,
        &mut gone_ports,
    );
    let mut gone_port_slots = Vec::new();
    section(
        &from.port_index,
        &to.port_index,
        &mut ops,
        Op::SetPortIndex,
        &mut gone_port_slots,
    );
    // VNIC routing's maps refer to none of the above and nothing above to them.
    let (vnic_make, vnic_break) = if std::sync::Arc::ptr_eq(&from.vnic, &to.vnic) {
        (Vec::new(), Vec::new())
    } else {
        super::vnic_plan::diff(&from.vnic, &to.vnic)
    };
    ops.extend(vnic_make.into_iter().map(Op::Vnic));
    let mut gone_links = Vec::new();
    for (name, a) in &to.attach {
        match from.attach.get(name) {
            Some(old) if old == a => {}
            // Another program in the same link: swapped in place, no frame misses a program.
            Some(old) if (old.ifindex, old.role) == (a.ifindex, a.role) => {
                ops.push(Op::Attach(name.clone(), *a));
            }
            // The interface was recreated (new index) or runs the other role: a new link.
            Some(_) => {
                ops.push(Op::Detach(name.clone()));
                ops.push(Op::Attach(name.clone(), *a));
            }
            None => ops.push(Op::Attach(name.clone(), *a)),
        }
    }
    for name in from.attach.keys() {
        if !to.attach.contains_key(name) {
            gone_links.push(name.clone());
        }
    }

    // Break: references before what they refer to.
    ops.extend(gone_links.into_iter().map(Op::Detach));
    ops.extend(vnic_break.into_iter().map(Op::Vnic));
    ops.extend(
        gone_port_slots
            .into_iter()
            .map(|s| Op::SetPortIndex(s, PortSlot::default())),
    );
    ops.extend(gone_ports.into_iter().map(Op::RemovePort));
    ops.extend(
        gone_mac_slots
            .into_iter()
            .map(|s| Op::SetMacIndex(s, MacSlot::default())),
    );
    ops.extend(gone_macs.into_iter().map(Op::RemoveMac));
    ops.extend(
        gone_port_records
            .into_iter()
            .map(|s| Op::SetPortRecord(s, PortRecord::default())),
    );
    ops.extend(
        gone_vm_records
            .into_iter()
            .map(|s| Op::SetVmRecord(s, VmRecord::default())),
    );
    ops.extend(
        gone_vm_rss
            .into_iter()
            .map(|s| Op::SetVmRss(s, VmRss::default())),
    );
    ops.extend(
        gone_vm_team
            .into_iter()
            .map(|s| Op::SetVmTeam(s, VmTeam::default())),
    );
    ops.extend(
        gone_team_buckets
            .into_iter()
            .map(|b| Op::SetTeamBucket(b, 0)),
    );
    ops.extend(gone_member_up.into_iter().map(|m| Op::SetMemberUp(m, 0)));
    ops.extend(gone_watch.into_iter().map(Op::RemoveCarrierWatch));
    ops.extend(
        gone_teams
            .into_iter()
            .map(|t| Op::SetTeam(t, TeamEntry::default())),
    );
    ops.extend(gone_rss_buckets.into_iter().map(|b| Op::SetRssBucket(b, 0)));
    ops.extend(
        gone_engines
            .into_iter()
            .map(|e| Op::SetEngine(e, EngineEntry::default())),
    );
    ops.extend(gone_tx.into_iter().map(Op::RemoveTxPort));
    // After the placements that stopped naming them.
    ops.extend(gone_classes.into_iter().map(Op::RemoveShaperClass));
    for ifindex in from.shaper_roots.keys() {
        if !to.shaper_roots.contains_key(ifindex) {
            ops.push(Op::RemoveShaperRoot(*ifindex));
        }
    }
    for cpu in from.cpu_queues.difference(&to.cpu_queues) {
        ops.push(Op::RemoveCpuQueue(*cpu));
    }
    ops
}

/// `image` after `op` ran: the executor keeps its record of what is written with this, so a
/// failure half-way knows exactly what to undo.
pub fn record(image: &mut Image, op: &Op) {
    match op {
        Op::ResetVmCounters(_)
        | Op::ResetPortCounters(_)
        | Op::ResetBucketCounters(_)
        | Op::ResetVnicCounters(_)
        | Op::ResetRouteCounter(_) => {}
        Op::SetCpuQueue(c) => {
            image.cpu_queues.insert(*c);
        }
        Op::RemoveCpuQueue(c) => {
            image.cpu_queues.remove(c);
        }
        Op::SetTxPort(i, t) => {
            image.tx_ports.insert(*i, *t);
        }
        Op::RemoveTxPort(i) => {
            image.tx_ports.remove(i);
        }
        Op::SetEngine(e, v) => set_or_clear(&mut image.engines, *e, *v),
        Op::SetRssBucket(b, v) => set_or_clear(&mut image.rss_tables, *b, *v),
        Op::SetTeam(t, v) => set_or_clear(&mut image.teams, *t, *v),
        Op::SetTeamBucket(b, v) => set_or_clear(&mut image.team_tables, *b, *v),
        Op::SetCarrierWatch(k, v) => {
            image.carrier_watch.insert(*k, *v);
        }
        Op::RemoveCarrierWatch(k) => {
            image.carrier_watch.remove(k);
        }
        Op::SetMemberUp(m, v) => set_or_clear(&mut image.member_up, *m, *v),
        Op::SetVmTeam(s, v) => set_or_clear(&mut image.vm_team, *s, *v),
        Op::SetVmRss(s, v) => set_or_clear(&mut image.vm_rss, *s, *v),
        Op::SetVmRecord(s, v) => set_or_clear(&mut image.vm_records, *s, *v),
        Op::SetPortRecord(s, v) => set_or_clear(&mut image.port_records, *s, *v),
        Op::SetRssConfig(c) => image.rss_config = *c,
        Op::SetMac(m, o) => {
            image.macs.insert(*m, *o);
        }
        Op::RemoveMac(m) => {
            image.macs.remove(m);
        }
        Op::SetPort(i, p) => {
            image.ports.insert(*i, *p);
        }
        Op::SetMacIndex(s, v) => set_or_clear(&mut image.mac_index, *s, *v),
        Op::SetPortIndex(s, v) => set_or_clear(&mut image.port_index, *s, *v),
        Op::RemovePort(i) => {
            image.ports.remove(i);
        }
        Op::Attach(n, a) => {
            image.attach.insert(n.clone(), *a);
        }
        Op::Detach(n) => {
            image.attach.remove(n);
        }
        Op::SetShaperRoot(i, n) => {
            image.shaper_roots.insert(*i, n.clone());
        }
        Op::RemoveShaperRoot(i) => {
            image.shaper_roots.remove(i);
        }
        Op::SetShaperClass(k, c) => {
            image.shaper_classes.insert(*k, *c);
        }
        Op::RemoveShaperClass(k) => {
            image.shaper_classes.remove(k);
        }
        Op::Vnic(op) => super::vnic_plan::record(std::sync::Arc::make_mut(&mut image.vnic), op),
    }
}

impl Image {
    /// Derives the index slots from the hash maps they stand in front of: the last step of
    /// rendering an image.
    pub fn index(&mut self) {
        self.mac_index = index_of(
            self.macs
                .iter()
                .map(|(m, o)| (mac_slot(*m), mac_key(*m), *o)),
        );
        self.port_index = index_of(
            self.ports
                .iter()
                .map(|(i, p)| (port_slot(*i), u64::from(*i), *p)),
        );
    }
}

/// The non-empty slots of an index over `entries` (slot, key, value).
fn index_of<V: Sealable + Default>(
    entries: impl Iterator<Item = (u32, u64, V)>,
) -> BTreeMap<u32, IndexSlot<V>> {
    let mut slots = BTreeMap::new();
    for (slot, key, value) in entries {
        slots
            .entry(slot)
            .and_modify(|s| *s = IndexSlot::many())
            .or_insert_with(|| IndexSlot::one(key, value));
    }
    slots
}

/// Array sections hold only non-default entries, so a read-back image compares equal to a
/// rendered one.
fn set_or_clear<V: Default + PartialEq>(map: &mut BTreeMap<u32, V>, k: u32, v: V) {
    if v == V::default() {
        map.remove(&k);
    } else {
        map.insert(k, v);
    }
}

/// Inserts `v` at `k` unless it is the array's default (see [`set_or_clear`]).
pub fn put<V: Default + PartialEq>(map: &mut BTreeMap<u32, V>, k: u32, v: V) {
    set_or_clear(map, k, v);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use xnic_common::{
        index::{PORT_INDEX_SIZE, Probe, SLOT_MANY},
        maps::Name,
    };

    use super::*;

    fn port(slot: u32) -> PortEntry {
        PortEntry::new(slot, 0, PortRole::Vm)
    }

    fn vm_image(ifindex: u32) -> Image {
        let mut i = Image::default();
        i.vm_records.insert(
            0,
            VmRecord {
                name: Name::new("vm0"),
                in_use: 1,
                _pad: [0; 7],
            },
        );
        i.macs.insert(
            [2, 0, 0, 0, 0, 1],
            MacOwner {
                vm_slot: 0,
                port_ifindex: ifindex,
            },
        );
        i.ports.insert(ifindex, port(1));
        i.attach.insert(
            "tap0".into(),
            Attachment {
                ifindex,
                role: PortRole::Vm,
                program: 40,
            },
        );
        i.index();
        i
    }

    fn position(ops: &[Op], f: impl Fn(&Op) -> bool) -> usize {
        ops.iter().position(f).expect("op present")
    }

    #[test]
    fn a_new_vm_is_made_records_first_and_attached_last() {
        let ops = diff(&Image::default(), &vm_image(7), &Resets::default());
        let rec = position(&ops, |o| matches!(o, Op::SetVmRecord(..)));
        let mac = position(&ops, |o| matches!(o, Op::SetMac(..)));
        let port = position(&ops, |o| matches!(o, Op::SetPort(..)));
        let attach = position(&ops, |o| matches!(o, Op::Attach(..)));
        assert!(rec < mac && mac < port && port < attach, "{ops:?}");
        let mac_slot = position(&ops, |o| matches!(o, Op::SetMacIndex(..)));
        let port_slot = position(&ops, |o| matches!(o, Op::SetPortIndex(..)));
        assert!(mac < mac_slot && mac_slot < port && port < port_slot && port_slot < attach);
    }

    #[test]
    fn a_removed_vm_is_detached_first_and_its_records_go_last() {
        let ops = diff(&vm_image(7), &Image::default(), &Resets::default());
        let detach = position(&ops, |o| matches!(o, Op::Detach(..)));
        let port = position(&ops, |o| matches!(o, Op::RemovePort(..)));
        let mac = position(&ops, |o| matches!(o, Op::RemoveMac(..)));
        let rec = position(
            &ops,
            |o| matches!(o, Op::SetVmRecord(_, r) if r.in_use == 0),
        );
        assert!(detach < port && port < mac && mac < rec, "{ops:?}");
        let cleared = |o: &Op| match o {
            Op::SetPortIndex(_, s) => *s == PortSlot::default(),
            Op::SetMacIndex(_, s) => *s == MacSlot::default(),
            _ => false,
        };
        let port_slot = position(&ops, |o| matches!(o, Op::SetPortIndex(..)) && cleared(o));
        let mac_slot = position(&ops, |o| matches!(o, Op::SetMacIndex(..)) && cleared(o));
        assert!(detach < port_slot && port_slot < port && port < mac_slot && mac_slot < mac);
    }

    #[test]
    fn a_recreated_interface_gets_a_new_link_and_its_old_index_goes() {
        let ops = diff(&vm_image(7), &vm_image(9), &Resets::default());
        assert!(ops.contains(&Op::SetPort(9, port(1))));
        assert!(ops.contains(&Op::RemovePort(7)));
        let detach = position(&ops, |o| matches!(o, Op::Detach(..)));
        let attach = position(&ops, |o| matches!(o, Op::Attach(..)));
        assert!(detach < attach);
        // The record did not change: not rewritten.
        assert!(!ops.iter().any(|o| matches!(o, Op::SetVmRecord(..))));
    }

    #[test]
    fn a_new_program_is_swapped_into_the_same_link() {
        let mut newer = vm_image(7);
        newer.attach.get_mut("tap0").unwrap().program = 41;
        let ops = diff(&vm_image(7), &newer, &Resets::default());
        assert_eq!(ops.len(), 1);
        assert!(matches!(&ops[0], Op::Attach(n, a) if n == "tap0" && a.program == 41));
    }

    #[test]
    fn nothing_changed_writes_nothing_and_resets_come_first() {
        assert!(diff(&vm_image(7), &vm_image(7), &Resets::default()).is_empty());
        let resets = Resets {
            vm_slots: [3].into(),
            ..Resets::default()
        };
        let ops = diff(&Image::default(), &vm_image(7), &resets);
        assert_eq!(ops[0], Op::ResetVmCounters(3));
    }

    #[test]
    fn steering_turns_on_after_its_queues_tables_and_placements() {
        let mut to = Image::default();
        to.cpu_queues.insert(1);
        to.engines.insert(
            0,
            EngineEntry {
                table_mask: 127,
                config_tag: 5,
            },
        );
        to.rss_tables.insert(3, 1);
        to.vm_rss.insert(0, VmRss { engine: 0, _pad: 0 });
        to.rss_config.enabled = 1;
        let ops = diff(&Image::default(), &to, &Resets::default());
        let queue = position(&ops, |o| matches!(o, Op::SetCpuQueue(..)));
        let table = position(&ops, |o| matches!(o, Op::SetRssBucket(..)));
        let vm = position(&ops, |o| matches!(o, Op::SetVmRss(..)));
        let on = position(&ops, |o| matches!(o, Op::SetRssConfig(..)));
        assert!(queue < table && table < vm && vm < on, "{ops:?}");
        // And off again: the VM leaves the engine before the engine goes, the queue last.
        let back = diff(&to, &Image::default(), &Resets::default());
        let vm = position(&back, |o| matches!(o, Op::SetVmRss(..)));
        let engine = position(&back, |o| matches!(o, Op::SetEngine(..)));
        let queue = position(&back, |o| matches!(o, Op::RemoveCpuQueue(..)));
        assert!(vm < engine && engine < queue, "{back:?}");
    }

    fn arb_image() -> impl Strategy<Value = Image> {
        (
            proptest::collection::btree_set(0u32..8, 0..4),
            proptest::collection::btree_map(0u32..16, 1u32..4, 0..8),
            proptest::collection::btree_map(0u32..8, 1u32..4, 0..4),
            proptest::collection::btree_map(0usize..8, (0u32..4, 1u32..20), 0..6),
            proptest::collection::btree_map(
                prop_oneof![1u32..12, (1u32..4).prop_map(|i| i + PORT_INDEX_SIZE)],
                0u32..4,
                0..6,
            ),
        )
            .prop_map(|(queues, rss, vm_rss, macs, ports)| {
                let mut i = Image {
                    cpu_queues: queues,
                    rss_tables: rss,
                    ..Image::default()
                };
                for (s, e) in vm_rss {
                    i.vm_rss.insert(s, VmRss { engine: e, _pad: 0 });
                }
                let pool = mac_pool();
                for (m, (vm_slot, port_ifindex)) in macs {
                    i.macs.insert(
                        pool[m],
                        MacOwner {
                            vm_slot,
                            port_ifindex,
                        },
                    );
                }
                for (ifindex, slot) in ports {
                    i.ports.insert(ifindex, port(slot));
                    i.attach.insert(
                        format!("if{ifindex}"),
                        Attachment {
                            ifindex,
                            role: PortRole::Vm,
                            program: 40 + slot,
                        },
                    );
                }
                i.index();
                i
            })
    }

    /// Eight MACs: four alone in their index slots, four sharing one.
    fn mac_pool() -> &'static [[u8; 6]] {
        static POOL: std::sync::OnceLock<Vec<[u8; 6]>> = std::sync::OnceLock::new();
        POOL.get_or_init(|| {
            let mut pool: Vec<[u8; 6]> = (1..=4).map(|m| [2, 0, 0, 0, 0, m]).collect();
            let shared = mac_slot([2, 0, 0, 0, 1, 0]);
            pool.extend(
                (0..=u32::MAX)
                    .map(|i| {
                        let b = i.to_be_bytes();
                        [2, 1, b[0], b[1], b[2], b[3]]
                    })
                    .filter(|m| mac_slot(*m) == shared)
                    .take(4),
            );
            pool
        })
    }

    /// What a frame finds for `mac`: the index slot, then `MACS` if the slot cannot tell.
    fn frame_finds_mac(image: &Image, mac: [u8; 6]) -> Option<MacOwner> {
        let slot = image
            .mac_index
            .get(&mac_slot(mac))
            .copied()
            .unwrap_or_default();
        match slot.probe(mac_key(mac)) {
            Probe::Found(o) => Some(o),
            Probe::Absent => None,
            Probe::Ask => image.macs.get(&mac).copied(),
        }
    }

    /// Like [`frame_finds_mac`], for a port.
    fn frame_finds_port(image: &Image, ifindex: u32) -> Option<PortEntry> {
        let slot = image
            .port_index
            .get(&port_slot(ifindex))
            .copied()
            .unwrap_or_default();
        match slot.probe(u64::from(ifindex)) {
            Probe::Found(p) => Some(p),
            Probe::Absent => None,
            Probe::Ask => image.ports.get(&ifindex).copied(),
        }
    }

    #[test]
    fn colliding_macs_share_a_slot_that_sends_frames_to_the_hash_map() {
        let pool = mac_pool();
        let mut i = Image::default();
        for (n, m) in pool[4..6].iter().enumerate() {
            i.macs.insert(
                *m,
                MacOwner {
                    vm_slot: n as u32,
                    port_ifindex: 3,
                },
            );
        }
        i.index();
        assert_eq!(i.mac_index.len(), 1);
        assert_eq!(i.mac_index.values().next().unwrap().state, SLOT_MANY);
        assert_eq!(frame_finds_mac(&i, pool[5]).unwrap().vm_slot, 1);
        assert_eq!(frame_finds_mac(&i, pool[6]), None);
    }

    proptest! {
        /// Whatever the two images, running the diff over the first gives the second.
        #[test]
        fn the_diff_takes_one_image_to_the_other(a in arb_image(), b in arb_image()) {
            let mut written = a.clone();
            for op in diff(&a, &b, &Resets::default()) {
                record(&mut written, &op);
            }
            prop_assert_eq!(written, b);
        }

        /// Between any two writes of a diff, every frame finds each port and MAC as it was
        /// before the change or as it is after it, never anything else; and every slot that
        /// holds something has a key in its hash map, so a daemon that stops there (a crash)
        /// reads every such slot back (`Dataplane::read_image` reads the slots of keys).
        #[test]
        fn frames_see_each_entry_before_or_after_never_between(a in arb_image(), b in arb_image()) {
            let macs: BTreeSet<[u8; 6]> = a.macs.keys().chain(b.macs.keys()).copied().collect();
            let ports: BTreeSet<u32> = a.ports.keys().chain(b.ports.keys()).copied().collect();
            let mut written = a.clone();
            for op in diff(&a, &b, &Resets::default()) {
                record(&mut written, &op);
                for slot in written.mac_index.keys() {
                    prop_assert!(
                        written.macs.keys().any(|m| mac_slot(*m) == *slot),
                        "MAC slot {slot} holds no key after {op:?}"
                    );
                }
                for slot in written.port_index.keys() {
                    prop_assert!(
                        written.ports.keys().any(|i| port_slot(*i) == *slot),
                        "port slot {slot} holds no key after {op:?}"
                    );
                }
                for m in &macs {
                    let seen = frame_finds_mac(&written, *m);
                    prop_assert!(
                        seen == a.macs.get(m).copied() || seen == b.macs.get(m).copied(),
                        "MAC {m:?} after {op:?}: {seen:?}"
                    );
                }
                for i in &ports {
                    let seen = frame_finds_port(&written, *i);
                    prop_assert!(
                        seen == a.ports.get(i).copied() || seen == b.ports.get(i).copied(),
                        "port {i} after {op:?}: {seen:?}"
                    );
                }
            }
        }
    }
}
