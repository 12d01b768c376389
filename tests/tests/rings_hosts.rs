//! Transaction rings between two hosts, each with its xnic daemon and rings worker, over a
//! bridge that can lose packets (nftables in the bridge's namespace: AF_XDP frames pass no
//! netfilter hook on either host). An application on host A WRITEs to and READs from a
//! region of an application on host B; every byte is checked against a model.

use std::{process::Command, time::Duration};

use xnic::{
    api::client::{Client, Method},
    cli::block_on,
    lab::{
        capture::Capture,
        rings::{RingsLab, RingsLabOptions, WorkerKind, exercise, host_ip},
    },
};
use xnic_rings::{
    client::{LocalRegion, QueuePair, RemoteRegion},
    entries::{STATUS_SUCCESS, status_name},
};
use xnic_roce::sim::to_pcap;
use xnic_tests::{unique_name, xnic_bin};

/// The lab with both workers as `kinds`, queue pairs as configured by default (a
/// retransmission timer that two busy CPUs running both hosts do not trip by themselves).
fn lab(kinds: [WorkerKind; 2]) -> RingsLab {
    let options = RingsLabOptions {
        workers: kinds,
        ..RingsLabOptions::default()
    };
    RingsLab::up(&unique_name(), &xnic_bin(), options).expect("the rings lab")
}

const REGION: usize = 4 << 20;

/// The value of the one series of `family` whose labels include `labels`, from the
/// daemon of `instance`.
fn metric(instance: &str, family: &str, labels: &str) -> Option<f64> {
    let (code, body) = block_on(Client::new(instance).request(Method::GET, "/metrics")).unwrap();
    assert!(code.is_success());
    let body = String::from_utf8_lossy(&body).into_owned();
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(labels))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Every frame decodes in tshark's InfiniBand dissector as RoCEv2 with a known opcode and
/// nothing malformed.
fn decodes_cleanly(frames: &[Vec<u8>]) {
    assert!(
        frames.len() >= 4,
        "RoCEv2 frames captured: {}",
        frames.len()
    );
    let file = std::env::temp_dir().join(format!("{}.pcap", unique_name()));
    std::fs::write(&file, to_pcap(frames)).unwrap();
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&file)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "infiniband.bth.opcode",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), frames.len(), "{text}");
    for l in lines {
        let f: Vec<&str> = l.split('|').collect();
        assert!(
            !f[0].is_empty() && f[1].is_empty() && f[2].is_empty(),
            "{l}"
        );
    }
}

/// Posts `n` random WRITEs and READs (1 B to 1 MiB) and checks every byte on both sides.
fn transfer(
    qp: &mut QueuePair,
    local: &LocalRegion,
    remote: &RemoteRegion,
    remote_mem: &LocalRegion,
    n: u64,
    seed: u64,
    diag: &mut dyn FnMut() -> String,
) {
    let done = exercise(qp, local, remote, remote_mem, n, seed, 1 << 20).unwrap();
    assert_eq!(done.transactions, n);
    assert!(done.failed.is_empty(), "{:?} {}", done.failed, diag());
    assert!(
        done.remote_exact,
        "the peer's region differs from the model"
    );
    assert!(
        done.local_exact,
        "the local region (READ results) differs from the model"
    );
}

#[test]
fn writes_and_reads_between_two_hosts_are_exact_through_loss() {
    let hosts = lab([WorkerKind::Thread; 2]);
    let mut a = hosts.client(0).unwrap();
    let mut b = hosts.client(1).unwrap();
    let theirs = b.register("buf", REGION).unwrap();
    let mine = a.register("local", REGION).unwrap();
    let pattern: Vec<u8> = (0..REGION).map(|i| (i * 13 % 251) as u8).collect();
    mine.memory.write(0, &pattern);
    theirs
        .memory
        .write(0, &pattern.iter().rev().copied().collect::<Vec<u8>>());
    let remote = a.lookup(host_ip(1), "buf").unwrap();
    assert_eq!(remote.len, REGION as u64);
    let mut qp = a.connect_qp(host_ip(1)).unwrap();

    let mut diag = || {
        let (mut a, mut b) = (hosts.client(0).unwrap(), hosts.client(1).unwrap());
        format!(
            "\nhere: {:?}\npeer: {:?}",
            a.status().unwrap(),
            b.status().unwrap()
        )
    };
    // 10,000 transactions: 4,000 on a clean wire, 3,000 each through 1 % and 5 % loss.
    transfer(&mut qp, &mine, &remote, &theirs, 4000, 1, &mut diag);
    hosts.lose(1).unwrap();
    transfer(&mut qp, &mine, &remote, &theirs, 3000, 2, &mut diag);
    hosts.lose(5).unwrap();
    transfer(&mut qp, &mine, &remote, &theirs, 3000, 3, &mut diag);
    assert!(hosts.lost() > 0, "the bridge dropped packets");
    let status = a.status().unwrap();
    assert!(status.retransmitted > 0, "{status:?}");
    // The daemon's metrics carry its worker's counters.
    let host = hosts.host(0);
    assert_eq!(metric(host, "xnic_rings_worker_up", ""), Some(1.0));
    let resent = metric(host, "xnic_rings_retransmitted_packets_total", "").unwrap();
    assert!(resent >= status.retransmitted as f64, "{resent}");
    let succeeded = metric(host, "xnic_rings_completions_total", "status=\"success\"").unwrap();
    assert!(succeeded >= 10_000.0, "{succeeded}");
    assert_eq!(metric(host, "xnic_rings_queue_pairs", ""), Some(1.0));
    assert_eq!(metric(host, "xnic_rings_in_flight", ""), Some(0.0));
    let (_, scrape) = block_on(Client::new(host).request(Method::GET, "/metrics")).unwrap();
    let problems =
        xnic_tests::dashboard::check(&String::from_utf8_lossy(&scrape), &["xnic_rings_"]);
    assert!(problems.is_empty(), "{problems:#?}");

    // The CLI: a region held by B's worker, written and read back from A, with every frame
    // on the wire recorded at the bridge.
    let captures: Vec<Capture> = ["p0", "p1"]
        .iter()
        .map(|p| Capture::start_keeping(hosts.bridge_ns(), p, 2048).unwrap())
        .collect();
    let cli = |host: usize, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--instance", hosts.host(host)]);
        xnic_tests::xnic(&all)
    };
    let peer = host_ip(1).to_string();
    let out = cli(1, &["rings", "region", "add", "notes", "--size", "4096"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        0,
        &[
            "rings",
            "write",
            &peer,
            "notes",
            "100",
            "--data",
            "hello, rings",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(0, &["rings", "read", &peer, "notes", "100", "12"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello, rings");
    // Refusals say what is wrong.
    let out = cli(0, &["rings", "read", &peer, "notes", "4090", "12"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("do not fit"),
        "{out:?}"
    );
    let out = cli(0, &["rings", "read", &peer, "nothing", "0", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no region named"),
        "{out:?}"
    );
    let frames: Vec<Vec<u8>> = captures
        .into_iter()
        .flat_map(|c| c.stop().unwrap())
        .map(|c| c.head)
        .filter(|f| f.len() > 42 && f[12..14] == [8, 0] && f[23] == 17 && f[36..38] == [0x12, 0xb7])
        .collect();
    decodes_cleanly(&frames);
    let out = cli(1, &["rings", "status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        s["regions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "notes"),
        "{s}"
    );
    assert!(s["received"].as_u64().unwrap() > 0, "{s}");

    // A wrong key is refused by the peer and writes nothing.
    let before = {
        let mut v = vec![0u8; 64];
        theirs.memory.read(0, &mut v);
        v
    };
    hosts.lose(0).unwrap();
    let forged = RemoteRegion {
        rkey: remote.rkey ^ 0x10,
        len: remote.len,
    };
    qp.write(9999, &mine, 0, &forged, 0, 64).unwrap();
    let c = qp
        .wait(Duration::from_secs(10))
        .unwrap()
        .expect("a completion");
    assert_eq!(status_name(c.status, c.nak), "remote_access_error");
    let mut after = vec![0u8; 64];
    theirs.memory.read(0, &mut after);
    assert_eq!(before, after);
}

#[test]
fn a_killed_worker_fails_what_was_outstanding_and_a_new_one_serves() {
    let mut hosts = lab([WorkerKind::Process, WorkerKind::Thread]);
    let mut b = hosts.client(1).unwrap();
    let theirs = b.register("buf", REGION).unwrap();
    let (mine, remote, mut qp) = {
        let mut a = hosts.client(0).unwrap();
        let mine = a.register("local", REGION).unwrap();
        let remote = a.lookup(host_ip(1), "buf").unwrap();
        let qp = a.connect_qp(host_ip(1)).unwrap();
        // The client's control connection goes with `a`: the queue pair keeps its own.
        (mine, remote, qp)
    };
    // Large WRITEs in flight, with loss so they take a while; then the worker dies.
    hosts.lose(20).unwrap();
    let mut posted = 0;
    for id in 0..64 {
        if qp.write(id, &mine, 0, &remote, 0, 1 << 20).is_ok() {
            posted += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    hosts.kill_worker(0);
    let started = std::time::Instant::now();
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..posted {
        let c = qp
            .wait(Duration::from_secs(10))
            .unwrap()
            .expect("a completion, not a hang");
        *statuses.entry(status_name(c.status, c.nak)).or_insert(0) += 1;
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(statuses.contains_key("worker_gone"), "{statuses:?}");
    assert_eq!(statuses.values().sum::<i32>(), posted);

    // The daemon's metrics say the worker is gone.
    assert_eq!(metric(hosts.host(0), "xnic_rings_worker_up", ""), Some(0.0));

    // A new worker serves new queue pairs at once.
    hosts.lose(0).unwrap();
    hosts.start_worker(0).unwrap();
    let mut a = hosts.client(0).unwrap();
    let mine = a.register("local", REGION).unwrap();
    mine.memory.write(0, b"after the restart");
    let remote = a.lookup(host_ip(1), "buf").unwrap();
    let mut qp = a.connect_qp(host_ip(1)).unwrap();
    qp.write(1, &mine, 0, &remote, 8, 17).unwrap();
    let c = qp
        .wait(Duration::from_secs(10))
        .unwrap()
        .expect("a completion");
    assert_eq!(
        c.status,
        STATUS_SUCCESS,
        "{}\nhere: {:?}\npeer: {:?}",
        status_name(c.status, c.nak),
        a.status().unwrap(),
        b.status().unwrap()
    );
    let mut got = [0u8; 17];
    theirs.memory.read(8, &mut got);
    assert_eq!(&got, b"after the restart");
}
