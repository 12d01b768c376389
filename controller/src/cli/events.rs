//! `xnic events [--follow] [--kind K] [--since N]`: the event stream of every feature.

use xnic_proto::api::Event;

use super::{args::StreamArgs, block_on, client, print_json, table};

/// How long one request waits for new events with --follow.
const FOLLOW_WAIT_SECS: u32 = 30;

pub fn run(args: &StreamArgs) -> anyhow::Result<()> {
    let c = client(&args.read)?;
    let mut since = args.since;
    let kind = args.kind.as_ref().map_or(String::new(), |k| {
        format!("&kind={}", super::percent_encode(k))
    });
    let mut first = true;
    loop {
        let wait = if args.follow && !first {
            FOLLOW_WAIT_SECS
        } else {
            0
        };
        let events: Vec<Event> =
            block_on(c.get(&format!("/v1/events?since={since}&wait={wait}{kind}")))?;
        if let Some(last) = events.last() {
            since = last.id;
        }
        if args.read.json {
            if args.follow {
                for e in &events {
                    println!("{}", serde_json::to_string(e)?);
                }
            } else {
                print_json(&events)?;
            }
        } else {
            print!("{}", table::events(&events, first));
        }
        if !args.follow {
            return Ok(());
        }
        first = false;
    }
}
