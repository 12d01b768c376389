use clap::Parser as _;
use xnic::cli::{args::Cli, dispatch};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xnic: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
