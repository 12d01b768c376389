//! The checksum primitives (`xnic_common::csum`) against a full recomputation. The NAT
//! rewrite built on them is checked in `rewrite.rs`.

use etherparse::PacketBuilder;
use proptest::prelude::*;
use xnic_common::csum::{checksum, replace_ttl, udp_after};

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

fn l4s() -> impl Strategy<Value = L4> {
    prop_oneof![Just(L4::Tcp), Just(L4::Udp)]
}

proptest! {
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
fn a_udp_checksum_that_updates_to_zero_is_sent_as_all_ones() {
    assert_eq!(udp_after(0, 0x1234), 0, "no checksum stays no checksum");
    assert_eq!(udp_after(0x1234, 0), 0xffff);
    assert_eq!(udp_after(0x1234, 0x00ff), 0x00ff);
}
