//! The RSS feature: engines (CPU sets with a table each), every VM's engine state, and the
//! policy that moves VMs between states and buckets between CPUs (`policy::rss`).
//!
//! On start it keeps what the pinned maps say where it still fits the desired state (tables,
//! VM placements, the hash seed), so a restart moves no flow. Desired-state changes add,
//! change and remove engines and re-place VMs by their hints; every period the sampler's
//! measurements feed the policy. Decisions become image entries and events.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Instant,
};

use tracing::{debug, info, warn};
use xnic_common::{
    maps::PORT_STEER,
    rss::{EngineEntry, MAX_DRAIN_NS, MAX_ENGINES, NO_ENGINE, RssConfig, VmRss, bucket_index},
};
use xnic_proto::{
    api::{
        EventDetail, RssBucketView, RssCpuView, RssEngineView, RssEvent, RssStatusView, RssVmView,
    },
    config::{AttachMode, EngineConfig, EngineKind, HashKind, RssSection},
};

use super::{Context, Feature, Slots};
use crate::{
    events::NewEvent,
    monitor::cpu::{CpuLoad, CpuTimes, loads as cpu_loads},
    policy::{
        plan::{Image, put},
        rss::{BucketCause, Decision, Engine, Loads, MoveReason, Placement, RssPolicy},
    },
};

/// How long a CPU-map queue no engine uses any more is kept before it is removed: far longer
/// than any flow waits for its old CPU to drain (`MAX_DRAIN_NS`), so nothing is still steered
/// there when it goes.
const QUEUE_RETIRE_DELAY_NS: u64 = MAX_DRAIN_NS * 200;

/// One period's measurements, taken by the sampler.
#[derive(Clone, Debug)]
pub struct RssSample {
    pub at: Instant,
    /// Per VM: frames delivered, per CPU that finished them.
    pub vm_cpu: BTreeMap<String, Vec<u64>>,
    /// Per engine index: frames per bucket, summed over CPUs.
    pub buckets: BTreeMap<u32, Vec<u64>>,
    pub cpu: CpuTimes,
}

/// What the sampler must read for the next period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SamplePlan {
    /// (VM name, slot).
    pub vms: Vec<(String, u32)>,
    pub engines: Vec<u32>,
    pub table_size: u32,
}

/// Steering while an `[rss]` section is configured.
#[derive(Clone, Debug)]
struct On {
    section: RssSection,
    policy: RssPolicy,
    period: u64,
    last: Option<RssSample>,
    /// Loads of the last period, in policy order.
    loads: Loads,
    cpu_pps: Vec<f64>,
    cpu_busy: Vec<CpuLoad>,
    /// CPUs with a queue: every active engine's, the default CPU's, and retiring ones.
    queues: BTreeSet<u32>,
    /// Since when queues may be left that no engine uses any more.
    retiring_since_ns: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Rss {
    on: Option<On>,
    /// Per-host hash seed, kept in the pinned maps: a new one would remap every flow.
    seed: u32,
    nr_cpus: usize,
    /// Engine indexes a new engine took since the last render: zero their counters first.
    resets: BTreeSet<u32>,
}

fn placement_name(p: Placement, engines: &[Engine]) -> String {
    match p {
        Placement::NoRss => "no-rss".into(),
        Placement::Engine(e) => format!("{}:{}", engines[e].kind.name(), engines[e].name),
    }
}

/// A tag for an engine's configuration (FNV-1a over name, kind, CPUs and table size), so a
/// restarted daemon keeps a table only if its engine is unchanged.
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

fn event(r: RssEvent, message: String) -> NewEvent {
    NewEvent::new("rss", r.kind.clone(), r.subject.clone(), message).with(EventDetail::Rss(r))
}

/// A fresh seed for a dataplane that has none yet (never 0: 0 means "not chosen").
pub fn fresh_seed() -> u32 {
    let mut b = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    let seed = if random {
        u32::from_ne_bytes(b)
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u32) ^ std::process::id().rotate_left(16)
    };
    seed | 1
}

impl On {
    /// Engines and placements for `section`, keeping from `pinned` what still fits.
    fn build(
        section: &RssSection,
        cx: &Context,
        slots: &Slots,
        pinned: Option<&Image>,
        resets: &mut BTreeSet<u32>,
    ) -> Result<On, String> {
        let size = section.table_size;
        let mut engines: Vec<Engine> = Vec::new();
        let mut taken = BTreeSet::new();
        let mut kept: Vec<Option<(u32, Vec<u32>)>> = Vec::new();
        // Engines whose configuration the pinned maps hold keep their index and table.
        for ec in &section.engines {
            let tag = config_tag(&ec.name, ec.kind, &ec.cpus, size);
            let found = pinned.and_then(|img| {
                img.engines
                    .iter()
                    .find(|(e, entry)| entry.config_tag == tag && !taken.contains(*e))
                    .map(|(e, _)| *e)
                    .and_then(|e| {
                        let table: Vec<u32> = (0..size)
                            .map(|b| *img.rss_tables.get(&bucket_index(e, b)).unwrap_or(&0))
                            .collect();
                        table
                            .iter()
                            .all(|c| ec.cpus.contains(c))
                            .then_some((e, table))
                    })
            });
            if let Some((e, _)) = &found {
                taken.insert(*e);
            }
            kept.push(found);
        }
        // The rest take the lowest free indexes, with fresh tables.
        let mut index_of = Vec::new();
        let mut next = 0u32;
        for k in &kept {
            let e = match k {
                Some((e, _)) => *e,
                None => {
                    while taken.contains(&next) {
                        next += 1;
                    }
                    if next >= MAX_ENGINES {
                        return Err(format!("at most {MAX_ENGINES} engines are supported"));
                    }
                    taken.insert(next);
                    resets.insert(next);
                    next
                }
            };
            index_of.push(e as usize);
        }
        let len = index_of.iter().max().map_or(0, |m| m + 1);
        for e in 0..len {
            let retired = Engine {
                retired: true,
                ..Engine::new("", EngineKind::Shared, vec![0], size as usize)
            };
            engines.push(retired);
            let _ = e;
        }
        for (i, ec) in section.engines.iter().enumerate() {
            let mut engine = Engine::new(&ec.name, ec.kind, ec.cpus.clone(), size as usize);
            if let Some((_, table)) = &kept[i] {
                engine.table = table.clone();
            }
            engines[index_of[i]] = engine;
        }
        let mut vms = Vec::new();
        for vm in &cx.desired.vms {
            let mut v = crate::policy::rss::Vm::new(&vm.name);
            v.priority = vm.priority;
            v.prefer_dedicated = vm.prefer_dedicated;
            if vm.rss == "auto"
                && let Some(img) = pinned
                && let Some(slot) = slots.vm(&vm.name)
                && let Some(r) = img.vm_rss.get(&slot)
                && engines
                    .get(r.engine as usize)
                    .is_some_and(|eng| !eng.retired)
            {
                v.placement = Placement::Engine(r.engine as usize);
            }
            vms.push(v);
        }
        // A dedicated engine serves one VM: extra adopted ones fall back to no-RSS.
        for (e, engine) in engines.iter().enumerate() {
            if engine.kind != EngineKind::Dedicated || engine.retired {
                continue;
            }
            let users: Vec<usize> = (0..vms.len())
                .filter(|&i| vms[i].placement == Placement::Engine(e))
                .collect();
            for &i in users.iter().skip(1) {
                vms[i].placement = Placement::NoRss;
            }
        }
        let mut queues: BTreeSet<u32> = section
            .engines
            .iter()
            .flat_map(|e| e.cpus.clone())
            .collect();
        queues.insert(section.default_cpu);
        // Queues a previous daemon left keep running (replacing one would restart its queue
        // mid-flow); those no engine uses any more go once flows have left them.
        let retiring_since_ns = pinned.and_then(|img| {
            let extra: Vec<u32> = img.cpu_queues.difference(&queues).copied().collect();
            queues.extend(&extra);
            (!extra.is_empty()).then_some(cx.now_ns)
        });
        let mut on = On {
            section: section.clone(),
            policy: RssPolicy::new(engines, vms, section.policy.clone()),
            period: 0,
            last: None,
            loads: Loads::default(),
            cpu_pps: Vec::new(),
            cpu_busy: Vec::new(),
            queues,
            retiring_since_ns,
        };
        // Hints: the configuration's pins win over what was adopted.
        let mut ignored = Vec::new();
        on.apply_hints(cx, &mut ignored)?;
        Ok(on)
    }

    /// CPUs that need a queue: every active engine's and the default one.
    fn wanted_cpus(&self) -> BTreeSet<u32> {
        let mut wanted: BTreeSet<u32> = self
            .policy
            .active_engines()
            .flat_map(|e| e.cpus.clone())
            .collect();
        wanted.insert(self.section.default_cpu);
        wanted
    }

    /// Each policy VM's index, by name (built once per pass: a host has thousands).
    fn vm_indexes(&self) -> HashMap<String, usize> {
        self.policy
            .vms
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.clone(), i))
            .collect()
    }

    /// Places every VM as its `rss` hint says: `auto` hands it to the policy, `none` and an
    /// engine's name pin it. A VM the policy put on a dedicated engine gives it up to a VM
    /// pinned there.
    fn apply_hints(&mut self, cx: &Context, out: &mut Vec<Decision>) -> Result<(), String> {
        let index = self.vm_indexes();
        for vm in &cx.desired.vms {
            let Some(&i) = index.get(&vm.name) else {
                continue;
            };
            let to = match vm.rss.as_str() {
                "auto" => None,
                "none" => Some(Placement::NoRss),
                name => Some(Placement::Engine(
                    self.policy
                        .engine_index(name)
                        .ok_or_else(|| format!("VM {}: no RSS engine named {name:?}", vm.name))?,
                )),
            };
            if let Some(Placement::Engine(e)) = to
                && self.policy.engines[e].kind == EngineKind::Dedicated
            {
                let occupants: Vec<usize> = (0..self.policy.vms.len())
                    .filter(|&o| {
                        o != i
                            && !self.policy.vms[o].pinned
                            && self.policy.vms[o].placement == Placement::Engine(e)
                    })
                    .collect();
                for o in occupants {
                    self.policy.vms[o].pinned = true;
                    out.extend(self.policy.place(o, Some(Placement::NoRss), self.period)?);
                    self.policy.vms[o].pinned = false;
                }
            }
            out.extend(self.policy.place(i, to, self.period)?);
        }
        Ok(())
    }

    /// Brings engines and VMs in line with `section` and the desired VMs.
    fn sync(
        &mut self,
        section: &RssSection,
        cx: &Context,
        resets: &mut BTreeSet<u32>,
        events: &mut Vec<NewEvent>,
    ) -> Result<(), String> {
        // VMs: in the desired order, each keeping its state.
        let mut vms = Vec::new();
        let index = self.vm_indexes();
        for vm in &cx.desired.vms {
            let mut v = match index.get(&vm.name) {
                Some(&i) => self.policy.vms[i].clone(),
                None => crate::policy::rss::Vm::new(&vm.name),
            };
            v.priority = vm.priority;
            v.prefer_dedicated = vm.prefer_dedicated;
            // Re-pinned below from the hints, after engines changed.
            v.pinned = false;
            vms.push(v);
        }
        self.policy.vms = vms;
        self.policy.params = section.policy.clone();
        self.section.policy = section.policy.clone();
        self.section.period_ms = section.period_ms;

        let mut decisions = Vec::new();
        // Engines that went (or changed kind) first, so their VMs are free to go elsewhere.
        let wanted: BTreeMap<&str, &EngineConfig> = section
            .engines
            .iter()
            .map(|e| (e.name.as_str(), e))
            .collect();
        let active: Vec<(usize, String, EngineKind)> = self
            .policy
            .engines
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.retired)
            .map(|(i, e)| (i, e.name.clone(), e.kind))
            .collect();
        for (e, name, kind) in active {
            if wanted.get(name.as_str()).is_some_and(|w| w.kind == kind) {
                continue;
            }
            let cpus = self.policy.engines[e].cpus.clone();
            let moved = self.policy.remove_engine(e, self.period)?;
            let names: Vec<String> = moved
                .iter()
                .filter_map(|d| match d {
                    Decision::MoveVm { vm, .. } => Some(self.policy.vms[*vm].name.clone()),
                    _ => None,
                })
                .collect();
            info!(engine = %name, vms = ?names, "RSS engine removed");
            events.push(event(
                RssEvent {
                    kind: "engine_removed".into(),
                    subject: name.clone(),
                    from: cpu_list(&cpus),
                    reason: "removed from the desired state".into(),
                    figures: BTreeMap::from([("vms_moved".into(), names.len() as f64)]),
                    period: self.period,
                    ..RssEvent::default()
                },
                format!("RSS engine {name} removed; {} VM(s) to no-RSS", names.len()),
            ));
            decisions.extend(moved);
            self.retire_queues_later(cx);
        }
        for ec in &section.engines {
            match self.policy.engine_index(&ec.name) {
                Some(e) if self.policy.engines[e].cpus != ec.cpus => {
                    let before = self.policy.engines[e].cpus.clone();
                    let moves = self.policy.set_cpus(e, ec.cpus.clone(), self.period)?;
                    info!(engine = %ec.name, from = ?before, to = ?ec.cpus, buckets_moved = moves.len(), "RSS engine CPU set changed");
                    events.push(event(
                        RssEvent {
                            kind: "engine_cpus_changed".into(),
                            subject: ec.name.clone(),
                            from: cpu_list(&before),
                            to: cpu_list(&ec.cpus),
                            reason: "changed in the desired state".into(),
                            figures: BTreeMap::from([("buckets_moved".into(), moves.len() as f64)]),
                            period: self.period,
                            ..RssEvent::default()
                        },
                        format!(
                            "RSS engine {} moved to CPUs {}",
                            ec.name,
                            cpu_list(&ec.cpus)
                        ),
                    ));
                    decisions.extend(moves);
                    self.queues.extend(&ec.cpus);
                    self.retire_queues_later(cx);
                }
                Some(_) => {}
                None => {
                    let engine = Engine::new(
                        &ec.name,
                        ec.kind,
                        ec.cpus.clone(),
                        self.section.table_size as usize,
                    );
                    let e = self.policy.add_engine(engine, MAX_ENGINES as usize)?;
                    resets.insert(e as u32);
                    self.queues.extend(&ec.cpus);
                    info!(engine = %ec.name, kind = ?ec.kind, cpus = ?ec.cpus, "RSS engine added");
                    events.push(event(
                        RssEvent {
                            kind: "engine_added".into(),
                            subject: ec.name.clone(),
                            to: cpu_list(&ec.cpus),
                            reason: "added to the desired state".into(),
                            period: self.period,
                            ..RssEvent::default()
                        },
                        format!(
                            "RSS engine {} ({}) added on CPUs {}",
                            ec.name,
                            ec.kind.name(),
                            cpu_list(&ec.cpus)
                        ),
                    ));
                }
            }
        }
        self.section.engines = section.engines.clone();
        if self.section.default_cpu != section.default_cpu {
            self.section.default_cpu = section.default_cpu;
            self.queues.insert(section.default_cpu);
            self.retire_queues_later(cx);
        }
        self.section.hash = section.hash;
        self.apply_hints(cx, &mut decisions)?;
        self.record(decisions, events);
        Ok(())
    }

    fn retire_queues_later(&mut self, cx: &Context) {
        self.retiring_since_ns.get_or_insert(cx.now_ns);
    }

    /// Turns decisions into events (the image follows from the policy's state).
    fn record(&self, decisions: Vec<Decision>, events: &mut Vec<NewEvent>) {
        let engines = &self.policy.engines;
        for d in decisions {
            match d {
                Decision::MoveVm {
                    vm,
                    from,
                    to,
                    reason,
                    vm_pps,
                    trigger_pps,
                    cpu_busy,
                } => {
                    let name = self.policy.vms[vm].name.clone();
                    let (from, to) = (placement_name(from, engines), placement_name(to, engines));
                    info!(vm = %name, %from, %to, ?reason, vm_pps = vm_pps as u64, trigger_pps = trigger_pps as u64, "RSS migration");
                    let message = format!(
                        "VM {name} moved from {from} to {to}: {}",
                        reason_text(reason)
                    );
                    events.push(event(
                        RssEvent {
                            kind: "vm_migration".into(),
                            subject: name,
                            from,
                            to,
                            reason: reason_text(reason).into(),
                            period: self.period,
                            figures: [
                                ("vm_pps", vm_pps),
                                ("trigger_pps", trigger_pps),
                                ("engine_cpu_busy_pct", cpu_busy * 100.0),
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
                        },
                        message,
                    ));
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
                    debug!(engine = %engines[engine].name, bucket, from_cpu, to_cpu, ?cause, bucket_pps = bucket_pps as u64, "RSS bucket move");
                    if cause == BucketCause::CpuSetChanged {
                        // One event for the whole change, recorded with it.
                        continue;
                    }
                    let subject = format!("{}/{bucket}", engines[engine].name);
                    let message = format!(
                        "bucket {subject} moved from cpu{from_cpu} to cpu{to_cpu}: CPU load imbalance"
                    );
                    events.push(event(
                        RssEvent {
                            kind: "bucket_move".into(),
                            subject,
                            from: format!("cpu{from_cpu}"),
                            to: format!("cpu{to_cpu}"),
                            reason: "CPU load imbalance".into(),
                            period: self.period,
                            figures: BTreeMap::from([
                                ("bucket_pps".into(), bucket_pps),
                                ("from_cpu_pps".into(), from_load),
                                ("to_cpu_pps".into(), to_load),
                            ]),
                            ..RssEvent::default()
                        },
                        message,
                    ));
                }
                Decision::NoDestination {
                    engine,
                    load_per_cpu,
                } => {
                    warn!(engine = %engines[engine].name, load_per_cpu = load_per_cpu as u64, "shared engine overloaded and no engine can take a VM");
                    let name = engines[engine].name.clone();
                    events.push(event(
                        RssEvent {
                            kind: "no_destination".into(),
                            subject: name.clone(),
                            reason:
                                "overloaded; no free dedicated engine and no shared engine with room"
                                    .into(),
                            period: self.period,
                            figures: BTreeMap::from([("load_pps_per_cpu".into(), load_per_cpu)]),
                            ..RssEvent::default()
                        },
                        format!("shared engine {name} is overloaded and no engine can take a VM"),
                    ));
                }
            }
        }
    }
}

impl Rss {
    /// Engine `name`'s index in `ENGINES`, while steering is on and it exists.
    pub fn engine_slot(&self, name: &str) -> Option<u32> {
        let e = self.on.as_ref()?.policy.engine_index(name)?;
        Some(e as u32)
    }

    /// Takes over what the pinned maps hold where it fits the desired state.
    pub fn adopt(
        cx: &Context,
        slots: &Slots,
        pinned: &Image,
        nr_cpus: usize,
    ) -> Result<Rss, String> {
        let seed = match pinned.rss_config.seed {
            0 => fresh_seed(),
            s => s,
        };
        let mut resets = BTreeSet::new();
        let on = match &cx.desired.rss {
            Some(section) => Some(On::build(section, cx, slots, Some(pinned), &mut resets)?),
            None => None,
        };
        if let Some(on) = &on {
            info!(
                engines = on.policy.active_engines().count(),
                cpus = ?on.queues,
                default_cpu = on.section.default_cpu,
                "RSS steering on"
            );
        }
        Ok(Rss {
            on,
            seed,
            nr_cpus,
            resets,
        })
    }

    /// Off, with no seed: what a snapshot holds before the first one is published.
    pub fn placeholder() -> Rss {
        Rss {
            on: None,
            seed: 0,
            nr_cpus: 0,
            resets: BTreeSet::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.on.is_some()
    }

    pub fn period_ms(&self) -> Option<u64> {
        self.on.as_ref().map(|o| o.section.period_ms)
    }

    /// Engine indexes whose counters must be zeroed before the next write (taken once).
    pub fn take_resets(&mut self) -> BTreeSet<u32> {
        std::mem::take(&mut self.resets)
    }

    /// What the sampler reads for the next period.
    pub fn sample_plan(&self, slots: &Slots) -> Option<SamplePlan> {
        let on = self.on.as_ref()?;
        Some(SamplePlan {
            vms: on
                .policy
                .vms
                .iter()
                .filter_map(|v| slots.vm(&v.name).map(|s| (v.name.clone(), s)))
                .collect(),
            engines: (0..on.policy.engines.len() as u32).collect(),
            table_size: on.section.table_size,
        })
    }

    /// The status view, without the dataplane's steering counters (the caller adds them).
    pub fn status(
        &self,
        slots: &Slots,
        event_counts: BTreeMap<String, u64>,
    ) -> Option<RssStatusView> {
        let on = self.on.as_ref()?;
        let engines = &on.policy.engines;
        // What the policy decides on: smoothed over periods.
        let loads = on.policy.smoothed().unwrap_or(&on.loads);
        let engine_views = engines
            .iter()
            .enumerate()
            .filter(|(_, eng)| !eng.retired)
            .map(|(e, eng)| {
                let cpu_loads = on.policy.cpu_loads(e, loads);
                let mut buckets_per_cpu = BTreeMap::new();
                for cpu in &eng.table {
                    *buckets_per_cpu.entry(*cpu).or_insert(0u32) += 1;
                }
                let load = on.policy.engine_pps(e, loads);
                RssEngineView {
                    name: eng.name.clone(),
                    kind: eng.kind,
                    cpus: eng.cpus.clone(),
                    vms: on
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
        let vm_views = on
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
                slot: slots.vm(&v.name).unwrap_or(0),
            })
            .collect();
        let cpus = (0..self.nr_cpus)
            .map(|cpu| RssCpuView {
                cpu: cpu as u32,
                steered_pps: on.cpu_pps.get(cpu).copied().unwrap_or(0.0),
                vnic_busy: on.cpu_busy.get(cpu).map_or(0.0, |l| l.vnic),
                nic_busy: on.cpu_busy.get(cpu).map_or(0.0, |l| l.nic),
            })
            .collect();
        Some(RssStatusView {
            enabled: true,
            period_ms: on.section.period_ms,
            period: on.period,
            default_cpu: on.section.default_cpu,
            hash: on.section.hash,
            table_size: on.section.table_size,
            engines: engine_views,
            vms: vm_views,
            cpus,
            steering: BTreeMap::new(),
            event_counts,
        })
    }

    /// Engine `name`'s index and table, and the last period's load of each bucket.
    pub fn table(&self, name: &str) -> Option<(u32, Vec<u32>, Vec<f64>)> {
        let on = self.on.as_ref()?;
        let e = on.policy.engine_index(name)?;
        let pps = on.loads.bucket_pps.get(e).cloned().unwrap_or_default();
        Some((e as u32, on.policy.engines[e].table.clone(), pps))
    }

    /// The bucket view of engine `name` from its per-CPU bucket counters.
    pub fn buckets(&self, name: &str, counters: &[Vec<u64>]) -> Option<Vec<RssBucketView>> {
        let (_, table, pps) = self.table(name)?;
        Some(
            table
                .iter()
                .enumerate()
                .map(|(b, cpu)| RssBucketView {
                    bucket: b as u32,
                    cpu: *cpu,
                    frames_per_cpu: counters.get(b).cloned().unwrap_or_default(),
                    pps: pps.get(b).copied().unwrap_or(0.0),
                })
                .collect(),
        )
    }
}

impl Feature for Rss {
    type Sample = RssSample;

    fn reconcile(
        &mut self,
        cx: &Context,
        slots: &Slots,
        events: &mut Vec<NewEvent>,
    ) -> Result<(), String> {
        match (&mut self.on, &cx.desired.rss) {
            (None, None) => {}
            (Some(_), None) => {
                self.on = None;
                info!("RSS steering off (no [rss] section)");
                events.push(NewEvent::new(
                    "rss",
                    "rss_off",
                    "rss",
                    "RSS steering turned off: frames stay on the CPU they arrive on",
                ));
            }
            (None, Some(section)) => {
                let on = On::build(section, cx, slots, None, &mut self.resets)?;
                info!(
                    engines = on.policy.active_engines().count(),
                    "RSS steering on"
                );
                events.push(NewEvent::new(
                    "rss",
                    "rss_on",
                    "rss",
                    format!(
                        "RSS steering turned on with {} engine(s)",
                        section.engines.len()
                    ),
                ));
                self.on = Some(on);
            }
            (Some(on), Some(section)) if on.section.table_size != section.table_size => {
                // Every table changes size: start over, keeping nothing but the seed.
                *on = On::build(section, cx, slots, None, &mut self.resets)?;
                events.push(NewEvent::new(
                    "rss",
                    "tables_rebuilt",
                    "rss",
                    format!("RSS tables rebuilt with {} buckets", section.table_size),
                ));
            }
            (Some(on), Some(section)) => on.sync(section, cx, &mut self.resets, events)?,
        }
        Ok(())
    }

    fn render(&self, cx: &Context, slots: &Slots, image: &mut Image) {
        let Some(on) = &self.on else {
            image.rss_config = RssConfig {
                seed: self.seed,
                ..RssConfig::default()
            };
            return;
        };
        image.rss_config = RssConfig {
            enabled: 1,
            default_cpu: on.section.default_cpu,
            seed: self.seed,
            symmetric: u32::from(on.section.hash == HashKind::Symmetric),
        };
        let size = on.section.table_size;
        for (e, engine) in on.policy.engines.iter().enumerate() {
            if engine.retired {
                continue;
            }
            put(
                &mut image.engines,
                e as u32,
                EngineEntry {
                    table_mask: size - 1,
                    config_tag: config_tag(&engine.name, engine.kind, &engine.cpus, size),
                },
            );
            for (b, cpu) in engine.table.iter().enumerate() {
                put(
                    &mut image.rss_tables,
                    bucket_index(e as u32, b as u32),
                    *cpu,
                );
            }
        }
        for vm in &on.policy.vms {
            if let Some(slot) = slots.vm(&vm.name) {
                put(&mut image.vm_rss, slot, vm_rss(vm.placement));
            }
        }
        image.cpu_queues.extend(&on.queues);
        // Only natively attached ports steer: there the CPU map moves frames before any skb
        // exists; in generic mode the receiving CPU has built the skb already.
        for (name, a) in &image.attach {
            if cx.attached.get(name) == Some(&AttachMode::Native)
                && let Some(p) = image.ports.get_mut(&a.ifindex)
            {
                p.flags |= PORT_STEER;
            }
        }
    }

    fn tick(
        &mut self,
        cx: &Context,
        _slots: &Slots,
        sample: RssSample,
        events: &mut Vec<NewEvent>,
    ) -> bool {
        let Some(on) = &mut self.on else {
            return false;
        };
        let mut changed = false;
        if on
            .retiring_since_ns
            .is_some_and(|since| cx.now_ns.saturating_sub(since) >= QUEUE_RETIRE_DELAY_NS)
        {
            let wanted = on.wanted_cpus();
            for cpu in on.queues.difference(&wanted) {
                info!(
                    cpu,
                    "CPU-map queue removed: no engine uses this CPU any more"
                );
            }
            on.queues = wanted;
            on.retiring_since_ns = None;
            changed = true;
        }
        let Some(prev) = on.last.replace(sample) else {
            return changed;
        };
        let now = on.last.as_ref().expect("just set");
        let secs = now.at.duration_since(prev.at).as_secs_f64().max(1e-3);
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
        let per_vm = |s: &RssSample, name: &str| -> Vec<u64> {
            s.vm_cpu.get(name).cloned().unwrap_or_default()
        };
        on.loads = Loads {
            vm_pps: on
                .policy
                .vms
                .iter()
                .map(|v| {
                    rate(
                        per_vm(&prev, &v.name).iter().sum(),
                        per_vm(now, &v.name).iter().sum(),
                    )
                })
                .collect(),
            bucket_pps: (0..on.policy.engines.len() as u32)
                .map(|e| {
                    let a = prev.buckets.get(&e).cloned().unwrap_or_default();
                    let b = now.buckets.get(&e).cloned().unwrap_or_default();
                    b.iter()
                        .enumerate()
                        .map(|(i, x)| rate(a.get(i).copied().unwrap_or(0), *x))
                        .collect()
                })
                .collect(),
            cpu_busy: Vec::new(),
        };
        on.cpu_pps = (0..self.nr_cpus)
            .map(|cpu| {
                on.policy
                    .vms
                    .iter()
                    .map(|v| {
                        rate(
                            per_vm(&prev, &v.name).get(cpu).copied().unwrap_or(0),
                            per_vm(now, &v.name).get(cpu).copied().unwrap_or(0),
                        )
                    })
                    .sum()
            })
            .collect();
        on.cpu_busy = cpu_loads(&prev.cpu, &now.cpu);
        on.loads.cpu_busy = on
            .cpu_busy
            .iter()
            .map(|l| (l.vnic + l.nic).min(1.0))
            .collect();
        on.period += 1;
        let decisions = on.policy.step(on.period, &on.loads);
        changed |= !decisions.is_empty();
        on.record(decisions, events);
        changed
    }
}
