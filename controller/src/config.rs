//! The TOML configuration: one file describes the instance, its uplinks and VMs, daemon
//! settings and the lab. It is validated as a whole before anything is touched; every error
//! names the file, line, column and field.

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use xnic_common::limits::{MAX_IFNAME_LEN, MAX_MACS_PER_VM, MAX_NAME_LEN, MAX_UPLINKS, MAX_VMS};

use crate::net::{IpNet, MacAddr};

/// Longest instance name: it becomes part of the socket path and the pin directory.
pub const MAX_INSTANCE_LEN: usize = 32;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this xnic instance: its pins live under `/sys/fs/bpf/xnic/<instance>/` and its
    /// control socket is `/run/xnic/<instance>.sock`.
    pub instance: String,
    /// Network namespace (as in `ip netns`) that holds the interfaces; the daemon enters it.
    /// Omit to use the daemon's own namespace.
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default, rename = "uplink")]
    pub uplinks: Vec<UplinkConfig>,
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmConfig>,
    #[serde(default)]
    pub rss: Option<RssSection>,
    #[serde(default, rename = "team")]
    pub teams: Vec<TeamConfig>,
    #[serde(default)]
    pub lab: Option<LabConfig>,
}

/// A NIC team (`[[team]]`): uplinks that carry its VMs' frames, and how VMs are placed on
/// them. With a team configured, xnic switches VM traffic itself (see `docs/ARCHITECTURE.md`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub name: String,
    /// Member uplinks, in failover order (the first one up carries failover-placed VMs).
    pub uplinks: Vec<String>,
    /// How VMs without their own `team_policy` are placed.
    #[serde(default)]
    pub policy: crate::policy::team::Placement,
    /// A member that comes back up carries traffic again only after staying up this long.
    #[serde(default = "default_failback_hold_ms")]
    pub failback_hold_ms: u64,
    /// Gratuitous ARPs / unsolicited neighbour advertisements sent per moved address.
    #[serde(default = "default_announce_count")]
    pub announce_count: u32,
    /// How often loads are measured and load placement runs, in milliseconds.
    #[serde(default = "default_team_period_ms")]
    pub period_ms: u64,
    #[serde(default)]
    pub load: crate::policy::team::LoadParams,
}

fn default_failback_hold_ms() -> u64 {
    3000
}

fn default_announce_count() -> u32 {
    1
}

fn default_team_period_ms() -> u64 {
    500
}

/// Software RSS (`[rss]`): steer each VM's frames to CPUs through engines.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RssSection {
    /// How often loads are measured and the policy runs, in milliseconds.
    #[serde(default = "default_rss_period_ms")]
    pub period_ms: u64,
    /// The CPU that finishes frames of VMs in the no-RSS state.
    #[serde(default)]
    pub default_cpu: u32,
    #[serde(default)]
    pub hash: HashKind,
    /// Buckets per engine table: a power of two up to 256.
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    #[serde(default)]
    pub policy: crate::policy::rss::Params,
    #[serde(default, rename = "engine")]
    pub engines: Vec<EngineConfig>,
}

fn default_rss_period_ms() -> u64 {
    100
}

fn default_table_size() -> u32 {
    xnic_common::rss::DEFAULT_TABLE_SIZE
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HashKind {
    /// Both directions of a connection hash alike.
    #[default]
    Symmetric,
    Asymmetric,
}

/// One RSS engine (`[[rss.engine]]`): a CPU set and a table.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub name: String,
    pub kind: crate::policy::rss::EngineKind,
    pub cpus: Vec<u32>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpModePref {
    /// Native (driver) mode, falling back to generic with a warning.
    #[default]
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    #[serde(default)]
    pub xdp_mode: XdpModePref,
    /// Default log filter (tracing syntax: a level or directives like `xnic=debug`);
    /// `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// How often counters are sampled for rates, in milliseconds.
    #[serde(default = "default_stats_interval_ms")]
    pub stats_interval_ms: u64,
    /// Also serve `GET /metrics` on this TCP address (in the daemon's network namespace).
    #[serde(default)]
    pub metrics_listen: Option<String>,
}

fn default_log_level() -> String {
    "info".into()
}

fn default_stats_interval_ms() -> u64 {
    1000
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            xdp_mode: XdpModePref::Auto,
            log_level: default_log_level(),
            stats_interval_ms: default_stats_interval_ms(),
            metrics_listen: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Interface name.
    pub name: String,
    /// What the uplink can carry, in Mbit/s: VMs' allocations beyond it are cut, lowest
    /// priority first. Omit for no limit.
    #[serde(default)]
    pub capacity_mbps: Option<f64>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    pub name: String,
    /// Host-side interface of the VM's virtual NIC (tap or veth).
    pub port: String,
    /// MACs the VM may send from; frames from other MACs are dropped.
    pub macs: Vec<String>,
    /// The VM's addresses, optionally with a prefix length (`10.0.0.5/24`).
    #[serde(default)]
    pub ips: Vec<String>,
    /// RSS engine state: `auto` (the policy decides), `none` (no-RSS, pinned), or an engine's
    /// name (pinned there).
    #[serde(default = "default_rss_state")]
    pub rss: String,
    /// Higher first when a shared engine must shed a VM (with `[rss.policy] selection =
    /// "priority"`).
    #[serde(default)]
    pub priority: i32,
    /// Offered a dedicated engine first.
    #[serde(default)]
    pub prefer_dedicated: bool,
    /// The team carrying the VM's frames: a team's name, or `none`. Default: the first team.
    #[serde(default)]
    pub team: Option<String>,
    /// The uplink the VM is pinned to while it is up (then placed by its policy).
    #[serde(default)]
    pub uplink: Option<String>,
    /// Overrides the team's placement policy for this VM.
    #[serde(default)]
    pub team_policy: Option<crate::policy::team::Placement>,
    /// Bandwidth allocation, Mbit/s: frames beyond it are dropped. Omit for no limit.
    #[serde(default)]
    pub bandwidth_mbps: Option<f64>,
    /// Burst allowed above the allocation, KiB. Default: 5 ms at the allocated rate, at
    /// least 16 KiB.
    #[serde(default)]
    pub burst_kib: Option<u32>,
    /// Drop the VM's frames for this long after a failover moves it (lets a guest's
    /// stateful peers settle before traffic resumes on the new path). 0: no pause.
    #[serde(default)]
    pub failover_pause_ms: u64,
}

fn default_rss_state() -> String {
    "auto".into()
}

impl VmConfig {
    /// The MACs, parsed (validation has checked them).
    pub fn mac_addrs(&self) -> Vec<MacAddr> {
        self.macs.iter().filter_map(|m| m.parse().ok()).collect()
    }

    pub fn ip_nets(&self) -> Vec<IpNet> {
        self.ips.iter().filter_map(|m| m.parse().ok()).collect()
    }
}

/// How `xnic lab up` builds the demo topology around this configuration.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabConfig {
    /// Prefix of the lab's other namespaces: `<prefix>-tor` and `<prefix>-<vm>`.
    pub prefix: String,
    /// Addresses of the traffic endpoint in the tor namespace.
    pub tor_ips: Vec<String>,
    /// Give lab interfaces IPv6 (link-local and the configured addresses). Off makes the lab
    /// silent: no frame crosses it unless a test sends one.
    #[serde(default = "default_true")]
    pub ipv6: bool,
}

fn default_true() -> bool {
    true
}

impl LabConfig {
    pub fn tor_nets(&self) -> Vec<IpNet> {
        self.tor_ips.iter().filter_map(|m| m.parse().ok()).collect()
    }
}

/// A configuration error with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, when the position is known.
    pub position: Option<(usize, usize)>,
    /// Dotted path of the offending field, like `vm[1].macs[0]`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            position: None,
            field: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `file` only names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let error =
            |span: Option<std::ops::Range<usize>>, field: Option<String>, message| ConfigError {
                file: file.to_owned(),
                position: span.map(|s| line_col(text, s.start)),
                field,
                message,
            };
        let doc = DeTable::parse(text)
            .map_err(|e| error(e.span(), None, e.message().trim().to_string()))?;
        let de = toml::Deserializer::from(doc.clone());
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = (path != ".").then_some(path);
            let inner = e.inner();
            let span = inner
                .span()
                .or_else(|| field.as_deref().and_then(|f| locate(doc.get_ref(), f)));
            error(span, field, inner.message().trim().to_string())
        })?;
        config.validate().map_err(|(field, message)| {
            let span = locate(doc.get_ref(), &field);
            error(span, Some(field), message)
        })?;
        Ok(config)
    }

    /// Checks everything serde cannot: names, addresses, uniqueness, limits.
    fn validate(&self) -> Result<(), (String, String)> {
        check_name("instance", &self.instance, MAX_INSTANCE_LEN)?;
        if let Some(ns) = &self.netns {
            check_name("netns", ns, 64)?;
        }
        let d = &self.daemon;
        if !(100..=60_000).contains(&d.stats_interval_ms) {
            return Err((
                "daemon.stats_interval_ms".into(),
                format!(
                    "{} is out of range: use 100 to 60000 milliseconds",
                    d.stats_interval_ms
                ),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&d.log_level).is_err() {
            return Err((
                "daemon.log_level".into(),
                format!(
                    "{:?} is not a log filter: use error, warn, info, debug or trace",
                    d.log_level
                ),
            ));
        }
        if let Some(addr) = &d.metrics_listen
            && addr.parse::<std::net::SocketAddr>().is_err()
        {
            return Err((
                "daemon.metrics_listen".into(),
                format!("{addr:?} is not an address:port like 127.0.0.1:9477"),
            ));
        }
        if self.uplinks.is_empty() && self.vms.is_empty() {
            return Err((
                "uplink".into(),
                "nothing to manage: configure at least one [[uplink]] or [[vm]]".into(),
            ));
        }
        if self.uplinks.len() > MAX_UPLINKS as usize {
            return Err((
                "uplink".into(),
                format!(
                    "{} uplinks; at most {MAX_UPLINKS} are supported",
                    self.uplinks.len()
                ),
            ));
        }
        if self.vms.len() > MAX_VMS as usize {
            return Err((
                "vm".into(),
                format!("{} VMs; at most {MAX_VMS} are supported", self.vms.len()),
            ));
        }

        let mut interfaces = HashSet::new();
        for (i, u) in self.uplinks.iter().enumerate() {
            let field = format!("uplink[{i}].name");
            check_ifname(&field, &u.name)?;
            if !interfaces.insert(u.name.as_str()) {
                return Err((field, format!("interface {:?} is used twice", u.name)));
            }
        }
        let mut vm_names = HashSet::new();
        let mut macs = HashSet::new();
        let mut ips = HashSet::new();
        for (i, vm) in self.vms.iter().enumerate() {
            check_name(&format!("vm[{i}].name"), &vm.name, MAX_NAME_LEN)?;
            if !vm_names.insert(vm.name.as_str()) {
                return Err((
                    format!("vm[{i}].name"),
                    format!("VM name {:?} is used twice", vm.name),
                ));
            }
            let field = format!("vm[{i}].port");
            check_ifname(&field, &vm.port)?;
            if !interfaces.insert(vm.port.as_str()) {
                return Err((field, format!("interface {:?} is used twice", vm.port)));
            }
            if vm.macs.is_empty() {
                return Err((
                    format!("vm[{i}].macs"),
                    "a VM needs at least one MAC address".into(),
                ));
            }
            if vm.macs.len() > MAX_MACS_PER_VM {
                return Err((
                    format!("vm[{i}].macs"),
                    format!("{} MACs; at most {MAX_MACS_PER_VM} per VM", vm.macs.len()),
                ));
            }
            for (j, m) in vm.macs.iter().enumerate() {
                let field = format!("vm[{i}].macs[{j}]");
                let mac: MacAddr = m.parse().map_err(|e| (field.clone(), e))?;
                if mac.is_group() || mac.is_zero() {
                    return Err((
                        field,
                        format!(
                            "{m} is not a unicast MAC (the first octet must be even, and not all zero)"
                        ),
                    ));
                }
                if !macs.insert(mac) {
                    return Err((field, format!("MAC {mac} is bound twice")));
                }
            }
            for (j, a) in vm.ips.iter().enumerate() {
                let field = format!("vm[{i}].ips[{j}]");
                let net: IpNet = a.parse().map_err(|e| (field.clone(), e))?;
                if !ips.insert(net.addr) {
                    return Err((field, format!("address {} is used twice", net.addr)));
                }
            }
        }
        self.validate_rss()?;
        self.validate_teams()?;
        if let Some(lab) = &self.lab {
            check_name("lab.prefix", &lab.prefix, 16)?;
            if self.netns.is_none() {
                return Err((
                    "netns".into(),
                    "the lab needs `netns`: the namespace it creates for the host".into(),
                ));
            }
            if lab.tor_ips.is_empty() {
                return Err((
                    "lab.tor_ips".into(),
                    "give the tor endpoint at least one address".into(),
                ));
            }
            for (j, a) in lab.tor_ips.iter().enumerate() {
                let field = format!("lab.tor_ips[{j}]");
                let net: IpNet = a.parse().map_err(|e| (field.clone(), e))?;
                if !ips.insert(net.addr) {
                    return Err((field, format!("address {} is used twice", net.addr)));
                }
            }
            if self.uplinks.is_empty() {
                return Err((
                    "uplink".into(),
                    "the lab connects the host to the tor through uplinks: configure at least one"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    fn validate_rss(&self) -> Result<(), (String, String)> {
        let Some(rss) = &self.rss else {
            for (i, vm) in self.vms.iter().enumerate() {
                if vm.rss != "auto" {
                    return Err((
                        format!("vm[{i}].rss"),
                        "set without an [rss] section: add one to steer VMs to CPUs".into(),
                    ));
                }
            }
            return Ok(());
        };
        if !(10..=10_000).contains(&rss.period_ms) {
            return Err((
                "rss.period_ms".into(),
                format!(
                    "{} is out of range: use 10 to 10000 milliseconds",
                    rss.period_ms
                ),
            ));
        }
        let max = xnic_common::rss::MAX_TABLE_SIZE;
        if !rss.table_size.is_power_of_two() || !(2..=max).contains(&rss.table_size) {
            return Err((
                "rss.table_size".into(),
                format!("{} is not a power of two from 2 to {max}", rss.table_size),
            ));
        }
        if rss.engines.len() > xnic_common::rss::MAX_ENGINES as usize {
            return Err((
                "rss.engine".into(),
                format!(
                    "{} engines; at most {} are supported",
                    rss.engines.len(),
                    xnic_common::rss::MAX_ENGINES
                ),
            ));
        }
        let p = &rss.policy;
        let checks: [(&str, bool, &str); 5] = [
            ("fill", p.fill > 0.0 && p.fill <= 1.0, "must be in (0, 1]"),
            (
                "vm_low_pps",
                p.vm_low_pps < p.no_rss_high_pps,
                "must be below no_rss_high_pps, or VMs would bounce between states",
            ),
            (
                "rebalance_to",
                p.rebalance_to < p.rebalance_above,
                "must be below rebalance_above",
            ),
            (
                "engine_high_pps_per_cpu",
                p.engine_high_pps_per_cpu > 0.0,
                "must be positive",
            ),
            (
                "engine_high_busy",
                p.engine_high_busy > 0.0 && p.engine_high_busy <= 1.0,
                "must be in (0, 1] (a fraction of a CPU; 1 turns the busy trigger off)",
            ),
        ];
        for (field, ok, why) in checks {
            if !ok {
                return Err((format!("rss.policy.{field}"), why.into()));
            }
        }
        for (i, e) in rss.engines.iter().enumerate() {
            let others = rss.engines[..i].iter().map(|o| o.name.as_str());
            check_engine(&format!("rss.engine[{i}]"), e, others)?;
        }
        let mut dedicated_users = HashSet::new();
        for (i, vm) in self.vms.iter().enumerate() {
            if vm.rss == "auto" || vm.rss == "none" {
                continue;
            }
            let Some(engine) = rss.engines.iter().find(|e| e.name == vm.rss) else {
                return Err((
                    format!("vm[{i}].rss"),
                    format!(
                        "no engine named {:?}; use auto, none or one of: {}",
                        vm.rss,
                        rss.engines
                            .iter()
                            .map(|e| e.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            if engine.kind == crate::policy::rss::EngineKind::Dedicated
                && !dedicated_users.insert(engine.name.as_str())
            {
                return Err((
                    format!("vm[{i}].rss"),
                    format!(
                        "dedicated engine {:?} already serves another VM",
                        engine.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_teams(&self) -> Result<(), (String, String)> {
        use xnic_common::team::{MAX_TEAM_MEMBERS, MAX_TEAMS};
        for (i, u) in self.uplinks.iter().enumerate() {
            if let Some(c) = u.capacity_mbps
                && !(c > 0.0 && c.is_finite())
            {
                return Err((
                    format!("uplink[{i}].capacity_mbps"),
                    format!("{c} is not a positive rate in Mbit/s"),
                ));
            }
        }
        if self.teams.len() > MAX_TEAMS as usize {
            return Err((
                "team".into(),
                format!(
                    "{} teams; at most {MAX_TEAMS} are supported",
                    self.teams.len()
                ),
            ));
        }
        let mut names = HashSet::new();
        let mut members = HashSet::new();
        for (i, t) in self.teams.iter().enumerate() {
            check_name(&format!("team[{i}].name"), &t.name, MAX_NAME_LEN)?;
            if t.name == "none" || !names.insert(t.name.as_str()) {
                return Err((
                    format!("team[{i}].name"),
                    format!("team name {:?} is used twice or reserved", t.name),
                ));
            }
            if t.uplinks.is_empty() || t.uplinks.len() > MAX_TEAM_MEMBERS as usize {
                return Err((
                    format!("team[{i}].uplinks"),
                    format!("a team has 1 to {MAX_TEAM_MEMBERS} uplinks"),
                ));
            }
            for (j, u) in t.uplinks.iter().enumerate() {
                let field = format!("team[{i}].uplinks[{j}]");
                if !self.uplinks.iter().any(|x| &x.name == u) {
                    return Err((
                        field,
                        format!("{u:?} is not an [[uplink]]; add it there first"),
                    ));
                }
                if !members.insert(u.as_str()) {
                    return Err((field, format!("uplink {u:?} is in two teams")));
                }
            }
            if !(50..=60_000).contains(&t.period_ms) {
                return Err((
                    format!("team[{i}].period_ms"),
                    format!(
                        "{} is out of range: use 50 to 60000 milliseconds",
                        t.period_ms
                    ),
                ));
            }
            if t.failback_hold_ms > 3_600_000 {
                return Err((
                    format!("team[{i}].failback_hold_ms"),
                    "at most an hour (3600000)".into(),
                ));
            }
            if t.announce_count > 10 {
                return Err((
                    format!("team[{i}].announce_count"),
                    "at most 10 announcements per address".into(),
                ));
            }
            t.load
                .check()
                .map_err(|(f, m)| (format!("team[{i}].load.{f}"), m))?;
        }
        for (i, vm) in self.vms.iter().enumerate() {
            let team = match vm.team.as_deref() {
                Some("none") => None,
                Some(name) => {
                    Some(self.teams.iter().find(|t| t.name == name).ok_or_else(|| {
                        (
                            format!("vm[{i}].team"),
                            format!(
                                "no team named {name:?}; use none or one of: {}",
                                self.teams
                                    .iter()
                                    .map(|t| t.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })?)
                }
                None => self.teams.first(),
            };
            let teamed_field = |f: &str| {
                (
                    format!("vm[{i}].{f}"),
                    "set for a VM in no team: add a [[team]] or give the VM one".to_string(),
                )
            };
            let Some(team) = team else {
                if vm.uplink.is_some() {
                    return Err(teamed_field("uplink"));
                }
                if vm.team_policy.is_some() {
                    return Err(teamed_field("team_policy"));
                }
                if vm.bandwidth_mbps.is_some() {
                    return Err(teamed_field("bandwidth_mbps"));
                }
                continue;
            };
            if let Some(u) = &vm.uplink
                && !team.uplinks.contains(u)
            {
                return Err((
                    format!("vm[{i}].uplink"),
                    format!(
                        "{u:?} is not a member of team {:?}; use one of: {}",
                        team.name,
                        team.uplinks.join(", ")
                    ),
                ));
            }
            if let Some(b) = vm.bandwidth_mbps {
                let min = xnic_common::team::MIN_RATE_BYTES_PER_SEC as f64 * 8.0 / 1e6;
                if !(b >= min && b.is_finite()) {
                    return Err((
                        format!("vm[{i}].bandwidth_mbps"),
                        format!("{b} is not a rate of at least {min} Mbit/s (1 kbit/s)"),
                    ));
                }
            }
            if vm.burst_kib.is_some() && vm.bandwidth_mbps.is_none() {
                return Err((
                    format!("vm[{i}].burst_kib"),
                    "a burst needs a bandwidth_mbps allocation".into(),
                ));
            }
            if vm.burst_kib == Some(0) {
                return Err((
                    format!("vm[{i}].burst_kib"),
                    "must be at least 1 KiB (a burst smaller than one frame passes nothing)".into(),
                ));
            }
            if vm.failover_pause_ms > 60_000 {
                return Err((
                    format!("vm[{i}].failover_pause_ms"),
                    "at most a minute (60000)".into(),
                ));
            }
        }
        Ok(())
    }

    /// The team VM `vm` belongs to, by index into `teams`.
    pub fn team_of(&self, vm: &VmConfig) -> Option<usize> {
        match vm.team.as_deref() {
            Some("none") => None,
            Some(name) => self.teams.iter().position(|t| t.name == name),
            None => (!self.teams.is_empty()).then_some(0),
        }
    }

    pub fn vm(&self, name: &str) -> Option<&VmConfig> {
        self.vms.iter().find(|v| v.name == name)
    }

    /// Path of the control socket.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.instance)
    }
}

/// Where the daemon of `instance` listens.
pub fn socket_path(instance: &str) -> PathBuf {
    PathBuf::from(crate::RUN_DIR).join(format!("{instance}.sock"))
}

/// An engine's own fields, and its name against the `others` already there; errors name the
/// field under `at` (e.g. `rss.engine[2]`).
pub fn check_engine<'a>(
    at: &str,
    e: &EngineConfig,
    mut others: impl Iterator<Item = &'a str>,
) -> Result<(), (String, String)> {
    check_name(&format!("{at}.name"), &e.name, MAX_NAME_LEN)?;
    if e.name == "auto" || e.name == "none" {
        return Err((
            format!("{at}.name"),
            format!("{:?} is reserved for VM states", e.name),
        ));
    }
    if others.any(|o| o == e.name) {
        return Err((
            format!("{at}.name"),
            format!("engine name {:?} is used twice", e.name),
        ));
    }
    check_cpu_set(at, &e.cpus)
}

/// An engine's CPU set: not empty, no CPU twice, within what the dataplane addresses.
pub fn check_cpu_set(at: &str, cpus: &[u32]) -> Result<(), (String, String)> {
    if cpus.is_empty() {
        return Err((format!("{at}.cpus"), "an engine needs CPUs".into()));
    }
    for (j, cpu) in cpus.iter().enumerate() {
        if *cpu >= xnic_common::rss::MAX_CPUS {
            return Err((
                format!("{at}.cpus[{j}]"),
                format!(
                    "CPU {cpu} is beyond the {} CPUs xnic supports",
                    xnic_common::rss::MAX_CPUS
                ),
            ));
        }
        if cpus[..j].contains(cpu) {
            return Err((
                format!("{at}.cpus[{j}]"),
                format!("CPU {cpu} is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Parses a CPU list as the kernel writes them (`0-3,6`).
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let num = |t: &str| {
            t.trim().parse::<u32>().map_err(|_| {
                format!("{t:?} in {text:?} is not a CPU number; write CPUs like 0-3,6")
            })
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("{part:?} is an empty range; write it low-high"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    Ok(cpus)
}

fn check_name(field: &str, name: &str, max: usize) -> Result<(), (String, String)> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err((
            field.into(),
            format!(
                "{name:?} is not a valid name: use 1 to {max} letters, digits, '-', '_' or '.', not starting with '.'"
            ),
        ))
    }
}

fn check_ifname(field: &str, name: &str) -> Result<(), (String, String)> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err((
            field.into(),
            format!(
                "{name:?} is not a valid interface name: 1 to {MAX_IFNAME_LEN} bytes without '/', ':' or spaces"
            ),
        ))
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// The span of the value at `path` (`a.b[2].c`) in the parsed document.
fn locate(root: &DeTable, path: &str) -> Option<std::ops::Range<usize>> {
    let mut segments = Vec::new();
    for part in path.split('.') {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            segments.push(Segment::Key(key));
        }
        for idx in rest.split('[') {
            if let Ok(i) = usize::from_str(idx.trim_end_matches(']')) {
                segments.push(Segment::Index(i));
            }
        }
    }
    let mut table = root;
    let mut current: Option<&toml::Spanned<DeValue>> = None;
    for seg in segments {
        let next = match (seg, current.map(|c| c.get_ref())) {
            (Segment::Key(k), None) => table.get(k)?,
            (Segment::Key(k), Some(DeValue::Table(t))) => t.get(k)?,
            (Segment::Index(i), Some(DeValue::Array(a))) => a.get(i)?,
            _ => return current.map(|c| c.span()),
        };
        if let DeValue::Table(t) = next.get_ref() {
            table = t;
        }
        current = Some(next);
    }
    current.map(|c| c.span())
}

#[derive(Clone, Copy)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// The configuration `xnic lab up` uses when none is given: four VMs, two uplinks.
pub fn default_lab_toml(instance: &str, prefix: &str, vms: usize, ipv6: bool) -> String {
    let mut s = format!(
        "# xnic lab: a host namespace with two uplinks to a tor namespace and {vms} VM namespaces.\n\
         instance = \"{instance}\"\n\
         netns = \"{prefix}-host\"\n\n\
         [daemon]\n\
         xdp_mode = \"auto\"\n\
         log_level = \"info\"\n\n\
         [[uplink]]\nname = \"up0\"\n\n\
         [[uplink]]\nname = \"up1\"\n"
    );
    for i in 0..vms {
        let v6 = if ipv6 {
            format!(", \"fd77::{:x}/64\"", 0x10 + i)
        } else {
            String::new()
        };
        s.push_str(&format!(
            "\n[[vm]]\nname = \"vm{i}\"\nport = \"vm{i}\"\nmacs = [\"02:77:00:00:00:{:02x}\"]\nips = [\"10.77.0.{}/24\"{v6}]\n",
            0x10 + i,
            10 + i
        ));
    }
    let tor_v6 = if ipv6 { ", \"fd77::1/64\"" } else { "" };
    s.push_str(LAB_TEAM_TOML);
    s.push_str(&lab_rss_toml(
        &crate::daemon::rss::online_cpus().unwrap_or_else(|_| vec![0]),
    ));
    s.push_str(&format!(
        "\n[lab]\nprefix = \"{prefix}\"\ntor_ips = [\"10.77.0.1/24\"{tor_v6}]\nipv6 = {ipv6}\n"
    ));
    s
}

/// The lab's team: both uplinks, active/standby, a short hold-down so the demo shows the
/// failback.
pub const LAB_TEAM_TOML: &str = "\n[[team]]\nname = \"uplinks\"\nuplinks = [\"up0\", \"up1\"]\n\
     policy = \"failover\"\nfailback_hold_ms = 2000\n";

/// The lab's RSS section for a host with `cpus`: two shared engines over every CPU and a
/// dedicated engine on the last one, with thresholds low enough that lab traffic moves VMs.
pub fn lab_rss_toml(cpus: &[u32]) -> String {
    let all = cpus
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let last = cpus.last().copied().unwrap_or(0);
    format!(
        "\n[rss]\ndefault_cpu = {first}\n\n[rss.policy]\n\
         engine_high_pps_per_cpu = 15000.0\nno_rss_high_pps = 4000.0\nvm_low_pps = 500.0\n\
         low_periods = 20\nmin_dwell_periods = 10\n\n\
         [[rss.engine]]\nname = \"shared-a\"\nkind = \"shared\"\ncpus = [{all}]\n\n\
         [[rss.engine]]\nname = \"shared-b\"\nkind = \"shared\"\ncpus = [{all}]\n\n\
         [[rss.engine]]\nname = \"dedicated-1\"\nkind = \"dedicated\"\ncpus = [{last}]\n",
        first = cpus.first().copied().unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("x.toml"))
    }

    const GOOD: &str = r#"
instance = "t1"

[[uplink]]
name = "eth0"

[[vm]]
name = "vm0"
port = "tap0"
macs = ["02:00:00:00:00:01"]
ips = ["10.0.0.2/24", "fd00::2"]
"#;

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.instance, "t1");
        assert_eq!(c.daemon.stats_interval_ms, 1000);
        assert_eq!(c.vms[0].mac_addrs()[0].0, [2, 0, 0, 0, 0, 1]);
        assert_eq!(c.vms[0].ip_nets().len(), 2);
    }

    #[test]
    fn shipped_example_is_valid() {
        let c = parse(include_str!("../../examples/host.toml")).unwrap();
        assert_eq!(c.vms[1].mac_addrs().len(), 2);
    }

    #[test]
    fn default_lab_config_is_valid() {
        let c = parse(&default_lab_toml("lab", "xlab", 4, true)).unwrap();
        assert_eq!(c.vms.len(), 4);
        assert_eq!(c.uplinks.len(), 2);
        assert!(c.lab.unwrap().ipv6);
    }

    #[test]
    fn bad_mac_names_line_column_and_field() {
        let text = GOOD.replace("02:00:00:00:00:01", "02:00:00:00:00:zz");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vm[0].macs[0]"));
        assert_eq!(e.position, Some((10, 9)));
        assert!(
            e.to_string().starts_with("x.toml:10:9: vm[0].macs[0]: "),
            "{e}"
        );
    }

    #[test]
    fn unknown_field_is_rejected_with_its_location() {
        let text = GOOD.replace("port = \"tap0\"", "port = \"tap0\"\nmtu = 9000");
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("unknown field `mtu`"), "{e}");
        assert_eq!(e.position.map(|p| p.0), Some(10));
    }

    #[test]
    fn wrong_type_names_the_field() {
        let text = GOOD.replace("ips = [\"10.0.0.2/24\", \"fd00::2\"]", "ips = 5");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vm[0].ips"));
        assert_eq!(e.position.map(|p| p.0), Some(11));
    }

    #[test]
    fn duplicates_are_rejected() {
        let dup_port = format!(
            "{GOOD}\n[[vm]]\nname = \"vm1\"\nport = \"tap0\"\nmacs = [\"02:00:00:00:00:02\"]\n"
        );
        assert_eq!(
            parse(&dup_port).unwrap_err().field.as_deref(),
            Some("vm[1].port")
        );
        let dup_mac = format!(
            "{GOOD}\n[[vm]]\nname = \"vm1\"\nport = \"tap1\"\nmacs = [\"02:00:00:00:00:01\"]\n"
        );
        assert_eq!(
            parse(&dup_mac).unwrap_err().field.as_deref(),
            Some("vm[1].macs[0]")
        );
        let dup_uplink_port = GOOD.replace("tap0", "eth0");
        assert_eq!(
            parse(&dup_uplink_port).unwrap_err().field.as_deref(),
            Some("vm[0].port")
        );
    }

    #[test]
    fn multicast_mac_and_bad_names_are_rejected() {
        let e = parse(&GOOD.replace("02:00:00:00:00:01", "03:00:00:00:00:01")).unwrap_err();
        assert!(e.message.contains("unicast"), "{e}");
        let e = parse(&GOOD.replace("instance = \"t1\"", "instance = \"a/b\"")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("instance"));
        assert_eq!(e.position, Some((2, 12)));
        let e = parse(&GOOD.replace("eth0", "a-very-long-interface")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("uplink[0].name"));
    }

    const RSS: &str = r#"
[rss]
default_cpu = 0
[rss.policy]
engine_high_pps_per_cpu = 1000.0
[[rss.engine]]
name = "shared-a"
kind = "shared"
cpus = [0, 1]
[[rss.engine]]
name = "solo"
kind = "dedicated"
cpus = [1]
"#;

    #[test]
    fn rss_section_parses_and_references_are_checked() {
        let c = parse(&format!("{GOOD}{RSS}")).unwrap();
        let rss = c.rss.unwrap();
        assert_eq!(
            (rss.table_size, rss.period_ms, rss.engines.len()),
            (128, 100, 2)
        );
        assert_eq!(rss.policy.engine_high_pps_per_cpu, 1000.0);
        assert_eq!(rss.policy.low_periods, 30, "defaults fill the rest");
        let bad = format!(
            "{}{RSS}",
            GOOD.replace("ips = [", "rss = \"nosuch\"\nips = [")
        );
        let e = parse(&bad).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("vm[0].rss"));
        assert!(e.message.contains("shared-a, solo"), "{e}");
        let e = parse(&format!(
            "{GOOD}{}",
            RSS.replace("default_cpu = 0", "table_size = 100")
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rss.table_size"));
        let e = parse(&format!(
            "{GOOD}{}",
            RSS.replace("cpus = [0, 1]", "cpus = [0, 0]")
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rss.engine[0].cpus[1]"));
        let e = parse(&format!(
            "{GOOD}{}",
            RSS.replace("engine_high_pps_per_cpu = 1000.0", "vm_low_pps = 1e9")
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rss.policy.vm_low_pps"));
        let e = parse(&format!(
            "{GOOD}{}",
            RSS.replace("engine_high_pps_per_cpu", "engine_hihg_pps_per_cpu")
        ))
        .unwrap_err();
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn cpu_lists_and_cpu_limits() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("5\n").unwrap(), vec![5]);
        assert!(parse_cpu_list("3-1").unwrap_err().contains("empty range"));
        assert!(
            parse_cpu_list("x")
                .unwrap_err()
                .contains("not a CPU number")
        );
        let e = parse(&format!(
            "{GOOD}{}",
            RSS.replace("cpus = [1]", "cpus = [1, 4095]")
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("rss.engine[1].cpus[1]"));
        assert!(e.message.contains("beyond the 512 CPUs"), "{e}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = parse("instance = \n").unwrap_err();
        assert!(e.position.is_some(), "{e}");
    }

    #[test]
    fn empty_config_is_rejected() {
        let e = parse("instance = \"x\"\n").unwrap_err();
        assert!(e.message.contains("nothing to manage"), "{e}");
    }
}
