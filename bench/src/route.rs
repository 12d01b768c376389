//! `xnic-bench route`: VNIC routing (SPEC §2.3).
//!
//! - ns per frame of the routing path (BPF_PROG_TEST_RUN on an uplink): a compute instance's
//!   packet re-wrapped to another VNIC in its VCN, and one through its route table to the
//!   internet gateway, with the route table holding 1, 10k and 1M routes, against the empty
//!   program in the same run;
//! - frames/s through one host: xnic against the Linux slow path doing the same job
//!   ([`crate::route_live`]);
//! - losing one of three hosts: the share of flows that changed host with the fleet lab's
//!   resilient nexthop group, against the kernel's plain multipath route (hash-threshold)
//!   measured the same way and a modulo-N hash over the same flows; and how long the lost
//!   host's flows went without traffic.

use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc};

use anyhow::{Context as _, bail};
use etherparse::PacketBuilder;
use xnic::{
    config::Config,
    dataplane::{
        Dataplane,
        baseline::{Baseline, BaselineProgram},
    },
    features::vnic::Vnic,
    lab::fleet::FleetLab,
    policy::{
        plan::Image,
        route::{Prefix, RouteKey},
        vnic_plan::{VnicImage, VnicOp},
    },
};
use xnic_common::{
    maps::{PortEntry, PortRole},
    vnic::{NextHop, RouteEntry},
};

use crate::{
    flag,
    report::{Better, Report, timed},
    rss_sim::Rng,
};

const TOR_MAC: [u8; 6] = [0x02, 0x70, 0, 0, 0, 0x01];
const HOST_MAC: [u8; 6] = [0x02, 0x68, 0, 0, 0, 0x01];
const WEB1_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0, 0, 0x01];
/// The destination measured through the route table: inside a /24 every table size holds.
const MEASURED: [u8; 4] = [100, 64, 7, 9];

struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = xnic::dataplane::teardown(&self.0);
    }
}

/// A compute instance's UDP packet from web1 to `dst`, wrapped as its host sends it to the
/// fleet; `seq` makes each frame fresh.
pub fn wrapped(dst: [u8; 4], sport: u16, seq: u32) -> Vec<u8> {
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(WEB1_MAC, ROUTER_MAC)
        .ipv4([10, 0, 1, 10], dst, 64)
        .udp(sport, 9999)
        .write(
            &mut inner,
            &[seq.to_be_bytes(), [0; 4], [0; 4], [0; 4]].concat(),
        )
        .expect("a frame");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(TOR_MAC, HOST_MAC)
        .ipv4([192, 0, 2, 11], [192, 0, 2, 100], 63)
        .udp(50000, 4789)
        .write(
            &mut out,
            &[&[0x08, 0, 0, 0, 0, 0, 100, 0][..], &inner[..]].concat(),
        )
        .expect("a frame");
    out
}

/// `n` distinct IPv4 prefixes shaped like an internet table (six in ten /24, the rest /16 to
/// /23 and /25 to /32), outside the lab's VCNs and the measured /24, which is always
/// included.
fn internet_prefixes(n: usize) -> Vec<Prefix> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen = std::collections::HashSet::new();
    let measured: Prefix = format!(
        "{}/24",
        Ipv4Addr::from([MEASURED[0], MEASURED[1], MEASURED[2], 0])
    )
    .parse()
    .expect("a prefix");
    let mut out = vec![measured];
    seen.insert(measured);
    while out.len() < n {
        let r = rng.next();
        let len = match r % 10 {
            0..=5 => 24,
            6 => 16 + (r >> 8) as u8 % 8,
            _ => 25 + (r >> 8) as u8 % 8,
        };
        let a = Ipv4Addr::from((r >> 32) as u32);
        let first = a.octets()[0];
        // Not the VCNs', not multicast or reserved space.
        if first == 10 || first == 172 || first == 0 || first >= 224 || first == 127 {
            continue;
        }
        let masked = u32::from(a) & (u32::MAX << (32 - u32::from(len)));
        let Ok(p) = Prefix::new(Ipv4Addr::from(masked).into(), len) else {
            continue;
        };
        if seen.insert(p) {
            out.push(p);
        }
    }
    out
}

/// The lab's fleet configuration rendered for host 1, with `extra` routes to the internet
/// gateway added to web1's table.
fn image_with_routes(extra: &[Prefix]) -> anyhow::Result<VnicImage> {
    let lab = FleetLab::new("xbench");
    let config: Config = xnic::config::parse(&lab.config(0), std::path::Path::new("fleet.toml"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut feature = Vnic::default();
    feature.set_host(Some(0));
    feature.reconcile(&config).map_err(anyhow::Error::msg)?;
    let mut image = (*feature.image()).clone();
    let table = feature.table_id("web").context("web's table")?;
    let default = image
        .routes
        .iter()
        .find(|(k, _)| k.prefix() == (table, "0.0.0.0/0".parse().expect("a prefix")))
        .map(|(_, e)| *e)
        .context("web's default route")?;
    let first = image.routes.values().map(|e| e.route).max().unwrap_or(0) + 1;
    for (id, p) in (first..).zip(extra) {
        image.routes.insert(
            RouteKey::route(table, p),
            RouteEntry {
                kind: NextHop::InternetGateway as u8,
                route: id,
                ..default
            },
        );
    }
    image.route_gen = xnic::policy::vnic_plan::route_generation(&image.routes);
    Ok(image)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the route benchmark needs root (BPF, namespaces)");
    }
    let runs: usize = flag(args, "--runs", 100_000)?;
    let most: usize = flag(args, "--routes", 1_000_000)?;
    let mut report = Report::new("route");
    report.notes.push(format!(
        "Per frame: single BPF_PROG_TEST_RUN runs of a fresh VXLAN-wrapped UDP packet from web1 on an uplink of fleet host h1, timed by the kernel around the programs (the entry, the VNIC stage and the next-hop stage, two tail calls), median of {runs}. \"To a VNIC\": web1 → db1 in the same VCN, re-wrapped to db1's host. \"Through the route table\": web1 → {} through web1's table to the internet gateway (1:1 NAT, unwrapped), the table holding the lab's routes plus internet-shaped prefixes (60 % /24) up to the size shown; a destination's route is remembered (ROUTE_CACHE, by routes' generation) after its first packet, which walks the tries (measured by raising the generation before every run). The empty program's figure is the kernel's fixed cost of a run.",
        Ipv4Addr::from(MEASURED)
    ));
    let instance = format!("xrouteb{}", std::process::id());
    let _guard = Guard(instance.clone());
    let mut dp = Dataplane::open(&instance, 3)?;
    let mut baseline = Baseline::load()?;
    let lo = nix::net::if_::if_nametoindex("lo")?;
    let mut written = Image::default();
    let mut base = Image::default();
    base.ports.insert(
        lo,
        PortEntry::new(1, xnic_common::maps::NO_VM, PortRole::Uplink),
    );
    written = dp.write_image(&written, base.clone())?;

    let mut rows = Vec::new();
    for n in [1usize, 10_000, most] {
        eprintln!("route table: {n} routes");
        let extra = internet_prefixes(n);
        let mut to = written.clone();
        to.vnic = Arc::new(image_with_routes(&extra)?);
        written = dp.write_image(&written, to)?;
        let empty = timed(runs, |s| {
            Ok(baseline
                .test_run(BaselineProgram::Pass, &wrapped(MEASURED, 40000, s), 1)?
                .ns_per_run)
        })?;
        let run_to = |dp: &mut Dataplane, dst: [u8; 4]| {
            timed(runs, |s| {
                let out = dp.test_run(PortRole::Uplink, &wrapped(dst, 40000, s), lo, 1)?;
                if out.action != 3 {
                    bail!(
                        "the packet to {dst:?} was not forwarded (action {})",
                        out.action
                    );
                }
                Ok(out.ns_per_run)
            })
        };
        let vnic = run_to(&mut dp, [10, 0, 2, 10])?;
        let routed = run_to(&mut dp, MEASURED)?;
        // Every run of another routes' generation: nothing remembered, the tries walked.
        let generation = written.vnic.route_gen;
        let first = timed(runs, |s| {
            dp.execute_vnic(&VnicOp::SetRouteGen(generation.wrapping_add(s + 1)))?;
            let out = dp.test_run(PortRole::Uplink, &wrapped(MEASURED, 40000, s), lo, 1)?;
            if out.action != 3 {
                bail!("the packet was not forwarded (action {})", out.action);
            }
            Ok(out.ns_per_run)
        })?;
        dp.execute_vnic(&VnicOp::SetRouteGen(generation))?;
        eprintln!(
            "  to a VNIC {vnic:.0} ns, through the table {routed:.0} ns (first packet {first:.0} ns), empty {empty:.0} ns"
        );
        rows.push((n, vnic, routed, empty, first));
    }
    for (n, vnic, routed, empty, first) in &rows {
        report.add(
            "ns per frame",
            &format!(
                "through the route table, a destination's first packet (tries walked), {n} routes"
            ),
            "ns",
            Better::Lower,
            *first,
            &[("empty XDP program", *empty)],
        );
        report.add(
            "ns per frame",
            &format!("to a VNIC in the VCN (re-wrapped), {n} routes"),
            "ns",
            Better::Lower,
            *vnic,
            &[("empty XDP program", *empty)],
        );
        report.add(
            "ns per frame",
            &format!("through the route table to the internet gateway, later packets (route remembered), {n} routes"),
            "ns",
            Better::Lower,
            *routed,
            &[("empty XDP program", *empty)],
        );
    }
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    report.add(
        "ns per frame",
        &format!(
            "through the route table, {} routes against 1 (goal: at most 1.2)",
            last.0
        ),
        "ns",
        Better::Lower,
        last.2,
        &[("1 route (same run)", first.2)],
    );
    report.add(
        "ns per frame",
        &format!(
            "through the route table, a destination's first packet, {} routes against 1",
            last.0
        ),
        "ns",
        Better::Lower,
        last.4,
        &[("1 route (same run)", first.4)],
    );
    drop(dp);

    if !args.iter().any(|a| a == "--no-live") {
        crate::route_live::rows(&mut report, args)?;
    }
    report.write()
}

/// Flows of `before` (port → host) that changed host in `after`.
pub fn moved(before: &BTreeMap<u16, usize>, after: &BTreeMap<u16, usize>) -> usize {
    before
        .iter()
        .filter(|(p, h)| after.get(p).is_some_and(|a| a != *h))
        .count()
}
