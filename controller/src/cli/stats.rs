//! `xnic stats`.

use super::{args::ReadArgs, block_on, print_json, resolve_instance, table};
use crate::api::{client::Client, types::StatsView};

pub fn run(args: &ReadArgs) -> anyhow::Result<()> {
    let client = Client::new(&resolve_instance(&args.instance)?);
    let stats: StatsView = block_on(client.get("/v1/stats"))?;
    if args.json {
        print_json(&stats)
    } else {
        print!("{}", table::stats(&stats));
        Ok(())
    }
}
