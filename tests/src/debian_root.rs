//! A clean Debian root file system for installing xnic's package into: `mmdebstrap
//! --variant=minbase` from the host's own apt sources, kept as a tarball in a cache directory
//! (built once, about a minute) and unpacked afresh for each test.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The cache: `root.tar` and the recipe it was made from.
pub const CACHE_DIR: &str = "/var/cache/xnic/debian-root";

/// The host's release, so that the package built here installs there.
const SUITE: &str = "bookworm";

fn recipe() -> String {
    format!("suite {SUITE}\nvariant minbase\n")
}

/// The cached tarball, built first when it is missing or its recipe changed.
pub fn tarball() -> anyhow::Result<PathBuf> {
    let dir = Path::new(CACHE_DIR);
    let tar = dir.join("root.tar");
    let recipe_file = dir.join("recipe.txt");
    if tar.is_file() && fs::read_to_string(&recipe_file).ok().as_deref() == Some(&recipe()) {
        return Ok(tar);
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Built beside its place and moved in whole: an interrupted build leaves no half tarball.
    // (mmdebstrap picks its output's format by the name's extension.)
    let partial = dir.join(format!(".partial-{}.tar", std::process::id()));
    let out = Command::new("mmdebstrap")
        .args(["--quiet", "--variant=minbase", SUITE])
        .arg(&partial)
        .output()
        .context("cannot run mmdebstrap (`cargo xtask setup` installs it)")?;
    if !out.status.success() {
        let _ = fs::remove_file(&partial);
        bail!(
            "mmdebstrap failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    fs::rename(&partial, &tar)?;
    fs::write(&recipe_file, recipe())?;
    Ok(tar)
}

/// A fresh root unpacked under `parent`, removed when dropped.
pub struct Root {
    pub dir: PathBuf,
}

impl Root {
    pub fn unpack(parent: &Path) -> anyhow::Result<Root> {
        let tar = tarball()?;
        let dir = parent.join("root");
        fs::create_dir_all(&dir)?;
        let root = Root { dir };
        let status = Command::new("tar")
            .args(["-xf"])
            .arg(&tar)
            .arg("-C")
            .arg(&root.dir)
            .status()
            .context("cannot run tar")?;
        if !status.success() {
            bail!("cannot unpack {}", tar.display());
        }
        Ok(root)
    }

    /// Runs `script` (sh) chrooted in the root, with /proc and /sys mounted there in a
    /// private mount namespace (they go away with it); its output, or its failure with it.
    pub fn run(&self, script: &str) -> anyhow::Result<String> {
        let r = self.dir.to_str().context("a non-UTF-8 path")?;
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--fork", "sh", "-c"])
            .arg(format!(
                "mount -t proc proc {r}/proc && mount -t sysfs sysfs {r}/sys && \
                 exec chroot {r} /bin/sh -c \"$0\""
            ))
            .arg(script)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .context("cannot run unshare")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "`{script}` in the Debian root failed ({}):\n{text}",
                out.status
            );
        }
        Ok(text)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}
