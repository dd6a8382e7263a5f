//! Fork detection without pids: a `pthread_atfork` child handler counts
//! the forks this process descends from. A process that forks into a new
//! PID namespace can have a child with its own pid (both pid 1), so
//! comparing pids cannot tell them apart; the handler runs in every child
//! `fork` makes, whatever its pid.
//!
//! The handler only does async-signal-safe work (two atomic stores), as
//! POSIX requires of code run in the child of a multi-threaded process.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How many forks separate this process from the one that registered the
/// handler (its fork depth): 0 in the registering process.
static GENERATION: AtomicUsize = AtomicUsize::new(0);

/// Flags the handler clears in the child: try-locks held by a thread of
/// the parent (which does not exist in the child).
static CLEARED_IN_CHILD: [&AtomicBool; 1] = [&crate::wait::STARTING];

static REGISTER: Once = Once::new();

/// `pthread_atfork` failed: no fork could be detected.
static UNREGISTERED: AtomicBool = AtomicBool::new(false);

extern "C" fn in_child() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
    for flag in CLEARED_IN_CHILD {
        flag.store(false, Ordering::SeqCst);
    }
}

/// `pthread_atfork(NULL, NULL, child)`, once, then this process's fork
/// generation: a value that differs in every child forked after the first
/// call from the value in its parent. `usize::MAX` if the handler could not
/// be registered (`ENOMEM`): no generation can then be trusted.
#[allow(unsafe_code)]
pub(crate) fn generation() -> usize {
    REGISTER.call_once(|| {
        // SAFETY: registers a handler with no prepare/parent part; the
        // child handler only touches atomics (async-signal-safe), and is a
        // plain `extern "C" fn` that lives as long as the program.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        if rc != 0 {
            UNREGISTERED.store(true, Ordering::SeqCst);
        }
    });
    if UNREGISTERED.load(Ordering::SeqCst) {
        return usize::MAX;
    }
    GENERATION.load(Ordering::SeqCst)
}
