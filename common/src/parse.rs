//! The frame parser shared by every XDP program: Ethernet with up to two VLAN tags, IPv4 with
//! options, IPv6 with a bounded walk of extension headers, then TCP, UDP or ICMP.
//!
//! The parser never reads outside the frame and never loops without a bound, so the verifier
//! accepts it and random bytes cannot hurt it. Lengths announced by headers are checked against
//! what the frame really holds: a frame that ends inside a header it announces is
//! [`ParseError::Truncated`], one whose fields contradict each other is
//! [`ParseError::Malformed`]. Anything well-formed but beyond what the parser follows (a third
//! VLAN tag, a very long extension chain, headers outside the linear part of a multi-buffer
//! frame) ends parsing early and is recorded as a [`Shape`], never as an error.

use crate::{frame::Frame, headers::*};

/// VLAN tags followed before giving up: 802.1Q plus one 802.1ad outer tag (QinQ) is what
/// hosts see in practice; deeper stacks are passed on unparsed.
pub const MAX_VLAN_TAGS: usize = 2;

/// IPv6 extension headers followed before giving up. Real traffic carries at most a few
/// (hop-by-hop, routing, fragment, destination options); eight covers every legitimate chain
/// while keeping the loop short for the verifier.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// Longest frame that is not a jumbo frame: 1500-byte MTU plus the 14-byte Ethernet header
/// (FCS is not part of what XDP sees); each VLAN tag adds 4.
pub const STANDARD_FRAME_LEN: usize = 1514;

#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L3 {
    #[default]
    None = 0,
    Ipv4 = 4,
    Ipv6 = 6,
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fragment {
    #[default]
    None = 0,
    /// Fragment offset 0: carries the transport header.
    First = 1,
    /// Any later fragment: no transport header.
    Later = 2,
}

crate::counters! {
    /// Things worth counting about a frame that do not change its verdict by themselves.
    pub enum Shape: u8, slots = crate::limits::SHAPE_SLOTS, {
        /// One 802.1Q or 802.1ad tag.
        Vlan = 0 => "vlan",
        /// Two tags (QinQ).
        QinQ = 1 => "qinq",
        /// More than [`MAX_VLAN_TAGS`] tags: the inner headers were not parsed.
        VlanOverflow = 2 => "vlan_overflow",
        /// ARP or another non-IP ethertype.
        NonIp = 3 => "non_ip",
        /// IPv4 header longer than 20 bytes.
        Ipv4Options = 4 => "ipv4_options",
        /// IPv6 extension headers before the transport header.
        Ipv6ExtHeaders = 5 => "ipv6_ext_headers",
        /// A chain longer than [`MAX_IPV6_EXT_HEADERS`]: the transport header was not parsed.
        Ipv6ExtOverflow = 6 => "ipv6_ext_overflow",
        /// An IPv4 or IPv6 fragment.
        Fragment = 7 => "fragment",
        /// IP-in-IP, GRE, or UDP to the VXLAN or Geneve port.
        Tunnel = 8 => "tunnel",
        /// Longer than a standard Ethernet frame.
        Jumbo = 9 => "jumbo",
        /// Headers reach past the linear part of a multi-buffer frame: parsing stopped there.
        NonLinear = 10 => "nonlinear",
    }
}

impl Shape {
    #[inline(always)]
    pub const fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// The header layer a parse error was found in.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    Ethernet = 0,
    Vlan = 1,
    Ipv4 = 2,
    Ipv6 = 3,
    Ipv6Ext = 4,
    Tcp = 5,
    Udp = 6,
    Icmp = 7,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The frame ends inside a header, or before the length a header announces.
    Truncated(Layer),
    /// Header fields are impossible (wrong IP version, header length below the minimum, a
    /// length field smaller than its own header).
    Malformed(Layer),
}

/// What the parser learned about a frame. Addresses are in network order; IPv4 addresses are
/// stored IPv4-mapped (`::ffff:a.b.c.d`) so one layout serves both families.
///
/// The scalars every frame sets come first, in [`CLEARED_WORDS`] 8-byte words that
/// [`Parsed::clear`] zeroes with as many stores; addresses and VLAN IDs follow, read only
/// when those scalars say this frame set them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
// 8-byte alignment lets the BPF backend clear and copy it with 8-byte stores instead of a
// byte-by-byte loop.
#[repr(C, align(8))]
pub struct Parsed {
    pub vlan_count: u8,
    pub l3: L3,
    /// Transport protocol (after IPv6 extension headers); meaningless when `l3` is `None`.
    pub ip_proto: u8,
    pub fragment: Fragment,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: u8,
    /// The innermost ethertype reached.
    pub ethertype: u16,
    pub l3_offset: u16,
    /// Offset of the transport header, 0 when none was parsed.
    pub l4_offset: u16,
    /// Bit set of [`Shape`]s.
    pub shapes: u16,
    /// TCP/UDP ports; 0 for other protocols and for fragments.
    pub src_port: u16,
    pub dst_port: u16,
    /// Where the parser is (an offset), and where the IP packet ends: scratch the parser
    /// passes its position through (see [`forget`]).
    pub cursor: u32,
    pub ip_end: u32,
    /// VLAN IDs, outermost first.
    pub vlan_ids: [u16; MAX_VLAN_TAGS],
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
}

/// 8-byte words at the start of [`Parsed`] that [`Parsed::clear`] zeroes: every scalar up to
/// and including `cursor`.
pub const CLEARED_WORDS: usize = 3;

const _: () = assert!(core::mem::offset_of!(Parsed, ip_end) == CLEARED_WORDS * 8);

impl Parsed {
    /// Readies a reused `Parsed` for [`parse`] by clearing every field whose stale value a
    /// consumer could read: three 8-byte stores. Addresses and VLAN IDs are left as they
    /// are: they are only read when `l3` and `vlan_count` say this frame set them.
    #[inline(always)]
    pub fn clear(&mut self) {
        let words = (self as *mut Parsed).cast::<u64>();
        for i in 0..CLEARED_WORDS {
            // SAFETY: `Parsed` is `repr(C, align(8))` and its first `CLEARED_WORDS` words hold
            // only integers and the fieldless enums `L3` and `Fragment`, for which all-zero is
            // a valid value (`None`); the writes stay inside `self`.
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
        }
    }

    #[inline(always)]
    pub fn has(&self, shape: Shape) -> bool {
        self.shapes & shape.bit() != 0
    }

    #[inline(always)]
    fn mark(&mut self, shape: Shape) {
        self.shapes |= shape.bit();
    }
}

/// Why parsing stopped before the end of the headers.
enum Stop {
    Error(ParseError),
    /// The next header is outside the linear part of a multi-buffer frame.
    NonLinear,
}

type Step<T> = Result<T, Stop>;

/// Reads a header that must lie entirely before `limit` (the end of the frame or of the IP
/// packet, whichever is shorter).
#[inline(always)]
fn read<'a, T: Header>(
    frame: &Frame<'a>,
    offset: usize,
    limit: usize,
    layer: Layer,
) -> Step<&'a T> {
    if offset + size_of::<T>() > limit {
        return Err(Stop::Error(ParseError::Truncated(layer)));
    }
    match frame.header::<T>(offset) {
        Some(h) => Ok(h),
        None => Err(Stop::NonLinear),
    }
}

#[inline(always)]
fn fail<T>(error: ParseError) -> Step<T> {
    Err(Stop::Error(error))
}

/// Header offsets stay below this: the linear part XDP can read directly is at most a page,
/// and the verifier accepts a variable packet offset only while it stays well under 64 KiB.
/// A position beyond it ends parsing like a header outside the linear part.
const MAX_OFFSET: usize = (1 << 13) - 1;

/// Lengths the parser compares against (the end of an IP packet) stay below this: the
/// largest multi-buffer frame is far smaller.
const MAX_LENGTH: usize = (1 << 24) - 1;

/// Passes an offset through `slot` in memory and bounds it again. Every path through a
/// header that has variants (IPv6 extension headers of different lengths, IPv4 with or
/// without options) then leaves the next step with the same thing: "some offset below
/// [`MAX_OFFSET`]", so the BPF verifier checks the rest once rather than once per path.
/// Without it the parser alone took ~480,000 verified instructions of the verifier's
/// 1,000,000; in userspace it is a store and a load.
#[inline(always)]
fn forget(slot: &mut u32, offset: usize) -> Step<usize> {
    forget_below(slot, offset, MAX_OFFSET)
}

/// [`forget`] for a length, which is compared with, never added to a packet pointer.
#[inline(always)]
fn forget_length(slot: &mut u32, length: usize) -> Step<usize> {
    forget_below(slot, length, MAX_LENGTH)
}

/// `max` must be all ones in binary.
#[inline(always)]
fn forget_below(slot: &mut u32, value: usize, max: usize) -> Step<usize> {
    if value > max {
        return Err(Stop::NonLinear);
    }
    // SAFETY: `slot` is a valid, aligned reference; volatile keeps the compiler from carrying
    // the value over in a register.
    unsafe { core::ptr::write_volatile(slot, value as u32) };
    // SAFETY: as above.
    Ok(unsafe { core::ptr::read_volatile(slot) } as usize & max)
}

/// Reads a byte through memory, for the same reason as [`forget`].
#[inline(always)]
fn forget_u8(slot: &mut u8, v: u8) -> u8 {
    // SAFETY: as in `forget`.
    unsafe {
        core::ptr::write_volatile(slot, v);
        core::ptr::read_volatile(slot)
    }
}

/// Parses `frame` into `p`, which must start out as `Parsed::default()` or be
/// [`Parsed::clear`]ed. See the module
/// documentation for what counts as an error; on error, `p` holds what was parsed before it.
///
/// (Filling a caller's struct rather than returning `Result<Parsed, _>` keeps every byte the
/// XDP program copies initialised, which the verifier insists on.)
#[inline(always)]
pub fn parse(frame: &Frame, p: &mut Parsed) -> Result<(), ParseError> {
    match parse_into(frame, p) {
        Ok(()) => Ok(()),
        Err(Stop::NonLinear) => {
            p.mark(Shape::NonLinear);
            Ok(())
        }
        Err(Stop::Error(e)) => Err(e),
    }
}

/// [`parse`] into a fresh [`Parsed`], for userspace callers.
pub fn parse_frame(frame: &Frame) -> Result<Parsed, ParseError> {
    let mut p = Parsed::default();
    parse(frame, &mut p).map(|()| p)
}

#[inline(always)]
fn parse_into(frame: &Frame, p: &mut Parsed) -> Step<()> {
    let len = frame.len();
    let eth: &EthHdr = read(frame, 0, len, Layer::Ethernet)?;
    copy_bytes(&mut p.dst_mac, &eth.dst);
    copy_bytes(&mut p.src_mac, &eth.src);
    let mut ethertype = eth.ethertype();
    let mut offset = EthHdr::LEN;

    for i in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag: &VlanHdr = read(frame, offset, len, Layer::Vlan)?;
        p.vlan_ids[i] = tag.vid();
        p.vlan_count += 1;
        ethertype = tag.ethertype();
        offset += VlanHdr::LEN;
    }
    match p.vlan_count {
        0 => {}
        1 => p.mark(Shape::Vlan),
        _ => p.mark(Shape::QinQ),
    }
    if len > STANDARD_FRAME_LEN + VlanHdr::LEN * p.vlan_count as usize {
        p.mark(Shape::Jumbo);
    }
    p.ethertype = ethertype;
    p.l3_offset = offset as u16;

    let transport = match ethertype {
        ETH_P_IPV4 => parse_ipv4(frame, offset, p)?,
        ETH_P_IPV6 => parse_ipv6(frame, offset, p)?,
        ETH_P_8021Q | ETH_P_8021AD => {
            p.mark(Shape::VlanOverflow);
            None
        }
        _ => {
            p.mark(Shape::NonIp);
            None
        }
    };
    // One transport step for every way of getting here.
    let Some((at, ip_end)) = transport else {
        return Ok(());
    };
    let at = forget(&mut p.cursor, at)?;
    let ip_end = forget_length(&mut p.ip_end, ip_end)?;
    let proto = p.ip_proto;
    let proto = forget_u8(&mut p.ip_proto, proto);
    parse_l4(frame, at, ip_end, proto, p)
}

/// The IPv4 header; `Some((transport offset, end of the IP packet))` when a transport
/// header follows.
#[inline(always)]
fn parse_ipv4(frame: &Frame, offset: usize, p: &mut Parsed) -> Step<Option<(usize, usize)>> {
    let ip: &Ipv4Hdr = read(frame, offset, frame.len(), Layer::Ipv4)?;
    if ip.version() != 4 {
        return fail(ParseError::Malformed(Layer::Ipv4));
    }
    let header_len = ip.header_len();
    if header_len < Ipv4Hdr::MIN_LEN {
        return fail(ParseError::Malformed(Layer::Ipv4));
    }
    let total_len = ip.total_len();
    if total_len < header_len {
        return fail(ParseError::Malformed(Layer::Ipv4));
    }
    // Bytes after the IP packet are Ethernet padding and belong to no header.
    let ip_end = offset + total_len;
    if ip_end > frame.len() || offset + header_len > ip_end {
        return fail(ParseError::Truncated(Layer::Ipv4));
    }
    p.l3 = L3::Ipv4;
    p.ip_proto = ip.protocol;
    set_v4_mapped(&mut p.src_ip, &ip.src);
    set_v4_mapped(&mut p.dst_ip, &ip.dst);
    if header_len > Ipv4Hdr::MIN_LEN {
        p.mark(Shape::Ipv4Options);
    }
    if ip.more_fragments() || ip.fragment_offset() != 0 {
        p.mark(Shape::Fragment);
        p.fragment = if ip.fragment_offset() == 0 {
            Fragment::First
        } else {
            Fragment::Later
        };
        // Only the first fragment has a transport header; fragments of one datagram must
        // classify alike, so none of them is read past the IP header.
        return Ok(None);
    }
    Ok(Some((offset + header_len, ip_end)))
}

/// The IPv6 header and its extension headers; like [`parse_ipv4`].
#[inline(always)]
fn parse_ipv6(frame: &Frame, offset: usize, p: &mut Parsed) -> Step<Option<(usize, usize)>> {
    let ip: &Ipv6Hdr = read(frame, offset, frame.len(), Layer::Ipv6)?;
    if ip.version() != 6 {
        return fail(ParseError::Malformed(Layer::Ipv6));
    }
    let payload_len = ip.payload_len();
    // A zero payload length announces a jumbogram (or a GSO super-packet): its length lives in
    // a hop-by-hop option, so the frame's own length bounds the headers instead.
    let ip_end = if payload_len == 0 {
        frame.len()
    } else {
        offset + Ipv6Hdr::LEN + payload_len
    };
    if ip_end > frame.len() {
        return fail(ParseError::Truncated(Layer::Ipv6));
    }
    p.l3 = L3::Ipv6;
    copy_bytes(&mut p.src_ip, &ip.src);
    copy_bytes(&mut p.dst_ip, &ip.dst);

    let mut next = ip.next_header;
    let mut at = offset + Ipv6Hdr::LEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        let ext_len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MOBILITY
            | IPPROTO_HIP | IPPROTO_SHIM6 => {
                let ext: &Ipv6ExtHdr = read(frame, at, ip_end, Layer::Ipv6Ext)?;
                next = ext.next_header;
                (ext.len as usize + 1) * 8
            }
            IPPROTO_AH => {
                let ext: &Ipv6ExtHdr = read(frame, at, ip_end, Layer::Ipv6Ext)?;
                next = ext.next_header;
                (ext.len as usize + 2) * 4
            }
            IPPROTO_FRAGMENT => {
                let frag: &Ipv6FragHdr = read(frame, at, ip_end, Layer::Ipv6Ext)?;
                next = frag.next_header;
                p.fragment = if frag.fragment_offset() == 0 {
                    Fragment::First
                } else {
                    Fragment::Later
                };
                Ipv6FragHdr::LEN
            }
            _ => break,
        };
        if at + ext_len > ip_end {
            return fail(ParseError::Truncated(Layer::Ipv6Ext));
        }
        // Each kind of extension header leaves a different length: the next one starts
        // from "some offset" whichever it was (see `forget`).
        at = forget(&mut p.cursor, at + ext_len)?;
        next = forget_u8(&mut p.ip_proto, next);
        p.mark(Shape::Ipv6ExtHeaders);
    }
    p.ip_proto = next;
    if is_ipv6_ext(next) {
        p.mark(Shape::Ipv6ExtOverflow);
        return Ok(None);
    }
    if p.fragment != Fragment::None {
        p.mark(Shape::Fragment);
        return Ok(None);
    }
    Ok(Some((at, ip_end)))
}

#[inline(always)]
fn is_ipv6_ext(proto: u8) -> bool {
    matches!(
        proto,
        IPPROTO_HOPOPTS
            | IPPROTO_ROUTING
            | IPPROTO_FRAGMENT
            | IPPROTO_AH
            | IPPROTO_DSTOPTS
            | IPPROTO_MOBILITY
            | IPPROTO_HIP
            | IPPROTO_SHIM6
    )
}

#[inline(always)]
fn parse_l4(frame: &Frame, offset: usize, ip_end: usize, proto: u8, p: &mut Parsed) -> Step<()> {
    match proto {
        IPPROTO_TCP => {
            let tcp: &TcpHdr = read(frame, offset, ip_end, Layer::Tcp)?;
            let header_len = tcp.header_len();
            if header_len < TcpHdr::MIN_LEN {
                return fail(ParseError::Malformed(Layer::Tcp));
            }
            if offset + header_len > ip_end {
                return fail(ParseError::Truncated(Layer::Tcp));
            }
            p.src_port = tcp.src_port();
            p.dst_port = tcp.dst_port();
            p.tcp_flags = tcp.flags;
        }
        IPPROTO_UDP => {
            let udp: &UdpHdr = read(frame, offset, ip_end, Layer::Udp)?;
            let udp_len = udp.length();
            // Length 0 is legal only inside an IPv6 jumbogram, where the IP layer sizes it.
            if udp_len != 0 && udp_len < UdpHdr::LEN {
                return fail(ParseError::Malformed(Layer::Udp));
            }
            if offset + udp_len > ip_end {
                return fail(ParseError::Truncated(Layer::Udp));
            }
            p.src_port = udp.src_port();
            p.dst_port = udp.dst_port();
            if p.dst_port == UDP_PORT_VXLAN || p.dst_port == UDP_PORT_GENEVE {
                p.mark(Shape::Tunnel);
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let icmp: &IcmpHdr = read(frame, offset, ip_end, Layer::Icmp)?;
            p.icmp_type = icmp.kind;
            p.icmp_code = icmp.code;
        }
        IPPROTO_IPIP | IPPROTO_IPV6 | IPPROTO_GRE => {
            p.mark(Shape::Tunnel);
            return Ok(());
        }
        _ => return Ok(()),
    }
    p.l4_offset = offset as u16;
    Ok(())
}

/// Copies a byte array one byte at a time. A plain assignment becomes a `memcpy` call in BPF,
/// a loop of several instructions per byte behind a function call; written out with volatile
/// accesses (so LLVM cannot fold it back into a call) it is one load and one store per byte.
#[inline(always)]
fn copy_bytes<const N: usize>(dst: &mut [u8; N], src: &[u8; N]) {
    for i in 0..N {
        // SAFETY: both indices are in bounds of their arrays; the references are valid.
        unsafe { core::ptr::write_volatile(&mut dst[i], core::ptr::read_volatile(&src[i])) };
    }
}

/// Writes `a` IPv4-mapped (`::ffff:a.b.c.d`) into `dst`, byte by byte (see [`copy_bytes`]).
#[inline(always)]
fn set_v4_mapped(dst: &mut [u8; 16], a: &[u8; 4]) {
    for (i, b) in dst.iter_mut().enumerate() {
        let v = match i {
            0..=9 => 0,
            10 | 11 => 0xff,
            // SAFETY: i - 12 is 0..4, in bounds of `a`.
            _ => unsafe { core::ptr::read_volatile(&a[i - 12]) },
        };
        // SAFETY: `b` is a valid reference into `dst`.
        unsafe { core::ptr::write_volatile(b, v) };
    }
}
