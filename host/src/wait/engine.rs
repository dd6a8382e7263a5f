//! Which engine serves async waits, chosen per process (and again in a
//! forked child), and the thread fallback. The io_uring reactor is in
//! [`reactor`](super::reactor).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use shmgate_core::Errno;

use super::future::Op;
use super::plan::Res;
use super::reactor::Reactor;
use crate::sys;

/// The stack of a fallback wait thread: it only sleeps in the kernel.
const THREAD_STACK: usize = 64 << 10;

/// After a transient setup failure, how long waits use threads before the
/// ring is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(50);

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
pub(crate) static PENDING: AtomicUsize = AtomicUsize::new(0);

/// The engine of each fork generation ([`sys::fork::generation`]): a
/// child forked after its parent chose one starts from an empty slot, so
/// it never submits to a ring whose reactor thread `fork` did not copy.
/// Deeper than 64 forks, threads.
static ENGINES: [OnceLock<Engine>; 64] = [const { OnceLock::new() }; 64];

/// A try-lock: one thread sets the engine up at a time (the others use
/// threads meanwhile). Cleared in a forked child by the `pthread_atfork`
/// handler (a parent thread may have held it).
pub(crate) static STARTING: AtomicBool = AtomicBool::new(false);

/// `CLOCK_MONOTONIC` ns before which a setup that failed for a transient
/// reason (`EAGAIN`, `ENOMEM`, ...) is not tried again.
static RETRY_AT: AtomicU64 = AtomicU64::new(0);

/// What waits use while no engine is set up (or deeper than 64 forks).
static THREADS: Engine = Engine::Threads;

/// Ids of armed waits; 0 and 1 are the reactor's own.
static NEXT_ID: AtomicU64 = AtomicU64::new(16);

pub(crate) enum Engine {
    Uring(Arc<Reactor>),
    Threads,
}

/// Whether a setup failure may go away (resources), rather than say that
/// this kernel or sandbox has no usable io_uring (`ENOSYS`, `EPERM`,
/// `EINVAL`).
fn transient(e: Errno) -> bool {
    [
        Errno::AGAIN,
        Errno::NOMEM,
        Errno::MFILE,
        Errno::NFILE,
        Errno::INTR,
        Errno::BUSY,
    ]
    .contains(&e)
}

/// Sets up the engine: `SHMGATE_ASYNC_WAIT=threads`, or io_uring if it
/// works. `Err` for a transient failure, to be retried later.
fn choose() -> Result<Engine, Errno> {
    let forced = std::env::var_os("SHMGATE_ASYNC_WAIT").is_some_and(|v| v == "threads");
    if forced {
        return Ok(Engine::Threads);
    }
    #[cfg(test)]
    if let Some(e) = seams::take_setup_failure() {
        return Err(e);
    }
    match Reactor::start() {
        Ok(r) => Ok(Engine::Uring(r)),
        Err(e) if transient(e) => Err(e),
        Err(_) => Ok(Engine::Threads),
    }
}

/// The engine of this process: chosen on first use in each fork
/// generation; threads while a transient failure waits to be retried.
fn engine() -> &'static Engine {
    let Some(slot) = ENGINES.get(sys::fork::generation()) else {
        return &THREADS;
    };
    if let Some(e) = slot.get() {
        return e;
    }
    if sys::monotonic_ns() < RETRY_AT.load(Ordering::SeqCst)
        || STARTING.swap(true, Ordering::SeqCst)
    {
        return &THREADS;
    }
    match choose() {
        Ok(e) => {
            let _ = slot.set(e);
        }
        Err(_) => {
            let wait = u64::try_from(RETRY_AFTER.as_nanos()).unwrap_or(u64::MAX);
            RETRY_AT.store(sys::monotonic_ns().saturating_add(wait), Ordering::SeqCst);
        }
    }
    STARTING.store(false, Ordering::SeqCst);
    slot.get().unwrap_or(&THREADS)
}

/// `io_uring_setup` and a probing `IORING_OP_FUTEX_WAITV`: the engine
/// async waits use in this process (chosen on the first call, or the first
/// async wait: io_uring if the kernel lets this process use
/// `IORING_OP_FUTEX_WAITV`, threads otherwise or with
/// `SHMGATE_ASYNC_WAIT=threads`). A failure that may go away (`EAGAIN`
/// spawning the reactor thread, `ENOMEM` in `io_uring_setup`) reports
/// threads now and is tried again on a later wait. A forked child chooses
/// again. The io_uring engine's reactor thread lives as long as the
/// process.
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

/// Starts `op`'s kernel wait in this process's engine; its interrupt word
/// held `seen`.
pub(crate) fn arm(op: Arc<Op>, seen: u32) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    PENDING.fetch_add(1, Ordering::SeqCst);
    match engine() {
        Engine::Uring(r) => r.arm(id, op),
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

/// Test-only seams that force the engine's fault paths.
#[cfg(test)]
pub(crate) mod seams {
    use std::sync::atomic::{AtomicU16, Ordering};

    use shmgate_core::Errno;

    /// The errno the next engine setup fails with (0: none).
    static SETUP_FAILURE: AtomicU16 = AtomicU16::new(0);

    /// Makes the next engine setup fail with `e`.
    pub(crate) fn fail_next_setup(e: Errno) {
        SETUP_FAILURE.store(e.raw(), Ordering::SeqCst);
    }

    pub(super) fn take_setup_failure() -> Option<Errno> {
        match SETUP_FAILURE.swap(0, Ordering::SeqCst) {
            0 => None,
            e => Some(Errno::from_raw(e)),
        }
    }
}
