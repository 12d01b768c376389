//! Entering network namespaces by name (as `ip netns` names them).
//!
//! Only the network namespace is entered (`setns(CLONE_NEWNET)`), never the mount namespace:
//! pins must stay on the root namespace's bpffs to outlive the process.

use std::{fs::File, path::PathBuf};

use anyhow::Context as _;
use nix::sched::{CloneFlags, setns};

/// Where `ip netns add` bind-mounts named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Moves the calling thread into network namespace `name`. Threads it creates afterwards
/// inherit the namespace.
pub fn enter(name: &str) -> anyhow::Result<()> {
    let p = path(name);
    let f = File::open(&p).with_context(|| {
        format!("network namespace {name:?} does not exist ({} is missing); create it (`ip netns add {name}`) or fix `netns` in the configuration", p.display())
    })?;
    setns(f, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter network namespace {name:?}"))?;
    Ok(())
}

/// Runs `f` on a new thread inside network namespace `name` and returns its result.
pub fn run_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let name = name.to_string();
    std::thread::spawn(move || {
        enter(&name)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in network namespace panicked"))?
}

/// Starts `cmd` inside network namespace `name`. The child is the command itself (not an
/// `ip netns exec` wrapper), so killing it stops the command.
pub fn spawn_in(name: &str, mut cmd: std::process::Command) -> anyhow::Result<std::process::Child> {
    let what = format!("{cmd:?}");
    run_in(name, move || {
        cmd.spawn().with_context(|| format!("cannot start {what}"))
    })
}
