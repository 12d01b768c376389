//! `xnic team status|events`.

use super::{
    args::{EventsArgs, ReadArgs},
    block_on, client, print_events, print_json, table,
};
use crate::api::types::{TeamEvent, TeamStatusView};

pub fn status(args: &ReadArgs) -> anyhow::Result<()> {
    let s: TeamStatusView = block_on(client(args)?.get("/v1/team"))?;
    if args.json {
        print_json(&s)
    } else {
        print!("{}", table::team_status(&s));
        Ok(())
    }
}

pub fn events(args: &EventsArgs) -> anyhow::Result<()> {
    print_events(
        args,
        "/v1/team/events",
        |e: &TeamEvent| e.id,
        table::team_events,
    )
}
