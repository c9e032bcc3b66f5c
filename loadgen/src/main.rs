//! The `loadgen` binary: parse, run, map to an exit code.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = loadgen::cli::Cli::parse();
    match loadgen::cli::run(cli) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("loadgen: {}", loadgen::cli::one_line(&e));
            std::process::ExitCode::from(loadgen::cli::EXIT_USAGE)
        }
    }
}
