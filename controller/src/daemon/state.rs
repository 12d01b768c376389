//! What the daemon manages, and bringing the dataplane in line with the configuration at
//! start: ports attached, slots assigned, MACs bound. A start that fails part-way undoes what
//! it did, so a bad start changes nothing.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context as _, bail};
use tracing::{info, warn};
use xnic_common::{
    limits::{MAX_PORTS, MAX_VMS},
    maps::{
        MacOwner, NO_VM, Name, PORT_STEER, PORT_SWITCH, PORT_TEAM, PortEntry, PortRecord, PortRole,
        VmRecord,
    },
};

use crate::{
    config::Config,
    dataplane::{Attached, Dataplane},
    monitor::links::{LinkState, Links},
    net::{IpNet, MacAddr},
    policy::slots,
};

/// First port slot: slot 0 counts frames on interfaces without a port entry.
const FIRST_PORT_SLOT: u32 = 1;

#[derive(Clone, Debug)]
pub struct Port {
    pub name: String,
    pub role: PortRole,
    pub ifindex: u32,
    pub slot: u32,
    /// The VM owning this port (VM ports only).
    pub vm: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Vm {
    pub name: String,
    pub slot: u32,
    pub port: String,
    pub macs: Vec<MacAddr>,
    pub ips: Vec<IpNet>,
    /// Configured RSS state: `auto`, `none` or an engine name.
    pub rss_hint: String,
    pub priority: i32,
    pub prefer_dedicated: bool,
}

pub struct State {
    pub config: Config,
    pub config_path: PathBuf,
    pub dataplane: Dataplane,
    /// Uplinks, then VM ports, in configuration order.
    pub ports: Vec<Port>,
    pub vms: Vec<Vm>,
    /// This daemon found a pinned dataplane and took it over.
    pub adopted: bool,
    pub started: Instant,
    /// Software RSS, when configured.
    pub rss: Option<super::rss::RssRuntime>,
    /// NIC teaming, when configured.
    pub team: Option<super::team::TeamRuntime>,
}

impl State {
    pub fn vm(&self, name: &str) -> Option<&Vm> {
        self.vms.iter().find(|v| v.name == name)
    }

    pub fn port(&self, name: &str) -> Option<&Port> {
        self.ports.iter().find(|p| p.name == name)
    }
}

/// Every interface the configuration names, with its role and owning VM.
fn wanted_ports(config: &Config) -> Vec<(String, PortRole, Option<String>)> {
    config
        .uplinks
        .iter()
        .map(|u| (u.name.clone(), PortRole::Uplink, None))
        .chain(
            config
                .vms
                .iter()
                .map(|v| (v.port.clone(), PortRole::Vm, Some(v.name.clone()))),
        )
        .collect()
}

/// Looks up every configured interface; fails, naming all missing ones, before anything is
/// touched.
pub async fn resolve_interfaces(
    config: &Config,
    links: &Links,
) -> anyhow::Result<HashMap<String, LinkState>> {
    let mut found = HashMap::new();
    let mut missing = Vec::new();
    for (name, _, _) in wanted_ports(config) {
        match links.get(&name).await? {
            Some(state) => {
                found.insert(name, state);
            }
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        let place = config
            .netns
            .as_ref()
            .map_or("this network namespace".to_string(), |ns| {
                format!("network namespace {ns:?}")
            });
        bail!(
            "interface{} {} not found in {place}; create {} or fix the configuration \
             (nothing was changed)",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            if missing.len() > 1 { "them" } else { "it" }
        );
    }
    Ok(found)
}

/// Brings the dataplane in line with `config`. On error, undoes what this call did.
pub fn start(
    config: Config,
    config_path: PathBuf,
    mut dataplane: Dataplane,
    interfaces: &HashMap<String, LinkState>,
) -> anyhow::Result<State> {
    // An interface running someone else's XDP program would fail to attach half-way through;
    // refuse before changing anything.
    for (name, _, _) in wanted_ports(&config) {
        if let Some(xdp) = interfaces[&name].xdp
            && dataplane.pinned_link_program(&name) != Some(xdp.prog_id)
        {
            let instance = config.instance.clone();
            let created = dataplane.created();
            drop(dataplane);
            if created {
                let _ = crate::dataplane::teardown(&instance);
            }
            bail!(
                "interface {name} already runs XDP program id {} that is not this instance's; \
                 detach it first (`ip link set dev {name} xdp off`); nothing was changed",
                xdp.prog_id
            );
        }
    }
    let mut fresh = Vec::new();
    match apply(&config, &mut dataplane, interfaces, &mut fresh) {
        Ok((ports, vms, rss, team)) => Ok(State {
            adopted: !dataplane.created(),
            config,
            config_path,
            dataplane,
            ports,
            vms,
            started: Instant::now(),
            rss,
            team,
        }),
        Err(e) => {
            for ifname in fresh {
                if let Err(undo) = dataplane.detach(&ifname) {
                    warn!(interface = %ifname, error = %undo, "could not undo attachment");
                }
            }
            if dataplane.created() {
                let instance = config.instance.clone();
                drop(dataplane);
                if let Err(undo) = crate::dataplane::teardown(&instance) {
                    warn!(error = %undo, "could not remove the new pins");
                }
            }
            Err(e)
        }
    }
}

/// What [`apply`] set up: ports, VMs, and the RSS and team runtimes when configured.
type Applied = (
    Vec<Port>,
    Vec<Vm>,
    Option<super::rss::RssRuntime>,
    Option<super::team::TeamRuntime>,
);

fn apply(
    config: &Config,
    dp: &mut Dataplane,
    interfaces: &HashMap<String, LinkState>,
    fresh: &mut Vec<String>,
) -> anyhow::Result<Applied> {
    // Slots: names keep the slots their counters are in.
    let recorded_vms: Vec<(u32, String)> = dp
        .vm_records()?
        .into_iter()
        .map(|(slot, r)| (slot, r.name.as_str().to_string()))
        .collect();
    let vm_names: Vec<String> = config.vms.iter().map(|v| v.name.clone()).collect();
    let vm_plan = slots::plan(&recorded_vms, &vm_names, 0, MAX_VMS)?;

    let port_records = dp.port_records()?;
    let recorded_ports: Vec<(u32, String)> = port_records
        .iter()
        .map(|(slot, r)| (*slot, r.name.as_str().to_string()))
        .collect();
    let wanted = wanted_ports(config);
    let port_names: Vec<String> = wanted.iter().map(|(n, _, _)| n.clone()).collect();
    let port_plan = slots::plan(&recorded_ports, &port_names, FIRST_PORT_SLOT, MAX_PORTS)?;

    // Forget what the configuration no longer has.
    for (name, slot) in &port_plan.release {
        info!(interface = %name, "port removed from configuration: detaching");
        dp.detach(name)?;
        if let Some((_, rec)) = port_records.iter().find(|(s, _)| s == slot) {
            dp.remove_port(rec.ifindex)?;
        }
        dp.set_port_record(*slot, PortRecord::default())?;
    }
    let released_vm_slots: HashSet<u32> = vm_plan.release.iter().map(|(_, s)| *s).collect();
    for (name, slot) in &vm_plan.release {
        info!(vm = %name, "VM removed from configuration");
        dp.set_vm_record(*slot, VmRecord::default())?;
    }

    // VMs and their MACs.
    let mut vms = Vec::new();
    for vm in &config.vms {
        let slot = vm_plan.slot_of(&vm.name).context("VM without a slot")?;
        if vm_plan.assign.iter().any(|(n, _)| n == &vm.name) {
            dp.reset_vm_counters(slot)?;
            dp.reset_vm_cpu_counters(slot)?;
            dp.set_vm_rss(slot, xnic_common::rss::VmRss::default())?;
            dp.reset_team_vm_counters(slot)?;
        }
        dp.set_vm_record(
            slot,
            VmRecord {
                name: Name::new(&vm.name),
                in_use: 1,
                _pad: [0; 7],
            },
        )?;
        vms.push(Vm {
            name: vm.name.clone(),
            slot,
            port: vm.port.clone(),
            macs: vm.mac_addrs(),
            ips: vm.ip_nets(),
            rss_hint: vm.rss.clone(),
            priority: vm.priority,
            prefer_dedicated: vm.prefer_dedicated,
        });
    }
    let mut wanted_macs: HashMap<[u8; 6], MacOwner> = HashMap::new();
    for vm in &vms {
        let ifindex = interfaces[&vm.port].ifindex;
        for mac in &vm.macs {
            wanted_macs.insert(
                mac.0,
                MacOwner {
                    vm_slot: vm.slot,
                    port_ifindex: ifindex,
                },
            );
        }
    }
    for (mac, owner) in dp.macs()? {
        if wanted_macs.get(&mac) != Some(&owner) || released_vm_slots.contains(&owner.vm_slot) {
            dp.remove_mac(mac)?;
        }
    }
    for (mac, owner) in &wanted_macs {
        dp.set_mac(*mac, *owner)?;
    }

    // Ports: entries first, so the program counts correctly from the first frame it sees.
    let previous: HashMap<u32, PortEntry> = dp.ports()?.into_iter().collect();
    let mut ports = Vec::new();
    for (name, role, vm) in &wanted {
        let slot = port_plan.slot_of(name).context("port without a slot")?;
        let ifindex = interfaces[name].ifindex;
        if port_plan.assign.iter().any(|(n, _)| n == name) {
            dp.reset_port_counters(slot)?;
        }
        let vm_slot = vm
            .as_ref()
            .and_then(|v| vms.iter().find(|x| &x.name == v))
            .map_or(NO_VM, |v| v.slot);
        // Steering and switching are set per port once its XDP mode is known (below); an
        // adopted port keeps what it has until then, so its frames never miss a step.
        let mut entry = PortEntry {
            slot,
            vm_slot,
            role: *role as u8,
            flags: 0,
            team: 0,
            member: 0,
        };
        if let Some(prev) = previous.get(&ifindex)
            && (prev.slot, prev.vm_slot, prev.role) == (entry.slot, entry.vm_slot, entry.role)
        {
            entry = *prev;
        }
        dp.set_port(ifindex, entry)?;
        dp.set_port_record(
            slot,
            PortRecord {
                name: Name::new(name),
                ifindex,
                role: *role as u8,
                _pad: [0; 3],
            },
        )?;
        ports.push(Port {
            name: name.clone(),
            role: *role,
            ifindex,
            slot,
            vm: vm.clone(),
        });
    }
    let current: HashSet<u32> = ports.iter().map(|p| p.ifindex).collect();
    for (ifindex, _) in dp.ports()? {
        if !current.contains(&ifindex) {
            dp.remove_port(ifindex)?;
        }
    }

    // Steering: CPU queues, tables and placements before frames can be redirected.
    let rss = match &config.rss {
        Some(section) => Some(super::rss::RssRuntime::start(section, &vms, dp)?),
        None => {
            super::rss::RssRuntime::disable(dp)?;
            None
        }
    };

    // Switching and teams: redirect targets and placements before any port switches.
    let team_uplinks: HashMap<&str, (u8, u8)> = config
        .teams
        .iter()
        .enumerate()
        .flat_map(|(t, team)| {
            team.uplinks
                .iter()
                .enumerate()
                .map(move |(m, u)| (u.as_str(), (t as u8, m as u8)))
        })
        .collect();
    let switching = !config.teams.is_empty();
    let wanted_switch: HashSet<u32> = if switching {
        ports.iter().map(|p| p.ifindex).collect()
    } else {
        HashSet::new()
    };
    for ifindex in dp.switch_ports()? {
        if !wanted_switch.contains(&ifindex) {
            dp.remove_switch_port(ifindex)?;
        }
    }
    let team = if switching {
        for port in &ports {
            dp.set_switch_port(port.ifindex, team_uplinks.contains_key(port.name.as_str()))?;
        }
        Some(super::team::TeamRuntime::start(
            config,
            &vms,
            &ports,
            dp,
            |name| interfaces.get(name).is_some_and(|l| l.up),
        )?)
    } else {
        None
    };

    // Attach last: a failure here is undone by the caller.
    for port in &ports {
        let attached_prog = interfaces[&port.name].xdp.map(|x| x.prog_id);
        let mode = match dp
            .attach(
                &port.name,
                port.ifindex,
                port.role,
                config.daemon.xdp_mode,
                attached_prog,
            )
            .with_context(|| format!("attaching to {}", port.name))?
        {
            Attached::Adopted => {
                info!(interface = %port.name, "adopted running XDP attachment");
                interfaces[&port.name].xdp.map(|x| x.mode)
            }
            Attached::Fresh(mode) => {
                fresh.push(port.name.clone());
                info!(interface = %port.name, ?mode, program = crate::dataplane::program_name(port.role), "attached");
                Some(mode)
            }
        };
        // Frames steered from generic XDP lose their metadata on the way to the CPU-map
        // program; such ports leave frames where they arrive.
        let native = mode == Some(crate::dataplane::AttachMode::Native);
        if rss.is_some() && !native {
            warn!(interface = %port.name, "RSS steering needs native XDP: frames arriving here stay on the CPU they arrive on");
        }
        let vm_slot = port
            .vm
            .as_ref()
            .and_then(|v| vms.iter().find(|x| &x.name == v))
            .map_or(NO_VM, |v| v.slot);
        let team_member = team_uplinks.get(port.name.as_str()).copied();
        dp.set_port(
            port.ifindex,
            PortEntry {
                slot: port.slot,
                vm_slot,
                role: port.role as u8,
                flags: if native { PORT_STEER } else { 0 }
                    | if switching { PORT_SWITCH } else { 0 }
                    | if team_member.is_some() { PORT_TEAM } else { 0 },
                team: team_member.map_or(0, |(t, _)| t),
                member: team_member.map_or(0, |(_, m)| m),
            },
        )?;
    }
    Ok((ports, vms, rss, team))
}
