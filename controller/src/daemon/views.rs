//! Turns a snapshot of the daemon's state and the counters into what the API returns.

use std::collections::{BTreeMap, HashMap};

use xnic_common::{
    maps::{Counter, PortRole},
    parse::Shape,
    verdict::{Action, Reason},
};
use xnic_proto::api::{
    Count, PortStats, PortStatus, Role, ShaperView, StatsView, StatusView, Totals, VmCountersView,
    VmRates, VmStats, VmView,
};
use xnic_proto::config::AllocationMode;

use super::sample::{Rates, Sample, total};
use crate::{
    dataplane::{Counters, PortCounters, qdisc::Tc},
    features::base::wanted_ports,
    monitor::links::LinkState,
    reconcile::Snapshot,
};

fn role(r: PortRole) -> Role {
    match r {
        PortRole::Uplink => Role::Uplink,
        PortRole::Vm => Role::Vm,
    }
}

fn totals(sample: &Sample) -> Totals {
    let mut t = Totals::default();
    for port in sample.ports.values().chain([&sample.unknown_port]) {
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

/// What a port is doing: `attached`, `waiting` (its interface does not exist), or why it is
/// not attached.
pub fn port_state(snap: &Snapshot, name: &str) -> String {
    if let Some(why) = snap.blocked.get(name) {
        format!("not attached: {why}")
    } else if snap.host.get(name).is_none() {
        "waiting".into()
    } else if snap.attached.contains_key(name) {
        "attached".into()
    } else {
        "attaching".into()
    }
}

pub fn status(snap: &Snapshot, sample: &Sample, links: &HashMap<String, LinkState>) -> StatusView {
    let ports = wanted_ports(&snap.config)
        .into_iter()
        .map(|p| {
            let link = links.get(&p.name);
            let xdp = link.and_then(|l| l.xdp);
            let ours = Some(snap.programs.for_role(p.role));
            PortStatus {
                state: port_state(snap, &p.name),
                role: role(p.role),
                ifindex: link.map_or(0, |l| l.ifindex),
                slot: snap.slots.port(&p.name).unwrap_or(0),
                vm: p.vm.clone(),
                up: link.is_some_and(|l| l.up),
                mtu: link.map_or(0, |l| l.mtu),
                xdp_mode: xdp.map(|x| x.mode),
                xdp_ours: xdp.is_some() && xdp.map(|x| x.prog_id) == ours,
                name: p.name,
            }
        })
        .collect();
    StatusView {
        instance: snap.config.instance.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime_secs: snap.started.elapsed().as_secs(),
        config: snap.config_file.display().to_string(),
        state_file: snap.state_file.display().to_string(),
        generation: snap.generation,
        netns: snap.config.netns.clone(),
        pin_dir: snap.pin_dir.display().to_string(),
        abi: snap.info.abi,
        dataplane_created_unix: snap.info.created_unix,
        adopted: snap.adopted,
        carrier_hook: match &snap.kernel_failover_off {
            None => "on".into(),
            Some(why) => format!("off ({why})"),
        },
        cpus: snap.nr_cpus,
        ports,
        vms: snap.config.vms.len(),
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

pub fn vm(
    snap: &Snapshot,
    sample: &Sample,
    rates: &Rates,
    name: &str,
    counters: &Counters,
) -> anyhow::Result<VmView> {
    let vm = snap
        .config
        .vm(name)
        .ok_or_else(|| anyhow::anyhow!("no VM named {name:?}"))?;
    let slot = snap.slots.vm(name).unwrap_or(0);
    let port_reasons = sample
        .ports
        .get(&vm.port)
        .map(|c| {
            Reason::ALL
                .iter()
                .filter(|r| c.reasons[**r as usize].packets > 0)
                .map(|r| (r.name().to_string(), c.reasons[*r as usize].into()))
                .collect()
        })
        .unwrap_or_default();
    let team_counters = counters.team_vm(slot).unwrap_or_default();
    let mut team = snap
        .team
        .vm_view(&snap.cx(), &snap.slots, name, &team_counters);
    if let Some(t) = team.as_mut()
        && t.allocation_mode == AllocationMode::Shaped.name()
        && t.allocation_mbps.is_some()
    {
        t.shaper = shaper_view(slot);
    }
    Ok(VmView {
        name: vm.name.clone(),
        slot,
        port: vm.port.clone(),
        port_state: port_state(snap, &vm.port),
        macs: vm.mac_addrs().iter().map(|m| m.to_string()).collect(),
        ips: vm.ip_nets().iter().map(|n| n.to_string()).collect(),
        counters: sample.vms.get(name).map(vm_counters).unwrap_or_default(),
        rates: rates.vms.get(name).copied().unwrap_or(VmRates::default()),
        port_reasons,
        rss: snap
            .rss
            .status(&snap.slots, BTreeMap::new())
            .and_then(|s| s.vms.into_iter().find(|v| v.name == name)),
        team,
    })
}

/// What the shaper's classes of the VM in `slot` have done, summed over the uplinks that
/// have one (as the kernel counts them), if any has.
fn shaper_view(slot: u32) -> Option<ShaperView> {
    let mut tc = Tc::open().ok()?;
    let mut view: Option<ShaperView> = None;
    for ifindex in tc.roots().ok()? {
        let Some((_, s)) = tc.classes(ifindex).ok()?.remove(&slot) else {
            continue;
        };
        let v = view.get_or_insert_default();
        v.bytes += s.bytes;
        v.packets += u64::from(s.packets);
        v.drops += u64::from(s.drops);
        v.backlog_bytes += u64::from(s.backlog_bytes);
    }
    view
}

fn port_stats(name: &str, r: PortRole, slot: u32, c: &PortCounters, rates: &Rates) -> PortStats {
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
        name: name.to_string(),
        role: role(r),
        slot,
        total: total(c).into(),
        rate: rates.ports.get(name).copied().unwrap_or_default(),
        reasons,
        shapes,
        redirect_dropped: c.redirect_dropped,
    }
}

pub fn stats(snap: &Snapshot, sample: &Sample, rates: &Rates) -> StatsView {
    let ports = wanted_ports(&snap.config)
        .into_iter()
        .filter_map(|p| {
            let c = sample.ports.get(&p.name)?;
            let slot = snap.slots.port(&p.name)?;
            Some(port_stats(&p.name, p.role, slot, c, rates))
        })
        .collect();
    let vms = snap
        .config
        .vms
        .iter()
        .map(|v| VmStats {
            name: v.name.clone(),
            counters: sample.vms.get(&v.name).map(vm_counters).unwrap_or_default(),
            rates: rates.vms.get(&v.name).copied().unwrap_or_default(),
        })
        .collect();
    StatsView {
        interval_secs: rates.interval_secs,
        ports,
        vms,
        unknown_port: total(&sample.unknown_port).into(),
        cpus: sample.cpus.iter().map(|c: &Counter| (*c).into()).collect(),
        cpu_queue_dropped: sample.queue_drops.clone(),
    }
}
