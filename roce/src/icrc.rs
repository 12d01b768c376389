//! The invariant CRC that ends every RoCEv2 packet: CRC-32 (the Ethernet polynomial,
//! reflected, init and final XOR all ones) over the packet from its IP header on, with the
//! fields routers may change masked to all ones and 8 bytes of ones in front (standing for
//! InfiniBand's local route header). Sent little-endian, unlike the headers.

use crate::headers::{BTH_LEN, ICRC_LEN};

pub const IPV4_LEN: usize = 20;
pub const IPV6_LEN: usize = 40;
pub const UDP_LEN: usize = 8;

/// The ICRC of `packet`: from its IP header (IPv4 without options, or IPv6) to the end of
/// its payload and pad, the ICRC itself excluded.
pub fn icrc(packet: &[u8], ipv6: bool) -> u32 {
    let ip_len = if ipv6 { IPV6_LEN } else { IPV4_LEN };
    let fixed = ip_len + UDP_LEN + BTH_LEN;
    let mut head = [0u8; IPV6_LEN + UDP_LEN + BTH_LEN];
    let head = &mut head[..fixed.min(packet.len())];
    head.copy_from_slice(&packet[..head.len()]);
    let mask = |head: &mut [u8], at: usize, bytes: &[u8]| {
        for (i, m) in bytes.iter().enumerate() {
            if let Some(b) = head.get_mut(at + i) {
                *b |= m;
            }
        }
    };
    if ipv6 {
        // Traffic class and flow label (the low nibble of byte 0 on), hop limit.
        mask(head, 0, &[0x0f, 0xff, 0xff, 0xff]);
        mask(head, 7, &[0xff]);
    } else {
        // Type of service, TTL, header checksum.
        mask(head, 1, &[0xff]);
        mask(head, 8, &[0xff]);
        mask(head, 10, &[0xff, 0xff]);
    }
    // The UDP checksum, and the BTH's reserved byte (FECN, BECN).
    mask(head, ip_len + 6, &[0xff, 0xff]);
    mask(head, ip_len + UDP_LEN + 4, &[0xff]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[0xff; 8]);
    crc.update(head);
    if packet.len() > fixed {
        crc.update(&packet[fixed..]);
    }
    crc.finalize()
}

/// Appends the ICRC of `packet` (from its IP header on) to it.
pub fn append(packet: &mut Vec<u8>, ip_offset: usize, ipv6: bool) {
    let c = icrc(&packet[ip_offset..], ipv6);
    packet.extend_from_slice(&c.to_le_bytes());
}

/// Whether the last four bytes of `packet` (from its IP header on) are its ICRC; the ICRC
/// found and the one computed.
pub fn check(packet: &[u8], ipv6: bool) -> Result<(), (u32, u32)> {
    let Some(body) = packet.len().checked_sub(ICRC_LEN) else {
        return Err((0, 0));
    };
    let found = u32::from_le_bytes(packet[body..].try_into().expect("4 bytes"));
    let want = icrc(&packet[..body], ipv6);
    if found == want {
        Ok(())
    } else {
        Err((found, want))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Packets whose ICRC another implementation computed: a congestion notification
    /// packet captured from a ConnectX-4 Lx NIC (scapy's RoCE test suite), and a WRITE Only
    /// and an ACK built by scapy's `scapy.contrib.roce`.
    const KNOWN_GOOD: [&str; 3] = [
        "e41d2dab2bc27cfe90643b32080045c2003c718c400040119161 0a0011010a001201 000012b700280000
         8100ffff400001180000000000000000000000000000000000000000 82fd002a",
        "02000000000202000000000108004500004c000140004011269e0a0000010a000002c00012b7003800
         000a00ffff000000118000000000007f00000010000000123400000010000102030405060708090a0b
         0c0d0e0f5bf4f75f",
        "02000000000102000000000208004500003000014000401126ba0a0000020a000001c00012b7001c00
         001100ffff00000012000000001f000001c4e6bfd7",
    ];

    #[test]
    fn agrees_with_hardware_and_with_scapy() {
        for (i, h) in KNOWN_GOOD.iter().enumerate() {
            let frame = hex(h);
            assert_eq!(check(&frame[14..], false), Ok(()), "vector {i}");
            let mut bad = frame.clone();
            let at = bad.len() - 5;
            bad[at] ^= 1;
            assert!(check(&bad[14..], false).is_err(), "vector {i} corrupted");
        }
    }

    #[test]
    fn masked_fields_do_not_count() {
        let mut frame = hex(KNOWN_GOOD[1]);
        // A router's changes: TOS, TTL and checksum, the UDP checksum, ECN marks in the BTH.
        for at in [15, 22, 24, 25, 40, 41, 46] {
            frame[at] ^= 0x5a;
        }
        assert_eq!(check(&frame[14..], false), Ok(()));
        // An address is not masked.
        frame[29] ^= 1;
        assert!(check(&frame[14..], false).is_err());
    }
}
