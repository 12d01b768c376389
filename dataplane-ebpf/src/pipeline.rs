//! One frame through the dataplane: parse → classify → count → act.

use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
use aya_log_ebpf::debug;
use xnic_common::{
    frame::Frame,
    limits::UNKNOWN_PORT_SLOT,
    maps::{MacKey, PortRole},
    parse::{Parsed, parse},
    verdict::{Action, NO_LOOKUP, decide, mac_to_look_up},
};

use crate::{
    maps::{MACS, PORTS},
    stats,
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
    let mut parsed = Parsed::default();
    let outcome = parse(&frame, &mut parsed);

    // classify: which port, which VM
    // SAFETY: entries are plain data; the daemon replaces them whole, never in place.
    let port = unsafe { PORTS.get(ifindex) }
        // A port entry for the other role means a stale attachment: count it as unknown.
        .filter(|p| p.role == role as u8);
    let owner = match (port, outcome) {
        (Some(port), Ok(())) => {
            let mac = mac_to_look_up(port, &parsed);
            if mac == NO_LOOKUP {
                None
            } else {
                // SAFETY: as above.
                unsafe { MACS.get(MacKey::new(mac)) }
            }
        }
        _ => None,
    };

    // policy
    let verdict = decide(port, outcome, &parsed, owner, ifindex);

    // count
    let slot = port.map_or(UNKNOWN_PORT_SLOT, |p| p.slot);
    stats::count(slot, &verdict, &parsed, len as u64);

    // act
    let action = verdict.action();
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
