//! Interoperability with Python's `multiprocessing.shared_memory`, in both
//! directions, through `python3 -c`.
//!
//! Python 3.11's `SharedMemory` registers every segment it creates *or
//! attaches to* with the resource tracker, which unlinks it (with a "leaked
//! shared_memory objects" warning) when Python exits. The scripts
//! unregister right after creating or attaching, and the tests check that
//! the segment outlives Python and that no such warning was printed.
//!
//! Without `python3` on `PATH` the tests say loudly that they were skipped.

use std::process::{Command, Output, Stdio};

use shmgate_core::Errno;
use shmgate_host::{OpenOptions, Segment};

use crate::common::{Cleanup, TestResult, errno_of, shm_path, spawn};

/// Attaches to `argv[1]`, checks that the bytes at `argv[2]` are the hex
/// `argv[3]`, writes the hex `argv[5]` at `argv[4]`, and prints the size.
const ATTACH: &str = r#"
import sys
from multiprocessing import resource_tracker, shared_memory
name, off, expect, woff, data = sys.argv[1:6]
off, woff, expect, data = int(off), int(woff), bytes.fromhex(expect), bytes.fromhex(data)
shm = shared_memory.SharedMemory(name=name, create=False)
resource_tracker.unregister(shm._name, "shared_memory")
try:
    got = bytes(shm.buf[off:off + len(expect)])
    if got != expect:
        sys.exit(f"python read {got!r} at {off}, expected {expect!r}")
    shm.buf[woff:woff + len(data)] = data
    print(shm.size)
finally:
    shm.close()
"#;

/// Creates `argv[1]` with size `argv[2]` and writes the hex `argv[3]` at 0;
/// leaves it for Rust to unlink.
const CREATE: &str = r#"
import sys
from multiprocessing import resource_tracker, shared_memory
name, size, data = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
shm = shared_memory.SharedMemory(name=name, create=True, size=size)
resource_tracker.unregister(shm._name, "shared_memory")
try:
    shm.buf[:len(data)] = data
finally:
    shm.close()
"#;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `python3` with `multiprocessing.shared_memory` is there; if not,
/// says loudly that `test` did not run.
fn python_or_skip(test: &str) -> bool {
    let probe = Command::new("python3")
        .args(["-c", "import multiprocessing.shared_memory"])
        .stdin(Stdio::null())
        .output();
    let why = match probe {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!(
            "python3 has no multiprocessing.shared_memory (needs 3.8+): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("python3 not found: {e}"),
    };
    eprintln!("\n*** SKIPPED {test}: {why}; this test did NOT run ***\n");
    false
}

/// Runs `python3 -c script args…` and returns its stdout; fails the test if
/// Python fails or warns about leaked segments.
fn python(script: &str, args: &[&str]) -> Result<String, String> {
    let child = spawn(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    // The resource tracker inherits stderr, so this also waits for it.
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    if !status.success() || stderr.contains("leaked") {
        return Err(format!(
            "python3 {args:?}: {status}\nstdout: {stdout}\nstderr: {stderr}"
        ));
    }
    Ok(stdout)
}

/// shmgate creates (with a leading slash) and writes; Python attaches
/// (without one), verifies, and writes back; shmgate reads Python's bytes;
/// the segment outlives Python.
#[test]
fn shmgate_creates_python_attaches() -> TestResult {
    if !python_or_skip("shmgate_creates_python_attaches") {
        return Ok(());
    }
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let seg = OpenOptions::new()
        .create_new(true)
        .size(8192)
        .open(format!("/{name}"))?;
    seg.write_all_at(b"hello from rust", 5000)?;

    let size = python(
        ATTACH,
        &[
            &name,
            "5000",
            &hex(b"hello from rust"),
            "100",
            &hex(b"hello from python"),
        ],
    )?;
    assert_eq!(size.trim(), "8192");
    let mut buf = [0; 17];
    seg.read_exact_at(&mut buf, 100)?;
    assert_eq!(&buf, b"hello from python");

    let again = Segment::open_read_only(&name)?;
    assert_eq!(again.len()?, 8192, "the segment did not outlive Python");
    Ok(())
}

/// Python creates and writes; shmgate opens it, reads, and writes back with
/// `pwrite` and through a mapping; Python attaches again and verifies; Rust
/// unlinks it.
#[test]
fn python_creates_shmgate_attaches() -> TestResult {
    if !python_or_skip("python_creates_shmgate_attaches") {
        return Ok(());
    }
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    python(CREATE, &[&name, "4096", &hex(b"hello from python")])?;

    let seg = Segment::open_read_write(&name)?;
    assert_eq!(seg.len()?, 4096);
    let mut buf = [0; 17];
    seg.read_exact_at(&mut buf, 0)?;
    assert_eq!(&buf, b"hello from python");
    seg.write_all_at(b"pwrite from rust", 200)?;
    seg.map()?.write_at(300, b"mmap from rust")?;

    let expect = {
        let mut bytes = b"pwrite from rust".to_vec();
        bytes.resize(100, 0);
        bytes.extend(b"mmap from rust");
        bytes
    };
    let size = python(ATTACH, &[&name, "200", &hex(&expect), "0", &hex(b"bye")])?;
    assert_eq!(size.trim(), "4096");
    let mut buf = [0; 3];
    seg.read_exact_at(&mut buf, 0)?;
    assert_eq!(&buf, b"bye");

    shmgate_host::unlink(format!("/{name}"))?;
    assert!(!shm_path(&name).exists());
    assert_eq!(errno_of(Segment::open_read_only(&name)), Errno::NOENT);
    Ok(())
}
