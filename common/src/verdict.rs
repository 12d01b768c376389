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

/// Why a frame got its action. Every frame is counted under exactly one reason.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Sent by a VM from the port its MAC is bound to: passed to the kernel.
    FromVm = 0,
    /// Arrived on an uplink for a VM's MAC: passed to the kernel.
    ToVm = 1,
    /// Arrived on an uplink for a unicast MAC no VM owns (the host's own traffic): passed.
    NotForVm = 2,
    /// Arrived on an uplink for a broadcast or multicast MAC: passed.
    Multicast = 3,
    /// Sent on a VM port with a source MAC not bound to that port: dropped.
    SpoofedMac = 4,
    /// Ends inside a header or before the length a header announces: dropped.
    Truncated = 5,
    /// Header fields contradict each other: dropped.
    Malformed = 6,
    /// Seen on an interface with no port entry (a stale attachment): passed untouched.
    UnknownPort = 7,
}

impl Reason {
    pub const COUNT: usize = 8;
    pub const ALL: [Reason; Self::COUNT] = [
        Reason::FromVm,
        Reason::ToVm,
        Reason::NotForVm,
        Reason::Multicast,
        Reason::SpoofedMac,
        Reason::Truncated,
        Reason::Malformed,
        Reason::UnknownPort,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Reason::FromVm => "from_vm",
            Reason::ToVm => "to_vm",
            Reason::NotForVm => "not_for_vm",
            Reason::Multicast => "multicast",
            Reason::SpoofedMac => "spoofed_mac",
            Reason::Truncated => "truncated",
            Reason::Malformed => "malformed",
            Reason::UnknownPort => "unknown_port",
        }
    }

    /// The action every frame with this reason gets.
    pub const fn action(self) -> Action {
        match self {
            Reason::SpoofedMac | Reason::Truncated | Reason::Malformed => Action::Drop,
            Reason::FromVm
            | Reason::ToVm
            | Reason::NotForVm
            | Reason::Multicast
            | Reason::UnknownPort => Action::Pass,
        }
    }
}

/// Which way a frame goes relative to the VM it is attributed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    FromVm,
    ToVm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: Reason,
    /// The VM slot the frame is counted against, or [`NO_VM`]. (Not an `Option`: the BPF
    /// verifier rejects the uninitialised payload of a `None` that LLVM may copy around.)
    pub vm_slot: u32,
    pub direction: Direction,
}

impl Verdict {
    pub const fn action(&self) -> Action {
        self.reason.action()
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

/// No MAC needs looking up (never a bound MAC: configuration rejects the zero MAC).
pub const NO_LOOKUP: [u8; 6] = [0; 6];

/// The MAC whose owner decides a frame's fate: the source on a VM port (who sent it), the
/// destination on an uplink (who it is for). [`NO_LOOKUP`] when no lookup is needed.
#[inline(always)]
pub fn mac_to_look_up(port: &PortEntry, parsed: &Parsed) -> [u8; 6] {
    match port.role() {
        Some(PortRole::Vm) => parsed.src_mac,
        Some(PortRole::Uplink) if !is_group(&parsed.dst_mac) => parsed.dst_mac,
        _ => NO_LOOKUP,
    }
}

/// Decides a frame's verdict.
///
/// * `port`: the `PORTS` entry of the ingress interface, if it has one;
/// * `parsed`: the parse outcome and what was parsed;
/// * `owner`: the `MACS` entry for [`mac_to_look_up`]'s MAC, if it has one;
/// * `ingress_ifindex`: the interface the frame arrived on.
#[inline(always)]
pub fn decide(
    port: Option<&PortEntry>,
    outcome: Result<(), ParseError>,
    parsed: &Parsed,
    owner: Option<&MacOwner>,
    ingress_ifindex: u32,
) -> Verdict {
    let Some(port) = port else {
        return Verdict {
            reason: Reason::UnknownPort,
            vm_slot: NO_VM,
            direction: Direction::ToVm,
        };
    };
    let role = port.role();
    if role == Some(PortRole::Vm) {
        // Everything on a VM port is counted against that port's VM, whatever its headers say.
        let reason = match outcome {
            Err(ParseError::Truncated(_)) => Reason::Truncated,
            Err(ParseError::Malformed(_)) => Reason::Malformed,
            Ok(_) => match owner {
                Some(o) if o.port_ifindex == ingress_ifindex && o.vm_slot == port.vm_slot => {
                    Reason::FromVm
                }
                _ => Reason::SpoofedMac,
            },
        };
        return Verdict {
            reason,
            vm_slot: port.vm_slot,
            direction: Direction::FromVm,
        };
    }
    let (reason, vm_slot) = match outcome {
        Err(ParseError::Truncated(_)) => (Reason::Truncated, NO_VM),
        Err(ParseError::Malformed(_)) => (Reason::Malformed, NO_VM),
        Ok(()) if is_group(&parsed.dst_mac) => (Reason::Multicast, NO_VM),
        Ok(_) => match owner {
            Some(o) => (Reason::ToVm, o.vm_slot),
            None => (Reason::NotForVm, NO_VM),
        },
    };
    Verdict {
        reason,
        vm_slot,
        direction: Direction::ToVm,
    }
}

/// Broadcast and multicast MACs have the group bit (lowest bit of the first octet) set.
#[inline(always)]
pub fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}
