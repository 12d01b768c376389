//! `xnic lab up|down|traffic`.

use std::path::PathBuf;

use super::{args::LabConfigArg, down, running_instances};
use crate::{
    config::{Config, default_lab_toml},
    dataplane,
    lab::{Lab, daemon::default_config_path},
};

/// The lab described by `--config`, or the built-in lab (written to /run/xnic so the daemon
/// can read it). Returns the configuration's path too.
pub fn resolve(arg: &LabConfigArg) -> anyhow::Result<(Lab, PathBuf)> {
    let path = match &arg.config {
        Some(p) => p.clone(),
        None => {
            let path = default_config_path("lab");
            std::fs::create_dir_all(crate::RUN_DIR)?;
            std::fs::write(&path, default_lab_toml("lab", "xlab", 4, true))?;
            path
        }
    };
    let config = Config::load(&path)?;
    Ok((Lab::new(config)?, path))
}

pub fn up(arg: &LabConfigArg) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic lab up")?;
    let (lab, path) = resolve(arg)?;
    lab.up()?;
    println!("lab up: namespaces {}", lab.namespaces().join(", "));
    println!(
        "start the daemon with: xnic run --config {}",
        path.display()
    );
    Ok(())
}

pub fn down(arg: &LabConfigArg) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic lab down")?;
    let (lab, _) = resolve(arg)?;
    let instance = &lab.config().instance;
    if running_instances().contains(instance) || dataplane::pinned_instances()?.contains(instance) {
        let r = down::down(instance)?;
        println!(
            "instance {instance:?}: dataplane removed ({} attachment(s))",
            r.links_removed.len()
        );
    }
    let removed = lab.down()?;
    if removed.is_empty() {
        println!("no lab namespaces to remove");
    } else {
        println!("removed namespaces {}", removed.join(", "));
    }
    Ok(())
}

pub fn traffic(arg: &LabConfigArg) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic lab traffic")?;
    let (lab, _) = resolve(arg)?;
    if !lab.exists() {
        anyhow::bail!("the lab is not up; run `xnic lab up` first");
    }
    let report = lab.drive(std::time::Duration::from_secs(2), Some(2))?;
    println!("{}", report.summary());
    Ok(())
}
