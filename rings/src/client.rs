//! The application's side: registers memory regions with the worker, opens queue pairs to
//! peers, posts WRITEs and READs and takes their completions, never waiting on the network
//! (a full submission ring is back-pressure the caller sees at once).

use std::{
    collections::HashSet,
    ffi::CString,
    io::{self, ErrorKind},
    net::IpAddr,
    os::{fd::AsRawFd, unix::net::UnixStream},
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    control::{MAX_MESSAGE, RegionInfo, Reply, Request, WorkerStatus},
    engine::worker_gone,
    entries::{Complete, OP_READ, OP_WRITE, Submit},
    ring::{Consumer, Producer, RingFds},
    shm::{Shared, recv_fds, send_fds},
};

/// A connection to a worker.
pub struct Client {
    sock: UnixStream,
}

/// A region of this application's memory, registered with the worker.
pub struct LocalRegion {
    pub memory: Shared,
    pub info: RegionInfo,
}

/// A peer's region, as its worker describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRegion {
    pub rkey: u32,
    pub len: u64,
}

fn refused(m: String) -> io::Error {
    io::Error::other(m)
}

impl Client {
    /// Connects to the worker listening at `path`.
    pub fn connect(path: &Path) -> io::Result<Client> {
        let sock = UnixStream::connect(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "no rings worker at {} ({e}): start one with `xnic rings run`",
                    path.display()
                ),
            )
        })?;
        Ok(Client { sock })
    }

    /// Gives up on a worker that does not answer within `timeout` (a scrape of the
    /// daemon's metrics must not hang on a stuck worker); `None` waits for ever.
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)?;
        self.sock.set_write_timeout(timeout)
    }

    fn call(
        &mut self,
        r: &Request,
        fds: &[std::os::fd::RawFd],
    ) -> io::Result<(Reply, Vec<std::os::fd::OwnedFd>)> {
        let text = serde_json::to_vec(r).expect("requests serialise");
        send_fds(self.sock.as_raw_fd(), &text, fds)?;
        let mut buf = [0u8; MAX_MESSAGE];
        let (n, got) = recv_fds(self.sock.as_raw_fd(), &mut buf, 4)?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::ConnectionAborted,
                "the worker went away",
            ));
        }
        let reply: Reply = serde_json::from_slice(&buf[..n])
            .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
        match reply {
            Reply::Error(m) => Err(refused(m)),
            r => Ok((r, got)),
        }
    }

    /// Registers `len` bytes of new shared memory as region `name`.
    pub fn register(&mut self, name: &str, len: usize) -> io::Result<LocalRegion> {
        let cname = CString::new(format!("xnic-region-{name}"))
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "a name without NUL"))?;
        let memory = Shared::create(&cname, len)?;
        let (reply, _) = self.call(
            &Request::Register {
                name: name.to_string(),
            },
            &[memory.fd().as_raw_fd()],
        )?;
        match reply {
            Reply::Region(info) => Ok(LocalRegion { memory, info }),
            other => Err(refused(format!("unexpected answer {other:?}"))),
        }
    }

    pub fn deregister(&mut self, region: &LocalRegion) -> io::Result<()> {
        self.deregister_id(region.info.id)
    }

    /// Deregisters region `id` (one another process registered, say).
    pub fn deregister_id(&mut self, id: u32) -> io::Result<()> {
        self.call(&Request::Deregister { id }, &[])?;
        Ok(())
    }

    /// Region `name` of the application at `peer`.
    pub fn lookup(&mut self, peer: IpAddr, name: &str) -> io::Result<RemoteRegion> {
        match self.call(
            &Request::Lookup {
                peer,
                name: name.to_string(),
            },
            &[],
        )? {
            (Reply::Remote { rkey, len }, _) => Ok(RemoteRegion { rkey, len }),
            (other, _) => Err(refused(format!("unexpected answer {other:?}"))),
        }
    }

    pub fn status(&mut self) -> io::Result<WorkerStatus> {
        match self.call(&Request::Status, &[])? {
            (Reply::Status(s), _) => Ok(s),
            (other, _) => Err(refused(format!("unexpected answer {other:?}"))),
        }
    }

    /// A queue pair to the worker at `peer`.
    pub fn connect_qp(&mut self, peer: IpAddr) -> io::Result<QueuePair> {
        let (reply, mut fds) = self.call(&Request::Connect { peer }, &[])?;
        let Reply::QueuePair { qp, peer_qp } = reply else {
            return Err(refused(format!("unexpected answer {reply:?}")));
        };
        if fds.len() != 4 {
            return Err(refused("the worker sent no rings".into()));
        }
        let cq_bell = fds.pop().expect("4");
        let cq_mem = fds.pop().expect("4");
        let sq_bell = fds.pop().expect("4");
        let sq_mem = fds.pop().expect("4");
        Ok(QueuePair {
            qp,
            peer_qp,
            sq: Producer::open(RingFds {
                memory: sq_mem,
                doorbell: sq_bell,
            })?,
            cq: Consumer::open(RingFds {
                memory: cq_mem,
                doorbell: cq_bell,
            })?,
            outstanding: HashSet::new(),
            control: self.sock.try_clone()?,
            gone: false,
            checked_at: Instant::now(),
            spin: Duration::ZERO,
        })
    }
}

/// A queue pair: work requests in, completions out.
pub struct QueuePair {
    pub qp: u32,
    pub peer_qp: u32,
    sq: Producer<Submit>,
    cq: Consumer<Complete>,
    outstanding: HashSet<u64>,
    /// The control connection: it closing means the worker is gone.
    control: UnixStream,
    gone: bool,
    /// When `control` was last looked at (a system call: not on every poll).
    checked_at: Instant,
    /// How long [`QueuePair::wait`] polls before it sleeps.
    spin: Duration,
}

/// How often polling looks whether the worker is still there.
const GONE_CHECK: Duration = Duration::from_millis(1);

/// The submission ring is full (back-pressure): poll completions and post again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

impl QueuePair {
    #[allow(clippy::too_many_arguments)]
    fn post(
        &mut self,
        op: u8,
        id: u64,
        local: &LocalRegion,
        local_offset: u64,
        remote: &RemoteRegion,
        remote_offset: u64,
        len: u32,
    ) -> Result<(), Full> {
        let s = Submit {
            id,
            op,
            _pad: [0; 3],
            local_region: local.info.id,
            local_offset,
            remote_offset,
            rkey: remote.rkey,
            len,
        };
        self.sq.push(s).map_err(|_| Full)?;
        self.sq.publish();
        self.outstanding.insert(id);
        Ok(())
    }

    /// Puts `len` bytes at `local_offset` of `local` at `remote_offset` of `remote`.
    pub fn write(
        &mut self,
        id: u64,
        local: &LocalRegion,
        local_offset: u64,
        remote: &RemoteRegion,
        remote_offset: u64,
        len: u32,
    ) -> Result<(), Full> {
        self.post(
            OP_WRITE,
            id,
            local,
            local_offset,
            remote,
            remote_offset,
            len,
        )
    }

    /// Gets `len` bytes at `remote_offset` of `remote` into `local_offset` of `local`.
    pub fn read(
        &mut self,
        id: u64,
        local: &LocalRegion,
        local_offset: u64,
        remote: &RemoteRegion,
        remote_offset: u64,
        len: u32,
    ) -> Result<(), Full> {
        self.post(OP_READ, id, local, local_offset, remote, remote_offset, len)
    }

    /// Work requests posted and not completed.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The next completion, if there is one. Once the worker is gone, what was outstanding
    /// completes as such.
    pub fn poll(&mut self) -> Option<Complete> {
        if let Some(c) = self.cq.pop() {
            self.outstanding.remove(&c.id);
            return Some(c);
        }
        if self.gone || self.cq.closed() || self.worker_gone_now() {
            self.gone = true;
            let id = *self.outstanding.iter().next()?;
            self.outstanding.remove(&id);
            return Some(worker_gone(id));
        }
        None
    }

    /// Whether the worker is gone, looking at most every [`GONE_CHECK`].
    fn worker_gone_now(&mut self) -> bool {
        if self.checked_at.elapsed() < GONE_CHECK {
            return false;
        }
        self.checked_at = Instant::now();
        self.worker_gone()
    }

    fn worker_gone(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.control.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        r > 0 && p.revents & (libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Makes [`QueuePair::wait`] poll for up to `spin` before it sleeps: a completion
    /// that comes sooner is taken without the wake-up (tens of microseconds), at the cost
    /// of the CPU while spinning (as with polling a completion queue in RDMA verbs).
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Waits up to `timeout` for the next completion.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Option<Complete>> {
        let start = Instant::now();
        let until = start + timeout;
        while !self.spin.is_zero() && start.elapsed() < self.spin.min(timeout) {
            if let Some(c) = self.poll() {
                return Ok(Some(c));
            }
            std::hint::spin_loop();
        }
        loop {
            if let Some(c) = self.poll() {
                return Ok(Some(c));
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || (self.gone && self.outstanding.is_empty()) {
                return Ok(None);
            }
            // Wake for a completion or every few milliseconds to notice the worker's end.
            self.cq.wait(left.min(Duration::from_millis(20)))?;
        }
    }
}
