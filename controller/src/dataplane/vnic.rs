//! VNIC routing's maps (`xnic_common::vnic`): the reconciler's writes ([`VnicOp`]), what the
//! maps hold read back at start, route lookups from the tries the programs read, and the
//! counters.

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, LpmTrie, PerCpuArray, lpm_trie::Key};
use xnic_common::{
    maps::Counter,
    vnic::{
        MAX_FLEET_HOSTS, MAX_GATEWAYS, MAX_RULE_SETS, MAX_RULES, MAX_VNICS, RouteAddrV4,
        RouteAddrV6, RouteEntry, VnicCounter, VnicCounters,
    },
};

use super::{
    Dataplane, key_missing,
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

    /// The route the tries hold for `key` (a lookup key: every address bit counts), as the
    /// programs find it: the longest prefix of that table holding the address.
    pub fn route_lookup(&self, key: &RouteKey) -> anyhow::Result<Option<RouteEntry>> {
        let found = match key {
            RouteKey::V4 { prefix_len, data } => {
                let trie: LpmTrie<_, RouteAddrV4, RouteEntry> =
                    LpmTrie::try_from(self.map(registry::ROUTES_V4::NAME)?)?;
                trie.get(&Key::new(*prefix_len, *data), 0)
            }
            RouteKey::V6 { prefix_len, data } => {
                let trie: LpmTrie<_, RouteAddrV6, RouteEntry> =
                    LpmTrie::try_from(self.map(registry::ROUTES_V6::NAME)?)?;
                trie.get(&Key::new(*prefix_len, *data), 0)
            }
        };
        match found {
            Ok(e) => Ok(Some(e)),
            Err(e) if key_missing(&e) => Ok(None),
            Err(e) => Err(e).context("cannot look a route up"),
        }
    }

    /// What VNIC routing's maps hold (for the reconciler at start).
    pub fn read_vnic_image(&self) -> anyhow::Result<VnicImage> {
        let mut img = VnicImage {
            config: self.array::<registry::VNIC_CONFIG>()?.get(&0, 0)?,
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

    /// VNIC `slot`'s counters, summed over CPUs.
    pub fn vnic_counters(&self, slot: u32) -> anyhow::Result<VnicCounters> {
        let map: PerCpuArray<_, VnicCounters> =
            PerCpuArray::try_from(self.map(registry::VNIC_STATS::NAME)?)?;
        let mut sum = VnicCounters::default();
        for c in map
            .get(&slot, 0)
            .with_context(|| format!("cannot read VNIC_STATS[{slot}]"))?
            .iter()
        {
            for (to, from) in [
                (&mut sum.sent, c.sent),
                (&mut sum.received, c.received),
                (&mut sum.dropped, c.dropped),
            ] {
                to.packets += from.packets;
                to.bytes += from.bytes;
            }
        }
        Ok(sum)
    }

    /// Zeroes VNIC `slot`'s counters (a new VNIC took the slot).
    pub fn reset_vnic_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        self.zero_per_cpu::<registry::VNIC_STATS>(slot)
    }

    /// Route `id`'s counter.
    pub fn route_counter(&self, id: u32) -> anyhow::Result<Counter> {
        Ok(self.array::<registry::ROUTE_STATS>()?.get(&id, 0)?)
    }

    /// Zeroes route `id`'s counter (a new route took the id).
    pub fn reset_route_counter(&mut self, id: u32) -> anyhow::Result<()> {
        self.array_mut::<registry::ROUTE_STATS>()?
            .set(id, Counter::default(), 0)
            .with_context(|| format!("cannot zero ROUTE_STATS[{id}]"))
    }

    /// VNIC routing's events, summed over CPUs, by `VnicCounter`.
    pub fn vnic_events(&self) -> anyhow::Result<[u64; VnicCounter::COUNT]> {
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.map(registry::VNIC_EVENTS::NAME)?)?;
        let mut out = [0u64; VnicCounter::COUNT];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = map
                .get(&(i as u32), 0)
                .with_context(|| format!("cannot read VNIC_EVENTS[{i}]"))?
                .iter()
                .sum();
        }
        Ok(out)
    }
}
