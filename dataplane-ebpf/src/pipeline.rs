//! One frame through the dataplane: parse → classify → count → act.

use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
use aya_log_ebpf::debug;
use xnic_common::{
    frame::Frame,
    limits::UNKNOWN_PORT_SLOT,
    maps::{MacKey, PortRole},
    parse::parse,
    verdict::{Action, decide, unicast_dst},
};

use crate::{
    maps::{MACS, PORTS, SCRATCH},
    stats, steer,
};

#[inline(always)]
pub fn run(ctx: &XdpContext, role: PortRole) -> u32 {
    // SAFETY: `ctx.ctx` is the live xdp_md of this invocation.
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) } as usize;
    // SAFETY: the kernel guarantees [data, data_end) is readable for this invocation, and the
    // buffer length covers at least the linear part.
    let frame = unsafe { Frame::from_raw(ctx.data(), ctx.data_end(), len) };
    let ifindex = ctx.ingress_ifindex() as u32;

    // parse
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Action::Pass as u32;
    };
    // SAFETY: this CPU's scratch entry, used by one program invocation at a time.
    let parsed = unsafe { &mut *scratch };
    parsed.clear();
    let outcome = parse(&frame, parsed);

    // classify: which port, which VM
    // SAFETY: entries are plain data; the daemon replaces them whole, never in place.
    let port = unsafe { PORTS.get(ifindex) }
        // A port entry for the other role means a stale attachment: count it as unknown.
        .filter(|p| p.role == role as u8);
    let parsed_ok = port.is_some() && outcome.is_ok();
    // Who sent it (VM ports only: the anti-spoofing check) and who it is for.
    let src_owner = if parsed_ok && role == PortRole::Vm {
        // SAFETY: as above.
        unsafe { MACS.get(MacKey::new(parsed.src_mac)) }
    } else {
        None
    };
    let dst_owner = match unicast_dst(parsed) {
        // SAFETY: as above.
        Some(mac) if parsed_ok => unsafe { MACS.get(MacKey::new(mac)) },
        _ => None,
    };

    // policy
    let verdict = decide(port, outcome, parsed, src_owner, dst_owner, ifindex);

    // count
    let slot = port.map_or(UNKNOWN_PORT_SLOT, |p| p.slot);
    stats::count(slot, &verdict, parsed, len as u64);

    // act
    let action = verdict.action();
    if action == Action::Pass
        && port.is_some_and(|p| p.steers())
        && let Some(vm) = verdict.deliver_to()
        && let Some(redirect) = steer::steer(ctx, parsed, vm)
    {
        return redirect;
    }
    if action == Action::Drop {
        debug!(
            ctx,
            "drop: {} on ifindex {} ({} bytes)",
            verdict.reason.name(),
            ifindex,
            len
        );
    }
    action as u32
}
