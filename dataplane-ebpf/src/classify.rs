//! The classify and guard steps: which port and VM a frame belongs to, its verdict
//! (`xnic_common::verdict::decide`), and which stage or delivery it needs next.

use xnic_common::{
    ctx::{CTX_GROUP, CTX_PARSED, CTX_PORT, Call, FrameCtx, Next},
    maps::{MacOwner, PortRole},
    verdict::{Action, Reason, decide, is_group, known_source, unicast_dst},
};

use crate::{
    lookup::{mac_owner, port_entry},
    team,
};

/// What the entry program does with a classified frame.
pub enum Route {
    Deliver,
    Call(Call),
}

/// Looks up the port and the MACs that matter, and decides the verdict.
#[inline(always)]
pub fn classify(cx: &mut FrameCtx, role: PortRole) {
    let outcome = cx.outcome();
    // A port entry for the other role means a stale attachment: counted as unknown.
    if let Some(p) = port_entry(cx.ifindex).filter(|p| p.role == role as u8) {
        cx.port = p;
        cx.flags |= CTX_PORT;
    }
    if outcome.is_ok() {
        cx.flags |= CTX_PARSED;
    }
    if is_group(&cx.parsed.dst_mac) {
        cx.flags |= CTX_GROUP;
    }
    let port = cx.port().copied();
    let parsed_ok = port.is_some() && outcome.is_ok();
    // Who sent it (VM ports: the anti-spoofing check). The VM's first MAC is in its port
    // entry, so the usual frame needs no lookup.
    let src_owner: Option<MacOwner> = match port {
        Some(p) if parsed_ok && role == PortRole::Vm => {
            known_source(&p, &cx.parsed, cx.ifindex).or_else(|| mac_owner(cx.parsed.src_mac))
        }
        _ => None,
    };
    // Who it is for: on uplinks always (it decides the verdict), on VM ports only when xnic
    // delivers frames for local VMs itself (switching or steering).
    let wants_dst = match port {
        Some(p) => role == PortRole::Uplink || p.switches() || p.steers(),
        None => false,
    };
    let dst_owner: Option<MacOwner> = match unicast_dst(&cx.parsed) {
        Some(mac) if parsed_ok && wants_dst => mac_owner(mac),
        _ => None,
    };
    cx.verdict = decide(
        port.as_ref(),
        outcome,
        &cx.parsed,
        src_owner.as_ref(),
        dst_owner.as_ref(),
        cx.ifindex,
    );
    if let (Some(p), Some(d)) = (port, dst_owner)
        && p.switches()
    {
        cx.deliver_port = d.port_ifindex;
    }
}

/// Decides what happens next: team handling on switched ports, the stage a frame for a VM
/// needs, or delivery.
#[inline(always)]
pub fn route(cx: &mut FrameCtx, role: PortRole) -> Route {
    let Some(p) = cx.port().copied() else {
        return Route::Deliver;
    };
    if cx.verdict.reason.action() == Action::Drop {
        return Route::Deliver;
    }
    if p.switches() {
        match role {
            // A teamed VM's frame for the network: its allocation and uplink.
            PortRole::Vm
                if cx.verdict.reason == Reason::FromVm && cx.verdict.deliver_to().is_none() =>
            {
                return Route::Call(Call::TeamEgress);
            }
            PortRole::Uplink => {
                if let Some((team_index, member)) = p.team_member()
                    && cx.has(CTX_PARSED)
                {
                    if team::looped(&cx.parsed) {
                        cx.verdict.reason = Reason::Looped;
                        return Route::Deliver;
                    }
                    if cx.has(CTX_GROUP) {
                        if team::receives_group(team_index, member) {
                            cx.next = Next::FLOOD;
                        } else {
                            cx.verdict.reason = Reason::NotReceiver;
                        }
                        return Route::Deliver;
                    }
                }
            }
            PortRole::Vm => {}
        }
    }
    if cx.verdict.deliver_to().is_some() {
        if p.steers() {
            return Route::Call(Call::Steer);
        }
        cx.next = Next::deliver(cx.deliver_port);
    }
    Route::Deliver
}
