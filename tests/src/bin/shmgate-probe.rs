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
//!   lowest-fd NAME            with descriptors 3 and 4 taken and 3 closed again, every
//!                             shmgate open or create (first call of the process included)
//!                             returns the lowest free descriptor (shm_open assertions 8, 30)
//!   redirect NAME1 NAME2 DIR  create NAME1, close every descriptor above 2, open DIR
//!                             (O_DIRECTORY) into the freed numbers, then create NAME2
//!                             (plain and atomic: NAME2 and NAME2.atomic) and unlink NAME1
//!   emfile NAME               with RLIMIT_NOFILE at 3, create NAME (shm_open assertion 38)
//!   hold NAME SIZE            create NAME atomically (creator lock), print `ok`, then hold
//!                             it until stdin reaches EOF (or the process is killed)
//!   hammer NAME SIZE BYTE     open NAME read-only in a loop for up to 20 s: each open must
//!                             fail with ENOENT or show SIZE bytes all equal to BYTE (decimal);
//!                             `ok` after 50 complete objects, `err EIO` on a partial one
//!   send-sealed DATA          on the Unix socket at stdin: send an anonymous segment
//!                             holding DATA, sealed SHRINK | GROW | SEAL
//!   recv-shrink DATA          on the Unix socket at stdin: receive a segment, check it
//!                             starts with DATA and carries the SHRINK seal, then try to
//!                             shrink it: prints that result (`err 1 EPERM` when sealed)
//!
//!   create-private NAME OTHER create NAME (mode 0644, 4096 bytes) with OpenOptions::open_with;
//!                             in the callback, find the object's temporary entry in /dev/shm
//!                             (by inode), print `temp ENTRY MODE` (mode in octal), run OTHER
//!                             (a probe run as uid/gid 65534) as `OTHER open ENTRY 0 0`, print
//!                             `other <its line>`, then fail the callback with EIO; for atomic
//!                             creation's temporary-name route, run where /proc is hidden
//!
//!   --umask OCTAL             set the process umask first
//!   --wait                    read one line (or EOF) from stdin before the operation:
//!                             a start barrier for races
//! ```
//!
//! Prints exactly one line, `ok` or `err <errno number> <errno name>`, and
//! exits 0; a usage error exits 2 with a message on stderr; a broken
//! expectation (`lowest-fd`, `recv-shrink`) panics, which the tests report
//! with the probe's stderr.

#![deny(unsafe_code)]

use std::ffi::{OsStr, OsString};
use std::io::BufRead;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use shmgate_core::{Errno, Mode, OFlags};
use shmgate_host::{OpenOptions, Seals, Segment};

const USAGE: &str = "usage: shmgate-probe [--umask OCTAL] [--wait] \
                     (open NAME FLAGS MODE | create-write NAME DATA | unlink NAME | fd-open FD \
                     | lowest-fd NAME | redirect NAME1 NAME2 DIR | emfile NAME | hold NAME SIZE \
                     | hammer NAME SIZE BYTE | send-sealed DATA | recv-shrink DATA | create-private NAME OTHER)";

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
        (b"create-private", [name, other]) => Ok(create_private(name.as_bytes(), other)),
        (b"unlink", [name]) => Ok(shmgate_host::unlink(name.as_bytes()).map_err(|e| e.errno())),
        (b"fd-open", [fd]) => {
            let fd = i32::try_from(number(fd, 10)?).map_err(|e| format!("fd: {e}"))?;
            Ok(fd_is_open(fd))
        }
        (b"lowest-fd", [name]) => Ok(lowest_fd(name.as_bytes())),
        (b"redirect", [first, second, dir]) => Ok(redirect(
            first.as_bytes(),
            second.as_bytes(),
            dir.as_bytes(),
        )),
        (b"emfile", [name]) => {
            set_nofile_limit(3);
            Ok(shmgate_host::open(
                name.as_bytes(),
                OFlags::RDWR | OFlags::CREATE,
                Mode::OWNER_RW,
            )
            .map(drop)
            .map_err(|e| e.errno()))
        }
        (b"hold", [name, size]) => {
            let size = u64::from(number(size, 10)?);
            let seg = OpenOptions::new()
                .create_new(true)
                .size(size)
                .open(name.as_bytes());
            if let Err(e) = seg {
                return Ok(Err(e.errno()));
            }
            println!("ok");
            // Hold the segment (and its creator lock) until stdin closes.
            let _ = std::io::stdin().lock().read_line(&mut String::new());
            std::process::exit(0);
        }
        (b"hammer", [name, size, byte]) => {
            let size = number(size, 10)?;
            let byte = u8::try_from(number(byte, 10)?).map_err(|e| format!("byte: {e}"))?;
            Ok(hammer(name.as_bytes(), size as usize, byte))
        }
        (b"send-sealed", [data]) => Ok(send_sealed(data.as_bytes())),
        (b"recv-shrink", [data]) => Ok(recv_shrink(data.as_bytes())),
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

/// The raw descriptor of a segment.
fn raw(seg: &Segment) -> i32 {
    use std::os::fd::AsFd;
    seg.as_fd().as_raw_fd()
}

/// `open("/dev/null", O_RDONLY)`: takes the lowest free descriptor.
fn take_fd() -> OwnedFd {
    OwnedFd::from(std::fs::File::open("/dev/null").expect("opening /dev/null"))
}

/// `shm_open` assertions 8 and 30: every kind of open returns the lowest
/// free descriptor, the first call of the process included (a library that
/// caches a descriptor of its own on first use breaks exactly that one).
fn lowest_fd(name: &[u8]) -> Result<(), Errno> {
    let rw_create = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
    let a = take_fd();
    let first = a.as_raw_fd() + 1;
    // The very first shmgate call of this process, with `a` open.
    let seg = shmgate_host::open(name, rw_create, Mode::OWNER_RW).map_err(|e| e.errno())?;
    assert_eq!(
        raw(&seg),
        first,
        "first create: not the lowest free descriptor"
    );
    drop(seg);
    let b = take_fd();
    assert_eq!(b.as_raw_fd(), first, "the create left a descriptor behind");
    // A hole below `b`: every call must fill it.
    let hole = a.as_raw_fd();
    drop(a);
    type Opener<'a> = &'a dyn Fn() -> Result<Segment, shmgate_host::Error>;
    let opens: [(&str, Opener<'_>); 4] = [
        ("open", &|| {
            shmgate_host::open(name, OFlags::RDONLY, Mode::OWNER_RW)
        }),
        ("open read-write", &|| Segment::open_read_write(name)),
        ("atomic create", &|| {
            shmgate_host::unlink(name)?;
            Segment::create_new_with(name, 4096, b"x")
        }),
        ("anonymous", &|| Segment::anonymous(4096)),
    ];
    for (what, open) in opens {
        let seg = open().map_err(|e| e.errno())?;
        assert_eq!(raw(&seg), hole, "{what}: not the lowest free descriptor");
        drop(seg);
        // Nothing of ours stays open: the next descriptor is the hole again.
        let probe = take_fd();
        assert_eq!(probe.as_raw_fd(), hole, "{what} left a descriptor behind");
    }
    shmgate_host::unlink(name).map_err(|e| e.errno())?;
    drop(b);
    Ok(())
}

/// What a daemon does after `fork`: close every descriptor above 2 (here
/// after a first shmgate call, when a library caching a descriptor of
/// `/dev/shm` would have one), then reuse the numbers for a directory of
/// its own. Later creates and unlinks must still act in `/dev/shm`.
#[allow(unsafe_code)]
fn redirect(first: &[u8], second: &[u8], dir: &[u8]) -> Result<(), Errno> {
    let rw_create = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
    drop(shmgate_host::open(first, rw_create, Mode::OWNER_RW).map_err(|e| e.errno())?);
    for fd in 3..1024 {
        // SAFETY: closing descriptors this single-threaded probe does not
        // own is the point of the test; after this loop nothing in the
        // process uses a descriptor above 2 except what it opens below.
        unsafe { libc::close(fd) };
    }
    let dir = std::ffi::OsStr::from_bytes(dir);
    let mut decoys = Vec::new();
    for _ in 3..64 {
        let fd = std::fs::File::open(dir).expect("opening the decoy directory");
        decoys.push(fd);
    }
    drop(shmgate_host::open(second, rw_create, Mode::OWNER_RW).map_err(|e| e.errno())?);
    let mut atomic = second.to_vec();
    atomic.extend_from_slice(b".atomic");
    drop(Segment::create_new_with(&atomic, 4096, b"atomic").map_err(|e| e.errno())?);
    shmgate_host::unlink(first).map_err(|e| e.errno())?;
    drop(decoys);
    Ok(())
}

/// `setrlimit(RLIMIT_NOFILE, limit)` (soft and hard).
#[allow(unsafe_code)]
fn set_nofile_limit(limit: u64) {
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit reads the `rlimit` that `rl` holds during the call.
    let r = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    assert_eq!(r, 0, "setrlimit: {}", std::io::Error::last_os_error());
}

/// Opens `name` read-only until 50 complete objects were seen: each open
/// must be `ENOENT` or a segment of `size` bytes all `byte`.
fn hammer(name: &[u8], size: usize, byte: u8) -> Result<(), Errno> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    let mut buf = vec![0; size];
    while seen < 50 {
        if Instant::now() > deadline {
            eprintln!("saw only {seen} complete objects");
            return Err(Errno::TIMEDOUT);
        }
        let seg = match Segment::open_read_only(name) {
            Ok(seg) => seg,
            Err(e) if e.errno() == Errno::NOENT => continue,
            Err(e) => return Err(e.errno()),
        };
        let len = seg.len().map_err(|e| e.errno())?;
        let n = seg.read_at(&mut buf, 0).map_err(|e| e.errno())?;
        if len != size as u64 || n != size || buf.iter().any(|&b| b != byte) {
            let wrong = buf[..n].iter().filter(|&&b| b != byte).count();
            eprintln!("incomplete object: len {len}, read {n}, {wrong} bytes not {byte}");
            return Err(Errno::IO);
        }
        seen += 1;
    }
    Ok(())
}

/// The Unix socket the test passed as stdin.
#[allow(unsafe_code)]
fn stdin_socket() -> UnixStream {
    // SAFETY: the test passes one end of a socketpair as descriptor 0, and
    // nothing else in this probe uses stdin for these operations.
    UnixStream::from(unsafe { OwnedFd::from_raw_fd(0) })
}

fn send_sealed(data: &[u8]) -> Result<(), Errno> {
    let sock = stdin_socket();
    let seg = Segment::anonymous(4096).map_err(|e| e.errno())?;
    seg.write_all_at(data, 0).map_err(|e| e.errno())?;
    seg.seal(Seals::SHRINK | Seals::GROW | Seals::SEAL)
        .map_err(|e| e.errno())?;
    shmgate_host::send_segment(&sock, &seg).map_err(|e| e.errno())
}

fn recv_shrink(data: &[u8]) -> Result<(), Errno> {
    let sock = stdin_socket();
    let seg = shmgate_host::recv_segment(&sock).map_err(|e| e.errno())?;
    let seals = seg.seals().map_err(|e| e.errno())?;
    assert!(seals.contains(Seals::SHRINK), "received seals: {seals:?}");
    let mut buf = vec![0; data.len()];
    seg.read_exact_at(&mut buf, 0).map_err(|e| e.errno())?;
    assert_eq!(buf, data, "received contents");
    seg.set_len(0).map_err(|e| e.errno())
}

/// `create-private`: see the usage at the top.
fn create_private(name: &[u8], other: &OsStr) -> Result<(), Errno> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    OpenOptions::new()
        .create_new(true)
        .mode(Mode::from_bits(0o644)?)
        .size(4096)
        .open_with(name, |seg: &Segment| -> std::io::Result<()> {
            let ino = seg.identity()?.ino();
            let entry = std::fs::read_dir("/dev/shm")
                .expect("reading /dev/shm")
                .filter_map(Result::ok)
                .find(|e| e.metadata().is_ok_and(|m| m.ino() == ino))
                .expect("the object has a temporary entry");
            let mode = entry.metadata().expect("lstat").mode() & 0o7777;
            let temp = entry.file_name();
            println!("temp {} {mode:o}", temp.to_string_lossy());
            let out = std::process::Command::new(other)
                .arg("open")
                .arg(&temp)
                .args(["0", "0"])
                .uid(65534)
                .gid(65534)
                .current_dir("/")
                .output()
                .expect("running the other probe");
            println!("other {}", String::from_utf8_lossy(&out.stdout).trim());
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        })
        .map(drop)
        .map_err(|e| {
            let raw = e.raw_os_error().and_then(|r| u16::try_from(r).ok());
            Errno::from_raw(raw.unwrap_or(Errno::IO.raw()))
        })
}
