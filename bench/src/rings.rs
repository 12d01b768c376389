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
use xnic::lab::rings::{RingsLab, RingsLabOptions, host_ip};
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
    let busy_poll_us: u64 = flag(args, "--busy-poll-us", 200)?;
    let spin_us: u64 = flag(args, "--spin-us", 0)?;
    let options = RingsLabOptions {
        busy_poll: Duration::from_micros(busy_poll_us),
        pin_workers: flag(args, "--pin-workers", 1)? != 0,
        mtu: flag(args, "--mtu", RingsLabOptions::default().mtu)?,
        qp: QpConfig {
            window: flag(args, "--window", QpConfig::default().window)?,
            ..QpConfig::default()
        },
        ..RingsLabOptions::default()
    };
    let lab = RingsLab::up(
        &format!("xrb{}", std::process::id()),
        &live::xnic_bin()?,
        options,
    )?;
    let mut a = lab.client(0)?;
    let mut b = lab.client(1)?;
    let _theirs = b.register("bench", REGION)?;
    let mine = a.register("bench", REGION)?;
    let remote = a.lookup(host_ip(1), "bench")?;
    let mut qp = a.connect_qp(host_ip(1))?;
    qp.set_spin(Duration::from_micros(spin_us));

    // `--only latency|throughput`: one half (for profiling); the report says which ran.
    let only: String = flag(args, "--only", "all".to_string())?;
    if !matches!(only.as_str(), "all" | "latency" | "throughput") {
        bail!("--only takes latency or throughput");
    }
    // Each figure is the median of `rounds` runs, xnic and its baseline taking turns, so
    // a noisy moment of a shared machine moves one run, not the result.
    let rounds: usize = flag(args, "--rounds", 3)?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut lost = 0;
    if only != "throughput" {
        eprintln!("rings: 64 B transactions one at a time, {rounds} rounds");
        // Untimed: the first transactions fault the rings' and regions' pages in.
        one_at_a_time(&mut qp, &mine, &remote, true, 0.5)?;
        let (mut write, mut read, mut tcp) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            write.push(one_at_a_time(&mut qp, &mine, &remote, true, secs)?);
            read.push(one_at_a_time(&mut qp, &mine, &remote, false, secs)?);
            tcp.push(sockperf(&lab, secs)?);
        }
        eprintln!("  WRITE {write:?}\n  READ {read:?}\n  TCP {tcp:?}");
        let figure = |v: &[Latency], f: Figure| median(v.iter().map(f).collect());
        for (what, x) in [("WRITE", &write), ("READ", &read)] {
            report.add(
                "transactions/s",
                &format!("64 B {what}, one at a time"),
                "transactions/s",
                Better::Higher,
                figure(x, |l| l.rate),
                &[(
                    "TCP request/response, 64 B (sockperf ping-pong, same run)",
                    figure(&tcp, |l| l.rate),
                )],
            );
            let percentiles: [(&str, Figure); 2] = [("p50", |l| l.p50_us), ("p99", |l| l.p99_us)];
            for (p, f) in percentiles {
                report.add(
                    &format!("latency {p}"),
                    &format!("64 B {what}, completion after the answer"),
                    "µs",
                    Better::Lower,
                    figure(x, f),
                    &[(
                        "TCP round trip, 64 B (sockperf, twice its one-way figure)",
                        figure(&tcp, f),
                    )],
                );
            }
        }
    }
    if only != "latency" {
        eprintln!("rings: 64 KiB WRITEs in flight, {rounds} rounds");
        let (mut clean, mut tcp_clean, mut lossy, mut tcp_lossy) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            clean.push(throughput(&mut qp, &mine, &remote, secs)?);
            tcp_clean.push(iperf3(&lab, secs)?);
        }
        lab.lose(1)?;
        for _ in 0..rounds {
            lossy.push(throughput(&mut qp, &mine, &remote, secs)?);
            tcp_lossy.push(iperf3(&lab, secs)?);
        }
        lost = lab.lost();
        lab.lose(0)?;
        eprintln!(
            "  clean {clean:.0?} vs {tcp_clean:.0?} bit/s; 1 % loss {lossy:.0?} vs {tcp_lossy:.0?} ({lost} dropped)"
        );
        report.add(
            "throughput",
            "64 KiB WRITEs, 32 in flight",
            "bit/s",
            Better::Higher,
            median(clean),
            &[("iperf3, one TCP stream (same run)", median(tcp_clean))],
        );
        report.add(
            "goodput at 1 % loss",
            "64 KiB WRITEs, 32 in flight, 1 % of packets dropped each way",
            "bit/s",
            Better::Higher,
            median(lossy),
            &[(
                "iperf3, one TCP stream, the same loss (same run)",
                median(tcp_lossy),
            )],
        );
    }
    let status = a.status()?;
    report.notes.push(format!(
        "Two hosts (network namespaces), each with its xnic daemon and a rings worker (AF_XDP copy mode on a veth), on a bridge in a third namespace; the TCP baselines run between the same two namespaces over the same bridge. Each figure is the median of {rounds} runs of {secs} s, xnic and its baseline taking turns. Links of MTU {mtu} (RoCE's 2048-byte MTU with its headers, as RoCE fabrics run 4200 for 4096); the bridge calls no IP firewall. Workers busy-poll for {busy_poll_us} µs after their last work{pinned}; the application waits for completions {spin}. One-at-a-time rows post one request and wait for its completion; TCP latency is sockperf's ping-pong (its figure is half the round trip: doubled here). Throughput rows keep 32 WRITEs of 64 KiB in flight. Loss: nftables in the bridge drops 1 % of IPv4 packets each way (numgen random), {lost} dropped over both 1 % runs. The worker sent {} packets again over the run.",
        status.retransmitted,
        mtu = options.mtu,
        pinned = if options.pin_workers {
            ", each pinned to a CPU of its own (host a's to the first, b's to the second; the application and the TCP baselines run where the kernel puts them)"
        } else {
            ""
        },
        spin = if spin_us == 0 {
            "asleep on the doorbell".to_string()
        } else {
            format!("polling for {spin_us} µs, then asleep")
        },
    ));
    drop(qp);
    drop(lab);
    report.write()
}

/// One figure of a latency run.
type Figure = fn(&Latency) -> f64;

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
