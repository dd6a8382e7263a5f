//! Hazards planted in `/dev/shm`, the holes of glibc's `shm_open` that
//! shmgate closes: symlinks (to a file outside, or dangling), a FIFO, a
//! directory, and names that try to leave `/dev/shm` or alias another name.
//!
//! The hazards are planted with `std::fs` and libc, as an attacker sharing
//! `/dev/shm` would, and removed by a [`Cleanup`] guard even if a test fails.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, symlink};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use shmgate_core::{Errno, Mode, OFlags};
use shmgate_host::{OpenOptions, Segment, open, unlink};

use crate::common::{Cleanup, TestResult, errno_of, exists, file_of, shm_path, unique_name};
use crate::sys;

const RDONLY: OFlags = OFlags::RDONLY;
const RDWR: OFlags = OFlags::RDWR;
const CREATE: OFlags = OFlags::CREATE;
const EXCL: OFlags = OFlags::EXCL;
const TRUNC: OFlags = OFlags::TRUNC;

/// Every valid flag combination without `EXCL`.
fn no_excl() -> [OFlags; 6] {
    [
        RDONLY,
        RDWR,
        RDONLY | CREATE,
        RDWR | CREATE,
        RDWR | TRUNC,
        RDWR | CREATE | TRUNC,
    ]
}

/// Size and content of a file, to show it was not touched.
fn snapshot(path: &Path) -> (u64, Vec<u8>) {
    let meta = fs::metadata(path).expect("stat the target");
    (meta.len(), fs::read(path).expect("read the target"))
}

/// A symlink in `/dev/shm` to a file outside is `ELOOP` for every open,
/// `TRUNC` and `CREATE` included, and the target keeps its content and
/// size; with `CREATE | EXCL` the name exists (`EEXIST`). Unlinking the name
/// removes the link, never the target.
#[test]
fn symlink_to_outside_file_is_eloop() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let outside = cleanup.outside_dir();
    let target = outside.join("precious");
    fs::write(&target, b"precious data that must survive")?;
    let before = snapshot(&target);
    symlink(&target, shm_path(&name))?;

    for spelling in [name.clone(), format!("/{name}")] {
        for flags in no_excl() {
            let err = open(&spelling, flags, Mode::OWNER_RW).unwrap_err();
            assert_eq!(err.errno(), Errno::LOOP, "{flags:?} {spelling}");
            assert_eq!(snapshot(&target), before, "{flags:?} touched the target");
        }
        for flags in [RDWR | CREATE | EXCL, RDONLY | CREATE | EXCL] {
            let err = open(&spelling, flags, Mode::OWNER_RW).unwrap_err();
            assert_eq!(err.errno(), Errno::EXIST, "{flags:?} {spelling}");
        }
    }
    assert!(
        fs::symlink_metadata(shm_path(&name))?
            .file_type()
            .is_symlink()
    );
    assert_eq!(snapshot(&target), before);

    unlink(&name)?;
    assert!(!exists(&shm_path(&name)));
    assert_eq!(snapshot(&target), before, "unlink removed the target");
    Ok(())
}

/// A dangling symlink in `/dev/shm` with `CREATE` is `ELOOP`, and nothing
/// is created where it points outside `/dev/shm` (glibc, and rustix's
/// linux_raw backend, would create the file there).
#[test]
fn dangling_symlink_with_create_is_eloop() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let outside = cleanup.outside_dir();
    let target = outside.join("planted-by-attacker");
    symlink(&target, shm_path(&name))?;

    for flags in no_excl() {
        let err = open(&name, flags, Mode::OWNER_RW).unwrap_err();
        assert_eq!(err.errno(), Errno::LOOP, "{flags:?}");
        assert!(
            !exists(&target),
            "{flags:?} created the target outside /dev/shm"
        );
    }
    assert_eq!(
        errno_of(open(&name, RDWR | CREATE | EXCL, Mode::OWNER_RW)),
        Errno::EXIST
    );
    assert!(!exists(&target));
    assert_eq!(
        fs::read_dir(&outside)?.count(),
        0,
        "something appeared outside"
    );
    Ok(())
}

/// A FIFO under the name is `EINVAL`, and the open returns at once instead
/// of waiting for a writer (a plain `O_RDONLY` open of a FIFO blocks). Each
/// open runs in a thread; if it has not answered within 5 s the test fails
/// (after unblocking the thread by opening the FIFO's write end).
#[test]
fn fifo_is_einval_without_blocking() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let path = shm_path(&name);
    sys::mkfifo(&path, 0o600).map_err(|e| format!("mkfifo: {e}"))?;

    for flags in no_excl() {
        let (tx, rx) = mpsc::channel();
        let thread_name = name.clone();
        std::thread::spawn(move || {
            let _ = tx.send(open(&thread_name, flags, Mode::OWNER_RW).map(drop));
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(result) => assert_eq!(errno_of(result), Errno::INVAL, "{flags:?}"),
            Err(_) => {
                // A reader blocked in open(2) is released by a writer.
                let _ = fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(&path);
                panic!("open({flags:?}) of a FIFO blocked for 5 s");
            }
        }
    }
    assert!(fs::symlink_metadata(&path)?.file_type().is_fifo());
    Ok(())
}

/// A directory under the name is `EINVAL` for every open (`RDONLY` too,
/// which the kernel would allow on a directory) and for unlink (the kernel
/// says `EISDIR`); with `CREATE | EXCL` it is `EEXIST`. The directory stays.
#[test]
fn directory_is_einval() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let path = shm_path(&name);
    fs::create_dir(&path)?;

    for flags in no_excl() {
        assert_eq!(
            errno_of(open(&name, flags, Mode::OWNER_RW)),
            Errno::INVAL,
            "{flags:?}"
        );
    }
    assert_eq!(
        errno_of(open(&name, RDWR | CREATE | EXCL, Mode::OWNER_RW)),
        Errno::EXIST
    );
    assert_eq!(errno_of(unlink(&name)), Errno::INVAL);
    assert!(fs::symlink_metadata(&path)?.is_dir());
    Ok(())
}

/// `.`, `..` and names with a `/` after the leading ones (`../x`, `/../x`,
/// `./x`, `x/..`, `x/y`) are `EINVAL` for open and unlink, and nothing is
/// created in `/dev` or `/dev/shm`.
#[test]
fn dot_and_slash_names_are_einval() -> TestResult {
    let mut cleanup = Cleanup::new();
    let x = unique_name();
    // Where a name that escaped `/dev/shm` would land.
    let escaped = Path::new("/dev").join(&x);
    cleanup.track(escaped.clone());
    cleanup.track(shm_path(&x));
    let names = [
        ".".to_string(),
        "..".to_string(),
        "/.".to_string(),
        "/..".to_string(),
        "//..".to_string(),
        "../".to_string(),
        format!("../{x}"),
        format!("/../{x}"),
        format!("//../{x}"),
        format!("./{x}"),
        format!("{x}/.."),
        format!("{x}/y"),
        format!("{x}/"),
    ];
    for name in &names {
        for flags in [
            RDONLY,
            RDWR,
            RDWR | CREATE,
            RDWR | CREATE | EXCL,
            RDWR | CREATE | TRUNC,
        ] {
            let err = open(name, flags, Mode::OWNER_RW).unwrap_err();
            assert_eq!(err.errno(), Errno::INVAL, "{flags:?} {name:?}");
        }
        assert_eq!(errno_of(unlink(name)), Errno::INVAL, "unlink {name:?}");
    }
    assert!(!exists(&escaped), "{escaped:?} was created");
    assert!(!exists(&shm_path(&x)), "{x} was created");
    Ok(())
}

/// A name with a NUL is `EINVAL` (glibc stops at the NUL, so `"x\0evil"`
/// would alias `"x"`): it neither creates, opens nor unlinks the shorter
/// name.
#[test]
fn nul_in_name_is_einval() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let aliased = format!("{name}\0evil");
    assert_eq!(
        errno_of(open(&aliased, RDWR | CREATE, Mode::OWNER_RW)),
        Errno::INVAL
    );
    assert!(
        !exists(&shm_path(&name)),
        "the name before the NUL was created"
    );

    let seg = OpenOptions::new().create_new(true).size(4096).open(&name)?;
    for raw in [
        aliased.clone(),
        format!("/{aliased}"),
        "\0".into(),
        "/\0".into(),
    ] {
        for flags in [RDONLY, RDWR, RDWR | CREATE, RDWR | TRUNC] {
            assert_eq!(
                errno_of(open(&raw, flags, Mode::OWNER_RW)),
                Errno::INVAL,
                "{flags:?} {raw:?}"
            );
        }
        assert_eq!(errno_of(unlink(&raw)), Errno::INVAL, "unlink {raw:?}");
    }
    assert!(
        exists(&shm_path(&name)),
        "unlink removed the name before the NUL"
    );
    assert_eq!(seg.len()?, 4096, "TRUNC truncated the name before the NUL");
    Ok(())
}

/// The descriptor of a successful open is a regular file, and the
/// `O_NONBLOCK` used to defuse FIFOs is cleared again (`fcntl(F_GETFL)`).
#[test]
fn successful_open_is_regular_and_blocking() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let created = open(&name, RDWR | CREATE | EXCL, Mode::OWNER_RW)?;
    created.set_len(4096)?;
    let opened = [
        created,
        open(&name, RDONLY, Mode::OWNER_RW)?,
        open(&name, RDWR, Mode::OWNER_RW)?,
        open(&name, RDWR | CREATE, Mode::OWNER_RW)?,
        Segment::open_read_only(format!("/{name}"))?,
    ];
    for seg in &opened {
        let meta = file_of(seg.as_fd()).metadata()?;
        assert!(meta.file_type().is_file(), "not a regular file: {meta:?}");
        let fl = sys::status_flags(seg.as_fd());
        assert_eq!(fl & libc::O_NONBLOCK, 0, "O_NONBLOCK still set: {fl:#o}");
    }
    Ok(())
}

/// No descriptor of shmgate's can be redirected: a process creates a
/// first object, closes every descriptor above 2 (as daemons do after
/// `fork`), opens a directory of its own into the freed numbers, then
/// creates (plainly and atomically) and unlinks. Everything happens in
/// `/dev/shm` and nothing in the decoy directory.
#[test]
fn closing_and_reusing_descriptors_cannot_redirect() -> TestResult {
    let mut cleanup = Cleanup::new();
    let first = cleanup.name();
    let second = cleanup.name();
    let atomic = format!("{second}.atomic");
    cleanup.track(shm_path(&atomic));
    let decoy = cleanup.outside_dir();
    let decoy_str = decoy.to_str().expect("a UTF-8 temporary directory");
    crate::common::Probe::same_user().run(["redirect", &first, &second, decoy_str])?;
    assert!(!exists(&shm_path(&first)), "the unlink missed /dev/shm");
    assert!(exists(&shm_path(&second)), "the create missed /dev/shm");
    assert!(
        exists(&shm_path(&atomic)),
        "the atomic create missed /dev/shm"
    );
    let stray: Vec<_> = fs::read_dir(&decoy)?.collect();
    assert!(stray.is_empty(), "created outside /dev/shm: {stray:?}");
    Ok(())
}

/// Why the open of an existing object keeps `O_NONBLOCK` (and so the
/// `fcntl` that clears it afterwards), measured against the kernel rather
/// than assumed. A FIFO alone would not need it for `RDWR`: Linux opens a
/// FIFO read-write at once, blocking mode or not (fifo(7)); `RDONLY` would
/// wait for a writer. But whoever owns an object can hold a lease on it
/// (`F_SETLEASE`): a plain `RDWR` open then waits until the holder gives
/// the lease up or `/proc/sys/fs/lease-break-time` (45 s by default)
/// passes, while shmgate's open fails at once with `EAGAIN` (EWOULDBLOCK).
#[test]
fn nonblocking_open_defuses_fifos_and_leases() -> TestResult {
    let mut cleanup = Cleanup::new();
    let fifo = cleanup.name();
    sys::mkfifo(&shm_path(&fifo), 0o600).map_err(|e| format!("mkfifo: {e}"))?;
    // The kernel fact: RDWR on a FIFO does not block (the test would hang
    // here, and the harness report it, if it did).
    drop(sys::raw_open(&shm_path(&fifo), libc::O_RDWR)?);

    let name = cleanup.name();
    let seg = open(&name, RDWR | CREATE | EXCL, Mode::OWNER_RW)?;
    seg.set_len(4096)?;
    // A read lease, on a read-only description, as a hostile owner would
    // hold it; breaking it signals us.
    sys::ignore_sigio();
    let holder = sys::raw_open(&shm_path(&name), libc::O_RDONLY)?;
    drop(seg);
    sys::set_lease(holder.as_fd(), libc::F_RDLCK).map_err(|e| format!("F_SETLEASE: {e}"))?;

    // shmgate's open returns at once, refusing.
    assert_eq!(
        errno_of(open(&name, RDWR, Mode::OWNER_RW)),
        Errno::AGAIN,
        "an open under a lease must fail, not wait"
    );
    // A plain open blocks until the lease goes.
    let (tx, rx) = mpsc::channel();
    let path = shm_path(&name);
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(sys::raw_open(&path, libc::O_RDWR).map(drop));
    });
    let blocked = rx.recv_timeout(Duration::from_millis(300)).is_err();
    sys::set_lease(holder.as_fd(), libc::F_UNLCK).map_err(|e| format!("F_UNLCK: {e}"))?;
    let released = rx.recv_timeout(Duration::from_secs(30));
    waiter.join().expect("the waiting thread");
    assert!(blocked, "a plain RDWR open did not wait for the lease");
    assert!(matches!(released, Ok(Ok(()))), "{released:?}");
    // With the lease gone shmgate opens as usual.
    drop(open(&name, RDWR, Mode::OWNER_RW)?);
    Ok(())
}
