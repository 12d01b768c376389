//! Log setup: `tracing` to stderr, filtered by `RUST_LOG` or the configured level.

use tracing_subscriber::EnvFilter;

/// Installs the subscriber. `default` is used when `RUST_LOG` is unset.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log pipe whose reader went away (a supervisor killed) must not take the thread
        // that logged down with it: the subscriber would report the failed write on stderr
        // again, and printing to a broken stderr panics.
        .log_internal_errors(false)
        .try_init();
}
