//! `xnic vm list` and `xnic vm show`.

use super::{args::ReadArgs, block_on, percent_encode, print_json, resolve_instance, table};
use crate::api::{client::Client, types::VmView};

pub fn list(args: &ReadArgs) -> anyhow::Result<()> {
    let client = Client::new(&resolve_instance(&args.instance)?);
    let vms: Vec<VmView> = block_on(client.get("/v1/vms"))?;
    if args.json {
        print_json(&vms)
    } else {
        print!("{}", table::vms(&vms));
        Ok(())
    }
}

pub fn show(name: &str, args: &ReadArgs) -> anyhow::Result<()> {
    let client = Client::new(&resolve_instance(&args.instance)?);
    let path = format!("/v1/vms/{}", percent_encode(name));
    let vm: VmView = block_on(client.get(&path))?;
    if args.json {
        print_json(&vm)
    } else {
        print!("{}", table::vm(&vm));
        Ok(())
    }
}
