//! A rings worker's hold on the dataplane: its AF_XDP sockets in `XSK_SOCKS` and the queue
//! pairs it serves in `ROCE_QPS`, through the pinned maps (the worker is a process of its
//! own, beside the daemon).

use std::os::fd::AsRawFd;

use anyhow::Context as _;
use aya::maps::{HashMap as BpfHashMap, Map, MapData, XskMap};

use super::{
    PinDir,
    flows::pinned,
    key_missing,
    registry::{self, Registered},
};

pub struct RingsMaps {
    sockets: XskMap<MapData>,
    queue_pairs: BpfHashMap<MapData, u32, u32>,
}

impl RingsMaps {
    /// Opens the pinned maps of instance `pins` (its daemon must have started once).
    pub fn open(pins: &PinDir) -> anyhow::Result<RingsMaps> {
        Ok(RingsMaps {
            sockets: XskMap::try_from(Map::XskMap(pinned(pins, registry::XSK_SOCKS::NAME)?))?,
            queue_pairs: BpfHashMap::try_from(Map::HashMap(pinned(
                pins,
                registry::ROCE_QPS::NAME,
            )?))?,
        })
    }

    /// Receive queue `queue`'s RoCEv2 packets go to `socket`.
    pub fn set_socket(&mut self, queue: u32, socket: &impl AsRawFd) -> anyhow::Result<()> {
        self.sockets
            .set(queue, socket.as_raw_fd(), 0)
            .with_context(|| format!("cannot put the socket of queue {queue} in XSK_SOCKS"))
    }

    pub fn unset_socket(&mut self, queue: u32) -> anyhow::Result<()> {
        match self.sockets.unset(queue) {
            Err(e) if !key_missing(&e) => {
                Err(e).with_context(|| format!("cannot remove queue {queue} from XSK_SOCKS"))
            }
            _ => Ok(()),
        }
    }

    /// Packets to queue pair `qp` go to the worker (while it has a socket on their queue).
    pub fn serve(&mut self, qp: u32) -> anyhow::Result<()> {
        self.queue_pairs
            .insert(qp, 1, 0)
            .with_context(|| format!("cannot add queue pair {qp} to ROCE_QPS (table full?)"))
    }

    pub fn unserve(&mut self, qp: u32) -> anyhow::Result<()> {
        match self.queue_pairs.remove(&qp) {
            Err(e) if !key_missing(&e) => {
                Err(e).with_context(|| format!("cannot remove queue pair {qp} from ROCE_QPS"))
            }
            _ => Ok(()),
        }
    }

    /// The queue pairs served now.
    pub fn served(&self) -> Vec<u32> {
        self.queue_pairs.keys().filter_map(Result::ok).collect()
    }
}

fn io_error(e: anyhow::Error) -> std::io::Error {
    std::io::Error::other(format!("{e:#}"))
}

impl xnic_rings::worker::Steering for RingsMaps {
    fn set_socket(&mut self, queue: u32, socket: std::os::fd::RawFd) -> std::io::Result<()> {
        RingsMaps::set_socket(self, queue, &socket).map_err(io_error)
    }
    fn unset_socket(&mut self, queue: u32) -> std::io::Result<()> {
        RingsMaps::unset_socket(self, queue).map_err(io_error)
    }
    fn serve(&mut self, qp: u32) -> std::io::Result<()> {
        RingsMaps::serve(self, qp).map_err(io_error)
    }
    fn unserve(&mut self, qp: u32) -> std::io::Result<()> {
        RingsMaps::unserve(self, qp).map_err(io_error)
    }
}
