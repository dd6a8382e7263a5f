//! Quota exhaustion: `max_handles` (`EMFILE`), `max_created` over the
//! store's life (`EDQUOT`) and `max_segment_size` (`EFBIG`), refused before
//! anything is created, and the store working again once under quota.

use shmgate_core::Errno;

use crate::common::*;

#[test]
fn max_handles_is_emfile() {
    let scope = Scope::new();
    let outside = Sentinel::new(&scope, "x");
    host_create(&format!("{}seg", scope.ns("a")), b"data");
    let mut guest = Guest::new(scope.full("a").max_handles(8).build().unwrap());

    let mut handles: Vec<i32> = (0..8).map(|_| guest.open_ok(b"seg", RDONLY)).collect();
    assert_eq!(guest.ctx().open_handles(), 8);
    for _ in 0..3 {
        for flags in [RDONLY, RDWR, RDWR | CREATE, RDWR | CREATE | EXCL] {
            for name in [&b"seg"[..], b"fresh"] {
                let ret = guest.open(name, flags);
                assert_errno(
                    ret,
                    Errno::MFILE,
                    &format!("flags {flags} {name:?} at quota"),
                );
            }
        }
    }
    assert!(
        !exists(format!("{}fresh", scope.ns("a"))),
        "refused before creating"
    );
    assert_eq!(guest.ctx().created().count(), 0);
    assert_eq!(guest.ctx().open_handles(), 8);
    for &h in &handles {
        assert_eq!(guest.size(h), 4, "every handle still works at quota");
    }

    // One close frees one handle, no more.
    assert_eq!(guest.close(handles.pop().unwrap()), 0);
    handles.push(guest.open_ok(b"seg", RDONLY));
    assert_errno(guest.open(b"seg", RDONLY), Errno::MFILE, "at quota again");
    for h in handles {
        assert_eq!(guest.close(h), 0);
    }
    assert_unharmed(&mut guest, &scope, "a", &[&outside]);

    // A quota of zero refuses every open.
    let mut none = Guest::new(scope.full("a").max_handles(0).build().unwrap());
    assert_errno(none.open(b"seg", RDONLY), Errno::MFILE, "max_handles(0)");
    assert_errno(
        none.open(b"fresh", RDWR | CREATE),
        Errno::MFILE,
        "max_handles(0)",
    );
    assert!(!exists(format!("{}fresh", scope.ns("a"))));
}

#[test]
fn default_handle_quota_is_exhausted_cleanly() {
    let scope = Scope::new();
    host_create(&format!("{}seg", scope.ns("a")), b"data");
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let mut handles = Vec::new();
    let refused = loop {
        let ret = guest.open(b"seg", RDONLY);
        if ret < 0 {
            break ret;
        }
        handles.push(handle(ret, "open"));
        assert!(handles.len() <= 64, "the default quota is 64 handles");
    };
    assert_errno(refused, Errno::MFILE, "over the default quota");
    assert_eq!(handles.len(), 64);
    assert_eq!(guest.close(handles.pop().unwrap()), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn max_created_is_edquot_over_the_store_life() {
    let scope = Scope::new();
    let ns = scope.ns("a");
    host_create(&format!("{ns}theirs"), b"host made");
    let mut guest = Guest::new(scope.full("a").max_created(2).build().unwrap());

    for name in ["one", "two"] {
        let h = guest.open_ok(name.as_bytes(), RDWR | CREATE | EXCL);
        assert_eq!(guest.close(h), 0);
    }
    let created: Vec<Vec<u8>> = guest.ctx().created().map(<[u8]>::to_vec).collect();
    assert_eq!(
        created,
        vec![
            format!("{ns}one").into_bytes(),
            format!("{ns}two").into_bytes()
        ]
    );

    for flags in [
        RDWR | CREATE,
        RDWR | CREATE | EXCL,
        CREATE,
        RDWR | CREATE | TRUNC,
    ] {
        let ret = guest.open(b"three", flags);
        assert_errno(
            ret,
            Errno::DQUOT,
            &format!("third create, flags {flags:#x}"),
        );
    }
    assert!(!exists(format!("{ns}three")));

    // Opening what exists is not a create, with or without CREATE.
    for name in [&b"one"[..], b"theirs"] {
        let h = guest.open_ok(name, RDWR | CREATE);
        assert_eq!(guest.close(h), 0);
        let h = guest.open_ok(name, RDONLY);
        assert_eq!(guest.close(h), 0);
    }

    // Unlinking does not give a create back.
    assert_eq!(guest.unlink(b"one"), 0);
    assert_errno(guest.open(b"one", RDWR | CREATE), Errno::DQUOT, "re-create");
    assert!(!exists(format!("{ns}one")));
    assert_eq!(guest.ctx().created().count(), 1, "`one` was unlinked");

    // The quota is per store.
    let mut other = Guest::new(scope.full("a").max_created(1).build().unwrap());
    let h = other.open_ok(b"three", RDWR | CREATE | EXCL);
    assert_eq!(other.close(h), 0);
    assert_errno(
        other.open(b"four", RDWR | CREATE),
        Errno::DQUOT,
        "other store",
    );
    assert_unharmed(&mut guest, &scope, "a", &[]);

    let mut never = Guest::new(scope.full("a").max_created(0).build().unwrap());
    assert_errno(
        never.open(b"five", RDWR | CREATE),
        Errno::DQUOT,
        "max_created(0)",
    );
    assert!(!exists(format!("{ns}five")));
}

#[test]
fn max_segment_size_is_efbig() {
    let scope = Scope::new();
    let mut guest = Guest::new(scope.full("a").max_segment_size(4096).build().unwrap());
    let h = guest.open_ok(b"seg", RDWR | CREATE | EXCL);
    let host = format!("{}seg", scope.ns("a"));
    for size in [4097, 1 << 20, 1 << 40, i64::MAX] {
        assert_errno(
            guest.set_size(h, size),
            Errno::FBIG,
            &format!("size {size}"),
        );
        assert_eq!(file_len(&host), 0);
    }
    assert_eq!(guest.set_size(h, 4096), 0);
    assert_eq!(file_len(&host), 4096);
    // Writes cannot get around it: they never grow the segment.
    assert_eq!(guest.write_data(h, 4090, &[1; 64]), 6);
    assert_eq!(guest.write_data(h, 1 << 20, &[1; 64]), 0);
    assert_eq!(file_len(&host), 4096);
    assert_eq!(guest.close(h), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}
