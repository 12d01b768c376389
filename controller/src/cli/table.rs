//! Human-readable tables for the API's views; kept apart from the commands' logic.

use std::{
    fmt::Write as _,
    time::{SystemTime, UNIX_EPOCH},
};

use comfy_table::{CellAlignment, Table, presets};

use crate::api::types::{Count, Rate, Role, StatsView, StatusView, VmView};

fn table(header: &[&str], right_aligned_from: usize) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.to_vec());
    for i in right_aligned_from..header.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// 1234 → "1.2k", 1_200_000 → "1.2M".
pub fn si(n: f64) -> String {
    let (v, unit) = if n >= 1e9 {
        (n / 1e9, "G")
    } else if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e3 {
        (n / 1e3, "k")
    } else {
        return format!("{}", n.round() as u64);
    };
    format!("{v:.1}{unit}")
}

pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{} B", n as u64)
    }
}

fn count(c: Count) -> String {
    format!("{} ({})", si(c.packets as f64), bytes(c.bytes))
}

fn rate(r: Rate) -> String {
    format!("{} pps, {}b/s", si(r.pps), si(r.bps))
}

pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Uplink => "uplink",
        Role::Vm => "vm",
    }
}

pub fn status(s: &StatusView) -> String {
    let mut out = String::new();
    let age = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(s.dataplane_created_unix);
    let _ = writeln!(
        out,
        "instance   {} (pid {}, up {}, xnic {})",
        s.instance,
        s.pid,
        duration(s.uptime_secs),
        s.version
    );
    let _ = writeln!(
        out,
        "config     {}{}",
        s.config,
        s.netns
            .as_ref()
            .map_or(String::new(), |n| format!(" (network namespace {n})"))
    );
    let _ = writeln!(
        out,
        "desired    generation {}, kept in {}",
        s.generation, s.state_file
    );
    let _ = writeln!(
        out,
        "dataplane  {} (layout v{}, created {} ago, {} by this daemon)",
        s.pin_dir,
        s.abi,
        duration(age),
        if s.adopted { "adopted" } else { "created" }
    );
    if !s.carrier_hook.is_empty() {
        let _ = writeln!(
            out,
            "failover   in the dataplane on a failed redirect to a team uplink; carrier hook {}",
            s.carrier_hook
        );
    }
    let _ = writeln!(
        out,
        "traffic    {} passed, {} dropped, {} CPUs, {} VMs",
        count(s.totals.passed),
        count(s.totals.dropped),
        s.cpus,
        s.vms
    );
    let _ = writeln!(out);
    let mut t = table(
        &[
            "PORT", "ROLE", "VM", "STATE", "LINK", "MTU", "XDP", "IFINDEX", "SLOT",
        ],
        7,
    );
    for p in &s.ports {
        let waiting = p.state == "waiting";
        let xdp = match (p.xdp_mode, p.xdp_ours) {
            (None, _) if waiting => "-".to_string(),
            (None, _) => "NOT ATTACHED".to_string(),
            (Some(m), true) => attach_mode(m).to_string(),
            (Some(_), false) => "FOREIGN PROGRAM".to_string(),
        };
        t.add_row(vec![
            p.name.clone(),
            role(p.role).to_string(),
            p.vm.clone().unwrap_or_else(|| "-".into()),
            p.state.clone(),
            match (waiting, p.up) {
                (true, _) => "-",
                (false, true) => "up",
                (false, false) => "DOWN",
            }
            .to_string(),
            if waiting {
                "-".into()
            } else {
                p.mtu.to_string()
            },
            xdp,
            if waiting {
                "-".into()
            } else {
                p.ifindex.to_string()
            },
            p.slot.to_string(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    out
}

fn attach_mode(m: xnic_proto::config::AttachMode) -> &'static str {
    match m {
        xnic_proto::config::AttachMode::Native => "native",
        xnic_proto::config::AttachMode::Generic => "generic",
    }
}

pub fn vms(vms: &[VmView]) -> String {
    let mut t = table(
        &[
            "VM",
            "PORT",
            "PORT STATE",
            "MACS",
            "IPS",
            "FROM VM",
            "TO VM",
            "DROPPED",
            "RATE FROM/TO",
        ],
        5,
    );
    for v in vms {
        t.add_row(vec![
            v.name.clone(),
            v.port.clone(),
            v.port_state.clone(),
            v.macs.join(","),
            v.ips.join(","),
            count(v.counters.from_vm),
            count(v.counters.to_vm),
            si(v.counters.dropped.packets as f64),
            format!(
                "{} / {} pps",
                si(v.rates.from_vm.pps),
                si(v.rates.to_vm.pps)
            ),
        ]);
    }
    format!("{t}\n")
}

pub fn vm(v: &VmView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "vm       {} (slot {})", v.name, v.slot);
    let _ = writeln!(out, "port     {} ({})", v.port, v.port_state);
    let _ = writeln!(out, "macs     {}", v.macs.join(", "));
    let _ = writeln!(
        out,
        "ips      {}",
        if v.ips.is_empty() {
            "-".to_string()
        } else {
            v.ips.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "from vm  {}  now {}",
        count(v.counters.from_vm),
        rate(v.rates.from_vm)
    );
    let _ = writeln!(
        out,
        "to vm    {}  now {}",
        count(v.counters.to_vm),
        rate(v.rates.to_vm)
    );
    let _ = writeln!(
        out,
        "dropped  {}  now {}",
        count(v.counters.dropped),
        rate(v.rates.dropped)
    );
    if !v.port_reasons.is_empty() {
        let _ = writeln!(out, "\nverdicts on port {}:", v.port);
        let mut t = table(&["REASON", "FRAMES", "BYTES"], 1);
        for (reason, c) in &v.port_reasons {
            t.add_row(vec![reason.clone(), c.packets.to_string(), bytes(c.bytes)]);
        }
        let _ = writeln!(out, "{t}");
    }
    if let Some(r) = &v.rss {
        let _ = writeln!(
            out,
            "rss      {}{}, {} pps",
            r.state,
            if r.pinned { " (pinned)" } else { "" },
            si(r.load_pps)
        );
    }
    if let Some(team) = &v.team {
        let _ = writeln!(out, "\nteam {} ({}):", team.team, team.policy);
        let _ = write!(out, "{}", team_vm(team));
    }
    out
}

fn mbps(m: Option<f64>) -> String {
    m.map_or("-".into(), |m| format!("{m:.1} Mbit/s"))
}

fn team_vm(t: &crate::api::types::TeamVmView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "uplink      {}{}",
        t.uplink,
        t.pinned_uplink
            .as_ref()
            .map_or(String::new(), |p| format!(" (pinned to {p})"))
    );
    let _ = writeln!(
        out,
        "broadcasts  {}",
        t.flood_uplink.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "allocation  {}{}{}  granted {}{}",
        mbps(t.allocation_mbps),
        t.burst_kib
            .map_or(String::new(), |b| format!(" (burst {b} KiB)")),
        if t.allocation_mbps.is_some() {
            format!(", {}", t.allocation_mode)
        } else {
            String::new()
        },
        mbps(t.granted_mbps),
        if t.shed {
            "  (uplink short: lower priority)"
        } else {
            ""
        }
    );
    if let Some(s) = &t.shaper {
        let _ = writeln!(
            out,
            "shaper      TCP queued at the rate: {} packets, {} bytes sent, {} dropped at a full queue, {} bytes waiting",
            s.packets, s.bytes, s.drops, s.backlog_bytes
        );
    }
    let _ = writeln!(
        out,
        "priority    {}   sent now {:.1} Mbit/s{}",
        t.priority,
        t.sent_mbps,
        if t.paused_ms > 0 {
            format!("   paused for {} ms", t.paused_ms)
        } else {
            String::new()
        }
    );
    if !t.per_uplink.is_empty() {
        let mut tab = table(&["UPLINK", "FRAMES", "BYTES"], 1);
        for (u, c) in &t.per_uplink {
            tab.add_row(vec![u.clone(), c.packets.to_string(), bytes(c.bytes)]);
        }
        let _ = writeln!(out, "{tab}");
    }
    out
}

pub fn team_status(s: &crate::api::types::TeamStatusView) -> String {
    let mut out = String::new();
    for team in &s.teams {
        let _ = writeln!(
            out,
            "team {}  policy {}  failback hold {} ms  broadcasts received on {}",
            team.name,
            team.policy,
            team.failback_hold_ms,
            team.rx_uplink.as_deref().unwrap_or("-")
        );
        let mut t = table(&["UPLINK", "STATE", "CAPACITY", "LOAD", "PPS", "VMS"], 2);
        for u in &team.uplinks {
            let state = match u.failback_in_ms {
                Some(ms) => format!("{} ({ms} ms)", u.state),
                None => u.state.clone(),
            };
            t.add_row(vec![
                u.name.clone(),
                state,
                mbps(u.capacity_mbps),
                format!("{:.1} Mbit/s", u.load_mbps),
                si(u.load_pps),
                if u.vms.is_empty() {
                    "-".into()
                } else {
                    u.vms.join(",")
                },
            ]);
        }
        let _ = writeln!(out, "{t}");
    }
    let mut t = table(
        &[
            "VM",
            "TEAM",
            "POLICY",
            "UPLINK",
            "PRIORITY",
            "ALLOCATION",
            "GRANTED",
            "SENT",
        ],
        4,
    );
    for v in &s.vms {
        t.add_row(vec![
            v.name.clone(),
            v.team.clone(),
            v.policy.clone(),
            match &v.pinned_uplink {
                Some(p) if p != &v.uplink => format!("{} (pinned {p})", v.uplink),
                _ => v.uplink.clone(),
            },
            v.priority.to_string(),
            mbps(v.allocation_mbps),
            format!(
                "{}{}",
                mbps(v.granted_mbps),
                if v.shed { " shed" } else { "" }
            ),
            format!("{:.1} Mbit/s", v.sent_mbps),
        ]);
    }
    let _ = writeln!(out, "{t}");
    if s.shaper.values().any(|n| *n > 0) {
        let _ = writeln!(
            out,
            "shaper (shaped VMs' TCP at their ports): {}",
            s.shaper
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    out
}

pub fn team_events(events: &[crate::api::types::TeamEvent], header: bool) -> String {
    if events.is_empty() {
        return if header {
            "no team events yet\n".into()
        } else {
            String::new()
        };
    }
    let mut t = table(
        &[
            "#",
            "TIME",
            "KIND",
            "TEAM",
            "UPLINK",
            "MOVED",
            "SWITCH",
            "ANNOUNCED",
        ],
        5,
    );
    for e in events {
        let moved = e
            .moves
            .iter()
            .map(|m| format!("{} {}→{}", m.vm, m.from, m.to))
            .collect::<Vec<_>>()
            .join(", ");
        t.add_row(vec![
            e.id.to_string(),
            clock(e.unix_ms),
            e.kind.clone(),
            e.team.clone(),
            e.uplink.clone().unwrap_or("-".into()),
            if moved.is_empty() { "-".into() } else { moved },
            e.switch_us.map_or("-".into(), |us| format!("{us} µs")),
            match e.announce_us {
                Some(us) => format!("{} in {us} µs", e.announced),
                None => e.announced.to_string(),
            },
        ]);
    }
    format!("{t}\n")
}

/// The event stream: one line per event.
pub fn events(events: &[xnic_proto::api::Event], header: bool) -> String {
    if events.is_empty() {
        return if header {
            "no events yet\n".into()
        } else {
            String::new()
        };
    }
    let mut out = String::new();
    if header {
        let _ = writeln!(
            out,
            "{:>6}  {:<12}  {:<7}  {:<20}  MESSAGE",
            "#", "TIME", "FEATURE", "KIND"
        );
    }
    for e in events {
        let _ = writeln!(
            out,
            "{:>6}  {:<12}  {:<7}  {:<20}  {}",
            e.id,
            clock(e.unix_ms),
            e.feature,
            e.kind,
            e.message
        );
    }
    out
}

/// Wall-clock HH:MM:SS.mmm (UTC) of a Unix time in milliseconds.
fn clock(unix_ms: u64) -> String {
    let s = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        unix_ms % 1000
    )
}

pub fn stats(s: &StatsView) -> String {
    let mut out = String::new();
    let mut t = table(
        &["PORT", "ROLE", "FRAMES", "BYTES", "RATE", "REDIRECT DROPS"],
        2,
    );
    for p in &s.ports {
        t.add_row(vec![
            p.name.clone(),
            role(p.role).to_string(),
            p.total.packets.to_string(),
            bytes(p.total.bytes),
            rate(p.rate),
            p.redirect_dropped.to_string(),
        ]);
    }
    let _ = writeln!(out, "{t}\n");

    let mut t = table(&["PORT", "VERDICT", "FRAMES", "BYTES"], 2);
    let mut any = false;
    for p in &s.ports {
        for (reason, c) in p.reasons.iter().filter(|(_, c)| c.packets > 0) {
            any = true;
            t.add_row(vec![
                p.name.clone(),
                reason.clone(),
                c.packets.to_string(),
                bytes(c.bytes),
            ]);
        }
    }
    if any {
        let _ = writeln!(out, "{t}\n");
    }

    let mut t = table(&["PORT", "SHAPE", "FRAMES", "BYTES"], 2);
    let mut any = false;
    for p in &s.ports {
        for (shape, c) in &p.shapes {
            any = true;
            t.add_row(vec![
                p.name.clone(),
                shape.clone(),
                c.packets.to_string(),
                bytes(c.bytes),
            ]);
        }
    }
    if any {
        let _ = writeln!(out, "{t}\n");
    }

    if !s.vms.is_empty() {
        let mut t = table(
            &["VM", "FROM VM", "TO VM", "DROPPED", "RATE FROM", "RATE TO"],
            1,
        );
        for v in &s.vms {
            t.add_row(vec![
                v.name.clone(),
                count(v.counters.from_vm),
                count(v.counters.to_vm),
                v.counters.dropped.packets.to_string(),
                rate(v.rates.from_vm),
                rate(v.rates.to_vm),
            ]);
        }
        let _ = writeln!(out, "{t}\n");
    }

    if s.unknown_port.packets > 0 {
        let _ = writeln!(
            out,
            "{} frames ({}) on interfaces without a port entry (stale attachments), passed\n",
            s.unknown_port.packets,
            bytes(s.unknown_port.bytes)
        );
    }
    let mut t = table(&["CPU", "FRAMES", "BYTES", "QUEUE DROPS"], 1);
    for (i, c) in s.cpus.iter().enumerate() {
        t.add_row(vec![
            i.to_string(),
            c.packets.to_string(),
            bytes(c.bytes),
            s.cpu_queue_dropped.get(i).copied().unwrap_or(0).to_string(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    if s.interval_secs > 0.0 {
        let _ = writeln!(out, "\nrates over the last {:.1} s", s.interval_secs);
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

pub fn rss_status(s: &crate::api::types::RssStatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rss        period {} ms (#{}), {} hash, {} buckets per table, no-RSS CPU {}",
        s.period_ms,
        s.period,
        match s.hash {
            xnic_proto::config::HashKind::Symmetric => "symmetric",
            xnic_proto::config::HashKind::Asymmetric => "asymmetric",
        },
        s.table_size,
        s.default_cpu
    );
    let _ = writeln!(
        out,
        "steering   {}\n",
        s.steering
            .iter()
            .map(|(k, v)| format!("{k} {}", si(*v as f64)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut t = table(
        &[
            "ENGINE",
            "KIND",
            "CPUS",
            "VMS",
            "LOAD",
            "PER CPU",
            "BUCKETS PER CPU",
        ],
        4,
    );
    for e in &s.engines {
        t.add_row(vec![
            e.name.clone(),
            e.kind.name().to_string(),
            cpu_list(&e.cpus),
            if e.vms.is_empty() {
                "-".into()
            } else {
                e.vms.join(",")
            },
            format!("{} pps", si(e.load_pps)),
            format!("{} pps", si(e.load_pps_per_cpu)),
            e.buckets_per_cpu
                .iter()
                .map(|(cpu, n)| format!("cpu{cpu}:{n}"))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    let _ = writeln!(out, "{t}\n");
    let mut t = table(
        &[
            "VM",
            "STATE",
            "PINNED",
            "PRIORITY",
            "PREFER DEDICATED",
            "LOAD",
        ],
        5,
    );
    for v in &s.vms {
        t.add_row(vec![
            v.name.clone(),
            v.state.clone(),
            if v.pinned { "yes" } else { "no" }.into(),
            v.priority.to_string(),
            if v.prefer_dedicated { "yes" } else { "no" }.into(),
            format!("{} pps", si(v.load_pps)),
        ]);
    }
    let _ = writeln!(out, "{t}\n");
    let mut t = table(&["CPU", "STEERED", "VNIC BUSY", "NIC BUSY"], 1);
    for c in &s.cpus {
        t.add_row(vec![
            c.cpu.to_string(),
            format!("{} pps", si(c.steered_pps)),
            pct(c.vnic_busy),
            pct(c.nic_busy),
        ]);
    }
    let _ = writeln!(out, "{t}");
    out
}

pub fn rss_events(events: &[crate::api::types::RssEvent], header: bool) -> String {
    if events.is_empty() {
        return if header {
            "no RSS events yet\n".into()
        } else {
            String::new()
        };
    }
    let mut t = table(
        &[
            "#", "PERIOD", "KIND", "SUBJECT", "FROM", "TO", "REASON", "FIGURES",
        ],
        8,
    );
    for e in events {
        t.add_row(vec![
            e.id.to_string(),
            e.period.to_string(),
            e.kind.clone(),
            e.subject.clone(),
            e.from.clone(),
            e.to.clone(),
            e.reason.clone(),
            e.figures
                .iter()
                .map(|(k, v)| format!("{k}={}", si(*v)))
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    format!("{t}\n")
}

pub fn rss_buckets(buckets: &[crate::api::types::RssBucketView]) -> String {
    let ncpu = buckets.first().map_or(0, |b| b.frames_per_cpu.len());
    let mut header = vec!["BUCKET".to_string(), "CPU".into(), "PPS".into()];
    header.extend((0..ncpu).map(|c| format!("FRAMES ON CPU{c}")));
    let refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = table(&refs, 1);
    for b in buckets
        .iter()
        .filter(|b| b.frames_per_cpu.iter().any(|f| *f > 0) || b.pps > 0.0)
    {
        let mut row = vec![b.bucket.to_string(), b.cpu.to_string(), si(b.pps)];
        row.extend(b.frames_per_cpu.iter().map(|f| f.to_string()));
        t.add_row(row);
    }
    format!("{t}\n")
}

fn tuple(t: &crate::api::types::TupleView) -> String {
    let host = |a: &str| {
        if a.contains(':') {
            format!("[{a}]")
        } else {
            a.to_string()
        }
    };
    format!(
        "{}:{} → {}:{}",
        host(&t.src),
        t.src_port,
        host(&t.dst),
        t.dst_port
    )
}

fn millis(ms: u64) -> String {
    if ms >= 60_000 {
        format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// `xnic flows`: one line a flow, conntrack's two tuples one above the other.
pub fn flows(flows: &[crate::api::types::FlowView]) -> String {
    if flows.is_empty() {
        return "no offloaded flows\n".into();
    }
    let mut t = table(
        &[
            "SLOT",
            "ID",
            "PROTO",
            "VM",
            "TUPLES (orig / reply)",
            "STATE",
            "WHY",
            "PKTS →/←",
            "BYTES →/←",
            "AGE",
            "IDLE",
        ],
        7,
    );
    for f in flows {
        let state = match &f.leave {
            Some(why) => format!("leaving ({why})"),
            None => f.state.clone(),
        };
        let [o, r] = &f.directions;
        let actions: Vec<String> = o.actions.iter().chain(&r.actions).cloned().collect();
        let tuples = format!(
            "{}\n{}{}",
            tuple(&f.original),
            tuple(&f.reply),
            if actions.is_empty() {
                String::new()
            } else {
                format!("\n({})", actions.join(", "))
            }
        );
        t.add_row(vec![
            f.slot.to_string(),
            f.id.map_or("-".into(), |i| i.to_string()),
            f.proto.clone(),
            f.vm.clone().unwrap_or_else(|| "-".into()),
            tuples,
            state,
            f.why.clone(),
            format!("{}/{}", si(o.packets as f64), si(r.packets as f64)),
            format!("{}/{}", bytes(o.bytes), bytes(r.bytes)),
            millis(f.age_ms),
            millis(f.idle_ms),
        ]);
    }
    format!("{t}\n")
}

/// `xnic flows stats`.
pub fn flow_stats(s: &crate::api::types::FlowStatsView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "offload {}  table {}/{} flows ({} kernel memory)  promoting {}  conntrack entries {}",
        if s.enabled { "on" } else { "off" },
        s.in_use,
        s.capacity,
        bytes(s.table_bytes),
        s.pending,
        s.tracked
    );
    let _ = writeln!(
        out,
        "promoted {}  handed back {}  refused (table full) {}  promotion timeouts {}  unfit {}  \
         conntrack failures {}  adopted {}",
        s.promoted,
        s.handed_back,
        s.refused_full,
        s.promote_timeouts,
        s.unfit,
        s.conntrack_failed,
        s.adopted
    );
    let mut t = table(&["DEMOTED BY", "FLOWS"], 1);
    for (why, n) in s.demoted.iter().filter(|(_, n)| **n > 0) {
        t.add_row(vec![why.clone(), n.to_string()]);
    }
    let _ = writeln!(out, "\n{t}");
    let mut t = table(&["FAST PATH", "PACKETS"], 1);
    for (what, n) in s.fast_path.iter().filter(|(_, n)| **n > 0) {
        t.add_row(vec![what.clone(), n.to_string()]);
    }
    let _ = writeln!(out, "\n{t}");
    out
}

/// CPUs as `0,1,5`.
fn cpu_list(cpus: &[u32]) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn vnics(v: &crate::api::types::VnicListView) -> String {
    let mut out = String::new();
    match &v.fleet {
        Some(f) => {
            let _ = writeln!(
                out,
                "fleet: {} hosts ({}), anycast VTEP {}; this host: {}",
                f.hosts.len(),
                f.hosts.join(", "),
                f.anycast,
                match (&f.host, &f.vtep) {
                    (Some(h), Some(vtep)) => format!(
                        "{h} (VTEP {vtep}, NAT ports {})",
                        f.nat_ports.as_deref().unwrap_or("-")
                    ),
                    _ => "none of them (VNIC routing off here)".to_string(),
                }
            );
            let _ = match &f.workers {
                Some(w) => writeln!(
                    out,
                    "routed on worker CPUs {} (RSS engine {}), each flow's hash picking one",
                    cpu_list(&w.cpus),
                    w.engine
                ),
                None => writeln!(out, "routed on the CPU each packet arrives on"),
            };
        }
        None => out.push_str("no [fleet] configured: VNIC routing is off\n"),
    }
    let mut t = table(
        &[
            "VNIC", "VCN", "SUBNET", "VNI", "MAC", "IPS", "HOST", "PUBLIC", "TABLE", "SENT",
            "RECEIVED", "DROPPED",
        ],
        9,
    );
    for n in &v.vnics {
        t.add_row(vec![
            n.name.clone(),
            n.vcn.clone(),
            n.subnet.clone(),
            n.vni.to_string(),
            n.mac.clone(),
            n.ips.join(","),
            n.host.clone(),
            n.public_ip.clone().unwrap_or_else(|| "-".into()),
            n.route_table.clone().unwrap_or_else(|| "-".into()),
            count(n.sent),
            count(n.received),
            count(n.dropped),
        ]);
    }
    let _ = writeln!(out, "{t}");
    out
}

pub fn vnic(n: &crate::api::types::VnicView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "VNIC {} (slot {})",
        n.name,
        n.slot.map_or("-".into(), |s| s.to_string())
    );
    let _ = writeln!(
        out,
        "  VCN {}, subnet {}, VNI {}, MAC {}",
        n.vcn, n.subnet, n.vni, n.mac
    );
    let _ = writeln!(
        out,
        "  addresses {}; public {}",
        n.ips.join(", "),
        n.public_ip.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        out,
        "  instance's host VTEP {}; route table {}",
        n.host,
        n.route_table.as_deref().unwrap_or("none (its VCN only)")
    );
    let _ = writeln!(
        out,
        "  sent {}, received {}, dropped {}",
        count(n.sent),
        count(n.received),
        count(n.dropped)
    );
    let busy: Vec<String> = n
        .cpus
        .iter()
        .enumerate()
        .filter(|(_, p)| **p > 0)
        .map(|(cpu, p)| format!("cpu{cpu} {p}"))
        .collect();
    if !busy.is_empty() {
        let _ = writeln!(out, "  packets routed per CPU: {}", busy.join(", "));
    }
    for (dir, rules) in [("ingress", &n.ingress), ("egress", &n.egress)] {
        let _ = writeln!(
            out,
            "  {dir} rules (first match decides; none matching: dropped):"
        );
        if rules.is_empty() {
            let _ = writeln!(out, "    none: everything {dir} is dropped");
        }
        for (i, r) in rules.iter().enumerate() {
            let _ = writeln!(out, "    {i:>2}  {r}");
        }
    }
    out
}

pub fn vnic_stats(s: &crate::api::types::VnicStatsView) -> String {
    let mut out = String::new();
    let mut t = table(&["REASON", "PACKETS"], 1);
    for (r, n) in &s.reasons {
        t.add_row(vec![r.clone(), n.to_string()]);
    }
    let _ = writeln!(out, "{t}\n");
    let mut t = table(&["EVENT", "COUNT"], 1);
    for (e, n) in s.events.iter().filter(|(_, n)| **n > 0) {
        t.add_row(vec![e.clone(), n.to_string()]);
    }
    let _ = writeln!(out, "{t}");
    out
}

pub fn routes(v: &crate::api::types::RouteListView) -> String {
    let mut t = table(
        &["TABLE", "DESTINATION", "VIA", "ID", "PACKETS", "BYTES"],
        3,
    );
    for r in &v.routes {
        t.add_row(vec![
            r.table.clone(),
            r.dst.clone(),
            r.via.clone(),
            r.id.map_or("-".into(), |i| i.to_string()),
            si(r.packets as f64),
            bytes(r.bytes),
        ]);
    }
    format!("{t}\n")
}

pub fn route_lookup(v: &crate::api::types::RouteLookupView) -> String {
    let mut out = format!("{} → {}\n", v.vnic, v.addr);
    for s in &v.steps {
        let _ = writeln!(out, "  table {}: {} via {}", s.table, s.dst, s.via);
    }
    let _ = writeln!(
        out,
        "  result: {}{}",
        v.result,
        v.detail
            .as_deref()
            .map_or(String::new(), |d| format!(" ({d})"))
    );
    out
}

pub fn rules(v: &crate::api::types::RuleListView) -> String {
    let mut out = String::new();
    for l in &v.lists {
        let used = if l.used_by.is_empty() {
            "unused".to_string()
        } else {
            format!("used by {}", l.used_by.join(", "))
        };
        let _ = writeln!(out, "{} ({used})", l.name);
        for (dir, rules) in [("ingress", &l.ingress), ("egress", &l.egress)] {
            for (i, r) in rules.iter().enumerate() {
                let _ = writeln!(out, "  {dir:<7} {i:>2}  {r}");
            }
        }
    }
    out
}

pub fn rings_regions(regions: &[xnic_rings::control::RegionInfo]) -> String {
    let mut t = table(&["ID", "NAME", "BYTES", "KEY"], 2);
    for r in regions {
        t.add_row(vec![
            r.id.to_string(),
            r.name.clone(),
            r.len.to_string(),
            format!("{:#010x}", r.rkey),
        ]);
    }
    format!("{t}\n")
}

pub fn rings_status(s: &xnic_rings::control::WorkerStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "rings worker on {} queue {} ({}): {} packets received, {} sent, {} sent again, {} timeouts",
        s.interface, s.queue, s.address, s.received, s.sent, s.retransmitted, s.timeouts
    );
    let mut t = table(
        &[
            "QP",
            "PEER",
            "PEER QP",
            "MTU",
            "IN FLIGHT",
            "SENT",
            "SENT AGAIN",
            "TIMEOUTS",
        ],
        2,
    );
    for q in &s.queue_pairs {
        t.add_row(vec![
            q.qp.to_string(),
            q.peer.clone(),
            q.peer_qp.to_string(),
            q.mtu.to_string(),
            q.in_flight.to_string(),
            q.sent.to_string(),
            q.retransmitted.to_string(),
            q.timeouts.to_string(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    out.push_str(&rings_regions(&s.regions));
    for (what, counts) in [("completed", &s.completed), ("dropped", &s.dropped)] {
        if !counts.is_empty() {
            let list: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "{what}: {}", list.join(", "));
        }
    }
    out
}

/// `xnic trace`: the frame, each stage with what the frame's context said after it, the verdict.
pub fn trace(v: &crate::api::types::TraceView, frame: &[u8]) -> String {
    use super::frame_summary;
    let mut out = String::new();
    let role = match v.role {
        Role::Uplink => "uplink",
        Role::Vm => "VM port",
    };
    let _ = writeln!(
        out,
        "{}-byte frame in on {} ({role}, ifindex {})",
        frame.len(),
        v.port,
        v.ifindex
    );
    let _ = writeln!(out, "  {}", frame_summary::summary(frame).text);
    let mut t = table(&["#", "STAGE", "DECISION", "REASON", "VM", "NEXT"], 6);
    for (i, s) in v.steps.iter().enumerate() {
        t.add_row([
            (i + 1).to_string(),
            s.stage.clone(),
            s.decision.clone(),
            format!("{} ({})", s.reason, s.action),
            s.vm.clone().unwrap_or_else(|| "-".into()),
            s.next.clone(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    if v.steps_left_out > 0 {
        let _ = writeln!(out, "({} more steps not recorded)", v.steps_left_out);
    }
    let _ = writeln!(out, "verdict: {} ({}): {}", v.action, v.reason, v.next);
    if hex::encode(frame) != v.frame_out && v.action != "drop" {
        let out_frame = hex::decode(&v.frame_out).unwrap_or_default();
        let _ = writeln!(
            out,
            "leaves as: {}",
            frame_summary::summary(&out_frame).text
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1234.0), "1.2k");
        assert_eq!(si(2_500_000.0), "2.5M");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3661), "1h1m");
    }
}
