//! For simulations and tests of the protocol: a small deterministic generator, so a run
//! that fails can be run again exactly from its seed, and frames written as a pcap file for
//! tshark.

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

/// `frames` as a pcap file (Ethernet, microsecond timestamps: frame `i` at `i` seconds).
pub fn to_pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(0xa1b2_c3d4u32.to_le_bytes());
    out.extend(2u16.to_le_bytes());
    out.extend(4u16.to_le_bytes());
    out.extend([0u8; 8]);
    out.extend(65_535u32.to_le_bytes());
    // LINKTYPE_ETHERNET.
    out.extend(1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend((i as u32).to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend((f.len() as u32).to_le_bytes());
        out.extend(f);
    }
    out
}
