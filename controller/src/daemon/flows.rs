//! What the API shows of flow offload: the table as the programs left it (read through
//! handles of the API's own), named with the snapshot's ports and VMs, and the counters.

use std::{collections::BTreeMap, net::IpAddr};

use xnic_common::flow::{
    DIR_DECAP, DIR_DNAT, DIR_ENCAP, DIR_SNAT, FLOW_TABLE_BYTES_PER_FLOW, FlowCounter, Leave,
    MODE_UNUSED, Mode, ORIGINAL, REPLY, Why,
};
use xnic_proto::api::{FlowDirView, FlowRequest, FlowStatsView, FlowView, TupleView};

use super::Daemon;
use crate::{
    dataplane::TableFlow,
    features::{flows::FlowFilter, team::monotonic_ns},
    model::Refusal,
    monitor::conntrack::CtTuple,
    reconcile::{Command, Snapshot},
};

const NS_PER_MS: u64 = 1_000_000;

fn tuple_view(t: &CtTuple) -> TupleView {
    TupleView {
        src: t.src.to_string(),
        dst: t.dst.to_string(),
        src_port: t.src_port,
        dst_port: t.dst_port,
    }
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

/// The name of the port with `ifindex` (its number when it is none of ours).
fn port_name(snap: &Snapshot, ifindex: u32) -> String {
    snap.host
        .iter()
        .find(|l| l.ifindex == ifindex)
        .map_or_else(|| format!("ifindex {ifindex}"), |l| l.name.clone())
}

/// One flow as the API shows it. `id`: conntrack's, when the daemon knows it.
pub fn flow_view(snap: &Snapshot, f: &TableFlow, id: Option<u32>, now_ns: u64) -> FlowView {
    use crate::features::flows::tuple_of_key;
    let original = tuple_of_key(&f.keys[ORIGINAL]);
    // conntrack's reply tuple is the reply direction's key.
    let reply = tuple_of_key(&f.keys[REPLY]);
    let mut ports = Vec::new();
    let directions = [ORIGINAL, REPLY].map(|d| {
        let out = &f.state.dirs[d];
        let live = &f.live.dirs[d];
        ports.push(out.in_ifindex);
        ports.push(out.out_ifindex);
        let mut actions = Vec::new();
        if out.flags & DIR_DECAP != 0 {
            actions.push(format!("decap vni {}", f.keys[d].vni));
        }
        if out.flags & DIR_SNAT != 0 {
            actions.push("snat".into());
        }
        if out.flags & DIR_DNAT != 0 {
            actions.push("dnat".into());
        }
        if out.flags & DIR_ENCAP != 0 {
            actions.push(format!("encap vni {}", f.keys[d ^ 1].vni));
        }
        let mode = match live.mode {
            m if m == Mode::Active as u8 => "active",
            m if m == Mode::Pending as u8 => "promoting",
            MODE_UNUSED => "unused",
            _ => "unknown",
        };
        FlowDirView {
            mode: mode.into(),
            in_port: port_name(snap, out.in_ifindex),
            out_port: port_name(snap, out.out_ifindex),
            actions,
            packets: live.packets,
            bytes: live.bytes,
            slow_passes: live.slow_passes,
        }
    });
    let leave = f.live.leaving(&f.state).map(|l| l.name().to_string());
    let state = if leave.is_some() {
        "leaving"
    } else if directions.iter().any(|d| d.mode == "active") {
        "active"
    } else {
        "promoting"
    };
    let vm = snap
        .config
        .vms
        .iter()
        .find(|v| {
            snap.host
                .get(&v.port)
                .is_some_and(|l| ports.contains(&l.ifindex))
        })
        .map(|v| v.name.clone());
    FlowView {
        slot: f.slot,
        id,
        proto: proto_name(f.state.proto),
        vm,
        original: tuple_view(&original),
        reply: tuple_view(&reply),
        state: state.into(),
        leave,
        why: Why::from_index(u32::from(f.state.why))
            .map_or("unknown", |w| w.name())
            .to_string(),
        directions,
        age_ms: now_ns.saturating_sub(f.state.promoted_ns) / NS_PER_MS,
        idle_ms: now_ns.saturating_sub(f.live.last_seen_ns()) / NS_PER_MS,
    }
}

/// A request's filter, checked.
pub fn filter_of(req: &FlowRequest) -> Result<FlowFilter, Refusal> {
    let proto = match req.proto.as_deref() {
        None => None,
        Some("tcp") => Some(6),
        Some("udp") => Some(17),
        Some(p) => {
            return Err(Refusal::Invalid(format!(
                "unknown protocol {p:?}: the fast path carries tcp and udp"
            )));
        }
    };
    let addr = match req.addr.as_deref() {
        None => None,
        Some(a) => Some(
            a.parse::<IpAddr>()
                .map_err(|_| Refusal::Invalid(format!("{a:?} is not an IPv4 or IPv6 address")))?,
        ),
    };
    let filter = FlowFilter {
        ids: req.ids.iter().copied().collect(),
        all: req.all,
        proto,
        addr,
        port: req.port,
    };
    if filter.ids.is_empty()
        && !filter.all
        && proto.is_none()
        && addr.is_none()
        && filter.port.is_none()
    {
        return Err(Refusal::Invalid(
            "say which flows: conntrack ids, --all, or a --proto, --addr or --port to match".into(),
        ));
    }
    Ok(filter)
}

impl Daemon {
    /// Offloaded flows, of VM `vm` when given.
    pub fn flows(&self, vm: Option<&str>) -> Result<Vec<FlowView>, Refusal> {
        let snap = self.snapshot();
        if let Some(name) = vm
            && snap.config.vm(name).is_none()
        {
            return Err(Refusal::NotFound(format!("no VM named {name:?}")));
        }
        let table = self
            .flow_reader
            .table()
            .map_err(|e| Refusal::Failed(format!("{e:#}")))?;
        let ids = &snap.flow_ids;
        let now = monotonic_ns();
        let mut out: Vec<FlowView> = table
            .iter()
            .map(|f| flow_view(&snap, f, ids.get(&f.slot).copied(), now))
            .filter(|v| vm.is_none_or(|n| v.vm.as_deref() == Some(n)))
            .collect();
        out.sort_by_key(|v| v.slot);
        Ok(out)
    }

    pub fn flow_stats(&self) -> anyhow::Result<FlowStatsView> {
        let snap = self.snapshot();
        let s = &snap.flows;
        let fast = self.flow_reader.counters()?;
        Ok(FlowStatsView {
            enabled: s.enabled,
            capacity: s.capacity,
            in_use: s.in_use,
            table_bytes: u64::from(s.capacity) * FLOW_TABLE_BYTES_PER_FLOW,
            pending: s.pending,
            tracked: s.tracked,
            promoted: s.stats.promoted,
            demoted: Leave::ALL
                .iter()
                .skip(1)
                .map(|l| (l.name().to_string(), s.stats.demoted[*l as usize]))
                .collect::<BTreeMap<_, _>>(),
            handed_back: s.stats.handed_back,
            refused_full: s.stats.refused_full,
            promote_timeouts: s.stats.promote_timeouts,
            unfit: s.stats.unfit,
            conntrack_failed: s.stats.conntrack_failed,
            adopted: s.stats.adopted,
            fast_path: FlowCounter::ALL
                .iter()
                .map(|c| (c.name().to_string(), fast[*c as usize]))
                .collect(),
        })
    }

    /// `xnic flows offload|demote`: how many flows matched.
    pub async fn flow_request(&self, offload: bool, req: &FlowRequest) -> Result<usize, Refusal> {
        let filter = filter_of(req)?;
        if offload && !self.snapshot().flows.enabled {
            return Err(Refusal::Conflict(NO_FLOWS.into()));
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.handle.send(Command::FlowRequest {
            offload,
            filter,
            reply,
        });
        rx.await
            .map_err(|_| Refusal::Failed("the daemon is stopping".into()))
    }
}

pub(crate) const NO_FLOWS: &str =
    "flow offload is off: add a [flows] section to the configuration (or set enabled = true)";
