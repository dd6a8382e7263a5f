//! How deep a recursion gets before wasmtime's stack limit, with a plain
//! and with a shared memory. For this small function the depth is the
//! same; the fuzzer's stack-overflow differences came from larger
//! generated functions (`replay` on seed 1012855: the shared run overflowed
//! after 16,384 units of fuel, the plain one after 21,844).
use shmgate_host::wasm::share_memory;
use wasmtime::{Instance, Module, Store};

fn main() {
    let engine = shmgate_fuzz::engine();
    let wat = r#"(module (memory 1) (global $d (mut i32) (i32.const 0))
      (func $f (export "f") (param i32) (result i32)
        (global.set $d (i32.add (global.get $d) (i32.const 1)))
        (i32.store (i32.const 0) (global.get $d))
        (i32.add (call $f (i32.load (local.get 0))) (i32.const 1)))
      (func (export "depth") (result i32) (global.get $d)))"#;
    let plain = wat::parse_str(wat).unwrap();
    let shared = share_memory(&plain).unwrap().into_owned();
    for (what, wasm) in [("plain", &plain), ("shared", &shared)] {
        let module = Module::new(&engine, wasm).unwrap();
        let mut store = Store::new(&engine, ());
        store.set_fuel(u64::MAX).unwrap();
        let i = Instance::new(&mut store, &module, &[]).unwrap();
        let f = i.get_typed_func::<i32, i32>(&mut store, "f").unwrap();
        let e = f.call(&mut store, 0).unwrap_err();
        let d = i.get_typed_func::<(), i32>(&mut store, "depth").unwrap();
        println!(
            "{what}: {:?} at depth {}",
            e.downcast_ref::<wasmtime::Trap>(),
            d.call(&mut store, ()).unwrap()
        );
    }
}
