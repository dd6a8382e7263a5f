//! The `shmgate:shm@0.1.0` WIT interface for components, on the same
//! [`ShmCtx`] as `shmgate_v1`: one policy, one handle table, one set of
//! rules, two ABIs. The interface is `wit/shm.wit`, documented in
//! `docs/WIT.md`.
//!
//! A `segment` resource is a handle of the store's [`ShmCtx`] table (its
//! `rep`), so the handle quota, `auto_unlink` and everything else count a
//! component's segments exactly like a core module's. Dropping the
//! resource closes the handle. The component model keeps the guest's
//! resource handles itself: a forged or dropped handle traps in wasmtime's
//! canonical ABI before the host sees it, so `ebadf` for a handle cannot
//! happen here.
//!
//! There are no windows: a host import of a component receives lifted
//! values and never sees the caller's memory, so `read` and `write` copy
//! (once each way) instead. See `docs/WIT.md`.
//!
//! # Examples
//!
//! ```
//! use shmgate_host::wasm::{ShmCtx, ShmPolicy, component};
//! use wasmtime::{Config, Engine, Store};
//! use wasmtime::component::{Component, Linker};
//!
//! struct Host { shm: ShmCtx }
//!
//! let engine = Engine::new(Config::new().wasm_component_model(true))?;
//! let mut linker = Linker::<Host>::new(&engine);
//! component::add_to_linker(&mut linker, |h: &mut Host| &mut h.shm)?;
//! let policy = ShmPolicy::builder().namespace("tenant-a.").allow_create(true).build()?;
//! let mut store = Store::new(&engine, Host { shm: ShmCtx::new(policy) });
//! // A component that imports nothing instantiates; one importing
//! // `shmgate:shm/segments@0.1.0` gets it from the linker.
//! let guest = Component::new(&engine, "(component)")?;
//! linker.instantiate(&mut store, &guest)?;
//! # Ok::<(), wasmtime::Error>(())
//! ```

use shmgate_core::Errno;
use wasmtime::component::{HasSelf, Linker, Resource};

use super::ShmCtx;

/// What `wasmtime::component::bindgen!` generates for `wit/shm.wit`:
/// embedders whose own worlds import `shmgate:shm/segments` map it here
/// with bindgen's `with` option.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod bindings {
    wasmtime::component::bindgen!({
        // `wit/shm.wit` of this crate links to the workspace's `wit/shm.wit`
        // (`cargo package` stores the file itself).
        path: "wit",
        world: "shmgate:shm/imports",
        with: {
            "shmgate:shm/segments.segment": super::Segment,
        },
    });
}

/// The same interface generated again with `wait32` as an `async` host
/// function, for embedders that run components with `instantiate_async`
/// and `call_async`: what [`add_to_linker_async`] links. Its types are twins of [`bindings`]'
/// (bindgen's `with` maps interfaces and resources, not single types); the
/// conversions and host methods below are written once for both.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod async_bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "shmgate:shm/imports",
        with: {
            "shmgate:shm/segments.segment": super::Segment,
        },
        imports: {
            "shmgate:shm/segments.[method]segment.wait32": async,
        },
    });
}

pub use bindings::shmgate::shm::segments::{AtomicOp, CompareExchange, ErrorCode, OpenFlags};

/// The interface name components import.
pub const INTERFACE: &str = "shmgate:shm/segments@0.1.0";

/// The most bytes one `read` returns (16 MiB): the host allocates what it
/// returns, so a guest cannot make it allocate more than this per call.
pub const READ_MAX: u64 = 16 << 20;

/// The host side of a `segment` resource: its `rep` is the [`ShmCtx`]
/// handle.
#[derive(Debug)]
pub struct Segment;

/// Adds `shmgate:shm/segments@0.1.0` to a component `linker`; `get` finds
/// the store's [`ShmCtx`] (the same one `shmgate_v1` uses), as
/// wasmtime-wasi's `p2::add_to_linker_sync` does.
///
/// # Errors
///
/// If the linker already defines the interface (and shadowing is off).
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ShmCtx,
) -> wasmtime::Result<()> {
    bindings::shmgate::shm::segments::add_to_linker::<T, HasSelf<ShmCtx>>(linker, get)
}

/// Adds `shmgate:shm/segments@0.1.0` to a component `linker` whose guests
/// run with `instantiate_async`/`call_async`: `wait32` waits without
/// blocking the executor thread: it awaits the same future as
/// [`super::add_to_linker_async`]'s, which owns the word's mapping and the
/// store's interrupt, and whose drop (a dropped call) cancels the kernel
/// wait. Every other function is the same as [`add_to_linker`]'s.
///
/// # Errors
///
/// If the linker already defines the interface (and shadowing is off).
pub fn add_to_linker_async<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ShmCtx,
) -> wasmtime::Result<()> {
    async_bindings::shmgate::shm::segments::add_to_linker::<T, HasSelf<ShmCtx>>(linker, get)
}

/// A resource for a handle of `ctx`'s table, to pass to a component: what
/// [`ShmCtx::grant`] returned, say. The component owns it; dropping it
/// closes the handle.
pub fn segment_resource(handle: u32) -> Resource<Segment> {
    Resource::new_own(handle)
}

/// The table handle behind a resource, as the core ABI's `i32` (handles
/// are non-negative `i32`s; anything else is a handle no table holds).
fn handle(seg: &Resource<Segment>) -> i32 {
    i32::try_from(seg.rep()).unwrap_or(-1)
}

/// A `u64` offset or size of the interface as the core ABI's `i64`: past
/// `i64::MAX` it is what the core ABI calls negative, `EINVAL`.
fn signed(v: u64) -> Result<i64, Errno> {
    i64::try_from(v).map_err(|_| Errno::INVAL)
}

/// A count as a `u64` result.
fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The arguments of `wait32` in the core ABI's encoding: the handle, a
/// signed offset, the expected word as an `i32`, and a negative timeout
/// for none of its own.
fn wait_args(
    seg: &Resource<Segment>,
    offset: u64,
    expected: u32,
    timeout_ns: Option<u64>,
) -> Result<(i32, i64, i32, i64), Errno> {
    let timeout_ns = timeout_ns.map_or(-1, |ns| i64::try_from(ns).unwrap_or(i64::MAX));
    Ok((handle(seg), signed(offset)?, expected as i32, timeout_ns))
}

/// One list of the errno names the interface carries, for both directions.
macro_rules! error_codes {
    ($($code:ident = $errno:ident),* $(,)?) => {
        impl From<Errno> for ErrorCode {
            fn from(e: Errno) -> ErrorCode {
                match e {
                    $(Errno::$errno => ErrorCode::$code,)*
                    _ => ErrorCode::Unknown,
                }
            }
        }

        impl ErrorCode {
            /// The Linux errno; `None` for `unknown`.
            pub fn errno(self) -> Option<Errno> {
                match self {
                    $(ErrorCode::$code => Some(Errno::$errno),)*
                    ErrorCode::Unknown => None,
                }
            }
        }
    };
}

/// The conversions and the host traits for one generated copy of the
/// interface (`$segments`), written once: [`bindings`] and
/// [`async_bindings`] differ only in `wait32`, which the caller supplies.
macro_rules! host_impls {
    ($module:ident, $($segments:ident)::+, { $($wait32:tt)* }) => {
        mod $module {
            use super::*;
            use super::$($segments)::+::{AtomicOp, ErrorCode, Host, HostSegment, OpenFlags};

        impl From<OpenFlags> for u32 {
            fn from(f: OpenFlags) -> u32 {
                // The wire bits of `shmgate_v1` (docs/ABI.md).
                [
                    (OpenFlags::READ_WRITE, 1),
                    (OpenFlags::CREATE, 2),
                    (OpenFlags::EXCLUSIVE, 4),
                    (OpenFlags::TRUNCATE, 8),
                ]
                .into_iter()
                .filter(|(flag, _)| f.contains(*flag))
                .fold(0, |bits, (_, bit)| bits | bit)
            }
        }


        error_codes! {
            Eperm = PERM, Enoent = NOENT, Eintr = INTR, Eio = IO, Enxio = NXIO,
            Ebadf = BADF, Eagain = AGAIN, Enomem = NOMEM, Eacces = ACCES,
            Efault = FAULT, Ebusy = BUSY, Eexist = EXIST, Enodev = NODEV,
            Enotdir = NOTDIR, Eisdir = ISDIR, Einval = INVAL, Enfile = NFILE,
            Emfile = MFILE, Etxtbsy = TXTBSY, Efbig = FBIG, Enospc = NOSPC,
            Espipe = SPIPE, Erofs = ROFS, Epipe = PIPE, Erange = RANGE,
            Enametoolong = NAMETOOLONG, Enosys = NOSYS, Eloop = LOOP, Enomsg = NOMSG,
            Eoverflow = OVERFLOW, Emsgsize = MSGSIZE, Enotsup = NOTSUP,
            Etimedout = TIMEDOUT, Edquot = DQUOT,
        }


        /// Every method is a thin call of the [`ShmCtx`] method `shmgate_v1`
        /// calls: the rules live there, once.
        impl HostSegment for ShmCtx {
            fn open(
                &mut self,
                name: String,
                flags: OpenFlags,
                mode: u32,
            ) -> Result<Resource<Segment>, ErrorCode> {
                Ok(segment_resource(ShmCtx::open(
                    self,
                    name.as_bytes(),
                    flags.into(),
                    mode,
                )?))
            }

            fn size(&mut self, seg: Resource<Segment>) -> Result<u64, ErrorCode> {
                Ok(ShmCtx::size(self, handle(&seg))?)
            }

            fn set_size(&mut self, seg: Resource<Segment>, size: u64) -> Result<(), ErrorCode> {
                Ok(ShmCtx::set_size(self, handle(&seg), signed(size)?)?)
            }

            fn read(
                &mut self,
                seg: Resource<Segment>,
                offset: u64,
                len: u64,
            ) -> Result<Vec<u8>, ErrorCode> {
                // At most READ_MAX, so `min` fits a usize. Fresh zeroed pages of a
                // large allocation cost nothing until `pread` touches them.
                let len = usize::try_from(len.min(READ_MAX)).unwrap_or(0);
                let mut buf = vec![0; len];
                let n = ShmCtx::read(self, handle(&seg), signed(offset)?, &mut buf[..])?;
                buf.truncate(n);
                Ok(buf)
            }

            fn write(
                &mut self,
                seg: Resource<Segment>,
                offset: u64,
                data: Vec<u8>,
            ) -> Result<u64, ErrorCode> {
                Ok(count(ShmCtx::write(
                    self,
                    handle(&seg),
                    signed(offset)?,
                    &data[..],
                )?))
            }

                $($wait32)*

            fn notify(
                &mut self,
                seg: Resource<Segment>,
                offset: u64,
                count: u32,
            ) -> Result<u32, ErrorCode> {
                let woken = ShmCtx::notify(self, handle(&seg), signed(offset)?, count as i32)?;
                Ok(u32::try_from(woken).unwrap_or(u32::MAX))
            }

            fn atomic32(
                &mut self,
                seg: Resource<Segment>,
                offset: u64,
                op: AtomicOp,
            ) -> Result<u32, ErrorCode> {
                // The core ABI's op numbers (docs/ABI.md).
                let (op, operand, expected) = match op {
                    AtomicOp::Load => (0, 0, 0),
                    AtomicOp::Store(v) => (1, v, 0),
                    AtomicOp::FetchAdd(v) => (2, v, 0),
                    AtomicOp::Swap(v) => (3, v, 0),
                    AtomicOp::CompareExchange(c) => (4, c.replacement, c.expected),
                };
                Ok(ShmCtx::atomic32(
                    self,
                    handle(&seg),
                    signed(offset)?,
                    op,
                    operand as i32,
                    expected as i32,
                )?)
            }

            fn drop(&mut self, seg: Resource<Segment>) -> wasmtime::Result<()> {
                // The component model drops each resource once; a handle the
                // table no longer holds (closed by the embedder) is no error.
                let _ = ShmCtx::close(self, handle(&seg));
                Ok(())
            }
        }

        impl Host for ShmCtx {
            fn unlink(&mut self, name: String) -> Result<(), ErrorCode> {
                Ok(ShmCtx::unlink(self, name.as_bytes())?)
            }

            fn clock_monotonic(&mut self) -> u64 {
                crate::sys::monotonic_ns()
            }
        }

        }
    };
}

host_impls!(sync_impls, bindings::shmgate::shm::segments, {
    fn wait32(
        &mut self,
        seg: Resource<Segment>,
        offset: u64,
        expected: u32,
        timeout_ns: Option<u64>,
    ) -> Result<(), ErrorCode> {
        let (handle, offset, expected, timeout_ns) = wait_args(&seg, offset, expected, timeout_ns)?;
        Ok(ShmCtx::wait32(self, handle, offset, expected, timeout_ns)?)
    }
});

host_impls!(async_impls, async_bindings::shmgate::shm::segments, {
    async fn wait32(
        &mut self,
        seg: Resource<Segment>,
        offset: u64,
        expected: u32,
        timeout_ns: Option<u64>,
    ) -> Result<(), ErrorCode> {
        let (handle, offset, expected, timeout_ns) = wait_args(&seg, offset, expected, timeout_ns)?;
        // The same checks as the sync path, then a future that owns the
        // word's page and the store's interrupt: dropping it cancels.
        // (The call holds `&mut ShmCtx` meanwhile, as every wasmtime host
        // call holds its store; the thread is what it does not hold.)
        Ok(self
            .wait32_async(handle, offset, expected, timeout_ns)
            .await?)
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_the_core_wire_bits() {
        assert_eq!(u32::from(OpenFlags::empty()), 0);
        assert_eq!(u32::from(OpenFlags::READ_WRITE), 1);
        assert_eq!(u32::from(OpenFlags::all()), 15);
    }

    #[test]
    fn error_codes_round_trip() {
        for raw in 0..200 {
            let e = Errno::from_raw(raw);
            let code = ErrorCode::from(e);
            if e.is_known() && raw != 0 {
                assert_eq!(code.errno(), Some(e), "{}", e.name());
            } else {
                assert_eq!(code, ErrorCode::Unknown, "{raw}");
            }
        }
        assert_eq!(signed(u64::MAX), Err(Errno::INVAL));
    }
}
