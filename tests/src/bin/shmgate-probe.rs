//! `shmgate-probe`: performs one shmgate operation in a process of its own
//! and prints the result, for the integration tests in `tests/host/` that
//! need a second process (a race, data that outlives its creator), another
//! user (permission errors), or a process-wide setting the multithreaded test
//! harness must not change (the umask).
//!
//! ```text
//! shmgate-probe [--umask OCTAL] [--wait] OP ARGS...
//!
//!   open NAME FLAGS MODE      shmgate_host::open(NAME, OFlags::from_bits(FLAGS), MODE)
//!                             (FLAGS in decimal wire bits, MODE in octal)
//!   create-write NAME DATA    Segment::create_new(NAME, len(DATA)), then write DATA at 0
//!   unlink NAME               shmgate_host::unlink(NAME)
//!   fd-open FD                whether descriptor FD is open in this process (fcntl F_GETFD)
//!
//!   --umask OCTAL             set the process umask first
//!   --wait                    read one line (or EOF) from stdin before the operation:
//!                             a start barrier for races
//! ```
//!
//! Prints exactly one line, `ok` or `err <errno number> <errno name>`, and
//! exits 0; a usage error exits 2 with a message on stderr.

#![deny(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use shmgate_core::{Errno, Mode, OFlags};
use shmgate_host::Segment;

const USAGE: &str = "usage: shmgate-probe [--umask OCTAL] [--wait] \
                     (open NAME FLAGS MODE | create-write NAME DATA | unlink NAME | fd-open FD)";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(&args) {
        Ok(Ok(())) => println!("ok"),
        Ok(Err(errno)) => println!("err {} {}", errno.raw(), errno.name()),
        Err(usage) => {
            eprintln!("shmgate-probe: {usage}\n{USAGE}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// Parses the arguments and performs the operation: `Err` is a usage error,
/// `Ok(Err(errno))` the operation's failure.
fn run(args: &[OsString]) -> Result<Result<(), Errno>, String> {
    let mut args = args.iter().map(OsString::as_os_str);
    let mut op = None;
    let mut wait = false;
    while let Some(arg) = args.next() {
        match arg.as_bytes() {
            b"--umask" => {
                let mask = octal(args.next().ok_or("--umask needs a value")?)?;
                set_umask(mask);
            }
            b"--wait" => wait = true,
            _ => {
                op = Some(arg);
                break;
            }
        }
    }
    let op = op.ok_or("no operation")?;
    let rest: Vec<&OsStr> = args.collect();
    if wait {
        // A line or EOF: the test releases every waiting probe at once.
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading stdin: {e}"))?;
    }
    match (op.as_bytes(), rest.as_slice()) {
        (b"open", [name, flags, mode]) => {
            let flags = number(flags, 10)?;
            let mode = Mode::from_bits(octal(mode)?).map_err(|e| format!("mode: {e}"))?;
            Ok(OFlags::from_bits(flags).and_then(|flags| {
                shmgate_host::open(name.as_bytes(), flags, mode)
                    .map(drop)
                    .map_err(|e| e.errno())
            }))
        }
        (b"create-write", [name, data]) => {
            let data = data.as_bytes();
            Ok(Segment::create_new(name.as_bytes(), data.len() as u64)
                .and_then(|seg| seg.write_all_at(data, 0))
                .map_err(|e| e.errno()))
        }
        (b"unlink", [name]) => Ok(shmgate_host::unlink(name.as_bytes()).map_err(|e| e.errno())),
        (b"fd-open", [fd]) => {
            let fd = i32::try_from(number(fd, 10)?).map_err(|e| format!("fd: {e}"))?;
            Ok(fd_is_open(fd))
        }
        _ => Err(format!("bad operation or arguments: {op:?} {rest:?}")),
    }
}

fn number(arg: &OsStr, radix: u32) -> Result<u32, String> {
    let text = arg
        .to_str()
        .ok_or_else(|| format!("not a number: {arg:?}"))?;
    u32::from_str_radix(text, radix).map_err(|e| format!("{text:?}: {e}"))
}

fn octal(arg: &OsStr) -> Result<u32, String> {
    number(arg, 8)
}

/// `umask(mask)`. The probe is single-threaded, so the process-wide change
/// cannot surprise anyone.
#[allow(unsafe_code)]
fn set_umask(mask: u32) {
    // SAFETY: umask only replaces the process's file mode creation mask; it
    // takes no pointers and cannot fail.
    unsafe { libc::umask(mask & 0o777) };
}

/// `fcntl(fd, F_GETFD)`: `Ok` if `fd` is open, else the errno (`EBADF`).
#[allow(unsafe_code)]
fn fd_is_open(fd: i32) -> Result<(), Errno> {
    // SAFETY: F_GETFD only reads the descriptor's flags; any integer is
    // acceptable (an unopened one gives EBADF), and nothing is borrowed.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if r >= 0 {
        Ok(())
    } else {
        let raw = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        Err(Errno::from_raw(u16::try_from(raw).unwrap_or(u16::MAX)))
    }
}
