//! The count step: every frame lands in exactly one verdict counter, plus one shape counter per
//! notable shape, plus its VM's counters when it belongs to a VM.

use aya_ebpf::maps::PerCpuArray;
use xnic_common::{
    maps::{Counter, shape_index, verdict_index},
    parse::{Parsed, Shape},
    verdict::{Action, Direction, Verdict},
};

use crate::maps::{SHAPES, VERDICTS, VM_STATS};

#[inline(always)]
fn bump(map: &PerCpuArray<Counter>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU array slot is only touched by this CPU, and programs do not
        // preempt each other on one CPU.
        unsafe { (*c).add(bytes) };
    }
}

#[inline(always)]
pub fn count(port_slot: u32, verdict: &Verdict, parsed: &Parsed, bytes: u64) {
    bump(&VERDICTS, verdict_index(port_slot, verdict.reason), bytes);
    if parsed.shapes != 0 {
        for shape in Shape::ALL {
            if parsed.has(shape) {
                bump(&SHAPES, shape_index(port_slot, shape), bytes);
            }
        }
    }
    if let Some(vm) = verdict.vm()
        && let Some(c) = VM_STATS.get_ptr_mut(vm)
    {
        // SAFETY: as in `bump`.
        let c = unsafe { &mut *c };
        match (verdict.action(), verdict.direction) {
            (Action::Drop, _) => c.dropped.add(bytes),
            (_, Direction::FromVm) => c.from_vm.add(bytes),
            (_, Direction::ToVm) => c.to_vm.add(bytes),
        }
    }
}
