//! The kernel boundary: the only module that calls rustix, and the only one
//! with `unsafe` code (the memory mapping). Everything above it speaks
//! `shmgate-core` types and gets [`Errno`]s back.

use std::ffi::c_void;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};

use rustix::fs::{self as rfs, FileType};
use rustix::io::Errno as RErrno;
use shmgate_core::{Errno, Mode, OFlags, ShmPath};

mod create;
mod lock;
mod memfd;

pub(crate) use create::create_pending;
pub(crate) use lock::{
    creator_lock_held, hold_creator_lock, hold_holder_lock, holder_lock_held, open_elsewhere,
};
pub(crate) use memfd::{add_seals, get_seals, memfd_create, recv_fd, send_fd};

/// Converts rustix's errno to the core's (any positive `i32` fits a `u16`
/// on Linux; anything else would be a kernel bug and reads as `EIO`).
fn errno(e: RErrno) -> Errno {
    Errno::from_raw(u16::try_from(e.raw_os_error()).unwrap_or(Errno::IO.raw()))
}

/// Runs `f` again while it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> Result<T, Errno> {
    loop {
        match f() {
            Err(RErrno::INTR) => continue,
            other => return other.map_err(errno),
        }
    }
}

/// `open("/dev/shm/<name>", flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY |
/// O_NONBLOCK, mode)`, then `fstat` to refuse anything but a regular file,
/// then clear `O_NONBLOCK`.
///
/// The path is absolute and no descriptor of ours is involved (none is
/// cached between calls), so the caller gets the lowest free descriptor, as
/// POSIX requires, and closing or reusing descriptor numbers cannot
/// redirect the open elsewhere. `O_NOFOLLOW` covers the last component;
/// `/dev` and `/dev/shm` are followed like glibc does. They belong to root
/// (`/dev` is `0755 root`, `/dev/shm` is a root-owned sticky mount point),
/// so only root could make `/dev/shm` a symlink, and root can redirect any
/// open anyway; some systems legitimately link it to `/run/shm`.
///
/// `O_NOFOLLOW` makes a planted symlink (dangling or not) `ELOOP`, so
/// nothing outside `/dev/shm` is opened or created. `O_NONBLOCK` makes a
/// planted FIFO open at once instead of blocking (a `RDONLY` open of a FIFO
/// waits for a writer; `RDWR` would not, on Linux); the `fstat` then
/// refuses it. It also makes an object whose owner holds a lease on it
/// (`F_SETLEASE`) fail with `EAGAIN` after about 1.5 ms (the retries wait
/// out the momentary lease of `lifecycle::inspect`), where a blocking open waits
/// until the lease is given up or the lease-break time (45 s by default)
/// passes: so it stays for `RDWR` too, and with it the `fcntl` that clears
/// it (the `nonblocking_open_defuses_fifos_and_leases` hazard test).
/// `O_NOCTTY` keeps a planted terminal from becoming ours. A socket cannot
/// be opened at all (`ENXIO`); device nodes need `CAP_MKNOD` to be made in
/// `/dev/shm` (no hard link crosses into its tmpfs) and are refused by the
/// `fstat` after an open that `O_NONBLOCK` keeps from waiting.
///
/// With `CREATE | EXCL` the open succeeds only by creating a new regular
/// file (any existing entry, a symlink included, is `EEXIST`), so there is
/// nothing to check: no `O_NONBLOCK`, no `fstat`, no `fcntl`, one syscall
/// like glibc.
pub(crate) fn open(path: &ShmPath, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
    let created_new = flags.contains(OFlags::CREATE) && flags.contains(OFlags::EXCL);
    let mut oflags = rfs::OFlags::NOFOLLOW | rfs::OFlags::CLOEXEC | rfs::OFlags::NOCTTY;
    if !created_new {
        oflags |= rfs::OFlags::NONBLOCK;
    }
    oflags |= if flags.is_read_only() {
        rfs::OFlags::RDONLY
    } else {
        rfs::OFlags::RDWR
    };
    for (ours, theirs) in [
        (OFlags::CREATE, rfs::OFlags::CREATE),
        (OFlags::EXCL, rfs::OFlags::EXCL),
        (OFlags::TRUNC, rfs::OFlags::TRUNC),
    ] {
        if flags.contains(ours) {
            oflags |= theirs;
        }
    }
    let mode = rfs::Mode::from_raw_mode(mode.bits());
    let mut waits = 0;
    let fd = loop {
        match retry(|| rfs::open(path.as_c_str(), oflags, mode)) {
            // A lease held for a moment (`shmgate ls` and `rm --orphaned`
            // take one on an object nobody has open, and drop it at once)
            // is waited out, for about 1.5 ms at most.
            Err(Errno::AGAIN) if waits < LEASE_WAITS => {
                waits += 1;
                std::thread::sleep(std::time::Duration::from_micros(50 << waits));
            }
            // A directory is not a shared memory object.
            Err(Errno::ISDIR) => return Err(Errno::INVAL),
            other => break other?,
        }
    };
    if created_new {
        return Ok(fd);
    }
    let stat = rfs::fstat(&fd).map_err(errno)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(Errno::INVAL); // `fd` is closed on the way out.
    }
    // F_SETFL only changes O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME and
    // O_NONBLOCK, of which we set only O_NONBLOCK: clear it with one call.
    rfs::fcntl_setfl(&fd, rfs::OFlags::empty()).map_err(errno)?;
    Ok(fd)
}

/// How many times [`open`] retries an `EAGAIN` (a lease on the object,
/// which `O_NONBLOCK` refuses instead of waiting for), sleeping 100, 200,
/// 400 and 800 µs in between: enough for the lease of an inspection
/// (`lifecycle::inspect`), far below a real lease-break time (45 s).
const LEASE_WAITS: u32 = 4;

/// `unlink("/dev/shm/<name>")`: no descriptor involved, as for [`open`]. `EPERM` becomes `EACCES` (what POSIX
/// specifies for `shm_unlink`; Linux says `EPERM` in a sticky directory) and
/// `EISDIR` becomes `EINVAL` (a directory is not a shared memory object).
pub(crate) fn unlink(path: &ShmPath) -> Result<(), Errno> {
    retry(|| rfs::unlink(path.as_c_str())).map_err(|e| match e {
        Errno::PERM => Errno::ACCES,
        Errno::ISDIR => Errno::INVAL,
        e => e,
    })
}

/// The identity and size of an open object, from `fstat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    pub(crate) len: u64,
}

fn to_stat(st: &rfs::Stat) -> Stat {
    Stat {
        dev: st.st_dev,
        ino: st.st_ino,
        // A regular file's size is never negative.
        len: u64::try_from(st.st_size).unwrap_or(0),
    }
}

/// `fstat(fd)`.
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> Result<Stat, Errno> {
    rfs::fstat(fd).map(|st| to_stat(&st)).map_err(errno)
}

/// `open("/dev/shm/<name>", O_PATH | O_NOFOLLOW | O_CLOEXEC)`, then
/// `fstat`: what the name refers to now, without opening the object for
/// I/O (no read permission needed, a FIFO does not block) and with the
/// inode pinned while the descriptor is open, so an identity read from it
/// cannot belong to an inode freed and reused in between.
pub(crate) fn open_path(path: &ShmPath) -> Result<(OwnedFd, Stat), Errno> {
    let flags = rfs::OFlags::PATH | rfs::OFlags::NOFOLLOW | rfs::OFlags::CLOEXEC;
    let fd = retry(|| rfs::open(path.as_c_str(), flags, rfs::Mode::empty()))?;
    let st = rfs::fstat(&fd).map_err(errno)?;
    let regular = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
    let stat = to_stat(&st);
    if regular {
        Ok((fd, stat))
    } else {
        Err(Errno::INVAL)
    }
}

/// `ftruncate(fd, len)`.
pub(crate) fn ftruncate(fd: BorrowedFd<'_>, len: u64) -> Result<(), Errno> {
    retry(|| rfs::ftruncate(fd, len))
}

/// `pread(fd, buf, offset)`.
pub(crate) fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
    retry(|| rustix::io::pread(fd, &mut *buf, offset))
}

/// `pwrite(fd, buf, offset)`.
pub(crate) fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> Result<usize, Errno> {
    retry(|| rustix::io::pwrite(fd, buf, offset))
}

/// A `MAP_SHARED` mapping of part of a segment, unmapped on drop; made by
/// [`window::guarded`], which registers it with the signal handler.
///
/// The memory may be written at any time by another process, so it is
/// never handed out as `&[u8]`: only copies (`copy_out`, `copy_in`),
/// atomics and raw pointers.
#[derive(Debug)]
pub(crate) struct RawMapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is process-wide memory that no Rust reference aliases
// (only copies and atomics touch it), so moving the owner to another thread
// is sound.
#[allow(unsafe_code)]
unsafe impl Send for RawMapping {}
// SAFETY: every shared-reference method either copies with a bounds check
// (racing writers give torn data, which the docs state, never a Rust
// reference to non-atomic shared bytes) or hands out atomics.
#[allow(unsafe_code)]
unsafe impl Sync for RawMapping {}

impl RawMapping {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_writable(&self) -> bool {
        self.writable
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// `offset..offset + n` if it lies inside the mapping.
    fn check(&self, offset: usize, n: usize) -> Result<(), Errno> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Errno::INVAL),
        }
    }

    /// Copies `dst.len()` bytes at `offset` out of the mapping.
    #[allow(unsafe_code)]
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) -> Result<(), Errno> {
        self.check(offset, dst.len())?;
        // SAFETY: `offset + dst.len() <= self.len` (checked), so the source
        // lies inside our live mapping; `dst` is a Rust buffer, which cannot
        // overlap a mapping we own and never lend out as a reference.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    /// Copies `src` into the mapping at `offset`. `EACCES` if the mapping
    /// is read-only (the store would fault).
    #[allow(unsafe_code)]
    pub(crate) fn copy_in(&self, offset: usize, src: &[u8]) -> Result<(), Errno> {
        if !self.writable {
            return Err(Errno::ACCES);
        }
        self.check(offset, src.len())?;
        // SAFETY: in bounds (checked) of a mapping that is PROT_WRITE
        // (checked); `src` is a Rust buffer and cannot overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len())
        };
        Ok(())
    }

    /// The `u32` at `offset` as an atomic. `EINVAL` if out of bounds or not
    /// 4-byte aligned.
    #[allow(unsafe_code)]
    pub(crate) fn atomic_u32(&self, offset: usize) -> Result<&AtomicU32, Errno> {
        self.check(offset, 4)?;
        // SAFETY: in bounds (checked above).
        let p = unsafe { self.ptr.as_ptr().add(offset) };
        if !p.cast::<AtomicU32>().is_aligned() {
            return Err(Errno::INVAL);
        }
        // SAFETY: `p` is in bounds, aligned (checked) and lives as long as
        // `&self` (unmapped only on drop); other processes may access it
        // concurrently, which atomics allow. Stores to a read-only mapping
        // fault, which the public API documents.
        Ok(unsafe { AtomicU32::from_ptr(p.cast()) })
    }

    /// The `u64` at `offset` as an atomic. `EINVAL` if out of bounds or not
    /// 8-byte aligned.
    #[allow(unsafe_code)]
    pub(crate) fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64, Errno> {
        self.check(offset, 8)?;
        // SAFETY: in bounds (checked above).
        let p = unsafe { self.ptr.as_ptr().add(offset) };
        if !p.cast::<AtomicU64>().is_aligned() {
            return Err(Errno::INVAL);
        }
        // SAFETY: as in `atomic_u32`, with 8 bytes and 8-byte alignment.
        Ok(unsafe { AtomicU64::from_ptr(p.cast()) })
    }
}

impl Drop for RawMapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no
        // reference into the mapping outlives `self` (atomics borrow it).
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// The system page size, for mapping offsets.
/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // CLOCK_MONOTONIC is never negative.
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

pub(crate) fn page_size() -> usize {
    rustix::param::page_size()
}

/// `futex(FUTEX_WAIT)` on a shared (not process-private) word, so waiters
/// in other processes that map the same segment are woken too. `Ok(true)`
/// when woken (or spuriously), `Ok(false)` on timeout; `EAGAIN` if the word
/// did not hold `expected`.
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: std::time::Duration,
) -> Result<bool, Errno> {
    use rustix::thread::futex;
    let ts = rustix::time::Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match futex::wait(word, futex::Flags::empty(), expected, Some(&ts)) {
        Ok(()) | Err(RErrno::INTR) => Ok(true),
        Err(RErrno::TIMEDOUT) => Ok(false),
        Err(e) => Err(errno(e)),
    }
}

/// `futex(FUTEX_WAKE)` on a shared word: wakes up to `count` waiters in any
/// process; returns how many.
pub(crate) fn futex_wake(word: &AtomicU32, count: u32) -> Result<usize, Errno> {
    use rustix::thread::futex;
    futex::wake(word, futex::Flags::empty(), count).map_err(errno)
}

pub(crate) mod fork;
pub(crate) mod futex;
pub(crate) mod uring;
pub(crate) mod window;

/// `fstat` and `fcntl(F_GETFL)`: whether `fd` is a regular file, and
/// whether it is open for writing.
pub(crate) fn regular_and_writable(fd: BorrowedFd<'_>) -> Result<(bool, bool), Errno> {
    let st = rfs::fstat(fd).map_err(errno)?;
    let regular = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
    let flags = rfs::fcntl_getfl(fd).map_err(errno)?;
    let access = flags & rfs::OFlags::RWMODE;
    Ok((
        regular,
        access == rfs::OFlags::RDWR || access == rfs::OFlags::WRONLY,
    ))
}
