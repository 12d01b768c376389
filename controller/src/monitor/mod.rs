//! What the daemon observes of the kernel: interfaces (rtnetlink), connections (ctnetlink)
//! and where CPU time goes (/proc).

pub mod changes;
pub mod conntrack;
pub mod cpu;
pub mod ct_mirror;
pub mod links;
pub mod nexthop;
