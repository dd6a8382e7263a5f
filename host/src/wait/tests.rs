//! The engine's unit tests: real threads, real futexes, real segments.
//! The guest-side ones (through `ShmCtx`) need the `wasmtime` feature.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use shmgate_core::Errno;

use super::engine::PENDING;
use super::future::{Stage, WaitFuture};
use super::plan::Res;

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

/// The guest-side tests, through `ShmCtx` (moved from `wasm/wait.rs`).
#[cfg(feature = "wasmtime")]
mod guest {
    use super::*;
    use crate::wasm::{ShmCtx, ShmPolicy};

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
            Stage::Armed { op, .. } => op.stored(),
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
