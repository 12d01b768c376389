//! What the live benchmarks share: a lab removed however the run ends, the xnic daemon
//! started and stopped around baselines, the minimal XDP programs attached for a while, and
//! counters read from the lab's namespaces.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use xnic::{
    dataplane::baseline::{Baseline, BaselineProgram},
    lab::{HOST_BRIDGE, Lab, TOR_MAC, bridge, daemon::DaemonProcess, ip},
};

/// A lab and the configuration file it came from, removed (with any dataplane left pinned)
/// however the run ends.
pub struct LiveLab {
    pub lab: Lab,
    pub config_path: PathBuf,
    pub instance: String,
}

impl LiveLab {
    /// Writes `text` as instance `instance`'s benchmark configuration and builds its lab.
    pub fn up(instance: &str, text: &str) -> anyhow::Result<LiveLab> {
        Self::build(instance, text, false)
    }

    /// The same lab with a QEMU guest per VM (the guest image is built first if missing).
    pub fn up_with_guests(instance: &str, text: &str) -> anyhow::Result<LiveLab> {
        Self::build(instance, text, true)
    }

    fn build(instance: &str, text: &str, guests: bool) -> anyhow::Result<LiveLab> {
        let config_path = config_file(instance, "bench");
        std::fs::create_dir_all(xnic::RUN_DIR)?;
        std::fs::write(&config_path, text)?;
        let config = xnic::config::load(&config_path)?;
        let lab = if guests {
            let image = xnic::lab::guest::ensure(Path::new(xnic::lab::guest::DEFAULT_DIR))?;
            let mut lab = Lab::with_guests(config, image)?;
            lab.set_tools_binary(xnic_bin()?);
            lab
        } else {
            Lab::new(config)?
        };
        let live = LiveLab {
            lab,
            config_path,
            instance: instance.to_string(),
        };
        live.lab.up()?;
        Ok(live)
    }

    /// Starts the daemon on the lab's configuration and waits until it answers.
    pub fn start_daemon(&self) -> anyhow::Result<DaemonProcess> {
        start_daemon(&self.instance, &self.config_path)
    }

    /// Removes the dataplane (`xnic down`) and waits for `daemon` to exit.
    pub fn stop_dataplane(&self, daemon: DaemonProcess) -> anyhow::Result<()> {
        stop_dataplane(&self.instance, daemon)
    }
}

impl LiveLab {
    /// The kernel path without xnic: `uplink` on the host's bridge with the VM ports (a
    /// teamed lab bridges none), and the tor's MAC known to be behind it, as a switch would
    /// have learned, so VM frames for the tor do not flood. Off again with `on = false`.
    pub fn bridge_uplink(&self, uplink: &str, on: bool) -> anyhow::Result<()> {
        let host = self.lab.host_ns();
        if !on {
            return ip(&["-n", host, "link", "set", uplink, "nomaster"]);
        }
        ip(&["-n", host, "link", "set", uplink, "master", HOST_BRIDGE])?;
        bridge(&[
            "-n",
            host,
            "fdb",
            "replace",
            &TOR_MAC.to_string(),
            "dev",
            uplink,
            "master",
            "static",
        ])
    }
}

impl Drop for LiveLab {
    fn drop(&mut self) {
        let _ = xnic::dataplane::teardown(&self.instance);
        let _ = std::fs::remove_file(xnic::config::socket_path(&self.instance));
        let _ = self.lab.down();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// Where a benchmark keeps configuration `name` of `instance`.
pub fn config_file(instance: &str, name: &str) -> PathBuf {
    PathBuf::from(xnic::RUN_DIR).join(format!("{instance}.{name}.toml"))
}

/// Starts the daemon for `instance` on configuration file `config`.
pub fn start_daemon(instance: &str, config: &Path) -> anyhow::Result<DaemonProcess> {
    DaemonProcess::start(
        &xnic_bin()?,
        config,
        instance,
        None,
        Duration::from_secs(30),
    )
}

/// Removes `instance`'s dataplane (`xnic down`) and waits for `daemon` to exit.
pub fn stop_dataplane(instance: &str, daemon: DaemonProcess) -> anyhow::Result<()> {
    let out = Command::new(xnic_bin()?)
        .args(["down", "--instance", instance])
        .output()?;
    if !out.status.success() {
        bail!("xnic down failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let _ = daemon.wait(Duration::from_secs(10));
    Ok(())
}

/// The `xnic` binary built beside this one.
pub fn xnic_bin() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?.with_file_name("xnic"))
}

/// Runs `f` while the minimal program `program` is attached to each of `devs` in namespace
/// `ns`.
pub fn with_baseline<T: Send>(
    ns: &str,
    devs: &[&str],
    program: BaselineProgram,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    attached(ns, devs, program, None, f)
}

/// Runs `f` while the minimal redirect program on `from` in namespace `ns` sends every frame
/// out of `to`.
pub fn with_redirect<T: Send>(
    ns: &str,
    from: &str,
    to: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    attached(ns, &[from], BaselineProgram::Redirect, Some(to), f)
}

fn attached<T: Send>(
    ns: &str,
    devs: &[&str],
    program: BaselineProgram,
    redirect_to: Option<&str>,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    let ifindex = |dev: &str| {
        nix::net::if_::if_nametoindex(dev).with_context(|| format!("no interface {dev} in {ns}"))
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // Only this thread enters the namespace.
                xnic::netns::enter(ns)?;
                let mut baseline = Baseline::load()?;
                if let Some(to) = redirect_to {
                    baseline.redirect_to(ifindex(to)?)?;
                }
                let mut links = Vec::new();
                for dev in devs {
                    links.push(baseline.attach(program, ifindex(dev)?)?);
                }
                let result = f();
                for link in links {
                    baseline.detach(program, link)?;
                }
                result
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the baseline program's thread panicked"))?
    })
}

/// Starts trafgen in namespace `ns` sending `config` out of `dev` on one CPU, paced to
/// `pps` frames per second when given (unpaced, it starves everything else on a small
/// machine); it runs until killed.
pub fn trafgen(
    ns: &str,
    dev: &str,
    config: &Path,
    pps: Option<u64>,
) -> anyhow::Result<xnic::netns::Spawned> {
    trafgen_frames(ns, dev, config, pps, None)
}

/// [`trafgen`], stopping by itself after `count` frames when given.
pub fn trafgen_frames(
    ns: &str,
    dev: &str,
    config: &Path,
    pps: Option<u64>,
    count: Option<u64>,
) -> anyhow::Result<xnic::netns::Spawned> {
    let mut cmd = Command::new("trafgen");
    cmd.args(["--dev", dev, "--conf"])
        .arg(config)
        .args(["--cpus", "1", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(pps) = pps {
        cmd.args(["-b", &format!("{pps}pps")]);
    }
    if let Some(n) = count {
        cmd.args(["-n", &n.to_string()]);
    }
    xnic::netns::spawn_in(ns, cmd)
        .context("starting trafgen (`cargo xtask setup` installs netsniff-ng)")
}

/// Datagrams that reached the UDP layer of namespace `ns`: queued to a socket
/// (`InDatagrams`) or refused by a full one (`RcvbufErrors`).
pub fn udp_delivered(ns: &str) -> anyhow::Result<u64> {
    let (datagrams, rcvbuf) = udp_counters(ns)?;
    Ok(datagrams + rcvbuf)
}

/// The UDP layer of namespace `ns`: datagrams it took, and those it refused because a
/// socket's receive buffer was full (`InDatagrams`, `RcvbufErrors` of /proc/net/snmp).
pub fn udp_counters(ns: &str) -> anyhow::Result<(u64, u64)> {
    Ok((
        proc_net_counter(ns, "snmp", "Udp", "InDatagrams")?,
        proc_net_counter(ns, "snmp", "Udp", "RcvbufErrors")?,
    ))
}

/// Counter `name` of the `group` lines (`Udp`, `TcpExt`...) of `/proc/net/<file>` in
/// namespace `ns`: a line of names, then a line of values.
pub fn proc_net_counter(ns: &str, file: &str, group: &str, name: &str) -> anyhow::Result<u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/proc/net/{file}"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(head), Some(vals)) = (lines.next(), lines.next()) else {
        bail!("no {group} line in /proc/net/{file} of {ns}");
    };
    let i = head
        .split_whitespace()
        .position(|h| h == name)
        .with_context(|| format!("no {name} column in /proc/net/{file}"))?;
    vals.split_whitespace()
        .nth(i)
        .context("a short line of values")?
        .parse()
        .with_context(|| format!("bad {name}"))
}

/// Frames an XDP program on `dev` in `ns` has seen (veth counts them per receive queue).
pub fn xdp_received(ns: &str, dev: &str) -> anyhow::Result<u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ethtool", "-S", dev])
        .output()
        .context("running ethtool")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("rx_queue_") && l.contains("_xdp_packets:"))
        .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok())
        .sum())
}

/// An interface's received bytes and frames (`ip -s link`).
pub fn rx_counters(ns: &str, dev: &str) -> anyhow::Result<(u64, u64)> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "-s", "link", "show", dev])
        .output()?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("no link {dev} in {ns}"))?;
    let rx = &v[0]["stats64"]["rx"];
    Ok((
        rx["bytes"].as_u64().context("no rx bytes")?,
        rx["packets"].as_u64().context("no rx packets")?,
    ))
}

/// Runs `work` while another thread calls `sample` every `every`; returns what `work`
/// returned and each sample with its time in seconds since the start (samples that fail are
/// left out: a figure over time has gaps rather than stopping the benchmark).
pub fn sampled<R, T: Send>(
    every: Duration,
    sample: impl Fn() -> anyhow::Result<T> + Sync,
    work: impl FnOnce() -> R,
) -> (R, Vec<(f64, T)>) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut out = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(v) = sample() {
                    out.push((start.elapsed().as_secs_f64(), v));
                }
                std::thread::sleep(every);
            }
            out
        });
        let r = work();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, sampler.join().unwrap_or_default())
    })
}
