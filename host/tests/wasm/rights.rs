//! Flags, modes and rights: a read-only grant against
//! `RDWR`/`CREATE`/`TRUNC`, and the create, truncate, resize and unlink
//! rights, each refused with the exact errno and without touching the
//! segment. Bad `oflags` and `mode` values, and each refusal on its own,
//! are rows of the `cases` table (both ABIs); what is here follows the
//! refusals with what the right allows.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use shmgate_core::{Errno, Mode};
use shmgate_host::wasm::ShmPolicy;

use crate::common::*;

#[test]
fn read_only_grant_refuses_rdwr_create_and_trunc() {
    let scope = Scope::new();
    let existing = format!("{}seg", scope.ns("a"));
    host_create(&existing, b"must not be truncated");
    let ino = inode(&existing);
    // Every other right granted: only `read_only` stands in the way.
    let mut guest = Guest::new(scope.full("a").read_only(true).build().unwrap());

    // Each write flag alone is a row of the `cases` table; here, after
    // all of them in one store, nothing changed.
    for flags in [RDWR, CREATE, RDWR | TRUNC, RDWR | CREATE | EXCL | TRUNC] {
        assert_errno(guest.open(b"seg", flags), Errno::ACCES, "read-only");
        assert_errno(guest.open(b"fresh", flags), Errno::ACCES, "read-only");
    }

    assert_eq!(contents(&existing), b"must not be truncated");
    assert_eq!(inode(&existing), ino);
    assert!(
        !exists(format!("{}fresh", scope.ns("a"))),
        "nothing created"
    );
    assert_eq!(guest.ctx().open_handles(), 0);
    assert_eq!(guest.ctx().created().count(), 0);

    // A read-only open works, and its handle cannot write or resize.
    let h = guest.open_ok(b"seg", RDONLY);
    assert_errno(guest.write_data(h, 0, b"MUST"), Errno::BADF, "write");
    assert_errno(guest.write_data(h, 0, b""), Errno::BADF, "empty write");
    assert_errno(
        guest.write_data(h, 1 << 20, b"x"),
        Errno::BADF,
        "write past the end",
    );
    assert_errno(guest.set_size(h, 0), Errno::BADF, "set_size");
    assert_errno(guest.set_size(h, 1 << 20), Errno::BADF, "set_size grow");
    let (ret, got) = guest.read_data(h, 0, 64);
    assert_eq!(ok(ret, "read"), 21);
    assert_eq!(got, b"must not be truncated");
    assert_eq!(guest.close(h), 0);
    assert_eq!(contents(&existing), b"must not be truncated");
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn create_needs_allow_create() {
    let scope = Scope::new();
    let existing = format!("{}seg", scope.ns("a"));
    host_create(&existing, b"there");
    let policy = ShmPolicy::builder()
        .namespace(scope.ns("a"))
        .allow_unlink(true)
        .allow_resize(true)
        .build()
        .unwrap();
    let mut guest = Guest::new(policy);
    for flags in [CREATE, CREATE | EXCL, RDWR | CREATE, RDWR | CREATE | TRUNC] {
        // Refused whether or not the name exists: rights come from flags.
        for name in [&b"seg"[..], b"fresh"] {
            let ret = guest.open(name, flags);
            assert_errno(ret, Errno::ACCES, &format!("flags {flags:#x} {name:?}"));
        }
    }
    assert!(!exists(format!("{}fresh", scope.ns("a"))));
    assert_eq!(contents(&existing), b"there");
    assert_eq!(guest.ctx().created().count(), 0);
    // Opening what exists needs no create right.
    let h = guest.open_ok(b"seg", RDWR);
    assert_eq!(guest.close(h), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);

    // With the right, EXCL still refuses what exists.
    let mut creator = Guest::new(scope.full("a").build().unwrap());
    let ino = inode(&existing);
    for flags in [
        RDWR | CREATE | EXCL,
        CREATE | EXCL,
        RDWR | CREATE | EXCL | TRUNC,
    ] {
        let ret = creator.open(b"seg", flags);
        assert_errno(ret, Errno::EXIST, &format!("flags {flags:#x}"));
    }
    assert_eq!(inode(&existing), ino);
    assert_eq!(contents(&existing), b"there");
    assert_eq!(creator.ctx().created().count(), 0);
    assert_eq!(creator.ctx().open_handles(), 0);
}

#[test]
fn trunc_needs_allow_resize() {
    let scope = Scope::new();
    let existing = format!("{}seg", scope.ns("a"));
    host_create(&existing, b"contents");
    let base = scope.full("a").allow_resize(false);
    let mut guest = Guest::new(base.clone().build().unwrap());
    for flags in [RDWR | TRUNC, RDWR | CREATE | TRUNC] {
        assert_errno(
            guest.open(b"seg", flags),
            Errno::ACCES,
            &format!("flags {flags:#x}"),
        );
    }
    assert_eq!(contents(&existing), b"contents");

    let mut resizer = Guest::new(base.allow_resize(true).build().unwrap());
    let h = resizer.open_ok(b"seg", RDWR | TRUNC);
    assert_eq!(resizer.size(h), 0);
    assert_eq!(file_len(&existing), 0, "TRUNC with the right truncates");
    assert_eq!(resizer.close(h), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn set_size_needs_a_writable_handle_and_the_resize_right() {
    let scope = Scope::new();
    let theirs = format!("{}theirs", scope.ns("a"));
    host_create(&theirs, b"12345678");
    let mut guest = Guest::new(
        scope
            .full("a")
            .allow_resize(false)
            .max_segment_size(1 << 16)
            .build()
            .unwrap(),
    );

    // Not writable: EBADF, even with no resize right to check.
    let ro = guest.open_ok(b"theirs", RDONLY);
    assert_errno(guest.set_size(ro, 4), Errno::BADF, "read-only handle");
    // Writable, not created here, no resize right: EACCES.
    let rw = guest.open_ok(b"theirs", RDWR);
    assert_errno(guest.set_size(rw, 4), Errno::ACCES, "no resize right");
    assert_errno(
        guest.set_size(rw, 1 << 12),
        Errno::ACCES,
        "no resize right, grow",
    );
    // CREATE that found an existing segment did not create it.
    let found = guest.open_ok(b"theirs", RDWR | CREATE);
    assert_errno(
        guest.set_size(found, 4),
        Errno::ACCES,
        "CREATE of an existing one",
    );
    assert_eq!(contents(&theirs), b"12345678");
    assert_eq!(guest.ctx().created().count(), 0);

    // The handle whose open created the segment may size it.
    let mine = guest.open_ok(b"mine", RDWR | CREATE | EXCL);
    let mine_host = format!("{}mine", scope.ns("a"));
    assert_eq!(guest.set_size(mine, 100), 0);
    assert_eq!(file_len(&mine_host), 100);
    assert_eq!(guest.size(mine), 100);
    assert_errno(guest.set_size(mine, -1), Errno::INVAL, "negative size");
    assert_errno(
        guest.set_size(mine, i64::MIN),
        Errno::INVAL,
        "i64::MIN size",
    );
    assert_errno(
        guest.set_size(mine, (1 << 16) + 1),
        Errno::FBIG,
        "over the max",
    );
    assert_errno(guest.set_size(mine, i64::MAX), Errno::FBIG, "i64::MAX size");
    assert_eq!(file_len(&mine_host), 100, "failed sizes change nothing");
    assert_eq!(guest.set_size(mine, 1 << 16), 0, "exactly the max");
    assert_eq!(file_len(&mine_host), 1 << 16);
    assert_eq!(guest.set_size(mine, 0), 0, "shrink");
    // Another handle to the segment this store created did not create it.
    let second = guest.open_ok(b"mine", RDWR);
    assert_errno(guest.set_size(second, 8), Errno::ACCES, "second handle");
    assert_eq!(file_len(&mine_host), 0);

    for h in [ro, rw, found, mine, second] {
        assert_eq!(guest.close(h), 0);
    }
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn unlink_needs_allow_unlink() {
    let scope = Scope::new();
    let existing = format!("{}seg", scope.ns("a"));
    host_create(&existing, b"stay");
    let ino = inode(&existing);
    let mut guest = Guest::new(scope.full("a").allow_unlink(false).build().unwrap());
    assert_errno(
        guest.unlink(b"seg"),
        Errno::ACCES,
        "unlink without the right",
    );
    assert_errno(
        guest.unlink(b"missing"),
        Errno::ACCES,
        "missing, without the right",
    );
    // Even a segment this store created.
    let h = guest.open_ok(b"mine", RDWR | CREATE | EXCL);
    assert_eq!(guest.close(h), 0);
    assert_errno(guest.unlink(b"mine"), Errno::ACCES, "own segment");
    assert!(exists(format!("{}mine", scope.ns("a"))));
    assert_eq!(inode(&existing), ino);
    assert_eq!(contents(&existing), b"stay");

    let mut unlinker = Guest::new(scope.full("a").build().unwrap());
    assert_eq!(unlinker.unlink(b"seg"), 0);
    assert!(!exists(&existing));
    assert_errno(unlinker.unlink(b"seg"), Errno::NOENT, "twice");
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn create_mode_is_masked_by_the_policy() {
    let scope = Scope::new();
    let umask = umask();
    let policy = scope
        .full("a")
        .create_mode(Mode::from_bits(0o640).unwrap())
        .build()
        .unwrap();
    let mut guest = Guest::new(policy);
    for (guest_mode, name) in [
        (0o777, "all"),
        (0o600, "owner"),
        (0o604, "other"),
        (0, "none"),
    ] {
        let h = handle(
            guest.open_mode(name.as_bytes(), RDWR | CREATE | EXCL, guest_mode),
            &format!("create {name}"),
        );
        assert_eq!(guest.close(h), 0);
        let meta = fs::metadata(shm_path(format!("{}{name}", scope.ns("a")))).unwrap();
        let expected = u32::try_from(guest_mode).unwrap() & 0o640 & !umask;
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            expected,
            "guest mode {guest_mode:#o}, policy 0o640, umask {umask:#o}"
        );
    }
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

/// `docs/ABI.md`, "Order of checks in `open`": flags, then mode, then the
/// name and namespace, then rights, then the handle quota, then the create
/// quota, then the kernel. Each pair of adjacent steps is probed with a
/// call that fails both.
#[test]
fn open_checks_in_the_documented_order() {
    let scope = Scope::new();
    let ns = scope.ns("a");
    host_create(&format!("{ns}seg"), b"seg");
    let long = vec![b'n'; 300];

    // 1. Flags before mode, and an out-of-range mode before special bits.
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    assert_errno(
        guest.open_mode(b"seg", EXCL, 0o4600),
        Errno::INVAL,
        "flags, mode",
    );
    assert_errno(
        guest.open_mode(b"seg", RDONLY, 0o14600),
        Errno::INVAL,
        "mode range",
    );
    // 2. Mode before the name and the namespace.
    assert_errno(
        guest.open_mode(b"../x", RDONLY, 0o4600),
        Errno::PERM,
        "mode, name",
    );
    assert_errno(
        guest.open_mode(&long, RDONLY, 0o2600),
        Errno::PERM,
        "mode, length",
    );
    let mut no_ns = Guest::new(
        ShmPolicy::builder()
            .allow_create(true)
            .max_handles(0)
            .build()
            .unwrap(),
    );
    assert_errno(
        no_ns.open_mode(b"x", RDONLY, 0o1600),
        Errno::PERM,
        "mode, namespace",
    );
    // 3. Name before rights.
    assert_errno(no_ns.open(b"x", RDONLY), Errno::ACCES, "namespace, quota");
    let mut read_only = Guest::new(
        ShmPolicy::builder()
            .namespace(&ns)
            .read_only(true)
            .max_handles(0)
            .build()
            .unwrap(),
    );
    assert_errno(read_only.open(b"a/b", RDWR), Errno::INVAL, "name, rights");
    assert_errno(
        read_only.open(&long, RDWR | CREATE),
        Errno::NAMETOOLONG,
        "length, rights",
    );
    // 4. Rights before the handle quota.
    assert_errno(read_only.open(b"seg", RDWR), Errno::ACCES, "rights, quota");
    assert_errno(read_only.open(b"seg", RDONLY), Errno::MFILE, "quota alone");
    // 5. The handle quota before the create quota.
    let mut both = Guest::new(
        scope
            .full("a")
            .max_handles(0)
            .max_created(0)
            .build()
            .unwrap(),
    );
    assert_errno(
        both.open(b"new", RDWR | CREATE),
        Errno::MFILE,
        "handles, creates",
    );
    // 6. The create quota before the kernel: EXCL on an existing name.
    let mut creates = Guest::new(scope.full("a").max_created(0).build().unwrap());
    let ret = creates.open(b"seg", RDWR | CREATE | EXCL);
    assert_errno(ret, Errno::DQUOT, "creates, EEXIST");
    assert!(!exists(format!("{ns}new")));
    assert_eq!(contents(format!("{ns}seg")), b"seg");
    assert_unharmed(&mut guest, &scope, "a", &[]);
}
