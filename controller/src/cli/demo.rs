//! `xnic lab demo`: the lab, the daemon and traffic, narrated; everything removed at the end.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{args::DemoArgs, block_on, down, lab::resolve, table};
use crate::{
    api::{
        client::{Client, Method},
        types::{
            ChangeView, Event, RssEngineSetRequest, RssEngineView, RssEvent, RssStatusView,
            StatsView, StatusView, TeamEvent, TeamStatusView, VmChanged, VmPatch, VmView,
        },
    },
    lab::{
        Lab, TOR_UDP_PORT,
        daemon::DaemonProcess,
        traffic::{Receiver, RecvReport, SendReport, UdpStream, iperf3_streams, send_udp},
    },
};
use xnic_proto::config::AllocationMode;

const DAEMON_PREFIX: &str = "  daemon │ ";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// What a traffic run delivered, in one line.
fn delivery(sent: &SendReport, got: &RecvReport) -> String {
    format!(
        "sent {}, received {}, lost {}, reordered {}",
        sent.sent,
        got.received,
        sent.sent.saturating_sub(got.received),
        got.reordered
    )
}

/// 5000 datagrams/s over 8 flows from `vm` to the tor at `tor` for `secs`, in the
/// background, and the tor's receiver counting them.
fn stream_to_tor(
    lab: &Lab,
    vm: &str,
    tor: std::net::IpAddr,
    secs: f64,
) -> anyhow::Result<(
    Receiver,
    std::thread::JoinHandle<anyhow::Result<SendReport>>,
)> {
    let sink = std::net::SocketAddr::new(tor, TOR_UDP_PORT);
    let rx = Receiver::start(Some(&lab.tor_ns()), sink)?;
    let ns = lab.vm_ns(vm);
    let sender = std::thread::spawn(move || {
        send_udp(
            Some(&ns),
            UdpStream {
                dst: sink,
                flows: 8,
                pps: 5000,
                duration: Duration::from_secs_f64(secs),
                payload: 100,
                zipf: None,
            },
        )
    });
    Ok((rx, sender))
}

/// A VM sends from a MAC its port does not own; `xnic monitor` shows each drop with its
/// reason, port, VM and headers, and `xnic trace` the stage that decided it. The VM gets its
/// MAC back afterwards.
fn drop_explained_demo(
    lab: &Lab,
    instance: &str,
    vm: &str,
    port: &str,
    own: &str,
    tor: std::net::IpAddr,
) -> anyhow::Result<()> {
    const SPOOFED: &str = "02:66:00:00:00:01";
    heading(&format!(
        "a drop explained: {vm} sends from {SPOOFED}, a MAC its port does not own; xnic monitor and xnic trace say why its frames go nowhere"
    ));
    let set_mac = |mac: &str| lab.set_vm_mac(vm, mac, tor);
    set_mac(SPOOFED)?;
    let exe = std::env::current_exe().context("cannot find the xnic executable")?;
    let args = [
        "monitor",
        "--count",
        "3",
        "--duration",
        "10",
        "--reason",
        "spoofed_mac",
        "--instance",
        instance,
    ];
    println!("$ xnic {}", args.join(" "));
    let monitor = std::process::Command::new(&exe)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot start xnic monitor")?;
    std::thread::sleep(Duration::from_millis(800));
    let (rx, sender) = stream_to_tor(lab, vm, tor, 0.5)?;
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let got = rx.stop()?;
    let out = monitor.wait_with_output().context("xnic monitor")?;
    set_mac(own)?;
    // Its heading and closing counts go to stderr, the events to stdout: in that order.
    let err = String::from_utf8_lossy(&out.stderr);
    let (head, tail) = err.split_once('\n').unwrap_or((&err, ""));
    println!("{head}");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    print!("{tail}");
    println!(
        "{vm} sent {} datagrams from {SPOOFED}: {} arrived at the tor",
        sent.sent, got.received
    );
    // The same frame through the programs, stage by stage, changing nothing.
    let tor = tor.to_string();
    let args = [
        "trace",
        "--in",
        port,
        "--src-mac",
        SPOOFED,
        "--dst",
        &tor,
        "--instance",
        instance,
    ];
    println!("\n$ xnic {}", args.join(" "));
    let out = std::process::Command::new(&exe)
        .args(args)
        .output()
        .context("cannot run xnic trace")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        anyhow::bail!(
            "xnic trace failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub(super) fn heading(text: &str) {
    println!("\n━━ {text}");
}

/// A flag Ctrl-C (or SIGTERM) raises: the demo stops at the next step and cleans up.
pub(super) fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot handle signals")?;
    }
    Ok(stop)
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic lab demo")?;
    let (lab, config_path) = resolve(&args.config)?;
    let stop = stop_on_signals()?;
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s));

    heading("building the lab");
    lab.up()?;
    println!("namespaces: {}", lab.namespaces().join(", "));

    let mut daemon = None;
    let result = if lab.has_guests() {
        guest_demo(&lab, &config_path, &stop, deadline, &mut daemon)
    } else {
        demo(&lab, &config_path, &stop, deadline, &mut daemon)
    };
    // Ctrl-C reaches ping, iperf3 and trafgen too: whatever it cut short is not a failure.
    let result = if stop.load(Ordering::Relaxed) {
        Ok(())
    } else {
        result
    };

    heading("cleaning up");
    let instance = lab.config().instance.clone();
    let mut cleanup = down::down(&instance).map(|r| {
        println!(
            "dataplane removed: detached from {} interface(s)",
            r.links_removed.len()
        );
    });
    if let Some(d) = daemon.take()
        && let Err(e) = d.wait(Duration::from_secs(10))
    {
        cleanup = cleanup.and(Err(e));
    }
    match lab.down() {
        Ok(removed) => println!("namespaces removed: {}", removed.join(", ")),
        Err(e) => cleanup = cleanup.and(Err(e)),
    }
    if args.config.config.is_none() {
        // The built-in configuration was written for the daemon; it goes with the lab.
        let _ = std::fs::remove_file(&config_path);
    }
    result.and(cleanup)
}

/// Starts this xnic's daemon on the lab's configuration, its log lines prefixed.
fn start_daemon(lab: &Lab, config_path: &std::path::Path) -> anyhow::Result<DaemonProcess> {
    let exe = std::env::current_exe().context("cannot find the xnic executable")?;
    DaemonProcess::start(
        &exe,
        config_path,
        &lab.config().instance,
        Some(DAEMON_PREFIX),
        READY_TIMEOUT,
    )
}

fn demo(
    lab: &Lab,
    config_path: &std::path::Path,
    stop: &AtomicBool,
    deadline: Option<Instant>,
    running: &mut Option<DaemonProcess>,
) -> anyhow::Result<()> {
    let instance = lab.config().instance.clone();
    let client = Client::new(&instance);
    let start = || start_daemon(lab, config_path);

    heading("starting the daemon");
    *running = Some(start()?);
    let status: StatusView = block_on(client.get("/v1/status"))?;
    print!("{}", table::status(&status));

    if lab.config().rss.is_some()
        && let Some(vm0) = lab.config().vms.first()
    {
        rss_demo(lab, &client, &vm0.name)?;
    }

    heading("traffic: ping between VMs and to the tor, UDP from every VM, iperf3 vm0 → tor");
    let report = lab.drive(Duration::from_secs(2), Some(2))?;
    println!("{}", report.summary());
    let stats: StatsView = block_on(client.get("/v1/stats"))?;
    print!("{}", table::stats(&stats));

    if let Some(team) = lab.config().teams.first()
        && team.uplinks.len() > 1
        && let Some(vm0) = lab.config().vms.first()
    {
        failover_demo(
            lab,
            &client,
            &team.uplinks[0],
            &vm0.name,
            team.failback_hold_ms,
        )?;
        if let Some(d) = running.as_ref() {
            paused_failover_demo(
                lab,
                &client,
                &team.uplinks[0],
                &vm0.name,
                d.pid(),
                team.failback_hold_ms,
            )?;
        }
    }

    if !lab.config().teams.is_empty()
        && let Some(vm0) = lab.config().vms.first()
    {
        allocation_demo(lab, &client, &vm0.name)?;
    }

    if lab.config().vms.len() > 1 {
        lifecycle_demo(lab, &client)?;
    }

    if let (Some(vm0), Some(tor4)) = (
        lab.config().vms.first(),
        lab.tor_addrs().iter().find(|a| a.addr.is_ipv4()),
    ) {
        heading("crash test: SIGKILL the daemon under traffic, start a new one");
        let before: VmView = block_on(client.get(&format!("/v1/vms/{}", vm0.name)))?;
        let (rx, sender) = stream_to_tor(lab, &vm0.name, tor4.addr, 4.0)?;
        std::thread::sleep(Duration::from_secs(1));
        if let Some(d) = running.take() {
            println!("kill -9 {}", d.pid());
            d.kill()?;
        }
        std::thread::sleep(Duration::from_millis(500));
        println!("starting a new daemon while {} keeps sending", vm0.name);
        *running = Some(start()?);
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("sender panicked"))??;
        let got = rx.stop()?;
        let after: VmView = block_on(client.get(&format!("/v1/vms/{}", vm0.name)))?;
        println!(
            "sent {} datagrams across the restart: {} arrived, {} lost, {} reordered",
            sent.sent,
            got.received,
            sent.sent.saturating_sub(got.received),
            got.reordered
        );
        println!(
            "{} frames from {}: {} before the crash, {} now (the counters live in the pinned maps)",
            vm0.name, vm0.name, before.counters.from_vm.packets, after.counters.from_vm.packets
        );
    }

    if !stop.load(Ordering::Relaxed) {
        flow_offload_demo(&instance)?;
    }
    if !stop.load(Ordering::Relaxed) {
        super::fleet::demo(&format!("{instance}-fleet"), stop)?;
    }
    if !stop.load(Ordering::Relaxed) {
        super::rings_demo::demo(&format!("{instance}-rings-"), stop)?;
    }
    if let (Some(vm0), Some(tor4)) = (
        lab.config().vms.first(),
        lab.tor_addrs().iter().find(|a| a.addr.is_ipv4()),
    ) && !stop.load(Ordering::Relaxed)
    {
        let own = vm0.macs.first().map(|m| m.to_string()).unwrap_or_default();
        drop_explained_demo(lab, &instance, &vm0.name, &vm0.port, &own, tor4.addr)?;
    }

    heading("steady traffic (Ctrl-C to stop)");
    let mut seen_events = 0;
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let report = lab.drive(Duration::from_secs(1), None)?;
        let vms: Vec<VmView> = block_on(client.get("/v1/vms"))?;
        println!("{}", report.summary());
        print!("{}", table::vms(&vms));
        if lab.config().rss.is_some() {
            let events: Vec<RssEvent> =
                block_on(client.get(&format!("/v1/rss/events?since={seen_events}")))?;
            if let Some(last) = events.last() {
                seen_events = last.id;
                print!("{}", table::rss_events(&events, false));
            }
        }
        for _ in 0..20 {
            if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// The demo with real guests: traffic from inside them (ping, iperf3) through xnic on their
/// taps, a failover and a daemon crash under a guest's stream, a QEMU restart.
fn guest_demo(
    lab: &Lab,
    config_path: &std::path::Path,
    stop: &AtomicBool,
    deadline: Option<Instant>,
    running: &mut Option<DaemonProcess>,
) -> anyhow::Result<()> {
    let instance = lab.config().instance.clone();
    let client = Client::new(&instance);
    let start = || start_daemon(lab, config_path);
    let vms: Vec<String> = lab.config().vms.iter().map(|v| v.name.clone()).collect();
    let (tor_ns, tor) = lab.endpoint("tor")?;
    let exec = |vm: &str, script: &str| -> anyhow::Result<String> {
        println!("{vm}$ {script}");
        let (status, out) = lab.guest(vm)?.exec(script, Duration::from_secs(120))?;
        let summary: Vec<&str> = out
            .lines()
            .filter(|l| {
                l.contains("packets transmitted") || l.contains("sender") || l.contains("receiver")
            })
            .collect();
        for l in &summary {
            println!("  {}", l.trim());
        }
        if status != 0 && summary.is_empty() {
            print!("{out}");
        }
        Ok(out)
    };

    heading("starting the daemon (the VMs are QEMU guests on tap devices)");
    *running = Some(start()?);
    let status: StatusView = block_on(client.get("/v1/status"))?;
    print!("{}", table::status(&status));

    heading("traffic from inside the guests: ping to the tor and to each other, iperf3 vm0 → tor");
    for (i, vm) in vms.iter().enumerate() {
        exec(vm, &format!("ping -q -c 20 -i 0.02 -W 2 {tor}"))?;
        if let Some(next) = vms.get((i + 1) % vms.len()).filter(|n| *n != vm) {
            let (_, addr) = lab.endpoint(next)?;
            exec(vm, &format!("ping -q -c 10 -i 0.02 -W 2 {addr}"))?;
        }
    }
    if let Some(vm0) = vms.first() {
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", &tor_ns, "iperf3", "-s", "-1", "-B"])
            .arg(tor.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        exec(vm0, &format!("iperf3 -c {tor} -t 3"))?;
        let mut server = server;
        let _ = server.wait();
        println!("(the guests run under TCG emulation: their throughput is the emulator's)");
    }
    let stats: StatsView = block_on(client.get("/v1/stats"))?;
    print!("{}", table::stats(&stats));

    let background =
        |vm: &str| -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<(i32, String)>>> {
            let g = lab.guest(vm)?;
            let script = format!("ping -q -c 200 -i 0.02 -W 2 {tor}");
            println!("{vm}$ {script}   (in the background)");
            Ok(std::thread::spawn(move || {
                g.exec(&script, Duration::from_secs(120))
            }))
        };
    let report = |h: std::thread::JoinHandle<anyhow::Result<(i32, String)>>| -> anyhow::Result<()> {
        let (_, out) = h
            .join()
            .map_err(|_| anyhow::anyhow!("the guest's command panicked"))??;
        for l in out.lines().filter(|l| l.contains("packets transmitted")) {
            println!("  {}", l.trim());
        }
        Ok(())
    };

    if let (Some(team), Some(vm0)) = (lab.config().teams.first(), vms.first())
        && team.uplinks.len() > 1
    {
        let uplink = &team.uplinks[0];
        heading(&format!(
            "team: {uplink} loses its carrier while {vm0} pings the tor 50 times a second"
        ));
        let h = background(vm0)?;
        std::thread::sleep(Duration::from_secs(1));
        set_carrier(lab, uplink, "down")?;
        std::thread::sleep(Duration::from_secs(1));
        let status: TeamStatusView = block_on(client.get("/v1/team"))?;
        print!("{}", table::team_status(&status));
        set_carrier(lab, uplink, "up")?;
        report(h)?;
        let events: Vec<TeamEvent> = block_on(client.get("/v1/team/events"))?;
        print!("{}", table::team_events(&events, true));
    }

    if let Some(vm0) = vms.first() {
        heading(&format!(
            "crash test: SIGKILL the daemon while {vm0} pings, start a new one"
        ));
        let h = background(vm0)?;
        std::thread::sleep(Duration::from_secs(1));
        if let Some(d) = running.take() {
            println!("kill -9 {}", d.pid());
            d.kill()?;
        }
        std::thread::sleep(Duration::from_millis(500));
        *running = Some(start()?);
        report(h)?;
    }

    if let Some(last) = vms.last() {
        heading(&format!(
            "{last}'s QEMU restarts: its tap is deleted and made again (a new ifindex)"
        ));
        let before: VmView = block_on(client.get(&format!("/v1/vms/{last}")))?;
        let started = Instant::now();
        lab.unplug(last)?;
        lab.plug(last)?;
        println!(
            "{last} booted again in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let mut back: VmView = block_on(client.get(&format!("/v1/vms/{last}")))?;
        while back.port_state != "attached" && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(50));
            back = block_on(client.get(&format!("/v1/vms/{last}")))?;
        }
        println!(
            "its port is {} in slot {} (slot {} before), counters from {} frames on",
            back.port_state, back.slot, before.slot, before.counters.from_vm.packets
        );
        exec(last, &format!("ping -q -c 20 -i 0.02 -W 2 {tor}"))?;
    }

    heading("steady traffic from the guests (Ctrl-C to stop)");
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        for vm in &vms {
            let _ = lab.guest(vm)?.exec(
                &format!("ping -q -c 10 -i 0.05 -W 1 {tor}"),
                Duration::from_secs(30),
            );
        }
        let vms: Vec<VmView> = block_on(client.get("/v1/vms"))?;
        print!("{}", table::vms(&vms));
        for _ in 0..10 {
            if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

/// Load from the tor pushes a VM from no-RSS to a shared engine and on to a dedicated one.
fn rss_demo(lab: &Lab, client: &Client, vm: &str) -> anyhow::Result<()> {
    let (ns, addr) = lab.endpoint(vm)?;
    let sink = std::net::SocketAddr::new(addr, TOR_UDP_PORT);
    for (pps, what) in [
        (6_000, "over the no-RSS threshold: a shared engine takes it"),
        (
            40_000,
            "its shared engine overloads: a dedicated engine takes it",
        ),
    ] {
        heading(&format!(
            "RSS: tor → {vm} at {pps} datagrams/s over 64 Zipf flows ({what})"
        ));
        let rx = Receiver::start(Some(&ns), sink)?;
        let sent = send_udp(
            Some(&lab.tor_ns()),
            UdpStream {
                dst: sink,
                flows: 64,
                pps,
                duration: Duration::from_secs(3),
                payload: 64,
                zipf: Some(1.1),
            },
        )?;
        let got = rx.stop()?;
        println!("{}", delivery(&sent, &got));
        let status: RssStatusView = block_on(client.get("/v1/rss"))?;
        print!("{}", table::rss_status(&status));
    }
    engine_change_demo(lab, client, vm, sink)?;
    let events: Vec<RssEvent> = block_on(client.get("/v1/rss/events"))?;
    println!("RSS events (migrations, bucket moves and engine changes, with their figures):");
    print!("{}", table::rss_events(&events, true));
    Ok(())
}

/// An operator moves the VM's engine to other CPUs and back while its flows run: every flow
/// drains from its old CPU first, so nothing is lost or reordered.
fn engine_change_demo(
    lab: &Lab,
    client: &Client,
    vm: &str,
    sink: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let status: RssStatusView = block_on(client.get("/v1/rss"))?;
    let Some(engine) = status
        .vms
        .iter()
        .find(|v| v.name == vm)
        .and_then(|v| v.state.split_once(':'))
        .and_then(|(_, name)| status.engines.iter().find(|e| e.name == name))
    else {
        return Ok(());
    };
    let online = crate::config::host::online_cpus()?;
    let Some(&other) = online.iter().find(|c| !engine.cpus.contains(c)) else {
        return Ok(()); // one CPU: nowhere else to go
    };
    heading(&format!(
        "RSS: an operator moves engine {} from CPUs {:?} to [{other}] and back while {vm} receives 10000 datagrams/s",
        engine.name, engine.cpus
    ));
    let (ns, _) = lab.endpoint(vm)?;
    let rx = Receiver::start(Some(&ns), sink)?;
    let tor = lab.tor_ns();
    let sender = std::thread::spawn(move || {
        send_udp(
            Some(&tor),
            UdpStream {
                dst: sink,
                flows: 64,
                pps: 10_000,
                duration: Duration::from_secs(3),
                payload: 64,
                zipf: Some(1.1),
            },
        )
    });
    let path = format!("/v1/rss/engines/{}", engine.name);
    for cpus in [vec![other], engine.cpus.clone()] {
        std::thread::sleep(Duration::from_secs(1));
        let _: RssEngineView = block_on(client.post_json(&path, &RssEngineSetRequest { cpus }))?;
    }
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the traffic thread panicked"))??;
    let got = rx.stop()?;
    println!("{}", delivery(&sent, &got));
    Ok(())
}

/// Gives `uplink` its carrier back or takes it away (`state`: up or down) at the tor's end,
/// showing the command.
fn set_carrier(lab: &Lab, uplink: &str, state: &str) -> anyhow::Result<()> {
    let tor_port = crate::lab::tor_port(uplink);
    println!("ip -n {} link set {tor_port} {state}", lab.tor_ns());
    crate::lab::ip(&["-n", &lab.tor_ns(), "link", "set", &tor_port, state])
}

/// The team's first uplink loses its carrier while a VM sends: the VM moves to the survivor
/// at once, is announced there, and comes back only after the hold-down.
fn failover_demo(
    lab: &Lab,
    client: &Client,
    uplink: &str,
    vm: &str,
    hold_ms: u64,
) -> anyhow::Result<()> {
    let Some(tor4) = lab.tor_addrs().iter().find(|a| a.addr.is_ipv4()).copied() else {
        return Ok(());
    };
    heading(&format!(
        "team: {uplink} loses its carrier while {vm} sends 5000 datagrams/s; it fails back {hold_ms} ms after the carrier returns"
    ));
    let (rx, sender) = stream_to_tor(lab, vm, tor4.addr, 3.0 + hold_ms as f64 / 1000.0)?;
    let carrier = |state: &str| set_carrier(lab, uplink, state);
    std::thread::sleep(Duration::from_secs(1));
    carrier("down")?;
    std::thread::sleep(Duration::from_secs(1));
    let status: TeamStatusView = block_on(client.get("/v1/team"))?;
    print!("{}", table::team_status(&status));
    carrier("up")?;
    std::thread::sleep(Duration::from_millis(300));
    let status: TeamStatusView = block_on(client.get("/v1/team"))?;
    print!("{}", table::team_status(&status));
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the traffic thread panicked"))??;
    let got = rx.stop()?;
    std::thread::sleep(Duration::from_millis(700));
    println!("{}", delivery(&sent, &got));
    let events: Vec<TeamEvent> = block_on(client.get("/v1/team/events"))?;
    println!(
        "team events (switch: from the kernel's link event to the dataplane carrying the VMs):"
    );
    print!("{}", table::team_events(&events, true));
    Ok(())
}

/// The same carrier loss with the daemon stopped (SIGSTOP): the dataplane moves the VM by
/// itself, at the first redirect the kernel cannot send; the daemon, continued, makes the
/// move official (event, placement, announcement).
fn paused_failover_demo(
    lab: &Lab,
    client: &Client,
    uplink: &str,
    vm: &str,
    daemon_pid: u32,
    hold_ms: u64,
) -> anyhow::Result<()> {
    use nix::{sys::signal::Signal, unistd::Pid};
    let Some(tor4) = lab.tor_addrs().iter().find(|a| a.addr.is_ipv4()).copied() else {
        return Ok(());
    };
    heading(&format!(
        "team, daemon paused: {uplink} loses its carrier while {vm} sends 5000 datagrams/s and nothing in userspace can move it"
    ));
    let status: StatusView = block_on(client.get("/v1/status"))?;
    println!(
        "dataplane failover: on; carrier hook {}",
        status.carrier_hook
    );
    let daemon = Pid::from_raw(daemon_pid as i32);
    let signal = |sig: Signal| {
        println!(
            "kill -{} {daemon_pid}",
            sig.as_str().trim_start_matches("SIG")
        );
        nix::sys::signal::kill(daemon, sig).context("cannot signal the daemon")
    };
    let carrier = |state: &str| set_carrier(lab, uplink, state);
    let (rx, sender) = stream_to_tor(lab, vm, tor4.addr, 3.0)?;
    std::thread::sleep(Duration::from_millis(800));
    signal(Signal::SIGSTOP)?;
    carrier("down")?;
    std::thread::sleep(Duration::from_secs(1));
    signal(Signal::SIGCONT)?;
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the traffic thread panicked"))??;
    let got = rx.stop()?;
    println!("{}", delivery(&sent, &got));
    let status: TeamStatusView = block_on(client.get("/v1/team"))?;
    print!("{}", table::team_status(&status));
    let events: Vec<TeamEvent> = block_on(client.get("/v1/team/events"))?;
    if let Some(last) = events.last() {
        print!("{}", table::team_events(std::slice::from_ref(last), true));
    }
    carrier("up")?;
    println!("{uplink} carries its VMs again after the {hold_ms} ms hold-down");
    std::thread::sleep(Duration::from_millis(hold_ms + 500));
    Ok(())
}

/// Day-2 operations while the first VM sends: the last VM is removed, added back, changed,
/// and its port deleted and recreated (a VM reboot); the first VM's stream never notices.
/// TCP through a 20 Mbit/s allocation: shaped (the default), then strict, then none again.
fn allocation_demo(lab: &Lab, client: &Client, vm: &str) -> anyhow::Result<()> {
    const RATE_MBPS: f64 = 20.0;
    const SECS: u32 = 3;
    let path = format!("/v1/vms/{vm}");
    let (tor_ns, tor_addr) = lab.endpoint("tor")?;
    let (vm_ns, _) = lab.endpoint(vm)?;
    heading(&format!(
        "TCP through a {RATE_MBPS} Mbit/s allocation on {vm}: shaped (the default), then strict"
    ));
    let set = |patch: VmPatch| -> anyhow::Result<()> {
        let out: VmChanged = block_on(client.send_json(Method::PATCH, &path, &patch))?;
        super::vm::print_change(&out.change);
        Ok(())
    };
    let transfer = |label: &str| -> anyhow::Result<()> {
        let d = iperf3_streams(&tor_ns, &tor_addr.to_string(), &vm_ns, SECS, 1)?;
        let got = d.report.bits_per_second / 1e6;
        let empty = d.intervals_bps.iter().filter(|b| **b < 1000.0).count();
        println!(
            "iperf3 {vm} → tor, {SECS} s, {label}: {got:.1} Mbit/s = {:.0} % of the allocation, {} retransmits, {empty} of {} 100 ms intervals empty",
            got / RATE_MBPS * 100.0,
            d.report.retransmits,
            d.intervals_bps.len()
        );
        Ok(())
    };
    println!("xnic vm set {vm} --bandwidth-mbps {RATE_MBPS}");
    set(VmPatch {
        bandwidth_mbps: Some(Some(RATE_MBPS)),
        ..VmPatch::default()
    })?;
    transfer("shaped")?;
    let shown: VmView = block_on(client.get(&path))?;
    if let Some(s) = shown.team.as_ref().and_then(|t| t.shaper) {
        println!(
            "its class on the uplink (also in `tc -s class show`): {} packets sent, {} dropped at a full queue",
            s.packets, s.drops
        );
    }
    println!("xnic vm set {vm} --allocation-mode strict   (the XDP policer alone)");
    set(VmPatch {
        allocation_mode: Some(AllocationMode::Strict),
        ..VmPatch::default()
    })?;
    transfer("strict")?;
    println!("xnic vm set {vm} --allocation-mode shaped --unset bandwidth_mbps");
    set(VmPatch {
        allocation_mode: Some(AllocationMode::Shaped),
        bandwidth_mbps: Some(None),
        ..VmPatch::default()
    })?;
    Ok(())
}

fn lifecycle_demo(lab: &Lab, client: &Client) -> anyhow::Result<()> {
    let (Some(first), Some(last), Some(tor4)) = (
        lab.config().vms.first(),
        lab.config().vms.last(),
        lab.tor_addrs().iter().find(|a| a.addr.is_ipv4()).copied(),
    ) else {
        return Ok(());
    };
    let (name, path) = (&last.name, format!("/v1/vms/{}", last.name));
    heading(&format!(
        "runtime changes while {} sends 5000 datagrams/s: {name} removed, added back, changed, its port recreated",
        first.name
    ));
    let seen: Vec<Event> = block_on(client.get("/v1/events"))?;
    let since = seen.last().map_or(0, |e| e.id);
    let (rx, sender) = stream_to_tor(lab, &first.name, tor4.addr, 5.0)?;
    std::thread::sleep(Duration::from_millis(500));

    println!("xnic vm del {name}");
    let out: ChangeView = block_on(client.delete(&path))?;
    super::vm::print_change(&out);
    std::thread::sleep(Duration::from_millis(300));

    println!(
        "xnic vm add {name} --port {} --mac {} ...",
        last.port,
        last.macs.join(" --mac ")
    );
    let out: VmChanged = block_on(client.post_json("/v1/vms", last))?;
    super::vm::print_change(&out.change);
    std::thread::sleep(Duration::from_millis(300));

    println!("xnic vm set {name} --bandwidth-mbps 50 --priority 3");
    let change = VmPatch {
        bandwidth_mbps: Some(Some(50.0)),
        priority: Some(3),
        ..VmPatch::default()
    };
    let out: VmChanged = block_on(client.send_json(Method::PATCH, &path, &change))?;
    super::vm::print_change(&out.change);

    // A VM reboot: the hypervisor deletes its tap and creates a new one with the same name.
    let before: VmView = block_on(client.get(&path))?;
    println!(
        "ip -n {} link del {}   (the VM reboots)",
        lab.host_ns(),
        last.port
    );
    lab.unplug(name)?;
    std::thread::sleep(Duration::from_millis(300));
    let gone: VmView = block_on(client.get(&path))?;
    println!("{name}: port {} is {}", gone.port, gone.port_state);
    println!("... and its port is created again (a new ifindex)");
    lab.plug(name)?;
    let plugged = Instant::now();
    let mut back: VmView = block_on(client.get(&path))?;
    while back.port_state != "attached" && plugged.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
        back = block_on(client.get(&path))?;
    }
    println!(
        "{name}: port {} is {} again after {:.0} ms, in slot {} (slot {} before: same counters, MACs, team and RSS state)",
        back.port,
        back.port_state,
        plugged.elapsed().as_secs_f64() * 1e3,
        back.slot,
        before.slot
    );
    print!("{}", table::vm(&back));

    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the traffic thread panicked"))??;
    let got = rx.stop()?;
    println!("{} meanwhile: {}", first.name, delivery(&sent, &got));
    let events: Vec<Event> = block_on(client.get(&format!("/v1/events?since={since}")))?;
    let events: Vec<Event> = events
        .into_iter()
        .filter(|e| ["vm", "port", "config"].contains(&e.feature.as_str()))
        .collect();
    println!("events (`xnic events`):");
    print!("{}", table::events(&events, true));
    Ok(())
}

/// The routed lab beside the switched one: the host routes, filters and NATs with nftables and
/// conntrack and reaches a remote network through VXLAN; xnic's fast path takes the
/// connections over and hands them back.
fn flow_offload_demo(instance: &str) -> anyhow::Result<()> {
    use crate::{
        api::types::{FlowRequest, FlowRequestView, FlowStatsView, FlowView},
        lab::{
            routed::{REMOTE_IP, RoutedLab, SERVER_IP, VIRTUAL_IP},
            traffic::iperf3,
        },
    };
    heading(
        "flow offload: a routed host (nftables ct filter, masquerade, a DNAT virtual IP, VXLAN \
         to the tor), its connections moved into XDP",
    );
    let name = format!("{instance}-routed");
    let lab = RoutedLab::new(&name, 2);
    let path = std::env::temp_dir().join(format!("{name}.toml"));
    let run = || -> anyhow::Result<()> {
        lab.up()?;
        std::fs::write(
            &path,
            lab.config(&name, "select = \"all\"\nperiod_ms = 100"),
        )?;
        let exe = std::env::current_exe().context("cannot find the xnic executable")?;
        let daemon = DaemonProcess::start(&exe, &path, &name, Some(DAEMON_PREFIX), READY_TIMEOUT)?;
        let client = Client::new(&name);
        let (vm0, vm1) = (lab.vm_ns(&lab.vms[0]), lab.vm_ns(&lab.vms[1]));
        // A UDP stream in through the virtual IP, one out through the tunnel (both answered,
        // so conntrack confirms them), and TCP out masqueraded.
        let rx = Receiver::start_echo(Some(&vm0), "0.0.0.0:7000".parse()?)?;
        let rx1 = Receiver::start_echo(Some(&vm1), "0.0.0.0:7000".parse()?)?;
        let tunnel_rx = Receiver::start_echo(Some(&lab.tor_ns()), "0.0.0.0:7001".parse()?)?;
        let udp = |from: String, to: String| {
            std::thread::spawn(move || {
                send_udp(
                    Some(&from),
                    UdpStream {
                        dst: to.parse().expect("a socket address"),
                        flows: 1,
                        pps: 2000,
                        duration: Duration::from_secs(8),
                        payload: 200,
                        zipf: None,
                    },
                )
            })
        };
        let in_vip = udp(lab.tor_ns(), format!("{VIRTUAL_IP}:7000"));
        let out_tunnel = udp(vm1.clone(), format!("{REMOTE_IP}:7001"));
        let tcp = {
            let (tor, vm0) = (lab.tor_ns(), vm0.clone());
            std::thread::spawn(move || iperf3(&tor, SERVER_IP, &vm0, 4))
        };
        // Mid-transfer: the connections on the fast path, their counters growing.
        std::thread::sleep(Duration::from_secs(2));
        let flows: Vec<FlowView> = block_on(client.get("/v1/flows"))?;
        println!("xnic flows (iperf3 running):");
        print!("{}", table::flows(&flows));
        let tcp = tcp
            .join()
            .map_err(|_| anyhow::anyhow!("iperf3 panicked"))??;
        println!(
            "iperf3 vm0 → {SERVER_IP} (masqueraded): {:.0} Mbit/s, {} retransmits",
            tcp.bits_per_second / 1e6,
            tcp.retransmits
        );
        // Its FIN sent it back; the hand-back follows once it drained.
        std::thread::sleep(Duration::from_millis(500));
        let stats: FlowStatsView = block_on(client.get("/v1/flows/stats"))?;
        println!(
            "iperf3's connections closed: demoted at FIN {}, handed back to conntrack {}",
            stats.demoted.get("fin").copied().unwrap_or(0),
            stats.handed_back
        );
        let listed = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.host_ns(),
                "conntrack",
                "-L",
                "-o",
                "id",
            ])
            .output()?;
        println!("conntrack -L -o id on the host:");
        print!("{}", String::from_utf8_lossy(&listed.stdout));
        let moved: FlowRequestView = block_on(client.post_json(
            "/v1/flows/demote",
            &FlowRequest {
                all: true,
                ..FlowRequest::default()
            },
        ))?;
        println!(
            "xnic flows demote --all: {} flow(s) sent back to the slow path",
            moved.matched
        );
        let sent = [
            in_vip
                .join()
                .map_err(|_| anyhow::anyhow!("sender panicked"))??,
            out_tunnel
                .join()
                .map_err(|_| anyhow::anyhow!("sender panicked"))??,
        ];
        let got_in = rx.stop()?.merged(&rx1.stop()?);
        println!(
            "UDP in through the virtual IP: {}",
            delivery(&sent[0], &got_in)
        );
        println!(
            "UDP out through the tunnel: {}",
            delivery(&sent[1], &tunnel_rx.stop()?)
        );
        let stats: FlowStatsView = block_on(client.get("/v1/flows/stats"))?;
        print!("{}", table::flow_stats(&stats));
        println!(
            "conntrack INVALID on the host (the ruleset's counter): {}",
            lab.invalid_count()?
        );
        daemon.stop()?;
        Ok(())
    };
    let result = run();
    let _ = crate::dataplane::teardown(&name);
    lab.down();
    let _ = std::fs::remove_file(&path);
    result
}
