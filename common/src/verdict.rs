//! What the dataplane does with a frame, and why: the classify and policy steps of the
//! pipeline, as a pure function of the parse result and the map entries the program looked up.

use crate::{
    maps::{MacOwner, NO_VM, PortEntry, PortRole},
    parse::{ParseError, Parsed},
};

/// XDP action codes (`enum xdp_action`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Aborted,
        Action::Drop,
        Action::Pass,
        Action::Tx,
        Action::Redirect,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Action::Aborted => "aborted",
            Action::Drop => "drop",
            Action::Pass => "pass",
            Action::Tx => "tx",
            Action::Redirect => "redirect",
        }
    }

    /// The name of XDP action code `code`, as a program returned it.
    pub fn name_of(code: u32) -> &'static str {
        Action::ALL
            .iter()
            .find(|a| **a as u32 == code)
            .map_or("unknown", |a| a.name())
    }
}

crate::counters! {
    /// Why a frame got its action. Every frame is counted under exactly one reason.
    pub enum Reason: u32, slots = crate::limits::REASON_SLOTS, {
        /// Sent by a VM from the port its MAC is bound to: passed to the kernel.
        FromVm = 0 => "from_vm",
        /// Arrived on an uplink for a VM's MAC: passed to the kernel.
        ToVm = 1 => "to_vm",
        /// Arrived on an uplink for a unicast MAC no VM owns (the host's own traffic): passed.
        NotForVm = 2 => "not_for_vm",
        /// Arrived on an uplink for a broadcast or multicast MAC: passed.
        Multicast = 3 => "multicast",
        /// Sent on a VM port with a source MAC not bound to that port: dropped.
        SpoofedMac = 4 => "spoofed_mac",
        /// Ends inside a header or before the length a header announces: dropped.
        Truncated = 5 => "truncated",
        /// Header fields contradict each other: dropped.
        Malformed = 6 => "malformed",
        /// Seen on an interface with no port entry (a stale attachment): passed untouched.
        UnknownPort = 7 => "unknown_port",
        /// Sent by a teamed VM to the network: redirected to the uplink its placement names.
        ToUplink = 8 => "to_uplink",
        /// Over the VM's bandwidth allocation: dropped.
        OverAllocation = 9 => "over_allocation",
        /// Over the reduced rate a VM gets when the uplinks cannot carry every allocation and
        /// higher-priority VMs come first: dropped.
        PriorityShed = 10 => "priority_shed",
        /// No uplink of the VM's team is up: dropped.
        NoUplink = 11 => "no_uplink",
        /// Inside the VM's configured pause after a failover: dropped.
        FailoverPause = 12 => "failover_pause",
        /// A broadcast or multicast arriving on a team member that does not accept them (another
        /// member delivers the same frame): dropped.
        NotReceiver = 13 => "not_receiver",
        /// Arrived on a team member with a local VM's source MAC: one of our own frames coming
        /// back (a loop in the network): dropped.
        Looped = 14 => "looped",
        /// A pipeline stage the frame needed was not there (a tail call found no program,
        /// say while a newer daemon replaces the programs): passed to the kernel untouched.
        StageMissing = 15 => "stage_missing",
        /// A shaped VM's TCP frame for the network: passed to the kernel, where the VM port's
        /// tc program queues it in the VM's class on its uplink (`xnic_common::shaper`).
        ToShaper = 16 => "to_shaper",
        /// A packet of an offloaded flow: rewritten and redirected by the fast path
        /// (`xnic_common::flow`).
        FlowForward = 17 => "flow_forward",
        /// A packet of an offloaded flow the fast path leaves to the kernel (promoting,
        /// leaving, TTL running out, too large): passed untouched.
        FlowSlow = 18 => "flow_slow",
        /// A rewritten packet of an offloaded flow whose redirect failed (its output went
        /// away in between): dropped, since the kernel would not take it rewritten.
        FlowRedirectFailed = 19 => "flow_redirect_failed",
        /// Routed for a VNIC (`xnic_common::vnic`): re-wrapped toward a VTEP or unwrapped
        /// toward a gateway's network, sent back out of the uplink it came in by.
        VnicForward = 20 => "vnic_forward",
        /// For VNIC routing, but no VNIC has that VNI and MAC (or that public address, or
        /// that VCN address behind a gateway): dropped.
        NoVnic = 21 => "no_vnic",
        /// From a VNIC, with an inner source that is not one of its virtual IPs: dropped.
        SpoofedSource = 22 => "spoofed_source",
        /// The VNIC's route table has nothing for the destination: dropped.
        NoRoute = 23 => "no_route",
        /// A VNIC's security rules do not allow it: dropped.
        AclDeny = 24 => "acl_deny",
        /// The inner TTL or hop limit would run out at the virtual router: dropped (not
        /// answered: the fleet sends no ICMP of its own).
        TtlExpired = 25 => "ttl_expired",
        /// An inner IP fragment: security rules and NAT need the ports only the first
        /// fragment has, so VNIC routing drops fragments (instances send whole packets within
        /// the overlay's MTU).
        Fragment = 26 => "fragment",
        /// Wrapped for its next hop it would be larger than the underlay's MTU: dropped (not
        /// answered with ICMP).
        TooBig = 27 => "too_big",
        /// A NAT gateway found no free public port in this host's block: dropped.
        NatExhausted = 28 => "nat_exhausted",
        /// A RoCEv2 packet for a queue pair a rings worker serves: redirected to its AF_XDP
        /// socket (`xnic_common::rings`); with no socket on the queue, to the kernel.
        ToRings = 29 => "to_rings",
    }
}

impl Reason {
    /// The pipeline stage that gives a frame this reason.
    pub const fn stage(self) -> &'static str {
        match self {
            Reason::Truncated | Reason::Malformed => "parse",
            Reason::FromVm
            | Reason::ToVm
            | Reason::NotForVm
            | Reason::Multicast
            | Reason::SpoofedMac
            | Reason::UnknownPort => "classify",
            Reason::ToUplink
            | Reason::OverAllocation
            | Reason::PriorityShed
            | Reason::NoUplink
            | Reason::FailoverPause
            | Reason::NotReceiver
            | Reason::Looped
            | Reason::ToShaper => "team",
            Reason::StageMissing => "calls",
            Reason::FlowForward | Reason::FlowSlow | Reason::FlowRedirectFailed => "flow",
            Reason::VnicForward
            | Reason::NoVnic
            | Reason::SpoofedSource
            | Reason::NoRoute
            | Reason::AclDeny
            | Reason::TtlExpired
            | Reason::Fragment
            | Reason::TooBig
            | Reason::NatExhausted => "vnic",
            Reason::ToRings => "rings",
        }
    }

    /// The action every frame with this reason gets.
    pub const fn action(self) -> Action {
        match self {
            Reason::SpoofedMac
            | Reason::Truncated
            | Reason::Malformed
            | Reason::OverAllocation
            | Reason::PriorityShed
            | Reason::NoUplink
            | Reason::FailoverPause
            | Reason::NotReceiver
            | Reason::Looped
            | Reason::FlowRedirectFailed
            | Reason::NoVnic
            | Reason::SpoofedSource
            | Reason::NoRoute
            | Reason::AclDeny
            | Reason::TtlExpired
            | Reason::Fragment
            | Reason::TooBig
            | Reason::NatExhausted => Action::Drop,
            Reason::ToUplink | Reason::FlowForward | Reason::ToRings => Action::Redirect,
            Reason::VnicForward => Action::Tx,
            Reason::FromVm
            | Reason::ToVm
            | Reason::NotForVm
            | Reason::Multicast
            | Reason::UnknownPort
            | Reason::StageMissing
            | Reason::ToShaper
            | Reason::FlowSlow => Action::Pass,
        }
    }
}

/// Which way a frame goes relative to the VM it is attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Direction {
    FromVm,
    ToVm,
}

/// 8-byte aligned: the programs keep it in the frame context and copy it with 8-byte moves.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: Reason,
    /// The VM slot the frame is counted against, or [`NO_VM`]. (Not an `Option`: the BPF
    /// verifier rejects the uninitialised payload of a `None` that LLVM may copy around.)
    pub vm_slot: u32,
    pub direction: Direction,
    /// The VM the frame is delivered to, whose RSS state picks the CPU that finishes it, or
    /// [`NO_VM`] (not for a VM, or dropped).
    pub deliver_to: u32,
}

impl Verdict {
    pub const fn action(&self) -> Action {
        self.reason.action()
    }

    /// The VM the frame is delivered to, if any.
    pub const fn deliver_to(&self) -> Option<u32> {
        if self.deliver_to == NO_VM {
            None
        } else {
            Some(self.deliver_to)
        }
    }

    /// The VM slot, if the frame belongs to a VM.
    pub const fn vm(&self) -> Option<u32> {
        if self.vm_slot == NO_VM {
            None
        } else {
            Some(self.vm_slot)
        }
    }
}

/// The destination MAC worth looking up: unicast only (group frames belong to no VM).
#[inline(always)]
pub fn unicast_dst(parsed: &Parsed) -> Option<[u8; 6]> {
    if is_group(&parsed.dst_mac) {
        None
    } else {
        Some(parsed.dst_mac)
    }
}

/// Decides a frame's verdict.
///
/// * `port`: the `PORTS` entry of the ingress interface, if it has one;
/// * `parsed`: the parse outcome and what was parsed;
/// * `src_owner`: the `MACS` entry of the source MAC (looked up on VM ports only);
/// * `dst_owner`: the `MACS` entry of the destination MAC, if unicast;
/// * `ingress_ifindex`: the interface the frame arrived on.
#[inline(always)]
pub fn decide(
    port: Option<&PortEntry>,
    outcome: Result<(), ParseError>,
    parsed: &Parsed,
    src_owner: Option<&MacOwner>,
    dst_owner: Option<&MacOwner>,
    ingress_ifindex: u32,
) -> Verdict {
    let Some(port) = port else {
        return Verdict {
            reason: Reason::UnknownPort,
            vm_slot: NO_VM,
            direction: Direction::ToVm,
            deliver_to: NO_VM,
        };
    };
    let role = port.role();
    if role == Some(PortRole::Vm) {
        // Everything on a VM port is counted against that port's VM, whatever its headers say.
        let reason = match outcome {
            Err(ParseError::Truncated(_)) => Reason::Truncated,
            Err(ParseError::Malformed(_)) => Reason::Malformed,
            Ok(_) => match src_owner {
                Some(o) if o.port_ifindex == ingress_ifindex && o.vm_slot == port.vm_slot => {
                    Reason::FromVm
                }
                _ => Reason::SpoofedMac,
            },
        };
        // A VM's frame for another VM on this host is that VM's traffic to deliver.
        let deliver_to = match (reason, dst_owner) {
            (Reason::FromVm, Some(d)) if d.vm_slot != port.vm_slot => d.vm_slot,
            _ => NO_VM,
        };
        return Verdict {
            reason,
            vm_slot: port.vm_slot,
            direction: Direction::FromVm,
            deliver_to,
        };
    }
    let (reason, vm_slot) = match outcome {
        Err(ParseError::Truncated(_)) => (Reason::Truncated, NO_VM),
        Err(ParseError::Malformed(_)) => (Reason::Malformed, NO_VM),
        Ok(()) if is_group(&parsed.dst_mac) => (Reason::Multicast, NO_VM),
        Ok(_) => match dst_owner {
            Some(o) => (Reason::ToVm, o.vm_slot),
            None => (Reason::NotForVm, NO_VM),
        },
    };
    Verdict {
        reason,
        vm_slot,
        direction: Direction::ToVm,
        deliver_to: vm_slot,
    }
}

/// The owner of a VM port's frame's source MAC without a `MACS` lookup, when it is the
/// port's VM's first MAC (which the port entry carries): the common frame on a VM port.
#[inline(always)]
pub fn known_source(port: &PortEntry, parsed: &Parsed, ingress_ifindex: u32) -> Option<MacOwner> {
    let known = port.role == PortRole::Vm as u8 && port.mac != [0; 6] && port.mac == parsed.src_mac;
    known.then_some(MacOwner {
        vm_slot: port.vm_slot,
        port_ifindex: ingress_ifindex,
    })
}

/// Broadcast and multicast MACs have the group bit (lowest bit of the first octet) set.
#[inline(always)]
pub fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}
