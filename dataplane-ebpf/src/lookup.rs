//! The per-frame lookups of ports and MACs: the direct-mapped index first
//! (`xnic_common::index`), the hash map only when the index's slot cannot tell.

use aya_ebpf::maps::Array;
use xnic_common::{
    index::{IndexSlot, Probe, Sealable, mac_key, mac_slot, port_slot},
    maps::{MacKey, MacOwner, PortEntry},
};

use crate::maps::{MAC_INDEX, MACS, PORT_INDEX, PORTS_V2};

/// What `index`'s slot `slot` says about `key`, from one read of the slot.
#[inline(always)]
fn probe<V: Sealable>(index: &Array<IndexSlot<V>>, slot: u32, key: u64) -> Probe<V> {
    match index.get_ptr(slot) {
        // SAFETY: a valid pointer into the array's value for the lifetime of this program;
        // read once (volatile) so that the seal is checked on exactly the fields used.
        Some(p) => unsafe { core::ptr::read_volatile(p) }.probe(key),
        None => Probe::Ask,
    }
}

/// The port entry of interface `ifindex`.
#[inline(always)]
pub fn port_entry(ifindex: u32) -> Option<PortEntry> {
    match probe(&PORT_INDEX, port_slot(ifindex), u64::from(ifindex)) {
        Probe::Found(p) => Some(p),
        Probe::Absent => None,
        // SAFETY: entries are plain data; the daemon replaces them whole, never in place.
        Probe::Ask => unsafe { PORTS_V2.get(ifindex) }.copied(),
    }
}

/// Which VM owns `mac`, and on which port.
#[inline(always)]
pub fn mac_owner(mac: [u8; 6]) -> Option<MacOwner> {
    match probe(&MAC_INDEX, mac_slot(mac), mac_key(mac)) {
        Probe::Found(o) => Some(o),
        Probe::Absent => None,
        // SAFETY: as in `port_entry`.
        Probe::Ask => unsafe { MACS.get(MacKey::new(mac)) }.copied(),
    }
}
