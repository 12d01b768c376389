//! Announcing a VM's addresses on the uplink that now carries it, so switches and neighbours
//! learn the new path at once instead of when the VM next speaks: a gratuitous ARP per IPv4
//! address, an unsolicited neighbour advertisement per IPv6 address, and, for a MAC with no
//! address, a RARP frame (what QEMU and Open vSwitch send) so switches still learn it.

use std::{io, net::IpAddr, os::fd::AsRawFd as _, os::fd::FromRawFd as _, os::fd::OwnedFd};

use crate::net::{IpNet, MacAddr};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_RARP: u16 = 0x8035;
const ETH_P_IPV6: u16 = 0x86dd;
const BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1, all nodes, as an Ethernet multicast address.
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// The frames that announce `macs` and `ips` (IPv4 and IPv6 addresses go with the first MAC,
/// which is the one the VM's stack uses).
pub fn frames(macs: &[MacAddr], ips: &[IpNet]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, mac) in macs.iter().enumerate() {
        let mut announced = false;
        if i == 0 {
            for ip in ips {
                match ip.addr {
                    IpAddr::V4(a) => out.push(arp(mac.0, a.octets())),
                    IpAddr::V6(a) => out.push(neighbour_advertisement(mac.0, a.octets())),
                }
                announced = true;
            }
        }
        if !announced {
            out.push(rarp(mac.0));
        }
    }
    out
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len().max(46));
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    // Pad to the minimum frame size (without FCS).
    f.resize(f.len().max(60), 0);
    f
}

/// An ARP body: Ethernet/IPv4, `op`, sender and target.
fn arp_body(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut b = Vec::with_capacity(28);
    b.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    b.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    b.extend_from_slice(&[6, 4]);
    b.extend_from_slice(&op.to_be_bytes());
    b.extend_from_slice(&sha);
    b.extend_from_slice(&spa);
    b.extend_from_slice(&tha);
    b.extend_from_slice(&tpa);
    b
}

/// A gratuitous ARP request (RFC 5227's announcement: sender and target address equal).
pub fn arp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    ethernet(BROADCAST, mac, ETH_P_ARP, &arp_body(1, mac, ip, [0; 6], ip))
}

/// A RARP "reverse request" from `mac` about itself.
pub fn rarp(mac: [u8; 6]) -> Vec<u8> {
    ethernet(
        BROADCAST,
        mac,
        ETH_P_RARP,
        &arp_body(3, mac, [0; 4], mac, [0; 4]),
    )
}

/// An unsolicited neighbour advertisement (RFC 4861 §7.2.6) for `ip` at `mac`, to all nodes,
/// with the override flag so caches take the new address.
pub fn neighbour_advertisement(mac: [u8; 6], ip: [u8; 16]) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]); // type, code, checksum
    icmp.extend_from_slice(&0x2000_0000u32.to_be_bytes()); // override
    icmp.extend_from_slice(&ip);
    icmp.extend_from_slice(&[2, 1]); // target link-layer address option, 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(&ip, &ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut ip6 = Vec::with_capacity(40 + icmp.len());
    ip6.extend_from_slice(&[0x60, 0, 0, 0]);
    ip6.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip6.extend_from_slice(&[58, 255]); // ICMPv6, hop limit 255 (required for ND)
    ip6.extend_from_slice(&ip);
    ip6.extend_from_slice(&ALL_NODES);
    ip6.extend_from_slice(&icmp);
    ethernet(ALL_NODES_MAC, mac, ETH_P_IPV6, &ip6)
}

fn icmpv6_checksum(src: &[u8; 16], dst: &[u8; 16], body: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += word as u32;
        }
    };
    add(src);
    add(dst);
    add(&(body.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(body);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A raw packet socket for sending whole frames out of any interface.
pub struct Announcer {
    fd: OwnedFd,
}

impl Announcer {
    pub fn open() -> io::Result<Announcer> {
        // SAFETY: plain socket(2) call; the result is checked before use. Protocol 0: this
        // socket only sends, so it receives nothing.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor owned by nothing else.
        Ok(Announcer {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Sends `frame` out of interface `ifindex`.
    pub fn send(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` and `addr` are valid for the lengths passed, for the whole call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    const MAC: [u8; 6] = [2, 0x77, 0, 0, 0, 0x10];

    #[test]
    fn gratuitous_arp_names_the_address_twice() {
        let f = arp(MAC, [10, 77, 0, 10]);
        assert_eq!(&f[..6], &BROADCAST);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[14 + 6..14 + 8], &[0, 1], "request");
        assert_eq!(&f[14 + 14..14 + 18], &[10, 77, 0, 10]);
        assert_eq!(&f[14 + 24..14 + 28], &[10, 77, 0, 10]);
        assert_eq!(f.len(), 60);
    }

    #[test]
    fn neighbour_advertisement_parses_with_a_valid_checksum() {
        let ip: std::net::Ipv6Addr = "fd77::10".parse().unwrap();
        let f = neighbour_advertisement(MAC, ip.octets());
        let p = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv6(v6)) = &p.net else {
            panic!("not IPv6")
        };
        assert_eq!(v6.header().hop_limit(), 255);
        let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.type_u8(), 136);
        let src = v6.header().source();
        let dst = v6.header().destination();
        assert_eq!(
            icmp.icmp_type()
                .calc_checksum(src, dst, icmp.payload())
                .unwrap(),
            icmp.checksum()
        );
    }

    #[test]
    fn macs_without_addresses_get_a_rarp() {
        let ips: Vec<IpNet> = vec!["10.0.0.5/24".parse().unwrap(), "fd00::5".parse().unwrap()];
        let macs = [MacAddr(MAC), MacAddr([2, 0, 0, 0, 0, 9])];
        let f = frames(&macs, &ips);
        assert_eq!(f.len(), 3);
        assert_eq!(&f[2][12..14], &[0x80, 0x35]);
        assert_eq!(&f[2][6..12], &[2, 0, 0, 0, 0, 9]);
    }
}
