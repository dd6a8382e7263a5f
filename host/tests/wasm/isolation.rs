//! Isolation between stores and cleanup on drop: two namespaces never see
//! each other's segments, and `auto_unlink` removes exactly the segments a
//! store created, only while their names still refer to them.

use shmgate_core::Errno;

use crate::common::*;

#[test]
fn two_namespaces_cannot_see_each_other() {
    let scope = Scope::new();
    let mut a = Guest::new(scope.full("a").build().unwrap());
    let mut b = Guest::new(scope.full("b").build().unwrap());

    let ha = a.open_ok(b"shared", RDWR | CREATE | EXCL);
    assert_eq!(a.set_size(ha, 16), 0);
    assert_eq!(a.write_data(ha, 0, b"from a"), 6);

    // B does not see A's segment under the same guest name...
    assert_errno(b.open(b"shared", RDONLY), Errno::NOENT, "B opens A's name");
    assert_errno(b.unlink(b"shared"), Errno::NOENT, "B unlinks A's name");
    // ...nor by spelling A's prefix.
    let ns_a = scope.ns("a");
    for name in [
        format!("../{ns_a}shared"),
        format!("/{ns_a}shared"),
        format!("/dev/shm/{ns_a}shared"),
    ] {
        assert_errno(b.open(name.as_bytes(), RDONLY), Errno::INVAL, &name);
        assert_errno(b.unlink(name.as_bytes()), Errno::INVAL, &name);
    }
    let spelled = format!("{ns_a}shared");
    assert_errno(
        b.open(spelled.as_bytes(), RDONLY),
        Errno::NOENT,
        "prefix as a name",
    );

    // B makes its own segment under the same guest name.
    let hb = b.open_ok(b"shared", RDWR | CREATE | EXCL);
    assert_eq!(b.set_size(hb, 16), 0);
    assert_eq!(b.write_data(hb, 0, b"from b"), 6);
    assert_eq!(&a.read_data(ha, 0, 6).1, b"from a");
    assert_eq!(&b.read_data(hb, 0, 6).1, b"from b");
    assert_eq!(&contents(format!("{ns_a}shared"))[..6], b"from a");
    assert_eq!(
        &contents(format!("{}shared", scope.ns("b")))[..6],
        b"from b"
    );

    // B unlinking its name leaves A's alone.
    assert_eq!(b.unlink(b"shared"), 0);
    assert!(exists(format!("{ns_a}shared")));
    assert_eq!(a.size(ha), 16);
    assert_eq!(a.close(ha), 0);
    assert_eq!(b.close(hb), 0);
    assert_unharmed(&mut a, &scope, "a", &[]);
    assert_unharmed(&mut b, &scope, "b", &[]);
}

#[test]
fn auto_unlink_removes_what_the_store_created() {
    let scope = Scope::new();
    let ns = scope.ns("a");
    let outside = Sentinel::new(&scope, "x");
    host_create(&format!("{ns}theirs"), b"host made");
    let mut guest = Guest::new(scope.full("a").auto_unlink(true).build().unwrap());

    // Created and still open at drop, created and closed, created with
    // plain CREATE, and opened with CREATE although it existed.
    let open_at_drop = guest.open_ok(b"open", RDWR | CREATE | EXCL);
    assert_eq!(guest.set_size(open_at_drop, 8), 0);
    let h = guest.open_ok(b"closed", RDWR | CREATE | EXCL);
    assert_eq!(guest.close(h), 0);
    let _plain = guest.open_ok(b"plain", RDWR | CREATE);
    let _found = guest.open_ok(b"theirs", RDWR | CREATE);
    assert_eq!(guest.ctx().created().count(), 3);
    for name in ["open", "closed", "plain"] {
        assert!(exists(format!("{ns}{name}")));
    }

    drop(guest);
    for name in ["open", "closed", "plain"] {
        assert!(!exists(format!("{ns}{name}")), "{name} was unlinked");
    }
    assert_eq!(contents(format!("{ns}theirs")), b"host made");
    outside.assert_intact();
    let mut expected = vec![
        outside.name().as_bytes().to_vec(),
        format!("{ns}theirs").into_bytes(),
    ];
    expected.sort();
    assert_eq!(scope.entries(), expected, "nothing else left behind");
}

#[test]
fn auto_unlink_spares_names_that_moved_on() {
    let scope = Scope::new();
    let ns = scope.ns("a");
    let mut guest = Guest::new(scope.full("a").auto_unlink(true).build().unwrap());

    // Replaced from outside: the host unlinks the guest's segment and
    // creates its own under the same name.
    let h = guest.open_ok(b"replaced", RDWR | CREATE | EXCL);
    std::fs::remove_file(shm_path(format!("{ns}replaced"))).unwrap();
    host_create(&format!("{ns}replaced"), b"the host's now");
    // Unlinked by the guest, then re-created by the host.
    let g = guest.open_ok(b"handed-over", RDWR | CREATE | EXCL);
    assert_eq!(guest.close(g), 0);
    assert_eq!(guest.unlink(b"handed-over"), 0);
    host_create(&format!("{ns}handed-over"), b"the host's too");
    // Re-created by the guest after unlinking: the new one is its own.
    let r = guest.open_ok(b"again", RDWR | CREATE | EXCL);
    assert_eq!(guest.close(r), 0);
    assert_eq!(guest.unlink(b"again"), 0);
    let r = guest.open_ok(b"again", RDWR | CREATE | EXCL);
    assert_eq!(guest.close(r), 0);
    assert_eq!(guest.close(h), 0);

    drop(guest);
    assert_eq!(contents(format!("{ns}replaced")), b"the host's now");
    assert_eq!(contents(format!("{ns}handed-over")), b"the host's too");
    assert!(!exists(format!("{ns}again")));
}

#[test]
fn without_auto_unlink_segments_outlive_the_store() {
    let scope = Scope::new();
    let ns = scope.ns("a");
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let h = guest.open_ok(b"keep", RDWR | CREATE | EXCL);
    assert_eq!(guest.set_size(h, 4), 0);
    assert_eq!(guest.write_data(h, 0, b"kept"), 4);
    drop(guest);
    assert_eq!(contents(format!("{ns}keep")), b"kept");

    // A later store can open it (and does not count it as its own).
    let mut later = Guest::new(scope.full("a").auto_unlink(true).build().unwrap());
    let h = later.open_ok(b"keep", RDWR | CREATE);
    assert_eq!(&later.read_data(h, 0, 4).1, b"kept");
    assert_eq!(later.ctx().created().count(), 0);
    drop(later);
    assert!(
        exists(format!("{ns}keep")),
        "not the later store's to remove"
    );
}
