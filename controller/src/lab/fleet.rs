//! The fleet lab: VNIC routing (SPEC §2.3) over three xnic hosts behind one top-of-rack
//! router, with compute instances behind VTEPs and the networks the gateways lead to.
//!
//! ```text
//!   <p>-web1  10.0.1.10  VTEP 192.0.2.11 ┐                      ┌ <p>-h1  VTEP 192.0.2.1 (xnic)
//!   <p>-db1   10.0.2.10  VTEP 192.0.2.12 ┤                      ├ <p>-h2  VTEP 192.0.2.2 (xnic)
//!   <p>-hub1  172.16.0.10 VTEP 192.0.2.13┤       <p>-tor        └ <p>-h3  VTEP 192.0.2.3 (xnic)
//!   <p>-svc   198.18.0.5  VTEP 192.0.2.50┤  192.0.2.100 (the fleet's VTEP) and 203.0.113.0/24
//!   <p>-onprem 192.168.1.5 VTEP 192.0.2.60┤  by a resilient nexthop group over h1-h3,
//!   <p>-inet  198.51.100.7 (the internet)┘  L4 hashing (fib_multipath_hash_policy = 1)
//! ```
//!
//! Every instance (and the services and on-premises networks) has a kernel VXLAN device whose
//! remote is the fleet's shared VTEP; the tor spreads those packets over the hosts by ECMP,
//! each host's xnic routes them and sends them back through the tor. Every host runs its own
//! daemon with the same configuration ([`FleetLab::config`]). Neighbours are static
//! everywhere; endpoints send finished frames (full checksums, no segmentation offload).

use std::net::Ipv4Addr;

use super::{full_checksums, ip, sysctl, veth};

/// Fleet hosts in the lab.
pub const HOSTS: usize = 3;
/// The fleet's shared VTEP address.
pub const ANYCAST: &str = "192.0.2.100";
/// The virtual router's MAC (the configuration's default).
pub const ROUTER_MAC: &str = "02:00:5e:00:00:01";
/// The address instances use as their gateway (its MAC is the router's).
const GATEWAY: &str = "169.254.1.1";
/// The internet's server.
pub const SERVER_IP: &str = "198.51.100.7";
/// The services network's endpoint, and the on-premises one.
pub const SERVICE_IP: &str = "198.18.0.5";
pub const ONPREM_IP: &str = "192.168.1.5";
/// web1's public address, and the NAT gateway's.
pub const WEB1_PUBLIC: &str = "203.0.113.10";
pub const NAT_PUBLIC: &str = "203.0.113.1";
/// The tor's nexthop group over the hosts.
const GROUP: &str = "100";
/// Buckets of the resilient group: enough that a host's share is close to a third.
const BUCKETS: &str = "96";

/// An endpoint behind a VTEP: a compute instance, or a gateway's remote network.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Its namespace's suffix and its port's name on the tor.
    pub name: &'static str,
    pub vni: u32,
    pub mac: &'static str,
    pub ip: &'static str,
    /// Its VTEP's last octet (192.0.2.N), also its underlay link's number.
    pub vtep: u8,
    /// What it routes through the fleet (instances: everything).
    pub routes: &'static [&'static str],
}

/// The compute instances and the two remote networks.
pub const ENDPOINTS: [Endpoint; 5] = [
    Endpoint {
        name: "web1",
        vni: 100,
        mac: "02:00:00:00:01:01",
        ip: "10.0.1.10",
        vtep: 11,
        routes: &["default"],
    },
    Endpoint {
        name: "db1",
        vni: 100,
        mac: "02:00:00:00:02:01",
        ip: "10.0.2.10",
        vtep: 12,
        routes: &["default"],
    },
    Endpoint {
        name: "hub1",
        vni: 300,
        mac: "02:00:00:00:03:01",
        ip: "172.16.0.10",
        vtep: 13,
        routes: &["default"],
    },
    Endpoint {
        name: "svc",
        vni: 500,
        mac: "02:00:00:00:05:00",
        ip: SERVICE_IP,
        vtep: 50,
        routes: &["10.0.0.0/16"],
    },
    Endpoint {
        name: "onprem",
        vni: 600,
        mac: "02:00:00:00:06:00",
        ip: ONPREM_IP,
        vtep: 60,
        routes: &["10.0.0.0/16"],
    },
];

/// The VNIC routing sections every host's configuration shares.
pub const FLEET_SECTIONS: &str = r#"
[fleet]
anycast = "192.0.2.100"
engine = "workers"
hosts = [
  { name = "h1", vtep = "192.0.2.1" },
  { name = "h2", vtep = "192.0.2.2" },
  { name = "h3", vtep = "192.0.2.3" },
]

[[vcn]]
name = "prod"
cidrs = ["10.0.0.0/16"]

[[vcn]]
name = "hub"
cidrs = ["172.16.0.0/16"]

[[subnet]]
name = "web"
vcn = "prod"
cidr = "10.0.1.0/24"
route_table = "web"
security_lists = ["open"]

[[subnet]]
name = "db"
vcn = "prod"
cidr = "10.0.2.0/24"
route_table = "db"
security_lists = ["db"]

[[subnet]]
name = "hub"
vcn = "hub"
cidr = "172.16.0.0/24"
route_table = "hub"
security_lists = ["open"]

[[vnic]]
name = "web1"
subnet = "web"
vni = 100
mac = "02:00:00:00:01:01"
ips = ["10.0.1.10"]
host = "192.0.2.11"
public_ip = "203.0.113.10"

[[vnic]]
name = "db1"
subnet = "db"
vni = 100
mac = "02:00:00:00:02:01"
ips = ["10.0.2.10"]
host = "192.0.2.12"

[[vnic]]
name = "hub1"
subnet = "hub"
vni = 300
mac = "02:00:00:00:03:01"
ips = ["172.16.0.10"]
host = "192.0.2.13"

[[route_table]]
name = "web"
routes = [
  { dst = "0.0.0.0/0", via = "igw:internet" },
  { dst = "172.16.0.0/16", via = "router:transit" },
  { dst = "192.168.0.0/16", via = "drg:onprem" },
  { dst = "198.18.0.0/15", via = "sgw:services" },
]

[[route_table]]
name = "transit"
routes = [{ dst = "172.16.0.10/32", via = "vnic:hub1" }]

[[route_table]]
name = "hub"
routes = [{ dst = "10.0.1.10/32", via = "vnic:web1" }]

[[route_table]]
name = "db"
routes = [{ dst = "0.0.0.0/0", via = "nat:out" }]

[[gateway]]
name = "internet"
kind = "internet"

[[gateway]]
name = "out"
kind = "nat"
public_ips = ["203.0.113.1"]

[[gateway]]
name = "services"
kind = "service"
cidrs = ["198.18.0.0/15"]
vni = 500
remote = "192.0.2.50"
mac = "02:00:00:00:05:00"
vcn = "prod"

[[gateway]]
name = "onprem"
kind = "drg"
cidrs = ["192.168.0.0/16"]
vni = 600
remote = "192.0.2.60"
mac = "02:00:00:00:06:00"
vcn = "prod"

[[security_list]]
name = "open"
ingress = [{ action = "allow", cidr = "0.0.0.0/0" }]
egress = [{ action = "allow", cidr = "0.0.0.0/0" }]

[[security_list]]
name = "db"
ingress = [
  { action = "allow", proto = "tcp", cidr = "10.0.1.0/24", ports = "5432" },
  { action = "allow", proto = "udp", cidr = "10.0.1.0/24", ports = "9000-9999" },
  { action = "allow", proto = "icmp", cidr = "10.0.0.0/16" },
]
egress = [
  { action = "allow", proto = "tcp", cidr = "0.0.0.0/0", ports = "443", stateful = true },
  { action = "allow", proto = "udp", cidr = "0.0.0.0/0", ports = "53", stateful = true },
  { action = "allow", proto = "icmp", cidr = "0.0.0.0/0", stateful = true },
]
"#;

/// The fleet lab's namespaces.
#[derive(Clone, Debug)]
pub struct FleetLab {
    pub prefix: String,
}

fn link_addr(net: u8, n: u8, end: u8) -> String {
    format!("10.{net}.{n}.{end}")
}

impl FleetLab {
    pub fn new(prefix: &str) -> FleetLab {
        FleetLab {
            prefix: prefix.to_string(),
        }
    }

    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    pub fn tor_ns(&self) -> String {
        self.ns("tor")
    }

    /// Host `i`'s (0-based) namespace, which is also its daemon's instance name.
    pub fn host_ns(&self, i: usize) -> String {
        self.ns(&format!("h{}", i + 1))
    }

    /// Host `i`'s link at the tor (taking it down takes the host away).
    pub fn host_port(i: usize) -> String {
        format!("h{}", i + 1)
    }

    /// The MACs of host `i`'s link: the tor's end and the host's.
    pub fn host_link_macs(i: usize) -> (String, String) {
        let n = (i + 1) as u8;
        (mac(0xa0, n), mac(0xa1, n))
    }

    pub fn host_vtep(i: usize) -> String {
        format!("192.0.2.{}", i + 1)
    }

    pub fn namespaces(&self) -> Vec<String> {
        let mut out = vec![self.tor_ns(), self.ns("inet")];
        out.extend((0..HOSTS).map(|i| self.host_ns(i)));
        out.extend(ENDPOINTS.iter().map(|e| self.ns(e.name)));
        out
    }

    /// Host `i`'s xnic configuration: its uplink and the fleet's shared sections.
    pub fn config(&self, i: usize) -> String {
        format!(
            "instance = \"{ns}\"\nnetns = \"{ns}\"\n\n[[uplink]]\nname = \"up0\"\n{FLEET_SECTIONS}{}",
            workers_toml(),
            ns = self.host_ns(i)
        )
    }

    /// Builds the lab (its namespaces must not exist yet).
    pub fn up(&self) -> anyhow::Result<()> {
        for ns in self.namespaces() {
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
            sysctl(&ns, "net.ipv4.conf.all.rp_filter", "0")?;
            sysctl(&ns, "net.ipv4.conf.default.rp_filter", "0")?;
        }
        let tor = self.tor_ns();
        sysctl(&tor, "net.ipv4.ip_forward", "1")?;
        // ECMP by the flow's ports (VXLAN's source port carries the inner flow's hash).
        sysctl(&tor, "net.ipv4.fib_multipath_hash_policy", "1")?;

        // The hosts: one link each; the VTEP on it as a /32.
        for i in 0..HOSTS {
            let n = (i + 1) as u8;
            let (tor_mac, host_mac) = Self::host_link_macs(i);
            self.link(
                &self.host_ns(i),
                &Self::host_port(i),
                (link_addr(254, n, 1), link_addr(254, n, 2)),
                (&tor_mac, &host_mac),
            )?;
            let host = self.host_ns(i);
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{}/32", Self::host_vtep(i)),
                "dev",
                "up0",
            ])?;
            ip(&[
                "-n",
                &tor,
                "route",
                "add",
                &format!("{}/32", Self::host_vtep(i)),
                "via",
                &link_addr(254, n, 2),
            ])?;
            self.set_nexthop(i, "add")?;
        }
        self.set_group("add")?;
        for dst in [format!("{ANYCAST}/32"), "203.0.113.0/24".to_string()] {
            ip(&["-n", &tor, "route", "add", &dst, "nhid", GROUP])?;
        }

        // The internet: a server behind its own link.
        let inet = self.ns("inet");
        self.link(
            &inet,
            "inet",
            (link_addr(252, 0, 1), link_addr(252, 0, 2)),
            (&mac(0xb0, 0), &mac(0xb1, 0)),
        )?;
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{SERVER_IP}/32"),
            "dev",
            "lo",
        ])?;
        // The server answers from its own address, not the link's.
        ip(&[
            "-n",
            &inet,
            "route",
            "add",
            "default",
            "via",
            &link_addr(252, 0, 1),
            "src",
            SERVER_IP,
        ])?;
        ip(&[
            "-n",
            &tor,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            &link_addr(252, 0, 2),
        ])?;
        full_checksums(&inet, "up0")?;

        // Endpoints behind VTEPs.
        for e in &ENDPOINTS {
            let ns = self.ns(e.name);
            let vtep = format!("192.0.2.{}", e.vtep);
            self.link(
                &ns,
                e.name,
                (link_addr(253, e.vtep, 1), link_addr(253, e.vtep, 2)),
                (&mac(0xc0, e.vtep), &mac(0xc1, e.vtep)),
            )?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{vtep}/32"),
                "dev",
                "up0",
            ])?;
            ip(&[
                "-n",
                &ns,
                "route",
                "add",
                "192.0.2.0/24",
                "via",
                &link_addr(253, e.vtep, 1),
                "src",
                &vtep,
            ])?;
            ip(&[
                "-n",
                &tor,
                "route",
                "add",
                &format!("{vtep}/32"),
                "via",
                &link_addr(253, e.vtep, 2),
            ])?;
            ip(&[
                "-n",
                &ns,
                "link",
                "add",
                "vx0",
                "type",
                "vxlan",
                "id",
                &e.vni.to_string(),
                "local",
                &vtep,
                "remote",
                ANYCAST,
                "dstport",
                "4789",
                "dev",
                "up0",
                "nolearning",
            ])?;
            ip(&["-n", &ns, "link", "set", "vx0", "address", e.mac, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/32", e.ip),
                "dev",
                "vx0",
            ])?;
            ip(&[
                "-n",
                &ns,
                "neigh",
                "add",
                GATEWAY,
                "lladdr",
                ROUTER_MAC,
                "dev",
                "vx0",
                "nud",
                "permanent",
            ])?;
            for r in e.routes {
                ip(&[
                    "-n", &ns, "route", "add", r, "via", GATEWAY, "dev", "vx0", "onlink", "src",
                    e.ip,
                ])?;
            }
            full_checksums(&ns, "up0")?;
            full_checksums(&ns, "vx0")?;
        }
        Ok(())
    }

    /// A link between the tor (its end named `tor_end`, address `addrs.0`) and `ns` (its end
    /// `up0`, address `addrs.1`), with static neighbours both ways.
    fn link(
        &self,
        ns: &str,
        tor_end: &str,
        addrs: (String, String),
        macs: (&str, &str),
    ) -> anyhow::Result<()> {
        let tor = self.tor_ns();
        veth(&tor, tor_end, ns, "up0")?;
        ip(&["-n", &tor, "link", "set", tor_end, "address", macs.0, "up"])?;
        ip(&["-n", ns, "link", "set", "up0", "address", macs.1, "up"])?;
        ip(&[
            "-n",
            &tor,
            "addr",
            "add",
            &format!("{}/24", addrs.0),
            "dev",
            tor_end,
        ])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", addrs.1),
            "dev",
            "up0",
        ])?;
        ip(&[
            "-n",
            &tor,
            "neigh",
            "add",
            &addrs.1,
            "lladdr",
            macs.1,
            "dev",
            tor_end,
            "nud",
            "permanent",
        ])?;
        ip(&[
            "-n",
            ns,
            "neigh",
            "add",
            &addrs.0,
            "lladdr",
            macs.0,
            "dev",
            "up0",
            "nud",
            "permanent",
        ])?;
        full_checksums(&tor, tor_end)?;
        Ok(())
    }

    /// Puts an XDP_PASS program on the tor's host ports, for as long as the returned object
    /// lives. A veth delivers frames its peer's XDP program sends back (`XDP_TX`, what the
    /// hosts answer with) only when it runs an XDP program itself: its receive queue is
    /// polled for them only then (GRO alone serves redirects, not `XDP_TX`). A real tor's
    /// NIC needs nothing of the kind.
    pub fn tor_receives_xdp_tx(&self) -> anyhow::Result<crate::dataplane::baseline::Baseline> {
        use crate::dataplane::baseline::{Baseline, BaselineProgram};
        let baseline = Baseline::load()?;
        crate::netns::run_in(&self.tor_ns(), move || {
            let mut b = baseline;
            for i in 0..HOSTS {
                let name = Self::host_port(i);
                let ifindex = nix::net::if_::if_nametoindex(name.as_str())?;
                b.attach(BaselineProgram::Pass, ifindex)?;
            }
            Ok(b)
        })
    }

    /// Takes host `i` away (its link down at the tor) or brings it back.
    pub fn set_host_link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.tor_ns(),
            "link",
            "set",
            &Self::host_port(i),
            if up { "up" } else { "down" },
        ])
    }

    /// Brings host `i` back: its link up at the tor, and its nexthop (which the kernel
    /// removed with the link) back in the group. The resilient group gives it buckets as
    /// they go idle.
    pub fn restore_host(&self, i: usize) -> anyhow::Result<()> {
        self.set_host_link(i, true)?;
        self.set_nexthop(i, "replace")?;
        self.set_group("replace")
    }

    /// Host `i`'s nexthop at the tor (`verb`: `add` or `replace`).
    fn set_nexthop(&self, i: usize, verb: &str) -> anyhow::Result<()> {
        let n = (i + 1) as u8;
        ip(&[
            "-n",
            &self.tor_ns(),
            "nexthop",
            verb,
            "id",
            &n.to_string(),
            "via",
            &link_addr(254, n, 2),
            "dev",
            &Self::host_port(i),
        ])
    }

    /// The tor's resilient group over every host's nexthop.
    fn set_group(&self, verb: &str) -> anyhow::Result<()> {
        let members: Vec<String> = (1..=HOSTS).map(|n| n.to_string()).collect();
        ip(&[
            "-n",
            &self.tor_ns(),
            "nexthop",
            verb,
            "id",
            GROUP,
            "group",
            &members.join("/"),
            "type",
            "resilient",
            "buckets",
            BUCKETS,
        ])
    }

    /// Removes the lab's namespaces (what is not there is fine).
    pub fn down(&self) {
        for ns in self.namespaces() {
            let _ = crate::netns::remove(&ns);
        }
    }
}

/// A lab MAC: locally administered, `kind` telling the link, `n` its number.
fn mac(kind: u8, n: u8) -> String {
    format!("02:00:00:ff:{kind:02x}:{n:02x}")
}

/// The endpoint named `name`.
pub fn endpoint(name: &str) -> Option<&'static Endpoint> {
    ENDPOINTS.iter().find(|e| e.name == name)
}

/// A fleet host's worker CPUs (`[fleet] engine = "workers"`): one shared RSS engine over
/// every CPU, each flow's hash picking one.
pub fn workers_toml() -> String {
    let cpus = crate::config::host::online_cpus().unwrap_or_else(|_| vec![0]);
    let all: Vec<String> = cpus.iter().map(u32::to_string).collect();
    format!(
        "\n[rss]\ndefault_cpu = {}\n\n[[rss.engine]]\nname = \"workers\"\nkind = \"shared\"\ncpus = [{}]\n",
        cpus.first().copied().unwrap_or(0),
        all.join(", ")
    )
}

/// An endpoint's address, parsed.
pub fn endpoint_ip(name: &str) -> Option<Ipv4Addr> {
    endpoint(name).and_then(|e| e.ip.parse().ok())
}

/// The fleet lab with a daemon on every host. Dropping it stops the daemons and removes
/// their dataplanes, kept states, configuration files and the namespaces.
pub struct Fleet {
    pub lab: FleetLab,
    daemons: Vec<Option<super::daemon::DaemonProcess>>,
    configs: Vec<std::path::PathBuf>,
    exe: std::path::PathBuf,
    log: bool,
    /// The XDP_PASS program on the tor's host ports, while the lab lives.
    _tor_xdp: Option<crate::dataplane::baseline::Baseline>,
}

impl Fleet {
    /// Builds the lab and starts `exe run` on each host (log lines prefixed with the host's
    /// name when `log` is set).
    pub fn start(prefix: &str, exe: &std::path::Path, log: bool) -> anyhow::Result<Fleet> {
        let mut fleet = Fleet {
            lab: FleetLab::new(prefix),
            daemons: Vec::new(),
            configs: Vec::new(),
            exe: exe.to_owned(),
            log,
            _tor_xdp: None,
        };
        fleet.lab.down();
        fleet.lab.up()?;
        fleet._tor_xdp = Some(fleet.lab.tor_receives_xdp_tx()?);
        let dir = std::path::Path::new(super::GUEST_RUN_DIR);
        std::fs::create_dir_all(dir)?;
        for i in 0..HOSTS {
            let path = dir.join(format!("{}.toml", fleet.lab.host_ns(i)));
            std::fs::write(&path, fleet.lab.config(i))?;
            fleet.configs.push(path);
            fleet.daemons.push(None);
            fleet.start_daemon(i)?;
        }
        Ok(fleet)
    }

    /// Starts host `i`'s daemon (again, after [`Fleet::stop_daemon`]: it adopts what the
    /// previous one pinned).
    pub fn start_daemon(&mut self, i: usize) -> anyhow::Result<()> {
        let tag = format!("[h{}] ", i + 1);
        let d = super::daemon::DaemonProcess::start(
            &self.exe,
            &self.configs[i],
            &self.lab.host_ns(i),
            self.log.then_some(tag.as_str()),
            std::time::Duration::from_secs(30),
        )?;
        self.daemons[i] = Some(d);
        Ok(())
    }

    /// Host `i`'s API.
    pub fn client(&self, i: usize) -> crate::api::client::Client {
        crate::api::client::Client::new(&self.lab.host_ns(i))
    }

    /// Stops host `i`'s daemon (SIGTERM; its dataplane keeps forwarding).
    pub fn stop_daemon(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(d) = self.daemons.get_mut(i).and_then(Option::take) {
            d.stop()?;
        }
        Ok(())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for d in self.daemons.iter_mut().filter_map(Option::take) {
            let _ = d.stop();
        }
        for i in 0..HOSTS {
            let instance = self.lab.host_ns(i);
            let _ = crate::dataplane::teardown(&instance);
            let _ = crate::model::store::Store::new(&instance).remove();
        }
        for c in &self.configs {
            let _ = std::fs::remove_file(c);
        }
        self.lab.down();
    }
}

/// Sends `n` UDP datagrams from port `port` in namespace `ns` to `dst`, each waiting up to
/// half a second for its answer; returns how many were answered.
pub fn round_trips(ns: &str, port: u16, dst: std::net::SocketAddr, n: u32) -> anyhow::Result<u32> {
    crate::netns::run_in(ns, move || {
        let sock = std::net::UdpSocket::bind(("0.0.0.0", port))?;
        sock.set_read_timeout(Some(std::time::Duration::from_millis(500)))?;
        let mut got = 0;
        let mut buf = [0u8; 64];
        for i in 0..n {
            sock.send_to(&i.to_be_bytes(), dst)?;
            if sock.recv_from(&mut buf).is_ok() {
                got += 1;
            }
        }
        Ok(got)
    })
}

/// An echo server in `ns` on UDP `port`, for `secs`: answers every datagram and reports
/// who sent it.
pub fn echo_server(
    ns: &str,
    port: u16,
    secs: u64,
) -> anyhow::Result<std::sync::mpsc::Receiver<std::net::SocketAddr>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let name = ns.to_string();
    std::thread::spawn(move || {
        crate::netns::run_in(&name, move || -> anyhow::Result<()> {
            let sock = std::net::UdpSocket::bind(("0.0.0.0", port))?;
            sock.set_read_timeout(Some(std::time::Duration::from_secs(secs)))?;
            let _ = ready_tx.send(());
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
                if tx.send(from).is_err() {
                    break;
                }
            }
            Ok(())
        })
    });
    ready_rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .map_err(|_| anyhow::anyhow!("the echo server in {ns} did not start"))?;
    Ok(rx)
}

/// The UDP port db1 accepts probes on (db's security list allows 9000-9999 from web).
pub const PROBE_PORT: u16 = 9999;

impl Fleet {
    /// Starts `flows` UDP flows web1 → db1 (ports `first_port` on), `pps` in all, for `secs`,
    /// on a thread of their own; db1 needs a receiver on [`PROBE_PORT`].
    pub fn stream_web1_to_db1(
        &self,
        flows: u16,
        pps: u64,
        secs: u64,
        first_port: u16,
    ) -> std::thread::JoinHandle<anyhow::Result<super::traffic::SendReport>> {
        let web1 = self.lab.ns("web1");
        std::thread::spawn(move || {
            super::traffic::send_udp_from(
                Some(&web1),
                super::traffic::UdpStream {
                    dst: std::net::SocketAddr::from(([10, 0, 2, 10], PROBE_PORT)),
                    flows: u32::from(flows),
                    pps,
                    duration: std::time::Duration::from_secs(secs),
                    payload: 64,
                    zipf: None,
                },
                Some(first_port),
            )
        })
    }

    /// Which host (and which of its worker CPUs) routes web1's UDP flow from `port` to db1:
    /// the one whose counters of web1 move when the flow sends a few datagrams. `None`: no
    /// host, or more than one, saw them all.
    pub fn host_of_flow(&self, port: u16) -> anyhow::Result<Option<(usize, Option<usize>)>> {
        use crate::api::types::VnicView;
        const PROBES: u64 = 3;
        let read = |h: usize| -> anyhow::Result<(u64, Vec<u64>)> {
            let v: VnicView = crate::cli::block_on(self.client(h).get("/v1/vnics/web1"))?;
            Ok((v.sent.packets, v.cpus))
        };
        let before = (0..HOSTS).map(read).collect::<anyhow::Result<Vec<_>>>()?;
        crate::netns::run_in(&self.lab.ns("web1"), move || {
            let sock = std::net::UdpSocket::bind(("0.0.0.0", port))?;
            for i in 0..PROBES {
                sock.send_to(&i.to_be_bytes(), ("10.0.2.10", PROBE_PORT))?;
            }
            Ok(())
        })?;
        std::thread::sleep(std::time::Duration::from_millis(30));
        let after = (0..HOSTS).map(read).collect::<anyhow::Result<Vec<_>>>()?;
        let hosts: Vec<usize> = (0..HOSTS)
            .filter(|&h| after[h].0 >= before[h].0 + PROBES)
            .collect();
        let [h] = hosts.as_slice() else {
            return Ok(None);
        };
        let cpu = after[*h]
            .1
            .iter()
            .zip(&before[*h].1)
            .position(|(a, b)| *a >= b + PROBES);
        Ok(Some((*h, cpu)))
    }
}
