//! `shmgate`: run WebAssembly guests with shared memory grants, and look
//! after `/dev/shm`.
//!
//! ```text
//! shmgate run --namespace demo. --allow-create --max-size 64MiB producer.wasm -- frames 16MiB
//! shmgate ls --json
//! shmgate rm --older-than 1h --prefix demo.
//! shmgate demo
//! ```
//!
//! Exit codes follow `sysexits.h`: 64 for bad usage, 65 for a guest that is
//! not valid wasm (or cannot be instantiated), 66 for a guest file that
//! cannot be read, 69 for a guest that imports what shmgate does not
//! provide (a module, function or interface, or one of another type), 70 for an
//! internal error, 71 for a process that cannot be started, 73 for a name
//! that is already taken, 74 for output that cannot be written; a guest's
//! own exit code is passed through, and a guest trap exits with 134 as
//! `wasmtime run` does. `rm` and `demo` exit 1 when an operation failed.
//!
//! `-v` logs what happens (grants, removals, demo steps) to stderr with
//! `tracing`; `-vv` logs more.

mod demo;
mod devshm;
mod guests;
mod latency;
mod ls;
mod native;
mod rm;
mod run;
mod signals;
mod units;
mod zero_copy;

use std::io::Write;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};

/// Run WebAssembly guests with grants to named POSIX shared memory, and
/// list and remove the objects in /dev/shm.
#[derive(Parser, Debug)]
#[command(
    name = "shmgate",
    version,
    after_help = "Example: shmgate demo\nExample: shmgate -v run --namespace app. --read-only guest.wasm"
)]
struct Cli {
    /// Log what happens to stderr: -v for steps, -vv for details.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Run(run::RunArgs),
    Ls(ls::LsArgs),
    Rm(rm::RmArgs),
    Demo(demo::DemoArgs),
}

/// `sysexits.h` codes.
mod exit {
    /// An operation failed (`rm`, `demo`); the details are on stderr.
    pub(crate) const FAILURE: u8 = 1;
    pub(crate) const USAGE: u8 = 64;
    pub(crate) const DATAERR: u8 = 65;
    pub(crate) const NOINPUT: u8 = 66;
    /// The guest imports what shmgate does not provide (`EX_UNAVAILABLE`).
    pub(crate) const UNAVAILABLE: u8 = 69;
    pub(crate) const SOFTWARE: u8 = 70;
    pub(crate) const OSERR: u8 = 71;
    pub(crate) const CANTCREAT: u8 = 73;
    pub(crate) const IOERR: u8 = 74;
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

/// Writes `bytes` to stdout. A closed pipe (`shmgate ls | head`) is not an
/// error: the reader has what it wanted.
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::new(exit::IOERR, format!("writing output: {e}")))
        }
        _ => Ok(()),
    }
}

/// Sends `tracing` events to stderr: none by default, info with `-v`,
/// debug with `-vv`, trace with `-vvv`.
fn init_tracing(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => tracing::Level::INFO,
        2 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
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
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Ls(args) => ls::ls(&args),
        Command::Rm(args) => rm::rm(&args),
        Command::Demo(args) => demo::demo(&args, cli.verbose),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("shmgate: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
