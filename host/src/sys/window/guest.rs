//! Host access to guest memory without Rust references: every copy goes
//! through raw pointers (or straight to the kernel with `pread`/`pwrite`),
//! because a shared memory's bytes, windows or not, can change under the
//! host at any time (other wasm threads, other processes).

use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

use wasmtime::{Caller, Extern, Memory, SharedMemory};

use shmgate_core::Errno;

use super::super::errno;

/// The longest name the host copies out of guest memory (`PATH_MAX`);
/// longer names are `ENAMETOOLONG` without being read.
pub(crate) const NAME_COPY_MAX: usize = 4096;

/// A guest's exported memory, shared or not.
#[derive(Clone, Debug)]
pub(crate) enum GuestMemory {
    /// A memory only its store's thread can touch.
    Local(Memory),
    /// A shared memory: the only kind that can hold windows.
    Shared(SharedMemory),
}

impl GuestMemory {
    /// The caller's export named `memory`.
    ///
    /// # Errors
    ///
    /// A trap if the guest exports no memory by that name.
    pub(crate) fn of<T: 'static>(caller: &mut Caller<'_, T>) -> wasmtime::Result<GuestMemory> {
        match caller.get_export("memory") {
            Some(Extern::Memory(m)) => Ok(GuestMemory::Local(m)),
            Some(Extern::SharedMemory(m)) => Ok(GuestMemory::Shared(m)),
            _ => Err(wasmtime::Error::msg(
                "shmgate_v1: the guest must export a memory named \"memory\"",
            )),
        }
    }

    /// The memory's base address and accessible size.
    pub(crate) fn base_and_size<T: 'static>(&self, caller: &Caller<'_, T>) -> (*mut u8, usize) {
        match self {
            GuestMemory::Local(m) => (m.data_ptr(caller), m.data_size(caller)),
            GuestMemory::Shared(m) => (m.data().as_ptr().cast::<u8>().cast_mut(), m.data_size()),
        }
    }

    /// The windows of this memory, if it can hold any: a shared memory made
    /// by [`ShmMemoryCreator`](super::memory::ShmMemoryCreator).
    pub(crate) fn windows<T: 'static>(
        &self,
        caller: &Caller<'_, T>,
    ) -> Option<std::sync::Arc<super::memory::MemoryWindows>> {
        match self {
            GuestMemory::Shared(_) => super::memory::memory_at(self.base_and_size(caller).0),
            GuestMemory::Local(_) => None,
        }
    }

    /// Grows the memory by `pages` wasm pages; returns the old size in
    /// pages.
    pub(crate) fn grow<T: 'static>(
        &self,
        caller: &mut Caller<'_, T>,
        pages: u64,
    ) -> wasmtime::Result<u64> {
        match self {
            GuestMemory::Local(m) => m.grow(caller, pages),
            GuestMemory::Shared(m) => m.grow(pages),
        }
    }
}

/// The guest bytes `start..start + len` of `memory`, and the store's data,
/// for a host function.
///
/// # Errors
///
/// `EFAULT` if the range is not inside the memory.
#[allow(unsafe_code)]
pub(crate) fn range_and_data<'a, T: 'static>(
    caller: &'a mut Caller<'_, T>,
    memory: &GuestMemory,
    start: u32,
    len: u32,
) -> Result<(GuestRange<'a>, &'a mut T), Errno> {
    let (base, size) = memory.base_and_size(caller);
    // SAFETY: `base`/`size` describe the caller's own memory. For 'a the
    // caller is borrowed exclusively, so no wasm runs and the store cannot
    // drop or grow a local memory (which could move it); a shared memory
    // never moves and never shrinks.
    let range = unsafe { GuestRange::new(base, size, start, len)? };
    Ok((range, caller.data_mut()))
}

/// Guest bytes `ptr..ptr + len`, checked to lie inside the accessible
/// bytes of a live memory, for as long as `'a` (an exclusive borrow of the
/// caller, so the memory can be neither dropped nor moved; it may grow,
/// which moves nothing).
#[derive(Debug)]
pub(crate) struct GuestRange<'a> {
    ptr: *mut u8,
    len: usize,
    _caller: PhantomData<&'a mut ()>,
}

impl<'a> GuestRange<'a> {
    /// `start..start + len` of a memory with base `base` and `size`
    /// accessible bytes.
    ///
    /// # Safety
    ///
    /// `base` and `size` describe a live wasm memory that stays live and in
    /// place for `'a`.
    ///
    /// # Errors
    ///
    /// `EFAULT` if the range is not inside the memory.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn new(
        base: *mut u8,
        size: usize,
        start: u32,
        len: u32,
    ) -> Result<GuestRange<'a>, Errno> {
        let (start, len) = (start as usize, len as usize);
        start
            .checked_add(len)
            .filter(|&end| end <= size)
            .ok_or(Errno::FAULT)?;
        Ok(GuestRange {
            // SAFETY: `start <= size`, inside the memory or one past it.
            ptr: unsafe { base.add(start) },
            len,
            _caller: PhantomData,
        })
    }

    /// The host address where the range starts.
    pub(crate) fn addr(&self) -> usize {
        self.ptr as usize
    }

    /// How many bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The first `n` bytes (at most all of them).
    pub(crate) fn prefix(self, n: usize) -> GuestRange<'a> {
        GuestRange {
            len: self.len.min(n),
            ..self
        }
    }

    /// Copies the range (a name) into `buf`; `ENAMETOOLONG` if it is
    /// longer than [`NAME_COPY_MAX`].
    #[allow(unsafe_code)]
    pub(crate) fn copy_name<'b>(
        &self,
        buf: &'b mut [MaybeUninit<u8>; NAME_COPY_MAX],
    ) -> Result<&'b [u8], Errno> {
        let dst = buf.get_mut(..self.len).ok_or(Errno::NAMETOOLONG)?;
        // SAFETY: the source is inside a live memory (construction), the
        // destination is a Rust buffer of the same length that cannot
        // overlap guest memory; a racing writer gives torn bytes, which the
        // rules then judge as they are.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, dst.as_mut_ptr().cast::<u8>(), self.len) };
        // SAFETY: the first `len` bytes were just written.
        Ok(unsafe { std::slice::from_raw_parts(dst.as_ptr().cast::<u8>(), self.len) })
    }

    /// `pread(fd, range, offset)`: the kernel copies into guest memory.
    #[allow(unsafe_code)]
    pub(crate) fn pread(&self, fd: BorrowedFd<'_>, offset: u64) -> Result<usize, Errno> {
        let offset = libc::off_t::try_from(offset).map_err(|_| Errno::INVAL)?;
        // SAFETY: the destination is inside a live memory; the kernel
        // writes it (or fails with EFAULT), no Rust reference exists.
        retry_io(|| unsafe { libc::pread(fd.as_raw_fd(), self.ptr.cast(), self.len, offset) })
    }

    /// `pwrite(fd, range, offset)`: the kernel copies from guest memory.
    #[allow(unsafe_code)]
    pub(crate) fn pwrite(&self, fd: BorrowedFd<'_>, offset: u64) -> Result<usize, Errno> {
        let offset = libc::off_t::try_from(offset).map_err(|_| Errno::INVAL)?;
        // SAFETY: the source is inside a live memory; the kernel reads it
        // (or fails with EFAULT), no Rust reference exists.
        retry_io(|| unsafe { libc::pwrite(fd.as_raw_fd(), self.ptr.cast(), self.len, offset) })
    }
}

/// Runs a libc I/O call again while it fails with `EINTR`; its count or
/// its errno.
fn retry_io(mut call: impl FnMut() -> isize) -> Result<usize, Errno> {
    loop {
        if let Ok(n) = usize::try_from(call()) {
            return Ok(n);
        }
        let e = rustix::io::Errno::from_io_error(&std::io::Error::last_os_error())
            .unwrap_or(rustix::io::Errno::IO);
        if e != rustix::io::Errno::INTR {
            return Err(errno(e));
        }
    }
}
