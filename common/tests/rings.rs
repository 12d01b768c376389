//! The rings step's packet test: which frames are RoCEv2 for a queue pair.

use etherparse::PacketBuilder;
use xnic_common::{
    frame::Frame,
    parse::{Parsed, parse},
    rings::{ROCE_PORT, dest_qp},
};

fn udp(dst_port: u16, payload: &[u8], v6: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let b = if v6 {
        b.ipv6([0xfd; 16], [0xfe; 16], 64)
    } else {
        b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
    };
    b.udp(0xc000, dst_port).write(&mut out, payload).unwrap();
    out
}

fn qp_of(bytes: &[u8]) -> Option<u32> {
    let frame = Frame::from_slice(bytes);
    let mut parsed = Parsed::default();
    parse(&frame, &mut parsed).ok()?;
    dest_qp(&frame, &parsed)
}

#[test]
fn finds_the_queue_pair_of_roce_only() {
    let bth = [
        0x0a, 0, 0xff, 0xff, 0, 0x12, 0x34, 0x56, 0x80, 0, 0, 1, 0, 0, 0, 0,
    ];
    for v6 in [false, true] {
        assert_eq!(qp_of(&udp(ROCE_PORT, &bth, v6)), Some(0x12_3456));
        // Another port, or a BTH cut short.
        assert_eq!(qp_of(&udp(4789, &bth, v6)), None);
        assert_eq!(qp_of(&udp(ROCE_PORT, &bth[..7], v6)), None);
    }
}
