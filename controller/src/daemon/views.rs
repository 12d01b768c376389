//! Turns the daemon's state and counters into what the API returns.

use std::collections::{BTreeMap, HashMap};

use xnic_common::{
    maps::{Counter, PortRole},
    parse::Shape,
    verdict::{Action, Reason},
};

use super::state::State;
use crate::{
    api::types::{
        Count, PortStats, PortStatus, Role, StatsView, StatusView, Totals, VmCountersView, VmRates,
        VmStats, VmView,
    },
    monitor::{
        links::LinkState,
        sample::{Rates, Sample, total},
    },
};

fn role(r: PortRole) -> Role {
    match r {
        PortRole::Uplink => Role::Uplink,
        PortRole::Vm => Role::Vm,
    }
}

fn totals(sample: &Sample) -> Totals {
    let mut t = Totals::default();
    for port in sample.ports.iter().chain([&sample.unknown_port]) {
        for r in Reason::ALL {
            let c = Count::from(port.reasons[r as usize]);
            match r.action() {
                Action::Drop => t.dropped = t.dropped.plus(c),
                _ => t.passed = t.passed.plus(c),
            }
        }
    }
    t
}

pub fn status(state: &State, sample: &Sample, links: &HashMap<String, LinkState>) -> StatusView {
    let info = state.dataplane.info().unwrap_or_default();
    let ports = state
        .ports
        .iter()
        .map(|p| {
            let link = links.get(&p.name);
            let xdp = link.and_then(|l| l.xdp);
            let ours = state.dataplane.program_id(p.role);
            PortStatus {
                name: p.name.clone(),
                role: role(p.role),
                ifindex: p.ifindex,
                slot: p.slot,
                vm: p.vm.clone(),
                up: link.is_some_and(|l| l.up),
                mtu: link.map_or(0, |l| l.mtu),
                xdp_mode: xdp.map(|x| x.mode),
                xdp_ours: xdp.is_some() && xdp.map(|x| x.prog_id) == ours,
            }
        })
        .collect();
    StatusView {
        instance: state.config.instance.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime_secs: state.started.elapsed().as_secs(),
        config: state.config_path.display().to_string(),
        netns: state.config.netns.clone(),
        pin_dir: state.dataplane.pins().path().display().to_string(),
        abi: info.abi,
        dataplane_created_unix: info.created_unix,
        adopted: state.adopted,
        cpus: state.dataplane.nr_cpus(),
        ports,
        vms: state.vms.len(),
        totals: totals(sample),
    }
}

fn vm_counters(c: &xnic_common::maps::VmCounters) -> VmCountersView {
    VmCountersView {
        from_vm: c.from_vm.into(),
        to_vm: c.to_vm.into(),
        dropped: c.dropped.into(),
    }
}

pub fn vm(state: &State, sample: &Sample, rates: &Rates, index: usize) -> VmView {
    let vm = &state.vms[index];
    let port_index = state.ports.iter().position(|p| p.name == vm.port);
    let port_reasons = port_index
        .map(|i| {
            Reason::ALL
                .iter()
                .filter(|r| sample.ports[i].reasons[**r as usize].packets > 0)
                .map(|r| {
                    (
                        r.name().to_string(),
                        sample.ports[i].reasons[*r as usize].into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    VmView {
        name: vm.name.clone(),
        slot: vm.slot,
        port: vm.port.clone(),
        macs: vm.macs.iter().map(|m| m.to_string()).collect(),
        ips: vm.ips.iter().map(|n| n.to_string()).collect(),
        counters: vm_counters(&sample.vms[index]),
        rates: rates.vms.get(index).copied().unwrap_or(VmRates::default()),
        port_reasons,
        team: state
            .team
            .as_ref()
            .and_then(|t| t.vm_view(&state.dataplane, index)),
    }
}

pub fn stats(state: &State, sample: &Sample, rates: &Rates) -> StatsView {
    let ports = state
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let c = &sample.ports[i];
            let reasons: BTreeMap<String, Count> = Reason::ALL
                .iter()
                .map(|r| (r.name().to_string(), c.reasons[*r as usize].into()))
                .collect();
            let shapes: BTreeMap<String, Count> = Shape::ALL
                .iter()
                .filter(|s| c.shapes[**s as usize].packets > 0)
                .map(|s| (s.name().to_string(), c.shapes[*s as usize].into()))
                .collect();
            PortStats {
                name: p.name.clone(),
                role: role(p.role),
                slot: p.slot,
                total: total(c).into(),
                rate: rates.ports.get(i).copied().unwrap_or_default(),
                reasons,
                shapes,
            }
        })
        .collect();
    let vms = state
        .vms
        .iter()
        .enumerate()
        .map(|(i, v)| VmStats {
            name: v.name.clone(),
            counters: vm_counters(&sample.vms[i]),
            rates: rates.vms.get(i).copied().unwrap_or_default(),
        })
        .collect();
    StatsView {
        interval_secs: rates.interval_secs,
        ports,
        vms,
        unknown_port: total(&sample.unknown_port).into(),
        cpus: sample.cpus.iter().map(|c: &Counter| (*c).into()).collect(),
    }
}
