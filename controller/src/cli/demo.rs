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
        client::Client,
        types::{StatsView, StatusView, VmView},
    },
    lab::{
        Lab, TOR_UDP_PORT,
        daemon::DaemonProcess,
        traffic::{Receiver, UdpStream, send_udp},
    },
};

const DAEMON_PREFIX: &str = "  daemon │ ";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn heading(text: &str) {
    println!("\n━━ {text}");
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic lab demo")?;
    let (lab, config_path) = resolve(&args.config)?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot handle signals")?;
    }
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs(s));

    heading("building the lab");
    lab.up()?;
    println!("namespaces: {}", lab.namespaces().join(", "));

    let mut daemon = None;
    let result = demo(&lab, &config_path, &stop, deadline, &mut daemon);
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

fn demo(
    lab: &Lab,
    config_path: &std::path::Path,
    stop: &AtomicBool,
    deadline: Option<Instant>,
    running: &mut Option<DaemonProcess>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the xnic executable")?;
    let instance = lab.config().instance.clone();
    let client = Client::new(&instance);
    let start = || {
        DaemonProcess::start(
            &exe,
            config_path,
            &instance,
            Some(DAEMON_PREFIX),
            READY_TIMEOUT,
        )
    };

    heading("starting the daemon");
    *running = Some(start()?);
    let status: StatusView = block_on(client.get("/v1/status"))?;
    print!("{}", table::status(&status));

    heading("traffic: ping between VMs and to the tor, UDP from every VM, iperf3 vm0 → tor");
    let report = lab.drive(Duration::from_secs(2), Some(2))?;
    println!("{}", report.summary());
    let stats: StatsView = block_on(client.get("/v1/stats"))?;
    print!("{}", table::stats(&stats));

    if let (Some(vm0), Some(tor4)) = (
        lab.config().vms.first(),
        lab.tor_addrs().iter().find(|a| a.addr.is_ipv4()),
    ) {
        heading("crash test: SIGKILL the daemon under traffic, start a new one");
        let before: VmView = block_on(client.get(&format!("/v1/vms/{}", vm0.name)))?;
        let sink = std::net::SocketAddr::new(tor4.addr, TOR_UDP_PORT);
        let rx = Receiver::start(Some(&lab.tor_ns()), sink)?;
        let ns = lab.vm_ns(&vm0.name);
        let sender = std::thread::spawn(move || {
            send_udp(
                Some(&ns),
                UdpStream {
                    dst: sink,
                    flows: 8,
                    pps: 5000,
                    duration: Duration::from_secs(4),
                    payload: 100,
                    zipf: None,
                },
            )
        });
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

    heading("steady traffic (Ctrl-C to stop)");
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let report = lab.drive(Duration::from_secs(1), None)?;
        let vms: Vec<VmView> = block_on(client.get("/v1/vms"))?;
        println!("{}", report.summary());
        print!("{}", table::vms(&vms));
        for _ in 0..20 {
            if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}
