//! The worker's engine: queue pairs (each a requester for its application's work requests
//! and a responder for its peer's), the registered regions, and the dispatch of frames
//! between them. No sockets and no clock of its own: the worker loop feeds it frames and
//! the time and sends what it gives back, so tests run two engines over a simulated wire.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
    sync::Arc,
};

use xnic_roce::{
    headers::NakCode,
    packet::{self, Path, entropy_port},
    psn::Psn,
    requester::{self, Local, Operation, Requester, Status, WorkRequest},
    responder::{Regions, Responder},
};

use crate::{
    entries::{
        Complete, OP_READ, OP_WRITE, STATUS_BAD_REQUEST, STATUS_FLUSHED, STATUS_REFUSED,
        STATUS_RETRY_EXCEEDED, STATUS_SUCCESS, STATUS_WORKER_GONE, Submit,
    },
    ring::{Consumer, Producer},
    shm::Shared,
};

/// Queue pairs one worker serves (each costs its requester's and responder's state plus
/// its rings: 64 KiB of submissions and 16 KiB of completions at the default sizes).
pub const MAX_QUEUE_PAIRS: usize = 1024;
/// Regions one worker maps (each one memfd of the application's).
pub const MAX_REGIONS: usize = 1024;
/// Work requests in flight per queue pair: what one completion ring must be able to hold.
pub const MAX_OUTSTANDING: usize = 1024;
/// The largest message: one work request moves at most 1 GiB.
pub const MAX_MESSAGE: u32 = 1 << 30;

/// Local offsets the requester sees carry the region id above this many bits.
const OFFSET_BITS: u32 = 40;

/// One end of the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub mac: [u8; 6],
    pub ip: IpAddr,
}

/// A queue pair's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpConfig {
    /// Payload bytes per packet at most: a worker uses the largest InfiniBand MTU up to
    /// this that its link and buffers take, and the smaller of the two ends'.
    pub mtu: u32,
    /// Packets unacknowledged at most.
    pub window: u32,
    pub timeout_ns: u64,
    pub retry_limit: u32,
}

impl Default for QpConfig {
    fn default() -> Self {
        QpConfig {
            // InfiniBand's largest: the link decides.
            mtu: 4096,
            // Half of what a veth's XDP ring holds (256 frames): a window's burst fits the
            // receiver's ring with room for the other direction's.
            window: 128,
            // Well above a LAN's round trip, below what an application notices.
            timeout_ns: 20_000_000,
            // InfiniBand's largest retry count.
            retry_limit: 7,
        }
    }
}

/// Why the engine dropped a frame or refused a request, as counted.
pub type Reasons = BTreeMap<&'static str, u64>;

/// Regions by key (for the responder) and by id (for the requester's local side).
#[derive(Default)]
struct RegionTable {
    by_key: HashMap<u32, Arc<Shared>>,
    by_id: HashMap<u32, Arc<Shared>>,
}

impl Regions for RegionTable {
    fn check(&self, rkey: u32, va: u64, len: u32, _write: bool) -> Result<(), NakCode> {
        let r = self.by_key.get(&rkey).ok_or(NakCode::RemoteAccessError)?;
        match va.checked_add(u64::from(len)) {
            Some(end) if end <= r.len() as u64 => Ok(()),
            _ => Err(NakCode::RemoteAccessError),
        }
    }
    fn write(&mut self, rkey: u32, va: u64, data: &[u8]) {
        if let Some(r) = self.by_key.get(&rkey) {
            r.write(va, data);
        }
    }
    fn read(&self, rkey: u32, va: u64, out: &mut [u8]) {
        if let Some(r) = self.by_key.get(&rkey) {
            r.read(va, out);
        }
    }
}

impl Local for RegionTable {
    fn read(&self, offset: u64, out: &mut [u8]) {
        if let Some(r) = self.by_id.get(&((offset >> OFFSET_BITS) as u32)) {
            r.read(offset & ((1 << OFFSET_BITS) - 1), out);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(r) = self.by_id.get(&((offset >> OFFSET_BITS) as u32)) {
            r.write(offset & ((1 << OFFSET_BITS) - 1), data);
        }
    }
}

struct QueuePair {
    path: Path,
    requester: Requester,
    responder: Responder,
    submissions: Option<Consumer<Submit>>,
    completions: Option<Producer<Complete>>,
    /// Completions the application's ring had no room for yet.
    unreported: VecDeque<Complete>,
}

/// One queue pair's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpView {
    pub peer: IpAddr,
    pub peer_qp: u32,
    pub mtu: u32,
    /// Work requests taken from the application and not completed.
    pub in_flight: usize,
    /// Request packets sent, sent again, and retransmission timeouts.
    pub sent: u64,
    pub retransmitted: u64,
    pub timeouts: u64,
}

/// What an engine counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub received: u64,
    pub sent: u64,
    pub retransmitted: u64,
    pub timeouts: u64,
    /// Frames dropped and requests refused, by reason.
    pub dropped: Reasons,
    /// Work requests completed, by status.
    pub completed: Reasons,
}

pub struct Engine {
    local: Endpoint,
    qps: HashMap<u32, QueuePair>,
    regions: RegionTable,
    next_qp: u32,
    next_region: u32,
    stats: EngineStats,
    frame: Vec<u8>,
    payload: Vec<u8>,
}

/// Why a region or queue pair could not be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    Regions,
    QueuePairs,
}

impl Engine {
    pub fn new(local: Endpoint) -> Engine {
        Engine {
            local,
            qps: HashMap::new(),
            regions: RegionTable::default(),
            // Queue pairs 0 and 1 are special in InfiniBand (management): start above.
            next_qp: 0x100,
            next_region: 1,
            stats: EngineStats::default(),
            frame: Vec::new(),
            payload: Vec::new(),
        }
    }

    pub fn stats(&self) -> EngineStats {
        let mut s = self.stats.clone();
        for qp in self.qps.values() {
            let r = qp.requester.stats();
            s.retransmitted += r.retransmitted;
            s.timeouts += r.timeouts;
        }
        s
    }

    /// Registers `shm` under a fresh id and key `rkey` (chosen by the caller: random, so a
    /// peer cannot guess it); returns the id.
    pub fn add_region(&mut self, shm: Arc<Shared>, rkey: u32) -> Result<u32, Full> {
        if self.regions.by_id.len() >= MAX_REGIONS || self.regions.by_key.contains_key(&rkey) {
            return Err(Full::Regions);
        }
        let id = self.next_region;
        self.next_region += 1;
        self.regions.by_key.insert(rkey, shm.clone());
        self.regions.by_id.insert(id, shm);
        Ok(id)
    }

    /// Deregisters region `id`: peers' requests with its key are refused from now on.
    pub fn remove_region(&mut self, id: u32) -> bool {
        let Some(shm) = self.regions.by_id.remove(&id) else {
            return false;
        };
        self.regions.by_key.retain(|_, r| !Arc::ptr_eq(r, &shm));
        true
    }

    /// A queue pair number no queue pair has (a connection being set up takes it).
    pub fn allocate_qp(&mut self) -> u32 {
        loop {
            let qp = self.next_qp;
            // 24 bits, and above the special ones again after a wrap.
            self.next_qp = ((self.next_qp + 1) & 0x00ff_ffff).max(0x100);
            if !self.qps.contains_key(&qp) {
                return qp;
            }
        }
    }

    /// A new queue pair toward `peer`'s queue pair `peer_qp`: ours sends from `our_psn` and
    /// expects the peer's requests from `peer_psn`. Returns its number.
    pub fn add_qp(
        &mut self,
        peer: Endpoint,
        peer_qp: u32,
        our_psn: Psn,
        peer_psn: Psn,
        config: QpConfig,
    ) -> Result<u32, Full> {
        let qp = self.allocate_qp();
        self.add_qp_numbered(qp, peer, peer_qp, our_psn, peer_psn, config)?;
        Ok(qp)
    }

    /// [`Engine::add_qp`] under number `qp` (from [`Engine::allocate_qp`]).
    pub fn add_qp_numbered(
        &mut self,
        qp: u32,
        peer: Endpoint,
        peer_qp: u32,
        our_psn: Psn,
        peer_psn: Psn,
        config: QpConfig,
    ) -> Result<(), Full> {
        if self.qps.len() >= MAX_QUEUE_PAIRS {
            return Err(Full::QueuePairs);
        }
        let path = Path {
            src_mac: self.local.mac,
            dst_mac: peer.mac,
            src_ip: self.local.ip,
            dst_ip: peer.ip,
            src_port: entropy_port(qp),
        };
        self.qps.insert(
            qp,
            QueuePair {
                path,
                requester: Requester::new(requester::Config {
                    dest_qp: peer_qp,
                    start_psn: our_psn,
                    mtu: config.mtu,
                    window: config.window,
                    timeout_ns: config.timeout_ns,
                    retry_limit: config.retry_limit,
                }),
                responder: Responder::new(peer_qp, peer_psn, config.mtu),
                submissions: None,
                completions: None,
                unreported: VecDeque::new(),
            },
        );
        Ok(())
    }

    /// Queue pair `qp` as `xnic rings status` shows it.
    pub fn view(&self, qp: u32) -> Option<QpView> {
        let q = self.qps.get(&qp)?;
        let stats = q.requester.stats();
        Some(QpView {
            peer: q.path.dst_ip,
            peer_qp: q.requester.config().dest_qp,
            mtu: q.requester.config().mtu,
            in_flight: q.requester.outstanding(),
            sent: stats.sent,
            retransmitted: stats.retransmitted,
            timeouts: stats.timeouts,
        })
    }

    /// Says every application's submission ring is about to be slept on; whether one has
    /// work after all.
    pub fn arm(&self) -> bool {
        let mut ready = false;
        for q in self.qps.values() {
            if let Some(sq) = &q.submissions {
                ready |= sq.arm();
            }
        }
        ready
    }

    pub fn disarm(&self) {
        for q in self.qps.values() {
            if let Some(sq) = &q.submissions {
                sq.disarm();
            }
        }
    }

    /// The submission rings' doorbells, to sleep on.
    pub fn doorbells(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.qps
            .values()
            .filter_map(|q| q.submissions.as_ref().map(|sq| sq.doorbell().as_raw_fd()))
            .collect()
    }

    /// The queue pair numbers in use.
    pub fn queue_pairs(&self) -> impl Iterator<Item = u32> + '_ {
        self.qps.keys().copied()
    }

    /// Work requests of queue pair `qp` come from `submissions`, completions go to
    /// `completions`.
    pub fn attach(
        &mut self,
        qp: u32,
        submissions: Consumer<Submit>,
        completions: Producer<Complete>,
    ) {
        if let Some(q) = self.qps.get_mut(&qp) {
            q.submissions = Some(submissions);
            q.completions = Some(completions);
        }
    }

    fn drop_reason(&mut self, reason: &'static str) {
        *self.stats.dropped.entry(reason).or_default() += 1;
    }

    /// Takes a frame from the wire.
    pub fn receive(&mut self, frame: &[u8], now: u64) {
        self.stats.received += 1;
        let parsed = match packet::parse(frame) {
            Ok(p) => p,
            Err(e) => return self.drop_reason(e.reason()),
        };
        let p = parsed.packet;
        let Some(q) = self.qps.get_mut(&p.bth.dest_qp) else {
            return self.drop_reason("unknown_qp");
        };
        if parsed.path.src_ip != q.path.dst_ip {
            return self.drop_reason("wrong_peer");
        }
        if p.bth.opcode.is_request() {
            if let Err(d) = q.responder.receive(&p, &mut self.regions) {
                let name = d.name();
                *self.stats.dropped.entry(name).or_default() += 1;
            }
        } else {
            q.requester.receive(&p, &mut self.regions, now);
        }
    }

    /// Takes new work requests, sends what is due (through `send`, which says whether the
    /// wire took it) and reports completions. Returns whether anything happened.
    pub fn poll(&mut self, now: u64, send: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let mut busy = false;
        for q in self.qps.values_mut() {
            busy |= take_submissions(q, &self.regions, &mut self.stats.completed);
            q.requester.tick(now);
            // Answers first: they free the peer's window.
            while let Some(p) = q.responder.next_packet(&self.regions, &mut self.payload) {
                if !emit(&q.path, &p, &mut self.frame, send) {
                    break;
                }
                self.stats.sent += 1;
                busy = true;
            }
            while let Some(p) = q
                .requester
                .next_packet(&self.regions, now, &mut self.payload)
            {
                if !emit(&q.path, &p, &mut self.frame, send) {
                    break;
                }
                self.stats.sent += 1;
                busy = true;
            }
            for c in q.requester.completions() {
                let (status, nak) = match c.status {
                    Status::Success => (STATUS_SUCCESS, 0),
                    Status::Refused(code) => (STATUS_REFUSED, code as u8),
                    Status::RetryExceeded => (STATUS_RETRY_EXCEEDED, 0),
                    Status::Flushed => (STATUS_FLUSHED, 0),
                };
                *self
                    .stats
                    .completed
                    .entry(crate::entries::status_name(status, nak))
                    .or_default() += 1;
                q.unreported.push_back(Complete {
                    id: c.id,
                    status,
                    nak,
                    _pad: [0; 6],
                });
            }
            busy |= report(q);
        }
        busy
    }

    /// When the engine next needs the time (a retransmission timer), if ever.
    pub fn deadline(&mut self, now: u64) -> Option<u64> {
        self.qps
            .values_mut()
            .filter_map(|q| q.requester.tick(now))
            .min()
    }
}

/// Builds `p` on `path` into `frame` and hands it to `send`; whether the wire took it.
fn emit(
    path: &Path,
    p: &packet::Packet,
    frame: &mut Vec<u8>,
    send: &mut dyn FnMut(&[u8]) -> bool,
) -> bool {
    frame.clear();
    packet::build(path, p, frame);
    send(frame)
}

/// Moves the application's new work requests into the requester, as far as it takes them
/// (the rest wait in the ring: back-pressure). Bad ones complete at once.
fn take_submissions(q: &mut QueuePair, regions: &RegionTable, completed: &mut Reasons) -> bool {
    let Some(sq) = q.submissions.as_mut() else {
        return false;
    };
    let mut took = false;
    while q.requester.outstanding() + q.unreported.len() < MAX_OUTSTANDING {
        let Some(s) = sq.pop() else {
            break;
        };
        took = true;
        let local_ok = regions.by_id.get(&s.local_region).is_some_and(|r| {
            s.local_offset
                .checked_add(u64::from(s.len))
                .is_some_and(|end| end <= r.len() as u64)
        });
        let op = match s.op {
            OP_WRITE => Some(Operation::Write),
            OP_READ => Some(Operation::Read),
            _ => None,
        };
        let posted = match op {
            Some(op) if local_ok && s.len > 0 && s.len <= MAX_MESSAGE => q
                .requester
                .post(WorkRequest {
                    id: s.id,
                    op,
                    local: (u64::from(s.local_region) << OFFSET_BITS) | s.local_offset,
                    remote: s.remote_offset,
                    rkey: s.rkey,
                    len: s.len,
                })
                .is_ok(),
            _ => false,
        };
        if !posted {
            let status = if q.requester.stopped() {
                STATUS_FLUSHED
            } else {
                STATUS_BAD_REQUEST
            };
            *completed
                .entry(crate::entries::status_name(status, 0))
                .or_default() += 1;
            q.unreported.push_back(Complete {
                id: s.id,
                status,
                nak: 0,
                _pad: [0; 6],
            });
        }
    }
    took
}

/// Hands completions to the application as far as its ring has room.
fn report(q: &mut QueuePair) -> bool {
    let Some(cq) = q.completions.as_mut() else {
        return false;
    };
    let mut any = false;
    while let Some(c) = q.unreported.front().copied() {
        if cq.push(c).is_err() {
            break;
        }
        q.unreported.pop_front();
        any = true;
    }
    if any {
        cq.publish();
    }
    any
}

/// [`Complete`] for a request the worker could not finish because it went away.
pub fn worker_gone(id: u64) -> Complete {
    Complete {
        id,
        status: STATUS_WORKER_GONE,
        nak: 0,
        _pad: [0; 6],
    }
}
