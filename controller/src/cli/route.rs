//! `xnic route list|lookup|add|del`.

use super::{
    args::RouteCommand,
    block_on, client, percent_encode, table,
    vnic::{changed, show},
};
use crate::api::types::{ChangeView, RouteAddRequest, RouteListView, RouteLookupView};

pub fn run(cmd: &RouteCommand) -> anyhow::Result<()> {
    match cmd {
        RouteCommand::List { table: t, read } => {
            let path = match t {
                Some(t) => format!("/v1/routes?table={}", percent_encode(t)),
                None => "/v1/routes".to_string(),
            };
            let v: RouteListView = block_on(client(read)?.get(&path))?;
            show(read, &v, table::routes)
        }
        RouteCommand::Lookup { vnic, addr, read } => {
            let path = format!(
                "/v1/routes/lookup?vnic={}&addr={}",
                percent_encode(vnic),
                percent_encode(addr)
            );
            let v: RouteLookupView = block_on(client(read)?.get(&path))?;
            show(read, &v, table::route_lookup)
        }
        RouteCommand::Add {
            table: t,
            dst,
            via,
            read,
        } => {
            let req = RouteAddRequest {
                table: t.clone(),
                dst: dst.clone(),
                via: via.clone(),
            };
            let out: ChangeView = block_on(client(read)?.post_json("/v1/routes", &req))?;
            changed(read, &format!("route {dst} via {via} added to {t}"), &out)
        }
        RouteCommand::Del {
            table: t,
            dst,
            read,
        } => {
            let path = format!(
                "/v1/routes?table={}&dst={}",
                percent_encode(t),
                percent_encode(dst)
            );
            let out: ChangeView = block_on(client(read)?.delete(&path))?;
            changed(read, &format!("route {dst} removed from {t}"), &out)
        }
    }
}
