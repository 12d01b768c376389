//! VNIC routing's programs under BPF_PROG_TEST_RUN, with the maps rendered from the fleet
//! lab's configuration the way the daemon renders them: every next-hop type and every drop reason,
//! the output compared byte for byte with frames built independently (etherparse computes
//! the checksums from scratch; the programs update them incrementally).

use etherparse::{IpNumber, Ipv4Header, PacketBuilder, UdpHeader};
use xnic::{config::Config, features::vnic::Vnic};
use xnic_common::{
    frame::Frame,
    hash::flow_hash,
    maps::{Counter, PortRole},
    parse::parse_frame,
    verdict::{Action, Reason},
    vnic::{VnicCounter, outer_src_port, port_block},
};
use xnic_tests::programs::{Fixture, Moved, Run};

const TOR_MAC: [u8; 6] = [0x02, 0x70, 0, 0, 0, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x68, 0, 0, 0, 0x01];
const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0, 0, 0x01];
const WEB1_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const DB1_MAC: [u8; 6] = [2, 0, 0, 0, 2, 1];
const HUB1_MAC: [u8; 6] = [2, 0, 0, 0, 3, 1];
const SERVICES_MAC: [u8; 6] = [2, 0, 0, 0, 5, 0];
const ONPREM_MAC: [u8; 6] = [2, 0, 0, 0, 6, 0];
const ANYCAST: [u8; 4] = [192, 0, 2, 100];
const HANDOFF_VNI: u32 = (1 << 24) - 1;

/// The fleet lab's configuration of host h1: the same VNICs, tables, gateways and rules the
/// lab runs.
fn fleet_text() -> String {
    xnic::lab::fleet::FleetLab::new("t").config(0)
}

/// A dataplane with lo as an uplink of fleet host `me`, its VNIC maps rendered from
/// the fleet lab's configuration as the daemon renders them.
fn host(me: usize) -> Fixture {
    host_with_ids(me).0
}

/// [`host`], with the feature that rendered its maps (its VNICs' slots).
fn host_with_ids(me: usize) -> (Fixture, Vnic) {
    let config: Config = xnic::config::parse(&fleet_text(), std::path::Path::new("fleet.toml"))
        .unwrap_or_else(|e| panic!("the fleet configuration: {e}"));
    let mut feature = Vnic::default();
    feature.set_host(Some(me));
    feature.reconcile(&config).expect("ids");
    let image = feature.render(&config);
    let mut fx = Fixture::new(PortRole::Uplink);
    fx.write(|i| i.vnic = std::sync::Arc::new(image));
    (fx, feature)
}

enum L4 {
    Udp(u16, u16),
    /// Ports and whether it carries ACK (else a bare SYN).
    Tcp(u16, u16, bool),
}

/// An inner (or unwrapped) IPv4 frame with 32 bytes of payload.
fn ip_frame(macs: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4], ttl: u8, l4: L4) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(macs.0, macs.1).ipv4(src, dst, ttl);
    let mut out = Vec::new();
    let payload = [0x5au8; 32];
    match l4 {
        L4::Udp(s, d) => b.udp(s, d).write(&mut out, &payload).unwrap(),
        L4::Tcp(s, d, ack) => {
            let t = b.tcp(s, d, 1000, 64240);
            if ack {
                t.ack(77).write(&mut out, &payload).unwrap()
            } else {
                t.syn().write(&mut out, &payload).unwrap()
            }
        }
    }
    out
}

/// `inner` wrapped in VXLAN: outer Ethernet `macs`, IPv4 `src` → `dst` with `df`, `id` and
/// `ttl`, UDP `sport` → 4789 without checksum, VNI `vni`.
#[allow(clippy::too_many_arguments)]
fn vxlan(
    macs: ([u8; 6], [u8; 6]),
    src: [u8; 4],
    dst: [u8; 4],
    df: bool,
    id: u16,
    ttl: u8,
    sport: u16,
    vni: u32,
    inner: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + 8 + inner.len();
    let mut ip = Ipv4Header::new(udp_len as u16, ttl, IpNumber::UDP, src, dst).unwrap();
    ip.dont_fragment = df;
    ip.identification = id;
    ip.header_checksum = ip.calc_header_checksum();
    let udp = UdpHeader {
        source_port: sport,
        destination_port: 4789,
        length: udp_len as u16,
        checksum: 0,
    };
    let mut out = Vec::new();
    out.extend(macs.1);
    out.extend(macs.0);
    out.extend(0x0800u16.to_be_bytes());
    out.extend(ip.to_bytes());
    out.extend(udp.to_bytes());
    out.extend([0x08, 0, 0, 0]);
    out.extend((vni << 8).to_be_bytes());
    out.extend(inner);
    out
}

/// A compute instance's packet as its host's VXLAN device sends it to the fleet.
fn from_instance(vtep: [u8; 4], vni: u32, inner: &[u8]) -> Vec<u8> {
    vxlan(
        (TOR_MAC, HOST_MAC),
        vtep,
        ANYCAST,
        false,
        7,
        63,
        51234,
        vni,
        inner,
    )
}

/// What the fleet sends to `vtep` in `vni`: the flow's outer source port from the packet as
/// it arrived (`arrived`, its inner or unwrapped frame).
fn to_vtep(src: [u8; 4], vtep: [u8; 4], vni: u32, inner: &[u8], arrived: &[u8]) -> Vec<u8> {
    let parsed = parse_frame(&Frame::from_slice(arrived)).expect("parses");
    let sport = outer_src_port(flow_hash(&parsed, 0, false));
    vxlan(
        (HOST_MAC, TOR_MAC),
        src,
        vtep,
        true,
        0,
        64,
        sport,
        vni,
        inner,
    )
}

fn reasons(m: &Moved) -> Vec<Reason> {
    m.reasons.iter().map(|(r, _)| *r).collect()
}

#[track_caller]
fn forwarded(m: &Moved, want: &[u8]) {
    assert_eq!(reasons(m), vec![Reason::VnicForward], "{m:?}");
    assert_eq!(m.action, Action::Tx as u32);
    assert_eq!(m.frame, want, "output bytes");
}

#[track_caller]
fn dropped(m: &Moved, reason: Reason) {
    assert_eq!(reasons(m), vec![reason], "{m:?}");
    assert_eq!(m.action, Action::Drop as u32);
}

fn reader(fx: &Fixture) -> xnic::dataplane::VnicReader {
    xnic::dataplane::VnicReader::open(fx.dp.pins()).unwrap()
}

fn events(fx: &Fixture) -> [u64; VnicCounter::COUNT] {
    reader(fx).events().unwrap()
}

#[test]
fn vnic_to_vnic_in_the_vcn_and_through_a_virtual_router() {
    let (mut fx, ids) = host_with_ids(0);
    // web1 → db1 (tcp 5432, allowed by db's ingress): re-wrapped to db1's host in VNI 100.
    let inner = ip_frame(
        (WEB1_MAC, ROUTER_MAC),
        [10, 0, 1, 10],
        [10, 0, 2, 10],
        64,
        L4::Tcp(40000, 5432, false),
    );
    let want_inner = ip_frame(
        (ROUTER_MAC, DB1_MAC),
        [10, 0, 1, 10],
        [10, 0, 2, 10],
        63,
        L4::Tcp(40000, 5432, false),
    );
    let m = fx.run(
        PortRole::Uplink,
        &from_instance([192, 0, 2, 11], 100, &inner),
    );
    forwarded(
        &m,
        &to_vtep(ANYCAST, [192, 0, 2, 12], 100, &want_inner, &inner),
    );
    let slot = |name| ids.vnic_slot(name).unwrap();
    let web1 = reader(&fx).counters(slot("web1")).unwrap();
    assert_eq!(web1.sent.packets, 1);
    let db1 = reader(&fx).counters(slot("db1")).unwrap();
    assert_eq!(db1.received.packets, 1);

    // web1 → hub1, another VCN, through the virtual router "transit": one hop all the same.
    let inner = ip_frame(
        (WEB1_MAC, ROUTER_MAC),
        [10, 0, 1, 10],
        [172, 16, 0, 10],
        64,
        L4::Udp(5000, 53),
    );
    let want_inner = ip_frame(
        (ROUTER_MAC, HUB1_MAC),
        [10, 0, 1, 10],
        [172, 16, 0, 10],
        63,
        L4::Udp(5000, 53),
    );
    let before = events(&fx);
    let m = fx.run(
        PortRole::Uplink,
        &from_instance([192, 0, 2, 11], 100, &inner),
    );
    forwarded(
        &m,
        &to_vtep(ANYCAST, [192, 0, 2, 13], 300, &want_inner, &inner),
    );
    let after = events(&fx);
    assert_eq!(
        after[VnicCounter::RouterHop as usize] - before[VnicCounter::RouterHop as usize],
        1
    );
}

#[test]
fn gateways_out_and_in() {
    let mut fx = host(0);
    // Internet gateway out: web1's public address for its private one, unwrapped, TTL - 1.
    let inner = ip_frame(
        (WEB1_MAC, ROUTER_MAC),
        [10, 0, 1, 10],
        [198, 51, 100, 7],
        64,
        L4::Udp(40000, 53),
    );
    let want = ip_frame(
        (HOST_MAC, TOR_MAC),
        [203, 0, 113, 10],
        [198, 51, 100, 7],
        63,
        L4::Udp(40000, 53),
    );
    forwarded(
        &fx.run(
            PortRole::Uplink,
            &from_instance([192, 0, 2, 11], 100, &inner),
        ),
        &want,
    );

    // Internet gateway in: to web1's public address → its private one, wrapped to its host.
    let arrived = ip_frame(
        (TOR_MAC, HOST_MAC),
        [198, 51, 100, 7],
        [203, 0, 113, 10],
        60,
        L4::Tcp(443, 40001, true),
    );
    let want_inner = ip_frame(
        (ROUTER_MAC, WEB1_MAC),
        [198, 51, 100, 7],
        [10, 0, 1, 10],
        59,
        L4::Tcp(443, 40001, true),
    );
    forwarded(
        &fx.run(PortRole::Uplink, &arrived),
        &to_vtep(ANYCAST, [192, 0, 2, 11], 100, &want_inner, &arrived),
    );

    // Service gateway: wrapped to the services network's VTEP in its VNI.
    let inner = ip_frame(
        (WEB1_MAC, ROUTER_MAC),
        [10, 0, 1, 10],
        [198, 18, 0, 5],
        64,
        L4::Tcp(40002, 443, true),
    );
    let want_inner = ip_frame(
        (ROUTER_MAC, SERVICES_MAC),
        [10, 0, 1, 10],
        [198, 18, 0, 5],
        63,
        L4::Tcp(40002, 443, true),
    );
    forwarded(
        &fx.run(
            PortRole::Uplink,
            &from_instance([192, 0, 2, 11], 100, &inner),
        ),
        &to_vtep(ANYCAST, [192, 0, 2, 50], 500, &want_inner, &inner),
    );

    // Dynamic routing gateway, both ways.
    let inner = ip_frame(
        (WEB1_MAC, ROUTER_MAC),
        [10, 0, 1, 10],
        [192, 168, 1, 5],
        64,
        L4::Udp(40003, 161),
    );
    let want_inner = ip_frame(
        (ROUTER_MAC, ONPREM_MAC),
        [10, 0, 1, 10],
        [192, 168, 1, 5],
        63,
        L4::Udp(40003, 161),
    );
    forwarded(
        &fx.run(
            PortRole::Uplink,
            &from_instance([192, 0, 2, 11], 100, &inner),
        ),
        &to_vtep(ANYCAST, [192, 0, 2, 60], 600, &want_inner, &inner),
    );
    let answer = ip_frame(
        (ONPREM_MAC, ROUTER_MAC),
        [192, 168, 1, 5],
        [10, 0, 1, 10],
        64,
        L4::Udp(161, 40003),
    );
    let want_inner = ip_frame(
        (ROUTER_MAC, WEB1_MAC),
        [192, 168, 1, 5],
        [10, 0, 1, 10],
        63,
        L4::Udp(161, 40003),
    );
    forwarded(
        &fx.run(
            PortRole::Uplink,
            &from_instance([192, 0, 2, 60], 600, &answer),
        ),
        &to_vtep(ANYCAST, [192, 0, 2, 11], 100, &want_inner, &answer),
    );
}

#[test]
fn a_full_nat_port_block_drops_new_connections_and_keeps_the_old() {
    // A block of one port: db1's first connection to 198.51.100.7:443 takes it, a second
    // one to the same peer finds no free port and is dropped, counted.
    let mut h1 = host(0);
    h1.write(|i| {
        let c = &mut std::sync::Arc::make_mut(&mut i.vnic).config;
        (c.nat_first, c.nat_last) = (5000, 5000);
    });
    let from = |port: u16| {
        let inner = ip_frame(
            (DB1_MAC, ROUTER_MAC),
            [10, 0, 2, 10],
            [198, 51, 100, 7],
            64,
            L4::Tcp(port, 443, false),
        );
        from_instance([192, 0, 2, 12], 100, &inner)
    };
    let want = ip_frame(
        (HOST_MAC, TOR_MAC),
        [203, 0, 113, 1],
        [198, 51, 100, 7],
        63,
        L4::Tcp(5000, 443, false),
    );
    forwarded(&h1.run(PortRole::Uplink, &from(40000)), &want);
    dropped(
        &h1.run(PortRole::Uplink, &from(40001)),
        Reason::NatExhausted,
    );
    // The connection that has the port keeps it.
    forwarded(&h1.run(PortRole::Uplink, &from(40000)), &want);
    let e = events(&h1);
    assert_eq!(e[VnicCounter::NatNew as usize], 1);
    let sessions = reader(&h1).nat_sessions();
    assert_eq!(
        sessions.len(),
        2,
        "one connection, both directions: {sessions:?}"
    );
}

#[test]
fn a_nat_gateway_translates_into_its_hosts_block_and_answers_find_their_owner() {
    let mut h1 = host(0);
    let mut h2 = host(1);
    let (first, last) = port_block(0, 3).unwrap();
    // db1 → the internet through NAT: a port of h1's block, chosen by the flow's hash.
    let inner = ip_frame(
        (DB1_MAC, ROUTER_MAC),
        [10, 0, 2, 10],
        [198, 51, 100, 7],
        64,
        L4::Tcp(40000, 443, false),
    );
    let parsed = parse_frame(&Frame::from_slice(&inner)).unwrap();
    let span = u32::from(last - first) + 1;
    let port = first + (flow_hash(&parsed, 0, false) % span) as u16;
    let want = ip_frame(
        (HOST_MAC, TOR_MAC),
        [203, 0, 113, 1],
        [198, 51, 100, 7],
        63,
        L4::Tcp(port, 443, false),
    );
    let m = h1.run(
        PortRole::Uplink,
        &from_instance([192, 0, 2, 12], 100, &inner),
    );
    forwarded(&m, &want);
    assert_eq!(events(&h1)[VnicCounter::NatNew as usize], 1);
    // The same connection's next packet keeps its port.
    forwarded(
        &h1.run(
            PortRole::Uplink,
            &from_instance([192, 0, 2, 12], 100, &inner),
        ),
        &want,
    );
    assert_eq!(events(&h1)[VnicCounter::NatNew as usize], 1);

    // The answer, at h1: back to db1 (db's ingress rules would refuse it: its connection is
    // what lets it in).
    let answer = ip_frame(
        (TOR_MAC, HOST_MAC),
        [198, 51, 100, 7],
        [203, 0, 113, 1],
        60,
        L4::Tcp(443, port, true),
    );
    let want_inner = ip_frame(
        (ROUTER_MAC, DB1_MAC),
        [198, 51, 100, 7],
        [10, 0, 2, 10],
        59,
        L4::Tcp(443, 40000, true),
    );
    let to_db1 = to_vtep(ANYCAST, [192, 0, 2, 12], 100, &want_inner, &answer);
    forwarded(&h1.run(PortRole::Uplink, &answer), &to_db1);

    // The same answer, brought by ECMP to h2: handed to h1 in the hand-off VNI, untouched.
    let handed = to_vtep(
        [192, 0, 2, 2],
        [192, 0, 2, 1],
        HANDOFF_VNI,
        &answer,
        &answer,
    );
    forwarded(&h2.run(PortRole::Uplink, &answer), &handed);
    assert_eq!(events(&h2)[VnicCounter::HandedOff as usize], 1);
    // h1 takes it from there like one it got itself (on its own uplink: the frame came
    // from the tor to h1's MAC).
    let mut at_h1 = handed.clone();
    at_h1[0..6].copy_from_slice(&HOST_MAC);
    at_h1[6..12].copy_from_slice(&TOR_MAC);
    forwarded(&h1.run(PortRole::Uplink, &at_h1), &to_db1);
    assert_eq!(events(&h1)[VnicCounter::HandedIn as usize], 1);
    // Handed to h2 (by a third host), an answer for h1's port is not handed on again.
    let mut at_h2 = to_vtep(
        [192, 0, 2, 3],
        [192, 0, 2, 2],
        HANDOFF_VNI,
        &answer,
        &answer,
    );
    at_h2[0..6].copy_from_slice(&HOST_MAC);
    at_h2[6..12].copy_from_slice(&TOR_MAC);
    dropped(&h2.run(PortRole::Uplink, &at_h2), Reason::NoRoute);
    // A hand-off to another host's VTEP is not this host's business: the kernel's.
    let m = h2.run(PortRole::Uplink, &at_h1);
    assert_eq!(reasons(&m), vec![Reason::NotForVm]);
}

#[test]
fn security_rules_decide_in_order_and_answers_pass() {
    let (mut fx, ids) = host_with_ids(0);
    let to_db1 = |ttl: u8, l4: L4| {
        ip_frame(
            (WEB1_MAC, ROUTER_MAC),
            [10, 0, 1, 10],
            [10, 0, 2, 10],
            ttl,
            l4,
        )
    };
    // db's ingress allows tcp 5432, udp 9000-9999 and icmp from the VCN, nothing else.
    dropped(
        &fx.run(
            PortRole::Uplink,
            &from_instance([192, 0, 2, 11], 100, &to_db1(64, L4::Udp(40000, 5432))),
        ),
        Reason::AclDeny,
    );
    dropped(
        &fx.run(
            PortRole::Uplink,
            &from_instance([192, 0, 2, 11], 100, &to_db1(64, L4::Tcp(40000, 22, false))),
        ),
        Reason::AclDeny,
    );
    // An answer to what db's stateful egress rule allows (db1 → anywhere tcp 443): from
    // web1's port 443, carrying ACK, it passes; a bare SYN from there does not.
    let before = events(&fx)[VnicCounter::AnswerAdmitted as usize];
    let answer = to_db1(64, L4::Tcp(443, 40000, true));
    assert_eq!(
        reasons(&fx.run(
            PortRole::Uplink,
            &from_instance([192, 0, 2, 11], 100, &answer)
        )),
        vec![Reason::VnicForward]
    );
    assert_eq!(
        events(&fx)[VnicCounter::AnswerAdmitted as usize] - before,
        1
    );
    dropped(
        &fx.run(
            PortRole::Uplink,
            &from_instance(
                [192, 0, 2, 11],
                100,
                &to_db1(64, L4::Tcp(8080, 40000, false)),
            ),
        ),
        Reason::AclDeny,
    );
    let db1 = reader(&fx).counters(ids.vnic_slot("db1").unwrap()).unwrap();
    assert_eq!(
        db1.dropped.packets, 3,
        "drops count against the VNIC they were for"
    );
}

#[test]
fn every_bad_packet_has_its_reason() {
    let mut fx = host(0);
    let web = |src: [u8; 4], dst: [u8; 4], ttl: u8| {
        ip_frame((WEB1_MAC, ROUTER_MAC), src, dst, ttl, L4::Udp(40000, 53))
    };
    let good = web([10, 0, 1, 10], [10, 0, 2, 10], 64);
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        (
            "an unknown VNI",
            from_instance([192, 0, 2, 11], 999, &good),
            Reason::NoVnic,
        ),
        (
            "a MAC no VNIC of the VNI has",
            from_instance(
                [192, 0, 2, 11],
                100,
                &ip_frame(
                    ([2, 9, 9, 9, 9, 9], ROUTER_MAC),
                    [10, 0, 1, 10],
                    [10, 0, 2, 10],
                    64,
                    L4::Udp(1, 2),
                ),
            ),
            Reason::NoVnic,
        ),
        (
            "a source that is not the VNIC's",
            from_instance(
                [192, 0, 2, 11],
                100,
                &web([10, 0, 1, 99], [10, 0, 2, 10], 64),
            ),
            Reason::SpoofedSource,
        ),
        (
            "a VCN address nobody has",
            from_instance(
                [192, 0, 2, 11],
                100,
                &web([10, 0, 1, 10], [10, 0, 9, 9], 64),
            ),
            Reason::NoRoute,
        ),
        (
            "a TTL that runs out here",
            from_instance(
                [192, 0, 2, 11],
                100,
                &web([10, 0, 1, 10], [10, 0, 2, 10], 1),
            ),
            Reason::TtlExpired,
        ),
        (
            "VXLAN without its I flag",
            {
                let mut f = from_instance([192, 0, 2, 11], 100, &good);
                f[42] = 0;
                f
            },
            Reason::Malformed,
        ),
        (
            "an outer header cut short",
            from_instance([192, 0, 2, 11], 100, &good)[..46].to_vec(),
            Reason::Truncated,
        ),
        (
            "an inner IP header cut short",
            from_instance([192, 0, 2, 11], 100, &good[..14 + 12]),
            Reason::Truncated,
        ),
        (
            "an inner fragment",
            {
                let mut inner = good.clone();
                let mut h = etherparse::Ipv4HeaderSlice::from_slice(&inner[14..34])
                    .unwrap()
                    .to_header();
                h.more_fragments = true;
                h.header_checksum = h.calc_header_checksum();
                inner[14..34].copy_from_slice(&h.to_bytes());
                from_instance([192, 0, 2, 11], 100, &inner)
            },
            Reason::Fragment,
        ),
        (
            "a packet for web1's public address that would not fit the underlay wrapped",
            {
                let b = PacketBuilder::ethernet2(TOR_MAC, HOST_MAC)
                    .ipv4([198, 51, 100, 7], [203, 0, 113, 10], 60)
                    .udp(53, 40000);
                let mut f = Vec::new();
                b.write(&mut f, &vec![0u8; 1500 - 28]).unwrap();
                f
            },
            Reason::TooBig,
        ),
    ];
    for (what, frame, reason) in cases {
        let m = fx.run(PortRole::Uplink, &frame);
        assert_eq!(reasons(&m), vec![reason], "{what}: {m:?}");
        assert_eq!(m.action, Action::Drop as u32, "{what}");
        assert_eq!(
            m.reasons[0].1,
            Counter {
                packets: 1,
                bytes: frame.len() as u64
            },
            "{what}"
        );
    }

    // The host's own traffic on the uplink is left alone: to its own VTEP, not VXLAN.
    let own = ip_frame(
        (TOR_MAC, HOST_MAC),
        [192, 0, 2, 200],
        [192, 0, 2, 1],
        64,
        L4::Tcp(50000, 22, true),
    );
    let m = fx.run(PortRole::Uplink, &own);
    assert_eq!(reasons(&m), vec![Reason::NotForVm]);
    assert_eq!(m.action, Action::Pass as u32);
    assert_eq!(m.frame, own);
}

#[test]
fn without_a_fleet_vxlan_is_the_kernels() {
    let mut fx = Fixture::new(PortRole::Uplink);
    let inner = ip_frame(
        (WEB1_MAC, ROUTER_MAC),
        [10, 0, 1, 10],
        [10, 0, 2, 10],
        64,
        L4::Udp(1, 2),
    );
    let frame = from_instance([192, 0, 2, 11], 100, &inner);
    let m = fx.run(PortRole::Uplink, &frame);
    assert_eq!(reasons(&m), vec![Reason::NotForVm]);
    assert_eq!(m.frame, frame);
}

#[test]
fn a_changed_route_is_taken_at_once_though_the_old_one_was_remembered() {
    let config: Config =
        xnic::config::parse(&fleet_text(), std::path::Path::new("fleet.toml")).unwrap();
    let mut feature = Vnic::default();
    feature.set_host(Some(0));
    feature.reconcile(&config).unwrap();
    let mut fx = Fixture::new(PortRole::Uplink);
    fx.write(|i| i.vnic = feature.image());
    let inner = ip_frame(
        (WEB1_MAC, ROUTER_MAC),
        [10, 0, 1, 10],
        [198, 18, 0, 5],
        64,
        L4::Udp(40000, 443),
    );
    let frame = from_instance([192, 0, 2, 11], 100, &inner);
    let vtep_of = |m: &Moved| m.frame[30..34].to_vec();
    // Twice: the second packet finds the route remembered.
    for _ in 0..2 {
        let m = fx.run(PortRole::Uplink, &frame);
        assert_eq!(reasons(&m), vec![Reason::VnicForward]);
        assert_eq!(vtep_of(&m), vec![192, 0, 2, 50], "to the services network");
    }
    // The services prefix now leads on-premises instead.
    let changed = fleet_text().replace(
        "{ dst = \"198.18.0.0/15\", via = \"sgw:services\" }",
        "{ dst = \"198.18.0.0/15\", via = \"drg:onprem\" }",
    );
    let config: Config = xnic::config::parse(&changed, std::path::Path::new("fleet.toml")).unwrap();
    feature.reconcile(&config).unwrap();
    fx.write(|i| i.vnic = feature.image());
    let m = fx.run(PortRole::Uplink, &frame);
    assert_eq!(vtep_of(&m), vec![192, 0, 2, 60], "to on-premises, at once");
}

#[test]
fn every_host_sends_the_same_bytes_for_the_same_packet() {
    // Stateless next hops come out of any host alike: the tor may send a flow's packets to
    // any of them (a host lost, a bucket moved) and the far end sees no difference.
    let mut hosts = [host(0), host(1), host(2)];
    let packets = [
        ip_frame(
            (WEB1_MAC, ROUTER_MAC),
            [10, 0, 1, 10],
            [10, 0, 2, 10],
            64,
            L4::Tcp(40000, 5432, true),
        ),
        ip_frame(
            (WEB1_MAC, ROUTER_MAC),
            [10, 0, 1, 10],
            [172, 16, 0, 10],
            64,
            L4::Udp(40001, 53),
        ),
        ip_frame(
            (WEB1_MAC, ROUTER_MAC),
            [10, 0, 1, 10],
            [198, 51, 100, 7],
            64,
            L4::Udp(40002, 53),
        ),
        ip_frame(
            (WEB1_MAC, ROUTER_MAC),
            [10, 0, 1, 10],
            [192, 168, 1, 5],
            64,
            L4::Udp(40003, 161),
        ),
    ];
    for inner in &packets {
        let frame = from_instance([192, 0, 2, 11], 100, inner);
        let outs: Vec<Vec<u8>> = hosts
            .iter_mut()
            .map(|h| {
                let m = h.run(PortRole::Uplink, &frame);
                assert_eq!(reasons(&m), vec![Reason::VnicForward]);
                m.frame
            })
            .collect();
        assert_eq!(outs[0], outs[1], "h1 and h2");
        assert_eq!(outs[0], outs[2], "h1 and h3");
    }
}

#[test]
fn ipv6_inside_is_routed_too() {
    let v6 = "\n[[vcn]]\nname = \"six\"\ncidrs = [\"fd00:10::/32\"]\n\n[[subnet]]\nname = \"s6\"\nvcn = \"six\"\ncidr = \"fd00:10:1::/64\"\nsecurity_lists = [\"open6\"]\n\n[[vnic]]\nname = \"a6\"\nsubnet = \"s6\"\nvni = 700\nmac = \"02:00:00:00:07:01\"\nips = [\"fd00:10:1::10\"]\nhost = \"192.0.2.14\"\n\n[[vnic]]\nname = \"b6\"\nsubnet = \"s6\"\nvni = 700\nmac = \"02:00:00:00:07:02\"\nips = [\"fd00:10:1::20\"]\nhost = \"192.0.2.15\"\n\n[[security_list]]\nname = \"open6\"\ningress = [{ action = \"allow\", cidr = \"::/0\" }]\negress = [{ action = \"allow\", cidr = \"::/0\" }]\n";
    let config: Config =
        xnic::config::parse(&(fleet_text() + v6), std::path::Path::new("fleet.toml")).unwrap();
    let mut feature = Vnic::default();
    feature.set_host(Some(0));
    feature.reconcile(&config).unwrap();
    let mut fx = Fixture::new(PortRole::Uplink);
    fx.write(|i| i.vnic = feature.image());
    let a6: [u8; 16] = "fd00:10:1::10"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let b6: [u8; 16] = "fd00:10:1::20"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let v6_frame = |macs: ([u8; 6], [u8; 6]), src: [u8; 16], dst: [u8; 16], hops: u8| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(macs.0, macs.1)
            .ipv6(src, dst, hops)
            .udp(40000, 53)
            .write(&mut out, &[0x5a; 32])
            .unwrap();
        out
    };
    let inner = v6_frame(([2, 0, 0, 0, 7, 1], ROUTER_MAC), a6, b6, 64);
    let want_inner = v6_frame((ROUTER_MAC, [2, 0, 0, 0, 7, 2]), a6, b6, 63);
    let m = fx.run(
        PortRole::Uplink,
        &from_instance([192, 0, 2, 14], 700, &inner),
    );
    forwarded(
        &m,
        &to_vtep(ANYCAST, [192, 0, 2, 15], 700, &want_inner, &inner),
    );
    // IPv4 rules do not match IPv6 peers: the lab's "open" list (0.0.0.0/0) here would
    // drop it. Its source must be its own, as for IPv4.
    let mut other = a6;
    other[15] = 0x99;
    let spoofed = v6_frame(([2, 0, 0, 0, 7, 1], ROUTER_MAC), other, b6, 64);
    dropped(
        &fx.run(
            PortRole::Uplink,
            &from_instance([192, 0, 2, 14], 700, &spoofed),
        ),
        Reason::SpoofedSource,
    );
}
