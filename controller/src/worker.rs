//! The rings worker as a process (`xnic rings run`): in the uplink's network namespace, on
//! its own CPUs, holding the instance's pinned XSK_SOCKS and ROCE_QPS, until SIGTERM or
//! SIGINT.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use nix::{
    sched::{CpuSet, sched_setaffinity},
    sys::signal::{SigHandler, Signal, signal},
    unistd::Pid,
};
use tracing::info;
use xnic_rings::{
    engine::QpConfig,
    worker::{self, WorkerConfig},
    xsk::XskConfig,
};

use crate::dataplane::{PinDir, RingsMaps};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// What `xnic rings run` was asked.
pub struct WorkerArgs {
    pub instance: String,
    pub interface: String,
    pub queue: u32,
    pub netns: Option<String>,
    pub cpus: Option<Vec<u32>>,
    pub busy_poll: std::time::Duration,
}

pub fn run(a: WorkerArgs) -> anyhow::Result<()> {
    if let Some(ns) = &a.netns {
        crate::netns::enter(ns)?;
    }
    if let Some(cpus) = &a.cpus {
        let mut set = CpuSet::new();
        for c in cpus {
            set.set(*c as usize)
                .with_context(|| format!("CPU {c} is out of range"))?;
        }
        sched_setaffinity(Pid::from_raw(0), &set)
            .with_context(|| format!("cannot run on CPUs {cpus:?}"))?;
    }
    let pins = PinDir::new(&a.instance);
    let mut maps = RingsMaps::open(&pins).with_context(|| {
        format!(
            "instance {:?} has no dataplane with transaction rings: start its daemon first",
            a.instance
        )
    })?;
    // One worker serves an instance: queue pairs a previous one left (it was killed) are
    // no longer anyone's.
    for qp in maps.served() {
        maps.unserve(qp)?;
    }
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { signal(sig, SigHandler::Handler(stop)) }
            .with_context(|| format!("cannot handle {sig}"))?;
    }
    let control = crate::config::rings_socket_path(&a.instance);
    info!(
        interface = %a.interface,
        queue = a.queue,
        control = %control.display(),
        "rings worker running"
    );
    let config = WorkerConfig {
        interface: a.interface.clone(),
        queue: a.queue,
        control,
        qp: QpConfig::default(),
        xsk: XskConfig::default(),
        busy_poll: a.busy_poll,
    };
    worker::run(config, &mut maps, &STOP)
        .with_context(|| format!("the rings worker on {} stopped", a.interface))?;
    info!("rings worker stopped");
    Ok(())
}
