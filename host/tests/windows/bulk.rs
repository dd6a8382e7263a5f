//! Issue 17, item 3: read-only and revoked windows refuse every access
//! path, including `memory.fill`, `memory.copy` and `memory.init`, which
//! wasmtime runs in host-side helpers (libcalls), not in compiled wasm, and
//! host functions (WASI's `fd_read`, shmgate's own `read`/`write`).
//!
//! A fault in such a helper cannot become a trap of that instruction: the
//! helper completes against private pages, and the window is poisoned
//! (`PROT_NONE`) as soon as it returned, so the guest's next access to the
//! window traps and it never reads back bytes that did not come from the
//! segment. On 9bf8817 the helper's fault swapped in readable private
//! pages: `memory.fill` into a read-only window returned, the guest read
//! its own bytes back, later stores succeeded, and the segment was
//! unchanged.

use shmgate_host::wasm::{WindowState, add_to_linker, window_at};
use shmgate_host::{OpenOptions, Segment};
use wasmtime::{Linker, Module, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;

use crate::common::{Ns, PAGE, engine, init, policy, truncate_elsewhere};

/// A guest with every bulk memory instruction as an export, next to the
/// imports a window needs, WASI's `fd_read`, and plain loads and stores.
const BULK: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
  (import "shmgate_v1" "map" (func $map (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "read" (func $read (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "write" (func $write (param i32 i64 i32 i32) (result i64)))
  (memory (export "memory") 1 1000 shared)
  (data $d "written by memory.init")
  (func (export "open") (param i32 i32 i32 i32) (result i64)
    (call $open (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "map") (param i32 i64 i32 i32) (result i64)
    (call $map (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "read") (param i32 i64 i32 i32) (result i64)
    (call $read (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "write") (param i32 i64 i32 i32) (result i64)
    (call $write (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "fill") (param i32 i32 i32)
    (memory.fill (local.get 0) (local.get 1) (local.get 2)))
  (func (export "copy") (param i32 i32 i32)
    (memory.copy (local.get 0) (local.get 1) (local.get 2)))
  (func (export "init") (param i32 i32 i32)
    (memory.init $d (local.get 0) (local.get 1) (local.get 2)))
  (func (export "fd_read") (param $buf i32) (param $len i32) (result i32)
    ;; iovec at 16: { buf, len }; nread at 32
    (i32.store (i32.const 16) (local.get $buf))
    (i32.store (i32.const 20) (local.get $len))
    (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 32)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "store") (param i32 i32) (i32.store (local.get 0) (local.get 1))))"#;

/// Private guest bytes the tests copy from and to.
const SCRATCH: i32 = 1024;
/// What the segment holds at its start.
const PRECIOUS: &[u8; 8] = b"precious";

struct Host {
    wasi: WasiP1Ctx,
    shm: shmgate_host::wasm::ShmCtx,
}

/// A store running [`BULK`] with one window of a fresh 64 KiB segment.
struct Bulk {
    store: Store<Host>,
    instance: wasmtime::Instance,
    handle: i32,
    win: i32,
    name: String,
    _seg: shmgate_host::OwnedSegment,
    _ns: Ns,
}

impl Bulk {
    fn new(writable: bool) -> Bulk {
        Bulk::sized(writable, PAGE)
    }

    /// As [`Bulk::new`], with a segment and window of `size` bytes.
    fn sized(writable: bool, size: i32) -> Bulk {
        init();
        let ns = Ns::new();
        let name = ns.name("bulk");
        let seg = OpenOptions::new()
            .size(size as u64)
            .open_owned(&name)
            .unwrap();
        seg.write_all_at(PRECIOUS, 0).unwrap();
        let engine = engine();
        let module = Module::new(engine, BULK).unwrap();
        let mut linker = Linker::<Host>::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut Host| &mut h.wasi).unwrap();
        add_to_linker(&mut linker, |h: &mut Host| &mut h.shm).unwrap();
        let wasi = WasiCtxBuilder::new()
            .stdin(MemoryInputPipe::new("written by fd_read"))
            .build_p1();
        let shm =
            shmgate_host::wasm::ShmCtx::new(policy(&ns).read_only(!writable).build().unwrap());
        let mut store = Store::new(engine, Host { wasi, shm });
        let instance = linker.instantiate(&mut store, &module).unwrap();
        let mut b = Bulk {
            store,
            instance,
            handle: 0,
            win: 0,
            name,
            _seg: seg,
            _ns: ns,
        };
        let Some(wasmtime::Extern::SharedMemory(mem)) =
            b.instance.get_export(&mut b.store, "memory")
        else {
            panic!("shared memory export");
        };
        for (i, byte) in b"bulk".iter().enumerate() {
            // SAFETY: in bounds of the live memory; no wasm runs now.
            unsafe { *mem.data()[i].get() = *byte };
        }
        let oflags = if writable { 1 } else { 0 };
        let h = b.call::<(i32, i32, i32, i32), i64>("open", (0, 4, oflags, 0));
        assert!(h >= 0, "open: {h}");
        b.handle = h as i32;
        let prot = if writable { 3 } else { 1 };
        let win = b.call::<(i32, i64, i32, i32), i64>("map", (b.handle, 0, size, prot));
        assert!(win > 0, "map: {win}");
        b.win = win as i32;
        b
    }

    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
        args: P,
    ) -> R {
        self.try_call(name, args)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    fn try_call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
        args: P,
    ) -> wasmtime::Result<R> {
        let f = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)
            .unwrap();
        f.call(&mut self.store, args)
    }

    /// The window's state in the registry.
    fn state(&mut self) -> Option<WindowState> {
        let Some(wasmtime::Extern::SharedMemory(mem)) =
            self.instance.get_export(&mut self.store, "memory")
        else {
            panic!("shared memory export");
        };
        let addr = mem
            .data()
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(self.win as usize);
        window_at(addr).map(|w| w.state)
    }

    /// The segment's first bytes, read through a separate descriptor.
    fn segment_head(&self) -> [u8; 8] {
        let mut buf = [0; 8];
        Segment::open_read_only(&self.name)
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        buf
    }

    /// After host code touched the window where it must not: the window
    /// is poisoned, every later guest load and store of it traps, so the
    /// guest never sees the private bytes.
    fn assert_poisoned(&mut self, what: &str) {
        for at in [self.win, self.win + 8, self.win + PAGE - 4] {
            let load = self.try_call::<i32, i32>("load", at);
            let trap = load.expect_err(&format!(
                "{what}: a load of the window at +{} must trap",
                at - self.win
            ));
            assert!(
                format!("{trap:?}").contains("out of bounds"),
                "{what}: {trap:?}"
            );
            let store = self.try_call::<(i32, i32), ()>("store", (at, 0x4141_4141));
            assert!(store.is_err(), "{what}: a store into the window must trap");
        }
        assert_eq!(self.state(), Some(WindowState::Poisoned), "{what}: state");
        // The rest of the guest's memory is untouched by the poisoning.
        assert_eq!(self.call::<(i32, i32), ()>("store", (SCRATCH, 7)), ());
        assert_eq!(self.call::<i32, i32>("load", SCRATCH), 7);
    }
}

/// Each bulk instruction that writes into a read-only window: the
/// instruction may complete or trap, but the segment is unchanged and
/// every later access of the window traps.
#[test]
fn bulk_writes_into_a_read_only_window_never_diverge() {
    for op in ["fill", "copy in", "copy within", "init"] {
        let mut b = Bulk::new(false);
        let win = b.win;
        assert_eq!(
            b.call::<i32, i32>("load", win),
            i32::from_le_bytes(*b"prec")
        );
        let r = match op {
            "fill" => b.try_call::<(i32, i32, i32), ()>("fill", (win, 0x5a, PAGE)),
            "copy in" => b.try_call::<(i32, i32, i32), ()>("copy", (win, SCRATCH, 4096)),
            "copy within" => b.try_call::<(i32, i32, i32), ()>("copy", (win + 8, win, 4096)),
            _ => b.try_call::<(i32, i32, i32), ()>("init", (win, 0, 22)),
        };
        if let Err(trap) = &r {
            assert!(
                format!("{trap:?}").contains("out of bounds"),
                "{op}: {trap:?}"
            );
        }
        assert_eq!(
            &b.segment_head(),
            PRECIOUS,
            "{op}: the segment is unchanged"
        );
        b.assert_poisoned(op);
    }
}

/// Reading a read-only window with `memory.copy` is allowed and sees the
/// segment; the window stays read-only.
#[test]
fn bulk_reads_of_a_read_only_window_see_the_segment() {
    let mut b = Bulk::new(false);
    let win = b.win;
    b.call::<(i32, i32, i32), ()>("copy", (SCRATCH, win, 8));
    assert_eq!(
        b.call::<i32, i32>("load", SCRATCH),
        i32::from_le_bytes(*b"prec")
    );
    assert_eq!(b.state(), Some(WindowState::ReadOnly));
    assert_eq!(
        b.call::<i32, i32>("load", win + 4),
        i32::from_le_bytes(*b"ious")
    );
}

/// On a writable window every bulk instruction reaches the segment.
#[test]
fn bulk_writes_into_a_writable_window_reach_the_segment() {
    let mut b = Bulk::new(true);
    let win = b.win;
    b.call::<(i32, i32, i32), ()>("fill", (win, 0x5a, 8));
    assert_eq!(&b.segment_head(), b"ZZZZZZZZ");
    b.call::<(i32, i32, i32), ()>("init", (win, 0, 8));
    assert_eq!(&b.segment_head(), b"written ");
    b.call::<(i32, i32), ()>("store", (SCRATCH, i32::from_le_bytes(*b"copy")));
    b.call::<(i32, i32, i32), ()>("copy", (win, SCRATCH, 4));
    assert_eq!(&b.segment_head(), b"copyten ");
    assert_eq!(b.state(), Some(WindowState::ReadWrite));
}

/// Each bulk instruction on a window whose segment a peer truncated: the
/// host survives, and afterwards every access of the window traps (the
/// guest never reads zeros from it as if they were the segment's).
#[test]
fn bulk_access_to_a_truncated_window_traps_afterwards() {
    for op in ["fill", "copy in", "copy out", "init"] {
        let mut b = Bulk::new(true);
        let win = b.win;
        assert_eq!(
            b.call::<i32, i32>("load", win),
            i32::from_le_bytes(*b"prec")
        );
        truncate_elsewhere(&b.name, 0);
        let r = match op {
            "fill" => b.try_call::<(i32, i32, i32), ()>("fill", (win, 0x5a, PAGE)),
            "copy in" => b.try_call::<(i32, i32, i32), ()>("copy", (win, SCRATCH, 4096)),
            "copy out" => b.try_call::<(i32, i32, i32), ()>("copy", (SCRATCH, win, 4096)),
            _ => b.try_call::<(i32, i32, i32), ()>("init", (win, 0, 22)),
        };
        if let Err(trap) = &r {
            assert!(
                format!("{trap:?}").contains("out of bounds"),
                "{op}: {trap:?}"
            );
        }
        b.assert_poisoned(op);
    }
}

/// Host functions: WASI's `fd_read` into a read-only window (host code
/// writing guest memory) poisons it like a bulk instruction; shmgate's own
/// `read` and `write` refuse window buffers with `EFAULT`, also on a
/// truncated window.
#[test]
fn host_functions_and_read_only_or_revoked_windows() {
    let mut b = Bulk::new(false);
    let (h, win) = (b.handle, b.win);
    let efault = shmgate_core::Errno::FAULT.to_wire();
    assert_eq!(
        b.call::<(i32, i64, i32, i32), i64>("read", (h, 0, win, 8)),
        efault
    );
    assert_eq!(
        b.call::<(i32, i32), i32>("fd_read", (win, 8)),
        0,
        "WASI errno"
    );
    assert_eq!(&b.segment_head(), PRECIOUS);
    b.assert_poisoned("fd_read");

    let mut b = Bulk::new(true);
    let (h, win) = (b.handle, b.win);
    truncate_elsewhere(&b.name, 0);
    assert_eq!(
        b.call::<(i32, i64, i32, i32), i64>("write", (h, 0, win, 8)),
        efault
    );
    assert_eq!(
        b.call::<(i32, i64, i32, i32), i64>("read", (h, 0, win, 8)),
        efault
    );
    assert_eq!(
        b.call::<(i32, i32), i32>("fd_read", (win, 8)),
        0,
        "WASI errno"
    );
    b.assert_poisoned("fd_read after truncation");
}

/// Runs `f`, or ends the process after 60 s: a test that fails, not hangs.
fn within_a_minute(what: &str, f: impl FnOnce()) {
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let what = what.to_owned();
    let dog = std::thread::spawn(move || {
        if watch.recv_timeout(std::time::Duration::from_secs(60))
            == Err(std::sync::mpsc::RecvTimeoutError::Timeout)
        {
            eprintln!("{what}: still running after 60 s: the host hangs");
            std::process::abort();
        }
    });
    f();
    drop(done);
    dog.join().unwrap();
}

/// A guest cannot stall its host with a large bulk write into a read-only
/// window: the host helper (glibc's `rep stosb`/`rep movsb`) is not
/// single-stepped byte by byte, neither inside the window nor on into
/// ordinary memory after it. Before, a step per byte made each MiB cost
/// about 11 s (a 16 MiB fill about three minutes), beyond the reach of
/// epoch interruption (host code).
#[test]
fn bulk_writes_of_many_mib_into_a_read_only_window_end() {
    const BIG: i32 = 16 << 20;
    within_a_minute("a 16 MiB fill and copy of a read-only window", || {
        for op in ["fill", "copy in"] {
            let mut b = Bulk::sized(false, BIG);
            let win = b.win;
            let r = match op {
                "fill" => b.try_call::<(i32, i32, i32), ()>("fill", (win, 0x5a, BIG)),
                _ => b.try_call::<(i32, i32, i32), ()>("copy", (win, 0, BIG)),
            };
            if let Err(trap) = &r {
                assert!(
                    format!("{trap:?}").contains("out of bounds"),
                    "{op}: {trap:?}"
                );
            }
            assert_eq!(
                &b.segment_head(),
                PRECIOUS,
                "{op}: the segment is unchanged"
            );
            b.assert_poisoned(op);
        }
    });
    within_a_minute(
        "a fill from a read-only window on into 16 MiB of the guest's memory",
        || {
            let mut b = Bulk::new(false);
            let win = b.win;
            let old = b.call::<i32, i32>("grow", BIG / PAGE);
            assert!(old > 0, "grow: {old}");
            let ordinary = old * PAGE;
            assert!(ordinary >= win + PAGE, "the new pages follow the window");
            let r = b.try_call::<(i32, i32, i32), ()>("fill", (win, 0x5a, ordinary - win + BIG));
            if let Err(trap) = &r {
                assert!(format!("{trap:?}").contains("out of bounds"), "{trap:?}");
            } else {
                // The guest's own memory got what it asked for.
                for at in [ordinary, ordinary + BIG / 2, ordinary + BIG - 4] {
                    assert_eq!(b.call::<i32, i32>("load", at), 0x5a5a_5a5a, "at {at}");
                }
            }
            assert_eq!(&b.segment_head(), PRECIOUS);
            b.assert_poisoned("fill on into ordinary memory");
        },
    );
}

/// One host access that runs over more read-only windows than the handler
/// keeps track of at once (a `memory.fill` across five adjacent ones):
/// every one of them ends poisoned, none is left as readable private
/// pages. Before, the fifth stayed detached: the guest read zeros from it
/// and its stores succeeded.
#[test]
fn one_bulk_write_over_five_read_only_windows_poisons_all() {
    let mut b = Bulk::new(false);
    let mut wins = vec![b.win];
    for _ in 0..4 {
        let win = b.call::<(i32, i64, i32, i32), i64>("map", (b.handle, 0, PAGE, 1));
        assert!(win > 0, "map: {win}");
        wins.push(win as i32);
    }
    let first = b.win;
    for (i, w) in wins.iter().enumerate() {
        assert_eq!(*w, first + i as i32 * PAGE, "adjacent windows");
    }
    let r = b.try_call::<(i32, i32, i32), ()>("fill", (first, 0x5a, 5 * PAGE));
    if let Err(trap) = &r {
        assert!(format!("{trap:?}").contains("out of bounds"), "{trap:?}");
    }
    assert_eq!(&b.segment_head(), PRECIOUS);
    for (i, w) in wins.into_iter().enumerate() {
        b.win = w;
        b.assert_poisoned(&format!("window {i}"));
    }
}

/// Host code that faults on a read-only range and is then single-stepped
/// may block signals or start a thread before the faulting function
/// returns (`pthread_create`, `fork` and `posix_spawn` block every signal
/// around `clone`): a step trap taken while `SIGTRAP` is blocked is forced
/// to its default action by the kernel (the process dies), and a thread
/// created with the trap flag set inherits it. Run in a child process,
/// which must end well. Before, it died of `SIGTRAP`.
#[cfg(target_arch = "x86_64")]
#[test]
fn stepped_host_code_may_block_signals_and_start_threads() {
    if crate::common::is_child("stepped-sigmask") {
        let ns = Ns::new();
        let name = ns.name("sigmask");
        let seg = OpenOptions::new().size(4096).open_owned(&name).unwrap();
        let map = Segment::open_read_only(&name).unwrap().map().unwrap();
        store_then_block_signals(map.as_mut_ptr());
        drop(map);
        drop(seg);
        return;
    }
    let out = crate::common::run_child(
        "bulk::stepped_host_code_may_block_signals_and_start_threads",
        "stepped-sigmask",
        &[],
    );
    assert!(
        out.status.success(),
        "the child died: {:?}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A store into a read-only range, then (in the same function, so still
/// being stepped) every signal blocked and a thread started.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
#[allow(unsafe_code)]
fn store_then_block_signals(p: *mut u8) {
    // SAFETY: `p` is a live read-only registered mapping: the store faults
    // and the handler gives it private pages (that is what is tested). An
    // instruction of this function itself (not a call, which would return
    // and end the stepping before the rest runs).
    unsafe { std::arch::asm!("mov byte ptr [{p}], 1", p = in(reg) p, options(nostack)) };
    // SAFETY: plain sigset_t values of ours; the old mask is restored.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
    }
    std::thread::spawn(|| {}).join().unwrap();
}

/// A `SIGTRAP` that is not the handler's (an `int3` here, with no handler
/// before shmgate's) ends the process as it would without shmgate: the
/// handler must not swallow it (`int3` is not run again when the handler
/// returns, unlike a faulting access). Before, the child went on running.
#[cfg(target_arch = "x86_64")]
#[test]
fn a_foreign_sigtrap_still_kills() {
    if crate::common::is_child("int3") {
        init();
        // SAFETY: a breakpoint instruction; it touches no memory.
        #[allow(unsafe_code)]
        unsafe {
            std::arch::asm!("int3")
        };
        eprintln!("survived int3");
        return;
    }
    let out = crate::common::run_child("bulk::a_foreign_sigtrap_still_kills", "int3", &[]);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGTRAP),
        "{:?}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
