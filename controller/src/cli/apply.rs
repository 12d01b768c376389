//! `xnic apply --config FILE [--dry-run]` and `xnic config`.

use xnic_proto::api::{ApplyRequest, ChangeView, DesiredView};

use super::{args::ApplyArgs, args::ReadArgs, block_on, client, print_json};

pub fn run(args: &ApplyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot read the configuration file: {e}",
            args.config.display()
        )
    })?;
    // Validate here first: the same errors, without a round trip.
    crate::config::parse(&text, &args.config)?;
    let file = std::fs::canonicalize(&args.config).unwrap_or_else(|_| args.config.clone());
    let req = ApplyRequest {
        config: text,
        file: file.display().to_string(),
        dry_run: args.dry_run,
    };
    let out: ChangeView = block_on(client(&args.read)?.post_json("/v1/apply", &req))?;
    if args.read.json {
        return print_json(&out);
    }
    let verb = if out.dry_run {
        "would change"
    } else {
        "changed"
    };
    if out.changes.is_empty() && out.at_restart.is_empty() {
        println!("{}: nothing to change", args.config.display());
    } else {
        println!("{}: {verb}:", args.config.display());
        for line in &out.changes {
            println!("  {line}");
        }
        for line in &out.at_restart {
            println!("  {line} (at the next restart)");
        }
    }
    if out.dry_run {
        println!(
            "desired state: generation {} (nothing applied)",
            out.generation
        );
    } else {
        println!("desired state: generation {}", out.generation);
    }
    Ok(())
}

pub fn show(args: &ReadArgs) -> anyhow::Result<()> {
    let d: DesiredView = block_on(client(args)?.get("/v1/config"))?;
    if args.json {
        return print_json(&d);
    }
    println!(
        "# desired state, generation {} (kept in {}; started from {})",
        d.generation, d.state_file, d.config_file
    );
    print!("{}", d.config);
    Ok(())
}
