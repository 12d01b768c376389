//! Watching what arrives on a lab interface: a packet socket in the interface's namespace
//! records each received frame's start and arrival time, so tests and benchmarks can see
//! which uplink carried what and when (a failover's gap, its announcements).

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

use anyhow::{Context as _, bail};

use crate::netns;

/// Bytes kept of each frame: Ethernet, IPv4 and UDP headers plus the traffic generator's
/// header (flow, sequence number, send time).
const HEAD: usize = 66;

/// One frame received on the interface.
#[derive(Clone, Debug)]
pub struct Captured {
    /// CLOCK_MONOTONIC nanoseconds when the kernel received it (its socket timestamp, so a
    /// busy capture thread does not blur gaps).
    pub at_ns: u64,
    pub head: Vec<u8>,
}

impl Captured {
    pub fn src_mac(&self) -> [u8; 6] {
        let mut m = [0; 6];
        m.copy_from_slice(&self.head[6..12]);
        m
    }

    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes([self.head[12], self.head[13]])
    }

    /// The traffic generator's header of an untagged IPv4 UDP frame (see
    /// [`crate::lab::traffic::send_udp`]): flow, sequence number and nanoseconds since its
    /// stream began.
    pub fn generator_header(&self) -> Option<(u32, u64, u64)> {
        const PAYLOAD: usize = 14 + 20 + 8;
        if self.ethertype() != 0x0800
            || self.head.get(23) != Some(&17)
            || self.head.len() < PAYLOAD + 24
        {
            return None;
        }
        let p = &self.head[PAYLOAD..];
        if p[..4] != crate::lab::traffic::MAGIC.to_be_bytes() {
            return None;
        }
        Some((
            u32::from_be_bytes(p[4..8].try_into().ok()?),
            u64::from_be_bytes(p[8..16].try_into().ok()?),
            u64::from_be_bytes(p[16..24].try_into().ok()?),
        ))
    }
}

pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<Vec<Captured>>>,
}

impl Capture {
    /// Starts recording frames received on `ifname` in namespace `ns`; returns once the
    /// socket is bound.
    pub fn start(ns: &str, ifname: &str) -> anyhow::Result<Capture> {
        Capture::start_keeping(ns, ifname, HEAD)
    }

    /// [`Capture::start`], keeping the first `keep` bytes of each frame.
    pub fn start_keeping(ns: &str, ifname: &str, keep: usize) -> anyhow::Result<Capture> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (ns, ifname) = (ns.to_string(), ifname.to_string());
        let thread = std::thread::spawn(move || {
            let sock = match netns::enter(&ns).and_then(|()| open(&ifname)) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    let _ = ready_tx.send(Err(e));
                    bail!(msg);
                }
            };
            let mut frames = Vec::new();
            let mut buf = [0u8; 2048];
            let offset = realtime_to_monotonic();
            while !flag.load(Ordering::Relaxed) {
                match receive(&sock, &mut buf) {
                    Ok(Some((n, stamp))) => frames.push(Captured {
                        at_ns: (stamp + offset).max(0) as u64,
                        head: buf[..n.min(keep)].to_vec(),
                    }),
                    Ok(None) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The interface went down (a failover test does that): keep listening.
                    Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {}
                    Err(e) => return Err(e).context("capture receive failed"),
                }
            }
            Ok(frames)
        });
        ready_rx
            .recv()
            .context("capture thread ended before binding")??;
        Ok(Capture { stop, thread })
    }

    /// Stops and returns what was received, oldest first.
    pub fn stop(self) -> anyhow::Result<Vec<Captured>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("capture thread panicked"))?
    }
}

/// Sends `frames` as they are out of `ifname` in namespace `ns` (a packet socket: no
/// routing, no headers added).
pub fn inject(ns: &str, ifname: &str, frames: Vec<Vec<u8>>) -> anyhow::Result<()> {
    let ifname = ifname.to_string();
    netns::run_in(ns, move || {
        let sock = open(&ifname)?;
        for f in &frames {
            // SAFETY: `f` is valid for its length; the socket is bound to the interface.
            let n = unsafe { libc::send(sock.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("cannot send a frame out of {ifname}"));
            }
        }
        Ok(())
    })
}

fn open(ifname: &str) -> anyhow::Result<OwnedFd> {
    let ifindex = nix::net::if_::if_nametoindex(ifname)
        .with_context(|| format!("no interface {ifname} to capture on"))?;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            proto as i32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("cannot open a packet socket");
    }
    // SAFETY: `fd` is a new descriptor owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is valid for the length passed.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("cannot bind to {ifname}"));
    }
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    // SAFETY: `timeout` is valid for the length passed.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    let rcvbuf: libc::c_int = 32 << 20;
    // SAFETY: `rcvbuf` is valid for the length passed.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const rcvbuf).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    // Kernel receive timestamps: gaps measured from when frames arrived, not from when this
    // thread got round to reading them.
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
        .context("cannot enable receive timestamps")?;
    Ok(sock)
}

/// One received frame: its length and the kernel's receive time (CLOCK_REALTIME ns);
/// `None` for frames the interface sent.
fn receive(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<(usize, i64)>> {
    use nix::sys::socket::{ControlMessageOwned, LinkAddr, MsgFlags, recvmsg};
    let mut iov = [io::IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let msg = recvmsg::<LinkAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )?;
    if msg
        .address
        .is_some_and(|a| a.pkttype() == libc::PACKET_OUTGOING)
    {
        return Ok(None);
    }
    let stamp = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmTimestampns(t) => Some(t.tv_sec() * 1_000_000_000 + t.tv_nsec()),
        _ => None,
    });
    let stamp =
        stamp.ok_or_else(|| io::Error::other("no receive timestamp on a captured frame"))?;
    Ok(Some((msg.bytes, stamp)))
}

/// CLOCK_MONOTONIC minus CLOCK_REALTIME, in ns: turns the kernel's receive stamps into the
/// clock the rest of the lab measures with.
fn realtime_to_monotonic() -> i64 {
    use nix::time::{ClockId, clock_gettime};
    let ns = |c| {
        clock_gettime(c).map_or(0, |t: nix::sys::time::TimeSpec| {
            t.tv_sec() * 1_000_000_000 + t.tv_nsec()
        })
    };
    ns(ClockId::CLOCK_MONOTONIC) - ns(ClockId::CLOCK_REALTIME)
}
