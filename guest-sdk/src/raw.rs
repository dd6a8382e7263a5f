//! The raw `shmgate_v1` imports: the only module with `unsafe` code.
//!
//! On wasm32 these are the host's imports; on every other target they are
//! stubs that return `ENOSYS`, so docs, clippy and unit tests run natively.
//! Each wrapper takes Rust slices and returns the decoded result. This is
//! the crate's one module with `unsafe` code, each block with its SAFETY
//! argument; [`Window`] lives here because its accessors are raw memory
//! accesses.
#![allow(unsafe_code)]

use shmgate_core::Errno;

#[cfg(all(target_family = "wasm", target_pointer_width = "32"))]
mod imports {
    // The Rust names carry a `shmgate_` prefix so that they cannot collide
    // with libc's `open`, `read`, … when a wasip1 guest links wasi-libc;
    // `link_name` gives the import field name the ABI fixes.
    #[link(wasm_import_module = "shmgate_v1")]
    unsafe extern "C" {
        #[link_name = "open"]
        pub(super) fn shmgate_open(name_ptr: i32, name_len: i32, oflags: i32, mode: i32) -> i64;
        #[link_name = "unlink"]
        pub(super) fn shmgate_unlink(name_ptr: i32, name_len: i32) -> i64;
        #[link_name = "close"]
        pub(super) fn shmgate_close(handle: i32) -> i64;
        #[link_name = "size"]
        pub(super) fn shmgate_size(handle: i32) -> i64;
        #[link_name = "set_size"]
        pub(super) fn shmgate_set_size(handle: i32, size: i64) -> i64;
        #[link_name = "read"]
        pub(super) fn shmgate_read(handle: i32, offset: i64, buf_ptr: i32, buf_len: i32) -> i64;
        #[link_name = "write"]
        pub(super) fn shmgate_write(handle: i32, offset: i64, buf_ptr: i32, buf_len: i32) -> i64;
        #[link_name = "map"]
        pub(super) fn shmgate_map(handle: i32, offset: i64, len: i32, prot: i32) -> i64;
        #[link_name = "unmap"]
        pub(super) fn shmgate_unmap(addr: i32, len: i32) -> i64;
        #[link_name = "wait32"]
        pub(super) fn shmgate_wait32(
            handle: i32,
            offset: i64,
            expected: i32,
            timeout_ns: i64,
        ) -> i64;
        #[link_name = "notify"]
        pub(super) fn shmgate_notify(handle: i32, offset: i64, count: i32) -> i64;
        #[link_name = "atomic32"]
        pub(super) fn shmgate_atomic32(
            handle: i32,
            offset: i64,
            op: i32,
            operand: i32,
            expected: i32,
        ) -> i64;
        #[link_name = "clock_monotonic"]
        pub(super) fn shmgate_clock_monotonic() -> i64;
    }

    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        /// WASI's `clock_time_get`: writes the time in nanoseconds to
        /// `time`, returns a WASI errno (0: success).
        #[link_name = "clock_time_get"]
        pub(super) fn wasi_clock_time_get(id: u32, precision: u64, time: *mut u64) -> u16;
    }
}

#[cfg(not(all(target_family = "wasm", target_pointer_width = "32")))]
#[allow(clippy::missing_safety_doc)]
mod imports {
    //! Native stand-ins: every call fails with `ENOSYS`.
    const NOSYS: i64 = -38;
    pub(super) unsafe fn shmgate_open(_: i32, _: i32, _: i32, _: i32) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_unlink(_: i32, _: i32) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_close(_: i32) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_size(_: i32) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_set_size(_: i32, _: i64) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_read(_: i32, _: i64, _: i32, _: i32) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_write(_: i32, _: i64, _: i32, _: i32) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_map(_: i32, _: i64, _: i32, _: i32) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_unmap(_: i32, _: i32) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_wait32(_: i32, _: i64, _: i32, _: i64) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_notify(_: i32, _: i64, _: i32) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_atomic32(_: i32, _: i64, _: i32, _: i32, _: i32) -> i64 {
        NOSYS
    }
    pub(super) unsafe fn shmgate_clock_monotonic() -> i64 {
        NOSYS
    }
    /// WASI's ENOSYS.
    pub(super) unsafe fn wasi_clock_time_get(_: u32, _: u64, _: *mut u64) -> u16 {
        52
    }
}

/// WASI's clock id of the monotonic clock.
const WASI_CLOCK_MONOTONIC: u32 = 1;

/// WASI `clock_time_get` of the monotonic clock, in nanoseconds.
pub(crate) fn monotonic_ns() -> Result<u64, Errno> {
    let mut ns = 0u64;
    // SAFETY: the import writes one u64 through the pointer, which points
    // at a live local.
    let err = unsafe { imports::wasi_clock_time_get(WASI_CLOCK_MONOTONIC, 1, &raw mut ns) };
    match err {
        0 => Ok(ns),
        52 => Err(Errno::NOSYS),
        _ => Err(Errno::INVAL),
    }
}

/// `clock_monotonic`: the host's `CLOCK_MONOTONIC` in nanoseconds.
#[inline]
pub(crate) fn clock_monotonic() -> Result<u64, Errno> {
    // SAFETY: no arguments, and the host touches no guest memory.
    Errno::from_wire(unsafe { imports::shmgate_clock_monotonic() })
}

/// A guest address or length as the ABI's `i32`. On wasm32 a `usize` is 32
/// bits, so this is the identity on the bits (the host reads it back as
/// unsigned); on other targets only the stubs see it.
#[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
fn abi_usize(v: usize) -> i32 {
    v as u32 as i32
}

/// Decodes a result that is a count or a handle (at most `u32::MAX`).
fn decode(ret: i64) -> Result<u32, Errno> {
    let v = Errno::from_wire(ret)?;
    u32::try_from(v).map_err(|_| Errno::OVERFLOW)
}

/// `open`: the handle.
pub(crate) fn open(name: &[u8], oflags: u32, mode: u32) -> Result<u32, Errno> {
    let (ptr, len) = (abi_usize(name.as_ptr() as usize), abi_usize(name.len()));
    // SAFETY: `ptr..ptr + len` is `name`, live and readable for the call;
    // the host only reads it. Flags and mode are plain integers.
    decode(unsafe { imports::shmgate_open(ptr, len, oflags as i32, mode as i32) })
}

/// `unlink`.
pub(crate) fn unlink(name: &[u8]) -> Result<(), Errno> {
    let (ptr, len) = (abi_usize(name.as_ptr() as usize), abi_usize(name.len()));
    // SAFETY: as in `open`: a live slice the host only reads.
    decode(unsafe { imports::shmgate_unlink(ptr, len) }).map(drop)
}

/// `close`.
pub(crate) fn close(handle: u32) -> Result<(), Errno> {
    // SAFETY: integers only; a bad handle is an error, not UB.
    decode(unsafe { imports::shmgate_close(handle as i32) }).map(drop)
}

/// `size`.
pub(crate) fn size(handle: u32) -> Result<u64, Errno> {
    // SAFETY: integers only.
    Errno::from_wire(unsafe { imports::shmgate_size(handle as i32) })
}

/// `set_size`.
pub(crate) fn set_size(handle: u32, size: i64) -> Result<(), Errno> {
    // SAFETY: integers only.
    decode(unsafe { imports::shmgate_set_size(handle as i32, size) }).map(drop)
}

/// `read` into `buf`: the count.
pub(crate) fn read(handle: u32, offset: i64, buf: &mut [u8]) -> Result<usize, Errno> {
    let (ptr, len) = (abi_usize(buf.as_mut_ptr() as usize), abi_usize(buf.len()));
    // SAFETY: `ptr..ptr + len` is `buf`, which we borrow mutably for the
    // call, so the host writing up to `len` bytes there aliases nothing.
    decode(unsafe { imports::shmgate_read(handle as i32, offset, ptr, len) }).map(|n| n as usize)
}

/// `write` from `buf`: the count.
pub(crate) fn write(handle: u32, offset: i64, buf: &[u8]) -> Result<usize, Errno> {
    let (ptr, len) = (abi_usize(buf.as_ptr() as usize), abi_usize(buf.len()));
    // SAFETY: a live slice the host only reads.
    decode(unsafe { imports::shmgate_write(handle as i32, offset, ptr, len) }).map(|n| n as usize)
}

/// `wait32`.
pub(crate) fn wait32(
    handle: u32,
    offset: i64,
    expected: u32,
    timeout_ns: i64,
) -> Result<(), Errno> {
    // SAFETY: integers only.
    decode(unsafe { imports::shmgate_wait32(handle as i32, offset, expected as i32, timeout_ns) })
        .map(drop)
}

/// `notify`: how many waiters woke.
pub(crate) fn notify(handle: u32, offset: i64, count: u32) -> Result<u32, Errno> {
    // SAFETY: integers only.
    decode(unsafe { imports::shmgate_notify(handle as i32, offset, count as i32) })
}

/// Copies up to this many bytes byte by byte instead of with `memory.copy`.
const SMALL_COPY: usize = 128;

/// How a window may be accessed (`prot` on the wire: 1 read, 3 read and
/// write).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// Read only: a store into the window traps the guest.
    Read,
    /// Read and write.
    ReadWrite,
}

/// A window: a range of a segment mapped into this guest's memory by the
/// host (`Segment::map`). Another process may write it at any time, so it
/// is never handed out as a slice: use copies, atomics, or the raw pointer
/// in `unsafe` code of your own. Dropping it unmaps it (the host puts
/// zeroed private pages in its place).
///
/// Atomic views compile to wasm atomic instructions only when the guest is
/// built with `-C target-feature=+atomics,+bulk-memory`; without it, loads
/// and stores are still whole-word on x86-64 hosts but read-modify-write
/// operations are not atomic across processes. See `HAS_ATOMICS`.
#[derive(Debug)]
pub struct Window {
    addr: usize,
    len: usize,
    writable: bool,
    /// The segment's handle and the window's offset in it, for the
    /// host-side atomics used when the guest has no wasm atomics.
    handle: u32,
    segment_offset: i64,
}

/// `atomic32`'s operations.
#[cfg_attr(target_feature = "atomics", allow(dead_code))]
#[derive(Clone, Copy)]
enum HostAtomic {
    Store = 1,
    FetchAdd = 2,
    Swap = 3,
    CompareExchange = 4,
}

/// `atomic32`: the old value.
#[cfg_attr(target_feature = "atomics", allow(dead_code))]
fn host_atomic(
    handle: u32,
    offset: i64,
    op: HostAtomic,
    operand: u32,
    expected: u32,
) -> Result<u32, Errno> {
    // SAFETY: integers only; the host does the atomic operation on its own
    // mapping of the segment.
    decode(unsafe {
        imports::shmgate_atomic32(
            handle as i32,
            offset,
            op as i32,
            operand as i32,
            expected as i32,
        )
    })
}

impl Window {
    /// Maps `len` bytes of the handle's segment at `offset`.
    pub(crate) fn map(handle: u32, offset: i64, len: usize, prot: Prot) -> Result<Window, Errno> {
        let wire = match prot {
            Prot::Read => 1,
            Prot::ReadWrite => 3,
        };
        // SAFETY: integers only; the host grows our memory and maps over
        // the fresh pages, so no memory Rust already uses is replaced.
        let ret = unsafe { imports::shmgate_map(handle as i32, offset, abi_usize(len), wire) };
        let addr = decode(ret)? as usize;
        Ok(Window {
            addr,
            len,
            writable: prot == Prot::ReadWrite,
            handle,
            segment_offset: offset,
        })
    }

    /// The window's length in bytes.
    #[allow(clippy::len_without_is_empty)] // a window is never empty
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether stores are allowed.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The window's first byte, for `unsafe` code that brings its own
    /// synchronisation. Valid until the window drops.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    #[inline]
    fn check(&self, offset: usize, n: usize, align: usize) -> Result<usize, Errno> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len && offset.is_multiple_of(align) => Ok(self.addr + offset),
            _ => Err(Errno::INVAL),
        }
    }

    /// The `u32` at `offset` as an atomic shared with every process that
    /// maps the segment.
    ///
    /// # Errors
    ///
    /// `EINVAL` out of bounds or unaligned; `EACCES` on a read-only window
    /// (a store would trap; use [`Window::load_u32`]).
    #[inline]
    pub fn atomic_u32(&self, offset: usize) -> Result<&core::sync::atomic::AtomicU32, Errno> {
        if !self.writable {
            return Err(Errno::ACCES);
        }
        let addr = self.check(offset, 4, 4)?;
        // SAFETY: in bounds and aligned (checked), inside our live window
        // for as long as `&self`; sharing with other processes is what
        // atomics are for.
        Ok(unsafe { core::sync::atomic::AtomicU32::from_ptr(addr as *mut u32) })
    }

    /// The `u64` at `offset` as an atomic; as [`Window::atomic_u32`].
    ///
    /// # Errors
    ///
    /// As [`Window::atomic_u32`], with 8-byte alignment.
    pub fn atomic_u64(&self, offset: usize) -> Result<&core::sync::atomic::AtomicU64, Errno> {
        if !self.writable {
            return Err(Errno::ACCES);
        }
        let addr = self.check(offset, 8, 8)?;
        // SAFETY: as in `atomic_u32`.
        Ok(unsafe { core::sync::atomic::AtomicU64::from_ptr(addr as *mut u64) })
    }

    /// The segment offset of window byte `offset`, after the checks of a
    /// write to the `u32` there.
    #[cfg_attr(target_feature = "atomics", allow(dead_code))]
    fn host_word(&self, offset: usize) -> Result<i64, Errno> {
        if !self.writable {
            return Err(Errno::ACCES);
        }
        self.check(offset, 4, 4)?;
        let offset = i64::try_from(offset).map_err(|_| Errno::OVERFLOW)?;
        self.segment_offset
            .checked_add(offset)
            .ok_or(Errno::OVERFLOW)
    }

    /// Atomically adds `value` to the `u32` at `offset`; returns the old
    /// value. With wasm atomics this is one instruction; without, a host
    /// call (`atomic32`) that is just as atomic, across processes.
    ///
    /// # Errors
    ///
    /// As [`Window::atomic_u32`]; without wasm atomics also the host's
    /// (`EBADF` once the segment's handle is closed).
    pub fn fetch_add_u32(&self, offset: usize, value: u32) -> Result<u32, Errno> {
        #[cfg(target_feature = "atomics")]
        return Ok(self
            .atomic_u32(offset)?
            .fetch_add(value, core::sync::atomic::Ordering::SeqCst));
        #[cfg(not(target_feature = "atomics"))]
        return host_atomic(
            self.handle,
            self.host_word(offset)?,
            HostAtomic::FetchAdd,
            value,
            0,
        );
    }

    /// Atomically replaces the `u32` at `offset` with `value`; returns the
    /// old value. As [`Window::fetch_add_u32`] without wasm atomics.
    ///
    /// # Errors
    ///
    /// As [`Window::fetch_add_u32`].
    pub fn swap_u32(&self, offset: usize, value: u32) -> Result<u32, Errno> {
        #[cfg(target_feature = "atomics")]
        return Ok(self
            .atomic_u32(offset)?
            .swap(value, core::sync::atomic::Ordering::SeqCst));
        #[cfg(not(target_feature = "atomics"))]
        return host_atomic(
            self.handle,
            self.host_word(offset)?,
            HostAtomic::Swap,
            value,
            0,
        );
    }

    /// Atomically stores `value` at `offset` (sequentially consistent).
    ///
    /// # Errors
    ///
    /// As [`Window::fetch_add_u32`].
    pub fn store_u32(&self, offset: usize, value: u32) -> Result<(), Errno> {
        #[cfg(target_feature = "atomics")]
        return {
            self.atomic_u32(offset)?
                .store(value, core::sync::atomic::Ordering::SeqCst);
            Ok(())
        };
        #[cfg(not(target_feature = "atomics"))]
        return host_atomic(
            self.handle,
            self.host_word(offset)?,
            HostAtomic::Store,
            value,
            0,
        )
        .map(drop);
    }

    /// Atomically stores `new` at `offset` if it holds `current`:
    /// `Ok(Ok(current))` if it did, `Ok(Err(actual))` if not.
    ///
    /// # Errors
    ///
    /// As [`Window::fetch_add_u32`].
    pub fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
    ) -> Result<Result<u32, u32>, Errno> {
        #[cfg(target_feature = "atomics")]
        return Ok(self.atomic_u32(offset)?.compare_exchange(
            current,
            new,
            core::sync::atomic::Ordering::SeqCst,
            core::sync::atomic::Ordering::SeqCst,
        ));
        #[cfg(not(target_feature = "atomics"))]
        return host_atomic(
            self.handle,
            self.host_word(offset)?,
            HostAtomic::CompareExchange,
            new,
            current,
        )
        .map(|old| if old == current { Ok(old) } else { Err(old) });
    }

    /// An atomic load of the `u32` at `offset`, also on read-only windows.
    ///
    /// # Errors
    ///
    /// `EINVAL` out of bounds or unaligned.
    #[inline]
    pub fn load_u32(
        &self,
        offset: usize,
        order: core::sync::atomic::Ordering,
    ) -> Result<u32, Errno> {
        let addr = self.check(offset, 4, 4)?;
        // SAFETY: as in `atomic_u32`; only a load is done, which a
        // read-only window allows.
        Ok(unsafe { core::sync::atomic::AtomicU32::from_ptr(addr as *mut u32) }.load(order))
    }

    /// Copies `buf.len()` bytes at `offset` out of the window. A copy that
    /// races a writer sees a mix of old and new bytes.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the range is outside the window.
    #[inline]
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), Errno> {
        let src = self.check(offset, buf.len(), 1)?;
        if buf.len() <= SMALL_COPY {
            let mut chunks = buf.chunks_exact_mut(8);
            let mut at = src;
            for chunk in &mut chunks {
                // SAFETY: `at..at+8` is inside our live window (checked);
                // `[u8; 8]` needs no alignment. Volatile: a loop the compiler
                // cannot turn back into `memory.copy`, which wasmtime runs
                // out of line (a call that costs more than a few words).
                let word = unsafe { core::ptr::read_volatile(at as *const [u8; 8]) };
                chunk.copy_from_slice(&word);
                at += 8;
            }
            for b in chunks.into_remainder() {
                // SAFETY: as above, one byte.
                *b = unsafe { core::ptr::read_volatile(at as *const u8) };
                at += 1;
            }
            return Ok(());
        }
        // SAFETY: `src..src+len` is inside our live window (checked); `buf`
        // is a Rust buffer, which never lies inside a window.
        unsafe { core::ptr::copy_nonoverlapping(src as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `buf` into the window at `offset`.
    ///
    /// # Errors
    ///
    /// `EACCES` on a read-only window, `EINVAL` out of bounds.
    #[inline]
    pub fn write_at(&self, offset: usize, buf: &[u8]) -> Result<(), Errno> {
        if !self.writable {
            return Err(Errno::ACCES);
        }
        let dst = self.check(offset, buf.len(), 1)?;
        if buf.len() <= SMALL_COPY {
            let mut chunks = buf.chunks_exact(8);
            let mut at = dst;
            for chunk in &mut chunks {
                let mut word = [0; 8];
                word.copy_from_slice(chunk);
                // SAFETY: in bounds of our live, writable window (checked);
                // volatile for the reason given in `read_at`.
                unsafe { core::ptr::write_volatile(at as *mut [u8; 8], word) };
                at += 8;
            }
            for &b in chunks.remainder() {
                // SAFETY: as above, one byte.
                unsafe { core::ptr::write_volatile(at as *mut u8, b) };
                at += 1;
            }
            return Ok(());
        }
        // SAFETY: in bounds of our live, writable window (checked); `buf`
        // cannot overlap it.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), dst as *mut u8, buf.len()) };
        Ok(())
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: integers only. Every borrow of the window's bytes
        // (atomics) borrows `self`, so none outlives this point.
        let _ = unsafe { imports::shmgate_unmap(abi_usize(self.addr), abi_usize(self.len)) };
    }
}
