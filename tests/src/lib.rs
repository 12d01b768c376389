//! Helpers for xnic's integration tests: uniquely named labs that always clean up, the real
//! `xnic` binary, and quick access to the daemon's API.
//!
//! Every name a test creates (instances, namespaces, pin directories, configuration files)
//! starts with `xt<pid>x`, so leftovers of a killed test run are recognisable; [`sweep`]
//! removes those whose process is gone.

pub mod dashboard;
pub mod debian_root;
pub mod layout4;
pub mod programs;

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::{
        Mutex, MutexGuard, Once,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use xnic::{
    api::{
        client::Client,
        types::{StatsView, StatusView, VmView},
    },
    cli::block_on,
    config::{Config, default_lab_toml},
    dataplane::{self, PIN_ROOT},
    lab::{Lab, daemon::DaemonProcess},
    model::store::Store,
};

/// How long a daemon may take to start answering.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A name no other test, in this process or another, uses.
pub fn unique_name() -> String {
    SWEEP.call_once(sweep);
    format!(
        "xt{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("xt")?.split('x').next()?.parse().ok()
}

fn is_stale(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| {
        pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists()
    })
}

/// Removes what killed test runs left behind: their pins, kept desired states, sockets and
/// namespaces.
pub fn sweep() {
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    for inst in names(PIN_ROOT) {
        if is_stale(&inst) {
            let _ = dataplane::teardown(&inst);
        }
    }
    for inst in names(xnic::STATE_DIR) {
        if is_stale(&inst) {
            let _ = Store::new(&inst).remove();
        }
    }
    for f in names(xnic::RUN_DIR) {
        if is_stale(&f) {
            let _ = std::fs::remove_file(PathBuf::from(xnic::RUN_DIR).join(f));
        }
    }
    // Guests of killed runs: their QEMU processes, then their run directories.
    for prefix in names(xnic::lab::GUEST_RUN_DIR) {
        if is_stale(&prefix) {
            let dir = PathBuf::from(xnic::lab::GUEST_RUN_DIR).join(&prefix);
            for g in xnic::lab::qemu::guests_in(&dir) {
                let _ = g.stop();
            }
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    for ns in names("/run/netns") {
        if is_stale(&ns) {
            let _ = xnic::netns::remove(&ns);
        }
    }
}

/// The `xnic` binary cargo built next to this test (or `$XNIC_BIN`).
pub fn xnic_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("XNIC_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/xnic
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target directory");
    dir.join("xnic")
}

/// Runs the `xnic` binary with `args`.
pub fn xnic(args: &[&str]) -> Output {
    Command::new(xnic_bin())
        .args(args)
        .output()
        .expect("running the xnic binary")
}

/// A lab with its own instance and namespaces. Dropping it stops its daemon, removes its
/// dataplane, its namespaces and its configuration file, whatever state the test left.
pub struct TestLab {
    pub lab: Lab,
    pub config_path: PathBuf,
    pub instance: String,
    daemon: Option<DaemonProcess>,
    /// Held for the lab's life: labs run one at a time, so a test that counts every frame is
    /// not competing for the CPUs with another test's traffic (2 CPUs in CI).
    _turn: MutexGuard<'static, ()>,
}

static TURN: Mutex<()> = Mutex::new(());

impl TestLab {
    /// A lab with `vms` VMs and two uplinks; IPv6 off, so the lab is silent unless a test
    /// sends something.
    pub fn new(vms: usize) -> TestLab {
        Self::with_config(&default_lab_toml(
            &unique_name(),
            &unique_name(),
            vms,
            false,
        ))
    }

    /// A lab from configuration text (which must have a [lab] section and unique names).
    pub fn with_config(text: &str) -> TestLab {
        Self::build(text, false)
    }

    /// The same with a QEMU guest per VM on a tap (the guest image must be built: `cargo
    /// xtask test` does it first).
    pub fn with_guests(text: &str) -> TestLab {
        Self::build(text, true)
    }

    fn build(text: &str, guests: bool) -> TestLab {
        // A test that failed while holding the turn poisons it; the next one may still run.
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let config = xnic::config::parse(text, std::path::Path::new("test.toml"))
            .expect("valid test config");
        let instance = config.instance.clone();
        std::fs::create_dir_all(xnic::RUN_DIR).expect("run dir");
        let config_path = PathBuf::from(xnic::RUN_DIR).join(format!("{instance}.test.toml"));
        std::fs::write(&config_path, text).expect("writing test config");
        let lab = if guests {
            let image = xnic::lab::guest::GuestImage {
                dir: xnic::lab::guest::DEFAULT_DIR.into(),
            };
            assert!(
                image.is_current(),
                "no guest image in {}: run `cargo xtask guest-image`",
                image.dir.display()
            );
            let mut lab = Lab::with_guests(config, image).expect("lab config");
            lab.set_tools_binary(xnic_bin());
            lab
        } else {
            Lab::new(config).expect("lab config")
        };
        let t = TestLab {
            lab,
            config_path,
            instance,
            daemon: None,
            _turn: turn,
        };
        t.lab.up().expect("lab up");
        t
    }

    pub fn config(&self) -> &Config {
        self.lab.config()
    }

    /// Starts the daemon and waits until it answers.
    pub fn start_daemon(&mut self) -> &DaemonProcess {
        let d = DaemonProcess::start(
            &xnic_bin(),
            &self.config_path,
            &self.instance,
            None,
            READY_TIMEOUT,
        )
        .expect("daemon start");
        self.daemon.insert(d)
    }

    /// The running daemon's process id (to signal it).
    pub fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("a running daemon").pid()
    }

    /// The running daemon, taken out (to kill or stop it).
    pub fn take_daemon(&mut self) -> DaemonProcess {
        self.daemon.take().expect("a running daemon")
    }

    pub fn client(&self) -> Client {
        Client::new(&self.instance)
    }

    pub fn status(&self) -> StatusView {
        block_on(self.client().get("/v1/status")).expect("GET /v1/status")
    }

    pub fn stats(&self) -> StatsView {
        block_on(self.client().get("/v1/stats")).expect("GET /v1/stats")
    }

    pub fn vm(&self, name: &str) -> VmView {
        block_on(self.client().get(&format!("/v1/vms/{name}"))).expect("GET /v1/vms/NAME")
    }

    pub fn vm_ns(&self, vm: &str) -> String {
        self.lab.vm_ns(vm)
    }

    /// `ip -d link show` of an interface in the host namespace.
    pub fn link_details(&self, ifname: &str) -> String {
        let out = Command::new("ip")
            .args([
                "-n",
                self.lab.host_ns(),
                "-d",
                "link",
                "show",
                "dev",
                ifname,
            ])
            .output()
            .expect("ip link show");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Interfaces in the host namespace with an XDP program attached.
    pub fn interfaces_with_xdp(&self) -> Vec<String> {
        self.config()
            .uplinks
            .iter()
            .map(|u| u.name.clone())
            .chain(self.config().vms.iter().map(|v| v.port.clone()))
            .filter(|name| self.link_details(name).contains("prog/xdp"))
            .collect()
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let _ = d.kill();
        }
        let _ = dataplane::teardown(&self.instance);
        let _ = Store::new(&self.instance).remove();
        let _ = std::fs::remove_file(xnic::config::socket_path(&self.instance));
        let _ = std::fs::remove_file(
            PathBuf::from(xnic::RUN_DIR).join(format!("{}.lock", self.instance)),
        );
        let _ = self.lab.down();
        let _ = std::fs::remove_file(&self.config_path);
    }
}

/// The kernel's ids of the maps `instance` has pinned.
pub fn pinned_map_ids(instance: &str) -> Vec<u32> {
    let dir = PathBuf::from(PIN_ROOT).join(instance).join("maps");
    std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| aya::maps::MapData::from_pin(e.path()).ok())
        .filter_map(|m| m.info().ok())
        .map(|info| info.id())
        .collect()
}

/// Which of the maps `ids` the kernel still holds.
pub fn maps_alive(ids: &[u32]) -> Vec<u32> {
    ids.iter()
        .copied()
        .filter(|&id| aya::maps::MapInfo::from_id(id).is_ok())
        .collect()
}

/// Polls `cond` every 50 ms for up to `limit`; true if it held.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Sum of every verdict counter of every port.
pub fn total_frames(stats: &StatsView) -> u64 {
    stats.ports.iter().map(|p| p.total.packets).sum()
}

/// The count of `reason` on port `port`.
pub fn reason_count(stats: &StatsView, port: &str, reason: &str) -> xnic::api::types::Count {
    stats
        .ports
        .iter()
        .find(|p| p.name == port)
        .and_then(|p| p.reasons.get(reason).copied())
        .unwrap_or_default()
}

pub use xnic::lab::ip;

/// Where the pinned port and MAC indexes of `instance` disagree with what their hash maps
/// say they should hold (`Image::index`), slot by slot over the whole arrays; empty when
/// they agree.
pub fn index_faults(instance: &str) -> anyhow::Result<Vec<String>> {
    use aya::maps::{HashMap, Map, MapData};
    use xnic::policy::plan::Image;
    use xnic_common::{
        index::{MAC_INDEX_SIZE, MacSlot, PORT_INDEX_SIZE, PortSlot},
        maps::{MacKey, MacOwner, PortEntry},
    };
    let maps = dataplane::PinDir::new(instance).maps();
    let open = |name: &str| MapData::from_pin(maps.join(name));
    let mut derived = Image::default();
    let macs: HashMap<_, MacKey, MacOwner> = HashMap::try_from(Map::HashMap(open("MACS")?))?;
    for entry in macs.iter() {
        let (k, v) = entry?;
        derived.macs.insert(k.mac, v);
    }
    let ports: HashMap<_, u32, PortEntry> = HashMap::try_from(Map::HashMap(open("PORTS_V2")?))?;
    for entry in ports.iter() {
        let (k, v) = entry?;
        derived.ports.insert(k, v);
    }
    derived.index();
    let mut faults = Vec::new();
    compare_index::<MacSlot>(
        open("MAC_INDEX")?,
        MAC_INDEX_SIZE,
        &derived.mac_index,
        "MAC_INDEX",
        "MACS",
        &mut faults,
    )?;
    compare_index::<PortSlot>(
        open("PORT_INDEX")?,
        PORT_INDEX_SIZE,
        &derived.port_index,
        "PORT_INDEX",
        "PORTS_V2",
        &mut faults,
    )?;
    Ok(faults)
}

/// Slot by slot, where the pinned index array `map` differs from `want` (what its hash map
/// `of` says it should hold).
fn compare_index<V: aya::Pod + Default + PartialEq + std::fmt::Debug>(
    map: aya::maps::MapData,
    size: u32,
    want: &std::collections::BTreeMap<u32, V>,
    name: &str,
    of: &str,
    faults: &mut Vec<String>,
) -> anyhow::Result<()> {
    let index: aya::maps::Array<_, V> = aya::maps::Array::try_from(aya::maps::Map::Array(map))?;
    for slot in 0..size {
        let have = index.get(&slot, 0)?;
        let want = want.get(&slot).copied().unwrap_or_default();
        if have != want {
            faults.push(format!("{name}[{slot}] holds {have:?}, {of} says {want:?}"));
        }
    }
    Ok(())
}
