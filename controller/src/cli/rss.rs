//! `xnic rss status|events|buckets|set`.

use std::time::Duration;

use super::{args::ReadArgs, block_on, print_json, resolve_instance, table};
use crate::api::{
    client::Client,
    types::{RssBucketView, RssEvent, RssSetRequest, RssStatusView, RssVmView},
};

fn client(args: &ReadArgs) -> anyhow::Result<Client> {
    Ok(Client::new(&resolve_instance(&args.instance)?))
}

pub fn status(args: &ReadArgs) -> anyhow::Result<()> {
    let s: RssStatusView = block_on(client(args)?.get("/v1/rss"))?;
    if args.json {
        print_json(&s)
    } else {
        print!("{}", table::rss_status(&s));
        Ok(())
    }
}

pub fn events(args: &ReadArgs, since: u64, follow: bool) -> anyhow::Result<()> {
    let c = client(args)?;
    let mut since = since;
    loop {
        let events: Vec<RssEvent> = block_on(c.get(&format!("/v1/rss/events?since={since}")))?;
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
            print!("{}", table::rss_events(&events, !follow || since == 0));
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

pub fn buckets(engine: &str, args: &ReadArgs) -> anyhow::Result<()> {
    let b: Vec<RssBucketView> =
        block_on(client(args)?.get(&format!("/v1/rss/engines/{engine}/buckets")))?;
    if args.json {
        print_json(&b)
    } else {
        print!("{}", table::rss_buckets(&b));
        Ok(())
    }
}

pub fn set(
    vm: &str,
    state: Option<String>,
    priority: Option<i32>,
    prefer_dedicated: Option<bool>,
    args: &ReadArgs,
) -> anyhow::Result<()> {
    if state.is_none() && priority.is_none() && prefer_dedicated.is_none() {
        anyhow::bail!("nothing to set: give --state, --priority or --prefer-dedicated");
    }
    let req = RssSetRequest {
        state,
        priority,
        prefer_dedicated,
    };
    let v: RssVmView = block_on(client(args)?.post_json(&format!("/v1/rss/vms/{vm}"), &req))?;
    if args.json {
        print_json(&v)
    } else {
        println!(
            "{}: {}{} (priority {}, prefer dedicated {})",
            v.name,
            v.state,
            if v.pinned {
                ", pinned"
            } else {
                ", policy decides"
            },
            v.priority,
            v.prefer_dedicated
        );
        Ok(())
    }
}
