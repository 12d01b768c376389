//! RSS engine policy: which engine state each VM is in, and which CPU each bucket of an
//! engine's table names. Pure: loads in, decisions out, applied to the policy's own state.
//!
//! Every period:
//! 1. a VM whose load stayed under the low threshold for `low_periods` goes back to no-RSS;
//! 2. a shared engine whose load per CPU is over the high threshold, or whose CPUs are busier
//!    than `engine_high_busy` in the kernel threads carrying traffic, sends one VM away (chosen
//!    by load or by priority), to a free dedicated engine, else to the shared engine it fits
//!    best (it must stay under `fill` × both thresholds there), else nowhere (reported once);
//! 3. a no-RSS VM over its threshold joins the shared engine it fits best;
//! 4. every engine a VM did not just join or leave has its buckets rebalanced across its CPUs
//!    (RSS++ style): once the spread between the most and least loaded CPU exceeds
//!    `rebalance_above`, move the bucket of the most loaded CPU that best evens it with the
//!    least loaded (or, when every bucket there is bigger than the gap, swap one for a smaller
//!    bucket of the least loaded), a few per period, period after period until the spread is
//!    within `rebalance_to`; never a CPU's only loaded bucket, never a bucket moved within
//!    `bucket_dwell_periods`. A CPU that cannot give anything (an unsplittable elephant) is
//!    skipped, so the CPUs behind it still get balanced. A move must lower the pair's maximum
//!    by at least half `rebalance_to` of a mean CPU load, so noise does not shuffle buckets in
//!    steady state.
//!
//! Operators can also add engines, change an engine's CPU set ([`reshare`] deals its table
//! over the new CPUs) and remove engines.
//!
//! A VM that moved stays put for `min_dwell_periods`; pinned VMs are never moved.

use serde::{Deserialize, Serialize};

pub use xnic_proto::config::{EngineKind, RssParams as Params, Selection};

#[derive(Clone, Debug, PartialEq)]
pub struct Engine {
    pub name: String,
    pub kind: EngineKind,
    pub cpus: Vec<u32>,
    /// Bucket → CPU; every entry is one of `cpus`.
    pub table: Vec<u32>,
    /// Removed at runtime: its index stays taken (the dataplane addresses engines by index)
    /// until a new engine reuses it; it serves no VM and is never chosen.
    pub retired: bool,
}

impl Engine {
    /// An engine whose table deals its buckets out over its CPUs in turn.
    pub fn new(name: &str, kind: EngineKind, cpus: Vec<u32>, table_size: usize) -> Engine {
        let table = (0..table_size).map(|b| cpus[b % cpus.len()]).collect();
        Engine {
            name: name.to_string(),
            kind,
            cpus,
            table,
            retired: false,
        }
    }
}

/// `table` dealt over a new CPU set with as few buckets moved as possible: every CPU ends up
/// with its share of buckets (equal within one), a bucket stays where it is while its CPU
/// remains in the set and is within its share, and the rest go to CPUs under their share.
pub fn reshare(table: &[u32], cpus: &[u32]) -> Vec<u32> {
    if cpus.is_empty() {
        return table.to_vec();
    }
    let (base, extra) = (table.len() / cpus.len(), table.len() % cpus.len());
    let held = |cpu: u32| table.iter().filter(|&&c| c == cpu).count();
    // The CPUs holding most get the one-bucket-larger shares: fewer moves.
    let mut order: Vec<usize> = (0..cpus.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(held(cpus[i])));
    let mut quota = vec![base; cpus.len()];
    for &i in order.iter().take(extra) {
        quota[i] += 1;
    }
    let mut kept = vec![0; cpus.len()];
    let mut out = table.to_vec();
    let mut homeless = Vec::new();
    for (b, cpu) in table.iter().enumerate() {
        match cpus.iter().position(|c| c == cpu) {
            Some(i) if kept[i] < quota[i] => kept[i] += 1,
            _ => homeless.push(b),
        }
    }
    let mut i = 0;
    for b in homeless {
        while kept[i] >= quota[i] {
            i += 1;
        }
        out[b] = cpus[i];
        kept[i] += 1;
    }
    out
}

/// A VM's RSS engine state: exactly one of no-RSS, or an engine (shared or dedicated by the
/// engine's kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Placement {
    NoRss,
    Engine(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Vm {
    pub name: String,
    pub placement: Placement,
    /// Placed by hand: the policy leaves it alone.
    pub pinned: bool,
    pub priority: i32,
    pub prefer_dedicated: bool,
    /// Period of the VM's last move.
    pub last_move: Option<u64>,
    /// Consecutive periods under the low threshold.
    pub low_periods: u32,
}

impl Vm {
    pub fn new(name: &str) -> Vm {
        Vm {
            name: name.to_string(),
            placement: Placement::NoRss,
            pinned: false,
            priority: 0,
            prefer_dedicated: false,
            last_move: None,
            low_periods: 0,
        }
    }
}

/// What the policy measured for a period: packets per second per VM (same order as the VMs)
/// and per bucket of each engine (same order as the engines and their tables), and per CPU
/// (by number) the busy fraction of the kernel threads that carry steered traffic.
#[derive(Clone, Debug, Default)]
pub struct Loads {
    pub vm_pps: Vec<f64>,
    pub bucket_pps: Vec<Vec<f64>>,
    pub cpu_busy: Vec<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveReason {
    /// Its shared engine was over the high threshold.
    EngineOverloaded,
    /// Its shared engine's CPUs were too busy in kernel threads.
    EngineCpusBusy,
    /// It was over the no-RSS threshold.
    NoRssOverloaded,
    /// It stayed under the low threshold.
    Underloaded,
    /// An operator placed it.
    Manual,
    /// An operator removed its engine.
    EngineRemoved,
}

/// Why a bucket moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BucketCause {
    /// Its engine's CPUs were unevenly loaded.
    Imbalance,
    /// Its engine's CPU set changed.
    CpuSetChanged,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    MoveVm {
        vm: usize,
        from: Placement,
        to: Placement,
        reason: MoveReason,
        vm_pps: f64,
        /// The figure that triggered the move: the engine's load per CPU, or the VM's load.
        trigger_pps: f64,
        /// For a move off a shared engine: the mean kernel-thread busy fraction of its CPUs.
        cpu_busy: f64,
    },
    MoveBucket {
        engine: usize,
        bucket: usize,
        cause: BucketCause,
        from_cpu: u32,
        to_cpu: u32,
        bucket_pps: f64,
        /// The two CPUs' loads before the move.
        from_load: f64,
        to_load: f64,
    },
    /// An overloaded shared engine had no VM it could send anywhere (reported when it starts).
    NoDestination { engine: usize, load_per_cpu: f64 },
}

#[derive(Clone, Debug)]
pub struct RssPolicy {
    pub engines: Vec<Engine>,
    pub vms: Vec<Vm>,
    pub params: Params,
    /// Per engine, per bucket: period of the bucket's last move.
    bucket_moved: Vec<Vec<Option<u64>>>,
    /// Per engine: a NoDestination was reported and the engine is still overloaded.
    stuck: Vec<bool>,
    /// Per engine: rebalancing started (spread over `rebalance_above`) and goes on, period
    /// after period, until the spread is under `rebalance_to` or nothing more can move.
    rebalancing: Vec<bool>,
    /// Exponentially smoothed loads (see `Params::smoothing`).
    smoothed: Option<Loads>,
}

/// A CPU set an engine can have: not empty, no CPU twice.
fn check_cpus(cpus: &[u32]) -> Result<(), String> {
    if cpus.is_empty() {
        return Err("an engine needs CPUs".into());
    }
    for (i, c) in cpus.iter().enumerate() {
        if cpus[..i].contains(c) {
            return Err(format!("CPU {c} is listed twice"));
        }
    }
    Ok(())
}

/// (max − min) / min of `loads`; infinite when the least loaded is idle and another is not.
pub fn spread(loads: &[f64]) -> f64 {
    let max = loads.iter().copied().fold(f64::MIN, f64::max);
    let min = loads.iter().copied().fold(f64::MAX, f64::min);
    if loads.is_empty() || max <= 0.0 {
        0.0
    } else if min <= 0.0 {
        f64::INFINITY
    } else {
        (max - min) / min
    }
}

impl RssPolicy {
    pub fn new(engines: Vec<Engine>, vms: Vec<Vm>, params: Params) -> RssPolicy {
        let bucket_moved = engines.iter().map(|e| vec![None; e.table.len()]).collect();
        let stuck = vec![false; engines.len()];
        RssPolicy {
            rebalancing: vec![false; engines.len()],
            engines,
            vms,
            params,
            bucket_moved,
            stuck,
            smoothed: None,
        }
    }

    /// Packets per second of the VMs placed in engine `e`.
    pub fn engine_pps(&self, e: usize, loads: &Loads) -> f64 {
        self.vms
            .iter()
            .enumerate()
            .filter(|(_, v)| v.placement == Placement::Engine(e))
            .map(|(i, _)| loads.vm_pps.get(i).copied().unwrap_or(0.0))
            .sum()
    }

    /// Mean kernel-thread busy fraction of engine `e`'s CPUs.
    pub fn engine_busy(&self, e: usize, loads: &Loads) -> f64 {
        let cpus = &self.engines[e].cpus;
        let sum: f64 = cpus
            .iter()
            .map(|&c| loads.cpu_busy.get(c as usize).copied().unwrap_or(0.0))
            .sum();
        sum / cpus.len().max(1) as f64
    }

    /// Per-CPU load of engine `e`'s CPUs (same order as `cpus`), from its bucket loads.
    pub fn cpu_loads(&self, e: usize, loads: &Loads) -> Vec<f64> {
        let engine = &self.engines[e];
        let buckets = loads.bucket_pps.get(e);
        engine
            .cpus
            .iter()
            .map(|cpu| {
                engine
                    .table
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| *c == cpu)
                    .map(|(b, _)| buckets.and_then(|l| l.get(b)).copied().unwrap_or(0.0))
                    .sum()
            })
            .collect()
    }

    fn occupied(&self, e: usize) -> bool {
        self.vms.iter().any(|v| v.placement == Placement::Engine(e))
    }

    fn dwell_ok(&self, vm: usize, period: u64) -> bool {
        self.vms[vm]
            .last_move
            .is_none_or(|p| period.saturating_sub(p) >= self.params.min_dwell_periods)
    }

    fn movable(&self, vm: usize, period: u64) -> bool {
        !self.vms[vm].pinned && self.dwell_ok(vm, period)
    }

    /// The shared engine (other than `except`) that `pps` more load fits best, if any: it
    /// must stay under `fill` × the packet threshold and have CPUs under `fill` × the busy
    /// threshold.
    fn best_shared(&self, pps: f64, except: Option<usize>, loads: &Loads) -> Option<usize> {
        let limit = self.params.engine_high_pps_per_cpu * self.params.fill;
        let busy_limit = self.params.engine_high_busy * self.params.fill;
        self.engines
            .iter()
            .enumerate()
            .filter(|(e, eng)| eng.kind == EngineKind::Shared && !eng.retired && Some(*e) != except)
            .filter(|(e, _)| self.engine_busy(*e, loads) <= busy_limit)
            .map(|(e, eng)| (e, (self.engine_pps(e, loads) + pps) / eng.cpus.len() as f64))
            .filter(|(_, after)| *after <= limit)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(e, _)| e)
    }

    fn free_dedicated(&self) -> Option<usize> {
        self.engines
            .iter()
            .enumerate()
            .filter(|(e, eng)| {
                eng.kind == EngineKind::Dedicated && !eng.retired && !self.occupied(*e)
            })
            .max_by_key(|(_, eng)| eng.cpus.len())
            .map(|(e, _)| e)
    }

    fn move_vm(
        &mut self,
        vm: usize,
        to: Placement,
        reason: MoveReason,
        period: u64,
        loads: &Loads,
        trigger_pps: f64,
    ) -> Decision {
        let from = self.vms[vm].placement;
        let v = &mut self.vms[vm];
        v.placement = to;
        v.last_move = Some(period);
        v.low_periods = 0;
        Decision::MoveVm {
            vm,
            from,
            to,
            reason,
            vm_pps: loads.vm_pps.get(vm).copied().unwrap_or(0.0),
            trigger_pps,
            cpu_busy: 0.0,
        }
    }

    /// Places `vm` by hand (`Some`, pinning it there) or hands it back to the policy (`None`).
    /// A dedicated engine takes one VM: placing a second one there is refused.
    pub fn place(
        &mut self,
        vm: usize,
        to: Option<Placement>,
        period: u64,
    ) -> Result<Option<Decision>, String> {
        let Some(to) = to else {
            self.vms[vm].pinned = false;
            return Ok(None);
        };
        if let Placement::Engine(e) = to {
            let engine = self
                .engines
                .get(e)
                .filter(|eng| !eng.retired)
                .ok_or_else(|| format!("no engine #{e}"))?;
            if engine.kind == EngineKind::Dedicated
                && self
                    .vms
                    .iter()
                    .enumerate()
                    .any(|(i, v)| i != vm && v.placement == to)
            {
                return Err(format!(
                    "dedicated engine {} already serves another VM",
                    engine.name
                ));
            }
        }
        self.vms[vm].pinned = true;
        if self.vms[vm].placement == to {
            return Ok(None);
        }
        Ok(Some(self.move_vm(
            vm,
            to,
            MoveReason::Manual,
            period,
            &Loads::default(),
            0.0,
        )))
    }

    /// The engines not retired.
    pub fn active_engines(&self) -> impl Iterator<Item = &Engine> {
        self.engines.iter().filter(|e| !e.retired)
    }

    /// The engine named `name`, unless retired.
    pub fn engine_index(&self, name: &str) -> Option<usize> {
        self.engines
            .iter()
            .position(|e| e.name == name && !e.retired)
    }

    /// Gives engine `e` a new CPU set; its table is dealt over the new CPUs with as few
    /// buckets moved as possible (see [`reshare`]).
    pub fn set_cpus(
        &mut self,
        e: usize,
        cpus: Vec<u32>,
        period: u64,
    ) -> Result<Vec<Decision>, String> {
        check_cpus(&cpus)?;
        let engine = self
            .engines
            .get_mut(e)
            .filter(|eng| !eng.retired)
            .ok_or_else(|| format!("no engine #{e}"))?;
        let table = reshare(&engine.table, &cpus);
        let mut out = Vec::new();
        for (k, (&old, &new)) in engine.table.iter().zip(&table).enumerate() {
            if old != new {
                out.push(Decision::MoveBucket {
                    engine: e,
                    bucket: k,
                    cause: BucketCause::CpuSetChanged,
                    from_cpu: old,
                    to_cpu: new,
                    bucket_pps: 0.0,
                    from_load: 0.0,
                    to_load: 0.0,
                });
                self.bucket_moved[e][k] = Some(period);
            }
        }
        engine.cpus = cpus;
        engine.table = table;
        self.rebalancing[e] = false;
        Ok(out)
    }

    /// Adds an engine, in the first retired engine's place or after the others; returns its
    /// index. At most `max_engines` indices exist.
    pub fn add_engine(&mut self, engine: Engine, max_engines: usize) -> Result<usize, String> {
        check_cpus(&engine.cpus)?;
        if self.engine_index(&engine.name).is_some() {
            return Err(format!("an engine named {:?} exists", engine.name));
        }
        let size = engine.table.len();
        let e = match self.engines.iter().position(|e| e.retired) {
            Some(e) => {
                self.engines[e] = engine;
                e
            }
            None if self.engines.len() < max_engines => {
                self.engines.push(engine);
                self.stuck.push(false);
                self.rebalancing.push(false);
                self.bucket_moved.push(Vec::new());
                self.engines.len() - 1
            }
            None => {
                return Err(format!(
                    "{max_engines} engines exist; at most {max_engines} are supported"
                ));
            }
        };
        self.bucket_moved[e] = vec![None; size];
        self.stuck[e] = false;
        self.rebalancing[e] = false;
        Ok(e)
    }

    /// Removes engine `e`: its VMs go back to no-RSS. Refused while a VM is pinned to it.
    pub fn remove_engine(&mut self, e: usize, period: u64) -> Result<Vec<Decision>, String> {
        let name = match self.engines.get(e) {
            Some(eng) if !eng.retired => eng.name.clone(),
            _ => return Err(format!("no engine #{e}")),
        };
        let pinned: Vec<&str> = self
            .vms
            .iter()
            .filter(|v| v.pinned && v.placement == Placement::Engine(e))
            .map(|v| v.name.as_str())
            .collect();
        if !pinned.is_empty() {
            return Err(format!(
                "engine {name:?} has VMs placed on it by hand ({}); place them elsewhere first",
                pinned.join(", ")
            ));
        }
        let loads = self.smoothed.clone().unwrap_or_default();
        let out = (0..self.vms.len())
            .filter(|&i| self.vms[i].placement == Placement::Engine(e))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|i| {
                self.move_vm(
                    i,
                    Placement::NoRss,
                    MoveReason::EngineRemoved,
                    period,
                    &loads,
                    0.0,
                )
            })
            .collect();
        self.engines[e].retired = true;
        Ok(out)
    }

    /// Folds a period's measurements into the smoothed loads.
    fn smooth(&mut self, measured: &Loads) -> Loads {
        let a = self.params.smoothing.clamp(0.0, 1.0);
        let mix = |old: &[f64], new: &[f64]| -> Vec<f64> {
            new.iter()
                .enumerate()
                .map(|(i, n)| old.get(i).map_or(*n, |o| a * n + (1.0 - a) * o))
                .collect()
        };
        let next = match &self.smoothed {
            Some(old) => Loads {
                vm_pps: mix(&old.vm_pps, &measured.vm_pps),
                cpu_busy: mix(&old.cpu_busy, &measured.cpu_busy),
                bucket_pps: measured
                    .bucket_pps
                    .iter()
                    .enumerate()
                    .map(|(e, new)| mix(old.bucket_pps.get(e).map_or(&[][..], |v| v), new))
                    .collect(),
            },
            None => measured.clone(),
        };
        self.smoothed = Some(next.clone());
        next
    }

    /// The loads the policy last decided on.
    pub fn smoothed(&self) -> Option<&Loads> {
        self.smoothed.as_ref()
    }

    /// One period: decides on the measured loads (smoothed), applies the decisions to this
    /// policy's state, returns them.
    pub fn step(&mut self, period: u64, measured: &Loads) -> Vec<Decision> {
        let smoothed = self.smooth(measured);
        let loads = &smoothed;
        let mut out = Vec::new();
        let pps = |i: usize| loads.vm_pps.get(i).copied().unwrap_or(0.0);
        let mut touched = vec![false; self.engines.len()];
        let mark = |p: Placement, touched: &mut Vec<bool>| {
            if let Placement::Engine(e) = p {
                touched[e] = true;
            }
        };

        // 1. Quiet VMs go back to no-RSS.
        for i in 0..self.vms.len() {
            if self.vms[i].placement == Placement::NoRss || self.vms[i].pinned {
                self.vms[i].low_periods = 0;
                continue;
            }
            if pps(i) < self.params.vm_low_pps {
                self.vms[i].low_periods += 1;
            } else {
                self.vms[i].low_periods = 0;
            }
            if self.vms[i].low_periods >= self.params.low_periods && self.dwell_ok(i, period) {
                mark(self.vms[i].placement, &mut touched);
                let d = self.move_vm(
                    i,
                    Placement::NoRss,
                    MoveReason::Underloaded,
                    period,
                    loads,
                    pps(i),
                );
                out.push(d);
            }
        }

        // 2. Overloaded shared engines send one VM away each.
        for e in 0..self.engines.len() {
            if self.engines[e].kind != EngineKind::Shared {
                continue;
            }
            let per_cpu = self.engine_pps(e, loads) / self.engines[e].cpus.len() as f64;
            let busy = self.engine_busy(e, loads);
            let reason = if per_cpu > self.params.engine_high_pps_per_cpu {
                MoveReason::EngineOverloaded
            } else if busy > self.params.engine_high_busy && per_cpu > 0.0 {
                MoveReason::EngineCpusBusy
            } else {
                self.stuck[e] = false;
                continue;
            };
            let mut candidates: Vec<usize> = (0..self.vms.len())
                .filter(|&i| {
                    self.vms[i].placement == Placement::Engine(e) && self.movable(i, period)
                })
                .filter(|&i| pps(i) > 0.0)
                .collect();
            match self.params.selection {
                Selection::Load => candidates.sort_by(|&a, &b| pps(b).total_cmp(&pps(a))),
                Selection::Priority => candidates.sort_by(|&a, &b| {
                    let (va, vb) = (&self.vms[a], &self.vms[b]);
                    vb.prefer_dedicated
                        .cmp(&va.prefer_dedicated)
                        .then(vb.priority.cmp(&va.priority))
                        .then(pps(b).total_cmp(&pps(a)))
                }),
            }
            let dest = candidates.iter().find_map(|&i| {
                self.free_dedicated()
                    .or_else(|| self.best_shared(pps(i), Some(e), loads))
                    .map(|d| (i, d))
            });
            match dest {
                Some((i, d)) => {
                    self.stuck[e] = false;
                    touched[e] = true;
                    touched[d] = true;
                    let mut dec =
                        self.move_vm(i, Placement::Engine(d), reason, period, loads, per_cpu);
                    if let Decision::MoveVm { cpu_busy, .. } = &mut dec {
                        *cpu_busy = busy;
                    }
                    out.push(dec);
                }
                None if !self.stuck[e] => {
                    self.stuck[e] = true;
                    out.push(Decision::NoDestination {
                        engine: e,
                        load_per_cpu: per_cpu,
                    });
                }
                None => {}
            }
        }

        // 3. Busy no-RSS VMs join a shared engine.
        for i in 0..self.vms.len() {
            if self.vms[i].placement != Placement::NoRss
                || !self.movable(i, period)
                || pps(i) <= self.params.no_rss_high_pps
            {
                continue;
            }
            if let Some(d) = self.best_shared(pps(i), None, loads) {
                touched[d] = true;
                let dec = self.move_vm(
                    i,
                    Placement::Engine(d),
                    MoveReason::NoRssOverloaded,
                    period,
                    loads,
                    pps(i),
                );
                out.push(dec);
            }
        }

        // 4. Even out each settled engine's CPUs.
        for (e, settled) in touched.iter().map(|t| !t).enumerate() {
            if settled {
                self.rebalance(e, period, loads, &mut out);
            }
        }
        out
    }

    fn rebalance(&mut self, e: usize, period: u64, loads: &Loads, out: &mut Vec<Decision>) {
        let Some(bucket_pps) = loads.bucket_pps.get(e) else {
            return;
        };
        if self.engines[e].cpus.len() < 2 || self.engines[e].retired {
            return;
        }
        let mut cpu_load = self.cpu_loads(e, loads);
        let busiest = cpu_load.iter().copied().fold(0.0, f64::max);
        // Hysteresis against measurement noise: start over `rebalance_above`, then keep going
        // (across periods) down to `rebalance_to`.
        let tolerance = if self.rebalancing[e] {
            self.params.rebalance_to
        } else {
            self.params.rebalance_above
        };
        if busiest < self.params.rebalance_min_pps || spread(&cpu_load) <= tolerance {
            self.rebalancing[e] = false;
            return;
        }
        let dwell = self.params.bucket_dwell_periods;
        // A move must lower the pair's maximum by a real share of a CPU's load, or measurement
        // noise would keep buckets moving in steady state.
        let min_gain =
            self.params.rebalance_to / 2.0 * cpu_load.iter().sum::<f64>() / cpu_load.len() as f64;
        // CPUs with nothing they can give (one loaded bucket, or none that fits the gap):
        // skipped, so the CPUs behind an unsplittable elephant still get balanced.
        let mut exhausted = vec![false; cpu_load.len()];
        let mut moves = 0;
        while moves < self.params.max_bucket_moves {
            let engine = &self.engines[e];
            let Some(a) = (0..cpu_load.len())
                .filter(|&i| !exhausted[i])
                .max_by(|&x, &y| cpu_load[x].total_cmp(&cpu_load[y]))
            else {
                break;
            };
            let (b, _) = cpu_load
                .iter()
                .enumerate()
                .min_by(|x, y| x.1.total_cmp(y.1))
                .expect("engine has CPUs");
            let gap = cpu_load[a] - cpu_load[b];
            // The most loaded CPU still in play is close enough to the least loaded.
            let tolerance = if moves == 0 {
                tolerance
            } else {
                self.params.rebalance_to
            };
            if a == b || gap <= tolerance * cpu_load[b].max(1.0) {
                break;
            }
            let (cpu_a, cpu_b) = (engine.cpus[a], engine.cpus[b]);
            let settled = |k: usize| {
                self.bucket_moved[e][k].is_none_or(|p| period.saturating_sub(p) >= dwell)
            };
            let on = |cpu: u32| -> Vec<usize> {
                (0..engine.table.len())
                    .filter(|&k| engine.table[k] == cpu && settled(k))
                    .filter(|&k| bucket_pps.get(k).copied().unwrap_or(0.0) > 0.0)
                    .collect()
            };
            // Shifting load `x` from A to B leaves the pair's maximum at max(A − x, B + x),
            // lower than A exactly when 0 < x < gap; the best shift is gap / 2. A shift must
            // gain at least `min_gain` on both sides of that window.
            let fits = |x: f64| x.min(gap - x) >= min_gain;
            let closeness = |x: f64| (x - gap / 2.0).abs();
            let loaded_on_a = (0..engine.table.len())
                .filter(|&k| {
                    engine.table[k] == cpu_a && bucket_pps.get(k).copied().unwrap_or(0.0) > 0.0
                })
                .count();
            let from_a = if loaded_on_a < 2 {
                Vec::new() // a CPU whose load is one bucket is not split
            } else {
                on(cpu_a)
            };
            // One bucket from A to B...
            let single = from_a
                .iter()
                .copied()
                .filter(|&k| fits(bucket_pps[k]))
                .min_by(|&x, &y| closeness(bucket_pps[x]).total_cmp(&closeness(bucket_pps[y])));
            // ...or, when every bucket of A is bigger than the gap (few buckets per CPU), a
            // swap with a smaller bucket of B: the shift is the difference of the two.
            let swap = if single.is_none() && moves + 2 <= self.params.max_bucket_moves {
                let from_b = on(cpu_b);
                from_a
                    .iter()
                    .flat_map(|&x| from_b.iter().map(move |&y| (x, y)))
                    .filter(|&(x, y)| fits(bucket_pps[x] - bucket_pps[y]))
                    .min_by(|&(x1, y1), &(x2, y2)| {
                        closeness(bucket_pps[x1] - bucket_pps[y1])
                            .total_cmp(&closeness(bucket_pps[x2] - bucket_pps[y2]))
                    })
            } else {
                None
            };
            let shifts: Vec<(usize, usize, usize)> = match (single, swap) {
                (Some(k), _) => vec![(k, a, b)],
                (None, Some((x, y))) => vec![(x, a, b), (y, b, a)],
                (None, None) => {
                    exhausted[a] = true;
                    continue;
                }
            };
            for (k, from, to) in shifts {
                moves += 1;
                out.push(Decision::MoveBucket {
                    engine: e,
                    bucket: k,
                    cause: BucketCause::Imbalance,
                    from_cpu: self.engines[e].cpus[from],
                    to_cpu: self.engines[e].cpus[to],
                    bucket_pps: bucket_pps[k],
                    from_load: cpu_load[from],
                    to_load: cpu_load[to],
                });
                self.engines[e].table[k] = self.engines[e].cpus[to];
                self.bucket_moved[e][k] = Some(period);
                cpu_load[from] -= bucket_pps[k];
                cpu_load[to] += bucket_pps[k];
            }
        }
        // Nothing could move: stop until the spread crosses `rebalance_above` again.
        self.rebalancing[e] = moves > 0;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn params() -> Params {
        Params {
            engine_high_pps_per_cpu: 1000.0,
            fill: 0.8,
            no_rss_high_pps: 500.0,
            vm_low_pps: 100.0,
            low_periods: 3,
            min_dwell_periods: 2,
            rebalance_min_pps: 10.0,
            smoothing: 1.0,
            ..Params::default()
        }
    }

    fn engines() -> Vec<Engine> {
        vec![
            Engine::new("shared-a", EngineKind::Shared, vec![0, 1], 8),
            Engine::new("shared-b", EngineKind::Shared, vec![2, 3], 8),
            Engine::new("dedicated", EngineKind::Dedicated, vec![4, 5], 8),
        ]
    }

    fn policy(n: usize) -> RssPolicy {
        RssPolicy::new(
            engines(),
            (0..n).map(|i| Vm::new(&format!("vm{i}"))).collect(),
            params(),
        )
    }

    fn loads(vm_pps: &[f64]) -> Loads {
        Loads {
            vm_pps: vm_pps.to_vec(),
            bucket_pps: vec![vec![0.0; 8]; 3],
            cpu_busy: Vec::new(),
        }
    }

    fn vm_moves(d: &[Decision]) -> Vec<(usize, Placement, Placement, MoveReason)> {
        d.iter()
            .filter_map(|d| match d {
                Decision::MoveVm {
                    vm,
                    from,
                    to,
                    reason,
                    ..
                } => Some((*vm, *from, *to, *reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn busy_no_rss_vm_joins_the_least_loaded_shared_engine() {
        let mut p = policy(2);
        p.vms[1].placement = Placement::Engine(0);
        let d = p.step(10, &loads(&[600.0, 500.0]));
        assert_eq!(
            vm_moves(&d),
            vec![(
                0,
                Placement::NoRss,
                Placement::Engine(1),
                MoveReason::NoRssOverloaded
            )]
        );
        // Under the threshold nothing happens.
        let mut p = policy(1);
        assert!(vm_moves(&p.step(10, &loads(&[499.0]))).is_empty());
    }

    #[test]
    fn overloaded_shared_engine_sends_its_busiest_vm_to_a_free_dedicated_engine() {
        let mut p = policy(3);
        for v in &mut p.vms {
            v.placement = Placement::Engine(0);
        }
        // 2100 pps over 2 CPUs = 1050 per CPU > 1000.
        let d = p.step(10, &loads(&[300.0, 1500.0, 300.0]));
        assert_eq!(
            vm_moves(&d),
            vec![(
                1,
                Placement::Engine(0),
                Placement::Engine(2),
                MoveReason::EngineOverloaded
            )]
        );
        if let Decision::MoveVm { trigger_pps, .. } = &d[0] {
            assert_eq!(*trigger_pps, 1050.0);
        }
    }

    #[test]
    fn without_a_free_dedicated_engine_the_vm_goes_to_another_shared_engine() {
        let mut p = policy(4);
        p.vms[3].placement = Placement::Engine(2); // the dedicated engine is taken
        for v in &mut p.vms[..3] {
            v.placement = Placement::Engine(0);
        }
        let d = p.step(10, &loads(&[300.0, 1500.0, 300.0, 50_000.0]));
        assert_eq!(
            vm_moves(&d),
            vec![(
                1,
                Placement::Engine(0),
                Placement::Engine(1),
                MoveReason::EngineOverloaded
            )]
        );
    }

    #[test]
    fn busy_kernel_threads_overload_a_shared_engine_too() {
        let mut p = policy(2);
        p.vms[0].placement = Placement::Engine(0);
        p.vms[1].placement = Placement::Engine(1);
        // 400 pps per CPU is far under the packet threshold (1000), but CPUs 0 and 1 spend
        // 95 % of their time in kernel threads carrying traffic.
        let mut l = loads(&[800.0, 10.0]);
        l.cpu_busy = vec![0.95, 0.95, 0.1, 0.1, 0.1, 0.1];
        let d = p.step(10, &l);
        let moves = vm_moves(&d);
        assert_eq!(
            moves,
            vec![(
                0,
                Placement::Engine(0),
                Placement::Engine(2),
                MoveReason::EngineCpusBusy
            )]
        );
        assert!(
            d.iter()
                .any(|d| matches!(d, Decision::MoveVm { cpu_busy, .. } if *cpu_busy > 0.9))
        );
        // No free dedicated engine, and the other shared engine's CPUs are busy as well:
        // nowhere to go.
        let mut p = policy(3);
        p.vms[0].placement = Placement::Engine(0);
        p.vms[2].placement = Placement::Engine(2);
        l.cpu_busy = vec![0.95, 0.95, 0.95, 0.95, 0.1, 0.1];
        let l = Loads {
            vm_pps: vec![800.0, 0.0, 10.0],
            ..l
        };
        let d = p.step(10, &l);
        assert!(vm_moves(&d).is_empty(), "{d:?}");
        assert!(matches!(d[..], [Decision::NoDestination { engine: 0, .. }]));
    }

    #[test]
    fn no_destination_is_reported_once_while_it_lasts() {
        let mut p = policy(3);
        p.vms[2].placement = Placement::Engine(2);
        p.vms[0].placement = Placement::Engine(0);
        p.vms[1].placement = Placement::Engine(1);
        // Both shared engines are full: nowhere to go.
        let l = loads(&[2500.0, 2500.0, 10.0]);
        let first = p.step(10, &l);
        assert!(
            first
                .iter()
                .any(|d| matches!(d, Decision::NoDestination { engine: 0, .. }))
        );
        let again = p.step(11, &l);
        assert!(
            !again
                .iter()
                .any(|d| matches!(d, Decision::NoDestination { engine: 0, .. }))
        );
    }

    #[test]
    fn priority_selection_prefers_flagged_then_higher_priority_vms() {
        let mut p = policy(3);
        p.params.selection = Selection::Priority;
        for v in &mut p.vms {
            v.placement = Placement::Engine(0);
        }
        p.vms[0].priority = 5;
        p.vms[2].prefer_dedicated = true;
        let d = p.step(10, &loads(&[800.0, 1000.0, 400.0]));
        assert_eq!(vm_moves(&d)[0].0, 2, "prefer_dedicated first");
        let mut p = policy(3);
        p.params.selection = Selection::Priority;
        for v in &mut p.vms {
            v.placement = Placement::Engine(0);
        }
        p.vms[0].priority = 5;
        let d = p.step(10, &loads(&[800.0, 1000.0, 400.0]));
        assert_eq!(vm_moves(&d)[0].0, 0, "then priority");
    }

    #[test]
    fn quiet_vm_returns_to_no_rss_after_low_periods_and_dwell() {
        let mut p = policy(1);
        p.vms[0].placement = Placement::Engine(0);
        p.vms[0].last_move = Some(9);
        let l = loads(&[50.0]);
        assert!(vm_moves(&p.step(10, &l)).is_empty()); // 1 low period
        assert!(vm_moves(&p.step(11, &l)).is_empty()); // 2
        let d = p.step(12, &l); // 3, dwell 3 ≥ 2
        assert_eq!(
            vm_moves(&d),
            vec![(
                0,
                Placement::Engine(0),
                Placement::NoRss,
                MoveReason::Underloaded
            )]
        );
        // A busy period resets the count.
        let mut p = policy(1);
        p.vms[0].placement = Placement::Engine(0);
        p.step(10, &l);
        p.step(11, &l);
        p.step(12, &loads(&[300.0]));
        assert!(vm_moves(&p.step(13, &l)).is_empty());
    }

    #[test]
    fn dwell_time_blocks_immediate_moves_back() {
        let mut p = policy(1);
        let d = p.step(10, &loads(&[600.0]));
        assert_eq!(vm_moves(&d).len(), 1);
        // Even if it were overloaded there at once, it stays for min_dwell_periods.
        p.vms[0].low_periods = 100;
        assert!(vm_moves(&p.step(11, &loads(&[0.0]))).is_empty());
    }

    #[test]
    fn pinned_vms_are_never_moved() {
        let mut p = policy(2);
        p.place(0, Some(Placement::NoRss), 1).unwrap();
        assert!(vm_moves(&p.step(10, &loads(&[600.0, 0.0]))).is_empty());
        p.place(0, None, 11).unwrap();
        assert_eq!(vm_moves(&p.step(12, &loads(&[600.0, 0.0]))).len(), 1);
    }

    #[test]
    fn manual_placement_refuses_a_second_vm_on_a_dedicated_engine() {
        let mut p = policy(2);
        assert!(p.place(0, Some(Placement::Engine(2)), 1).unwrap().is_some());
        assert!(p.place(1, Some(Placement::Engine(2)), 1).is_err());
    }

    fn bucket_loads(engine0: Vec<f64>) -> Loads {
        Loads {
            vm_pps: vec![0.0],
            bucket_pps: vec![engine0, vec![0.0; 8], vec![0.0; 8]],
            cpu_busy: Vec::new(),
        }
    }

    #[test]
    fn buckets_move_from_the_busiest_cpu_until_even() {
        let mut p = policy(1);
        p.vms[0].placement = Placement::Engine(0);
        p.vms[0].last_move = Some(0);
        // Table: even buckets on CPU 0, odd on CPU 1. CPU 0 carries 400, CPU 1 carries 40.
        let l = bucket_loads(vec![100.0, 10.0, 100.0, 10.0, 100.0, 10.0, 100.0, 10.0]);
        let d = p.step(10, &l);
        let moves: Vec<_> = d
            .iter()
            .filter(|d| matches!(d, Decision::MoveBucket { .. }))
            .collect();
        assert!(!moves.is_empty() && moves.len() <= 4);
        let loads_after = p.cpu_loads(0, &l);
        assert!(spread(&loads_after) <= 0.25, "{loads_after:?}");
        for k in 0..8 {
            assert!(p.engines[0].cpus.contains(&p.engines[0].table[k]));
        }
    }

    #[test]
    fn balanced_engines_and_single_hot_buckets_stay_put() {
        let mut p = policy(1);
        let even = bucket_loads(vec![50.0; 8]);
        assert!(p.step(10, &even).is_empty());
        // One elephant bucket on CPU 0 and nothing else there: splitting is impossible.
        let hot = bucket_loads(vec![1000.0, 10.0, 0.0, 10.0, 0.0, 10.0, 0.0, 10.0]);
        assert!(
            p.step(11, &hot)
                .iter()
                .all(|d| !matches!(d, Decision::MoveBucket { .. }))
        );
    }

    fn bucket_moves(d: &[Decision]) -> Vec<(usize, u32, u32)> {
        d.iter()
            .filter_map(|d| match d {
                Decision::MoveBucket {
                    bucket,
                    from_cpu,
                    to_cpu,
                    ..
                } => Some((*bucket, *from_cpu, *to_cpu)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn buckets_bigger_than_the_gap_are_swapped() {
        let mut p = policy(1);
        // CPU 0 carries 100 + 90, CPU 1 carries 70 + 55: every bucket of CPU 0 is bigger
        // than the gap (65), so no single move helps; a swap shifting ~30 does.
        let l = bucket_loads(vec![100.0, 70.0, 90.0, 55.0, 0.0, 0.0, 0.0, 0.0]);
        let moves = bucket_moves(&p.step(10, &l));
        assert_eq!(moves.len(), 2, "{moves:?}");
        assert!(moves.iter().any(|&(_, from, to)| (from, to) == (0, 1)));
        assert!(moves.iter().any(|&(_, from, to)| (from, to) == (1, 0)));
        let after = p.cpu_loads(0, &l);
        assert!(spread(&after) <= 0.05, "{after:?}");
        // A swap needs two moves of the budget.
        let mut tight = policy(1);
        tight.params.max_bucket_moves = 1;
        assert!(bucket_moves(&tight.step(10, &l)).is_empty());
    }

    #[test]
    fn rebalancing_starts_above_the_high_mark_and_goes_on_down_to_the_low_mark() {
        let mut p = policy(1);
        p.params.max_bucket_moves = 1;
        // CPU 0 carries 50 + 2 + 2 + 2 = 56, CPU 1 carries 4 × 12 = 48: spread 0.17.
        let l = bucket_loads(vec![50.0, 12.0, 2.0, 12.0, 2.0, 12.0, 2.0, 12.0]);
        assert_eq!(bucket_moves(&p.step(10, &l)).len(), 1);
        // 54 against 50: spread 0.08, under `rebalance_above` (0.10) but over
        // `rebalance_to` (0.05), so the next period goes on.
        let after_one = p.cpu_loads(0, &l);
        assert!(
            spread(&after_one) > 0.05 && spread(&after_one) <= 0.10,
            "{after_one:?}"
        );
        let mut fresh = policy(1);
        fresh.engines[0].table = p.engines[0].table.clone();
        assert!(bucket_moves(&fresh.step(10, &l)).is_empty());
        assert_eq!(bucket_moves(&p.step(11, &l)).len(), 1);
        assert!(spread(&p.cpu_loads(0, &l)) <= 0.05);
        // Balanced: it stops, and stays stopped.
        assert!(bucket_moves(&p.step(12, &l)).is_empty());
    }

    #[test]
    fn reshare_moves_only_what_it_must() {
        // 0,1,0,1,... over {0, 1} → {0, 1, 2}: CPU 2 takes a third, CPUs 0 and 1 keep theirs.
        let table: Vec<u32> = (0..12).map(|b| b % 2).collect();
        let out = reshare(&table, &[0, 1, 2]);
        let count = |c: u32| out.iter().filter(|&&x| x == c).count();
        assert_eq!((count(0), count(1), count(2)), (4, 4, 4));
        let moved = table.iter().zip(&out).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 4);
        // Dropping CPU 1: only its buckets move.
        let out = reshare(&table, &[0]);
        assert!(out.iter().all(|&c| c == 0));
        // Same set: nothing moves.
        assert_eq!(reshare(&table, &[1, 0]), table);
    }

    #[test]
    fn engines_change_at_runtime() {
        let mut p = policy(2);
        // A new engine goes after the others; its name must be new.
        let e = p
            .add_engine(Engine::new("extra", EngineKind::Dedicated, vec![6], 8), 64)
            .unwrap();
        assert_eq!(e, 3);
        assert!(
            p.add_engine(Engine::new("extra", EngineKind::Shared, vec![6], 8), 64)
                .is_err()
        );
        assert!(
            p.add_engine(Engine::new("full", EngineKind::Shared, vec![6], 8), 4)
                .unwrap_err()
                .contains("at most 4")
        );
        // New CPUs: buckets move, each reported.
        let d = p.set_cpus(e, vec![6, 7], 1).unwrap();
        assert_eq!(bucket_moves(&d).len(), 4);
        assert!(d.iter().all(|d| matches!(
            d,
            Decision::MoveBucket {
                cause: BucketCause::CpuSetChanged,
                ..
            }
        )));
        assert!(p.set_cpus(e, vec![], 2).is_err());
        assert!(p.set_cpus(e, vec![6, 6], 2).is_err());
        // Removal: refused while a VM is pinned there; otherwise its VMs go to no-RSS.
        p.place(0, Some(Placement::Engine(e)), 3).unwrap();
        assert!(p.remove_engine(e, 4).unwrap_err().contains("vm0"));
        p.place(0, None, 5).unwrap();
        let d = p.remove_engine(e, 6).unwrap();
        assert_eq!(
            vm_moves(&d),
            vec![(
                0,
                Placement::Engine(e),
                Placement::NoRss,
                MoveReason::EngineRemoved
            )]
        );
        assert_eq!(p.engine_index("extra"), None);
        // A retired engine is never a destination, and its place is reused.
        assert!(p.free_dedicated().is_some_and(|d| d != e));
        assert!(p.place(1, Some(Placement::Engine(e)), 7).is_err());
        let again = p
            .add_engine(Engine::new("again", EngineKind::Shared, vec![1], 8), 64)
            .unwrap();
        assert_eq!(again, e);
    }

    #[test]
    fn smoothing_damps_a_one_period_spike() {
        let mut p = policy(1);
        p.params.smoothing = 0.25;
        p.step(1, &loads(&[100.0]));
        // One period at 1000 pps reads as 325: not over the no-RSS threshold of 500.
        assert!(vm_moves(&p.step(2, &loads(&[1000.0]))).is_empty());
        assert_eq!(p.smoothed().unwrap().vm_pps[0], 325.0);
    }

    proptest! {
        #[test]
        fn reshare_deals_evenly_and_keeps_what_fits(
            table in proptest::collection::vec(0u32..8, 1..256),
            cpus in proptest::collection::btree_set(0u32..8, 1..8),
        ) {
            let cpus: Vec<u32> = cpus.into_iter().collect();
            let out = reshare(&table, &cpus);
            prop_assert_eq!(out.len(), table.len());
            let counts: Vec<usize> = cpus.iter().map(|c| out.iter().filter(|&&x| x == *c).count()).collect();
            // Only the new CPUs, evenly (within one bucket).
            prop_assert_eq!(counts.iter().sum::<usize>(), table.len());
            prop_assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
            // As few moves as possible: a bucket moves only if its CPU left the set or held
            // more than its share.
            let share = table.len().div_ceil(cpus.len());
            let must_move: usize = cpus
                .iter()
                .map(|c| table.iter().filter(|&&x| x == *c).count().saturating_sub(share))
                .sum::<usize>()
                + table.iter().filter(|c| !cpus.contains(c)).count();
            let moved = table.iter().zip(&out).filter(|(a, b)| a != b).count();
            prop_assert!(moved >= must_move);
            let floor = table.len() / cpus.len();
            let may_move: usize = cpus
                .iter()
                .map(|c| table.iter().filter(|&&x| x == *c).count().saturating_sub(floor))
                .sum::<usize>()
                + table.iter().filter(|c| !cpus.contains(c)).count();
            prop_assert!(moved <= may_move);
        }

        #[test]
        fn invariants_hold_under_random_loads(
            steps in proptest::collection::vec(
                (proptest::collection::vec(0.0f64..3000.0, 5), proptest::collection::vec(0.0f64..500.0, 8)),
                1..40,
            ),
        ) {
            let mut p = policy(5);
            for (period, (vm_pps, buckets)) in steps.into_iter().enumerate() {
                let l = Loads { vm_pps, bucket_pps: vec![buckets.clone(), buckets.clone(), buckets], cpu_busy: Vec::new() };
                p.step(period as u64, &l);
                // A dedicated engine serves at most one VM.
                for (e, eng) in p.engines.iter().enumerate() {
                    if eng.kind == EngineKind::Dedicated {
                        prop_assert!(p.vms.iter().filter(|v| v.placement == Placement::Engine(e)).count() <= 1);
                    }
                    // Tables only name their engine's CPUs.
                    for cpu in &eng.table {
                        prop_assert!(eng.cpus.contains(cpu));
                    }
                }
                // Every VM is in exactly one state, naming an engine that exists.
                for v in &p.vms {
                    if let Placement::Engine(e) = v.placement {
                        prop_assert!(e < p.engines.len());
                    }
                }
            }
        }
    }
}
