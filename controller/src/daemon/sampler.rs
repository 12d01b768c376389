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

use tracing::{debug, warn};

use super::sample::{Rates, Sample};
use crate::{
    dataplane::{Counters, FlowReader, PinDir},
    features::team::monotonic_ns,
    features::{flows::FlowSample, rss::RssSample, team::TeamSample},
    monitor::{
        changes::ChangeWatch,
        conntrack::{Conntrack, CtEvents},
        cpu::CpuMonitor,
        ct_mirror::CtMirror,
    },
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

/// How often conntrack is dumped whole while its events keep the entries current: events
/// lost to a full socket are reported, so this only bounds how stale what events never carry
/// (the counters) may get.
const CONNTRACK_RESYNC_NS: u64 = 10_000_000_000;

/// A table this full weighs candidates against the flows in it by rate, which takes
/// conntrack's counters every period.
const PRESSURE_SHARE_PERCENT: u64 = 90;

/// What flow offload's measurements are read through, opened when offload first runs.
struct FlowSampler {
    conntrack: Conntrack,
    events: CtEvents,
    mirror: CtMirror,
    changes: ChangeWatch,
    table: FlowReader,
}

impl FlowSampler {
    fn open(pins: &PinDir) -> anyhow::Result<FlowSampler> {
        Ok(FlowSampler {
            conntrack: Conntrack::open()?,
            events: CtEvents::open()?,
            mirror: CtMirror::default(),
            changes: ChangeWatch::open()?,
            table: FlowReader::open(pins)?,
        })
    }

    fn sample(&mut self, snap: &Snapshot) -> anyhow::Result<FlowSample> {
        // What changed first: a change during the dump is seen again next period.
        let changed = self.changes.read();
        let now = monotonic_ns();
        let due = self
            .mirror
            .dumped_ns()
            .is_none_or(|t| now.saturating_sub(t) >= CONNTRACK_RESYNC_NS)
            || needs_counters(snap);
        let events = if due {
            // Events queued before the dump are in it.
            let _ = self.events.recv();
            None
        } else {
            match self.events.recv() {
                Ok(events) => Some(events),
                Err(e) => {
                    debug!(error = %format!("{e:#}"), "conntrack events lost; dumping conntrack");
                    None
                }
            }
        };
        match events {
            Some(events) => self.mirror.apply(events, now),
            None => self.mirror.replace(self.conntrack.dump()?, now),
        }
        Ok(FlowSample {
            changed,
            entries: self.mirror.entries(now),
            live: self.table.live(&snap.flow_slots)?,
        })
    }
}

/// Whether the policy needs conntrack's byte and packet counters this period: its elephant
/// thresholds, or a table full enough to weigh flows by rate.
fn needs_counters(snap: &Snapshot) -> bool {
    let thresholds = snap.config.flows.as_ref().is_some_and(|f| {
        f.min_bytes.is_some() || f.min_packets.is_some() || f.min_rate_kbps.is_some()
    });
    let s = &snap.flows;
    let pressed = u64::from(s.in_use) * 100 >= u64::from(s.capacity) * PRESSURE_SHARE_PERCENT;
    thresholds || pressed
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
                        match f.sample(&snap) {
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
