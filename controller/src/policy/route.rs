//! VNIC routing's route tables (SPEC §2.3): each table maps prefixes to next hops, the longest
//! prefix holding the address wins, and a virtual router hands the packet to another table.
//! Pure: the configuration is checked with it, and it is the reference the dataplane's LPM
//! tries are tested against.
//!
//! Ties cannot happen: a table holds each prefix once (a second route for the same prefix is
//! refused, as `ip route add` refuses it). Chains of virtual routers are at most
//! [`MAX_ROUTER_HOPS`] long and never loop: a configuration whose tables reach themselves
//! through virtual routers is refused as a whole, whether or not some address would really
//! go round, because a later route could make it do so.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use xnic_common::vnic::{
    NextHop, RouteAddrV4, RouteAddrV6, RouteEntry, TABLE_ID_BITS, mask_v4, mask_v6,
    route_prefix_len,
};

/// Virtual routers one packet may pass through: each is one more lookup in the dataplane
/// (a bounded loop the verifier accepts); four covers a VCN's router, a peering and a
/// transit hub with room to spare.
pub const MAX_ROUTER_HOPS: usize = 4;

/// An address prefix, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `addr/len`; refused when `len` is too long for the family or host bits are set (a
    /// typo more often than not).
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, RouteError> {
        let max = max_len(&addr);
        if len > max {
            return Err(RouteError::BadPrefix(format!(
                "{addr}/{len}: at most /{max} for this family"
            )));
        }
        let p = Prefix {
            addr: masked(addr, len),
            len,
        };
        if p.addr != addr {
            return Err(RouteError::BadPrefix(format!(
                "{addr}/{len} has host bits set: did you mean {}?",
                p
            )));
        }
        Ok(p)
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && masked(a, self.len) == self.addr
    }

    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Prefix) -> bool {
        let len = self.len.min(other.len);
        self.addr.is_ipv4() == other.addr.is_ipv4()
            && masked(self.addr, len) == masked(other.addr, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl std::str::FromStr for Prefix {
    type Err = RouteError;

    /// `10.0.0.0/8`, `2001:db8::/32`; a bare address is a host route.
    fn from_str(s: &str) -> Result<Prefix, RouteError> {
        let bad = || RouteError::BadPrefix(format!("{s:?} is not an address prefix"));
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len = match len {
            Some(l) => l.parse().map_err(|_| bad())?,
            None => max_len(&addr),
        };
        Prefix::new(addr, len)
    }
}

fn max_len(a: &IpAddr) -> u8 {
    if a.is_ipv4() { 32 } else { 128 }
}

fn masked(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => IpAddr::from(mask_v4(v.octets(), len)),
        IpAddr::V6(v) => IpAddr::from(mask_v6(v.octets(), len)),
    }
}

/// Where a route sends a packet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A VNIC, wherever its compute instance lives (delivered here, or over VXLAN to its
    /// host).
    Vnic(String),
    /// Another route table, looked up again.
    Router(String),
    /// Out to the internet: the VNIC's private address mapped 1:1 to its public one.
    InternetGateway(String),
    /// Out to the internet behind a shared address (many-to-one SNAT).
    NatGateway(String),
    /// To the services network.
    ServiceGateway(String),
    /// To an on-premises network, over its own VNI.
    DynamicRoutingGateway(String),
}

impl Target {
    /// The kind, as the configuration and the CLI spell it (`vnic:web1`).
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Vnic(_) => "vnic",
            Target::Router(_) => "router",
            Target::InternetGateway(_) => "igw",
            Target::NatGateway(_) => "nat",
            Target::ServiceGateway(_) => "sgw",
            Target::DynamicRoutingGateway(_) => "drg",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Target::Vnic(n)
            | Target::Router(n)
            | Target::InternetGateway(n)
            | Target::NatGateway(n)
            | Target::ServiceGateway(n)
            | Target::DynamicRoutingGateway(n) => n,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind(), self.name())
    }
}

impl std::str::FromStr for Target {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Target, RouteError> {
        let bad = || {
            RouteError::BadTarget(format!(
                "{s:?}: a next hop is KIND:NAME, KIND one of vnic, router, igw, nat, sgw, drg"
            ))
        };
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        if name.is_empty() {
            return Err(bad());
        }
        let name = name.to_string();
        Ok(match kind {
            "vnic" => Target::Vnic(name),
            "router" => Target::Router(name),
            "igw" => Target::InternetGateway(name),
            "nat" => Target::NatGateway(name),
            "sgw" => Target::ServiceGateway(name),
            "drg" => Target::DynamicRoutingGateway(name),
            _ => return Err(bad()),
        })
    }
}

/// Why routes are refused, or a packet has no route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    BadPrefix(String),
    BadTarget(String),
    /// A table already has a route for this prefix.
    Duplicate {
        table: String,
        prefix: Prefix,
    },
    /// A route names a table, VNIC or gateway that does not exist.
    UnknownTarget {
        table: String,
        target: Target,
    },
    /// Tables that reach themselves through virtual routers, in order.
    Loop(Vec<String>),
    /// A chain of virtual routers longer than [`MAX_ROUTER_HOPS`].
    TooDeep(Vec<String>),
    /// No table of that name.
    NoTable(String),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::BadPrefix(m) | RouteError::BadTarget(m) => f.write_str(m),
            RouteError::Duplicate { table, prefix } => write!(
                f,
                "route table {table:?} already has a route for {prefix}: delete it first, or change that one"
            ),
            RouteError::UnknownTarget { table, target } => write!(
                f,
                "route table {table:?} sends packets to {target}, which does not exist"
            ),
            RouteError::Loop(tables) => write!(
                f,
                "virtual routers loop: {} (a table must not reach itself)",
                tables.join(" → ")
            ),
            RouteError::TooDeep(tables) => write!(
                f,
                "virtual routers chain {} tables deep ({}), more than {MAX_ROUTER_HOPS}",
                tables.len(),
                tables.join(" → ")
            ),
            RouteError::NoTable(t) => write!(f, "no route table named {t:?}"),
        }
    }
}

/// One table's routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    routes: BTreeMap<Prefix, Target>,
    /// Prefix lengths in use, longest first: a lookup tries only those.
    lens_v4: BTreeSet<u8>,
    lens_v6: BTreeSet<u8>,
}

impl RouteTable {
    /// Adds a route; refused when the prefix has one already.
    pub fn insert(
        &mut self,
        table: &str,
        prefix: Prefix,
        target: Target,
    ) -> Result<(), RouteError> {
        if self.routes.contains_key(&prefix) {
            return Err(RouteError::Duplicate {
                table: table.to_string(),
                prefix,
            });
        }
        self.routes.insert(prefix, target);
        self.lens(prefix.addr).insert(prefix.len);
        Ok(())
    }

    /// Removes the route for `prefix`, if any.
    pub fn remove(&mut self, prefix: &Prefix) -> Option<Target> {
        let t = self.routes.remove(prefix)?;
        let still = self
            .routes
            .keys()
            .any(|p| p.len == prefix.len && p.addr.is_ipv4() == prefix.addr.is_ipv4());
        if !still {
            self.lens(prefix.addr).remove(&prefix.len);
        }
        Some(t)
    }

    fn lens(&mut self, a: IpAddr) -> &mut BTreeSet<u8> {
        if a.is_ipv4() {
            &mut self.lens_v4
        } else {
            &mut self.lens_v6
        }
    }

    /// The route the longest prefix holding `a` gives.
    pub fn lookup(&self, a: IpAddr) -> Option<(Prefix, &Target)> {
        let lens = if a.is_ipv4() {
            &self.lens_v4
        } else {
            &self.lens_v6
        };
        lens.iter().rev().find_map(|&len| {
            let p = Prefix {
                addr: masked(a, len),
                len,
            };
            self.routes.get(&p).map(|t| (p, t))
        })
    }

    pub fn routes(&self) -> impl Iterator<Item = (&Prefix, &Target)> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Every route table, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    tables: BTreeMap<String, RouteTable>,
}

/// Where a packet goes: the tables and routes it took, and the final next hop (never a
/// virtual router).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    pub steps: Vec<(String, Prefix)>,
    pub target: Target,
}

impl Routes {
    pub fn table(&self, name: &str) -> Option<&RouteTable> {
        self.tables.get(name)
    }

    pub fn tables(&self) -> impl Iterator<Item = (&String, &RouteTable)> {
        self.tables.iter()
    }

    /// A table, empty when new.
    pub fn table_mut(&mut self, name: &str) -> &mut RouteTable {
        self.tables.entry(name.to_string()).or_default()
    }

    /// Where a packet to `a` looked up in `table` goes (`None`: no route on the way). The
    /// tables must have passed [`Routes::check`].
    pub fn resolve(&self, table: &str, a: IpAddr) -> Result<Option<Path>, RouteError> {
        let mut steps = Vec::new();
        let mut at = table.to_string();
        loop {
            let t = self
                .tables
                .get(&at)
                .ok_or_else(|| RouteError::NoTable(at.clone()))?;
            let Some((prefix, target)) = t.lookup(a) else {
                return Ok(None);
            };
            steps.push((at.clone(), prefix));
            match target {
                Target::Router(next) => {
                    if steps.len() > MAX_ROUTER_HOPS {
                        let mut chain: Vec<String> = steps.into_iter().map(|(t, _)| t).collect();
                        chain.push(next.clone());
                        return Err(RouteError::TooDeep(chain));
                    }
                    at = next.clone();
                }
                t => {
                    return Ok(Some(Path {
                        steps,
                        target: t.clone(),
                    }));
                }
            }
        }
    }

    /// Every problem that makes these tables unusable: a target that `exists` does not
    /// know (virtual routers must name a table here), tables that reach themselves through
    /// virtual routers, chains longer than [`MAX_ROUTER_HOPS`].
    pub fn check(&self, exists: impl Fn(&Target) -> bool) -> Vec<RouteError> {
        let mut errors = Vec::new();
        for (name, t) in &self.tables {
            for target in t.routes.values() {
                let known = match target {
                    Target::Router(r) => self.tables.contains_key(r),
                    other => exists(other),
                };
                if !known {
                    errors.push(RouteError::UnknownTarget {
                        table: name.clone(),
                        target: target.clone(),
                    });
                }
            }
        }
        // Depth-first over the virtual routers' graph, each table once: a table met again
        // while still on the path is a loop; the longest chain below each table is kept, and
        // one longer than the limit is reported.
        let mut seen: BTreeMap<&str, Walked> = BTreeMap::new();
        let mut loops: BTreeSet<Vec<String>> = BTreeSet::new();
        let mut path = Vec::new();
        for start in self.tables.keys() {
            self.walk(start, &mut path, &mut seen, &mut loops, &mut errors);
        }
        if let Some((start, _)) = seen
            .iter()
            .filter_map(|(t, w)| match w {
                Walked::Done { hops, .. } if *hops > MAX_ROUTER_HOPS => Some((*t, *hops)),
                _ => None,
            })
            .max_by_key(|(_, hops)| *hops)
        {
            let mut chain = vec![start.to_string()];
            let mut at = start;
            while let Some(Walked::Done {
                next: Some(next), ..
            }) = seen.get(at)
            {
                chain.push(next.to_string());
                at = next;
            }
            errors.push(RouteError::TooDeep(chain));
        }
        errors
    }

    fn routers_of(&self, table: &str) -> BTreeSet<&String> {
        self.tables
            .get(table)
            .into_iter()
            .flat_map(|t| t.routes.values())
            .filter_map(|t| match t {
                Target::Router(r) if self.tables.contains_key(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn walk<'a>(
        &'a self,
        table: &'a str,
        path: &mut Vec<&'a str>,
        seen: &mut BTreeMap<&'a str, Walked<'a>>,
        loops: &mut BTreeSet<Vec<String>>,
        errors: &mut Vec<RouteError>,
    ) {
        if seen.contains_key(table) {
            return;
        }
        seen.insert(table, Walked::OnPath);
        path.push(table);
        let (mut hops, mut deepest) = (0, None);
        for next in self.routers_of(table) {
            match seen.get(next.as_str()) {
                Some(Walked::OnPath) => {
                    let from = path.iter().position(|t| *t == next.as_str()).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|t| t.to_string()).collect();
                    let mut key = cycle.clone();
                    key.sort();
                    // One report a loop, whichever table it was found from.
                    if loops.insert(key) {
                        cycle.push(next.clone());
                        errors.push(RouteError::Loop(cycle));
                    }
                    continue;
                }
                Some(Walked::Done { .. }) => {}
                None => self.walk(next, path, seen, loops, errors),
            }
            if let Some(Walked::Done { hops: h, .. }) = seen.get(next.as_str())
                && h + 1 > hops
            {
                (hops, deepest) = (h + 1, Some(next.as_str()));
            }
        }
        path.pop();
        seen.insert(
            table,
            Walked::Done {
                hops,
                next: deepest,
            },
        );
    }
}

/// A table as [`Routes::check`] walks the virtual routers.
enum Walked<'a> {
    /// On the path being walked.
    OnPath,
    /// Walked: the longest chain of virtual routers from it, and its next table.
    Done { hops: usize, next: Option<&'a str> },
}

/// One route as the dataplane's trie holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKey {
    V4 { prefix_len: u32, data: RouteAddrV4 },
    V6 { prefix_len: u32, data: RouteAddrV6 },
}

impl RouteKey {
    /// The key of `prefix` in table `table`.
    pub fn route(table: u32, prefix: &Prefix) -> RouteKey {
        let prefix_len = route_prefix_len(prefix.len);
        match prefix.addr {
            IpAddr::V4(a) => RouteKey::V4 {
                prefix_len,
                data: RouteAddrV4::new(table, a.octets(), prefix.len),
            },
            IpAddr::V6(a) => RouteKey::V6 {
                prefix_len,
                data: RouteAddrV6::new(table, a.octets(), prefix.len),
            },
        }
    }

    /// The table and prefix of a route's key.
    pub fn prefix(&self) -> (u32, Prefix) {
        let (table, addr, len) = match self {
            RouteKey::V4 { prefix_len, data } => (
                data.table,
                IpAddr::from(data.addr),
                prefix_len.saturating_sub(TABLE_ID_BITS),
            ),
            RouteKey::V6 { prefix_len, data } => (
                data.table,
                IpAddr::from(data.addr),
                prefix_len.saturating_sub(TABLE_ID_BITS),
            ),
        };
        (
            u32::from_be_bytes(table),
            Prefix {
                addr,
                len: len as u8,
            },
        )
    }

    /// The key a lookup of `a` in table `table` uses: every bit counts.
    pub fn lookup(table: u32, a: IpAddr) -> RouteKey {
        RouteKey::route(
            table,
            &Prefix {
                addr: a,
                len: max_len(&a),
            },
        )
    }
}

impl Routes {
    /// Every route as the dataplane's tries hold it, with the ids `table_id` gives tables
    /// and `target_id` gives the other next hops (`None` for either: the route is left out,
    /// which [`Routes::check`] refuses beforehand). Routes are numbered in order, for their
    /// counters.
    pub fn compile(
        &self,
        table_id: impl Fn(&str) -> Option<u32>,
        target_id: impl Fn(&Target) -> Option<u32>,
    ) -> Vec<(RouteKey, RouteEntry)> {
        let mut out = Vec::new();
        for (name, t) in &self.tables {
            let Some(id) = table_id(name) else { continue };
            for (prefix, target) in &t.routes {
                let (kind, to) = match target {
                    Target::Router(r) => (NextHop::Router, table_id(r)),
                    Target::Vnic(_) => (NextHop::Vnic, target_id(target)),
                    Target::InternetGateway(_) => (NextHop::InternetGateway, target_id(target)),
                    Target::NatGateway(_) => (NextHop::NatGateway, target_id(target)),
                    Target::ServiceGateway(_) => (NextHop::ServiceGateway, target_id(target)),
                    Target::DynamicRoutingGateway(_) => {
                        (NextHop::DynamicRoutingGateway, target_id(target))
                    }
                };
                let Some(to) = to else { continue };
                let entry = RouteEntry {
                    kind: kind as u8,
                    _pad: [0; 3],
                    target: to,
                    route: out.len() as u32,
                };
                out.push((RouteKey::route(id, prefix), entry));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_and_refuse_what_is_wrong() {
        assert_eq!(p("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("10.1.2.3").len(), 32);
        assert_eq!(p("2001:db8::/32").len(), 32);
        assert!(matches!(
            "10.0.0.1/8".parse::<Prefix>(),
            Err(RouteError::BadPrefix(m)) if m.contains("did you mean 10.0.0.0/8")
        ));
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("ten/8".parse::<Prefix>().is_err());
        assert!(p("10.0.0.0/8").overlaps(&p("10.1.0.0/16")));
        assert!(!p("10.0.0.0/16").overlaps(&p("10.1.0.0/16")));
        assert!(!p("0.0.0.0/0").overlaps(&p("::/0")));
    }

    #[test]
    fn targets_parse() {
        assert_eq!(
            "router:core".parse::<Target>().unwrap(),
            Target::Router("core".into())
        );
        assert_eq!(
            "igw:internet".parse::<Target>().unwrap().to_string(),
            "igw:internet"
        );
        assert!("gateway:x".parse::<Target>().is_err());
        assert!("vnic:".parse::<Target>().is_err());
    }

    #[test]
    fn the_longest_prefix_wins_and_a_prefix_is_routed_once() {
        let mut t = RouteTable::default();
        t.insert("rt", p("0.0.0.0/0"), Target::InternetGateway("igw".into()))
            .unwrap();
        t.insert("rt", p("10.0.0.0/8"), Target::Router("core".into()))
            .unwrap();
        t.insert("rt", p("10.1.2.0/24"), Target::Vnic("web1".into()))
            .unwrap();
        assert_eq!(t.lookup(a("10.1.2.9")).unwrap().0, p("10.1.2.0/24"));
        assert_eq!(t.lookup(a("10.9.9.9")).unwrap().0, p("10.0.0.0/8"));
        assert_eq!(t.lookup(a("192.0.2.1")).unwrap().0, p("0.0.0.0/0"));
        assert_eq!(t.lookup(a("2001:db8::1")), None);
        assert_eq!(
            t.insert("rt", p("10.0.0.0/8"), Target::Vnic("x".into())),
            Err(RouteError::Duplicate {
                table: "rt".into(),
                prefix: p("10.0.0.0/8")
            })
        );
        t.remove(&p("10.1.2.0/24"));
        assert_eq!(t.lookup(a("10.1.2.9")).unwrap().0, p("10.0.0.0/8"));
    }

    #[test]
    fn virtual_routers_chain_tables() {
        let mut r = Routes::default();
        r.table_mut("web")
            .insert("web", p("0.0.0.0/0"), Target::Router("core".into()))
            .unwrap();
        r.table_mut("core")
            .insert("core", p("10.2.0.0/16"), Target::Vnic("db1".into()))
            .unwrap();
        assert!(r.check(|_| true).is_empty());
        let path = r.resolve("web", a("10.2.0.5")).unwrap().unwrap();
        assert_eq!(path.target, Target::Vnic("db1".into()));
        assert_eq!(
            path.steps,
            [
                ("web".to_string(), p("0.0.0.0/0")),
                ("core".to_string(), p("10.2.0.0/16"))
            ]
        );
        assert_eq!(r.resolve("web", a("192.0.2.1")).unwrap(), None);
        assert_eq!(
            r.resolve("nope", a("192.0.2.1")),
            Err(RouteError::NoTable("nope".into()))
        );
    }

    #[test]
    fn loops_unknown_targets_and_deep_chains_are_refused() {
        let mut r = Routes::default();
        r.table_mut("a")
            .insert("a", p("10.0.0.0/8"), Target::Router("b".into()))
            .unwrap();
        r.table_mut("b")
            .insert("b", p("0.0.0.0/0"), Target::Router("a".into()))
            .unwrap();
        r.table_mut("b")
            .insert("b", p("192.0.2.0/24"), Target::NatGateway("nat".into()))
            .unwrap();
        r.table_mut("b")
            .insert("b", p("198.51.100.0/24"), Target::Router("gone".into()))
            .unwrap();
        let errors = r.check(|t| t.name() != "nat");
        assert!(errors.contains(&RouteError::Loop(vec!["a".into(), "b".into(), "a".into()])));
        assert!(errors.contains(&RouteError::UnknownTarget {
            table: "b".into(),
            target: Target::NatGateway("nat".into())
        }));
        assert!(errors.contains(&RouteError::UnknownTarget {
            table: "b".into(),
            target: Target::Router("gone".into())
        }));
        assert_eq!(
            errors
                .iter()
                .filter(|e| matches!(e, RouteError::Loop(_)))
                .count(),
            1,
            "{errors:?}"
        );

        let mut deep = Routes::default();
        let names: Vec<String> = (0..=MAX_ROUTER_HOPS + 1).map(|i| format!("t{i}")).collect();
        for w in names.windows(2) {
            deep.table_mut(&w[0])
                .insert(&w[0], p("0.0.0.0/0"), Target::Router(w[1].clone()))
                .unwrap();
        }
        deep.table_mut(&names[names.len() - 1])
            .insert("last", p("0.0.0.0/0"), Target::Vnic("v".into()))
            .unwrap();
        assert!(
            deep.check(|_| true)
                .iter()
                .any(|e| matches!(e, RouteError::TooDeep(_)))
        );
        assert!(matches!(
            deep.resolve("t0", a("10.0.0.1")),
            Err(RouteError::TooDeep(_))
        ));
    }

    /// The reference: every route of the table that holds the address, the longest one.
    fn reference(routes: &[(Prefix, u32)], a: IpAddr) -> Option<(Prefix, u32)> {
        routes
            .iter()
            .filter(|(p, _)| p.contains(a))
            .max_by_key(|(p, _)| p.len())
            .copied()
    }

    /// Prefixes from a small corner of the address space, so that they overlap a lot.
    fn prefix() -> impl Strategy<Value = Prefix> {
        (0u32..16, 0u8..=32).prop_map(|(hi, len)| {
            let addr = Ipv4Addr::from(0x0a00_0000 | (hi << 20) | (hi << 4));
            let addr = masked(IpAddr::V4(addr), len);
            Prefix::new(addr, len).unwrap()
        })
    }

    fn address() -> impl Strategy<Value = IpAddr> {
        (0u32..16, any::<u32>()).prop_map(|(hi, lo)| {
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (hi << 20) | (lo & 0xfffff)))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn lookups_agree_with_a_linear_scan(
            routes in proptest::collection::vec((prefix(), 0u32..1000), 0..64),
            addrs in proptest::collection::vec(address(), 1..32),
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut t = RouteTable::default();
            let mut kept: Vec<(Prefix, u32)> = Vec::new();
            for (p, v) in routes {
                let dup = kept.iter().any(|(q, _)| *q == p);
                let r = t.insert("rt", p, Target::Vnic(v.to_string()));
                prop_assert_eq!(r.is_err(), dup);
                if !dup {
                    kept.push((p, v));
                }
            }
            for i in removed {
                if kept.is_empty() {
                    break;
                }
                let (p, _) = kept.remove(i.index(kept.len()));
                prop_assert!(t.remove(&p).is_some());
            }
            for a in addrs {
                let got = t.lookup(a).map(|(p, t)| (p, t.name().parse::<u32>().unwrap()));
                prop_assert_eq!(got, reference(&kept, a));
            }
        }

        /// The compiled keys, searched as the kernel's trie searches them (the longest key
        /// whose first `prefix_len` bits match), give each table's own longest prefix.
        #[test]
        fn compiled_keys_match_like_the_tables(
            routes in proptest::collection::vec((0u32..3, prefix(), 0u32..1000), 0..64),
            queries in proptest::collection::vec((0u32..4, address()), 1..32),
        ) {
            let mut r = Routes::default();
            for (t, p, v) in routes {
                let _ = r.table_mut(&format!("t{t}")).insert("t", p, Target::Vnic(v.to_string()));
            }
            let table_id = |n: &str| n[1..].parse::<u32>().ok().map(|i| i + 100);
            let target_id = |t: &Target| t.name().parse::<u32>().ok();
            let keys = r.compile(table_id, target_id);
            let bits = |k: &RouteKey| -> (u32, Vec<u8>) {
                match k {
                    RouteKey::V4 { prefix_len, data } => {
                        (*prefix_len, [&data.table[..], &data.addr[..]].concat())
                    }
                    RouteKey::V6 { prefix_len, data } => {
                        (*prefix_len, [&data.table[..], &data.addr[..]].concat())
                    }
                }
            };
            let matches = |key: &[u8], len: u32, q: &[u8]| {
                (0..len as usize).all(|i| (key[i / 8] ^ q[i / 8]) & (0x80 >> (i % 8)) == 0)
            };
            for (t, a) in queries {
                let (_, q) = bits(&RouteKey::lookup(t + 100, a));
                let trie = keys
                    .iter()
                    .filter(|(k, _)| {
                        let (len, key) = bits(k);
                        key.len() == q.len() && matches(&key, len, &q)
                    })
                    .max_by_key(|(k, _)| bits(k).0)
                    .map(|(_, e)| e.target);
                let table = r
                    .table(&format!("t{t}"))
                    .and_then(|tab| tab.lookup(a))
                    .map(|(_, target)| target.name().parse::<u32>().unwrap());
                prop_assert_eq!(trie, table);
            }
        }

        /// Random virtual-router graphs: `check` refuses exactly those with a loop or a chain
        /// too deep, and on the others `resolve` follows the reference's chain.
        #[test]
        fn router_chains_resolve_or_are_refused(
            edges in proptest::collection::vec((0usize..6, 0usize..6, prefix()), 0..12),
            addrs in proptest::collection::vec(address(), 1..16),
        ) {
            let mut r = Routes::default();
            let name = |i: usize| format!("t{i}");
            for i in 0..6 {
                r.table_mut(&name(i))
                    .insert(&name(i), p("0.0.0.0/0"), Target::Vnic(format!("end{i}")))
                    .unwrap();
            }
            for (from, to, pre) in &edges {
                let _ = r.table_mut(&name(*from)).insert(&name(*from), *pre, Target::Router(name(*to)));
            }
            let errors = r.check(|_| true);
            // The reference: the longest chain from any table, or a cycle.
            fn depth(r: &Routes, t: &str, seen: &mut Vec<String>) -> Option<usize> {
                if seen.iter().any(|s| s == t) {
                    return None;
                }
                seen.push(t.to_string());
                let mut best = 0;
                for next in r.routers_of(t) {
                    best = best.max(1 + depth(r, next, seen)?);
                }
                seen.pop();
                Some(best)
            }
            let mut worst = Some(0);
            for i in 0..6 {
                worst = match (worst, depth(&r, &name(i), &mut Vec::new())) {
                    (Some(w), Some(d)) => Some(w.max(d)),
                    _ => None,
                };
            }
            let fine = worst.is_some_and(|w| w <= MAX_ROUTER_HOPS);
            prop_assert_eq!(errors.is_empty(), fine, "{:?}", errors);
            if fine {
                for a in addrs {
                    for i in 0..6 {
                        // Follow by hand with the reference lookup.
                        let mut at = name(i);
                        let target = loop {
                            let routes: Vec<(Prefix, u32)> = r.table(&at).unwrap().routes()
                                .enumerate().map(|(k, (p, _))| (*p, k as u32)).collect();
                            let (p, _) = reference(&routes, a).unwrap();
                            match r.table(&at).unwrap().routes().find(|(q, _)| **q == p).unwrap().1 {
                                Target::Router(n) => at = n.clone(),
                                t => break t.clone(),
                            }
                        };
                        let path = r.resolve(&name(i), a).unwrap().unwrap();
                        prop_assert_eq!(path.target, target);
                    }
                }
            }
        }
    }
}
