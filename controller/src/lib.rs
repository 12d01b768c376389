//! xnic's controller: the daemon, the CLI, and the lab. The `xnic` binary is a thin wrapper
//! around [`cli::dispatch`]; tests and benchmarks use the modules directly.

pub mod announce;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod events;
pub mod features;
pub mod lab;
pub mod logging;
pub mod model;
pub mod monitor;
pub mod netlink;
pub mod netns;
pub mod policy;
pub mod reconcile;
pub mod worker;

pub use xnic_proto::net;

/// Runtime directory: control sockets, instance locks and the lab's generated configuration.
pub const RUN_DIR: &str = "/run/xnic";

/// Where each instance keeps its desired state across restarts (`<instance>/desired.toml`).
pub const STATE_DIR: &str = "/var/lib/xnic";
