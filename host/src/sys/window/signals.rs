//! The process's `SIGBUS`/`SIGSEGV` handler for registered ranges.
//!
//! - `SIGBUS` in a live registration: another process shrank the segment
//!   under it. The handler makes the whole range `PROT_NONE` (`mprotect`
//!   keeps the file mapping; it needs no memory, so it cannot fail for lack
//!   of it) and returns; the access runs again and faults with `SIGSEGV`,
//!   which wasmtime turns into a trap of that guest when the access came
//!   from wasm code.
//! - `SIGSEGV` in host code on a read-only or revoked registration: a host
//!   function (WASI's `fd_read`, say) wrote into a read-only window, or
//!   touched a revoked one. The handler replaces the range with private
//!   zeroed pages, so the access lands there: the host survives and the
//!   segment is unchanged. For this the handler must run *after*
//!   wasmtime's (which handles faults in wasm code and passes the rest on),
//!   so it is installed before any engine exists.
//!
//! Everything else (a fault outside every registration, a signal sent by
//! `kill`) goes to the previous handler exactly as wasmtime's
//! `signals.rs` chains, as if we were not there. The handler saves and
//! restores `errno`, uses only atomics, `mprotect` and `mmap` (system calls
//! that take no user-space lock), and never allocates.

use std::ffi::{c_int, c_void};
use std::sync::{Once, OnceLock};

use super::record::State;
use super::registry::{self, Found};

/// The handlers that were installed before ours, to pass on what is not
/// ours. Set before ours is installed, so the handler never runs without.
static PREV_SIGBUS: OnceLock<libc::sigaction> = OnceLock::new();
static PREV_SIGSEGV: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the handler for `SIGBUS` and `SIGSEGV` once per process.
#[allow(unsafe_code)]
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (signal, prev) in [(libc::SIGBUS, &PREV_SIGBUS), (libc::SIGSEGV, &PREV_SIGSEGV)] {
            // SAFETY: a zeroed sigaction is a valid "default" value; the
            // kernel overwrites it with the current disposition.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: a null new action only queries; `old` is ours.
            if unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) } != 0 {
                continue;
            }
            let _ = prev.set(old);
            // SAFETY: as above, zeroed is a valid starting value.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = handler as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            // SAFETY: `sa_mask` is a field of the sigaction we own.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: `action` is a live sigaction whose handler has the
            // SA_SIGINFO signature; the previous one is already saved.
            unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
        }
    });
}

/// The signal handler; see the module documentation.
#[allow(unsafe_code)]
extern "C" fn handler(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: `__errno_location` returns this thread's errno, always valid.
    let errno = unsafe { *libc::__errno_location() };
    let handled = handle(signal, info);
    // SAFETY: as above; whatever our system calls set is undone.
    unsafe { *libc::__errno_location() = errno };
    if !handled {
        chain(signal, info, context);
    }
}

/// Acts on a fault in a registered range; `false` if it is not ours (the
/// only case that goes to the previous handler: passing on a fault that is
/// ours would let that handler reset the disposition to the default).
#[allow(unsafe_code)]
fn handle(signal: c_int, info: *mut libc::siginfo_t) -> bool {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let info = unsafe { &*info };
    // Only faults the kernel raised for an access (si_code > 0): a signal
    // sent with kill or sigqueue has no meaningful address.
    if info.si_code <= 0 {
        return false;
    }
    // SAFETY: for a kernel SIGBUS/SIGSEGV, `si_addr` is the fault address.
    let addr = unsafe { info.si_addr() } as usize;
    let pinned = match registry::pin(addr) {
        Found::NotOurs => return false,
        // Someone is changing the registration: run the access again.
        Found::Transient => return true,
        Found::Pinned(pinned) => pinned,
    };
    let snap = pinned.snapshot;
    let (start, len) = (snap.start as *mut c_void, snap.end - snap.start);
    // Whether the access may run again, and the registration's new state.
    let (handled, state) = match (signal, snap.state) {
        // `Revoked` too: a replacement that failed may have left the
        // shared mapping in place (see `map::unmap_window`).
        (libc::SIGBUS, State::ReadWrite | State::ReadOnly | State::Revoked) => {
            // SAFETY: `start..start+len` is a live registration, pinned so
            // that its owner cannot unmap it until we finish: it is a
            // mapping of ours. PROT_NONE changes no data and needs no
            // memory (the file mapping stays; one VMA, nothing to split).
            let rc = unsafe { libc::mprotect(start, len, libc::PROT_NONE) };
            if rc == 0 {
                (true, State::Revoked)
            } else {
                (false, snap.state)
            }
        }
        // Raised before another thread detached the range: the access runs
        // again against the private pages there now.
        (libc::SIGBUS | libc::SIGSEGV, State::Detached) => (true, snap.state),
        (libc::SIGSEGV, State::ReadOnly | State::Revoked) => {
            // Host code wrote into a read-only range, or touched a revoked
            // one: private zeroed pages take its place, in two steps so a
            // failure never leaves a hole (as `map::replace_private`).
            let flags =
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE;
            // SAFETY: as above, the pinned range is ours; it becomes
            // inaccessible private pages (not charged against memory).
            let p = unsafe { libc::mmap(start, len, libc::PROT_NONE, flags, -1, 0) };
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            let charged = p != libc::MAP_FAILED && {
                // SAFETY: the same range, now private anonymous pages of
                // ours that only host code touching a range it should not
                // ever sees.
                unsafe { libc::mprotect(start, len, rw) == 0 }
            };
            if p == libc::MAP_FAILED {
                (false, snap.state)
            } else if charged {
                (true, State::Detached)
            } else {
                // The pages cannot be charged (strict overcommit): they
                // stay PROT_NONE, revoked, and the access cannot complete.
                (false, State::Revoked)
            }
        }
        _ => (false, snap.state),
    };
    pinned.finish(state);
    handled
}

/// Passes the signal on exactly as wasmtime does.
#[allow(unsafe_code)]
fn chain(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
    let prev = if signal == libc::SIGBUS {
        &PREV_SIGBUS
    } else {
        &PREV_SIGSEGV
    };
    // SAFETY: call the previous SA_SIGINFO or plain handler, or restore
    // the default disposition and return so the access faults again and
    // the process dies as it would without us.
    unsafe {
        match prev.get() {
            Some(old) if old.sa_flags & libc::SA_SIGINFO != 0 => {
                let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                    std::mem::transmute(old.sa_sigaction);
                f(signal, info, context);
            }
            Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
                let f: extern "C" fn(c_int) = std::mem::transmute(old.sa_sigaction);
                f(signal);
            }
            Some(old) => {
                libc::sigaction(signal, old, std::ptr::null_mut());
            }
            None => {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &dfl, std::ptr::null_mut());
            }
        }
    }
}
