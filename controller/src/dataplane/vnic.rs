//! VNIC routing's maps (`xnic_common::vnic`): the reconciler's writes ([`VnicOp`]), what the
//! maps hold read back at start, route lookups from the tries the programs read, and the
//! counters.

use anyhow::Context as _;
use aya::maps::{Array, HashMap as BpfHashMap, LpmTrie, Map, MapData, PerCpuArray, lpm_trie::Key};
use xnic_common::{
    maps::Counter,
    vnic::{
        MAX_FLEET_HOSTS, MAX_GATEWAYS, MAX_RULE_SETS, MAX_RULES, MAX_VNICS, NatEntry, NatKey,
        RouteAddrV4, RouteAddrV6, RouteEntry, VnicAddrKey, VnicCounter, VnicCounters,
    },
};

use super::{
    Dataplane, PinDir,
    flows::pinned,
    key_missing,
    registry::{self, Registered as _},
};
use crate::policy::{
    plan::put,
    route::RouteKey,
    vnic_plan::{VnicImage, VnicOp},
};

/// Removes `key` from a hash map; one that is not there is fine.
fn remove<K: aya::Pod, V: aya::Pod>(
    map: &mut BpfHashMap<&mut aya::maps::MapData, K, V>,
    key: &K,
    what: &str,
) -> anyhow::Result<()> {
    match map.remove(key) {
        Ok(()) => Ok(()),
        Err(e) if key_missing(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete from {what}")),
    }
}

impl Dataplane {
    /// Carries out one write to VNIC routing's maps.
    pub fn execute_vnic(&mut self, op: &VnicOp) -> anyhow::Result<()> {
        match op {
            VnicOp::SetConfig(c) => self
                .array_mut::<registry::VNIC_CONFIG>()?
                .set(0, *c, 0)
                .context("cannot write VNIC_CONFIG")?,
            VnicOp::SetVnic(slot, v) => self
                .array_mut::<registry::VNICS>()?
                .set(*slot, *v, 0)
                .with_context(|| format!("cannot write VNICS[{slot}]"))?,
            VnicOp::SetMac(k, v) => self
                .hash_mut::<registry::VNIC_MACS>()?
                .insert(k, v, 0)
                .context("cannot write VNIC_MACS")?,
            VnicOp::RemoveMac(k) => {
                remove(&mut self.hash_mut::<registry::VNIC_MACS>()?, k, "VNIC_MACS")?
            }
            VnicOp::SetAddr(k, v) => self
                .hash_mut::<registry::VNIC_ADDRS>()?
                .insert(k, v, 0)
                .context("cannot write VNIC_ADDRS")?,
            VnicOp::RemoveAddr(k) => remove(
                &mut self.hash_mut::<registry::VNIC_ADDRS>()?,
                k,
                "VNIC_ADDRS",
            )?,
            VnicOp::SetRoute(k, e) => self.set_route(k, e)?,
            VnicOp::RemoveRoute(k) => self.remove_route(k)?,
            VnicOp::SetGateway(slot, g) => self
                .array_mut::<registry::GATEWAYS>()?
                .set(*slot, *g, 0)
                .with_context(|| format!("cannot write GATEWAYS[{slot}]"))?,
            VnicOp::SetGatewayVni(k, v) => self
                .hash_mut::<registry::GATEWAY_VNIS>()?
                .insert(k, v, 0)
                .context("cannot write GATEWAY_VNIS")?,
            VnicOp::RemoveGatewayVni(k) => remove(
                &mut self.hash_mut::<registry::GATEWAY_VNIS>()?,
                k,
                "GATEWAY_VNIS",
            )?,
            VnicOp::SetPublic(k, v) => self
                .hash_mut::<registry::PUBLIC_ADDRS>()?
                .insert(k, v, 0)
                .context("cannot write PUBLIC_ADDRS")?,
            VnicOp::RemovePublic(k) => remove(
                &mut self.hash_mut::<registry::PUBLIC_ADDRS>()?,
                k,
                "PUBLIC_ADDRS",
            )?,
            VnicOp::SetRule(i, r) => self
                .array_mut::<registry::ACL_RULES>()?
                .set(*i, *r, 0)
                .with_context(|| format!("cannot write ACL_RULES[{i}]"))?,
            VnicOp::SetRouteGen(g) => self
                .array_mut::<registry::ROUTE_GEN>()?
                .set(0, *g, 0)
                .context("cannot write ROUTE_GEN")?,
            VnicOp::SetHost(i, h) => self
                .array_mut::<registry::FLEET_HOSTS>()?
                .set(*i, *h, 0)
                .with_context(|| format!("cannot write FLEET_HOSTS[{i}]"))?,
        }
        Ok(())
    }

    fn set_route(&mut self, k: &RouteKey, e: &RouteEntry) -> anyhow::Result<()> {
        match k {
            RouteKey::V4 { prefix_len, data } => {
                let mut trie: LpmTrie<_, RouteAddrV4, RouteEntry> =
                    LpmTrie::try_from(self.map_mut(registry::ROUTES_V4::NAME)?)?;
                trie.insert(&Key::new(*prefix_len, *data), e, 0)
                    .context("cannot write ROUTES_V4")?;
            }
            RouteKey::V6 { prefix_len, data } => {
                let mut trie: LpmTrie<_, RouteAddrV6, RouteEntry> =
                    LpmTrie::try_from(self.map_mut(registry::ROUTES_V6::NAME)?)?;
                trie.insert(&Key::new(*prefix_len, *data), e, 0)
                    .context("cannot write ROUTES_V6")?;
            }
        }
        Ok(())
    }

    fn remove_route(&mut self, k: &RouteKey) -> anyhow::Result<()> {
        let result = match k {
            RouteKey::V4 { prefix_len, data } => {
                let mut trie: LpmTrie<_, RouteAddrV4, RouteEntry> =
                    LpmTrie::try_from(self.map_mut(registry::ROUTES_V4::NAME)?)?;
                trie.remove(&Key::new(*prefix_len, *data))
            }
            RouteKey::V6 { prefix_len, data } => {
                let mut trie: LpmTrie<_, RouteAddrV6, RouteEntry> =
                    LpmTrie::try_from(self.map_mut(registry::ROUTES_V6::NAME)?)?;
                trie.remove(&Key::new(*prefix_len, *data))
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if key_missing(&e) => Ok(()),
            Err(e) => Err(e).context("cannot delete a route"),
        }
    }

    /// What VNIC routing's maps hold (for the reconciler at start).
    pub fn read_vnic_image(&self) -> anyhow::Result<VnicImage> {
        let mut img = VnicImage {
            config: self.array::<registry::VNIC_CONFIG>()?.get(&0, 0)?,
            route_gen: self.array::<registry::ROUTE_GEN>()?.get(&0, 0)?,
            ..VnicImage::default()
        };
        let vnics = self.array::<registry::VNICS>()?;
        for slot in 0..MAX_VNICS {
            put(&mut img.vnics, slot, vnics.get(&slot, 0)?);
        }
        let gateways = self.array::<registry::GATEWAYS>()?;
        for slot in 0..MAX_GATEWAYS {
            put(&mut img.gateways, slot, gateways.get(&slot, 0)?);
        }
        let hosts = self.array::<registry::FLEET_HOSTS>()?;
        for i in 0..MAX_FLEET_HOSTS {
            put(&mut img.hosts, i, hosts.get(&i, 0)?);
        }
        // Rule sets are written from their first rule on: a set whose first rule is empty
        // holds none.
        let rules = self.array::<registry::ACL_RULES>()?;
        for set in 0..MAX_RULE_SETS {
            let base = set * MAX_RULES;
            let first = rules.get(&base, 0)?;
            if first == Default::default() {
                continue;
            }
            put(&mut img.rules, base, first);
            for i in 1..MAX_RULES {
                put(&mut img.rules, base + i, rules.get(&(base + i), 0)?);
            }
        }
        img.macs = self
            .hash::<registry::VNIC_MACS>()?
            .iter()
            .filter_map(Result::ok)
            .collect();
        img.addrs = self
            .hash::<registry::VNIC_ADDRS>()?
            .iter()
            .filter_map(Result::ok)
            .collect();
        img.gateway_vnis = self
            .hash::<registry::GATEWAY_VNIS>()?
            .iter()
            .filter_map(Result::ok)
            .collect();
        img.public = self
            .hash::<registry::PUBLIC_ADDRS>()?
            .iter()
            .filter_map(Result::ok)
            .collect();
        let v4: LpmTrie<_, RouteAddrV4, RouteEntry> =
            LpmTrie::try_from(self.map(registry::ROUTES_V4::NAME)?)?;
        for (k, e) in v4.iter().filter_map(Result::ok) {
            img.routes.insert(
                RouteKey::V4 {
                    prefix_len: k.prefix_len(),
                    data: k.data(),
                },
                e,
            );
        }
        let v6: LpmTrie<_, RouteAddrV6, RouteEntry> =
            LpmTrie::try_from(self.map(registry::ROUTES_V6::NAME)?)?;
        for (k, e) in v6.iter().filter_map(Result::ok) {
            img.routes.insert(
                RouteKey::V6 {
                    prefix_len: k.prefix_len(),
                    data: k.data(),
                },
                e,
            );
        }
        Ok(img)
    }

    /// Zeroes VNIC `slot`'s counters (a new VNIC took the slot).
    pub fn reset_vnic_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        self.zero_per_cpu::<registry::VNIC_STATS>(slot)
    }

    /// Zeroes route `id`'s counter (a new route took the id).
    pub fn reset_route_counter(&mut self, id: u32) -> anyhow::Result<()> {
        self.array_mut::<registry::ROUTE_STATS>()?
            .set(id, Counter::default(), 0)
            .with_context(|| format!("cannot zero ROUTE_STATS[{id}]"))
    }
}

/// Read-only handles on VNIC routing's maps, opened from the pins: the API's views, route
/// lookups from the tries the programs read, and the tests.
pub struct VnicReader {
    routes_v4: LpmTrie<MapData, RouteAddrV4, RouteEntry>,
    routes_v6: LpmTrie<MapData, RouteAddrV6, RouteEntry>,
    addrs: BpfHashMap<MapData, VnicAddrKey, u32>,
    stats: PerCpuArray<MapData, VnicCounters>,
    route_stats: Array<MapData, Counter>,
    events: PerCpuArray<MapData, u64>,
    nat: BpfHashMap<MapData, NatKey, NatEntry>,
}

impl VnicReader {
    pub fn open(pins: &PinDir) -> anyhow::Result<VnicReader> {
        Ok(VnicReader {
            routes_v4: LpmTrie::try_from(Map::LpmTrie(pinned(pins, registry::ROUTES_V4::NAME)?))?,
            routes_v6: LpmTrie::try_from(Map::LpmTrie(pinned(pins, registry::ROUTES_V6::NAME)?))?,
            addrs: BpfHashMap::try_from(Map::HashMap(pinned(pins, registry::VNIC_ADDRS::NAME)?))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(pinned(
                pins,
                registry::VNIC_STATS::NAME,
            )?))?,
            route_stats: Array::try_from(Map::Array(pinned(pins, registry::ROUTE_STATS::NAME)?))?,
            events: PerCpuArray::try_from(Map::PerCpuArray(pinned(
                pins,
                registry::VNIC_EVENTS::NAME,
            )?))?,
            nat: BpfHashMap::try_from(Map::LruHashMap(pinned(
                pins,
                registry::NAT_SESSIONS::NAME,
            )?))?,
        })
    }

    /// The route the tries hold for `key` (a lookup key: every address bit counts), as the
    /// programs find it: the longest prefix of that table holding the address.
    pub fn route(&self, key: &RouteKey) -> anyhow::Result<Option<RouteEntry>> {
        let found = match key {
            RouteKey::V4 { prefix_len, data } => {
                self.routes_v4.get(&Key::new(*prefix_len, *data), 0)
            }
            RouteKey::V6 { prefix_len, data } => {
                self.routes_v6.get(&Key::new(*prefix_len, *data), 0)
            }
        };
        match found {
            Ok(e) => Ok(Some(e)),
            Err(e) if key_missing(&e) => Ok(None),
            Err(e) => Err(e).context("cannot look a route up"),
        }
    }

    /// The VNIC slot that has `addr` (IPv4-mapped) in VCN `vcn`.
    pub fn owner(&self, vcn: u32, addr: [u8; 16]) -> anyhow::Result<Option<u32>> {
        match self.addrs.get(&VnicAddrKey { vcn, addr }, 0) {
            Ok(slot) => Ok(Some(slot)),
            Err(e) if key_missing(&e) => Ok(None),
            Err(e) => Err(e).context("cannot read VNIC_ADDRS"),
        }
    }

    /// VNIC `slot`'s counters, summed over CPUs.
    pub fn counters(&self, slot: u32) -> anyhow::Result<VnicCounters> {
        let mut sum = VnicCounters::default();
        for c in self.counters_per_cpu(slot)? {
            sum.merge(&c);
        }
        Ok(sum)
    }

    /// VNIC `slot`'s counters on each CPU: where its packets were routed.
    pub fn counters_per_cpu(&self, slot: u32) -> anyhow::Result<Vec<VnicCounters>> {
        Ok(self
            .stats
            .get(&slot, 0)
            .with_context(|| format!("cannot read VNIC_STATS[{slot}]"))?
            .iter()
            .copied()
            .collect())
    }

    /// The NAT gateway connections this host made (both keys of each).
    pub fn nat_sessions(&self) -> Vec<(NatKey, NatEntry)> {
        self.nat.iter().filter_map(Result::ok).collect()
    }

    /// Route `id`'s counter.
    pub fn route_counter(&self, id: u32) -> anyhow::Result<Counter> {
        self.route_stats
            .get(&id, 0)
            .with_context(|| format!("cannot read ROUTE_STATS[{id}]"))
    }

    /// VNIC routing's events, summed over CPUs, by `VnicCounter`.
    pub fn events(&self) -> anyhow::Result<[u64; VnicCounter::COUNT]> {
        let mut out = [0u64; VnicCounter::COUNT];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = self
                .events
                .get(&(i as u32), 0)
                .with_context(|| format!("cannot read VNIC_EVENTS[{i}]"))?
                .iter()
                .sum();
        }
        Ok(out)
    }
}
