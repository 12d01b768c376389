//! `xnic monitor`: dropped frames as they happen, one line each (or JSON), from the
//! dataplane's ring buffer, like `cilium monitor --type drop`. Filters apply here; sampling and
//! the rate limit apply in the dataplane, whose counts are shown at the end.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::Instant,
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use xnic_common::{
    ctx::NextKind,
    dry_run::Stage,
    monitor::{DropEvent, EVENT_TRACE},
    verdict::{Action, Reason},
};
use xnic_proto::api::{StatusView, VmView};

use super::{
    args::MonitorArgs,
    block_on,
    frame_summary::{FrameSummary, summary},
    resolve_instance,
};
use crate::dataplane::{Monitor, MonitorSettings, PinDir, Watch};

/// One event, as `--json` prints it.
#[derive(Serialize)]
struct Shown<'a> {
    /// `CLOCK_MONOTONIC` nanoseconds, as the dataplane stamped it.
    time_ns: u64,
    /// `drop`, or `trace` for a frame of the watched flow.
    event: &'a str,
    /// A traced frame's action, the stages it passed and where it went.
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stages: Option<Vec<&'static str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    reason: &'a str,
    stage: &'a str,
    port: String,
    vm: Option<String>,
    cpu: u32,
    len: u32,
    #[serde(flatten)]
    headers: &'a FrameSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    head: Option<String>,
}

/// When a follower of the dataplane's events stops: on a signal, after `count` events, after
/// `duration` seconds, whichever comes first.
pub(super) struct Until<'a> {
    stop: &'a AtomicBool,
    count: Option<u64>,
    duration: Option<f64>,
    started: Instant,
}

impl<'a> Until<'a> {
    pub(super) fn new(stop: &'a AtomicBool, count: Option<u64>, duration: Option<f64>) -> Self {
        Until {
            stop,
            count,
            duration,
            started: Instant::now(),
        }
    }

    /// Whether to go on after `done` events.
    pub(super) fn more(&self, done: u64) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && self.count.is_none_or(|n| done < n)
            && self
                .duration
                .is_none_or(|d| self.started.elapsed().as_secs_f64() < d)
    }
}

/// Port and VM names by slot, and ports by ifindex, from the daemon.
struct Names {
    ports: HashMap<u32, String>,
    vms: HashMap<u32, String>,
    ifindexes: HashMap<u32, String>,
}

fn names(instance: &str) -> anyhow::Result<Names> {
    let c = crate::api::client::Client::new(instance);
    let status: StatusView = block_on(c.get("/v1/status"))?;
    let vms: Vec<VmView> = block_on(c.get("/v1/vms"))?;
    Ok(Names {
        ifindexes: status
            .ports
            .iter()
            .map(|p| (p.ifindex, p.name.clone()))
            .collect(),
        ports: status.ports.into_iter().map(|p| (p.slot, p.name)).collect(),
        vms: vms.into_iter().map(|v| (v.slot, v.name)).collect(),
    })
}

fn reasons(wanted: &[String]) -> anyhow::Result<Vec<Reason>> {
    wanted
        .iter()
        .map(|w| {
            Reason::ALL
                .iter()
                .copied()
                .find(|r| r.name() == w)
                .with_context(|| {
                    let known: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
                    format!("no drop reason {w:?}; known reasons: {}", known.join(", "))
                })
        })
        .collect()
}

/// `--proto`'s IP protocol number.
fn proto_number(text: &str) -> anyhow::Result<u8> {
    Ok(match text {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        n => n.parse().with_context(|| {
            format!("--proto {n:?}: give tcp, udp, icmp, icmpv6 or a protocol number")
        })?,
    })
}

pub fn run(a: &MonitorArgs) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic monitor")?;
    if a.rate == 0 {
        bail!("--rate 0 would report nothing: give a rate of at least 1 event per second");
    }
    let proto = a.proto.as_deref().map(proto_number).transpose()?;
    if a.trace && a.addr.is_none() && a.l4_port.is_none() {
        bail!(
            "--trace reports every frame of one flow: choose it with --addr, --l4-port or both (and --proto)"
        );
    }
    let wanted = reasons(&a.reason)?;
    let instance = resolve_instance(&a.instance)?;
    let names = names(&instance)?;
    if let Some(vm) = &a.vm
        && !names.vms.values().any(|n| n == vm)
    {
        bail!("no VM named {vm:?} in instance {instance:?}");
    }
    if let Some(port) = &a.port
        && !names.ports.values().any(|n| n == port)
    {
        bail!("no port named {port:?} in instance {instance:?}");
    }
    let stop = super::demo::stop_on_signals()?;
    let settings = MonitorSettings {
        sample: a.sample.max(1),
        rate: a.rate,
        burst: a.rate.div_ceil(10).max(1),
    };
    let pins = PinDir::new(&instance);
    let mut m = Monitor::open(&pins, settings).with_context(|| {
        format!("instance {instance:?} has no dataplane with a monitor ring: is its daemon running this xnic?")
    })?;
    if a.trace {
        let flow = Watch {
            addr: a.addr,
            l4_port: a.l4_port,
            proto,
        };
        m.watch(&pins, flow).with_context(|| {
            format!("instance {instance:?}'s dataplane cannot watch flows: is its daemon running this xnic?")
        })?;
    }
    if !a.json {
        let what = if a.trace {
            "drops and the watched flow's frames"
        } else {
            "drops"
        };
        eprintln!(
            "monitoring {what} of instance {instance} (1 in {}, at most {} a second per CPU; Ctrl-C stops)",
            settings.sample, settings.rate
        );
    }
    let until = Until::new(&stop, a.count, a.duration);
    let mut shown = 0u64;
    m.follow(|e| {
        if let Some(e) = e
            && let Some(line) = render(a, &names, &wanted, &e)?
        {
            println!("{line}");
            shown += 1;
        }
        Ok(until.more(shown))
    })?;
    if !a.json {
        let counts: Vec<String> = m
            .counters()?
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        eprintln!("{shown} shown; dataplane: {}", counts.join(", "));
    }
    Ok(())
}

/// The event's line, or `None` when a filter leaves it out.
fn render(
    a: &MonitorArgs,
    names: &Names,
    wanted: &[Reason],
    e: &DropEvent,
) -> anyhow::Result<Option<String>> {
    let reason = Reason::from_index(e.reason);
    if !wanted.is_empty() && !reason.is_some_and(|r| wanted.contains(&r)) {
        return Ok(None);
    }
    let traced = e.kind == EVENT_TRACE;
    let port = names
        .ports
        .get(&e.port_slot)
        .cloned()
        .unwrap_or_else(|| format!("ifindex {}", e.ifindex));
    let vm = names.vms.get(&e.vm_slot).cloned();
    if a.port.as_ref().is_some_and(|p| *p != port) || a.vm.is_some() && a.vm != vm {
        return Ok(None);
    }
    let head = &e.head[..(e.captured as usize).min(e.head.len())];
    let headers = summary(head);
    let has_addr = |ip: IpAddr| headers.src == Some(ip) || headers.dst == Some(ip);
    let has_port = |p: u16| headers.src_port == Some(p) || headers.dst_port == Some(p);
    if a.addr.is_some_and(|ip| !has_addr(ip)) || a.l4_port.is_some_and(|p| !has_port(p)) {
        return Ok(None);
    }
    if let Some(want) = a.proto.as_deref().map(proto_number).transpose()? {
        let name = match want {
            6 => "tcp".to_string(),
            17 => "udp".to_string(),
            1 => "icmp".to_string(),
            58 => "icmp6".to_string(),
            n => n.to_string(),
        };
        if headers.proto.as_deref() != Some(name.as_str()) {
            return Ok(None);
        }
    }
    let stages: Vec<&'static str> = Stage::ALL
        .iter()
        .filter(|s| e.path & (1 << **s as u32) != 0)
        .map(|s| s.name())
        .collect();
    let action = Action::name_of(e.action);
    let next = (traced && e.action != 1).then(|| next_hop(names, e));
    let (reason_name, stage) = reason.map_or(("unknown", "unknown"), |r| (r.name(), r.stage()));
    let hex = a
        .hex
        .then(|| head.iter().map(|b| format!("{b:02x}")).collect::<String>());
    if a.json {
        let shown = Shown {
            time_ns: e.ts_ns,
            event: if traced { "trace" } else { "drop" },
            action: traced.then_some(action),
            stages: traced.then(|| stages.clone()),
            next: next.clone(),
            reason: reason_name,
            stage,
            port,
            vm,
            cpu: e.cpu,
            len: e.len,
            headers: &headers,
            head: hex,
        };
        return Ok(Some(serde_json::to_string(&shown)?));
    }
    let secs = e.ts_ns as f64 / 1e9;
    let vm_text = vm.map_or(String::new(), |v| format!(" vm {v}"));
    let mut line = if traced {
        format!(
            "{secs:.6} trace {action} {reason_name} port {port}{vm_text} cpu {} len {}: {}{}: {}",
            e.cpu,
            e.len,
            stages.join(" → "),
            next.map_or(String::new(), |n| format!(" → {n}")),
            headers.text
        )
    } else {
        format!(
            "{secs:.6} drop {reason_name} ({stage}) port {port}{vm_text} cpu {} len {}: {}",
            e.cpu, e.len, headers.text
        )
    };
    if let Some(h) = hex {
        line.push_str("\n  ");
        line.push_str(&h);
    }
    Ok(Some(line))
}

/// Where a traced frame went, in words.
fn next_hop(names: &Names, e: &DropEvent) -> String {
    let port = |ifindex: u32| {
        names
            .ifindexes
            .get(&ifindex)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {ifindex}"))
    };
    let t = e.next_target;
    match e.next_kind {
        k if k == NextKind::Kernel as u32 => "the kernel".into(),
        k if k == NextKind::Port as u32 || k == NextKind::FlowOut as u32 => port(t),
        k if k == NextKind::Flood as u32 => "flood".into(),
        k if k == NextKind::Cpu as u32 => format!("CPU {t}"),
        k if k == NextKind::FlowCpu as u32 => format!("the kernel via CPU {t}"),
        k if k == NextKind::Back as u32 => "back out".into(),
        k if k == NextKind::Xsk as u32 => format!("AF_XDP queue {t}"),
        k => format!("next hop kind {k}"),
    }
}
