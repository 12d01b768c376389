//! The requester's half of a reliable connection: work requests become packets with
//! consecutive PSNs, acknowledgements retire them, and what is lost is sent again from the
//! first missing packet on (go-back-N), after a NAK or a timeout, up to a retry limit.
//!
//! Plain state: the caller hands it packets that arrived and the time, and asks it for the
//! next packet to send; the data of WRITEs comes from, and READ responses go to, its
//! [`Local`] memory. Requests take effect in the order they were posted: a WRITE posted
//! after a READ goes out once the READ has completed, so it never changes what that READ
//! returns.

use std::collections::VecDeque;

use crate::{
    headers::{Bth, NakCode, Opcode, Reth, Syndrome},
    packet::Packet,
    psn::{PSN_HALF, Psn},
};

/// Where a work request's local bytes live.
pub trait Local {
    /// Copies `out.len()` bytes at `offset` into `out`.
    fn read(&self, offset: u64, out: &mut [u8]);
    /// Writes `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// What a work request asks of the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Put the `len` local bytes at `local` at the peer's `remote`.
    Write,
    /// Get `len` bytes at the peer's `remote` into the local bytes at `local`.
    Read,
}

/// A work request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkRequest {
    /// The application's identifier, given back in its completion.
    pub id: u64,
    pub op: Operation,
    /// Offset in local memory.
    pub local: u64,
    /// The peer's virtual address and key.
    pub remote: u64,
    pub rkey: u32,
    pub len: u32,
}

/// How a work request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    /// The peer refused it (wrong key, outside its region, not a request it takes).
    Refused(NakCode),
    /// No acknowledgement came through after the retry limit.
    RetryExceeded,
    /// Not carried out: an earlier request failed and the connection stopped.
    Flushed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::Refused(code) => code.name(),
            Status::RetryExceeded => "retry_exceeded",
            Status::Flushed => "flushed",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    pub id: u64,
    pub status: Status,
}

/// A connection's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The peer's queue pair.
    pub dest_qp: u32,
    /// The PSN of the first packet.
    pub start_psn: Psn,
    /// Payload bytes per packet (the path MTU less the headers; InfiniBand's MTUs are
    /// 256 to 4096).
    pub mtu: u32,
    /// Packets sent and not yet acknowledged, at most: what the peer and the path queue.
    pub window: u32,
    /// How long without progress before everything unacknowledged is sent again.
    pub timeout_ns: u64,
    /// Times in a row that may happen before the oldest request fails.
    pub retry_limit: u32,
}

/// Why a work request was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostError {
    /// A request of no bytes, or more than a message carries.
    BadLength,
    /// So many packets outstanding that PSNs would become ambiguous.
    Full,
    /// The connection stopped after a failure: reset it first.
    Stopped,
}

/// A posted request and how far it has come.
#[derive(Clone, Copy, Debug)]
struct Pending {
    wr: WorkRequest,
    /// Its first PSN, and its packets (a READ's request counts as many as its responses).
    first: Psn,
    packets: u32,
    /// READ: response bytes placed so far (responses arrive in order).
    received: u32,
}

impl Pending {
    fn last(&self) -> Psn {
        self.first.add(self.packets - 1)
    }
}

/// What a requester counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequesterStats {
    pub sent: u64,
    pub retransmitted: u64,
    pub timeouts: u64,
    pub naks: u64,
    /// Acknowledgements and responses that were duplicates, out of order or for nothing
    /// outstanding: ignored.
    pub ignored: u64,
}

/// The requester of one queue pair.
#[derive(Debug)]
pub struct Requester {
    config: Config,
    /// Posted, oldest first, until completed.
    pending: VecDeque<Pending>,
    /// The PSN the next new request takes.
    next_psn: Psn,
    /// The oldest PSN not acknowledged.
    una: Psn,
    /// The next PSN to send (behind `high` while going back).
    send: Psn,
    /// One past the highest PSN sent: what is sent below it is sent again.
    high: Psn,
    /// When the oldest unacknowledged packet last made progress (`None`: nothing sent is
    /// unacknowledged).
    progress_at: Option<u64>,
    /// Timeouts in a row without progress.
    retries: u32,
    /// Where a gap last sent us back (`una` then) and how far sending had got (`high`):
    /// the same gap sends us back again only once everything up to there went again.
    went_back: Option<(Psn, Psn)>,
    stopped: bool,
    done: VecDeque<Completion>,
    stats: RequesterStats,
}

impl Requester {
    pub fn new(config: Config) -> Requester {
        assert!(config.mtu > 0 && config.window > 0 && config.window < PSN_HALF);
        Requester {
            config,
            pending: VecDeque::new(),
            next_psn: config.start_psn,
            una: config.start_psn,
            send: config.start_psn,
            high: config.start_psn,
            progress_at: None,
            retries: 0,
            went_back: None,
            stopped: false,
            done: VecDeque::new(),
            stats: RequesterStats::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn stats(&self) -> RequesterStats {
        self.stats
    }

    /// Requests posted and not yet completed.
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Posts a work request; its packets go out through [`Requester::next_packet`].
    pub fn post(&mut self, wr: WorkRequest) -> Result<(), PostError> {
        if self.stopped {
            return Err(PostError::Stopped);
        }
        if wr.len == 0 {
            return Err(PostError::BadLength);
        }
        let packets = wr.len.div_ceil(self.config.mtu);
        let in_flight = self.next_psn.since(self.una) as u32;
        if in_flight + packets >= PSN_HALF {
            return Err(PostError::Full);
        }
        self.pending.push_back(Pending {
            wr,
            first: self.next_psn,
            packets,
            received: 0,
        });
        self.next_psn = self.next_psn.add(packets);
        Ok(())
    }

    /// The completions so far, oldest first.
    pub fn completions(&mut self) -> impl Iterator<Item = Completion> + '_ {
        self.done.drain(..)
    }

    /// The next packet to send at `now`, its payload copied into `buf`; `None` when all is
    /// sent or the window is full.
    pub fn next_packet<'b>(
        &mut self,
        local: &dyn Local,
        now: u64,
        buf: &'b mut Vec<u8>,
    ) -> Option<Packet<'b>> {
        if self.stopped || self.send == self.next_psn {
            return None;
        }
        if self.send.since(self.una) as u32 >= self.config.window {
            return None;
        }
        let psn = self.send;
        let at = self
            .pending
            .iter()
            .position(|p| psn.within(p.first, p.packets))?;
        let p = self.pending[at];
        if p.wr.op == Operation::Write
            && self
                .pending
                .iter()
                .take(at)
                .any(|q| q.wr.op == Operation::Read)
        {
            // A WRITE after a READ waits for it (as with InfiniBand's fence): the responder
            // reads when it answers, and a READ sent again is read again.
            return None;
        }
        let index = psn.since(p.first) as u32;
        let offset = index * self.config.mtu;
        let last = index + 1 == p.packets;
        buf.clear();
        let (opcode, reth, advance) = match p.wr.op {
            Operation::Write => {
                let len = if last {
                    p.wr.len - offset
                } else {
                    self.config.mtu
                };
                buf.resize(len as usize, 0);
                local.read(p.wr.local + u64::from(offset), buf);
                let opcode = match (index, last) {
                    (0, true) => Opcode::WriteOnly,
                    (0, false) => Opcode::WriteFirst,
                    (_, true) => Opcode::WriteLast,
                    _ => Opcode::WriteMiddle,
                };
                let reth = (index == 0).then_some(Reth {
                    va: p.wr.remote,
                    rkey: p.wr.rkey,
                    len: p.wr.len,
                });
                (opcode, reth, 1)
            }
            // A READ asks for what has not arrived, from this PSN's response on, as many
            // responses as the window has room for (their PSNs are the request's): a large
            // READ goes as several requests, so responses in flight stay within the window.
            Operation::Read => {
                let room = self.config.window - psn.since(self.una) as u32;
                let k = (p.packets - index).min(room);
                let len = if index + k == p.packets {
                    p.wr.len - offset
                } else {
                    k * self.config.mtu
                };
                (
                    Opcode::ReadRequest,
                    Some(Reth {
                        va: p.wr.remote + u64::from(offset),
                        rkey: p.wr.rkey,
                        len,
                    }),
                    k,
                )
            }
        };
        let mut bth = Bth::new(opcode, self.config.dest_qp, psn);
        // An acknowledgement at the end of each message, and before the window fills.
        bth.ack_req = last
            || opcode == Opcode::ReadRequest
            || psn.add(1).since(self.una) as u32 >= self.config.window;
        if psn.since(self.high) < 0 {
            self.stats.retransmitted += 1;
        }
        self.stats.sent += 1;
        self.send = self.send.add(advance);
        if self.send.since(self.high) > 0 {
            self.high = self.send;
        }
        self.progress_at.get_or_insert(now);
        Some(Packet {
            bth,
            reth,
            aeth: None,
            payload: buf,
        })
    }

    /// Whether the retransmission timer runs out at `now`: then everything unacknowledged
    /// goes again, or, past the retry limit, the oldest request fails and the connection
    /// stops. Returns when it next needs a look (`None`: nothing is waiting).
    pub fn tick(&mut self, now: u64) -> Option<u64> {
        let at = self.progress_at?;
        if self.stopped {
            return None;
        }
        let due = at + self.config.timeout_ns;
        if now < due {
            return Some(due);
        }
        self.stats.timeouts += 1;
        self.retries += 1;
        if self.retries > self.config.retry_limit {
            let oldest = self.una;
            self.fail_at(oldest, Status::RetryExceeded);
            return None;
        }
        self.send = self.una;
        self.progress_at = None;
        None
    }

    /// Takes a packet from the responder.
    pub fn receive(&mut self, packet: &Packet, local: &mut dyn Local, now: u64) {
        if self.stopped {
            self.stats.ignored += 1;
            return;
        }
        let psn = packet.bth.psn;
        // Only what answers a PSN sent and not yet acknowledged counts (an ACK may repeat
        // the last acknowledged one).
        let unacked = psn.since(self.una) >= 0 && psn.since(self.high) < 0;
        let ackable = unacked || psn == self.una.add(u32::MAX);
        match (packet.bth.opcode, packet.aeth.map(|a| a.syndrome)) {
            (Opcode::Acknowledge, Some(Syndrome::Ack { .. })) if ackable => {
                if !self.acked(psn, now) {
                    self.stats.ignored += 1;
                }
            }
            (Opcode::Acknowledge, Some(Syndrome::Nak(code))) if unacked => {
                self.stats.naks += 1;
                // Everything before the refused or missing PSN is done.
                self.acked(psn.add(u32::MAX), now);
                if code == NakCode::PsnSequenceError {
                    // The responder lost what follows: from the first unacknowledged again.
                    self.go_back_once();
                    self.progress_at = Some(now);
                } else {
                    self.fail_at(psn, Status::Refused(code));
                }
            }
            (Opcode::Acknowledge, Some(Syndrome::RnrNak { .. })) if unacked => {
                self.stats.naks += 1;
                self.send = self.una;
                self.progress_at = Some(now);
            }
            (
                Opcode::ReadResponseFirst
                | Opcode::ReadResponseMiddle
                | Opcode::ReadResponseLast
                | Opcode::ReadResponseOnly,
                _,
            ) if unacked => self.read_response(packet, local, now),
            _ => self.stats.ignored += 1,
        }
    }

    /// Everything up to and including `psn` is acknowledged (READs excepted: only their
    /// responses retire them). Whether that was news.
    fn acked(&mut self, psn: Psn, now: u64) -> bool {
        let mut progress = false;
        while let Some(p) = self.pending.front().copied() {
            if psn.since(p.first) < 0 {
                break;
            }
            if p.wr.op == Operation::Read {
                // Acknowledged past a READ whose responses did not all come: they were lost.
                if psn.since(p.first) >= p.received as i32 {
                    self.go_back_once();
                }
                break;
            }
            if psn.since(p.last()) >= 0 {
                self.pending.pop_front();
                self.done.push_back(Completion {
                    id: p.wr.id,
                    status: Status::Success,
                });
                self.advance_una(p.last().next(), &mut progress);
            } else {
                self.advance_una(psn.next(), &mut progress);
                break;
            }
        }
        if progress {
            self.progressed(now);
        }
        progress
    }

    /// Sends again from the first unacknowledged PSN, unless the same gap did that already
    /// and what it sent again is not all out yet (repeated NAKs and every out-of-order
    /// packet after a gap tell of one loss).
    fn go_back_once(&mut self) {
        if let Some((at, upto)) = self.went_back
            && at == self.una
            && self.send.since(upto) < 0
        {
            return;
        }
        self.went_back = Some((self.una, self.high));
        self.send = self.una;
    }

    fn advance_una(&mut self, to: Psn, progress: &mut bool) {
        if to.since(self.una) > 0 {
            self.una = to;
            if self.send.since(self.una) < 0 {
                self.send = self.una;
            }
            *progress = true;
        }
    }

    fn progressed(&mut self, now: u64) {
        self.retries = 0;
        self.progress_at = (self.una != self.send).then_some(now);
    }

    /// A READ response: placed if it is the next one expected, else ignored (a gap sends
    /// the READ again from the first missing response, once per gap).
    fn read_response(&mut self, packet: &Packet, local: &mut dyn Local, now: u64) {
        let psn = packet.bth.psn;
        if psn != self.una {
            // A response before this one was lost: ask again (a late duplicate needs nothing).
            if psn.since(self.una) > 0 {
                self.go_back_once();
            }
            self.stats.ignored += 1;
            return;
        }
        // Everything before this response is done.
        self.acked(psn.add(u32::MAX), now);
        let Some(p) = self.pending.front_mut() else {
            self.stats.ignored += 1;
            return;
        };
        let index = psn.since(p.first);
        if p.wr.op != Operation::Read || index != p.received as i32 {
            self.stats.ignored += 1;
            return;
        }
        let offset = index as u32 * self.config.mtu;
        let want = (p.wr.len - offset).min(self.config.mtu) as usize;
        if packet.payload.len() != want {
            self.stats.ignored += 1;
            return;
        }
        local.write(p.wr.local + u64::from(offset), packet.payload);
        p.received += 1;
        let finished = p.received == p.packets;
        let id = p.wr.id;
        if finished {
            self.pending.pop_front();
            self.done.push_back(Completion {
                id,
                status: Status::Success,
            });
        }
        let mut progress = false;
        self.advance_una(psn.next(), &mut progress);
        self.progressed(now);
    }

    /// The request holding `psn` ends with `status`, every other one is flushed, and the
    /// connection stops.
    fn fail_at(&mut self, psn: Psn, status: Status) {
        for p in self.pending.drain(..) {
            let hit = psn.within(p.first, p.packets);
            self.done.push_back(Completion {
                id: p.wr.id,
                status: if hit { status } else { Status::Flushed },
            });
        }
        self.stopped = true;
        self.progress_at = None;
    }
}
