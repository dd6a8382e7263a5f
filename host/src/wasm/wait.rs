//! `wait32` for synchronous and async embedders alike.
//!
//! [`ShmCtx::plan_wait`](super::ShmCtx) does every check of `wait32` once
//! (handle, alignment, bounds, `max_wait`, the host mapping of the word's
//! page) and returns a [`WaitPlan`] that owns all a wait needs: an `Arc` of
//! the page's mapping (so the word stays mapped even if the guest closes
//! the handle or the store is dropped mid-wait), the store's interrupt, the
//! expected value and the deadline. The plan is then either slept on by the
//! calling thread ([`WaitPlan::block`], the sync ABI) or turned into a
//! [`WaitFuture`] ([`WaitPlan::into_future`], the async ABI), which never
//! blocks the thread that polls it. Both give the guest the same results:
//! `Ok` when woken (possibly spuriously), `EAGAIN` if the word does not
//! hold the expected value, `ETIMEDOUT` at the deadline, `EINTR` on an
//! interrupt, `ENXIO` if a peer cut the page off under the wait.
//!
//! # The async engine
//!
//! Chosen once per process, on the first async wait (a child forked after
//! that uses threads: `fork` does not copy the reactor thread):
//!
//! - **io_uring** (Linux 6.7+): one reactor thread owns one ring
//!   (`SINGLE_ISSUER | DEFER_TASKRUN`). Each wait is one
//!   `IORING_OP_FUTEX_WAITV` on the shared word and the store's private
//!   interrupt word (exactly what the sync path passes to `futex_waitv`),
//!   linked to an `IORING_OP_LINK_TIMEOUT` for the deadline. The kernel
//!   queues every wait as its own futex waiter, so a `notify` of one word
//!   wakes exactly its waiters, and 1,000 pending waits cost no thread.
//! - **threads** (the fallback): when the ring cannot be set up or its
//!   first `FUTEX_WAITV` fails (`ENOSYS`, `EPERM` from
//!   `kernel.io_uring_disabled` or seccomp, `EINVAL` on kernels before
//!   6.7), or when `SHMGATE_ASYNC_WAIT=threads` is set, each wait runs on
//!   a small-stack thread of its own in `futex_waitv` on the shared word,
//!   the interrupt word and a per-wait cancel word (20 ms slices before
//!   Linux 5.16).
//!
//! # Invariants
//!
//! 1. **A word stays mapped while the kernel may wait on it.** Every armed
//!    wait is an [`Op`] that holds an `Arc` of the page's mapping and of
//!    the interrupt. The reactor keeps the `Op` in its table from the
//!    moment it pushes the submission until the wait's own completion
//!    arrives (woken, timed out, cancelled); a fallback thread keeps it
//!    until its `futex_waitv` returns. Dropping the future never frees it.
//! 2. **A dropped future cancels its wait.** `Drop` of an armed
//!    [`WaitFuture`] queues an `IORING_OP_ASYNC_CANCEL` of its id (or sets
//!    and wakes the fallback's cancel word). The wait then completes with
//!    `ECANCELED`, the reactor drops its `Op`, and the kernel holds no
//!    waiter for it: a later `notify` of the word wakes nobody.
//! 3. **No lost submission.** Requests reach the reactor through a queue
//!    and a doorbell futex word that the reactor keeps a `FUTEX_WAITV`
//!    armed on; the protocol, and why no request is left queued while the
//!    reactor sleeps, are in `sys/window/doorbell.rs`, model-checked with
//!    loom.
//! 4. **Each completion is delivered once.** An `Op`'s result is set once
//!    under its mutex, together with taking the waker; the future reads it
//!    under the same mutex, so a wake-up between its check and its
//!    registration is never missed.
//! 5. **A guest cannot hang the host.** Every wait has the deadline
//!    `max_wait` gives it (a linked timeout, or the fallback's
//!    `futex_waitv` timeout), and an interrupt wakes the kernel wait of
//!    every engine: both wait on the interrupt word.
//! 6. **No `notify` is lost to a dropped future.** A `notify(word, 1)` may
//!    wake the kernel wait of a future that was just dropped (before its
//!    cancel reached the kernel, or after the wake but before a poll):
//!    that wake-up was taken from the waiters still waiting. So an op
//!    that completes woken after its future was dropped, a future dropped
//!    with a wake it never read, and every wait ended by `ECANCELED` (a
//!    cancel or timeout racing a wake: some kernels count a claimed
//!    waiter as woken) pass one `FUTEX_WAKE` on to the word. The sync
//!    path needs none of this: a woken thread always returns and the guest
//!    looks again.
//!
//! The kernel copies a `FUTEX_WAITV`'s vector and a link timeout's
//! `timespec` when it prepares them, and only reads the futex words; the
//! `Op` stays alive until its completion so that the word's page is not
//! unmapped (and its address reused) under a wait the kernel still holds.
//!
//! These are tested with real threads, real futexes and real guests
//! (`host/tests/windows/async_wait.rs`): cancellation leaves no waiter,
//! 1,000 waits on a 2-worker runtime leave it free, interrupts and
//! deadlines end async waits, and the fallback passes the same tests in a
//! child process with `SHMGATE_ASYNC_WAIT=threads`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use shmgate_core::Errno;

use super::ctx::Interrupt;
use crate::sys;
use crate::sys::uring::{FUTEX2_PRIVATE, FUTEX2_SIZE_U32, FutexWaitv, Ring, Sqe};
use crate::sys::window::doorbell::Doorbell;
use crate::sys::window::guarded::GuardedMapping;
use crate::sys::window::wait::{Woke, wait_either};

/// On kernels without `futex_waitv` (before 5.16), how long one futex wait
/// lasts before the interrupt (and cancel) flags are checked.
const WAIT_SLICE: Duration = Duration::from_millis(20);

/// The stack of a fallback wait thread: it only sleeps in the kernel.
const THREAD_STACK: usize = 64 << 10;

/// Everything one `wait32` needs after its checks, owned.
#[derive(Debug, Clone)]
pub(crate) struct WaitPlan {
    /// The host mapping of the word's page (kept alive by the wait).
    pub(crate) page: Arc<GuardedMapping>,
    /// The word's offset in `page`.
    pub(crate) within: usize,
    pub(crate) expected: u32,
    /// `None`: no deadline (a `max_wait` too long to express).
    pub(crate) deadline: Option<Instant>,
    pub(crate) interrupt: Arc<Interrupt>,
}

/// What one kernel wait ended with, in one encoding for both engines: `0`
/// the shared word was woken, `1` an interrupt or cancel word moved, else
/// `-errno` (`EAGAIN` a word differed, `ECANCELED`/`ETIME` the deadline).
type Res = i32;

/// What a finished kernel wait means for the guest.
enum Step {
    Done(Result<(), Errno>),
    /// Look at the interrupt flag again and wait again.
    Again,
}

impl WaitPlan {
    fn word(&self) -> Result<&AtomicU32, Errno> {
        self.page.raw().atomic_u32(self.within)
    }

    /// The checks before each kernel wait: the interrupt flag (`EINTR`),
    /// a deadline already passed (`EAGAIN` if the value differs, as a zero
    /// timeout does, else `ETIMEDOUT`). `Ok(seen)`: the interrupt word's
    /// value to wait on.
    fn before_wait(&self) -> Result<u32, Errno> {
        let seen = self.interrupt.seq.load(Ordering::SeqCst);
        if self.interrupt.flag.load(Ordering::SeqCst) {
            return Err(Errno::INTR);
        }
        if self.deadline.is_some_and(|d| d <= Instant::now()) {
            return if self.word()?.load(Ordering::SeqCst) == self.expected {
                Err(Errno::TIMEDOUT)
            } else {
                Err(Errno::AGAIN)
            };
        }
        Ok(seen)
    }

    /// Reads a kernel wait's result.
    fn after_wait(&self, res: Res) -> Step {
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

    /// The result the guest sees: a word on a page a peer cut off was not
    /// the segment's (`ENXIO`).
    fn finish(&self, r: Result<(), Errno>) -> Result<(), Errno> {
        if self.page.intact() {
            r
        } else {
            Err(Errno::NXIO)
        }
    }

    /// The sync `wait32`: sleeps on this thread in one `futex_waitv` on the
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
    fn kernel_wait(&self, seen: u32, cancel: Option<&AtomicU32>) -> Result<Res, Errno> {
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

    /// The async `wait32`: a future that waits without blocking the thread
    /// that polls it.
    pub(crate) fn into_future(self) -> WaitFuture {
        WaitFuture {
            stage: Stage::Plan(self),
        }
    }
}

/// An armed kernel wait, shared by the future and the engine (invariant
/// 1: it owns what the kernel reads).
#[derive(Debug)]
struct Op {
    /// The mapping, the interrupt, the word, the deadline.
    plan: WaitPlan,
    /// The shared word and the interrupt word, as the ring reads them.
    waitv: [FutexWaitv; 2],
    /// The fallback's cancel word: non-zero once the future is dropped.
    cancel: AtomicU32,
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
    /// Sets the result and wakes the future (invariant 4); passes on a
    /// wake-up nobody will see (invariant 6).
    fn complete(&self, res: Res) {
        let (waker, abandoned) = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.res = Some(res);
            (st.waker.take(), st.abandoned)
        };
        PENDING.fetch_sub(1, Ordering::SeqCst);
        if (abandoned && res == 0) || res == -libc::ECANCELED {
            self.pass_wake_on();
        }
        if let Some(w) = waker {
            // A waker that panics must not take the reactor thread (and
            // every other store's waits) with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
        }
    }

    /// `futex(FUTEX_WAKE, 1)` on the shared word for a wake-up this wait
    /// may have taken from the kernel without its guest ever seeing it, so
    /// that another waiter gets it (a spurious wake-up at worst, which
    /// `wait32` allows). The op still holds the word's mapping.
    fn pass_wake_on(&self) {
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
}

enum Stage {
    Ready(Option<Result<(), Errno>>),
    Plan(WaitPlan),
    Armed {
        plan: WaitPlan,
        op: Arc<Op>,
        id: u64,
    },
}

/// The future of an async `wait32` (see [`WaitPlan::into_future`]): owns
/// everything it needs (`Send + 'static`, no borrow of the store), and
/// cancels its kernel wait when dropped.
pub(crate) struct WaitFuture {
    stage: Stage,
}

impl std::fmt::Debug for WaitFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitFuture").finish_non_exhaustive()
    }
}

impl WaitFuture {
    /// A future that is already done (a check of `wait32` failed).
    pub(crate) fn ready(r: Result<(), Errno>) -> WaitFuture {
        WaitFuture {
            stage: Stage::Ready(Some(r)),
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
                    let word = match plan.word() {
                        Ok(w) => w,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    let op = Arc::new(Op {
                        plan: plan.clone(),
                        waitv: [
                            FutexWaitv {
                                val: u64::from(plan.expected),
                                uaddr: word.as_ptr() as u64,
                                flags: FUTEX2_SIZE_U32,
                                reserved: 0,
                            },
                            FutexWaitv {
                                val: u64::from(seen),
                                uaddr: plan.interrupt.seq.as_ptr() as u64,
                                flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
                                reserved: 0,
                            },
                        ],
                        cancel: AtomicU32::new(0),
                        state: Mutex::default(),
                    });
                    let id = engine().arm(Arc::clone(&op), seen);
                    this.stage = Stage::Armed { plan, op, id };
                }
                Stage::Armed { plan, op, id } => match op.poll_res(cx.waker()) {
                    None => {
                        this.stage = Stage::Armed { plan, op, id };
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
        if let Stage::Armed { op, id, .. } = &self.stage {
            let res = {
                let mut st = op.state.lock().unwrap_or_else(|e| e.into_inner());
                st.abandoned = st.res.is_none();
                st.res
            };
            match res {
                None => engine().cancel(op, *id),
                // Woken, but the guest will never know: pass it on.
                Some(0) => op.pass_wake_on(),
                Some(_) => {}
            }
        }
    }
}

/// Which engine serves async waits in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AsyncWaitEngine {
    /// One reactor thread, one io_uring, an `IORING_OP_FUTEX_WAITV` per
    /// wait (Linux 6.7+).
    IoUring,
    /// A small-stack thread per pending wait, in `futex_waitv` (the
    /// fallback).
    Threads,
}

/// Async waits armed and not yet completed (cancelled ones count until
/// the kernel confirms the cancel).
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// The engine, and the process that chose it.
static ENGINE: OnceLock<(u32, Engine)> = OnceLock::new();

/// What a child forked after the first async wait uses: the reactor
/// thread was not copied into it, so its ring would never be served.
static FORKED: Engine = Engine::Threads;

/// Ids of armed waits; 0 and 1 are the reactor's own.
static NEXT_ID: AtomicU64 = AtomicU64::new(16);

/// The user data of the doorbell wait.
const DOORBELL: u64 = 0;
/// The user data of completions nobody waits for (link timeouts, cancels).
const IGNORED: u64 = 1;

enum Engine {
    Uring(Arc<Reactor>),
    Threads,
}

/// What submitters share with the reactor thread: the request queue and
/// its doorbell (protocol and model check in `sys/window/doorbell.rs`).
struct Reactor {
    bell: Doorbell<Request>,
}

enum Request {
    Arm(u64, Arc<Op>),
    Cancel(u64),
}

/// The engine, chosen on first use (in a forked child, threads).
fn engine() -> &'static Engine {
    let (pid, engine) = ENGINE.get_or_init(|| {
        let forced = std::env::var_os("SHMGATE_ASYNC_WAIT").is_some_and(|v| v == "threads");
        let engine = if forced {
            Engine::Threads
        } else {
            match Reactor::start() {
                Ok(r) => Engine::Uring(r),
                Err(_) => Engine::Threads,
            }
        };
        (std::process::id(), engine)
    });
    if *pid == std::process::id() {
        engine
    } else {
        &FORKED
    }
}

/// `io_uring_setup` and a probing `IORING_OP_FUTEX_WAITV`, once: the
/// engine async waits use in this process (chosen on the first call, or
/// the first async wait: io_uring if the kernel lets this process use
/// `IORING_OP_FUTEX_WAITV`, threads otherwise or with
/// `SHMGATE_ASYNC_WAIT=threads`). The io_uring engine's reactor thread
/// lives as long as the process.
pub fn async_wait_engine() -> AsyncWaitEngine {
    match engine() {
        Engine::Uring(_) => AsyncWaitEngine::IoUring,
        Engine::Threads => AsyncWaitEngine::Threads,
    }
}

/// How many async waits are pending in the kernel in this process (a
/// dropped future's wait counts until its cancel completes). For
/// diagnostics and tests.
pub fn pending_async_waits() -> usize {
    PENDING.load(Ordering::SeqCst)
}

impl Engine {
    /// Starts `op`'s kernel wait; returns its id.
    fn arm(&self, op: Arc<Op>, seen: u32) -> u64 {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        PENDING.fetch_add(1, Ordering::SeqCst);
        match self {
            Engine::Uring(r) => r.request(Request::Arm(id, op)),
            Engine::Threads => {
                let thread_op = Arc::clone(&op);
                let spawned = std::thread::Builder::new()
                    .name("shmgate-wait".into())
                    .stack_size(THREAD_STACK)
                    .spawn(move || {
                        let res = thread_wait(&thread_op, seen);
                        thread_op.complete(res);
                    });
                if spawned.is_err() {
                    // No thread: a spurious wake-up, which the ABI allows.
                    op.complete(0);
                }
            }
        }
        id
    }

    /// Cancels the kernel wait of a dropped future (invariant 2).
    fn cancel(&self, op: &Op, id: u64) {
        match self {
            Engine::Uring(r) => r.request(Request::Cancel(id)),
            Engine::Threads => {
                op.cancel.store(1, Ordering::SeqCst);
                crate::sys::window::wait::wake_private(&op.cancel);
            }
        }
    }
}

/// The fallback: one blocking kernel wait on this thread. Returns when the
/// shared word is woken, the deadline passes, the interrupt word moves or
/// the future is dropped (`ECANCELED`).
fn thread_wait(op: &Op, seen: u32) -> Res {
    let plan = &op.plan;
    loop {
        if op.cancel.load(Ordering::SeqCst) != 0 {
            return -libc::ECANCELED;
        }
        match plan.kernel_wait(seen, Some(&op.cancel)) {
            Ok(1) if plan.interrupt.seq.load(Ordering::SeqCst) == seen => {} // a signal or a slice
            Ok(res) => return res,
            Err(e) => return -i32::from(e.raw()),
        }
    }
}

impl Reactor {
    /// Spawns the reactor thread, which sets up the ring and checks that
    /// `IORING_OP_FUTEX_WAITV` works before reporting success.
    fn start() -> Result<Arc<Reactor>, Errno> {
        let reactor = Arc::new(Reactor {
            bell: Doorbell::new(),
        });
        let (tx, rx) = mpsc::channel();
        let shared = Arc::clone(&reactor);
        std::thread::Builder::new()
            .name("shmgate-uring".into())
            .spawn(move || {
                let ring =
                    Ring::new(256, 4096).and_then(|mut ring| probe(&mut ring).map(|()| ring));
                match ring {
                    Ok(ring) => {
                        let _ = tx.send(Ok(()));
                        run(&shared, ring);
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            })
            .map_err(|_| Errno::AGAIN)?;
        rx.recv().map_err(|_| Errno::IO)??;
        Ok(reactor)
    }

    /// Queues a request and rings the doorbell if the queue was empty
    /// (invariant 3).
    fn request(&self, req: Request) {
        if self.bell.push(req) {
            crate::sys::window::wait::wake_private(self.bell.word());
        }
    }
}

/// A `FUTEX_WAITV` on a word that does not hold the expected value must
/// complete with `EAGAIN`; kernels before 6.7 say `EINVAL` (unknown
/// opcode).
fn probe(ring: &mut Ring) -> Result<(), Errno> {
    let word = AtomicU32::new(1);
    let waitv = [FutexWaitv {
        val: 0,
        uaddr: word.as_ptr() as u64,
        flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
        reserved: 0,
    }];
    let op = Sqe::FutexWaitv {
        waitv: waitv.as_ptr(),
        len: 1,
        linked: false,
    };
    if !ring.push(op, IGNORED)? {
        return Err(Errno::NOMEM);
    }
    ring.submit_and_wait(1)?;
    let mut got = None;
    ring.reap(|_, res| got = Some(res))?;
    match got {
        Some(res) if res == -libc::EAGAIN => Ok(()),
        Some(res) if res < 0 => Err(Errno::from_raw(
            u16::try_from(res.unsigned_abs()).unwrap_or(Errno::IO.raw()),
        )),
        _ => Err(Errno::IO),
    }
}

/// An armed wait in the reactor's table: the op, and the timeout the ring
/// reads at submission.
struct Armed {
    op: Arc<Op>,
    _timeout: Option<Box<rustix::time::Timespec>>,
}

/// Pushes `sqe`, submitting first if the queue is full.
fn push(ring: &mut Ring, sqe: Sqe, user_data: u64) -> Result<(), Errno> {
    while !ring.push(sqe, user_data)? {
        ring.submit_and_wait(0)?;
    }
    Ok(())
}

/// The reactor thread's loop (invariants 1-3).
fn run(reactor: &Reactor, mut ring: Ring) {
    let mut table: HashMap<u64, Armed> = HashMap::new();
    let mut bell = [FutexWaitv {
        val: 0,
        uaddr: reactor.bell.word().as_ptr() as u64,
        flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
        reserved: 0,
    }];
    let mut bell_armed = false;
    loop {
        let (rung, requests) = reactor.bell.drain();
        let mut failed = Ok(());
        for req in requests {
            let r = match req {
                Request::Arm(id, op) => arm(&mut ring, &mut table, id, op),
                Request::Cancel(id) if table.contains_key(&id) => {
                    push(&mut ring, Sqe::Cancel { target: id }, IGNORED)
                }
                Request::Cancel(_) => Ok(()),
            };
            failed = failed.and(r);
        }
        if !bell_armed {
            bell[0].val = u64::from(rung);
            let sqe = Sqe::FutexWaitv {
                waitv: bell.as_ptr(),
                len: 1,
                linked: false,
            };
            failed = failed.and(push(&mut ring, sqe, DOORBELL));
            bell_armed = true;
        }
        if let Err(e) = failed.and_then(|()| ring.submit_and_wait(1)) {
            // The ring is unusable: end every wait with the error (the
            // guests see it) rather than leave them hanging.
            for (_, armed) in table.drain() {
                armed.op.complete(-i32::from(e.raw()));
            }
            std::thread::sleep(Duration::from_millis(1));
            bell_armed = false;
            continue;
        }
        let reaped = ring.reap(|user_data, res| match user_data {
            DOORBELL => bell_armed = false,
            IGNORED => {}
            id => {
                if let Some(armed) = table.remove(&id) {
                    armed.op.complete(res);
                }
            }
        });
        if reaped.is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Pushes `op`'s `FUTEX_WAITV`, linked to a timeout at its deadline.
fn arm(
    ring: &mut Ring,
    table: &mut HashMap<u64, Armed>,
    id: u64,
    op: Arc<Op>,
) -> Result<(), Errno> {
    // Relative to now: the link timeout is read at submission, right below.
    let timeout = op.plan.deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        Box::new(rustix::time::Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        })
    });
    let wait = Sqe::FutexWaitv {
        waitv: op.waitv.as_ptr(),
        len: 2,
        linked: timeout.is_some(),
    };
    let timeout_sqe = timeout.as_ref().map(|t| Sqe::LinkTimeout {
        timeout: &raw const **t,
    });
    table.insert(
        id,
        Armed {
            op,
            _timeout: timeout,
        },
    );
    // A link must not be split by a full queue between its two entries:
    // one submission may leave the queue full (the kernel stops a batch
    // when it cannot allocate), so wait for room for both.
    while ring.space()? < 2 {
        ring.submit_and_wait(0)?;
        if ring.space()? < 2 {
            std::thread::yield_now();
        }
    }
    push(ring, wait, id)?;
    if let Some(t) = timeout_sqe {
        push(ring, t, IGNORED)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;
    use crate::wasm::{ShmCtx, ShmPolicy};

    struct Unpark(std::thread::Thread);

    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    fn block_on<F: Future + Unpin>(mut f: F) -> F::Output {
        loop {
            if let Poll::Ready(v) = poll_once(&mut f) {
                return v;
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }

    /// Removes the test's segment on drop, pass or fail.
    struct Scope(String);

    impl Drop for Scope {
        fn drop(&mut self) {
            let _ = crate::unlink(format!("{}w", self.0));
        }
    }

    /// The future owns the word's mapping: closing the handle and dropping
    /// the store (its `ShmCtx`) while it waits changes nothing, and a
    /// `notify` through another store still wakes it.
    #[test]
    fn a_wait_outlives_its_handle_and_store() {
        let scope = Scope(format!("shmgate-ut-async-{}.", std::process::id()));
        let policy = || {
            ShmPolicy::builder()
                .namespace(&scope.0)
                .allow_create(true)
                .max_wait(Duration::from_secs(600))
                .build()
                .unwrap()
        };
        let mut ctx = ShmCtx::new(policy());
        let h = i32::try_from(ctx.open(b"w", 3, 0o600).unwrap()).unwrap();
        ctx.set_size(h, 4096).unwrap();
        let mut fut = ctx.wait32_async(h, 8, 0, -1);
        assert!(poll_once(&mut fut).is_pending());
        ctx.close(h).unwrap();
        drop(ctx);
        let mut other = ShmCtx::new(policy());
        let h = i32::try_from(other.open(b"w", 1, 0).unwrap()).unwrap();
        // The engine arms the wait on its own thread: notify until it has.
        let mut woken = 0;
        for _ in 0..60_000 {
            woken = other.notify(h, 8, 1).unwrap();
            if woken == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(woken, 1);
        assert_eq!(block_on(fut), Ok(()));
    }

    /// Stress with real threads: four threads arm 400 waits each on eight
    /// words with 2 ms deadlines, dropping every other future right after
    /// arming it (a cancel racing the wait, the deadline and the wakes),
    /// while a fifth thread notifies the words without pause. Every wait
    /// that is awaited ends woken or timed out, and every kernel wait,
    /// cancelled or not, completes: the count of pending waits drops back.
    #[test]
    fn arm_cancel_and_wake_churn() {
        let scope = Scope(format!("shmgate-ut-churn-{}.", std::process::id()));
        let policy = || {
            ShmPolicy::builder()
                .namespace(&scope.0)
                .allow_create(true)
                .build()
                .unwrap()
        };
        let mut creator = ShmCtx::new(policy());
        let h = i32::try_from(creator.open(b"w", 3, 0o600).unwrap()).unwrap();
        creator.set_size(h, 4096).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let notifier = {
            let (stop, mut ctx) = (Arc::clone(&stop), ShmCtx::new(policy()));
            let h = i32::try_from(ctx.open(b"w", 0, 0).unwrap()).unwrap();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    for word in 0..8 {
                        ctx.notify(h, word * 4, -1).unwrap();
                    }
                }
            })
        };
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut ctx = ShmCtx::new(policy());
                let h = i32::try_from(ctx.open(b"w", 0, 0).unwrap()).unwrap();
                std::thread::spawn(move || {
                    for i in 0..400i64 {
                        let mut fut = ctx.wait32_async(h, ((t + i) % 8) * 4, 0, 2_000_000);
                        let first = poll_once(&mut fut);
                        if i % 2 == 0 {
                            drop(fut);
                            continue;
                        }
                        let r = match first {
                            Poll::Ready(r) => r,
                            Poll::Pending => block_on(fut),
                        };
                        assert!(matches!(r, Ok(()) | Err(Errno::TIMEDOUT)), "{r:?}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        notifier.join().unwrap();
        for _ in 0..60_000 {
            if PENDING.load(Ordering::SeqCst) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            PENDING.load(Ordering::SeqCst),
            0,
            "a kernel wait never completed"
        );
        drop(creator);
    }

    /// The result the engine stored for an armed future, if any.
    fn stored(f: &WaitFuture) -> Option<Res> {
        match &f.stage {
            Stage::Armed { op, .. } => op.state.lock().unwrap().res,
            _ => None,
        }
    }

    /// Invariant 6: two futures wait on one word; `notify(word, 1)` wakes
    /// one of them, which is then dropped without being polled. The wake
    /// must reach the other one instead of being lost with the dropped
    /// future (without passing it on, the other waits out its 3 s
    /// `max_wait` and ends `ETIMEDOUT`).
    #[test]
    fn a_dropped_future_passes_its_wake_on() {
        let scope = Scope(format!("shmgate-ut-pass-{}.", std::process::id()));
        let policy = || {
            ShmPolicy::builder()
                .namespace(&scope.0)
                .allow_create(true)
                .max_wait(Duration::from_secs(3))
                .build()
                .unwrap()
        };
        let mut ctx = ShmCtx::new(policy());
        let h = i32::try_from(ctx.open(b"w", 3, 0o600).unwrap()).unwrap();
        ctx.set_size(h, 4096).unwrap();
        // Word 40: no other test of this module waits there.
        let mut a = ctx.wait32_async(h, 40, 0, -1);
        let mut b = ctx.wait32_async(h, 40, 0, -1);
        assert!(poll_once(&mut a).is_pending());
        assert!(poll_once(&mut b).is_pending());
        // Both are armed on the engine's thread within microseconds; give
        // it ample time, then wake exactly one.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(ctx.notify(h, 40, 1).unwrap(), 1);
        let mut woken = None;
        for _ in 0..10_000 {
            woken = match (stored(&a), stored(&b)) {
                (Some(0), _) => Some(true),
                (_, Some(0)) => Some(false),
                _ => None,
            };
            if woken.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let (dropped, other) = match woken.expect("one of the two was woken") {
            true => (a, b),
            false => (b, a),
        };
        drop(dropped);
        assert_eq!(block_on(other), Ok(()));
    }

    /// A plan that fails its checks gives its error at once.
    #[test]
    fn a_failed_check_is_ready_at_once() {
        let mut ctx = ShmCtx::new(ShmPolicy::builder().build().unwrap());
        let mut fut = ctx.wait32_async(12345, 0, 0, -1);
        assert_eq!(poll_once(&mut fut), Poll::Ready(Err(Errno::BADF)));
    }
}
