//! Wire-format headers, as they sit in a frame.
//!
//! Every field is a byte array, so every header has alignment 1: a reference to one is valid at
//! any offset in a frame (VLAN tags and IPv4 options leave later headers unaligned). Multi-byte
//! fields are big-endian on the wire; the accessors return host-order values.

/// Marker for types that may be read straight out of frame bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, have alignment 1 and be valid for every bit pattern.
pub unsafe trait Header: Sized {}

// SAFETY: one byte, alignment 1, every bit pattern valid.
unsafe impl Header for u8 {}
// SAFETY: a byte array: alignment 1, every bit pattern valid.
unsafe impl<const N: usize> Header for [u8; N] {}

#[inline(always)]
const fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_IPV6: u16 = 0x86dd;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ESP: u8 = 50;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_MOBILITY: u8 = 135;
pub const IPPROTO_HIP: u8 = 139;
pub const IPPROTO_SHIM6: u8 = 140;

pub const UDP_PORT_VXLAN: u16 = 4789;
pub const UDP_PORT_GENEVE: u16 = 6081;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    ethertype: [u8; 2],
}
// SAFETY: repr(C), byte arrays only.
unsafe impl Header for EthHdr {}

impl EthHdr {
    pub const LEN: usize = 14;
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        be16(self.ethertype)
    }
}

/// An 802.1Q / 802.1ad tag: the TCI and the ethertype that follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VlanHdr {
    tci: [u8; 2],
    ethertype: [u8; 2],
}
// SAFETY: repr(C), byte arrays only.
unsafe impl Header for VlanHdr {}

impl VlanHdr {
    pub const LEN: usize = 4;
    #[inline(always)]
    pub fn vid(&self) -> u16 {
        be16(self.tci) & 0x0fff
    }
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        be16(self.ethertype)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ipv4Hdr {
    version_ihl: u8,
    pub tos: u8,
    total_len: [u8; 2],
    pub id: [u8; 2],
    frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}
// SAFETY: repr(C), u8 and byte arrays only.
unsafe impl Header for Ipv4Hdr {}

impl Ipv4Hdr {
    pub const MIN_LEN: usize = 20;
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.version_ihl >> 4
    }
    /// Header length in bytes (IHL × 4), at most 60.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.version_ihl & 0x0f) as usize) * 4
    }
    #[inline(always)]
    pub fn total_len(&self) -> usize {
        be16(self.total_len) as usize
    }
    /// More-fragments flag set.
    #[inline(always)]
    pub fn more_fragments(&self) -> bool {
        self.frag_off[0] & 0x20 != 0
    }
    /// Fragment offset in 8-byte units.
    #[inline(always)]
    pub fn fragment_offset(&self) -> u16 {
        be16(self.frag_off) & 0x1fff
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ipv6Hdr {
    vtc_flow: [u8; 4],
    payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}
// SAFETY: repr(C), u8 and byte arrays only.
unsafe impl Header for Ipv6Hdr {}

impl Ipv6Hdr {
    pub const LEN: usize = 40;
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.vtc_flow[0] >> 4
    }
    #[inline(always)]
    pub fn payload_len(&self) -> usize {
        be16(self.payload_len) as usize
    }
}

/// The common start of every IPv6 extension header except Fragment and AH, which share the
/// first byte (next header) but size themselves differently.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ipv6ExtHdr {
    pub next_header: u8,
    pub len: u8,
}
// SAFETY: repr(C), u8 only.
unsafe impl Header for Ipv6ExtHdr {}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Ipv6FragHdr {
    pub next_header: u8,
    reserved: u8,
    frag_off_m: [u8; 2],
    pub id: [u8; 4],
}
// SAFETY: repr(C), u8 and byte arrays only.
unsafe impl Header for Ipv6FragHdr {}

impl Ipv6FragHdr {
    pub const LEN: usize = 8;
    /// Fragment offset in 8-byte units.
    #[inline(always)]
    pub fn fragment_offset(&self) -> u16 {
        be16(self.frag_off_m) >> 3
    }
    #[inline(always)]
    pub fn more_fragments(&self) -> bool {
        self.frag_off_m[1] & 1 != 0
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpHdr {
    src_port: [u8; 2],
    dst_port: [u8; 2],
    pub seq: [u8; 4],
    pub ack: [u8; 4],
    data_off: u8,
    pub flags: u8,
    pub window: [u8; 2],
    pub check: [u8; 2],
    pub urg_ptr: [u8; 2],
}
// SAFETY: repr(C), u8 and byte arrays only.
unsafe impl Header for TcpHdr {}

impl TcpHdr {
    pub const MIN_LEN: usize = 20;
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        be16(self.src_port)
    }
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        be16(self.dst_port)
    }
    /// Header length in bytes (data offset × 4), at most 60.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.data_off >> 4) as usize) * 4
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UdpHdr {
    src_port: [u8; 2],
    dst_port: [u8; 2],
    len: [u8; 2],
    pub check: [u8; 2],
}
// SAFETY: repr(C), byte arrays only.
unsafe impl Header for UdpHdr {}

impl UdpHdr {
    pub const LEN: usize = 8;
    #[inline(always)]
    pub fn src_port(&self) -> u16 {
        be16(self.src_port)
    }
    #[inline(always)]
    pub fn dst_port(&self) -> u16 {
        be16(self.dst_port)
    }
    /// The length field: header plus payload.
    #[inline(always)]
    pub fn length(&self) -> usize {
        be16(self.len) as usize
    }
}

/// The part of an ICMP or ICMPv6 header every message has.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: [u8; 2],
}
// SAFETY: repr(C), u8 and byte arrays only.
unsafe impl Header for IcmpHdr {}

impl IcmpHdr {
    pub const LEN: usize = 4;
}
