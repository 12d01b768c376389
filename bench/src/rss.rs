//! `rss`: the RSS policy simulated at scale against static RSS and an RSS++-style greedy
//! rebalancer, and live in the lab against the kernel's RPS.

use crate::{report::Report, rss_sim};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut report = Report::new("rss");
    report.notes.push(
        "Simulation: identical traces for every rebalancer; per period each sees bucket loads with the noise of counting one 100 ms period of packets; metrics on the true loads. Steady state excludes the 20 rounds after each load change. xnic policy runs with a 5 %-of-table move budget per round.".into(),
    );
    eprintln!("simulation");
    rss_sim::simulate(&mut report);
    if !args.iter().any(|a| a == "--sim-only") {
        crate::rss_live::run(args, &mut report)?;
    }
    report.write()
}
