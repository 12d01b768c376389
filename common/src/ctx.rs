//! What the dataplane knows about the frame in flight, shared by every program the frame
//! passes through (the entry program and the stages it tail-calls): the parsed headers, the
//! port and VM, the verdict and where the frame goes next. It lives in a per-CPU scratch map
//! (`SCRATCH`): programs on one CPU run one frame at a time, and a tail call stays on the CPU.

use crate::{
    maps::{NO_VM, PortEntry},
    parse::{Layer, ParseError, Parsed},
    verdict::{Direction, Reason, Verdict},
};

/// Where a frame goes once its stages are done. The verdict's reason fixes whether it goes at
/// all ([`Reason::action`]); this says where a frame that goes is delivered.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextKind {
    /// Up the kernel's stack on this interface (`XDP_PASS`).
    Kernel = 0,
    /// Out of a port (`TX_PORTS`, by ifindex).
    Port = 1,
    /// To every port but the one it came in on (`FLOOD`).
    Flood = 2,
    /// To a CPU, through `CPUMAP`; the CPU-map program finishes it there.
    Cpu = 3,
    /// Out of a port through `FLOW_TX`, whose program counts the offloaded flow's frames
    /// leaving (`flow::FlowMeta` in front of the frame).
    FlowOut = 4,
    /// Up the kernel's stack through this CPU's `CPUMAP` queue: a leaving flow's packet
    /// behind its frames still in flight on the fast path.
    FlowCpu = 5,
    /// Back out of the interface it came in by (`XDP_TX`; on a worker CPU, a redirect to
    /// it through `TX_PORTS`): VNIC routing answers through the router that handed it the
    /// packet.
    Back = 6,
    /// To the rings worker's AF_XDP socket on receive queue `target` (`XSK_SOCKS`).
    Xsk = 7,
}

/// [`Next::fail_reason`] when a failed redirect leaves the frame to the kernel, under the
/// reason it had.
pub const FAIL_TO_KERNEL: u32 = u32::MAX;

/// The next hop (8-byte aligned, for 8-byte copies).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next {
    /// A [`NextKind`].
    pub kind: u8,
    pub _pad: [u8; 3],
    /// The ifindex for [`NextKind::Port`], the CPU for [`NextKind::Cpu`].
    pub target: u32,
    /// When the redirect fails (its target is gone): the [`Reason`] the frame is dropped
    /// with, or [`FAIL_TO_KERNEL`].
    pub fail_reason: u32,
    /// For [`NextKind::Cpu`]: the port to deliver to when the CPU has no queue (0: the
    /// kernel).
    pub fallback_port: u32,
}

impl Next {
    pub const KERNEL: Next = Next {
        kind: NextKind::Kernel as u8,
        _pad: [0; 3],
        target: 0,
        fail_reason: FAIL_TO_KERNEL,
        fallback_port: 0,
    };

    /// To the AF_XDP socket on receive queue `queue`; if there is none, to the kernel.
    pub const fn xsk(queue: u32) -> Next {
        Next {
            kind: NextKind::Xsk as u8,
            target: queue,
            ..Next::KERNEL
        }
    }

    /// Out of port `ifindex`; if that fails, to the kernel.
    pub const fn port(ifindex: u32) -> Next {
        Next {
            kind: NextKind::Port as u8,
            target: ifindex,
            ..Next::KERNEL
        }
    }

    /// Out of port `ifindex`; if that fails, dropped with `reason`.
    pub const fn port_or_drop(ifindex: u32, reason: Reason) -> Next {
        Next {
            kind: NextKind::Port as u8,
            target: ifindex,
            fail_reason: reason as u32,
            ..Next::KERNEL
        }
    }

    /// Out of the interface it came in by.
    pub const BACK: Next = Next {
        kind: NextKind::Back as u8,
        ..Next::KERNEL
    };

    pub const FLOOD: Next = Next {
        kind: NextKind::Flood as u8,
        ..Next::KERNEL
    };

    /// To CPU `cpu`; if it has no queue, out of `fallback_port` (0: the kernel).
    pub const fn cpu(cpu: u32, fallback_port: u32) -> Next {
        Next {
            kind: NextKind::Cpu as u8,
            target: cpu,
            fallback_port,
            ..Next::KERNEL
        }
    }

    /// Where a frame goes when it is not steered: `port` when xnic switches it there, else
    /// the kernel.
    pub const fn deliver(port: u32) -> Next {
        if port == 0 {
            Next::KERNEL
        } else {
            Next::port(port)
        }
    }
}

/// A stage that runs as a program of its own, reached by a tail call through `CALLS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// A teamed VM's frame for the network: allocation, pause, uplink.
    TeamEgress = 0,
    /// A frame for a VM: software RSS to the CPU its engine names.
    Steer = 1,
    /// A VXLAN packet on an uplink: the offloaded flow inside it, if there is one.
    FlowDecap = 2,
    /// A packet for VNIC routing on an uplink: which VNIC, its rules, its route.
    Vnic = 3,
    /// VNIC routing's next hop: the target's rules, NAT, the wrapping, the way out.
    VnicOut = 4,
}

impl Call {
    pub const ALL: [Call; 5] = [
        Call::TeamEgress,
        Call::Steer,
        Call::FlowDecap,
        Call::Vnic,
        Call::VnicOut,
    ];

    /// The program that implements the stage.
    pub const fn program(self) -> &'static str {
        match self {
            Call::TeamEgress => "xnic_team",
            Call::Steer => "xnic_steer",
            Call::FlowDecap => "xnic_decap",
            Call::Vnic => "xnic_vnic",
            Call::VnicOut => "xnic_vnic_out",
        }
    }
}

impl Call {
    /// The stages a worker CPU runs, through `WORKER_CALLS`.
    pub const ON_WORKER: [Call; 2] = [Call::Vnic, Call::VnicOut];

    /// The program that implements the stage on a worker CPU (a CPU-map program), if it
    /// runs there.
    pub const fn worker_program(self) -> Option<&'static str> {
        match self {
            Call::Vnic => Some("xnic_worker_vnic"),
            Call::VnicOut => Some("xnic_worker_vnic_out"),
            _ => None,
        }
    }
}

/// Entries of `CALLS`: room for the stages later versions add (conntrack, NAT, routing...).
pub const CALL_SLOTS: u32 = 16;

const PARSE_OK: u8 = 0;
const PARSE_TRUNCATED: u8 = 1;
const PARSE_MALFORMED: u8 = 2;

/// `FrameCtx::flags`: a port entry was found for the ingress interface (of this role).
pub const CTX_PORT: u8 = 1;
/// `FrameCtx::flags`: the frame parsed without error.
pub const CTX_PARSED: u8 = 2;
/// `FrameCtx::flags`: the destination is a broadcast or multicast address.
pub const CTX_GROUP: u8 = 4;
/// `FrameCtx::flags`: the CPU-map program runs the frame on the worker CPU its flow was
/// steered to, where `XDP_TX` is not available: [`NextKind::Back`] is a redirect instead.
pub const CTX_WORKER: u8 = 8;

/// The frame in flight.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct FrameCtx {
    pub parsed: Parsed,
    /// The whole frame's length, fragments included.
    pub len: u64,
    pub ifindex: u32,
    /// The port entry of the ingress interface (valid with [`CTX_PORT`]).
    pub port: PortEntry,
    /// [`CTX_PORT`] and friends.
    pub flags: u8,
    /// How parsing ended ([`FrameCtx::outcome`]).
    pub parse: u8,
    /// Bytes of a tag the frame carries in front (for the program that finishes it
    /// elsewhere), taken off again if it goes nowhere else after all.
    pub tag_len: u8,
    pub _pad: u8,
    /// The port of the VM a frame for a local VM goes to when xnic switches it (0: none).
    pub deliver_port: u32,
    /// The frame's `FLOW_SLOTS` index when it is steered (to undo its enqueue when the CPU
    /// has no queue).
    pub flow_slot: u32,
    /// The `TEAM_VM_STATS` counter the frame is counted in once delivered, or [`NO_COUNTER`].
    pub member_counter: u32,
    /// The offloaded flow's `slot * 2 + direction`, for a frame of one.
    pub offload: u32,
    /// The stages the frame passed, a bit each (`dry_run::Stage`), for `xnic monitor --trace`.
    pub path: u32,
    pub verdict: Verdict,
    pub next: Next,
    /// VNIC routing's state between its two stages.
    pub vnic: VnicCtx,
}

/// `VnicCtx::from`: a compute instance's packet, wrapped in its VNI.
pub const FROM_INSTANCE: u8 = 1;
/// A packet from the public side (the internet or the services network), unwrapped.
pub const FROM_PUBLIC: u8 = 2;
/// A packet from a service or dynamic routing gateway's network, wrapped in its VNI.
pub const FROM_GATEWAY: u8 = 3;
/// A NAT answer another host of the fleet handed over, wrapped in the hand-off VNI.
pub const FROM_HANDOFF: u8 = 4;

/// What the VNIC stage found, for the next-hop stage.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub struct VnicCtx {
    /// `FROM_*`.
    pub from: u8,
    /// The next hop's `vnic::NextHop`.
    pub hop: u8,
    /// Whether the target's ingress rules still apply (not for a NAT answer: its connection
    /// is its permission).
    pub check_ingress: u8,
    /// Whether the destination is the target VNIC's 1:1 public address, to rewrite to its
    /// private one.
    pub to_private: u8,
    /// The sending VNIC's slot (instances) or the gateway's (gateways).
    pub source: u32,
    /// The next hop's VNIC or gateway slot.
    pub target: u32,
    /// Where the inner frame starts (after the outer headers, or 0 when unwrapped).
    pub inner: u32,
    /// The outer Ethernet addresses the packet came with: the router it came from and us.
    pub peer_mac: [u8; 6],
    pub our_mac: [u8; 6],
    /// The public address a NAT answer or a 1:1 packet came to.
    pub public: [u8; 4],
}

/// `FrameCtx::member_counter` of a frame no team counter follows.
pub const NO_COUNTER: u32 = u32::MAX;

impl FrameCtx {
    /// Starts a frame: everything a stage might read is set before any stage runs.
    #[inline(always)]
    pub fn begin(&mut self, len: u64, ifindex: u32) {
        self.parsed.clear();
        self.len = len;
        self.ifindex = ifindex;
        self.flags = 0;
        self.parse = PARSE_OK;
        self.tag_len = 0;
        self.deliver_port = 0;
        self.flow_slot = 0;
        self.member_counter = NO_COUNTER;
        self.offload = 0;
        self.path = 0;
        self.verdict = Verdict {
            reason: Reason::UnknownPort,
            vm_slot: NO_VM,
            direction: Direction::ToVm,
            deliver_to: NO_VM,
        };
        self.next = Next::KERNEL;
    }

    /// Records how parsing ended. Later steps read it back from the context rather than
    /// carry the parser's result in a register: the verifier then sees one state after the
    /// parser instead of one per place it can stop, which keeps the program far from its
    /// limits.
    #[inline(always)]
    pub fn set_outcome(&mut self, outcome: Result<(), ParseError>) {
        let code = match outcome {
            Ok(()) => PARSE_OK,
            Err(ParseError::Truncated(_)) => PARSE_TRUNCATED,
            Err(ParseError::Malformed(_)) => PARSE_MALFORMED,
        };
        // SAFETY: a field of `self`; volatile so the value is not carried along in a register.
        unsafe { core::ptr::write_volatile(&raw mut self.parse, code) };
    }

    /// How parsing ended (the layer an error was found in is not kept: no verdict needs it).
    #[inline(always)]
    pub fn outcome(&self) -> Result<(), ParseError> {
        // SAFETY: a field of `self`; see `set_outcome`.
        match unsafe { core::ptr::read_volatile(&raw const self.parse) } {
            PARSE_OK => Ok(()),
            PARSE_TRUNCATED => Err(ParseError::Truncated(Layer::Ethernet)),
            _ => Err(ParseError::Malformed(Layer::Ethernet)),
        }
    }

    #[inline(always)]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The port entry, when there is one.
    #[inline(always)]
    pub fn port(&self) -> Option<&PortEntry> {
        self.has(CTX_PORT).then_some(&self.port)
    }
}
