//! An open shared memory object and the ways to open one.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use shmgate_core::{Errno, Mode, OFlags, ShmName, ShmPath};

use crate::mapping::Mapping;
use crate::sys;
use crate::sys::window::guarded::GuardedMapping;
use crate::{Error, Op};

/// Validates `name` with the core's rules and builds its path. Every entry
/// point that takes a name goes through here, so there is one copy of the
/// rules.
pub(crate) fn path_of(name: &[u8]) -> Result<ShmPath, Errno> {
    Ok(ShmPath::new(&ShmName::new(name)?))
}

/// `shm_open(name, flags, mode)`: opens or creates `/dev/shm/<name>`.
///
/// Unlike glibc's `shm_open`, a symlink, FIFO, directory or device under
/// the name is refused (`ELOOP` or `EINVAL`) without following or blocking
/// on it, and the name must be one path component (see
/// [`shmgate_core::name`]). The descriptor is close-on-exec; on create, the
/// process umask applies to `mode`.
///
/// # Errors
///
/// `EINVAL` for a bad name, bad flags or something that is not a regular
/// file; `ENAMETOOLONG`; `ELOOP` for a symlink; and the kernel's own errors
/// (`ENOENT`, `EEXIST`, `EACCES`, `EMFILE`, …).
///
/// # Examples
///
/// ```
/// use shmgate_host::{Mode, OFlags};
/// # let name = format!("/shmgate-doc-open-{}", std::process::id());
/// let seg = shmgate_host::open(&name, OFlags::RDWR | OFlags::CREATE | OFlags::EXCL, Mode::OWNER_RW)?;
/// assert_eq!(seg.len()?, 0);
/// shmgate_host::unlink(&name)?;
/// # Ok::<(), shmgate_host::Error>(())
/// ```
///
/// # References
///
/// - [`shm_open(3)`](https://man7.org/linux/man-pages/man3/shm_open.3.html)
/// - [`openat(2)`](https://man7.org/linux/man-pages/man2/openat.2.html)
#[doc(alias = "shm_open")]
pub fn open(name: impl AsRef<[u8]>, flags: OFlags, mode: Mode) -> Result<Segment, Error> {
    open_shared(Arc::from(name.as_ref()), flags, mode)
}

/// [`open`] for a name already held in an `Arc` (the wasm host resolves
/// names into one, and the segment keeps it for its errors).
pub(crate) fn open_shared(name: Arc<[u8]>, flags: OFlags, mode: Mode) -> Result<Segment, Error> {
    let opened = flags
        .validate()
        .and_then(|flags| sys::open(&path_of(&name)?, flags, mode));
    match opened {
        Ok(fd) => Ok(Segment {
            fd,
            name,
            writable: !flags.is_read_only(),
        }),
        Err(errno) => Err(Error::new(Op::Open, &name, errno)),
    }
}

/// `shm_unlink(name)`: removes the name `/dev/shm/<name>`. Processes that
/// have the object open or mapped keep it until they close it.
///
/// # Errors
///
/// `EINVAL` or `ENAMETOOLONG` for a bad name, `ENOENT`, and `EACCES` where
/// the kernel says `EPERM` (as POSIX specifies for `shm_unlink`).
///
/// # References
///
/// - [`shm_unlink(3)`](https://man7.org/linux/man-pages/man3/shm_unlink.3.html)
/// - [`unlinkat(2)`](https://man7.org/linux/man-pages/man2/unlinkat.2.html)
#[doc(alias = "shm_unlink")]
pub fn unlink(name: impl AsRef<[u8]>) -> Result<(), Error> {
    let name = name.as_ref();
    path_of(name)
        .and_then(|path| sys::unlink(&path))
        .map_err(|errno| Error::new(Op::Unlink, &Arc::from(name), errno))
}

/// An open POSIX shared memory object. Closes its descriptor on drop.
///
/// [`read_at`](Segment::read_at) and [`write_at`](Segment::write_at) copy
/// with `pread`/`pwrite`, so a segment that another process shrinks gives
/// a short read, never `SIGBUS`. For memory-speed access, [`map`](Segment::map) it.
#[derive(Debug)]
pub struct Segment {
    fd: OwnedFd,
    /// The name as the caller passed it, for errors.
    name: Arc<[u8]>,
    writable: bool,
}

impl Segment {
    /// Creates a new segment of `size` bytes, mode `0o600` (less the umask),
    /// failing with `EEXIST` if the name exists. If sizing fails the new
    /// name is removed again.
    ///
    /// # Errors
    ///
    /// As [`open`], and as [`Segment::set_len`].
    pub fn create_new(name: impl AsRef<[u8]>, size: u64) -> Result<Segment, Error> {
        OpenOptions::new().create_new(true).size(size).open(name)
    }

    /// Opens an existing segment for reading only.
    ///
    /// # Errors
    ///
    /// As [`open`].
    pub fn open_read_only(name: impl AsRef<[u8]>) -> Result<Segment, Error> {
        OpenOptions::new().read_write(false).open(name)
    }

    /// Opens an existing segment for reading and writing.
    ///
    /// # Errors
    ///
    /// As [`open`].
    pub fn open_read_write(name: impl AsRef<[u8]>) -> Result<Segment, Error> {
        OpenOptions::new().open(name)
    }

    /// The name exactly as it was passed to open.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// Whether the segment was opened for writing.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    fn err(&self, op: Op) -> impl FnOnce(Errno) -> Error + '_ {
        move |errno| Error::new(op, &self.name, errno)
    }

    /// `fstat`: the current size in bytes (another process may change it).
    ///
    /// # Errors
    ///
    /// The kernel's `fstat` errors (practically none).
    #[doc(alias = "fstat")]
    #[allow(clippy::len_without_is_empty)] // the size is a syscall away, not a field
    pub fn len(&self) -> Result<u64, Error> {
        sys::fstat(self.fd.as_fd())
            .map(|st| st.len)
            .map_err(self.err(Op::Len))
    }

    /// `ftruncate`: sets the size; new bytes read as zero.
    ///
    /// Shrinking a segment that any process has mapped makes that process's
    /// next touch of the cut-off pages raise `SIGBUS`; see [`Mapping`].
    ///
    /// # Errors
    ///
    /// `EINVAL` if the segment is read-only (the kernel's answer), `EFBIG`,
    /// `ENOSPC`.
    #[doc(alias = "ftruncate")]
    pub fn set_len(&self, len: u64) -> Result<(), Error> {
        sys::ftruncate(self.fd.as_fd(), len).map_err(self.err(Op::SetLen))
    }

    /// `pread`: copies bytes at `offset` into `buf`; returns how many. Short
    /// (or 0) at the end of the segment.
    ///
    /// # Errors
    ///
    /// The kernel's `pread` errors; `EINVAL` if `offset` exceeds `i64::MAX`.
    #[doc(alias = "pread")]
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Error> {
        sys::pread(self.fd.as_fd(), buf, offset).map_err(self.err(Op::Read))
    }

    /// `pwrite`, bounded by the segment: copies `buf` to `offset` and
    /// returns how many bytes were written, short (or 0) at the end of the
    /// segment. Unlike a plain `pwrite`, it does not grow the segment past
    /// the size it has when the call starts, so a size limit enforced on
    /// [`set_len`](Segment::set_len) holds. (If another process shrinks the
    /// segment between this call's `fstat` and its `pwrite`, the write can
    /// grow it back, never beyond that earlier size.)
    ///
    /// # Errors
    ///
    /// `EBADF` if the segment is read-only, and the kernel's `fstat` and
    /// `pwrite` errors.
    #[doc(alias = "pwrite")]
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize, Error> {
        let n = self
            .write_room(offset, buf.len())
            .map_err(self.err(Op::Write))?;
        if n == 0 {
            // Nothing fits; still refuse a write to a read-only segment.
            return if self.writable {
                Ok(0)
            } else {
                Err(self.err(Op::Write)(Errno::BADF))
            };
        }
        sys::pwrite(self.fd.as_fd(), &buf[..n], offset).map_err(self.err(Op::Write))
    }

    /// How many of `want` bytes a write at `offset` may write: what fits
    /// below the current size (`fstat`), so writes never grow the segment.
    pub(crate) fn write_room(&self, offset: u64, want: usize) -> Result<usize, Errno> {
        let len = sys::fstat(self.fd.as_fd())?.len;
        let room = usize::try_from(len.saturating_sub(offset)).unwrap_or(usize::MAX);
        Ok(want.min(room))
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Segment::read_at); `EOVERFLOW` if the segment ends
    /// first (`buf` then holds what was read).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        let read_at = |buf: &mut [u8], off| self.read_at(buf, off);
        shmgate_core::io::read_exact_at(buf, offset, read_at, self.err(Op::Read))
    }

    /// Writes all of `buf` at `offset`.
    ///
    /// # Errors
    ///
    /// As [`write_at`](Segment::write_at); `EFBIG` if the segment ends
    /// first (what fitted was written).
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), Error> {
        let write_at = |buf: &[u8], off| self.write_at(buf, off);
        shmgate_core::io::write_all_at(buf, offset, write_at, self.err(Op::Write))
    }

    /// `mmap`: maps the whole segment, shared, readable, and writable if
    /// the segment is. See [`Mapping`] for how to use it safely.
    ///
    /// # Errors
    ///
    /// `EINVAL` for an empty segment; the kernel's `mmap` errors.
    #[doc(alias = "mmap")]
    pub fn map(&self) -> Result<Mapping, Error> {
        let len = self
            .len()
            .map_err(|e| Error::new(Op::Map, &self.name, e.errno()))?;
        self.map_range(0, len)
    }

    /// `mmap`: maps `len` bytes at `offset`, which must be a multiple of the
    /// page size, and must lie within the segment's current size (touching
    /// pages past the end would raise `SIGBUS`).
    ///
    /// # Errors
    ///
    /// `EINVAL` for an unaligned offset or zero length, `ENXIO` for a range
    /// past the end of the segment, `ENOMEM`, and the kernel's `mmap` errors.
    #[doc(alias = "mmap")]
    pub fn map_range(&self, offset: u64, len: u64) -> Result<Mapping, Error> {
        let fail = self.err(Op::Map);
        if len == 0 || !offset.is_multiple_of(sys::page_size() as u64) {
            return Err(fail(Errno::INVAL));
        }
        let size = sys::fstat(self.fd.as_fd()).map_err(self.err(Op::Map))?.len;
        match offset.checked_add(len) {
            Some(end) if end <= size => {}
            _ => return Err(fail(Errno::NXIO)),
        }
        let len = usize::try_from(len)
            .map_err(|_| Errno::NOMEM)
            .map_err(self.err(Op::Map))?;
        let guarded =
            GuardedMapping::new(self.fd.as_fd(), offset, len, self.writable).map_err(fail)?;
        Ok(Mapping::new(guarded, Arc::clone(&self.name)))
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Segment> for OwnedFd {
    fn from(seg: Segment) -> OwnedFd {
        seg.fd
    }
}

/// Options for opening a segment, like [`std::fs::OpenOptions`]. The
/// default opens an existing segment read-write.
///
/// ```
/// use shmgate_host::{Mode, OpenOptions};
/// # let name = format!("/shmgate-doc-opts-{}", std::process::id());
/// let seg = OpenOptions::new()
///     .create_new(true)
///     .mode(Mode::OWNER_RW)
///     .size(4096)
///     .open_owned(&name)?; // unlinked when `seg` drops
/// assert_eq!(seg.len()?, 4096);
/// # Ok::<(), shmgate_host::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct OpenOptions {
    read_write: bool,
    create: bool,
    create_new: bool,
    truncate: bool,
    mode: Mode,
    size: Option<u64>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions::new()
    }
}

impl OpenOptions {
    /// Read-write, no create, mode `0o600` for creates, no sizing.
    pub fn new() -> OpenOptions {
        OpenOptions {
            read_write: true,
            create: false,
            create_new: false,
            truncate: false,
            mode: Mode::OWNER_RW,
            size: None,
        }
    }

    /// Read-write (`RDWR`, the default) or read-only.
    pub fn read_write(&mut self, on: bool) -> &mut OpenOptions {
        self.read_write = on;
        self
    }

    /// Create the segment if it does not exist (`CREATE`).
    pub fn create(&mut self, on: bool) -> &mut OpenOptions {
        self.create = on;
        self
    }

    /// Create the segment, failing with `EEXIST` if it exists
    /// (`CREATE | EXCL`).
    pub fn create_new(&mut self, on: bool) -> &mut OpenOptions {
        self.create_new = on;
        self
    }

    /// Truncate to length 0 on open (`TRUNC`; needs read-write).
    pub fn truncate(&mut self, on: bool) -> &mut OpenOptions {
        self.truncate = on;
        self
    }

    /// The mode for a segment this open creates (default `0o600`); the
    /// process umask applies.
    pub fn mode(&mut self, mode: Mode) -> &mut OpenOptions {
        self.mode = mode;
        self
    }

    /// Set the size with `ftruncate` right after opening.
    pub fn size(&mut self, size: u64) -> &mut OpenOptions {
        self.size = Some(size);
        self
    }

    /// The portable flags these options stand for.
    pub fn flags(&self) -> OFlags {
        OFlags::from_options(self.read_write, self.create, self.create_new, self.truncate)
    }

    /// Opens `name` with these options. If a size is set and sizing fails,
    /// a segment this call created exclusively is unlinked again.
    ///
    /// # Errors
    ///
    /// As [`open`] and [`Segment::set_len`].
    pub fn open(&self, name: impl AsRef<[u8]>) -> Result<Segment, Error> {
        let name = name.as_ref();
        let seg = open(name, self.flags(), self.mode)?;
        if let Some(size) = self.size
            && let Err(e) = seg.set_len(size)
        {
            if self.create_new {
                drop(OwnedSegment { seg: Some(seg) });
            }
            return Err(e);
        }
        Ok(seg)
    }

    /// Creates `name` exclusively (whatever `create_new` says) and returns
    /// an [`OwnedSegment`], which unlinks the name when dropped.
    ///
    /// # Errors
    ///
    /// As [`OpenOptions::open`].
    pub fn open_owned(&self, name: impl AsRef<[u8]>) -> Result<OwnedSegment, Error> {
        let mut opts = self.clone();
        opts.create_new(true);
        Ok(OwnedSegment {
            seg: Some(opts.open(name)?),
        })
    }
}

/// A segment this program created for itself: derefs to [`Segment`] and
/// unlinks its name on drop.
///
/// The unlink happens only if the name still refers to this very object
/// (same device and inode), so a segment someone else created under the
/// same name after ours was removed is left alone.
#[derive(Debug)]
pub struct OwnedSegment {
    /// Always `Some` until `drop` or `into_segment` takes it.
    seg: Option<Segment>,
}

impl OwnedSegment {
    /// Keeps the name: returns the segment without unlinking it.
    pub fn into_segment(mut self) -> Segment {
        match self.seg.take() {
            Some(seg) => seg,
            None => unreachable!("an OwnedSegment always holds its segment until dropped"),
        }
    }
}

impl std::ops::Deref for OwnedSegment {
    type Target = Segment;
    fn deref(&self) -> &Segment {
        match &self.seg {
            Some(seg) => seg,
            None => unreachable!("an OwnedSegment always holds its segment until dropped"),
        }
    }
}

impl Drop for OwnedSegment {
    fn drop(&mut self) {
        if let Some(seg) = self.seg.take()
            && let Ok(identity) = seg.identity()
        {
            unlink_if_same(&seg.name, identity);
        }
    }
}

/// Which object a name or descriptor refers to: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
}

impl Segment {
    /// The device and inode of the open object.
    pub(crate) fn identity(&self) -> Result<Identity, Errno> {
        sys::fstat(self.fd()).map(|st| Identity {
            dev: st.dev,
            ino: st.ino,
        })
    }
}

/// Unlinks `name` only if it still refers to the object `identity` names,
/// so that cleanup never removes a segment someone else created under the
/// same name after ours was removed. Errors are ignored: the name is then
/// either gone already or not ours to remove.
pub(crate) fn unlink_if_same(name: &[u8], identity: Identity) {
    let Ok(path) = path_of(name) else { return };
    if let Ok(current) = sys::stat_name(&path)
        && (current.dev, current.ino) == (identity.dev, identity.ino)
    {
        let _ = sys::unlink(&path);
    }
}
