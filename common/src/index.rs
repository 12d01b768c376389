//! Direct-mapped indexes in front of the hash maps every frame looks up (`PORTS_V2` by
//! ingress ifindex, `MACS` by address).
//!
//! A hash-map lookup costs a frame about 20 ns (hashing the key, walking a bucket); an array
//! lookup is a bounds check. Each key maps to one slot of an index array, and a slot says one
//! of three things about the keys of the hash map that map to it:
//! - [`SLOT_EMPTY`]: none, so the key is not in the map;
//! - [`SLOT_ONE`]: exactly one, with its value, so the frame needs nothing else;
//! - [`SLOT_MANY`]: more than one (a collision): ask the hash map.
//!
//! The hash map stays the authority; the daemon derives every slot from its contents. The
//! kernel copies an array value in place, so a frame may read a slot while the daemon
//! rewrites it: each slot carries a seal over its other fields, and a slot whose seal does not
//! match (a torn read) is treated as [`SLOT_MANY`]. An all-zero slot is a valid empty one, so
//! a freshly created index reads as "nothing here" until the daemon fills it.
//!
//! Order of writes (the daemon's reconciler): a key goes into the hash map before any slot
//! names it, and slots stop naming it before it leaves the hash map, so a frame sees a key
//! either before or after a change, never a slot that names a key the map does not have.

use crate::maps::{MacOwner, PortEntry};

/// Slots of `PORT_INDEX`: a power of two, 4× `MAX_PORTS` rounded up. A port's slot is its
/// ifindex's low bits, and the kernel numbers interfaces consecutively, so ports collide only
/// when their ifindexes lie a multiple of this apart. 40 bytes a slot: 640 KiB.
pub const PORT_INDEX_SIZE: u32 = 16384;

/// Slots of `MAC_INDEX`: a power of two, 4× `MAX_MACS`, so that even a full MAC table has
/// about 78% of its MACs alone in their slot (the rest cost a hash lookup, as without the
/// index). 24 bytes a slot: 1.5 MiB.
pub const MAC_INDEX_SIZE: u32 = 1 << MAC_INDEX_BITS;

/// log2 of [`MAC_INDEX_SIZE`].
pub const MAC_INDEX_BITS: u32 = 16;

const _: () = assert!(PORT_INDEX_SIZE.is_power_of_two());
const _: () = assert!(PORT_INDEX_SIZE >= 3 * crate::limits::MAX_PORTS);
const _: () = assert!(MAC_INDEX_SIZE >= 4 * crate::limits::MAX_MACS);
// No padding: the seal covers every byte a frame reads.
const _: () = assert!(core::mem::size_of::<PortSlot>() == 40);
const _: () = assert!(core::mem::size_of::<MacSlot>() == 24);

/// No key of the map has this slot.
pub const SLOT_EMPTY: u32 = 0;
/// Exactly one key has this slot: `key` and `value` are its.
pub const SLOT_ONE: u32 = 1;
/// Several keys have this slot: look in the hash map.
pub const SLOT_MANY: u32 = 2;

/// One slot of an index (`value` is the hash map's value type).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexSlot<V> {
    /// The key ([`mac_key`], or the ifindex), when `state` is [`SLOT_ONE`].
    pub key: u64,
    pub value: V,
    /// [`SLOT_EMPTY`], [`SLOT_ONE`] or [`SLOT_MANY`].
    pub state: u32,
    /// [`seal`] of the fields above.
    pub seal: u32,
}

/// A slot of `PORT_INDEX`.
pub type PortSlot = IndexSlot<PortEntry>;
/// A slot of `MAC_INDEX`.
pub type MacSlot = IndexSlot<MacOwner>;

/// What a slot says about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe<V> {
    /// The key is in the map with this value.
    Found(V),
    /// The key is not in the map.
    Absent,
    /// The slot cannot tell (a collision, or a slot caught mid-write): ask the hash map.
    Ask,
}

/// A value an index can hold: folded into a slot's seal word by word.
pub trait Sealable: Copy {
    fn fold(&self, h: u64) -> u64;
}

const SEAL_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// One mixing step: a change in any bit of `word` changes the result in about half of its
/// bits. Zero stays zero, so an all-zero slot is sealed.
#[inline(always)]
fn mix(h: u64, word: u64) -> u64 {
    let x = (h ^ word).wrapping_mul(SEAL_MUL);
    x ^ (x >> 29)
}

impl Sealable for MacOwner {
    #[inline(always)]
    fn fold(&self, h: u64) -> u64 {
        mix(
            h,
            u64::from(self.vm_slot) | (u64::from(self.port_ifindex) << 32),
        )
    }
}

impl Sealable for PortEntry {
    #[inline(always)]
    fn fold(&self, h: u64) -> u64 {
        let m = &self.mac;
        let h = mix(h, u64::from(self.slot) | (u64::from(self.vm_slot) << 32));
        let h = mix(
            h,
            u64::from(self.role)
                | (u64::from(self.flags) << 8)
                | (u64::from(self.team) << 16)
                | (u64::from(self.member) << 24),
        );
        mix(h, mac_key(*m))
    }
}

/// The seal of a slot's key, value and state.
#[inline(always)]
pub fn seal<V: Sealable>(key: u64, value: &V, state: u32) -> u32 {
    let h = mix(0, key);
    let h = value.fold(h);
    let h = mix(h, u64::from(state));
    (h as u32) ^ ((h >> 32) as u32)
}

impl<V: Sealable + Default> IndexSlot<V> {
    /// The slot of exactly one key.
    pub fn one(key: u64, value: V) -> Self {
        IndexSlot {
            key,
            value,
            state: SLOT_ONE,
            seal: seal(key, &value, SLOT_ONE),
        }
    }

    /// The slot of several keys.
    pub fn many() -> Self {
        let value = V::default();
        IndexSlot {
            key: 0,
            value,
            state: SLOT_MANY,
            seal: seal(0, &value, SLOT_MANY),
        }
    }
}

impl<V: Sealable> IndexSlot<V> {
    /// What this slot (one read of it) says about `key`.
    #[inline(always)]
    pub fn probe(&self, key: u64) -> Probe<V> {
        if self.seal != seal(self.key, &self.value, self.state) {
            return Probe::Ask;
        }
        match self.state {
            SLOT_EMPTY => Probe::Absent,
            SLOT_ONE if self.key == key => Probe::Found(self.value),
            SLOT_ONE => Probe::Absent,
            _ => Probe::Ask,
        }
    }
}

/// A MAC as an index key: its six bytes as a big-endian number, so MACs counted up from one
/// prefix are consecutive keys.
#[inline(always)]
pub fn mac_key(mac: [u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

/// A MAC's slot in `MAC_INDEX`: Fibonacci hashing, which spreads both consecutive MACs (one
/// vendor prefix, counted up) and random ones.
#[inline(always)]
pub fn mac_slot(mac: [u8; 6]) -> u32 {
    (mac_key(mac).wrapping_mul(SEAL_MUL) >> (64 - MAC_INDEX_BITS)) as u32
}

/// An ifindex's slot in `PORT_INDEX`.
#[inline(always)]
pub fn port_slot(ifindex: u32) -> u32 {
    ifindex & (PORT_INDEX_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::{NO_VM, PortRole};

    fn owner(vm: u32) -> MacOwner {
        MacOwner {
            vm_slot: vm,
            port_ifindex: 7,
        }
    }

    #[test]
    fn an_all_zero_slot_is_a_sealed_empty_one() {
        assert_eq!(
            MacSlot::default().probe(mac_key([2, 0, 0, 0, 0, 1])),
            Probe::Absent
        );
        assert_eq!(PortSlot::default().probe(7), Probe::Absent);
    }

    #[test]
    fn a_slot_of_one_key_answers_for_it_and_denies_the_rest() {
        let s = MacSlot::one(mac_key([2, 0, 0, 0, 0, 1]), owner(3));
        assert_eq!(s.probe(mac_key([2, 0, 0, 0, 0, 1])), Probe::Found(owner(3)));
        assert_eq!(s.probe(mac_key([2, 0, 0, 0, 0, 2])), Probe::Absent);
        assert_eq!(
            MacSlot::many().probe(mac_key([2, 0, 0, 0, 0, 1])),
            Probe::Ask
        );
    }

    #[test]
    fn any_field_changed_without_a_new_seal_reads_as_ask() {
        let mut p = PortEntry::new(5, NO_VM, PortRole::Uplink);
        p.mac = [2, 0, 0, 0, 0, 9];
        let good = PortSlot::one(12, p);
        let mut torn = [good; 8];
        torn[0].key = 13;
        torn[1].value.slot = 6;
        torn[2].value.vm_slot = 1;
        torn[3].value.flags = 1;
        torn[4].value.member = 1;
        torn[5].value.mac[5] = 8;
        torn[6].state = SLOT_MANY;
        torn[7].state = SLOT_EMPTY;
        for (i, t) in torn.iter().enumerate() {
            assert_eq!(t.probe(t.key), Probe::Ask, "field {i}");
        }
    }

    #[test]
    fn a_slot_torn_between_two_writes_reads_as_ask() {
        // Every byte-wise mix of an old and a new slot that is neither of them.
        let old = MacSlot::one(mac_key([2, 0, 0, 0, 0, 1]), owner(1));
        let new = MacSlot::one(mac_key([2, 0, 0, 0, 0, 1]), owner(2));
        let bytes = |s: &MacSlot| {
            let mut b = [0u8; 24];
            b[..8].copy_from_slice(&s.key.to_le_bytes());
            b[8..12].copy_from_slice(&s.value.vm_slot.to_le_bytes());
            b[12..16].copy_from_slice(&s.value.port_ifindex.to_le_bytes());
            b[16..20].copy_from_slice(&s.state.to_le_bytes());
            b[20..24].copy_from_slice(&s.seal.to_le_bytes());
            b
        };
        let (a, b) = (bytes(&old), bytes(&new));
        for cut in 1..24 {
            let mut m = a;
            m[cut..].copy_from_slice(&b[cut..]);
            if m == a || m == b {
                continue;
            }
            let word = |i: usize| u32::from_le_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
            let s = MacSlot {
                key: u64::from_le_bytes(m[..8].try_into().unwrap()),
                value: MacOwner {
                    vm_slot: word(8),
                    port_ifindex: word(12),
                },
                state: word(16),
                seal: word(20),
            };
            assert_eq!(s.probe(s.key), Probe::Ask, "cut at byte {cut}");
        }
    }

    #[test]
    fn consecutive_macs_and_ifindexes_do_not_collide() {
        let mut seen = [false; MAC_INDEX_SIZE as usize];
        for i in 0..4096u32 {
            let b = i.to_be_bytes();
            let s = mac_slot([0x52, 0x54, b[0], b[1], b[2], b[3]]) as usize;
            assert!(!seen[s], "MAC {i} collides");
            seen[s] = true;
        }
        for i in 1..PORT_INDEX_SIZE {
            assert_eq!(port_slot(i), i);
        }
    }
}
