//! Issue 17, item 4: every memory kind still runs on an engine set up with
//! `configure`; `map` is `ENOTSUP` on memories that cannot hold windows,
//! and `share_memory` shares the 32-bit memories of a module that mixes
//! kinds.

use std::sync::OnceLock;

use shmgate_core::Errno;
use shmgate_host::OpenOptions;
use shmgate_host::wasm::{ShmCtx, add_to_linker, configure, share_memory};
use wasmtime::{Config, Engine, Extern, Linker, Module, Store};

use crate::common::{Host, Ns, PAGE, init, policy};

/// `configure` plus the memory64 and custom-page-sizes proposals.
fn kinds_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        init();
        let mut config = Config::new();
        configure(&mut config)
            .wasm_memory64(true)
            .wasm_custom_page_sizes(true);
        Engine::new(&config).unwrap()
    })
}

/// `wasm` linked with `shmgate_v1` in a store allowing windows in `ns`.
fn instantiate(wasm: &[u8], ns: &Ns) -> (Store<Host>, wasmtime::Instance) {
    let module = Module::new(kinds_engine(), wasm).unwrap();
    let mut linker = Linker::<Host>::new(kinds_engine());
    add_to_linker(&mut linker, |h: &mut Host| &mut h.shm).unwrap();
    let mut store = Store::new(
        kinds_engine(),
        Host {
            shm: ShmCtx::new(policy(ns).build().unwrap()),
        },
    );
    let instance = linker.instantiate(&mut store, &module).unwrap();
    (store, instance)
}

/// The imports that open and map segments (text comes before memories).
const IMPORTS: &str = r#"(import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
        (import "shmgate_v1" "map" (func $map (param i32 i64 i32 i32) (result i64)))"#;

/// The exports that open segment `seg` (its name at address 0 of memory
/// `$mem`) and map it: `$addr` is `i32` or `i64`.
fn windows_funcs(addr: &str) -> String {
    format!(
        r#"(data (memory $mem) ({addr}.const 0) "seg")
        (func (export "open") (result i64)
          (call $open (i32.const 0) (i32.const 3) (i32.const 1) (i32.const 0)))
        (func (export "map") (param i32) (result i64)
          (call $map (local.get 0) (i64.const 0) (i32.const {PAGE}) (i32.const 3)))"#
    )
}

fn segment(ns: &Ns) -> shmgate_host::OwnedSegment {
    OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap()
}

#[test]
fn memory64_runs_and_map_on_it_is_enotsup() {
    let ns = Ns::new();
    let _seg = segment(&ns);
    let wasm = wat::parse_str(format!(
        r#"(module
          {IMPORTS}
          (memory $mem (export "memory") i64 1)
          {}
          (func (export "grow_store_load") (result i64)
            (drop (memory.grow (i64.const 2)))
            (i64.store (i64.const 0x2fff8) (i64.const 42))
            (i64.load (i64.const 0x2fff8))))"#,
        windows_funcs("i64")
    ))
    .unwrap();
    let (mut store, instance) = instantiate(&wasm, &ns);
    let f = instance
        .get_typed_func::<(), i64>(&mut store, "grow_store_load")
        .unwrap();
    assert_eq!(f.call(&mut store, ()).unwrap(), 42);
    let h = instance
        .get_typed_func::<(), i64>(&mut store, "open")
        .unwrap()
        .call(&mut store, ())
        .unwrap();
    assert!(h >= 0, "open: {h}");
    let map = instance
        .get_typed_func::<i32, i64>(&mut store, "map")
        .unwrap();
    assert_eq!(
        map.call(&mut store, h as i32).unwrap(),
        Errno::NOTSUP.to_wire()
    );
    // share_memory leaves it as it is.
    assert_eq!(&*share_memory(&wasm, 1 << 32).unwrap(), &wasm[..]);
}

#[test]
fn custom_page_sizes_run_and_map_on_them_is_enotsup() {
    let ns = Ns::new();
    let _seg = segment(&ns);
    let wasm = wat::parse_str(format!(
        r#"(module
          {IMPORTS}
          (memory $mem (export "memory") 10 100 (pagesize 1))
          {}
          (func (export "store") (param i32 i32) (i32.store8 (local.get 0) (local.get 1)))
          (func (export "load") (param i32) (result i32) (i32.load8_u (local.get 0)))
          (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"#,
        windows_funcs("i32")
    ))
    .unwrap();
    let (mut store, instance) = instantiate(&wasm, &ns);
    let st = instance
        .get_typed_func::<(i32, i32), ()>(&mut store, "store")
        .unwrap();
    let ld = instance
        .get_typed_func::<i32, i32>(&mut store, "load")
        .unwrap();
    let grow = instance
        .get_typed_func::<i32, i32>(&mut store, "grow")
        .unwrap();
    st.call(&mut store, (9, 7)).unwrap();
    assert_eq!(ld.call(&mut store, 9).unwrap(), 7);
    assert!(
        st.call(&mut store, (10, 1)).is_err(),
        "byte 10 is out of bounds"
    );
    assert_eq!(grow.call(&mut store, 5).unwrap(), 10);
    st.call(&mut store, (14, 3)).unwrap();
    assert_eq!(ld.call(&mut store, 14).unwrap(), 3);
    assert!(ld.call(&mut store, 15).is_err(), "byte 15 is out of bounds");
    assert_eq!(grow.call(&mut store, 85).unwrap(), 15);
    assert_eq!(
        grow.call(&mut store, 1).unwrap(),
        -1,
        "its maximum is 100 bytes"
    );
    let h = instance
        .get_typed_func::<(), i64>(&mut store, "open")
        .unwrap()
        .call(&mut store, ())
        .unwrap();
    assert!(h >= 0, "open: {h}");
    let map = instance
        .get_typed_func::<i32, i64>(&mut store, "map")
        .unwrap();
    assert_eq!(
        map.call(&mut store, h as i32).unwrap(),
        Errno::NOTSUP.to_wire()
    );
}

#[test]
fn share_memory_shares_the_32_bit_memory_of_a_mixed_module() {
    let ns = Ns::new();
    let _seg = segment(&ns);
    // The 64-bit memory comes first.
    let wasm = wat::parse_str(format!(
        r#"(module
          {IMPORTS}
          (memory $big i64 1)
          (memory $mem (export "memory") 1)
          {}
          (func (export "big") (result i64)
            (i64.store $big (i64.const 8) (i64.const 5)) (i64.load $big (i64.const 8))))"#,
        windows_funcs("i32")
    ))
    .unwrap();
    let shared = share_memory(&wasm, 1 << 30).unwrap();
    let (mut store, instance) = instantiate(&shared, &ns);
    assert!(matches!(
        instance.get_export(&mut store, "memory"),
        Some(Extern::SharedMemory(_))
    ));
    let big = instance
        .get_typed_func::<(), i64>(&mut store, "big")
        .unwrap();
    assert_eq!(big.call(&mut store, ()).unwrap(), 5);
    let h = instance
        .get_typed_func::<(), i64>(&mut store, "open")
        .unwrap()
        .call(&mut store, ())
        .unwrap();
    assert!(h >= 0, "open: {h}");
    let map = instance
        .get_typed_func::<i32, i64>(&mut store, "map")
        .unwrap();
    assert_eq!(map.call(&mut store, h as i32).unwrap(), i64::from(PAGE));
}
