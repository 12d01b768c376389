//! Tail calls into the pipeline's stages (`CALLS`, and `WORKER_CALLS` on a worker CPU;
//! both filled by the daemon).

use aya_ebpf::{maps::ProgramArray, programs::XdpContext};
use xnic_common::{
    ctx::{Call, FrameCtx, Next},
    dry_run::Stage,
    verdict::Reason,
};

use crate::{
    deliver::deliver,
    maps::{CALLS, WORKER_CALLS},
};

/// Which table a program's tail calls go through: the kernel keeps a program array to the
/// attach type of the programs that use it, so a program references exactly one.
#[derive(Clone, Copy)]
pub enum Stages {
    /// The entry programs' and their stages' (`CALLS`).
    Entry,
    /// The CPU-map program's and its stages' (`WORKER_CALLS`).
    Worker,
}

impl Stages {
    #[inline(always)]
    fn table(self) -> &'static ProgramArray {
        match self {
            Stages::Entry => &CALLS,
            Stages::Worker => &WORKER_CALLS,
        }
    }
}

/// Continues the frame in stage `call`. Returns only when the stage is missing (a daemon
/// filling a new table, say): the frame then goes to the kernel, counted as such.
#[inline(always)]
pub fn jump(xdp: &XdpContext, cx: &mut FrameCtx, call: Call) -> u32 {
    jump_in(Stages::Entry, xdp, cx, call)
}

/// [`jump`] through the table of `stages`.
#[inline(always)]
pub fn jump_in(stages: Stages, xdp: &XdpContext, cx: &mut FrameCtx, call: Call) -> u32 {
    crate::dry_run::step(cx, Stage::Call, call as u32);
    // SAFETY: a tail call into a program of the same type and attach type; control does not
    // come back when it succeeds, and nothing here needs dropping.
    unsafe { stages.table().tail_call(xdp, call as u32) };
    cx.verdict.reason = Reason::StageMissing;
    cx.next = Next::KERNEL;
    deliver(xdp, cx)
}
