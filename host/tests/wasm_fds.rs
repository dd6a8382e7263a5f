//! Descriptor accounting of the `shmgate_v1` host functions and the
//! `shmgate:shm` component interface, by counting `/proc/self/fd`: 10,000
//! open/close cycles without fd growth, no fd kept by any failing call
//! (hostile arguments, quotas, objects planted in the namespace, traps; the
//! hostile-case table through both ABIs), and every handle closed when its
//! store drops (a component's segments too).
//!
//! This binary holds a single test that runs its checks one after the
//! other: any other test thread in the process would change the count.
#![deny(unsafe_code)]

#[path = "wasm/abi.rs"]
#[allow(dead_code)] // shared with the `wasm` binary
mod abi;
#[path = "wasm/common.rs"]
#[allow(dead_code)] // the helpers serve the `wasm` binary too
mod common;
#[path = "wasm/table.rs"]
mod table;

use std::fs;
use std::os::unix::fs::symlink;

use common::*;
use shmgate_core::Errno;
use shmgate_host::wasm::ShmPolicy;

/// The number of open descriptors of this process.
fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// What the open descriptors are, for failure messages.
fn fd_list() -> Vec<String> {
    let mut fds: Vec<String> = fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(Result::ok)
        .map(|e| {
            let target =
                fs::read_link(e.path()).map_or_else(|e| e.to_string(), |p| p.display().to_string());
            format!("{} -> {target}", e.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    fds
}

/// Asserts that exactly `expected` descriptors are open.
#[track_caller]
fn assert_fds(expected: usize, what: &str) {
    let now = fd_count();
    assert!(
        now == expected,
        "{what}: {now} descriptors open, expected {expected}:\n{}",
        fd_list().join("\n")
    );
}

#[test]
fn no_descriptor_leaks() {
    let scope = Scope::new();
    let ns = scope.ns("a");
    host_create(&format!("{ns}seg"), b"0123456789");

    // Warm up everything that opens a descriptor once per process: the
    // engine, the modules, shmgate's handle on /dev/shm, a trap.
    {
        let mut guest = Guest::new(scope.full("a").build().unwrap());
        let h = guest.open_ok(b"seg", RDONLY);
        assert_eq!(guest.close(h), 0);
        let mut bare = Guest::of_kind(scope.full("a").build().unwrap(), GuestKind::NoMemory);
        assert!(bare.try_open_raw(0, 3, RDONLY, 0).is_err());
        let _ = Guest::of_kind(scope.full("a").build().unwrap(), GuestKind::MemoryMisnamed);
        let mut comp = abi::Comp::new(scope.full("a").build().unwrap());
        let h = abi::Abi::open(&mut comp, b"seg", RDONLY, 0o600);
        abi::Abi::close(&mut comp, h.unwrap().unwrap());
        assert!(comp.forged_size(12345).is_err(), "a forged handle traps");
    }
    let baseline = fd_count();

    ten_thousand_cycles(&scope, baseline);
    store_drop_closes_everything(&scope, baseline);
    hostile_calls_keep_nothing(&scope, baseline);
    many_stores(&scope, baseline);
    hostile_table_keeps_nothing(baseline);
    component_store_drop_closes_everything(&scope, baseline);
    assert_fds(baseline, "at the end");
}

/// 10,000 open/close cycles on one store: one descriptor while a handle is
/// open, none after, the handle table stays at one slot, and every stale
/// handle stays dead.
fn ten_thousand_cycles(scope: &Scope, baseline: usize) {
    let ns = scope.ns("a");
    let mut guest = Guest::new(scope.full("a").max_created(10_000).build().unwrap());
    let mut first = None;
    for i in 0..10_000u32 {
        let h = match i % 10 {
            // A create and an unlink every tenth cycle.
            9 => {
                let name = format!("cycle-{i}");
                let h = guest.open_ok(name.as_bytes(), RDWR | CREATE | EXCL);
                assert_eq!(guest.unlink(name.as_bytes()), 0);
                h
            }
            n if n % 2 == 0 => guest.open_ok(b"seg", RDONLY),
            _ => guest.open_ok(b"seg", RDWR | CREATE),
        };
        assert_eq!(h & 0xffff, 0, "cycle {i}: the table grew (handle {h:#x})");
        let first = *first.get_or_insert(h);
        if i % 1000 == 0 {
            assert_fds(baseline + 1, &format!("cycle {i}, handle open"));
        }
        assert_eq!(guest.close(h), 0, "cycle {i}");
        if i > 0 {
            assert_errno(guest.size(first), Errno::BADF, "the first, stale handle");
        }
    }
    assert_eq!(guest.ctx().open_handles(), 0);
    assert_fds(baseline, "after 10,000 cycles");
    assert_eq!(
        guest.ctx().created().count(),
        0,
        "every create was unlinked"
    );
    assert!(
        !scope
            .entries()
            .iter()
            .any(|n| n.starts_with(format!("{ns}cycle-").as_bytes()))
    );
    assert_unharmed(&mut guest, scope, "a", &[]);
    drop(guest);
    assert_fds(baseline, "after the cycling store");
}

/// Handles still open when the store drops are closed, with and without
/// `auto_unlink`.
fn store_drop_closes_everything(scope: &Scope, baseline: usize) {
    let ns = scope.ns("a");
    for auto_unlink in [false, true] {
        let policy = scope.full("a").auto_unlink(auto_unlink).build().unwrap();
        let mut guest = Guest::new(policy);
        for i in 0..20 {
            let _ = match i % 3 {
                0 => guest.open_ok(b"seg", RDONLY),
                1 => guest.open_ok(b"seg", RDWR),
                _ => guest.open_ok(format!("drop-{i}").as_bytes(), RDWR | CREATE | EXCL),
            };
        }
        assert_eq!(guest.ctx().open_handles(), 20);
        assert_fds(baseline + 20, "20 handles open");
        drop(guest);
        assert_fds(baseline, "after dropping a store with 20 open handles");
        assert_eq!(exists(format!("{ns}drop-2")), !auto_unlink);
        for i in (2..20).step_by(3) {
            let _ = fs::remove_file(shm_path(format!("{ns}drop-{i}")));
        }
    }
}

/// Failing calls of every kind, many times over, keep no descriptor; that
/// includes opens that fail after the kernel opened something (a directory
/// or FIFO planted in the namespace) and traps.
fn hostile_calls_keep_nothing(scope: &Scope, baseline: usize) {
    let ns = scope.ns("a");
    fs::create_dir(shm_path(format!("{ns}dir"))).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        shm_path(format!("{ns}fifo")),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    symlink("/etc/passwd", shm_path(format!("{ns}link"))).unwrap();
    symlink("/nonexistent/shmgate", shm_path(format!("{ns}dangling"))).unwrap();

    let policy = scope
        .full("a")
        .max_handles(4)
        .max_created(0)
        .build()
        .unwrap();
    let mut guest = Guest::new(policy);
    let read_only_policy = ShmPolicy::builder()
        .namespace(&ns)
        .read_only(true)
        .build()
        .unwrap();
    let mut read_only = Guest::new(read_only_policy);
    let mut bare = Guest::of_kind(scope.full("a").build().unwrap(), GuestKind::NoMemory);
    let held: Vec<i32> = (0..3).map(|_| guest.open_ok(b"seg", RDWR)).collect();
    let h = held[0];
    let page = wasm_i32(PAGE);
    let fds = baseline + held.len();

    for round in 0..300 {
        // Planted objects: the kernel opens the directory and the FIFO,
        // then shmgate refuses them; symlinks are never followed.
        for flags in [RDONLY, RDWR, RDWR | CREATE] {
            assert_errno(guest.open(b"dir", flags), Errno::INVAL, "dir");
            assert_errno(guest.open(b"fifo", flags), Errno::INVAL, "fifo");
            assert_errno(guest.open(b"link", flags), Errno::LOOP, "link");
            assert_errno(guest.open(b"dangling", flags), Errno::LOOP, "dangling");
        }
        assert_errno(guest.open(b"missing", RDONLY), Errno::NOENT, "missing");
        assert_errno(guest.open(b"missing", RDWR | CREATE), Errno::DQUOT, "quota");
        assert_errno(
            guest.open(b"seg", RDWR | CREATE | EXCL),
            Errno::DQUOT,
            "quota",
        );
        assert_errno(guest.open(b"../x", RDONLY), Errno::INVAL, "name");
        assert_errno(
            guest.open(&[b'n'; 300], RDONLY),
            Errno::NAMETOOLONG,
            "300 bytes",
        );
        assert_errno(guest.open(b"seg", 0x40), Errno::INVAL, "flags");
        assert_errno(guest.open_mode(b"seg", RDONLY, 0o4600), Errno::PERM, "mode");
        assert_errno(guest.open_raw(-1, 2, RDONLY, 0), Errno::FAULT, "wrapping");
        assert_errno(
            guest.open_raw(0, i32::MIN, RDONLY, 0),
            Errno::FAULT,
            "i32::MIN",
        );
        assert_errno(guest.read_raw(h, 0, page, 1), Errno::FAULT, "read");
        assert_errno(guest.write_raw(h, 0, 0, -1), Errno::FAULT, "write");
        assert_errno(guest.read_raw(h, -1, 0, 1), Errno::INVAL, "offset");
        assert_errno(guest.close(-1), Errno::BADF, "forged");
        assert_errno(guest.size(h | 0x1_0000), Errno::BADF, "stale");
        assert_errno(
            read_only.open(b"seg", RDWR | TRUNC),
            Errno::ACCES,
            "read-only",
        );
        assert_errno(read_only.unlink(b"seg"), Errno::ACCES, "unlink");
        // Fill the handle quota, hit it, and give the handle back.
        let extra = guest.open_ok(b"seg", RDONLY);
        assert_errno(guest.open(b"seg", RDONLY), Errno::MFILE, "quota");
        assert_eq!(guest.close(extra), 0);
        assert!(bare.try_open_raw(0, 3, RDONLY, 0).is_err(), "trap");
        assert!(bare.try_read_raw(0, 0, 0, 1).is_err(), "trap");
        if round % 50 == 0 {
            assert_fds(fds, &format!("hostile round {round}"));
        }
    }
    assert_fds(fds, "after the hostile rounds");
    assert_eq!(contents(format!("{ns}seg")), b"0123456789");
    for h in held {
        assert_eq!(guest.close(h), 0);
    }
    assert_fds(baseline, "hostile handles closed");
    drop((guest, read_only, bare));
    assert_fds(baseline, "hostile stores dropped");
}

/// Many stores alive at once, each with a few handles, then all dropped.
fn many_stores(scope: &Scope, baseline: usize) {
    let mut guests: Vec<Guest> = (0..50)
        .map(|_| Guest::new(scope.full("a").build().unwrap()))
        .collect();
    for guest in &mut guests {
        for _ in 0..5 {
            let _ = guest.open_ok(b"seg", RDONLY);
        }
    }
    assert_fds(baseline + 250, "50 stores with 5 handles each");
    guests.truncate(25);
    assert_fds(baseline + 125, "25 stores dropped");
    drop(guests);
    assert_fds(baseline, "every store dropped");
}

/// The hostile-case table through both ABIs keeps no descriptor.
fn hostile_table_keeps_nothing(baseline: usize) {
    let (ran, _) = table::run_table(|p| Box::new(abi::Core::new(p)));
    assert!(ran > 0);
    assert_fds(baseline, "the table through shmgate_v1");
    let (ran, _) = table::run_table(|p| Box::new(abi::Comp::new(p)));
    assert!(ran > 0);
    assert_fds(baseline, "the table through shmgate:shm");
}

/// A component's segments still open when its store drops are closed
/// (they are handles of the same table), with and without `auto_unlink`.
fn component_store_drop_closes_everything(scope: &Scope, baseline: usize) {
    use abi::Abi;
    let ns = scope.ns("a");
    for auto_unlink in [false, true] {
        let policy = scope.full("a").auto_unlink(auto_unlink).build().unwrap();
        let mut comp = abi::Comp::new(policy);
        for i in 0..20 {
            let r = match i % 3 {
                0 => comp.open(b"seg", RDONLY, 0o600),
                1 => comp.open(b"seg", RDWR, 0o600),
                _ => comp.open(format!("cdrop-{i}").as_bytes(), RDWR | CREATE | EXCL, 0o600),
            };
            r.expect("expressible").expect("open");
        }
        assert_eq!(comp.ctx().open_handles(), 20);
        assert_fds(baseline + 20, "a component with 20 segments open");
        drop(comp);
        assert_fds(baseline, "after dropping a component's store");
        assert_eq!(exists(format!("{ns}cdrop-2")), !auto_unlink);
        for i in (2..20).step_by(3) {
            let _ = fs::remove_file(shm_path(format!("{ns}cdrop-{i}")));
        }
    }
}
