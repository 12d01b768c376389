//! xnic's controller: the daemon, the CLI, and the lab. The `xnic` binary is a thin wrapper
//! around [`cli::dispatch`]; tests and benchmarks use the modules directly.

pub mod announce;
pub mod api;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod lab;
pub mod logging;
pub mod monitor;
pub mod net;
pub mod netns;
pub mod policy;

/// Runtime directory: control sockets and the lab's generated configuration.
pub const RUN_DIR: &str = "/run/xnic";
