//! Pure decision code: inputs in, decisions out. No I/O and no clock reads, so every rule is
//! unit-tested and can be simulated at scale.

pub mod acl;
pub mod natgw;
pub mod offload;
pub mod plan;
pub mod route;
pub mod rss;
pub mod slots;
pub mod team;
pub mod vnic;
pub mod vnic_plan;
