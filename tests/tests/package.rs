//! The Debian package: built by `cargo xtask package` from the binary under test, installed
//! with `dpkg -i` into a clean Debian root, where `xnic --help` and `xnic check` run, the
//! man pages, completions and systemd units are where Debian looks for them, and `dpkg -r`
//! takes it all away again.

use std::{path::PathBuf, process::Command};

use xnic_tests::{debian_root::Root, unique_name, xnic_bin};

/// Packages the binary the tests run, with the workspace's own xtask (built beside it).
fn package(out: &std::path::Path) -> PathBuf {
    let bin = xnic_bin();
    let xtask = bin.with_file_name("xtask");
    let run = Command::new(&xtask)
        .args(["package", "--binary"])
        .arg(&bin)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", xtask.display()));
    assert!(
        run.status.success(),
        "cargo xtask package failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let deb = String::from_utf8_lossy(&run.stdout)
        .lines()
        .last()
        .expect("the package's path")
        .to_string();
    PathBuf::from(deb)
}

/// Removes a scratch directory when the test ends, however it ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_package_installs_into_a_clean_debian_root_and_runs_there() {
    let scratch = Scratch(std::env::temp_dir().join(unique_name()));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let deb = package(&scratch.0.join("out"));
    let info = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&deb)
        .output()
        .unwrap();
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Package: xnic"), "{info}");
    assert!(info.contains("Depends: libc6"), "{info}");

    let root = Root::unpack(&scratch.0).expect("a clean Debian root");
    std::fs::copy(&deb, root.dir.join("tmp/xnic.deb")).unwrap();
    root.run("dpkg -i /tmp/xnic.deb").expect("dpkg -i");

    let help = root.run("xnic --help").unwrap();
    for command in ["run", "check", "vm", "rss", "team", "flows", "rings", "lab"] {
        assert!(help.contains(&format!("  {command} ")), "{command}: {help}");
    }
    let check = root
        .run("xnic check --config /usr/share/doc/xnic/examples/host.toml")
        .unwrap();
    assert!(check.contains("valid: instance \"host\""), "{check}");

    let files = root
        .run(
            "ls /lib/systemd/system/xnic@.service /lib/systemd/system/xnic-rings@.service \
             /usr/share/man/man1/xnic.1.gz /usr/share/man/man1/xnic-rings-write.1.gz \
             /usr/share/bash-completion/completions/xnic /usr/share/zsh/vendor-completions/_xnic \
             /usr/share/fish/vendor_completions.d/xnic.fish /usr/share/doc/xnic/copyright \
             && test -d /etc/xnic",
        )
        .unwrap();
    assert!(files.contains("xnic@.service"), "{files}");
    let unit = root.run("cat /lib/systemd/system/xnic@.service").unwrap();
    assert!(
        unit.contains("ExecStart=/usr/bin/xnic run --config /etc/xnic/%i.toml"),
        "{unit}"
    );
    // The man page is the clap definition's, rendered.
    let page = root
        .run("zcat /usr/share/man/man1/xnic-rings-write.1.gz")
        .unwrap();
    assert!(page.contains("OFFSET of region REGION at PEER"), "{page}");

    root.run("dpkg -r xnic").expect("dpkg -r");
    let gone = root.run("test ! -e /usr/bin/xnic && test ! -e /lib/systemd/system/xnic@.service");
    assert!(gone.is_ok(), "{gone:?}");
}
