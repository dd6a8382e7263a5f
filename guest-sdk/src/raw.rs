//! The raw `shmgate_v1` imports: the only module with `unsafe` code.
//!
//! On wasm32 these are the host's imports; on every other target they are
//! stubs that return `ENOSYS`, so docs, clippy and unit tests run natively.
//! Each wrapper takes Rust slices and returns the decoded result.

use shmgate_core::Errno;

#[cfg(all(target_family = "wasm", target_pointer_width = "32"))]
#[allow(unsafe_code)]
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
    }
}

#[cfg(not(all(target_family = "wasm", target_pointer_width = "32")))]
#[allow(clippy::missing_safety_doc, unsafe_code)]
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
#[allow(unsafe_code)]
pub(crate) fn open(name: &[u8], oflags: u32, mode: u32) -> Result<u32, Errno> {
    let (ptr, len) = (abi_usize(name.as_ptr() as usize), abi_usize(name.len()));
    // SAFETY: `ptr..ptr + len` is `name`, live and readable for the call;
    // the host only reads it. Flags and mode are plain integers.
    decode(unsafe { imports::shmgate_open(ptr, len, oflags as i32, mode as i32) })
}

/// `unlink`.
#[allow(unsafe_code)]
pub(crate) fn unlink(name: &[u8]) -> Result<(), Errno> {
    let (ptr, len) = (abi_usize(name.as_ptr() as usize), abi_usize(name.len()));
    // SAFETY: as in `open`: a live slice the host only reads.
    decode(unsafe { imports::shmgate_unlink(ptr, len) }).map(drop)
}

/// `close`.
#[allow(unsafe_code)]
pub(crate) fn close(handle: u32) -> Result<(), Errno> {
    // SAFETY: integers only; a bad handle is an error, not UB.
    decode(unsafe { imports::shmgate_close(handle as i32) }).map(drop)
}

/// `size`.
#[allow(unsafe_code)]
pub(crate) fn size(handle: u32) -> Result<u64, Errno> {
    // SAFETY: integers only.
    Errno::from_wire(unsafe { imports::shmgate_size(handle as i32) })
}

/// `set_size`.
#[allow(unsafe_code)]
pub(crate) fn set_size(handle: u32, size: i64) -> Result<(), Errno> {
    // SAFETY: integers only.
    decode(unsafe { imports::shmgate_set_size(handle as i32, size) }).map(drop)
}

/// `read` into `buf`: the count.
#[allow(unsafe_code)]
pub(crate) fn read(handle: u32, offset: i64, buf: &mut [u8]) -> Result<usize, Errno> {
    let (ptr, len) = (abi_usize(buf.as_mut_ptr() as usize), abi_usize(buf.len()));
    // SAFETY: `ptr..ptr + len` is `buf`, which we borrow mutably for the
    // call, so the host writing up to `len` bytes there aliases nothing.
    decode(unsafe { imports::shmgate_read(handle as i32, offset, ptr, len) }).map(|n| n as usize)
}

/// `write` from `buf`: the count.
#[allow(unsafe_code)]
pub(crate) fn write(handle: u32, offset: i64, buf: &[u8]) -> Result<usize, Errno> {
    let (ptr, len) = (abi_usize(buf.as_ptr() as usize), abi_usize(buf.len()));
    // SAFETY: a live slice the host only reads.
    decode(unsafe { imports::shmgate_write(handle as i32, offset, ptr, len) }).map(|n| n as usize)
}
