//! The team step's pure parts: the GCRA bucket admits the allocated rate and no more, the
//! member pick follows the VM's placement, and a member the kernel found dead is passed over
//! for the placement's fallbacks.

use proptest::prelude::*;
use xnic_common::{
    team::{
        Egress, FLOW_HASH_MEMBER, NO_FALLBACK, NO_MEMBER, VM_TEAM_SHED, VmTeam, admit, cost_ns,
        member_down, over_rate_reason, pick, rate_fields, usable_member,
    },
    verdict::Reason,
    xmit::target_dead,
};

/// Runs the bucket over frames of `len` bytes offered every `gap_ns` for `total_ns`;
/// returns the bytes admitted.
fn admitted(rate: u64, burst: u64, len: u64, gap_ns: u64, total_ns: u64) -> u64 {
    let (per_byte, burst_ns) = rate_fields(rate, burst);
    let mut tat = 0;
    let mut bytes = 0;
    let mut now = 1_000_000_000;
    let end = now + total_ns;
    while now < end {
        if let Some(next) = admit(tat, now, cost_ns(per_byte, len), burst_ns) {
            tat = next;
            bytes += len;
        }
        now += gap_ns;
    }
    bytes
}

#[test]
fn twice_the_rate_offered_admits_the_rate() {
    // 2.5 MB/s (20 Mbit/s) allocation, 1000-byte frames offered at 5 MB/s for 10 s.
    let got = admitted(2_500_000, 16 * 1024, 1000, 200_000, 10_000_000_000);
    let want = 2_500_000 * 10 + 16 * 1024;
    assert!(got.abs_diff(want) <= 2000, "admitted {got}, want ≈{want}");
}

#[test]
fn an_idle_bucket_admits_one_burst_at_once() {
    let (per_byte, burst_ns) = rate_fields(1_000_000, 10_000);
    let mut tat = 0;
    let mut n = 0;
    // Back-to-back 1000-byte frames at one instant: the burst and the frame that starts it.
    while let Some(next) = admit(tat, 5_000_000_000, cost_ns(per_byte, 1000), burst_ns) {
        tat = next;
        n += 1;
    }
    assert_eq!(n, 11);
}

#[test]
fn pick_follows_the_placement() {
    let mut vm = VmTeam {
        team: 0,
        member: 2,
        ..VmTeam::default()
    };
    assert_eq!(pick(&vm, 10, Some(1)), Egress::Member(2));
    vm.member = FLOW_HASH_MEMBER;
    assert_eq!(pick(&vm, 10, Some(1)), Egress::Member(1));
    assert_eq!(
        pick(&vm, 10, Some(NO_MEMBER)),
        Egress::Drop(Reason::NoUplink)
    );
    vm.member = NO_MEMBER;
    assert_eq!(pick(&vm, 10, None), Egress::Drop(Reason::NoUplink));
    vm.member = 0;
    vm.pause_until_ns = 20;
    assert_eq!(pick(&vm, 10, None), Egress::Drop(Reason::FailoverPause));
    assert_eq!(pick(&vm, 20, None), Egress::Member(0));
    vm.ns_per_byte_q16 = u64::MAX;
    assert_eq!(pick(&vm, 30, None), Egress::Drop(Reason::PriorityShed));
    assert_eq!(over_rate_reason(&vm), Reason::OverAllocation);
    vm.flags = VM_TEAM_SHED;
    assert_eq!(over_rate_reason(&vm), Reason::PriorityShed);
}

proptest! {
    #[test]
    fn the_bucket_never_admits_more_than_rate_plus_burst(
        rate in 125u64..2_000_000_000,
        burst in 1u64..1_000_000,
        len in 60u64..9000,
        gap_ns in 1u64..100_000,
    ) {
        let total = 50_000_000; // 50 ms
        let got = admitted(rate, burst, len, gap_ns, total);
        let limit = rate as u128 * total as u128 / 1_000_000_000 + burst as u128 + len as u128;
        // Costs round up, so the bound is exact.
        prop_assert!(got as u128 <= limit, "{got} > {limit}");
    }

    #[test]
    fn costs_do_not_overflow(rate in 1u64..u64::MAX / 2, len in 0u64..u64::MAX / 2) {
        let (per_byte, _) = rate_fields(rate, 1);
        let _ = cost_ns(per_byte, len);
    }
}

#[test]
fn a_member_marked_dead_after_it_was_put_in_use_is_down() {
    // Marked before the daemon (re)started using it: old news.
    assert!(!member_down(100, 200));
    assert!(member_down(300, 200));
    assert!(!member_down(0, 200));
    // Not in use: never asked, never down.
    assert!(!member_down(300, 0));
}

#[test]
fn a_dead_member_gives_way_to_the_first_fallback_that_is_not() {
    let vm = VmTeam {
        team: 0,
        member: 0,
        fallback: [2, 1, NO_FALLBACK, NO_FALLBACK],
        ..VmTeam::default()
    };
    let dead = |set: &'static [u32]| move |m: u32| set.contains(&m);
    assert_eq!(usable_member(&vm, 0, dead(&[])), Some(0));
    assert_eq!(usable_member(&vm, 0, dead(&[0])), Some(2));
    assert_eq!(usable_member(&vm, 0, dead(&[0, 2])), Some(1));
    assert_eq!(usable_member(&vm, 0, dead(&[0, 1, 2])), None);
    // No fallbacks: nothing to go to.
    assert_eq!(usable_member(&VmTeam::default(), 3, dead(&[3])), None);
}

#[test]
fn only_a_flush_that_could_send_nothing_marks_its_target_dead() {
    assert!(target_dead(0, -6)); // ENXIO: a veth whose peer is down
    assert!(target_dead(0, -100)); // ENETDOWN
    assert!(!target_dead(3, -6)); // some frames went: not dead
    assert!(!target_dead(0, 0)); // a full ring: congestion
    assert!(!target_dead(0, -28)); // ENOSPC
}
