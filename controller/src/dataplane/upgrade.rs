//! Adopting a dataplane an older xnic pinned, without detaching anything.
//!
//! Every map family has a version (`xnic_common::mapdefs::Family`), kept in the pinned
//! `LAYOUT` map (layout 4 predates it: its families are all version 1). A daemon compares the
//! pinned versions with its own before loading anything:
//! - equal: the pinned maps are adopted as they are (their layouts are checked);
//! - older: the maps the newer version adds are created beside the old ones at load, the old
//!   maps' contents are migrated ([`MIGRATIONS`]), and the old maps' pins go once every link
//!   runs the new programs: configuration entries are copied before the new programs run
//!   (they must find them), counters are added in after (the old programs count until their
//!   links move, so nothing they counted is lost);
//! - newer: refused, before anything is touched.
//!
//! Forwarding never stops: the old programs keep running on the old maps until the
//! reconciler swaps the new ones into the same links, atomically per interface.

use std::path::Path;

use anyhow::{Context as _, bail};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, PerCpuValues};
use tracing::info;
use xnic_common::{
    limits::{DATAPLANE_ABI, MAX_PORTS, OLDEST_UPGRADABLE_ABI},
    mapdefs::{FAMILY_SLOTS, Family, MapSpec},
    maps::{Counter, DataplaneInfo, LayoutInfo, PortEntry, shape_index, verdict_index},
    parse::Shape,
    rss::SteerCounter,
    verdict::Reason,
};

use super::{
    PinDir,
    registry::{self, Registered},
};

/// What was pinned before this daemon started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// Nothing: a first start.
    Nothing,
    /// A dataplane of this daemon's versions.
    Current,
    /// A dataplane with older families, which this daemon upgrades.
    Older {
        abi: u32,
        versions: [u16; FAMILY_SLOTS],
    },
}

/// Family versions of layout 4 (before `LAYOUT` existed).
const LAYOUT_4: [u16; FAMILY_SLOTS] = {
    let mut v = [0u16; FAMILY_SLOTS];
    v[Family::Info as usize] = 1;
    v[Family::Ports as usize] = 1;
    v[Family::Counters as usize] = 1;
    v[Family::Rss as usize] = 1;
    v[Family::Team as usize] = 1;
    v
};

/// This daemon's version of every family.
pub fn current_versions() -> [u16; FAMILY_SLOTS] {
    let mut v = [0u16; FAMILY_SLOTS];
    for f in Family::ALL {
        v[f as usize] = f.version();
    }
    v
}

/// One step of a family from one version to the next.
pub struct Migration {
    pub family: Family,
    pub from: u16,
    /// Pinned maps of the older version that the newer one replaces (removed once the new
    /// programs run), with their layouts: (name, key size, value size, entries).
    pub replaced: &'static [(&'static str, u32, u32, u32)],
}

/// Every step this xnic knows.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        family: Family::Ports,
        from: 1,
        // PORTS_V2 adds the VM's first MAC to the entry.
        replaced: &[("PORTS", 4, 12, MAX_PORTS)],
    },
    Migration {
        family: Family::Ports,
        from: 2,
        // PORT_INDEX and MAC_INDEX are new and derived: the reconciler fills them from
        // PORTS_V2 and MACS before it swaps the new programs in.
        replaced: &[],
    },
    Migration {
        family: Family::Counters,
        from: 1,
        // The _V2 counters leave headroom for reasons, shapes and steering counters to come.
        replaced: &[
            ("VERDICTS", 4, 16, MAX_PORTS * LAYOUT_4_REASONS),
            ("SHAPES", 4, 16, MAX_PORTS * LAYOUT_4_SHAPES),
            ("STEER_STATS", 4, 8, LAYOUT_4_STEER),
        ],
    },
    Migration {
        family: Family::Rss,
        from: 1,
        // The flow slots split in two (one array per writing side) and shrink to fit a
        // core's cache; each flow's CPU is carried over.
        replaced: &[("FLOW_SLOTS", 4, 40, RSS_1_FLOW_SLOTS)],
    },
    Migration {
        family: Family::Team,
        from: 1,
        // CARRIER_WATCH and MEMBER_DOWN are new; the reconciler fills the watch list before
        // it swaps the new programs in, and nothing is marked down yet.
        replaced: &[],
    },
    Migration {
        family: Family::Team,
        from: 2,
        // SHAPER_STATS is new (counters of the shaped allocations' tc program); placements
        // carry a new flag older programs never see set.
        replaced: &[],
    },
    // The pipeline family (the tail-call table, the frame scratch) is new in layout 5 and
    // holds nothing pinned: nothing to migrate.
    Migration {
        family: Family::Pipeline,
        from: 0,
        replaced: &[],
    },
    // Flow offload is new: its maps start empty and offload off, so the new programs find
    // no flow until the daemon promotes one.
    Migration {
        family: Family::Flows,
        from: 0,
        replaced: &[],
    },
    // VNIC routing is new: its maps start empty and VNIC routing off.
    Migration {
        family: Family::Vnic,
        from: 0,
        replaced: &[],
    },
    // Transaction rings are new: no socket and no queue pair until a worker registers.
    Migration {
        family: Family::Rings,
        from: 0,
        replaced: &[],
    },
    // The monitor is new: off until a monitor takes the lease.
    Migration {
        family: Family::Monitor,
        from: 0,
        replaced: &[],
    },
    // Watched flows (`xnic monitor --trace`) are new: none until a monitor chooses one.
    Migration {
        family: Family::Monitor,
        from: 1,
        replaced: &[],
    },
];

/// Flow slots of version 1 of the RSS family.
const RSS_1_FLOW_SLOTS: u32 = 65536;

/// Counter enumerations' sizes in layout 4 (arrays were sized by them, with no headroom).
const LAYOUT_4_REASONS: u32 = 15;
const LAYOUT_4_SHAPES: u32 = 11;
const LAYOUT_4_STEER: u32 = 7;

fn read_info(pins: &PinDir) -> anyhow::Result<Option<DataplaneInfo>> {
    let path = pins.maps().join(registry::INFO::NAME);
    if !path.exists() {
        return Ok(None);
    }
    let data =
        MapData::from_pin(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let map: aya::maps::Array<_, DataplaneInfo> = aya::maps::Array::try_from(Map::Array(data))?;
    Ok(Some(map.get(&0, 0)?))
}

fn read_layout(pins: &PinDir) -> anyhow::Result<Option<LayoutInfo>> {
    let path = pins.maps().join(registry::LAYOUT::NAME);
    if !path.exists() {
        return Ok(None);
    }
    let data =
        MapData::from_pin(&path).with_context(|| format!("cannot open {}", path.display()))?;
    let map: aya::maps::Array<_, LayoutInfo> = aya::maps::Array::try_from(Map::Array(data))?;
    Ok(Some(map.get(&0, 0)?))
}

/// Looks at what is pinned and decides whether this daemon can take it, before anything is
/// loaded or changed.
pub fn inspect(pins: &PinDir) -> anyhow::Result<Found> {
    let Some(info) = read_info(pins)? else {
        // Pins without INFO are a start that failed before writing it: check what is there.
        check_registry_maps(pins, &current_versions())?;
        return Ok(Found::Current);
    };
    let ours = current_versions();
    let versions = match read_layout(pins)? {
        Some(l) if info.abi >= 5 => l.versions,
        _ if info.abi == 4 => LAYOUT_4,
        _ if info.abi > DATAPLANE_ABI => bail!(
            "the pinned dataplane in {} was made by a newer xnic (layout {}); this xnic \
             understands layouts up to {DATAPLANE_ABI}: run the newer xnic, or remove the \
             dataplane with `xnic down` (this interrupts forwarding)",
            pins.path().display(),
            info.abi
        ),
        _ => bail!(
            "the pinned dataplane in {} has layout {}, too old to upgrade in place (this xnic \
             upgrades layouts {OLDEST_UPGRADABLE_ABI} and later): remove it with `xnic down` \
             (this interrupts forwarding) and start again",
            pins.path().display(),
            info.abi
        ),
    };
    for f in Family::ALL {
        let (have, want) = (versions[f as usize], ours[f as usize]);
        if have > want {
            bail!(
                "the pinned dataplane in {} has {} maps of version {have}, newer than this \
                 xnic's {want}: run the newer xnic, or remove the dataplane with `xnic down` \
                 (this interrupts forwarding)",
                pins.path().display(),
                f.name()
            );
        }
        let mut v = have;
        while v < want {
            if !MIGRATIONS.iter().any(|m| m.family == f && m.from == v) {
                bail!(
                    "this xnic cannot upgrade the pinned {} maps from version {v}: remove the \
                     dataplane with `xnic down` (this interrupts forwarding) and start again",
                    f.name()
                );
            }
            v += 1;
        }
    }
    check_registry_maps(pins, &versions)?;
    for m in MIGRATIONS {
        if versions[m.family as usize] <= m.from {
            for (name, key, value, entries) in m.replaced {
                let path = pins.maps().join(name);
                if path.exists() {
                    let spec = MapSpec {
                        name,
                        kind: xnic_common::mapdefs::MapKind::PerCpuArray,
                        key_size: *key,
                        value_size: *value,
                        max_entries: *entries,
                        pinned: true,
                        family: m.family,
                        version: m.from,
                        doc: "",
                    };
                    check_shape(&path, &spec)?;
                }
            }
        }
    }
    if versions == ours {
        Ok(Found::Current)
    } else {
        Ok(Found::Older {
            abi: info.abi,
            versions,
        })
    }
}

/// The sizes (not the kind) of a replaced map, which may be of any kind.
fn check_shape(path: &Path, spec: &MapSpec) -> anyhow::Result<()> {
    let info = aya::maps::MapInfo::from_pin(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if (info.key_size(), info.value_size(), info.max_entries())
        != (spec.key_size, spec.value_size, spec.max_entries)
    {
        bail!(
            "pinned map {} is not the {} map of version {} this xnic upgrades from; remove it \
             with `xnic down` (this interrupts forwarding) and start again",
            path.display(),
            spec.family.name(),
            spec.version
        );
    }
    Ok(())
}

/// Pinned maps this daemon shares with the pinned dataplane have the registry's layout.
fn check_registry_maps(pins: &PinDir, versions: &[u16; FAMILY_SLOTS]) -> anyhow::Result<()> {
    for spec in registry::pinned_specs() {
        // A map of a version the pinned dataplane does not have yet is created at load.
        if spec.version > versions[spec.family as usize] {
            continue;
        }
        let path = pins.maps().join(spec.name);
        if path.exists() {
            registry::check_pinned(&path, spec)?;
        }
    }
    Ok(())
}

/// Layout 4's port entry (before the VM's MAC was in it).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct PortEntryV1 {
    slot: u32,
    vm_slot: u32,
    role: u8,
    flags: u8,
    team: u8,
    member: u8,
}

// SAFETY: `repr(C)`, `Copy`, integers only, no padding (12 bytes, 4-byte aligned).
unsafe impl aya::Pod for PortEntryV1 {}

fn open(pins: &PinDir, name: &str) -> anyhow::Result<Option<MapData>> {
    let path = pins.maps().join(name);
    if !path.exists() {
        return Ok(None);
    }
    Ok(Some(MapData::from_pin(&path).with_context(|| {
        format!("cannot open {}", path.display())
    })?))
}

/// Version 1 of the RSS family's flow slot (one array written by both sides).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct FlowSlotV1 {
    cpu: u32,
    _pad: u32,
    enqueued: u64,
    dequeued: u64,
    last_dequeue_ns: u64,
    waiting_since_ns: u64,
}

// SAFETY: `repr(C)`, `Copy`, integers only, explicit padding (40 bytes, 8-byte aligned).
unsafe impl aya::Pod for FlowSlotV1 {}

/// Copies state the new programs need before they run: `PORTS` into `PORTS_V2`, each flow
/// slot's CPU into `FLOW_SLOTS_V2`. Returns how many entries.
pub fn migrate_entries(pins: &PinDir, versions: &[u16; FAMILY_SLOTS]) -> anyhow::Result<usize> {
    let mut n = 0;
    if versions[Family::Ports as usize] < 2 {
        n += migrate_ports(pins)?;
    }
    if versions[Family::Rss as usize] < 2 {
        n += migrate_flow_slots(pins)?;
    }
    Ok(n)
}

/// A flow keeps the CPU its frames went to (its new slot's counts start at zero: frames the
/// old programs queued are dequeued into counts they were never added to, which reads as
/// nothing queued).
fn migrate_flow_slots(pins: &PinDir) -> anyhow::Result<usize> {
    use xnic_common::rss::{FLOW_SLOTS, FlowSlot};
    let Some(old) = open(pins, "FLOW_SLOTS")? else {
        return Ok(0);
    };
    let old: aya::maps::Array<_, FlowSlotV1> = aya::maps::Array::try_from(Map::Array(old))?;
    let new = open(pins, registry::FLOW_SLOTS_V2::NAME)?
        .context("FLOW_SLOTS_V2 was not created at load")?;
    let mut new: aya::maps::Array<_, FlowSlot> = aya::maps::Array::try_from(Map::Array(new))?;
    let mut n = 0;
    // A flow's new slot is its old one's low bits: of the old slots that share it, the first
    // gives its CPU (they share a bucket, so their tables name the same CPU).
    for i in 0..FLOW_SLOTS.min(old.len()) {
        let v1 = old.get(&i, 0)?;
        if v1.cpu == 0 {
            continue;
        }
        let slot = FlowSlot {
            cpu: v1.cpu,
            ..FlowSlot::default()
        };
        new.set(i, slot, 0)
            .with_context(|| format!("cannot copy FLOW_SLOTS[{i}] into FLOW_SLOTS_V2"))?;
        n += 1;
    }
    info!(
        slots = n,
        "carried every flow's CPU into the new flow slots"
    );
    Ok(n)
}

fn migrate_ports(pins: &PinDir) -> anyhow::Result<usize> {
    let Some(old) = open(pins, "PORTS")? else {
        return Ok(0);
    };
    let old: BpfHashMap<_, u32, PortEntryV1> = BpfHashMap::try_from(Map::HashMap(old))?;
    let new = open(pins, registry::PORTS_V2::NAME)?.context("PORTS_V2 was not created at load")?;
    let mut new: BpfHashMap<_, u32, PortEntry> = BpfHashMap::try_from(Map::HashMap(new))?;
    let mut n = 0;
    for entry in old.iter() {
        let (ifindex, e) = entry?;
        let mut v2 = PortEntry::new(e.slot, e.vm_slot, xnic_common::maps::PortRole::Vm);
        v2.role = e.role;
        v2.flags = e.flags;
        v2.team = e.team;
        v2.member = e.member;
        new.insert(ifindex, v2, 0)
            .with_context(|| format!("cannot copy PORTS[{ifindex}] into PORTS_V2"))?;
        n += 1;
    }
    info!(entries = n, "copied the port entries into the new layout");
    Ok(n)
}

/// Adds one per-CPU counter array into another, index by index (`map(old index)` gives the
/// new index), and returns how many entries held counts.
fn merge<V: aya::Pod + Copy + Default + PartialEq>(
    pins: &PinDir,
    old: &str,
    new: &str,
    entries: u32,
    index: impl Fn(u32) -> Option<u32>,
    add: impl Fn(V, V) -> V,
) -> anyhow::Result<usize> {
    let Some(from) = open(pins, old)? else {
        return Ok(0);
    };
    let from: PerCpuArray<_, V> = PerCpuArray::try_from(Map::PerCpuArray(from))?;
    let to = open(pins, new)?.with_context(|| format!("{new} was not created at load"))?;
    let mut to: PerCpuArray<_, V> = PerCpuArray::try_from(Map::PerCpuArray(to))?;
    let mut n = 0;
    for i in 0..entries {
        let Some(j) = index(i) else { continue };
        let old_values = from.get(&i, 0)?;
        if old_values.iter().all(|v| *v == V::default()) {
            continue;
        }
        let now = to.get(&j, 0)?;
        let sum: Vec<V> = old_values
            .iter()
            .zip(now.iter())
            .map(|(a, b)| add(*a, *b))
            .collect();
        to.set(j, PerCpuValues::try_from(sum)?, 0)
            .with_context(|| format!("cannot write {new}[{j}]"))?;
        n += 1;
    }
    Ok(n)
}

/// Adds what the old programs counted into the new counters, once the new programs run
/// everywhere. A counter a new program bumps between the read and the write of its entry
/// loses that bump; frames are never lost.
pub fn merge_counters(pins: &PinDir, versions: &[u16; FAMILY_SLOTS]) -> anyhow::Result<usize> {
    if versions[Family::Counters as usize] >= 2 {
        return Ok(0);
    }
    let counter = |a: Counter, b: Counter| a.merged(b);
    let mut n = merge(
        pins,
        "VERDICTS",
        registry::VERDICTS_V2::NAME,
        MAX_PORTS * LAYOUT_4_REASONS,
        |i| {
            let r = Reason::from_index(i % LAYOUT_4_REASONS)?;
            Some(verdict_index(i / LAYOUT_4_REASONS, r))
        },
        counter,
    )?;
    n += merge(
        pins,
        "SHAPES",
        registry::SHAPES_V2::NAME,
        MAX_PORTS * LAYOUT_4_SHAPES,
        |i| {
            let s = Shape::from_index(i % LAYOUT_4_SHAPES)?;
            Some(shape_index(i / LAYOUT_4_SHAPES, s))
        },
        counter,
    )?;
    n += merge(
        pins,
        "STEER_STATS",
        registry::STEER_STATS_V2::NAME,
        LAYOUT_4_STEER,
        |i| SteerCounter::from_index(i).map(|c| c as u32),
        |a: u64, b: u64| a.wrapping_add(b),
    )?;
    info!(
        entries = n,
        "added the older layout's counters into the new ones"
    );
    Ok(n)
}

/// Removes the pins of maps the upgrade replaced (programs still running on them keep them
/// alive until they are swapped out). Returns their names.
pub fn remove_replaced(
    pins: &PinDir,
    versions: &[u16; FAMILY_SLOTS],
) -> anyhow::Result<Vec<String>> {
    let mut gone = Vec::new();
    for m in MIGRATIONS {
        if versions[m.family as usize] > m.from {
            continue;
        }
        for (name, ..) in m.replaced {
            let path = pins.maps().join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => gone.push(name.to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()));
                }
            }
        }
    }
    Ok(gone)
}
