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
    pub _pad: [u8; 3],
}

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
            _pad: [0; 3],
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

/// Checks `seg`, sent by `sender` to `receiver`, against the window and, when it is inside,
/// records what it shows of both sides. A segment outside the window changes nothing.
#[inline(always)]
pub fn track(
    sender: &mut TcpSeen,
    receiver: &mut TcpSeen,
    seg: &Segment,
) -> Result<(), OutOfWindow> {
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
    if !s.seen() {
        // Picked up mid-connection: its history is lost to us (conntrack's own words).
        s.end = end;
        let swin = win << scale;
        s.maxwin = if swin == 0 { 1 } else { swin };
        s.maxend = end.wrapping_add(s.maxwin);
        if !r.seen() {
            // The other side is not seen yet: let its acknowledgement bounds pass until it is.
            r.end = sack;
            r.maxend = sack;
        } else if sack == r.end.wrapping_add(1) {
            // Likely the answer to a keepalive.
            r.end = r.end.wrapping_add(1);
        }
    }
    if !has_ack {
        ack = r.end;
        sack = r.end;
    }

    if !before(seq, s.maxend.wrapping_add(1)) {
        return Err(OutOfWindow::SeqOver);
    }
    let in_recv_win = !r.seen() || after(end, s.end.wrapping_sub(r.maxwin).wrapping_sub(1));
    if !in_recv_win {
        return Err(OutOfWindow::SeqUnder);
    }
    if !before(sack, r.end.wrapping_add(1)) {
        return Err(OutOfWindow::AckOver);
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
    *sender = s;
    *receiver = r;
    Ok(())
}

/// TCP option kinds the SACK walk knows.
const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_SACK: u8 = 5;

/// Longest TCP option area (a 60-byte header less its 20 fixed bytes).
pub const MAX_OPTIONS_LEN: usize = 40;

/// Options walked before giving up: 40 bytes hold at most 40 one-byte options, but real
/// segments carry a few (NOP, NOP, timestamps; or NOP, NOP, SACK).
pub const MAX_OPTIONS: usize = 12;

/// What the option walk found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sack {
    /// No SACK option.
    None,
    /// The highest right edge of the SACK blocks.
    Edge(u32),
    /// The options could not be walked (malformed, or longer than [`MAX_OPTIONS`]): the
    /// segment is left to the slow path.
    Unknown,
}

/// The highest SACK right edge in a TCP option area (conntrack's `tcp_sack`); `byte(i)`
/// reads option byte `i` (`None` past the area).
#[inline(always)]
pub fn sack_edge(len: usize, byte: impl Fn(usize) -> Option<u8>) -> Sack {
    let mut at = 0;
    let mut edge: Option<u32> = None;
    for _ in 0..MAX_OPTIONS {
        if at >= len {
            break;
        }
        let Some(kind) = byte(at) else {
            return Sack::Unknown;
        };
        if kind == OPT_EOL {
            break;
        }
        if kind == OPT_NOP {
            at += 1;
            continue;
        }
        let Some(olen) = byte(at + 1) else {
            return Sack::Unknown;
        };
        let olen = olen as usize;
        if olen < 2 || at + olen > len {
            return Sack::Unknown;
        }
        if kind == OPT_SACK {
            // Blocks of (left, right) edges; at most four fit.
            let blocks = (olen - 2) / 8;
            for b in 0..4 {
                if b >= blocks {
                    break;
                }
                let r = at + 2 + b * 8 + 4;
                let (Some(b0), Some(b1), Some(b2), Some(b3)) =
                    (byte(r), byte(r + 1), byte(r + 2), byte(r + 3))
                else {
                    return Sack::Unknown;
                };
                let right = u32::from_be_bytes([b0, b1, b2, b3]);
                edge = Some(match edge {
                    Some(e) if !after(right, e) => e,
                    _ => right,
                });
            }
        }
        at += olen;
    }
    if at < len
        && let Some(kind) = byte(at)
        && kind != OPT_EOL
    {
        return Sack::Unknown;
    }
    match edge {
        Some(e) => Sack::Edge(e),
        None => Sack::None,
    }
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
        // Acknowledging data b never sent.
        assert_eq!(
            track(&mut a, &mut b, &seg(7448, 9500, 512, 0)),
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
    fn sack_blocks_are_walked() {
        // NOP NOP SACK(2 blocks).
        let mut o = [
            1u8, 1, 5, 18, 0, 0, 0, 10, 0, 0, 0, 20, 0, 0, 0, 30, 0, 0, 0, 40,
        ];
        let read = |o: &[u8]| {
            let o = o.to_vec();
            sack_edge(o.len(), move |i| o.get(i).copied())
        };
        assert_eq!(read(&o), Sack::Edge(40));
        // Timestamps only.
        assert_eq!(read(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]), Sack::None);
        // A length running past the area.
        o[3] = 30;
        assert_eq!(read(&o), Sack::Unknown);
        assert_eq!(read(&[5, 0]), Sack::Unknown);
        assert_eq!(read(&[]), Sack::None);
    }
}
