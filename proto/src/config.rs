//! The configuration schema: what one TOML file (and the daemon's persisted desired state)
//! says a host should look like. Only the shapes live here; parsing with positions and
//! validation are the controller's (`xnic::config`).

use serde::{Deserialize, Serialize};

use crate::net::{IpNet, MacAddr};

/// Longest instance name: it becomes part of the socket path and the pin directory.
pub const MAX_INSTANCE_LEN: usize = 32;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this xnic instance: its pins live under `/sys/fs/bpf/xnic/<instance>/` and its
    /// control socket is `/run/xnic/<instance>.sock`.
    pub instance: String,
    /// Network namespace (as in `ip netns`) that holds the interfaces; the daemon enters it.
    /// Omit to use the daemon's own namespace.
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default, rename = "uplink")]
    pub uplinks: Vec<UplinkConfig>,
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmConfig>,
    #[serde(default)]
    pub rss: Option<RssSection>,
    #[serde(default, rename = "team")]
    pub teams: Vec<TeamConfig>,
    #[serde(default)]
    pub flows: Option<FlowsSection>,
    /// VNIC routing: the fleet of hosts that forwards, and the virtual networks, subnets,
    /// VNICs, route tables, gateways and security lists they all share (the same file on
    /// each).
    #[serde(default)]
    pub fleet: Option<FleetSection>,
    #[serde(default, rename = "vcn")]
    pub vcns: Vec<VcnConfig>,
    #[serde(default, rename = "subnet")]
    pub subnets: Vec<SubnetConfig>,
    #[serde(default, rename = "vnic")]
    pub vnics: Vec<VnicConfig>,
    #[serde(default, rename = "route_table")]
    pub route_tables: Vec<RouteTableConfig>,
    #[serde(default, rename = "gateway")]
    pub gateways: Vec<GatewayConfig>,
    #[serde(default, rename = "security_list")]
    pub security_lists: Vec<SecurityListConfig>,
    #[serde(default)]
    pub lab: Option<LabConfig>,
}

/// Flow offload (`[flows]`): connections conntrack learned, moved into the XDP fast path.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowsSection {
    /// Offload on (the section's presence means on unless this says otherwise).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Flows the fast path's table holds. Fixed when the dataplane is created (a change
    /// takes effect after `xnic down`): about 550 bytes of kernel memory each.
    #[serde(default = "default_max_flows")]
    pub max_flows: u32,
    /// What is offloaded: every qualifying flow, or those the selectors below pick.
    #[serde(default)]
    pub select: FlowSelect,
    /// Elephant thresholds (both directions together): bytes, packets, and rate in kbit/s.
    #[serde(default)]
    pub min_bytes: Option<u64>,
    #[serde(default)]
    pub min_packets: Option<u64>,
    #[serde(default)]
    pub min_rate_kbps: Option<u64>,
    /// `ct mark` that asks for offload: `"0x1"` or `"0x1/0xff"` (value/mask), set by the
    /// operator's own nft rule (`ct mark set 0x1`).
    #[serde(default)]
    pub mark: Option<String>,
    /// Protocol and destination port of the original direction: `"tcp/443"`, `"udp/53"`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// A flow without packets for this long goes back to the slow path.
    #[serde(default = "default_flow_idle_s")]
    pub idle_timeout_s: u64,
    /// A flow that left the fast path stays out this long.
    #[serde(default = "default_flow_cooldown_s")]
    pub cooldown_s: u64,
    /// How often flows are learned, refreshed in conntrack and promoted or demoted.
    #[serde(default = "default_flow_period_ms")]
    pub period_ms: u64,
    /// Moves between the paths wait for what is in flight on the path a flow leaves (the
    /// default, and what keeps its packets in order). `false` switches at once, as a
    /// controller that does not track in-flight packets would: packets get reordered. It
    /// exists so that `cargo xtask bench offload` can show what the wait buys.
    #[serde(default = "default_true")]
    pub ordered_moves: bool,
}

/// The hosts that forward for the shared VNICs (`[fleet]`), in an order every host agrees
/// on: a NAT gateway's source ports are shared out in it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    pub hosts: Vec<FleetHost>,
    /// The fleet's shared VTEP address: compute hosts and gateways' remote ends send to it
    /// (the top-of-rack router spreads it over the hosts), and the fleet sends from it.
    pub anycast: String,
    /// The virtual router's MAC: what compute instances send to, the inner source of what
    /// they receive.
    #[serde(default = "default_router_mac")]
    pub router_mac: MacAddr,
    /// The VXLAN UDP port.
    #[serde(default = "default_vxlan_port")]
    pub vxlan_port: u16,
    /// The largest outer IP packet the underlay carries.
    #[serde(default = "default_underlay_mtu")]
    pub mtu: u16,
    /// The VNI hosts hand each other NAT answers in (kept out of every VNIC's and gateway's).
    #[serde(default = "default_handoff_vni")]
    pub handoff_vni: u32,
    /// The RSS engine (`[[rss.engine]]`) whose CPUs route the fleet's packets: each flow's
    /// hash picks one of them, as RSS does for a VM. Without it a packet is routed on the
    /// CPU that received it.
    #[serde(default)]
    pub engine: Option<String>,
}

fn default_router_mac() -> MacAddr {
    MacAddr([0x02, 0x00, 0x5e, 0x00, 0x00, 0x01])
}

fn default_vxlan_port() -> u16 {
    4789
}

fn default_underlay_mtu() -> u16 {
    1500
}

fn default_handoff_vni() -> u32 {
    (1 << 24) - 1
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetHost {
    pub name: String,
    /// Its VTEP address: where the other hosts send what it owns. A host knows itself by
    /// finding this address on one of its interfaces.
    pub vtep: String,
}

/// A virtual cloud network (`[[vcn]]`): the address space its subnets are cut from.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VcnConfig {
    pub name: String,
    /// Prefixes (`10.0.0.0/16`); they must not overlap each other (other VCNs may reuse
    /// them: their VNICs are told apart by VNI).
    pub cidrs: Vec<String>,
}

/// A subnet of a VCN (`[[subnet]]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    pub name: String,
    pub vcn: String,
    /// Inside one of the VCN's prefixes, overlapping none of its other subnets.
    pub cidr: String,
    /// The route table its VNICs use unless theirs says otherwise.
    #[serde(default)]
    pub route_table: Option<String>,
    /// Security lists every VNIC of the subnet is checked against (before its own).
    #[serde(default)]
    pub security_lists: Vec<String>,
}

/// A virtual NIC (`[[vnic]]`): a compute instance's interface, known to every host.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VnicConfig {
    pub name: String,
    pub subnet: String,
    /// The VXLAN network its compute instance's packets arrive in (1 to 16777215).
    pub vni: u32,
    pub mac: MacAddr,
    /// Its virtual IPs, inside the subnet: the destinations that reach it, and the only
    /// sources it may send from.
    pub ips: Vec<String>,
    /// The VTEP of the host its compute instance lives on.
    pub host: String,
    /// Overrides the subnet's route table.
    #[serde(default)]
    pub route_table: Option<String>,
    /// Its public address behind an internet gateway (1:1 with its first virtual IP).
    #[serde(default)]
    pub public_ip: Option<String>,
    /// Its own security lists, after its subnet's.
    #[serde(default)]
    pub security_lists: Vec<String>,
}

/// A security list (`[[security_list]]`): ordered rules per direction. For each packet the
/// first rule that matches decides; a packet no rule allows is dropped.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecurityListConfig {
    pub name: String,
    /// Packets toward the VNIC.
    #[serde(default)]
    pub ingress: Vec<RuleConfig>,
    /// Packets from the VNIC.
    #[serde(default)]
    pub egress: Vec<RuleConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub action: RuleAction,
    /// `any` (the default), `tcp`, `udp`, `icmp` or `icmpv6`.
    #[serde(default)]
    pub proto: RuleProto,
    /// The peer's prefix: the source of ingress packets, the destination of egress ones.
    pub cidr: String,
    /// Destination ports, `443` or `8000-8080` (TCP and UDP only).
    #[serde(default)]
    pub ports: Option<String>,
    /// Answers to the connections it allows come back whatever the other direction's rules
    /// say.
    #[serde(default)]
    pub stateful: bool,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuleProto {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

/// A route table (`[[route_table]]`): the longest prefix holding a destination wins.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteTableConfig {
    pub name: String,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The destination prefix (`0.0.0.0/0`, `10.1.0.0/16`).
    pub dst: String,
    /// The next hop, `KIND:NAME`: `vnic:web1`, `router:core` (another route table),
    /// `igw:NAME`, `nat:NAME`, `sgw:NAME`, `drg:NAME` (gateways of that kind).
    pub via: String,
}

/// A gateway (`[[gateway]]`) routes can send packets to.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub name: String,
    pub kind: GatewayKind,
    /// `nat`: the shared public addresses its VNICs are hidden behind.
    #[serde(default)]
    pub public_ips: Vec<String>,
    /// `service`: the services network's prefixes; `drg`: the on-premises prefixes.
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// `drg`: the VXLAN network the on-premises side is reached over.
    #[serde(default)]
    pub vni: Option<u32>,
    /// `service`, `drg`: the VTEP packets go to.
    #[serde(default)]
    pub remote: Option<String>,
    /// `service`, `drg`: the MAC of the far end's VXLAN device (the inner destination).
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// `service`, `drg`: the VCN whose VNICs its network's packets are for.
    #[serde(default)]
    pub vcn: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    /// Out to the internet, each VNIC's private address mapped 1:1 to its public one.
    Internet,
    /// Out to the internet behind shared addresses (many-to-one SNAT).
    Nat,
    /// To the services network.
    Service,
    /// To an on-premises network (a dynamic routing gateway).
    Drg,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FlowSelect {
    /// Every established TCP and answered UDP flow.
    #[default]
    All,
    /// Only flows a threshold, the mark or a port picks.
    Selected,
}

fn default_max_flows() -> u32 {
    xnic_common::flow::DEFAULT_MAX_FLOWS
}

fn default_flow_idle_s() -> u64 {
    30
}

fn default_flow_cooldown_s() -> u64 {
    5
}

pub fn default_flow_period_ms() -> u64 {
    200
}

/// A NIC team (`[[team]]`): uplinks that carry its VMs' frames, and how VMs are placed on
/// them. With a team configured, xnic switches VM traffic itself (see `docs/ARCHITECTURE.md`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub name: String,
    /// Member uplinks, in failover order (the first one up carries failover-placed VMs).
    pub uplinks: Vec<String>,
    /// How VMs without their own `team_policy` are placed.
    #[serde(default)]
    pub policy: TeamPlacement,
    /// A member that comes back up carries traffic again only after staying up this long.
    #[serde(default = "default_failback_hold_ms")]
    pub failback_hold_ms: u64,
    /// Gratuitous ARPs / unsolicited neighbour advertisements sent per moved address.
    #[serde(default = "default_announce_count")]
    pub announce_count: u32,
    /// How often loads are measured and load placement runs, in milliseconds.
    #[serde(default = "default_team_period_ms")]
    pub period_ms: u64,
    #[serde(default)]
    pub load: LoadParams,
    /// The dataplane passes over a member the kernel cannot transmit on at once, to each
    /// VM's next member, without waiting for the daemon to hear of the link loss. Off: only
    /// the daemon moves VMs.
    #[serde(default = "default_kernel_failover")]
    pub kernel_failover: bool,
}

fn default_kernel_failover() -> bool {
    true
}

fn default_failback_hold_ms() -> u64 {
    3000
}

fn default_announce_count() -> u32 {
    1
}

fn default_team_period_ms() -> u64 {
    500
}

/// Software RSS (`[rss]`): steer each VM's frames to CPUs through engines.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RssSection {
    /// How often loads are measured and the policy runs, in milliseconds.
    #[serde(default = "default_rss_period_ms")]
    pub period_ms: u64,
    /// The CPU that finishes frames of VMs in the no-RSS state.
    #[serde(default)]
    pub default_cpu: u32,
    #[serde(default)]
    pub hash: HashKind,
    /// Buckets per engine table: a power of two up to 256.
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    #[serde(default)]
    pub policy: RssParams,
    #[serde(default, rename = "engine")]
    pub engines: Vec<EngineConfig>,
}

fn default_rss_period_ms() -> u64 {
    100
}

fn default_table_size() -> u32 {
    xnic_common::rss::DEFAULT_TABLE_SIZE
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HashKind {
    /// Both directions of a connection hash alike.
    #[default]
    Symmetric,
    Asymmetric,
}

/// One RSS engine (`[[rss.engine]]`): a CPU set and a table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub name: String,
    pub kind: EngineKind,
    pub cpus: Vec<u32>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpModePref {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    #[serde(default)]
    pub xdp_mode: XdpModePref,
    /// Default log filter (tracing syntax: a level or directives like `xnic=debug`);
    /// `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// How often counters are sampled for rates, in milliseconds.
    #[serde(default = "default_stats_interval_ms")]
    pub stats_interval_ms: u64,
    /// Also serve `GET /metrics` on this TCP address (in the daemon's network namespace).
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

fn default_log_level() -> String {
    "info".into()
}

fn default_stats_interval_ms() -> u64 {
    1000
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            xdp_mode: XdpModePref::Auto,
            log_level: default_log_level(),
            stats_interval_ms: default_stats_interval_ms(),
            metrics_listen: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Interface name.
    pub name: String,
    /// What the uplink can carry, in Mbit/s: VMs' allocations beyond it are cut, lowest
    /// priority first. Omit for no limit.
    #[serde(default)]
    pub capacity_mbps: Option<f64>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub name: String,
    /// Host-side interface of the VM's virtual NIC (tap or veth).
    pub port: String,
    /// MACs the VM may send from; frames from other MACs are dropped.
    pub macs: Vec<String>,
    /// The VM's addresses, optionally with a prefix length (`10.0.0.5/24`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// RSS engine state: `auto` (the policy decides), `none` (no-RSS, pinned), or an engine's
    /// name (pinned there).
    #[serde(default = "default_rss_state")]
    pub rss: String,
    /// Higher first when a shared engine must shed a VM (with `[rss.policy] selection =
    /// "priority"`).
    #[serde(default)]
    pub priority: i32,
    /// Offered a dedicated engine first.
    #[serde(default)]
    pub prefer_dedicated: bool,
    /// The team carrying the VM's frames: a team's name, or `none`. Default: the first team.
    #[serde(default)]
    pub team: Option<String>,
    /// The uplink the VM is pinned to while it is up (then placed by its policy).
    #[serde(default)]
    pub uplink: Option<String>,
    /// Overrides the team's placement policy for this VM.
    #[serde(default)]
    pub team_policy: Option<TeamPlacement>,
    /// Bandwidth allocation, Mbit/s: frames beyond it are dropped. Omit for no limit.
    #[serde(default)]
    pub bandwidth_mbps: Option<f64>,
    /// Burst allowed above the allocation, KiB. Default: 5 ms at the allocated rate, at
    /// least 16 KiB.
    #[serde(default)]
    pub burst_kib: Option<u32>,
    /// How the allocation is enforced: `shaped` (TCP queued at the rate, the rest policed)
    /// or `strict` (everything policed: frames over the rate are dropped at once).
    #[serde(default)]
    pub allocation_mode: AllocationMode,
    /// Drop the VM's frames for this long after a failover moves it (lets a guest's
    /// stateful peers settle before traffic resumes on the new path). 0: no pause.
    #[serde(default)]
    pub failover_pause_ms: u64,
}

fn default_rss_state() -> String {
    "auto".into()
}

impl VmConfig {
    /// The MACs, parsed (validation has checked them).
    pub fn mac_addrs(&self) -> Vec<MacAddr> {
        self.macs.iter().filter_map(|m| m.parse().ok()).collect()
    }

    pub fn ip_nets(&self) -> Vec<IpNet> {
        self.ips.iter().filter_map(|m| m.parse().ok()).collect()
    }
}

/// How `xnic lab up` builds the demo topology around this configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// Prefix of the lab's other namespaces: `<prefix>-tor` and `<prefix>-<vm>`.
    pub prefix: String,
    /// Addresses of the traffic endpoint in the tor namespace.
    pub tor_ips: Vec<String>,
    /// Give lab interfaces IPv6 (link-local and the configured addresses). Off makes the lab
    /// silent: no frame crosses it unless a test sends one.
    #[serde(default = "default_true")]
    pub ipv6: bool,
}

fn default_true() -> bool {
    true
}

impl Config {
    /// The team VM `vm` belongs to, by index into `teams`: its own, none, or the first.
    pub fn team_of(&self, vm: &VmConfig) -> Option<usize> {
        match vm.team.as_deref() {
            Some("none") => None,
            Some(name) => self.teams.iter().position(|t| t.name == name),
            None => (!self.teams.is_empty()).then_some(0),
        }
    }

    pub fn vm(&self, name: &str) -> Option<&VmConfig> {
        self.vms.iter().find(|v| v.name == name)
    }
}

impl LabConfig {
    pub fn tor_nets(&self) -> Vec<IpNet> {
        self.tor_ips.iter().filter_map(|m| m.parse().ok()).collect()
    }
}

/// An RSS engine's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// A CPU set and table several VMs share.
    Shared,
    /// A CPU set and table of one VM.
    Dedicated,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Shared => "shared",
            EngineKind::Dedicated => "dedicated",
        }
    }
}

/// Which VM leaves an overloaded shared engine first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// The busiest VM.
    #[default]
    Load,
    /// VMs that prefer a dedicated engine, then by priority, then by load.
    Priority,
}

/// Tuning of the RSS policy (`[rss.policy]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RssParams {
    /// A shared engine above this many packets/s per CPU is overloaded.
    pub engine_high_pps_per_cpu: f64,
    /// ...and so is one whose CPUs are, on average, busier than this (0 to 1) in the kernel
    /// threads that carry its traffic: CPU-map threads (VNIC side) and softirq/NAPI (NIC side).
    pub engine_high_busy: f64,
    /// A VM may join an engine only if the engine stays under `fill` × the high threshold.
    pub fill: f64,
    /// A no-RSS VM above this many packets/s joins a shared engine.
    pub no_rss_high_pps: f64,
    /// A VM under this many packets/s for `low_periods` periods goes back to no-RSS.
    pub vm_low_pps: f64,
    pub low_periods: u32,
    /// Periods a VM stays where it was moved before it may move again.
    pub min_dwell_periods: u64,
    pub selection: Selection,
    /// Rebalance an engine's buckets when (max − min) / min of its CPU loads exceeds this...
    pub rebalance_above: f64,
    /// ...and stop once it is under this.
    pub rebalance_to: f64,
    /// Ignore imbalance while the busiest CPU of an engine carries less than this (noise).
    pub rebalance_min_pps: f64,
    /// Bucket moves per engine per period.
    pub max_bucket_moves: usize,
    /// Periods a moved bucket stays put.
    pub bucket_dwell_periods: u64,
    /// Weight of the newest period in the smoothed loads the policy decides on (1 = no
    /// smoothing). Smoothing keeps measurement noise from moving buckets back and forth.
    pub smoothing: f64,
}

impl Default for RssParams {
    fn default() -> Self {
        RssParams {
            engine_high_pps_per_cpu: 200_000.0,
            engine_high_busy: 0.9,
            fill: 0.8,
            no_rss_high_pps: 50_000.0,
            vm_low_pps: 5_000.0,
            low_periods: 30,
            min_dwell_periods: 20,
            selection: Selection::Load,
            rebalance_above: 0.10,
            rebalance_to: 0.05,
            rebalance_min_pps: 1_000.0,
            max_bucket_moves: 4,
            bucket_dwell_periods: 5,
            smoothing: 0.5,
        }
    }
}

/// How a VM's bandwidth allocation is enforced.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AllocationMode {
    /// TCP goes through a queue at the allocated rate (an HTB class on its uplink), which
    /// TCP's congestion control can use; other traffic is policed by the token bucket. TCP
    /// and the rest share one allocation.
    #[default]
    Shaped,
    /// Everything is policed by the token bucket: frames over the allocation are dropped in
    /// XDP, nothing is queued (exact, but TCP gets a fraction of the rate).
    Strict,
}

impl AllocationMode {
    pub fn name(self) -> &'static str {
        match self {
            AllocationMode::Shaped => "shaped",
            AllocationMode::Strict => "strict",
        }
    }
}

/// How a VM is placed on its team's members.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TeamPlacement {
    /// Active/standby: the first usable member in the team's order.
    #[default]
    Failover,
    /// By the VM's source MAC.
    MacHash,
    /// Per flow.
    FlowHash,
    /// By measured load and allocations, recomputed every period.
    Load,
}

impl TeamPlacement {
    pub fn name(self) -> &'static str {
        match self {
            TeamPlacement::Failover => "failover",
            TeamPlacement::MacHash => "mac-hash",
            TeamPlacement::FlowHash => "flow-hash",
            TeamPlacement::Load => "load",
        }
    }
}

/// Tuning of load placement (`[team.load]`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoadParams {
    /// Rebalance when the busiest member's utilisation exceeds the idlest's by this much
    /// (a fraction of capacity; of the mean member load when capacities are not set).
    pub rebalance_above: f64,
    /// Periods the imbalance must last before a VM moves.
    pub sustain_periods: u32,
    /// Periods a moved VM stays where it is.
    pub min_dwell_periods: u32,
}

impl Default for LoadParams {
    fn default() -> Self {
        LoadParams {
            rebalance_above: 0.2,
            sustain_periods: 3,
            min_dwell_periods: 20,
        }
    }
}

/// How a program is attached to an interface, as the kernel reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    Native,
    Generic,
}
