//! `xnic trace`: a described frame (or one from a pcap file) through the real programs
//! against the live maps, changing nothing; prints each stage's decision and the verdict.

use std::{fs::File, net::IpAddr, path::Path};

use anyhow::{Context as _, bail};
use etherparse::{PacketBuilder, VlanId};

use super::{
    args::{TraceArgs, TraceProto},
    block_on, client, print_json, table,
};
use crate::api::types::{StatusView, TraceRequest, TraceView, VmView};

/// What a frame from a VM goes to when no destination MAC is given and `--dst` is no local
/// VM's: a router's, as far as the VM knows (locally administered, never a VM's).
const DEFAULT_ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
/// A sender on the network side, when the frame comes in on an uplink.
const DEFAULT_PEER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x02];

pub fn run(args: &TraceArgs) -> anyhow::Result<()> {
    let api = client(&args.read)?;
    let frame = match (&args.pcap, &args.hex) {
        (Some(path), _) => from_pcap(path, args.frame)?,
        (None, Some(hex)) => {
            hex::decode(hex.trim().replace([' ', ':'], "")).context("--hex is not hex digits")?
        }
        (None, None) => {
            let status: StatusView = block_on(api.get("/v1/status"))?;
            let vms: Vec<VmView> = block_on(api.get("/v1/vms"))?;
            describe(args, &status, &vms)?
        }
    };
    let req = TraceRequest {
        port: args.port.clone(),
        frame: hex::encode(&frame),
    };
    let view: TraceView = block_on(api.post_json("/v1/trace", &req))?;
    if args.read.json {
        return print_json(&view);
    }
    print!("{}", table::trace(&view, &frame));
    Ok(())
}

fn parse_mac(text: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = text.split(':').collect();
    let bytes: Result<Vec<u8>, _> = parts.iter().map(|p| u8::from_str_radix(p, 16)).collect();
    match bytes {
        Ok(b) if b.len() == 6 => Ok(b.try_into().expect("six bytes")),
        _ => bail!("{text:?} is not a MAC address (like 02:00:00:00:00:01)"),
    }
}

fn first_mac(vm: &VmView) -> Option<[u8; 6]> {
    vm.macs.first().and_then(|m| parse_mac(m).ok())
}

fn first_ip(vm: &VmView, v6: bool) -> Option<IpAddr> {
    vm.ips
        .iter()
        .filter_map(|ip| ip.split('/').next()?.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv6() == v6)
}

/// The frame `args` describes; what it leaves out comes from the daemon's VMs: on a VM's
/// port, that VM's MAC and address; for a destination address a VM has, that VM's MAC.
fn describe(args: &TraceArgs, status: &StatusView, vms: &[VmView]) -> anyhow::Result<Vec<u8>> {
    let Some(port) = status.ports.iter().find(|p| p.name == args.port) else {
        let names: Vec<&str> = status.ports.iter().map(|p| p.name.as_str()).collect();
        bail!(
            "no port named {:?}; this instance's ports: {}",
            args.port,
            names.join(", ")
        );
    };
    let sender = port
        .vm
        .as_ref()
        .and_then(|name| vms.iter().find(|v| &v.name == name));
    let v6 = matches!(args.src, Some(IpAddr::V6(_))) || matches!(args.dst, Some(IpAddr::V6(_)));
    let src = match (args.src, sender) {
        (Some(ip), _) => ip,
        (None, Some(vm)) => first_ip(vm, v6).unwrap_or_else(|| doc_addr(v6, 1)),
        (None, None) => doc_addr(v6, 1),
    };
    let dst = args.dst.unwrap_or_else(|| doc_addr(v6, 2));
    if src.is_ipv6() != dst.is_ipv6() {
        bail!("--src {src} and --dst {dst} are of different IP versions");
    }
    let receiver = vms.iter().find(|v| {
        v.ips
            .iter()
            .any(|ip| ip.split('/').next().and_then(|a| a.parse::<IpAddr>().ok()) == Some(dst))
    });
    let src_mac = match (&args.src_mac, sender) {
        (Some(m), _) => parse_mac(m)?,
        (None, Some(vm)) => first_mac(vm).unwrap_or(DEFAULT_PEER_MAC),
        (None, None) => DEFAULT_PEER_MAC,
    };
    let dst_mac = match (&args.dst_mac, receiver) {
        (Some(m), _) => parse_mac(m)?,
        (None, Some(vm)) => first_mac(vm).unwrap_or(DEFAULT_ROUTER_MAC),
        (None, None) => DEFAULT_ROUTER_MAC,
    };
    build(args, src_mac, dst_mac, src, dst)
}

/// 192.0.2.N or 2001:db8::N (documentation addresses).
fn doc_addr(v6: bool, n: u8) -> IpAddr {
    if v6 {
        IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            u16::from(n),
        ))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, n))
    }
}

fn build(
    args: &TraceArgs,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: IpAddr,
    dst: IpAddr,
) -> anyhow::Result<Vec<u8>> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let ttl = 64;
    let ip = match (args.vlan, src, dst) {
        (Some(v), IpAddr::V4(s), IpAddr::V4(d)) => eth
            .single_vlan(VlanId::try_new(v).context("--vlan must be below 4096")?)
            .ipv4(s.octets(), d.octets(), ttl),
        (Some(v), IpAddr::V6(s), IpAddr::V6(d)) => eth
            .single_vlan(VlanId::try_new(v).context("--vlan must be below 4096")?)
            .ipv6(s.octets(), d.octets(), ttl),
        (None, IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), ttl),
        (None, IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), ttl),
        _ => bail!("--src and --dst must both be IPv4 or both IPv6"),
    };
    let payload = vec![0u8; args.payload];
    let mut out = Vec::new();
    match args.proto {
        TraceProto::Udp => ip
            .udp(args.sport, args.dport)
            .write(&mut out, &payload)
            .context("cannot build the frame")?,
        TraceProto::Icmp if src.is_ipv6() => ip
            .icmpv6_echo_request(1, 1)
            .write(&mut out, &payload)
            .context("cannot build the frame")?,
        TraceProto::Icmp => ip
            .icmpv4_echo_request(1, 1)
            .write(&mut out, &payload)
            .context("cannot build the frame")?,
        TraceProto::Tcp => {
            let mut tcp = ip.tcp(args.sport, args.dport, 1, 64240);
            for flag in args.tcp_flags.chars() {
                tcp = match flag.to_ascii_uppercase() {
                    'S' => tcp.syn(),
                    'A' => tcp.ack(1),
                    'F' => tcp.fin(),
                    'R' => tcp.rst(),
                    'P' => tcp.psh(),
                    other => bail!("--tcp-flags: {other:?} is none of S, A, F, R, P"),
                };
            }
            tcp.write(&mut out, &payload)
                .context("cannot build the frame")?
        }
    }
    Ok(out)
}

/// Frame `n` (from 1) of a pcap or pcapng file.
fn from_pcap(path: &Path, n: usize) -> anyhow::Result<Vec<u8>> {
    use pcap_file::{pcap::PcapReader, pcapng::Block, pcapng::PcapNgReader};
    if n == 0 {
        bail!("--frame counts from 1");
    }
    let open = || File::open(path).with_context(|| format!("cannot open {}", path.display()));
    if let Ok(mut r) = PcapReader::new(open()?) {
        let mut i = 0;
        while let Some(p) = r.next_packet() {
            let p = p.with_context(|| format!("{} is not a readable pcap file", path.display()))?;
            i += 1;
            if i == n {
                return Ok(p.data.into_owned());
            }
        }
        bail!("{} has {i} frame(s), not {n}", path.display());
    }
    let mut r = PcapNgReader::new(open()?)
        .with_context(|| format!("{} is neither a pcap nor a pcapng file", path.display()))?;
    let mut i = 0;
    while let Some(block) = r.next_block() {
        let block =
            block.with_context(|| format!("{} is not a readable pcapng file", path.display()))?;
        let data = match block {
            Block::EnhancedPacket(p) => p.data.into_owned(),
            Block::SimplePacket(p) => p.data.into_owned(),
            _ => continue,
        };
        i += 1;
        if i == n {
            return Ok(data);
        }
    }
    bail!("{} has {i} frame(s), not {n}", path.display());
}
