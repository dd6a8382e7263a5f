//! Guest calls through `shmgate_v1` (a core module) and through
//! `shmgate:shm` (a component) against the native path, in one run.
//!
//! - `open_close`: a guest loop of `open(existing) + close` against the
//!   native `shmgate_host::open` + drop, with the guest's memory local
//!   (`guest`) and shared (`guest_shared`, what windows need), and the
//!   driver component's loop of `segment.open` + drop (`component`);
//! - `write_1MiB` / `read_1MiB`: a guest `write`/`read` of 1 MiB against the
//!   native `write_at`/`read_at` and against a plain `memcpy` into/out of a
//!   mapping of the same segment; `component` is the driver component's
//!   `segment.write`/`segment.read` of a 1 MiB `list<u8>` (one more copy
//!   each way than `guest`: the canonical ABI lifts and lowers the list).
//! - `clock`: one monotonic clock read: native `clock_gettime`
//!   (`shmgate_host::ring::monotonic_ns`), a core module's `shmgate_v1`
//!   `clock_monotonic` and WASI `clock_time_get` (wasmtime-wasi's
//!   preview 1), and a component's `clock-monotonic` and WASI
//!   `wasi:clocks/monotonic-clock.now` (the driver component's loops).
//!
//! Run with `cargo bench -p shmgate-host --features wasmtime --bench wasm`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shmgate_host::wasm::{ShmCtx, ShmPolicy, add_to_linker, configure, share_memory};
use shmgate_host::{Mode, OFlags, OpenOptions};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, Linker, Module, Store, TypedFunc};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod driver {
    wasmtime::component::bindgen!({
        path: "../examples/guests/driver-wit",
        world: "shmgate:driver/component-driver",
        with: {
            "shmgate:shm/segments": shmgate_host::wasm::component::bindings::shmgate::shm::segments,
        },
    });
}

/// The driver component's store: WASI 0.2 and the same `ShmCtx`.
struct CompHost {
    wasi: WasiCtx,
    table: ResourceTable,
    shm: ShmCtx,
}

impl WasiView for CompHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

const MIB: usize = 1 << 20;

/// The bench guest: a loop of open+close, and single 1 MiB read/write
/// calls on a buffer at address 65536.
const GUEST: &str = r#"(module
  (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
  (import "shmgate_v1" "close" (func $close (param i32) (result i64)))
  (import "shmgate_v1" "read" (func $read (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "write" (func $write (param i32 i64 i32 i32) (result i64)))
  (memory (export "memory") 17)
  (data (i32.const 0) "seg")
  (func (export "open_close") (param $ptr i32) (param $len i32) (param $n i32) (result i64)
    (local $h i64)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $h (call $open (local.get $ptr) (local.get $len) (i32.const 0) (i32.const 0)))
        (if (i64.lt_s (local.get $h) (i64.const 0)) (then (return (local.get $h))))
        (drop (call $close (i32.wrap_i64 (local.get $h))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (i64.const 0))
  (func (export "open_rw") (param $ptr i32) (param $len i32) (result i64)
    (call $open (local.get $ptr) (local.get $len) (i32.const 1) (i32.const 0)))
  (func (export "write") (param $h i32) (param $len i32) (result i64)
    (call $write (local.get $h) (i64.const 0) (i32.const 65536) (local.get $len)))
  (func (export "read") (param $h i32) (param $len i32) (result i64)
    (call $read (local.get $h) (i64.const 0) (i32.const 65536) (local.get $len))))"#;

struct Host {
    shm: ShmCtx,
}

/// The clock bench guest: `n` reads of `shmgate_v1`'s `clock_monotonic`,
/// or of WASI's `clock_time_get` (monotonic, through memory at 0); each
/// returns the last reading (so no read is dead code).
const CLOCK_GUEST: &str = r#"(module
  (import "shmgate_v1" "clock_monotonic" (func $clock (result i64)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "shmgate_clock") (param $n i32) (result i64)
    (local $t i64)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $t (call $clock))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (local.get $t))
  (func (export "wasi_clock") (param $n i32) (result i64)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (drop (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 0)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (i64.load (i32.const 0))))"#;

/// The clock bench guest's store: WASI preview 1 and `shmgate_v1`.
struct ClockHost {
    wasi: wasmtime_wasi::p1::WasiP1Ctx,
    shm: ShmCtx,
}

/// One clock read per iteration: native, then the guests' routes.
fn bench_clock(c: &mut Criterion, comp: (&driver::ComponentDriver, &mut Store<CompHost>)) {
    let engine = Engine::default();
    let module = Module::new(&engine, wat::parse_str(CLOCK_GUEST).unwrap()).unwrap();
    let mut linker = Linker::<ClockHost>::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut ClockHost| &mut h.wasi).unwrap();
    add_to_linker(&mut linker, |h: &mut ClockHost| &mut h.shm).unwrap();
    let mut store = Store::new(
        &engine,
        ClockHost {
            wasi: WasiCtxBuilder::new().build_p1(),
            shm: ShmCtx::new(ShmPolicy::builder().build().unwrap()),
        },
    );
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let shmgate_clock: TypedFunc<i32, i64> = instance
        .get_typed_func(&mut store, "shmgate_clock")
        .unwrap();
    let wasi_clock: TypedFunc<i32, i64> =
        instance.get_typed_func(&mut store, "wasi_clock").unwrap();
    let (comp, cstore) = comp;
    let api = comp.shmgate_driver_driver();
    let mut g = c.benchmark_group("clock");
    g.bench_function("native_clock_gettime", |b| {
        b.iter(shmgate_host::ring::monotonic_ns)
    });
    for (name, f) in [
        ("guest_shmgate_clock_monotonic", &shmgate_clock),
        ("guest_wasi_clock_time_get", &wasi_clock),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let n = i32::try_from(iters).expect("criterion asks for fewer than 2^31");
                let start = Instant::now();
                assert!(f.call(&mut store, n).unwrap() >= 0);
                start.elapsed()
            })
        });
    }
    for wasi in [false, true] {
        let name = if wasi {
            "component_wasi_monotonic_clock_now"
        } else {
            "component_shmgate_clock_monotonic"
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let n = u32::try_from(iters).expect("criterion asks for fewer than 2^32");
                let start = Instant::now();
                let r = if wasi {
                    api.call_wasi_clock_loop(&mut *cstore, n)
                } else {
                    api.call_clock_loop(&mut *cstore, n)
                };
                black_box(r.unwrap());
                start.elapsed()
            })
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let prefix = format!("shmgate-bench-wasm-{}.", std::process::id());
    let host_name = format!("{prefix}seg");
    let seg = OpenOptions::new()
        .size(MIB as u64)
        .open_owned(&host_name)
        .expect("creating the bench segment");

    let policy = ShmPolicy::builder()
        .namespace(&prefix)
        .max_handles(4)
        .build()
        .unwrap();
    let instantiate = |engine: &Engine, wasm: &[u8]| {
        let module = Module::new(engine, wasm).expect("bench guest");
        let mut linker = Linker::<Host>::new(engine);
        add_to_linker(&mut linker, |h: &mut Host| &mut h.shm).unwrap();
        let mut store = Store::new(
            engine,
            Host {
                shm: ShmCtx::new(policy.clone()),
            },
        );
        let instance = linker.instantiate(&mut store, &module).unwrap();
        (store, instance)
    };
    let wasm = wat::parse_str(GUEST).unwrap();
    let engine = Engine::default();
    let (mut store, instance) = instantiate(&engine, &wasm);
    let open_close: TypedFunc<(i32, i32, i32), i64> =
        instance.get_typed_func(&mut store, "open_close").unwrap();
    let mut config = Config::new();
    configure(&mut config);
    let shared_engine = Engine::new(&config).unwrap();
    let (mut shared_store, shared_instance) =
        instantiate(&shared_engine, &share_memory(&wasm, 1 << 32).unwrap());
    let shared_open_close: TypedFunc<(i32, i32, i32), i64> = shared_instance
        .get_typed_func(&mut shared_store, "open_close")
        .unwrap();
    let open_rw: TypedFunc<(i32, i32), i64> =
        instance.get_typed_func(&mut store, "open_rw").unwrap();
    let write: TypedFunc<(i32, i32), i64> = instance.get_typed_func(&mut store, "write").unwrap();
    let read: TypedFunc<(i32, i32), i64> = instance.get_typed_func(&mut store, "read").unwrap();
    let handle = i32::try_from(open_rw.call(&mut store, (0, 3)).unwrap()).expect("a handle");

    // The driver component (examples/guests, wasm32-wasip2).
    let component = Component::from_file(&engine, shmgate_guest_artifacts::COMPONENT_DRIVER)
        .expect("the driver component");
    let mut clinker = wasmtime::component::Linker::<CompHost>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut clinker).unwrap();
    shmgate_host::wasm::component::add_to_linker(&mut clinker, |h: &mut CompHost| &mut h.shm)
        .unwrap();
    let mut cstore = Store::new(
        &engine,
        CompHost {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            shm: ShmCtx::new(policy.clone()),
        },
    );
    let comp = driver::ComponentDriver::instantiate(&mut cstore, &component, &clinker).unwrap();
    let api = comp.shmgate_driver_driver();
    let rw = shmgate_host::wasm::component::OpenFlags::READ_WRITE;
    let slot = api
        .call_open(&mut cstore, "seg", rw, 0)
        .unwrap()
        .expect("the component opens the segment");

    let mut g = c.benchmark_group("wasm_open_close");
    g.bench_function("native", |b| {
        b.iter(|| {
            drop(shmgate_host::open(black_box(&host_name), OFlags::RDONLY, Mode::OWNER_RW).unwrap())
        })
    });
    g.bench_function("guest", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let n = i32::try_from(iters).expect("criterion asks for fewer than 2^31");
            assert_eq!(open_close.call(&mut store, (0, 3, n)).unwrap(), 0);
            start.elapsed()
        })
    });
    g.bench_function("guest_shared", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let n = i32::try_from(iters).expect("criterion asks for fewer than 2^31");
            let r = shared_open_close.call(&mut shared_store, (0, 3, n));
            assert_eq!(r.unwrap(), 0);
            start.elapsed()
        })
    });
    g.bench_function("component", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let n = u32::try_from(iters).expect("criterion asks for fewer than 2^32");
            let r = api.call_open_close_loop(&mut cstore, "seg", n).unwrap();
            r.expect("open+close in the component");
            start.elapsed()
        })
    });
    g.finish();

    let map = seg.map().unwrap();
    let mut buf = vec![0x5au8; MIB];
    let len = i32::try_from(MIB).unwrap();
    for (dir, wasm_fn) in [("write", &write), ("read", &read)] {
        let mut g = c.benchmark_group(format!("wasm_{dir}_1MiB"));
        g.throughput(Throughput::Bytes(MIB as u64));
        g.bench_function("memcpy", |b| {
            b.iter(|| {
                if dir == "write" {
                    map.write_at(0, black_box(&buf)).unwrap()
                } else {
                    map.read_at(0, black_box(&mut buf)).unwrap()
                }
            })
        });
        g.bench_function("native", |b| {
            b.iter(|| {
                let n = if dir == "write" {
                    seg.write_at(black_box(&buf), 0).unwrap()
                } else {
                    seg.read_at(black_box(&mut buf), 0).unwrap()
                };
                assert_eq!(n, MIB);
            })
        });
        g.bench_function("guest", |b| {
            b.iter(|| {
                assert_eq!(
                    wasm_fn.call(&mut store, (handle, len)).unwrap(),
                    i64::from(len)
                )
            })
        });
        g.bench_function("component", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let n = u32::try_from(iters).expect("criterion asks for fewer than 2^32");
                let r = if dir == "write" {
                    api.call_write_loop(&mut cstore, slot, MIB as u64, n)
                } else {
                    api.call_read_loop(&mut cstore, slot, MIB as u64, n)
                };
                r.unwrap().expect("the component's loop");
                start.elapsed()
            })
        });
        g.finish();
    }
    bench_clock(c, (&comp, &mut cstore));
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
