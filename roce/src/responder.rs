//! The responder's half of a reliable connection: requests are carried out in PSN order
//! exactly once, duplicates are answered again without being carried out again, a gap is
//! answered with one PSN sequence error NAK, and a request that may not be carried out (a
//! wrong key, outside the region, out of sequence) with the NAK that says why, after which
//! the connection stops until it is reset. Nothing a refused request carries reaches memory.

use std::collections::VecDeque;

use crate::{
    headers::{Aeth, Bth, NakCode, Opcode, Syndrome, UNLIMITED_CREDITS},
    packet::Packet,
    psn::{Psn, PsnClass, classify},
};

/// The memory regions requests may reach, by key.
pub trait Regions {
    /// Whether `len` bytes at `va` of the region with key `rkey` may be written (or read).
    fn check(&self, rkey: u32, va: u64, len: u32, write: bool) -> Result<(), NakCode>;
    /// Writes `data` at `va` (checked before).
    fn write(&mut self, rkey: u32, va: u64, data: &[u8]);
    /// Reads `out.len()` bytes at `va` (checked before).
    fn read(&self, rkey: u32, va: u64, out: &mut [u8]);
}

/// Why a request was not carried out, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Drop {
    /// Carried out before: answered again.
    Duplicate,
    /// Ahead of the expected PSN: answered with a PSN sequence error (once per gap).
    Ahead,
    /// A packet a responder never takes (a response, an acknowledgement).
    NotARequest,
    /// After a refusal, until the connection is reset.
    Stopped,
    /// Refused with a NAK.
    Refused(NakCode),
}

impl Drop {
    pub fn name(self) -> &'static str {
        match self {
            Drop::Duplicate => "duplicate",
            Drop::Ahead => "psn_ahead",
            Drop::NotARequest => "not_a_request",
            Drop::Stopped => "stopped",
            Drop::Refused(code) => code.name(),
        }
    }
}

/// Packets ahead of a gap after which its NAK goes again: a quarter of a requester's
/// usual window, so a lost NAK costs a fraction of a window rather than a timeout.
const NAK_REPEAT: u32 = 32;

/// An answer waiting to go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Ack {
        psn: Psn,
        syndrome: Syndrome,
    },
    /// READ responses for PSNs `psn ..`, `len` bytes left from `va`; `first`: none of this
    /// response has gone out.
    Read {
        psn: Psn,
        rkey: u32,
        va: u64,
        len: u32,
        first: bool,
    },
}

/// A WRITE message under way.
#[derive(Clone, Copy, Debug)]
struct Writing {
    rkey: u32,
    va: u64,
    remaining: u32,
}

/// The responder of one queue pair.
#[derive(Debug)]
pub struct Responder {
    /// The requester's queue pair, where answers go.
    dest_qp: u32,
    mtu: u32,
    /// The PSN expected next.
    epsn: Psn,
    /// Messages completed (24 bits on the wire).
    msn: u32,
    writing: Option<Writing>,
    /// A PSN sequence error was sent for the current gap.
    nak_sent: bool,
    /// Packets ahead of the gap since its last NAK.
    ahead_since_nak: u32,
    stopped: bool,
    answers: VecDeque<Answer>,
}

impl Responder {
    pub fn new(dest_qp: u32, start_psn: Psn, mtu: u32) -> Responder {
        assert!(mtu > 0);
        Responder {
            dest_qp,
            mtu,
            epsn: start_psn,
            msn: 0,
            writing: None,
            nak_sent: false,
            ahead_since_nak: 0,
            stopped: false,
            answers: VecDeque::new(),
        }
    }

    pub fn expected(&self) -> Psn {
        self.epsn
    }

    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Starts over at `start_psn` (after a refusal stopped the connection).
    pub fn reset(&mut self, start_psn: Psn) {
        *self = Responder::new(self.dest_qp, start_psn, self.mtu);
    }

    /// Takes a request; `Err` says why it was not carried out (answered or not).
    pub fn receive(&mut self, packet: &Packet, regions: &mut dyn Regions) -> Result<(), Drop> {
        if self.stopped {
            return Err(Drop::Stopped);
        }
        let op = packet.bth.opcode;
        if !op.is_request() {
            return Err(Drop::NotARequest);
        }
        let psn = packet.bth.psn;
        match classify(self.epsn, psn) {
            PsnClass::Ahead => {
                // One NAK per gap, and again every NAK_REPEAT packets past it (the NAK
                // itself may be lost, and the requester would otherwise wait for its timer).
                self.ahead_since_nak += 1;
                if !self.nak_sent || self.ahead_since_nak >= NAK_REPEAT {
                    self.nak_sent = true;
                    self.ahead_since_nak = 0;
                    self.nak(self.epsn, NakCode::PsnSequenceError);
                }
                Err(Drop::Ahead)
            }
            PsnClass::Duplicate => {
                if op == Opcode::ReadRequest {
                    // READs change nothing: answered again from memory as it is now. The
                    // requester went back and asks again, in order, for everything from its
                    // first missing PSN: what is still queued from here on is stale (what
                    // comes before is what it is still waiting for).
                    let reth = packet.reth.ok_or(Drop::NotARequest)?;
                    self.answers.retain(
                        |a| !matches!(a, Answer::Read { psn: from, .. } if from.since(psn) >= 0),
                    );
                    if regions.check(reth.rkey, reth.va, reth.len, false).is_ok() && reth.len > 0 {
                        self.queue(Answer::Read {
                            psn,
                            rkey: reth.rkey,
                            va: reth.va,
                            len: reth.len,
                            first: true,
                        });
                        // Asked again, a READ may take more of its PSNs than its first
                        // request did (a large READ goes in window-sized requests): those
                        // are carried out now.
                        let end = psn.add(reth.len.div_ceil(self.mtu));
                        if end.since(self.epsn) > 0 {
                            self.epsn = end;
                            self.nak_sent = false;
                        }
                    }
                } else {
                    self.ack(self.epsn.add(u32::MAX));
                }
                Err(Drop::Duplicate)
            }
            PsnClass::Expected => match self.carry_out(packet, regions) {
                Ok(()) => Ok(()),
                Err(code) => {
                    self.nak(psn, code);
                    self.stopped = true;
                    Err(Drop::Refused(code))
                }
            },
        }
    }

    fn carry_out(&mut self, packet: &Packet, regions: &mut dyn Regions) -> Result<(), NakCode> {
        let (bth, payload) = (packet.bth, packet.payload);
        let len = payload.len() as u32;
        let mtu = self.mtu;
        match bth.opcode {
            Opcode::WriteFirst | Opcode::WriteOnly => {
                let reth = packet.reth.ok_or(NakCode::InvalidRequest)?;
                let only = bth.opcode == Opcode::WriteOnly;
                let fits = if only {
                    len == reth.len && len <= mtu
                } else {
                    len == mtu && reth.len > mtu
                };
                if self.writing.is_some() || !fits {
                    return Err(NakCode::InvalidRequest);
                }
                regions.check(reth.rkey, reth.va, reth.len, true)?;
                regions.write(reth.rkey, reth.va, payload);
                if only {
                    self.msn = self.msn.wrapping_add(1);
                } else {
                    self.writing = Some(Writing {
                        rkey: reth.rkey,
                        va: reth.va + u64::from(len),
                        remaining: reth.len - len,
                    });
                }
            }
            Opcode::WriteMiddle | Opcode::WriteLast => {
                let w = self.writing.ok_or(NakCode::InvalidRequest)?;
                let last = bth.opcode == Opcode::WriteLast;
                let fits = if last {
                    len == w.remaining && len <= mtu
                } else {
                    len == mtu && w.remaining > mtu
                };
                if !fits {
                    return Err(NakCode::InvalidRequest);
                }
                regions.write(w.rkey, w.va, payload);
                self.writing = if last {
                    self.msn = self.msn.wrapping_add(1);
                    None
                } else {
                    Some(Writing {
                        va: w.va + u64::from(len),
                        remaining: w.remaining - len,
                        ..w
                    })
                };
            }
            Opcode::ReadRequest => {
                let reth = packet.reth.ok_or(NakCode::InvalidRequest)?;
                if self.writing.is_some() || reth.len == 0 {
                    return Err(NakCode::InvalidRequest);
                }
                regions.check(reth.rkey, reth.va, reth.len, false)?;
                self.msn = self.msn.wrapping_add(1);
                self.queue(Answer::Read {
                    psn: bth.psn,
                    rkey: reth.rkey,
                    va: reth.va,
                    len: reth.len,
                    first: true,
                });
                // The responses take the READ's PSNs.
                self.epsn = self.epsn.add(reth.len.div_ceil(mtu));
                self.nak_sent = false;
                return Ok(());
            }
            _ => return Err(NakCode::InvalidRequest),
        }
        self.epsn = self.epsn.next();
        self.nak_sent = false;
        if bth.ack_req {
            self.ack(bth.psn);
        }
        Ok(())
    }

    fn ack(&mut self, psn: Psn) {
        self.queue(Answer::Ack {
            psn,
            syndrome: Syndrome::Ack {
                credits: UNLIMITED_CREDITS,
            },
        });
    }

    fn nak(&mut self, psn: Psn, code: NakCode) {
        self.queue(Answer::Ack {
            psn,
            syndrome: Syndrome::Nak(code),
        });
    }

    /// Queues `a`; an acknowledgement replaces one not yet sent (the newer covers it).
    fn queue(&mut self, a: Answer) {
        if let (
            Answer::Ack {
                syndrome: Syndrome::Ack { .. },
                ..
            },
            Some(Answer::Ack {
                syndrome: Syndrome::Ack { .. },
                ..
            }),
        ) = (a, self.answers.back())
        {
            self.answers.pop_back();
        }
        self.answers.push_back(a);
    }

    /// The next answer, its payload read into `buf`.
    pub fn next_packet<'b>(
        &mut self,
        regions: &dyn Regions,
        buf: &'b mut Vec<u8>,
    ) -> Option<Packet<'b>> {
        let a = self.answers.pop_front()?;
        buf.clear();
        let msn = self.msn & crate::psn::PSN_MASK;
        let ack = Aeth {
            syndrome: Syndrome::Ack {
                credits: UNLIMITED_CREDITS,
            },
            msn,
        };
        Some(match a {
            Answer::Ack { psn, syndrome } => Packet {
                bth: Bth::new(Opcode::Acknowledge, self.dest_qp, psn),
                reth: None,
                aeth: Some(Aeth { syndrome, msn }),
                payload: buf,
            },
            Answer::Read {
                psn,
                rkey,
                va,
                len,
                first,
            } => {
                let n = len.min(self.mtu);
                let last = n == len;
                buf.resize(n as usize, 0);
                regions.read(rkey, va, buf);
                let opcode = match (first, last) {
                    (true, true) => Opcode::ReadResponseOnly,
                    (true, false) => Opcode::ReadResponseFirst,
                    (false, true) => Opcode::ReadResponseLast,
                    (false, false) => Opcode::ReadResponseMiddle,
                };
                if !last {
                    self.answers.push_front(Answer::Read {
                        psn: psn.next(),
                        rkey,
                        va: va + u64::from(n),
                        len: len - n,
                        first: false,
                    });
                }
                Packet {
                    bth: Bth::new(opcode, self.dest_qp, psn),
                    reth: None,
                    aeth: opcode.has_aeth().then_some(ack),
                    payload: buf,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::Reth;

    const KEY: u32 = 9;

    /// One region of 4 KiB under key [`KEY`].
    struct Region(Vec<u8>);

    impl Regions for Region {
        fn check(&self, rkey: u32, va: u64, len: u32, _write: bool) -> Result<(), NakCode> {
            let end = va.checked_add(u64::from(len));
            if rkey != KEY || end.is_none_or(|e| e > self.0.len() as u64) {
                return Err(NakCode::RemoteAccessError);
            }
            Ok(())
        }
        fn write(&mut self, _: u32, va: u64, data: &[u8]) {
            self.0[va as usize..va as usize + data.len()].copy_from_slice(data);
        }
        fn read(&self, _: u32, va: u64, out: &mut [u8]) {
            out.copy_from_slice(&self.0[va as usize..va as usize + out.len()]);
        }
    }

    fn write_only<'a>(psn: u32, va: u64, rkey: u32, data: &'a [u8]) -> Packet<'a> {
        let mut bth = Bth::new(Opcode::WriteOnly, 1, Psn::new(psn));
        bth.ack_req = true;
        Packet {
            bth,
            reth: Some(Reth {
                va,
                rkey,
                len: data.len() as u32,
            }),
            aeth: None,
            payload: data,
        }
    }

    fn answers(r: &mut Responder, mem: &Region) -> Vec<(Opcode, u32, Option<Syndrome>)> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(p) = r.next_packet(mem, &mut buf) {
            out.push((p.bth.opcode, p.bth.psn.get(), p.aeth.map(|a| a.syndrome)));
        }
        out
    }

    const ACK: Option<Syndrome> = Some(Syndrome::Ack {
        credits: UNLIMITED_CREDITS,
    });

    #[test]
    fn outside_the_region_is_refused_and_nothing_is_written() {
        let mut mem = Region(vec![0; 4096]);
        let mut r = Responder::new(1, Psn::new(0), 1024);
        let data = [1u8; 8];
        assert_eq!(
            r.receive(&write_only(0, 4092, KEY, &data), &mut mem),
            Err(Drop::Refused(NakCode::RemoteAccessError))
        );
        assert!(mem.0.iter().all(|b| *b == 0));
        assert_eq!(
            answers(&mut r, &mem),
            vec![(
                Opcode::Acknowledge,
                0,
                Some(Syndrome::Nak(NakCode::RemoteAccessError))
            )]
        );
        // Stopped until reset: even a good request is not carried out.
        assert_eq!(
            r.receive(&write_only(1, 0, KEY, &data), &mut mem),
            Err(Drop::Stopped)
        );
        r.reset(Psn::new(50));
        assert_eq!(r.receive(&write_only(50, 0, KEY, &data), &mut mem), Ok(()));
        assert_eq!(&mem.0[..8], &data);
    }

    #[test]
    fn a_gap_gets_one_nak_and_duplicates_are_not_carried_out_again() {
        let mut mem = Region(vec![0; 4096]);
        let mut r = Responder::new(1, Psn::new(0xff_ffff), 1024);
        assert_eq!(
            r.receive(&write_only(0xff_ffff, 0, KEY, &[1; 4]), &mut mem),
            Ok(())
        );
        // PSN 0 lost; 1 and 2 are ahead: one NAK naming 0.
        for psn in [1, 2] {
            assert_eq!(
                r.receive(&write_only(psn, 8, KEY, &[2; 4]), &mut mem),
                Err(Drop::Ahead)
            );
        }
        assert_eq!(
            answers(&mut r, &mem),
            vec![
                (Opcode::Acknowledge, 0xff_ffff, ACK),
                (
                    Opcode::Acknowledge,
                    0,
                    Some(Syndrome::Nak(NakCode::PsnSequenceError))
                )
            ]
        );
        // The first again (its ACK was lost): acknowledged, not written again.
        mem.0[0] = 77;
        assert_eq!(
            r.receive(&write_only(0xff_ffff, 0, KEY, &[1; 4]), &mut mem),
            Err(Drop::Duplicate)
        );
        assert_eq!(mem.0[0], 77);
        assert_eq!(
            answers(&mut r, &mem),
            vec![(Opcode::Acknowledge, 0xff_ffff, ACK)]
        );
        // The gap stays open: its NAK goes again once NAK_REPEAT more packets are ahead.
        for psn in 3..3 + NAK_REPEAT {
            let _ = r.receive(&write_only(psn, 8, KEY, &[2; 4]), &mut mem);
        }
        assert_eq!(
            answers(&mut r, &mem),
            vec![(
                Opcode::Acknowledge,
                0,
                Some(Syndrome::Nak(NakCode::PsnSequenceError))
            )]
        );
        // A PSN from the far past (2^23 behind) is a duplicate too, not a new request.
        assert_eq!(
            r.receive(&write_only(0x80_0000, 0, KEY, &[1; 4]), &mut mem),
            Err(Drop::Duplicate)
        );
    }

    #[test]
    fn a_write_out_of_sequence_is_an_invalid_request() {
        let mut mem = Region(vec![0; 4096]);
        let mut r = Responder::new(1, Psn::new(0), 1024);
        let middle = Packet {
            bth: Bth::new(Opcode::WriteMiddle, 1, Psn::new(0)),
            reth: None,
            aeth: None,
            payload: &[5; 1024],
        };
        assert_eq!(
            r.receive(&middle, &mut mem),
            Err(Drop::Refused(NakCode::InvalidRequest))
        );
        assert!(mem.0.iter().all(|b| *b == 0));
        // A WRITE Only whose RETH promises another length.
        let mut r = Responder::new(1, Psn::new(0), 1024);
        let mut p = write_only(0, 0, KEY, &[1; 16]);
        p.reth.as_mut().unwrap().len = 32;
        assert_eq!(
            r.receive(&p, &mut mem),
            Err(Drop::Refused(NakCode::InvalidRequest))
        );
    }

    #[test]
    fn a_read_is_answered_in_mtu_pieces_under_its_psns() {
        let mut mem = Region((0..4096).map(|i| i as u8).collect());
        let mut r = Responder::new(1, Psn::new(10), 1024);
        let read = Packet {
            bth: Bth::new(Opcode::ReadRequest, 1, Psn::new(10)),
            reth: Some(Reth {
                va: 100,
                rkey: KEY,
                len: 2500,
            }),
            aeth: None,
            payload: &[],
        };
        assert_eq!(r.receive(&read, &mut mem), Ok(()));
        assert_eq!(r.expected(), Psn::new(13));
        let got = answers(&mut r, &mem);
        assert_eq!(
            got,
            vec![
                (Opcode::ReadResponseFirst, 10, ACK),
                (Opcode::ReadResponseMiddle, 11, None),
                (Opcode::ReadResponseLast, 12, ACK),
            ]
        );
    }
}
