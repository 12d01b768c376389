//! What the fast path does to a packet of an offloaded flow, as a router with NAT would:
//! the next hop's MACs, the NAT'd addresses and ports with the IPv4 header checksum and the
//! TCP/UDP checksum updated incrementally (`csum`), the TTL or hop limit decremented; and the
//! VXLAN outer header a wrapped packet leaves with.

use crate::{
    csum,
    flow::{FlowDir, Tunnel},
    headers::{EthHdr, Header, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr},
};

/// The ports at the start of a TCP or UDP header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct L4Ports {
    pub src: [u8; 2],
    pub dst: [u8; 2],
}
// SAFETY: repr(C), byte arrays only.
unsafe impl Header for L4Ports {}

/// A 16-bit checksum field.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Check(pub [u8; 2]);
// SAFETY: repr(C), a byte array.
unsafe impl Header for Check {}

/// Where the checksum sits in a TCP and in a UDP header.
pub const TCP_CHECK_OFFSET: usize = 16;
pub const UDP_CHECK_OFFSET: usize = 6;

/// The transport checksum's offset for protocol `proto`.
#[inline(always)]
pub const fn check_offset(proto: u8) -> usize {
    if proto == IPPROTO_UDP {
        UDP_CHECK_OFFSET
    } else {
        TCP_CHECK_OFFSET
    }
}

/// The MACs of the next hop.
#[inline(always)]
pub fn ethernet(eth: &mut EthHdr, d: &FlowDir) {
    eth.src = d.src_mac;
    eth.dst = d.dst_mac;
}

/// Rewrites an IPv4 header: NAT'd addresses, TTL one less, checksum updated.
#[inline(always)]
pub fn ipv4(ip: &mut Ipv4Hdr, d: &FlowDir) {
    let mut check = u16::from_be_bytes(ip.check);
    let new_src = v4_of(&d.new_src);
    let new_dst = v4_of(&d.new_dst);
    check = csum::replace32(check, ip.src, new_src);
    check = csum::replace32(check, ip.dst, new_dst);
    let ttl = ip.ttl.wrapping_sub(1);
    check = csum::replace_ttl(check, ip.ttl, ttl, ip.protocol);
    ip.src = new_src;
    ip.dst = new_dst;
    ip.ttl = ttl;
    ip.check = check.to_be_bytes();
}

/// Rewrites an IPv6 header: NAT'd addresses, hop limit one less (IPv6 has no header
/// checksum).
#[inline(always)]
pub fn ipv6(ip: &mut Ipv6Hdr, d: &FlowDir) {
    ip.src = d.new_src;
    ip.dst = d.new_dst;
    ip.hop_limit = ip.hop_limit.wrapping_sub(1);
}

/// The packet's addresses before the rewrite (the parser's, IPv4-mapped for IPv4), which
/// the transport checksum covers through its pseudo-header.
#[derive(Clone, Copy, Debug)]
pub struct OldAddrs<'a> {
    pub src: &'a [u8; 16],
    pub dst: &'a [u8; 16],
    pub v4: bool,
}

/// Rewrites the transport ports and updates its checksum for them and for the addresses
/// rewritten from `old`. A UDP checksum of 0 (none, over IPv4) stays 0.
#[inline(always)]
pub fn transport(ports: &mut L4Ports, check: &mut Check, proto: u8, old: OldAddrs, d: &FlowDir) {
    let original = u16::from_be_bytes(check.0);
    let mut c = original;
    if old.v4 {
        c = csum::replace32(c, v4_of(old.src), v4_of(&d.new_src));
        c = csum::replace32(c, v4_of(old.dst), v4_of(&d.new_dst));
    } else {
        c = csum::replace128(c, old.src, &d.new_src);
        c = csum::replace128(c, old.dst, &d.new_dst);
    }
    c = csum::replace16(c, u16::from_be_bytes(ports.src), d.new_src_port);
    c = csum::replace16(c, u16::from_be_bytes(ports.dst), d.new_dst_port);
    if proto == IPPROTO_UDP {
        c = csum::udp_after(original, c);
    }
    ports.src = d.new_src_port.to_be_bytes();
    ports.dst = d.new_dst_port.to_be_bytes();
    check.0 = c.to_be_bytes();
}

#[inline(always)]
fn v4_of(a: &[u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

/// VXLAN's I flag: the VNI is valid (RFC 7348).
pub const VXLAN_FLAG_VNI: u8 = 0x08;

/// The 8-byte VXLAN header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VxlanHdr {
    pub flags: u8,
    pub _reserved: [u8; 3],
    /// The VNI and a reserved byte.
    pub vni: [u8; 4],
}
// SAFETY: repr(C), u8 and byte arrays only.
unsafe impl Header for VxlanHdr {}

impl VxlanHdr {
    pub const LEN: usize = 8;

    #[inline(always)]
    pub fn vni(&self) -> u32 {
        u32::from_be_bytes(self.vni) >> 8
    }
}

/// Bytes a VXLAN-over-IPv4 wrapping adds in front of the inner frame: Ethernet, IPv4 without
/// options, UDP, VXLAN.
pub const VXLAN_V4_OVERHEAD: usize = EthHdr::LEN + Ipv4Hdr::MIN_LEN + 8 + VxlanHdr::LEN;

/// The outer headers as one block the fast path writes in front of the inner frame.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OuterV4(pub [u8; VXLAN_V4_OVERHEAD]);
// SAFETY: repr(C), a byte array.
unsafe impl Header for OuterV4 {}

/// What the outer headers of a VXLAN-over-IPv4 packet say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OuterFields {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub vni: u32,
    pub ttl: u8,
    pub tos: u8,
    /// Don't fragment.
    pub df: bool,
    pub ip_id: u16,
}

/// Writes the outer headers for an inner frame of `inner_len` bytes, with no UDP checksum
/// (RFC 7348 over IPv4).
#[inline(always)]
pub fn write_vxlan_v4(outer: &mut OuterV4, f: &OuterFields, inner_len: usize) {
    let o = &mut outer.0;
    *o = [0u8; VXLAN_V4_OVERHEAD];
    o[0..6].copy_from_slice(&f.dst_mac);
    o[6..12].copy_from_slice(&f.src_mac);
    o[12..14].copy_from_slice(&crate::headers::ETH_P_IPV4.to_be_bytes());
    let ip_len = (VXLAN_V4_OVERHEAD - EthHdr::LEN + inner_len) as u16;
    let udp_len = ip_len - Ipv4Hdr::MIN_LEN as u16;
    o[14] = 0x45;
    o[15] = f.tos;
    o[16..18].copy_from_slice(&ip_len.to_be_bytes());
    o[18..20].copy_from_slice(&f.ip_id.to_be_bytes());
    if f.df {
        o[20] = 0x40;
    }
    o[22] = f.ttl;
    o[23] = IPPROTO_UDP;
    o[26..30].copy_from_slice(&f.src);
    o[30..34].copy_from_slice(&f.dst);
    let mut sum = 0u32;
    let mut i = 14;
    while i < 34 {
        sum += u32::from(u16::from_be_bytes([o[i], o[i + 1]]));
        i += 2;
    }
    o[24..26].copy_from_slice(&(!csum::fold(sum)).to_be_bytes());
    o[34..36].copy_from_slice(&f.src_port.to_be_bytes());
    o[36..38].copy_from_slice(&f.dst_port.to_be_bytes());
    o[38..40].copy_from_slice(&udp_len.to_be_bytes());
    o[42] = VXLAN_FLAG_VNI;
    o[46..50].copy_from_slice(&(f.vni << 8).to_be_bytes());
}

/// The outer headers of tunnel `t` for an inner frame of `inner_len` bytes: what the
/// kernel's own VXLAN device would put there (no DF), with `ip_id` as the identification and
/// `src_port` as the UDP source port.
#[inline(always)]
pub fn vxlan_v4(outer: &mut OuterV4, t: &Tunnel, inner_len: usize, src_port: u16, ip_id: u16) {
    let f = OuterFields {
        src_mac: t.src_mac,
        dst_mac: t.dst_mac,
        src: t.local,
        dst: t.remote,
        src_port,
        dst_port: t.dst_port,
        vni: t.vni,
        ttl: t.ttl,
        tos: t.tos,
        df: false,
        ip_id,
    };
    write_vxlan_v4(outer, &f, inner_len);
}

/// Whether a wrapped packet's outer IPv4 header and VXLAN header are the tunnel's, coming
/// from its remote end to us.
#[inline(always)]
pub fn is_from(t: &Tunnel, outer: &Ipv4Hdr, vxlan: &VxlanHdr) -> bool {
    t.valid != 0
        && outer.src == t.remote
        && outer.dst == t.local
        && vxlan.flags & VXLAN_FLAG_VNI != 0
        && vxlan.vni() == t.vni
}
