//! Transaction rings: an application's remote-memory WRITEs and READs, as RoCEv2 packets
//! (`xnic-roce`), through shared-memory rings to a network worker that sends and receives
//! them on an AF_XDP socket.
//!
//! - [`client`]: the application's library: regions, queue pairs, WRITE and READ;
//! - [`control`]: the messages between applications and workers, and between workers;
//! - [`worker`]: the network worker's loop;
//! - [`engine`]: the worker's queue pairs and regions, frames in and out;
//! - [`entries`]: what the application's rings carry (work requests, completions);
//! - [`ring`]: single-producer single-consumer rings in shared memory with a doorbell;
//! - [`shm`]: memory shared with the worker (memfd), handed over a Unix socket;
//! - [`xsk`]: the AF_XDP socket: its packet buffer area (UMEM) and four rings, on the
//!   kernel's ABI directly (`libc`), copy mode.

pub mod client;
pub mod control;
pub mod engine;
pub mod entries;
pub mod ring;
pub mod shm;
pub mod worker;
pub mod xsk;
