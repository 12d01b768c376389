//! RoCEv2 for xnic's transaction rings: the packets of RDMA WRITE and READ over a reliable
//! connection and the rules both ends follow, as plain data in and data out (no sockets, no
//! clocks) so that the worker, the tests and simulations share one implementation.
//!
//! - [`headers`]: BTH, RETH, AETH and the RC opcodes;
//! - [`icrc`]: the invariant CRC;
//! - [`packet`]: whole frames (Ethernet, IPv4 or IPv6, UDP 4791) built and taken apart;
//! - [`psn`]: 24-bit sequence numbers;
//! - [`requester`], [`responder`]: the two ends of a reliable connection (go-back-N);
//! - [`sim`]: a deterministic generator for simulations and tests.

pub mod headers;
pub mod icrc;
pub mod packet;
pub mod psn;
pub mod requester;
pub mod responder;
pub mod sim;
