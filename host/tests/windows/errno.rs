//! The signal handler keeps `errno`: a thread whose access faults and is
//! resolved by shmgate's handler finds `errno` as it left it, even when
//! the handler's own system calls failed on the way (which is what sets
//! `errno`: a system call that succeeds leaves it alone).

use shmgate_host::OpenOptions;

use crate::common::{
    Ns, assert_child_ok, child_value, init, is_child, run_child, truncate_elsewhere,
};

/// What the test stores in `errno` before the access.
const SENTINEL: i32 = 4242;
/// The length of the mapping the peer shrinks.
const LEN: usize = 1 << 20;

/// This thread's `errno`.
fn errno() -> i32 {
    // SAFETY: `__errno_location` returns this thread's errno, always valid.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = value };
}

/// A checked read of a `Mapping` whose segment a peer truncated: the
/// handler makes the range `PROT_NONE` (`SIGBUS`), then replaces it with
/// private pages (`SIGSEGV`), and the read returns `ENXIO`. In the child
/// that runs under a tight `RLIMIT_DATA`, charging the private pages fails
/// (`ENOMEM` in `errno`) and the handler falls back to shared anonymous
/// pages: only its restore keeps the sentinel.
#[test]
fn the_signal_handler_keeps_errno() {
    for role in ["errno-plain", "errno-rlimit-data"] {
        if is_child(role) {
            return errno_child(role == "errno-rlimit-data");
        }
    }
    if std::env::var("SHMGATE_WINDOWS_CHILD").is_ok() {
        return; // a child of another test
    }
    for role in ["errno-plain", "errno-rlimit-data"] {
        let out = run_child("errno::the_signal_handler_keeps_errno", role, &[]);
        assert_child_ok(&out, role);
        assert_eq!(
            child_value(&out, "read").as_deref(),
            Some("ENXIO"),
            "{role}: the read reports the shrink"
        );
        assert_eq!(
            child_value(&out, "errno"),
            Some(SENTINEL.to_string()),
            "{role}: errno after the resolved faults"
        );
    }
}

fn errno_child(tight: bool) {
    init();
    let ns = Ns::new();
    let name = ns.name("errno");
    let seg = OpenOptions::new()
        .size(LEN as u64)
        .open_owned(&name)
        .unwrap();
    let map = seg.map().unwrap();
    map.write_at(LEN - 8, b"untouchd").unwrap();
    truncate_elsewhere(&name, 0);

    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `old` is a valid rlimit to fill in.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_DATA, &mut old) }, 0);
    let mut buf = [0u8; 8];
    if tight {
        let tight = libc::rlimit {
            rlim_cur: 4096,
            rlim_max: old.rlim_max,
        };
        // SAFETY: valid rlimit values; only this child process is limited.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_DATA, &tight) }, 0);
    }
    // Nothing between the sentinel and the read of errno allocates or
    // makes a system call but the faulting copy itself.
    set_errno(SENTINEL);
    let read = map.read_at(LEN - 8, &mut buf);
    let after = errno();
    if tight {
        // SAFETY: as above, restoring what it was.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_DATA, &old) }, 0);
    }
    let read = match read {
        Err(e) if e.errno() == shmgate_host::Errno::NXIO => "ENXIO".to_owned(),
        other => format!("{other:?}"),
    };
    println!("read={read}");
    println!("errno={after}");
    assert!(map.is_revoked());
}
