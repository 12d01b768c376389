//! `monitor`: what `xnic monitor` costs a CPU that drops a flood of frames. A writer fills a
//! tap as QEMU does with frames from a MAC the VM port does not own (every one a
//! `spoofed_mac` drop in `xnic_vm`, inside the write), as fast as the tap takes them: its rate
//! is the rate the dropping program sustains. Interleaved rounds of: no monitor (the
//! baseline), a monitor at its default rate limit, and a monitor asked for every drop; the
//! monitor is a thread draining the ring as `xnic monitor` does.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::bail;
use etherparse::PacketBuilder;
use xnic::{
    dataplane::{Dataplane, Monitor, MonitorSettings, PinDir},
    lab::ip,
    netns,
    policy::plan::Image,
};
use xnic_common::{maps::PortRole, monitor::DEFAULT_RATE};

use crate::{
    dataplane::{DataplaneGuard, Tap, with_vm_port},
    flag,
    report::{Better, Report, median},
};

const SPOOFED_MAC: [u8; 6] = [0x02, 0x66, 0, 0, 0, 0x01];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Off,
    Limited,
    Everything,
}

/// A monitor thread: holds the lease and drains the ring until stopped; events it read.
struct Reader {
    stop: Arc<AtomicBool>,
    events: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl Reader {
    fn start(instance: &str, settings: MonitorSettings) -> anyhow::Result<Reader> {
        let stop = Arc::new(AtomicBool::new(false));
        let events = Arc::new(AtomicU64::new(0));
        let mut m = Monitor::open(&PinDir::new(instance), settings)?;
        let (s, e) = (stop.clone(), events.clone());
        let thread = std::thread::spawn(move || {
            m.follow(|event| {
                if event.is_some() {
                    e.fetch_add(1, Ordering::Relaxed);
                }
                Ok(!s.load(Ordering::Relaxed))
            })
        });
        Ok(Reader {
            stop,
            events,
            thread,
        })
    }

    fn stop(self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the monitor thread panicked"))??;
        // Let the lease run out before the next scenario.
        std::thread::sleep(Duration::from_millis(2200));
        Ok(self.events.load(Ordering::Relaxed))
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the monitor benchmark needs root (BPF, network namespaces)");
    }
    let secs: f64 = flag(args, "--secs", 3.0)?;
    let rounds: usize = flag(args, "--rounds", 3)?;
    let id = std::process::id();
    let ns = format!("xbench{id}-mon");
    ip(&["netns", "add", &ns])?;
    let _ns = NsGuard(ns.clone());
    netns::enter(&ns)?;
    let instance = format!("xbench{id}m");
    let _guard = DataplaneGuard(instance.clone());
    let mut dp = Dataplane::open(&instance, 3)?;
    let tap = Tap::create("xmon0", &ns)?;
    let image = Image::default();
    dp.write_image(&image, with_vm_port(&image, tap.ifindex, 1))?;
    dp.attach(
        "xmon0",
        tap.ifindex,
        PortRole::Vm,
        xnic::config::XdpModePref::Native,
        None,
    )?;
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(SPOOFED_MAC, [0x02, 0x99, 0, 0, 0, 1])
        .ipv4([10, 99, 0, 2], [10, 99, 0, 1], 64)
        .udp(4000, 9)
        .write(&mut frame, &[0u8; 18])?;

    let mut rates: Vec<(Scenario, Vec<f64>, Vec<f64>)> =
        [Scenario::Off, Scenario::Limited, Scenario::Everything]
            .into_iter()
            .map(|s| (s, Vec::new(), Vec::new()))
            .collect();
    for round in 0..rounds {
        for (scenario, pps, events) in &mut rates {
            let reader = match scenario {
                Scenario::Off => None,
                Scenario::Limited => Some(Reader::start(
                    &instance,
                    MonitorSettings {
                        sample: 1,
                        rate: DEFAULT_RATE,
                        burst: DEFAULT_RATE / 10,
                    },
                )?),
                Scenario::Everything => Some(Reader::start(
                    &instance,
                    MonitorSettings {
                        sample: 1,
                        rate: u32::MAX,
                        burst: u32::MAX,
                    },
                )?),
            };
            let rate = tap.blast(&frame, secs)?;
            let read = match reader {
                Some(r) => r.stop()?,
                None => 0,
            };
            eprintln!("round {round}: {rate:.0} frames/s, {read} events read");
            pps.push(rate);
            events.push(read as f64 / secs);
        }
    }
    dp.detach("xmon0")?;

    let get = |s: Scenario| {
        let (_, p, e) = rates
            .iter()
            .find(|(x, _, _)| *x == s)
            .expect("every scenario ran");
        (median(p.clone()), median(e.clone()))
    };
    let (off, _) = get(Scenario::Off);
    let (limited, limited_events) = get(Scenario::Limited);
    let (all, all_events) = get(Scenario::Everything);
    let mut report = Report::new("monitor");
    report.notes.push(format!(
        "A writer fills a tap (as QEMU writes one) with 64-byte frames from a MAC its VM port does not own: xnic_vm drops each one (spoofed_mac) inside the write, so the writer's rate is what the dropping CPU sustains. Each scenario runs {secs} s, {rounds} interleaved rounds, median reported. The monitor is a thread draining the ring as `xnic monitor` does (decoding and printing left out). Events read per second: {limited_events:.0} at the default limit ({DEFAULT_RATE} a second per CPU), {all_events:.0} asking for every drop."
    ));
    report.add(
        "frames dropped per second",
        &format!("monitor on, default rate limit ({DEFAULT_RATE} events/s per CPU)"),
        "frames/s",
        Better::Higher,
        limited,
        &[("the same flood, monitor off (same run)", off)],
    );
    report.add(
        "frames dropped per second",
        "monitor on, every drop reported (no sampling, no limit)",
        "frames/s",
        Better::Higher,
        all,
        &[("the same flood, monitor off (same run)", off)],
    );
    print!("{}", report.markdown());
    report.write()?;
    Ok(())
}

struct NsGuard(String);

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = netns::remove(&self.0);
    }
}
