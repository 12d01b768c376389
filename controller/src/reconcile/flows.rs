//! Carrying out flow offload's decisions: next hops resolved through rtnetlink, conntrack told
//! through ctnetlink, the flow table written through the dataplane. The order keeps the
//! kernel and the fast path in step:
//!
//! - **promotion**: conntrack first (liberal window tracking, a fresh timeout), so nothing
//!   the fast path lets through can be INVALID later; then `FLOW_CONFIG.pending`, so the
//!   egress programs count the flow's slow-path packets out; then the slot; the keys last.
//! - **demotion**: the slot's `leave`, which the programs act on with the next packet (it
//!   goes to the slow path behind what is in flight).
//! - **hand-back**, once drained: the keys out, then conntrack's timeout set from the fast
//!   path's last-seen, then the slot is free.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use tracing::{debug, warn};
use xnic_common::flow::{FlowConfig, FlowLive, MAX_TUNNELS, Tunnel};

use super::Reconciler;
use crate::{
    dataplane::Dataplane,
    events::NewEvent,
    features::{
        flows::{FlowSample, Offload, tuple},
        team::monotonic_ns,
    },
    monitor::{
        conntrack::{Conntrack, CtChange},
        nexthop::Resolver,
    },
    policy::offload::{Hop, TCP, TunnelHop, ct_timeout, flow_state, refresh_due},
};

/// The kernel's TTL for tunnel packets when the VXLAN device says 0 (inherit): the default
/// `ip_default_ttl`.
const DEFAULT_TUNNEL_TTL: u8 = 64;

/// What carrying out offload needs besides the dataplane: opened when offload first runs.
pub struct OffloadIo {
    conntrack: Conntrack,
    resolver: Resolver,
    /// `FLOW_TUNNELS` as written, by index.
    tunnels: Vec<Tunnel>,
    /// `FLOW_CONFIG` as written.
    config: Option<FlowConfig>,
}

impl OffloadIo {
    pub fn open(dp: &Dataplane) -> anyhow::Result<OffloadIo> {
        let mut tunnels = Vec::with_capacity(MAX_TUNNELS as usize);
        for i in 0..MAX_TUNNELS {
            tunnels.push(dp.tunnel(i)?);
        }
        Ok(OffloadIo {
            conntrack: Conntrack::open()?,
            resolver: Resolver::open()?,
            tunnels,
            config: dp.flow_config().ok(),
        })
    }

    /// The index of `t` in `FLOW_TUNNELS`, written when new or changed (`None`: all taken).
    fn tunnel(&mut self, dp: &mut Dataplane, t: Tunnel) -> anyhow::Result<Option<u8>> {
        let same = |w: &Tunnel| {
            w.valid != 0
                && (w.vni, w.local, w.remote, w.dst_port) == (t.vni, t.local, t.remote, t.dst_port)
        };
        let index = match self.tunnels.iter().position(same) {
            Some(i) => i,
            None => match self.tunnels.iter().position(|w| w.valid == 0) {
                Some(i) => i,
                None => return Ok(None),
            },
        };
        if self.tunnels[index] != t {
            dp.set_tunnel(index as u32, t)?;
            self.tunnels[index] = t;
        }
        Ok(Some(index as u8))
    }

    /// Where the kernel sends packets for `dst`, down to MACs and, through a VXLAN device,
    /// the tunnel (`None`: no route, an unresolved neighbour, a tunnel without a unicast
    /// remote end: the slow path's).
    fn hop(&mut self, dp: &mut Dataplane, dst: IpAddr) -> anyhow::Result<Option<Hop>> {
        let Some(nh) = self.resolver.next_hop(dst)? else {
            return Ok(None);
        };
        let Some(src_mac) = nh.link.mac else {
            return Ok(None);
        };
        let mut hop = Hop {
            ifindex: nh.link.ifindex,
            src_mac,
            dst_mac: nh.neighbour_mac,
            mtu: nh.link.mtu,
            tunnel: None,
        };
        if let Some(v) = nh.link.vxlan {
            let Some(remote) = v.remote else {
                return Ok(None);
            };
            let Some(under) = self.resolver.next_hop(IpAddr::V4(remote))? else {
                return Ok(None);
            };
            let local = v.local.or(match under.prefsrc {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            });
            let (Some(local), Some(under_mac)) = (local, under.link.mac) else {
                return Ok(None);
            };
            let (min, max) = v.port_range.unwrap_or_else(local_port_range);
            let tunnel = Tunnel {
                vni: v.vni,
                local: local.octets(),
                remote: remote.octets(),
                src_mac: under_mac,
                dst_mac: under.neighbour_mac,
                out_ifindex: under.link.ifindex,
                dst_port: v.port,
                src_port_min: min,
                src_port_max: max,
                ttl: if v.ttl == 0 {
                    DEFAULT_TUNNEL_TTL
                } else {
                    v.ttl
                },
                tos: v.tos,
                valid: 1,
                _pad: [0; 3],
            };
            let Some(index) = self.tunnel(dp, tunnel)? else {
                return Ok(None);
            };
            hop.tunnel = Some(TunnelHop {
                index,
                vni: v.vni,
                underlay_ifindex: under.link.ifindex,
            });
        }
        Ok(Some(hop))
    }

    /// Both directions' hops of a connection: original packets go to the reply's source
    /// (after DNAT), replies to the original's source.
    fn hops(
        &mut self,
        dp: &mut Dataplane,
        cache: &mut HashMap<IpAddr, Option<Hop>>,
        orig_src: IpAddr,
        reply_src: IpAddr,
    ) -> anyhow::Result<Option<[Hop; 2]>> {
        let mut get = |a: IpAddr| -> anyhow::Result<Option<Hop>> {
            if let Some(h) = cache.get(&a) {
                return Ok(*h);
            }
            let h = self.hop(dp, a)?;
            cache.insert(a, h);
            Ok(h)
        };
        let there = get(reply_src)?;
        let back = get(orig_src)?;
        Ok(there.zip(back).map(|(a, b)| [a, b]))
    }
}

/// The kernel's source-port range for tunnel packets when the device sets none
/// (`ip_local_port_range`, as `udp_flow_src_port` uses).
fn local_port_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// What one period did, for the event stream.
#[derive(Default)]
struct Round {
    promoted: usize,
    left: BTreeMap<&'static str, usize>,
    handed_back: usize,
}

impl Reconciler {
    /// The ifindexes of the ports this daemon runs on.
    fn served(&self) -> HashSet<u32> {
        self.attached
            .keys()
            .filter_map(|n| self.host.get(n))
            .map(|l| l.ifindex)
            .collect()
    }

    /// One flows period: take in the sample, decide, carry it out.
    pub(super) fn flow_tick(&mut self, sample: FlowSample) {
        let now = monotonic_ns();
        let forwarding_changed = sample.changed.forwarding;
        let mut round = Round::default();
        for why in self.offload.observe(sample, now) {
            *round.left.entry(why.name()).or_default() += 1;
        }
        if self.offload_io.is_none() {
            match OffloadIo::open(&self.dp) {
                Ok(io) => self.offload_io = Some(io),
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "flow offload cannot reach conntrack or rtnetlink; nothing is offloaded");
                    return;
                }
            }
        }
        let Some(mut io) = self.offload_io.take() else {
            return;
        };
        if let Err(e) = self.flow_round(&mut io, forwarding_changed, now, &mut round) {
            warn!(error = %format!("{e:#}"), "flow offload period failed");
        }
        self.offload_io = Some(io);
        if round.promoted + round.handed_back > 0 || !round.left.is_empty() {
            let left: Vec<String> = round.left.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let mut text = format!("{} promoted", round.promoted);
            if !left.is_empty() {
                text += &format!(", leaving: {}", left.join(", "));
            }
            if round.handed_back > 0 {
                text += &format!(", {} handed back to conntrack", round.handed_back);
            }
            self.events.push([NewEvent::new(
                "flows",
                "offload",
                &self.config.instance,
                text,
            )]);
        }
    }

    fn flow_round(
        &mut self,
        io: &mut OffloadIo,
        forwarding_changed: bool,
        now: u64,
        round: &mut Round,
    ) -> anyhow::Result<()> {
        let served = self.served();
        let mut cache = HashMap::new();

        // Hops of flows adopted from an earlier daemon, and of every flow when routes or
        // neighbours changed: a flow whose hops are not what the fast path has leaves.
        let recheck: Vec<u32> = self
            .offload
            .placed()
            .filter(|p| p.leaving.is_none() && (p.hops.is_none() || forwarding_changed))
            .map(|p| p.slot)
            .collect();
        for slot in recheck {
            let Some(p) = self.offload.get(slot).cloned() else {
                continue;
            };
            let hops = io.hops(&mut self.dp, &mut cache, p.orig.src, p.reply.src)?;
            let same = hops.is_some_and(|h| {
                let scales = [p.state.dirs[0].tcp_scale, p.state.dirs[1].tcp_scale];
                flow_state(&tuple(&p.orig), &tuple(&p.reply), &h, scales, |i| {
                    served.contains(&i)
                })
                .is_ok_and(|(keys, st)| keys == p.keys && st.dirs == p.state.dirs)
            });
            match (same, hops) {
                (true, Some(h)) => self.offload.set_hops(slot, h),
                _ => {
                    debug!(slot, "an offloaded flow's next hop changed");
                    self.offload.route_changed(Offload::id_of(&p));
                }
            }
        }

        let d = self.offload.decide(now);

        // Drained: out of the table, and conntrack takes over from the fast path's last
        // packet.
        for id in &d.remove {
            let Some(slot) = self.offload.slot_of(*id) else {
                continue;
            };
            let Some(p) = self.offload.get(slot).cloned() else {
                continue;
            };
            if let Err(e) = self.dp.remove_flow(slot, &p.keys) {
                warn!(slot, error = %format!("{e:#}"), "cannot take a flow out of the table");
                continue;
            }
            if p.id != 0 && self.offload.entry(p.id).is_some() {
                let timeout = ct_timeout(
                    p.state.proto,
                    &self.offload.timeouts,
                    p.live.last_seen_ns(),
                    now,
                );
                let change = CtChange {
                    timeout: Some(timeout),
                    ..CtChange::default()
                };
                if let Err(e) = io.conntrack.change(&p.orig, &change) {
                    warn!(error = %format!("{e:#}"), "cannot hand a flow's timeout back to conntrack");
                    self.offload.conntrack_failed();
                }
            }
            self.offload.removed(slot, now);
            round.handed_back += 1;
        }

        // Leaving: the programs send its next packets to the slow path, behind what is in
        // flight; unordered, its keys go at once (hand-back follows next period).
        let ordered = self.offload.ordered_moves();
        for (id, why) in &d.demote {
            let Some(slot) = self.offload.slot_of(*id) else {
                continue;
            };
            let Some(state) = self.offload.demote(slot, *why) else {
                continue;
            };
            let written = self.dp.update_flow_state(slot, &state).and_then(|()| {
                match self.offload.get(slot) {
                    Some(p) if !ordered => self.dp.remove_flow(slot, &p.keys),
                    _ => Ok(()),
                }
            });
            if let Err(e) = written {
                warn!(slot, error = %format!("{e:#}"), "cannot send a flow back to the slow path");
                self.offload.undo_demote(slot, *why);
            }
        }
        for (_, why) in &d.demote {
            *round.left.entry(why.name()).or_default() += 1;
        }

        // Promotions: conntrack first, then the egress programs' attention, then the slot
        // and its keys.
        if !d.promote.is_empty() {
            let pending = self.offload.pending() + d.promote.len() as u32;
            self.write_flow_config(io, pending)?;
        }
        for (id, why) in &d.promote {
            let Some(e) = self.offload.entry(*id).cloned() else {
                continue;
            };
            let Some(hops) = io.hops(&mut self.dp, &mut cache, e.orig.src, e.reply.src)? else {
                self.offload.unresolved();
                continue;
            };
            let p = match self
                .offload
                .place(*id, *why, hops, |i| served.contains(&i), now)
            {
                Ok(p) => p,
                Err(_) => continue,
            };
            let change = CtChange {
                timeout: Some(ct_timeout(p.state.proto, &self.offload.timeouts, now, now)),
                liberal: p.state.proto == TCP,
                tcp_state: None,
            };
            match io.conntrack.change(&p.orig, &change) {
                Ok(true) => {}
                Ok(false) => {
                    self.offload.unplace(p.slot);
                    continue;
                }
                Err(e) => {
                    warn!(error = %format!("{e:#}"), "cannot make conntrack ready for an offloaded flow; it stays on the slow path");
                    self.offload.conntrack_failed();
                    self.offload.unplace(p.slot);
                    continue;
                }
            }
            let live = if ordered {
                FlowLive::promoted(&p.state, now)
            } else {
                FlowLive::active(&p.state, now)
            };
            if let Err(e) = self.dp.insert_flow(p.slot, &p.keys, &p.state, live) {
                warn!(error = %format!("{e:#}"), "cannot write an offloaded flow; it stays on the slow path");
                self.offload.unplace(p.slot);
                continue;
            }
            round.promoted += 1;
        }

        // conntrack keeps offloaded connections alive from the fast path's last-seen.
        let refresh: Vec<(crate::monitor::conntrack::CtTuple, u32)> = self
            .offload
            .placed()
            .filter(|p| p.leaving.is_none() && p.id != 0)
            .filter_map(|p| {
                let want = ct_timeout(
                    p.state.proto,
                    &self.offload.timeouts,
                    p.live.last_seen_ns(),
                    now,
                );
                refresh_due(p.ct_timeout, want).then_some((p.orig, want))
            })
            .collect();
        for (orig, timeout) in refresh {
            let change = CtChange {
                timeout: Some(timeout),
                ..CtChange::default()
            };
            if let Err(e) = io.conntrack.change(&orig, &change) {
                debug!(error = %format!("{e:#}"), "cannot refresh an offloaded flow's conntrack timeout");
                self.offload.conntrack_failed();
            }
        }
        let pending = self.offload.pending();
        self.write_flow_config(io, pending)
    }

    /// `FLOW_CONFIG` as offload needs it now, written when it differs. Lookups stay on while
    /// any flow is in the table, so leaving flows drain through the fast path's ordering.
    fn write_flow_config(&mut self, io: &mut OffloadIo, pending: u32) -> anyhow::Result<()> {
        let any_flows = self.offload.placed().next().is_some();
        let config = FlowConfig {
            enabled: u8::from(self.offload.enabled() || any_flows),
            tunnels: u8::from(io.tunnels.iter().any(|t| t.valid != 0)),
            _pad: [0; 2],
            pending,
        };
        if io.config != Some(config) {
            self.dp.set_flow_config(config)?;
            io.config = Some(config);
        }
        Ok(())
    }
}
