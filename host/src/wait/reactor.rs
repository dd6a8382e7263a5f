//! The io_uring engine: one reactor thread owns one ring
//! (`SINGLE_ISSUER | DEFER_TASKRUN`) and turns each armed wait into an
//! `IORING_OP_FUTEX_WAITV`, linked to an `IORING_OP_LINK_TIMEOUT` for its
//! deadline (invariants 1, 3 and 7 of the [module docs](super)).

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use shmgate_core::Errno;

use super::future::Op;
use crate::sys::uring::{FUTEX2_PRIVATE, FUTEX2_SIZE_U32, FutexWaitv, Ring, Sqe};
use crate::sys::window::doorbell::Doorbell;
use crate::sys::window::wait::wake_private;

/// The user data of the doorbell wait.
const DOORBELL: u64 = 0;
/// The user data of completions nobody waits for (link timeouts).
const IGNORED: u64 = 1;

/// What submitters share with the reactor thread: the request queue and
/// its doorbell (protocol and model check in `sys/window/doorbell.rs`).
pub(crate) struct Reactor {
    bell: Doorbell<(u64, Arc<Op>)>,
}

impl Reactor {
    /// Spawns the reactor thread, which sets up the ring and checks that
    /// `IORING_OP_FUTEX_WAITV` works before reporting success.
    ///
    /// # Errors
    ///
    /// `EAGAIN` if no thread could be spawned; the errors of
    /// `io_uring_setup` and of the probe (`EINVAL` before Linux 6.7).
    pub(crate) fn start() -> Result<Arc<Reactor>, Errno> {
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

    /// Queues `op`'s wait and rings the doorbell if the queue was empty
    /// (invariant 3).
    pub(crate) fn arm(&self, id: u64, op: Arc<Op>) {
        if self.bell.push((id, op)) {
            wake_private(self.bell.word());
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

/// The reactor thread's loop (invariants 1, 3 and 7).
fn run(reactor: &Reactor, mut ring: Ring) {
    let mut table: HashMap<u64, Armed> = HashMap::new();
    // Waits ended by a ring error whose entries may still be in the
    // submission queue (the kernel reads them when it takes them): kept
    // until the queue is empty (invariant 1).
    let mut retired: Vec<Armed> = Vec::new();
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
        for (id, op) in requests {
            failed = failed.and(arm(&mut ring, &mut table, id, op));
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
        let submitted = failed
            .and_then(|()| forced_ring_error())
            .and_then(|()| ring.submit_and_wait(1));
        if submitted.is_err() {
            // The ring lost completions (`EBADR`: the kernel could not
            // allocate an overflow entry) or cannot take submissions.
            // Every armed wait may be woken with its completion lost, or
            // still armed in the kernel where it would swallow a `notify`
            // meant for a live waiter: end each kernel wait through its
            // cancel word (no ring needed), then complete it as a spurious
            // wake-up, so its caller looks again (invariant 7).
            for (_, armed) in table.drain() {
                armed.op.cancel();
                armed.op.complete(0);
                retired.push(armed);
            }
            // The doorbell wait may be gone too: arm a new one (a second
            // one at worst, which only ends a sleep early).
            bell_armed = false;
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if ring.unsubmitted() == 0 {
            retired.clear();
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

/// `Err(EBADR)` once after the test seam asked for it.
fn forced_ring_error() -> Result<(), Errno> {
    #[cfg(test)]
    if seams::RING_ERROR.swap(false, std::sync::atomic::Ordering::SeqCst) {
        return Err(Errno::from_raw(53)); // EBADR
    }
    Ok(())
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
        len: 3,
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

/// Test-only seams that force the reactor's fault paths.
#[cfg(test)]
pub(crate) mod seams {
    use std::sync::atomic::AtomicBool;

    /// The reactor's next submission fails with `EBADR`.
    pub(crate) static RING_ERROR: AtomicBool = AtomicBool::new(false);
}
