//! What one caller holds: an armed wait ([`Op`], shared with the engine)
//! and the future over it ([`WaitFuture`]), whose `Drop` is the cancel
//! path (invariants 1, 2, 4 and 6 of the [module docs](super)).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use shmgate_core::Errno;

use super::engine::{self, PENDING};
use super::plan::{Res, Step, WaitPlan};
use crate::sys;
use crate::sys::uring::{FUTEX2_PRIVATE, FUTEX2_SIZE_U32, FutexWaitv};
use crate::sys::window::wait::wake_private;

/// An armed kernel wait, shared by the future and the engine (invariant
/// 1: it owns what the kernel reads).
#[derive(Debug)]
pub(crate) struct Op {
    /// The mapping, the interrupt, the word, the deadline.
    pub(crate) plan: WaitPlan,
    /// The shared word, the interrupt word and the cancel word, as the
    /// ring reads them.
    pub(crate) waitv: [FutexWaitv; 3],
    /// The cancel word: non-zero once the wait must end (its future was
    /// dropped, or the reactor ends every wait after a ring error). Boxed:
    /// `waitv` holds its address.
    pub(crate) cancel: Box<AtomicU32>,
    state: Mutex<OpState>,
}

#[derive(Debug, Default)]
struct OpState {
    res: Option<Res>,
    waker: Option<Waker>,
    /// The future was dropped before the wait ended: nobody will read
    /// `res` (invariant 6).
    abandoned: bool,
}

impl Op {
    /// An op for `plan`, whose interrupt word held `seen`.
    fn new(plan: WaitPlan, seen: u32) -> Result<Arc<Op>, Errno> {
        let word = plan.word()?.as_ptr() as u64;
        let cancel = Box::new(AtomicU32::new(0));
        let private = |uaddr: u64, val: u32| FutexWaitv {
            val: u64::from(val),
            uaddr,
            flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
            reserved: 0,
        };
        let waitv = [
            FutexWaitv {
                val: u64::from(plan.expected),
                uaddr: word,
                flags: FUTEX2_SIZE_U32,
                reserved: 0,
            },
            private(plan.interrupt.seq.as_ptr() as u64, seen),
            private(cancel.as_ptr() as u64, 0),
        ];
        Ok(Arc::new(Op {
            plan,
            waitv,
            cancel,
            state: Mutex::default(),
        }))
    }

    /// Sets the result and wakes the future (invariant 4); passes on a
    /// wake-up nobody will see (invariant 6). Called once per op.
    pub(crate) fn complete(&self, res: Res) {
        let (waker, abandoned) = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.res = Some(res);
            (st.waker.take(), st.abandoned)
        };
        PENDING.fetch_sub(1, Ordering::SeqCst);
        if (abandoned && res >= 0) || res == -libc::ECANCELED {
            self.pass_wake_on();
        }
        if let Some(w) = waker {
            // A waker that panics must not take the reactor thread (and
            // every other caller's waits) with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
        }
    }

    /// Ends the kernel wait, whichever engine holds it: sets the cancel
    /// word and wakes it (`FUTEX_WAKE_PRIVATE`). A wait not yet armed
    /// then fails at once (`EAGAIN`: the word no longer holds 0).
    pub(crate) fn cancel(&self) {
        self.cancel.store(1, Ordering::SeqCst);
        wake_private(&self.cancel);
    }

    /// `futex(FUTEX_WAKE, 1)` on the shared word for a wake-up this wait
    /// may have taken from the kernel without its caller ever seeing it,
    /// so that another waiter gets it (a spurious wake-up at worst, which
    /// `wait32` allows). The op still holds the word's mapping.
    pub(crate) fn pass_wake_on(&self) {
        if let Ok(word) = self.plan.word() {
            let _ = sys::futex_wake(word, 1);
        }
    }

    /// The result if there is one, else registers `waker`.
    fn poll_res(&self, waker: &Waker) -> Option<Res> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.res.is_none() {
            match &mut st.waker {
                Some(w) => w.clone_from(waker),
                None => st.waker = Some(waker.clone()),
            }
        }
        st.res
    }

    /// The stored result, for tests.
    #[cfg(all(test, feature = "wasmtime"))]
    pub(crate) fn stored(&self) -> Option<Res> {
        self.state.lock().unwrap().res
    }
}

pub(crate) enum Stage {
    Ready(Option<Result<(), Errno>>),
    Plan(WaitPlan),
    Armed { plan: WaitPlan, op: Arc<Op> },
}

/// The future of an async wait: owns everything it needs (`Send +
/// 'static`, no borrow of the caller), and cancels its kernel wait when
/// dropped.
pub(crate) struct WaitFuture {
    pub(crate) stage: Stage,
}

impl std::fmt::Debug for WaitFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitFuture").finish_non_exhaustive()
    }
}

impl WaitFuture {
    /// A future that is already done (a check failed).
    #[cfg_attr(not(feature = "wasmtime"), allow(dead_code))] // the wasm callers
    pub(crate) fn ready(r: Result<(), Errno>) -> WaitFuture {
        WaitFuture {
            stage: Stage::Ready(Some(r)),
        }
    }

    /// A future waiting as `plan` says, never blocking the thread that
    /// polls it.
    pub(crate) fn new(plan: WaitPlan) -> WaitFuture {
        WaitFuture {
            stage: Stage::Plan(plan),
        }
    }
}

impl Future for WaitFuture {
    type Output = Result<(), Errno>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Errno>> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.stage, Stage::Ready(None)) {
                Stage::Ready(r) => return Poll::Ready(r.unwrap_or(Err(Errno::INVAL))),
                Stage::Plan(plan) => {
                    let seen = match plan.before_wait() {
                        Ok(seen) => seen,
                        Err(e) => return Poll::Ready(plan.finish(Err(e))),
                    };
                    let op = match Op::new(plan.clone(), seen) {
                        Ok(op) => op,
                        Err(e) => return Poll::Ready(plan.finish(Err(e))),
                    };
                    engine::arm(Arc::clone(&op), seen);
                    this.stage = Stage::Armed { plan, op };
                }
                Stage::Armed { plan, op } => match op.poll_res(cx.waker()) {
                    None => {
                        this.stage = Stage::Armed { plan, op };
                        return Poll::Pending;
                    }
                    Some(res) => match plan.after_wait(res) {
                        Step::Done(r) => return Poll::Ready(plan.finish(r)),
                        Step::Again => this.stage = Stage::Plan(plan),
                    },
                },
            }
        }
    }
}

impl Drop for WaitFuture {
    fn drop(&mut self) {
        if let Stage::Armed { op, .. } = &self.stage {
            let res = {
                let mut st = op.state.lock().unwrap_or_else(|e| e.into_inner());
                st.abandoned = st.res.is_none();
                st.res
            };
            match res {
                None => op.cancel(),
                // Woken, but the caller will never know: pass it on.
                Some(0) => op.pass_wake_on(),
                Some(_) => {}
            }
        }
    }
}
