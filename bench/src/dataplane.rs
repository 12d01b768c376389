//! `dataplane`: what the XDP programs cost.
//!
//! (a) Live: trafgen (netsniff-ng) blasts 64-byte UDP frames into a veth pair; the receiving
//!     end runs, in turn, no XDP at all (the kernel's own path), the minimal XDP_PASS and
//!     XDP_DROP programs (the limit of the XDP path), and each xnic program. Frames per second
//!     are read from the veth's counters in steady state; scenarios are interleaved over
//!     several rounds and the median is reported.
//! (b) Tap: a writer opens a tap device as QEMU does (non-blocking, with a virtio-net header)
//!     and writes 64-byte frames as fast as it can; native XDP on a tap runs inside that
//!     write, so the writer's rate is the rate the program sustains. No XDP, the minimal
//!     programs and `xnic_vm` (a tap is a VM's port), interleaved, median of the rounds.
//! (c) Per packet: BPF_PROG_TEST_RUN with a million repetitions on several frame shapes, each
//!     xnic program against the empty XDP program, in the same run.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use etherparse::PacketBuilder;
use xnic::{
    dataplane::{
        Dataplane,
        baseline::{Baseline, BaselineProgram},
    },
    lab::ip,
    netns,
    policy::plan::Image,
};
use xnic_common::maps::{MacOwner, NO_VM, PortEntry, PortRole};

use crate::{
    flag,
    report::{Better, Report, median},
};

/// The "VM" whose frames the VM-port program sees.
pub(crate) const VM_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x10];
const GEN_IP: &str = "10.99.0.1";
const DUT_IP: &str = "10.99.0.2";
const TEST_RUN_REPEAT: u32 = 1_000_000;

/// Two namespaces joined by a veth: `gen0` in the generator's, `dut0` in the one under test.
struct VethPair {
    gen_ns: String,
    dut_ns: String,
}

impl VethPair {
    fn create() -> anyhow::Result<VethPair> {
        let id = std::process::id();
        let pair = VethPair {
            gen_ns: format!("xbench{id}-gen"),
            dut_ns: format!("xbench{id}-dut"),
        };
        for ns in [&pair.gen_ns, &pair.dut_ns] {
            ip(&["netns", "add", ns])?;
        }
        ip(&[
            "link",
            "add",
            "gen0",
            "netns",
            &pair.gen_ns,
            "type",
            "veth",
            "peer",
            "name",
            "dut0",
            "netns",
            &pair.dut_ns,
        ])?;
        ip(&[
            "-n",
            &pair.gen_ns,
            "addr",
            "add",
            &format!("{GEN_IP}/24"),
            "dev",
            "gen0",
        ])?;
        ip(&[
            "-n",
            &pair.dut_ns,
            "addr",
            "add",
            &format!("{DUT_IP}/24"),
            "dev",
            "dut0",
        ])?;
        for (ns, dev) in [(&pair.gen_ns, "gen0"), (&pair.dut_ns, "dut0")] {
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    fn dut_mac(&self) -> anyhow::Result<String> {
        let out = Command::new("ip")
            .args(["-n", &self.dut_ns, "-j", "link", "show", "dut0"])
            .output()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        v[0]["address"]
            .as_str()
            .map(str::to_string)
            .context("no MAC for dut0")
    }

    /// Frames dut0 received: XDP-processed frames when a program is attached (veth counts
    /// them per queue), frames handed to the stack otherwise.
    fn received(&self, xdp: bool) -> anyhow::Result<u64> {
        if xdp {
            crate::live::xdp_received(&self.dut_ns, "dut0")
        } else {
            Ok(crate::live::rx_counters(&self.dut_ns, "dut0")?.1)
        }
    }

    /// Starts trafgen on gen0 with `config`; it runs until killed.
    fn trafgen(&self, config: &std::path::Path) -> anyhow::Result<xnic::netns::Spawned> {
        crate::live::trafgen(&self.gen_ns, "gen0", config, None)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        for ns in [&self.gen_ns, &self.dut_ns] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Removes the benchmark's pinned dataplane however the run ends.
pub(crate) struct DataplaneGuard(pub(crate) String);

impl Drop for DataplaneGuard {
    fn drop(&mut self) {
        let _ = xnic::dataplane::teardown(&self.0);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Kernel,
    XdpPass,
    XdpDrop,
    XnicUplink,
    XnicVm,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::Kernel,
        Scenario::XdpPass,
        Scenario::XdpDrop,
        Scenario::XnicUplink,
        Scenario::XnicVm,
    ];

    /// The minimal program a baseline scenario runs.
    fn baseline(self) -> Option<BaselineProgram> {
        match self {
            Scenario::XdpPass => Some(BaselineProgram::Pass),
            Scenario::XdpDrop => Some(BaselineProgram::Drop),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Scenario::Kernel => "kernel path (no XDP)",
            Scenario::XdpPass => "minimal XDP_PASS",
            Scenario::XdpDrop => "minimal XDP_DROP",
            Scenario::XnicUplink => "xnic_uplink",
            Scenario::XnicVm => "xnic_vm",
        }
    }
}

struct Bench {
    pair: VethPair,
    dp: Dataplane,
    baseline: Baseline,
    ifindex: u32,
    /// What the port and MAC maps hold.
    image: Image,
}

impl Bench {
    /// Points the port entry of dut0 at `role` (the program only acts on its own role).
    fn port_role(&mut self, role: PortRole) -> anyhow::Result<()> {
        let vm_slot = if role == PortRole::Vm { 0 } else { NO_VM };
        let mut entry = PortEntry::new(1, vm_slot, role);
        if role == PortRole::Vm {
            // As the daemon writes it: the VM's first MAC, the lookup-free common case.
            entry.mac = VM_MAC;
        }
        let mut to = self.image.clone();
        to.ports.insert(self.ifindex, entry);
        self.image = self.dp.write_image(&self.image, to)?;
        Ok(())
    }

    /// Frames per second dut0 handles in `scenario`, in steady state over `secs`.
    fn live(
        &mut self,
        scenario: Scenario,
        config: &std::path::Path,
        secs: f64,
    ) -> anyhow::Result<f64> {
        let mut baseline_link = None;
        match scenario {
            Scenario::Kernel => {}
            Scenario::XdpPass | Scenario::XdpDrop => {
                let p = scenario.baseline().expect("a baseline scenario");
                baseline_link = Some((p, self.baseline.attach(p, self.ifindex)?));
            }
            Scenario::XnicUplink | Scenario::XnicVm => {
                let role = if scenario == Scenario::XnicUplink {
                    PortRole::Uplink
                } else {
                    PortRole::Vm
                };
                self.port_role(role)?;
                self.dp.attach(
                    "dut0",
                    self.ifindex,
                    role,
                    xnic::config::XdpModePref::Native,
                    None,
                )?;
            }
        }
        let xdp = scenario != Scenario::Kernel;
        let generator = self.pair.trafgen(config)?;
        std::thread::sleep(Duration::from_millis(500));
        let (c0, t0) = (self.pair.received(xdp)?, Instant::now());
        std::thread::sleep(Duration::from_secs_f64(secs));
        let (c1, t1) = (self.pair.received(xdp)?, Instant::now());
        generator.kill();
        if let Some((p, link)) = baseline_link {
            self.baseline.detach(p, link)?;
        }
        if matches!(scenario, Scenario::XnicUplink | Scenario::XnicVm) {
            self.dp.detach("dut0")?;
        }
        // Let the generator's last frames drain before the next scenario.
        std::thread::sleep(Duration::from_millis(200));
        Ok((c1 - c0) as f64 / (t1 - t0).as_secs_f64())
    }
}

/// A tap device opened as QEMU opens one: non-blocking, no packet information, each frame
/// after a virtio-net header. It goes away when the file is closed.
pub(crate) struct Tap {
    file: std::fs::File,
    pub(crate) ifindex: u32,
}

/// `TUNSETIFF` (`_IOW('T', 202, int)`) and its flags, from `linux/if_tun.h`.
const TUNSETIFF: u64 = 0x4004_54ca;
const IFF_TAP: u16 = 0x0002;
const IFF_NO_PI: u16 = 0x1000;
const IFF_VNET_HDR: u16 = 0x4000;
/// `struct virtio_net_hdr` without mergeable buffers: what QEMU writes ahead of a frame.
const VNET_HDR_LEN: usize = 10;

impl Tap {
    /// Creates tap `name` in this thread's network namespace and brings it up.
    pub(crate) fn create(name: &str, ns: &str) -> anyhow::Result<Tap> {
        use std::os::unix::{fs::OpenOptionsExt as _, io::AsRawFd as _};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .context("cannot open /dev/net/tun")?;
        // struct ifreq: the name, then the flags.
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR).to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is large enough for.
        let rc = unsafe { nix::libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).context("TUNSETIFF");
        }
        ip(&["-n", ns, "link", "set", name, "up"])?;
        let ifindex = nix::net::if_::if_nametoindex(name)?;
        Ok(Tap { file, ifindex })
    }

    /// Writes `frame` for `secs` as fast as the tap takes it; frames per second.
    pub(crate) fn blast(&self, frame: &[u8], secs: f64) -> anyhow::Result<f64> {
        use std::io::Write as _;
        let mut buf = vec![0u8; VNET_HDR_LEN];
        buf.extend_from_slice(frame);
        let mut file = &self.file;
        let started = Instant::now();
        let until = Duration::from_secs_f64(secs);
        let mut sent = 0u64;
        while started.elapsed() < until {
            for _ in 0..256 {
                match file.write(&buf) {
                    Ok(_) => sent += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e).context("writing to the tap"),
                }
            }
        }
        Ok(sent as f64 / started.elapsed().as_secs_f64())
    }
}

impl Bench {
    /// Frames per second a writer gets into `tap` with `scenario` on it.
    fn tap(&mut self, tap: &Tap, scenario: Scenario, secs: f64) -> anyhow::Result<f64> {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(VM_MAC, [0x02, 0x99, 0, 0, 0, 1])
            .ipv4([10, 99, 0, 2], [10, 99, 0, 1], 64)
            .udp(4000, 9)
            .write(&mut frame, &[0u8; 18])?;
        let mut baseline_link = None;
        match scenario {
            Scenario::XdpPass | Scenario::XdpDrop => {
                let p = scenario.baseline().expect("a baseline scenario");
                baseline_link = Some((p, self.baseline.attach(p, tap.ifindex)?));
            }
            Scenario::XnicVm => {
                let to = with_vm_port(&self.image, tap.ifindex, 2);
                self.image = self.dp.write_image(&self.image, to)?;
                self.dp.attach(
                    TAP_NAME,
                    tap.ifindex,
                    PortRole::Vm,
                    xnic::config::XdpModePref::Native,
                    None,
                )?;
            }
            _ => {}
        }
        let pps = tap.blast(&frame, secs);
        if let Some((p, link)) = baseline_link {
            self.baseline.detach(p, link)?;
        }
        if scenario == Scenario::XnicVm {
            self.dp.detach(TAP_NAME)?;
        }
        std::thread::sleep(Duration::from_millis(200));
        pps
    }
}

const TAP_NAME: &str = "xtap0";

/// `from` with the interface `ifindex` as port slot `port_slot`: VM 0's port, which owns
/// [`VM_MAC`].
pub(crate) fn with_vm_port(from: &Image, ifindex: u32, port_slot: u32) -> Image {
    let mut to = from.clone();
    let mut entry = PortEntry::new(port_slot, 0, PortRole::Vm);
    entry.mac = VM_MAC;
    to.ports.insert(ifindex, entry);
    to.macs.insert(
        VM_MAC,
        MacOwner {
            vm_slot: 0,
            port_ifindex: ifindex,
        },
    );
    to
}

/// How long the guest's iperf3 runs, seconds.
const GUEST_IPERF_SECS: u32 = 3;

/// From a real guest (QEMU, TCG here): exact counts through xnic, and the guest's own iperf3
/// figure through xnic against the kernel's bridge without xnic. Informative only: under TCG
/// the emulator, not the path, limits the guest.
fn guest_rows(report: &mut Report) -> anyhow::Result<()> {
    use xnic::{api::client::Client, api::types::VmView, cli::block_on};
    let id = std::process::id();
    let instance = format!("xbenchg{id}");
    let text = xnic::config::default_lab_toml(&instance, &format!("xbg{id}"), 1, false);
    eprintln!("guest: booting one QEMU guest");
    // Built in another thread: the lab enters namespaces, and this one lives in the veth
    // pair's.
    let live = std::thread::spawn(move || crate::live::LiveLab::up_with_guests(&instance, &text))
        .join()
        .map_err(|_| anyhow::anyhow!("building the guest lab panicked"))??;
    let g = live.lab.guest("vm0")?;
    let (tor_ns, tor) = live.lab.endpoint("tor")?;
    let iperf = |label: &str| -> anyhow::Result<f64> {
        let (status, out) = g.exec(
            &format!("iperf3 -c {tor} -t {GUEST_IPERF_SECS} -J"),
            Duration::from_secs(60),
        )?;
        if status != 0 {
            bail!("the guest's iperf3 failed ({label}): {out}");
        }
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .context("no receiver figure in iperf3's report")?;
        eprintln!("  guest iperf3, {label}: {:.0} Mbit/s", bps / 1e6);
        Ok(bps / 1e6)
    };
    let server = || {
        Command::new("ip")
            .args(["netns", "exec", &tor_ns, "iperf3", "-s", "-1", "-B"])
            .arg(tor.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    };

    let daemon = live.start_daemon()?;
    let client = Client::new(&live.instance);
    let before: VmView = block_on(client.get("/v1/vms/vm0"))?;
    let (_, out) = g.exec(
        &format!("ping -q -c 100 -i 0.01 -W 2 {tor}"),
        Duration::from_secs(60),
    )?;
    let after: VmView = block_on(client.get("/v1/vms/vm0"))?;
    let summary = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or("no summary")
        .trim()
        .to_string();
    let (from, to) = (
        after.counters.from_vm.packets - before.counters.from_vm.packets,
        after.counters.to_vm.packets - before.counters.to_vm.packets,
    );
    eprintln!("  guest ping: {summary}; xnic counted {from} from the VM, {to} to it");
    let mut srv = server()?;
    std::thread::sleep(Duration::from_millis(300));
    let with_xnic = iperf("through xnic");
    let _ = srv.wait();
    live.stop_dataplane(daemon)?;
    let with_xnic = with_xnic?;

    live.bridge_uplink("up0", true)?;
    let mut srv = server()?;
    std::thread::sleep(Duration::from_millis(300));
    let kernel = iperf("kernel bridge, no xnic");
    let _ = srv.wait();
    live.bridge_uplink("up0", false)?;
    let kernel = kernel?;
    report.add(
        "guest TCP goodput (informative: TCG emulation limits the guest)",
        &format!("one QEMU guest on a tap, virtio-net without vhost, iperf3 {GUEST_IPERF_SECS} s to the tor"),
        "Mbit/s",
        Better::Higher,
        with_xnic,
        &[("kernel bridge, no xnic", kernel)],
    );
    report.notes.push(format!(
        "Guest: exact counts through xnic: ping in the guest says \"{summary}\"; xnic counted {from} frames from the VM and {to} to it."
    ));
    Ok(())
}

fn frames(dut_mac: [u8; 6]) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    // (shape, frame the uplink program sees (to the VM), frame the VM-port program sees (from
    // the VM)); both are looked up, counted and passed.
    let udp4 = |src: [u8; 6], dst: [u8; 6]| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(src, dst)
            .ipv4([10, 99, 0, 1], [10, 99, 0, 2], 64)
            .udp(4000, 9)
            .write(&mut out, &[0u8; 18])
            .unwrap();
        out
    };
    let vlan = |src, dst| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(src, dst)
            .single_vlan(etherparse::VlanId::try_new(100).unwrap())
            .ipv4([10, 99, 0, 1], [10, 99, 0, 2], 64)
            .udp(4000, 9)
            .write(&mut out, &[0u8; 18])
            .unwrap();
        out
    };
    let tcp6 = |src, dst| {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(src, dst)
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(4000, 80, 1, 65535)
            .write(&mut out, &[0u8; 20])
            .unwrap();
        out
    };
    let peer = [0x02, 0x99, 0, 0, 0, 1];
    let _ = dut_mac;
    vec![
        ("IPv4 UDP, 64 B", udp4(peer, VM_MAC), udp4(VM_MAC, peer)),
        (
            "802.1Q IPv4 UDP, 68 B",
            vlan(peer, VM_MAC),
            vlan(VM_MAC, peer),
        ),
        ("IPv6 TCP, 94 B", tcp6(peer, VM_MAC), tcp6(VM_MAC, peer)),
    ]
}

fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC {s}");
    }
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16)?;
    }
    Ok(m)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the dataplane benchmark needs root (BPF, network namespaces)");
    }
    let secs: f64 = flag(args, "--secs", 3.0)?;
    let rounds: usize = flag(args, "--rounds", 3)?;
    let pair = VethPair::create()?;
    let dut_mac = pair.dut_mac()?;
    // Everything below attaches to dut0, so this thread lives in its namespace.
    netns::enter(&pair.dut_ns)?;
    let ifindex = nix::net::if_::if_nametoindex("dut0")?;
    let instance = format!("xbench{}", std::process::id());
    let _guard = DataplaneGuard(instance.clone());
    let dp = Dataplane::open(&instance, 3)?;
    let baseline = Baseline::load()?;
    let mut b = Bench {
        pair,
        dp,
        baseline,
        ifindex,
        image: Image::default(),
    };
    // The generator's frames come from the "VM" MAC, bound to dut0 (so the VM program
    // passes them), and go to dut0's own MAC (so the uplink program passes them to the host,
    // and the kernel takes them up its stack in every scenario alike).
    let mut to = b.image.clone();
    to.macs.insert(
        VM_MAC,
        MacOwner {
            vm_slot: 0,
            port_ifindex: ifindex,
        },
    );
    b.image = b.dp.write_image(&b.image, to)?;
    let config = std::env::temp_dir().join(format!("xnic-bench-{}.trafgen", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "{{\n  eth(da={dut_mac}, sa=02:77:00:00:00:10, type=0x0800),\n  ipv4(saddr={GEN_IP}, daddr={DUT_IP}, ttl=64),\n  udp(sp=4000, dp=9),\n  fill(0x00, 18)\n}}\n"
        ),
    )?;

    let mut report = Report::new("dataplane");
    report.notes.push(format!(
        "Live: trafgen sends 64-byte IPv4/UDP frames into a veth pair; each scenario runs {secs} s in steady state, {rounds} interleaved rounds, median reported. Frames are addressed to the receiving host, so every passing scenario takes them up the same kernel path."
    ));
    report.notes.push(format!(
        "Per packet: BPF_PROG_TEST_RUN, {TEST_RUN_REPEAT} repetitions, median of {rounds} runs; the xnic programs do their port and MAC lookups and count the frame."
    ));

    eprintln!(
        "live: {rounds} rounds × {} scenarios × {secs} s",
        Scenario::ALL.len()
    );
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); Scenario::ALL.len()];
    for round in 0..rounds {
        for (i, s) in Scenario::ALL.iter().enumerate() {
            let pps = b.live(*s, &config, secs)?;
            eprintln!(
                "  round {}: {:<22} {:>10.0} frames/s",
                round + 1,
                s.label(),
                pps
            );
            samples[i].push(pps);
        }
    }
    let _ = std::fs::remove_file(&config);
    let pps: Vec<f64> = samples.into_iter().map(median).collect();
    let base = |s: Scenario| pps[Scenario::ALL.iter().position(|x| *x == s).unwrap_or(0)];
    for s in [Scenario::XnicUplink, Scenario::XnicVm] {
        report.add(
            "frames per second",
            &format!("veth receive, 64 B UDP, {}", s.label()),
            "frames/s",
            Better::Higher,
            base(s),
            &[
                (Scenario::Kernel.label(), base(Scenario::Kernel)),
                (Scenario::XdpPass.label(), base(Scenario::XdpPass)),
                (Scenario::XdpDrop.label(), base(Scenario::XdpDrop)),
            ],
        );
    }

    let tap = Tap::create(TAP_NAME, &b.pair.dut_ns)?;
    let tap_scenarios = [
        Scenario::Kernel,
        Scenario::XdpPass,
        Scenario::XdpDrop,
        Scenario::XnicVm,
    ];
    eprintln!(
        "tap: {rounds} rounds × {} scenarios × {secs} s",
        tap_scenarios.len()
    );
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); tap_scenarios.len()];
    for round in 0..rounds {
        for (i, s) in tap_scenarios.iter().enumerate() {
            let pps = b.tap(&tap, *s, secs)?;
            eprintln!(
                "  round {}: tap, {:<22} {:>10.0} frames/s",
                round + 1,
                s.label(),
                pps
            );
            samples[i].push(pps);
        }
    }
    drop(tap);
    let tap_pps: Vec<f64> = samples.into_iter().map(median).collect();
    report.add(
        "frames per second",
        "tap written as QEMU writes it, 64 B UDP from the VM's MAC, xnic_vm",
        "frames/s",
        Better::Higher,
        tap_pps[3],
        &[
            (Scenario::Kernel.label(), tap_pps[0]),
            (Scenario::XdpPass.label(), tap_pps[1]),
            (Scenario::XdpDrop.label(), tap_pps[2]),
            (
                "veth receive with xnic_vm (above, same run)",
                base(Scenario::XnicVm),
            ),
        ],
    );
    report.notes.push(format!(
        "Tap: one writer opens a tap as QEMU does (non-blocking, virtio-net header, no vhost) and writes 64-byte frames for {secs} s per scenario, {rounds} interleaved rounds, median reported; native XDP on a tap runs inside the write, so the writer's rate is what the program sustains. Without XDP the writer only queues frames for the stack."
    ));

    guest_rows(&mut report)?;

    eprintln!("per packet: BPF_PROG_TEST_RUN × {TEST_RUN_REPEAT}");
    for (shape, to_vm, from_vm) in frames(parse_mac(&dut_mac)?) {
        let mut empty = Vec::new();
        let mut uplink = Vec::new();
        let mut vm = Vec::new();
        for _ in 0..rounds {
            empty.push(
                b.baseline
                    .test_run(BaselineProgram::Pass, &to_vm, TEST_RUN_REPEAT)?
                    .ns_per_run as f64,
            );
            b.port_role(PortRole::Uplink)?;
            uplink.push(
                b.dp.test_run(PortRole::Uplink, &to_vm, ifindex, TEST_RUN_REPEAT)?
                    .ns_per_run as f64,
            );
            b.port_role(PortRole::Vm)?;
            vm.push(
                b.dp.test_run(PortRole::Vm, &from_vm, ifindex, TEST_RUN_REPEAT)?
                    .ns_per_run as f64,
            );
        }
        let empty = median(empty);
        for (label, v) in [("xnic_uplink", uplink), ("xnic_vm", vm)] {
            let ns = median(v);
            eprintln!("  {shape:<24} {label:<12} {ns:>5.0} ns   empty program {empty:>4.0} ns");
            report.add(
                "ns per frame",
                &format!("BPF_PROG_TEST_RUN, {shape}, {label}"),
                "ns",
                Better::Lower,
                ns,
                &[("empty XDP program", empty)],
            );
        }
    }
    report.write()
}
