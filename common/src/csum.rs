//! Internet checksums (RFC 1071) updated incrementally (RFC 1624): what rewriting an address,
//! a port or the TTL does to the IPv4 header checksum and the TCP/UDP checksum, without
//! reading the rest of the packet. The fast path's NAT and forwarding use these; the tests
//! hold them to a full recomputation.
//!
//! Checksums and the words they cover are handled as they are on the wire: big-endian 16-bit
//! words, read with `u16::from_be_bytes`.

/// One's-complement sum of 16-bit words, folded to 16 bits.
#[inline(always)]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    let s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum `check` after one covered 16-bit word changed from `old` to `new`
/// (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// The same for a 4-byte field (an IPv4 address): two words.
#[inline(always)]
pub fn replace32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let c = replace16(
        check,
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    replace16(
        c,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
}

/// The same for a 16-byte field (an IPv6 address): eight words.
#[inline(always)]
pub fn replace128(check: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    let mut c = check;
    let mut i = 0;
    while i < 16 {
        c = replace16(
            c,
            u16::from_be_bytes([old[i], old[i + 1]]),
            u16::from_be_bytes([new[i], new[i + 1]]),
        );
        i += 2;
    }
    c
}

/// A UDP checksum after an update: over IPv4, 0 means "no checksum", so a sender that
/// computed one never sends 0 (RFC 768) and a packet without one keeps none.
#[inline(always)]
pub fn udp_after(original: u16, updated: u16) -> u16 {
    match (original, updated) {
        (0, _) => 0,
        (_, 0) => 0xffff,
        (_, u) => u,
    }
}

/// The IPv4 header checksum after its TTL went from `old_ttl` to `new_ttl` (the TTL shares
/// its word with the protocol).
#[inline(always)]
pub fn replace_ttl(check: u16, old_ttl: u8, new_ttl: u8, protocol: u8) -> u16 {
    replace16(
        check,
        u16::from_be_bytes([old_ttl, protocol]),
        u16::from_be_bytes([new_ttl, protocol]),
    )
}

/// The RFC 1071 checksum of `bytes` from an initial sum (a pseudo-header's, say): for tests
/// and the daemon, not the per-packet path.
pub fn checksum(initial: u32, bytes: &[u8]) -> u16 {
    let mut sum = initial;
    let mut chunks = bytes.chunks_exact(2);
    for w in &mut chunks {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    !fold(sum)
}
