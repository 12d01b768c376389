//! Interface state from the kernel over rtnetlink: index, operational state, MTU, and which
//! XDP program runs in which mode; and the kernel's announcements of interfaces appearing,
//! changing and going away.

use anyhow::Context as _;
use futures::TryStreamExt as _;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, State, XdpAttached};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;
use xnic_proto::config::AttachMode;

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

    /// Every address of the namespace's interfaces.
    pub async fn addresses(&self) -> anyhow::Result<Vec<std::net::IpAddr>> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let mut out = Vec::new();
        let mut stream = self.handle.address().get().execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .context("netlink address dump failed")?
        {
            for a in msg.attributes {
                if let AddressAttribute::Address(ip) | AddressAttribute::Local(ip) = a
                    && !out.contains(&ip)
                {
                    out.push(ip);
                }
            }
        }
        Ok(out)
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

/// What the kernel announced about one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// RTM_NEWLINK: it appeared or changed (state, name, XDP program).
    New(LinkState),
    /// RTM_DELLINK: it is gone.
    Del(LinkState),
}

/// The interfaces of one network namespace as last announced, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interfaces {
    by_name: BTreeMap<String, LinkState>,
}

impl Interfaces {
    pub fn new(links: impl IntoIterator<Item = LinkState>) -> Interfaces {
        Interfaces {
            by_name: links.into_iter().map(|l| (l.name.clone(), l)).collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&LinkState> {
        self.by_name.get(name)
    }

    pub fn by_ifindex(&self, ifindex: u32) -> Option<&LinkState> {
        self.by_name.values().find(|l| l.ifindex == ifindex)
    }

    pub fn iter(&self) -> impl Iterator<Item = &LinkState> {
        self.by_name.values()
    }

    /// Takes `event` in; returns the state the interface had before (by name, or by index
    /// for a rename), if it existed.
    pub fn apply(&mut self, event: &LinkEvent) -> Option<LinkState> {
        match event {
            LinkEvent::New(state) => {
                let renamed = self
                    .by_name
                    .iter()
                    .find(|(n, l)| l.ifindex == state.ifindex && **n != state.name)
                    .map(|(n, _)| n.clone());
                let before = renamed.and_then(|n| self.by_name.remove(&n));
                let same = self.by_name.insert(state.name.clone(), state.clone());
                same.or(before)
            }
            LinkEvent::Del(state) => match self.by_name.get(&state.name) {
                Some(l) if l.ifindex == state.ifindex => self.by_name.remove(&state.name),
                _ => None,
            },
        }
    }

    /// Records that this instance's program now runs on `name` in `mode` (`None`: nothing).
    pub fn set_xdp(&mut self, name: &str, xdp: Option<XdpState>) {
        if let Some(l) = self.by_name.get_mut(name) {
            l.xdp = xdp;
        }
    }
}

/// A subscription to link changes as the kernel announces them (RTNLGRP_LINK). Events queue
/// in the socket from [`LinkWatch::subscribe`] on, so nothing between subscribing and the
/// first [`LinkWatch::read`] is missed. The socket does not block: its owner polls
/// [`LinkWatch::fd`] beside its other work, so a carrier loss reaches it with one wake-up.
pub struct LinkWatch {
    socket: rtnetlink::sys::Socket,
    buf: Vec<u8>,
}

/// What [`LinkWatch::read`] found.
#[derive(Debug, Default)]
pub struct LinkRead {
    pub events: Vec<LinkEvent>,
    /// The kernel dropped events (ENOBUFS): which is unknown, so the state must be re-read.
    pub overflowed: bool,
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
        socket
            .set_non_blocking(true)
            .context("cannot make the netlink socket non-blocking")?;
        Ok(LinkWatch {
            socket,
            buf: Vec::with_capacity(LINK_EVENT_BUFFER),
        })
    }

    /// The socket, to poll for readability.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd as _;
        self.socket.as_fd()
    }

    /// Every event queued now, without waiting.
    pub fn read(&mut self) -> anyhow::Result<LinkRead> {
        let mut out = LinkRead::default();
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => out.events.extend(link_changes(&self.buf)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => out.overflowed = true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading netlink link events failed"),
            }
        }
    }
}

/// Moves the calling thread to SCHED_FIFO at [`EVENT_THREAD_PRIORITY`] (so a busy host does
/// not delay a failover behind ordinary work); without the privilege it stays where it is.
pub fn raise_priority() {
    if let Err(e) = set_realtime(EVENT_THREAD_PRIORITY) {
        tracing::debug!(error = %e, "the reconciler stays at normal priority");
    }
}

/// Moves the calling thread (and the threads it starts later) to SCHED_FIFO at `priority`.
pub fn set_realtime(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler(2) on the calling thread (pid 0) with a valid parameter.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The netlink multicast group of link changes (`RTNLGRP_LINK` in linux/rtnetlink.h).
const RTNLGRP_LINK: u32 = 1;
/// One datagram of link events: the kernel sends each RTM_NEWLINK on its own, well under this
/// (a link message with every attribute is a few KiB).
const LINK_EVENT_BUFFER: usize = 64 * 1024;
/// Real-time priority of the thread that handles link events: above every ordinary thread,
/// well below the kernel's own real-time threads (which default to 50).
pub const EVENT_THREAD_PRIORITY: i32 = 10;

/// Every RTM_NEWLINK and RTM_DELLINK in one netlink datagram.
pub fn link_changes(mut buf: &[u8]) -> Vec<LinkEvent> {
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
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]) {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    out.push(LinkEvent::New(link_state(&link)));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                    out.push(LinkEvent::Del(link_state(&link)));
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned.
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
    }
    out
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

    fn up_of(events: &[LinkEvent]) -> Vec<(u32, bool)> {
        events
            .iter()
            .filter_map(|e| match e {
                LinkEvent::New(l) => Some((l.ifindex, l.up)),
                LinkEvent::Del(_) => None,
            })
            .collect()
    }

    #[test]
    fn every_new_link_in_a_datagram_is_reported_in_order() {
        let mut datagram = new_link(7, State::LowerLayerDown);
        datagram.extend(new_link(9, State::Up));
        assert_eq!(up_of(&link_changes(&datagram)), vec![(7, false), (9, true)]);
    }

    #[test]
    fn deleted_links_are_reported_and_truncated_messages_skipped() {
        let mut del = LinkMessage::default();
        del.header.index = 5;
        del.attributes.push(LinkAttribute::IfName("tap5".into()));
        let mut other = NetlinkMessage::from(RouteNetlinkMessage::DelLink(del));
        other.finalize();
        let mut datagram = vec![0; other.buffer_len()];
        other.serialize(&mut datagram);
        datagram.extend(new_link(3, State::Up));
        let whole = datagram.len();
        datagram.extend(&new_link(4, State::Up)[..20]);
        let events = link_changes(&datagram);
        assert!(matches!(&events[0], LinkEvent::Del(l) if l.ifindex == 5 && l.name == "tap5"));
        assert_eq!(up_of(&events), vec![(3, true)]);
        assert_eq!(up_of(&link_changes(&datagram[..whole - 1])), vec![]);
    }

    fn state(name: &str, ifindex: u32) -> LinkState {
        LinkState {
            name: name.into(),
            ifindex,
            up: true,
            mtu: 1500,
            xdp: None,
        }
    }

    #[test]
    fn interfaces_follow_creation_recreation_renames_and_deletion() {
        let mut i = Interfaces::new([state("tap0", 4)]);
        // Recreated with a new index: the old state comes back as what it replaced.
        let before = i.apply(&LinkEvent::New(state("tap0", 9)));
        assert_eq!(before.map(|l| l.ifindex), Some(4));
        assert_eq!(i.get("tap0").map(|l| l.ifindex), Some(9));
        // A stale deletion of the old index does not remove the new interface.
        assert_eq!(i.apply(&LinkEvent::Del(state("tap0", 4))), None);
        assert!(i.get("tap0").is_some());
        // Renamed: the old name is gone.
        i.apply(&LinkEvent::New(state("vm-new", 9)));
        assert!(i.get("tap0").is_none() && i.get("vm-new").is_some());
        i.apply(&LinkEvent::Del(state("vm-new", 9)));
        assert!(i.by_ifindex(9).is_none());
    }
}
