//! One test per finding of the review of the window design (issue "Windows
//! you can trust under concurrency"); each failed on commit b886513.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shmgate_core::Errno;
use shmgate_host::OpenOptions;
use shmgate_host::wasm::{DEFAULT_MAX_WINDOWS, ShmCtx, WindowState, window_at};
use wasmtime::{Linker, Module, Store};

use crate::common::{
    Guest, Host, Ns, PAGE, assert_child_ok, child_value, engine, init, is_child, local_guest,
    policy, run_child, truncate_elsewhere,
};

/// Finding 2: one store cannot use up a process-wide table. A store with a
/// large grant maps 1,100 windows (the old table had 1,024 slots for the
/// whole process), and another store still maps; the default per-store
/// limit stops a store at [`DEFAULT_MAX_WINDOWS`].
#[test]
fn one_store_cannot_exhaust_windows_for_others() {
    init();
    let ns = Ns::new();
    let _seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    let roomy = crate::common::GUEST.replace(" 1 1000 shared)", " 1 2000 shared)");
    let mut hog = Guest::with_engine(
        engine(),
        &roomy,
        policy(&ns)
            .max_mapped(4 << 30)
            .max_windows(100_000)
            .build()
            .unwrap(),
    );
    let h = hog.open("seg", 0);
    for i in 0..1100 {
        let a = hog.map(h, 0, PAGE, 1);
        assert!(a > 0, "window {i}: {a}");
    }
    assert_eq!(hog.store.data().shm.mapped_windows(), 1100);

    let mut other = Guest::new(policy(&ns).build().unwrap());
    let ho = other.open("seg", 0);
    assert!(other.map(ho, 0, PAGE, 1) > 0, "another store still maps");

    let mut limited = Guest::new(policy(&ns).max_mapped(1 << 30).build().unwrap());
    let hl = limited.open("seg", 0);
    for i in 0..DEFAULT_MAX_WINDOWS {
        assert!(limited.map(hl, 0, PAGE, 1) > 0, "window {i}");
    }
    assert_eq!(limited.map(hl, 0, PAGE, 1), Errno::NOMEM.to_wire());
    // The futex pages of this store are its own too: they still work.
    assert_eq!(
        limited.call::<(i32, i64, i32), i64>("notify", (hl as i32, 0, 1)),
        0
    );
}

/// Finding 3: a replacement that fails leaves the window registered and
/// the guest trapping, never a hole. Child processes lower their own
/// limits: `RLIMIT_DATA` makes the `mprotect` back to read-write fail
/// (the pages stay `PROT_NONE`), `RLIMIT_AS` makes every `mmap` fail (the
/// window stays mapped, and a later shrink by a peer still only traps the
/// guest: on b886513 the window was unregistered first and the `SIGBUS`
/// killed the process).
#[test]
fn failed_unmap_never_leaves_a_hole() {
    for (role, limit) in [
        ("unmap-rlimit-data", libc::RLIMIT_DATA),
        ("unmap-rlimit-as", libc::RLIMIT_AS),
    ] {
        if is_child(role) {
            return failed_unmap_child(limit);
        }
    }
    if std::env::var("SHMGATE_WINDOWS_CHILD").is_ok() {
        return; // a child of another test
    }
    for role in ["unmap-rlimit-data", "unmap-rlimit-as"] {
        let out = run_child("findings::failed_unmap_never_leaves_a_hole", role, &[]);
        assert_child_ok(&out, role);
        assert_eq!(
            child_value(&out, "unmap").as_deref(),
            Some("ENOMEM"),
            "{role}"
        );
        assert_eq!(
            child_value(&out, "trapped").as_deref(),
            Some("yes"),
            "{role}"
        );
    }
}

fn failed_unmap_child(limit: libc::__rlimit_resource_t) {
    init();
    let ns = Ns::new();
    let name = ns.name("seg");
    let _seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(&name)
        .unwrap();
    let mut g = Guest::new(policy(&ns).build().unwrap());
    let h = g.open("seg", 1);
    let a = g.map(h, 0, PAGE, 3) as i32;
    assert!(a > 0);
    assert_eq!(g.call::<(i32, i32), i32>("spin", (a, 3)), 3);
    let unmap = g.func::<(i32, i32), i64>("unmap");

    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid rlimit to fill in.
    assert_eq!(unsafe { libc::getrlimit(limit, &mut old) }, 0);
    let tight = libc::rlimit {
        rlim_cur: 4096,
        rlim_max: old.rlim_max,
    };
    // SAFETY: valid rlimit values; only this child process is limited.
    assert_eq!(unsafe { libc::setrlimit(limit, &tight) }, 0);
    let r = unmap.call(&mut g.store, (a, PAGE));
    // SAFETY: as above, restoring what it was.
    assert_eq!(unsafe { libc::setrlimit(limit, &old) }, 0);
    let r = r.expect("a failed unmap is an errno, not a trap");
    println!(
        "unmap={}",
        if r == Errno::NOMEM.to_wire() {
            "ENOMEM"
        } else {
            "other"
        }
    );
    let info = window_at(g.host_addr(a)).expect("the window stays registered");
    assert_eq!(info.state, WindowState::Revoked);
    assert_eq!(info.len, PAGE as usize);
    if limit == libc::RLIMIT_AS {
        // Still mapped: a peer shrinks the segment, the touch must trap.
        truncate_elsewhere(&name, 0);
    }
    let trap = g.func::<i32, i32>("load").call(&mut g.store, a);
    println!("trapped={}", if trap.is_err() { "yes" } else { "no" });
    // With the limits back, unmap succeeds and the address is free again.
    assert_eq!(unmap.call(&mut g.store, (a, PAGE)).unwrap(), 0);
    assert!(window_at(g.host_addr(a)).is_none());
    assert_eq!(g.call::<i32, i32>("load", a), 0, "private zeroed pages");
}

/// Finding 4: windows only in shared memories. A local (non-shared)
/// memory gets `ENOTSUP` from `map` even on a configured engine (on
/// b886513 it got a window that WASI then borrowed as `&mut [u8]`).
#[test]
fn windows_need_a_shared_memory() {
    init();
    let ns = Ns::new();
    let _seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    let mut g = Guest::with_engine(engine(), &local_guest(), policy(&ns).build().unwrap());
    let h = g.open("seg", 1);
    assert!(h >= 0);
    assert_eq!(g.map(h, 0, PAGE, 3), Errno::NOTSUP.to_wire());
    assert_eq!(g.memory.size(&g.store), 1, "nothing grew");
    // The same guest made shared through `share_memory` gets its window.
    let wasm = wat::parse_str(local_guest()).unwrap();
    let shared = shmgate_host::wasm::share_memory(&wasm, 1 << 32).unwrap();
    let module = Module::new(engine(), &*shared).unwrap();
    let mut linker = Linker::<Host>::new(engine());
    shmgate_host::wasm::add_to_linker(&mut linker, |h: &mut Host| &mut h.shm).unwrap();
    let mut store = Store::new(
        engine(),
        Host {
            shm: ShmCtx::new(policy(&ns).build().unwrap()),
        },
    );
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let open = instance
        .get_typed_func::<(i32, i32, i32, i32), i64>(&mut store, "open")
        .unwrap();
    let map = instance
        .get_typed_func::<(i32, i64, i32, i32), i64>(&mut store, "map")
        .unwrap();
    let mem = instance.get_shared_memory(&mut store, "memory").unwrap();
    for (i, b) in b"seg".iter().enumerate() {
        // SAFETY: in bounds of the live memory; no wasm runs meanwhile.
        unsafe { *mem.data()[i].get() = *b };
    }
    let h = open.call(&mut store, (0, 3, 1, 0)).unwrap();
    assert!(h >= 0, "{h}");
    assert!(map.call(&mut store, (h as i32, 0, PAGE, 3)).unwrap() > 0);
}

/// Finding 5: `wait32` with the largest `max_wait` and no timeout does not
/// panic computing its deadline (b886513 computed `now + max_wait`).
#[test]
fn wait_with_unbounded_max_wait_does_not_panic() {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("w"))
        .unwrap();
    seg.write_all_at(&7u32.to_le_bytes(), 0).unwrap();
    let mut g = Guest::new(policy(&ns).max_wait(Duration::MAX).build().unwrap());
    let h = g.open("w", 0) as i32;
    // The word holds 7: waiting for 6 returns at once, for any timeout.
    for timeout in [-1i64, i64::MAX, 0, 1] {
        assert_eq!(
            g.call::<(i32, i64, i32, i64), i64>("wait32", (h, 0, 6, timeout)),
            Errno::AGAIN.to_wire(),
            "timeout {timeout}"
        );
    }
    // And a real wait with no timeout ends with the interrupt.
    let interrupt = g.store.data().shm.interrupt_handle();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        interrupt.interrupt();
    });
    assert_eq!(
        g.call::<(i32, i64, i32, i64), i64>("wait32", (h, 0, 7, -1)),
        Errno::INTR.to_wire()
    );
    t.join().unwrap();
}

/// Finding 5: a context moved to a new store (`Store::into_data`) forgets
/// the windows of the old store's memories: they no longer count against
/// its quota, and `unmap` of the old address is `EINVAL`.
#[test]
fn context_moved_to_a_new_store_forgets_old_windows() {
    init();
    let ns = Ns::new();
    let _seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    let mut g = Guest::new(policy(&ns).max_mapped(PAGE as u64).build().unwrap());
    let h = g.open("seg", 1);
    let a = g.map(h, 0, PAGE, 3);
    assert!(a > 0);
    assert_eq!(g.map(h, 0, PAGE, 3), Errno::NOMEM.to_wire(), "quota used");
    // A shared memory lives as long as any handle to it: drop ours too.
    let Guest { store, memory, .. } = g;
    drop(memory);
    let host = store.into_data();
    assert_eq!(host.shm.mapped_bytes(), 0, "the old memory is gone");
    // A new store with the same context: the handle is still open, the
    // quota is free again, and the old window is not this memory's.
    let mut g2 = Guest::new(policy(&ns).build().unwrap());
    g2.store.data_mut().shm = host.shm;
    assert_eq!(
        g2.call::<(i32, i32), i64>("unmap", (a as i32, PAGE)),
        Errno::INVAL.to_wire()
    );
    let a2 = g2.map(h, 0, PAGE, 3);
    assert!(a2 > 0, "map after the move: {a2}");
}

/// Finding 5: read-only handles may `notify` (decided: it changes no
/// bytes, and futex waiters must tolerate spurious wake-ups anyway), and
/// it wakes a waiter.
#[test]
fn read_only_handles_may_notify() {
    init();
    let ns = Ns::new();
    let _seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("w"))
        .unwrap();
    let grant = policy(&ns).build().unwrap();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut g = Guest::new(grant);
        let h = g.open("w", 0) as i32;
        ready_tx.send(()).unwrap();
        g.call::<(i32, i64, i32, i64), i64>("wait32", (h, 4, 0, 10_000_000_000))
    });
    ready.recv().unwrap();
    let mut reader = Guest::new(policy(&ns).read_only(true).build().unwrap());
    let h = reader.open("w", 0) as i32;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !waiter.is_finished() && Instant::now() < deadline {
        let woken = reader.call::<(i32, i64, i32), i64>("notify", (h, 4, 1));
        assert!(woken >= 0, "{woken}");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(waiter.join().unwrap(), 0, "woken by a read-only notify");
}

/// Finding 6: idle waiters cost nothing. A child process blocks 1,000
/// guests (one thread each) in `wait32` for 10 s and measures its own CPU
/// time: under 1% of one core in total (b886513 woke each every 20 ms,
/// 50,000 wake-ups a second). Then each is woken by its own `notify`.
#[test]
fn idle_waiters_cost_nothing() {
    const WAITERS: usize = 1000;
    if is_child("idle-waiters") {
        return idle_waiters_child(WAITERS);
    }
    if std::env::var("SHMGATE_WINDOWS_CHILD").is_ok() {
        return;
    }
    let out = run_child("findings::idle_waiters_cost_nothing", "idle-waiters", &[]);
    assert_child_ok(&out, "idle waiters");
    let cpu: f64 = child_value(&out, "cpu_percent_of_a_core")
        .and_then(|v| v.parse().ok())
        .expect("the child reports its CPU use");
    println!("{WAITERS} idle waiters for 10 s: {cpu:.3}% of one core");
    assert!(cpu < 1.0, "{WAITERS} idle waiters used {cpu:.3}% of a core");
    assert_eq!(child_value(&out, "woken").as_deref(), Some("1000"));
}

fn cpu_time() -> Duration {
    // SAFETY: a zeroed rusage is valid to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is ours; RUSAGE_SELF covers every thread.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn idle_waiters_child(waiters: usize) {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(waiters as u64 * 4)
        .open_owned(ns.name("words"))
        .unwrap();
    let map = Arc::new(seg.map().unwrap());
    let started = Arc::new(std::sync::Barrier::new(waiters + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..waiters)
        .map(|i| {
            let grant = policy(&ns).build().unwrap();
            let started = Arc::clone(&started);
            std::thread::Builder::new()
                .spawn(move || {
                    let mut g = Guest::new(grant);
                    let h = g.open("words", 0) as i32;
                    assert!(h >= 0);
                    started.wait();
                    g.call::<(i32, i64, i32, i64), i64>(
                        "wait32",
                        (h, i as i64 * 4, 0, 60_000_000_000),
                    )
                })
                .unwrap()
        })
        .collect();
    started.wait();
    // Let every thread reach its futex, then measure a quiet 10 s.
    std::thread::sleep(Duration::from_millis(500));
    let (cpu0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    println!(
        "cpu_percent_of_a_core={:.4}",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
    );
    stop.store(true, Ordering::SeqCst);
    // Wake each with its own word: value 1, then notify.
    let mut woken = 0;
    for (i, t) in threads.into_iter().enumerate() {
        let word = map.atomic_u32(i * 4).unwrap();
        word.store(1, Ordering::SeqCst);
        let mut g = Guest::new(policy(&ns).build().unwrap());
        let h = g.open("words", 1) as i32;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !t.is_finished() && Instant::now() < deadline {
            g.call::<(i32, i64, i32), i64>("notify", (h, i as i64 * 4, 1));
            std::thread::sleep(Duration::from_micros(100));
        }
        if t.join().unwrap() == 0 {
            woken += 1;
        }
    }
    println!("woken={woken}");
}

struct WasiHost {
    wasi: wasmtime_wasi::p1::WasiP1Ctx,
    shm: ShmCtx,
}

/// Finding 4, end to end: a guest passes WASI `path_open` a path that lies
/// inside a read-write window while a peer flips its first byte between
/// `'a'` and `0xF0` (which makes it invalid UTF-8). WASI copies the path out
/// of the shared memory before validating it, so every call sees one
/// consistent copy: it opens the file, or finds no such file, or refuses
/// invalid UTF-8 (`EILSEQ`); the host never holds a `String` that is not
/// UTF-8 and never crashes.
#[test]
fn wasi_path_in_a_window_under_a_flipping_peer() {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("path"))
        .unwrap();
    seg.write_all_at(b"aaaa", 0).unwrap();
    let dir = std::env::temp_dir().join(format!("shmgate-wasi-flip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("aaaa"), b"x").unwrap();

    let wat = r#"(module
      (import "wasi_snapshot_preview1" "path_open" (func $path_open
        (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
      (import "wasi_snapshot_preview1" "fd_close" (func $fd_close (param i32) (result i32)))
      (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
      (import "shmgate_v1" "map" (func $map (param i32 i64 i32 i32) (result i64)))
      (memory (export "memory") 1 100 shared)
      (data (i32.const 0) "path")
      (func (export "setup") (result i64)
        (local $h i64)
        (local.set $h (call $open (i32.const 0) (i32.const 4) (i32.const 1) (i32.const 0)))
        (if (i64.lt_s (local.get $h) (i64.const 0)) (then (return (local.get $h))))
        (call $map (i32.wrap_i64 (local.get $h)) (i64.const 0) (i32.const 65536) (i32.const 3)))
      ;; path_open(preopen 3, the 4-byte path at $win); 0 opened (and closed)
      (func (export "try_open") (param $win i32) (result i32)
        (local $e i32)
        (local.set $e (call $path_open (i32.const 3) (i32.const 0) (local.get $win) (i32.const 4)
          (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 64)))
        (if (i32.eqz (local.get $e)) (then (drop (call $fd_close (i32.load (i32.const 64))))))
        (local.get $e)))"#;
    let engine = engine();
    let module = Module::new(engine, wat).unwrap();
    let mut linker = Linker::<WasiHost>::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut WasiHost| &mut h.wasi).unwrap();
    shmgate_host::wasm::add_to_linker(&mut linker, |h: &mut WasiHost| &mut h.shm).unwrap();
    let wasi = wasmtime_wasi::WasiCtxBuilder::new()
        .preopened_dir(&dir, ".", wasmtime_wasi::FsPerms::ReadOnly)
        .unwrap()
        .build_p1();
    let shm = ShmCtx::new(policy(&ns).build().unwrap());
    let mut store = Store::new(engine, WasiHost { wasi, shm });
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let win = instance
        .get_typed_func::<(), i64>(&mut store, "setup")
        .unwrap()
        .call(&mut store, ())
        .unwrap();
    assert!(win > 0, "map: {win}");
    let try_open = instance
        .get_typed_func::<i32, i32>(&mut store, "try_open")
        .unwrap();

    let map = seg.map().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let word = map.atomic_u32(0).unwrap();
            let (good, bad) = (
                u32::from_le_bytes(*b"aaaa"),
                u32::from_le_bytes(*b"\xF0aaa"),
            );
            let mut flips = 0u64;
            while !stop.load(Ordering::Relaxed) {
                word.store(
                    if flips.is_multiple_of(2) { bad } else { good },
                    Ordering::Relaxed,
                );
                flips += 1;
            }
            flips
        })
    };
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..20_000 {
        match try_open
            .call(&mut store, win as i32)
            .expect("the host survives")
        {
            0 => opened += 1,
            // EILSEQ (25) for the invalid path, ENOENT (44) if ever seen
            // another way: both are clean refusals.
            25 | 44 => refused += 1,
            e => panic!("path_open: unexpected WASI errno {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let flips = flipper.join().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    println!("path_open under {flips} flips: {opened} opened, {refused} refused");
    assert!(opened + refused == 20_000);
}
