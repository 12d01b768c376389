//! Reading the dataplane's counters through handles of their own, opened from the pins: the
//! sampler and the API read counters without going through (or waiting for) the reconciler
//! that owns the configuration maps.

use anyhow::Context as _;
use aya::maps::{Map, MapData, PerCpuArray};
use xnic_common::{
    maps::{Counter, VmCounters, shape_index, verdict_index},
    parse::Shape,
    rss::{SteerCounter, bucket_index},
    shaper::ShapeCounter,
    team::{MAX_TEAM_MEMBERS, vm_member_index},
    verdict::Reason,
};

use super::{
    PinDir,
    registry::{self, Registered},
};

/// Counters of one port slot, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortCounters {
    pub reasons: [Counter; Reason::COUNT],
    pub shapes: [Counter; Shape::COUNT],
    /// Frames redirected to this port that the kernel dropped on the way out.
    pub redirect_dropped: u64,
}

/// Read-only handles on every counter map.
pub struct Counters {
    verdicts: PerCpuArray<MapData, Counter>,
    shapes: PerCpuArray<MapData, Counter>,
    vm_stats: PerCpuArray<MapData, VmCounters>,
    vm_cpu: PerCpuArray<MapData, Counter>,
    buckets: PerCpuArray<MapData, Counter>,
    steer: PerCpuArray<MapData, u64>,
    shaper: PerCpuArray<MapData, u64>,
    team_vm: PerCpuArray<MapData, Counter>,
    xmit_drops: PerCpuArray<MapData, u64>,
    queue_drops: PerCpuArray<MapData, u64>,
    /// When the kernel's hooks last found each team member dead (not a counter, but read
    /// with them, by the sampler).
    member_down: aya::maps::Array<MapData, u64>,
}

fn open<M: Registered>(pins: &PinDir) -> anyhow::Result<PerCpuArray<MapData, M::Value>>
where
    M::Value: aya::Pod,
{
    let path = pins.maps().join(M::NAME);
    let data =
        MapData::from_pin(&path).with_context(|| format!("cannot open {}", path.display()))?;
    PerCpuArray::try_from(Map::PerCpuArray(data)).with_context(|| {
        format!(
            "{} is not a per-CPU array of the expected layout",
            path.display()
        )
    })
}

fn sum<V: aya::Pod + Copy>(
    map: &PerCpuArray<MapData, V>,
    index: u32,
    zero: V,
    add: impl Fn(V, V) -> V,
) -> anyhow::Result<V> {
    Ok(map.get(&index, 0)?.iter().fold(zero, |a, v| add(a, *v)))
}

impl Counters {
    pub fn open(pins: &PinDir) -> anyhow::Result<Counters> {
        Ok(Counters {
            verdicts: open::<registry::VERDICTS_V2>(pins)?,
            shapes: open::<registry::SHAPES_V2>(pins)?,
            vm_stats: open::<registry::VM_STATS>(pins)?,
            vm_cpu: open::<registry::VM_CPU_STATS>(pins)?,
            buckets: open::<registry::BUCKET_STATS>(pins)?,
            steer: open::<registry::STEER_STATS_V2>(pins)?,
            shaper: open::<registry::SHAPER_STATS>(pins)?,
            team_vm: open::<registry::TEAM_VM_STATS>(pins)?,
            xmit_drops: open::<registry::XMIT_DROPS>(pins)?,
            queue_drops: open::<registry::QUEUE_DROPS>(pins)?,
            member_down: {
                let path = pins.maps().join(registry::MEMBER_DOWN::NAME);
                let data = MapData::from_pin(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?;
                aya::maps::Array::try_from(Map::Array(data))?
            },
        })
    }

    /// `MEMBER_DOWN`, by `member_index`: when the kernel last found each member dead (0:
    /// never).
    pub fn member_down(&self) -> anyhow::Result<Vec<u64>> {
        (0..xnic_common::team::MAX_TEAMS * xnic_common::team::MAX_TEAM_MEMBERS)
            .map(|i| Ok(self.member_down.get(&i, 0)?))
            .collect()
    }

    /// Counters of `slot`, summed over CPUs, plus each CPU's share of the slot's frames
    /// (added into `per_cpu`, one entry per possible CPU).
    pub fn port(&self, slot: u32, per_cpu: &mut [Counter]) -> anyhow::Result<PortCounters> {
        let mut out = PortCounters::default();
        for r in Reason::ALL {
            let values = self.verdicts.get(&verdict_index(slot, r), 0)?;
            for (cpu, v) in values.iter().enumerate() {
                out.reasons[r as usize] = out.reasons[r as usize].merged(*v);
                if let Some(c) = per_cpu.get_mut(cpu) {
                    *c = c.merged(*v);
                }
            }
        }
        for s in Shape::ALL {
            out.shapes[s as usize] = sum(
                &self.shapes,
                shape_index(slot, s),
                Counter::default(),
                Counter::merged,
            )?;
        }
        out.redirect_dropped = sum(&self.xmit_drops, slot, 0, u64::wrapping_add)?;
        Ok(out)
    }

    /// Per CPU (by number): frames steered there that its full CPU-map queue dropped.
    pub fn queue_drops(&self, cpus: usize) -> anyhow::Result<Vec<u64>> {
        (0..cpus as u32)
            .map(|cpu| sum(&self.queue_drops, cpu, 0, u64::wrapping_add))
            .collect()
    }

    pub fn vm(&self, slot: u32) -> anyhow::Result<VmCounters> {
        sum(&self.vm_stats, slot, VmCounters::default(), |a, v| {
            VmCounters {
                from_vm: a.from_vm.merged(v.from_vm),
                to_vm: a.to_vm.merged(v.to_vm),
                dropped: a.dropped.merged(v.dropped),
            }
        })
    }

    /// Frames delivered to VM `slot`, per CPU that finished them.
    pub fn vm_per_cpu(&self, slot: u32) -> anyhow::Result<Vec<u64>> {
        Ok(self
            .vm_cpu
            .get(&slot, 0)?
            .iter()
            .map(|c| c.packets)
            .collect())
    }

    /// Per bucket of `engine` (the first `size`), frames per CPU that ran them.
    pub fn buckets(&self, engine: u32, size: u32) -> anyhow::Result<Vec<Vec<u64>>> {
        (0..size)
            .map(|b| {
                Ok(self
                    .buckets
                    .get(&bucket_index(engine, b), 0)?
                    .iter()
                    .map(|c| c.packets)
                    .collect())
            })
            .collect()
    }

    /// Steering counters, summed over CPUs, in `SteerCounter` order.
    pub fn steering(&self) -> anyhow::Result<[u64; SteerCounter::COUNT]> {
        let mut out = [0u64; SteerCounter::COUNT];
        for c in SteerCounter::ALL {
            out[c as usize] = self.steer.get(&(c as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// The shaper's tc program's counters, summed over CPUs, in `ShapeCounter` order.
    pub fn shaper(&self) -> anyhow::Result<[u64; ShapeCounter::COUNT]> {
        let mut out = [0u64; ShapeCounter::COUNT];
        for c in ShapeCounter::ALL {
            out[c as usize] = self.shaper.get(&(c as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Frames and bytes VM `slot` sent through each member of its team, summed over CPUs.
    pub fn team_vm(&self, slot: u32) -> anyhow::Result<Vec<Counter>> {
        (0..MAX_TEAM_MEMBERS)
            .map(|m| {
                sum(
                    &self.team_vm,
                    vm_member_index(slot, m),
                    Counter::default(),
                    Counter::merged,
                )
            })
            .collect()
    }
}
