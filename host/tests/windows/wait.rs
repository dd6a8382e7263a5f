//! `wait32` and `notify`: futexes on the segment's shared pages.

use std::time::{Duration, Instant};

use shmgate_core::Errno;
use shmgate_host::OpenOptions;
use std::sync::atomic::Ordering;

use crate::common::{Guest, Ns, PAGE, init, policy};

fn wait(g: &mut Guest, h: i64, offset: i64, expected: i32, timeout_ns: i64) -> i64 {
    g.call("wait32", (h as i32, offset, expected, timeout_ns))
}

#[test]
fn wait_checks_value_timeout_and_arguments() {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("w"))
        .unwrap();
    seg.write_all_at(&5u32.to_le_bytes(), 8).unwrap();
    let mut g = Guest::new(policy(&ns).build().unwrap());
    let h = g.open("w", 0);
    assert_eq!(wait(&mut g, h, 8, 4, 1_000_000_000), Errno::AGAIN.to_wire());
    let t = Instant::now();
    assert_eq!(wait(&mut g, h, 8, 5, 30_000_000), Errno::TIMEDOUT.to_wire());
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(wait(&mut g, h, 6, 5, 0), Errno::INVAL.to_wire()); // unaligned
    assert_eq!(wait(&mut g, h, -4, 5, 0), Errno::INVAL.to_wire());
    assert_eq!(wait(&mut g, h, PAGE as i64, 5, 0), Errno::NXIO.to_wire()); // past the end
    assert_eq!(wait(&mut g, 999, 8, 5, 0), Errno::BADF.to_wire());
    assert_eq!(
        g.call::<(i32, i64, i32), i64>("notify", (h as i32, 8, 1)),
        0
    );
}

/// A waiter in one store is woken by `notify` from another store, through
/// the shared page (as it would be from another process).
#[test]
fn notify_wakes_a_waiter_in_another_store() {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("w"))
        .unwrap();
    let map = seg.map().unwrap();
    let grant = policy(&ns).build().unwrap();
    let waiter = std::thread::spawn(move || {
        let mut g = Guest::new(grant);
        let h = g.open("w", 0);
        assert!(h >= 0, "open: {h}");
        wait(&mut g, h, 64, 0, 10_000_000_000)
    });
    let mut g = Guest::new(policy(&ns).build().unwrap());
    let h = g.open("w", 1);
    assert!(h >= 0, "open: {h}");
    // Publish, then notify until the waiter has been woken.
    map.atomic_u32(64).unwrap().store(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut woken = 0;
    while !waiter.is_finished() && Instant::now() < deadline {
        woken += g.call::<(i32, i64, i32), i64>("notify", (h as i32, 64, -1));
        std::thread::sleep(Duration::from_millis(1));
    }
    let r = waiter.join().unwrap();
    // Woken by notify (0), or the value had already changed (EAGAIN).
    assert!(r == 0 || r == Errno::AGAIN.to_wire(), "{r}");
    assert!(woken <= 1);
}

/// The embedder's interrupt handle ends a wait with EINTR; `max_wait`
/// caps a guest asking to wait forever.
#[test]
fn waits_are_bounded_by_the_embedder() {
    init();
    let ns = Ns::new();
    let _seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("w"))
        .unwrap();
    let mut g = Guest::new(
        policy(&ns)
            .max_wait(Duration::from_millis(100))
            .build()
            .unwrap(),
    );
    let h = g.open("w", 0);
    let t = Instant::now();
    assert_eq!(wait(&mut g, h, 0, 0, -1), Errno::TIMEDOUT.to_wire());
    assert!(t.elapsed() < Duration::from_secs(5));

    let interrupt = g.store.data().shm.interrupt_handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        interrupt.interrupt();
    });
    let mut g2 = Guest::new(
        policy(&ns)
            .max_wait(Duration::from_secs(60))
            .build()
            .unwrap(),
    );
    let _ = g2.open("w", 0);
    // g's handle interrupts only g's waits.
    let t = Instant::now();
    assert_eq!(wait(&mut g, h, 0, 0, -1), Errno::INTR.to_wire());
    assert!(t.elapsed() < Duration::from_secs(5));
    stopper.join().unwrap();
}

/// `notify` through a page an earlier call mapped wakes before it looks
/// the segment's size up, but a word the segment no longer holds is still
/// `ENXIO`: past a shrunk end inside the same page, and on a page the
/// shrink cut off.
#[test]
fn notify_past_a_shrunk_end_is_enxio() {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(2 * PAGE as u64)
        .open_owned(ns.name("w"))
        .unwrap();
    let mut g = Guest::new(policy(&ns).build().unwrap());
    let h = g.open("w", 1);
    assert!(h >= 0, "open: {h}");
    let notify = |g: &mut Guest, offset: i64| {
        g.call::<(i32, i64, i32), i64>("notify", (h as i32, offset, 1))
    };
    let word = PAGE as i64 + 8;
    assert_eq!(notify(&mut g, word), 0); // maps the second page
    seg.set_len(PAGE as u64 + 8).unwrap();
    assert_eq!(notify(&mut g, word), Errno::NXIO.to_wire());
    assert_eq!(notify(&mut g, word - 4), 0);
    seg.set_len(PAGE as u64).unwrap();
    assert_eq!(notify(&mut g, word - 4), Errno::NXIO.to_wire());
    assert_eq!(notify(&mut g, 8), 0);
    seg.set_len(2 * PAGE as u64).unwrap();
    assert_eq!(notify(&mut g, word), 0);
}

/// `notify` on many pages keeps a bounded number of host mappings (a
/// guest must not be able to exhaust `vm.max_map_count`), and a page
/// first used while the segment was small still works after it grows.
#[test]
fn futex_pages_are_bounded_and_follow_growth() {
    init();
    let ns = Ns::new();
    let name = ns.name("w");
    let seg = OpenOptions::new().size(8).open_owned(&name).unwrap();
    let mut g = Guest::new(policy(&ns).allow_resize(true).build().unwrap());
    let h = g.open("w", 1);
    let notify = |g: &mut Guest, offset: i64| {
        g.call::<(i32, i64, i32), i64>("notify", (h as i32, offset, 1))
    };
    assert_eq!(notify(&mut g, 0), 0);
    seg.set_len(4 << 20).unwrap();
    assert_eq!(notify(&mut g, 8), 0);

    let maps_of_segment = || {
        let needle = format!("/dev/shm/{name}");
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    };
    for page in 0..1024i64 {
        assert_eq!(notify(&mut g, page * 4096), 0);
    }
    assert!(maps_of_segment() <= 16, "{} mappings", maps_of_segment());
    drop(g);
    assert_eq!(maps_of_segment(), 0);
}

/// `atomic32`, the host-side atomics for guests built without wasm
/// atomics: real read-modify-writes on the shared word, so two stores
/// adding concurrently lose nothing, and they agree with native atomics.
#[test]
fn host_side_atomics() {
    init();
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("a"))
        .unwrap();
    let map = seg.map().unwrap();
    let grant = policy(&ns).build().unwrap();
    let adder = std::thread::spawn(move || {
        let mut g = Guest::new(grant);
        let h = g.open("a", 1);
        assert!(h >= 0, "open: {h}");
        g.call::<(i32, i64, i32), i64>("host_add_loop", (h as i32, 64, 20_000))
    });
    let mut g = Guest::new(policy(&ns).build().unwrap());
    let h = g.open("a", 1) as i32;
    let last = g.call::<(i32, i64, i32), i64>("host_add_loop", (h, 64, 20_000));
    let other = adder.join().unwrap();
    assert!(last >= 20_000 && other >= 20_000, "{last} {other}");
    assert_eq!(map.atomic_u32(64).unwrap().load(Ordering::SeqCst), 40_000);

    let op = |g: &mut Guest, h: i32, offset: i64, op: i32, operand: i32, expected: i32| {
        g.call::<(i32, i64, i32, i32, i32), i64>("atomic32", (h, offset, op, operand, expected))
    };
    assert_eq!(op(&mut g, h, 8, 1, 7, 0), 0); // store 7
    assert_eq!(op(&mut g, h, 8, 3, 9, 0), 7); // swap -> 9
    assert_eq!(op(&mut g, h, 8, 4, 11, 5), 9); // cmpxchg fails (9 != 5)
    assert_eq!(op(&mut g, h, 8, 4, 11, 9), 9); // cmpxchg succeeds
    assert_eq!(op(&mut g, h, 8, 0, 0, 0), 11);
    assert_eq!(map.atomic_u32(8).unwrap().load(Ordering::SeqCst), 11);
    assert_eq!(op(&mut g, h, 8, 5, 0, 0), Errno::INVAL.to_wire());
    assert_eq!(op(&mut g, h, 6, 0, 0, 0), Errno::INVAL.to_wire());
    assert_eq!(op(&mut g, h, PAGE as i64, 0, 0, 0), Errno::NXIO.to_wire());
    let ro = g.open("a", 0) as i32;
    assert_eq!(op(&mut g, ro, 8, 0, 0, 0), 11);
    assert_eq!(op(&mut g, ro, 8, 2, 1, 0), Errno::BADF.to_wire());
}
