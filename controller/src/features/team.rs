//! The team feature: NIC teams, each VM's uplink and allocation (`policy::team`), link
//! changes handled the moment the kernel announces them, and the announcements that tell the
//! network where a moved VM is now.
//!
//! With a team configured xnic switches VM traffic itself: every port is a redirect target
//! (`TX_PORTS`), and port entries say so (`PORT_SWITCH`, and `PORT_TEAM` with the team and
//! member on uplinks). A member that disappears is down for its team; when it comes back
//! (maybe with a new ifindex) it is up again after the hold-down.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use tracing::{info, warn};
use xnic_common::{
    maps::{Counter, PORT_SWITCH, PORT_TEAM},
    shaper::VM_TEAM_SHAPED,
    team::{
        CarrierKey, FLOW_HASH_MEMBER, MAX_TEAM_MEMBERS, MIN_RATE_BYTES_PER_SEC, NO_MEMBER,
        RATE_SHIFT, TEAM_TABLE_SIZE, TeamEntry, VM_TEAM_SHED, VmTeam, member_down, member_index,
        rate_fields, table_index,
    },
};
use xnic_proto::{
    api::{
        Count, EventDetail, TeamEvent, TeamMoveView, TeamStatusView, TeamUplinkView, TeamView,
        TeamVmView,
    },
    config::{AllocationMode, Config},
    net::{IpNet, MacAddr},
};

use super::{Context, Feature, Slots};
use crate::{
    announce::{self, Announcer},
    events::NewEvent,
    monitor::links::{Interfaces, LinkEvent},
    policy::{
        plan::{Image, ShapeClass, TxPort, put},
        team::{MemberSpec, Move, MoveCause, Placement, TeamSpec, Teaming, VmSpec, Where},
    },
};

/// A burst of 5 ms at the allocated rate absorbs a guest's scheduling jitter; 16 KiB lets a
/// few full-size frames through back to back even at low rates.
const DEFAULT_BURST_MS: f64 = 5.0;
const MIN_DEFAULT_BURST: u64 = 16 * 1024;

/// The burst a VM's allocation gets when its configuration names none.
pub fn default_burst_bytes(rate_bytes_per_sec: u64) -> u64 {
    ((rate_bytes_per_sec as f64 * DEFAULT_BURST_MS / 1000.0) as u64).max(MIN_DEFAULT_BURST)
}

/// The monotonic clock the dataplane uses (`bpf_ktime_get_ns`), in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// One period's measurements, taken by the sampler: per teamed VM, frames and bytes it sent
/// through each member of its team.
#[derive(Clone, Debug)]
pub struct TeamSample {
    pub at: Instant,
    pub vms: BTreeMap<String, Vec<Counter>>,
    /// `MEMBER_DOWN`, by `member_index`.
    pub member_down: Vec<u64>,
}

/// A member the kernel found dead while the daemon has it up and usable is reported once its
/// mark is this old: long enough for the link-down the kernel noticed first to have reached
/// the daemon (then the member is no longer usable and nothing is reported).
const KERNEL_MARK_SETTLE_NS: u64 = 100_000_000;

/// A teamed VM as the feature knows it, in policy order.
#[derive(Clone, Debug)]
struct TeamVm {
    name: String,
    burst_bytes: Option<u64>,
    mode: AllocationMode,
    macs: Vec<MacAddr>,
    ips: Vec<IpNet>,
}

/// A placement change waiting for its writes, to become an event once they are done.
#[derive(Clone, Debug)]
struct Pending {
    kind: &'static str,
    team: usize,
    uplink: Option<String>,
    moves: Vec<Move>,
    /// When the cause reached the daemon (the kernel's link event, or the period's start).
    seen: Instant,
}

#[derive(Clone, Debug)]
struct Teams {
    policy: Teaming,
    /// Member names per team, in failover order.
    members: Vec<Vec<String>>,
    vms: Vec<TeamVm>,
    announce_count: u32,
    period_ms: u64,
    /// Per policy VM: bits per second sent; per team × member: bits and frames per second.
    vm_bps: Vec<f64>,
    member_rate: Vec<Vec<(f64, f64)>>,
    last: Option<TeamSample>,
    /// By `member_index`: when the daemon put a member the kernel had found dead back in use
    /// (after the hold-down), and the kernel's mark it last reported.
    rearmed_ns: BTreeMap<u32, u64>,
    reported_mark: BTreeMap<u32, u64>,
}

#[derive(Clone, Default)]
pub struct Team {
    teams: Option<Teams>,
    /// The packet socket announcements go out of, opened once (`None` without the privilege).
    announcer: Option<std::sync::Arc<Announcer>>,
    /// Flow-hash seed, shared by all teams, kept in the pinned maps so flows do not move
    /// between members when the daemon restarts.
    seed: u32,
    pending: Vec<Pending>,
    /// The inode number of the network namespace the uplinks live in (the daemon's), which
    /// the kernel's carrier hook matches devices by; 0 if unknown (then nothing is watched).
    netns: u32,
    /// When this daemon took over: a member in use since before counts as in use since then,
    /// so a carrier loss the kernel noted before (and that came back) is not taken as news.
    started_ns: u64,
}

/// The teams, members and teamed VMs `config` describes, in policy terms.
fn specs(config: &Config) -> (Vec<TeamSpec>, Vec<Vec<String>>, Vec<VmSpec>, Vec<TeamVm>) {
    let teams: Vec<TeamSpec> = config
        .teams
        .iter()
        .map(|t| TeamSpec {
            name: t.name.clone(),
            members: t
                .uplinks
                .iter()
                .map(|u| MemberSpec {
                    name: u.clone(),
                    capacity_bps: config
                        .uplinks
                        .iter()
                        .find(|x| &x.name == u)
                        .and_then(|x| x.capacity_mbps)
                        .map(|c| (c * 1e6) as u64),
                })
                .collect(),
            placement: t.policy,
            failback_hold_ns: t.failback_hold_ms * 1_000_000,
            load: t.load.clone(),
        })
        .collect();
    let members = config.teams.iter().map(|t| t.uplinks.clone()).collect();
    let mut vm_specs = Vec::new();
    let mut vms = Vec::new();
    for (i, vc) in config.vms.iter().enumerate() {
        let Some(team) = config.team_of(vc) else {
            continue;
        };
        let tc = &config.teams[team];
        let macs = vc.mac_addrs();
        let key = macs.first().map_or(i as u64, |m| {
            m.0.iter().fold(0u64, |a, b| a << 8 | *b as u64)
        });
        vm_specs.push(VmSpec {
            name: vc.name.clone(),
            team,
            placement: vc.team_policy.unwrap_or(tc.policy),
            pinned: vc
                .uplink
                .as_ref()
                .and_then(|u| tc.uplinks.iter().position(|x| x == u)),
            alloc_bps: vc.bandwidth_mbps.map(|m| (m * 1e6) as u64),
            priority: vc.priority,
            key,
            pause_ns: vc.failover_pause_ms * 1_000_000,
        });
        vms.push(TeamVm {
            name: vc.name.clone(),
            burst_bytes: vc.burst_kib.map(|k| k as u64 * 1024),
            mode: vc.allocation_mode,
            macs,
            ips: vc.ip_nets(),
        });
    }
    (teams, members, vm_specs, vms)
}

fn member_up(host: &Interfaces, name: &str) -> bool {
    host.get(name).is_some_and(|l| l.up)
}

fn cause_kind(cause: MoveCause) -> &'static str {
    match cause {
        MoveCause::Failback => "failback",
        MoveCause::Load => "rebalance",
        MoveCause::LinkDown => "link_down",
        MoveCause::Config => "replaced",
    }
}

impl Teams {
    fn build(config: &Config, host: &Interfaces) -> Teams {
        let (specs, members, vm_specs, vms) = specs(config);
        let up: Vec<Vec<bool>> = members
            .iter()
            .map(|ms: &Vec<String>| ms.iter().map(|m| member_up(host, m)).collect())
            .collect();
        let n = vms.len();
        Teams {
            policy: Teaming::new(specs, vm_specs, &up),
            member_rate: members.iter().map(|m| vec![(0.0, 0.0); m.len()]).collect(),
            members,
            vms,
            announce_count: config
                .teams
                .iter()
                .map(|t| t.announce_count)
                .max()
                .unwrap_or(1),
            period_ms: config
                .teams
                .iter()
                .map(|t| t.period_ms)
                .min()
                .unwrap_or(500),
            vm_bps: vec![0.0; n],
            last: None,
            rearmed_ns: BTreeMap::new(),
            reported_mark: BTreeMap::new(),
        }
    }

    fn vm_index(&self, name: &str) -> Option<usize> {
        self.vms.iter().position(|v| v.name == name)
    }

    fn where_name(&self, team: usize, w: Where) -> String {
        match w {
            Where::Member(m) => self.members[team][m].clone(),
            Where::FlowHash => "flow-hash".into(),
            Where::Nowhere => "none".into(),
        }
    }

    /// What `VM_TEAM` holds for policy VM `v` given its outcome.
    fn entry(&self, v: usize, out: &crate::policy::team::VmOutcome, host: &Interfaces) -> VmTeam {
        let team = self.policy.vm_spec(v).team;
        let member = match out.at {
            Where::Member(m) => m as u32,
            Where::FlowHash => FLOW_HASH_MEMBER,
            Where::Nowhere => NO_MEMBER,
        };
        let shaped = self.vms[v].mode == AllocationMode::Shaped
            && out.rate_bps.is_some_and(|bps| bps / 8 != 0);
        let (ns_per_byte_q16, burst_ns) = match out.rate_bps {
            None => (0, 0),
            Some(bps) => {
                let bytes = bps / 8;
                let burst = self.vms[v]
                    .burst_bytes
                    .unwrap_or_else(|| default_burst_bytes(bytes));
                rate_fields(bytes, burst)
            }
        };
        let flood_ifindex = out
            .flood
            .and_then(|m| host.get(&self.members[team][m]))
            .map_or(0, |l| l.ifindex);
        VmTeam {
            team: team as u32,
            member,
            flood_ifindex,
            flood_member: out.flood.map_or(NO_MEMBER, |m| m as u32),
            flags: if out.shed { VM_TEAM_SHED } else { 0 }
                | if shaped { VM_TEAM_SHAPED } else { 0 },
            fallback: out.fallbacks,
            ns_per_byte_q16,
            burst_ns,
            pause_until_ns: out.pause_until_ns,
        }
    }
}

impl Team {
    /// Since when member `m` of team `ti` is in use, as `MEMBER_UP` says (`None`: not usable).
    fn in_use_since(&self, t: &Teams, ti: usize, m: usize) -> Option<u64> {
        let since = t.policy.member_usable_since(ti, m)?;
        let rearmed = t
            .rearmed_ns
            .get(&member_index(ti as u32, m as u32))
            .copied()
            .unwrap_or(0);
        Some(since.max(self.started_ns).max(rearmed).max(1))
    }

    /// Members the kernel found dead (`MEMBER_DOWN`) that the daemon still has up: reported
    /// once, and put back in use after the team's hold-down, so a transient failure does not
    /// leave a member unused for good (if it is still dead, the kernel marks it again).
    /// Returns whether the image changed.
    fn review_kernel_marks(
        &mut self,
        now_ns: u64,
        marks: &[u64],
        events: &mut Vec<NewEvent>,
    ) -> bool {
        let Some(t) = &self.teams else {
            return false;
        };
        let mut report = Vec::new();
        let mut rearm = Vec::new();
        for ti in 0..t.policy.teams() {
            for m in 0..t.members[ti].len() {
                let index = member_index(ti as u32, m as u32);
                let (Some(in_use), Some(&mark)) =
                    (self.in_use_since(t, ti, m), marks.get(index as usize))
                else {
                    continue;
                };
                let age = now_ns.saturating_sub(mark);
                if !member_down(mark, in_use) || age < KERNEL_MARK_SETTLE_NS {
                    continue;
                }
                if t.reported_mark.get(&index) != Some(&mark) {
                    report.push((ti, m, index, mark));
                }
                if age >= t.policy.team_spec(ti).failback_hold_ns {
                    rearm.push(index);
                }
            }
        }
        let Some(t) = &mut self.teams else {
            return false;
        };
        for (ti, m, index, mark) in report {
            t.reported_mark.insert(index, mark);
            let team = t.policy.team_spec(ti).name.clone();
            let uplink = &t.members[ti][m];
            let message = format!(
                "team {team}: the kernel could not transmit on uplink {uplink} while its link \
                 is up; its VMs went to their fallbacks, and it is tried again after the \
                 hold-down"
            );
            events.push(NewEvent::new("team", "kernel_down", team, message));
        }
        for index in &rearm {
            t.rearmed_ns.insert(*index, now_ns);
        }
        !rearm.is_empty()
    }

    /// Takes over the hash seed the pinned maps hold.
    pub fn adopt(cx: &Context, pinned: &Image) -> Team {
        let seed = match pinned.teams.values().next().map(|t| t.seed) {
            Some(s) if s != 0 => s,
            _ => super::rss::fresh_seed(),
        };
        let announcer = match Announcer::open() {
            Ok(a) => Some(std::sync::Arc::new(a)),
            Err(e) => {
                warn!(error = %e, "cannot open a packet socket: moved MACs will not be announced");
                None
            }
        };
        Team {
            teams: (!cx.desired.teams.is_empty()).then(|| Teams::build(cx.desired, cx.host)),
            announcer,
            seed,
            pending: Vec::new(),
            netns: match crate::netns::current_inum() {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "the kernel's carrier hook cannot watch the uplinks");
                    0
                }
            },
            started_ns: cx.now_ns,
        }
    }

    pub fn enabled(&self) -> bool {
        self.teams.is_some()
    }

    pub fn period_ms(&self) -> Option<u64> {
        self.teams.as_ref().map(|t| t.period_ms)
    }

    /// (VM name, slot) of every teamed VM, for the sampler.
    pub fn sample_plan(&self, slots: &Slots) -> Vec<(String, u32)> {
        self.teams.as_ref().map_or(Vec::new(), |t| {
            t.vms
                .iter()
                .filter_map(|v| slots.vm(&v.name).map(|s| (v.name.clone(), s)))
                .collect()
        })
    }

    /// A link changed (`seen`: when the kernel's event reached the daemon). Returns whether
    /// the image may have changed.
    pub fn link(&mut self, cx: &Context, event: &LinkEvent, seen: Instant) -> bool {
        let Some(teams) = &mut self.teams else {
            return false;
        };
        let (name, up) = match event {
            LinkEvent::New(l) => (l.name.as_str(), l.up),
            LinkEvent::Del(l) => (l.name.as_str(), false),
        };
        let mut changed = false;
        for t in 0..teams.members.len() {
            let Some(m) = teams.members[t].iter().position(|x| x == name) else {
                continue;
            };
            // A member recreated with a new ifindex: its entries change even if its state
            // does not.
            changed = true;
            if teams.policy.member_up(t, m) == up {
                continue;
            }
            let moves = teams.policy.link(t, m, up, cx.now_ns);
            let spec = teams.policy.team_spec(t);
            if up {
                info!(team = %spec.name, uplink = %name, hold_ms = spec.failback_hold_ns / 1_000_000, "team uplink up");
            } else {
                warn!(team = %spec.name, uplink = %name, vms_moved = moves.len(), "team uplink down: failing over");
            }
            self.pending.push(Pending {
                kind: if up { "link_up" } else { "link_down" },
                team: t,
                uplink: Some(name.to_string()),
                moves,
                seen,
            });
        }
        changed
    }

    /// Announces every VM whose broadcast uplink changed between the two images and turns
    /// the placement changes that waited for these writes into events.
    pub fn written(
        &mut self,
        slots: &Slots,
        before: &BTreeMap<u32, VmTeam>,
        after: &Image,
        events: &mut Vec<NewEvent>,
    ) {
        let Some(teams) = &self.teams else {
            self.pending.clear();
            return;
        };
        let moved: Vec<usize> = (0..teams.vms.len())
            .filter(|&v| {
                let Some(slot) = slots.vm(&teams.vms[v].name) else {
                    return false;
                };
                let new = after.vm_team.get(&slot).copied().unwrap_or_default();
                let old = before.get(&slot).copied().unwrap_or_default();
                // A VM new to its team has no old place for the network to forget.
                old.flood_ifindex != 0
                    && new.flood_ifindex != 0
                    && new.flood_ifindex != old.flood_ifindex
            })
            .collect();
        let switched = Instant::now();
        let (announced, announce_us) = self.announce(slots, after, &moved);
        let Some(teams) = &self.teams else { return };
        for p in std::mem::take(&mut self.pending) {
            let spec = teams.policy.team_spec(p.team);
            let switch_us = switched.duration_since(p.seen).as_micros() as u64;
            if p.kind == "link_down" {
                warn!(team = %spec.name, uplink = ?p.uplink, vms_moved = p.moves.len(), switch_us, announced, "team uplink down: failed over");
            } else if !p.moves.is_empty() {
                info!(team = %spec.name, kind = p.kind, vms_moved = p.moves.len(), switch_us, "team placement changed");
            }
            let message = match (&p.uplink, p.kind) {
                (Some(u), "link_down") => format!(
                    "team {}: uplink {u} down, {} VM(s) moved in {switch_us} µs",
                    spec.name,
                    p.moves.len()
                ),
                (Some(u), "link_up") => format!("team {}: uplink {u} up", spec.name),
                (Some(u), "failback") => format!(
                    "team {}: {} VM(s) back on {u} after the hold-down",
                    spec.name,
                    p.moves.len()
                ),
                _ => format!(
                    "team {}: {} VM(s) moved ({})",
                    spec.name,
                    p.moves.len(),
                    p.kind
                ),
            };
            let detail = TeamEvent {
                id: 0,
                unix_ms: 0,
                kind: p.kind.to_string(),
                team: spec.name.clone(),
                uplink: p.uplink.clone(),
                moves: p
                    .moves
                    .iter()
                    .map(|m| TeamMoveView {
                        vm: teams.policy.vm_spec(m.vm).name.clone(),
                        from: teams.where_name(p.team, m.from),
                        to: teams.where_name(p.team, m.to),
                        cause: format!("{:?}", m.cause).to_lowercase(),
                    })
                    .collect(),
                switch_us: Some(switch_us),
                announced,
                announce_us,
            };
            events.push(
                NewEvent::new("team", p.kind, spec.name.clone(), message)
                    .with(EventDetail::Team(detail)),
            );
        }
    }

    /// Announces VMs `moved` (policy indexes) on their broadcast uplink. Returns frames sent
    /// and the time it took.
    fn announce(&self, slots: &Slots, after: &Image, moved: &[usize]) -> (u32, Option<u64>) {
        let Some(teams) = &self.teams else {
            return (0, None);
        };
        if moved.is_empty() {
            return (0, None);
        }
        let Some(announcer) = &self.announcer else {
            return (0, None);
        };
        let started = Instant::now();
        let mut sent = 0;
        for _ in 0..teams.announce_count {
            for &v in moved {
                let vm = &teams.vms[v];
                let Some(entry) = slots.vm(&vm.name).and_then(|s| after.vm_team.get(&s)) else {
                    continue;
                };
                for frame in announce::frames(&vm.macs, &vm.ips) {
                    match announcer.send(entry.flood_ifindex, &frame) {
                        Ok(()) => sent += 1,
                        Err(e) => {
                            warn!(vm = %vm.name, ifindex = entry.flood_ifindex, error = %e, "announcing a moved VM failed")
                        }
                    }
                }
            }
        }
        (sent, Some(started.elapsed().as_micros() as u64))
    }

    /// The team view of VM `name`, if it is in a team; `counters` are its frames per member.
    pub fn vm_view(
        &self,
        cx: &Context,
        slots: &Slots,
        name: &str,
        counters: &[Counter],
    ) -> Option<TeamVmView> {
        let teams = self.teams.as_ref()?;
        let v = teams.vm_index(name)?;
        Some(self.vm_view_of(teams, cx, slots, v, counters))
    }

    fn vm_view_of(
        &self,
        teams: &Teams,
        cx: &Context,
        _slots: &Slots,
        v: usize,
        counters: &[Counter],
    ) -> TeamVmView {
        let spec = teams.policy.vm_spec(v);
        let team = spec.team;
        let out = teams.entry(v, &teams.policy.outcomes()[v], cx.host);
        let per_uplink = teams.members[team]
            .iter()
            .enumerate()
            .filter_map(|(m, member)| {
                let c = counters.get(m).copied().unwrap_or_default();
                (c.packets > 0).then(|| (member.clone(), Count::from(c)))
            })
            .collect();
        let granted = (out.ns_per_byte_q16 != 0).then(|| {
            if out.ns_per_byte_q16 == u64::MAX {
                0.0
            } else {
                8.0 * 1e3 * (1u64 << RATE_SHIFT) as f64 / out.ns_per_byte_q16 as f64
            }
        });
        TeamVmView {
            name: spec.name.clone(),
            team: teams.policy.team_spec(team).name.clone(),
            policy: spec.placement.name().to_string(),
            pinned_uplink: spec.pinned.map(|m| teams.members[team][m].clone()),
            uplink: teams.where_name(team, teams.policy.at(v)),
            flood_uplink: (out.flood_member < MAX_TEAM_MEMBERS)
                .then(|| teams.members[team][out.flood_member as usize].clone()),
            priority: spec.priority,
            allocation_mbps: spec.alloc_bps.map(|b| b as f64 / 1e6),
            burst_kib: teams.vms[v].burst_bytes.map(|b| (b / 1024) as u32),
            allocation_mode: teams.vms[v].mode.name().to_string(),
            shaper: None,
            granted_mbps: granted,
            shed: out.flags & VM_TEAM_SHED != 0,
            paused_ms: out.pause_until_ns.saturating_sub(cx.now_ns) / 1_000_000,
            sent_mbps: teams.vm_bps[v] / 1e6,
            per_uplink,
        }
    }

    /// The status view; `counters(vm)` gives a VM's frames per member.
    pub fn status(
        &self,
        cx: &Context,
        slots: &Slots,
        counters: impl Fn(&str) -> Vec<Counter>,
        event_counts: BTreeMap<String, u64>,
    ) -> Option<TeamStatusView> {
        let t = self.teams.as_ref()?;
        let policy = &t.policy;
        let teams = (0..policy.teams())
            .map(|ti| {
                let spec = policy.team_spec(ti);
                TeamView {
                    name: spec.name.clone(),
                    policy: spec.placement.name().to_string(),
                    failback_hold_ms: spec.failback_hold_ns / 1_000_000,
                    rx_uplink: policy.rx_member(ti).map(|m| t.members[ti][m].clone()),
                    uplinks: t.members[ti]
                        .iter()
                        .enumerate()
                        .map(|(m, member)| {
                            let usable = policy.member_usable(ti, m);
                            let state = match (policy.member_up(ti, m), usable) {
                                (true, true) => "up",
                                (true, false) => "holding",
                                _ => "down",
                            };
                            let (bps, pps) = t.member_rate[ti][m];
                            TeamUplinkView {
                                name: member.clone(),
                                ifindex: cx.host.get(member).map_or(0, |l| l.ifindex),
                                state: state.into(),
                                failback_in_ms: policy
                                    .failback_at(ti, m)
                                    .map(|at| at.saturating_sub(cx.now_ns) / 1_000_000),
                                capacity_mbps: spec.members[m].capacity_bps.map(|c| c as f64 / 1e6),
                                load_mbps: bps / 1e6,
                                load_pps: pps,
                                vms: (0..t.vms.len())
                                    .filter(|&v| {
                                        policy.vm_spec(v).team == ti
                                            && match policy.at(v) {
                                                Where::Member(x) => x == m,
                                                Where::FlowHash => usable,
                                                Where::Nowhere => false,
                                            }
                                    })
                                    .map(|v| policy.vm_spec(v).name.clone())
                                    .collect(),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        Some(TeamStatusView {
            teams,
            vms: (0..t.vms.len())
                .map(|v| self.vm_view_of(t, cx, slots, v, &counters(&t.vms[v].name)))
                .collect(),
            shaper: BTreeMap::new(),
            event_counts,
        })
    }
}

impl Feature for Team {
    type Sample = TeamSample;

    fn reconcile(
        &mut self,
        cx: &Context,
        _slots: &Slots,
        events: &mut Vec<NewEvent>,
    ) -> Result<(), String> {
        if cx.desired.teams.is_empty() {
            if self.teams.take().is_some() {
                events.push(NewEvent::new(
                    "team",
                    "teaming_off",
                    "team",
                    "no team is configured: VM traffic goes through the kernel again",
                ));
            }
            return Ok(());
        }
        let Some(teams) = &mut self.teams else {
            self.teams = Some(Teams::build(cx.desired, cx.host));
            events.push(NewEvent::new(
                "team",
                "teaming_on",
                "team",
                format!(
                    "{} team(s) configured: xnic switches VM traffic",
                    cx.desired.teams.len()
                ),
            ));
            return Ok(());
        };
        let (specs, members, vm_specs, vms) = specs(cx.desired);
        let host = cx.host;
        let moves = teams
            .policy
            .reconfigure(specs, vm_specs, |t, m| member_up(host, &members[t][m]));
        // Rates measured for VMs that stay.
        let old_bps: BTreeMap<String, f64> = teams
            .vms
            .iter()
            .zip(&teams.vm_bps)
            .map(|(v, b)| (v.name.clone(), *b))
            .collect();
        teams.vm_bps = vms
            .iter()
            .map(|v| old_bps.get(&v.name).copied().unwrap_or(0.0))
            .collect();
        teams.member_rate = members.iter().map(|m| vec![(0.0, 0.0); m.len()]).collect();
        teams.members = members;
        teams.vms = vms;
        teams.announce_count = cx
            .desired
            .teams
            .iter()
            .map(|t| t.announce_count)
            .max()
            .unwrap_or(1);
        teams.period_ms = cx
            .desired
            .teams
            .iter()
            .map(|t| t.period_ms)
            .min()
            .unwrap_or(500);
        let mut by_team: BTreeMap<usize, Vec<Move>> = BTreeMap::new();
        for m in moves {
            by_team
                .entry(teams.policy.vm_spec(m.vm).team)
                .or_default()
                .push(m);
        }
        for (team, moves) in by_team {
            self.pending.push(Pending {
                kind: "replaced",
                team,
                uplink: None,
                moves,
                seen: Instant::now(),
            });
        }
        Ok(())
    }

    fn render(&self, cx: &Context, slots: &Slots, image: &mut Image) {
        let Some(t) = &self.teams else {
            return;
        };
        // Switching: every port is a redirect target, and says so in its entry.
        let uplinks: BTreeMap<&str, (u8, u8)> = t
            .members
            .iter()
            .enumerate()
            .flat_map(|(ti, ms)| {
                ms.iter()
                    .enumerate()
                    .map(move |(m, u)| (u.as_str(), (ti as u8, m as u8)))
            })
            .collect();
        for (name, a) in &image.attach {
            let member = uplinks.get(name.as_str()).copied();
            image.tx_ports.insert(
                a.ifindex,
                TxPort {
                    flood_filter: member.map(|_| cx.programs.flood),
                },
            );
            if let Some(p) = image.ports.get_mut(&a.ifindex) {
                p.flags |= PORT_SWITCH;
                if let Some((team, m)) = member {
                    p.flags |= PORT_TEAM;
                    p.team = team;
                    p.member = m;
                }
            }
        }
        let outcomes = t.policy.outcomes();
        for (v, out) in outcomes.iter().enumerate() {
            let Some(slot) = slots.vm(&t.vms[v].name) else {
                continue;
            };
            let entry = t.entry(v, out, cx.host);
            put(&mut image.vm_team, slot, entry);
            // A shaped VM's class on every member of its team, so the kernel path's
            // fallbacks find one too.
            if entry.flags & VM_TEAM_SHAPED != 0 {
                let rate = out
                    .rate_bps
                    .map_or(0, |b| (b / 8).max(MIN_RATE_BYTES_PER_SEC));
                for member in &t.members[entry.team as usize] {
                    if let Some(l) = cx.host.get(member) {
                        image.shaper_roots.insert(l.ifindex, l.name.clone());
                        image
                            .shaper_classes
                            .insert((l.ifindex, slot), ShapeClass::new(rate, entry.burst_ns));
                    }
                }
            }
        }
        // VMs in no team: the dataplane leaves their frames to the kernel (the default).
        let flow_hash_teams: BTreeSet<usize> = (0..t.vms.len())
            .filter(|&v| t.policy.vm_spec(v).placement == Placement::FlowHash)
            .map(|v| t.policy.vm_spec(v).team)
            .collect();
        for ti in 0..t.policy.teams() {
            let mut entry = TeamEntry {
                rx_member: t.policy.rx_member(ti).map_or(NO_MEMBER, |m| m as u32),
                seed: self.seed,
                ..TeamEntry::default()
            };
            for (m, member) in t.members[ti].iter().enumerate() {
                entry.ifindex[m] = cx.host.get(member).map_or(0, |l| l.ifindex);
            }
            put(&mut image.teams, ti as u32, entry);
            for (m, member) in t.members[ti].iter().enumerate() {
                let index = member_index(ti as u32, m as u32);
                if let Some(since) = self.in_use_since(t, ti, m) {
                    put(&mut image.member_up, index, since);
                }
                let kernel_failover = cx.desired.teams.get(ti).is_none_or(|c| c.kernel_failover);
                if let Some(l) = cx.host.get(member)
                    && self.netns != 0
                    && kernel_failover
                {
                    let key = CarrierKey {
                        netns: self.netns,
                        ifindex: l.ifindex,
                    };
                    image.carrier_watch.insert(key, index);
                }
            }
            // Only teams with flow-hash VMs use a table: the others' failovers need not
            // rewrite one.
            if flow_hash_teams.contains(&ti) {
                for (b, member) in t.policy.table(ti).iter().enumerate() {
                    debug_assert!((b as u32) < TEAM_TABLE_SIZE);
                    put(
                        &mut image.team_tables,
                        table_index(ti as u32, b as u32),
                        *member,
                    );
                }
            }
        }
    }

    fn tick(
        &mut self,
        cx: &Context,
        _slots: &Slots,
        sample: TeamSample,
        events: &mut Vec<NewEvent>,
    ) -> bool {
        let rearmed = self.review_kernel_marks(cx.now_ns, &sample.member_down, events);
        let Some(t) = &mut self.teams else {
            return false;
        };
        let started = Instant::now();
        if let Some(prev) = &t.last {
            let dt = sample.at.duration_since(prev.at).as_secs_f64().max(1e-3);
            for rates in &mut t.member_rate {
                rates.iter_mut().for_each(|r| *r = (0.0, 0.0));
            }
            for (v, vm) in t.vms.iter().enumerate() {
                let (Some(cur), Some(old)) = (sample.vms.get(&vm.name), prev.vms.get(&vm.name))
                else {
                    continue;
                };
                let team = t.policy.vm_spec(v).team;
                let mut bits = 0.0;
                for (m, (c, o)) in cur.iter().zip(old).enumerate() {
                    let b = c.bytes.wrapping_sub(o.bytes) as f64 * 8.0 / dt;
                    let p = c.packets.wrapping_sub(o.packets) as f64 / dt;
                    bits += b;
                    if let Some(r) = t.member_rate[team].get_mut(m) {
                        r.0 += b;
                        r.1 += p;
                    }
                }
                t.vm_bps[v] = bits;
            }
        }
        t.last = Some(sample);
        let moves = t.policy.tick(cx.now_ns, &t.vm_bps);
        if moves.is_empty() {
            return rearmed;
        }
        // Group by team and cause: a failback of one member is one event.
        let mut groups: BTreeMap<(usize, &'static str), Vec<Move>> = BTreeMap::new();
        for mv in moves {
            let team = t.policy.vm_spec(mv.vm).team;
            groups
                .entry((team, cause_kind(mv.cause)))
                .or_default()
                .push(mv);
        }
        for ((team, kind), moves) in groups {
            let uplink = moves.iter().find_map(|m| match m.to {
                Where::Member(x) if kind == "failback" => Some(t.members[team][x].clone()),
                _ => None,
            });
            self.pending.push(Pending {
                kind,
                team,
                uplink,
                moves,
                seen: started,
            });
        }
        true
    }
}
