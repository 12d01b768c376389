//! The InfiniBand transport headers RoCEv2 carries over UDP: the base transport header
//! (BTH), the RDMA extended transport header (RETH) and the ACK extended transport header
//! (AETH). All big-endian.

use crate::psn::{PSN_MASK, Psn};

/// UDP destination port of RoCEv2.
pub const ROCE_PORT: u16 = 4791;

/// The default partition key (full membership of the default partition).
pub const DEFAULT_PKEY: u16 = 0xffff;

pub const BTH_LEN: usize = 12;
pub const RETH_LEN: usize = 16;
pub const AETH_LEN: usize = 4;
pub const ICRC_LEN: usize = 4;

/// Reliable-connection operations (the RC transport's opcodes: the top three bits 0).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Opcode {
    WriteFirst = 0x06,
    WriteMiddle = 0x07,
    WriteLast = 0x08,
    WriteOnly = 0x0a,
    ReadRequest = 0x0c,
    ReadResponseFirst = 0x0d,
    ReadResponseMiddle = 0x0e,
    ReadResponseLast = 0x0f,
    ReadResponseOnly = 0x10,
    Acknowledge = 0x11,
}

impl Opcode {
    pub fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v {
            0x06 => Opcode::WriteFirst,
            0x07 => Opcode::WriteMiddle,
            0x08 => Opcode::WriteLast,
            0x0a => Opcode::WriteOnly,
            0x0c => Opcode::ReadRequest,
            0x0d => Opcode::ReadResponseFirst,
            0x0e => Opcode::ReadResponseMiddle,
            0x0f => Opcode::ReadResponseLast,
            0x10 => Opcode::ReadResponseOnly,
            0x11 => Opcode::Acknowledge,
            _ => return None,
        })
    }

    /// Whether a RETH follows the BTH: the first (or only) packet of a WRITE, and a READ
    /// request.
    pub fn has_reth(self) -> bool {
        matches!(
            self,
            Opcode::WriteFirst | Opcode::WriteOnly | Opcode::ReadRequest
        )
    }

    /// Whether an AETH follows the BTH: acknowledgements and the READ responses that open or
    /// close a response.
    pub fn has_aeth(self) -> bool {
        matches!(
            self,
            Opcode::ReadResponseFirst
                | Opcode::ReadResponseLast
                | Opcode::ReadResponseOnly
                | Opcode::Acknowledge
        )
    }

    /// Whether the packet may carry payload.
    pub fn has_payload(self) -> bool {
        !matches!(self, Opcode::ReadRequest | Opcode::Acknowledge)
    }

    /// Whether the requester sends it (else the responder does).
    pub fn is_request(self) -> bool {
        matches!(
            self,
            Opcode::WriteFirst
                | Opcode::WriteMiddle
                | Opcode::WriteLast
                | Opcode::WriteOnly
                | Opcode::ReadRequest
        )
    }

    /// Whether it ends a message (a WRITE's last or only packet, a READ response's).
    pub fn ends_message(self) -> bool {
        matches!(
            self,
            Opcode::WriteLast
                | Opcode::WriteOnly
                | Opcode::ReadResponseLast
                | Opcode::ReadResponseOnly
        )
    }

    /// The name Wireshark's dissector gives it.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::WriteFirst => "RDMA WRITE First",
            Opcode::WriteMiddle => "RDMA WRITE Middle",
            Opcode::WriteLast => "RDMA WRITE Last",
            Opcode::WriteOnly => "RDMA WRITE Only",
            Opcode::ReadRequest => "RDMA READ Request",
            Opcode::ReadResponseFirst => "RDMA READ Response First",
            Opcode::ReadResponseMiddle => "RDMA READ Response Middle",
            Opcode::ReadResponseLast => "RDMA READ Response Last",
            Opcode::ReadResponseOnly => "RDMA READ Response Only",
            Opcode::Acknowledge => "Acknowledge",
        }
    }
}

/// The base transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bth {
    pub opcode: Opcode,
    /// Solicited event (unused by WRITE and READ; kept for what a peer sends).
    pub solicited: bool,
    /// Pad bytes at the end of the payload, to a multiple of 4.
    pub pad: u8,
    pub pkey: u16,
    /// Congestion marks (RoCEv2 uses two of the reserved bits).
    pub fecn: bool,
    pub becn: bool,
    /// The destination queue pair, 24 bits.
    pub dest_qp: u32,
    /// The requester asks for an acknowledgement of this packet.
    pub ack_req: bool,
    pub psn: Psn,
}

/// Base transport header version 0, the only one.
const TVER: u8 = 0;

impl Bth {
    pub fn new(opcode: Opcode, dest_qp: u32, psn: Psn) -> Bth {
        Bth {
            opcode,
            solicited: false,
            pad: 0,
            pkey: DEFAULT_PKEY,
            fecn: false,
            becn: false,
            dest_qp: dest_qp & PSN_MASK,
            ack_req: false,
            psn,
        }
    }

    pub fn write(&self, out: &mut [u8; BTH_LEN]) {
        out[0] = self.opcode as u8;
        // The migration bit stays clear: paths are never migrated.
        out[1] = (u8::from(self.solicited) << 7) | ((self.pad & 3) << 4) | TVER;
        out[2..4].copy_from_slice(&self.pkey.to_be_bytes());
        out[4] = (u8::from(self.fecn) << 7) | (u8::from(self.becn) << 6);
        out[5..8].copy_from_slice(&(self.dest_qp & PSN_MASK).to_be_bytes()[1..]);
        out[8] = u8::from(self.ack_req) << 7;
        out[9..12].copy_from_slice(&self.psn.get().to_be_bytes()[1..]);
    }

    pub fn read(b: &[u8; BTH_LEN]) -> Result<Bth, HeaderError> {
        let opcode = Opcode::from_u8(b[0]).ok_or(HeaderError::UnknownOpcode(b[0]))?;
        if b[1] & 0x0f != TVER {
            return Err(HeaderError::Version(b[1] & 0x0f));
        }
        Ok(Bth {
            opcode,
            solicited: b[1] & 0x80 != 0,
            pad: (b[1] >> 4) & 3,
            pkey: u16::from_be_bytes([b[2], b[3]]),
            fecn: b[4] & 0x80 != 0,
            becn: b[4] & 0x40 != 0,
            dest_qp: u32::from_be_bytes([0, b[5], b[6], b[7]]),
            ack_req: b[8] & 0x80 != 0,
            psn: Psn::new(u32::from_be_bytes([0, b[9], b[10], b[11]])),
        })
    }
}

/// The RDMA extended transport header: where in the peer's region, with which key, how much.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reth {
    pub va: u64,
    pub rkey: u32,
    pub len: u32,
}

impl Reth {
    pub fn write(&self, out: &mut [u8; RETH_LEN]) {
        out[0..8].copy_from_slice(&self.va.to_be_bytes());
        out[8..12].copy_from_slice(&self.rkey.to_be_bytes());
        out[12..16].copy_from_slice(&self.len.to_be_bytes());
    }

    pub fn read(b: &[u8; RETH_LEN]) -> Reth {
        Reth {
            va: u64::from_be_bytes(b[0..8].try_into().expect("8 bytes")),
            rkey: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
            len: u32::from_be_bytes(b[12..16].try_into().expect("4 bytes")),
        }
    }
}

/// Why a responder refuses a request (the NAK codes of the AETH syndrome).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NakCode {
    /// A PSN ahead of the one expected: a packet before it was lost.
    PsnSequenceError = 0,
    /// An opcode out of sequence, a length that does not fit, an unsupported operation.
    InvalidRequest = 1,
    /// A wrong key or an access outside the region.
    RemoteAccessError = 2,
    /// The responder cannot carry out a valid request.
    RemoteOperationalError = 3,
    InvalidRdRequest = 4,
}

impl NakCode {
    pub fn from_u8(v: u8) -> Option<NakCode> {
        Some(match v {
            0 => NakCode::PsnSequenceError,
            1 => NakCode::InvalidRequest,
            2 => NakCode::RemoteAccessError,
            3 => NakCode::RemoteOperationalError,
            4 => NakCode::InvalidRdRequest,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            NakCode::PsnSequenceError => "psn_sequence_error",
            NakCode::InvalidRequest => "invalid_request",
            NakCode::RemoteAccessError => "remote_access_error",
            NakCode::RemoteOperationalError => "remote_operational_error",
            NakCode::InvalidRdRequest => "invalid_rd_request",
        }
    }
}

/// The AETH syndrome: what an acknowledgement says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syndrome {
    /// Everything up to the PSN is done; `credits` is the 5-bit credit code (end-to-end
    /// flow control of SENDs; [`UNLIMITED_CREDITS`] when there is none).
    Ack {
        credits: u8,
    },
    /// Receiver not ready: retry after the timer's 5-bit code.
    RnrNak {
        timer: u8,
    },
    Nak(NakCode),
}

/// The credit code for "no end-to-end credit limit".
pub const UNLIMITED_CREDITS: u8 = 0x1f;

const SYNDROME_ACK: u8 = 0x00;
const SYNDROME_RNR: u8 = 0x20;
const SYNDROME_NAK: u8 = 0x60;

impl Syndrome {
    pub fn to_u8(self) -> u8 {
        match self {
            Syndrome::Ack { credits } => SYNDROME_ACK | (credits & 0x1f),
            Syndrome::RnrNak { timer } => SYNDROME_RNR | (timer & 0x1f),
            Syndrome::Nak(code) => SYNDROME_NAK | code as u8,
        }
    }

    pub fn from_u8(v: u8) -> Result<Syndrome, HeaderError> {
        let low = v & 0x1f;
        match v & 0xe0 {
            SYNDROME_ACK => Ok(Syndrome::Ack { credits: low }),
            SYNDROME_RNR => Ok(Syndrome::RnrNak { timer: low }),
            SYNDROME_NAK => NakCode::from_u8(low)
                .map(Syndrome::Nak)
                .ok_or(HeaderError::Syndrome(v)),
            _ => Err(HeaderError::Syndrome(v)),
        }
    }
}

/// The ACK extended transport header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aeth {
    pub syndrome: Syndrome,
    /// Message sequence number: how many messages the responder has completed, 24 bits.
    pub msn: u32,
}

impl Aeth {
    pub fn write(&self, out: &mut [u8; AETH_LEN]) {
        out[0] = self.syndrome.to_u8();
        out[1..4].copy_from_slice(&(self.msn & PSN_MASK).to_be_bytes()[1..]);
    }

    pub fn read(b: &[u8; AETH_LEN]) -> Result<Aeth, HeaderError> {
        Ok(Aeth {
            syndrome: Syndrome::from_u8(b[0])?,
            msn: u32::from_be_bytes([0, b[1], b[2], b[3]]),
        })
    }
}

/// A header that cannot be understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// An opcode of another transport or operation than RC WRITE, READ and ACK.
    UnknownOpcode(u8),
    /// A transport header version other than 0.
    Version(u8),
    /// A reserved AETH syndrome.
    Syndrome(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bth_round_trips_every_field() {
        let mut b = Bth::new(Opcode::WriteFirst, 0x12_3456, Psn::new(0xab_cdef));
        b.solicited = true;
        b.pad = 3;
        b.pkey = 0x8001;
        b.fecn = true;
        b.becn = true;
        b.ack_req = true;
        let mut raw = [0u8; BTH_LEN];
        b.write(&mut raw);
        assert_eq!(
            raw,
            [
                0x06, 0xb0, 0x80, 0x01, 0xc0, 0x12, 0x34, 0x56, 0x80, 0xab, 0xcd, 0xef
            ]
        );
        assert_eq!(Bth::read(&raw), Ok(b));
        raw[1] |= 1;
        assert_eq!(Bth::read(&raw), Err(HeaderError::Version(1)));
        raw[0] = 0x04; // RC SEND Only: not ours.
        assert_eq!(Bth::read(&raw), Err(HeaderError::UnknownOpcode(4)));
    }

    #[test]
    fn syndromes_encode_as_the_spec_says() {
        assert_eq!(
            Syndrome::Ack {
                credits: UNLIMITED_CREDITS
            }
            .to_u8(),
            0x1f
        );
        assert_eq!(Syndrome::Nak(NakCode::PsnSequenceError).to_u8(), 0x60);
        assert_eq!(Syndrome::Nak(NakCode::RemoteAccessError).to_u8(), 0x62);
        assert_eq!(Syndrome::RnrNak { timer: 14 }.to_u8(), 0x2e);
        for v in 0..=255u8 {
            if let Ok(s) = Syndrome::from_u8(v) {
                assert_eq!(s.to_u8(), v);
            }
        }
        assert_eq!(Syndrome::from_u8(0x40), Err(HeaderError::Syndrome(0x40)));
        assert_eq!(Syndrome::from_u8(0x65), Err(HeaderError::Syndrome(0x65)));
        let a = Aeth {
            syndrome: Syndrome::Nak(NakCode::InvalidRequest),
            msn: 0x01_0203,
        };
        let mut raw = [0; AETH_LEN];
        a.write(&mut raw);
        assert_eq!(raw, [0x61, 0x01, 0x02, 0x03]);
        assert_eq!(Aeth::read(&raw), Ok(a));
    }

    #[test]
    fn reth_round_trips() {
        let r = Reth {
            va: 0x7f00_0000_1000,
            rkey: 0x1234,
            len: 16,
        };
        let mut raw = [0; RETH_LEN];
        r.write(&mut raw);
        assert_eq!(Reth::read(&raw), r);
        assert_eq!(&raw[..8], &0x7f00_0000_1000u64.to_be_bytes());
    }
}
