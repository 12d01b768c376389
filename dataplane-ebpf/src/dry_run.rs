//! Dry runs (`xnic trace`, see `xnic_common::dry_run`): off in the daemon's programs, where
//! the verifier knows `DRY_RUN` is 0 and drops every branch below; on in the copy a trace
//! loads, where each stage records its step and writes its state to per-CPU copies.

use aya_ebpf::{Global, maps::PerCpuArray};
use xnic_common::{
    ctx::FrameCtx,
    dry_run::{DryRunStep, MAX_STEPS, Stage},
};

use crate::maps::DRY_STEPS;

/// Set to 1 by the loader of a trace's copy of the programs (`EbpfLoader::override_global`).
#[unsafe(no_mangle)]
static DRY_RUN: Global<u8> = Global::new(0);

/// Whether these programs are a trace's: record, and change no state.
#[inline(always)]
pub fn active() -> bool {
    DRY_RUN.load() != 0
}

/// Records that `stage` is done: in every frame's path (`xnic monitor --trace` reports it),
/// and in a dry run with the frame's context as it left it.
#[inline(always)]
pub fn step(cx: &mut FrameCtx, stage: Stage, detail: u32) {
    cx.path |= 1 << stage as u32;
    if !active() {
        return;
    }
    let Some(log) = DRY_STEPS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's entry of a per-CPU map; a dry run's programs run one at a time.
    let log = unsafe { &mut *log };
    // A frame's first step starts the log over.
    let at = if stage == Stage::Parse { 0 } else { log.len };
    if let Some(slot) = log.steps.get_mut(at as usize) {
        *slot = DryRunStep::of(stage, cx, detail);
    }
    log.len = (at + 1).min(MAX_STEPS as u32 + 1);
}

/// What a stage may write of the state at `live`: `live` itself, or in a dry run this
/// CPU's copy of it in `copy`, filled from `live` first.
#[inline(always)]
pub fn private<T: Copy>(live: *mut T, copy: &PerCpuArray<T>) -> Option<*mut T> {
    if !active() {
        return Some(live);
    }
    let mine = copy.get_ptr_mut(0)?;
    // SAFETY: both point at map values of type `T`; this CPU's copy is its own.
    unsafe { core::ptr::copy_nonoverlapping(live, mine, 1) };
    Some(mine)
}
