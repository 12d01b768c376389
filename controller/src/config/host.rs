//! The checks a configuration needs this host for: which CPUs are online. (Interfaces come
//! and go at run time, so a missing one is a state to show, not an error; see `xnic check`.)

use anyhow::Context as _;

use super::{Config, parse_cpu_list};

/// The CPUs that exist on this host (from /sys/devices/system/cpu/online, like `0-3,6`).
pub fn online_cpus() -> anyhow::Result<Vec<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
        .context("cannot read /sys/devices/system/cpu/online")?;
    parse_cpu_list(&text).map_err(anyhow::Error::msg)
}

/// `Err` names the first of `cpus` that is not online, with the online ones.
pub fn check_online(cpus: &[u32]) -> Result<(), String> {
    let online = online_cpus().map_err(|e| format!("{e:#}"))?;
    match cpus.iter().find(|c| !online.contains(c)) {
        None => Ok(()),
        Some(cpu) => Err(format!(
            "CPU {cpu} is not online on this host (online: {})",
            online
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )),
    }
}

/// Refuses CPUs this host does not have, naming the field (`rss.engine[1].cpus`).
pub fn check_cpus(config: &Config) -> Result<(), (String, String)> {
    let Some(rss) = &config.rss else {
        return Ok(());
    };
    check_online(&[rss.default_cpu]).map_err(|e| ("rss.default_cpu".to_string(), e))?;
    for (i, e) in rss.engines.iter().enumerate() {
        check_online(&e.cpus).map_err(|m| (format!("rss.engine[{i}].cpus"), m))?;
    }
    Ok(())
}
