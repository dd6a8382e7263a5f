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
//!    `/dev/shm/.shmgate-new-<32 hex digits from getrandom>` (`CREATE |
//!    EXCL`) with mode `0`, sized and filled, `fchmod`ed to its final mode
//!    (the requested mode less the umask, read from a probe object created
//!    with the requested mode and removed at once) just before it is
//!    `linkat`ed to its name (`EEXIST` likewise) and the temporary name
//!    unlinked. A taken temporary name costs a new random one, at most
//!    [`TEMP_ATTEMPTS`] times, then `EAGAIN`.
//!
//! Route 1 is invisible to everyone until the name appears. Route 2 is
//! not invisible: the temporary name shows in a listing of `/dev/shm`. But
//! it cannot be guessed ahead, and with mode `0` no user but root (and
//! processes with `CAP_DAC_OVERRIDE`) can open the half-made object during
//! the initialisation; the owner's own other processes cannot either. A
//! crash in between leaves the temporary name, which `shmgate rm
//! --orphaned` run as root recognises: its creator lock died with the
//! creator (without root, its mode `0` keeps the lock from being tested,
//! and it is reported as unknown).
//!
//! iceoryx2's alternative, creating the real name with mode `0` and
//! `fchmod`ing it when ready, publishes the name early: other users get
//! `EACCES` instead of `ENOENT`, root opens the half-made object anyway,
//! and `fchmod` ignores the umask, which a process cannot read without
//! racing its own threads (hence the probe object here).

#[cfg(test)]
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use rustix::fs::{self as rfs, AtFlags, CWD};
use rustix::rand::GetRandomFlags;
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
    /// The mode route 2 gives the object right before `linkat` (it is
    /// created with mode `0`).
    final_mode: u32,
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
                return Ok((
                    fd,
                    Pending {
                        temp: None,
                        final_mode: 0,
                    },
                ));
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

/// How many random temporary names route 2 tries before giving up with
/// `EAGAIN`. Each is 128 random bits: a taken one means that someone
/// planted names (it cannot happen by chance), and eight in a row cannot
/// be a coincidence either.
pub(crate) const TEMP_ATTEMPTS: u32 = 8;

/// A fresh `/dev/shm/.shmgate-new-<32 hex digits>`, from `getrandom`.
fn random_temp_path() -> Result<ShmPath, Errno> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        let n = retry(|| rustix::rand::getrandom(&mut bytes[filled..], GetRandomFlags::empty()))?;
        filled += n;
    }
    let mut name = String::from(".shmgate-new-");
    for b in bytes {
        name.push_str(&format!("{b:02x}"));
    }
    Ok(ShmPath::new(&ShmName::new(name.as_bytes())?))
}

/// `open(path, RDWR | CREATE | EXCL, mode)` under a new random temporary
/// name for each of [`TEMP_ATTEMPTS`] tries that finds its name taken.
fn create_random(flags: OFlags, mode: Mode) -> Result<(OwnedFd, ShmPath), Errno> {
    for _ in 0..TEMP_ATTEMPTS {
        let path = random_temp_path()?;
        match super::open(&path, flags, mode) {
            Ok(fd) => return Ok((fd, path)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Errno::AGAIN)
}

/// The permission bits an object created with `mode` gets (`mode` less the
/// umask, or what a default ACL on `/dev/shm` makes of it): a probe object
/// is created with `mode`, `fstat`ed and removed. Reading the umask with
/// `umask(2)` would change it for the other threads for a moment.
fn effective_mode(mode: Mode) -> Result<u32, Errno> {
    let flags = OFlags::RDONLY | OFlags::CREATE | OFlags::EXCL;
    let (probe, path) = create_random(flags, mode)?;
    let stat = rfs::fstat(&probe).map_err(super::errno);
    let _ = super::unlink(&path);
    Ok(stat?.st_mode & Mode::MAX)
}

/// Route 2: `open("/dev/shm/.shmgate-new-<random>", RDWR | CREATE | EXCL,
/// 0)`; its final mode is set by [`Pending::publish`].
fn create_temp_name(mode: Mode) -> Result<(OwnedFd, Pending), Errno> {
    let final_mode = effective_mode(mode)?;
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
    let (fd, path) = create_random(flags, Mode::from_bits(0)?)?;
    Ok((
        fd,
        Pending {
            temp: Some(path),
            final_mode,
        },
    ))
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
                // Until now nobody but root could open it; from here the
                // finished object has its final mode, then its name.
                let mode = rfs::Mode::from_raw_mode(self.final_mode);
                let linked = retry(|| rfs::fchmod(fd, mode)).and_then(|()| {
                    retry(|| {
                        rfs::linkat(CWD, temp.as_c_str(), CWD, path.as_c_str(), AtFlags::empty())
                    })
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
        let temp_name = temp.as_c_str().to_bytes();
        assert!(temp_name.starts_with(b"/dev/shm/.shmgate-new-"));
        assert_eq!(temp_name.len(), "/dev/shm/.shmgate-new-".len() + 32);
        assert!(super::super::open_path(&temp).is_ok());
        // Nobody but root can open it while it is being made.
        assert_eq!(rfs::fstat(&fd).unwrap().st_mode & 0o7777, 0);
        super::super::ftruncate(fd.as_fd(), 4096).unwrap();
        pending.publish(fd.as_fd(), &path).unwrap();
        assert_eq!(rfs::fstat(&fd).unwrap().st_mode & 0o077, 0);
        assert_eq!(rfs::fstat(&fd).unwrap().st_mode & 0o600, 0o600);
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
