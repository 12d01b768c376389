//! `cargo xtask bench rings`: transaction rings between two hosts (each with its daemon and
//! rings worker, on one bridge) against TCP between the same two namespaces over the same
//! bridge in the same run: 64-byte WRITE and READ transactions one at a time (rate, p50,
//! p99) against sockperf's TCP ping-pong; 64 KiB WRITEs kept in flight against one iperf3
//! TCP stream; the same at 1 % loss.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use xnic::lab::rings::{RingsLab, WorkerKind, host_ip};
use xnic_rings::{
    client::{LocalRegion, QueuePair, RemoteRegion},
    engine::QpConfig,
    entries::{STATUS_SUCCESS, status_name},
};

use crate::{
    flag, live,
    report::{Better, Report},
};

/// The peer's region: room for a window of 64 KiB WRITEs.
const REGION: usize = 16 << 20;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the rings benchmark needs root (BPF, namespaces)");
    }
    let secs: f64 = flag(args, "--secs", 5.0)?;
    let mut report = Report::new("rings");
    let lab = RingsLab::up(
        &format!("xrb{}", std::process::id()),
        &live::xnic_bin()?,
        [WorkerKind::Thread; 2],
        QpConfig::default(),
    )?;
    let mut a = lab.client(0)?;
    let mut b = lab.client(1)?;
    let _theirs = b.register("bench", REGION)?;
    let mine = a.register("bench", REGION)?;
    let remote = a.lookup(host_ip(1), "bench")?;
    let mut qp = a.connect_qp(host_ip(1))?;

    eprintln!("rings: 64 B transactions one at a time");
    let write = one_at_a_time(&mut qp, &mine, &remote, true, secs)?;
    let read = one_at_a_time(&mut qp, &mine, &remote, false, secs)?;
    let tcp = sockperf(&lab, secs)?;
    eprintln!("  WRITE {write:?}\n  READ {read:?}\n  TCP {tcp:?}");
    for (what, x) in [("WRITE", &write), ("READ", &read)] {
        report.add(
            "transactions/s",
            &format!("64 B {what}, one at a time"),
            "transactions/s",
            Better::Higher,
            x.rate,
            &[(
                "TCP request/response, 64 B (sockperf ping-pong, same run)",
                tcp.rate,
            )],
        );
        for (p, xv, tv) in [("p50", x.p50_us, tcp.p50_us), ("p99", x.p99_us, tcp.p99_us)] {
            report.add(
                &format!("latency {p}"),
                &format!("64 B {what}, completion after the answer"),
                "µs",
                Better::Lower,
                xv,
                &[(
                    "TCP round trip, 64 B (sockperf, twice its one-way figure)",
                    tv,
                )],
            );
        }
    }

    eprintln!("rings: 64 KiB WRITEs in flight");
    let clean = throughput(&mut qp, &mine, &remote, secs)?;
    let tcp_clean = iperf3(&lab, secs)?;
    lab.lose(1)?;
    let lossy = throughput(&mut qp, &mine, &remote, secs)?;
    let tcp_lossy = iperf3(&lab, secs)?;
    let lost = lab.lost();
    lab.lose(0)?;
    eprintln!(
        "  clean {clean:.0} vs {tcp_clean:.0} bit/s; 1 % loss {lossy:.0} vs {tcp_lossy:.0} ({lost} dropped)"
    );
    report.add(
        "throughput",
        "64 KiB WRITEs, 32 in flight",
        "bit/s",
        Better::Higher,
        clean,
        &[("iperf3, one TCP stream (same run)", tcp_clean)],
    );
    report.add(
        "goodput at 1 % loss",
        "64 KiB WRITEs, 32 in flight, 1 % of packets dropped each way",
        "bit/s",
        Better::Higher,
        lossy,
        &[(
            "iperf3, one TCP stream, the same loss (same run)",
            tcp_lossy,
        )],
    );
    let status = a.status()?;
    report.notes.push(format!(
        "Two hosts (network namespaces), each with its xnic daemon and a rings worker (AF_XDP copy mode on a veth), on a bridge in a third namespace; the TCP baselines run between the same two namespaces over the same bridge. One-at-a-time rows post one request and wait for its completion, {secs} s each; TCP latency is sockperf's ping-pong (its figure is half the round trip: doubled here). Throughput rows keep 32 WRITEs of 64 KiB in flight for {secs} s. Loss: nftables in the bridge drops 1 % of IPv4 packets each way (numgen random), {lost} dropped over both 1 % runs. The worker sent {} packets again over the run.",
        status.retransmitted
    ));
    drop(qp);
    drop(lab);
    report.write()
}

#[derive(Debug, Default)]
struct Latency {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
}

fn complete(qp: &mut QueuePair) -> anyhow::Result<()> {
    let c = qp
        .wait(Duration::from_secs(10))?
        .context("no completion within 10 s")?;
    if c.status != STATUS_SUCCESS {
        bail!("a request failed: {}", status_name(c.status, c.nak));
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

/// 64-byte WRITEs (or READs) one at a time for `secs`.
fn one_at_a_time(
    qp: &mut QueuePair,
    local: &LocalRegion,
    remote: &RemoteRegion,
    write: bool,
    secs: f64,
) -> anyhow::Result<Latency> {
    let mut times = Vec::new();
    let start = Instant::now();
    let mut id = 0;
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        let posted = if write {
            qp.write(id, local, 0, remote, 0, 64)
        } else {
            qp.read(id, local, 0, remote, 0, 64)
        };
        posted.map_err(|_| anyhow::anyhow!("submission ring full"))?;
        complete(qp)?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        id += 1;
    }
    let total = start.elapsed().as_secs_f64();
    let rate = times.len() as f64 / total;
    times.sort_by(f64::total_cmp);
    Ok(Latency {
        rate,
        p50_us: percentile(&times, 0.5),
        p99_us: percentile(&times, 0.99),
    })
}

/// Bits per second of 64 KiB WRITEs, 32 in flight, for `secs`.
fn throughput(
    qp: &mut QueuePair,
    local: &LocalRegion,
    remote: &RemoteRegion,
    secs: f64,
) -> anyhow::Result<f64> {
    const LEN: u32 = 64 * 1024;
    const IN_FLIGHT: u64 = 32;
    let start = Instant::now();
    let (mut posted, mut done) = (0u64, 0u64);
    while start.elapsed().as_secs_f64() < secs {
        while posted - done < IN_FLIGHT {
            let at = (posted % IN_FLIGHT) * u64::from(LEN);
            if qp.write(posted, local, at, remote, at, LEN).is_err() {
                break;
            }
            posted += 1;
        }
        complete(qp)?;
        done += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    while done < posted {
        complete(qp)?;
        done += 1;
    }
    Ok(done as f64 * f64::from(LEN) * 8.0 / elapsed.max(1e-9))
}

/// A server in host b's namespace for the duration of `f`.
fn with_server<T>(
    lab: &RingsLab,
    server: &[&str],
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", lab.host(1)])
        .args(server)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the baseline's server")?;
    std::thread::sleep(Duration::from_millis(500));
    let r = f();
    let _ = child.kill();
    let _ = child.wait();
    r
}

/// sockperf's TCP ping-pong of 64 B from host a to host b.
fn sockperf(lab: &RingsLab, secs: f64) -> anyhow::Result<Latency> {
    let ip = host_ip(1).to_string();
    with_server(
        lab,
        &["sockperf", "sr", "--tcp", "-i", &ip, "-p", "11111"],
        || {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    lab.host(0),
                    "sockperf",
                    "pp",
                    "--tcp",
                    "-i",
                    &ip,
                ])
                .args([
                    "-p",
                    "11111",
                    "-m",
                    "64",
                    "-t",
                    &format!("{}", secs.ceil() as u64),
                ])
                .output()
                .context("running sockperf (run `cargo xtask setup`)")?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            let field = |key: &str| -> Option<f64> {
                text.lines().find_map(|l| {
                    let at = l.find(key)? + key.len();
                    l[at..]
                        .trim_start_matches([' ', '='])
                        .split_whitespace()
                        .next()?
                        .trim_end_matches(';')
                        .parse()
                        .ok()
                })
            };
            let run = field("RunTime=").context("no RunTime in sockperf's report")?;
            let sent = field("SentMessages=").context("no SentMessages in sockperf's report")?;
            // Its latencies are half a round trip.
            let p50 = field("percentile 50.000").context("no p50")? * 2.0;
            let p99 = field("percentile 99.000").context("no p99")? * 2.0;
            Ok(Latency {
                rate: sent / run,
                p50_us: p50,
                p99_us: p99,
            })
        },
    )
}

/// One iperf3 TCP stream from host a to host b: bits per second received.
fn iperf3(lab: &RingsLab, secs: f64) -> anyhow::Result<f64> {
    let ip = host_ip(1).to_string();
    with_server(lab, &["iperf3", "-s", "-1", "-B", &ip], || {
        let out = Command::new("ip")
            .args(["netns", "exec", lab.host(0), "iperf3", "-c", &ip, "-J"])
            .args(["-t", &format!("{}", secs.ceil() as u64)])
            .output()
            .context("running iperf3")?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("iperf3's JSON report")?;
        v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("no bits_per_second in iperf3's report")
    })
}
