//! Flow offload, as the reconciler's feature: what the configuration asks for, and how what
//! conntrack reports becomes the pure policy's inputs (`policy::offload`).
//!
//! The flow table is not part of the rendered [`Image`](crate::policy::plan::Image): it holds
//! up to millions of entries that change every period, so the feature's tick decides
//! promotions and demotions directly (the policy) and the reconciler writes them through the
//! dataplane's flow-table calls, slot first and keys last.

use std::net::IpAddr;

use netlink_packet_netfilter::conntrack::Status;
use xnic_proto::config::{FlowSelect, FlowsSection};

use crate::{
    config::validate::{parse_mark, parse_port},
    monitor::conntrack::{CtEntry, CtTuple, TCP_CONNTRACK_ESTABLISHED},
    policy::offload::{Candidate, Policy, Selection, TCP, Tuple, UDP},
};

const NS_PER_S: u64 = 1_000_000_000;

/// The policy a `[flows]` section asks for (`None`: no section, offload off). The section
/// was validated with the rest of the configuration.
pub fn policy_of(section: Option<&FlowsSection>, capacity: u32) -> Policy {
    let Some(f) = section else {
        return Policy {
            enabled: false,
            selection: Selection::default(),
            capacity,
            idle_timeout_ns: 0,
            cooldown_ns: 0,
        };
    };
    let selection = Selection {
        all: f.select == FlowSelect::All,
        min_bytes: f.min_bytes,
        min_packets: f.min_packets,
        min_rate_bps: f.min_rate_kbps.map(|k| k * 1000 / 8),
        mark: f.mark.as_deref().and_then(|m| parse_mark(m).ok()),
        ports: f.ports.iter().filter_map(|p| parse_port(p).ok()).collect(),
    };
    Policy {
        enabled: f.enabled,
        selection,
        capacity,
        idle_timeout_ns: f.idle_timeout_s * NS_PER_S,
        cooldown_ns: f.cooldown_s * NS_PER_S,
    }
}

fn tuple(t: &CtTuple) -> Tuple {
    Tuple {
        src: t.src,
        dst: t.dst,
        proto: t.proto,
        src_port: t.src_port,
        dst_port: t.dst_port,
    }
}

/// conntrack's two tuples of an entry, as the policy takes them.
pub fn tuples_of(e: &CtEntry) -> (Tuple, Tuple) {
    (tuple(&e.orig), tuple(&e.reply))
}

/// An entry as a candidate for the fast path. `rate_bps`: its bytes per second since the
/// last period (0 the first time it is seen).
pub fn candidate_of(e: &CtEntry, rate_bps: u64) -> Candidate {
    let confirmed = match e.orig.proto {
        TCP => {
            e.tcp.is_some_and(|t| t.state == TCP_CONNTRACK_ESTABLISHED) && e.has(Status::Assured)
        }
        UDP => e.has(Status::SeenReply),
        _ => false,
    };
    let unspecified = |a: &IpAddr| a.is_unspecified();
    // Helpers (FTP, SIP...) rewrite payloads and expect related flows: the kernel's. So are
    // connections in a zone, dying ones, and what conntrack itself calls offloaded.
    let excluded = e.has(Status::Helper)
        || e.has(Status::Dying)
        || e.has(Status::Offload)
        || e.has(Status::Untracked)
        || e.zone != 0
        || unspecified(&e.orig.src)
        || unspecified(&e.reply.src);
    let (bytes, packets) = e.counters.map_or((0, 0), |c| {
        (c[0].bytes + c[1].bytes, c[0].packets + c[1].packets)
    });
    Candidate {
        id: e.id,
        proto: e.orig.proto,
        dst_port: e.orig.dst_port,
        confirmed,
        excluded,
        mark: e.mark,
        bytes,
        packets,
        rate_bps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::conntrack::{CtCounter, CtTcp};

    fn entry(proto: u8, status: Status, state: u8) -> CtEntry {
        let t = CtTuple {
            src: "10.1.0.2".parse().unwrap(),
            dst: "198.51.100.7".parse().unwrap(),
            proto,
            src_port: 40000,
            dst_port: 443,
        };
        CtEntry {
            id: 9,
            orig: t,
            reply: CtTuple {
                src: t.dst,
                dst: "192.0.2.1".parse().unwrap(),
                src_port: 443,
                dst_port: 40000,
                ..t
            },
            status: status.bits(),
            timeout: 100,
            mark: 1,
            zone: 0,
            tcp: (proto == TCP).then_some(CtTcp {
                state,
                ..CtTcp::default()
            }),
            counters: Some([
                CtCounter {
                    packets: 10,
                    bytes: 1000,
                },
                CtCounter {
                    packets: 5,
                    bytes: 500,
                },
            ]),
        }
    }

    #[test]
    fn established_assured_tcp_and_answered_udp_are_confirmed() {
        let ok = Status::Assured | Status::SeenReply | Status::Confirmed;
        let c = candidate_of(&entry(TCP, ok, TCP_CONNTRACK_ESTABLISHED), 77);
        assert!(c.confirmed && !c.excluded);
        assert_eq!(
            (c.bytes, c.packets, c.rate_bps, c.dst_port),
            (1500, 15, 77, 443)
        );
        // SYN_SENT (1), or not assured yet: not yet.
        assert!(!candidate_of(&entry(TCP, ok, 1), 0).confirmed);
        assert!(!candidate_of(&entry(TCP, Status::SeenReply, 3), 0).confirmed);
        assert!(candidate_of(&entry(UDP, Status::SeenReply, 0), 0).confirmed);
        assert!(!candidate_of(&entry(UDP, Status::Confirmed, 0), 0).confirmed);
        // A helper's connection stays with the kernel.
        let helped = entry(TCP, ok | Status::Helper, TCP_CONNTRACK_ESTABLISHED);
        assert!(candidate_of(&helped, 0).excluded);
        let (o, r) = tuples_of(&helped);
        assert_eq!((o.dst_port, r.dst_port), (443, 40000));
    }

    #[test]
    fn the_section_becomes_the_policy() {
        let section: FlowsSection = toml::from_str(
            "select = \"selected\"\nmin_rate_kbps = 8000\nmark = \"0x1/0x1\"\nports = [\"udp/53\"]\nidle_timeout_s = 10",
        )
        .unwrap();
        let p = policy_of(Some(&section), 1000);
        assert!(p.enabled && !p.selection.all);
        assert_eq!(p.selection.min_rate_bps, Some(1_000_000));
        assert_eq!(p.selection.mark, Some((1, 1)));
        assert!(p.selection.ports.contains(&(UDP, 53)));
        assert_eq!((p.capacity, p.idle_timeout_ns), (1000, 10 * NS_PER_S));
        assert!(!policy_of(None, 1000).enabled);
    }
}
