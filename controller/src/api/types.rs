//! What the control API returns (`/v1/...`), shared by the daemon and the CLI.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use xnic_common::maps::Counter;

use crate::dataplane::AttachMode;

/// The API version in every path.
pub const API_PREFIX: &str = "/v1";

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

impl From<Counter> for Count {
    fn from(c: Counter) -> Self {
        Count {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

impl Count {
    pub fn plus(self, o: Count) -> Count {
        Count {
            packets: self.packets.wrapping_add(o.packets),
            bytes: self.bytes.wrapping_add(o.bytes),
        }
    }
}

/// Packets and bits per second over the last sampling period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub pps: f64,
    pub bps: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Uplink,
    Vm,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub instance: String,
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    pub config: String,
    pub netns: Option<String>,
    pub pin_dir: String,
    /// Layout version of the pinned maps.
    pub abi: u32,
    /// When the pinned dataplane was first created (Unix seconds): it outlives daemons.
    pub dataplane_created_unix: u64,
    /// Whether this daemon adopted a running dataplane rather than creating it.
    pub adopted: bool,
    pub cpus: usize,
    pub ports: Vec<PortStatus>,
    pub vms: usize,
    pub totals: Totals,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortStatus {
    pub name: String,
    pub role: Role,
    pub ifindex: u32,
    pub slot: u32,
    /// The VM this port belongs to (VM ports only).
    pub vm: Option<String>,
    /// Operationally up.
    pub up: bool,
    pub mtu: u32,
    /// How XDP runs here now, as the kernel reports it; `None` when nothing is attached.
    pub xdp_mode: Option<AttachMode>,
    /// Whether the attached program is this daemon's (false means someone replaced it).
    pub xdp_ours: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub passed: Count,
    pub dropped: Count,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    pub name: String,
    pub slot: u32,
    pub port: String,
    pub macs: Vec<String>,
    pub ips: Vec<String>,
    pub counters: VmCountersView,
    pub rates: VmRates,
    /// Verdicts on the VM's port, by reason (only reasons with traffic).
    pub port_reasons: BTreeMap<String, Count>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VmCountersView {
    /// Frames the VM sent, seen on its port.
    pub from_vm: Count,
    /// Frames for the VM, seen on uplinks.
    pub to_vm: Count,
    /// Frames dropped on the VM's port.
    pub dropped: Count,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VmRates {
    pub from_vm: Rate,
    pub to_vm: Rate,
    pub dropped: Rate,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    /// Length of the period the rates cover, in seconds (0 before the first sample).
    pub interval_secs: f64,
    pub ports: Vec<PortStats>,
    pub vms: Vec<VmStats>,
    /// Frames seen on interfaces xnic has no port entry for (a stale attachment): passed.
    pub unknown_port: Count,
    /// Frames each CPU processed (all ports), index = CPU number.
    pub cpus: Vec<Count>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortStats {
    pub name: String,
    pub role: Role,
    pub slot: u32,
    pub total: Count,
    pub rate: Rate,
    /// Frames and bytes by verdict reason (all reasons, zeros included).
    pub reasons: BTreeMap<String, Count>,
    /// Frames and bytes by notable shape (only shapes seen).
    pub shapes: BTreeMap<String, Count>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmStats {
    pub name: String,
    pub counters: VmCountersView,
    pub rates: VmRates,
}

/// Error body of every failed request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// Answer to `POST /v1/down`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DownView {
    pub links_removed: Vec<String>,
    pub maps_removed: usize,
}
