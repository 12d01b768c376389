//! `xnic down`: remove an instance's dataplane, through its daemon when one runs.

use std::time::{Duration, Instant};

use anyhow::bail;

use super::{args::InstanceArg, block_on, running_instances};
use crate::{
    api::{client::Client, types::DownView},
    daemon::require_root,
    dataplane,
    model::store::Store,
};

pub fn run(args: &InstanceArg) -> anyhow::Result<()> {
    let instance = match &args.instance {
        Some(i) => i.clone(),
        None => {
            let mut all = running_instances();
            all.extend(dataplane::pinned_instances()?);
            all.sort();
            all.dedup();
            match all.as_slice() {
                [one] => one.clone(),
                [] => {
                    println!("nothing to remove: no xnic instance is running or pinned");
                    return Ok(());
                }
                many => bail!(
                    "several xnic instances exist ({}); pick one with --instance NAME",
                    many.join(", ")
                ),
            }
        }
    };
    let kept = Store::new(&instance).desired_file().exists();
    let report = down(&instance)?;
    if kept {
        println!(
            "instance {instance:?}: forgot the desired state kept in {}",
            Store::new(&instance).dir().display()
        );
    }
    if report.links_removed.is_empty() && report.maps_removed == 0 {
        println!("instance {instance:?}: nothing was attached or pinned");
    } else {
        println!(
            "instance {instance:?}: detached from {} interface(s) ({}), removed {} map pin(s)",
            report.links_removed.len(),
            report.links_removed.join(", "),
            report.maps_removed
        );
    }
    Ok(())
}

/// Removes `instance`'s dataplane and the desired state kept for it; stops its daemon first
/// if it runs.
pub fn down(instance: &str) -> anyhow::Result<DownView> {
    require_root("xnic down")?;
    let view = remove_dataplane(instance)?;
    Store::new(instance).remove()?;
    // The daemon is gone: its lock file goes too.
    let _ =
        std::fs::remove_file(std::path::Path::new(crate::RUN_DIR).join(format!("{instance}.lock")));
    Ok(view)
}

/// Removes xnic's HTB roots from the uplinks of `instance`'s kept desired state, in its
/// network namespace (for an instance whose daemon is gone; a running daemon removes its own).
fn remove_shaper_roots(instance: &str) -> anyhow::Result<()> {
    let Some(stored) = Store::new(instance).load()? else {
        return Ok(());
    };
    let uplinks: Vec<String> = stored
        .config
        .uplinks
        .iter()
        .map(|u| u.name.clone())
        .collect();
    let work = move || -> anyhow::Result<()> {
        let mut tc = dataplane::qdisc::Tc::open()?;
        let ours = tc.roots()?;
        for name in &uplinks {
            if let Ok(ifindex) = nix::net::if_::if_nametoindex(name.as_str())
                && ours.contains(&ifindex)
            {
                tc.remove_root(ifindex)?;
            }
        }
        Ok(())
    };
    match &stored.config.netns {
        Some(ns) if crate::netns::path(ns).exists() => crate::netns::run_in(ns, work),
        Some(_) => Ok(()),
        None => work(),
    }
}

fn remove_dataplane(instance: &str) -> anyhow::Result<DownView> {
    let client = Client::new(instance);
    if block_on(client.is_running()) {
        let view: DownView = block_on(client.post("/v1/down"))?;
        // The daemon exits right after answering; wait until its socket is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.socket().exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Anything pinned after the daemon's own teardown (nothing, normally) goes too.
        let rest = dataplane::teardown(instance)?;
        let mut links = view.links_removed;
        links.extend(rest.links);
        return Ok(DownView {
            links_removed: links,
            maps_removed: view.maps_removed + rest.maps.len(),
        });
    }
    // A daemon that was killed leaves its socket behind.
    let _ = std::fs::remove_file(client.socket());
    // Its shaper's queues stay on its uplinks too.
    if let Err(e) = remove_shaper_roots(instance) {
        tracing::warn!(error = %format!("{e:#}"), "cannot remove the shaper's qdiscs; remove them with `tc qdisc del dev UPLINK root`");
    }
    let removed = dataplane::teardown(instance)?;
    Ok(DownView {
        links_removed: removed.links,
        maps_removed: removed.maps.len(),
    })
}
