//! The real daemon on a real lab: exact counts for known traffic, a crash under traffic,
//! configuration and interface errors, and `xnic down` leaving nothing behind.

use std::{net::SocketAddr, time::Duration};

use xnic::{
    api::{client::Method, types::DownView},
    cli::block_on,
    lab::{
        TOR_UDP_PORT,
        traffic::{Receiver, UdpStream, send_udp},
    },
};
use xnic_tests::{
    TestLab, eventually, maps_alive, pinned_map_ids, reason_count, total_frames, xnic,
};

const TOR_IP: &str = "10.77.0.1";

fn tor_sink() -> SocketAddr {
    SocketAddr::new(TOR_IP.parse().unwrap(), TOR_UDP_PORT)
}

/// Ethernet + IPv4 + UDP headers.
const UDP_OVERHEAD: u64 = 14 + 20 + 8;

#[test]
fn counts_known_traffic_exactly() {
    let mut t = TestLab::new(2);
    t.start_daemon();
    let vm0_ip = t.config().vms[0].ip_nets()[0].addr;
    let payload = 100usize;
    let frame = UDP_OVERHEAD + payload as u64;

    // vm0 → tor: 1000 datagrams.
    let rx = Receiver::start(Some(&t.lab.tor_ns()), tor_sink()).unwrap();
    let sent = send_udp(
        Some(&t.vm_ns("vm0")),
        UdpStream {
            dst: tor_sink(),
            flows: 4,
            pps: 5000,
            duration: Duration::from_millis(200),
            payload,
            zipf: None,
        },
    )
    .unwrap();
    let got = rx.stop().unwrap();
    assert_eq!((sent.sent, got.received), (1000, 1000));

    // tor → vm0: 500 datagrams.
    let vm0_sink = SocketAddr::new(vm0_ip, 7000);
    let rx = Receiver::start(Some(&t.vm_ns("vm0")), vm0_sink).unwrap();
    let sent = send_udp(
        Some(&t.lab.tor_ns()),
        UdpStream {
            dst: vm0_sink,
            flows: 2,
            pps: 5000,
            duration: Duration::from_millis(100),
            payload,
            zipf: None,
        },
    )
    .unwrap();
    let got = rx.stop().unwrap();
    assert_eq!((sent.sent, got.received), (500, 500));

    let vm0 = t.vm("vm0");
    assert_eq!(
        (vm0.counters.from_vm.packets, vm0.counters.from_vm.bytes),
        (1000, 1000 * frame)
    );
    assert_eq!(
        (vm0.counters.to_vm.packets, vm0.counters.to_vm.bytes),
        (500, 500 * frame)
    );
    assert_eq!(vm0.counters.dropped.packets, 0);
    let stats = t.stats();
    // The lab's team carries vm0's frames to the tor.
    assert_eq!(reason_count(&stats, "vm0", "to_uplink").packets, 1000);
    assert_eq!(reason_count(&stats, "up0", "to_vm").packets, 500);
    assert_eq!(reason_count(&stats, "up1", "to_vm").packets, 0);
    // The lab is silent (IPv6 off, static neighbours): nothing else crossed any port.
    assert_eq!(total_frames(&stats), 1500, "{stats:#?}");
    // Per-CPU counters add up to the same total.
    assert_eq!(stats.cpus.iter().map(|c| c.packets).sum::<u64>(), 1500);
    let vm1 = t.vm("vm1");
    assert_eq!(vm1.counters.from_vm.packets + vm1.counters.to_vm.packets, 0);
}

#[test]
fn sigkill_and_restart_under_traffic_lose_nothing() {
    let mut t = TestLab::new(1);
    t.start_daemon();
    let rx = Receiver::start(Some(&t.lab.tor_ns()), tor_sink()).unwrap();
    let ns = t.vm_ns("vm0");
    let sender = std::thread::spawn(move || {
        send_udp(
            Some(&ns),
            UdpStream {
                dst: tor_sink(),
                flows: 8,
                pps: 10_000,
                duration: Duration::from_secs(5),
                payload: 64,
                zipf: None,
            },
        )
    });
    std::thread::sleep(Duration::from_millis(1500));
    let before = t.vm("vm0").counters.from_vm.packets;
    assert!(before > 0, "traffic is flowing before the crash");
    t.take_daemon().kill().unwrap();
    // No daemon for a while: the pinned programs keep forwarding and counting.
    std::thread::sleep(Duration::from_millis(1000));
    t.start_daemon();
    let status = t.status();
    assert!(
        status.adopted,
        "the new daemon adopted the pinned dataplane"
    );
    assert!(status.ports.iter().all(|p| p.xdp_ours), "{status:#?}");
    let sent = sender.join().unwrap().unwrap();
    let got = rx.stop().unwrap();
    assert_eq!(sent.send_errors, 0);
    assert_eq!(got.received, sent.sent, "lost {}", sent.sent - got.received);
    assert_eq!((got.reordered, got.duplicates, got.gaps), (0, 0, 0));
    // Counters counted straight through the gap.
    assert_eq!(t.vm("vm0").counters.from_vm.packets, sent.sent);
}

#[test]
fn sigterm_leaves_the_dataplane_forwarding() {
    let mut t = TestLab::new(1);
    t.start_daemon();
    t.take_daemon().stop().unwrap();
    assert_eq!(
        t.interfaces_with_xdp().len(),
        3,
        "uplinks and VM port keep XDP"
    );
    let rx = Receiver::start(Some(&t.lab.tor_ns()), tor_sink()).unwrap();
    let sent = send_udp(
        Some(&t.vm_ns("vm0")),
        UdpStream {
            dst: tor_sink(),
            flows: 1,
            pps: 1000,
            duration: Duration::from_millis(100),
            payload: 32,
            zipf: None,
        },
    )
    .unwrap();
    assert_eq!(rx.stop().unwrap().received, sent.sent);
    // A new daemon sees what was counted while none ran.
    t.start_daemon();
    assert_eq!(t.vm("vm0").counters.from_vm.packets, sent.sent);
}

#[test]
fn down_removes_everything_it_attached_and_pinned() {
    let mut t = TestLab::new(2);
    t.start_daemon();
    assert_eq!(t.interfaces_with_xdp().len(), 4);
    let pins = format!("/sys/fs/bpf/xnic/{}", t.instance);
    assert!(std::path::Path::new(&pins).exists());
    let map_ids = pinned_map_ids(&t.instance);
    assert!(map_ids.len() > 10, "{map_ids:?}");

    let out = xnic(&["down", "--instance", &t.instance]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.take_daemon().wait(Duration::from_secs(10)).unwrap();
    assert!(t.interfaces_with_xdp().is_empty(), "no XDP left");
    assert!(!std::path::Path::new(&pins).exists(), "no pins left");
    // Nothing holds the maps any more, so the kernel frees them (it does so shortly after,
    // not at once). CPU and device map entries holding programs that use those maps would
    // keep the whole dataplane alive.
    let mut alive = map_ids.clone();
    eventually(Duration::from_secs(10), || {
        alive = maps_alive(&map_ids);
        alive.is_empty()
    });
    assert!(alive.is_empty(), "the kernel still holds maps {alive:?}");
    assert!(
        !xnic::config::socket_path(&t.instance).exists(),
        "no socket left"
    );

    // Without a daemon, down still works (and has nothing left to do).
    let out = xnic(&["down", "--instance", &t.instance]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing was attached"));

    let namespaces = t.lab.namespaces();
    let out = xnic(&["lab", "down", "--config", t.config_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ns in namespaces {
        assert!(
            !std::path::Path::new("/run/netns").join(&ns).exists(),
            "{ns} left behind"
        );
    }
}

#[test]
fn down_without_a_daemon_detaches_pinned_programs() {
    let mut t = TestLab::new(1);
    t.start_daemon();
    t.take_daemon().kill().unwrap();
    assert_eq!(t.interfaces_with_xdp().len(), 3);
    let out = xnic(&["down", "--instance", &t.instance]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.interfaces_with_xdp().is_empty());
    assert!(
        !xnic::config::socket_path(&t.instance).exists(),
        "stale socket removed"
    );
}

/// Runs `xnic COMMAND --config FILE` on `text` written next to `t`'s configuration.
fn xnic_on_config(
    t: &TestLab,
    command: &str,
    text: &str,
) -> (std::path::PathBuf, std::process::Output) {
    let path = t.config_path.with_extension("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = xnic(&[command, "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    (path, out)
}

/// Nothing of `t`'s instance exists: no XDP on its interfaces, no pins, no socket.
fn assert_untouched(t: &TestLab) {
    assert!(t.interfaces_with_xdp().is_empty(), "interfaces untouched");
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/xnic/{}", t.instance)).exists());
    assert!(!xnic::config::socket_path(&t.instance).exists());
}

#[test]
fn bad_config_is_rejected_with_its_location_and_nothing_is_touched() {
    let t = TestLab::new(1);
    let good = std::fs::read_to_string(&t.config_path).unwrap();
    let line = 1 + good
        .lines()
        .position(|l| l.contains("02:77:00:00:00:10"))
        .unwrap();
    let bad = good.replace("02:77:00:00:00:10", "02:77:00:00:10");
    for command in ["run", "check"] {
        let (path, out) = xnic_on_config(&t, command, &bad);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        let location = format!("{}:{line}:9: vm[0].macs[0]:", path.display());
        assert!(stderr.contains(&location), "{command}: {stderr}");
        assert!(stderr.contains("is not a MAC address"), "{stderr}");
        assert_untouched(&t);
    }
}

#[test]
fn unknown_interfaces_wait_and_check_says_where_they_are_named() {
    let t = TestLab::new(1);
    let good = std::fs::read_to_string(&t.config_path).unwrap();
    let bad = good.replace("[lab]", "[[uplink]]\nname = \"nosuch0\"\n\n[lab]");
    let line = 1 + bad.lines().position(|l| l.contains("nosuch0")).unwrap();
    // `check` validates the file, then says what this host lacks, with file:line:field.
    let (path, out) = xnic_on_config(&t, "check", &bad);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let place = format!(
        "{}:{line}:8: uplink[2].name: no interface nosuch0",
        path.display()
    );
    assert!(stdout.contains(&place), "{stdout}");
    assert!(stdout.contains("3 of 4 interfaces exist"), "{stdout}");
    let path = t.config_path.with_extension("strict.toml");
    std::fs::write(&path, &bad).unwrap();
    let out = xnic(&["check", "--strict", "--config", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    assert!(
        !out.status.success(),
        "--strict fails on what the host lacks"
    );
    assert_untouched(&t);
    drop(t);

    // The daemon does not wait for it: the missing uplink is shown as waiting.
    let name = xnic_tests::unique_name();
    let text = xnic::config::default_lab_toml(&name, &xnic_tests::unique_name(), 1, false)
        .replace("[lab]", "[[uplink]]\nname = \"nosuch0\"\n\n[lab]");
    let mut t = TestLab::with_config(&text);
    // The lab made every uplink it was given: take this one away again.
    xnic_tests::ip(&["-n", t.lab.host_ns(), "link", "del", "nosuch0"]).unwrap();
    t.start_daemon();
    let status = t.status();
    let state = |n: &str| {
        status
            .ports
            .iter()
            .find(|p| p.name == n)
            .map(|p| p.state.clone())
    };
    assert_eq!(state("nosuch0").as_deref(), Some("waiting"));
    assert_eq!(state("vm0").as_deref(), Some("attached"));
    assert_eq!(t.interfaces_with_xdp().len(), 3);
}

#[test]
fn foreign_xdp_program_is_refused_before_anything_changes() {
    let mut t = TestLab::new(1);
    // Someone else's program on vm0 (the baseline XDP_PASS program, attached directly).
    let host = t.lab.host_ns().to_string();
    let holder = std::thread::spawn(move || {
        xnic::netns::enter(&host).unwrap();
        let mut b = xnic::dataplane::baseline::Baseline::load().unwrap();
        let ifindex = nix::net::if_::if_nametoindex("vm0").unwrap();
        let link = b
            .attach(xnic::dataplane::baseline::BaselineProgram::Pass, ifindex)
            .unwrap();
        (b, link)
    })
    .join()
    .unwrap();
    let out = xnic(&["run", "--config", t.config_path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("interface vm0 already runs XDP program"),
        "{stderr}"
    );
    assert_eq!(
        t.interfaces_with_xdp(),
        vec!["vm0".to_string()],
        "only the foreign program"
    );
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/xnic/{}", t.instance)).exists());
    drop(holder);
    // With the interface free again, the daemon starts.
    t.start_daemon();
    assert_eq!(t.interfaces_with_xdp().len(), 3);
}

#[test]
fn spoofed_source_mac_is_dropped_and_counted() {
    let mut t = TestLab::new(1);
    t.start_daemon();
    let ns = t.vm_ns("vm0");
    t.lab
        .set_vm_mac("vm0", "02:66:00:00:00:01", TOR_IP.parse().unwrap())
        .unwrap();
    let rx = Receiver::start(Some(&t.lab.tor_ns()), tor_sink()).unwrap();
    let sent = send_udp(
        Some(&ns),
        UdpStream {
            dst: tor_sink(),
            flows: 1,
            pps: 1000,
            duration: Duration::from_millis(100),
            payload: 10,
            zipf: None,
        },
    )
    .unwrap();
    assert_eq!(
        rx.stop().unwrap().received,
        0,
        "nothing spoofed gets through"
    );
    let vm0 = t.vm("vm0");
    assert_eq!(vm0.counters.dropped.packets, sent.sent);
    assert_eq!(vm0.counters.from_vm.packets, 0);
    assert_eq!(vm0.port_reasons["spoofed_mac"].packets, sent.sent);
}

#[test]
fn cli_reads_as_tables_and_json_and_explains_errors() {
    let mut t = TestLab::new(2);
    t.start_daemon();
    let i = t.instance.clone();

    let out = xnic(&["status", "--instance", &i]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("up0") && text.contains("native"), "{text}");

    let out = xnic(&["status", "--instance", &i, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["instance"], i.as_str());
    assert_eq!(v["ports"].as_array().unwrap().len(), 4);

    let out = xnic(&["vm", "list", "--instance", &i, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);

    let out = xnic(&["stats", "--instance", &i, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["ports"][0]["reasons"]["from_vm"].is_object());

    let out = xnic(&["vm", "show", "vm1", "--instance", &i]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("02:77:00:00:00:11"));

    let out = xnic(&["vm", "show", "nosuch", "--instance", &i]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no VM named \"nosuch\"; known VMs: vm0, vm1"),
        "{err}"
    );

    let out = xnic(&["status", "--instance", "xtnotrunning"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not running"));

    // Prometheus text on the socket.
    let (code, body) = block_on(t.client().request(Method::GET, "/metrics")).unwrap();
    assert!(code.is_success());
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("xnic_port_packets_total{"), "{body}");
    assert!(body.contains("xnic_vm_packets_total{"), "{body}");
    assert!(body.contains("xnic_rss_vm_state{"), "{body}");
    assert!(body.contains("xnic_rss_cpu_busy_ratio{"), "{body}");
    // The Grafana dashboard's panels for what this lab runs read what the daemon exports.
    let problems = xnic_tests::dashboard::check(
        &body,
        &[
            "xnic_port_",
            "xnic_vm_",
            "xnic_cpu_",
            "xnic_rss_",
            "xnic_team_",
            "xnic_events",
            "xnic_desired",
            "xnic_unknown",
        ],
    );
    assert!(problems.is_empty(), "{problems:#?}");

    // Completions are generated.
    let out = xnic(&["completions", "bash"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("xnic"));

    // An unknown endpoint says what exists.
    let (code, body) = block_on(t.client().request(Method::GET, "/v2/nothing")).unwrap();
    assert_eq!(code.as_u16(), 404);
    assert!(String::from_utf8_lossy(&body).contains("/v1/status"));

    // POST /v1/down through the API ends the daemon and removes the dataplane.
    let down: DownView = block_on(t.client().post("/v1/down")).unwrap();
    assert_eq!(down.links_removed.len(), 4);
    t.take_daemon().wait(Duration::from_secs(10)).unwrap();
}

#[test]
fn the_control_socket_is_root_only() {
    let mut t = TestLab::new(1);
    t.start_daemon();
    let socket = xnic::config::socket_path(&t.instance);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // As nobody, the CLI explains instead of failing obscurely.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(xnic_tests::xnic_bin())
        .args(["status", "--instance", &t.instance])
        .output();
    if let Ok(out) = out {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("root-only") || err.contains("Permission denied"),
            "{err}"
        );
    }
}

#[test]
fn metrics_are_also_served_over_tcp_when_configured() {
    let name = xnic_tests::unique_name();
    let text = xnic::config::default_lab_toml(&name, &xnic_tests::unique_name(), 1, false).replace(
        "log_level = \"info\"",
        "log_level = \"info\"\nmetrics_listen = \"127.0.0.1:9477\"",
    );
    let mut t = TestLab::with_config(&text);
    t.start_daemon();
    // The listener lives in the daemon's network namespace, the lab's host.
    let body = xnic::netns::run_in(t.lab.host_ns(), || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect("127.0.0.1:9477")?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    })
    .unwrap();
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(body.contains("xnic_port_packets_total{"), "{body}");
    assert!(body.contains(&format!("instance=\"{name}\"")));
}
