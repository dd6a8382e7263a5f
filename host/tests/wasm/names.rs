//! Hostile names: every name a guest passes is resolved inside its
//! namespace or refused with the exact errno, and nothing outside the
//! namespace is opened, created or removed. The refusals themselves
//! (slashes, dots, NUL, control bytes, traversals, long names, no
//! namespace) are rows of the `cases` table, run through both ABIs; what
//! is here needs more than one call or objects planted in `/dev/shm`.

use shmgate_core::{Errno, NAME_MAX};
use shmgate_host::wasm::ShmPolicy;

use crate::common::*;

#[test]
fn the_longest_name_that_fits_works() {
    let scope = Scope::new();
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let room = NAME_MAX - scope.ns("a").len();
    // One byte more is ENAMETOOLONG (the `cases` table); the longest name
    // that fits with the prefix works: 255 bytes in all.
    let longest = vec![b'n'; room];
    assert_errno(
        guest.open(&longest, RDONLY),
        Errno::NOENT,
        "open missing longest",
    );
    let h = handle(guest.open(&longest, RDWR | CREATE | EXCL), "create longest");
    let host_name = [scope.ns("a").as_bytes(), &longest].concat();
    assert_eq!(host_name.len(), NAME_MAX);
    assert!(
        exists(&host_name),
        "the longest name was created in the namespace"
    );
    assert_eq!(guest.close(h), 0);
    assert_eq!(guest.unlink(&longest), 0);
    assert!(!exists(&host_name));
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn names_resolve_inside_the_namespace() {
    let scope = Scope::new();
    let outside = Sentinel::new(&scope, "x");
    let mut guest = Guest::new(scope.full("a").build().unwrap());

    // The outside name spelled as a guest name is a different segment,
    // inside the namespace: absent, and unlinking it touches nothing.
    let name = outside.name().as_bytes();
    assert_errno(guest.open(name, RDONLY), Errno::NOENT, "open outside name");
    assert_errno(guest.open(name, RDWR), Errno::NOENT, "open outside name rw");
    assert_errno(guest.unlink(name), Errno::NOENT, "unlink outside name");
    let h = handle(guest.open(name, RDWR | CREATE | EXCL), "create");
    assert_eq!(guest.write_data(h, 0, b"in"), 0, "a new segment is empty");
    assert_eq!(guest.close(h), 0);
    let inside = format!("{}{}", scope.ns("a"), outside.name());
    assert!(exists(&inside));
    outside.assert_intact();

    // A leading dot, or dots inside a name, are ordinary bytes.
    for name in [&b"..x"[..], b".hidden", b"a..b", b"..."] {
        let h = handle(guest.open(name, RDWR | CREATE | EXCL), "dotted create");
        assert_eq!(guest.close(h), 0);
        let host = [scope.ns("a").as_bytes(), name].concat();
        assert!(exists(&host), "{name:?} is inside the namespace");
    }

    // Names are bytes, not UTF-8.
    let h = handle(guest.open(b"\xff\xfe", RDWR | CREATE | EXCL), "non-UTF-8");
    assert_eq!(guest.close(h), 0);
    assert!(exists([scope.ns("a").as_bytes(), b"\xff\xfe"].concat()));

    assert_unharmed(&mut guest, &scope, "a", &[&outside]);
}

#[test]
fn no_namespace_is_eacces() {
    let scope = Scope::new();
    let outside = Sentinel::new(&scope, "x");
    // Every other right, but no namespace.
    let policy = ShmPolicy::builder()
        .allow_create(true)
        .allow_unlink(true)
        .allow_resize(true)
        .build()
        .unwrap();
    let mut guest = Guest::new(policy);
    let name = outside.name().as_bytes();
    // Every flag and `unlink` of names inside: the `cases` table. A name
    // that exists outside is no different.
    assert_errno(guest.open(name, RDWR), Errno::ACCES, "open outside name");
    assert_errno(guest.unlink(name), Errno::ACCES, "unlink");
    assert_eq!(guest.ctx().open_handles(), 0);
    outside.assert_intact();
    assert_eq!(scope.entries(), vec![name.to_vec()]);

    // The default policy is the same: deny all.
    let mut guest = Guest::new(ShmPolicy::deny_all());
    assert_errno(guest.open(name, RDONLY), Errno::ACCES, "deny_all open");
    assert_errno(guest.unlink(name), Errno::ACCES, "deny_all unlink");
    let mut guest = Guest::new(ShmPolicy::builder().build().unwrap());
    assert_errno(guest.open(name, RDONLY), Errno::ACCES, "default open");
    assert_errno(guest.close(0), Errno::BADF, "still answers");
    outside.assert_intact();
}

/// Removes a path outside `/dev/shm` on drop, in case a failing test
/// created it.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn planted_objects_in_the_namespace_are_not_followed() {
    use std::os::unix::fs::symlink;

    let scope = Scope::new();
    let ns = scope.ns("a");
    let outside = Sentinel::new(&scope, "x");
    // A symlink inside the namespace to the sentinel (relative, within
    // /dev/shm), and a dangling one to a file outside /dev/shm.
    symlink(outside.name(), shm_path(format!("{ns}escape"))).unwrap();
    let target = RemoveOnDrop(std::env::temp_dir().join(format!("{}target", scope.ns("tmp"))));
    symlink(&target.0, shm_path(format!("{ns}dangling"))).unwrap();
    std::fs::create_dir(shm_path(format!("{ns}dir"))).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        shm_path(format!("{ns}fifo")),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();

    let mut guest = Guest::new(scope.full("a").build().unwrap());
    for name in ["escape", "dangling"] {
        for flags in [
            RDONLY,
            RDWR,
            RDWR | TRUNC,
            RDWR | CREATE,
            RDWR | CREATE | TRUNC,
        ] {
            let ret = guest.open(name.as_bytes(), flags);
            assert_errno(ret, Errno::LOOP, &format!("{name} flags {flags:#x}"));
        }
        let ret = guest.open(name.as_bytes(), RDWR | CREATE | EXCL);
        assert_errno(ret, Errno::EXIST, &format!("{name} CREATE|EXCL"));
    }
    // A directory or FIFO is not a shared memory object (and the FIFO's
    // open does not block).
    for name in ["dir", "fifo"] {
        for flags in [RDONLY, RDWR, RDWR | CREATE, RDWR | TRUNC] {
            let ret = guest.open(name.as_bytes(), flags);
            assert_errno(ret, Errno::INVAL, &format!("{name} flags {flags:#x}"));
        }
    }
    assert_errno(guest.unlink(b"dir"), Errno::INVAL, "unlink a directory");
    outside.assert_intact();
    assert!(!target.0.exists(), "nothing created outside /dev/shm");
    assert_eq!(guest.ctx().open_handles(), 0);
    assert_eq!(guest.ctx().created().count(), 0);

    // Unlinking a symlink removes the link, never its target.
    assert_eq!(guest.unlink(b"escape"), 0);
    assert!(!exists(format!("{ns}escape")));
    assert_eq!(guest.unlink(b"fifo"), 0);
    assert_unharmed(&mut guest, &scope, "a", &[&outside]);
}
