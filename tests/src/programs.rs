//! A dataplane of its own for `BPF_PROG_TEST_RUN` tests: its own pinned maps, with `lo` (which
//! exists in every network namespace) as its one port, removed when the test ends.

use xnic::{dataplane::Dataplane, policy::plan::Image};
use xnic_common::{
    maps::{Counter, MacOwner, NO_VM, PortEntry, PortRole, VmCounters},
    parse::Shape,
    verdict::Reason,
};

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

/// The counters a frame can move.
#[derive(Debug, PartialEq)]
pub struct Moved {
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    pub action: u32,
    pub reasons: Vec<(Reason, Counter)>,
    pub shapes: Vec<(Shape, Counter)>,
    pub vm: VmCounters,
}

/// Counting what a frame moved.
pub trait Run {
    fn snapshot(&self, slot: u32) -> (xnic::dataplane::PortCounters, VmCounters);
    fn run_on(&mut self, role: PortRole, frame: &[u8], ifindex: u32, slot: u32) -> Moved;
    fn run(&mut self, role: PortRole, frame: &[u8]) -> Moved;
}

impl Run for Fixture {
    fn snapshot(&self, slot: u32) -> (xnic::dataplane::PortCounters, VmCounters) {
        let mut cpus = vec![Counter::default(); self.dp.nr_cpus()];
        (
            self.dp.port_counters(slot, &mut cpus).unwrap(),
            self.dp.vm_counters(VM_SLOT).unwrap(),
        )
    }

    /// Runs `role`'s program on `frame` arriving on `ifindex` and reports what moved.
    fn run_on(&mut self, role: PortRole, frame: &[u8], ifindex: u32, slot: u32) -> Moved {
        let (before, vm_before) = self.snapshot(slot);
        let out = self.dp.test_run(role, frame, ifindex, 1).expect("test run");
        let (after, vm_after) = self.snapshot(slot);
        let diff = |a: Counter, b: Counter| Counter {
            packets: b.packets - a.packets,
            bytes: b.bytes - a.bytes,
        };
        let reasons = Reason::ALL
            .iter()
            .map(|r| {
                (
                    *r,
                    diff(before.reasons[*r as usize], after.reasons[*r as usize]),
                )
            })
            .filter(|(_, c)| c.packets > 0)
            .collect();
        let shapes = Shape::ALL
            .iter()
            .map(|s| {
                (
                    *s,
                    diff(before.shapes[*s as usize], after.shapes[*s as usize]),
                )
            })
            .filter(|(_, c)| c.packets > 0)
            .collect();
        Moved {
            frame: out.frame,
            action: out.action,
            reasons,
            shapes,
            vm: VmCounters {
                from_vm: diff(vm_before.from_vm, vm_after.from_vm),
                to_vm: diff(vm_before.to_vm, vm_after.to_vm),
                dropped: diff(vm_before.dropped, vm_after.dropped),
            },
        }
    }

    fn run(&mut self, role: PortRole, frame: &[u8]) -> Moved {
        let ifindex = self.ifindex;
        self.run_on(role, frame, ifindex, PORT_SLOT)
    }
}

pub fn one(len: usize) -> Counter {
    Counter {
        packets: 1,
        bytes: len as u64,
    }
}
