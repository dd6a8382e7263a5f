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
//! # `SIGBUS`: never shrink a mapped segment
//!
//! If any process shrinks the segment ([`Segment::set_len`](crate::Segment::set_len),
//! `ftruncate`) below the end of a live mapping, the next access to the
//! cut-off pages raises `SIGBUS`, which kills the process. POSIX shared
//! memory cannot be sealed against this. Grow segments, never shrink them
//! while mapped; if another party can shrink them, use
//! [`Segment::read_at`](crate::Segment::read_at)/[`write_at`](crate::Segment::write_at),
//! which return short counts instead.
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
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::sys::RawMapping;
use crate::{Error, Op};

/// A `MAP_SHARED` mapping of a segment; unmapped on drop. It stays valid
/// after the [`Segment`](crate::Segment) is closed or unlinked.
///
/// See the [module documentation](self) for why it offers no slices and
/// why a segment must not shrink while mapped.
#[derive(Debug)]
pub struct Mapping {
    raw: RawMapping,
    name: Arc<[u8]>,
}

impl Mapping {
    pub(crate) fn new(raw: RawMapping, name: Arc<[u8]>) -> Mapping {
        Mapping { raw, name }
    }

    /// The name the segment was opened by, for errors.
    pub(crate) fn name(&self) -> &Arc<[u8]> {
        &self.name
    }

    /// The mapped length in bytes.
    #[allow(clippy::len_without_is_empty)] // a mapping is never empty
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the mapping is writable (the segment was opened read-write).
    pub fn is_writable(&self) -> bool {
        self.raw.is_writable()
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the range is outside the mapping.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        self.raw
            .copy_out(offset, buf)
            .map_err(|e| Error::new(Op::Read, &self.name, e))
    }

    /// Copies `buf` into the mapping at `offset`.
    ///
    /// # Errors
    ///
    /// `EACCES` for a read-only mapping, `EINVAL` if the range is outside
    /// the mapping.
    pub fn write_at(&self, offset: usize, buf: &[u8]) -> Result<(), Error> {
        self.raw
            .copy_in(offset, buf)
            .map_err(|e| Error::new(Op::Write, &self.name, e))
    }

    /// The 4 bytes at `offset` as an [`AtomicU32`], shared with every
    /// process that maps the segment.
    ///
    /// # Errors
    ///
    /// `EINVAL` if out of bounds or not 4-byte aligned; `EACCES` for a
    /// read-only mapping (a store would fault), where
    /// [`load_u32`](Mapping::load_u32) still works.
    pub fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, Error> {
        self.require_writable()?;
        self.raw
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
        self.raw
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
    pub fn load_u32(
        &self,
        offset: usize,
        order: std::sync::atomic::Ordering,
    ) -> Result<u32, Error> {
        self.raw
            .atomic_u32(offset)
            .map(|a| a.load(order))
            .map_err(|e| Error::new(Op::Read, &self.name, e))
    }

    /// The start of the mapping, for `unsafe` code. Reading or writing
    /// through it races other processes; writing to a read-only mapping
    /// faults.
    pub fn as_ptr(&self) -> *const u8 {
        self.raw.as_ptr()
    }

    /// The start of the mapping, for `unsafe` code that writes; see
    /// [`as_ptr`](Mapping::as_ptr).
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.raw.as_ptr()
    }
}
