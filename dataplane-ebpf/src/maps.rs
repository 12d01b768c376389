//! The dataplane's maps. All are pinned by name, so a restarted daemon adopts them with their
//! contents; sizes come from `xnic_common::limits`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use xnic_common::{
    limits::{MAX_MACS, MAX_PORTS, MAX_VMS},
    maps::{Counter, DataplaneInfo, MacKey, MacOwner, PortEntry, PortRecord, VmCounters, VmRecord},
    parse::Shape,
    verdict::Reason,
};

/// ifindex → port slot, role and VM. Written by the daemon, read per frame.
#[map]
pub static PORTS: HashMap<u32, PortEntry> = HashMap::pinned(MAX_PORTS, 0);

/// MAC → owning VM and the port it may send from. Written by the daemon, read per frame.
#[map]
pub static MACS: HashMap<MacKey, MacOwner> = HashMap::pinned(MAX_MACS, 0);

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
