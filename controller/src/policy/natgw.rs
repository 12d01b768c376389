//! A NAT gateway's source ports shared out over the fleet's hosts (SPEC §2.3).
//!
//! Many VNICs leave behind a few public addresses; the connection's state (which private
//! address and port a public port stands for) lives on the host that made it. The tor
//! spreads the answers by ECMP over every host, so the public side must say which host owns
//! a connection without any state shared between hosts: each host translates only into its
//! own block of ports, and a host that receives an answer for a port outside its blocks
//! hands it to the owner (over VXLAN, as it would a VNIC on that host). The blocks depend on
//! nothing but the fleet's configuration (its hosts in order, the public addresses), so every
//! host computes the same ones; losing a host loses only the connections it made, whose
//! state went with it anyway.

use std::net::IpAddr;

/// Ports below this are never used for translation: the well-known and registered-service
/// range people filter on.
pub const FIRST_PORT: u16 = 1024;

/// The ports one host translates into, per public address: `[first, last]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub first: u16,
    pub last: u16,
}

impl Block {
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// A block always holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// Host `index`'s block among `hosts` (each public address is cut the same way): equal
/// shares of `FIRST_PORT..=65535`, the remainder to the first hosts. `None` when there are
/// more hosts than ports.
pub fn block(index: usize, hosts: usize) -> Option<Block> {
    let total = u32::from(u16::MAX) - u32::from(FIRST_PORT) + 1;
    let hosts32 = u32::try_from(hosts).ok()?;
    if index >= hosts || hosts32 > total {
        return None;
    }
    let (share, extra) = (total / hosts32, total % hosts32);
    let i = index as u32;
    let first = u32::from(FIRST_PORT) + i * share + i.min(extra);
    let len = share + u32::from(i < extra);
    Some(Block {
        first: first as u16,
        last: (first + len - 1) as u16,
    })
}

/// The host that owns public `port` (of any of the gateway's addresses) among `hosts`
/// (`None`: a port no host translates into, below [`FIRST_PORT`]).
pub fn owner(port: u16, hosts: usize) -> Option<usize> {
    if port < FIRST_PORT || hosts == 0 {
        return None;
    }
    let total = u32::from(u16::MAX) - u32::from(FIRST_PORT) + 1;
    let hosts32 = u32::try_from(hosts).ok()?.min(total);
    let (share, extra) = (total / hosts32, total % hosts32);
    let at = u32::from(port - FIRST_PORT);
    // The first `extra` blocks are one port longer.
    let long = extra * (share + 1);
    let index = if at < long {
        at / (share + 1)
    } else {
        extra + (at - long) / share
    };
    Some(index as usize)
}

/// The public address a connection from `private` leaves with: the gateway's addresses
/// taken in turn by a hash of the private address, so one VNIC keeps one public address
/// (what the far side's allow-lists expect) and the VNICs spread over all of them.
pub fn public_for(private: IpAddr, publics: &[IpAddr]) -> Option<IpAddr> {
    if publics.is_empty() {
        return None;
    }
    let h = match private {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (v as u64) ^ ((v >> 64) as u64)
        }
    };
    // Fibonacci hashing: neighbouring addresses land apart.
    let spread = h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    Some(publics[(spread % publics.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn three_hosts_share_the_ports() {
        let b: Vec<Block> = (0..3).map(|i| block(i, 3).unwrap()).collect();
        assert_eq!(b[0].first, FIRST_PORT);
        assert_eq!(b[2].last, u16::MAX);
        assert_eq!(b[0].last + 1, b[1].first);
        assert_eq!(b[1].last + 1, b[2].first);
        assert!(b[0].len().abs_diff(b[2].len()) <= 1);
        assert_eq!(owner(FIRST_PORT, 3), Some(0));
        assert_eq!(owner(u16::MAX, 3), Some(2));
        assert_eq!(owner(80, 3), None);
        assert_eq!(block(3, 3), None);
        assert_eq!(owner(5000, 0), None);
    }

    #[test]
    fn one_vnic_keeps_one_public_address() {
        let publics: Vec<IpAddr> = ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let a: IpAddr = "10.0.1.10".parse().unwrap();
        assert_eq!(public_for(a, &publics), public_for(a, &publics));
        let used: std::collections::BTreeSet<IpAddr> = (0..64u8)
            .filter_map(|i| public_for(IpAddr::from([10, 0, 1, i]), &publics))
            .collect();
        assert_eq!(used.len(), 3, "64 VNICs use every address");
        assert_eq!(public_for(a, &[]), None);
    }

    proptest! {
        /// Blocks tile the range without gaps or overlaps, and `owner` names the block that
        /// holds each port, for any number of hosts.
        #[test]
        fn blocks_tile_the_range_and_owner_agrees(hosts in 1usize..300, port in FIRST_PORT..=u16::MAX) {
            let mut next = u32::from(FIRST_PORT);
            for i in 0..hosts {
                let b = block(i, hosts).unwrap();
                prop_assert_eq!(u32::from(b.first), next);
                next = u32::from(b.last) + 1;
            }
            prop_assert_eq!(next, u32::from(u16::MAX) + 1);
            let o = owner(port, hosts).unwrap();
            prop_assert!(block(o, hosts).unwrap().contains(port));
        }
    }
}
