//! One wait's checks and its blocking form: what the word is, what it must
//! hold, until when, and what ends it early (an interrupt), for both the
//! sync path (the calling thread sleeps) and the engine's futures.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use shmgate_core::Errno;

use crate::Mapping;
use crate::sys::RawMapping;
use crate::sys::window::guarded::GuardedMapping;
use crate::sys::window::wait::{Woke, wait_either};
use crate::sys::{self};

/// On kernels without `futex_waitv` (before 5.16), how long one futex wait
/// lasts before the interrupt (and cancel) flags are checked.
const WAIT_SLICE: Duration = Duration::from_millis(20);

/// Pages a wait can be on: a guarded host mapping (a guest's `wait32`
/// page) or a native [`Mapping`]; both are registered with the signal
/// handler, so a shrink under them revokes them instead of killing the
/// process.
pub(crate) trait Page: Send + Sync + std::fmt::Debug {
    /// The mapping, for the word's atomic.
    fn raw(&self) -> &RawMapping;
    /// `false` once a peer cut the pages off (see [`GuardedMapping`]).
    fn intact(&self) -> bool;
}

impl Page for GuardedMapping {
    fn raw(&self) -> &RawMapping {
        GuardedMapping::raw(self)
    }
    fn intact(&self) -> bool {
        GuardedMapping::intact(self)
    }
}

impl Page for Mapping {
    fn raw(&self) -> &RawMapping {
        self.guarded().raw()
    }
    fn intact(&self) -> bool {
        self.guarded().intact()
    }
}

/// What interrupts a caller's waits: a flag, and a private futex word that
/// every wait sleeps on beside the shared one, so an interrupt wakes it at
/// once. A store has one (`WaitInterrupt`); native waits share one that
/// nobody raises.
#[derive(Debug, Default)]
pub(crate) struct Interrupt {
    pub(crate) flag: AtomicBool,
    pub(crate) seq: AtomicU32,
}

impl Interrupt {
    /// The interrupt of native waits: never raised.
    pub(crate) fn never() -> Arc<Interrupt> {
        static NEVER: OnceLock<Arc<Interrupt>> = OnceLock::new();
        Arc::clone(NEVER.get_or_init(Arc::default))
    }
}

/// Everything one wait needs after its checks, owned when `P` is (an
/// `Arc` of the page: the word stays mapped even if its handle is closed
/// or the store dropped mid-wait).
#[derive(Debug, Clone)]
pub(crate) struct WaitPlan<P = Arc<dyn Page>> {
    /// The mapping of the word's page (kept alive by the wait).
    pub(crate) page: P,
    /// The word's offset in `page`.
    pub(crate) within: usize,
    pub(crate) expected: u32,
    /// `None`: no deadline (one too far to express).
    pub(crate) deadline: Option<Instant>,
    pub(crate) interrupt: Arc<Interrupt>,
}

impl WaitPlan {
    /// The async wait: a future that waits without blocking the thread
    /// that polls it.
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))] // the wasm callers
    pub(crate) fn into_future(self) -> super::WaitFuture {
        super::WaitFuture::new(self)
    }
}

/// What one kernel wait ended with, in one encoding for both engines: `0`
/// the shared word was woken, `> 0` an interrupt or cancel word moved (the
/// index in the wait vector), else `-errno` (`EAGAIN` a word differed,
/// `ECANCELED`/`ETIME` the deadline).
pub(crate) type Res = i32;

/// What a finished kernel wait means for the caller.
pub(crate) enum Step {
    Done(Result<(), Errno>),
    /// Look at the interrupt flag again and wait again.
    Again,
}

impl<P: Deref> WaitPlan<P>
where
    P::Target: Page,
{
    pub(crate) fn word(&self) -> Result<&AtomicU32, Errno> {
        self.page.raw().atomic_u32(self.within)
    }

    /// The checks before each kernel wait: the interrupt flag (`EINTR`),
    /// the word's value, read in user space (`EAGAIN` if it differs; a
    /// page a peer cut off is diverted and revoked here, see
    /// [`finish`](Self::finish)), a deadline already passed (`ETIMEDOUT`).
    /// `Ok(seen)`: the interrupt word's value to wait on.
    pub(crate) fn before_wait(&self) -> Result<u32, Errno> {
        let seen = self.interrupt.seq.load(Ordering::SeqCst);
        if self.interrupt.flag.load(Ordering::SeqCst) {
            return Err(Errno::INTR);
        }
        let value = self.word()?.load(Ordering::SeqCst);
        if !self.page.intact() {
            return Err(Errno::NXIO);
        }
        if value != self.expected {
            return Err(Errno::AGAIN);
        }
        if self.deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(Errno::TIMEDOUT);
        }
        Ok(seen)
    }

    /// Reads a kernel wait's result.
    pub(crate) fn after_wait(&self, res: Res) -> Step {
        let done = |r| Step::Done(r);
        match res {
            0 => done(Ok(())),
            r if r > 0 => Step::Again,
            r if r == -i32::from(Errno::AGAIN.raw()) => match self.word() {
                Ok(w) if w.load(Ordering::SeqCst) != self.expected => done(Err(Errno::AGAIN)),
                Ok(_) => Step::Again,
                Err(e) => done(Err(e)),
            },
            r if r == -libc::ECANCELED || r == -libc::ETIME || r == -libc::ETIMEDOUT => {
                done(Err(Errno::TIMEDOUT))
            }
            r if r == -libc::EINTR => Step::Again,
            r => done(Err(Errno::from_raw(
                u16::try_from(r.unsigned_abs()).unwrap_or(Errno::IO.raw()),
            ))),
        }
    }

    /// The result the caller sees: a word on a page a peer cut off was not
    /// the segment's (`ENXIO`). The kernel does not raise the signal that
    /// revokes the mapping (a shrink leaves a sleeping waiter asleep, and a
    /// later futex call on the word says `EFAULT`), so touch the word from
    /// user space: if its page is gone, the handler revokes the mapping.
    pub(crate) fn finish(&self, r: Result<(), Errno>) -> Result<(), Errno> {
        if let Ok(w) = self.word() {
            w.load(Ordering::SeqCst);
        }
        if self.page.intact() {
            r
        } else {
            Err(Errno::NXIO)
        }
    }

    /// The sync wait: sleeps on this thread in one `futex_waitv` on the
    /// shared word and the interrupt word (20 ms slices before Linux 5.16).
    pub(crate) fn block(self) -> Result<(), Errno> {
        let r = loop {
            let seen = match self.before_wait() {
                Ok(seen) => seen,
                Err(e) => break Err(e),
            };
            match self.kernel_wait(seen, None) {
                Ok(res) => match self.after_wait(res) {
                    Step::Done(r) => break r,
                    Step::Again => {}
                },
                Err(e) => break Err(e),
            }
        };
        self.finish(r)
    }

    /// One blocking kernel wait on the shared word, the interrupt word
    /// (holding `seen`) and `cancel` (holding 0) if given.
    pub(crate) fn kernel_wait(&self, seen: u32, cancel: Option<&AtomicU32>) -> Result<Res, Errno> {
        let word = self.word()?;
        let moved = || {
            self.interrupt.seq.load(Ordering::SeqCst) != seen
                || cancel.is_some_and(|c| c.load(Ordering::SeqCst) != 0)
        };
        match wait_either(
            word,
            self.expected,
            &self.interrupt.seq,
            seen,
            cancel.map(|c| (c, 0)),
            self.deadline,
        ) {
            Ok(Woke::Shared) => Ok(0),
            Ok(Woke::Interrupt) => Ok(1),
            Ok(Woke::TimedOut) => Ok(-libc::ETIMEDOUT),
            Err(Errno::AGAIN) => Ok(-libc::EAGAIN),
            Err(Errno::NOSYS) => {
                let left = self
                    .deadline
                    .map_or(WAIT_SLICE, |d| d.saturating_duration_since(Instant::now()));
                if left.is_zero() {
                    return Ok(-libc::ETIMEDOUT);
                }
                if moved() {
                    return Ok(1);
                }
                match sys::futex_wait(word, self.expected, left.min(WAIT_SLICE)) {
                    Ok(true) => Ok(if moved() { 1 } else { 0 }),
                    Ok(false) => Ok(1), // a slice ended: look again
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}
