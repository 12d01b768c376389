//! Counter samples and the rates between two of them.

use std::time::Instant;

use xnic_common::{
    limits::UNKNOWN_PORT_SLOT,
    maps::{Counter, VmCounters},
};

use crate::{
    api::types::{Rate, VmRates},
    daemon::state::State,
    dataplane::PortCounters,
};

/// Every counter of the daemon's ports and VMs at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    /// Same order as `State::ports`.
    pub ports: Vec<PortCounters>,
    /// Same order as `State::vms`.
    pub vms: Vec<VmCounters>,
    /// Frames seen on interfaces with no port entry (stale attachments).
    pub unknown_port: PortCounters,
    /// Frames per CPU over all ports.
    pub cpus: Vec<Counter>,
}

impl Sample {
    pub fn take(state: &State) -> anyhow::Result<Sample> {
        let dp = &state.dataplane;
        let mut cpus = vec![Counter::default(); dp.nr_cpus()];
        let ports = state
            .ports
            .iter()
            .map(|p| dp.port_counters(p.slot, &mut cpus))
            .collect::<anyhow::Result<_>>()?;
        let unknown_port = dp.port_counters(UNKNOWN_PORT_SLOT, &mut cpus)?;
        let vms = state
            .vms
            .iter()
            .map(|v| dp.vm_counters(v.slot))
            .collect::<anyhow::Result<_>>()?;
        Ok(Sample {
            at: Instant::now(),
            ports,
            vms,
            unknown_port,
            cpus,
        })
    }
}

/// Rates between two samples, per port (total of all reasons) and per VM.
#[derive(Clone, Debug, Default)]
pub struct Rates {
    pub interval_secs: f64,
    pub ports: Vec<Rate>,
    pub vms: Vec<VmRates>,
}

impl Rates {
    pub fn between(prev: &Sample, now: &Sample) -> Rates {
        let secs = now.at.duration_since(prev.at).as_secs_f64();
        let ports = prev
            .ports
            .iter()
            .zip(&now.ports)
            .map(|(a, b)| rate(total(a), total(b), secs))
            .collect();
        let vms = prev
            .vms
            .iter()
            .zip(&now.vms)
            .map(|(a, b)| VmRates {
                from_vm: rate(a.from_vm, b.from_vm, secs),
                to_vm: rate(a.to_vm, b.to_vm, secs),
                dropped: rate(a.dropped, b.dropped, secs),
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
