//! `team`: NIC teaming against Open vSwitch's bonds on its userspace datapath, in one lab
//! and one run. Four VMs send through a host with two uplinks to a tor; who switches their
//! frames onto the uplinks changes between xnic, OVS and the kernel's bridge.
//!
//! 1. Failover: each VM sends a 10 kpps stream; the uplink carrying most of them loses its
//!    carrier (the tor's end is set down). Per VM that was on it: the gap from its last frame
//!    on the lost uplink to its first on the survivor (kernel receive timestamps at the tor),
//!    and the datagrams it lost. xnic's failover policy against an OVS active-backup bond,
//!    xnic's MAC-hash placement against an OVS balance-slb bond.
//! 2. Allocation accuracy: a VM offers twice its allocation; the rate that reaches the tor,
//!    in steady state, against an OVS OpenFlow meter of the same rate and burst.
//! 3. TCP through an allocation (20 and 100 Mbit/s, the default burst, 1 and 4 streams of
//!    iperf3 from a guest with default TCP settings): goodput as a fraction of the
//!    allocation, retransmits, and 100 ms intervals the receiver got almost nothing in,
//!    against Linux's tbf as a shaper and as a near-policer, and an OVS meter.
//! 4. Egress frames per second: trafgen in a VM sends 64-byte UDP; frames per second that
//!    reach the tor through xnic's team path, through the kernel's bridge without xnic, and
//!    through OVS. A minimal XDP_DROP program counts them at the tor, so the tor's own stack
//!    does not limit the figure.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::bail;
use xnic::{
    announce::{Announcer, arp},
    api::{
        client::Client,
        types::{TeamEvent, TeamStatusView},
    },
    cli::block_on,
    dataplane::baseline::BaselineProgram,
    features::team::monotonic_ns,
    lab::{
        HOST_BRIDGE, Lab, TOR_BRIDGE, TOR_MAC,
        capture::Capture,
        ip, tor_port,
        traffic::{Receiver, RecvReport, SendReport, UdpStream, send_udp},
    },
    monitor::links::{EVENT_THREAD_PRIORITY, set_realtime},
    net::MacAddr,
};

use crate::{
    flag,
    live::{self, LiveLab, rx_counters, with_baseline, xdp_received},
    ovs::{BRIDGE as OVS_BRIDGE, Ovs},
    report::{Better, Line, Report, Series, median},
};

/// VMs in the lab: enough that a MAC hash puts some on each uplink.
pub(crate) const VMS: usize = 4;
const UPLINKS: [&str; 2] = ["up0", "up1"];
/// The failover stream, per VM.
const STREAM_PPS: u64 = 10_000;
/// Receivers at the tor listen on BASE_PORT + VM index.
const BASE_PORT: u16 = 9000;
/// xnic's failback hold-down in the benchmark: short, so trials follow each other quickly.
const HOLD_MS: u64 = 1000;
/// Allocation test: datagram payload, so frames are 1000 bytes on the wire (what allocations
/// and meters count: Ethernet 14 + IPv4 20 + UDP 8 + payload).
const PAYLOAD: usize = 958;
const FRAME_BYTES: f64 = (PAYLOAD + 42) as f64;
/// Allocations measured, Mbit/s, each on its own VM.
const RATES_MBPS: [f64; 2] = [20.0, 100.0];
/// The burst both xnic and the OVS meter allow.
const BURST_KIB: u32 = 64;
/// What trafgen offers by default in the egress test, frames per second.
const OFFERED_PPS: u64 = 1_000_000;

/// The lab configuration with the team placing VMs by `policy`; `vm_extra[i]` is added to VM
/// i's section.
fn config(
    instance: &str,
    prefix: &str,
    policy: &str,
    vm_extra: &[String],
    team_extra: &str,
) -> String {
    let mut s = format!("instance = \"{instance}\"\nnetns = \"{prefix}-host\"\n");
    for u in UPLINKS {
        s.push_str(&format!("\n[[uplink]]\nname = \"{u}\"\n"));
    }
    for i in 0..VMS {
        s.push_str(&format!(
            "\n[[vm]]\nname = \"vm{i}\"\nport = \"vm{i}\"\nmacs = [\"{}\"]\nips = [\"10.77.0.{}/24\"]\n{}\n",
            vm_mac(i),
            10 + i,
            vm_extra.get(i).map_or("", String::as_str)
        ));
    }
    s.push_str(&format!(
        "\n[[team]]\nname = \"uplinks\"\nuplinks = [\"up0\", \"up1\"]\npolicy = \"{policy}\"\n\
         failback_hold_ms = {HOLD_MS}\n{team_extra}\n"
    ));
    s.push_str(&format!(
        "\n[lab]\nprefix = \"{prefix}\"\ntor_ips = [\"10.77.0.1/24\"]\nipv6 = false\n"
    ));
    s
}

pub(crate) fn vm_mac(i: usize) -> MacAddr {
    MacAddr([0x02, 0x77, 0, 0, 0, 0x10 + i as u8])
}

/// The lab plus the alternative configurations of the same VMs the daemon is started with.
struct Bench {
    live: LiveLab,
    prefix: String,
    variants: Vec<PathBuf>,
}

impl Drop for Bench {
    fn drop(&mut self) {
        for v in &self.variants {
            let _ = std::fs::remove_file(v);
        }
    }
}

impl Bench {
    fn lab(&self) -> &Lab {
        &self.live.lab
    }

    fn host(&self) -> &str {
        self.live.lab.host_ns()
    }

    /// Writes a configuration variant `name` of the lab and returns its path.
    fn variant(
        &mut self,
        name: &str,
        policy: &str,
        vm_extra: &[String],
        team_extra: &str,
    ) -> anyhow::Result<PathBuf> {
        let path = live::config_file(&self.live.instance, name);
        std::fs::write(
            &path,
            config(
                &self.live.instance,
                &self.prefix,
                policy,
                vm_extra,
                team_extra,
            ),
        )?;
        self.variants.push(path.clone());
        Ok(path)
    }

    /// Starts xnic on configuration `path`.
    fn xnic(&self, path: &std::path::Path) -> anyhow::Result<xnic::lab::daemon::DaemonProcess> {
        live::start_daemon(&self.live.instance, path)
    }

    fn client(&self) -> Client {
        Client::new(&self.live.instance)
    }

    /// Puts the VM ports on the host's bridge, or takes them off it for OVS.
    fn bridge_vm_ports(&self, on: bool) -> anyhow::Result<()> {
        for i in 0..VMS {
            let port = format!("vm{i}");
            let master: &[&str] = if on {
                &["master", HOST_BRIDGE]
            } else {
                &["nomaster"]
            };
            let mut args = vec!["-n", self.host(), "link", "set", &port];
            args.extend_from_slice(master);
            ip(&args)?;
        }
        Ok(())
    }

    /// OVS switching the VM ports onto a bond of both uplinks in `mode`, with a meter per
    /// `(vm, Mbit/s)` in `meters`, once it has learned where the tor is.
    fn ovs(&self, mode: &str, meters: &[(usize, f64)]) -> anyhow::Result<Ovs> {
        self.ovs_with_burst(mode, meters, BURST_KIB as u64 * 1024)
    }

    /// [`Bench::ovs`] with meters of `burst_bytes`.
    fn ovs_with_burst(
        &self,
        mode: &str,
        meters: &[(usize, f64)],
        burst_bytes: u64,
    ) -> anyhow::Result<Ovs> {
        self.bridge_vm_ports(false)?;
        let ovs = Ovs::start(self.host())?;
        for i in 0..VMS {
            ovs.vsctl(&["add-port", OVS_BRIDGE, &format!("vm{i}")])?;
        }
        // No periodic rebalancing: a MAC stays on its member unless that member fails, as
        // with xnic's MAC hash.
        ovs.vsctl(&[
            "add-bond",
            OVS_BRIDGE,
            "bond0",
            "up0",
            "up1",
            &format!("bond_mode={mode}"),
            "other_config:bond-rebalance-interval=0",
        ])?;
        for (n, (vm, mbps)) in meters.iter().enumerate() {
            let id = n + 1;
            let kbps = (mbps * 1000.0).round() as u64;
            let burst_kbit = burst_bytes * 8 / 1000;
            ovs.ofctl(&[
                "add-meter",
                OVS_BRIDGE,
                &format!(
                    "meter={id},kbps,burst,band=type=drop,rate={kbps},burst_size={burst_kbit}"
                ),
            ])?;
            ovs.ofctl(&[
                "add-flow",
                OVS_BRIDGE,
                &format!("priority=10,in_port=vm{vm},actions=meter:{id},NORMAL"),
            ])?;
        }
        self.teach_tor_mac(&ovs)?;
        Ok(ovs)
    }

    /// Sends gratuitous ARPs from the tor until OVS has learned its MAC on the bond, so VM
    /// frames for the tor are not flooded to the other VMs.
    fn teach_tor_mac(&self, ovs: &Ovs) -> anyhow::Result<()> {
        let tor = self.lab().tor_ns();
        let IpAddr::V4(tor_ip) = self.lab().endpoint("tor")?.1 else {
            bail!("the tor has no IPv4 address");
        };
        let garp = arp(TOR_MAC.0, tor_ip.octets());
        let deadline = Instant::now() + Duration::from_secs(10);
        let mac = TOR_MAC.to_string();
        loop {
            let frame = garp.clone();
            xnic::netns::run_in(&tor, move || {
                let ifindex = nix::net::if_::if_nametoindex(TOR_BRIDGE)?;
                Announcer::open()?.send(ifindex, &frame)?;
                anyhow::Ok(())
            })?;
            std::thread::sleep(Duration::from_millis(100));
            if ovs.appctl(&["fdb/show", OVS_BRIDGE])?.contains(&mac) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("OVS did not learn the tor's MAC {mac} on its bond");
            }
        }
    }

    /// Stops OVS and gives the VM ports back to the host's bridge.
    fn stop_ovs(&self, ovs: Ovs) -> anyhow::Result<()> {
        drop(ovs);
        self.bridge_vm_ports(true)
    }
}

/// Gives `uplink` its carrier back, or takes it away (the tor's end of it goes up or down).
fn carrier(lab: &Lab, uplink: &str, up: bool) -> anyhow::Result<()> {
    ip(&[
        "-n",
        &lab.tor_ns(),
        "link",
        "set",
        &tor_port(uplink),
        if up { "up" } else { "down" },
    ])
}

/// What one VM went through in one failover.
pub(crate) struct Failover {
    /// From its last frame on the lost uplink to its first on the survivor; `None` when it
    /// never reached the survivor.
    pub gap_ms: Option<f64>,
    /// The sender's own time between those two frames (from their send stamps): the gap as
    /// the sender saw it, without delays on the way to the tor.
    pub sent_apart_ms: Option<f64>,
    pub lost: u64,
}

/// One failover under a 10 kpps stream per VM of a lab with [`VMS`] VMs named `vmI` with
/// the MACs of [`vm_mac`] and both [`UPLINKS`] in one team: the uplink carrying most of them
/// loses its carrier. Returns the VMs that were on it.
/// Real-time priority of the failover trial's senders: under the daemon's link thread.
const SENDER_PRIORITY: i32 = EVENT_THREAD_PRIORITY - 5;

/// What one failover trial saw.
pub(crate) struct FailoverTrial {
    /// The VMs that were on the lost uplink.
    pub moved: Vec<Failover>,
    /// Frames per millisecond the tor received on each uplink around the carrier loss (x: ms
    /// from it).
    pub timeline: Vec<Line>,
}

/// The timeline's window around the carrier loss, and its bins.
const TIMELINE_BEFORE_MS: f64 = 20.0;
const TIMELINE_AFTER_MS: f64 = 60.0;
const TIMELINE_BIN_MS: f64 = 1.0;

pub(crate) fn failover_trial(lab: &Lab, secs: f64) -> anyhow::Result<FailoverTrial> {
    let (tor, tor_addr) = lab.endpoint("tor")?;
    let captures = UPLINKS
        .iter()
        .map(|u| Capture::start(&tor, &tor_port(u)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for i in 0..VMS {
        let sink = SocketAddr::new(tor_addr, BASE_PORT + i as u16);
        receivers.push(Receiver::start(Some(&tor), sink)?);
        let ns = lab.vm_ns(&format!("vm{i}"));
        senders.push(std::thread::spawn(move || {
            // The gap is the dataplane's and the daemon's: a sender the load delays would
            // add its own silence to it. Below the daemon's link thread, so never ahead of it.
            let _ = set_realtime(SENDER_PRIORITY);
            send_udp(
                Some(&ns),
                UdpStream {
                    dst: sink,
                    flows: 4,
                    pps: STREAM_PPS,
                    duration: Duration::from_secs_f64(secs),
                    payload: 64,
                    zipf: None,
                },
            )
        }));
    }
    std::thread::sleep(Duration::from_millis(1000));
    // The uplink carrying most frames right now is the one to lose.
    let frames = |u: &str| rx_counters(&tor, &tor_port(u)).map(|(_, p)| p);
    let before = UPLINKS.map(frames);
    std::thread::sleep(Duration::from_millis(200));
    let after = UPLINKS.map(frames);
    let mut busiest = 0;
    let mut most = 0;
    for (u, (a, b)) in after.into_iter().zip(before).enumerate() {
        let n = a? - b?;
        if n > most {
            (busiest, most) = (u, n);
        }
    }
    let failed = UPLINKS[busiest];
    let down_at = monotonic_ns();
    carrier(lab, failed, false)?;
    let mut sent: Vec<SendReport> = Vec::new();
    for s in senders {
        sent.push(
            s.join()
                .map_err(|_| anyhow::anyhow!("a sender panicked"))??,
        );
    }
    let got: Vec<RecvReport> = receivers
        .into_iter()
        .map(Receiver::stop)
        .collect::<anyhow::Result<_>>()?;
    let captured: Vec<_> = captures
        .into_iter()
        .map(Capture::stop)
        .collect::<anyhow::Result<_>>()?;
    carrier(lab, failed, true)?;

    let mut moved = Vec::new();
    for i in 0..VMS {
        let from_vm = |c: &&xnic::lab::capture::Captured| {
            c.src_mac() == vm_mac(i).0 && c.ethertype() == 0x0800
        };
        // Nothing arrives on the lost uplink after its carrier went (it comes back only
        // after the captures stopped).
        let Some(last_old) = captured[busiest]
            .iter()
            .filter(from_vm)
            .max_by_key(|c| c.at_ns)
        else {
            continue;
        };
        // Not on the lost uplink when it went: not moved by the failover.
        if down_at.saturating_sub(last_old.at_ns) > 10_000_000 {
            continue;
        }
        let first_new = captured
            .iter()
            .enumerate()
            .filter(|(u, _)| *u != busiest)
            .flat_map(|(_, frames)| frames.iter().filter(from_vm))
            .filter(|c| c.at_ns > last_old.at_ns)
            .min_by_key(|c| c.at_ns);
        let sent_at = |c: &xnic::lab::capture::Captured| c.generator_header().map(|h| h.2);
        moved.push(Failover {
            gap_ms: first_new.map(|c| (c.at_ns - last_old.at_ns) as f64 / 1e6),
            sent_apart_ms: first_new
                .and_then(|c| Some((sent_at(c)? as f64 - sent_at(last_old)? as f64) / 1e6)),
            lost: sent[i].sent.saturating_sub(got[i].received),
        });
    }
    if moved.is_empty() {
        bail!("no VM was sending over {failed} when it lost its carrier");
    }
    let bins = ((TIMELINE_BEFORE_MS + TIMELINE_AFTER_MS) / TIMELINE_BIN_MS) as usize;
    let timeline = UPLINKS
        .iter()
        .zip(&captured)
        .map(|(u, frames)| {
            let mut counts = vec![0u64; bins];
            for c in frames.iter().filter(|c| c.ethertype() == 0x0800) {
                let ms = (c.at_ns as f64 - down_at as f64) / 1e6 + TIMELINE_BEFORE_MS;
                if ms >= 0.0 && ((ms / TIMELINE_BIN_MS) as usize) < bins {
                    counts[(ms / TIMELINE_BIN_MS) as usize] += 1;
                }
            }
            let role = if *u == failed {
                "loses carrier"
            } else {
                "survivor"
            };
            Line {
                label: format!("{u} ({role})"),
                points: counts
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        (
                            i as f64 * TIMELINE_BIN_MS - TIMELINE_BEFORE_MS,
                            *n as f64 / TIMELINE_BIN_MS,
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(FailoverTrial { moved, timeline })
}

/// Failover figures of one switch over `trials` trials.
struct FailoverRuns {
    /// The first trial's frames per uplink around the carrier loss.
    timeline: Vec<Line>,
    gaps_ms: Vec<f64>,
    lost: Vec<f64>,
    /// Moved VMs that never reached the survivor.
    stranded: usize,
}

fn failover_runs(
    lab: &Lab,
    label: &str,
    trials: usize,
    secs: f64,
    settle: Duration,
) -> anyhow::Result<FailoverRuns> {
    let mut runs = FailoverRuns {
        timeline: Vec::new(),
        gaps_ms: Vec::new(),
        lost: Vec::new(),
        stranded: 0,
    };
    for trial in 0..trials {
        let FailoverTrial { moved, timeline } = failover_trial(lab, secs)?;
        if trial == 0 {
            runs.timeline = timeline;
        }
        eprintln!(
            "  {label}, trial {}: {}",
            trial + 1,
            moved
                .iter()
                .map(|m| format!(
                    "gap {} (sent {} apart) lost {}",
                    m.gap_ms.map_or("never".into(), |g| format!("{g:.3} ms")),
                    m.sent_apart_ms.map_or("?".into(), |g| format!("{g:.3} ms")),
                    m.lost
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
        for m in moved {
            match m.gap_ms {
                Some(g) => runs.gaps_ms.push(g),
                None => runs.stranded += 1,
            }
            runs.lost.push(m.lost as f64);
        }
        // Carrier back; let the switch settle (xnic fails back after its hold-down).
        std::thread::sleep(settle);
    }
    if runs.gaps_ms.is_empty() {
        bail!("{label}: no VM reached the surviving uplink in any trial");
    }
    Ok(runs)
}

/// The rate that reaches the tor while VM `vm` offers twice `mbps` for `secs` in steady
/// state (after the burst), Mbit/s of frames.
fn steady_rate(b: &Bench, vm: usize, mbps: f64, secs: f64) -> anyhow::Result<f64> {
    let (tor, tor_addr) = b.lab().endpoint("tor")?;
    let sink = SocketAddr::new(tor_addr, BASE_PORT + vm as u16);
    let rx = Receiver::start(Some(&tor), sink)?;
    let ns = b.lab().vm_ns(&format!("vm{vm}"));
    let warmup = 1.5;
    let pps = (2.0 * mbps * 1e6 / 8.0 / FRAME_BYTES).round() as u64;
    let sender = std::thread::spawn(move || {
        send_udp(
            Some(&ns),
            UdpStream {
                dst: sink,
                flows: 4,
                pps,
                duration: Duration::from_secs_f64(warmup + secs + 0.5),
                payload: PAYLOAD,
                zipf: None,
            },
        )
    });
    let bytes = || -> anyhow::Result<u64> {
        UPLINKS
            .iter()
            .map(|u| rx_counters(&tor, &tor_port(u)).map(|(b, _)| b))
            .sum()
    };
    std::thread::sleep(Duration::from_secs_f64(warmup));
    let (b0, t0) = (bytes()?, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (b1, t1) = (bytes()?, Instant::now());
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    rx.stop()?;
    if sent.sent < pps {
        bail!("the sender offered only {} datagrams", sent.sent);
    }
    Ok((b1 - b0) as f64 * 8.0 / (t1 - t0).as_secs_f64() / 1e6)
}

/// Frames per second reaching the tor while trafgen in vm0 offers `offered` for `secs`.
fn egress_pps(b: &Bench, offered: u64, secs: f64) -> anyhow::Result<f64> {
    let lab = b.lab();
    let (ns, addr) = lab.endpoint("vm0")?;
    let (tor, tor_addr) = lab.endpoint("tor")?;
    let cfg = std::env::temp_dir().join(format!("xnic-team-{}.trafgen", std::process::id()));
    std::fs::write(
        &cfg,
        format!(
            "{{\n  eth(da={TOR_MAC}, sa={}, type=0x0800),\n  ipv4(saddr={addr}, daddr={tor_addr}, ttl=64),\n  udp(sp=drnd(), dp={BASE_PORT}, csum=0),\n  fill(0x00, 18)\n}}\n",
            vm_mac(0)
        ),
    )?;
    let ports: Vec<String> = UPLINKS.iter().map(|u| tor_port(u)).collect();
    let port_refs: Vec<&str> = ports.iter().map(String::as_str).collect();
    let result = with_baseline(&tor, &port_refs, BaselineProgram::Drop, || {
        let generator = live::trafgen(&ns, xnic::lab::VM_IFNAME, &cfg, Some(offered))?;
        let count = || -> anyhow::Result<u64> { ports.iter().map(|p| xdp_received(&tor, p)).sum() };
        std::thread::sleep(Duration::from_millis(500));
        let (c0, t0) = (count()?, Instant::now());
        std::thread::sleep(Duration::from_secs_f64(secs));
        let (c1, t1) = (count()?, Instant::now());
        generator.kill();
        Ok((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
    });
    let _ = std::fs::remove_file(&cfg);
    result
}

/// Median and worst of xnic's own measured switch times (kernel link event → dataplane
/// rewritten), microseconds.
fn switch_times(client: &Client) -> anyhow::Result<Vec<f64>> {
    let events: Vec<TeamEvent> = block_on(client.get("/v1/team/events"))?;
    Ok(events
        .iter()
        .filter(|e| e.kind == "link_down")
        .filter_map(|e| e.switch_us.map(|u| u as f64))
        .collect())
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// The knobs every part reads.
struct Opts {
    trials: usize,
    secs: f64,
    rounds: usize,
    offered: u64,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let opts = Opts {
        trials: flag(args, "--trials", 5)?.max(1),
        secs: flag(args, "--secs", 3.0)?,
        rounds: flag(args, "--rounds", 3)?.max(1),
        offered: flag(args, "--offered", OFFERED_PPS)?,
    };
    // `--only failover|allocation|tcp|egress`: one part of the benchmark.
    let only: String = flag(args, "--only", String::new())?;
    if !["", "failover", "allocation", "tcp", "egress"].contains(&only.as_str()) {
        bail!("--only takes failover, allocation, tcp or egress, not {only:?}");
    }
    let part = |name: &str| only.is_empty() || only == name;
    let mut report = Report::new("team");
    let id = std::process::id();
    let instance = format!("xbteam{id}");
    let prefix = format!("xbt{id}");
    let live = LiveLab::up(&instance, &config(&instance, &prefix, "failover", &[], ""))?;
    let mut b = Bench {
        live,
        prefix,
        variants: Vec::new(),
    };
    if part("failover") {
        failover(&mut b, &opts, &mut report)?;
    }
    if part("allocation") {
        allocation(&mut b, &opts, &mut report)?;
    }
    if part("tcp") {
        tcp(&mut b, &opts, &mut report)?;
    }
    if part("egress") {
        egress(&b, &opts, &mut report)?;
    }
    drop(b);
    report.write()
}

/// Part 1: failover gaps and losses, xnic against OVS bonds.
fn failover(b: &mut Bench, opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let Opts { trials, secs, .. } = *opts;
    let failover_cfg = b.live.config_path.clone();
    let mac_hash_cfg = b.variant("mac-hash", "mac-hash", &[], "")?;
    // The same teams with the dataplane's own failover off: the daemon alone moves VMs.
    const DAEMON_ONLY: &str = "kernel_failover = false";
    let failover_daemon_cfg = b.variant("failover-daemon", "failover", &[], DAEMON_ONLY)?;
    let mac_hash_daemon_cfg = b.variant("mac-hash-daemon", "mac-hash", &[], DAEMON_ONLY)?;
    let client = b.client();
    // xnic fails back after its hold-down; OVS members come back at once.
    let xnic_settle = Duration::from_millis(HOLD_MS + 1000);
    let ovs_settle = Duration::from_millis(1000);
    let mut failover = Vec::new();
    for (label, xnic_cfg, daemon_cfg, bond_mode) in [
        (
            "failover policy / active-backup",
            &failover_cfg,
            &failover_daemon_cfg,
            "active-backup",
        ),
        (
            "MAC hash / balance-slb",
            &mac_hash_cfg,
            &mac_hash_daemon_cfg,
            "balance-slb",
        ),
    ] {
        eprintln!("failover: {label}");
        let daemon = b.xnic(daemon_cfg)?;
        let daemon_runs = failover_runs(b.lab(), "xnic, daemon only", trials, secs, xnic_settle)?;
        b.live.stop_dataplane(daemon)?;
        let daemon = b.xnic(xnic_cfg)?;
        let xnic_runs = failover_runs(b.lab(), "xnic", trials, secs, xnic_settle)?;
        let switch_us = switch_times(&client)?;
        b.live.stop_dataplane(daemon)?;
        let ovs = b.ovs(bond_mode, &[])?;
        let ovs_runs = failover_runs(
            b.lab(),
            &format!("OVS {bond_mode}"),
            trials,
            secs,
            ovs_settle,
        );
        b.stop_ovs(ovs)?;
        failover.push((
            label,
            bond_mode,
            xnic_runs,
            daemon_runs,
            ovs_runs?,
            switch_us,
        ));
    }
    report.notes.push(
        "Failover: per VM that was on the lost uplink, the gap runs from its last frame on that uplink to its first on the survivor (kernel receive timestamps at the tor; the senders run at real-time priority, so their own scheduling does not widen it); lost = datagrams it sent minus those the tor received. The uplink loses carrier at the tor's end (`ip link set DEV down`), which the host sees as its uplink's carrier going.".into(),
    );
    for (label, bond_mode, x, d, o, switch_us) in &failover {
        let named = |who: &str, lines: &[Line]| -> Vec<Line> {
            lines
                .iter()
                .map(|l| Line {
                    label: format!("{who}: {}", l.label),
                    points: l.points.clone(),
                })
                .collect()
        };
        report.series.push(Series {
            title: format!(
                "Failover timeline, {label}: frames per ms at the tor on each uplink, {VMS} VMs × {STREAM_PPS} pps (trial 1)"
            ),
            x_label: "ms from asking for the carrier loss".into(),
            y_label: "frames per ms".into(),
            lines: [named("xnic", &x.timeline), named(&format!("OVS {bond_mode}"), &o.timeline)]
                .concat(),
            marks: vec![(0.0, "carrier off asked (ip link set down)".into())],
        });
        let ovs_name = format!("OVS {bond_mode} bond (userspace datapath)");
        let daemon_name = "xnic, failover by the daemon only (kernel_failover = false)";
        let scenario = format!(
            "{label}: {VMS} VMs × {STREAM_PPS} pps, the busiest uplink loses carrier; VMs moved over {trials} trials"
        );
        report.add(
            "failover gap, median",
            &scenario,
            "ms",
            Better::Lower,
            median(x.gaps_ms.clone()),
            &[
                (daemon_name, median(d.gaps_ms.clone())),
                (&ovs_name, median(o.gaps_ms.clone())),
            ],
        );
        report.add(
            "failover gap, worst",
            &scenario,
            "ms",
            Better::Lower,
            max(&x.gaps_ms),
            &[(daemon_name, max(&d.gaps_ms)), (&ovs_name, max(&o.gaps_ms))],
        );
        report.add(
            "datagrams lost per moved VM, median",
            &scenario,
            "datagrams",
            Better::Lower,
            median(x.lost.clone()),
            &[
                (daemon_name, median(d.lost.clone())),
                (&ovs_name, median(o.lost.clone())),
            ],
        );
        report.add(
            "datagrams lost per moved VM, worst",
            &scenario,
            "datagrams",
            Better::Lower,
            max(&x.lost),
            &[(daemon_name, max(&d.lost)), (&ovs_name, max(&o.lost))],
        );
        report.notes.push(format!(
            "Failover, {label}: moved VMs measured {} (xnic) and {} (OVS); stranded on the lost uplink: {} and {}. xnic's own switch time (kernel link event to dataplane rewritten), median {:.0} µs, worst {:.0} µs.",
            x.gaps_ms.len() + x.stranded,
            o.gaps_ms.len() + o.stranded,
            x.stranded,
            o.stranded,
            if switch_us.is_empty() { f64::NAN } else { median(switch_us.clone()) },
            max(switch_us),
        ));
    }

    Ok(())
}

/// Part 2: allocation accuracy, each rate on its own VM, against OVS meters.
fn allocation(b: &mut Bench, opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let secs = opts.secs;
    let allocated: Vec<String> = RATES_MBPS
        .iter()
        .map(|r| format!("bandwidth_mbps = {r}\nburst_kib = {BURST_KIB}"))
        .collect();
    let allocation_cfg = b.variant("allocation", "failover", &allocated, "")?;
    let client = b.client();
    eprintln!("allocation accuracy");
    let daemon = b.xnic(&allocation_cfg)?;
    let xnic_rates: Vec<f64> = RATES_MBPS
        .iter()
        .enumerate()
        .map(|(vm, r)| steady_rate(b, vm, *r, secs))
        .collect::<anyhow::Result<_>>()?;
    let status: TeamStatusView = block_on(client.get("/v1/team"))?;
    b.live.stop_dataplane(daemon)?;
    let meters: Vec<(usize, f64)> = RATES_MBPS.iter().copied().enumerate().collect();
    let ovs = b.ovs("active-backup", &meters)?;
    let ovs_rates: anyhow::Result<Vec<f64>> = RATES_MBPS
        .iter()
        .enumerate()
        .map(|(vm, r)| steady_rate(b, vm, *r, secs))
        .collect();
    b.stop_ovs(ovs)?;
    let ovs_rates = ovs_rates?;
    let error = |got: f64, want: f64| (got - want).abs() / want * 100.0;
    for ((rate, x), o) in RATES_MBPS.iter().zip(&xnic_rates).zip(&ovs_rates) {
        eprintln!("  {rate} Mbit/s: xnic {x:.2}, OVS meter {o:.2}");
        let scenario = format!(
            "{rate} Mbit/s allocation, burst {BURST_KIB} KiB, offered 2×, 1000-byte frames, {secs} s after the burst"
        );
        report.add(
            "allocation error: distance of the delivered rate from the allocation",
            &scenario,
            "%",
            Better::Lower,
            error(*x, *rate),
            &[("OVS OpenFlow meter, same rate and burst", error(*o, *rate))],
        );
    }
    report.notes.push(format!(
        "Allocation: rates are frame bytes (what both xnic and OVS meters count) arriving at the tor's uplink ports, in a window that starts 1.5 s after the VM begins offering twice its allocation. Delivered, xnic / OVS meter: {}. xnic's granted rates: {}.",
        RATES_MBPS
            .iter()
            .zip(xnic_rates.iter().zip(&ovs_rates))
            .map(|(r, (x, o))| format!("{r} Mbit/s → {x:.3} / {o:.3} Mbit/s"))
            .collect::<Vec<_>>()
            .join(", "),
        status
            .vms
            .iter()
            .filter_map(|v| v.granted_mbps.map(|g| format!("{} {g:.1} Mbit/s", v.name)))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    Ok(())
}

/// How long each TCP transfer runs, seconds.
const TCP_SECS: u32 = 5;

/// Part 3: TCP through an allocation with the default burst, 1 and 4 streams, against Linux's
/// tbf (as a shaper and as a near-policer) and an OVS meter of the same rate and burst.
fn tcp(b: &mut Bench, _opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    use xnic::{features::team::default_burst_bytes, lab::traffic::iperf3_streams};
    eprintln!("TCP through an allocation");
    let (tor_ns, tor_addr) = b.lab().endpoint("tor")?;
    let (vm_ns, _) = b.lab().endpoint("vm0")?;
    let tor_addr = tor_addr.to_string();
    let host = b.host().to_string();
    let measure = || -> anyhow::Result<Vec<(u32, xnic::lab::traffic::IperfDetail)>> {
        [1u32, 4]
            .iter()
            .map(|&n| Ok((n, iperf3_streams(&tor_ns, &tor_addr, &vm_ns, TCP_SECS, n)?)))
            .collect()
    };
    let tbf = |rate: f64, burst: u64, shaper: bool| {
        let rate = format!("{}kbit", (rate * 1000.0) as u64);
        let burst = burst.to_string();
        let mut args = vec![
            "-n", &host, "qdisc", "replace", "dev", "up0", "root", "tbf", "rate", &rate, "burst",
            &burst,
        ];
        // A shaper queues 50 ms of frames; a near-policer holds one frame.
        if shaper {
            args.extend(["latency", "50ms"]);
        } else {
            args.extend(["limit", "1514"]);
        }
        xnic::lab::tc(&args)
    };
    for rate in RATES_MBPS {
        let burst = default_burst_bytes((rate * 1e6 / 8.0) as u64);
        let cfg = b.variant(
            &format!("tcp-{rate}"),
            "failover",
            &[format!("bandwidth_mbps = {rate}")],
            "",
        )?;
        let daemon = b.xnic(&cfg)?;
        let xnic_runs = measure();
        b.live.stop_dataplane(daemon)?;
        let xnic_runs = xnic_runs?;
        let mut baselines: Vec<(&str, Vec<(u32, xnic::lab::traffic::IperfDetail)>)> = Vec::new();
        // xnic's own policer alone, what every allocation was before shaping.
        let strict_cfg = b.variant(
            &format!("tcp-{rate}-strict"),
            "failover",
            &[format!(
                "bandwidth_mbps = {rate}\nallocation_mode = \"strict\""
            )],
            "",
        )?;
        let daemon = b.xnic(&strict_cfg)?;
        let runs = measure();
        b.live.stop_dataplane(daemon)?;
        baselines.push((
            "xnic, allocation_mode = \"strict\" (the XDP policer alone)",
            runs?,
        ));
        b.live.bridge_uplink("up0", true)?;
        for (label, shaper) in [
            ("Linux tbf on the uplink as a shaper (50 ms queue)", true),
            (
                "Linux tbf on the uplink as a near-policer (one-frame queue)",
                false,
            ),
        ] {
            tbf(rate, burst, shaper)?;
            let runs = measure();
            xnic::lab::tc(&["-n", &host, "qdisc", "del", "dev", "up0", "root"])?;
            baselines.push((label, runs?));
        }
        b.live.bridge_uplink("up0", false)?;
        let ovs = b.ovs_with_burst("active-backup", &[(0, rate)], burst)?;
        let runs = measure();
        b.stop_ovs(ovs)?;
        baselines.push(("OVS OpenFlow meter, same rate and burst", runs?));

        for (i, (streams, x)) in xnic_runs.iter().enumerate() {
            let scenario = format!(
                "{rate} Mbit/s allocation, default burst ({} KiB), {streams} TCP stream(s), iperf3 {TCP_SECS} s, guests with default TCP settings",
                burst / 1024
            );
            let fraction =
                |d: &xnic::lab::traffic::IperfDetail| d.report.bits_per_second / (rate * 1e6);
            let stalls = |d: &xnic::lab::traffic::IperfDetail| {
                d.intervals_bps.iter().filter(|b| **b < rate * 1e4).count() as f64
            };
            let of = |f: &dyn Fn(&xnic::lab::traffic::IperfDetail) -> f64| {
                baselines
                    .iter()
                    .map(|(label, runs)| (*label, f(&runs[i].1)))
                    .collect::<Vec<_>>()
            };
            eprintln!(
                "  {rate} Mbit/s, {streams} stream(s): xnic {:.3} of the allocation, {} retransmits, {} empty intervals",
                fraction(x),
                x.report.retransmits,
                stalls(x)
            );
            report.add(
                "TCP goodput as a fraction of the allocation",
                &scenario,
                "fraction",
                Better::Higher,
                fraction(x),
                &of(&fraction),
            );
            report.add(
                "TCP retransmits",
                &scenario,
                "segments",
                Better::Lower,
                x.report.retransmits as f64,
                &of(&|d| d.report.retransmits as f64),
            );
            report.add(
                "100 ms intervals in which the receiver got under 1 % of the allocation",
                &scenario,
                "intervals",
                Better::Lower,
                stalls(x),
                &of(&stalls),
            );
        }
    }
    report.notes.push(format!(
        "TCP: iperf3 from vm0 to the tor for {TCP_SECS} s per case; goodput is what the receiver got; intervals are the receiver's own 100 ms reports. xnic runs with the default allocation_mode (shaped: TCP through an HTB class at the rate on the uplink); the strict row is the XDP policer alone. The other baselines bridge vm0's port with the uplink and put tbf on it, or switch with OVS and meter vm0's port, with the burst xnic gives the allocation by default."
    ));
    Ok(())
}

/// Part 4: egress frames per second, interleaved rounds of xnic, the kernel bridge and OVS.
fn egress(b: &Bench, opts: &Opts, report: &mut Report) -> anyhow::Result<()> {
    let Opts {
        secs,
        rounds,
        offered,
        ..
    } = *opts;
    let failover_cfg = b.live.config_path.clone();
    eprintln!("egress frames per second");
    let mut samples: [Vec<f64>; 3] = Default::default();
    for round in 1..=rounds {
        let daemon = b.xnic(&failover_cfg)?;
        let pps = egress_pps(b, offered, secs)?;
        b.live.stop_dataplane(daemon)?;
        eprintln!("  round {round}: xnic team path {pps:.0}/s");
        samples[0].push(pps);

        b.live.bridge_uplink("up0", true)?;
        let pps = egress_pps(b, offered, secs);
        b.live.bridge_uplink("up0", false)?;
        let pps = pps?;
        eprintln!("  round {round}: kernel bridge {pps:.0}/s");
        samples[1].push(pps);

        let ovs = b.ovs("active-backup", &[])?;
        let pps = egress_pps(b, offered, secs);
        b.stop_ovs(ovs)?;
        let pps = pps?;
        eprintln!("  round {round}: OVS {pps:.0}/s");
        samples[2].push(pps);
    }
    let [x, k, o] = samples.map(median);
    report.add(
        "egress frames per second, VM to uplink",
        &format!("trafgen in one VM offers {offered} pps of 64-byte UDP, random source ports; frames counted by XDP_DROP at the tor; median of {rounds} rounds"),
        "frames/s",
        Better::Higher,
        x,
        &[
            ("kernel bridge, no xnic", k),
            ("OVS active-backup bond (userspace datapath)", o),
        ],
    );
    report.notes.push(
        "Egress: xnic redirects each VM frame from the VM port's XDP program straight into the uplink; the kernel baseline bridges the VM port with the uplink (the tor's MAC statically known, so nothing floods); OVS switches with its NORMAL action over the bond.".into(),
    );
    Ok(())
}
