//! Tests that watch wasmtime (issue 17, item 6). Windows rely on wasmtime
//! 48's shared memories, a tier-2 feature with no security advisories, and
//! on details that are no stable contract. Each test here names one such
//! property and fails the day a wasmtime upgrade breaks it; `docs/ABI.md`
//! lists them.

use std::borrow::Cow;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use shmgate_host::OpenOptions;
use shmgate_host::wasm::{ShmMemoryCreator, WindowState, configure, window_at};
use wasmtime::{
    Config, Engine, LinearMemory, MemoryCreator, MemoryType, Module, SharedMemory, Store,
};

use crate::common::{Guest, Ns, PAGE, init, policy};

/// wiggle (WASI preview 1's host side) never lends a shared memory's bytes
/// as a Rust slice: `as_slice`/`as_slice_mut` give `None` and `as_cow`
/// copies. Windows sit only in shared memories, so a WASI function never
/// holds a `&[u8]`/`&mut [u8]` over bytes another process can change. The
/// wasmtime glue (`wiggle-generate`'s `wasmtime.rs`) hands a
/// `SharedMemory` export to wiggle as `GuestMemory::Shared`; the WASI path
/// test in `findings` runs it end to end.
#[test]
fn wiggle_copies_out_of_shared_memories() {
    let cells: Vec<UnsafeCell<u8>> = b"shared bytes"
        .iter()
        .map(|&b| UnsafeCell::new(b))
        .collect();
    let mut shared = wiggle::GuestMemory::Shared(&cells);
    let ptr = wiggle::GuestPtr::<[u8]>::new((0, 6));
    assert!(shared.is_shared_memory());
    assert!(
        matches!(shared.as_slice(ptr), Ok(None)),
        "no &[u8] over shared memory"
    );
    assert!(
        matches!(shared.as_slice_mut(ptr), Ok(None)),
        "no &mut [u8] over shared memory"
    );
    match shared.as_cow(ptr) {
        Ok(Cow::Owned(bytes)) => assert_eq!(bytes, b"shared"),
        other => panic!("as_cow must copy out of a shared memory: {other:?}"),
    }
    let sptr = wiggle::GuestPtr::<str>::new((7, 5));
    assert!(matches!(shared.as_cow_str(sptr), Ok(Cow::Owned(_))));
    // The control: an unshared memory is lent, which is why windows are
    // refused in unshared memories (`findings::windows_need_a_shared_memory`).
    let mut plain = b"plain bytes".to_vec();
    let plain = wiggle::GuestMemory::Unshared(&mut plain);
    assert!(matches!(plain.as_cow(ptr), Ok(Cow::Borrowed(_))));
}

/// A creator that counts what wasmtime asks of the project's creator.
#[derive(Default)]
struct Seen {
    memories: AtomicUsize,
    shared_types: AtomicUsize,
    grown_to: Mutex<Vec<usize>>,
}

struct Watching {
    inner: ShmMemoryCreator,
    seen: Arc<Seen>,
}

// SAFETY: every memory comes from `ShmMemoryCreator`, whose memories meet
// LinearMemory's contract; the wrapper only counts.
#[allow(unsafe_code)]
unsafe impl MemoryCreator for Watching {
    fn new_memory(
        &self,
        ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        self.seen.memories.fetch_add(1, Ordering::SeqCst);
        if ty.is_shared() {
            self.seen.shared_types.fetch_add(1, Ordering::SeqCst);
        }
        let inner = self.inner.new_memory(
            ty,
            minimum,
            maximum,
            reserved_size_in_bytes,
            guard_size_in_bytes,
        )?;
        Ok(Box::new(WatchedMemory {
            inner,
            seen: Arc::clone(&self.seen),
        }))
    }
}

struct WatchedMemory {
    inner: Box<dyn LinearMemory>,
    seen: Arc<Seen>,
}

// SAFETY: forwards every call to a memory that meets the contract.
#[allow(unsafe_code)]
unsafe impl LinearMemory for WatchedMemory {
    fn byte_size(&self) -> usize {
        self.inner.byte_size()
    }
    fn byte_capacity(&self) -> usize {
        self.inner.byte_capacity()
    }
    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        self.seen.grown_to.lock().unwrap().push(new_size);
        self.inner.grow_to(new_size)
    }
    fn as_ptr(&self) -> *mut u8 {
        self.inner.as_ptr()
    }
}

/// An engine configured like the project's, with the creator watched.
fn watched_engine() -> (Engine, Arc<Seen>) {
    init();
    let seen = Arc::new(Seen::default());
    let mut config = Config::new();
    configure(&mut config).with_host_memory(Arc::new(Watching {
        inner: ShmMemoryCreator::new(),
        seen: Arc::clone(&seen),
    }));
    (Engine::new(&config).unwrap(), seen)
}

/// A module's own `shared` memory (what `share_memory` makes) is created
/// through the engine's memory creator, as a shared memory type: windows
/// are only ever mapped into address space shmgate reserved.
#[test]
fn module_shared_memories_come_from_the_creator() {
    let (engine, seen) = watched_engine();
    let module = Module::new(
        &engine,
        r#"(module (memory (export "memory") 1 10 shared))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
    let memory = instance
        .get_shared_memory(&mut store, "memory")
        .expect("a shared export");
    assert_eq!(
        seen.memories.load(Ordering::SeqCst),
        1,
        "the module's memory"
    );
    assert_eq!(
        seen.shared_types.load(Ordering::SeqCst),
        1,
        "as a shared type"
    );
    assert_eq!(memory.data().len(), PAGE as usize);
    // A host-made `SharedMemory::new` does not come from the creator in
    // wasmtime 48; windows never go there (`map` finds no memory of
    // shmgate's at its address and is refused), so nothing relies on it.
    let _host = SharedMemory::new(&engine, MemoryType::shared(1, 4)).unwrap();
}

/// Growth of a shared memory, by wasm's `memory.grow` and by the host's
/// `SharedMemory::grow` (what `map` uses), reaches the creator's memory
/// (`grow_to`), where shmgate can enforce limits (issue 17a's limiter);
/// and wasmtime itself refuses growth past the declared maximum without
/// asking the creator.
#[test]
fn shared_memory_growth_reaches_the_creator() {
    let (engine, seen) = watched_engine();
    let module = Module::new(
        &engine,
        r#"(module (memory (export "memory") 1 4 shared)
             (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#,
    )
    .unwrap();
    let mut store = Store::new(&engine, ());
    let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
    let grow = instance
        .get_typed_func::<i32, i32>(&mut store, "grow")
        .unwrap();
    let memory = instance.get_shared_memory(&mut store, "memory").unwrap();
    let page = PAGE as usize;
    let before = seen.grown_to.lock().unwrap().len();
    assert_eq!(grow.call(&mut store, 1).unwrap(), 1);
    assert_eq!(
        seen.grown_to.lock().unwrap()[before..],
        [2 * page],
        "wasm memory.grow"
    );
    assert_eq!(memory.grow(1).unwrap(), 2);
    assert_eq!(
        seen.grown_to.lock().unwrap()[before..],
        [2 * page, 3 * page],
        "SharedMemory::grow"
    );
    assert_eq!(
        grow.call(&mut store, 2).unwrap(),
        -1,
        "past the maximum of 4 pages"
    );
    assert!(memory.grow(2).is_err(), "past the maximum, from the host");
    assert_eq!(
        seen.grown_to.lock().unwrap().len(),
        before + 2,
        "refused before the creator"
    );
    assert_eq!(memory.data().len(), 3 * page);
}

/// The signal handlers' order: wasmtime's handler runs first and turns a
/// fault in compiled wasm into a trap, passing on only faults in host
/// code, which reach shmgate's. So a guest store into a read-only window
/// is a trap and leaves the window untouched (read-only, still the
/// segment's); with shmgate's handler first, it would have swapped in
/// private pages and the store would have succeeded into them. A host
/// access (a bulk memory helper) does reach shmgate's handler, which
/// poisons the window (see `bulk`).
#[test]
fn wasmtime_handles_wasm_faults_before_shmgate() {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("order"))
        .unwrap();
    seg.write_all_at(b"segment!", 0).unwrap();
    let mut g = Guest::new(policy(&ns).read_only(true).build().unwrap());
    let h = g.open("order", 0);
    let a = g.map(h, 0, PAGE, 1) as i32;
    assert!(a > 0, "map: {a}");
    let trap = g
        .func::<(i32, i32), ()>("store")
        .call(&mut g.store, (a, 0x4141_4141))
        .expect_err("a guest store into a read-only window traps");
    assert!(format!("{trap:?}").contains("out of bounds"), "{trap:?}");
    let info = window_at(g.host_addr(a)).expect("still registered");
    assert_eq!(
        info.state,
        WindowState::ReadOnly,
        "shmgate's handler never saw the wasm fault"
    );
    assert_eq!(g.call::<i32, i32>("load", a), i32::from_le_bytes(*b"segm"));
}
