//! The `shmgate_v1` host functions for wasmtime, behind a capability policy.
//!
//! A guest (a core wasm module) imports these from module `shmgate_v1`;
//! every function returns `i64`, a result `>= 0` or `-errno` (Linux
//! numbering, see [`Errno`]). The ABI is specified in `docs/ABI.md`.
//!
//! ```text
//! open(name_ptr: i32, name_len: i32, oflags: i32, mode: i32) -> i64   ; handle
//! unlink(name_ptr: i32, name_len: i32) -> i64
//! close(handle: i32) -> i64
//! size(handle: i32) -> i64
//! set_size(handle: i32, size: i64) -> i64
//! read(handle: i32, offset: i64, buf_ptr: i32, buf_len: i32) -> i64  ; bytes read
//! write(handle: i32, offset: i64, buf_ptr: i32, buf_len: i32) -> i64 ; bytes written
//! ```
//!
//! Everything a guest passes is untrusted: pointers and lengths are
//! unsigned 32-bit and checked against its memory (`EFAULT`), handles come
//! from a per-store table with generations (`EBADF`), names are resolved
//! inside the policy's namespace, and every flag is checked against the
//! rights. A guest mistake is an errno, never a trap; the only trap is a
//! guest that exports no (non-shared) `memory`.
//!
//! # Examples
//!
//! ```
//! use shmgate_host::wasm::{ShmCtx, ShmPolicy, add_to_linker};
//! use wasmtime::{Engine, Linker, Module, Store};
//!
//! struct Host { shm: ShmCtx }
//!
//! let engine = Engine::default();
//! let mut linker = Linker::<Host>::new(&engine);
//! add_to_linker(&mut linker, |h: &mut Host| &mut h.shm)?;
//! let policy = ShmPolicy::builder().namespace("tenant-a.").allow_create(true).auto_unlink(true).build()?;
//! let mut store = Store::new(&engine, Host { shm: ShmCtx::new(policy) });
//! let module = Module::new(&engine, r#"(module
//!     (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
//!     (memory (export "memory") 1)
//!     (data (i32.const 0) "demo")
//!     (func (export "run") (result i64) (call $open (i32.const 0) (i32.const 4) (i32.const 3) (i32.const 0x180))))"#)?;
//! let run = linker.instantiate(&mut store, &module)?.get_typed_func::<(), i64>(&mut store, "run")?;
//! # let _ = shmgate_host::unlink("tenant-a.demo");
//! assert!(run.call(&mut store, ())? >= 0); // a handle to /dev/shm/tenant-a.demo
//! drop(store); // closes the handle and, with auto_unlink, removes the segment
//! # Ok::<(), wasmtime::Error>(())
//! ```

mod ctx;
mod policy;

use shmgate_core::Errno;
use wasmtime::{Caller, Extern, Linker};

pub use ctx::ShmCtx;
pub use policy::{HANDLES_LIMIT, ShmPolicy, ShmPolicyBuilder};

/// The import module name of the ABI.
pub const MODULE: &str = "shmgate_v1";

/// The guest's memory and the store's data, borrowed together.
fn memory_and_data<'a, T: 'static>(
    caller: &'a mut Caller<'_, T>,
) -> wasmtime::Result<(&'a mut [u8], &'a mut T)> {
    match caller.get_export("memory") {
        Some(Extern::Memory(mem)) => Ok(mem.data_and_store_mut(caller)),
        _ => Err(wasmtime::Error::msg(
            "shmgate_v1: the guest must export a non-shared memory named \"memory\"",
        )),
    }
}

/// The guest bytes `ptr..ptr + len`, both read as unsigned 32-bit, or
/// `EFAULT` if any of it is outside the memory.
fn guest_bytes(mem: &[u8], ptr: i32, len: i32) -> Result<&[u8], Errno> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.get(start..)
        .and_then(|rest| rest.get(..len))
        .ok_or(Errno::FAULT)
}

/// As [`guest_bytes`], writable.
fn guest_bytes_mut(mem: &mut [u8], ptr: i32, len: i32) -> Result<&mut [u8], Errno> {
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.get_mut(start..)
        .and_then(|rest| rest.get_mut(..len))
        .ok_or(Errno::FAULT)
}

/// Encodes a result for the guest: the value, or `-errno`.
fn wire<V: TryInto<i64>>(result: Result<V, Errno>) -> i64 {
    match result {
        Ok(v) => v.try_into().unwrap_or(Errno::OVERFLOW.to_wire()),
        Err(e) => e.to_wire(),
    }
}

/// Adds the `shmgate_v1` functions to `linker`; `get` finds the store's
/// [`ShmCtx`] in its data, as wasmtime-wasi's `add_to_linker` does.
///
/// # Errors
///
/// If the linker already defines one of the names (and shadowing is off).
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: impl Fn(&mut T) -> &mut ShmCtx + Copy + Send + Sync + 'static,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "open",
        move |mut caller: Caller<'_, T>, name_ptr: i32, name_len: i32, oflags: i32, mode: i32| {
            let (mem, data) = memory_and_data(&mut caller)?;
            let name = guest_bytes(mem, name_ptr, name_len);
            Ok(wire(name.and_then(|name| {
                get(data).open(name, oflags as u32, mode as u32)
            })))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "unlink",
        move |mut caller: Caller<'_, T>, name_ptr: i32, name_len: i32| {
            let (mem, data) = memory_and_data(&mut caller)?;
            let name = guest_bytes(mem, name_ptr, name_len);
            Ok(wire(
                name.and_then(|name| get(data).unlink(name)).map(|()| 0),
            ))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "close",
        move |mut caller: Caller<'_, T>, handle: i32| {
            wire(get(caller.data_mut()).close(handle).map(|()| 0))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "size",
        move |mut caller: Caller<'_, T>, handle: i32| wire(get(caller.data_mut()).size(handle)),
    )?;
    linker.func_wrap(
        MODULE,
        "set_size",
        move |mut caller: Caller<'_, T>, handle: i32, size: i64| {
            wire(get(caller.data_mut()).set_size(handle, size).map(|()| 0))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "read",
        move |mut caller: Caller<'_, T>, handle: i32, offset: i64, ptr: i32, len: i32| {
            let (mem, data) = memory_and_data(&mut caller)?;
            let buf = guest_bytes_mut(mem, ptr, len);
            Ok(wire(
                buf.and_then(|buf| get(data).read(handle, offset, buf)),
            ))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "write",
        move |mut caller: Caller<'_, T>, handle: i32, offset: i64, ptr: i32, len: i32| {
            let (mem, data) = memory_and_data(&mut caller)?;
            let buf = guest_bytes(mem, ptr, len);
            Ok(wire(
                buf.and_then(|buf| get(data).write(handle, offset, buf)),
            ))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_bytes_bounds() {
        let mem = [0u8; 16];
        assert_eq!(guest_bytes(&mem, 0, 16).map(<[u8]>::len), Ok(16));
        assert_eq!(guest_bytes(&mem, 16, 0).map(<[u8]>::len), Ok(0));
        assert_eq!(guest_bytes(&mem, 17, 0), Err(Errno::FAULT));
        assert_eq!(guest_bytes(&mem, 8, 9), Err(Errno::FAULT));
        assert_eq!(guest_bytes(&mem, -1, 1), Err(Errno::FAULT));
        assert_eq!(guest_bytes(&mem, 0, -1), Err(Errno::FAULT));
        assert_eq!(guest_bytes(&mem, 1, i32::MIN), Err(Errno::FAULT));
        assert_eq!(guest_bytes(&mem, i32::MAX, i32::MAX), Err(Errno::FAULT));
    }

    #[test]
    fn wire_encoding() {
        assert_eq!(wire::<u64>(Ok(5)), 5);
        assert_eq!(wire::<u64>(Ok(u64::MAX)), -75);
        assert_eq!(wire::<u64>(Err(Errno::BADF)), -9);
    }
}
