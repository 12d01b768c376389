//! The only code that talks to aya: loads the XDP object, attaches its programs, pins and
//! adopts maps and links, and reads and writes map entries.
//!
//! Everything lives under `/sys/fs/bpf/xnic/<instance>/`: `maps/<NAME>` for every map and
//! `links/<ifname>` for every attachment. Pinned links keep the programs attached when the
//! daemon exits or crashes; a new daemon loads a fresh copy of the programs against the pinned
//! maps and swaps it into each pinned link atomically, so forwarding never stops and counters
//! keep counting.

pub mod baseline;
mod bpffs;
pub mod counters;
mod execute;
pub mod objects;
pub mod testrun;

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, CpuMap, DevMapHash, HashMap as BpfHashMap, MapData, MapInfo, PerCpuArray,
        PerCpuValues,
    },
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use tracing::{info, warn};
use xnic_common::{
    limits::{DATAPLANE_ABI, MAX_MACS, MAX_PORTS, MAX_VMS},
    maps::{
        Counter, DataplaneInfo, MacKey, MacOwner, PortEntry, PortRecord, PortRole, VmCounters,
        VmRecord,
    },
    parse::Shape,
    rss::{
        CPUMAP_QUEUE_SIZE, EngineEntry, FLOW_SLOTS, FlowSlot, MAX_ENGINES, MAX_TABLE_SIZE,
        RssConfig, SteerCounter, VmRss, bucket_index,
    },
    team::{
        MAX_TEAM_MEMBERS, MAX_TEAMS, TEAM_TABLE_SIZE, TeamEntry, VmBucket, VmTeam, vm_member_index,
    },
    verdict::Reason,
};

pub use self::{
    bpffs::ensure_bpffs,
    counters::{Counters, PortCounters},
};
use crate::config::XdpModePref;
pub use xnic_proto::config::AttachMode;

/// Root of every instance's pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/xnic";

/// Where one instance's pins live.
#[derive(Clone, Debug)]
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new(instance: &str) -> PinDir {
        PinDir(Path::new(PIN_ROOT).join(instance))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn maps(&self) -> PathBuf {
        self.0.join("maps")
    }

    pub fn links(&self) -> PathBuf {
        self.0.join("links")
    }

    pub fn link(&self, ifname: &str) -> PathBuf {
        self.links().join(ifname)
    }

    pub fn exists(&self) -> bool {
        self.0.exists()
    }
}

/// The maps of the dataplane object, with the layout each must have. Pinned maps are checked
/// against this before a daemon adopts them.
const MAP_SHAPES: &[(&str, usize, usize, u32)] = &[
    ("PORTS", 4, size_of::<PortEntry>(), MAX_PORTS),
    ("MACS", size_of::<MacKey>(), size_of::<MacOwner>(), MAX_MACS),
    (
        "VERDICTS",
        4,
        size_of::<Counter>(),
        MAX_PORTS * Reason::COUNT as u32,
    ),
    (
        "SHAPES",
        4,
        size_of::<Counter>(),
        MAX_PORTS * Shape::COUNT as u32,
    ),
    ("VM_STATS", 4, size_of::<VmCounters>(), MAX_VMS),
    ("PORT_TABLE", 4, size_of::<PortRecord>(), MAX_PORTS),
    ("VM_TABLE", 4, size_of::<VmRecord>(), MAX_VMS),
    ("INFO", 4, size_of::<DataplaneInfo>(), 1),
    ("RSS_CONFIG", 4, size_of::<RssConfig>(), 1),
    ("VM_RSS", 4, size_of::<VmRss>(), MAX_VMS),
    ("ENGINES", 4, size_of::<EngineEntry>(), MAX_ENGINES),
    ("RSS_TABLES", 4, 4, MAX_ENGINES * MAX_TABLE_SIZE),
    ("FLOW_SLOTS", 4, size_of::<FlowSlot>(), FLOW_SLOTS),
    (
        "BUCKET_STATS",
        4,
        size_of::<Counter>(),
        MAX_ENGINES * MAX_TABLE_SIZE,
    ),
    ("VM_CPU_STATS", 4, size_of::<Counter>(), MAX_VMS),
    ("STEER_STATS", 4, 8, SteerCounter::COUNT as u32),
    ("VM_TEAM", 4, size_of::<VmTeam>(), MAX_VMS),
    ("VM_BUCKETS", 4, size_of::<VmBucket>(), MAX_VMS),
    ("TEAMS", 4, size_of::<TeamEntry>(), MAX_TEAMS),
    ("TEAM_TABLES", 4, 4, MAX_TEAMS * TEAM_TABLE_SIZE),
    (
        "TEAM_VM_STATS",
        4,
        size_of::<Counter>(),
        MAX_VMS * MAX_TEAM_MEMBERS,
    ),
    // bpf_devmap_val: ifindex and program fd/id.
    ("TX_PORTS", 4, 8, MAX_PORTS),
    ("FLOOD", 4, 8, MAX_PORTS),
];

/// What [`Dataplane::attach`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new attachment (and pin) was made in this mode.
    Fresh(AttachMode),
    /// A pinned attachment from an earlier daemon now runs this daemon's program.
    Adopted,
}

pub struct Dataplane {
    ebpf: Ebpf,
    /// Handles of its own on the counter maps (opened from the pins).
    counters: Counters,
    pins: PinDir,
    /// Whether this daemon created the pin directory (so a failed start can remove it).
    created: bool,
    nr_cpus: usize,
}

impl Dataplane {
    /// Loads the programs against the instance's pinned maps, creating and pinning them when
    /// this is the instance's first start.
    pub fn open(instance: &str, ebpf_log_level: u8) -> anyhow::Result<Dataplane> {
        ensure_bpffs()?;
        let pins = PinDir::new(instance);
        let created = !pins.exists();
        if !created {
            check_pinned_maps(&pins)?;
        }
        for dir in [pins.maps(), pins.links()] {
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create pin directory {}", dir.display()))?;
        }
        let result = Self::load(pins.clone(), created, ebpf_log_level);
        if result.is_err() && created {
            let _ = fs::remove_dir_all(pins.path());
        }
        result
    }

    fn load(pins: PinDir, created: bool, ebpf_log_level: u8) -> anyhow::Result<Dataplane> {
        let nr_cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pins.maps())
            .override_global("AYA_LOG_LEVEL", &ebpf_log_level, true)
            // The kernel sizes a CPU map to the CPUs that can exist, no more.
            .map_max_entries("CPUMAP", nr_cpus as u32)
            .load(objects::DATAPLANE)
            .context("loading the XDP object failed")?;
        for name in [
            program_name(PortRole::Uplink),
            program_name(PortRole::Vm),
            CPUMAP_PROGRAM,
            FLOOD_PROGRAM,
        ] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("the XDP object has no program {name}"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel rejected XDP program {name}"))?;
        }
        let counters = Counters::open(&pins)?;
        let mut dp = Dataplane {
            ebpf,
            counters,
            pins,
            created,
            nr_cpus,
        };
        let info = dp.info()?;
        if info.abi == 0 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut map: Array<_, DataplaneInfo> = Array::try_from(dp.map_mut("INFO")?)?;
            map.set(
                0,
                DataplaneInfo {
                    abi: DATAPLANE_ABI,
                    _pad: 0,
                    created_unix: now,
                },
                0,
            )?;
        }
        Ok(dp)
    }

    /// Whether this daemon created the pinned maps (a first start) rather than adopting them.
    pub fn created(&self) -> bool {
        self.created
    }

    pub fn pins(&self) -> &PinDir {
        &self.pins
    }

    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// The loaded object, for the eBPF log reader.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    pub fn info(&self) -> anyhow::Result<DataplaneInfo> {
        let map: Array<_, DataplaneInfo> = Array::try_from(self.map("INFO")?)?;
        Ok(map.get(&0, 0)?)
    }

    /// Attaches the program for `role` to `ifname`, or adopts the pinned attachment an
    /// earlier daemon left there by swapping this daemon's program into it.
    ///
    /// `attached_prog_id` is the id of the XDP program the interface runs now (from netlink),
    /// which tells whether a pinned link still belongs to this interface.
    pub fn attach(
        &mut self,
        ifname: &str,
        ifindex: u32,
        role: PortRole,
        mode: XdpModePref,
        attached_prog_id: Option<u32>,
    ) -> anyhow::Result<Attached> {
        let pin = self.pins.link(ifname);
        let program = self.program_mut(role)?;
        if pin.exists() {
            let link = FdLink::from(
                PinnedLink::from_pin(&pin)
                    .with_context(|| format!("cannot open pinned link {}", pin.display()))?,
            );
            let link_prog = link.info().map(|i| i.program_id()).ok();
            if link_prog.is_some() && link_prog == attached_prog_id {
                let link = XdpLink::try_from(link)?;
                let id = program.attach_to_link(link).with_context(|| {
                    format!("cannot swap the new program into the XDP link on {ifname}")
                })?;
                // The pin keeps the link; holding no fd of our own makes removing the pin
                // enough to detach.
                drop(program.take_link(id)?);
                return Ok(Attached::Adopted);
            }
            // The interface was recreated or someone replaced the program: the pin is stale.
            warn!(interface = ifname, "removing stale XDP link pin");
            fs::remove_file(&pin)
                .with_context(|| format!("cannot remove stale pin {}", pin.display()))?;
        }
        let (link_id, mode) = match mode {
            XdpModePref::Native => (
                program.attach_to_if_index(ifindex, XdpMode::Driver),
                AttachMode::Native,
            ),
            XdpModePref::Generic => (
                program.attach_to_if_index(ifindex, XdpMode::Skb),
                AttachMode::Generic,
            ),
            XdpModePref::Auto => match program.attach_to_if_index(ifindex, XdpMode::Driver) {
                Ok(id) => (Ok(id), AttachMode::Native),
                Err(e) => {
                    warn!(
                        interface = ifname,
                        error = %e,
                        "native XDP attach failed; falling back to generic (slower) XDP"
                    );
                    (
                        program.attach_to_if_index(ifindex, XdpMode::Skb),
                        AttachMode::Generic,
                    )
                }
            },
        };
        let link_id = link_id.with_context(|| {
            format!(
                "cannot attach XDP to {ifname} ({mode:?} mode); is another XDP program attached?"
            )
        })?;
        let link: FdLink = program
            .take_link(link_id)?
            .try_into()
            .map_err(|_| anyhow!("the kernel attached XDP to {ifname} without a bpf_link (kernel older than 5.9?); xnic needs bpf_link to pin attachments"))?;
        link.pin(&pin)
            .with_context(|| format!("cannot pin the XDP link at {}", pin.display()))?;
        Ok(Attached::Fresh(mode))
    }

    /// Detaches from `ifname` by removing its pinned link (the kernel drops the attachment
    /// with the last reference).
    pub fn detach(&mut self, ifname: &str) -> anyhow::Result<()> {
        let pin = self.pins.link(ifname);
        match fs::remove_file(&pin) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", pin.display())),
        }
    }

    /// The program id behind the pinned link of `ifname`, if there is one.
    pub fn pinned_link_program(&self, ifname: &str) -> Option<u32> {
        let link = FdLink::from(PinnedLink::from_pin(self.pins.link(ifname)).ok()?);
        link.info().ok().map(|i| i.program_id())
    }

    /// Interface names with a pinned link.
    pub fn pinned_links(&self) -> anyhow::Result<Vec<String>> {
        list_dir(&self.pins.links())
    }

    fn program_mut(&mut self, role: PortRole) -> anyhow::Result<&mut Xdp> {
        let name = program_name(role);
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?)
    }

    /// Runs the program for `role` on `frame` with `BPF_PROG_TEST_RUN` (see [`testrun::run`]).
    pub fn test_run(
        &mut self,
        role: PortRole,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> anyhow::Result<testrun::TestRunOutcome> {
        testrun::run(self.program_mut(role)?, frame, ingress_ifindex, repeat)
    }

    /// Kernel ids of this daemon's programs.
    pub fn programs(&self) -> crate::policy::plan::Programs {
        let id = |name: &str| {
            self.ebpf
                .program(name)
                .and_then(|p| <&Xdp>::try_from(p).ok())
                .and_then(|p| p.info().ok())
                .map_or(0, |i| i.id())
        };
        crate::policy::plan::Programs {
            uplink: id(program_name(PortRole::Uplink)),
            vm: id(program_name(PortRole::Vm)),
            flood: id(FLOOD_PROGRAM),
        }
    }

    /// Kernel id of the program for `role`.
    pub fn program_id(&self, role: PortRole) -> Option<u32> {
        let prog: &Xdp = self.ebpf.program(program_name(role))?.try_into().ok()?;
        prog.info().ok().map(|i| i.id())
    }

    fn map(&self, name: &str) -> anyhow::Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .ok_or_else(|| anyhow!("the XDP object has no map {name}"))
    }

    fn map_mut(&mut self, name: &str) -> anyhow::Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow!("the XDP object has no map {name}"))
    }

    // --- ports -------------------------------------------------------------------------------

    pub fn set_port(&mut self, ifindex: u32, entry: PortEntry) -> anyhow::Result<()> {
        let mut map: BpfHashMap<_, u32, PortEntry> = BpfHashMap::try_from(self.map_mut("PORTS")?)?;
        map.insert(ifindex, entry, 0)
            .with_context(|| format!("cannot write PORTS[{ifindex}]"))?;
        Ok(())
    }

    pub fn remove_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        let mut map: BpfHashMap<_, u32, PortEntry> = BpfHashMap::try_from(self.map_mut("PORTS")?)?;
        match map.remove(&ifindex) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete PORTS[{ifindex}]")),
        }
    }

    pub fn ports(&self) -> anyhow::Result<Vec<(u32, PortEntry)>> {
        let map: BpfHashMap<_, u32, PortEntry> = BpfHashMap::try_from(self.map("PORTS")?)?;
        Ok(map.iter().filter_map(Result::ok).collect())
    }

    pub fn port_records(&self) -> anyhow::Result<Vec<(u32, PortRecord)>> {
        let map: Array<_, PortRecord> = Array::try_from(self.map("PORT_TABLE")?)?;
        Ok((0..MAX_PORTS)
            .filter_map(|slot| map.get(&slot, 0).ok().map(|r| (slot, r)))
            .filter(|(_, r)| r.role != 0)
            .collect())
    }

    pub fn set_port_record(&mut self, slot: u32, record: PortRecord) -> anyhow::Result<()> {
        let mut map: Array<_, PortRecord> = Array::try_from(self.map_mut("PORT_TABLE")?)?;
        map.set(slot, record, 0)?;
        Ok(())
    }

    // --- VMs ---------------------------------------------------------------------------------

    pub fn set_mac(&mut self, mac: [u8; 6], owner: MacOwner) -> anyhow::Result<()> {
        let mut map: BpfHashMap<_, MacKey, MacOwner> = BpfHashMap::try_from(self.map_mut("MACS")?)?;
        map.insert(MacKey::new(mac), owner, 0)
            .context("cannot write MACS (is the MAC table full?)")?;
        Ok(())
    }

    pub fn remove_mac(&mut self, mac: [u8; 6]) -> anyhow::Result<()> {
        let mut map: BpfHashMap<_, MacKey, MacOwner> = BpfHashMap::try_from(self.map_mut("MACS")?)?;
        match map.remove(&MacKey::new(mac)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).context("cannot delete from MACS"),
        }
    }

    pub fn macs(&self) -> anyhow::Result<Vec<([u8; 6], MacOwner)>> {
        let map: BpfHashMap<_, MacKey, MacOwner> = BpfHashMap::try_from(self.map("MACS")?)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.mac, v))
            .collect())
    }

    pub fn vm_records(&self) -> anyhow::Result<Vec<(u32, VmRecord)>> {
        let map: Array<_, VmRecord> = Array::try_from(self.map("VM_TABLE")?)?;
        Ok((0..MAX_VMS)
            .filter_map(|slot| map.get(&slot, 0).ok().map(|r| (slot, r)))
            .filter(|(_, r)| r.in_use != 0)
            .collect())
    }

    pub fn set_vm_record(&mut self, slot: u32, record: VmRecord) -> anyhow::Result<()> {
        let mut map: Array<_, VmRecord> = Array::try_from(self.map_mut("VM_TABLE")?)?;
        map.set(slot, record, 0)?;
        Ok(())
    }

    // --- RSS steering ------------------------------------------------------------------------

    pub fn rss_config(&self) -> anyhow::Result<RssConfig> {
        let map: Array<_, RssConfig> = Array::try_from(self.map("RSS_CONFIG")?)?;
        Ok(map.get(&0, 0)?)
    }

    pub fn set_rss_config(&mut self, config: RssConfig) -> anyhow::Result<()> {
        let mut map: Array<_, RssConfig> = Array::try_from(self.map_mut("RSS_CONFIG")?)?;
        map.set(0, config, 0)?;
        Ok(())
    }

    /// CPUs with a CPU-map queue, and the program id each runs.
    pub fn cpu_queues(&self) -> anyhow::Result<Vec<(u32, Option<u32>)>> {
        let map: CpuMap<_> = CpuMap::try_from(self.map("CPUMAP")?)?;
        Ok((0..map.len())
            .filter_map(|cpu| {
                let v = map.get(cpu, 0).ok()?;
                (v.queue_size > 0).then(|| (cpu, v.prog_id.map(|p| p.get())))
            })
            .collect())
    }

    /// Gives `cpu` a CPU-map queue running this daemon's CPU-map program.
    pub fn set_cpu_queue(&mut self, cpu: u32) -> anyhow::Result<()> {
        let prog: &Xdp = self
            .ebpf
            .program(CPUMAP_PROGRAM)
            .ok_or_else(|| anyhow!("no program {CPUMAP_PROGRAM}"))?
            .try_into()?;
        let fd = prog.fd()?.try_clone()?;
        let mut map: CpuMap<_> = CpuMap::try_from(self.map_mut("CPUMAP")?)?;
        map.set(cpu, CPUMAP_QUEUE_SIZE, Some(&fd), 0)
            .with_context(|| format!("cannot create the CPU-map queue for CPU {cpu}"))?;
        Ok(())
    }

    /// Removes `cpu`'s CPU-map queue (a zero-size entry is a deletion).
    pub fn remove_cpu_queue(&mut self, cpu: u32) -> anyhow::Result<()> {
        let mut map: CpuMap<_> = CpuMap::try_from(self.map_mut("CPUMAP")?)?;
        map.set(cpu, 0, None, 0)
            .with_context(|| format!("cannot remove the CPU-map queue of CPU {cpu}"))?;
        Ok(())
    }

    pub fn vm_rss(&self, vm_slot: u32) -> anyhow::Result<VmRss> {
        let map: Array<_, VmRss> = Array::try_from(self.map("VM_RSS")?)?;
        Ok(map.get(&vm_slot, 0)?)
    }

    pub fn set_vm_rss(&mut self, vm_slot: u32, rss: VmRss) -> anyhow::Result<()> {
        let mut map: Array<_, VmRss> = Array::try_from(self.map_mut("VM_RSS")?)?;
        map.set(vm_slot, rss, 0)?;
        Ok(())
    }

    pub fn engine(&self, engine: u32) -> anyhow::Result<EngineEntry> {
        let map: Array<_, EngineEntry> = Array::try_from(self.map("ENGINES")?)?;
        Ok(map.get(&engine, 0)?)
    }

    pub fn set_engine(&mut self, engine: u32, entry: EngineEntry) -> anyhow::Result<()> {
        let mut map: Array<_, EngineEntry> = Array::try_from(self.map_mut("ENGINES")?)?;
        map.set(engine, entry, 0)?;
        Ok(())
    }

    /// The first `size` buckets of `engine`'s table.
    pub fn table(&self, engine: u32, size: u32) -> anyhow::Result<Vec<u32>> {
        let map: Array<_, u32> = Array::try_from(self.map("RSS_TABLES")?)?;
        (0..size)
            .map(|b| Ok(map.get(&bucket_index(engine, b), 0)?))
            .collect()
    }

    pub fn set_bucket(&mut self, engine: u32, bucket: u32, cpu: u32) -> anyhow::Result<()> {
        let mut map: Array<_, u32> = Array::try_from(self.map_mut("RSS_TABLES")?)?;
        map.set(bucket_index(engine, bucket), cpu, 0)?;
        Ok(())
    }

    pub fn reset_bucket_counters(&mut self, engine: u32) -> anyhow::Result<()> {
        let n = self.nr_cpus;
        let mut map: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(self.map_mut("BUCKET_STATS")?)?;
        for b in 0..MAX_TABLE_SIZE {
            map.set(
                bucket_index(engine, b),
                PerCpuValues::try_from(vec![Counter::default(); n])?,
                0,
            )?;
        }
        Ok(())
    }

    pub fn reset_vm_cpu_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        let n = self.nr_cpus;
        let mut map: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(self.map_mut("VM_CPU_STATS")?)?;
        map.set(
            slot,
            PerCpuValues::try_from(vec![Counter::default(); n])?,
            0,
        )?;
        Ok(())
    }

    // --- teaming ----------------------------------------------------------------------------

    pub fn vm_team(&self, vm_slot: u32) -> anyhow::Result<VmTeam> {
        let map: Array<_, VmTeam> = Array::try_from(self.map("VM_TEAM")?)?;
        Ok(map.get(&vm_slot, 0)?)
    }

    pub fn set_vm_team(&mut self, vm_slot: u32, entry: VmTeam) -> anyhow::Result<()> {
        let mut map: Array<_, VmTeam> = Array::try_from(self.map_mut("VM_TEAM")?)?;
        map.set(vm_slot, entry, 0)?;
        Ok(())
    }

    /// Empties VM `slot`'s token bucket (a new allocation starts with a full burst).
    pub fn reset_vm_bucket(&mut self, vm_slot: u32) -> anyhow::Result<()> {
        let mut map: Array<_, VmBucket> = Array::try_from(self.map_mut("VM_BUCKETS")?)?;
        map.set(vm_slot, VmBucket::default(), 0)?;
        Ok(())
    }

    pub fn team(&self, team: u32) -> anyhow::Result<TeamEntry> {
        let map: Array<_, TeamEntry> = Array::try_from(self.map("TEAMS")?)?;
        Ok(map.get(&team, 0)?)
    }

    pub fn set_team(&mut self, team: u32, entry: TeamEntry) -> anyhow::Result<()> {
        let mut map: Array<_, TeamEntry> = Array::try_from(self.map_mut("TEAMS")?)?;
        map.set(team, entry, 0)?;
        Ok(())
    }

    /// Writes the entries of team `team`'s flow table that differ from `table`.
    /// Writes team `team`'s flow table: the entries that differ from `before` (what was
    /// last written), or all of them.
    pub fn set_team_table(
        &mut self,
        team: u32,
        table: &[u32],
        before: Option<&[u32]>,
    ) -> anyhow::Result<()> {
        let mut map: Array<_, u32> = Array::try_from(self.map_mut("TEAM_TABLES")?)?;
        for (b, &member) in table.iter().enumerate() {
            if before.and_then(|old| old.get(b)) != Some(&member) {
                map.set(team * TEAM_TABLE_SIZE + b as u32, member, 0)?;
            }
        }
        Ok(())
    }

    pub fn reset_team_vm_counters(&mut self, vm_slot: u32) -> anyhow::Result<()> {
        let n = self.nr_cpus;
        let mut map: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(self.map_mut("TEAM_VM_STATS")?)?;
        for m in 0..MAX_TEAM_MEMBERS {
            map.set(
                vm_member_index(vm_slot, m),
                PerCpuValues::try_from(vec![Counter::default(); n])?,
                0,
            )?;
        }
        Ok(())
    }

    /// Makes `ifindex` a target of switched frames (`TX_PORTS`) and of broadcasts (`FLOOD`;
    /// team uplinks there run the flood filter).
    pub fn set_switch_port(&mut self, ifindex: u32, team_uplink: bool) -> anyhow::Result<()> {
        {
            let mut tx: DevMapHash<_> = DevMapHash::try_from(self.map_mut("TX_PORTS")?)?;
            tx.insert(ifindex, ifindex, None, 0)
                .with_context(|| format!("cannot add ifindex {ifindex} to TX_PORTS"))?;
        }
        let filter = if team_uplink {
            let prog: &Xdp = self
                .ebpf
                .program(FLOOD_PROGRAM)
                .ok_or_else(|| anyhow!("no program {FLOOD_PROGRAM}"))?
                .try_into()?;
            Some(prog.fd()?.try_clone()?)
        } else {
            None
        };
        let mut flood: DevMapHash<_> = DevMapHash::try_from(self.map_mut("FLOOD")?)?;
        flood
            .insert(ifindex, ifindex, filter.as_ref(), 0)
            .with_context(|| format!("cannot add ifindex {ifindex} to FLOOD"))?;
        Ok(())
    }

    /// ifindexes in `TX_PORTS`.
    pub fn switch_ports(&self) -> anyhow::Result<Vec<u32>> {
        let map: DevMapHash<_> = DevMapHash::try_from(self.map("TX_PORTS")?)?;
        Ok(map.keys().filter_map(Result::ok).collect())
    }

    pub fn remove_switch_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        for name in ["TX_PORTS", "FLOOD"] {
            let mut map: DevMapHash<_> = DevMapHash::try_from(self.map_mut(name)?)?;
            match map.remove(ifindex) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    // --- counters ----------------------------------------------------------------------------

    /// Zeroes a port slot's counters, so a reused slot starts from nothing.
    pub fn reset_port_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        let n = self.nr_cpus;
        let mut verdicts: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(self.map_mut("VERDICTS")?)?;
        for r in Reason::ALL {
            verdicts.set(
                xnic_common::maps::verdict_index(slot, r),
                PerCpuValues::try_from(vec![Counter::default(); n])?,
                0,
            )?;
        }
        let mut shapes: PerCpuArray<_, Counter> = PerCpuArray::try_from(self.map_mut("SHAPES")?)?;
        for s in Shape::ALL {
            shapes.set(
                xnic_common::maps::shape_index(slot, s),
                PerCpuValues::try_from(vec![Counter::default(); n])?,
                0,
            )?;
        }
        Ok(())
    }

    pub fn reset_vm_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        let n = self.nr_cpus;
        let mut map: PerCpuArray<_, VmCounters> = PerCpuArray::try_from(self.map_mut("VM_STATS")?)?;
        map.set(
            slot,
            PerCpuValues::try_from(vec![VmCounters::default(); n])?,
            0,
        )?;
        Ok(())
    }

    /// Counters of `slot`, summed over CPUs, plus each CPU's share of the slot's frames
    /// (added into `per_cpu`, one entry per possible CPU).
    pub fn port_counters(
        &self,
        slot: u32,
        per_cpu: &mut [Counter],
    ) -> anyhow::Result<PortCounters> {
        self.counters.port(slot, per_cpu)
    }

    pub fn vm_counters(&self, slot: u32) -> anyhow::Result<VmCounters> {
        self.counters.vm(slot)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// The program each CPU-map entry runs on its CPU.
const CPUMAP_PROGRAM: &str = "xnic_cpumap";

/// The program each team uplink's `FLOOD` entry runs on broadcast copies.
const FLOOD_PROGRAM: &str = "xnic_flood";

pub fn program_name(role: PortRole) -> &'static str {
    match role {
        PortRole::Uplink => "xnic_uplink",
        PortRole::Vm => "xnic_vm",
    }
}

/// Refuses pinned maps this daemon would misread: another ABI version, or another layout.
fn check_pinned_maps(pins: &PinDir) -> anyhow::Result<()> {
    let info_pin = pins.maps().join("INFO");
    if info_pin.exists() {
        let data = MapData::from_pin(&info_pin)
            .with_context(|| format!("cannot open {}", info_pin.display()))?;
        let map: Array<_, DataplaneInfo> = Array::try_from(aya::maps::Map::Array(data))?;
        let info = map.get(&0, 0)?;
        if info.abi != 0 && info.abi != DATAPLANE_ABI {
            bail!(
                "the pinned dataplane in {} has layout version {}, this xnic uses version {}; \
                 remove it with `xnic down` (this interrupts forwarding) and start again",
                pins.path().display(),
                info.abi,
                DATAPLANE_ABI
            );
        }
    }
    for (name, key, value, max) in MAP_SHAPES {
        let pin = pins.maps().join(name);
        if !pin.exists() {
            continue;
        }
        let info =
            MapInfo::from_pin(&pin).with_context(|| format!("cannot open {}", pin.display()))?;
        if (
            info.key_size() as usize,
            info.value_size() as usize,
            info.max_entries(),
        ) != (*key, *value, *max)
        {
            bail!(
                "pinned map {} has key/value size {}/{} and {} entries, this xnic expects \
                 {key}/{value} and {max}; remove it with `xnic down` (this interrupts \
                 forwarding) and start again",
                pin.display(),
                info.key_size(),
                info.value_size(),
                info.max_entries()
            );
        }
    }
    Ok(())
}

fn list_dir(dir: &Path) -> anyhow::Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot list {}", dir.display())),
    }
}

/// What [`teardown`] removed.
#[derive(Debug, Default)]
pub struct Teardown {
    pub links: Vec<String>,
    pub maps: Vec<String>,
}

/// Removes everything an instance pinned: links first (which detaches its programs from every
/// interface), then maps, then the directory. Works whether or not a daemon runs.
pub fn teardown(instance: &str) -> anyhow::Result<Teardown> {
    let pins = PinDir::new(instance);
    let mut done = Teardown::default();
    if !pins.exists() {
        return Ok(done);
    }
    for link in list_dir(&pins.links())? {
        let path = pins.link(&link);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        info!(interface = %link, "detached");
        done.links.push(link);
    }
    for map in list_dir(&pins.maps())? {
        let path = pins.maps().join(&map);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        done.maps.push(map);
    }
    for dir in [pins.links(), pins.maps(), pins.path().to_owned()] {
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", dir.display())),
        }
    }
    // Leave /sys/fs/bpf/xnic itself only if another instance still uses it.
    let _ = fs::remove_dir(PIN_ROOT);
    Ok(done)
}

/// Instances with pins on this host.
pub fn pinned_instances() -> anyhow::Result<Vec<String>> {
    list_dir(Path::new(PIN_ROOT))
}
