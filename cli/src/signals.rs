//! Cleanup on `SIGINT`, `SIGTERM` and `SIGHUP` for `shmgate demo`, without
//! work in a signal handler: the signals are blocked in every thread and
//! one thread waits for them with `sigwait`, runs the cleanup as ordinary
//! code, then lets the signal take its default effect (the process ends
//! "killed by SIGINT", as the shell expects).
//!
//! The mask is inherited by threads started afterwards, so
//! [`on_termination`] must run before the process starts any thread.
//! Child processes start with an empty mask again (`std::process::Command`
//! resets it), so the guests still die of their own Ctrl-C.

use std::sync::{Arc, Mutex};

/// The signals that end an interactive or supervised process.
const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// The set of [`SIGNALS`].
#[allow(unsafe_code)]
fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set we pass a valid pointer to;
    // `zeroed` only provides the storage it overwrites.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid, writable storage for a sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in SIGNALS {
        // SAFETY: `set` was initialised by sigemptyset; `sig` is valid.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    set
}

/// A cleanup to run once if the process is asked to terminate; replaced or
/// disarmed by whoever owns the resource.
pub(crate) type Cleanup = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

/// Blocks [`SIGNALS`] in the calling thread (and so in every thread started
/// later) and starts a thread that, when one arrives, runs the cleanup in
/// the returned slot (if any) and then ends the process by that signal.
///
/// # Errors
///
/// The thread could not be started (the signals are unblocked again).
#[allow(unsafe_code)]
pub(crate) fn on_termination() -> std::io::Result<Cleanup> {
    let set = signal_set();
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is
    // allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let slot: Cleanup = Arc::new(Mutex::new(None));
    let theirs = Arc::clone(&slot);
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised and blocked in this thread (it
            // inherited the mask); `sig` is valid storage for the result.
            while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
            let cleanup = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(cleanup) = cleanup {
                cleanup();
            }
            die_by(sig);
        });
    if let Err(e) = spawned {
        // SAFETY: as above.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
        return Err(e);
    }
    Ok(slot)
}

/// Ends the process by `sig` with its default action (termination), so
/// the parent sees the signal, not an exit code.
#[allow(unsafe_code)]
fn die_by(sig: libc::c_int) -> ! {
    // SAFETY: SIG_DFL is a valid disposition for these signals; the set
    // holds only `sig`; raise sends it to this thread, where it is now
    // unblocked, and its default action ends the process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::raise(sig);
    }
    // Not reached; if it were, exit as a shell reports a signal death.
    std::process::exit(128 + sig)
}
