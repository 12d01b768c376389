//! For simulations and tests of the protocol: a small deterministic generator, so a run
//! that fails can be run again exactly from its seed.

/// xorshift64: fast, deterministic, not for anything that must be unpredictable.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (any value; zero is taken as one).
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Whether an event of `p` in `of` happens.
    pub fn chance(&mut self, p: u64, of: u64) -> bool {
        self.next_u64() % of < p
    }
}
