//! `shmgate`: run WebAssembly guests with shared memory grants.
//!
//! ```text
//! shmgate run --namespace demo. --allow-create --max-size 64MiB producer.wasm -- frames 16MiB
//! ```
//!
//! Exit codes follow `sysexits.h`: 64 for bad usage, 65 for a guest that is
//! not valid wasm, 66 for a guest file that cannot be read, 70 for an
//! internal error; a guest's own exit code is passed through, and a guest
//! trap exits with 134 as `wasmtime run` does.

mod run;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run WebAssembly guests with grants to named POSIX shared memory.
#[derive(Parser, Debug)]
#[command(name = "shmgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Run(run::RunArgs),
}

/// `sysexits.h` codes.
mod exit {
    pub(crate) const USAGE: u8 = 64;
    pub(crate) const DATAERR: u8 = 65;
    pub(crate) const NOINPUT: u8 = 66;
    pub(crate) const SOFTWARE: u8 = 70;
    /// What a trapping guest exits with, like `wasmtime run` (128 + SIGABRT).
    pub(crate) const TRAP: u8 = 134;
}

/// A failure with the exit code it maps to; printed as one line.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Run(args) => run::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("shmgate: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
