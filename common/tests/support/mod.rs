//! Builds test frames from a description with etherparse's header types, and says what the
//! parser must find in them.

use etherparse::{
    EtherType, Ethernet2Header, IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type,
    IpAuthHeader, IpFragOffset, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6FragmentHeader,
    Ipv6Header, Ipv6RawExtHeader, SingleVlanHeader, TcpHeader, UdpHeader, VlanId, VlanPcp,
};
use proptest::{collection::vec, prelude::*};

#[derive(Clone, Debug)]
pub enum Transport {
    Tcp {
        src: u16,
        dst: u16,
        option_words: u8,
    },
    Udp {
        src: u16,
        dst: u16,
    },
    Icmp {
        kind: u8,
        code: u8,
    },
    /// Some other protocol number with an opaque payload.
    Other(u8),
}

#[derive(Clone, Debug)]
pub enum Ipv6Ext {
    HopByHop(u8),
    DestOpts(u8),
    Routing(u8),
    Fragment { offset: u16, more: bool },
    Auth(u8),
}

#[derive(Clone, Debug)]
pub enum Net {
    Ipv4 {
        src: [u8; 4],
        dst: [u8; 4],
        option_words: u8,
        /// (offset in 8-byte units, more fragments)
        fragment: Option<(u16, bool)>,
        transport: Transport,
    },
    Ipv6 {
        src: [u8; 16],
        dst: [u8; 16],
        exts: Vec<Ipv6Ext>,
        transport: Transport,
    },
    /// A non-IP ethertype with an opaque body.
    Other(u16),
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlans: Vec<u16>,
    pub net: Net,
    pub payload: usize,
}

/// The IP protocol number of `t` (ICMP's depends on the IP version).
pub fn transport_proto(t: &Transport, v6: bool) -> u8 {
    match t {
        Transport::Tcp { .. } => 6,
        Transport::Udp { .. } => 17,
        Transport::Icmp { .. } if v6 => 58,
        Transport::Icmp { .. } => 1,
        Transport::Other(p) => *p,
    }
}

fn ext_proto(e: &Ipv6Ext) -> u8 {
    match e {
        Ipv6Ext::HopByHop(_) => 0,
        Ipv6Ext::DestOpts(_) => 60,
        Ipv6Ext::Routing(_) => 43,
        Ipv6Ext::Fragment { .. } => 44,
        Ipv6Ext::Auth(_) => 51,
    }
}

fn write_transport(t: &Transport, v6: bool, payload: usize, out: &mut Vec<u8>) {
    match *t {
        Transport::Tcp {
            src,
            dst,
            option_words,
        } => {
            let mut h = TcpHeader::new(src, dst, 1000, 65535);
            h.syn = true;
            h.ack = true;
            h.set_options_raw(&vec![1u8; option_words as usize * 4])
                .unwrap();
            h.write(out).unwrap();
        }
        Transport::Udp { src, dst } => {
            let h = UdpHeader {
                source_port: src,
                destination_port: dst,
                length: (8 + payload) as u16,
                checksum: 0,
            };
            h.write(out).unwrap();
        }
        Transport::Icmp { kind, code } => {
            if v6 {
                let ty = Icmpv6Type::Unknown {
                    type_u8: kind,
                    code_u8: code,
                    bytes5to8: [0; 4],
                };
                Icmpv6Header::new(ty).write(out).unwrap();
            } else {
                let ty = if kind == 8 && code == 0 {
                    Icmpv4Type::EchoRequest(IcmpEchoHeader { id: 1, seq: 2 })
                } else {
                    Icmpv4Type::Unknown {
                        type_u8: kind,
                        code_u8: code,
                        bytes5to8: [0; 4],
                    }
                };
                Icmpv4Header::new(ty).write(out).unwrap();
            }
        }
        Transport::Other(_) => {}
    }
}

fn transport_len(t: &Transport) -> usize {
    match t {
        Transport::Tcp { option_words, .. } => 20 + *option_words as usize * 4,
        Transport::Udp { .. } | Transport::Icmp { .. } => 8,
        Transport::Other(_) => 0,
    }
}

fn ext_len(e: &Ipv6Ext) -> usize {
    match e {
        Ipv6Ext::HopByHop(n) | Ipv6Ext::DestOpts(n) | Ipv6Ext::Routing(n) => (*n as usize + 1) * 8,
        Ipv6Ext::Fragment { .. } => 8,
        Ipv6Ext::Auth(n) => 12 + *n as usize * 4,
    }
}

impl Spec {
    /// Whether the parser should skip the transport header (fragments).
    pub fn fragmented(&self) -> bool {
        match &self.net {
            Net::Ipv4 { fragment, .. } => fragment.is_some(),
            Net::Ipv6 { exts, .. } => exts.iter().any(|e| matches!(e, Ipv6Ext::Fragment { .. })),
            Net::Other(_) => false,
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let first_type = |i: usize| -> u16 {
            if i < self.vlans.len() {
                if i == 0 && self.vlans.len() == 2 {
                    0x88a8
                } else {
                    0x8100
                }
            } else {
                match &self.net {
                    Net::Ipv4 { .. } => 0x0800,
                    Net::Ipv6 { .. } => 0x86dd,
                    Net::Other(t) => *t,
                }
            }
        };
        Ethernet2Header {
            source: self.src_mac,
            destination: self.dst_mac,
            ether_type: EtherType(first_type(0)),
        }
        .write(&mut out)
        .unwrap();
        for (i, vid) in self.vlans.iter().enumerate() {
            SingleVlanHeader {
                pcp: VlanPcp::ZERO,
                drop_eligible_indicator: false,
                vlan_id: VlanId::try_new(*vid).unwrap(),
                ether_type: EtherType(first_type(i + 1)),
            }
            .write(&mut out)
            .unwrap();
        }
        match &self.net {
            Net::Ipv4 {
                src,
                dst,
                option_words,
                fragment,
                transport,
            } => {
                let body = transport_len(transport) + self.payload;
                let mut h = Ipv4Header::new(
                    body as u16,
                    64,
                    IpNumber(transport_proto(transport, false)),
                    *src,
                    *dst,
                )
                .unwrap();
                h.options = vec![1u8; *option_words as usize * 4][..]
                    .try_into()
                    .unwrap();
                h.total_len = (h.header_len() + body) as u16;
                if let Some((offset, more)) = fragment {
                    h.fragment_offset = IpFragOffset::try_new(*offset).unwrap();
                    h.more_fragments = *more;
                }
                h.header_checksum = h.calc_header_checksum();
                h.write(&mut out).unwrap();
                write_transport(transport, false, self.payload, &mut out);
            }
            Net::Ipv6 {
                src,
                dst,
                exts,
                transport,
            } => {
                let body = exts.iter().map(ext_len).sum::<usize>()
                    + transport_len(transport)
                    + self.payload;
                let first = exts
                    .first()
                    .map(ext_proto)
                    .unwrap_or(transport_proto(transport, true));
                Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: body as u16,
                    next_header: IpNumber(first),
                    hop_limit: 64,
                    source: *src,
                    destination: *dst,
                }
                .write(&mut out)
                .unwrap();
                for (i, e) in exts.iter().enumerate() {
                    let next = IpNumber(
                        exts.get(i + 1)
                            .map(ext_proto)
                            .unwrap_or(transport_proto(transport, true)),
                    );
                    match e {
                        Ipv6Ext::HopByHop(n) | Ipv6Ext::DestOpts(n) | Ipv6Ext::Routing(n) => {
                            let payload = vec![0u8; (*n as usize + 1) * 8 - 2];
                            Ipv6RawExtHeader::new_raw(next, &payload)
                                .unwrap()
                                .write(&mut out)
                                .unwrap();
                        }
                        Ipv6Ext::Fragment { offset, more } => {
                            Ipv6FragmentHeader::new(
                                next,
                                IpFragOffset::try_new(*offset).unwrap(),
                                *more,
                                7,
                            )
                            .write(&mut out)
                            .unwrap();
                        }
                        Ipv6Ext::Auth(n) => {
                            let icv = vec![0u8; *n as usize * 4];
                            IpAuthHeader::new(next, 1, 1, &icv)
                                .unwrap()
                                .write(&mut out)
                                .unwrap();
                        }
                    }
                }
                write_transport(transport, true, self.payload, &mut out);
            }
            Net::Other(_) => {}
        }
        out.extend((0..self.payload).map(|i| i as u8));
        out
    }
}

fn mac() -> impl Strategy<Value = [u8; 6]> {
    any::<[u8; 6]>()
}

fn transport() -> impl Strategy<Value = Transport> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), 0u8..=10).prop_map(|(src, dst, option_words)| {
            Transport::Tcp {
                src,
                dst,
                option_words,
            }
        }),
        (any::<u16>(), any::<u16>()).prop_map(|(src, dst)| Transport::Udp { src, dst }),
        (any::<u8>(), any::<u8>()).prop_map(|(kind, code)| Transport::Icmp { kind, code }),
        // Protocols with no header the parser reads: SCTP, ESP-less ones, OSPF, experimental.
        prop::sample::select(vec![132u8, 89, 253, 254]).prop_map(Transport::Other),
    ]
}

/// IPv6 extension chains in the order RFC 8200 recommends, each header at most once (the
/// destination options header may also stand before the routing header).
fn ipv6_exts() -> impl Strategy<Value = Vec<Ipv6Ext>> {
    (
        proptest::option::of(0u8..4),
        proptest::option::of(0u8..4),
        proptest::option::of(0u8..4),
        proptest::option::of((0u16..8191, any::<bool>())),
        proptest::option::of(1u8..6),
    )
        .prop_map(|(hop, dest, routing, fragment, auth)| {
            let mut v = Vec::new();
            if let Some(n) = hop {
                v.push(Ipv6Ext::HopByHop(n));
            }
            if let Some(n) = dest {
                v.push(Ipv6Ext::DestOpts(n));
            }
            if let Some(n) = routing {
                v.push(Ipv6Ext::Routing(n));
            }
            if let Some((offset, more)) = fragment {
                v.push(Ipv6Ext::Fragment { offset, more });
            }
            if let Some(n) = auth {
                v.push(Ipv6Ext::Auth(n));
            }
            v
        })
}

fn ip_net() -> impl Strategy<Value = Net> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            0u8..=10,
            proptest::option::weighted(0.2, (0u16..8191, any::<bool>())),
            transport()
        )
            .prop_map(|(src, dst, option_words, fragment, transport)| Net::Ipv4 {
                src,
                dst,
                option_words,
                // offset 0 without more-fragments is not a fragment
                fragment: fragment.filter(|&(o, m)| o != 0 || m),
                transport,
            }),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            ipv6_exts(),
            transport()
        )
            .prop_map(|(src, dst, exts, transport)| Net::Ipv6 {
                src,
                dst,
                exts,
                transport,
            }),
    ]
}

fn net() -> impl Strategy<Value = Net> {
    prop_oneof![
        2 => ip_net(),
        1 => prop::sample::select(vec![0x0806u16, 0x88cc, 0x8847, 0x9000]).prop_map(Net::Other),
    ]
}

/// Frames of every kind the builder makes.
pub fn spec() -> impl Strategy<Value = Spec> {
    spec_with(net().boxed())
}

/// IPv4 and IPv6 frames only.
pub fn ip_spec() -> impl Strategy<Value = Spec> {
    spec_with(ip_net().boxed())
}

fn spec_with(net: BoxedStrategy<Net>) -> impl Strategy<Value = Spec> {
    (mac(), mac(), vec(1u16..4095, 0..=2), net, 0usize..200).prop_map(
        |(dst_mac, src_mac, vlans, net, payload)| Spec {
            dst_mac,
            src_mac,
            vlans,
            net,
            payload,
        },
    )
}

pub fn transport_of(spec: &Spec) -> Option<&Transport> {
    match &spec.net {
        Net::Ipv4 { transport, .. } | Net::Ipv6 { transport, .. } => Some(transport),
        Net::Other(_) => None,
    }
}

pub fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a);
    m
}
