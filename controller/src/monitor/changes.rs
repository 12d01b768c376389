//! Changes of the kernel's forwarding decisions that offloaded flows depend on: the nftables
//! ruleset (a new generation after every committed transaction) and the routes and
//! neighbours next hops were resolved from. Flow offload re-decides what they affect.

use std::os::fd::AsRawFd as _;

use anyhow::Context as _;
use rtnetlink::sys::{
    Socket, SocketAddr,
    protocols::{NETLINK_NETFILTER, NETLINK_ROUTE},
};

use crate::netlink::messages;

/// linux/netfilter/nfnetlink.h: nftables' event group, its subsystem, and
/// linux/netfilter/nf_tables.h: the message that closes every committed transaction.
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;

/// linux/rtnetlink.h: the groups of route and neighbour changes.
const RTNLGRP_NEIGH: u32 = 3;
const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// What changed since the last look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// A new nftables ruleset generation (or events were lost).
    pub ruleset: bool,
    /// A route or a neighbour (or events were lost).
    pub forwarding: bool,
}

/// Two event sockets, read without blocking.
pub struct ChangeWatch {
    nftables: Socket,
    routes: Socket,
}

fn subscribe(protocol: isize, groups: &[u32], what: &str) -> anyhow::Result<Socket> {
    let mut socket = Socket::new(protocol).with_context(|| format!("cannot watch {what}"))?;
    socket
        .bind(&SocketAddr::new(0, 0))
        .with_context(|| format!("cannot bind a socket for {what}"))?;
    for &group in groups {
        socket
            .add_membership(group)
            .with_context(|| format!("cannot join the event group of {what} ({group})"))?;
    }
    socket
        .set_non_blocking(true)
        .with_context(|| format!("cannot make the socket for {what} non-blocking"))?;
    Ok(socket)
}

/// Reads what `socket` holds; whether any message matched `wanted` (or some were lost).
fn drain(socket: &mut Socket, wanted: impl Fn(u16) -> bool) -> bool {
    let mut seen = false;
    loop {
        match socket.recv_from_full() {
            Ok((data, _)) => {
                let Ok(msgs) = messages(&data) else {
                    seen = true;
                    continue;
                };
                seen |= msgs.iter().any(|m| wanted(m.message_type()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return seen,
            // ENOBUFS: the kernel dropped events; something may have changed.
            Err(_) => return true,
        }
    }
}

impl ChangeWatch {
    pub fn open() -> anyhow::Result<ChangeWatch> {
        Ok(ChangeWatch {
            nftables: subscribe(
                NETLINK_NETFILTER,
                &[NFNLGRP_NFTABLES],
                "the nftables ruleset",
            )?,
            routes: subscribe(
                NETLINK_ROUTE,
                &[RTNLGRP_NEIGH, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE],
                "routes and neighbours",
            )?,
        })
    }

    pub fn fds(&self) -> [i32; 2] {
        [self.nftables.as_raw_fd(), self.routes.as_raw_fd()]
    }

    /// What changed since the last call.
    pub fn read(&mut self) -> Changed {
        Changed {
            ruleset: drain(&mut self.nftables, |t| {
                t == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN
            }),
            // Every message on these groups is a route or neighbour change.
            forwarding: drain(&mut self.routes, |t| t >= 16),
        }
    }
}
