//! The RSS runtime: sets up steering from the `[rss]` configuration (adopting what a previous
//! daemon left in the pinned maps), measures loads every period, runs the policy, and writes
//! its decisions into the dataplane.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use tracing::{debug, info, warn};
use xnic_common::{
    maps::Counter,
    rss::{EngineEntry, MAX_DRAIN_NS, MAX_ENGINES, NO_ENGINE, RssConfig, SteerCounter, VmRss},
};

use super::state::Vm;
use crate::{
    api::types::{RssBucketView, RssCpuView, RssEngineView, RssEvent, RssStatusView, RssVmView},
    config::{EngineConfig, HashKind, RssSection, check_cpu_set, check_engine},
    dataplane::Dataplane,
    monitor::cpu::{CpuLoad, CpuMonitor, CpuTimes, loads as cpu_loads},
    policy::rss::{
        BucketCause, Decision, Engine, EngineKind, Loads, MoveReason, Placement, RssPolicy,
    },
};

/// Events kept for `xnic rss events`.
const EVENT_HISTORY: usize = 1000;

/// How long a CPU-map queue no engine uses any more is kept before it is removed: far longer
/// than any flow waits for its old CPU to drain (`MAX_DRAIN_NS`), so nothing is still steered
/// there when it goes.
const QUEUE_RETIRE_DELAY: std::time::Duration = std::time::Duration::from_nanos(MAX_DRAIN_NS * 200);

/// One reading of the steering counters.
struct Sample {
    at: Instant,
    /// Per VM (daemon order): frames delivered, summed over CPUs.
    vm: Vec<u64>,
    /// Per VM, per CPU: frames delivered.
    vm_cpu: Vec<Vec<u64>>,
    /// Per engine, per bucket: frames, summed over CPUs.
    bucket: Vec<Vec<u64>>,
    cpu: CpuTimes,
}

pub struct RssRuntime {
    pub config: RssSection,
    pub policy: RssPolicy,
    period: u64,
    last: Option<Sample>,
    monitor: CpuMonitor,
    /// Loads of the last period.
    loads: Loads,
    cpu_pps: Vec<f64>,
    cpu_busy: Vec<CpuLoad>,
    events: VecDeque<RssEvent>,
    event_counts: BTreeMap<String, u64>,
    next_event: u64,
    nr_cpus: usize,
    /// Since when CPU-map queues may be left that no engine uses any more.
    queues_to_retire: Option<Instant>,
}

fn placement_name(p: Placement, engines: &[Engine]) -> String {
    match p {
        Placement::NoRss => "no-rss".into(),
        Placement::Engine(e) => {
            let eng = &engines[e];
            let kind = match eng.kind {
                EngineKind::Shared => "shared",
                EngineKind::Dedicated => "dedicated",
            };
            format!("{kind}:{}", eng.name)
        }
    }
}

/// The CPUs that exist on this host (from /sys/devices/system/cpu/online, like `0-3,6`).
pub fn online_cpus() -> anyhow::Result<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .context("cannot read /sys/devices/system/cpu/online")?;
    crate::config::parse_cpu_list(&text).map_err(anyhow::Error::msg)
}

/// `Err` names the first of `cpus` that is not online, with the online ones.
fn check_online(cpus: &[u32]) -> Result<(), String> {
    let online = online_cpus().map_err(|e| format!("{e:#}"))?;
    match cpus.iter().find(|c| !online.contains(c)) {
        None => Ok(()),
        Some(cpu) => Err(format!(
            "CPU {cpu} is not online on this host (online: {})",
            online
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )),
    }
}

/// Refuses CPUs this host does not have.
pub fn check_cpus(rss: &RssSection) -> anyhow::Result<()> {
    check_online(&[rss.default_cpu]).map_err(|e| anyhow::anyhow!("rss.default_cpu: {e}"))?;
    for (i, e) in rss.engines.iter().enumerate() {
        check_online(&e.cpus).map_err(|m| anyhow::anyhow!("rss.engine[{i}] ({}): {m}", e.name))?;
    }
    Ok(())
}

impl RssRuntime {
    /// Sets steering up, keeping what the pinned maps already say where it still fits the
    /// configuration (tables, VM placements, the hash seed), so a restart moves no flow.
    pub fn start(rss: &RssSection, vms: &[Vm], dp: &mut Dataplane) -> anyhow::Result<RssRuntime> {
        let size = rss.table_size;
        let mut engines = Vec::new();
        for (e, ec) in rss.engines.iter().enumerate() {
            let tag = config_tag(&ec.name, ec.kind, &ec.cpus, size);
            let pinned = dp.table(e as u32, size)?;
            let same = dp.engine(e as u32)?.config_tag == tag;
            let engine = if same && pinned.iter().all(|c| ec.cpus.contains(c)) {
                Engine {
                    name: ec.name.clone(),
                    kind: ec.kind,
                    cpus: ec.cpus.clone(),
                    table: pinned,
                    retired: false,
                }
            } else {
                let fresh = Engine::new(&ec.name, ec.kind, ec.cpus.clone(), size as usize);
                for (b, cpu) in fresh.table.iter().enumerate() {
                    dp.set_bucket(e as u32, b as u32, *cpu)?;
                }
                dp.reset_bucket_counters(e as u32)?;
                fresh
            };
            dp.set_engine(
                e as u32,
                EngineEntry {
                    table_mask: size - 1,
                    config_tag: tag,
                },
            )?;
            engines.push(engine);
        }

        // Engines a previous daemon added at runtime are gone with it.
        for e in rss.engines.len() as u32..MAX_ENGINES {
            if dp.engine(e)? != EngineEntry::default() {
                dp.set_engine(e, EngineEntry::default())?;
            }
        }

        // Placements: configuration pins win; otherwise what the dataplane says, if valid.
        let mut policy_vms = Vec::new();
        for vm in vms {
            let mut v = crate::policy::rss::Vm::new(&vm.name);
            v.priority = vm.priority;
            v.prefer_dedicated = vm.prefer_dedicated;
            v.placement = match vm.rss_hint.as_str() {
                "none" => {
                    v.pinned = true;
                    Placement::NoRss
                }
                "auto" => {
                    let e = dp.vm_rss(vm.slot)?.engine;
                    if (e as usize) < engines.len() {
                        Placement::Engine(e as usize)
                    } else {
                        Placement::NoRss
                    }
                }
                name => {
                    v.pinned = true;
                    let e = engines
                        .iter()
                        .position(|e| e.name == name)
                        .context("configuration names an unknown engine")?;
                    Placement::Engine(e)
                }
            };
            policy_vms.push(v);
        }
        // A dedicated engine serves one VM: extra adopted ones fall back to no-RSS.
        for (e, engine) in engines.iter().enumerate() {
            if engine.kind != EngineKind::Dedicated {
                continue;
            }
            let mut users: Vec<usize> = (0..policy_vms.len())
                .filter(|&i| policy_vms[i].placement == Placement::Engine(e))
                .collect();
            users.sort_by_key(|&i| !policy_vms[i].pinned);
            for &i in users.iter().skip(1) {
                policy_vms[i].placement = Placement::NoRss;
            }
        }
        for (vm, p) in vms.iter().zip(&policy_vms) {
            dp.set_vm_rss(vm.slot, vm_rss(p.placement))?;
        }

        // CPU-map queues: every engine CPU and the default CPU. Queues a previous daemon left
        // keep running (replacing one would restart its queue mid-flow); those no engine uses
        // any more go once flows have left them.
        let mut wanted: Vec<u32> = rss.engines.iter().flat_map(|e| e.cpus.clone()).collect();
        wanted.push(rss.default_cpu);
        wanted.sort_unstable();
        wanted.dedup();
        let existing = dp.cpu_queues()?;
        for cpu in &wanted {
            if !existing.iter().any(|(c, prog)| c == cpu && prog.is_some()) {
                dp.set_cpu_queue(*cpu)?;
            }
        }
        let queues_to_retire = existing
            .iter()
            .any(|(cpu, _)| !wanted.contains(cpu))
            .then(Instant::now);

        // Steering on, last. Keep the seed a previous daemon used: a new one would remap flows.
        let old = dp.rss_config()?;
        let seed = if old.seed != 0 {
            old.seed
        } else {
            super::fresh_seed()
        };
        dp.set_rss_config(RssConfig {
            enabled: 1,
            default_cpu: rss.default_cpu,
            seed,
            symmetric: u32::from(rss.hash == HashKind::Symmetric),
        })?;
        let nr_cpus = dp.nr_cpus();
        let policy = RssPolicy::new(engines, policy_vms, rss.policy.clone());
        info!(
            engines = policy.engines.len(),
            cpus = ?wanted,
            default_cpu = rss.default_cpu,
            "RSS steering on"
        );
        Ok(RssRuntime {
            config: rss.clone(),
            policy,
            period: 0,
            last: None,
            monitor: CpuMonitor::default(),
            loads: Loads::default(),
            cpu_pps: vec![0.0; nr_cpus],
            cpu_busy: Vec::new(),
            events: VecDeque::new(),
            event_counts: BTreeMap::new(),
            next_event: 1,
            nr_cpus,
            queues_to_retire,
        })
    }

    /// Turns steering off (no `[rss]` section): frames stay on the CPU they arrive on.
    pub fn disable(dp: &mut Dataplane) -> anyhow::Result<()> {
        let mut cfg = dp.rss_config()?;
        if cfg.enabled != 0 {
            cfg.enabled = 0;
            dp.set_rss_config(cfg)?;
            info!("RSS steering off (no [rss] section)");
        }
        Ok(())
    }

    fn sample(&mut self, dp: &Dataplane, vms: &[Vm]) -> anyhow::Result<Sample> {
        let mut vm = Vec::with_capacity(vms.len());
        let mut vm_cpu = Vec::with_capacity(vms.len());
        for v in vms {
            let per_cpu: Vec<u64> = dp
                .vm_cpu_counters(v.slot)?
                .iter()
                .map(|c| c.packets)
                .collect();
            vm.push(per_cpu.iter().sum());
            vm_cpu.push(per_cpu);
        }
        let size = self.config.table_size;
        let bucket = (0..self.policy.engines.len())
            .map(|e| {
                Ok(dp
                    .bucket_counters(e as u32, size)?
                    .iter()
                    .map(|per_cpu| per_cpu.iter().map(|c: &Counter| c.packets).sum())
                    .collect())
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Sample {
            at: Instant::now(),
            vm,
            vm_cpu,
            bucket,
            cpu: self.monitor.read(),
        })
    }

    /// CPUs that need a CPU-map queue: every active engine's and the default one.
    fn wanted_cpus(&self) -> Vec<u32> {
        let mut wanted: Vec<u32> = self
            .policy
            .active_engines()
            .flat_map(|e| e.cpus.clone())
            .collect();
        wanted.push(self.config.default_cpu);
        wanted.sort_unstable();
        wanted.dedup();
        wanted
    }

    /// Gives every CPU in `cpus` a CPU-map queue, before a table may name it.
    fn ensure_queues(&self, dp: &mut Dataplane, cpus: &[u32]) -> anyhow::Result<()> {
        let existing = dp.cpu_queues()?;
        for cpu in cpus {
            if !existing.iter().any(|(c, prog)| c == cpu && prog.is_some()) {
                dp.set_cpu_queue(*cpu)?;
            }
        }
        Ok(())
    }

    /// Removes the CPU-map queues no engine uses, once `QUEUE_RETIRE_DELAY` has passed.
    fn retire_queues(&mut self, dp: &mut Dataplane) -> anyhow::Result<()> {
        if self
            .queues_to_retire
            .is_none_or(|since| since.elapsed() < QUEUE_RETIRE_DELAY)
        {
            return Ok(());
        }
        let wanted = self.wanted_cpus();
        for (cpu, _) in dp.cpu_queues()? {
            if !wanted.contains(&cpu) {
                dp.remove_cpu_queue(cpu)?;
                info!(
                    cpu,
                    "CPU-map queue removed: no engine uses this CPU any more"
                );
            }
        }
        self.queues_to_retire = None;
        Ok(())
    }

    /// One period: measure, decide, apply.
    pub fn tick(&mut self, dp: &mut Dataplane, vms: &[Vm]) -> anyhow::Result<()> {
        self.retire_queues(dp)?;
        let now = self.sample(dp, vms)?;
        let Some(prev) = self.last.replace(now) else {
            return Ok(());
        };
        let now = self.last.as_ref().expect("just set");
        let secs = now.at.duration_since(prev.at).as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        self.loads = Loads {
            vm_pps: prev
                .vm
                .iter()
                .zip(&now.vm)
                .map(|(a, b)| rate(*a, *b))
                .collect(),
            bucket_pps: prev
                .bucket
                .iter()
                .zip(&now.bucket)
                .map(|(pa, pb)| pa.iter().zip(pb).map(|(a, b)| rate(*a, *b)).collect())
                .collect(),
            cpu_busy: Vec::new(),
        };
        self.cpu_pps = (0..self.nr_cpus)
            .map(|cpu| {
                prev.vm_cpu
                    .iter()
                    .zip(&now.vm_cpu)
                    .map(|(a, b)| {
                        rate(
                            a.get(cpu).copied().unwrap_or(0),
                            b.get(cpu).copied().unwrap_or(0),
                        )
                    })
                    .sum()
            })
            .collect();
        self.cpu_busy = cpu_loads(&prev.cpu, &now.cpu);
        self.loads.cpu_busy = self
            .cpu_busy
            .iter()
            .map(|l| (l.vnic + l.nic).min(1.0))
            .collect();
        self.period += 1;
        let decisions = self.policy.step(self.period, &self.loads);
        self.apply(dp, vms, decisions)
    }

    fn apply(
        &mut self,
        dp: &mut Dataplane,
        vms: &[Vm],
        decisions: Vec<Decision>,
    ) -> anyhow::Result<()> {
        for d in decisions {
            let engines = &self.policy.engines;
            let event = match &d {
                Decision::MoveVm {
                    vm,
                    from,
                    to,
                    reason,
                    vm_pps,
                    trigger_pps,
                    cpu_busy,
                } => {
                    dp.set_vm_rss(vms[*vm].slot, vm_rss(*to))?;
                    let (from, to) = (placement_name(*from, engines), placement_name(*to, engines));
                    info!(vm = %vms[*vm].name, %from, %to, ?reason, vm_pps = *vm_pps as u64, trigger_pps = *trigger_pps as u64, "RSS migration");
                    RssEvent {
                        kind: "vm_migration".into(),
                        subject: vms[*vm].name.clone(),
                        from,
                        to,
                        reason: reason_text(*reason).into(),
                        figures: [
                            ("vm_pps", *vm_pps),
                            ("trigger_pps", *trigger_pps),
                            ("engine_cpu_busy_pct", *cpu_busy * 100.0),
                        ]
                        .into_iter()
                        .filter(|(k, _)| {
                            *k != "engine_cpu_busy_pct"
                                || matches!(
                                    reason,
                                    MoveReason::EngineOverloaded | MoveReason::EngineCpusBusy
                                )
                        })
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                        ..RssEvent::default()
                    }
                }
                Decision::MoveBucket {
                    engine,
                    bucket,
                    cause,
                    from_cpu,
                    to_cpu,
                    bucket_pps,
                    from_load,
                    to_load,
                } => {
                    dp.set_bucket(*engine as u32, *bucket as u32, *to_cpu)?;
                    debug!(engine = %engines[*engine].name, bucket, from_cpu, to_cpu, ?cause, bucket_pps = *bucket_pps as u64, "RSS bucket move");
                    if *cause == BucketCause::CpuSetChanged {
                        // One event for the whole change, recorded by the caller.
                        continue;
                    }
                    RssEvent {
                        kind: "bucket_move".into(),
                        subject: format!("{}/{bucket}", engines[*engine].name),
                        from: format!("cpu{from_cpu}"),
                        to: format!("cpu{to_cpu}"),
                        reason: "CPU load imbalance".into(),
                        figures: BTreeMap::from([
                            ("bucket_pps".into(), *bucket_pps),
                            ("from_cpu_pps".into(), *from_load),
                            ("to_cpu_pps".into(), *to_load),
                        ]),
                        ..RssEvent::default()
                    }
                }
                Decision::NoDestination {
                    engine,
                    load_per_cpu,
                } => {
                    warn!(engine = %engines[*engine].name, load_per_cpu = *load_per_cpu as u64, "shared engine overloaded and no engine can take a VM");
                    RssEvent {
                        kind: "no_destination".into(),
                        subject: engines[*engine].name.clone(),
                        reason:
                            "overloaded; no free dedicated engine and no shared engine with room"
                                .into(),
                        figures: BTreeMap::from([("load_pps_per_cpu".into(), *load_per_cpu)]),
                        ..RssEvent::default()
                    }
                }
            };
            self.record(event);
        }
        Ok(())
    }

    fn record(&mut self, mut event: RssEvent) {
        event.id = self.next_event;
        event.period = self.period;
        event.unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.next_event += 1;
        *self.event_counts.entry(event.kind.clone()).or_default() += 1;
        if self.events.len() == EVENT_HISTORY {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Places VM `index` by hand (`Some`) or returns it to the policy (`None`); changes its
    /// hints when given.
    pub fn set(
        &mut self,
        dp: &mut Dataplane,
        vms: &[Vm],
        index: usize,
        state: Option<&str>,
        priority: Option<i32>,
        prefer_dedicated: Option<bool>,
    ) -> Result<(), String> {
        if let Some(p) = priority {
            self.policy.vms[index].priority = p;
        }
        if let Some(d) = prefer_dedicated {
            self.policy.vms[index].prefer_dedicated = d;
        }
        let Some(state) = state else {
            return Ok(());
        };
        let to = match state {
            "auto" => None,
            "none" | "no-rss" => Some(Placement::NoRss),
            name => {
                let name = name
                    .strip_prefix("shared:")
                    .or_else(|| name.strip_prefix("dedicated:"))
                    .unwrap_or(name);
                let e = self
                    .policy
                    .engine_index(name)
                    .ok_or_else(|| self.unknown_engine(name, "use auto, none or"))?;
                Some(Placement::Engine(e))
            }
        };
        if let Some(decision) = self.policy.place(index, to, self.period)? {
            self.apply(dp, vms, vec![decision])
                .map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    fn unknown_engine(&self, name: &str, what: &str) -> String {
        let names: Vec<&str> = self
            .policy
            .active_engines()
            .map(|e| e.name.as_str())
            .collect();
        format!(
            "no engine named {name:?}; {what} one of: {}",
            if names.is_empty() {
                "(none)".to_string()
            } else {
                names.join(", ")
            }
        )
    }

    /// Writes engine `e`'s table and entry from the policy's state.
    fn write_engine(&self, dp: &mut Dataplane, e: usize) -> anyhow::Result<()> {
        let engine = &self.policy.engines[e];
        let size = self.config.table_size;
        for (b, cpu) in engine.table.iter().enumerate() {
            dp.set_bucket(e as u32, b as u32, *cpu)?;
        }
        dp.set_engine(
            e as u32,
            EngineEntry {
                table_mask: size - 1,
                config_tag: config_tag(&engine.name, engine.kind, &engine.cpus, size),
            },
        )
    }

    /// Adds an engine (kept until the daemon restarts; the configuration file is what a
    /// restart uses).
    pub fn add_engine(&mut self, dp: &mut Dataplane, ec: &EngineConfig) -> Result<(), String> {
        let names: Vec<String> = self
            .policy
            .active_engines()
            .map(|e| e.name.clone())
            .collect();
        check_engine("engine", ec, names.iter().map(String::as_str))
            .map_err(|(field, msg)| format!("{field}: {msg}"))?;
        check_online(&ec.cpus)?;
        self.ensure_queues(dp, &ec.cpus)
            .map_err(|e| format!("{e:#}"))?;
        let size = self.config.table_size as usize;
        let engine = Engine::new(&ec.name, ec.kind, ec.cpus.clone(), size);
        let e = self.policy.add_engine(engine, MAX_ENGINES as usize)?;
        let written = dp
            .reset_bucket_counters(e as u32)
            .and_then(|()| self.write_engine(dp, e));
        if let Err(err) = written {
            self.policy.engines[e].retired = true;
            let _ = dp.set_engine(e as u32, EngineEntry::default());
            return Err(format!("cannot write engine {:?}: {err:#}", ec.name));
        }
        info!(engine = %ec.name, kind = ?ec.kind, cpus = ?ec.cpus, "RSS engine added");
        self.record(RssEvent {
            kind: "engine_added".into(),
            subject: ec.name.clone(),
            to: cpu_list(&ec.cpus),
            reason: "added by an operator".into(),
            ..RssEvent::default()
        });
        Ok(())
    }

    /// Gives an engine a new CPU set; its table is dealt over the new CPUs moving as few
    /// buckets as possible, and every moved flow drains from its old CPU first.
    pub fn set_engine_cpus(
        &mut self,
        dp: &mut Dataplane,
        vms: &[Vm],
        name: &str,
        cpus: Vec<u32>,
    ) -> Result<(), String> {
        let e = self
            .policy
            .engine_index(name)
            .ok_or_else(|| self.unknown_engine(name, "name"))?;
        check_cpu_set("engine", &cpus).map_err(|(field, msg)| format!("{field}: {msg}"))?;
        check_online(&cpus)?;
        let before = self.policy.engines[e].clone();
        if before.cpus == cpus {
            return Ok(());
        }
        self.ensure_queues(dp, &cpus)
            .map_err(|e| format!("{e:#}"))?;
        let decisions = self.policy.set_cpus(e, cpus.clone(), self.period)?;
        let moved = decisions.len();
        let written = self
            .apply(dp, vms, decisions)
            .and_then(|()| self.write_engine(dp, e));
        if let Err(err) = written {
            // Put the old table back as a whole.
            self.policy.engines[e] = before;
            let _ = self.write_engine(dp, e);
            return Err(format!("cannot change engine {name:?}: {err:#}"));
        }
        info!(engine = name, from = ?before.cpus, to = ?cpus, buckets_moved = moved, "RSS engine CPU set changed");
        self.record(RssEvent {
            kind: "engine_cpus_changed".into(),
            subject: name.to_string(),
            from: cpu_list(&before.cpus),
            to: cpu_list(&cpus),
            reason: "changed by an operator".into(),
            figures: BTreeMap::from([("buckets_moved".into(), moved as f64)]),
            ..RssEvent::default()
        });
        self.queues_to_retire.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Removes an engine; its VMs go back to no-RSS. Returns their names.
    pub fn remove_engine(
        &mut self,
        dp: &mut Dataplane,
        vms: &[Vm],
        name: &str,
    ) -> Result<Vec<String>, String> {
        let e = self
            .policy
            .engine_index(name)
            .ok_or_else(|| self.unknown_engine(name, "name"))?;
        let decisions = self.policy.remove_engine(e, self.period)?;
        let moved: Vec<String> = decisions
            .iter()
            .filter_map(|d| match d {
                Decision::MoveVm { vm, .. } => Some(vms[*vm].name.clone()),
                _ => None,
            })
            .collect();
        self.apply(dp, vms, decisions)
            .and_then(|()| dp.set_engine(e as u32, EngineEntry::default()))
            .map_err(|err| format!("cannot remove engine {name:?}: {err:#}"))?;
        info!(engine = name, vms = ?moved, "RSS engine removed");
        self.record(RssEvent {
            kind: "engine_removed".into(),
            subject: name.to_string(),
            from: cpu_list(&self.policy.engines[e].cpus),
            reason: "removed by an operator".into(),
            figures: BTreeMap::from([("vms_moved".into(), moved.len() as f64)]),
            ..RssEvent::default()
        });
        self.queues_to_retire.get_or_insert_with(Instant::now);
        Ok(moved)
    }

    /// The status view of engine `name`.
    pub fn engine_view(&self, name: &str, vms: &[Vm], dp: &Dataplane) -> Option<RssEngineView> {
        self.status(vms, dp)
            .engines
            .into_iter()
            .find(|e| e.name == name)
    }

    pub fn events(&self, since: u64) -> Vec<RssEvent> {
        self.events
            .iter()
            .filter(|e| e.id > since)
            .cloned()
            .collect()
    }

    pub fn status(&self, vms: &[Vm], dp: &Dataplane) -> RssStatusView {
        let engines = &self.policy.engines;
        // What the policy decides on: smoothed over periods.
        let loads = self.policy.smoothed().unwrap_or(&self.loads);
        let engine_views = engines
            .iter()
            .enumerate()
            .filter(|(_, eng)| !eng.retired)
            .map(|(e, eng)| {
                let cpu_loads = self.policy.cpu_loads(e, loads);
                let mut buckets_per_cpu = BTreeMap::new();
                for cpu in &eng.table {
                    *buckets_per_cpu.entry(*cpu).or_insert(0u32) += 1;
                }
                let load = self.policy.engine_pps(e, loads);
                RssEngineView {
                    name: eng.name.clone(),
                    kind: eng.kind,
                    cpus: eng.cpus.clone(),
                    vms: self
                        .policy
                        .vms
                        .iter()
                        .filter(|v| v.placement == Placement::Engine(e))
                        .map(|v| v.name.clone())
                        .collect(),
                    load_pps: load,
                    load_pps_per_cpu: load / eng.cpus.len() as f64,
                    cpu_pps: eng.cpus.iter().copied().zip(cpu_loads).collect(),
                    buckets_per_cpu,
                }
            })
            .collect();
        let vm_views = self
            .policy
            .vms
            .iter()
            .enumerate()
            .map(|(i, v)| RssVmView {
                name: v.name.clone(),
                state: placement_name(v.placement, engines),
                pinned: v.pinned,
                priority: v.priority,
                prefer_dedicated: v.prefer_dedicated,
                load_pps: loads.vm_pps.get(i).copied().unwrap_or(0.0),
                slot: vms.get(i).map_or(0, |vm| vm.slot),
            })
            .collect();
        let cpus = (0..self.nr_cpus)
            .map(|cpu| RssCpuView {
                cpu: cpu as u32,
                steered_pps: self.cpu_pps.get(cpu).copied().unwrap_or(0.0),
                vnic_busy: self.cpu_busy.get(cpu).map_or(0.0, |l| l.vnic),
                nic_busy: self.cpu_busy.get(cpu).map_or(0.0, |l| l.nic),
            })
            .collect();
        let steering = dp
            .steer_counters()
            .map(|c| {
                SteerCounter::ALL
                    .iter()
                    .map(|k| (k.name().to_string(), c[*k as usize]))
                    .collect()
            })
            .unwrap_or_default();
        RssStatusView {
            enabled: true,
            period_ms: self.config.period_ms,
            period: self.period,
            default_cpu: self.config.default_cpu,
            hash: self.config.hash,
            table_size: self.config.table_size,
            engines: engine_views,
            vms: vm_views,
            cpus,
            steering,
            event_counts: self.event_counts.clone(),
        }
    }

    /// Per bucket of engine `name`: the CPU its table names and the frames each CPU ran.
    pub fn buckets(
        &self,
        name: &str,
        dp: &Dataplane,
    ) -> anyhow::Result<Option<Vec<RssBucketView>>> {
        let Some(e) = self.policy.engine_index(name) else {
            return Ok(None);
        };
        let counters = dp.bucket_counters(e as u32, self.config.table_size)?;
        Ok(Some(
            counters
                .iter()
                .enumerate()
                .map(|(b, per_cpu)| RssBucketView {
                    bucket: b as u32,
                    cpu: self.policy.engines[e].table[b],
                    frames_per_cpu: per_cpu.iter().map(|c| c.packets).collect(),
                    pps: self
                        .loads
                        .bucket_pps
                        .get(e)
                        .and_then(|l| l.get(b))
                        .copied()
                        .unwrap_or(0.0),
                })
                .collect(),
        ))
    }
}

/// A tag for an engine's configuration (FNV-1a over name, kind, CPUs and table size).
fn config_tag(name: &str, kind: EngineKind, cpus: &[u32], size: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    };
    feed(name.as_bytes());
    feed(&[kind as u8]);
    for cpu in cpus {
        feed(&cpu.to_le_bytes());
    }
    feed(&size.to_le_bytes());
    h | 1
}

/// `0,1,4` for events.
fn cpu_list(cpus: &[u32]) -> String {
    cpus.iter()
        .map(|c| format!("cpu{c}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn vm_rss(p: Placement) -> VmRss {
    VmRss {
        engine: match p {
            Placement::NoRss => NO_ENGINE,
            Placement::Engine(e) => e as u32,
        },
        _pad: 0,
    }
}

fn reason_text(r: MoveReason) -> &'static str {
    match r {
        MoveReason::EngineOverloaded => "shared engine over its high threshold",
        MoveReason::EngineCpusBusy => "shared engine's CPUs busy in kernel threads",
        MoveReason::NoRssOverloaded => "load over the no-RSS threshold",
        MoveReason::Underloaded => "load under the low threshold long enough",
        MoveReason::Manual => "placed by an operator",
        MoveReason::EngineRemoved => "its engine was removed",
    }
}
