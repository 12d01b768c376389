//! `xnic lab up|down|traffic`.

use std::path::PathBuf;

use super::{
    args::{ExecArgs, ImageArgs, LabConfigArg, LabVms, RecvUdpArgs, SendUdpArgs, TrafficArgs},
    down, running_instances,
};
use crate::{
    config::default_lab_toml,
    dataplane,
    lab::{
        Lab,
        daemon::default_config_path,
        guest,
        traffic::{Receiver, UdpStream, send_udp},
    },
};

/// The lab described by `--config`, or the built-in lab (written to /run/xnic so the daemon
/// can read it). Returns the configuration's path too.
pub fn resolve(arg: &LabConfigArg) -> anyhow::Result<(Lab, PathBuf)> {
    let path = match &arg.config {
        Some(p) => p.clone(),
        None => {
            let path = default_config_path("lab");
            std::fs::create_dir_all(crate::RUN_DIR)?;
            std::fs::write(&path, default_lab_toml("lab", "xlab", 4, true))?;
            path
        }
    };
    let config = crate::config::load(&path)?;
    let lab = match arg.vms {
        LabVms::Netns => Lab::new(config)?,
        LabVms::Qemu => Lab::with_guests(config, guest::ensure(&arg.guest_image)?)?,
    };
    Ok((lab, path))
}

pub fn exec(args: &ExecArgs) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic lab exec")?;
    // A running guest answers whichever way the lab was named on this command line.
    let (lab, _) = resolve(&LabConfigArg {
        vms: LabVms::Netns,
        ..args.config.clone()
    })?;
    let guest = lab.guest(&args.vm)?;
    let status = if guest.running() {
        let script = args
            .command
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        let (status, out) = guest.exec(&script, std::time::Duration::from_secs(args.timeout))?;
        print!("{out}");
        status
    } else {
        let ns = lab.vm_ns(&args.vm);
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(&args.command)
            .status()?
            .code()
            .unwrap_or(1)
    };
    std::process::exit(status);
}

/// `arg` as one word for a POSIX shell.
fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
    {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

pub fn send_udp_here(args: &SendUdpArgs) -> anyhow::Result<()> {
    let report = send_udp(
        None,
        UdpStream {
            dst: args.dst,
            flows: args.flows,
            pps: args.pps,
            duration: std::time::Duration::from_secs_f64(args.secs),
            payload: args.payload,
            zipf: None,
        },
    )?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

pub fn recv_udp_here(args: &RecvUdpArgs) -> anyhow::Result<()> {
    let rx = Receiver::start(None, args.bind)?;
    std::thread::sleep(std::time::Duration::from_secs_f64(args.secs));
    println!("{}", serde_json::to_string(&rx.stop()?)?);
    Ok(())
}

pub fn image(args: &ImageArgs) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic lab image")?;
    let started = std::time::Instant::now();
    let image = guest::ensure(&args.guest_image)?;
    println!(
        "guest image: {} ({:.1} s)",
        image.dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub fn up(arg: &LabConfigArg) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic lab up")?;
    let (lab, path) = resolve(arg)?;
    lab.up()?;
    println!("lab up: namespaces {}", lab.namespaces().join(", "));
    if lab.has_guests() {
        println!(
            "guests: {} (consoles and control ports in {})",
            lab.config()
                .vms
                .iter()
                .map(|v| format!("{} on tap {}", v.name, v.port))
                .collect::<Vec<_>>()
                .join(", "),
            lab.guest_dir().display()
        );
    }
    println!(
        "start the daemon with: xnic run --config {}",
        path.display()
    );
    Ok(())
}

pub fn down(arg: &LabConfigArg) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic lab down")?;
    let (lab, _) = resolve(arg)?;
    let instance = &lab.config().instance;
    if running_instances().contains(instance) || dataplane::pinned_instances()?.contains(instance) {
        let r = down::down(instance)?;
        println!(
            "instance {instance:?}: dataplane removed ({} attachment(s))",
            r.links_removed.len()
        );
    }
    let removed = lab.down()?;
    if removed.is_empty() {
        println!("no lab namespaces to remove");
    } else {
        println!("removed namespaces {}", removed.join(", "));
    }
    Ok(())
}

pub fn traffic(args: &TrafficArgs) -> anyhow::Result<()> {
    crate::daemon::require_root("xnic lab traffic")?;
    let (lab, _) = resolve(&args.config)?;
    if !lab.exists() {
        anyhow::bail!("the lab is not up; run `xnic lab up` first");
    }
    let (Some(from), Some(to)) = (&args.from, &args.to) else {
        let report = lab.drive(std::time::Duration::from_secs(2), Some(2))?;
        println!("{}", report.summary());
        return Ok(());
    };
    let (from_ns, _) = lab.endpoint(from)?;
    let (to_ns, to_addr) = lab.endpoint(to)?;
    let sink = std::net::SocketAddr::new(to_addr, crate::lab::TOR_UDP_PORT);
    let rx = Receiver::start(Some(&to_ns), sink)?;
    let sent = send_udp(
        Some(&from_ns),
        UdpStream {
            dst: sink,
            flows: args.flows,
            pps: args.pps,
            duration: std::time::Duration::from_secs_f64(args.secs),
            payload: args.payload,
            zipf: args.zipf,
        },
    )?;
    let got = rx.stop()?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "sent": sent, "received": got }))?
        );
    } else {
        println!(
            "{from} → {to}: {} flows, {} sent in {:.1} s, {} received, {} lost, {} reordered, {} duplicated",
            got.flows,
            sent.sent,
            sent.elapsed_secs,
            got.received,
            sent.sent.saturating_sub(got.received),
            got.reordered,
            got.duplicates
        );
    }
    Ok(())
}
