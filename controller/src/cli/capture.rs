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
    monitor::{CAPTURE_IN, CAPTURE_OUT, DropEvent, EVENT_ARRIVED, SNAP_LEN},
    verdict::{Action, Reason},
};
use xnic_proto::api::StatusView;

use super::{
    args::{CaptureArgs, CapturePoint},
    block_on,
    frame_summary::summary,
    resolve_instance,
};
use crate::dataplane::{Monitor, MonitorSettings, PinDir, Watch};

const FILTER_TERMS: &str = "host ADDR, port N, tcp, udp, icmp, icmp6 or proto N, joined by `and` (e.g. \"host 10.0.0.5 and tcp and port 80\")";

/// `--filter`'s expression: what the dataplane keeps of the port's frames.
fn parse_filter(expr: &str) -> anyhow::Result<Watch> {
    let mut w = Watch::default();
    let mut words = expr
        .split_whitespace()
        .filter(|t| *t != "and" && *t != "&&");
    fn set<T>(slot: &mut Option<T>, v: T, what: &str) -> anyhow::Result<()> {
        if slot.is_some() {
            bail!("--filter names {what} twice: one of each is kept");
        }
        *slot = Some(v);
        Ok(())
    }
    while let Some(word) = words.next() {
        let mut value = |what: &str| {
            words
                .next()
                .with_context(|| format!("--filter: `{what}` needs a value"))
        };
        match word {
            "host" => {
                let v = value("host")?;
                let ip = v
                    .parse()
                    .with_context(|| format!("--filter: {v:?} is not an IP address"))?;
                set(&mut w.addr, ip, "a host")?;
            }
            "port" => {
                let v = value("port")?;
                let port = v
                    .parse()
                    .with_context(|| format!("--filter: {v:?} is not a port number"))?;
                set(&mut w.l4_port, port, "a port")?;
            }
            "proto" => {
                let v = value("proto")?;
                let p = v
                    .parse()
                    .with_context(|| format!("--filter: {v:?} is not a protocol number"))?;
                set(&mut w.proto, p, "a protocol")?;
            }
            "tcp" => set(&mut w.proto, 6, "a protocol")?,
            "udp" => set(&mut w.proto, 17, "a protocol")?,
            "icmp" => set(&mut w.proto, 1, "a protocol")?,
            "icmp6" => set(&mut w.proto, 58, "a protocol")?,
            other => bail!("--filter: {other:?} is not a term it knows; it takes {FILTER_TERMS}"),
        }
    }
    Ok(w)
}

/// The verdict a frame got, as its comment says it (or that it was taken as it arrived).
fn verdict(e: &DropEvent) -> String {
    if e.kind == EVENT_ARRIVED {
        return format!(
            "xnic: in (before the pipeline), cpu {}, {} of {} bytes",
            e.cpu, e.captured, e.len
        );
    }
    let reason = Reason::from_index(e.reason).map_or("unknown", |r| r.name());
    format!(
        "xnic: {} ({reason}), cpu {}, {} of {} bytes",
        Action::name_of(e.action),
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
    let filter = match &a.filter {
        Some(expr) => parse_filter(expr)?,
        None => Watch::default(),
    };
    let points = match a.at {
        CapturePoint::In => CAPTURE_IN,
        CapturePoint::Out => CAPTURE_OUT,
        CapturePoint::Both => CAPTURE_IN | CAPTURE_OUT,
    };
    let mut m = Monitor::capture(&PinDir::new(&instance), settings, port.ifindex, filter, points)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_into_what_the_dataplane_matches() {
        let w = parse_filter("host 10.0.0.5 and tcp and port 80").unwrap();
        assert_eq!(w.addr, Some("10.0.0.5".parse().unwrap()));
        assert_eq!((w.l4_port, w.proto), (Some(80), Some(6)));
        assert_eq!(parse_filter("").unwrap(), Watch::default());
        assert_eq!(parse_filter("proto 47").unwrap().proto, Some(47));
        for bad in [
            "host",
            "host nonsense",
            "port 70000",
            "udp and tcp",
            "src host 1.2.3.4",
        ] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
