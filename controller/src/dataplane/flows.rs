//! The flow table's maps (`xnic_common::flow`): what the offload feature writes and reads.
//! A flow goes in slot first, keys last, and comes out keys first, so a frame that finds a
//! key always finds its slot set up.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, HashMap},
};

use anyhow::{Context as _, anyhow};
use aya::maps::{Array, DevMapHash, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use aya::programs::Xdp;
use xnic_common::flow::{
    FlowConfig, FlowCounter, FlowKey, FlowLive, FlowRef, FlowState, MODE_UNUSED, Tunnel,
};

use super::{
    Dataplane, FLOW_TX_PROGRAM, PinDir, key_missing,
    registry::{self, Registered as _},
};

/// One offloaded flow as the table holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFlow {
    pub slot: u32,
    pub keys: [FlowKey; 2],
    pub state: FlowState,
    pub live: FlowLive,
}

impl Dataplane {
    pub fn flow_config(&self) -> anyhow::Result<FlowConfig> {
        Ok(self.array::<registry::FLOW_CONFIG>()?.get(&0, 0)?)
    }

    pub fn set_flow_config(&mut self, config: FlowConfig) -> anyhow::Result<()> {
        self.array_mut::<registry::FLOW_CONFIG>()?
            .set(0, config, 0)
            .context("cannot write FLOW_CONFIG")
    }

    /// Slots the flow table has: the size it was made with (the kernel's, since a pinned
    /// table keeps its size whatever the configuration says now).
    pub fn flow_slots(&self) -> anyhow::Result<u32> {
        let path = self.pins.maps().join(registry::FLOW_STATE::NAME);
        let info = aya::maps::MapInfo::from_pin(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(info.max_entries())
    }

    /// Sets up `slot` for a flow, its live state starting as `live` (usually
    /// [`FlowLive::promoted`]: both directions promoting), and then points its two keys at it.
    pub fn insert_flow(
        &mut self,
        slot: u32,
        keys: &[FlowKey; 2],
        state: &FlowState,
        live: FlowLive,
    ) -> anyhow::Result<()> {
        self.array_mut::<registry::FLOW_STATE>()?
            .set(slot, *state, 0)
            .with_context(|| format!("cannot write FLOW_STATE[{slot}]"))?;
        self.array_mut::<registry::FLOW_LIVE>()?
            .set(slot, live, 0)
            .with_context(|| format!("cannot write FLOW_LIVE[{slot}]"))?;
        let mut flows = self.hash_mut::<registry::FLOWS>()?;
        for (dir, key) in keys.iter().enumerate() {
            let r = FlowRef {
                slot,
                dir: dir as u16,
                _pad: 0,
                generation: state.generation,
            };
            if let Err(e) = flows.insert(key, r, 0) {
                // Nothing half-done: the first key goes again.
                if dir == 1 {
                    let _ = flows.remove(&keys[0]);
                }
                return Err(e).with_context(|| format!("cannot add flow slot {slot}'s key"));
            }
        }
        Ok(())
    }

    /// Rewrites what a flow's directions become (a next hop that moved, a leave the daemon
    /// asks for), keeping its keys and live state.
    pub fn update_flow_state(&mut self, slot: u32, state: &FlowState) -> anyhow::Result<()> {
        self.array_mut::<registry::FLOW_STATE>()?
            .set(slot, *state, 0)
            .with_context(|| format!("cannot write FLOW_STATE[{slot}]"))
    }

    /// Takes a flow out: its keys first, so no frame finds the slot; then the slot is
    /// marked unused.
    pub fn remove_flow(&mut self, slot: u32, keys: &[FlowKey; 2]) -> anyhow::Result<()> {
        {
            let mut flows = self.hash_mut::<registry::FLOWS>()?;
            for key in keys {
                match flows.remove(key) {
                    Ok(()) => {}
                    Err(e) if key_missing(&e) => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("cannot remove flow slot {slot}'s key"));
                    }
                }
            }
        }
        let mut live = self.flow_live(slot)?;
        for d in &mut live.dirs {
            d.mode = MODE_UNUSED;
        }
        self.array_mut::<registry::FLOW_LIVE>()?
            .set(slot, live, 0)
            .with_context(|| format!("cannot write FLOW_LIVE[{slot}]"))
    }

    pub fn flow_state(&self, slot: u32) -> anyhow::Result<FlowState> {
        self.array::<registry::FLOW_STATE>()?
            .get(&slot, 0)
            .with_context(|| format!("cannot read FLOW_STATE[{slot}]"))
    }

    /// Overwrites a slot's live state (tests and benchmarks set directions up with it).
    pub fn set_flow_live(&mut self, slot: u32, live: FlowLive) -> anyhow::Result<()> {
        self.array_mut::<registry::FLOW_LIVE>()?
            .set(slot, live, 0)
            .with_context(|| format!("cannot write FLOW_LIVE[{slot}]"))
    }

    pub fn flow_live(&self, slot: u32) -> anyhow::Result<FlowLive> {
        self.array::<registry::FLOW_LIVE>()?
            .get(&slot, 0)
            .with_context(|| format!("cannot read FLOW_LIVE[{slot}]"))
    }

    /// Every key of the flow table with the slot it points at: what a restarted daemon
    /// adopts.
    pub fn flow_keys(&self) -> anyhow::Result<Vec<(FlowKey, FlowRef)>> {
        let flows = self.hash::<registry::FLOWS>()?;
        let mut out = Vec::new();
        for entry in flows.iter() {
            out.push(entry.context("cannot read FLOWS")?);
        }
        Ok(out)
    }

    /// Every offloaded flow as the table holds it ([`table_of`]).
    pub fn flow_table(&self) -> anyhow::Result<Vec<TableFlow>> {
        table_of(
            &self.hash::<registry::FLOWS>()?,
            &self.array::<registry::FLOW_STATE>()?,
            &self.array::<registry::FLOW_LIVE>()?,
        )
    }

    pub fn set_tunnel(&mut self, index: u32, tunnel: Tunnel) -> anyhow::Result<()> {
        self.array_mut::<registry::FLOW_TUNNELS>()?
            .set(index, tunnel, 0)
            .with_context(|| format!("cannot write FLOW_TUNNELS[{index}]"))
    }

    pub fn tunnel(&self, index: u32) -> anyhow::Result<Tunnel> {
        self.array::<registry::FLOW_TUNNELS>()?
            .get(&index, 0)
            .with_context(|| format!("cannot read FLOW_TUNNELS[{index}]"))
    }

    /// Lets the fast path redirect to port `ifindex`, through the program that counts its
    /// frames out.
    pub fn add_flow_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        let prog: &Xdp = self
            .ebpf
            .program(FLOW_TX_PROGRAM)
            .ok_or_else(|| anyhow!("no program {FLOW_TX_PROGRAM}"))?
            .try_into()?;
        let fd = prog.fd()?.try_clone()?;
        let mut map: DevMapHash<_> = DevMapHash::try_from(self.map_mut(registry::FLOW_TX::NAME)?)?;
        map.insert(ifindex, ifindex, Some(&fd), 0)
            .with_context(|| format!("cannot add ifindex {ifindex} to FLOW_TX"))
    }

    pub fn remove_flow_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        let mut map: DevMapHash<_> = DevMapHash::try_from(self.map_mut(registry::FLOW_TX::NAME)?)?;
        match map.remove(ifindex) {
            Ok(()) => Ok(()),
            Err(e) if key_missing(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete FLOW_TX[{ifindex}]")),
        }
    }

    /// ifindexes in `FLOW_TX`.
    pub fn flow_ports(&self) -> anyhow::Result<Vec<u32>> {
        let map: DevMapHash<_> = DevMapHash::try_from(self.map(registry::FLOW_TX::NAME)?)?;
        Ok(map.keys().filter_map(Result::ok).collect())
    }

    /// The fast path's counters, summed over CPUs, by `FlowCounter`.
    pub fn flow_counters(&self) -> anyhow::Result<[u64; FlowCounter::COUNT]> {
        counters_of(&PerCpuArray::try_from(
            self.map(registry::FLOW_STATS::NAME)?,
        )?)
    }
}

/// Every offloaded flow the maps hold: its slot, its two keys (by direction), what each
/// direction becomes and what the programs recorded. Keys whose slot is of another
/// generation (caught mid-change) and slots with one key only are left out.
fn table_of<F, S, L>(
    flows: &BpfHashMap<F, FlowKey, FlowRef>,
    states: &Array<S, FlowState>,
    lives: &Array<L, FlowLive>,
) -> anyhow::Result<Vec<TableFlow>>
where
    F: Borrow<MapData>,
    S: Borrow<MapData>,
    L: Borrow<MapData>,
{
    let mut by_slot: BTreeMap<u32, ([Option<FlowKey>; 2], u32)> = BTreeMap::new();
    for entry in flows.iter() {
        let (key, r) = entry.context("cannot read FLOWS")?;
        let e = by_slot.entry(r.slot).or_default();
        e.0[usize::from(r.dir & 1)] = Some(key);
        e.1 = r.generation;
    }
    let mut out = Vec::with_capacity(by_slot.len());
    for (slot, (keys, g)) in by_slot {
        let [Some(k0), Some(k1)] = keys else {
            continue;
        };
        let state = states
            .get(&slot, 0)
            .with_context(|| format!("cannot read FLOW_STATE[{slot}]"))?;
        let live = lives
            .get(&slot, 0)
            .with_context(|| format!("cannot read FLOW_LIVE[{slot}]"))?;
        if state.generation != g || live.generation != g {
            continue;
        }
        out.push(TableFlow {
            slot,
            keys: [k0, k1],
            state,
            live,
        });
    }
    Ok(out)
}

/// Read-only handles on the flow table, opened from the pins: the sampler and the API list
/// flows without going through the reconciler.
pub struct FlowReader {
    flows: BpfHashMap<MapData, FlowKey, FlowRef>,
    states: Array<MapData, FlowState>,
    lives: Array<MapData, FlowLive>,
    stats: PerCpuArray<MapData, u64>,
}

/// A pinned map of the instance, opened by name.
pub(super) fn pinned(pins: &PinDir, name: &str) -> anyhow::Result<MapData> {
    let path = pins.maps().join(name);
    MapData::from_pin(&path).with_context(|| format!("cannot open {}", path.display()))
}

impl FlowReader {
    pub fn open(pins: &PinDir) -> anyhow::Result<FlowReader> {
        Ok(FlowReader {
            flows: BpfHashMap::try_from(Map::HashMap(pinned(pins, registry::FLOWS::NAME)?))?,
            states: Array::try_from(Map::Array(pinned(pins, registry::FLOW_STATE::NAME)?))?,
            lives: Array::try_from(Map::Array(pinned(pins, registry::FLOW_LIVE::NAME)?))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(pinned(
                pins,
                registry::FLOW_STATS::NAME,
            )?))?,
        })
    }

    pub fn table(&self) -> anyhow::Result<Vec<TableFlow>> {
        table_of(&self.flows, &self.states, &self.lives)
    }

    /// The live state of each of `slots`: one lookup a slot, where [`FlowReader::table`]
    /// walks every key (a period's read of a table of 100k flows in ~0.1 s, not ~1 s).
    pub fn live(&self, slots: &[u32]) -> anyhow::Result<HashMap<u32, FlowLive>> {
        let mut out = HashMap::with_capacity(slots.len());
        for &slot in slots {
            let live = self
                .lives
                .get(&slot, 0)
                .with_context(|| format!("cannot read FLOW_LIVE[{slot}]"))?;
            out.insert(slot, live);
        }
        Ok(out)
    }

    /// The fast path's counters, summed over CPUs, by `FlowCounter`.
    pub fn counters(&self) -> anyhow::Result<[u64; FlowCounter::COUNT]> {
        counters_of(&self.stats)
    }
}

fn counters_of<T: Borrow<MapData>>(
    map: &PerCpuArray<T, u64>,
) -> anyhow::Result<[u64; FlowCounter::COUNT]> {
    let mut out = [0u64; FlowCounter::COUNT];
    for (i, slot) in out.iter_mut().enumerate() {
        let per_cpu = map
            .get(&(i as u32), 0)
            .with_context(|| format!("cannot read FLOW_STATS[{i}]"))?;
        *slot = per_cpu.iter().sum();
    }
    Ok(out)
}
