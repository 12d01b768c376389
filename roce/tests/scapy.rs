//! The ICRC of packets we build, recomputed by a second implementation: scapy's
//! `scapy.contrib.roce` (Debian's python3-scapy, which `cargo xtask setup` installs; its
//! release computes the ICRC over IPv4 only).

use std::{
    io::Write,
    net::IpAddr,
    process::{Command, Stdio},
};

use xnic_roce::{
    headers::{Aeth, Bth, Opcode, Reth, Syndrome},
    packet::{Packet, Path, build},
    psn::Psn,
};

/// Reads frames as hex, one a line; prints, for each, the ICRC scapy computes and the one
/// the frame carries.
const SCRIPT: &str = r#"
import sys
from scapy.layers.l2 import Ether
from scapy.contrib.roce import BTH
for line in sys.stdin:
    p = Ether(bytes.fromhex(line.strip()))
    b = p[BTH]
    print(b.compute_icrc(None).hex(), bytes(p)[-4:].hex())
"#;

#[test]
fn scapy_computes_the_same_icrc_for_every_packet_we_build() {
    let ops = [
        Opcode::WriteFirst,
        Opcode::WriteMiddle,
        Opcode::WriteLast,
        Opcode::WriteOnly,
        Opcode::ReadRequest,
        Opcode::ReadResponseFirst,
        Opcode::ReadResponseMiddle,
        Opcode::ReadResponseLast,
        Opcode::ReadResponseOnly,
        Opcode::Acknowledge,
    ];
    let mut frames = Vec::new();
    for i in 0..200u32 {
        let op = ops[i as usize % ops.len()];
        let len = if op.has_payload() {
            (i * 37 % 1025) as usize
        } else {
            0
        };
        let payload: Vec<u8> = (0..len).map(|b| (b as u32 * 7 + i) as u8).collect();
        let mut bth = Bth::new(op, i * 4099 % (1 << 24), Psn::new(i * 65_537));
        bth.ack_req = i % 3 == 0;
        bth.fecn = i % 5 == 0;
        let packet = Packet {
            bth,
            reth: op.has_reth().then_some(Reth {
                va: u64::from(i) << 20,
                rkey: 0x1000 + i,
                len: len as u32,
            }),
            aeth: op.has_aeth().then_some(Aeth {
                syndrome: Syndrome::Ack { credits: 0x1f },
                msn: i,
            }),
            payload: &payload,
        };
        let path = Path {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip: IpAddr::from([10, 0, (i >> 8) as u8, i as u8]),
            dst_ip: IpAddr::from([10, 1, 0, 2]),
            src_port: 0xc000 + i as u16,
        };
        let mut out = Vec::new();
        build(&path, &packet, &mut out);
        frames.push(out);
    }
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (run `cargo xtask setup`)");
    let mut stdin = child.stdin.take().unwrap();
    for f in &frames {
        let hex: String = f.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(stdin, "{hex}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "scapy (python3-scapy, from `cargo xtask setup`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), frames.len());
    for (i, line) in lines.iter().enumerate() {
        let (theirs, ours) = line.split_once(' ').unwrap();
        assert_eq!(theirs, ours, "frame {i}: scapy's ICRC against ours");
    }
}
