//! Software RSS: which CPU finishes a VM's frames, and the per-flow handover that keeps a
//! flow's frames in order when that CPU changes.
//!
//! A frame for a VM is hashed ([`crate::hash::flow_hash`]); the VM's engine table maps the
//! hash's bucket to a CPU, and the frame is redirected through the CPU map to that CPU, where
//! the CPU-map program counts it and hands it to the kernel. A VM without an engine (no-RSS)
//! goes to the default CPU.
//!
//! Ordering: every flow (by hash) owns a *flow slot* remembering the CPU its frames went to
//! and how many are still queued there (enqueued on the receiving CPU, dequeued by the
//! CPU-map program; each side writes an array of its own, so a frame never pulls a cache line
//! from the other CPU). When the table names another CPU, the flow moves only once nothing of it
//! is queued on the old CPU and the old CPU has had [`DRAIN_GRACE_NS`] to push the last frame
//! through the stack behind it. A queue that has not drained after [`MAX_DRAIN_NS`] is
//! overloaded and dropping; the flow then moves anyway, and the switch is counted as forced.

/// Buckets an engine table can have. Tables are 128 buckets by default (what NICs and RSS++
/// use); 256 allows finer balancing on many-CPU engines.
pub const MAX_TABLE_SIZE: u32 = 256;

/// The default table size.
pub const DEFAULT_TABLE_SIZE: u32 = 128;

/// RSS engines one host can have: each is a CPU set and a table. 64 covers a dedicated
/// engine per CPU on 64-CPU hosts.
pub const MAX_ENGINES: u32 = 64;

/// CPUs the CPU map covers (its key is the CPU number).
pub const MAX_CPUS: u32 = 512;

/// Flow slots, indexed by the low bits of the flow hash. 16384 keeps each side's array
/// (256 KiB) in a core's L2 cache however many flows there are: with 65536 slots, a host with
/// tens of thousands of flows took a cache miss on every frame's slot, a fifth of the steering
/// stage's cost. Flows that share a slot share a bucket, and wait for each other's queued
/// frames only while that bucket changes CPU.
pub const FLOW_SLOTS: u32 = 16384;

/// Frames each CPU's CPU-map queue holds: ~2 ms of work at 1 Mpps, enough to absorb bursts
/// without hiding overload.
pub const CPUMAP_QUEUE_SIZE: u32 = 2048;

/// After a flow's last queued frame left the CPU-map queue, the kernel still has it in that
/// CPU's backlog for a few microseconds; 50 µs covers that with a wide margin.
pub const DRAIN_GRACE_NS: u64 = 50_000;

/// A queue that has not drained a flow's frames in 5 ms (over twice a full queue's worth at
/// 1 Mpps) is dropping them: move the flow anyway.
pub const MAX_DRAIN_NS: u64 = 5_000_000;

/// `VmRss::engine` of a VM in the no-RSS state.
pub const NO_ENGINE: u32 = u32::MAX;

/// `SteerMeta::bucket` of a frame that went to the default CPU (no table involved).
pub const NO_BUCKET: u32 = u32::MAX;

/// `RSS_CONFIG[0]`: global steering settings, written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssConfig {
    /// 1 when frames for VMs are steered; 0 leaves them to the kernel where they arrive.
    pub enabled: u32,
    /// The no-RSS CPU.
    pub default_cpu: u32,
    /// Per-host hash seed.
    pub seed: u32,
    /// 1 for the symmetric hash.
    pub symmetric: u32,
}

/// `VM_RSS[vm slot]`: the VM's engine, written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmRss {
    /// Engine index, or [`NO_ENGINE`].
    pub engine: u32,
    pub _pad: u32,
}

impl Default for VmRss {
    fn default() -> Self {
        VmRss {
            engine: NO_ENGINE,
            _pad: 0,
        }
    }
}

/// `ENGINES[engine]`: the table's size as a mask (size − 1, size a power of two).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineEntry {
    pub table_mask: u32,
    /// Identifies the configuration (name, CPUs, size) the table was built for, never 0, so
    /// a restarted daemon keeps a table only if its engine is unchanged. Not read by eBPF.
    pub config_tag: u32,
}

/// Index of `bucket` of `engine` in `RSS_TABLES` and the bucket counters.
#[inline(always)]
pub fn bucket_index(engine: u32, bucket: u32) -> u32 {
    engine * MAX_TABLE_SIZE + bucket
}

/// `FLOW_SLOTS_V2[hash % FLOW_SLOTS]`, written by the receiving side only: where the flow's
/// frames go now and how many were sent there. The count is updated atomically (flows of
/// two receiving CPUs can share a slot) and wraps; only its distance from
/// [`FlowDone::dequeued`] means anything.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    pub cpu: u32,
    pub enqueued: u32,
    /// When the flow started waiting to move (0: not waiting).
    pub waiting_since_ns: u64,
}

/// `FLOW_DONE[slot]`, written by the CPU-map program only: frames of the slot it took off a
/// queue, and when it last did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowDone {
    pub dequeued: u32,
    pub _pad: u32,
    pub last_dequeue_ns: u64,
}

/// Frames of a slot still queued, from its two counts. A count that runs ahead of the other
/// (frames queued by an older dataplane's programs when this one took over) reads as none.
#[inline(always)]
pub fn queued(enqueued: u32, dequeued: u32) -> u32 {
    let d = enqueued.wrapping_sub(dequeued) as i32;
    if d > 0 { d as u32 } else { 0 }
}

/// The tag the receiving side puts in front of a steered frame for the CPU-map program,
/// which takes it off again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SteerMeta {
    /// [`STEER_TAG`].
    pub magic: u32,
    pub flow_slot: u32,
    /// `bucket_index`, or [`NO_BUCKET`].
    pub bucket: u32,
    pub vm_slot: u32,
    /// The VM port the CPU-map program redirects the frame to, or 0: pass it to the kernel.
    pub deliver_ifindex: u32,
    /// Keeps the frame behind the tag where it was relative to 8-byte boundaries.
    pub _pad: u32,
}

/// `SteerMeta::magic`. Its first byte in memory (0x01, little-endian) is a multicast MAC
/// address's, which no frame steered untagged (by an older dataplane's program) starts with
/// as a unicast frame for a VM: such a frame is not taken for a tagged one.
pub const STEER_TAG: u32 = 0x7a67_5301;

crate::counters! {
    /// Per-CPU steering counters (`STEER_STATS[counter]`).
    pub enum SteerCounter: u32, slots = crate::limits::STEER_SLOTS, {
        /// Frames redirected to a CPU.
        Steered = 0 => "steered",
        /// Frames the CPU-map program handed to the kernel (counted on the CPU that ran it).
        Delivered = 1 => "delivered",
        /// Flows moved to a new CPU after their queued frames drained.
        SwitchDrained = 2 => "switch_drained",
        /// Flows moved before draining (queue overloaded for longer than `MAX_DRAIN_NS`).
        SwitchForced = 3 => "switch_forced",
        /// Frames kept on a flow's old CPU while it waits to move.
        HeldForOrder = 4 => "held_for_order",
        /// Frames that could not be redirected (no CPU-map entry): passed where they arrived.
        NoCpu = 5 => "no_cpu",
        /// Steered frames without a valid tag at the CPU-map program: passed as they are, not
        /// counted (dropped if the tag would not come off).
        NoMeta = 6 => "no_meta",
    }
}

/// What a flow does when its frame arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handover {
    /// Already on the wanted CPU.
    Stay,
    /// Moves now: nothing of it is queued on the old CPU.
    Switch,
    /// Moves now although frames are still queued: the old queue is not draining.
    ForceSwitch,
    /// Stays on the old CPU until its queued frames drain.
    Wait,
}

/// Decides whether a flow on `current` moves to `want`, given its frames still queued
/// (`in_flight`), when its last frame left the queue, since when it has been waiting, and the
/// time now (all nanoseconds on the same clock).
#[inline(always)]
pub fn handover(
    current: u32,
    want: u32,
    in_flight: u32,
    last_dequeue_ns: u64,
    waiting_since_ns: u64,
    now_ns: u64,
) -> Handover {
    if current == want {
        Handover::Stay
    } else if in_flight == 0 && now_ns.saturating_sub(last_dequeue_ns) >= DRAIN_GRACE_NS {
        Handover::Switch
    } else if waiting_since_ns != 0 && now_ns.saturating_sub(waiting_since_ns) >= MAX_DRAIN_NS {
        Handover::ForceSwitch
    } else {
        Handover::Wait
    }
}
