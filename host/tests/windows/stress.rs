//! Windows under load, each in a child process of its own (a crash there
//! is a failed test, not a dead test binary):
//!
//! - the stress test: 8 threads churn stores, `map`, `unmap`, `notify`
//!   and store drops while a peer process shrinks and regrows a segment
//!   under live windows, for `SHMGATE_STRESS_SECS` seconds (default 30;
//!   set it higher for a long run);
//! - the scale test: 10,000 stores alive at once, each with a window and a
//!   futex page, reporting RSS, descriptors and mappings.

use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmgate_host::OpenOptions;
use shmgate_host::wasm::window_at;

use crate::common::{
    Guest, Ns, PAGE, assert_child_ok, child_value, init, is_child, policy, run_child,
};

const THREADS: usize = 8;

/// A peer process that shrinks `/dev/shm/<name>` to 0 and regrows it to
/// `len`, in a loop, until killed.
struct Shrinker(Child);

impl Shrinker {
    fn start(name: &str, len: u64) -> Shrinker {
        let path = format!("/dev/shm/{name}");
        // `-c`: a truncate still running when the loop is killed must not
        // re-create the name after the test removed it.
        let script =
            format!("while :; do truncate -c -s 0 {path}; truncate -c -s {len} {path}; done");
        Shrinker(
            Command::new("sh")
                .args(["-c", &script])
                .spawn()
                .expect("starting the shrinking peer"),
        )
    }
}

impl Drop for Shrinker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn churn_while_a_peer_shrinks_segments() {
    if is_child("stress") {
        return stress_child();
    }
    if std::env::var("SHMGATE_WINDOWS_CHILD").is_ok() {
        return;
    }
    let out = run_child("stress::churn_while_a_peer_shrinks_segments", "stress", &[]);
    assert_child_ok(&out, "stress");
    let get = |k: &str| -> u64 {
        child_value(&out, k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("the child reports {k}"))
    };
    let (stores, stable_traps, victim_traps, victim_ok) = (
        get("stores"),
        get("stable_traps"),
        get("victim_traps"),
        get("victim_ok"),
    );
    println!(
        "stress: {stores} stores, victim windows trapped {victim_traps} times and ran {victim_ok} times, stable windows trapped {stable_traps} times"
    );
    assert_eq!(
        stable_traps, 0,
        "a guest whose segment never shrank trapped"
    );
    assert!(stores >= 100, "too little churn: {stores} stores");
    assert!(
        victim_traps > 0,
        "the peer never caught a guest on a shrunk window"
    );
}

#[derive(Default)]
struct Tally {
    stores: AtomicU64,
    stable_traps: AtomicU64,
    victim_traps: AtomicU64,
    victim_ok: AtomicU64,
}

fn stress_child() {
    init();
    let secs: u64 = std::env::var("SHMGATE_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let ns = Ns::new();
    let victim_len = 2 * PAGE as u64;
    let _victim = OpenOptions::new()
        .size(victim_len)
        .open_owned(ns.name("victim"))
        .unwrap();
    let stable = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("stable"))
        .unwrap();
    let _peer = Shrinker::start(&ns.name("victim"), victim_len);
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let tally = Arc::clone(&tally);
            let grant = policy(&ns).max_mapped(1 << 20).build().unwrap();
            std::thread::spawn(move || worker(t, &grant, deadline, &tally))
        })
        .collect();
    let mut expected = [0u64; THREADS];
    for (t, w) in workers.into_iter().enumerate() {
        expected[t] = w.join().expect("a host thread died");
    }
    // Every increment a stable guest reported is in the segment: no
    // detach or misdirected replacement ever hit a stable window.
    for (t, want) in expected.iter().enumerate() {
        let mut word = [0; 4];
        stable.read_exact_at(&mut word, t as u64 * 64).unwrap();
        assert_eq!(u64::from(u32::from_le_bytes(word)), *want, "thread {t}");
    }
    for (k, v) in [
        ("stores", &tally.stores),
        ("stable_traps", &tally.stable_traps),
        ("victim_traps", &tally.victim_traps),
        ("victim_ok", &tally.victim_ok),
    ] {
        println!("\n{k}={}", v.load(Ordering::SeqCst));
    }
}

/// One thread's churn; returns how much its stable guests added to its
/// word of the stable segment.
fn worker(
    t: usize,
    grant: &shmgate_host::wasm::ShmPolicy,
    deadline: Instant,
    tally: &Tally,
) -> u64 {
    let mut added = 0u64;
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        tally.stores.fetch_add(1, Ordering::Relaxed);
        let mut g = Guest::new(grant.clone());
        let stable = g.open("stable", 1);
        let victim = g.open("victim", 1);
        assert!(stable >= 0 && victim >= 0, "open: {stable} {victim}");
        let s = g.map(stable, 0, PAGE, 3);
        assert!(s > 0, "stable map: {s}");
        let s = s as i32;
        // The victim may be shrunk right now: ENXIO, then no window.
        let v = g.map(victim, 0, PAGE, 3);
        let word = s + (t as i32) * 64;
        let spin = g.func::<(i32, i32), i32>("spin");
        match spin.call(&mut g.store, (word, 50)) {
            Ok(_) => added += 50,
            Err(_) => {
                tally.stable_traps.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let notify = g.func::<(i32, i64, i32), i64>("notify");
        let _ = notify.call(&mut g.store, (victim as i32, 0, 1));
        // Host-side atomics on the victim's page race the peer too: done,
        // or an errno (ENXIO once the shrink diverted the page), never a
        // crash or a trap.
        let atomic = g.func::<(i32, i64, i32, i32, i32), i64>("atomic32");
        for _ in 0..20 {
            let r = atomic
                .call(&mut g.store, (victim as i32, 8 * t as i64, 2, 1, 0))
                .expect("atomic32 never traps");
            assert!(
                r >= 0 || r == shmgate_core::Errno::NXIO.to_wire(),
                "atomic32: {r}"
            );
        }
        let _ = notify.call(&mut g.store, (stable as i32, 4096, 1));
        if v > 0 {
            match spin.call(&mut g.store, (v as i32 + 8 * t as i32, 2000)) {
                Ok(_) => tally.victim_ok.fetch_add(1, Ordering::Relaxed),
                Err(trap) => {
                    assert!(format!("{trap:?}").contains("out of bounds"), "{trap:?}");
                    tally.victim_traps.fetch_add(1, Ordering::Relaxed)
                }
            };
            if round.is_multiple_of(3) {
                // Unmapping a live or revoked window both work.
                let r = g.call::<(i32, i32), i64>("unmap", (v as i32, PAGE));
                assert_eq!(r, 0, "unmap");
            }
        }
        // The stable window again, after the victim's trap.
        match spin.call(&mut g.store, (word, 50)) {
            Ok(_) => added += 50,
            Err(_) => {
                tally.stable_traps.fetch_add(1, Ordering::Relaxed);
            }
        }
        if round.is_multiple_of(2) {
            let r = g.call::<(i32, i32), i64>("unmap", (s, PAGE));
            assert_eq!(r, 0, "unmap stable");
        }
        // Dropping the store retires whatever is left.
    }
    added
}

/// 10,000 stores at once, each with a window and a futex page.
#[test]
fn ten_thousand_stores_with_windows() {
    const STORES: usize = 10_000;
    if is_child("scale") {
        return scale_child(STORES);
    }
    if std::env::var("SHMGATE_WINDOWS_CHILD").is_ok() {
        return;
    }
    let out = run_child("stress::ten_thousand_stores_with_windows", "scale", &[]);
    assert_child_ok(&out, "scale");
    for k in [
        "stores",
        "rss_mib",
        "rss_per_store_kib",
        "fds",
        "maps",
        "seconds",
    ] {
        println!("{k}: {}", child_value(&out, k).unwrap_or_default());
    }
    assert_eq!(child_value(&out, "stores").as_deref(), Some("10000"));
}

fn proc_status(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn count_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

fn scale_child(stores: usize) {
    init();
    // One descriptor per store: the handle its window and futex page come
    // from (they add none).
    let mut nofile = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `nofile` is a valid rlimit to fill in and then set.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut nofile), 0);
        nofile.rlim_cur = nofile.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &nofile), 0);
    }
    let ns = Ns::new();
    let seg = OpenOptions::new()
        .size(PAGE as u64)
        .open_owned(ns.name("seg"))
        .unwrap();
    let (rss0, fds0, maps0, t0) = (
        proc_status("VmRSS:"),
        count_fds(),
        count_maps(),
        Instant::now(),
    );
    let grant = policy(&ns).build().unwrap();
    let mut guests = Vec::with_capacity(stores);
    for i in 0..stores {
        let mut g = Guest::new(grant.clone());
        let h = g.open("seg", 1);
        assert!(h >= 0, "store {i}: open {h}");
        let a = g.map(h, 0, PAGE, 3);
        assert!(a > 0, "store {i}: map {a}");
        // A wait that returns at once maps the futex page.
        let w = g.call::<(i32, i64, i32, i64), i64>("wait32", (h as i32, 0, 1, 0));
        assert_eq!(w, shmgate_core::Errno::AGAIN.to_wire(), "store {i}");
        guests.push((g, a as i32));
    }
    let elapsed = t0.elapsed();
    let (rss, fds, maps) = (proc_status("VmRSS:"), count_fds(), count_maps());
    // Every window is registered and works.
    for (i, (g, a)) in guests.iter_mut().enumerate() {
        assert!(window_at(g.host_addr(*a)).is_some(), "store {i}");
        let word = *a + 4 * (i as i32 % 1024);
        g.call::<(i32, i32), i32>("spin", (word, 1));
    }
    let mut total = 0u64;
    for i in 0..1024 {
        let mut w = [0; 4];
        seg.read_exact_at(&mut w, i * 4).unwrap();
        total += u64::from(u32::from_le_bytes(w));
    }
    assert_eq!(total, stores as u64, "each store's increment landed once");
    println!("\nstores={}", guests.len());
    println!("\nrss_mib={}", (rss.saturating_sub(rss0)) / 1024);
    println!(
        "\nrss_per_store_kib={}",
        rss.saturating_sub(rss0) / stores as u64
    );
    println!("\nfds={}", fds - fds0);
    println!("\nmaps={}", maps - maps0);
    println!("\nseconds={:.2}", elapsed.as_secs_f64());
    let addrs: Vec<_> = guests
        .iter()
        .map(|(g, a)| g.host_addr(*a) as usize)
        .collect();
    drop(guests);
    assert!(
        addrs.iter().all(|&a| window_at(a as *const u8).is_none()),
        "dropping the stores retired every window"
    );
    assert_eq!(count_fds(), fds0, "every descriptor closed");
}
