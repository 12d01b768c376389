//! Live part of the `rss` benchmark, in a lab on this machine's CPUs:
//!
//! 1. Rebalancing: skewed traffic (64 Zipf flows) to a VM on a shared engine; per-CPU load
//!    the initial table gives versus the table after the policy rebalanced it, both from the
//!    same measured bucket loads.
//! 2. Delivery: trafgen floods the VM with 64-byte UDP over thousands of flows; datagrams per
//!    second that reach the VM's UDP layer with xnic steering, versus the kernel alone with RPS
//!    (`rps_cpus` on the same ports), with a minimal XDP_PASS program on the uplink plus RPS
//!    (what any XDP program on a veth costs), and without RPS, in the same run.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use xnic::{
    api::{
        client::Client,
        types::{RssBucketView, RssEvent, RssSetRequest, RssStatusView, RssVmView},
    },
    cli::block_on,
    config::default_lab_toml,
    dataplane::baseline::BaselineProgram,
    lab::{
        Lab, TOR_MAC,
        traffic::{Receiver, UdpStream, send_udp},
    },
    policy::rss::spread,
};

use crate::{
    flag,
    live::{LiveLab, udp_delivered, with_baseline},
    report::{Better, Line, Report, Series},
};

/// Now as Unix milliseconds, the clock the daemon's events carry.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const PORT: u16 = 9000;

/// Pins `vm` to `engine` through the API.
fn place(client: &Client, vm: &str, engine: &str) -> anyhow::Result<()> {
    let _: RssVmView = block_on(client.post_json(
        &format!("/v1/rss/vms/{vm}"),
        &RssSetRequest {
            state: Some(engine.to_string()),
            ..RssSetRequest::default()
        },
    ))?;
    Ok(())
}

fn set_rps(ns: &str, dev: &str, mask: &str) -> anyhow::Result<()> {
    let script =
        format!("for q in /sys/class/net/{dev}/queues/rx-*/rps_cpus; do echo {mask} > $q; done");
    let st = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", &script])
        .status()?;
    if !st.success() {
        bail!("cannot set rps_cpus on {dev} in {ns}");
    }
    Ok(())
}

/// What trafgen is asked to send by default, in frames per second (`--offered`). Unpaced,
/// trafgen starves everything else on a 2-CPU machine.
const OFFERED_PPS: u64 = 1_000_000;

/// Datagrams per second reaching `vm`'s UDP layer while trafgen offers `offered` frames per
/// second for `secs`.
fn delivered_pps(lab: &Lab, vm: &str, offered: u64, secs: f64) -> anyhow::Result<f64> {
    let (ns, addr) = lab.endpoint(vm)?;
    let vm_mac = lab
        .config()
        .vm(vm)
        .and_then(|v| v.mac_addrs().first().copied())
        .context("VM without a MAC")?;
    let tor = lab.tor_ns();
    let tor_ip = lab
        .tor_addrs()
        .iter()
        .map(|n| n.addr)
        .find(|a| a.is_ipv4())
        .context("tor without IPv4")?;
    let uplink = &lab.config().uplinks[0].name;
    let cfg = std::env::temp_dir().join(format!("xnic-rss-{}.trafgen", std::process::id()));
    // Random source ports: thousands of flows. UDP checksum 0 (none), IP checksum computed.
    std::fs::write(
        &cfg,
        format!(
            "{{\n  eth(da={vm_mac}, sa={TOR_MAC}, type=0x0800),\n  ipv4(saddr={tor_ip}, daddr={addr}, ttl=64),\n  udp(sp=drnd(), dp={PORT}, csum=0),\n  fill(0x00, 18)\n}}\n"
        ),
    )?;
    // A socket nobody reads: a datagram counts when the VM's UDP layer takes it, whether
    // it is queued or refused by the full buffer, so where the scheduler puts a reader
    // cannot change the figure.
    let sink = SocketAddr::new(addr, PORT);
    let socket = xnic::netns::run_in(&ns, move || {
        std::net::UdpSocket::bind(sink).with_context(|| format!("cannot bind {sink}"))
    })?;
    let generator = crate::live::trafgen(&tor, &xnic::lab::tor_port(uplink), &cfg, Some(offered))?;
    std::thread::sleep(Duration::from_millis(500));
    let (c0, t0) = (udp_delivered(&ns)?, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (c1, t1) = (udp_delivered(&ns)?, Instant::now());
    generator.kill();
    drop(socket);
    let _ = std::fs::remove_file(&cfg);
    Ok((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
}

/// One rebalancing trial's outcome.
struct Trial {
    /// Each CPU's load (frames/s) over the trial, as the daemon measured it.
    over_time: Vec<Line>,
    /// When buckets moved (seconds from the start).
    moves: Vec<f64>,
    /// Frames per CPU of the engine under the initial and the final table.
    before: Vec<f64>,
    after: Vec<f64>,
    moved: usize,
    table_len: usize,
    sent: u64,
    send_errors: u64,
    received: u64,
    reordered: u64,
    duplicates: u64,
    /// Where lost datagrams went: refused by the VM's full socket buffer, dropped by a full
    /// CPU-map queue; and flows moved before their old CPU drained (which may reorder).
    rcvbuf_errors: u64,
    queue_drops: u64,
    forced_switches: u64,
    drained_switches: u64,
}

/// The dataplane's steering counters and CPU-queue drops, for differences.
fn steering(client: &Client) -> anyhow::Result<(u64, u64, u64)> {
    let status: RssStatusView = block_on(client.get("/v1/rss"))?;
    let stats: xnic::api::types::StatsView = block_on(client.get("/v1/stats"))?;
    let get = |k: &str| status.steering.get(k).copied().unwrap_or(0);
    Ok((
        stats.cpu_queue_dropped.iter().sum(),
        get("switch_forced"),
        get("switch_drained"),
    ))
}

/// A fresh dataplane (new hash seed), vm0 placed on the first shared engine, skewed traffic
/// while the policy rebalances; per-CPU loads of the initial and the final table from the
/// same measured bucket loads.
fn rebalance_trial(live: &LiveLab, client: &Client, secs: f64) -> anyhow::Result<Trial> {
    let daemon = live.start_daemon()?;
    let status: RssStatusView = block_on(client.get("/v1/rss"))?;
    let engine = status.engines.first().context("no engines")?.clone();
    place(client, "vm0", &engine.name)?;
    let buckets_path = format!("/v1/rss/engines/{}/buckets", engine.name);
    let initial_table: Vec<u32> = {
        let b: Vec<RssBucketView> = block_on(client.get(&buckets_path))?;
        b.iter().map(|b| b.cpu).collect()
    };
    let (ns, addr) = live.lab.endpoint("vm0")?;
    let sink = SocketAddr::new(addr, PORT);
    let rx = Receiver::start(Some(&ns), sink)?;
    let (_, rcvbuf0) = crate::live::udp_counters(&ns)?;
    let (queue0, forced0, drained0) = steering(client)?;
    let started_unix_ms = unix_ms();
    // The engine's per-CPU load as the daemon measures it, every 100 ms, while it rebalances.
    let load = || -> anyhow::Result<Vec<(u32, f64)>> {
        let s: RssStatusView = block_on(Client::new(&live.instance).get("/v1/rss"))?;
        s.engines
            .into_iter()
            .find(|e| e.name == engine.name)
            .map(|e| e.cpu_pps)
            .context("the engine went away")
    };
    let (sent, loads) = crate::live::sampled(Duration::from_millis(100), load, || {
        send_udp(
            Some(&live.lab.tor_ns()),
            UdpStream {
                dst: sink,
                flows: 64,
                pps: 30_000,
                duration: Duration::from_secs_f64(secs * 2.0),
                payload: 64,
                zipf: Some(1.1),
            },
        )
    });
    let sent = sent?;
    let events: Vec<RssEvent> = block_on(client.get("/v1/rss/events"))?;
    let moves: Vec<f64> = events
        .iter()
        .filter(|e| e.kind == "bucket_move" && e.unix_ms >= started_unix_ms)
        .map(|e| (e.unix_ms - started_unix_ms) as f64 / 1000.0)
        .collect();
    let got = rx.stop()?;
    let (_, rcvbuf1) = crate::live::udp_counters(&ns)?;
    let (queue1, forced1, drained1) = steering(client)?;
    let buckets: Vec<RssBucketView> = block_on(client.get(&buckets_path))?;
    live.stop_dataplane(daemon)?;
    let frames: Vec<f64> = buckets
        .iter()
        .map(|b| b.frames_per_cpu.iter().sum::<u64>() as f64)
        .collect();
    let per_cpu = |table: &[u32]| -> Vec<f64> {
        engine
            .cpus
            .iter()
            .map(|c| {
                table
                    .iter()
                    .zip(&frames)
                    .filter(|(t, _)| *t == c)
                    .map(|(_, f)| f)
                    .sum::<f64>()
            })
            .collect()
    };
    let final_table: Vec<u32> = buckets.iter().map(|b| b.cpu).collect();
    let over_time = engine
        .cpus
        .iter()
        .map(|cpu| Line {
            label: format!("CPU {cpu}"),
            points: loads
                .iter()
                .filter_map(|(t, l)| l.iter().find(|(c, _)| c == cpu).map(|(_, pps)| (*t, *pps)))
                .collect(),
        })
        .collect();
    Ok(Trial {
        over_time,
        moves,
        before: per_cpu(&initial_table),
        after: per_cpu(&final_table),
        moved: initial_table
            .iter()
            .zip(&final_table)
            .filter(|(a, b)| a != b)
            .count(),
        table_len: final_table.len(),
        sent: sent.sent,
        send_errors: sent.send_errors,
        received: got.received,
        reordered: got.reordered,
        duplicates: got.duplicates,
        rcvbuf_errors: rcvbuf1 - rcvbuf0,
        queue_drops: queue1 - queue0,
        forced_switches: forced1 - forced0,
        drained_switches: drained1 - drained0,
    })
}

pub fn run(
    args: &[String],
    part: &dyn Fn(&str) -> bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    let id = std::process::id();
    let instance = format!("xbrss{id}");
    let text = default_lab_toml(&instance, &format!("xbr{id}"), 1, false);
    // Hand placement only: the VM stays where the benchmark puts it.
    let start = text
        .find("[rss.policy]")
        .context("lab config has [rss.policy]")?;
    let end = start + text[start..].find("[[rss.engine]]").context("engines")?;
    let text = format!(
        "{}[rss.policy]\nno_rss_high_pps = 1e12\nvm_low_pps = 0.0\n\n{}",
        &text[..start],
        &text[end..]
    );
    let live = LiveLab::up(&instance, &text)?;
    let client = Client::new(&instance);

    if part("rebalancing") {
        rebalancing(args, &live, &client, report)?;
    }
    if part("delivery") {
        delivery(args, &live, &client, report)?;
    }
    Ok(())
}

/// Part 1: rebalancing under skewed traffic. Which buckets the elephants land in depends on
/// the hash seed a fresh dataplane draws, so each trial starts from scratch and medians are
/// reported.
fn rebalancing(
    args: &[String],
    live: &LiveLab,
    client: &Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let secs: f64 = flag(args, "--secs", 4.0)?;
    let trials: usize = flag(args, "--trials", 3)?.max(1);
    let mut results = Vec::new();
    for trial in 0..trials {
        eprintln!("live: rebalancing under skew, trial {}/{trials}", trial + 1);
        let r = rebalance_trial(live, client, secs)?;
        eprintln!(
            "  per-CPU frames: initial table {:?}, rebalanced {:?} ({} buckets moved); {} sent ({} send errors), {} received, {} reordered, {} duplicated; refused by the VM's socket buffer {}, dropped at full CPU queues {}; flows moved after draining {}, forced {}",
            r.before,
            r.after,
            r.moved,
            r.sent,
            r.send_errors,
            r.received,
            r.reordered,
            r.duplicates,
            r.rcvbuf_errors,
            r.queue_drops,
            r.drained_switches,
            r.forced_switches
        );
        results.push(r);
    }
    let first = &results[0];
    let mut marks: Vec<(f64, String)> = Vec::new();
    if let (Some(a), Some(b)) = (first.moves.first(), first.moves.last()) {
        marks.push((*a, "first bucket move".into()));
        if b > a {
            marks.push((*b, format!("last of {} moves", first.moves.len())));
        }
    }
    report.series.push(Series {
        title: "RSS rebalancing: per-CPU load of one shared engine, 64 Zipf(1.1) flows at 30k pps (trial 1)".into(),
        x_label: "seconds".into(),
        y_label: "frames/s steered to the CPU".into(),
        lines: first.over_time.clone(),
        marks,
    });
    let median_of = |f: &dyn Fn(&Trial) -> f64| {
        crate::report::median(results.iter().map(f).collect::<Vec<_>>())
    };
    let mm = |l: &[f64]| {
        l.iter().copied().fold(0.0, f64::max) / (l.iter().sum::<f64>() / l.len() as f64)
    };
    let scenario = format!(
        "live, {} CPUs of one shared engine, 64 Zipf(1.1) flows at 30k pps, median of {trials} trials with fresh hash seeds: table after rebalancing",
        results[0].before.len()
    );
    report.add(
        "per-CPU load max/mean",
        &scenario,
        "ratio",
        Better::Lower,
        median_of(&|r| mm(&r.after)),
        &[("initial table (static RSS)", median_of(&|r| mm(&r.before)))],
    );
    report.add(
        "per-CPU load (max−min)/min",
        &scenario,
        "ratio",
        Better::Lower,
        median_of(&|r| spread(&r.after)),
        &[(
            "initial table (static RSS)",
            median_of(&|r| spread(&r.before)),
        )],
    );
    let total = |f: &dyn Fn(&Trial) -> u64| results.iter().map(f).sum::<u64>() as f64;
    let moving = format!(
        "live, 64 Zipf(1.1) flows at 30k pps while buckets move, total over {trials} trials"
    );
    report.add(
        "datagrams lost during rebalancing",
        &moving,
        "datagrams",
        Better::Lower,
        total(&|r| r.sent.saturating_sub(r.received)),
        &[],
    );
    report.add(
        "datagrams reordered during rebalancing",
        &moving,
        "datagrams",
        Better::Lower,
        total(&|r| r.reordered),
        &[],
    );
    report.notes.push(format!(
        "Where lost datagrams went, over the {trials} trials: {} refused by the receiving VM's full socket buffer (its UDP layer's RcvbufErrors), {} dropped at full CPU-map queues (xnic's queue-drop counters), {} not sent (send errors); {} duplicated. Flows that changed CPU: {} after their old queue drained, {} forced after 5 ms without draining (the only moves that can reorder).",
        total(&|r| r.rcvbuf_errors),
        total(&|r| r.queue_drops),
        total(&|r| r.send_errors),
        total(&|r| r.duplicates),
        total(&|r| r.drained_switches),
        total(&|r| r.forced_switches),
    ));
    report.notes.push(format!(
        "Live rebalancing: buckets moved per trial {:?} of {}; per-CPU loads from the same measured bucket loads under the initial and the final table.",
        results.iter().map(|r| r.moved).collect::<Vec<_>>(),
        results[0].table_len
    ));

    Ok(())
}

/// Part 2: delivery, xnic steering against the kernel with and without RPS. The VM gets the
/// engine whose CPUs the generator does not sit on (trafgen pins itself to CPU 0, the last
/// engine is the dedicated one on the last CPU), and RPS gets the same CPUs.
fn delivery(
    args: &[String],
    live: &LiveLab,
    client: &Client,
    report: &mut Report,
) -> anyhow::Result<()> {
    let secs: f64 = flag(args, "--secs", 4.0)?;
    eprintln!("live: delivered datagrams per second");
    let (target, cpus) = {
        let daemon = live.start_daemon()?;
        let status: RssStatusView = block_on(client.get("/v1/rss"))?;
        let all: Vec<u32> = status.engines.iter().flat_map(|e| e.cpus.clone()).collect();
        drop(daemon);
        (status.engines.last().context("no engines")?.clone(), all)
    };
    // Each configuration `rounds` times, interleaved with the others; medians reported.
    let rounds: usize = flag(args, "--rounds", 3)?;
    let offered: u64 = flag(args, "--offered", OFFERED_PPS)?;
    let host = live.lab.host_ns().to_string();
    let (ns, _) = live.lab.endpoint("vm0")?;
    let uplink = live.lab.config().uplinks[0].name.clone();
    let mask = |cpus: &[u32]| format!("{:x}", cpus.iter().fold(0u64, |m, c| m | 1 << c));
    // (label, RPS CPUs, a minimal XDP_PASS program on the uplink): the last isolates what
    // running any XDP program on a veth costs (the frame is copied into an XDP buffer on the
    // receiving CPU) from what steering costs.
    let kernel: [(&str, Vec<u32>, bool); 4] = [
        (
            "kernel with RPS to the same CPUs",
            target.cpus.clone(),
            false,
        ),
        (
            "minimal XDP_PASS on the uplink + RPS to the same CPUs",
            target.cpus.clone(),
            true,
        ),
        ("kernel with RPS to all CPUs", cpus.clone(), false),
        ("kernel without RPS", Vec::new(), false),
    ];
    let mut xnic_runs = Vec::new();
    let mut kernel_runs = vec![Vec::new(); kernel.len()];
    let mut xnic_daemon = None;
    for round in 0..rounds {
        // xnic: steering on (a daemon adopting the pinned dataplane after the first round).
        if xnic_daemon.is_none() {
            xnic_daemon = Some(live.start_daemon()?);
            place(client, "vm0", &target.name)?;
        }
        set_rps(&host, &uplink, "0")?;
        set_rps(&ns, xnic::lab::VM_IFNAME, "0")?;
        let pps = delivered_pps(&live.lab, "vm0", offered, secs)?;
        eprintln!(
            "  round {}: xnic steering ({}, CPUs {:?}): {pps:.0}/s",
            round + 1,
            target.name,
            target.cpus
        );
        xnic_runs.push(pps);
        // The kernel alone: remove the dataplane.
        if let Some(d) = xnic_daemon.take() {
            live.stop_dataplane(d)?;
        }
        live.bridge_uplink(&uplink, true)?;
        for (i, (label, set, xdp_pass)) in kernel.iter().enumerate() {
            set_rps(&host, &uplink, &mask(set))?;
            set_rps(&ns, xnic::lab::VM_IFNAME, &mask(set))?;
            let measure = || delivered_pps(&live.lab, "vm0", offered, secs);
            let pps = if *xdp_pass {
                with_baseline(&host, &[uplink.as_str()], BaselineProgram::Pass, measure)?
            } else {
                measure()?
            };
            eprintln!(
                "  round {}: {label} (rps_cpus={}): {pps:.0}/s",
                round + 1,
                mask(set)
            );
            kernel_runs[i].push(pps);
        }
        live.bridge_uplink(&uplink, false)?;
    }
    let xnic_pps = crate::report::median(xnic_runs);
    let rps: Vec<(&str, f64)> = kernel
        .iter()
        .zip(kernel_runs)
        .map(|((l, _, _), runs)| (*l, crate::report::median(runs)))
        .collect();
    report.notes.push(format!(
        "Live delivery: trafgen offers {offered} frames/s on one CPU; a datagram counts when the VM's UDP layer takes it (queued or refused by a full socket buffer). Any XDP program on a veth makes the receiving CPU copy each frame into an XDP buffer, so the row with a minimal XDP_PASS program plus RPS is the limit of the XDP path here; plain RPS avoids that copy. The receiving CPU is the bottleneck of every row (busy ~98% of the time, by `perf -C`). On it, xnic's path runs the CPU-map thread (about a quarter of its time: the CPU-map program, then the redirect into the VM's veth) and the VM veth's NAPI, which builds each skb and passes it through GRO (veth takes redirected frames only through NAPI, and a virtio guest does GRO too) before the VM's IP and UDP; the bridged baselines' frames reach the VM's veth as skbs that veth hands to the backlog without GRO. The generator's CPU hands over one frame per NAPI poll, so each steered frame also ends a poll with a CPU-map flush that wakes the CPU-map thread; a NIC that delivers frames in batches pays that once per batch."
    ));
    report.add(
        "datagrams reaching the VM's UDP layer per second",
        &format!("live, trafgen (offered {offered} pps, 64 B UDP, random source ports) to one VM steered to CPUs {:?}", target.cpus),
        "datagrams/s",
        Better::Higher,
        xnic_pps,
        &rps,
    );
    Ok(())
}
