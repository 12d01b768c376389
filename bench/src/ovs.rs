//! Open vSwitch on its userspace datapath (`datapath_type=netdev`), the team benchmark's
//! baseline: a database and a switch daemon of its own, in a private directory, switching in
//! the lab's host namespace. Everything it started is stopped when it is dropped.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Where Debian's openvswitch-common keeps the database schema.
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// The bridge's name; its internal port becomes a tap device of that name in the namespace.
pub const BRIDGE: &str = "ovsbr";

pub struct Ovs {
    dir: PathBuf,
}

impl Ovs {
    /// Starts `ovsdb-server` and `ovs-vswitchd` (the latter inside namespace `ns`) and creates
    /// an OpenFlow 1.3 bridge on the userspace datapath.
    pub fn start(ns: &str) -> anyhow::Result<Ovs> {
        if !Path::new(SCHEMA).exists() {
            bail!(
                "Open vSwitch is not installed (no {SCHEMA}); `cargo xtask setup` installs openvswitch-switch"
            );
        }
        let dir = std::env::temp_dir().join(format!("xnic-ovs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        // From here on, Drop stops whatever has started.
        let ovs = Ovs { dir };
        let d = ovs.dir.display().to_string();
        ovs.run("ovsdb-tool", &["create", &format!("{d}/conf.db"), SCHEMA])?;
        ovs.run(
            "ovsdb-server",
            &[
                &format!("--remote=punix:{d}/db.sock"),
                &format!("--pidfile={d}/ovsdb-server.pid"),
                &format!("--unixctl={d}/ovsdb-server.ctl"),
                &format!("--log-file={d}/ovsdb-server.log"),
                "--detach",
                &format!("{d}/conf.db"),
            ],
        )?;
        ovs.vsctl(&["--no-wait", "init"])?;
        ovs.run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "ovs-vswitchd",
                &format!("unix:{d}/db.sock"),
                &format!("--pidfile={d}/ovs-vswitchd.pid"),
                &format!("--unixctl={d}/ovs-vswitchd.ctl"),
                &format!("--log-file={d}/ovs-vswitchd.log"),
                "--detach",
            ],
        )?;
        ovs.vsctl(&[
            "add-br",
            BRIDGE,
            "--",
            "set",
            "bridge",
            BRIDGE,
            "datapath_type=netdev",
            "protocols=OpenFlow10,OpenFlow13",
        ])?;
        Ok(ovs)
    }

    /// Runs `cmd` with every OVS tool pointed at this instance's directory.
    fn run(&self, cmd: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(cmd)
            .args(args)
            .env("OVS_RUNDIR", &self.dir)
            .env("OVS_LOGDIR", &self.dir)
            .env("OVS_DBDIR", &self.dir)
            .output()
            .with_context(|| format!("cannot run {cmd}"))?;
        if !out.status.success() {
            bail!(
                "{cmd} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn vsctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let db = format!("--db=unix:{}/db.sock", self.dir.display());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        self.run("ovs-vsctl", &all)
    }

    pub fn ofctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-O", "OpenFlow13"];
        all.extend_from_slice(args);
        self.run("ovs-ofctl", &all)
    }

    pub fn appctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let ctl = format!("{}/ovs-vswitchd.ctl", self.dir.display());
        let mut all = vec!["-t", ctl.as_str()];
        all.extend_from_slice(args);
        self.run("ovs-appctl", &all)
    }

    fn pid(&self, daemon: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.join(format!("{daemon}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        use nix::{sys::signal, unistd::Pid};
        for daemon in ["ovs-vswitchd", "ovsdb-server"] {
            let Some(pid) = self.pid(daemon).map(Pid::from_raw) else {
                continue;
            };
            let _ = signal::kill(pid, signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            // Gone, or a zombie of the process that started it (`kill(0)` succeeds on a
            // zombie, but its /proc status says so).
            while signal::kill(pid, None).is_ok()
                && !is_zombie(pid.as_raw())
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            if signal::kill(pid, None).is_ok() && !is_zombie(pid.as_raw()) {
                let _ = signal::kill(pid, signal::Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}
