//! A frame's headers in one line, as tcpdump prints them, from its first bytes (which may
//! stop inside a header: what is there is shown).

use std::{fmt::Write as _, net::IpAddr};

use etherparse::{LaxNetSlice, LaxSlicedPacket, LinkSlice, TransportSlice};
use serde::Serialize;

/// What the headers say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FrameSummary {
    pub src_mac: String,
    pub dst_mac: String,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// `tcp`, `udp`, `icmp`, `icmp6`, `arp`, or the IP protocol's number.
    pub proto: Option<String>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// The one-line summary.
    pub text: String,
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn summary(head: &[u8]) -> FrameSummary {
    let mut s = FrameSummary::default();
    let Ok(p) = LaxSlicedPacket::from_ethernet(head) else {
        s.text = format!("{} bytes, too short for Ethernet", head.len());
        return s;
    };
    if let Some(LinkSlice::Ethernet2(e)) = &p.link {
        s.src_mac = mac(e.source());
        s.dst_mac = mac(e.destination());
    }
    let mut text = format!("{} > {}", s.src_mac, s.dst_mac);
    if !p.link_exts.is_empty() {
        let _ = write!(text, " vlan×{}", p.link_exts.len());
    }
    match &p.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let h = ip.header();
            s.src = Some(IpAddr::V4(h.source_addr()));
            s.dst = Some(IpAddr::V4(h.destination_addr()));
            s.proto = Some(proto_name(ip.payload_ip_number().0));
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let h = ip.header();
            s.src = Some(IpAddr::V6(h.source_addr()));
            s.dst = Some(IpAddr::V6(h.destination_addr()));
            s.proto = Some(proto_name(ip.payload().ip_number.0));
        }
        Some(LaxNetSlice::Arp(_)) => s.proto = Some("arp".into()),
        None => {}
    }
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            s.src_port = Some(t.source_port());
            s.dst_port = Some(t.destination_port());
        }
        Some(TransportSlice::Udp(u)) => {
            s.src_port = Some(u.source_port());
            s.dst_port = Some(u.destination_port());
        }
        _ => {}
    }
    if let (Some(src), Some(dst)) = (s.src, s.dst) {
        let port = |p: Option<u16>| p.map_or(String::new(), |p| format!(".{p}"));
        let _ = write!(
            text,
            ", {src}{} > {dst}{}",
            port(s.src_port),
            port(s.dst_port)
        );
    }
    if let Some(proto) = &s.proto {
        let _ = write!(text, ": {proto}");
    }
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let flags: String = [
                (t.syn(), 'S'),
                (t.fin(), 'F'),
                (t.rst(), 'R'),
                (t.psh(), 'P'),
                (t.ack(), '.'),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, c)| *c)
            .collect();
            let _ = write!(text, " [{flags}] seq {}", t.sequence_number());
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let _ = write!(text, " type {} code {}", i.type_u8(), i.code_u8());
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let _ = write!(text, " type {} code {}", i.type_u8(), i.code_u8());
        }
        _ => {}
    }
    if let Some((e, layer)) = &p.stop_err {
        let _ = write!(text, " (cut at {layer:?}: {e})");
    }
    s.text = text;
    s
}

fn proto_name(n: u8) -> String {
    match n {
        6 => "tcp".into(),
        17 => "udp".into(),
        1 => "icmp".into(),
        58 => "icmp6".into(),
        n => format!("proto {n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_udp_frame_reads_like_tcpdump() {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(5000, 7000)
            .write(&mut frame, b"hello")
            .unwrap();
        let s = summary(&frame);
        assert_eq!(s.src, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(s.dst_port, Some(7000));
        assert_eq!(
            s.text,
            "02:00:00:00:00:01 > 02:00:00:00:00:02, 10.0.0.1.5000 > 10.0.0.2.7000: udp"
        );
        // Cut inside the UDP header: the addresses are still there.
        let cut = summary(&frame[..38]);
        assert_eq!(cut.dst, Some("10.0.0.2".parse().unwrap()));
        assert!(cut.text.contains("cut at"), "{}", cut.text);
    }
}
