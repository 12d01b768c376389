//! `xnic-bench offload`: what the flow offload fast path costs per frame, with one flow in
//! the table and with it full (256 Ki), against the empty program in the same run; then
//! live, on the routed lab ([`crate::offload_live`]), a NAT'd flow's frames/s and iperf3's
//! rate against the slow path, Open vSwitch and the minimal redirect program.
//!
//! Each run is one `BPF_PROG_TEST_RUN` of a fresh frame (a repeated run would rewrite the
//! same buffer: its TTL would run out), timed by the kernel around the program alone; the
//! median over many runs is reported.

use anyhow::bail;
use etherparse::PacketBuilder;
use xnic::{
    dataplane::{
        Dataplane,
        baseline::{Baseline, BaselineProgram},
    },
    policy::{
        offload::{Hop, Tuple, flow_state},
        plan::Image,
    },
};
use xnic_common::{
    flow::{DEFAULT_MAX_FLOWS, FlowConfig, FlowLive},
    maps::{MacOwner, PortEntry, PortRole},
};

use crate::{
    flag,
    report::{Better, Report, timed},
};

const VM_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x10];
const HOST_MAC: [u8; 6] = [0x02, 0x66, 0, 0, 0, 0x01];
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0x55, 0, 0, 0, 0x01];

struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = xnic::dataplane::teardown(&self.0);
    }
}

/// Flow `i`: a VM's UDP flow to a server, masqueraded behind the host's address.
fn tuples(i: u32) -> (Tuple, Tuple) {
    let vm = std::net::Ipv4Addr::from(0x0a01_0000 + (i >> 14) * 256 + 2);
    let sport = 1024 + (i & 0x3fff) as u16;
    let server: std::net::IpAddr = "198.51.100.1".parse().expect("an address");
    let public: std::net::IpAddr = "192.0.2.1".parse().expect("an address");
    let orig = Tuple {
        src: vm.into(),
        dst: server,
        proto: 17,
        src_port: sport,
        dst_port: 53,
    };
    let reply = Tuple {
        src: server,
        dst: public,
        proto: 17,
        src_port: 53,
        dst_port: sport,
    };
    (orig, reply)
}

fn frame(t: &Tuple, seq: u32) -> Vec<u8> {
    let (std::net::IpAddr::V4(src), std::net::IpAddr::V4(dst)) = (t.src, t.dst) else {
        unreachable!("IPv4 tuples")
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(VM_MAC, HOST_MAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(t.src_port, t.dst_port)
        .write(
            &mut out,
            &[seq.to_be_bytes(), [0; 4], [0; 4], [0; 4]].concat(),
        )
        .expect("a frame");
    out
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the offload benchmark needs root (BPF)");
    }
    let runs: usize = flag(args, "--runs", 200_000)?;
    let full: u32 = flag(args, "--flows", DEFAULT_MAX_FLOWS)?;
    let instance = format!("xoffb{}", std::process::id());
    let _guard = Guard(instance.clone());
    let mut dp = Dataplane::open_sized(&instance, 3, full)?;
    let mut baseline = Baseline::load()?;
    let lo = nix::net::if_::if_nametoindex("lo")?;
    // `lo` is a VM port with the VM's MAC, as in the dataplane's tests.
    let mut entry = PortEntry::new(1, 0, PortRole::Vm);
    entry.mac = VM_MAC;
    let mut image = Image::default();
    image.ports.insert(lo, entry);
    image.macs.insert(
        VM_MAC,
        MacOwner {
            vm_slot: 0,
            port_ifindex: lo,
        },
    );
    dp.write_image(&Image::default(), image)?;
    dp.set_flow_config(FlowConfig {
        enabled: 1,
        ..FlowConfig::default()
    })?;
    dp.add_flow_port(lo)?;
    let hop = Hop {
        ifindex: lo,
        src_mac: HOST_MAC,
        dst_mac: NEXT_HOP_MAC,
        mtu: 1500,
        tunnel: None,
    };
    let now = xnic::features::team::monotonic_ns();
    let place = |dp: &mut Dataplane, i: u32| -> anyhow::Result<()> {
        let (orig, reply) = tuples(i);
        let (keys, mut state) = flow_state(&orig, &reply, &[hop, hop], [0, 0], |_| true)
            .map_err(|e| anyhow::anyhow!("flow {i}: {e:?}"))?;
        state.generation = 1;
        // Both directions on the fast path, as after their promotion.
        dp.insert_flow(i, &keys, &state, FlowLive::active(&state, now))
    };
    let measured = tuples(0).0;
    let stranger = Tuple {
        dst_port: 54,
        ..measured
    };
    let mut report = Report::new("offload");
    report.notes.push(format!(
        "Per frame: single BPF_PROG_TEST_RUN runs of a fresh 64-byte-payload IPv4/UDP frame on a VM port, timed by the kernel around the program, median of {runs}; the hit is SNAT'd (addresses, port, both checksums, TTL, MACs) and redirected. A single run carries the kernel's fixed per-run cost, which the empty program's figure shows: compare the differences."
    ));
    let mut rows = Vec::new();
    for (label, flows) in [("1 flow", 1u32), ("full table", full)] {
        eprintln!("filling the table: {flows} flow(s)");
        for i in 0..flows {
            if dp.flow_state(i)?.generation == 0 {
                place(&mut dp, i)?;
            }
        }
        let empty = timed(runs, |s| {
            Ok(baseline
                .test_run(BaselineProgram::Pass, &frame(&measured, s), 1)?
                .ns_per_run)
        })?;
        let hit = timed(runs, |s| {
            let out = dp.test_run(PortRole::Vm, &frame(&measured, s), lo, 1)?;
            if out.action != 4 {
                bail!(
                    "the measured flow was not forwarded (action {})",
                    out.action
                );
            }
            Ok(out.ns_per_run)
        })?;
        let miss = timed(runs, |s| {
            Ok(dp
                .test_run(PortRole::Vm, &frame(&stranger, s), lo, 1)?
                .ns_per_run)
        })?;
        eprintln!("  {label}: hit {hit:.0} ns, miss {miss:.0} ns, empty program {empty:.0} ns");
        rows.push((label, flows, hit, miss, empty));
    }
    for (label, flows, hit, miss, empty) in &rows {
        report.add(
            "ns per frame",
            &format!("fast-path hit (SNAT + redirect), {label} ({flows} flows)"),
            "ns",
            Better::Lower,
            *hit,
            &[("empty XDP program", *empty)],
        );
        report.add(
            "ns per frame",
            &format!("no flow of the frame's (to the slow path untouched), {label}"),
            "ns",
            Better::Lower,
            *miss,
            &[("empty XDP program", *empty)],
        );
    }
    let (one, fullrow) = (&rows[0], &rows[1]);
    report.add(
        "ns per frame",
        "fast-path hit, full table against one flow",
        "ns",
        Better::Lower,
        fullrow.2,
        &[("one flow in the table (same run)", one.2)],
    );
    if !args.iter().any(|a| a == "--no-live") {
        eprintln!("live: the routed lab");
        let opts = crate::offload_live::LiveOpts {
            secs: flag(args, "--secs", 3.0)?,
            rounds: flag(args, "--rounds", 3)?,
            tcp_secs: flag(args, "--tcp-secs", 8)?,
            only_moves: args.iter().any(|a| a == "--only-moves"),
        };
        crate::offload_live::rows(&mut report, &opts)?;
    }
    report.write()
}
