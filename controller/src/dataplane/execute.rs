//! Reading back what the configuration maps hold ([`Dataplane::read_image`]) and carrying out
//! the reconciler's writes ([`Dataplane::execute`]), one [`Op`] at a time.

use std::collections::BTreeSet;

use anyhow::Context as _;
use aya::maps::DevMapHash;
use xnic_common::{
    index::{mac_slot, port_slot},
    limits::{MAX_PORTS, MAX_VMS},
    rss::{MAX_ENGINES, MAX_TABLE_SIZE, VmRss, bucket_index},
    team::{MAX_TEAM_MEMBERS, MAX_TEAMS, TEAM_TABLE_SIZE, VmTeam},
};

use super::{
    AttachMode, Attached, Dataplane,
    registry::{self, Registered},
};
use crate::{
    config::XdpModePref,
    policy::plan::{Image, Op, TxPort, put},
};

/// What an [`Op::Attach`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachOutcome {
    pub mode: Option<AttachMode>,
    /// The link was new (not an adopted pin).
    pub fresh: bool,
}

impl Dataplane {
    /// Everything the configuration maps hold now, except attachments (the caller knows the
    /// interfaces: see [`Dataplane::pinned_link_program`]). Per-VM arrays are read for slots
    /// in use only: the rest hold nothing a frame can reach.
    pub fn read_image(&self) -> anyhow::Result<Image> {
        let mut img = Image::default();
        for (cpu, prog) in self.cpu_queues()? {
            if prog.is_some() {
                img.cpu_queues.insert(cpu);
            }
        }
        {
            let flood: DevMapHash<_> = DevMapHash::try_from(self.map(registry::FLOOD::NAME)?)?;
            for ifindex in self.switch_ports()? {
                let filter = flood
                    .get(ifindex, 0)
                    .ok()
                    .and_then(|v| v.prog_id)
                    .map(|id| id.get());
                img.tx_ports.insert(
                    ifindex,
                    TxPort {
                        flood_filter: filter,
                    },
                );
            }
        }
        let engines = self.array::<registry::ENGINES>()?;
        for e in 0..MAX_ENGINES {
            put(&mut img.engines, e, engines.get(&e, 0)?);
        }
        let tables = self.array::<registry::RSS_TABLES>()?;
        for i in 0..MAX_ENGINES * MAX_TABLE_SIZE {
            put(&mut img.rss_tables, i, tables.get(&i, 0)?);
        }
        let teams = self.array::<registry::TEAMS>()?;
        for t in 0..MAX_TEAMS {
            put(&mut img.teams, t, teams.get(&t, 0)?);
        }
        let team_tables = self.array::<registry::TEAM_TABLES>()?;
        for i in 0..MAX_TEAMS * TEAM_TABLE_SIZE {
            put(&mut img.team_tables, i, team_tables.get(&i, 0)?);
        }
        img.carrier_watch = self
            .hash::<registry::CARRIER_WATCH>()?
            .iter()
            .filter_map(Result::ok)
            .collect();
        let member_up = self.array::<registry::MEMBER_UP>()?;
        for i in 0..MAX_TEAMS * MAX_TEAM_MEMBERS {
            put(&mut img.member_up, i, member_up.get(&i, 0)?);
        }
        let records = self.array::<registry::VM_TABLE>()?;
        let mut in_use = BTreeSet::new();
        for slot in 0..MAX_VMS {
            let r = records.get(&slot, 0)?;
            if r.in_use != 0 {
                in_use.insert(slot);
            }
            put(&mut img.vm_records, slot, r);
        }
        let vm_team = self.array::<registry::VM_TEAM>()?;
        let vm_rss = self.array::<registry::VM_RSS>()?;
        for &slot in &in_use {
            put(&mut img.vm_team, slot, vm_team.get(&slot, 0)?);
            put(&mut img.vm_rss, slot, vm_rss.get(&slot, 0)?);
        }
        let ports = self.array::<registry::PORT_TABLE>()?;
        for slot in 0..MAX_PORTS {
            put(&mut img.port_records, slot, ports.get(&slot, 0)?);
        }
        img.rss_config = self.rss_config()?;
        img.macs = self.macs()?.into_iter().collect();
        img.ports = self.ports()?.into_iter().collect();
        // Only the slots of keys the hash maps hold: the reconciler writes a slot after its
        // key goes in and clears it before its key goes out, so no other slot holds anything.
        let mac_index = self.array::<registry::MAC_INDEX>()?;
        let mac_slots: BTreeSet<u32> = img.macs.keys().map(|m| mac_slot(*m)).collect();
        for slot in mac_slots {
            put(&mut img.mac_index, slot, mac_index.get(&slot, 0)?);
        }
        let port_index = self.array::<registry::PORT_INDEX>()?;
        let port_slots: BTreeSet<u32> = img.ports.keys().map(|i| port_slot(*i)).collect();
        for slot in port_slots {
            put(&mut img.port_index, slot, port_index.get(&slot, 0)?);
        }
        img.vnic = std::sync::Arc::new(self.read_vnic_image()?);
        Ok(img)
    }

    /// Adds to `img` the shaper's roots and classes on the interfaces `ours` names (ifindex →
    /// name): the uplinks this instance's pinned records know.
    pub fn read_shaper(
        &mut self,
        img: &mut Image,
        ours: &std::collections::BTreeMap<u32, String>,
    ) -> anyhow::Result<()> {
        let tc = self.tc()?;
        for ifindex in tc.roots()? {
            let Some(name) = ours.get(&ifindex) else {
                continue;
            };
            img.shaper_roots.insert(ifindex, name.clone());
            for (slot, (class, _)) in tc.classes(ifindex)? {
                img.shaper_classes.insert((ifindex, slot), class);
            }
        }
        Ok(())
    }

    /// Takes the configuration maps from `from` (what they hold) to `to`, with the
    /// reconciler's ordered writes, and returns what they hold now (`to` with its index
    /// slots). For tools and tests that write entries without a daemon; attachments are the
    /// caller's.
    pub fn write_image(&mut self, from: &Image, mut to: Image) -> anyhow::Result<Image> {
        to.index();
        for op in crate::policy::plan::diff(from, &to, &Default::default()) {
            if matches!(op, Op::Attach(..) | Op::Detach(..)) {
                continue;
            }
            self.execute(&op, XdpModePref::Native, None, None)?;
        }
        Ok(to)
    }

    /// Carries out one write. `mode` and `attached_prog` (the XDP program the interface runs
    /// now, from netlink) are for [`Op::Attach`].
    pub fn execute(
        &mut self,
        op: &Op,
        mode: XdpModePref,
        attached_prog: Option<u32>,
        attached_mode: Option<AttachMode>,
    ) -> anyhow::Result<Option<AttachOutcome>> {
        match op {
            Op::ResetVmCounters(slot) => {
                self.reset_vm_counters(*slot)?;
                self.reset_vm_cpu_counters(*slot)?;
                self.reset_team_vm_counters(*slot)?;
                self.reset_vm_bucket(*slot)?;
                // A slot's never-written entries read as zeros, which mean engine 0 and team
                // 0: a new VM starts from the real defaults.
                self.set_vm_rss(*slot, VmRss::default())?;
                self.set_vm_team(*slot, VmTeam::default())?;
            }
            Op::ResetPortCounters(slot) => self.reset_port_counters(*slot)?,
            Op::ResetBucketCounters(engine) => {
                self.reset_bucket_counters(*engine)?;
                for b in 0..MAX_TABLE_SIZE {
                    self.set_rss_bucket(bucket_index(*engine, b), 0)?;
                }
            }
            Op::SetCpuQueue(cpu) => self.set_cpu_queue(*cpu)?,
            Op::RemoveCpuQueue(cpu) => self.remove_cpu_queue(*cpu)?,
            Op::SetTxPort(ifindex, t) => {
                self.set_switch_port(*ifindex, t.flood_filter.is_some())?
            }
            Op::RemoveTxPort(ifindex) => self.remove_switch_port(*ifindex)?,
            Op::SetEngine(e, entry) => self.set_engine(*e, *entry)?,
            Op::SetRssBucket(i, cpu) => self.set_rss_bucket(*i, *cpu)?,
            Op::SetTeam(t, entry) => self.set_team(*t, *entry)?,
            Op::SetTeamBucket(i, member) => {
                self.array_mut::<registry::TEAM_TABLES>()?
                    .set(*i, *member, 0)
                    .with_context(|| format!("cannot write TEAM_TABLES[{i}]"))?;
            }
            Op::SetCarrierWatch(key, index) => {
                self.hash_mut::<registry::CARRIER_WATCH>()?
                    .insert(key, index, 0)
                    .context("cannot write CARRIER_WATCH")?;
            }
            Op::RemoveCarrierWatch(key) => {
                match self.hash_mut::<registry::CARRIER_WATCH>()?.remove(key) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(e).context("cannot delete from CARRIER_WATCH"),
                }
            }
            Op::SetMemberUp(index, since) => {
                self.array_mut::<registry::MEMBER_UP>()?
                    .set(*index, *since, 0)
                    .with_context(|| format!("cannot write MEMBER_UP[{index}]"))?;
            }
            Op::SetVmTeam(slot, entry) => self.set_vm_team(*slot, *entry)?,
            Op::SetVmRss(slot, entry) => self.set_vm_rss(*slot, *entry)?,
            Op::SetVmRecord(slot, r) => self.set_vm_record(*slot, *r)?,
            Op::SetPortRecord(slot, r) => self.set_port_record(*slot, *r)?,
            Op::SetRssConfig(c) => self.set_rss_config(*c)?,
            Op::SetMac(mac, owner) => self.set_mac(*mac, *owner)?,
            Op::RemoveMac(mac) => self.remove_mac(*mac)?,
            Op::SetPort(ifindex, entry) => self.set_port(*ifindex, *entry)?,
            Op::SetMacIndex(slot, v) => {
                self.array_mut::<registry::MAC_INDEX>()?
                    .set(*slot, *v, 0)
                    .with_context(|| format!("cannot write MAC_INDEX[{slot}]"))?;
            }
            Op::SetPortIndex(slot, v) => {
                self.array_mut::<registry::PORT_INDEX>()?
                    .set(*slot, *v, 0)
                    .with_context(|| format!("cannot write PORT_INDEX[{slot}]"))?;
            }
            Op::RemovePort(ifindex) => self.remove_port(*ifindex)?,
            Op::Attach(name, a) => {
                let attached = self
                    .attach(name, a.ifindex, a.role, mode, attached_prog)
                    .with_context(|| format!("attaching to {name}"))?;
                return Ok(Some(match attached {
                    Attached::Fresh(m) => AttachOutcome {
                        mode: Some(m),
                        fresh: true,
                    },
                    Attached::Adopted => AttachOutcome {
                        mode: attached_mode,
                        fresh: false,
                    },
                }));
            }
            Op::Detach(name) => self.detach(name)?,
            Op::SetShaperRoot(ifindex, name) => self.tc()?.ensure_root(*ifindex, name)?,
            Op::RemoveShaperRoot(ifindex) => self.tc()?.remove_root(*ifindex)?,
            Op::SetShaperClass((ifindex, slot), class) => {
                self.tc()?.set_class(*ifindex, *slot, class)?
            }
            Op::RemoveShaperClass((ifindex, slot)) => self.tc()?.remove_class(*ifindex, *slot)?,
            Op::Vnic(op) => self.execute_vnic(op)?,
            Op::ResetVnicCounters(slot) => self.reset_vnic_counters(*slot)?,
            Op::ResetRouteCounter(id) => self.reset_route_counter(*id)?,
        }
        Ok(None)
    }

    fn set_rss_bucket(&mut self, index: u32, cpu: u32) -> anyhow::Result<()> {
        self.array_mut::<registry::RSS_TABLES>()?
            .set(index, cpu, 0)
            .with_context(|| format!("cannot write RSS_TABLES[{index}]"))?;
        Ok(())
    }
}
