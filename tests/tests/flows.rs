//! The fast path for offloaded flows, run with BPF_PROG_TEST_RUN on the real programs: each
//! verdict with the exact bytes that come out (NAT over IPv4 and IPv6, VXLAN unwrap and
//! wrap), the promotion drain through the real tc egress program, and every case that must
//! leave a packet to the slow path untouched (a miss, an ICMP error, a TTL running out, a
//! FIN, a segment outside the window).

use etherparse::{PacketBuilder, PacketHeaders};
use xnic_common::{
    flow::{
        DIR_DECAP, DIR_DNAT, DIR_ENCAP, DIR_SNAT, FlowConfig, FlowCounter, FlowDir, FlowKey,
        FlowLive, FlowState, Leave, Mode, ORIGINAL, REPLY, Tunnel, leaves_as,
    },
    frame::Frame,
    maps::PortRole,
    parse::parse_frame,
    rewrite::{OuterV4, VXLAN_V4_OVERHEAD},
    verdict::Action,
};
use xnic_tests::programs::{Fixture, PEER_MAC, VM_MAC};

const NEXT_HOP_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x01];
const OUR_MAC: [u8; 6] = [0x02, 0x98, 0, 0, 0, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x97, 0, 0, 0, 0x01];

const VM: [u8; 4] = [10, 1, 0, 2];
const REMOTE: [u8; 4] = [198, 51, 100, 7];
const PUBLIC: [u8; 4] = [192, 0, 2, 1];

/// The dataplane's clock, as the daemon reads it when it promotes a flow.
fn now() -> u64 {
    xnic::features::team::monotonic_ns()
}

fn key_of(frame: &[u8]) -> FlowKey {
    FlowKey::of(&parse_frame(&Frame::from_slice(frame)).unwrap(), 0).unwrap()
}

fn udp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    ttl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, ttl)
        .udp(src.1, dst.1)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// A direction's rewrite as the daemon writes it: to the tuple the other direction's key
/// says, out through `out` to the next hop.
fn dir_to(keys: &[FlowKey; 2], dir: usize, ingress: u32, out: u32, flags: u8) -> FlowDir {
    let to = leaves_as(keys, dir);
    FlowDir {
        new_src: to.src,
        new_dst: to.dst,
        new_src_port: to.src_port,
        new_dst_port: to.dst_port,
        in_ifindex: ingress,
        out_ifindex: out,
        src_mac: OUR_MAC,
        dst_mac: NEXT_HOP_MAC,
        mtu: 1500,
        flags,
        ..FlowDir::default()
    }
}

/// A fixture with offload on (and tunnels, and flows promoting) and `lo`, where frames
/// arrive, as the fast path's output too.
fn offloading(role: PortRole) -> Fixture {
    let mut fx = Fixture::new(role);
    let lo = fx.ifindex;
    fx.dp
        .set_flow_config(FlowConfig {
            enabled: 1,
            tunnels: 1,
            pending: 1,
            ..FlowConfig::default()
        })
        .unwrap();
    fx.dp.add_flow_port(lo).unwrap();
    fx
}

/// The masqueraded flow's packets: from the VM, and as they leave the host.
fn from_vm(ttl: u8, payload: &[u8]) -> Vec<u8> {
    udp4(VM_MAC, HOST_MAC, (VM, 5000), (REMOTE, 53), ttl, payload)
}

fn masqueraded_out(payload: &[u8]) -> Vec<u8> {
    udp4(
        OUR_MAC,
        NEXT_HOP_MAC,
        (PUBLIC, 40000),
        (REMOTE, 53),
        63,
        payload,
    )
}

/// [`offloading`] with one masqueraded UDP flow (VM:5000 → REMOTE:53 leaving as
/// PUBLIC:40000) in slot 3.
fn masqueraded(role: PortRole) -> (Fixture, [FlowKey; 2]) {
    let mut fx = offloading(role);
    let lo = fx.ifindex;
    let orig = key_of(&from_vm(64, b""));
    let reply = key_of(&udp4(
        PEER_MAC,
        HOST_MAC,
        (REMOTE, 53),
        (PUBLIC, 40000),
        64,
        b"",
    ));
    let keys = [orig, reply];
    let state = FlowState {
        dirs: [
            dir_to(&keys, ORIGINAL, lo, lo, DIR_SNAT),
            dir_to(&keys, REPLY, lo, lo, DIR_DNAT),
        ],
        generation: 7,
        proto: 17,
        family: 4,
        ..FlowState::default()
    };
    fx.dp
        .insert_flow(3, &keys, &state, FlowLive::promoted(&state, now()))
        .unwrap();
    (fx, keys)
}

fn counters(fx: &Fixture) -> [u64; FlowCounter::COUNT] {
    fx.dp.flow_counters().unwrap()
}

fn moved(before: &[u64; FlowCounter::COUNT], fx: &Fixture, c: FlowCounter) -> u64 {
    counters(fx)[c as usize] - before[c as usize]
}

/// Promotes the direction the way the kernel would let it: the packet passed while pending,
/// then seen leaving the kernel by the tc egress program.
fn drain(fx: &mut Fixture, role: PortRole, passed: &[u8], leaving: &[u8]) {
    let lo = fx.ifindex;
    let out = fx.dp.test_run(role, passed, lo, 1).unwrap();
    assert_eq!(out.action, Action::Pass as u32, "pending: the slow path's");
    assert_eq!(out.frame, passed, "passed untouched");
    fx.dp.test_run_flow_exit(leaving).unwrap();
    // Seen leaving is gone once the egress hook's grace has passed.
    std::thread::sleep(std::time::Duration::from_nanos(
        xnic_common::flow::EXIT_GRACE_NS,
    ));
}

#[test]
fn a_masqueraded_flow_is_forwarded_in_both_directions_once_its_slow_packets_left() {
    let (mut fx, keys) = masqueraded(PortRole::Vm);
    let lo = fx.ifindex;
    let first = from_vm(64, b"seq-1");
    let first_out = masqueraded_out(b"seq-1");
    let before = counters(&fx);
    drain(&mut fx, PortRole::Vm, &first, &first_out);
    assert_eq!(moved(&before, &fx, FlowCounter::SlowPending), 1);
    assert_eq!(moved(&before, &fx, FlowCounter::ExitSeen), 1);

    let second = from_vm(64, b"seq-2");
    let out = fx.dp.test_run(PortRole::Vm, &second, lo, 1).unwrap();
    assert_eq!(out.action, Action::Redirect as u32);
    assert_eq!(
        out.frame,
        masqueraded_out(b"seq-2"),
        "source NAT, TTL, MACs and both checksums, byte for byte"
    );
    assert_eq!(
        out.tag.len(),
        4,
        "the device map's program learns the flow from the tag in front"
    );
    assert_eq!(moved(&before, &fx, FlowCounter::PromoteDrained), 1);
    assert_eq!(moved(&before, &fx, FlowCounter::Forwarded), 1);
    let live = fx.dp.flow_live(3).unwrap();
    assert_eq!(live.dirs[ORIGINAL].mode, Mode::Active as u8);
    assert_eq!(live.dirs[ORIGINAL].packets, 1);
    assert_eq!(live.dirs[ORIGINAL].bytes, second.len() as u64);
    assert_eq!(live.dirs[ORIGINAL].fast_sent, 1);
    assert_eq!(
        live.dirs[REPLY].mode,
        Mode::Pending as u8,
        "each direction drains alone"
    );
    // The table as the daemon lists it: the flow, both keys, what it did.
    let table = fx.dp.flow_table().unwrap();
    assert_eq!(table.len(), 1);
    assert_eq!((table[0].slot, table[0].keys), (3, keys));
    assert_eq!(table[0].live.dirs[ORIGINAL].packets, 1);
    fx.dp.remove_flow(3, &keys).unwrap();
    assert!(fx.dp.flow_table().unwrap().is_empty());
    let out = fx.dp.test_run(PortRole::Vm, &second, lo, 1).unwrap();
    assert_eq!(
        (out.action, out.frame),
        (Action::Pass as u32, second.clone()),
        "removed: the slow path's again"
    );

    // The reply direction arrives on an uplink.
    let (mut fx, _) = masqueraded(PortRole::Uplink);
    let lo = fx.ifindex;
    let answer = |p: &[u8]| udp4(PEER_MAC, HOST_MAC, (REMOTE, 53), (PUBLIC, 40000), 60, p);
    let back = |p: &[u8]| udp4(OUR_MAC, NEXT_HOP_MAC, (REMOTE, 53), (VM, 5000), 59, p);
    drain(&mut fx, PortRole::Uplink, &answer(b"a1"), &back(b"a1"));
    let out = fx
        .dp
        .test_run(PortRole::Uplink, &answer(b"a2"), lo, 1)
        .unwrap();
    assert_eq!(out.action, Action::Redirect as u32);
    assert_eq!(out.frame, back(b"a2"), "destination NAT back to the VM");
}

#[test]
fn packets_the_fast_path_does_not_carry_pass_untouched() {
    let (mut fx, _) = masqueraded(PortRole::Vm);
    let lo = fx.ifindex;
    let first = from_vm(64, b"x");
    let first_out = masqueraded_out(b"x");
    drain(&mut fx, PortRole::Vm, &first, &first_out);
    let before = counters(&fx);
    let pass = |fx: &mut Fixture, frame: &[u8]| {
        let out = fx.dp.test_run(PortRole::Vm, frame, lo, 1).unwrap();
        assert_eq!(out.action, Action::Pass as u32, "{frame:02x?}");
        assert_eq!(out.frame, frame, "left as it was");
    };
    // No flow: another port.
    pass(
        &mut fx,
        &udp4(VM_MAC, HOST_MAC, (VM, 5001), (REMOTE, 53), 64, b"x"),
    );
    assert_eq!(moved(&before, &fx, FlowCounter::Missed), 1);
    // An ICMP error about the flow is the kernel's (it is not the flow's tuple).
    let mut icmp = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, HOST_MAC)
        .ipv4(VM, REMOTE, 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ))
        .write(&mut icmp, &first[14..42])
        .unwrap();
    pass(&mut fx, &icmp);
    // The TTL runs out here: the kernel answers time exceeded.
    pass(&mut fx, &from_vm(1, b"x"));
    assert_eq!(moved(&before, &fx, FlowCounter::TtlExpired), 1);
    // Larger than the next hop takes.
    pass(&mut fx, &from_vm(64, &[0u8; 1480]));
    assert_eq!(moved(&before, &fx, FlowCounter::TooBig), 1);
    // Offload off: nothing is looked up.
    let config = fx.dp.flow_config().unwrap();
    fx.dp
        .set_flow_config(FlowConfig {
            enabled: 0,
            ..config
        })
        .unwrap();
    let before = counters(&fx);
    pass(&mut fx, &first);
    assert_eq!(counters(&fx), before);
}

fn tcp4(
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    seq: u32,
    ack: u32,
    fin: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ethernet2(VM_MAC, HOST_MAC)
        .ipv4(src.0, dst.0, 64)
        .tcp(src.1, dst.1, seq, 1000)
        .ack(ack);
    let b = if fin { b.fin() } else { b };
    b.write(&mut out, payload).unwrap();
    out
}

#[test]
fn a_tcp_flow_leaves_on_a_fin_or_a_segment_outside_its_window() {
    for (case, seq, fin, why) in [
        ("fin", 1100, true, Leave::Fin),
        ("far ahead", 1100 + 10_000_000, false, Leave::OutOfWindow),
    ] {
        let mut fx = offloading(PortRole::Vm);
        let lo = fx.ifindex;
        let seg = |seq, fin, p: &[u8]| tcp4((VM, 40000), (REMOTE, 443), seq, 5000, fin, p);
        let keys = [
            key_of(&seg(0, false, b"")),
            key_of(&seg(0, false, b"")).reversed(),
        ];
        let state = FlowState {
            dirs: [
                dir_to(&keys, ORIGINAL, lo, lo, 0),
                dir_to(&keys, REPLY, lo, lo, 0),
            ],
            generation: 1,
            proto: 6,
            family: 4,
            ..FlowState::default()
        };
        fx.dp
            .insert_flow(0, &keys, &state, FlowLive::promoted(&state, now()))
            .unwrap();
        let mut out_of = seg(1000, false, &[7u8; 100]);
        // What leaves the kernel: the same segment, next hop's MACs, one hop less.
        let mut leaving = out_of.clone();
        leaving[0..6].copy_from_slice(&NEXT_HOP_MAC);
        leaving[6..12].copy_from_slice(&OUR_MAC);
        drain(&mut fx, PortRole::Vm, &out_of, &leaving);
        out_of = seg(1100, false, &[8u8; 100]);
        let out = fx.dp.test_run(PortRole::Vm, &out_of, lo, 1).unwrap();
        assert_eq!(out.action, Action::Redirect as u32, "{case}: in the window");
        let h = PacketHeaders::from_ethernet_slice(&out.frame).unwrap();
        assert_eq!(h.net.unwrap().ipv4_ref().unwrap().0.time_to_live, 63);
        // The other side answers (still promoting: to the slow path), so the window it
        // announced is known.
        let answer = tcp4((REMOTE, 443), (VM, 40000), 5000, 1200, false, b"");
        let out = fx.dp.test_run(PortRole::Vm, &answer, lo, 1).unwrap();
        assert_eq!(
            out.action,
            Action::Pass as u32,
            "{case}: the answer promotes"
        );

        let before = counters(&fx);
        let leave = seg(seq + 100, fin, b"");
        let out = fx.dp.test_run(PortRole::Vm, &leave, lo, 1).unwrap();
        assert_eq!(out.action, Action::Pass as u32, "{case}: to conntrack");
        assert_eq!(out.frame, leave, "{case}: untouched");
        assert_eq!(fx.dp.flow_live(0).unwrap().leave, why as u8, "{case}");
        // A frame is still in flight on the fast path (the device map never flushed in a
        // test run), so the packet goes behind it through the CPU map; with no queue there
        // it goes up here, counted.
        assert_eq!(moved(&before, &fx, FlowCounter::NoCpuQueue), 1, "{case}");
        // Everything after it follows it to the slow path.
        let after = seg(seq + 100, false, b"");
        let out = fx.dp.test_run(PortRole::Vm, &after, lo, 1).unwrap();
        assert_eq!(out.action, Action::Pass as u32, "{case}: still leaving");
    }
}

const BEHIND_TUNNEL: [u8; 4] = [10, 200, 0, 5];

/// A fixture with a VXLAN tunnel in slot 5 and one flow through it in slot 11: a host behind
/// the tunnel (BEHIND_TUNNEL:7000) talks to the VM (VM:8000), no NAT.
fn tunnelled(role: PortRole) -> (Fixture, Tunnel) {
    let (mut fx, _) = masqueraded(role);
    let lo = fx.ifindex;
    let tunnel = Tunnel {
        vni: 42,
        local: [192, 0, 2, 1],
        remote: [192, 0, 2, 254],
        src_mac: OUR_MAC,
        dst_mac: NEXT_HOP_MAC,
        out_ifindex: lo,
        dst_port: 4789,
        src_port_min: 32768,
        src_port_max: 61000,
        ttl: 64,
        valid: 1,
        ..Tunnel::default()
    };
    fx.dp.set_tunnel(5, tunnel).unwrap();
    let from_tunnel = key_of(&udp4(
        PEER_MAC,
        HOST_MAC,
        (BEHIND_TUNNEL, 7000),
        (VM, 8000),
        64,
        b"",
    ));
    let keys = [
        FlowKey {
            vni: 42,
            ..from_tunnel
        },
        from_tunnel.reversed(),
    ];
    let mut unwrap = dir_to(&keys, ORIGINAL, lo, lo, DIR_DECAP);
    unwrap.tunnel = 5;
    let mut wrap = dir_to(&keys, REPLY, lo, lo, DIR_ENCAP);
    wrap.tunnel = 5;
    wrap.mtu = 1450;
    let state = FlowState {
        dirs: [unwrap, wrap],
        generation: 9,
        proto: 17,
        family: 4,
        ..FlowState::default()
    };
    fx.dp
        .insert_flow(11, &keys, &state, FlowLive::promoted(&state, now()))
        .unwrap();
    (fx, tunnel)
}

/// `inner` wrapped as tunnel `t` wraps it (UDP source port and IP id as given).
fn wrap(t: &Tunnel, inner: &[u8], src_port: u16, ip_id: u16) -> Vec<u8> {
    let mut o = OuterV4([0; VXLAN_V4_OVERHEAD]);
    xnic_common::rewrite::vxlan_v4(&mut o, t, inner.len(), src_port, ip_id);
    [&o.0[..], inner].concat()
}

#[test]
fn a_flow_inside_vxlan_is_unwrapped_and_one_going_out_is_wrapped() {
    let (mut fx, tunnel) = tunnelled(PortRole::Uplink);
    let lo = fx.ifindex;
    // Wrapped as the remote end sends it: from its address to ours.
    let from_remote = Tunnel {
        local: tunnel.remote,
        remote: tunnel.local,
        src_mac: PEER_MAC,
        dst_mac: HOST_MAC,
        ..tunnel
    };
    let inner = |p: &[u8]| udp4(PEER_MAC, HOST_MAC, (BEHIND_TUNNEL, 7000), (VM, 8000), 64, p);
    let unwrapped = |p: &[u8]| {
        udp4(
            OUR_MAC,
            NEXT_HOP_MAC,
            (BEHIND_TUNNEL, 7000),
            (VM, 8000),
            63,
            p,
        )
    };
    drain(
        &mut fx,
        PortRole::Uplink,
        &wrap(&from_remote, &inner(b"1"), 50000, 1),
        &unwrapped(b"1"),
    );
    let out = fx
        .dp
        .test_run(
            PortRole::Uplink,
            &wrap(&from_remote, &inner(b"2"), 50000, 2),
            lo,
            1,
        )
        .unwrap();
    assert_eq!(out.action, Action::Redirect as u32);
    assert_eq!(
        out.frame,
        unwrapped(b"2"),
        "unwrapped and forwarded to the VM"
    );

    // From another remote end, or in another network: the kernel's, as it came.
    for stranger in [
        Tunnel {
            local: [203, 0, 113, 9],
            ..from_remote
        },
        Tunnel {
            vni: 43,
            ..from_remote
        },
    ] {
        let wrapped = wrap(&stranger, &inner(b"3"), 50000, 3);
        let out = fx.dp.test_run(PortRole::Uplink, &wrapped, lo, 1).unwrap();
        assert_eq!(out.action, Action::Pass as u32);
        assert_eq!(out.frame, wrapped);
    }

    // The VM's answer goes into the tunnel.
    let (mut fx, tunnel) = tunnelled(PortRole::Vm);
    let lo = fx.ifindex;
    let answer = |p: &[u8]| udp4(VM_MAC, HOST_MAC, (VM, 8000), (BEHIND_TUNNEL, 7000), 64, p);
    let routed = |p: &[u8]| {
        udp4(
            OUR_MAC,
            NEXT_HOP_MAC,
            (VM, 8000),
            (BEHIND_TUNNEL, 7000),
            63,
            p,
        )
    };
    drain(
        &mut fx,
        PortRole::Vm,
        &answer(b"1"),
        &wrap(&tunnel, &routed(b"1"), 40000, 9),
    );
    let out = fx.dp.test_run(PortRole::Vm, &answer(b"2"), lo, 1).unwrap();
    assert_eq!(out.action, Action::Redirect as u32);
    // The UDP source port comes from the flow's hash, the IP id from its packet count: take
    // both from what came out, and check everything else byte for byte.
    let f = &out.frame;
    let src_port = u16::from_be_bytes([f[34], f[35]]);
    let ip_id = u16::from_be_bytes([f[18], f[19]]);
    assert!((32768..61000).contains(&src_port));
    assert_eq!(*f, wrap(&tunnel, &routed(b"2"), src_port, ip_id));
}

#[test]
fn an_ipv6_tcp_flow_behind_a_virtual_ip_answers_from_it() {
    let mut fx = offloading(PortRole::Vm);
    let lo = fx.ifindex;
    let vm: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let client: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    let vip: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    let seg = |mac: ([u8; 6], [u8; 6]),
               src: ([u8; 16], u16),
               dst: ([u8; 16], u16),
               hop: u8,
               seq: u32,
               p: &[u8]| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(mac.0, mac.1)
            .ipv6(src.0, dst.0, hop)
            .tcp(src.1, dst.1, seq, 2000)
            .ack(77)
            .write(&mut out, p)
            .unwrap();
        out
    };
    // The client dialled VIP:80; DNAT sent it to VM:8080.
    let orig = key_of(&seg(
        (PEER_MAC, HOST_MAC),
        (client, 1234),
        (vip, 80),
        64,
        0,
        b"",
    ));
    let reply = key_of(&seg(
        (VM_MAC, HOST_MAC),
        (vm, 8080),
        (client, 1234),
        64,
        0,
        b"",
    ));
    let keys = [orig, reply];
    let state = FlowState {
        dirs: [
            dir_to(&keys, ORIGINAL, 9999, lo, DIR_DNAT),
            // The answer leaves by `lo` too (the test run's only device).
            dir_to(&keys, REPLY, lo, lo, DIR_SNAT),
        ],
        generation: 2,
        proto: 6,
        family: 6,
        ..FlowState::default()
    };
    fx.dp
        .insert_flow(1, &keys, &state, FlowLive::promoted(&state, now()))
        .unwrap();
    let answer = |seq, p: &[u8]| seg((VM_MAC, HOST_MAC), (vm, 8080), (client, 1234), 64, seq, p);
    let from_vip = |seq, p: &[u8]| {
        seg(
            (OUR_MAC, NEXT_HOP_MAC),
            (vip, 80),
            (client, 1234),
            63,
            seq,
            p,
        )
    };
    drain(
        &mut fx,
        PortRole::Vm,
        &answer(500, b"hello"),
        &from_vip(500, b"hello"),
    );
    let out = fx
        .dp
        .test_run(PortRole::Vm, &answer(505, b"world"), lo, 1)
        .unwrap();
    assert_eq!(out.action, Action::Redirect as u32);
    assert_eq!(
        out.frame,
        from_vip(505, b"world"),
        "source NAT to the virtual IP, hop limit, checksum"
    );
}

#[test]
fn the_flow_table_is_as_large_as_configured_and_keeps_its_size_when_adopted() {
    let instance = xnic_tests::unique_name();
    let dp = xnic::dataplane::Dataplane::open_sized(&instance, 3, 1000).unwrap();
    assert_eq!(dp.flow_slots().unwrap(), 1000);
    drop(dp);
    // A restart with another size adopts the pinned table as it is.
    let dp = xnic::dataplane::Dataplane::open_sized(&instance, 3, 5000).unwrap();
    assert_eq!(dp.flow_slots().unwrap(), 1000);
    drop(dp);
    xnic::dataplane::teardown(&instance).unwrap();
}
