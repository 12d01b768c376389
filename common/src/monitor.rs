//! `xnic monitor`: dropped frames reported from the delivery step through a ring buffer, with
//! their reason, port, VM and first bytes. Off unless a monitor holds a lease (`until_ns`),
//! which costs a drop one array lookup; while on, the programs sample and rate-limit per CPU
//! so that a flood of drops costs bounded CPU and a full ring is counted, never waited on.

use crate::parse::{L3, Parsed};

/// The ring's size: 2 MiB holds about 13,000 events, a second of the default rate limit on
/// 8 CPUs after the reader stalled for a moment (the ring's size must be a power of two and
/// a multiple of the page size).
pub const MONITOR_RING_BYTES: u32 = 2 << 20;

/// Bytes of a dropped frame an event keeps: Ethernet, two VLAN tags, IPv6 and a TCP header
/// with options (14 + 8 + 40 + 60 = 122), rounded up.
pub const SNAP_LEN: usize = 128;
const _: () = assert!(SNAP_LEN.is_power_of_two());

/// Events per second per CPU unless the monitor asks otherwise: enough to see what is being
/// dropped, few enough that writing them costs a flooded CPU about 1 %.
pub const DEFAULT_RATE: u32 = 1000;

/// The capture ring's size: a second of a 10,000 frames/s capture with room to spare.
pub const CAPTURE_RING_BYTES: u32 = 4 << 20;

/// Frames per second per CPU `xnic capture` takes unless asked otherwise.
pub const DEFAULT_CAPTURE_RATE: u32 = 10_000;

/// How long a lease lasts: a monitor renews it every second, and a monitor that died stops
/// costing anything two seconds later.
pub const LEASE_NS: u64 = 2_000_000_000;

/// `MONITOR_CONFIG[0]`, written by `xnic monitor`; `CAPTURE_CONFIG[0]`, by `xnic capture`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Events are made until this time (`CLOCK_MONOTONIC` ns); 0: off.
    pub until_ns: u64,
    /// One drop in `sample` is looked at (0 and 1: every one).
    pub sample: u32,
    /// Events per second per CPU, and the burst the bucket holds.
    pub rate: u32,
    pub burst: u32,
    /// `xnic capture`: the port whose frames are taken (its ifindex).
    pub ifindex: u32,
}

/// `FlowMatch::flags`: which of its fields a frame must match.
pub const WATCH_ADDR: u8 = 1;
pub const WATCH_L4_PORT: u8 = 2;
pub const WATCH_PROTO: u8 = 4;

/// Frames of one flow, or of one host or port: what `xnic monitor --trace` watches and what
/// `xnic capture --filter` keeps. Nothing chosen (`flags` 0) matches no frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowMatch {
    /// Either address (IPv4 as `::ffff:a.b.c.d`, as the parser keeps it).
    pub addr: [u8; 16],
    /// Either transport port.
    pub l4_port: u16,
    /// The IP protocol (6 TCP, 17 UDP...).
    pub proto: u8,
    /// `WATCH_*`.
    pub flags: u8,
    pub _pad: u32,
}

/// `CaptureFilter::points`: where `xnic capture` takes a port's frames: as they arrive,
/// before any stage ran (`CAPTURE_IN`), and as the delivery step finished them, with their
/// action (`CAPTURE_OUT`). Neither set means out (a filter written by no capture).
pub const CAPTURE_IN: u32 = 1;
pub const CAPTURE_OUT: u32 = 2;

/// `CAPTURE_FILTER[0]`, written by `xnic capture`: which frames it keeps, and where.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureFilter {
    /// `flags` 0: every frame of the port.
    pub flow: FlowMatch,
    /// `CAPTURE_IN` and/or `CAPTURE_OUT`.
    pub points: u32,
    pub _pad: u32,
}

impl CaptureFilter {
    /// Whether the frame `p` describes is taken at `point`.
    #[inline(always)]
    pub fn keeps(&self, p: &Parsed, point: u32) -> bool {
        let points = if self.points == 0 {
            CAPTURE_OUT
        } else {
            self.points
        };
        points & point != 0 && (self.flow.flags == 0 || self.flow.matches(p))
    }
}

/// `WATCH_CONFIG[0]`, written by `xnic monitor --trace`: the frames to report with the stages
/// they passed and their verdict, whatever it is. A trace of every frame would be a capture:
/// a watch with nothing chosen reports nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchConfig {
    /// The lease, sampling and rate limit, as for drops (`ifindex` unused).
    pub limits: MonitorConfig,
    pub flow: FlowMatch,
}

impl FlowMatch {
    /// Whether the frame `p` describes is one of those chosen.
    #[inline(always)]
    pub fn matches(&self, p: &Parsed) -> bool {
        if self.flags == 0 || p.l3 == L3::None {
            return false;
        }
        if self.flags & WATCH_PROTO != 0 && p.ip_proto != self.proto {
            return false;
        }
        if self.flags & WATCH_L4_PORT != 0
            && p.src_port != self.l4_port
            && p.dst_port != self.l4_port
        {
            return false;
        }
        self.flags & WATCH_ADDR == 0 || same(&p.src_ip, &self.addr) || same(&p.dst_ip, &self.addr)
    }
}

/// Two addresses compared byte by byte (no `memcmp` in BPF).
#[inline(always)]
fn same(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let mut diff = 0u8;
    let mut i = 0;
    while i < 16 {
        diff |= a[i] ^ b[i];
        i += 1;
    }
    diff == 0
}

/// `DropEvent::kind`: a dropped frame (`MONITOR_RING`), a captured one (`CAPTURE_RING`), a
/// frame of a watched flow (`MONITOR_RING`, `xnic monitor --trace`).
pub const EVENT_DROP: u32 = 0;
pub const EVENT_CAPTURE: u32 = 1;
pub const EVENT_TRACE: u32 = 2;
/// A captured frame as it arrived, before the pipeline (`CAPTURE_RING`; no action yet).
pub const EVENT_ARRIVED: u32 = 3;

/// Per CPU: the rate limit's token bucket (`MONITOR_BUCKET[0]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// When tokens were last added.
    pub last_ns: u64,
    /// Tokens, in millionths of an event (so rates below one a millisecond add up).
    pub micro_tokens: u64,
}

/// Whether a drop at `now_ns` may become an event under `rate` events/s with `burst`; takes
/// the token when it may.
#[inline(always)]
pub fn admit(b: &mut Bucket, now_ns: u64, rate: u32, burst: u32) -> bool {
    const MICRO: u64 = 1_000_000;
    let cap = u64::from(burst.max(1)) * MICRO;
    // Rate × elapsed in micro-tokens: rate/s × elapsed µs / 1e6 × 1e6 = rate × elapsed µs;
    // elapsed at most 1000 s, so the product fits 64 bits (no 128-bit arithmetic in BPF).
    // Only whole microseconds are taken: drops closer together than that still add up.
    const MAX_US: u64 = 1_000_000_000;
    let elapsed_us = now_ns.saturating_sub(b.last_ns) / 1000;
    if elapsed_us >= MAX_US {
        b.micro_tokens = cap;
        b.last_ns = now_ns;
    } else if elapsed_us > 0 {
        let add = u64::from(rate) * elapsed_us;
        b.micro_tokens = b.micro_tokens.saturating_add(add).min(cap);
        b.last_ns += elapsed_us * 1000;
    }
    if b.micro_tokens >= MICRO {
        b.micro_tokens -= MICRO;
        true
    } else {
        false
    }
}

/// One event as a ring carries it: a dropped, captured or watched frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// When (`CLOCK_MONOTONIC` ns).
    pub ts_ns: u64,
    /// The interface it arrived on, its port slot and its VM slot (`maps::NO_VM`: none).
    pub ifindex: u32,
    pub port_slot: u32,
    pub vm_slot: u32,
    /// A `verdict::Reason`.
    pub reason: u32,
    /// The whole frame's length, and how much of it `head` holds.
    pub len: u32,
    pub captured: u32,
    pub cpu: u32,
    /// The XDP action the frame got (`xdp_action`).
    pub action: u32,
    /// `EVENT_*`.
    pub kind: u32,
    /// The stages it passed (bit `dry_run::Stage as u32` each).
    pub path: u32,
    /// Its next hop (`ctx::NextKind`) and the hop's target (ifindex, CPU, queue).
    pub next_kind: u32,
    pub next_target: u32,
    pub head: [u8; SNAP_LEN],
}

crate::counters! {
    /// Per CPU: what became of the drops the monitor looked at (`MONITOR_STATS[counter]`).
    pub enum MonitorCounter: u32, slots = crate::limits::MONITOR_SLOTS, {
        /// Written to the ring.
        Emitted = 0 => "emitted",
        /// Left out by sampling.
        Sampled = 1 => "sampled_out",
        /// Over the per-CPU rate limit.
        RateLimited = 2 => "rate_limited",
        /// The ring was full (the reader is behind).
        RingFull = 3 => "ring_full",
        /// `xnic capture`: frames written to its ring, over its rate limit, or finding its
        /// ring full.
        CaptureEmitted = 4 => "capture_emitted",
        CaptureRateLimited = 5 => "capture_rate_limited",
        CaptureRingFull = 6 => "capture_ring_full",
    }
}

crate::counters! {
    /// Per CPU: what became of the watched flow's frames (`WATCH_STATS[counter]`).
    pub enum WatchCounter: u32, slots = crate::limits::WATCH_SLOTS, {
        /// Written to the ring.
        Emitted = 0 => "trace_emitted",
        /// Over the rate limit.
        RateLimited = 1 => "trace_rate_limited",
        /// The ring was full.
        RingFull = 2 => "trace_ring_full",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Parsed {
        let mapped = |a: [u8; 4]| {
            let mut m = [0u8; 16];
            m[10] = 0xff;
            m[11] = 0xff;
            m[12..].copy_from_slice(&a);
            m
        };
        Parsed {
            l3: L3::Ipv4,
            ip_proto: 17,
            src_port: sport,
            dst_port: dport,
            src_ip: mapped(src),
            dst_ip: mapped(dst),
            ..Parsed::default()
        }
    }

    #[test]
    fn a_watch_matches_its_flow_either_way_and_nothing_when_unset() {
        let p = udp([10, 0, 0, 1], [10, 0, 0, 2], 4000, 53);
        assert!(
            !FlowMatch::default().matches(&p),
            "nothing chosen: no frame"
        );
        let mut w = FlowMatch {
            flags: WATCH_ADDR | WATCH_L4_PORT | WATCH_PROTO,
            l4_port: 53,
            proto: 17,
            ..FlowMatch::default()
        };
        w.addr = udp([10, 0, 0, 2], [0; 4], 0, 0).src_ip;
        assert!(w.matches(&p));
        // The answer: the same flow the other way.
        assert!(w.matches(&udp([10, 0, 0, 2], [10, 0, 0, 1], 53, 4000)));
        assert!(!w.matches(&udp([10, 0, 0, 3], [10, 0, 0, 1], 53, 4000)));
        assert!(!w.matches(&udp([10, 0, 0, 2], [10, 0, 0, 1], 54, 4000)));
        w.proto = 6;
        assert!(!w.matches(&p), "another protocol");
        let not_ip = Parsed::default();
        w.flags = WATCH_L4_PORT;
        assert!(!w.matches(&not_ip));
    }

    #[test]
    fn the_bucket_lets_a_burst_through_then_the_rate() {
        let mut b = Bucket::default();
        let t0 = 10_000_000_000;
        // A full bucket after a long quiet: the burst, then nothing in the same instant.
        let burst = (0..100).filter(|_| admit(&mut b, t0, 1000, 10)).count();
        assert_eq!(burst, 10);
        // Over the next second, one event a millisecond.
        let later = (1..=1000)
            .filter(|ms| admit(&mut b, t0 + ms * 1_000_000, 1000, 10))
            .count();
        assert_eq!(later, 1000);
        // Slow rates add up: 1 a second.
        let mut b = Bucket::default();
        admit(&mut b, t0, 1, 1);
        let got = (1..=3000)
            .filter(|ms| admit(&mut b, t0 + ms * 1_000_000, 1, 1))
            .count();
        assert_eq!(got, 3);
    }

    #[test]
    fn drops_closer_than_a_microsecond_still_refill_the_bucket() {
        let mut b = Bucket::default();
        let t0 = 10_000_000_000;
        // 1.5 million drops a second for a second: the burst, then the rate.
        let got = (0..1_500_000u64)
            .filter(|i| admit(&mut b, t0 + i * 667, 1000, 100))
            .count();
        assert!((1095..=1101).contains(&got), "{got}");
    }

    #[test]
    fn an_event_is_a_whole_number_of_words() {
        assert_eq!(size_of::<DropEvent>() % 8, 0);
    }
}
