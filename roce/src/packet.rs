//! Whole RoCEv2 frames: Ethernet, IPv4 or IPv6, UDP to port 4791, the transport headers,
//! the payload padded to four bytes, the ICRC.

use std::net::IpAddr;

use crate::{
    headers::{AETH_LEN, Aeth, BTH_LEN, Bth, HeaderError, ICRC_LEN, RETH_LEN, ROCE_PORT, Reth},
    icrc::{self, IPV4_LEN, IPV6_LEN, UDP_LEN},
};

/// An Ethernet header without a VLAN tag.
pub const ETH_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_UDP: u8 = 17;
/// The hop limit of what the worker sends.
const TTL: u8 = 64;

/// The two ends of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    /// The UDP source port: RoCEv2 leaves it to the sender as flow entropy (one per queue
    /// pair keeps a connection's packets on one path, in order).
    pub src_port: u16,
}

impl Path {
    /// The way back: addresses swapped, from `src_port`.
    pub fn reversed(&self, src_port: u16) -> Path {
        Path {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            src_port,
        }
    }
}

/// A packet's transport part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub bth: Bth,
    pub reth: Option<Reth>,
    pub aeth: Option<Aeth>,
    pub payload: &'a [u8],
}

/// Why a frame is not a RoCEv2 packet we can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not IP/UDP to port 4791 at all: someone else's.
    NotRoce,
    /// Shorter than its headers say.
    Truncated,
    /// Headers that contradict each other or the opcode (the reason says which).
    Malformed(&'static str),
    Header(HeaderError),
    /// The ICRC does not match: corrupted on the way.
    BadIcrc {
        found: u32,
        want: u32,
    },
}

impl ParseError {
    /// The counter a dropped packet goes under.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::NotRoce => "not_roce",
            ParseError::Truncated => "truncated",
            ParseError::Malformed(_) => "malformed",
            ParseError::Header(HeaderError::UnknownOpcode(_)) => "unknown_opcode",
            ParseError::Header(_) => "malformed",
            ParseError::BadIcrc { .. } => "bad_icrc",
        }
    }
}

impl From<HeaderError> for ParseError {
    fn from(e: HeaderError) -> Self {
        ParseError::Header(e)
    }
}

/// How many pad bytes take `len` to a multiple of four.
pub fn pad_for(len: usize) -> u8 {
    ((4 - len % 4) % 4) as u8
}

/// The path MTUs InfiniBand defines (payload bytes per packet), largest first.
pub const IB_MTUS: [u32; 5] = [4096, 2048, 1024, 512, 256];

/// The largest InfiniBand MTU whose packets fit an IP packet of `ip_room` bytes (a link's
/// MTU, or what a buffer holds past the Ethernet header): every header a packet can carry
/// (RETH, the larger of RETH and AETH), the ICRC. `None` when not even 256 fits.
pub fn largest_mtu(ip_room: usize, ipv6: bool) -> Option<u32> {
    let ip = if ipv6 { IPV6_LEN } else { IPV4_LEN };
    let headers = ip + UDP_LEN + BTH_LEN + RETH_LEN.max(AETH_LEN) + ICRC_LEN;
    IB_MTUS
        .into_iter()
        .find(|m| headers + *m as usize <= ip_room)
}

/// The frame length of `packet` on `path`.
pub fn frame_len(path: &Path, packet: &Packet) -> usize {
    let ip = if path.src_ip.is_ipv6() {
        IPV6_LEN
    } else {
        IPV4_LEN
    };
    ETH_LEN + ip + UDP_LEN + transport_len(packet) + ICRC_LEN
}

fn transport_len(p: &Packet) -> usize {
    BTH_LEN
        + p.reth.map_or(0, |_| RETH_LEN)
        + p.aeth.map_or(0, |_| AETH_LEN)
        + p.payload.len()
        + usize::from(pad_for(p.payload.len()))
}

/// Appends the frame of `packet` on `path` to `out`. `path`'s addresses must be of one
/// family; the BTH's pad count is set from the payload.
pub fn build(path: &Path, packet: &Packet, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&path.dst_mac);
    out.extend_from_slice(&path.src_mac);
    // The ICRC is part of the UDP payload.
    let udp_len = (UDP_LEN + transport_len(packet) + ICRC_LEN) as u16;
    let ipv6 = match (path.src_ip, path.dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
            let mut ip = [0u8; IPV4_LEN];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(IPV4_LEN as u16 + udp_len).to_be_bytes());
            // Don't fragment, identification 0 (RFC 6864: an atomic datagram).
            ip[6] = 0x40;
            ip[8] = TTL;
            ip[9] = IPPROTO_UDP;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&ip);
            false
        }
        (s, d) => {
            let (IpAddr::V6(s), IpAddr::V6(d)) = (to_v6(s), to_v6(d)) else {
                unreachable!("to_v6 gives IPv6");
            };
            out.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
            let mut ip = [0u8; IPV6_LEN];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
            ip[6] = IPPROTO_UDP;
            ip[7] = TTL;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            out.extend_from_slice(&ip);
            true
        }
    };
    let ip_at = start + ETH_LEN;
    let udp_at = out.len();
    out.extend_from_slice(&path.src_port.to_be_bytes());
    out.extend_from_slice(&ROCE_PORT.to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    let mut bth = packet.bth;
    bth.pad = pad_for(packet.payload.len());
    let mut raw = [0u8; BTH_LEN];
    bth.write(&mut raw);
    out.extend_from_slice(&raw);
    if let Some(r) = &packet.reth {
        let mut raw = [0u8; RETH_LEN];
        r.write(&mut raw);
        out.extend_from_slice(&raw);
    }
    if let Some(a) = &packet.aeth {
        let mut raw = [0u8; AETH_LEN];
        a.write(&mut raw);
        out.extend_from_slice(&raw);
    }
    out.extend_from_slice(packet.payload);
    out.resize(out.len() + usize::from(bth.pad), 0);
    // The ICRC masks the UDP checksum: it goes first, the checksum (over it too) after.
    icrc::append(out, ip_at, ipv6);
    if ipv6 {
        // UDP over IPv6 must carry a checksum.
        let src: [u8; 16] = out[ip_at + 8..ip_at + 24].try_into().expect("16 bytes");
        let dst: [u8; 16] = out[ip_at + 24..ip_at + 40].try_into().expect("16 bytes");
        let len = u32::from(udp_len).to_be_bytes();
        let proto = [0, 0, 0, IPPROTO_UDP];
        let mut sum = checksum(&[&src, &dst, &len, &proto, &out[udp_at..]]);
        if sum == 0 {
            sum = 0xffff;
        }
        out[udp_at + 6..udp_at + 8].copy_from_slice(&sum.to_be_bytes());
    }
}

fn to_v6(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    }
}

/// The Internet checksum of the concatenated `parts`.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(hi) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A frame taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub path: Path,
    pub packet: Packet<'a>,
}

/// Takes a frame apart, checking every length against the next and the ICRC.
pub fn parse(frame: &[u8]) -> Result<Parsed<'_>, ParseError> {
    let eth = frame.get(..ETH_LEN).ok_or(ParseError::NotRoce)?;
    let (src_mac, dst_mac) = (mac(&eth[6..12]), mac(&eth[0..6]));
    let (ipv6, ip_len, src_ip, dst_ip, ip_total) = match u16::from_be_bytes([eth[12], eth[13]]) {
        ETHERTYPE_IPV4 => {
            let ip = frame
                .get(ETH_LEN..ETH_LEN + IPV4_LEN)
                .ok_or(ParseError::Truncated)?;
            if ip[9] != IPPROTO_UDP {
                return Err(ParseError::NotRoce);
            }
            if ip[0] != 0x45 {
                return Err(ParseError::Malformed("IPv4 with options"));
            }
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return Err(ParseError::Malformed("IPv4 fragment"));
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let s: [u8; 4] = ip[12..16].try_into().expect("4 bytes");
            let d: [u8; 4] = ip[16..20].try_into().expect("4 bytes");
            (false, IPV4_LEN, IpAddr::from(s), IpAddr::from(d), total)
        }
        ETHERTYPE_IPV6 => {
            let ip = frame
                .get(ETH_LEN..ETH_LEN + IPV6_LEN)
                .ok_or(ParseError::Truncated)?;
            if ip[6] != IPPROTO_UDP {
                return Err(ParseError::NotRoce);
            }
            let total = IPV6_LEN + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let s: [u8; 16] = ip[8..24].try_into().expect("16 bytes");
            let d: [u8; 16] = ip[24..40].try_into().expect("16 bytes");
            (true, IPV6_LEN, IpAddr::from(s), IpAddr::from(d), total)
        }
        _ => return Err(ParseError::NotRoce),
    };
    let udp_at = ETH_LEN + ip_len;
    let udp = frame
        .get(udp_at..udp_at + UDP_LEN)
        .ok_or(ParseError::Truncated)?;
    if u16::from_be_bytes([udp[2], udp[3]]) != ROCE_PORT {
        return Err(ParseError::NotRoce);
    }
    let src_port = u16::from_be_bytes([udp[0], udp[1]]);
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    // The IP packet may be shorter than the frame (Ethernet pads to 60 bytes), never longer.
    let ip = frame
        .get(ETH_LEN..ETH_LEN + ip_total)
        .ok_or(ParseError::Truncated)?;
    if udp_len != ip_total - ip_len {
        return Err(ParseError::Malformed("UDP length differs from IP's"));
    }
    if udp_len < UDP_LEN + BTH_LEN + ICRC_LEN {
        return Err(ParseError::Truncated);
    }
    icrc::check(ip, ipv6).map_err(|(found, want)| ParseError::BadIcrc { found, want })?;
    let body = &ip[ip_len + UDP_LEN..ip.len() - ICRC_LEN];
    let bth = Bth::read(body[..BTH_LEN].try_into().expect("BTH"))?;
    let mut at = BTH_LEN;
    let mut take = |n: usize| -> Result<&[u8], ParseError> {
        let b = body.get(at..at + n).ok_or(ParseError::Truncated)?;
        at += n;
        Ok(b)
    };
    let reth = if bth.opcode.has_reth() {
        Some(Reth::read(take(RETH_LEN)?.try_into().expect("RETH")))
    } else {
        None
    };
    let aeth = if bth.opcode.has_aeth() {
        Some(Aeth::read(take(AETH_LEN)?.try_into().expect("AETH"))?)
    } else {
        None
    };
    let rest = &body[at..];
    let pad = usize::from(bth.pad);
    if rest.len() < pad {
        return Err(ParseError::Malformed("pad longer than the payload"));
    }
    let payload = &rest[..rest.len() - pad];
    if !bth.opcode.has_payload() && !rest.is_empty() {
        return Err(ParseError::Malformed(
            "payload on a packet that carries none",
        ));
    }
    Ok(Parsed {
        path: Path {
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            src_port,
        },
        packet: Packet {
            bth,
            reth,
            aeth,
            payload,
        },
    })
}

fn mac(b: &[u8]) -> [u8; 6] {
    b.try_into().expect("6 bytes")
}

/// The UDP source port of queue pair `qp`'s packets: in the range RoCEv2 suggests for
/// entropy (0xC000 and up), fixed per queue pair so that its packets stay in order.
pub fn entropy_port(qp: u32) -> u16 {
    let h = qp.wrapping_mul(0x9e37_79b1) >> 18;
    0xc000 | (h as u16 & 0x3fff)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        headers::{NakCode, Opcode, Syndrome, UNLIMITED_CREDITS},
        psn::Psn,
    };

    fn path() -> Path {
        Path {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: "10.0.0.1".parse().unwrap(),
            dst_ip: "10.0.0.2".parse().unwrap(),
            src_port: 0xc000,
        }
    }

    #[test]
    fn the_largest_mtu_is_the_largest_whose_fullest_packet_fits() {
        assert_eq!(largest_mtu(1500, false), Some(1024));
        assert_eq!(largest_mtu(1500, true), Some(1024));
        assert_eq!(largest_mtu(255, false), None);
        for ipv6 in [false, true] {
            let src = if ipv6 { "fd00::1" } else { "10.0.0.1" };
            let dst = if ipv6 { "fd00::2" } else { "10.0.0.2" };
            let p = Path {
                src_ip: src.parse().unwrap(),
                dst_ip: dst.parse().unwrap(),
                ..path()
            };
            for room in (300..9000).step_by(7) {
                let Some(mtu) = largest_mtu(room, ipv6) else {
                    continue;
                };
                let payload = vec![0u8; mtu as usize];
                // The fullest packet: a WRITE's first, with its RETH.
                let fullest = Packet {
                    bth: Bth::new(Opcode::WriteFirst, 1, Psn::new(0)),
                    reth: Some(Reth {
                        va: 0,
                        rkey: 1,
                        len: 2 * mtu,
                    }),
                    aeth: None,
                    payload: &payload,
                };
                assert!(frame_len(&p, &fullest) - ETH_LEN <= room, "{room} {mtu}");
                let bigger = IB_MTUS.iter().rev().find(|m| **m > mtu);
                if let Some(b) = bigger {
                    let payload = vec![0u8; *b as usize];
                    let p2 = Packet {
                        payload: &payload,
                        ..fullest
                    };
                    assert!(frame_len(&p, &p2) - ETH_LEN > room, "{room}: {b} fits too");
                }
            }
        }
    }

    #[test]
    fn a_write_only_is_byte_for_byte_what_scapy_builds() {
        let payload: Vec<u8> = (0..16).collect();
        let mut bth = Bth::new(Opcode::WriteOnly, 0x11, Psn::new(0));
        bth.ack_req = true;
        let p = Packet {
            bth,
            reth: Some(Reth {
                va: 0x7f00_0000_1000,
                rkey: 0x1234,
                len: 16,
            }),
            aeth: None,
            payload: &payload,
        };
        let mut out = Vec::new();
        // scapy's frame had IP id 1: ours is 0, so compare from the UDP header on (the ICRC
        // covers the IP header and so differs).
        build(&path(), &p, &mut out);
        let scapy = "c00012b7003800000a00ffff000000118000000000007f000000100000001234000000100001\
                     02030405060708090a0b0c0d0e0f";
        let want: Vec<u8> = (0..scapy.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&scapy[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(&out[34..out.len() - 4], &want[..]);
        assert_eq!(out.len(), frame_len(&path(), &p));
        let parsed = parse(&out).unwrap();
        assert_eq!(parsed.path, path());
        assert_eq!(parsed.packet, p);
    }

    #[test]
    fn bad_frames_have_their_reasons() {
        let ack = Packet {
            bth: Bth::new(Opcode::Acknowledge, 7, Psn::new(3)),
            reth: None,
            aeth: Some(Aeth {
                syndrome: Syndrome::Ack {
                    credits: UNLIMITED_CREDITS,
                },
                msn: 1,
            }),
            payload: &[],
        };
        let mut good = Vec::new();
        build(&path(), &ack, &mut good);
        assert!(parse(&good).is_ok());
        for cut in [10, 20, 40, 50, good.len() - 1] {
            let e = parse(&good[..cut]).unwrap_err();
            assert!(
                matches!(e, ParseError::Truncated | ParseError::NotRoce),
                "{cut}: {e:?}"
            );
        }
        let mut bad = good.clone();
        bad[50] ^= 0x80;
        assert_eq!(parse(&bad).unwrap_err().reason(), "bad_icrc");
        let mut other_port = good.clone();
        other_port[37] = 0;
        assert_eq!(parse(&other_port), Err(ParseError::NotRoce));
        // A NAK with a reserved code, ICRC recomputed: a header error, not a bad ICRC.
        let mut reserved = good[..good.len() - 4].to_vec();
        reserved[54] = 0x6f;
        icrc::append(&mut reserved, 14, false);
        assert_eq!(
            parse(&reserved),
            Err(ParseError::Header(HeaderError::Syndrome(0x6f)))
        );
        let nak = Packet {
            aeth: Some(Aeth {
                syndrome: Syndrome::Nak(NakCode::RemoteAccessError),
                msn: 0,
            }),
            ..ack
        };
        let mut out = Vec::new();
        build(&path(), &nak, &mut out);
        assert_eq!(parse(&out).unwrap().packet, nak);
    }

    proptest! {
        #[test]
        fn every_packet_round_trips(
            op in prop::sample::select(vec![
                Opcode::WriteFirst, Opcode::WriteMiddle, Opcode::WriteLast, Opcode::WriteOnly,
                Opcode::ReadRequest, Opcode::ReadResponseFirst, Opcode::ReadResponseMiddle,
                Opcode::ReadResponseLast, Opcode::ReadResponseOnly, Opcode::Acknowledge,
            ]),
            qp in 0u32..1 << 24,
            psn in 0u32..1 << 24,
            payload in prop::collection::vec(any::<u8>(), 0..300),
            v6 in any::<bool>(),
            va in any::<u64>(),
        ) {
            let payload = if op.has_payload() { payload } else { Vec::new() };
            let p = Packet {
                bth: Bth::new(op, qp, Psn::new(psn)),
                reth: op.has_reth().then_some(Reth { va, rkey: 9, len: payload.len() as u32 }),
                aeth: op.has_aeth().then_some(Aeth { syndrome: Syndrome::Ack { credits: 3 }, msn: 5 }),
                payload: &payload,
            };
            let mut path = path();
            if v6 {
                path.src_ip = "fd00::1".parse().unwrap();
                path.dst_ip = "fd00::2".parse().unwrap();
            }
            let mut out = Vec::new();
            build(&path, &p, &mut out);
            prop_assert_eq!(out.len(), frame_len(&path, &p));
            let parsed = parse(&out).unwrap();
            prop_assert_eq!(parsed.path, path);
            let mut want = p;
            want.bth.pad = pad_for(payload.len());
            prop_assert_eq!(parsed.packet, want);
        }
    }
}
