//! `rss`: the RSS policy simulated at scale against static RSS and an RSS++-style greedy
//! rebalancer, and live in the lab against the kernel's RPS.

use anyhow::bail;

use crate::{flag, report::Report, rss_sim};

/// The benchmark's parts, for `--only`.
pub const PARTS: [&str; 3] = ["simulation", "rebalancing", "delivery"];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let only: String = flag(args, "--only", String::new())?;
    if !only.is_empty() && !PARTS.contains(&only.as_str()) {
        bail!("--only takes one of {}, not {only:?}", PARTS.join(", "));
    }
    let part = |name: &str| only.is_empty() || only == name;
    let mut report = Report::new("rss");
    report.notes.push(
        "Simulation: identical traces for every rebalancer; per period each sees bucket loads with the noise of counting one 100 ms period of packets; metrics on the true loads. Steady state excludes the 20 rounds after each load change. xnic policy runs with a 5 %-of-table move budget per round.".into(),
    );
    if part("simulation") {
        eprintln!("simulation");
        rss_sim::simulate(&mut report);
    }
    if part("rebalancing") || part("delivery") {
        crate::rss_live::run(args, &part, &mut report)?;
    }
    report.write()
}
