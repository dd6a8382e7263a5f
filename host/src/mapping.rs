//! A segment mapped into this process's memory.
//!
//! # Why there is no `&[u8]`
//!
//! Shared memory can change under you at any moment: another process (or
//! thread) with the same segment mapped may write it. A Rust `&[u8]` or
//! `&mut [u8]` promises the bytes do not change (or that nobody else sees
//! them), so handing one out would be unsound. [`Mapping`] offers copies
//! ([`read_at`](Mapping::read_at), [`write_at`](Mapping::write_at)), atomics
//! ([`atomic_u32`](Mapping::atomic_u32), [`atomic_u64`](Mapping::atomic_u64))
//! and raw pointers for `unsafe` code that brings its own synchronisation.
//! A copy that races a writer sees a mix of old and new bytes; use atomics
//! or a protocol (sequence numbers, a ring buffer) to know when data is
//! complete.
//!
//! # A peer that shrinks the segment
//!
//! If another process shrinks the segment ([`Segment::set_len`](crate::Segment::set_len),
//! `ftruncate`) below the end of a live mapping, the next access to the
//! cut-off pages raises `SIGBUS`, which would kill a process that uses
//! plain `mmap`. A [`Mapping`] survives it: shmgate's signal handler (the
//! one that guards wasm windows) diverts the access to private zeroed
//! pages, and the mapping is *revoked*. Every copy and checked atomic
//! ([`read_at`](Mapping::read_at), [`write_at`](Mapping::write_at),
//! [`load_u32`](Mapping::load_u32), [`fetch_add_u32`](Mapping::fetch_add_u32),
//! ...) then returns `ENXIO` (POSIX's errno for a mapping past the end of
//! its object), including the one that was running when the peer cut the
//! pages off: a copy never reports success with bytes that did not come
//! from, or reach, the segment. Map again once the segment has its size
//! back. Other mappings, of this segment or others, are unaffected.
//!
//! The handler is installed (once) by the first `map`; it passes every
//! fault that is not in one of shmgate's mappings on to the handler that
//! was there before, so a program's own `SIGSEGV` handling keeps working.
//! Code that installs its own `SIGBUS` handler afterwards must chain to
//! the previous one for this to keep working.
//!
//! [`atomic_u32`](Mapping::atomic_u32) hands out a plain `&AtomicU32`: its
//! operations survive a shrink too, but cannot report it; check
//! [`is_revoked`](Mapping::is_revoked) afterwards, or use the checked
//! atomics. The same holds for raw pointers. A segment sealed against
//! shrinking never takes this path.
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::Ordering;
//! use shmgate_host::Segment;
//! # let name = format!("/shmgate-doc-map-{}", std::process::id());
//! let seg = shmgate_host::OpenOptions::new().size(4096).open_owned(&name)?;
//! let map = seg.map()?;
//! map.write_at(8, b"hello")?;
//! let mut buf = [0; 5];
//! map.read_at(8, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! map.atomic_u32(0)?.fetch_add(1, Ordering::SeqCst);
//! # Ok::<(), shmgate_host::Error>(())
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shmgate_core::Errno;

use crate::sys::RawMapping;
use crate::sys::window::guarded::GuardedMapping;
use crate::{Error, Op};

/// A `MAP_SHARED` mapping of a segment; unmapped on drop. It stays valid
/// after the [`Segment`](crate::Segment) is closed or unlinked.
///
/// See the [module documentation](self) for why it offers no slices and
/// why a segment must not shrink while mapped.
#[derive(Debug)]
pub struct Mapping {
    guarded: GuardedMapping,
    name: Arc<[u8]>,
}

impl Mapping {
    pub(crate) fn new(guarded: GuardedMapping, name: Arc<[u8]>) -> Mapping {
        Mapping { guarded, name }
    }

    fn raw(&self) -> &RawMapping {
        self.guarded.raw()
    }

    /// The registered mapping, for [`wait`](crate::wait).
    pub(crate) fn guarded(&self) -> &GuardedMapping {
        &self.guarded
    }

    /// Runs `access` on the mapping and tells whether it really reached the
    /// segment: `ENXIO` if the mapping was revoked before or during it (see
    /// the [module documentation](self)).
    fn checked<T>(
        &self,
        op: Op,
        access: impl FnOnce(&RawMapping) -> Result<T, Errno>,
    ) -> Result<T, Error> {
        self.require_intact(op)?;
        let value = access(self.raw()).map_err(|e| Error::new(op, &self.name, e))?;
        self.require_intact(op)?;
        Ok(value)
    }

    /// `ENXIO` if the mapping is revoked.
    fn require_intact(&self, op: Op) -> Result<(), Error> {
        if self.guarded.intact() {
            Ok(())
        } else {
            Err(Error::new(op, &self.name, Errno::NXIO))
        }
    }

    /// The raw mapping, for the ring's per-message path
    /// (`crate::ring`), which checks [`is_revoked`](Mapping::is_revoked)
    /// itself once per message instead of around every access. Accesses
    /// through it are bounds-checked but not revocation-checked.
    pub(crate) fn unchecked(&self) -> &RawMapping {
        self.raw()
    }

    /// The name the segment was opened by, for errors.
    pub(crate) fn name(&self) -> &Arc<[u8]> {
        &self.name
    }

    /// The mapped length in bytes.
    #[allow(clippy::len_without_is_empty)] // a mapping is never empty
    pub fn len(&self) -> usize {
        self.raw().len()
    }

    /// Whether the mapping is writable (the segment was opened read-write).
    pub fn is_writable(&self) -> bool {
        self.raw().is_writable()
    }

    /// Whether another process shrank the segment under this mapping and an
    /// access was diverted to private pages: from then on every checked
    /// access is `ENXIO`; map the segment again.
    pub fn is_revoked(&self) -> bool {
        !self.guarded.intact()
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the range is outside the mapping; `ENXIO` if the
    /// mapping is revoked (a peer shrank the segment under it).
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        self.checked(Op::Read, |raw| raw.copy_out(offset, buf))
    }

    /// Copies `buf` into the mapping at `offset`.
    ///
    /// # Errors
    ///
    /// `EACCES` for a read-only mapping, `EINVAL` if the range is outside
    /// the mapping, `ENXIO` if the mapping is revoked (the bytes did not
    /// reach the segment).
    pub fn write_at(&self, offset: usize, buf: &[u8]) -> Result<(), Error> {
        self.checked(Op::Write, |raw| raw.copy_in(offset, buf))
    }

    /// The 4 bytes at `offset` as an [`AtomicU32`], shared with every
    /// process that maps the segment.
    ///
    /// # Errors
    ///
    /// `EINVAL` if out of bounds or not 4-byte aligned; `EACCES` for a
    /// read-only mapping (a store would fault), where
    /// [`load_u32`](Mapping::load_u32) still works; `ENXIO` if the mapping
    /// is already revoked.
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, Error> {
        self.require_writable()?;
        self.require_intact(Op::Write)?;
        self.raw()
            .atomic_u32(offset)
            .map_err(|e| Error::new(Op::Write, &self.name, e))
    }

    /// The 8 bytes at `offset` as an [`AtomicU64`].
    ///
    /// # Errors
    ///
    /// As [`atomic_u32`](Mapping::atomic_u32), with 8-byte alignment.
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64, Error> {
        self.require_writable()?;
        self.require_intact(Op::Write)?;
        self.raw()
            .atomic_u64(offset)
            .map_err(|e| Error::new(Op::Write, &self.name, e))
    }

    /// `EACCES` for a read-only mapping, where a store would fault.
    fn require_writable(&self) -> Result<(), Error> {
        if self.is_writable() {
            Ok(())
        } else {
            Err(Error::new(
                Op::Write,
                &self.name,
                shmgate_core::Errno::ACCES,
            ))
        }
    }

    /// An atomic load of the `u32` at `offset`, also on read-only mappings.
    ///
    /// # Errors
    ///
    /// `EINVAL` if out of bounds or not 4-byte aligned.
    ///
    /// `ENXIO` if the mapping is revoked.
    pub fn load_u32(&self, offset: usize, order: Ordering) -> Result<u32, Error> {
        self.checked(Op::Read, |raw| {
            raw.atomic_u32(offset).map(|a| a.load(order))
        })
    }

    /// An atomic store of the `u32` at `offset`.
    ///
    /// # Errors
    ///
    /// As [`atomic_u32`](Mapping::atomic_u32); `ENXIO` if the mapping is
    /// revoked (the store did not reach the segment).
    pub fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<(), Error> {
        self.require_writable()?;
        self.checked(Op::Write, |raw| {
            raw.atomic_u32(offset).map(|a| a.store(value, order))
        })
    }

    /// An atomic add to the `u32` at `offset`; returns the old value.
    ///
    /// # Errors
    ///
    /// As [`store_u32`](Mapping::store_u32).
    pub fn fetch_add_u32(&self, offset: usize, value: u32, order: Ordering) -> Result<u32, Error> {
        self.require_writable()?;
        self.checked(Op::Write, |raw| {
            raw.atomic_u32(offset).map(|a| a.fetch_add(value, order))
        })
    }

    /// An atomic compare-and-exchange of the `u32` at `offset`: `Ok(Ok(old))`
    /// if it held `current` and now holds `new`, `Ok(Err(actual))` if not.
    ///
    /// # Errors
    ///
    /// As [`store_u32`](Mapping::store_u32).
    pub fn compare_exchange_u32(
        &self,
        offset: usize,
        current: u32,
        new: u32,
        order: Ordering,
    ) -> Result<Result<u32, u32>, Error> {
        self.require_writable()?;
        self.checked(Op::Write, |raw| {
            raw.atomic_u32(offset)
                .map(|a| a.compare_exchange(current, new, order, Ordering::Relaxed))
        })
    }

    /// The start of the mapping, for `unsafe` code. Reading or writing
    /// through it races other processes. A write to a read-only mapping,
    /// or an access a peer's shrink cut off, lands in private zeroed pages
    /// (never in the segment) and revokes the mapping: check
    /// [`is_revoked`](Mapping::is_revoked) afterwards.
    pub fn as_ptr(&self) -> *const u8 {
        self.raw().as_ptr()
    }

    /// The start of the mapping, for `unsafe` code that writes; see
    /// [`as_ptr`](Mapping::as_ptr).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.raw().as_ptr()
    }
}
