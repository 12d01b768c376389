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

/// Bytes kept of each frame: Ethernet, IP and UDP headers plus the traffic generator's
/// sequence number.
const HEAD: usize = 64;

/// One frame received on the interface.
#[derive(Clone, Debug)]
pub struct Captured {
    /// CLOCK_MONOTONIC nanoseconds when the socket handed it over.
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
}

pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<Vec<Captured>>>,
}

impl Capture {
    /// Starts recording frames received on `ifname` in namespace `ns`; returns once the
    /// socket is bound.
    pub fn start(ns: &str, ifname: &str) -> anyhow::Result<Capture> {
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
            while !flag.load(Ordering::Relaxed) {
                match receive(&sock, &mut buf) {
                    Ok(Some(n)) => frames.push(Captured {
                        at_ns: crate::daemon::team::monotonic_ns(),
                        head: buf[..n.min(HEAD)].to_vec(),
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
    Ok(sock)
}

/// One received frame's length; `None` for frames the interface sent.
fn receive(sock: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: sockaddr_ll is plain data.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_ll>() as u32;
    // SAFETY: `buf` and `from` are valid for the lengths passed.
    let n = unsafe {
        libc::recvfrom(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&raw mut from).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if from.sll_pkttype == libc::PACKET_OUTGOING {
        return Ok(None);
    }
    Ok(Some(n as usize))
}
