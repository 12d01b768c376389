//! The `xnic` command line: one file per command, arguments in `args`, table rendering in
//! `table`.

mod apply;
pub mod args;
mod capture;
mod check;
mod demo;
mod down;
mod events;
mod fleet;
mod flows;
mod frame_summary;
mod lab;
mod monitor;
mod rings;
mod rings_demo;
mod route;
mod rss;
mod rule;
mod stats;
mod status;
pub mod table;
mod team;
mod top;
mod trace;
mod vm;
mod vnic;

use std::future::Future;

use anyhow::{Context as _, bail};
use clap::CommandFactory as _;

use self::args::{
    Cli, Command, InstanceArg, LabCommand, RssCommand, RssEngineCommand, TeamCommand, VmCommand,
};

/// Runs one parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => crate::daemon::run(&a.config),
        Command::Check(a) => check::run(&a.config, a.strict),
        Command::Apply(a) => apply::run(&a),
        Command::Config(a) => apply::show(&a),
        Command::Events(a) => events::run(&a),
        Command::Monitor(a) => monitor::run(&a),
        Command::Capture(a) => capture::run(&a),
        Command::Trace(a) => trace::run(&a),
        Command::Top(a) => top::run(&a),
        Command::Status(a) => status::run(&a),
        Command::Vm(VmCommand::List(a)) => vm::list(&a),
        Command::Vm(VmCommand::Show { name, read }) => vm::show(&name, &read),
        Command::Vm(VmCommand::Add { name, spec, read }) => vm::add(&name, &spec, &read),
        Command::Vm(VmCommand::Set {
            name,
            spec,
            unset,
            read,
        }) => vm::set(&name, &spec, &unset, &read),
        Command::Vm(VmCommand::Del { name, read }) => vm::del(&name, &read),
        Command::Stats(a) => stats::run(&a),
        Command::Team(TeamCommand::Status(a)) => team::status(&a),
        Command::Team(TeamCommand::Events(a)) => team::events(&a),
        Command::Flows(a) => flows::run(&a),
        Command::Vnic(c) => vnic::run(&c),
        Command::Rings(c) => rings::run(c),
        Command::Route(c) => route::run(&c),
        Command::Rule(c) => rule::run(&c),
        Command::Rss(RssCommand::Status(a)) => rss::status(&a),
        Command::Rss(RssCommand::Events(a)) => rss::events(&a),
        Command::Rss(RssCommand::Buckets { engine, read }) => rss::buckets(&engine, &read),
        Command::Rss(RssCommand::Engine(RssEngineCommand::Add {
            name,
            kind,
            cpus,
            read,
        })) => rss::engine_add(&name, kind.into(), cpus.0, &read),
        Command::Rss(RssCommand::Engine(RssEngineCommand::Set { name, cpus, read })) => {
            rss::engine_set(&name, cpus.0, &read)
        }
        Command::Rss(RssCommand::Engine(RssEngineCommand::Del { name, read })) => {
            rss::engine_del(&name, &read)
        }
        Command::Rss(RssCommand::Set {
            vm,
            state,
            priority,
            prefer_dedicated,
            read,
        }) => rss::set(&vm, state, priority, prefer_dedicated, &read),
        Command::Down(a) => down::run(&a),
        Command::Lab(LabCommand::Image(a)) => lab::image(&a),
        Command::Lab(LabCommand::Exec(a)) => lab::exec(&a),
        Command::Lab(LabCommand::SendUdp(a)) => lab::send_udp_here(&a),
        Command::Lab(LabCommand::RecvUdp(a)) => lab::recv_udp_here(&a),
        Command::Lab(LabCommand::Up(a)) => lab::up(&a),
        Command::Lab(LabCommand::Down(a)) => lab::down(&a),
        Command::Lab(LabCommand::Traffic(a)) => lab::traffic(&a),
        Command::Lab(LabCommand::Demo(a)) => demo::run(&a),
        Command::Lab(LabCommand::Fleet(a)) => {
            crate::daemon::require_root("xnic lab fleet")?;
            let stop = demo::stop_on_signals()?;
            fleet::demo(&a.prefix, &stop)
        }
        Command::Lab(LabCommand::Rings(a)) => {
            crate::daemon::require_root("xnic lab rings")?;
            let stop = demo::stop_on_signals()?;
            rings_demo::demo(&a.prefix, &stop)
        }
        Command::Lab(LabCommand::Config) => {
            print!(
                "{}",
                crate::config::default_lab_toml("lab", "xlab", 4, true)
            );
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "xnic", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir: None } => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .context("cannot write the man page"),
        Command::Man { dir: Some(dir) } => clap_mangen::generate_to(Cli::command(), &dir)
            .with_context(|| format!("cannot write the man pages to {}", dir.display())),
    }
}

/// Runs a future on a small runtime: client commands make a handful of requests.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime always builds")
        .block_on(f)
}

/// Instances with a control socket in /run/xnic.
pub fn running_instances() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(crate::RUN_DIR)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".sock").map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

/// The instance a client command talks to: the one named, or the only one running.
pub fn resolve_instance(arg: &InstanceArg) -> anyhow::Result<String> {
    if let Some(i) = &arg.instance {
        return Ok(i.clone());
    }
    let running = running_instances();
    match running.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "no xnic daemon is running (no socket in {}); start one with `xnic run --config FILE`",
            crate::RUN_DIR
        ),
        many => bail!(
            "several xnic instances are running ({}); pick one with --instance NAME",
            many.join(", ")
        ),
    }
}

/// A client for the instance a read command names (or the only one running).
fn client(args: &args::ReadArgs) -> anyhow::Result<crate::api::client::Client> {
    Ok(crate::api::client::Client::new(&resolve_instance(
        &args.instance,
    )?))
}

/// Prints the events at `path` after `--since` (`id` tells an event's id) as JSON or through
/// `render` (whose flag asks for a header or "none yet" line); with `--follow`, keeps polling
/// for new ones until interrupted.
fn print_events<E: serde::Serialize + serde::de::DeserializeOwned>(
    events_args: &args::EventsArgs,
    path: &str,
    id: fn(&E) -> u64,
    render: fn(&[E], bool) -> String,
) -> anyhow::Result<()> {
    let args::EventsArgs {
        read: args,
        mut since,
        follow,
    } = events_args.clone();
    let args = &args;
    let c = client(args)?;
    loop {
        let events: Vec<E> = block_on(c.get(&format!("{path}?since={since}")))?;
        let first = since == 0;
        if let Some(last) = events.last() {
            since = id(last);
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
            print!("{}", render(&events, !follow || first));
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Names are restricted to URL-safe characters by the configuration, but a name typed on the
/// command line may not be: it goes into an API path encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
