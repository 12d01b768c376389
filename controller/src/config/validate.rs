//! The checks serde cannot make: names, addresses, uniqueness, references between sections
//! and limits. Errors are (dotted field path, message); [`super::parse`] turns the path into
//! a file position.

use std::collections::HashSet;

use xnic_common::limits::{MAX_IFNAME_LEN, MAX_MACS_PER_VM, MAX_NAME_LEN, MAX_UPLINKS, MAX_VMS};

use super::{Config, EngineConfig, EngineKind, LoadParams, MAX_INSTANCE_LEN};
use crate::net::{IpNet, MacAddr};

/// Checks everything serde cannot: names, addresses, uniqueness, limits.
pub fn validate(c: &Config) -> Result<(), (String, String)> {
    check_name("instance", &c.instance, MAX_INSTANCE_LEN)?;
    if let Some(ns) = &c.netns {
        check_name("netns", ns, 64)?;
    }
    let d = &c.daemon;
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
    if c.uplinks.is_empty() && c.vms.is_empty() {
        return Err((
            "uplink".into(),
            "nothing to manage: configure at least one [[uplink]] or [[vm]]".into(),
        ));
    }
    if c.uplinks.len() > MAX_UPLINKS as usize {
        return Err((
            "uplink".into(),
            format!(
                "{} uplinks; at most {MAX_UPLINKS} are supported",
                c.uplinks.len()
            ),
        ));
    }
    if c.vms.len() > MAX_VMS as usize {
        return Err((
            "vm".into(),
            format!("{} VMs; at most {MAX_VMS} are supported", c.vms.len()),
        ));
    }

    let mut interfaces = HashSet::new();
    for (i, u) in c.uplinks.iter().enumerate() {
        let field = format!("uplink[{i}].name");
        check_ifname(&field, &u.name)?;
        if !interfaces.insert(u.name.as_str()) {
            return Err((field, format!("interface {:?} is used twice", u.name)));
        }
    }
    let mut vm_names = HashSet::new();
    let mut macs = HashSet::new();
    let mut ips = HashSet::new();
    for (i, vm) in c.vms.iter().enumerate() {
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
    validate_rss(c)?;
    validate_teams(c)?;
    validate_flows(c)?;
    super::vnics::validate(c)?;
    if let Some(lab) = &c.lab {
        check_name("lab.prefix", &lab.prefix, 16)?;
        if c.netns.is_none() {
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
        if c.uplinks.is_empty() {
            return Err((
                "uplink".into(),
                "the lab connects the host to the tor through uplinks: configure at least one"
                    .into(),
            ));
        }
    }
    Ok(())
}

fn validate_rss(c: &Config) -> Result<(), (String, String)> {
    let Some(rss) = &c.rss else {
        for (i, vm) in c.vms.iter().enumerate() {
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
    for (i, vm) in c.vms.iter().enumerate() {
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
        if engine.kind == EngineKind::Dedicated && !dedicated_users.insert(engine.name.as_str()) {
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

fn validate_flows(c: &Config) -> Result<(), (String, String)> {
    use xnic_common::flow::MAX_FLOWS_LIMIT;
    let Some(f) = &c.flows else {
        return Ok(());
    };
    if !(1..=MAX_FLOWS_LIMIT).contains(&f.max_flows) {
        return Err((
            "flows.max_flows".into(),
            format!(
                "{} is out of range: use 1 to {MAX_FLOWS_LIMIT} flows (each costs about 550 bytes of kernel memory)",
                f.max_flows
            ),
        ));
    }
    if !(10..=60_000).contains(&f.period_ms) {
        return Err((
            "flows.period_ms".into(),
            format!(
                "{} is out of range: use 10 to 60000 milliseconds",
                f.period_ms
            ),
        ));
    }
    if f.idle_timeout_s == 0 {
        return Err((
            "flows.idle_timeout_s".into(),
            "must be at least 1 second".into(),
        ));
    }
    if let Some(m) = &f.mark {
        parse_mark(m).map_err(|e| ("flows.mark".to_string(), e))?;
    }
    for (i, p) in f.ports.iter().enumerate() {
        parse_port(p).map_err(|e| (format!("flows.ports[{i}]"), e))?;
    }
    let selects = f.min_bytes.is_some()
        || f.min_packets.is_some()
        || f.min_rate_kbps.is_some()
        || f.mark.is_some()
        || !f.ports.is_empty();
    if f.select == super::FlowSelect::Selected && !selects {
        return Err((
            "flows.select".into(),
            "\"selected\" needs something to select by: min_bytes, min_packets, min_rate_kbps, mark or ports".into(),
        ));
    }
    Ok(())
}

/// A conntrack mark selector: `"0x1"` (all bits) or `"0x1/0xff"` (value/mask), hex or
/// decimal.
pub fn parse_mark(text: &str) -> Result<(u32, u32), String> {
    let number = |t: &str| {
        let t = t.trim();
        match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => t.parse(),
        }
        .map_err(|_| format!("{text:?} is not a mark: write it as 0x1 or 0x1/0xff"))
    };
    match text.split_once('/') {
        Some((v, m)) => {
            let (v, m) = (number(v)?, number(m)?);
            if v & !m != 0 {
                return Err(format!("{text:?}: the value has bits outside the mask"));
            }
            Ok((v, m))
        }
        None => Ok((number(text)?, u32::MAX)),
    }
}

/// A protocol and port: `"tcp/443"` or `"udp/53"`.
pub fn parse_port(text: &str) -> Result<(u8, u16), String> {
    let bad = || format!("{text:?} is not a port: write it as tcp/443 or udp/53");
    let (proto, port) = text.split_once('/').ok_or_else(bad)?;
    let proto = match proto.trim() {
        "tcp" => 6,
        "udp" => 17,
        _ => return Err(bad()),
    };
    let port: u16 = port.trim().parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok((proto, port))
}

fn validate_teams(c: &Config) -> Result<(), (String, String)> {
    use xnic_common::team::{MAX_TEAM_MEMBERS, MAX_TEAMS};
    for (i, u) in c.uplinks.iter().enumerate() {
        if let Some(c) = u.capacity_mbps
            && !(c > 0.0 && c.is_finite())
        {
            return Err((
                format!("uplink[{i}].capacity_mbps"),
                format!("{c} is not a positive rate in Mbit/s"),
            ));
        }
    }
    if c.teams.len() > MAX_TEAMS as usize {
        return Err((
            "team".into(),
            format!("{} teams; at most {MAX_TEAMS} are supported", c.teams.len()),
        ));
    }
    let mut names = HashSet::new();
    let mut members = HashSet::new();
    for (i, t) in c.teams.iter().enumerate() {
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
            if !c.uplinks.iter().any(|x| &x.name == u) {
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
        check_load(&t.load).map_err(|(f, m)| (format!("team[{i}].load.{f}"), m))?;
    }
    for (i, vm) in c.vms.iter().enumerate() {
        let team = match vm.team.as_deref() {
            Some("none") => None,
            Some(name) => Some(c.teams.iter().find(|t| t.name == name).ok_or_else(|| {
                (
                    format!("vm[{i}].team"),
                    format!(
                        "no team named {name:?}; use none or one of: {}",
                        c.teams
                            .iter()
                            .map(|t| t.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?),
            None => c.teams.first(),
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

fn check_load(p: &LoadParams) -> Result<(), (String, String)> {
    if !(p.rebalance_above > 0.0 && p.rebalance_above.is_finite()) {
        return Err(("rebalance_above".into(), "must be positive".into()));
    }
    if p.sustain_periods == 0 {
        return Err(("sustain_periods".into(), "must be at least 1".into()));
    }
    Ok(())
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

pub fn check_name(field: &str, name: &str, max: usize) -> Result<(), (String, String)> {
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

pub fn check_ifname(field: &str, name: &str) -> Result<(), (String, String)> {
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
