//! Real guests for the lab: one QEMU process per VM, its virtio-net NIC on a tap device in the
//! host namespace (the VM's port, which xnic manages like any other), booted from the lab's
//! guest image ([`super::guest`]).
//!
//! Everything of a running guest lives in the lab's run directory: `<vm>.pid` (QEMU daemonizes,
//! so guests outlive the command that started them), `<vm>.console.log` (the serial console,
//! kept for reading after the fact) and `<vm>.ctl` (the control port: a shell on the guest's
//! second serial port, see [`Guest::exec`]). KVM is used where it works; here guests hang
//! under KVM (nested virtualization), so TCG is the default and `XNIC_GUEST_ACCEL=kvm` opts in.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::guest::GuestImage;
use crate::{
    net::{IpNet, MacAddr},
    netns,
};

/// Memory per guest: the cloud kernel and a shell fit in far less; iperf3 and page cache
/// want some room.
const GUEST_MEMORY_MIB: u32 = 384;

/// How long a guest may take to say it is ready: ~10 s here under TCG, with room for a
/// loaded machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a guest is started with.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    pub name: String,
    /// The tap device (the VM's port) in the host namespace.
    pub tap: String,
    pub mac: MacAddr,
    pub ips: Vec<IpNet>,
    /// Static neighbours: no ARP or ND crosses the lab.
    pub neighbours: Vec<(IpAddr, MacAddr)>,
    /// NIC queue pairs (a multiqueue tap when more than one).
    pub queues: u32,
    pub cpus: u32,
    /// A read-only disk for the guest's `/opt/xnic` ([`super::guest::tools_disk`]).
    pub tools: Option<PathBuf>,
    /// Without IPv6 the guest's kernel has none at all, so it sends nothing unasked (no
    /// router solicitations or MLD reports), as the lab's namespaces with `ipv6 = false`.
    pub ipv6: bool,
}

/// A guest started in a lab's run directory.
#[derive(Clone, Debug)]
pub struct Guest {
    pub name: String,
    dir: PathBuf,
}

impl Guest {
    pub fn new(dir: &Path, name: &str) -> Guest {
        Guest {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        }
    }

    fn file(&self, ext: &str) -> PathBuf {
        self.dir.join(format!("{}.{ext}", self.name))
    }

    pub fn console_log(&self) -> PathBuf {
        self.file("console.log")
    }

    fn pid(&self) -> Option<i32> {
        fs::read_to_string(self.file("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether its QEMU runs.
    pub fn running(&self) -> bool {
        self.pid()
            .is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
    }

    /// Starts QEMU for `spec` in `host_ns` (which must have the tap), daemonized. Returns
    /// once QEMU runs; [`Guest::wait_ready`] waits for the guest itself.
    pub fn start(
        dir: &Path,
        host_ns: &str,
        image: &GuestImage,
        spec: &GuestSpec,
    ) -> anyhow::Result<Guest> {
        let guest = Guest::new(dir, &spec.name);
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for ext in ["pid", "console.log", "ctl"] {
            let _ = fs::remove_file(guest.file(ext));
        }
        let mut cmdline = format!(
            "root=/dev/vda ro console=ttyS0 init=/sbin/xnic-guest-init quiet panic=-1 xnic.name={}",
            spec.name
        );
        if !spec.ipv6 {
            cmdline.push_str(" ipv6.disable=1");
        }
        if !spec.ips.is_empty() {
            let ips: Vec<String> = spec.ips.iter().map(|n| n.to_string()).collect();
            cmdline.push_str(&format!(" xnic.ip={}", ips.join(",")));
        }
        if !spec.neighbours.is_empty() {
            let n: Vec<String> = spec
                .neighbours
                .iter()
                .map(|(a, m)| format!("{a}={m}"))
                .collect();
            cmdline.push_str(&format!(" xnic.neigh={}", n.join(",")));
        }
        let accel = std::env::var("XNIC_GUEST_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut netdev = format!(
            "tap,id=n0,ifname={},script=no,downscript=no,vhost=off",
            spec.tap
        );
        let mut nic = format!("virtio-net-pci,netdev=n0,mac={}", spec.mac);
        if spec.queues > 1 {
            netdev.push_str(&format!(",queues={}", spec.queues));
            nic.push_str(&format!(",mq=on,vectors={}", 2 * spec.queues + 2));
        }
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", &accel, "-name", &spec.name])
            .args(["-m", &GUEST_MEMORY_MIB.to_string()])
            .args(["-smp", &spec.cpus.max(1).to_string()])
            .args(["-display", "none", "-monitor", "none"])
            .arg("-kernel")
            .arg(image.kernel())
            .arg("-initrd")
            .arg(image.initrd())
            .args(["-append", &cmdline])
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=raw,snapshot=on",
                image.root().display()
            ))
            .args(["-netdev", &netdev, "-device", &nic]);
        if let Some(tools) = &spec.tools {
            cmd.arg("-drive").arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                tools.display()
            ));
        }
        cmd.arg("-serial")
            .arg(format!("file:{}", guest.console_log().display()))
            .arg("-chardev")
            .arg(format!(
                "socket,id=ctl,path={},server=on,wait=off",
                guest.file("ctl").display()
            ))
            .args(["-serial", "chardev:ctl", "-daemonize", "-pidfile"])
            .arg(guest.file("pid"));
        let out = netns::run_in(host_ns, move || {
            cmd.output()
                .context("cannot run qemu-system-x86_64; is it installed (cargo xtask setup)?")
        })?;
        if !out.status.success() {
            bail!(
                "QEMU did not start guest {}: {}",
                spec.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(guest)
    }

    /// How many times the guest has said it is ready since its QEMU started (once per boot:
    /// a guest that reboots in the same QEMU says it again).
    pub fn boots(&self) -> usize {
        fs::read_to_string(self.console_log())
            .map_or(0, |log| log.matches("xnic-guest: ready").count())
    }

    /// Waits until the guest says it is ready on its console; returns how long it took.
    pub fn wait_ready(&self, timeout: Duration) -> anyhow::Result<Duration> {
        self.wait_boots(1, timeout)
    }

    /// Waits until the guest has booted `n` times in this QEMU.
    pub fn wait_boots(&self, n: usize, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.boots() >= n {
                return Ok(started.elapsed());
            }
            if !self.running() {
                bail!(
                    "guest {} stopped while booting; its console: {}",
                    self.name,
                    self.console_log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "guest {} was not ready after {} s; its console: {}",
            self.name,
            timeout.as_secs(),
            self.console_log().display()
        )
    }

    /// Runs `script` in the guest's shell and returns its exit status and output. The
    /// control port is one serial line: one command at a time.
    pub fn exec(&self, script: &str, timeout: Duration) -> anyhow::Result<(i32, String)> {
        let stream = UnixStream::connect(self.file("ctl"))
            .with_context(|| format!("cannot reach guest {}'s control port", self.name))?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!("{}_{nonce}", std::process::id());
        let (sync, done) = (format!("__xnic_sync_{id}"), format!("__xnic_done_{id}_"));
        let deadline = Instant::now() + timeout;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut pending = String::new();
        // A guest that has just booted may not read its port yet (what arrives before is
        // lost): ask until its shell answers.
        reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(500)))?;
        'synced: loop {
            writeln!(writer, "echo {sync}")?;
            loop {
                match self.read_line(&mut reader, &mut pending, deadline, script)? {
                    // Exactly the marker: a terminal that still echoes (the guest had not
                    // set its port up yet) shows the command `echo ...` instead.
                    Some(line) if line == sync => break 'synced,
                    Some(_) => {}
                    None => break,
                }
            }
        }
        // Output and status after a marker no command prints; stdin closed so nothing waits
        // for input.
        writeln!(writer, "( {script} ) </dev/null 2>&1; echo \"{done}$?\"")?;
        let mut output = String::new();
        loop {
            let Some(line) = self.read_line(&mut reader, &mut pending, deadline, script)? else {
                continue;
            };
            // The marker and a status; output without a final newline comes before it.
            if let Some(at) = line.find(&done)
                && let Ok(status) = line[at + done.len()..].trim().parse::<i32>()
            {
                output.push_str(&line[..at]);
                return Ok((status, output));
            }
            // Answers to repeated sync requests.
            if line == sync {
                continue;
            }
            output.push_str(&line);
            output.push('\n');
        }
    }

    /// One line from the control port; `None` when none came in the read timeout.
    fn read_line(
        &self,
        reader: &mut BufReader<UnixStream>,
        pending: &mut String,
        deadline: Instant,
        script: &str,
    ) -> anyhow::Result<Option<String>> {
        if Instant::now() > deadline {
            bail!(
                "guest {} did not finish {script:?} in time; its console: {}",
                self.name,
                self.console_log().display()
            );
        }
        // What a timeout cut short stays in `pending` for the next call.
        match reader.read_line(pending) {
            Ok(0) => bail!("guest {}'s control port closed", self.name),
            Ok(_) if pending.ends_with('\n') => {
                let line = pending.trim_end_matches(['\r', '\n']).to_string();
                pending.clear();
                Ok(Some(line))
            }
            Ok(_) => Ok(None),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e).context("reading a guest's control port"),
        }
    }

    /// Stops the guest (its QEMU) and removes its files but the console log.
    pub fn stop(&self) -> anyhow::Result<()> {
        use nix::{
            sys::signal::{Signal, kill},
            unistd::Pid,
        };
        if let Some(pid) = self.pid() {
            let pid = Pid::from_raw(pid);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while kill(pid, None).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = kill(pid, Signal::SIGKILL);
        }
        for ext in ["pid", "ctl"] {
            let _ = fs::remove_file(self.file(ext));
        }
        Ok(())
    }
}

/// Every guest with a pid file in `dir`.
pub fn guests_in(dir: &Path) -> Vec<Guest> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Guest> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".pid")
                .map(|n| Guest::new(dir, n))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
