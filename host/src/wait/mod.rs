//! `futex` waits on a `u32` in shared memory, sync and async, for every
//! caller: native code on a [`Mapping`] ([`wait32`], [`wait32_async`],
//! [`notify`]), the async ring ends ([`ring::AsyncConsumer`](crate::ring::AsyncConsumer)),
//! and the wasm host functions' `wait32` (sync and async ABIs).
//!
//! A wait sleeps while the word holds the expected value, until a
//! [`notify`] of the word (from any process that maps the segment, or a
//! guest), its deadline, or (for guests) the store's interrupt. Every
//! caller gets the same results: `Ok` when woken (possibly spuriously:
//! look at the word again), `EAGAIN` if the word does not hold the
//! expected value, `ETIMEDOUT` at the deadline, `EINTR` on an interrupt
//! (guests), `ENXIO` if a peer cut the word's page off (shrank the segment
//! under the mapping).
//!
//! The sync form sleeps on the calling thread in one `futex_waitv` on the
//! shared word and the interrupt word. The async form is a future that
//! never blocks the thread that polls it: it is runtime-agnostic (no
//! executor is spawned; the engine below wakes the task's [`Waker`](std::task::Waker)),
//! and dropping it cancels its kernel wait.
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::Ordering;
//! use std::time::Duration;
//! use shmgate_host::{Errno, OpenOptions, wait};
//! # let name = format!("/shmgate-doc-wait-{}", std::process::id());
//! let seg = OpenOptions::new().size(4096).open_owned(&name)?;
//! let map = Arc::new(seg.map()?);
//! // The word does not hold 1: no sleep at all.
//! let e = wait::wait32(&map, 0, 1, None).unwrap_err();
//! assert_eq!(e.errno(), Errno::AGAIN);
//! // Nobody notifies: the deadline ends the wait.
//! let e = wait::wait32(&map, 0, 0, Some(Duration::from_millis(1))).unwrap_err();
//! assert_eq!(e.errno(), Errno::TIMEDOUT);
//! // An async wait (here polled by a tiny executor) woken by a notify.
//! let waiter = std::thread::spawn({
//!     let map = Arc::clone(&map);
//!     move || block_on(wait::wait32_async(&map, 0, 0, None))
//! });
//! while wait::notify(&map, 0, 1)? == 0 {
//!     std::thread::yield_now(); // until the wait is armed
//! }
//! waiter.join().unwrap()?;
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     struct T(std::thread::Thread);
//! #     impl std::task::Wake for T { fn wake(self: Arc<Self>) { self.0.unpark() } }
//! #     let w = std::task::Waker::from(Arc::new(T(std::thread::current())));
//! #     let mut f = std::pin::pin!(f);
//! #     loop {
//! #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut std::task::Context::from_waker(&w)) { return v; }
//! #         std::thread::park();
//! #     }
//! # }
//! # Ok::<(), shmgate_host::Error>(())
//! ```
//!
//! # The async engine
//!
//! One idea per file: `plan.rs` is one wait's checks and its blocking
//! form; `future.rs` is what a caller holds (the armed wait and its cancel
//! path); `engine.rs` chooses the engine and runs the thread fallback;
//! `reactor.rs` is the io_uring loop. Callers never see the engine.
//!
//! The engine is chosen on the first async wait of each process, and
//! chosen again in a forked child (a `pthread_atfork` handler tells it is
//! one, whatever its pid: `sys/fork.rs`), since `fork` does not copy the
//! reactor thread:
//!
//! - **io_uring** (Linux 6.7+): one reactor thread owns one ring
//!   (`SINGLE_ISSUER | DEFER_TASKRUN`). Each wait is one
//!   `IORING_OP_FUTEX_WAITV` on the shared word, the caller's private
//!   interrupt word (exactly what the sync path passes to `futex_waitv`)
//!   and the wait's private cancel word, linked to an
//!   `IORING_OP_LINK_TIMEOUT` for the deadline. The kernel queues every
//!   wait as its own futex waiter, so a `notify` of one word wakes exactly
//!   its waiters, and 10,000 pending waits cost no thread.
//! - **threads** (the fallback): when the ring cannot be set up or its
//!   first `FUTEX_WAITV` fails (`ENOSYS`, `EPERM` from
//!   `kernel.io_uring_disabled` or seccomp, `EINVAL` on kernels before
//!   6.7), or when `SHMGATE_ASYNC_WAIT=threads` is set, each wait runs on
//!   a small-stack thread of its own in `futex_waitv` on the same three
//!   words (20 ms slices before Linux 5.16). A setup failure that may go
//!   away (`EAGAIN` spawning the reactor thread, `ENOMEM` in
//!   `io_uring_setup`) uses threads for the waits of the next 50 ms only,
//!   then the ring is tried again.
//!
//! # Invariants
//!
//! 1. **A word stays mapped while the kernel may wait on it.** Every armed
//!    wait is an `Op` that holds an `Arc` of the page's mapping and of
//!    the interrupt. The reactor keeps the `Op` in its table from the
//!    moment it pushes the submission until the wait's own completion
//!    arrives (woken, timed out, cancelled), or, after a ring error, until
//!    its kernel wait is ended and its submission taken by the kernel; a
//!    fallback thread keeps it until its `futex_waitv` returns. Dropping
//!    the future never frees it.
//! 2. **A dropped future cancels its wait.** `Drop` of an armed future
//!    sets the wait's cancel word and wakes it (`FUTEX_WAKE_PRIVATE`),
//!    with either engine and without a round trip through the reactor.
//!    The kernel wait then completes at once (a wait the reactor has not
//!    armed yet fails at once: the cancel word no longer holds 0), the
//!    engine drops its `Op`, and the kernel holds no waiter for it: a
//!    later `notify` of the word wakes nobody.
//! 3. **No lost submission.** Waits reach the reactor through a queue and
//!    a doorbell futex word that the reactor keeps a `FUTEX_WAITV` armed
//!    on; the protocol, and why no request is left queued while the
//!    reactor sleeps, are in `sys/window/doorbell.rs`, model-checked with
//!    loom (`host/loom-model`).
//! 4. **Each completion is delivered once.** An `Op`'s result is set once
//!    under its mutex, together with taking the waker; the future reads it
//!    under the same mutex, so a wake-up between its check and its
//!    registration is never missed.
//! 5. **A guest cannot hang the host.** Every guest wait has the deadline
//!    `max_wait` gives it (a linked timeout, or the fallback's
//!    `futex_waitv` timeout), and an interrupt wakes the kernel wait of
//!    every engine: both wait on the interrupt word.
//! 6. **No `notify` is lost to a dropped future.** A `notify(word, 1)` may
//!    wake the kernel wait of a future that was just dropped (before its
//!    cancel reached the kernel, or after the wake but before a poll), or
//!    be counted against a waiter another word already claimed (the kernel
//!    counts a claimed `FUTEX_WAITV` waiter as woken): that wake-up was
//!    taken from the waiters still waiting. So a wait that completes after
//!    its future was dropped, a future dropped with a wake it never read,
//!    and every wait ended by `ECANCELED` (a timeout racing a wake) pass
//!    one `FUTEX_WAKE` on to the word. The sync path needs none of this: a
//!    woken thread always returns and the caller looks again.
//! 7. **A ring error loses no wait.** If submitting fails (`EBADR`: the
//!    kernel could not allocate a completion-overflow entry and dropped
//!    completions), the reactor ends every armed kernel wait through its
//!    cancel word (which needs no ring) and completes each as a spurious
//!    wake-up: its caller looks at the word again, so a `notify` whose
//!    completion was dropped is still seen, and no kernel waiter is left
//!    to swallow a later one.
//!
//! The kernel copies a `FUTEX_WAITV`'s vector and a link timeout's
//! `timespec` when it prepares them, and only reads the futex words; the
//! `Op` stays alive until then and until the kernel wait is over so that
//! the word's page is not unmapped (and its address reused) under it.
//!
//! These are tested with real threads, real futexes and real guests:
//! here (cancellation, churn, the fault seams, a child forked into a new
//! PID namespace), in `host/tests/windows/async_wait.rs` (1,000 guest
//! waits on a 2-worker runtime, interrupts, deadlines, the fallback) and
//! in `host/tests/async_ring.rs`.

mod engine;
mod future;
mod plan;
mod reactor;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use shmgate_core::Errno;

pub(crate) use engine::STARTING;
pub use engine::{AsyncWaitEngine, async_wait_engine, pending_async_waits};
pub(crate) use future::WaitFuture;
pub(crate) use plan::{Interrupt, WaitPlan};

use crate::{Error, Mapping, Op, sys};

/// The plan of a native wait on `page`'s word at `offset`.
fn native_plan<P>(page: P, offset: usize, expected: u32, timeout: Option<Duration>) -> WaitPlan<P> {
    WaitPlan {
        page,
        within: offset,
        expected,
        deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
        interrupt: Interrupt::never(),
    }
}

/// `futex(FUTEX_WAIT)` on the `u32` at `offset` of `map`: sleeps on this
/// thread while it holds `expected`, until a [`notify`] of it (from any
/// process, or a guest's `notify`), or `timeout` (`None`: no deadline).
/// Returns `Ok` when woken, which may be spurious: look at the word again.
///
/// Waiting only reads the word: read-only mappings work.
///
/// # Errors
///
/// `EAGAIN` if the word does not hold `expected`; `ETIMEDOUT` at the
/// deadline; `EINVAL` if `offset` is out of bounds or not 4-byte aligned;
/// `ENXIO` if the mapping is revoked (a peer shrank the segment under it,
/// before or during the wait).
///
/// # References
///
/// - [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html)
#[doc(alias = "futex")]
#[doc(alias = "futex_waitv")]
pub fn wait32(
    map: &Mapping,
    offset: usize,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<(), Error> {
    native_plan(map, offset, expected, timeout)
        .block()
        .map_err(|e| Error::new(Op::Wait, map.name(), e))
}

/// `IORING_OP_FUTEX_WAITV` on the `u32` at `offset` of `map`: the async
/// [`wait32`], a future that waits without blocking the thread polling it
/// and gives the same results. It owns an `Arc` of the mapping (`Send +
/// 'static`), and works under any executor (it only uses the task's
/// waker). Dropping it cancels the kernel wait: no waiter is left behind,
/// and a `notify` it took is passed on to another waiter.
///
/// # Errors
///
/// As [`wait32`].
///
/// # References
///
/// - [io_uring_enter(2)](https://man7.org/linux/man-pages/man2/io_uring_enter.2.html)
/// - [futex_waitv(2)](https://docs.kernel.org/userspace-api/futex2.html)
#[doc(alias = "futex_waitv")]
pub fn wait32_async(
    map: &Arc<Mapping>,
    offset: usize,
    expected: u32,
    timeout: Option<Duration>,
) -> Wait {
    let page: Arc<dyn plan::Page> = Arc::clone(map) as Arc<dyn plan::Page>;
    Wait {
        inner: WaitFuture::new(native_plan(page, offset, expected, timeout)),
        name: Arc::clone(map.name()),
    }
}

/// The future of [`wait32_async`].
#[derive(Debug)]
#[must_use = "a future does nothing unless awaited"]
pub struct Wait {
    inner: WaitFuture,
    name: Arc<[u8]>,
}

impl Future for Wait {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = &mut *self;
        Pin::new(&mut this.inner)
            .poll(cx)
            .map_err(|e| Error::new(Op::Wait, &this.name, e))
    }
}

/// `futex(FUTEX_WAKE)` on the `u32` at `offset` of `map`: wakes up to
/// `count` waiters (`u32::MAX`: all), in any process that maps the
/// segment, guests included; returns how many were woken.
///
/// # Errors
///
/// `EINVAL` if `offset` is out of bounds or not 4-byte aligned; `ENXIO`
/// if the mapping is revoked.
///
/// # References
///
/// - [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html)
#[doc(alias = "futex")]
pub fn notify(map: &Mapping, offset: usize, count: u32) -> Result<usize, Error> {
    let err = |e| Error::new(Op::Notify, map.name(), e);
    let page: &dyn plan::Page = map;
    let word = page.raw().atomic_u32(offset).map_err(err)?;
    let woken = sys::futex_wake(word, count.min(i32::MAX as u32));
    if woken == Err(Errno::FAULT) {
        // A page the kernel could not reach: touch it from user space so
        // the signal handler revokes the mapping if a peer cut it off.
        word.load(std::sync::atomic::Ordering::SeqCst);
    }
    if !page.intact() {
        return Err(err(Errno::NXIO));
    }
    woken.map_err(err)
}
