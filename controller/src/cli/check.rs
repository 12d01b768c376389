//! `xnic check`: validate a configuration.

use std::path::Path;

pub fn run(path: &Path) -> anyhow::Result<()> {
    let c = super::load_config(path)?;
    println!(
        "{}: valid: instance {:?}, {} uplink(s), {} VM(s){}",
        path.display(),
        c.instance,
        c.uplinks.len(),
        c.vms.len(),
        if c.lab.is_some() { ", lab" } else { "" }
    );
    Ok(())
}
