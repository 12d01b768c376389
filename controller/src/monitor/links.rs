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

/// Link changes as the kernel announces them (RTNLGRP_LINK): (ifindex, operationally up),
/// for every RTM_NEWLINK, with no polling delay. The caller filters repeats.
pub fn watch() -> anyhow::Result<impl futures::Stream<Item = (u32, bool)>> {
    use futures::StreamExt as _;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage;
    let (conn, _handle, messages) =
        rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
            .context("cannot subscribe to netlink link events")?;
    tokio::spawn(conn);
    Ok(messages.filter_map(|(msg, _)| async move {
        match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                let state = link_state(&link);
                Some((state.ifindex, state.up))
            }
            _ => None,
        }
    }))
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
