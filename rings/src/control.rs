//! The messages between an application and its worker (a Unix socket, one JSON object a
//! message, descriptors alongside), and between the workers of two hosts (UDP, one JSON
//! object a datagram) that set queue pairs up and look regions up.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The UDP port workers talk to each other on (beside RoCEv2's 4791; it goes through the
/// kernel, not the AF_XDP socket).
pub const CM_PORT: u16 = 4792;

/// The largest message either socket carries.
pub const MAX_MESSAGE: usize = 4096;

/// What an application asks its worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Register the memfd sent along as region `name` (peers find it by that name).
    Register {
        name: String,
    },
    Deregister {
        id: u32,
    },
    /// A queue pair to the worker at `peer`; its rings come back along with the answer.
    Connect {
        peer: IpAddr,
    },
    /// Region `name` at `peer`.
    Lookup {
        peer: IpAddr,
        name: String,
    },
    Status,
}

/// A region registered here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionInfo {
    pub id: u32,
    pub name: String,
    pub len: u64,
    pub rkey: u32,
}

/// What the worker answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Region(RegionInfo),
    Done,
    /// The queue pair's numbers; its rings (submission memory and doorbell, completion
    /// memory and doorbell) come along as descriptors.
    QueuePair {
        qp: u32,
        peer_qp: u32,
    },
    Remote {
        rkey: u32,
        len: u64,
    },
    Status(WorkerStatus),
    Error(String),
}

/// `xnic rings status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub interface: String,
    pub queue: u32,
    pub address: String,
    pub regions: Vec<RegionInfo>,
    pub queue_pairs: Vec<QpStatus>,
    pub received: u64,
    pub sent: u64,
    pub retransmitted: u64,
    pub timeouts: u64,
    pub dropped: std::collections::BTreeMap<String, u64>,
    pub completed: std::collections::BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpStatus {
    pub qp: u32,
    pub peer: String,
    pub peer_qp: u32,
    #[serde(default)]
    pub mtu: u32,
    /// Work requests taken and not completed.
    #[serde(default)]
    pub in_flight: u64,
    #[serde(default)]
    pub sent: u64,
    #[serde(default)]
    pub retransmitted: u64,
    #[serde(default)]
    pub timeouts: u64,
}

/// Between workers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cm {
    /// Open a queue pair toward my `qp`, whose requests start at `psn`; my path MTU is
    /// at most `mtu`.
    Connect {
        qp: u32,
        psn: u32,
        #[serde(default = "first_mtu")]
        mtu: u32,
    },
    /// Yours is `qp`, its requests start at `psn`; both ends use `mtu` (the smaller).
    Accept {
        qp: u32,
        psn: u32,
        #[serde(default = "first_mtu")]
        mtu: u32,
    },
    Lookup {
        name: String,
    },
    Found {
        rkey: u32,
        len: u64,
    },
    Refused(String),
}

/// The MTU of workers that did not say (the first release's only one).
fn first_mtu() -> u32 {
    1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_from_a_worker_that_names_no_mtu_is_at_the_first_releases() {
        let old: (u64, Cm) = serde_json::from_str(r#"[7,{"connect":{"qp":5,"psn":9}}]"#).unwrap();
        assert_eq!(
            old,
            (
                7,
                Cm::Connect {
                    qp: 5,
                    psn: 9,
                    mtu: 1024
                }
            )
        );
        let new = Cm::Accept {
            qp: 1,
            psn: 2,
            mtu: 2048,
        };
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<Cm>(&text).unwrap(), new);
    }
}
