//! The network worker: one AF_XDP socket on one queue of one interface, the engine, a
//! control socket for applications and a UDP socket for the workers of other hosts, in one
//! loop on one thread (run it on CPUs of its own). Runs in the calling thread's network
//! namespace.

use std::{
    collections::HashMap,
    io::{self, ErrorKind},
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::{
        fd::{AsRawFd, RawFd},
        unix::net::{UnixListener, UnixStream},
    },
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use xnic_roce::psn::Psn;

use crate::{
    control::{CM_PORT, Cm, MAX_MESSAGE, QpStatus, RegionInfo, Reply, Request, WorkerStatus},
    engine::{Endpoint, Engine, QpConfig},
    entries::{Complete, Submit},
    ring::{self, Consumer},
    shm::{Shared, recv_fds, send_fds},
    xsk::{FRAME_SIZE, XskConfig, XskSocket},
};

/// How the worker tells the dataplane what to steer to it (the daemon's pinned maps).
pub trait Steering {
    fn set_socket(&mut self, queue: u32, socket: RawFd) -> io::Result<()>;
    fn unset_socket(&mut self, queue: u32) -> io::Result<()>;
    fn serve(&mut self, qp: u32) -> io::Result<()>;
    fn unserve(&mut self, qp: u32) -> io::Result<()>;
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub interface: String,
    pub queue: u32,
    /// Where applications connect.
    pub control: PathBuf,
    pub qp: QpConfig,
    pub xsk: XskConfig,
    /// How long the loop keeps polling its rings after the last work before it sleeps:
    /// zero sleeps at once (a shared CPU), more saves the wake-ups of a busy worker on a
    /// CPU of its own (each costs tens of microseconds of latency).
    pub busy_poll: Duration,
}

/// Entries of each application ring: 256 submissions (40 B each) and completions.
const RING_ENTRIES: u32 = 256;
/// How long a connection or lookup waits for the other worker.
const CM_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a request to another worker goes again while unanswered (UDP may be lost).
const CM_RESEND: Duration = Duration::from_millis(100);
/// Answers kept for requests another worker may send again (its copy of the answer was
/// lost): a repeated connection request must not open a second queue pair.
const CM_REMEMBERED: usize = 1024;
/// How long the loop sleeps at most when idle.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// How often a polling loop looks at its sockets (applications' requests, other workers'
/// messages: each look is a system call), when nothing woke it for them.
const SOCKETS_EVERY_NS: u64 = 1_000_000;

/// A request to another worker an application waits on.
struct Pending {
    client: usize,
    peer: IpAddr,
    sent: Instant,
    /// The request as sent, and when it last went.
    text: Vec<u8>,
    resent: Instant,
    /// For a connection: our queue pair's number and first PSN.
    qp: Option<(u32, u32)>,
}

struct Worker<'s> {
    config: WorkerConfig,
    local: Endpoint,
    xsk: XskSocket,
    engine: Engine,
    steering: &'s mut dyn Steering,
    listener: UnixListener,
    clients: Vec<Option<UnixStream>>,
    cm: UdpSocket,
    regions: HashMap<String, RegionInfo>,
    pending: HashMap<u64, Pending>,
    next_token: u64,
    /// Answers given to other workers, by (worker, token), oldest first.
    answered: HashMap<(SocketAddr, u64), Vec<u8>>,
    answered_order: std::collections::VecDeque<(SocketAddr, u64)>,
    started: Instant,
}

/// Runs a worker until `stop` is set.
pub fn run(config: WorkerConfig, steering: &mut dyn Steering, stop: &AtomicBool) -> io::Result<()> {
    let ifindex = ifindex(&config.interface)?;
    let local = Endpoint {
        mac: mac_of(&config.interface)?,
        ip: IpAddr::V4(ipv4_of(&config.interface)?),
    };
    let mut config = config;
    config.qp.mtu = path_mtu(&config.interface, config.qp.mtu)?;
    let xsk = XskSocket::open(ifindex, config.queue, config.xsk)?;
    steering.set_socket(config.queue, xsk.as_raw_fd())?;
    if let Some(dir) = config.control.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&config.control);
    let listener = UnixListener::bind(&config.control)?;
    // Root only, like the daemon's socket: a client can read and write registered memory.
    std::fs::set_permissions(
        &config.control,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    listener.set_nonblocking(true)?;
    let cm = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, CM_PORT))?;
    cm.set_nonblocking(true)?;
    let mut w = Worker {
        engine: Engine::new(local),
        config,
        local,
        xsk,
        steering,
        listener,
        clients: Vec::new(),
        cm,
        regions: HashMap::new(),
        pending: HashMap::new(),
        // Tokens unique across restarts too, so a peer's memory of answers never matches a
        // new request.
        next_token: u64::from(random_key()) << 32,
        answered: HashMap::new(),
        answered_order: std::collections::VecDeque::new(),
        started: Instant::now(),
    };
    let result = w.serve(stop);
    for qp in w.engine.queue_pairs().collect::<Vec<_>>() {
        let _ = w.steering.unserve(qp);
    }
    let _ = w.steering.unset_socket(w.config.queue);
    let _ = std::fs::remove_file(&w.config.control);
    result
}

impl Worker<'_> {
    fn now(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn serve(&mut self, stop: &AtomicBool) -> io::Result<()> {
        let busy_poll = self.config.busy_poll.as_nanos() as u64;
        let (mut sockets_at, mut idle_since, mut woke) = (0u64, None, true);
        while !stop.load(Ordering::Relaxed) {
            let now = self.now();
            let mut busy = self.move_frames(now)?;
            if woke || now.saturating_sub(sockets_at) >= SOCKETS_EVERY_NS {
                sockets_at = now;
                busy |= self.accept()?;
                busy |= self.control()?;
                busy |= self.cm()?;
                self.expire();
            }
            woke = false;
            if busy {
                idle_since = None;
                continue;
            }
            if now - *idle_since.get_or_insert(now) < busy_poll {
                std::hint::spin_loop();
                continue;
            }
            self.sleep(now)?;
            (idle_since, woke) = (None, true);
        }
        Ok(())
    }

    /// Frames in (applied or answered), work requests taken, frames out, completions
    /// reported: the loop's fast path, no system call unless there is something to send.
    fn move_frames(&mut self, now: u64) -> io::Result<bool> {
        let engine = &mut self.engine;
        let mut busy = self.xsk.receive(|f| engine.receive(f, now)) > 0;
        let xsk = &mut self.xsk;
        busy |= self.engine.poll(now, &mut |f| xsk.send(f));
        self.xsk.flush()?;
        Ok(busy)
    }

    /// Sleeps until a frame, a message, a submission or the next timer.
    fn sleep(&mut self, now: u64) -> io::Result<()> {
        if self.engine.arm() {
            self.engine.disarm();
            return Ok(());
        }
        let mut fds: Vec<libc::pollfd> = [
            self.xsk.as_raw_fd(),
            self.listener.as_raw_fd(),
            self.cm.as_raw_fd(),
        ]
        .into_iter()
        .chain(self.clients.iter().flatten().map(|c| c.as_raw_fd()))
        .chain(self.engine.doorbells())
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
        let until = self
            .engine
            .deadline(now)
            .map_or(IDLE_POLL, |d| Duration::from_nanos(d.saturating_sub(now)))
            .min(IDLE_POLL);
        // SAFETY: `fds` is a live array of that many pollfds.
        let r = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                until.as_millis().max(1) as i32,
            )
        };
        self.engine.disarm();
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    fn accept(&mut self) -> io::Result<bool> {
        match self.listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(true)?;
                self.clients.push(Some(s));
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn control(&mut self) -> io::Result<bool> {
        let mut any = false;
        for i in 0..self.clients.len() {
            let Some(c) = &self.clients[i] else { continue };
            let mut buf = [0u8; MAX_MESSAGE];
            match recv_fds(c.as_raw_fd(), &mut buf, 4) {
                Ok((0, _)) => self.clients[i] = None,
                Ok((n, fds)) => {
                    any = true;
                    let reply = match serde_json::from_slice::<Request>(&buf[..n]) {
                        Ok(r) => self.request(i, r, fds),
                        Err(e) => Some((Reply::Error(format!("not a request: {e}")), Vec::new())),
                    };
                    if let Some((reply, fds)) = reply {
                        self.answer(i, &reply, fds);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => self.clients[i] = None,
            }
        }
        Ok(any)
    }

    fn answer(&mut self, client: usize, reply: &Reply, fds: Vec<std::os::fd::OwnedFd>) {
        let Some(Some(c)) = self.clients.get(client) else {
            return;
        };
        let text = serde_json::to_vec(reply).expect("replies serialise");
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        if send_fds(c.as_raw_fd(), &text, &raw).is_err() {
            self.clients[client] = None;
        }
    }

    /// Carries out an application's request; `None` when the answer comes later (from the
    /// other worker).
    fn request(
        &mut self,
        client: usize,
        r: Request,
        mut fds: Vec<std::os::fd::OwnedFd>,
    ) -> Option<(Reply, Vec<std::os::fd::OwnedFd>)> {
        let error = |m: String| Some((Reply::Error(m), Vec::new()));
        match r {
            Request::Register { name } => {
                if self.regions.contains_key(&name) {
                    return error(format!(
                        "a region named {name:?} exists: deregister it first"
                    ));
                }
                let Some(fd) = fds.pop() else {
                    return error("register needs the region's memfd alongside".into());
                };
                let shm = match Shared::map(fd) {
                    Ok(s) => Arc::new(s),
                    Err(e) => return error(format!("cannot map the region: {e}")),
                };
                let len = shm.len() as u64;
                let rkey = random_key();
                match self.engine.add_region(shm, rkey) {
                    Ok(id) => {
                        let info = RegionInfo {
                            id,
                            name: name.clone(),
                            len,
                            rkey,
                        };
                        self.regions.insert(name, info.clone());
                        Some((Reply::Region(info), Vec::new()))
                    }
                    Err(_) => error(format!(
                        "no room for another region (at most {})",
                        crate::engine::MAX_REGIONS
                    )),
                }
            }
            Request::Deregister { id } => {
                if !self.engine.remove_region(id) {
                    return error(format!("no region {id}"));
                }
                self.regions.retain(|_, r| r.id != id);
                Some((Reply::Done, Vec::new()))
            }
            Request::Connect { peer } => {
                let qp = self.engine.allocate_qp();
                let psn = random_key() & 0x00ff_ffff;
                let mtu = self.config.qp.mtu;
                self.ask(client, peer, Cm::Connect { qp, psn, mtu }, Some((qp, psn)));
                None
            }
            Request::Lookup { peer, name } => {
                self.ask(client, peer, Cm::Lookup { name }, None);
                None
            }
            Request::Status => Some((Reply::Status(self.status()), Vec::new())),
        }
    }

    fn ask(&mut self, client: usize, peer: IpAddr, msg: Cm, qp: Option<(u32, u32)>) {
        let token = self.next_token;
        self.next_token += 1;
        let text = serde_json::to_vec(&(token, msg)).expect("serialises");
        if let Err(e) = self.cm.send_to(&text, SocketAddr::new(peer, CM_PORT)) {
            self.answer(
                client,
                &Reply::Error(format!("cannot reach {peer}: {e}")),
                Vec::new(),
            );
            return;
        }
        self.pending.insert(
            token,
            Pending {
                client,
                peer,
                sent: Instant::now(),
                text,
                resent: Instant::now(),
                qp,
            },
        );
    }

    fn expire(&mut self) {
        for p in self.pending.values_mut() {
            if p.resent.elapsed() >= CM_RESEND {
                p.resent = Instant::now();
                let _ = self.cm.send_to(&p.text, SocketAddr::new(p.peer, CM_PORT));
            }
        }
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.sent.elapsed() > CM_TIMEOUT)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(p) = self.pending.remove(&t) {
                let m = format!(
                    "no answer from a rings worker at {} (UDP {CM_PORT}): is one running there?",
                    p.peer
                );
                self.answer(p.client, &Reply::Error(m), Vec::new());
            }
        }
    }

    fn cm(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; MAX_MESSAGE];
        let (n, from) = match self.cm.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        };
        let Ok((token, msg)) = serde_json::from_slice::<(u64, Cm)>(&buf[..n]) else {
            return Ok(true);
        };
        let peer = from.ip();
        if let Some(text) = self.answered.get(&(from, token)) {
            // A request we answered, sent again: the same answer again.
            let _ = self.cm.send_to(text, from);
            return Ok(true);
        }
        let answer = |w: &mut Self, m: Cm| {
            let text = serde_json::to_vec(&(token, m)).expect("serialises");
            let _ = w.cm.send_to(&text, from);
            if w.answered_order.len() >= CM_REMEMBERED
                && let Some(old) = w.answered_order.pop_front()
            {
                w.answered.remove(&old);
            }
            w.answered.insert((from, token), text);
            w.answered_order.push_back((from, token));
        };
        match msg {
            Cm::Connect {
                qp: peer_qp,
                psn: peer_psn,
                mtu,
            } => {
                let mtu = mtu.min(self.config.qp.mtu);
                let reply = match self.open_qp(None, peer, peer_qp, peer_psn, mtu) {
                    Ok((qp, psn)) => Cm::Accept { qp, psn, mtu },
                    Err(e) => Cm::Refused(e),
                };
                answer(self, reply);
            }
            Cm::Lookup { name } => {
                let reply = match self.regions.get(&name) {
                    Some(r) => Cm::Found {
                        rkey: r.rkey,
                        len: r.len,
                    },
                    None => Cm::Refused(format!("no region named {name:?} at {}", self.local.ip)),
                };
                answer(self, reply);
            }
            Cm::Accept {
                qp: peer_qp,
                psn: peer_psn,
                mtu,
            } => {
                if let Some(p) = self.pending.remove(&token) {
                    let reply = match self.open_qp(p.qp, peer, peer_qp, peer_psn, mtu) {
                        Ok((qp, _)) => self.rings_for(qp, peer_qp),
                        Err(e) => (Reply::Error(e), Vec::new()),
                    };
                    self.answer(p.client, &reply.0, reply.1);
                }
            }
            Cm::Found { rkey, len } => {
                if let Some(p) = self.pending.remove(&token) {
                    self.answer(p.client, &Reply::Remote { rkey, len }, Vec::new());
                }
            }
            Cm::Refused(why) => {
                if let Some(p) = self.pending.remove(&token) {
                    self.answer(p.client, &Reply::Error(why), Vec::new());
                }
            }
        }
        Ok(true)
    }

    /// A queue pair toward `peer`'s `peer_qp` with payloads of `mtu`: ours is `mine`
    /// (number and first PSN) when we asked, else a new one.
    fn open_qp(
        &mut self,
        mine: Option<(u32, u32)>,
        peer: IpAddr,
        peer_qp: u32,
        peer_psn: u32,
        mtu: u32,
    ) -> Result<(u32, u32), String> {
        if !xnic_roce::packet::IB_MTUS.contains(&mtu) || mtu > self.config.qp.mtu {
            return Err(format!(
                "path MTU {mtu} is not an InfiniBand MTU up to this worker's {}",
                self.config.qp.mtu
            ));
        }
        let mac = neighbour(peer)
            .ok_or_else(|| format!("no neighbour entry for {peer} on {}", self.config.interface))?;
        let (qp, psn) =
            mine.unwrap_or_else(|| (self.engine.allocate_qp(), random_key() & 0x00ff_ffff));
        let endpoint = Endpoint { mac, ip: peer };
        self.engine
            .add_qp_numbered(
                qp,
                endpoint,
                peer_qp,
                Psn::new(psn),
                Psn::new(peer_psn),
                QpConfig {
                    mtu,
                    ..self.config.qp
                },
            )
            .map_err(|_| {
                format!(
                    "no room for another queue pair (at most {})",
                    crate::engine::MAX_QUEUE_PAIRS
                )
            })?;
        self.steering
            .serve(qp)
            .map_err(|e| format!("cannot steer queue pair {qp} here: {e}"))?;
        Ok((qp, psn))
    }

    /// The application's rings for queue pair `qp`, attached to the engine.
    fn rings_for(&mut self, qp: u32, peer_qp: u32) -> (Reply, Vec<std::os::fd::OwnedFd>) {
        let made = (|| -> io::Result<_> {
            let (sq_app, sq_fds) = ring::create::<Submit>(c"xnic-rings-sq", RING_ENTRIES)?;
            let (cq_worker, cq_fds) = ring::create::<Complete>(c"xnic-rings-cq", RING_ENTRIES)?;
            // The application produces submissions: it gets the descriptors, we consume.
            drop(sq_app);
            let sq = Consumer::open(ring::RingFds {
                memory: sq_fds.memory.try_clone()?,
                doorbell: sq_fds.doorbell.try_clone()?,
            })?;
            Ok((sq, cq_worker, sq_fds, cq_fds))
        })();
        match made {
            Ok((sq, cq, sq_fds, cq_fds)) => {
                self.engine.attach(qp, sq, cq);
                (
                    Reply::QueuePair { qp, peer_qp },
                    vec![
                        sq_fds.memory,
                        sq_fds.doorbell,
                        cq_fds.memory,
                        cq_fds.doorbell,
                    ],
                )
            }
            Err(e) => (
                Reply::Error(format!("cannot make the rings: {e}")),
                Vec::new(),
            ),
        }
    }

    fn status(&self) -> WorkerStatus {
        let s = self.engine.stats();
        let mut regions: Vec<RegionInfo> = self.regions.values().cloned().collect();
        regions.sort_by_key(|r| r.id);
        let mut queue_pairs: Vec<QpStatus> = self
            .engine
            .queue_pairs()
            .filter_map(|qp| {
                let v = self.engine.view(qp)?;
                Some(QpStatus {
                    qp,
                    peer: v.peer.to_string(),
                    peer_qp: v.peer_qp,
                    mtu: v.mtu,
                    in_flight: v.in_flight as u64,
                    sent: v.sent,
                    retransmitted: v.retransmitted,
                    timeouts: v.timeouts,
                })
            })
            .collect();
        queue_pairs.sort_by_key(|q| q.qp);
        WorkerStatus {
            interface: self.config.interface.clone(),
            queue: self.config.queue,
            address: self.local.ip.to_string(),
            regions,
            queue_pairs,
            received: s.received,
            sent: s.sent,
            retransmitted: s.retransmitted,
            timeouts: s.timeouts,
            dropped: s.dropped.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            completed: s
                .completed
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }
}

/// A key a peer cannot guess: from the kernel's random source.
fn random_key() -> u32 {
    let mut v = [0u8; 4];
    // SAFETY: writes 4 bytes into `v`.
    unsafe { libc::getrandom(v.as_mut_ptr().cast(), 4, 0) };
    u32::from_ne_bytes(v) | 1
}

fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::new(
            ErrorKind::NotFound,
            format!("no interface {name} in this network namespace"),
        ));
    }
    Ok(i)
}

/// An `ifreq` ioctl on a throwaway socket (in this thread's namespace).
fn ifreq(name: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    // SAFETY: zeroed plain data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *d = s as libc::c_char;
    }
    // SAFETY: plain syscalls; the socket is closed before returning.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(io::Error::last_os_error());
        }
        let r = libc::ioctl(s, request, &mut req);
        libc::close(s);
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(req)
}

/// The largest InfiniBand MTU up to `most` that `name`'s link MTU and a packet buffer
/// take.
fn path_mtu(name: &str, most: u32) -> io::Result<u32> {
    let req = ifreq(name, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled the MTU member.
    let link = unsafe { req.ifr_ifru.ifru_mtu }.max(0) as usize;
    let room = link.min(FRAME_SIZE as usize - xnic_roce::packet::ETH_LEN);
    let fits = xnic_roce::packet::IB_MTUS
        .into_iter()
        .filter(|m| *m <= most)
        .find(|m| Some(*m) <= xnic_roce::packet::largest_mtu(room, false));
    fits.ok_or_else(|| {
        io::Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{name}'s MTU {link} is too small for RoCEv2 packets of 256 bytes up to {most}: raise it"
            ),
        )
    })
}

fn mac_of(name: &str) -> io::Result<[u8; 6]> {
    let req = ifreq(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the hardware address member.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

fn ipv4_of(name: &str) -> io::Result<Ipv4Addr> {
    let req = ifreq(name, libc::SIOCGIFADDR).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{name} has no IPv4 address for RoCEv2 ({e})"),
        )
    })?;
    // SAFETY: SIOCGIFADDR filled the address member with a sockaddr_in.
    let sin: libc::sockaddr_in = unsafe { std::mem::transmute_copy(&req.ifr_ifru.ifru_addr) };
    Ok(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
}

/// `peer`'s MAC from this thread's namespace's neighbour table (IPv4).
fn neighbour(peer: IpAddr) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    let want = peer.to_string();
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.first() != Some(&want.as_str()) || f.get(2) == Some(&"0x0") {
            return None;
        }
        let mac: Vec<u8> = f
            .get(3)?
            .split(':')
            .filter_map(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        <[u8; 6]>::try_from(mac).ok().filter(|m| *m != [0; 6])
    })
}
