//! `xnic run`: the daemon's process. Locks the instance, takes the desired state (kept from
//! the last run, or the configuration file), adopts or creates the dataplane through the
//! reconciler, and runs its threads: the reconciler (the one owner of every change), the
//! sampler (counters and /proc, on handles of its own) and the HTTP API.
//!
//! On SIGTERM/SIGINT (or a crash) the dataplane stays attached and pinned: forwarding goes on
//! and the next daemon adopts it. SIGHUP applies the configuration file again. Only `xnic
//! down` removes the dataplane.

mod ebpf_log;
mod flows;
mod http;
mod metrics;
mod sample;
mod sampler;
mod trace;
mod views;
mod vnic;

use std::{
    collections::HashMap,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use nix::fcntl::{Flock, FlockArg};
use tokio::{net::UnixListener, sync::watch};
use tracing::{error, info, warn};
use xnic_proto::{
    api::{
        ChangeView, DesiredView, DownView, Event, EventDetail, RssBucketView, RssEvent,
        RssStatusView, StatsView, StatusView, TeamEvent, TeamStatusView, VmView,
    },
    config::Config,
};

pub use self::sampler::Sampled;
use crate::{
    dataplane::{Counters, Dataplane, FlowReader},
    events::{EventLog, NewEvent},
    model::{
        Change, Refusal,
        store::{self, Store},
    },
    monitor::links::{Interfaces, LinkWatch, Links},
    reconcile::{self, Command, Handle, Published, Snapshot},
};

/// Why the daemon stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A signal: leave the dataplane running for the next daemon.
    Signal,
    /// `POST /v1/down`: remove the dataplane.
    Down,
}

/// The running daemon, as the API handlers see it. Nothing here waits for the reconciler
/// except changes, which are the reconciler's to make.
pub struct Daemon {
    instance: String,
    handle: Handle,
    published: Published,
    counters: Counters,
    flow_reader: FlowReader,
    sampled: Arc<Mutex<Sampled>>,
    links: Links,
    events: EventLog,
    stop: watch::Sender<Option<Stop>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A handler that panicked mid-update leaves nothing inconsistent we rely on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Daemon {
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        reconcile::current(&self.published)
    }

    fn fresh(
        &self,
        snap: &Snapshot,
    ) -> anyhow::Result<(crate::daemon::sample::Sample, crate::daemon::sample::Rates)> {
        let sample = crate::daemon::sample::Sample::take(&self.counters, snap)?;
        let rates = lock(&self.sampled).rates.clone();
        Ok((sample, rates))
    }

    pub async fn status(&self) -> anyhow::Result<StatusView> {
        let links: HashMap<_, _> = self
            .links
            .all()
            .await?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        let snap = self.snapshot();
        let (sample, _) = self.fresh(&snap)?;
        Ok(views::status(&snap, &sample, &links))
    }

    pub fn vms(&self) -> anyhow::Result<Vec<VmView>> {
        let snap = self.snapshot();
        let (sample, rates) = self.fresh(&snap)?;
        snap.config
            .vms
            .iter()
            .map(|v| views::vm(&snap, &sample, &rates, &v.name, &self.counters))
            .collect()
    }

    /// `Err` (the outer `Ok`) carries the known VM names when there is no VM `name`.
    pub fn vm(&self, name: &str) -> anyhow::Result<Result<VmView, Vec<String>>> {
        let snap = self.snapshot();
        if snap.config.vm(name).is_none() {
            return Ok(Err(snap
                .config
                .vms
                .iter()
                .map(|v| v.name.clone())
                .collect()));
        }
        let sample = crate::daemon::sample::Sample::take_vm(&self.counters, &snap, name)?;
        let rates = lock(&self.sampled).rates.clone();
        Ok(Ok(views::vm(&snap, &sample, &rates, name, &self.counters)?))
    }

    pub fn stats(&self) -> anyhow::Result<StatsView> {
        let snap = self.snapshot();
        let (sample, rates) = self.fresh(&snap)?;
        Ok(views::stats(&snap, &sample, &rates))
    }

    pub fn rss_status(&self) -> Option<RssStatusView> {
        let snap = self.snapshot();
        let mut view = snap.rss.status(&snap.slots, self.events.counts("rss"))?;
        if let Ok(c) = self.counters.steering() {
            view.steering = xnic_common::rss::SteerCounter::ALL
                .iter()
                .map(|k| (k.name().to_string(), c[*k as usize]))
                .collect();
        }
        Some(view)
    }

    /// Events of the `rss` feature after `since`, in their own shape.
    pub fn rss_events(&self, since: u64) -> Option<Vec<RssEvent>> {
        let snap = self.snapshot();
        snap.rss.enabled().then(|| {
            self.events
                .since(since, |e| e.feature == "rss")
                .into_iter()
                .filter_map(|e| match e.detail {
                    EventDetail::Rss(r) => Some(r),
                    _ => None,
                })
                .collect()
        })
    }

    /// `Ok(None)`: no engine of that name. `Err`: RSS is not configured.
    pub fn rss_buckets(&self, engine: &str) -> Result<Option<Vec<RssBucketView>>, Refusal> {
        let snap = self.snapshot();
        if !snap.rss.enabled() {
            return Err(Refusal::Conflict(NO_RSS.into()));
        }
        let Some((index, table, _)) = snap.rss.table(engine) else {
            return Ok(None);
        };
        let counters = self
            .counters
            .buckets(index, table.len() as u32)
            .map_err(|e| Refusal::Failed(format!("{e:#}")))?;
        Ok(snap.rss.buckets(engine, &counters))
    }

    pub fn team_status(&self) -> Option<TeamStatusView> {
        let snap = self.snapshot();
        let cx = snap.cx();
        let mut view = snap.team.status(
            &cx,
            &snap.slots,
            |vm| {
                snap.slots
                    .vm(vm)
                    .and_then(|s| self.counters.team_vm(s).ok())
                    .unwrap_or_default()
            },
            self.events.counts("team"),
        )?;
        if let Ok(c) = self.counters.shaper() {
            view.shaper = xnic_common::shaper::ShapeCounter::ALL
                .iter()
                .map(|k| (k.name().to_string(), c[*k as usize]))
                .collect();
        }
        Some(view)
    }

    pub fn team_events(&self, since: u64) -> Option<Vec<TeamEvent>> {
        let snap = self.snapshot();
        snap.team.enabled().then(|| {
            self.events
                .since(since, |e| e.feature == "team")
                .into_iter()
                .filter_map(|e| match e.detail {
                    EventDetail::Team(t) => Some(t),
                    _ => None,
                })
                .collect()
        })
    }

    /// Events after `since` of feature or kind `kind` (all when `None`); waits up to `wait`
    /// for the first when there are none yet.
    pub async fn events(&self, since: u64, kind: Option<String>, wait: Duration) -> Vec<Event> {
        let keep = move |e: &Event| {
            kind.as_ref()
                .is_none_or(|k| &e.feature == k || &e.kind == k)
        };
        self.events.wait_since(since, wait, keep).await
    }

    /// Makes a change of the desired state through the reconciler.
    pub async fn change(
        &self,
        change: Change,
        expect: Option<u64>,
        dry_run: bool,
    ) -> Result<ChangeView, Refusal> {
        let what = change.describe();
        let out = self.handle.change(change, expect, dry_run, None).await;
        self.note_refusal(&what, dry_run, out)
    }

    /// Puts a refused change in the event stream (a SIGHUP has no one to answer), and passes
    /// the outcome on.
    fn note_refusal(
        &self,
        what: &str,
        dry_run: bool,
        out: Result<ChangeView, Refusal>,
    ) -> Result<ChangeView, Refusal> {
        if let Err(refusal) = &out
            && !dry_run
        {
            self.events.push([NewEvent::new(
                "config",
                "refused",
                self.snapshot().config.instance.clone(),
                format!("{what}: refused: {}", refusal.message()),
            )]);
        }
        out
    }

    /// Replaces the desired state with a configuration file's text (`file` names it in
    /// errors). When it is the daemon's own file, a restart compares against this text.
    pub async fn apply(
        &self,
        text: &str,
        file: &str,
        expect: Option<u64>,
        dry_run: bool,
    ) -> Result<ChangeView, Refusal> {
        let name = if file.is_empty() {
            "(request body)"
        } else {
            file
        };
        let what = format!("apply {name}");
        let config = match crate::config::parse(text, Path::new(name)) {
            Ok(c) => c,
            Err(e) => {
                let refused = Err(Refusal::Invalid(e.to_string()));
                return self.note_refusal(&what, dry_run, refused);
            }
        };
        let snap = self.snapshot();
        let own = !file.is_empty()
            && std::fs::canonicalize(file).ok().as_deref() == Some(snap.config_file.as_path());
        let out = self
            .handle
            .change(
                Change::Replace(Box::new(config)),
                expect,
                dry_run,
                own.then(|| text.to_string()),
            )
            .await;
        self.note_refusal(&what, dry_run, out)
    }

    pub fn desired(&self) -> anyhow::Result<DesiredView> {
        let snap = self.snapshot();
        Ok(DesiredView {
            generation: snap.generation,
            config: toml::to_string(&*snap.config)
                .context("cannot write the desired state as TOML")?,
            state_file: snap.state_file.display().to_string(),
            config_file: snap.config_file.display().to_string(),
        })
    }

    pub fn generation(&self) -> u64 {
        self.snapshot().generation
    }

    /// Removes the dataplane and the kept desired state, and stops the daemon (after the
    /// answer is sent).
    pub async fn down(&self) -> anyhow::Result<DownView> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.handle.send(Command::Down(reply));
        let removed = rx.await.map_err(|_| anyhow!("the daemon is stopping"))??;
        let _ = self.stop.send(Some(Stop::Down));
        Ok(DownView {
            links_removed: removed.links,
            maps_removed: removed.maps.len(),
        })
    }

    pub fn metrics(&self) -> anyhow::Result<String> {
        let stats = self.stats()?;
        metrics::encode(metrics::Snapshot {
            instance: self.instance.clone(),
            stats,
            rss: self.rss_status(),
            team: self.team_status(),
            flows: self.flow_stats().ok().filter(|f| f.enabled || f.in_use > 0),
            vnics: self.vnic_metrics(),
            events: self.events.all_counts(),
            generation: self.generation(),
            rings: rings_worker(&self.instance),
        })
        .map_err(|e| anyhow!("cannot encode metrics: {e}"))
    }
}

/// How long a scrape waits for the rings worker: it answers within a millisecond when
/// busy polling and at its next wake-up otherwise; one stuck must not stall the scrape.
const RINGS_STATUS_TIMEOUT: Duration = Duration::from_millis(250);

/// The instance's rings worker's counters, if one was started (its socket is there).
fn rings_worker(instance: &str) -> Option<metrics::RingsWorker> {
    let path = crate::config::rings_socket_path(instance);
    if !path.exists() {
        return None;
    }
    let status = xnic_rings::client::Client::connect(&path).and_then(|mut c| {
        c.set_timeout(Some(RINGS_STATUS_TIMEOUT))?;
        c.status()
    });
    Some(match status {
        Ok(s) => metrics::RingsWorker::Up(s),
        Err(e) => {
            tracing::debug!(error = %e, "the rings worker did not answer the metrics scrape");
            metrics::RingsWorker::Down
        }
    })
}

pub(crate) const NO_RSS: &str = "RSS is not configured: add an [rss] section to the configuration";

/// A thread of the daemon that panics takes the process with it: a daemon whose reconciler
/// died would go on answering reads while refusing every change. The pinned dataplane keeps
/// forwarding; a supervisor starts a new daemon, which adopts it.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!(panic = %info, "a daemon thread panicked: exiting (the dataplane keeps forwarding)");
        std::process::exit(101);
    }));
}

pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo");
    }
    Ok(())
}

/// Runs the daemon in the foreground until it is told to stop.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config_path).with_context(|| {
        format!(
            "{}: cannot read the configuration file",
            config_path.display()
        )
    })?;
    let config = crate::config::parse(&text, config_path)?;
    crate::logging::init(&config.daemon.log_level);
    require_root("xnic run")?;
    exit_on_panic();
    if let Some(ns) = &config.netns {
        // Before any thread exists, so the whole daemon lives in the namespace.
        crate::netns::enter(ns)?;
    }
    let config_path = std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, text, config_path))
}

/// Removes the control socket when the daemon ends, however it ends.
struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Holds `/run/xnic/<instance>.lock` for the daemon's lifetime: one daemon per instance. The
/// kernel releases it when the process dies, however it dies; a daemon that stops removes
/// the file while it still holds the lock.
struct InstanceLock {
    path: PathBuf,
    _lock: Flock<std::fs::File>,
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock_instance(instance: &str) -> anyhow::Result<InstanceLock> {
    std::fs::create_dir_all(crate::RUN_DIR)
        .with_context(|| format!("cannot create {}", crate::RUN_DIR))?;
    let path = Path::new(crate::RUN_DIR).join(format!("{instance}.lock"));
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let locked = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            anyhow!(
                "a daemon for instance {instance:?} is already running (it holds {}); \
                 stop it first, or use another instance name",
                path.display()
            )
        })?;
        // A daemon that stopped may have removed the file between our open and our lock:
        // then the lock is on a file nobody else can find. Try again on the current one.
        let same = std::fs::metadata(&path)
            .ok()
            .zip(locked.metadata().ok())
            .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
        if same {
            return Ok(InstanceLock {
                path,
                _lock: locked,
            });
        }
    }
}

/// Listens on the control socket, root-only. Called once the daemon is fully up, so a client
/// that can connect talks to a ready daemon.
fn bind_socket(path: &Path) -> anyhow::Result<(UnixListener, SocketGuard)> {
    // The instance lock is ours: whatever socket file exists is a dead daemon's.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot remove stale socket {}", path.display()));
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    let guard = SocketGuard(path.to_owned());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {} to root", path.display()))?;
    Ok((listener, guard))
}

async fn serve(config: Config, text: String, config_path: PathBuf) -> anyhow::Result<()> {
    let socket = crate::config::socket_path(&config.instance);
    let _lock = lock_instance(&config.instance)?;
    // Handlers first: a signal during start-up must not kill the daemon half-way.
    let (mut sigterm, mut sigint, mut sighup) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        )
    };

    // The desired state: kept from the last run while the file is unchanged.
    let store = Store::new(&config.instance);
    let kept = store.load()?;
    let (stored, note) = store::choose(kept, &config_path, &text, config);
    if let Some(why) = note {
        warn!(state = %store.dir().display(), "{why}: the configuration file replaces the desired state kept there");
    }
    crate::config::host::check_cpus(&stored.config)
        .map_err(|(f, m)| anyhow!("{}: {f}: {m}; nothing was changed", config_path.display()))?;
    let config = stored.config.clone();

    // Subscribed before the interfaces are read, so no change falls between the two.
    let watch = LinkWatch::subscribe()?;
    let links = Links::connect()?;
    let host = Interfaces::new(links.all().await?);
    let addresses = links.addresses().await?;
    for port in crate::features::base::wanted_ports(&config) {
        if host.get(&port.name).is_none() {
            match &port.vm {
                Some(vm) => {
                    info!(vm = %vm, port = %port.name, "port does not exist yet: the VM waits for it")
                }
                None => {
                    warn!(uplink = %port.name, "uplink does not exist yet: it is down until it appears")
                }
            }
        }
    }
    let max_flows = config
        .flows
        .as_ref()
        .map_or(xnic_common::flow::DEFAULT_MAX_FLOWS, |f| f.max_flows);
    let dp = Dataplane::open_sized(&config.instance, ebpf_log::level(), max_flows)?;
    if dp.created() {
        info!(pins = %dp.pins().path().display(), "created a new dataplane");
    } else {
        let created = dp.info().map(|i| i.created_unix).unwrap_or(0);
        info!(pins = %dp.pins().path().display(), created_unix = created, "adopting the pinned dataplane");
    }
    let pins = dp.pins().clone();
    let events = EventLog::default();
    let (mut reconciler, published) = reconcile::Reconciler::start(
        dp,
        stored,
        config_path.clone(),
        host,
        addresses,
        events.clone(),
    )?;
    let ebpf_logs = ebpf_log::start(reconciler.dataplane_mut().ebpf_mut());
    let (handle, reconciler_thread) = reconcile::spawn(reconciler, watch)?;
    let counters = Counters::open(&pins)?;
    let sampled = Arc::new(Mutex::new(Sampled::default()));
    let stop_sampler = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler_thread = sampler::spawn(
        &pins,
        published.clone(),
        handle.clone(),
        sampled.clone(),
        Duration::from_millis(config.daemon.stats_interval_ms),
        stop_sampler.clone(),
    )?;

    // The metrics listener before the control socket: a client that finds the socket up
    // finds /metrics up too.
    let metrics_listener = match &config.daemon.metrics_listen {
        Some(addr) => Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
            addr.clone(),
        )),
        None => None,
    };
    let (listener, _socket_guard) = bind_socket(&socket)?;
    {
        let snap = reconcile::current(&published);
        info!(
            instance = %config.instance,
            ports = crate::features::base::wanted_ports(&snap.config).len(),
            vms = snap.config.vms.len(),
            generation = snap.generation,
            socket = %socket.display(),
            "xnic is running"
        );
        if let Some(f) = &snap.config.fleet {
            match snap.vnic.host().map(|i| f.hosts[i].name.as_str()) {
                Some(h) => {
                    info!(host = %h, vnics = snap.config.vnics.len(), "forwarding for the fleet's VNICs")
                }
                None => warn!(
                    hosts = %f.hosts.iter().map(|h| format!("{} ({})", h.name, h.vtep)).collect::<Vec<_>>().join(", "),
                    "this host has none of [fleet]'s VTEP addresses: VNIC routing is off here until one is configured on an interface and the configuration applied again"
                ),
            }
        }
    }
    let (stop_tx, mut stop_rx) = watch::channel(None);
    let daemon = Arc::new(Daemon {
        instance: config.instance.clone(),
        handle: handle.clone(),
        published,
        counters,
        flow_reader: FlowReader::open(&pins)?,
        sampled,
        links,
        events,
        stop: stop_tx,
    });

    let signals = {
        let daemon = daemon.clone();
        let config_path = config_path.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sigterm.recv() => break,
                    _ = sigint.recv() => break,
                    _ = sighup.recv() => reload(&daemon, &config_path).await,
                }
            }
            info!("signal received: stopping; the dataplane keeps forwarding");
            let _ = daemon.stop.send(Some(Stop::Signal));
        })
    };
    let metrics = match metrics_listener {
        Some((listener, addr)) => {
            info!(%addr, "serving /metrics over TCP");
            let app = http::metrics_router(daemon.clone());
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.wait_for(Option::is_some).await;
                    })
                    .await;
            }))
        }
        None => None,
    };

    let app = http::router(daemon.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(Option::is_some).await;
        })
        .await
        .context("control API server failed")?;

    signals.abort();
    stop_sampler.store(true, std::sync::atomic::Ordering::Relaxed);
    handle.send(Command::Stop);
    let _ = reconciler_thread.join();
    let _ = sampler_thread.join();
    if let Some(m) = metrics {
        let _ = m.await;
    }
    drop(ebpf_logs);
    let stop = *daemon.stop.borrow();
    match stop {
        Some(Stop::Down) => info!("dataplane removed; daemon stopped"),
        _ => info!("daemon stopped; run `xnic down` to remove the dataplane"),
    }
    Ok(())
}

/// SIGHUP: the configuration file again, as `xnic apply` would; a bad file changes nothing.
async fn reload(daemon: &Daemon, config_path: &Path) {
    let text = match std::fs::read_to_string(config_path) {
        Ok(t) => t,
        Err(e) => {
            error!(file = %config_path.display(), error = %e, "SIGHUP: cannot read the configuration file; nothing was changed");
            return;
        }
    };
    match daemon
        .apply(&text, &config_path.display().to_string(), None, false)
        .await
    {
        Ok(v) if v.changes.is_empty() && v.at_restart.is_empty() => {
            info!(file = %config_path.display(), "SIGHUP: configuration reloaded; nothing changed")
        }
        Ok(v) => {
            info!(file = %config_path.display(), generation = v.generation, changes = ?v.changes, at_restart = ?v.at_restart, "SIGHUP: configuration applied")
        }
        Err(e) => error!(file = %config_path.display(), "SIGHUP: {e}; nothing was changed"),
    }
}
