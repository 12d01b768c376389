//! `xnic monitor`'s hold on the dataplane: the lease in `MONITOR_CONFIG`, the drop events in
//! `MONITOR_RING` and the per-CPU counters, through the pinned maps (the monitor is a CLI
//! process beside the daemon, like `xnic rings run`).

use std::{
    os::fd::AsFd as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use xnic_common::monitor::{
    CaptureFilter, DropEvent, FlowMatch, LEASE_NS, MonitorConfig, MonitorCounter, WATCH_ADDR,
    WATCH_L4_PORT, WATCH_PROTO, WatchConfig, WatchCounter,
};

use super::{
    PinDir,
    flows::pinned,
    registry::{self, Registered},
};

/// How often [`Monitor::follow`] renews the lease (it lasts [`LEASE_NS`]).
const RENEW_EVERY: Duration = Duration::from_millis(500);

/// How long [`Monitor::follow`] waits for an event before it asks its caller again.
pub const WAIT: Duration = Duration::from_millis(100);

/// What the dataplane is asked to report.
#[derive(Clone, Copy, Debug)]
pub struct MonitorSettings {
    pub sample: u32,
    pub rate: u32,
    pub burst: u32,
}

/// The flow `xnic monitor --trace` watches: each field given narrows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    pub addr: Option<std::net::IpAddr>,
    pub l4_port: Option<u16>,
    /// The IP protocol number.
    pub proto: Option<u8>,
}

impl Watch {
    fn config(&self, limits: MonitorConfig) -> WatchConfig {
        WatchConfig {
            limits,
            flow: self.flow_match(),
        }
    }

    /// The dataplane's form of it (nothing given: `flags` 0).
    fn flow_match(&self) -> FlowMatch {
        let mut c = FlowMatch::default();
        if let Some(addr) = self.addr {
            // As the parser keeps addresses: IPv4 mapped into IPv6.
            c.addr = match addr {
                std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                std::net::IpAddr::V6(v6) => v6.octets(),
            };
            c.flags |= WATCH_ADDR;
        }
        if let Some(port) = self.l4_port {
            c.l4_port = port;
            c.flags |= WATCH_L4_PORT;
        }
        if let Some(proto) = self.proto {
            c.proto = proto;
            c.flags |= WATCH_PROTO;
        }
        c
    }
}

struct Watched {
    config: Array<MapData, WatchConfig>,
    flow: Watch,
    stats: PerCpuArray<MapData, u64>,
}

pub struct Monitor {
    ring: RingBuf<MapData>,
    /// While a flow is watched: `WATCH_CONFIG`, what to write there, and `WATCH_STATS`.
    watch: Option<Watched>,
    config: Array<MapData, MonitorConfig>,
    stats: PerCpuArray<MapData, u64>,
    settings: MonitorSettings,
    /// The port a capture takes (0: a monitor of drops).
    ifindex: u32,
}

/// `CLOCK_MONOTONIC` now, the clock `bpf_ktime_get_ns` reads.
fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

impl Monitor {
    /// Opens instance `pins`' monitor maps and takes the lease: dropped frames.
    pub fn open(pins: &PinDir, settings: MonitorSettings) -> anyhow::Result<Monitor> {
        Self::stream(
            pins,
            settings,
            0,
            registry::MONITOR_RING::NAME,
            registry::MONITOR_CONFIG::NAME,
        )
    }

    /// Opens instance `pins`' capture maps and takes their lease: every frame of the port
    /// `ifindex` that `filter` keeps (all, when it chooses nothing), at `points`
    /// (`CAPTURE_IN`: as it arrived; `CAPTURE_OUT`: as delivered, with its action).
    pub fn capture(
        pins: &PinDir,
        settings: MonitorSettings,
        ifindex: u32,
        filter: Watch,
        points: u32,
    ) -> anyhow::Result<Monitor> {
        // The filter first: the lease below turns the capture on.
        let mut f: Array<MapData, CaptureFilter> =
            Array::try_from(Map::Array(pinned(pins, registry::CAPTURE_FILTER::NAME)?))?;
        let value = CaptureFilter {
            flow: filter.flow_match(),
            points,
            _pad: 0,
        };
        f.set(0, value, 0).context("cannot write CAPTURE_FILTER")?;
        Self::stream(
            pins,
            settings,
            ifindex,
            registry::CAPTURE_RING::NAME,
            registry::CAPTURE_CONFIG::NAME,
        )
    }

    fn stream(
        pins: &PinDir,
        settings: MonitorSettings,
        ifindex: u32,
        ring: &str,
        config: &str,
    ) -> anyhow::Result<Monitor> {
        let mut m = Monitor {
            ring: RingBuf::try_from(Map::RingBuf(pinned(pins, ring)?))?,
            config: Array::try_from(Map::Array(pinned(pins, config)?))?,
            stats: PerCpuArray::try_from(Map::PerCpuArray(pinned(
                pins,
                registry::MONITOR_STATS::NAME,
            )?))?,
            settings,
            ifindex,
            watch: None,
        };
        // What is in the ring was written under an earlier lease (a monitor that exited
        // before it read everything): not this one's.
        while m.ring.next().is_some() {}
        m.renew()?;
        Ok(m)
    }

    /// Also reports every frame of `flow`, with the stages it passed and its verdict (a
    /// monitor of drops only; the dataplane must have the watch maps).
    pub fn watch(&mut self, pins: &PinDir, flow: Watch) -> anyhow::Result<()> {
        if flow == Watch::default() {
            anyhow::bail!("a watched flow needs an address, a port or a protocol");
        }
        self.watch = Some(Watched {
            config: Array::try_from(Map::Array(pinned(pins, registry::WATCH_CONFIG::NAME)?))?,
            flow,
            stats: PerCpuArray::try_from(Map::PerCpuArray(pinned(
                pins,
                registry::WATCH_STATS::NAME,
            )?))?,
        });
        self.renew()
    }

    /// Extends the lease (call at least once a second): the dataplane stops reporting
    /// [`LEASE_NS`] after the last renewal by any monitor, so one that exits or dies costs
    /// nothing for long, and never turns off another. Each renewal sets its own settings.
    pub fn renew(&mut self) -> anyhow::Result<()> {
        let s = self.settings;
        let config = MonitorConfig {
            until_ns: monotonic_ns() + LEASE_NS,
            sample: s.sample,
            rate: s.rate,
            burst: s.burst,
            ifindex: self.ifindex,
        };
        self.config
            .set(0, config, 0)
            .context("cannot write MONITOR_CONFIG")?;
        if let Some(w) = &mut self.watch {
            w.config
                .set(0, w.flow.config(config), 0)
                .context("cannot write WATCH_CONFIG")?;
        }
        Ok(())
    }

    /// Holds the lease and hands `on` each event as it comes, and `None` at least every
    /// [`WAIT`] without one (for the caller's own stop conditions), until `on` answers false.
    pub fn follow(
        &mut self,
        mut on: impl FnMut(Option<DropEvent>) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let mut renewed = Instant::now();
        loop {
            if renewed.elapsed() >= RENEW_EVERY {
                self.renew()?;
                renewed = Instant::now();
            }
            let e = self.next(WAIT)?;
            if !on(e)? {
                return Ok(());
            }
        }
    }

    /// The next event, waiting up to `timeout` for one.
    pub fn next(&mut self, timeout: Duration) -> anyhow::Result<Option<DropEvent>> {
        if let Some(e) = self.take() {
            return Ok(Some(e));
        }
        let fd = self.ring.as_fd();
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("cannot wait on MONITOR_RING"),
        }
        Ok(self.take())
    }

    fn take(&mut self) -> Option<DropEvent> {
        let item = self.ring.next()?;
        (item.len() >= size_of::<DropEvent>()).then(|| {
            // SAFETY: the programs write whole `DropEvent`s (plain integers and bytes, any
            // bit pattern valid); the length was checked; the read is unaligned-safe.
            unsafe { (item.as_ptr() as *const DropEvent).read_unaligned() }
        })
    }

    /// The monitor's counters, summed over CPUs (with the watched flow's, when one is).
    pub fn counters(&self) -> anyhow::Result<Vec<(&'static str, u64)>> {
        let mut out: Vec<(&'static str, u64)> = MonitorCounter::ALL
            .iter()
            .map(|c| {
                let v = self
                    .stats
                    .get(&(*c as u32), 0)
                    .context("cannot read MONITOR_STATS")?;
                Ok((c.name(), v.iter().sum()))
            })
            .collect::<anyhow::Result<_>>()?;
        if let Some(w) = &self.watch {
            for c in WatchCounter::ALL {
                let v = w
                    .stats
                    .get(&(c as u32), 0)
                    .context("cannot read WATCH_STATS")?;
                out.push((c.name(), v.iter().sum()));
            }
        }
        Ok(out)
    }
}
