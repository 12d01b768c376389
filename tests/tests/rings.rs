//! The rings step with the real daemon: RoCEv2 for a queue pair a worker serves reaches the
//! worker's AF_XDP socket byte for byte, RoCEv2 for any other queue pair and everything else
//! stays with the kernel, and what the socket sends leaves by the uplink.

use std::{net::IpAddr, time::Duration};

use xnic::{
    dataplane::{PinDir, RingsMaps},
    lab::{
        capture::{Capture, inject},
        tor_port,
    },
};
use xnic_rings::xsk::{XskConfig, XskSocket};
use xnic_roce::{
    headers::{Bth, Opcode, Reth},
    packet::{Packet, Path, build},
    psn::Psn,
};
use xnic_tests::{TestLab, eventually, reason_count};

/// A WRITE Only to queue pair `qp`, from the tor to the host.
fn write_to(qp: u32) -> Vec<u8> {
    let payload: Vec<u8> = (0..100).collect();
    let mut bth = Bth::new(Opcode::WriteOnly, qp, Psn::new(7));
    bth.ack_req = true;
    let packet = Packet {
        bth,
        reth: Some(Reth {
            va: 0x1000,
            rkey: 0x42,
            len: 100,
        }),
        aeth: None,
        payload: &payload,
    };
    let path = Path {
        src_mac: [0x02, 0x78, 0, 0, 0, 0x99],
        dst_mac: [0x02, 0x78, 0, 0, 0, 0x98],
        src_ip: IpAddr::from([10, 77, 0, 1]),
        dst_ip: IpAddr::from([10, 77, 0, 200]),
        src_port: 0xc001,
    };
    let mut out = Vec::new();
    build(&path, &packet, &mut out);
    out
}

#[test]
fn roce_for_a_served_queue_pair_reaches_the_workers_socket() {
    let mut lab = TestLab::new(1);
    lab.start_daemon();
    let host = lab.lab.host_ns().to_string();
    let tor = lab.lab.tor_ns();
    let pins = PinDir::new(&lab.instance);

    let (sent_tx, sent_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let (got_tx, got_rx) = std::sync::mpsc::channel::<Vec<Vec<u8>>>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    // The worker's side, in the host's namespace: a socket on up0's queue 0.
    let worker = std::thread::spawn(move || {
        xnic::netns::run_in(&host, move || {
            let ifindex = nix::net::if_::if_nametoindex("up0")?;
            let mut sock = XskSocket::open(ifindex, 0, XskConfig::default())?;
            let mut maps = RingsMaps::open(&pins)?;
            maps.set_socket(0, &sock)?;
            maps.serve(0x123)?;
            ready_tx.send(()).ok();
            let mut got = Vec::new();
            let until = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < until && got.is_empty() {
                sock.wait(Duration::from_millis(100))?;
                sock.receive(|f| got.push(f.to_vec()));
            }
            // And one frame the other way.
            if let Ok(frame) = sent_rx.recv_timeout(Duration::from_secs(5)) {
                assert!(sock.send(&frame));
                sock.flush()?;
            }
            std::thread::sleep(Duration::from_millis(300));
            maps.unserve(0x123)?;
            maps.unset_socket(0)?;
            got_tx.send(got).ok();
            Ok(())
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the worker's socket");

    let served = write_to(0x123);
    let other = write_to(0x124);
    let capture = Capture::start_keeping(&tor, &tor_port("up0"), 2048).unwrap();
    inject(&tor, &tor_port("up0"), vec![other.clone(), served.clone()]).unwrap();
    // What the worker sends: the answer it would give.
    let answer = write_to(0x555);
    sent_tx.send(answer.clone()).unwrap();
    let got = got_rx.recv_timeout(Duration::from_secs(15)).unwrap();
    worker.join().unwrap().unwrap();
    let seen = capture.stop().unwrap();

    assert_eq!(
        got,
        vec![served],
        "only the served queue pair's packet, byte for byte"
    );
    assert!(
        seen.iter().any(|c| c.head == answer),
        "the socket's frame left by up0: {} frames seen",
        seen.len()
    );
    assert!(eventually(Duration::from_secs(3), || {
        reason_count(&lab.stats(), "up0", "to_rings").packets == 1
    }));
}
