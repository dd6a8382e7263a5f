//! Host mappings of segment pages that the signal handler guards: native
//! [`Mapping`](crate::Mapping)s and the pages `wait32`/`notify`/`atomic32`
//! use. Registered like windows, so a segment shrunk under one never kills
//! the process: the access lands in private zeroed pages and the mapping is
//! marked detached, which its owner checks after every copy or atomic.

use std::ffi::c_void;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use shmgate_core::Errno;

use super::super::RawMapping;
use super::record::State;
use super::registry::{self, GRANULE};
use super::signals;

/// The errno of the last failed libc call.
pub(crate) fn last_errno() -> Errno {
    let e = std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::ENOMEM);
    Errno::from_raw(u16::try_from(e).unwrap_or(Errno::NOMEM.raw()))
}

/// The registry state of a live shared mapping.
pub(crate) fn live_state(writable: bool) -> State {
    if writable {
        State::ReadWrite
    } else {
        State::ReadOnly
    }
}

/// Refuses, before any `MAP_FIXED`, a shared mapping the kernel would
/// refuse for the segment's seals: on kernels before 6.12 a `MAP_FIXED`
/// mmap that fails on a write seal has already unmapped its target, and
/// another thread's `mmap` could be placed in that hole. `EPERM` for a
/// writable mapping of a segment sealed against writes; a read-only one is
/// tried at an address the kernel picks first (kernels before 6.7 refused
/// those too for descriptors opened read-write).
#[allow(unsafe_code)]
pub(crate) fn check_mappable(
    fd: BorrowedFd<'_>,
    offset: libc::off_t,
    len: usize,
    writable: bool,
) -> Result<(), Errno> {
    // SAFETY: F_GET_SEALS reads the seals of the file behind a live fd;
    // files that cannot be sealed give EINVAL, read as no seals.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    let write_sealed = seals > 0 && seals & (libc::F_SEAL_WRITE | libc::F_SEAL_FUTURE_WRITE) != 0;
    if !write_sealed {
        return Ok(());
    }
    if writable {
        return Err(Errno::PERM);
    }
    // SAFETY: fresh address space the kernel picks; replaces nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last_errno());
    }
    // SAFETY: exactly the trial mapping made just above.
    unsafe { libc::munmap(p, len) };
    Ok(())
}

/// `mmap`s `len` bytes of `fd` at `offset`, shared, at an address on a
/// registry granule (64 KiB): reserves `len + 64 KiB` of `PROT_NONE`,
/// maps the segment at the first granule boundary inside, and gives the
/// slack back.
#[allow(unsafe_code)]
fn mmap_aligned(
    fd: BorrowedFd<'_>,
    offset: u64,
    len: usize,
    writable: bool,
) -> Result<RawMapping, Errno> {
    let total = len.checked_add(GRANULE).ok_or(Errno::NOMEM)?;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    // SAFETY: fresh address space the kernel picks; replaces nothing.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), total, libc::PROT_NONE, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(last_errno());
    }
    let raw = p as usize;
    let start = raw.next_multiple_of(GRANULE);
    // The slack after the mapping starts at the next page boundary (`len`
    // need not be a page multiple; the mapping covers whole pages).
    let end = start + len.next_multiple_of(super::super::page_size());
    let unmap = |from: usize, to: usize| {
        if to > from {
            // SAFETY: a part of the reservation just made, which nothing
            // else uses.
            unsafe { libc::munmap(from as *mut c_void, to - from) };
        }
    };
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let checked = libc::off_t::try_from(offset)
        .map_err(|_| Errno::OVERFLOW)
        .and_then(|offset| check_mappable(fd, offset, len, writable).map(|()| offset));
    let offset = match checked {
        Ok(offset) => offset,
        Err(e) => {
            unmap(raw, raw + total);
            return Err(e);
        }
    };
    // SAFETY: `start..end` lies inside our fresh reservation.
    let q = unsafe {
        libc::mmap(
            start as *mut c_void,
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd.as_raw_fd(),
            offset,
        )
    };
    if q == libc::MAP_FAILED {
        // Give back only the slack: on kernels before 6.12 the failed
        // MAP_FIXED may have unmapped `start..end` already, and something
        // else may live there now. The middle stays ours (leaked at worst).
        unmap(raw, start);
        unmap(end, raw + total);
        return Err(last_errno());
    }
    unmap(raw, start);
    unmap(end, raw + total);
    let ptr = NonNull::new(start as *mut u8).ok_or(Errno::NOMEM)?;
    Ok(RawMapping { ptr, len, writable })
}

/// A host mapping of segment pages that host code itself touches,
/// registered like a window: if the segment shrinks under it, the signal
/// handler keeps the access from killing the process (it lands in private
/// zeroed pages instead, and [`intact`](GuardedMapping::intact) turns
/// false for good).
#[derive(Debug)]
pub(crate) struct GuardedMapping {
    raw: RawMapping,
    token: Option<registry::Token>,
}

impl GuardedMapping {
    /// `mmap`s `len` bytes of `fd` at `offset`, shared, and registers them.
    pub(crate) fn new(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> Result<GuardedMapping, Errno> {
        signals::install();
        let raw = mmap_aligned(fd, offset, len, writable)?;
        let token = registry::register(raw.as_ptr() as usize, len, live_state(writable))?;
        Ok(GuardedMapping {
            raw,
            token: Some(token),
        })
    }

    /// The mapping, for its copies and atomics.
    pub(crate) fn raw(&self) -> &RawMapping {
        &self.raw
    }

    /// Whether every access so far reached the segment: `false` once a
    /// peer shrank the segment under the mapping and an access was diverted
    /// to private pages (or the pages were made inaccessible).
    pub(crate) fn intact(&self) -> bool {
        self.token
            .as_ref()
            .and_then(registry::state)
            .is_some_and(|s| matches!(s, State::ReadWrite | State::ReadOnly))
    }
}

impl Drop for GuardedMapping {
    fn drop(&mut self) {
        // Forget it before `raw` unmaps it; nothing replaces the pages.
        if let Some(token) = self.token.take() {
            let _ = registry::retire(token, |_| Ok::<(), ()>(()));
        }
    }
}
