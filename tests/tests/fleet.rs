//! VNIC routing end to end in the fleet lab: three hosts, each with its own daemon and the
//! same configuration, behind a tor that spreads the fleet's VTEP over them by ECMP. Every
//! next-hop type carries traffic; a host taken away under traffic moves only its own share of
//! the flows; a route changed at run time on every host takes effect.

use std::{collections::BTreeMap, process::Command, time::Duration};

use xnic::{
    api::types::{RouteLookupView, VnicListView, VnicStatsView},
    cli::block_on,
    lab::{
        fleet::{
            Fleet, HOSTS, NAT_PUBLIC, ONPREM_IP, PROBE_PORT, SERVER_IP, SERVICE_IP, echo_server,
            round_trips,
        },
        traffic::Receiver,
    },
};
use xnic_tests::{unique_name, xnic_bin};

fn ping(ns: &str, dst: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", dst,
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[track_caller]
fn reaches(fleet: &Fleet, from: &str, dst: &str) {
    let ns = fleet.lab.ns(from);
    assert!(ping(&ns, dst), "{from} → {dst} does not answer");
}

fn stats(fleet: &Fleet, host: usize) -> VnicStatsView {
    block_on(fleet.client(host).get("/v1/vnics/stats")).unwrap()
}

/// An event's count summed over the hosts.
fn events(fleet: &Fleet, event: &str) -> u64 {
    (0..HOSTS)
        .map(|h| stats(fleet, h).events.get(event).copied().unwrap_or(0))
        .sum()
}

/// web1's UDP packet to db1, wrapped as its host sends it, put on each host's link at the
/// tor in turn; returns the VXLAN frames db1's host received after each.
fn same_packet_through_each_host(fleet: &Fleet) -> Vec<Vec<u8>> {
    use xnic::lab::capture::{Capture, inject};
    let mac = |s: &str| -> [u8; 6] { s.parse::<xnic::net::MacAddr>().unwrap().0 };
    let mut inner = Vec::new();
    etherparse::PacketBuilder::ethernet2(mac("02:00:00:00:01:01"), mac("02:00:5e:00:00:01"))
        .ipv4([10, 0, 1, 10], [10, 0, 2, 10], 64)
        .udp(41000, PROBE_PORT)
        .write(&mut inner, b"the same packet")
        .unwrap();
    let mut out = Vec::new();
    for h in 0..HOSTS {
        let (tor_mac, host_mac) = xnic::lab::fleet::FleetLab::host_link_macs(h);
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2(mac(&tor_mac), mac(&host_mac))
            .ipv4([192, 0, 2, 11], [192, 0, 2, 100], 63)
            .udp(50000, 4789)
            .write(
                &mut frame,
                &[&[0x08, 0, 0, 0, 0, 0, 100, 0][..], &inner].concat(),
            )
            .unwrap();
        let capture = Capture::start_keeping(&fleet.lab.ns("db1"), "up0", 2048).unwrap();
        inject(
            &fleet.lab.tor_ns(),
            &xnic::lab::fleet::FleetLab::host_port(h),
            vec![frame],
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let got = capture.stop().unwrap();
        out.extend(
            got.into_iter()
                .map(|c| c.head)
                .filter(|f| f.len() > 50 && f[23] == 17 && f[36..38] == 4789u16.to_be_bytes()),
        );
    }
    out
}

fn lookup(fleet: &Fleet, host: usize, vnic: &str, addr: &str) -> RouteLookupView {
    block_on(
        fleet
            .client(host)
            .get(&format!("/v1/routes/lookup?vnic={vnic}&addr={addr}")),
    )
    .unwrap()
}

#[test]
fn a_fleet_of_three_routes_every_next_hop_and_survives_losing_a_host() {
    let mut fleet = Fleet::start(&unique_name(), &xnic_bin(), false).expect("the fleet lab");

    // Inside the VCN, and through a virtual router to another VCN.
    reaches(&fleet, "web1", "10.0.2.10");
    reaches(&fleet, "web1", "172.16.0.10");
    // The internet gateway both ways, the service gateway and the dynamic routing gateway.
    reaches(&fleet, "web1", SERVER_IP);
    reaches(&fleet, "inet", xnic::lab::fleet::WEB1_PUBLIC);
    reaches(&fleet, "web1", SERVICE_IP);
    reaches(&fleet, "web1", ONPREM_IP);
    for (event, least) in [
        ("to_vnic", 4),
        ("to_internet", 2),
        ("from_internet", 2),
        ("to_service", 2),
        ("to_on_premises", 2),
        ("from_gateway", 4),
        ("router_hop", 2),
    ] {
        let n = events(&fleet, event);
        assert!(n >= least, "{event}: {n} over the fleet");
    }
    // The NAT gateway: db1's UDP to the internet leaves behind the gateway's address, and
    // the answers find db1 whichever host ECMP brings them to.
    let heard = echo_server(&fleet.lab.ns("inet"), 53, 20).unwrap();
    let answered = round_trips(
        &fleet.lab.ns("db1"),
        40000,
        format!("{SERVER_IP}:53").parse().unwrap(),
        20,
    )
    .unwrap();
    assert_eq!(answered, 20, "NAT answers");
    let peer = heard.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(peer.ip().to_string(), NAT_PUBLIC, "translated source");
    assert!(events(&fleet, "nat_new") >= 1);

    // Security rules: db1 takes UDP from web1 on 9000-9999 only.
    assert_eq!(
        round_trips(
            &fleet.lab.ns("web1"),
            40001,
            "10.0.2.10:8000".parse().unwrap(),
            3
        )
        .unwrap(),
        0
    );
    let denied: u64 = (0..HOSTS)
        .map(|h| {
            stats(&fleet, h)
                .reasons
                .get("acl_deny")
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert!(denied >= 3, "acl_deny over the fleet: {denied}");

    // The metrics show each VNIC's traffic and VNIC routing's events.
    let (_, body) = block_on(
        fleet
            .client(0)
            .request(xnic::api::client::Method::GET, "/metrics"),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&body);
    let problems = xnic_tests::dashboard::check(&text, &["xnic_vnic_"]);
    assert!(problems.is_empty(), "{problems:#?}");
    for want in [
        "xnic_vnic_packets_total{",
        "vnic=\"web1\"",
        "xnic_vnic_routing_events_total{",
        "reason=\"acl_deny\"",
    ] {
        assert!(text.contains(want), "{want} in the metrics");
    }

    // The same packet handed to each host by the tor comes out of each alike: what db1's
    // host receives is byte for byte the same.
    let identical = same_packet_through_each_host(&fleet);
    assert_eq!(
        identical.len(),
        HOSTS,
        "one frame through each host: {identical:?}"
    );
    assert!(
        identical.windows(2).all(|w| w[0] == w[1]),
        "{identical:02x?}"
    );

    // Route lookups agree on every host.
    for h in 0..HOSTS {
        let l = lookup(&fleet, h, "web1", "172.16.0.10");
        assert_eq!(l.result, "vnic:hub1", "host {h}: {l:?}");
        assert_eq!(l.steps.len(), 2, "through the router: {l:?}");
    }

    // A daemon restarted under traffic leaves every host routing: the CPU-map queues keep
    // the workers' programs, and those their stage table, until the new daemon's take over.
    let receiver = Receiver::start(
        Some(&fleet.lab.ns("db1")),
        format!("0.0.0.0:{PROBE_PORT}").parse().unwrap(),
    )
    .unwrap();
    let sender = fleet.stream_web1_to_db1(24, 1200, 3, 22000);
    std::thread::sleep(Duration::from_millis(800));
    fleet.stop_daemon(0).unwrap();
    fleet.start_daemon(0).unwrap();
    let sent = sender.join().unwrap().unwrap();
    let got = receiver.stop().unwrap();
    assert_eq!(got.flows, 24, "{got:?}");
    assert!(got.received >= sent.sent * 99 / 100, "{got:?} of {sent:?}");
    for f in &got.per_flow {
        assert!(f.longest_silence_ms < 150.0, "across the restart: {f:?}");
    }
    // Stage tables: the new daemon's entry table alone, and a worker table for each CPU-map
    // program a queue runs (the old one's, until its queues are replaced) and its own.
    let pins = std::path::Path::new(xnic::dataplane::PIN_ROOT)
        .join(fleet.lab.host_ns(0))
        .join("calls");
    let tables: Vec<String> = std::fs::read_dir(&pins)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let workers = tables.iter().filter(|t| t.starts_with("cpu-")).count();
    assert_eq!(tables.len() - workers, 1, "{tables:?}");
    assert!((1..=2).contains(&workers), "{tables:?}");

    // The CLI: a route lookup and a VNIC as JSON, and a change that would loop refused with
    // its reason, changing nothing.
    let instance = fleet.lab.host_ns(0);
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--instance", instance.as_str()]);
        xnic_tests::xnic(&all)
    };
    let out = cli(&["route", "lookup", "web1", "172.16.0.10", "--json"]);
    let l: RouteLookupView = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(l.result, "vnic:hub1");
    let out = cli(&["vnic", "show", "db1", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["vni"], 100);
    let before = cli(&["config"]).stdout;
    let out = cli(&["route", "add", "transit", "10.0.0.0/8", "router:web"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loop"), "{err}");
    let out = cli(&["rule", "del", "db", "ingress", "7"]);
    assert!(!out.status.success());
    assert_eq!(cli(&["config"]).stdout, before, "nothing changed");

    // Where each of 48 flows goes, before a host is lost.
    const FLOWS: u16 = 48;
    const FIRST_PORT: u16 = 21000;
    let placed: BTreeMap<u16, (usize, Option<usize>)> = (0..FLOWS)
        .map(|k| {
            let port = FIRST_PORT + k;
            let placed = fleet
                .host_of_flow(port)
                .unwrap()
                .expect("one host per flow");
            (port, placed)
        })
        .collect();
    let before: BTreeMap<u16, usize> = placed.iter().map(|(p, (h, _))| (*p, *h)).collect();

    // On each host the flow's hash picks the worker CPU that routes it: every flow is
    // routed on one CPU, flows spread over the engine's CPUs, and the packets went there
    // through the CPU map.
    let cpus = xnic::config::host::online_cpus().unwrap();
    for h in 0..HOSTS {
        let list: VnicListView = block_on(fleet.client(h).get("/v1/vnics")).unwrap();
        let workers = list.fleet.and_then(|f| f.workers).expect("worker CPUs");
        assert_eq!((workers.engine.as_str(), &workers.cpus), ("workers", &cpus));
        let rss: serde_json::Value = block_on(fleet.client(h).get("/v1/rss")).unwrap();
        let steered = rss["steering"]["steered"].as_u64().unwrap_or(0);
        assert!(steered > 0, "host {h} steers to its workers: {rss}");
    }
    let used: std::collections::BTreeSet<usize> = placed
        .values()
        .map(|(_, cpu)| cpu.expect("one CPU per flow"))
        .collect();
    if cpus.len() > 1 {
        assert!(used.len() > 1, "48 flows over CPUs {cpus:?}: {placed:?}");
    }
    let per_host: Vec<usize> = (0..HOSTS)
        .map(|h| before.values().filter(|x| **x == h).count())
        .collect();
    assert!(
        per_host.iter().all(|n| *n > 0),
        "ECMP spreads flows over every host: {per_host:?}"
    );

    // The flows under traffic while host 2 (index 1) goes away.
    let db1 = fleet.lab.ns("db1");
    let receiver =
        Receiver::start(Some(&db1), format!("0.0.0.0:{PROBE_PORT}").parse().unwrap()).unwrap();
    let sender = fleet.stream_web1_to_db1(FLOWS, 2400, 4, FIRST_PORT);
    std::thread::sleep(Duration::from_millis(1500));
    fleet.lab.set_host_link(1, false).unwrap();
    let sent = sender.join().unwrap().unwrap();
    let got = receiver.stop().unwrap();
    assert_eq!(got.flows, u64::from(FLOWS));
    assert!(got.received > sent.sent * 8 / 10, "{got:?} of {sent:?}");
    let mut stayed_lost = 0;
    for f in &got.per_flow {
        let was = before[&f.src_port];
        if was != 1 {
            // Flows of the hosts that stayed never stall. A lone datagram may go: a veth
            // queues at most 256 frames a host sends back with XDP_TX for the tor's next poll,
            // and a sender that fell behind (the machine busy with the link event) catches up
            // in a burst. A NIC's ring is deeper.
            assert!(f.gaps <= 1, "flow {} on host {was}: {f:?}", f.src_port);
            assert!(f.longest_silence_ms < 150.0, "{f:?}");
            stayed_lost += f.gaps;
        }
        assert!(f.received > 0);
    }
    assert!(
        stayed_lost <= 2,
        "{stayed_lost} datagrams of the flows that stayed"
    );

    // Afterwards only the lost host's flows moved.
    let mut moved = 0;
    for (port, was) in &before {
        let (now, _) = fleet
            .host_of_flow(*port)
            .unwrap()
            .expect("one host per flow");
        assert_ne!(now, 1, "nothing goes to the lost host");
        if *was != 1 {
            assert_eq!(now, *was, "flow {port} stayed where it was");
        } else {
            moved += 1;
        }
    }
    assert_eq!(moved, per_host[1]);

    // A route changed at run time on every host takes effect: without its route, the
    // on-premises network is unreachable; with it back, reachable again.
    for h in [0, 2] {
        block_on(
            fleet
                .client(h)
                .delete::<serde_json::Value>("/v1/routes?table=web&dst=192.168.0.0%2F16"),
        )
        .unwrap();
    }
    fleet.lab.set_host_link(1, true).unwrap();
    block_on(
        fleet
            .client(1)
            .delete::<serde_json::Value>("/v1/routes?table=web&dst=192.168.0.0%2F16"),
    )
    .unwrap();
    for h in 0..HOSTS {
        assert_eq!(lookup(&fleet, h, "web1", ONPREM_IP).result, "igw:internet");
    }
    assert!(!ping(&fleet.lab.ns("web1"), ONPREM_IP));
    for h in 0..HOSTS {
        let body =
            serde_json::json!({"table": "web", "dst": "192.168.0.0/16", "via": "drg:onprem"});
        block_on(
            fleet
                .client(h)
                .post_json::<_, serde_json::Value>("/v1/routes", &body),
        )
        .unwrap();
    }
    reaches(&fleet, "web1", ONPREM_IP);
}
