//! The lab's guest image: a minimal Debian root file system, the cloud kernel and its initrd,
//! from Debian packages only, built once and kept in a cache directory.
//!
//! `mmdebstrap` makes the root file system from the host's own apt sources (so it needs
//! nothing the host's package manager cannot reach), with the kernel installed inside it so
//! its initrd is made for it; `mke2fs -d` writes it to an ext4 image. Guests boot that image
//! read-only with a throwaway overlay (QEMU's `snapshot=on`), so one image serves every
//! guest. PID 1 is a small script of ours ([`INIT`]): no init system, so a guest answers
//! within seconds of its kernel starting even under TCG.
//!
//! The directory holds `vmlinuz`, `initrd.img`, `root.ext4` and `recipe.txt`, the recipe it
//! was built from: when the recipe changes the image is built again, otherwise
//! [`ensure`] returns at once.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};
use tracing::info;

/// Where the image is kept unless told otherwise: a cache, rebuilt when missing.
pub const DEFAULT_DIR: &str = "/var/cache/xnic/guest";

/// The Debian release of the guests (the host's, so binaries built here run there).
const SUITE: &str = "bookworm";

/// Directories the image has beyond what its packages make: the root is mounted read-only,
/// so mount points must exist in it.
const DIRS: &[&str] = &["opt/xnic"];

/// What the guests carry: the kernel, the tools the lab's traffic needs, nothing else.
const PACKAGES: &[&str] = &[
    "linux-image-cloud-amd64",
    "mount",
    "iproute2",
    "ethtool",
    "iputils-ping",
    "iperf3",
    "procps",
];

/// The guest's PID 1. It reads its setup from the kernel command line (`xnic.name=`,
/// `xnic.ip=ADDR/LEN,...`, `xnic.neigh=ADDR=MAC,...`), brings up its one NIC, says
/// `xnic-guest: ready` on the console (ttyS0) and serves a shell on the control port (ttyS1)
/// for as long as it runs.
pub const INIT: &str = r#"#!/bin/sh
# PID 1 of an xnic lab guest.
mount -t proc proc /proc
mount -t sysfs sys /sys 2>/dev/null
mount -t devtmpfs dev /dev 2>/dev/null
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
for a in $(cat /proc/cmdline); do
  case "$a" in
    xnic.name=*) NAME="${a#xnic.name=}" ;;
    xnic.ip=*) IPS="${a#xnic.ip=}" ;;
    xnic.neigh=*) NEIGH="${a#xnic.neigh=}" ;;
  esac
done
hostname "${NAME:-guest}"
ip link set lo up
DEV=$(ls /sys/class/net | grep -v '^lo$' | head -1)
ip link set "$DEV" up
for ip in $(echo "$IPS" | tr ',' ' '); do ip addr add "$ip" dev "$DEV" nodad 2>/dev/null || ip addr add "$ip" dev "$DEV"; done
for n in $(echo "$NEIGH" | tr ',' ' '); do ip neigh replace "${n%%=*}" lladdr "${n#*=}" dev "$DEV" nud permanent; done
# Full checksums on what the guest sends, as the lab's namespaces do.
ethtool -K "$DEV" tx off tso off gso off >/dev/null 2>&1
# The lab's tools (the xnic binary for its traffic), when the host attached them.
if [ -b /dev/vdb ]; then mount -o ro /dev/vdb /opt/xnic; fi
echo "xnic-guest: ready $NAME $DEV $(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
# The control port is a line to a program, not a terminal: no echo, no line editing.
stty -F /dev/ttyS1 raw -echo
# No prompts: whoever drives the port reads only what commands print.
while true; do PS1='' PS2='' sh </dev/ttyS1 >/dev/ttyS1 2>&1; done
"#;

/// The image's files.
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub dir: PathBuf,
}

impl GuestImage {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("root.ext4")
    }

    fn recipe_path(&self) -> PathBuf {
        self.dir.join("recipe.txt")
    }

    /// Whether the image there was built from this xnic's recipe.
    pub fn is_current(&self) -> bool {
        fs::read_to_string(self.recipe_path()).is_ok_and(|r| r == recipe())
            && [self.kernel(), self.initrd(), self.root()]
                .iter()
                .all(|p| p.exists())
    }
}

/// The recipe: everything the image is made from, so a change of any of it rebuilds it.
fn recipe() -> String {
    format!(
        "suite {SUITE}\nvariant apt\npackages {}\ndirs {}\ninit:\n{INIT}",
        PACKAGES.join(","),
        DIRS.join(",")
    )
}

/// The image in `dir`, built first when it is missing or from another recipe.
pub fn ensure(dir: &Path) -> anyhow::Result<GuestImage> {
    let image = GuestImage {
        dir: dir.to_path_buf(),
    };
    if image.is_current() {
        return Ok(image);
    }
    build(&image)?;
    Ok(image)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {what}; is it installed (cargo xtask setup)?"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

/// Builds the image next to its directory and moves it in place when it is whole, so a
/// failed or interrupted build leaves the old image (or none), never half of one.
fn build(image: &GuestImage) -> anyhow::Result<()> {
    let started = Instant::now();
    let parent = image
        .dir
        .parent()
        .context("the guest image directory has no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let work = parent.join(format!(
        ".{}.build",
        image
            .dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("guest")
    ));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let result = build_in(&work);
    if result.is_err() {
        let _ = fs::remove_dir_all(&work);
        return result;
    }
    let _ = fs::remove_dir_all(&image.dir);
    fs::rename(work.join("out"), &image.dir)
        .with_context(|| format!("cannot move the new image to {}", image.dir.display()))?;
    let _ = fs::remove_dir_all(&work);
    info!(dir = %image.dir.display(), secs = started.elapsed().as_secs(), "guest image built");
    Ok(())
}

fn build_in(work: &Path) -> anyhow::Result<()> {
    let root = work.join("root");
    let out = work.join("out");
    fs::create_dir_all(&out)?;
    eprintln!("building the guest image (Debian {SUITE} with mmdebstrap; about a minute)");
    run(
        Command::new("mmdebstrap")
            .args(["--quiet", "--variant=apt", "--include"])
            .arg(PACKAGES.join(","))
            // Documentation, manuals and translations are half the tree and no guest reads
            // them.
            .args([
                "--dpkgopt=path-exclude=/usr/share/doc/*",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "--dpkgopt=path-exclude=/usr/share/locale/*",
                SUITE,
            ])
            .arg(&root),
        "mmdebstrap",
    )?;
    let boot = root.join("boot");
    let find = |prefix: &str| -> anyhow::Result<PathBuf> {
        fs::read_dir(&boot)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .with_context(|| format!("the guest's /boot has no {prefix}*"))
    };
    fs::copy(find("vmlinuz-")?, out.join("vmlinuz"))?;
    fs::copy(find("initrd.img-")?, out.join("initrd.img"))?;
    for dir in DIRS {
        fs::create_dir_all(root.join(dir))?;
    }
    let init = root.join("sbin/xnic-guest-init");
    fs::write(&init, INIT)?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    }
    // The tree's size plus room for what a guest writes before its overlay takes it.
    let used = dir_size(&root)?;
    let size_mib = used / (1 << 20) * 5 / 4 + 64;
    run(
        Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "xnic-guest", "-d"])
            .arg(&root)
            .arg(out.join("root.ext4"))
            .arg(format!("{size_mib}M")),
        "mke2fs",
    )?;
    fs::write(out.join("recipe.txt"), recipe())?;
    Ok(())
}

/// A small read-only disk with the running xnic binary, for guests to run the lab's traffic
/// tools from (`/opt/xnic/xnic` inside; the guests run the host's Debian release, so its
/// libraries are there). `exe` is that binary; written to `path`.
pub fn tools_disk(path: &Path, exe: &Path) -> anyhow::Result<()> {
    let staging = path.with_extension("d");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    // Without its debug information a debug build is a tenth of its size.
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(staging.join("xnic"))
        .arg(exe)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        fs::copy(exe, staging.join("xnic"))
            .with_context(|| format!("cannot copy {}", exe.display()))?;
    }
    let size_mib = dir_size(&staging)? / (1 << 20) + 16;
    let _ = fs::remove_file(path);
    let result = run(
        Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "xnic-tools", "-d"])
            .arg(&staging)
            .arg(path)
            .arg(format!("{size_mib}M")),
        "mke2fs",
    );
    let _ = fs::remove_dir_all(&staging);
    result
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += dir_size(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}
