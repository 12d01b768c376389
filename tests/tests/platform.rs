//! Day-2 operations on the real daemon: VMs added, changed and removed at run time under
//! traffic, a whole configuration applied, the desired state surviving a restart, VM ports
//! that come and go, and changes that cannot work refused whole. Loss, reordering and
//! duplicates are counted by the receivers' own sequence numbers, not by xnic.

use std::{net::SocketAddr, thread::JoinHandle, time::Duration, time::Instant};

use xnic::{
    api::{
        client::Method,
        types::{ChangeView, DesiredView, Event, VmView},
    },
    cli::block_on,
    config::default_lab_toml,
    lab::traffic::{Receiver, RecvReport, SendReport, UdpStream, send_udp},
};
use xnic_tests::{TestLab, eventually, index_faults, unique_name, xnic};

/// A lab of `vms` VMs (IPv6 off: the lab is silent unless a test sends).
fn lab_text(vms: usize) -> String {
    default_lab_toml(&unique_name(), &unique_name(), vms, false)
}

/// `text` without VM `name`'s `[[vm]]` section.
fn without_vm(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("\n[[vm]]\nname = \"{name}\""))
        .expect("the VM's section");
    let end = text[start + 1..]
        .find("\n[")
        .map_or(text.len(), |i| start + 1 + i);
    format!("{}{}", &text[..start], &text[end..])
}

fn tor_sink(t: &TestLab, port: u16) -> (Receiver, SocketAddr) {
    let (ns, addr) = t.lab.endpoint("tor").unwrap();
    let addr = SocketAddr::new(addr, port);
    (Receiver::start(Some(&ns), addr).unwrap(), addr)
}

fn send(t: &TestLab, vm: &str, dst: SocketAddr, pps: u64, secs: f64) -> JoinHandle<SendReport> {
    let ns = t.vm_ns(vm);
    std::thread::spawn(move || {
        send_udp(
            Some(&ns),
            UdpStream {
                dst,
                flows: 8,
                pps,
                duration: Duration::from_secs_f64(secs),
                payload: 64,
                zipf: None,
            },
        )
        .unwrap()
    })
}

/// `vm` sends 2000 datagrams/s to the tor for `secs`: every one arrives, and its VM's
/// counter (counting from zero) says exactly as many.
fn assert_exact_delivery(t: &TestLab, vm: &str, port: u16, secs: f64) {
    let (rx, dst) = tor_sink(t, port);
    let sent = send(t, vm, dst, 2000, secs).join().unwrap();
    assert_eq!(rx.stop().unwrap().received, sent.sent);
    assert_eq!(t.vm(vm).counters.from_vm.packets, sent.sent);
}

/// Runs `xnic ARGS --instance I`: stdout on success, stderr on failure.
fn cli(t: &TestLab, args: &[&str]) -> Result<String, String> {
    let mut all = args.to_vec();
    all.extend_from_slice(&["--instance", &t.instance]);
    let out = xnic(&all);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn desired(t: &TestLab) -> DesiredView {
    block_on(t.client().get("/v1/config")).expect("GET /v1/config")
}

fn events(t: &TestLab) -> Vec<Event> {
    block_on(t.client().get("/v1/events")).expect("GET /v1/events")
}

fn metrics(t: &TestLab) -> String {
    let (status, body) = block_on(t.client().request(Method::GET, "/metrics")).unwrap();
    assert!(status.is_success());
    String::from_utf8_lossy(&body).into_owned()
}

fn try_vm(t: &TestLab, name: &str) -> Result<VmView, String> {
    block_on(t.client().get::<VmView>(&format!("/v1/vms/{name}"))).map_err(|e| format!("{e:#}"))
}

/// What the changed VM and the added one look like; checked before and after the restart.
fn assert_changes_hold(t: &TestLab, generation: u64) {
    let vm1 = t.vm("vm1");
    let team = vm1.team.as_ref().expect("vm1 is teamed");
    assert_eq!(team.allocation_mbps, Some(100.0));
    assert_eq!(team.policy, "mac-hash");
    assert_eq!(team.pinned_uplink.as_deref(), Some("up1"));
    assert_eq!(team.uplink, "up1");
    assert_eq!(team.priority, 3, "from the applied file");
    let rss = vm1.rss.as_ref().expect("RSS is on");
    assert_eq!((rss.state.as_str(), rss.pinned), ("shared:shared-a", true));
    let vm4 = t.vm("vm4");
    assert_eq!(vm4.port_state, "attached");
    assert_eq!(vm4.team.as_ref().and_then(|t| t.burst_kib), Some(256));
    let err = try_vm(t, "vm3").unwrap_err();
    assert!(err.contains("no VM named \"vm3\""), "{err}");
    let d = desired(t);
    assert_eq!(d.generation, generation);
    assert!(d.config.contains("name = \"shared-c\""), "{}", d.config);
    let m = metrics(t);
    assert!(
        m.contains(&format!(
            "xnic_desired_generation{{instance=\"{}\"}} {generation}",
            t.instance
        )),
        "{m}"
    );
    assert!(
        m.contains("xnic_team_vm_granted_bps{") && m.contains("vm=\"vm1\"} 100000000"),
        "{m}"
    );
    assert!(!m.contains("vm=\"vm3\""), "a removed VM leaves the metrics");
}

#[test]
fn runtime_changes_leave_other_vms_alone_and_survive_a_restart() {
    let text = lab_text(5);
    let mut t = TestLab::with_config(&text);
    // The daemon starts without vm4 (its port exists: the lab made it).
    std::fs::write(&t.config_path, without_vm(&text, "vm4")).unwrap();
    t.start_daemon();
    let g0 = desired(&t).generation;

    let sinks: Vec<(Receiver, SocketAddr)> = (0..3).map(|i| tor_sink(&t, 9100 + i)).collect();
    let senders: Vec<JoinHandle<SendReport>> = (0..3)
        .map(|i| send(&t, &format!("vm{i}"), sinks[i].1, 2000, 5.0))
        .collect();
    std::thread::sleep(Duration::from_millis(800));

    let out = cli(
        &t,
        &[
            "vm",
            "add",
            "vm4",
            "--port",
            "vm4",
            "--mac",
            "02:77:00:00:00:14",
            "--ip",
            "10.77.0.14/24",
            "--bandwidth-mbps",
            "200",
        ],
    )
    .unwrap();
    assert!(out.contains("vm vm4: added"), "{out}");
    let out = cli(
        &t,
        &[
            "vm",
            "set",
            "vm1",
            "--bandwidth-mbps",
            "100",
            "--team-policy",
            "mac-hash",
            "--uplink",
            "up1",
            "--rss",
            "shared-a",
        ],
    )
    .unwrap();
    for line in [
        "vm vm1: bandwidth_mbps: (unset) → 100.0",
        "vm vm1: team_policy: (unset) → \"mac-hash\"",
        "vm vm1: uplink: (unset) → \"up1\"",
        "vm vm1: rss: \"auto\" → \"shared-a\"",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    let out = cli(&t, &["vm", "del", "vm3"]).unwrap();
    assert!(out.contains("vm vm3: removed"), "{out}");

    // A whole file with three changes, from the desired state itself.
    let mut file = desired(&t).config;
    let vm1 = file.find("name = \"vm1\"").unwrap();
    let prio = vm1 + file[vm1..].find("priority = 0").unwrap();
    file.replace_range(prio..prio + "priority = 0".len(), "priority = 3");
    file = file.replacen("name = \"vm4\"\n", "name = \"vm4\"\nburst_kib = 256\n", 1);
    file.push_str("\n[[rss.engine]]\nname = \"shared-c\"\nkind = \"shared\"\ncpus = [0]\n");
    let path = t.config_path.with_extension("apply.toml");
    std::fs::write(&path, &file).unwrap();
    let p = path.to_str().unwrap();
    let dry = cli(&t, &["apply", "--config", p, "--dry-run"]).unwrap();
    assert!(
        dry.contains("would change") && dry.contains("nothing applied"),
        "{dry}"
    );
    let out = cli(&t, &["apply", "--config", p, "--json"]).unwrap();
    let change: ChangeView = serde_json::from_str(&out).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(change.changes.len(), 3, "{:?}", change.changes);
    assert!(
        change
            .changes
            .contains(&"vm vm1: priority: 0 → 3".to_string())
    );
    assert!(
        change
            .changes
            .contains(&"rss.engine shared-c: added".to_string())
    );
    let generation = change.generation;
    assert_eq!(
        generation,
        g0 + 4,
        "three commands and one file: four generations"
    );

    let reports: Vec<(SendReport, RecvReport)> = senders
        .into_iter()
        .zip(sinks)
        .map(|(s, (rx, _))| {
            let sent = s.join().unwrap();
            (sent, rx.stop().unwrap())
        })
        .collect();
    for i in [0, 2] {
        let (sent, got) = &reports[i];
        assert_eq!(
            (got.received, got.reordered, got.duplicates),
            (sent.sent, 0, 0),
            "vm{i} was not touched: {got:?}"
        );
    }
    let (sent, got) = &reports[1];
    assert!(
        got.received * 10 >= sent.sent * 9,
        "vm1 kept sending: {got:?}"
    );

    assert_changes_hold(&t, generation);
    let kinds: Vec<(String, String)> = events(&t)
        .into_iter()
        .map(|e| (e.kind, e.subject))
        .collect();
    for want in [
        ("vm_added", "vm4"),
        ("vm_removed", "vm3"),
        ("engine_added", "shared-c"),
    ] {
        assert!(
            kinds.iter().any(|(k, s)| k == want.0 && s == want.1),
            "{want:?} in {kinds:?}"
        );
    }
    assert_eq!(kinds.iter().filter(|(k, _)| k == "changed").count(), 4);

    // A restart with the configuration file unchanged keeps every runtime change.
    t.take_daemon().stop().unwrap();
    t.start_daemon();
    assert_changes_hold(&t, generation);
    // vm4's frames are forwarded after the restart too (exact counts, both ways).
    assert_exact_delivery(&t, "vm4", 9104, 0.25);
    // After all of that, the frames' indexes say exactly what their hash maps hold.
    let faults = index_faults(&t.instance).unwrap();
    assert!(faults.is_empty(), "{faults:#?}");
}

#[test]
fn a_vm_port_recreated_under_traffic_comes_back_with_its_slot_counters_and_placement() {
    let mut t = TestLab::new(2);
    t.start_daemon();
    cli(
        &t,
        &[
            "vm",
            "set",
            "vm1",
            "--bandwidth-mbps",
            "100",
            "--uplink",
            "up1",
            "--rss",
            "shared-a",
        ],
    )
    .unwrap();
    let before = t.vm("vm1");
    let (rx, dst) = tor_sink(&t, 9200);
    let sender = send(&t, "vm1", dst, 3000, 4.0);
    std::thread::sleep(Duration::from_millis(1000));
    let counted = t.vm("vm1").counters.from_vm.packets;
    assert!(counted > 0, "traffic before the port goes");

    // The VM reboots: its port is deleted and created again (a new ifindex).
    t.lab.unplug("vm1").unwrap();
    assert!(eventually(Duration::from_secs(2), || t
        .vm("vm1")
        .port_state
        == "waiting"));
    std::thread::sleep(Duration::from_millis(300));
    t.lab.plug("vm1").unwrap();
    let plugged = Instant::now();
    assert!(eventually(Duration::from_secs(2), || t
        .vm("vm1")
        .port_state
        == "attached"));
    let took = plugged.elapsed();
    let sent = sender.join().unwrap();
    let got = rx.stop().unwrap();
    // Sends failed while the VM had no interface; what it sent arrived.
    assert!(
        sent.send_errors > 0,
        "the port was gone for a while: {sent:?}"
    );
    assert!(
        got.received > 0 && got.received <= sent.sent,
        "{got:?} of {sent:?}"
    );

    let after = t.vm("vm1");
    assert_eq!(after.slot, before.slot, "same slot");
    assert_eq!(after.macs, before.macs);
    assert!(
        after.counters.from_vm.packets >= counted,
        "counters carry on ({} then {})",
        counted,
        after.counters.from_vm.packets
    );
    let team = after.team.as_ref().unwrap();
    assert_eq!(
        (team.uplink.as_str(), team.allocation_mbps),
        ("up1", Some(100.0))
    );
    assert_eq!(after.rss.as_ref().unwrap().state, "shared:shared-a");
    // And it forwards: every datagram of a new stream arrives and is counted.
    let (rx, dst) = tor_sink(&t, 9201);
    let from_before = t.vm("vm1").counters.from_vm.packets;
    let sent = send(&t, "vm1", dst, 2000, 0.5).join().unwrap();
    assert_eq!(rx.stop().unwrap().received, sent.sent);
    assert_eq!(
        t.vm("vm1").counters.from_vm.packets - from_before,
        sent.sent
    );
    let kinds: Vec<String> = events(&t)
        .into_iter()
        .filter(|e| e.subject == "vm1")
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.contains(&"port_gone".to_string()) && kinds.contains(&"port_appeared".to_string()),
        "{kinds:?}"
    );
    // The kernel dropped the old port's redirect entries with it; later changes still apply.
    let out = cli(&t, &["vm", "set", "vm0", "--priority", "1"]).unwrap();
    assert!(out.contains("vm vm0: priority: 0 → 1"), "{out}");
    // The old ifindex left the port index with the port, the new one is in it.
    let faults = index_faults(&t.instance).unwrap();
    assert!(faults.is_empty(), "{faults:#?}");
    eprintln!("vm1's port was attached {took:?} after it appeared (as polled through the API)");
}

#[test]
fn a_vm_configured_before_its_port_exists_is_attached_when_it_appears() {
    let mut t = TestLab::new(2);
    t.lab.unplug("vm1").unwrap();
    t.start_daemon();
    assert_eq!(t.vm("vm1").port_state, "waiting");
    assert_eq!(t.vm("vm0").port_state, "attached");
    let status = t.status();
    let vm1 = status.ports.iter().find(|p| p.name == "vm1").unwrap();
    assert_eq!(vm1.state, "waiting");

    t.lab.plug("vm1").unwrap();
    assert!(eventually(Duration::from_secs(2), || t
        .vm("vm1")
        .port_state
        == "attached"));
    assert_exact_delivery(&t, "vm1", 9300, 0.5);
}

#[test]
fn changes_that_cannot_work_are_refused_whole() {
    let mut t = TestLab::new(2);
    t.start_daemon();
    let before = desired(&t);
    let cases: [(&[&str], &str); 6] = [
        (
            &["vm", "set", "nosuch", "--priority", "1"],
            "no VM named \"nosuch\"",
        ),
        (
            &[
                "vm",
                "add",
                "vmx",
                "--port",
                "vmx",
                "--mac",
                "02:77:00:00:00:10",
            ],
            "MAC 02:77:00:00:00:10 is bound twice",
        ),
        (
            &[
                "vm",
                "add",
                "vmy",
                "--port",
                "vm0",
                "--mac",
                "02:77:00:00:00:99",
            ],
            "interface \"vm0\" is used twice",
        ),
        (
            &["vm", "set", "vm0", "--team", "nosuch"],
            "no team named \"nosuch\"",
        ),
        (
            &["vm", "set", "vm0", "--uplink", "nosuch"],
            "is not a member of team",
        ),
        (&["vm", "del", "vm9"], "no VM named \"vm9\""),
    ];
    for (args, want) in cases {
        let err = cli(&t, args).expect_err(want);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A bad file: refused with file:line:column and field, nothing applied.
    let path = t.config_path.with_extension("bad.toml");
    let bad = before
        .config
        .replacen("02:77:00:00:00:11", "02:77:00:00:11", 1);
    std::fs::write(&path, &bad).unwrap();
    let line = 1 + bad
        .lines()
        .position(|l| l.contains("02:77:00:00:11"))
        .unwrap();
    let err = cli(&t, &["apply", "--config", path.to_str().unwrap()]).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert!(
        err.contains(&format!("{}:{line}:9: vm[1].macs[0]:", path.display())),
        "{err}"
    );
    // The same through the API, which validates too.
    let body = serde_json::json!({"config": bad, "file": "x.toml"});
    let (status, text) = block_on(t.client().request_with(
        Method::POST,
        "/v1/apply",
        Some(serde_json::to_vec(&body).unwrap()),
    ))
    .unwrap();
    assert_eq!(status.as_u16(), 400);
    assert!(
        String::from_utf8_lossy(&text).contains("x.toml:"),
        "{text:?}"
    );

    // Concurrent changes based on the same generation: one wins, the other is refused.
    let g = before.generation;
    let patch = |prio: i32| {
        let c = t.client();
        let body = serde_json::to_vec(&serde_json::json!({"priority": prio})).unwrap();
        std::thread::spawn(move || {
            block_on(async {
                use xnic::api::client::StatusCode;
                let req = c.request_if_match(Method::PATCH, "/v1/vms/vm0", Some(body), g);
                req.await.map(|(s, _)| s == StatusCode::OK)
            })
            .unwrap()
        })
    };
    let (a, b) = (patch(5), patch(6));
    let won = [a.join().unwrap(), b.join().unwrap()];
    assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    let after = desired(&t);
    assert_eq!(after.generation, g + 1);
    let prio = t.vm("vm0").team.unwrap().priority;
    assert!(prio == 5 || prio == 6);

    // Requests the API cannot take answer in its one error shape.
    for (method, path, body, want) in [
        (Method::POST, "/v1/status", None, 405),
        (Method::PATCH, "/v1/vms/vm0", Some(b"[]".to_vec()), 400),
        (Method::POST, "/v1/vms", Some(b"null".to_vec()), 400),
        (Method::PATCH, "/v1/vms/vm0", Some(b"{}".to_vec()), 400),
        (Method::GET, "/v1/events?since=x", None, 400),
        (Method::GET, "/v1/nope", None, 404),
    ] {
        let (status, text) = block_on(t.client().request_with(method.clone(), path, body)).unwrap();
        assert_eq!(status.as_u16(), want, "{method} {path}");
        let v: serde_json::Value = serde_json::from_slice(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text:?}"));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let long = format!("/v1/vms/{}", "x".repeat(20_000));
    let (status, text) = block_on(t.client().request(Method::GET, &long)).unwrap();
    assert_eq!(status.as_u16(), 414);
    assert!(serde_json::from_slice::<serde_json::Value>(&text).is_ok());
    // And nothing of the refused changes was kept.
    assert_eq!(desired(&t).generation, g + 1);
}

/// Lines `xnic events --follow --json` prints, as they come.
struct Follow {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<Event>,
}

impl Follow {
    fn start(t: &TestLab) -> Follow {
        use std::io::BufRead as _;
        let mut child = std::process::Command::new(xnic_tests::xnic_bin())
            .args(["events", "--follow", "--json", "--instance", &t.instance])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        Follow { child, lines }
    }

    /// The next event of `kind`, within `limit`.
    fn next(&self, kind: &str, limit: Duration) -> Event {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(e) if e.kind == kind => return e,
                Ok(_) => {}
                Err(_) => panic!("no {kind} event within {limit:?}"),
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_applies_the_file_and_a_bad_file_changes_nothing() {
    let text = lab_text(2);
    let mut t = TestLab::with_config(&text);
    let pid = nix::unistd::Pid::from_raw(t.start_daemon().pid() as i32);
    let hup = || nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let follow = Follow::start(&t);
    let g0 = desired(&t).generation;

    // A file that cannot work: refused whole, in the event stream, nothing changed.
    let bad = text.replacen(
        "name = \"vm1\"\n",
        "name = \"vm1\"\nbandwidth_mbps = 50.0\nteam = \"nowhere\"\n",
        1,
    );
    std::fs::write(&t.config_path, bad).unwrap();
    hup();
    let refused = follow.next("refused", Duration::from_secs(5));
    assert!(refused.message.contains("nowhere"), "{}", refused.message);
    assert_eq!(desired(&t).generation, g0);
    assert_eq!(t.vm("vm1").team.unwrap().allocation_mbps, None);

    // The file fixed: applied, shown as a change, kept across a restart.
    let good = text.replacen(
        "name = \"vm1\"\n",
        "name = \"vm1\"\nbandwidth_mbps = 50.0\n",
        1,
    );
    std::fs::write(&t.config_path, &good).unwrap();
    hup();
    let changed = follow.next("changed", Duration::from_secs(5));
    assert!(
        changed.message.contains(&format!("generation {}", g0 + 1)),
        "{}",
        changed.message
    );
    assert_eq!(t.vm("vm1").team.unwrap().allocation_mbps, Some(50.0));
    drop(follow);
    t.take_daemon().stop().unwrap();
    t.start_daemon();
    assert_eq!(t.vm("vm1").team.unwrap().allocation_mbps, Some(50.0));
    assert_eq!(desired(&t).generation, g0 + 1);
}

#[test]
fn an_uplink_that_disappears_is_a_link_down_for_its_team() {
    let mut t = TestLab::with_config(&lab_text(2));
    t.start_daemon();
    let first = t.vm("vm0").team.unwrap().uplink;
    let other = if first == "up0" { "up1" } else { "up0" };
    let (rx, dst) = tor_sink(&t, 9200);
    let sender = send(&t, "vm0", dst, 2000, 5.0);
    std::thread::sleep(Duration::from_millis(800));

    // The active uplink's interface goes away (a NIC unplugged): the team fails over.
    t.lab.unplug_uplink(&first).unwrap();
    assert!(
        eventually(Duration::from_secs(2), || t
            .vm("vm0")
            .team
            .is_some_and(|tm| tm.uplink == other)),
        "vm0 moved to {other}"
    );
    let down = events(&t)
        .into_iter()
        .find(|e| e.kind == "link_down")
        .expect("a link_down event");
    assert!(down.message.contains(&first), "{}", down.message);

    // It comes back (a new interface, a new ifindex): attached again, and the team fails
    // back after its hold-down.
    t.lab.plug_uplink(&first).unwrap();
    assert!(
        eventually(Duration::from_secs(6), || t
            .vm("vm0")
            .team
            .is_some_and(|tm| tm.uplink == first)),
        "vm0 back on {first}"
    );
    assert!(
        t.interfaces_with_xdp().contains(&first),
        "{first} attached again"
    );
    let sent = sender.join().unwrap();
    let got = rx.stop().unwrap();
    // Only the frames in flight on the vanished interface are lost (2000 pps: 0.5 ms each).
    let lost = sent.sent - got.received;
    assert!(lost < 100, "lost {lost} of {}: {got:?}", sent.sent);
    assert_eq!((got.reordered, got.duplicates), (0, 0), "{got:?}");
}
