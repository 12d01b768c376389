//! The routed lab: the host as a router between its VMs and the tor, with the slow path a
//! real host has and flow offload takes over from:
//!
//! ```text
//!  <p>-vm0 10.1.0.2 ── vm0 (10.1.0.1) ┐                 ┌ up0 ── 192.0.2.254  <p>-tor
//!  <p>-vm1 10.1.1.2 ── vm1 (10.1.1.1) ┤ <p>-host router ┤        198.51.100.1 (a server)
//!                                     │ nftables:       └ vx0 VNI 42 over up0 ── 10.200.0.5
//!                                     │  ct state, masquerade, DNAT VIP, invalid counter
//! ```
//!
//! - VMs reach the tor's server masqueraded behind the uplink's address;
//! - the tor reaches the virtual IP 192.0.2.100, DNAT'd to one VM or the other;
//! - VMs reach 10.200.0.0/24 through a kernel VXLAN device whose other end is in the tor;
//! - the forward chain accepts established connections (`ct state`) and drops and counts
//!   what conntrack finds INVALID (`counter invalid`), the number that says a hand-back went
//!   wrong.
//!
//! Neighbours are static everywhere, so nothing depends on ARP timing.

use anyhow::Context as _;

use super::{
    add_addr, full_checksums, ip, queues_when_full, receives_redirects, run, sysctl, veth,
};

/// Interfaces and addresses of the routed lab.
pub const UPLINK: &str = "up0";
pub const TOR_UPLINK: &str = "up0";
pub const VXLAN: &str = "vx0";
pub const VNI: u32 = 42;
pub const HOST_UPLINK_IP: &str = "192.0.2.1";
pub const TOR_UPLINK_IP: &str = "192.0.2.254";
pub const VIRTUAL_IP: &str = "192.0.2.100";
pub const SERVER_IP: &str = "198.51.100.1";
pub const HOST_TUNNEL_IP: &str = "10.200.0.1";
pub const REMOTE_IP: &str = "10.200.0.5";
/// The nft table the lab's ruleset lives in.
pub const NFT_TABLE: &str = "xlab";

/// The uplink's MACs, the host's end and the tor's.
pub const HOST_MAC: &str = "02:00:00:00:0a:01";
pub const TOR_MAC: &str = "02:00:00:00:0a:fe";
const HOST_VX_MAC: &str = "02:00:00:00:0b:01";
const TOR_VX_MAC: &str = "02:00:00:00:0b:05";

/// One VM of the routed lab: its port on the host, its address, and the host's address on
/// that port (its gateway).
#[derive(Clone, Debug)]
pub struct RoutedVm {
    pub name: String,
    pub port: String,
    pub mac: String,
    pub ip: String,
    pub gateway: String,
    pub port_mac: String,
}

/// The routed lab's namespaces and VMs.
#[derive(Clone, Debug)]
pub struct RoutedLab {
    pub prefix: String,
    pub vms: Vec<RoutedVm>,
}

impl RoutedLab {
    /// A lab with `vms` VMs (at most 250) whose namespaces start with `prefix`.
    pub fn new(prefix: &str, vms: usize) -> RoutedLab {
        let vms = (0..vms.min(250))
            .map(|i| RoutedVm {
                name: format!("vm{i}"),
                port: format!("vm{i}"),
                mac: format!("02:00:00:01:00:{:02x}", i + 2),
                ip: format!("10.1.{i}.2"),
                gateway: format!("10.1.{i}.1"),
                port_mac: format!("02:00:00:02:00:{:02x}", i + 2),
            })
            .collect();
        RoutedLab {
            prefix: prefix.to_string(),
            vms,
        }
    }

    pub fn host_ns(&self) -> String {
        format!("{}-host", self.prefix)
    }

    pub fn tor_ns(&self) -> String {
        format!("{}-tor", self.prefix)
    }

    pub fn vm_ns(&self, vm: &RoutedVm) -> String {
        format!("{}-{}", self.prefix, vm.name)
    }

    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.host_ns(), self.tor_ns()];
        all.extend(self.vms.iter().map(|v| self.vm_ns(v)));
        all
    }

    /// The host's nftables ruleset: a forward filter on conntrack's state, masquerade for
    /// VMs going out of the uplink, the virtual IP in front of the VMs, and the INVALID
    /// counter.
    pub fn ruleset(&self) -> String {
        let backends: Vec<String> = self
            .vms
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{i} : {}", v.ip))
            .collect();
        let dnat = if backends.is_empty() {
            String::new()
        } else {
            format!(
                "iifname \"{UPLINK}\" ip daddr {VIRTUAL_IP} dnat ip to numgen inc mod {} map {{ {} }}",
                backends.len(),
                backends.join(", ")
            )
        };
        format!(
            "table inet {NFT_TABLE} {{
    counter invalid {{ }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state invalid counter name invalid drop
        ct state established,related accept
        iifname \"vm*\" accept
        ct status dnat accept
    }}
    chain prerouting {{
        type nat hook prerouting priority dstnat;
        {dnat}
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat;
        oifname \"{UPLINK}\" ip saddr 10.1.0.0/16 masquerade
    }}
}}
"
        )
    }

    /// xnic's configuration for the lab's host: the uplink and the VMs' ports, flow offload
    /// on (`flows`: the `[flows]` section's body).
    pub fn config(&self, instance: &str, flows: &str) -> String {
        let mut c = format!(
            "instance = \"{instance}\"\nnetns = \"{}\"\n\n[[uplink]]\nname = \"{UPLINK}\"\n",
            self.host_ns()
        );
        for vm in &self.vms {
            c += &format!(
                "\n[[vm]]\nname = \"{}\"\nport = \"{}\"\nmacs = [\"{}\"]\nips = [\"{}/24\"]\n",
                vm.name, vm.port, vm.mac, vm.ip
            );
        }
        c += &format!("\n[flows]\n{flows}\n");
        c
    }

    /// Builds the lab (its namespaces must not exist yet).
    pub fn up(&self) -> anyhow::Result<()> {
        let (host, tor) = (self.host_ns(), self.tor_ns());
        for ns in self.namespaces() {
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
        }
        sysctl(&host, "net.ipv4.ip_forward", "1")?;
        sysctl(&tor, "net.ipv4.ip_forward", "1")?;

        // The uplink, with the virtual IP on the host's side.
        veth(&host, UPLINK, &tor, TOR_UPLINK)?;
        ip(&[
            "-n", &host, "link", "set", UPLINK, "address", HOST_MAC, "up",
        ])?;
        ip(&[
            "-n", &tor, "link", "set", TOR_UPLINK, "address", TOR_MAC, "up",
        ])?;
        addr(&host, UPLINK, &format!("{HOST_UPLINK_IP}/24"))?;
        addr(&host, UPLINK, &format!("{VIRTUAL_IP}/32"))?;
        addr(&tor, TOR_UPLINK, &format!("{TOR_UPLINK_IP}/24"))?;
        addr(&tor, "lo", &format!("{SERVER_IP}/32"))?;
        ip(&["-n", &host, "route", "add", "default", "via", TOR_UPLINK_IP])?;
        for (ns, dev, addr, mac) in [
            (&host, UPLINK, TOR_UPLINK_IP, TOR_MAC),
            (&tor, TOR_UPLINK, HOST_UPLINK_IP, HOST_MAC),
            (&tor, TOR_UPLINK, VIRTUAL_IP, HOST_MAC),
        ] {
            neighbour(ns, dev, addr, mac)?;
        }

        // The tunnel: a VXLAN device at each end of the uplink.
        for (ns, local, remote, mac, own) in [
            (
                &host,
                HOST_UPLINK_IP,
                TOR_UPLINK_IP,
                HOST_VX_MAC,
                HOST_TUNNEL_IP,
            ),
            (&tor, TOR_UPLINK_IP, HOST_UPLINK_IP, TOR_VX_MAC, REMOTE_IP),
        ] {
            let vni = VNI.to_string();
            ip(&[
                "-n", ns, "link", "add", VXLAN, "type", "vxlan", "id", &vni, "local", local,
                "remote", remote, "dstport", "4789", "dev", UPLINK,
            ])?;
            ip(&["-n", ns, "link", "set", VXLAN, "address", mac, "up"])?;
            addr(ns, VXLAN, &format!("{own}/24"))?;
        }
        neighbour(&host, VXLAN, REMOTE_IP, TOR_VX_MAC)?;
        neighbour(&tor, VXLAN, HOST_TUNNEL_IP, HOST_VX_MAC)?;
        // The tor answers VMs through the tunnel (they are not masqueraded there).
        ip(&[
            "-n",
            &tor,
            "route",
            "add",
            "10.1.0.0/16",
            "via",
            HOST_TUNNEL_IP,
        ])?;

        // VMs: a veth each, the host's end their gateway.
        for vm in &self.vms {
            let ns = self.vm_ns(vm);
            veth(&host, &vm.port, &ns, "eth0")?;
            ip(&[
                "-n",
                &host,
                "link",
                "set",
                &vm.port,
                "address",
                &vm.port_mac,
                "up",
            ])?;
            addr(&host, &vm.port, &format!("{}/24", vm.gateway))?;
            ip(&["-n", &ns, "link", "set", "eth0", "address", &vm.mac, "up"])?;
            addr(&ns, "eth0", &format!("{}/24", vm.ip))?;
            ip(&["-n", &ns, "route", "add", "default", "via", &vm.gateway])?;
            neighbour(&ns, "eth0", &vm.gateway, &vm.port_mac)?;
            neighbour(&host, &vm.port, &vm.ip, &vm.mac)?;
            full_checksums(&ns, "eth0")?;
            receives_redirects(&ns, "eth0")?;
            queues_when_full(&ns, "eth0")?;
        }
        // The tor's endpoints too: what the fast path redirects must be finished frames, and
        // frames redirected to the tor must be received.
        for dev in [TOR_UPLINK, VXLAN] {
            full_checksums(&tor, dev)?;
        }
        receives_redirects(&tor, TOR_UPLINK)?;

        self.load_ruleset()
    }

    /// Loads the slow path's firewall and NAT ([`Self::ruleset`]) into the host.
    pub fn load_ruleset(&self) -> anyhow::Result<()> {
        let host = self.host_ns();
        let path = std::env::temp_dir().join(format!("{}-ruleset.nft", self.prefix));
        std::fs::write(&path, self.ruleset())
            .with_context(|| format!("cannot write {}", path.display()))?;
        let loaded = run(
            "ip",
            &["netns", "exec", &host, "nft", "-f", &path.to_string_lossy()],
        );
        let _ = std::fs::remove_file(&path);
        loaded.context("cannot load the routed lab's nftables ruleset")
    }

    /// What conntrack found INVALID in the forward chain.
    pub fn invalid_count(&self) -> anyhow::Result<u64> {
        self.counter("invalid")
    }

    /// Packets of the named counter `name` in the lab's nft table.
    pub fn counter(&self, name: &str) -> anyhow::Result<u64> {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.host_ns(),
                "nft",
                "list",
                "counter",
                "inet",
            ])
            .args([NFT_TABLE, name])
            .output()
            .context("cannot run nft")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no packet count in the {name} counter: {text}"))
    }

    /// Removes the lab's namespaces (what is not there is fine).
    pub fn down(&self) {
        for ns in self.namespaces() {
            let _ = crate::netns::remove(&ns);
        }
    }
}

/// `ip addr add CIDR dev DEV` in `ns`, through the lab's own helper.
fn addr(ns: &str, dev: &str, cidr: &str) -> anyhow::Result<()> {
    let net: crate::net::IpNet = cidr
        .parse()
        .map_err(|e| anyhow::anyhow!("{cidr} is not an address: {e}"))?;
    add_addr(ns, dev, &net)
}

fn neighbour(ns: &str, dev: &str, addr: &str, mac: &str) -> anyhow::Result<()> {
    ip(&[
        "-n",
        ns,
        "neigh",
        "replace",
        addr,
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ])
}
