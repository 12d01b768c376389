//! Shaped allocations: a teamed VM's TCP goes through a queue at its allocated rate instead
//! of a policer.
//!
//! A policer without a queue gives TCP no ack clock: at the microsecond round trips between a
//! VM and its host, the sender's window bursts far past the bucket, whole windows are lost
//! together and retransmissions with them, and each lost retransmission costs a 200 ms
//! timeout (measured: 3–12 % of the allocation). A queue at the rate turns those bursts into
//! delay, which TCP handles (≥ 95 % of the allocation, measured). XDP has no queue, and the
//! kernel here has no `fq` for earliest-departure-time pacing, so the queue is an HTB class:
//!
//! - the team stage passes a shaped VM's TCP frame to the kernel (`Reason::ToShaper`)
//!   instead of redirecting it, after charging what fits of it to the VM's token bucket, so
//!   the VM's other traffic (UDP, policed there) gets only what TCP leaves of the allocation;
//! - the VM port's tc ingress program (`xnic_shape`) picks the same uplink the team stage
//!   would, sets `skb->priority` to the VM's class ([`class_id`]) and redirects the frame to
//!   that uplink's egress;
//! - each team uplink has an HTB root qdisc [`QDISC_MAJOR`]`:` whose class per shaped VM
//!   runs at the VM's rate with its burst, over a byte FIFO of [`queue_limit_bytes`].
//!
//! Frames of other protocols, and every frame of a VM whose allocation is `strict`, stay on
//! the policer.

use crate::{
    headers::IPPROTO_TCP,
    parse::{L3, Parsed},
    team::VmTeam,
};

/// `VmTeam::flags`: the VM's TCP goes through its HTB class (set only while the class exists
/// on every member of its team and its port runs the tc program).
pub const VM_TEAM_SHAPED: u32 = 2;

/// Major number of the HTB root qdisc xnic puts on team uplinks ("xn"): how the daemon knows
/// its own qdisc from an operator's.
pub const QDISC_MAJOR: u16 = 0x786e;

/// The HTB class of the VM in slot `vm_slot` (minor 0 is the qdisc itself).
#[inline(always)]
pub const fn class_id(vm_slot: u32) -> u32 {
    ((QDISC_MAJOR as u32) << 16) | (vm_slot + 1)
}

/// The VM slot of an xnic class minor, if it is one.
pub const fn class_slot(minor: u16) -> Option<u32> {
    if minor == 0 {
        None
    } else {
        Some(minor as u32 - 1)
    }
}

/// How long the class's queue may hold at its rate: 50 ms, the latency Linux's `tbf` is
/// usually given. Longer queues add delay without adding throughput (TCP fills any queue);
/// shorter ones drop a window's burst at the low rates allocations have.
pub const QUEUE_TIME_MS: u64 = 50;

/// The class FIFO's limit in bytes: [`QUEUE_TIME_MS`] at the rate, but at least two bursts
/// and 64 KiB (one aggregated TCP segment), so a slow class still takes a full window burst.
pub fn queue_limit_bytes(rate_bytes_per_sec: u64, burst_bytes: u64) -> u32 {
    let by_time = rate_bytes_per_sec.saturating_mul(QUEUE_TIME_MS) / 1000;
    by_time
        .max(burst_bytes.saturating_mul(2))
        .max(64 * 1024)
        .min(u32::MAX as u64) as u32
}

/// Whether the team stage hands this frame of `vm` to its shaper: the VM's allocation is
/// shaped and the frame is TCP (fragments included, so a packet's pieces take one path).
#[inline(always)]
pub fn wants_shaper(vm: &VmTeam, parsed: &Parsed) -> bool {
    vm.flags & VM_TEAM_SHAPED != 0 && parsed.l3 != L3::None && parsed.ip_proto == IPPROTO_TCP
}

counters! {
    /// What the VM ports' tc program did with a frame (`SHAPER_STATS`, per CPU).
    pub enum ShapeCounter: u32, slots = 16, {
        /// Queued in its VM's class on an uplink.
        Queued = 0 => "queued",
        /// Not a shaped VM's TCP (say ARP the team stage passed up): left to the kernel.
        Passed = 1 => "passed",
        /// The VM's uplinks were gone or paused by the time it got here: dropped.
        NoUplink = 2 => "no_uplink",
        /// The redirect to the uplink failed: dropped.
        RedirectFailed = 3 => "redirect_failed",
    }
}
