//! Keys and values of the dataplane's maps, shared byte for byte by eBPF and userspace.
//!
//! Who writes and reads each map is documented in `docs/ARCHITECTURE.md`.

use crate::{
    limits::{MAX_IFNAME_LEN, MAX_NAME_LEN},
    parse::Shape,
    verdict::Reason,
};

/// A packet and byte count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    #[inline(always)]
    pub fn add(&mut self, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
    }

    pub fn merged(self, other: Counter) -> Counter {
        Counter {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortRole {
    /// A host NIC towards the network.
    Uplink = 1,
    /// The host side of a VM's virtual NIC.
    Vm = 2,
}

impl PortRole {
    pub fn from_u8(v: u8) -> Option<PortRole> {
        match v {
            1 => Some(PortRole::Uplink),
            2 => Some(PortRole::Vm),
            _ => None,
        }
    }
}

/// Value of `PORTS_V2`, keyed by ingress ifindex. 8-byte aligned (like every type the
/// programs copy): the BPF backend copies it with three 8-byte moves instead of byte by byte.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortEntry {
    /// Index into the per-port counter arrays.
    pub slot: u32,
    /// The VM this port belongs to (VM ports only), else [`NO_VM`].
    pub vm_slot: u32,
    /// A [`PortRole`].
    pub role: u8,
    /// [`PORT_STEER`] and friends.
    pub flags: u8,
    /// Uplinks in a team: the team's index (else 0; see [`PORT_TEAM`]).
    pub team: u8,
    /// Uplinks in a team: the member index in it.
    pub member: u8,
    /// VM ports: the VM's first MAC, so the common frame (from that MAC) needs no `MACS`
    /// lookup to prove it is not spoofed. Zero: look every source up.
    pub mac: [u8; 6],
    pub _pad: [u8; 6],
}

/// `PortEntry::flags`: frames arriving here may be steered to other CPUs. Set only for ports
/// in native XDP mode, where the CPU map moves frames before any skb exists (the point of
/// steering); in generic mode the receiving CPU has built the skb already.
pub const PORT_STEER: u8 = 1;

/// `PortEntry::flags`: xnic switches this port's frames itself (a team is configured): frames
/// for a local VM are redirected to its port, a VM's frames for the network to its uplink.
pub const PORT_SWITCH: u8 = 2;

/// `PortEntry::flags`: an uplink that is a member of team `team`.
pub const PORT_TEAM: u8 = 4;

impl PortEntry {
    /// A port entry with no flags and no fast-path MAC.
    pub const fn new(slot: u32, vm_slot: u32, role: PortRole) -> PortEntry {
        PortEntry {
            slot,
            vm_slot,
            role: role as u8,
            flags: 0,
            team: 0,
            member: 0,
            mac: [0; 6],
            _pad: [0; 6],
        }
    }

    #[inline(always)]
    pub fn steers(&self) -> bool {
        self.flags & PORT_STEER != 0
    }

    #[inline(always)]
    pub fn switches(&self) -> bool {
        self.flags & PORT_SWITCH != 0
    }

    #[inline(always)]
    pub fn team_member(&self) -> Option<(u32, u32)> {
        (self.flags & PORT_TEAM != 0).then_some((self.team as u32, self.member as u32))
    }

    #[inline(always)]
    pub fn role(&self) -> Option<PortRole> {
        PortRole::from_u8(self.role)
    }
}

/// `vm_slot` of a port that belongs to no VM.
pub const NO_VM: u32 = u32::MAX;

/// Key of `MACS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl MacKey {
    #[inline(always)]
    pub fn new(mac: [u8; 6]) -> Self {
        MacKey { mac, _pad: [0; 2] }
    }
}

/// Value of `MACS`: which VM owns a MAC and on which port it may send.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MacOwner {
    pub vm_slot: u32,
    pub port_ifindex: u32,
}

/// Value of `VM_STATS` (per CPU), indexed by VM slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmCounters {
    /// Frames the VM sent, seen on its port.
    pub from_vm: Counter,
    /// Frames for the VM, seen on an uplink.
    pub to_vm: Counter,
    /// Frames dropped on the VM's port.
    pub dropped: Counter,
}

/// Index into `VERDICTS_V2` (per CPU): [`Reason::SLOTS`] counters per port slot.
#[inline(always)]
pub fn verdict_index(port_slot: u32, reason: Reason) -> u32 {
    port_slot * Reason::SLOTS as u32 + reason as u32
}

/// Index into `SHAPES_V2` (per CPU): [`Shape::SLOTS`] counters per port slot.
#[inline(always)]
pub fn shape_index(port_slot: u32, shape: Shape) -> u32 {
    port_slot * Shape::SLOTS as u32 + shape as u32
}

/// A NUL-padded name in a fixed-size record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Name<const N: usize>(pub [u8; N]);

impl<const N: usize> Name<N> {
    /// Truncates at `N - 1` bytes so the name always ends in NUL.
    pub fn new(s: &str) -> Self {
        let mut out = [0u8; N];
        let n = s.len().min(N - 1);
        out[..n].copy_from_slice(&s.as_bytes()[..n]);
        Name(out)
    }

    pub fn as_str(&self) -> &str {
        let n = self.0.iter().position(|&b| b == 0).unwrap_or(N);
        core::str::from_utf8(&self.0[..n]).unwrap_or("")
    }
}

impl<const N: usize> Default for Name<N> {
    fn default() -> Self {
        Name([0; N])
    }
}

/// Value of `PORT_TABLE`, indexed by port slot: the daemon's record of which interface owns a
/// slot, kept in the pinned maps so a restarted daemon finds its slots again. Not read by eBPF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRecord {
    pub name: Name<{ MAX_IFNAME_LEN + 1 }>,
    pub ifindex: u32,
    /// A [`PortRole`], or 0 for a free slot.
    pub role: u8,
    pub _pad: [u8; 3],
}

/// Value of `VM_TABLE`, indexed by VM slot; like [`PortRecord`], for VMs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmRecord {
    pub name: Name<{ MAX_NAME_LEN + 1 }>,
    /// 1 when the slot is in use.
    pub in_use: u8,
    pub _pad: [u8; 7],
}

/// Value of `INFO[0]`: what created the pinned maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneInfo {
    /// [`crate::limits::DATAPLANE_ABI`] of the daemon that created the maps; 0 until written.
    pub abi: u32,
    pub _pad: u32,
    /// Wall-clock seconds when the maps were created.
    pub created_unix: u64,
}

/// Value of `LAYOUT[0]`: the version of each map family ([`crate::mapdefs::Family`]) the
/// pinned maps have.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayoutInfo {
    pub versions: [u16; crate::mapdefs::FAMILY_SLOTS],
}
