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

const TRACEFS: &str = "/sys/kernel/tracing";

/// Mounts tracefs at /sys/kernel/tracing when nothing is mounted there, for the tracepoints
/// that count frames the kernel drops after a redirect. Returns its path.
pub fn ensure_tracefs() -> anyhow::Result<&'static Path> {
    let path = Path::new(TRACEFS);
    if path.join("events").exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {TRACEFS}"))?;
    mount(
        Some("nodev"),
        path,
        Some("tracefs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .with_context(|| format!("mounting tracefs at {TRACEFS} failed"))?;
    info!("mounted tracefs at {TRACEFS}");
    Ok(path)
}

/// The offset of field `name` in a tracepoint's record, from its `format` file.
pub fn field_offset(format: &str, name: &str) -> Option<usize> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let field = decl.split_whitespace().last()?;
        if field != name {
            return None;
        }
        rest.trim()
            .strip_prefix("offset:")?
            .split(';')
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offsets_come_from_the_format_file() {
        let format = "name: xdp_devmap_xmit\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int from_ifindex;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:int drops;\toffset:20;\tsize:4;\tsigned:1;\n";
        assert_eq!(field_offset(format, "from_ifindex"), Some(8));
        assert_eq!(field_offset(format, "drops"), Some(20));
        assert_eq!(field_offset(format, "sent"), None);
    }
}
