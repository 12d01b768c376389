//! `xnic status`.

use super::{args::ReadArgs, block_on, print_json, resolve_instance, table};
use crate::api::{client::Client, types::StatusView};

pub fn run(args: &ReadArgs) -> anyhow::Result<()> {
    let client = Client::new(&resolve_instance(&args.instance)?);
    let status: StatusView = block_on(client.get("/v1/status"))?;
    if args.json {
        print_json(&status)
    } else {
        print!("{}", table::status(&status));
        Ok(())
    }
}
