//! The shaper's queues in the kernel: an HTB root qdisc (`xn:`) on each team uplink that
//! carries shaped VMs, and one class per shaped VM under it (`xn:<slot + 1>`) over a byte
//! FIFO. See `xnic_common::shaper` for why.
//!
//! Over rtnetlink with `netlink-packet-route`'s message types. Its tc module knows neither
//! HTB nor FIFO options, so those are encoded here (`linux/pkt_sched.h`), and dumps are read
//! at the header level: a dump of every qdisc holds kinds whose options the crate would
//! misparse, and only the kind, handles and our own classes' options matter here.

use std::collections::BTreeMap;

use anyhow::{Context as _, anyhow, bail};
use rtnetlink::{
    packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NlasIterator},
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcHandle, TcHeader, TcMessage},
    },
    sys::protocols::NETLINK_ROUTE,
};
use xnic_common::shaper::{QDISC_MAJOR, class_id, class_slot, queue_limit_bytes};

use crate::netlink::Channel;

pub use crate::policy::plan::ShapeClass;

/// What a class has done (`tc -s class show`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    pub bytes: u64,
    pub packets: u32,
    pub drops: u32,
    pub backlog_bytes: u32,
}

// linux/rtnetlink.h, linux/pkt_sched.h, linux/gen_stats.h.
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const RTM_NEWTCLASS: u16 = 40;
const RTM_DELTCLASS: u16 = 41;
const RTM_GETTCLASS: u16 = 42;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_STATS2: u16 = 7;
const TCA_STATS_BASIC: u16 = 1;
const TCA_STATS_QUEUE: u16 = 3;
const TCA_HTB_PARMS: u16 = 1;
const TCA_HTB_INIT: u16 = 2;
const TCA_HTB_RATE64: u16 = 6;
const TCA_HTB_CEIL64: u16 = 7;
/// Attribute type bits (without the nested and byte-order flags).
const NLA_TYPE_MASK: u16 = 0x3fff;
const TC_H_ROOT: u32 = 0xFFFF_FFFF;
const TC_LINKLAYER_ETHERNET: u8 = 1;
const HTB_VERSION: u32 = 3;
/// HTB's round-robin quantum between sibling classes: our classes never borrow (ceil =
/// rate), so it only has to exceed an aggregated segment's share of a round.
const CLASS_QUANTUM: u32 = 65536;
/// Root qdiscs xnic replaces: the kernel's defaults. Anything else is an operator's.
const DEFAULT_ROOTS: &[&str] = &["noqueue", "pfifo_fast", "mq", "pfifo", "fq_codel"];
/// Leaf FIFOs get handle `LEAF_MAJOR_BASE + slot`: unique per interface, apart from ours.
const LEAF_MAJOR_BASE: u32 = 0x1000;

const fn root_handle() -> u32 {
    (QDISC_MAJOR as u32) << 16
}

/// A route netlink socket for tc requests, in the calling thread's network namespace.
pub struct Tc {
    channel: Channel,
}

/// One message of a reply: its type and its tc header and attributes (raw).
struct Reply {
    header: TcHeader,
    attrs: Vec<u8>,
}

impl Reply {
    fn attr(&self, kind: u16) -> Option<&[u8]> {
        attr(&self.attrs, kind)
    }

    fn kind(&self) -> Option<&str> {
        let v = self.attr(TCA_KIND)?;
        std::str::from_utf8(v.split(|b| *b == 0).next()?).ok()
    }
}

fn attr(buf: &[u8], kind: u16) -> Option<&[u8]> {
    let mut at = 0;
    for nla in NlasIterator::new(buf) {
        let nla = nla.ok()?;
        let len = usize::from(nla.length());
        if nla.kind() & NLA_TYPE_MASK == kind {
            return buf.get(at + 4..at + len);
        }
        at += len.div_ceil(4) * 4;
    }
    None
}

/// An attribute's bytes (header, value, padding to 4).
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::with_capacity(len.div_ceil(4) * 4);
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(len.div_ceil(4) * 4, 0);
    out
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// `struct tc_ratespec` at `rate` bytes/s (capped at what 32 bits hold; see RATE64).
fn ratespec(rate: u64) -> Vec<u8> {
    let mut r = vec![0u8, TC_LINKLAYER_ETHERNET];
    r.extend_from_slice(&0u16.to_ne_bytes()); // overhead
    r.extend_from_slice(&0i16.to_ne_bytes()); // cell_align
    r.extend_from_slice(&0u16.to_ne_bytes()); // mpu
    r.extend_from_slice(&(rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
    r
}

fn ne_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn ne_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

impl Tc {
    pub fn open() -> anyhow::Result<Tc> {
        Ok(Tc {
            channel: Channel::open(NETLINK_ROUTE)?,
        })
    }

    /// Sends one request and reads its replies up to the ack (or the end of a dump).
    fn request(
        &mut self,
        message_type: u16,
        flags: u16,
        header: TcHeader,
        attrs: Vec<TcAttribute>,
    ) -> anyhow::Result<Vec<Reply>> {
        let msg = TcMessage::from_parts(header, attrs);
        let payload = match message_type {
            RTM_NEWQDISC => RouteNetlinkMessage::NewQueueDiscipline(msg),
            RTM_DELQDISC => RouteNetlinkMessage::DelQueueDiscipline(msg),
            RTM_GETQDISC => RouteNetlinkMessage::GetQueueDiscipline(msg),
            RTM_NEWTCLASS => RouteNetlinkMessage::NewTrafficClass(msg),
            RTM_DELTCLASS => RouteNetlinkMessage::DelTrafficClass(msg),
            _ => RouteNetlinkMessage::GetTrafficClass(msg),
        };
        self.channel
            .request(payload, flags)?
            .into_iter()
            .map(|r| {
                let header = TcHeader::parse(&r.payload)
                    .map_err(|e| anyhow!("malformed tc message: {e}"))?;
                Ok(Reply {
                    header,
                    attrs: r.payload.get(20..).unwrap_or_default().to_vec(),
                })
            })
            .collect()
    }

    fn header(ifindex: u32, handle: u32, parent: u32) -> TcHeader {
        TcHeader {
            index: ifindex as i32,
            handle: TcHandle::from(handle),
            parent: TcHandle::from(parent),
            ..Default::default()
        }
    }

    /// The root qdisc of `ifindex`: its kind and handle.
    fn root(&mut self, ifindex: u32) -> anyhow::Result<Option<(String, u32)>> {
        let replies = self.request(
            RTM_GETQDISC,
            NLM_F_DUMP,
            Self::header(ifindex, 0, 0),
            vec![],
        )?;
        Ok(replies
            .iter()
            .find(|r| r.header.index as u32 == ifindex && u32::from(r.header.parent) == TC_H_ROOT)
            .map(|r| {
                (
                    r.kind().unwrap_or_default().to_string(),
                    u32::from(r.header.handle),
                )
            }))
    }

    /// Interfaces whose root qdisc is xnic's.
    pub fn roots(&mut self) -> anyhow::Result<Vec<u32>> {
        let replies = self.request(RTM_GETQDISC, NLM_F_DUMP, Self::header(0, 0, 0), vec![])?;
        let mut found: Vec<u32> = replies
            .iter()
            .filter(|r| {
                u32::from(r.header.parent) == TC_H_ROOT
                    && u32::from(r.header.handle) == root_handle()
                    && r.kind() == Some("htb")
            })
            .map(|r| r.header.index as u32)
            .collect();
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }

    /// Puts xnic's HTB root on `ifname` (`ifindex`) unless it is there, replacing a kernel
    /// default; refuses to replace an operator's own root qdisc.
    pub fn ensure_root(&mut self, ifindex: u32, ifname: &str) -> anyhow::Result<()> {
        match self.root(ifindex)? {
            Some((kind, handle)) if kind == "htb" && handle == root_handle() => return Ok(()),
            Some((kind, handle)) if !DEFAULT_ROOTS.contains(&kind.as_str()) => bail!(
                "uplink {ifname} has a root qdisc of its own ({kind} {:x}:); shaped allocations \
                 need xnic's there: remove it (tc qdisc del dev {ifname} root) or give the \
                 team's VMs allocation_mode = \"strict\"",
                handle >> 16
            ),
            _ => {}
        }
        // struct tc_htb_glob: version, rate2quantum, defcls (0: unclassified frames go
        // unshaped), debug, direct_pkts.
        let init = nla(TCA_HTB_INIT, &u32s(&[HTB_VERSION, 10, 0, 0, 0]));
        self.request(
            RTM_NEWQDISC,
            NLM_F_CREATE | NLM_F_REPLACE,
            Self::header(ifindex, root_handle(), TC_H_ROOT),
            vec![
                TcAttribute::Kind("htb".into()),
                TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, init)),
            ],
        )
        .with_context(|| format!("cannot put the shaper's HTB qdisc on {ifname}"))?;
        Ok(())
    }

    /// Removes xnic's root from `ifindex` (the kernel puts its default back); another root
    /// is left alone.
    pub fn remove_root(&mut self, ifindex: u32) -> anyhow::Result<()> {
        match self.root(ifindex)? {
            Some((kind, handle)) if kind == "htb" && handle == root_handle() => {}
            _ => return Ok(()),
        }
        self.delete(
            RTM_DELQDISC,
            Self::header(ifindex, root_handle(), TC_H_ROOT),
            "the shaper's HTB qdisc",
        )
    }

    /// Deletes what `header` names; one already gone is fine.
    fn delete(&mut self, message_type: u16, header: TcHeader, what: &str) -> anyhow::Result<()> {
        match self.request(message_type, 0, header, vec![]) {
            Ok(_) => Ok(()),
            Err(e) if gone(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {what}")),
        }
    }

    /// Creates or changes the class of the VM in `vm_slot` on `ifindex`, and its FIFO.
    pub fn set_class(
        &mut self,
        ifindex: u32,
        vm_slot: u32,
        class: &ShapeClass,
    ) -> anyhow::Result<()> {
        let rate = class.rate_bytes_per_sec;
        // struct tc_htb_opt: rate, ceil, buffer, cbuffer, quantum, level, prio.
        let mut parms = ratespec(rate);
        parms.extend(ratespec(rate));
        parms.extend(u32s(&[
            class.buffer_ticks,
            class.buffer_ticks,
            CLASS_QUANTUM,
            0,
            0,
        ]));
        let mut opts = nla(TCA_HTB_PARMS, &parms);
        if rate > u64::from(u32::MAX) {
            opts.extend(nla(TCA_HTB_RATE64, &rate.to_ne_bytes()));
            opts.extend(nla(TCA_HTB_CEIL64, &rate.to_ne_bytes()));
        }
        let id = class_id(vm_slot);
        self.request(
            RTM_NEWTCLASS,
            NLM_F_CREATE | NLM_F_REPLACE,
            Self::header(ifindex, id, root_handle()),
            vec![
                TcAttribute::Kind("htb".into()),
                TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, opts)),
            ],
        )
        .with_context(|| format!("cannot write the shaper's class {:x}", id & 0xffff))?;
        // struct tc_fifo_qopt: the limit.
        let limit = queue_limit_bytes(rate, class.burst_bytes());
        self.request(
            RTM_NEWQDISC,
            NLM_F_CREATE | NLM_F_REPLACE,
            Self::header(ifindex, (LEAF_MAJOR_BASE + vm_slot) << 16, id),
            vec![
                TcAttribute::Kind("bfifo".into()),
                TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, u32s(&[limit]))),
            ],
        )
        .with_context(|| {
            format!(
                "cannot write the queue of the shaper's class {:x}",
                id & 0xffff
            )
        })?;
        Ok(())
    }

    pub fn remove_class(&mut self, ifindex: u32, vm_slot: u32) -> anyhow::Result<()> {
        self.delete(
            RTM_DELTCLASS,
            Self::header(ifindex, class_id(vm_slot), root_handle()),
            "a class of the shaper",
        )
    }

    /// xnic's classes on `ifindex`, by VM slot, with what they have done.
    pub fn classes(
        &mut self,
        ifindex: u32,
    ) -> anyhow::Result<BTreeMap<u32, (ShapeClass, ClassStats)>> {
        let replies = self.request(
            RTM_GETTCLASS,
            NLM_F_DUMP,
            Self::header(ifindex, 0, 0),
            vec![],
        )?;
        let mut out = BTreeMap::new();
        for r in &replies {
            let handle = u32::from(r.header.handle);
            if handle >> 16 != u32::from(QDISC_MAJOR) || r.kind() != Some("htb") {
                continue;
            }
            let Some(slot) = class_slot(handle as u16) else {
                continue;
            };
            let Some(parms) = r.attr(TCA_OPTIONS).and_then(|o| attr(o, TCA_HTB_PARMS)) else {
                continue;
            };
            let rate = r
                .attr(TCA_OPTIONS)
                .and_then(|o| attr(o, TCA_HTB_RATE64))
                .and_then(|v| ne_u64(v, 0))
                .or_else(|| ne_u32(parms, 8).map(u64::from))
                .unwrap_or(0);
            let class = ShapeClass {
                rate_bytes_per_sec: rate,
                buffer_ticks: ne_u32(parms, 24).unwrap_or(0),
            };
            let mut stats = ClassStats::default();
            if let Some(s2) = r.attr(TCA_STATS2) {
                if let Some(b) = attr(s2, TCA_STATS_BASIC) {
                    stats.bytes = ne_u64(b, 0).unwrap_or(0);
                    stats.packets = ne_u32(b, 8).unwrap_or(0);
                }
                if let Some(q) = attr(s2, TCA_STATS_QUEUE) {
                    stats.backlog_bytes = ne_u32(q, 4).unwrap_or(0);
                    stats.drops = ne_u32(q, 8).unwrap_or(0);
                }
            }
            out.insert(slot, (class, stats));
        }
        Ok(out)
    }
}

/// Whether a delete failed only because the thing is already gone.
fn gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::raw_os_error)
        .is_some_and(|c| c == libc::ENOENT || c == libc::ENODEV)
}
