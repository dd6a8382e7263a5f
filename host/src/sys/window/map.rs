//! Mapping and unmapping windows.

use std::ffi::c_void;
use std::os::fd::{AsRawFd, BorrowedFd};

use shmgate_core::Errno;

use super::guarded::{check_mappable, last_errno, live_state};
use super::memory::{MemoryWindows, Window};
use super::registry;

/// Maps `len` bytes of `fd` at `offset` over guest bytes `addr..addr+len`
/// of `memory`, shared, readable and maybe writable, and registers it.
///
/// The caller guarantees: `addr..addr+len` lies inside the memory's
/// accessible size, is 64 KiB-aligned, and was just grown for this window
/// (no guest data, no window there).
///
/// # Errors
///
/// The kernel's `mmap` errors, `ENOMEM` if the registry is full. On error
/// the range is put back as private zeroed pages (or, if even that fails,
/// left `PROT_NONE`, so the guest traps on it and nothing else can be
/// mapped there).
#[allow(unsafe_code)]
pub(crate) fn map_window(
    memory: &MemoryWindows,
    addr: usize,
    len: usize,
    fd: BorrowedFd<'_>,
    offset: u64,
    writable: bool,
) -> Result<(), Errno> {
    let start = memory.base().checked_add(addr).ok_or(Errno::INVAL)?;
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let offset = libc::off_t::try_from(offset).map_err(|_| Errno::OVERFLOW)?;
    check_mappable(fd, offset, len, writable)?;
    // Registered before it is mapped, so a peer's shrink right after the
    // mmap finds a registration (until then the range is the private pages
    // the host just grew, which never fault).
    let token = registry::register(start, len, live_state(writable))?;
    let flags = libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE;
    // SAFETY: by the caller's guarantee the range is accessible memory of a
    // reservation we own and holds no window; the guest's data there was
    // just grown for this window, so MAP_FIXED destroys nothing in use.
    let p = unsafe {
        libc::mmap(
            start as *mut c_void,
            len,
            prot,
            flags,
            fd.as_raw_fd(),
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        let e = last_errno();
        // Private zeroed pages again; if even that fails the range stays
        // registered (revoked) and the window is kept in the books.
        return match registry::retire(token, |snap| {
            replace_private(snap.start, snap.end - snap.start)
        }) {
            Ok(()) => Err(e),
            Err((token, _)) => {
                memory.windows().push(Window { addr, len, token });
                Err(e)
            }
        };
    }
    memory.windows().push(Window { addr, len, token });
    Ok(())
}

/// Puts private zeroed pages back over the window at `addr..addr+len` of
/// `memory`, then forgets it and lists the range for reuse by a later
/// `map`. `EINVAL` if that is not exactly one of its
/// windows.
///
/// # Errors
///
/// `ENOMEM` (or the kernel's error) if the replacement failed: the window
/// then stays registered (as revoked), either still mapped or `PROT_NONE`,
/// never a hole in the reservation; the caller keeps it in its books.
pub(crate) fn unmap_window(memory: &MemoryWindows, addr: usize, len: usize) -> Result<(), Errno> {
    let mut windows = memory.windows();
    let i = windows
        .iter()
        .position(|w| w.addr == addr && w.len == len)
        .ok_or(Errno::INVAL)?;
    let w = windows.swap_remove(i);
    match registry::retire(w.token, |snap| {
        replace_private(snap.start, snap.end - snap.start)
    }) {
        Ok(()) => {
            drop(windows);
            // Private zeroed pages now: the next `map` reuses them.
            memory.give_back(addr, len);
            Ok(())
        }
        Err((token, e)) => {
            windows.push(Window { addr, len, token });
            Err(e)
        }
    }
}

/// Makes `start..start+len` private zeroed read-write pages, in two steps
/// so that a failure never leaves unmapped address space: first
/// `PROT_NONE` anonymous pages (`MAP_NORESERVE`, not charged against
/// memory, so only a full address space or map count can fail it), then
/// `mprotect` to read-write (charged; it can fail under strict overcommit
/// or `RLIMIT_DATA`, leaving the pages `PROT_NONE`).
#[allow(unsafe_code)]
fn replace_private(start: usize, len: usize) -> Result<(), Errno> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
    // SAFETY: `start..start+len` is a window range inside a reservation we
    // own (callers' guarantee), which becomes inaccessible guest memory.
    let p = unsafe { libc::mmap(start as *mut c_void, len, libc::PROT_NONE, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(last_errno());
    }
    // SAFETY: the same range, now private anonymous pages of ours.
    let rc = unsafe {
        libc::mprotect(
            start as *mut c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
        )
    };
    if rc != 0 {
        return Err(last_errno());
    }
    Ok(())
}
