//! The control API: HTTP/JSON on a root-only Unix socket (`curl --unix-socket`), versioned
//! paths under `/v1`, and `GET /metrics` in Prometheus text format. The daemon serves it
//! (`daemon::http`); this is the client's side and the wire types.

pub mod client;
pub use xnic_proto::api as types;
