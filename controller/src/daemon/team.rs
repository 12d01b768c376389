//! Teaming at run time: turns `policy::team` decisions into `VM_TEAM`/`TEAMS`/`TEAM_TABLES`
//! entries, reacts to link events, measures loads every period, announces moved MACs, and
//! keeps the events.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use tracing::{info, warn};
use xnic_common::{
    maps::Counter,
    team::{
        FLOW_HASH_MEMBER, MAX_TEAM_MEMBERS, NO_MEMBER, TeamEntry, VM_TEAM_SHED, VmTeam, rate_fields,
    },
};

use super::state::{Port, Vm};
use crate::{
    announce::{self, Announcer},
    api::types::{
        Count, TeamEvent, TeamMoveView, TeamStatusView, TeamUplinkView, TeamView, TeamVmView,
    },
    config::Config,
    dataplane::Dataplane,
    policy::team::{MemberSpec, Move, MoveCause, TeamSpec, Teaming, VmSpec, Where},
};

/// Events kept for `xnic team events` (older ones are in the log).
const EVENT_HISTORY: usize = 1000;

/// A burst of 5 ms at the allocated rate absorbs a guest's scheduling jitter; 16 KiB lets a
/// few full-size frames through back to back even at low rates.
const DEFAULT_BURST_MS: f64 = 5.0;
const MIN_DEFAULT_BURST: u64 = 16 * 1024;

/// The monotonic clock the dataplane uses (`bpf_ktime_get_ns`), in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

struct Member {
    name: String,
    ifindex: u32,
}

struct TeamVm {
    /// Index into the daemon's VMs.
    vm: usize,
    slot: u32,
    burst_bytes: Option<u64>,
}

pub struct TeamRuntime {
    policy: Teaming,
    /// Flow-hash seed, shared by all teams.
    seed: u32,
    members: Vec<Vec<Member>>,
    /// Policy VM index → the daemon's VM.
    vms: Vec<TeamVm>,
    /// What was last written to `VM_TEAM`, per policy VM.
    written: Vec<VmTeam>,
    /// What was last written to `TEAMS` and `TEAM_TABLES`, per team (`None`: not yet), so a
    /// failover writes only what changed.
    written_teams: Vec<Option<(TeamEntry, Vec<u32>)>>,
    announce_count: u32,
    announcer: Option<Announcer>,
    events: VecDeque<TeamEvent>,
    next_event: u64,
    event_counts: BTreeMap<String, u64>,
    /// Per policy VM: counters per member at the last period, and when.
    last: Option<(Instant, Vec<Vec<Counter>>)>,
    /// Per policy VM: bits per second sent; per team × member: bits and frames per second.
    vm_bps: Vec<f64>,
    member_rate: Vec<Vec<(f64, f64)>>,
}

impl TeamRuntime {
    /// Writes the teams and every VM's placement. `link_up` says which uplinks are up now.
    pub fn start(
        config: &Config,
        vms: &[Vm],
        ports: &[Port],
        dp: &mut Dataplane,
        link_up: impl Fn(&str) -> bool,
    ) -> anyhow::Result<TeamRuntime> {
        // Keep the pinned seed: flows must not move between members when the daemon restarts.
        let seed = match dp.team(0)?.seed {
            0 => super::fresh_seed(),
            s => s,
        };
        let mut members = Vec::new();
        let mut specs = Vec::new();
        let mut up = Vec::new();
        for t in &config.teams {
            let ms: Vec<Member> = t
                .uplinks
                .iter()
                .map(|u| {
                    let port = ports
                        .iter()
                        .find(|p| &p.name == u)
                        .with_context(|| format!("team uplink {u} has no port"))?;
                    Ok(Member {
                        name: u.clone(),
                        ifindex: port.ifindex,
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            up.push(ms.iter().map(|m| link_up(&m.name)).collect());
            specs.push(TeamSpec {
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
            });
            members.push(ms);
        }
        let mut team_vms = Vec::new();
        let mut vm_specs = Vec::new();
        for (i, vc) in config.vms.iter().enumerate() {
            let Some(team) = config.team_of(vc) else {
                continue;
            };
            let tc = &config.teams[team];
            let Some(vm) = vms.iter().position(|v| v.name == vc.name) else {
                continue;
            };
            let alloc_bps = vc.bandwidth_mbps.map(|m| (m * 1e6) as u64);
            team_vms.push(TeamVm {
                vm,
                slot: vms[vm].slot,
                burst_bytes: vc.burst_kib.map(|k| k as u64 * 1024),
            });
            let key = vms[vm].macs.first().map_or(i as u64, |m| {
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
                alloc_bps,
                priority: vc.priority,
                key,
                pause_ns: vc.failover_pause_ms * 1_000_000,
            });
        }
        let policy = Teaming::new(specs, vm_specs, &up);
        let announcer = match Announcer::open() {
            Ok(a) => Some(a),
            Err(e) => {
                warn!(error = %e, "cannot open a packet socket: moved MACs will not be announced");
                None
            }
        };
        let n = team_vms.len();
        let member_rate = members.iter().map(|m| vec![(0.0, 0.0); m.len()]).collect();
        let mut rt = TeamRuntime {
            policy,
            seed,
            members,
            vms: team_vms,
            written: vec![VmTeam::default(); n],
            written_teams: vec![None; config.teams.len()],
            announce_count: config
                .teams
                .iter()
                .map(|t| t.announce_count)
                .max()
                .unwrap_or(1),
            announcer,
            events: VecDeque::new(),
            next_event: 1,
            event_counts: BTreeMap::new(),
            last: None,
            vm_bps: vec![0.0; n],
            member_rate,
        };
        // VMs in no team: the dataplane leaves their frames to the kernel.
        for v in vms {
            if !rt.vms.iter().any(|t| t.slot == v.slot) {
                dp.set_vm_team(v.slot, VmTeam::default())?;
            }
        }
        for tv in &rt.vms {
            dp.reset_vm_bucket(tv.slot)?;
        }
        // Nothing is announced at start: the VMs' uplinks did not change.
        rt.apply(dp)?;
        Ok(rt)
    }

    /// Writes what changed: tables, the group receivers, every VM whose entry differs.
    /// Returns the policy VMs whose flood uplink changed (to be announced).
    fn apply(&mut self, dp: &mut Dataplane) -> anyhow::Result<Vec<usize>> {
        let mut flood_moved = Vec::new();
        // VMs first: on a failover their entries are what moves them; the tables only matter
        // to flow-hash VMs.
        for (v, out) in self.policy.outcomes().into_iter().enumerate() {
            let spec = self.policy.vm_spec(v);
            let team = spec.team;
            let member = match out.at {
                Where::Member(m) => m as u32,
                Where::FlowHash => FLOW_HASH_MEMBER,
                Where::Nowhere => NO_MEMBER,
            };
            let (ns_per_byte_q16, burst_ns) = match out.rate_bps {
                None => (0, 0),
                Some(bps) => {
                    let bytes = bps / 8;
                    let burst = self.vms[v].burst_bytes.unwrap_or_else(|| {
                        ((bytes as f64 * DEFAULT_BURST_MS / 1000.0) as u64).max(MIN_DEFAULT_BURST)
                    });
                    rate_fields(bytes, burst)
                }
            };
            let entry = VmTeam {
                team: team as u32,
                member,
                flood_ifindex: out.flood.map_or(0, |m| self.members[team][m].ifindex),
                flood_member: out.flood.map_or(NO_MEMBER, |m| m as u32),
                flags: if out.shed { VM_TEAM_SHED } else { 0 },
                _pad: 0,
                ns_per_byte_q16,
                burst_ns,
                pause_until_ns: out.pause_until_ns,
            };
            if entry != self.written[v] {
                if entry.flood_member != self.written[v].flood_member && entry.flood_ifindex != 0 {
                    flood_moved.push(v);
                }
                dp.set_vm_team(self.vms[v].slot, entry)?;
                self.written[v] = entry;
            }
        }
        for t in 0..self.policy.teams() {
            let mut entry = TeamEntry {
                rx_member: self.policy.rx_member(t).map_or(NO_MEMBER, |m| m as u32),
                seed: self.seed,
                ..Default::default()
            };
            for (m, member) in self.members[t].iter().enumerate() {
                entry.ifindex[m] = member.ifindex;
            }
            let table = self.policy.table(t);
            let before = self.written_teams[t].as_ref();
            dp.set_team_table(t as u32, table, before.map(|(_, tb)| tb.as_slice()))?;
            if before.is_none_or(|(e, _)| *e != entry) {
                dp.set_team(t as u32, entry)?;
            }
            self.written_teams[t] = Some((entry, table.to_vec()));
        }
        Ok(flood_moved)
    }

    /// Whether `ifindex` is a team member, and which.
    pub fn member_of(&self, ifindex: u32) -> Option<(usize, usize)> {
        self.members
            .iter()
            .enumerate()
            .find_map(|(t, ms)| ms.iter().position(|m| m.ifindex == ifindex).map(|m| (t, m)))
    }

    /// A member's link changed (`seen`: when the daemon received the kernel's event).
    pub fn link(
        &mut self,
        dp: &mut Dataplane,
        vms: &[Vm],
        ifindex: u32,
        up: bool,
        seen: Instant,
    ) -> anyhow::Result<()> {
        let Some((t, m)) = self.member_of(ifindex) else {
            return Ok(());
        };
        if self.policy.member_up(t, m) == up {
            return Ok(());
        }
        let moves = self.policy.link(t, m, up, monotonic_ns());
        let flood_moved = self.apply(dp)?;
        let switch_us = seen.elapsed().as_micros() as u64;
        let (announced, announce_us) = self.announce(vms, &flood_moved);
        let kind = if up { "link_up" } else { "link_down" };
        let name = self.members[t][m].name.clone();
        if up {
            info!(team = %self.policy.team_spec(t).name, uplink = %name, hold_ms = self.policy.team_spec(t).failback_hold_ns / 1_000_000, "team uplink up");
        } else {
            warn!(team = %self.policy.team_spec(t).name, uplink = %name, vms_moved = moves.len(), switch_us, announced, "team uplink down: failed over");
        }
        self.event(
            kind,
            t,
            Some(name),
            &moves,
            Some(switch_us),
            announced,
            announce_us,
        );
        Ok(())
    }

    /// One period: measure loads, let the policy fail back and rebalance, write changes.
    pub fn tick(&mut self, dp: &mut Dataplane, vms: &[Vm]) -> anyhow::Result<()> {
        self.measure(dp)?;
        let started = Instant::now();
        let moves = self.policy.tick(monotonic_ns(), &self.vm_bps);
        if moves.is_empty() {
            return Ok(());
        }
        let flood_moved = self.apply(dp)?;
        let switch_us = started.elapsed().as_micros() as u64;
        let (announced, announce_us) = self.announce(vms, &flood_moved);
        // Group by team and cause: a failback of one member is one event.
        let mut groups: BTreeMap<(usize, &'static str), Vec<Move>> = BTreeMap::new();
        for mv in moves {
            let team = self.policy.vm_spec(mv.vm).team;
            let kind = match mv.cause {
                MoveCause::Failback => "failback",
                MoveCause::Load => "rebalance",
                MoveCause::LinkDown => "link_down",
            };
            groups.entry((team, kind)).or_default().push(mv);
        }
        for ((t, kind), moves) in groups {
            let uplink = moves.iter().find_map(|m| match m.to {
                Where::Member(x) if kind == "failback" => Some(self.members[t][x].name.clone()),
                _ => None,
            });
            info!(team = %self.policy.team_spec(t).name, kind, vms_moved = moves.len(), "team placement changed");
            self.event(
                kind,
                t,
                uplink,
                &moves,
                Some(switch_us),
                announced,
                announce_us,
            );
        }
        Ok(())
    }

    fn measure(&mut self, dp: &Dataplane) -> anyhow::Result<()> {
        let now = Instant::now();
        let counters: Vec<Vec<Counter>> = self
            .vms
            .iter()
            .map(|v| dp.team_vm_counters(v.slot))
            .collect::<anyhow::Result<_>>()?;
        if let Some((at, prev)) = &self.last {
            let dt = now.duration_since(*at).as_secs_f64().max(1e-3);
            for rates in &mut self.member_rate {
                rates.iter_mut().for_each(|r| *r = (0.0, 0.0));
            }
            for (v, (cur, old)) in counters.iter().zip(prev).enumerate() {
                let team = self.policy.vm_spec(v).team;
                let mut bits = 0.0;
                for (m, (c, o)) in cur.iter().zip(old).enumerate() {
                    let b = c.bytes.wrapping_sub(o.bytes) as f64 * 8.0 / dt;
                    let p = c.packets.wrapping_sub(o.packets) as f64 / dt;
                    bits += b;
                    if let Some(r) = self.member_rate[team].get_mut(m) {
                        r.0 += b;
                        r.1 += p;
                    }
                }
                self.vm_bps[v] = bits;
            }
        }
        self.last = Some((now, counters));
        Ok(())
    }

    /// Announces the VMs whose flood uplink changed on that uplink. Returns frames sent and
    /// the time it took.
    fn announce(&self, vms: &[Vm], moved: &[usize]) -> (u32, Option<u64>) {
        let Some(announcer) = &self.announcer else {
            return (0, None);
        };
        if moved.is_empty() {
            return (0, None);
        }
        let started = Instant::now();
        let mut sent = 0;
        for _ in 0..self.announce_count {
            for &v in moved {
                let ifindex = self.written[v].flood_ifindex;
                let vm = &vms[self.vms[v].vm];
                for frame in announce::frames(&vm.macs, &vm.ips) {
                    match announcer.send(ifindex, &frame) {
                        Ok(()) => sent += 1,
                        Err(e) => {
                            warn!(vm = %vm.name, ifindex, error = %e, "announcing a moved VM failed")
                        }
                    }
                }
            }
        }
        (sent, Some(started.elapsed().as_micros() as u64))
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        kind: &str,
        team: usize,
        uplink: Option<String>,
        moves: &[Move],
        switch_us: Option<u64>,
        announced: u32,
        announce_us: Option<u64>,
    ) {
        let moves = moves
            .iter()
            .map(|m| TeamMoveView {
                vm: self.policy.vm_spec(m.vm).name.clone(),
                from: self.where_name(team, m.from),
                to: self.where_name(team, m.to),
                cause: format!("{:?}", m.cause).to_lowercase(),
            })
            .collect();
        *self.event_counts.entry(kind.to_string()).or_default() += 1;
        if self.events.len() == EVENT_HISTORY {
            self.events.pop_front();
        }
        self.events.push_back(TeamEvent {
            id: self.next_event,
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            kind: kind.to_string(),
            team: self.policy.team_spec(team).name.clone(),
            uplink,
            moves,
            switch_us,
            announced,
            announce_us,
        });
        self.next_event += 1;
    }

    fn where_name(&self, team: usize, w: Where) -> String {
        match w {
            Where::Member(m) => self.members[team][m].name.clone(),
            Where::FlowHash => "flow-hash".into(),
            Where::Nowhere => "none".into(),
        }
    }

    pub fn events(&self, since: u64) -> Vec<TeamEvent> {
        self.events
            .iter()
            .filter(|e| e.id > since)
            .cloned()
            .collect()
    }

    /// The team view of the daemon's VM `vm`, if it is in a team.
    pub fn vm_view(&self, dp: &Dataplane, vm: usize) -> Option<TeamVmView> {
        let v = self.vms.iter().position(|t| t.vm == vm)?;
        Some(self.vm_view_of(dp, v))
    }

    fn vm_view_of(&self, dp: &Dataplane, v: usize) -> TeamVmView {
        let spec = self.policy.vm_spec(v);
        let team = spec.team;
        let out = self.written[v];
        let counters = dp.team_vm_counters(self.vms[v].slot).unwrap_or_default();
        let per_uplink = self.members[team]
            .iter()
            .enumerate()
            .filter_map(|(m, member)| {
                let c = counters.get(m).copied().unwrap_or_default();
                (c.packets > 0).then(|| (member.name.clone(), Count::from(c)))
            })
            .collect();
        let now = monotonic_ns();
        let granted = (out.ns_per_byte_q16 != 0).then(|| {
            if out.ns_per_byte_q16 == u64::MAX {
                0.0
            } else {
                8.0 * 1e3 * (1u64 << xnic_common::team::RATE_SHIFT) as f64
                    / out.ns_per_byte_q16 as f64
            }
        });
        TeamVmView {
            name: spec.name.clone(),
            team: self.policy.team_spec(team).name.clone(),
            policy: spec.placement.name().to_string(),
            pinned_uplink: spec.pinned.map(|m| self.members[team][m].name.clone()),
            uplink: self.where_name(team, self.policy.at(v)),
            flood_uplink: (out.flood_member < MAX_TEAM_MEMBERS)
                .then(|| self.members[team][out.flood_member as usize].name.clone()),
            priority: spec.priority,
            allocation_mbps: spec.alloc_bps.map(|b| b as f64 / 1e6),
            burst_kib: self.vms[v].burst_bytes.map(|b| (b / 1024) as u32),
            granted_mbps: granted,
            shed: out.flags & VM_TEAM_SHED != 0,
            paused_ms: out.pause_until_ns.saturating_sub(now) / 1_000_000,
            sent_mbps: self.vm_bps[v] / 1e6,
            per_uplink,
        }
    }

    pub fn status(&self, dp: &Dataplane) -> TeamStatusView {
        let now = monotonic_ns();
        let teams = (0..self.policy.teams())
            .map(|t| {
                let spec = self.policy.team_spec(t);
                TeamView {
                    name: spec.name.clone(),
                    policy: spec.placement.name().to_string(),
                    failback_hold_ms: spec.failback_hold_ns / 1_000_000,
                    rx_uplink: self
                        .policy
                        .rx_member(t)
                        .map(|m| self.members[t][m].name.clone()),
                    uplinks: self.members[t]
                        .iter()
                        .enumerate()
                        .map(|(m, member)| {
                            let usable = self.policy.member_usable(t, m);
                            let state = match (self.policy.member_up(t, m), usable) {
                                (true, true) => "up",
                                (true, false) => "holding",
                                _ => "down",
                            };
                            let (bps, pps) = self.member_rate[t][m];
                            TeamUplinkView {
                                name: member.name.clone(),
                                ifindex: member.ifindex,
                                state: state.into(),
                                failback_in_ms: self
                                    .policy
                                    .failback_at(t, m)
                                    .map(|at| at.saturating_sub(now) / 1_000_000),
                                capacity_mbps: spec.members[m].capacity_bps.map(|c| c as f64 / 1e6),
                                load_mbps: bps / 1e6,
                                load_pps: pps,
                                vms: (0..self.vms.len())
                                    .filter(|&v| {
                                        self.policy.vm_spec(v).team == t
                                            && match self.policy.at(v) {
                                                Where::Member(x) => x == m,
                                                Where::FlowHash => usable,
                                                Where::Nowhere => false,
                                            }
                                    })
                                    .map(|v| self.policy.vm_spec(v).name.clone())
                                    .collect(),
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        TeamStatusView {
            teams,
            vms: (0..self.vms.len())
                .map(|v| self.vm_view_of(dp, v))
                .collect(),
            event_counts: self.event_counts.clone(),
        }
    }
}
