//! `xnic capture PORT [-w FILE]`: frames of one port as XDP delivered them, after the
//! pipeline, with the verdict each got, like `xdpdump`: printed one line each, or written as
//! pcapng with the verdict as each packet's comment (`tshark -r FILE -T fields -e
//! frame.comment`). Frames are cut at 128 bytes.

use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::InterfaceDescriptionBlock,
        },
    },
};
use xnic_common::{
    monitor::{DropEvent, SNAP_LEN},
    verdict::Reason,
};
use xnic_proto::api::StatusView;

use super::{args::CaptureArgs, block_on, frame_summary::summary, resolve_instance};
use crate::dataplane::{Monitor, MonitorSettings, PinDir};

/// What an XDP action is called.
fn action_name(a: u32) -> &'static str {
    match a {
        0 => "aborted",
        1 => "drop",
        2 => "pass",
        3 => "tx",
        4 => "redirect",
        _ => "unknown",
    }
}

/// The verdict a frame got, as its comment says it.
fn verdict(e: &DropEvent) -> String {
    let reason = Reason::from_index(e.reason).map_or("unknown", |r| r.name());
    format!(
        "xnic: {} ({reason}), cpu {}, {} of {} bytes",
        action_name(e.action),
        e.cpu,
        e.captured,
        e.len
    )
}

pub fn run(a: &CaptureArgs) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic capture")?;
    if a.rate == 0 {
        bail!("--rate 0 would capture nothing: give at least 1 frame per second");
    }
    let instance = resolve_instance(&a.instance)?;
    let c = crate::api::client::Client::new(&instance);
    let status: StatusView = block_on(c.get("/v1/status"))?;
    let Some(port) = status.ports.iter().find(|p| p.name == a.port) else {
        let known: Vec<&str> = status.ports.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "no port named {:?} in instance {instance:?}; its ports: {}",
            a.port,
            known.join(", ")
        );
    };
    if port.ifindex == 0 {
        bail!("port {:?} has no interface yet ({})", a.port, port.state);
    }
    let mut writer = match &a.write {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            let mut w = PcapNgWriter::new(std::io::BufWriter::new(file))
                .context("cannot write the pcapng header")?;
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: SNAP_LEN as u32,
                options: vec![],
            })
            .context("cannot write the pcapng interface")?;
            Some(w)
        }
        None => None,
    };
    let stop = super::demo::stop_on_signals()?;
    let settings = MonitorSettings {
        sample: 1,
        rate: a.rate,
        burst: a.rate.div_ceil(10).max(1),
    };
    let mut m = Monitor::capture(&PinDir::new(&instance), settings, port.ifindex)
        .with_context(|| format!("instance {instance:?} has no dataplane with a capture ring: is its daemon running this xnic?"))?;
    eprintln!(
        "capturing port {} of instance {instance} (at most {} frames a second per CPU, 128 bytes each; Ctrl-C stops)",
        a.port, a.rate
    );
    // Event times are CLOCK_MONOTONIC: the file wants wall-clock time.
    let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    let mono_ns = mono.tv_sec() as u64 * 1_000_000_000 + mono.tv_nsec() as u64;
    let wall_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let until = super::monitor::Until::new(&stop, a.count, a.duration);
    let mut taken = 0u64;
    m.follow(|e| {
        if let Some(e) = e {
            let head = &e.head[..(e.captured as usize).min(e.head.len())];
            taken += 1;
            match &mut writer {
                Some(w) => {
                    let at = wall_ns.wrapping_sub(mono_ns).wrapping_add(e.ts_ns);
                    w.write_pcapng_block(EnhancedPacketBlock {
                        interface_id: 0,
                        timestamp: Duration::from_nanos(at),
                        original_len: e.len,
                        data: Cow::Borrowed(head),
                        options: vec![EnhancedPacketOption::Comment(Cow::Owned(verdict(&e)))],
                    })
                    .context("cannot write to the capture file")?;
                }
                None => println!(
                    "{:.6} {}: {}",
                    e.ts_ns as f64 / 1e9,
                    verdict(&e),
                    summary(head).text
                ),
            }
        }
        Ok(until.more(taken))
    })?;
    if let Some(mut w) = writer {
        use std::io::Write as _;
        w.get_mut()
            .flush()
            .context("cannot write to the capture file")?;
    }
    let counts: Vec<String> = m
        .counters()?
        .into_iter()
        .filter(|(k, _)| k.starts_with("capture_"))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    eprintln!("{taken} frames taken; dataplane: {}", counts.join(", "));
    Ok(())
}
