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
//! map(handle: i32, offset: i64, len: i32, prot: i32) -> i64           ; guest address of the window
//! unmap(addr: i32, len: i32) -> i64
//! wait32(handle: i32, offset: i64, expected: i32, timeout_ns: i64) -> i64 ; 0 woken
//! notify(handle: i32, offset: i64, count: i32) -> i64                 ; number woken
//! atomic32(handle: i32, offset: i64, op: i32, operand: i32, expected: i32) -> i64 ; old value
//! clock_monotonic() -> i64                                            ; CLOCK_MONOTONIC in ns
//! ```
//!
//! Windows (`map`) need an engine set up with [`configure`] and a guest
//! whose memory is shared (declared so, or made so by [`share_memory`]);
//! see `docs/ABI.md` for their safety model.
//!
//! Everything a guest passes is untrusted: pointers and lengths are
//! unsigned 32-bit and checked against its memory (`EFAULT`), handles come
//! from a per-store table with generations (`EBADF`), names are resolved
//! inside the policy's namespace, and every flag is checked against the
//! rights. A guest mistake is an errno, never a trap; the only trap is a
//! guest that exports no `memory`.
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

pub mod component;
mod ctx;
mod policy;
mod share;

use std::mem::MaybeUninit;
use std::sync::Arc;

use shmgate_core::Errno;
use wasmtime::{Caller, Config, Linker};

pub use crate::sys::window::ShmMemoryCreator;
pub use crate::wait::{AsyncWaitEngine, async_wait_engine, pending_async_waits};
pub use ctx::{ShmCtx, WaitInterrupt};
pub use policy::{DEFAULT_MAX_WINDOWS, HANDLES_LIMIT, ShmPolicy, ShmPolicyBuilder};
pub use share::{ShareError, check_waits, share_memory};

use crate::sys::window::guest::{GuestMemory, NAME_COPY_MAX, range_and_data};

/// The import module name of the ABI.
pub const MODULE: &str = "shmgate_v1";

/// Sets up `config` for windows (`map`): installs a [`ShmMemoryCreator`]
/// (and with it the signal handler that keeps shrunk and read-only windows
/// survivable; call this before creating any `Engine`), turns off
/// copy-on-write memory images (a custom creator needs that, wasmtime
/// issue 10740) and moving memories, and enables the threads proposal and
/// shared memories: windows live only in a guest's *shared* memory, so
/// that every host function (WASI's too) copies through raw pointers
/// instead of borrowing bytes another process can change. A guest gets a
/// shared memory by declaring one, or through [`share_memory`].
///
/// Without it every call except `map`/`unmap` works, and `map` is
/// `ENOTSUP`. The pooling allocator never uses a custom creator, so
/// engines configured for pooling get `ENOTSUP` too.
///
/// The creator makes every memory of the engine; 64-bit and
/// custom-page-size memories run as usual (enable those proposals as for
/// any engine), and `map` on them is `ENOTSUP`. For a ceiling on every
/// memory of the engine, install
/// [`ShmMemoryCreator::with_max_memory`] after this call.
///
/// Shared memories are on for the whole engine: wasmtime grows them
/// without asking the store's `ResourceLimiter`, and parks a thread that
/// runs `memory.atomic.wait32`/`wait64` on one beyond any epoch deadline
/// or `max_wait`. Prepare guests with [`share_memory`] (it takes the
/// memory limit, and refuses such waits), or check them with
/// [`check_waits`]; see "Memory limits" and "Waits that end" in
/// `docs/ABI.md`.
pub fn configure(config: &mut Config) -> &mut Config {
    config
        .with_host_memory(Arc::new(ShmMemoryCreator::new()))
        .memory_init_cow(false)
        .memory_may_move(false)
        .wasm_threads(true)
        .shared_memory(true)
}

/// What [`window_at`] reports of a registered range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowInfo {
    /// The host address where the range starts.
    pub start: usize,
    /// Its length in bytes.
    pub len: usize,
    /// Its state.
    pub state: WindowState,
}

/// The state of a registered range, as [`window_at`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WindowState {
    /// Mapped shared, readable and writable.
    ReadWrite,
    /// Mapped shared, read-only.
    ReadOnly,
    /// `PROT_NONE` after the segment shrank under it (or a failed unmap):
    /// guest accesses trap.
    Revoked,
    /// Replaced by private zeroed pages for host code's access to a
    /// read-only or revoked window, while that access runs.
    Detached,
    /// Host code (a bulk memory instruction's helper, a WASI function)
    /// touched the window while it was read-only or revoked; since that
    /// access returned the window is `PROT_NONE` for good: guest accesses
    /// trap (x86_64; see `docs/ABI.md`).
    Poisoned,
}

/// The window (or guarded host mapping of segment pages) covering host
/// address `addr`, as the signal handler would find it: a lock-free O(1)
/// lookup in the process-wide registry. For diagnostics and tests.
pub fn window_at(addr: *const u8) -> Option<WindowInfo> {
    use crate::sys::window::record::State;
    let snap = crate::sys::window::registry::lookup(addr as usize)?;
    let state = match snap.state {
        State::ReadWrite => WindowState::ReadWrite,
        State::ReadOnly => WindowState::ReadOnly,
        State::Revoked => WindowState::Revoked,
        State::Poisoned => WindowState::Poisoned,
        _ => WindowState::Detached,
    };
    Some(WindowInfo {
        start: snap.start,
        len: snap.end - snap.start,
        state,
    })
}

/// Encodes a result for the guest: the value, or `-errno`.
fn wire<V: TryInto<i64>>(result: Result<V, Errno>) -> i64 {
    match result {
        Ok(v) => v.try_into().unwrap_or(Errno::OVERFLOW.to_wire()),
        Err(e) => e.to_wire(),
    }
}

/// The `map` host function: checks, grows the memory by the window's
/// length, and maps the segment over the fresh pages.
fn map<T: 'static>(
    caller: &mut Caller<'_, T>,
    ctx: impl Fn(&mut T) -> &mut ShmCtx,
    (handle, offset, len, prot): (i32, i64, i32, i32),
) -> wasmtime::Result<Result<u32, Errno>> {
    let mem = GuestMemory::of(caller)?;
    let plan = match ctx(caller.data_mut()).plan_map(handle, offset, len, prot) {
        Ok(plan) => plan,
        Err(e) => return Ok(Err(e)),
    };
    // Windows only in shared memories made by our creator (see
    // `configure`).
    let Some(windows) = mem.windows(caller) else {
        return Ok(Err(Errno::NOTSUP));
    };
    // Map over the range an unmapped window left, or over pages grown
    // for this window: mapping over pages the guest already uses would
    // silently destroy them. Growth is bounded by the memory's maximum
    // (see `share_memory`) and its creator's ceiling: `ENOMEM` past them.
    let len = plan.len as usize;
    let addr = match windows.take_free(len) {
        Some(addr) => addr,
        None => {
            let pages = u64::from(plan.len) / ctx::WINDOW_ALIGN;
            let Ok(old_pages) = mem.grow(caller, pages) else {
                return Ok(Err(Errno::NOMEM));
            };
            let Some(addr) = old_pages
                .checked_mul(ctx::WINDOW_ALIGN)
                .and_then(|a| usize::try_from(a).ok())
            else {
                return Ok(Err(Errno::NOMEM));
            };
            addr
        }
    };
    let Ok(guest_addr) = u32::try_from(addr) else {
        windows.give_back(addr, len);
        return Ok(Err(Errno::NOMEM));
    };
    let mapped = ctx(caller.data_mut()).map_at(handle, plan, &windows, guest_addr);
    if mapped.is_err() && !windows.has_window_at(addr) {
        // Private pages again (see `map_window`): for the next `map`.
        windows.give_back(addr, len);
    }
    Ok(mapped.map(|()| guest_addr))
}

/// Copies a guest name out of its memory and passes it to `f`: names are
/// copied (at most [`NAME_COPY_MAX`] bytes, longer is `ENAMETOOLONG`), never
/// borrowed, so a racing writer cannot change them between check and use.
fn with_name<T: 'static, R>(
    caller: &mut Caller<'_, T>,
    (ptr, len): (i32, i32),
    f: impl FnOnce(&mut T, &[u8]) -> Result<R, Errno>,
) -> wasmtime::Result<Result<R, Errno>> {
    let mem = GuestMemory::of(caller)?;
    let mut buf = [MaybeUninit::uninit(); NAME_COPY_MAX];
    Ok(range_and_data(caller, &mem, ptr as u32, len as u32)
        .and_then(|(range, data)| f(data, range.copy_name(&mut buf)?)))
}

/// Adds the `shmgate_v1` functions to `linker`; `get` finds the store's
/// [`ShmCtx`] in its data, as wasmtime-wasi's `add_to_linker` does.
///
/// `wait32` blocks the calling thread (at most the policy's `max_wait`).
/// For guests run on an async runtime (`call_async`), use
/// [`add_to_linker_async`] instead.
///
/// # Errors
///
/// If the linker already defines one of the names (and shadowing is off).
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: impl Fn(&mut T) -> &mut ShmCtx + Copy + Send + Sync + 'static,
) -> wasmtime::Result<()> {
    add_all_but_wait(linker, get)?;
    linker.func_wrap(
        MODULE,
        "wait32",
        move |mut caller: Caller<'_, T>,
              handle: i32,
              offset: i64,
              expected: i32,
              timeout_ns: i64| {
            wire(
                get(caller.data_mut())
                    .wait32(handle, offset, expected, timeout_ns)
                    .map(|()| 0),
            )
        },
    )?;
    Ok(())
}

/// Adds the `shmgate_v1` functions to `linker` for async embedders
/// (guests run with `instantiate_async`/`call_async` on tokio or any other
/// executor; wasmtime 48 needs no `Config::async_support` for that): as
/// [`add_to_linker`], but `wait32` does not block the executor thread. Its future waits in the kernel, in one
/// `IORING_OP_FUTEX_WAITV` per wait on an io_uring driven by one reactor
/// thread (Linux 6.7+), or on a small thread of its own where io_uring is
/// unavailable or disabled ([`async_wait_engine`] tells which). The guest
/// sees the same results as with [`add_to_linker`]: the same checks,
/// `max_wait`, and [`WaitInterrupt`] (`EINTR`). Dropping the call's future
/// (a cancelled task) cancels the kernel wait.
///
/// The other functions do not block and are the same as in
/// [`add_to_linker`].
///
/// # Examples
///
/// ```no_run
/// use shmgate_host::wasm::{ShmCtx, ShmPolicy, add_to_linker_async};
/// use wasmtime::{Engine, Linker, Module, Store};
///
/// struct Host { shm: ShmCtx }
///
/// async fn serve() -> wasmtime::Result<()> {
///     let engine = Engine::default();
///     let mut linker = Linker::<Host>::new(&engine);
///     add_to_linker_async(&mut linker, |h: &mut Host| &mut h.shm)?;
///     let policy = ShmPolicy::builder().namespace("tenant-a.").build()?;
///     let mut store = Store::new(&engine, Host { shm: ShmCtx::new(policy) });
///     let stop = store.data().shm.interrupt_handle(); // ends its waits (EINTR)
///     let module = Module::from_file(&engine, "guest.wasm")?;
///     let instance = linker.instantiate_async(&mut store, &module).await?;
///     let main = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
///     tokio::spawn(async move { main.call_async(&mut store, ()).await });
///     // ... on shutdown:
///     stop.interrupt();
///     Ok(())
/// }
/// ```
///
/// # Errors
///
/// If the linker already defines one of the names (and shadowing is off).
pub fn add_to_linker_async<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: impl Fn(&mut T) -> &mut ShmCtx + Copy + Send + Sync + 'static,
) -> wasmtime::Result<()> {
    add_all_but_wait(linker, get)?;
    linker.func_wrap_async(
        MODULE,
        "wait32",
        move |mut caller: Caller<'_, T>,
              (handle, offset, expected, timeout_ns): (i32, i64, i32, i64)| {
            // The future owns what it needs: the store is not borrowed
            // across the await.
            let wait = get(caller.data_mut()).wait32_async(handle, offset, expected, timeout_ns);
            Box::new(async move { Ok(wire(wait.await.map(|()| 0))) })
        },
    )?;
    Ok(())
}

/// Every `shmgate_v1` function but `wait32`, which differs between the
/// sync and async linkers.
fn add_all_but_wait<T: 'static>(
    linker: &mut Linker<T>,
    get: impl Fn(&mut T) -> &mut ShmCtx + Copy + Send + Sync + 'static,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "open",
        move |mut caller: Caller<'_, T>, name_ptr: i32, name_len: i32, oflags: i32, mode: i32| {
            let r = with_name(&mut caller, (name_ptr, name_len), |data, name| {
                get(data).open(name, oflags as u32, mode as u32)
            })?;
            Ok(wire(r))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "unlink",
        move |mut caller: Caller<'_, T>, name_ptr: i32, name_len: i32| {
            let r = with_name(&mut caller, (name_ptr, name_len), |data, name| {
                get(data).unlink(name)
            })?;
            Ok(wire(r.map(|()| 0)))
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
            let mem = GuestMemory::of(&mut caller)?;
            let r = range_and_data(&mut caller, &mem, ptr as u32, len as u32)
                .and_then(|(buf, data)| get(data).read(handle, offset, buf));
            Ok(wire(r))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "write",
        move |mut caller: Caller<'_, T>, handle: i32, offset: i64, ptr: i32, len: i32| {
            let mem = GuestMemory::of(&mut caller)?;
            let r = range_and_data(&mut caller, &mem, ptr as u32, len as u32)
                .and_then(|(buf, data)| get(data).write(handle, offset, buf));
            Ok(wire(r))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "map",
        move |mut caller: Caller<'_, T>, handle: i32, offset: i64, len: i32, prot: i32| {
            Ok(wire(map(&mut caller, get, (handle, offset, len, prot))?))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "unmap",
        move |mut caller: Caller<'_, T>, addr: i32, len: i32| {
            let mem = GuestMemory::of(&mut caller)?;
            let windows = mem.windows(&caller);
            Ok(wire(
                get(caller.data_mut())
                    .unmap(windows.as_ref(), addr, len)
                    .map(|()| 0),
            ))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "atomic32",
        move |mut caller: Caller<'_, T>,
              handle: i32,
              offset: i64,
              op: i32,
              operand: i32,
              expected: i32| {
            wire(get(caller.data_mut()).atomic32(handle, offset, op, operand, expected))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "notify",
        move |mut caller: Caller<'_, T>, handle: i32, offset: i64, count: i32| {
            wire(get(caller.data_mut()).notify(handle, offset, count))
        },
    )?;
    // No caller, no memory, no context: the cheapest host call wasmtime
    // makes (see `clock_monotonic`).
    linker.func_wrap(MODULE, "clock_monotonic", clock_monotonic)?;
    Ok(())
}

/// `clock_monotonic`: `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds, the
/// clock every process on the machine reads (`shmgate_host::ring::monotonic_ns`
/// natively), so a guest's timestamp in a ring message times its trip to a
/// native end or another guest. It needs no right, reads and writes no
/// guest memory and cannot fail (the vDSO's `clock_gettime`, no system
/// call): a cheaper clock than WASI's `clock_time_get`, which writes its
/// result through guest memory.
///
/// # References
///
/// - [clock_gettime(2)](https://man7.org/linux/man-pages/man2/clock_gettime.2.html)
#[doc(alias = "clock_gettime")]
pub fn clock_monotonic() -> i64 {
    // CLOCK_MONOTONIC is far below 2^63 ns (292 years of uptime).
    i64::try_from(crate::sys::monotonic_ns()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_encoding() {
        assert_eq!(wire::<u64>(Ok(5)), 5);
        assert_eq!(wire::<u64>(Ok(u64::MAX)), -75);
        assert_eq!(wire::<u64>(Err(Errno::BADF)), -9);
    }
}
