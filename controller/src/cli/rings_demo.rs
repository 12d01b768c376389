//! `xnic lab rings` (and part of `xnic lab demo`): transaction rings between two hosts,
//! narrated: a region offered and written and read through the CLI, thousands of WRITEs and
//! READs from an application checked byte for byte on a clean link and then through loss,
//! a forged key refused; then everything removed.

use std::{
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use xnic_rings::{client::RemoteRegion, entries::status_name};

use super::{demo::heading, table};
use crate::lab::rings::{Exercised, RingsLab, RingsLabOptions, WorkerKind, exercise, host_ip};

/// The application's and the peer's regions.
const REGION: usize = 8 << 20;
/// The largest request of the demo's random mix.
const MAX_LEN: u32 = 256 << 10;

/// Runs the rings demo in namespaces named `prefix...`; everything is removed at the end.
pub fn demo(prefix: &str, stop: &AtomicBool) -> anyhow::Result<()> {
    heading(
        "Transaction rings: remote-memory WRITE and READ as RoCEv2, from an application \
         through shared-memory rings to a network worker on AF_XDP, between two hosts",
    );
    let exe = std::env::current_exe().context("cannot find the xnic executable")?;
    let lab = RingsLab::up(
        prefix,
        &exe,
        RingsLabOptions {
            workers: [WorkerKind::Process; 2],
            busy_poll: Duration::from_micros(200),
            pin_workers: true,
            ..RingsLabOptions::default()
        },
    )?;
    println!(
        "hosts {} ({}) and {} ({}), each with its xnic daemon and `xnic rings run` on a CPU of \
         its own; a bridge between them in {} (where loss is injected)",
        lab.host(0),
        host_ip(0),
        lab.host(1),
        host_ip(1),
        lab.bridge_ns()
    );
    let peer = host_ip(1).to_string();
    let cli = |host: usize, args: &[&str]| -> anyhow::Result<String> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("{a:?}")
                } else {
                    a.to_string()
                }
            })
            .collect();
        println!("$ xnic {} --instance {}", shown.join(" "), lab.host(host));
        let out = Command::new(&exe)
            .args(args)
            .args(["--instance", lab.host(host)])
            .output()
            .context("running xnic")?;
        if !out.status.success() {
            anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    print!(
        "{}",
        cli(1, &["rings", "region", "add", "notes", "--size", "65536"])?
    );
    print!(
        "{}",
        cli(
            0,
            &[
                "rings",
                "write",
                &peer,
                "notes",
                "100",
                "--data",
                "hello from host a"
            ]
        )?
    );
    println!(
        "{}",
        cli(0, &["rings", "read", &peer, "notes", "100", "17"])?
    );

    println!("\nan application on host a, a region of 8 MiB on each side:");
    let mut a = lab.client(0)?;
    let mut b = lab.client(1)?;
    let theirs = b.register("demo", REGION)?;
    let mine = a.register("demo-local", REGION)?;
    let pattern: Vec<u8> = (0..REGION).map(|i| (i * 7 % 253) as u8).collect();
    mine.memory.write(0, &pattern);
    let remote = a.lookup(host_ip(1), "demo")?;
    let mut qp = a.connect_qp(host_ip(1))?;
    for (round, (loss, n)) in [(0, 3000), (5, 1000), (0, 1000)].into_iter().enumerate() {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        lab.lose(loss)?;
        let (sent_again, dropped) = (a.status()?.retransmitted, lab.lost());
        let done = exercise(
            &mut qp,
            &mine,
            &remote,
            &theirs,
            n,
            round as u64 + 1,
            MAX_LEN,
        )?;
        println!(
            "{}",
            summary(
                loss,
                &done,
                a.status()?.retransmitted - sent_again,
                lab.lost() - dropped
            )
        );
    }
    lab.lose(0)?;

    let forged = RemoteRegion {
        rkey: remote.rkey ^ 0x10,
        len: remote.len,
    };
    let mut before = vec![0u8; 64];
    theirs.memory.read(0, &mut before);
    qp.write(u64::MAX, &mine, 0, &forged, 0, 64)
        .map_err(|_| anyhow::anyhow!("the submission ring is full"))?;
    let c = qp
        .wait(Duration::from_secs(10))?
        .context("no completion for the forged WRITE")?;
    let mut after = vec![0u8; 64];
    theirs.memory.read(0, &mut after);
    println!(
        "a WRITE with a forged key: {} (the peer's region {})",
        status_name(c.status, c.nak),
        if before == after {
            "unchanged"
        } else {
            "CHANGED"
        }
    );
    println!();
    print!("{}", table::rings_status(&a.status()?));
    drop(qp);
    drop(lab);
    println!("rings lab removed");
    Ok(())
}

fn summary(loss: u32, done: &Exercised, sent_again: u64, dropped: u64) -> String {
    let outcome = if done.failed.is_empty() {
        "all succeeded".to_string()
    } else {
        format!("FAILED {:?}", done.failed)
    };
    let exact = if done.remote_exact && done.local_exact {
        "every byte as written on both sides"
    } else {
        "BYTES DIFFER from what was written"
    };
    format!(
        "{loss:>2} % loss: {} WRITEs and READs of 1 B to 256 KiB ({:.1} MiB) in {:.2} s, {outcome}, \
         {exact}; {sent_again} packets sent again, {dropped} dropped by the bridge (its nft counter)",
        done.transactions,
        done.bytes as f64 / f64::from(1 << 20),
        done.elapsed.as_secs_f64(),
    )
}
