//! Flow offload with the real daemon on the routed lab: connections move into the fast path
//! and back under traffic, and what is not xnic (iperf3's report, the receivers' sequence
//! numbers, the kernel's TCP counters, the ruleset's INVALID counter, `conntrack -L`) agrees
//! that nothing was lost, reordered, duplicated or reset.

use std::{
    net::SocketAddr,
    process::Command,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use xnic::{
    api::types::{FlowStatsView, FlowView},
    dataplane::{FlowReader, PinDir},
    lab::{
        daemon::DaemonProcess,
        routed::{REMOTE_IP, RoutedLab, SERVER_IP, VIRTUAL_IP},
        traffic::{Receiver, RecvReport, SendReport, UdpStream, send_udp},
    },
};
use xnic_common::flow::FlowCounter;
use xnic_tests::{eventually, unique_name, xnic, xnic_bin};

const UDP_PORT: u16 = 7000;

/// Datagrams a receiving veth may swap over 300 moves of its flow ([`assert_delivered`]).
const MAX_VETH_SWAPS: u64 = 30;

/// The lab and its daemon, taken down when the test ends, even on failure.
struct Lab {
    lab: RoutedLab,
    name: String,
    daemon: Option<DaemonProcess>,
    config: std::path::PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let _ = d.kill();
        }
        let _ = xnic::dataplane::teardown(&self.name);
        self.lab.down();
        let _ = std::fs::remove_file(&self.config);
    }
}

impl Lab {
    fn up(vms: usize, flows: &str) -> Lab {
        let name = unique_name();
        let lab = RoutedLab::new(&name, vms);
        let config = std::env::temp_dir().join(format!("{name}.toml"));
        let mut l = Lab {
            lab,
            name: name.clone(),
            daemon: None,
            config,
        };
        l.lab.up().unwrap();
        std::fs::write(&l.config, l.lab.config(&name, flows)).unwrap();
        l.start_daemon();
        l
    }

    fn start_daemon(&mut self) {
        self.daemon = Some(
            DaemonProcess::start(
                &xnic_bin(),
                &self.config,
                &self.name,
                None,
                Duration::from_secs(30),
            )
            .expect("the daemon starts on the routed host"),
        );
    }

    fn cli(&self, args: &[&str]) -> String {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--instance", &self.name]);
        let out = xnic(&a);
        assert!(
            out.status.success(),
            "xnic {a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn flows(&self) -> Vec<FlowView> {
        serde_json::from_str(&self.cli(&["flows", "--json"])).unwrap()
    }

    fn stats(&self) -> FlowStatsView {
        serde_json::from_str(&self.cli(&["flows", "stats", "--json"])).unwrap()
    }

    fn vm_ns(&self, i: usize) -> String {
        self.lab.vm_ns(&self.lab.vms[i])
    }

    /// Waits for one flow of `proto` to forward on the fast path; says where it stands if not.
    fn wait_active(&self, proto: &str) {
        if !eventually(Duration::from_secs(10), || self.active(proto) == 1) {
            panic!(
                "no {proto} flow became active:\n{}\n{}",
                self.cli(&["flows", "--json"]),
                self.cli(&["flows", "stats", "--json"])
            );
        }
    }

    /// Offloaded flows forwarding on the fast path, both directions switched.
    fn active(&self, proto: &str) -> usize {
        self.flows()
            .iter()
            .filter(|f| f.proto == proto && f.state == "active")
            .filter(|f| f.directions.iter().all(|d| d.mode == "active"))
            .count()
    }
}

fn sh(ns: &str, cmd: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Resets a namespace's TCP stack has sent (`/proc/net/snmp`'s `Tcp: OutRsts`).
fn tcp_resets(ns: &str) -> u64 {
    let snmp = sh(ns, "cat /proc/net/snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "OutRsts")
        .unwrap();
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// An iperf3 TCP stream from `client` to the tor's server, rate-limited so the two CPUs
/// are left for the rest of the test; its JSON report when it ends.
fn iperf3(tor: &str, client: &str, secs: u32, port: u16) -> JoinHandle<serde_json::Value> {
    let (tor, client) = (tor.to_string(), client.to_string());
    std::thread::spawn(move || {
        let server = std::thread::spawn({
            let tor = tor.clone();
            move || sh(&tor, &format!("iperf3 -s -1 -B {SERVER_IP} -p {port}"))
        });
        std::thread::sleep(Duration::from_millis(300));
        let out = sh(
            &client,
            &format!("iperf3 -c {SERVER_IP} -p {port} -t {secs} -b 300M -J"),
        );
        let _ = server.join();
        serde_json::from_str(&out).unwrap_or_else(|_| panic!("iperf3 said: {out}"))
    })
}

fn iperf3_ok(report: &serde_json::Value) -> f64 {
    assert!(report.get("error").is_none(), "iperf3 failed: {report}");
    let bps = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    assert!(bps > 1e6, "iperf3 moved almost nothing: {report}");
    bps
}

/// A sequence-numbered UDP stream from `from` to `dst`, in the background.
fn udp(from: &str, dst: &str, port: u16, secs: f64, pps: u64) -> JoinHandle<SendReport> {
    let from = from.to_string();
    let dst: SocketAddr = format!("{dst}:{port}").parse().unwrap();
    std::thread::spawn(move || {
        send_udp(
            Some(&from),
            UdpStream {
                dst,
                flows: 1,
                pps,
                duration: Duration::from_secs_f64(secs),
                payload: 200,
                zipf: None,
            },
        )
        .unwrap()
    })
}

fn echo(ns: &str, port: u16) -> Receiver {
    Receiver::start_echo(Some(ns), format!("0.0.0.0:{port}").parse().unwrap()).unwrap()
}

fn sum(reports: impl IntoIterator<Item = RecvReport>) -> RecvReport {
    reports
        .into_iter()
        .fold(RecvReport::default(), |a, r| a.merged(&r))
}

/// Everything arrived once, and in order but for the swaps a receiving veth may make across
/// a move back to the slow path: a veth hands the XDP frames of one poll to its stack after
/// the kernel's packets of the same poll, so the fast path's last frames and the slow path's
/// first can cross inside the receiver (a tap or a NIC delivers in order). Nothing may be
/// lost or doubled, and swaps stay rare.
fn assert_delivered(sent: &SendReport, got: &RecvReport, what: &str) {
    assert_eq!(
        (sent.send_errors, got.received, got.duplicates, got.gaps),
        (0, sent.sent, 0, 0),
        "{what}: sent {sent:?}, received {got:?}"
    );
    assert!(got.reordered <= MAX_VETH_SWAPS, "{what}: {got:?}");
}

fn assert_exact(sent: &SendReport, got: &RecvReport, what: &str) {
    assert_eq!(sent.send_errors, 0, "{what}: {sent:?}");
    assert_eq!(
        (got.received, got.reordered, got.duplicates, got.gaps),
        (sent.sent, 0, 0, 0),
        "{what}: sent {sent:?}, received {got:?}"
    );
}

#[test]
fn streams_survive_a_hundred_forced_demotions() {
    let l = Lab::up(2, "select = \"all\"\nperiod_ms = 50\ncooldown_s = 0");
    let tor = l.lab.tor_ns();
    let (vm0, vm1) = (l.vm_ns(0), l.vm_ns(1));
    let resets = [tcp_resets(&vm0), tcp_resets(&tor)];
    // TCP out masqueraded; UDP in through the virtual IP (DNAT to either VM); UDP out
    // through the VXLAN tunnel. Every one answered, so conntrack confirms it.
    let receivers = [echo(&vm0, UDP_PORT), echo(&vm1, UDP_PORT)];
    let tunnel_rx = echo(&tor, UDP_PORT + 1);
    let secs = 40;
    let tcp = iperf3(&tor, &vm0, secs, 5201);
    let in_vip = udp(&tor, VIRTUAL_IP, UDP_PORT, f64::from(secs), 2000);
    let in_tunnel = udp(&vm1, REMOTE_IP, UDP_PORT + 1, f64::from(secs), 2000);

    assert!(
        eventually(Duration::from_secs(10), || l.active("tcp") >= 1
            && l.active("udp") >= 2),
        "the streams move into the fast path: {}",
        l.cli(&["flows"])
    );
    // conntrack has every offloaded flow, with the same tuples and id.
    let listed = sh(&l.lab.host_ns(), "conntrack -L -o id 2>/dev/null");
    for f in l.flows() {
        let line = listed
            .lines()
            .find(|line| {
                line.contains(&format!(
                    "src={} dst={} sport={} dport={} src={} dst={} sport={} dport={}",
                    f.original.src,
                    f.original.dst,
                    f.original.src_port,
                    f.original.dst_port,
                    f.reply.src,
                    f.reply.dst,
                    f.reply.src_port,
                    f.reply.dst_port
                ))
            })
            .unwrap_or_else(|| panic!("conntrack -L has {f:?}:\n{listed}"));
        assert!(
            line.contains(&format!("id={}", f.id.unwrap())),
            "{line} is flow {f:?}"
        );
    }
    let tunnelled = l
        .flows()
        .into_iter()
        .find(|f| f.original.dst == REMOTE_IP)
        .expect("the tunnelled flow is offloaded");
    assert_eq!(tunnelled.directions[0].actions, ["encap vni 42"]);
    assert_eq!(tunnelled.directions[1].actions, ["decap vni 42"]);

    let deadline = Instant::now() + Duration::from_secs(u64::from(secs) - 6);
    let mut cycles = 0;
    while cycles < 100 && Instant::now() < deadline {
        let before = l.stats().promoted;
        l.cli(&["flows", "demote", "--all"]);
        assert!(
            eventually(Duration::from_secs(3), || l.stats().promoted >= before + 3
                && l.active("tcp") >= 1
                && l.active("udp") >= 2),
            "cycle {cycles}: the flows come back: {}",
            l.cli(&["flows"])
        );
        cycles += 1;
    }
    assert_eq!(cycles, 100, "100 cycles in time");
    let stats = l.stats();
    // The dashboard's flow offload panels read what this daemon exports.
    let (_, scrape) = xnic::cli::block_on(
        xnic::api::client::Client::new(&l.name).request(xnic::api::client::Method::GET, "/metrics"),
    )
    .unwrap();
    let problems =
        xnic_tests::dashboard::check(&String::from_utf8_lossy(&scrape), &["xnic_flows_"]);
    assert!(problems.is_empty(), "{problems:#?}");
    println!("{}", l.cli(&["flows", "stats"]));

    let bps = iperf3_ok(&tcp.join().unwrap());
    let (sent_in, sent_tunnel) = (in_vip.join().unwrap(), in_tunnel.join().unwrap());
    let got_in = sum(receivers.map(|r| r.stop().unwrap()));
    let got_tunnel = tunnel_rx.stop().unwrap();
    println!(
        "iperf3 {:.0} Mbit/s; in {got_in:?}; tunnel {got_tunnel:?}",
        bps / 1e6
    );
    assert_delivered(&sent_in, &got_in, "through the virtual IP");
    assert_delivered(&sent_tunnel, &got_tunnel, "through the tunnel");
    assert_eq!([tcp_resets(&vm0), tcp_resets(&tor)], resets, "no resets");
    assert_eq!(l.lab.invalid_count().unwrap(), 0, "nothing INVALID");
    assert!(stats.demoted["manual"] >= 300, "{stats:?}");
    assert!(stats.fast_path["forwarded"] > 0);
}

#[test]
fn a_full_table_leaves_new_flows_on_the_slow_path() {
    let l = Lab::up(1, "select = \"all\"\nperiod_ms = 50\nmax_flows = 1");
    let tor = l.lab.tor_ns();
    let vm0 = l.vm_ns(0);
    let rx = echo(&vm0, UDP_PORT);
    let first = udp(&tor, VIRTUAL_IP, UDP_PORT, 6.0, 1000);
    l.wait_active("udp");
    // A second flow finds the table full: it works, on the slow path, and is counted.
    let tcp = iperf3(&tor, &vm0, 3, 5201);
    iperf3_ok(&tcp.join().unwrap());
    let stats = l.stats();
    assert_eq!((stats.capacity, stats.in_use), (1, 1), "{stats:?}");
    assert!(stats.refused_full > 0, "{stats:?}");
    assert!(l.flows().iter().all(|f| f.proto == "udp"));
    let sent = first.join().unwrap();
    assert_exact(&sent, &rx.stop().unwrap(), "the offloaded flow");
    assert_eq!(l.lab.invalid_count().unwrap(), 0);
}

#[test]
fn a_ruleset_change_that_forbids_an_offloaded_flow_stops_it() {
    let l = Lab::up(1, "select = \"all\"\nperiod_ms = 50\ncooldown_s = 1");
    let tor = l.lab.tor_ns();
    let vm0 = l.vm_ns(0);
    let rx = echo(&vm0, UDP_PORT);
    let stream = udp(&tor, VIRTUAL_IP, UDP_PORT, 8.0, 1000);
    l.wait_active("udp");
    rx.stop().unwrap();
    sh(
        &l.lab.host_ns(),
        &format!("nft insert rule inet xlab forward udp dport {UDP_PORT} drop"),
    );
    std::thread::sleep(Duration::from_millis(500));
    // From now on nothing arrives: not on the fast path, and not when offload tries the
    // flow again after its cooldown (its packets never leave the kernel).
    let rx = echo(&vm0, UDP_PORT);
    std::thread::sleep(Duration::from_secs(3));
    let after = rx.stop().unwrap();
    assert_eq!(after.received, 0, "{after:?}; {}", l.cli(&["flows"]));
    let stats = l.stats();
    assert!(stats.demoted["rule_change"] >= 1, "{stats:?}");
    stream.join().unwrap();
}

#[test]
fn offloaded_flows_outlive_a_killed_daemon_and_the_next_one_adopts_them() {
    let mut l = Lab::up(1, "select = \"all\"\nperiod_ms = 50");
    let tor = l.lab.tor_ns();
    let vm0 = l.vm_ns(0);
    let rx = echo(&vm0, UDP_PORT);
    let stream = udp(&tor, VIRTUAL_IP, UDP_PORT, 8.0, 1000);
    l.wait_active("udp");
    let before = l.flows();
    l.daemon.take().unwrap().kill().unwrap();
    // No daemon: the fast path goes on forwarding the flow.
    let table = FlowReader::open(&PinDir::new(&l.name)).unwrap();
    let forwarded = || table.counters().unwrap()[FlowCounter::Forwarded as usize];
    let at_kill = forwarded();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        forwarded() > at_kill + 500,
        "forwarding went on without the daemon"
    );
    l.start_daemon();
    let stats = l.stats();
    assert_eq!(stats.adopted, 1, "{stats:?}");
    let after = l.flows();
    assert_eq!(after.len(), 1);
    assert_eq!(
        (&after[0].original, &after[0].reply, after[0].slot),
        (&before[0].original, &before[0].reply, before[0].slot)
    );
    assert_eq!(after[0].state, "active");
    let sent = stream.join().unwrap();
    assert_exact(&sent, &rx.stop().unwrap(), "across the restart");
    assert_eq!(l.lab.invalid_count().unwrap(), 0);
}
