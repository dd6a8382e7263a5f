//! The creator lock: an open-file-description (OFD) read lock that a
//! process creating a segment through shmgate takes on its own descriptor.
//!
//! The kernel drops an OFD lock when the last reference to the open file
//! description goes away: the last duplicate of the descriptor is closed
//! and the last mapping made through it is unmapped, or the process dies
//! (`SIGKILL` included). So "some description holds the lock" means "a
//! live process still has the creator's descriptor open or mapped", with
//! no daemon and no pid that could be reused. Anyone who can open the object
//! for reading can test it with `F_OFD_GETLK`.
//!
//! The lock covers one byte at [`CREATOR_LOCK_OFFSET`], far past any real
//! segment size, so it never meets a lock an application takes on its data
//! (locks may lie past the end of a file).
//!
//! The holder lock is the same kind of lock on the byte before it
//! ([`HOLDER_LOCK_OFFSET`]), taken by every managed open of an existing
//! object (`OpenOptions`, guests' handles, the CLI): "some description holds
//! it" means a live process, in any PID namespace or container sharing the
//! tmpfs, still holds such a descriptor or a mapping made through it.

use std::os::fd::{AsRawFd, BorrowedFd};

use shmgate_core::Errno;

/// The byte the creator lock covers: `i64::MAX - 1` (`2^63 - 2`).
pub(crate) const CREATOR_LOCK_OFFSET: i64 = i64::MAX - 1;

fn last_errno() -> Errno {
    let raw = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    Errno::from_raw(u16::try_from(raw).unwrap_or(Errno::IO.raw()))
}

/// The byte the holder lock covers: `i64::MAX - 2` (`2^63 - 3`).
pub(crate) const HOLDER_LOCK_OFFSET: i64 = i64::MAX - 2;

/// A `struct flock` of type `l_type` on the byte at `offset` (`l_pid` 0, as
/// the OFD commands require).
#[allow(unsafe_code)]
fn lock_byte(l_type: libc::c_int, offset: i64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct of integers (and, on some
    // targets, padding fields); all zeroes is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    // F_RDLCK, F_WRLCK, F_UNLCK and SEEK_SET are small constants that fit
    // `c_short` on every Linux target.
    #[allow(clippy::cast_possible_truncation)]
    {
        fl.l_type = l_type as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
    }
    fl.l_start = offset;
    fl.l_len = 1;
    fl
}

/// `fcntl(fd, F_OFD_SETLK, {F_RDLCK, CREATOR_LOCK_OFFSET, 1})`: takes the
/// creator lock on `fd`'s open file description. `fd` must be open for
/// reading.
///
/// # Errors
///
/// `EAGAIN` or `EACCES` if another description holds a write lock on that
/// byte; `EBADF` if `fd` is not open for reading; `ENOLCK`.
pub(crate) fn hold_creator_lock(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    hold_read_lock(fd, CREATOR_LOCK_OFFSET)
}

/// `fcntl(fd, F_OFD_SETLK, {F_RDLCK, HOLDER_LOCK_OFFSET, 1})`: takes the
/// holder lock on `fd`'s open file description. `fd` must be open for
/// reading.
///
/// # Errors
///
/// As [`hold_creator_lock`].
pub(crate) fn hold_holder_lock(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    hold_read_lock(fd, HOLDER_LOCK_OFFSET)
}

#[allow(unsafe_code)]
fn hold_read_lock(fd: BorrowedFd<'_>, offset: i64) -> Result<(), Errno> {
    let fl = lock_byte(libc::F_RDLCK, offset);
    loop {
        // SAFETY: F_OFD_SETLK reads the `flock` that `fl` holds for the
        // duration of the call; `fd` is kept open by the borrow.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if r == 0 {
            return Ok(());
        }
        match last_errno() {
            Errno::INTR => continue,
            e => return Err(e),
        }
    }
}

/// `fcntl(fd, F_OFD_GETLK, {F_WRLCK, CREATOR_LOCK_OFFSET, 1})`: whether any
/// open file description other than `fd`'s holds the creator lock (a write
/// lock test conflicts with every read lock of other descriptions).
///
/// # Errors
///
/// `EBADF` for an `O_PATH` descriptor.
pub(crate) fn creator_lock_held(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    lock_held(fd, CREATOR_LOCK_OFFSET)
}

/// `fcntl(fd, F_OFD_GETLK, {F_WRLCK, HOLDER_LOCK_OFFSET, 1})`: whether any
/// open file description other than `fd`'s holds the holder lock.
///
/// # Errors
///
/// As [`creator_lock_held`].
pub(crate) fn holder_lock_held(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    lock_held(fd, HOLDER_LOCK_OFFSET)
}

#[allow(unsafe_code)]
fn lock_held(fd: BorrowedFd<'_>, offset: i64) -> Result<bool, Errno> {
    let mut fl = lock_byte(libc::F_WRLCK, offset);
    // SAFETY: F_OFD_GETLK reads and overwrites the `flock` that `fl` holds,
    // which lives across the call; `fd` is kept open by the borrow.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(last_errno());
    }
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// Linux's `F_SETSIG` (`<fcntl.h>` with `_GNU_SOURCE`; the libc crate
/// does not export it).
const F_SETSIG: libc::c_int = 10;

/// `fcntl(fd, F_SETSIG, SIGURG)`, then `fcntl(fd, F_SETLEASE, F_WRLCK)` and
/// at once `F_UNLCK`: whether any open file description other than `fd`'s
/// has the object open, in any process and any namespace (a mapping keeps
/// its description open, so mappings count). The kernel grants a write
/// lease only when no other description is open for reading or writing;
/// `fd` must be open read-only.
///
/// While the lease is held (two system calls), another process's open of
/// the object waits for its release (or fails with `EAGAIN` if it opens
/// with `O_NONBLOCK`, as shmgate does); the lease-break signal would be
/// `SIGURG`, which is ignored unless a handler is installed.
///
/// # Errors
///
/// `EACCES` if this process neither owns the object nor has `CAP_LEASE`;
/// `EINVAL` where leases are disabled (`fs.leases-enable` 0).
#[allow(unsafe_code)]
pub(crate) fn open_elsewhere(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_SETSIG and F_SETLEASE take an integer argument and no
    // pointers; `fd` is kept open by the borrow.
    if unsafe { libc::fcntl(raw, F_SETSIG, libc::SIGURG) } != 0 {
        return Err(last_errno());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETLEASE, libc::F_WRLCK) } != 0 {
        return match last_errno() {
            Errno::AGAIN => Ok(true),
            e => Err(e),
        };
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETLEASE, libc::F_UNLCK) } != 0 {
        return Err(last_errno());
    }
    Ok(false)
}
