//! Upgrades without an outage: a dataplane pinned by an xnic of layout 4 (a fixture: that
//! version's XDP object, loaded and filled the way its daemon did) is adopted by today's
//! daemon under traffic. The same links carry on with the new programs (nothing detached),
//! the receivers' own sequence numbers show no frame lost, duplicated or reordered, and the
//! counters the old programs kept carry on in the new layout.

use std::{net::SocketAddr, time::Duration};

use xnic::{
    config::default_lab_toml,
    lab::traffic::{Receiver, UdpStream, send_udp},
};
use xnic_tests::{TestLab, layout4, unique_name};

/// The default lab without a team or RSS: VM ports and the first uplink on the host's bridge,
/// as far as layout 4's dataplane knew how to run it here.
fn bridged_lab(vms: usize) -> String {
    let text = default_lab_toml(&unique_name(), &unique_name(), vms, false);
    let team = text.find("\n[[team]]").unwrap();
    let lab = text.find("\n[lab]").unwrap();
    format!("{}{}", &text[..team], &text[lab..])
}

#[test]
fn a_layout_4_dataplane_is_adopted_under_traffic_without_losing_a_frame() {
    let mut t = TestLab::with_config(&bridged_lab(2));
    let attached = layout4::start(t.config()).expect("a layout-4 dataplane");
    assert_eq!(attached.len(), 4);
    let links_before: Vec<u32> = attached
        .iter()
        .map(|(name, _)| layout4::link_id(&t.instance, name).unwrap())
        .collect();
    assert!(layout4::map_pinned(&t.instance, "PORTS"));
    assert!(layout4::map_pinned(&t.instance, "VERDICTS"));

    let (ns, tor) = t.lab.endpoint("tor").unwrap();
    let dst = SocketAddr::new(tor, 9400);
    let rx = Receiver::start(Some(&ns), dst).unwrap();
    let vm_ns = t.vm_ns("vm0");
    let sender = std::thread::spawn(move || {
        send_udp(
            Some(&vm_ns),
            UdpStream {
                dst,
                flows: 16,
                pps: 5000,
                duration: Duration::from_secs(4),
                payload: 64,
                zipf: None,
            },
        )
        .unwrap()
    });
    // The old programs forward for a while; then today's daemon takes over.
    std::thread::sleep(Duration::from_millis(1200));
    t.start_daemon();
    let sent = sender.join().unwrap();
    let got = rx.stop().unwrap();
    assert_eq!(
        (got.received, got.reordered, got.duplicates),
        (sent.sent, 0, 0),
        "every datagram through the upgrade: {got:?}"
    );

    let status = t.status();
    assert!(status.adopted);
    assert_eq!(status.abi, xnic_common::limits::DATAPLANE_ABI);
    for (port, link) in attached.iter().zip(&links_before) {
        assert_eq!(
            layout4::link_id(&t.instance, &port.0).unwrap(),
            *link,
            "{} kept its link: the new program was swapped in, nothing detached",
            port.0
        );
        let p = status.ports.iter().find(|p| p.name == port.0).unwrap();
        assert!(p.xdp_ours, "{} runs today's program", port.0);
    }
    for gone in ["PORTS", "VERDICTS", "SHAPES", "STEER_STATS"] {
        assert!(
            !layout4::map_pinned(&t.instance, gone),
            "{gone} was replaced and its pin removed"
        );
    }
    // What the old programs counted carries on in the new counters: every datagram was
    // counted once, before or after the switch (a bump racing the merge may be lost).
    let counted = t.vm("vm0").counters.from_vm.packets;
    assert!(
        counted <= sent.sent && counted + 2 >= sent.sent,
        "{counted} counted of {} sent",
        sent.sent
    );
    // And the upgraded dataplane is adopted again as it is.
    t.take_daemon().stop().unwrap();
    t.start_daemon();
    assert!(t.status().adopted);
    let before = t.vm("vm0").counters.from_vm.packets;
    let rx = Receiver::start(Some(&ns), dst).unwrap();
    let sent = send_udp(
        Some(&t.vm_ns("vm0")),
        UdpStream {
            dst,
            flows: 4,
            pps: 2000,
            duration: Duration::from_millis(250),
            payload: 64,
            zipf: None,
        },
    )
    .unwrap();
    assert_eq!(rx.stop().unwrap().received, sent.sent);
    assert_eq!(t.vm("vm0").counters.from_vm.packets - before, sent.sent);
}
