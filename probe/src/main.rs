//! probe: parse, run, map to an exit status (see `probe::run`).
#![forbid(unsafe_code)]
use clap::Parser;

fn main() {
    // Before any thread starts: SIGINT/SIGTERM remove temporary files and exit 130.
    if let Err(e) = probe::cleanup::install_signal_thread() {
        eprintln!("probe: cannot install the signal handler thread: {e}");
        std::process::exit(2);
    }
    let args = match probe::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.use_stderr() {
                // --help / --version
                let _ = e.print();
                std::process::exit(0);
            }
            // One line: clap's first line, without the usage block that follows it.
            let text = e.render().to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad arguments");
            eprintln!("probe: {}", line.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    match probe::run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("probe: {e}");
            std::process::exit(2);
        }
    }
}
