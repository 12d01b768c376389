//! The classify/policy step: every combination of port role, parse outcome and MAC owner.

use xnic_common::{
    maps::{MacOwner, NO_VM, PortEntry, PortRole},
    parse::{Layer, ParseError, Parsed},
    verdict::{Action, Direction, Reason, decide, unicast_dst},
};

const VM_PORT_IFINDEX: u32 = 7;
const VM_SLOT: u32 = 3;

fn vm_port() -> PortEntry {
    PortEntry::new(5, VM_SLOT, PortRole::Vm)
}

fn uplink() -> PortEntry {
    PortEntry::new(1, NO_VM, PortRole::Uplink)
}

fn frame(src: [u8; 6], dst: [u8; 6]) -> Parsed {
    Parsed {
        src_mac: src,
        dst_mac: dst,
        ..Parsed::default()
    }
}

const VM_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const OTHER: [u8; 6] = [2, 0, 0, 0, 0, 0x99];
const BROADCAST: [u8; 6] = [0xff; 6];
const MULTICAST_V6: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

#[test]
fn vm_port_passes_frames_from_its_own_mac() {
    let owner = MacOwner {
        vm_slot: VM_SLOT,
        port_ifindex: VM_PORT_IFINDEX,
    };
    let v = decide(
        Some(&vm_port()),
        Ok(()),
        &frame(VM_MAC, OTHER),
        Some(&owner),
        None,
        VM_PORT_IFINDEX,
    );
    assert_eq!(v.reason, Reason::FromVm);
    assert_eq!(v.action(), Action::Pass);
    assert_eq!(v.vm(), Some(VM_SLOT));
    assert_eq!(v.direction, Direction::FromVm);
}

#[test]
fn vm_port_drops_unknown_and_foreign_source_macs() {
    let port = vm_port();
    // No owner at all.
    let v = decide(
        Some(&port),
        Ok(()),
        &frame(OTHER, VM_MAC),
        None,
        None,
        VM_PORT_IFINDEX,
    );
    assert_eq!(
        (v.reason, v.action(), v.vm()),
        (Reason::SpoofedMac, Action::Drop, Some(VM_SLOT))
    );
    // Owned by a VM behind another port.
    let elsewhere = MacOwner {
        vm_slot: 9,
        port_ifindex: 99,
    };
    let v = decide(
        Some(&port),
        Ok(()),
        &frame(OTHER, VM_MAC),
        Some(&elsewhere),
        None,
        VM_PORT_IFINDEX,
    );
    assert_eq!(v.reason, Reason::SpoofedMac);
    // Right port but bound to another VM slot (stale entry).
    let stale = MacOwner {
        vm_slot: 9,
        port_ifindex: VM_PORT_IFINDEX,
    };
    let v = decide(
        Some(&port),
        Ok(()),
        &frame(OTHER, VM_MAC),
        Some(&stale),
        None,
        VM_PORT_IFINDEX,
    );
    assert_eq!(v.reason, Reason::SpoofedMac);
}

#[test]
fn broken_frames_are_dropped_on_every_port_and_attributed_on_vm_ports() {
    for (err, reason) in [
        (ParseError::Truncated(Layer::Ipv4), Reason::Truncated),
        (ParseError::Malformed(Layer::Tcp), Reason::Malformed),
    ] {
        let v = decide(
            Some(&vm_port()),
            Err(err),
            &Parsed::default(),
            None,
            None,
            VM_PORT_IFINDEX,
        );
        assert_eq!(
            (v.reason, v.action(), v.vm()),
            (reason, Action::Drop, Some(VM_SLOT))
        );
        let v = decide(Some(&uplink()), Err(err), &Parsed::default(), None, None, 1);
        assert_eq!((v.reason, v.action(), v.vm()), (reason, Action::Drop, None));
    }
}

#[test]
fn uplink_attributes_frames_to_the_destination_vm() {
    let owner = MacOwner {
        vm_slot: VM_SLOT,
        port_ifindex: VM_PORT_IFINDEX,
    };
    let v = decide(
        Some(&uplink()),
        Ok(()),
        &frame(OTHER, VM_MAC),
        None,
        Some(&owner),
        1,
    );
    assert_eq!(
        (v.reason, v.action(), v.vm()),
        (Reason::ToVm, Action::Pass, Some(VM_SLOT))
    );
    assert_eq!(v.direction, Direction::ToVm);
    let v = decide(
        Some(&uplink()),
        Ok(()),
        &frame(OTHER, VM_MAC),
        None,
        None,
        1,
    );
    assert_eq!(
        (v.reason, v.action(), v.vm()),
        (Reason::NotForVm, Action::Pass, None)
    );
}

#[test]
fn uplink_group_frames_need_no_lookup() {
    for dst in [BROADCAST, MULTICAST_V6] {
        let f = frame(OTHER, dst);
        assert_eq!(unicast_dst(&f), None);
        let v = decide(Some(&uplink()), Ok(()), &f, None, None, 1);
        assert_eq!((v.reason, v.action()), (Reason::Multicast, Action::Pass));
    }
    assert_eq!(unicast_dst(&frame(OTHER, VM_MAC)), Some(VM_MAC));
}

#[test]
fn frames_on_unknown_interfaces_pass_untouched() {
    let v = decide(None, Ok(()), &frame(OTHER, VM_MAC), None, None, 42);
    assert_eq!(
        (v.reason, v.action(), v.vm()),
        (Reason::UnknownPort, Action::Pass, None)
    );
}

#[test]
fn reason_tables_are_complete_and_ordered() {
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(*r as usize, i);
    }
    for (i, s) in xnic_common::parse::Shape::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i);
    }
}

#[test]
fn frames_are_delivered_to_the_destination_vm() {
    let own = MacOwner {
        vm_slot: VM_SLOT,
        port_ifindex: VM_PORT_IFINDEX,
    };
    let other_vm = MacOwner {
        vm_slot: 8,
        port_ifindex: 77,
    };
    // Uplink frame for a VM: delivered to it.
    let v = decide(
        Some(&uplink()),
        Ok(()),
        &frame(OTHER, VM_MAC),
        None,
        Some(&own),
        1,
    );
    assert_eq!(v.deliver_to, VM_SLOT);
    // VM to another VM: counted against the sender, delivered to the receiver.
    let v = decide(
        Some(&vm_port()),
        Ok(()),
        &frame(VM_MAC, OTHER),
        Some(&own),
        Some(&other_vm),
        VM_PORT_IFINDEX,
    );
    assert_eq!(
        (v.reason, v.vm(), v.deliver_to),
        (Reason::FromVm, Some(VM_SLOT), 8)
    );
    // VM to the outside, or to itself: nothing to deliver here.
    let v = decide(
        Some(&vm_port()),
        Ok(()),
        &frame(VM_MAC, OTHER),
        Some(&own),
        None,
        VM_PORT_IFINDEX,
    );
    assert_eq!(v.deliver_to, NO_VM);
    let v = decide(
        Some(&vm_port()),
        Ok(()),
        &frame(VM_MAC, VM_MAC),
        Some(&own),
        Some(&own),
        VM_PORT_IFINDEX,
    );
    assert_eq!(v.deliver_to, NO_VM);
    // A spoofed frame is dropped, never delivered.
    let v = decide(
        Some(&vm_port()),
        Ok(()),
        &frame(OTHER, VM_MAC),
        None,
        Some(&other_vm),
        VM_PORT_IFINDEX,
    );
    assert_eq!((v.reason, v.deliver_to), (Reason::SpoofedMac, NO_VM));
}

#[test]
fn a_vm_ports_first_mac_is_known_without_a_lookup_and_nothing_else_is() {
    use xnic_common::verdict::known_source;
    let mac = [2, 0, 0, 0, 0, 9];
    let mut port = vm_port();
    let p = frame(mac, [2, 0, 0, 0, 0, 1]);
    assert_eq!(
        known_source(&port, &p, VM_PORT_IFINDEX),
        None,
        "no MAC in the entry"
    );
    port.mac = mac;
    let owner = known_source(&port, &p, VM_PORT_IFINDEX).expect("known");
    assert_eq!(
        (owner.vm_slot, owner.port_ifindex),
        (VM_SLOT, VM_PORT_IFINDEX)
    );
    // The fast path gives the verdict a MACS lookup would.
    let v = decide(Some(&port), Ok(()), &p, Some(&owner), None, VM_PORT_IFINDEX);
    assert_eq!(v.reason, Reason::FromVm);
    let other = frame([2, 0, 0, 0, 0, 8], [2, 0, 0, 0, 0, 1]);
    assert_eq!(known_source(&port, &other, VM_PORT_IFINDEX), None);
    let mut up = uplink();
    up.mac = mac;
    assert_eq!(
        known_source(&up, &p, VM_PORT_IFINDEX),
        None,
        "uplinks look up"
    );
}
