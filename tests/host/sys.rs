//! The only `unsafe` code of the host tests: thin wrappers over the libc
//! calls the tests use to look at what the kernel and glibc see (`fcntl`,
//! `geteuid`, `mkfifo`, glibc's `shm_open`/`shm_unlink`, `ftruncate`,
//! `mmap`). Each returns the errno as a [`Errno`] so the tests can compare it
//! with shmgate's.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;

use shmgate_core::Errno;

/// The calling thread's `errno`.
fn last_errno() -> Errno {
    let raw = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    Errno::from_raw(u16::try_from(raw).unwrap_or(u16::MAX))
}

fn c_string(bytes: &[u8]) -> CString {
    CString::new(bytes).expect("test names and paths hold no NUL")
}

/// `geteuid()`.
#[allow(unsafe_code)]
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// `fcntl(fd, F_GETFD)`: the descriptor flags (`FD_CLOEXEC`).
#[allow(unsafe_code)]
pub(crate) fn fd_flags(fd: BorrowedFd<'_>) -> libc::c_int {
    // SAFETY: F_GETFD only reads the flags of a descriptor that `fd` keeps
    // open for the duration of the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    assert!(r >= 0, "fcntl(F_GETFD): {}", last_errno());
    r
}

/// `fcntl(fd, F_GETFL)`: the access mode and status flags (`O_NONBLOCK`).
#[allow(unsafe_code)]
pub(crate) fn status_flags(fd: BorrowedFd<'_>) -> libc::c_int {
    // SAFETY: F_GETFL only reads the flags of the open file description of
    // a descriptor that `fd` keeps open for the duration of the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    assert!(r >= 0, "fcntl(F_GETFL): {}", last_errno());
    r
}

/// `mkfifo(path, mode)`.
#[allow(unsafe_code)]
pub(crate) fn mkfifo(path: &Path, mode: libc::mode_t) -> Result<(), Errno> {
    let c = c_string(path.as_os_str().as_bytes());
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let r = unsafe { libc::mkfifo(c.as_ptr(), mode) };
    if r == 0 { Ok(()) } else { Err(last_errno()) }
}

/// glibc's `shm_open(name, oflag, mode)`.
#[allow(unsafe_code)]
pub(crate) fn shm_open(
    name: &str,
    oflag: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, Errno> {
    let c = c_string(name.as_bytes());
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let fd = unsafe { libc::shm_open(c.as_ptr(), oflag, mode) };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: `fd` was just returned by shm_open: it is open and nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// glibc's `shm_unlink(name)`.
#[allow(unsafe_code)]
pub(crate) fn shm_unlink(name: &str) -> Result<(), Errno> {
    let c = c_string(name.as_bytes());
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let r = unsafe { libc::shm_unlink(c.as_ptr()) };
    if r == 0 { Ok(()) } else { Err(last_errno()) }
}

/// `ftruncate(fd, len)`.
#[allow(unsafe_code)]
pub(crate) fn ftruncate(fd: BorrowedFd<'_>, len: libc::off_t) -> Result<(), Errno> {
    // SAFETY: `fd` keeps the descriptor open for the call; no memory is
    // passed.
    let r = unsafe { libc::ftruncate(fd.as_raw_fd(), len) };
    if r == 0 { Ok(()) } else { Err(last_errno()) }
}

/// A `MAP_SHARED` mapping made directly with libc's `mmap`, unmapped on
/// drop. Like shmgate's own `Mapping`, it only copies in and out, never
/// lends the shared bytes out as a slice.
pub(crate) struct Map {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

impl Map {
    /// `mmap(NULL, len, PROT_READ[|PROT_WRITE], MAP_SHARED, fd, 0)`.
    #[allow(unsafe_code)]
    pub(crate) fn new(fd: BorrowedFd<'_>, len: usize, writable: bool) -> Result<Map, Errno> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a null address hint without MAP_FIXED makes the kernel
        // pick fresh address space, so no existing memory is replaced; `fd`
        // is open for the call.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_errno());
        }
        let ptr = NonNull::new(p.cast::<u8>()).expect("mmap never returns NULL without MAP_FIXED");
        Ok(Map { ptr, len, writable })
    }

    fn check(&self, offset: usize, n: usize) {
        assert!(
            offset.checked_add(n).is_some_and(|end| end <= self.len),
            "{offset}+{n} is outside a {}-byte mapping",
            self.len
        );
    }

    /// Copies `buf.len()` bytes at `offset` out of the mapping.
    #[allow(unsafe_code)]
    pub(crate) fn read(&self, offset: usize, buf: &mut [u8]) {
        self.check(offset, buf.len());
        // SAFETY: the source is inside our live mapping (checked above) and
        // `buf` is a Rust buffer, which cannot overlap it. The tests order
        // writers and readers by process exit or program order.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
    }

    /// Copies `data` into the mapping at `offset`.
    #[allow(unsafe_code)]
    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        assert!(self.writable, "write to a read-only mapping would fault");
        self.check(offset, data.len());
        // SAFETY: the destination is inside our live, writable mapping
        // (both checked above); `data` is a Rust buffer and cannot overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(offset), data.len())
        };
    }
}

impl Drop for Map {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no
        // reference into the mapping outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// `fcntl(fd, F_SETLEASE, kind)` (`F_RDLCK`, `F_WRLCK` or `F_UNLCK`).
#[allow(unsafe_code)]
pub(crate) fn set_lease(fd: BorrowedFd<'_>, kind: libc::c_int) -> Result<(), Errno> {
    // SAFETY: F_SETLEASE takes an integer and acts on the open file
    // description of a descriptor that `fd` keeps open during the call.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETLEASE, kind) };
    if r == 0 { Ok(()) } else { Err(last_errno()) }
}

/// `signal(SIGIO, SIG_IGN)`: a lease break notifies the holder with `SIGIO`,
/// whose default action would end the test process.
#[allow(unsafe_code)]
pub(crate) fn ignore_sigio() {
    // SAFETY: ignoring a signal installs no handler code; nothing in the
    // tests relies on SIGIO.
    let old = unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    assert_ne!(old, libc::SIG_ERR, "signal(SIGIO): {}", last_errno());
}

/// `open(path, flags)` with libc, no flag added: how the kernel treats a
/// plain open, for comparison with shmgate's.
#[allow(unsafe_code)]
pub(crate) fn raw_open(path: &Path, flags: libc::c_int) -> Result<OwnedFd, Errno> {
    let c = c_string(path.as_os_str().as_bytes());
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: `fd` was just returned by open: it is open and nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
