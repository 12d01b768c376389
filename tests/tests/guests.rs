//! xnic on the tap devices of real QEMU guests (TCG here): one rig of two guests, shared by
//! the scenarios in order, since a guest takes seconds to boot. Counts come from the guests'
//! own tools (ping's summary) and from xnic's counters, and must agree exactly.

use std::time::Duration;

use xnic::{
    api::types::{RssBucketView, RssStatusView, TeamStatusView},
    cli::block_on,
    config::default_lab_toml,
    lab::{
        tor_port,
        traffic::{Receiver, SendReport, UdpStream, send_udp},
    },
};
use xnic_tests::{TestLab, eventually, reason_count, unique_name};

const TOR: &str = "10.77.0.1";
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `script` in `vm`'s guest; panics with its output when it fails.
fn guest(t: &TestLab, vm: &str, script: &str) -> String {
    let (status, out) = t
        .lab
        .guest(vm)
        .unwrap()
        .exec(script, EXEC_TIMEOUT)
        .unwrap_or_else(|e| panic!("{vm}: {script}: {e:#}"));
    assert_eq!(status, 0, "{vm}: {script}:\n{out}");
    out
}

/// Runs `script` in `vm`'s guest from another thread; join for its status and output.
fn in_background(t: &TestLab, vm: &str, script: &str) -> std::thread::JoinHandle<(i32, String)> {
    let g = t.lab.guest(vm).unwrap();
    let script = script.to_string();
    std::thread::spawn(move || g.exec(&script, EXEC_TIMEOUT).unwrap())
}

fn buckets(t: &TestLab) -> Vec<RssBucketView> {
    block_on(t.client().get("/v1/rss/engines/shared-a/buckets")).unwrap()
}

/// What ping's summary says: (transmitted, received).
fn ping_summary(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {out}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

#[test]
fn real_guests_forward_exactly_and_survive_daemon_and_qemu_restarts() {
    // vm0 in the shared engine over both CPUs: its guest gets two vCPUs and a two-queue
    // NIC on a multiqueue tap.
    // No bucket rebalancing, so each bucket stays on the CPU its table names.
    let text = default_lab_toml(&unique_name(), &unique_name(), 2, false)
        .replacen(
            "name = \"vm0\"\n",
            "name = \"vm0\"\nrss = \"shared-a\"\n",
            1,
        )
        .replacen(
            "[rss.policy]\n",
            "[rss.policy]\nrebalance_above = 1e9\nrebalance_to = 1e8\n",
            1,
        );
    let mut t = TestLab::with_guests(&text);
    t.start_daemon();
    let status = t.status();
    assert!(
        status.ports.iter().all(|p| p.state == "attached"),
        "{:?}",
        status.ports
    );

    // Exact counts both directions: 50 echo requests out, 50 replies in, by ping and by xnic.
    let before = t.vm("vm0").counters;
    let out = guest(&t, "vm0", &format!("ping -q -c 50 -i 0.02 -W 2 {TOR}"));
    assert_eq!(ping_summary(&out), (50, 50), "{out}");
    let after = t.vm("vm0").counters;
    assert_eq!(after.from_vm.packets - before.from_vm.packets, 50);
    assert_eq!(after.to_vm.packets - before.to_vm.packets, 50);
    assert_eq!(after.from_vm.bytes - before.from_vm.bytes, 50 * 98);
    // The lab's own sequence-numbered UDP, sent from inside the guest (its tools disk) to
    // the tor's receiver: every datagram arrives, in order.
    let rx = Receiver::start(Some(&t.lab.tor_ns()), "10.77.0.1:9000".parse().unwrap()).unwrap();
    let out = guest(
        &t,
        "vm0",
        "/opt/xnic/xnic lab send-udp --dst 10.77.0.1:9000 --pps 2000 --secs 2 --flows 4",
    );
    let sent: SendReport = serde_json::from_str(out.trim()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let got = rx.stop().unwrap();
    assert_eq!(sent.sent, 4000, "{sent:?}");
    assert_eq!(
        (got.received, got.reordered, got.gaps),
        (4000, 0, 0),
        "{got:?}"
    );

    // Guest to guest, switched by xnic between their taps.
    let out = guest(&t, "vm1", "ping -q -c 20 -i 0.02 -W 2 10.77.0.10");
    assert_eq!(ping_summary(&out), (20, 20), "{out}");

    // RSS: frames for vm0 from many flows are steered to the CPUs its engine's table names,
    // each counted in exactly one bucket; its NIC has the engine's two queues.
    let out = guest(&t, "vm0", "ls /sys/class/net/*/queues/");
    assert!(out.contains("rx-1") && out.contains("tx-1"), "{out}");
    let rss: RssStatusView = block_on(t.client().get("/v1/rss")).unwrap();
    let engine = rss.engines.iter().find(|e| e.name == "shared-a").unwrap();
    let before: u64 = buckets(&t)
        .iter()
        .flat_map(|b| b.frames_per_cpu.clone())
        .sum();
    let sent = send_udp(
        Some(&t.lab.tor_ns()),
        UdpStream {
            dst: "10.77.0.10:9000".parse().unwrap(),
            flows: 32,
            pps: 2000,
            duration: Duration::from_millis(1500),
            payload: 64,
            zipf: None,
        },
    )
    .unwrap();
    let after = buckets(&t);
    let total: u64 = after.iter().flat_map(|b| b.frames_per_cpu.clone()).sum();
    assert_eq!(
        total - before,
        sent.sent,
        "every frame in exactly one bucket"
    );
    let mut cpus_used = std::collections::BTreeSet::new();
    for b in &after {
        for (cpu, frames) in b.frames_per_cpu.iter().enumerate() {
            if *frames > 0 {
                assert_eq!(cpu as u32, b.cpu, "bucket {} ran on CPU {cpu}", b.bucket);
                assert!(engine.cpus.contains(&(cpu as u32)));
                cpus_used.insert(cpu);
            }
        }
    }
    assert_eq!(
        cpus_used.len(),
        engine.cpus.len(),
        "32 flows on every CPU of the engine"
    );

    // A spoofed source MAC from inside a guest: every frame dropped and counted.
    let spoofed_before = reason_count(&t.stats(), "vm1", "spoofed_mac").packets;
    let out = guest(
        &t,
        "vm1",
        // A new address flushes the neighbour table, permanent entries too: put the tor's
        // back each time, so the guest sends its pings rather than ARP requests.
        "DEV=$(ls /sys/class/net | grep -v '^lo$' | head -1); \
         TOR='10.77.0.1 lladdr 02:78:00:00:00:01 nud permanent'; \
         ip link set $DEV address 02:66:00:00:00:01; ip neigh replace $TOR dev $DEV; \
         ping -q -c 10 -i 0.02 -W 1 10.77.0.1; \
         ip link set $DEV address 02:77:00:00:00:11; ip neigh replace $TOR dev $DEV; true",
    );
    assert_eq!(ping_summary(&out), (10, 0), "{out}");
    assert_eq!(
        reason_count(&t.stats(), "vm1", "spoofed_mac").packets - spoofed_before,
        10
    );

    // SIGKILL the daemon while a guest pings, start a new one: nothing lost (the pinned
    // dataplane forwards on its own).
    let pinger = in_background(&t, "vm0", &format!("ping -q -c 150 -i 0.02 -W 2 {TOR}"));
    std::thread::sleep(Duration::from_millis(800));
    t.take_daemon().kill().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    t.start_daemon();
    let (status, out) = pinger.join().unwrap();
    assert_eq!(status, 0, "{out}");
    assert_eq!(ping_summary(&out), (150, 150), "{out}");

    // The active uplink loses its carrier under a guest's stream: the stream moves to the
    // other uplink (a frame or two may go to the dead one first).
    let pinger = in_background(&t, "vm0", &format!("ping -q -c 150 -i 0.02 -W 2 {TOR}"));
    std::thread::sleep(Duration::from_millis(1000));
    let tor = t.lab.tor_ns();
    let carrier =
        |state: &str| xnic::lab::ip(&["-n", &tor, "link", "set", &tor_port("up0"), state]).unwrap();
    carrier("down");
    let (status, out) = pinger.join().unwrap();
    assert_eq!(status, 0, "{out}");
    let (sent, received) = ping_summary(&out);
    assert!(sent == 150 && received >= 148, "{out}");
    let team: TeamStatusView = block_on(t.client().get("/v1/team")).unwrap();
    let vm0 = team.vms.iter().find(|v| v.name == "vm0").unwrap();
    assert_eq!(vm0.uplink, "up1");
    carrier("up");

    // SIGKILL and restart of the daemon under a guest's iperf3: the receiver's own
    // intervals show no stall.
    let server = std::process::Command::new("ip")
        .args([
            "netns", "exec", &tor, "iperf3", "-s", "-1", "-J", "-i", "0.25",
        ])
        .args(["-B", TOR])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let client = in_background(&t, "vm0", &format!("iperf3 -c {TOR} -t 4 -i 0"));
    std::thread::sleep(Duration::from_millis(1500));
    t.take_daemon().kill().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    t.start_daemon();
    let (status, out) = client.join().unwrap();
    assert_eq!(status, 0, "{out}");
    let report: serde_json::Value =
        serde_json::from_slice(&server.wait_with_output().unwrap().stdout).unwrap();
    let intervals: Vec<f64> = report["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["sum"]["bits_per_second"].as_f64().unwrap_or(0.0))
        .collect();
    let stalled = intervals[..intervals.len().saturating_sub(1)]
        .iter()
        .filter(|b| **b < 1e6)
        .count();
    assert_eq!(stalled, 0, "250 ms intervals under 1 Mbit/s: {intervals:?}");

    // A guest that reboots keeps its tap (same QEMU): its traffic resumes on the same port.
    let g = t.lab.guest("vm0").unwrap();
    let port_ifindex = |t: &TestLab| {
        t.status()
            .ports
            .iter()
            .find(|p| p.name == "vm0")
            .map(|p| p.ifindex)
    };
    let ifindex = port_ifindex(&t);
    guest(
        &t,
        "vm0",
        "(sleep 0.3; echo b > /proc/sysrq-trigger) >/dev/null 2>&1 &",
    );
    g.wait_boots(2, xnic::lab::qemu::BOOT_TIMEOUT).unwrap();
    let out = guest(&t, "vm0", &format!("ping -q -c 20 -i 0.02 -W 2 {TOR}"));
    assert_eq!(ping_summary(&out), (20, 20), "{out}");
    assert_eq!(port_ifindex(&t), ifindex, "the tap stayed");
    assert_eq!(t.vm("vm0").port_state, "attached");

    // QEMU restarted: its tap is deleted and made again (a new ifindex); xnic attaches the new
    // one and the guest's counters go on from where they were.
    let slot = t.vm("vm1").slot;
    let counted = t.vm("vm1").counters.from_vm.packets;
    t.lab.unplug("vm1").unwrap();
    t.lab.plug("vm1").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || t.vm("vm1").port_state
            == "attached"),
        "vm1's new tap was not attached: {:?}",
        t.vm("vm1")
    );
    let out = guest(&t, "vm1", &format!("ping -q -c 20 -i 0.02 -W 2 {TOR}"));
    assert_eq!(ping_summary(&out), (20, 20), "{out}");
    let v = t.vm("vm1");
    assert_eq!(v.slot, slot);
    assert!(
        v.counters.from_vm.packets >= counted + 20,
        "{counted} before the restart, {} after",
        v.counters.from_vm.packets
    );
}
