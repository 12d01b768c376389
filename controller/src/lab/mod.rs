//! The network-namespace lab: the demo and test topology built from a configuration's `[lab]`
//! section.
//!
//! ```text
//!   <prefix>-tor                       <netns> (the host)                 <prefix>-<vm>
//!  ┌─────────────────┐   host-up0 ─ up0 ┌──────────────────────┐ vm0 ─ eth0 ┌──────────┐
//!  │ br0 + tor_ips   │─────────────────│ xbr0: VM ports + up0 │──────────│ VM's IPs │
//!  │ (traffic end)   │   host-up1 ─ up1 │ up1: idle for the    │   ...     └──────────┘
//!  └─────────────────┘─────────────────│ kernel path          │
//!                                       └──────────────────────┘
//! ```
//!
//! Without a team, the host bridges its VM ports with the first uplink, so the kernel forwards
//! everything the dataplane passes; the other uplinks stay out of the bridge (a second bridged
//! path to the tor's bridge would be a loop). With a team, no uplink is bridged: xnic switches
//! VM traffic onto the team's uplinks itself. Neighbour entries
//! are static, so no ARP or ND crosses the lab, and with `ipv6 = false` nothing at all crosses it
//! unless someone sends.

pub mod capture;
pub mod daemon;
pub mod fleet;
pub mod guest;
pub mod qemu;
pub mod rings;
pub mod routed;
pub mod traffic;

use std::{net::IpAddr, process::Command};

use anyhow::{Context as _, bail};
use tracing::debug;

use crate::{
    config::{Config, LabConfig},
    net::{IpNet, MacAddr},
    netns,
};

/// The tor's bridge MAC, fixed so VMs can have static neighbour entries for it.
pub const TOR_MAC: MacAddr = MacAddr([0x02, 0x78, 0x00, 0x00, 0x00, 0x01]);
/// The host's bridge.
pub const HOST_BRIDGE: &str = "xbr0";
/// The tor's bridge.
pub const TOR_BRIDGE: &str = "br0";
/// The VM side of every VM port.
pub const VM_IFNAME: &str = "eth0";

pub struct Lab {
    config: Config,
    lab: LabConfig,
    /// With real guests: the image they boot (else every VM is a namespace).
    guests: Option<guest::GuestImage>,
    /// The xnic binary the guests get on their tools disk (default: this one).
    tools_exe: Option<std::path::PathBuf>,
}

/// Where a lab's guests keep their pid files, consoles and control ports.
pub const GUEST_RUN_DIR: &str = "/run/xnic/lab";

impl Lab {
    pub fn new(config: Config) -> anyhow::Result<Lab> {
        let Some(lab) = config.lab.clone() else {
            bail!("the configuration has no [lab] section, so it does not describe a lab");
        };
        Ok(Lab {
            config,
            lab,
            guests: None,
            tools_exe: None,
        })
    }

    /// The same lab with a QEMU guest per VM, booted from `image`, on a tap device as its
    /// port instead of a namespace on a veth.
    pub fn with_guests(config: Config, image: guest::GuestImage) -> anyhow::Result<Lab> {
        let mut lab = Lab::new(config)?;
        lab.guests = Some(image);
        Ok(lab)
    }

    /// The xnic binary guests run the lab's traffic tools from (when this process is not
    /// xnic itself, say a test).
    pub fn set_tools_binary(&mut self, exe: std::path::PathBuf) {
        self.tools_exe = Some(exe);
    }

    /// Whether the VMs are real guests.
    pub fn has_guests(&self) -> bool {
        self.guests.is_some()
    }

    /// The run directory of this lab's guests.
    pub fn guest_dir(&self) -> std::path::PathBuf {
        std::path::Path::new(GUEST_RUN_DIR).join(&self.lab.prefix)
    }

    /// The guests' tools disk, written once per lab.
    fn tools_disk(&self) -> anyhow::Result<std::path::PathBuf> {
        let path = self.guest_dir().join("tools.ext4");
        if !path.exists() {
            std::fs::create_dir_all(self.guest_dir())?;
            let exe = match &self.tools_exe {
                Some(e) => e.clone(),
                None => std::env::current_exe().context("cannot find the xnic executable")?,
            };
            guest::tools_disk(&path, &exe)?;
        }
        Ok(path)
    }

    /// VM `name`'s guest.
    pub fn guest(&self, name: &str) -> anyhow::Result<qemu::Guest> {
        self.lab_vm(name)?;
        Ok(qemu::Guest::new(&self.guest_dir(), name))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn host_ns(&self) -> &str {
        self.config.netns.as_deref().unwrap_or_default()
    }

    pub fn tor_ns(&self) -> String {
        format!("{}-tor", self.lab.prefix)
    }

    pub fn vm_ns(&self, vm: &str) -> String {
        format!("{}-{vm}", self.lab.prefix)
    }

    /// Gives VM `vm`'s NIC the MAC address `mac` (one its port may not own: frames from it are
    /// then spoofed), keeping its static neighbour entry for the tor at `tor`, which a new
    /// MAC flushes, so no ARP is needed.
    pub fn set_vm_mac(&self, vm: &str, mac: &str, tor: IpAddr) -> anyhow::Result<()> {
        let ns = self.vm_ns(vm);
        ip(&["-n", &ns, "link", "set", "eth0", "address", mac])?;
        ip(&[
            "-n",
            &ns,
            "neigh",
            "replace",
            &tor.to_string(),
            "lladdr",
            &TOR_MAC.to_string(),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
    }

    /// Every namespace the lab owns (with real guests, VMs have none).
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![self.host_ns().to_string(), self.tor_ns()];
        if !self.has_guests() {
            v.extend(self.config.vms.iter().map(|vm| self.vm_ns(&vm.name)));
        }
        v
    }

    pub fn tor_addrs(&self) -> Vec<IpNet> {
        self.lab.tor_nets()
    }

    /// The namespace and first IPv4 address of `name`: `tor` or a VM.
    pub fn endpoint(&self, name: &str) -> anyhow::Result<(String, IpAddr)> {
        let (ns, nets) = if name == "tor" {
            (self.tor_ns(), self.lab.tor_nets())
        } else {
            let vm = self.config.vm(name).with_context(|| {
                format!(
                    "no VM named {name:?} in the lab; use tor or one of: {}",
                    self.config
                        .vms
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            (self.vm_ns(name), vm.ip_nets())
        };
        let addr = nets
            .iter()
            .map(|n| n.addr)
            .find(IpAddr::is_ipv4)
            .with_context(|| format!("{name} has no IPv4 address in the lab configuration"))?;
        Ok((ns, addr))
    }

    /// Whether any of the lab's namespaces exists.
    pub fn exists(&self) -> bool {
        self.namespaces().iter().any(|ns| netns::path(ns).exists())
    }

    /// Builds the lab. Fails without touching anything if any of its namespaces exists;
    /// removes what it built if a step fails.
    pub fn up(&self) -> anyhow::Result<()> {
        let existing: Vec<String> = self
            .namespaces()
            .into_iter()
            .filter(|ns| netns::path(ns).exists())
            .collect();
        if !existing.is_empty() {
            bail!(
                "lab namespaces already exist: {}; run `xnic lab down` first",
                existing.join(", ")
            );
        }
        if let Err(e) = self.build() {
            let _ = self.down();
            return Err(e);
        }
        Ok(())
    }

    fn build(&self) -> anyhow::Result<()> {
        let host = self.host_ns();
        let tor = self.tor_ns();
        for ns in self.namespaces() {
            ip(&["netns", "add", &ns])?;
            if !self.lab.ipv6 {
                sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
                sysctl(&ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
            }
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }

        // The tor: one bridge with the endpoint's addresses, a port per uplink.
        ip(&[
            "-n",
            &tor,
            "link",
            "add",
            TOR_BRIDGE,
            "address",
            &TOR_MAC.to_string(),
            "type",
            "bridge",
        ])?;
        ip(&["-n", &tor, "link", "set", TOR_BRIDGE, "up"])?;
        for net in self.lab.tor_nets() {
            if net.addr.is_ipv6() && !self.lab.ipv6 {
                continue;
            }
            add_addr(&tor, TOR_BRIDGE, &net)?;
        }
        full_checksums(&tor, TOR_BRIDGE)?;

        // The host: the VM bridge, uplinks to the tor.
        ip(&["-n", host, "link", "add", HOST_BRIDGE, "type", "bridge"])?;
        ip(&["-n", host, "link", "set", HOST_BRIDGE, "up"])?;
        for (i, up) in self.config.uplinks.iter().enumerate() {
            self.plug_uplink_link(&up.name, i == 0)?;
        }

        // VMs: a namespace each (or a guest), its port on the host bridge.
        for vm in &self.config.vms {
            self.plug_vm(vm)?;
        }
        // Static neighbours everywhere: no ARP/ND on the wire, and AF_XDP-style tests that
        // steal frames cannot break address resolution. Guests get theirs at boot.
        let everyone = self.endpoints();
        for (ns, dev, own, _) in &everyone {
            if self.has_guests() && *ns != self.tor_ns() {
                continue;
            }
            self.neighbours(&everyone, ns, dev, *own)?;
        }
        if self.has_guests() {
            for vm in &self.config.vms {
                let took = self.guest(&vm.name)?.wait_ready(qemu::BOOT_TIMEOUT)?;
                debug!(vm = %vm.name, secs = took.as_secs_f64(), "guest ready");
            }
        }
        // Where each VM is, so the tor does not flood frames for VMs over every uplink
        // before it has heard from them (dynamic: a VM's frames may move them).
        if let Some(first) = self.config.uplinks.first() {
            for vm in &self.config.vms {
                for mac in vm.mac_addrs() {
                    bridge(&[
                        "-n",
                        &tor,
                        "fdb",
                        "replace",
                        &mac.to_string(),
                        "dev",
                        &tor_port(&first.name),
                        "master",
                        "dynamic",
                    ])?;
                }
            }
        }
        // A veth reports its carrier a moment after both ends are up: wait, so a daemon
        // started right after this sees the lab as it is meant to be.
        let ports: Vec<String> = self
            .config
            .uplinks
            .iter()
            .map(|u| u.name.clone())
            .chain(self.config.vms.iter().map(|v| v.port.clone()))
            .collect();
        wait_until_up(host, &ports, LINK_SETTLE_TIMEOUT)
    }

    /// Creates uplink `name`: a veth from the host namespace to a port of the tor's bridge.
    /// The first uplink is also on the host's bridge when no team owns the uplinks.
    fn plug_uplink_link(&self, name: &str, first: bool) -> anyhow::Result<()> {
        let (host, tor) = (self.host_ns(), self.tor_ns());
        let peer = tor_port(name);
        veth(host, name, &tor, &peer)?;
        ip(&["-n", &tor, "link", "set", &peer, "master", TOR_BRIDGE, "up"])?;
        // Frames xnic redirects into a veth need its peer to run NAPI.
        receives_redirects(&tor, &peer)?;
        // A team's uplinks belong to xnic, which switches VM traffic onto them; bridging
        // one as well would deliver frames twice.
        if first && self.config.teams.is_empty() {
            ip(&["-n", host, "link", "set", name, "master", HOST_BRIDGE])?;
        }
        ip(&["-n", host, "link", "set", name, "up"])
    }

    /// Deletes uplink `name` (both ends), as a NIC that is unplugged or whose driver goes
    /// away.
    pub fn unplug_uplink(&self, name: &str) -> anyhow::Result<()> {
        self.lab_uplink(name)?;
        ip(&["-n", self.host_ns(), "link", "del", name])
    }

    /// Creates uplink `name` again: a new interface with the same name.
    pub fn plug_uplink(&self, name: &str) -> anyhow::Result<()> {
        let first = self.lab_uplink(name)? == 0;
        self.plug_uplink_link(name, first)?;
        wait_until_up(self.host_ns(), &[name.to_string()], LINK_SETTLE_TIMEOUT)
    }

    /// The position of uplink `name` in the lab's configuration.
    fn lab_uplink(&self, name: &str) -> anyhow::Result<usize> {
        self.config
            .uplinks
            .iter()
            .position(|u| u.name == name)
            .ok_or_else(|| anyhow::anyhow!("the lab has no uplink {name:?}"))
    }

    /// Creates VM `vm`'s port: a veth from the host namespace to the VM's, with its MAC,
    /// addresses and checksum settings, on the host bridge.
    fn plug_vm(&self, vm: &crate::config::VmConfig) -> anyhow::Result<()> {
        if let Some(image) = &self.guests {
            return self.plug_guest(vm, image);
        }
        let host = self.host_ns();
        let ns = self.vm_ns(&vm.name);
        veth(host, &vm.port, &ns, VM_IFNAME)?;
        if let Some(mac) = vm.mac_addrs().first() {
            ip(&[
                "-n",
                &ns,
                "link",
                "set",
                VM_IFNAME,
                "address",
                &mac.to_string(),
            ])?;
        }
        ip(&["-n", &ns, "link", "set", VM_IFNAME, "up"])?;
        full_checksums(&ns, VM_IFNAME)?;
        receives_redirects(&ns, VM_IFNAME)?;
        for net in vm.ip_nets() {
            if net.addr.is_ipv6() && !self.lab.ipv6 {
                continue;
            }
            add_addr(&ns, VM_IFNAME, &net)?;
        }
        self.on_host_bridge(&vm.port)
    }

    /// Puts VM port `port` on the host's bridge and brings it up.
    fn on_host_bridge(&self, port: &str) -> anyhow::Result<()> {
        ip(&[
            "-n",
            self.host_ns(),
            "link",
            "set",
            port,
            "master",
            HOST_BRIDGE,
            "up",
        ])
    }

    /// Creates VM `vm`'s tap in the host namespace, on the host bridge, and starts its guest
    /// on it (without waiting for it to boot).
    fn plug_guest(
        &self,
        vm: &crate::config::VmConfig,
        image: &guest::GuestImage,
    ) -> anyhow::Result<()> {
        let host = self.host_ns();
        let queues = guest_queues(&self.config, vm);
        let mut add = vec!["-n", host, "tuntap", "add", "dev", &vm.port, "mode", "tap"];
        if queues > 1 {
            add.push("multi_queue");
        }
        ip(&add)?;
        self.on_host_bridge(&vm.port)?;
        let mac = vm
            .mac_addrs()
            .first()
            .copied()
            .with_context(|| format!("VM {} has no MAC for its guest's NIC", vm.name))?;
        let own: Vec<IpAddr> = vm.ip_nets().iter().map(|n| n.addr).collect();
        let neighbours = self
            .endpoints()
            .into_iter()
            .filter(|(_, _, addr, m)| *m != mac && !own.contains(addr))
            .filter(|(_, _, addr, _)| addr.is_ipv4() || self.lab.ipv6)
            .map(|(_, _, addr, m)| (addr, m))
            .collect();
        let spec = qemu::GuestSpec {
            name: vm.name.clone(),
            tap: vm.port.clone(),
            mac,
            ips: vm
                .ip_nets()
                .into_iter()
                .filter(|n| n.addr.is_ipv4() || self.lab.ipv6)
                .collect(),
            neighbours,
            queues,
            cpus: queues,
            ipv6: self.lab.ipv6,
            tools: Some(self.tools_disk()?),
        };
        qemu::Guest::start(&self.guest_dir(), host, image, &spec)?;
        Ok(())
    }

    /// Every lab endpoint: (namespace, device, address, MAC).
    fn endpoints(&self) -> Vec<(String, &'static str, IpAddr, MacAddr)> {
        let mut everyone = Vec::new();
        for net in self.lab.tor_nets() {
            everyone.push((self.tor_ns(), TOR_BRIDGE, net.addr, TOR_MAC));
        }
        for vm in &self.config.vms {
            let Some(mac) = vm.mac_addrs().first().copied() else {
                continue;
            };
            for net in vm.ip_nets() {
                everyone.push((self.vm_ns(&vm.name), VM_IFNAME, net.addr, mac));
            }
        }
        everyone
    }

    /// Static neighbour entries on `dev` in `ns` (whose own address is `own`) for everyone
    /// else of the same family.
    fn neighbours(
        &self,
        everyone: &[(String, &'static str, IpAddr, MacAddr)],
        ns: &str,
        dev: &str,
        own: IpAddr,
    ) -> anyhow::Result<()> {
        for (other_ns, _, addr, mac) in everyone {
            if other_ns == ns || addr.is_ipv4() != own.is_ipv4() {
                continue;
            }
            if addr.is_ipv6() && !self.lab.ipv6 {
                continue;
            }
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                &addr.to_string(),
                "lladdr",
                &mac.to_string(),
                "dev",
                dev,
                "nud",
                "permanent",
            ])?;
        }
        Ok(())
    }

    fn lab_vm(&self, name: &str) -> anyhow::Result<&crate::config::VmConfig> {
        self.config
            .vm(name)
            .ok_or_else(|| anyhow::anyhow!("the lab has no VM {name:?}"))
    }

    /// Deletes VM `name`'s port, as a VM that stops (or migrates away) does. A guest's QEMU
    /// stops with it (as when QEMU exits, its tap goes).
    pub fn unplug(&self, name: &str) -> anyhow::Result<()> {
        let vm = self.lab_vm(name)?;
        if self.has_guests() {
            self.guest(name)?.stop()?;
        }
        ip(&["-n", self.host_ns(), "link", "del", &vm.port])
    }

    /// Creates VM `name`'s port again, as a VM that starts (or migrates in) does: a new
    /// interface with the same name and a new ifindex.
    pub fn plug(&self, name: &str) -> anyhow::Result<()> {
        let vm = self.lab_vm(name)?;
        self.plug_vm(vm)?;
        if self.has_guests() {
            self.guest(name)?.wait_ready(qemu::BOOT_TIMEOUT)?;
            return wait_until_up(
                self.host_ns(),
                std::slice::from_ref(&vm.port),
                LINK_SETTLE_TIMEOUT,
            );
        }
        let everyone = self.endpoints();
        let ns = self.vm_ns(name);
        for (e_ns, dev, own, _) in &everyone {
            if *e_ns == ns {
                self.neighbours(&everyone, e_ns, dev, *own)?;
            }
        }
        wait_until_up(
            self.host_ns(),
            std::slice::from_ref(&vm.port),
            LINK_SETTLE_TIMEOUT,
        )
    }

    /// Removes every lab namespace that exists (and with them their interfaces). Returns the
    /// names removed.
    pub fn down(&self) -> anyhow::Result<Vec<String>> {
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        // Guests first (their taps go with the host namespace), whichever way the lab was
        // brought up.
        let dir = self.guest_dir();
        for g in qemu::guests_in(&dir) {
            if let Err(e) = g.stop() {
                errors.push(format!("{e:#}"));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        let namespaces = {
            let mut v = vec![self.host_ns().to_string(), self.tor_ns()];
            v.extend(self.config.vms.iter().map(|vm| self.vm_ns(&vm.name)));
            v
        };
        for ns in namespaces {
            if netns::path(&ns).exists() {
                match netns::remove(&ns) {
                    Ok(()) => removed.push(ns),
                    Err(e) => errors.push(format!("{e:#}")),
                }
            }
        }
        if !errors.is_empty() {
            bail!(
                "could not remove every lab namespace: {}",
                errors.join("; ")
            );
        }
        Ok(removed)
    }
}

/// NIC queues (and vCPUs) of VM `vm`'s guest: one per CPU of its RSS engine when it is
/// pinned to one, else one.
fn guest_queues(config: &Config, vm: &crate::config::VmConfig) -> u32 {
    config
        .rss
        .as_ref()
        .and_then(|r| r.engines.iter().find(|e| e.name == vm.rss))
        .map_or(1, |e| e.cpus.len().clamp(1, 4) as u32)
}

/// The tor-side name of an uplink's veth (interface names are at most 15 bytes).
pub fn tor_port(uplink: &str) -> String {
    let mut s = format!("host-{uplink}");
    s.truncate(15);
    s
}

/// How long new veths may take to report their carrier.
const LINK_SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until every interface of `names` in namespace `ns` is operationally up.
pub fn wait_until_up(
    ns: &str,
    names: &[String],
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let out = std::process::Command::new("ip")
            .args(["-n", ns, "-o", "link", "show"])
            .output()
            .context("cannot run ip")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let down: Vec<&String> = names
            .iter()
            .filter(|n| {
                !text.lines().any(|l| {
                    let name = l.split(':').nth(1).map(str::trim).unwrap_or("");
                    let name = name.split('@').next().unwrap_or("");
                    name == n.as_str() && l.contains(" state UP ")
                })
            })
            .collect();
        if down.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "lab interfaces not up after {timeout:?}: {}",
                down.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn veth(ns_a: &str, name_a: &str, ns_b: &str, name_b: &str) -> anyhow::Result<()> {
    ip(&[
        "link", "add", name_a, "netns", ns_a, "type", "veth", "peer", "name", name_b, "netns", ns_b,
    ])
}

fn add_addr(ns: &str, dev: &str, net: &IpNet) -> anyhow::Result<()> {
    let cidr = format!("{}/{}", net.addr, net.prefix_or_default());
    if net.addr.is_ipv6() {
        ip(&["-n", ns, "addr", "add", &cidr, "dev", dev, "nodad"])
    } else {
        ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])
    }
}

/// Makes an endpoint send finished frames: full checksums, no segmentation offload. veth
/// otherwise hands on frames with partial checksums and 64 KiB GSO super-frames, which a real
/// NIC never receives and which lose their offload state when XDP redirects them (the
/// receiving VM would drop them as bad checksums).
fn full_checksums(ns: &str, dev: &str) -> anyhow::Result<()> {
    run(
        "ip",
        &[
            "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off",
        ],
    )
}

/// Gives a sending veth a queue, so that a full receive ring at its peer holds the sender
/// back instead of dropping what it sends. veth has no qdisc by default, and with XDP on the
/// peer every frame goes through the peer's NAPI ring: a TCP sender faster than that ring
/// (several streams on several CPUs) loses segments there, which no NIC with a driver queue
/// would do.
fn queues_when_full(ns: &str, dev: &str) -> anyhow::Result<()> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "tc",
            "qdisc",
            "replace",
            "dev",
            dev,
            "root",
            "pfifo_fast",
        ],
    )
}

/// Lets a veth receive frames XDP redirects into its peer: the kernel delivers them through
/// the receiving side's NAPI, which veth runs only with an XDP program or GRO enabled.
fn receives_redirects(ns: &str, dev: &str) -> anyhow::Result<()> {
    run(
        "ip",
        &["netns", "exec", ns, "ethtool", "-K", dev, "gro", "on"],
    )
}

fn sysctl(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            &format!("{key}={value}"),
        ],
    )
}

/// Runs `ip` with `args`, turning a failure into an error that shows the command.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

pub fn bridge(args: &[&str]) -> anyhow::Result<()> {
    run("bridge", args)
}

/// Runs `tc` with `args` (iproute2's traffic control), like [`ip`].
pub fn tc(args: &[&str]) -> anyhow::Result<()> {
    run("tc", args)
}

fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    debug!("{cmd} {}", args.join(" "));
    let out = Command::new(cmd).args(args).output().with_context(|| {
        format!("cannot run `{cmd}` (is iproute2 installed? `cargo xtask setup` installs it)")
    })?;
    if !out.status.success() {
        bail!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What one round of lab traffic did.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct TrafficReport {
    /// (from namespace, to address, sent, received)
    pub pings: Vec<(String, String, u32, u32)>,
    /// UDP sent by all VMs to the tor, and what the tor received.
    pub udp_sent: u64,
    pub udp: traffic::RecvReport,
    pub iperf: Option<(String, traffic::IperfReport)>,
}

/// The tor's UDP sink port for lab traffic.
pub const TOR_UDP_PORT: u16 = 9000;

impl Lab {
    /// One round: every VM pings the tor and its neighbour VM, every VM sends sequence-numbered
    /// UDP to the tor for `udp` time, and (when `iperf` is set) vm0 runs an iperf3 TCP test to
    /// the tor for that long.
    pub fn drive(
        &self,
        udp: std::time::Duration,
        iperf: Option<u32>,
    ) -> anyhow::Result<TrafficReport> {
        let mut report = TrafficReport::default();
        let tor_addrs: Vec<IpAddr> = self
            .lab
            .tor_nets()
            .iter()
            .map(|n| n.addr)
            .filter(|a| a.is_ipv4() || self.lab.ipv6)
            .collect();
        let vms = &self.config.vms;
        for (i, vm) in vms.iter().enumerate() {
            let ns = self.vm_ns(&vm.name);
            let mut targets: Vec<IpAddr> = tor_addrs.clone();
            if vms.len() > 1
                && let Some(peer) = vms[(i + 1) % vms.len()]
                    .ip_nets()
                    .iter()
                    .find(|n| n.addr.is_ipv4())
            {
                targets.push(peer.addr);
            }
            for t in targets {
                let r = traffic::ping(&ns, &t.to_string(), 5)?;
                report
                    .pings
                    .push((ns.clone(), t.to_string(), r.sent, r.received));
            }
        }
        if let Some(tor4) = tor_addrs.iter().find(|a| a.is_ipv4()) {
            let sink = std::net::SocketAddr::new(*tor4, TOR_UDP_PORT);
            let rx = traffic::Receiver::start(Some(&self.tor_ns()), sink)?;
            let senders: Vec<_> = vms
                .iter()
                .map(|vm| {
                    let ns = self.vm_ns(&vm.name);
                    std::thread::spawn(move || {
                        traffic::send_udp(
                            Some(&ns),
                            traffic::UdpStream {
                                dst: sink,
                                flows: 4,
                                pps: 2000,
                                duration: udp,
                                payload: 200,
                                zipf: None,
                            },
                        )
                    })
                })
                .collect();
            for s in senders {
                let sent = s
                    .join()
                    .map_err(|_| anyhow::anyhow!("UDP sender panicked"))??;
                report.udp_sent += sent.sent;
            }
            report.udp = rx.stop()?;
            if let (Some(secs), Some(vm0)) = (iperf, vms.first()) {
                let client = self.vm_ns(&vm0.name);
                let r = traffic::iperf3(&self.tor_ns(), &tor4.to_string(), &client, secs)?;
                report.iperf = Some((vm0.name.clone(), r));
            }
        }
        Ok(report)
    }
}

impl TrafficReport {
    /// A short human summary.
    pub fn summary(&self) -> String {
        let sent: u32 = self.pings.iter().map(|p| p.2).sum();
        let received: u32 = self.pings.iter().map(|p| p.3).sum();
        let mut s = format!(
            "ping: {received}/{sent} replies over {} pairs; UDP: {} sent, {} received, {} reordered, {} duplicated",
            self.pings.len(),
            self.udp_sent,
            self.udp.received,
            self.udp.reordered,
            self.udp.duplicates
        );
        if let Some((vm, r)) = &self.iperf {
            s.push_str(&format!(
                "; iperf3 {vm} → tor: {:.2} Gbit/s",
                r.bits_per_second / 1e9
            ));
        }
        s
    }
}
