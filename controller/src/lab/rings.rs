//! The transaction-rings lab: two hosts, each with its xnic daemon and rings worker, on a
//! bridge in a namespace of its own, where packets can be lost (nftables in the bridge
//! family: AF_XDP frames pass no netfilter hook on either host).
//!
//! ```text
//!  <prefix>a (10.66.0.1)        <prefix>m           <prefix>b (10.66.0.2)
//!  up0 ─────────────── p0 ─ br0 ─ p1 ─────────────── up0
//!  daemon + worker                loss rule           daemon + worker
//! ```

use std::{
    net::IpAddr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use xnic_rings::{
    client::{Client, LocalRegion, QueuePair, RemoteRegion},
    engine::QpConfig,
    entries::{STATUS_SUCCESS, status_name},
    worker::{self, WorkerConfig},
    xsk::XskConfig,
};

use super::{daemon::DaemonProcess, ip};
use crate::dataplane::{PinDir, RingsMaps};

/// The hosts' MACs (static neighbours: nothing but the traffic crosses the bridge).
const MACS: [&str; 2] = ["02:66:00:00:00:01", "02:66:00:00:00:02"];

/// How a host's worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerKind {
    /// On a thread of the lab's process.
    Thread,
    /// As `xnic rings run` (so it can be killed).
    Process,
}

/// How the lab's workers and links are set up.
#[derive(Clone, Copy, Debug)]
pub struct RingsLabOptions {
    pub workers: [WorkerKind; 2],
    pub qp: QpConfig,
    /// The workers' busy polling (see [`WorkerConfig::busy_poll`]).
    pub busy_poll: Duration,
    /// Each worker on a CPU of its own (host a's on CPU 0, b's on the last), as a host
    /// gives its network worker cores of its own.
    pub pin_workers: bool,
    /// The links' MTU: RoCE's 2048-byte MTU with every header, as RoCE fabrics run 4200
    /// for 4096 (a worker's buffers take 2048; native XDP on a veth takes at most about
    /// 3500 without fragments).
    pub mtu: u32,
}

impl Default for RingsLabOptions {
    fn default() -> Self {
        RingsLabOptions {
            workers: [WorkerKind::Thread; 2],
            qp: QpConfig::default(),
            busy_poll: Duration::ZERO,
            pin_workers: false,
            mtu: 2200,
        }
    }
}

pub struct RingsLab {
    /// Host a, host b, the bridge.
    names: [String; 3],
    exe: PathBuf,
    daemons: Vec<DaemonProcess>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
    processes: [Option<Child>; 2],
    configs: Vec<PathBuf>,
    options: RingsLabOptions,
}

/// The CPU host `i`'s worker is pinned to: the first and the last.
fn worker_cpu(i: usize) -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if i == 0 { 0 } else { cpus - 1 }
}

/// Host `i`'s address.
pub fn host_ip(i: usize) -> IpAddr {
    IpAddr::from([10, 66, 0, i as u8 + 1])
}

fn sh(ns: &str, cmd: &str) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .context("running ip netns exec")?;
    if !out.status.success() {
        bail!("{cmd}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl RingsLab {
    /// Builds the lab under `prefix` (its namespaces must not exist) and starts both
    /// daemons (`exe run`) and workers.
    pub fn up(prefix: &str, exe: &Path, options: RingsLabOptions) -> anyhow::Result<RingsLab> {
        let names = [
            format!("{prefix}a"),
            format!("{prefix}b"),
            format!("{prefix}m"),
        ];
        let mut lab = RingsLab {
            names: names.clone(),
            exe: exe.to_owned(),
            daemons: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            processes: [None, None],
            configs: Vec::new(),
            options,
        };
        for n in &names {
            ip(&["netns", "add", n])?;
        }
        let m = &names[2];
        // A switch: no IP firewall on bridged frames (the loss rule is in the bridge family).
        sh(
            m,
            "ip link add br0 type bridge && ip link set br0 up && ip link set lo up && \
             sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 \
             net.bridge.bridge-nf-call-arptables=0",
        )?;
        for i in 0..2 {
            let (host, port) = (&names[i], format!("p{i}"));
            ip(&[
                "link", "add", "up0", "netns", host, "type", "veth", "peer", "name", &port,
                "netns", m,
            ])?;
            let mtu = options.mtu;
            sh(m, &format!("ip link set {port} mtu {mtu} master br0 up"))?;
            let other = 1 - i;
            sh(
                host,
                &format!(
                    "ip link set lo up && ip link set up0 address {} mtu {} up && \
                     ip addr add {}/24 dev up0 && \
                     ip neigh add {} lladdr {} dev up0 nud permanent && \
                     sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
                    MACS[i],
                    options.mtu,
                    host_ip(i),
                    host_ip(other),
                    MACS[other]
                ),
            )?;
        }
        std::fs::create_dir_all(crate::RUN_DIR)?;
        for n in &names[..2] {
            let path = PathBuf::from(crate::RUN_DIR).join(format!("{n}.rings-lab.toml"));
            std::fs::write(
                &path,
                format!("instance = \"{n}\"\nnetns = \"{n}\"\n\n[[uplink]]\nname = \"up0\"\n"),
            )?;
            lab.configs.push(path.clone());
            lab.daemons.push(DaemonProcess::start(
                exe,
                &path,
                n,
                None,
                Duration::from_secs(30),
            )?);
        }
        for (i, kind) in options.workers.iter().enumerate() {
            match kind {
                WorkerKind::Thread => lab.start_thread(i)?,
                WorkerKind::Process => lab.start_worker(i)?,
            }
        }
        Ok(lab)
    }

    /// Host `i`'s namespace (and instance) name.
    pub fn host(&self, i: usize) -> &str {
        &self.names[i]
    }

    pub fn bridge_ns(&self) -> &str {
        &self.names[2]
    }

    /// Host `i`'s worker's control socket.
    pub fn control(&self, i: usize) -> PathBuf {
        crate::config::rings_socket_path(&self.names[i])
    }

    /// A client of host `i`'s worker.
    pub fn client(&self, i: usize) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.control(i))?)
    }

    fn wait_for_worker(&self, i: usize) -> anyhow::Result<()> {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if self.client(i).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("the rings worker of {} did not answer", self.names[i])
    }

    fn start_thread(&mut self, i: usize) -> anyhow::Result<()> {
        let (n, stop, o) = (self.names[i].clone(), self.stop.clone(), self.options);
        let cpu = worker_cpu(i);
        self.threads.push(std::thread::spawn(move || {
            crate::netns::enter(&n)?;
            if o.pin_workers {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu)?;
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
            }
            let mut maps = RingsMaps::open(&PinDir::new(&n))?;
            let config = WorkerConfig {
                interface: "up0".into(),
                queue: 0,
                control: crate::config::rings_socket_path(&n),
                qp: o.qp,
                xsk: XskConfig::default(),
                busy_poll: o.busy_poll,
            };
            worker::run(config, &mut maps, &stop)?;
            Ok(())
        }));
        self.wait_for_worker(i)
    }

    /// Starts host `i`'s worker as a process (`xnic rings run`) and waits until it answers.
    pub fn start_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &self.names[i];
        let mut cmd = Command::new(&self.exe);
        cmd.args([
            "rings",
            "run",
            "--instance",
            n,
            "--interface",
            "up0",
            "--netns",
            n,
            "--busy-poll-us",
            &self.options.busy_poll.as_micros().to_string(),
        ]);
        if self.options.pin_workers {
            cmd.args(["--cpus", &worker_cpu(i).to_string()]);
        }
        let child = cmd
            .process_group(0)
            .spawn()
            .context("starting xnic rings run")?;
        self.processes[i] = Some(child);
        self.wait_for_worker(i)
    }

    /// SIGKILLs host `i`'s worker process.
    pub fn kill_worker(&mut self, i: usize) {
        if let Some(mut c) = self.processes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Drops `percent` % of the IPv4 packets crossing the bridge, each way.
    pub fn lose(&self, percent: u32) -> anyhow::Result<()> {
        sh(
            self.bridge_ns(),
            &format!(
                "nft add table bridge loss; \
                 nft add chain bridge loss relay '{{ type filter hook forward priority 0; }}'; \
                 nft flush chain bridge loss relay; \
                 nft add rule bridge loss relay ether type ip numgen random mod 100 '<' {percent} counter drop"
            ),
        )
    }

    /// What the loss rule dropped so far.
    pub fn lost(&self) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.bridge_ns(),
                "nft",
                "list",
                "chain",
                "bridge",
                "loss",
                "relay",
            ])
            .output();
        let Ok(out) = out else { return 0 };
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RingsLab {
    fn drop(&mut self) {
        for i in 0..2 {
            self.kill_worker(i);
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        for d in self.daemons.drain(..) {
            let _ = d.stop();
        }
        for n in &self.names[..2] {
            let _ = crate::dataplane::teardown(n);
            let _ = crate::model::store::Store::new(n).remove();
            let _ = std::fs::remove_file(crate::config::rings_socket_path(n));
        }
        for c in &self.configs {
            let _ = std::fs::remove_file(c);
        }
        for n in &self.names {
            let _ = crate::netns::remove(n);
        }
    }
}

/// What [`exercise`] did.
#[derive(Debug, Default)]
pub struct Exercised {
    pub transactions: u64,
    /// Bytes moved (written plus read).
    pub bytes: u64,
    pub elapsed: Duration,
    /// Completions that were not a success, by status.
    pub failed: std::collections::BTreeMap<&'static str, u64>,
    /// Whether the peer's region and ours hold what an in-order memory model says.
    pub remote_exact: bool,
    pub local_exact: bool,
}

/// Posts `n` WRITEs and READs of random sizes (1 B to `max_len`, sizes spread over every
/// power of two) at random offsets from `seed`, takes every completion (a full ring is
/// back-pressure: take one and post again), and compares both regions byte for byte with a
/// model that applies each request in order. `remote_mem` is the peer's region as its
/// application holds it. An error only when a completion does not come (a hang).
pub fn exercise(
    qp: &mut QueuePair,
    local: &LocalRegion,
    remote: &RemoteRegion,
    remote_mem: &LocalRegion,
    n: u64,
    seed: u64,
    max_len: u32,
) -> anyhow::Result<Exercised> {
    let size = local.memory.len().min(remote_mem.memory.len());
    let max_len = max_len.min(size as u32 / 2).max(1);
    let mut rng = xnic_roce::sim::XorShift::new(seed);
    let mut model_local = vec![0u8; local.memory.len()];
    let mut model_remote = vec![0u8; remote_mem.memory.len()];
    local.memory.read(0, &mut model_local);
    remote_mem.memory.read(0, &mut model_remote);
    let mut done = Exercised::default();
    let start = Instant::now();
    let take = |qp: &mut QueuePair, done: &mut Exercised| -> anyhow::Result<()> {
        let c = qp
            .wait(Duration::from_secs(20))?
            .context("no completion within 20 s")?;
        if c.status != STATUS_SUCCESS {
            *done.failed.entry(status_name(c.status, c.nak)).or_default() += 1;
        }
        done.transactions += 1;
        Ok(())
    };
    for id in 0..n {
        let bits = rng.next_u64() % u64::from(32 - max_len.leading_zeros());
        let len = (1 + rng.next_u64() % (1 << bits)).min(u64::from(max_len)) as u32;
        let room = (size - len as usize) as u64 + 1;
        let (l, r) = (rng.next_u64() % room, rng.next_u64() % room);
        let write = rng.next_u64().is_multiple_of(2);
        loop {
            let posted = if write {
                qp.write(id, local, l, remote, r, len)
            } else {
                qp.read(id, local, l, remote, r, len)
            };
            if posted.is_ok() {
                break;
            }
            take(qp, &mut done)?;
        }
        let (l, r, len) = (l as usize, r as usize, len as usize);
        if write {
            model_remote[r..r + len].copy_from_slice(&model_local[l..l + len]);
        } else {
            model_local[l..l + len].copy_from_slice(&model_remote[r..r + len]);
        }
        done.bytes += len as u64;
    }
    while done.transactions < n {
        take(qp, &mut done)?;
    }
    done.elapsed = start.elapsed();
    let mut got = vec![0u8; model_remote.len()];
    remote_mem.memory.read(0, &mut got);
    done.remote_exact = got == model_remote;
    let mut got = vec![0u8; model_local.len()];
    local.memory.read(0, &mut got);
    done.local_exact = got == model_local;
    Ok(done)
}
