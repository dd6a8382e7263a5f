//! Safety requirement 5: bad windows fail with the right errno.

use shmgate_core::Errno;
use shmgate_host::OpenOptions;
use shmgate_host::wasm::ShmPolicy;

use crate::common::{Guest, Ns, PAGE, init, policy};

const RW: i32 = 1;

#[test]
fn bad_windows_are_refused() {
    init();
    let ns = Ns::new();
    let _seg = OpenOptions::new()
        .size(4 * PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    let mut g = Guest::new(policy(&ns).max_mapped(3 * PAGE as u64).build().unwrap());
    let h = g.open("seg", RW);
    assert!(h >= 0, "{h}");
    let e = |e: Errno| e.to_wire();

    // Unaligned offset or length, zero or negative length.
    assert_eq!(g.map(h, 4096, PAGE, 3), e(Errno::INVAL));
    assert_eq!(g.map(h, 0, PAGE + 4096, 3), e(Errno::INVAL));
    assert_eq!(g.map(h, 0, 0, 3), e(Errno::INVAL));
    assert_eq!(g.map(h, 0, -PAGE, 3), e(Errno::INVAL));
    assert_eq!(g.map(h, -(PAGE as i64), PAGE, 3), e(Errno::INVAL));
    // prot: read is required, nothing but read and write.
    for prot in [0, 2, 4, 7, -1] {
        assert_eq!(g.map(h, 0, PAGE, prot), e(Errno::INVAL), "prot {prot}");
    }
    // Larger than the segment, or reaching past its end.
    assert_eq!(g.map(h, 0, 5 * PAGE, 1), e(Errno::NXIO));
    assert_eq!(g.map(h, 3 * PAGE as i64, 2 * PAGE, 1), e(Errno::NXIO));
    assert_eq!(g.map(h, i64::MAX - 0xffff, PAGE, 1), e(Errno::NXIO)); // aligned, far past the end
    // Over the mapped-bytes quota (3 pages).
    assert_eq!(g.map(h, 0, 4 * PAGE, 1), e(Errno::NOMEM));
    let a = g.map(h, 0, 2 * PAGE, 3);
    assert!(a > 0, "{a}");
    assert_eq!(g.map(h, 0, 2 * PAGE, 1), e(Errno::NOMEM));
    // Forged and closed handles.
    assert_eq!(g.map(12345, 0, PAGE, 1), e(Errno::BADF));
    let h2 = g.open("seg", 0);
    assert!(h2 >= 0);
    assert_eq!(g.call::<i32, i64>("close", h2 as i32), 0);
    assert_eq!(g.map(h2, 0, PAGE, 1), e(Errno::BADF));
    // A read-only handle maps read-only only.
    let ro = g.open("seg", 0);
    assert_eq!(g.map(ro, 0, PAGE, 3), e(Errno::ACCES));
    assert!(g.map(ro, 0, PAGE, 1) > 0);

    // unmap: only exactly one window; not a part, not past the memory.
    let a = a as i32;
    assert_eq!(
        g.call::<(i32, i32), i64>("unmap", (a, PAGE)),
        e(Errno::INVAL)
    );
    assert_eq!(
        g.call::<(i32, i32), i64>("unmap", (a + PAGE, PAGE)),
        e(Errno::INVAL)
    );
    assert_eq!(
        g.call::<(i32, i32), i64>("unmap", (0, PAGE)),
        e(Errno::INVAL)
    );
    assert_eq!(
        g.call::<(i32, i32), i64>("unmap", (i32::MAX, PAGE)),
        e(Errno::INVAL)
    );
    assert_eq!(g.call::<(i32, i32), i64>("unmap", (a, 2 * PAGE)), 0);
    assert_eq!(
        g.call::<(i32, i32), i64>("unmap", (a, 2 * PAGE)),
        e(Errno::INVAL)
    );
}

/// A read-only grant can only map read-only.
#[test]
fn read_only_grant_maps_read_only() {
    init();
    let ns = Ns::new();
    let _seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    let mut g = Guest::new(policy(&ns).read_only(true).build().unwrap());
    let h = g.open("seg", 0);
    assert_eq!(g.map(h, 0, PAGE, 3), Errno::ACCES.to_wire());
    assert!(g.map(h, 0, PAGE, 1) > 0);
}

/// Without `max_mapped`, no windows at all.
#[test]
fn no_window_quota_means_enomem() {
    init();
    let ns = Ns::new();
    let _seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    let mut g = Guest::new(ShmPolicy::builder().namespace(&ns.0).build().unwrap());
    let h = g.open("seg", 0);
    assert_eq!(g.map(h, 0, PAGE, 1), Errno::NOMEM.to_wire());
}

/// A window past what the memory may grow to is ENOMEM, and the memory
/// is left as it was.
#[test]
fn window_past_memory_maximum_is_enomem() {
    init();
    let ns = Ns::new();
    let _seg = OpenOptions::new()
        .size(4 * PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    let small = crate::common::GUEST.replace(
        "(memory (export \"memory\") 1 1000 shared)",
        "(memory (export \"memory\") 1 2 shared)",
    );
    let mut g = Guest::with_engine(
        crate::common::engine(),
        &small,
        policy(&ns).build().unwrap(),
    );
    let h = g.open("seg", 0);
    assert_eq!(g.map(h, 0, 2 * PAGE, 1), Errno::NOMEM.to_wire());
    assert_eq!(g.memory.size(&g.store), 1);
    assert!(g.map(h, 0, PAGE, 1) > 0);
}
