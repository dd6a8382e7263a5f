//! The same safe API for components (`wasm32-wasip2`), through the
//! `shmgate:shm/segments@0.1.0` WIT interface (`wit/shm.wit`, bindings by
//! `wit-bindgen`). Enabled by the `component` feature.
//!
//! [`Segment`] and [`unlink`] mirror the core module API
//! ([`crate::Segment`], [`crate::unlink`]) and take the same
//! [`OpenOptions`]; errors are the same [`Errno`]s. What differs:
//!
//! - names are UTF-8 (`&str`): the interface passes them as WIT `string`s;
//! - there are no windows (`map`): a component's imports cannot see its
//!   memory, so [`Segment::read_vec`] and [`Segment::write_at`] copy, once
//!   each way (see `docs/WIT.md`);
//! - the segment is a resource the component model tracks: dropping it
//!   closes it, and no integer handle exists to forge.
//!
//! # Examples
//!
//! ```no_run
//! use shmgate_guest::OpenOptions;
//! use shmgate_guest::component::Segment;
//!
//! let seg = Segment::create("frames", 4096)?;
//! seg.write_all_at(b"hello from a component", 0)?;
//! let seg = Segment::open("frames", &OpenOptions::new())?;
//! assert_eq!(seg.read_vec(0, 5)?, b"hello");
//! # Ok::<(), shmgate_guest::Errno>(())
//! ```

use alloc::vec::Vec;

use crate::{Errno, OpenOptions, abi_offset, check_name};

/// An offset or size the host accepts: at most `i64::MAX` (`EOVERFLOW`),
/// as [`crate::Segment`] checks it.
fn checked(offset: u64) -> Result<u64, Errno> {
    abi_offset(offset).map(|_| offset)
}

#[allow(missing_docs, unreachable_pub, clippy::all, unsafe_code)]
mod bindings {
    wit_bindgen::generate!({
        // `wit/shm.wit` of this crate links to the workspace's `wit/shm.wit`
        // (`cargo package` stores the file itself).
        path: "wit",
        world: "shmgate:shm/imports",
        generate_all,
    });
}

use bindings::shmgate::shm::segments::{self as wit, ErrorCode, OpenFlags};

/// One list of the errno names the interface carries.
macro_rules! error_codes {
    ($($code:ident = $errno:ident),* $(,)?) => {
        fn errno(code: ErrorCode) -> Errno {
            match code {
                $(ErrorCode::$code => Errno::$errno,)*
                // An errno the interface has no name for: the host's
                // problem, not a guest mistake.
                ErrorCode::Unknown => Errno::IO,
            }
        }
    };
}

error_codes! {
    Eperm = PERM, Enoent = NOENT, Eintr = INTR, Eio = IO, Enxio = NXIO,
    Ebadf = BADF, Eagain = AGAIN, Enomem = NOMEM, Eacces = ACCES,
    Efault = FAULT, Ebusy = BUSY, Eexist = EXIST, Enodev = NODEV,
    Enotdir = NOTDIR, Eisdir = ISDIR, Einval = INVAL, Enfile = NFILE,
    Emfile = MFILE, Etxtbsy = TXTBSY, Efbig = FBIG, Enospc = NOSPC,
    Espipe = SPIPE, Erofs = ROFS, Epipe = PIPE, Erange = RANGE,
    Enametoolong = NAMETOOLONG, Enosys = NOSYS, Eloop = LOOP, Enomsg = NOMSG,
    Eoverflow = OVERFLOW, Emsgsize = MSGSIZE, Enotsup = NOTSUP,
    Etimedout = TIMEDOUT, Edquot = DQUOT,
}

/// The interface's flags for these options.
fn open_flags(options: &OpenOptions) -> Result<OpenFlags, Errno> {
    let bits = options.flags()?.bits();
    let mut flags = OpenFlags::empty();
    for (bit, flag) in [
        (1, OpenFlags::READ_WRITE),
        (2, OpenFlags::CREATE),
        (4, OpenFlags::EXCLUSIVE),
        (8, OpenFlags::TRUNCATE),
    ] {
        if bits & bit != 0 {
            flags |= flag;
        }
    }
    Ok(flags)
}

/// A guest name as the interface's `string`: checked as the host will, and
/// UTF-8.
fn wit_name(name: &str) -> Result<&str, Errno> {
    check_name(name.as_bytes())?;
    Ok(name)
}

/// A shared memory segment the host granted; closed on drop.
#[derive(Debug)]
pub struct Segment {
    inner: wit::Segment,
}

impl Segment {
    /// Opens the segment `name` (relative to the granted namespace).
    ///
    /// # Errors
    ///
    /// As [`crate::Segment::open`].
    pub fn open(name: impl AsRef<str>, options: &OpenOptions) -> Result<Segment, Errno> {
        let name = wit_name(name.as_ref())?;
        let flags = open_flags(options)?;
        let mode = options.mode_bits()?;
        let inner = wit::Segment::open(name, flags, mode).map_err(errno)?;
        Ok(Segment { inner })
    }

    /// Creates a new segment of `size` bytes (read-write, create-new, mode
    /// `0o600`). If sizing fails, the new segment is unlinked again where
    /// the grant allows it.
    ///
    /// # Errors
    ///
    /// As [`crate::Segment::create`].
    pub fn create(name: impl AsRef<str>, size: u64) -> Result<Segment, Errno> {
        let name = name.as_ref();
        let seg = Segment::open(name, &OpenOptions::new().read_write(true).create_new(true))?;
        if let Err(e) = seg.set_len(size) {
            drop(seg);
            let _ = unlink(name);
            return Err(e);
        }
        Ok(seg)
    }

    /// The current size in bytes.
    ///
    /// # Errors
    ///
    /// The host's errors.
    #[allow(clippy::len_without_is_empty)] // a host call, not a field
    pub fn len(&self) -> Result<u64, Errno> {
        self.inner.size().map_err(errno)
    }

    /// Sets the size.
    ///
    /// # Errors
    ///
    /// As [`crate::Segment::set_len`].
    pub fn set_len(&self, size: u64) -> Result<(), Errno> {
        self.inner.set_size(checked(size)?).map_err(errno)
    }

    /// Reads up to `len` bytes at `offset` into a new vector (shorter at
    /// the end of the segment): one copy from the host.
    ///
    /// # Errors
    ///
    /// `EOVERFLOW` if `offset + len` passes `i64::MAX`.
    pub fn read_vec(&self, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        while out.len() < len {
            let at = offset
                .checked_add(out.len() as u64)
                .ok_or(Errno::OVERFLOW)?;
            let want = (len - out.len()) as u64;
            let got = self.inner.read(checked(at)?, want).map_err(errno)?;
            if got.is_empty() {
                break;
            }
            if out.is_empty() {
                out = got;
            } else {
                out.extend_from_slice(&got);
            }
        }
        Ok(out)
    }

    /// Copies bytes at `offset` into `buf`; returns how many (short, or 0,
    /// at the end of the segment). A copy more than
    /// [`read_vec`](Segment::read_vec).
    ///
    /// # Errors
    ///
    /// As [`crate::Segment::read_at`].
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize, Errno> {
        let got = self
            .inner
            .read(checked(offset)?, buf.len() as u64)
            .map_err(errno)?;
        buf[..got.len()].copy_from_slice(&got);
        Ok(got.len())
    }

    /// Copies `buf` to `offset`; returns how many bytes fitted (writes
    /// never grow a segment).
    ///
    /// # Errors
    ///
    /// As [`crate::Segment::write_at`].
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize, Errno> {
        let n = self.inner.write(checked(offset)?, buf).map_err(errno)?;
        usize::try_from(n).map_err(|_| Errno::OVERFLOW)
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    ///
    /// As [`read_at`](Segment::read_at); `EOVERFLOW` if the segment ends
    /// first.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), Errno> {
        shmgate_core::io::read_exact_at(buf, offset, |b, off| self.read_at(b, off), |e| e)
    }

    /// Writes all of `buf` at `offset`.
    ///
    /// # Errors
    ///
    /// As [`write_at`](Segment::write_at); `EFBIG` if the segment ends
    /// first.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<(), Errno> {
        shmgate_core::io::write_all_at(buf, offset, |b, off| self.write_at(b, off), |e| e)
    }

    /// Waits while the shared `u32` at segment `offset` equals `expected`,
    /// up to `timeout` (`None`: as long as the host allows).
    ///
    /// # Errors
    ///
    /// As [`crate::Segment::wait32`].
    pub fn wait32(
        &self,
        offset: u64,
        expected: u32,
        timeout: Option<core::time::Duration>,
    ) -> Result<(), Errno> {
        let ns = timeout.map(|t| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        self.inner
            .wait32(checked(offset)?, expected, ns)
            .map_err(errno)
    }

    /// Wakes up to `count` waiters (`u32::MAX`: all) on the shared `u32` at
    /// segment `offset`, in any process; returns how many woke.
    ///
    /// # Errors
    ///
    /// As [`crate::Segment::notify`].
    pub fn notify(&self, offset: u64, count: u32) -> Result<u32, Errno> {
        self.inner.notify(checked(offset)?, count).map_err(errno)
    }

    /// Atomically loads the shared `u32` at `offset`.
    ///
    /// # Errors
    ///
    /// `EINVAL` unaligned, `ENXIO` past the end.
    pub fn load_u32(&self, offset: u64) -> Result<u32, Errno> {
        self.atomic(offset, wit::AtomicOp::Load)
    }

    /// Atomically stores `value` in the shared `u32` at `offset`.
    ///
    /// # Errors
    ///
    /// As [`load_u32`](Segment::load_u32); `EBADF` on a read-only segment.
    pub fn store_u32(&self, offset: u64, value: u32) -> Result<(), Errno> {
        self.atomic(offset, wit::AtomicOp::Store(value)).map(|_| ())
    }

    /// Atomically adds `value` (wrapping) to the shared `u32` at `offset`;
    /// returns the old value.
    ///
    /// # Errors
    ///
    /// As [`store_u32`](Segment::store_u32).
    pub fn fetch_add_u32(&self, offset: u64, value: u32) -> Result<u32, Errno> {
        self.atomic(offset, wit::AtomicOp::FetchAdd(value))
    }

    /// Atomically swaps `value` into the shared `u32` at `offset`; returns
    /// the old value.
    ///
    /// # Errors
    ///
    /// As [`store_u32`](Segment::store_u32).
    pub fn swap_u32(&self, offset: u64, value: u32) -> Result<u32, Errno> {
        self.atomic(offset, wit::AtomicOp::Swap(value))
    }

    /// Stores `new` in the shared `u32` at `offset` if it holds `current`;
    /// `Ok` with the old value if it did, `Err(Ok(actual))` if not.
    ///
    /// # Errors
    ///
    /// `Err(Err(errno))` as [`store_u32`](Segment::store_u32).
    pub fn compare_exchange_u32(
        &self,
        offset: u64,
        current: u32,
        new: u32,
    ) -> Result<u32, Result<u32, Errno>> {
        let op = wit::AtomicOp::CompareExchange(wit::CompareExchange {
            expected: current,
            replacement: new,
        });
        match self.atomic(offset, op) {
            Ok(old) if old == current => Ok(old),
            Ok(old) => Err(Ok(old)),
            Err(e) => Err(Err(e)),
        }
    }

    fn atomic(&self, offset: u64, op: wit::AtomicOp) -> Result<u32, Errno> {
        self.inner.atomic32(checked(offset)?, op).map_err(errno)
    }
}

/// `clock-monotonic`: the host's `CLOCK_MONOTONIC` (`clock_gettime`) in
/// nanoseconds, as [`crate::clock_monotonic`] reads it in a core module: one
/// host call, no resource, no allocation, cannot fail.
#[doc(alias = "clock_gettime")]
#[inline]
pub fn clock_monotonic() -> u64 {
    wit::clock_monotonic()
}

/// Removes the name `name` (the host must grant unlinking). Open segments
/// stay usable.
///
/// # Errors
///
/// As [`crate::unlink`].
pub fn unlink(name: impl AsRef<str>) -> Result<(), Errno> {
    wit::unlink(wit_name(name.as_ref())?).map_err(errno)
}
