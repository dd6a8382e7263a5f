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
#[cfg(feature = "wasmtime")]
use super::future::{Stage, WaitFuture};
#[cfg(feature = "wasmtime")]
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

/// The guest-side tests, through `ShmCtx` (moved from `wasm/wait.rs`).
#[cfg(feature = "wasmtime")]
mod guest {
    use super::*;
    use crate::wasm::{ShmCtx, ShmPolicy};

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

/// A segment of `size` bytes, unlinked on drop (pass or fail), and a
/// shared mapping of it.
fn segment(tag: &str, size: u64) -> (crate::OwnedSegment, Arc<crate::Mapping>) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("/shmgate-ut-wait-{tag}-{}-{n}", std::process::id());
    let seg = crate::OpenOptions::new()
        .size(size)
        .open_owned(name)
        .unwrap();
    let map = Arc::new(seg.map().unwrap());
    (seg, map)
}

/// Notifies `offset` of `map` until one waiter is woken (the engine arms
/// waits on its own thread), with a generous bound so a bug fails rather
/// than hangs.
fn notify_one(map: &crate::Mapping, offset: usize) {
    for _ in 0..60_000 {
        if super::notify(map, offset, 1).unwrap() == 1 {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("no waiter was ever woken");
}

/// Waits (bounded) until `cond` holds.
fn until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..60_000 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("never: {what}");
}

/// The native wait's results, sync and async, are the guest `wait32`'s:
/// `Ok` when woken, `EAGAIN` for another value, `ETIMEDOUT` at the
/// deadline, `EINVAL` for a bad offset, `ENXIO` once a peer shrank the
/// segment under the word (before the wait or during it).
#[test]
fn native_waits_give_the_guest_results() {
    let (seg, map) = segment("results", 8192);
    map.store_u32(16, 7, Ordering::SeqCst).unwrap();
    let errno = |r: Result<(), crate::Error>| r.map_err(|e| e.errno());
    let short = Some(Duration::from_millis(5));
    // Sync.
    assert_eq!(errno(super::wait32(&map, 16, 8, None)), Err(Errno::AGAIN));
    assert_eq!(
        errno(super::wait32(&map, 16, 7, short)),
        Err(Errno::TIMEDOUT)
    );
    assert_eq!(errno(super::wait32(&map, 18, 7, short)), Err(Errno::INVAL));
    assert_eq!(
        errno(super::wait32(&map, 8192, 0, short)),
        Err(Errno::INVAL)
    );
    // Async.
    let wait = |off, exp, t| block_on(super::wait32_async(&map, off, exp, t));
    assert_eq!(errno(wait(16, 8, None)), Err(Errno::AGAIN));
    assert_eq!(errno(wait(16, 7, short)), Err(Errno::TIMEDOUT));
    assert_eq!(errno(wait(18, 7, short)), Err(Errno::INVAL));
    // Woken, sync and async.
    std::thread::scope(|s| {
        let t = s.spawn(|| super::wait32(&map, 16, 7, None));
        notify_one(&map, 16);
        assert_eq!(errno(t.join().unwrap()), Ok(()));
        let t = s.spawn(|| block_on(super::wait32_async(&map, 16, 7, None)));
        notify_one(&map, 16);
        assert_eq!(errno(t.join().unwrap()), Ok(()));
    });
    // A shrink during a wait on the second page: the wait ends (the
    // deadline at worst) with ENXIO, and so does every later one.
    let other = Arc::new(seg.map().unwrap());
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            block_on(super::wait32_async(
                &other,
                4096,
                0,
                Some(Duration::from_millis(300)),
            ))
        });
        std::thread::sleep(Duration::from_millis(50));
        seg.set_len(4096).unwrap();
        assert_eq!(errno(t.join().unwrap()), Err(Errno::NXIO));
    });
    assert_eq!(errno(super::wait32(&map, 4096, 0, short)), Err(Errno::NXIO));
    assert_eq!(errno(wait(4096, 0, short)), Err(Errno::NXIO));
    assert_eq!(
        super::notify(&map, 4096, 1).unwrap_err().errno(),
        Errno::NXIO
    );
    assert!(map.is_revoked());
}

/// A dropped async wait leaves no kernel waiter behind: after the future
/// is dropped (armed, and not), a `notify` wakes nobody, and the count of
/// pending waits comes back down.
#[test]
fn a_dropped_native_wait_leaves_no_waiter() {
    let (_seg, map) = segment("dropped", 4096);
    // Word 100: no other test waits there.
    for _ in 0..20 {
        let mut fut = super::wait32_async(&map, 100, 0, None);
        assert!(poll_once(&mut fut).is_pending());
        // Armed for sure: a notify wakes it (then it is re-armed by the
        // next poll, which we never do: it is dropped with a wake unread).
        notify_one(&map, 100);
        let mut fut2 = super::wait32_async(&map, 100, 0, None);
        assert!(poll_once(&mut fut2).is_pending());
        drop(fut);
        drop(fut2);
    }
    until("every dropped wait is gone from the kernel", || {
        super::notify(&map, 100, u32::MAX).unwrap() == 0 && PENDING.load(Ordering::SeqCst) == 0
    });
    // Stays gone.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(super::notify(&map, 100, u32::MAX).unwrap(), 0);
}

/// Runs the calling test alone in a child process (a fresh engine, and a
/// process that may fork): the child runs the test's body, the parent
/// checks the child's exit. Returns `true` in the child.
fn in_child(test: &str) -> bool {
    const VAR: &str = "SHMGATE_WAIT_UT_CHILD";
    if std::env::var_os(VAR).is_some_and(|v| v == test) {
        return true;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, test)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child: {text}");
    assert!(text.contains("1 passed"), "the child ran no test: {text}");
    false
}

/// `EBADR` (forced through the reactor's seam): every armed wait is ended
/// in the kernel and completes as a spurious wake-up (`Ok`), so no waiter
/// is left to swallow a later `notify`, and waits armed afterwards work.
/// Before this fix the waits ended with errno 53 and stayed armed in the
/// kernel.
#[test]
fn a_ring_error_ends_every_wait_as_a_spurious_wake_up() {
    if !in_child("wait::tests::a_ring_error_ends_every_wait_as_a_spurious_wake_up") {
        return;
    }
    if super::async_wait_engine() != super::AsyncWaitEngine::IoUring {
        eprintln!("no io_uring engine here: nothing to test");
        return;
    }
    let (_seg, map) = segment("ebadr", 4096);
    let mut a = super::wait32_async(&map, 0, 0, None);
    let mut b = super::wait32_async(&map, 4, 0, Some(Duration::from_secs(600)));
    assert!(poll_once(&mut a).is_pending());
    assert!(poll_once(&mut b).is_pending());
    until("both waits are armed", || {
        PENDING.load(Ordering::SeqCst) == 2
    });
    std::thread::sleep(Duration::from_millis(50));
    super::reactor::seams::RING_ERROR.store(true, Ordering::SeqCst);
    // A third wait rings the doorbell: the reactor's next round fails
    // (and may end it before its first poll returns).
    let mut c = super::wait32_async(&map, 8, 0, None);
    let c = match poll_once(&mut c) {
        Poll::Ready(r) => r,
        Poll::Pending => block_on(c),
    };
    let errno = |r: Result<(), crate::Error>| r.map_err(|e| e.errno());
    assert_eq!(errno(block_on(a)), Ok(()));
    assert_eq!(errno(block_on(b)), Ok(()));
    assert_eq!(errno(c), Ok(()));
    // No kernel waiter is left on any of the words.
    until("no waiter left", || {
        (0..3).all(|i| super::notify(&map, i * 4, u32::MAX).unwrap() == 0)
    });
    assert_eq!(PENDING.load(Ordering::SeqCst), 0);
    // The engine still serves new waits.
    let t = std::thread::spawn({
        let map = Arc::clone(&map);
        move || block_on(super::wait32_async(&map, 0, 0, None))
    });
    notify_one(&map, 0);
    assert_eq!(errno(t.join().unwrap()), Ok(()));
}

/// A transient setup failure (`ENOMEM` from `io_uring_setup`, forced
/// through the seam) gives threads for the waits of the moment, and the
/// ring is set up on a later wait. Before this fix the first failure
/// chose threads for the whole process.
#[test]
fn a_transient_setup_failure_is_retried() {
    if !in_child("wait::tests::a_transient_setup_failure_is_retried") {
        return;
    }
    if std::env::var_os("SHMGATE_ASYNC_WAIT").is_some() {
        return;
    }
    super::engine::seams::fail_next_setup(Errno::NOMEM);
    assert_eq!(super::async_wait_engine(), super::AsyncWaitEngine::Threads);
    // A wait in the meantime works (on a thread).
    let (_seg, map) = segment("transient", 4096);
    let r = block_on(super::wait32_async(
        &map,
        0,
        0,
        Some(Duration::from_millis(5)),
    ));
    assert_eq!(r.unwrap_err().errno(), Errno::TIMEDOUT);
    std::thread::sleep(Duration::from_millis(60));
    // Retried: io_uring if the kernel has it (a permanent failure, which
    // the seam does not make, would stay threads).
    let e = super::async_wait_engine();
    let ring_works = crate::sys::uring::Ring::new(4, 8).is_ok();
    eprintln!("engine after retry: {e:?} (io_uring_setup works: {ring_works})");
    if ring_works {
        assert_eq!(e, super::AsyncWaitEngine::IoUring);
    }
}

/// A process that is pid 1 of a PID namespace forks into a new one: the
/// child is pid 1 too, so comparing pids cannot tell that it lost the
/// reactor thread. Its async waits must still end (here: their 100 ms
/// deadline, and a notify), through an engine of its own.
#[test]
#[allow(unsafe_code)]
fn a_child_forked_into_a_new_pid_namespace_ends_its_waits() {
    if !in_child("wait::tests::a_child_forked_into_a_new_pid_namespace_ends_its_waits") {
        return;
    }
    // pid 1 of a new namespace: unshare, then fork.
    // SAFETY: unshare(CLONE_NEWPID) only affects children made later.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        eprintln!("unshare(CLONE_NEWPID) failed (not root?): skipped");
        return;
    }
    let status = fork_and_wait(|| {
        // In the first child, pid 1: start the engine.
        let (_seg, map) = segment("fork1", 4096);
        let r = block_on(super::wait32_async(
            &map,
            0,
            0,
            Some(Duration::from_millis(10)),
        ));
        if r.map_err(|e| e.errno()) != Err(Errno::TIMEDOUT) || std::process::id() != 1 {
            return 10;
        }
        // SAFETY: as above.
        if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
            return 11;
        }
        let inner = fork_and_wait(|| {
            // In the grandchild, pid 1 as well.
            if std::process::id() != 1 {
                return 20;
            }
            let r = block_on(super::wait32_async(
                &map,
                0,
                0,
                Some(Duration::from_millis(100)),
            ));
            if r.map_err(|e| e.errno()) != Err(Errno::TIMEDOUT) {
                return 21;
            }
            let t = std::thread::spawn({
                let map = Arc::clone(&map);
                move || block_on(super::wait32_async(&map, 0, 0, None))
            });
            notify_one(&map, 0);
            if !t.join().is_ok_and(|r| r.is_ok()) {
                return 22;
            }
            0
        });
        inner.unwrap_or(12)
    });
    assert_eq!(status, Some(0), "exit status of the forked children");
}

/// Forks; the child runs `f` and exits with its code. The parent waits at
/// most 30 s for it (killing it then): `Some(code)`, or `None` if it hung
/// or died.
#[allow(unsafe_code)]
fn fork_and_wait(f: impl FnOnce() -> i32) -> Option<i32> {
    // SAFETY: the child runs only `f` and then `_exit`s; glibc's malloc
    // is fork-safe, and this test runs alone in its process.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(99);
        // SAFETY: ends the child without running the parent's atexit
        // handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    for _ in 0..3000 {
        // SAFETY: waits for our own child; `status` is a live int.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: our own child, which hung.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, &mut status, 0);
    }
    None
}
