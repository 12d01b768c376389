//! Packet sequence numbers: 24 bits that wrap. Comparisons are modular over half the space,
//! as the InfiniBand rules for a reliable connection divide it: a requester never has more
//! than 2^23 PSNs outstanding, so "ahead" and "behind" are always decidable.

/// The PSN space: 24 bits.
pub const PSN_MASK: u32 = 0x00ff_ffff;

/// Half the PSN space: the most PSNs a requester may have outstanding, and the size of the
/// responder's duplicate region behind the PSN it expects.
pub const PSN_HALF: u32 = 1 << 23;

/// A packet sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Psn(u32);

impl Psn {
    /// `n` modulo 2^24.
    pub const fn new(n: u32) -> Psn {
        Psn(n & PSN_MASK)
    }

    pub const fn get(self) -> u32 {
        self.0
    }

    /// `n` PSNs later, wrapping.
    pub const fn add(self, n: u32) -> Psn {
        Psn::new(self.0.wrapping_add(n))
    }

    pub const fn next(self) -> Psn {
        self.add(1)
    }

    /// How far `self` is ahead of `other`, in -2^23 ..= 2^23 - 1 (negative: behind).
    pub const fn since(self, other: Psn) -> i32 {
        // Shift the 24-bit difference to the top of an i32: its sign is the direction.
        ((self.0.wrapping_sub(other.0)) << 8) as i32 >> 8
    }

    /// Whether `self` lies in `[from, from + len)`, wrapping.
    pub const fn within(self, from: Psn, len: u32) -> bool {
        (self.0.wrapping_sub(from.0) & PSN_MASK) < len
    }
}

/// Where a request's PSN falls for a responder that expects `expected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsnClass {
    /// The next one: carried out.
    Expected,
    /// One already carried out (its acknowledgement was lost): answered again, not
    /// carried out again.
    Duplicate,
    /// Ahead: a packet before it was lost. Answered with a PSN sequence error NAK.
    Ahead,
}

/// Classifies request PSN `got` at a responder expecting `expected`: the 2^23 PSNs behind
/// it are duplicates, the rest ahead.
pub fn classify(expected: Psn, got: Psn) -> PsnClass {
    match got.since(expected) {
        0 => PsnClass::Expected,
        d if d < 0 => PsnClass::Duplicate,
        _ => PsnClass::Ahead,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn wraps_at_24_bits() {
        let last = Psn::new(PSN_MASK);
        assert_eq!(last.next(), Psn::new(0));
        assert_eq!(Psn::new(0).since(last), 1);
        assert_eq!(last.since(Psn::new(0)), -1);
        assert_eq!(Psn::new(1 << 24 | 5), Psn::new(5));
        assert!(Psn::new(2).within(last, 4));
        assert!(!Psn::new(3).within(last, 4));
    }

    #[test]
    fn the_space_splits_in_halves() {
        let e = Psn::new(100);
        assert_eq!(classify(e, e), PsnClass::Expected);
        assert_eq!(classify(e, Psn::new(99)), PsnClass::Duplicate);
        assert_eq!(classify(e, e.add(PSN_HALF)), PsnClass::Duplicate);
        assert_eq!(classify(e, e.add(PSN_HALF - 1)), PsnClass::Ahead);
        assert_eq!(classify(e, Psn::new(101)), PsnClass::Ahead);
    }

    proptest! {
        #[test]
        fn since_inverts_add(base in 0u32..=PSN_MASK, n in 0u32..PSN_HALF) {
            let p = Psn::new(base);
            prop_assert_eq!(p.add(n).since(p), n as i32);
            prop_assert_eq!(p.since(p.add(n)), -(n as i32));
            prop_assert!(p.add(n).within(p, n + 1));
        }
    }
}
