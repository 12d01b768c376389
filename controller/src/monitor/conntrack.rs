//! The kernel's connection tracking, through ctnetlink: the entries (a dump, or one by its
//! tuple), their events (new, update, destroy), and the changes flow offload makes to them
//! (a refreshed timeout, liberal window tracking, the TCP state handed back).
//!
//! Messages are `netlink-packet-netfilter`'s conntrack types. Attributes that crate leaves raw
//! (the entry's id, its counters, its zone) are read here, by their numbers in
//! `linux/netfilter/nfnetlink_conntrack.h`.

use std::{net::IpAddr, os::fd::AsRawFd};

use anyhow::{Context as _, anyhow};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
        Protocol, Status, TCPFlags, Tuple,
    },
};
use rtnetlink::{
    packet_core::{
        DefaultNla, NLM_F_CREATE, NLM_F_DUMP, Nla, NlaBuffer, NlasIterator, ParseableParametrized,
    },
    sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER},
};

use crate::netlink::{Channel, errno, messages};

// linux/netfilter/nfnetlink_conntrack.h
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
/// Attribute type bits (without the nested and byte-order flags).
const NLA_TYPE_MASK: u16 = 0x3fff;

/// linux/netfilter/nfnetlink.h: the conntrack event groups.
const NFNLGRP_CONNTRACK_NEW: u32 = 1;
const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

/// linux/netfilter/nf_conntrack_common.h: a TCP side's flag that turns window checks off.
pub const TCP_FLAG_BE_LIBERAL: u8 = 0x08;

/// linux/netfilter/nf_conntrack_tcp.h: TCP states as conntrack numbers them.
pub const TCP_CONNTRACK_ESTABLISHED: u8 = 3;

/// One direction's tuple as conntrack reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Ports; 0 for protocols without.
    pub src_port: u16,
    pub dst_port: u16,
}

impl CtTuple {
    /// Placeholder while an entry's attributes are read.
    const UNSET: CtTuple = CtTuple {
        src: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        proto: 0,
        src_port: 0,
        dst_port: 0,
    };
}

/// What conntrack tracks of a TCP connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtTcp {
    pub state: u8,
    pub wscale_orig: u8,
    pub wscale_reply: u8,
    pub flags_orig: u8,
    pub flags_reply: u8,
}

/// Packets and bytes one direction carried (only with `nf_conntrack_acct` on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtCounter {
    pub packets: u64,
    pub bytes: u64,
}

/// A conntrack entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtEntry {
    pub id: u32,
    pub orig: CtTuple,
    pub reply: CtTuple,
    /// `IPS_*` bits.
    pub status: u32,
    /// Seconds left before the entry times out.
    pub timeout: u32,
    pub mark: u32,
    pub zone: u16,
    pub tcp: Option<CtTcp>,
    /// Original and reply directions' counters, when accounting is on.
    pub counters: Option<[CtCounter; 2]>,
}

impl CtEntry {
    pub fn has(&self, bit: Status) -> bool {
        self.status & bit.bits() != 0
    }
}

/// What happened to an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtEvent {
    New(CtEntry),
    Update(CtEntry),
    Destroy(CtEntry),
}

/// A change flow offload makes to an entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtChange {
    /// A new timeout, in seconds.
    pub timeout: Option<u32>,
    /// Turn window tracking off (`IP_CT_TCP_FLAG_BE_LIBERAL`) on both sides, as
    /// `nf_flowtable` does while it carries a connection.
    pub liberal: bool,
    /// The TCP state to set.
    pub tcp_state: Option<u8>,
}

fn family_of(t: &CtTuple) -> NetfilterProtoFamily {
    match t.src {
        IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
        IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
    }
}

fn tuple_attrs(t: &CtTuple) -> Vec<Tuple> {
    let mut proto = vec![ProtoTuple::Protocol(Protocol::from(t.proto))];
    if t.src_port != 0 || t.dst_port != 0 {
        proto.push(ProtoTuple::SourcePort(t.src_port));
        proto.push(ProtoTuple::DestinationPort(t.dst_port));
    }
    vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(t.src),
            IPTuple::DestinationAddress(t.dst),
        ]),
        Tuple::Proto(proto),
    ]
}

fn message(family: NetfilterProtoFamily, msg: ConntrackMessage) -> NetfilterMessage {
    NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), msg)
}

/// Requests to conntrack, one at a time, in the calling thread's network namespace.
pub struct Conntrack {
    channel: Channel,
}

impl Conntrack {
    pub fn open() -> anyhow::Result<Conntrack> {
        Ok(Conntrack {
            channel: Channel::open(NETLINK_NETFILTER).context("cannot reach conntrack")?,
        })
    }

    /// Every entry, IPv4 and IPv6.
    pub fn dump(&mut self) -> anyhow::Result<Vec<CtEntry>> {
        let replies = self.channel.request(
            message(NetfilterProtoFamily::Unspec, ConntrackMessage::Get(vec![])),
            NLM_F_DUMP,
        )?;
        let mut out = Vec::new();
        for r in replies {
            if let Some(CtEvent::New(e) | CtEvent::Update(e)) =
                parse(r.message_type, r.flags, &r.payload)?
            {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The entry whose original tuple is `orig`, if conntrack has one.
    pub fn get(&mut self, orig: &CtTuple) -> anyhow::Result<Option<CtEntry>> {
        let req = message(
            family_of(orig),
            ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(tuple_attrs(orig))]),
        );
        match self.channel.request(req, 0) {
            Ok(replies) => {
                for r in replies {
                    if let Some(CtEvent::New(e) | CtEvent::Update(e)) =
                        parse(r.message_type, r.flags, &r.payload)?
                    {
                        return Ok(Some(e));
                    }
                }
                Ok(None)
            }
            Err(e) if is_enoent(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Changes the entry whose original tuple is `orig`. `Ok(false)`: conntrack has no such
    /// entry (any more).
    pub fn change(&mut self, orig: &CtTuple, change: &CtChange) -> anyhow::Result<bool> {
        let mut attrs = vec![ConntrackAttribute::CtaTupleOrig(tuple_attrs(orig))];
        if let Some(t) = change.timeout {
            attrs.push(ConntrackAttribute::CtaTimeout(t));
        }
        let mut tcp = Vec::new();
        if let Some(s) = change.tcp_state {
            tcp.push(ProtoInfoTCP::State(s));
        }
        if change.liberal {
            // The crate's type has no constructor: it parses its wire form (flags, mask).
            let f = TCPFlags::parse(&[TCP_FLAG_BE_LIBERAL, TCP_FLAG_BE_LIBERAL])
                .map_err(|e| anyhow!("cannot build TCP flags: {e}"))?;
            tcp.push(ProtoInfoTCP::OriginalFlags(f.clone()));
            tcp.push(ProtoInfoTCP::ReplyFlags(f));
        }
        if !tcp.is_empty() {
            attrs.push(ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(tcp)]));
        }
        // IPCTNL_MSG_CT_NEW without NLM_F_CREATE changes an existing entry only.
        match self
            .channel
            .request(message(family_of(orig), ConntrackMessage::New(attrs)), 0)
        {
            Ok(_) => Ok(true),
            Err(e) if is_enoent(&e) => Ok(false),
            Err(e) => {
                Err(e).with_context(|| format!("cannot change the conntrack entry of {orig:?}"))
            }
        }
    }
}

fn is_enoent(e: &anyhow::Error) -> bool {
    errno(e) == Some(libc::ENOENT)
}

/// The event socket's receive buffer: an event takes about 1 KiB of it (the message and
/// the kernel's buffer around it), so 32 MiB hold some 30k events, a period's worth of new
/// connections at 100k a second; beyond that the reader is told it lost some and dumps.
const EVENT_BUFFER_BYTES: usize = 32 << 20;

/// conntrack's events, on a socket of their own.
pub struct CtEvents {
    socket: Socket,
}

impl CtEvents {
    /// Subscribes to new, updated and destroyed entries. Events that overflow the socket are
    /// lost (`recv` then says so): the caller dumps again.
    pub fn open() -> anyhow::Result<CtEvents> {
        let mut socket = Socket::new(NETLINK_NETFILTER).context("cannot reach conntrack")?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .context("cannot bind a conntrack event socket")?;
        for group in [
            NFNLGRP_CONNTRACK_NEW,
            NFNLGRP_CONNTRACK_UPDATE,
            NFNLGRP_CONNTRACK_DESTROY,
        ] {
            socket
                .add_membership(group)
                .with_context(|| format!("cannot join conntrack event group {group}"))?;
        }
        socket
            .set_non_blocking(true)
            .context("cannot make the conntrack event socket non-blocking")?;
        // Room for a burst of new connections between two reads; past it, a dump.
        let _ = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::RcvBufForce,
            &EVENT_BUFFER_BYTES,
        );
        Ok(CtEvents { socket })
    }

    pub fn raw_fd(&self) -> i32 {
        self.socket.as_raw_fd()
    }

    /// The events queued now (none when there are none). `Err` with `ENOBUFS`: some were
    /// lost.
    pub fn recv(&mut self) -> anyhow::Result<Vec<CtEvent>> {
        let mut out = Vec::new();
        loop {
            let data = match self.socket.recv_from_full() {
                Ok((data, _)) => data,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) => return Err(e).context("cannot read conntrack events"),
            };
            for msg in messages(&data)? {
                if let Some(ev) = parse(msg.message_type(), msg.flags(), msg.payload())? {
                    out.push(ev);
                }
            }
        }
    }
}

/// An entry from a message of conntrack's (`None`: not an entry).
fn parse(message_type: u16, flags: u16, payload: &[u8]) -> anyhow::Result<Option<CtEvent>> {
    let msg = NetfilterMessage::parse_with_param(payload, message_type)
        .map_err(|e| anyhow!("malformed conntrack message: {e}"))?;
    let (attrs, kind): (&[ConntrackAttribute], u8) = match &msg.inner {
        NetfilterMessageInner::Conntrack(ConntrackMessage::New(a)) => (a, 0),
        NetfilterMessageInner::Conntrack(ConntrackMessage::Get(a)) => (a, 1),
        NetfilterMessageInner::Conntrack(ConntrackMessage::Delete(a)) => (a, 2),
        _ => return Ok(None),
    };
    let Some(entry) = entry(attrs) else {
        return Ok(None);
    };
    // Events: NEW with NLM_F_CREATE is a new entry, without it an update (and a dump's
    // entries read as updates).
    Ok(Some(match kind {
        2 => CtEvent::Destroy(entry),
        0 if flags & NLM_F_CREATE != 0 => CtEvent::New(entry),
        _ => CtEvent::Update(entry),
    }))
}

fn tuple(parts: &[Tuple]) -> Option<CtTuple> {
    let (mut src, mut dst, mut proto, mut sp, mut dp) = (None, None, None, 0, 0);
    for p in parts {
        match p {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for x in ps {
                    match x {
                        ProtoTuple::Protocol(p) => proto = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(p) => sp = *p,
                        ProtoTuple::DestinationPort(p) => dp = *p,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(CtTuple {
        src: src?,
        dst: dst?,
        proto: proto?,
        src_port: sp,
        dst_port: dp,
    })
}

/// The raw value of an attribute the crate leaves undecoded.
fn value(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

fn be_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
}

fn counter(v: &[u8]) -> CtCounter {
    let mut c = CtCounter::default();
    for nla in NlasIterator::new(v).flatten() {
        let nla: NlaBuffer<&[u8]> = nla;
        match nla.kind() & NLA_TYPE_MASK {
            CTA_COUNTERS_PACKETS => c.packets = be_u64(nla.value()).unwrap_or(0),
            CTA_COUNTERS_BYTES => c.bytes = be_u64(nla.value()).unwrap_or(0),
            _ => {}
        }
    }
    c
}

fn entry(attrs: &[ConntrackAttribute]) -> Option<CtEntry> {
    let (mut orig, mut reply) = (None, None);
    let mut e = CtEntry {
        id: 0,
        orig: CtTuple::UNSET,
        reply: CtTuple::UNSET,
        status: 0,
        timeout: 0,
        mark: 0,
        zone: 0,
        tcp: None,
        counters: None,
    };
    let mut counters = [CtCounter::default(); 2];
    let mut counted = false;
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple(t),
            ConntrackAttribute::CtaStatus(s) => e.status = s.bits(),
            ConntrackAttribute::CtaTimeout(t) => e.timeout = *t,
            ConntrackAttribute::CtaMark(m) => e.mark = *m,
            ConntrackAttribute::CtaProtoInfo(infos) => {
                for info in infos {
                    if let ProtoInfo::TCP(parts) = info {
                        let mut tcp = CtTcp::default();
                        for p in parts {
                            match p {
                                ProtoInfoTCP::State(s) => tcp.state = *s,
                                ProtoInfoTCP::OriginalWindowScale(w) => tcp.wscale_orig = *w,
                                ProtoInfoTCP::ReplyWindowScale(w) => tcp.wscale_reply = *w,
                                ProtoInfoTCP::OriginalFlags(f) => tcp.flags_orig = f.flags,
                                ProtoInfoTCP::ReplyFlags(f) => tcp.flags_reply = f.flags,
                                _ => {}
                            }
                        }
                        e.tcp = Some(tcp);
                    }
                }
            }
            ConntrackAttribute::Other(nla) => {
                let v = value(nla);
                match nla.kind() & NLA_TYPE_MASK {
                    CTA_ID => e.id = be_u32(&v).unwrap_or(0),
                    CTA_ZONE => e.zone = v.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]])),
                    CTA_COUNTERS_ORIG => {
                        counters[0] = counter(&v);
                        counted = true;
                    }
                    CTA_COUNTERS_REPLY => {
                        counters[1] = counter(&v);
                        counted = true;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    e.orig = orig?;
    e.reply = reply?;
    e.counters = counted.then_some(counters);
    Some(e)
}

/// conntrack's timeouts for established TCP and answered UDP, from its sysctls in the
/// calling thread's namespace (the kernel's defaults where one cannot be read).
pub fn timeouts() -> crate::policy::offload::CtTimeouts {
    let read = |name: &str| -> Option<u32> {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let d = crate::policy::offload::CtTimeouts::default();
    crate::policy::offload::CtTimeouts {
        tcp_established_s: read("nf_conntrack_tcp_timeout_established")
            .unwrap_or(d.tcp_established_s),
        udp_stream_s: read("nf_conntrack_udp_timeout_stream").unwrap_or(d.udp_stream_s),
    }
}
