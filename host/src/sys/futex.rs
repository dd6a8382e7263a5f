//! Futex wait and wake on shared (not process-private) words, for the
//! native ring: a waiter in one process is woken by a waker in another that
//! maps the same segment, and by a guest's `notify` (the host wakes the same
//! word through its own mapping: shared futexes are keyed by the file page,
//! not the address).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::io::Errno as RErrno;
use rustix::thread::futex;
use shmgate_core::Errno;

/// `futex(FUTEX_WAIT)` while `word` holds `expected`, at most `timeout`
/// (`None`: until woken). Returns on a wake-up, a changed value, a signal
/// or the timeout alike: callers look again.
pub(crate) fn wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> Result<(), Errno> {
    let ts = timeout.map(|t| rustix::time::Timespec {
        tv_sec: i64::try_from(t.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(t.subsec_nanos()),
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) | Err(RErrno::INTR | RErrno::AGAIN | RErrno::TIMEDOUT) => Ok(()),
        Err(e) => Err(super::errno(e)),
    }
}

/// `futex(FUTEX_WAKE)`: wakes every waiter on `word`, in any process.
pub(crate) fn wake(word: &AtomicU32) -> Result<(), Errno> {
    futex::wake(word, futex::Flags::empty(), i32::MAX as u32)
        .map(drop)
        .map_err(super::errno)
}
