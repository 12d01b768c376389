//! NIC teaming: which uplink a VM's frame leaves through, and whether its bandwidth
//! allocation lets it go.
//!
//! With a team configured, xnic switches VM traffic itself: a VM's frame for the network is
//! rate-limited against the VM's allocation and redirected to the uplink its placement names
//! ([`VmTeam`]): one fixed member (failover order, pinned, MAC hash and load placement are all
//! decided by the controller), or, for flow-hash placement, the member the team's flow table
//! names for the frame's hash. Frames for a local VM go straight to its port; a VM's
//! broadcasts go to every other VM and to the VM's own uplink only. On uplinks, group frames
//! are accepted on one member per team (the others would deliver duplicates), and frames that
//! carry a local VM's source MAC (our own frames coming back) are dropped.
//!
//! The allocation is a GCRA token bucket per VM (one timestamp, no refill loop): a frame of
//! `n` bytes costs `n × ns_per_byte` of "theoretical arrival time", and is admitted while that
//! time runs at most `burst_ns` ahead of now. See [`admit`].

use crate::verdict::Reason;

/// Teams one host can have (say one per NIC pair: VM traffic, storage, management).
pub const MAX_TEAMS: u32 = 16;

/// Members of one team. 802.3ad caps active members at 8, and bonds in the wild have 2–4.
pub const MAX_TEAM_MEMBERS: u32 = 8;

/// Buckets of a team's flow table (flow-hash placement): 256 keeps the share of each of up
/// to 8 members within 1/256 of even, and lets a lost member's buckets be dealt to the
/// survivors without moving anyone else's flows.
pub const TEAM_TABLE_SIZE: u32 = 256;

/// `VmTeam::team` of a VM in no team: its frames go to the kernel as without teaming.
pub const NO_TEAM: u32 = u32::MAX;

/// `VmTeam::member` when the team's flow table picks the member per frame.
pub const FLOW_HASH_MEMBER: u32 = u32::MAX - 1;

/// `VmTeam::member` (or a flow-table entry) when no uplink can carry the VM's frames.
pub const NO_MEMBER: u32 = u32::MAX;

/// `VmTeam::flags`: the VM's rate is below its allocation because the uplinks cannot carry
/// every allocation; drops over it are counted as [`Reason::PriorityShed`].
pub const VM_TEAM_SHED: u32 = 1;

/// Fallback members a VM's placement carries: 4 fit the placement's old padding word, and a
/// team rarely has more than 4 members.
pub const MAX_FALLBACKS: usize = 4;

/// `VmTeam::fallback` entries past the end of the list.
pub const NO_FALLBACK: u8 = u8::MAX;

/// Key of `CARRIER_WATCH`: an uplink as the kernel's carrier hook sees it (interface indexes
/// are per network namespace).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CarrierKey {
    /// The namespace's inode number (`/proc/self/ns/net`).
    pub netns: u32,
    pub ifindex: u32,
}

/// Index into `MEMBER_DOWN` (and the value of `CARRIER_WATCH`).
#[inline(always)]
pub fn member_index(team: u32, member: u32) -> u32 {
    team * MAX_TEAM_MEMBERS + member
}

/// Whether a member is down for the team stage: the kernel took its carrier (`down_ns`,
/// `MEMBER_DOWN`) after the daemon started using it (`up_ns`, `MEMBER_UP`). A member the
/// daemon does not use (`up_ns` 0) is never placed, so it is not asked about.
#[inline(always)]
pub fn member_down(down_ns: u64, up_ns: u64) -> bool {
    up_ns != 0 && down_ns > up_ns
}

/// The member a frame of a VM placed on `member` leaves through, given which members' carrier
/// the kernel marked off (`down(m)`): the placement's member, else its first fallback that is
/// not marked, else none.
#[inline(always)]
pub fn usable_member(vm: &VmTeam, member: u32, down: impl Fn(u32) -> bool) -> Option<u32> {
    if !down(member) {
        return Some(member);
    }
    let mut i = 0;
    while i < MAX_FALLBACKS {
        let f = vm.fallback[i];
        if f == NO_FALLBACK {
            return None;
        }
        if !down(u32::from(f)) {
            return Some(u32::from(f));
        }
        i += 1;
    }
    None
}

/// Fixed-point shift of `VmTeam::ns_per_byte_q16`.
pub const RATE_SHIFT: u32 = 16;

/// `VM_TEAM[vm slot]`: the VM's placement and allocation, written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmTeam {
    /// Team index, or [`NO_TEAM`].
    pub team: u32,
    /// Member index in the team, [`FLOW_HASH_MEMBER`] or [`NO_MEMBER`].
    pub member: u32,
    /// The uplink (ifindex) that carries the VM's broadcasts and multicasts: one per VM, so
    /// the network learns its MACs on one port. 0 when none.
    pub flood_ifindex: u32,
    /// That uplink's member index, or [`NO_MEMBER`].
    pub flood_member: u32,
    /// [`VM_TEAM_SHED`].
    pub flags: u32,
    /// Members to use, in turn, while `member`'s carrier is marked off in `MEMBER_DOWN`
    /// (before the daemon moves the VM); [`NO_FALLBACK`] ends the list.
    pub fallback: [u8; MAX_FALLBACKS],
    /// Nanoseconds each byte costs at the VM's rate, × 2^16. 0: no limit; `u64::MAX`: rate 0.
    pub ns_per_byte_q16: u64,
    /// How far ahead of now the bucket's time may run: the burst, as time at the rate.
    pub burst_ns: u64,
    /// Frames are dropped until this CLOCK_MONOTONIC time (the failover pause); 0: never.
    pub pause_until_ns: u64,
}

impl Default for VmTeam {
    fn default() -> Self {
        VmTeam {
            team: NO_TEAM,
            member: NO_MEMBER,
            flood_ifindex: 0,
            flood_member: NO_MEMBER,
            flags: 0,
            fallback: [NO_FALLBACK; MAX_FALLBACKS],
            ns_per_byte_q16: 0,
            burst_ns: 0,
            pause_until_ns: 0,
        }
    }
}

/// `TEAMS[team]`: the team's members, written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TeamEntry {
    /// ifindex of each member (0: no member at that index).
    pub ifindex: [u32; MAX_TEAM_MEMBERS as usize],
    /// The member that accepts group frames from the network, or [`NO_MEMBER`].
    pub rx_member: u32,
    /// Seed of the flow hash for flow-hash placement.
    pub seed: u32,
}

/// `VM_BUCKETS[vm slot]`: the token bucket's state, written by the programs only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmBucket {
    /// Theoretical arrival time (CLOCK_MONOTONIC ns): when the bucket would be full again.
    pub tat_ns: u64,
}

/// Index into `TEAM_TABLES`.
#[inline(always)]
pub fn table_index(team: u32, hash: u32) -> u32 {
    team * TEAM_TABLE_SIZE + (hash & (TEAM_TABLE_SIZE - 1))
}

/// Index into `TEAM_VM_STATS` (per CPU): frames and bytes per VM per member.
#[inline(always)]
pub fn vm_member_index(vm_slot: u32, member: u32) -> u32 {
    vm_slot * MAX_TEAM_MEMBERS + member
}

/// The rate fields for `rate_bytes_per_sec` (0 = rate zero) and a burst of `burst_bytes`.
pub fn rate_fields(rate_bytes_per_sec: u64, burst_bytes: u64) -> (u64, u64) {
    if rate_bytes_per_sec == 0 {
        return (u64::MAX, 0);
    }
    let rate = rate_bytes_per_sec.max(MIN_RATE_BYTES_PER_SEC);
    let per_byte = ((1_000_000_000u64 << RATE_SHIFT).div_ceil(rate)).max(1);
    (per_byte, cost_ns(per_byte, burst_bytes))
}

/// The slowest rate a bucket runs at, bytes per second (1 kbit/s); slower allocations are
/// refused by the configuration check. It bounds `ns_per_byte_q16` below 2⁴⁰.
pub const MIN_RATE_BYTES_PER_SEC: u64 = 125;

/// Frames are costed as at most this long (1 MiB, beyond any multi-buffer frame), so the
/// cost's product stays below 2⁶⁰ without a 128-bit multiply (which BPF lacks).
pub const MAX_COSTED_LEN: u64 = 1 << 20;

/// What `len` bytes cost at `ns_per_byte_q16`.
#[inline(always)]
pub fn cost_ns(ns_per_byte_q16: u64, len: u64) -> u64 {
    let len = if len > MAX_COSTED_LEN {
        MAX_COSTED_LEN
    } else {
        len
    };
    // Rounded up: a bucket may pass a hair less than its rate, never more.
    (ns_per_byte_q16.wrapping_mul(len) + (1 << RATE_SHIFT) - 1) >> RATE_SHIFT
}

/// GCRA: whether a frame costing `cost` may go at `now` given the bucket's time `tat` (it
/// conforms while `tat` runs at most `burst_ns` ahead of now), and the bucket's time after
/// it. The eBPF side applies the result with an atomic add (`dataplane-ebpf/src/team.rs`).
#[inline(always)]
pub fn admit(tat: u64, now: u64, cost: u64, burst_ns: u64) -> Option<u64> {
    let start = if tat < now { now } else { tat };
    if start - now > burst_ns {
        None
    } else {
        Some(start.saturating_add(cost))
    }
}

/// What the team step decided for a frame a VM sent to the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    /// Redirect to this member.
    Member(u32),
    /// Drop, with this reason.
    Drop(Reason),
}

/// Before the bucket: whether the VM may send at all, and which member carries the frame.
/// `table_member` is what the team's flow table says for the frame's hash.
#[inline(always)]
pub fn pick(vm: &VmTeam, now: u64, table_member: Option<u32>) -> Egress {
    if vm.pause_until_ns != 0 && now < vm.pause_until_ns {
        return Egress::Drop(Reason::FailoverPause);
    }
    if vm.ns_per_byte_q16 == u64::MAX {
        return Egress::Drop(Reason::PriorityShed);
    }
    let member = if vm.member == FLOW_HASH_MEMBER {
        table_member.unwrap_or(NO_MEMBER)
    } else {
        vm.member
    };
    if member >= MAX_TEAM_MEMBERS {
        return Egress::Drop(Reason::NoUplink);
    }
    Egress::Member(member)
}

/// The reason a frame over the VM's rate is dropped with.
#[inline(always)]
pub fn over_rate_reason(vm: &VmTeam) -> Reason {
    if vm.flags & VM_TEAM_SHED != 0 {
        Reason::PriorityShed
    } else {
        Reason::OverAllocation
    }
}
