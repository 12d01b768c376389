//! VNIC routing's tables as the dataplane holds them (SPEC §2.3).
//!
//! Every route of every table lives in one longest-prefix-match trie per family, keyed by
//! the table's id followed by the address, both big-endian: the trie compares bits from the
//! first byte, so a route for `len` bits of table `t` is the key `t ‖ prefix` with
//! [`TABLE_ID_BITS`]` + len` bits, and a lookup of `t ‖ address` can only match routes of
//! `t`. One trie for all tables keeps the map count fixed however many tables there are.

/// VNICs a fleet's configuration holds: 10k compute instances' interfaces with headroom.
/// Each takes a `VNICS` slot (about 64 bytes) and one `VNIC_ADDRS` key per virtual IP.
pub const MAX_VNICS: u32 = 16 * 1024;

/// Route tables: one per VNIC at most, plus virtual routers.
pub const MAX_ROUTE_TABLES: u32 = 16 * 1024;

/// Routes over all tables, per family: 1M, a full internet table's worth. An LPM trie node
/// costs about 48 bytes of kernel memory besides its key and value (8 + 12 bytes for IPv4,
/// 20 + 12 for IPv6): 1M IPv4 routes ≈ 70 MiB, 1M IPv6 routes ≈ 80 MiB.
pub const MAX_ROUTES: u32 = 1 << 20;

/// Bits of a route key before the address: the table's id.
pub const TABLE_ID_BITS: u32 = 32;

/// The data of an IPv4 route key (the trie's prefix length comes first, in aya's `Key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteAddrV4 {
    /// The route table's id, big-endian.
    pub table: [u8; 4],
    pub addr: [u8; 4],
}

/// The data of an IPv6 route key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteAddrV6 {
    pub table: [u8; 4],
    pub addr: [u8; 16],
}

/// The prefix length of a route key for a route of `len` address bits.
#[inline(always)]
pub const fn route_prefix_len(len: u8) -> u32 {
    TABLE_ID_BITS + len as u32
}

/// `addr` with the bits past the first `len` cleared.
#[inline(always)]
pub fn mask_v4(addr: [u8; 4], len: u8) -> [u8; 4] {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    (u32::from_be_bytes(addr) & mask).to_be_bytes()
}

/// [`mask_v4`] for IPv6.
#[inline(always)]
pub fn mask_v6(addr: [u8; 16], len: u8) -> [u8; 16] {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len.min(128))
    };
    (u128::from_be_bytes(addr) & mask).to_be_bytes()
}

impl RouteAddrV4 {
    /// The key data of `addr` in `table`, bits past `len` cleared.
    pub fn new(table: u32, addr: [u8; 4], len: u8) -> RouteAddrV4 {
        RouteAddrV4 {
            table: table.to_be_bytes(),
            addr: mask_v4(addr, len),
        }
    }
}

impl RouteAddrV6 {
    pub fn new(table: u32, addr: [u8; 16], len: u8) -> RouteAddrV6 {
        RouteAddrV6 {
            table: table.to_be_bytes(),
            addr: mask_v6(addr, len),
        }
    }
}

crate::counters! {
    /// What a route sends a packet to ([`RouteEntry::kind`]).
    pub enum NextHop: u8, slots = 16, {
        /// Not a route (slot 0 stays unused).
        None = 0 => "none",
        /// A VNIC ([`RouteEntry::target`]: its slot), here or over VXLAN to its host.
        Vnic = 1 => "vnic",
        /// Another route table (target: its id), looked up again.
        Router = 2 => "router",
        /// The internet, 1:1 public address (target: the gateway's slot).
        InternetGateway = 3 => "internet_gateway",
        /// The internet behind shared addresses.
        NatGateway = 4 => "nat_gateway",
        /// The services network.
        ServiceGateway = 5 => "service_gateway",
        /// An on-premises network over its own VNI.
        DynamicRoutingGateway = 6 => "dynamic_routing_gateway",
    }
}

/// A route's value in the trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteEntry {
    /// A [`NextHop`].
    pub kind: u8,
    pub _pad: [u8; 3],
    /// The VNIC slot, table id or gateway slot, by `kind`.
    pub target: u32,
    /// The route's own id, for its counters.
    pub route: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_put_the_table_first_and_clear_host_bits() {
        let k = RouteAddrV4::new(0x0102_0304, [10, 1, 2, 3], 16);
        assert_eq!(k.table, [1, 2, 3, 4]);
        assert_eq!(k.addr, [10, 1, 0, 0]);
        assert_eq!(RouteAddrV4::new(7, [10, 1, 2, 3], 0).addr, [0; 4]);
        assert_eq!(RouteAddrV4::new(7, [10, 1, 2, 3], 32).addr, [10, 1, 2, 3]);
        let mut a = [0xffu8; 16];
        a[0] = 0x20;
        let k6 = RouteAddrV6::new(1, a, 12);
        assert_eq!(&k6.addr[..3], &[0x20, 0xf0, 0]);
        assert_eq!(route_prefix_len(24), 56);
    }
}
