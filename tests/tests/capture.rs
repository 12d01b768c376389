//! `xnic capture`: a port's frames as XDP delivered them, written as pcapng and read back by
//! tshark (not by xnic): the datagrams a VM sent, each with its verdict as the comment; a
//! spoofed one says it was dropped and why.

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use xnic::lab::{
    TOR_UDP_PORT,
    traffic::{UdpStream, send_udp},
};
use xnic_tests::{TestLab, xnic_bin};

const TOR_IP: &str = "10.77.0.1";

fn send(ns: &str, n: u64) {
    send_to(ns, TOR_UDP_PORT, n);
}

fn send_to(ns: &str, port: u16, n: u64) {
    send_udp(
        Some(ns),
        UdpStream {
            dst: SocketAddr::new(TOR_IP.parse().unwrap(), port),
            flows: 1,
            pps: 100,
            duration: Duration::from_millis(n * 10),
            payload: 10,
            zipf: None,
        },
    )
    .unwrap();
}

/// Captures `count` frames of `port` into a file while `traffic` runs; tshark's fields of
/// each (destination address, UDP port, comment).
fn capture(t: &TestLab, port: &str, count: u64, traffic: impl FnOnce()) -> Vec<String> {
    capture_with(t, port, count, &[], traffic)
}

fn capture_with(
    t: &TestLab,
    port: &str,
    count: u64,
    extra: &[&str],
    traffic: impl FnOnce(),
) -> Vec<String> {
    let file = std::env::temp_dir().join(format!("{}-{port}.pcapng", t.instance));
    let child = Command::new(xnic_bin())
        .args(["capture", port, "-w"])
        .arg(&file)
        .args(["--count", &count.to_string(), "--duration", "15"])
        .args(extra)
        .args(["--instance", &t.instance])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    traffic();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = Command::new("tshark")
        .args(["-r"])
        .arg(&file)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "ip.dst",
            "-e",
            "udp.dstport",
            "-e",
            "frame.comment",
        ])
        .output()
        .expect("tshark");
    let _ = std::fs::remove_file(&file);
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    String::from_utf8_lossy(&read.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_ports_frames_are_written_as_pcapng_with_their_verdicts() {
    let mut t = TestLab::new(1);
    t.start_daemon();
    let ns = t.vm_ns("vm0");
    let lines = capture(&t, "vm0", 5, || send(&ns, 20));
    assert_eq!(lines.len(), 5, "{lines:?}");
    // The lab's VMs are teamed: their frames leave through an uplink the team picks.
    for l in &lines {
        assert!(
            l.starts_with(&format!(
                "{TOR_IP}|{TOR_UDP_PORT}|xnic: redirect (to_uplink)"
            )),
            "{l}"
        );
    }

    // Before and after the pipeline: each frame as it arrived, then as it was delivered.
    let lines = capture_with(&t, "vm0", 4, &["--at", "both"], || send(&ns, 20));
    assert_eq!(lines.len(), 4, "{lines:?}");
    for pair in lines.chunks(2) {
        assert!(
            pair[0].contains("xnic: in (before the pipeline)"),
            "{pair:?}"
        );
        assert!(pair[1].contains("xnic: redirect (to_uplink)"), "{pair:?}");
    }

    // A filter the dataplane applies: the first datagrams (to another port) are not taken.
    let lines = capture_with(&t, "vm0", 3, &["--filter", "udp and port 9999"], || {
        send(&ns, 20);
        send_to(&ns, 9999, 20);
    });
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert!(l.starts_with(&format!("{TOR_IP}|9999|")), "{l}");
    }
    let out = xnic_tests::xnic(&[
        "capture",
        "vm0",
        "--filter",
        "src net 10.0.0.0/8",
        "--instance",
        &t.instance,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a term it knows"),
        "{out:?}"
    );

    // From a MAC its port does not own: dropped, and the capture says so.
    t.lab
        .set_vm_mac("vm0", "02:66:00:00:00:01", TOR_IP.parse().unwrap())
        .unwrap();
    let lines = capture(&t, "vm0", 3, || send(&ns, 20));
    assert_eq!(lines.len(), 3, "{lines:?}");
    for l in &lines {
        assert!(l.contains("xnic: drop (spoofed_mac)"), "{l}");
    }

    // A port that is not there is named as such, with the ones that are.
    let out = xnic_tests::xnic(&["capture", "nope", "--instance", &t.instance]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no port named \"nope\""),
        "{out:?}"
    );
}
