//! Native mappings survive a peer that shrinks their segment: the access
//! that the shrink cut off, and every checked access after it, is `ENXIO`;
//! the process, other mappings and the segment go on.

use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmgate_core::Errno;
use shmgate_host::{Mode, OpenOptions, Segment};

use crate::common::{Cleanup, errno_of, shm_path};

const LEN: usize = 1 << 20;

/// Shrinks `/dev/shm/<name>` to `len` bytes from another process.
fn truncate_elsewhere(name: &str, len: u64) {
    let status = Command::new("truncate")
        .args(["-s", &len.to_string()])
        .arg(shm_path(name))
        .status()
        .expect("running truncate(1)");
    assert!(status.success());
}

fn create(name: &str, len: u64) -> Segment {
    OpenOptions::new()
        .read_write(true)
        .create_new(true)
        .mode(Mode::OWNER_RW)
        .size(len)
        .open(name)
        .unwrap()
}

#[test]
fn shrunk_segment_revokes_the_mapping_not_the_process() {
    let mut cleanup = Cleanup::new();
    let (name, other) = (cleanup.name(), cleanup.name());
    let seg = create(&name, LEN as u64);
    let bystander = create(&other, 4096);
    let map = seg.map().unwrap();
    let keep = bystander.map().unwrap();
    map.write_at(LEN - 8, b"lastword").unwrap();
    keep.write_at(0, b"intact").unwrap();
    assert!(!map.is_revoked());

    truncate_elsewhere(&name, 4096);
    // The first page is still there, but the mapping's tail is not: the
    // access that hits the tail revokes the whole mapping.
    let mut buf = [0u8; 8];
    assert_eq!(errno_of(map.read_at(LEN - 8, &mut buf)), Errno::NXIO);
    assert!(map.is_revoked());
    assert_eq!(errno_of(map.read_at(0, &mut buf)), Errno::NXIO);
    assert_eq!(errno_of(map.write_at(0, b"x")), Errno::NXIO);
    assert_eq!(
        errno_of(map.fetch_add_u32(0, 1, Ordering::SeqCst)),
        Errno::NXIO
    );
    assert_eq!(errno_of(map.load_u32(0, Ordering::SeqCst)), Errno::NXIO);
    assert_eq!(errno_of(map.atomic_u32(0)), Errno::NXIO);

    // Nothing reached the segment; the other mapping is untouched.
    let mut head = [0xffu8; 4];
    seg.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, [0; 4]);
    let mut word = [0u8; 6];
    keep.read_at(0, &mut word).unwrap();
    assert_eq!(&word, b"intact");
    assert!(!keep.is_revoked());

    // Mapping again gives a working mapping of what is there now.
    let again = seg.map().unwrap();
    assert_eq!(again.len(), 4096);
    again.fetch_add_u32(0, 7, Ordering::SeqCst).unwrap();
    assert_eq!(again.load_u32(0, Ordering::SeqCst).unwrap(), 7);
    drop(map);
    let _ = shmgate_host::unlink(&other);
}

/// A peer process shrinks and regrows the segment in a loop while this
/// process reads, writes and adds through its mappings: every access is
/// either done or `ENXIO`, never a crash; a revoked mapping is replaced
/// by a new one.
#[test]
fn reads_and_writes_while_a_peer_shrinks_in_a_loop() {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let seg = create(&name, LEN as u64);
    let script = format!(
        "while :; do truncate -c -s 0 {p}; truncate -c -s {LEN} {p}; done",
        p = shm_path(&name).display()
    );
    let mut peer: Child = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let (mut done, mut revoked, mut map_attempts) = (0u64, 0u64, 0u64);
    let mut map = None;
    let mut buf = vec![0u8; 64 << 10];
    while Instant::now() < deadline {
        let Some(m) = map.as_ref() else {
            // ENXIO while the segment is short: try again.
            map = seg.map().ok().filter(|m| m.len() == LEN);
            map_attempts += 1;
            continue;
        };
        let at = (done % 256) as usize * 4096 % (LEN - buf.len());
        let r = match done % 3 {
            0 => m.read_at(at, &mut buf),
            1 => m.write_at(at, &buf),
            _ => m.fetch_add_u32(at, 1, Ordering::SeqCst).map(drop),
        };
        match r {
            Ok(()) => done += 1,
            Err(e) => {
                assert_eq!(e.errno(), Errno::NXIO, "{e}");
                assert!(m.is_revoked());
                revoked += 1;
                map = None;
            }
        }
    }
    let _ = peer.kill();
    let _ = peer.wait();
    println!("{done} accesses done, {revoked} revoked, {map_attempts} map attempts");
    assert!(done > 0, "no access ever completed");
    assert!(revoked > 0, "the peer never caught an access");
}

/// The process's virtual size in KiB (`VmSize`).
fn vm_size_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A segment whose size is not a page multiple: mapping and dropping it
/// many times leaves no address space behind (the alignment slack after a
/// partial last page is given back; each leak would be about 60 KiB).
#[test]
fn mapping_a_partial_page_leaks_nothing() {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let seg = create(&name, 100);
    let before = vm_size_kib();
    for _ in 0..5000 {
        let map = seg.map().unwrap();
        assert_eq!(map.len(), 100);
        map.write_at(99, b"x").unwrap();
    }
    let grown = vm_size_kib().saturating_sub(before);
    // Other tests of this binary run at the same time: allow them 100 MiB;
    // a leak would be about 300 MiB.
    assert!(grown < 100 << 10, "the address space grew by {grown} KiB");
}
