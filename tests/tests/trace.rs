//! `xnic trace`: a frame through the real programs against the live maps, stage by stage,
//! with the verdict; described on the command line, from a pcap file or as hex. The traced
//! frame is counted nowhere and changes nothing.

use std::process::Output;

use etherparse::PacketBuilder;
use serde_json::Value;
use xnic_tests::{TestLab, reason_count, total_frames, xnic};

const TOR_IP: &str = "10.77.0.1";
const SPOOFED: &str = "02:66:00:00:00:01";

fn run(t: &TestLab, args: &[&str]) -> Output {
    let mut all = vec!["trace"];
    all.extend(args);
    all.extend(["--instance", &t.instance]);
    xnic(&all)
}

fn trace_json(t: &TestLab, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = run(t, &all);
    assert!(
        out.status.success(),
        "xnic trace {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn stages(v: &Value) -> Vec<String> {
    v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect()
}

fn step<'a>(v: &'a Value, stage: &str) -> &'a Value {
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == stage)
        .unwrap_or_else(|| panic!("no {stage} step in {v}"))
}

/// A classic pcap file (microseconds, Ethernet) holding `frames`.
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend([0u8; 8]);
    out.extend(65535u32.to_le_bytes());
    out.extend(1u32.to_le_bytes());
    for f in frames {
        out.extend([0u8; 8]);
        out.extend((f.len() as u32).to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend(f);
    }
    out
}

fn mac(text: &str) -> [u8; 6] {
    let b: Vec<u8> = text
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).unwrap())
        .collect();
    b.try_into().unwrap()
}

#[test]
fn frames_are_traced_stage_by_stage_to_their_verdict_and_change_nothing() {
    let mut t = TestLab::new(1);
    t.start_daemon();
    let vm0 = t.vm("vm0");
    let before = t.stats();

    // The VM's own frame (its MAC and address by default): classify passes it as from_vm,
    // the team stage sends it out of an uplink.
    let ok = trace_json(&t, &["--in", &vm0.port, "--dst", TOR_IP]);
    assert_eq!(step(&ok, "classify")["reason"], "from_vm", "{ok}");
    assert_eq!(ok["reason"], "to_uplink", "{ok}");
    assert_eq!(ok["action"], "redirect", "{ok}");
    let uplinks: Vec<String> = t.config().uplinks.iter().map(|u| u.name.clone()).collect();
    assert!(
        uplinks.iter().any(|u| ok["next"] == format!("out of {u}")),
        "{ok}"
    );
    let seen = stages(&ok);
    assert_eq!(seen.first().map(String::as_str), Some("parse"), "{seen:?}");
    assert_eq!(
        seen.get(1).map(String::as_str),
        Some("classify"),
        "{seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("deliver"), "{seen:?}");
    assert!(seen.iter().any(|s| s == "flow"), "{seen:?}");
    assert!(seen.iter().any(|s| s == "team"), "{seen:?}");
    assert_eq!(step(&ok, "classify")["vm"], "vm0", "{ok}");

    // A frame from a MAC the port does not own: classify decides the drop.
    let bad = trace_json(
        &t,
        &["--in", &vm0.port, "--src-mac", SPOOFED, "--dst", TOR_IP],
    );
    assert_eq!(bad["action"], "drop", "{bad}");
    assert_eq!(bad["reason"], "spoofed_mac", "{bad}");
    assert_eq!(step(&bad, "classify")["reason"], "spoofed_mac", "{bad}");
    assert_eq!(step(&bad, "deliver")["action"], "drop", "{bad}");

    // The table names each stage and ends with the verdict.
    let out = run(
        &t,
        &["--in", &vm0.port, "--src-mac", SPOOFED, "--proto", "tcp"],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("classify"), "{text}");
    assert!(text.contains("verdict: drop (spoofed_mac)"), "{text}");
    assert!(text.contains(SPOOFED), "the frame's summary: {text}");

    // The same spoofed frame from a pcap file (second frame) and as hex.
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(mac(SPOOFED), [0x02, 0, 0x5e, 0, 0, 1])
        .ipv4([10, 77, 0, 9], [10, 77, 0, 1], 64)
        .udp(1000, 2000)
        .write(&mut frame, &[0u8; 10])
        .unwrap();
    let file = std::env::temp_dir().join(format!("{}.pcap", t.instance));
    let good_frame = hex::decode(ok["frame_out"].as_str().unwrap()).unwrap();
    std::fs::write(&file, pcap(&[good_frame, frame.clone()])).unwrap();
    let from_pcap = trace_json(
        &t,
        &[
            "--in",
            &vm0.port,
            "--pcap",
            file.to_str().unwrap(),
            "--frame",
            "2",
        ],
    );
    let first = trace_json(&t, &["--in", &vm0.port, "--pcap", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(from_pcap["reason"], "spoofed_mac", "{from_pcap}");
    assert_eq!(first["reason"], "to_uplink", "{first}");
    let from_hex = trace_json(&t, &["--in", &vm0.port, "--hex", &hex::encode(&frame)]);
    assert_eq!(from_hex["reason"], "spoofed_mac", "{from_hex}");

    // On the uplink, a frame for the VM's MAC is to_vm.
    let uplink = t.config().uplinks[0].name.clone();
    let to_vm = trace_json(
        &t,
        &["--in", &uplink, "--dst-mac", &vm0.macs[0], "--src", TOR_IP],
    );
    assert_eq!(to_vm["reason"], "to_vm", "{to_vm}");
    assert_eq!(step(&to_vm, "classify")["vm"], "vm0", "{to_vm}");

    // None of it was counted.
    let after = t.stats();
    assert_eq!(total_frames(&after), total_frames(&before));
    assert_eq!(reason_count(&after, &vm0.port, "spoofed_mac").packets, 0);
}

#[test]
fn a_trace_that_cannot_run_says_why() {
    let mut t = TestLab::new(1);
    t.start_daemon();
    let out = run(&t, &["--in", "nosuchport", "--dst", TOR_IP]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no port named \"nosuchport\""), "{err}");
    assert!(err.contains(&t.vm("vm0").port), "names the ports: {err}");

    let out = run(&t, &["--in", &t.vm("vm0").port, "--hex", "0011"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be traced"), "{err}");

    let out = run(
        &t,
        &["--in", &t.vm("vm0").port, "--pcap", "/nonexistent.pcap"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open"));
}
