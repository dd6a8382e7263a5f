//! Windows, against their native baselines in one run.
//!
//! - `registry_lookup/{hit,miss}/{1,100,10000}`: what the signal handler
//!   does to find a fault address (`shmgate_host::wasm::window_at` runs the
//!   same lookup), with 1, 100 and 10,000 windows registered;
//! - `map_unmap_64KiB`: a guest `map` + `unmap` of a 64 KiB window against
//!   the two `mmap` calls it replaces, done natively on a reservation
//!   (`MAP_SHARED|MAP_FIXED|MAP_POPULATE` of the segment, then private
//!   anonymous pages back). The guest is prepared as an embedder does
//!   (`share_memory` with the store's memory limit, a `StoreLimits`
//!   limiter on the store); `map` reuses the range `unmap` freed, so the
//!   memory never grows;
//! - `guest_call`: a guest loop of `shmgate_v1.size` calls, the cost of
//!   one host call, on a store with a limiter and a prepared memory
//!   (`limited`) and on one without either, its memory declared shared
//!   (`unlimited`, as before issue 17);
//! - before criterion: the same `map`+`unmap` pair and the native pair,
//!   interleaved, one at a time, into HDR histograms: p50/p99/p99.9 and
//!   mean, and their ratios.
//!
//! Run with `cargo bench -p shmgate-host --features wasmtime --bench windows`.

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use shmgate_host::OpenOptions;
use shmgate_host::wasm::{ShmCtx, ShmPolicy, add_to_linker, configure, share_memory, window_at};
use wasmtime::{
    Config, Engine, Linker, Module, SharedMemory, Store, StoreLimits, StoreLimitsBuilder, TypedFunc,
};

const PAGE: usize = 64 << 10;

const GUEST: &str = r#"(module
  (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
  (import "shmgate_v1" "map" (func $map (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "unmap" (func $unmap (param i32 i32) (result i64)))
  (import "shmgate_v1" "size" (func $size (param i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "seg")
  (func (export "open") (result i64)
    (call $open (i32.const 0) (i32.const 3) (i32.const 1) (i32.const 0)))
  (func (export "map") (param $h i32) (result i64)
    (call $map (local.get $h) (i64.const 0) (i32.const 65536) (i32.const 3)))
  (func (export "map_unmap") (param $h i32) (param $n i32) (result i64)
    (local $a i64)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $a (call $map (local.get $h) (i64.const 0) (i32.const 65536) (i32.const 3)))
        (if (i64.lt_s (local.get $a) (i64.const 0)) (then (return (local.get $a))))
        (drop (call $unmap (i32.wrap_i64 (local.get $a)) (i32.const 65536)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (i64.const 0))
  (func (export "size_loop") (param $h i32) (param $n i32) (result i64)
    (local $s i64)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $s (i64.add (local.get $s) (call $size (local.get $h))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (local.get $s)))"#;

/// The memory limit of the benchmark's stores: 1 GiB (the registry
/// lookups map 10,000 windows, 625 MiB).
const LIMIT: usize = 1 << 30;

struct Host {
    shm: ShmCtx,
    limits: StoreLimits,
}

struct Guest {
    store: Store<Host>,
    memory: SharedMemory,
    map: TypedFunc<i32, i64>,
    map_unmap: TypedFunc<(i32, i32), i64>,
    size_loop: TypedFunc<(i32, i32), i64>,
    handle: i32,
}

/// A store running `module` with a grant of `windows` 64 KiB windows and,
/// if `limited`, a `StoreLimits` limiter of [`LIMIT`].
fn guest(engine: &Engine, module: &Module, prefix: &str, windows: usize, limited: bool) -> Guest {
    let mut linker = Linker::<Host>::new(engine);
    add_to_linker(&mut linker, |h: &mut Host| &mut h.shm).unwrap();
    let policy = ShmPolicy::builder()
        .namespace(prefix)
        .max_mapped((windows * PAGE) as u64)
        .max_windows(windows)
        .build()
        .unwrap();
    let mut store = Store::new(
        engine,
        Host {
            shm: ShmCtx::new(policy),
            limits: StoreLimitsBuilder::new().memory_size(LIMIT).build(),
        },
    );
    if limited {
        store.limiter(|h| &mut h.limits);
    }
    let instance = linker.instantiate(&mut store, module).unwrap();
    let open: TypedFunc<(), i64> = instance.get_typed_func(&mut store, "open").unwrap();
    let handle = i32::try_from(open.call(&mut store, ()).unwrap()).expect("a handle");
    Guest {
        memory: instance.get_shared_memory(&mut store, "memory").unwrap(),
        map: instance.get_typed_func(&mut store, "map").unwrap(),
        map_unmap: instance.get_typed_func(&mut store, "map_unmap").unwrap(),
        size_loop: instance.get_typed_func(&mut store, "size_loop").unwrap(),
        handle,
        store,
    }
}

fn bench(c: &mut Criterion) {
    let mut config = Config::new();
    configure(&mut config);
    let engine = Engine::new(&config).unwrap();
    // Prepared as an embedder does: shared, with the store's limit.
    let wasm = wat::parse_str(GUEST).unwrap();
    let module = Module::new(&engine, &*share_memory(&wasm, LIMIT as u64).unwrap()).unwrap();
    // As before issue 17: declared shared, no maximum, no limiter.
    let unlimited = Module::new(
        &engine,
        GUEST.replace(
            "(memory (export \"memory\") 1)",
            "(memory (export \"memory\") 1 65536 shared)",
        ),
    )
    .unwrap();
    let prefix = format!("shmgate-bench-win-{}.", std::process::id());
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(format!("{prefix}seg"))
        .unwrap();

    let mut g = c.benchmark_group("registry_lookup");
    for n in [1usize, 100, 10_000] {
        let mut guest = guest(&engine, &module, &prefix, n, true);
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            let a = guest.map.call(&mut guest.store, guest.handle).unwrap();
            assert!(a > 0, "map: {a}");
            addrs.push(usize::try_from(a).expect("an address"));
        }
        let base = guest.memory.data().as_ptr() as usize;
        let hit = (base + addrs[n / 2] + 100) as *const u8;
        let miss = (base + 100) as *const u8; // the guest's own first page
        assert!(window_at(hit).is_some() && window_at(miss).is_none());
        g.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, &a| {
            b.iter(|| window_at(black_box(a)))
        });
        g.bench_with_input(BenchmarkId::new("miss", n), &miss, |b, &a| {
            b.iter(|| window_at(black_box(a)))
        });
    }
    g.finish();

    let fd = std::os::fd::AsFd::as_fd(&*seg).as_raw_fd();
    let native = NativePair::new(fd);
    histograms(&engine, &module, &prefix, &native);

    let mut g = c.benchmark_group("map_unmap_64KiB");
    g.bench_function("native_mmap_pair", |b| b.iter(|| native.run()));
    g.bench_function("guest", |b| {
        // `map` reuses what `unmap` freed: one store for every iteration.
        let mut guest = guest(&engine, &module, &prefix, 1, true);
        b.iter_custom(|iters| {
            let n = i32::try_from(iters).expect("criterion asks for fewer than 2^31");
            let start = Instant::now();
            let r = guest.map_unmap.call(&mut guest.store, (guest.handle, n));
            let spent = start.elapsed();
            assert_eq!(r.unwrap(), 0);
            spent
        });
        assert_eq!(
            guest.memory.size(),
            2,
            "the memory never grew past one window"
        );
    });
    g.finish();

    let mut g = c.benchmark_group("guest_call");
    for (name, module, limited) in [("limited", &module, true), ("unlimited", &unlimited, false)] {
        let mut guest = guest(&engine, module, &prefix, 1, limited);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let n = i32::try_from(iters).expect("criterion asks for fewer than 2^31");
                let start = Instant::now();
                let r = guest.size_loop.call(&mut guest.store, (guest.handle, n));
                let spent = start.elapsed();
                assert_eq!(r.unwrap(), iters as i64 * PAGE as i64);
                spent
            })
        });
    }
    g.finish();
}

/// The two `mmap` calls a window's `map` + `unmap` make, natively, on a
/// reservation of our own.
struct NativePair {
    reservation: *mut libc::c_void,
    fd: i32,
}

impl NativePair {
    fn new(fd: i32) -> NativePair {
        // SAFETY: a fresh PROT_NONE reservation of our own, replaced in
        // place by `run`; nothing else uses it.
        let reservation = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(reservation, libc::MAP_FAILED);
        NativePair { reservation, fd }
    }

    fn run(&self) {
        // SAFETY: both calls replace exactly our reservation.
        unsafe {
            let p = libc::mmap(
                self.reservation,
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE,
                self.fd,
                0,
            );
            assert_eq!(p, self.reservation);
            let p = libc::mmap(
                self.reservation,
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            );
            assert_eq!(p, self.reservation);
        }
    }
}

impl Drop for NativePair {
    fn drop(&mut self) {
        // SAFETY: our reservation, unmapped once.
        unsafe { libc::munmap(self.reservation, PAGE) };
    }
}

/// One guest `map`+`unmap` (a wasm call of one iteration) and one native
/// pair, interleaved, 20,000 times each, into HDR histograms; prints
/// p50/p99/p99.9/mean of both and the guest's ratio to native.
fn histograms(engine: &Engine, module: &Module, prefix: &str, native: &NativePair) {
    let mut guest = guest(engine, module, prefix, 1, true);
    let mut h_native = Histogram::<u64>::new(3).unwrap();
    let mut h_guest = Histogram::<u64>::new(3).unwrap();
    for i in 0..22_000 {
        let t = Instant::now();
        native.run();
        let native_ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let t = Instant::now();
        let r = guest.map_unmap.call(&mut guest.store, (guest.handle, 1));
        let guest_ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        assert_eq!(r.unwrap(), 0);
        if i >= 2_000 {
            // The first 2,000 warm up.
            h_native.record(native_ns).unwrap();
            h_guest.record(guest_ns).unwrap();
        }
    }
    assert_eq!(
        guest.memory.size(),
        2,
        "the memory never grew past one window"
    );
    let row = |name: &str, h: &Histogram<u64>| {
        println!(
            "map_unmap_64KiB/{name}: p50 {} ns, p99 {} ns, p99.9 {} ns, mean {:.0} ns",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.mean()
        );
    };
    row("native_mmap_pair", &h_native);
    row("guest", &h_guest);
    let ratio = |q: f64| h_guest.value_at_quantile(q) as f64 / h_native.value_at_quantile(q) as f64;
    println!(
        "map_unmap_64KiB guest/native: p50 {:.2}x, p99 {:.2}x, p99.9 {:.2}x, mean {:.2}x",
        ratio(0.5),
        ratio(0.99),
        ratio(0.999),
        h_guest.mean() / h_native.mean()
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
