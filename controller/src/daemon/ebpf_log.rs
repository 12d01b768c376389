//! Forwards `aya-log` records from the XDP programs into the daemon's `tracing` log, under the
//! target `xnic::ebpf`. The programs only emit records at the level the daemon logs at: the
//! level is patched into the object before load, so disabled statements cost nothing.

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::{io::unix::AsyncFd, task::JoinHandle};
use tracing::{Level, level_filters::LevelFilter, warn};

/// The `aya-log` level (1 = error ... 5 = trace) matching the daemon's log filter.
pub fn level() -> u8 {
    match LevelFilter::current() {
        LevelFilter::TRACE => 5,
        LevelFilter::DEBUG => 4,
        LevelFilter::INFO => 3,
        LevelFilter::WARN => 2,
        LevelFilter::ERROR => 1,
        _ => 0,
    }
}

struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::event!(target: "xnic::ebpf", Level::ERROR, "{msg}"),
            log::Level::Warn => tracing::event!(target: "xnic::ebpf", Level::WARN, "{msg}"),
            log::Level::Info => tracing::event!(target: "xnic::ebpf", Level::INFO, "{msg}"),
            log::Level::Debug => tracing::event!(target: "xnic::ebpf", Level::DEBUG, "{msg}"),
            log::Level::Trace => tracing::event!(target: "xnic::ebpf", Level::TRACE, "{msg}"),
        }
    }

    fn flush(&self) {}
}

/// Starts the reader task; `None` when the object has no log buffer.
pub fn start(ebpf: &mut Ebpf) -> Option<JoinHandle<()>> {
    let logger = match EbpfLogger::init_with_logger(ebpf, ToTracing) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "eBPF log records will not be shown");
            return None;
        }
    };
    // SAFETY: the logger owns its ring buffer's fd and keeps it open, unchanged, until the
    // AsyncFd (which owns the logger) is dropped.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            let e = e.into_parts().1;
            warn!(error = %e, "eBPF log records will not be shown");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
