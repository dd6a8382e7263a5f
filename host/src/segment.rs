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
/// process umask applies to `mode`. No descriptor is kept between calls, so
/// the result is the lowest free descriptor, as POSIX specifies.
///
/// This is the exact `shm_open` equivalent: one `open` (plus an `fstat` and
/// an `fcntl` unless it creates with `EXCL`), nothing more. In particular it
/// takes no creator lock and no holder lock (see
/// [`lifecycle`](crate::lifecycle)), so a segment it creates looks orphaned
/// once nobody has it open or mapped, and a process that holds it through
/// this open is seen only in `/proc` (not from another PID namespace);
/// create and open through [`OpenOptions`] (or [`Segment::create_new`]) to
/// get them.
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
    open_unlocked(Arc::from(name.as_ref()), flags, mode)
}

/// [`open`], taking no creator lock.
fn open_unlocked(name: Arc<[u8]>, flags: OFlags, mode: Mode) -> Result<Segment, Error> {
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

/// [`open`] for a name already held in an `Arc` (the wasm host resolves
/// names into one, and the segment keeps it for its errors).
///
/// A create with `CREATE | EXCL` (the object is certainly ours) takes the
/// creator lock (see [`crate::lifecycle`]) before returning; if that fails,
/// the new name is removed again. Any other open takes the holder lock, so
/// that `shmgate ls` and `rm --orphaned` see this process hold the object
/// from any PID namespace; if another description holds a write lock over
/// that byte (`EAGAIN`, `EACCES`: a whole-file `lockf`), the open goes on
/// without it, as that lock shows a live holder by itself.
pub(crate) fn open_shared(name: Arc<[u8]>, flags: OFlags, mode: Mode) -> Result<Segment, Error> {
    let seg = open_unlocked(name, flags, mode)?;
    if flags.contains(OFlags::CREATE | OFlags::EXCL) {
        if let Err(errno) = sys::hold_creator_lock(seg.fd()) {
            let err = Error::new(Op::Open, &seg.name, errno);
            drop(OwnedSegment { seg: Some(seg) });
            return Err(err);
        }
    } else {
        match sys::hold_holder_lock(seg.fd()) {
            Ok(()) | Err(Errno::AGAIN | Errno::ACCES) => {}
            Err(errno) => return Err(Error::new(Op::Open, &seg.name, errno)),
        }
    }
    Ok(seg)
}

/// Why a create with an `init` callback failed: shmgate's own error (which
/// the caller may inspect, e.g. for `EEXIST`), or the callback's.
pub(crate) enum CreateError<E> {
    Os(Error),
    Init(E),
}

impl<E> From<Error> for CreateError<E> {
    fn from(e: Error) -> Self {
        CreateError::Os(e)
    }
}

/// Creates `name` atomically: a new object, read-write, of `size` bytes,
/// handed to `init`, with the creator lock, and only then given its name
/// (see `sys::create` for how). `EEXIST` if the name exists by then; an
/// error of `init` or of sizing leaves no trace.
pub(crate) fn create_atomic<E>(
    name: Arc<[u8]>,
    mode: Mode,
    size: u64,
    init: &mut impl FnMut(&Segment) -> Result<(), E>,
) -> Result<Segment, CreateError<E>> {
    let path = path_of(&name).map_err(|e| Error::new(Op::Open, &name, e))?;
    let (fd, pending) = match sys::create_pending(mode) {
        Ok(created) => created,
        Err(errno) => return Err(Error::new(Op::Open, &name, errno).into()),
    };
    let seg = Segment {
        fd,
        name,
        writable: true,
    };
    sys::hold_creator_lock(seg.fd()).map_err(seg.err(Op::Open))?;
    if size > 0 {
        seg.set_len(size)?;
    }
    init(&seg).map_err(CreateError::Init)?;
    pending
        .publish(seg.fd(), &path)
        .map_err(seg.err(Op::Open))?;
    Ok(seg)
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
    /// failing with `EEXIST` if the name exists. The name appears only once
    /// the segment has its size: nobody ever sees it empty (see
    /// [`OpenOptions::open_with`]).
    ///
    /// # Errors
    ///
    /// As [`open`], and as [`Segment::set_len`].
    pub fn create_new(name: impl AsRef<[u8]>, size: u64) -> Result<Segment, Error> {
        OpenOptions::new().create_new(true).size(size).open(name)
    }

    /// Creates a new segment of `size` bytes holding `contents` at offset
    /// 0 (the rest reads as zero), failing with `EEXIST` if the name exists.
    /// The name appears only once the contents are written: another process
    /// either finds no such name (`ENOENT`) or the whole contents.
    ///
    /// ```
    /// use shmgate_host::Segment;
    /// # let name = format!("/shmgate-doc-contents-{}", std::process::id());
    /// let seg = Segment::create_new_with(&name, 4096, b"config v1")?;
    /// let mut buf = [0; 9];
    /// Segment::open_read_only(&name)?.read_exact_at(&mut buf, 0)?;
    /// assert_eq!(&buf, b"config v1");
    /// # shmgate_host::unlink(&name)?;
    /// # Ok::<(), shmgate_host::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Segment::create_new`]; `EFBIG` if `contents` is longer than
    /// `size`.
    pub fn create_new_with(
        name: impl AsRef<[u8]>,
        size: u64,
        contents: &[u8],
    ) -> Result<Segment, Error> {
        OpenOptions::new()
            .create_new(true)
            .size(size)
            .open_with(name, |seg| seg.write_all_at(contents, 0))
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

    /// A segment on a descriptor that did not come from [`open`] (a memfd,
    /// a descriptor received over a socket); `name` is shown in errors.
    pub(crate) fn from_parts(fd: OwnedFd, name: Arc<[u8]>, writable: bool) -> Segment {
        Segment { fd, name, writable }
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

    /// The size of the segment: a segment this open creates gets it
    /// before its name appears (atomic creation, see
    /// [`open_with`](OpenOptions::open_with)); an existing one is resized
    /// with `ftruncate` right after opening.
    pub fn size(&mut self, size: u64) -> &mut OpenOptions {
        self.size = Some(size);
        self
    }

    /// The portable flags these options stand for.
    pub fn flags(&self) -> OFlags {
        OFlags::from_options(self.read_write, self.create, self.create_new, self.truncate)
    }

    /// Opens `name` with these options.
    ///
    /// A segment this call creates (`create_new`, or `create` when the name
    /// does not exist) is sized before its name appears, and carries the
    /// creator lock that lets `shmgate ls` and `rm --orphaned` tell a live
    /// creator from a dead one; a segment it opens carries the holder lock
    /// for as long as this descriptor or a mapping made through it lives
    /// (see [`crate::lifecycle`]). The bare [`open`] takes neither.
    ///
    /// # Errors
    ///
    /// As [`open`] and [`Segment::set_len`].
    pub fn open(&self, name: impl AsRef<[u8]>) -> Result<Segment, Error> {
        self.open_with(name, |_| Ok::<(), Error>(()))
    }

    /// Opens `name` like [`open`](OpenOptions::open), and if this call
    /// creates it, runs `init` on the new segment before anyone else can
    /// see it: the name is published only once the segment is sized and
    /// `init` has returned `Ok`, with exact `create_new` semantics (`EEXIST`
    /// if the name exists by then, in which case `init`'s work is
    /// discarded). Another process opening the name meanwhile gets `ENOENT`
    /// or the finished segment, never an empty or half-written one. If
    /// `init` fails, nothing is left behind and its error is returned:
    /// `init` may return any error type that shmgate's [`Error`] converts
    /// into (`Error` itself, `std::io::Error`, `Box<dyn Error>`, …).
    /// `init` does not run for a segment that already existed (`create`
    /// opens what is there first); it is `FnMut` because with `create` it
    /// can run more than once when another process creates the same name
    /// at the same moment: on our object, which loses the race for the name
    /// and is discarded, then again if that name vanished before we could
    /// open it.
    ///
    /// On Linux the segment is made with `O_TMPFILE` in `/dev/shm` and
    /// linked to its name (`linkat` through `/proc/self/fd`); where either
    /// is missing, under an unguessable temporary name (128 random bits)
    /// with mode 0, which no user but root can open while `init` runs, and
    /// given its final mode just before it is linked in the same way. Read-only creates are not atomic (the new segment cannot be
    /// sized through a read-only descriptor anyway).
    ///
    /// ```
    /// use shmgate_host::OpenOptions;
    /// # let name = format!("/shmgate-doc-init-{}", std::process::id());
    /// let seg = OpenOptions::new()
    ///     .create_new(true)
    ///     .size(4096)
    ///     .open_owned_with(&name, |seg| {
    ///         seg.write_all_at(&1u32.to_le_bytes(), 0) // a version header
    ///     })?;
    /// assert_eq!(seg.len()?, 4096);
    /// # Ok::<(), shmgate_host::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`open`] and [`Segment::set_len`], and `init`'s error;
    /// `EAGAIN` if, with `create`, the name kept appearing and disappearing
    /// between the attempts to create and to open it, or if, where the
    /// temporary-name route is used (no `O_TMPFILE` or no `/proc`), eight
    /// random temporary names in a row were taken.
    pub fn open_with<E: From<Error>>(
        &self,
        name: impl AsRef<[u8]>,
        mut init: impl FnMut(&Segment) -> Result<(), E>,
    ) -> Result<Segment, E> {
        let name: Arc<[u8]> = Arc::from(name.as_ref());
        let creates = self.create || self.create_new;
        if !creates {
            return Ok(self.open_existing(name)?);
        }
        // `create` without `create_new` opens what is there first, then
        // creates exclusively, so it knows whether it created (and must
        // initialise and lock). A name can appear or vanish between the
        // two attempts; a few rounds settle it.
        for _ in 0..4 {
            if !self.create_new {
                match self.open_existing(Arc::clone(&name)) {
                    Err(e) if e.errno() == Errno::NOENT => {}
                    done => return Ok(done?),
                }
            }
            let created = match (self.size, self.read_write) {
                (Some(size), true) => create_atomic(Arc::clone(&name), self.mode, size, &mut init),
                _ => self.create_plain(Arc::clone(&name), &mut init),
            };
            match created {
                Ok(seg) => return Ok(seg),
                // Someone else created it in between (`init` may have run
                // on an object nobody will see, which is why it is `FnMut`).
                Err(CreateError::Os(e)) if e.errno() == Errno::EXIST && !self.create_new => {}
                Err(CreateError::Os(e)) => return Err(e.into()),
                Err(CreateError::Init(e)) => return Err(e),
            }
        }
        Err(Error::new(Op::Open, &name, Errno::AGAIN).into())
    }

    /// A create without atomic sizing (no size, or read-only): `CREATE |
    /// EXCL`, then `set_len` if a size is set (which fails for a read-only
    /// segment), then `init`. On failure the new name is removed again.
    fn create_plain<E>(
        &self,
        name: Arc<[u8]>,
        init: &mut impl FnMut(&Segment) -> Result<(), E>,
    ) -> Result<Segment, CreateError<E>> {
        let mut flags = self.flags();
        flags = OFlags::from_bits(flags.bits() | (OFlags::CREATE | OFlags::EXCL).bits())
            .map_err(|e| Error::new(Op::Open, &name, e))?;
        let seg = OwnedSegment {
            seg: Some(open_shared(name, flags, self.mode)?),
        };
        if let Some(size) = self.size {
            seg.set_len(size)?;
        }
        init(&seg).map_err(CreateError::Init)?;
        Ok(seg.into_segment())
    }

    /// Opens an existing segment (the flags without `CREATE`/`EXCL`) and
    /// sizes it if a size is set.
    fn open_existing(&self, name: Arc<[u8]>) -> Result<Segment, Error> {
        let flags = OFlags::from_options(self.read_write, false, false, self.truncate);
        let seg = open_shared(name, flags, self.mode)?;
        if let Some(size) = self.size {
            seg.set_len(size)?;
        }
        Ok(seg)
    }

    /// [`open_with`](OpenOptions::open_with), always creating (whatever
    /// `create_new` says), returning an [`OwnedSegment`].
    ///
    /// # Errors
    ///
    /// As [`OpenOptions::open_with`].
    pub fn open_owned_with<E: From<Error>>(
        &self,
        name: impl AsRef<[u8]>,
        init: impl FnMut(&Segment) -> Result<(), E>,
    ) -> Result<OwnedSegment, E> {
        let mut opts = self.clone();
        opts.create_new(true);
        Ok(OwnedSegment {
            seg: Some(opts.open_with(name, init)?),
        })
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
/// same name after ours was removed is left alone. That check and the
/// unlink are two system calls: Linux cannot unlink a name only if it
/// still refers to a given inode, so a small window remains; see
/// [`lifecycle::unlink_if_same`](crate::lifecycle::unlink_if_same) for
/// how small and what it takes to hit it.
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

/// Which object a name or descriptor refers to: its device and inode
/// numbers, as `fstat` gives them.
///
/// Two identities taken while both objects are open are equal only for the
/// same object; an identity remembered after the object was freed may be
/// given to a new object later (tmpfs reuses inode numbers rarely, but may).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    dev: u64,
    ino: u64,
}

impl Identity {
    /// An identity from `st_dev` and `st_ino` (e.g. from
    /// [`std::os::unix::fs::MetadataExt`]).
    pub fn new(dev: u64, ino: u64) -> Identity {
        Identity { dev, ino }
    }

    /// `st_dev`.
    pub fn dev(&self) -> u64 {
        self.dev
    }

    /// `st_ino`.
    pub fn ino(&self) -> u64 {
        self.ino
    }
}

impl Segment {
    /// `fstat`: the device and inode of the open object.
    ///
    /// # Errors
    ///
    /// The kernel's `fstat` errors (practically none).
    pub fn identity(&self) -> Result<Identity, Error> {
        sys::fstat(self.fd())
            .map(|st| Identity::new(st.dev, st.ino))
            .map_err(self.err(Op::Check))
    }
}

/// Unlinks `name` only if it still refers to the object `identity` names,
/// so that cleanup never removes a segment someone else created under the
/// same name after ours was removed. Errors are ignored: the name is then
/// either gone already or not ours to remove. See
/// [`lifecycle::unlink_if_same`](crate::lifecycle::unlink_if_same).
pub(crate) fn unlink_if_same(name: &[u8], identity: Identity) {
    let _ = crate::lifecycle::unlink_if_same(name, identity);
}
