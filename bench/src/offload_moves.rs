//! The offload benchmark's rows about moving flows between the paths, on the routed lab of
//! [`crate::offload_live`]:
//!
//! - **learning**: about 100k short UDP flows arrive, one datagram each way (the answer is
//!   what confirms a UDP flow); how fast the daemon promotes them (conntrack learned, its
//!   entry made ready, the flow written to the table) against how fast they arrive;
//! - **churn**: a sequence-numbered UDP stream while its flow is sent back to the slow path
//!   and promoted again over and over; what the receiver lost, got twice or got out of order,
//!   with xnic's moves (each waits for what is in flight on the path the flow leaves)
//!   against moves that switch at once (`flows.ordered_moves = false`), measured the same way.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use xnic::{
    api::types::{FlowRequest, FlowRequestView},
    cli::block_on,
    lab::{
        ip,
        routed::SERVER_IP,
        traffic::{MAGIC, Receiver, RecvReport, SendReport, UdpStream, iperf3_streams, send_udp},
    },
};

use crate::{
    live,
    offload_live::Bench,
    report::{Better, Report, median},
};

/// Learning: destination ports (an echo on each at the server) and source ports; their
/// counts are coprime, so trafgen's two incrementing fields make every (source, destination)
/// pair once in `LEARN_SPORTS × LEARN_PORTS` frames: 100,005 flows.
const LEARN_FIRST_PORT: u16 = 9200;
const LEARN_PORTS: u16 = 5;
const LEARN_FIRST_SPORT: u32 = 1024;
const LEARN_SPORTS: u32 = 20_001;
/// New flows per second: about what five echo threads answer on two CPUs beside everything
/// else, and more than the daemon promotes, so that the row measures the daemon.
const LEARN_PPS: u64 = 40_000;
/// How long the promoted count may stand still before learning is taken as done: longer
/// than the sampler's resync dump (10 s), so a flow only a dump brings in is counted.
const LEARN_SETTLE: Duration = Duration::from_secs(12);
/// The longest a learning run waits.
const LEARN_MAX: Duration = Duration::from_secs(90);

/// Churn: the stream's port, rate and length, and the moves asked for meanwhile.
const CHURN_PORT: u16 = 9300;
const CHURN_PPS: u64 = 100_000;
const CHURN_SECS: u64 = 20;
const CHURN_CYCLES: u32 = 100;
/// How long one cycle may take (demotion, hand-back, promotion, the switch).
const CYCLE_WAIT: Duration = Duration::from_secs(3);
/// The daemon's `[flows]` for churn: decisions every 50 ms and no cooldown, so a flow sent
/// back comes in again at once.
const CHURN_FLOWS: &str = "select = \"all\"\nperiod_ms = 50\ncooldown_s = 0";

/// What the receiver of one churn run saw.
#[derive(Clone, Copy, Debug, Default)]
struct Churn {
    cycles: u32,
    sent: u64,
    send_errors: u64,
    lost: u64,
    reordered: u64,
    duplicated: u64,
    /// The TCP stream's, by its sender.
    retransmits: u64,
}

impl Churn {
    fn of(cycles: u32, sent: &SendReport, got: &RecvReport) -> Churn {
        Churn {
            cycles,
            sent: sent.sent,
            send_errors: sent.send_errors,
            lost: sent.sent.saturating_sub(got.received),
            reordered: got.reordered,
            duplicated: got.duplicates,
            retransmits: 0,
        }
    }
}

/// A churn row: its metric, unit and figure.
type ChurnMetric = (&'static str, &'static str, fn(&Churn) -> u64);

/// How a churn run moves its flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Moves {
    /// xnic's: each move waits for what is in flight.
    Ordered,
    /// Switching at once (`flows.ordered_moves = false`).
    AtOnce,
    /// None: the slow path alone carries the same traffic, no daemon.
    SlowOnly,
}

impl Moves {
    fn label(self) -> &'static str {
        match self {
            Moves::Ordered => "xnic's moves (waiting for what is in flight)",
            Moves::AtOnce => "moves that switch at once (flows.ordered_moves = false)",
            Moves::SlowOnly => "no moves: the slow path alone, same traffic",
        }
    }
}

impl Bench {
    /// One churn run, with an iperf3 stream beside the UDP one when `tcp`.
    fn churn(&self, moves: Moves, tcp: bool) -> anyhow::Result<Churn> {
        let daemon = match moves {
            Moves::SlowOnly => None,
            _ => Some(self.start_daemon_with(&format!(
                "{CHURN_FLOWS}\nordered_moves = {}",
                moves == Moves::Ordered
            ))?),
        };
        let measured = (|| {
            let dst: SocketAddr = format!("{SERVER_IP}:{CHURN_PORT}").parse()?;
            let echo = Receiver::start_echo(Some(&self.lab.tor_ns()), dst)?;
            let vm = self.vm_ns();
            let stream = std::thread::spawn(move || {
                send_udp(
                    Some(&vm),
                    UdpStream {
                        dst,
                        flows: 1,
                        pps: CHURN_PPS,
                        duration: Duration::from_secs(CHURN_SECS),
                        payload: 64,
                        zipf: None,
                    },
                )
            });
            // TCP beside it, as much as it can: the host's CPUs busy, its queues longer.
            let (tor, vm) = (self.lab.tor_ns(), self.vm_ns());
            let tcp = tcp.then(|| {
                std::thread::spawn(move || {
                    iperf3_streams(&tor, SERVER_IP, &vm, CHURN_SECS as u32, 1)
                })
            });
            let cycled = (|| {
                if moves == Moves::SlowOnly {
                    return anyhow::Ok(0);
                }
                let end = Instant::now() + Duration::from_secs(CHURN_SECS) - CYCLE_WAIT;
                // The daemon just started: any promotion counts (reading the count first
                // raced with a quick first promotion, then waited for one that never came).
                self.wait_back(0)?;
                let mut cycles = 0;
                while cycles < CHURN_CYCLES && Instant::now() < end {
                    let before = self.stats()?.promoted;
                    let _: FlowRequestView = block_on(self.client().post_json(
                        "/v1/flows/demote",
                        &FlowRequest {
                            all: true,
                            ..FlowRequest::default()
                        },
                    ))?;
                    self.wait_back(before)?;
                    cycles += 1;
                }
                anyhow::Ok(cycles)
            })();
            let sent = stream
                .join()
                .map_err(|_| anyhow::anyhow!("the UDP sender panicked"))?;
            let got = echo.stop()?;
            let retransmits = match tcp {
                Some(t) => {
                    t.join()
                        .map_err(|_| anyhow::anyhow!("iperf3 panicked"))??
                        .report
                        .retransmits
                }
                None => 0,
            };
            let (cycles, sent) = (cycled?, sent?);
            if moves != Moves::SlowOnly && cycles < CHURN_CYCLES / 2 {
                bail!("only {cycles} promote/demote cycles in {CHURN_SECS} s");
            }
            Ok(Churn {
                retransmits,
                ..Churn::of(cycles, &sent, &got)
            })
        })();
        if let Some(d) = daemon {
            self.stop_daemon(d)?;
        }
        measured
    }

    /// Waits until a flow was promoted since the count was `before` and is on the fast path.
    fn wait_back(&self, before: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + CYCLE_WAIT;
        while self.stats()?.promoted <= before || self.active("udp")? == 0 {
            if Instant::now() > deadline {
                bail!(
                    "the stream's flow did not come back to the fast path within {CYCLE_WAIT:?}: {:?}",
                    self.stats()?
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// One learning run: new flows arriving at [`LEARN_PPS`]; the flows conntrack confirmed,
    /// how long they took to arrive, the flows the daemon promoted and how long that took
    /// from the first arrival.
    fn learning(&self) -> anyhow::Result<Learning> {
        let vm_ns = self.vm_ns();
        let nft = |ns: &str, cmd: &str| {
            ip(&["netns", "exec", ns, "sh", "-c", cmd]).with_context(|| format!("in {ns}: {cmd}"))
        };
        let last = LEARN_FIRST_PORT + LEARN_PORTS - 1;
        // The answers reach the VM, where nothing listens: dropped quietly there rather
        // than answered with 100k ICMP errors.
        nft(
            &vm_ns,
            &format!(
                "nft add table ip xbench && nft add chain ip xbench input '{{ type filter hook input priority 0; }}' && nft add rule ip xbench input udp sport {LEARN_FIRST_PORT}-{last} drop"
            ),
        )?;
        let cfg = std::env::temp_dir().join(format!("{vm_ns}.learn.trafgen"));
        // The receivers' header: their magic, then flow 0, sequence 0 and no send time
        // (each datagram is the only one of its flow).
        let magic = MAGIC.to_be_bytes().map(|b| format!("{b:#04x}")).join(", ");
        let vm = &self.lab.vms[0];
        std::fs::write(
            &cfg,
            format!(
                "{{\n  eth(da={}, sa={}, type=0x0800),\n  ipv4(saddr={}, daddr={SERVER_IP}, ttl=64),\n  udp(sp=dinc({LEARN_FIRST_SPORT}, {}), dp=dinc({LEARN_FIRST_PORT}, {last})),\n  {magic},\n  fill(0x00, 20)\n}}\n",
                vm.port_mac,
                vm.mac,
                vm.ip,
                LEARN_FIRST_SPORT + LEARN_SPORTS - 1
            ),
        )?;
        let daemon = self.start_daemon_with("select = \"all\"")?;
        let measured = (|| {
            let mut echoes = Vec::new();
            for port in LEARN_FIRST_PORT..=last {
                let at: SocketAddr = format!("{SERVER_IP}:{port}").parse()?;
                echoes.push(Receiver::start_echo(Some(&self.lab.tor_ns()), at)?);
            }
            let frames = u64::from(LEARN_SPORTS) * u64::from(LEARN_PORTS);
            let p0 = self.stats()?.promoted;
            let t0 = Instant::now();
            let generator =
                live::trafgen_frames(&vm_ns, "eth0", &cfg, Some(LEARN_PPS), Some(frames))?;
            let sending = Duration::from_secs_f64(frames as f64 / LEARN_PPS as f64);
            let (mut promoted, mut at) = (p0, t0);
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let now = self.stats()?.promoted;
                if now != promoted {
                    (promoted, at) = (now, Instant::now());
                }
                let since_send = t0.elapsed().saturating_sub(sending);
                if (since_send > Duration::ZERO && at.elapsed() > LEARN_SETTLE)
                    || t0.elapsed() > LEARN_MAX
                {
                    break;
                }
            }
            generator.kill();
            let answered: u64 = echoes
                .into_iter()
                .map(|e| e.stop().map(|r| r.received))
                .sum::<anyhow::Result<u64>>()?;
            Ok(Learning {
                arrived: answered,
                arrival_secs: sending.as_secs_f64(),
                promoted: promoted - p0,
                promotion_secs: (at - t0).as_secs_f64(),
            })
        })();
        self.stop_daemon(daemon)?;
        let _ = std::fs::remove_file(&cfg);
        nft(&vm_ns, "nft delete table ip xbench")?;
        // A clean conntrack table for what follows.
        self.kernel_forwarding(false)?;
        self.kernel_forwarding(true)?;
        measured
    }
}

/// What one learning run saw.
#[derive(Clone, Copy, Debug)]
struct Learning {
    /// Flows answered at the server (each answer confirms one flow in conntrack).
    arrived: u64,
    arrival_secs: f64,
    promoted: u64,
    /// From the first arrival to the last promotion.
    promotion_secs: f64,
}

/// Adds the learning and churn rows to `report`.
pub fn rows(b: &Bench, report: &mut Report, rounds: usize) -> anyhow::Result<()> {
    let mut learned = Vec::new();
    for round in 0..rounds {
        let l = b.learning()?;
        eprintln!(
            "  learning round {round}: {} flows answered in {:.1} s, {} promoted in {:.1} s",
            l.arrived, l.arrival_secs, l.promoted, l.promotion_secs
        );
        if l.promoted < l.arrived * 9 / 10 {
            bail!(
                "the daemon promoted {} of {} confirmed flows",
                l.promoted,
                l.arrived
            );
        }
        learned.push(l);
    }
    let rate = median(
        learned
            .iter()
            .map(|l| l.promoted as f64 / l.promotion_secs)
            .collect(),
    );
    let arrival = median(
        learned
            .iter()
            .map(|l| l.arrived as f64 / l.arrival_secs)
            .collect(),
    );
    let flows = median(learned.iter().map(|l| l.arrived as f64).collect());
    report.add(
        "learning throughput, flows promoted per second",
        &format!("{flows:.0} short UDP flows (one datagram each way) arriving"),
        "flows/s",
        Better::Higher,
        rate,
        &[("the flows' arrival rate (confirmed by conntrack)", arrival)],
    );
    report.notes.push(format!(
        "Learning: trafgen in the VM sends one datagram for each of {} (source port, destination port) pairs at {LEARN_PPS}/s to {LEARN_PORTS} echoes at the server, whose answers confirm each flow in conntrack; promoted flows are the daemon's own count (each one: conntrack's entry made liberal with a fresh timeout through ctnetlink, then the table's slot and keys), from the first datagram to the last promotion; {rounds} round(s), median.",
        u64::from(LEARN_SPORTS) * u64::from(LEARN_PORTS)
    ));

    for tcp in [false, true] {
        let modes: &[Moves] = if tcp {
            &[Moves::Ordered, Moves::AtOnce, Moves::SlowOnly]
        } else {
            &[Moves::Ordered, Moves::AtOnce]
        };
        let mut runs: Vec<Vec<Churn>> = vec![Vec::new(); modes.len()];
        for round in 0..rounds {
            for (i, m) in modes.iter().enumerate() {
                let c = b.churn(*m, tcp)?;
                eprintln!(
                    "  churn round {round}{}, {}: {} cycles, {} sent ({} refused by the socket), {} lost, {} reordered, {} duplicated, {} TCP retransmits",
                    if tcp { " with TCP" } else { "" },
                    m.label(),
                    c.cycles,
                    c.sent,
                    c.send_errors,
                    c.lost,
                    c.reordered,
                    c.duplicated,
                    c.retransmits
                );
                runs[i].push(c);
            }
        }
        let med =
            |i: usize, f: fn(&Churn) -> u64| median(runs[i].iter().map(|c| f(c) as f64).collect());
        let cycles = med(0, |c| u64::from(c.cycles)).min(med(1, |c| u64::from(c.cycles)));
        let scenario = if tcp {
            format!(
                "UDP at {CHURN_PPS} datagrams/s beside an iperf3 stream for {CHURN_SECS} s, every flow sent back and promoted again {cycles:.0} times"
            )
        } else {
            format!(
                "UDP at {CHURN_PPS} datagrams/s for {CHURN_SECS} s, sent back and promoted again {cycles:.0} times"
            )
        };
        let mut metrics: Vec<ChurnMetric> = vec![
            ("UDP datagrams lost", "datagrams", |c| c.lost),
            ("UDP datagrams reordered", "datagrams", |c| c.reordered),
            ("UDP datagrams duplicated", "datagrams", |c| c.duplicated),
        ];
        if tcp {
            metrics.push(("TCP segments retransmitted", "segments", |c| c.retransmits));
        }
        for (metric, unit, f) in metrics {
            let baselines: Vec<(&str, f64)> = (1..modes.len())
                .map(|i| (modes[i].label(), med(i, f)))
                .collect();
            report.add(
                &format!("promote/demote churn, {metric} per run"),
                &scenario,
                unit,
                Better::Lower,
                med(0, f),
                &baselines,
            );
        }
    }
    report.notes.push(format!(
        "Churn: a sequence-numbered UDP stream from the VM to an echo at the server (the receiver counts losses, duplicates and datagrams that came after a later one), alone and then beside an unpaced iperf3 TCP stream on the same path (its retransmits are the sender's); meanwhile `/v1/flows/demote` sends every flow back, and the next period (50 ms, no cooldown) promotes it again, up to {CHURN_CYCLES} times a run; xnic's moves wait for what is in flight on the path the flow leaves, the baseline's switch at once (same daemon with `flows.ordered_moves = false`); with TCP, the slow path alone carrying the same traffic shows what it reorders and loses by itself (XDP on a veth moves forwarding between CPUs from one NAPI poll to the next), which a flow meets for as long as it is on the slow path in each cycle; {rounds} interleaved round(s), median."
    ));
    Ok(())
}
