//! The API's views of VNIC routing: VNICs with their counters, routes with theirs, a route
//! lookup walked through the tries the programs read, events and drops, security lists.

use std::net::IpAddr;

use xnic_common::{
    verdict::Reason,
    vnic::{NO_TABLE, NextHop, VnicCounter, VnicCounters, port_block, vcn_table},
};
use xnic_proto::{
    api::{
        FleetView, RouteListView, RouteLookupView, RouteStepView, RouteView, RuleListView,
        SecurityListView, VnicListView, VnicStatsView, VnicView, WorkersView,
    },
    config::{Config, RuleAction, RuleConfig, RuleProto, VnicConfig},
};

use super::Daemon;
use crate::{
    config::vnics::{routes_of, tables_of},
    dataplane::VnicReader,
    features::vnic::{Vnic, mapped},
    model::{Refusal, names},
    policy::route::{MAX_ROUTER_HOPS, RouteKey},
    reconcile::Snapshot,
};

/// VNIC routing's reasons, in the order `xnic vnic stats` shows them.
const VNIC_REASONS: [Reason; 9] = [
    Reason::VnicForward,
    Reason::NoVnic,
    Reason::SpoofedSource,
    Reason::NoRoute,
    Reason::AclDeny,
    Reason::TtlExpired,
    Reason::Fragment,
    Reason::TooBig,
    Reason::NatExhausted,
];

fn failed(e: anyhow::Error) -> Refusal {
    Refusal::Failed(format!("{e:#}"))
}

/// A rule in one line: `allow tcp 10.0.1.0/24 ports 5432 stateful`.
pub fn rule_text(r: &RuleConfig) -> String {
    let action = match r.action {
        RuleAction::Allow => "allow",
        RuleAction::Deny => "deny",
    };
    let proto = match r.proto {
        RuleProto::Any => "any",
        RuleProto::Tcp => "tcp",
        RuleProto::Udp => "udp",
        RuleProto::Icmp => "icmp",
        RuleProto::Icmpv6 => "icmpv6",
    };
    let mut out = format!("{action} {proto} {}", r.cidr);
    if let Some(p) = &r.ports {
        out.push_str(&format!(" ports {p}"));
    }
    if r.stateful {
        out.push_str(" stateful");
    }
    out
}

fn vcn_of<'a>(c: &'a Config, n: &VnicConfig) -> &'a str {
    c.subnets
        .iter()
        .find(|s| s.name == n.subnet)
        .map_or("", |s| s.vcn.as_str())
}

/// The rules a VNIC gets per direction: its subnet's lists, then its own.
fn merged(c: &Config, n: &VnicConfig, ingress: bool) -> Vec<String> {
    let subnet = c.subnets.iter().find(|s| s.name == n.subnet);
    subnet
        .map(|s| s.security_lists.as_slice())
        .unwrap_or_default()
        .iter()
        .chain(&n.security_lists)
        .filter_map(|l| c.security_lists.iter().find(|x| &x.name == l))
        .flat_map(|l| if ingress { &l.ingress } else { &l.egress })
        .map(rule_text)
        .collect()
}

fn vnic_view(snap: &Snapshot, reader: &VnicReader, n: &VnicConfig) -> anyhow::Result<VnicView> {
    let c = &snap.config;
    let slot = snap.vnic.vnic_slot(&n.name);
    let per_cpu = match slot {
        Some(s) => reader.counters_per_cpu(s)?,
        None => Vec::new(),
    };
    let mut counters = VnicCounters::default();
    for c in &per_cpu {
        counters.merge(c);
    }
    Ok(VnicView {
        name: n.name.clone(),
        vcn: vcn_of(c, n).to_string(),
        subnet: n.subnet.clone(),
        vni: n.vni,
        mac: n.mac.to_string(),
        ips: n.ips.clone(),
        host: n.host.clone(),
        public_ip: n.public_ip.clone(),
        route_table: tables_of(c).get(&n.name).cloned().flatten(),
        slot,
        ingress: merged(c, n, true),
        egress: merged(c, n, false),
        sent: counters.sent.into(),
        received: counters.received.into(),
        dropped: counters.dropped.into(),
        cpus: per_cpu
            .iter()
            .map(|c| c.sent.packets + c.received.packets + c.dropped.packets)
            .collect(),
    })
}

fn fleet_view(c: &Config, vnic: &Vnic) -> Option<FleetView> {
    let f = c.fleet.as_ref()?;
    let me = vnic.host();
    Some(FleetView {
        host: me.map(|i| f.hosts[i].name.clone()),
        vtep: me.map(|i| f.hosts[i].vtep.clone()),
        anycast: f.anycast.clone(),
        hosts: f.hosts.iter().map(|h| h.name.clone()).collect(),
        nat_ports: me
            .and_then(|i| port_block(i as u32, f.hosts.len() as u32))
            .map(|(a, b)| format!("{a}-{b}")),
        workers: vnic.workers().and_then(|_| {
            let name = f.engine.as_ref()?;
            let engine = c.rss.as_ref()?.engines.iter().find(|e| &e.name == name)?;
            Some(WorkersView {
                engine: name.clone(),
                cpus: engine.cpus.clone(),
            })
        }),
    })
}

/// The name of a route's next hop, `kind:name`, from its entry.
fn via_of(vnic: &Vnic, kind: u8, target: u32) -> String {
    let name = |n: Option<&str>| n.unwrap_or("?").to_string();
    match NextHop::from_index(u32::from(kind)) {
        Some(NextHop::Vnic) => format!("vnic:{}", name(vnic.vnic_name(target))),
        Some(NextHop::Router) => format!("router:{}", name(vnic.table_name(target))),
        Some(NextHop::InternetGateway) => format!("igw:{}", name(vnic.gateway_name(target))),
        Some(NextHop::NatGateway) => format!("nat:{}", name(vnic.gateway_name(target))),
        Some(NextHop::ServiceGateway) => format!("sgw:{}", name(vnic.gateway_name(target))),
        Some(NextHop::DynamicRoutingGateway) => {
            format!("drg:{}", name(vnic.gateway_name(target)))
        }
        Some(NextHop::Local) => format!("local:{}", name(vnic.vcn_name(target))),
        _ => "none".to_string(),
    }
}

fn table_label(vnic: &Vnic, id: u32) -> String {
    if id >= xnic_common::vnic::VCN_TABLE_BASE {
        format!(
            "vcn:{}",
            vnic.vcn_name(id - xnic_common::vnic::VCN_TABLE_BASE)
                .unwrap_or("?")
        )
    } else {
        vnic.table_name(id).unwrap_or("?").to_string()
    }
}

impl Daemon {
    fn vnic_reader(&self) -> Result<VnicReader, Refusal> {
        VnicReader::open(&crate::dataplane::PinDir::new(&self.instance)).map_err(failed)
    }

    pub fn vnics(&self) -> Result<VnicListView, Refusal> {
        let snap = self.snapshot();
        let reader = self.vnic_reader()?;
        let vnics = snap
            .config
            .vnics
            .iter()
            .map(|n| vnic_view(&snap, &reader, n))
            .collect::<anyhow::Result<_>>()
            .map_err(failed)?;
        Ok(VnicListView {
            fleet: fleet_view(&snap.config, &snap.vnic),
            vnics,
        })
    }

    pub fn vnic(&self, name: &str) -> Result<VnicView, Refusal> {
        let snap = self.snapshot();
        let Some(n) = snap.config.vnics.iter().find(|v| v.name == name) else {
            return Err(Refusal::NotFound(format!(
                "no VNIC named {name:?}; known VNICs: {}",
                names(snap.config.vnics.iter().map(|v| v.name.as_str()))
            )));
        };
        vnic_view(&snap, &self.vnic_reader()?, n).map_err(failed)
    }

    /// Every route (of `table` when given) as configured, with the counter of its id.
    pub fn routes(&self, table: Option<&str>) -> Result<RouteListView, Refusal> {
        let snap = self.snapshot();
        let c = &snap.config;
        if let Some(t) = table
            && !c.route_tables.iter().any(|x| x.name == t)
        {
            return Err(Refusal::NotFound(format!(
                "no route table named {t:?}; known tables: {}",
                names(c.route_tables.iter().map(|t| t.name.as_str()))
            )));
        }
        let reader = self.vnic_reader()?;
        let routes = routes_of(c).map_err(|(f, m)| Refusal::Failed(format!("{f}: {m}")))?;
        let mut out = Vec::new();
        for (name, t) in routes.tables() {
            if table.is_some_and(|want| want != name) {
                continue;
            }
            let Some(tid) = snap.vnic.table_id(name) else {
                continue;
            };
            for (prefix, target) in t.routes() {
                let id = snap.vnic.route_id(&RouteKey::route(tid, prefix));
                let counter = match id {
                    Some(id) => reader.route_counter(id).map_err(failed)?,
                    None => Default::default(),
                };
                out.push(RouteView {
                    table: name.clone(),
                    dst: prefix.to_string(),
                    via: target.to_string(),
                    id,
                    packets: counter.packets,
                    bytes: counter.bytes,
                });
            }
        }
        Ok(RouteListView { routes: out })
    }

    /// What a packet from VNIC `vnic` to `addr` meets, looked up in the dataplane's tries.
    pub fn route_lookup(&self, vnic: &str, addr: &str) -> Result<RouteLookupView, Refusal> {
        let snap = self.snapshot();
        let c = &snap.config;
        let Some(n) = c.vnics.iter().find(|v| v.name == vnic) else {
            return Err(Refusal::NotFound(format!(
                "no VNIC named {vnic:?}; known VNICs: {}",
                names(c.vnics.iter().map(|v| v.name.as_str()))
            )));
        };
        let a: IpAddr = addr
            .parse()
            .map_err(|_| Refusal::Invalid(format!("{addr:?} is not an IP address")))?;
        let reader = self.vnic_reader()?;
        let ids = &snap.vnic;
        let mut view = RouteLookupView {
            vnic: vnic.to_string(),
            addr: a.to_string(),
            ..RouteLookupView::default()
        };
        let Some(vcn) = ids.vcn_id(vcn_of(c, n)) else {
            view.result = "no_vnic".into();
            return Ok(view);
        };
        let step = |view: &mut RouteLookupView, key: RouteKey| -> Result<Option<_>, Refusal> {
            let Some(e) = reader.route(&key).map_err(failed)? else {
                return Ok(None);
            };
            let (table, _) = key.prefix();
            // The route that matched: its own key, found by its id.
            let dst = ids
                .route_key(e.route)
                .map_or("?".to_string(), |k| k.prefix().1.to_string());
            view.steps.push(RouteStepView {
                table: table_label(ids, table),
                dst,
                via: via_of(ids, e.kind, e.target),
            });
            Ok(Some(e))
        };
        let local = step(&mut view, RouteKey::lookup(vcn_table(vcn), a))?;
        let mut found = local.filter(|e| e.kind == NextHop::Local as u8);
        if found.is_none() {
            view.steps.clear();
            let table = tables_of(c)
                .get(&n.name)
                .cloned()
                .flatten()
                .and_then(|t| ids.table_id(&t))
                .unwrap_or(NO_TABLE);
            let mut t = table;
            for _ in 0..=MAX_ROUTER_HOPS {
                if t == NO_TABLE {
                    break;
                }
                match step(&mut view, RouteKey::lookup(t, a))? {
                    Some(e) if e.kind == NextHop::Router as u8 => t = e.target,
                    other => {
                        found = other;
                        break;
                    }
                }
            }
        }
        let Some(e) = found else {
            view.result = "no_route".into();
            return Ok(view);
        };
        let target = if e.kind == NextHop::Local as u8 {
            match reader.owner(vcn, mapped(a)).map_err(failed)? {
                Some(slot) => Some(slot),
                None => {
                    view.result = "no_route".into();
                    return Ok(view);
                }
            }
        } else if e.kind == NextHop::Vnic as u8 {
            Some(e.target)
        } else {
            None
        };
        match target {
            Some(slot) => {
                let name = ids.vnic_name(slot).unwrap_or("?");
                view.result = format!("vnic:{name}");
                view.detail = c
                    .vnics
                    .iter()
                    .find(|v| v.name == name)
                    .map(|v| format!("VNI {} to VTEP {}", v.vni, v.host));
            }
            None => view.result = via_of(ids, e.kind, e.target),
        }
        Ok(view)
    }

    /// What the metrics show of VNIC routing, when the configuration has a fleet.
    pub fn vnic_metrics(&self) -> Option<(VnicListView, VnicStatsView)> {
        self.snapshot().config.fleet.as_ref()?;
        Some((self.vnics().ok()?, self.vnic_stats().ok()?))
    }

    pub fn vnic_stats(&self) -> Result<VnicStatsView, Refusal> {
        let reader = self.vnic_reader()?;
        let events = reader.events().map_err(failed)?;
        let stats = self.stats().map_err(failed)?;
        let mut reasons = std::collections::BTreeMap::new();
        for r in VNIC_REASONS {
            let total: u64 = stats
                .ports
                .iter()
                .filter_map(|p| p.reasons.get(r.name()))
                .map(|c| c.packets)
                .sum();
            reasons.insert(r.name().to_string(), total);
        }
        Ok(VnicStatsView {
            events: VnicCounter::ALL
                .iter()
                .map(|c| (c.name().to_string(), events[*c as usize]))
                .collect(),
            reasons,
        })
    }

    pub fn rules(&self) -> RuleListView {
        let snap = self.snapshot();
        let c = &snap.config;
        RuleListView {
            lists: c
                .security_lists
                .iter()
                .map(|l| SecurityListView {
                    name: l.name.clone(),
                    ingress: l.ingress.iter().map(rule_text).collect(),
                    egress: l.egress.iter().map(rule_text).collect(),
                    used_by: c
                        .subnets
                        .iter()
                        .filter(|s| s.security_lists.contains(&l.name))
                        .map(|s| format!("subnet:{}", s.name))
                        .chain(
                            c.vnics
                                .iter()
                                .filter(|v| v.security_lists.contains(&l.name))
                                .map(|v| format!("vnic:{}", v.name)),
                        )
                        .collect(),
                })
                .collect(),
        }
    }
}
