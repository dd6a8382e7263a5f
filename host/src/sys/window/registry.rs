//! The process-wide registry of address ranges the signal handler may act
//! on: windows in guest memories and host mappings of segment pages.
//!
//! # Structure
//!
//! - **Records** ([`Record`], whose protocol is in [`super::record`]) live
//!   in a slab of segments of [`SEGMENT`] records, allocated on first use
//!   and never freed, so a record address read by the signal handler is
//!   always valid. Free indices are on a list behind a mutex (allocation
//!   is never on the handler's path). Capacity: [`CAPACITY`] records.
//! - **The index** maps an address to the record that covers it, in O(1):
//!   a three-level radix tree over 64 KiB granules of the 48-bit address
//!   space (2048 top entries, 2048-entry middle nodes, 1024-entry leaves of
//!   `u32` record numbers, so a leaf is one 4 KiB page). Nodes are
//!   allocated on first use and never freed (bounded by the address space
//!   ever registered).
//!
//! # Invariants
//!
//! 1. Every registered range starts on a 64 KiB boundary, and registered
//!    ranges never overlap (they are distinct live mappings). So each
//!    granule is covered by at most one registration, and one index entry
//!    per granule suffices.
//! 2. An index entry is set (compare-and-swap from empty) only after its
//!    record is live, and cleared (compare-and-swap from its own number)
//!    after the record is retired and before the number goes back on the
//!    free list. So a lookup finds either nothing or a record that is, or
//!    was, registered over that granule; [`Record::pin`] then checks the
//!    generation and the range, so a stale entry is never acted on.
//! 3. Only the holder of a [`Token`] (owner) can retire its registration
//!    ([`Record::retire`] compares the generation).
//!
//! Lookup ([`pin`]) is lock-free, allocation-free and async-signal-safe:
//! atomic loads of three pointers and one compare-and-swap.

use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use shmgate_core::Errno;

use super::record::{Pinned, Record, RetireError, Snapshot, State};

/// The registry's granule: ranges start on multiples of it.
pub(crate) const GRANULE: usize = 1 << GRANULE_SHIFT;
const GRANULE_SHIFT: u32 = 16;
/// Bits of a granule number per radix level, leaf first.
const LEAF_BITS: u32 = 10;
const MID_BITS: u32 = 11;
const TOP_BITS: u32 = 11;
/// The highest address + 1 the index covers (48-bit user space).
const ADDR_LIMIT: usize = 1 << (GRANULE_SHIFT + LEAF_BITS + MID_BITS + TOP_BITS);

/// Records per slab segment, and segments.
const SEGMENT: usize = 4096;
const SEGMENTS: usize = 1024;
/// The most registrations the process can hold at once (4 Mi).
pub(crate) const CAPACITY: usize = SEGMENT * SEGMENTS;

type Leaf = [AtomicU32; 1 << LEAF_BITS];
type Mid = [AtomicPtr<Leaf>; 1 << MID_BITS];

static TOP: [AtomicPtr<Mid>; 1 << TOP_BITS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; 1 << TOP_BITS];
static SLAB: [AtomicPtr<Record>; SEGMENTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SEGMENTS];

/// Indices that are free, and the first index never used.
struct FreeList {
    free: Vec<u32>,
    next: usize,
}

static FREE: Mutex<FreeList> = Mutex::new(FreeList {
    free: Vec::new(),
    next: 0,
});

fn free_list() -> std::sync::MutexGuard<'static, FreeList> {
    // Plain integers: a panic elsewhere cannot leave them inconsistent.
    FREE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The right to retire one registration: only its holder can. Not
/// `Clone`: one registration, one owner.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Token {
    index: u32,
    generation: u64,
}

/// Leaks a zeroed array of `N` atomics (all-zero is their empty value).
fn leak_zeroed<T, const N: usize>(zero: impl Fn() -> T) -> *mut [T; N] {
    let boxed: Box<[T]> = (0..N).map(|_| zero()).collect();
    match <Box<[T; N]>>::try_from(boxed) {
        Ok(array) => Box::into_raw(array),
        Err(_) => unreachable!("collected exactly N elements"),
    }
}

/// Installs `fresh()` in `slot` if it is empty; returns what is there.
fn get_or_install<T>(slot: &AtomicPtr<T>, fresh: impl FnOnce() -> *mut T) -> *mut T {
    let p = slot.load(Ordering::Acquire);
    if !p.is_null() {
        return p;
    }
    let new = fresh();
    match slot.compare_exchange(
        std::ptr::null_mut(),
        new,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => new,
        Err(theirs) => {
            // SAFETY: `new` came from `Box::into_raw` just above and was
            // never published (the exchange failed), so we own it.
            #[allow(unsafe_code)]
            drop(unsafe { Box::from_raw(new) });
            theirs
        }
    }
}

/// The record at `index`, if its segment exists.
#[allow(unsafe_code)]
fn record(index: u32) -> Option<&'static Record> {
    let index = index as usize;
    let segment = SLAB.get(index / SEGMENT)?.load(Ordering::Acquire);
    if segment.is_null() {
        return None;
    }
    // SAFETY: a published segment is a leaked `[Record; SEGMENT]` that is
    // never freed, and `index % SEGMENT` is in bounds.
    Some(unsafe { &*segment.add(index % SEGMENT) })
}

/// The index entry of granule `g`, creating the path to it if `create`.
#[allow(unsafe_code)]
fn entry(g: usize, create: bool) -> Option<&'static AtomicU32> {
    let top = &TOP[(g >> (LEAF_BITS + MID_BITS)) & ((1 << TOP_BITS) - 1)];
    let mid = if create {
        get_or_install(top, || leak_zeroed(|| AtomicPtr::new(std::ptr::null_mut())))
    } else {
        top.load(Ordering::Acquire)
    };
    if mid.is_null() {
        return None;
    }
    // SAFETY: published nodes are leaked arrays, never freed.
    let mid = unsafe { &*mid };
    let slot = &mid[(g >> LEAF_BITS) & ((1 << MID_BITS) - 1)];
    let leaf = if create {
        get_or_install(slot, || leak_zeroed(|| AtomicU32::new(0)))
    } else {
        slot.load(Ordering::Acquire)
    };
    if leaf.is_null() {
        return None;
    }
    // SAFETY: as above.
    let leaf = unsafe { &*leaf };
    Some(&leaf[g & ((1 << LEAF_BITS) - 1)])
}

fn granules(start: usize, end: usize) -> std::ops::Range<usize> {
    (start >> GRANULE_SHIFT)..((end - 1) >> GRANULE_SHIFT) + 1
}

fn alloc_index() -> Result<u32, Errno> {
    let mut list = free_list();
    if let Some(i) = list.free.pop() {
        return Ok(i);
    }
    if list.next >= CAPACITY {
        return Err(Errno::NOMEM);
    }
    let i = list.next;
    get_or_install(&SLAB[i / SEGMENT], || {
        leak_zeroed::<Record, SEGMENT>(Record::new).cast()
    });
    list.next += 1;
    u32::try_from(i).map_err(|_| Errno::NOMEM)
}

fn free_index(index: u32) {
    free_list().free.push(index);
}

/// Registers `start..start + len` as a live mapping in state `live`.
///
/// # Errors
///
/// `EINVAL` if `start` is not on a granule or the range is empty or past
/// the 48-bit address space; `ENOMEM` if the registry is full; `EBUSY` if a
/// live registration already covers part of the range (a caller bug).
pub(crate) fn register(start: usize, len: usize, live: State) -> Result<Token, Errno> {
    let end = start.checked_add(len).ok_or(Errno::INVAL)?;
    if len == 0 || !start.is_multiple_of(GRANULE) || end > ADDR_LIMIT {
        return Err(Errno::INVAL);
    }
    let index = alloc_index()?;
    let Some(rec) = record(index) else {
        free_index(index);
        return Err(Errno::NOMEM);
    };
    let Some(generation) = rec.claim(start, end, live) else {
        free_index(index);
        return Err(Errno::BUSY); // never reached: the index was ours alone
    };
    let token = Token { index, generation };
    let number = index + 1;
    for g in granules(start, end) {
        let set = entry(g, true).is_some_and(|e| {
            e.compare_exchange(0, number, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        if !set {
            clear_entries(number, start, g << GRANULE_SHIFT);
            let _ = rec.retire(generation, |_| Ok::<(), ()>(()));
            free_index(index);
            return Err(Errno::BUSY);
        }
    }
    Ok(token)
}

/// Clears the entries of `start..end` that hold `number`.
fn clear_entries(number: u32, start: usize, end: usize) {
    if end <= start {
        return;
    }
    for g in granules(start, end) {
        if let Some(e) = entry(g, false) {
            let _ = e.compare_exchange(number, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Ends a registration: `replace` runs while nobody else can act on the
/// range (the signal handler waits), and only if it succeeds is the range
/// forgotten. If it fails, the registration stays, as
/// [`State::Revoked`], and the token is handed back.
pub(crate) fn retire<E>(
    token: Token,
    replace: impl FnOnce(Snapshot) -> Result<(), E>,
) -> Result<(), (Token, E)> {
    let Some(rec) = record(token.index) else {
        return Ok(()); // never registered: nothing to forget
    };
    let mut range = (0, 0);
    let r = rec.retire(token.generation, |snap| {
        range = (snap.start, snap.end);
        replace(snap)
    });
    match r {
        Ok(()) => {
            clear_entries(token.index + 1, range.0, range.1);
            free_index(token.index);
            Ok(())
        }
        Err(RetireError::NotOwner) => Ok(()),
        Err(RetireError::Replace(e)) => Err((token, e)),
    }
}

/// The state of `token`'s registration (`None` once retired); waits out
/// `Busy` (someone acting on it for a few system calls).
pub(crate) fn state(token: &Token) -> Option<State> {
    let rec = record(token.index)?;
    loop {
        match rec.state_for(token.generation)? {
            State::Busy => std::hint::spin_loop(),
            s => return Some(s),
        }
    }
}

/// Whether the registration of `token` is still live.
#[cfg(test)]
fn is_live(token: &Token) -> bool {
    record(token.index).is_some_and(|r| r.is_owned_by(token.generation))
}

/// What [`pin`] found at a fault address.
#[derive(Debug)]
pub(crate) enum Found {
    /// No registration covers the address: the fault is not ours.
    NotOurs,
    /// A registration covers (or just covered) the address but is in
    /// transition: being filled in, acted on by someone else, or being
    /// retired with its index entries not yet cleared. The faulting access
    /// should simply run again: the transition ends in a few system calls.
    Transient,
    /// The live registration, pinned so nobody else acts on it until
    /// [`Pinned::finish`].
    Pinned(Pinned<'static>),
}

/// The registration covering `addr`, pinned. Async-signal-safe.
pub(crate) fn pin(addr: usize) -> Found {
    if addr >= ADDR_LIMIT {
        return Found::NotOurs;
    }
    let number = entry(addr >> GRANULE_SHIFT, false).map_or(0, |e| e.load(Ordering::Acquire));
    let Some(rec) = number.checked_sub(1).and_then(record) else {
        return Found::NotOurs;
    };
    match rec.pin(addr) {
        Some(pinned) => Found::Pinned(pinned),
        // The granule's entry is set, so a registration holds (or held, a
        // moment ago) this granule; registered ranges start on granules
        // and never overlap, so an address in the granule but past the
        // registration's end is not ours either.
        None if rec.read().is_some_and(|s| {
            addr >= s.end && addr >> GRANULE_SHIFT == (s.end - 1) >> GRANULE_SHIFT
        }) =>
        {
            Found::NotOurs
        }
        None => Found::Transient,
    }
}

/// The live registration covering `addr`, without pinning it.
#[cfg_attr(not(feature = "wasmtime"), allow(dead_code))] // for `window_at`
pub(crate) fn lookup(addr: usize) -> Option<Snapshot> {
    if addr >= ADDR_LIMIT {
        return None;
    }
    let number = entry(addr >> GRANULE_SHIFT, false)?.load(Ordering::Acquire);
    let snap = record(number.checked_sub(1)?)?.read()?;
    (snap.start <= addr && addr < snap.end).then_some(snap)
}

#[cfg(all(test, not(shmgate_loom)))]
mod tests {
    use super::*;

    /// Address ranges no real mapping uses (just below the 48-bit limit).
    fn fake(n: usize) -> usize {
        ADDR_LIMIT - (n + 1) * (1 << 32)
    }

    #[test]
    fn register_lookup_retire() {
        let a = fake(1);
        let t = register(a, 3 * GRANULE + 4096, State::ReadWrite).unwrap();
        assert_eq!(lookup(a).unwrap().start, a);
        assert_eq!(
            lookup(a + 3 * GRANULE + 4095).unwrap().state,
            State::ReadWrite
        );
        assert_eq!(lookup(a + 3 * GRANULE + 4096), None, "past the end");
        assert_eq!(lookup(a - 1), None);
        // Past the end but in the last granule: not ours (the kernel may
        // have given that tail to someone else).
        assert!(matches!(pin(a + 3 * GRANULE + 4096), Found::NotOurs));
        assert_eq!(
            register(a + GRANULE, GRANULE, State::ReadOnly),
            Err(Errno::BUSY)
        );
        assert_eq!(
            register(a + 1, GRANULE, State::ReadOnly).unwrap_err(),
            Errno::INVAL
        );
        assert_eq!(
            register(ADDR_LIMIT, GRANULE, State::ReadOnly).unwrap_err(),
            Errno::INVAL
        );
        assert!(is_live(&t));
        let Found::Pinned(p) = pin(a + 5) else {
            panic!("a live registration pins")
        };
        p.finish(State::Revoked);
        assert_eq!(lookup(a).unwrap().state, State::Revoked);
        // A failing replacement keeps it registered.
        let t = retire(t, |_| Err("no memory")).unwrap_err().0;
        assert_eq!(lookup(a).unwrap().state, State::Revoked);
        retire(t, |_| Ok::<(), ()>(())).unwrap();
        assert_eq!(lookup(a), None);
        assert!(matches!(pin(a), Found::NotOurs));
    }

    #[test]
    fn stale_token_frees_nothing() {
        let a = fake(2);
        let t1 = register(a, GRANULE, State::ReadWrite).unwrap();
        let stale = Token {
            index: t1.index,
            generation: t1.generation,
        };
        retire(t1, |_| Ok::<(), ()>(())).unwrap();
        let t2 = register(a, GRANULE, State::ReadOnly).unwrap();
        retire(stale, |_| Ok::<(), ()>(())).unwrap();
        assert!(is_live(&t2), "a stale owner freed a live registration");
        assert_eq!(lookup(a).unwrap().state, State::ReadOnly);
        retire(t2, |_| Ok::<(), ()>(())).unwrap();
    }
}
