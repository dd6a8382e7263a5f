//! The process's `SIGBUS`/`SIGSEGV` handler for registered ranges.
//!
//! - `SIGBUS` in a live registration: another process shrank the segment
//!   under it. The handler makes the whole range `PROT_NONE` (`mprotect`
//!   keeps the file mapping; it needs no memory, so it cannot fail for lack
//!   of it) and returns; the access runs again and faults with `SIGSEGV`,
//!   which wasmtime turns into a trap of that guest when the access came
//!   from wasm code.
//! - `SIGSEGV` in host code on a read-only, revoked or poisoned
//!   registration: wasmtime's helpers for `memory.fill`, `memory.copy` and
//!   `memory.init` (which run as host code, not compiled wasm), a host
//!   function (WASI's `fd_read`, say) or a native copy wrote into a
//!   read-only range, or touched a revoked one. The access must complete
//!   (host code cannot be made to trap), so the handler replaces the range
//!   with private zeroed pages ([`State::Detached`]) and the access lands
//!   there: the host survives and the segment is unchanged. On x86_64 the
//!   handler then single-steps the thread (the trap flag) until the
//!   function that faulted has returned (its caller's stack pointer), and
//!   makes the private pages `PROT_NONE` ([`State::Poisoned`]): every later
//!   access by the guest traps, so no guest code ever runs on against bytes
//!   that diverged from the segment. Elsewhere the pages stay readable (a
//!   documented gap). For this the handler must run *after* wasmtime's
//!   (which handles faults in wasm code and passes the rest on), so it is
//!   installed before any engine exists.
//!
//! Everything else (a fault outside every registration, a signal sent by
//! `kill`, a `SIGTRAP` while this thread is not stepping) goes to the
//! previous handler exactly as wasmtime's `signals.rs` chains, as if we
//! were not there. The handler saves and restores `errno`, uses only
//! atomics, thread-local cells, `mprotect` and `mmap` (system calls that
//! take no user-space lock), and never allocates.
//!
//! # Stepping (x86_64)
//!
//! Per thread, `STEP_SP` is 0 or the stack pointer of the host access that
//! faulted, and `STEP_RANGES` the starts of the ranges opened for it. Only
//! the thread itself reads or writes them, from its own signal handlers, so
//! plain cells suffice. A `SIGTRAP` while `STEP_SP` is set is ours: when
//! the stack pointer is above `STEP_SP`, the faulting function (a leaf such
//! as `memset`/`memmove`, or the host function around it) has returned, and
//! every opened range still [`State::Detached`] becomes `PROT_NONE` and
//! [`State::Poisoned`]. A later host access to a poisoned range faults
//! again and is handled the same way.
//!
//! A single step of a `rep stos`/`rep movs` runs one iteration, so glibc's
//! `memset`/`memmove` (`rep stosb`/`rep movsb` above a few KiB) would cost
//! a signal per byte, seconds per MiB that a guest's `memory.fill` could
//! ask for. So at such an instruction (forward, found by decoding the
//! bytes at `rip`), the handler skips the iterations that store into a
//! range this thread opened (their bytes would land on private pages that
//! nobody sees before they are poisoned), and when the instruction touches
//! none of those ranges, it poisons them at once and stops stepping: the
//! instruction runs at full speed, and should the access come back to a
//! poisoned range, it faults and is handled anew. Poisoning early is always
//! safe; it only costs another fault. The same happens before a system
//! call: a step trap while `SIGTRAP` is blocked (`pthread_create`, `fork`
//! and `posix_spawn` block every signal around `clone`) is forced to its
//! default action by the kernel, and `clone` copies the trap flag into the
//! new thread or process.
use std::ffi::{c_int, c_void};
use std::sync::{Once, OnceLock};

use super::record::State;
use super::registry::{self, Found};

/// The handlers that were installed before ours, to pass on what is not
/// ours. Set before ours is installed, so the handler never runs without.
static PREV_SIGBUS: OnceLock<libc::sigaction> = OnceLock::new();
static PREV_SIGSEGV: OnceLock<libc::sigaction> = OnceLock::new();
#[cfg(target_arch = "x86_64")]
static PREV_SIGTRAP: OnceLock<libc::sigaction> = OnceLock::new();

/// The signals the handler takes.
#[cfg(target_arch = "x86_64")]
const SIGNALS: [(c_int, &OnceLock<libc::sigaction>); 3] = [
    (libc::SIGBUS, &PREV_SIGBUS),
    (libc::SIGSEGV, &PREV_SIGSEGV),
    (libc::SIGTRAP, &PREV_SIGTRAP),
];
#[cfg(not(target_arch = "x86_64"))]
const SIGNALS: [(c_int, &OnceLock<libc::sigaction>); 2] =
    [(libc::SIGBUS, &PREV_SIGBUS), (libc::SIGSEGV, &PREV_SIGSEGV)];

/// Installs the handler for `SIGBUS` and `SIGSEGV` once per process.
#[allow(unsafe_code)]
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (signal, prev) in SIGNALS {
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
    let handled = if signal == libc::SIGTRAP {
        step::trap(context)
    } else {
        handle(signal, info, context)
    };
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
fn handle(signal: c_int, info: *mut libc::siginfo_t, context: *mut c_void) -> bool {
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
        (libc::SIGSEGV, State::ReadOnly | State::Revoked | State::Poisoned) => {
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
            // Private writable pages count against RLIMIT_DATA; shared
            // anonymous ones do not. When the first are refused (the
            // failed mprotect has set errno, which `handler` restores),
            // the second let the access complete all the same.
            let shared = p != libc::MAP_FAILED && !charged && {
                let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
                // SAFETY: the same pinned range of ours, PROT_NONE pages
                // now; it becomes zeroed shared anonymous pages that only
                // this process maps.
                unsafe { libc::mmap(start, len, rw, flags, -1, 0) != libc::MAP_FAILED }
            };
            if p == libc::MAP_FAILED {
                (false, snap.state)
            } else if charged || shared {
                step::open(snap.start, context);
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
    let Some(&(_, prev)) = SIGNALS.iter().find(|(s, _)| *s == signal) else {
        return;
    };
    // SAFETY: call the previous SA_SIGINFO or plain handler, or restore
    // the default disposition and return so the access faults again and
    // the process dies as it would without us.
    let restored = unsafe {
        match prev.get() {
            Some(old) if old.sa_flags & libc::SA_SIGINFO != 0 => {
                let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                    std::mem::transmute(old.sa_sigaction);
                f(signal, info, context);
                false
            }
            Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
                let f: extern "C" fn(c_int) = std::mem::transmute(old.sa_sigaction);
                f(signal);
                false
            }
            Some(old) => {
                libc::sigaction(signal, old, std::ptr::null_mut());
                true
            }
            None => {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &dfl, std::ptr::null_mut());
                true
            }
        }
    };
    // Nothing runs again when this returns from a `SIGTRAP` (`int3`, the
    // trap flag: the instruction is done) or from a signal sent with
    // `kill`: raise it again so that the disposition just restored acts
    // on it (SA_NODEFER: it is not blocked here), as without us.
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler,
    // and `chain` gets the one `handler` got.
    let again = signal == libc::SIGTRAP || unsafe { (*info).si_code } <= 0;
    if restored && again {
        // SAFETY: raise is async-signal-safe and takes no pointers.
        unsafe { libc::raise(signal) };
    }
}

/// Single-stepping a host access to its end, then poisoning what it
/// opened (see the module documentation).
#[cfg(target_arch = "x86_64")]
mod step {
    use std::cell::Cell;
    use std::ffi::c_void;

    use super::super::record::State;
    use super::super::registry::{self, Found};

    /// The trap flag in `EFLAGS`.
    const TF: i64 = 0x100;
    /// How many ranges one host access keeps open at once; opening one more
    /// poisons one of them early.
    const RANGES: usize = 4;
    /// The most single steps one host access is given before its ranges
    /// are poisoned anyway (about a second or two): a fault taken on an
    /// alternate signal stack, whose stack pointer says nothing about the
    /// thread's own stack, must not leave the thread stepping for ever. A
    /// host access still running then faults again and is handled anew.
    const BUDGET: usize = 1 << 20;

    thread_local! {
        /// 0, or the stack pointer of the host access being stepped.
        static STEP_SP: Cell<usize> = const { Cell::new(0) };
        /// The steps taken since `STEP_SP` was set.
        static STEPS: Cell<usize> = const { Cell::new(0) };
        /// The starts of the ranges opened for it (0: none).
        static STEP_RANGES: [Cell<usize>; RANGES] = const {
            [const { Cell::new(0) }; RANGES]
        };
    }

    /// The saved general registers of the interrupted thread.
    #[allow(unsafe_code)]
    fn regs(context: *mut c_void) -> *mut libc::greg_t {
        // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO
        // handler; we only take the address of its register array.
        unsafe {
            (&raw mut (*context.cast::<libc::ucontext_t>()).uc_mcontext.gregs)
                .cast::<libc::greg_t>()
        }
    }

    #[allow(unsafe_code, clippy::cast_sign_loss)]
    fn sp(context: *mut c_void) -> usize {
        // SAFETY: REG_RSP indexes the live register array of `regs`.
        let rsp = unsafe { *regs(context).add(libc::REG_RSP as usize) } as u64;
        usize::try_from(rsp).unwrap_or(usize::MAX)
    }

    #[allow(unsafe_code)]
    fn set_trap_flag(context: *mut c_void, on: bool) {
        // SAFETY: REG_EFL indexes the live register array of `regs`; the
        // kernel restores EFLAGS from it (TF included) on return.
        unsafe {
            let efl = regs(context).add(libc::REG_EFL as usize);
            *efl = if on { *efl | TF } else { *efl & !TF };
        }
    }

    /// Host code's access to the range at `start` was just given private
    /// pages: step the thread until the faulting function returned.
    pub(super) fn open(start: usize, context: *mut c_void) {
        if context.is_null() {
            return;
        }
        let _ = STEP_RANGES.try_with(|ranges| {
            if let Some(free) = ranges.iter().find(|c| c.get() == 0 || c.get() == start) {
                free.set(start);
                return;
            }
            // All taken: poison one now (early is always safe: should the
            // access come back to it, it faults and is handled anew) and
            // take its place, so that no range is left detached for good.
            if let Some(cell) = ranges.iter().find(|c| poison(c.get())) {
                cell.set(start);
            }
        });
        let _ = STEP_SP.try_with(|step| {
            if step.get() == 0 {
                step.set(sp(context));
                let _ = STEPS.try_with(|n| n.set(0));
            }
        });
        set_trap_flag(context, true);
    }

    /// A `SIGTRAP`: ours if this thread is stepping. `true` if handled.
    pub(super) fn trap(context: *mut c_void) -> bool {
        let Ok(at) = STEP_SP.try_with(Cell::get) else {
            return false;
        };
        if at == 0 || context.is_null() {
            return false;
        }
        let steps = STEPS.try_with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        if sp(context) <= at && steps.is_ok_and(|n| n < BUDGET) {
            // Still inside the access: one more step, unless it is a
            // string instruction that a step per iteration would drag out
            // (a `memory.fill` of a MiB would take seconds).
            // Nor is a system call stepped: one that blocks SIGTRAP (as
            // `pthread_create` and `fork` do around `clone`) would make the
            // next step trap kill the process, and a thread or process it
            // creates would inherit the trap flag.
            match rep_string(context) {
                Some(rep) if skip_into_ours(context, rep) => return true,
                Some(rep) if !rep.touches_ours() => {} // poison now (below)
                None if enters_kernel(context) => {}   // poison now (below)
                _ => return true,
            }
        }
        let mut done = true;
        let _ = STEP_RANGES.try_with(|ranges| {
            for cell in ranges {
                let start = cell.get();
                if start == 0 {
                    continue;
                }
                if poison(start) {
                    cell.set(0);
                } else {
                    // Its owner is acting on it: try again one step later.
                    done = false;
                }
            }
        });
        if done {
            let _ = STEP_SP.try_with(|step| step.set(0));
            set_trap_flag(context, false);
        }
        true
    }

    /// The direction flag in `EFLAGS`.
    const DF: i64 = 0x400;

    /// A `rep stos` or `rep movs` about to run (forward, 64-bit addresses).
    #[derive(Clone, Copy)]
    struct RepString {
        /// The instruction's length in bytes.
        len: usize,
        /// Bytes per iteration.
        size: usize,
        /// `movs` (reads `rsi`) rather than `stos`.
        movs: bool,
        /// Iterations left (`rcx`), destination (`rdi`), source (`rsi`).
        count: usize,
        dst: usize,
        src: usize,
    }

    impl RepString {
        /// Whether it reads or writes a range this thread opened.
        fn touches_ours(self) -> bool {
            ours(self.dst).is_some() || (self.movs && ours(self.src).is_some())
        }
    }

    /// The register `index` of the interrupted thread.
    #[allow(unsafe_code, clippy::cast_sign_loss)]
    fn reg(context: *mut c_void, index: libc::c_int) -> usize {
        // SAFETY: every `REG_*` index is inside the live register array
        // of `regs`.
        let value = unsafe { *regs(context).add(index as usize) } as u64;
        usize::try_from(value).unwrap_or(usize::MAX)
    }

    #[allow(unsafe_code, clippy::cast_possible_wrap)]
    fn set_reg(context: *mut c_void, index: libc::c_int, value: usize) {
        // SAFETY: as in `reg`; the kernel restores the thread's registers
        // from the array when the handler returns.
        unsafe { *regs(context).add(index as usize) = value as libc::greg_t };
    }

    /// The instruction at the interrupted thread's `rip` if it is a forward
    /// `rep stos{b,d,q}` or `rep movs{b,d,q}` (no other prefix).
    #[allow(unsafe_code)]
    fn rep_string(context: *mut c_void) -> Option<RepString> {
        // SAFETY: REG_EFL indexes the live register array of `regs`.
        if unsafe { *regs(context).add(libc::REG_EFL as usize) } & DF != 0 {
            return None;
        }
        let rip = reg(context, libc::REG_RIP);
        // SAFETY: `rip` is the instruction the thread runs next, so its
        // bytes are mapped, and readable (the code this runs on, libc's
        // string functions, Rust and wasmtime code, is mapped `r-x`).
        // Byte `i` is read only when bytes `0..i` were prefixes of that
        // instruction, so every byte read belongs to it.
        let byte = |i: usize| unsafe { std::ptr::read_volatile((rip as *const u8).add(i)) };
        if byte(0) != 0xf3 {
            return None;
        }
        let (wide, at) = match byte(1) {
            rex @ 0x40..=0x4f => (rex & 8 != 0, 2),
            _ => (false, 1),
        };
        let word = if wide { 8 } else { 4 };
        let (movs, size) = match byte(at) {
            0xaa => (false, 1),
            0xab => (false, word),
            0xa4 => (true, 1),
            0xa5 => (true, word),
            _ => return None,
        };
        Some(RepString {
            len: at + 1,
            size,
            movs,
            count: reg(context, libc::REG_RCX),
            dst: reg(context, libc::REG_RDI),
            src: reg(context, libc::REG_RSI),
        })
    }

    /// Whether the instruction at the interrupted thread's `rip` is a
    /// system call (`syscall`, `sysenter` or `int 0x80`).
    #[allow(unsafe_code)]
    fn enters_kernel(context: *mut c_void) -> bool {
        let rip = reg(context, libc::REG_RIP);
        // SAFETY: as in `rep_string`: the bytes of the instruction the
        // thread runs next, the second only when the first is the start
        // of a two-byte instruction (0f xx, cd ib).
        let byte = |i: usize| unsafe { std::ptr::read_volatile((rip as *const u8).add(i)) };
        match byte(0) {
            0x0f => matches!(byte(1), 0x05 | 0x34),
            0xcd => byte(1) == 0x80,
            _ => false,
        }
    }

    /// The end of the range this thread opened that holds `addr`, if it
    /// is still detached (private pages nobody else needs).
    fn ours(addr: usize) -> Option<usize> {
        STEP_RANGES
            .try_with(|ranges| {
                ranges.iter().find_map(|cell| {
                    let start = cell.get();
                    if start == 0 {
                        return None;
                    }
                    let Found::Pinned(pinned) = registry::pin(addr) else {
                        return None;
                    };
                    let snap = pinned.snapshot;
                    pinned.finish(snap.state);
                    (snap.start == start && snap.state == State::Detached).then_some(snap.end)
                })
            })
            .ok()
            .flatten()
    }

    /// Skips the iterations of `rep` that store into a range this thread
    /// opened: their bytes go to private pages that are poisoned unseen,
    /// so they need not be written (and a step per iteration would make a
    /// guest's `memory.fill` of a read-only window take seconds per MiB).
    /// `false` if the destination is not such a range.
    fn skip_into_ours(context: *mut c_void, rep: RepString) -> bool {
        let Some(end) = ours(rep.dst) else {
            return false;
        };
        let n = rep.count.min((end - rep.dst) / rep.size);
        if n == 0 {
            return false;
        }
        set_reg(context, libc::REG_RDI, rep.dst + n * rep.size);
        if rep.movs {
            set_reg(context, libc::REG_RSI, rep.src.wrapping_add(n * rep.size));
        }
        set_reg(context, libc::REG_RCX, rep.count - n);
        if rep.count == n {
            let rip = reg(context, libc::REG_RIP);
            set_reg(context, libc::REG_RIP, rip + rep.len);
        }
        true
    }

    /// Poisons the registration at `start` if it is still detached.
    /// `false` if someone is acting on it (try again later).
    fn poison(start: usize) -> bool {
        match registry::pin(start) {
            Found::Pinned(pinned) => {
                let snap = pinned.snapshot;
                let state = if snap.state == State::Detached && protect(snap.start, snap.end) {
                    State::Poisoned
                } else {
                    snap.state
                };
                pinned.finish(state);
                true
            }
            Found::Transient => false,
            Found::NotOurs => true,
        }
    }

    /// Makes `start..end` inaccessible; the private bytes stay (unseen).
    #[allow(unsafe_code)]
    fn protect(start: usize, end: usize) -> bool {
        // SAFETY: a pinned live registration: a range of ours that nobody
        // can unmap until we finish; PROT_NONE changes no data.
        unsafe { libc::mprotect(start as *mut c_void, end - start, libc::PROT_NONE) == 0 }
    }
}

/// Elsewhere host accesses are not stepped: their private pages stay.
#[cfg(not(target_arch = "x86_64"))]
mod step {
    use std::ffi::c_void;

    pub(super) fn open(_start: usize, _context: *mut c_void) {}

    pub(super) fn trap(_context: *mut c_void) -> bool {
        false
    }
}
