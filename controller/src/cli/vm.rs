//! `xnic vm list|show|add|set|del`.

use anyhow::bail;
use xnic_proto::{
    api::{ChangeView, VmChanged, VmPatch},
    config::VmConfig,
};

use super::{
    args::{ReadArgs, VmSpecArgs},
    block_on, percent_encode, print_json, resolve_instance, table,
};
use crate::api::{
    client::{Client, Method},
    types::VmView,
};

pub fn list(args: &ReadArgs) -> anyhow::Result<()> {
    let client = Client::new(&resolve_instance(&args.instance)?);
    let vms: Vec<VmView> = block_on(client.get("/v1/vms"))?;
    if args.json {
        print_json(&vms)
    } else {
        print!("{}", table::vms(&vms));
        Ok(())
    }
}

pub fn show(name: &str, args: &ReadArgs) -> anyhow::Result<()> {
    let client = Client::new(&resolve_instance(&args.instance)?);
    let path = format!("/v1/vms/{}", percent_encode(name));
    let vm: VmView = block_on(client.get(&path))?;
    if args.json {
        print_json(&vm)
    } else {
        print!("{}", table::vm(&vm));
        Ok(())
    }
}

fn patch(spec: &VmSpecArgs, unset: &[String]) -> anyhow::Result<VmPatch> {
    let mut p = VmPatch {
        port: spec.port.clone(),
        macs: (!spec.macs.is_empty()).then(|| spec.macs.clone()),
        ips: (!spec.ips.is_empty()).then(|| spec.ips.clone()),
        rss: spec.rss.clone(),
        priority: spec.priority,
        prefer_dedicated: spec.prefer_dedicated,
        team: spec.team.clone().map(Some),
        uplink: spec.uplink.clone().map(Some),
        team_policy: spec.team_policy.map(|t| Some(t.into())),
        bandwidth_mbps: spec.bandwidth_mbps.map(Some),
        burst_kib: spec.burst_kib.map(Some),
        allocation_mode: spec.allocation_mode.map(Into::into),
        failover_pause_ms: spec.failover_pause_ms,
    };
    for field in unset {
        match field.as_str() {
            "bandwidth_mbps" => p.bandwidth_mbps = Some(None),
            "burst_kib" => p.burst_kib = Some(None),
            "uplink" => p.uplink = Some(None),
            "team_policy" => p.team_policy = Some(None),
            "team" => p.team = Some(None),
            other => bail!(
                "--unset {other}: only bandwidth_mbps, burst_kib, uplink, team_policy and team have a default to return to"
            ),
        }
    }
    Ok(p)
}

pub(super) fn print_change(change: &ChangeView) {
    for line in &change.changes {
        println!("  {line}");
    }
    for line in &change.at_restart {
        println!("  {line} (at the next restart)");
    }
    println!("desired state: generation {}", change.generation);
}

fn print_changed(what: &str, out: &VmChanged, args: &ReadArgs) -> anyhow::Result<()> {
    if args.json {
        return print_json(out);
    }
    println!("{what}");
    print_change(&out.change);
    if let Some(vm) = &out.vm {
        print!("{}", table::vm(vm));
    }
    Ok(())
}

pub fn add(name: &str, spec: &VmSpecArgs, args: &ReadArgs) -> anyhow::Result<()> {
    let Some(port) = &spec.port else {
        bail!("a VM needs --port: the host side of its virtual NIC (it may not exist yet)");
    };
    if spec.macs.is_empty() {
        bail!("a VM needs at least one --mac: the MACs it may send from");
    }
    // Everything given goes through the same schema as a [[vm]] section.
    let mut vm: VmConfig = serde_json::from_value(serde_json::json!({
        "name": name, "port": port, "macs": spec.macs,
    }))?;
    patch(spec, &[])?.apply_to(&mut vm);
    let client = Client::new(&resolve_instance(&args.instance)?);
    let out: VmChanged = block_on(client.post_json("/v1/vms", &vm))?;
    print_changed(&format!("VM {name} added"), &out, args)
}

pub fn set(name: &str, spec: &VmSpecArgs, unset: &[String], args: &ReadArgs) -> anyhow::Result<()> {
    let p = patch(spec, unset)?;
    if p.is_empty() {
        bail!("nothing to change: give a setting (see `xnic vm set --help`) or --unset FIELD");
    }
    let client = Client::new(&resolve_instance(&args.instance)?);
    let path = format!("/v1/vms/{}", percent_encode(name));
    let out: VmChanged = block_on(client.send_json(Method::PATCH, &path, &p))?;
    print_changed(&format!("VM {name} changed"), &out, args)
}

pub fn del(name: &str, args: &ReadArgs) -> anyhow::Result<()> {
    let client = Client::new(&resolve_instance(&args.instance)?);
    let path = format!("/v1/vms/{}", percent_encode(name));
    let out: ChangeView = block_on(client.delete(&path))?;
    if args.json {
        return print_json(&out);
    }
    println!("VM {name} removed");
    print_change(&out);
    Ok(())
}
