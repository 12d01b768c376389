//! The fast path's rewrite (`xnic_common::rewrite`) against a full recomputation: a packet
//! etherparse builds, parsed by the dataplane's parser and rewritten in place the way the
//! fast path does (MACs, NAT'd addresses and ports, TTL, incremental checksums), must equal
//! byte for byte the packet etherparse builds with the new fields. The VXLAN outer header
//! must equal the one etherparse builds.

use etherparse::{
    EtherType, Ethernet2Header, IpNumber, Ipv4Header, PacketBuilder, PacketHeaders, UdpHeader,
};
use proptest::prelude::*;
use xnic_common::{
    flow::{FlowDir, FlowKey, Tunnel, fingerprint},
    frame::{Frame, FrameMut},
    headers::{EthHdr, Ipv4Hdr, Ipv6Hdr},
    parse::parse_frame,
    rewrite::{self, Check, L4Ports, OldAddrs, OuterV4, VXLAN_V4_OVERHEAD, VxlanHdr},
};

#[derive(Clone, Copy, Debug)]
enum L4 {
    Tcp,
    Udp,
}

/// The header fields a test packet is built from.
#[derive(Clone, Debug)]
struct Pkt {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    v4: bool,
    l4: L4,
    sport: u16,
    dport: u16,
    ttl: u8,
    payload: Vec<u8>,
}

fn v4_of(a: &[u8; 16]) -> [u8; 4] {
    a[12..].try_into().unwrap()
}

fn mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a);
    m
}

fn build(p: &Pkt) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(p.src_mac, p.dst_mac);
    let ip = if p.v4 {
        eth.ipv4(v4_of(&p.src), v4_of(&p.dst), p.ttl)
    } else {
        eth.ipv6(p.src, p.dst, p.ttl)
    };
    let mut out = Vec::new();
    match p.l4 {
        L4::Tcp => ip
            .tcp(p.sport, p.dport, 0x1234_5678, 512)
            .ack(0x9abc_def0)
            .write(&mut out, &p.payload),
        L4::Udp => ip.udp(p.sport, p.dport).write(&mut out, &p.payload),
    }
    .unwrap();
    out
}

fn fingerprint_of(bytes: &[u8]) -> u32 {
    let frame = Frame::from_slice(bytes);
    fingerprint(&frame, &parse_frame(&frame).unwrap()).unwrap()
}

/// The fast path's rewrite of a frame in place, from the parser's offsets.
fn rewrite_in_place(bytes: &mut [u8], d: &FlowDir) {
    let parsed = parse_frame(&Frame::from_slice(bytes)).unwrap();
    let key = FlowKey::of(&parsed, 0).expect("a TCP or UDP packet");
    let (l3, l4) = (parsed.l3_offset as usize, parsed.l4_offset as usize);
    let mut f = FrameMut::from_slice(bytes);
    rewrite::ethernet(f.header_mut::<EthHdr>(0).unwrap(), d);
    if key.family == 4 {
        rewrite::ipv4(f.header_mut::<Ipv4Hdr>(l3).unwrap(), d)
    } else {
        rewrite::ipv6(f.header_mut::<Ipv6Hdr>(l3).unwrap(), d)
    };
    let old = OldAddrs {
        src: &parsed.src_ip,
        dst: &parsed.dst_ip,
        v4: key.family == 4,
    };
    let mut ports = *f.header_mut::<L4Ports>(l4).unwrap();
    let check_at = l4 + rewrite::check_offset(key.proto);
    let mut check = *f.header_mut::<Check>(check_at).unwrap();
    rewrite::transport(&mut ports, &mut check, key.proto, old, d);
    *f.header_mut::<L4Ports>(l4).unwrap() = ports;
    *f.header_mut::<Check>(check_at).unwrap() = check;
}

fn pkt(v4: bool) -> impl Strategy<Value = Pkt> {
    (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        any::<[u8; 16]>(),
        any::<[u8; 16]>(),
        prop_oneof![Just(L4::Tcp), Just(L4::Udp)],
        any::<u16>(),
        any::<u16>(),
        2u8..=255,
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            move |(src_mac, dst_mac, s, d, l4, sport, dport, ttl, payload)| {
                let (src, dst) = if v4 {
                    (mapped(v4_of(&s)), mapped(v4_of(&d)))
                } else {
                    (s, d)
                };
                Pkt {
                    src_mac,
                    dst_mac,
                    src,
                    dst,
                    v4,
                    l4,
                    sport,
                    dport,
                    ttl,
                    payload,
                }
            },
        )
}

/// A new tuple for the packet: each field kept or changed (so SNAT, DNAT, both, or none).
fn nat(p: &Pkt) -> impl Strategy<Value = FlowDir> + use<> {
    let p = p.clone();
    (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        proptest::option::of(any::<[u8; 16]>()),
        proptest::option::of(any::<[u8; 16]>()),
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(move |(smac, dmac, s, d, sp, dp)| {
            let fam = |a: [u8; 16]| if p.v4 { mapped(v4_of(&a)) } else { a };
            FlowDir {
                new_src: s.map(fam).unwrap_or(p.src),
                new_dst: d.map(fam).unwrap_or(p.dst),
                new_src_port: sp.unwrap_or(p.sport),
                new_dst_port: dp.unwrap_or(p.dport),
                src_mac: smac,
                dst_mac: dmac,
                ..FlowDir::default()
            }
        })
}

fn with_nat() -> impl Strategy<Value = (Pkt, FlowDir)> {
    any::<bool>()
        .prop_flat_map(pkt)
        .prop_flat_map(|p| (Just(p.clone()), nat(&p)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_rewrite_equals_the_packet_built_with_the_new_fields((p, d) in with_nat()) {
        let mut bytes = build(&p);
        rewrite_in_place(&mut bytes, &d);
        let want = build(&Pkt {
            src_mac: d.src_mac,
            dst_mac: d.dst_mac,
            src: d.new_src,
            dst: d.new_dst,
            sport: d.new_src_port,
            dport: d.new_dst_port,
            ttl: p.ttl - 1,
            ..p.clone()
        });
        prop_assert_eq!(&bytes, &want);
        // What the egress program recognises a packet by survives NAT and the hop.
        prop_assert_eq!(fingerprint_of(&build(&p)), fingerprint_of(&bytes));
    }

    #[test]
    fn the_vxlan_outer_header_is_the_one_a_stack_would_build(
        vni in 0u32..(1 << 24),
        local in any::<[u8; 4]>(), remote in any::<[u8; 4]>(),
        src_mac in any::<[u8; 6]>(), dst_mac in any::<[u8; 6]>(),
        ttl in any::<u8>(), tos in any::<u8>(),
        sport in any::<u16>(), ip_id in any::<u16>(),
        inner_len in 14usize..9000,
    ) {
        let t = Tunnel {
            vni, local, remote, src_mac, dst_mac, ttl, tos,
            dst_port: 4789, valid: 1,
            ..Tunnel::default()
        };
        let mut outer = OuterV4([0; VXLAN_V4_OVERHEAD]);
        rewrite::vxlan_v4(&mut outer, &t, inner_len, sport, ip_id);
        let outer = outer.0;

        let payload_len = 8 + VxlanHdr::LEN + inner_len;
        let mut ip = Ipv4Header::new(payload_len as u16, ttl, IpNumber::UDP, local, remote).unwrap();
        ip.identification = ip_id;
        ip.dont_fragment = false;
        ip.dscp = (tos >> 2).try_into().unwrap();
        ip.ecn = (tos & 3).try_into().unwrap();
        ip.header_checksum = ip.calc_header_checksum();
        let udp = UdpHeader {
            source_port: sport,
            destination_port: 4789,
            length: payload_len as u16,
            checksum: 0,
        };
        let mut want = Vec::new();
        Ethernet2Header { source: src_mac, destination: dst_mac, ether_type: EtherType::IPV4 }
            .write(&mut want).unwrap();
        ip.write(&mut want).unwrap();
        udp.write(&mut want).unwrap();
        want.extend_from_slice(&[0x08, 0, 0, 0]);
        want.extend_from_slice(&(vni << 8).to_be_bytes());
        prop_assert_eq!(&outer[..], &want[..]);
        prop_assert_eq!(want.len(), VXLAN_V4_OVERHEAD);
    }
}

#[test]
fn a_wrapped_packet_reads_back_as_the_inner_one() {
    let inner = build(&Pkt {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: mapped([10, 1, 0, 2]),
        dst: mapped([10, 200, 0, 5]),
        v4: true,
        l4: L4::Udp,
        sport: 5000,
        dport: 6000,
        ttl: 63,
        payload: b"payload".to_vec(),
    });
    let t = Tunnel {
        vni: 42,
        local: [192, 0, 2, 1],
        remote: [192, 0, 2, 254],
        src_mac: [2, 0, 0, 0, 1, 1],
        dst_mac: [2, 0, 0, 0, 1, 2],
        ttl: 64,
        dst_port: 4789,
        valid: 1,
        ..Tunnel::default()
    };
    let mut outer = OuterV4([0; VXLAN_V4_OVERHEAD]);
    rewrite::vxlan_v4(&mut outer, &t, inner.len(), 50000, 7);
    let mut wrapped = outer.0.to_vec();
    wrapped.extend_from_slice(&inner);
    let h = PacketHeaders::from_ethernet_slice(&wrapped).unwrap();
    let udp = h.transport.unwrap().udp().unwrap();
    assert_eq!(udp.destination_port, 4789);
    assert_eq!(&h.payload.slice()[VxlanHdr::LEN..], &inner[..]);
    let f = Frame::from_slice(&wrapped);
    let outer = f.header::<Ipv4Hdr>(EthHdr::LEN).unwrap();
    let vx = f.header::<VxlanHdr>(EthHdr::LEN + 28).unwrap();
    assert!(rewrite::is_from(
        &Tunnel {
            local: t.remote,
            remote: t.local,
            ..t
        },
        outer,
        vx
    ));
    assert!(
        !rewrite::is_from(&t, outer, vx),
        "the tunnel's own direction is not from it"
    );
}

#[test]
fn datagrams_of_one_flow_have_fingerprints_of_their_own() {
    // Unconnected UDP sockets send with DF and identification 0; many protocols start every
    // datagram alike: the sequence number further in tells them apart.
    let datagram = |seq: u64| {
        let mut payload = b"xnic\0\0\0\x01".to_vec();
        payload.extend(seq.to_be_bytes());
        payload.extend([0u8; 40]);
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(7000, 7000)
            .write(&mut out, &payload)
            .unwrap();
        out
    };
    let fps: std::collections::BTreeSet<u32> =
        (0..1000).map(|s| fingerprint_of(&datagram(s))).collect();
    assert_eq!(fps.len(), 1000);
}
