//! The async `wait32` (`add_to_linker_async`, issue 12 point 6) on a
//! 2-worker tokio runtime, with real futexes, real segments and WAT
//! guests, once with the engine this machine picks (io_uring on Linux
//! 6.7+) and once, in a child process, with the thread fallback forced
//! (`SHMGATE_ASYNC_WAIT=threads`).
//!
//! Each suite runs its cases one after the other in one test, so the
//! process-wide count of pending async waits
//! (`shmgate_host::wasm::pending_async_waits`) is exactly theirs: it is
//! how the tests see that a wait is armed in the kernel, and that a
//! dropped one is gone. No assertion is about time: waiting for a
//! condition has a generous bound only so that a bug fails instead of
//! hanging.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shmgate_core::Errno;
use shmgate_host::OpenOptions;
use shmgate_host::wasm::{
    AsyncWaitEngine, ShmCtx, ShmPolicy, add_to_linker, add_to_linker_async, async_wait_engine,
    pending_async_waits,
};
use wasmtime::{Config, Engine, Instance, Linker, Module, Store};

use crate::common::{Ns, assert_child_ok, init, is_child, run_child};

/// The guest: forwards `open`, `close`, `wait32`, `notify`, and computes
/// (`spin`: `n` rounds of a 64-bit LCG, returns the state).
const GUEST: &str = r#"(module
  (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
  (import "shmgate_v1" "close" (func $close (param i32) (result i64)))
  (import "shmgate_v1" "wait32" (func $wait32 (param i32 i64 i32 i64) (result i64)))
  (import "shmgate_v1" "notify" (func $notify (param i32 i64 i32) (result i64)))
  (memory (export "memory") 1)
  (func (export "open") (param i32 i32 i32) (result i64)
    (call $open (local.get 0) (local.get 1) (local.get 2) (i32.const 0x180)))
  (func (export "close") (param i32) (result i64) (call $close (local.get 0)))
  (func (export "wait32") (param i32 i64 i32 i64) (result i64)
    (call $wait32 (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "notify") (param i32 i64 i32) (result i64)
    (call $notify (local.get 0) (local.get 1) (local.get 2)))
  (func (export "spin") (param $n i64) (result i64) (local $acc i64)
    (loop $l
      (local.set $acc (i64.add (i64.mul (local.get $acc) (i64.const 6364136223846793005))
                               (i64.const 1442695040888963407)))
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br_if $l (i64.gt_s (local.get $n) (i64.const 0))))
    (local.get $acc)))"#;

/// What `spin(n)` returns, computed natively.
pub(crate) fn spin_native(n: i64) -> i64 {
    let mut acc = 0i64;
    for _ in 0..n.max(1) {
        acc = acc
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    acc
}

struct Host {
    shm: ShmCtx,
}

/// An engine with small fiber stacks (1,000 stores call in at once).
fn async_engine() -> &'static (Engine, Module, Linker<Host>) {
    static E: std::sync::OnceLock<(Engine, Module, Linker<Host>)> = std::sync::OnceLock::new();
    E.get_or_init(|| {
        let mut config = Config::new();
        config.max_wasm_stack(128 << 10).async_stack_size(256 << 10);
        let engine = Engine::new(&config).unwrap();
        let module = Module::new(&engine, GUEST).unwrap();
        let mut linker = Linker::new(&engine);
        add_to_linker_async(&mut linker, |h: &mut Host| &mut h.shm).unwrap();
        (engine, module, linker)
    })
}

/// The same guest under the sync linker, for comparison.
fn sync_engine() -> &'static (Engine, Module, Linker<Host>) {
    static E: std::sync::OnceLock<(Engine, Module, Linker<Host>)> = std::sync::OnceLock::new();
    E.get_or_init(|| {
        let engine = Engine::default();
        let module = Module::new(&engine, GUEST).unwrap();
        let mut linker = Linker::new(&engine);
        add_to_linker(&mut linker, |h: &mut Host| &mut h.shm).unwrap();
        (engine, module, linker)
    })
}

/// One async store with one instance of [`GUEST`].
struct AGuest {
    store: Store<Host>,
    instance: Instance,
}

impl AGuest {
    async fn new(policy: ShmPolicy) -> AGuest {
        let (engine, module, linker) = async_engine();
        let mut store = Store::new(
            engine,
            Host {
                shm: ShmCtx::new(policy),
            },
        );
        let instance = linker.instantiate_async(&mut store, module).await.unwrap();
        AGuest { store, instance }
    }

    async fn call<P, R>(&mut self, name: &str, args: P) -> R
    where
        P: wasmtime::WasmParams + Send + Sync,
        R: wasmtime::WasmResults + Send + Sync,
    {
        let f = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)
            .unwrap();
        f.call_async(&mut self.store, args).await.unwrap()
    }

    async fn open(&mut self, name: &str, flags: i32) -> i32 {
        let mem = self.instance.get_memory(&mut self.store, "memory").unwrap();
        mem.write(&mut self.store, 0, name.as_bytes()).unwrap();
        let h: i64 = self.call("open", (0, name.len() as i32, flags)).await;
        assert!(h >= 0, "open {name}: {h}");
        h as i32
    }

    async fn wait(&mut self, h: i32, offset: i64, expected: i32, timeout_ns: i64) -> i64 {
        self.call("wait32", (h, offset, expected, timeout_ns)).await
    }

    async fn notify(&mut self, h: i32, offset: i64, count: i32) -> i64 {
        self.call("notify", (h, offset, count)).await
    }
}

/// The same calls through the sync linker.
struct SGuest {
    store: Store<Host>,
    instance: Instance,
}

impl SGuest {
    fn new(policy: ShmPolicy) -> SGuest {
        let (engine, module, linker) = sync_engine();
        let mut store = Store::new(
            engine,
            Host {
                shm: ShmCtx::new(policy),
            },
        );
        let instance = linker.instantiate(&mut store, module).unwrap();
        SGuest { store, instance }
    }

    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        name: &str,
        args: P,
    ) -> R {
        let f = self
            .instance
            .get_typed_func::<P, R>(&mut self.store, name)
            .unwrap();
        f.call(&mut self.store, args).unwrap()
    }

    fn open(&mut self, name: &str, flags: i32) -> i32 {
        let mem = self.instance.get_memory(&mut self.store, "memory").unwrap();
        mem.write(&mut self.store, 0, name.as_bytes()).unwrap();
        let h: i64 = self.call("open", (0, name.len() as i32, flags));
        assert!(h >= 0, "open {name}: {h}");
        h as i32
    }
}

/// The test's segment `w` (64 KiB) in `ns`, removed when dropped.
fn word_segment(ns: &Ns) -> shmgate_host::OwnedSegment {
    OpenOptions::new()
        .size(65536)
        .open_owned(ns.name("w"))
        .unwrap()
}

/// [`policy`] with a longest wait of `max_wait`, built.
fn policy_with_wait(ns: &Ns, max_wait: Duration) -> shmgate_host::wasm::ShmPolicy {
    policy(ns).max_wait(max_wait).build().unwrap()
}

fn policy(ns: &Ns) -> shmgate_host::wasm::ShmPolicyBuilder {
    ShmPolicy::builder().namespace(&ns.0)
}

/// Waits (bounded, so a bug fails instead of hanging) until `cond`. It
/// sleeps the thread, not the runtime's timer: the suite runs in
/// `block_on` on the test's own thread, which is not one of the two
/// workers, and a timer would never fire if the workers were blocked.
async fn until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..60_000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!(
        "never: {what} (pending async waits: {})",
        pending_async_waits()
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

/// Shuts the runtime down without waiting for its workers, so a failing
/// case whose wait blocked a worker fails at once instead of after the
/// wait's `max_wait`.
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Every case, one after the other.
fn suite() {
    init();
    let rt = Rt(Some(runtime()));
    rt.0.as_ref().unwrap().block_on(async {
        same_results_as_sync().await;
        thousand_waiters_leave_the_runtime_free().await;
        interrupt_wakes_a_pending_wait().await;
        max_wait_bounds_a_wait().await;
        dropping_the_future_cancels_the_kernel_wait().await;
    });
    assert_eq!(pending_async_waits(), 0);
}

/// The checks and results of the sync `wait32`, case by case.
async fn same_results_as_sync() {
    let ns = Ns::new();
    let seg = word_segment(&ns);
    seg.write_all_at(&5u32.to_le_bytes(), 8).unwrap();
    let grant = || policy_with_wait(&ns, Duration::from_secs(60));
    let mut a = AGuest::new(grant()).await;
    let ha = a.open("w", 0).await;
    let mut s = SGuest::new(grant());
    let hs = s.open("w", 0);
    let cases: [(i32, i64, i32, i64, i64); 8] = [
        (0, 8, 4, 1_000_000_000, Errno::AGAIN.to_wire()), // value differs
        (0, 8, 5, 20_000_000, Errno::TIMEDOUT.to_wire()),
        (0, 8, 5, 0, Errno::TIMEDOUT.to_wire()), // zero timeout, same value
        (0, 8, 4, 0, Errno::AGAIN.to_wire()),    // zero timeout, value differs
        (0, 6, 5, 0, Errno::INVAL.to_wire()),    // unaligned
        (0, -4, 5, 0, Errno::INVAL.to_wire()),
        (0, 65536, 5, 0, Errno::NXIO.to_wire()), // past the end
        (999, 8, 5, 0, Errno::BADF.to_wire()),
    ];
    for (bad_handle, offset, expected, timeout, want) in cases {
        let (h_a, h_s) = if bad_handle != 0 {
            (bad_handle, bad_handle)
        } else {
            (ha, hs)
        };
        let got_async = a.wait(h_a, offset, expected, timeout).await;
        let got_sync: i64 = s.call("wait32", (h_s, offset, expected, timeout));
        assert_eq!(
            got_async, want,
            "async wait32({offset}, {expected}, {timeout})"
        );
        assert_eq!(
            got_sync, want,
            "sync wait32({offset}, {expected}, {timeout})"
        );
    }
    // An interrupt already raised: EINTR at once, in both.
    a.store.data().shm.interrupt_handle().interrupt();
    s.store.data().shm.interrupt_handle().interrupt();
    assert_eq!(a.wait(ha, 8, 5, -1).await, Errno::INTR.to_wire());
    let got_sync: i64 = s.call("wait32", (hs, 8i64, 5, -1i64));
    assert_eq!(got_sync, Errno::INTR.to_wire());
    assert_eq!(pending_async_waits(), 0);
}

/// `WaitInterrupt::interrupt` from another thread ends a wait armed in
/// the kernel with `EINTR`.
async fn interrupt_wakes_a_pending_wait() {
    let ns = Ns::new();
    let _seg = word_segment(&ns);
    let mut g = AGuest::new(policy_with_wait(&ns, Duration::from_secs(600))).await;
    let h = g.open("w", 0).await;
    let interrupt = g.store.data().shm.interrupt_handle();
    let task = tokio::spawn(async move { g.wait(h, 0, 0, -1).await });
    until("the wait is armed", || pending_async_waits() == 1).await;
    std::thread::spawn(move || interrupt.interrupt())
        .join()
        .unwrap();
    assert_eq!(task.await.unwrap(), Errno::INTR.to_wire());
    assert_eq!(pending_async_waits(), 0);
}

/// A guest that asks to wait forever is stopped by `max_wait`.
async fn max_wait_bounds_a_wait() {
    let ns = Ns::new();
    let _seg = word_segment(&ns);
    let mut g = AGuest::new(policy_with_wait(&ns, Duration::from_millis(30))).await;
    let h = g.open("w", 0).await;
    assert_eq!(g.wait(h, 0, 0, -1).await, Errno::TIMEDOUT.to_wire());
    assert_eq!(g.wait(h, 0, 0, i64::MAX).await, Errno::TIMEDOUT.to_wire());
    assert_eq!(pending_async_waits(), 0);
}

/// Aborting the task drops the wait's future: the kernel wait is
/// cancelled (the count drops back), and a later `notify` of the word
/// finds no waiter.
async fn dropping_the_future_cancels_the_kernel_wait() {
    let ns = Ns::new();
    let _seg = word_segment(&ns);
    let grant = || policy_with_wait(&ns, Duration::from_secs(600));
    let mut g = AGuest::new(grant()).await;
    let h = g.open("w", 0).await;
    let task = tokio::spawn(async move { g.wait(h, 16, 0, -1).await });
    until("the wait is armed", || pending_async_waits() == 1).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    until("the cancel completes", || pending_async_waits() == 0).await;
    let mut n = AGuest::new(grant()).await;
    let hn = n.open("w", 0).await;
    assert_eq!(
        n.notify(hn, 16, -1).await,
        0,
        "a cancelled wait left a waiter"
    );
}

/// Issue 12 point 6: on a 2-worker runtime, 1,000 guests wait in
/// `wait32` while another guest computes to completion; then each of the
/// 1,000 is woken by a `notify` of its own word.
///
/// "Not blocked" is shown structurally: all 1,000 waits are armed in the
/// kernel at once (the engine's count), which 2 worker threads blocking
/// in `futex_waitv` could never reach, and with all of them pending the
/// computing guest runs and finishes with the right result. With io_uring
/// the process also has far fewer threads than waits. (The computing
/// guest's time, solo against loaded, is in `benches/async_wait.rs`.)
async fn thousand_waiters_leave_the_runtime_free() {
    const N: usize = 1000;
    let ns = Ns::new();
    let seg = word_segment(&ns);
    let grant = || policy_with_wait(&ns, Duration::from_secs(600));
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mut waiters = Vec::with_capacity(N);
    for i in 0..N {
        let mut g = AGuest::new(grant()).await;
        let h = g.open("w", 0).await;
        let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
        waiters.push(tokio::spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            // Word i (distinct per guest) holds 0, and nobody changes it:
            // only a notify of word i can end this wait with 0.
            let r = g.wait(h, 4 * i as i64, 0, -1).await;
            finished.fetch_add(1, Ordering::SeqCst);
            r
        }));
    }
    // Every waiter task got to run (a wait that blocked its worker would
    // keep all but two from starting), and every wait is in the kernel.
    until("1,000 waiter tasks ran", || {
        started.load(Ordering::SeqCst) == N
    })
    .await;
    until("1,000 waits are armed", || pending_async_waits() == N).await;
    if async_wait_engine() == AsyncWaitEngine::IoUring {
        let threads = std::fs::read_dir("/proc/self/task").unwrap().count();
        assert!(threads < N / 4, "{threads} threads for {N} io_uring waits");
    }
    // The computing guest, on the same runtime, while all 1,000 wait.
    let mut c = AGuest::new(grant()).await;
    const ROUNDS: i64 = 20_000_000;
    let compute = tokio::spawn(async move { c.call::<i64, i64>("spin", ROUNDS).await });
    until("the computing guest finishes", || compute.is_finished()).await;
    let computed = compute.await.unwrap();
    assert_eq!(computed, spin_native(ROUNDS));
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "a waiter returned early"
    );
    assert_eq!(pending_async_waits(), N);
    // Each notify wakes exactly one waiter: the one on its word.
    let mut n = AGuest::new(grant()).await;
    let hn = n.open("w", 0).await;
    for i in 0..N {
        assert_eq!(n.notify(hn, 4 * i as i64, 1).await, 1, "word {i}");
    }
    for (i, w) in waiters.into_iter().enumerate() {
        assert_eq!(w.await.unwrap(), 0, "waiter {i}");
    }
    assert_eq!(pending_async_waits(), 0);
    drop(seg);
}

/// The suite with the engine this machine picks. On Linux 6.7+ with
/// io_uring enabled that must be io_uring.
#[test]
fn async_wait_auto_engine() {
    if std::env::var_os("SHMGATE_ASYNC_WAIT").is_some() {
        return; // the fallback child runs only its own test
    }
    let engine = async_wait_engine();
    println!("engine={engine:?}");
    if io_uring_futex_expected() {
        assert_eq!(engine, AsyncWaitEngine::IoUring);
    }
    suite();
}

/// The suite with the thread fallback forced, in a child process (the
/// engine is chosen once per process).
#[test]
fn async_wait_thread_fallback() {
    if is_child("async-threads") {
        assert_eq!(async_wait_engine(), AsyncWaitEngine::Threads);
        suite();
        return;
    }
    let out = run_child(
        "async_wait::async_wait_thread_fallback",
        "async-threads",
        &[("SHMGATE_ASYNC_WAIT", "threads".into())],
    );
    assert_child_ok(&out, "the async suite on the thread fallback");
}

/// Linux 6.7 or later with `kernel.io_uring_disabled` at 0.
fn io_uring_futex_expected() -> bool {
    let enabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|s| s.trim() == "0");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    enabled && version >= (6, 7)
}
