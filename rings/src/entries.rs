//! What crosses the rings between an application and the worker.

use crate::ring::Entry;

/// `Submit::op`.
pub const OP_WRITE: u8 = 1;
pub const OP_READ: u8 = 2;

/// A work request, as an application posts it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Submit {
    /// The application's identifier, given back in the completion.
    pub id: u64,
    /// [`OP_WRITE`] or [`OP_READ`].
    pub op: u8,
    pub _pad: [u8; 3],
    /// The local region (its id from registration) and where in it.
    pub local_region: u32,
    pub local_offset: u64,
    /// The peer's region (its key) and where in it.
    pub remote_offset: u64,
    pub rkey: u32,
    pub len: u32,
}

// SAFETY: repr(C) integers.
unsafe impl Entry for Submit {}

/// `Complete::status`.
pub const STATUS_SUCCESS: u8 = 0;
/// The peer refused it; `Complete::nak` says why (`xnic_roce::headers::NakCode`).
pub const STATUS_REFUSED: u8 = 1;
/// No answer after the retry limit: the connection stopped.
pub const STATUS_RETRY_EXCEEDED: u8 = 2;
/// Not carried out: an earlier request failed and the connection stopped.
pub const STATUS_FLUSHED: u8 = 3;
/// Refused here: an unknown local region, bytes outside it, no bytes, too many.
pub const STATUS_BAD_REQUEST: u8 = 4;
/// The worker went away before it finished.
pub const STATUS_WORKER_GONE: u8 = 5;

/// A finished work request.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Complete {
    pub id: u64,
    pub status: u8,
    /// With [`STATUS_REFUSED`]: the NAK code.
    pub nak: u8,
    pub _pad: [u8; 6],
}

// SAFETY: repr(C) integers.
unsafe impl Entry for Complete {}

/// A status's name, as the CLI and metrics show it.
pub fn status_name(status: u8, nak: u8) -> &'static str {
    match status {
        STATUS_SUCCESS => "success",
        STATUS_REFUSED => xnic_roce::headers::NakCode::from_u8(nak).map_or("refused", |c| c.name()),
        STATUS_RETRY_EXCEEDED => "retry_exceeded",
        STATUS_FLUSHED => "flushed",
        STATUS_BAD_REQUEST => "bad_request",
        STATUS_WORKER_GONE => "worker_gone",
        _ => "unknown",
    }
}
