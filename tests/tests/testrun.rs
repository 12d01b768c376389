//! The real XDP programs, loaded the way the daemon loads them, run on crafted frames with
//! BPF_PROG_TEST_RUN: every kind of frame gets its defined verdict and lands in its reason
//! and shape counters, with exact byte counts.

use etherparse::PacketBuilder;
use xnic_common::{
    maps::{Counter, NO_VM, PortEntry, PortRole, VmCounters},
    parse::Shape,
    verdict::{Action, Reason},
};
use xnic_tests::programs::{Fixture, Moved, PEER_MAC, PORT_SLOT, Run, VM_MAC, VM_SLOT, one};

/// Asserts the frame got `action`, exactly one `reason`, exactly `shapes`.
fn expect(m: &Moved, frame: &[u8], action: Action, reason: Reason, shapes: &[Shape]) {
    assert_eq!(m.action, action as u32, "action for {m:?}");
    assert_eq!(m.reasons, vec![(reason, one(frame.len()))], "reason");
    let want: Vec<(Shape, Counter)> = shapes.iter().map(|s| (*s, one(frame.len()))).collect();
    assert_eq!(m.shapes, want, "shapes");
}

fn udp_v4(src_mac: [u8; 6], dst_mac: [u8; 6], payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4([10, 77, 0, 10], [10, 77, 0, 1], 64)
        .udp(40000, 9000);
    let mut out = Vec::new();
    b.write(&mut out, &vec![7u8; payload]).unwrap();
    out
}

fn udp_v4_vlan(tags: &[u16], payload: usize) -> Vec<u8> {
    let mut f = udp_v4(VM_MAC, PEER_MAC, payload);
    // Insert tags after the MACs: outer 802.1ad when stacked, 802.1Q innermost.
    let mut tagged = f[..12].to_vec();
    for (i, vid) in tags.iter().enumerate() {
        let tpid: u16 = if i + 1 < tags.len() { 0x88a8 } else { 0x8100 };
        tagged.extend(tpid.to_be_bytes());
        tagged.extend(vid.to_be_bytes());
    }
    tagged.extend_from_slice(&f.split_off(12));
    tagged
}

#[test]
fn vm_port_verdicts_and_shapes() {
    let mut fx = Fixture::new(PortRole::Vm);
    let vm = PortRole::Vm;

    let plain = udp_v4(VM_MAC, PEER_MAC, 64);
    let m = fx.run(vm, &plain);
    expect(&m, &plain, Action::Pass, Reason::FromVm, &[]);
    assert_eq!(m.vm.from_vm, one(plain.len()));

    let vlan = udp_v4_vlan(&[100], 64);
    expect(
        &fx.run(vm, &vlan),
        &vlan,
        Action::Pass,
        Reason::FromVm,
        &[Shape::Vlan],
    );

    let qinq = udp_v4_vlan(&[100, 200], 64);
    expect(
        &fx.run(vm, &qinq),
        &qinq,
        Action::Pass,
        Reason::FromVm,
        &[Shape::QinQ],
    );

    let three = udp_v4_vlan(&[100, 200, 300], 64);
    expect(
        &fx.run(vm, &three),
        &three,
        Action::Pass,
        Reason::FromVm,
        &[Shape::QinQ, Shape::VlanOverflow],
    );

    // IPv4 with 8 bytes of options (two NOPs padded): IHL 7.
    let mut opts = udp_v4(VM_MAC, PEER_MAC, 64);
    opts.splice(34..34, [1u8; 8]);
    opts[14] = 0x47;
    let total = u16::from_be_bytes([opts[16], opts[17]]) + 8;
    opts[16..18].copy_from_slice(&total.to_be_bytes());
    expect(
        &fx.run(vm, &opts),
        &opts,
        Action::Pass,
        Reason::FromVm,
        &[Shape::Ipv4Options],
    );

    // A later IPv4 fragment (offset 185 × 8).
    let mut frag = udp_v4(VM_MAC, PEER_MAC, 64);
    frag[20] = 0x20; // more fragments
    frag[21] = 185;
    expect(
        &fx.run(vm, &frag),
        &frag,
        Action::Pass,
        Reason::FromVm,
        &[Shape::Fragment],
    );

    // IPv6 with hop-by-hop and destination options before UDP.
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, PEER_MAC)
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .udp(1, 2)
        .write(&mut v6, &[0u8; 32])
        .unwrap();
    let chain = [[60u8, 0, 1, 4, 0, 0, 0, 0], [17u8, 0, 1, 4, 0, 0, 0, 0]];
    v6[20] = 0; // next header: hop-by-hop
    let mut with_ext = v6[..54].to_vec();
    with_ext.extend(chain.concat());
    with_ext.extend_from_slice(&v6[54..]);
    let plen = u16::from_be_bytes([with_ext[18], with_ext[19]]) + 16;
    with_ext[18..20].copy_from_slice(&plen.to_be_bytes());
    expect(
        &fx.run(vm, &with_ext),
        &with_ext,
        Action::Pass,
        Reason::FromVm,
        &[Shape::Ipv6ExtHeaders],
    );

    // Nine destination-options headers: longer than the parser walks.
    let mut long = v6[..54].to_vec();
    long[20] = 60;
    for i in 0..9 {
        long.extend([if i == 8 { 17 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
    }
    long.extend_from_slice(&v6[54..]);
    let plen = u16::from_be_bytes([long[18], long[19]]) + 72;
    long[18..20].copy_from_slice(&plen.to_be_bytes());
    expect(
        &fx.run(vm, &long),
        &long,
        Action::Pass,
        Reason::FromVm,
        &[Shape::Ipv6ExtHeaders, Shape::Ipv6ExtOverflow],
    );

    // VXLAN is recognised as a tunnel.
    let mut vx = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, PEER_MAC)
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(5555, 4789)
        .write(&mut vx, &[0u8; 50])
        .unwrap();
    expect(
        &fx.run(vm, &vx),
        &vx,
        Action::Pass,
        Reason::FromVm,
        &[Shape::Tunnel],
    );

    // ARP.
    let mut arp = vec![0xff; 6];
    arp.extend(VM_MAC);
    arp.extend([0x08, 0x06]);
    arp.extend([0u8; 46]);
    expect(
        &fx.run(vm, &arp),
        &arp,
        Action::Pass,
        Reason::FromVm,
        &[Shape::NonIp],
    );

    // A 9000-byte jumbo frame: part of it sits in fragments of the XDP buffer.
    let jumbo = udp_v4(VM_MAC, PEER_MAC, 9000 - 42);
    assert_eq!(jumbo.len(), 9000);
    expect(
        &fx.run(vm, &jumbo),
        &jumbo,
        Action::Pass,
        Reason::FromVm,
        &[Shape::Jumbo],
    );
}

#[test]
fn broken_and_spoofed_frames_are_dropped_and_counted_against_the_vm() {
    let mut fx = Fixture::new(PortRole::Vm);
    let vm = PortRole::Vm;

    let mut truncated = udp_v4(VM_MAC, PEER_MAC, 64);
    truncated.truncate(40); // IPv4 total length says 92
    let m = fx.run(vm, &truncated);
    expect(&m, &truncated, Action::Drop, Reason::Truncated, &[]);
    assert_eq!(m.vm.dropped, one(truncated.len()));

    let short_l4 = udp_v4(VM_MAC, PEER_MAC, 0)[..38].to_vec(); // UDP header cut
    let mut short_l4 = short_l4;
    short_l4[17] = 24; // IP total length consistent with the 24 bytes left
    expect(
        &fx.run(vm, &short_l4),
        &short_l4,
        Action::Drop,
        Reason::Truncated,
        &[],
    );

    let mut malformed = udp_v4(VM_MAC, PEER_MAC, 64);
    malformed[14] = 0x44; // IHL 4
    expect(
        &fx.run(vm, &malformed),
        &malformed,
        Action::Drop,
        Reason::Malformed,
        &[],
    );

    let mut bad_version = udp_v4(VM_MAC, PEER_MAC, 64);
    bad_version[14] = 0x65;
    expect(
        &fx.run(vm, &bad_version),
        &bad_version,
        Action::Drop,
        Reason::Malformed,
        &[],
    );

    let spoofed = udp_v4([0x02, 0xee, 0, 0, 0, 1], PEER_MAC, 64);
    let m = fx.run(vm, &spoofed);
    expect(&m, &spoofed, Action::Drop, Reason::SpoofedMac, &[]);
    assert_eq!(m.vm.dropped, one(spoofed.len()));
    assert_eq!(m.vm.from_vm, Counter::default());
}

#[test]
fn uplink_verdicts() {
    let mut fx = Fixture::new(PortRole::Uplink);
    let up = PortRole::Uplink;

    let to_vm = udp_v4(PEER_MAC, VM_MAC, 100);
    let m = fx.run(up, &to_vm);
    expect(&m, &to_vm, Action::Pass, Reason::ToVm, &[]);
    assert_eq!(m.vm.to_vm, one(to_vm.len()));

    let to_host = udp_v4(PEER_MAC, [0x02, 0x55, 0, 0, 0, 9], 100);
    let m = fx.run(up, &to_host);
    expect(&m, &to_host, Action::Pass, Reason::NotForVm, &[]);
    assert_eq!(m.vm, VmCounters::default());

    let bcast = udp_v4(PEER_MAC, [0xff; 6], 100);
    expect(
        &fx.run(up, &bcast),
        &bcast,
        Action::Pass,
        Reason::Multicast,
        &[],
    );

    let mut malformed = udp_v4(PEER_MAC, VM_MAC, 100);
    malformed[14 + 20 + 5] = 3; // UDP length 3
    let m = fx.run(up, &malformed);
    expect(&m, &malformed, Action::Drop, Reason::Malformed, &[]);
    assert_eq!(m.vm, VmCounters::default(), "uplink drops are not any VM's");
}

#[test]
fn frames_on_unknown_or_mismatched_ports_pass_and_are_counted() {
    let mut fx = Fixture::new(PortRole::Vm);
    let frame = udp_v4(VM_MAC, PEER_MAC, 64);
    let ifindex = fx.ifindex;
    // The uplink program on an interface whose entry says VM port: a stale attachment.
    let m = fx.run_on(PortRole::Uplink, &frame, ifindex, 0);
    expect(&m, &frame, Action::Pass, Reason::UnknownPort, &[]);
    // An interface with no port entry at all.
    fx.write(|i| {
        i.ports.remove(&ifindex);
    });
    let m = fx.run_on(PortRole::Vm, &frame, ifindex, 0);
    expect(&m, &frame, Action::Pass, Reason::UnknownPort, &[]);
}

/// A fixture whose port is in team 0: a VM port xnic switches, or member 1 of the team.
/// Member 0 is `lo` itself (in `TX_PORTS`, so redirects to it resolve).
fn teamed(role: PortRole) -> Fixture {
    use xnic_common::{
        maps::{PORT_SWITCH, PORT_TEAM},
        team::TeamEntry,
    };
    let mut fx = Fixture::new(role);
    let flags = if role == PortRole::Vm {
        PORT_SWITCH
    } else {
        PORT_SWITCH | PORT_TEAM
    };
    let mut entry = PortEntry::new(
        PORT_SLOT,
        if role == PortRole::Vm { VM_SLOT } else { NO_VM },
        role,
    );
    entry.flags = flags;
    entry.member = 1;
    if role == PortRole::Vm {
        entry.mac = VM_MAC;
    }
    let ifindex = fx.ifindex;
    fx.write(|i| {
        i.ports.insert(ifindex, entry);
    });
    fx.dp.set_switch_port(fx.ifindex, false).unwrap();
    let mut team = TeamEntry {
        rx_member: 0,
        seed: 1,
        ..TeamEntry::default()
    };
    team.ifindex[0] = fx.ifindex;
    team.ifindex[1] = fx.ifindex;
    fx.dp.set_team(0, team).unwrap();
    fx
}

#[test]
fn a_member_the_kernel_found_dead_is_passed_over_for_the_vms_fallback() {
    use xnic_common::team::{NO_FALLBACK, NO_MEMBER, VmTeam};
    let mut fx = teamed(PortRole::Vm);
    let vm = PortRole::Vm;
    let frame = udp_v4(VM_MAC, PEER_MAC, 100);
    fx.dp
        .set_vm_team(
            VM_SLOT,
            VmTeam {
                team: 0,
                member: 0,
                flood_member: NO_MEMBER,
                fallback: [1, NO_FALLBACK, NO_FALLBACK, NO_FALLBACK],
                ..VmTeam::default()
            },
        )
        .unwrap();
    // Both members in use since t=100.
    fx.write(|i| {
        i.member_up.insert(0, 100);
        i.member_up.insert(1, 100);
    });
    let per_member = |fx: &Fixture| fx.dp.counters().team_vm(VM_SLOT).unwrap();
    let sent_on = |fx: &mut Fixture| {
        let before = per_member(fx);
        let m = fx.run(vm, &frame);
        let after = per_member(fx);
        let member = (0..2).find(|&i| after[i].packets > before[i].packets);
        (m, member)
    };

    // A mark from before the member was put in use changes nothing.
    fx.dp.mark_member_down(0, 50).unwrap();
    let (m, member) = sent_on(&mut fx);
    expect(&m, &frame, Action::Redirect, Reason::ToUplink, &[]);
    assert_eq!(member, Some(0));

    // Marked after: the fallback carries it.
    fx.dp.mark_member_down(0, 200).unwrap();
    let (m, member) = sent_on(&mut fx);
    expect(&m, &frame, Action::Redirect, Reason::ToUplink, &[]);
    assert_eq!(member, Some(1));

    // The fallback dead too: no uplink.
    fx.dp.mark_member_down(1, 300).unwrap();
    let (m, member) = sent_on(&mut fx);
    expect(&m, &frame, Action::Drop, Reason::NoUplink, &[]);
    assert_eq!(member, None);

    // The daemon puts member 0 in use again: back on it.
    fx.write(|i| {
        i.member_up.insert(0, 400);
    });
    let (_, member) = sent_on(&mut fx);
    assert_eq!(member, Some(0));
}

#[test]
fn a_teamed_vms_frames_are_redirected_paced_held_or_dropped_with_their_reason() {
    use xnic_common::team::{NO_MEMBER, VM_TEAM_SHED, VmTeam, rate_fields};
    let mut fx = teamed(PortRole::Vm);
    let vm = PortRole::Vm;
    let frame = udp_v4(VM_MAC, PEER_MAC, 100);
    let placed = VmTeam {
        team: 0,
        member: 0,
        flood_member: NO_MEMBER,
        ..VmTeam::default()
    };

    fx.dp.set_vm_team(VM_SLOT, placed).unwrap();
    let m = fx.run(vm, &frame);
    expect(&m, &frame, Action::Redirect, Reason::ToUplink, &[]);
    assert_eq!(m.vm.from_vm, one(frame.len()));
    assert_eq!(
        fx.dp.counters().team_vm(VM_SLOT).unwrap()[0],
        one(frame.len())
    );

    // No usable uplink.
    fx.dp
        .set_vm_team(
            VM_SLOT,
            VmTeam {
                member: NO_MEMBER,
                ..placed
            },
        )
        .unwrap();
    let m = fx.run(vm, &frame);
    expect(&m, &frame, Action::Drop, Reason::NoUplink, &[]);
    assert_eq!(m.vm.dropped, one(frame.len()));

    // Held during a failover pause.
    fx.dp
        .set_vm_team(
            VM_SLOT,
            VmTeam {
                pause_until_ns: u64::MAX,
                ..placed
            },
        )
        .unwrap();
    let m = fx.run(vm, &frame);
    expect(&m, &frame, Action::Drop, Reason::FailoverPause, &[]);

    // An allocation of the smallest rate with a burst of one frame: back to back, the frame
    // the rate allows and the one the burst allows go, the next is over it; when the VM is
    // shed for a higher priority, that is the reason.
    let (ns_per_byte_q16, burst_ns) = rate_fields(125, frame.len() as u64);
    let allocated = VmTeam {
        ns_per_byte_q16,
        burst_ns,
        ..placed
    };
    fx.dp.set_vm_team(VM_SLOT, allocated).unwrap();
    for _ in 0..2 {
        expect(
            &fx.run(vm, &frame),
            &frame,
            Action::Redirect,
            Reason::ToUplink,
            &[],
        );
    }
    let m = fx.run(vm, &frame);
    expect(&m, &frame, Action::Drop, Reason::OverAllocation, &[]);
    assert_eq!(m.vm.dropped, one(frame.len()));
    fx.dp
        .set_vm_team(
            VM_SLOT,
            VmTeam {
                flags: VM_TEAM_SHED,
                ..allocated
            },
        )
        .unwrap();
    expect(
        &fx.run(vm, &frame),
        &frame,
        Action::Drop,
        Reason::PriorityShed,
        &[],
    );
}

#[test]
fn a_team_uplink_drops_its_own_vms_frames_and_group_frames_it_does_not_receive() {
    use xnic_common::team::TeamEntry;
    let mut fx = teamed(PortRole::Uplink);
    let up = PortRole::Uplink;

    // A local VM's frame coming back from the network.
    let looped = udp_v4(VM_MAC, PEER_MAC, 100);
    expect(
        &fx.run(up, &looped),
        &looped,
        Action::Drop,
        Reason::Looped,
        &[],
    );

    // Broadcasts: this port is member 1, the team receives on member 0.
    let bcast = udp_v4(PEER_MAC, [0xff; 6], 100);
    expect(
        &fx.run(up, &bcast),
        &bcast,
        Action::Drop,
        Reason::NotReceiver,
        &[],
    );
    // Made the receiver, it floods them to the VMs.
    let mut team = TeamEntry {
        rx_member: 1,
        seed: 1,
        ..TeamEntry::default()
    };
    team.ifindex[0] = fx.ifindex;
    team.ifindex[1] = fx.ifindex;
    fx.dp.set_team(0, team).unwrap();
    expect(
        &fx.run(up, &bcast),
        &bcast,
        Action::Redirect,
        Reason::Multicast,
        &[],
    );

    // Unicast for a VM from elsewhere is unaffected.
    let to_vm = udp_v4(PEER_MAC, VM_MAC, 100);
    let m = fx.run(up, &to_vm);
    assert_eq!(m.reasons, vec![(Reason::ToVm, one(to_vm.len()))]);
}

fn tcp_v4(payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(VM_MAC, PEER_MAC)
        .ipv4([10, 77, 0, 10], [10, 77, 0, 1], 64)
        .tcp(40000, 5201, 1000, 64240)
        .ack(1);
    let mut out = Vec::new();
    b.write(&mut out, &vec![7u8; payload]).unwrap();
    out
}

#[test]
fn a_shaped_vms_tcp_goes_up_to_its_class_and_shares_the_bucket_with_the_policed_rest() {
    use xnic_common::{
        shaper::{ShapeCounter, VM_TEAM_SHAPED, class_id},
        team::{NO_MEMBER, VmTeam, rate_fields},
    };
    const TC_ACT_OK: i32 = 0;
    const TC_ACT_SHOT: i32 = 2;
    const TC_ACT_REDIRECT: i32 = 7;
    let mut fx = teamed(PortRole::Vm);
    let vm = PortRole::Vm;
    let tcp = tcp_v4(100);
    let udp = udp_v4(VM_MAC, PEER_MAC, 100 + 12);
    assert_eq!(tcp.len(), udp.len());
    // The smallest rate with a burst of one frame: the bucket holds two frames back to back.
    let (ns_per_byte_q16, burst_ns) = rate_fields(125, tcp.len() as u64);
    let shaped = VmTeam {
        team: 0,
        member: 0,
        flood_member: NO_MEMBER,
        flags: VM_TEAM_SHAPED,
        ns_per_byte_q16,
        burst_ns,
        ..VmTeam::default()
    };
    fx.dp.set_vm_team(VM_SLOT, shaped).unwrap();

    // TCP is never dropped by the bucket: it goes up, counted as the VM's and its member's,
    // and fills the bucket on the way.
    for _ in 0..3 {
        let m = fx.run(vm, &tcp);
        expect(&m, &tcp, Action::Pass, Reason::ToShaper, &[]);
        assert_eq!(m.vm.from_vm, one(tcp.len()));
    }
    assert_eq!(
        fx.dp.counters().team_vm(VM_SLOT).unwrap()[0].packets,
        3,
        "counted on member 0"
    );
    // The rest of the VM's traffic gets what TCP left: nothing.
    let m = fx.run(vm, &udp);
    expect(&m, &udp, Action::Drop, Reason::OverAllocation, &[]);

    // At tc ingress, the TCP frame gets the VM's class and goes to member 0's egress; UDP is
    // left to the kernel.
    let before = fx.dp.counters().shaper().unwrap();
    let out = fx.dp.test_run_shaper(&tcp).unwrap();
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(out.priority, class_id(VM_SLOT));
    assert_eq!(fx.dp.test_run_shaper(&udp).unwrap().action, TC_ACT_OK);
    // No usable uplink by the time it gets there: dropped, and counted.
    fx.dp
        .set_vm_team(
            VM_SLOT,
            VmTeam {
                member: NO_MEMBER,
                ..shaped
            },
        )
        .unwrap();
    assert_eq!(fx.dp.test_run_shaper(&tcp).unwrap().action, TC_ACT_SHOT);
    let after = fx.dp.counters().shaper().unwrap();
    let moved = |c: ShapeCounter| after[c as usize] - before[c as usize];
    assert_eq!(moved(ShapeCounter::Queued), 1);
    assert_eq!(moved(ShapeCounter::Passed), 1);
    assert_eq!(moved(ShapeCounter::NoUplink), 1);

    // Strict: TCP is policed like everything else.
    fx.dp
        .set_vm_team(VM_SLOT, VmTeam { flags: 0, ..shaped })
        .unwrap();
    let m = fx.run(vm, &tcp);
    expect(&m, &tcp, Action::Drop, Reason::OverAllocation, &[]);
    assert_eq!(
        fx.dp.test_run_shaper(&tcp).unwrap().action,
        TC_ACT_OK,
        "a strict VM's frame is not the shaper's"
    );
}
