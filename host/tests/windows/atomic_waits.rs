//! Issue 17, item 2: every wait ends. wasmtime parks a thread that runs
//! `memory.atomic.wait32`/`wait64` on a shared memory in its own parking
//! lot, where neither epoch interruption nor `max_wait` nor shmgate's
//! interrupt reach it; such guests are refused before they run, with an
//! error that names the function.

use shmgate_core::Errno;
use shmgate_host::wasm::{ShareError, check_waits, share_memory};
use wasmtime::{Instance, Module, Store};

use crate::common::{engine, init};

/// A single-threaded guest with a plain memory that waits forever on it:
/// harmless as it is (the wait traps), a hang once its memory is shared.
const SLEEPY: &str = r#"(module
  (memory (export "memory") 1)
  (func $helper (result i32) (i32.const 0))
  (func $forever (export "forever") (result i32)
    (memory.atomic.wait32 (call $helper) (i32.const 0) (i64.const -1))))"#;

#[test]
fn share_memory_refuses_a_wait_naming_the_function() {
    init();
    let wasm = wat::parse_str(SLEEPY).unwrap();
    // Plain, the wait traps at once.
    let module = Module::new(engine(), &wasm).unwrap();
    let mut store = Store::new(engine(), ());
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    let forever = instance
        .get_typed_func::<(), i32>(&mut store, "forever")
        .unwrap();
    assert!(forever.call(&mut store, ()).is_err());
    // Shared, it would park this thread for good: refused.
    let err = share_memory(&wasm, 1 << 32).unwrap_err();
    assert_eq!(
        err,
        ShareError::BlockingWait {
            func: 1,
            name: Some("forever".into()),
            instruction: "memory.atomic.wait32",
        }
    );
    let text = err.to_string();
    assert!(text.contains("function 1 (forever)"), "{text}");
    assert!(text.contains("memory.atomic.wait32"), "{text}");
    assert_eq!(Errno::from(err), Errno::NOTSUP);
}

#[test]
fn modules_built_for_threads_that_wait_are_refused() {
    // Its own shared memory, a 64-bit wait, the function named only in the
    // name section.
    let wasm = wat::parse_str(
        r#"(module
          (import "env" "memory" (memory 1 10 shared))
          (func $spin_then_wait (param i32) (result i32)
            (memory.atomic.wait64 (local.get 0) (i64.const 0) (i64.const 1000000000000))))"#,
    )
    .unwrap();
    let expected = ShareError::BlockingWait {
        func: 0,
        name: Some("spin_then_wait".into()),
        instruction: "memory.atomic.wait64",
    };
    assert_eq!(check_waits(&wasm), Err(expected.clone()));
    assert_eq!(share_memory(&wasm, 1 << 32).unwrap_err(), expected);
    // Declared shared, exported, waiting on it: the same.
    let declared = wat::parse_str(
        r#"(module (memory 1 10 shared)
          (func (export "wait") (result i32)
            (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1))))"#,
    )
    .unwrap();
    assert!(matches!(
        share_memory(&declared, 1 << 32),
        Err(ShareError::BlockingWait { name: Some(n), .. }) if n == "wait"
    ));
    // notify never blocks: allowed.
    let notify = wat::parse_str(
        r#"(module (memory 1 10 shared)
          (func (export "wake") (result i32)
            (memory.atomic.notify (i32.const 0) (i32.const 1))))"#,
    )
    .unwrap();
    assert!(check_waits(&notify).is_ok());
    assert!(share_memory(&notify, 1 << 32).is_ok());
}

#[test]
fn components_with_a_waiting_module_are_refused() {
    let component = wat::parse_str(
        r#"(component
          (core module $m
            (memory 1 1 shared)
            (func (export "nap") (result i32)
              (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1))))
          (core instance (instantiate $m)))"#,
    )
    .unwrap();
    assert!(matches!(
        check_waits(&component),
        Err(ShareError::BlockingWait { name: Some(n), .. }) if n == "nap"
    ));
    // share_memory takes core modules only.
    assert_eq!(
        share_memory(&component, 1 << 32).unwrap_err(),
        ShareError::NotAModule
    );
}
