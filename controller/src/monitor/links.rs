//! Interface state from the kernel over rtnetlink: index, operational state, MTU, and which
//! XDP program runs in which mode.

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, State, XdpAttached};
use serde::{Deserialize, Serialize};

use crate::dataplane::AttachMode;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub name: String,
    pub ifindex: u32,
    /// Operationally up (carrier and admin up).
    pub up: bool,
    pub mtu: u32,
    /// The XDP program attached, if any.
    pub xdp: Option<XdpState>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpState {
    pub prog_id: u32,
    pub mode: AttachMode,
}

/// A netlink connection in the calling thread's network namespace.
#[derive(Clone)]
pub struct Links {
    handle: rtnetlink::Handle,
}

impl Links {
    /// Opens the connection; its driver runs on the current tokio runtime.
    pub fn connect() -> anyhow::Result<Links> {
        let (conn, handle, _) =
            rtnetlink::new_connection().context("cannot open a netlink socket")?;
        tokio::spawn(conn);
        Ok(Links { handle })
    }

    /// The state of interface `name`, or `None` when there is no such interface.
    pub async fn get(&self, name: &str) -> anyhow::Result<Option<LinkState>> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(link_state(&msg))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.code.map(|c| c.get()) == Some(-libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).with_context(|| format!("netlink query for {name} failed")),
        }
    }

    /// Every interface in the namespace.
    pub async fn all(&self) -> anyhow::Result<Vec<LinkState>> {
        let mut out = Vec::new();
        let mut stream = self.handle.link().get().execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .context("netlink link dump failed")?
        {
            out.push(link_state(&msg));
        }
        Ok(out)
    }
}

/// A subscription to link changes as the kernel announces them (RTNLGRP_LINK). Events queue
/// in the socket from [`LinkWatch::subscribe`] on, so nothing between subscribing and
/// [`LinkWatch::run`] is missed.
pub struct LinkWatch {
    socket: rtnetlink::sys::Socket,
}

impl LinkWatch {
    pub fn subscribe() -> anyhow::Result<LinkWatch> {
        use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
        let mut socket = Socket::new(NETLINK_ROUTE).context("cannot open a netlink socket")?;
        socket
            .bind(&SocketAddr::new(0, 0))
            .context("cannot bind a netlink socket")?;
        socket
            .add_membership(RTNLGRP_LINK)
            .context("cannot subscribe to netlink link events")?;
        Ok(LinkWatch { socket })
    }

    /// Calls `on_change(ifindex, operationally up)` for every RTM_NEWLINK, with no polling
    /// delay; the caller filters repeats.
    ///
    /// The watcher is a thread of its own, blocked in `recv` on the netlink socket: a carrier
    /// loss reaches `on_change` with one wake-up, not through an async reactor and a thread
    /// pool, and at real-time priority when the system allows it, so a busy host does not
    /// delay a failover behind ordinary work.
    pub fn run(
        self,
        mut on_change: impl FnMut(u32, bool) + Send + 'static,
    ) -> anyhow::Result<std::thread::JoinHandle<()>> {
        let socket = self.socket;
        std::thread::Builder::new()
        .name("xnic-links".into())
        .spawn(move || {
            raise_priority();
            let mut buf = vec![0u8; LINK_EVENT_BUFFER];
            loop {
                buf.clear();
                match socket.recv(&mut buf, 0) {
                    Ok(_) => {
                        for (ifindex, up) in link_changes(&buf) {
                            on_change(ifindex, up);
                        }
                    }
                    // The kernel dropped events (ENOBUFS): no way to know which; the next
                    // change of each link still arrives, and periods re-read state.
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        tracing::warn!("netlink link events overflowed; some were lost");
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "netlink link events ended: team failover now waits for the next restart");
                        return;
                    }
                }
            }
        })
        .context("cannot start the link watcher thread")
    }
}

/// The netlink multicast group of link changes (`RTNLGRP_LINK` in linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;
/// One datagram of link events: the kernel sends each RTM_NEWLINK on its own, well under this
/// (a link message with every attribute is a few KiB).
const LINK_EVENT_BUFFER: usize = 64 * 1024;
/// Real-time priority of the link watcher: above every ordinary thread, well below the
/// kernel's own real-time threads (which default to 50).
const LINK_WATCH_PRIORITY: i32 = 10;

/// (ifindex, up) of every RTM_NEWLINK in one netlink datagram.
fn link_changes(mut buf: &[u8]) -> Vec<(u32, bool)> {
    use rtnetlink::{
        packet_core::{NetlinkMessage, NetlinkPayload},
        packet_route::RouteNetlinkMessage,
    };
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len])
            && let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) = msg.payload
        {
            let state = link_state(&link);
            out.push((state.ifindex, state.up));
        }
        // Messages are 4-byte aligned.
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
}

/// Moves the calling thread to SCHED_FIFO; without the privilege it stays where it is.
fn raise_priority() {
    let param = libc::sched_param {
        sched_priority: LINK_WATCH_PRIORITY,
    };
    // SAFETY: sched_setscheduler(2) on the calling thread (pid 0) with a valid parameter.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "link watcher stays at normal priority");
    }
}

fn link_state(msg: &LinkMessage) -> LinkState {
    let mut state = LinkState {
        name: String::new(),
        ifindex: msg.header.index,
        up: false,
        mtu: 0,
        xdp: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => state.name = n.clone(),
            LinkAttribute::Mtu(m) => state.mtu = *m,
            LinkAttribute::OperState(s) => state.up = matches!(s, State::Up | State::Unknown),
            LinkAttribute::Xdp(xdp) => state.xdp = xdp_state(xdp),
            _ => {}
        }
    }
    state
}

fn xdp_state(attrs: &[LinkXdp]) -> Option<XdpState> {
    let mut mode = None;
    let mut prog_id = None;
    for a in attrs {
        match a {
            LinkXdp::Attached(XdpAttached::Driver) => mode = Some(AttachMode::Native),
            LinkXdp::Attached(XdpAttached::SocketBuffer) => mode = Some(AttachMode::Generic),
            LinkXdp::ProgId(id) => prog_id = Some(*id),
            _ => {}
        }
    }
    Some(XdpState {
        prog_id: prog_id?,
        mode: mode?,
    })
}

#[cfg(test)]
mod tests {
    use rtnetlink::{
        packet_core::NetlinkMessage,
        packet_route::{RouteNetlinkMessage, link::LinkMessage},
    };

    use super::*;

    fn new_link(ifindex: u32, state: State) -> Vec<u8> {
        let mut link = LinkMessage::default();
        link.header.index = ifindex;
        link.attributes
            .push(LinkAttribute::IfName(format!("up{ifindex}")));
        link.attributes.push(LinkAttribute::OperState(state));
        let mut msg = NetlinkMessage::from(RouteNetlinkMessage::NewLink(link));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn every_new_link_in_a_datagram_is_reported_in_order() {
        let mut datagram = new_link(7, State::LowerLayerDown);
        datagram.extend(new_link(9, State::Up));
        assert_eq!(link_changes(&datagram), vec![(7, false), (9, true)]);
    }

    #[test]
    fn other_messages_and_truncated_ones_are_skipped() {
        let mut other = NetlinkMessage::from(RouteNetlinkMessage::DelLink(LinkMessage::default()));
        other.finalize();
        let mut datagram = vec![0; other.buffer_len()];
        other.serialize(&mut datagram);
        datagram.extend(new_link(3, State::Up));
        let whole = datagram.len();
        datagram.extend(&new_link(4, State::Up)[..20]);
        assert_eq!(link_changes(&datagram), vec![(3, true)]);
        assert_eq!(link_changes(&datagram[..whole - 1]), vec![]);
    }
}
