//! The BPF filesystem the pins live on.

use std::path::Path;

use anyhow::Context as _;
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use tracing::info;

const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs at /sys/fs/bpf when nothing is mounted there (fresh machines and some
/// containers). Pins must live in the root mount namespace's bpffs to outlive the daemon.
pub fn ensure_bpffs() -> anyhow::Result<()> {
    let path = Path::new(BPFFS);
    if let Ok(st) = statfs(path)
        && st.filesystem_type() == BPF_FS_MAGIC
    {
        return Ok(());
    }
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {BPFFS}"))?;
    mount(
        Some("bpf"),
        path,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .with_context(|| {
        format!("{BPFFS} is not a BPF filesystem and mounting one there failed (are you root?)")
    })?;
    info!("mounted bpffs at {BPFFS}");
    Ok(())
}
