//! `xnic check`: validate a configuration, then say what this host has of what it names.
//!
//! The file itself is checked whole (errors name file:line:column and field). Interfaces come
//! and go at run time, so one that does not exist is a finding, not an error: a VM waits for
//! its port, an uplink is down until it appears. `--strict` makes findings fail the check.

use std::path::Path;

use anyhow::bail;

use crate::{config::Config, features::base::wanted_ports};

/// What one look at this host found.
struct Finding {
    /// `file:line:col: field` of the setting it is about, when there is one.
    place: String,
    message: String,
}

pub fn run(path: &Path, strict: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot read the configuration file: {e}",
            path.display()
        )
    })?;
    let c = crate::config::parse(&text, path)?;
    println!(
        "{}: valid: instance {:?}, {} uplink(s), {} VM(s){}{}{}",
        path.display(),
        c.instance,
        c.uplinks.len(),
        c.vms.len(),
        c.rss
            .as_ref()
            .map(|r| format!(", {} RSS engine(s)", r.engines.len()))
            .unwrap_or_default(),
        if c.teams.is_empty() {
            String::new()
        } else {
            format!(", {} team(s)", c.teams.len())
        },
        if c.lab.is_some() { ", lab" } else { "" }
    );
    let place = |field: &str| {
        let pos = crate::config::position(&text, field)
            .map_or(String::new(), |(l, col)| format!(":{l}:{col}"));
        format!("{}{pos}: {field}", path.display())
    };
    let mut findings = Vec::new();
    let mut not_checked = Vec::new();
    // CPUs are the host's, whatever the namespace.
    match crate::config::host::check_cpus(&c) {
        Ok(()) if c.rss.is_some() => println!("  ok: every CPU the RSS engines name is online"),
        Ok(()) => {}
        Err((field, m)) => findings.push(Finding {
            place: place(&field),
            message: format!("{m}: `xnic run` would refuse this file here"),
        }),
    }
    match interfaces(&c) {
        Ok(links) => check_interfaces(&c, &links, &place, &mut findings),
        Err(why) => not_checked.push(format!("interfaces: {why}")),
    }
    for f in &findings {
        println!("  {}: {}", f.place, f.message);
    }
    for n in &not_checked {
        println!("  not checked: {n}");
    }
    if strict && !(findings.is_empty() && not_checked.is_empty()) {
        bail!(
            "{} finding(s) on this host (--strict)",
            findings.len() + not_checked.len()
        );
    }
    Ok(())
}

/// The interfaces of the configuration's namespace.
fn interfaces(c: &Config) -> Result<Vec<crate::monitor::links::LinkState>, String> {
    if let Some(ns) = &c.netns {
        if !nix::unistd::geteuid().is_root() {
            return Err(format!(
                "entering network namespace {ns:?} needs root; run `sudo xnic check` to look"
            ));
        }
        if !Path::new("/run/netns").join(ns).exists() {
            return Err(format!(
                "network namespace {ns:?} does not exist here (yet); `ip netns add {ns}` or `xnic lab up` makes it"
            ));
        }
    }
    let ns = c.netns.clone();
    // A thread of its own enters the namespace, so this process stays where it is.
    std::thread::spawn(move || -> Result<_, String> {
        if let Some(ns) = &ns {
            crate::netns::enter(ns).map_err(|e| format!("{e:#}"))?;
        }
        super::block_on(async {
            let links = crate::monitor::links::Links::connect().map_err(|e| format!("{e:#}"))?;
            links.all().await.map_err(|e| format!("{e:#}"))
        })
    })
    .join()
    .map_err(|_| "looking at interfaces failed".to_string())?
}

fn check_interfaces(
    c: &Config,
    links: &[crate::monitor::links::LinkState],
    place: &dyn Fn(&str) -> String,
    findings: &mut Vec<Finding>,
) {
    let where_ = c
        .netns
        .as_ref()
        .map_or("this network namespace".to_string(), |n| {
            format!("network namespace {n:?}")
        });
    let mut present = 0;
    for (i, u) in c.uplinks.iter().enumerate() {
        match links.iter().find(|l| l.name == u.name) {
            Some(l) => {
                present += 1;
                if let Some(x) = l.xdp {
                    findings.push(Finding {
                        place: place(&format!("uplink[{i}].name")),
                        message: format!(
                            "uplink {} runs XDP program id {}: unless it is this instance's, `xnic run` refuses it",
                            u.name, x.prog_id
                        ),
                    });
                }
            }
            None => findings.push(Finding {
                place: place(&format!("uplink[{i}].name")),
                message: format!(
                    "no interface {} in {where_}: the uplink is down (for its team) until it appears",
                    u.name
                ),
            }),
        }
    }
    for (i, v) in c.vms.iter().enumerate() {
        match links.iter().find(|l| l.name == v.port) {
            Some(l) => {
                present += 1;
                if let Some(x) = l.xdp {
                    findings.push(Finding {
                        place: place(&format!("vm[{i}].port")),
                        message: format!(
                            "port {} of VM {} runs XDP program id {}: unless it is this instance's, `xnic run` refuses it",
                            v.port, v.name, x.prog_id
                        ),
                    });
                }
            }
            None => findings.push(Finding {
                place: place(&format!("vm[{i}].port")),
                message: format!(
                    "no interface {} in {where_} (yet): VM {} waits for its port and is attached when it appears",
                    v.port, v.name
                ),
            }),
        }
    }
    println!(
        "  {present} of {} interfaces exist in {where_}",
        wanted_ports(c).len()
    );
}
