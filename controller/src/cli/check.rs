//! `xnic check`: validate a configuration.

use std::path::Path;

pub fn run(path: &Path) -> anyhow::Result<()> {
    let c = super::load_config(path)?;
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
    // The file may be meant for another host: say so, without failing.
    if let Some(rss) = &c.rss
        && let Err(e) = crate::daemon::rss::check_cpus(rss)
    {
        println!("note: on this host `xnic run` would refuse it: {e:#}");
    }
    Ok(())
}
