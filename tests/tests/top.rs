//! `xnic top` in a real terminal (tmux): it shows the lab's ports, VMs, CPUs and uplinks,
//! sorts and filters on keys, and quits on `q`.

use std::{process::Command, time::Duration};

use xnic_tests::{TestLab, eventually, unique_name, xnic_bin};

/// A detached tmux session of its own, killed when the test ends.
struct Tmux(String);

impl Tmux {
    fn start(command: &str) -> Tmux {
        let name = unique_name();
        let ok = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "150",
                "-y",
                "50",
                command,
            ])
            .status()
            .expect("tmux (cargo xtask setup installs it)")
            .success();
        assert!(ok, "tmux new-session");
        Tmux(name)
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", self.0.as_str()];
        args.extend(keys);
        assert!(Command::new("tmux").args(&args).status().unwrap().success());
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .output()
            .is_ok_and(|o| o.status.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

#[test]
fn top_shows_the_lab_live_and_answers_its_keys() {
    let mut t = TestLab::new(2);
    t.start_daemon();
    let tmux = Tmux::start(&format!(
        "{} top --instance {}",
        xnic_bin().display(),
        t.instance
    ));
    let within = Duration::from_secs(10);
    assert!(
        eventually(within, || {
            let s = tmux.screen();
            s.contains("PORTS") && s.contains("vm0") && s.contains("vm1") && s.contains("UPLINKS")
        }),
        "{}",
        tmux.screen()
    );
    assert!(tmux.screen().contains("sort: pps"), "{}", tmux.screen());
    tmux.keys(&["s"]);
    assert!(
        eventually(within, || tmux.screen().contains("sort: drops")),
        "{}",
        tmux.screen()
    );
    tmux.keys(&["r"]);
    assert!(
        eventually(within, || tmux.screen().contains("(reversed)")),
        "{}",
        tmux.screen()
    );
    // Filter on vm1: vm0 leaves the port and VM tables.
    tmux.keys(&["/", "vm1", "Enter"]);
    assert!(
        eventually(within, || {
            let s = tmux.screen();
            s.contains("filter: vm1") && s.contains("vm1") && !s.contains("vm0")
        }),
        "{}",
        tmux.screen()
    );
    tmux.keys(&["q"]);
    assert!(eventually(within, || !tmux.alive()), "top quits on q");
}
