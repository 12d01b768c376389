//! The control API: HTTP/JSON on a root-only Unix socket (`curl --unix-socket`), versioned
//! paths under `/v1`, and `GET /metrics` in Prometheus text format.

pub mod client;
pub mod metrics;
pub mod server;
pub mod types;
