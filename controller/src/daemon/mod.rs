//! `xnic run`: the daemon. Loads or adopts the dataplane, brings it in line with the
//! configuration, samples counters, and serves the control API until a signal or
//! `POST /v1/down`.
//!
//! On SIGTERM/SIGINT (or a crash) the dataplane stays attached and pinned: forwarding goes on
//! and the next daemon adopts it. Only `xnic down` removes it.

mod ebpf_log;
pub mod rss;
pub mod state;
pub mod team;
mod views;

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use nix::fcntl::{Flock, FlockArg};
use tokio::{net::UnixListener, sync::watch};
use tracing::{info, warn};

use self::state::State;
use crate::{
    api::{
        self,
        types::{
            DownView, RssBucketView, RssEngineAddRequest, RssEngineRemoved, RssEngineSetRequest,
            RssEngineView, RssEvent, RssSetRequest, RssStatusView, RssVmView, StatsView,
            StatusView, TeamEvent, TeamStatusView, VmView,
        },
    },
    config::Config,
    dataplane::{self, Dataplane},
    monitor::{
        links::Links,
        sample::{Rates, Sample},
    },
};

/// Why an API request failed, for the HTTP status.
#[derive(Debug)]
pub enum ApiFailure {
    NotConfigured,
    NotFound(String),
    BadRequest(String),
    Internal(String),
}

/// Why the daemon stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A signal: leave the dataplane running for the next daemon.
    Signal,
    /// `POST /v1/down`: remove the dataplane.
    Down,
}

/// The running daemon, shared by the API handlers and background tasks.
pub struct Daemon {
    state: Mutex<State>,
    /// The latest counter sample and the rates it gave.
    sampled: Mutex<(Option<Sample>, Rates)>,
    links: Links,
    stop: watch::Sender<Option<Stop>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A handler that panicked mid-update leaves nothing inconsistent we rely on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Daemon {
    pub fn instance(&self) -> String {
        lock(&self.state).config.instance.clone()
    }

    fn fresh(&self, state: &State) -> anyhow::Result<(Sample, Rates)> {
        let sample = Sample::take(state)?;
        let rates = lock(&self.sampled).1.clone();
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
        let state = lock(&self.state);
        let (sample, _) = self.fresh(&state)?;
        Ok(views::status(&state, &sample, &links))
    }

    pub fn vms(&self) -> anyhow::Result<Vec<VmView>> {
        let state = lock(&self.state);
        let (sample, rates) = self.fresh(&state)?;
        Ok((0..state.vms.len())
            .map(|i| views::vm(&state, &sample, &rates, i))
            .collect())
    }

    /// `Err` carries the known VM names when there is no VM `name`.
    pub fn vm(&self, name: &str) -> anyhow::Result<Result<VmView, Vec<String>>> {
        let state = lock(&self.state);
        let Some(index) = state.vms.iter().position(|v| v.name == name) else {
            return Ok(Err(state.vms.iter().map(|v| v.name.clone()).collect()));
        };
        let (sample, rates) = self.fresh(&state)?;
        Ok(Ok(views::vm(&state, &sample, &rates, index)))
    }

    pub fn stats(&self) -> anyhow::Result<StatsView> {
        let state = lock(&self.state);
        let (sample, rates) = self.fresh(&state)?;
        Ok(views::stats(&state, &sample, &rates))
    }

    pub fn rss_status(&self) -> Option<RssStatusView> {
        let state = lock(&self.state);
        let rss = state.rss.as_ref()?;
        Some(rss.status(&state.vms, &state.dataplane))
    }

    pub fn rss_events(&self, since: u64) -> Option<Vec<RssEvent>> {
        let state = lock(&self.state);
        Some(state.rss.as_ref()?.events(since))
    }

    /// `Ok(None)`: no engine of that name. `Err`: RSS is not configured.
    pub fn rss_buckets(&self, engine: &str) -> Result<Option<Vec<RssBucketView>>, ApiFailure> {
        let state = lock(&self.state);
        let rss = state.rss.as_ref().ok_or(ApiFailure::NotConfigured)?;
        rss.buckets(engine, &state.dataplane)
            .map_err(|e| ApiFailure::Internal(format!("{e:#}")))
    }

    pub fn rss_set(&self, vm: &str, req: &RssSetRequest) -> Result<RssVmView, ApiFailure> {
        self.with_rss(|rss, dp, vms| {
            let Some(index) = vms.iter().position(|v| v.name == vm) else {
                let known: Vec<_> = vms.iter().map(|v| v.name.clone()).collect();
                return Err(ApiFailure::NotFound(format!(
                    "no VM named {vm:?}; known VMs: {}",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                )));
            };
            rss.set(
                dp,
                vms,
                index,
                req.state.as_deref(),
                req.priority,
                req.prefer_dedicated,
            )
            .map_err(ApiFailure::BadRequest)?;
            Ok(rss.status(vms, dp).vms[index].clone())
        })
    }

    /// Runs `f` on the RSS runtime with the dataplane and VMs, or says RSS is not configured.
    fn with_rss<T>(
        &self,
        f: impl FnOnce(
            &mut rss::RssRuntime,
            &mut crate::dataplane::Dataplane,
            &[state::Vm],
        ) -> Result<T, ApiFailure>,
    ) -> Result<T, ApiFailure> {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        let rss = state.rss.as_mut().ok_or(ApiFailure::NotConfigured)?;
        f(rss, &mut state.dataplane, &state.vms)
    }

    pub fn rss_engine_add(&self, req: &RssEngineAddRequest) -> Result<RssEngineView, ApiFailure> {
        self.with_rss(|rss, dp, vms| {
            let ec = crate::config::EngineConfig {
                name: req.name.clone(),
                kind: req.kind,
                cpus: req.cpus.clone(),
            };
            rss.add_engine(dp, &ec).map_err(ApiFailure::BadRequest)?;
            rss.engine_view(&req.name, vms, dp)
                .ok_or_else(|| ApiFailure::Internal("the new engine is missing".into()))
        })
    }

    pub fn rss_engine_set(
        &self,
        name: &str,
        req: &RssEngineSetRequest,
    ) -> Result<RssEngineView, ApiFailure> {
        self.with_rss(|rss, dp, vms| {
            if rss.policy.engine_index(name).is_none() {
                return Err(ApiFailure::NotFound(format!(
                    "no RSS engine named {name:?}"
                )));
            }
            rss.set_engine_cpus(dp, vms, name, req.cpus.clone())
                .map_err(ApiFailure::BadRequest)?;
            rss.engine_view(name, vms, dp)
                .ok_or_else(|| ApiFailure::Internal("the engine is missing".into()))
        })
    }

    pub fn rss_engine_remove(&self, name: &str) -> Result<RssEngineRemoved, ApiFailure> {
        self.with_rss(|rss, dp, vms| {
            if rss.policy.engine_index(name).is_none() {
                return Err(ApiFailure::NotFound(format!(
                    "no RSS engine named {name:?}"
                )));
            }
            let moved = rss
                .remove_engine(dp, vms, name)
                .map_err(ApiFailure::BadRequest)?;
            Ok(RssEngineRemoved {
                name: name.to_string(),
                vms_to_no_rss: moved,
            })
        })
    }

    pub fn team_status(&self) -> Option<TeamStatusView> {
        let state = lock(&self.state);
        Some(state.team.as_ref()?.status(&state.dataplane))
    }

    pub fn team_events(&self, since: u64) -> Option<Vec<TeamEvent>> {
        let state = lock(&self.state);
        Some(state.team.as_ref()?.events(since))
    }

    /// The kernel says interface `ifindex` is (not) up; `seen` is when that reached us.
    fn team_link(&self, ifindex: u32, up: bool, seen: std::time::Instant) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if let Some(team) = state.team.as_mut()
            && let Err(e) = team.link(&mut state.dataplane, &state.vms, ifindex, up, seen)
        {
            warn!(error = %e, ifindex, "applying a team link change failed");
        }
    }

    fn team_tick(&self) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if let Some(team) = state.team.as_mut()
            && let Err(e) = team.tick(&mut state.dataplane, &state.vms)
        {
            warn!(error = %e, "team period failed");
        }
    }

    fn rss_tick(&self) {
        let mut guard = lock(&self.state);
        let state = &mut *guard;
        if let Some(rss) = state.rss.as_mut()
            && let Err(e) = rss.tick(&mut state.dataplane, &state.vms)
        {
            warn!(error = %e, "RSS period failed");
        }
    }

    /// Removes the dataplane and stops the daemon (after the answer is sent).
    pub fn down(&self) -> anyhow::Result<DownView> {
        let state = lock(&self.state);
        let removed = dataplane::teardown(&state.config.instance)?;
        let _ = self.stop.send(Some(Stop::Down));
        Ok(DownView {
            links_removed: removed.links,
            maps_removed: removed.maps.len(),
        })
    }

    fn sample_tick(&self) {
        let state = lock(&self.state);
        match Sample::take(&state) {
            Ok(now) => {
                let mut sampled = lock(&self.sampled);
                if let Some(prev) = &sampled.0 {
                    sampled.1 = Rates::between(prev, &now);
                }
                sampled.0 = Some(now);
            }
            Err(e) => warn!(error = %e, "reading counters failed"),
        }
    }
}

/// A new hash seed for a dataplane that has none yet (never 0: 0 means "not chosen").
fn fresh_seed() -> u32 {
    let mut b = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    let seed = if random {
        u32::from_ne_bytes(b)
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u32) ^ std::process::id().rotate_left(16)
    };
    seed | 1
}

/// Runs `f` on the daemon every `period` until the task is aborted.
fn every(period: Duration, daemon: &Arc<Daemon>, f: fn(&Daemon)) -> tokio::task::JoinHandle<()> {
    let daemon = daemon.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            f(&daemon);
        }
    })
}

pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo");
    }
    Ok(())
}

/// Runs the daemon in the foreground until it is told to stop.
pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    crate::logging::init(&config.daemon.log_level);
    require_root("xnic run")?;
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
    runtime.block_on(serve(config, config_path))
}

/// Removes the control socket when the daemon ends, however it ends.
struct SocketGuard(PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Holds `/run/xnic/<instance>.lock` for the daemon's lifetime: one daemon per instance. The
/// kernel releases it when the process dies, however it dies.
fn lock_instance(instance: &str) -> anyhow::Result<Flock<std::fs::File>> {
    std::fs::create_dir_all(crate::RUN_DIR)
        .with_context(|| format!("cannot create {}", crate::RUN_DIR))?;
    let path = Path::new(crate::RUN_DIR).join(format!("{instance}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow!(
            "a daemon for instance {instance:?} is already running (it holds {}); \
             stop it first, or use another instance name",
            path.display()
        )
    })
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

async fn serve(config: Config, config_path: PathBuf) -> anyhow::Result<()> {
    let socket = config.socket_path();
    let _lock = lock_instance(&config.instance)?;
    if let Some(rss) = &config.rss {
        rss::check_cpus(rss).map_err(|e| anyhow!("{e:#}; nothing was changed"))?;
    }
    // Handlers first: a signal during start-up must not kill the daemon half-way.
    let (mut sigterm, mut sigint) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        )
    };

    let links = Links::connect()?;
    let interfaces = state::resolve_interfaces(&config, &links).await?;
    let mut dp = Dataplane::open(&config.instance, ebpf_log::level())?;
    if dp.created() {
        info!(pins = %dp.pins().path().display(), "created a new dataplane");
    } else {
        let created = dp.info().map(|i| i.created_unix).unwrap_or(0);
        info!(pins = %dp.pins().path().display(), created_unix = created, "adopting the pinned dataplane");
    }
    let ebpf_logs = ebpf_log::start(dp.ebpf_mut());
    let stats_interval = Duration::from_millis(config.daemon.stats_interval_ms);
    let rss_period = config
        .rss
        .as_ref()
        .map(|r| Duration::from_millis(r.period_ms));
    let metrics_listen = config.daemon.metrics_listen.clone();
    let team_period = config
        .teams
        .iter()
        .map(|t| t.period_ms)
        .min()
        .map(Duration::from_millis);
    // Subscribed before the state is read, so no link change falls between the two.
    let link_events = if team_period.is_some() {
        Some(crate::monitor::links::LinkWatch::subscribe()?)
    } else {
        None
    };
    let state = state::start(config, config_path, dp, &interfaces)?;
    let (listener, _socket_guard) = bind_socket(&socket)?;
    info!(
        instance = %state.config.instance,
        ports = state.ports.len(),
        vms = state.vms.len(),
        socket = %socket.display(),
        "xnic is running"
    );

    let (stop_tx, mut stop_rx) = watch::channel(None);
    let daemon = Arc::new(Daemon {
        state: Mutex::new(state),
        sampled: Mutex::new((None, Rates::default())),
        links,
        stop: stop_tx,
    });

    let sampler = every(stats_interval, &daemon, Daemon::sample_tick);
    let rss_loop = rss_period.map(|period| every(period, &daemon, Daemon::rss_tick));
    let team_loop = team_period.map(|period| every(period, &daemon, Daemon::team_tick));
    // A thread of its own (see `LinkWatch::run`); it holds the daemon weakly, so stopping
    // does not wait for it.
    if let Some(watch) = link_events {
        let daemon = Arc::downgrade(&daemon);
        watch.run(move |ifindex, up| {
            let seen = std::time::Instant::now();
            if let Some(daemon) = daemon.upgrade() {
                daemon.team_link(ifindex, up, seen);
            }
        })?;
    }
    let signals = {
        let daemon = daemon.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
            info!("signal received: stopping; the dataplane keeps forwarding");
            let _ = daemon.stop.send(Some(Stop::Signal));
        })
    };
    let metrics = match metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(&addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?;
            info!(%addr, "serving /metrics over TCP");
            let app = api::server::metrics_router(daemon.clone());
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

    let app = api::server::router(daemon.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop_rx.wait_for(Option::is_some).await;
        })
        .await
        .context("control API server failed")?;

    sampler.abort();
    signals.abort();
    for task in [rss_loop, team_loop].into_iter().flatten() {
        task.abort();
    }
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
