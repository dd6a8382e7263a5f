//! The safe guest side of shmgate: named POSIX shared memory segments for
//! WebAssembly guests, through the host's `shmgate_v1` imports.
//!
//! Names, flags and modes are checked with [`shmgate_core`] before any host
//! call, so a bad argument fails fast with the same errno the host would
//! give. The host still checks everything again: it trusts no guest. Names
//! are relative to the namespace the host granted (`jobs`, not `/jobs`).
//!
//! Builds for `wasm32-wasip1` and `wasm32-unknown-unknown`. On other
//! targets the imports are stubs that fail with `ENOSYS`. With the
//! `component` feature, the `component` module offers the same API to
//! `wasm32-wasip2` components through the `shmgate:shm` WIT interface.
//!
//! # Examples
//!
//! ```no_run
//! use shmgate_guest::{OpenOptions, Segment};
//!
//! // Producer: create a 4 KiB segment and write into it.
//! let seg = Segment::create("frames", 4096)?;
//! seg.write_all_at(b"hello from a guest", 0)?;
//!
//! // Consumer (maybe another guest in another process): read it.
//! let seg = Segment::open("frames", &OpenOptions::new())?;
//! let mut buf = [0; 18];
//! seg.read_exact_at(&mut buf, 0)?;
//! # Ok::<(), shmgate_guest::Errno>(())
//! ```

#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "component")]
pub mod component;
mod raw;
pub mod ring;

pub use raw::{Prot, Window};
use shmgate_core::ShmName;

/// Whether this guest was built with wasm atomics
/// (`-C target-feature=+atomics,+bulk-memory`). Without them,
/// `Window::atomic_u32` read-modify-writes are not atomic across processes
/// and `SeqCst` orderings are not fenced; `Window::fetch_add_u32` and its
/// siblings then fall back to the host's `atomic32` (a host call, equally
/// atomic), and [`ring`] relies on `wait32` timeouts to recover from a
/// missed wake-up.
pub const HAS_ATOMICS: bool = cfg!(target_feature = "atomics");
pub use shmgate_core::{Errno, Mode, OFlags};

/// Checks a guest name as the host will: a valid name that is relative
/// (the host prefixes its namespace), so no leading `/`.
fn check_name(name: &[u8]) -> Result<&[u8], Errno> {
    if name.first() == Some(&b'/') {
        return Err(Errno::INVAL);
    }
    ShmName::new(name)?;
    Ok(name)
}

/// A guest offset as the ABI's `i64`: `EOVERFLOW` past `i64::MAX`.
fn abi_offset(offset: u64) -> Result<i64, Errno> {
    i64::try_from(offset).map_err(|_| Errno::OVERFLOW)
}

/// How to open a segment. The default opens an existing segment read-only.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    read_write: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
    mode: Mode,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Read-only, no create, mode `0o600` for creates.
    pub const fn new() -> OpenOptions {
        OpenOptions {
            read_write: false,
            create: false,
            create_new: false,
            truncate: false,
            mode: Mode::OWNER_RW,
        }
    }

    /// Open for reading and writing (`RDWR`).
    pub const fn read_write(mut self, on: bool) -> Self {
        self.read_write = on;
        self
    }

    /// Create if missing (`CREATE`; the host must grant creates).
    pub const fn create(mut self, on: bool) -> Self {
        self.create = on;
        self
    }

    /// Create, failing with `EEXIST` if it exists (`CREATE | EXCL`).
    pub const fn create_new(mut self, on: bool) -> Self {
        self.create_new = on;
        self
    }

    /// Truncate to 0 (`TRUNC`; needs `read_write` and the host's resize
    /// grant).
    pub const fn truncate(mut self, on: bool) -> Self {
        self.truncate = on;
        self
    }

    /// The mode to ask for on create; the host masks it with its own
    /// create mode. Special bits (setuid, setgid, sticky) are `EPERM`.
    pub const fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The wire flags these options stand for, validated.
    ///
    /// # Errors
    ///
    /// `EINVAL` for `truncate` without `read_write`.
    pub fn flags(&self) -> Result<OFlags, Errno> {
        OFlags::from_options(self.read_write, self.create, self.create_new, self.truncate)
            .validate()
    }

    /// The mode bits to send: `EPERM` for special bits, as the host
    /// would answer.
    fn mode_bits(&self) -> Result<u32, Errno> {
        if self.mode.is_special() {
            return Err(Errno::PERM);
        }
        Ok(self.mode.bits())
    }
}

/// A shared memory segment the host granted; closed on drop.
#[derive(Debug)]
pub struct Segment {
    handle: u32,
}

impl Segment {
    /// Opens the segment `name` (relative to the granted namespace).
    ///
    /// # Errors
    ///
    /// `EINVAL`/`ENAMETOOLONG` for a bad name (checked here first),
    /// `EPERM` for special mode bits, and the host's errors: `EACCES` for
    /// what the grant does not allow, `ENOENT`, `EEXIST`, `EMFILE`,
    /// `EDQUOT`.
    pub fn open(name: impl AsRef<[u8]>, options: &OpenOptions) -> Result<Segment, Errno> {
        let name = check_name(name.as_ref())?;
        let flags = options.flags()?;
        let handle = raw::open(name, flags.bits(), options.mode_bits()?)?;
        Ok(Segment { handle })
    }

    /// Creates a new segment of `size` bytes (`RDWR | CREATE | EXCL`, mode
    /// `0o600`). If sizing fails, the new segment is unlinked again where
    /// the grant allows it.
    ///
    /// # Errors
    ///
    /// As [`Segment::open`] and [`Segment::set_len`] (`EFBIG` above the
    /// host's size limit).
    pub fn create(name: impl AsRef<[u8]>, size: u64) -> Result<Segment, Errno> {
        let name = name.as_ref();
        let seg = Segment::open(name, &OpenOptions::new().read_write(true).create_new(true))?;
        if let Err(e) = seg.set_len(size) {
            drop(seg);
            let _ = unlink(name);
            return Err(e);
        }
        Ok(seg)
    }

    /// The host's handle for this segment.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The current size in bytes.
    ///
    /// # Errors
    ///
    /// The host's errors (`EBADF` cannot happen for a live `Segment`).
    #[allow(clippy::len_without_is_empty)] // a host call, not a field
    pub fn len(&self) -> Result<u64, Errno> {
        raw::size(self.handle)
    }

    /// Sets the size (the host must grant resizing, or this store created
    /// the segment).
    ///
    /// # Errors
    ///
    /// `EBADF` on a read-only segment, `EACCES`, `EFBIG` above the limit.
    pub fn set_len(&self, size: u64) -> Result<(), Errno> {
        raw::set_size(self.handle, abi_offset(size)?)
    }

    /// Copies bytes at `offset` into `buf`; returns how many (short, or 0,
    /// at the end of the segment).
    ///
    /// # Errors
    ///
    /// `EOVERFLOW` if `offset + buf.len()` passes `i64::MAX`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        raw::read(self.handle, abi_offset(offset)?, buf)
    }

    /// Copies `buf` to `offset`; returns how many bytes fitted (writes never
    /// grow a segment).
    ///
    /// # Errors
    ///
    /// `EBADF` on a read-only segment, `EOVERFLOW`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        raw::write(self.handle, abi_offset(offset)?, buf)
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Segment::read_at); `EOVERFLOW` if the segment ends
    /// first.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Errno> {
        shmgate_core::io::read_exact_at(buf, offset, |b, off| self.read_at(b, off), |e| e)
    }

    /// Writes all of `buf` at `offset`.
    ///
    /// # Errors
    ///
    /// As [`write_at`](Segment::write_at); `EFBIG` if the segment ends
    /// first.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), Errno> {
        shmgate_core::io::write_all_at(buf, offset, |b, off| self.write_at(b, off), |e| e)
    }

    /// Maps `range` of the segment into this guest's memory (the host must
    /// grant windows). Offsets and lengths are multiples of 64 KiB and the
    /// range must lie inside the segment; the window stays valid after the
    /// segment is closed, until it drops.
    ///
    /// # Errors
    ///
    /// `EINVAL` (alignment, empty range), `ENXIO` (past the end), `EACCES`
    /// (write on a read-only segment or grant), `ENOMEM` (quota or no room
    /// to grow memory), `ENOTSUP` (the host's engine cannot map windows, or
    /// the guest's memory is not shared: `shmgate run` makes it shared when
    /// windows are granted, other embedders use `shmgate_host::wasm::share_memory`).
    pub fn map(&self, range: core::ops::Range<u64>, prot: Prot) -> Result<Window, Errno> {
        let len = range.end.checked_sub(range.start).ok_or(Errno::INVAL)?;
        let len = usize::try_from(len).map_err(|_| Errno::NOMEM)?;
        Window::map(self.handle, abi_offset(range.start)?, len, prot)
    }

    /// Waits while the shared `u32` at segment `offset` equals `expected`,
    /// up to `timeout` (`None`: as long as the host allows).
    ///
    /// # Errors
    ///
    /// `EAGAIN` if the value already differs, `ETIMEDOUT`, `EINTR` if the
    /// host interrupted the wait, `EINVAL` for an unaligned offset.
    pub fn wait32(
        &self,
        offset: u64,
        expected: u32,
        timeout: Option<core::time::Duration>,
    ) -> Result<(), Errno> {
        let ns = timeout.map_or(-1, |t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX));
        raw::wait32(self.handle, abi_offset(offset)?, expected, ns)
    }

    /// Wakes up to `count` waiters (`u32::MAX`: all) on the shared `u32` at
    /// segment `offset`, in any process; returns how many woke.
    ///
    /// # Errors
    ///
    /// `EINVAL` for an unaligned offset, `ENXIO` past the end.
    pub fn notify(&self, offset: u64, count: u32) -> Result<u32, Errno> {
        raw::notify(self.handle, abi_offset(offset)?, count)
    }

    /// Reads `len` bytes at `offset` into a new vector (shorter at the end
    /// of the segment).
    ///
    /// # Errors
    ///
    /// As [`read_at`](Segment::read_at).
    #[cfg(feature = "alloc")]
    pub fn read_vec(&self, offset: u64, len: usize) -> Result<alloc::vec::Vec<u8>, Errno> {
        let mut buf = alloc::vec![0; len];
        let mut filled = 0;
        while filled < len {
            match self.read_at(&mut buf[filled..], offset + filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // Nothing to do about a failed close: the handle is gone either way.
        let _ = raw::close(self.handle);
    }
}

/// `clock_monotonic` (`shmgate_v1`): the host's `CLOCK_MONOTONIC`
/// (`clock_gettime`) in nanoseconds, the clock every process and every
/// guest on the machine reads (`shmgate_host::ring::monotonic_ns`
/// natively), so a timestamp written into a ring message by one end gives
/// the other end the message's one-way latency, whichever host runs it.
///
/// One host call with no arguments that touches no guest memory: as cheap
/// as a native `clock_gettime`, where WASI's `clock_time_get`
/// ([`monotonic_ns`]) costs about five times that (see `docs/ABI.md`).
///
/// # Errors
///
/// `ENOSYS` outside wasm. A host that lacks the import refuses to
/// instantiate the guest (an unknown import) instead.
#[doc(alias = "clock_gettime")]
#[inline]
pub fn clock_monotonic() -> Result<u64, Errno> {
    raw::clock_monotonic()
}

/// `clock_time_get(MONOTONIC)` (WASI) in nanoseconds: under `shmgate run`
/// the host's `CLOCK_MONOTONIC` itself, the clock every process and every
/// guest on the machine reads (`shmgate_host::ring::monotonic_ns` natively),
/// so a timestamp written into a ring message by one end gives the other
/// end the message's one-way latency. Other hosts may start the clock
/// anywhere: compare only readings of one host then. [`clock_monotonic`]
/// reads the host's clock whatever the host's WASI setup, for a fifth of
/// the cost.
///
/// # Errors
///
/// `ENOSYS` outside wasm; `EINVAL` if the host refuses.
#[doc(alias = "clock_time_get")]
pub fn monotonic_ns() -> Result<u64, Errno> {
    raw::monotonic_ns()
}

/// Removes the name `name` (the host must grant unlinking). Open segments
/// stay usable.
///
/// # Errors
///
/// `EINVAL`/`ENAMETOOLONG` for a bad name, `EACCES`, `ENOENT`.
pub fn unlink(name: impl AsRef<[u8]>) -> Result<(), Errno> {
    raw::unlink(check_name(name.as_ref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_the_host() {
        // The native stubs answer ENOSYS, so any other errno came from the
        // guest-side check.
        let rw = OpenOptions::new().read_write(true);
        assert_eq!(Segment::open("/abs", &rw).unwrap_err(), Errno::INVAL);
        assert_eq!(Segment::open("..", &rw).unwrap_err(), Errno::INVAL);
        assert_eq!(Segment::open("a/b", &rw).unwrap_err(), Errno::INVAL);
        assert_eq!(
            Segment::open([b'x'; 256], &rw).unwrap_err(),
            Errno::NAMETOOLONG
        );
        assert_eq!(unlink("x\0y").unwrap_err(), Errno::INVAL);
        assert_eq!(Segment::open("ok", &rw).unwrap_err(), Errno::NOSYS);
    }

    #[test]
    fn the_clock_decodes_the_wire() {
        // The native stub answers -ENOSYS, which must decode as the errno,
        // not as a time.
        assert_eq!(clock_monotonic(), Err(Errno::NOSYS));
    }

    #[test]
    fn flags_and_mode_are_checked_before_the_host() {
        let trunc_ro = OpenOptions::new().truncate(true);
        assert_eq!(Segment::open("x", &trunc_ro).unwrap_err(), Errno::INVAL);
        let suid = OpenOptions::new().mode(Mode::SUID | Mode::OWNER_RW);
        assert_eq!(Segment::open("x", &suid).unwrap_err(), Errno::PERM);
        let flags = OpenOptions::new().read_write(true).create_new(true).flags();
        assert_eq!(flags.map(OFlags::bits), Ok(1 | 2 | 4));
    }

    #[test]
    fn offsets_past_i64_overflow() {
        assert_eq!(abi_offset(u64::MAX), Err(Errno::OVERFLOW));
        assert_eq!(abi_offset(i64::MAX as u64), Ok(i64::MAX));
    }
}
