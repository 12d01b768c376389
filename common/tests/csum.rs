//! Incremental checksum updates (`xnic_common::csum`) against a full recomputation: a packet
//! built by etherparse, rewritten in place the way the fast path's NAT and forwarding will
//! (only the changed fields and the two checksums), must equal the packet etherparse builds
//! with the new fields, byte for byte.

use etherparse::PacketBuilder;
use proptest::prelude::*;
use xnic_common::csum::{checksum, replace_ttl, replace16, replace32, replace128, udp_after};

const ETH: usize = 14;
const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

#[derive(Clone, Copy, Debug)]
enum L4 {
    Tcp,
    Udp,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// The transport header and payload on an IP step of the builder.
fn transport(
    b: etherparse::PacketBuilderStep<etherparse::IpHeaders>,
    l4: L4,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    match l4 {
        L4::Tcp => b
            .tcp(sport, dport, 1000, 512)
            .ack(7)
            .write(&mut out, payload),
        L4::Udp => b.udp(sport, dport).write(&mut out, payload),
    }
    .unwrap();
    out
}

fn v4(
    l4: L4,
    src: [u8; 4],
    dst: [u8; 4],
    sport: u16,
    dport: u16,
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv4(src, dst, ttl);
    transport(b, l4, sport, dport, payload)
}

fn v6(l4: L4, src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC).ipv6(src, dst, 64);
    transport(b, l4, sport, dport, payload)
}

fn l4_check_at(l4: L4, l4_off: usize) -> usize {
    match l4 {
        L4::Tcp => l4_off + 16,
        L4::Udp => l4_off + 6,
    }
}

/// SNAT (or DNAT with `source = false`) of an IPv4 packet in place, by incremental updates.
fn nat_v4(p: &mut [u8], l4: L4, source: bool, addr: [u8; 4], port: u16) {
    let ip = ETH;
    let l4_off = ip + 20;
    let (a_at, p_at) = if source {
        (ip + 12, l4_off)
    } else {
        (ip + 16, l4_off + 2)
    };
    let old_addr: [u8; 4] = p[a_at..a_at + 4].try_into().unwrap();
    let old_port = be16(p, p_at);
    // The IP header checksum covers the address; the L4 one covers it (pseudo-header) and
    // the port.
    put16(p, ip + 10, replace32(be16(p, ip + 10), old_addr, addr));
    let c_at = l4_check_at(l4, l4_off);
    let original = be16(p, c_at);
    let c = replace16(replace32(original, old_addr, addr), old_port, port);
    let c = match l4 {
        L4::Udp => udp_after(original, c),
        L4::Tcp => c,
    };
    put16(p, c_at, c);
    p[a_at..a_at + 4].copy_from_slice(&addr);
    put16(p, p_at, port);
}

fn nat_v6(p: &mut [u8], l4: L4, source: bool, addr: [u8; 16], port: u16) {
    let ip = ETH;
    let l4_off = ip + 40;
    let (a_at, p_at) = if source {
        (ip + 8, l4_off)
    } else {
        (ip + 24, l4_off + 2)
    };
    let old_addr: [u8; 16] = p[a_at..a_at + 16].try_into().unwrap();
    let old_port = be16(p, p_at);
    let c_at = l4_check_at(l4, l4_off);
    let c = replace16(replace128(be16(p, c_at), &old_addr, &addr), old_port, port);
    // Over IPv6 a UDP checksum is mandatory and never 0.
    let c = if c == 0 { 0xffff } else { c };
    put16(p, c_at, c);
    p[a_at..a_at + 16].copy_from_slice(&addr);
    put16(p, p_at, port);
}

fn l4s() -> impl Strategy<Value = L4> {
    prop_oneof![Just(L4::Tcp), Just(L4::Udp)]
}

proptest! {
    #[test]
    fn ipv4_nat_by_increments_equals_a_full_recomputation(
        l4 in l4s(),
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
        sport in any::<u16>(), dport in any::<u16>(),
        to_addr in any::<[u8; 4]>(), to_port in any::<u16>(),
        source in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut p = v4(l4, src, dst, sport, dport, 64, &payload);
        nat_v4(&mut p, l4, source, to_addr, to_port);
        let want = if source {
            v4(l4, to_addr, dst, to_port, dport, 64, &payload)
        } else {
            v4(l4, src, to_addr, sport, to_port, 64, &payload)
        };
        prop_assert_eq!(p, want);
    }

    #[test]
    fn ipv6_nat_by_increments_equals_a_full_recomputation(
        l4 in l4s(),
        src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
        sport in any::<u16>(), dport in any::<u16>(),
        to_addr in any::<[u8; 16]>(), to_port in any::<u16>(),
        source in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut p = v6(l4, src, dst, sport, dport, &payload);
        nat_v6(&mut p, l4, source, to_addr, to_port);
        let want = if source {
            v6(l4, to_addr, dst, to_port, dport, &payload)
        } else {
            v6(l4, src, to_addr, sport, to_port, &payload)
        };
        prop_assert_eq!(p, want);
    }

    #[test]
    fn a_ttl_decrement_by_increment_equals_a_full_recomputation(
        l4 in l4s(), ttl in 2u8..=255, src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
    ) {
        let mut p = v4(l4, src, dst, 1, 2, ttl, b"x");
        let proto = p[ETH + 9];
        let c = replace_ttl(be16(&p, ETH + 10), ttl, ttl - 1, proto);
        put16(&mut p, ETH + 10, c);
        p[ETH + 8] = ttl - 1;
        prop_assert_eq!(p, v4(l4, src, dst, 1, 2, ttl - 1, b"x"));
    }

    #[test]
    fn a_header_checksummed_in_full_verifies_to_zero(bytes in proptest::collection::vec(any::<u8>(), 20..=20)) {
        // An IPv4 header with its checksum field zeroed, checksummed, must verify to 0.
        let mut h = bytes.clone();
        h[0] = 0x45;
        h[10] = 0;
        h[11] = 0;
        let c = checksum(0, &h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        prop_assert_eq!(checksum(0, &h), 0);
    }
}

#[test]
fn a_udp_packet_without_a_checksum_keeps_none_and_a_computed_one_never_becomes_zero() {
    let mut p = v4(
        L4::Udp,
        [10, 0, 0, 1],
        [10, 0, 0, 2],
        1000,
        2000,
        64,
        b"abc",
    );
    let c_at = ETH + 20 + 6;
    put16(&mut p, c_at, 0);
    nat_v4(&mut p, L4::Udp, true, [192, 0, 2, 1], 40000);
    assert_eq!(be16(&p, c_at), 0, "no checksum stays no checksum");
    assert_eq!(udp_after(0x1234, 0), 0xffff);
    assert_eq!(udp_after(0x1234, 0x00ff), 0x00ff);
}
