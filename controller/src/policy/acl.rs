//! VNIC routing's security rules (SPEC §2.3): each VNIC's ordered rules, the first rule that
//! matches a packet decides, and a packet no rule matches is dropped, as a cloud's security
//! lists do. Pure: the configuration is checked with it, and it is the reference the
//! dataplane's rule stage is tested against.

use std::net::IpAddr;

use super::route::Prefix;

/// Rules one VNIC's packets are checked against, per direction: the dataplane walks them in
/// a bounded loop, and 64 covers what people write by hand (larger sets belong in prefixes).
pub const MAX_RULES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Toward the VNIC: the peer is the source.
    Ingress,
    /// From the VNIC: the peer is the destination.
    Egress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// The protocols a rule names (`None` in [`Rule::proto`]: any).
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    /// An IP protocol number, or any.
    pub proto: Option<u8>,
    /// The peer's prefix.
    pub peer: Prefix,
    /// Destination ports, inclusive (TCP and UDP only; `None`: all).
    pub ports: Option<(u16, u16)>,
    /// Answers to connections it allowed come back whatever the other direction's rules
    /// say (the connection state the flow stage keeps).
    pub stateful: bool,
}

/// What a rule is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub proto: u8,
    /// The source for ingress, the destination for egress.
    pub peer: IpAddr,
    pub dst_port: u16,
}

/// The decision: the rule that made it (its index), or none matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow(usize),
    Deny(usize),
    /// Dropped: nothing allowed it.
    NoMatch,
}

impl Rule {
    pub fn matches(&self, p: &Packet) -> bool {
        self.proto.is_none_or(|want| want == p.proto)
            && self.peer.contains(p.peer)
            && self.ports.is_none_or(|(lo, hi)| {
                (p.proto == TCP || p.proto == UDP) && (lo..=hi).contains(&p.dst_port)
            })
    }
}

/// The first rule of `rules` that matches `p` decides.
pub fn evaluate(rules: &[Rule], p: &Packet) -> Verdict {
    match rules.iter().position(|r| r.matches(p)) {
        Some(i) if rules[i].action == Action::Allow => Verdict::Allow(i),
        Some(i) => Verdict::Deny(i),
        None => Verdict::NoMatch,
    }
}

/// `443` or `8000-8080`.
pub fn parse_ports(text: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{text:?} is not a port or a range like 8000-8080");
    let (lo, hi) = match text.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (text.trim(), text.trim()),
    };
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo > hi {
        return Err(format!("{text:?}: the range ends before it starts"));
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rule(action: Action, proto: Option<u8>, peer: &str, ports: Option<(u16, u16)>) -> Rule {
        Rule {
            action,
            proto,
            peer: peer.parse().unwrap(),
            ports,
            stateful: false,
        }
    }

    fn pkt(proto: u8, peer: &str, port: u16) -> Packet {
        Packet {
            proto,
            peer: peer.parse().unwrap(),
            dst_port: port,
        }
    }

    #[test]
    fn the_first_matching_rule_decides_and_nothing_matched_is_dropped() {
        let rules = [
            rule(Action::Deny, Some(TCP), "10.9.0.0/16", None),
            rule(Action::Allow, Some(TCP), "0.0.0.0/0", Some((443, 443))),
            rule(Action::Allow, Some(UDP), "10.0.0.0/8", Some((53, 53))),
            rule(Action::Allow, Some(ICMP), "0.0.0.0/0", None),
        ];
        assert_eq!(
            evaluate(&rules, &pkt(TCP, "10.9.1.1", 443)),
            Verdict::Deny(0)
        );
        assert_eq!(
            evaluate(&rules, &pkt(TCP, "192.0.2.1", 443)),
            Verdict::Allow(1)
        );
        assert_eq!(
            evaluate(&rules, &pkt(TCP, "192.0.2.1", 80)),
            Verdict::NoMatch
        );
        assert_eq!(
            evaluate(&rules, &pkt(UDP, "10.1.1.1", 53)),
            Verdict::Allow(2)
        );
        assert_eq!(
            evaluate(&rules, &pkt(UDP, "192.0.2.1", 53)),
            Verdict::NoMatch
        );
        assert_eq!(
            evaluate(&rules, &pkt(ICMP, "192.0.2.1", 0)),
            Verdict::Allow(3)
        );
        // Ports only match TCP and UDP.
        let any_proto = [rule(Action::Allow, None, "0.0.0.0/0", Some((0, 65535)))];
        assert_eq!(
            evaluate(&any_proto, &pkt(ICMP, "192.0.2.1", 0)),
            Verdict::NoMatch
        );
        assert_eq!(evaluate(&[], &pkt(TCP, "192.0.2.1", 1)), Verdict::NoMatch);
    }

    #[test]
    fn ports_parse() {
        assert_eq!(parse_ports("443"), Ok((443, 443)));
        assert_eq!(parse_ports("8000-8080"), Ok((8000, 8080)));
        assert!(parse_ports("8080-8000").is_err());
        assert!(parse_ports("http").is_err());
        assert!(parse_ports("70000").is_err());
    }

    fn rule_strategy() -> impl Strategy<Value = Rule> {
        (
            any::<bool>(),
            prop::option::of(prop::sample::select(vec![TCP, UDP, ICMP])),
            prop::sample::select(vec![0u8, 8, 16, 24, 32]),
            0u8..4,
            prop::option::of((0u16..100, 0u16..100)),
        )
            .prop_map(|(allow, proto, len, net, ports)| Rule {
                action: if allow { Action::Allow } else { Action::Deny },
                proto,
                peer: Prefix::new(IpAddr::from([10, net, 0, 0]), len)
                    .unwrap_or_else(|_| "10.0.0.0/8".parse().unwrap()),
                ports: ports.map(|(a, b)| (a.min(b), a.max(b))),
                stateful: false,
            })
    }

    proptest! {
        /// Order is what decides: a rule put in front of the rules that matches the packet
        /// decides it; one that does not match changes nothing but the index.
        #[test]
        fn only_the_first_match_counts(
            rules in proptest::collection::vec(rule_strategy(), 0..12),
            extra in rule_strategy(),
            proto in prop::sample::select(vec![TCP, UDP, ICMP]),
            host in 0u8..4,
            port in 0u16..100,
        ) {
            let p = Packet { proto, peer: IpAddr::from([10, host, 0, 1]), dst_port: port };
            let before = evaluate(&rules, &p);
            let mut front = vec![extra.clone()];
            front.extend(rules.iter().cloned());
            let after = evaluate(&front, &p);
            if extra.matches(&p) {
                let want = match extra.action {
                    Action::Allow => Verdict::Allow(0),
                    Action::Deny => Verdict::Deny(0),
                };
                prop_assert_eq!(after, want);
            } else {
                let shifted = match before {
                    Verdict::Allow(i) => Verdict::Allow(i + 1),
                    Verdict::Deny(i) => Verdict::Deny(i + 1),
                    Verdict::NoMatch => Verdict::NoMatch,
                };
                prop_assert_eq!(after, shifted);
            }
        }
    }
}
