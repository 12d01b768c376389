//! Prometheus text exposition of the daemon's counters, built fresh on every scrape from the
//! dataplane's own counters (they are the source of truth, and survive daemon restarts).

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use std::collections::BTreeMap;

use xnic_proto::api::{
    Count, FlowStatsView, Role, RssStatusView, StatsView, TeamStatusView, VnicListView,
    VnicStatsView,
};
use xnic_rings::control::WorkerStatus;

/// Everything one scrape shows.
#[derive(Debug)]
pub struct Snapshot {
    pub instance: String,
    pub stats: StatsView,
    pub rss: Option<RssStatusView>,
    pub team: Option<TeamStatusView>,
    pub flows: Option<FlowStatsView>,
    pub vnics: Option<(VnicListView, VnicStatsView)>,
    pub events: BTreeMap<(String, String), u64>,
    pub generation: u64,
    pub rings: Option<RingsWorker>,
}

/// The instance's rings worker, when one has been started.
#[derive(Debug)]
pub enum RingsWorker {
    Up(WorkerStatus),
    /// Its socket is there but it did not answer.
    Down,
}

type Labels = Vec<(&'static str, String)>;

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

/// A counter per event kind (`kind` label), from a policy's event counts.
fn event_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    instance: &str,
    counts: &std::collections::BTreeMap<String, u64>,
) -> Result<(), std::fmt::Error> {
    let series: Vec<(Labels, u64)> = counts
        .iter()
        .map(|(k, v)| {
            (
                vec![("instance", instance.to_string()), ("kind", k.clone())],
                *v,
            )
        })
        .collect();
    counter_family(encoder, name, help, &series)
}

fn role(r: Role) -> String {
    match r {
        Role::Uplink => "uplink".into(),
        Role::Vm => "vm".into(),
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let inst = || ("instance", self.instance.clone());
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        let mut shapes = Vec::new();
        for p in &self.stats.ports {
            for (reason, c) in &p.reasons {
                let labels = vec![
                    inst(),
                    ("port", p.name.clone()),
                    ("role", role(p.role)),
                    ("reason", reason.clone()),
                ];
                packets.push((labels.clone(), c.packets));
                bytes.push((labels, c.bytes));
            }
            for (shape, c) in &p.shapes {
                shapes.push((
                    vec![inst(), ("port", p.name.clone()), ("shape", shape.clone())],
                    c.packets,
                ));
            }
        }
        counter_family(
            &mut encoder,
            "xnic_port_packets",
            "Frames seen on a port, by verdict reason",
            &packets,
        )?;
        counter_family(
            &mut encoder,
            "xnic_port_bytes",
            "Bytes seen on a port, by verdict reason",
            &bytes,
        )?;
        counter_family(
            &mut encoder,
            "xnic_port_shape_packets",
            "Frames with a notable shape (VLAN, fragment, ...) seen on a port",
            &shapes,
        )?;
        let redirect_dropped: Vec<(Labels, u64)> = self
            .stats
            .ports
            .iter()
            .map(|p| {
                (
                    vec![inst(), ("port", p.name.clone()), ("role", role(p.role))],
                    p.redirect_dropped,
                )
            })
            .collect();
        counter_family(
            &mut encoder,
            "xnic_port_redirect_dropped_packets",
            "Frames redirected to a port that the kernel dropped on the way out (full queue, port that cannot take them, link down)",
            &redirect_dropped,
        )?;

        let mut vm_packets = Vec::new();
        let mut vm_bytes = Vec::new();
        let mut vm_rates = Vec::new();
        for v in &self.stats.vms {
            let c = &v.counters;
            for (dir, count, rate) in [
                ("from_vm", c.from_vm, v.rates.from_vm),
                ("to_vm", c.to_vm, v.rates.to_vm),
                ("dropped", c.dropped, v.rates.dropped),
            ] {
                let labels = vec![inst(), ("vm", v.name.clone()), ("direction", dir.into())];
                vm_packets.push((labels.clone(), count.packets));
                vm_bytes.push((labels.clone(), count.bytes));
                vm_rates.push((labels, rate.pps));
            }
        }
        counter_family(
            &mut encoder,
            "xnic_vm_packets",
            "Frames of a VM by direction (dropped: dropped on its port)",
            &vm_packets,
        )?;
        counter_family(
            &mut encoder,
            "xnic_vm_bytes",
            "Bytes of a VM by direction",
            &vm_bytes,
        )?;
        gauge_family(
            &mut encoder,
            "xnic_vm_packets_per_second",
            "Frame rate of a VM over the last sampling period",
            &vm_rates,
        )?;

        counter_family(
            &mut encoder,
            "xnic_unknown_port_packets",
            "Frames seen on interfaces without a port entry (stale attachments)",
            &[(vec![inst()], self.stats.unknown_port.packets)],
        )?;
        let cpus: Vec<(Labels, u64)> = self
            .stats
            .cpus
            .iter()
            .enumerate()
            .map(|(i, c): (usize, &Count)| (vec![inst(), ("cpu", i.to_string())], c.packets))
            .collect();
        counter_family(
            &mut encoder,
            "xnic_cpu_packets",
            "Frames the XDP programs processed on each CPU",
            &cpus,
        )?;
        let queue: Vec<(Labels, u64)> = self
            .stats
            .cpu_queue_dropped
            .iter()
            .enumerate()
            .map(|(i, n)| (vec![inst(), ("cpu", i.to_string())], *n))
            .collect();
        counter_family(
            &mut encoder,
            "xnic_cpu_queue_dropped_packets",
            "Frames steered to a CPU that its full CPU-map queue dropped",
            &queue,
        )?;
        let events: Vec<(Labels, u64)> = self
            .events
            .iter()
            .map(|((feature, kind), n)| {
                (
                    vec![inst(), ("feature", feature.clone()), ("kind", kind.clone())],
                    *n,
                )
            })
            .collect();
        counter_family(
            &mut encoder,
            "xnic_events",
            "Events of every feature since the daemon started (see xnic events)",
            &events,
        )?;
        gauge_family(
            &mut encoder,
            "xnic_desired_generation",
            "Changes made to the desired state (it survives restarts)",
            &[(vec![inst()], self.generation as f64)],
        )?;
        if let Some(rss) = &self.rss {
            self.encode_rss(rss, &mut encoder)?;
        }
        if let Some(team) = &self.team {
            self.encode_team(team, &mut encoder)?;
        }
        if let Some(flows) = &self.flows {
            self.encode_flows(flows, &mut encoder)?;
        }
        if let Some((list, stats)) = &self.vnics {
            self.encode_vnics(list, stats, &mut encoder)?;
        }
        if let Some(rings) = &self.rings {
            self.encode_rings(rings, &mut encoder)?;
        }
        Ok(())
    }
}

impl Snapshot {
    fn encode_vnics(
        &self,
        list: &VnicListView,
        stats: &VnicStatsView,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let mut packets = Vec::new();
        let mut bytes = Vec::new();
        for v in &list.vnics {
            for (way, c) in [
                ("sent", v.sent),
                ("received", v.received),
                ("dropped", v.dropped),
            ] {
                let labels = vec![
                    ("instance", self.instance.clone()),
                    ("vnic", v.name.clone()),
                    ("vcn", v.vcn.clone()),
                    ("way", way.to_string()),
                ];
                packets.push((labels.clone(), c.packets));
                bytes.push((labels, c.bytes));
            }
        }
        counter_family(
            encoder,
            "xnic_vnic_packets",
            "A VNIC's packets this host forwarded (sent), delivered to it (received), or dropped",
            &packets,
        )?;
        counter_family(
            encoder,
            "xnic_vnic_bytes",
            "A VNIC's bytes this host forwarded (sent), delivered to it (received), or dropped",
            &bytes,
        )?;
        let events: Vec<(Labels, u64)> = stats
            .events
            .iter()
            .map(|(e, n)| {
                (
                    vec![("instance", self.instance.clone()), ("event", e.clone())],
                    *n,
                )
            })
            .collect();
        counter_family(
            encoder,
            "xnic_vnic_routing_events",
            "What VNIC routing did on this host (to_vnic, to_nat, handed_off, nat_new, ...)",
            &events,
        )
    }
}

impl Snapshot {
    fn encode_rings(
        &self,
        rings: &RingsWorker,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let inst = || vec![("instance", self.instance.clone())];
        let up = matches!(rings, RingsWorker::Up(_));
        gauge_family(
            encoder,
            "xnic_rings_worker_up",
            "1 when the instance's rings worker answered this scrape, 0 when its socket is there but it did not",
            &[(inst(), if up { 1.0 } else { 0.0 })],
        )?;
        let RingsWorker::Up(w) = rings else {
            return Ok(());
        };
        let labelled =
            |label: &'static str, counts: &BTreeMap<String, u64>| -> Vec<(Labels, u64)> {
                counts
                    .iter()
                    .map(|(k, v)| {
                        let mut l = inst();
                        l.push((label, k.clone()));
                        (l, *v)
                    })
                    .collect()
            };
        let direction = |d: &str| {
            let mut l = inst();
            l.push(("direction", d.to_string()));
            l
        };
        counter_family(
            encoder,
            "xnic_rings_packets",
            "RoCEv2 packets the rings worker sent and received through its AF_XDP socket",
            &[
                (direction("sent"), w.sent),
                (direction("received"), w.received),
            ],
        )?;
        counter_family(
            encoder,
            "xnic_rings_retransmitted_packets",
            "Packets sent again (go-back-N after a NAK or a timeout)",
            &[(inst(), w.retransmitted)],
        )?;
        counter_family(
            encoder,
            "xnic_rings_timeouts",
            "Times a queue pair's acknowledgement timer ran out",
            &[(inst(), w.timeouts)],
        )?;
        counter_family(
            encoder,
            "xnic_rings_dropped_packets",
            "Packets the rings worker did not act on, by reason (bad ICRC, unknown queue pair, ...)",
            &labelled("reason", &w.dropped),
        )?;
        counter_family(
            encoder,
            "xnic_rings_completions",
            "Work requests completed, by status",
            &labelled("status", &w.completed),
        )?;
        gauge_family(
            encoder,
            "xnic_rings_queue_pairs",
            "Queue pairs open on this host's worker",
            &[(inst(), w.queue_pairs.len() as f64)],
        )?;
        gauge_family(
            encoder,
            "xnic_rings_regions",
            "Memory regions registered with this host's worker",
            &[(inst(), w.regions.len() as f64)],
        )?;
        gauge_family(
            encoder,
            "xnic_rings_region_bytes",
            "Bytes of memory registered with this host's worker",
            &[(inst(), w.regions.iter().map(|r| r.len as f64).sum())],
        )?;
        gauge_family(
            encoder,
            "xnic_rings_in_flight",
            "Work requests taken from applications and not yet completed",
            &[(
                inst(),
                w.queue_pairs.iter().map(|q| q.in_flight as f64).sum(),
            )],
        )
    }

    fn encode_flows(
        &self,
        f: &FlowStatsView,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let inst = || vec![("instance", self.instance.clone())];
        gauge_family(
            encoder,
            "xnic_flows_offloaded",
            "Connections in the fast path's flow table",
            &[(inst(), f64::from(f.in_use))],
        )?;
        gauge_family(
            encoder,
            "xnic_flows_table_size",
            "Slots of the flow table (fixed when the dataplane is created)",
            &[(inst(), f64::from(f.capacity))],
        )?;
        gauge_family(
            encoder,
            "xnic_flows_moving",
            "Offloaded connections with a direction still promoting, or leaving",
            &[(inst(), f64::from(f.pending))],
        )?;
        let plain = [
            (
                "xnic_flows_promoted",
                "Connections moved into the fast path",
                f.promoted,
            ),
            (
                "xnic_flows_handed_back",
                "Connections whose state went back to conntrack",
                f.handed_back,
            ),
            (
                "xnic_flows_refused_full",
                "Qualifying connections left on the slow path by a full table (per period)",
                f.refused_full,
            ),
            (
                "xnic_flows_promote_timeouts",
                "Promotions given up: the flow's packets never left the kernel",
                f.promote_timeouts,
            ),
            (
                "xnic_flows_unfit",
                "Candidates the fast path cannot carry (output not served, next hop unknown)",
                f.unfit,
            ),
            (
                "xnic_flows_conntrack_failures",
                "conntrack changes that failed",
                f.conntrack_failed,
            ),
        ];
        for (name, help, v) in plain {
            counter_family(encoder, name, help, &[(inst(), v)])?;
        }
        let by = |label: &'static str, m: &BTreeMap<String, u64>| -> Vec<(Labels, u64)> {
            m.iter()
                .map(|(k, v)| {
                    let mut l = inst();
                    l.push((label, k.clone()));
                    (l, *v)
                })
                .collect()
        };
        counter_family(
            encoder,
            "xnic_flows_demoted",
            "Connections sent back to the slow path, by reason",
            &by("reason", &f.demoted),
        )?;
        counter_family(
            encoder,
            "xnic_flows_fast_path_packets",
            "The fast path's own counters (forwarded, missed, passed while promoting or leaving...)",
            &by("counter", &f.fast_path),
        )
    }

    fn encode_rss(
        &self,
        rss: &RssStatusView,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let inst = || ("instance", self.instance.clone());
        let vm_state: Vec<(Labels, f64)> = rss
            .vms
            .iter()
            .map(|v| {
                (
                    vec![inst(), ("vm", v.name.clone()), ("state", v.state.clone())],
                    1.0,
                )
            })
            .collect();
        gauge_family(
            encoder,
            "xnic_rss_vm_state",
            "A VM's RSS engine state (1 for its current state)",
            &vm_state,
        )?;
        let vm_load: Vec<(Labels, f64)> = rss
            .vms
            .iter()
            .map(|v| (vec![inst(), ("vm", v.name.clone())], v.load_pps))
            .collect();
        gauge_family(
            encoder,
            "xnic_rss_vm_load_pps",
            "Frames per second delivered to a VM (smoothed)",
            &vm_load,
        )?;
        let engine_load: Vec<(Labels, f64)> = rss
            .engines
            .iter()
            .map(|e| (vec![inst(), ("engine", e.name.clone())], e.load_pps_per_cpu))
            .collect();
        gauge_family(
            encoder,
            "xnic_rss_engine_load_pps_per_cpu",
            "An engine's load per CPU (smoothed)",
            &engine_load,
        )?;
        let mut cpu_busy = Vec::new();
        let mut cpu_pps = Vec::new();
        for c in &rss.cpus {
            let cpu = c.cpu.to_string();
            cpu_busy.push((
                vec![inst(), ("cpu", cpu.clone()), ("side", "vnic".into())],
                c.vnic_busy,
            ));
            cpu_busy.push((
                vec![inst(), ("cpu", cpu.clone()), ("side", "nic".into())],
                c.nic_busy,
            ));
            cpu_pps.push((vec![inst(), ("cpu", cpu)], c.steered_pps));
        }
        gauge_family(
            encoder,
            "xnic_rss_cpu_busy_ratio",
            "Share of the last period a CPU spent finishing steered frames (vnic) or in softirq/NAPI (nic)",
            &cpu_busy,
        )?;
        gauge_family(
            encoder,
            "xnic_rss_cpu_steered_pps",
            "Frames per second finished on a CPU",
            &cpu_pps,
        )?;
        let steering: Vec<(Labels, u64)> = rss
            .steering
            .iter()
            .map(|(k, v)| (vec![inst(), ("event", k.clone())], *v))
            .collect();
        counter_family(
            encoder,
            "xnic_rss_steering",
            "Steering events in the dataplane",
            &steering,
        )?;
        event_family(
            encoder,
            "xnic_rss_events",
            "RSS policy events (migrations, bucket moves, no destination)",
            &self.instance,
            &rss.event_counts,
        )
    }
}

impl Snapshot {
    fn encode_team(
        &self,
        team: &TeamStatusView,
        encoder: &mut DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let inst = || ("instance", self.instance.clone());
        let mut state = Vec::new();
        let mut load = Vec::new();
        for t in &team.teams {
            for u in &t.uplinks {
                let labels = vec![inst(), ("team", t.name.clone()), ("uplink", u.name.clone())];
                let mut with_state = labels.clone();
                with_state.push(("state", u.state.clone()));
                state.push((with_state, 1.0));
                load.push((labels, u.load_mbps * 1e6));
            }
        }
        gauge_family(
            encoder,
            "xnic_team_uplink_state",
            "A team uplink's state (1 for its current state: up, holding, down)",
            &state,
        )?;
        gauge_family(
            encoder,
            "xnic_team_uplink_load_bps",
            "Bits per second the team's VMs sent through an uplink over the last period",
            &load,
        )?;
        let mut frames = Vec::new();
        let mut bytes = Vec::new();
        let mut granted = Vec::new();
        for v in &team.vms {
            for (u, c) in &v.per_uplink {
                let labels = vec![inst(), ("vm", v.name.clone()), ("uplink", u.clone())];
                frames.push((labels.clone(), c.packets));
                bytes.push((labels, c.bytes));
            }
            if let Some(g) = v.granted_mbps {
                granted.push((vec![inst(), ("vm", v.name.clone())], g * 1e6));
            }
        }
        counter_family(
            encoder,
            "xnic_team_vm_uplink_packets",
            "Frames a VM sent through each uplink of its team",
            &frames,
        )?;
        counter_family(
            encoder,
            "xnic_team_vm_uplink_bytes",
            "Bytes a VM sent through each uplink of its team",
            &bytes,
        )?;
        gauge_family(
            encoder,
            "xnic_team_vm_granted_bps",
            "The rate a VM may send now: its allocation, or less when its uplink is short",
            &granted,
        )?;
        let shaper: Vec<(Labels, u64)> = team
            .shaper
            .iter()
            .map(|(k, v)| (vec![inst(), ("outcome", k.clone())], *v))
            .collect();
        counter_family(
            encoder,
            "xnic_team_shaper_frames",
            "Shaped VMs' TCP frames at the VM ports' tc program, by what became of them",
            &shaper,
        )?;
        event_family(
            encoder,
            "xnic_team_events",
            "Team events (link_down, link_up, failback, rebalance)",
            &self.instance,
            &team.event_counts,
        )
    }
}

pub fn encode(snapshot: Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}
