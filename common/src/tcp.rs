//! TCP window tracking for offloaded connections: conntrack's own rules (`tcp_in_window` in
//! `nf_conntrack_proto_tcp.c`, after van Rooij's "Real Stateful TCP Packet Filtering in IP
//! Filter"), for a connection picked up in the middle, as the fast path always does.
//!
//! ctnetlink hands out a connection's state and window scales but not its sequence
//! bookkeeping (`td_end`, `td_maxend`, `td_maxwin`), so each direction starts unseen and
//! learns from its first segment exactly as conntrack does when it picks up a connection
//! without having seen the handshake. From then on a segment is in the window only if all four
//! of conntrack's bounds hold:
//!
//! 1. it starts no later than the sender may send (`seq <= sender.maxend`);
//! 2. it ends no earlier than the receiver's window reaches back (`end >= sender.end -
//!    receiver.maxwin`);
//! 3. it acknowledges nothing the receiver has not sent (`sack <= receiver.end`);
//! 4. it acknowledges no further back than the largest window allows (`sack >= receiver.end -
//!    max(sender.maxwin, 66000)`).
//!
//! The fast path may only ever be stricter than conntrack: a segment outside the window goes
//! to the slow path, where conntrack (liberal while the flow is offloaded) has the last word.
//! SYN, FIN and RST never reach this code: they always leave the fast path.

/// TCP header flags.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Flags that end the fast path for a connection: opening, closing or resetting it is
/// conntrack's business.
pub const TCP_LEAVE_FLAGS: u8 = TCP_FIN | TCP_SYN | TCP_RST;

/// conntrack's `MAXACKWINDOW` floor: how far back an acknowledgement may reach even when the
/// sender's largest window is smaller (a bit over one 64 KiB unscaled window).
pub const MAX_ACK_WINDOW_FLOOR: u32 = 66_000;

/// The largest window scale RFC 7323 allows; conntrack clamps to it too.
pub const MAX_WINDOW_SCALE: u8 = 14;

/// What one direction has shown of itself (conntrack's `struct ip_ct_tcp_state`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpSeen {
    /// One past the highest sequence number this side has sent (`td_end`).
    pub end: u32,
    /// The highest sequence number this side may send: the other side's highest
    /// acknowledgement plus its window (`td_maxend`).
    pub maxend: u32,
    /// The largest window this side has advertised, scaled (`td_maxwin`); 0 until the side
    /// has been seen.
    pub maxwin: u32,
    /// The window scale this side announced in its SYN (from conntrack).
    pub scale: u8,
    /// [`UNSURE_END`], or 0.
    pub flags: u8,
    pub _pad: [u8; 2],
}

/// [`TcpSeen::flags`]: the side was picked up mid-connection from a segment of its own and
/// has not been seen sending new data since, so `end` is only a lower bound: it may have had
/// more in flight when the fast path took over (its first segment seen a retransmission).
/// Until then, an acknowledgement beyond `end` but inside the window the peer announced
/// (`maxend`) moves `end` instead of being refused, as it does for a side not seen yet. conntrack, which sees a connection from
/// its handshake, never needs this; when it picks one up itself, it goes further and tracks
/// the connection liberally.
pub const UNSURE_END: u8 = 1;

impl TcpSeen {
    /// A side not seen yet, with the window scale it announced.
    pub const fn unseen(scale: u8) -> TcpSeen {
        TcpSeen {
            end: 0,
            maxend: 0,
            maxwin: 0,
            scale: if scale > MAX_WINDOW_SCALE {
                MAX_WINDOW_SCALE
            } else {
                scale
            },
            flags: 0,
            _pad: [0; 2],
        }
    }

    pub const fn seen(&self) -> bool {
        self.maxwin != 0
    }
}

/// The fields of a segment window tracking reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub seq: u32,
    /// The acknowledgement number; meaningless without [`TCP_ACK`] in `flags`.
    pub ack: u32,
    /// The highest right edge of the segment's SACK blocks, if it has any (conntrack's
    /// `sack`): it must also be something the receiver sent.
    pub sack: Option<u32>,
    /// The window field, unscaled.
    pub window: u16,
    /// Payload bytes.
    pub len: u32,
    pub flags: u8,
}

impl Segment {
    /// One past the segment's last sequence number (SYN and FIN take one each).
    pub const fn end(&self) -> u32 {
        let mut end = self.seq.wrapping_add(self.len);
        if self.flags & TCP_SYN != 0 {
            end = end.wrapping_add(1);
        }
        if self.flags & TCP_FIN != 0 {
            end = end.wrapping_add(1);
        }
        end
    }
}

/// `a` comes before `b` in sequence space (RFC 1982 arithmetic, as conntrack's `before`).
#[inline(always)]
pub const fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` comes after `b` in sequence space.
#[inline(always)]
pub const fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// Why a segment is outside the window: which of the four bounds it broke.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutOfWindow {
    /// Starts beyond what the sender may send.
    SeqOver = 1,
    /// Ends before what the receiver's window still covers.
    SeqUnder = 2,
    /// Acknowledges data the receiver has not sent.
    AckOver = 3,
    /// Acknowledges further back than the largest window allows.
    AckUnder = 4,
}

/// How far behind what its peer acknowledges a side picked up from a retransmission may be:
/// what one window of a fast connection has in flight. Further is not a retransmission but
/// garbage (and would carry the tracked edges more than half the sequence space apart).
pub const MAX_PICKUP_GAP: u32 = 1 << 28;

/// Checks `seg`, sent by `sender` to `receiver`, against the window and, when it is inside,
/// records what it shows of both sides. A segment outside the window changes nothing.
#[inline(always)]
pub fn track(
    sender: &mut TcpSeen,
    receiver: &mut TcpSeen,
    seg: &Segment,
) -> Result<(), OutOfWindow> {
    let (old_sender, old_receiver) = (*sender, *receiver);
    let (s, r) = judge(&old_sender, &old_receiver, seg)?;
    store_changed(sender, &old_sender, &s);
    store_changed(receiver, &old_receiver, &r);
    Ok(())
}

/// [`track`]'s decision on `seg` from a snapshot of both sides: what they become when it is
/// inside the window.
#[inline(always)]
pub fn judge(
    sender: &TcpSeen,
    receiver: &TcpSeen,
    seg: &Segment,
) -> Result<(TcpSeen, TcpSeen), OutOfWindow> {
    let seq = seg.seq;
    let end = seg.end();
    let has_ack = seg.flags & TCP_ACK != 0;
    let mut ack = seg.ack;
    let mut sack = match seg.sack {
        Some(s) if has_ack && after(s, ack) => s,
        _ => ack,
    };
    let win = u32::from(seg.window);
    let scale = sender.scale as u32;

    // Work on copies: nothing is written unless the segment is accepted.
    let mut s = *sender;
    let mut r = *receiver;
    let picked_up = !s.seen();
    if picked_up {
        // Picked up mid-connection: its history is lost to us (conntrack's own words).
        s.flags |= UNSURE_END;
        let swin = win << scale;
        s.maxwin = if swin == 0 { 1 } else { swin };
        if r.seen() {
            // The receiver's segments already taught us a lower bound of what the sender
            // sent (what was acknowledged) and the window it may fill: keep them, or a
            // retransmission or a sender far ahead of its own window ends the flow.
            if after(end, s.end) {
                s.end = end;
            }
            let own = end.wrapping_add(s.maxwin);
            if after(own, s.maxend) {
                s.maxend = own;
            }
        } else {
            s.end = end;
            s.maxend = end.wrapping_add(s.maxwin);
        }
        if !r.seen() {
            // The other side is not seen yet: let its acknowledgement bounds pass until it is.
            r.end = sack;
            r.maxend = sack;
        } else if after(sack, r.end) && !after(sack, r.end.wrapping_add(MAX_PICKUP_GAP)) {
            // The receiver was picked up from a retransmission, or this answers a
            // keepalive: what the sender acknowledges, the receiver has sent.
            r.end = sack;
        }
    }
    if !has_ack {
        ack = r.end;
        sack = r.end;
    }

    // The upper bound is the window the receiver announced: until a segment of the
    // receiver's is seen, it is unknown to us (conntrack, which saw the connection from its
    // SYN, knows it), and a sender picked up at full speed has far more in flight than its
    // own window, which is all the pickup knows.
    if r.seen() && !before(seq, s.maxend.wrapping_add(1)) {
        return Err(OutOfWindow::SeqOver);
    }
    let in_recv_win = !r.seen() || after(end, s.end.wrapping_sub(r.maxwin).wrapping_sub(1));
    if !in_recv_win {
        return Err(OutOfWindow::SeqUnder);
    }
    // An acknowledgement of more than the receiver was seen sending: refused, unless the
    // receiver's end is only a lower bound (not seen yet, its end is what the sender
    // acknowledged before; or picked up from its own segment) and this stays inside the
    // window it was allowed.
    let sent_unseen = !before(sack, r.end.wrapping_add(1));
    let end_unsure = !r.seen() || r.flags & UNSURE_END != 0;
    let may_have_sent = end_unsure && !after(sack, r.maxend);
    if sent_unseen && !may_have_sent {
        return Err(OutOfWindow::AckOver);
    }
    if sent_unseen {
        r.end = sack;
    }
    let max_ack_window = if s.maxwin > MAX_ACK_WINDOW_FLOOR {
        s.maxwin
    } else {
        MAX_ACK_WINDOW_FLOOR
    };
    if !after(sack, r.end.wrapping_sub(max_ack_window).wrapping_sub(1)) {
        return Err(OutOfWindow::AckUnder);
    }

    let win = win << scale;
    let swin = win.wrapping_add(sack.wrapping_sub(ack));
    if s.maxwin < swin {
        s.maxwin = swin;
    }
    // New data, in order after everything seen: the side has sent no more than this.
    if !picked_up && seg.len != 0 && !before(seq, s.end) {
        s.flags &= !UNSURE_END;
    }
    if after(end, s.end) {
        s.end = end;
    }
    if r.seen() && after(end, s.maxend) {
        r.maxwin = r.maxwin.wrapping_add(end.wrapping_sub(s.maxend));
    }
    if after(sack.wrapping_add(win), r.maxend.wrapping_sub(1)) {
        r.maxend = sack.wrapping_add(win);
        if win == 0 {
            r.maxend = r.maxend.wrapping_add(1);
        }
    }
    Ok((s, r))
}

/// Writes into `dst` the fields of `new` that differ from `old` (what `dst` held when the
/// segment was read), one by one. The other direction's packets may be tracked on another
/// CPU at the same time, writing other fields of both sides: storing back a whole copy would
/// undo what they wrote, and an `end` set back makes the peer's next acknowledgement look
/// like one of data never sent.
#[inline(always)]
pub fn store_changed(dst: &mut TcpSeen, old: &TcpSeen, new: &TcpSeen) {
    if new.end != old.end {
        dst.end = new.end;
    }
    if new.maxend != old.maxend {
        dst.maxend = new.maxend;
    }
    if new.maxwin != old.maxwin {
        dst.maxwin = new.maxwin;
    }
    if new.flags != old.flags {
        dst.flags = new.flags;
    }
}

/// TCP option kinds the fast path reads.
const OPT_NOP: u8 = 1;
const OPT_SACK: u8 = 5;
const OPT_TIMESTAMP: u8 = 8;
const TIMESTAMP_LEN: u8 = 10;

/// Longest TCP option area (a 60-byte header less its 20 fixed bytes).
pub const MAX_OPTIONS_LEN: usize = 40;

/// SACK blocks that fit: four alone, three after timestamps.
pub const MAX_SACK_BLOCKS: usize = 4;

/// What the options of a segment say to window tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sack {
    /// No SACK option.
    None,
    /// The highest right edge of the SACK blocks.
    Edge(u32),
    /// A layout the fast path does not read: the flow leaves the fast path, as conntrack
    /// must see what it carries.
    Unknown,
}

/// The highest SACK right edge in a TCP option area of `len` bytes (conntrack's `tcp_sack`);
/// `word(i)` reads the four option bytes from `i` on (`i` a multiple of 4).
///
/// Established segments of every common stack lay their options out as timestamps
/// (`NOP NOP TS`), SACK blocks (`NOP NOP SACK`), or timestamps then SACK blocks, padded with
/// NOPs; those are read at their fixed places, which the verifier checks in a few hundred
/// instructions where a general option walk takes it past its limit. Anything else is
/// [`Sack::Unknown`].
#[inline(always)]
pub fn sack_edge(len: usize, word: impl Fn(usize) -> Option<[u8; 4]>) -> Sack {
    if len == 0 {
        return Sack::None;
    }
    if len > MAX_OPTIONS_LEN || !len.is_multiple_of(4) {
        return Sack::Unknown;
    }
    let mut at = 0;
    // NOP NOP TS(10) with its two 4-byte values.
    if let Some([OPT_NOP, OPT_NOP, OPT_TIMESTAMP, TIMESTAMP_LEN]) = word(0) {
        at = 12;
    }
    if at == len {
        return Sack::None;
    }
    let Some([OPT_NOP, OPT_NOP, OPT_SACK, sack_len]) = word(at) else {
        return Sack::Unknown;
    };
    let sack_len = sack_len as usize;
    let blocks = sack_len.wrapping_sub(2) / 8;
    if sack_len < 10 || !(sack_len - 2).is_multiple_of(8) || at + 2 + sack_len != len {
        return Sack::Unknown;
    }
    let mut edge = 0u32;
    for b in 0..MAX_SACK_BLOCKS {
        if b >= blocks {
            break;
        }
        let Some(w) = word(at + 4 + b * 8 + 4) else {
            return Sack::Unknown;
        };
        let right = u32::from_be_bytes(w);
        if b == 0 || after(right, edge) {
            edge = right;
        }
    }
    Sack::Edge(edge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(seq: u32, ack: u32, window: u16, len: u32) -> Segment {
        Segment {
            seq,
            ack,
            sack: None,
            window,
            len,
            flags: TCP_ACK,
        }
    }

    #[test]
    fn a_connection_is_picked_up_and_followed() {
        let (mut a, mut b) = (TcpSeen::unseen(7), TcpSeen::unseen(7));
        // a sends 1000 bytes at 5000, acknowledging 9000 from b.
        assert_eq!(track(&mut a, &mut b, &seg(5000, 9000, 512, 1000)), Ok(()));
        assert_eq!(a.end, 6000);
        assert_eq!(a.maxwin, 512 << 7);
        // b acknowledges them.
        assert_eq!(track(&mut b, &mut a, &seg(9000, 6000, 1024, 0)), Ok(()));
        assert_eq!(b.maxwin, 1024 << 7);
        // a goes on inside b's window.
        assert_eq!(track(&mut a, &mut b, &seg(6000, 9000, 512, 1448)), Ok(()));
        // Far beyond what b allows: refused, nothing recorded.
        let before = (a, b);
        assert_eq!(
            track(
                &mut a,
                &mut b,
                &seg(6000 + (1024 << 7) + 10_000, 9000, 512, 10)
            ),
            Err(OutOfWindow::SeqOver)
        );
        assert_eq!((a, b), before);
        // b sends new data: from now on its end is what it has sent.
        assert_eq!(track(&mut b, &mut a, &seg(9000, 7448, 1024, 100)), Ok(()));
        assert_eq!(b.flags & UNSURE_END, 0);
        // Acknowledging data b never sent.
        assert_eq!(
            track(&mut a, &mut b, &seg(7448, 9500, 512, 0)),
            Err(OutOfWindow::AckOver)
        );
    }

    #[test]
    fn acknowledgements_move_a_side_not_seen_yet() {
        let (mut a, mut b) = (TcpSeen::unseen(0), TcpSeen::unseen(0));
        // b acknowledges a twice before a's first segment is seen: a was sending all along.
        assert_eq!(track(&mut b, &mut a, &seg(500, 10_000, 20_000, 0)), Ok(()));
        assert_eq!(track(&mut b, &mut a, &seg(500, 12_896, 20_000, 0)), Ok(()));
        assert_eq!(a.end, 12_896);
        // But not beyond the window b gave it.
        assert_eq!(
            track(&mut b, &mut a, &seg(500, 40_000, 20_000, 0)),
            Err(OutOfWindow::AckOver)
        );
    }

    #[test]
    fn a_side_picked_up_from_a_retransmission_may_have_sent_more() {
        let (mut a, mut b) = (TcpSeen::unseen(0), TcpSeen::unseen(0));
        // a's first segment seen is a retransmission: it had sent up to 20000 already.
        assert_eq!(track(&mut a, &mut b, &seg(10_000, 500, 1000, 1000)), Ok(()));
        assert_eq!((a.end, a.flags & UNSURE_END), (11_000, UNSURE_END));
        // b acknowledges 12000, opening its window to 40000 (a's maxend).
        assert_eq!(track(&mut b, &mut a, &seg(500, 12_000, 28_000, 0)), Ok(()));
        assert_eq!(a.end, 12_000);
        // Data a sent before the pickup, acknowledged: inside what b allowed, a's end moves.
        assert_eq!(track(&mut b, &mut a, &seg(500, 20_000, 28_000, 0)), Ok(()));
        assert_eq!(a.end, 20_000);
        // Beyond the window b had announced: never sent, refused.
        assert_eq!(
            track(&mut b, &mut a, &seg(500, 48_001, 28_000, 0)),
            Err(OutOfWindow::AckOver)
        );
        // a sends new data at its end: what it has sent is known from now on.
        assert_eq!(track(&mut a, &mut b, &seg(20_000, 500, 1000, 1000)), Ok(()));
        assert_eq!(a.flags & UNSURE_END, 0);
        assert_eq!(
            track(&mut b, &mut a, &seg(500, 21_001, 28_000, 0)),
            Err(OutOfWindow::AckOver)
        );
    }

    #[test]
    fn sequence_numbers_wrap() {
        let (mut a, mut b) = (TcpSeen::unseen(0), TcpSeen::unseen(0));
        assert_eq!(
            track(&mut a, &mut b, &seg(u32::MAX - 100, 1, 65535, 1000)),
            Ok(())
        );
        assert_eq!(a.end, 899);
        assert_eq!(track(&mut b, &mut a, &seg(1, 899, 65535, 0)), Ok(()));
        assert_eq!(track(&mut a, &mut b, &seg(899, 1, 65535, 1000)), Ok(()));
    }

    #[test]
    fn the_common_option_layouts_are_read() {
        let read = |o: &[u8]| {
            let o = o.to_vec();
            sack_edge(o.len(), move |i| {
                o.get(i..i + 4).map(|w| w.try_into().unwrap())
            })
        };
        let ts = [1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
        let sack2 = [
            1u8, 1, 5, 18, 0, 0, 0, 10, 0, 0, 0, 40, 0, 0, 0, 30, 0, 0, 0, 20,
        ];
        assert_eq!(read(&[]), Sack::None);
        assert_eq!(read(&ts), Sack::None);
        assert_eq!(read(&sack2), Sack::Edge(40));
        assert_eq!(read(&[&ts[..], &sack2[..]].concat()), Sack::Edge(40));
        // A SACK length running past the area, an odd layout, MSS on a data segment.
        let mut bad = sack2;
        bad[3] = 26;
        assert_eq!(read(&bad), Sack::Unknown);
        assert_eq!(read(&[8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1]), Sack::Unknown);
        assert_eq!(read(&[2, 4, 5, 180]), Sack::Unknown);
    }
}
