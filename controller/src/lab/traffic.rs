//! Traffic for the lab and the tests: sequence-numbered UDP flows whose receiver counts loss,
//! reordering and duplicates per flow, plus thin wrappers around ping and iperf3.
//!
//! Senders and receivers run on threads that enter the lab's namespaces, so one process can
//! drive a whole lab.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    os::fd::AsFd as _,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::netns;

/// Marks our datagrams ("xnic"), so stray traffic on the port is not counted.
pub const MAGIC: u32 = 0x786e_6963;
/// Header of every datagram: magic, flow id, sequence number, send time (ns).
const HEADER_LEN: usize = 24;
/// How long a stopped receiver keeps draining its socket.
const MAX_DRAIN: Duration = Duration::from_secs(2);

/// A set of UDP flows from one namespace to one address, sent at a steady total rate.
#[derive(Clone, Debug)]
pub struct UdpStream {
    pub dst: SocketAddr,
    /// Distinct flows (each its own source port).
    pub flows: u32,
    /// Total datagrams per second over all flows.
    pub pps: u64,
    pub duration: Duration,
    /// UDP payload bytes (at least the 24-byte header).
    pub payload: usize,
    /// Per-flow rates: `None` for equal shares, `Some(s)` for a Zipf law with exponent `s`
    /// (flow k gets a share ∝ 1/(k+1)^s: a few elephants and many mice).
    pub zipf: Option<f64>,
}

/// Picks the flow of each datagram: round-robin for equal shares, otherwise by weight in O(1)
/// (Vose's alias method) with a fixed-seed generator, so runs are repeatable.
struct FlowPicker {
    next: u64,
    alias: Option<(Vec<f64>, Vec<usize>)>,
    rng: u64,
    flows: usize,
}

impl FlowPicker {
    fn new(flows: usize, zipf: Option<f64>) -> FlowPicker {
        let alias = zipf.map(|s| {
            let weights: Vec<f64> = (0..flows).map(|k| 1.0 / ((k + 1) as f64).powf(s)).collect();
            alias_table(&weights)
        });
        FlowPicker {
            next: 0,
            alias,
            rng: 0x9E37_79B9_7F4A_7C15,
            flows,
        }
    }

    fn pick(&mut self) -> usize {
        let Some((prob, alias)) = &self.alias else {
            let f = (self.next % self.flows as u64) as usize;
            self.next += 1;
            return f;
        };
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let column = (r >> 32) as usize % self.flows;
        let coin = (r & 0xffff_ffff) as f64 / 4_294_967_296.0;
        if coin < prob[column] {
            column
        } else {
            alias[column]
        }
    }
}

/// Vose's alias table for sampling index k with probability ∝ `weights[k]`.
fn alias_table(weights: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let n = weights.len();
    let total: f64 = weights.iter().sum();
    let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
    let mut prob = vec![1.0; n];
    let mut alias: Vec<usize> = (0..n).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| scaled[i] < 1.0);
    while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
        prob[s] = scaled[s];
        alias[s] = l;
        scaled[l] -= 1.0 - scaled[s];
        if scaled[l] < 1.0 {
            large.pop();
            small.push(l);
        }
    }
    (prob, alias)
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    pub sent: u64,
    /// Datagrams the kernel refused to send (full socket buffer).
    pub send_errors: u64,
    pub elapsed_secs: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecvReport {
    /// Datagrams received, duplicates excluded.
    pub received: u64,
    /// Datagrams that arrived after a later one of the same flow.
    pub reordered: u64,
    pub duplicates: u64,
    /// Sequence numbers missing below the highest seen, per flow, summed. Loss at the very
    /// end of a flow shows only against the sender's count.
    pub gaps: u64,
    pub flows: u64,
    /// Each flow on its own, by sender port (filled by receivers that keep them).
    #[serde(default)]
    pub per_flow: Vec<FlowRecv>,
}

/// One flow as its receiver saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowRecv {
    /// The sender's UDP port.
    pub src_port: u16,
    pub received: u64,
    pub gaps: u64,
    /// The longest time between two of its datagrams arriving, in milliseconds: how long an
    /// outage it saw lasted.
    pub longest_silence_ms: f64,
}

impl RecvReport {
    /// Two receivers' reports as one (a stream that may land on either).
    pub fn merged(&self, other: &RecvReport) -> RecvReport {
        RecvReport {
            received: self.received + other.received,
            reordered: self.reordered + other.reordered,
            duplicates: self.duplicates + other.duplicates,
            gaps: self.gaps + other.gaps,
            flows: self.flows + other.flows,
            per_flow: self
                .per_flow
                .iter()
                .chain(&other.per_flow)
                .cloned()
                .collect(),
        }
    }
}

/// Shorter waits than this are not worth a sleep: the datagram goes out at once.
const MIN_SLEEP: Duration = Duration::from_micros(10);

/// Sends `stream` from namespace `ns` (the caller's namespace when `None`); blocks until done.
pub fn send_udp(ns: Option<&str>, stream: UdpStream) -> anyhow::Result<SendReport> {
    send_udp_from(ns, stream, None)
}

/// [`send_udp`] with flow k sent from UDP port `first_port + k` (when given), so a flow can
/// be told apart by its port wherever it goes.
pub fn send_udp_from(
    ns: Option<&str>,
    stream: UdpStream,
    first_port: Option<u16>,
) -> anyhow::Result<SendReport> {
    let work = move || send_here(&stream, first_port);
    match ns {
        Some(ns) => netns::run_in(ns, work),
        None => work(),
    }
}

fn send_here(s: &UdpStream, first_port: Option<u16>) -> anyhow::Result<SendReport> {
    if s.pps == 0 || s.flows == 0 {
        bail!("a UDP stream needs at least one flow and a non-zero rate");
    }
    let bind: SocketAddr = if s.dst.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let sockets: Vec<UdpSocket> = (0..s.flows)
        .map(|k| {
            let mut bind = bind;
            if let Some(p) = first_port {
                bind.set_port(p.wrapping_add(k as u16));
            }
            let sock = UdpSocket::bind(bind)?;
            sock.connect(s.dst)?;
            Ok(sock)
        })
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot open UDP sockets towards {}", s.dst))?;
    let mut buf = vec![0u8; s.payload.max(HEADER_LEN)];
    buf[..4].copy_from_slice(&MAGIC.to_be_bytes());
    let mut seqs = vec![0u64; sockets.len()];
    let mut picker = FlowPicker::new(sockets.len(), s.zipf);
    let total = (s.pps as f64 * s.duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / s.pps as f64);
    let start = Instant::now();
    let mut report = SendReport::default();
    // Sleep between datagrams rather than spin: several senders on a small machine must
    // leave CPU time to what they measure. Without timer slack, a sleep ends within a few
    // microseconds of when it should; a late datagram is sent at once (the schedule is
    // absolute, so the rate holds).
    let _ = nix::sys::prctl::set_timerslack(1);
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now + MIN_SLEEP {
            std::thread::sleep(due - now);
        }
        let flow = picker.pick();
        buf[4..8].copy_from_slice(&(flow as u32).to_be_bytes());
        buf[8..16].copy_from_slice(&seqs[flow].to_be_bytes());
        let ns = start.elapsed().as_nanos() as u64;
        buf[16..24].copy_from_slice(&ns.to_be_bytes());
        match sockets[flow].send(&buf) {
            Ok(_) => {
                seqs[flow] += 1;
                report.sent += 1;
            }
            Err(_) => report.send_errors += 1,
        }
    }
    report.elapsed_secs = start.elapsed().as_secs_f64();
    Ok(report)
}

#[derive(Default)]
struct FlowState {
    /// One past the highest sequence number seen.
    next: u64,
    received: u64,
    reordered: u64,
    duplicates: u64,
    seen: Vec<u64>,
    last_arrival: Option<Instant>,
    longest_silence: Duration,
}

impl FlowState {
    fn record(&mut self, seq: u64) {
        let now = Instant::now();
        if let Some(last) = self.last_arrival {
            self.longest_silence = self.longest_silence.max(now - last);
        }
        self.last_arrival = Some(now);
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.received += 1;
        if seq + 1 < self.next {
            self.reordered += 1;
        }
        self.next = self.next.max(seq + 1);
    }
}

/// Counts datagrams of [`send_udp`] streams arriving on a UDP port.
pub struct Receiver {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<RecvReport>>,
}

impl Receiver {
    /// Listens on `bind` inside namespace `ns` (the caller's namespace when `None`). Returns
    /// once the socket is bound.
    pub fn start(ns: Option<&str>, bind: SocketAddr) -> anyhow::Result<Receiver> {
        Receiver::start_with(ns, bind, false)
    }

    /// [`Receiver::start`] that also answers every datagram with its header, so the flow
    /// carries traffic both ways (conntrack confirms UDP only once it has seen a reply).
    pub fn start_echo(ns: Option<&str>, bind: SocketAddr) -> anyhow::Result<Receiver> {
        Receiver::start_with(ns, bind, true)
    }

    fn start_with(ns: Option<&str>, bind: SocketAddr, echo: bool) -> anyhow::Result<Receiver> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ns = ns.map(str::to_string);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let setup = || -> anyhow::Result<UdpSocket> {
                if let Some(ns) = &ns {
                    netns::enter(ns)?;
                }
                let sock = UdpSocket::bind(bind).with_context(|| format!("cannot bind {bind}"))?;
                // Deep buffer: a test must see what the network did, not a slow reader.
                let _ = nix::sys::socket::setsockopt(
                    &sock.as_fd(),
                    nix::sys::socket::sockopt::RcvBufForce,
                    &(32 << 20),
                );
                sock.set_read_timeout(Some(Duration::from_millis(50)))?;
                Ok(sock)
            };
            let sock = match setup() {
                Ok(s) => {
                    let _ = ready_tx.send(s.local_addr().map_err(anyhow::Error::from));
                    s
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    let _ = ready_tx.send(Err(e));
                    bail!(msg);
                }
            };
            // A flow is a sender socket and its flow id: several senders may use the same ids.
            let mut flows: HashMap<(SocketAddr, u32), FlowState> = HashMap::new();
            let mut buf = [0u8; 65536];
            // Drain what is queued even after stop is asked, but not for ever: a sender that
            // never stops must not hang the caller.
            let mut idle_after_stop = 0;
            let mut stop_seen: Option<Instant> = None;
            loop {
                if flag.load(Ordering::Relaxed) {
                    let since = *stop_seen.get_or_insert_with(Instant::now);
                    if since.elapsed() > MAX_DRAIN {
                        break;
                    }
                }
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) if n >= HEADER_LEN && buf[..4] == MAGIC.to_be_bytes() => {
                        let flow = u32::from_be_bytes(buf[4..8].try_into()?);
                        let seq = u64::from_be_bytes(buf[8..16].try_into()?);
                        flows.entry((from, flow)).or_default().record(seq);
                        if echo {
                            // Best effort: a full socket buffer loses an answer, not a count.
                            let _ = sock.send_to(&buf[..HEADER_LEN], from);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if flag.load(Ordering::Relaxed) {
                            idle_after_stop += 1;
                            if idle_after_stop >= 2 {
                                break;
                            }
                        }
                    }
                }
            }
            let mut r = RecvReport {
                flows: flows.len() as u64,
                ..RecvReport::default()
            };
            for ((from, _), f) in &flows {
                r.received += f.received;
                r.reordered += f.reordered;
                r.duplicates += f.duplicates;
                r.gaps += f.next - f.received;
                r.per_flow.push(FlowRecv {
                    src_port: from.port(),
                    received: f.received,
                    gaps: f.next - f.received,
                    longest_silence_ms: f.longest_silence.as_secs_f64() * 1e3,
                });
            }
            r.per_flow.sort_by_key(|f| f.src_port);
            Ok(r)
        });
        match ready_rx.recv() {
            Ok(Ok(addr)) => Ok(Receiver { addr, stop, thread }),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("receiver thread ended before binding"),
        }
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops after the socket has been quiet for a moment, and reports.
    pub fn stop(self) -> anyhow::Result<RecvReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?
    }
}

/// Result of [`ping`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingReport {
    pub sent: u32,
    pub received: u32,
}

/// Pings `target` from namespace `ns` (`count` echo requests, 50 ms apart).
pub fn ping(ns: &str, target: &str, count: u32) -> anyhow::Result<PingReport> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-q", "-n", "-c"])
        .arg(count.to_string())
        .args(["-i", "0.05", "-W", "1", target])
        .output()
        .context("cannot run ping (is iputils-ping installed? `cargo xtask setup` installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "5 packets transmitted, 5 received, 0% packet loss, time 4ms"
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .with_context(|| {
            format!(
                "ping {target} from {ns} printed no summary: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    let numbers: Vec<u32> = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    match numbers.as_slice() {
        [sent, received, ..] => Ok(PingReport {
            sent: *sent,
            received: *received,
        }),
        _ => bail!("cannot read ping's summary: {line}"),
    }
}

/// Result of [`iperf3`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IperfReport {
    pub bits_per_second: f64,
    pub retransmits: u64,
}

/// Runs an iperf3 TCP test for `secs` from `client_ns` to a one-shot server on `server_addr`
/// in `server_ns`.
pub fn iperf3(
    server_ns: &str,
    server_addr: &str,
    client_ns: &str,
    secs: u32,
) -> anyhow::Result<IperfReport> {
    iperf3_streams(server_ns, server_addr, client_ns, secs, 1).map(|d| d.report)
}

/// [`iperf3`] with `streams` parallel connections, and what the receiver got in each 100 ms.
#[derive(Clone, Debug, PartialEq)]
pub struct IperfDetail {
    pub report: IperfReport,
    /// Bits per second the server received, per 100 ms interval.
    pub intervals_bps: Vec<f64>,
}

pub fn iperf3_streams(
    server_ns: &str,
    server_addr: &str,
    client_ns: &str,
    secs: u32,
    streams: u32,
) -> anyhow::Result<IperfDetail> {
    let port = "5201";
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            server_ns,
            "iperf3",
            "-s",
            "-1",
            "-J",
            "-i",
            "0.1",
            "-B",
            server_addr,
            "-p",
            port,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("cannot run iperf3 (`cargo xtask setup` installs it)")?;
    // Give the server a moment to listen, retrying the client if it was too quick.
    let mut last_err = String::new();
    let mut result = None;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                client_ns,
                "iperf3",
                "-J",
                "-c",
                server_addr,
                "-p",
                port,
                "-P",
            ])
            .arg(streams.to_string())
            .arg("-t")
            .arg(secs.to_string())
            .output()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = json["end"]["sum_received"]["bits_per_second"].as_f64() {
            result = Some(IperfReport {
                bits_per_second: bps,
                retransmits: json["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
            });
            break;
        }
        last_err = json["error"].as_str().unwrap_or("no result").to_string();
    }
    let report = match result {
        Some(r) => r,
        None => {
            let mut server = server;
            let _ = server.kill();
            let _ = server.wait();
            bail!("iperf3 from {client_ns} to {server_addr} failed: {last_err}");
        }
    };
    // The one-shot server exits after the test and prints its own JSON.
    let out = server.wait_with_output()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let intervals_bps = json["intervals"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                .collect()
        })
        .unwrap_or_default();
    Ok(IperfDetail {
        report,
        intervals_bps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_picker_follows_the_weights() {
        let mut p = FlowPicker::new(8, Some(1.0));
        let mut counts = [0u32; 8];
        for _ in 0..200_000 {
            counts[p.pick()] += 1;
        }
        let h8: f64 = (1..=8).map(|k| 1.0 / k as f64).sum();
        for (k, c) in counts.iter().enumerate() {
            let want = 200_000.0 / ((k + 1) as f64 * h8);
            assert!(
                (*c as f64 - want).abs() < want * 0.05,
                "flow {k}: {c} vs {want}"
            );
        }
        let mut rr = FlowPicker::new(3, None);
        assert_eq!(
            (0..6).map(|_| rr.pick()).collect::<Vec<_>>(),
            vec![0, 1, 2, 0, 1, 2]
        );
    }

    #[test]
    fn flow_state_counts_reorder_duplicates_and_gaps() {
        let mut f = FlowState::default();
        for seq in [0, 1, 3, 2, 2, 5] {
            f.record(seq);
        }
        assert_eq!(f.received, 5);
        assert_eq!(f.reordered, 1);
        assert_eq!(f.duplicates, 1);
        assert_eq!(f.next - f.received, 1, "seq 4 missing");
    }

    #[test]
    fn udp_over_loopback_is_counted_exactly() {
        let rx = Receiver::start(None, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = rx.local_addr();
        let sent = send_udp(
            None,
            UdpStream {
                dst: addr,
                flows: 3,
                pps: 20_000,
                duration: Duration::from_millis(100),
                payload: 64,
                zipf: None,
            },
        )
        .unwrap();
        let got = rx.stop().unwrap();
        assert_eq!(sent.sent, 2000);
        assert_eq!(
            (got.received, got.flows, got.duplicates, got.gaps),
            (2000, 3, 0, 0)
        );
    }
}
