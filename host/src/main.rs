//! The `healthhost` binary: parses the command line, runs the command, and maps the
//! result to an exit status. Every error is printed once, on one line, with its chain.

use std::process::ExitCode;

use clap::Parser;
use healthhost::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::usage_error(e),
    };
    cli::init_tracing();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(cli::EXIT_COULD_NOT_RUN)
        }
    }
}
