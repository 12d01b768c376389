//! The one owner of the dataplane's configuration: a thread that applies every change, in
//! order, from one place.
//!
//! Changes arrive as [`Command`]s (API calls, `xnic apply`, SIGHUP, the sampler's periodic
//! measurements) and as the kernel's link events, which the thread reads from its own
//! netlink socket before anything else, so a lost carrier never waits behind other work.
//! Each change updates the desired state or the host's interfaces, lets every feature
//! reconcile, renders the dataplane [`Image`], and writes only what differs from what is
//! written, in a safe order ([`crate::policy::plan`]). A change that cannot be carried out is
//! undone whole: the features' state is restored and what was written is put back.
//!
//! Readers never wait for it: after every command it publishes a [`Snapshot`] (an `Arc`
//! swapped under a lock held for the swap only), and counters are read through handles of
//! their own.

mod flows;

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    os::{fd::AsFd as _, unix::net::UnixStream},
    path::PathBuf,
    sync::{Arc, RwLock, mpsc},
    time::Instant,
};

use anyhow::{Context as _, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tokio::sync::oneshot;
use tracing::{info, warn};
use xnic_common::maps::{DataplaneInfo, PortRole};
use xnic_proto::{
    api::{ChangeView, EventDetail},
    config::{AttachMode, Config, XdpModePref},
};

use crate::{
    dataplane::{self, Dataplane},
    events::{EventLog, NewEvent},
    features::{
        Context, Feature, Programs, Slots,
        base::{Base, Blocked, wanted_ports},
        flows::{FlowFilter, FlowSample, Offload, OffloadSummary},
        rss::{Rss, RssSample},
        team::{Team, TeamSample, monotonic_ns},
        vnic::{Vnic, host_of},
    },
    model::{
        self, Change, Refusal,
        store::{Store, Stored},
    },
    monitor::links::{Interfaces, LinkEvent, LinkWatch, Links, XdpState, raise_priority},
    policy::plan::{self, Attachment, Image, Op, TxPort},
};

/// How many render → write rounds one change may take: attaching a port tells its XDP mode,
/// which decides its steering flag, which a second round writes.
const MAX_ROUNDS: usize = 4;

/// What the API and the sampler see of the daemon's state, as of the last command.
#[derive(Clone)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub config_file: PathBuf,
    pub state_file: PathBuf,
    pub slots: Slots,
    pub host: Interfaces,
    pub attached: BTreeMap<String, AttachMode>,
    /// Ports that exist but are not attached, and why.
    pub blocked: BTreeMap<String, String>,
    pub rss: Rss,
    pub team: Team,
    pub flows: OffloadSummary,
    /// Offloaded flows' conntrack ids, by slot.
    pub flow_ids: Arc<std::collections::HashMap<u32, u32>>,
    /// Every slot holding an offloaded flow (the sampler reads their live state).
    pub flow_slots: Arc<Vec<u32>>,
    pub adopted: bool,
    /// The kernel's own failover path: `None` when on, else why it is off.
    pub kernel_failover_off: Option<String>,
    pub started: Instant,
    pub info: DataplaneInfo,
    pub pin_dir: PathBuf,
    pub nr_cpus: usize,
    /// This daemon's program ids.
    pub programs: Programs,
    /// VNIC routing's ids (slots, tables, routes) and this host's place in the fleet.
    pub vnic: Arc<Vnic>,
}

impl Snapshot {
    /// The hooks' context, as of now.
    pub fn cx(&self) -> Context<'_> {
        Context {
            desired: &self.config,
            host: &self.host,
            attached: &self.attached,
            programs: self.programs,
            now_ns: monotonic_ns(),
        }
    }
}

/// The latest snapshot, shared.
pub type Published = Arc<RwLock<Arc<Snapshot>>>;

pub fn current(p: &Published) -> Arc<Snapshot> {
    p.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Work for the reconciler.
pub enum Command {
    Change {
        change: Change,
        /// Refuse unless the desired state is at this generation (optimistic concurrency).
        expect: Option<u64>,
        dry_run: bool,
        /// The configuration file's text when the change replaces the desired state with
        /// the daemon's own file: it becomes the one a restart compares against.
        source: Option<String>,
        reply: oneshot::Sender<Result<ChangeView, Refusal>>,
    },
    RssTick(RssSample),
    TeamTick(TeamSample),
    FlowTick(Box<FlowSample>),
    /// `xnic flows offload|demote`: how many flows matched.
    FlowRequest {
        offload: bool,
        filter: FlowFilter,
        reply: oneshot::Sender<usize>,
    },
    /// Remove the dataplane and the kept desired state (`xnic down`).
    Down(oneshot::Sender<anyhow::Result<dataplane::Teardown>>),
    Stop,
}

/// Sends commands to the reconciler thread.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Command>,
    wake: Arc<UnixStream>,
}

impl Handle {
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            // A full socket buffer already holds a wake-up.
            let _ = (&*self.wake).write(&[1]);
        }
    }

    /// Makes a change and waits for the outcome.
    pub async fn change(
        &self,
        change: Change,
        expect: Option<u64>,
        dry_run: bool,
        source: Option<String>,
    ) -> Result<ChangeView, Refusal> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Change {
            change,
            expect,
            dry_run,
            source,
            reply,
        });
        rx.await
            .unwrap_or_else(|_| Err(Refusal::Failed("the daemon is stopping".into())))
    }
}

/// Everything a failed change must put back.
struct Saved {
    config: Arc<Config>,
    base: Base,
    rss: Rss,
    team: Team,
    vnic: Arc<Vnic>,
}

pub struct Reconciler {
    dp: Dataplane,
    /// Shared with the published snapshots, so publishing does not copy thousands of VMs.
    config: Arc<Config>,
    generation: u64,
    config_file: PathBuf,
    store: Store,
    /// The configuration file and its text when it last replaced the desired state.
    source: Option<(PathBuf, String)>,
    host: Interfaces,
    /// This instance's program mode on each interface it runs on.
    attached: BTreeMap<String, AttachMode>,
    base: Base,
    rss: Rss,
    team: Team,
    offload: Offload,
    /// VNIC routing: the fleet's VNICs, routes, gateways and rules (shared with the
    /// published snapshots).
    vnic: Arc<Vnic>,
    /// This namespace's addresses: a fleet host knows itself by its VTEP among them.
    addresses: Vec<std::net::IpAddr>,
    offload_io: Option<flows::OffloadIo>,
    /// Published with every snapshot; rebuilt after each flows period.
    flow_ids: Arc<std::collections::HashMap<u32, u32>>,
    flow_slots: Arc<Vec<u32>>,
    /// What the configuration maps hold, as this daemon last wrote (or read) them.
    written: Image,
    events: EventLog,
    published: Published,
    adopted: bool,
    started: Instant,
    xdp_mode: XdpModePref,
    programs: Programs,
}

/// Borrows the parts of the reconciler a hook needs.
macro_rules! cx {
    ($r:expr) => {
        Context {
            desired: &$r.config,
            host: &$r.host,
            attached: &$r.attached,
            programs: $r.programs,
            now_ns: monotonic_ns(),
        }
    };
}

impl Reconciler {
    /// Takes over the dataplane: adopts what is pinned, brings it in line with `stored`, and
    /// publishes the first snapshot. A failure undoes what this call wrote.
    pub fn start(
        dp: Dataplane,
        stored: Stored,
        config_file: PathBuf,
        host: Interfaces,
        addresses: Vec<std::net::IpAddr>,
        events: EventLog,
    ) -> anyhow::Result<(Reconciler, Published)> {
        let config = stored.config;
        let store = Store::new(&config.instance);
        let mut dp = dp;
        let mut pinned = dp.read_image()?;
        // The shaper's queues on this instance's uplinks, as the kernel holds them.
        let uplinks: BTreeMap<u32, String> = pinned
            .port_records
            .values()
            .filter(|r| PortRole::from_u8(r.role) == Some(PortRole::Uplink))
            .filter_map(|r| {
                host.get(r.name.as_str())
                    .map(|l| (l.ifindex, l.name.clone()))
            })
            .collect();
        dp.read_shaper(&mut pinned, &uplinks)?;
        // Attachments an earlier daemon pinned that still run on their interface.
        let mut attached = BTreeMap::new();
        let mut written = pinned.clone();
        for name in dp.pinned_links()? {
            let prog = dp.pinned_link_program(&name);
            let role = pinned
                .port_records
                .values()
                .find(|r| r.name.as_str() == name)
                .and_then(|r| PortRole::from_u8(r.role))
                .unwrap_or(PortRole::Vm);
            let live = host.get(&name).and_then(|l| {
                l.xdp
                    .filter(|x| prog == Some(x.prog_id))
                    .map(|x| (l.ifindex, x.mode))
            });
            // A stale pin (the interface went or runs something else) has index 0: the first
            // write replaces or removes it.
            let ifindex = match live {
                Some((ifindex, mode)) => {
                    attached.insert(name.clone(), mode);
                    ifindex
                }
                None => 0,
            };
            written.attach.insert(
                name,
                Attachment {
                    ifindex,
                    role,
                    program: prog.unwrap_or(0),
                },
            );
        }
        let adopted = !dp.created();
        let nr_cpus = dp.nr_cpus();
        let programs = dp.programs();
        let mut r = {
            let cx = Context {
                desired: &config,
                host: &host,
                attached: &attached,
                programs,
                now_ns: monotonic_ns(),
            };
            let base = Base::adopt(&pinned);
            let mut boot_events = Vec::new();
            let mut base = base;
            base.reconcile(&cx, &Slots::default(), &mut boot_events)
                .map_err(anyhow::Error::msg)?;
            let rss =
                Rss::adopt(&cx, base.slots(), &pinned, nr_cpus).map_err(anyhow::Error::msg)?;
            let team = Team::adopt(&cx, &pinned);
            let mut offload = Offload::adopt(
                dp.flow_slots()?,
                &dp.flow_table()?,
                crate::monitor::conntrack::timeouts(),
            );
            offload.reconcile(config.flows.as_ref());
            let mut vnic = Vnic::default();
            vnic.set_host(host_of(&config, &addresses));
            vnic.adopt(&config, &pinned.vnic);
            vnic.reconcile(&config).map_err(anyhow::Error::msg)?;
            let vnic = Arc::new(vnic);
            let flow_slots = Arc::new(offload.placed().map(|p| p.slot).collect());
            Reconciler {
                dp,
                config: Arc::new(config.clone()),
                generation: stored.generation,
                source: stored.source,
                config_file,
                store,
                host: host.clone(),
                attached: attached.clone(),
                base,
                rss,
                team,
                offload,
                vnic,
                addresses,
                offload_io: None,
                flow_ids: Arc::default(),
                flow_slots,
                written,
                events: events.clone(),
                published: Arc::new(RwLock::new(Arc::new(placeholder(&config)))),
                adopted,
                started: Instant::now(),
                xdp_mode: config.daemon.xdp_mode,
                programs,
            }
        };
        let found = r.written.clone();
        r.refresh_blocks();
        if let Some((name, Blocked::Foreign(id))) = r
            .base_blocks()
            .into_iter()
            .find(|(_, b)| matches!(b, Blocked::Foreign(_)))
        {
            r.undo_start(&found);
            bail!(
                "interface {name} already runs XDP program id {id} that is not this instance's; \
                 detach it first (`ip link set dev {name} xdp off`); nothing was changed"
            );
        }
        let mut out = Vec::new();
        if let Err(e) = r.converge(true, &mut out) {
            r.undo_start(&found);
            bail!("{e}; nothing was changed");
        }
        // Every link runs this daemon's programs now: what older programs needed can go.
        if let Err(e) = r.dp.finish_start() {
            warn!(error = %format!("{e:#}"), "cannot finish taking over the pinned dataplane; the next start tries again");
        }
        if let Err(e) = r
            .store
            .save(&r.config, r.generation, r.source.as_ref(), true)
        {
            warn!(error = %format!("{e:#}"), "cannot keep the desired state: runtime changes will not survive a restart");
        }
        out.push(NewEvent::new(
            "config",
            "started",
            &r.config.instance,
            format!(
                "daemon started ({} the dataplane, desired state generation {})",
                if adopted { "adopted" } else { "created" },
                r.generation
            ),
        ));
        out.extend(vnic_events(&r.config, None, 0, &r.vnic));
        r.events.push(out);
        r.publish();
        let published = r.published.clone();
        Ok((r, published))
    }

    /// Puts the dataplane back as this daemon found it (a failed start).
    fn undo_start(&mut self, found: &Image) {
        if self.dp.created() {
            let instance = self.config.instance.clone();
            if let Err(e) = dataplane::teardown(&instance) {
                warn!(error = %format!("{e:#}"), "could not remove the new pins");
            }
            return;
        }
        let ops = plan::diff(&self.written, found, &plan::Resets::default());
        if let Err((op, e)) = self.execute(&ops) {
            warn!(?op, error = %e, "could not undo a write of the failed start");
        }
    }

    fn base_blocks(&self) -> Vec<(String, Blocked)> {
        wanted_ports(&self.config)
            .into_iter()
            .filter_map(|p| {
                self.base
                    .blocked(&p.name)
                    .map(|b| (p.name.clone(), b.clone()))
            })
            .collect()
    }

    /// Whether XDP program `prog` on `name` is this instance's.
    fn ours(&self, name: &str, prog: u32) -> bool {
        prog == self.programs.uplink
            || prog == self.programs.vm
            || self.dp.pinned_link_program(name) == Some(prog)
    }

    fn refresh_blocks(&mut self) {
        let ours: std::collections::BTreeSet<String> = wanted_ports(&self.config)
            .into_iter()
            .filter(|p| {
                self.host
                    .get(&p.name)
                    .and_then(|l| l.xdp)
                    .is_some_and(|x| self.ours(&p.name, x.prog_id))
            })
            .map(|p| p.name)
            .collect();
        let cx = cx!(self);
        self.base.refresh_blocks(&cx, |name, _| ours.contains(name));
    }

    fn render(&self) -> Image {
        let cx = cx!(self);
        let slots = self.base.slots();
        let mut image = Image::default();
        self.base.render(&cx, slots, &mut image);
        self.rss.render(&cx, slots, &mut image);
        self.team.render(&cx, slots, &mut image);
        image.vnic = self.vnic.image();
        if image.vnic.config.workers != 0 {
            // A worker sends packets back out of their uplink through `TX_PORTS` (a CPU-map
            // program has no `XDP_TX`).
            for u in &self.config.uplinks {
                if let Some(a) = image.attach.get(&u.name) {
                    image
                        .tx_ports
                        .entry(a.ifindex)
                        .or_insert(TxPort { flood_filter: None });
                }
            }
        }
        // A leaving flow's packets wait behind its fast-path frames in flight on a CPU-map
        // queue of the CPU they arrive on: every CPU has one while offload runs.
        if self.offload.enabled() || self.offload.placed().next().is_some() {
            image.cpu_queues.extend(0..self.dp.nr_cpus() as u32);
        }
        image.index();
        image
    }

    /// The RSS engine whose CPUs route VNIC packets: the fleet's, while RSS has it and
    /// every uplink is attached natively (generic XDP loses the metadata a steered frame
    /// carries to its CPU).
    fn vnic_workers(&self) -> Option<u16> {
        let name = self.config.fleet.as_ref()?.engine.as_deref()?;
        let engine = self.rss.engine_slot(name)?;
        self.config
            .uplinks
            .iter()
            .all(|u| self.attached.get(&u.name) == Some(&AttachMode::Native))
            .then_some(engine as u16)
    }

    /// Runs `ops` in order, recording each in `written`; stops at the first failure.
    fn execute(&mut self, ops: &[Op]) -> Result<(), (Op, String)> {
        for op in ops {
            let (prog, mode) = match op {
                Op::Attach(name, _) => (
                    self.host.get(name).and_then(|l| l.xdp).map(|x| x.prog_id),
                    self.attached.get(name).copied(),
                ),
                _ => (None, None),
            };
            match self.dp.execute(op, self.xdp_mode, prog, mode) {
                Ok(outcome) => {
                    plan::record(&mut self.written, op);
                    match op {
                        Op::Attach(name, a) => {
                            let outcome = outcome.expect("attach reports its outcome");
                            let role = a.role;
                            if let Some(mode) = outcome.mode {
                                self.attached.insert(name.clone(), mode);
                                let prog_id = self.programs.for_role(role);
                                self.host.set_xdp(name, Some(XdpState { prog_id, mode }));
                            }
                            if outcome.fresh {
                                info!(interface = %name, mode = ?outcome.mode, program = dataplane::program_name(role), "attached");
                            } else {
                                info!(interface = %name, "adopted running XDP attachment");
                            }
                            if outcome.mode != Some(AttachMode::Native) && self.rss.enabled() {
                                warn!(interface = %name, "RSS steering needs native XDP: frames arriving here stay on the CPU they arrive on");
                            }
                        }
                        Op::Detach(name) if self.attached.remove(name).is_some() => {
                            self.host.set_xdp(name, None);
                        }
                        _ => {}
                    }
                }
                Err(e) => return Err((op.clone(), format!("{e:#}"))),
            }
        }
        Ok(())
    }

    /// Renders and writes until the dataplane matches. `strict`: a failed attachment fails
    /// the whole change; otherwise the port is marked and the rest goes on.
    fn converge(&mut self, strict: bool, events: &mut Vec<NewEvent>) -> Result<(), String> {
        for _ in 0..MAX_ROUNDS {
            let workers = self.vnic_workers();
            if self.vnic.workers() != workers {
                Arc::make_mut(&mut self.vnic).set_workers(workers);
            }
            let image = self.render();
            let mut resets = self.base.take_resets();
            resets.engines.extend(self.rss.take_resets());
            let (vnics, routes) = Arc::make_mut(&mut self.vnic).take_fresh();
            resets.vnic_slots.extend(vnics);
            resets.route_ids.extend(routes);
            let ops = plan::diff(&self.written, &image, &resets);
            if ops.is_empty() {
                return Ok(());
            }
            // What the team needs to see what moved (the rest of the image is large).
            let before = self.written.vm_team.clone();
            let result = self.execute(&ops);
            self.team
                .written(self.base.slots(), &before, &self.written, events);
            match result {
                Ok(()) => {}
                Err((Op::Attach(name, a), e)) if !strict => {
                    warn!(interface = %name, error = %e, "cannot attach: the port stays detached until its interface changes");
                    events.push(NewEvent::new(
                        "port",
                        "port_attach_failed",
                        &name,
                        format!("port {name}: {e}"),
                    ));
                    self.base.block(&name, a.ifindex, Blocked::Failed(e));
                }
                Err((op, e)) => return Err(format!("{e} (writing {op:?})")),
            }
        }
        Err("the dataplane did not settle".into())
    }

    fn save_state(&self) -> Saved {
        Saved {
            config: self.config.clone(),
            base: self.base.clone(),
            rss: self.rss.clone(),
            team: self.team.clone(),
            vnic: self.vnic.clone(),
        }
    }

    fn restore(&mut self, saved: Saved) {
        self.config = saved.config;
        self.base = saved.base;
        self.rss = saved.rss;
        self.team = saved.team;
        self.vnic = saved.vnic;
        self.offload.reconcile(self.config.flows.as_ref());
    }

    fn reconcile_features(&mut self, events: &mut Vec<NewEvent>) -> Result<(), String> {
        let cx = cx!(self);
        self.base.reconcile(&cx, &Slots::default(), events)?;
        self.rss.reconcile(&cx, self.base.slots(), events)?;
        self.team.reconcile(&cx, self.base.slots(), events)?;
        self.offload.reconcile(self.config.flows.as_ref());
        let vnic = Arc::make_mut(&mut self.vnic);
        let (was, routes_before) = (vnic.host(), vnic.image().routes.len());
        vnic.set_host(host_of(&self.config, &self.addresses));
        vnic.reconcile(&self.config)?;
        events.extend(vnic_events(&self.config, was, routes_before, vnic));
        self.refresh_blocks();
        Ok(())
    }

    /// Refuses a desired state that cannot work here: invalid, CPUs this host lacks, a port
    /// that runs someone else's XDP program.
    fn check(&self, new: &Config) -> Result<(), Refusal> {
        crate::config::validate::validate(new)
            .map_err(|(f, m)| Refusal::Invalid(model::explain(new, &f, &m)))?;
        crate::config::host::check_cpus(new)
            .map_err(|(f, m)| Refusal::Invalid(model::explain(new, &f, &m)))?;
        for port in wanted_ports(new) {
            if let Some(x) = self.host.get(&port.name).and_then(|l| l.xdp)
                && !self.ours(&port.name, x.prog_id)
            {
                return Err(Refusal::Conflict(format!(
                    "interface {} runs XDP program id {} that is not this instance's; detach it \
                     first (`ip link set dev {} xdp off`)",
                    port.name, x.prog_id, port.name
                )));
            }
        }
        Ok(())
    }

    fn change(
        &mut self,
        change: Change,
        expect: Option<u64>,
        dry_run: bool,
        source: Option<String>,
    ) -> Result<ChangeView, Refusal> {
        if let Some(g) = expect
            && g != self.generation
        {
            return Err(Refusal::Conflict(format!(
                "the desired state changed meanwhile (generation {} now, {g} expected); look again and retry",
                self.generation
            )));
        }
        let new = model::apply(&self.config, &change)?;
        self.check(&new)?;
        let (changes, at_restart) = model::diff::diff(&self.config, &new);
        let nothing = changes.is_empty() && at_restart.is_empty();
        if dry_run || (nothing && source.is_none()) {
            return Ok(ChangeView {
                generation: self.generation,
                dry_run,
                changes,
                at_restart,
            });
        }
        let saved = self.save_state();
        self.config = Arc::new(new);
        let mut events = Vec::new();
        if let Err(e) = self.reconcile_features(&mut events) {
            self.restore(saved);
            return Err(Refusal::Invalid(e));
        }
        if let Err(e) = self.converge(true, &mut events) {
            self.restore(saved);
            let undo = self.converge(false, &mut Vec::new());
            let note = match undo {
                Ok(()) => "nothing was changed".to_string(),
                Err(u) => format!("putting the rest back failed too ({u}); check `xnic status`"),
            };
            warn!(change = %change.describe(), error = %e, "change failed and was undone");
            return Err(Refusal::Failed(format!("{e}; {note}")));
        }
        if !nothing {
            self.generation += 1;
        }
        let source_changed = source.is_some();
        if let Some(text) = source {
            self.source = Some((self.config_file.clone(), text));
        }
        if let Err(e) = self.store.save(
            &self.config,
            self.generation,
            self.source.as_ref(),
            source_changed,
        ) {
            warn!(error = %format!("{e:#}"), "cannot keep the desired state: this change will not survive a restart");
        }
        if !nothing {
            info!(change = %change.describe(), generation = self.generation, changes = changes.len(), "desired state changed");
            events.push(
                NewEvent::new(
                    "config",
                    "changed",
                    &self.config.instance,
                    format!("{} (generation {})", change.describe(), self.generation),
                )
                .with(EventDetail::Change {
                    generation: self.generation,
                    changes: changes.iter().chain(&at_restart).cloned().collect(),
                }),
            );
        }
        self.events.push(events);
        Ok(ChangeView {
            generation: self.generation,
            dry_run: false,
            changes,
            at_restart,
        })
    }

    /// Takes in what the kernel announced. Team members' link changes move VMs at once;
    /// ports that appeared, went or were recreated are attached, forgotten or re-attached.
    fn links(&mut self, read: Vec<LinkEvent>, seen: Instant) {
        let wanted: Vec<String> = wanted_ports(&self.config)
            .into_iter()
            .map(|p| p.name)
            .collect();
        let mut changed = false;
        let mut events = Vec::new();
        for ev in read {
            let (name, ifindex) = match &ev {
                LinkEvent::New(l) | LinkEvent::Del(l) => (l.name.clone(), l.ifindex),
            };
            let before = self.host.apply(&ev);
            // Our attachment goes with the interface; the record of it stays until written.
            if matches!(ev, LinkEvent::Del(_))
                || before.as_ref().is_some_and(|b| b.ifindex != ifindex)
            {
                self.attached.remove(&name);
            }
            let cx = cx!(self);
            changed |= self.team.link(&cx, &ev, seen);
            if !wanted.contains(&name) {
                continue;
            }
            let appeared = matches!(ev, LinkEvent::New(_))
                && before.as_ref().is_none_or(|b| b.ifindex != ifindex);
            let gone = matches!(ev, LinkEvent::Del(_)) && before.is_some();
            if appeared {
                info!(interface = %name, ifindex, "port appeared");
                events.push(NewEvent::new(
                    "port",
                    "port_appeared",
                    &name,
                    format!("port {name} appeared (ifindex {ifindex})"),
                ));
                changed = true;
            } else if gone {
                info!(interface = %name, ifindex, "port went away");
                events.push(NewEvent::new(
                    "port",
                    "port_gone",
                    &name,
                    format!("port {name} went away (ifindex {ifindex}); its VM waits for it"),
                ));
                changed = true;
            }
        }
        if changed {
            self.refresh_blocks();
            if let Err(e) = self.converge(false, &mut events) {
                warn!(error = %e, "applying a link change failed");
            }
        }
        self.events.push(events);
    }

    /// Re-reads every interface (after the kernel dropped events).
    fn resync_links(&mut self, links: &Links, rt: &tokio::runtime::Runtime) {
        match rt.block_on(links.all()) {
            Ok(all) => {
                let old = std::mem::replace(&mut self.host, Interfaces::new(all));
                // Keep what we know of our own attachments' modes.
                for name in self.attached.keys() {
                    if let (Some(o), None) = (
                        old.get(name).and_then(|l| l.xdp),
                        self.host.get(name).and_then(|l| l.xdp),
                    ) {
                        self.host.set_xdp(name, Some(o));
                    }
                }
                let events: Vec<LinkEvent> =
                    self.host.iter().cloned().map(LinkEvent::New).collect();
                self.links(events, Instant::now());
            }
            Err(e) => warn!(error = %format!("{e:#}"), "cannot re-read interfaces"),
        }
    }

    fn publish(&self) {
        let snapshot = Snapshot {
            generation: self.generation,
            config: self.config.clone(),
            config_file: self.config_file.clone(),
            state_file: self.store.desired_file(),
            slots: self.base.slots().clone(),
            host: self.host.clone(),
            attached: self.attached.clone(),
            blocked: self
                .base_blocks()
                .into_iter()
                .map(|(n, b)| {
                    let why = match b {
                        Blocked::Foreign(id) => {
                            format!("runs XDP program id {id} that is not this instance's")
                        }
                        Blocked::Failed(e) => e,
                    };
                    (n, why)
                })
                .collect(),
            rss: self.rss.clone(),
            team: self.team.clone(),
            flows: self.offload.summary(),
            flow_ids: self.flow_ids.clone(),
            flow_slots: self.flow_slots.clone(),
            adopted: self.adopted,
            kernel_failover_off: self.dp.carrier_hook().err().map(str::to_string),
            started: self.started,
            info: self.dp.info().unwrap_or_default(),
            pin_dir: self.dp.pins().path().to_path_buf(),
            nr_cpus: self.dp.nr_cpus(),
            programs: self.programs,
            vnic: self.vnic.clone(),
        };
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
    }

    /// The loaded dataplane object, for the eBPF log reader (taken before the thread runs).
    pub fn dataplane_mut(&mut self) -> &mut Dataplane {
        &mut self.dp
    }

    /// The thread's body: link events first, then commands, until told to stop.
    pub fn run(mut self, rx: mpsc::Receiver<Command>, waker: UnixStream, mut watch: LinkWatch) {
        raise_priority();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime always builds");
        let links = rt.block_on(async { Links::connect() });
        let _ = waker.set_nonblocking(true);
        let mut buf = [0u8; 64];
        loop {
            match watch.read() {
                Ok(read) => {
                    let seen = Instant::now();
                    let overflowed = read.overflowed;
                    if !read.events.is_empty() {
                        self.links(read.events, seen);
                        self.publish();
                    }
                    if overflowed {
                        warn!("netlink link events overflowed; re-reading every interface");
                        if let Ok(l) = &links {
                            self.resync_links(l, &rt);
                            self.publish();
                        }
                    }
                }
                Err(e) => warn!(error = %format!("{e:#}"), "reading link events failed"),
            }
            match rx.try_recv() {
                Ok(cmd) => {
                    if !self.command(cmd) {
                        return;
                    }
                    continue;
                }
                Err(mpsc::TryRecvError::Disconnected) => return,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            {
                let mut fds = [
                    PollFd::new(watch.fd(), PollFlags::POLLIN),
                    PollFd::new(waker.as_fd(), PollFlags::POLLIN),
                ];
                let _ = poll(&mut fds, PollTimeout::NONE);
            }
            while matches!((&waker).read(&mut buf), Ok(n) if n > 0) {}
        }
    }

    /// Handles one command and publishes what it changed; `false` when the thread should end.
    fn command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Change {
                change,
                expect,
                dry_run,
                source,
                reply,
            } => {
                let out = self.change(change, expect, dry_run, source);
                // Published before the answer: a client that reads after it sees the change.
                self.publish();
                let _ = reply.send(out);
            }
            Command::RssTick(sample) => {
                let mut events = Vec::new();
                let cx = cx!(self);
                if self.rss.tick(&cx, self.base.slots(), sample, &mut events)
                    && let Err(e) = self.converge(false, &mut events)
                {
                    warn!(error = %e, "RSS period failed");
                }
                self.events.push(events);
                self.publish();
            }
            Command::TeamTick(sample) => {
                let mut events = Vec::new();
                let cx = cx!(self);
                if self.team.tick(&cx, self.base.slots(), sample, &mut events)
                    && let Err(e) = self.converge(false, &mut events)
                {
                    warn!(error = %e, "team period failed");
                }
                self.events.push(events);
                self.publish();
            }
            Command::FlowTick(sample) => {
                self.flow_tick(*sample);
                self.flow_ids = Arc::new(
                    self.offload
                        .placed()
                        .filter(|p| p.id != 0)
                        .map(|p| (p.slot, p.id))
                        .collect(),
                );
                self.flow_slots = Arc::new(self.offload.placed().map(|p| p.slot).collect());
                self.publish();
            }
            Command::FlowRequest {
                offload,
                filter,
                reply,
            } => {
                let n = if offload {
                    self.offload.request_offload(&filter)
                } else {
                    self.offload.request_demote(&filter)
                };
                self.publish();
                let _ = reply.send(n);
            }
            Command::Down(reply) => {
                // The shaper's queues first: without their tc programs, nothing feeds them.
                let roots: Vec<u32> = self.written.shaper_roots.keys().copied().collect();
                for ifindex in roots {
                    if let Err(e) = self.dp.tc().and_then(|tc| tc.remove_root(ifindex)) {
                        warn!(ifindex, error = %format!("{e:#}"), "cannot remove the shaper's qdisc");
                    }
                }
                let out = dataplane::teardown(&self.config.instance);
                if out.is_ok()
                    && let Err(e) = self.store.remove()
                {
                    warn!(error = %format!("{e:#}"), "cannot remove the kept desired state");
                }
                let _ = reply.send(out);
                return false;
            }
            Command::Stop => return false,
        }
        true
    }
}

/// A snapshot before the first one is published (never seen by clients: the socket opens
/// after the start).
fn placeholder(config: &Config) -> Snapshot {
    Snapshot {
        generation: 0,
        config: Arc::new(config.clone()),
        config_file: PathBuf::new(),
        state_file: PathBuf::new(),
        slots: Slots::default(),
        host: Interfaces::default(),
        attached: BTreeMap::new(),
        blocked: BTreeMap::new(),
        rss: Rss::placeholder(),
        team: Team::default(),
        flows: OffloadSummary::default(),
        flow_ids: Arc::default(),
        flow_slots: Arc::default(),
        adopted: false,
        kernel_failover_off: None,
        started: Instant::now(),
        info: DataplaneInfo::default(),
        pin_dir: PathBuf::new(),
        nr_cpus: 0,
        programs: Programs::default(),
        vnic: Arc::default(),
    }
}

/// VNIC routing's events of a reconcile: this host joining or leaving the fleet, its routes
/// changing.
fn vnic_events(
    config: &Config,
    was: Option<usize>,
    routes_before: usize,
    vnic: &Vnic,
) -> Vec<NewEvent> {
    let mut out = Vec::new();
    let name = |i: usize| {
        config
            .fleet
            .as_ref()
            .and_then(|f| f.hosts.get(i))
            .map_or_else(|| format!("host {i}"), |h| h.name.clone())
    };
    match (was, vnic.host()) {
        (None, Some(i)) => out.push(NewEvent::new(
            "vnic",
            "routing_on",
            name(i),
            format!(
                "forwarding for the fleet's {} VNIC(s) as {}",
                config.vnics.len(),
                name(i)
            ),
        )),
        (Some(i), None) => out.push(NewEvent::new(
            "vnic",
            "routing_off",
            name(i),
            "this host is no longer one of [fleet]'s: VNIC routing is off here",
        )),
        _ => {}
    }
    let routes = vnic.image().routes.len();
    if was.is_some() && vnic.host().is_some() && routes != routes_before {
        out.push(NewEvent::new(
            "vnic",
            "routes_changed",
            config.instance.clone(),
            format!("{routes_before} routes before, {routes} now (VCN prefixes included)"),
        ));
    }
    out
}

/// Starts the reconciler thread; returns the handle that sends it commands.
pub fn spawn(
    r: Reconciler,
    watch: LinkWatch,
) -> anyhow::Result<(Handle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let (wake, waker) =
        UnixStream::pair().context("cannot create the reconciler's wake-up socket")?;
    wake.set_nonblocking(true)
        .context("cannot create the reconciler's wake-up socket")?;
    let thread = std::thread::Builder::new()
        .name("xnic-reconcile".into())
        .spawn(move || r.run(rx, waker, watch))
        .context("cannot start the reconciler thread")?;
    Ok((
        Handle {
            tx,
            wake: Arc::new(wake),
        },
        thread,
    ))
}
