//! Linear memories that can hold windows of shared memory segments, and the
//! signal handling that keeps a shrunk or read-only window from killing the
//! host process.
//!
//! # The memory
//!
//! [`ShmMemoryCreator`] gives wasmtime memories that reserve their whole
//! 4 GiB range plus guard as `PROT_NONE` once, `mprotect` on grow, and never
//! move. A window is the segment mapped `MAP_SHARED | MAP_FIXED` over pages
//! of that range that the host has just grown for it (mapping over pages
//! the guest uses would silently destroy them). Unmapping puts private
//! zeroed pages back; dropping the memory releases everything with one
//! `munmap`.
//!
//! # The signals
//!
//! - `SIGBUS`: another process shrank the segment under a window. The
//!   handler replaces the whole window with `PROT_NONE` pages and returns;
//!   the access runs again and faults with `SIGSEGV`, which wasmtime turns
//!   into a clean trap of that guest (the address is inside its memory).
//! - `SIGSEGV` in host code: a host function (WASI's `fd_read`, say) wrote
//!   into a read-only window, or touched a window revoked as above. The
//!   handler replaces the window with private zeroed pages, so the write
//!   lands there: the host survives and the segment is unchanged. For this
//!   the handler must run *after* wasmtime's (which handles faults in wasm
//!   code and passes the rest on), so [`ShmMemoryCreator::new`] installs it
//!   before the engine exists. If an engine existed earlier, ours runs
//!   first and a guest's own store into a read-only window also lands in
//!   private pages instead of trapping: still nothing reaches the segment.
//!
//! The handler only reads a fixed table of atomics and calls `mmap`, both
//! async-signal-safe; a fault outside every window goes to the previous
//! handler, as if we were not there.

use std::ffi::{c_int, c_void};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};

use shmgate_core::Errno;

/// The largest wasm32 linear memory: 4 GiB.
const WASM32_MAX: usize = 1 << 32;

/// A window slot's state in the signal table.
const FREE: u8 = 0;
/// Being filled in by the registering thread.
const CLAIMED: u8 = 1;
const READ_WRITE: u8 = 2;
const READ_ONLY: u8 = 3;
/// Replaced by `PROT_NONE` after a `SIGBUS`.
const REVOKED: u8 = 4;
/// Replaced by private zeroed pages after a host write or touch.
const DETACHED: u8 = 5;

struct Slot {
    start: AtomicUsize,
    end: AtomicUsize,
    state: AtomicU8,
}

/// Every live window of the process, for the signal handler.
const SLOTS: usize = 1024;
static WINDOWS: [Slot; SLOTS] = [const {
    Slot {
        start: AtomicUsize::new(0),
        end: AtomicUsize::new(0),
        state: AtomicU8::new(FREE),
    }
}; SLOTS];

/// The base and length of every live reservation, so that a `Memory` can be
/// recognised as ours from its base pointer.
static RESERVATIONS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

fn reservations() -> std::sync::MutexGuard<'static, Vec<(usize, usize)>> {
    // The data is plain integers: a panic elsewhere cannot leave it broken.
    RESERVATIONS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `base` is the start of a memory [`ShmMemoryCreator`] made.
pub(crate) fn is_window_memory(base: *mut u8) -> bool {
    reservations().iter().any(|&(b, _)| b == base as usize)
}

/// One more than the highest slot index ever used: lookups outside the
/// signal handler scan only this far (every host call that touches guest
/// memory checks for windows, and most processes have few or none).
static SLOTS_USED: AtomicUsize = AtomicUsize::new(0);

/// The slots that can hold a window.
fn used_slots() -> &'static [Slot] {
    &WINDOWS[..SLOTS_USED.load(Ordering::Acquire).min(SLOTS)]
}

fn register(start: usize, len: usize, writable: bool) -> Result<(), Errno> {
    for (i, slot) in WINDOWS.iter().enumerate() {
        if slot
            .state
            .compare_exchange(FREE, CLAIMED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            SLOTS_USED.fetch_max(i + 1, Ordering::AcqRel);
            slot.start.store(start, Ordering::Release);
            slot.end.store(start + len, Ordering::Release);
            let state = if writable { READ_WRITE } else { READ_ONLY };
            slot.state.store(state, Ordering::Release);
            return Ok(());
        }
    }
    Err(Errno::NOMEM)
}

/// Forgets every window inside `start..end`.
fn unregister_range(start: usize, end: usize) {
    for slot in used_slots() {
        let s = slot.start.load(Ordering::Acquire);
        let state = slot.state.load(Ordering::Acquire);
        if state != FREE && state != CLAIMED && start <= s && s < end {
            slot.state.store(FREE, Ordering::Release);
        }
    }
}

/// The previous `SIGBUS` and `SIGSEGV` handlers, to pass on what is not ours.
static PREV_SIGBUS: OnceLock<libc::sigaction> = OnceLock::new();
static PREV_SIGSEGV: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the handler for `SIGBUS` and `SIGSEGV` once per process.
#[allow(unsafe_code)]
fn install_handlers() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (signal, prev) in [(libc::SIGBUS, &PREV_SIGBUS), (libc::SIGSEGV, &PREV_SIGSEGV)] {
            // SAFETY: a zeroed sigaction is a valid "no handler" value, and
            // `sigemptyset` initialises the mask it is given.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = handler as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            // SAFETY: `sa_mask` is a field of the sigaction we own.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: as above, zeroed is valid; the kernel fills it in.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to live sigaction values; `handler`
            // has the SA_SIGINFO signature.
            let rc = unsafe { libc::sigaction(signal, &action, &mut old) };
            if rc == 0 {
                let _ = prev.set(old);
            }
        }
    });
}

/// The signal handler; see the module documentation.
#[allow(unsafe_code)]
extern "C" fn handler(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler,
    // and for SIGBUS/SIGSEGV `si_addr` is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    for slot in used_slots() {
        let state = slot.state.load(Ordering::Acquire);
        if state == FREE || state == CLAIMED {
            continue;
        }
        let (start, end) = (
            slot.start.load(Ordering::Acquire),
            slot.end.load(Ordering::Acquire),
        );
        if !(start <= addr && addr < end) {
            continue;
        }
        let replace = match (signal, state) {
            (libc::SIGBUS, READ_WRITE | READ_ONLY) => Some((REVOKED, libc::PROT_NONE)),
            (libc::SIGSEGV, READ_ONLY | REVOKED) => {
                Some((DETACHED, libc::PROT_READ | libc::PROT_WRITE))
            }
            _ => None,
        };
        if let Some((new_state, prot)) = replace {
            let flags =
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
            // SAFETY: `start..end` is a registered window inside a live
            // reservation of ours (reservations unregister their windows
            // before they are unmapped), so MAP_FIXED replaces only window
            // pages. mmap is async-signal-safe.
            let p = unsafe { libc::mmap(start as *mut c_void, end - start, prot, flags, -1, 0) };
            if p != libc::MAP_FAILED {
                slot.state.store(new_state, Ordering::Release);
                return; // the access runs again on the new pages
            }
        }
        break;
    }
    let prev = if signal == libc::SIGBUS {
        &PREV_SIGBUS
    } else {
        &PREV_SIGSEGV
    };
    // SAFETY: passing on the signal exactly as wasmtime does: call the
    // previous SA_SIGINFO or plain handler, or restore the default
    // disposition and return so the access faults again and the process
    // dies as it would without us.
    unsafe {
        match prev.get() {
            Some(old) if old.sa_flags & libc::SA_SIGINFO != 0 => {
                let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                    std::mem::transmute(old.sa_sigaction);
                f(signal, info, context);
            }
            Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
                let f: extern "C" fn(c_int) = std::mem::transmute(old.sa_sigaction);
                f(signal);
            }
            Some(old) => {
                libc::sigaction(signal, old, std::ptr::null_mut());
            }
            None => {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// A [`wasmtime::MemoryCreator`] whose memories can hold windows of shared
/// memory segments (`shmgate_v1.map`). Install it with
/// [`configure`](crate::wasm::configure), which also sets the engine options
/// it needs.
#[derive(Debug)]
pub struct ShmMemoryCreator {
    _private: (),
}

impl ShmMemoryCreator {
    /// Creates the creator and installs the process's `SIGBUS`/`SIGSEGV`
    /// handler for windows (once). Create it before any wasmtime `Engine`,
    /// so that wasmtime's own handler sees faults first.
    pub fn new() -> ShmMemoryCreator {
        install_handlers();
        ShmMemoryCreator { _private: () }
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
        if ty.is_64() || ty.is_shared() || ty.page_size_log2() != 16 {
            return Err(
                "shmgate windows need a 32-bit, non-shared memory with 64 KiB pages".into(),
            );
        }
        let capacity = maximum.unwrap_or(WASM32_MAX).min(WASM32_MAX);
        if minimum > capacity {
            return Err("memory minimum above its maximum".into());
        }
        let reserved = reserved_size_in_bytes
            .unwrap_or(0)
            .max(WASM32_MAX)
            .checked_add(guard_size_in_bytes)
            .ok_or("reservation size overflows")?;
        let memory = WindowMemory::reserve(reserved, capacity).map_err(|e| e.to_string())?;
        let mut memory = memory;
        wasmtime::LinearMemory::grow_to(&mut memory, minimum).map_err(|e| e.to_string())?;
        Ok(Box::new(memory))
    }
}

/// One reserved linear memory.
struct WindowMemory {
    base: NonNull<u8>,
    reserved: usize,
    capacity: usize,
    size: usize,
}

// SAFETY: the struct only holds the address of a process-wide mapping that
// it alone owns; wasmtime serialises access to the memory itself.
#[allow(unsafe_code)]
unsafe impl Send for WindowMemory {}
// SAFETY: as for Send; `&self` methods only read plain fields.
#[allow(unsafe_code)]
unsafe impl Sync for WindowMemory {}

impl WindowMemory {
    /// Reserves `reserved` bytes of `PROT_NONE` address space.
    #[allow(unsafe_code)]
    fn reserve(reserved: usize, capacity: usize) -> Result<WindowMemory, Errno> {
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        // SAFETY: a fresh anonymous mapping at an address the kernel picks
        // replaces nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserved,
                libc::PROT_NONE,
                flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Errno::NOMEM);
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or(Errno::NOMEM)?;
        reservations().push((base.as_ptr() as usize, reserved));
        Ok(WindowMemory {
            base,
            reserved,
            capacity,
            size: 0,
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
        if new_size > self.size {
            // SAFETY: `size..new_size` lies inside our PROT_NONE reservation
            // (new_size <= capacity <= reserved) and holds no window: windows
            // only ever cover pages below `size`.
            let rc = unsafe {
                libc::mprotect(
                    self.base.as_ptr().add(self.size).cast(),
                    new_size - self.size,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            self.size = new_size;
        }
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

impl Drop for WindowMemory {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        let base = self.base.as_ptr() as usize;
        // Forget the windows first, so the signal handler never replaces
        // pages in a range that is about to be someone else's.
        unregister_range(base, base + self.reserved);
        reservations().retain(|&(b, _)| b != base);
        // SAFETY: exactly the range `reserve` mapped; wasmtime drops the
        // memory only when no wasm or host code can reach it.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.reserved) };
    }
}

/// Maps `len` bytes of `fd` at `offset` over guest bytes `addr..addr+len`
/// of the memory at `base`, shared, readable and maybe writable.
///
/// The caller guarantees: `base` is a live [`ShmMemoryCreator`] memory
/// (checked with [`is_window_memory`]), `addr..addr+len` lies inside its
/// accessible size and is page-aligned, and no window covers any of it.
#[allow(unsafe_code)]
pub(crate) fn map_window(
    base: *mut u8,
    addr: usize,
    len: usize,
    fd: BorrowedFd<'_>,
    offset: u64,
    writable: bool,
) -> Result<(), Errno> {
    let start = (base as usize).checked_add(addr).ok_or(Errno::INVAL)?;
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let offset = libc::off_t::try_from(offset).map_err(|_| Errno::OVERFLOW)?;
    let flags = libc::MAP_SHARED | libc::MAP_FIXED | libc::MAP_POPULATE;
    // SAFETY: by the caller's guarantee the range is accessible memory of a
    // reservation we own and holds no window; the guest's data there was
    // just grown for this window, so MAP_FIXED destroys nothing in use.
    let p = unsafe {
        libc::mmap(
            start as *mut c_void,
            len,
            prot,
            flags,
            fd.as_raw_fd(),
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOMEM);
        return Err(Errno::from_raw(
            u16::try_from(e).unwrap_or(Errno::NOMEM.raw()),
        ));
    }
    if let Err(e) = register(start, len, writable) {
        let _ = restore_private(start, len);
        return Err(e);
    }
    Ok(())
}

/// Puts private zeroed pages back over the window at `addr..addr+len` of
/// the memory at `base`. The caller guarantees it is exactly one window.
pub(crate) fn unmap_window(base: *mut u8, addr: usize, len: usize) -> Result<(), Errno> {
    let start = (base as usize).checked_add(addr).ok_or(Errno::INVAL)?;
    unregister_range(start, start + 1);
    restore_private(start, len)
}

#[allow(unsafe_code)]
fn restore_private(start: usize, len: usize) -> Result<(), Errno> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    // SAFETY: `start..start+len` is a window range inside our reservation
    // (callers' guarantee), which becomes ordinary zeroed guest memory.
    let p = unsafe {
        libc::mmap(
            start as *mut c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(Errno::NOMEM)
    } else {
        Ok(())
    }
}

/// Whether any registered window overlaps `start..end` (host addresses).
fn overlaps_window(start: usize, end: usize) -> bool {
    used_slots().iter().any(|slot| {
        let state = slot.state.load(Ordering::Acquire);
        state != FREE
            && state != CLAIMED
            && slot.start.load(Ordering::Acquire) < end
            && start < slot.end.load(Ordering::Acquire)
    })
}

/// The guest bytes `start..start+len` of `memory`, and the store's data,
/// for a host function.
///
/// The slice is built from the memory's raw base, so no Rust reference
/// ever covers bytes outside the range, and a range that touches any
/// window is refused: a window's bytes can change under us at any time
/// (another process writes them), so they are never lent out as a slice.
///
/// # Errors
///
/// `EFAULT` if the range is not inside the memory or touches a window.
#[allow(unsafe_code)]
pub(crate) fn guest_bytes_and_data<'a, T: 'static>(
    caller: &'a mut wasmtime::Caller<'_, T>,
    memory: &wasmtime::Memory,
    start: u32,
    len: u32,
) -> Result<(&'a mut [u8], &'a mut T), Errno> {
    let base = memory.data_ptr(&*caller);
    let size = memory.data_size(&*caller);
    let (start, len) = (start as usize, len as usize);
    let end = start
        .checked_add(len)
        .filter(|&end| end <= size)
        .ok_or(Errno::FAULT)?;
    if len > 0 && overlaps_window(base as usize + start, base as usize + end) {
        return Err(Errno::FAULT);
    }
    // SAFETY: `start..end` is inside the memory's accessible bytes
    // (checked against `data_size`) and holds no window (checked against
    // the registry), so only this store's code could touch it; the slice
    // borrows `caller` mutably for 'a, so no wasm runs and the memory
    // cannot grow or be dropped while it lives. The store data handed out
    // alongside is a separate object, not the memory.
    let bytes = unsafe { std::slice::from_raw_parts_mut(base.add(start), len) };
    Ok((bytes, caller.data_mut()))
}

/// A host mapping of segment pages that host code itself touches (the
/// `atomic32` fallback for guests without wasm atomics), registered like a
/// window: if the segment shrinks under it, the signal handler keeps the
/// access from killing the process (it lands in private pages instead).
#[derive(Debug)]
pub(crate) struct GuardedMapping {
    raw: super::RawMapping,
}

impl GuardedMapping {
    /// `mmap`s `len` bytes of `fd` at `offset`, shared, and registers them.
    pub(crate) fn new(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> Result<GuardedMapping, Errno> {
        let raw = super::mmap(fd, offset, len, writable)?;
        register(raw.as_ptr() as usize, len, writable)?;
        Ok(GuardedMapping { raw })
    }

    /// The mapping, for its atomics.
    pub(crate) fn raw(&self) -> &super::RawMapping {
        &self.raw
    }
}

impl Drop for GuardedMapping {
    fn drop(&mut self) {
        // Forget it before `raw` unmaps it.
        let start = self.raw.as_ptr() as usize;
        unregister_range(start, start + 1);
    }
}
