//! What flow offload asks the kernel, against the kernel itself, in namespaces of their own:
//! - the ctnetlink client (`xnic::monitor::conntrack`), checked with the `conntrack` tool: a
//!   TCP connection and a UDP exchange show up in the dump and as events with their tuples
//!   and counters, and the changes offload makes (timeout, liberal window tracking) are what
//!   conntrack then reports;
//! - the next-hop resolver (`xnic::monitor::nexthop`), checked with `ip route get` and
//!   `ip neigh`: routes through a gateway and on the link, unresolved neighbours, a VXLAN
//!   device's settings.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    time::Duration,
};

use xnic::monitor::conntrack::{
    Conntrack, CtChange, CtEvent, CtEvents, CtTuple, TCP_CONNTRACK_ESTABLISHED, TCP_FLAG_BE_LIBERAL,
};
use xnic::monitor::nexthop::Resolver;
use xnic::netns::run_in;
use xnic_tests::unique_name;

/// A namespace removed when the test ends, even on failure.
struct Ns(String);

impl Ns {
    fn new() -> Ns {
        let name = unique_name();
        run(&["ip", "netns", "add", &name]);
        let ns = Ns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        // A ruleset that tracks connections (conntrack only hooks in when something uses
        // it) and counts their packets.
        ns.exec(&["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1"]);
        ns.exec(&[
            "nft",
            "add table inet t; add chain inet t in { type filter hook input priority 0; }; \
             add rule inet t in ct state established,related,new counter accept",
        ]);
        ns
    }

    fn exec(&self, cmd: &[&str]) -> String {
        let mut args = vec!["ip", "netns", "exec", &self.0];
        args.extend_from_slice(cmd);
        run(&args)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[test]
fn entries_events_and_changes_match_what_conntrack_reports() {
    let ns = Ns::new();
    let (events, tcp, udp, _open) = run_in(&ns.0, || {
        let mut events = CtEvents::open()?;
        let listener = TcpListener::bind((LOCAL, 0))?;
        let port = listener.local_addr()?.port();
        let mut client = TcpStream::connect((LOCAL, port))?;
        let (mut server, _) = listener.accept()?;
        client.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf)?;
        let sport = client.local_addr()?.port();
        let u = UdpSocket::bind((LOCAL, 0))?;
        let peer = UdpSocket::bind((LOCAL, 0))?;
        u.send_to(b"hello", peer.local_addr()?)?;
        let mut b = [0u8; 16];
        let (_, from) = peer.recv_from(&mut b)?;
        peer.send_to(b"back", from)?;
        u.recv_from(&mut b)?;
        std::thread::sleep(Duration::from_millis(50));
        let evs = events.recv()?;
        Ok((
            evs,
            CtTuple {
                src: LOCAL,
                dst: LOCAL,
                proto: 6,
                src_port: sport,
                dst_port: port,
            },
            CtTuple {
                src: LOCAL,
                dst: LOCAL,
                proto: 17,
                src_port: u.local_addr()?.port(),
                dst_port: peer.local_addr()?.port(),
            },
            // Kept open while the rest of the test looks at the connection.
            (client, server, listener),
        ))
    })
    .unwrap();

    // Events: the TCP connection and the UDP exchange were new, then updated.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CtEvent::New(x) if x.orig == tcp)),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CtEvent::New(x) if x.orig == udp))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CtEvent::Update(x) if x.orig == tcp))
    );

    let (entries, liberal, timeouts) = run_in(&ns.0, move || {
        let timeouts = xnic::monitor::conntrack::timeouts();
        let mut ct = Conntrack::open()?;
        let entries = ct.dump()?;
        // What offload does to a connection it takes: liberal windows, a longer timeout.
        assert!(ct.change(
            &tcp,
            &CtChange {
                timeout: Some(4000),
                liberal: true,
                tcp_state: Some(TCP_CONNTRACK_ESTABLISHED),
            }
        )?);
        let after = ct.get(&tcp)?.expect("still there");
        let gone = CtTuple { dst_port: 1, ..tcp };
        assert!(!ct.change(&gone, &CtChange::default())?, "no such entry");
        assert_eq!(ct.get(&gone)?, None);
        Ok((entries, after, timeouts))
    })
    .unwrap();

    let t = entries
        .iter()
        .find(|e| e.orig == tcp)
        .expect("the TCP entry");
    assert_eq!(
        t.reply.src_port, tcp.dst_port,
        "the reply tuple is the answer's"
    );
    assert_eq!(t.tcp.unwrap().state, TCP_CONNTRACK_ESTABLISHED);
    let u = entries
        .iter()
        .find(|e| e.orig == udp)
        .expect("the UDP entry");
    let c = u.counters.expect("accounting is on");
    assert_eq!((c[0].packets, c[1].packets), (1, 1));
    assert!(t.id != 0);

    // The sysctls as the conntrack tool's namespace has them.
    let sysctl = |name: &str| -> u32 {
        ns.exec(&["sysctl", "-n", &format!("net.netfilter.{name}")])
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        timeouts.tcp_established_s,
        sysctl("nf_conntrack_tcp_timeout_established")
    );
    assert_eq!(
        timeouts.udp_stream_s,
        sysctl("nf_conntrack_udp_timeout_stream")
    );

    let tcp_flags = liberal.tcp.unwrap();
    assert_ne!(tcp_flags.flags_orig & TCP_FLAG_BE_LIBERAL, 0);
    assert_ne!(tcp_flags.flags_reply & TCP_FLAG_BE_LIBERAL, 0);
    assert!(liberal.timeout > 3900 && liberal.timeout <= 4000);

    // The conntrack tool agrees: the same tuples, the new timeout.
    let listed = ns.exec(&[
        "conntrack",
        "-L",
        "-p",
        "tcp",
        "--sport",
        &tcp.src_port.to_string(),
    ]);
    let line = listed.lines().next().expect("conntrack -L lists it");
    let timeout: u32 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(timeout > 3900 && timeout <= 4000, "{line}");
    assert!(line.contains(&format!("dport={}", tcp.dst_port)), "{line}");
}

#[test]
fn next_hops_are_the_kernels_routes_and_neighbours() {
    let ns = Ns::new();
    for cmd in [
        "ip link add up0 type veth peer name up1",
        "ip link set up0 address 02:00:00:00:aa:01 mtu 1400 up",
        "ip link set up1 up",
        "ip addr add 192.0.2.1/24 dev up0",
        "ip route add 198.51.100.0/24 via 192.0.2.254",
        "ip neigh add 192.0.2.254 lladdr 02:00:00:00:bb:fe dev up0 nud permanent",
        "ip link add vx0 type vxlan id 42 remote 192.0.2.9 local 192.0.2.1 dstport 4789 dev up0 ttl 32",
        "ip link set vx0 address 02:00:00:00:cc:01 up",
        "ip addr add 10.200.0.1/24 dev vx0",
        "ip neigh add 10.200.0.5 lladdr 02:00:00:00:dd:05 dev vx0 nud permanent",
    ] {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        ns.exec(&args);
    }
    let kernel_oif = |dst: &str| {
        let out = ns.exec(&["ip", "route", "get", dst]);
        out.split_whitespace()
            .skip_while(|w| *w != "dev")
            .nth(1)
            .unwrap()
            .to_string()
    };
    let (via_gw, on_link, unresolved, tunnel, none, up0) = run_in(&ns.0, || {
        let mut r = Resolver::open()?;
        Ok((
            r.next_hop("198.51.100.7".parse()?)?,
            r.next_hop("10.200.0.5".parse()?)?,
            r.next_hop("192.0.2.77".parse()?)?,
            r.link(nix::net::if_::if_nametoindex("vx0")?)?,
            r.route("203.0.113.1".parse()?)?,
            nix::net::if_::if_nametoindex("up0")?,
        ))
    })
    .unwrap();
    let gw = via_gw.expect("routed through the gateway");
    assert_eq!(gw.link.name, kernel_oif("198.51.100.7"));
    assert_eq!(gw.neighbour, "192.0.2.254".parse::<IpAddr>().unwrap());
    assert_eq!(gw.neighbour_mac, [2, 0, 0, 0, 0xbb, 0xfe]);
    assert_eq!(gw.link.mac, Some([2, 0, 0, 0, 0xaa, 1]));
    assert_eq!(gw.link.mtu, 1400);
    assert_eq!(gw.prefsrc, Some("192.0.2.1".parse().unwrap()));
    let vx = on_link.expect("on the VXLAN link");
    assert_eq!(vx.link.name, kernel_oif("10.200.0.5"));
    assert_eq!(vx.neighbour_mac, [2, 0, 0, 0, 0xdd, 5]);
    assert!(
        unresolved.is_none(),
        "no neighbour entry yet: the slow path's"
    );
    let v = tunnel.vxlan.expect("a VXLAN device");
    assert_eq!(v.vni, 42);
    assert_eq!(v.remote, Some("192.0.2.9".parse().unwrap()));
    assert_eq!(v.local, Some("192.0.2.1".parse().unwrap()));
    assert_eq!((v.port, v.ttl), (4789, 32));
    assert_eq!(v.link, up0, "bound to its underlay");
    assert!(none.is_none(), "no default route: nothing");
}
