//! The flow hash that picks a frame's RSS bucket.
//!
//! A 32-bit multiply-rotate mix over the flow's words (the finaliser of xxHash32): fast
//! enough for every frame, and spreads adjacent ports and addresses across buckets. The
//! symmetric variant orders the two endpoints before hashing, so both directions of a
//! connection land in the same bucket.
//!
//! What is hashed keeps every frame of a flow on one CPU: TCP and UDP hash addresses and
//! ports; fragments (whose later pieces have no ports) and other IP protocols hash addresses
//! and protocol only; non-IP frames hash their MAC addresses.

use crate::parse::{Fragment, L3, Parsed};

const PRIME1: u32 = 0x9E37_79B1;
const PRIME2: u32 = 0x85EB_CA77;
const PRIME3: u32 = 0xC2B2_AE3D;

#[inline(always)]
fn round(acc: u32, word: u32) -> u32 {
    acc.wrapping_add(word.wrapping_mul(PRIME2))
        .rotate_left(13)
        .wrapping_mul(PRIME1)
}

#[inline(always)]
fn finish(mut h: u32) -> u32 {
    h ^= h >> 15;
    h = h.wrapping_mul(PRIME2);
    h ^= h >> 13;
    h = h.wrapping_mul(PRIME3);
    h ^ (h >> 16)
}

#[inline(always)]
fn word(b: &[u8; 16], i: usize) -> u32 {
    u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// A total order on addresses (any consistent order serves the symmetric hash). Written out
/// word by word so it compiles to straight-line BPF instead of a `memcmp` call.
#[inline(always)]
fn addr_key(a: &[u8; 16]) -> (u64, u64) {
    let hi = (u64::from(word(a, 0)) << 32) | u64::from(word(a, 4));
    let lo = (u64::from(word(a, 8)) << 32) | u64::from(word(a, 12));
    (hi, lo)
}

#[inline(always)]
fn addr(acc: u32, a: &[u8; 16]) -> u32 {
    let acc = round(acc, word(a, 0));
    let acc = round(acc, word(a, 4));
    let acc = round(acc, word(a, 8));
    round(acc, word(a, 12))
}

/// Whether the flow carries ports that identify it (complete TCP/UDP headers).
#[inline(always)]
pub fn has_ports(p: &Parsed) -> bool {
    p.l4_offset != 0 && p.fragment == Fragment::None && (p.ip_proto == 6 || p.ip_proto == 17)
}

/// The flow hash of a parsed frame. `seed` varies it per host; `symmetric` makes the two
/// directions of a flow hash alike.
#[inline(always)]
pub fn flow_hash(p: &Parsed, seed: u32, symmetric: bool) -> u32 {
    let mut acc = seed.wrapping_add(PRIME1);
    if p.l3 == L3::None {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        a[..6].copy_from_slice(&p.src_mac);
        b[..6].copy_from_slice(&p.dst_mac);
        let (first, second) = if symmetric && addr_key(&b) < addr_key(&a) {
            (&b, &a)
        } else {
            (&a, &b)
        };
        acc = addr(acc, first);
        acc = addr(acc, second);
        return finish(acc);
    }
    let ports = has_ports(p);
    let (sp, dp) = if ports {
        (p.src_port, p.dst_port)
    } else {
        (0, 0)
    };
    // Order the endpoints (address, then port) for the symmetric hash.
    let swap = symmetric && (addr_key(&p.dst_ip), dp) < (addr_key(&p.src_ip), sp);
    let (ip1, ip2, p1, p2) = if swap {
        (&p.dst_ip, &p.src_ip, dp, sp)
    } else {
        (&p.src_ip, &p.dst_ip, sp, dp)
    };
    acc = addr(acc, ip1);
    acc = addr(acc, ip2);
    acc = round(acc, (u32::from(p1) << 16) | u32::from(p2));
    acc = round(acc, u32::from(p.ip_proto));
    finish(acc)
}

/// Four words mixed into one: fingerprints and other small keys.
#[inline(always)]
pub fn mix4(words: [u32; 4]) -> u32 {
    let mut acc = PRIME1;
    for w in words {
        acc = round(acc, w);
    }
    finish(acc)
}
