//! The dataplane's maps. All are pinned by name, so a restarted daemon adopts them with their
//! contents; sizes come from `xnic_common::limits`.

use aya_ebpf::{
    macros::map,
    maps::{Array, CpuMap, DevMapHash, HashMap, PerCpuArray},
};
use xnic_common::{
    limits::{MAX_MACS, MAX_PORTS, MAX_VMS},
    maps::{Counter, DataplaneInfo, MacKey, MacOwner, PortEntry, PortRecord, VmCounters, VmRecord},
    parse::{Parsed, Shape},
    rss::{
        EngineEntry, FLOW_SLOTS as FLOW_SLOTS_LEN, FlowSlot, MAX_CPUS, MAX_ENGINES, MAX_TABLE_SIZE,
        RssConfig, SteerCounter, VmRss,
    },
    team::{MAX_TEAM_MEMBERS, MAX_TEAMS, TEAM_TABLE_SIZE, TeamEntry, VmBucket, VmTeam},
    verdict::Reason,
};

/// ifindex → port slot, role and VM. Written by the daemon, read per frame.
#[map]
pub static PORTS: HashMap<u32, PortEntry> = HashMap::pinned(MAX_PORTS, 0);

/// MAC → owning VM and the port it may send from. Written by the daemon, read per frame.
#[map]
pub static MACS: HashMap<MacKey, MacOwner> = HashMap::pinned(MAX_MACS, 0);

/// Per CPU: where the parser writes what it found, one frame at a time. Keeping it in a map
/// rather than on the stack means the verifier does not track every parser path's field
/// values through the rest of the program, so it can merge those paths.
#[map]
pub static SCRATCH: PerCpuArray<Parsed> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU: frames and bytes per port slot per verdict reason.
#[map]
pub static VERDICTS: PerCpuArray<Counter> =
    PerCpuArray::pinned(MAX_PORTS * Reason::COUNT as u32, 0);

/// Per CPU: frames and bytes per port slot per notable shape (VLAN, fragment, ...).
#[map]
pub static SHAPES: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_PORTS * Shape::COUNT as u32, 0);

/// Per CPU: frames and bytes per VM slot, by direction.
#[map]
pub static VM_STATS: PerCpuArray<VmCounters> = PerCpuArray::pinned(MAX_VMS, 0);

/// Port slot → interface, for the daemon only (survives daemon restarts with the counters).
#[map]
pub static PORT_TABLE: Array<PortRecord> = Array::pinned(MAX_PORTS, 0);

/// VM slot → VM name, for the daemon only.
#[map]
pub static VM_TABLE: Array<VmRecord> = Array::pinned(MAX_VMS, 0);

/// Layout version of the pinned maps, for the daemon only.
#[map]
pub static INFO: Array<DataplaneInfo> = Array::pinned(1, 0);

// --- RSS steering (see xnic_common::rss) -------------------------------------------------

/// CPU → queue and CPU-map program. Written by the daemon, used by the redirect.
#[map]
pub static CPUMAP: CpuMap = CpuMap::pinned(MAX_CPUS, 0);

/// Global steering settings (one entry). Written by the daemon.
#[map]
pub static RSS_CONFIG: Array<RssConfig> = Array::pinned(1, 0);

/// VM slot → engine. Written by the daemon (policy decisions), read per frame.
#[map]
pub static VM_RSS: Array<VmRss> = Array::pinned(MAX_VMS, 0);

/// Engine → table size. Written by the daemon.
#[map]
pub static ENGINES: Array<EngineEntry> = Array::pinned(MAX_ENGINES, 0);

/// Engine × bucket → CPU. Written by the daemon (rebalancing), read per frame.
#[map]
pub static RSS_TABLES: Array<u32> = Array::pinned(MAX_ENGINES * MAX_TABLE_SIZE, 0);

/// Flow hash → the flow's CPU and queued-frame counts. Written by both programs.
#[map]
pub static FLOW_SLOTS: Array<FlowSlot> = Array::pinned(FLOW_SLOTS_LEN, 0);

/// Per CPU: frames and bytes per engine bucket, counted on the CPU that finished them.
#[map]
pub static BUCKET_STATS: PerCpuArray<Counter> =
    PerCpuArray::pinned(MAX_ENGINES * MAX_TABLE_SIZE, 0);

/// Per CPU: frames and bytes delivered per VM, counted on the CPU that finished them.
#[map]
pub static VM_CPU_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_VMS, 0);

/// Per CPU: steering events (`SteerCounter`).
#[map]
pub static STEER_STATS: PerCpuArray<u64> = PerCpuArray::pinned(SteerCounter::COUNT as u32, 0);

// --- Teaming (see xnic_common::team) -------------------------------------------------------

/// VM slot → team, placement and allocation. Written by the daemon, read per frame.
#[map]
pub static VM_TEAM: Array<VmTeam> = Array::pinned(MAX_VMS, 0);

/// VM slot → token bucket time. Written by the programs only.
#[map]
pub static VM_BUCKETS: Array<VmBucket> = Array::pinned(MAX_VMS, 0);

/// Team → members' ifindexes, the member that accepts group frames, the hash seed.
#[map]
pub static TEAMS: Array<TeamEntry> = Array::pinned(MAX_TEAMS, 0);

/// Team × flow-hash bucket → member (flow-hash placement). Written by the daemon.
#[map]
pub static TEAM_TABLES: Array<u32> = Array::pinned(MAX_TEAMS * TEAM_TABLE_SIZE, 0);

/// Per CPU: frames and bytes each VM sent through each member of its team.
#[map]
pub static TEAM_VM_STATS: PerCpuArray<Counter> = PerCpuArray::pinned(MAX_VMS * MAX_TEAM_MEMBERS, 0);

/// ifindex → itself, for every VM port and team uplink: where switched frames are redirected.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_PORTS, 0);

/// Every VM port, and every team uplink with `xnic_flood` as its program: broadcast targets.
#[map]
pub static FLOOD: DevMapHash = DevMapHash::pinned(MAX_PORTS, 0);
