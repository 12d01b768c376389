//! `xnic vnic list|show|stats|add|del`.

use super::{
    args::{ReadArgs, VnicAddArgs, VnicCommand},
    block_on, client, percent_encode, print_json, table,
    vm::print_change,
};
use crate::api::types::{ChangeView, VnicListView, VnicStatsView, VnicView};

pub fn run(cmd: &VnicCommand) -> anyhow::Result<()> {
    match cmd {
        VnicCommand::List(read) => {
            let v: VnicListView = block_on(client(read)?.get("/v1/vnics"))?;
            show(read, &v, table::vnics)
        }
        VnicCommand::Show { name, read } => {
            let path = format!("/v1/vnics/{}", percent_encode(name));
            let v: VnicView = block_on(client(read)?.get(&path))?;
            show(read, &v, table::vnic)
        }
        VnicCommand::Stats(read) => {
            let v: VnicStatsView = block_on(client(read)?.get("/v1/vnics/stats"))?;
            show(read, &v, table::vnic_stats)
        }
        VnicCommand::Add(a) => add(a),
        VnicCommand::Del { name, read } => {
            let path = format!("/v1/vnics/{}", percent_encode(name));
            let out: ChangeView = block_on(client(read)?.delete(&path))?;
            changed(read, &format!("VNIC {name} removed"), &out)
        }
    }
}

/// Prints `v` as JSON or through `render`.
pub(super) fn show<T: serde::Serialize>(
    read: &ReadArgs,
    v: &T,
    render: fn(&T) -> String,
) -> anyhow::Result<()> {
    if read.json {
        print_json(v)
    } else {
        print!("{}", render(v));
        Ok(())
    }
}

/// Reports a change as JSON or in words.
pub(super) fn changed(read: &ReadArgs, what: &str, out: &ChangeView) -> anyhow::Result<()> {
    if read.json {
        return print_json(out);
    }
    println!("{what}");
    print_change(out);
    Ok(())
}

fn add(a: &VnicAddArgs) -> anyhow::Result<()> {
    // Through the same schema as a [[vnic]] section.
    let vnic: crate::config::VnicConfig = serde_json::from_value(serde_json::json!({
        "name": a.name, "subnet": a.subnet, "vni": a.vni, "mac": a.mac, "ips": a.ips,
        "host": a.host, "public_ip": a.public_ip, "route_table": a.route_table,
        "security_lists": a.security_lists,
    }))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let out: ChangeView = block_on(client(&a.read)?.post_json("/v1/vnics", &vnic))?;
    changed(&a.read, &format!("VNIC {} added", a.name), &out)
}
