//! `report`: parse, run, map to an exit code (0 ok, 1 a gate or check failed, 2 usage or
//! input error — one line naming the file or expression).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = report::cli::Cli::parse();
    match report::cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // one line, whatever the error carries
            eprintln!("report: {}", e.to_string().replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
