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
pub mod dry_run;
mod execute;
mod flows;
mod monitor;
pub use flows::{FlowReader, TableFlow};
pub mod objects;
pub mod qdisc;
pub mod registry;
mod rings;
pub use monitor::{Monitor, MonitorSettings, Watch};
pub use rings::RingsMaps;
pub mod testrun;
mod trace;
pub mod upgrade;
mod vnic;
pub use vnic::VnicReader;

use std::{
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, CpuMap, DevMapHash, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues,
        ProgramArray,
    },
    programs::{
        SchedClassifier, TcAttachType, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
use tracing::{info, warn};
use xnic_common::{
    ctx::Call,
    flow::DEFAULT_MAX_FLOWS,
    limits::{DATAPLANE_ABI, MAX_PORTS, MAX_VMS},
    maps::{
        Counter, DataplaneInfo, LayoutInfo, MacKey, MacOwner, PortEntry, PortRecord, PortRole,
        VmCounters, VmRecord,
    },
    parse::Shape,
    rss::{CPUMAP_QUEUE_SIZE, EngineEntry, MAX_TABLE_SIZE, RssConfig, VmRss, bucket_index},
    team::{MAX_TEAM_MEMBERS, TEAM_TABLE_SIZE, TeamEntry, VmBucket, VmTeam, vm_member_index},
    verdict::Reason,
};

use self::registry::Registered;
pub use self::{
    bpffs::{ensure_bpffs, ensure_tracefs},
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

    /// Where each daemon pins its tables of tail-called stages (`calls/<entry program id>`,
    /// `calls/cpu-<CPU-map program id>`).
    pub fn calls(&self) -> PathBuf {
        self.0.join("calls")
    }

    /// Where the shaper's tc links on VM ports are pinned (`shaper/<ifname>`).
    pub fn shaper(&self) -> PathBuf {
        self.0.join("shaper")
    }

    pub fn shaper_link(&self, ifname: &str) -> PathBuf {
        self.shaper().join(ifname)
    }

    /// Where the fast path's tc egress links are pinned (`flows/<ifname>`), one per port.
    pub fn flow_exits(&self) -> PathBuf {
        self.0.join("flows")
    }

    pub fn flow_exit_link(&self, ifname: &str) -> PathBuf {
        self.flow_exits().join(ifname)
    }

    /// Where the tracepoint links are pinned (`trace/<program>`).
    pub fn trace(&self) -> PathBuf {
        self.0.join("trace")
    }

    pub fn exists(&self) -> bool {
        self.0.exists()
    }
}

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
    /// The family versions of an older pinned dataplane this daemon is upgrading, until
    /// [`Dataplane::finish_start`].
    upgrading: Option<[u16; xnic_common::mapdefs::FAMILY_SLOTS]>,
    /// Whether the kernel's carrier hook is attached, or why not.
    carrier_hook: Result<(), String>,
    /// The shaper's netlink socket, opened at first use (by the thread that writes, in the
    /// uplinks' namespace).
    tc: Option<qdisc::Tc>,
}

/// The shaper's tc program on VM ports' ingress.
pub const SHAPE_PROGRAM: &str = "xnic_shape";

/// Whether a map error is "no such key" (deleting what is already gone is fine): aya's own
/// error for hash maps, the kernel's ENOENT for device maps.
fn key_missing(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Removes a pin; one that is not there is fine.
fn remove_pin(pin: &Path) -> anyhow::Result<()> {
    match fs::remove_file(pin) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", pin.display())),
    }
}

/// The fast path's tc program on every port's egress (promoting flows' packets leaving the
/// kernel).
pub const FLOW_EXIT_PROGRAM: &str = "xnic_flow_exit";

/// The fast path's device-map program (its frames leaving).
pub const FLOW_TX_PROGRAM: &str = "xnic_flow_tx";

/// Every XDP program of the dataplane object, loaded in this order.
const PROGRAMS: &[&str] = &[
    "xnic_uplink",
    "xnic_vm",
    "xnic_team",
    "xnic_steer",
    "xnic_decap",
    "xnic_vnic",
    "xnic_vnic_out",
    "xnic_worker_vnic",
    "xnic_worker_vnic_out",
    CPUMAP_PROGRAM,
    FLOOD_PROGRAM,
    FLOW_TX_PROGRAM,
];

/// The tc programs.
const TC_PROGRAMS: &[&str] = &[SHAPE_PROGRAM, FLOW_EXIT_PROGRAM];

impl Dataplane {
    /// Loads the programs against the instance's pinned maps, creating and pinning them when
    /// this is the instance's first start, and upgrading them when an older xnic pinned
    /// them (see [`upgrade`]).
    pub fn open(instance: &str, ebpf_log_level: u8) -> anyhow::Result<Dataplane> {
        Self::open_sized(instance, ebpf_log_level, DEFAULT_MAX_FLOWS)
    }

    /// [`Dataplane::open`] with a flow table of `max_flows` flows, if this start creates it
    /// (a pinned table keeps the size it was made with).
    pub fn open_sized(
        instance: &str,
        ebpf_log_level: u8,
        max_flows: u32,
    ) -> anyhow::Result<Dataplane> {
        ensure_bpffs()?;
        let pins = PinDir::new(instance);
        let created = !pins.exists();
        let found = if created {
            upgrade::Found::Nothing
        } else {
            upgrade::inspect(&pins)?
        };
        for dir in [
            pins.maps(),
            pins.links(),
            pins.calls(),
            pins.trace(),
            pins.shaper(),
            pins.flow_exits(),
        ] {
            fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create pin directory {}", dir.display()))?;
        }
        let result = Self::load(pins.clone(), created, &found, ebpf_log_level, max_flows);
        if result.is_err() && created {
            let _ = fs::remove_dir_all(pins.path());
        }
        result
    }

    fn load(
        pins: PinDir,
        created: bool,
        found: &upgrade::Found,
        ebpf_log_level: u8,
        max_flows: u32,
    ) -> anyhow::Result<Dataplane> {
        let nr_cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pins.maps())
            .override_global("AYA_LOG_LEVEL", &ebpf_log_level, true)
            // The kernel sizes a CPU map to the CPUs that can exist, no more.
            .map_max_entries(registry::CPUMAP::NAME, nr_cpus as u32)
            // The flow table is as large as the configuration says (when this start makes it).
            .map_max_entries(registry::FLOWS::NAME, 2 * max_flows)
            .map_max_entries(registry::FLOW_STATE::NAME, max_flows)
            .map_max_entries(registry::FLOW_LIVE::NAME, max_flows)
            .load(objects::DATAPLANE)
            .context("loading the XDP object failed")?;
        load_xdp(&mut ebpf, PROGRAMS.iter().copied(), "XDP program")?;
        for name in TC_PROGRAMS {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("the XDP object has no program {name}"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel rejected tc program {name}"))?;
        }
        let counters = Counters::open(&pins)?;
        let mut dp = Dataplane {
            ebpf,
            counters,
            pins,
            created,
            nr_cpus,
            upgrading: None,
            carrier_hook: Err("not attached yet".into()),
            tc: None,
        };
        dp.fill_calls()?;
        if let Err(e) = dp.attach_tracepoints() {
            warn!(error = %format!("{e:#}"), "frames the kernel drops after a redirect will not be counted");
        }
        dp.carrier_hook = match dp.attach_carrier_hook() {
            Ok(()) => Ok(()),
            Err(e) => {
                let detail = format!("{e:#}");
                warn!(error = %detail, "the carrier hook is off: dead team uplinks are found at the first redirect the kernel cannot send");
                // EPERM on a tracing program: the kernel (or its lockdown) refuses them all.
                let why = if detail.contains("Operation not permitted") {
                    "this kernel refuses tracing programs (EPERM)".to_string()
                } else {
                    detail
                };
                Err(why)
            }
        };
        match found {
            upgrade::Found::Nothing => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                dp.write_layout(now)?;
            }
            upgrade::Found::Current => {
                if dp.info()?.abi == 0 {
                    dp.write_layout(0)?;
                }
            }
            upgrade::Found::Older { abi, versions } => {
                info!(
                    from = abi,
                    to = DATAPLANE_ABI,
                    "upgrading the pinned dataplane in place"
                );
                upgrade::migrate_entries(&dp.pins, versions)?;
                dp.upgrading = Some(*versions);
            }
        }
        Ok(dp)
    }

    /// When the kernel's hooks last marked each team member down (`MEMBER_DOWN`, by
    /// `member_index`; members never marked are left out).
    pub fn member_down_marks(&self) -> anyhow::Result<Vec<(u32, u64)>> {
        let map = self.array::<registry::MEMBER_DOWN>()?;
        let n = xnic_common::team::MAX_TEAMS * xnic_common::team::MAX_TEAM_MEMBERS;
        let mut marks = Vec::new();
        for i in 0..n {
            let at = map.get(&i, 0)?;
            if at != 0 {
                marks.push((i, at));
            }
        }
        Ok(marks)
    }

    /// Marks a team member down at `at_ns`, as the kernel's hooks do when it cannot transmit
    /// (for tests and tools; the daemon never writes this map).
    pub fn mark_member_down(&mut self, index: u32, at_ns: u64) -> anyhow::Result<()> {
        self.array_mut::<registry::MEMBER_DOWN>()?
            .set(index, at_ns, 0)
            .with_context(|| format!("cannot write MEMBER_DOWN[{index}]"))?;
        Ok(())
    }

    /// Whether the kernel's carrier hook marks team members down (else failover waits for
    /// the daemon's netlink events), and why not.
    pub fn carrier_hook(&self) -> Result<(), &str> {
        self.carrier_hook
            .as_ref()
            .map(|_| ())
            .map_err(String::as_str)
    }

    /// Records this daemon's layout: `INFO` (with the creation time, or the one it had) and
    /// every family's version in `LAYOUT`.
    fn write_layout(&mut self, created_unix: u64) -> anyhow::Result<()> {
        let created_unix = match self.info()?.created_unix {
            0 => created_unix,
            t => t,
        };
        self.array_mut::<registry::INFO>()?.set(
            0,
            DataplaneInfo {
                abi: DATAPLANE_ABI,
                _pad: 0,
                created_unix,
            },
            0,
        )?;
        self.array_mut::<registry::LAYOUT>()?.set(
            0,
            LayoutInfo {
                versions: upgrade::current_versions(),
            },
            0,
        )?;
        Ok(())
    }

    /// Fills this daemon's tables of tail-called stages and pins each under its own name, so
    /// an older daemon's programs keep theirs while they run: `CALLS` until the links move to
    /// this daemon's entry programs, `WORKER_CALLS` while a CPU's queue runs its CPU-map
    /// program.
    fn fill_calls(&mut self) -> anyhow::Result<()> {
        let entry: Vec<(Call, &str)> = Call::ALL.iter().map(|c| (*c, c.program())).collect();
        let id = self.program_id(PortRole::Uplink).unwrap_or(0);
        self.fill_stage_table(registry::CALLS::NAME, &entry, id.to_string())?;
        let worker: Vec<(Call, &str)> = Call::ON_WORKER
            .iter()
            .filter_map(|c| Some((*c, c.worker_program()?)))
            .collect();
        let id = self.cpumap_program_id()?;
        self.fill_stage_table(registry::WORKER_CALLS::NAME, &worker, worker_pin(id))
    }

    /// Pins program array `table` at `calls/<pin>` and puts each stage's program in it.
    fn fill_stage_table(
        &mut self,
        table: &str,
        stages: &[(Call, &str)],
        pin: String,
    ) -> anyhow::Result<()> {
        let mut fds = Vec::new();
        for (call, name) in stages {
            let prog: &Xdp = self
                .ebpf
                .program(name)
                .ok_or_else(|| anyhow!("the XDP object has no program {name}"))?
                .try_into()?;
            fds.push((*call, *name, prog.fd()?.try_clone()?));
        }
        let path = self.pins.calls().join(pin);
        let map = self
            .ebpf
            .map_mut(table)
            .ok_or_else(|| anyhow!("the XDP object has no map {table}"))?;
        map.pin(&path)
            .with_context(|| format!("cannot pin the stage table at {}", path.display()))?;
        let mut calls: ProgramArray<_> = ProgramArray::try_from(map)?;
        for (call, name, fd) in &fds {
            calls
                .set(*call as u32, fd, 0)
                .with_context(|| format!("cannot put stage {name} in {table}"))?;
        }
        Ok(())
    }

    /// Kernel id of this daemon's CPU-map program.
    fn cpumap_program_id(&self) -> anyhow::Result<u32> {
        let prog: &Xdp = self
            .ebpf
            .program(CPUMAP_PROGRAM)
            .ok_or_else(|| anyhow!("no program {CPUMAP_PROGRAM}"))?
            .try_into()?;
        Ok(prog.info()?.id())
    }

    /// Once every link runs this daemon's programs: removes the stage tables of earlier
    /// daemons that nothing runs any more and, when upgrading, adds the old layout's counters
    /// into the new ones and removes the maps it replaced.
    pub fn finish_start(&mut self) -> anyhow::Result<()> {
        self.remove_unused_stage_tables()?;
        if let Some(versions) = self.upgrading.take() {
            // CPU-map queues run their programs until replaced; the older ones count into
            // the maps being retired. Replacing a queue lets a frame queued on the old one
            // pass one queued later on the new one, once, at this upgrade only.
            for (cpu, prog) in self.cpu_queues()? {
                if prog.is_some() {
                    self.set_cpu_queue(cpu)?;
                }
            }
            self.remove_unused_stage_tables()?;
            upgrade::merge_counters(&self.pins, &versions)?;
            self.write_layout(0)?;
            let gone = upgrade::remove_replaced(&self.pins, &versions)?;
            info!(replaced = ?gone, layout = DATAPLANE_ABI, "dataplane upgraded in place");
        }
        Ok(())
    }

    /// Removes earlier daemons' stage tables: their entry programs' (no link runs them once
    /// this daemon started) and their CPU-map programs' once no CPU's queue runs those.
    fn remove_unused_stage_tables(&mut self) -> anyhow::Result<()> {
        let mut keep = vec![self.program_id(PortRole::Uplink).unwrap_or(0).to_string()];
        keep.push(worker_pin(self.cpumap_program_id()?));
        keep.extend(
            self.cpu_queues()?
                .into_iter()
                .filter_map(|(_, prog)| prog.map(worker_pin)),
        );
        for name in list_dir(&self.pins.calls())? {
            if !keep.contains(&name) {
                let path = self.pins.calls().join(&name);
                fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// The shaper's netlink socket.
    pub fn tc(&mut self) -> anyhow::Result<&mut qdisc::Tc> {
        if self.tc.is_none() {
            self.tc = Some(qdisc::Tc::open()?);
        }
        Ok(self.tc.as_mut().expect("opened above"))
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
        Ok(self.array::<registry::INFO>()?.get(&0, 0)?)
    }

    /// The family versions the pinned maps have.
    pub fn layout(&self) -> anyhow::Result<LayoutInfo> {
        Ok(self.array::<registry::LAYOUT>()?.get(&0, 0)?)
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
        // Before XDP, which passes shaped TCP up to it.
        if role == PortRole::Vm {
            let pin = self.pins.shaper_link(ifname);
            self.attach_tc(SHAPE_PROGRAM, ifname, TcAttachType::Ingress, &pin)?;
        }
        // The fast path's egress count, and its redirect target, before XDP may use them.
        let pin = self.pins.flow_exit_link(ifname);
        self.attach_tc(FLOW_EXIT_PROGRAM, ifname, TcAttachType::Egress, &pin)?;
        self.add_flow_port(ifindex)?;
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

    /// Attaches tc program `name` at `ifname`'s ingress or egress (TCX) and pins the link at
    /// `pin`, or swaps this daemon's program into the link an earlier daemon pinned there.
    fn attach_tc(
        &mut self,
        name: &str,
        ifname: &str,
        at: TcAttachType,
        pin: &Path,
    ) -> anyhow::Result<()> {
        let program = self.tc_program(name)?;
        if pin.exists() {
            let swapped = PinnedLink::from_pin(pin)
                .map_err(anyhow::Error::from)
                .and_then(|l| Ok(SchedClassifierLink::try_from(FdLink::from(l))?))
                .and_then(|l| Ok(program.attach_to_link(l)?));
            match swapped {
                Ok(id) => {
                    // As for XDP links: the pin keeps it.
                    drop(program.take_link(id)?);
                    return Ok(());
                }
                // The interface was recreated: its old link went with it.
                Err(e) => {
                    warn!(interface = ifname, error = %format!("{e:#}"), "removing stale tc link pin");
                    remove_pin(pin)?;
                }
            }
        }
        let id = program
            .attach(ifname, at)
            .with_context(|| format!("cannot attach tc program {name} to {ifname} ({at:?})"))?;
        let link: FdLink = program
            .take_link(id)?
            .try_into()
            .map_err(|_| anyhow!("the kernel attached tc to {ifname} without a bpf_link (kernel older than 6.6?); xnic needs TCX links to pin attachments"))?;
        link.pin(pin)
            .with_context(|| format!("cannot pin the tc link at {}", pin.display()))?;
        Ok(())
    }

    /// Detaches from `ifname` by removing its pinned links (the kernel drops an attachment
    /// with the last reference): XDP first, which passes shaped TCP up to the tc program.
    pub fn detach(&mut self, ifname: &str) -> anyhow::Result<()> {
        remove_pin(&self.pins.link(ifname))?;
        remove_pin(&self.pins.shaper_link(ifname))?;
        remove_pin(&self.pins.flow_exit_link(ifname))?;
        // A device that went away took its FLOW_TX entry with it.
        match nix::net::if_::if_nametoindex(ifname) {
            Ok(ifindex) => self.remove_flow_port(ifindex),
            Err(_) => Ok(()),
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

    /// Runs the shaper's tc program on `frame` with `BPF_PROG_TEST_RUN`.
    pub fn test_run_shaper(&mut self, frame: &[u8]) -> anyhow::Result<testrun::TcOutcome> {
        testrun::run_tc(self.tc_program(SHAPE_PROGRAM)?, frame)
    }

    /// Runs the fast path's tc egress program on `frame` (a packet leaving the kernel).
    pub fn test_run_flow_exit(&mut self, frame: &[u8]) -> anyhow::Result<i32> {
        Ok(testrun::run_tc(self.tc_program(FLOW_EXIT_PROGRAM)?, frame)?.action)
    }

    fn tc_program(&mut self, name: &str) -> anyhow::Result<&mut SchedClassifier> {
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("no program {name}"))?
            .try_into()?)
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

    /// Each program's verified instruction count (what the verifier processed), in load
    /// order.
    pub fn verified_instructions(&self) -> anyhow::Result<Vec<(&'static str, u32)>> {
        let mut counts = Vec::new();
        for name in PROGRAMS.iter().chain(TC_PROGRAMS).chain(&trace::PROGRAMS) {
            let prog = self
                .ebpf
                .program(name)
                .ok_or_else(|| anyhow!("no program {name}"))?;
            let info = match prog.info() {
                Ok(i) => i,
                // A tracing program this kernel would not take (its feature is off).
                Err(aya::programs::ProgramError::NotLoaded) => continue,
                Err(e) => return Err(e.into()),
            };
            let n = info
                .verified_instruction_count()
                .ok_or_else(|| anyhow!("the kernel does not report verified instructions"))?;
            counts.push((*name, n));
        }
        Ok(counts)
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

    // Typed handles on the registry's maps.

    fn hash<M: Registered>(&self) -> anyhow::Result<BpfHashMap<&MapData, M::Key, M::Value>>
    where
        M::Key: aya::Pod,
        M::Value: aya::Pod,
    {
        Ok(BpfHashMap::try_from(self.map(M::NAME)?)?)
    }

    fn hash_mut<M: Registered>(
        &mut self,
    ) -> anyhow::Result<BpfHashMap<&mut MapData, M::Key, M::Value>>
    where
        M::Key: aya::Pod,
        M::Value: aya::Pod,
    {
        Ok(BpfHashMap::try_from(self.map_mut(M::NAME)?)?)
    }

    fn array<M: Registered>(&self) -> anyhow::Result<Array<&MapData, M::Value>>
    where
        M::Value: aya::Pod,
    {
        Ok(Array::try_from(self.map(M::NAME)?)?)
    }

    fn array_mut<M: Registered>(&mut self) -> anyhow::Result<Array<&mut MapData, M::Value>>
    where
        M::Value: aya::Pod,
    {
        Ok(Array::try_from(self.map_mut(M::NAME)?)?)
    }

    /// Zeroes entry `index` of per-CPU array `M` on every CPU.
    fn zero_per_cpu<M: Registered>(&mut self, index: u32) -> anyhow::Result<()>
    where
        M::Value: aya::Pod + Default + Clone,
    {
        let n = self.nr_cpus;
        let mut map: PerCpuArray<_, M::Value> = PerCpuArray::try_from(self.map_mut(M::NAME)?)?;
        map.set(
            index,
            PerCpuValues::try_from(vec![M::Value::default(); n])?,
            0,
        )
        .with_context(|| format!("cannot zero {}[{index}]", M::NAME))?;
        Ok(())
    }

    // --- ports -------------------------------------------------------------------------------

    /// `PORTS_V2` alone: frames find ports through `PORT_INDEX` first, so everything else
    /// writes ports through an [`Image`](crate::policy::plan::Image).
    fn set_port(&mut self, ifindex: u32, entry: PortEntry) -> anyhow::Result<()> {
        self.hash_mut::<registry::PORTS_V2>()?
            .insert(ifindex, entry, 0)
            .with_context(|| format!("cannot write PORTS_V2[{ifindex}]"))?;
        Ok(())
    }

    fn remove_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        match self.hash_mut::<registry::PORTS_V2>()?.remove(&ifindex) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete PORTS_V2[{ifindex}]")),
        }
    }

    pub fn ports(&self) -> anyhow::Result<Vec<(u32, PortEntry)>> {
        Ok(self
            .hash::<registry::PORTS_V2>()?
            .iter()
            .filter_map(Result::ok)
            .collect())
    }

    pub fn port_records(&self) -> anyhow::Result<Vec<(u32, PortRecord)>> {
        let map = self.array::<registry::PORT_TABLE>()?;
        Ok((0..MAX_PORTS)
            .filter_map(|slot| map.get(&slot, 0).ok().map(|r| (slot, r)))
            .filter(|(_, r)| r.role != 0)
            .collect())
    }

    pub fn set_port_record(&mut self, slot: u32, record: PortRecord) -> anyhow::Result<()> {
        self.array_mut::<registry::PORT_TABLE>()?
            .set(slot, record, 0)?;
        Ok(())
    }

    // --- VMs ---------------------------------------------------------------------------------

    /// `MACS` alone (see [`Dataplane::set_port`]).
    fn set_mac(&mut self, mac: [u8; 6], owner: MacOwner) -> anyhow::Result<()> {
        self.hash_mut::<registry::MACS>()?
            .insert(MacKey::new(mac), owner, 0)
            .context("cannot write MACS (is the MAC table full?)")?;
        Ok(())
    }

    fn remove_mac(&mut self, mac: [u8; 6]) -> anyhow::Result<()> {
        match self.hash_mut::<registry::MACS>()?.remove(&MacKey::new(mac)) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).context("cannot delete from MACS"),
        }
    }

    pub fn macs(&self) -> anyhow::Result<Vec<([u8; 6], MacOwner)>> {
        Ok(self
            .hash::<registry::MACS>()?
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.mac, v))
            .collect())
    }

    pub fn vm_records(&self) -> anyhow::Result<Vec<(u32, VmRecord)>> {
        let map = self.array::<registry::VM_TABLE>()?;
        Ok((0..MAX_VMS)
            .filter_map(|slot| map.get(&slot, 0).ok().map(|r| (slot, r)))
            .filter(|(_, r)| r.in_use != 0)
            .collect())
    }

    pub fn set_vm_record(&mut self, slot: u32, record: VmRecord) -> anyhow::Result<()> {
        self.array_mut::<registry::VM_TABLE>()?
            .set(slot, record, 0)?;
        Ok(())
    }

    // --- RSS steering ------------------------------------------------------------------------

    pub fn rss_config(&self) -> anyhow::Result<RssConfig> {
        Ok(self.array::<registry::RSS_CONFIG>()?.get(&0, 0)?)
    }

    pub fn set_rss_config(&mut self, config: RssConfig) -> anyhow::Result<()> {
        self.array_mut::<registry::RSS_CONFIG>()?
            .set(0, config, 0)?;
        Ok(())
    }

    /// CPUs with a CPU-map queue, and the program id each runs.
    pub fn cpu_queues(&self) -> anyhow::Result<Vec<(u32, Option<u32>)>> {
        let map: CpuMap<_> = CpuMap::try_from(self.map(registry::CPUMAP::NAME)?)?;
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
        let mut map: CpuMap<_> = CpuMap::try_from(self.map_mut(registry::CPUMAP::NAME)?)?;
        map.set(cpu, CPUMAP_QUEUE_SIZE, Some(&fd), 0)
            .with_context(|| format!("cannot create the CPU-map queue for CPU {cpu}"))?;
        Ok(())
    }

    /// Removes `cpu`'s CPU-map queue (a zero-size entry is a deletion).
    pub fn remove_cpu_queue(&mut self, cpu: u32) -> anyhow::Result<()> {
        let mut map: CpuMap<_> = CpuMap::try_from(self.map_mut(registry::CPUMAP::NAME)?)?;
        map.set(cpu, 0, None, 0)
            .with_context(|| format!("cannot remove the CPU-map queue of CPU {cpu}"))?;
        Ok(())
    }

    pub fn vm_rss(&self, vm_slot: u32) -> anyhow::Result<VmRss> {
        Ok(self.array::<registry::VM_RSS>()?.get(&vm_slot, 0)?)
    }

    pub fn set_vm_rss(&mut self, vm_slot: u32, rss: VmRss) -> anyhow::Result<()> {
        self.array_mut::<registry::VM_RSS>()?.set(vm_slot, rss, 0)?;
        Ok(())
    }

    pub fn engine(&self, engine: u32) -> anyhow::Result<EngineEntry> {
        Ok(self.array::<registry::ENGINES>()?.get(&engine, 0)?)
    }

    pub fn set_engine(&mut self, engine: u32, entry: EngineEntry) -> anyhow::Result<()> {
        self.array_mut::<registry::ENGINES>()?
            .set(engine, entry, 0)?;
        Ok(())
    }

    /// The first `size` buckets of `engine`'s table.
    pub fn table(&self, engine: u32, size: u32) -> anyhow::Result<Vec<u32>> {
        let map = self.array::<registry::RSS_TABLES>()?;
        (0..size)
            .map(|b| Ok(map.get(&bucket_index(engine, b), 0)?))
            .collect()
    }

    pub fn set_bucket(&mut self, engine: u32, bucket: u32, cpu: u32) -> anyhow::Result<()> {
        self.array_mut::<registry::RSS_TABLES>()?
            .set(bucket_index(engine, bucket), cpu, 0)?;
        Ok(())
    }

    pub fn reset_bucket_counters(&mut self, engine: u32) -> anyhow::Result<()> {
        for b in 0..MAX_TABLE_SIZE {
            self.zero_per_cpu::<registry::BUCKET_STATS>(bucket_index(engine, b))?;
        }
        Ok(())
    }

    pub fn reset_vm_cpu_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        self.zero_per_cpu::<registry::VM_CPU_STATS>(slot)
    }

    // --- teaming ----------------------------------------------------------------------------

    pub fn vm_team(&self, vm_slot: u32) -> anyhow::Result<VmTeam> {
        Ok(self.array::<registry::VM_TEAM>()?.get(&vm_slot, 0)?)
    }

    pub fn set_vm_team(&mut self, vm_slot: u32, entry: VmTeam) -> anyhow::Result<()> {
        self.array_mut::<registry::VM_TEAM>()?
            .set(vm_slot, entry, 0)?;
        Ok(())
    }

    /// Empties VM `slot`'s token bucket (a new allocation starts with a full burst).
    pub fn reset_vm_bucket(&mut self, vm_slot: u32) -> anyhow::Result<()> {
        self.array_mut::<registry::VM_BUCKETS>()?
            .set(vm_slot, VmBucket::default(), 0)?;
        Ok(())
    }

    pub fn team(&self, team: u32) -> anyhow::Result<TeamEntry> {
        Ok(self.array::<registry::TEAMS>()?.get(&team, 0)?)
    }

    pub fn set_team(&mut self, team: u32, entry: TeamEntry) -> anyhow::Result<()> {
        self.array_mut::<registry::TEAMS>()?.set(team, entry, 0)?;
        Ok(())
    }

    /// Writes team `team`'s flow table: the entries that differ from `before` (what was
    /// last written), or all of them.
    pub fn set_team_table(
        &mut self,
        team: u32,
        table: &[u32],
        before: Option<&[u32]>,
    ) -> anyhow::Result<()> {
        let mut map = self.array_mut::<registry::TEAM_TABLES>()?;
        for (b, &member) in table.iter().enumerate() {
            if before.and_then(|old| old.get(b)) != Some(&member) {
                map.set(team * TEAM_TABLE_SIZE + b as u32, member, 0)?;
            }
        }
        Ok(())
    }

    pub fn reset_team_vm_counters(&mut self, vm_slot: u32) -> anyhow::Result<()> {
        for m in 0..MAX_TEAM_MEMBERS {
            self.zero_per_cpu::<registry::TEAM_VM_STATS>(vm_member_index(vm_slot, m))?;
        }
        Ok(())
    }

    /// Makes `ifindex` a target of switched frames (`TX_PORTS`) and of broadcasts (`FLOOD`;
    /// team uplinks there run the flood filter).
    pub fn set_switch_port(&mut self, ifindex: u32, team_uplink: bool) -> anyhow::Result<()> {
        {
            let mut tx: DevMapHash<_> =
                DevMapHash::try_from(self.map_mut(registry::TX_PORTS::NAME)?)?;
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
        let mut flood: DevMapHash<_> = DevMapHash::try_from(self.map_mut(registry::FLOOD::NAME)?)?;
        flood
            .insert(ifindex, ifindex, filter.as_ref(), 0)
            .with_context(|| format!("cannot add ifindex {ifindex} to FLOOD"))?;
        Ok(())
    }

    /// ifindexes in `TX_PORTS`.
    pub fn switch_ports(&self) -> anyhow::Result<Vec<u32>> {
        let map: DevMapHash<_> = DevMapHash::try_from(self.map(registry::TX_PORTS::NAME)?)?;
        Ok(map.keys().filter_map(Result::ok).collect())
    }

    /// Removes `ifindex` from the redirect maps. Already gone is fine: the kernel removes a
    /// device's entries itself when the device goes away (a VM port deleted with its VM).
    pub fn remove_switch_port(&mut self, ifindex: u32) -> anyhow::Result<()> {
        for name in [registry::TX_PORTS::NAME, registry::FLOOD::NAME] {
            let mut map: DevMapHash<_> = DevMapHash::try_from(self.map_mut(name)?)?;
            match map.remove(ifindex) {
                Ok(()) => {}
                Err(e) if key_missing(&e) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot delete {name}[{ifindex}]"));
                }
            }
        }
        Ok(())
    }

    // --- counters ----------------------------------------------------------------------------

    /// Zeroes a port slot's counters, so a reused slot starts from nothing.
    pub fn reset_port_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        for r in 0..Reason::SLOTS as u32 {
            self.zero_per_cpu::<registry::VERDICTS_V2>(slot * Reason::SLOTS as u32 + r)?;
        }
        for sh in 0..Shape::SLOTS as u32 {
            self.zero_per_cpu::<registry::SHAPES_V2>(slot * Shape::SLOTS as u32 + sh)?;
        }
        Ok(())
    }

    pub fn reset_vm_counters(&mut self, slot: u32) -> anyhow::Result<()> {
        self.zero_per_cpu::<registry::VM_STATS>(slot)
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

/// The name under `calls/` of the worker stage table CPU-map program `id` calls through.
fn worker_pin(id: u32) -> String {
    format!("cpu-{id}")
}

/// The program each team uplink's `FLOOD` entry runs on broadcast copies.
const FLOOD_PROGRAM: &str = "xnic_flood";

/// Loads each of the XDP programs `names` of `ebpf` into the kernel; `what` names them in
/// the error when the kernel refuses one.
fn load_xdp<'a>(
    ebpf: &mut Ebpf,
    names: impl IntoIterator<Item = &'a str>,
    what: &str,
) -> anyhow::Result<()> {
    for name in names {
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("the XDP object has no program {name}"))?
            .try_into()?;
        prog.load()
            .with_context(|| format!("the kernel rejected {what} {name}"))?;
    }
    Ok(())
}

pub fn program_name(role: PortRole) -> &'static str {
    match role {
        PortRole::Uplink => "xnic_uplink",
        PortRole::Vm => "xnic_vm",
    }
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

/// Empties the CPU map and the device maps, whose entries hold programs: those programs
/// hold the maps in turn, and the kernel frees such a cycle only when the entries go (it
/// does so for program arrays by itself, not for CPU and device maps). Without this every
/// dataplane taken down stayed in kernel memory, flow table and all.
fn release_programs(pins: &PinDir) {
    use xnic_common::mapdefs::{MAPS, MapKind};
    for spec in MAPS.iter().filter(|m| m.pinned) {
        let Ok(data) = MapData::from_pin(pins.maps().join(spec.name)) else {
            continue;
        };
        match spec.kind {
            MapKind::CpuMap => {
                if let Ok(mut cpus) = CpuMap::try_from(aya::maps::Map::CpuMap(data)) {
                    for cpu in 0..cpus.len() {
                        // A queue size of 0 removes the CPU's entry.
                        let _ = cpus.set(cpu, 0, None, 0);
                    }
                }
            }
            MapKind::DevMapHash => {
                if let Ok(mut ports) = DevMapHash::try_from(aya::maps::Map::DevMapHash(data)) {
                    let keys: Vec<u32> = ports.keys().filter_map(Result::ok).collect();
                    for k in keys {
                        let _ = ports.remove(k);
                    }
                }
            }
            _ => {}
        }
    }
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
    // After XDP, which passes shaped TCP up to them.
    for link in list_dir(&pins.shaper())? {
        let path = pins.shaper_link(&link);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    for link in list_dir(&pins.flow_exits())? {
        let path = pins.flow_exit_link(&link);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    for trace in list_dir(&pins.trace())? {
        let path = pins.trace().join(&trace);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    // The stage tables hold the stages; the programs hold the tables: links first, so no
    // program is left calling into an emptied table.
    for table in list_dir(&pins.calls())? {
        let path = pins.calls().join(&table);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    release_programs(&pins);
    for map in list_dir(&pins.maps())? {
        let path = pins.maps().join(&map);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        done.maps.push(map);
    }
    for dir in [
        pins.links(),
        pins.shaper(),
        pins.flow_exits(),
        pins.trace(),
        pins.calls(),
        pins.maps(),
        pins.path().to_owned(),
    ] {
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
