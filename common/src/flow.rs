//! The flow table of the fast path: connections the daemon learned from conntrack and moved
//! into XDP, with everything needed to forward them without the kernel.
//!
//! Each offloaded connection has one slot, held in two arrays split by writer so neither side
//! writes the other's cache lines:
//! - `FLOW_STATE[slot]` ([`FlowState`]), written by the daemon only: for each direction, the
//!   tuple a packet is rewritten to (NAT), the port it arrives on and leaves by, the next
//!   hop's MACs, the tunnel it is wrapped in or taken out of;
//! - `FLOW_LIVE[slot]` ([`FlowLive`]), written by the programs: counters, last seen, TCP
//!   window tracking, and the bookkeeping of moves between the slow and the fast path.
//!
//! `FLOWS` maps each direction's tuple, as the packet arrives ([`FlowKey`]), to the slot and
//! direction ([`FlowRef`]). With NAT the two tuples are not mirror images of each other, so
//! both are keys.
//!
//! Moves never reorder a flow:
//! - **promotion**: a direction starts [`Mode::Pending`]; its packets still go to the slow path,
//!   and the last one's fingerprint is remembered. The tc egress program on the output ports
//!   records the fingerprint of each pending flow's packet leaving the kernel; when the last
//!   packet passed has left, no slow-path packet of that direction is in flight and the next
//!   one takes the fast path. A direction only ever switches on that evidence, which is also
//!   proof that the slow path (its ruleset) forwards the flow: one whose packets never leave
//!   the kernel stays on the slow path, and the daemon gives up on it after
//!   [`PROMOTE_WAIT_NS`], counted.
//! - **demotion**: a leaving flow's packets go to the slow path behind the frames the fast path
//!   already redirected: while some are in flight (redirected, `fast_sent`, but not yet taken
//!   by the device map's program, `fast_done`) or some of its packets are queued on a CPU-map
//!   queue, its packets go to the kernel through this CPU's CPU-map queue, which the kernel
//!   flushes after the device maps; once nothing is in flight, and the egress program has
//!   seen the last of those leave the kernel, they go straight up. A frame that never
//!   arrives (the port vanished, the ruleset dropped it) stops counting after
//!   [`LEAVE_WAIT_NS`].

use crate::{
    frame::Frame,
    hash,
    headers::{IPPROTO_TCP, Ipv4Hdr, TcpHdr, UdpHdr},
    parse::{Fragment, L3, Parsed},
    tcp::{self, OutOfWindow, Segment, TcpSeen},
};

/// Flows the table holds unless the configuration says otherwise. Each costs about 550
/// bytes of kernel memory (two `FLOWS` keys ≈ 2 × 104 bytes with the hash map's own
/// overhead, [`FlowState`] 144, [`FlowLive`] 192): 256 Ki flows ≈ 136 MiB. A busy host
/// forwards tens of thousands of long-lived connections; elephants, which the policy
/// favours, are far fewer.
pub const DEFAULT_MAX_FLOWS: u32 = 256 * 1024;

/// Kernel memory a flow's table entries take, about ([`DEFAULT_MAX_FLOWS`]): what operators
/// are shown for the table's size.
pub const FLOW_TABLE_BYTES_PER_FLOW: u64 = 2 * 104 + 144 + 192;

/// The maps the configuration sizes (`flows.max_flows`; `FLOWS` holds two keys a flow).
pub const TABLE_MAPS: &[&str] = &["FLOWS", "FLOW_STATE", "FLOW_LIVE"];

/// The most a configuration may ask for: 4 Mi flows ≈ 2.1 GiB, beyond which the host would
/// rather keep its memory for conntrack itself.
pub const MAX_FLOWS_LIMIT: u32 = 4 * 1024 * 1024;

/// Tunnels (VXLAN devices with their remote endpoint) flows can be wrapped in: one per
/// remote network a host reaches; 256 is far beyond what one host configures.
pub const MAX_TUNNELS: u32 = 256;

/// How long the daemon lets a flow promote before it gives up: a direction switches once a
/// packet it passed has left the kernel, which takes microseconds; a flow with traffic whose
/// packets have not left after 500 ms is dropped by the slow path (its ruleset), and one
/// without traffic has nothing to gain from the fast path.
pub const PROMOTE_WAIT_NS: u64 = 500_000_000;

/// How long a leaving flow waits for what it has in flight: fast-path frames the device map
/// has not taken (its queue is flushed at the end of each NAPI poll, microseconds), and the
/// packet it last sent through a CPU-map queue, until the egress program sees it leave. That
/// one is handled by the CPU-map kthread, which competes with every task on its CPU: a busy
/// host keeps it waiting for milliseconds. Past 100 ms what is missing was lost (its port
/// went, the ruleset or a full CPU-map queue dropped it); waiting longer only delays the
/// hand-back, and a flow whose packets follow a lost one through the queue would never
/// drain.
pub const LEAVE_WAIT_NS: u64 = 100_000_000;

/// How long a leaving flow's packets go through the CPU-map queue whatever is in flight: a
/// fast-path frame the device map sent may still wait in its receiver's queue, and a
/// receiving veth hands the XDP frames of one poll to the stack after the packets of the same
/// poll that came from the kernel. Behind the CPU-map queue, the kernel's packets come after
/// the receiver's next poll; a millisecond covers it many times over.
pub const LEAVE_SETTLE_NS: u64 = 1_000_000;

/// How long after the egress program saw a packet leave it may be taken as gone: the egress
/// hook runs just before the device's transmit, and a packet of the same flow on the other
/// path, on another CPU, must not reach the receiver's queue between the two. Transmit
/// takes a microsecond or two with bottom halves off; 50 µs leaves room for an interrupt.
pub const EXIT_GRACE_NS: u64 = 50_000;

/// The two directions: as conntrack's original tuple, and its reply.
pub const ORIGINAL: usize = 0;
pub const REPLY: usize = 1;

/// A flow's tuple as a packet of one direction arrives. IPv4 addresses are IPv4-mapped, as
/// the parser stores them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    pub _pad: [u8; 2],
    /// The VXLAN network a packet arrived in (0: none): the same inner tuple in two networks
    /// is two flows.
    pub vni: u32,
}

impl FlowKey {
    /// The key of a parsed packet, if it is one the fast path could carry: TCP or UDP over
    /// IPv4 or IPv6 (no IPv6 extension headers), not a fragment.
    #[inline(always)]
    pub fn of(p: &Parsed, vni: u32) -> Option<FlowKey> {
        let family = match p.l3 {
            L3::Ipv4 => 4,
            L3::Ipv6 => 6,
            L3::None => return None,
        };
        if p.fragment != Fragment::None
            || p.l4_offset == 0
            || p.has(crate::parse::Shape::Ipv6ExtHeaders)
            || !(p.ip_proto == crate::headers::IPPROTO_TCP
                || p.ip_proto == crate::headers::IPPROTO_UDP)
        {
            return None;
        }
        Some(FlowKey {
            src: p.src_ip,
            dst: p.dst_ip,
            src_port: p.src_port,
            dst_port: p.dst_port,
            proto: p.ip_proto,
            family,
            _pad: [0; 2],
            vni,
        })
    }

    /// The tuple a packet answering this one carries.
    pub const fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..*self
        }
    }
}

/// Where a key points: a slot and a direction, with the slot's generation so a key read just
/// before its slot was reused is recognised as stale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRef {
    pub slot: u32,
    /// [`ORIGINAL`] or [`REPLY`].
    pub dir: u16,
    pub _pad: u16,
    pub generation: u32,
}

/// [`FlowDir::flags`]: the packet is taken out of a VXLAN tunnel first (it arrives wrapped).
pub const DIR_DECAP: u8 = 1;
/// [`FlowDir::flags`]: the packet is wrapped in [`FlowDir::tunnel`] before it leaves.
pub const DIR_ENCAP: u8 = 2;
/// [`FlowDir::flags`]: the source address or port changes (SNAT).
pub const DIR_SNAT: u8 = 4;
/// [`FlowDir::flags`]: the destination address or port changes (DNAT).
pub const DIR_DNAT: u8 = 8;

/// What becomes of a packet of one direction. Written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowDir {
    /// The tuple the packet leaves with (after NAT).
    pub new_src: [u8; 16],
    pub new_dst: [u8; 16],
    pub new_src_port: u16,
    pub new_dst_port: u16,
    /// The port packets of this direction arrive on: anything else is the slow path's.
    pub in_ifindex: u32,
    /// The port they leave by.
    pub out_ifindex: u32,
    /// The Ethernet header they leave with (of the inner frame, when wrapped).
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The largest IP packet the output takes (the inner packet's, when wrapped): larger
    /// ones are the kernel's to fragment or refuse.
    pub mtu: u16,
    /// `DIR_*`.
    pub flags: u8,
    /// The tunnel ([`MAX_TUNNELS`]) for [`DIR_ENCAP`] and [`DIR_DECAP`].
    pub tunnel: u8,
    /// The window scale this direction's sender announced (conntrack's wscale).
    pub tcp_scale: u8,
    pub _pad: [u8; 3],
}

crate::counters! {
    /// Why a flow is in the table (shown to operators).
    pub enum Why: u8, slots = 16, {
        /// Every established flow qualifies.
        All = 0 => "all",
        /// Moved more bytes than the threshold.
        Bytes = 1 => "bytes",
        /// Moved more packets than the threshold.
        Packets = 2 => "packets",
        /// Faster than the rate threshold.
        Rate = 3 => "rate",
        /// The operator's nftables rule marked it (`ct mark`).
        Mark = 4 => "mark",
        /// Its protocol and port are listed for offload.
        Port = 5 => "port",
        /// `xnic flows offload`.
        Manual = 6 => "manual",
    }
}

/// One offloaded connection. Written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub dirs: [FlowDir; 2],
    /// Bumped each time the slot is reused ([`FlowRef::generation`]).
    pub generation: u32,
    pub proto: u8,
    /// 4 or 6.
    pub family: u8,
    /// A [`Leave`] the daemon asks for (0: none).
    pub leave: u8,
    /// A [`Why`].
    pub why: u8,
    /// When it was promoted (`CLOCK_MONOTONIC` ns).
    pub promoted_ns: u64,
}

crate::counters! {
    /// Why a flow leaves the fast path. The programs set the first four; the daemon the rest.
    pub enum Leave: u8, slots = 16, {
        /// Not leaving (slot 0 of the demotion counters stays unused).
        Stay = 0 => "stay",
        /// A FIN: the connection is closing.
        Fin = 1 => "fin",
        /// An RST.
        Rst = 2 => "rst",
        /// A SYN on an established connection (a reopen).
        Syn = 3 => "syn",
        /// A segment outside the tracked window.
        OutOfWindow = 4 => "out_of_window",
        /// Idle for longer than the policy's timeout.
        Idle = 5 => "idle",
        /// The ruleset changed and no longer lets it through the fast path.
        RuleChange = 6 => "rule_change",
        /// The table was full and a more valuable flow took its slot.
        Pressure = 7 => "pressure",
        /// `xnic flows demote`.
        Manual = 8 => "manual",
        /// conntrack ended the connection (timeout, `conntrack -D`).
        Conntrack = 9 => "conntrack",
        /// Its route or next hop changed.
        Route = 10 => "route",
        /// Offload was switched off.
        Disabled = 11 => "disabled",
        /// A segment with TCP options the fast path does not read.
        TcpOptions = 12 => "tcp_options",
        /// Its promotion got nowhere: none of its packets left the kernel (the ruleset drops
        /// them) within `PROMOTE_WAIT_NS`.
        PromoteTimeout = 13 => "promote_timeout",
    }
}

/// [`LiveDir::mode`] of a slot nobody set up: the slow path's.
pub const MODE_UNUSED: u8 = 0;

/// Where a direction's packets go.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Still on the slow path, waiting for its last packet there to leave the kernel.
    Pending = 1,
    /// On the fast path.
    Active = 2,
}

/// One direction's live state. Written by the programs (the daemon sets it up before the
/// keys exist).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveDir {
    /// Packets and bytes the fast path forwarded.
    pub packets: u64,
    pub bytes: u64,
    /// When this direction last had a packet, on either path (`CLOCK_MONOTONIC` ns).
    pub last_seen_ns: u64,
    /// When the mode last changed, or when the egress program last saw the packet this
    /// direction waits for leave the kernel.
    pub since_ns: u64,
    /// Frames redirected by the fast path, and those the device map's program took.
    pub fast_sent: u32,
    pub fast_done: u32,
    /// Packets put on a CPU-map queue while leaving, and those the CPU-map program took.
    pub cpu_sent: u32,
    pub cpu_done: u32,
    /// Packets passed to the slow path while pending, and seen leaving it.
    pub slow_passes: u32,
    pub slow_exits: u32,
    /// The fingerprint of the last packet passed while pending, and of the last one seen
    /// leaving (0: none).
    pub pass_fp: u32,
    pub exit_fp: u32,
    pub tcp: TcpSeen,
    /// A [`Mode`], or [`MODE_UNUSED`].
    pub mode: u8,
    /// The CPU whose CPU-map queue this direction's packets wait behind, plus one (0: none
    /// yet), little-endian: one queue for all of them, whichever CPU they arrive on, since
    /// two queues' kthreads would race each other.
    pub behind_cpu: [u8; 2],
    pub _pad: [u8; 5],
}

/// A slot's live state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowLive {
    pub dirs: [LiveDir; 2],
    /// The generation this live state belongs to.
    pub generation: u32,
    /// A [`Leave`] a program set (0: none).
    pub leave: u8,
    pub _pad: [u8; 3],
    /// When a program first saw the flow leaving.
    pub leave_since_ns: u64,
}

impl FlowLive {
    /// A flow just promoted: both directions pending, windows not seen.
    pub fn promoted(state: &FlowState, now_ns: u64) -> FlowLive {
        let dir = |d: usize| LiveDir {
            mode: Mode::Pending as u8,
            since_ns: now_ns,
            last_seen_ns: now_ns,
            tcp: TcpSeen::unseen(state.dirs[d].tcp_scale),
            ..LiveDir::default()
        };
        FlowLive {
            dirs: [dir(ORIGINAL), dir(REPLY)],
            generation: state.generation,
            ..FlowLive::default()
        }
    }

    /// A flow put on the fast path at once, without waiting for its slow-path packets in
    /// flight (which the fast path may overtake): what a controller that does not track
    /// them does, kept for measuring what the wait buys.
    pub fn active(state: &FlowState, now_ns: u64) -> FlowLive {
        let mut live = FlowLive::promoted(state, now_ns);
        for d in &mut live.dirs {
            d.mode = Mode::Active as u8;
        }
        live
    }
}

/// What the fast path knows of a packet of a flow it found.
#[derive(Clone, Copy, Debug)]
pub struct Packet {
    /// [`ORIGINAL`] or [`REPLY`].
    pub dir: usize,
    pub ingress: u32,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The IP packet's length (header included).
    pub ip_len: u32,
    /// The TCP segment; `None` for UDP.
    pub tcp: Option<Segment>,
    /// The TCP options could not be walked.
    pub tcp_options_unknown: bool,
    /// [`fingerprint`] of the packet.
    pub fingerprint: u32,
    pub now_ns: u64,
}

/// Why a packet of an offloaded flow goes to the slow path.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slow {
    /// The direction is still promoting.
    Pending,
    /// The flow is leaving the fast path.
    Leaving,
    /// It arrived on another port than the flow's (a route change, a spoof).
    WrongPort,
    /// Its TTL runs out here: the kernel answers with time exceeded.
    TtlExpired,
    /// Larger than the output takes: the kernel fragments or refuses it.
    TooBig,
    /// The slot is not (or no longer) this flow's.
    Stale,
}

/// What the fast path does with a packet of a flow it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Rewrite it and redirect it to the direction's output.
    Forward,
    /// Up the kernel's stack here.
    Slow(Slow),
    /// Up the kernel's stack, through this CPU's CPU-map queue: behind frames of the flow
    /// still in flight on the fast path.
    SlowBehind(Slow),
}

/// What happened to the flow's bookkeeping, for the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// The flow started leaving with this packet, for this reason.
    pub left: Option<Leave>,
    /// The direction switched to the fast path: its slow-path packets drained.
    pub drained: bool,
    /// The segment was outside the window.
    pub window: Option<OutOfWindow>,
}

/// The fast path's decision for `pkt`, updating the flow's live state. The caller checked
/// the generations.
#[inline(always)]
pub fn decide(state: &FlowState, live: &mut FlowLive, pkt: &Packet, ev: &mut Events) -> Decision {
    let d = pkt.dir & 1;
    let out = &state.dirs[d];
    if out.in_ifindex != pkt.ingress {
        return Decision::Slow(Slow::WrongPort);
    }
    let (sender, receiver) = if d == ORIGINAL {
        let [a, b] = &mut live.dirs;
        (a, b)
    } else {
        let [a, b] = &mut live.dirs;
        (b, a)
    };
    if sender.mode == MODE_UNUSED {
        return Decision::Slow(Slow::Stale);
    }
    sender.last_seen_ns = pkt.now_ns;

    let mut leave = if state.leave != 0 {
        state.leave
    } else {
        live.leave
    };
    if leave == 0
        && let Some(seg) = &pkt.tcp
    {
        let why = if seg.flags & tcp::TCP_RST != 0 {
            Some(Leave::Rst)
        } else if seg.flags & tcp::TCP_FIN != 0 {
            Some(Leave::Fin)
        } else if seg.flags & tcp::TCP_SYN != 0 {
            Some(Leave::Syn)
        } else if pkt.tcp_options_unknown {
            Some(Leave::TcpOptions)
        } else {
            match tcp::track(&mut sender.tcp, &mut receiver.tcp, seg) {
                Ok(()) => None,
                Err(e) => {
                    ev.window = Some(e);
                    Some(Leave::OutOfWindow)
                }
            }
        };
        if let Some(why) = why {
            live.leave = why as u8;
            leave = why as u8;
            ev.left = Some(why);
        }
    }
    if leave != 0 {
        if live.leave_since_ns == 0 {
            live.leave_since_ns = pkt.now_ns;
        }
        // The egress programs watch a leaving flow's packets too (see `behind_fast`).
        if live.leave == 0 {
            live.leave = leave;
        }
        let waited = pkt.now_ns.wrapping_sub(live.leave_since_ns);
        return behind_fast(
            sender,
            waited,
            Slow::Leaving,
            Some((pkt.fingerprint, pkt.now_ns)),
        );
    }
    if sender.mode == Mode::Pending as u8 {
        if sender.pass_fp != 0
            && sender.exit_fp == sender.pass_fp
            && pkt.now_ns.wrapping_sub(sender.since_ns) >= EXIT_GRACE_NS
        {
            sender.mode = Mode::Active as u8;
            sender.since_ns = pkt.now_ns;
            ev.drained = true;
        } else {
            sender.pass_fp = pkt.fingerprint;
            sender.slow_passes = sender.slow_passes.wrapping_add(1);
            return Decision::Slow(Slow::Pending);
        }
    }
    if pkt.ttl <= 1 {
        return behind_fast(sender, 0, Slow::TtlExpired, None);
    }
    if pkt.ip_len > u32::from(out.mtu) {
        return behind_fast(sender, 0, Slow::TooBig, None);
    }
    Decision::Forward
}

/// The slow path for a packet of a direction that may have frames in flight on the fast
/// path: behind them when it has, straight up when not. `waited`: how long the flow has been
/// leaving (fast-path frames not counted after [`LEAVE_WAIT_NS`] are taken as lost).
///
/// A leaving packet (`leaving`: its fingerprint, and the time) that went through the
/// CPU-map queue is off the queue when the CPU-map program takes it, but still on its way
/// through the kernel on that CPU: the direction's next packets follow the same way until
/// the egress program has seen it leave (`exit_fp`) [`EXIT_GRACE_NS`] ago, or for
/// [`LEAVE_WAIT_NS`] at most (the ruleset may drop it).
#[inline(always)]
fn behind_fast(dir: &mut LiveDir, waited: u64, why: Slow, leaving: Option<(u32, u64)>) -> Decision {
    // A CPU-map queue empties within milliseconds: counts still apart after LEAVE_WAIT_NS
    // mean a frame was dropped there (a full queue), and waiting for it would be for ever.
    let queued = dir.cpu_sent != dir.cpu_done && waited <= LEAVE_WAIT_NS;
    let in_flight = dir.fast_sent != dir.fast_done && waited <= LEAVE_WAIT_NS;
    let unexited = match leaving {
        Some((_, now)) => {
            (dir.exit_fp != dir.pass_fp || now.wrapping_sub(dir.since_ns) < EXIT_GRACE_NS)
                && waited <= LEAVE_WAIT_NS
        }
        None => false,
    };
    let settling = leaving.is_some() && waited < LEAVE_SETTLE_NS;
    if queued || in_flight || unexited || settling {
        dir.cpu_sent = dir.cpu_sent.wrapping_add(1);
        if let Some((fp, _)) = leaving {
            dir.pass_fp = fp;
        }
        Decision::SlowBehind(why)
    } else {
        Decision::Slow(why)
    }
}

/// Where the fast path reads a parsed packet's IP and transport headers: masked to what the
/// packets it takes can have (a VLAN tag or two, IPv4 options, no IPv6 extension headers:
/// under 128 bytes), so the verifier knows the offsets are small.
#[inline(always)]
pub const fn l3_at(p: &Parsed) -> usize {
    (p.l3_offset & HEADER_OFFSET_MASK) as usize
}

#[inline(always)]
pub const fn l4_at(p: &Parsed) -> usize {
    (p.l4_offset & HEADER_OFFSET_MASK) as usize
}

/// See [`l3_at`]: Ethernet (14) + two tags (8) + IPv4 with options (60) = 82.
const HEADER_OFFSET_MASK: u16 = 0x7f;

/// A packet's fingerprint: what the egress program compares to recognise the last packet a
/// pending direction passed, made of what no router or NAT changes. TCP: where the segment
/// ends and what it acknowledges (the kernel's GRO may merge consecutive segments into one
/// larger packet, which then ends where the last of them did, with the same
/// acknowledgement); UDP: its length, the IPv4 identification and the first 16 payload
/// bytes.
/// Never 0 (0 means "none"); `None` when the headers are not readable.
#[inline(always)]
pub fn fingerprint(frame: &Frame, p: &Parsed) -> Option<u32> {
    let l4 = l4_at(p);
    let words = if p.ip_proto == IPPROTO_TCP {
        let tcp: &TcpHdr = frame.header(l4)?;
        let payload = (p.ip_end as usize).checked_sub(l4 + tcp.header_len())?;
        let end = u32::from_be_bytes(tcp.seq).wrapping_add(payload as u32);
        [end, u32::from_be_bytes(tcp.ack), 6, 0]
    } else {
        let udp: &UdpHdr = frame.header(l4)?;
        let id = if p.l3 == L3::Ipv4 {
            let ip: &Ipv4Hdr = frame.header(l3_at(p))?;
            u32::from(u16::from_be_bytes(ip.id))
        } else {
            0
        };
        // The identification is 0 for most UDP (unconnected sockets send with DF), and the
        // first bytes are often the same in every datagram of a flow (a protocol's magic or
        // connection id): sixteen payload bytes, which carry a sequence or packet number in
        // most protocols, keep consecutive datagrams apart.
        let payload = match frame.header::<[u8; 16]>(l4 + UdpHdr::LEN) {
            Some(b) => hash::mix4([
                u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
                u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
                u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
            ]),
            None => match frame.header::<[u8; 4]>(l4 + UdpHdr::LEN) {
                Some(w) => u32::from_be_bytes(*w),
                None => 0,
            },
        };
        [udp.length() as u32, id, payload, 17]
    };
    let h = hash::mix4(words);
    Some(if h == 0 { 1 } else { h })
}

/// The TCP segment of a parsed packet, for window tracking, and whether its options could
/// not be walked (such a segment is left to the slow path).
#[inline(always)]
pub fn segment(frame: &Frame, p: &Parsed) -> Option<(Segment, bool)> {
    let l4 = l4_at(p);
    let tcp: &TcpHdr = frame.header(l4)?;
    let hl = tcp.header_len();
    let payload = (p.ip_end as usize).checked_sub(l4 + hl)?;
    let opts = l4 + TcpHdr::MIN_LEN;
    let sack = if hl > TcpHdr::MIN_LEN {
        tcp::sack_edge(hl - TcpHdr::MIN_LEN, |i| {
            frame.header::<[u8; 4]>(opts + (i & 0x3f)).copied()
        })
    } else {
        tcp::Sack::None
    };
    let seg = Segment {
        seq: u32::from_be_bytes(tcp.seq),
        ack: u32::from_be_bytes(tcp.ack),
        sack: match sack {
            tcp::Sack::Edge(e) => Some(e),
            _ => None,
        },
        window: u16::from_be_bytes(tcp.window),
        len: payload as u32,
        flags: tcp.flags,
    };
    Some((seg, sack == tcp::Sack::Unknown))
}

/// The packets a slot's counters saw, by direction, for the daemon (idle timeouts, conntrack
/// timeouts, rates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub packets: u64,
    pub bytes: u64,
    pub last_seen_ns: u64,
}

impl FlowLive {
    /// Whether a leaving flow has nothing left in flight on the fast path: the daemon may
    /// remove it.
    pub fn drained(&self, now_ns: u64) -> bool {
        // Past LEAVE_WAIT_NS whatever is missing was lost.
        now_ns.saturating_sub(self.leave_since_ns) > LEAVE_WAIT_NS
            || self.dirs.iter().all(|d| {
                d.cpu_sent == d.cpu_done && d.fast_sent == d.fast_done && d.exit_fp == d.pass_fp
            })
    }

    /// Why the flow is leaving: what the daemon asked for (`state.leave`), or what a program
    /// found.
    pub fn leaving(&self, state: &FlowState) -> Option<Leave> {
        let raw = if state.leave != 0 {
            state.leave
        } else {
            self.leave
        };
        if raw == 0 {
            None
        } else {
            Leave::from_index(u32::from(raw))
        }
    }

    /// When either direction last had a packet.
    pub fn last_seen_ns(&self) -> u64 {
        self.dirs[0].last_seen_ns.max(self.dirs[1].last_seen_ns)
    }
}

crate::counters! {
    /// Per-CPU fast-path counters (`FLOW_STATS`).
    pub enum FlowCounter: u32, slots = 32, {
        /// Packets forwarded by the fast path.
        Forwarded = 0 => "forwarded",
        /// Packets of no offloaded flow, left to the slow path untouched (counted only
        /// while offload is on).
        Missed = 1 => "missed",
        /// Packets of a promoting direction, passed to the slow path.
        SlowPending = 2 => "slow_pending",
        /// Packets of a leaving flow, passed to the slow path.
        SlowLeaving = 3 => "slow_leaving",
        /// Of those passed: through the CPU-map queue, behind fast-path frames in flight.
        SlowBehind = 4 => "slow_behind",
        /// Directions that switched to the fast path once their slow-path packets left.
        PromoteDrained = 5 => "promote_drained",
        /// Packets of an offloaded flow on another port than the flow's.
        WrongPort = 6 => "wrong_port",
        /// Packets whose TTL ran out: the kernel answers them.
        TtlExpired = 7 => "ttl_expired",
        /// Packets larger than the output's MTU.
        TooBig = 8 => "too_big",
        /// Flows a segment with TCP options the fast path does not read sent leaving.
        LeaveOptions = 9 => "leave_options",
        /// Keys pointing at a slot of another generation.
        Stale = 10 => "stale",
        /// Flows a FIN, RST or SYN sent leaving.
        LeaveFlags = 11 => "leave_flags",
        /// Flows an out-of-window segment sent leaving.
        LeaveWindow = 12 => "leave_window",
        /// Fast-path redirects that failed (the output is gone): passed to the slow path.
        RedirectFailed = 13 => "redirect_failed",
        /// Packets a leaving flow sent through a CPU-map queue that had none for this CPU.
        NoCpuQueue = 14 => "no_cpu_queue",
        /// Packets that could not be wrapped or unwrapped (no room, a tunnel gone).
        TunnelFailed = 15 => "tunnel_failed",
        /// Wrapped packets for an offloaded flow whose outer header is not the tunnel's.
        TunnelMismatch = 16 => "tunnel_mismatch",
        /// Pending packets the egress program saw leave the kernel.
        ExitSeen = 17 => "exit_seen",
        /// Of the flows an out-of-window segment sent leaving, by what was outside: the
        /// sequence beyond what the receiver allowed, or before its window; the
        /// acknowledgement of data never sent, or further back than any window.
        WindowSeqOver = 18 => "window_seq_over",
        WindowSeqUnder = 19 => "window_seq_under",
        WindowAckOver = 20 => "window_ack_over",
        WindowAckUnder = 21 => "window_ack_under",
    }
}

/// Global settings (`FLOW_CONFIG`, one entry). Written by the daemon.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowConfig {
    /// Offload is on: the entry programs look flows up.
    pub enabled: u8,
    /// Some tunnel is configured: wrapped packets on uplinks are looked inside.
    pub tunnels: u8,
    pub _pad: [u8; 2],
    /// Flows with a pending direction or leaving: the egress program looks packets up only
    /// while there are some.
    pub pending: u32,
}

/// A VXLAN tunnel flows are wrapped in or taken out of (`FLOW_TUNNELS`). Written by the
/// daemon from the VXLAN device's settings and the route and neighbour to its remote end.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    pub vni: u32,
    /// The outer IPv4 addresses: ours and the remote end's.
    pub local: [u8; 4],
    pub remote: [u8; 4],
    /// The outer Ethernet header, and the port wrapped packets leave by.
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub out_ifindex: u32,
    /// The UDP port (4789 unless the device says otherwise), and the source-port range
    /// flows are hashed over (the device's, like the kernel's own encapsulation).
    pub dst_port: u16,
    pub src_port_min: u16,
    pub src_port_max: u16,
    /// Outer TTL and TOS.
    pub ttl: u8,
    pub tos: u8,
    /// 1 when set up.
    pub valid: u8,
    pub _pad: [u8; 3],
}

/// The UDP source port a wrapped packet of the flow with hash `h` gets: spread over the
/// tunnel's range the way the kernel's `udp_flow_src_port` does, so the underlay's ECMP
/// spreads flows.
#[inline(always)]
pub fn tunnel_src_port(t: &Tunnel, h: u32) -> u16 {
    let min = u32::from(t.src_port_min);
    let max = u32::from(t.src_port_max);
    if max <= min {
        return t.src_port_min;
    }
    (((u64::from(h) * u64::from(max - min)) >> 32) as u32 + min) as u16
}

/// The tag in front of a fast-path frame for the device map's program, which takes it off:
/// the flow's `slot * 2 + dir` above [`FLOW_TAG_MARK`]. Four bytes and no more: the kernel
/// refuses a redirected frame longer than the device's MTU, Ethernet header and one VLAN tag
/// before the device map's program runs (`xdp_ok_fwd_dev`), and a full-sized frame has just
/// that VLAN tag's room.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowMeta(pub u32);

/// The first byte of a [`FlowMeta`] in memory. Its low bit makes it a multicast MAC
/// address's first byte: no fast-path frame (to a unicast next hop) that went without a tag
/// starts with it.
pub const FLOW_TAG_MARK: u8 = 0xf1;

// Every `slot * 2 + dir` fits the tag's 24 bits.
const _: () = assert!(MAX_FLOWS_LIMIT as u64 * 2 <= 1 << 24);

impl FlowMeta {
    pub const fn new(slot_dir: u32) -> FlowMeta {
        FlowMeta(FLOW_TAG_MARK as u32 | slot_dir << 8)
    }

    /// The flow's `slot * 2 + dir`, if this is a tag.
    pub const fn slot_dir(self) -> Option<u32> {
        if self.0 as u8 == FLOW_TAG_MARK {
            Some(self.0 >> 8)
        } else {
            None
        }
    }
}

/// `rss::SteerMeta::vm_slot` of a leaving flow's packet queued behind its fast-path frames:
/// no VM slot or RSS flow slot is this large.
pub const FLOW_META_TAG: u32 = 0xf10f_0000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::TCP_ACK;

    fn state() -> FlowState {
        let mut s = FlowState {
            generation: 1,
            proto: 6,
            family: 4,
            ..FlowState::default()
        };
        s.dirs[ORIGINAL].in_ifindex = 10;
        s.dirs[ORIGINAL].out_ifindex = 20;
        s.dirs[REPLY].in_ifindex = 20;
        s.dirs[REPLY].out_ifindex = 10;
        s.dirs[ORIGINAL].mtu = 1500;
        s.dirs[REPLY].mtu = 1500;
        s
    }

    fn pkt(dir: usize, seq: u32, ack: u32, flags: u8, fp: u32, now: u64) -> Packet {
        Packet {
            dir,
            ingress: if dir == ORIGINAL { 10 } else { 20 },
            ttl: 64,
            ip_len: 1000,
            tcp: Some(Segment {
                seq,
                ack,
                sack: None,
                window: 1000,
                len: 100,
                flags,
            }),
            tcp_options_unknown: false,
            fingerprint: fp,
            now_ns: now,
        }
    }

    #[test]
    fn a_direction_switches_once_its_last_slow_packet_left() {
        let s = state();
        let mut l = FlowLive::promoted(&s, 0);
        let mut ev = Events::default();
        assert_eq!(
            decide(&s, &mut l, &pkt(ORIGINAL, 100, 5, TCP_ACK, 7, 10), &mut ev),
            Decision::Slow(Slow::Pending)
        );
        assert_eq!(l.dirs[0].pass_fp, 7);
        // Not yet out: still slow, and the newer packet is the one to wait for.
        assert_eq!(
            decide(&s, &mut l, &pkt(ORIGINAL, 200, 5, TCP_ACK, 8, 20), &mut ev),
            Decision::Slow(Slow::Pending)
        );
        l.dirs[0].exit_fp = 7;
        assert_eq!(
            decide(&s, &mut l, &pkt(ORIGINAL, 300, 5, TCP_ACK, 9, 30), &mut ev),
            Decision::Slow(Slow::Pending)
        );
        // Seen leaving at 35: it may still be on its way into the device until the grace
        // has passed.
        l.dirs[0].exit_fp = 9;
        l.dirs[0].since_ns = 35;
        assert_eq!(
            decide(&s, &mut l, &pkt(ORIGINAL, 400, 5, TCP_ACK, 10, 40), &mut ev),
            Decision::Slow(Slow::Pending)
        );
        l.dirs[0].exit_fp = 10;
        let later = 35 + EXIT_GRACE_NS;
        assert_eq!(
            decide(
                &s,
                &mut l,
                &pkt(ORIGINAL, 500, 5, TCP_ACK, 11, later),
                &mut ev
            ),
            Decision::Forward
        );
        assert!(ev.drained);
        // The other direction is still pending.
        assert_eq!(l.dirs[1].mode, Mode::Pending as u8);
    }

    #[test]
    fn a_direction_whose_packets_never_leave_the_kernel_stays_slow() {
        let s = state();
        let mut l = FlowLive::promoted(&s, 0);
        let mut ev = Events::default();
        decide(&s, &mut l, &pkt(ORIGINAL, 100, 5, TCP_ACK, 7, 10), &mut ev);
        // However long it waits: the slow path drops it, the fast path must not carry it.
        let late = PROMOTE_WAIT_NS * 10;
        let p = pkt(ORIGINAL, 200, 5, TCP_ACK, 8, late);
        assert_eq!(
            decide(&s, &mut l, &p, &mut ev),
            Decision::Slow(Slow::Pending)
        );
        assert!(!ev.drained);
        // One that does leave (the previous one was lost) lets it switch.
        l.dirs[0].exit_fp = 8;
        let p = pkt(ORIGINAL, 300, 5, TCP_ACK, 9, late + 1);
        assert_eq!(decide(&s, &mut l, &p, &mut ev), Decision::Forward);
    }

    #[test]
    fn a_fin_goes_behind_the_frames_in_flight() {
        let s = state();
        let mut l = FlowLive::promoted(&s, 0);
        l.dirs[0].mode = Mode::Active as u8;
        l.dirs[0].fast_sent = 3;
        l.dirs[0].fast_done = 1;
        let mut ev = Events::default();
        assert_eq!(
            decide(
                &s,
                &mut l,
                &pkt(ORIGINAL, 100, 5, TCP_ACK | tcp::TCP_FIN, 7, 10),
                &mut ev
            ),
            Decision::SlowBehind(Slow::Leaving)
        );
        assert_eq!(ev.left, Some(Leave::Fin));
        assert_eq!(l.leave, Leave::Fin as u8);
        // The device map took them, but one packet is still on the CPU-map queue.
        l.dirs[0].fast_done = 3;
        assert_eq!(
            decide(&s, &mut l, &pkt(ORIGINAL, 101, 5, TCP_ACK, 8, 20), &mut ev),
            Decision::SlowBehind(Slow::Leaving)
        );
        assert!(!l.drained(20));
        // Off the queue, but the last one queued (fingerprint 8) is still in the kernel:
        // the next goes the same way.
        l.dirs[0].cpu_done = 2;
        assert!(!l.drained(20));
        assert_eq!(
            decide(&s, &mut l, &pkt(ORIGINAL, 102, 5, TCP_ACK, 9, 25), &mut ev),
            Decision::SlowBehind(Slow::Leaving)
        );
        // The egress program saw it leave: the rest go straight up.
        l.dirs[0].cpu_done = 3;
        l.dirs[0].exit_fp = 9;
        l.dirs[0].since_ns = 28;
        assert!(l.drained(30));
        assert_eq!(
            decide(
                &s,
                &mut l,
                &pkt(ORIGINAL, 103, 5, TCP_ACK, 10, 10 + LEAVE_SETTLE_NS),
                &mut ev
            ),
            Decision::Slow(Slow::Leaving)
        );
        // A queued packet that never leaves (the ruleset dropped it) is waited for
        // LEAVE_WAIT_NS at most.
        l.dirs[0].fast_sent = 4;
        let p = pkt(ORIGINAL, 104, 5, TCP_ACK, 11, 40);
        assert_eq!(
            decide(&s, &mut l, &p, &mut ev),
            Decision::SlowBehind(Slow::Leaving)
        );
        l.dirs[0].fast_done = 4;
        l.dirs[0].cpu_done = 4;
        assert!(!l.drained(50));
        assert!(l.drained(10 + LEAVE_WAIT_NS + 1));
        // A packet the CPU-map queue dropped (it was full) is not waited for either.
        l.dirs[0].cpu_sent = 6;
        l.dirs[0].cpu_done = 5;
        assert!(!l.drained(50));
        let late = 10 + LEAVE_WAIT_NS + 1;
        assert!(l.drained(late));
        l.dirs[0].exit_fp = 11;
        l.dirs[0].since_ns = 45;
        assert_eq!(
            decide(
                &s,
                &mut l,
                &pkt(ORIGINAL, 105, 5, TCP_ACK, 12, late),
                &mut ev
            ),
            Decision::Slow(Slow::Leaving)
        );
    }

    #[test]
    fn packets_on_another_port_are_not_the_fast_paths() {
        let s = state();
        let mut l = FlowLive::promoted(&s, 0);
        let mut p = pkt(ORIGINAL, 100, 5, TCP_ACK, 7, 10);
        p.ingress = 99;
        let mut ev = Events::default();
        assert_eq!(
            decide(&s, &mut l, &p, &mut ev),
            Decision::Slow(Slow::WrongPort)
        );
        assert_eq!(l.dirs[0].slow_passes, 0);
    }

    #[test]
    fn tunnel_source_ports_stay_in_the_range() {
        let t = Tunnel {
            src_port_min: 32768,
            src_port_max: 61000,
            ..Tunnel::default()
        };
        for h in [0, 1, u32::MAX, 0x8000_0000] {
            let p = tunnel_src_port(&t, h);
            assert!((32768..61000).contains(&p));
        }
    }
}

/// The tuple a packet of direction `dir` leaves with, given the flow's two keys as conntrack
/// reports them (original and reply, as packets arrive): whatever answers it must arrive as
/// the other direction's key, so it is that key reversed. This is all NAT is to the fast path.
pub const fn leaves_as(keys: &[FlowKey; 2], dir: usize) -> FlowKey {
    keys[(dir & 1) ^ 1].reversed()
}

#[cfg(test)]
mod nat_tests {
    use super::*;

    fn key(src: u8, sport: u16, dst: u8, dport: u16) -> FlowKey {
        let mut k = FlowKey {
            src_port: sport,
            dst_port: dport,
            proto: 17,
            family: 4,
            ..FlowKey::default()
        };
        k.src[15] = src;
        k.dst[15] = dst;
        k
    }

    #[test]
    fn nat_is_the_other_directions_key_reversed() {
        // VM 1:5000 → VIP-less remote 9:53, masqueraded behind 7:40000.
        let orig = key(1, 5000, 9, 53);
        let reply = key(9, 53, 7, 40000);
        let keys = [orig, reply];
        assert_eq!(leaves_as(&keys, ORIGINAL), key(7, 40000, 9, 53));
        assert_eq!(leaves_as(&keys, REPLY), key(9, 53, 1, 5000));
        // A client 3:1234 → VIP 8:80 DNAT'd to VM 2:8080.
        let keys = [key(3, 1234, 8, 80), key(2, 8080, 3, 1234)];
        assert_eq!(leaves_as(&keys, ORIGINAL), key(3, 1234, 2, 8080));
        assert_eq!(leaves_as(&keys, REPLY), key(8, 80, 3, 1234));
        // Without NAT the rewrite changes nothing.
        let k = key(1, 1, 2, 2);
        assert_eq!(leaves_as(&[k, k.reversed()], ORIGINAL), k);
        assert_eq!(leaves_as(&[k, k.reversed()], REPLY), k.reversed());
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn the_documented_sizes_hold() {
        assert_eq!(size_of::<FlowKey>(), 44);
        assert_eq!(size_of::<FlowRef>(), 12);
        assert_eq!(size_of::<FlowDir>(), 64);
        assert_eq!(size_of::<FlowState>(), 144);
        assert_eq!(size_of::<FlowLive>(), 192);
        assert_eq!(size_of::<Tunnel>(), 40);
    }
}
