//! How two desired states differ, in lines people read: `vm vm3: added`,
//! `vm vm1: bandwidth_mbps: 20 → 50`, `rss.engine shared-c: removed`. Lists of named things
//! (VMs, uplinks, teams, engines) are compared by name, so reordering them is no change.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use xnic_proto::config::{Config, VmConfig};

/// The differences from `from` to `to`: what the daemon applies now, and what waits for a
/// restart (daemon settings and the lab's).
pub fn diff(from: &Config, to: &Config) -> (Vec<String>, Vec<String>) {
    let mut lines = Vec::new();
    walk(
        "",
        &serde_json::to_value(without_vms(from)).unwrap_or(Value::Null),
        &serde_json::to_value(without_vms(to)).unwrap_or(Value::Null),
        &mut lines,
    );
    // VMs are compared as they are, and only those that differ are turned into values: a
    // host has thousands, and one change touches one. `vm` sorts last, as in `walk`.
    let before: HashMap<&str, &VmConfig> = from.vms.iter().map(|v| (v.name.as_str(), v)).collect();
    let by_name: HashMap<&str, &VmConfig> = to.vms.iter().map(|v| (v.name.as_str(), v)).collect();
    for a in &from.vms {
        match by_name.get(a.name.as_str()) {
            None => lines.push(format!("vm {}: removed", a.name)),
            Some(b) if *b == a => {}
            Some(b) => {
                let mut inner = Vec::new();
                walk(
                    "",
                    &serde_json::to_value(a).unwrap_or(Value::Null),
                    &serde_json::to_value(b).unwrap_or(Value::Null),
                    &mut inner,
                );
                lines.extend(inner.into_iter().map(|l| format!("vm {}: {l}", a.name)));
            }
        }
    }
    for b in &to.vms {
        if !before.contains_key(b.name.as_str()) {
            lines.push(format!("vm {}: added", b.name));
        }
    }
    lines
        .into_iter()
        .partition(|l| !(l.starts_with("daemon") || l.starts_with("lab")))
}

/// `config` without its VMs (which [`diff`] compares apart). Destructured whole, so a field
/// added to `Config` cannot be left out of the comparison.
fn without_vms(config: &Config) -> Config {
    let Config {
        instance,
        netns,
        daemon,
        uplinks,
        vms: _,
        rss,
        teams,
        flows,
        fleet,
        vcns,
        subnets,
        vnics,
        route_tables,
        gateways,
        security_lists,
        lab,
    } = config;
    Config {
        instance: instance.clone(),
        netns: netns.clone(),
        daemon: daemon.clone(),
        uplinks: uplinks.clone(),
        vms: Vec::new(),
        rss: rss.clone(),
        teams: teams.clone(),
        flows: flows.clone(),
        fleet: fleet.clone(),
        vcns: vcns.clone(),
        subnets: subnets.clone(),
        vnics: vnics.clone(),
        route_tables: route_tables.clone(),
        gateways: gateways.clone(),
        security_lists: security_lists.clone(),
        lab: lab.clone(),
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".into(),
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// The key of a list whose items are tables with a `name`, or `None` for other lists.
fn named(items: &[Value]) -> Option<Vec<String>> {
    items
        .iter()
        .map(|i| i.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if a == b {
        return;
    }
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let null = Value::Null;
                walk(
                    &join(k),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) => match (named(x), named(y)) {
            (Some(nx), Some(ny)) if !(x.is_empty() && y.is_empty()) => {
                let kind = path.rsplit('.').next().unwrap_or(path);
                let prefix = path.strip_suffix(kind).unwrap_or("");
                // Indexed by name: a host has thousands of VMs, and one change should not
                // compare every name with every other.
                let at_y: HashMap<&str, usize> = ny
                    .iter()
                    .enumerate()
                    .map(|(j, n)| (n.as_str(), j))
                    .collect();
                let in_x: HashSet<&str> = nx.iter().map(String::as_str).collect();
                for (i, name) in nx.iter().enumerate() {
                    match at_y.get(name.as_str()).copied() {
                        None => out.push(format!("{prefix}{kind} {name}: removed")),
                        Some(j) => {
                            let mut inner = Vec::new();
                            walk("", &x[i], &y[j], &mut inner);
                            out.extend(
                                inner
                                    .into_iter()
                                    .map(|l| format!("{prefix}{kind} {name}: {l}")),
                            );
                        }
                    }
                }
                for name in &ny {
                    if !in_x.contains(name.as_str()) {
                        out.push(format!("{prefix}{kind} {name}: added"));
                    }
                }
            }
            _ => out.push(format!("{path}: {} → {}", show(a), show(b))),
        },
        (Value::Null, Value::Object(_)) => out.push(format!("{path}: added")),
        (Value::Object(_), Value::Null) => out.push(format!("{path}: removed")),
        _ => out.push(format!("{path}: {} → {}", show(a), show(b))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        crate::config::parse(text, std::path::Path::new("t.toml")).unwrap()
    }

    const BASE: &str = r#"
instance = "t"
[[uplink]]
name = "eth0"
[[vm]]
name = "vm0"
port = "tap0"
macs = ["02:00:00:00:00:01"]
[[vm]]
name = "vm1"
port = "tap1"
macs = ["02:00:00:00:00:02"]
"#;

    #[test]
    fn named_lists_compare_by_name_and_fields_show_before_and_after() {
        let a = parse(BASE);
        let b = parse(
            &BASE
                .replace("name = \"vm1\"", "name = \"vm2\"")
                .replace("port = \"tap0\"", "port = \"tap0\"\npriority = 3")
                .replace("[[uplink]]", "[daemon]\nlog_level = \"debug\"\n[[uplink]]"),
        );
        let (now, later) = diff(&a, &b);
        assert_eq!(
            now,
            vec![
                "vm vm0: priority: 0 → 3".to_string(),
                "vm vm1: removed".into(),
                "vm vm2: added".into(),
            ]
        );
        assert_eq!(
            later,
            vec!["daemon.log_level: \"info\" → \"debug\"".to_string()]
        );
    }

    #[test]
    fn reordering_is_no_change() {
        let a = parse(BASE);
        let mut b = a.clone();
        b.vms.reverse();
        assert_eq!(diff(&a, &b), (vec![], vec![]));
    }
}
