//! The sampler: a thread that reads counters and /proc on a schedule, with map handles of its
//! own, and hands the results on. Rates for the API are kept here; the RSS and team periods'
//! measurements go to the reconciler as commands, so reading thousands of counters never
//! holds up a link event. So do flow offload's: conntrack's entries, the flow table, and
//! whether the ruleset, routes or neighbours changed.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::warn;

use super::sample::{Rates, Sample};
use crate::{
    dataplane::{Counters, FlowReader, PinDir},
    features::{flows::FlowSample, rss::RssSample, team::TeamSample},
    monitor::{changes::ChangeWatch, conntrack::Conntrack, cpu::CpuMonitor},
    reconcile::{self, Command, Handle, Published, Snapshot},
};

/// The latest counter sample and the rates since the one before.
#[derive(Default)]
pub struct Sampled {
    pub last: Option<Sample>,
    pub rates: Rates,
}

/// Longest sleep between looks at the schedule, so a stop or a new period is noticed soon.
const MAX_NAP: Duration = Duration::from_millis(200);

struct Schedule {
    next_stats: Instant,
    next_rss: Instant,
    next_team: Instant,
    next_flows: Instant,
}

/// What flow offload's measurements are read through, opened when offload first runs.
struct FlowSampler {
    conntrack: Conntrack,
    changes: ChangeWatch,
    table: FlowReader,
}

impl FlowSampler {
    fn open(pins: &PinDir) -> anyhow::Result<FlowSampler> {
        Ok(FlowSampler {
            conntrack: Conntrack::open()?,
            changes: ChangeWatch::open()?,
            table: FlowReader::open(pins)?,
        })
    }

    fn sample(&mut self) -> anyhow::Result<FlowSample> {
        // What changed first: a change during the dump is seen again next period.
        let changed = self.changes.read();
        Ok(FlowSample {
            changed,
            entries: self.conntrack.dump()?,
            table: self.table.table()?,
        })
    }
}

fn rss_sample(
    counters: &Counters,
    snap: &Snapshot,
    cpu: &mut CpuMonitor,
) -> anyhow::Result<Option<RssSample>> {
    let Some(plan) = snap.rss.sample_plan(&snap.slots) else {
        return Ok(None);
    };
    let mut vm_cpu = std::collections::BTreeMap::new();
    for (name, slot) in &plan.vms {
        vm_cpu.insert(name.clone(), counters.vm_per_cpu(*slot)?);
    }
    let mut buckets = std::collections::BTreeMap::new();
    for e in &plan.engines {
        let per_cpu = counters.buckets(*e, plan.table_size)?;
        buckets.insert(*e, per_cpu.iter().map(|c| c.iter().sum()).collect());
    }
    Ok(Some(RssSample {
        at: Instant::now(),
        vm_cpu,
        buckets,
        cpu: cpu.read(),
    }))
}

fn team_sample(counters: &Counters, snap: &Snapshot) -> anyhow::Result<Option<TeamSample>> {
    if !snap.team.enabled() {
        return Ok(None);
    }
    let mut vms = std::collections::BTreeMap::new();
    for (name, slot) in snap.team.sample_plan(&snap.slots) {
        vms.insert(name, counters.team_vm(slot)?);
    }
    Ok(Some(TeamSample {
        at: Instant::now(),
        vms,
        member_down: counters.member_down()?,
    }))
}

pub fn spawn(
    pins: &PinDir,
    published: Published,
    handle: Handle,
    sampled: Arc<Mutex<Sampled>>,
    stats_interval: Duration,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let counters = Counters::open(pins)?;
    let pins = pins.clone();
    std::thread::Builder::new()
        .name("xnic-sampler".into())
        .spawn(move || {
            let mut cpu = CpuMonitor::default();
            let mut flows: Option<FlowSampler> = None;
            let now = Instant::now();
            let mut s = Schedule {
                next_stats: now,
                next_rss: now,
                next_team: now,
                next_flows: now,
            };
            while !stop.load(Ordering::Relaxed) {
                let snap = reconcile::current(&published);
                let now = Instant::now();
                if now >= s.next_stats {
                    s.next_stats += stats_interval;
                    s.next_stats = s.next_stats.max(now);
                    match Sample::take(&counters, &snap) {
                        Ok(sample) => {
                            let mut g = sampled.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some(prev) = &g.last {
                                g.rates = Rates::between(prev, &sample);
                            }
                            g.last = Some(sample);
                        }
                        Err(e) => warn!(error = %format!("{e:#}"), "reading counters failed"),
                    }
                }
                if let Some(ms) = snap.rss.period_ms()
                    && now >= s.next_rss
                {
                    s.next_rss = (s.next_rss + Duration::from_millis(ms)).max(now);
                    match rss_sample(&counters, &snap, &mut cpu) {
                        Ok(Some(sample)) => handle.send(Command::RssTick(sample)),
                        Ok(None) => {}
                        Err(e) => warn!(error = %format!("{e:#}"), "reading RSS counters failed"),
                    }
                }
                if let Some(ms) = snap.team.period_ms()
                    && now >= s.next_team
                {
                    s.next_team = (s.next_team + Duration::from_millis(ms)).max(now);
                    match team_sample(&counters, &snap) {
                        Ok(Some(sample)) => handle.send(Command::TeamTick(sample)),
                        Ok(None) => {}
                        Err(e) => warn!(error = %format!("{e:#}"), "reading team counters failed"),
                    }
                }
                if let Some(ms) = snap.flows.period_ms
                    && now >= s.next_flows
                {
                    s.next_flows = (s.next_flows + Duration::from_millis(ms)).max(now);
                    if flows.is_none() {
                        match FlowSampler::open(&pins) {
                            Ok(f) => flows = Some(f),
                            Err(e) => {
                                warn!(error = %format!("{e:#}"), "flow offload cannot read conntrack or the flow table")
                            }
                        }
                    }
                    if let Some(f) = &mut flows {
                        match f.sample() {
                            Ok(sample) => handle.send(Command::FlowTick(Box::new(sample))),
                            Err(e) => warn!(error = %format!("{e:#}"), "reading flows failed"),
                        }
                    }
                }
                let mut next = s.next_stats;
                if snap.rss.enabled() {
                    next = next.min(s.next_rss);
                }
                if snap.team.enabled() {
                    next = next.min(s.next_team);
                }
                if snap.flows.period_ms.is_some() {
                    next = next.min(s.next_flows);
                }
                let nap = next.saturating_duration_since(Instant::now()).min(MAX_NAP);
                std::thread::sleep(nap);
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the sampler thread: {e}"))
}
