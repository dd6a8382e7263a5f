//! Replays one module plain and shared and prints, per exported function,
//! the outcome and the fuel it consumed with a large fuel budget.
use shmgate_host::wasm::share_memory;
use wasmtime::{Instance, Module, Store, Val};

fn main() {
    let path = std::env::args().nth(1).expect("a .wasm file");
    let plain = std::fs::read(path).unwrap();
    let shared = share_memory(&plain).unwrap().into_owned();
    let engine = shmgate_fuzz::engine();
    for (what, wasm) in [("plain", &plain), ("shared", &shared)] {
        let module = Module::new(&engine, wasm).unwrap();
        let mut store = Store::new(&engine, ());
        let budget = 1u64 << 40;
        store.set_fuel(budget).unwrap();
        let i = match Instance::new(&mut store, &module, &[]) {
            Ok(i) => i,
            Err(e) => {
                println!(
                    "{what}: instantiate {:?} after {} fuel",
                    e.downcast_ref::<wasmtime::Trap>(),
                    budget - store.get_fuel().unwrap()
                );
                continue;
            }
        };
        println!(
            "{what}: instantiated with {} fuel",
            budget - store.get_fuel().unwrap()
        );
        let funcs: Vec<_> = i
            .exports(&mut store)
            .filter_map(|e| e.into_func())
            .collect();
        for f in funcs {
            let ty = f.ty(&store);
            let params: Vec<Val> = ty
                .params()
                .map(|t| Val::default_for_ty(&t).unwrap_or(Val::I32(0)))
                .collect();
            let mut results: Vec<Val> = ty.results().map(|_| Val::I32(0)).collect();
            store.set_fuel(budget).unwrap();
            let r = f.call(&mut store, &params, &mut results);
            println!(
                "{what}: {:?} after {} fuel",
                r.map_err(|e| e.downcast_ref::<wasmtime::Trap>().copied()),
                budget - store.get_fuel().unwrap()
            );
        }
    }
}
