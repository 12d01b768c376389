//! `xnic flows [stats|offload|demote]`.

use super::{
    args::{FlowMatchArgs, FlowsArgs, FlowsCommand},
    block_on, client, print_json, table,
};
use crate::api::types::{FlowRequest, FlowRequestView, FlowStatsView, FlowView};

pub fn run(args: &FlowsArgs) -> anyhow::Result<()> {
    match &args.command {
        None => list(args),
        Some(FlowsCommand::Stats(read)) => {
            let s: FlowStatsView = block_on(client(read)?.get("/v1/flows/stats"))?;
            if read.json {
                print_json(&s)
            } else {
                print!("{}", table::flow_stats(&s));
                Ok(())
            }
        }
        Some(FlowsCommand::Offload(m)) => request(m, "offload"),
        Some(FlowsCommand::Demote(m)) => request(m, "demote"),
    }
}

fn list(args: &FlowsArgs) -> anyhow::Result<()> {
    let path = match &args.vm {
        Some(vm) => format!("/v1/flows?vm={}", super::percent_encode(vm)),
        None => "/v1/flows".to_string(),
    };
    let flows: Vec<FlowView> = block_on(client(&args.read)?.get(&path))?;
    if args.read.json {
        print_json(&flows)
    } else {
        print!("{}", table::flows(&flows));
        Ok(())
    }
}

fn request(m: &FlowMatchArgs, what: &str) -> anyhow::Result<()> {
    let req = FlowRequest {
        ids: m.ids.clone(),
        all: m.all,
        proto: m.proto.clone(),
        addr: m.addr.clone(),
        port: m.port,
    };
    let v: FlowRequestView =
        block_on(client(&m.read)?.post_json(&format!("/v1/flows/{what}"), &req))?;
    if m.read.json {
        print_json(&v)
    } else {
        let verb = if what == "offload" {
            "move into the fast path"
        } else {
            "go back to the slow path"
        };
        println!(
            "{} flow(s) matched; they {verb} at the next period",
            v.matched
        );
        Ok(())
    }
}
