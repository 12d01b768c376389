//! The live rows of `xnic-bench route`: frames/s through one host, xnic against the Linux
//! slow path doing the same job; and losing one host of the fleet lab.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use xnic::{
    dataplane::baseline::BaselineProgram,
    lab::{
        fleet::{FLEET_SECTIONS, Fleet, HOSTS, PROBE_PORT, workers_toml},
        ip,
        traffic::Receiver,
    },
};
use xnic_common::{hash::flow_hash, parse::parse_frame};

use crate::{
    flag,
    live::{self, with_baseline, xdp_received},
    report::{Better, Report, median},
};

const T_MAC: &str = "02:70:00:00:00:01";
const H_MAC: &str = "02:68:00:00:00:01";

/// Two namespaces: `T` sends wrapped packets into `H`'s uplink and counts what comes back.
struct OneHost {
    t: String,
    h: String,
}

impl Drop for OneHost {
    fn drop(&mut self) {
        for name in ["route", "route-in-place"] {
            let _ = std::fs::remove_file(live::config_file(&self.h, name));
        }
        let prefix = self.t.trim_end_matches("-t");
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{prefix}.trafgen")));
        let _ = xnic::dataplane::teardown(&self.h);
        let _ = xnic::model::store::Store::new(&self.h).remove();
        for ns in [&self.t, &self.h] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

fn sh(ns: &str, cmd: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()?;
    if !out.status.success() {
        anyhow::bail!("{cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl OneHost {
    fn up(prefix: &str) -> anyhow::Result<OneHost> {
        let o = OneHost {
            t: format!("{prefix}-t"),
            h: format!("{prefix}-h"),
        };
        for ns in [&o.t, &o.h] {
            ip(&["netns", "add", ns])?;
            sh(
                ns,
                "ip link set lo up; sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
                 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0",
            )?;
        }
        ip(&[
            "link", "add", "t0", "netns", &o.t, "type", "veth", "peer", "name", "up0", "netns",
            &o.h,
        ])?;
        sh(
            &o.t,
            &format!(
                "ip link set t0 address {T_MAC} up; ip addr add 10.254.1.1/24 dev t0; \
                 ip neigh add 10.254.1.2 lladdr {H_MAC} dev t0 nud permanent; \
                 ethtool -K t0 tx off tso off gso off"
            ),
        )?;
        sh(
            &o.h,
            &format!(
                "ip link set up0 address {H_MAC} up; ip addr add 10.254.1.2/24 dev up0; \
                 ip addr add 192.0.2.1/32 dev up0; \
                 ip neigh add 10.254.1.1 lladdr {T_MAC} dev up0 nud permanent; \
                 ip route add 192.0.2.0/24 via 10.254.1.1 dev up0; \
                 ethtool -K up0 tx off tso off gso off"
            ),
        )?;
        Ok(o)
    }

    /// The Linux slow path doing the fleet host's job for web1 → db1: a VXLAN device on the
    /// fleet's address unwraps, web1's route table (a policy rule on its source) routes,
    /// nftables applies db's security list, the same device wraps for db1's VTEP.
    fn linux(&self, on: bool) -> anyhow::Result<()> {
        if on {
            sh(
                &self.h,
                "ip addr add 192.0.2.100/32 dev lo; sysctl -qw net.ipv4.ip_forward=1; \
                 ip link add vx100 type vxlan id 100 local 192.0.2.100 dstport 4789 nolearning; \
                 ip link set vx100 address 02:00:5e:00:00:01 up; \
                 ip route add 10.0.2.10/32 dev vx100 table 100; \
                 ip rule add from 10.0.1.0/24 iif vx100 lookup 100; \
                 ip neigh add 10.0.2.10 lladdr 02:00:00:00:02:01 dev vx100 nud permanent; \
                 bridge fdb append 02:00:00:00:02:01 dev vx100 dst 192.0.2.12; \
                 nft 'add table inet vnic; add chain inet vnic forward_vnic { type filter hook forward priority 0; policy drop; }; \
                 add rule inet vnic forward_vnic ip saddr 10.0.1.10 ip daddr 10.0.2.0/24 udp dport 9000-9999 accept'",
            )
        } else {
            sh(
                &self.h,
                "nft delete table inet vnic; ip rule del from 10.0.1.0/24 iif vx100 lookup 100; \
                 ip link del vx100; ip addr del 192.0.2.100/32 dev lo; \
                 sysctl -qw net.ipv4.ip_forward=0",
            )
        }
    }

    /// xnic's configuration for the one host: the lab's sections, a fleet of one, routing on
    /// worker CPUs (the lab's) or on the CPU that receives each packet.
    fn config(&self, workers: bool) -> String {
        let hosts = "hosts = [\n  { name = \"h1\", vtep = \"192.0.2.1\" },\n  { name = \"h2\", vtep = \"192.0.2.2\" },\n  { name = \"h3\", vtep = \"192.0.2.3\" },\n]";
        let one = "hosts = [{ name = \"h1\", vtep = \"192.0.2.1\" }]";
        let mut sections = FLEET_SECTIONS.replace(hosts, one) + &workers_toml();
        if !workers {
            sections = sections.replace("engine = \"workers\"\n", "");
        }
        format!(
            "instance = \"{ns}\"\nnetns = \"{ns}\"\n\n[[uplink]]\nname = \"up0\"\n{sections}",
            ns = self.h
        )
    }

    /// web1's packets to db1 as its host wraps them, many flows (the outer source port
    /// counts up, as the kernel's VXLAN devices spread flows). The inner frame is written out
    /// as bytes: trafgen follows one header of each kind only.
    fn trafgen_config(path: &Path) -> anyhow::Result<()> {
        let frame = crate::route::wrapped([10, 0, 2, 10], 40000, 0);
        let inner: Vec<String> = frame[50..].iter().map(|b| format!("0x{b:02x}")).collect();
        std::fs::write(
            path,
            format!(
                "{{\n  eth(da={H_MAC}, sa={T_MAC}, type=0x0800),\n  ipv4(saddr=192.0.2.11, daddr=192.0.2.100, ttl=63),\n  udp(sp=dinc(49152, 65000), dp=4789),\n  0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x64, 0x00,\n  {}\n}}\n",
                inner.join(", ")
            ),
        )?;
        Ok(())
    }

    /// Frames/s coming back to `T` while trafgen sends for `secs`.
    fn rate(&self, cfg: &Path, secs: f64) -> anyhow::Result<f64> {
        with_baseline(&self.t, &["t0"], BaselineProgram::Drop, || {
            let generator = live::trafgen(&self.t, "t0", cfg, None)?;
            let measured = (|| {
                std::thread::sleep(Duration::from_millis(500));
                let (c0, t0) = (xdp_received(&self.t, "t0")?, Instant::now());
                std::thread::sleep(Duration::from_secs_f64(secs));
                let (c1, t1) = (xdp_received(&self.t, "t0")?, Instant::now());
                Ok((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
            })();
            generator.kill();
            measured
        })
    }
}

pub fn rows(report: &mut Report, args: &[String]) -> anyhow::Result<()> {
    let secs: f64 = flag(args, "--secs", 3.0)?;
    let rounds: usize = flag(args, "--rounds", 3)?;
    eprintln!("live: frames/s through one host");
    let prefix = format!("xrl{}", std::process::id());
    let one = OneHost::up(&prefix)?;
    let cfg = std::env::temp_dir().join(format!("{prefix}.trafgen"));
    OneHost::trafgen_config(&cfg)?;
    let config = live::config_file(&one.h, "route");
    let in_place = live::config_file(&one.h, "route-in-place");
    std::fs::write(&config, one.config(true))?;
    std::fs::write(&in_place, one.config(false))?;
    let xnic = |config: &Path| -> anyhow::Result<f64> {
        let daemon = live::start_daemon(&one.h, config)?;
        let x = one.rate(&cfg, secs);
        live::stop_dataplane(&one.h, daemon)?;
        x
    };
    let (mut xnic_rates, mut in_place_rates, mut linux_rates) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        one.linux(true)?;
        let l = one.rate(&cfg, secs);
        one.linux(false)?;
        let l = l?;
        let x = xnic(&config)?;
        let p = xnic(&in_place)?;
        eprintln!(
            "  round {round}: xnic {x:.0} frames/s on worker CPUs, {p:.0} where they \
                 arrive; Linux {l:.0} frames/s"
        );
        xnic_rates.push(x);
        in_place_rates.push(p);
        linux_rates.push(l);
    }
    drop(one);
    report.notes.push(format!(
        "Live frames/s: trafgen (one CPU, unpaced) sends web1's VXLAN-wrapped UDP to db1 (source ports counting up: many flows) into one fleet host's uplink, which routes each flow on the worker CPU its hash picks from an RSS engine over every CPU (`[fleet] engine`), or in a third scenario on the CPU each packet arrives on; what the host sends back (re-wrapped for db1's VTEP) is counted by XDP_DROP on the sender's end; {secs} s per scenario, {rounds} interleaved rounds, median. The Linux slow path does the same job: a VXLAN device on the fleet's address unwraps, a policy rule picks web1's route table, nftables applies db's security list, the same device wraps for db1's VTEP (its FDB entry)."
    ));
    let linux = median(linux_rates);
    let in_place = median(in_place_rates);
    report.add(
        "frames/s",
        "one host: web1 → db1 re-wrapped, many flows, 16-byte UDP payload, routed on worker CPUs (the flow hash picks one)",
        "frames/s",
        Better::Higher,
        median(xnic_rates),
        &[
            (
                "Linux: VXLAN device, ip rule + route table, nftables (same run)",
                linux,
            ),
            ("xnic routing where packets arrive (same run)", in_place),
        ],
    );
    report.add(
        "frames/s",
        "one host, the same, routed on the CPU each packet arrives on",
        "frames/s",
        Better::Higher,
        in_place,
        &[(
            "Linux: VXLAN device, ip rule + route table, nftables (same run)",
            linux,
        )],
    );

    eprintln!("live: losing one of three hosts");
    host_loss(report, args)
}

/// The flows the host-loss rows follow, from these source ports.
const FIRST_PORT: u16 = 22000;

/// The host taken away: the first of the group, where the kernel's hash-threshold
/// multipath moves most besides the lost host's own flows (losing the middle one, it moves
/// only those).
const LOST: usize = 0;

fn placement(fleet: &Fleet, flows: u16) -> anyhow::Result<BTreeMap<u16, usize>> {
    let mut out = BTreeMap::new();
    for k in 0..flows {
        let port = FIRST_PORT + k;
        if let Some((h, _)) = fleet.host_of_flow(port)? {
            out.insert(port, h);
        }
    }
    Ok(out)
}

/// The share of flows that move when host [`LOST`] of `n` goes with a modulo-N hash (flow →
/// host `h % n`, then `h % (n - 1)` over the rest), over web1's flows from the same ports.
fn modulo_moved(flows: u16, n: usize) -> f64 {
    let mut moved = 0;
    for k in 0..flows {
        let frame = crate::route::wrapped([10, 0, 2, 10], FIRST_PORT + k, 0);
        let inner = &frame[50..];
        let Ok(p) = parse_frame(&xnic_common::frame::Frame::from_slice(inner)) else {
            continue;
        };
        let h = flow_hash(&p, 0, false) as usize;
        let before = h % n;
        let survivors: Vec<usize> = (0..n).filter(|x| *x != LOST).collect();
        let after = survivors[h % survivors.len()];
        if before != after {
            moved += 1;
        }
    }
    f64::from(moved) / f64::from(flows)
}

fn host_loss(report: &mut Report, args: &[String]) -> anyhow::Result<()> {
    let flows: u16 = flag(args, "--flows", 96)?;
    let exe = live::xnic_bin()?;
    let fleet = Fleet::start(&format!("xrf{}", std::process::id()), &exe, false)?;
    let tor = fleet.lab.tor_ns();

    // Resilient: the lab's group. Under traffic: how long the lost host's flows went silent.
    let before = placement(&fleet, flows)?;
    let receiver = Receiver::start(
        Some(&fleet.lab.ns("db1")),
        format!("0.0.0.0:{PROBE_PORT}").parse()?,
    )?;
    let sender = fleet.stream_web1_to_db1(flows, u64::from(flows) * 100, 4, FIRST_PORT);
    std::thread::sleep(Duration::from_millis(1500));
    fleet.lab.set_host_link(LOST, false)?;
    let sent = sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let got = receiver.stop()?;
    let after = placement(&fleet, flows)?;
    let resilient = crate::route::moved(&before, &after) as f64 / before.len().max(1) as f64;
    let lost_share = before.values().filter(|h| **h == LOST).count() as f64 / before.len() as f64;
    let silence = got
        .per_flow
        .iter()
        .filter(|f| before.get(&f.src_port) == Some(&LOST))
        .map(|f| f.longest_silence_ms)
        .fold(0.0, f64::max);
    let lost = sent.sent.saturating_sub(got.received);

    // The kernel's plain multipath (hash-threshold), measured the same way.
    fleet.lab.restore_host(LOST)?;
    ip(&["-n", &tor, "nexthop", "add", "id", "101", "group", "1/2/3"])?;
    for dst in [
        format!("{}/32", xnic::lab::fleet::ANYCAST),
        "203.0.113.0/24".into(),
    ] {
        ip(&["-n", &tor, "route", "replace", &dst, "nhid", "101"])?;
    }
    std::thread::sleep(Duration::from_millis(200));
    let plain_before = placement(&fleet, flows)?;
    fleet.lab.set_host_link(LOST, false)?;
    std::thread::sleep(Duration::from_millis(200));
    let plain_after = placement(&fleet, flows)?;
    let plain =
        crate::route::moved(&plain_before, &plain_after) as f64 / plain_before.len().max(1) as f64;
    let modulo = modulo_moved(flows, HOSTS);
    drop(fleet);

    report.notes.push(format!(
        "Host loss: the fleet lab (three hosts, tor with a resilient nexthop group of 96 buckets, L4 hash); {flows} UDP flows web1 → db1 (one source port each), each flow's host found by probing (a few datagrams, whose host's counters move); host h1's link set down at the tor under 4 s of traffic ({} pps). \"Changed host\" counts flows whose host differs after; a third (h1's share, {:.1} % here) is the least any scheme can move. The plain multipath baseline replaces the group by the kernel's non-resilient one (hash-threshold) and probes again; modulo-N is computed over the same flows' hashes (h mod 3, then mod 2 over the survivors). The first host is the one lost: hash-threshold, which cuts the hash space in ranges, moves only the lost host's flows when it is the middle one.",
        u64::from(flows) * 100,
        lost_share * 100.0
    ));
    report.add(
        "share of flows that changed host",
        "one of three hosts lost",
        "fraction",
        Better::Lower,
        resilient,
        &[
            ("the lost host's share (the least possible)", lost_share),
            ("kernel multipath, hash-threshold (same run)", plain),
            ("modulo-N hash over the same flows", modulo),
        ],
    );
    report.add(
        "time until traffic flows again",
        "the lost host's flows, longest silence under 100 pps each",
        "ms",
        Better::Lower,
        silence,
        &[("one datagram interval", 10.0)],
    );
    report.add(
        "datagrams lost",
        "all flows, across the host's loss",
        "datagrams",
        Better::Lower,
        lost as f64,
        &[("sent", sent.sent as f64)],
    );
    Ok(())
}
