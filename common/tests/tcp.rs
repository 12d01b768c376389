//! TCP window tracking (`xnic_common::tcp`) against a model of conntrack's rules: random
//! segment sequences in both directions of a connection picked up mid-stream. The fast path
//! must never accept a segment the model rejects, and must follow the same window. (The
//! model departs from the kernel in four places for a pickup, as the fast path does: see
//! `in_window`.)
//!
//! The model is written the way `nf_conntrack_proto_tcp.c`'s `tcp_in_window` reads (state
//! updated in place, the bounds as the kernel spells them), with sequence numbers kept as
//! 64-bit integers that never wrap, so wrap-around in the 32-bit code under test is checked
//! against arithmetic that has none.

use proptest::prelude::*;
use xnic_common::tcp::{self, OutOfWindow, Segment, TCP_ACK, TcpSeen, track};

/// One side as the kernel keeps it, in unwrapped sequence space.
#[derive(Clone, Copy, Debug, Default)]
struct Side {
    td_end: i64,
    td_maxend: i64,
    td_maxwin: i64,
    td_scale: u32,
    /// The fast path's [`tcp::UNSURE_END`]: picked up from its own segment, no new data
    /// seen since.
    unsure: bool,
}

/// A segment in unwrapped sequence space.
#[derive(Clone, Copy, Debug)]
struct Seg {
    seq: i64,
    ack: i64,
    sack: Option<i64>,
    win: u16,
    len: i64,
    has_ack: bool,
}

/// conntrack's `tcp_in_window` for a non-SYN segment (the fast path sees no others).
fn in_window(sender: &mut Side, receiver: &mut Side, s: &Seg) -> bool {
    let seq = s.seq;
    let end = s.seq + s.len;
    let mut ack = s.ack;
    let mut sack = s.ack;
    if s.has_ack
        && let Some(x) = s.sack
        && x > sack
    {
        sack = x;
    }
    let win = i64::from(s.win);
    let picked_up = sender.td_maxwin == 0;
    if picked_up {
        sender.unsure = true;
        let swin = win << sender.td_scale;
        sender.td_maxwin = if swin == 0 { 1 } else { swin };
        // The second difference from the kernel: a sender picked up after its receiver keeps
        // what the receiver's segments showed (its acknowledgement, its window's edge).
        if receiver.td_maxwin != 0 {
            sender.td_end = sender.td_end.max(end);
            sender.td_maxend = sender.td_maxend.max(end + sender.td_maxwin);
        } else {
            sender.td_end = end;
            sender.td_maxend = end + sender.td_maxwin;
        }
        if receiver.td_maxwin == 0 {
            receiver.td_end = sack;
            receiver.td_maxend = sack;
        } else if sack > receiver.td_end && sack <= receiver.td_end + i64::from(tcp::MAX_PICKUP_GAP)
        {
            // The third difference: the kernel takes only a keepalive's answer (one past the
            // end) this way; a receiver picked up from a retransmission has sent more.
            receiver.td_end = sack;
        }
    }
    if !s.has_ack {
        ack = receiver.td_end;
        sack = receiver.td_end;
    }
    let maxackwindow = sender.td_maxwin.max(66_000);
    // One bound differs from the kernel's, on purpose: until the receiver is seen, the
    // window it announced is unknown to a pickup, so the sender's upper bound is not checked
    // yet (conntrack, having seen the handshake, knows it).
    // The fourth difference: a receiver not seen yet, or picked up from a segment of its
    // own, may have sent more than the fast path knows of; until it sends new data, an
    // acknowledgement inside the window it was allowed moves its end.
    let sent_unseen = sack > receiver.td_end;
    let unsure_ok = (receiver.unsure || receiver.td_maxwin == 0) && sack <= receiver.td_maxend;
    let receiver_end = if sent_unseen { sack } else { receiver.td_end };
    let ok = (receiver.td_maxwin == 0
        || (seq <= sender.td_maxend && end >= sender.td_end - receiver.td_maxwin))
        && (!sent_unseen || unsure_ok)
        && sack >= receiver_end - maxackwindow;
    if !ok {
        return false;
    }
    receiver.td_end = receiver_end;
    if !picked_up && s.len > 0 && seq >= sender.td_end {
        sender.unsure = false;
    }
    let win = win << sender.td_scale;
    let swin = win + (sack - ack);
    sender.td_maxwin = sender.td_maxwin.max(swin);
    if end > sender.td_end {
        sender.td_end = end;
    }
    if receiver.td_maxwin != 0 && end > sender.td_maxend {
        receiver.td_maxwin += end - sender.td_maxend;
    }
    if sack + win > receiver.td_maxend - 1 {
        receiver.td_maxend = sack + win;
        if win == 0 {
            receiver.td_maxend += 1;
        }
    }
    true
}

/// What a segment generator step chooses: who sends, where relative to what is plausible,
/// and how much.
#[derive(Clone, Copy, Debug)]
struct Step {
    from_a: bool,
    /// Offset of `seq` from the sender's end (negative: a retransmission; large: garbage).
    seq_off: i64,
    /// Offset of `ack` from the receiver's end.
    ack_off: i64,
    /// Offset of the highest SACK edge from the receiver's end.
    sack_off: Option<i64>,
    win: u16,
    len: i64,
    has_ack: bool,
}

/// Mostly plausible (in order, or a little behind), sometimes far off: a connection that
/// lives a while before something wild ends its time on the fast path.
fn offset(in_order: i64) -> impl Strategy<Value = i64> {
    prop_oneof![
        10 => Just(in_order),
        6 => -3000i64..=0,
        3 => -3000i64..3000,
        1 => -200_000i64..200_000,
        // Far off, but less than 2^31 from anything it is compared with: beyond that,
        // 32-bit sequence space (the kernel's too) cannot tell ahead from behind.
        1 => -1_000_000_000i64..1_000_000_000,
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        any::<bool>(),
        offset(0),
        offset(0),
        proptest::option::weighted(0.2, prop_oneof![4 => -3000i64..=0, 1 => 0i64..20_000]),
        prop_oneof![1 => Just(0u16), 2 => any::<u16>(), 6 => 1000u16..=u16::MAX],
        prop_oneof![2 => Just(0i64), 6 => 1i64..1500, 1 => 1i64..65_000],
        proptest::bool::weighted(0.95),
    )
        .prop_map(
            |(from_a, seq_off, ack_off, sack_off, win, len, has_ack)| Step {
                from_a,
                seq_off,
                ack_off,
                sack_off,
                win,
                len,
                has_ack,
            },
        )
}

fn wrap(x: i64) -> u32 {
    x.rem_euclid(1i64 << 32) as u32
}

/// The 32-bit view of a model side, for comparison.
fn view(s: &Side) -> (u32, u32, u32) {
    (wrap(s.td_end), wrap(s.td_maxend), wrap(s.td_maxwin))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_fast_path_accepts_exactly_what_conntrack_accepts(
        base_a in any::<u32>(),
        base_b in any::<u32>(),
        scale_a in 0u8..15,
        scale_b in 0u8..15,
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let mut ma = Side { td_scale: u32::from(scale_a), ..Side::default() };
        let mut mb = Side { td_scale: u32::from(scale_b), ..Side::default() };
        let (mut ta, mut tb) = (TcpSeen::unseen(scale_a), TcpSeen::unseen(scale_b));
        // Where each side has got to, for offsets before either is seen.
        let (start_a, start_b) = (i64::from(base_a) + (1i64 << 33), i64::from(base_b) + (1i64 << 33));
        for st in steps {
            let (ms, mr, ts, tr, s0, r0) = if st.from_a {
                (&mut ma, &mut mb, &mut ta, &mut tb, start_a, start_b)
            } else {
                (&mut mb, &mut ma, &mut tb, &mut ta, start_b, start_a)
            };
            let s_end = if ms.td_maxwin == 0 { s0 } else { ms.td_end };
            let r_end = if mr.td_maxwin == 0 { r0 } else { mr.td_end };
            let seg = Seg {
                seq: s_end + st.seq_off,
                ack: r_end + st.ack_off,
                sack: st.sack_off.map(|o| r_end + o),
                win: st.win,
                len: st.len,
                has_ack: st.has_ack,
            };
            // Sequence numbers compare only within half the space (RFC 1982): a connection
            // whose edges and segment span more is beyond what 32-bit tracking (the
            // kernel's or the fast path's) can represent, and the unwrapped model no longer
            // describes it.
            let mut edges = vec![seg.seq, seg.seq + seg.len, seg.ack];
            edges.extend(seg.sack);
            for side in [&*ms, &*mr] {
                if side.td_maxwin != 0 {
                    edges.extend([side.td_end, side.td_maxend, side.td_end - side.td_maxwin]);
                }
            }
            let span = edges.iter().max().unwrap() - edges.iter().min().unwrap();
            if span >= 1i64 << 31 {
                break;
            }
            let before = (*ts, *tr);
            let model = in_window(ms, mr, &seg);
            let got = track(ts, tr, &Segment {
                seq: wrap(seg.seq),
                ack: wrap(seg.ack),
                sack: seg.sack.map(wrap),
                window: seg.win,
                len: seg.len as u32,
                flags: if seg.has_ack { TCP_ACK } else { 0 },
            });
            prop_assert_eq!(got.is_ok(), model, "segment {:?}: fast path {:?}", seg, got);
            if got.is_err() {
                // A refused segment changes nothing, and sends the flow off the fast path:
                // what would follow is conntrack's alone.
                prop_assert_eq!((*ts, *tr), before);
                break;
            }
            {
                prop_assert_eq!((ts.end, ts.maxend, ts.maxwin), view(ms));
                prop_assert_eq!((tr.end, tr.maxend, tr.maxwin), view(mr));
                prop_assert_eq!(ts.flags & tcp::UNSURE_END != 0, ms.unsure);
                prop_assert_eq!(tr.flags & tcp::UNSURE_END != 0, mr.unsure);
            }
        }
    }
}

/// A segment with an acknowledgement and a window of 1000.
fn seg(seq: u32, ack: u32, len: u32) -> Segment {
    Segment {
        seq,
        ack,
        sack: None,
        window: 1000,
        len,
        flags: TCP_ACK,
    }
}

#[test]
fn out_of_window_reasons_name_the_bound() {
    let (mut a, mut b) = (TcpSeen::unseen(0), TcpSeen::unseen(0));
    track(&mut a, &mut b, &seg(1000, 5000, 100)).unwrap();
    track(&mut b, &mut a, &seg(5000, 1100, 0)).unwrap();
    // New data from b: what it has sent is known (it was picked up from an acknowledgement).
    track(&mut b, &mut a, &seg(5000, 1100, 10)).unwrap();
    assert_eq!(
        track(&mut a, &mut b, &seg(1100 + 5000, 5010, 10)),
        Err(OutOfWindow::SeqOver)
    );
    assert_eq!(
        track(&mut a, &mut b, &seg(1100, 5011, 10)),
        Err(OutOfWindow::AckOver)
    );
    assert_eq!(
        track(&mut a, &mut b, &seg(1100, 5010u32.wrapping_sub(70_000), 10)),
        Err(OutOfWindow::AckUnder)
    );
    assert_eq!(
        track(&mut a, &mut b, &seg(1100u32.wrapping_sub(3000), 5010, 10)),
        Err(OutOfWindow::SeqUnder)
    );
    assert!(tcp::before(u32::MAX, 1) && tcp::after(1, u32::MAX));
}

/// The two directions of a connection are tracked on different CPUs at once: an
/// acknowledgement judged from a snapshot taken before a data segment was recorded must not
/// undo that segment's end when it is stored, or the next acknowledgement of that data looks
/// like one of data never sent.
#[test]
fn an_ack_judged_before_a_data_segment_does_not_undo_it() {
    let (mut data_side, mut ack_side) = (TcpSeen::unseen(7), TcpSeen::unseen(7));
    // Both sides seen: data from the sender, an acknowledgement of it.
    track(&mut data_side, &mut ack_side, &seg(1_000, 50, 1448)).unwrap();
    track(&mut ack_side, &mut data_side, &seg(50, 2_448, 0)).unwrap();

    // CPU B reads both sides for the next acknowledgement...
    let (ack_before, data_before) = (ack_side, data_side);
    let judged = tcp::judge(&ack_before, &data_before, &seg(50, 2_448, 0)).unwrap();
    // ...while CPU A records the next data segment...
    track(&mut data_side, &mut ack_side, &seg(2_448, 50, 1448)).unwrap();
    assert_eq!(data_side.end, 3_896);
    // ...and then CPU B stores what it judged.
    tcp::store_changed(&mut ack_side, &ack_before, &judged.0);
    tcp::store_changed(&mut data_side, &data_before, &judged.1);
    assert_eq!(data_side.end, 3_896, "the data segment's end survives");
    // So the acknowledgement of that segment is inside the window.
    assert_eq!(
        track(&mut ack_side, &mut data_side, &seg(50, 3_896, 0)),
        Ok(())
    );
}
