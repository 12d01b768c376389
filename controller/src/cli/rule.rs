//! `xnic rule list|add|del`.

use super::{
    args::{RuleAddArgs, RuleCommand},
    block_on, client, percent_encode, table,
    vnic::{changed, show},
};
use crate::api::types::{ChangeView, RuleAddRequest, RuleListView};

pub fn run(cmd: &RuleCommand) -> anyhow::Result<()> {
    match cmd {
        RuleCommand::List(read) => {
            let v: RuleListView = block_on(client(read)?.get("/v1/rules"))?;
            show(read, &v, table::rules)
        }
        RuleCommand::Add(a) => add(a),
        RuleCommand::Del {
            list,
            direction,
            index,
            read,
        } => {
            let path = format!(
                "/v1/rules?list={}&direction={}&index={index}",
                percent_encode(list),
                percent_encode(direction)
            );
            let out: ChangeView = block_on(client(read)?.delete(&path))?;
            changed(
                read,
                &format!("rule {index} of {list} {direction} removed"),
                &out,
            )
        }
    }
}

fn add(a: &RuleAddArgs) -> anyhow::Result<()> {
    // Through the same schema as a rule in a [[security_list]].
    let rule: crate::config::RuleConfig = serde_json::from_value(serde_json::json!({
        "action": a.action, "proto": a.proto, "cidr": a.cidr, "ports": a.ports,
        "stateful": a.stateful,
    }))
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let req = RuleAddRequest {
        list: a.list.clone(),
        direction: a.direction.clone(),
        rule,
        at: a.at,
    };
    let out: ChangeView = block_on(client(&a.read)?.post_json("/v1/rules", &req))?;
    changed(
        &a.read,
        &format!("rule added to {} {}", a.list, a.direction),
        &out,
    )
}
