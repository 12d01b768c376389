//! Where the kernel would send a packet: the route (`ip route get`), the neighbour's MAC,
//! the output interface's MAC and MTU, and, for a VXLAN device, the tunnel's own settings.
//!
//! Flow offload asks this when it promotes a flow, rather than looking routes up per packet
//! with `bpf_fib_lookup` in XDP: the kernel's answer through rtnetlink is its whole routing
//! decision (policy rules, multipath, the neighbour table) once per flow; a route through a
//! VXLAN device needs the device's VNI and remote end, which a FIB lookup cannot give; and
//! the fast path saves a lookup per packet. Routes and neighbours that change while a flow is
//! offloaded demote it (the link and neighbour events), so nothing stale is used.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context as _, anyhow, bail};
use rtnetlink::{
    packet_core::{NetlinkDeserializable, NetlinkHeader},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage},
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteMessage},
    },
    sys::protocols::NETLINK_ROUTE,
};

use crate::netlink::{Channel, Reply, errno};

/// The kernel's route for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub oif: u32,
    /// The gateway, or `None` for a destination on the link itself.
    pub gateway: Option<IpAddr>,
    /// The source address the kernel would pick.
    pub prefsrc: Option<IpAddr>,
}

/// An interface as the fast path needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    pub vxlan: Option<Vxlan>,
}

/// A VXLAN device's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vxlan {
    pub vni: u32,
    /// Unicast remote end (`remote`), if the device has one; multicast groups and FDB-only
    /// devices leave flows to the kernel.
    pub remote: Option<Ipv4Addr>,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    /// The underlay device it is bound to (`dev`), 0 when none.
    pub link: u32,
    pub ttl: u8,
    pub tos: u8,
    pub port_range: Option<(u16, u16)>,
}

/// The next hop of a destination, resolved down to MACs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub link: Link,
    /// The neighbour packets are sent to (the gateway, or the destination).
    pub neighbour: IpAddr,
    pub neighbour_mac: [u8; 6],
    pub prefsrc: Option<IpAddr>,
}

/// rtnetlink requests, in the calling thread's network namespace.
pub struct Resolver {
    channel: Channel,
}

fn parse(r: &Reply) -> anyhow::Result<RouteNetlinkMessage> {
    let mut header = NetlinkHeader::default();
    header.message_type = r.message_type;
    RouteNetlinkMessage::deserialize(&header, &r.payload)
        .map_err(|e| anyhow!("malformed rtnetlink message: {e}"))
}

fn family(a: &IpAddr) -> AddressFamily {
    match a {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn mac_of(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

impl Resolver {
    pub fn open() -> anyhow::Result<Resolver> {
        Ok(Resolver {
            channel: Channel::open(NETLINK_ROUTE)?,
        })
    }

    /// `ip route get DST`: `None` when there is no route.
    pub fn route(&mut self, dst: IpAddr) -> anyhow::Result<Option<Route>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(&dst);
        msg.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        msg.attributes.push(RouteAttribute::Destination(dst.into()));
        let replies = match self.channel.request(RouteNetlinkMessage::GetRoute(msg), 0) {
            Ok(r) => r,
            Err(e) if unreachable(&e) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot look up the route to {dst}")),
        };
        for r in &replies {
            if let RouteNetlinkMessage::NewRoute(m) = parse(r)? {
                let mut route = Route {
                    oif: 0,
                    gateway: None,
                    prefsrc: None,
                };
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Oif(i) => route.oif = *i,
                        RouteAttribute::Gateway(g) => route.gateway = ip_of(g),
                        RouteAttribute::PrefSource(s) => route.prefsrc = ip_of(s),
                        _ => {}
                    }
                }
                return Ok((route.oif != 0).then_some(route));
            }
        }
        Ok(None)
    }

    /// The MAC of neighbour `addr` on `ifindex`, if the kernel has resolved it.
    pub fn neighbour(&mut self, ifindex: u32, addr: IpAddr) -> anyhow::Result<Option<[u8; 6]>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family(&addr);
        msg.header.ifindex = ifindex;
        msg.attributes
            .push(NeighbourAttribute::Destination(match addr {
                IpAddr::V4(v) => NeighbourAddress::Inet(v),
                IpAddr::V6(v) => NeighbourAddress::Inet6(v),
            }));
        let replies = match self
            .channel
            .request(RouteNetlinkMessage::GetNeighbour(msg), 0)
        {
            Ok(r) => r,
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot look up neighbour {addr}"));
            }
        };
        for r in &replies {
            if let RouteNetlinkMessage::NewNeighbour(m) = parse(r)? {
                if matches!(
                    m.header.state,
                    NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
                ) {
                    return Ok(None);
                }
                for a in &m.attributes {
                    if let NeighbourAttribute::LinkLayerAddress(mac) = a {
                        return Ok(mac_of(mac));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Interface `ifindex`.
    pub fn link(&mut self, ifindex: u32) -> anyhow::Result<Link> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        let replies = self
            .channel
            .request(RouteNetlinkMessage::GetLink(msg), 0)
            .with_context(|| format!("cannot look up interface {ifindex}"))?;
        for r in &replies {
            if let RouteNetlinkMessage::NewLink(m) = parse(r)? {
                let mut link = Link {
                    ifindex,
                    name: String::new(),
                    mac: None,
                    mtu: 0,
                    vxlan: None,
                };
                for a in &m.attributes {
                    match a {
                        LinkAttribute::IfName(n) => link.name = n.clone(),
                        LinkAttribute::Address(mac) => link.mac = mac_of(mac),
                        LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                        LinkAttribute::LinkInfo(infos) => link.vxlan = vxlan_of(infos),
                        _ => {}
                    }
                }
                return Ok(link);
            }
        }
        bail!("no interface {ifindex}")
    }

    /// The next hop for `dst`, down to MACs: `None` when the kernel has no route, or has not
    /// resolved the neighbour (the slow path will, with the flow's next packets).
    pub fn next_hop(&mut self, dst: IpAddr) -> anyhow::Result<Option<NextHop>> {
        let Some(route) = self.route(dst)? else {
            return Ok(None);
        };
        let neighbour = route.gateway.unwrap_or(dst);
        let link = self.link(route.oif)?;
        let Some(neighbour_mac) = self.neighbour(route.oif, neighbour)? else {
            return Ok(None);
        };
        Ok(Some(NextHop {
            link,
            neighbour,
            neighbour_mac,
            prefsrc: route.prefsrc,
        }))
    }
}

fn vxlan_of(infos: &[LinkInfo]) -> Option<Vxlan> {
    let mut is_vxlan = false;
    let mut v = Vxlan {
        vni: 0,
        remote: None,
        local: None,
        port: 4789,
        link: 0,
        ttl: 0,
        tos: 0,
        port_range: None,
    };
    for info in infos {
        match info {
            LinkInfo::Kind(InfoKind::Vxlan) => is_vxlan = true,
            LinkInfo::Data(InfoData::Vxlan(attrs)) => {
                for a in attrs {
                    match a {
                        InfoVxlan::Id(id) => v.vni = *id,
                        InfoVxlan::Group(g) if !g.is_multicast() => v.remote = Some(*g),
                        InfoVxlan::Local(l) => v.local = Some(*l),
                        InfoVxlan::Port(p) => v.port = *p,
                        InfoVxlan::Link(l) => v.link = *l,
                        InfoVxlan::Ttl(t) => v.ttl = *t,
                        InfoVxlan::Tos(t) => v.tos = *t,
                        InfoVxlan::PortRange(r) => v.port_range = Some(*r),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    is_vxlan.then_some(v)
}

fn unreachable(e: &anyhow::Error) -> bool {
    matches!(
        errno(e),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::ESRCH)
    )
}

fn not_found(e: &anyhow::Error) -> bool {
    matches!(errno(e), Some(libc::ENOENT))
}
