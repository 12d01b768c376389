//! Running `xnic run` as a child process, for the demo and the tests.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{api::client::Client, cli::block_on};

/// A daemon started by this process. Killed (SIGKILL) when dropped, if still running.
pub struct DaemonProcess {
    child: Child,
    instance: String,
    log: Option<JoinHandle<Vec<String>>>,
}

impl DaemonProcess {
    /// Starts `exe run --config config` and waits until it answers on its socket. Its log
    /// lines are printed with `prefix` when one is given, and kept for [`Self::stop`].
    pub fn start(
        exe: &Path,
        config: &Path,
        instance: &str,
        prefix: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<DaemonProcess> {
        let mut child = Command::new(exe)
            // Its own process group: Ctrl-C in the caller's terminal is the caller's to
            // handle (the demo shuts the daemon down through the API).
            .process_group(0)
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG_STYLE", "never")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", exe.display()))?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let prefix = prefix.map(str::to_string);
        let log = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(p) = &prefix {
                    eprintln!("{p}{line}");
                }
                lines.push(line);
            }
            lines
        });
        let mut d = DaemonProcess {
            child,
            instance: instance.to_string(),
            log: Some(log),
        };
        let client = Client::new(instance);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = d.child.try_wait()? {
                let log = d.log.take().and_then(|h| h.join().ok()).unwrap_or_default();
                bail!(
                    "the daemon exited ({status}) before it was ready:\n{}",
                    log.join("\n")
                );
            }
            if block_on(client.is_running()) {
                return Ok(d);
            }
            if Instant::now() > deadline {
                let _ = d.child.kill();
                let _ = d.child.wait();
                let log = d.log.take().and_then(|h| h.join().ok()).unwrap_or_default();
                bail!(
                    "the daemon did not answer within {timeout:?}:\n{}",
                    log.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// SIGKILL, as a crash would: nothing is cleaned up (the socket file stays behind).
    pub fn kill(mut self) -> anyhow::Result<Vec<String>> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(self
            .log
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default())
    }

    /// SIGTERM and wait: the daemon exits, the dataplane stays.
    pub fn stop(mut self) -> anyhow::Result<Vec<String>> {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let status = self.child.wait()?;
        let log = self
            .log
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !status.success() {
            bail!("the daemon exited with {status}:\n{}", log.join("\n"));
        }
        Ok(log)
    }

    /// Waits for the daemon to exit on its own (after `xnic down`), returning its log.
    pub fn wait(mut self, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the daemon did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(self
            .log
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default())
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where the default lab configuration is written for the daemon to read.
pub fn default_config_path(instance: &str) -> PathBuf {
    PathBuf::from(crate::RUN_DIR).join(format!("{instance}.lab.toml"))
}
