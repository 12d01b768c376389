//! `cargo xtask package`: the Debian package, built with `dpkg-deb` from a staged tree (no
//! packaging tool to install): the binary, a systemd unit per instance (`xnic@.service`) and
//! one for its rings worker, man pages from the clap definitions, shell completions, the
//! example configuration and the maintainer scripts in `packaging/`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::{cargo, cmd, output as cmd_output, root};

/// What `cargo xtask package` was asked.
struct Options {
    /// Package the debug build.
    debug: bool,
    /// Package this binary as it is, without building (the tests: theirs is built).
    binary: Option<PathBuf>,
    out: PathBuf,
}

fn options(rest: &[&str]) -> anyhow::Result<Options> {
    let mut o = Options {
        debug: false,
        binary: None,
        out: root().join("target/package"),
    };
    let mut args = rest.iter();
    while let Some(a) = args.next() {
        match *a {
            "--debug" => o.debug = true,
            "--out" => {
                o.out = PathBuf::from(args.next().context("--out needs a directory")?);
            }
            "--binary" => {
                o.binary = Some(PathBuf::from(args.next().context("--binary needs a file")?));
            }
            other => {
                bail!("unknown argument {other:?}: use [--debug] [--binary FILE] [--out DIR]")
            }
        }
    }
    Ok(o)
}

/// Builds the package; prints and returns its path.
pub fn run(rest: &[&str]) -> anyhow::Result<PathBuf> {
    let o = options(rest)?;
    let binary = match &o.binary {
        Some(b) => b.clone(),
        None => {
            let mut build = vec!["build", "--package", "xnic"];
            if !o.debug {
                build.push("--release");
            }
            cargo(&build)?;
            let profile = if o.debug { "debug" } else { "release" };
            root().join("target").join(profile).join("xnic")
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    let arch = cmd_output("dpkg", &["--print-architecture"])?
        .trim()
        .to_string();
    let name = format!("xnic_{version}_{arch}");
    let stage = o.out.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    let dir = |p: &str| -> anyhow::Result<PathBuf> {
        let d = stage.join(p);
        fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        Ok(d)
    };

    let bin = dir("usr/bin")?.join("xnic");
    // Debug information is most of the binary's size and no operator reads it.
    cmd(
        "strip",
        &["--strip-debug", "-o", path(&bin)?, path(&binary)?],
    )?;

    let man = dir("usr/share/man/man1")?;
    cmd(path(&bin)?, &["man", "--dir", path(&man)?])?;
    for page in fs::read_dir(&man)? {
        cmd("gzip", &["-9n", path(&page?.path())?])?;
    }

    for (shell, place) in [
        ("bash", "usr/share/bash-completion/completions/xnic"),
        ("zsh", "usr/share/zsh/vendor-completions/_xnic"),
        ("fish", "usr/share/fish/vendor_completions.d/xnic.fish"),
    ] {
        let text = cmd_output(path(&bin)?, &["completions", shell])?;
        let file = stage.join(place);
        fs::create_dir_all(file.parent().expect("a completion's place has a directory"))?;
        fs::write(&file, text)?;
    }

    let packaging = root().join("packaging");
    let units = dir("lib/systemd/system")?;
    for unit in ["xnic@.service", "xnic-rings@.service"] {
        copy(&packaging.join(unit), &units.join(unit))?;
    }
    dir("etc/xnic")?;
    let doc = dir("usr/share/doc/xnic")?;
    copy(&root().join("README.md"), &doc.join("README.md"))?;
    copy(&packaging.join("copyright"), &doc.join("copyright"))?;
    copy(
        &root().join("examples/host.toml"),
        &dir("usr/share/doc/xnic/examples")?.join("host.toml"),
    )?;

    let control = dir("DEBIAN")?;
    for script in ["postinst", "prerm", "postrm"] {
        copy(&packaging.join(script), &control.join(script))?;
    }
    let size_kib = cmd_output("du", &["-sk", "--exclude=DEBIAN", path(&stage)?])?;
    let size_kib = size_kib.split_whitespace().next().unwrap_or("0");
    fs::write(
        control.join("control"),
        format!(
            "Package: xnic\n\
             Version: {version}\n\
             Architecture: {arch}\n\
             Maintainer: xnic maintainers <maintainers@xnic.invalid>\n\
             Installed-Size: {size_kib}\n\
             Depends: libc6 (>= 2.34), libgcc-s1\n\
             Recommends: iproute2, nftables, conntrack, ethtool\n\
             Suggests: iperf3, tshark, qemu-system-x86, mmdebstrap\n\
             Section: net\n\
             Priority: optional\n\
             Description: software smart-NIC for hosts that run VMs\n \
             XDP programs steer (software RSS through CPU maps), police, offload and\n \
             forward each VM's traffic; a controller daemon rebalances CPUs, moves\n \
             connections into the fast path, fails NIC uplinks over, and serves an\n \
             HTTP API and Prometheus metrics. One CLI, `xnic`, and a network-namespace\n \
             lab to try it all.\n"
        ),
    )?;

    fs::create_dir_all(&o.out)?;
    let deb = o.out.join(format!("{name}.deb"));
    cmd(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-Zxz",
            "--build",
            path(&stage)?,
            path(&deb)?,
        ],
    )?;
    println!("{}", deb.display());
    Ok(deb)
}

fn copy(from: &Path, to: &Path) -> anyhow::Result<()> {
    fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}
