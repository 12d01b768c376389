//! `ops`: the day-2 operations of a VM host, xnic against what the host does without it, in
//! one lab and one run. The lab is the demo's: two uplinks in a team, RSS engines, four VMs.
//!
//! 1. Failover under load: the team failover gap (as in the `team` benchmark) while the API
//!    answers 200 `vm show` requests a second and RSS ticks, against the same failover with
//!    neither, trials interleaved.
//! 2. A new VM: from the API call that adds it to its first frame at the tor, against the
//!    kernel's bridge: from the netlink request that puts its port on the bridge.
//! 3. A VM port recreated (a VM reboots): from the new interface coming up to the VM's first
//!    frame at the tor, against the same interface put on a bridge with the uplink.
//! 4. Scale: 1,000 VMs added one by one through the API (total, p50 and p99 per add), against
//!    1,000 ports added to a kernel bridge one by one over netlink and against the API's own
//!    round trip; then restarts: time until every VM is attached again with 1,000 VMs,
//!    against the same with the lab's four.
//!
//! Frames are seen where an outsider would see them: a packet socket at the tor, with the
//! kernel's receive timestamps.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use xnic::{
    api::{
        client::{Client, Method},
        types::{ChangeView, VmChanged, VmView},
    },
    config::default_lab_toml,
    features::team::monotonic_ns,
    lab::{
        HOST_BRIDGE, Lab,
        capture::{Capture, Captured},
        daemon::DaemonProcess,
        ip, tor_port,
        traffic::{Receiver, UdpStream, send_udp},
    },
    net::MacAddr,
};

use crate::{
    flag,
    live::{self, LiveLab},
    report::{Better, Report, median},
    team::{self, VMS},
};

/// `vm show` requests per second during the loaded failovers (the figure).
const SHOW_PER_SEC: u64 = 200;
/// The probe stream a VM sends while it is added or its port recreated: one frame every
/// 50 µs, the resolution of every "first frame" figure.
const PROBE_PPS: u64 = 20_000;
/// The tor listens for probes on this port.
const PROBE_PORT: u16 = 9500;
/// VMs added in the scale part, and the name prefix of their ports.
const SCALE_VMS: usize = 1000;
const SCALE_PORT: &str = "o";
/// The kernel bridge the scale part's baseline adds those ports to.
const SCALE_BRIDGE: &str = "opsbr";
/// The lab's VM that is removed and added again, and the one whose port is recreated.
const NEW_VM: usize = 3;
const REBOOTED_VM: usize = 2;
/// Time a newly started daemon is given before a trial: its team has read the carriers and
/// chosen its active member, RSS has run its first period.
const TEAM_SETTLE: Duration = Duration::from_millis(500);

struct Opts {
    trials: usize,
    secs: f64,
    scale: usize,
}

/// Configuration files written beside the lab's, removed however the run ends.
struct Variants(Vec<PathBuf>);

impl Drop for Variants {
    fn drop(&mut self) {
        for v in &self.0 {
            let _ = std::fs::remove_file(v);
        }
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = Opts {
        trials: flag(args, "--trials", 5)?.max(1),
        secs: flag(args, "--secs", 3.0)?,
        scale: flag(args, "--vms", SCALE_VMS)?.max(1),
    };
    let only: String = flag(args, "--only", String::new())?;
    if !["", "failover", "vm", "scale"].contains(&only.as_str()) {
        bail!("--only takes failover, vm or scale, not {only:?}");
    }
    let part = |name: &str| only.is_empty() || only == name;
    let id = std::process::id();
    let instance = format!("xbops{id}");
    let text = default_lab_toml(&instance, &format!("xbo{id}"), VMS, false);
    let live = LiveLab::up(&instance, &text)?;
    let quiet_path = live::config_file(&instance, "quiet");
    std::fs::write(&quiet_path, without_rss(&text)?)?;
    let _variants = Variants(vec![quiet_path.clone()]);
    let mut report = Report::new("ops");
    if part("failover") {
        failover(&live, &quiet_path, &opts, &mut report)?;
    }
    if part("vm") {
        vm_lifecycle(&live, &opts, &mut report)?;
    }
    if part("scale") {
        scale(&live, &opts, &mut report)?;
    }
    drop(live);
    report.write()
}

/// The lab's configuration without its RSS section: nothing ticks but the team.
fn without_rss(text: &str) -> anyhow::Result<String> {
    let start = text.find("\n[rss]\n").context("the lab config has [rss]")?;
    let end = start
        + text[start..]
            .find("\n[lab]\n")
            .context("the lab config has [lab]")?;
    Ok(format!("{}{}", &text[..start], &text[end..]))
}

// ---- 1. failover under load ---------------------------------------------------------

/// What the API load achieved while it ran.
#[derive(Default)]
struct LoadReport {
    answered: u64,
    failed: u64,
    latencies_ms: Vec<f64>,
    secs: f64,
}

/// Asks `GET /v1/vms/vm0` (what `xnic vm show vm0` asks) `per_sec` times a second until
/// `stop`, on its own connection each time, as separate CLI invocations would.
fn api_load(instance: &str, per_sec: u64, stop: Arc<AtomicBool>) -> JoinHandle<LoadReport> {
    let client = Client::new(instance);
    std::thread::spawn(move || {
        let rt = runtime();
        let interval = Duration::from_secs_f64(1.0 / per_sec as f64);
        let start = Instant::now();
        let mut report = LoadReport::default();
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let due = start + interval * i;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let t = Instant::now();
            match rt.block_on(client.get::<VmView>("/v1/vms/vm0")) {
                Ok(_) => {
                    report.answered += 1;
                    report.latencies_ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
                Err(_) => report.failed += 1,
            }
            i += 1;
        }
        report.secs = start.elapsed().as_secs_f64();
        report
    })
}

fn failover(live: &LiveLab, quiet: &Path, opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let mut gaps: [Vec<f64>; 2] = Default::default();
    let mut lost: [Vec<f64>; 2] = Default::default();
    let mut stranded = [0usize; 2];
    let mut load = LoadReport::default();
    for trial in 1..=opts.trials {
        for (n, loaded) in [false, true].into_iter().enumerate() {
            let config = if loaded { &live.config_path } else { quiet };
            let daemon = live::start_daemon(&live.instance, config)?;
            std::thread::sleep(TEAM_SETTLE);
            let stop = Arc::new(AtomicBool::new(false));
            let load_thread = loaded.then(|| api_load(&live.instance, SHOW_PER_SEC, stop.clone()));
            let moved = team::failover_trial(&live.lab, opts.secs).map(|t| t.moved);
            stop.store(true, Ordering::Relaxed);
            if let Some(t) = load_thread {
                let r = t
                    .join()
                    .map_err(|_| anyhow::anyhow!("the API load panicked"))?;
                load.answered += r.answered;
                load.failed += r.failed;
                load.latencies_ms.extend(r.latencies_ms);
                load.secs += r.secs;
            }
            live.stop_dataplane(daemon)?;
            let moved = moved?;
            eprintln!(
                "  trial {trial}, {}: {}",
                if loaded { "loaded" } else { "quiet" },
                moved
                    .iter()
                    .map(|m| m.gap_ms.map_or("never".into(), |g| format!(
                        "gap {g:.3} ms, lost {}",
                        m.lost
                    )))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            for m in moved {
                match m.gap_ms {
                    Some(g) => gaps[n].push(g),
                    None => stranded[n] += 1,
                }
                lost[n].push(m.lost as f64);
            }
        }
    }
    if gaps.iter().any(Vec::is_empty) {
        bail!("no VM reached the surviving uplink in some configuration");
    }
    let scenario = format!(
        "{VMS} VMs × 10k pps, the busiest uplink loses carrier, failover policy; loaded: the API answering {SHOW_PER_SEC} `vm show`/s and RSS ticking; {} trials each, interleaved",
        opts.trials
    );
    let baseline = "the same failover, no API load and no RSS";
    report.add(
        "failover gap under load, median",
        &scenario,
        "ms",
        Better::Lower,
        median(gaps[1].clone()),
        &[(baseline, median(gaps[0].clone()))],
    );
    report.add(
        "failover gap under load, worst",
        &scenario,
        "ms",
        Better::Lower,
        max(&gaps[1]),
        &[(baseline, max(&gaps[0]))],
    );
    report.add(
        "datagrams lost per moved VM under load, median",
        &scenario,
        "datagrams",
        Better::Lower,
        median(lost[1].clone()),
        &[(baseline, median(lost[0].clone()))],
    );
    report.notes.push(format!(
        "Failover under load: gaps as in the `team` benchmark (per moved VM, its last frame on the lost uplink to its first on the survivor, kernel receive timestamps at the tor; the senders run at real-time priority below the daemon's link thread, so the load delays xnic and not the measurement). The API load answered {} requests in {:.1} s ({:.0}/s; {} failed), {:.2} ms median and {:.2} ms p99 each. Moved VMs stranded on the lost uplink: {} loaded, {} quiet.",
        load.answered,
        load.secs,
        load.answered as f64 / load.secs.max(1e-9),
        load.failed,
        percentile(&load.latencies_ms, 50.0),
        percentile(&load.latencies_ms, 99.0),
        stranded[1],
        stranded[0],
    ));
    Ok(())
}

// ---- 2 and 3. VMs that come and go --------------------------------------------------

/// A VM sending a probe stream to the tor while the tor's uplink ports are captured.
struct Probe {
    captures: Vec<Capture>,
    receiver: Receiver,
    sender: JoinHandle<anyhow::Result<xnic::lab::traffic::SendReport>>,
    mac: MacAddr,
}

impl Probe {
    fn start(lab: &Lab, vm: usize, secs: f64) -> anyhow::Result<Probe> {
        let (tor, tor_addr) = lab.endpoint("tor")?;
        let captures = lab
            .config()
            .uplinks
            .iter()
            .map(|u| Capture::start(&tor, &tor_port(&u.name)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sink = SocketAddr::new(tor_addr, PROBE_PORT);
        let receiver = Receiver::start(Some(&tor), sink)?;
        let ns = lab.vm_ns(&format!("vm{vm}"));
        let sender = std::thread::spawn(move || {
            send_udp(
                Some(&ns),
                UdpStream {
                    dst: sink,
                    flows: 1,
                    pps: PROBE_PPS,
                    duration: Duration::from_secs_f64(secs),
                    payload: 64,
                    zipf: None,
                },
            )
        });
        Ok(Probe {
            captures,
            receiver,
            sender,
            mac: team::vm_mac(vm),
        })
    }

    /// Waits for the stream to end; the VM's frames at the tor, by kernel receive time.
    fn finish(self) -> anyhow::Result<Vec<u64>> {
        self.sender
            .join()
            .map_err(|_| anyhow::anyhow!("the probe sender panicked"))??;
        self.receiver.stop()?;
        let mut at: Vec<u64> = Vec::new();
        for c in self.captures {
            let frames: Vec<Captured> = c.stop()?;
            at.extend(
                frames
                    .iter()
                    .filter(|f| f.src_mac() == self.mac.0 && f.generator_header().is_some())
                    .map(|f| f.at_ns),
            );
        }
        at.sort_unstable();
        Ok(at)
    }
}

/// Milliseconds from `t0` to the first frame after it; fails when frames arrived before
/// `t0` too (the path was not closed when the trial began) or none after it.
fn first_frame_ms(frames: &[u64], t0: u64, what: &str) -> anyhow::Result<f64> {
    let early = frames.iter().filter(|&&t| t < t0).count();
    if early > 0 {
        bail!("{what}: {early} frames reached the tor before the change");
    }
    let first = frames
        .first()
        .with_context(|| format!("{what}: no frame reached the tor"))?;
    Ok((first - t0) as f64 / 1e6)
}

/// Runs `f` in namespace `ns` with a netlink connection there; `f` gets the handle and
/// returns what it measured.
fn with_netlink<T: Send + 'static>(
    ns: &str,
    f: impl AsyncFnOnce(rtnetlink::Handle) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    xnic::netns::run_in(ns, move || {
        let rt = runtime();
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().context("cannot open a netlink socket")?;
            tokio::spawn(conn);
            f(handle).await
        })
    })
}

fn ifindex(name: &str) -> anyhow::Result<u32> {
    nix::net::if_::if_nametoindex(name).with_context(|| format!("no interface {name}"))
}

/// Puts `port` on `bridge` in namespace `ns` over netlink; returns when the request was
/// sent (CLOCK_MONOTONIC ns).
fn enslave(ns: &str, port: &str, bridge: &str) -> anyhow::Result<u64> {
    let (port, bridge) = (port.to_string(), bridge.to_string());
    with_netlink(ns, async move |handle| {
        let msg = rtnetlink::LinkUnspec::new_with_index(ifindex(&port)?)
            .controller(ifindex(&bridge)?)
            .build();
        let t0 = monotonic_ns();
        handle
            .link()
            .set(msg)
            .execute()
            .await
            .with_context(|| format!("cannot put {port} on {bridge}"))?;
        Ok(t0)
    })
}

/// Watches namespace `ns` for interface `name` to be set up (RTM_NEWLINK with IFF_UP);
/// the join handle gives when the listener saw it (CLOCK_MONOTONIC ns). Returns once
/// subscribed.
fn watch_up(ns: &str, name: &str) -> anyhow::Result<JoinHandle<anyhow::Result<u64>>> {
    use rtnetlink::{
        packet_core::{NetlinkMessage, NetlinkPayload},
        packet_route::{
            RouteNetlinkMessage,
            link::{LinkAttribute, LinkFlags},
        },
        sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
    };
    let (ns, name) = (ns.to_string(), name.to_string());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || -> anyhow::Result<u64> {
        xnic::netns::enter(&ns)?;
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        // RTNLGRP_LINK
        socket.add_membership(1)?;
        socket.set_non_blocking(true)?;
        let _ = ready_tx.send(());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = Vec::with_capacity(64 * 1024);
        while Instant::now() < deadline {
            buf.clear();
            match socket.recv(&mut buf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_micros(20));
                    continue;
                }
                Err(e) => return Err(e).context("reading link events"),
            }
            let seen = monotonic_ns();
            let mut rest = &buf[..];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len < 16 || len > rest.len() {
                    break;
                }
                if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len])
                    && let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) =
                        msg.payload
                    && link.header.flags.contains(LinkFlags::Up)
                    && link
                        .attributes
                        .iter()
                        .any(|a| matches!(a, LinkAttribute::IfName(n) if *n == name))
                {
                    return Ok(seen);
                }
                rest = &rest[len.next_multiple_of(4).min(rest.len())..];
            }
        }
        bail!("{name} did not come up in {ns}")
    });
    ready_rx
        .recv()
        .context("the link watcher ended before subscribing")?;
    Ok(watcher)
}

/// One VM added through the API while it sends: (API call to first frame at the tor, API
/// call to answer), ms. The VM is removed again afterwards.
fn add_vm_trial(live: &LiveLab, client: &Client) -> anyhow::Result<(f64, f64)> {
    let rt = runtime();
    let name = format!("vm{NEW_VM}");
    let vm = live
        .lab
        .config()
        .vm(&name)
        .context("the lab has the VM")?
        .clone();
    let probe = Probe::start(&live.lab, NEW_VM, 1.0)?;
    std::thread::sleep(Duration::from_millis(300));
    let t0 = monotonic_ns();
    let added: anyhow::Result<VmChanged> = rt.block_on(client.post_json("/v1/vms", &vm));
    let answered = monotonic_ns();
    let frames = probe.finish()?;
    added?;
    let _: ChangeView = rt.block_on(client.delete(&format!("/v1/vms/{name}")))?;
    Ok((
        first_frame_ms(&frames, t0, "xnic, VM added")?,
        (answered - t0) as f64 / 1e6,
    ))
}

/// The kernel's answer to a new VM: its port put on the bridge that holds the uplink.
fn bridge_port_trial(live: &LiveLab) -> anyhow::Result<f64> {
    let port = format!("vm{NEW_VM}");
    let host = live.lab.host_ns();
    ip(&["-n", host, "link", "set", &port, "nomaster"])?;
    let probe = Probe::start(&live.lab, NEW_VM, 1.0)?;
    std::thread::sleep(Duration::from_millis(300));
    let t0 = enslave(host, &port, HOST_BRIDGE);
    let frames = probe.finish()?;
    first_frame_ms(&frames, t0?, "kernel bridge, port added")
}

/// One VM port deleted and created again while the VM sends: the new port up to the VM's
/// first frame at the tor, ms.
fn recreate_trial(live: &LiveLab, what: &str) -> anyhow::Result<f64> {
    let name = format!("vm{REBOOTED_VM}");
    let probe = Probe::start(&live.lab, REBOOTED_VM, 1.5)?;
    std::thread::sleep(Duration::from_millis(200));
    live.lab.unplug(&name)?;
    std::thread::sleep(Duration::from_millis(100));
    let watcher = watch_up(live.lab.host_ns(), &name)?;
    // Frames captured before this belong to the old port.
    let recreated = monotonic_ns();
    let plugged = live.lab.plug(&name);
    let up = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the link watcher panicked"))?;
    let frames = probe.finish()?;
    plugged?;
    let up = up?;
    let after: Vec<u64> = frames.into_iter().filter(|&t| t > recreated).collect();
    first_frame_ms(&after, up, what)
}

fn vm_lifecycle(live: &LiveLab, opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let client = Client::new(&live.instance);
    let mut added = Vec::new();
    let mut answered = Vec::new();
    let mut recreated = Vec::new();
    let daemon = live.start_daemon()?;
    std::thread::sleep(TEAM_SETTLE);
    let _: ChangeView = runtime().block_on(client.delete(&format!("/v1/vms/vm{NEW_VM}")))?;
    for trial in 1..=opts.trials {
        let (first, answer) = add_vm_trial(live, &client)?;
        let again = recreate_trial(live, "xnic, port recreated")?;
        eprintln!(
            "  trial {trial}, xnic: VM added → first frame {first:.3} ms (answered in {answer:.3} ms); port up → first frame {again:.3} ms"
        );
        added.push(first);
        answered.push(answer);
        recreated.push(again);
    }
    live.stop_dataplane(daemon)?;
    let uplink = live.lab.config().uplinks[0].name.clone();
    live.bridge_uplink(&uplink, true)?;
    let mut bridged = Vec::new();
    let mut bridge_recreated = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for trial in 1..=opts.trials {
            let first = bridge_port_trial(live)?;
            let again = recreate_trial(live, "kernel bridge, port recreated")?;
            eprintln!(
                "  trial {trial}, kernel bridge: port added → first frame {first:.3} ms; port up → first frame {again:.3} ms"
            );
            bridged.push(first);
            bridge_recreated.push(again);
        }
        Ok(())
    })();
    live.bridge_uplink(&uplink, false)?;
    result?;
    let trials = opts.trials;
    report.add(
        "new VM: API call to its first frame at the tor, median",
        &format!("a VM sending {PROBE_PPS} pps is added (`POST /v1/vms`); {trials} trials"),
        "ms",
        Better::Lower,
        median(added),
        &[(
            "kernel bridge: netlink request putting its port on the bridge with the uplink",
            median(bridged),
        )],
    );
    report.add(
        "VM port recreated: port up to the VM's first frame at the tor, median",
        &format!(
            "a VM sending {PROBE_PPS} pps has its port deleted and created again (a reboot); {trials} trials"
        ),
        "ms",
        Better::Lower,
        median(recreated),
        &[(
            "kernel bridge: the same new port, put on the bridge with the uplink",
            median(bridge_recreated),
        )],
    );
    report.notes.push(format!(
        "VMs that come and go: a frame counts when the tor's packet socket receives it (kernel timestamp); the VM sends one every {} µs, the resolution of these figures. The API answered the add in {:.3} ms (median). \"Port up\" is when a netlink listener in the host's namespace saw the new port set up (RTM_NEWLINK with IFF_UP), as xnic does.",
        1_000_000 / PROBE_PPS,
        median(answered),
    ));
    Ok(())
}

// ---- 4. scale -------------------------------------------------------------------------

fn scale_port(i: usize) -> String {
    format!("{SCALE_PORT}{i}")
}

fn scale_mac(i: usize) -> String {
    format!("02:78:00:00:{:02x}:{:02x}", i >> 8, i & 0xff)
}

/// Creates `n` veth pairs in the host's namespace (`o0`..; peers `o0p`..), set up.
fn create_ports(host: &str, n: usize) -> anyhow::Result<()> {
    let mut batch = String::new();
    for i in 0..n {
        let p = scale_port(i);
        batch.push_str(&format!(
            "link add {p} type veth peer name {p}p\nlink set {p} up\nlink set {p}p up\n"
        ));
    }
    let path = std::env::temp_dir().join(format!("xnic-ops-{}.batch", std::process::id()));
    std::fs::write(&path, batch)?;
    let out = std::process::Command::new("ip")
        .args(["-n", host, "-batch"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out?;
    if !out.status.success() {
        bail!(
            "cannot create the scale ports: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Restarts the daemon (SIGTERM; a new one adopts the pinned dataplane) and returns it with
/// the time from its start until all `vms` VMs are attached again, s.
fn restart(
    live: &LiveLab,
    daemon: DaemonProcess,
    vms: usize,
) -> anyhow::Result<(DaemonProcess, f64)> {
    daemon.stop()?;
    let client = Client::new(&live.instance);
    let rt = runtime();
    let t = Instant::now();
    let daemon = live.start_daemon()?;
    loop {
        let all: Vec<VmView> = rt.block_on(client.get("/v1/vms"))?;
        let attached = all.iter().filter(|v| v.port_state == "attached").count();
        if attached == vms && all.len() == vms {
            return Ok((daemon, t.elapsed().as_secs_f64()));
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("after a restart only {attached} of {vms} VMs were attached within 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn scale(live: &LiveLab, opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let n = opts.scale;
    let host = live.lab.host_ns().to_string();
    let client = Client::new(&live.instance);
    let rt = runtime();
    eprintln!("scale: creating {n} VM ports");
    create_ports(&host, n)?;
    let mut daemon = live.start_daemon()?;
    std::thread::sleep(TEAM_SETTLE);

    // Restarts with the lab's VMs, and the API's own round trip, before the scale VMs.
    let mut small_restarts = Vec::new();
    for _ in 0..opts.trials {
        let (d, secs) = restart(live, daemon, VMS)?;
        daemon = d;
        small_restarts.push(secs);
    }
    let mut round_trips = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let _: VmView = rt.block_on(client.get("/v1/vms/vm0"))?;
        round_trips.push(t.elapsed().as_secs_f64() * 1e3);
    }

    eprintln!("scale: adding {n} VMs through the API");
    let mut adds = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let body = serde_json::json!({
            "name": format!("ops{i}"),
            "port": scale_port(i),
            "macs": [scale_mac(i)],
        });
        let t = Instant::now();
        let (status, answer) = rt.block_on(client.request_with(
            Method::POST,
            "/v1/vms",
            Some(serde_json::to_vec(&body)?),
        ))?;
        adds.push(t.elapsed().as_secs_f64() * 1e3);
        if !status.is_success() {
            bail!(
                "adding VM ops{i} failed ({status}): {}",
                String::from_utf8_lossy(&answer)
            );
        }
    }
    let total = started.elapsed().as_secs_f64();
    let all: Vec<VmView> = rt.block_on(client.get("/v1/vms"))?;
    let attached = all.iter().filter(|v| v.port_state == "attached").count();
    if attached != n + VMS {
        bail!("after {n} adds, {attached} of {} VMs are attached", n + VMS);
    }
    eprintln!("scale: restarting with {} VMs", n + VMS);
    let mut big_restarts = Vec::new();
    for _ in 0..opts.trials {
        let (d, secs) = restart(live, daemon, n + VMS)?;
        daemon = d;
        big_restarts.push(secs);
    }
    live.stop_dataplane(daemon)?;

    eprintln!("scale: adding {n} ports to a kernel bridge");
    ip(&["-n", &host, "link", "add", SCALE_BRIDGE, "type", "bridge"])?;
    let ports: Vec<String> = (0..n).map(scale_port).collect();
    let bridge_started = Instant::now();
    let bridge_adds: Vec<f64> = with_netlink(&host, async move |handle| {
        let bridge = ifindex(SCALE_BRIDGE)?;
        let mut took = Vec::with_capacity(ports.len());
        for p in &ports {
            let msg = rtnetlink::LinkUnspec::new_with_index(ifindex(p)?)
                .controller(bridge)
                .build();
            let t = Instant::now();
            handle
                .link()
                .set(msg)
                .execute()
                .await
                .with_context(|| format!("cannot put {p} on {SCALE_BRIDGE}"))?;
            took.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(took)
    })?;
    let bridge_total = bridge_started.elapsed().as_secs_f64();
    eprintln!(
        "  xnic: {total:.2} s, p50 {:.3} ms, p99 {:.3} ms; bridge: {bridge_total:.2} s, p50 {:.3} ms, p99 {:.3} ms; API round trip p50 {:.3} ms",
        percentile(&adds, 50.0),
        percentile(&adds, 99.0),
        percentile(&bridge_adds, 50.0),
        percentile(&bridge_adds, 99.0),
        percentile(&round_trips, 50.0),
    );

    let scenario = format!("{n} VMs, each with its own port (a veth), added one by one");
    let bridge = format!("kernel bridge: {n} ports added one by one over netlink");
    report.add(
        &format!("{n} VMs added through the API: total"),
        &scenario,
        "s",
        Better::Lower,
        total,
        &[(&bridge, bridge_total)],
    );
    for p in [50.0, 99.0] {
        report.add(
            &format!("time per VM added, p{p}"),
            &scenario,
            "ms",
            Better::Lower,
            percentile(&adds, p),
            &[
                (&bridge, percentile(&bridge_adds, p)),
                (
                    "API round trip (`GET /v1/vms/vm0`)",
                    percentile(&round_trips, p),
                ),
            ],
        );
    }
    report.add(
        &format!(
            "restart with {} VMs: start to every VM attached, median",
            n + VMS
        ),
        &format!(
            "SIGTERM, then a new daemon adopts the pinned dataplane; {} restarts",
            opts.trials
        ),
        "s",
        Better::Lower,
        median(big_restarts.clone()),
        &[(
            &format!("restart with the lab's {VMS} VMs"),
            median(small_restarts.clone()),
        )],
    );
    report.notes.push(format!(
        "Scale: each add is one `POST /v1/vms` on its own connection, answered after the dataplane holds the VM (its port attached) and the desired state is on disk. Restarts: from starting `xnic run` until `GET /v1/vms` shows every VM attached, worst {:.2} s with {} VMs and {:.2} s with {VMS}.",
        max(&big_restarts),
        n + VMS,
        max(&small_restarts),
    ));
    Ok(())
}

// ---- helpers ----------------------------------------------------------------------------

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds")
}

/// The `p`th percentile of `v` (nearest rank); NaN when empty.
fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}
