//! A minimal `io_uring` for futex waits: `io_uring_setup` with
//! `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`, the three ring
//! mappings, and a submission API that only accepts operations that make
//! the kernel *read* our memory (`IORING_OP_FUTEX_WAITV`,
//! `IORING_OP_LINK_TIMEOUT`): nothing the kernel
//! does for them can write into this process, so handing it an address that
//! is no longer valid gives `EFAULT` in a completion, never memory
//! corruption. That is what keeps [`Ring::push`] safe.
//!
//! The ring belongs to the thread that created it (the kernel records it
//! as the single issuer): [`Ring`] is neither `Send` nor `Sync`, and its
//! methods take `&mut self`, so submission and completion are never
//! concurrent.
//!
//! # References
//!
//! - [io_uring_setup(2)](https://man7.org/linux/man-pages/man2/io_uring_setup.2.html)
//! - [io_uring_enter(2)](https://man7.org/linux/man-pages/man2/io_uring_enter.2.html)

use std::ffi::c_void;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::io::Errno as RErrno;
use rustix::io_uring::{
    FutexWaitvFlags, IoringEnterFlags, IoringFeatureFlags, IoringOp, IoringSetupFlags,
    IoringSqeFlags, IoringTimeoutFlags, io_uring_cqe, io_uring_params, io_uring_ptr, io_uring_sqe,
    io_uring_user_data,
};
use rustix::mm::{MapFlags, ProtFlags};
use shmgate_core::Errno;

use super::errno;

/// `struct futex_waitv` of `<linux/futex.h>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FutexWaitv {
    /// The expected value.
    pub(crate) val: u64,
    /// The word's address.
    pub(crate) uaddr: u64,
    /// `FUTEX2_SIZE_U32`, possibly `| FUTEX2_PRIVATE`.
    pub(crate) flags: u32,
    /// Zero.
    pub(crate) reserved: u32,
}

/// `FUTEX2_SIZE_U32`.
pub(crate) const FUTEX2_SIZE_U32: u32 = 0x02;
/// `FUTEX2_PRIVATE`.
pub(crate) const FUTEX2_PRIVATE: u32 = 128;

/// An operation [`Ring::push`] accepts: each only makes the kernel read
/// the memory it names.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sqe {
    /// `IORING_OP_FUTEX_WAITV` on `len` entries at `waitv`; `linked` links
    /// it to the next entry (a [`Sqe::LinkTimeout`]).
    FutexWaitv {
        /// The array's address (read at submission).
        waitv: *const FutexWaitv,
        /// How many entries (1..=128).
        len: u32,
        /// `IOSQE_IO_LINK`.
        linked: bool,
    },
    /// `IORING_OP_LINK_TIMEOUT`: cancels the linked entry before it after
    /// `timeout` (relative, `CLOCK_MONOTONIC`; read at submission).
    LinkTimeout {
        /// The timeout's address.
        timeout: *const rustix::time::Timespec,
    },
}

/// One shared mapping of the ring's memory.
struct RingMap {
    ptr: NonNull<c_void>,
    len: usize,
}

impl RingMap {
    /// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
    /// fd, offset)` of one of the ring's regions.
    #[allow(unsafe_code)]
    fn new(fd: &OwnedFd, len: usize, offset: u64) -> Result<RingMap, Errno> {
        // SAFETY: a fresh mapping at an address the kernel picks, replacing
        // nothing; the ring fd and offset are what io_uring_setup(2)
        // documents for this region.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::POPULATE,
                fd,
                offset,
            )
        }
        .map_err(errno)?;
        let ptr = NonNull::new(ptr).ok_or(Errno::NOMEM)?;
        Ok(RingMap { ptr, len })
    }

    /// The `u32` at byte `offset` as an atomic (the kernel shares it).
    #[allow(unsafe_code)]
    fn atomic(&self, offset: u32) -> Result<&AtomicU32, Errno> {
        let offset = offset as usize;
        if offset.checked_add(4).is_none_or(|end| end > self.len) || !offset.is_multiple_of(4) {
            return Err(Errno::INVAL);
        }
        // SAFETY: in bounds and 4-byte aligned (checked; the mapping is
        // page-aligned); the mapping lives as long as `&self`, and the
        // kernel accesses the word atomically too.
        Ok(unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().cast::<u8>().add(offset).cast()) })
    }

    /// The address at byte `offset`, if `n` bytes from there fit.
    fn at(&self, offset: u32, n: usize) -> Result<*mut u8, Errno> {
        let offset = offset as usize;
        if offset.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(Errno::INVAL);
        }
        Ok(self.ptr.as_ptr().cast::<u8>().wrapping_add(offset))
    }
}

impl Drop for RingMap {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: exactly what mmap returned; no reference into it outlives
        // the ring that owns this mapping.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr(), self.len) };
    }
}

/// An `io_uring` instance owned by one thread.
pub(crate) struct Ring {
    // Field order is drop order: the mappings go before the fd.
    sq_ring: RingMap,
    cq_ring: Option<RingMap>,
    sqes: RingMap,
    sq_off: rustix::io_uring::io_sqring_offsets,
    cq_off: rustix::io_uring::io_cqring_offsets,
    sq_mask: u32,
    sq_entries: u32,
    cq_mask: u32,
    /// Entries written to the ring but not yet passed to the kernel.
    unsubmitted: u32,
    fd: OwnedFd,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("sq_entries", &self.sq_entries)
            .finish_non_exhaustive()
    }
}

impl Ring {
    /// `io_uring_setup(entries, SINGLE_ISSUER | DEFER_TASKRUN | CQSIZE)` and
    /// the ring mappings. Call it on the thread that will use the ring.
    ///
    /// # Errors
    ///
    /// `ENOSYS` (no io_uring), `EPERM` (`kernel.io_uring_disabled`,
    /// seccomp), `EINVAL` (a kernel before 6.1 does not know the flags),
    /// `ENOMEM`.
    #[allow(unsafe_code)]
    pub(crate) fn new(entries: u32, cq_entries: u32) -> Result<Ring, Errno> {
        let mut params = io_uring_params::default();
        params.flags = IoringSetupFlags::SINGLE_ISSUER
            | IoringSetupFlags::DEFER_TASKRUN
            | IoringSetupFlags::CQSIZE;
        params.cq_entries = cq_entries;
        // SAFETY: `params` is a valid, zeroed io_uring_params the kernel
        // fills in.
        let fd =
            unsafe { rustix::io_uring::io_uring_setup(entries, &mut params) }.map_err(errno)?;
        let sq_len = params.sq_off.array as usize + params.sq_entries as usize * 4;
        let cq_len = params.cq_off.cqes as usize
            + params.cq_entries as usize * std::mem::size_of::<io_uring_cqe>();
        let single = params.features.contains(IoringFeatureFlags::SINGLE_MMAP);
        let sq_ring = RingMap::new(
            &fd,
            if single { sq_len.max(cq_len) } else { sq_len },
            rustix::io_uring::IORING_OFF_SQ_RING,
        )?;
        let cq_ring = if single {
            None
        } else {
            Some(RingMap::new(
                &fd,
                cq_len,
                rustix::io_uring::IORING_OFF_CQ_RING,
            )?)
        };
        let sqes = RingMap::new(
            &fd,
            params.sq_entries as usize * std::mem::size_of::<io_uring_sqe>(),
            rustix::io_uring::IORING_OFF_SQES,
        )?;
        let mut ring = Ring {
            sq_mask: 0,
            cq_mask: 0,
            sq_entries: params.sq_entries,
            sq_off: params.sq_off,
            cq_off: params.cq_off,
            sq_ring,
            cq_ring,
            sqes,
            unsubmitted: 0,
            fd,
        };
        ring.sq_mask = ring
            .sq_ring
            .atomic(params.sq_off.ring_mask)?
            .load(Ordering::Relaxed);
        ring.cq_mask = ring
            .cq()
            .atomic(params.cq_off.ring_mask)?
            .load(Ordering::Relaxed);
        // The indirection array maps slot i to sqe i, once and for all.
        for i in 0..params.sq_entries {
            let slot = ring.sq_ring.at(params.sq_off.array + i * 4, 4)?;
            // SAFETY: in bounds of the SQ ring (checked by `at`), 4-byte
            // aligned (the array is), and the kernel reads it only for
            // entries we submit.
            unsafe { slot.cast::<u32>().write_volatile(i) };
        }
        Ok(ring)
    }

    fn cq(&self) -> &RingMap {
        self.cq_ring.as_ref().unwrap_or(&self.sq_ring)
    }

    /// Entries pushed and not yet taken by the kernel.
    pub(crate) fn unsubmitted(&self) -> u32 {
        self.unsubmitted
    }

    /// How many entries the submission queue has room for.
    pub(crate) fn space(&self) -> Result<u32, Errno> {
        let (head, tail) = self.sq_head_tail()?;
        Ok(self.sq_entries.saturating_sub(tail.wrapping_sub(head)))
    }

    /// The submission queue's head (what the kernel has consumed, read
    /// with `Acquire` so the slots before it are free again) and tail
    /// (ours: only this thread writes it).
    fn sq_head_tail(&self) -> Result<(u32, u32), Errno> {
        let head = self
            .sq_ring
            .atomic(self.sq_off.head)?
            .load(Ordering::Acquire);
        let tail = self
            .sq_ring
            .atomic(self.sq_off.tail)?
            .load(Ordering::Relaxed);
        Ok((head, tail))
    }

    /// Writes `op` with `user_data` into the submission queue. `false` if
    /// the queue is full (call [`submit_and_wait`](Ring::submit_and_wait)
    /// first).
    #[allow(unsafe_code)]
    pub(crate) fn push(&mut self, op: Sqe, user_data: u64) -> Result<bool, Errno> {
        let (head, tail) = self.sq_head_tail()?;
        if tail.wrapping_sub(head) >= self.sq_entries {
            return Ok(false);
        }
        let mut sqe = io_uring_sqe {
            user_data: io_uring_user_data::from_u64(user_data),
            ..Default::default()
        };
        match op {
            Sqe::FutexWaitv { waitv, len, linked } => {
                sqe.opcode = IoringOp::FutexWaitv;
                sqe.addr_or_splice_off_in.addr = io_uring_ptr::new(waitv.cast_mut().cast());
                sqe.len.len = len;
                sqe.op_flags.futex_flags = FutexWaitvFlags::empty();
                if linked {
                    sqe.flags = IoringSqeFlags::IO_LINK;
                }
            }
            Sqe::LinkTimeout { timeout } => {
                sqe.opcode = IoringOp::LinkTimeout;
                sqe.fd = -1;
                sqe.addr_or_splice_off_in.addr = io_uring_ptr::new(timeout.cast_mut().cast());
                sqe.len.len = 1;
                sqe.op_flags.timeout_flags = IoringTimeoutFlags::empty();
            }
        }
        let index = tail & self.sq_mask;
        let slot = self.sqes.at(
            index * u32::try_from(std::mem::size_of::<io_uring_sqe>()).map_err(|_| Errno::INVAL)?,
            std::mem::size_of::<io_uring_sqe>(),
        )?;
        // SAFETY: `slot` is the in-bounds (checked by `at`), aligned sqe
        // `index`, which the kernel does not read until the tail moves past
        // it (below); every operation `Sqe` can express only makes the
        // kernel read the addresses it names.
        unsafe { slot.cast::<io_uring_sqe>().write(sqe) };
        self.sq_ring
            .atomic(self.sq_off.tail)?
            .store(tail.wrapping_add(1), Ordering::Release);
        self.unsubmitted += 1;
        Ok(true)
    }

    /// `io_uring_enter(fd, unsubmitted, want, IORING_ENTER_GETEVENTS)`:
    /// submits what was pushed and waits until `want` completions are
    /// ready (running the ring's deferred task work). `EINTR` is retried;
    /// `EBUSY`/`EAGAIN` (completions must be reaped first) return `Ok`.
    #[allow(unsafe_code)]
    pub(crate) fn submit_and_wait(&mut self, want: u32) -> Result<(), Errno> {
        loop {
            // SAFETY: no EXT_ARG flag, so no argument pointer is involved;
            // the entries submitted are all `Sqe`s (see `push`).
            let r = unsafe {
                rustix::io_uring::io_uring_enter(
                    &self.fd,
                    self.unsubmitted,
                    want,
                    IoringEnterFlags::GETEVENTS,
                )
            };
            match r {
                Ok(n) => {
                    self.unsubmitted = self.unsubmitted.saturating_sub(n);
                    return Ok(());
                }
                Err(RErrno::INTR) => {
                    // The entries may have been consumed already: the
                    // kernel's SQ head says.
                    let (head, tail) = self.sq_head_tail()?;
                    self.unsubmitted = tail.wrapping_sub(head);
                }
                Err(RErrno::BUSY | RErrno::AGAIN) => return Ok(()),
                Err(e) => return Err(errno(e)),
            }
        }
    }

    /// Calls `f(user_data, res)` for each ready completion, and returns
    /// how many there were.
    #[allow(unsafe_code)]
    pub(crate) fn reap(&mut self, mut f: impl FnMut(u64, i32)) -> Result<usize, Errno> {
        let cq = self.cq();
        let head_word = cq.atomic(self.cq_off.head)?;
        let tail = cq.atomic(self.cq_off.tail)?.load(Ordering::Acquire);
        let mut head = head_word.load(Ordering::Relaxed);
        let mut n = 0;
        let size = std::mem::size_of::<io_uring_cqe>();
        while head != tail {
            let index = (head & self.cq_mask) as usize;
            let offset = self.cq_off.cqes as usize + index * size;
            let at = cq.at(u32::try_from(offset).map_err(|_| Errno::INVAL)?, size)?;
            // SAFETY: cqe `index` is in bounds (checked by `at`) and aligned,
            // and the kernel published it (our acquire load of the tail);
            // it does not touch it again until the head moves past it. Only
            // the two plain fields are read.
            let (user_data, res) = unsafe {
                let cqe = at.cast::<io_uring_cqe>();
                (
                    std::ptr::addr_of!((*cqe).user_data).read().u64_(),
                    std::ptr::addr_of!((*cqe).res).read(),
                )
            };
            head = head.wrapping_add(1);
            n += 1;
            f(user_data, res);
        }
        head_word.store(head, Ordering::Release);
        Ok(n)
    }
}
