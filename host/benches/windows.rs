//! Windows, against their native baselines in one run.
//!
//! - `registry_lookup/{hit,miss}/{1,100,10000}`: what the signal handler
//!   does to find a fault address (`shmgate_host::wasm::window_at` runs the
//!   same lookup), with 1, 100 and 10,000 windows registered;
//! - `map_unmap_64KiB`: a guest `map` + `unmap` of a 64 KiB window against
//!   the two `mmap` calls it replaces, done natively on a reservation
//!   (`MAP_SHARED|MAP_FIXED|MAP_POPULATE` of the segment, then private
//!   anonymous pages back).
//!
//! Run with `cargo bench -p shmgate-host --features wasmtime --bench windows`.

use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shmgate_host::OpenOptions;
use shmgate_host::wasm::{ShmCtx, ShmPolicy, add_to_linker, configure, window_at};
use wasmtime::{Config, Engine, Linker, Module, SharedMemory, Store, TypedFunc};

const PAGE: usize = 64 << 10;

const GUEST: &str = r#"(module
  (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
  (import "shmgate_v1" "map" (func $map (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "unmap" (func $unmap (param i32 i32) (result i64)))
  (memory (export "memory") 1 65536 shared)
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
    (i64.const 0)))"#;

struct Host {
    shm: ShmCtx,
}

struct Guest {
    store: Store<Host>,
    memory: SharedMemory,
    map: TypedFunc<i32, i64>,
    map_unmap: TypedFunc<(i32, i32), i64>,
    handle: i32,
}

fn guest(engine: &Engine, module: &Module, prefix: &str, windows: usize) -> Guest {
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
        },
    );
    let instance = linker.instantiate(&mut store, module).unwrap();
    let open: TypedFunc<(), i64> = instance.get_typed_func(&mut store, "open").unwrap();
    let handle = i32::try_from(open.call(&mut store, ()).unwrap()).expect("a handle");
    Guest {
        memory: instance.get_shared_memory(&mut store, "memory").unwrap(),
        map: instance.get_typed_func(&mut store, "map").unwrap(),
        map_unmap: instance.get_typed_func(&mut store, "map_unmap").unwrap(),
        handle,
        store,
    }
}

fn bench(c: &mut Criterion) {
    let mut config = Config::new();
    configure(&mut config);
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(&engine, GUEST).unwrap();
    let prefix = format!("shmgate-bench-win-{}.", std::process::id());
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(format!("{prefix}seg"))
        .unwrap();

    let mut g = c.benchmark_group("registry_lookup");
    for n in [1usize, 100, 10_000] {
        let mut guest = guest(&engine, &module, &prefix, n);
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

    let mut g = c.benchmark_group("map_unmap_64KiB");
    g.bench_function("native_mmap_pair", |b| {
        // SAFETY: a fresh PROT_NONE reservation of our own, replaced in
        // place below; nothing else uses it.
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
        let fd = std::os::fd::AsFd::as_fd(&*seg).as_raw_fd();
        b.iter(|| {
            // SAFETY: both calls replace exactly our reservation.
            unsafe {
                let p = libc::mmap(
                    reservation,
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE,
                    fd,
                    0,
                );
                assert_eq!(p, reservation);
                let p = libc::mmap(
                    reservation,
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                );
                assert_eq!(p, reservation);
            }
        });
        // SAFETY: our reservation, unmapped once.
        unsafe { libc::munmap(reservation, PAGE) };
    });
    g.bench_function("guest", |b| {
        b.iter_custom(|iters| {
            // Each map grows the memory by a page that unmap does not give
            // back: a fresh store every 60,000 maps (not timed).
            let mut left = iters;
            let mut spent = Duration::ZERO;
            while left > 0 {
                let n = left.min(60_000);
                let mut guest = guest(&engine, &module, &prefix, 1);
                let start = Instant::now();
                let r = guest
                    .map_unmap
                    .call(&mut guest.store, (guest.handle, i32::try_from(n).unwrap()))
                    .unwrap();
                spent += start.elapsed();
                assert_eq!(r, 0);
                left -= n;
            }
            spent
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
