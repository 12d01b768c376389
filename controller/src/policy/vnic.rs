//! What VNIC routing does with a packet from a compute instance (SPEC §2.3), as a pure
//! model: which VNIC sent it, whether it may, and where it goes. The dataplane's stages are
//! tested against it.
//!
//! - The VNIC is the one whose VNI the packet arrived in and whose MAC it comes from; an inner
//!   source address that is not one of that VNIC's virtual IPs is spoofed.
//! - Inside its own VCN a packet goes straight to the VNIC that owns the destination (a VCN's
//!   own addresses are always local, whatever the route table says, as clouds do); a VCN
//!   address nobody owns has no route.
//! - Anything else goes by the VNIC's route table (its own, else its subnet's), through
//!   virtual routers, to a VNIC or a gateway.

use std::{collections::HashMap, net::IpAddr};

use super::route::{Prefix, RouteError, Routes, Target};

/// One VNIC as the model needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vnic {
    pub name: String,
    pub vcn: String,
    pub vni: u32,
    pub mac: [u8; 6],
    pub ips: Vec<IpAddr>,
    /// The VTEP of its compute instance's host.
    pub host: IpAddr,
    /// Its route table (own or subnet's).
    pub table: Option<String>,
}

/// Why a packet from a compute instance goes nowhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No VNIC with that MAC in that VNI.
    NoVnic,
    /// The VNIC's, but from an address that is not its own.
    SpoofedSource,
    /// Nothing routes the destination.
    NoRoute,
    /// The tables loop or chain too deep (a configuration the checks let through would be a
    /// bug; the dataplane stops counting all the same).
    RouterLimit,
}

/// Where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forward {
    /// To a VNIC: wrapped in its VNI to its host's VTEP.
    Vnic {
        vnic: String,
        vni: u32,
        vtep: IpAddr,
    },
    /// To a gateway, by kind and name.
    Gateway(Target),
}

/// The fleet's VNICs and route tables.
#[derive(Clone, Debug, Default)]
pub struct VnicModel {
    vnics: Vec<Vnic>,
    by_mac: HashMap<(u32, [u8; 6]), usize>,
    by_name: HashMap<String, usize>,
    /// (VCN, address) → VNIC.
    by_addr: HashMap<(String, IpAddr), usize>,
    /// Each VCN's prefixes.
    vcn_space: HashMap<String, Vec<Prefix>>,
    routes: Routes,
}

impl VnicModel {
    pub fn new(vnics: Vec<Vnic>, vcn_space: HashMap<String, Vec<Prefix>>, routes: Routes) -> Self {
        let mut m = VnicModel {
            vcn_space,
            routes,
            ..VnicModel::default()
        };
        for (i, v) in vnics.iter().enumerate() {
            m.by_mac.insert((v.vni, v.mac), i);
            m.by_name.insert(v.name.clone(), i);
            for a in &v.ips {
                m.by_addr.insert((v.vcn.clone(), *a), i);
            }
        }
        m.vnics = vnics;
        m
    }

    fn to_vnic(&self, i: usize) -> Forward {
        let v = &self.vnics[i];
        Forward::Vnic {
            vnic: v.name.clone(),
            vni: v.vni,
            vtep: v.host,
        }
    }

    /// A packet from a compute instance: arrived in `vni` from `src_mac`, inner source `src`,
    /// for `dst`.
    pub fn from_instance(
        &self,
        vni: u32,
        src_mac: [u8; 6],
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<Forward, Refused> {
        let &i = self.by_mac.get(&(vni, src_mac)).ok_or(Refused::NoVnic)?;
        let v = &self.vnics[i];
        if !v.ips.contains(&src) {
            return Err(Refused::SpoofedSource);
        }
        let in_vcn = self
            .vcn_space
            .get(&v.vcn)
            .is_some_and(|space| space.iter().any(|p| p.contains(dst)));
        if in_vcn {
            return match self.by_addr.get(&(v.vcn.clone(), dst)) {
                Some(&j) => Ok(self.to_vnic(j)),
                None => Err(Refused::NoRoute),
            };
        }
        let table = v.table.as_deref().ok_or(Refused::NoRoute)?;
        match self.routes.resolve(table, dst) {
            Ok(Some(path)) => match path.target {
                Target::Vnic(name) => self
                    .by_name
                    .get(&name)
                    .map(|&j| self.to_vnic(j))
                    .ok_or(Refused::NoRoute),
                gateway => Ok(Forward::Gateway(gateway)),
            },
            Ok(None) | Err(RouteError::NoTable(_)) => Err(Refused::NoRoute),
            Err(_) => Err(Refused::RouterLimit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn model() -> VnicModel {
        let vnic = |name: &str, vcn: &str, vni, last: u8, ip: &str, table: Option<&str>| Vnic {
            name: name.into(),
            vcn: vcn.into(),
            vni,
            mac: [2, 0, 0, 0, 0, last],
            ips: vec![a(ip)],
            host: a(&format!("192.0.2.{last}")),
            table: table.map(str::to_string),
        };
        let vnics = vec![
            vnic("web1", "prod", 100, 1, "10.0.1.10", Some("web")),
            vnic("db1", "prod", 100, 2, "10.0.2.10", None),
            // Another VCN reusing the same addresses, told apart by its VNI.
            vnic("dev1", "dev", 200, 3, "10.0.1.10", Some("dev")),
            vnic("hub1", "hub", 300, 4, "172.16.0.10", None),
        ];
        let mut space = HashMap::new();
        space.insert("prod".to_string(), vec!["10.0.0.0/16".parse().unwrap()]);
        space.insert("dev".to_string(), vec!["10.0.0.0/16".parse().unwrap()]);
        space.insert("hub".to_string(), vec!["172.16.0.0/16".parse().unwrap()]);
        let mut routes = Routes::default();
        let web = routes.table_mut("web");
        web.insert(
            "web",
            "0.0.0.0/0".parse().unwrap(),
            Target::InternetGateway("igw".into()),
        )
        .unwrap();
        web.insert(
            "web",
            "172.16.0.0/12".parse().unwrap(),
            Target::Router("transit".into()),
        )
        .unwrap();
        routes
            .table_mut("transit")
            .insert(
                "transit",
                "172.16.0.10/32".parse().unwrap(),
                Target::Vnic("hub1".into()),
            )
            .unwrap();
        routes
            .table_mut("dev")
            .insert(
                "dev",
                "0.0.0.0/0".parse().unwrap(),
                Target::NatGateway("nat".into()),
            )
            .unwrap();
        VnicModel::new(vnics, space, routes)
    }

    #[test]
    fn a_vcn_is_local_and_the_rest_goes_by_the_route_table() {
        let m = model();
        let web = [2, 0, 0, 0, 0, 1];
        assert_eq!(
            m.from_instance(100, web, a("10.0.1.10"), a("10.0.2.10")),
            Ok(Forward::Vnic {
                vnic: "db1".into(),
                vni: 100,
                vtep: a("192.0.2.2")
            })
        );
        assert_eq!(
            m.from_instance(100, web, a("10.0.1.10"), a("198.51.100.1")),
            Ok(Forward::Gateway(Target::InternetGateway("igw".into())))
        );
        // Through a virtual router to a VNIC of another VCN.
        assert_eq!(
            m.from_instance(100, web, a("10.0.1.10"), a("172.16.0.10")),
            Ok(Forward::Vnic {
                vnic: "hub1".into(),
                vni: 300,
                vtep: a("192.0.2.4")
            })
        );
        // A VCN address nobody has, and a route table that has nothing for it.
        assert_eq!(
            m.from_instance(100, web, a("10.0.1.10"), a("10.0.9.9")),
            Err(Refused::NoRoute)
        );
        assert_eq!(
            m.from_instance(100, web, a("10.0.1.10"), a("172.16.0.99")),
            Err(Refused::NoRoute)
        );
        // db1 has no route table: only its VCN.
        let db = [2, 0, 0, 0, 0, 2];
        assert_eq!(
            m.from_instance(100, db, a("10.0.2.10"), a("198.51.100.1")),
            Err(Refused::NoRoute)
        );
    }

    #[test]
    fn the_vni_and_mac_say_who_sent_it_and_its_addresses_what_it_may_send() {
        let m = model();
        // The same address in another VCN is another VNIC, with its own table.
        assert_eq!(
            m.from_instance(200, [2, 0, 0, 0, 0, 3], a("10.0.1.10"), a("198.51.100.1")),
            Ok(Forward::Gateway(Target::NatGateway("nat".into())))
        );
        // web1's MAC in dev's VNI is nobody.
        assert_eq!(
            m.from_instance(200, [2, 0, 0, 0, 0, 1], a("10.0.1.10"), a("10.0.2.10")),
            Err(Refused::NoVnic)
        );
        // web1 sending as db1.
        assert_eq!(
            m.from_instance(100, [2, 0, 0, 0, 0, 1], a("10.0.2.10"), a("198.51.100.1")),
            Err(Refused::SpoofedSource)
        );
    }
}
