//! Issue 17, item 1: the embedder's memory limits hold for memories
//! prepared for windows exactly as for plain ones, through the guest's own
//! `memory.grow` and through `map`; `map` reuses what `unmap` freed.

use std::sync::Arc;

use shmgate_core::Errno;
use shmgate_host::OpenOptions;
use shmgate_host::wasm::{ShmCtx, ShmMemoryCreator, add_to_linker, configure, share_memory};
use wasmtime::{
    Config, Engine, Extern, Instance, Linker, Module, Store, StoreLimits, StoreLimitsBuilder,
};

use crate::common::{Ns, PAGE, engine, init, policy};

/// A guest with a plain memory of one page: `open`s its segment `seg`
/// (RDWR), maps and unmaps read-write windows at offset 0, and grows its
/// memory itself.
const GUEST: &str = r#"(module
  (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
  (import "shmgate_v1" "map" (func $map (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "unmap" (func $unmap (param i32 i32) (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "seg")
  (func (export "open") (result i64)
    (call $open (i32.const 0) (i32.const 3) (i32.const 1) (i32.const 0)))
  (func (export "map") (param i32 i32) (result i64)
    (call $map (local.get 0) (i64.const 0) (local.get 1) (i32.const 3)))
  (func (export "unmap") (param i32 i32) (result i64)
    (call $unmap (local.get 0) (local.get 1)))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "size") (result i32) (memory.size)))"#;

/// A store with a `StoreLimits` limiter, as an embedder sets one up.
struct Limited {
    shm: ShmCtx,
    limits: StoreLimits,
}

struct Run {
    store: Store<Limited>,
    instance: Instance,
}

impl Run {
    /// [`GUEST`] (plain, or prepared with `share_memory` for `limit`) in a
    /// store whose limiter allows `limit` bytes per memory.
    fn new(engine: &Engine, ns: &Ns, limit: usize, prepared: bool) -> Run {
        let wasm = wat::parse_str(GUEST).unwrap();
        let wasm = if prepared {
            share_memory(&wasm, limit as u64).unwrap().into_owned()
        } else {
            wasm
        };
        let module = Module::new(engine, &wasm).unwrap();
        let mut linker = Linker::<Limited>::new(engine);
        add_to_linker(&mut linker, |h: &mut Limited| &mut h.shm).unwrap();
        let mut store = Store::new(
            engine,
            Limited {
                shm: ShmCtx::new(policy(ns).max_mapped(1 << 30).build().unwrap()),
                limits: StoreLimitsBuilder::new().memory_size(limit).build(),
            },
        );
        store.limiter(|h| &mut h.limits);
        let instance = linker.instantiate(&mut store, &module).unwrap();
        if prepared {
            assert!(matches!(
                instance.get_export(&mut store, "memory"),
                Some(Extern::SharedMemory(_))
            ));
        }
        Run { store, instance }
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
}

/// A 4 MiB segment `seg` in `ns`.
fn segment(ns: &Ns) -> shmgate_host::OwnedSegment {
    OpenOptions::new()
        .size(4 << 20)
        .open_owned(ns.name("seg"))
        .unwrap()
}

#[test]
fn memory_grow_past_the_limit_fails_as_on_a_plain_memory() {
    init();
    let ns = Ns::new();
    let limit = 1 << 20; // 16 pages
    for prepared in [false, true] {
        let mut run = Run::new(engine(), &ns, limit, prepared);
        assert_eq!(
            run.call::<i32, i32>("grow", 1000),
            -1,
            "prepared: {prepared}"
        );
        assert_eq!(run.call::<i32, i32>("grow", 15), 1, "prepared: {prepared}");
        assert_eq!(run.call::<i32, i32>("grow", 1), -1, "prepared: {prepared}");
        assert_eq!(run.call::<(), i32>("size", ()), 16, "prepared: {prepared}");
    }
}

#[test]
fn map_past_the_limit_is_enomem() {
    init();
    let ns = Ns::new();
    let _seg = segment(&ns);
    let limit = 2 << 20; // 32 pages, one of them the guest's own
    let mut run = Run::new(engine(), &ns, limit, true);
    let h = run.call::<(), i64>("open", ());
    assert!(h >= 0, "open: {h}");
    // Too large at once, then 64 KiB windows until the limit.
    assert_eq!(
        run.call::<(i32, i32), i64>("map", (h as i32, 2 << 20)),
        Errno::NOMEM.to_wire()
    );
    let mut mapped = 0;
    loop {
        let r = run.call::<(i32, i32), i64>("map", (h as i32, PAGE));
        if r < 0 {
            assert_eq!(r, Errno::NOMEM.to_wire());
            break;
        }
        mapped += 1;
        assert!(mapped <= 31, "mapped past the limit");
    }
    assert_eq!(mapped, 31);
    assert_eq!(run.call::<(), i32>("size", ()), 32);
    assert_eq!(run.call::<i32, i32>("grow", 1), -1);
}

#[test]
fn map_reuses_what_unmap_freed() {
    init();
    let ns = Ns::new();
    let _seg = segment(&ns);
    // The issue's case: a 2 MiB limiter, 64 KiB windows mapped and unmapped
    // again and again. Before the fix the memory grew by a page each time
    // and `map` failed after 31 cycles.
    let mut run = Run::new(engine(), &ns, 2 << 20, true);
    let h = run.call::<(), i64>("open", ()) as i32;
    let first = run.call::<(i32, i32), i64>("map", (h, PAGE));
    assert_eq!(
        first,
        i64::from(PAGE),
        "the first window grows the memory by one page"
    );
    assert_eq!(
        run.call::<(i32, i32), i64>("unmap", (first as i32, PAGE)),
        0
    );
    for i in 0..200 {
        let addr = run.call::<(i32, i32), i64>("map", (h, PAGE));
        assert_eq!(addr, first, "cycle {i}: the freed range is reused");
        assert_eq!(run.call::<(i32, i32), i64>("unmap", (addr as i32, PAGE)), 0);
    }
    assert_eq!(
        run.call::<(), i32>("size", ()),
        2,
        "200 cycles grew nothing"
    );
    // Freed neighbours merge: two 64 KiB windows make room for a 128 KiB one.
    let a = run.call::<(i32, i32), i64>("map", (h, PAGE));
    let b = run.call::<(i32, i32), i64>("map", (h, PAGE));
    assert!(a > 0 && b > 0);
    assert_eq!(run.call::<(i32, i32), i64>("unmap", (a as i32, PAGE)), 0);
    assert_eq!(run.call::<(i32, i32), i64>("unmap", (b as i32, PAGE)), 0);
    let both = run.call::<(i32, i32), i64>("map", (h, 2 * PAGE));
    assert_eq!(both, a.min(b));
    assert_eq!(run.call::<(), i32>("size", ()), 3);
}

#[test]
fn the_creator_ceiling_holds_for_memories_declared_shared() {
    init();
    // A module built for threads declares its own shared memory and is
    // not prepared: wasmtime grows it without asking the limiter, but
    // every growth reaches the creator.
    let mut config = Config::new();
    configure(&mut config).with_host_memory(Arc::new(ShmMemoryCreator::with_max_memory(1 << 20)));
    let engine = Engine::new(&config).unwrap();
    let module = Module::new(
        &engine,
        r#"(module (memory (export "memory") 1 65536 shared)
             (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let grow = instance
        .get_typed_func::<i32, i32>(&mut store, "grow")
        .unwrap();
    assert_eq!(grow.call(&mut store, 1000).unwrap(), -1);
    assert_eq!(grow.call(&mut store, 15).unwrap(), 1);
    assert_eq!(grow.call(&mut store, 1).unwrap(), -1);
    // A memory that starts above the ceiling is not created.
    let big = Module::new(&engine, "(module (memory 17 100 shared))").unwrap();
    assert!(Instance::new(&mut store, &big, &[]).is_err());
}
