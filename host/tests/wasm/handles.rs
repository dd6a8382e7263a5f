//! Hostile handles: forged, closed, reused (stale generation) and foreign
//! handles are `EBADF` for every call that takes one, and never reach
//! another handle's segment.

use shmgate_core::Errno;

use crate::common::*;

/// Every handle-taking call on `h` must be `EBADF`.
#[track_caller]
fn assert_badf_everywhere(guest: &mut Guest, h: i32, what: &str) {
    let what = format!("{what} (handle {h:#x})");
    assert_errno(guest.size(h), Errno::BADF, &format!("size {what}"));
    assert_errno(
        guest.set_size(h, 0),
        Errno::BADF,
        &format!("set_size {what}"),
    );
    assert_errno(
        guest.set_size(h, 4096),
        Errno::BADF,
        &format!("set_size {what}"),
    );
    assert_errno(
        guest.read_data(h, 0, 8).0,
        Errno::BADF,
        &format!("read {what}"),
    );
    assert_errno(
        guest.write_data(h, 0, b"forged"),
        Errno::BADF,
        &format!("write {what}"),
    );
    assert_errno(guest.close(h), Errno::BADF, &format!("close {what}"));
}

#[test]
fn forged_handles_are_ebadf() {
    let scope = Scope::new();
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let forged = [
        0,
        1,
        2,
        0xffff,
        0x1_0000,
        0x1_0001,
        0x7fff_0000,
        i32::MAX,
        -1,
        -2,
        i32::MIN,
        i32::MIN + 1,
    ];
    // No handle exists yet.
    for h in forged {
        assert_badf_everywhere(&mut guest, h, "before any open");
    }

    host_create(&format!("{}seg", scope.ns("a")), b"0123456789");
    let real = guest.open_ok(b"seg", RDWR);
    // Everything but the real handle, including the real slot with other
    // generations or high bits set.
    let near = [
        real ^ 1,
        real + 1,
        real | 0x1_0000,
        real + 0x1_0000,
        real | 0x4000_0000,
        real | i32::MIN,
        real | -0x1_0000, // every generation bit and the sign
    ];
    for h in forged.into_iter().chain(near).filter(|&h| h != real) {
        assert_badf_everywhere(&mut guest, h, "forged");
    }

    // The real handle was never disturbed.
    assert_eq!(guest.size(real), 10);
    let (ret, got) = guest.read_data(real, 0, 10);
    assert_eq!((ret, got.as_slice()), (10, &b"0123456789"[..]));
    assert_eq!(guest.ctx().open_handles(), 1);
    assert_eq!(guest.close(real), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn closed_handles_are_ebadf() {
    let scope = Scope::new();
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    host_create(&format!("{}seg", scope.ns("a")), b"data");
    let h = guest.open_ok(b"seg", RDWR);
    assert_eq!(guest.close(h), 0);
    assert_eq!(guest.ctx().open_handles(), 0);
    assert_badf_everywhere(&mut guest, h, "closed");
    assert_badf_everywhere(&mut guest, h, "closed, again");
    assert_eq!(contents(format!("{}seg", scope.ns("a"))), b"data");
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn reused_slot_rejects_the_stale_handle() {
    let scope = Scope::new();
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    host_create(&format!("{}first", scope.ns("a")), b"first");
    host_create(&format!("{}second", scope.ns("a")), b"second");

    let stale = guest.open_ok(b"first", RDWR);
    assert_eq!(guest.close(stale), 0);
    let fresh = guest.open_ok(b"second", RDWR);
    assert_eq!(fresh & 0xffff, stale & 0xffff, "the slot is reused");
    assert_ne!(fresh, stale, "with a new generation");
    assert!(fresh >= 0 && stale >= 0);

    // The stale handle reaches neither the old nor the new segment, and
    // closing it does not close the new one.
    assert_badf_everywhere(&mut guest, stale, "stale");
    assert_eq!(guest.ctx().open_handles(), 1);
    let (ret, got) = guest.read_data(fresh, 0, 16);
    assert_eq!((ret, got.as_slice()), (6, &b"second"[..]));
    assert_eq!(contents(format!("{}first", scope.ns("a"))), b"first");
    assert_eq!(contents(format!("{}second", scope.ns("a"))), b"second");

    // Many reuses later the first handle is still dead, and every live
    // handle is distinct.
    let mut seen = vec![stale, fresh];
    assert_eq!(guest.close(fresh), 0);
    for _ in 0..1000 {
        let h = guest.open_ok(b"first", RDONLY);
        assert_eq!(h & 0xffff, stale & 0xffff);
        assert!(!seen.contains(&h), "handle {h:#x} handed out twice");
        seen.push(h);
        assert_eq!(guest.close(h), 0);
    }
    for &h in &seen {
        assert_errno(guest.size(h), Errno::BADF, &format!("old handle {h:#x}"));
    }
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn handles_of_another_store_are_ebadf() {
    let scope = Scope::new();
    host_create(&format!("{}seg", scope.ns("a")), b"mine");
    let mut owner = Guest::new(scope.full("a").build().unwrap());
    let mut other = Guest::new(scope.full("a").build().unwrap());
    let handles: Vec<i32> = (0..4).map(|_| owner.open_ok(b"seg", RDWR)).collect();
    for &h in &handles {
        assert_badf_everywhere(&mut other, h, "another store's");
    }
    assert_eq!(owner.ctx().open_handles(), 4);
    for &h in &handles {
        assert_eq!(owner.size(h), 4);
        assert_eq!(owner.close(h), 0);
    }
    assert_eq!(contents(format!("{}seg", scope.ns("a"))), b"mine");
    assert_unharmed(&mut other, &scope, "a", &[]);
    assert_unharmed(&mut owner, &scope, "a", &[]);
}
