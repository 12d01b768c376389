use clap::Parser as _;
use xnic::cli::{args::Cli, dispatch};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, xnic::cli::args::Command::Run(_)) {
        // A client piped into `head` should just stop, like any Unix tool. (The daemon keeps
        // Rust's default: a closed socket is an error to handle, not a reason to die.)
        // SAFETY: setting a signal's disposition to the default before any thread exists.
        let _ = unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            )
        };
    }
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xnic: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
