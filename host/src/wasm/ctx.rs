//! The per-store state behind the `shmgate_v1` imports: the policy, the
//! handle table, and what this store created.

use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use shmgate_core::{Errno, Mode, OFlags};

use super::policy::{HANDLES_LIMIT, ShmPolicy};
use crate::segment::{Identity, open_shared, unlink_if_same};
use crate::sys::window::guarded::GuardedMapping;
use crate::sys::window::guest::GuestRange;
use crate::sys::window::map::{map_window, unmap_window};
use crate::sys::window::memory::MemoryWindows;
use crate::sys::window::wait::wake_private;
use crate::sys::{self};

use crate::wait::{WaitFuture, WaitPlan};
use crate::{Segment, unlink};

/// Window offsets and lengths are multiples of the wasm page size.
pub(crate) const WINDOW_ALIGN: u64 = 64 << 10;

/// The most pages a store keeps mapped for `wait32`/`notify`.
const FUTEX_PAGES: usize = 16;

/// The shmgate state of one wasmtime store: put it in the store's data and
/// reach it through [`add_to_linker`](super::add_to_linker).
///
/// Dropping it closes every handle and, with
/// [`auto_unlink`](super::ShmPolicyBuilder::auto_unlink), unlinks the
/// segments this store created (if their names still refer to them).
#[derive(Debug)]
pub struct ShmCtx {
    policy: ShmPolicy,
    table: HandleTable,
    /// Segments this store created and has not unlinked (host name and
    /// identity), for `auto_unlink`.
    created: Vec<(Arc<[u8]>, Identity)>,
    /// How many segments this store has created over its life, for the
    /// `max_created` quota (unlinking one does not give the create back).
    created_total: usize,
    /// Windows mapped into this store's memories (pruned of memories that
    /// no longer exist, see [`ShmCtx::prune_windows`]).
    windows: Vec<WindowRec>,
    /// Host mappings of the pages `wait32`/`notify` used last, by
    /// `(handle, page offset)`; at most [`FUTEX_PAGES`], so a guest cannot
    /// make the host exhaust its mappings (`vm.max_map_count`). A pending
    /// wait holds its own `Arc`, so closing or evicting never unmaps a
    /// word the kernel waits on.
    futex_pages: HashMap<(i32, u64), Arc<GuardedMapping>>,
    interrupt: Arc<Interrupt>,
}

/// A window in this store's books: which memory, where, how long. The
/// memory itself owns the registration; `memory` is weak so a window of a
/// memory that was dropped (the store was, or the context moved to a new
/// store with `Store::into_data`) stops counting.
#[derive(Debug, Clone)]
pub(crate) struct WindowRec {
    memory: Weak<MemoryWindows>,
    memory_base: usize,
    addr: u32,
    len: u32,
}

impl WindowRec {
    /// The host address range of the window.
    fn host_range(&self) -> std::ops::Range<usize> {
        let start = self.memory_base + self.addr as usize;
        start..start + self.len as usize
    }
}

/// A store's interrupt (`crate::wait`'s: waits sleep on its word).
pub(crate) use crate::wait::Interrupt;

/// What `map` needs after its checks: the window length and access.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapPlan {
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) writable: bool,
}

/// Interrupts the `wait32` calls of one store from any thread: they return
/// `-EINTR` at once (they are woken, not polled), and new ones return it
/// at once, until [`clear`](WaitInterrupt::clear).
#[derive(Clone, Debug)]
pub struct WaitInterrupt(Arc<Interrupt>);

impl WaitInterrupt {
    /// `futex(FUTEX_WAKE)`: makes every current and future `wait32` of the
    /// store return `EINTR`.
    pub fn interrupt(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.seq.fetch_add(1, Ordering::SeqCst);
        wake_private(&self.0.seq);
    }

    /// Lets `wait32` block again.
    pub fn clear(&self) {
        self.0.flag.store(false, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Entry {
    seg: Segment,
    /// Opened `RDWR`.
    writable: bool,
    /// This handle's open created the segment (it may size it).
    created_here: bool,
}

impl ShmCtx {
    /// A context enforcing `policy`.
    pub fn new(policy: ShmPolicy) -> ShmCtx {
        ShmCtx {
            policy,
            table: HandleTable::default(),
            created: Vec::new(),
            created_total: 0,
            windows: Vec::new(),
            futex_pages: HashMap::new(),
            interrupt: Arc::default(),
        }
    }

    /// The policy this context enforces.
    pub fn policy(&self) -> &ShmPolicy {
        &self.policy
    }

    /// How many handles the guest holds open.
    pub fn open_handles(&self) -> usize {
        self.table.len
    }

    /// The host names of the segments this store created and did not
    /// unlink, oldest first.
    pub fn created(&self) -> impl Iterator<Item = &[u8]> {
        self.created.iter().map(|(name, _)| &**name)
    }

    /// `open`: checks flags, mode, name and rights, then opens
    /// `<prefix><name>` and returns a new handle.
    pub(crate) fn open(&mut self, guest_name: &[u8], oflags: u32, mode: u32) -> Result<u32, Errno> {
        let flags = OFlags::from_bits(oflags)?;
        let mode = Mode::from_bits(mode)?;
        if mode.is_special() {
            return Err(Errno::PERM);
        }
        let name = self.policy.resolve(guest_name)?;
        let p = &self.policy;
        let denied = (p.read_only && flags.needs_write())
            || (flags.contains(OFlags::CREATE) && !p.allow_create)
            || (flags.contains(OFlags::TRUNC) && !p.allow_resize);
        if denied {
            return Err(Errno::ACCES);
        }
        if self.table.len >= p.max_handles.min(HANDLES_LIMIT) {
            return Err(Errno::MFILE);
        }
        let mode = Mode::from_bits(mode.bits() & p.create_mode.bits())?;
        let (seg, created_here) = self.open_counting_creates(&name, flags, mode)?;
        if created_here {
            self.created_total += 1;
            let identity = seg.identity()?;
            self.created.push((name, identity));
        }
        let writable = !flags.is_read_only();
        self.table.insert(Entry {
            seg,
            writable,
            created_here,
        })
    }

    /// Opens `name`, telling whether this open created it, so creates can
    /// be counted against `max_created` exactly. A plain `CREATE` is tried
    /// as `CREATE | EXCL` first and falls back to opening what exists.
    fn open_counting_creates(
        &self,
        name: &Arc<[u8]>,
        flags: OFlags,
        mode: Mode,
    ) -> Result<(Segment, bool), Errno> {
        let open = |flags| open_shared(Arc::clone(name), flags, mode).map_err(|e| e.errno());
        let existing_only =
            OFlags::from_bits(flags.bits() & !(OFlags::CREATE | OFlags::EXCL).bits())?;
        if !flags.contains(OFlags::CREATE) {
            return Ok((open(flags)?, false));
        }
        let may_create = self.created_total < self.policy.max_created;
        // A name can be unlinked between our two attempts; a few rounds
        // settle it, and a guest cannot make this loop forever alone.
        for _ in 0..4 {
            if may_create {
                match open(flags | OFlags::EXCL) {
                    Ok(seg) => return Ok((seg, true)),
                    Err(Errno::EXIST) if !flags.contains(OFlags::EXCL) => {}
                    Err(e) => return Err(e),
                }
            } else if flags.contains(OFlags::EXCL) {
                return Err(Errno::DQUOT);
            }
            match open(existing_only) {
                Ok(seg) => return Ok((seg, false)),
                Err(Errno::NOENT) if !may_create => return Err(Errno::DQUOT),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Errno::AGAIN)
    }

    /// Hands the guest a handle to a segment the embedder opened itself: an
    /// anonymous (`memfd`) segment, say, possibly sealed, that has no name
    /// the guest could open. The guest can use it as any handle it opened
    /// (`read`, `map`, `wait32`, ...), writable only if the segment is
    /// writable and neither `read_only` nor the policy says otherwise; it
    /// may not `set_size` it without the resize right.
    ///
    /// # Errors
    ///
    /// `EMFILE` if the store already holds its `max_handles`.
    pub fn grant(&mut self, segment: Segment, read_only: bool) -> Result<u32, Errno> {
        if self.table.len >= self.policy.max_handles.min(HANDLES_LIMIT) {
            return Err(Errno::MFILE);
        }
        // A segment sealed against writes cannot be mapped writable.
        let write_sealed = segment.seals().is_ok_and(|s| {
            s.contains(crate::Seals::WRITE) || s.contains(crate::Seals::FUTURE_WRITE)
        });
        let writable =
            segment.is_writable() && !write_sealed && !read_only && !self.policy.read_only;
        self.table.insert(Entry {
            seg: segment,
            writable,
            created_here: false,
        })
    }

    /// `unlink`: needs the unlink right, and a grant that is not read-only.
    pub(crate) fn unlink(&mut self, guest_name: &[u8]) -> Result<(), Errno> {
        let name = self.policy.resolve(guest_name)?;
        if !self.policy.allow_unlink || self.policy.read_only {
            return Err(Errno::ACCES);
        }
        unlink(&*name).map_err(|e| e.errno())?;
        self.created.retain(|(created, _)| *created != name);
        Ok(())
    }

    /// `close`. Windows of the segment stay mapped until `unmap`.
    pub(crate) fn close(&mut self, handle: i32) -> Result<(), Errno> {
        self.table.remove(handle)?;
        self.futex_pages.retain(|&(h, _), _| h != handle);
        Ok(())
    }

    /// A handle to interrupt this store's `wait32` calls from another
    /// thread (on shutdown, say).
    pub fn interrupt_handle(&self) -> WaitInterrupt {
        WaitInterrupt(Arc::clone(&self.interrupt))
    }

    /// Forgets the windows of memories that no longer exist.
    fn prune_windows(&mut self) {
        self.windows.retain(|w| w.memory.strong_count() > 0);
    }

    /// The bytes of the windows currently mapped into this store's
    /// memories.
    pub fn mapped_bytes(&self) -> u64 {
        self.live_windows().map(|w| u64::from(w.len)).sum()
    }

    /// How many windows are mapped into this store's memories.
    pub fn mapped_windows(&self) -> usize {
        self.live_windows().count()
    }

    fn live_windows(&self) -> impl Iterator<Item = &WindowRec> {
        self.windows.iter().filter(|w| w.memory.strong_count() > 0)
    }

    /// `EFAULT` if a guest buffer overlaps one of this store's windows:
    /// their bytes are for loads and stores, never for `read`/`write`.
    pub(crate) fn check_buffer(&self, range: &GuestRange<'_>) -> Result<(), Errno> {
        let (start, end) = (range.addr(), range.addr() + range.len());
        let hit = range.len() > 0
            && self.live_windows().any(|w| {
                let r = w.host_range();
                r.start < end && start < r.end
            });
        if hit { Err(Errno::FAULT) } else { Ok(()) }
    }

    /// The checks of `map`: handle, `prot`, alignment, bounds, rights and
    /// the mapped-bytes quota. The caller then finds room (a range an
    /// `unmap` freed, or new pages) and maps.
    pub(crate) fn plan_map(
        &mut self,
        handle: i32,
        offset: i64,
        len: i32,
        prot: i32,
    ) -> Result<MapPlan, Errno> {
        let entry = self.table.get(handle)?;
        // prot: 1 read, 2 write; reading is always part of it.
        if prot & !3 != 0 || prot & 1 == 0 {
            return Err(Errno::INVAL);
        }
        let writable = prot & 2 != 0;
        let offset = u64::try_from(offset).map_err(|_| Errno::INVAL)?;
        let len = u32::try_from(len).map_err(|_| Errno::INVAL)?;
        if len == 0 || offset % WINDOW_ALIGN != 0 || u64::from(len) % WINDOW_ALIGN != 0 {
            return Err(Errno::INVAL);
        }
        if writable && (self.policy.read_only || !entry.writable) {
            return Err(Errno::ACCES);
        }
        let size = entry.seg.len().map_err(|e| e.errno())?;
        if offset
            .checked_add(u64::from(len))
            .is_none_or(|end| end > size)
        {
            return Err(Errno::NXIO);
        }
        self.prune_windows();
        if self.mapped_bytes() + u64::from(len) > self.policy.max_mapped
            || self.windows.len() >= self.policy.max_windows
        {
            return Err(Errno::NOMEM);
        }
        Ok(MapPlan {
            offset,
            len,
            writable,
        })
    }

    /// Maps the planned window over guest bytes `addr..` of `memory`,
    /// which the caller has just grown for it or taken from the ranges
    /// unmapped windows left.
    pub(crate) fn map_at(
        &mut self,
        handle: i32,
        plan: MapPlan,
        memory: &Arc<MemoryWindows>,
        addr: u32,
    ) -> Result<(), Errno> {
        let entry = self.table.get(handle)?;
        map_window(
            memory,
            addr as usize,
            plan.len as usize,
            std::os::fd::AsFd::as_fd(&entry.seg),
            plan.offset,
            plan.writable,
        )?;
        self.windows.push(WindowRec {
            memory: Arc::downgrade(memory),
            memory_base: memory.base(),
            addr,
            len: plan.len,
        });
        Ok(())
    }

    /// `unmap`: `addr`/`len` must be exactly one window of `memory`;
    /// private zeroed pages take its place. If they cannot (no memory),
    /// the window stays, registered, and the error is returned.
    pub(crate) fn unmap(
        &mut self,
        memory: Option<&Arc<MemoryWindows>>,
        addr: i32,
        len: i32,
    ) -> Result<(), Errno> {
        self.prune_windows();
        let memory = memory.ok_or(Errno::INVAL)?;
        let (addr, len) = (addr as u32, len as u32);
        let i = self
            .windows
            .iter()
            .position(|w| {
                w.memory.as_ptr() == Arc::as_ptr(memory) && w.addr == addr && w.len == len
            })
            .ok_or(Errno::INVAL)?;
        unmap_window(memory, addr as usize, len as usize)?;
        self.windows.swap_remove(i);
        Ok(())
    }

    /// The shared word at `offset` of the handle's segment, through a host
    /// mapping of its page (kept until the handle closes).
    fn futex_word(
        &mut self,
        handle: i32,
        offset: i64,
    ) -> Result<(&Arc<GuardedMapping>, usize), Errno> {
        let entry = self.table.get(handle)?;
        let offset = u64::try_from(offset).map_err(|_| Errno::INVAL)?;
        if offset % 4 != 0 {
            return Err(Errno::INVAL);
        }
        let size = entry.seg.len().map_err(|e| e.errno())?;
        if offset.checked_add(4).is_none_or(|end| end > size) {
            return Err(Errno::NXIO);
        }
        let page = sys::page_size();
        let page_start = offset - offset % page as u64;
        let within = usize::try_from(offset - page_start).map_err(|_| Errno::INVAL)?;
        let key = (handle, page_start);
        // A page a peer's shrink diverted to private pages is mapped again:
        // the segment is back to at least `offset + 4` bytes.
        if self.futex_pages.get(&key).is_some_and(|m| !m.intact()) {
            self.futex_pages.remove(&key);
        }
        if !self.futex_pages.contains_key(&key) && self.futex_pages.len() >= FUTEX_PAGES {
            // Forget any one: a later call maps its page again.
            let victim = self.futex_pages.keys().next().copied();
            if let Some(victim) = victim {
                self.futex_pages.remove(&victim);
            }
        }
        // The whole page, even past the end of the segment: the bounds were
        // checked against the size now, and a segment shrunk later is the
        // signal handler's (the mapping is registered like a window).
        // Writable for handles opened RDWR, for `atomic32`.
        let writable = entry.writable;
        let mapping = match self.futex_pages.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let fd = std::os::fd::AsFd::as_fd(&entry.seg);
                e.insert(Arc::new(GuardedMapping::new(
                    fd, page_start, page, writable,
                )?))
            }
        };
        Ok((mapping, within))
    }

    /// The checks of `wait32` (handle `EBADF`, offset `EINVAL`/`ENXIO`),
    /// and everything a wait needs, owned: the word's page mapping (an
    /// `Arc`, alive until the wait ends even if the handle is closed or
    /// the store dropped), the interrupt, and the deadline from
    /// `timeout_ns` (negative: none of its own) and the policy's
    /// `max_wait` (one too far to express means none). Shared by the sync
    /// and async `wait32`, so both check exactly the same things.
    pub(crate) fn plan_wait(
        &mut self,
        handle: i32,
        offset: i64,
        expected: i32,
        timeout_ns: i64,
    ) -> Result<WaitPlan, Errno> {
        let limit = self.policy.max_wait;
        let interrupt = Arc::clone(&self.interrupt);
        let (page, within) = self.futex_word(handle, offset)?;
        let page = Arc::clone(page);
        let wanted =
            u64::try_from(timeout_ns).map_or(limit, |ns| Duration::from_nanos(ns).min(limit));
        Ok(WaitPlan {
            page,
            within,
            expected: expected as u32,
            deadline: Instant::now().checked_add(wanted),
            interrupt,
        })
    }

    /// `wait32`: blocks while the shared word at `offset` holds `expected`,
    /// until `notify`, the timeout (negative: none), the policy's
    /// `max_wait`, or the interrupt handle.
    ///
    /// It sleeps in one `futex_waitv` on the shared word and the store's
    /// interrupt word: no periodic wake-ups (on kernels before 5.16 it
    /// falls back to 20 ms slices). A deadline too far to express (a huge
    /// `max_wait`) means no deadline.
    pub(crate) fn wait32(
        &mut self,
        handle: i32,
        offset: i64,
        expected: i32,
        timeout_ns: i64,
    ) -> Result<(), Errno> {
        self.plan_wait(handle, offset, expected, timeout_ns)?
            .block()
    }

    /// The async `wait32`: the same checks as [`wait32`](Self::wait32)
    /// (through [`plan_wait`](Self::plan_wait)), then a future that waits
    /// without blocking the thread polling it and gives the same results.
    /// The future borrows nothing (`Send + 'static`): call this with the
    /// store, then await it after letting go of the store. Dropping it
    /// cancels the wait.
    pub(crate) fn wait32_async(
        &mut self,
        handle: i32,
        offset: i64,
        expected: i32,
        timeout_ns: i64,
    ) -> WaitFuture {
        match self.plan_wait(handle, offset, expected, timeout_ns) {
            Ok(plan) => plan.into_future(),
            Err(e) => WaitFuture::ready(Err(e)),
        }
    }

    /// `notify`: wakes up to `count` waiters (as unsigned; `-1` wakes all)
    /// on the shared word at `offset`, in any process.
    ///
    /// A waiter is waiting for this call, so when the word's page is
    /// already mapped (an earlier call) and intact, the waiters are woken
    /// first and the bounds looked up after (an `fstat`, which costs as much
    /// as the wake itself): the call still fails with `ENXIO` for a word
    /// past the end of the segment, having woken its waiters early, which
    /// waiters must allow for anyway (spurious wake-ups). Otherwise the
    /// bounds are checked before anything is mapped, as in `wait32`.
    pub(crate) fn notify(&mut self, handle: i32, offset: i64, count: i32) -> Result<usize, Errno> {
        let count = (count as u32).min(i32::MAX as u32);
        if let Some(woken) = self.notify_mapped(handle, offset, count)? {
            return woken;
        }
        let (guard, within) = self.futex_word(handle, offset)?;
        let word = guard.raw().atomic_u32(within)?;
        let woken = sys::futex_wake(word, count)?;
        if guard.intact() {
            Ok(woken)
        } else {
            Err(Errno::NXIO)
        }
    }

    /// `notify` through a page mapped by an earlier call: `None` if there
    /// is none (or it is no longer intact).
    fn notify_mapped(
        &self,
        handle: i32,
        offset: i64,
        count: u32,
    ) -> Result<Option<Result<usize, Errno>>, Errno> {
        let entry = self.table.get(handle)?;
        let offset = u64::try_from(offset).map_err(|_| Errno::INVAL)?;
        if offset % 4 != 0 {
            return Err(Errno::INVAL);
        }
        let page = sys::page_size() as u64;
        let page_start = offset - offset % page;
        let within = usize::try_from(offset - page_start).map_err(|_| Errno::INVAL)?;
        let Some(guard) = self
            .futex_pages
            .get(&(handle, page_start))
            .filter(|m| m.intact())
        else {
            return Ok(None);
        };
        let woken = sys::futex_wake(guard.raw().atomic_u32(within)?, count);
        // The same bounds as `futex_word`, now.
        let size = entry.seg.len().map_err(|e| e.errno())?;
        if offset.checked_add(4).is_none_or(|end| end > size) || !guard.intact() {
            return Ok(Some(Err(Errno::NXIO)));
        }
        Ok(Some(woken))
    }

    /// `atomic32`: an atomic operation on the shared `u32` at `offset`,
    /// done by the host for guests built without wasm atomics. Returns the
    /// old value (0 for a store). `op`: 0 load, 1 store, 2 fetch-add,
    /// 3 swap, 4 compare-exchange (stores `operand` if the value was
    /// `expected`).
    pub(crate) fn atomic32(
        &mut self,
        handle: i32,
        offset: i64,
        op: i32,
        operand: i32,
        expected: i32,
    ) -> Result<u32, Errno> {
        if !(0..=4).contains(&op) {
            return Err(Errno::INVAL);
        }
        if op != 0 && !self.table.get(handle)?.writable {
            return Err(Errno::BADF);
        }
        let (guard, within) = self.futex_word(handle, offset)?;
        let word = guard.raw().atomic_u32(within)?;
        let (operand, expected) = (operand as u32, expected as u32);
        let old = match op {
            0 => word.load(Ordering::SeqCst),
            1 => {
                word.store(operand, Ordering::SeqCst);
                0
            }
            2 => word.fetch_add(operand, Ordering::SeqCst),
            3 => word.swap(operand, Ordering::SeqCst),
            _ => match word.compare_exchange(expected, operand, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(old) | Err(old) => old,
            },
        };
        // An operation on a page a peer cut off did not reach the segment.
        if guard.intact() {
            Ok(old)
        } else {
            Err(Errno::NXIO)
        }
    }

    /// `size`.
    pub(crate) fn size(&self, handle: i32) -> Result<u64, Errno> {
        self.table.get(handle)?.seg.len().map_err(|e| e.errno())
    }

    /// `set_size`: needs a writable handle and the resize right, unless
    /// this handle created the segment; bounded by `max_segment_size`.
    pub(crate) fn set_size(&self, handle: i32, size: i64) -> Result<(), Errno> {
        let entry = self.table.get(handle)?;
        if !entry.writable {
            return Err(Errno::BADF);
        }
        if !(self.policy.allow_resize || entry.created_here) {
            return Err(Errno::ACCES);
        }
        let size = u64::try_from(size).map_err(|_| Errno::INVAL)?;
        if size > self.policy.max_segment_size {
            return Err(Errno::FBIG);
        }
        entry.seg.set_len(size).map_err(|e| e.errno())
    }

    /// `read`: copies from the segment at `offset` into `buf` (guest
    /// memory, by the kernel, for the core ABI; a host buffer that becomes
    /// a `list<u8>` for components); short at the end of the segment.
    pub(crate) fn read(&self, handle: i32, offset: i64, buf: impl ReadBuf) -> Result<usize, Errno> {
        let entry = self.table.get(handle)?;
        buf.check(self)?;
        let offset = checked_range(offset, buf.len())?;
        buf.pread(entry.seg.fd(), offset)
    }

    /// `write`: copies `buf` (guest memory or a lifted `list<u8>`) into the
    /// segment at `offset`; short at the end of the segment, never grows
    /// it.
    pub(crate) fn write(
        &self,
        handle: i32,
        offset: i64,
        buf: impl WriteBuf,
    ) -> Result<usize, Errno> {
        let entry = self.table.get(handle)?;
        if !entry.writable {
            return Err(Errno::BADF);
        }
        buf.check(self)?;
        let offset = checked_range(offset, buf.len())?;
        let room = entry.seg.write_room(offset, buf.len())?;
        if room == 0 {
            return Ok(0);
        }
        buf.prefix(room).pwrite(entry.seg.fd(), offset)
    }
}

/// The buffer of a `read` or `write`: guest memory ([`GuestRange`], the
/// core ABI) or host memory (the component ABI, whose `list<u8>` wasmtime
/// lifts and lowers). [`ShmCtx::read`] and [`ShmCtx::write`] apply the same
/// rules to both; only the copy differs.
pub(crate) trait IoBuf: Sized {
    /// How many bytes.
    fn len(&self) -> usize;
    /// Whether the store lets this buffer be used: `EFAULT` for guest
    /// memory inside a window. Host memory is never a window.
    fn check(&self, _ctx: &ShmCtx) -> Result<(), Errno> {
        Ok(())
    }
}

/// A buffer `read` copies into.
pub(crate) trait ReadBuf: IoBuf {
    /// `pread` into the buffer.
    fn pread(self, fd: BorrowedFd<'_>, offset: u64) -> Result<usize, Errno>;
}

/// A buffer `write` copies from.
pub(crate) trait WriteBuf: IoBuf {
    /// The first `n` bytes (at most all of them).
    fn prefix(self, n: usize) -> Self;
    /// `pwrite` from the buffer.
    fn pwrite(self, fd: BorrowedFd<'_>, offset: u64) -> Result<usize, Errno>;
}

impl IoBuf for GuestRange<'_> {
    fn len(&self) -> usize {
        GuestRange::len(self)
    }
    fn check(&self, ctx: &ShmCtx) -> Result<(), Errno> {
        ctx.check_buffer(self)
    }
}

impl ReadBuf for GuestRange<'_> {
    fn pread(self, fd: BorrowedFd<'_>, offset: u64) -> Result<usize, Errno> {
        GuestRange::pread(&self, fd, offset)
    }
}

impl WriteBuf for GuestRange<'_> {
    fn prefix(self, n: usize) -> Self {
        GuestRange::prefix(self, n)
    }
    fn pwrite(self, fd: BorrowedFd<'_>, offset: u64) -> Result<usize, Errno> {
        GuestRange::pwrite(&self, fd, offset)
    }
}

impl IoBuf for &mut [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

impl ReadBuf for &mut [u8] {
    fn pread(self, fd: BorrowedFd<'_>, offset: u64) -> Result<usize, Errno> {
        sys::pread(fd, self, offset)
    }
}

impl IoBuf for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
}

impl WriteBuf for &[u8] {
    fn prefix(self, n: usize) -> Self {
        &self[..n.min(self.len())]
    }
    fn pwrite(self, fd: BorrowedFd<'_>, offset: u64) -> Result<usize, Errno> {
        sys::pwrite(fd, self, offset)
    }
}

/// `EINVAL` for a negative offset, `EOVERFLOW` if `offset + len` passes
/// `i64::MAX` (the largest file offset).
fn checked_range(offset: i64, len: usize) -> Result<u64, Errno> {
    let start = u64::try_from(offset).map_err(|_| Errno::INVAL)?;
    let len = i64::try_from(len).map_err(|_| Errno::OVERFLOW)?;
    offset.checked_add(len).ok_or(Errno::OVERFLOW)?;
    Ok(start)
}

impl Drop for ShmCtx {
    fn drop(&mut self) {
        self.table = HandleTable::default(); // close every handle first
        if self.policy.auto_unlink {
            for (name, identity) in self.created.drain(..) {
                unlink_if_same(&name, identity);
            }
        }
    }
}

/// Guest handles: a slot index in the low 16 bits and the slot's
/// generation in the next 15, so a handle is a non-negative `i32` and a
/// closed handle stays invalid after its slot is reused (until the 15-bit
/// generation wraps, after 32768 reuses of that slot).
#[derive(Debug, Default)]
struct HandleTable {
    slots: Vec<Slot>,
    free: Vec<u16>,
    len: usize,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u16,
    entry: Option<Entry>,
}

const GENERATION_MASK: u16 = 0x7fff;

impl HandleTable {
    fn insert(&mut self, entry: Entry) -> Result<u32, Errno> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                let i = u16::try_from(self.slots.len()).map_err(|_| Errno::MFILE)?;
                self.slots.push(Slot::default());
                i
            }
        };
        let slot = &mut self.slots[usize::from(index)];
        slot.entry = Some(entry);
        self.len += 1;
        Ok(u32::from(slot.generation) << 16 | u32::from(index))
    }

    fn slot(&self, handle: i32) -> Option<(usize, u16)> {
        let h = u32::try_from(handle).ok()?;
        let index = usize::from(u16::try_from(h & 0xffff).ok()?);
        let generation = u16::try_from(h >> 16).ok()?;
        Some((index, generation))
    }

    fn get(&self, handle: i32) -> Result<&Entry, Errno> {
        let (index, generation) = self.slot(handle).ok_or(Errno::BADF)?;
        match self.slots.get(index) {
            Some(slot) if slot.generation == generation => slot.entry.as_ref().ok_or(Errno::BADF),
            _ => Err(Errno::BADF),
        }
    }

    fn remove(&mut self, handle: i32) -> Result<Entry, Errno> {
        let (index, generation) = self.slot(handle).ok_or(Errno::BADF)?;
        let slot = match self.slots.get_mut(index) {
            Some(slot) if slot.generation == generation => slot,
            _ => return Err(Errno::BADF),
        };
        let entry = slot.entry.take().ok_or(Errno::BADF)?;
        slot.generation = slot.generation.wrapping_add(1) & GENERATION_MASK;
        self.len -= 1;
        // `index` came from a u16 handle field, so it fits.
        self.free
            .push(u16::try_from(index).map_err(|_| Errno::BADF)?);
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_range_rules() {
        assert_eq!(checked_range(0, 10), Ok(0));
        assert_eq!(checked_range(-1, 0), Err(Errno::INVAL));
        assert_eq!(checked_range(i64::MIN, 0), Err(Errno::INVAL));
        assert_eq!(checked_range(i64::MAX, 1), Err(Errno::OVERFLOW));
        assert_eq!(checked_range(i64::MAX, 0), Ok(i64::MAX as u64));
    }
}
