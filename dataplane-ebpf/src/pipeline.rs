//! One frame through the dataplane: parse → classify → policy → team → count → act.

use aya_ebpf::{helpers::bpf_xdp_get_buff_len, programs::XdpContext};
use aya_log_ebpf::debug;
use xnic_common::{
    frame::Frame,
    limits::UNKNOWN_PORT_SLOT,
    maps::{MacKey, PortRole},
    parse::parse,
    verdict::{Action, Reason, decide, is_group, unicast_dst},
};

use crate::{
    maps::{MACS, PORTS, SCRATCH},
    stats, steer, team,
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
    let mut verdict = decide(port, outcome, parsed, src_owner, dst_owner, ifindex);

    // team: a teamed VM's frames for the network, and group frames on team uplinks
    let mut action = verdict.action() as u32;
    if let Some(p) = port
        && p.switches()
    {
        let group = is_group(&parsed.dst_mac);
        match role {
            PortRole::Vm if verdict.reason == Reason::FromVm && verdict.deliver_to().is_none() => {
                if let Some(out) = team::egress(parsed, p.vm_slot, len as u64, group) {
                    verdict.reason = out.reason;
                    action = out.action;
                }
            }
            PortRole::Uplink => {
                if let Some((team_index, member)) = p.team_member()
                    && outcome.is_ok()
                {
                    if team::looped(parsed) {
                        verdict.reason = Reason::Looped;
                        action = Action::Drop as u32;
                    } else if group {
                        if team::receives_group(team_index, member) {
                            action = team::flood();
                        } else {
                            verdict.reason = Reason::NotReceiver;
                            action = Action::Drop as u32;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    // count
    let slot = port.map_or(UNKNOWN_PORT_SLOT, |p| p.slot);
    stats::count(slot, &verdict, parsed, len as u64);

    // act
    if action == Action::Pass as u32
        && let Some(p) = port
        && let Some(vm) = verdict.deliver_to()
    {
        // When xnic switches, the frame goes to the VM's port rather than the kernel.
        let deliver_ifindex = match dst_owner {
            Some(o) if p.switches() => o.port_ifindex,
            _ => 0,
        };
        if p.steers()
            && let Some(redirect) = steer::steer(ctx, parsed, vm, deliver_ifindex)
        {
            return redirect;
        }
        if deliver_ifindex != 0
            && let Some(redirect) = team::to_port(deliver_ifindex)
        {
            return redirect;
        }
    }
    if action == Action::Drop as u32 {
        debug!(
            ctx,
            "drop: {} on ifindex {} ({} bytes)",
            verdict.reason.name(),
            ifindex,
            len
        );
    }
    action
}
