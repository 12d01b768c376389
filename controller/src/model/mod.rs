//! The desired state: one configuration (the same schema as the file), a generation that
//! counts its changes, and the changes the API makes to it. Pure: a change in, a new
//! configuration (or a refusal saying why) out; the reconciler validates it as a whole and
//! applies it. See [`store`] for where it is kept between daemons and [`diff`] for how two
//! states compare.

pub mod diff;
pub mod store;
pub mod vnic;

use serde::{Deserialize, Serialize};
use xnic_proto::{
    api::VmPatch,
    config::{Config, EngineConfig, VmConfig},
};

/// Why a change was refused; nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It names something that does not exist.
    NotFound(String),
    /// It is malformed or would make the desired state invalid.
    Invalid(String),
    /// It conflicts with the state now (something exists already, the generation moved on).
    Conflict(String),
    /// The host could not carry it out; everything was put back.
    Failed(String),
}

impl Refusal {
    pub fn message(&self) -> &str {
        match self {
            Refusal::NotFound(m)
            | Refusal::Invalid(m)
            | Refusal::Conflict(m)
            | Refusal::Failed(m) => m,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// One change to the desired state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// Everything, from a configuration file (`xnic apply`, SIGHUP).
    Replace(Box<Config>),
    AddVm(Box<VmConfig>),
    SetVm(String, Box<VmPatch>),
    DelVm(String),
    AddEngine(EngineConfig),
    SetEngineCpus(String, Vec<u32>),
    DelEngine(String),
    /// VNICs, routes and security rules.
    Vnic(vnic::VnicChange),
}

impl Change {
    /// What the change is, for logs and events.
    pub fn describe(&self) -> String {
        match self {
            Change::Replace(_) => "apply a configuration".into(),
            Change::AddVm(v) => format!("add VM {}", v.name),
            Change::SetVm(n, _) => format!("change VM {n}"),
            Change::DelVm(n) => format!("remove VM {n}"),
            Change::AddEngine(e) => format!("add RSS engine {}", e.name),
            Change::SetEngineCpus(n, _) => format!("change the CPUs of RSS engine {n}"),
            Change::DelEngine(n) => format!("remove RSS engine {n}"),
            Change::Vnic(v) => v.describe(),
        }
    }
}

/// Names for a message, `a, b, c` (or `none`).
pub fn names<'a>(it: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = it.collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn no_vm(config: &Config, name: &str) -> Refusal {
    Refusal::NotFound(format!(
        "no VM named {name:?}; known VMs: {}",
        names(config.vms.iter().map(|v| v.name.as_str()))
    ))
}

fn no_engine(config: &Config, name: &str) -> Refusal {
    let engines = config
        .rss
        .as_ref()
        .map_or(Vec::new(), |r| r.engines.clone());
    Refusal::NotFound(format!(
        "no RSS engine named {name:?}; known engines: {}",
        names(engines.iter().map(|e| e.name.as_str()))
    ))
}

/// `config` with `change` made. Only what the change itself gets wrong is refused here; the
/// whole result is validated by the caller.
pub fn apply(config: &Config, change: &Change) -> Result<Config, Refusal> {
    let mut c = config.clone();
    match change {
        Change::Replace(new) => {
            if new.instance != config.instance {
                return Err(Refusal::Invalid(format!(
                    "instance: the daemon runs instance {:?}; a configuration for {:?} belongs to another daemon",
                    config.instance, new.instance
                )));
            }
            if new.netns != config.netns {
                return Err(Refusal::Invalid(format!(
                    "netns: the daemon runs in {}; moving it to another namespace needs a restart",
                    config
                        .netns
                        .as_deref()
                        .map_or("its own namespace".to_string(), |n| format!(
                            "namespace {n:?}"
                        ))
                )));
            }
            c = (**new).clone();
        }
        Change::AddVm(vm) => {
            if c.vm(&vm.name).is_some() {
                return Err(Refusal::Conflict(format!(
                    "a VM named {:?} exists; change it with `xnic vm set` (PATCH) instead",
                    vm.name
                )));
            }
            c.vms.push((**vm).clone());
        }
        Change::SetVm(name, patch) => {
            let vm = c
                .vms
                .iter_mut()
                .find(|v| &v.name == name)
                .ok_or_else(|| no_vm(config, name))?;
            patch.apply_to(vm);
        }
        Change::DelVm(name) => {
            let before = c.vms.len();
            c.vms.retain(|v| &v.name != name);
            if c.vms.len() == before {
                return Err(no_vm(config, name));
            }
        }
        Change::AddEngine(engine) => {
            let rss = c.rss.as_mut().ok_or_else(|| {
                Refusal::Conflict(
                    "RSS is not configured: add an [rss] section to the configuration".into(),
                )
            })?;
            // A duplicate name is the validation's to refuse, like in a file.
            rss.engines.push(engine.clone());
        }
        Change::SetEngineCpus(name, cpus) => {
            let engine = c
                .rss
                .as_mut()
                .and_then(|r| r.engines.iter_mut().find(|e| &e.name == name))
                .ok_or_else(|| no_engine(config, name))?;
            engine.cpus = cpus.clone();
        }
        Change::DelEngine(name) => {
            let pinned: Vec<&str> = config
                .vms
                .iter()
                .filter(|v| &v.rss == name)
                .map(|v| v.name.as_str())
                .collect();
            let rss = c.rss.as_mut().ok_or_else(|| no_engine(config, name))?;
            let before = rss.engines.len();
            rss.engines.retain(|e| &e.name != name);
            if rss.engines.len() == before {
                return Err(no_engine(config, name));
            }
            if !pinned.is_empty() {
                return Err(Refusal::Conflict(format!(
                    "engine {name:?} has VMs placed on it by hand ({}); place them elsewhere first",
                    pinned.join(", ")
                )));
            }
        }
        Change::Vnic(v) => vnic::apply(&mut c, v)?,
    }
    Ok(c)
}

/// A validation error (dotted field path, message) in words about `config`: `vm[3]` becomes
/// the VM's name, so an API client sees what it sent rather than a position in a list.
pub fn explain(config: &Config, field: &str, message: &str) -> String {
    let named = |prefix: &str, kind: &str, name_of: &dyn Fn(usize) -> Option<String>| {
        let rest = field.strip_prefix(prefix)?;
        let (i, tail) = rest.split_once(']')?;
        let name = name_of(i.parse().ok()?)?;
        let tail = tail.trim_start_matches('.');
        Some(if tail.is_empty() {
            format!("{kind} {name:?}")
        } else {
            format!("{kind} {name:?}: {tail}")
        })
    };
    let place = named("vm[", "VM", &|i| config.vms.get(i).map(|v| v.name.clone()))
        .or_else(|| {
            named("rss.engine[", "engine", &|i| {
                config
                    .rss
                    .as_ref()
                    .and_then(|r| r.engines.get(i))
                    .map(|e| e.name.clone())
            })
        })
        .or_else(|| {
            named("vnic[", "VNIC", &|i| {
                config.vnics.get(i).map(|v| v.name.clone())
            })
        })
        .or_else(|| {
            named("route_table[", "route table", &|i| {
                config.route_tables.get(i).map(|t| t.name.clone())
            })
        })
        .or_else(|| {
            named("security_list[", "security list", &|i| {
                config.security_lists.get(i).map(|l| l.name.clone())
            })
        })
        .or_else(|| {
            named("gateway[", "gateway", &|i| {
                config.gateways.get(i).map(|g| g.name.clone())
            })
        })
        .unwrap_or_else(|| field.to_string());
    format!("{place}: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::parse(
            r#"
instance = "t"
[[uplink]]
name = "eth0"
[[vm]]
name = "vm0"
port = "tap0"
macs = ["02:00:00:00:00:01"]
[rss]
[[rss.engine]]
name = "e1"
kind = "shared"
cpus = [0]
"#,
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    fn vm(name: &str) -> VmConfig {
        serde_json::from_value(serde_json::json!({
            "name": name, "port": format!("tap-{name}"), "macs": ["02:00:00:00:00:09"]
        }))
        .unwrap()
    }

    #[test]
    fn vms_are_added_changed_and_removed_by_name() {
        let c = apply(&config(), &Change::AddVm(Box::new(vm("vm1")))).unwrap();
        assert_eq!(c.vms.len(), 2);
        let e = apply(&c, &Change::AddVm(Box::new(vm("vm1")))).unwrap_err();
        assert!(matches!(e, Refusal::Conflict(_)), "{e:?}");
        let patch: VmPatch =
            serde_json::from_str(r#"{"priority": 7, "bandwidth_mbps": 20}"#).unwrap();
        let c = apply(&c, &Change::SetVm("vm1".into(), Box::new(patch))).unwrap();
        assert_eq!(
            c.vm("vm1").map(|v| (v.priority, v.bandwidth_mbps)),
            Some((7, Some(20.0)))
        );
        let patch: VmPatch = serde_json::from_str(r#"{"bandwidth_mbps": null}"#).unwrap();
        let c = apply(&c, &Change::SetVm("vm1".into(), Box::new(patch))).unwrap();
        assert_eq!(c.vm("vm1").unwrap().bandwidth_mbps, None);
        let c = apply(&c, &Change::DelVm("vm0".into())).unwrap();
        assert_eq!(c.vms.len(), 1);
        let e = apply(&c, &Change::DelVm("vm0".into())).unwrap_err();
        assert!(e.message().contains("known VMs: vm1"), "{e}");
    }

    #[test]
    fn an_engine_a_vm_is_pinned_to_cannot_go() {
        let mut c = config();
        c.vms[0].rss = "e1".into();
        let e = apply(&c, &Change::DelEngine("e1".into())).unwrap_err();
        assert!(e.message().contains("placed on it by hand (vm0)"), "{e}");
        let e = apply(&c, &Change::DelEngine("nope".into())).unwrap_err();
        assert!(matches!(e, Refusal::NotFound(_)));
    }

    #[test]
    fn a_configuration_for_another_instance_is_refused() {
        let mut other = config();
        other.instance = "u".into();
        let e = apply(&config(), &Change::Replace(Box::new(other))).unwrap_err();
        assert!(e.message().starts_with("instance:"), "{e}");
    }

    #[test]
    fn validation_errors_name_the_vm() {
        let c = config();
        assert_eq!(
            explain(&c, "vm[0].macs[1]", "MAC 02:00:00:00:00:01 is bound twice"),
            "VM \"vm0\": macs[1]: MAC 02:00:00:00:00:01 is bound twice"
        );
        assert_eq!(explain(&c, "team[0].uplinks", "x"), "team[0].uplinks: x");
    }
}
