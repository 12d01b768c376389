//! Builds the XDP programs (dataplane-ebpf) with the pinned nightly and bpf-linker, and leaves
//! the objects in OUT_DIR for `include_bytes_aligned!`. `cargo xtask setup` installs what this
//! needs; the error says so when something is missing.

use std::{fs, path::Path};

use anyhow::{Context as _, anyhow, bail};

fn main() -> anyhow::Result<()> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("controller crate has no parent directory"))?
        .join("dataplane-ebpf");
    // The programs are built from xnic-common too: a change there must rebuild them
    // (aya-build watches only the eBPF crate's own directory).
    let common_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("controller crate has no parent directory"))?
        .join("common");
    println!(
        "cargo:rerun-if-changed={}",
        common_dir.join("src").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        common_dir.join("Cargo.toml").display()
    );
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    let toolchain = pinned_channel(&toolchain_file)?;

    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "xnic-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .with_context(|| {
        format!(
            "building the XDP programs with {toolchain} failed; \
             run `cargo xtask setup` to install the toolchain and bpf-linker"
        )
    })
}

/// The `channel = "..."` line of a rust-toolchain.toml.
fn pinned_channel(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("channel")
            && let Some(value) = rest.trim().strip_prefix('=')
        {
            return Ok(value.trim().trim_matches('"').to_string());
        }
    }
    bail!("no `channel = \"...\"` in {}", path.display())
}
