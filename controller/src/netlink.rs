//! Synchronous netlink requests, for the daemon's threads that ask the kernel one thing at a
//! time (tc qdiscs and classes, conntrack entries): send a request, read its replies up to
//! the ack or the end of the dump. Messages are built and parsed with the `netlink-packet-*`
//! crates; this only frames and matches them.

use std::fmt::Debug;

use anyhow::{Context as _, anyhow};
use rtnetlink::{
    packet_core::{
        NLM_F_ACK, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
        NetlinkSerializable,
    },
    sys::{Socket, SocketAddr},
};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;

/// One reply: its message type, flags and payload (after the netlink header).
#[derive(Clone, Debug)]
pub struct Reply {
    pub message_type: u16,
    pub flags: u16,
    pub payload: Vec<u8>,
}

/// A netlink socket of one protocol, connected to the kernel.
pub struct Channel {
    socket: Socket,
    seq: u32,
}

impl Channel {
    pub fn open(protocol: isize) -> anyhow::Result<Channel> {
        let mut socket = Socket::new(protocol).context("cannot open a netlink socket")?;
        socket.bind_auto().context("cannot bind a netlink socket")?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .context("cannot connect a netlink socket")?;
        Ok(Channel { socket, seq: 0 })
    }

    /// Sends `payload` as a request (with an ack asked for, and `flags`) and returns its
    /// replies. An error the kernel answers with is returned as that `io::Error`.
    pub fn request<T>(&mut self, payload: T, flags: u16) -> anyhow::Result<Vec<Reply>>
    where
        T: NetlinkSerializable + Debug,
        NetlinkPayload<T>: From<T>,
    {
        self.seq = self.seq.wrapping_add(1);
        let mut nl = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(payload));
        nl.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .context("cannot send a netlink request")?;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .context("cannot read a netlink reply")?;
            for msg in messages(&data)? {
                if msg.sequence_number() != self.seq {
                    continue;
                }
                match msg.message_type() {
                    NLMSG_DONE => return Ok(replies),
                    NLMSG_ERROR => {
                        let code = error_code(msg.payload());
                        if code == 0 {
                            return Ok(replies);
                        }
                        return Err(std::io::Error::from_raw_os_error(-code).into());
                    }
                    message_type => replies.push(Reply {
                        message_type,
                        flags: msg.flags(),
                        payload: msg.payload().to_vec(),
                    }),
                }
            }
        }
    }
}

/// The netlink messages in one datagram.
pub fn messages(data: &[u8]) -> anyhow::Result<Vec<NetlinkBuffer<&[u8]>>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < data.len() {
        let msg = NetlinkBuffer::new_checked(&data[offset..])
            .map_err(|e| anyhow!("malformed netlink message: {e}"))?;
        let len = msg.length() as usize;
        if len == 0 {
            break;
        }
        offset += len.div_ceil(4) * 4;
        out.push(msg);
    }
    Ok(out)
}

/// The error code of an `NLMSG_ERROR` payload (0: an ack).
fn error_code(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap_or([0; 4])))
}

/// The errno of an error the kernel answered a request with (see [`Channel::request`]).
pub fn errno(e: &anyhow::Error) -> Option<i32> {
    e.downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::raw_os_error)
}
