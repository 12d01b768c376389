//! The parser against etherparse-built frames, against etherparse's own parser, and on random
//! and damaged bytes placed right before an unmapped page, so a read past the end would crash.

mod support;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use support::{Net, Spec, Transport, ip_spec, spec, transport_of, v4_mapped};
use xnic_common::{
    frame::Frame,
    parse::{Fragment, L3, Layer, MAX_IPV6_EXT_HEADERS, ParseError, Parsed, Shape, parse_frame},
};

/// Bytes that end exactly where an inaccessible page begins.
struct Guarded {
    base: *mut u8,
    map_len: usize,
    len: usize,
}

impl Guarded {
    fn new(bytes: &[u8]) -> Guarded {
        let page = 4096;
        let data_pages = bytes.len().div_ceil(page).max(1);
        let map_len = (data_pages + 1) * page;
        // SAFETY: anonymous private mapping; checked for failure below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let base = base.cast::<u8>();
        // SAFETY: the last page lies inside the mapping made above.
        let guard = unsafe { base.add(data_pages * page) };
        // SAFETY: `guard` is page-aligned and one page of the mapping remains after it.
        assert_eq!(
            unsafe { libc::mprotect(guard.cast(), page, libc::PROT_NONE) },
            0
        );
        // SAFETY: `bytes.len()` bytes before `guard` are inside the writable part.
        unsafe {
            let start = guard.sub(bytes.len());
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), start, bytes.len());
        }
        Guarded {
            base,
            map_len,
            len: bytes.len(),
        }
    }

    fn slice(&self) -> &[u8] {
        let guard_offset = self.map_len - 4096;
        // SAFETY: the `len` bytes before the guard page were written in `new`.
        unsafe { std::slice::from_raw_parts(self.base.add(guard_offset - self.len), self.len) }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `new`.
        unsafe { libc::munmap(self.base.cast(), self.map_len) };
    }
}

fn parse_guarded(bytes: &[u8]) -> Result<Parsed, ParseError> {
    let g = Guarded::new(bytes);
    parse_frame(&Frame::from_slice(g.slice()))
}

fn expected_tunnel(spec: &Spec) -> bool {
    match transport_of(spec) {
        Some(Transport::Udp { dst, .. }) if !spec.fragmented() => *dst == 4789 || *dst == 6081,
        _ => false,
    }
}

fn check_against_spec(spec: &Spec, bytes: &[u8], p: &Parsed) {
    assert_eq!(p.dst_mac, spec.dst_mac);
    assert_eq!(p.src_mac, spec.src_mac);
    assert_eq!(p.vlan_count as usize, spec.vlans.len());
    assert_eq!(&p.vlan_ids[..spec.vlans.len()], &spec.vlans[..]);
    assert_eq!(p.has(Shape::Vlan), spec.vlans.len() == 1);
    assert_eq!(p.has(Shape::QinQ), spec.vlans.len() == 2);
    assert_eq!(p.l3_offset as usize, 14 + 4 * spec.vlans.len());
    assert_eq!(
        p.has(Shape::Jumbo),
        bytes.len() > 1514 + 4 * spec.vlans.len()
    );
    assert_eq!(p.has(Shape::Fragment), spec.fragmented());
    assert_eq!(p.has(Shape::Tunnel), expected_tunnel(spec));
    assert!(!p.has(Shape::NonLinear));
    assert!(!p.has(Shape::VlanOverflow));
    match &spec.net {
        Net::Ipv4 {
            src,
            dst,
            option_words,
            fragment,
            transport,
        } => {
            assert_eq!(p.l3, L3::Ipv4);
            assert_eq!(p.ethertype, 0x0800);
            assert_eq!(p.src_ip, v4_mapped(*src));
            assert_eq!(p.dst_ip, v4_mapped(*dst));
            assert_eq!(p.has(Shape::Ipv4Options), *option_words > 0);
            assert_eq!(
                p.fragment,
                match fragment {
                    None => Fragment::None,
                    Some((0, _)) => Fragment::First,
                    Some(_) => Fragment::Later,
                }
            );
            check_transport(transport, false, p);
        }
        Net::Ipv6 {
            src,
            dst,
            exts,
            transport,
        } => {
            assert_eq!(p.l3, L3::Ipv6);
            assert_eq!(p.ethertype, 0x86dd);
            assert_eq!(p.src_ip, *src);
            assert_eq!(p.dst_ip, *dst);
            assert_eq!(p.has(Shape::Ipv6ExtHeaders), !exts.is_empty());
            let frag = exts.iter().find_map(|e| match e {
                support::Ipv6Ext::Fragment { offset, .. } => Some(*offset),
                _ => None,
            });
            assert_eq!(
                p.fragment,
                match frag {
                    None => Fragment::None,
                    Some(0) => Fragment::First,
                    Some(_) => Fragment::Later,
                }
            );
            check_transport(transport, true, p);
        }
        Net::Other(ethertype) => {
            assert_eq!(p.l3, L3::None);
            assert_eq!(p.ethertype, *ethertype);
            assert!(p.has(Shape::NonIp));
            assert_eq!(p.l4_offset, 0);
        }
    }
}

fn check_transport(t: &Transport, v6: bool, p: &Parsed) {
    assert_eq!(p.ip_proto, support::transport_proto(t, v6));
    if p.fragment != Fragment::None {
        assert_eq!((p.src_port, p.dst_port, p.l4_offset), (0, 0, 0));
        return;
    }
    match *t {
        Transport::Tcp { src, dst, .. } => {
            assert_eq!((p.src_port, p.dst_port), (src, dst));
            assert_eq!(p.tcp_flags, 0x12, "SYN+ACK");
            assert_ne!(p.l4_offset, 0);
        }
        Transport::Udp { src, dst } => {
            assert_eq!((p.src_port, p.dst_port), (src, dst));
            assert_ne!(p.l4_offset, 0);
        }
        Transport::Icmp { kind, code } => {
            assert_eq!((p.icmp_type, p.icmp_code), (kind, code));
            assert_eq!((p.src_port, p.dst_port), (0, 0));
            assert_ne!(p.l4_offset, 0);
        }
        Transport::Other(_) => assert_eq!((p.src_port, p.dst_port, p.l4_offset), (0, 0, 0)),
    }
}

/// Whether the VLAN stack uses a legacy tag protocol id (0x9100, 0x9200) that etherparse
/// accepts but Linux, and so the dataplane, does not treat as VLAN.
fn has_legacy_tpid(bytes: &[u8]) -> bool {
    let mut at = 12;
    while at + 2 <= bytes.len() {
        match u16::from_be_bytes([bytes[at], bytes[at + 1]]) {
            0x9100 | 0x9200 => return true,
            0x8100 | 0x88a8 => at += 4,
            _ => return false,
        }
    }
    false
}

/// Where both parsers reach the same header, they must read the same values from it.
fn check_against_etherparse(bytes: &[u8], p: &Parsed) {
    if has_legacy_tpid(bytes) {
        return;
    }
    let Ok(reference) = SlicedPacket::from_ethernet(bytes) else {
        return;
    };
    match &reference.net {
        Some(NetSlice::Ipv4(ip)) => {
            assert_eq!(p.l3, L3::Ipv4);
            assert_eq!(p.src_ip, v4_mapped(ip.header().source()));
            assert_eq!(p.dst_ip, v4_mapped(ip.header().destination()));
            assert_eq!(
                p.fragment != Fragment::None,
                ip.is_payload_fragmented(),
                "fragment status"
            );
        }
        Some(NetSlice::Ipv6(ip)) => {
            assert_eq!(p.l3, L3::Ipv6);
            assert_eq!(p.src_ip, ip.header().source());
            assert_eq!(p.dst_ip, ip.header().destination());
        }
        _ => {}
    }
    if p.fragment != Fragment::None {
        return;
    }
    match &reference.transport {
        Some(TransportSlice::Tcp(t)) => {
            assert_eq!(
                (p.ip_proto, p.src_port, p.dst_port),
                (6, t.source_port(), t.destination_port())
            );
        }
        Some(TransportSlice::Udp(u)) => {
            assert_eq!(
                (p.ip_proto, p.src_port, p.dst_port),
                (17, u.source_port(), u.destination_port())
            );
        }
        Some(TransportSlice::Icmpv4(i)) => {
            assert_eq!(
                (p.ip_proto, p.icmp_type, p.icmp_code),
                (1, i.type_u8(), i.code_u8())
            );
        }
        Some(TransportSlice::Icmpv6(i)) => {
            assert_eq!(
                (p.ip_proto, p.icmp_type, p.icmp_code),
                (58, i.type_u8(), i.code_u8())
            );
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn built_frames_parse_as_built(spec in spec()) {
        let bytes = spec.build();
        let p = parse_guarded(&bytes).unwrap();
        check_against_spec(&spec, &bytes, &p);
        check_against_etherparse(&bytes, &p);
    }

    #[test]
    fn every_strict_prefix_of_an_ip_frame_is_truncated(spec in ip_spec()) {
        let bytes = spec.build();
        for cut in 0..bytes.len() {
            let r = parse_guarded(&bytes[..cut]);
            prop_assert!(matches!(r, Err(ParseError::Truncated(_))), "cut at {cut}: {r:?}");
        }
    }

    #[test]
    fn ethernet_padding_changes_nothing(spec in ip_spec(), pad in 1usize..64) {
        let bytes = spec.build();
        let mut padded = bytes.clone();
        padded.extend(std::iter::repeat_n(0u8, pad));
        let mut a = parse_guarded(&bytes).unwrap();
        let mut b = parse_guarded(&padded).unwrap();
        a.shapes &= !Shape::Jumbo.bit();
        b.shapes &= !Shape::Jumbo.bit();
        // An IPv6 payload length of zero (a jumbogram or a GSO super-packet) leaves the frame
        // to bound the packet, so there the padding is payload: only the end moves, by `pad`.
        let l3 = a.l3_offset as usize;
        if a.l3 == L3::Ipv6 && bytes[l3 + 4..l3 + 6] == [0, 0] {
            prop_assert_eq!(b.ip_end as usize, a.ip_end as usize + pad);
            b.ip_end = a.ip_end;
        }
        prop_assert_eq!(a, b);
    }

    #[test]
    fn random_bytes_never_panic_or_overread(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        if let Ok(p) = parse_guarded(&bytes) {
            prop_assert!((p.l3_offset as usize) <= bytes.len());
            prop_assert!((p.l4_offset as usize) < bytes.len().max(1));
            check_against_etherparse(&bytes, &p);
        }
    }

    #[test]
    fn damaged_frames_never_panic_or_overread(
        spec in spec(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = spec.build();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(p) = parse_guarded(&bytes) {
            check_against_etherparse(&bytes, &p);
        }
    }
}

fn udp4(payload: usize) -> Spec {
    Spec {
        dst_mac: [2, 0, 0, 0, 0, 1],
        src_mac: [2, 0, 0, 0, 0, 2],
        vlans: vec![],
        net: Net::Ipv4 {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
            option_words: 0,
            fragment: None,
            transport: Transport::Udp {
                src: 1000,
                dst: 2000,
            },
        },
        payload,
    }
}

#[test]
fn minimum_size_frame_with_padding_parses() {
    let mut bytes = udp4(2).build();
    assert_eq!(bytes.len(), 44);
    bytes.resize(60, 0);
    let p = parse_guarded(&bytes).unwrap();
    assert_eq!((p.src_port, p.dst_port), (1000, 2000));
}

#[test]
fn zero_ipv6_payload_length_lets_the_frame_bound_the_packet() {
    // Found by `ethernet_padding_changes_nothing`: an IPv6 header with no payload says payload
    // length 0, which also announces a jumbogram or GSO super-packet, so trailing padding is
    // taken as payload. Nothing past the IPv6 header may be parsed out of it as a transport.
    let spec = Spec {
        dst_mac: [0; 6],
        src_mac: [0; 6],
        vlans: vec![],
        net: Net::Ipv6 {
            src: [0; 16],
            dst: [0; 16],
            exts: vec![],
            transport: Transport::Other(132),
        },
        payload: 0,
    };
    let mut bytes = spec.build();
    assert_eq!(bytes.len(), 54);
    bytes.push(0);
    let p = parse_guarded(&bytes).unwrap();
    assert_eq!((p.l3, p.ip_proto, p.ip_end), (L3::Ipv6, 132, 55));
    assert_eq!((p.src_port, p.dst_port), (0, 0));
}

#[test]
fn jumbo_frame_is_marked() {
    let bytes = udp4(8958).build();
    assert_eq!(bytes.len(), 9000);
    let p = parse_guarded(&bytes).unwrap();
    assert!(p.has(Shape::Jumbo));
    assert_eq!(p.dst_port, 2000);
}

#[test]
fn bad_ipv4_fields_are_malformed() {
    let good = udp4(10).build();
    let ip = 14;
    // (what, byte offset, new value)
    let cases = [
        ("version 5", ip, 0x55),
        ("ihl 4", ip, 0x44),
        ("total length below header", ip + 3, 19),
    ];
    for (what, at, value) in cases {
        let mut b = good.clone();
        b[at] = value;
        assert_eq!(
            parse_guarded(&b),
            Err(ParseError::Malformed(Layer::Ipv4)),
            "{what}"
        );
    }
    let mut b = good.clone();
    b[ip + 3] = 200; // total length beyond the frame
    assert_eq!(parse_guarded(&b), Err(ParseError::Truncated(Layer::Ipv4)));
}

#[test]
fn bad_transport_fields_are_malformed() {
    let mut udp = udp4(10).build();
    udp[14 + 20 + 5] = 7; // UDP length below its header
    assert_eq!(parse_guarded(&udp), Err(ParseError::Malformed(Layer::Udp)));

    let mut tcp = Spec {
        net: Net::Ipv4 {
            src: [1, 1, 1, 1],
            dst: [2, 2, 2, 2],
            option_words: 0,
            fragment: None,
            transport: Transport::Tcp {
                src: 1,
                dst: 2,
                option_words: 0,
            },
        },
        ..udp4(0)
    }
    .build();
    tcp[14 + 20 + 12] = 0x40; // data offset 4
    assert_eq!(parse_guarded(&tcp), Err(ParseError::Malformed(Layer::Tcp)));
}

#[test]
fn wrong_ip_version_in_ipv6_frame_is_malformed() {
    let mut b = Spec {
        net: Net::Ipv6 {
            src: [1; 16],
            dst: [2; 16],
            exts: vec![],
            transport: Transport::Udp { src: 1, dst: 2 },
        },
        ..udp4(4)
    }
    .build();
    b[14] = 0x40;
    assert_eq!(parse_guarded(&b), Err(ParseError::Malformed(Layer::Ipv6)));
}

#[test]
fn a_third_vlan_tag_stops_parsing() {
    let mut b = vec![0u8; 12];
    b[0] = 2;
    for tpid in [0x88a8u16, 0x8100, 0x8100] {
        b.extend(tpid.to_be_bytes());
        b.extend([0, 5]);
    }
    b.extend(0x0800u16.to_be_bytes());
    b.extend([0u8; 40]);
    let p = parse_guarded(&b).unwrap();
    assert_eq!(p.vlan_count, 2);
    assert!(p.has(Shape::VlanOverflow) && p.has(Shape::QinQ));
    assert_eq!(p.l3, L3::None);
}

#[test]
fn an_overlong_extension_chain_stops_parsing() {
    let exts = MAX_IPV6_EXT_HEADERS + 1;
    let mut b = vec![0u8; 12];
    b.extend(0x86ddu16.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend(((exts * 8 + 8) as u16).to_be_bytes());
    ip.extend([60, 64]); // first: destination options
    ip.extend([1u8; 32]);
    b.extend(ip);
    for i in 0..exts {
        let next = if i + 1 == exts { 17 } else { 60 };
        b.extend([next, 0, 0, 0, 0, 0, 0, 0]);
    }
    b.extend([0, 1, 0, 2, 0, 8, 0, 0]);
    let p = parse_guarded(&b).unwrap();
    assert!(p.has(Shape::Ipv6ExtOverflow) && p.has(Shape::Ipv6ExtHeaders));
    assert_eq!(p.l4_offset, 0);
}

#[test]
fn headers_outside_the_linear_part_stop_parsing_without_error() {
    let bytes = udp4(100).build();
    // Only the Ethernet header and part of IPv4 are directly readable.
    let linear = &bytes[..20];
    let start = linear.as_ptr() as usize;
    // SAFETY: [start, start + 20) is `linear`, alive for this test.
    let frame = unsafe { Frame::from_raw(start, start + linear.len(), bytes.len()) };
    let p = parse_frame(&frame).unwrap();
    assert!(p.has(Shape::NonLinear));
    assert_eq!(p.l3, L3::None);
    assert_eq!(p.src_mac, [2, 0, 0, 0, 0, 2]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    /// The XDP program reuses one `Parsed` per CPU, clearing it between frames: whatever the
    /// previous frame left must not change what a consumer reads of the next.
    #[test]
    fn a_cleared_parse_reads_like_a_fresh_one(a in spec(), b in spec()) {
        let (fa, fb) = (a.build(), b.build());
        let mut reused = Parsed::default();
        let _ = xnic_common::parse::parse(&Frame::from_slice(&fa), &mut reused);
        reused.clear();
        let ra = xnic_common::parse::parse(&Frame::from_slice(&fb), &mut reused);
        let fresh = parse_frame(&Frame::from_slice(&fb));
        prop_assert_eq!(ra.is_ok(), fresh.is_ok());
        if let Ok(fresh) = fresh {
            let seed = 7;
            prop_assert_eq!(
                xnic_common::hash::flow_hash(&reused, seed, true),
                xnic_common::hash::flow_hash(&fresh, seed, true)
            );
            prop_assert_eq!((reused.l3, reused.l4_offset, reused.src_port, reused.dst_port, reused.shapes, reused.fragment),
                            (fresh.l3, fresh.l4_offset, fresh.src_port, fresh.dst_port, fresh.shapes, fresh.fragment));
            prop_assert_eq!(&reused.vlan_ids[..reused.vlan_count as usize], &fresh.vlan_ids[..fresh.vlan_count as usize]);
        }
    }
}
