//! Counter samples and the rates between two of them, keyed by port and VM name (VMs come
//! and go between samples).

use std::{collections::BTreeMap, time::Instant};

use xnic_common::{
    limits::UNKNOWN_PORT_SLOT,
    maps::{Counter, VmCounters},
};
use xnic_proto::api::{Rate, VmRates};

use crate::{
    dataplane::{Counters, PortCounters},
    features::base::wanted_ports,
    reconcile::Snapshot,
};

/// Every counter of the daemon's ports and VMs at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub ports: BTreeMap<String, PortCounters>,
    pub vms: BTreeMap<String, VmCounters>,
    /// Frames seen on interfaces with no port entry (stale attachments).
    pub unknown_port: PortCounters,
    /// Frames per CPU over all ports.
    pub cpus: Vec<Counter>,
    /// Per CPU: frames its full CPU-map queue dropped.
    pub queue_drops: Vec<u64>,
}

impl Sample {
    pub fn take(counters: &Counters, snap: &Snapshot) -> anyhow::Result<Sample> {
        let mut cpus = vec![Counter::default(); snap.nr_cpus];
        let mut ports = BTreeMap::new();
        for p in wanted_ports(&snap.config) {
            if let Some(slot) = snap.slots.port(&p.name) {
                ports.insert(p.name, counters.port(slot, &mut cpus)?);
            }
        }
        let unknown_port = counters.port(UNKNOWN_PORT_SLOT, &mut cpus)?;
        let mut vms = BTreeMap::new();
        for v in &snap.config.vms {
            if let Some(slot) = snap.slots.vm(&v.name) {
                vms.insert(v.name.clone(), counters.vm(slot)?);
            }
        }
        let queue_drops = counters.queue_drops(snap.nr_cpus)?;
        Ok(Sample {
            at: Instant::now(),
            ports,
            vms,
            unknown_port,
            cpus,
            queue_drops,
        })
    }

    /// Only what one VM's view needs: its own counters and its port's.
    pub fn take_vm(counters: &Counters, snap: &Snapshot, name: &str) -> anyhow::Result<Sample> {
        let mut cpus = vec![Counter::default(); snap.nr_cpus];
        let mut ports = BTreeMap::new();
        let mut vms = BTreeMap::new();
        if let Some(vm) = snap.config.vm(name) {
            if let Some(slot) = snap.slots.port(&vm.port) {
                ports.insert(vm.port.clone(), counters.port(slot, &mut cpus)?);
            }
            if let Some(slot) = snap.slots.vm(name) {
                vms.insert(name.to_string(), counters.vm(slot)?);
            }
        }
        Ok(Sample {
            at: Instant::now(),
            ports,
            vms,
            unknown_port: PortCounters::default(),
            cpus,
            queue_drops: Vec::new(),
        })
    }
}

/// Rates between two samples, per port (total of all reasons) and per VM.
#[derive(Clone, Debug, Default)]
pub struct Rates {
    pub interval_secs: f64,
    pub ports: BTreeMap<String, Rate>,
    pub vms: BTreeMap<String, VmRates>,
}

impl Rates {
    pub fn between(prev: &Sample, now: &Sample) -> Rates {
        let secs = now.at.duration_since(prev.at).as_secs_f64();
        let ports = now
            .ports
            .iter()
            .filter_map(|(name, b)| {
                let a = prev.ports.get(name)?;
                Some((name.clone(), rate(total(a), total(b), secs)))
            })
            .collect();
        let vms = now
            .vms
            .iter()
            .filter_map(|(name, b)| {
                let a = prev.vms.get(name)?;
                Some((
                    name.clone(),
                    VmRates {
                        from_vm: rate(a.from_vm, b.from_vm, secs),
                        to_vm: rate(a.to_vm, b.to_vm, secs),
                        dropped: rate(a.dropped, b.dropped, secs),
                    },
                ))
            })
            .collect();
        Rates {
            interval_secs: secs,
            ports,
            vms,
        }
    }
}

/// All frames of a port, whatever their verdict.
pub fn total(c: &PortCounters) -> Counter {
    c.reasons
        .iter()
        .fold(Counter::default(), |acc, r| acc.merged(*r))
}

/// Rate between two readings of one counter. A counter that went backwards (its slot was
/// reset) reads as zero, not as a huge wrapped value.
pub fn rate(prev: Counter, now: Counter, secs: f64) -> Rate {
    if secs <= 0.0 {
        return Rate::default();
    }
    Rate {
        pps: now.packets.saturating_sub(prev.packets) as f64 / secs,
        bps: now.bytes.saturating_sub(prev.bytes) as f64 * 8.0 / secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_per_second_and_never_negative() {
        let a = Counter {
            packets: 100,
            bytes: 1000,
        };
        let b = Counter {
            packets: 300,
            bytes: 3000,
        };
        let r = rate(a, b, 2.0);
        assert_eq!((r.pps, r.bps), (100.0, 8000.0));
        assert_eq!(rate(b, a, 1.0), Rate::default());
        assert_eq!(rate(a, b, 0.0), Rate::default());
    }
}
