//! NIC teaming decisions: which uplink carries each VM, which rate each VM gets when uplinks
//! are short, and when members fail over and back. Pure: inputs in, decisions out; the time
//! is an argument (CLOCK_MONOTONIC nanoseconds), never read here.
//!
//! A member is *usable* while it is up and, after coming back, once it has stayed up for the
//! team's failback hold-down. Each VM is placed on usable members only:
//! - pinned (`uplink = ...`): that member while usable, else its policy's choice;
//! - `failover`: the first usable member in the team's order;
//! - `mac-hash`: rendezvous hashing of the VM's MAC over usable members, so losing a member
//!   moves only its VMs and its return moves only them back;
//! - `flow-hash`: per flow, through the team's flow table (buckets of a lost member are dealt
//!   to the survivors; nobody else's flows move);
//! - `load`: the least utilised member when the VM must be placed; afterwards, when one
//!   member stays busier than another by `rebalance_above` for `sustain_periods`, one VM
//!   moves per period, only if that lowers the busier member's utilisation by at least half
//!   the threshold (moving a VM that would just make the other member the busy one is
//!   refused), and never before `min_dwell_periods` since its last move (no ping-pong).
//!
//! Allocations are granted per member in priority order (higher first): when the allocations
//! placed on a member exceed its capacity, the last VMs get what remains, then nothing.

use serde::{Deserialize, Serialize};
use xnic_common::team::{MAX_FALLBACKS, NO_FALLBACK, TEAM_TABLE_SIZE};

pub use xnic_proto::config::{LoadParams, TeamPlacement as Placement};

#[derive(Clone, Debug, PartialEq)]
pub struct MemberSpec {
    pub name: String,
    /// Bits per second the member can carry, if known.
    pub capacity_bps: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TeamSpec {
    pub name: String,
    /// In failover order.
    pub members: Vec<MemberSpec>,
    pub placement: Placement,
    pub failback_hold_ns: u64,
    pub load: LoadParams,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VmSpec {
    pub name: String,
    pub team: usize,
    /// The VM's placement (its own, or its team's).
    pub placement: Placement,
    /// Member the VM is pinned to while it is usable.
    pub pinned: Option<usize>,
    /// Allocated bits per second; `None`: best effort, not limited.
    pub alloc_bps: Option<u64>,
    /// Higher keeps its allocation first.
    pub priority: i32,
    /// Identifies the VM for MAC hashing (its first MAC).
    pub key: u64,
    /// Frames are dropped for this long after a failover moves the VM.
    pub pause_ns: u64,
}

/// Where a VM's frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Where {
    Member(usize),
    /// Per flow, through the team's flow table.
    FlowHash,
    /// No member is usable.
    Nowhere,
}

/// Why a VM moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveCause {
    /// Its member lost its link.
    LinkDown,
    /// A better member became usable again after the hold-down.
    Failback,
    /// Load placement rebalanced.
    Load,
    /// The desired state changed: the VM's team, policy or pinned uplink, or its team.
    Config,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub vm: usize,
    pub from: Where,
    pub to: Where,
    pub cause: MoveCause,
}

/// What the dataplane needs for one VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmOutcome {
    pub at: Where,
    /// Where the dataplane sends the VM's frames, in turn, while `at`'s carrier is off and
    /// this policy has not moved the VM yet (see `Teaming::fallbacks`).
    /// Member indexes, [`NO_FALLBACK`] past the end.
    pub fallbacks: [u8; MAX_FALLBACKS],
    /// The member that carries the VM's broadcasts.
    pub flood: Option<usize>,
    /// Granted bits per second; `None`: unlimited.
    pub rate_bps: Option<u64>,
    /// The grant is below the allocation because the member is short.
    pub shed: bool,
    /// Frames are dropped until this time (0: not paused).
    pub pause_until_ns: u64,
}

#[derive(Clone, Debug)]
struct MemberState {
    up: bool,
    usable: bool,
    /// When it last came up (for the hold-down).
    up_since_ns: u64,
}

#[derive(Clone, Debug)]
struct TeamState {
    spec: TeamSpec,
    members: Vec<MemberState>,
    /// Flow-hash bucket → member.
    table: Vec<u32>,
    imbalanced_periods: u32,
}

#[derive(Clone, Debug)]
struct VmState {
    spec: VmSpec,
    at: Where,
    /// Period of the last move (for the dwell time).
    moved_period: Option<u64>,
    pause_until_ns: u64,
    /// Measured bits per second the VM sends.
    load_bps: f64,
}

/// The teaming decisions for every team and VM.
#[derive(Clone, Debug)]
pub struct Teaming {
    teams: Vec<TeamState>,
    vms: Vec<VmState>,
    period: u64,
}

impl Teaming {
    /// Places every VM given which members are up now (`up[team][member]`); members up at
    /// start are usable at once.
    pub fn new(teams: Vec<TeamSpec>, vms: Vec<VmSpec>, up: &[Vec<bool>]) -> Teaming {
        let teams = teams
            .into_iter()
            .enumerate()
            .map(|(t, spec)| {
                let members = (0..spec.members.len())
                    .map(|m| {
                        let up = up.get(t).and_then(|u| u.get(m)).copied().unwrap_or(false);
                        MemberState {
                            up,
                            usable: up,
                            up_since_ns: 0,
                        }
                    })
                    .collect();
                let mut team = TeamState {
                    spec,
                    members,
                    table: vec![u32::MAX; TEAM_TABLE_SIZE as usize],
                    imbalanced_periods: 0,
                };
                team.deal_table();
                team
            })
            .collect();
        let mut teaming = Teaming {
            teams,
            vms: vms
                .into_iter()
                .map(|spec| VmState {
                    spec,
                    at: Where::Nowhere,
                    moved_period: None,
                    pause_until_ns: 0,
                    load_bps: 0.0,
                })
                .collect(),
            period: 0,
        };
        // Heaviest allocations first, so load placement spreads them.
        let mut order: Vec<usize> = (0..teaming.vms.len()).collect();
        order.sort_by_key(|&v| std::cmp::Reverse(teaming.vms[v].spec.alloc_bps.unwrap_or(0)));
        for v in order {
            teaming.vms[v].at = teaming.choose(v);
        }
        teaming
    }

    /// Takes new specs (a change of the desired state), keeping what still holds: members'
    /// link state and hold-down by name, each VM's member where its spec still allows it.
    /// `up(team, member)` says whether a member new to its team is up. Returns the VMs that
    /// moved.
    pub fn reconfigure(
        &mut self,
        teams: Vec<TeamSpec>,
        vms: Vec<VmSpec>,
        up: impl Fn(usize, usize) -> bool,
    ) -> Vec<Move> {
        let old_teams = std::mem::take(&mut self.teams);
        let member_name = |t: &TeamState, m: usize| t.spec.members[m].name.clone();
        self.teams = teams
            .into_iter()
            .enumerate()
            .map(|(t, spec)| {
                let old = old_teams.iter().find(|o| o.spec.name == spec.name);
                let members: Vec<MemberState> = spec
                    .members
                    .iter()
                    .enumerate()
                    .map(|(m, ms)| {
                        let kept = old.and_then(|o| {
                            (0..o.members.len())
                                .find(|&i| o.spec.members[i].name == ms.name)
                                .map(|i| o.members[i].clone())
                        });
                        kept.unwrap_or_else(|| {
                            let up = up(t, m);
                            MemberState {
                                up,
                                usable: up,
                                up_since_ns: 0,
                            }
                        })
                    })
                    .collect();
                // The old table, in the new member numbering.
                let table = match old {
                    Some(o) => o
                        .table
                        .iter()
                        .map(|&b| {
                            if (b as usize) < o.members.len() {
                                let name = member_name(o, b as usize);
                                spec.members
                                    .iter()
                                    .position(|x| x.name == name)
                                    .map_or(u32::MAX, |i| i as u32)
                            } else {
                                u32::MAX
                            }
                        })
                        .collect(),
                    None => vec![u32::MAX; TEAM_TABLE_SIZE as usize],
                };
                let mut team = TeamState {
                    spec,
                    members,
                    table,
                    imbalanced_periods: old.map_or(0, |o| o.imbalanced_periods),
                };
                team.deal_table();
                team
            })
            .collect();
        let old_vms = std::mem::take(&mut self.vms);
        // By name: thousands of VMs, and this runs on every change.
        let old_by_name: std::collections::HashMap<&str, &VmState> =
            old_vms.iter().map(|o| (o.spec.name.as_str(), o)).collect();
        let mut moves = Vec::new();
        let mut fresh = Vec::new();
        self.vms = vms
            .into_iter()
            .enumerate()
            .map(|(v, spec)| {
                let old = old_by_name.get(spec.name.as_str()).copied();
                let Some(old) = old else {
                    fresh.push(v);
                    return VmState {
                        spec,
                        at: Where::Nowhere,
                        moved_period: None,
                        pause_until_ns: 0,
                        load_bps: 0.0,
                    };
                };
                let old_team = &old_teams[old.spec.team];
                // The member it was on, in its (maybe renumbered) team.
                let at = match old.at {
                    Where::Member(m) if old_team.spec.name == self.teams[spec.team].spec.name => {
                        let name = member_name(old_team, m);
                        self.teams[spec.team]
                            .spec
                            .members
                            .iter()
                            .position(|x| x.name == name)
                            .map_or(Where::Nowhere, Where::Member)
                    }
                    Where::FlowHash if old_team.spec.name == self.teams[spec.team].spec.name => {
                        Where::FlowHash
                    }
                    _ => Where::Nowhere,
                };
                let same_rules = old_team.spec.name == self.teams[spec.team].spec.name
                    && old.spec.placement == spec.placement
                    && old.spec.pinned.map(|m| member_name(old_team, m))
                        == spec
                            .pinned
                            .map(|m| self.teams[spec.team].spec.members[m].name.clone())
                    && old.spec.key == spec.key;
                if !same_rules {
                    fresh.push(v);
                }
                VmState {
                    spec,
                    at,
                    moved_period: old.moved_period,
                    pause_until_ns: old.pause_until_ns,
                    load_bps: old.load_bps,
                }
            })
            .collect();
        // Re-place what its rules no longer allow where it is.
        for v in 0..self.vms.len() {
            let team = &self.teams[self.vms[v].spec.team];
            let valid = match self.vms[v].at {
                Where::Member(m) => team.members[m].usable,
                Where::FlowHash => self.vms[v].spec.placement == Placement::FlowHash,
                Where::Nowhere => false,
            };
            let placed_by_rule =
                self.vms[v].spec.placement != Placement::Load || self.vms[v].spec.pinned.is_some();
            if !(fresh.contains(&v) || !valid || placed_by_rule) {
                continue;
            }
            let from = self.vms[v].at;
            let to = self.choose(v);
            if to != from {
                self.vms[v].at = to;
                self.vms[v].moved_period = Some(self.period);
                // A VM new to the host has not moved: no event for it.
                if old_vms.iter().any(|o| o.spec.name == self.vms[v].spec.name) {
                    moves.push(Move {
                        vm: v,
                        from,
                        to,
                        cause: MoveCause::Config,
                    });
                }
            }
        }
        moves
    }

    pub fn teams(&self) -> usize {
        self.teams.len()
    }

    pub fn team_spec(&self, team: usize) -> &TeamSpec {
        &self.teams[team].spec
    }

    pub fn vm_spec(&self, vm: usize) -> &VmSpec {
        &self.vms[vm].spec
    }

    pub fn member_up(&self, team: usize, member: usize) -> bool {
        self.teams[team].members[member].up
    }

    pub fn member_usable(&self, team: usize, member: usize) -> bool {
        self.teams[team].members[member].usable
    }

    /// When a usable member last came up (0 if it has been up all along); `None` when it is
    /// not usable.
    pub fn member_usable_since(&self, team: usize, member: usize) -> Option<u64> {
        let m = &self.teams[team].members[member];
        m.usable.then_some(m.up_since_ns)
    }

    /// The team's flow table (bucket → member, `u32::MAX` where no member is usable).
    pub fn table(&self, team: usize) -> &[u32] {
        &self.teams[team].table
    }

    /// The member accepting group frames from the network: the first usable one.
    pub fn rx_member(&self, team: usize) -> Option<usize> {
        self.teams[team].members.iter().position(|m| m.usable)
    }

    pub fn at(&self, vm: usize) -> Where {
        self.vms[vm].at
    }

    /// A member's link went up or down at `now`. Returns the VMs that moved.
    pub fn link(&mut self, team: usize, member: usize, up: bool, now: u64) -> Vec<Move> {
        let Some(m) = self
            .teams
            .get_mut(team)
            .and_then(|t| t.members.get_mut(member))
        else {
            return Vec::new();
        };
        if m.up == up {
            return Vec::new();
        }
        m.up = up;
        if up {
            m.up_since_ns = now;
            // The hold-down keeps a flapping member from taking traffic back; when no member
            // carries anything, waiting protects nothing (bonding does the same).
            let none_usable = !self.teams[team].members.iter().any(|m| m.usable);
            if self.teams[team].spec.failback_hold_ns == 0 || none_usable {
                return self.make_usable(team, member, now);
            }
            return Vec::new();
        }
        m.usable = false;
        self.teams[team].deal_table();
        let moves = self.replace(team, MoveCause::LinkDown, now);
        // Flow-hash VMs lost some flows' member even though they stay "flow-hash".
        let flow_hash_hit: Vec<usize> = (0..self.vms.len())
            .filter(|&v| self.vms[v].spec.team == team && self.vms[v].at == Where::FlowHash)
            .collect();
        for v in flow_hash_hit {
            self.pause(v, now);
        }
        moves
    }

    /// One period: members whose hold-down ended become usable (failback), and load
    /// placement rebalances. `vm_load_bps[vm]` is what each VM sent, in bits per second.
    pub fn tick(&mut self, now: u64, vm_load_bps: &[f64]) -> Vec<Move> {
        self.period += 1;
        for (v, load) in vm_load_bps.iter().enumerate() {
            if let Some(vm) = self.vms.get_mut(v) {
                vm.load_bps = *load;
            }
        }
        let mut moves = Vec::new();
        for t in 0..self.teams.len() {
            let hold = self.teams[t].spec.failback_hold_ns;
            for m in 0..self.teams[t].members.len() {
                let s = &self.teams[t].members[m];
                if s.up && !s.usable && now.saturating_sub(s.up_since_ns) >= hold {
                    moves.extend(self.make_usable(t, m, now));
                }
            }
            moves.extend(self.rebalance(t));
        }
        moves
    }

    /// When a member stays down, when it may carry traffic again: `None` if it is not
    /// waiting for its hold-down.
    pub fn failback_at(&self, team: usize, member: usize) -> Option<u64> {
        let t = &self.teams[team];
        let m = &t.members[member];
        (m.up && !m.usable).then_some(m.up_since_ns + t.spec.failback_hold_ns)
    }

    fn make_usable(&mut self, team: usize, member: usize, now: u64) -> Vec<Move> {
        self.teams[team].members[member].usable = true;
        self.teams[team].deal_table();
        self.replace(team, MoveCause::Failback, now)
    }

    /// Re-places the team's VMs after its usable members changed.
    fn replace(&mut self, team: usize, cause: MoveCause, now: u64) -> Vec<Move> {
        let mut moves = Vec::new();
        for v in 0..self.vms.len() {
            if self.vms[v].spec.team != team {
                continue;
            }
            let from = self.vms[v].at;
            // Load-placed VMs keep a usable member; the rebalancer moves them back gradually.
            let keep = self.vms[v].spec.pinned.is_none()
                && self.vms[v].spec.placement == Placement::Load
                && matches!(from, Where::Member(m) if self.teams[team].members[m].usable);
            if keep {
                continue;
            }
            let to = self.choose(v);
            if to != from {
                self.vms[v].at = to;
                self.vms[v].moved_period = Some(self.period);
                if cause == MoveCause::LinkDown {
                    self.pause(v, now);
                }
                moves.push(Move {
                    vm: v,
                    from,
                    to,
                    cause,
                });
            }
        }
        moves
    }

    fn pause(&mut self, v: usize, now: u64) {
        let pause = self.vms[v].spec.pause_ns;
        if pause > 0 {
            self.vms[v].pause_until_ns = now + pause;
        }
    }

    /// Where VM `v` should go now.
    fn choose(&self, v: usize) -> Where {
        let team = &self.teams[self.vms[v].spec.team];
        let usable: Vec<usize> = (0..team.members.len())
            .filter(|&m| team.members[m].usable)
            .collect();
        self.choose_among(v, &usable)
    }

    /// Where VM `v` would go if only the members in `usable` (in team order) could be used.
    fn choose_among(&self, v: usize, usable: &[usize]) -> Where {
        let vm = &self.vms[v].spec;
        if usable.is_empty() {
            return Where::Nowhere;
        }
        if let Some(p) = vm.pinned
            && usable.contains(&p)
        {
            return Where::Member(p);
        }
        match vm.placement {
            Placement::Failover => Where::Member(usable[0]),
            Placement::MacHash => Where::Member(rendezvous(vm.key, usable)),
            Placement::FlowHash => Where::FlowHash,
            Placement::Load => {
                let util = self.utilisation(vm.team);
                let count = |m: usize| {
                    self.vms
                        .iter()
                        .enumerate()
                        .filter(|(i, x)| *i != v && x.at == Where::Member(m))
                        .count()
                };
                let best = usable
                    .iter()
                    .copied()
                    .min_by(|&a, &b| {
                        util[a]
                            .total_cmp(&util[b])
                            .then(count(a).cmp(&count(b)))
                            .then(a.cmp(&b))
                    })
                    .unwrap_or(usable[0]);
                Where::Member(best)
            }
        }
    }

    /// Where VM `v`'s frames go when the kernel marks its member's carrier off before this
    /// policy hears of it: the members it would be moved to, in turn, if each one before were
    /// lost too (for flow-hash placement, every usable member in team order). At most
    /// [`MAX_FALLBACKS`].
    fn fallbacks(&self, v: usize) -> [u8; MAX_FALLBACKS] {
        let team = &self.teams[self.vms[v].spec.team];
        let mut left: Vec<usize> = (0..team.members.len())
            .filter(|&m| team.members[m].usable)
            .collect();
        let mut out = Vec::new();
        match self.vms[v].at {
            Where::Member(mut current) => {
                while out.len() < MAX_FALLBACKS {
                    left.retain(|&m| m != current);
                    match self.choose_among(v, &left) {
                        Where::Member(m) => {
                            out.push(m);
                            current = m;
                        }
                        _ => break,
                    }
                }
            }
            Where::FlowHash => out = left,
            Where::Nowhere => {}
        }
        let mut list = [NO_FALLBACK; MAX_FALLBACKS];
        for (slot, m) in list.iter_mut().zip(out) {
            *slot = m as u8;
        }
        list
    }

    /// A VM's weight for load placement: what it sends, or its allocation if that is more.
    fn weight(&self, v: usize) -> f64 {
        let vm = &self.vms[v];
        vm.load_bps.max(vm.spec.alloc_bps.unwrap_or(0) as f64)
    }

    /// Per member: placed weight over capacity (or raw weight when no capacity is set).
    fn utilisation(&self, team: usize) -> Vec<f64> {
        let t = &self.teams[team];
        let mut sum = vec![0.0; t.members.len()];
        for (v, vm) in self.vms.iter().enumerate() {
            if vm.spec.team == team
                && let Where::Member(m) = vm.at
            {
                sum[m] += self.weight(v);
            }
        }
        sum.iter()
            .zip(&t.spec.members)
            .map(|(s, spec)| match spec.capacity_bps {
                Some(c) if c > 0 => s / c as f64,
                _ => *s,
            })
            .collect()
    }

    /// Load placement: at most one move per period, only when it narrows a lasting gap.
    fn rebalance(&mut self, team: usize) -> Vec<Move> {
        let t = &self.teams[team];
        let usable: Vec<usize> = (0..t.members.len())
            .filter(|&m| t.members[m].usable)
            .collect();
        let has_load_vms = self
            .vms
            .iter()
            .any(|v| v.spec.team == team && v.spec.placement == Placement::Load);
        if usable.len() < 2 || !has_load_vms {
            self.teams[team].imbalanced_periods = 0;
            return Vec::new();
        }
        let util = self.utilisation(team);
        let capacities_known = t.spec.members.iter().all(|m| m.capacity_bps.is_some());
        let params = t.spec.load.clone();
        let scale = if capacities_known {
            1.0
        } else {
            let mean = usable.iter().map(|&m| util[m]).sum::<f64>() / usable.len() as f64;
            if mean <= 0.0 {
                self.teams[team].imbalanced_periods = 0;
                return Vec::new();
            }
            mean
        };
        let by_util = |a: &&usize, b: &&usize| util[**a].total_cmp(&util[**b]);
        let hi = *usable.iter().max_by(by_util).unwrap_or(&usable[0]);
        let lo = *usable.iter().min_by(by_util).unwrap_or(&usable[0]);
        let gap = (util[hi] - util[lo]) / scale;
        if gap <= params.rebalance_above {
            self.teams[team].imbalanced_periods = 0;
            return Vec::new();
        }
        self.teams[team].imbalanced_periods += 1;
        if self.teams[team].imbalanced_periods < params.sustain_periods {
            return Vec::new();
        }
        let capacities: Vec<Option<u64>> = self.teams[team]
            .spec
            .members
            .iter()
            .map(|m| m.capacity_bps)
            .collect();
        let per_unit = |m: usize| match capacities[m] {
            Some(c) if c > 0 => 1.0 / c as f64,
            _ => 1.0,
        };
        let (ph, pl) = (per_unit(hi), per_unit(lo));
        // A move must lower the busier member's utilisation by a good part of the threshold,
        // not just shift the imbalance to the other member (that would invite ping-pong).
        let min_gain = params.rebalance_above / 2.0;
        let mut best: Option<(usize, f64)> = None;
        for (v, vm) in self.vms.iter().enumerate() {
            let movable = vm.spec.team == team
                && vm.spec.placement == Placement::Load
                && vm.spec.pinned.is_none()
                && vm.at == Where::Member(hi)
                && vm
                    .moved_period
                    .is_none_or(|p| self.period - p >= params.min_dwell_periods as u64);
            if !movable {
                continue;
            }
            let w = self.weight(v);
            let new_max = (util[hi] - w * ph).max(util[lo] + w * pl);
            let gain = (util[hi] - new_max) / scale;
            if gain >= min_gain && best.is_none_or(|(_, g)| gain > g) {
                best = Some((v, gain));
            }
        }
        let Some((v, _)) = best else {
            return Vec::new();
        };
        self.teams[team].imbalanced_periods = 0;
        let from = self.vms[v].at;
        self.vms[v].at = Where::Member(lo);
        self.vms[v].moved_period = Some(self.period);
        vec![Move {
            vm: v,
            from,
            to: Where::Member(lo),
            cause: MoveCause::Load,
        }]
    }

    /// Everything the dataplane needs for every VM, with allocations granted per member in
    /// priority order.
    pub fn outcomes(&self) -> Vec<VmOutcome> {
        let mut rate: Vec<Option<f64>> = self
            .vms
            .iter()
            .map(|v| v.spec.alloc_bps.map(|_| 0.0))
            .collect();
        for (t, team) in self.teams.iter().enumerate() {
            let usable: Vec<usize> = (0..team.members.len())
                .filter(|&m| team.members[m].usable)
                .collect();
            for &m in &usable {
                // (vm, demand on this member)
                let mut demands: Vec<(usize, f64)> = self
                    .vms
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.spec.team == t)
                    .filter_map(|(i, v)| {
                        let alloc = v.spec.alloc_bps? as f64;
                        match v.at {
                            Where::Member(x) if x == m => Some((i, alloc)),
                            Where::FlowHash => Some((i, alloc / usable.len() as f64)),
                            _ => None,
                        }
                    })
                    .collect();
                demands.sort_by_key(|&(i, _)| (std::cmp::Reverse(self.vms[i].spec.priority), i));
                let mut remaining = team.spec.members[m]
                    .capacity_bps
                    .map_or(f64::INFINITY, |c| c as f64);
                for (i, demand) in demands {
                    let granted = demand.min(remaining);
                    remaining -= granted;
                    if let Some(r) = rate[i].as_mut() {
                        *r += granted;
                    }
                }
            }
        }
        self.vms
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let team = &self.teams[v.spec.team];
                let usable: Vec<usize> = (0..team.members.len())
                    .filter(|&m| team.members[m].usable)
                    .collect();
                let flood = match v.at {
                    Where::Member(m) => Some(m),
                    Where::FlowHash if !usable.is_empty() => Some(rendezvous(v.spec.key, &usable)),
                    _ => None,
                };
                let granted = rate[i].map(|r| r.round() as u64);
                let shed = match (granted, v.spec.alloc_bps) {
                    // A rounding hair below the allocation is not shedding.
                    (Some(g), Some(a)) => (g as f64) < a as f64 * 0.999,
                    _ => false,
                };
                VmOutcome {
                    at: v.at,
                    fallbacks: self.fallbacks(i),
                    flood,
                    rate_bps: if shed { granted } else { v.spec.alloc_bps },
                    shed,
                    pause_until_ns: v.pause_until_ns,
                }
            })
            .collect()
    }
}

impl TeamState {
    /// Deals the flow table over usable members moving as few buckets as possible: buckets
    /// of unusable members, and buckets over a member's even share, go to members under it.
    fn deal_table(&mut self) {
        let usable: Vec<u32> = (0..self.members.len() as u32)
            .filter(|&m| self.members[m as usize].usable)
            .collect();
        if usable.is_empty() {
            self.table.iter_mut().for_each(|b| *b = u32::MAX);
            return;
        }
        let n = usable.len();
        let size = self.table.len();
        let quota = |k: usize| size / n + usize::from(k < size % n);
        let mut count = vec![0usize; self.members.len()];
        let mut free = Vec::new();
        // Members in order get the larger quotas; keep each member's buckets up to its quota.
        let rank = |m: u32| usable.iter().position(|&u| u == m);
        for (b, slot) in self.table.iter_mut().enumerate() {
            match rank(*slot) {
                Some(k) if count[*slot as usize] < quota(k) => count[*slot as usize] += 1,
                _ => {
                    *slot = u32::MAX;
                    free.push(b);
                }
            }
        }
        let mut free = free.into_iter();
        for (k, &m) in usable.iter().enumerate() {
            while count[m as usize] < quota(k) {
                let Some(b) = free.next() else { break };
                self.table[b] = m;
                count[m as usize] += 1;
            }
        }
    }
}

/// Rendezvous (highest random weight) hashing: the member scoring highest for `key`.
fn rendezvous(key: u64, members: &[usize]) -> usize {
    members
        .iter()
        .copied()
        .max_by_key(|&m| (mix(key ^ (m as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)), m))
        .unwrap_or(0)
}

/// SplitMix64's finaliser: a cheap, well-spread 64-bit mix.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: u64 = 1_000_000;

    fn team(placement: Placement, members: usize, capacity: Option<u64>) -> TeamSpec {
        TeamSpec {
            name: "t".into(),
            members: (0..members)
                .map(|m| MemberSpec {
                    name: format!("up{m}"),
                    capacity_bps: capacity,
                })
                .collect(),
            placement,
            failback_hold_ns: 1000 * MS,
            load: LoadParams::default(),
        }
    }

    fn vm(i: usize, placement: Placement) -> VmSpec {
        VmSpec {
            name: format!("vm{i}"),
            team: 0,
            placement,
            pinned: None,
            alloc_bps: None,
            priority: 0,
            key: 0x0277_0000_0010 + i as u64,
            pause_ns: 0,
        }
    }

    fn teaming(placement: Placement, members: usize, vms: usize) -> Teaming {
        Teaming::new(
            vec![team(placement, members, None)],
            (0..vms).map(|i| vm(i, placement)).collect(),
            &[vec![true; members]],
        )
    }

    const NF: u8 = NO_FALLBACK;

    #[test]
    fn fallbacks_are_where_the_policy_would_move_the_vm_next() {
        // Failover: the rest of the team's order.
        let mut t = teaming(Placement::Failover, 3, 1);
        assert_eq!(t.outcomes()[0].fallbacks, [1, 2, NF, NF]);
        t.link(0, 1, false, 10 * MS);
        assert_eq!(t.outcomes()[0].fallbacks, [2, NF, NF, NF]);
        // Lost its last alternative: nothing to fall back to.
        t.link(0, 2, false, 20 * MS);
        assert_eq!(t.outcomes()[0].fallbacks, [NF; 4]);

        // Pinned to its member: the team's order after it.
        let mut spec = vm(0, Placement::Failover);
        spec.pinned = Some(2);
        let t = Teaming::new(
            vec![team(Placement::Failover, 3, None)],
            vec![spec],
            &[vec![true; 3]],
        );
        assert_eq!(t.at(0), Where::Member(2));
        assert_eq!(t.outcomes()[0].fallbacks, [0, 1, NF, NF]);

        // MAC hash: each fallback is what the hash picks among the members left.
        let t = teaming(Placement::MacHash, 4, 8);
        for (v, out) in t.outcomes().iter().enumerate() {
            let Where::Member(at) = t.at(v) else {
                panic!("vm{v} placed nowhere")
            };
            let list: Vec<u8> = out.fallbacks.iter().copied().filter(|f| *f != NF).collect();
            assert_eq!(list.len(), 3, "vm{v}: {list:?}");
            assert!(!list.contains(&(at as u8)), "vm{v}: {list:?}");
            let first = rendezvous(
                t.vm_spec(v).key,
                &(0..4).filter(|m| *m != at).collect::<Vec<_>>(),
            );
            assert_eq!(list[0] as usize, first);
        }

        // Flow hash: every usable member, in order.
        let t = teaming(Placement::FlowHash, 2, 1);
        assert_eq!(t.outcomes()[0].fallbacks, [0, 1, NF, NF]);
    }

    #[test]
    fn failover_uses_the_first_usable_member_and_fails_back_after_the_hold_down() {
        let mut t = teaming(Placement::Failover, 3, 4);
        assert!((0..4).all(|v| t.at(v) == Where::Member(0)));
        let moves = t.link(0, 0, false, 10 * MS);
        assert_eq!(moves.len(), 4);
        assert!(moves.iter().all(|m| m.cause == MoveCause::LinkDown));
        assert!((0..4).all(|v| t.at(v) == Where::Member(1)));
        // Back up: nothing moves until the hold-down has passed.
        assert!(t.link(0, 0, true, 20 * MS).is_empty());
        assert!(t.tick(500 * MS, &[]).is_empty());
        assert_eq!(t.failback_at(0, 0), Some(1020 * MS));
        assert!(t.tick(1019 * MS, &[]).is_empty());
        let back = t.tick(1020 * MS, &[]);
        assert_eq!(back.len(), 4);
        assert!(back.iter().all(|m| m.cause == MoveCause::Failback));
        assert!((0..4).all(|v| t.at(v) == Where::Member(0)));
    }

    #[test]
    fn a_flap_during_the_hold_down_restarts_it() {
        let mut t = teaming(Placement::Failover, 2, 1);
        t.link(0, 0, false, 0);
        t.link(0, 0, true, 100 * MS);
        t.link(0, 0, false, 600 * MS);
        t.link(0, 0, true, 700 * MS);
        assert!(
            t.tick(1100 * MS, &[]).is_empty(),
            "first up-time does not count"
        );
        assert_eq!(t.tick(1700 * MS, &[]).len(), 1);
    }

    #[test]
    fn no_usable_member_means_nowhere_and_the_first_to_return_takes_everyone() {
        let mut t = teaming(Placement::MacHash, 2, 3);
        t.link(0, 0, false, 0);
        t.link(0, 1, false, 0);
        assert!((0..3).all(|v| t.at(v) == Where::Nowhere));
        assert_eq!(t.rx_member(0), None);
        t.link(0, 1, true, MS);
        t.tick(2000 * MS, &[]);
        assert!((0..3).all(|v| t.at(v) == Where::Member(1)));
        assert_eq!(t.rx_member(0), Some(1));
    }

    #[test]
    fn with_no_member_usable_the_first_back_skips_the_hold_down() {
        let mut t = Teaming::new(
            vec![team(Placement::Failover, 2, None)],
            (0..2).map(|i| vm(i, Placement::Failover)).collect(),
            &[vec![false, false]],
        );
        assert!((0..2).all(|v| t.at(v) == Where::Nowhere));
        let moves = t.link(0, 1, true, MS);
        assert_eq!(moves.len(), 2, "placed at once: nothing to fail back from");
        assert!((0..2).all(|v| t.at(v) == Where::Member(1)));
        // The second one back waits for its hold-down as usual.
        assert!(t.link(0, 0, true, 2 * MS).is_empty());
        assert_eq!(t.failback_at(0, 0), Some(1002 * MS));
    }

    #[test]
    fn a_reconfiguration_keeps_link_state_and_placements_by_name() {
        let mut t = teaming(Placement::Failover, 2, 3);
        t.link(0, 0, false, 0);
        assert!((0..3).all(|v| t.at(v) == Where::Member(1)));
        // A third uplink is added in front, vm1 is removed, vm2 is pinned to up2, vm9 is new.
        let mut spec = team(Placement::Failover, 3, None);
        spec.members = ["up2", "up0", "up1"]
            .iter()
            .map(|n| MemberSpec {
                name: n.to_string(),
                capacity_bps: None,
            })
            .collect();
        let mut vms = vec![
            vm(0, Placement::Failover),
            vm(2, Placement::Failover),
            vm(9, Placement::Failover),
        ];
        vms[1].pinned = Some(0);
        let moves = t.reconfigure(vec![spec], vms, |_, m| m == 0);
        assert!(
            t.member_up(0, 0),
            "the new member's state comes from the host"
        );
        assert!(
            !t.member_up(0, 1),
            "up0 is still down, under its new number"
        );
        assert!(t.member_up(0, 2));
        // vm0 is placed by failover order: up2 now comes first.
        assert_eq!(t.at(0), Where::Member(0));
        assert_eq!(t.at(1), Where::Member(0), "vm2 pinned to up2");
        assert_eq!(t.at(2), Where::Member(0));
        assert!(moves.iter().all(|m| m.cause == MoveCause::Config));
        assert_eq!(moves.len(), 2, "the new VM did not move: {moves:?}");
    }

    #[test]
    fn a_reconfiguration_that_changes_nothing_moves_nothing() {
        let mut t = teaming(Placement::Load, 2, 4);
        let before: Vec<Where> = (0..4).map(|v| t.at(v)).collect();
        let moves = t.reconfigure(
            vec![team(Placement::Load, 2, None)],
            (0..4).map(|i| vm(i, Placement::Load)).collect(),
            |_, _| true,
        );
        assert!(moves.is_empty());
        assert_eq!((0..4).map(|v| t.at(v)).collect::<Vec<_>>(), before);
    }

    #[test]
    fn pinned_vms_stay_on_their_member_while_it_is_up() {
        let mut specs: Vec<VmSpec> = (0..2).map(|i| vm(i, Placement::Failover)).collect();
        specs[1].pinned = Some(1);
        let mut t = Teaming::new(
            vec![team(Placement::Failover, 2, None)],
            specs,
            &[vec![true, true]],
        );
        assert_eq!(t.at(0), Where::Member(0));
        assert_eq!(t.at(1), Where::Member(1));
        // Its pinned member down: it goes where its policy says.
        t.link(0, 1, false, 0);
        assert_eq!(t.at(1), Where::Member(0));
        // The other member down: no move for it.
        t.link(0, 1, true, MS);
        t.tick(2000 * MS, &[]);
        assert_eq!(t.at(1), Where::Member(1));
        let moves = t.link(0, 0, false, 3000 * MS);
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].vm, 0);
    }

    #[test]
    fn mac_hash_moves_only_the_lost_members_vms() {
        let mut t = teaming(Placement::MacHash, 3, 60);
        let before: Vec<Where> = (0..60).map(|v| t.at(v)).collect();
        for m in 0..3 {
            assert!(before.contains(&Where::Member(m)), "every member gets VMs");
        }
        let moves = t.link(0, 2, false, 0);
        for mv in &moves {
            assert_eq!(mv.from, Where::Member(2));
        }
        for (v, was) in before.iter().enumerate() {
            if *was != Where::Member(2) {
                assert_eq!(t.at(v), *was, "vm{v} moved although its member is up");
            }
        }
        // And back: exactly those return.
        t.link(0, 2, true, MS);
        let back = t.tick(2000 * MS, &[]);
        assert_eq!(back.len(), moves.len());
        assert_eq!((0..60).map(|v| t.at(v)).collect::<Vec<_>>(), before);
    }

    #[test]
    fn flow_table_deals_a_lost_members_buckets_to_the_survivors_only() {
        let mut t = teaming(Placement::FlowHash, 3, 1);
        let before = t.table(0).to_vec();
        let counts = |tab: &[u32], m: u32| tab.iter().filter(|&&b| b == m).count();
        assert_eq!(counts(&before, 0), 86);
        assert_eq!(counts(&before, 2), 85);
        t.link(0, 1, false, 0);
        let after = t.table(0).to_vec();
        for (b, (x, y)) in before.iter().zip(&after).enumerate() {
            if *x != 1 {
                assert_eq!(x, y, "bucket {b} moved although its member is up");
            } else {
                assert_ne!(*y, 1);
            }
        }
        assert_eq!(counts(&after, 0), 128);
        assert_eq!(t.at(0), Where::FlowHash);
        assert!(t.outcomes()[0].flood.is_some());
    }

    #[test]
    fn allocations_are_granted_in_priority_order_when_a_member_is_short() {
        let gbit = 1_000_000_000;
        let mut specs: Vec<VmSpec> = (0..3).map(|i| vm(i, Placement::Failover)).collect();
        for (i, s) in specs.iter_mut().enumerate() {
            s.alloc_bps = Some(400_000_000);
            s.priority = i as i32; // vm2 highest
        }
        specs[0].pinned = Some(1);
        let mut t = Teaming::new(
            vec![team(Placement::Failover, 2, Some(gbit))],
            specs,
            &[vec![true, true]],
        );
        // Two on up0 (800M of 1G), one on up1: everyone gets its allocation.
        assert!(t.outcomes().iter().all(|o| !o.shed));
        t.link(0, 1, false, 0);
        let o = t.outcomes();
        assert_eq!(o[2].rate_bps, Some(400_000_000));
        assert!(!o[2].shed);
        assert_eq!(o[1].rate_bps, Some(400_000_000));
        assert_eq!(
            o[0].rate_bps,
            Some(200_000_000),
            "lowest priority gets what is left"
        );
        assert!(o[0].shed);
    }

    #[test]
    fn best_effort_vms_are_not_limited() {
        let t = teaming(Placement::Failover, 2, 1);
        assert_eq!(t.outcomes()[0].rate_bps, None);
    }

    #[test]
    fn a_failover_pauses_vms_that_ask_for_it() {
        let mut specs = vec![vm(0, Placement::Failover), vm(1, Placement::Failover)];
        specs[0].pause_ns = 50 * MS;
        let mut t = Teaming::new(
            vec![team(Placement::Failover, 2, None)],
            specs,
            &[vec![true, true]],
        );
        t.link(0, 0, false, 10 * MS);
        let o = t.outcomes();
        assert_eq!(o[0].pause_until_ns, 60 * MS);
        assert_eq!(o[1].pause_until_ns, 0);
    }

    #[test]
    fn load_placement_spreads_allocations_and_rebalances_without_ping_pong() {
        let mut specs: Vec<VmSpec> = (0..4).map(|i| vm(i, Placement::Load)).collect();
        for s in &mut specs {
            s.alloc_bps = Some(100);
        }
        let mut t = Teaming::new(
            vec![team(Placement::Load, 2, Some(1000))],
            specs,
            &[vec![true, true]],
        );
        let on = |t: &Teaming, m| (0..4).filter(|&v| t.at(v) == Where::Member(m)).count();
        assert_eq!((on(&t, 0), on(&t, 1)), (2, 2));
        // vm0 and vm1 become heavy on the same member: one moves after the sustain time.
        let heavy: Vec<usize> = (0..4).filter(|&v| t.at(v) == Where::Member(0)).collect();
        let mut load = vec![50.0; 4];
        for &v in &heavy {
            load[v] = 400.0;
        }
        let mut moves = Vec::new();
        for p in 0..3 {
            moves.extend(t.tick(p * 100 * MS, &load));
        }
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!(moves[0].cause, MoveCause::Load);
        // Balanced now (400 + 100 each): nothing more moves, ever.
        for p in 3..100 {
            assert!(t.tick(p * 100 * MS, &load).is_empty());
        }
    }

    #[test]
    fn one_big_vm_is_not_shuffled_between_members() {
        let mut specs: Vec<VmSpec> = (0..2).map(|i| vm(i, Placement::Load)).collect();
        specs[0].alloc_bps = Some(500);
        let mut t = Teaming::new(
            vec![team(Placement::Load, 2, None)],
            specs,
            &[vec![true, true]],
        );
        for p in 0..100 {
            assert!(t.tick(p * 100 * MS, &[2.0, 2.0]).is_empty());
        }
    }

    #[test]
    fn load_vms_survive_a_member_loss_and_return_gradually() {
        let mut t = teaming(Placement::Load, 2, 4);
        t.link(0, 1, false, 0);
        assert!((0..4).all(|v| t.at(v) == Where::Member(0)));
        t.link(0, 1, true, MS);
        // Usable again, but load VMs keep their member until the rebalancer moves them.
        assert!(t.tick(2000 * MS, &[10.0; 4]).is_empty());
        let mut moved = 0;
        for p in 0..200 {
            moved += t.tick((2001 + p) * MS * 100, &[10.0; 4]).len();
        }
        assert_eq!(
            moved, 2,
            "two VMs move back, one per period, then it is balanced"
        );
    }

    proptest! {
        #[test]
        fn placements_only_name_usable_members(
            placement in prop_oneof![
                Just(Placement::Failover),
                Just(Placement::MacHash),
                Just(Placement::FlowHash),
                Just(Placement::Load),
            ],
            events in proptest::collection::vec((0usize..3, any::<bool>(), 0u64..3000), 1..40),
        ) {
            let mut t = teaming(placement, 3, 12);
            let mut now = 0;
            for (m, up, dt) in events {
                now += dt * MS;
                t.link(0, m, up, now);
                t.tick(now, &[1.0; 12]);
                let usable: Vec<usize> = (0..3).filter(|&m| t.member_usable(0, m)).collect();
                for v in 0..12 {
                    match t.at(v) {
                        Where::Member(m) => prop_assert!(usable.contains(&m)),
                        Where::FlowHash => prop_assert!(!usable.is_empty()),
                        Where::Nowhere => prop_assert!(usable.is_empty()),
                    }
                }
                for &b in t.table(0) {
                    if usable.is_empty() {
                        prop_assert_eq!(b, u32::MAX);
                    } else {
                        prop_assert!(usable.contains(&(b as usize)));
                    }
                }
                // The table is dealt evenly.
                for &m in &usable {
                    let n = t.table(0).iter().filter(|&&b| b as usize == m).count();
                    prop_assert!(n.abs_diff(256 / usable.len()) <= 1);
                }
            }
        }
    }
}
