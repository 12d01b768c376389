//! `xnic lab fleet` (and part of `xnic lab demo`): VNIC routing over a fleet of three xnic
//! hosts, narrated: traffic of every next-hop type, which host and CPU took which flow, a
//! route looked up in the dataplane's tries, a host taken away under traffic.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Context as _;

use super::{block_on, demo::heading, table};
use crate::{
    api::types::{RouteLookupView, VnicListView, VnicStatsView},
    lab::{
        fleet::{
            Fleet, HOSTS, NAT_PUBLIC, ONPREM_IP, PROBE_PORT, SERVER_IP, SERVICE_IP, WEB1_PUBLIC,
            echo_server, round_trips,
        },
        traffic::{Receiver, ping},
    },
};

/// Flows the demo follows, and the first of their source ports.
const FLOWS: u16 = 24;
const FIRST_PORT: u16 = 21000;

/// Runs the fleet demo in namespaces named `prefix-...`; everything is removed at the end.
pub fn demo(prefix: &str, stop: &AtomicBool) -> anyhow::Result<()> {
    heading(
        "VNIC routing: three xnic hosts behind a tor (resilient ECMP, L4 hash), one \
         configuration, instances and gateway networks behind VTEPs",
    );
    let exe = std::env::current_exe().context("cannot find the xnic executable")?;
    let fleet = Fleet::start(prefix, &exe, false)?;
    println!("namespaces: {}", fleet.lab.namespaces().join(", "));
    let list: VnicListView = block_on(fleet.client(0).get("/v1/vnics"))?;
    print!("{}", table::vnics(&list));

    println!("\nevery next hop, end to end:");
    let pings: [(&str, &str, &str); 7] = [
        ("web1", "10.0.2.10", "VNIC in the same VCN (db1)"),
        (
            "web1",
            "172.16.0.10",
            "virtual router → VNIC of another VCN (hub1)",
        ),
        (
            "web1",
            SERVER_IP,
            "internet gateway (web1 leaves as 203.0.113.10)",
        ),
        ("inet", WEB1_PUBLIC, "internet → web1's public address"),
        (
            "web1",
            SERVICE_IP,
            "service gateway (VXLAN VNI 500 to the services network)",
        ),
        (
            "web1",
            ONPREM_IP,
            "dynamic routing gateway (VNI 600 to on-premises)",
        ),
        ("hub1", "10.0.1.10", "hub1's own route table back to web1"),
    ];
    for (from, to, what) in pings {
        let r = ping(&fleet.lab.ns(from), to, 3)?;
        println!(
            "  ping {from} → {to}: {}/{} answered   {what}",
            r.received, r.sent
        );
    }
    let heard = echo_server(&fleet.lab.ns("inet"), 53, 10)?;
    let answered = round_trips(
        &fleet.lab.ns("db1"),
        40000,
        format!("{SERVER_IP}:53").parse()?,
        10,
    )?;
    let seen = heard
        .recv_timeout(Duration::from_secs(1))
        .map_or("nothing".to_string(), |a| a.to_string());
    println!(
        "  UDP db1 → {SERVER_IP}:53 through the NAT gateway: {answered}/10 answered; the \
         server saw {seen} (the gateway's {NAT_PUBLIC}, a port of one host's block)"
    );
    let refused = round_trips(&fleet.lab.ns("web1"), 40001, "10.0.2.10:8000".parse()?, 3)?;
    println!(
        "  UDP web1 → db1:8000: {refused}/3 answered (db's security list allows UDP 9000-9999 \
         only: acl_deny)"
    );
    let lookup: RouteLookupView = block_on(
        fleet
            .client(0)
            .get("/v1/routes/lookup?vnic=web1&addr=172.16.0.10"),
    )?;
    println!("\nxnic route lookup web1 172.16.0.10 (from h1's tries):");
    print!("{}", table::route_lookup(&lookup));

    heading("which host and CPU takes which flow (web1 → db1, by UDP source port)");
    let mut before = BTreeMap::new();
    for k in 0..FLOWS {
        let port = FIRST_PORT + k;
        if let Some(placed) = fleet.host_of_flow(port)? {
            before.insert(port, placed);
        }
    }
    let mut line = String::new();
    for (port, (host, cpu)) in &before {
        let cpu = cpu.map_or("?".to_string(), |c| c.to_string());
        line.push_str(&format!("  {port}→h{}/cpu{cpu}", host + 1));
        if line.len() > 80 {
            println!("{line}");
            line.clear();
        }
    }
    if !line.is_empty() {
        println!("{line}");
    }
    let share: Vec<usize> = (0..HOSTS)
        .map(|h| before.values().filter(|(x, _)| *x == h).count())
        .collect();
    println!("flows per host: {share:?}");
    if stop.load(Ordering::Relaxed) {
        return Ok(());
    }

    heading("taking h2 away under traffic: its link down at the tor, nothing reconfigured");
    let receiver = Receiver::start(
        Some(&fleet.lab.ns("db1")),
        format!("0.0.0.0:{PROBE_PORT}").parse()?,
    )?;
    let sender = fleet.stream_web1_to_db1(FLOWS, 2400, 4, FIRST_PORT);
    std::thread::sleep(Duration::from_millis(1500));
    fleet.lab.set_host_link(1, false)?;
    println!("ip link set h2 down (in the tor), 1.5 s into a 4 s stream of {FLOWS} flows");
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let got = receiver.stop()?;
    let affected = got.per_flow.iter().filter(|f| f.gaps > 0).count();
    let longest = got
        .per_flow
        .iter()
        .filter(|f| before.get(&f.src_port).is_some_and(|(h, _)| *h == 1))
        .map(|f| f.longest_silence_ms)
        .fold(0.0, f64::max);
    println!(
        "sent {}, received {}: {affected} flow(s) lost datagrams; h2's {} flow(s) went at most \
         {longest:.0} ms without a datagram (one every 10 ms)",
        sent.sent, got.received, share[1]
    );
    let mut moved = 0;
    let mut kept = 0;
    for (port, (was, _)) in &before {
        if let Some((now, _)) = fleet.host_of_flow(*port)? {
            if now == *was {
                kept += 1;
            } else {
                moved += 1;
            }
        }
    }
    println!(
        "afterwards: {moved} flow(s) moved host (h2's), {kept} stayed where they were \
         (a modulo-N hash would have moved about two thirds)"
    );
    for h in [0, 2] {
        let s: VnicStatsView = block_on(fleet.client(h).get("/v1/vnics/stats"))?;
        let forwarded = s.reasons.get("vnic_forward").copied().unwrap_or(0);
        let denied = s.reasons.get("acl_deny").copied().unwrap_or(0);
        println!("h{}: {forwarded} packets forwarded, {denied} denied", h + 1);
    }
    drop(fleet);
    println!("fleet lab removed");
    Ok(())
}
