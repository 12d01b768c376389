//! xnic's data shapes, with no logic beyond serde: the configuration schema ([`config`]), the
//! control API's requests, views and events ([`api`]) and the address types both use
//! ([`net`]). The daemon, the CLI and any other program that talks to xnic share these, so
//! none of them needs the dataplane or the daemon to speak the API.

pub mod api;
pub mod config;
pub mod net;
