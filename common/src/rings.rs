//! Transaction rings in the dataplane: RoCEv2 packets (UDP 4791) for a queue pair a rings
//! worker serves go to that worker's AF_XDP socket on the queue they arrived on; every other
//! packet, RoCEv2 for other queue pairs included, is left as it was.

use crate::{
    frame::Frame,
    headers::{Header, IPPROTO_UDP, UdpHdr},
    parse::Parsed,
};

/// RoCEv2's UDP port.
pub const ROCE_PORT: u16 = 4791;

/// Receive queues a worker may have a socket on (`XSK_SOCKS`): a NIC with more queues than
/// this keeps RoCEv2 on the rest in the kernel. 64 × 4 bytes.
pub const MAX_XSK_QUEUES: u32 = 64;

/// Queue pairs the workers of one host serve (`ROCE_QPS`): a hash of 4096 × 8 bytes
/// (≈ 100 KiB with the kernel's per-entry overhead).
pub const MAX_QUEUE_PAIRS: u32 = 4096;

/// Where a RoCEv2 packet's UDP header may start: Ethernet, two VLAN tags and IPv4 with
/// options or IPv6 without extension headers all end before byte 128.
const L4_OFFSET_MASK: u16 = 0x7f;

/// The base transport header, as far as the dataplane reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BthHdr {
    pub opcode: u8,
    pub flags: u8,
    pub pkey: [u8; 2],
    pub reserved: u8,
    pub dest_qp: [u8; 3],
    pub ack: u8,
    pub psn: [u8; 3],
}
// SAFETY: repr(C), bytes only.
unsafe impl Header for BthHdr {}

/// A RoCEv2 packet's UDP header and BTH.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct UdpBth {
    udp: [u8; UdpHdr::LEN],
    bth: BthHdr,
}
// SAFETY: repr(C), bytes only.
unsafe impl Header for UdpBth {}

/// The destination queue pair of a RoCEv2 packet (UDP to port 4791, its BTH in the linear
/// part), or `None` for anything else.
#[inline(always)]
pub fn dest_qp(frame: &Frame, parsed: &Parsed) -> Option<u32> {
    if parsed.ip_proto != IPPROTO_UDP || parsed.dst_port != ROCE_PORT || parsed.l4_offset == 0 {
        return None;
    }
    // Masked so that the verifier sees a small offset; UDP and BTH read as one header, one
    // bounds check for it to follow.
    let h: &UdpBth = frame.header(usize::from(parsed.l4_offset & L4_OFFSET_MASK))?;
    // A UDP header further in (IPv6 extension headers) is not the one masked to: only the
    // one the parser found, with its ports, counts.
    if parsed.l4_offset > L4_OFFSET_MASK
        || u16::from_be_bytes([h.udp[0], h.udp[1]]) != parsed.src_port
        || u16::from_be_bytes([h.udp[2], h.udp[3]]) != ROCE_PORT
    {
        return None;
    }
    let q = h.bth.dest_qp;
    Some(u32::from_be_bytes([0, q[0], q[1], q[2]]))
}
