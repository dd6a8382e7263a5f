//! Windows that work: shared both ways, read-only, unmapped back to
//! private zeroed memory, gone with their store; refused under pooling;
//! never lent to host copies.

use std::sync::atomic::Ordering;

use shmgate_core::Errno;
use shmgate_host::OpenOptions;
use wasmtime::{Config, Engine, InstanceAllocationStrategy};

use crate::common::{Guest, Ns, PAGE, init, local_guest, mapped_in_proc, policy};

#[test]
fn window_shares_memory_both_ways() {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(2 * PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    seg.write_all_at(&0xdead_beef_u32.to_le_bytes(), 8).unwrap();
    let mut g = Guest::new(policy(&ns).build().unwrap());
    let h = g.open("seg", 1);
    let addr = g.map(h, 0, 2 * PAGE, 3);
    // The window starts on fresh pages past what the guest had (1 page).
    assert_eq!(addr, i64::from(PAGE));
    assert_eq!(g.memory.size(&g.store), 3);
    let a = addr as i32;
    assert_eq!(g.call::<i32, i32>("load", a + 8) as u32, 0xdead_beef);
    g.call::<(i32, i32), ()>("store", (a + PAGE + 4, 0x1234_5678));
    let mut word = [0; 4];
    seg.read_exact_at(&mut word, PAGE as u64 + 4).unwrap();
    assert_eq!(u32::from_le_bytes(word), 0x1234_5678);

    // Atomic instructions on the window are the same words a native
    // mapping sees.
    let map = seg.map().unwrap();
    let counter = map.atomic_u32(64).unwrap();
    counter.store(41, Ordering::SeqCst);
    assert_eq!(g.call::<(i32, i32), i32>("atomic_add", (a + 64, 1)), 41);
    assert_eq!(counter.load(Ordering::SeqCst), 42);
}

/// Safety requirement 4: unmap gives back private zeroed pages; a store's
/// drop leaves no mapping of the segment in the process.
#[test]
fn unmap_and_drop_release_windows() {
    init();
    let ns = Ns::new();
    let name = ns.name("seg");
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(&name)
        .unwrap();
    seg.write_all_at(b"segment data", 0).unwrap();
    let mut g = Guest::new(policy(&ns).build().unwrap());
    let h = g.open("seg", 1);
    let a = g.map(h, 0, PAGE, 3) as i32;
    assert!(mapped_in_proc(&name));
    assert_eq!(g.call::<(i32, i32), i64>("unmap", (a, PAGE)), 0);
    assert!(!mapped_in_proc(&name));
    // Private, zeroed, writable, and no longer the segment.
    assert_eq!(g.call::<i32, i32>("load", a), 0);
    g.call::<(i32, i32), ()>("store", (a, 7));
    let mut buf = [0; 12];
    seg.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"segment data");

    // Windows left mapped go with their store.
    let _ = g.map(h, 0, PAGE, 1);
    assert!(mapped_in_proc(&name));
    assert_eq!(g.store.data().shm.mapped_bytes(), PAGE as u64);
    drop(g);
    assert!(!mapped_in_proc(&name));
}

/// Safety requirement 3: the pooling allocator never uses our memories, so
/// `map` is ENOTSUP and nothing reaches the next tenant of a slot.
#[test]
fn pooling_engine_refuses_windows() {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    seg.write_all_at(&[0xab; 64], 0).unwrap();
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::pooling());
    let pooling = Engine::new(&config).unwrap();
    for tenant in 0..2 {
        // Pooling refuses shared memories, so the guest's is local.
        let mut g = Guest::with_engine(&pooling, &local_guest(), policy(&ns).build().unwrap());
        let h = g.open("seg", 1);
        assert_eq!(
            g.map(h, 0, PAGE, 3),
            Errno::NOTSUP.to_wire(),
            "tenant {tenant}"
        );
        // The memory is the guest's own: one page, zeros past the name.
        assert_eq!(g.memory.size(&g.store), 1);
        assert_eq!(g.call::<i32, i32>("load", 1024), 0, "tenant {tenant}");
        g.call::<(i32, i32), ()>("store", (1024, -1));
    }
}

/// Safety requirement 6: host copies never target window bytes; `read`
/// and `write` with a buffer in a window are EFAULT, and the segment is
/// unchanged.
#[test]
fn host_copies_refuse_window_buffers() {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(2 * PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    seg.write_all_at(&[1; 16], 0).unwrap();
    let mut g = Guest::new(policy(&ns).build().unwrap());
    let h = g.open("seg", 1) as i32;
    let a = g.map(h.into(), 0, PAGE, 3) as i32;
    let io = |g: &mut Guest, f: &str, ptr: i32, len: i32| {
        g.call::<(i32, i64, i32, i32), i64>(f, (h, PAGE as i64, ptr, len))
    };
    for f in ["read", "write"] {
        assert_eq!(io(&mut g, f, a, 16), Errno::FAULT.to_wire(), "{f}");
        // Straddling the window's start or end.
        assert_eq!(io(&mut g, f, a - 8, 16), Errno::FAULT.to_wire(), "{f}");
        assert_eq!(
            io(&mut g, f, a + PAGE - 8, 16),
            Errno::FAULT.to_wire(),
            "{f}"
        );
        // Right next to it is fine.
        assert_eq!(io(&mut g, f, a - 16, 16), 16, "{f}");
    }
    let mut buf = [0; 16];
    seg.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, [1; 16]);
}

/// `ShmCtx::grant`: the embedder hands the guest a segment that has no
/// name (unlinked here; a sealed memfd in practice). The guest uses the
/// handle like one it opened, within the grant: read-only means `write`
/// is `EBADF` and a write window `EACCES`; a read window works.
#[test]
fn granted_segment_without_a_name() {
    init();
    let ns = Ns::new();
    let name = ns.name("hidden");
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(&name)
        .unwrap()
        .into_segment();
    seg.write_all_at(b"granted!", 0).unwrap();
    shmgate_host::unlink(&name).unwrap();
    let mut g = Guest::new(policy(&ns).max_handles(1).build().unwrap());
    let h = g.store.data_mut().shm.grant(seg, true).unwrap();
    let h = i32::try_from(h).unwrap();
    let extra = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("extra"))
        .unwrap();
    assert_eq!(
        g.store.data_mut().shm.grant(extra.into_segment(), false),
        Err(shmgate_core::Errno::MFILE),
        "max_handles counts granted handles"
    );
    assert_eq!(
        g.call::<(i32, i64, i32, i32), i64>("read", (h, 0, 100, 8)),
        8
    );
    assert_eq!(
        g.call::<(i32, i64, i32, i32), i64>("write", (h, 0, 100, 8)),
        shmgate_core::Errno::BADF.to_wire()
    );
    assert_eq!(
        g.map(i64::from(h), 0, PAGE, 3),
        shmgate_core::Errno::ACCES.to_wire()
    );
    let a = g.map(i64::from(h), 0, PAGE, 1);
    assert!(a > 0, "map: {a}");
    assert_eq!(
        g.call::<i32, i32>("load", a as i32 + 4),
        i32::from_le_bytes(*b"ted!")
    );
}

/// A sealed anonymous segment granted to a guest: its window works, and
/// nobody (the host included) can shrink it under the window.
#[test]
fn sealed_anonymous_segment_granted_and_mapped() {
    use shmgate_host::{Seals, Segment};
    init();
    let ns = Ns::new();
    let seg = Segment::anonymous(PAGE as u64).unwrap();
    seg.write_all_at(b"sealed!!", 0).unwrap();
    seg.seal(Seals::SHRINK | Seals::GROW | Seals::SEAL).unwrap();
    assert_eq!(
        seg.set_len(0).unwrap_err().errno(),
        shmgate_core::Errno::PERM,
        "nobody can shrink it"
    );
    let mut g = Guest::new(policy(&ns).build().unwrap());
    let host_view = seg.map().unwrap();
    let h = i64::from(g.store.data_mut().shm.grant(seg, false).unwrap());
    let a = g.map(h, 0, PAGE, 3);
    assert!(a > 0, "map: {a}");
    assert_eq!(
        g.call::<i32, i32>("load", a as i32),
        i32::from_le_bytes(*b"seal")
    );
    g.call::<(i32, i32), ()>("store", (a as i32, 0x0102_0304));
    assert_eq!(
        host_view
            .load_u32(0, std::sync::atomic::Ordering::SeqCst)
            .unwrap(),
        0x0102_0304
    );
}

/// A segment sealed against writes, granted read-write: the grant is
/// read-only in effect (a writable mapping would be refused by the kernel
/// after it had already unmapped the target, on kernels before 6.12), so a
/// write window is `EACCES`, host atomics that store are `EBADF`, and a
/// read window and `wait32` work.
#[test]
fn write_sealed_segment_is_granted_read_only() {
    use shmgate_host::{Seals, Segment};
    init();
    let ns = Ns::new();
    let seg = Segment::anonymous(PAGE as u64).unwrap();
    seg.write_all_at(b"constant", 0).unwrap();
    seg.seal(Seals::WRITE).unwrap();
    let mut g = Guest::new(policy(&ns).build().unwrap());
    let h = g.store.data_mut().shm.grant(seg, false).unwrap();
    let h = i32::try_from(h).unwrap();
    assert_eq!(
        g.map(i64::from(h), 0, PAGE, 3),
        shmgate_core::Errno::ACCES.to_wire()
    );
    assert_eq!(
        g.call::<(i32, i64, i32, i32, i32), i64>("atomic32", (h, 0, 2, 1, 0)),
        shmgate_core::Errno::BADF.to_wire()
    );
    assert_eq!(
        g.call::<(i32, i64, i32, i64), i64>("wait32", (h, 0, 0, 0)),
        shmgate_core::Errno::AGAIN.to_wire()
    );
    let a = g.map(i64::from(h), 0, PAGE, 1);
    assert!(a > 0, "map: {a}");
    assert_eq!(
        g.call::<i32, i32>("load", a as i32),
        i32::from_le_bytes(*b"cons")
    );
}
