//! `xnic monitor`: drops reported from the dataplane's ring buffer with reason, stage, port,
//! VM and decoded headers; filters; the dataplane's rate limit bounds what a flood reports,
//! and every drop past it is counted.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use xnic::lab::{
    TOR_UDP_PORT,
    traffic::{UdpStream, send_udp},
};
use xnic_tests::{TestLab, reason_count, xnic_bin};

const TOR_IP: &str = "10.77.0.1";
const SPOOFED: &str = "02:66:00:00:00:01";

/// vm0 sends from a MAC its port does not own: every frame is a spoofed_mac drop.
fn spoof(t: &TestLab) -> String {
    t.lab
        .set_vm_mac("vm0", SPOOFED, TOR_IP.parse().unwrap())
        .unwrap();
    t.vm_ns("vm0")
}

fn blast(ns: &str, pps: u64, ms: u64) -> u64 {
    send_udp(
        Some(ns),
        UdpStream {
            dst: SocketAddr::new(TOR_IP.parse().unwrap(), TOR_UDP_PORT),
            flows: 1,
            pps,
            duration: Duration::from_millis(ms),
            payload: 10,
            zipf: None,
        },
    )
    .unwrap()
    .sent
}

/// One JSON event a line, as `xnic monitor --json` prints them.
fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `xnic monitor ARGS` for `instance`, its output piped.
fn monitor(instance: &str, args: &[&str]) -> std::process::Child {
    Command::new(xnic_bin())
        .arg("monitor")
        .args(args)
        .args(["--instance", instance])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("xnic monitor")
}

#[test]
fn drops_are_reported_with_reason_port_vm_and_headers_and_floods_are_rate_limited() {
    let mut t = TestLab::new(1);
    t.start_daemon();
    let ns = spoof(&t);

    // Five drops, reported in full.
    let child = monitor(
        &t.instance,
        &[
            "--json",
            "--count",
            "5",
            "--duration",
            "20",
            "--reason",
            "spoofed_mac",
            "--hex",
        ],
    );
    // The monitor takes its lease before it reads; give it a moment.
    std::thread::sleep(Duration::from_millis(800));
    let sent = blast(&ns, 100, 200);
    assert!(sent >= 5);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 5, "{lines:?}");
    let vm0 = t.vm("vm0");
    for e in &lines {
        assert_eq!(e["reason"], "spoofed_mac", "{e}");
        assert_eq!(e["stage"], "classify", "{e}");
        assert_eq!(e["port"], vm0.port, "{e}");
        assert_eq!(e["src_mac"], SPOOFED, "{e}");
        assert_eq!(e["dst"], TOR_IP, "{e}");
        assert_eq!(e["dst_port"], TOR_UDP_PORT, "{e}");
        assert_eq!(e["proto"], "udp", "{e}");
        // Ethernet, IPv4, UDP and the sender's payload: short enough to be captured whole.
        let len = e["len"].as_u64().unwrap();
        assert!((52..=128).contains(&len), "{e}");
        assert_eq!(e["head"].as_str().unwrap().len() as u64, 2 * len, "{e}");
    }

    // A filter that matches nothing shows nothing.
    let child = monitor(
        &t.instance,
        &["--json", "--duration", "2", "--addr", "198.51.100.7"],
    );
    std::thread::sleep(Duration::from_millis(800));
    blast(&ns, 200, 200);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A flood at 20,000 frames/s against a limit of 100 events/s per CPU: the dataplane
    // reports at most the limit (plus its burst) and counts the rest; forwarding decisions
    // are not affected (every frame is still counted as dropped).
    let before = reason_count(&t.stats(), &vm0.port, "spoofed_mac").packets;
    let child = monitor(&t.instance, &["--duration", "3", "--rate", "100"]);
    std::thread::sleep(Duration::from_millis(800));
    let flood = blast(&ns, 20_000, 1000);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert!(
        shown > 0 && shown <= cpus * (100 * 2 + 10) + 10,
        "{shown} shown"
    );
    let summary = String::from_utf8_lossy(&out.stderr);
    let limited: u64 = summary
        .split("rate_limited ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate_limited count in {summary}"));
    assert!(limited >= flood / 2, "{summary}");
    let after = reason_count(&t.stats(), &vm0.port, "spoofed_mac").packets;
    assert_eq!(
        after - before,
        flood,
        "every frame of the flood counted as dropped"
    );

    // Bad input says what is wrong.
    let out = xnic_tests::xnic(&["monitor", "--reason", "nonsense", "--instance", &t.instance]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("known reasons"),
        "{out:?}"
    );
}

#[test]
fn a_watched_flow_is_traced_stage_by_stage_whatever_its_verdict() {
    let mut t = TestLab::new(1);
    t.start_daemon();
    let vm0 = t.vm("vm0");
    let port = TOR_UDP_PORT.to_string();
    let child = monitor(
        &t.instance,
        &[
            "--trace",
            "--addr",
            TOR_IP,
            "--l4-port",
            &port,
            "--proto",
            "udp",
            "--json",
            "--count",
            "5",
            "--duration",
            "20",
        ],
    );
    std::thread::sleep(Duration::from_millis(800));
    // vm0's own frames (its MAC): they pass, out of an uplink.
    let sent = blast(&t.vm_ns("vm0"), 100, 200);
    assert!(sent >= 5);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 5, "{lines:?}");
    let uplinks: Vec<String> = t.config().uplinks.iter().map(|u| u.name.clone()).collect();
    for e in &lines {
        assert_eq!(e["event"], "trace", "{e}");
        assert_eq!(e["action"], "redirect", "{e}");
        assert_eq!(e["reason"], "to_uplink", "{e}");
        assert_eq!(e["port"], vm0.port, "{e}");
        let stages: Vec<&str> = e["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        for want in ["parse", "classify", "flow", "route", "team", "deliver"] {
            assert!(stages.contains(&want), "{want} missing: {e}");
        }
        let next = e["next"].as_str().unwrap();
        assert!(uplinks.iter().any(|u| u == next), "{e}");
    }

    // A watch needs a flow.
    let out = xnic_tests::xnic(&["monitor", "--trace", "--instance", &t.instance]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("choose it with --addr"),
        "{out:?}"
    );
}
