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

/// Deletes network namespace `name` after killing the processes still in it: a traffic
/// generator or iperf3 left behind by a failed run would go on spinning in a namespace that
/// no longer has a name, eating the CPUs of everything after it.
pub fn remove(name: &str) -> anyhow::Result<()> {
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .with_context(|| format!("cannot run `ip netns pids {name}`"))?;
    // Not this process: a benchmark or test that entered the namespace removes it too.
    let me = std::process::id() as i32;
    for pid in String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .filter(|p| *p != me)
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let out = std::process::Command::new("ip")
        .args(["netns", "del", name])
        .output()
        .with_context(|| format!("cannot run `ip netns del {name}`"))?;
    if !out.status.success() {
        anyhow::bail!(
            "`ip netns del {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
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

/// The inode number of the calling thread's network namespace (what the kernel's
/// `net->ns.inum` holds).
pub fn current_inum() -> anyhow::Result<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let path = "/proc/thread-self/ns/net";
    let meta = std::fs::metadata(path).with_context(|| format!("cannot stat {path}"))?;
    u32::try_from(meta.ino()).with_context(|| format!("{path} has inode {}", meta.ino()))
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

/// A command started by [`spawn_in`], in a process group of its own and killed as a whole
/// (trafgen, for one, forks workers that outlive a killed parent). Killed on drop.
pub struct Spawned(std::process::Child);

impl Spawned {
    /// SIGKILLs the command and everything it forked, and reaps it.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Starts `cmd` inside network namespace `name` (the command itself, not an `ip netns exec`
/// wrapper), in a process group of its own.
pub fn spawn_in(name: &str, mut cmd: std::process::Command) -> anyhow::Result<Spawned> {
    use std::os::unix::process::CommandExt as _;
    let what = format!("{cmd:?}");
    cmd.process_group(0);
    run_in(name, move || {
        cmd.spawn()
            .map(Spawned)
            .with_context(|| format!("cannot start {what}"))
    })
}
