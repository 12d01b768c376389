//! Project automation. Every command runs `setup` first (fast when nothing is missing).
//!
//! ```text
//! cargo xtask setup                 install toolchains, bpf-linker, system packages
//! cargo xtask build                 build everything (debug)
//! cargo xtask test [-- ARGS]        formatting, lints, then every test (needs root)
//! cargo xtask lab [ARGS]            the lab demo (`xnic lab demo ARGS`, e.g. --duration 60)
//! cargo xtask package [--debug]    the Debian package, in target/package/
//! cargo xtask guest-image           build (or find cached) the lab's QEMU guest image
//! cargo xtask bench NAME [ARGS]     a benchmark (release build); results in bench/results/
//! cargo xtask fmt [--check]         format userspace and eBPF code
//! cargo xtask lint                  clippy -D warnings on userspace and eBPF code
//! ```

mod package;
mod setup;

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

const USAGE: &str =
    "usage: cargo xtask <setup|build|test|lab|bench|package|guest-image|fmt|lint> [ARGS]

  setup               install what this machine lacks (toolchains, bpf-linker, packages)
  build               build everything (debug)
  test [-- ARGS]      check formatting and lints, then run every test (ARGS go to cargo test)
  lab [ARGS]          set up, build, and run the lab demo (`xnic lab demo ARGS`;
                      --duration SECS to stop by itself)
  bench NAME [ARGS]   run a benchmark (`cargo xtask bench dataplane`); results go to
                      bench/results/NAME.json and .md
  package [--debug] [--binary FILE] [--out DIR]
                      the Debian package (target/package/xnic_VERSION_ARCH.deb)
  guest-image         build the lab's QEMU guest image (cached in /var/cache/xnic/guest)
  fmt [--check]       format (or check) all code
  lint                clippy with warnings as errors, userspace and eBPF";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match command.as_str() {
        "setup" => setup::run(),
        "build" => {
            setup::run()?;
            build(false)
        }
        "test" => {
            setup::run()?;
            test(&rest)
        }
        "lab" => {
            setup::run()?;
            cargo(&["build", "--package", "xnic"])?;
            let xnic = root().join("target/debug/xnic");
            let mut args = vec!["lab", "demo"];
            args.extend(&rest);
            cmd(xnic.to_str().context("non-UTF-8 path")?, &args)
        }
        "bench" => {
            setup::run()?;
            bench(&rest)
        }
        "package" => {
            setup::run()?;
            package::run(&rest).map(|_| ())
        }
        "guest-image" => {
            setup::run()?;
            cargo(&["build", "--package", "xnic"])?;
            guest_image()
        }
        "fmt" => {
            setup::run()?;
            fmt(rest.contains(&"--check"))
        }
        "lint" => {
            setup::run()?;
            lint(false)
        }
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// PATH for every command xtask runs: tools `cargo install` puts in ~/.cargo/bin
/// (bpf-linker) must be found by the builds even when that directory is not on PATH (sudo,
/// CI).
pub fn path_env() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(bin) = home.map(|h| h.join("bin"))
        && !dirs.contains(&bin)
    {
        dirs.insert(0, bin);
    }
    std::env::join_paths(dirs).unwrap_or(path)
}

/// Runs a command in the workspace root, failing on a non-zero exit.
pub fn cmd(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .env("PATH", path_env())
        // Set by .cargo/config.toml for the eBPF build's nested cargo; xtask's own cargo runs
        // should report as usual.
        .env_remove("CARGO_TERM_QUIET")
        .current_dir(root())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs a command and returns its stdout.
pub fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("PATH", path_env())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!("`{program} {}` failed ({})", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    cmd(&cargo, args)
}

/// cargo of the pinned nightly, for the eBPF crate.
fn nightly_cargo(args: &[&str]) -> anyhow::Result<()> {
    let toolchain = setup::ebpf_toolchain()?;
    let mut all = vec!["run", toolchain.as_str(), "cargo"];
    all.extend(args);
    cmd("rustup", &all)
}

const EBPF_TARGET_ARGS: &[&str] = &[
    "--package",
    "xnic-ebpf",
    "--bins",
    "--release",
    "--target",
    "bpfel-unknown-none",
    "-Z",
    "build-std=core",
];

/// Every host crate: the eBPF crate only builds for the BPF target (see [`EBPF_TARGET_ARGS`]).
const HOST_CRATES: &[&str] = &["--workspace", "--exclude", "xnic-ebpf"];

fn build(quiet: bool) -> anyhow::Result<()> {
    let mut args = vec!["build"];
    if quiet {
        args.push("--quiet");
    }
    args.extend(HOST_CRATES);
    args.push("--all-targets");
    cargo(&args)
}

/// The lab's guest image, built by xnic itself (`xnic lab image`: cached, rebuilt only when
/// its recipe changes), for the tests and demos on real guests.
fn guest_image() -> anyhow::Result<()> {
    let xnic = root().join("target/debug/xnic");
    cmd(xnic.to_str().context("non-UTF-8 path")?, &["lab", "image"])
}

fn fmt(check: bool) -> anyhow::Result<()> {
    if check {
        cargo(&["fmt", "--all", "--", "--check"])
    } else {
        cargo(&["fmt", "--all"])
    }
}

fn lint(quiet: bool) -> anyhow::Result<()> {
    let q: &[&str] = if quiet { &["--quiet"] } else { &[] };
    let mut args = vec!["clippy"];
    args.extend(q);
    args.extend(HOST_CRATES);
    args.extend(["--all-targets", "--", "-D", "warnings"]);
    cargo(&args)?;
    let mut args = vec!["clippy"];
    args.extend(q);
    args.extend(EBPF_TARGET_ARGS);
    args.extend(["--", "-D", "warnings"]);
    nightly_cargo(&args)
}

fn test(rest: &[&str]) -> anyhow::Result<()> {
    let mut stages: Vec<(&str, f64)> = Vec::new();
    let mut stage = |name: &'static str, f: &dyn Fn() -> anyhow::Result<()>| {
        eprintln!("\n== {name}");
        let t = Instant::now();
        let r = f();
        stages.push((name, t.elapsed().as_secs_f64()));
        r.with_context(|| format!("stage `{name}` failed"))
    };
    stage("format", &|| fmt(true))?;
    // Quiet: compiler progress would bury what the tests print in a CI log.
    stage("lint", &|| lint(true))?;
    stage("build", &|| build(true))?;
    stage("guest image", &guest_image)?;
    let extra: Vec<&str> = match rest.iter().position(|a| *a == "--") {
        Some(i) => rest[i + 1..].to_vec(),
        None => Vec::new(),
    };
    stage("tests", &|| {
        // Every test binary runs even after one fails: a CI log then shows every failure.
        let mut args = vec!["test", "--no-fail-fast"];
        args.extend(HOST_CRATES);
        if !extra.is_empty() {
            args.push("--");
            args.extend(&extra);
        }
        let before = mem_available_mib();
        let r = cargo_within(&args, TESTS_DEADLINE);
        eprintln!(
            "memory available: {} MiB before the tests, {} MiB after",
            before.unwrap_or(0),
            mem_available_mib().unwrap_or(0)
        );
        r
    })?;
    eprintln!("\n== summary");
    for (name, secs) in &stages {
        eprintln!("{name:>8}: {secs:6.1} s");
    }
    Ok(())
}

/// The whole suite takes about 10 minutes on 2 cores and CI stops at 90: a run still going
/// after this long has hung, and is better stopped with what was running printed than
/// killed silently from outside.
const TESTS_DEADLINE: Duration = Duration::from_secs(45 * 60);

/// Runs cargo with `args` in a process group of its own; past `deadline`, prints what the
/// group still runs, kills it and fails.
fn cargo_within(args: &[&str], deadline: Duration) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .args(args)
        .env("PATH", path_env())
        .env_remove("CARGO_TERM_QUIET")
        .current_dir(root())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {cargo}"))?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("`cargo {}` failed ({status})", args.join(" "));
            }
            return Ok(());
        }
        if started.elapsed() > deadline {
            let group = child.id().to_string();
            eprintln!(
                "\nthe tests still run after {} min; what is running:",
                deadline.as_secs() / 60
            );
            if let Ok(ps) = output("ps", &["-e", "-o", "pgid=,pid=,etime=,args="]) {
                for line in ps
                    .lines()
                    .filter(|l| l.split_whitespace().next() == Some(group.as_str()))
                {
                    eprintln!("  {line}");
                }
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .status();
            let _ = child.wait();
            bail!(
                "the tests did not finish within {} min (stopped)",
                deadline.as_secs() / 60
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// MemAvailable from /proc/meminfo, in MiB: a suite that leaks kernel memory shows here.
fn mem_available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn bench(rest: &[&str]) -> anyhow::Result<()> {
    let Some(name) = rest.first() else {
        bail!("which benchmark? `cargo xtask bench dataplane`");
    };
    cargo(&[
        "build",
        "--release",
        "--package",
        "xnic",
        "--package",
        "xnic-bench",
    ])?;
    let bin = root().join("target/release/xnic-bench");
    let mut args = vec![*name];
    args.extend(&rest[1..]);
    cmd(bin.to_str().context("non-UTF-8 path")?, &args)
}
