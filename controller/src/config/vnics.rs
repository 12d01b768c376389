//! VNIC routing's part of the configuration (`[[vcn]]`, `[[subnet]]`, `[[vnic]]`,
//! `[[route_table]]`, `[[gateway]]`): the checks that make it usable, and the route tables it
//! describes. Errors are (dotted field path, message), as the rest of validation's.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use xnic_common::{
    limits::MAX_NAME_LEN,
    vnic::{
        MAX_FLEET_HOSTS, MAX_GATEWAYS, MAX_NAT_IPS, MAX_ROUTE_TABLES, MAX_ROUTES, MAX_VCNS,
        MAX_VNIC_ADDRS, MAX_VNICS,
    },
};

use super::{Config, GatewayKind, RuleAction, RuleConfig, RuleProto, validate::check_name};
use crate::policy::{
    acl::{self, Action, MAX_RULES, Rule},
    route::{Prefix, RouteError, Routes, Target},
    vnic::{Vnic, VnicModel},
};

/// The largest VNI VXLAN carries (24 bits); 0 is not a network.
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The smallest underlay MTU that carries an IPv6 minimum (1280) inside VXLAN's 50 bytes.
pub const MIN_UNDERLAY_MTU: u16 = 1280 + 50;

type Refusal = (String, String);

fn prefix(field: &str, text: &str) -> Result<Prefix, Refusal> {
    text.parse()
        .map_err(|e: RouteError| (field.to_string(), e.to_string()))
}

fn address(field: &str, text: &str) -> Result<IpAddr, Refusal> {
    text.parse()
        .map_err(|_| (field.to_string(), format!("{text:?} is not an IP address")))
}

/// Names unique within one kind of section.
fn unique<'a>(
    section: &str,
    names: impl Iterator<Item = &'a String>,
) -> Result<HashMap<&'a str, usize>, Refusal> {
    let mut seen = HashMap::new();
    for (i, n) in names.enumerate() {
        let field = format!("{section}[{i}].name");
        check_name(&field, n, MAX_NAME_LEN)?;
        if seen.insert(n.as_str(), i).is_some() {
            return Err((field, format!("{section} {n:?} is configured twice")));
        }
    }
    Ok(seen)
}

/// Checks the VNIC routing sections as a whole.
pub fn validate(c: &Config) -> Result<(), Refusal> {
    if let Some(f) = &c.fleet {
        if f.hosts.is_empty() {
            return Err((
                "fleet.hosts".into(),
                "a fleet needs its hosts: list every host that forwards, in the same order on each"
                    .into(),
            ));
        }
        unique("fleet.hosts", f.hosts.iter().map(|h| &h.name))?;
        if f.hosts.len() > MAX_FLEET_HOSTS as usize {
            return Err((
                "fleet.hosts".into(),
                format!(
                    "{} hosts; a fleet has at most {MAX_FLEET_HOSTS} (what one ECMP group takes)",
                    f.hosts.len()
                ),
            ));
        }
        let mut vteps = HashSet::new();
        for (i, h) in f.hosts.iter().enumerate() {
            let field = format!("fleet.hosts[{i}].vtep");
            let a = address(&field, &h.vtep)?;
            if !a.is_ipv4() {
                return Err((field, format!("{a}: VTEPs are IPv4 (VXLAN over IPv4)")));
            }
            if !vteps.insert(a) {
                return Err((field, format!("{a} is another host's VTEP")));
            }
        }
        let anycast = address("fleet.anycast", &f.anycast)?;
        if !anycast.is_ipv4() || vteps.contains(&anycast) {
            return Err((
                "fleet.anycast".into(),
                format!("{anycast} must be an IPv4 address of its own, no host's VTEP"),
            ));
        }
        if f.router_mac.is_group() || f.router_mac.is_zero() {
            return Err((
                "fleet.router_mac".into(),
                format!("{} is not a unicast MAC address", f.router_mac),
            ));
        }
        if !(1..=MAX_VNI).contains(&f.handoff_vni) {
            return Err((
                "fleet.handoff_vni".into(),
                format!(
                    "{} is not a VXLAN network: use 1 to {MAX_VNI}",
                    f.handoff_vni
                ),
            ));
        }
        if let Some(engine) = &f.engine {
            let engines = c.rss.as_ref().map(|r| r.engines.as_slice()).unwrap_or(&[]);
            if !engines.iter().any(|e| &e.name == engine) {
                return Err((
                    "fleet.engine".into(),
                    format!(
                        "{engine:?} is no RSS engine: name one of [[rss.engine]] (its CPUs \
                         route the fleet's packets), or leave the field out"
                    ),
                ));
            }
        }
        if f.mtu < MIN_UNDERLAY_MTU {
            return Err((
                "fleet.mtu".into(),
                format!(
                    "{} leaves no room inside VXLAN: at least {MIN_UNDERLAY_MTU}",
                    f.mtu
                ),
            ));
        }
    }
    let vcns = unique("vcn", c.vcns.iter().map(|v| &v.name))?;
    let subnets = unique("subnet", c.subnets.iter().map(|s| &s.name))?;
    let vnics = unique("vnic", c.vnics.iter().map(|v| &v.name))?;
    let tables = unique("route_table", c.route_tables.iter().map(|t| &t.name))?;
    let gateways = unique("gateway", c.gateways.iter().map(|g| &g.name))?;

    let mut vcn_prefixes: Vec<Vec<Prefix>> = Vec::new();
    for (i, v) in c.vcns.iter().enumerate() {
        if v.cidrs.is_empty() {
            return Err((
                format!("vcn[{i}].cidrs"),
                format!("VCN {:?} has no address space: give it a prefix", v.name),
            ));
        }
        let mut mine: Vec<Prefix> = Vec::new();
        for (j, text) in v.cidrs.iter().enumerate() {
            let field = format!("vcn[{i}].cidrs[{j}]");
            let p = prefix(&field, text)?;
            if let Some(q) = mine.iter().find(|q| q.overlaps(&p)) {
                return Err((field, format!("{p} overlaps {q} of the same VCN")));
            }
            mine.push(p);
        }
        vcn_prefixes.push(mine);
    }

    let table_ref = |field: String, name: &Option<String>| -> Result<(), Refusal> {
        match name {
            Some(t) if !tables.contains_key(t.as_str()) => {
                Err((field, format!("no [[route_table]] named {t:?}")))
            }
            _ => Ok(()),
        }
    };

    let mut subnet_prefixes: Vec<Prefix> = Vec::new();
    for (i, s) in c.subnets.iter().enumerate() {
        let Some(&v) = vcns.get(s.vcn.as_str()) else {
            return Err((
                format!("subnet[{i}].vcn"),
                format!("no [[vcn]] named {:?}", s.vcn),
            ));
        };
        let field = format!("subnet[{i}].cidr");
        let p = prefix(&field, &s.cidr)?;
        if !vcn_prefixes[v]
            .iter()
            .any(|q| q.len() <= p.len() && q.contains(p.addr()))
        {
            return Err((
                field,
                format!("{p} is outside VCN {:?}'s address space", s.vcn),
            ));
        }
        for (k, other) in c.subnets[..i].iter().enumerate() {
            if other.vcn == s.vcn && subnet_prefixes[k].overlaps(&p) {
                return Err((
                    field,
                    format!(
                        "{p} overlaps subnet {:?} ({}) of the same VCN",
                        other.name, subnet_prefixes[k]
                    ),
                ));
            }
        }
        subnet_prefixes.push(p);
        table_ref(format!("subnet[{i}].route_table"), &s.route_table)?;
    }

    // A VNIC's addresses are unique in its VCN; its MAC in its VNI.
    let mut addresses: HashMap<(&str, IpAddr), &str> = HashMap::new();
    let mut macs: HashSet<(u32, [u8; 6])> = HashSet::new();
    for (i, n) in c.vnics.iter().enumerate() {
        let Some(&s) = subnets.get(n.subnet.as_str()) else {
            return Err((
                format!("vnic[{i}].subnet"),
                format!("no [[subnet]] named {:?}", n.subnet),
            ));
        };
        if !(1..=MAX_VNI).contains(&n.vni) {
            return Err((
                format!("vnic[{i}].vni"),
                format!("{} is not a VXLAN network: use 1 to {MAX_VNI}", n.vni),
            ));
        }
        if n.mac.is_group() || n.mac.is_zero() {
            return Err((
                format!("vnic[{i}].mac"),
                format!("{} is not a unicast MAC address", n.mac),
            ));
        }
        if !macs.insert((n.vni, n.mac.0)) {
            return Err((
                format!("vnic[{i}].mac"),
                format!("{} is another VNIC's in VNI {}", n.mac, n.vni),
            ));
        }
        if n.ips.is_empty() {
            return Err((
                format!("vnic[{i}].ips"),
                format!("VNIC {:?} has no virtual IP", n.name),
            ));
        }
        let vcn = c.subnets[s].vcn.as_str();
        for (j, text) in n.ips.iter().enumerate() {
            let field = format!("vnic[{i}].ips[{j}]");
            let a = address(&field, text)?;
            if !subnet_prefixes[s].contains(a) {
                return Err((
                    field,
                    format!(
                        "{a} is outside subnet {:?} ({})",
                        n.subnet, subnet_prefixes[s]
                    ),
                ));
            }
            if let Some(other) = addresses.insert((vcn, a), n.name.as_str()) {
                return Err((
                    field,
                    format!("{a} is VNIC {other:?}'s already (in VCN {vcn:?})"),
                ));
            }
        }
        address(&format!("vnic[{i}].host"), &n.host)?;
        if let Some(p) = &n.public_ip {
            address(&format!("vnic[{i}].public_ip"), p)?;
        }
        table_ref(format!("vnic[{i}].route_table"), &n.route_table)?;
    }

    for (i, g) in c.gateways.iter().enumerate() {
        let field = |f: &str| format!("gateway[{i}].{f}");
        for (j, a) in g.public_ips.iter().enumerate() {
            address(&field(&format!("public_ips[{j}]")), a)?;
        }
        for (j, p) in g.cidrs.iter().enumerate() {
            prefix(&field(&format!("cidrs[{j}]")), p)?;
        }
        if let Some(r) = &g.remote {
            address(&field("remote"), r)?;
        }
        let need = |what: &str, missing: bool| -> Result<(), Refusal> {
            if missing {
                Err((field(what), format!("a {:?} gateway needs {what}", g.kind)))
            } else {
                Ok(())
            }
        };
        match g.kind {
            GatewayKind::Internet => {}
            GatewayKind::Nat => need("public_ips", g.public_ips.is_empty())?,
            GatewayKind::Service | GatewayKind::Drg => {
                need("cidrs", g.cidrs.is_empty())?;
                need("remote", g.remote.is_none())?;
                need("vni", g.vni.is_none())?;
                need("mac", g.mac.is_none())?;
                need("vcn", g.vcn.is_none())?;
                if let Some(v) = &g.vcn
                    && !vcns.contains_key(v.as_str())
                {
                    return Err((field("vcn"), format!("no [[vcn]] named {v:?}")));
                }
                if let Some(m) = g.mac
                    && (m.is_group() || m.is_zero())
                {
                    return Err((field("mac"), format!("{m} is not a unicast MAC address")));
                }
                if let Some(v) = g.vni
                    && !(1..=MAX_VNI).contains(&v)
                {
                    return Err((
                        field("vni"),
                        format!("{v} is not a VXLAN network: use 1 to {MAX_VNI}"),
                    ));
                }
            }
        }
    }

    limits(c)?;
    wire_addresses(c)?;

    let lists = unique("security_list", c.security_lists.iter().map(|l| &l.name))?;
    let mut rules_in: Vec<[usize; 2]> = Vec::new();
    for (i, l) in c.security_lists.iter().enumerate() {
        for (dir, rules) in [("ingress", &l.ingress), ("egress", &l.egress)] {
            for (j, r) in rules.iter().enumerate() {
                rule_of(&format!("security_list[{i}].{dir}[{j}]"), r)?;
            }
        }
        rules_in.push([l.ingress.len(), l.egress.len()]);
    }
    let list_refs = |field: &str, names: &[String]| -> Result<[usize; 2], Refusal> {
        let mut total = [0, 0];
        for (j, n) in names.iter().enumerate() {
            let Some(&i) = lists.get(n.as_str()) else {
                return Err((
                    format!("{field}[{j}]"),
                    format!("no [[security_list]] named {n:?}"),
                ));
            };
            total[0] += rules_in[i][0];
            total[1] += rules_in[i][1];
        }
        Ok(total)
    };
    let mut subnet_rules = Vec::new();
    for (i, s) in c.subnets.iter().enumerate() {
        subnet_rules.push(list_refs(
            &format!("subnet[{i}].security_lists"),
            &s.security_lists,
        )?);
    }
    for (i, n) in c.vnics.iter().enumerate() {
        let field = format!("vnic[{i}].security_lists");
        let own = list_refs(&field, &n.security_lists)?;
        let from_subnet = subnets
            .get(n.subnet.as_str())
            .map_or([0, 0], |&s| subnet_rules[s]);
        for (d, dir) in ["ingress", "egress"].iter().enumerate() {
            let total = own[d] + from_subnet[d];
            if total > MAX_RULES {
                return Err((
                    field,
                    format!(
                        "VNIC {:?} gets {total} {dir} rules from its subnet's lists and its own; at most {MAX_RULES} (merge rules into wider prefixes or port ranges)",
                        n.name
                    ),
                ));
            }
        }
    }

    let routes = routes_of(c)?;
    let exists = |t: &Target| match t {
        Target::Vnic(n) => vnics.contains_key(n.as_str()),
        Target::Router(n) => tables.contains_key(n.as_str()),
        Target::InternetGateway(n) => gateway_is(c, &gateways, n, GatewayKind::Internet),
        Target::NatGateway(n) => gateway_is(c, &gateways, n, GatewayKind::Nat),
        Target::ServiceGateway(n) => gateway_is(c, &gateways, n, GatewayKind::Service),
        Target::DynamicRoutingGateway(n) => gateway_is(c, &gateways, n, GatewayKind::Drg),
    };
    if let Some(e) = routes.check(exists).into_iter().next() {
        let table = match &e {
            RouteError::UnknownTarget { table, .. } => Some(table.clone()),
            RouteError::Loop(t) | RouteError::TooDeep(t) => t.first().cloned(),
            _ => None,
        };
        let field = match table.and_then(|t| tables.get(t.as_str()).copied()) {
            Some(i) => format!("route_table[{i}].routes"),
            None => "route_table".to_string(),
        };
        return Err((field, e.to_string()));
    }
    Ok(())
}

/// Counts the dataplane's maps have room for.
fn limits(c: &Config) -> Result<(), Refusal> {
    let over = |what: &str, n: usize, max: u32| -> Result<(), Refusal> {
        if n > max as usize {
            Err((
                what.to_string(),
                format!("{n} of them; the dataplane holds at most {max}"),
            ))
        } else {
            Ok(())
        }
    };
    over("vnic", c.vnics.len(), MAX_VNICS)?;
    over("vcn", c.vcns.len(), MAX_VCNS)?;
    over("gateway", c.gateways.len(), MAX_GATEWAYS)?;
    over("route_table", c.route_tables.len(), MAX_ROUTE_TABLES)?;
    over(
        "vnic.ips",
        c.vnics.iter().map(|v| v.ips.len()).sum(),
        MAX_VNIC_ADDRS,
    )?;
    over(
        "route_table.routes",
        c.route_tables.iter().map(|t| t.routes.len()).sum::<usize>()
            + c.vcns.iter().map(|v| v.cidrs.len()).sum::<usize>(),
        MAX_ROUTES,
    )
}

/// What the outer headers and the public side carry: IPv4 VTEPs, IPv4 public addresses
/// each of one VNIC or gateway, VNIs of one kind each.
fn wire_addresses(c: &Config) -> Result<(), Refusal> {
    let v4 = |field: String, text: &str| -> Result<IpAddr, Refusal> {
        let a = address(&field, text)?;
        if a.is_ipv4() {
            Ok(a)
        } else {
            Err((field, format!("{a}: the fleet's wire addresses are IPv4")))
        }
    };
    let mut public: HashMap<IpAddr, String> = HashMap::new();
    let mut claim = |field: String, a: IpAddr, owner: String| -> Result<(), Refusal> {
        match public.insert(a, owner.clone()) {
            Some(other) => Err((field, format!("{a} is {other}'s public address already"))),
            None => Ok(()),
        }
    };
    let handoff = c.fleet.as_ref().map(|f| f.handoff_vni);
    for (i, n) in c.vnics.iter().enumerate() {
        v4(format!("vnic[{i}].host"), &n.host)?;
        if Some(n.vni) == handoff {
            return Err((
                format!("vnic[{i}].vni"),
                format!("{} is the fleet's hand-off VNI (fleet.handoff_vni)", n.vni),
            ));
        }
        if let Some(p) = &n.public_ip {
            let field = format!("vnic[{i}].public_ip");
            let a = v4(field.clone(), p)?;
            if !n
                .ips
                .iter()
                .any(|ip| ip.parse::<IpAddr>().is_ok_and(|a| a.is_ipv4()))
            {
                return Err((
                    field,
                    format!("VNIC {:?} has no IPv4 address to map {a} to", n.name),
                ));
            }
            claim(field, a, format!("VNIC {:?}", n.name))?;
        }
    }
    let vnic_vnis: HashSet<u32> = c.vnics.iter().map(|n| n.vni).collect();
    let mut gateway_vnis: HashMap<u32, &str> = HashMap::new();
    for (i, g) in c.gateways.iter().enumerate() {
        if g.public_ips.len() > MAX_NAT_IPS {
            return Err((
                format!("gateway[{i}].public_ips"),
                format!(
                    "{} addresses; a NAT gateway shares out at most {MAX_NAT_IPS}",
                    g.public_ips.len()
                ),
            ));
        }
        for (j, p) in g.public_ips.iter().enumerate() {
            let field = format!("gateway[{i}].public_ips[{j}]");
            let a = v4(field.clone(), p)?;
            claim(field, a, format!("gateway {:?}", g.name))?;
        }
        if let Some(r) = &g.remote {
            v4(format!("gateway[{i}].remote"), r)?;
        }
        if let Some(v) = g.vni {
            let field = format!("gateway[{i}].vni");
            if vnic_vnis.contains(&v) || Some(v) == handoff {
                return Err((
                    field,
                    format!(
                        "VNI {v} is a VNIC's or the hand-off VNI: a gateway's network needs one of its own"
                    ),
                ));
            }
            if let Some(other) = gateway_vnis.insert(v, &g.name) {
                return Err((field, format!("VNI {v} is gateway {other:?}'s already")));
            }
        }
    }
    Ok(())
}

/// A rule as the policy takes it.
pub fn rule_of(field: &str, r: &RuleConfig) -> Result<Rule, Refusal> {
    let proto = match r.proto {
        RuleProto::Any => None,
        RuleProto::Tcp => Some(acl::TCP),
        RuleProto::Udp => Some(acl::UDP),
        RuleProto::Icmp => Some(acl::ICMP),
        RuleProto::Icmpv6 => Some(acl::ICMPV6),
    };
    let ports = match &r.ports {
        None => None,
        Some(_) if !matches!(r.proto, RuleProto::Tcp | RuleProto::Udp) => {
            return Err((
                format!("{field}.ports"),
                "ports need proto = \"tcp\" or \"udp\"".into(),
            ));
        }
        Some(text) => Some(acl::parse_ports(text).map_err(|e| (format!("{field}.ports"), e))?),
    };
    Ok(Rule {
        action: match r.action {
            RuleAction::Allow => Action::Allow,
            RuleAction::Deny => Action::Deny,
        },
        proto,
        peer: prefix(&format!("{field}.cidr"), &r.cidr)?,
        ports,
        stateful: r.stateful,
    })
}

fn gateway_is(c: &Config, gateways: &HashMap<&str, usize>, name: &str, kind: GatewayKind) -> bool {
    gateways
        .get(name)
        .is_some_and(|&i| c.gateways[i].kind == kind)
}

/// The route tables the configuration describes (each route's prefix and next hop parsed;
/// a prefix routed twice in one table refused).
pub fn routes_of(c: &Config) -> Result<Routes, Refusal> {
    let mut routes = Routes::default();
    for (i, t) in c.route_tables.iter().enumerate() {
        let table = routes.table_mut(&t.name);
        for (j, r) in t.routes.iter().enumerate() {
            let field = format!("route_table[{i}].routes[{j}]");
            let dst = prefix(&format!("{field}.dst"), &r.dst)?;
            let via: Target = r
                .via
                .parse()
                .map_err(|e: RouteError| (format!("{field}.via"), e.to_string()))?;
            table
                .insert(&t.name, dst, via)
                .map_err(|e| (format!("{field}.dst"), e.to_string()))?;
        }
    }
    Ok(routes)
}

/// The route table each VNIC uses: its own, else its subnet's (`None`: neither has one, so
/// only its subnet's own addresses are reachable).
pub fn tables_of(c: &Config) -> BTreeMap<String, Option<String>> {
    c.vnics
        .iter()
        .map(|n| {
            let subnet = c.subnets.iter().find(|s| s.name == n.subnet);
            let table = n
                .route_table
                .clone()
                .or_else(|| subnet.and_then(|s| s.route_table.clone()));
            (n.name.clone(), table)
        })
        .collect()
}

/// The model of what VNIC routing does with a packet, from a configuration that passed
/// [`validate`].
pub fn model_of(c: &Config) -> Result<VnicModel, Refusal> {
    let tables = tables_of(c);
    let mut vnics = Vec::new();
    for (i, n) in c.vnics.iter().enumerate() {
        let vcn = c
            .subnets
            .iter()
            .find(|s| s.name == n.subnet)
            .map(|s| s.vcn.clone())
            .unwrap_or_default();
        let mut ips = Vec::new();
        for (j, ip) in n.ips.iter().enumerate() {
            ips.push(address(&format!("vnic[{i}].ips[{j}]"), ip)?);
        }
        vnics.push(Vnic {
            name: n.name.clone(),
            vcn,
            vni: n.vni,
            mac: n.mac.0,
            ips,
            host: address(&format!("vnic[{i}].host"), &n.host)?,
            table: tables.get(&n.name).cloned().flatten(),
        });
    }
    let mut space = HashMap::new();
    for (i, v) in c.vcns.iter().enumerate() {
        let mut prefixes = Vec::new();
        for (j, p) in v.cidrs.iter().enumerate() {
            prefixes.push(prefix(&format!("vcn[{i}].cidrs[{j}]"), p)?);
        }
        space.insert(v.name.clone(), prefixes);
    }
    Ok(VnicModel::new(vnics, space, routes_of(c)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::vnic::Forward;

    const BASE: &str = r#"
instance = "t"
[[uplink]]
name = "eth0"

[[vcn]]
name = "prod"
cidrs = ["10.0.0.0/16"]

[[subnet]]
name = "web"
vcn = "prod"
cidr = "10.0.1.0/24"
route_table = "web"

[[subnet]]
name = "db"
vcn = "prod"
cidr = "10.0.2.0/24"

[[vnic]]
name = "web1"
subnet = "web"
vni = 100
mac = "02:00:00:00:01:01"
ips = ["10.0.1.10"]
host = "192.0.2.11"
public_ip = "203.0.113.10"

[[vnic]]
name = "db1"
subnet = "db"
vni = 100
mac = "02:00:00:00:02:01"
ips = ["10.0.2.10"]
host = "192.0.2.12"
route_table = "db"

[[route_table]]
name = "web"
routes = [
  { dst = "0.0.0.0/0", via = "igw:internet" },
  { dst = "10.0.2.0/24", via = "router:core" },
]

[[route_table]]
name = "core"
routes = [{ dst = "10.0.2.10/32", via = "vnic:db1" }]

[[route_table]]
name = "db"
routes = [{ dst = "0.0.0.0/0", via = "nat:out" }]

[[gateway]]
name = "internet"
kind = "internet"

[[gateway]]
name = "out"
kind = "nat"
public_ips = ["203.0.113.1"]

[[security_list]]
name = "web"
ingress = [
  { action = "deny", cidr = "10.9.0.0/16" },
  { action = "allow", proto = "tcp", cidr = "0.0.0.0/0", ports = "443", stateful = true },
]
egress = [{ action = "allow", cidr = "0.0.0.0/0" }]
"#;

    fn check(extra: &str, edit: impl Fn(&str) -> String) -> Result<Config, Refusal> {
        let text = edit(BASE) + extra;
        let c: Config = toml::from_str(&text).map_err(|e| ("toml".into(), e.to_string()))?;
        validate(&c).map(|()| c)
    }

    fn refused(extra: &str, edit: impl Fn(&str) -> String) -> Refusal {
        check(extra, edit).expect_err("refused")
    }

    #[test]
    fn a_whole_fleet_configuration_passes_and_routes() {
        let fleet = "[fleet]\nanycast = \"192.0.2.100\"\nhosts = [\n  { name = \"h1\", vtep = \"192.0.2.1\" },\n  { name = \"h2\", vtep = \"192.0.2.2\" },\n  { name = \"h3\", vtep = \"192.0.2.3\" },\n]\n";
        let c = check(fleet, str::to_string).unwrap();
        assert_eq!(c.fleet.as_ref().unwrap().hosts.len(), 3);
        // Worker CPUs come from an RSS engine, which must exist.
        let with_engine = fleet.replace("[fleet]\n", "[fleet]\nengine = \"fleet\"\n");
        let (field, msg) = refused(&with_engine, str::to_string);
        assert_eq!(field, "fleet.engine");
        assert!(msg.contains("\"fleet\" is no RSS engine"), "{msg}");
        let rss = "[rss]\n[[rss.engine]]\nname = \"fleet\"\nkind = \"shared\"\ncpus = [0]\n";
        let c = check(&format!("{with_engine}{rss}"), str::to_string).unwrap();
        assert_eq!(c.fleet.unwrap().engine.as_deref(), Some("fleet"));
        let c = check(fleet, str::to_string).unwrap();
        let routes = routes_of(&c).unwrap();
        let tables = tables_of(&c);
        assert_eq!(tables["web1"].as_deref(), Some("web"));
        assert_eq!(tables["db1"].as_deref(), Some("db"));
        let path = routes
            .resolve("web", "10.0.2.10".parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(path.target, Target::Vnic("db1".into()));
        let out = routes
            .resolve("web", "198.51.100.7".parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(out.target, Target::InternetGateway("internet".into()));
        // The model: web1 reaches db1 inside the VCN and the internet by its table; db1
        // leaves through the NAT gateway.
        let m = model_of(&c).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            m.from_instance(100, [2, 0, 0, 0, 1, 1], ip("10.0.1.10"), ip("10.0.2.10")),
            Ok(Forward::Vnic {
                vnic: "db1".into(),
                vni: 100,
                vtep: ip("192.0.2.12")
            })
        );
        assert_eq!(
            m.from_instance(100, [2, 0, 0, 0, 2, 1], ip("10.0.2.10"), ip("198.51.100.7")),
            Ok(Forward::Gateway(Target::NatGateway("out".into())))
        );
    }

    #[test]
    fn a_vnic_gets_its_subnets_rules_and_its_own_within_the_limit() {
        let many: Vec<String> = (0..MAX_RULES)
            .map(|i| format!("{{ action = \"allow\", proto = \"tcp\", cidr = \"0.0.0.0/0\", ports = \"{}\" }}", 1000 + i))
            .collect();
        let big = format!(
            "[[security_list]]\nname = \"big\"\ningress = [{}]\n",
            many.join(", ")
        );
        let on_subnet = |b: &str| {
            b.replace(
                "route_table = \"web\"\n",
                "route_table = \"web\"\nsecurity_lists = [\"big\"]\n",
            )
        };
        // 64 from the subnet: fine; two more from the VNIC's own list: too many.
        check(&big, on_subnet).unwrap();
        let (field, msg) = refused(&big, |b| {
            on_subnet(b).replace(
                "public_ip = \"203.0.113.10\"",
                "public_ip = \"203.0.113.10\"\nsecurity_lists = [\"web\"]",
            )
        });
        assert_eq!(field, "vnic[0].security_lists");
        assert!(msg.contains("66 ingress rules"), "{msg}");
        let c = check("", str::to_string).unwrap();
        let r = rule_of("r", &c.security_lists[0].ingress[1]).unwrap();
        assert_eq!(
            (r.proto, r.ports, r.stateful),
            (Some(acl::TCP), Some((443, 443)), true)
        );
    }

    #[test]
    fn bad_configurations_say_where_and_why() {
        let dup_ip = BASE.replace("subnet = \"db\"\nvni = 100", "subnet = \"web\"\nvni = 100");
        let dup_ip = dup_ip.replace("[\"10.0.2.10\"]", "[\"10.0.1.10\"]");
        let drg = "[[gateway]]\nname = \"onprem\"\nkind = \"drg\"\ncidrs = [\"172.16.0.0/12\"]\nremote = \"192.0.2.200\"\n";
        let cases: Vec<(Refusal, &str, &str)> = vec![
            (
                refused("", |b| b.replace("10.0.2.0/24\"\n", "10.0.1.128/25\"\n")),
                "subnet[1].cidr",
                "overlaps subnet \"web\"",
            ),
            (
                refused("", |b| {
                    b.replace("cidr = \"10.0.2.0/24\"", "cidr = \"10.9.0.0/24\"")
                }),
                "subnet[1].cidr",
                "outside VCN",
            ),
            (
                refused("", |b| b.replace("[\"10.0.2.10\"]", "[\"10.0.9.10\"]")),
                "vnic[1].ips[0]",
                "outside subnet",
            ),
            (
                refused("", |_| dup_ip.clone()),
                "vnic[1].ips[0]",
                "is VNIC \"web1\"'s already",
            ),
            (
                refused("", |b| {
                    b.replace(
                        "vni = 100\nmac = \"02:00:00:00:02:01\"",
                        "vni = 16777216\nmac = \"02:00:00:00:02:01\"",
                    )
                }),
                "vnic[1].vni",
                "not a VXLAN network",
            ),
            (
                refused("", |b| b.replace("02:00:00:00:02:01", "02:00:00:00:01:01")),
                "vnic[1].mac",
                "another VNIC's",
            ),
            (
                refused("", |b| {
                    b.replace("via = \"nat:out\"", "via = \"nat:internet\"")
                }),
                "route_table[2].routes",
                "does not exist",
            ),
            (
                refused("", |b| {
                    b.replace("via = \"vnic:db1\"", "via = \"router:web\"")
                }),
                "route_table[",
                "loop",
            ),
            (
                refused("", |b| b.replace("10.0.2.10/32", "10.0.2.10/24")),
                "route_table[1].routes[0].dst",
                "did you mean 10.0.2.0/24",
            ),
            (
                refused("", |b| {
                    b.replace("via = \"igw:internet\"", "via = \"gw:internet\"")
                }),
                "route_table[0].routes[0].via",
                "KIND:NAME",
            ),
            (
                refused("", |b| {
                    b.replace("route_table = \"db\"", "route_table = \"nope\"")
                }),
                "vnic[1].route_table",
                "no [[route_table]]",
            ),
            (refused(drg, str::to_string), "gateway[2].vni", "needs vni"),
            (
                refused("", |b| b.replace("public_ips = [\"203.0.113.1\"]", "")),
                "gateway[1].public_ips",
                "needs public_ips",
            ),
            (
                refused("", |b| b.replace("name = \"core\"", "name = \"web\"")),
                "route_table[1].name",
                "configured twice",
            ),
            (
                refused(
                    "[fleet]\nanycast = \"192.0.2.100\"\nhosts = [{ name = \"h1\", vtep = \"192.0.2.1\" }, { name = \"h2\", vtep = \"192.0.2.1\" }]\n",
                    str::to_string,
                ),
                "fleet.hosts[1].vtep",
                "another host's VTEP",
            ),
            (
                refused(
                    "[fleet]\nanycast = \"192.0.2.100\"\nhosts = []\n",
                    str::to_string,
                ),
                "fleet.hosts",
                "needs its hosts",
            ),
            (
                refused("", |b| b.replace("proto = \"tcp\", cidr", "cidr")),
                "security_list[0].ingress[1].ports",
                "need proto",
            ),
            (
                refused("", |b| b.replace("ports = \"443\"", "ports = \"443-80\"")),
                "security_list[0].ingress[1].ports",
                "ends before it starts",
            ),
            (
                refused("", |b| b.replace("10.9.0.0/16", "10.9.0.1/16")),
                "security_list[0].ingress[0].cidr",
                "host bits",
            ),
            (
                refused("", |b| {
                    b.replace(
                        "public_ip = \"203.0.113.10\"",
                        "public_ip = \"203.0.113.10\"\nsecurity_lists = [\"nope\"]",
                    )
                }),
                "vnic[0].security_lists[0]",
                "no [[security_list]]",
            ),
            (
                refused(
                    "[fleet]\nanycast = \"192.0.2.1\"\nhosts = [{ name = \"h1\", vtep = \"192.0.2.1\" }]\n",
                    str::to_string,
                ),
                "fleet.anycast",
                "no host's VTEP",
            ),
            (
                refused(
                    "[fleet]\nanycast = \"192.0.2.100\"\nhosts = [{ name = \"h1\", vtep = \"2001:db8::1\" }]\n",
                    str::to_string,
                ),
                "fleet.hosts[0].vtep",
                "VTEPs are IPv4",
            ),
            (
                refused("", |b| {
                    b.replace(
                        "public_ips = [\"203.0.113.1\"]",
                        "public_ips = [\"203.0.113.10\"]",
                    )
                }),
                "gateway[1].public_ips[0]",
                "VNIC \"web1\"'s public address already",
            ),
            (
                refused(
                    "[[gateway]]\nname = \"onprem\"\nkind = \"drg\"\ncidrs = [\"172.16.0.0/12\"]\nremote = \"192.0.2.200\"\nvni = 100\nmac = \"02:00:00:00:06:00\"\nvcn = \"prod\"\n",
                    str::to_string,
                ),
                "gateway[2].vni",
                "a VNIC's or the hand-off VNI",
            ),
            (
                refused(
                    "[[gateway]]\nname = \"onprem\"\nkind = \"drg\"\ncidrs = [\"172.16.0.0/12\"]\nremote = \"192.0.2.200\"\nvni = 600\nmac = \"02:00:00:00:06:00\"\nvcn = \"nope\"\n",
                    str::to_string,
                ),
                "gateway[2].vcn",
                "no [[vcn]]",
            ),
        ];
        for ((field, msg), want_field, want_msg) in cases {
            assert!(
                field.starts_with(want_field),
                "{field}: {msg} (wanted {want_field})"
            );
            assert!(
                msg.contains(want_msg),
                "{field}: {msg} (wanted {want_msg:?})"
            );
        }
    }
}
