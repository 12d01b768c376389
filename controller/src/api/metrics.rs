//! Prometheus text exposition of the daemon's counters, built fresh on every scrape from the
//! dataplane's own counters (they are the source of truth, and survive daemon restarts).

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::types::{Count, Role, StatsView};

#[derive(Debug)]
struct Snapshot {
    instance: String,
    stats: StatsView,
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
        Ok(())
    }
}

pub fn encode(instance: &str, stats: &StatsView) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        instance: instance.to_string(),
        stats: stats.clone(),
    }));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}
