//! VNIC routing's tables and per-packet logic as the dataplane holds them (SPEC §2.3).
//!
//! Every route of every table lives in one longest-prefix-match trie per family, keyed by
//! the table's id followed by the address, both big-endian: the trie compares bits from the
//! first byte, so a route for `len` bits of table `t` is the key `t ‖ prefix` with
//! [`TABLE_ID_BITS`]` + len` bits, and a lookup of `t ‖ address` can only match routes of
//! `t`. One trie for all tables keeps the map count fixed however many tables there are.
//! Each VCN has a table of its own too ([`vcn_table`]), holding its prefixes as
//! [`NextHop::Local`]: a VCN's own addresses are always local, whatever its route tables say.
//!
//! Addresses outside the tries are kept IPv4-mapped (`::ffff:a.b.c.d`), as the parser keeps
//! them, so one key serves both families.

use crate::{
    csum,
    headers::{IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr},
    maps::Counter,
    parse::Parsed,
    rewrite::{Check, L4Ports},
};

/// VNICs a fleet's configuration holds: 10k compute instances' interfaces with headroom.
/// Each takes a `VNICS` slot (about 64 bytes) and one `VNIC_ADDRS` key per virtual IP.
pub const MAX_VNICS: u32 = 16 * 1024;

/// Virtual IPs over all VNICs: four each on average.
pub const MAX_VNIC_ADDRS: u32 = 4 * MAX_VNICS;

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteAddrV4 {
    /// The route table's id, big-endian.
    pub table: [u8; 4],
    pub addr: [u8; 4],
}

/// The data of an IPv6 route key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
        /// A VCN's own prefix (only in its [`vcn_table`]): the VNIC that owns the address.
        Local = 7 => "local",
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

/// The id of VCN `vcn`'s own table in the tries: above every route table's id.
#[inline(always)]
pub const fn vcn_table(vcn: u32) -> u32 {
    VCN_TABLE_BASE + vcn
}

/// Route table ids below this are route tables; from it on, VCNs' own tables.
pub const VCN_TABLE_BASE: u32 = 1 << 31;

/// A VNIC with no route table of its own or its subnet's: only its VCN is reachable.
pub const NO_TABLE: u32 = u32::MAX;

/// Virtual routers a lookup passes through at most: the configuration refuses deeper chains
/// (`policy::route::MAX_ROUTER_HOPS`), the dataplane stops there all the same.
pub const MAX_ROUTER_HOPS: usize = 4;

/// VCNs: one per tenant network, far fewer than VNICs.
pub const MAX_VCNS: u32 = 4096;

/// Gateways of every kind: a few per VCN that has them.
pub const MAX_GATEWAYS: u32 = 4096;

/// Public addresses a NAT gateway shares out. One VNIC always leaves by the same one.
pub const MAX_NAT_IPS: usize = 4;

/// Public addresses of the fleet (VNICs' 1:1 ones and NAT gateways'): one per VNIC and a few
/// per gateway. A hash entry costs about 100 bytes: 1.6 MiB.
pub const MAX_PUBLIC_ADDRS: u32 = MAX_VNICS;

/// Rules per security-rule set (a VNIC's merged lists, per direction): walked in a bounded
/// loop per packet; `policy::acl::MAX_RULES` is the same limit on the configuration side.
pub const MAX_RULES: u32 = 64;

/// Distinct rule sets (VNICs with the same lists share one): 4096 × 64 rules × 28 bytes
/// ≈ 7 MiB.
pub const MAX_RULE_SETS: u32 = 4096;

/// A VNIC with no rules in a direction: everything is dropped that way (as a cloud's
/// security lists do: what no rule allows is denied). `len` 0 says the same.
pub const NO_RULES: u16 = u16::MAX;

/// NAT gateway connections a host keeps: 128 Ki, two keys each in an LRU hash (~100 bytes a
/// key): ≈ 25 MiB. The least recently used give way when it is full.
pub const MAX_NAT_SESSIONS: u32 = 128 * 1024;

/// Destinations whose route (after virtual routers) a host remembers: a flow's packets
/// after its first skip the trie walks, whose cost grows with the table (a 1M-route trie is
/// ~20 levels deep). An LRU hash shared by the CPUs, ~120 bytes an entry: 64 Ki ≈ 7.5 MiB.
pub const MAX_ROUTE_CACHE: u32 = 64 * 1024;

/// Hosts in a fleet: what an ECMP group of a top-of-rack router takes.
pub const MAX_FLEET_HOSTS: u32 = 64;

/// The NAT gateways' first translated port (`policy::natgw::FIRST_PORT`).
pub const NAT_FIRST_PORT: u16 = 1024;

/// Tries a NAT gateway makes for a free public port before it gives up on a connection.
pub const NAT_PORT_TRIES: u32 = 8;

/// VNIC routing's settings on this host (`VNIC_CONFIG[0]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnicConfig {
    /// 1 when this host forwards for the fleet's VNICs.
    pub enabled: u8,
    /// This host's place in the fleet, and how many hosts there are (NAT port blocks).
    pub host_index: u8,
    pub hosts: u8,
    /// 1 when each flow's packets are routed on a worker CPU of RSS engine [`Self::engine`],
    /// picked by the flow's hash (0: on the CPU they arrive on).
    pub workers: u8,
    /// The fleet's shared VTEP: compute hosts send to it, the fleet sends from it.
    pub anycast: [u8; 4],
    /// This host's own VTEP, where the other hosts hand it NAT answers.
    pub local: [u8; 4],
    /// The VNI NAT answers are handed between hosts in.
    pub handoff_vni: u32,
    /// The virtual router's MAC: the inner source of frames delivered to VNICs.
    pub router_mac: [u8; 6],
    /// The VXLAN UDP port.
    pub vxlan_port: u16,
    /// The largest outer IP packet the underlay carries.
    pub underlay_mtu: u16,
    /// This host's block of NAT gateway ports ([`port_block`]), inclusive.
    pub nat_first: u16,
    pub nat_last: u16,
    /// The RSS engine whose CPUs route the fleet's packets, with [`Self::workers`].
    pub engine: u16,
}

/// `rss::SteerMeta::vm_slot` of a packet steered to its VNIC-routing worker CPU: no VM slot
/// is this large, and it is not `flow::FLOW_META_TAG`.
pub const VNIC_META_TAG: u32 = 0x7e1c_0000;

/// `VnicEntry::flags`: the slot holds a VNIC.
pub const VNIC_VALID: u8 = 1;

/// A VNIC (`VNICS[slot]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnicEntry {
    pub vni: u32,
    /// Its VCN's id (its own table is [`vcn_table`] of it).
    pub vcn: u32,
    /// Its route table's id, or [`NO_TABLE`].
    pub table: u32,
    /// Its compute instance's host's VTEP.
    pub host: [u8; 4],
    /// Its public IPv4 address behind an internet gateway (0: none), and the private one
    /// it stands for.
    pub public: [u8; 4],
    pub private: [u8; 4],
    /// Its security rules: a set in `ACL_RULES` and how many rules, per direction.
    pub ingress_set: u16,
    pub egress_set: u16,
    pub ingress_len: u8,
    pub egress_len: u8,
    pub flags: u8,
    pub _pad: u8,
    pub mac: [u8; 6],
    pub _pad2: [u8; 2],
}

/// `VNIC_MACS`' key: a compute instance's frames name their VNIC by VNI and source MAC.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VnicMacKey {
    pub vni: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl VnicMacKey {
    pub const fn new(vni: u32, mac: [u8; 6]) -> VnicMacKey {
        VnicMacKey {
            vni,
            mac,
            _pad: [0; 2],
        }
    }
}

/// `VNIC_ADDRS`' key: a virtual IP in its VCN (VCNs may reuse each other's addresses).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VnicAddrKey {
    pub vcn: u32,
    /// IPv4-mapped for IPv4.
    pub addr: [u8; 16],
}

/// A gateway (`GATEWAYS[slot]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayEntry {
    /// Its [`NextHop`] kind.
    pub kind: u8,
    /// NAT gateways: how many of `public` are in use.
    pub nat_ips: u8,
    pub _pad: [u8; 2],
    /// Service and dynamic routing gateways: the VNI the remote network is reached over,
    /// the VCN its answers are for, its VTEP and its inner MAC.
    pub vni: u32,
    pub vcn: u32,
    pub remote: [u8; 4],
    pub mac: [u8; 6],
    pub _pad2: [u8; 2],
    /// NAT gateways: the public addresses.
    pub public: [[u8; 4]; MAX_NAT_IPS],
}

/// `PublicEntry::kind`: a VNIC's 1:1 public address.
pub const PUBLIC_VNIC: u8 = 1;
/// `PublicEntry::kind`: one of a NAT gateway's shared addresses.
pub const PUBLIC_NAT: u8 = 2;

/// What a public IPv4 address of the fleet stands for (`PUBLIC_ADDRS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublicEntry {
    pub kind: u8,
    pub _pad: [u8; 3],
    /// The VNIC's slot ([`PUBLIC_VNIC`]) or the gateway's ([`PUBLIC_NAT`]).
    pub target: u32,
    /// [`PUBLIC_VNIC`]: the private address it maps to.
    pub private: [u8; 4],
}

/// `AclRule::action`.
pub const ACL_ALLOW: u8 = 1;
pub const ACL_DENY: u8 = 2;
/// `AclRule::flags`: the rule names destination ports.
pub const ACL_PORTS: u8 = 1;
/// `AclRule::flags`: answers to what it allows come back (see [`admits`]).
pub const ACL_STATEFUL: u8 = 2;

/// One security rule (`ACL_RULES[set * MAX_RULES + i]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct AclRule {
    pub action: u8,
    /// An IP protocol, 0 for any.
    pub proto: u8,
    pub flags: u8,
    /// The peer prefix's length, IPv4-mapped (an IPv4 /24 is 120).
    pub prefix_len: u8,
    /// Destination ports, inclusive (with [`ACL_PORTS`]).
    pub port_lo: u16,
    pub port_hi: u16,
    /// The peer prefix, IPv4-mapped, host bits clear.
    pub addr: [u8; 16],
}

/// Whether `addr` is in `net`/`len` (both IPv4-mapped or both IPv6).
#[inline(always)]
pub fn in_prefix(addr: &[u8; 16], net: &[u8; 16], len: u8) -> bool {
    let (a_hi, a_lo) = halves(addr);
    let (n_hi, n_lo) = halves(net);
    let len = u32::from(len.min(128));
    let hi_mask = if len == 0 {
        0
    } else if len >= 64 {
        u64::MAX
    } else {
        u64::MAX << (64 - len)
    };
    let lo_mask = if len <= 64 {
        0
    } else if len >= 128 {
        u64::MAX
    } else {
        u64::MAX << (128 - len)
    };
    a_hi & hi_mask == n_hi & hi_mask && a_lo & lo_mask == n_lo & lo_mask
}

#[inline(always)]
fn halves(a: &[u8; 16]) -> (u64, u64) {
    (
        u64::from_be_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_be_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    )
}

/// What a rule is matched against: the protocol, the peer (the source of an ingress packet,
/// the destination of an egress one), the destination port (0 without ports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclPacket {
    pub proto: u8,
    pub peer: [u8; 16],
    pub dst_port: u16,
    /// Whether it has complete TCP/UDP ports.
    pub ports: bool,
}

impl AclRule {
    #[inline(always)]
    pub fn matches(&self, p: &AclPacket) -> bool {
        (self.proto == 0 || self.proto == p.proto)
            && in_prefix(&p.peer, &self.addr, self.prefix_len)
            && (self.flags & ACL_PORTS == 0
                || (p.ports && p.dst_port >= self.port_lo && p.dst_port <= self.port_hi))
    }
}

/// The security rules' decision on one direction of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// A rule of the direction allows it.
    Allowed,
    /// None does, but it answers what a stateful rule of the other direction allows.
    Answer,
    Denied,
}

/// The first rule that matched, as the decision needs it: its action and flags, or none.
/// (A plain integer rather than an `Option<AclRule>`: the BPF verifier refuses the
/// uninitialised payload of a `None` the compiler may copy around.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matched(pub u8);

impl Matched {
    pub const NONE: Matched = Matched(0);

    #[inline(always)]
    pub fn of(r: &AclRule) -> Matched {
        Matched(r.action | (r.flags << 4))
    }

    #[inline(always)]
    pub fn allows(self) -> bool {
        self.0 & 0x0f == ACL_ALLOW
    }

    #[inline(always)]
    pub fn stateful(self) -> bool {
        (self.0 >> 4) & ACL_STATEFUL != 0
    }
}

/// Decides one direction: `own` is the first of the direction's rules that matches the
/// packet; `other` the first of the other direction's rules that matches the packet seen as
/// the connection it would answer (the same peer, its source port as that connection's
/// destination port); `may_answer` whether it can be an answer at all ([`may_answer`]).
///
/// The first matching rule decides; a packet no rule allows still passes as the answer to a
/// connection a stateful rule of the other direction allows. Any host decides alike with
/// nothing shared: answers are recognised from the rules and the packet alone, not from a
/// connection table that one host of the fleet would hold and the others not.
#[inline(always)]
pub fn admits(own: Matched, other: Matched, may_answer: bool) -> Admission {
    if own.allows() {
        return Admission::Allowed;
    }
    if may_answer && other.allows() && other.stateful() {
        return Admission::Answer;
    }
    Admission::Denied
}

/// The first rule of `rules` that matches `p` (the userspace form of the dataplane's loop
/// over `ACL_RULES`).
pub fn first_match<'a>(rules: &'a [AclRule], p: &AclPacket) -> Option<&'a AclRule> {
    rules.iter().find(|r| r.matches(p))
}

/// TCP's ACK flag: a TCP segment that answers carries it (a bare SYN opens, never answers).
pub const TCP_ACK: u8 = 0x10;

/// Whether a packet may answer a connection: anything but a TCP segment without ACK.
#[inline(always)]
pub fn may_answer(p: &Parsed) -> bool {
    p.ip_proto != crate::headers::IPPROTO_TCP || p.tcp_flags & TCP_ACK != 0
}

/// `ROUTE_CACHE`'s key: a route table and a destination (IPv4-mapped).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RouteCacheKey {
    pub table: u32,
    pub addr: [u8; 16],
}

/// A destination's route as a lookup through `table` found it: the final route, the routes
/// of the virtual routers on the way (for their counters), and the routes' generation
/// (`ROUTE_GEN`) it was found in; an entry of another generation is stale.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CachedRoute {
    pub entry: RouteEntry,
    pub generation: u32,
    pub routers: u32,
    pub router_routes: [u32; MAX_ROUTER_HOPS],
}

/// `NatKey::dir`: a connection's packets from the VNIC, keyed by the private side.
pub const NAT_OUT: u8 = 1;
/// Its answers, keyed by the public side.
pub const NAT_IN: u8 = 2;

/// A NAT gateway connection's key (`NAT_SESSIONS`), one per direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatKey {
    /// Outward: the private source; inward: the public destination.
    pub local: [u8; 4],
    pub remote: [u8; 4],
    pub local_port: u16,
    pub remote_port: u16,
    pub proto: u8,
    pub dir: u8,
    pub _pad: [u8; 2],
    /// Outward: the VNIC's slot (private addresses repeat across VCNs); inward: 0.
    pub vnic: u32,
}

/// What a NAT key translates to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatEntry {
    /// Outward: the public address and port; inward: the private ones.
    pub addr: [u8; 4],
    pub port: u16,
    pub _pad: [u8; 2],
    /// Inward: the VNIC's slot.
    pub vnic: u32,
    /// The gateway.
    pub gateway: u32,
}

/// The public address (an index into the gateway's `public`) a private IPv4 address leaves
/// by: taken in turn by a hash of the address, so a VNIC keeps one public address (what far
/// sides' allow-lists expect) and VNICs spread over all of them.
#[inline(always)]
pub fn public_index(private: [u8; 4], n: u32) -> u32 {
    if n == 0 {
        return 0;
    }
    let h = u64::from(u32::from_be_bytes(private));
    spread(h) % n
}

/// Fibonacci hashing: neighbouring values land apart.
#[inline(always)]
pub fn spread(h: u64) -> u32 {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

/// A fleet's ports are cut in blocks, one per host: `[first, last]` of host `index` among
/// `hosts` (equal shares of `NAT_FIRST_PORT..=65535`, the remainder to the first hosts).
#[inline(always)]
pub fn port_block(index: u32, hosts: u32) -> Option<(u16, u16)> {
    let total = u32::from(u16::MAX) - u32::from(NAT_FIRST_PORT) + 1;
    if index >= hosts || hosts > total {
        return None;
    }
    let (share, extra) = (total / hosts, total % hosts);
    let first = u32::from(NAT_FIRST_PORT) + index * share + index.min(extra);
    let len = share + u32::from(index < extra);
    Some((first as u16, (first + len - 1) as u16))
}

/// The host whose block holds `port` (`None`: below [`NAT_FIRST_PORT`], nobody's).
#[inline(always)]
pub fn port_owner(port: u16, hosts: u32) -> Option<u32> {
    let total = u32::from(u16::MAX) - u32::from(NAT_FIRST_PORT) + 1;
    if port < NAT_FIRST_PORT || hosts == 0 {
        return None;
    }
    let hosts = hosts.min(total);
    let (share, extra) = (total / hosts, total % hosts);
    if share == 0 {
        return None;
    }
    let at = u32::from(port - NAT_FIRST_PORT);
    // The first `extra` blocks are one port longer.
    let long = extra * (share + 1);
    Some(if at < long {
        at / (share + 1)
    } else {
        extra + (at - long) / share
    })
}

/// A fleet host (`FLEET_HOSTS[index]`): where NAT answers it owns are handed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FleetHostEntry {
    pub vtep: [u8; 4],
}

/// Per VNIC, per CPU (`VNIC_STATS`): what it sent that was forwarded, what was delivered to
/// it, and what of either was dropped.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnicCounters {
    pub sent: Counter,
    pub received: Counter,
    pub dropped: Counter,
}

impl VnicCounters {
    /// Adds `other` in (another CPU's copy, say).
    pub fn merge(&mut self, other: &VnicCounters) {
        for (to, from) in [
            (&mut self.sent, other.sent),
            (&mut self.received, other.received),
            (&mut self.dropped, other.dropped),
        ] {
            to.packets += from.packets;
            to.bytes += from.bytes;
        }
    }
}

crate::counters! {
    /// What VNIC routing did, beyond each frame's reason (`VNIC_EVENTS`, per CPU).
    pub enum VnicCounter: u32, slots = 32, {
        /// Re-wrapped toward a VNIC's host.
        ToVnic = 0 => "to_vnic",
        /// Out through an internet gateway (1:1 address).
        ToInternet = 1 => "to_internet",
        /// Out through a NAT gateway.
        ToNat = 2 => "to_nat",
        /// Wrapped toward the services network.
        ToService = 3 => "to_service",
        /// Wrapped toward an on-premises network.
        ToOnPremises = 4 => "to_on_premises",
        /// From the internet to a VNIC's public address.
        FromInternet = 5 => "from_internet",
        /// An answer through a NAT gateway, to its VNIC.
        FromNat = 6 => "from_nat",
        /// From a service or dynamic routing gateway's network.
        FromGateway = 7 => "from_gateway",
        /// A NAT answer for a port another host owns, handed to it.
        HandedOff = 8 => "handed_off",
        /// A NAT answer another host handed us.
        HandedIn = 9 => "handed_in",
        /// A NAT gateway connection begun on this host.
        NatNew = 10 => "nat_new",
        /// A public port tried for a new NAT connection that was taken.
        NatPortTaken = 11 => "nat_port_taken",
        /// A NAT answer with no connection on its owner host (expired, or its host lost).
        NatNoSession = 12 => "nat_no_session",
        /// A packet NAT does not translate (not TCP or UDP, not IPv4).
        NatUnsupported = 13 => "nat_unsupported",
        /// A virtual router passed through.
        RouterHop = 14 => "router_hop",
        /// Let through as the answer to a connection a stateful rule allowed.
        AnswerAdmitted = 15 => "answer_admitted",
        /// To an internet gateway from a VNIC without a public address.
        NoPublicAddress = 16 => "no_public_address",
    }
}

/// Bytes the VXLAN-over-IPv4 outer headers take: Ethernet, IPv4 without options, UDP, VXLAN.
pub const OUTER_LEN: usize = crate::rewrite::VXLAN_V4_OVERHEAD;

/// The outer headers of a packet the fleet sends to a VTEP. The same packet comes out of
/// every host: DF set (an atomic datagram, whose ID RFC 6864 lets be 0), TTL
/// [`OUTER_TTL`], the UDP source port from the inner flow ([`outer_src_port`]).
#[inline(always)]
pub fn outer(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    flow: u32,
    dst_port: u16,
    vni: u32,
) -> crate::rewrite::OuterFields {
    crate::rewrite::OuterFields {
        src_mac,
        dst_mac,
        src,
        dst,
        src_port: outer_src_port(flow),
        dst_port,
        vni,
        ttl: OUTER_TTL,
        tos: 0,
        df: true,
        ip_id: 0,
    }
}

/// Which address of a packet NAT rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

/// Rewrites one IPv4 address of a packet, and its port when `l4` is given (TCP or UDP:
/// the ports and the checksum field), updating the IPv4 header checksum and the transport
/// checksum incrementally. A UDP checksum of 0 (none) stays 0.
#[inline(always)]
pub fn nat4(
    ip: &mut Ipv4Hdr,
    l4: Option<(&mut L4Ports, &mut Check)>,
    side: Side,
    addr: [u8; 4],
    port: u16,
) {
    let old = match side {
        Side::Source => ip.src,
        Side::Destination => ip.dst,
    };
    let check = u16::from_be_bytes(ip.check);
    ip.check = csum::replace32(check, old, addr).to_be_bytes();
    let proto = ip.protocol;
    match side {
        Side::Source => ip.src = addr,
        Side::Destination => ip.dst = addr,
    }
    if let Some((ports, sum)) = l4 {
        let original = u16::from_be_bytes(sum.0);
        let field = match side {
            Side::Source => &mut ports.src,
            Side::Destination => &mut ports.dst,
        };
        let mut c = csum::replace32(original, old, addr);
        c = csum::replace16(c, u16::from_be_bytes(*field), port);
        if proto == IPPROTO_UDP {
            c = csum::udp_after(original, c);
        }
        *field = port.to_be_bytes();
        sum.0 = c.to_be_bytes();
    }
}

/// One router hop: the TTL one less, the checksum updated. `false` (nothing changed): the
/// TTL would run out here.
#[inline(always)]
pub fn hop4(ip: &mut Ipv4Hdr) -> bool {
    if ip.ttl <= 1 {
        return false;
    }
    let ttl = ip.ttl - 1;
    let check = csum::replace_ttl(u16::from_be_bytes(ip.check), ip.ttl, ttl, ip.protocol);
    ip.ttl = ttl;
    ip.check = check.to_be_bytes();
    true
}

/// [`hop4`] for IPv6, which has no header checksum.
#[inline(always)]
pub fn hop6(ip: &mut Ipv6Hdr) -> bool {
    if ip.hop_limit <= 1 {
        return false;
    }
    ip.hop_limit -= 1;
    true
}

/// The outer TTL: the underlay is a few routers deep.
pub const OUTER_TTL: u8 = 64;

/// The outer UDP source port of an inner flow with hash `h`: in the ephemeral range, as the
/// kernel's VXLAN devices pick it, so the underlay's ECMP spreads flows.
#[inline(always)]
pub fn outer_src_port(h: u32) -> u16 {
    const FIRST: u32 = 49152;
    (FIRST + (h % (65536 - FIRST))) as u16
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
