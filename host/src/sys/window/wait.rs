//! Waiting on a shared word and a private interrupt word at once
//! (`futex_waitv`, Linux 5.16+), so a blocked `wait32` sleeps until a
//! `notify`, its deadline or an interrupt, with no periodic wake-ups.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use shmgate_core::Errno;

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woke {
    /// The shared word was notified (or its value was no longer the
    /// expected one).
    Shared,
    /// The interrupt word changed or was woken.
    Interrupt,
    /// The deadline passed.
    TimedOut,
}

use crate::sys::uring::{FUTEX2_PRIVATE, FUTEX2_SIZE_U32, FutexWaitv};

/// `futex_waitv` on `shared` (while it holds `expected`, across processes)
/// and `interrupt` (while it holds `seen`, this process only), and on
/// `extra` too if given (another private word and the value it holds: an
/// async wait's cancel word), until `deadline` (`None`: no deadline). A
/// wake-up of `extra` reads as [`Woke::Interrupt`]: the caller looks at
/// its flags again.
///
/// # Errors
///
/// `ENOSYS` on kernels before 5.16 (the caller falls back), and `EAGAIN`
/// if `shared` does not hold `expected`.
#[allow(unsafe_code)]
pub(crate) fn wait_either(
    shared: &AtomicU32,
    expected: u32,
    interrupt: &AtomicU32,
    seen: u32,
    extra: Option<(&AtomicU32, u32)>,
    deadline: Option<Instant>,
) -> Result<Woke, Errno> {
    let private = |word: &AtomicU32, val: u32| FutexWaitv {
        val: u64::from(val),
        uaddr: word.as_ptr() as u64,
        flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
        reserved: 0,
    };
    let waiters = [
        FutexWaitv {
            val: u64::from(expected),
            uaddr: shared.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        },
        private(interrupt, seen),
        extra.map_or_else(FutexWaitv::default, |(w, v)| private(w, v)),
    ];
    let count: u32 = if extra.is_some() { 3 } else { 2 };
    // An absolute CLOCK_MONOTONIC deadline (what `Instant` measures on
    // Linux), from the time left, so `Instant`'s epoch is never needed.
    let timeout = match deadline {
        None => None,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // As FUTEX_WAIT does with a zero timeout: the value first.
                return unless_changed(shared, expected, Woke::TimedOut);
            }
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
            let now = Duration::new(
                u64::try_from(now.tv_sec).unwrap_or(0),
                u32::try_from(now.tv_nsec).unwrap_or(0),
            );
            now.checked_add(left).map(|abs| libc::timespec {
                tv_sec: libc::time_t::try_from(abs.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(abs.subsec_nanos()),
            })
        }
    };
    let ts_ptr = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: the first `count` entries of `waiters` are valid futex_waitv
    // structs whose addresses are live, aligned u32s for the duration of
    // the call;
    // `ts_ptr` is null or points at a live timespec.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            count,
            0u32,
            ts_ptr,
            libc::CLOCK_MONOTONIC,
        )
    };
    if rc == 0 {
        return Ok(Woke::Shared);
    }
    if rc >= 1 {
        return Ok(Woke::Interrupt);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::ETIMEDOUT) => Ok(Woke::TimedOut),
        Some(libc::EINTR) => Ok(Woke::Interrupt), // a signal: the caller looks again
        // One of the two words differed: `EAGAIN` if it was the shared
        // one, else the interrupt word moved.
        Some(libc::EAGAIN) => unless_changed(shared, expected, Woke::Interrupt),
        Some(libc::ENOSYS) => Err(Errno::NOSYS),
        Some(e) => Err(Errno::from_raw(u16::try_from(e).unwrap_or(Errno::IO.raw()))),
        None => Err(Errno::IO),
    }
}

/// `EAGAIN` if `shared` no longer holds `expected`, else `woke`.
fn unless_changed(shared: &AtomicU32, expected: u32, woke: Woke) -> Result<Woke, Errno> {
    if shared.load(std::sync::atomic::Ordering::SeqCst) == expected {
        Ok(woke)
    } else {
        Err(Errno::AGAIN)
    }
}

/// `futex(FUTEX_WAKE_PRIVATE)`: wakes every waiter of a process-private
/// word (the interrupt word).
pub(crate) fn wake_private(word: &AtomicU32) {
    use rustix::thread::futex;
    let _ = futex::wake(word, futex::Flags::PRIVATE, u32::MAX >> 1);
}
