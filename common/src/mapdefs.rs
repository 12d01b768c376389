//! Every map of the dataplane, defined once: name, kind, key and value types, size, whether
//! it is pinned, the family it belongs to and its version, and what it is for. The eBPF
//! statics (`dataplane-ebpf/src/maps.rs`) and the userspace handles and layout checks
//! (`xnic::dataplane`) are both made from this list by [`for_each_map!`].
//!
//! Pinned maps outlive the daemon, so their layout is an ABI. The rules for changing it:
//! - a new variant of a counter enumeration fits in its reserved slots (`limits::*_SLOTS`);
//! - a new map is added here; a newer daemon creates it beside the old ones;
//! - an incompatible change of a map's key, value or size is a new map named `<NAME>_V<n>`
//!   with its family's version raised; the daemon migrates the old map's entries (see
//!   `xnic::dataplane::upgrade`) and removes its pin once no program uses it.
//!
//! Sizes come from `limits` and the feature modules, where each has its reason.

/// A map's kind (`enum bpf_map_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    ProgArray = 3,
    PerCpuArray = 6,
    LruHash = 9,
    LpmTrie = 11,
    DevMapHash = 25,
    CpuMap = 16,
    XskMap = 17,
    RingBuf = 27,
}

/// The families maps are versioned by (an index into `LAYOUT`'s versions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// What created the dataplane: `INFO`, `LAYOUT`.
    Info = 0,
    /// Ports, MACs and the slot records.
    Ports = 1,
    /// Per-port, per-VM and steering counters.
    Counters = 2,
    /// RSS steering.
    Rss = 3,
    /// NIC teaming and switching.
    Team = 4,
    /// The pipeline's own machinery: the per-frame scratch and the tail-call table.
    Pipeline = 5,
    /// Flow offload: the flow table, tunnels, the fast path's counters.
    Flows = 6,
    /// VNIC routing: VNICs, route tries, gateways, security rules, NAT connections.
    Vnic = 7,
    /// Transaction rings: the workers' AF_XDP sockets and their queue pairs.
    Rings = 8,
    /// `xnic monitor`: the drop events' ring, its settings and counters.
    Monitor = 9,
}

/// How many families `LAYOUT` has room for.
pub const FAMILY_SLOTS: usize = 16;

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Info,
        Family::Ports,
        Family::Counters,
        Family::Rss,
        Family::Team,
        Family::Pipeline,
        Family::Flows,
        Family::Vnic,
        Family::Rings,
        Family::Monitor,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Family::Info => "info",
            Family::Ports => "ports",
            Family::Counters => "counters",
            Family::Rss => "rss",
            Family::Team => "team",
            Family::Pipeline => "pipeline",
            Family::Flows => "flows",
            Family::Vnic => "vnic",
            Family::Rings => "rings",
            Family::Monitor => "monitor",
        }
    }

    /// This xnic's version of the family: the highest version of its maps.
    pub const fn version(self) -> u16 {
        let mut v = 0;
        let mut i = 0;
        while i < MAPS.len() {
            if MAPS[i].family as u8 == self as u8 && MAPS[i].version > v {
                v = MAPS[i].version;
            }
            i += 1;
        }
        v
    }
}

/// One map as the registry defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub kind: MapKind,
    pub key_size: u32,
    pub value_size: u32,
    /// Entries (for `CPUMAP`: the most; the daemon sizes it to the host's CPUs).
    pub max_entries: u32,
    /// Pinned by name under `maps/`, so it outlives the daemon.
    pub pinned: bool,
    pub family: Family,
    pub version: u16,
    pub doc: &'static str,
}

impl MapSpec {
    /// The spec of map `name`, if the registry has it.
    pub fn find(name: &str) -> Option<&'static MapSpec> {
        MAPS.iter().find(|m| m.name == name)
    }
}

/// Calls `$callback!` with every map: `NAME: kind(Key => Value; entries), pinned|unpinned,
/// Family version;` with its doc comment.
#[macro_export]
macro_rules! for_each_map {
    ($callback:ident) => {
        $callback! {
            /// Layout version of the pinned maps (a whole-layout number, kept for daemons of
            /// layout 4 and older, which know nothing else). For the daemon only.
            INFO: array(u32 => $crate::maps::DataplaneInfo; 1), pinned, Info 1;
            /// Version of each map family of the pinned maps. For the daemon only.
            LAYOUT: array(u32 => $crate::maps::LayoutInfo; 1), pinned, Info 1;

            /// ifindex → port slot, role, VM and the VM's first MAC. Written by the daemon,
            /// read per frame.
            PORTS_V2: hash(u32 => $crate::maps::PortEntry; $crate::limits::MAX_PORTS), pinned, Ports 2;
            /// MAC → owning VM and the port it may send from. Written by the daemon, read
            /// per frame.
            MACS: hash($crate::maps::MacKey => $crate::maps::MacOwner; $crate::limits::MAX_MACS), pinned, Ports 1;
            /// An ifindex's slot → its port entry when the slot is that port's alone, else
            /// "look in PORTS_V2" (`index`): a frame's port in one array read. Written by the
            /// daemon from PORTS_V2, read per frame.
            PORT_INDEX: array(u32 => $crate::index::PortSlot; $crate::index::PORT_INDEX_SIZE), pinned, Ports 3;
            /// A MAC's slot → its owner when the slot is that MAC's alone, else "look in
            /// MACS" (`index`). Written by the daemon from MACS, read per frame.
            MAC_INDEX: array(u32 => $crate::index::MacSlot; $crate::index::MAC_INDEX_SIZE), pinned, Ports 3;
            /// Port slot → interface, for the daemon only (survives restarts with the
            /// counters).
            PORT_TABLE: array(u32 => $crate::maps::PortRecord; $crate::limits::MAX_PORTS), pinned, Ports 1;
            /// VM slot → VM name, for the daemon only.
            VM_TABLE: array(u32 => $crate::maps::VmRecord; $crate::limits::MAX_VMS), pinned, Ports 1;

            /// Per CPU: frames and bytes per port slot per verdict reason.
            VERDICTS_V2: percpu_array(u32 => $crate::maps::Counter; $crate::limits::MAX_PORTS * $crate::limits::REASON_SLOTS as u32), pinned, Counters 2;
            /// Per CPU: frames and bytes per port slot per notable shape (VLAN, fragment...).
            SHAPES_V2: percpu_array(u32 => $crate::maps::Counter; $crate::limits::MAX_PORTS * $crate::limits::SHAPE_SLOTS as u32), pinned, Counters 2;
            /// Per CPU: frames and bytes per VM slot, by direction.
            VM_STATS: percpu_array(u32 => $crate::maps::VmCounters; $crate::limits::MAX_VMS), pinned, Counters 1;
            /// Per CPU: frames and bytes per engine bucket, counted on the CPU that finished
            /// them.
            BUCKET_STATS: percpu_array(u32 => $crate::maps::Counter; $crate::rss::MAX_ENGINES * $crate::rss::MAX_TABLE_SIZE), pinned, Counters 1;
            /// Per CPU: frames and bytes delivered per VM, counted on the CPU that finished
            /// them.
            VM_CPU_STATS: percpu_array(u32 => $crate::maps::Counter; $crate::limits::MAX_VMS), pinned, Counters 1;
            /// Per CPU: steering events (`SteerCounter`).
            STEER_STATS_V2: percpu_array(u32 => u64; $crate::limits::STEER_SLOTS as u32), pinned, Counters 2;
            /// Per CPU: frames and bytes each VM sent through each member of its team.
            TEAM_VM_STATS: percpu_array(u32 => $crate::maps::Counter; $crate::limits::MAX_VMS * $crate::team::MAX_TEAM_MEMBERS), pinned, Counters 1;
            /// Per CPU: frames redirected to a port (by its slot) that the kernel dropped on
            /// the way out (`xdp:xdp_devmap_xmit`).
            XMIT_DROPS: percpu_array(u32 => u64; $crate::limits::MAX_PORTS), pinned, Counters 2;
            /// Per CPU: frames steered to a CPU (by its number) whose CPU-map queue was full
            /// (`xdp:xdp_cpumap_enqueue`).
            QUEUE_DROPS: percpu_array(u32 => u64; $crate::rss::MAX_CPUS), pinned, Counters 2;

            /// CPU → queue and CPU-map program. Written by the daemon, used by the redirect.
            CPUMAP: cpumap(u32 => u64; $crate::rss::MAX_CPUS), pinned, Rss 1;
            /// Global steering settings (one entry). Written by the daemon.
            RSS_CONFIG: array(u32 => $crate::rss::RssConfig; 1), pinned, Rss 1;
            /// VM slot → engine. Written by the daemon (policy decisions), read per frame.
            VM_RSS: array(u32 => $crate::rss::VmRss; $crate::limits::MAX_VMS), pinned, Rss 1;
            /// Engine → table size. Written by the daemon.
            ENGINES: array(u32 => $crate::rss::EngineEntry; $crate::rss::MAX_ENGINES), pinned, Rss 1;
            /// Engine × bucket → CPU. Written by the daemon (rebalancing), read per frame.
            RSS_TABLES: array(u32 => u32; $crate::rss::MAX_ENGINES * $crate::rss::MAX_TABLE_SIZE), pinned, Rss 1;
            /// Flow slot → the CPU its frames go to and how many were sent there. Written per
            /// frame by the steer stage only.
            FLOW_SLOTS_V2: array(u32 => $crate::rss::FlowSlot; $crate::rss::FLOW_SLOTS), pinned, Rss 2;
            /// Flow slot → frames the CPU-map program took off a queue, and when. Written per
            /// frame by the CPU-map program only (apart from `FLOW_SLOTS_V2`, so neither side
            /// writes the other's cache lines).
            FLOW_DONE: array(u32 => $crate::rss::FlowDone; $crate::rss::FLOW_SLOTS), pinned, Rss 2;

            /// VM slot → team, placement and allocation. Written by the daemon, read per
            /// frame.
            VM_TEAM: array(u32 => $crate::team::VmTeam; $crate::limits::MAX_VMS), pinned, Team 1;
            /// VM slot → token bucket time. Written by the programs only.
            VM_BUCKETS: array(u32 => $crate::team::VmBucket; $crate::limits::MAX_VMS), pinned, Team 1;
            /// An uplink (namespace, ifindex) → its team member's index (`member_index`), for
            /// the kernel's carrier hook. Written by the daemon.
            CARRIER_WATCH: hash($crate::team::CarrierKey => u32; $crate::team::MAX_TEAMS * $crate::team::MAX_TEAM_MEMBERS), pinned, Team 2;
            /// Team member → when the kernel last took its carrier (0: never). Written by the
            /// carrier hook only; read per frame by the team stage.
            MEMBER_DOWN: array(u32 => u64; $crate::team::MAX_TEAMS * $crate::team::MAX_TEAM_MEMBERS), pinned, Team 2;
            /// Team member → since when the daemon uses it (0: not in use). A member whose
            /// carrier the kernel took later than that is down for the team stage. Written by
            /// the daemon.
            MEMBER_UP: array(u32 => u64; $crate::team::MAX_TEAMS * $crate::team::MAX_TEAM_MEMBERS), pinned, Team 2;
            /// `ShapeCounter` → frames the VM ports' tc program queued in a shaped VM's class,
            /// left to the kernel or dropped. Written by that program only.
            SHAPER_STATS: percpu_array(u32 => u64; $crate::shaper::ShapeCounter::SLOTS as u32), pinned, Team 3;
            /// Team → members' ifindexes, the member that accepts group frames, the hash
            /// seed.
            TEAMS: array(u32 => $crate::team::TeamEntry; $crate::team::MAX_TEAMS), pinned, Team 1;
            /// Team × flow-hash bucket → member (flow-hash placement). Written by the
            /// daemon.
            TEAM_TABLES: array(u32 => u32; $crate::team::MAX_TEAMS * $crate::team::TEAM_TABLE_SIZE), pinned, Team 1;
            /// ifindex → itself, for every VM port and team uplink: where switched frames
            /// are redirected.
            TX_PORTS: devmap_hash(u32 => u64; $crate::limits::MAX_PORTS), pinned, Team 1;
            /// Every VM port, and every team uplink with `xnic_flood` as its program:
            /// broadcast targets.
            FLOOD: devmap_hash(u32 => u64; $crate::limits::MAX_PORTS), pinned, Team 1;

            /// Each direction's tuple as its packets arrive → the offloaded flow's slot and
            /// direction. Written by the daemon (keys after their slot is set up, removed
            /// before it is freed), read per frame. Sized by configuration (`flows.max_flows`
            /// × 2).
            FLOWS: hash($crate::flow::FlowKey => $crate::flow::FlowRef; 2 * $crate::flow::DEFAULT_MAX_FLOWS), pinned, Flows 1;
            /// Slot → what each direction becomes (NAT, ports, MACs, tunnel). Written by the
            /// daemon only. Sized by configuration.
            FLOW_STATE: array(u32 => $crate::flow::FlowState; $crate::flow::DEFAULT_MAX_FLOWS), pinned, Flows 1;
            /// Slot → counters, last seen, TCP windows, the bookkeeping of moves. Written by
            /// the programs (the daemon only sets a slot up). Sized by configuration.
            FLOW_LIVE: array(u32 => $crate::flow::FlowLive; $crate::flow::DEFAULT_MAX_FLOWS), pinned, Flows 1;
            /// Offload on or off, tunnels present, flows promoting. Written by the daemon.
            FLOW_CONFIG: array(u32 => $crate::flow::FlowConfig; 1), pinned, Flows 1;
            /// Tunnel → VNI, outer addresses and MACs, output port. Written by the daemon.
            FLOW_TUNNELS: array(u32 => $crate::flow::Tunnel; $crate::flow::MAX_TUNNELS), pinned, Flows 1;
            /// Per CPU: the fast path's counters (`FlowCounter`).
            FLOW_STATS: percpu_array(u32 => u64; $crate::flow::FlowCounter::SLOTS as u32), pinned, Flows 1;
            /// ifindex → itself, for every port, with `xnic_flow_tx` as its program: where the
            /// fast path redirects, counting each flow's frames as they leave.
            FLOW_TX: devmap_hash(u32 => u64; $crate::limits::MAX_PORTS), pinned, Flows 1;

            /// VNIC routing on or off, the fleet's VTEPs, this host's place in the fleet.
            /// Written by the daemon.
            VNIC_CONFIG: array(u32 => $crate::vnic::VnicConfig; 1), pinned, Vnic 1;
            /// VNIC slot → VNI, MAC, VCN, route table, host VTEP, rule sets. Written by the
            /// daemon, read per packet.
            VNICS: array(u32 => $crate::vnic::VnicEntry; $crate::vnic::MAX_VNICS), pinned, Vnic 1;
            /// (VNI, MAC) → VNIC slot: who sent a compute instance's packet.
            VNIC_MACS: hash($crate::vnic::VnicMacKey => u32; $crate::vnic::MAX_VNICS), pinned, Vnic 1;
            /// (VCN, virtual IP) → VNIC slot: whose address a packet comes from or goes to.
            VNIC_ADDRS: hash($crate::vnic::VnicAddrKey => u32; $crate::vnic::MAX_VNIC_ADDRS), pinned, Vnic 1;
            /// Every route table's IPv4 routes and every VCN's IPv4 prefixes, keyed by table id
            /// then prefix (`vnic`): longest prefix match. Entries are allocated as routes are
            /// added (no prealloc), so the limit costs nothing until used.
            ROUTES_V4: lpm_trie($crate::vnic::RouteAddrV4 => $crate::vnic::RouteEntry; $crate::vnic::MAX_ROUTES), pinned, Vnic 1;
            /// The same for IPv6.
            ROUTES_V6: lpm_trie($crate::vnic::RouteAddrV6 => $crate::vnic::RouteEntry; $crate::vnic::MAX_ROUTES), pinned, Vnic 1;
            /// The routes' generation: raised after every change of the tries, so remembered
            /// routes of an older one are looked up again. Written by the daemon, last.
            ROUTE_GEN: array(u32 => u32; 1), pinned, Vnic 1;
            /// (route table, destination) → the route a lookup found, of the generation it
            /// was found in. Written by the programs, least recently used evicted.
            ROUTE_CACHE: lru_hash($crate::vnic::RouteCacheKey => $crate::vnic::CachedRoute; $crate::vnic::MAX_ROUTE_CACHE), pinned, Vnic 1;
            /// Gateway slot → kind, VNI, VCN, remote VTEP and MAC, NAT addresses.
            GATEWAYS: array(u32 => $crate::vnic::GatewayEntry; $crate::vnic::MAX_GATEWAYS), pinned, Vnic 1;
            /// A service or dynamic routing gateway's VNI → its slot: whose network a wrapped
            /// packet comes from.
            GATEWAY_VNIS: hash(u32 => u32; $crate::vnic::MAX_GATEWAYS), pinned, Vnic 1;
            /// A public IPv4 address → the VNIC it stands for 1:1, or the NAT gateway it
            /// belongs to.
            PUBLIC_ADDRS: hash([u8; 4] => $crate::vnic::PublicEntry; $crate::vnic::MAX_PUBLIC_ADDRS), pinned, Vnic 1;
            /// Rule set × rule → security rule, in order. Written by the daemon.
            ACL_RULES: array(u32 => $crate::vnic::AclRule; $crate::vnic::MAX_RULE_SETS * $crate::vnic::MAX_RULES), pinned, Vnic 1;
            /// Fleet host → its VTEP, where NAT answers for its ports are handed.
            FLEET_HOSTS: array(u32 => $crate::vnic::FleetHostEntry; $crate::vnic::MAX_FLEET_HOSTS), pinned, Vnic 1;
            /// NAT gateway connections this host made, one key per direction. Written by the
            /// programs (a connection's first packet), least recently used evicted.
            NAT_SESSIONS: lru_hash($crate::vnic::NatKey => $crate::vnic::NatEntry; 2 * $crate::vnic::MAX_NAT_SESSIONS), pinned, Vnic 1;
            /// Per CPU: each VNIC's packets forwarded, delivered, dropped.
            VNIC_STATS: percpu_array(u32 => $crate::vnic::VnicCounters; $crate::vnic::MAX_VNICS), pinned, Vnic 1;
            /// Route id → packets and bytes that took it (atomic adds: per-CPU copies of 1M
            /// counters would cost 16 MiB a CPU).
            ROUTE_STATS: array(u32 => $crate::maps::Counter; $crate::vnic::MAX_ROUTES), pinned, Vnic 1;
            /// Per CPU: VNIC routing's events (`VnicCounter`).
            VNIC_EVENTS: percpu_array(u32 => u64; $crate::vnic::VnicCounter::SLOTS as u32), pinned, Vnic 1;

            /// Receive queue → the AF_XDP socket of the rings worker on it. Written by the
            /// worker (its socket's descriptor), read by the XSK step.
            XSK_SOCKS: xskmap(u32 => u32; $crate::rings::MAX_XSK_QUEUES), pinned, Rings 1;
            /// Queue pair → 1 while a rings worker serves it: RoCEv2 packets to it go to
            /// the worker's socket, others to the kernel. Written by the worker.
            ROCE_QPS: hash(u32 => u32; $crate::rings::MAX_QUEUE_PAIRS), pinned, Rings 1;

            /// Dropped frames (`monitor::DropEvent`) while a monitor holds the lease. Written
            /// by the delivery step, read by `xnic monitor`.
            MONITOR_RING: ringbuf(u32 => u32; $crate::monitor::MONITOR_RING_BYTES), pinned, Monitor 1;
            /// The lease, sampling and rate limit. Written by `xnic monitor`.
            MONITOR_CONFIG: array(u32 => $crate::monitor::MonitorConfig; 1), pinned, Monitor 1;
            /// Per CPU: the rate limit's token bucket.
            MONITOR_BUCKET: percpu_array(u32 => $crate::monitor::Bucket; 1), pinned, Monitor 1;
            /// Frames of one port (`monitor::DropEvent`, with their action) while `xnic capture`
            /// holds the lease in `CAPTURE_CONFIG`. Written by the delivery step.
            CAPTURE_RING: ringbuf(u32 => u32; $crate::monitor::CAPTURE_RING_BYTES), pinned, Monitor 1;
            /// The capture's lease, port and rate limit. Written by `xnic capture`.
            CAPTURE_CONFIG: array(u32 => $crate::monitor::MonitorConfig; 1), pinned, Monitor 1;
            /// `xnic capture --filter` and `--at`: the frames a capture keeps (all, when its
            /// flow chooses nothing), as they arrive and/or as they leave.
            CAPTURE_FILTER: array(u32 => $crate::monitor::CaptureFilter; 1), pinned, Monitor 2;
            /// Per CPU: the capture's token bucket.
            CAPTURE_BUCKET: percpu_array(u32 => $crate::monitor::Bucket; 1), pinned, Monitor 1;
            /// `xnic monitor --trace`'s lease, flow and rate limit: frames of that flow become
            /// events with the stages they passed, whatever their verdict.
            WATCH_CONFIG: array(u32 => $crate::monitor::WatchConfig; 1), pinned, Monitor 2;
            /// Per CPU: the watched flow's token bucket.
            WATCH_BUCKET: percpu_array(u32 => $crate::monitor::Bucket; 1), pinned, Monitor 2;
            /// Per CPU: `monitor::WatchCounter`.
            WATCH_STATS: percpu_array(u32 => u64; $crate::limits::WATCH_SLOTS as u32), pinned, Monitor 2;
            /// Per CPU: `monitor::MonitorCounter`.
            MONITOR_STATS: percpu_array(u32 => u64; $crate::limits::MONITOR_SLOTS as u32), pinned, Monitor 1;

            /// Per CPU: the frame in flight, shared by the programs it passes through
            /// (parsed headers, port, verdict, next hop). Not pinned: it holds nothing
            /// between frames.
            SCRATCH: percpu_array(u32 => $crate::ctx::FrameCtx; 1), unpinned, Pipeline 1;
            /// Per CPU: a dry run's steps (`dry_run::DryRunLog`). Written only by the copy of
            /// the programs `xnic trace` loads; the daemon's never record.
            DRY_STEPS: percpu_array(u32 => $crate::dry_run::DryRunLog; 1), unpinned, Pipeline 1;
            /// Per CPU: what a dry run's flow stage writes instead of the flow's `FLOW_LIVE`
            /// entry (copied from it first), so a trace changes no flow.
            DRY_FLOW_LIVE: percpu_array(u32 => $crate::flow::FlowLive; 1), unpinned, Pipeline 1;
            /// Per CPU: a dry run's copy of the RSS flow slot it reads and writes.
            DRY_FLOW_SLOT: percpu_array(u32 => $crate::rss::FlowSlot; 1), unpinned, Pipeline 1;
            /// Per CPU: a dry run's copy of the RSS flow's dequeue counts.
            DRY_FLOW_DONE: percpu_array(u32 => $crate::rss::FlowDone; 1), unpinned, Pipeline 1;
            /// Per CPU: a dry run's copy of the VM's token bucket, so a trace spends none of
            /// its allocation.
            DRY_VM_BUCKET: percpu_array(u32 => $crate::team::VmBucket; 1), unpinned, Pipeline 1;
            /// Per CPU: this instance's redirects, so the devmap tracepoint tells its flushes
            /// from another namespace's (`xmit::RedirectMark`). Not pinned: each daemon's
            /// programs keep their own.
            REDIRECT_MARK: percpu_array(u32 => $crate::xmit::RedirectMark; 1), unpinned, Pipeline 1;
            /// What the tracepoint programs need to know about this instance (its CPU map's
            /// id). Written at load.
            TRACE_CONFIG: array(u32 => $crate::xmit::TraceConfig; 1), unpinned, Pipeline 1;
            /// The pipeline's tail-called stages, by `ctx::Call`. Each daemon fills one of its
            /// own and pins it under a name of its own (`calls/`), so programs of an older
            /// daemon keep calling the stages they were built with until their links move to
            /// the newer ones.
            CALLS: prog_array(u32 => u32; $crate::ctx::CALL_SLOTS), unpinned, Pipeline 1;
            /// The stages VNIC routing runs on a worker CPU, by `ctx::Call`: the same stages
            /// built for the CPU-map program, which the kernel lets tail-call only programs of
            /// its own attach type. Pinned per CPU-map program (`calls/cpu-ID`), kept while a
            /// CPU's queue runs it.
            WORKER_CALLS: prog_array(u32 => u32; $crate::ctx::CALL_SLOTS), unpinned, Pipeline 1;
        }
    };
}

/// Sizes of a map's key and value as the kernel sees them.
#[macro_export]
#[doc(hidden)]
macro_rules! map_sizes {
    (cpumap, $k:ty, $v:ty) => {
        // struct bpf_cpumap_val: queue size and program fd/id.
        (4u32, 8u32)
    };
    (devmap_hash, $k:ty, $v:ty) => {
        // struct bpf_devmap_val: ifindex and program fd/id.
        (4u32, 8u32)
    };
    (prog_array, $k:ty, $v:ty) => {
        (4u32, 4u32)
    };
    (xskmap, $k:ty, $v:ty) => {
        // A queue index → a socket's descriptor (on update) or id.
        (4u32, 4u32)
    };
    (ringbuf, $k:ty, $v:ty) => {
        // No keys or values: `max_entries` is its size in bytes.
        (0u32, 0u32)
    };
    (lpm_trie, $k:ty, $v:ty) => {
        // struct bpf_lpm_trie_key: the prefix length, then the data.
        (
            4 + ::core::mem::size_of::<$k>() as u32,
            ::core::mem::size_of::<$v>() as u32,
        )
    };
    ($kind:ident, $k:ty, $v:ty) => {
        (
            ::core::mem::size_of::<$k>() as u32,
            ::core::mem::size_of::<$v>() as u32,
        )
    };
}

#[macro_export]
#[doc(hidden)]
macro_rules! map_kind {
    (hash) => {
        $crate::mapdefs::MapKind::Hash
    };
    (array) => {
        $crate::mapdefs::MapKind::Array
    };
    (percpu_array) => {
        $crate::mapdefs::MapKind::PerCpuArray
    };
    (cpumap) => {
        $crate::mapdefs::MapKind::CpuMap
    };
    (devmap_hash) => {
        $crate::mapdefs::MapKind::DevMapHash
    };
    (prog_array) => {
        $crate::mapdefs::MapKind::ProgArray
    };
    (lru_hash) => {
        $crate::mapdefs::MapKind::LruHash
    };
    (lpm_trie) => {
        $crate::mapdefs::MapKind::LpmTrie
    };
    (xskmap) => {
        $crate::mapdefs::MapKind::XskMap
    };
    (ringbuf) => {
        $crate::mapdefs::MapKind::RingBuf
    };
}

macro_rules! specs {
    ($( $(#[doc = $doc:literal])* $name:ident: $kind:ident($k:ty => $v:ty; $len:expr), $pin:ident, $family:ident $version:literal; )*) => {
        /// Every map, in the registry's order.
        pub const MAPS: &[MapSpec] = &[
            $(
                MapSpec {
                    name: stringify!($name),
                    kind: map_kind!($kind),
                    key_size: map_sizes!($kind, $k, $v).0,
                    value_size: map_sizes!($kind, $k, $v).1,
                    max_entries: $len,
                    pinned: pinned!($pin),
                    family: Family::$family,
                    version: $version,
                    doc: concat!($($doc, "\n"),*),
                },
            )*
        ];
    };
}

macro_rules! pinned {
    (pinned) => {
        true
    };
    (unpinned) => {
        false
    };
}

for_each_map!(specs);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_fit_the_kernel() {
        for (i, m) in MAPS.iter().enumerate() {
            // BPF_OBJ_NAME_LEN is 16 with the NUL: longer names are cut in the kernel.
            assert!(m.name.len() <= 15, "{} is too long", m.name);
            assert!(
                MAPS[..i].iter().all(|o| o.name != m.name),
                "{} twice",
                m.name
            );
            assert!(!m.doc.is_empty(), "{} says what it is for", m.name);
        }
    }

    #[test]
    fn families_take_their_maps_highest_version() {
        assert_eq!(Family::Ports.version(), 3);
        assert_eq!(Family::Rss.version(), 2);
    }
}
