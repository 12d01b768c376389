//! `POST /v1/trace`: a frame through a dry-run copy of the programs against the live maps
//! (`dataplane::dry_run`), each step named with the snapshot's ports and VMs.

use xnic_common::{
    ctx::{CTX_PARSED, CTX_PORT, Call, Next, NextKind},
    dry_run::{DryRunStep, FlowOutcome, NO_DETAIL, Stage},
    maps::PortRole,
    parse::Shape,
    verdict::{Action, Reason},
};
use xnic_proto::api::{Role, TraceRequest, TraceStepView, TraceView};

use super::Daemon;
use crate::{
    dataplane::dry_run::{DryRun, DryRunOutcome},
    features::base::wanted_ports,
    model::Refusal,
    reconcile::Snapshot,
};

/// Shortest frame a trace takes: an Ethernet header.
const MIN_FRAME: usize = 14;
/// Longest: a jumbo frame (the test run puts what exceeds a page in fragments).
const MAX_FRAME: usize = 9216;

impl Daemon {
    pub async fn trace(&self, req: TraceRequest) -> Result<TraceView, Refusal> {
        let snap = self.snapshot();
        let Some(port) = wanted_ports(&snap.config)
            .into_iter()
            .find(|p| p.name == req.port)
        else {
            let names: Vec<String> = wanted_ports(&snap.config)
                .into_iter()
                .map(|p| p.name)
                .collect();
            return Err(Refusal::NotFound(format!(
                "no port named {:?}; this instance's ports: {}",
                req.port,
                names.join(", ")
            )));
        };
        let Some(link) = snap.host.get(&port.name) else {
            return Err(Refusal::Invalid(format!(
                "port {:?} has no interface yet: create it, then trace",
                port.name
            )));
        };
        let ifindex = link.ifindex;
        let frame = hex::decode(req.frame.trim()).map_err(|e| {
            Refusal::Invalid(format!(
                "the frame is not hex ({e}): give its bytes as hex digits"
            ))
        })?;
        if !(MIN_FRAME..=MAX_FRAME).contains(&frame.len()) {
            return Err(Refusal::Invalid(format!(
                "a {}-byte frame cannot be traced: frames of {MIN_FRAME} to {MAX_FRAME} bytes can",
                frame.len()
            )));
        }
        let instance = self.instance.clone();
        let role = port.role;
        let outcome = tokio::task::spawn_blocking(move || {
            DryRun::open(&instance)?.run(role, &frame, ifindex)
        })
        .await
        .map_err(|e| Refusal::Failed(format!("the trace did not finish: {e}")))?
        .map_err(|e| Refusal::Failed(format!("{e:#}")))?;
        Ok(view(&snap, &port.name, role, ifindex, &outcome))
    }
}

fn view(snap: &Snapshot, port: &str, role: PortRole, ifindex: u32, o: &DryRunOutcome) -> TraceView {
    let names = Names { snap };
    let steps: Vec<TraceStepView> = o.steps.iter().map(|s| names.step(s)).collect();
    let last = o.steps.last();
    let reason = last
        .and_then(|s| Reason::from_index(s.reason))
        .map_or("unknown", Reason::name);
    let action = Action::name_of(o.action);
    let next = match (o.action, last) {
        (a, _) if a == Action::Drop as u32 => "dropped".to_string(),
        (a, _) if a == Action::Pass as u32 => "the kernel".to_string(),
        (_, Some(s)) => names.next(&s.next, s.flags),
        (_, None) => "unknown".to_string(),
    };
    TraceView {
        port: port.to_string(),
        role: match role {
            PortRole::Uplink => Role::Uplink,
            PortRole::Vm => Role::Vm,
        },
        ifindex,
        steps,
        steps_left_out: o.left_out,
        action: action.to_string(),
        reason: reason.to_string(),
        next,
        frame_out: hex::encode(&o.frame),
        ns: o.ns,
    }
}

/// Names for the numbers a step holds.
struct Names<'a> {
    snap: &'a Snapshot,
}

impl Names<'_> {
    fn port(&self, ifindex: u32) -> String {
        self.snap
            .host
            .by_ifindex(ifindex)
            .map_or_else(|| format!("ifindex {ifindex}"), |l| l.name.clone())
    }

    fn port_of_slot(&self, slot: u32) -> String {
        self.snap
            .slots
            .ports
            .iter()
            .find(|(_, s)| **s == slot)
            .map_or_else(|| format!("port slot {slot}"), |(n, _)| n.clone())
    }

    fn vm(&self, slot: u32) -> Option<String> {
        (slot != xnic_common::maps::NO_VM).then(|| {
            self.snap
                .slots
                .vms
                .iter()
                .find(|(_, s)| **s == slot)
                .map_or_else(|| format!("VM slot {slot}"), |(n, _)| n.clone())
        })
    }

    fn next(&self, next: &Next, flags: u8) -> String {
        let t = next.target;
        match next.kind {
            k if k == NextKind::Kernel as u8 => "the kernel".into(),
            k if k == NextKind::Port as u8 => format!("out of {}", self.port(t)),
            k if k == NextKind::Flood as u8 => "every port but its own (flood)".into(),
            k if k == NextKind::Cpu as u8 => match next.fallback_port {
                0 => format!("CPU {t}, then the kernel there"),
                p => format!("CPU {t}, then out of {}", self.port(p)),
            },
            k if k == NextKind::FlowOut as u8 => format!("out of {} (fast path)", self.port(t)),
            k if k == NextKind::FlowCpu as u8 => {
                format!("the kernel, behind the flow's frames queued to CPU {t}")
            }
            k if k == NextKind::Back as u8 => {
                if flags & xnic_common::ctx::CTX_WORKER != 0 {
                    "back out of the port it came in by (a redirect)".into()
                } else {
                    "back out of the port it came in by (XDP_TX)".into()
                }
            }
            k if k == NextKind::Xsk as u8 => format!("the rings worker's AF_XDP socket, queue {t}"),
            k => format!("next hop kind {k}"),
        }
    }

    fn decision(&self, s: &DryRunStep) -> String {
        let Some(stage) = Stage::from_u8(s.stage) else {
            return format!("stage {}", s.stage);
        };
        let call_name = |c: u32| {
            Call::ALL
                .iter()
                .find(|x| **x as u32 == c)
                .map_or_else(|| format!("stage {c}"), |x| x.program().to_string())
        };
        match stage {
            Stage::Parse => {
                let shapes: Vec<&str> = Shape::ALL
                    .iter()
                    .filter(|sh| s.detail & u32::from(sh.bit()) != 0)
                    .map(|sh| sh.name())
                    .collect();
                if shapes.is_empty() {
                    "headers read".into()
                } else {
                    format!("headers read; notable: {}", shapes.join(", "))
                }
            }
            Stage::Classify => {
                let parsed = if s.flags & CTX_PARSED != 0 {
                    "parsed"
                } else {
                    "did not parse"
                };
                if s.flags & CTX_PORT == 0 {
                    format!("no port entry for this interface; headers {parsed}")
                } else {
                    let vm = self
                        .vm(s.vm_slot)
                        .map(|v| format!(", VM {v}"))
                        .unwrap_or_default();
                    let to = self
                        .vm(s.deliver_to)
                        .map(|v| format!(", for VM {v}"))
                        .unwrap_or_default();
                    format!(
                        "port {}{vm}{to}; headers {parsed}",
                        self.port_of_slot(s.detail)
                    )
                }
            }
            Stage::Rings => format!(
                "RoCEv2 for a queue pair the rings worker serves (queue {})",
                s.detail
            ),
            Stage::Worker => format!(
                "VNIC routing runs on worker CPU {} (the trace runs its stages here)",
                s.detail
            ),
            Stage::Flow => match s.detail {
                d if d == FlowOutcome::Taken as u32 => {
                    "an offloaded flow: decided and rewritten in the fast path".into()
                }
                d if d == FlowOutcome::Decap as u32 => {
                    "VXLAN: the decap stage looks for an offloaded flow inside".into()
                }
                _ => "not an offloaded flow".into(),
            },
            Stage::Route if s.detail == NO_DETAIL => "straight to delivery".into(),
            Stage::Route => format!("needs stage {}", call_name(s.detail)),
            Stage::Call => format!("tail call into {}", call_name(s.detail)),
            Stage::Team => format!("allocation and uplink: {}", self.next(&s.next, s.flags)),
            Stage::Steer => format!("RSS: {}", self.next(&s.next, s.flags)),
            Stage::Decap => "looked inside the VXLAN packet".into(),
            Stage::Vnic => format!("VNIC, rules and route: next hop slot {}", s.detail),
            Stage::VnicOut => format!("next hop's rules, NAT and wrapping (slot {})", s.detail),
            Stage::Deliver => format!("XDP action {}", Action::name_of(s.detail)),
        }
    }

    fn step(&self, s: &DryRunStep) -> TraceStepView {
        let stage = Stage::from_u8(s.stage);
        // Nothing is decided while the headers are read.
        let reason = Reason::from_index(s.reason).filter(|_| stage != Some(Stage::Parse));
        TraceStepView {
            stage: stage.map_or("unknown", Stage::name).to_string(),
            decision: self.decision(s),
            reason: reason.map_or("undecided", Reason::name).to_string(),
            action: reason.map_or("-", |r| r.action().name()).to_string(),
            vm: self.vm(s.vm_slot),
            // A dropped frame goes nowhere, whatever next hop it had before.
            next: if reason.is_some_and(|r| r.action() == Action::Drop) {
                "dropped".into()
            } else {
                self.next(&s.next, s.flags)
            },
        }
    }
}
