//! VNIC routing's part of the dataplane image (`plan::Image::vnic`) and the ordered writes
//! between two of them. Make before break, as the rest of the plan: the entries a key names
//! (rules, gateways, fleet hosts, VNICs) before the keys (MACs, addresses, public addresses,
//! gateway VNIs, routes), and the settings that turn routing on last; keys out before their
//! entries. Pure: no I/O.

use std::collections::BTreeMap;

use xnic_common::vnic::{
    AclRule, FleetHostEntry, GatewayEntry, PublicEntry, RouteEntry, VnicAddrKey, VnicConfig,
    VnicEntry, VnicMacKey,
};

use super::route::RouteKey;

/// What VNIC routing's maps hold. Array sections hold only non-default entries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VnicImage {
    /// `VNIC_CONFIG[0]`.
    pub config: VnicConfig,
    /// `VNICS`, by slot.
    pub vnics: BTreeMap<u32, VnicEntry>,
    /// `VNIC_MACS`.
    pub macs: BTreeMap<VnicMacKey, u32>,
    /// `VNIC_ADDRS`.
    pub addrs: BTreeMap<VnicAddrKey, u32>,
    /// `ROUTES_V4` and `ROUTES_V6`.
    pub routes: BTreeMap<RouteKey, RouteEntry>,
    /// `GATEWAYS`, by slot.
    pub gateways: BTreeMap<u32, GatewayEntry>,
    /// `GATEWAY_VNIS`.
    pub gateway_vnis: BTreeMap<u32, u32>,
    /// `PUBLIC_ADDRS`.
    pub public: BTreeMap<[u8; 4], PublicEntry>,
    /// `ACL_RULES`, by index (set × `MAX_RULES` + rule).
    pub rules: BTreeMap<u32, AclRule>,
    /// `FLEET_HOSTS`, by index.
    pub hosts: BTreeMap<u32, FleetHostEntry>,
    /// `ROUTE_GEN[0]`: a digest of `routes`, so the programs forget what they remembered of
    /// other routes.
    pub route_gen: u32,
}

/// A digest of a set of routes (FNV-1a over keys and entries): another set, another
/// generation (0 stays for no routes at all).
pub fn route_generation(routes: &BTreeMap<RouteKey, RouteEntry>) -> u32 {
    if routes.is_empty() {
        return 0;
    }
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    for (k, e) in routes {
        match k {
            RouteKey::V4 { prefix_len, data } => {
                eat(&prefix_len.to_be_bytes());
                eat(&data.table);
                eat(&data.addr);
            }
            RouteKey::V6 { prefix_len, data } => {
                eat(&prefix_len.to_be_bytes());
                eat(&data.table);
                eat(&data.addr);
            }
        }
        eat(&[e.kind]);
        eat(&e.target.to_be_bytes());
        eat(&e.route.to_be_bytes());
    }
    h.max(1)
}

/// One write to VNIC routing's maps. Writing an array entry's default removes it.
#[derive(Clone, Debug, PartialEq)]
pub enum VnicOp {
    SetConfig(VnicConfig),
    SetVnic(u32, VnicEntry),
    SetMac(VnicMacKey, u32),
    RemoveMac(VnicMacKey),
    SetAddr(VnicAddrKey, u32),
    RemoveAddr(VnicAddrKey),
    SetRoute(RouteKey, RouteEntry),
    RemoveRoute(RouteKey),
    SetGateway(u32, GatewayEntry),
    SetGatewayVni(u32, u32),
    RemoveGatewayVni(u32),
    SetPublic([u8; 4], PublicEntry),
    RemovePublic([u8; 4]),
    SetRule(u32, AclRule),
    SetHost(u32, FleetHostEntry),
    /// The routes' generation: written after every other write, removals included, so
    /// nothing remembered under the new generation predates the change.
    SetRouteGen(u32),
}

/// Sets of what changed in one section; keys that went away.
fn changed<K: Ord + Clone, V: PartialEq + Clone>(
    from: &BTreeMap<K, V>,
    to: &BTreeMap<K, V>,
    set: &mut Vec<VnicOp>,
    put: impl Fn(K, V) -> VnicOp,
) -> Vec<K> {
    for (k, v) in to {
        if from.get(k) != Some(v) {
            set.push(put(k.clone(), v.clone()));
        }
    }
    from.keys()
        .filter(|k| !to.contains_key(*k))
        .cloned()
        .collect()
}

/// The writes from `from` to `to`: `(make, break)`, the first to run before the rest of the
/// plan's removals, the second after its makes.
pub fn diff(from: &VnicImage, to: &VnicImage) -> (Vec<VnicOp>, Vec<VnicOp>) {
    let mut make = Vec::new();
    let gone_rules = changed(&from.rules, &to.rules, &mut make, VnicOp::SetRule);
    let gone_gateways = changed(&from.gateways, &to.gateways, &mut make, VnicOp::SetGateway);
    let gone_hosts = changed(&from.hosts, &to.hosts, &mut make, VnicOp::SetHost);
    let gone_vnics = changed(&from.vnics, &to.vnics, &mut make, VnicOp::SetVnic);
    let gone_macs = changed(&from.macs, &to.macs, &mut make, VnicOp::SetMac);
    let gone_addrs = changed(&from.addrs, &to.addrs, &mut make, VnicOp::SetAddr);
    let gone_public = changed(&from.public, &to.public, &mut make, VnicOp::SetPublic);
    let gone_vnis = changed(
        &from.gateway_vnis,
        &to.gateway_vnis,
        &mut make,
        VnicOp::SetGatewayVni,
    );
    let gone_routes = changed(&from.routes, &to.routes, &mut make, VnicOp::SetRoute);
    if from.config != to.config {
        make.push(VnicOp::SetConfig(to.config));
    }

    let mut brk = Vec::new();
    brk.extend(gone_routes.into_iter().map(VnicOp::RemoveRoute));
    brk.extend(gone_vnis.into_iter().map(VnicOp::RemoveGatewayVni));
    brk.extend(gone_public.into_iter().map(VnicOp::RemovePublic));
    brk.extend(gone_addrs.into_iter().map(VnicOp::RemoveAddr));
    brk.extend(gone_macs.into_iter().map(VnicOp::RemoveMac));
    brk.extend(
        gone_vnics
            .into_iter()
            .map(|s| VnicOp::SetVnic(s, VnicEntry::default())),
    );
    brk.extend(
        gone_hosts
            .into_iter()
            .map(|s| VnicOp::SetHost(s, FleetHostEntry::default())),
    );
    brk.extend(
        gone_gateways
            .into_iter()
            .map(|s| VnicOp::SetGateway(s, GatewayEntry::default())),
    );
    brk.extend(
        gone_rules
            .into_iter()
            .map(|s| VnicOp::SetRule(s, AclRule::default())),
    );
    if from.route_gen != to.route_gen {
        brk.push(VnicOp::SetRouteGen(to.route_gen));
    }
    (make, brk)
}

fn array_put<V: Default + PartialEq>(map: &mut BTreeMap<u32, V>, k: u32, v: V) {
    if v == V::default() {
        map.remove(&k);
    } else {
        map.insert(k, v);
    }
}

/// `image` after `op` ran.
pub fn record(image: &mut VnicImage, op: &VnicOp) {
    match op {
        VnicOp::SetConfig(c) => image.config = *c,
        VnicOp::SetVnic(s, v) => array_put(&mut image.vnics, *s, *v),
        VnicOp::SetMac(k, v) => {
            image.macs.insert(*k, *v);
        }
        VnicOp::RemoveMac(k) => {
            image.macs.remove(k);
        }
        VnicOp::SetAddr(k, v) => {
            image.addrs.insert(*k, *v);
        }
        VnicOp::RemoveAddr(k) => {
            image.addrs.remove(k);
        }
        VnicOp::SetRoute(k, v) => {
            image.routes.insert(*k, *v);
        }
        VnicOp::RemoveRoute(k) => {
            image.routes.remove(k);
        }
        VnicOp::SetGateway(s, g) => array_put(&mut image.gateways, *s, *g),
        VnicOp::SetGatewayVni(k, v) => {
            image.gateway_vnis.insert(*k, *v);
        }
        VnicOp::RemoveGatewayVni(k) => {
            image.gateway_vnis.remove(k);
        }
        VnicOp::SetPublic(k, v) => {
            image.public.insert(*k, *v);
        }
        VnicOp::RemovePublic(k) => {
            image.public.remove(k);
        }
        VnicOp::SetRule(i, r) => array_put(&mut image.rules, *i, *r),
        VnicOp::SetHost(i, h) => array_put(&mut image.hosts, *i, *h),
        VnicOp::SetRouteGen(g) => image.route_gen = *g,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> VnicImage {
        let mut i = VnicImage::default();
        i.config.enabled = 1;
        i.vnics.insert(
            3,
            VnicEntry {
                vni: 100,
                flags: 1,
                ..VnicEntry::default()
            },
        );
        i.macs.insert(VnicMacKey::new(100, [2, 0, 0, 0, 0, 1]), 3);
        i.rules.insert(
            7,
            AclRule {
                action: 1,
                ..AclRule::default()
            },
        );
        i
    }

    #[test]
    fn entries_go_in_before_the_keys_naming_them_and_out_after() {
        let to = image();
        let (make, brk) = diff(&VnicImage::default(), &to);
        assert!(brk.is_empty());
        let at = |want: fn(&VnicOp) -> bool| make.iter().position(want).unwrap();
        assert!(
            at(|o| matches!(o, VnicOp::SetRule(..))) < at(|o| matches!(o, VnicOp::SetVnic(..)))
        );
        assert!(at(|o| matches!(o, VnicOp::SetVnic(..))) < at(|o| matches!(o, VnicOp::SetMac(..))));
        assert_eq!(make.last(), Some(&VnicOp::SetConfig(to.config)));

        let (make, brk) = diff(&to, &VnicImage::default());
        assert_eq!(make, vec![VnicOp::SetConfig(VnicConfig::default())]);
        let at = |want: fn(&VnicOp) -> bool| brk.iter().position(want).unwrap();
        assert!(
            at(|o| matches!(o, VnicOp::RemoveMac(..))) < at(|o| matches!(o, VnicOp::SetVnic(..)))
        );
        assert!(
            at(|o| matches!(o, VnicOp::SetVnic(..))) < at(|o| matches!(o, VnicOp::SetRule(..)))
        );
    }

    #[test]
    fn recording_the_writes_reaches_the_target_and_nothing_is_written_twice() {
        let from = image();
        let mut to = image();
        to.vnics.clear();
        to.macs.clear();
        to.public.insert(
            [203, 0, 113, 5],
            PublicEntry {
                kind: 1,
                ..PublicEntry::default()
            },
        );
        let (make, brk) = diff(&from, &to);
        let mut got = from.clone();
        for op in make.iter().chain(&brk) {
            record(&mut got, op);
        }
        assert_eq!(got, to);
        assert_eq!(diff(&to, &to), (vec![], vec![]));
    }
}
