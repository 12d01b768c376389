//! `xnic rss status|events|buckets|engine|set`.

use super::{
    args::{EventsArgs, ReadArgs},
    block_on, client, percent_encode, print_events, print_json, table,
};
use crate::api::types::{
    RssBucketView, RssEngineAddRequest, RssEngineRemoved, RssEngineSetRequest, RssEngineView,
    RssEvent, RssSetRequest, RssStatusView, RssVmView,
};

pub fn status(args: &ReadArgs) -> anyhow::Result<()> {
    let s: RssStatusView = block_on(client(args)?.get("/v1/rss"))?;
    if args.json {
        print_json(&s)
    } else {
        print!("{}", table::rss_status(&s));
        Ok(())
    }
}

pub fn events(args: &EventsArgs) -> anyhow::Result<()> {
    print_events(
        args,
        "/v1/rss/events",
        |e: &RssEvent| e.id,
        table::rss_events,
    )
}

pub fn buckets(engine: &str, args: &ReadArgs) -> anyhow::Result<()> {
    let b: Vec<RssBucketView> = block_on(client(args)?.get(&format!(
        "/v1/rss/engines/{}/buckets",
        percent_encode(engine)
    )))?;
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
    let v: RssVmView =
        block_on(client(args)?.post_json(&format!("/v1/rss/vms/{}", percent_encode(vm)), &req))?;
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

/// Prints an engine after a change: JSON, or one line and its CPUs' bucket counts.
fn print_engine(e: &RssEngineView, args: &ReadArgs) -> anyhow::Result<()> {
    if args.json {
        return print_json(e);
    }
    let buckets: Vec<String> = e
        .buckets_per_cpu
        .iter()
        .map(|(cpu, n)| format!("cpu{cpu}:{n}"))
        .collect();
    println!(
        "engine {} ({}): CPUs {}, buckets {}",
        e.name,
        e.kind.name(),
        e.cpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        buckets.join(" ")
    );
    Ok(())
}

pub fn engine_add(
    name: &str,
    kind: crate::policy::rss::EngineKind,
    cpus: Vec<u32>,
    args: &ReadArgs,
) -> anyhow::Result<()> {
    let req = RssEngineAddRequest {
        name: name.to_string(),
        kind,
        cpus,
    };
    let e: RssEngineView = block_on(client(args)?.post_json("/v1/rss/engines", &req))?;
    print_engine(&e, args)
}

pub fn engine_set(name: &str, cpus: Vec<u32>, args: &ReadArgs) -> anyhow::Result<()> {
    let req = RssEngineSetRequest { cpus };
    let e: RssEngineView = block_on(
        client(args)?.post_json(&format!("/v1/rss/engines/{}", percent_encode(name)), &req),
    )?;
    print_engine(&e, args)
}

pub fn engine_del(name: &str, args: &ReadArgs) -> anyhow::Result<()> {
    let r: RssEngineRemoved =
        block_on(client(args)?.delete(&format!("/v1/rss/engines/{}", percent_encode(name))))?;
    if args.json {
        return print_json(&r);
    }
    if r.vms_to_no_rss.is_empty() {
        println!("engine {} removed", r.name);
    } else {
        println!(
            "engine {} removed; back to no-RSS: {}",
            r.name,
            r.vms_to_no_rss.join(", ")
        );
    }
    Ok(())
}
