//! `xnic team status|events`.

use std::time::Duration;

use super::{args::ReadArgs, block_on, print_json, resolve_instance, table};
use crate::api::{
    client::Client,
    types::{TeamEvent, TeamStatusView},
};

fn client(args: &ReadArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&resolve_instance(&args.instance)?))
}

pub fn status(args: &ReadArgs) -> anyhow::Result<()> {
    let s: TeamStatusView = block_on(client(args)?.get("/v1/team"))?;
    if args.json {
        print_json(&s)
    } else {
        print!("{}", table::team_status(&s));
        Ok(())
    }
}

pub fn events(args: &ReadArgs, since: u64, follow: bool) -> anyhow::Result<()> {
    let c = client(args)?;
    let mut since = since;
    loop {
        let events: Vec<TeamEvent> = block_on(c.get(&format!("/v1/team/events?since={since}")))?;
        let first = since == 0;
        if let Some(last) = events.last() {
            since = last.id;
        }
        if args.json {
            if follow {
                for e in &events {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                print_json(&events)?;
            }
        } else {
            print!("{}", table::team_events(&events, !follow || first));
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
