//! Linear memories that can hold windows: [`ShmMemoryCreator`].
//!
//! A 32-bit memory with 64 KiB pages reserves its whole 4 GiB range plus
//! guard as `PROT_NONE` once, on a 64 KiB boundary (so windows, which sit
//! at 64 KiB multiples of guest address space, start on registry
//! granules), `mprotect`s on grow and never moves. Windows are mapped over
//! pages the host has just grown for them, or over the range of a window
//! unmapped before (see [`super::map`]); the memory keeps the list of its
//! windows so that dropping it retires their registrations before the one
//! `munmap` that releases everything, and the list of ranges unmapped
//! windows left, so that `map` reuses them instead of growing.
//!
//! Other memories (64-bit, custom page sizes) are made the same way, with
//! the reservation wasmtime asks for, but cannot hold windows: they are
//! not in the list `map` looks memories up in, so `map` on them is
//! `ENOTSUP`.
//!
//! Every growth of every memory of the engine (module-defined shared ones
//! too, which wasmtime grows without asking the store's limiter) ends in
//! [`wasmtime::LinearMemory::grow_to`] here, which holds the creator's
//! [`max_memory`](ShmMemoryCreator::with_max_memory).

use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use shmgate_core::Errno;

use super::registry::{GRANULE, Token};
use super::{registry, signals};

/// The largest wasm32 linear memory: 4 GiB.
const WASM32_MAX: usize = 1 << 32;

/// One window of a memory: guest offset, length, and its registration.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) addr: usize,
    pub(crate) len: usize,
    pub(crate) token: Token,
}

/// What the host knows of one live memory: its base and its windows.
#[derive(Debug)]
pub(crate) struct MemoryWindows {
    base: usize,
    windows: Mutex<Vec<Window>>,
    /// Ranges (guest offset, length) that unmapped windows left behind:
    /// private zeroed pages below the memory's size that `map` reuses
    /// before it grows the memory. Sorted, adjacent ranges merged.
    free: Mutex<Vec<(usize, usize)>>,
}

impl MemoryWindows {
    /// The memory's base address.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// The memory's windows.
    pub(crate) fn windows(&self) -> MutexGuard<'_, Vec<Window>> {
        // Tokens and integers: a panic elsewhere leaves nothing half-done.
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn free(&self) -> MutexGuard<'_, Vec<(usize, usize)>> {
        // Integers only: a panic elsewhere leaves nothing half-done.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `len` bytes of address space an unmapped window left (first
    /// fit); its guest offset.
    pub(crate) fn take_free(&self, len: usize) -> Option<usize> {
        let mut free = self.free();
        let i = free.iter().position(|&(_, l)| l >= len)?;
        let (addr, l) = free[i];
        if l == len {
            free.remove(i);
        } else {
            free[i] = (addr + len, l - len);
        }
        Some(addr)
    }

    /// Gives `addr..addr+len` (private pages below the memory's size, no
    /// window) to later `map`s.
    pub(crate) fn give_back(&self, addr: usize, len: usize) {
        let mut free = self.free();
        let i = free.partition_point(|&(a, _)| a < addr);
        free.insert(i, (addr, len));
        // Merge with the next, then with the previous range.
        if i + 1 < free.len() && free[i].0 + free[i].1 == free[i + 1].0 {
            free[i].1 += free[i + 1].1;
            free.remove(i + 1);
        }
        if i > 0 && free[i - 1].0 + free[i - 1].1 == free[i].0 {
            free[i - 1].1 += free[i].1;
            free.remove(i);
        }
    }

    /// Whether a window (live or revoked) starts at `addr`.
    pub(crate) fn has_window_at(&self, addr: usize) -> bool {
        self.windows().iter().any(|w| w.addr == addr)
    }
}

/// Every live memory made by [`ShmMemoryCreator`], by base address.
static MEMORIES: Mutex<Option<HashMap<usize, Arc<MemoryWindows>>>> = Mutex::new(None);

fn memories() -> MutexGuard<'static, Option<HashMap<usize, Arc<MemoryWindows>>>> {
    MEMORIES.lock().unwrap_or_else(|e| e.into_inner())
}

/// The memory at `base`, if [`ShmMemoryCreator`] made it and it is live.
pub(crate) fn memory_at(base: *mut u8) -> Option<Arc<MemoryWindows>> {
    memories().as_ref()?.get(&(base as usize)).cloned()
}

/// A [`wasmtime::MemoryCreator`] whose memories can hold windows of shared
/// memory segments (`shmgate_v1.map`). Install it with
/// [`configure`](crate::wasm::configure), which also sets the engine options
/// it needs.
///
/// It makes every memory of the engine: 32-bit memories with 64 KiB pages
/// can hold windows, others (64-bit, custom page sizes) run as usual and
/// `map` on them is `ENOTSUP`.
#[derive(Debug)]
pub struct ShmMemoryCreator {
    max_memory: usize,
}

impl ShmMemoryCreator {
    /// Creates the creator and installs the process's `SIGBUS`/`SIGSEGV`
    /// handler for windows (once). Create it before any wasmtime `Engine`,
    /// so that wasmtime's own handler sees faults first.
    pub fn new() -> ShmMemoryCreator {
        signals::install();
        ShmMemoryCreator {
            max_memory: usize::MAX,
        }
    }

    /// As [`new`](Self::new), with a ceiling for every memory of the
    /// engine: none is created with more than `max_memory` bytes, none
    /// grows past it (the guest's `memory.grow` returns -1, `map`
    /// `ENOMEM`). It binds where a store's `ResourceLimiter` does not
    /// reach, memories a module declares `shared` itself, whichever
    /// store, module or component they belong to; per-store limits stay
    /// the limiter's and [`share_memory`](crate::wasm::share_memory)'s.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use shmgate_host::wasm::{ShmMemoryCreator, configure};
    ///
    /// let mut config = wasmtime::Config::new();
    /// configure(&mut config).with_host_memory(Arc::new(ShmMemoryCreator::with_max_memory(256 << 20)));
    /// let engine = wasmtime::Engine::new(&config)?;
    /// # Ok::<(), wasmtime::Error>(())
    /// ```
    pub fn with_max_memory(max_memory: u64) -> ShmMemoryCreator {
        signals::install();
        ShmMemoryCreator {
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
        }
    }
}

impl Default for ShmMemoryCreator {
    fn default() -> Self {
        ShmMemoryCreator::new()
    }
}

// SAFETY: the memories it returns satisfy LinearMemory's contract (see the
// impl below): they never move, and `byte_capacity` bytes plus the guard
// wasmtime asked for are reserved.
#[allow(unsafe_code)]
unsafe impl wasmtime::MemoryCreator for ShmMemoryCreator {
    fn new_memory(
        &self,
        ty: wasmtime::MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn wasmtime::LinearMemory>, String> {
        // Only a 32-bit memory with 64 KiB pages can hold windows.
        let windows = !ty.is_64() && ty.page_size_log2() == 16;
        let limit = maximum.unwrap_or(usize::MAX).min(self.max_memory);
        if minimum > limit {
            return Err(format!(
                "memory minimum of {minimum} bytes is above its limit of {limit} bytes"
            ));
        }
        let (capacity, reserved) = if windows {
            (
                limit.min(WASM32_MAX),
                reserved_size_in_bytes.unwrap_or(0).max(WASM32_MAX),
            )
        } else {
            // What wasmtime's own memories reserve: its reservation (or
            // the minimum, if larger); the memory never moves, so it
            // cannot grow past it.
            let reserved = reserved_size_in_bytes
                .unwrap_or(WASM32_MAX)
                .max(minimum)
                .checked_next_multiple_of(crate::sys::page_size())
                .ok_or("reservation size overflows")?;
            (limit.min(reserved), reserved)
        };
        let reserved = reserved
            .checked_add(guard_size_in_bytes)
            .ok_or("reservation size overflows")?;
        let mut memory =
            WindowMemory::reserve(reserved, capacity, windows).map_err(|e| e.to_string())?;
        wasmtime::LinearMemory::grow_to(&mut memory, minimum).map_err(|e| e.to_string())?;
        Ok(Box::new(memory))
    }
}

/// One reserved linear memory.
struct WindowMemory {
    /// What `mmap` returned, and its length (the reservation plus the
    /// slack that aligns `base`).
    mapping: NonNull<u8>,
    mapping_len: usize,
    /// `mapping` rounded up to a 64 KiB boundary.
    base: NonNull<u8>,
    capacity: usize,
    size: usize,
    windows: Arc<MemoryWindows>,
}

// SAFETY: the struct only holds the address of a process-wide mapping that
// it alone owns; wasmtime serialises access to the memory itself.
#[allow(unsafe_code)]
unsafe impl Send for WindowMemory {}
// SAFETY: as for Send; `&self` methods only read plain fields.
#[allow(unsafe_code)]
unsafe impl Sync for WindowMemory {}

impl WindowMemory {
    /// Reserves `reserved` bytes of `PROT_NONE` address space on a 64 KiB
    /// boundary; with `windows`, listed for `map` to find.
    #[allow(unsafe_code)]
    fn reserve(reserved: usize, capacity: usize, windows: bool) -> Result<WindowMemory, Errno> {
        let mapping_len = reserved.checked_add(GRANULE).ok_or(Errno::NOMEM)?;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks
        // replaces nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapping_len,
                libc::PROT_NONE,
                flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::NOMEM);
        }
        let mapping = NonNull::new(p.cast::<u8>()).ok_or(Errno::NOMEM)?;
        let skew = (GRANULE - mapping.as_ptr() as usize % GRANULE) % GRANULE;
        // SAFETY: `skew < GRANULE`, inside the mapping.
        let base = unsafe { mapping.add(skew) };
        let list = windows;
        let windows = Arc::new(MemoryWindows {
            base: base.as_ptr() as usize,
            windows: Mutex::new(Vec::new()),
            free: Mutex::new(Vec::new()),
        });
        if list {
            memories()
                .get_or_insert_with(HashMap::new)
                .insert(base.as_ptr() as usize, Arc::clone(&windows));
        }
        Ok(WindowMemory {
            mapping,
            mapping_len,
            base,
            capacity,
            size: 0,
            windows,
        })
    }
}

// SAFETY: the base never moves; `byte_size` bytes from it are readable and
// writable (or are windows that the signal handler keeps survivable), and
// the reservation covers `byte_capacity` plus wasmtime's guard.
#[allow(unsafe_code)]
unsafe impl wasmtime::LinearMemory for WindowMemory {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.capacity
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if new_size > self.capacity {
            wasmtime::bail!("memory cannot grow past {} bytes", self.capacity);
        }
        // Accessible host pages: the byte size rounded up (memories with
        // custom page sizes need not end on a host page; wasmtime checks
        // their bounds explicitly).
        let page = crate::sys::page_size();
        let (from, to) = (
            self.size.next_multiple_of(page),
            new_size.next_multiple_of(page),
        );
        if to > from {
            // SAFETY: `from..to` lies inside our PROT_NONE reservation
            // (to <= capacity rounded up to a page <= reserved) and holds
            // no window: windows only ever cover pages below `size`.
            let rc = unsafe {
                libc::mprotect(
                    self.base.as_ptr().add(from).cast(),
                    to - from,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
        }
        self.size = self.size.max(new_size);
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for WindowMemory {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        if let Some(map) = memories().as_mut() {
            map.remove(&(self.base.as_ptr() as usize));
        }
        // Retire the windows first, so the signal handler never acts on a
        // range that is about to be someone else's. Nothing runs on this
        // memory any more, so the pages need no replacement.
        for w in self.windows.windows().drain(..) {
            let _ = registry::retire(w.token, |_| Ok::<(), ()>(()));
        }
        // SAFETY: exactly the range `reserve` mapped; wasmtime drops the
        // memory only when no wasm or host code can reach it.
        unsafe { libc::munmap(self.mapping.as_ptr().cast::<c_void>(), self.mapping_len) };
    }
}
