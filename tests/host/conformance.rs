//! Assertions of the Open POSIX Test Suite (LTP
//! `testcases/open_posix_testsuite/conformance/interfaces/shm_open` and
//! `shm_unlink`), ported to `shmgate_host::open`/`unlink`.
//!
//! Each test names the assertions it ports, by their number in the suite's
//! `assertions.xml` (the suite's test files are named after them:
//! `shm_open/11-1.c` tests `shm_open` assertion 11).
//!
//! Coverage, `shm_open` (42 assertions):
//!
//! - Ported: 1 and 15 (every test opens or creates through a descriptor), 2
//!   and 9, 5 and 6, 8 and 30 (in a probe process: the lowest free
//!   descriptor), 11, 13 and 14, 16 and 17, 18, 20, 21, 22 and 35, 23, 25,
//!   26, 28, 32 and 34 (as `nobody`, when run as root), 38 (in a probe
//!   process with `RLIMIT_NOFILE` at 3), 39, 41.
//! - Undefined in POSIX, where shmgate refuses with `EINVAL` (tested): 24
//!   (`EXCL` without `CREATE`), 27 (`TRUNC` with `RDONLY`).
//! - Unspecified or implementation-defined, nothing to port: 3, 7 (the
//!   name grammar is `shmgate_core`'s, with its own tests), 10, 19, 29.
//! - Expressed by the types rather than a return value: 4 (a name is
//!   validated by `ShmName`), 12 (`OFlags` has exactly one access mode), 31
//!   (an error is `Err`, never `-1`), 37 (`EINVAL` for names the core
//!   refuses, in `hazards`).
//! - Not portable without changing the machine: 33 (a create denied by
//!   `/dev/shm`'s own permissions), 36 (`EINTR`: shmgate retries it), 40
//!   (`ENFILE`, the system-wide limit), 42 (`ENOSPC`).
//!
//! Coverage, `shm_unlink` (11 assertions): 1 to 5, 6 and 7 (`Ok`/`Err`),
//! 8 to 11, all ported.
//!
//! The tests that need another user run `shmgate-probe` as `nobody` and
//! say loudly that they were skipped when not run as root.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use shmgate_core::{Errno, Mode, OFlags};
use shmgate_host::{OpenOptions, Segment, open, unlink};

use crate::common::{
    Cleanup, NOBODY, Probe, TestResult, chmod, errno_of, exists, file_of, ident, ident_of_name,
    mode_of, root_or_skip, shm_path, spawn, unique_name, verdict,
};
use crate::sys;

const RDONLY: OFlags = OFlags::RDONLY;
const RDWR: OFlags = OFlags::RDWR;
const CREATE: OFlags = OFlags::CREATE;
const EXCL: OFlags = OFlags::EXCL;
const TRUNC: OFlags = OFlags::TRUNC;

fn mode(bits: u32) -> Mode {
    Mode::from_bits(bits).expect("a valid mode")
}

/// Reads `N` bytes at `offset`.
fn read<const N: usize>(seg: &Segment, offset: u64) -> [u8; N] {
    let mut buf = [0; N];
    seg.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("reading {N} bytes at {offset}: {e}"));
    buf
}

/// The owner `(uid, gid)` of `/dev/shm/<name>`.
fn owner_of(name: &str) -> (u32, u32) {
    let m = fs::symlink_metadata(shm_path(name)).expect("lstat");
    (m.uid(), m.gid())
}

/// `shm_open` assertion 11: `FD_CLOEXEC` is set on the new descriptor,
/// for a create and for a plain open, and a child process really does not
/// inherit it.
#[test]
fn fd_is_close_on_exec() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let created = open(&name, RDWR | CREATE | EXCL, Mode::OWNER_RW)?;
    let reopened = open(&name, RDONLY, Mode::OWNER_RW)?;
    for seg in [&created, &reopened] {
        let flags = sys::fd_flags(seg.as_fd());
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "FD_CLOEXEC missing: {flags:#x}"
        );
        let raw = seg.as_fd().as_raw_fd().to_string();
        assert_eq!(
            Probe::same_user().run(["fd-open", &raw]),
            Err(Errno::BADF),
            "descriptor {raw} leaked into a child process"
        );
    }
    Ok(())
}

/// `shm_open` assertions 5 and 6: `"/name"` always names the same
/// object, and on Linux so do `"name"` and `"//name"`: data written through
/// one is read through the others, and they are the same inode.
#[test]
fn leading_slash_names_the_same_object() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let slashed = format!("/{name}");
    let plain = OpenOptions::new().create_new(true).size(4096).open(&name)?;
    plain.write_all_at(b"written without a slash", 0)?;
    for other in [slashed.clone(), format!("//{name}"), format!("///{name}")] {
        let seg = Segment::open_read_write(&other)?;
        assert_eq!(ident(seg.as_fd()), ident(plain.as_fd()), "{other}");
        assert_eq!(&read::<23>(&seg, 0), b"written without a slash", "{other}");
    }
    let with_slash = Segment::open_read_write(&slashed)?;
    with_slash.write_all_at(b"written with a slash", 100)?;
    assert_eq!(&read::<20>(&plain, 100), b"written with a slash");
    assert_eq!(ident(plain.as_fd()), ident_of_name(&name));

    // Unlinking by one spelling removes the object created by the other.
    unlink(&slashed)?;
    assert_eq!(errno_of(Segment::open_read_only(&name)), Errno::NOENT);
    Ok(())
}

/// `shm_open` assertion 21: a new object has size 0, whatever the access
/// mode and whether `EXCL` is set; assertion 20: the mode argument does not
/// decide the access.
#[test]
fn created_object_is_empty() -> TestResult {
    let mut cleanup = Cleanup::new();
    for flags in [
        RDWR | CREATE,
        RDWR | CREATE | EXCL,
        RDONLY | CREATE,
        RDONLY | CREATE | EXCL,
    ] {
        let name = cleanup.name();
        let seg = open(&name, flags, Mode::OWNER_RW)?;
        assert_eq!(seg.len()?, 0, "{flags:?}");
        let meta = fs::symlink_metadata(shm_path(&name))?;
        assert!(meta.is_file(), "{flags:?}");
        assert_eq!(meta.len(), 0, "{flags:?}");
        assert_eq!(seg.is_writable(), flags.contains(RDWR), "{flags:?}");
    }
    Ok(())
}

/// `shm_open` assertions 22 and 35: `CREATE | EXCL` on an existing object
/// is `EEXIST` and leaves it alone; assertion 15: `CREATE` alone opens the
/// existing object without changing it.
#[test]
fn create_on_existing_object() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let seg = OpenOptions::new().create_new(true).size(4096).open(&name)?;
    seg.write_all_at(b"keep me", 0)?;
    chmod(&name, 0o640);
    for flags in [RDWR | CREATE | EXCL, RDONLY | CREATE | EXCL] {
        for spelling in [name.clone(), format!("/{name}")] {
            let err = open(&spelling, flags, Mode::OWNER_RW).unwrap_err();
            assert_eq!(err.errno(), Errno::EXIST, "{flags:?} {spelling}");
        }
    }
    let again = open(&name, RDWR | CREATE, mode(0o666))?;
    assert_eq!(ident(again.as_fd()), ident(seg.as_fd()));
    assert_eq!(again.len()?, 4096);
    assert_eq!(&read::<7>(&again, 0), b"keep me");
    assert_eq!(
        mode_of(&name),
        0o640,
        "the mode argument changed an existing object"
    );
    Ok(())
}

/// `shm_open` assertion 23: the existence check and the creation are
/// atomic across processes. Eight probe processes, half of them spelling the
/// name with a leading slash, wait on a start barrier and then race to
/// create the same name with `CREATE | EXCL`: exactly one wins, the other
/// seven get `EEXIST`. Three rounds.
#[test]
fn create_excl_race_has_one_winner() -> TestResult {
    let probe = Probe::same_user();
    let flags = (RDWR | CREATE | EXCL).bits().to_string();
    for round in 0..3 {
        let mut cleanup = Cleanup::new();
        let name = cleanup.name();
        let mut children: Vec<_> = (0..8)
            .map(|i| {
                let spelling = if i % 2 == 0 {
                    name.clone()
                } else {
                    format!("/{name}")
                };
                let mut cmd = probe.command(["--wait", "open", &spelling, &flags, "600"]);
                spawn(cmd.stdin(Stdio::piped()))
            })
            .collect();
        // Release them all: each probe waits for a line or EOF on stdin.
        for child in &mut children {
            drop(child.stdin.take());
        }
        let verdicts: Vec<_> = children
            .into_iter()
            .map(|c| verdict(&c.wait_with_output().expect("waiting for a probe")))
            .collect();
        let winners = verdicts.iter().filter(|v| v.is_ok()).count();
        assert_eq!(winners, 1, "round {round}: {verdicts:?}");
        for v in &verdicts {
            assert!(
                matches!(v, Ok(()) | Err(Errno::EXIST)),
                "round {round}: {verdicts:?}"
            );
        }
        assert!(exists(&shm_path(&name)));
    }
    Ok(())
}

/// `shm_open` assertion 25: `TRUNC` on an existing object opened
/// `RDWR` truncates it to 0, as every descriptor on it sees; the old bytes
/// are gone when it grows again.
#[test]
fn trunc_truncates() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let first = OpenOptions::new().create_new(true).size(8192).open(&name)?;
    first.write_all_at(b"old data", 0)?;
    first.write_all_at(b"old data", 5000)?;

    let trunc = open(&name, RDWR | TRUNC, Mode::OWNER_RW)?;
    assert_eq!(ident(trunc.as_fd()), ident(first.as_fd()));
    assert_eq!(trunc.len()?, 0);
    assert_eq!(first.len()?, 0);
    trunc.set_len(8192)?;
    assert_eq!(read::<8>(&first, 0), [0; 8]);
    assert_eq!(read::<8>(&first, 5000), [0; 8]);

    // With CREATE too, an existing object is truncated, not replaced.
    first.write_all_at(b"old data", 0)?;
    let again = open(&name, RDWR | CREATE | TRUNC, Mode::OWNER_RW)?;
    assert_eq!(ident(again.as_fd()), ident(first.as_fd()));
    assert_eq!(first.len()?, 0);
    Ok(())
}

/// `shm_open` assertions 24 and 27 (undefined in POSIX): shmgate
/// refuses `EXCL` without `CREATE` and `TRUNC` without `RDWR` with `EINVAL`,
/// before touching anything: an existing object keeps its size and a missing
/// one is not created. (glibc really truncates on `O_RDONLY | O_TRUNC`.)
#[test]
fn undefined_flag_combinations_are_einval() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let missing = cleanup.name();
    let seg = OpenOptions::new().create_new(true).size(4096).open(&name)?;
    for flags in [
        RDONLY | TRUNC,
        RDONLY | CREATE | TRUNC,
        RDONLY | EXCL,
        RDWR | EXCL,
        RDWR | EXCL | TRUNC,
    ] {
        assert_eq!(
            errno_of(open(&name, flags, Mode::OWNER_RW)),
            Errno::INVAL,
            "{flags:?}"
        );
        assert_eq!(seg.len()?, 4096, "{flags:?} changed the size");
        assert_eq!(
            errno_of(open(&missing, flags, Mode::OWNER_RW)),
            Errno::INVAL,
            "{flags:?}"
        );
        assert!(!exists(&shm_path(&missing)), "{flags:?} created {missing}");
    }
    Ok(())
}

/// `shm_open` assertion 26: a `TRUNC` open keeps the mode and the
/// owner. The object belongs to `nobody` (mode `0o646`); root truncates it
/// without `CREATE`, then its owner truncates it with `CREATE` and another
/// mode argument.
#[test]
fn trunc_keeps_mode_and_owner() -> TestResult {
    if !root_or_skip("trunc_keeps_mode_and_owner") {
        return Ok(());
    }
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let nobody = Probe::nobody(&mut cleanup);
    assert_eq!(nobody.run(["create-write", &name, "nobody's data"]), Ok(()));
    chmod(&name, 0o646);
    assert_eq!(owner_of(&name), (NOBODY, NOBODY));

    let seg = open(&name, RDWR | TRUNC, Mode::OWNER_RW)?;
    assert_eq!(seg.len()?, 0);
    assert_eq!(owner_of(&name), (NOBODY, NOBODY));
    assert_eq!(mode_of(&name), 0o646);

    seg.set_len(100)?;
    let flags = (RDWR | CREATE | TRUNC).bits().to_string();
    assert_eq!(nobody.run(["open", &name, &flags, "600"]), Ok(()));
    assert_eq!(seg.len()?, 0);
    assert_eq!(owner_of(&name), (NOBODY, NOBODY));
    assert_eq!(mode_of(&name), 0o646);
    Ok(())
}

/// `shm_open` assertion 18: a new object's permission bits are
/// `mode & !umask`. The umask is process-wide, so the probe sets it in a
/// process of its own. Also assertion 16: it belongs to the creator's
/// effective uid.
#[test]
fn created_mode_is_mode_less_umask() -> TestResult {
    let mut cleanup = Cleanup::new();
    let probe = Probe::same_user();
    let flags = (RDWR | CREATE | EXCL).bits().to_string();
    for (mode, umask, want) in [
        (0o777, 0o022, 0o755),
        (0o666, 0o077, 0o600),
        (0o640, 0o000, 0o640),
        (0o777, 0o000, 0o777),
        (0o606, 0o002, 0o604),
        (0o600, 0o777, 0o000),
    ] {
        let name = cleanup.name();
        let args = [
            "--umask".to_string(),
            format!("{umask:o}"),
            "open".to_string(),
            name.clone(),
            flags.clone(),
            format!("{mode:o}"),
        ];
        assert_eq!(probe.run(&args), Ok(()), "{args:?}");
        assert_eq!(mode_of(&name), want, "mode {mode:o}, umask {umask:o}");
        assert_eq!(owner_of(&name).0, sys::geteuid());
    }
    Ok(())
}

/// `shm_open` assertions 16 and 17: an object created by another
/// user belongs to that user's effective uid and gid.
#[test]
fn created_object_belongs_to_the_creator() -> TestResult {
    if !root_or_skip("created_object_belongs_to_the_creator") {
        return Ok(());
    }
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let nobody = Probe::nobody(&mut cleanup);
    let flags = (RDWR | CREATE | EXCL).bits().to_string();
    assert_eq!(
        nobody.run(["--umask", "0", "open", &name, &flags, "640"]),
        Ok(())
    );
    assert_eq!(owner_of(&name), (NOBODY, NOBODY));
    assert_eq!(mode_of(&name), 0o640);
    Ok(())
}

/// `shm_open` assertion 28 and `shm_unlink` assertions 1 to 5: data written by a process that has exited (all its
/// references closed) persists; unlink removes the name at once (a plain
/// open is then `ENOENT`) but the contents live on through a mapping and
/// an open descriptor; a `CREATE` then makes a new, empty object.
#[test]
fn data_persists_until_unlinked_and_unreferenced() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let data = b"from a process that has exited";
    let written = std::str::from_utf8(data)?;
    assert_eq!(
        Probe::same_user().run(["create-write", &name, written]),
        Ok(())
    );

    let seg = Segment::open_read_write(format!("/{name}"))?;
    assert_eq!(seg.len()?, data.len() as u64);
    assert_eq!(&read::<30>(&seg, 0), data);

    seg.set_len(4096)?;
    let map = seg.map()?;
    let old = ident(seg.as_fd());
    unlink(&name)?;
    assert!(!exists(&shm_path(&name)), "the name outlived unlink");
    assert_eq!(errno_of(Segment::open_read_only(&name)), Errno::NOENT);
    assert_eq!(errno_of(unlink(&name)), Errno::NOENT);

    let mut buf = [0; 30];
    map.read_at(0, &mut buf)?;
    assert_eq!(&buf, data);
    map.write_at(1000, b"after unlink")?;
    assert_eq!(&read::<12>(&seg, 1000), b"after unlink");
    drop(seg);
    let mut buf = [0; 12];
    map.read_at(1000, &mut buf)?;
    assert_eq!(&buf, b"after unlink", "the mapping lost the data on close");

    let fresh = open(&name, RDWR | CREATE | EXCL, Mode::OWNER_RW)?;
    assert_ne!(ident(fresh.as_fd()), old, "the old object came back");
    assert_eq!(fresh.len()?, 0);
    Ok(())
}

/// `shm_open` assertion 41 and `shm_unlink` assertion 11: without
/// `CREATE` a missing object is `ENOENT` and is not created; unlinking a
/// missing name is `ENOENT`.
#[test]
fn missing_object_is_enoent() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    for spelling in [name.clone(), format!("/{name}")] {
        for flags in [RDONLY, RDWR, RDWR | TRUNC] {
            let err = open(&spelling, flags, Mode::OWNER_RW).unwrap_err();
            assert_eq!(err.errno(), Errno::NOENT, "{flags:?} {spelling}");
        }
        assert_eq!(errno_of(unlink(&spelling)), Errno::NOENT, "{spelling}");
    }
    assert!(!exists(&shm_path(&name)));
    Ok(())
}

/// `shm_open` assertion 39 and `shm_unlink` assertion 10: a name whose
/// component exceeds `NAME_MAX` (255), such as 39-1.c's 257-byte `"/aaa…"`,
/// or a 4096-byte name (`PATH_MAX`), such as 39-2.c's `"aaaaaaaaaaaaa/aaa…"`
/// with a slash every 14 bytes, is `ENAMETOOLONG` for open and unlink; 255
/// bytes still work.
#[test]
fn long_names_are_enametoolong() -> TestResult {
    let mut cleanup = Cleanup::new();
    let padded = |len: usize| {
        let mut name = unique_name().into_bytes();
        name.resize(len, b'a');
        String::from_utf8(name).expect("ASCII")
    };
    let too_long = [
        format!("/{}", padded(256)),
        padded(256),
        padded(257),
        format!("/{}", padded(4095)),
        padded(4096),
        (1..=4096)
            .map(|i| if i % 14 == 0 { '/' } else { 'a' })
            .collect(),
    ];
    for name in &too_long {
        for flags in [RDWR | CREATE, RDWR | CREATE | EXCL, RDONLY] {
            let err = open(name, flags, Mode::OWNER_RW).unwrap_err();
            assert_eq!(
                err.errno(),
                Errno::NAMETOOLONG,
                "{flags:?}, {} bytes",
                name.len()
            );
        }
        let err = unlink(name).unwrap_err();
        assert_eq!(
            err.errno(),
            Errno::NAMETOOLONG,
            "unlink, {} bytes",
            name.len()
        );
    }

    let longest = padded(255);
    cleanup.track(shm_path(&longest));
    let seg = open(format!("/{longest}"), RDWR | CREATE | EXCL, Mode::OWNER_RW)?;
    assert_eq!(ident(seg.as_fd()), ident_of_name(&longest));
    unlink(&longest)?;
    Ok(())
}

/// `shm_open` assertions 32 and 34: as `nobody`, opening a
/// root-owned `0o600` object is `EACCES` for every access mode, and so is a
/// `TRUNC` open, which leaves the data alone. With `0o644`, `nobody` may
/// read (a control: the probe does reach the object) but not write or
/// truncate.
#[test]
fn denied_open_is_eacces() -> TestResult {
    if !root_or_skip("denied_open_is_eacces") {
        return Ok(());
    }
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let nobody = Probe::nobody(&mut cleanup);
    let seg = OpenOptions::new().create_new(true).size(4096).open(&name)?;
    seg.write_all_at(b"root's data", 0)?;
    let bits = |flags: OFlags| flags.bits().to_string();

    chmod(&name, 0o600);
    for flags in [
        RDONLY,
        RDWR,
        RDWR | TRUNC,
        RDWR | CREATE,
        RDWR | CREATE | TRUNC,
    ] {
        assert_eq!(
            nobody.run(["open", &name, &bits(flags), "600"]),
            Err(Errno::ACCES),
            "0o600, {flags:?}"
        );
    }
    assert_eq!(seg.len()?, 4096, "a denied TRUNC truncated");
    assert_eq!(&read::<11>(&seg, 0), b"root's data");

    chmod(&name, 0o644);
    assert_eq!(nobody.run(["open", &name, &bits(RDONLY), "600"]), Ok(()));
    for flags in [RDWR, RDWR | TRUNC] {
        assert_eq!(
            nobody.run(["open", &name, &bits(flags), "600"]),
            Err(Errno::ACCES),
            "0o644, {flags:?}"
        );
    }
    assert_eq!(seg.len()?, 4096, "a denied TRUNC truncated");
    assert_eq!(&read::<11>(&seg, 0), b"root's data");
    Ok(())
}

/// `shm_unlink` assertions 9 and 8: `nobody` unlinking root's object
/// (even a `0o666` one) in the sticky `/dev/shm` gets `EACCES` (the
/// kernel's `EPERM`, as POSIX spells it), and the object is unchanged. A
/// control: `nobody` can unlink its own object.
#[test]
fn denied_unlink_is_eacces() -> TestResult {
    if !root_or_skip("denied_unlink_is_eacces") {
        return Ok(());
    }
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let own = cleanup.name();
    let nobody = Probe::nobody(&mut cleanup);
    let seg = OpenOptions::new().create_new(true).size(4096).open(&name)?;
    chmod(&name, 0o666);
    for spelling in [name.clone(), format!("/{name}")] {
        assert_eq!(
            nobody.run(["unlink", &spelling]),
            Err(Errno::ACCES),
            "{spelling}"
        );
    }
    assert_eq!(ident_of_name(&name), ident(seg.as_fd()));
    assert_eq!(seg.len()?, 4096);

    let flags = (RDWR | CREATE | EXCL).bits().to_string();
    assert_eq!(nobody.run(["open", &own, &flags, "600"]), Ok(()));
    assert_eq!(nobody.run(["unlink", &own]), Ok(()));
    assert!(!exists(&shm_path(&own)));
    Ok(())
}

/// `shm_open` assertions 13 and 14: `RDONLY` gives a read-only
/// descriptor (`O_RDONLY`; writes, resizes and writable mappings fail, also
/// a plain `mmap(PROT_WRITE, MAP_SHARED)`, which is `EACCES`), `RDWR` a
/// read-write one.
#[test]
fn access_modes() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let rw = OpenOptions::new().create_new(true).size(4096).open(&name)?;
    rw.write_all_at(b"hello", 0)?;
    let ro = Segment::open_read_only(&name)?;
    assert_eq!(
        sys::status_flags(rw.as_fd()) & libc::O_ACCMODE,
        libc::O_RDWR
    );
    assert_eq!(
        sys::status_flags(ro.as_fd()) & libc::O_ACCMODE,
        libc::O_RDONLY
    );
    assert!(rw.is_writable());
    assert!(!ro.is_writable());

    assert_eq!(&read::<5>(&ro, 0), b"hello");
    assert_eq!(errno_of(ro.write_at(b"x", 0)), Errno::BADF);
    assert_eq!(errno_of(ro.set_len(0)), Errno::INVAL);
    assert_eq!(rw.len()?, 4096);
    let ro_map = ro.map()?;
    assert!(!ro_map.is_writable());
    assert_eq!(errno_of(ro_map.write_at(0, b"x")), Errno::ACCES);
    assert_eq!(
        sys::Map::new(ro.as_fd(), 4096, true).err(),
        Some(Errno::ACCES)
    );

    let rw_map = sys::Map::new(rw.as_fd(), 4096, true)?;
    rw_map.write(10, b"through mmap");
    let mut buf = [0; 12];
    ro_map.read_at(10, &mut buf)?;
    assert_eq!(&buf, b"through mmap");
    Ok(())
}

/// `shm_open` assertions 2 and 9: every open makes a new open file
/// description: moving the file offset of one descriptor does not move
/// another's.
#[test]
fn each_open_is_a_new_description() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let seg = OpenOptions::new().create_new(true).size(4096).open(&name)?;
    seg.write_all_at(b"0123456789", 0)?;
    let mut a = fs::File::from(std::os::fd::OwnedFd::from(Segment::open_read_only(&name)?));
    let mut b = file_of(Segment::open_read_only(&name)?.as_fd());
    a.seek(SeekFrom::Start(5))?;
    let mut buf = [0; 3];
    b.read_exact(&mut buf)?;
    assert_eq!(
        &buf, b"012",
        "the second open shares the first one's offset"
    );
    a.read_exact(&mut buf)?;
    assert_eq!(&buf, b"567");
    Ok(())
}

/// `shm_open` assertions 8 and 30: the descriptor returned is the lowest
/// one not open in the process, for the first call of the process (when a
/// library that caches a descriptor of its own would take one), for opens,
/// creates, atomic creates and anonymous segments, and nothing stays open
/// between calls. In a probe process: the test harness's threads open
/// descriptors concurrently.
#[test]
fn returns_the_lowest_free_descriptor() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    Probe::same_user().run(["lowest-fd", &name])?;
    assert!(!exists(&shm_path(&name)));
    Ok(())
}

/// `shm_open` assertion 38: `EMFILE` when the process has no descriptor
/// left, and nothing is created. In a probe process (`RLIMIT_NOFILE` is
/// process-wide).
#[test]
fn no_descriptor_left_is_emfile() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    assert_eq!(Probe::same_user().run(["emfile", &name]), Err(Errno::MFILE));
    assert!(!exists(&shm_path(&name)));
    Ok(())
}

/// `shm_open` assertion 20: the mode of a new object does not decide how
/// this open may use it: created with mode `0o000`, it is still open for
/// reading and writing.
#[test]
fn mode_does_not_limit_the_creating_open() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let seg = open(&name, RDWR | CREATE | EXCL, mode(0))?;
    assert_eq!(mode_of(&name), 0);
    seg.set_len(4)?;
    seg.write_all_at(b"abcd", 0)?;
    assert_eq!(&read::<4>(&seg, 0), b"abcd");
    Ok(())
}
