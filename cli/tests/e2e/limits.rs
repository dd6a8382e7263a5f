//! `shmgate run --max-memory` (issue 17): the guest's memory limit holds
//! for core modules, with and without windows, and for components; guests
//! that could park the host thread in `memory.atomic.wait32` are refused.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Namespace, SHMGATE, shmgate, text};

/// A core module that exits 11 if `memory.grow(1000)` (62.5 MiB) fails, 10
/// if it succeeds.
const GROWER: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (call $exit (i32.add (i32.const 10)
      (i32.eq (memory.grow (i32.const 1000)) (i32.const -1))))))"#;

/// The same as a component: `wasi:cli/run` returns `err` (exit 1) if the
/// growth fails, `ok` (exit 0) if it succeeds.
const GROWER_COMPONENT: &str = r#"(component
  (core module $m
    (memory (export "memory") 1)
    (func (export "run") (result i32)
      (i32.eq (memory.grow (i32.const 1000)) (i32.const -1))))
  (core instance $i (instantiate $m))
  (func $run (result (result)) (canon lift (core func $i "run")))
  (instance $cli (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $cli)))"#;

/// Writes `bytes` to a guest file unique to `ns`; removed on drop.
struct GuestFile(std::path::PathBuf);

impl GuestFile {
    fn new(ns: &Namespace, name: &str, bytes: &[u8]) -> GuestFile {
        let path = std::env::temp_dir().join(format!("{}{name}", ns.0));
        std::fs::write(&path, bytes).unwrap();
        GuestFile(path)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for GuestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn max_memory_holds_for_modules_and_components() {
    let ns = Namespace::new("maxmem");
    let module = GuestFile::new(&ns, "grow.wat", GROWER.as_bytes());
    let component = GuestFile::new(
        &ns,
        "grow-component.wasm",
        &wat::parse_str(GROWER_COMPONENT).unwrap(),
    );
    // Default (1 GiB plus --max-mapped): the growth succeeds.
    let out = shmgate(&["run", module.path()]);
    assert_eq!(out.status.code(), Some(10), "{}", text(&out));
    let out = shmgate(&["run", component.path()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // 1 MiB: it fails, in a plain memory, in one prepared for windows
    // (shared, which wasmtime grows without asking the limiter), and in a
    // component's.
    let out = shmgate(&["run", "--max-memory", "1MiB", module.path()]);
    assert_eq!(out.status.code(), Some(11), "{}", text(&out));
    let out = shmgate(&[
        "run",
        "--max-memory",
        "1MiB",
        "--namespace",
        &ns.0,
        "--max-mapped",
        "64KiB",
        module.path(),
    ]);
    assert_eq!(out.status.code(), Some(11), "{}", text(&out));
    let out = shmgate(&["run", "--max-memory", "1MiB", component.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // A guest whose memory starts above the limit does not run.
    let big = GuestFile::new(
        &ns,
        "big.wat",
        GROWER
            .replace("\"memory\") 1)", "\"memory\") 17)")
            .as_bytes(),
    );
    let out = shmgate(&["run", "--max-memory", "1MiB", big.path()]);
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
}

#[test]
fn guests_that_could_wait_forever_are_refused() {
    let ns = Namespace::new("waits");
    // Built for threads: its own shared memory, and a wait on it that no
    // --max-wait would end.
    let module = GuestFile::new(
        &ns,
        "sleepy.wat",
        br#"(module
          (memory (export "memory") 1 1 shared)
          (func $forever (export "_start")
            (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))))"#,
    );
    // Without the check the guest parks the host thread for good: the
    // test must fail then, not hang.
    let out = shmgate_within(&["run", module.path()], Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("function 0 (forever)") && err.contains("memory.atomic.wait32"),
        "{}",
        text(&out)
    );
}

/// Runs `shmgate` with `args`; kills it (and fails) after `limit`.
fn shmgate_within(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(SHMGATE)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the shmgate binary");
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("waiting for shmgate").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("shmgate {args:?} still ran after {limit:?}: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("shmgate's output")
}
