//! Dry runs (`xnic trace`): a frame through the real programs with `BPF_PROG_TEST_RUN`,
//! against the live maps, changing nothing. The daemon's programs are built with the dry
//! run off (a read-only global the verifier prunes on), so they never record a step; a
//! trace loads a second copy of the same object with it on, whose stages each append what
//! they decided to `DRY_RUN_STEPS` and write the state they would change (a flow's
//! counters, a VM's token bucket, an RSS flow's CPU) to per-CPU copies instead.

use crate::ctx::{FrameCtx, Next};

/// Steps one dry run records: a frame passes parse, classify, the flow lookup, the route
/// and up to three tail-called stages before delivery; twice that leaves room for the
/// stages later versions add.
pub const MAX_STEPS: usize = 24;

/// `DryRunStep::detail` when a step has nothing to add.
pub const NO_DETAIL: u32 = u32::MAX;

/// A step of the pipeline, as recorded in a dry run.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Headers parsed (detail: the shapes found, `parse::Shape` bits).
    Parse = 0,
    /// Port, VM and verdict (detail: the port's slot).
    Classify = 1,
    /// A RoCEv2 packet for the rings worker's socket (detail: the receive queue).
    Rings = 2,
    /// VNIC routing's worker CPU, where the routing stages run (detail: the CPU).
    Worker = 3,
    /// The offloaded-flow lookup (detail: a [`FlowOutcome`]).
    Flow = 4,
    /// The stage classify picked, or delivery (detail: a `ctx::Call`, or [`NO_DETAIL`]).
    Route = 5,
    /// A tail call into a stage (detail: the `ctx::Call`); recorded again with
    /// `Reason::StageMissing` when the stage is missing.
    Call = 6,
    /// The team stage: allocation, pause and uplink.
    Team = 7,
    /// Software RSS (detail: the bucket, or `rss::NO_BUCKET`).
    Steer = 8,
    /// The offloaded flow inside a VXLAN packet.
    Decap = 9,
    /// VNIC routing: the sending VNIC, its rules and route (detail: the next hop's slot).
    Vnic = 10,
    /// VNIC routing's next hop: rules, NAT, wrapping (detail: the target's slot).
    VnicOut = 11,
    /// The delivery step (detail: the XDP action).
    Deliver = 12,
}

impl Stage {
    pub const ALL: [Stage; 13] = [
        Stage::Parse,
        Stage::Classify,
        Stage::Rings,
        Stage::Worker,
        Stage::Flow,
        Stage::Route,
        Stage::Call,
        Stage::Team,
        Stage::Steer,
        Stage::Decap,
        Stage::Vnic,
        Stage::VnicOut,
        Stage::Deliver,
    ];

    pub fn from_u8(v: u8) -> Option<Stage> {
        Stage::ALL.get(v as usize).copied()
    }

    pub const fn name(self) -> &'static str {
        match self {
            Stage::Parse => "parse",
            Stage::Classify => "classify",
            Stage::Rings => "rings",
            Stage::Worker => "worker",
            Stage::Flow => "flow",
            Stage::Route => "route",
            Stage::Call => "call",
            Stage::Team => "team",
            Stage::Steer => "steer",
            Stage::Decap => "decap",
            Stage::Vnic => "vnic",
            Stage::VnicOut => "vnic-out",
            Stage::Deliver => "deliver",
        }
    }
}

/// What the offloaded-flow lookup found ([`Stage::Flow`]'s detail).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowOutcome {
    /// Not an offloaded flow: the slow path's.
    Miss = 0,
    /// An offloaded flow: decided and rewritten here.
    Taken = 1,
    /// A VXLAN packet whose inner flow may be offloaded: the decap stage looks.
    Decap = 2,
}

/// One step: the stage and what the frame's context said when it was done.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DryRunStep {
    /// A [`Stage`].
    pub stage: u8,
    /// `FrameCtx::flags` then.
    pub flags: u8,
    /// The verdict's `Direction`.
    pub direction: u8,
    pub _pad: u8,
    /// The verdict's `Reason`.
    pub reason: u32,
    pub vm_slot: u32,
    pub deliver_to: u32,
    /// What the stage adds (see [`Stage`]), or [`NO_DETAIL`].
    pub detail: u32,
    pub _pad2: u32,
    pub next: Next,
}

impl DryRunStep {
    /// The step `stage` ends with `cx` as it is.
    #[inline(always)]
    pub fn of(stage: Stage, cx: &FrameCtx, detail: u32) -> DryRunStep {
        DryRunStep {
            stage: stage as u8,
            flags: cx.flags,
            direction: cx.verdict.direction as u8,
            _pad: 0,
            reason: cx.verdict.reason as u32,
            vm_slot: cx.verdict.vm_slot,
            deliver_to: cx.verdict.deliver_to,
            detail,
            _pad2: 0,
            next: cx.next,
        }
    }
}

/// A dry run's steps, per CPU (`DRY_RUN_STEPS`): started over by each frame's first step.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct DryRunLog {
    /// Steps recorded; more than [`MAX_STEPS`] means some were left out.
    pub len: u32,
    pub _pad: u32,
    pub steps: [DryRunStep; MAX_STEPS],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_round_trip_through_their_numbers() {
        for s in Stage::ALL {
            assert_eq!(Stage::from_u8(s as u8), Some(s));
        }
        assert_eq!(Stage::from_u8(Stage::ALL.len() as u8), None);
    }

    #[test]
    fn a_step_has_no_implicit_padding() {
        // Every byte is a named field, so the kernel's copy and ours agree.
        assert_eq!(size_of::<DryRunStep>(), 4 + 4 * 5 + size_of::<Next>());
        assert_eq!(
            size_of::<DryRunLog>(),
            8 + MAX_STEPS * size_of::<DryRunStep>()
        );
    }
}
