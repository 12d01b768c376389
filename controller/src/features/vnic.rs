//! VNIC routing (SPEC §2.3) as the reconciler's feature: the fleet's VNICs, route tables,
//! gateways and security rules from the configuration, rendered into VNIC routing's maps
//! (`policy::vnic_plan::VnicImage`). Every host renders the same maps from the same
//! configuration but for its own place in the fleet (its VTEP, its NAT port block).
//!
//! Ids are stable while their names live: a VNIC keeps its slot (and counters), a route its
//! id, across runtime changes; a restarted daemon takes them back from the pinned maps
//! ([`Vnic::adopt`]). Rule sets are shared by the VNICs whose merged lists are equal.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use xnic_common::vnic::{
    ACL_ALLOW, ACL_DENY, ACL_PORTS, ACL_STATEFUL, AclRule, FleetHostEntry, GatewayEntry,
    MAX_GATEWAYS, MAX_NAT_IPS, MAX_ROUTES, MAX_RULE_SETS, MAX_RULES, MAX_VCNS, MAX_VNICS, NO_TABLE,
    NextHop, PUBLIC_NAT, PUBLIC_VNIC, PublicEntry, RouteEntry, VCN_TABLE_BASE, VNIC_VALID,
    VnicAddrKey, VnicConfig, VnicEntry, VnicMacKey, mask_v6, port_block, vcn_table,
};
use xnic_proto::config::{Config, GatewayKind};

use crate::{
    config::vnics::{routes_of, rule_of, tables_of},
    policy::{
        acl::{Action, Rule},
        route::{Prefix, RouteKey, Target},
        vnic_plan::VnicImage,
    },
};

/// An address as the maps keep it outside the tries: IPv4-mapped.
pub fn mapped(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

fn v4(text: &str) -> [u8; 4] {
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => a.octets(),
        _ => [0; 4],
    }
}

/// Stable ids for names (or keys): kept while wanted, the lowest free one for the new.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ids<K: Ord> {
    ids: BTreeMap<K, u32>,
}

impl<K: Ord> Default for Ids<K> {
    fn default() -> Self {
        Ids {
            ids: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Ids<K> {
    /// Keeps the ids of `wanted` keys that have one, gives the others the lowest free ids
    /// below `capacity`, forgets the rest. Returns the newly given ids.
    fn assign(
        &mut self,
        wanted: impl IntoIterator<Item = K>,
        capacity: u32,
        what: &str,
    ) -> Result<Vec<u32>, String> {
        let wanted: BTreeSet<K> = wanted.into_iter().collect();
        self.ids.retain(|k, _| wanted.contains(k));
        let mut used: BTreeSet<u32> = self.ids.values().copied().collect();
        let mut next = 0u32;
        let mut fresh = Vec::new();
        for k in wanted {
            if self.ids.contains_key(&k) {
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            if next >= capacity {
                return Err(format!("more {what} than the dataplane holds ({capacity})"));
            }
            used.insert(next);
            self.ids.insert(k, next);
            fresh.push(next);
        }
        Ok(fresh)
    }

    pub fn get(&self, k: &K) -> Option<u32> {
        self.ids.get(k).copied()
    }

    /// Takes `id` for `k` if neither is taken (adoption of what a previous daemon wrote).
    fn claim(&mut self, k: K, id: u32) {
        if !self.ids.contains_key(&k) && !self.ids.values().any(|v| *v == id) {
            self.ids.insert(k, id);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, u32)> {
        self.ids.iter().map(|(k, v)| (k, *v))
    }

    /// The key that has `id`.
    pub fn key_of(&self, id: u32) -> Option<&K> {
        self.ids.iter().find(|(_, v)| **v == id).map(|(k, _)| k)
    }
}

/// A security-rule set as the dataplane holds it.
type RuleSet = Vec<AclRule>;

/// The feature's state.
#[derive(Clone, Debug, Default)]
pub struct Vnic {
    /// This host's place in `[fleet]` (`None`: not one of its hosts, routing off).
    me: Option<usize>,
    vnics: Ids<String>,
    gateways: Ids<String>,
    vcns: Ids<String>,
    tables: Ids<String>,
    routes: Ids<RouteKey>,
    rule_sets: Ids<RuleSet>,
    /// Slots and route ids given out since the last write: their counters start at zero.
    fresh_vnics: BTreeSet<u32>,
    fresh_routes: BTreeSet<u32>,
    /// The RSS engine whose CPUs route packets (`[fleet] engine`, once RSS has it and the
    /// uplinks can steer).
    workers: Option<u16>,
    /// The maps' contents as of the last reconcile.
    image: Arc<VnicImage>,
}

/// The merged rules of a VNIC in one direction: its subnet's lists, then its own.
fn merged_rules(c: &Config, vnic: usize, ingress: bool) -> Vec<Rule> {
    let n = &c.vnics[vnic];
    let subnet_lists = c
        .subnets
        .iter()
        .find(|s| s.name == n.subnet)
        .map(|s| s.security_lists.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for list in subnet_lists.iter().chain(&n.security_lists) {
        let Some(l) = c.security_lists.iter().find(|l| &l.name == list) else {
            continue;
        };
        for r in if ingress { &l.ingress } else { &l.egress } {
            if let Ok(rule) = rule_of("", r) {
                out.push(rule);
            }
        }
    }
    out
}

/// A rule as the dataplane holds it.
pub fn acl_rule(r: &Rule) -> AclRule {
    let (lo, hi) = r.ports.unwrap_or((0, u16::MAX));
    let mapped_len = match r.peer.addr() {
        IpAddr::V4(_) => r.peer.len() + 96,
        IpAddr::V6(_) => r.peer.len(),
    };
    AclRule {
        action: match r.action {
            Action::Allow => ACL_ALLOW,
            Action::Deny => ACL_DENY,
        },
        proto: r.proto.unwrap_or(0),
        flags: if r.ports.is_some() { ACL_PORTS } else { 0 }
            | if r.stateful { ACL_STATEFUL } else { 0 },
        prefix_len: mapped_len,
        port_lo: lo,
        port_hi: hi,
        addr: mask_v6(mapped(r.peer.addr()), mapped_len),
    }
}

impl Vnic {
    /// This host's place in the fleet (found by the daemon from its own addresses).
    pub fn set_host(&mut self, me: Option<usize>) {
        self.me = me;
    }

    pub fn host(&self) -> Option<usize> {
        self.me
    }

    /// Routes on the CPUs of engine `engine` (each flow's hash picks one), or where packets
    /// arrive (`None`).
    pub fn set_workers(&mut self, engine: Option<u16>) {
        if self.workers == engine {
            return;
        }
        self.workers = engine;
        let config = &mut Arc::make_mut(&mut self.image).config;
        if config.enabled != 0 {
            config.workers = u8::from(engine.is_some());
            config.engine = engine.unwrap_or(0);
        }
    }

    pub fn workers(&self) -> Option<u16> {
        self.workers
    }

    /// Takes back the ids a previous daemon wrote (`pinned`: what the maps hold), so a
    /// restart rewrites nothing that did not change.
    pub fn adopt(&mut self, c: &Config, pinned: &VnicImage) {
        let tables = tables_of(c);
        for (slot, v) in &pinned.vnics {
            let Some(n) = c.vnics.iter().find(|n| n.vni == v.vni && n.mac.0 == v.mac) else {
                continue;
            };
            self.vnics.claim(n.name.clone(), *slot);
            let vcn = c
                .subnets
                .iter()
                .find(|s| s.name == n.subnet)
                .map(|s| &s.vcn);
            if let Some(vcn) = vcn {
                self.vcns.claim(vcn.clone(), v.vcn);
            }
            if let Some(Some(t)) = tables.get(&n.name)
                && v.table != NO_TABLE
            {
                self.tables.claim(t.clone(), v.table);
            }
        }
        for (k, e) in &pinned.routes {
            self.routes.claim(*k, e.route);
        }
    }

    /// Brings the ids in line with `c`. `Err`: more of something than the maps hold (the
    /// configuration's checks refuse that first).
    pub fn reconcile(&mut self, c: &Config) -> Result<(), String> {
        let fresh =
            self.vnics
                .assign(c.vnics.iter().map(|v| v.name.clone()), MAX_VNICS, "VNICs")?;
        self.fresh_vnics.extend(fresh);
        self.gateways.assign(
            c.gateways.iter().map(|g| g.name.clone()),
            MAX_GATEWAYS,
            "gateways",
        )?;
        self.vcns
            .assign(c.vcns.iter().map(|v| v.name.clone()), MAX_VCNS, "VCNs")?;
        self.tables.assign(
            c.route_tables.iter().map(|t| t.name.clone()),
            VCN_TABLE_BASE,
            "route tables",
        )?;
        let keys = self.route_keys(c)?;
        let fresh = self.routes.assign(keys, MAX_ROUTES, "routes")?;
        self.fresh_routes.extend(fresh);
        let mut sets = BTreeSet::new();
        for i in 0..c.vnics.len() {
            for ingress in [true, false] {
                let set: RuleSet = merged_rules(c, i, ingress).iter().map(acl_rule).collect();
                if !set.is_empty() {
                    sets.insert(set);
                }
            }
        }
        self.rule_sets.assign(sets, MAX_RULE_SETS, "rule sets")?;
        let image = self.render(c);
        if *self.image != image {
            self.image = Arc::new(image);
        }
        Ok(())
    }

    /// What VNIC routing's maps hold for the configuration last reconciled.
    pub fn image(&self) -> Arc<VnicImage> {
        self.image.clone()
    }

    /// Every route's key: route tables' routes and VCNs' own prefixes.
    fn route_keys(&self, c: &Config) -> Result<Vec<RouteKey>, String> {
        let routes = routes_of(c).map_err(|(f, m)| format!("{f}: {m}"))?;
        let mut keys = Vec::new();
        for (name, t) in routes.tables() {
            let Some(id) = self.tables.get(name) else {
                continue;
            };
            for (prefix, _) in t.routes() {
                keys.push(RouteKey::route(id, prefix));
            }
        }
        for v in &c.vcns {
            let Some(id) = self.vcns.get(&v.name) else {
                continue;
            };
            for p in &v.cidrs {
                if let Ok(prefix) = p.parse::<Prefix>() {
                    keys.push(RouteKey::route(vcn_table(id), &prefix));
                }
            }
        }
        Ok(keys)
    }

    /// VNIC slots and route ids given out since the last call: zero their counters first.
    pub fn take_fresh(&mut self) -> (BTreeSet<u32>, BTreeSet<u32>) {
        (
            std::mem::take(&mut self.fresh_vnics),
            std::mem::take(&mut self.fresh_routes),
        )
    }

    pub fn vnic_slot(&self, name: &str) -> Option<u32> {
        self.vnics.get(&name.to_string())
    }

    pub fn table_id(&self, name: &str) -> Option<u32> {
        self.tables.get(&name.to_string())
    }

    pub fn vcn_id(&self, name: &str) -> Option<u32> {
        self.vcns.get(&name.to_string())
    }

    pub fn route_id(&self, key: &RouteKey) -> Option<u32> {
        self.routes.get(key)
    }

    /// The key of the route with id `id`.
    pub fn route_key(&self, id: u32) -> Option<RouteKey> {
        self.routes.key_of(id).copied()
    }

    pub fn vnic_name(&self, slot: u32) -> Option<&str> {
        self.vnics.key_of(slot).map(String::as_str)
    }

    pub fn gateway_name(&self, slot: u32) -> Option<&str> {
        self.gateways.key_of(slot).map(String::as_str)
    }

    pub fn table_name(&self, id: u32) -> Option<&str> {
        self.tables.key_of(id).map(String::as_str)
    }

    pub fn vcn_name(&self, id: u32) -> Option<&str> {
        self.vcns.key_of(id).map(String::as_str)
    }

    /// The maps' contents for `c` on this host.
    pub fn render(&self, c: &Config) -> VnicImage {
        let mut img = VnicImage::default();
        let (Some(fleet), Some(me)) = (&c.fleet, self.me) else {
            return img;
        };
        let hosts = fleet.hosts.len() as u32;
        let (nat_first, nat_last) = port_block(me as u32, hosts).unwrap_or((1, 0));
        img.config = VnicConfig {
            enabled: 1,
            host_index: me as u8,
            hosts: hosts as u8,
            workers: u8::from(self.workers.is_some()),
            anycast: v4(&fleet.anycast),
            local: v4(&fleet.hosts[me].vtep),
            handoff_vni: fleet.handoff_vni,
            router_mac: fleet.router_mac.0,
            vxlan_port: fleet.vxlan_port,
            underlay_mtu: fleet.mtu,
            nat_first,
            nat_last,
            engine: self.workers.unwrap_or(0),
        };
        for (i, h) in fleet.hosts.iter().enumerate() {
            img.hosts
                .insert(i as u32, FleetHostEntry { vtep: v4(&h.vtep) });
        }

        let tables = tables_of(c);
        for (i, n) in c.vnics.iter().enumerate() {
            let Some(slot) = self.vnic_slot(&n.name) else {
                continue;
            };
            let vcn_name = c
                .subnets
                .iter()
                .find(|s| s.name == n.subnet)
                .map(|s| s.vcn.clone())
                .unwrap_or_default();
            let Some(vcn) = self.vcn_id(&vcn_name) else {
                continue;
            };
            let set_of = |ingress: bool| -> (u16, u8) {
                let set: RuleSet = merged_rules(c, i, ingress).iter().map(acl_rule).collect();
                match self.rule_sets.get(&set) {
                    Some(id) => (id as u16, set.len() as u8),
                    None => (0, 0),
                }
            };
            let (ingress_set, ingress_len) = set_of(true);
            let (egress_set, egress_len) = set_of(false);
            let ips: Vec<IpAddr> = n.ips.iter().filter_map(|a| a.parse().ok()).collect();
            let private = ips
                .iter()
                .find_map(|a| match a {
                    IpAddr::V4(v) => Some(v.octets()),
                    IpAddr::V6(_) => None,
                })
                .unwrap_or([0; 4]);
            let table = tables
                .get(&n.name)
                .cloned()
                .flatten()
                .and_then(|t| self.table_id(&t))
                .unwrap_or(NO_TABLE);
            img.vnics.insert(
                slot,
                VnicEntry {
                    vni: n.vni,
                    vcn,
                    table,
                    host: v4(&n.host),
                    public: n.public_ip.as_deref().map_or([0; 4], v4),
                    private,
                    ingress_set,
                    egress_set,
                    ingress_len,
                    egress_len,
                    flags: VNIC_VALID,
                    _pad: 0,
                    mac: n.mac.0,
                    _pad2: [0; 2],
                },
            );
            img.macs.insert(VnicMacKey::new(n.vni, n.mac.0), slot);
            for a in &ips {
                img.addrs.insert(
                    VnicAddrKey {
                        vcn,
                        addr: mapped(*a),
                    },
                    slot,
                );
            }
            if let Some(p) = &n.public_ip {
                img.public.insert(
                    v4(p),
                    PublicEntry {
                        kind: PUBLIC_VNIC,
                        _pad: [0; 3],
                        target: slot,
                        private,
                    },
                );
            }
        }

        for g in &c.gateways {
            let Some(slot) = self.gateways.get(&g.name) else {
                continue;
            };
            let kind = match g.kind {
                GatewayKind::Internet => NextHop::InternetGateway,
                GatewayKind::Nat => NextHop::NatGateway,
                GatewayKind::Service => NextHop::ServiceGateway,
                GatewayKind::Drg => NextHop::DynamicRoutingGateway,
            };
            let mut public = [[0u8; 4]; MAX_NAT_IPS];
            for (i, p) in g.public_ips.iter().take(MAX_NAT_IPS).enumerate() {
                public[i] = v4(p);
                img.public.insert(
                    v4(p),
                    PublicEntry {
                        kind: PUBLIC_NAT,
                        _pad: [0; 3],
                        target: slot,
                        private: [0; 4],
                    },
                );
            }
            img.gateways.insert(
                slot,
                GatewayEntry {
                    kind: kind as u8,
                    nat_ips: g.public_ips.len().min(MAX_NAT_IPS) as u8,
                    _pad: [0; 2],
                    vni: g.vni.unwrap_or(0),
                    vcn: g.vcn.as_deref().and_then(|v| self.vcn_id(v)).unwrap_or(0),
                    remote: g.remote.as_deref().map_or([0; 4], v4),
                    mac: g.mac.map_or([0; 6], |m| m.0),
                    _pad2: [0; 2],
                    public,
                },
            );
            if let Some(vni) = g.vni
                && matches!(g.kind, GatewayKind::Service | GatewayKind::Drg)
            {
                img.gateway_vnis.insert(vni, slot);
            }
        }

        for (set, id) in self.rule_sets.iter() {
            for (i, r) in set.iter().enumerate().take(MAX_RULES as usize) {
                img.rules.insert(id * MAX_RULES + i as u32, *r);
            }
        }

        if let Ok(routes) = routes_of(c) {
            let compiled = routes.compile(
                |t| self.table_id(t),
                |target| match target {
                    Target::Vnic(n) => self.vnic_slot(n),
                    Target::Router(_) => None,
                    gateway => self.gateways.get(&gateway.name().to_string()),
                },
            );
            for (key, mut entry) in compiled {
                let Some(id) = self.route_id(&key) else {
                    continue;
                };
                entry.route = id;
                img.routes.insert(key, entry);
            }
        }
        for v in &c.vcns {
            let Some(id) = self.vcn_id(&v.name) else {
                continue;
            };
            for p in &v.cidrs {
                let Ok(prefix) = p.parse::<Prefix>() else {
                    continue;
                };
                let key = RouteKey::route(vcn_table(id), &prefix);
                let Some(route) = self.route_id(&key) else {
                    continue;
                };
                img.routes.insert(
                    key,
                    RouteEntry {
                        kind: NextHop::Local as u8,
                        _pad: [0; 3],
                        target: id,
                        route,
                    },
                );
            }
        }
        img.route_gen = crate::policy::vnic_plan::route_generation(&img.routes);
        img
    }
}

/// This host's place in `c`'s fleet: the host whose VTEP is one of `addresses`.
pub fn host_of(c: &Config, addresses: &[IpAddr]) -> Option<usize> {
    let fleet = c.fleet.as_ref()?;
    fleet.hosts.iter().position(|h| {
        h.vtep
            .parse::<IpAddr>()
            .is_ok_and(|a| addresses.contains(&a))
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use xnic_common::vnic::{AclPacket, Admission, Matched, admits, first_match};

    use super::*;
    use crate::policy::acl::{self, ICMP, Packet, TCP, UDP, Verdict};

    fn rule_strategy() -> impl Strategy<Value = Rule> {
        (
            any::<bool>(),
            prop::option::of(prop::sample::select(vec![TCP, UDP, ICMP])),
            prop::sample::select(vec![0u8, 8, 12, 16, 23, 24, 31, 32]),
            any::<[u8; 4]>(),
            prop::option::of((0u16..2000, 0u16..2000)),
            any::<bool>(),
        )
            .prop_map(|(allow, proto, len, net, ports, stateful)| {
                let masked = Ipv4Addr::from(
                    u32::from_be_bytes(net) & if len == 0 { 0 } else { u32::MAX << (32 - len) },
                );
                Rule {
                    action: if allow { Action::Allow } else { Action::Deny },
                    proto,
                    peer: Prefix::new(masked.into(), len).expect("masked"),
                    // Ports go with TCP or UDP only, as the configuration requires.
                    ports: ports
                        .filter(|_| matches!(proto, Some(TCP) | Some(UDP)))
                        .map(|(a, b)| (a.min(b), a.max(b))),
                    stateful,
                }
            })
    }

    use std::net::Ipv4Addr;

    proptest! {
        /// The dataplane's rules, as `acl_rule` writes them and `first_match` walks them,
        /// decide every packet as the configuration's reference does: the same rule, the same
        /// verdict.
        #[test]
        fn the_dataplane_decides_as_the_reference(
            rules in proptest::collection::vec(rule_strategy(), 0..16),
            proto in prop::sample::select(vec![TCP, UDP, ICMP]),
            peer in any::<[u8; 4]>(),
            near in 0usize..16,
            port in 0u16..2000,
        ) {
            // Half the packets from inside some rule's prefix, so matches are common.
            let peer = match rules.get(near) {
                Some(r) if near % 2 == 0 => match r.peer.addr() {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(_) => Ipv4Addr::from(peer),
                },
                _ => Ipv4Addr::from(peer),
            };
            let reference = acl::evaluate(&rules, &Packet { proto, peer: peer.into(), dst_port: port });
            let dataplane: Vec<AclRule> = rules.iter().map(acl_rule).collect();
            let p = AclPacket {
                proto,
                peer: mapped(peer.into()),
                dst_port: port,
                ports: proto == TCP || proto == UDP,
            };
            let got = first_match(&dataplane, &p)
                .map(|r| dataplane.iter().position(|x| std::ptr::eq(x, r)).expect("one of them"));
            match reference {
                Verdict::Allow(i) => {
                    prop_assert_eq!(got, Some(i));
                    prop_assert!(Matched::of(&dataplane[i]).allows());
                }
                Verdict::Deny(i) => {
                    prop_assert_eq!(got, Some(i));
                    prop_assert!(!Matched::of(&dataplane[i]).allows());
                }
                Verdict::NoMatch => prop_assert_eq!(got, None),
            }
        }
    }

    #[test]
    fn an_answer_passes_only_what_a_stateful_rule_of_the_other_way_allows() {
        let allow = |stateful: bool| AclRule {
            action: ACL_ALLOW,
            flags: if stateful { ACL_STATEFUL } else { 0 },
            ..AclRule::default()
        };
        let deny = AclRule {
            action: ACL_DENY,
            ..AclRule::default()
        };
        let m = |r: &AclRule| Matched::of(r);
        assert_eq!(
            admits(m(&allow(false)), Matched::NONE, false),
            Admission::Allowed
        );
        assert_eq!(admits(m(&deny), m(&allow(true)), true), Admission::Answer);
        assert_eq!(
            admits(Matched::NONE, m(&allow(true)), true),
            Admission::Answer
        );
        // Not stateful, not an answer (a bare SYN), or nothing allows the connection.
        assert_eq!(
            admits(Matched::NONE, m(&allow(false)), true),
            Admission::Denied
        );
        assert_eq!(
            admits(Matched::NONE, m(&allow(true)), false),
            Admission::Denied
        );
        assert_eq!(admits(Matched::NONE, m(&deny), true), Admission::Denied);
    }
}
