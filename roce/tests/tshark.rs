//! Every kind of packet we build, as Wireshark's InfiniBand dissector reads it: tshark
//! decodes UDP 4791 as RoCEv2 and must find the opcode, queue pair, PSN, RETH and AETH we
//! put in, and nothing malformed.

use std::{io::Write, net::IpAddr, process::Command};

use xnic_roce::{
    headers::{Aeth, Bth, NakCode, Opcode, Reth, Syndrome},
    packet::{Packet, Path, build},
    psn::Psn,
    sim::to_pcap,
};

#[test]
fn tshark_reads_every_packet_as_we_meant_it() {
    let cases: Vec<(Opcode, Option<Syndrome>, usize)> = vec![
        (Opcode::WriteFirst, None, 1024),
        (Opcode::WriteMiddle, None, 1024),
        (Opcode::WriteLast, None, 13),
        (Opcode::WriteOnly, None, 1),
        (Opcode::ReadRequest, None, 0),
        (
            Opcode::ReadResponseFirst,
            Some(Syndrome::Ack { credits: 0x1f }),
            1024,
        ),
        (Opcode::ReadResponseMiddle, None, 1024),
        (
            Opcode::ReadResponseLast,
            Some(Syndrome::Ack { credits: 0x1f }),
            7,
        ),
        (
            Opcode::ReadResponseOnly,
            Some(Syndrome::Ack { credits: 0x1f }),
            64,
        ),
        (
            Opcode::Acknowledge,
            Some(Syndrome::Ack { credits: 0x1f }),
            0,
        ),
        (
            Opcode::Acknowledge,
            Some(Syndrome::Nak(NakCode::PsnSequenceError)),
            0,
        ),
        (
            Opcode::Acknowledge,
            Some(Syndrome::Nak(NakCode::RemoteAccessError)),
            0,
        ),
        (Opcode::Acknowledge, Some(Syndrome::RnrNak { timer: 14 }), 0),
    ];
    let mut frames = Vec::new();
    for (i, (op, syndrome, len)) in cases.iter().enumerate() {
        let payload = vec![0xa5u8; *len];
        let psn = Psn::new(0xff_fff0 + i as u32);
        let packet = Packet {
            bth: Bth::new(*op, 0x00_0abc + i as u32, psn),
            reth: op.has_reth().then_some(Reth {
                va: 0x1000 * i as u64,
                rkey: 0x77,
                len: 4096,
            }),
            aeth: syndrome.map(|s| Aeth {
                syndrome: s,
                msn: i as u32,
            }),
            payload: &payload,
        };
        let v6 = i % 2 == 1;
        let (src_ip, dst_ip): (IpAddr, IpAddr) = if v6 {
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
        } else {
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        };
        let path = Path {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_ip,
            dst_ip,
            src_port: 0xc123,
        };
        let mut out = Vec::new();
        build(&path, &packet, &mut out);
        frames.push(out);
    }
    let file = std::env::temp_dir().join(format!("xnic-roce-{}.pcap", std::process::id()));
    std::fs::File::create(&file)
        .unwrap()
        .write_all(&to_pcap(&frames))
        .unwrap();
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&file)
        .args([
            "-d",
            "udp.port==4791,infiniband",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "infiniband.bth.opcode",
            "-e",
            "infiniband.bth.destqp",
            "-e",
            "infiniband.bth.psn",
            "-e",
            "infiniband.reth.va",
            "-e",
            "infiniband.aeth.syndrome",
            "-e",
            "infiniband.aeth.msn",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert",
        ])
        .output()
        .expect("tshark (run `cargo xtask setup`)");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len(), "{text}");
    for (i, (line, (op, syndrome, _))) in lines.iter().zip(&cases).enumerate() {
        let f: Vec<&str> = line.split('|').collect();
        // tshark prints some fields in hex (0x...), others in decimal.
        let num = |s: &str| -> Option<u64> {
            match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => s.parse().ok(),
            }
        };
        assert_eq!(num(f[0]), Some(*op as u64), "frame {i} opcode: {line}");
        assert_eq!(num(f[1]), Some(0xabc + i as u64), "frame {i} QP: {line}");
        assert_eq!(
            num(f[2]),
            Some(0xff_fff0 + i as u64),
            "frame {i} PSN: {line}"
        );
        if op.has_reth() {
            assert_eq!(num(f[3]), Some(0x1000 * i as u64), "frame {i} RETH: {line}");
        }
        if let Some(s) = syndrome {
            assert_eq!(
                num(f[4]),
                Some(u64::from(s.to_u8())),
                "frame {i} syndrome: {line}"
            );
            assert_eq!(num(f[5]), Some(i as u64), "frame {i} MSN: {line}");
        }
        assert!(
            f[6].is_empty() && f[7].is_empty(),
            "frame {i} not clean: {line}"
        );
    }
}
