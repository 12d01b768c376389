//! The offload benchmark's live part, on the routed lab with one VM: the host routes the VM's
//! traffic to the tor's server, filters it on conntrack's state and masquerades it, and each
//! scenario does that same job for the same traffic in turn:
//!
//! - the slow path: the host's kernel alone (nftables conntrack, filter and masquerade);
//! - xnic with the flow offloaded: promoted by the daemon, both directions on the fast path;
//! - Open vSwitch's userspace datapath with `ct(commit,nat(src=...))` on the same two ports
//!   (the kernel's forwarding and ruleset off meanwhile, so nothing is forwarded twice);
//! - the minimal redirect program on the VM's port, every frame out of the uplink untouched:
//!   the limit of any XDP forwarding path here.
//!
//! UDP: trafgen in the VM sends one flow of 64-byte-payload datagrams, unpaced; frames per
//! second are those the tor's end of the uplink sees, counted by XDP_DROP there so that
//! receiving costs the same in every scenario. TCP: iperf3 from the VM to the tor's server,
//! masqueraded, the receiver's own rate after the first seconds (promotion happens within
//! the first few hundred milliseconds).

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use xnic::{
    api::{
        client::Client,
        types::{FlowStatsView, FlowView},
    },
    cli::block_on,
    dataplane::baseline::BaselineProgram,
    lab::{
        daemon::DaemonProcess,
        ip,
        routed::{
            HOST_MAC, HOST_UPLINK_IP, NFT_TABLE, RoutedLab, SERVER_IP, TOR_MAC, TOR_UPLINK, UPLINK,
        },
        traffic::{Receiver, UdpStream, iperf3_streams, send_udp},
    },
};

use crate::{
    live::{self, proc_net_counter, with_baseline, with_redirect, xdp_received},
    ovs::{BRIDGE, Ovs},
    report::{Better, Line, Report, Series, median},
};

/// The measured UDP flow's ports (the masquerade keeps the source port: nothing else uses it).
const UDP_SPORT: u16 = 40000;
const UDP_DPORT: u16 = 9000;
/// The VM's interface inside its namespace.
const VM_DEV: &str = "eth0";
/// How long the daemon has to put the flow on the fast path before the round fails.
const OFFLOAD_WAIT: Duration = Duration::from_secs(15);
/// Promotion latency: flows measured one after the other, each its own destination port
/// (from `LATENCY_FIRST_PORT`), sent at `LATENCY_PPS` for `LATENCY_SECS`: the datagrams the
/// ruleset's counter saw, after the first (whose answer confirms the flow), over the rate.
const LATENCY_FLOWS: u16 = 40;
const LATENCY_FIRST_PORT: u16 = 9100;
const LATENCY_PPS: u64 = 10_000;
const LATENCY_SECS: f64 = 1.0;
/// The nft counter (and rule, first in the forward chain) that counts the measured flows'
/// datagrams on the slow path: the fast path never reaches nftables.
const LATENCY_COUNTER: &str = "xbench_slow";

/// iperf3's 100 ms intervals left out at the start of each TCP run: connection set-up,
/// slow start and, with xnic, promotion.
const TCP_WARMUP_INTERVALS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Datapath {
    Slow,
    Offloaded,
    Ovs,
    Redirect,
    Pass,
}

impl Datapath {
    fn label(self) -> &'static str {
        match self {
            Datapath::Slow => "slow path: nftables conntrack + masquerade",
            Datapath::Offloaded => "xnic, flow offloaded",
            Datapath::Ovs => "Open vSwitch userspace datapath, ct(commit,nat)",
            Datapath::Redirect => "minimal XDP redirect (no state, no rewrite)",
            Datapath::Pass => "minimal XDP_PASS on the host's two ports, slow path",
        }
    }
}

/// The `[flows]` section of the daemon's configuration unless a row needs another.
const FLOWS: &str = "select = \"all\"";

/// The lab and its daemon's files, removed however the run ends.
pub(crate) struct Bench {
    pub(crate) lab: RoutedLab,
    instance: String,
    config: PathBuf,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = xnic::dataplane::teardown(&self.instance);
        let _ = std::fs::remove_file(xnic::config::socket_path(&self.instance));
        self.lab.down();
        let _ = std::fs::remove_file(&self.config);
    }
}

impl Bench {
    pub(crate) fn up(instance: &str) -> anyhow::Result<Bench> {
        let lab = RoutedLab::new(instance, 1);
        let config = live::config_file(instance, "offload");
        std::fs::create_dir_all(xnic::RUN_DIR)?;
        let b = Bench {
            lab,
            instance: instance.to_string(),
            config,
        };
        b.lab.up()?;
        Ok(b)
    }

    pub(crate) fn vm_ns(&self) -> String {
        self.lab.vm_ns(&self.lab.vms[0])
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(&self.instance)
    }

    fn start_daemon(&self) -> anyhow::Result<DaemonProcess> {
        self.start_daemon_with(FLOWS)
    }

    /// The daemon, with `flows` as its configuration's `[flows]` section.
    pub(crate) fn start_daemon_with(&self, flows: &str) -> anyhow::Result<DaemonProcess> {
        std::fs::write(&self.config, self.lab.config(&self.instance, flows))?;
        live::start_daemon(&self.instance, &self.config)
    }

    /// Removes the dataplane and waits for `daemon` to exit.
    pub(crate) fn stop_daemon(&self, daemon: DaemonProcess) -> anyhow::Result<()> {
        live::stop_dataplane(&self.instance, daemon)
    }

    pub(crate) fn stats(&self) -> anyhow::Result<FlowStatsView> {
        block_on(self.client().get("/v1/flows/stats"))
    }

    /// Fast-path frames xnic has forwarded, both directions.
    fn forwarded(&self) -> anyhow::Result<u64> {
        Ok(self
            .stats()?
            .fast_path
            .get("forwarded")
            .copied()
            .unwrap_or(0))
    }

    /// Offloaded flows of `proto` whose original direction is on the fast path (trafgen's
    /// flow has no answers: its reply direction switches at its first packet, if ever).
    pub(crate) fn active(&self, proto: &str) -> anyhow::Result<usize> {
        let flows: Vec<FlowView> = block_on(self.client().get("/v1/flows"))?;
        Ok(flows
            .iter()
            .filter(|f| f.proto == proto && f.state == "active")
            .filter(|f| f.directions.first().is_some_and(|d| d.mode == "active"))
            .count())
    }

    /// One datagram each way between the VM's flow ports and the server, so that conntrack
    /// has seen the flow's reply (what makes UDP eligible for offload).
    fn confirm_udp(&self) -> anyhow::Result<()> {
        let vm_ip = self.lab.vms[0].ip.clone();
        let server: SocketAddr = format!("{SERVER_IP}:{UDP_DPORT}").parse()?;
        let at_server =
            xnic::netns::run_in(&self.lab.tor_ns(), move || Ok(UdpSocket::bind(server)?))?;
        let at_vm = xnic::netns::run_in(&self.vm_ns(), move || {
            Ok(UdpSocket::bind((vm_ip.as_str(), UDP_SPORT))?)
        })?;
        for s in [&at_server, &at_vm] {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
        }
        let mut buf = [0u8; 64];
        at_vm.send_to(b"hello", server)?;
        let (_, from) = at_server
            .recv_from(&mut buf)
            .context("the server got nothing from the VM")?;
        if from.port() != UDP_SPORT {
            bail!("the masquerade moved the flow's port to {from}");
        }
        at_server.send_to(b"back", from)?;
        at_vm
            .recv_from(&mut buf)
            .context("the VM got no answer from the server")?;
        Ok(())
    }

    /// The measured UDP flow for trafgen: the VM's frames to its gateway.
    fn trafgen_config(&self, path: &Path) -> anyhow::Result<()> {
        let vm = &self.lab.vms[0];
        std::fs::write(
            path,
            format!(
                "{{\n  eth(da={}, sa={}, type=0x0800),\n  ipv4(saddr={}, daddr={SERVER_IP}, ttl=64),\n  udp(sp={UDP_SPORT}, dp={UDP_DPORT}),\n  fill(0x00, 64)\n}}\n",
                vm.port_mac, vm.mac, vm.ip
            ),
        )?;
        Ok(())
    }

    /// Frames per second reaching the tor while trafgen runs for `secs` once `ready` has
    /// said the path is set up, and how much `probe` grew over the same time.
    fn udp_rate(
        &self,
        cfg: &Path,
        secs: f64,
        ready: &(dyn Fn() -> anyhow::Result<()> + Sync),
        probe: &(dyn Fn() -> anyhow::Result<u64> + Sync),
    ) -> anyhow::Result<(f64, u64, u64)> {
        let tor = self.lab.tor_ns();
        let vm = self.vm_ns();
        with_baseline(&tor, &[TOR_UPLINK], BaselineProgram::Drop, || {
            let generator = live::trafgen(&vm, VM_DEV, cfg, None)?;
            let measured = (|| {
                ready()?;
                std::thread::sleep(Duration::from_millis(500));
                let (c0, p0, t0) = (xdp_received(&tor, TOR_UPLINK)?, probe()?, Instant::now());
                std::thread::sleep(Duration::from_secs_f64(secs));
                let (c1, p1, t1) = (xdp_received(&tor, TOR_UPLINK)?, probe()?, Instant::now());
                Ok(((c1 - c0) as f64 / (t1 - t0).as_secs_f64(), c1 - c0, p1 - p0))
            })();
            generator.kill();
            measured
        })
    }

    /// Open vSwitch doing the host's job: NAT'd out of the uplink, the answers back in.
    fn ovs_up(&self) -> anyhow::Result<Ovs> {
        let host = self.lab.host_ns();
        self.kernel_forwarding(false)?;
        let ovs = Ovs::start(&host)?;
        let vm = &self.lab.vms[0];
        let port = vm.port.as_str();
        for dev in [port, UPLINK] {
            ovs.vsctl(&["add-port", BRIDGE, dev])?;
        }
        ovs.ofctl(&["del-flows", BRIDGE])?;
        for flow in [
            format!(
                "table=0,priority=10,ip,in_port={port},actions=ct(commit,zone=1,nat(src={HOST_UPLINK_IP}),table=1)"
            ),
            format!(
                "table=1,ip,in_port={port},actions=mod_dl_src:{HOST_MAC},mod_dl_dst:{TOR_MAC},dec_ttl,output:{UPLINK}"
            ),
            format!("table=0,priority=10,ip,in_port={UPLINK},actions=ct(zone=1,nat,table=2)"),
            format!(
                "table=2,ip,in_port={UPLINK},ct_state=+trk+est,actions=mod_dl_src:{},mod_dl_dst:{},dec_ttl,output:{port}",
                vm.port_mac, vm.mac
            ),
            "table=0,priority=0,actions=drop".to_string(),
        ] {
            ovs.ofctl(&["add-flow", BRIDGE, &flow])?;
        }
        Ok(ovs)
    }

    /// The host's own routing and ruleset on, or off while another datapath does their job
    /// (its conntrack entries go too, so the next scenario starts from the same state).
    pub(crate) fn kernel_forwarding(&self, on: bool) -> anyhow::Result<()> {
        let host = self.lab.host_ns();
        let sh = |cmd: &str| {
            ip(&["netns", "exec", &host, "sh", "-c", cmd])
                .with_context(|| format!("in {host}: {cmd}"))
        };
        if on {
            sh("sysctl -qw net.ipv4.ip_forward=1")?;
            self.lab.load_ruleset()
        } else {
            sh("sysctl -qw net.ipv4.ip_forward=0 && nft flush ruleset")?;
            sh("conntrack -F 2>/dev/null || true")
        }
    }

    /// One UDP round of `path`: frames/s, and for xnic the share of them its fast path carried.
    fn udp_round(&self, path: Datapath, cfg: &Path, secs: f64) -> anyhow::Result<(f64, f64)> {
        let none = || Ok(());
        let zero = || Ok(0);
        match path {
            Datapath::Slow => {
                self.confirm_udp()?;
                let (pps, _, _) = self.udp_rate(cfg, secs, &none, &zero)?;
                Ok((pps, 0.0))
            }
            Datapath::Offloaded => {
                let daemon = self.start_daemon()?;
                let measured = (|| {
                    self.confirm_udp()?;
                    let ready = || {
                        let deadline = Instant::now() + OFFLOAD_WAIT;
                        while self.active("udp")? == 0 {
                            if Instant::now() > deadline {
                                bail!(
                                    "the UDP flow was not offloaded within {OFFLOAD_WAIT:?}: {:?}",
                                    self.stats()?
                                );
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Ok(())
                    };
                    let (pps, frames, fast) =
                        self.udp_rate(cfg, secs, &ready, &|| self.forwarded())?;
                    Ok((pps, fast as f64 / frames.max(1) as f64))
                })();
                self.stop_daemon(daemon)?;
                measured
            }
            Datapath::Ovs => {
                let ovs = self.ovs_up()?;
                let measured = (|| {
                    self.confirm_udp()?;
                    let (pps, _, _) = self.udp_rate(cfg, secs, &none, &zero)?;
                    Ok((pps, 0.0))
                })();
                drop(ovs);
                self.kernel_forwarding(true)?;
                measured
            }
            Datapath::Redirect => {
                let host = self.lab.host_ns();
                let port = self.lab.vms[0].port.clone();
                with_redirect(&host, &port, UPLINK, || {
                    let (pps, _, _) = self.udp_rate(cfg, secs, &none, &zero)?;
                    Ok((pps, 0.0))
                })
            }
            Datapath::Pass => {
                self.confirm_udp()?;
                let ports = [self.lab.vms[0].port.as_str(), UPLINK];
                with_baseline(&self.lab.host_ns(), &ports, BaselineProgram::Pass, || {
                    let (pps, _, _) = self.udp_rate(cfg, secs, &none, &zero)?;
                    Ok((pps, 0.0))
                })
            }
        }
    }

    /// How long each of [`LATENCY_FLOWS`] UDP flows stayed on the slow path after conntrack
    /// confirmed it, milliseconds: counted by the ruleset itself, which the fast path never
    /// reaches.
    fn promotion_latencies(&self) -> anyhow::Result<Vec<f64>> {
        let host = self.lab.host_ns();
        let nft = |cmd: &str| {
            ip(&["netns", "exec", &host, "sh", "-c", cmd])
                .with_context(|| format!("in {host}: {cmd}"))
        };
        let last = LATENCY_FIRST_PORT + LATENCY_FLOWS - 1;
        // Before the daemon starts: a ruleset change would send every flow back.
        nft(&format!(
            "nft add counter inet {NFT_TABLE} {LATENCY_COUNTER} && nft insert rule inet {NFT_TABLE} forward udp dport {LATENCY_FIRST_PORT}-{last} counter name {LATENCY_COUNTER}"
        ))?;
        let slow_count = || self.lab.counter(LATENCY_COUNTER);
        let daemon = self.start_daemon()?;
        let measured = (|| {
            let mut latencies = Vec::new();
            for port in LATENCY_FIRST_PORT..=last {
                let dst: SocketAddr = format!("{SERVER_IP}:{port}").parse()?;
                let echo = Receiver::start_echo(Some(&self.lab.tor_ns()), dst)?;
                let before = slow_count()?;
                let sent = send_udp(
                    Some(&self.vm_ns()),
                    UdpStream {
                        dst,
                        flows: 1,
                        pps: LATENCY_PPS,
                        duration: Duration::from_secs_f64(LATENCY_SECS),
                        payload: 64,
                        zipf: None,
                    },
                )?;
                let slow = slow_count()? - before;
                echo.stop()?;
                if slow >= sent.sent {
                    bail!(
                        "the flow to port {port} was not offloaded within {LATENCY_SECS} s ({slow} of {} datagrams on the slow path)",
                        sent.sent
                    );
                }
                let rate = sent.sent as f64 / sent.elapsed_secs;
                latencies.push(slow.saturating_sub(1) as f64 / rate * 1e3);
            }
            Ok(latencies)
        })();
        self.stop_daemon(daemon)?;
        // The lab's own ruleset again, from a clean slate.
        self.kernel_forwarding(false)?;
        self.kernel_forwarding(true)?;
        measured
    }

    /// One iperf3 run of `streams` connections on `path`.
    fn tcp_round(&self, path: Datapath, streams: u32, secs: u32) -> anyhow::Result<TcpRun> {
        let tor = self.lab.tor_ns();
        let run = |promoted: &dyn Fn() -> anyhow::Result<u64>| -> anyhow::Result<TcpRun> {
            let (ofo0, p0) = (out_of_order(&tor)?, promoted()?);
            let d = iperf3_streams(&tor, SERVER_IP, &self.vm_ns(), secs, streams)?;
            let steady: Vec<f64> = d
                .intervals_bps
                .iter()
                .skip(TCP_WARMUP_INTERVALS)
                .copied()
                .collect();
            if steady.is_empty() {
                bail!("iperf3 reported no intervals past the warm-up");
            }
            Ok(TcpRun {
                mbps: steady.iter().sum::<f64>() / steady.len() as f64 / 1e6,
                intervals_mbps: d.intervals_bps.iter().map(|b| b / 1e6).collect(),
                retransmits: d.report.retransmits,
                out_of_order: out_of_order(&tor)? - ofo0,
                promoted: promoted()? - p0,
            })
        };
        let zero = || Ok(0);
        match path {
            Datapath::Slow => run(&zero),
            Datapath::Offloaded => {
                let daemon = self.start_daemon()?;
                let measured = run(&|| Ok(self.stats()?.promoted));
                self.stop_daemon(daemon)?;
                let measured = measured?;
                if measured.promoted < u64::from(streams) {
                    bail!(
                        "xnic promoted {} of {streams} iperf3 connections",
                        measured.promoted
                    );
                }
                Ok(measured)
            }
            Datapath::Pass => {
                let ports = [self.lab.vms[0].port.as_str(), UPLINK];
                with_baseline(&self.lab.host_ns(), &ports, BaselineProgram::Pass, || {
                    run(&zero)
                })
            }
            Datapath::Ovs | Datapath::Redirect => bail!("no TCP run on {path:?}"),
        }
    }
}

/// What one iperf3 run showed: the receiver's Mbit/s after the warm-up, the sender's
/// retransmits, the segments the receiver's TCP queued out of order, and the connections
/// xnic promoted meanwhile.
#[derive(Clone, Debug, Default)]
struct TcpRun {
    mbps: f64,
    /// The receiver's rate in each 100 ms interval, warm-up included (for the plot).
    intervals_mbps: Vec<f64>,
    retransmits: u64,
    out_of_order: u64,
    promoted: u64,
}

/// Segments the TCP stack of namespace `ns` has queued out of order.
fn out_of_order(ns: &str) -> anyhow::Result<u64> {
    proc_net_counter(ns, "netstat", "TcpExt", "TCPOFOQueue")
}

pub struct LiveOpts {
    pub secs: f64,
    pub rounds: usize,
    pub tcp_secs: u32,
    /// Only the rows about moves ([`crate::offload_moves`]).
    pub only_moves: bool,
}

/// Adds the live rows to `report`.
pub fn rows(report: &mut Report, opts: &LiveOpts) -> anyhow::Result<()> {
    let instance = format!("xoffl{}", std::process::id());
    let b = Bench::up(&instance)?;
    if !opts.only_moves {
        rates(&b, report, opts)?;
    }
    crate::offload_moves::rows(&b, report, opts.rounds)
}

/// The UDP frames/s, promotion latency and TCP rows.
fn rates(b: &Bench, report: &mut Report, opts: &LiveOpts) -> anyhow::Result<()> {
    let instance = &b.instance;
    let cfg = std::env::temp_dir().join(format!("{instance}.trafgen"));
    b.trafgen_config(&cfg)?;
    let paths = [
        Datapath::Slow,
        Datapath::Offloaded,
        Datapath::Ovs,
        Datapath::Redirect,
        Datapath::Pass,
    ];
    let mut pps: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut fast_share = Vec::new();
    let result = (|| {
        for round in 0..opts.rounds {
            for (i, path) in paths.iter().enumerate() {
                let (rate, share) = b.udp_round(*path, &cfg, opts.secs)?;
                eprintln!("  UDP round {round}: {}: {rate:.0} frames/s", path.label());
                pps[i].push(rate);
                if *path == Datapath::Offloaded {
                    fast_share.push(share);
                }
            }
        }
        anyhow::Ok(())
    })();
    let _ = std::fs::remove_file(&cfg);
    result?;
    let m: Vec<f64> = pps.into_iter().map(median).collect();
    let share = fast_share.iter().copied().fold(f64::INFINITY, f64::min);
    if share < 0.95 {
        bail!(
            "xnic's fast path carried only {:.0} % of the offloaded flow's frames: the flow was not really offloaded",
            share * 100.0
        );
    }
    report.add(
        "NAT'd UDP flow, frames/s",
        "one masqueraded flow VM → server, 64-byte payload, trafgen unpaced",
        "frames/s",
        Better::Higher,
        m[1],
        &[
            (Datapath::Slow.label(), m[0]),
            (Datapath::Ovs.label(), m[2]),
            (Datapath::Redirect.label(), m[3]),
            (Datapath::Pass.label(), m[4]),
        ],
    );
    report.notes.push(format!(
        "Live UDP: the routed lab with one VM; trafgen in the VM sends one flow masqueraded to the tor's server; frames/s counted by XDP_DROP on the tor's end of the uplink; {} s per scenario, {} interleaved rounds, median. xnic's fast path carried at least {:.1} % of the measured frames in every round (its own counter against the tor's). Open vSwitch's netdev ports on veth read frames through packet sockets while the kernel still receives them (its forwarding and ruleset off meanwhile); that cost is part of what OVS does here.",
        opts.secs,
        opts.rounds,
        share * 100.0
    ));

    let mut latencies = b.promotion_latencies()?;
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    let period = xnic::config::default_flow_period_ms() as f64;
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        report.add(
            "promotion latency, ms",
            &format!(
                "{label} of {LATENCY_FLOWS} UDP flows, conntrack's confirmation to the first fast-path datagram"
            ),
            "ms",
            Better::Lower,
            quantile(q),
            &[("the policy's period (flows.period_ms)", period)],
        );
    }
    report.notes.push(format!(
        "Promotion latency: {LATENCY_FLOWS} UDP flows one after the other, each {LATENCY_PPS} datagrams/s for {LATENCY_SECS} s from the VM to an echo at the server, with the daemon's default period; a counter first in the ruleset's forward chain counts each flow's datagrams on the slow path (the fast path never reaches nftables): those after the first (whose answer confirms the flow) over the rate. The period is the wait a periodic decision adds by design (half of it on average), plus the drain before the switch."
    ));

    let tcp_paths = [Datapath::Slow, Datapath::Offloaded, Datapath::Pass];
    for streams in [1u32, 8] {
        let mut runs: Vec<Vec<TcpRun>> = vec![Vec::new(); tcp_paths.len()];
        for round in 0..opts.rounds {
            for (i, path) in tcp_paths.iter().enumerate() {
                let r = b.tcp_round(*path, streams, opts.tcp_secs)?;
                eprintln!(
                    "  TCP round {round}, {streams} stream(s): {}: {:.0} Mbit/s, {} retransmits, {} out of order",
                    path.label(),
                    r.mbps,
                    r.retransmits,
                    r.out_of_order
                );
                runs[i].push(r);
            }
        }
        // The first round of each path over time: the slow path's rate, and xnic's as its
        // connections move to the fast path in the first few hundred milliseconds.
        report.series.push(Series {
            title: format!(
                "iperf3 TCP, {streams} stream(s) VM → server through the host's NAT: receiver's rate every 100 ms (round 1)"
            ),
            x_label: "seconds".into(),
            y_label: "Mbit/s".into(),
            lines: tcp_paths
                .iter()
                .zip(&runs)
                .map(|(path, r)| Line {
                    label: path.label().to_string(),
                    points: r[0]
                        .intervals_mbps
                        .iter()
                        .enumerate()
                        .map(|(k, m)| ((k + 1) as f64 * 0.1, *m))
                        .collect(),
                })
                .collect(),
            marks: vec![(
                TCP_WARMUP_INTERVALS as f64 * 0.1,
                "end of warm-up (promotion)".into(),
            )],
        });
        let med = |i: usize, f: fn(&TcpRun) -> f64| median(runs[i].iter().map(f).collect());
        let scenario = format!("{streams} stream(s) VM → server, masqueraded");
        for (metric, unit, better, f) in [
            (
                "iperf3 TCP, receiver's rate",
                "Mbit/s",
                Better::Higher,
                (|r: &TcpRun| r.mbps) as fn(&TcpRun) -> f64,
            ),
            (
                "iperf3 TCP, sender's retransmits per run",
                "segments",
                Better::Lower,
                |r: &TcpRun| r.retransmits as f64,
            ),
            (
                "iperf3 TCP, segments the receiver queued out of order per run",
                "segments",
                Better::Lower,
                |r: &TcpRun| r.out_of_order as f64,
            ),
        ] {
            report.add(
                metric,
                &scenario,
                unit,
                better,
                med(1, f),
                &[
                    (Datapath::Slow.label(), med(0, f)),
                    (Datapath::Pass.label(), med(2, f)),
                ],
            );
        }
    }
    report.notes.push(format!(
        "Live TCP: iperf3 from the VM to the tor's server, {} s per run, the receiver's rate from its 100 ms intervals after the first {} (connection set-up and promotion), {} interleaved rounds, median; with xnic every connection (iperf3's control connection too) is promoted. Retransmits are iperf3's (the sender's kernel), out-of-order segments the receiver's own count (TCPOFOQueue of the tor's /proc/net/netstat). The minimal XDP_PASS program on the same two host ports shows what XDP on a veth does to the slow path by itself: frames the host forwards out of a veth with segmentation offload go through the backlog of the CPU that forwards them, and with XDP on the port they came in by that CPU changes from one NAPI poll to the next, so one flow's frames queue on two CPUs and arrive out of order; xnic's slow-path frames (before promotion, and of a flow sent back) meet the same, which is where its out-of-order segments with several streams come from",
        opts.tcp_secs,
        TCP_WARMUP_INTERVALS,
        opts.rounds
    ));
    Ok(())
}
