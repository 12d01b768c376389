//! The base feature: which ports and VMs exist, the slots their counters live in, and the
//! entries that let the dataplane tell them apart (`PORTS`, `MACS`, the slot records) and run
//! on them (the XDP attachments).
//!
//! Slots are keyed by name and recorded in the pinned `VM_TABLE`/`PORT_TABLE`, so a name
//! keeps its counters across daemon restarts, and a VM port that is deleted and recreated (a
//! VM reboot, a live migration in) keeps its slot while the VM stays configured. A port that
//! does not exist yet is *waiting*: nothing of it is written until the interface appears.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use xnic_common::{
    limits::{MAX_PORTS, MAX_VMS},
    maps::{MacOwner, NO_VM, Name, PortEntry, PortRecord, PortRole, VmRecord},
};
use xnic_proto::{
    config::{Config, VmConfig},
    net::MacAddr,
};

use super::{Context, Feature};
use crate::{
    events::NewEvent,
    policy::{
        plan::{Attachment, Image, Resets, put},
        slots,
    },
};

/// First port slot: slot 0 counts frames on interfaces without a port entry.
pub const FIRST_PORT_SLOT: u32 = 1;

/// A port the desired state names: an uplink, or a VM's port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedPort {
    pub name: String,
    pub role: PortRole,
    /// The VM owning it (VM ports only).
    pub vm: Option<String>,
}

/// Every interface `config` names, uplinks first, in configuration order.
pub fn wanted_ports(config: &Config) -> Vec<WantedPort> {
    config
        .uplinks
        .iter()
        .map(|u| WantedPort {
            name: u.name.clone(),
            role: PortRole::Uplink,
            vm: None,
        })
        .chain(config.vms.iter().map(|v| WantedPort {
            name: v.port.clone(),
            role: PortRole::Vm,
            vm: Some(v.name.clone()),
        }))
        .collect()
}

/// Name → slot of every VM and port.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Slots {
    pub vms: BTreeMap<String, u32>,
    pub ports: BTreeMap<String, u32>,
}

impl Slots {
    pub fn vm(&self, name: &str) -> Option<u32> {
        self.vms.get(name).copied()
    }

    pub fn port(&self, name: &str) -> Option<u32> {
        self.ports.get(name).copied()
    }
}

/// Why a port that exists is not attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// Another XDP program runs there.
    Foreign(u32),
    /// Attaching failed; retried when the interface changes.
    Failed(String),
}

#[derive(Clone, Debug, Default)]
pub struct Base {
    slots: Slots,
    /// Slots assigned since the last render: their counters must be zeroed first.
    resets: Resets,
    /// Ports that exist but are not attached, and why (by interface name and ifindex).
    blocked: BTreeMap<String, (u32, Blocked)>,
}

impl Base {
    /// Takes over the slots recorded in the pinned maps.
    pub fn adopt(pinned: &Image) -> Base {
        let slots = Slots {
            vms: pinned
                .vm_records
                .iter()
                .filter(|(_, r)| r.in_use != 0)
                .map(|(s, r)| (r.name.as_str().to_string(), *s))
                .collect(),
            ports: pinned
                .port_records
                .iter()
                .filter(|(_, r)| r.role != 0)
                .map(|(s, r)| (r.name.as_str().to_string(), *s))
                .collect(),
        };
        Base {
            slots,
            ..Base::default()
        }
    }

    pub fn slots(&self) -> &Slots {
        &self.slots
    }

    /// The counter resets the next write must start with (taken once).
    pub fn take_resets(&mut self) -> Resets {
        std::mem::take(&mut self.resets)
    }

    /// Marks a port that exists as not attachable (until its interface changes).
    pub fn block(&mut self, name: &str, ifindex: u32, why: Blocked) {
        self.blocked.insert(name.to_string(), (ifindex, why));
    }

    /// Why port `name` is not attached, if it exists and is not.
    pub fn blocked(&self, name: &str) -> Option<&Blocked> {
        self.blocked.get(name).map(|(_, b)| b)
    }

    /// Forgets blocks on interfaces that went away or were recreated, and notes foreign XDP
    /// programs on the rest. `ours(name, prog_id)` says whether a program is this instance's.
    pub fn refresh_blocks(&mut self, cx: &Context, ours: impl Fn(&str, u32) -> bool) {
        self.blocked
            .retain(|name, (ifindex, _)| cx.host.get(name).is_some_and(|l| l.ifindex == *ifindex));
        for port in wanted_ports(cx.desired) {
            let Some(link) = cx.host.get(&port.name) else {
                continue;
            };
            match link.xdp {
                Some(x) if !ours(&port.name, x.prog_id) => {
                    self.blocked.insert(
                        port.name.clone(),
                        (link.ifindex, Blocked::Foreign(x.prog_id)),
                    );
                }
                _ => {
                    if matches!(self.blocked.get(&port.name), Some((_, Blocked::Foreign(_)))) {
                        self.blocked.remove(&port.name);
                    }
                }
            }
        }
    }

    /// The port's ifindex when it exists and may be attached.
    fn live(&self, cx: &Context, name: &str) -> Option<u32> {
        let link = cx.host.get(name)?;
        (!self.blocked.contains_key(name)).then_some(link.ifindex)
    }
}

fn plan_slots(
    current: &BTreeMap<String, u32>,
    wanted: &[String],
    first: u32,
    capacity: u32,
) -> Result<(BTreeMap<String, u32>, Vec<u32>), String> {
    let recorded: Vec<(u32, String)> = current.iter().map(|(n, s)| (*s, n.clone())).collect();
    let plan = slots::plan(&recorded, wanted, first, capacity).map_err(|e| e.to_string())?;
    let fresh = plan.assign.iter().map(|(_, s)| *s).collect();
    Ok((plan.keep.into_iter().chain(plan.assign).collect(), fresh))
}

impl Feature for Base {
    type Sample = ();

    fn reconcile(
        &mut self,
        cx: &Context,
        _slots: &Slots,
        events: &mut Vec<NewEvent>,
    ) -> Result<(), String> {
        let vm_names: Vec<String> = cx.desired.vms.iter().map(|v| v.name.clone()).collect();
        let (vms, fresh_vms) = plan_slots(&self.slots.vms, &vm_names, 0, MAX_VMS)?;
        let port_names: Vec<String> = wanted_ports(cx.desired)
            .into_iter()
            .map(|p| p.name)
            .collect();
        let (ports, fresh_ports) =
            plan_slots(&self.slots.ports, &port_names, FIRST_PORT_SLOT, MAX_PORTS)?;
        for v in cx.desired.vms.iter() {
            if !self.slots.vms.contains_key(&v.name) {
                events.push(NewEvent::new(
                    "vm",
                    "vm_added",
                    &v.name,
                    format!(
                        "VM {} added on port {} (slot {})",
                        v.name, v.port, vms[&v.name]
                    ),
                ));
            }
        }
        for name in self.slots.vms.keys() {
            if !vms.contains_key(name) {
                events.push(NewEvent::new(
                    "vm",
                    "vm_removed",
                    name,
                    format!("VM {name} removed"),
                ));
            }
        }
        self.resets.vm_slots.extend(fresh_vms);
        self.resets.port_slots.extend(fresh_ports);
        let wanted: BTreeSet<&String> = port_names.iter().collect();
        self.blocked.retain(|name, _| wanted.contains(name));
        self.slots = Slots { vms, ports };
        Ok(())
    }

    fn render(&self, cx: &Context, slots: &Slots, image: &mut Image) {
        for (name, slot) in &slots.vms {
            put(
                &mut image.vm_records,
                *slot,
                VmRecord {
                    name: Name::new(name),
                    in_use: 1,
                    _pad: [0; 7],
                },
            );
        }
        let by_name: HashMap<&str, &VmConfig> = cx
            .desired
            .vms
            .iter()
            .map(|v| (v.name.as_str(), v))
            .collect();
        for port in wanted_ports(cx.desired) {
            let Some(slot) = slots.port(&port.name) else {
                continue;
            };
            let ifindex = self.live(cx, &port.name);
            put(
                &mut image.port_records,
                slot,
                PortRecord {
                    name: Name::new(&port.name),
                    ifindex: cx.host.get(&port.name).map_or(0, |l| l.ifindex),
                    role: port.role as u8,
                    _pad: [0; 3],
                },
            );
            let Some(ifindex) = ifindex else { continue };
            let vm_slot = port
                .vm
                .as_deref()
                .and_then(|v| slots.vm(v))
                .unwrap_or(NO_VM);
            let mut entry = PortEntry::new(slot, vm_slot, port.role);
            // The VM's first MAC spares the usual frame a lookup.
            if let Some(mac) = port
                .vm
                .as_deref()
                .and_then(|v| by_name.get(v))
                .and_then(|v| v.macs.first())
                .and_then(|m| m.parse::<MacAddr>().ok())
            {
                entry.mac = mac.0;
            }
            image.ports.insert(ifindex, entry);
            image.attach.insert(
                port.name.clone(),
                Attachment {
                    ifindex,
                    role: port.role,
                    program: cx.programs.for_role(port.role),
                },
            );
        }
        // A VM's MACs are bound while its port is there: frames for a VM that is not on this
        // host go where they would without xnic.
        for vm in &cx.desired.vms {
            let (Some(vm_slot), Some(port_ifindex)) = (slots.vm(&vm.name), self.live(cx, &vm.port))
            else {
                continue;
            };
            for mac in vm.mac_addrs() {
                image.macs.insert(
                    mac.0,
                    MacOwner {
                        vm_slot,
                        port_ifindex,
                    },
                );
            }
        }
    }

    fn tick(&mut self, _: &Context, _: &Slots, _: (), _: &mut Vec<NewEvent>) -> bool {
        false
    }
}
