//! `xnic-bench NAME`: xnic's benchmarks. Each measures xnic against baselines on the same
//! machine in the same run and writes `bench/results/NAME.json` and `.md`. Run through
//! `cargo xtask bench NAME`, which builds in release mode first.

mod dataplane;
mod live;
mod monitor;
mod offload;
mod offload_live;
mod offload_moves;
mod ops;
mod ovs;
mod plot;
mod report;
mod rings;
mod route;
mod route_live;
mod rss;
mod rss_live;
mod rss_sim;
mod team;

use anyhow::bail;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("dataplane") => dataplane::run(&args[1..]),
        Some("rss") => rss::run(&args[1..]),
        Some("team") => team::run(&args[1..]),
        Some("ops") => ops::run(&args[1..]),
        Some("offload") => offload::run(&args[1..]),
        Some("route") => route::run(&args[1..]),
        Some("rings") => rings::run(&args[1..]),
        Some("monitor") => monitor::run(&args[1..]),
        Some("plot") => plot::all(),
        Some(other) => Err(anyhow::anyhow!(
            "unknown benchmark {other:?}; available: dataplane, monitor, offload, ops, rings, route, rss, team, plot"
        )),
        None => Err(anyhow::anyhow!(
            "usage: xnic-bench <dataplane|monitor|offload|ops|rings|route|rss|team|plot> [OPTIONS]"
        )),
    };
    if let Err(e) = result {
        eprintln!("xnic-bench: {e:#}");
        std::process::exit(1);
    }
}

/// `--name VALUE` from `args`, parsed, or `default`.
pub fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => match args.get(i + 1).map(|v| v.parse()) {
            Some(Ok(v)) => Ok(v),
            _ => bail!("{name} needs a value"),
        },
    }
}
