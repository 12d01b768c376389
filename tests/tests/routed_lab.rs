//! The routed lab's slow path on its own, before any xnic runs in it: VMs reach the tor's
//! server masqueraded, the tor reaches the virtual IP and lands on a VM, VMs reach the
//! network behind the VXLAN tunnel; conntrack shows the NAT (`conntrack -L`), and nothing is
//! INVALID. This is the host flow offload has to behave exactly like.

use std::process::Command;

use std::time::Duration;

use xnic::lab::{
    daemon::DaemonProcess,
    routed::{REMOTE_IP, RoutedLab, SERVER_IP, VIRTUAL_IP},
};
use xnic_tests::{unique_name, xnic_bin};

/// The lab, taken down when the test ends, even on failure.
struct Lab(RoutedLab);

impl Drop for Lab {
    fn drop(&mut self) {
        // A daemon of the same name (the tests name both alike) leaves its pins when killed.
        let _ = xnic::dataplane::teardown(&self.0.prefix);
        self.0.down();
    }
}

fn exec(ns: &str, cmd: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn ping(ns: &str, dst: &str) {
    let (ok, out) = exec(ns, &["ping", "-c", "3", "-i", "0.2", "-W", "2", dst]);
    assert!(ok && out.contains("3 received"), "{ns} → {dst}: {out}");
}

#[test]
fn the_slow_path_routes_nats_and_tunnels() {
    let lab = Lab(RoutedLab::new(&unique_name(), 2));
    lab.0.up().unwrap();
    let host = lab.0.host_ns();
    let tor = lab.0.tor_ns();
    let vm0 = lab.0.vm_ns(&lab.0.vms[0]);
    let vm1 = lab.0.vm_ns(&lab.0.vms[1]);

    // Out to the server, masqueraded: conntrack's reply tuple is the uplink's address.
    ping(&vm0, SERVER_IP);
    let (_, listed) = exec(&host, &["conntrack", "-L", "-p", "icmp", "-s", "10.1.0.2"]);
    assert!(listed.contains("dst=192.0.2.1"), "masqueraded: {listed}");

    // Into the tunnel and back, not NAT'd.
    ping(&vm1, REMOTE_IP);
    let (_, listed) = exec(&host, &["conntrack", "-L", "-p", "icmp", "-d", REMOTE_IP]);
    assert!(listed.contains("src=10.200.0.5 dst=10.1.1.2"), "{listed}");

    // The virtual IP: two pings in a row land on each VM once (numgen inc).
    for _ in 0..2 {
        ping(&tor, VIRTUAL_IP);
    }
    let (_, listed) = exec(&host, &["conntrack", "-L", "-p", "icmp", "-d", VIRTUAL_IP]);
    assert!(
        listed.contains("src=10.1.0.2") || listed.contains("src=10.1.1.2"),
        "DNAT'd to a VM: {listed}"
    );

    assert_eq!(lab.0.invalid_count().unwrap(), 0);
}

#[test]
fn xnic_on_the_routed_host_leaves_the_slow_path_as_it_was() {
    let name = unique_name();
    let lab = Lab(RoutedLab::new(&name, 2));
    lab.0.up().unwrap();
    let path = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&path, lab.0.config(&name, "enabled = true")).unwrap();
    let daemon = DaemonProcess::start(&xnic_bin(), &path, &name, None, Duration::from_secs(30))
        .expect("the daemon starts on the routed host");
    let vm0 = lab.0.vm_ns(&lab.0.vms[0]);
    let vm1 = lab.0.vm_ns(&lab.0.vms[1]);
    ping(&vm0, SERVER_IP);
    ping(&vm1, REMOTE_IP);
    ping(&lab.0.tor_ns(), VIRTUAL_IP);
    assert_eq!(lab.0.invalid_count().unwrap(), 0);
    // Every port has the fast path's egress program (a pinned TCX link).
    for port in ["up0", "vm0", "vm1"] {
        let pin = std::path::Path::new("/sys/fs/bpf/xnic")
            .join(&name)
            .join("flows")
            .join(port);
        assert!(pin.exists(), "{} is pinned", pin.display());
    }
    daemon.stop().unwrap();
    let _ = std::fs::remove_file(&path);
}
