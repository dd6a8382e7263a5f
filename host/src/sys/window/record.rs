//! One registration record and the protocol by which its owner and the
//! signal handler share it. This file is model-checked with loom
//! (`RUSTFLAGS="--cfg shmgate_loom" cargo test -p shmgate-loom-model --release`,
//! which compiles this file against loom's atomics).
//!
//! # The word
//!
//! A record is `{ word, start, end }`. `word` packs a generation (upper 56
//! bits) and a [`State`] (low 8 bits); `start..end` is the registered
//! address range.
//!
//! # Invariants
//!
//! 1. `start` and `end` are written only while the word says
//!    [`State::Claimed`], by the one thread that claimed the record (the
//!    allocator hands an index to one registrant at a time).
//! 2. A generation begins at [`Record::claim`] and ends at a successful
//!    [`Record::retire`], which stores `Free` with the generation plus one.
//!    So the word never takes the same value twice within 2^56
//!    registrations of one record: a word read earlier and found equal by a
//!    compare-and-swap proves nothing changed in between (no ABA).
//! 3. Only the owner (who holds the generation returned by `claim`) can end
//!    a generation: `retire` compares and swaps on the owner's generation,
//!    so a stale owner cannot free a record reused by someone else.
//! 4. Whoever acts on the range (the signal handler replacing pages, the
//!    owner retiring) first moves the word to `Busy` with a compare-and-swap
//!    from the exact word it validated. While `Busy`, nobody else acts and
//!    the owner cannot retire: the range cannot be unmapped and reused under
//!    a handler that is replacing its pages.
//! 5. A reader that loads the word, then `start`/`end`, then (after an
//!    acquire fence) finds the word unchanged, by load ([`Record::read`]) or
//!    by compare-and-swap ([`Record::pin`]), has read a range of exactly
//!    one registration, never a mix of two (the seqlock argument of
//!    crossbeam's `seq_lock.rs`: the claim's release fence orders its word
//!    change before its data stores).
//!
//! Everything here is atomics only: async-signal-safe and allocation-free.

use super::sync::{AtomicU64, AtomicUsize, Ordering, fence, spin_loop};

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    /// Nobody's: on the allocator's free list (or never used).
    Free = 0,
    /// Being filled in by the thread that claimed it.
    Claimed = 1,
    /// A live shared mapping, readable and writable.
    ReadWrite = 2,
    /// A live shared mapping, read-only.
    ReadOnly = 3,
    /// Made `PROT_NONE` after a `SIGBUS` (the segment shrank), or left so
    /// by a replacement that failed: accesses trap.
    Revoked = 4,
    /// Replaced by private zeroed pages, readable and writable, for a host
    /// access to a read-only or revoked range (a wasmtime helper such as
    /// `memory.fill`, WASI, or a native copy) while that access runs.
    Detached = 5,
    /// Someone is acting on the range right now (see invariant 4).
    Busy = 6,
    /// Host code touched the range while it was read-only or revoked:
    /// once that access returned, its private pages were made `PROT_NONE`
    /// for good, so every later access by guest code traps and none sees
    /// bytes that did not come from the segment (see `signals`).
    Poisoned = 7,
}

impl State {
    fn from_bits(bits: u8) -> State {
        match bits {
            1 => State::Claimed,
            2 => State::ReadWrite,
            3 => State::ReadOnly,
            4 => State::Revoked,
            5 => State::Detached,
            6 => State::Busy,
            7 => State::Poisoned,
            _ => State::Free,
        }
    }

    /// A registration that covers its range (not free, not being filled in,
    /// not busy).
    pub(crate) fn is_live(self) -> bool {
        matches!(
            self,
            State::ReadWrite | State::ReadOnly | State::Revoked | State::Detached | State::Poisoned
        )
    }
}

fn pack(generation: u64, state: State) -> u64 {
    generation << 8 | state as u64
}

fn generation(word: u64) -> u64 {
    word >> 8
}

fn state(word: u64) -> State {
    State::from_bits(u8::try_from(word & 0xff).unwrap_or(0))
}

/// One registration slot.
#[derive(Debug)]
pub(crate) struct Record {
    word: AtomicU64,
    start: AtomicUsize,
    end: AtomicUsize,
}

/// A consistent view of a live registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) state: State,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Why [`Record::retire`] did nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RetireError<E> {
    /// The generation is not (or no longer) the record's: the caller does
    /// not own it.
    NotOwner,
    /// The caller's replacement failed; the record stays registered as
    /// [`State::Revoked`].
    Replace(E),
}

/// How many times a lock-free read retries before giving up; a writer
/// finishes in a few instructions, so this is only reached if the writer
/// is the interrupted thread itself (then giving up is right).
#[cfg(not(shmgate_loom))]
const READ_RETRIES: u32 = 1 << 16;
#[cfg(shmgate_loom)]
const READ_RETRIES: u32 = 3;

impl Record {
    /// A free record of generation 0.
    pub(crate) fn new() -> Record {
        Record {
            word: AtomicU64::new(pack(0, State::Free)),
            start: AtomicUsize::new(0),
            end: AtomicUsize::new(0),
        }
    }

    /// Claims a free record and fills it in: the registration is live when
    /// this returns. Returns the owner's generation, or `None` if the record
    /// was not free (an allocator bug; nothing is changed).
    pub(crate) fn claim(&self, start: usize, end: usize, live: State) -> Option<u64> {
        debug_assert!(live.is_live());
        let w = self.word.load(Ordering::Relaxed);
        if state(w) != State::Free {
            return None;
        }
        let generation = generation(w);
        self.word
            .compare_exchange(
                w,
                pack(generation, State::Claimed),
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .ok()?;
        // Invariant 5: the word change is ordered before the data stores.
        fence(Ordering::Release);
        self.start.store(start, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        self.word.store(pack(generation, live), Ordering::Release);
        Some(generation)
    }

    /// The word and the range as they look now, read in the seqlock order
    /// (word, then range, then an acquire fence): they belong together
    /// only if the word is found unchanged afterwards (invariant 5).
    /// `None` if the record is not live; waits out `Busy`.
    fn optimistic(&self) -> Option<(u64, Snapshot)> {
        for _ in 0..READ_RETRIES {
            let w = self.word.load(Ordering::Acquire);
            let s = state(w);
            if s == State::Busy {
                spin_loop(); // another handler or the owner: a few syscalls
                continue;
            }
            if !s.is_live() {
                return None;
            }
            let start = self.start.load(Ordering::Relaxed);
            let end = self.end.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            let snapshot = Snapshot {
                generation: generation(w),
                state: s,
                start,
                end,
            };
            return Some((w, snapshot));
        }
        None
    }

    /// The registration as it is now, if live; never a mix of two
    /// registrations (invariant 5).
    pub(crate) fn read(&self) -> Option<Snapshot> {
        for _ in 0..READ_RETRIES {
            let (w, snapshot) = self.optimistic()?;
            if self.word.load(Ordering::Relaxed) == w {
                return Some(snapshot);
            }
        }
        None
    }

    /// Takes the right to act on a live registration that contains `addr`
    /// (for the signal handler): the word becomes `Busy` until
    /// [`Pinned::finish`]. `None` if the record is not live or does not
    /// contain `addr`.
    pub(crate) fn pin(&self, addr: usize) -> Option<Pinned<'_>> {
        for _ in 0..READ_RETRIES {
            let (w, snapshot) = self.optimistic()?;
            if !(snapshot.start <= addr && addr < snapshot.end) {
                // Checked before taking the record, so a fault elsewhere
                // never makes a healthy registration look busy.
                return None;
            }
            let busy = pack(snapshot.generation, State::Busy);
            if self
                .word
                .compare_exchange(w, busy, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                // The exchange succeeding proves the snapshot is this
                // registration's (invariant 5), range included.
                return Some(Pinned {
                    record: self,
                    snapshot,
                });
            }
        }
        None
    }

    /// Ends the owner's registration: waits out anyone acting on it, runs
    /// `replace` (which gets the range and the last state) while the record
    /// is `Busy`, and frees the record if `replace` succeeded. If it failed,
    /// the record stays registered, as [`State::Revoked`].
    pub(crate) fn retire<E>(
        &self,
        owner: u64,
        replace: impl FnOnce(Snapshot) -> Result<(), E>,
    ) -> Result<(), RetireError<E>> {
        let pinned = loop {
            let w = self.word.load(Ordering::Acquire);
            let s = state(w);
            if generation(w) != owner || !(s.is_live() || s == State::Busy) {
                return Err(RetireError::NotOwner);
            }
            if s == State::Busy {
                spin_loop();
                continue;
            }
            // The owner wrote start/end itself; reading them is not racy,
            // but read them the same way as everyone else.
            let start = self.start.load(Ordering::Relaxed);
            let end = self.end.load(Ordering::Relaxed);
            let busy = pack(owner, State::Busy);
            if self
                .word
                .compare_exchange(w, busy, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                break Snapshot {
                    generation: owner,
                    state: s,
                    start,
                    end,
                };
            }
        };
        match replace(pinned) {
            Ok(()) => {
                self.word
                    .store(pack(owner.wrapping_add(1), State::Free), Ordering::Release);
                Ok(())
            }
            Err(e) => {
                self.word
                    .store(pack(owner, State::Revoked), Ordering::Release);
                Err(RetireError::Replace(e))
            }
        }
    }

    /// The state of the owner's registration, if it is still this
    /// record's.
    pub(crate) fn state_for(&self, owner: u64) -> Option<State> {
        let w = self.word.load(Ordering::Acquire);
        (generation(w) == owner && state(w) != State::Free).then(|| state(w))
    }

    /// Whether the owner's registration is still this record's.
    #[cfg(test)]
    pub(crate) fn is_owned_by(&self, owner: u64) -> bool {
        self.state_for(owner)
            .is_some_and(|s| s.is_live() || s == State::Busy)
    }
}

/// The right to act on one registration; see [`Record::pin`].
#[derive(Debug)]
pub(crate) struct Pinned<'a> {
    record: &'a Record,
    /// What the registration was when pinned.
    pub(crate) snapshot: Snapshot,
}

impl Pinned<'_> {
    /// Gives the registration back with its new state.
    pub(crate) fn finish(self, state: State) {
        debug_assert!(state.is_live());
        self.record
            .word
            .store(pack(self.snapshot.generation, state), Ordering::Release);
    }
}

#[cfg(all(test, not(shmgate_loom)))]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let r = Record::new();
        assert_eq!(r.read(), None);
        let g = r.claim(0x10000, 0x20000, State::ReadWrite).unwrap();
        assert_eq!(r.claim(1, 2, State::ReadOnly), None, "claimed twice");
        let snap = r.read().unwrap();
        assert_eq!(
            (snap.start, snap.end, snap.state),
            (0x10000, 0x20000, State::ReadWrite)
        );
        assert!(r.pin(0x9000).is_none(), "outside the range");
        let p = r.pin(0x10000).unwrap();
        assert_eq!(
            r.retire(g + 1, |_| Ok::<(), ()>(())),
            Err(RetireError::NotOwner)
        );
        p.finish(State::Revoked);
        assert_eq!(r.read().unwrap().state, State::Revoked);
        assert_eq!(
            r.retire(g, |_| Err("mmap")),
            Err(RetireError::Replace("mmap"))
        );
        assert!(r.is_owned_by(g), "a failed replacement stays registered");
        assert_eq!(r.retire(g, |_| Ok::<(), ()>(())), Ok(()));
        assert!(!r.is_owned_by(g));
        assert_eq!(
            r.retire(g, |_| Ok::<(), ()>(())),
            Err(RetireError::NotOwner)
        );
        let g2 = r.claim(0x30000, 0x40000, State::ReadOnly).unwrap();
        assert_ne!(g, g2);
        assert!(r.pin(0x10000).is_none(), "the old range is gone");
    }
}

/// Loom models of the protocol: every interleaving of the owner, a stale
/// owner, a new registrant and the signal handler.
#[cfg(all(test, shmgate_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicBool;
    use loom::thread;

    /// Registration `k` covers `k*100..k*100+10`: a mixed range has
    /// `end - start != 10` or `start % 100 != 0`.
    fn range(k: usize) -> (usize, usize) {
        (k * 100, k * 100 + 10)
    }

    /// A handler racing the owner's retire and a re-registration acts only
    /// on a whole, live registration.
    #[test]
    fn handler_vs_retire_and_reuse() {
        loom::model(|| {
            let r = Arc::new(Record::new());
            let live1 = Arc::new(AtomicBool::new(true));
            let (s, e) = range(1);
            let g1 = r.claim(s, e, State::ReadWrite).unwrap();

            let handler = {
                let (r, live1) = (Arc::clone(&r), Arc::clone(&live1));
                thread::spawn(move || {
                    for addr in [105, 205] {
                        if let Some(p) = r.pin(addr) {
                            let snap = p.snapshot;
                            assert_eq!(snap.end - snap.start, 10, "mixed range");
                            assert_eq!(snap.start % 100, 0, "mixed range");
                            if snap.start == 100 {
                                // Registration 1 cannot be retired while we
                                // hold it.
                                assert!(live1.load(Ordering::SeqCst));
                            }
                            p.finish(State::Revoked);
                        }
                    }
                })
            };
            let owner = {
                let (r, live1) = (Arc::clone(&r), Arc::clone(&live1));
                thread::spawn(move || {
                    r.retire(g1, |_| {
                        live1.store(false, Ordering::SeqCst);
                        Ok::<(), ()>(())
                    })
                    .unwrap();
                    let (s, e) = range(2);
                    let g2 = r.claim(s, e, State::ReadOnly).unwrap();
                    assert_ne!(g1, g2);
                })
            };
            handler.join().unwrap();
            owner.join().unwrap();
        });
    }

    /// A stale owner cannot free a record that was retired and claimed
    /// again, even racing the new owner.
    #[test]
    fn stale_owner_cannot_free() {
        loom::model(|| {
            let r = Arc::new(Record::new());
            let g1 = r.claim(100, 110, State::ReadWrite).unwrap();
            r.retire(g1, |_| Ok::<(), ()>(())).unwrap();
            let g2 = r.claim(200, 210, State::ReadWrite).unwrap();
            let stale = {
                let r = Arc::clone(&r);
                thread::spawn(move || r.retire(g1, |_| Ok::<(), ()>(())))
            };
            let reader = {
                let r = Arc::clone(&r);
                thread::spawn(move || {
                    if let Some(s) = r.read() {
                        assert_eq!((s.start, s.end), (200, 210));
                    }
                })
            };
            assert_eq!(stale.join().unwrap(), Err(RetireError::NotOwner));
            reader.join().unwrap();
            assert!(r.is_owned_by(g2));
            r.retire(g2, |_| Ok::<(), ()>(())).unwrap();
        });
    }

    /// A reader racing retire + re-registration sees one registration or
    /// none, never a mix.
    #[test]
    fn read_is_never_mixed() {
        loom::model(|| {
            let r = Arc::new(Record::new());
            let g1 = r.claim(100, 110, State::ReadWrite).unwrap();
            let writer = {
                let r = Arc::clone(&r);
                thread::spawn(move || {
                    r.retire(g1, |_| Ok::<(), ()>(())).unwrap();
                    r.claim(200, 210, State::ReadOnly).unwrap();
                })
            };
            if let Some(s) = r.read() {
                assert!(
                    (s.start, s.end) == (100, 110) || (s.start, s.end) == (200, 210),
                    "mixed {s:?}"
                );
            }
            writer.join().unwrap();
        });
    }
}
