//! `xnic rings run|status|region|write|read`: the network worker, and a client of it.

use std::{io::Write as _, time::Duration};

use anyhow::{Context as _, bail};
use xnic_rings::{
    client::{Client, LocalRegion},
    entries::{STATUS_SUCCESS, status_name},
};

use super::{
    args::{InstanceArg, RingsCommand, RingsRegionCommand},
    print_json, resolve_instance, table,
};

/// How long a CLI WRITE or READ waits for its completion.
const WAIT: Duration = Duration::from_secs(30);

pub fn run(cmd: RingsCommand) -> anyhow::Result<()> {
    match cmd {
        RingsCommand::Run(a) => crate::worker::run(crate::worker::WorkerArgs {
            instance: resolve_instance(&a.instance)?,
            interface: a.interface,
            queue: a.queue,
            netns: a.netns,
            cpus: a.cpus.map(|c| c.0),
            busy_poll: Duration::from_micros(a.busy_poll_us),
        }),
        RingsCommand::Status(read) => {
            let s = worker(&read.instance)?.status()?;
            if read.json {
                print_json(&s)
            } else {
                print!("{}", table::rings_status(&s));
                Ok(())
            }
        }
        RingsCommand::Region(RingsRegionCommand::Add {
            name,
            size,
            instance,
        }) => {
            let len = usize::try_from(size).context("--size is too large")?;
            if len == 0 {
                bail!("--size 0: a region needs at least one byte");
            }
            let r = worker(&instance)?.register(&name, len)?;
            println!(
                "region {} added: id {}, {} bytes, key {:#x}",
                r.info.name, r.info.id, r.info.len, r.info.rkey
            );
            Ok(())
        }
        RingsCommand::Region(RingsRegionCommand::List(read)) => {
            let s = worker(&read.instance)?.status()?;
            if read.json {
                print_json(&s.regions)
            } else {
                print!("{}", table::rings_regions(&s.regions));
                Ok(())
            }
        }
        RingsCommand::Region(RingsRegionCommand::Del { name, instance }) => {
            let mut w = worker(&instance)?;
            let Some(r) = w.status()?.regions.into_iter().find(|r| r.name == name) else {
                bail!("no region named {name:?} (see `xnic rings region list`)");
            };
            w.deregister_id(r.id)?;
            println!("region {name} removed");
            Ok(())
        }
        RingsCommand::Write {
            peer,
            region,
            offset,
            data,
            file,
            instance,
        } => {
            let bytes = match (data, file) {
                (Some(d), _) => d.into_bytes(),
                (None, Some(f)) => {
                    std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?
                }
                (None, None) => bail!("give the bytes with --data or --file"),
            };
            if bytes.is_empty() {
                bail!("nothing to write: the data is empty");
            }
            let len = u32::try_from(bytes.len()).context("at most 4 GiB in one WRITE")?;
            transact(&instance, peer, &region, offset, len, |local| {
                local.memory.write(0, &bytes);
                true
            })?;
            println!("wrote {len} bytes at {offset} of {region} at {peer}");
            Ok(())
        }
        RingsCommand::Read {
            peer,
            region,
            offset,
            len,
            output,
            instance,
        } => {
            if len == 0 {
                bail!("nothing to read: LEN is 0");
            }
            let local = transact(&instance, peer, &region, offset, len, |_| false)?;
            let mut bytes = vec![0u8; len as usize];
            local.memory.read(0, &mut bytes);
            match output {
                Some(f) => std::fs::write(&f, &bytes)
                    .with_context(|| format!("cannot write {}", f.display()))?,
                None => std::io::stdout().write_all(&bytes)?,
            }
            Ok(())
        }
    }
}

fn worker(instance: &InstanceArg) -> anyhow::Result<Client> {
    let name = resolve_instance(instance)?;
    Ok(Client::connect(&crate::config::rings_socket_path(&name))?)
}

/// One WRITE (`fill` puts the bytes in the local region and says so) or READ of `len`
/// bytes at `offset` of `region` at `peer`, through a region of this process's; returns it.
fn transact(
    instance: &InstanceArg,
    peer: std::net::IpAddr,
    region: &str,
    offset: u64,
    len: u32,
    fill: impl FnOnce(&LocalRegion) -> bool,
) -> anyhow::Result<LocalRegion> {
    let mut w = worker(instance)?;
    let remote = w
        .lookup(peer, region)
        .with_context(|| format!("cannot find region {region:?} at {peer}"))?;
    if offset
        .checked_add(u64::from(len))
        .is_none_or(|end| end > remote.len)
    {
        bail!(
            "{len} bytes at {offset} do not fit region {region} at {peer} ({} bytes)",
            remote.len
        );
    }
    let name = format!("cli-{}", std::process::id());
    let local = w.register(&name, len as usize)?;
    let write = fill(&local);
    let mut qp = w.connect_qp(peer)?;
    let posted = if write {
        qp.write(1, &local, 0, &remote, offset, len)
    } else {
        qp.read(1, &local, 0, &remote, offset, len)
    };
    let result = (|| {
        posted.map_err(|_| anyhow::anyhow!("the worker's submission ring is full"))?;
        let c = qp
            .wait(WAIT)?
            .with_context(|| format!("no completion within {} s", WAIT.as_secs()))?;
        if c.status != STATUS_SUCCESS {
            bail!(
                "{} failed: {}",
                if write { "WRITE" } else { "READ" },
                status_name(c.status, c.nak)
            );
        }
        Ok(())
    })();
    let _ = w.deregister(&local);
    result.map(|()| local)
}
