//! What the control API takes and returns (`/v1/...`), shared by the daemon, the CLI and
//! anything else that talks to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xnic_common::maps::Counter;

use crate::config::{AttachMode, EngineKind, HashKind};

/// The API version in every path.
pub const API_PREFIX: &str = "/v1";

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl From<Counter> for Count {
    fn from(c: Counter) -> Self {
        Count {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

impl Count {
    pub fn plus(self, o: Count) -> Count {
        Count {
            packets: self.packets.wrapping_add(o.packets),
            bytes: self.bytes.wrapping_add(o.bytes),
        }
    }
}

/// Packets and bits per second over the last sampling period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub pps: f64,
    pub bps: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Uplink,
    Vm,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub instance: String,
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub config: String,
    /// Where the desired state is kept across restarts.
    #[serde(default)]
    pub state_file: String,
    /// Changes of the desired state so far.
    #[serde(default)]
    pub generation: u64,
    pub netns: Option<String>,
    pub pin_dir: String,
    /// Layout version of the pinned maps.
    pub abi: u32,
    /// When the pinned dataplane was first created (Unix seconds): it outlives daemons.
    pub dataplane_created_unix: u64,
    /// Whether this daemon adopted a running dataplane rather than creating it.
    pub adopted: bool,
    /// Where the dataplane learns that a team uplink died without the daemon: always from
    /// redirects to it that the kernel could not send; from `netif_carrier_off` too where the
    /// kernel lets it trace that (else why not).
    #[serde(default)]
    pub carrier_hook: String,
    pub cpus: usize,
    pub ports: Vec<PortStatus>,
    pub vms: usize,
    pub totals: Totals,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortStatus {
    pub name: String,
    /// `attached`, `waiting` (the interface does not exist yet), or why it is not attached.
    #[serde(default)]
    pub state: String,
    pub role: Role,
    pub ifindex: u32,
    pub slot: u32,
    /// The VM this port belongs to (VM ports only).
    pub vm: Option<String>,
    /// Operationally up.
    pub up: bool,
    pub mtu: u32,
    /// How XDP runs here now, as the kernel reports it; `None` when nothing is attached.
    pub xdp_mode: Option<AttachMode>,
    /// Whether the attached program is this daemon's (false means someone replaced it).
    pub xdp_ours: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub passed: Count,
    pub dropped: Count,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    pub name: String,
    pub slot: u32,
    pub port: String,
    /// Its port's state: `attached`, `waiting` for the interface, or why it is not attached.
    #[serde(default)]
    pub port_state: String,
    pub macs: Vec<String>,
    pub ips: Vec<String>,
    pub counters: VmCountersView,
    pub rates: VmRates,
    /// Verdicts on the VM's port, by reason (only reasons with traffic).
    pub port_reasons: BTreeMap<String, Count>,
    /// Its RSS engine state, when RSS is configured.
    #[serde(default)]
    pub rss: Option<RssVmView>,
    /// Its team placement and allocation, when it is in a team.
    #[serde(default)]
    pub team: Option<TeamVmView>,
}

/// Answer to adding or changing a VM: the VM now, and what the change did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmChanged {
    pub vm: Option<VmView>,
    pub change: ChangeView,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VmCountersView {
    /// Frames the VM sent, seen on its port.
    pub from_vm: Count,
    /// Frames for the VM, seen on uplinks.
    pub to_vm: Count,
    /// Frames dropped on the VM's port.
    pub dropped: Count,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VmRates {
    pub from_vm: Rate,
    pub to_vm: Rate,
    pub dropped: Rate,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    /// Length of the period the rates cover, in seconds (0 before the first sample).
    pub interval_secs: f64,
    pub ports: Vec<PortStats>,
    pub vms: Vec<VmStats>,
    /// Frames seen on interfaces xnic has no port entry for (a stale attachment): passed.
    pub unknown_port: Count,
    /// Frames each CPU processed (all ports), index = CPU number.
    pub cpus: Vec<Count>,
    /// Frames steered to each CPU that its full CPU-map queue dropped, index = CPU number.
    #[serde(default)]
    pub cpu_queue_dropped: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortStats {
    pub name: String,
    pub role: Role,
    pub slot: u32,
    pub total: Count,
    pub rate: Rate,
    /// Frames and bytes by verdict reason (all reasons, zeros included).
    pub reasons: BTreeMap<String, Count>,
    /// Frames and bytes by notable shape (only shapes seen).
    pub shapes: BTreeMap<String, Count>,
    /// Frames xnic redirected to this port (counted where they arrived, as `to_uplink`,
    /// `to_vm`, ...) that the kernel dropped on the way out: a full queue, a port that cannot
    /// take redirected frames, a link that is down.
    #[serde(default)]
    pub redirect_dropped: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmStats {
    pub name: String,
    pub counters: VmCountersView,
    pub rates: VmRates,
}

/// Error body of every failed request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// Answer to `POST /v1/down`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DownView {
    pub links_removed: Vec<String>,
    pub maps_removed: usize,
}

/// `GET /v1/rss`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RssStatusView {
    pub enabled: bool,
    pub period_ms: u64,
    /// Policy periods run so far.
    pub period: u64,
    pub default_cpu: u32,
    pub hash: HashKind,
    pub table_size: u32,
    pub engines: Vec<RssEngineView>,
    pub vms: Vec<RssVmView>,
    pub cpus: Vec<RssCpuView>,
    /// Steering counters since the dataplane was created.
    pub steering: BTreeMap<String, u64>,
    /// Events by kind since this daemon started.
    pub event_counts: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RssEngineView {
    pub name: String,
    pub kind: EngineKind,
    pub cpus: Vec<u32>,
    pub vms: Vec<String>,
    /// Frames per second of its VMs over the last period.
    pub load_pps: f64,
    pub load_pps_per_cpu: f64,
    /// (CPU, frames per second its buckets sent there).
    pub cpu_pps: Vec<(u32, f64)>,
    /// CPU → number of table buckets naming it.
    pub buckets_per_cpu: BTreeMap<u32, u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RssVmView {
    pub name: String,
    pub slot: u32,
    /// `no-rss`, `shared:<engine>` or `dedicated:<engine>`.
    pub state: String,
    pub pinned: bool,
    pub priority: i32,
    pub prefer_dedicated: bool,
    pub load_pps: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RssCpuView {
    pub cpu: u32,
    /// Frames per second finished on this CPU by the CPU-map program.
    pub steered_pps: f64,
    /// Share of the period its CPU-map threads ran (VNIC side).
    pub vnic_busy: f64,
    /// Share of the period in softirq or NAPI threads (NIC side).
    pub nic_busy: f64,
}

/// One entry of `GET /v1/rss/events`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RssEvent {
    pub id: u64,
    pub unix_ms: u64,
    pub period: u64,
    /// `vm_migration`, `bucket_move` or `no_destination`.
    pub kind: String,
    /// The VM, `engine/bucket`, or engine.
    pub subject: String,
    pub from: String,
    pub to: String,
    pub reason: String,
    pub figures: BTreeMap<String, f64>,
}

/// One entry of `GET /v1/rss/engines/{name}/buckets`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RssBucketView {
    pub bucket: u32,
    /// The CPU the table names now.
    pub cpu: u32,
    /// Frames of this bucket each CPU finished, since the engine's table was set up.
    pub frames_per_cpu: Vec<u64>,
    pub pps: f64,
}

/// Body of `POST /v1/rss/vms/{name}`: any of the fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RssSetRequest {
    /// `auto`, `none`, or an engine name.
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub prefer_dedicated: Option<bool>,
}

/// `POST /v1/rss/engines`: a new engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RssEngineAddRequest {
    pub name: String,
    pub kind: EngineKind,
    pub cpus: Vec<u32>,
}

/// `POST /v1/rss/engines/{name}`: an engine's new CPU set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RssEngineSetRequest {
    pub cpus: Vec<u32>,
}

/// `DELETE /v1/rss/engines/{name}`: what went with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RssEngineRemoved {
    pub name: String,
    /// VMs that were on it and are now in the no-RSS state.
    pub vms_to_no_rss: Vec<String>,
}

/// `GET /v1/team`: every team, its uplinks and VMs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeamStatusView {
    pub teams: Vec<TeamView>,
    pub vms: Vec<TeamVmView>,
    /// What the shaper's tc program did with shaped VMs' TCP since the dataplane was made
    /// (`queued`, `passed`, `no_uplink`, `redirect_failed`).
    #[serde(default)]
    pub shaper: BTreeMap<String, u64>,
    /// Events since the daemon started, by kind.
    pub event_counts: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeamView {
    pub name: String,
    pub policy: String,
    pub failback_hold_ms: u64,
    /// The member that accepts broadcasts and multicasts from the network.
    pub rx_uplink: Option<String>,
    pub uplinks: Vec<TeamUplinkView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeamUplinkView {
    pub name: String,
    pub ifindex: u32,
    /// `up`, `down`, or `holding` (up, waiting for its failback hold-down).
    pub state: String,
    /// When holding: milliseconds until it carries traffic again.
    pub failback_in_ms: Option<u64>,
    pub capacity_mbps: Option<f64>,
    /// What the team's VMs sent through it over the last period.
    pub load_mbps: f64,
    pub load_pps: f64,
    /// VMs placed on it (flow-hash VMs are listed on every usable member).
    pub vms: Vec<String>,
}

/// What a shaped VM's classes (one per uplink of its team) have done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShaperView {
    /// Sent out of the queues.
    pub bytes: u64,
    pub packets: u64,
    /// Dropped at a full queue.
    pub drops: u64,
    /// Bytes waiting now.
    pub backlog_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeamVmView {
    pub name: String,
    pub team: String,
    pub policy: String,
    pub pinned_uplink: Option<String>,
    /// The uplink carrying it, `flow-hash` (per flow), or `none` (no uplink is up).
    pub uplink: String,
    /// The uplink carrying its broadcasts.
    pub flood_uplink: Option<String>,
    pub priority: i32,
    pub allocation_mbps: Option<f64>,
    pub burst_kib: Option<u32>,
    /// `shaped` or `strict` (see `AllocationMode`).
    #[serde(default)]
    pub allocation_mode: String,
    /// The shaper's queue for its TCP, summed over its uplinks (shaped allocations only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shaper: Option<ShaperView>,
    /// What it gets now: below the allocation when its uplink is short.
    pub granted_mbps: Option<f64>,
    pub shed: bool,
    /// Milliseconds of failover pause left.
    pub paused_ms: u64,
    pub sent_mbps: f64,
    /// Frames and bytes it sent through each uplink.
    pub per_uplink: BTreeMap<String, Count>,
}

/// One teaming event (`GET /v1/team/events`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeamEvent {
    pub id: u64,
    pub unix_ms: u64,
    /// `link_down`, `link_up`, `failback`, `rebalance`.
    pub kind: String,
    pub team: String,
    pub uplink: Option<String>,
    pub moves: Vec<TeamMoveView>,
    /// From the kernel's link event reaching the daemon to the dataplane carrying the VMs
    /// on their new uplinks, microseconds.
    pub switch_us: Option<u64>,
    /// Announcements sent (gratuitous ARP, unsolicited NA, RARP) and how long they took.
    pub announced: u32,
    pub announce_us: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TeamMoveView {
    pub vm: String,
    pub from: String,
    pub to: String,
    pub cause: String,
}

/// One entry of the daemon's event stream (`GET /v1/events`): every feature's events in one
/// shape, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increases by one per event, across features.
    pub id: u64,
    pub unix_ms: u64,
    /// `vm`, `port`, `config`, `rss` or `team`.
    pub feature: String,
    /// What happened, e.g. `vm_added`, `port_attached`, `vm_migration`, `link_down`.
    pub kind: String,
    /// What it happened to: a VM, port, engine or team name.
    pub subject: String,
    /// One line for people.
    pub message: String,
    /// The feature's own record of it, for `xnic rss events` and `xnic team events`.
    #[serde(default, skip_serializing_if = "EventDetail::is_none")]
    pub detail: EventDetail,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventDetail {
    #[default]
    None,
    Rss(RssEvent),
    Team(TeamEvent),
    /// A change of the desired state: what it changed, one line each.
    Change {
        generation: u64,
        changes: Vec<String>,
    },
}

impl EventDetail {
    pub fn is_none(&self) -> bool {
        matches!(self, EventDetail::None)
    }
}

/// Body of `PATCH /v1/vms/{name}`: the fields to change. For optional settings, `null`
/// removes the setting (back to its default); an absent field stays as it is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefer_dedicated: Option<bool>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub team: Option<Option<String>>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub uplink: Option<Option<String>>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub team_policy: Option<Option<crate::config::TeamPlacement>>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub bandwidth_mbps: Option<Option<f64>>,
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub burst_kib: Option<Option<u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_mode: Option<crate::config::AllocationMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_pause_ms: Option<u64>,
}

impl VmPatch {
    /// Whether the patch changes nothing at all.
    pub fn is_empty(&self) -> bool {
        *self == VmPatch::default()
    }

    /// Makes the changes on `vm`.
    pub fn apply_to(&self, vm: &mut crate::config::VmConfig) {
        fn set<T: Clone>(to: &mut T, from: &Option<T>) {
            if let Some(v) = from {
                *to = v.clone();
            }
        }
        set(&mut vm.port, &self.port);
        set(&mut vm.macs, &self.macs);
        set(&mut vm.ips, &self.ips);
        set(&mut vm.rss, &self.rss);
        set(&mut vm.priority, &self.priority);
        set(&mut vm.prefer_dedicated, &self.prefer_dedicated);
        set(&mut vm.team, &self.team);
        set(&mut vm.uplink, &self.uplink);
        set(&mut vm.team_policy, &self.team_policy);
        set(&mut vm.bandwidth_mbps, &self.bandwidth_mbps);
        set(&mut vm.burst_kib, &self.burst_kib);
        set(&mut vm.allocation_mode, &self.allocation_mode);
        set(&mut vm.failover_pause_ms, &self.failover_pause_ms);
    }
}

/// `Option<Option<T>>` in JSON: absent is `None`, `null` is `Some(None)`.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// Body of `POST /v1/apply`: a whole configuration, to replace the desired state with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// The configuration file's text (TOML).
    pub config: String,
    /// The file's name, for error messages (`FILE:LINE:COLUMN: field: ...`).
    #[serde(default)]
    pub file: String,
    /// Only show what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a change of the desired state did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeView {
    /// The desired state's generation after the change (unchanged by a dry run).
    pub generation: u64,
    pub dry_run: bool,
    /// One line per change, like `vm vm3: added` or `vm vm1: bandwidth_mbps: 20 → 50`.
    pub changes: Vec<String>,
    /// Changes that take effect only when the daemon restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub at_restart: Vec<String>,
}

/// `GET /v1/config`: the desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredView {
    pub generation: u64,
    /// As a configuration file (TOML).
    pub config: String,
    /// Where it is kept across restarts.
    pub state_file: String,
    /// The configuration file the daemon started from.
    pub config_file: String,
}

/// One direction's tuple, as conntrack shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TupleView {
    pub src: String,
    pub dst: String,
    pub src_port: u16,
    pub dst_port: u16,
}

/// One direction of an offloaded flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowDirView {
    /// `promoting` (waiting for its slow-path packets to leave), `active` or `unused`.
    pub mode: String,
    /// Where its packets arrive and leave.
    pub in_port: String,
    pub out_port: String,
    /// What the fast path does to them: `snat`, `dnat`, `encap VNI`, `decap VNI`.
    pub actions: Vec<String>,
    /// The fast path's packets and bytes.
    pub packets: u64,
    pub bytes: u64,
    /// Packets passed to the slow path while promoting.
    pub slow_passes: u32,
}

/// An offloaded flow (`GET /v1/flows`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowView {
    pub slot: u32,
    /// conntrack's id (`conntrack -L -o id`), when conntrack has the connection.
    pub id: Option<u32>,
    /// `tcp` or `udp`.
    pub proto: String,
    /// The VM whose port either direction uses.
    pub vm: Option<String>,
    pub original: TupleView,
    pub reply: TupleView,
    /// `promoting`, `active`, or `leaving` (then `leave` says why).
    pub state: String,
    pub leave: Option<String>,
    /// Why it was promoted (`all`, `bytes`, `mark`, `port`, `manual`...).
    pub why: String,
    pub directions: [FlowDirView; 2],
    pub age_ms: u64,
    pub idle_ms: u64,
}

/// `GET /v1/flows/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStatsView {
    pub enabled: bool,
    /// The table's slots, those in use, and its kernel memory.
    pub capacity: u32,
    pub in_use: u32,
    pub table_bytes: u64,
    /// Flows with a direction still promoting.
    pub pending: u32,
    /// conntrack entries at the last period.
    pub tracked: usize,
    pub promoted: u64,
    /// Flows sent back to the slow path, by reason.
    pub demoted: BTreeMap<String, u64>,
    pub handed_back: u64,
    pub refused_full: u64,
    pub promote_timeouts: u64,
    pub unfit: u64,
    pub conntrack_failed: u64,
    pub adopted: u64,
    /// The fast path's own counters (`forwarded`, `missed`, `slow_pending`...).
    pub fast_path: BTreeMap<String, u64>,
}

/// `POST /v1/flows/offload` and `/v1/flows/demote`: which flows. Fields narrow each other;
/// `ids` match on their own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRequest {
    #[serde(default)]
    pub ids: Vec<u32>,
    #[serde(default)]
    pub all: bool,
    /// `tcp` or `udp`.
    #[serde(default)]
    pub proto: Option<String>,
    /// Either address of either tuple.
    #[serde(default)]
    pub addr: Option<String>,
    /// Either port of either tuple.
    #[serde(default)]
    pub port: Option<u16>,
}

/// How many flows a request matched (they move at the next period).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRequestView {
    pub matched: usize,
}

/// `GET /v1/vnics`: this host's place in the fleet and every VNIC.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VnicListView {
    pub fleet: Option<FleetView>,
    pub vnics: Vec<VnicView>,
}

/// The fleet as this host sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetView {
    /// This host's name in `[fleet]` (`None`: none of its VTEPs is ours, routing is off).
    pub host: Option<String>,
    pub vtep: Option<String>,
    pub anycast: String,
    pub hosts: Vec<String>,
    /// The NAT gateways' ports this host translates into, `first-last`.
    pub nat_ports: Option<String>,
    /// The RSS engine whose CPUs route packets, and those CPUs (`None`: each packet is
    /// routed on the CPU that received it).
    #[serde(default)]
    pub workers: Option<WorkersView>,
}

/// The worker CPUs of a fleet host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkersView {
    pub engine: String,
    pub cpus: Vec<u32>,
}

/// `GET /v1/vnics/NAME` (and each entry of the list).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VnicView {
    pub name: String,
    pub vcn: String,
    pub subnet: String,
    pub vni: u32,
    pub mac: String,
    pub ips: Vec<String>,
    /// The VTEP of its compute instance's host.
    pub host: String,
    pub public_ip: Option<String>,
    /// Its route table (own or subnet's).
    pub route_table: Option<String>,
    pub slot: Option<u32>,
    /// Rules per direction, merged from its subnet's lists and its own, in order.
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
    /// Packets it sent that were forwarded, delivered to it, and dropped of either.
    pub sent: Count,
    pub received: Count,
    pub dropped: Count,
    /// Its packets (sent, received and dropped) each CPU routed, by CPU number: with
    /// `[fleet] engine`, the worker CPUs its flows hash to.
    #[serde(default)]
    pub cpus: Vec<u64>,
}

/// `GET /v1/routes`: every route of every table, with its counter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteListView {
    pub routes: Vec<RouteView>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteView {
    pub table: String,
    pub dst: String,
    pub via: String,
    pub id: Option<u32>,
    pub packets: u64,
    pub bytes: u64,
}

/// `GET /v1/routes/lookup?vnic=NAME&addr=ADDR`: what a packet from the VNIC to the address
/// meets, looked up in the tries the dataplane reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteLookupView {
    pub vnic: String,
    pub addr: String,
    /// Each table looked in and the route it gave (`table`, `dst`, `via`).
    pub steps: Vec<RouteStepView>,
    /// Where the packet goes (`vnic:NAME`, `igw:NAME`, ...) or why not (`no_route`).
    pub result: String,
    /// For a VNIC: its VNI and host VTEP.
    pub detail: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteStepView {
    pub table: String,
    pub dst: String,
    pub via: String,
}

/// `GET /v1/vnics/stats`: VNIC routing's events and drops on this host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VnicStatsView {
    /// `VnicCounter` names → counts.
    pub events: BTreeMap<String, u64>,
    /// VNIC routing's reasons (forwarded and each drop) → packets, over this host's ports.
    pub reasons: BTreeMap<String, u64>,
}

/// `POST /v1/routes`: a route into an existing table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAddRequest {
    pub table: String,
    pub dst: String,
    pub via: String,
}

/// `DELETE /v1/routes`: a route out of a table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDelRequest {
    pub table: String,
    pub dst: String,
}

/// `POST /v1/rules`: a rule into a security list, at `at` (default: the end).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleAddRequest {
    pub list: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub rule: crate::config::RuleConfig,
    #[serde(default)]
    pub at: Option<usize>,
}

/// `DELETE /v1/rules`: rule `index` (from 0) of a list's direction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDelRequest {
    pub list: String,
    pub direction: String,
    pub index: usize,
}

/// `GET /v1/rules`: every security list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleListView {
    pub lists: Vec<SecurityListView>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurityListView {
    pub name: String,
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
    /// Subnets and VNICs that use it.
    pub used_by: Vec<String>,
}

/// `POST /v1/trace`: a frame to run through the real programs, as if it arrived on `port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// An uplink or a VM's port, by name.
    pub port: String,
    /// The whole frame from its Ethernet header on, in hex.
    pub frame: String,
}

/// What a traced frame did: each stage's decision, then the verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TraceView {
    pub port: String,
    pub role: Role,
    pub ifindex: u32,
    pub steps: Vec<TraceStepView>,
    /// Steps beyond what one trace records, left out (0 normally).
    pub steps_left_out: u32,
    /// The XDP action: `drop`, `pass`, `tx`, `redirect` or `aborted`.
    pub action: String,
    /// The reason the frame ended with.
    pub reason: String,
    /// Where it went (`the kernel`, `out of PORT`, `to CPU N`...), or why not.
    pub next: String,
    /// The frame as the programs left it, in hex.
    pub frame_out: String,
    /// What the run took in the kernel.
    pub ns: u64,
}

/// One stage of a trace, and the frame's state once it was done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStepView {
    pub stage: String,
    /// What the stage found or did, in words.
    pub decision: String,
    /// The verdict's reason then, and its action (`pass`, `drop`, `redirect`).
    pub reason: String,
    pub action: String,
    /// The VM the frame counted against then, if any.
    pub vm: Option<String>,
    /// Where the frame was headed then.
    pub next: String,
}
