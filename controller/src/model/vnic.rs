//! Runtime changes to VNIC routing's part of the desired state: VNICs, routes and security
//! rules. Only what a change itself gets wrong is refused here (a name that does not exist,
//! one that exists already, an index past the end); the whole result is validated by the
//! caller like a configuration file, which refuses overlaps, unknown next hops and loops
//! between virtual routers.

use serde::{Deserialize, Serialize};
use xnic_proto::config::{Config, RouteConfig, RuleConfig, VnicConfig};

use super::{Refusal, names};
use crate::policy::route::Prefix;

/// A direction of a security list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleDirection {
    Ingress,
    Egress,
}

impl RuleDirection {
    pub fn parse(text: &str) -> Result<RuleDirection, Refusal> {
        match text {
            "ingress" => Ok(RuleDirection::Ingress),
            "egress" => Ok(RuleDirection::Egress),
            other => Err(Refusal::Invalid(format!(
                "direction {other:?}: use \"ingress\" (toward the VNIC) or \"egress\" (from it)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RuleDirection::Ingress => "ingress",
            RuleDirection::Egress => "egress",
        }
    }
}

/// VNIC routing's changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum VnicChange {
    AddVnic(Box<VnicConfig>),
    DelVnic(String),
    AddRoute {
        table: String,
        route: RouteConfig,
    },
    DelRoute {
        table: String,
        dst: String,
    },
    AddRule {
        list: String,
        direction: RuleDirection,
        rule: RuleConfig,
        at: Option<usize>,
    },
    DelRule {
        list: String,
        direction: RuleDirection,
        index: usize,
    },
}

impl VnicChange {
    pub fn describe(&self) -> String {
        match self {
            VnicChange::AddVnic(v) => format!("add VNIC {}", v.name),
            VnicChange::DelVnic(n) => format!("remove VNIC {n}"),
            VnicChange::AddRoute { table, route } => {
                format!("route {} via {} in table {table}", route.dst, route.via)
            }
            VnicChange::DelRoute { table, dst } => format!("remove route {dst} from table {table}"),
            VnicChange::AddRule {
                list, direction, ..
            } => format!("add a rule to {} of security list {list}", direction.name()),
            VnicChange::DelRule {
                list,
                direction,
                index,
            } => format!(
                "remove rule {index} of {} of security list {list}",
                direction.name()
            ),
        }
    }
}

fn same_prefix(a: &str, b: &str) -> bool {
    match (a.parse::<Prefix>(), b.parse::<Prefix>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// `c` with `change` made.
pub fn apply(c: &mut Config, change: &VnicChange) -> Result<(), Refusal> {
    match change {
        VnicChange::AddVnic(v) => {
            if c.vnics.iter().any(|n| n.name == v.name) {
                return Err(Refusal::Conflict(format!(
                    "a VNIC named {:?} exists; remove it first to change it",
                    v.name
                )));
            }
            c.vnics.push((**v).clone());
        }
        VnicChange::DelVnic(name) => {
            if !c.vnics.iter().any(|n| &n.name == name) {
                return Err(Refusal::NotFound(format!(
                    "no VNIC named {name:?}; known VNICs: {}",
                    names(c.vnics.iter().map(|v| v.name.as_str()))
                )));
            }
            let via = format!("vnic:{name}");
            let routed: Vec<String> = c
                .route_tables
                .iter()
                .flat_map(|t| {
                    t.routes
                        .iter()
                        .filter(|r| r.via == via)
                        .map(move |r| format!("{} in table {}", r.dst, t.name))
                })
                .collect();
            if !routed.is_empty() {
                return Err(Refusal::Conflict(format!(
                    "VNIC {name:?} is the next hop of {}: remove or change those routes first",
                    routed.join(", ")
                )));
            }
            c.vnics.retain(|v| &v.name != name);
        }
        VnicChange::AddRoute { table, route } => {
            let known = names(c.route_tables.iter().map(|t| t.name.as_str()));
            let t = c
                .route_tables
                .iter_mut()
                .find(|t| &t.name == table)
                .ok_or_else(|| {
                    Refusal::NotFound(format!(
                        "no route table named {table:?}; known tables: {known}"
                    ))
                })?;
            if t.routes.iter().any(|r| same_prefix(&r.dst, &route.dst)) {
                return Err(Refusal::Conflict(format!(
                    "table {table:?} routes {} already; remove that route first to change it",
                    route.dst
                )));
            }
            t.routes.push(route.clone());
        }
        VnicChange::DelRoute { table, dst } => {
            let t = c
                .route_tables
                .iter_mut()
                .find(|t| &t.name == table)
                .ok_or_else(|| Refusal::NotFound(format!("no route table named {table:?}")))?;
            let before = t.routes.len();
            t.routes.retain(|r| !same_prefix(&r.dst, dst));
            if t.routes.len() == before {
                return Err(Refusal::NotFound(format!(
                    "table {table:?} has no route for {dst}; it routes {}",
                    names(t.routes.iter().map(|r| r.dst.as_str()))
                )));
            }
        }
        VnicChange::AddRule {
            list,
            direction,
            rule,
            at,
        } => {
            let rules = rules_of(c, list, *direction)?;
            let at = at.unwrap_or(rules.len());
            if at > rules.len() {
                return Err(Refusal::Invalid(format!(
                    "position {at}: {list:?} has {} {} rules (0 puts it first, {} last)",
                    rules.len(),
                    direction.name(),
                    rules.len()
                )));
            }
            rules.insert(at, rule.clone());
        }
        VnicChange::DelRule {
            list,
            direction,
            index,
        } => {
            let rules = rules_of(c, list, *direction)?;
            if *index >= rules.len() {
                return Err(Refusal::NotFound(format!(
                    "{list:?} has {} {} rules; rule {index} does not exist (they count from 0)",
                    rules.len(),
                    direction.name()
                )));
            }
            rules.remove(*index);
        }
    }
    Ok(())
}

fn rules_of<'a>(
    c: &'a mut Config,
    list: &str,
    direction: RuleDirection,
) -> Result<&'a mut Vec<RuleConfig>, Refusal> {
    let known = names(c.security_lists.iter().map(|l| l.name.as_str()));
    let l = c
        .security_lists
        .iter_mut()
        .find(|l| l.name == list)
        .ok_or_else(|| {
            Refusal::NotFound(format!(
                "no security list named {list:?}; known lists: {known}"
            ))
        })?;
    Ok(match direction {
        RuleDirection::Ingress => &mut l.ingress,
        RuleDirection::Egress => &mut l.egress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Config {
        let lab = crate::lab::fleet::FleetLab::new("t");
        crate::config::parse(&lab.config(0), std::path::Path::new("fleet.toml")).unwrap()
    }

    fn refused(change: VnicChange) -> Refusal {
        let mut c = fleet();
        apply(&mut c, &change).expect_err("refused")
    }

    #[test]
    fn changes_that_name_nothing_or_something_taken_are_refused() {
        let c = fleet();
        let web1 = c.vnics[0].clone();
        assert!(matches!(
            refused(VnicChange::AddVnic(Box::new(web1))),
            Refusal::Conflict(m) if m.contains("exists")
        ));
        assert!(matches!(
            refused(VnicChange::DelVnic("web1".into())),
            Refusal::Conflict(m) if m.contains("10.0.1.10/32 in table hub")
        ));
        assert!(matches!(
            refused(VnicChange::DelVnic("nope".into())),
            Refusal::NotFound(m) if m.contains("known VNICs: web1, db1, hub1")
        ));
        let route = |dst: &str| RouteConfig {
            dst: dst.into(),
            via: "igw:internet".into(),
        };
        assert!(matches!(
            refused(VnicChange::AddRoute { table: "nope".into(), route: route("10.9.0.0/16") }),
            Refusal::NotFound(m) if m.contains("known tables")
        ));
        assert!(matches!(
            refused(VnicChange::AddRoute { table: "web".into(), route: route("0.0.0.0/0") }),
            Refusal::Conflict(m) if m.contains("already")
        ));
        assert!(matches!(
            refused(VnicChange::DelRoute {
                table: "web".into(),
                dst: "10.9.0.0/16".into()
            }),
            Refusal::NotFound(_)
        ));
        assert!(matches!(
            refused(VnicChange::DelRule {
                list: "db".into(),
                direction: RuleDirection::Ingress,
                index: 9,
            }),
            Refusal::NotFound(m) if m.contains("count from 0")
        ));
        assert!(RuleDirection::parse("sideways").is_err());
    }

    #[test]
    fn changes_land_where_they_say() {
        let mut c = fleet();
        apply(
            &mut c,
            &VnicChange::DelRoute {
                table: "web".into(),
                dst: "192.168.0.0/16".into(),
            },
        )
        .unwrap();
        assert!(
            !c.route_tables[0]
                .routes
                .iter()
                .any(|r| r.dst == "192.168.0.0/16")
        );
        let rule: RuleConfig =
            serde_json::from_value(serde_json::json!({"action": "deny", "cidr": "10.0.1.99/32"}))
                .unwrap();
        apply(
            &mut c,
            &VnicChange::AddRule {
                list: "db".into(),
                direction: RuleDirection::Ingress,
                rule: rule.clone(),
                at: Some(0),
            },
        )
        .unwrap();
        let db = c.security_lists.iter().find(|l| l.name == "db").unwrap();
        assert_eq!(db.ingress[0], rule);
        crate::config::validate::validate(&c).expect("still valid");
    }
}
