//! Safety requirements 1 and 2: a segment shrunk under a live window, and a
//! host function writing into a read-only window, never take the host
//! process down, and never change the segment behind a read-only grant.

use std::process::Command;
use std::time::Duration;

use shmgate_host::wasm::add_to_linker;
use shmgate_host::{OpenOptions, Segment};
use wasmtime::{Linker, Module, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;

use crate::common::{Guest, Ns, PAGE, engine, init, policy};

/// Shrinks `/dev/shm/<name>` to 0 from a separate process.
fn truncate_elsewhere(name: &str) {
    let status = Command::new("truncate")
        .args(["-s", "0", &format!("/dev/shm/{name}")])
        .status()
        .expect("running truncate(1)");
    assert!(status.success());
}

/// Requirement 1, step by step: the guest uses its window, another process
/// truncates the segment, the guest's next touch traps cleanly; the host
/// goes on, and so does another store with its own window.
#[test]
fn truncated_segment_traps_the_guest_not_the_host() {
    init();
    let ns = Ns::new();
    let victim = ns.name("victim");
    let _seg = OpenOptions::new()
        .size(2 * PAGE as u64)
        .open_owned(&victim)
        .unwrap();
    let other = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("other"))
        .unwrap();

    let mut g = Guest::new(policy(&ns).build().unwrap());
    let h = g.open("victim", 1);
    let a = g.map(h, 0, 2 * PAGE, 3);
    assert!(a > 0, "map: {a}");
    let a = a as i32;
    assert_eq!(g.call::<(i32, i32), i32>("spin", (a + 100, 10)), 10);

    let mut bystander = Guest::new(policy(&ns).build().unwrap());
    let hb = bystander.open("other", 1);
    let b = bystander.map(hb, 0, PAGE, 3) as i32;

    truncate_elsewhere(&victim);
    for export in ["load", "spin"] {
        let r = if export == "load" {
            g.func::<i32, i32>("load").call(&mut g.store, a).map(drop)
        } else {
            g.func::<(i32, i32), i32>("spin")
                .call(&mut g.store, (a + PAGE, 5))
                .map(drop)
        };
        let trap = r.expect_err("touching a truncated window must trap");
        assert!(format!("{trap:?}").contains("out of bounds"), "{trap:?}");
    }
    // The host and the other store are fine.
    assert_eq!(bystander.call::<(i32, i32), i32>("spin", (b, 1000)), 1000);
    let mut word = [0; 4];
    other.read_exact_at(&mut word, 0).unwrap();
    assert_eq!(u32::from_le_bytes(word), 1000);
    // The guest's store still answers host calls.
    assert_eq!(g.call::<i32, i64>("close", h as i32), 0);
}

/// Requirement 1, concurrently: the guest is spinning on its window in one
/// thread while another process truncates the segment.
#[test]
fn truncation_during_a_running_guest() {
    init();
    let ns = Ns::new();
    let victim = ns.name("victim");
    let _seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(&victim)
        .unwrap();
    let grant = policy(&ns).build().unwrap();
    let (running_tx, running) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let mut g = Guest::new(grant);
        let h = g.open("victim", 1);
        assert!(h >= 0, "open: {h}");
        let a = g.map(h, 0, PAGE, 3);
        assert!(a > 0, "map: {a}");
        let a = a as i32;
        let spin = g.func::<(i32, i32), i32>("spin");
        // Spin until the truncation makes a touch trap; tell the test once
        // the window is in use. Bounded, in case no trap ever comes.
        let mut rounds = 0u64;
        loop {
            match spin.call(&mut g.store, (a, 100_000)) {
                Ok(_) => rounds += 1,
                Err(trap) => return (rounds, format!("{trap:?}")),
            }
            if rounds == 1 {
                let _ = running_tx.send(());
            }
            if rounds > 1_000_000 {
                return (rounds, "never trapped".into());
            }
        }
    });
    running
        .recv_timeout(Duration::from_secs(60))
        .expect("the guest starts using its window");
    truncate_elsewhere(&victim);
    let (rounds, trap) = worker.join().expect("the host thread survives");
    assert!(
        trap.contains("out of bounds"),
        "after {rounds} rounds: {trap}"
    );
}

struct WasiHost {
    wasi: WasiP1Ctx,
    shm: shmgate_host::wasm::ShmCtx,
}

/// Requirement 2: a read-only window as the destination of WASI `fd_read`
/// (host code writing guest memory) and of `shmgate_v1.read`: the host
/// survives and the segment is unchanged. A guest store into it traps.
#[test]
fn read_only_window_as_a_destination() {
    init();
    let ns = Ns::new();
    let name = ns.name("ro");
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(&name)
        .unwrap();
    seg.write_all_at(b"precious", 0).unwrap();

    let wat = r#"(module
      (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
      (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
      (import "shmgate_v1" "map" (func $map (param i32 i64 i32 i32) (result i64)))
      (import "shmgate_v1" "read" (func $read (param i32 i64 i32 i32) (result i64)))
      (memory (export "memory") 1 100 shared)
      (data (i32.const 0) "ro")
      (global $win (mut i32) (i32.const 0))
      (global $h (mut i32) (i32.const 0))
      (func (export "setup") (result i64)
        (global.set $h (i32.wrap_i64 (call $open (i32.const 0) (i32.const 2) (i32.const 0) (i32.const 0))))
        (global.set $win (i32.wrap_i64 (call $map (global.get $h) (i64.const 0) (i32.const 65536) (i32.const 1))))
        (i64.extend_i32_u (global.get $win)))
      (func (export "shm_read_into_window") (result i64)
        (call $read (global.get $h) (i64.const 0) (global.get $win) (i32.const 8)))
      (func (export "fd_read_into_window") (result i32)
        ;; iovec at 16: { buf = window, len = 8 }; nread at 32
        (i32.store (i32.const 16) (global.get $win))
        (i32.store (i32.const 20) (i32.const 8))
        (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 32)))
      (func (export "store_into_window")
        (i32.store (global.get $win) (i32.const 0x41414141))))"#;
    let engine = engine();
    let module = Module::new(engine, wat).unwrap();
    let mut linker = Linker::<WasiHost>::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut WasiHost| &mut h.wasi).unwrap();
    add_to_linker(&mut linker, |h: &mut WasiHost| &mut h.shm).unwrap();
    let wasi = WasiCtxBuilder::new()
        .stdin(MemoryInputPipe::new("OVERWRITE"))
        .build_p1();
    let shm = shmgate_host::wasm::ShmCtx::new(policy(&ns).read_only(true).build().unwrap());
    let mut store = Store::new(engine, WasiHost { wasi, shm });
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let setup = instance
        .get_typed_func::<(), i64>(&mut store, "setup")
        .unwrap();
    let win = setup.call(&mut store, ()).unwrap();
    assert!(win > 0, "{win}");

    let shm_read = instance
        .get_typed_func::<(), i64>(&mut store, "shm_read_into_window")
        .unwrap();
    assert_eq!(
        shm_read.call(&mut store, ()).unwrap(),
        shmgate_core::Errno::FAULT.to_wire()
    );

    let store_into = instance
        .get_typed_func::<(), ()>(&mut store, "store_into_window")
        .unwrap();
    let trap = store_into
        .call(&mut store, ())
        .expect_err("a guest store into a read-only window traps");
    assert!(format!("{trap:?}").contains("out of bounds"), "{trap:?}");

    // WASI writes into the window from host code; our handler detaches the
    // window to private pages, so the write lands there.
    let fd_read = instance
        .get_typed_func::<(), i32>(&mut store, "fd_read_into_window")
        .unwrap();
    let errno = fd_read
        .call(&mut store, ())
        .expect("the host survives fd_read");
    assert_eq!(errno, 0);

    let mut buf = [0; 8];
    Segment::open_read_only(&name)
        .unwrap()
        .read_exact_at(&mut buf, 0)
        .unwrap();
    assert_eq!(&buf, b"precious");
}
