//! Atomic creation: an object is sized and initialised before its name
//! appears in `/dev/shm`, and the name appears with exact `CREATE | EXCL`
//! semantics (`EEXIST` if anything, a symlink included, is there).
//!
//! Two routes, picked once per process:
//!
//! 1. **`O_TMPFILE`** (Linux 3.11+, tmpfs; needs `/proc`):
//!    `open("/dev/shm", O_TMPFILE | O_RDWR | O_CLOEXEC, mode)` makes an
//!    object with no name at all; the caller sizes and fills it; then
//!    `linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, "/dev/shm/<name>",
//!    AT_SYMLINK_FOLLOW)` gives it its name, or fails with `EEXIST`. A
//!    crash before the link leaves nothing behind: the kernel frees the
//!    unnamed object with its last descriptor. `linkat(fd, "",
//!    AT_EMPTY_PATH)` does the same without the `/proc` lookup and is tried
//!    first, but needs `CAP_DAC_READ_SEARCH`: refused once (`ENOENT`), the
//!    process uses the `/proc` route only.
//! 2. **A private temporary name**, where `O_TMPFILE` is refused (`EISDIR`
//!    from kernels that do not know it, `EOPNOTSUPP` from file systems that
//!    do not support it) or `/proc` is not mounted: the object is created as
//!    `/dev/shm/.shmgate-new-<pid>-<n>` (`CREATE | EXCL`), sized and
//!    filled, then `linkat`ed to its name (`EEXIST` likewise) and the
//!    temporary name unlinked. A crash in between leaves the temporary
//!    name, which `shmgate rm --orphaned` recognises: its creator lock died
//!    with the creator.
//!
//! iceoryx2's alternative, creating the real name with mode `0` and
//! `fchmod`ing it when ready, publishes the name early: other users get
//! `EACCES` instead of `ENOENT`, root opens the half-made object anyway,
//! and `fchmod` ignores the umask, which a process cannot read without
//! racing its own threads. Both routes here are invisible to everyone.

#[cfg(test)]
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use rustix::fs::{self as rfs, AtFlags, CWD};
use shmgate_core::{Errno, Mode, OFlags, SHM_DIR, ShmName, ShmPath};

use super::retry;

/// The route this process uses; see the module documentation.
static ROUTE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const TMPFILE: u8 = 1;
const TEMP_NAME: u8 = 2;

/// An object being created: not yet visible under its name. Dropping it
/// without [`publish`](Pending::publish) removes any trace (the temporary
/// name of route 2).
#[derive(Debug)]
pub(crate) struct Pending {
    /// The temporary name (route 2), `None` for an `O_TMPFILE` object.
    temp: Option<ShmPath>,
}

/// Creates an object that has no visible name yet, mode `mode` less the
/// umask, open read-write and close-on-exec.
///
/// # Errors
///
/// The kernel's `open` errors (`EACCES`, `EMFILE`, `ENOSPC`, …).
pub(crate) fn create_pending(mode: Mode) -> Result<(OwnedFd, Pending), Errno> {
    let route = ROUTE.load(Ordering::Relaxed);
    if route == UNKNOWN && rfs::stat("/proc/self/fd").is_err() {
        ROUTE.store(TEMP_NAME, Ordering::Relaxed);
    } else if route != TEMP_NAME {
        let flags = rfs::OFlags::TMPFILE | rfs::OFlags::RDWR | rfs::OFlags::CLOEXEC;
        let raw_mode = rfs::Mode::from_raw_mode(mode.bits());
        let dir = SHM_DIR.trim_end_matches('/');
        match retry(|| rfs::open(dir, flags, raw_mode)) {
            Ok(fd) => {
                ROUTE.store(TMPFILE, Ordering::Relaxed);
                return Ok((fd, Pending { temp: None }));
            }
            // A kernel without O_TMPFILE opens the directory: EISDIR. A
            // file system without it: EOPNOTSUPP.
            Err(Errno::ISDIR | Errno::NOTSUP) if route == UNKNOWN => {
                ROUTE.store(TEMP_NAME, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    create_temp_name(mode)
}

/// Route 2: `open("/dev/shm/.shmgate-new-<pid>-<n>", RDWR | CREATE | EXCL)`.
fn create_temp_name(mode: Mode) -> Result<(OwnedFd, Pending), Errno> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = format!(".shmgate-new-{}-{n}", std::process::id());
        let path = ShmPath::new(&ShmName::new(temp.as_bytes())?);
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
        match super::open(&path, flags, mode) {
            Ok(fd) => return Ok((fd, Pending { temp: Some(path) })),
            // A leftover of a dead process with our pid: take the next n.
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Pending {
    /// Gives the object `fd` its name `path`, atomically and only if
    /// nothing is there.
    ///
    /// # Errors
    ///
    /// `EEXIST` if anything is at `path`; the kernel's `linkat` errors.
    pub(crate) fn publish(mut self, fd: BorrowedFd<'_>, path: &ShmPath) -> Result<(), Errno> {
        match self.temp.take() {
            None => {
                if EMPTY_PATH_REFUSED.load(Ordering::Relaxed) {
                    return link_through_proc(fd, path);
                }
                match retry(|| rfs::linkat(fd, c"", CWD, path.as_c_str(), AtFlags::EMPTY_PATH)) {
                    // Without CAP_DAC_READ_SEARCH the kernel says ENOENT.
                    Err(Errno::NOENT) => {
                        EMPTY_PATH_REFUSED.store(true, Ordering::Relaxed);
                        link_through_proc(fd, path)
                    }
                    linked => linked,
                }
            }
            Some(temp) => {
                let linked = retry(|| {
                    rfs::linkat(CWD, temp.as_c_str(), CWD, path.as_c_str(), AtFlags::empty())
                });
                let _ = super::unlink(&temp);
                linked
            }
        }
    }
}

/// Whether `linkat(AT_EMPTY_PATH)` was refused in this process (it needs
/// `CAP_DAC_READ_SEARCH`): then only the `/proc` route is tried.
static EMPTY_PATH_REFUSED: AtomicBool = AtomicBool::new(false);

/// `linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, path, AT_SYMLINK_FOLLOW)`:
/// names the object `fd` refers to, for any process that can see its own
/// `/proc/self/fd`.
fn link_through_proc(fd: BorrowedFd<'_>, path: &ShmPath) -> Result<(), Errno> {
    let proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let flags = AtFlags::SYMLINK_FOLLOW;
    retry(|| rfs::linkat(CWD, proc.as_str(), CWD, path.as_c_str(), flags))
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(temp) = &self.temp {
            let _ = super::unlink(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Route 1's `/proc` link on its own (this machine may allow
    /// `AT_EMPTY_PATH`, which is tried first): an `O_TMPFILE` object gets its
    /// name, and `EEXIST` when the name is taken.
    #[test]
    fn proc_link_names_an_unnamed_object() {
        let name = format!("shmgate-unit-proc-{}", std::process::id());
        let path = ShmPath::new(&ShmName::new(name.as_bytes()).unwrap());
        let _ = super::super::unlink(&path);
        let flags = rfs::OFlags::TMPFILE | rfs::OFlags::RDWR | rfs::OFlags::CLOEXEC;
        let fd = rfs::open("/dev/shm", flags, rfs::Mode::from_raw_mode(0o600)).unwrap();
        super::super::ftruncate(fd.as_fd(), 8192).unwrap();
        link_through_proc(fd.as_fd(), &path).unwrap();
        let (_, st) = super::super::open_path(&path).unwrap();
        assert_eq!(st.len, 8192);
        assert_eq!(link_through_proc(fd.as_fd(), &path), Err(Errno::EXIST));
        super::super::unlink(&path).unwrap();
    }

    /// Route 2 on its own (this machine takes route 1): the temporary name
    /// is gone after publishing, and `EEXIST` leaves the existing object.
    #[test]
    fn temp_name_route_publishes_and_cleans_up() {
        let name = format!("shmgate-unit-create-{}", std::process::id());
        let path = ShmPath::new(&ShmName::new(name.as_bytes()).unwrap());
        let _ = super::super::unlink(&path);
        let (fd, pending) = create_temp_name(Mode::OWNER_RW).unwrap();
        let temp = pending.temp.clone().unwrap();
        assert!(super::super::open_path(&temp).is_ok());
        super::super::ftruncate(fd.as_fd(), 4096).unwrap();
        pending.publish(fd.as_fd(), &path).unwrap();
        assert_eq!(super::super::open_path(&temp).unwrap_err(), Errno::NOENT);
        let (_, st) = super::super::open_path(&path).unwrap();
        assert_eq!(st.len, 4096);

        let (fd2, pending) = create_temp_name(Mode::OWNER_RW).unwrap();
        let temp = pending.temp.clone().unwrap();
        assert_eq!(pending.publish(fd2.as_fd(), &path), Err(Errno::EXIST));
        assert_eq!(super::super::open_path(&temp).unwrap_err(), Errno::NOENT);
        let (fd3, pending) = create_temp_name(Mode::OWNER_RW).unwrap();
        let temp = pending.temp.clone().unwrap();
        drop((fd3, pending));
        assert_eq!(super::super::open_path(&temp).unwrap_err(), Errno::NOENT);
        super::super::unlink(&path).unwrap();
    }
}
