//! A guest's handle holds the holder lock (see `shmgate_host::lifecycle`)
//! for as long as it is open, so `shmgate ls` and `rm --orphaned` see the
//! guest hold the segment from any PID namespace.

use shmgate_host::lifecycle;

use crate::common::*;

#[test]
fn a_guest_handle_holds_the_holder_lock_until_closed() {
    let scope = Scope::new();
    let host = format!("{}seg", scope.ns("a"));
    host_create(&host, b"made by the host, without locks");
    let status = lifecycle::inspect(&host).unwrap();
    assert!(!status.holder_alive && !status.creator_alive, "{status:?}");
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let h = guest.open_ok(b"seg", RDONLY);
    let status = lifecycle::inspect(&host).unwrap();
    assert!(status.holder_alive, "{status:?}");
    assert_eq!(
        lifecycle::unlink_if_orphaned(&host, status.identity).unwrap(),
        lifecycle::Removal::HolderAlive
    );
    assert_eq!(guest.close(h), 0);
    let status = lifecycle::inspect(&host).unwrap();
    assert!(!status.holder_alive, "{status:?}");
    assert_eq!(status.open_elsewhere, Some(false), "{status:?}");
    assert_eq!(
        lifecycle::unlink_if_orphaned(&host, status.identity).unwrap(),
        lifecycle::Removal::Removed
    );
}
