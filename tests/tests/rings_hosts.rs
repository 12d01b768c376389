//! Transaction rings between two hosts, each with its xnic daemon and rings worker, over a
//! bridge that can lose packets (nftables in the bridge's namespace: AF_XDP frames pass no
//! netfilter hook on either host). An application on host A WRITEs to and READs from a
//! region of an application on host B; every byte is checked against a model.

use std::{
    net::IpAddr,
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use xnic::{
    dataplane::{PinDir, RingsMaps},
    lab::{capture::Capture, daemon::DaemonProcess},
};
use xnic_rings::{
    client::{Client, LocalRegion, QueuePair, RemoteRegion},
    engine::QpConfig,
    entries::{STATUS_SUCCESS, status_name},
    worker::{self, WorkerConfig},
    xsk::XskConfig,
};
use xnic_roce::sim::{XorShift, to_pcap};
use xnic_tests::{unique_name, xnic_bin};

const REGION: usize = 4 << 20;

fn sh(ns: &str, cmd: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two hosts on a bridge; dropped with their daemons, workers and namespaces.
struct Hosts {
    names: [String; 3],
    daemons: Vec<DaemonProcess>,
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// Host A's worker when it runs as `xnic rings run`.
    process: Option<std::process::Child>,
    configs: Vec<PathBuf>,
}

const MACS: [&str; 2] = ["02:66:00:00:00:01", "02:66:00:00:00:02"];

fn ip_of(i: usize) -> IpAddr {
    IpAddr::from([10, 66, 0, i as u8 + 1])
}

fn control(instance: &str) -> PathBuf {
    xnic::config::rings_socket_path(instance)
}

impl Hosts {
    /// Both hosts, their daemons, and B's worker on a thread; A's too, unless
    /// `a_as_process` (then see [`Hosts::start_worker`]).
    fn up(a_as_process: bool) -> Hosts {
        let base = unique_name();
        let names = [format!("{base}a"), format!("{base}b"), format!("{base}m")];
        let mut h = Hosts {
            names: names.clone(),
            daemons: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            workers: Vec::new(),
            process: None,
            configs: Vec::new(),
        };
        for n in &names {
            xnic_tests::ip(&["netns", "add", n]).unwrap();
        }
        let m = &names[2];
        sh(
            m,
            "ip link add br0 type bridge && ip link set br0 up && ip link set lo up",
        );
        for i in 0..2 {
            let (host, port) = (&names[i], format!("p{i}"));
            xnic_tests::ip(&[
                "link", "add", "up0", "netns", host, "type", "veth", "peer", "name", &port,
                "netns", m,
            ])
            .unwrap();
            sh(m, &format!("ip link set {port} master br0 up"));
            let other = 1 - i;
            sh(
                host,
                &format!(
                    "ip link set lo up && ip link set up0 address {} up && \
                     ip addr add {}/24 dev up0 && \
                     ip neigh add {} lladdr {} dev up0 nud permanent && \
                     sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
                    MACS[i],
                    ip_of(i),
                    ip_of(other),
                    MACS[other]
                ),
            );
        }
        std::fs::create_dir_all(xnic::RUN_DIR).unwrap();
        for n in &names[..2] {
            let path = PathBuf::from(xnic::RUN_DIR).join(format!("{n}.test.toml"));
            std::fs::write(
                &path,
                format!("instance = \"{n}\"\nnetns = \"{n}\"\n\n[[uplink]]\nname = \"up0\"\n"),
            )
            .unwrap();
            h.configs.push(path.clone());
            h.daemons.push(
                DaemonProcess::start(&xnic_bin(), &path, n, None, Duration::from_secs(30)).unwrap(),
            );
        }
        let threads = if a_as_process {
            &names[1..2]
        } else {
            &names[..2]
        };
        for n in threads {
            let (n, stop) = (n.clone(), h.stop.clone());
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            h.workers.push(std::thread::spawn(move || {
                xnic::netns::enter(&n).unwrap();
                let mut maps = RingsMaps::open(&PinDir::new(&n)).unwrap();
                let config = WorkerConfig {
                    interface: "up0".into(),
                    queue: 0,
                    control: control(&n),
                    qp: QpConfig {
                        timeout_ns: 5_000_000,
                        ..QpConfig::default()
                    },
                    xsk: XskConfig::default(),
                };
                // Tell the test once the control socket exists.
                let path = config.control.clone();
                let waiter = std::thread::spawn(move || {
                    for _ in 0..500 {
                        if path.exists() {
                            let _ = ready_tx.send(());
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                });
                worker::run(config, &mut maps, &stop).unwrap();
                waiter.join().unwrap();
            }));
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .expect("the worker's control socket");
        }
        if a_as_process {
            h.start_worker();
        }
        h
    }

    /// Starts A's worker as a process (`xnic rings run`) and waits until it answers.
    fn start_worker(&mut self) {
        let n = &self.names[0];
        let child = Command::new(xnic_bin())
            .args([
                "rings",
                "run",
                "--instance",
                n,
                "--interface",
                "up0",
                "--netns",
                n,
            ])
            .process_group(0)
            .spawn()
            .unwrap();
        self.process = Some(child);
        assert!(
            xnic_tests::eventually(Duration::from_secs(10), || Client::connect(&control(n))
                .is_ok()),
            "the worker answers"
        );
    }

    /// SIGKILLs A's worker process.
    fn kill_worker(&mut self) {
        if let Some(mut c) = self.process.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Drops `percent` % of RoCEv2 packets crossing the bridge, each way.
    fn lose(&self, percent: u32) {
        sh(
            &self.names[2],
            &format!(
                "nft add table bridge loss; \
                 nft add chain bridge loss relay '{{ type filter hook forward priority 0; }}'; \
                 nft flush chain bridge loss relay; \
                 nft add rule bridge loss relay udp dport 4791 numgen random mod 100 '<' {percent} counter drop"
            ),
        );
    }

    /// What the loss rule dropped.
    fn lost(&self) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.names[2],
                "nft",
                "list",
                "chain",
                "bridge",
                "loss",
                "relay",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.kill_worker();
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        for d in self.daemons.drain(..) {
            let _ = d.stop();
        }
        for n in &self.names[..2] {
            let _ = xnic::dataplane::teardown(n);
            let _ = xnic::model::store::Store::new(n).remove();
            let _ = std::fs::remove_file(control(n));
        }
        for c in &self.configs {
            let _ = std::fs::remove_file(c);
        }
        for n in &self.names {
            let _ = xnic_tests::ip(&["netns", "del", n]);
        }
    }
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

/// Waits for the next completion, which must be a success.
fn succeeded(qp: &mut QueuePair, diag: &mut dyn FnMut() -> String) {
    let c = qp
        .wait(Duration::from_secs(20))
        .unwrap()
        .expect("a completion");
    assert_eq!(
        c.status,
        STATUS_SUCCESS,
        "{} {}",
        status_name(c.status, c.nak),
        diag()
    );
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
    let mut rng = XorShift::new(seed);
    let mut model_local = vec![0u8; REGION];
    let mut model_remote = vec![0u8; REGION];
    local.memory.read(0, &mut model_local);
    remote_mem.memory.read(0, &mut model_remote);
    let mut completed = 0;
    for id in 0..n {
        let len = (1 + rng.next_u64() % (1 << (rng.next_u64() % 21))).min(1 << 20) as u32;
        let max = (REGION - len as usize) as u64;
        let (l, r) = (rng.next_u64() % max, rng.next_u64() % max);
        let write = rng.next_u64().is_multiple_of(2);
        loop {
            let posted = if write {
                qp.write(id, local, l, remote, r, len)
            } else {
                qp.read(id, local, l, remote, r, len)
            };
            if posted.is_ok() {
                break;
            }
            // Back-pressure: take a completion and try again.
            succeeded(qp, diag);
            completed += 1;
        }
        let (l, r, len) = (l as usize, r as usize, len as usize);
        if write {
            let data = model_local[l..l + len].to_vec();
            model_remote[r..r + len].copy_from_slice(&data);
        } else {
            let data = model_remote[r..r + len].to_vec();
            model_local[l..l + len].copy_from_slice(&data);
        }
    }
    while completed < n {
        succeeded(qp, diag);
        completed += 1;
    }
    let mut got = vec![0u8; REGION];
    remote_mem.memory.read(0, &mut got);
    assert!(
        got == model_remote,
        "the peer's region differs from the model"
    );
    local.memory.read(0, &mut got);
    assert!(
        got == model_local,
        "the local region (READ results) differs from the model"
    );
}

#[test]
fn writes_and_reads_between_two_hosts_are_exact_through_loss() {
    let hosts = Hosts::up(false);
    let mut a = Client::connect(&control(&hosts.names[0])).unwrap();
    let mut b = Client::connect(&control(&hosts.names[1])).unwrap();
    let theirs = b.register("buf", REGION).unwrap();
    let mine = a.register("local", REGION).unwrap();
    let pattern: Vec<u8> = (0..REGION).map(|i| (i * 13 % 251) as u8).collect();
    mine.memory.write(0, &pattern);
    theirs
        .memory
        .write(0, &pattern.iter().rev().copied().collect::<Vec<u8>>());
    let remote = a.lookup(ip_of(1), "buf").unwrap();
    assert_eq!(remote.len, REGION as u64);
    let mut qp = a.connect_qp(ip_of(1)).unwrap();

    let (apath, bpath) = (control(&hosts.names[0]), control(&hosts.names[1]));
    let mut diag = || {
        let mut a = Client::connect(&apath).unwrap();
        let mut b = Client::connect(&bpath).unwrap();
        format!(
            "\nhere: {:?}\npeer: {:?}",
            a.status().unwrap(),
            b.status().unwrap()
        )
    };
    // 10,000 transactions: 4,000 on a clean wire, 3,000 each through 1 % and 5 % loss.
    transfer(&mut qp, &mine, &remote, &theirs, 4000, 1, &mut diag);
    hosts.lose(1);
    transfer(&mut qp, &mine, &remote, &theirs, 3000, 2, &mut diag);
    hosts.lose(5);
    transfer(&mut qp, &mine, &remote, &theirs, 3000, 3, &mut diag);
    assert!(hosts.lost() > 0, "the bridge dropped packets");
    let status = a.status().unwrap();
    assert!(status.retransmitted > 0, "{status:?}");

    // The CLI: a region held by B's worker, written and read back from A, with every frame
    // on the wire recorded at the bridge.
    let captures: Vec<Capture> = ["p0", "p1"]
        .iter()
        .map(|p| Capture::start_keeping(&hosts.names[2], p, 2048).unwrap())
        .collect();
    let cli = |host: usize, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--instance", hosts.names[host].as_str()]);
        xnic_tests::xnic(&all)
    };
    let peer = ip_of(1).to_string();
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
    hosts.lose(0);
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
    let mut hosts = Hosts::up(true);
    let mut b = Client::connect(&control(&hosts.names[1])).unwrap();
    let theirs = b.register("buf", REGION).unwrap();
    let (mine, remote, mut qp) = {
        let mut a = Client::connect(&control(&hosts.names[0])).unwrap();
        let mine = a.register("local", REGION).unwrap();
        let remote = a.lookup(ip_of(1), "buf").unwrap();
        let qp = a.connect_qp(ip_of(1)).unwrap();
        // The client's control connection goes with `a`: the queue pair keeps its own.
        (mine, remote, qp)
    };
    // Large WRITEs in flight, with loss so they take a while; then the worker dies.
    hosts.lose(20);
    let mut posted = 0;
    for id in 0..64 {
        if qp.write(id, &mine, 0, &remote, 0, 1 << 20).is_ok() {
            posted += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    hosts.kill_worker();
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

    // A new worker serves new queue pairs at once.
    hosts.lose(0);
    hosts.start_worker();
    let mut a = Client::connect(&control(&hosts.names[0])).unwrap();
    let mine = a.register("local", REGION).unwrap();
    mine.memory.write(0, b"after the restart");
    let remote = a.lookup(ip_of(1), "buf").unwrap();
    let mut qp = a.connect_qp(ip_of(1)).unwrap();
    qp.write(1, &mine, 0, &remote, 8, 17).unwrap();
    let c = qp
        .wait(Duration::from_secs(10))
        .unwrap()
        .expect("a completion");
    assert_eq!(c.status, STATUS_SUCCESS, "{}", status_name(c.status, c.nak));
    let mut got = [0u8; 17];
    theirs.memory.read(8, &mut got);
    assert_eq!(&got, b"after the restart");
}
