//! A dataplane of its own for `BPF_PROG_TEST_RUN` tests: its own pinned maps, with `lo` (which
//! exists in every network namespace) as its one port, removed when the test ends.

use xnic::{dataplane::Dataplane, policy::plan::Image};
use xnic_common::maps::{MacOwner, NO_VM, PortEntry, PortRole};

use crate::unique_name;

/// The MAC bound to the test VM, and one no VM owns.
pub const VM_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x10];
pub const PEER_MAC: [u8; 6] = [0x02, 0x78, 0, 0, 0, 0x01];
pub const PORT_SLOT: u32 = 1;
pub const VM_SLOT: u32 = 0;

pub struct Fixture {
    pub dp: Dataplane,
    pub instance: String,
    /// `lo`'s ifindex, where frames "arrive".
    pub ifindex: u32,
    /// What the port and MAC maps hold (written as the daemon writes them).
    pub image: Image,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = xnic::dataplane::teardown(&self.instance);
    }
}

impl Fixture {
    /// `role` says what the port entry for `lo` claims it is. On a VM port the VM's MAC is
    /// bound to it; on an uplink, to a VM port elsewhere.
    pub fn new(role: PortRole) -> Fixture {
        let instance = unique_name();
        let dp = Dataplane::open(&instance, 3).expect("loading the dataplane");
        let ifindex = nix::net::if_::if_nametoindex("lo").expect("lo");
        let mut fx = Fixture {
            dp,
            instance,
            ifindex,
            image: Image::default(),
        };
        let vm_slot = if role == PortRole::Vm { VM_SLOT } else { NO_VM };
        let mut entry = PortEntry::new(PORT_SLOT, vm_slot, role);
        if role == PortRole::Vm {
            // As the daemon writes it: the VM's first MAC in its port's entry.
            entry.mac = VM_MAC;
        }
        let port_ifindex = if role == PortRole::Vm { ifindex } else { 9999 };
        fx.write(|i| {
            i.ports.insert(ifindex, entry);
            i.macs.insert(
                VM_MAC,
                MacOwner {
                    vm_slot: VM_SLOT,
                    port_ifindex,
                },
            );
        });
        fx
    }

    /// Changes the port and MAC maps as `change` says.
    pub fn write(&mut self, change: impl FnOnce(&mut Image)) {
        let mut to = self.image.clone();
        change(&mut to);
        self.image = self.dp.write_image(&self.image, to).unwrap();
    }
}
