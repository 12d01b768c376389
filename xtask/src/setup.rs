//! `cargo xtask setup`: installs what a fresh machine lacks, and nothing else.
//!
//! Everything is checked first (one dpkg query, one rustup listing, one look at bpf-linker),
//! so when all is present this costs well under a second. The LLVM version comes from the
//! pinned nightly itself, so changing the nightly in dataplane-ebpf/rust-toolchain.toml is
//! the only edit a toolchain bump needs.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail};

use crate::{cmd, output, path_env, root};

/// Debian packages and why each is needed. `{llvm}` is the nightly's LLVM major version.
const APT_PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-{llvm}-dev",
        "bpf-linker links against the nightly's LLVM",
    ),
    (
        "libpolly-{llvm}-dev",
        "bpf-linker's LLVM link line names Polly",
    ),
    ("libzstd-dev", "LLVM's compression support"),
    ("zlib1g-dev", "LLVM's compression support"),
    ("iproute2", "the lab: namespaces, veths, bridges"),
    ("ethtool", "inspecting lab interfaces"),
    ("iputils-ping", "lab traffic"),
    ("iperf3", "lab traffic and benchmarks"),
    ("netsniff-ng", "trafgen, the benchmarks' packet generator"),
    ("tshark", "decoding captured frames"),
    ("tcpdump", "capturing frames in tests"),
    ("nftables", "the kernel path's firewall"),
    ("conntrack", "inspecting connection tracking"),
    ("util-linux", "setpriv, for the non-root CLI test"),
    (
        "qemu-system-x86",
        "real guests: QEMU (TCG) VMs on tap devices in the lab and its tests",
    ),
    (
        "mmdebstrap",
        "real guests: builds their Debian root file system",
    ),
    (
        "e2fsprogs",
        "real guests: mke2fs writes their root file system image",
    ),
    (
        "openvswitch-switch",
        "the team benchmark's baseline: OVS bonds on the userspace datapath",
    ),
    (
        "sockperf",
        "the rings benchmark's baseline: TCP request/response latency",
    ),
    (
        "python3-scapy",
        "a second RoCEv2 implementation the ICRC is checked against",
    ),
    (
        "tmux",
        "the xnic top test drives it in a terminal (send-keys, capture-pane)",
    ),
];

/// bpf-linker release that works with the pinned toolchains.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The `channel = "..."` of dataplane-ebpf/rust-toolchain.toml.
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    let path = root().join("dataplane-ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .next()
        .with_context(|| format!("no channel in {}", path.display()))
}

pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut did = Vec::new();
    if !is_root() {
        bail!(
            "setup installs system packages and the tests need BPF and network namespaces: run as root"
        );
    }
    let toolchain = ebpf_toolchain()?;

    // 1. The pinned nightly with rust-src (for -Z build-std) and clippy.
    if !toolchain_ready(&toolchain)? {
        cmd(
            "rustup",
            &[
                "toolchain",
                "install",
                &toolchain,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
                "--component",
                "clippy",
            ],
        )?;
        did.push(format!(
            "installed Rust {toolchain} with rust-src and clippy"
        ));
    }
    let llvm = llvm_major(&toolchain)?;

    // 2. System packages.
    let wanted: Vec<String> = APT_PACKAGES
        .iter()
        .map(|(p, _)| p.replace("{llvm}", &llvm.to_string()))
        .collect();
    let missing = missing_packages(&wanted)?;
    if !missing.is_empty() {
        if Command::new("apt-get").arg("--version").output().is_err() {
            bail!(
                "missing packages {} and no apt-get to install them: install them by hand",
                missing.join(" ")
            );
        }
        cmd("apt-get", &["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(missing.iter().map(String::as_str));
        let status = Command::new("apt-get")
            .args(&args)
            .env("PATH", path_env())
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get install {} failed", missing.join(" "));
        }
        did.push(format!("installed {}", missing.join(", ")));
    }

    // 3. bpf-linker built against that LLVM.
    if !bpf_linker_ready(llvm) {
        let prefix = format!("/usr/lib/llvm-{llvm}");
        if !Path::new(&prefix).join("bin/llvm-config").exists() {
            bail!("{prefix}/bin/llvm-config is missing although llvm-{llvm}-dev is installed");
        }
        let status = Command::new("cargo")
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm}"),
            ])
            .env("LLVM_PREFIX", &prefix)
            .env("PATH", path_env())
            .current_dir(std::env::temp_dir())
            .status()
            .context("running cargo install bpf-linker")?;
        if !status.success() {
            bail!("building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm} failed");
        }
        did.push(format!(
            "built bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm}"
        ));
    }

    let secs = started.elapsed().as_secs_f64();
    if did.is_empty() {
        eprintln!("setup: everything is in place ({secs:.1} s)");
    } else {
        for d in &did {
            eprintln!("setup: {d}");
        }
        eprintln!("setup: done ({secs:.1} s)");
    }
    Ok(())
}

fn is_root() -> bool {
    output("id", &["-u"]).is_ok_and(|s| s.trim() == "0")
}

fn toolchain_ready(toolchain: &str) -> anyhow::Result<bool> {
    let Ok(installed) = output(
        "rustup",
        &["component", "list", "--toolchain", toolchain, "--installed"],
    ) else {
        return Ok(false);
    };
    Ok(installed.lines().any(|l| l.starts_with("rust-src"))
        && installed.lines().any(|l| l.starts_with("clippy")))
}

/// The LLVM major version the nightly was built with ("LLVM version: 22.1.4").
fn llvm_major(toolchain: &str) -> anyhow::Result<u32> {
    let vv = output("rustup", &["run", toolchain, "rustc", "-vV"])?;
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version:"))
        .and_then(|v| v.trim().split('.').next()?.parse().ok())
        .with_context(|| format!("no LLVM version in `rustc -vV` of {toolchain}"))
}

fn missing_packages(wanted: &[String]) -> anyhow::Result<Vec<String>> {
    let mut args = vec!["-W", "-f", "${Package} ${Status}\n"];
    args.extend(wanted.iter().map(String::as_str));
    // dpkg-query exits non-zero when a package is unknown; its stdout still lists the rest.
    let out = Command::new("dpkg-query")
        .args(&args)
        .output()
        .context("running dpkg-query (is this a Debian system?)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(wanted
        .iter()
        .filter(|p| {
            !text
                .lines()
                .any(|l| l.starts_with(&format!("{p} ")) && l.ends_with("install ok installed"))
        })
        .cloned()
        .collect())
}

fn bpf_linker_ready(llvm: u32) -> bool {
    let Ok(version) = output("bpf-linker", &["--version"]) else {
        return false;
    };
    if !version.contains(BPF_LINKER_VERSION) {
        return false;
    }
    let Ok(path) = output("sh", &["-c", "command -v bpf-linker"]) else {
        return false;
    };
    output("ldd", &[path.trim()]).is_ok_and(|l| l.contains(&format!("libLLVM.so.{llvm}")))
}
