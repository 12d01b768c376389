//! The flow hash and the flow handover decision.

use proptest::prelude::*;
use xnic_common::{
    hash::flow_hash,
    parse::{Fragment, L3, Parsed},
    rss::{DRAIN_GRACE_NS, Handover, MAX_DRAIN_NS, handover, queued},
};

fn flow(src: [u8; 16], dst: [u8; 16], sp: u16, dp: u16, proto: u8) -> Parsed {
    Parsed {
        l3: L3::Ipv6,
        src_ip: src,
        dst_ip: dst,
        src_port: sp,
        dst_port: dp,
        ip_proto: proto,
        l4_offset: 54,
        ..Parsed::default()
    }
}

fn reverse(p: &Parsed) -> Parsed {
    Parsed {
        src_ip: p.dst_ip,
        dst_ip: p.src_ip,
        src_port: p.dst_port,
        dst_port: p.src_port,
        src_mac: p.dst_mac,
        dst_mac: p.src_mac,
        ..*p
    }
}

proptest! {
    #[test]
    fn symmetric_hash_is_the_same_both_ways(
        src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
        sp in any::<u16>(), dp in any::<u16>(), proto in prop::sample::select(vec![6u8, 17, 1, 47]),
        seed in any::<u32>(),
    ) {
        let p = flow(src, dst, sp, dp, proto);
        prop_assert_eq!(flow_hash(&p, seed, true), flow_hash(&reverse(&p), seed, true));
    }

    #[test]
    fn symmetric_hash_covers_non_ip_frames(a in any::<[u8; 6]>(), b in any::<[u8; 6]>(), seed in any::<u32>()) {
        let p = Parsed { src_mac: a, dst_mac: b, ..Parsed::default() };
        prop_assert_eq!(flow_hash(&p, seed, true), flow_hash(&reverse(&p), seed, true));
    }

    #[test]
    fn every_fragment_of_a_datagram_hashes_alike(
        src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), seed in any::<u32>(), sym in any::<bool>(),
    ) {
        // The first fragment carries ports, later ones do not: the hash must not use them.
        let first = Parsed { fragment: Fragment::First, ..flow(src, dst, 1234, 80, 17) };
        let later = Parsed { fragment: Fragment::Later, l4_offset: 0, src_port: 0, dst_port: 0, ..first };
        prop_assert_eq!(flow_hash(&first, seed, sym), flow_hash(&later, seed, sym));
    }
}

#[test]
fn ports_matter_for_tcp_and_udp_only() {
    let a = flow([1; 16], [2; 16], 1000, 80, 6);
    let b = Parsed {
        src_port: 1001,
        ..a
    };
    assert_ne!(flow_hash(&a, 7, false), flow_hash(&b, 7, false));
    let icmp_a = Parsed { ip_proto: 58, ..a };
    let icmp_b = Parsed { ip_proto: 58, ..b };
    assert_eq!(flow_hash(&icmp_a, 7, false), flow_hash(&icmp_b, 7, false));
}

#[test]
fn asymmetric_hash_tells_directions_apart() {
    let p = flow([1; 16], [2; 16], 1000, 80, 6);
    assert_ne!(flow_hash(&p, 7, false), flow_hash(&reverse(&p), 7, false));
}

#[test]
fn adjacent_flows_spread_evenly_over_buckets() {
    // 128 buckets, 128k flows differing only in source port and the last address byte:
    // every bucket within ±10 % of the mean.
    let mut buckets = [0u32; 128];
    for i in 0..128 * 1024u32 {
        let mut src = [10u8; 16];
        src[15] = (i >> 16) as u8;
        let p = flow(src, [20; 16], i as u16, 443, 6);
        buckets[(flow_hash(&p, 0x1234, true) & 127) as usize] += 1;
    }
    let mean = 1024.0;
    for (b, n) in buckets.iter().enumerate() {
        assert!((*n as f64 - mean).abs() < mean * 0.1, "bucket {b}: {n}");
    }
}

#[test]
fn handover_waits_for_queued_frames_and_the_grace_period() {
    let now = 10_000_000_000;
    assert_eq!(handover(3, 3, 5, 0, 0, now), Handover::Stay);
    // Drained long ago: move.
    assert_eq!(
        handover(3, 4, 0, now - DRAIN_GRACE_NS, 0, now),
        Handover::Switch
    );
    // Drained just now: the last frame may still be in the old CPU's backlog.
    assert_eq!(handover(3, 4, 0, now - 1_000, 0, now), Handover::Wait);
    // Frames queued: wait...
    assert_eq!(
        handover(3, 4, 2, now - 1_000_000, now - 1_000, now),
        Handover::Wait
    );
    // ...but not forever.
    assert_eq!(
        handover(3, 4, 2, now - 1_000_000, now - MAX_DRAIN_NS, now),
        Handover::ForceSwitch
    );
    // A fresh slot (never used) moves at once.
    assert_eq!(handover(0, 4, 0, 0, 0, now), Handover::Switch);
}

#[test]
fn queued_frames_survive_the_counts_wrapping_and_never_go_negative() {
    assert_eq!(queued(5, 5), 0);
    assert_eq!(queued(7, 5), 2);
    // Both counts wrap at 2^32; only their distance matters.
    assert_eq!(queued(3, u32::MAX - 1), 5);
    // Dequeues of frames an older dataplane's programs queued: nothing of this slot waits.
    assert_eq!(queued(5, 9), 0);
}
