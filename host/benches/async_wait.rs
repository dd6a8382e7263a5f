//! The async `wait32` (`add_to_linker_async`) against the sync one, in one
//! run.
//!
//! - **Wake latency**: a guest's `notify` to the waiting guest running
//!   again, one-way. The waiter guest calls `wait32` and then a host
//!   function `stamp` that records the time; a notifier guest on another
//!   thread takes the time, bumps the word and calls `notify`. Sync: the
//!   waiter runs on a thread of its own (`add_to_linker`). Async: it runs
//!   as a task on a 2-worker tokio runtime (`add_to_linker_async`). Every
//!   sample goes into an HDR histogram; p50 and p99 are printed with the
//!   async/sync ratios.
//! - **The computing guest** (issue 12 point 6): the time of a guest that
//!   computes (`spin`, 20M rounds of an LCG) on the 2-worker runtime,
//!   alone, and while 1,000 other guests wait in `wait32` on the same
//!   runtime; the ratio must stay within 1.10. Criterion measures both
//!   too (`async_wait/compute_*`).
//!
//! The engine is chosen once per process, so the bench runs itself again
//! with `SHMGATE_ASYNC_WAIT=threads` to measure the thread fallback the
//! same way, and prints both.
//!
//! Run with `cargo bench -p shmgate-host --features wasmtime --bench async_wait`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use hdrhistogram::Histogram;
use shmgate_host::OpenOptions;
use shmgate_host::wasm::{
    ShmCtx, ShmPolicy, add_to_linker, add_to_linker_async, async_wait_engine, pending_async_waits,
};
use wasmtime::{Caller, Engine, Instance, Linker, Module, Store, TypedFunc};

const GUEST: &str = r#"(module
  (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
  (import "shmgate_v1" "wait32" (func $wait32 (param i32 i64 i32 i64) (result i64)))
  (import "shmgate_v1" "notify" (func $notify (param i32 i64 i32) (result i64)))
  (import "bench" "stamp" (func $stamp))
  (memory (export "memory") 1)
  (func (export "open") (param i32 i32 i32) (result i64)
    (call $open (local.get 0) (local.get 1) (local.get 2) (i32.const 0x180)))
  (func (export "wait_stamp") (param $h i32) (param $off i64) (param $expected i32) (result i64)
    (local $r i64)
    (local.set $r (call $wait32 (local.get $h) (local.get $off) (local.get $expected) (i64.const -1)))
    (call $stamp)
    (local.get $r))
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

const SAMPLES: u64 = 4000;
const ROUNDS: i64 = 20_000_000;
const WAITERS: usize = 1000;

/// The time base of the stamps.
fn nanos(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

struct Host {
    shm: ShmCtx,
    stamp: Arc<AtomicU64>,
    base: Instant,
}

struct Bench {
    sync: (Engine, Module, Linker<Host>),
    async_: (Engine, Module, Linker<Host>),
    prefix: String,
    base: Instant,
}

impl Bench {
    fn new() -> Bench {
        let stamp_fn = |caller: Caller<'_, Host>| {
            let h = caller.data();
            h.stamp.store(nanos(h.base), Ordering::SeqCst);
        };
        let sync_engine = Engine::default();
        let mut sync_linker = Linker::new(&sync_engine);
        add_to_linker(&mut sync_linker, |h: &mut Host| &mut h.shm).unwrap();
        sync_linker.func_wrap("bench", "stamp", stamp_fn).unwrap();
        let mut config = wasmtime::Config::new();
        config.max_wasm_stack(128 << 10).async_stack_size(256 << 10);
        let async_engine = Engine::new(&config).unwrap();
        let mut async_linker = Linker::new(&async_engine);
        add_to_linker_async(&mut async_linker, |h: &mut Host| &mut h.shm).unwrap();
        async_linker.func_wrap("bench", "stamp", stamp_fn).unwrap();
        Bench {
            sync: (
                sync_engine.clone(),
                Module::new(&sync_engine, GUEST).unwrap(),
                sync_linker,
            ),
            async_: (
                async_engine.clone(),
                Module::new(&async_engine, GUEST).unwrap(),
                async_linker,
            ),
            prefix: format!("shmgate-bench-async-{}.", std::process::id()),
            base: Instant::now(),
        }
    }

    fn store(&self, engine: &Engine, stamp: &Arc<AtomicU64>) -> Store<Host> {
        let policy = ShmPolicy::builder()
            .namespace(&self.prefix)
            .max_wait(Duration::from_secs(600))
            .build()
            .unwrap();
        Store::new(
            engine,
            Host {
                shm: ShmCtx::new(policy),
                stamp: Arc::clone(stamp),
                base: self.base,
            },
        )
    }
}

/// The guest's `open`, with the segment's guest name (`w`) written at
/// guest address 0 for it: call it with `(0, 1, oflags)`.
fn open_w(store: &mut Store<Host>, instance: &Instance) -> TypedFunc<(i32, i32, i32), i64> {
    let mem = instance.get_memory(&mut *store, "memory").unwrap();
    mem.write(&mut *store, 0, b"w").unwrap();
    instance
        .get_typed_func::<(i32, i32, i32), i64>(&mut *store, "open")
        .unwrap()
}

/// The notifier's side of one latency run: `SAMPLES` times, let the waiter
/// arm its wait, take the time, bump the word, `notify`, and wait for the
/// waiter's stamp.
fn notify_loop(
    bench: &Bench,
    stamp: &Arc<AtomicU64>,
    word: &shmgate_host::Mapping,
) -> Histogram<u64> {
    let (engine, module, linker) = &bench.sync;
    let mut store = bench.store(engine, stamp);
    let instance = linker.instantiate(&mut store, module).unwrap();
    let open = open_w(&mut store, &instance);
    let h = i32::try_from(open.call(&mut store, (0, 1, 1)).unwrap()).unwrap();
    let notify = instance
        .get_typed_func::<(i32, i64, i32), i64>(&mut store, "notify")
        .unwrap();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let atom = word.atomic_u32(0).unwrap();
    for i in 0..SAMPLES {
        // Let the waiter get back into its wait.
        std::thread::sleep(Duration::from_micros(300));
        let before = stamp.load(Ordering::SeqCst);
        let t0 = nanos(bench.base);
        atom.store(u32::try_from(i + 1).unwrap(), Ordering::SeqCst);
        notify.call(&mut store, (h, 0, 1)).unwrap();
        let mut spins = 0u64;
        while stamp.load(Ordering::SeqCst) == before {
            spins += 1;
            if spins > 1000 {
                std::thread::yield_now();
            }
        }
        hist.record(stamp.load(Ordering::SeqCst).saturating_sub(t0))
            .unwrap();
    }
    hist
}

fn latency_sync(bench: &Bench, word: &shmgate_host::Mapping) -> Histogram<u64> {
    word.atomic_u32(0).unwrap().store(0, Ordering::SeqCst);
    let stamp = Arc::new(AtomicU64::new(0));
    let waiter = {
        let (engine, module, linker) = bench.sync.clone();
        let mut store = bench.store(&engine, &stamp);
        std::thread::spawn(move || {
            let instance = linker.instantiate(&mut store, &module).unwrap();
            let open = open_w(&mut store, &instance);
            let h = i32::try_from(open.call(&mut store, (0, 1, 0)).unwrap()).unwrap();
            let wait = instance
                .get_typed_func::<(i32, i64, i32), i64>(&mut store, "wait_stamp")
                .unwrap();
            for i in 0..SAMPLES {
                let expected = i32::try_from(i).unwrap();
                let _ = wait.call(&mut store, (h, 0, expected)).unwrap();
            }
        })
    };
    let hist = notify_loop(bench, &stamp, word);
    waiter.join().unwrap();
    hist
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn latency_async(
    bench: &Bench,
    rt: &tokio::runtime::Runtime,
    word: &shmgate_host::Mapping,
) -> Histogram<u64> {
    word.atomic_u32(0).unwrap().store(0, Ordering::SeqCst);
    let stamp = Arc::new(AtomicU64::new(0));
    let (engine, module, linker) = bench.async_.clone();
    let mut store = bench.store(&engine, &stamp);
    let waiter = rt.spawn(async move {
        let instance = linker.instantiate_async(&mut store, &module).await.unwrap();
        let open = open_w(&mut store, &instance);
        let h = i32::try_from(open.call_async(&mut store, (0, 1, 0)).await.unwrap()).unwrap();
        let wait = instance
            .get_typed_func::<(i32, i64, i32), i64>(&mut store, "wait_stamp")
            .unwrap();
        for i in 0..SAMPLES {
            let expected = i32::try_from(i).unwrap();
            let _ = wait.call_async(&mut store, (h, 0, expected)).await.unwrap();
        }
    });
    let hist = notify_loop(bench, &stamp, word);
    rt.block_on(waiter).unwrap();
    hist
}

/// The computing guest's time on `rt`, `runs` times.
fn compute(bench: &Bench, rt: &tokio::runtime::Runtime, runs: u32) -> Vec<Duration> {
    let (engine, module, linker) = bench.async_.clone();
    let mut store = bench.store(&engine, &Arc::new(AtomicU64::new(0)));
    rt.block_on(rt.spawn(async move {
        let instance = linker.instantiate_async(&mut store, &module).await.unwrap();
        let spin = instance
            .get_typed_func::<i64, i64>(&mut store, "spin")
            .unwrap();
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            std::hint::black_box(spin.call_async(&mut store, ROUNDS).await.unwrap());
            times.push(t.elapsed());
        }
        times
    }))
    .unwrap()
}

/// Starts `WAITERS` guests waiting on words 4..4+4*WAITERS (all 0) on
/// `rt`, and waits until they are all armed.
fn start_waiters(bench: &Bench, rt: &tokio::runtime::Runtime) -> Vec<tokio::task::JoinHandle<i64>> {
    let already = pending_async_waits();
    let mut tasks = Vec::new();
    for i in 0..WAITERS {
        let (engine, module, linker) = bench.async_.clone();
        let mut store = bench.store(&engine, &Arc::new(AtomicU64::new(0)));
        tasks.push(rt.spawn(async move {
            let instance = linker.instantiate_async(&mut store, &module).await.unwrap();
            let open = open_w(&mut store, &instance);
            let h = i32::try_from(open.call_async(&mut store, (0, 1, 0)).await.unwrap()).unwrap();
            let wait = instance
                .get_typed_func::<(i32, i64, i32, i64), i64>(&mut store, "wait32")
                .unwrap();
            let offset = 4 + 4 * i64::try_from(i).unwrap();
            wait.call_async(&mut store, (h, offset, 0, -1))
                .await
                .unwrap()
        }));
    }
    while pending_async_waits() < already + WAITERS {
        std::thread::sleep(Duration::from_millis(5));
    }
    tasks
}

/// Wakes every waiter with one notify of each word.
fn stop_waiters(
    bench: &Bench,
    rt: &tokio::runtime::Runtime,
    tasks: Vec<tokio::task::JoinHandle<i64>>,
) {
    let (engine, module, linker) = &bench.sync;
    let mut store = bench.store(engine, &Arc::new(AtomicU64::new(0)));
    let instance = linker.instantiate(&mut store, module).unwrap();
    let open = open_w(&mut store, &instance);
    let h = i32::try_from(open.call(&mut store, (0, 1, 0)).unwrap()).unwrap();
    let notify = instance
        .get_typed_func::<(i32, i64, i32), i64>(&mut store, "notify")
        .unwrap();
    for i in 0..WAITERS {
        let offset = 4 + 4 * i64::try_from(i).unwrap();
        assert_eq!(notify.call(&mut store, (h, offset, 1)).unwrap(), 1);
    }
    for t in tasks {
        assert_eq!(rt.block_on(t).unwrap(), 0);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Measures everything for the engine this process uses and prints one
/// `key=value` line per figure.
fn measure(c: Option<&mut Criterion>) {
    let bench = Bench::new();
    let seg = OpenOptions::new()
        .size(65536)
        .open_owned(format!("{}w", bench.prefix))
        .unwrap();
    let word = seg.map().unwrap();
    let rt = runtime();
    let engine = format!("{:?}", async_wait_engine());

    let sync = latency_sync(&bench, &word);
    let asyn = latency_async(&bench, &rt, &word);
    println!(
        "latency engine={engine} sync_p50_us={:.1} sync_p99_us={:.1} async_p50_us={:.1} async_p99_us={:.1} ratio_p50={:.2} ratio_p99={:.2}",
        us(&sync, 0.5),
        us(&sync, 0.99),
        us(&asyn, 0.5),
        us(&asyn, 0.99),
        us(&asyn, 0.5) / us(&sync, 0.5),
        us(&asyn, 0.99) / us(&sync, 0.99),
    );

    let _ = compute(&bench, &rt, 2); // warm up
    let solo = median(compute(&bench, &rt, 9));
    let tasks = start_waiters(&bench, &rt);
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
    let loaded = median(compute(&bench, &rt, 9));
    println!(
        "compute engine={engine} solo_ms={:.2} with_{WAITERS}_waiting_ms={:.2} ratio={:.3} threads={threads}",
        solo.as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3,
        loaded.as_secs_f64() / solo.as_secs_f64(),
    );
    if let Some(c) = c {
        let mut group = c.benchmark_group("async_wait");
        group.sample_size(10);
        let run = |iters: u64| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                total += compute(&bench, &rt, 1)[0];
            }
            total
        };
        group.bench_function("compute_with_1000_waiting", |b| b.iter_custom(run));
        stop_waiters(&bench, &rt, tasks);
        group.bench_function("compute_solo", |b| b.iter_custom(run));
        group.finish();
    } else {
        stop_waiters(&bench, &rt, tasks);
    }
}

fn main() {
    if std::env::var_os("SHMGATE_ASYNC_WAIT").is_some() {
        measure(None);
        return;
    }
    // The thread fallback, in a process of its own.
    let fallback = std::process::Command::new(std::env::current_exe().unwrap())
        .env("SHMGATE_ASYNC_WAIT", "threads")
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&fallback.stdout));
    let mut c = Criterion::default().configure_from_args();
    measure(Some(&mut c));
    c.final_summary();
}
