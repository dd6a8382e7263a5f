//! shmgate-host against glibc and plain `memcpy`, in one run.
//!
//! - `open_existing`: [`shmgate_host::open`] (`RDONLY`) and drop, and the
//!   managed [`Segment::open_read_only`] (which takes the holder lock, an
//!   `F_OFD_SETLK`) and drop, against glibc's `shm_open(O_RDONLY)` and
//!   `close`.
//! - `open_create_unlink`: `open(RDWR | CREATE | EXCL)`, drop and
//!   [`shmgate_host::unlink`], against `shm_open(O_RDWR | O_CREAT | O_EXCL)`,
//!   `close` and `shm_unlink`.
//! - `create_sized_unlink`: create, size to 4 KiB, close, unlink: glibc's
//!   `shm_open` + `ftruncate`; shmgate's `open` + [`Segment::set_len`] (the
//!   same two steps, not atomic); and shmgate's atomic
//!   [`Segment::create_new`] (`O_TMPFILE`, `ftruncate`, creator lock,
//!   `linkat`), which publishes the name only once it is sized.
//! - `write_1MiB` / `read_1MiB`: [`Segment::write_at`] and
//!   [`Segment::read_at`] (`pwrite`/`pread`), and the bounds-checked
//!   [`Mapping`] copies, against a plain `copy_nonoverlapping` into or out
//!   of a mapping of the same segment.
//!
//! Every name is unique to the process and removed at the end, also when a
//! benchmark panics. Run with `cargo bench -p shmgate-host --bench host`.

use std::ffi::CString;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shmgate_host::{Mapping, Mode, OFlags, Segment};

/// Size of the read/write benchmarks.
const MIB: usize = 1 << 20;

/// A name unique to this process and benchmark, removed (whoever created
/// it) when dropped.
struct Name {
    name: String,
    c_name: CString,
}

impl Name {
    fn new(what: &str) -> Name {
        let name = format!("/shmgate-bench-{}-{what}", std::process::id());
        let c_name = CString::new(name.clone()).expect("no NUL in the name");
        // A stale object from a crashed run with the same pid goes first.
        let _ = shmgate_host::unlink(&name);
        Name { name, c_name }
    }
}

impl Drop for Name {
    fn drop(&mut self) {
        // Usually already gone (ENOENT); ignore it.
        let _ = shmgate_host::unlink(&self.name);
    }
}

/// glibc's `shm_open`; panics on failure.
fn glibc_open(name: &CString, oflag: libc::c_int) -> libc::c_int {
    // SAFETY: `name` is a valid NUL-terminated string that outlives the
    // call; shm_open takes no other pointers.
    let fd = unsafe { libc::shm_open(name.as_ptr(), oflag, 0o600) };
    assert!(fd >= 0, "shm_open: {}", std::io::Error::last_os_error());
    fd
}

/// `close(fd)` of an fd from [`glibc_open`].
fn glibc_close(fd: libc::c_int) {
    // SAFETY: `fd` came from a successful shm_open and is closed once.
    let r = unsafe { libc::close(fd) };
    debug_assert_eq!(r, 0);
}

fn bench_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open_existing");
    let name = Name::new("open");
    let _owner = Segment::create_new(&name.name, 4096).expect("create the segment");

    group.bench_function("glibc", |b| {
        b.iter(|| glibc_close(black_box(glibc_open(&name.c_name, libc::O_RDONLY))))
    });
    group.bench_function("shmgate", |b| {
        b.iter(|| {
            let seg = shmgate_host::open(black_box(&name.name), OFlags::RDONLY, Mode::OWNER_RW);
            drop(black_box(seg.expect("open")));
        })
    });
    group.bench_function("shmgate_managed", |b| {
        b.iter(|| {
            let seg = Segment::open_read_only(black_box(&name.name));
            drop(black_box(seg.expect("open")));
        })
    });
    group.finish();
}

fn bench_create(c: &mut Criterion) {
    let mut group = c.benchmark_group("open_create_unlink");
    let name = Name::new("create");

    group.bench_function("glibc", |b| {
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
        b.iter(|| {
            glibc_close(black_box(glibc_open(&name.c_name, flags)));
            // SAFETY: `name.c_name` is a valid NUL-terminated string.
            let r = unsafe { libc::shm_unlink(name.c_name.as_ptr()) };
            assert_eq!(r, 0, "shm_unlink: {}", std::io::Error::last_os_error());
        })
    });
    group.bench_function("shmgate", |b| {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
        b.iter(|| {
            let seg = shmgate_host::open(black_box(&name.name), flags, Mode::OWNER_RW);
            drop(black_box(seg.expect("create")));
            shmgate_host::unlink(&name.name).expect("unlink");
        })
    });
    group.finish();
}

fn bench_create_sized(c: &mut Criterion) {
    let mut group = c.benchmark_group("create_sized_unlink");
    let name = Name::new("sized");
    const SIZE: u64 = 4096;

    group.bench_function("glibc_create_then_size", |b| {
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
        b.iter(|| {
            let fd = glibc_open(&name.c_name, flags);
            // SAFETY: `fd` is open (glibc_open checked it).
            let r = unsafe { libc::ftruncate(fd, SIZE as libc::off_t) };
            assert_eq!(r, 0, "ftruncate: {}", std::io::Error::last_os_error());
            glibc_close(black_box(fd));
            // SAFETY: `name.c_name` is a valid NUL-terminated string.
            let r = unsafe { libc::shm_unlink(name.c_name.as_ptr()) };
            assert_eq!(r, 0, "shm_unlink: {}", std::io::Error::last_os_error());
        })
    });
    group.bench_function("shmgate_create_then_size", |b| {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL;
        b.iter(|| {
            let seg =
                shmgate_host::open(black_box(&name.name), flags, Mode::OWNER_RW).expect("create");
            seg.set_len(SIZE).expect("set_len");
            drop(black_box(seg));
            shmgate_host::unlink(&name.name).expect("unlink");
        })
    });
    group.bench_function("shmgate_atomic", |b| {
        b.iter(|| {
            let seg = Segment::create_new(black_box(&name.name), SIZE).expect("create");
            drop(black_box(seg));
            shmgate_host::unlink(&name.name).expect("unlink");
        })
    });
    group.finish();
}

/// A 1 MiB segment with every page written (so no benchmark pays for
/// allocating tmpfs pages) and a read-write mapping of it.
fn rw_segment(name: &Name) -> (Segment, Mapping) {
    let seg = Segment::create_new(&name.name, MIB as u64).expect("create");
    seg.write_all_at(&vec![0x5a; MIB], 0).expect("fill");
    let map = seg.map().expect("map");
    assert_eq!(map.len(), MIB);
    let mut check = vec![0; MIB];
    map.read_at(0, &mut check).expect("read");
    assert!(
        check.iter().all(|&b| b == 0x5a),
        "the mapping shows the fill"
    );
    (seg, map)
}

fn bench_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("write_1MiB");
    group.throughput(Throughput::Bytes(MIB as u64));
    let name = Name::new("write");
    let (seg, map) = rw_segment(&name);
    let src = vec![0xa5u8; MIB];

    group.bench_function("memcpy_into_mapping", |b| {
        b.iter(|| {
            // SAFETY: the mapping is MIB bytes long and writable (checked in
            // `rw_segment`) and lives until the end of this function; `src`
            // is a Rust buffer of MIB bytes and cannot overlap it. Nothing
            // else touches the segment during the benchmark.
            unsafe {
                std::ptr::copy_nonoverlapping(black_box(src.as_ptr()), map.as_mut_ptr(), MIB)
            };
            black_box(map.as_ptr());
        })
    });
    group.bench_function("shmgate_segment_write_at", |b| {
        b.iter(|| {
            let n = seg.write_at(black_box(&src), 0).expect("write_at");
            debug_assert_eq!(n, MIB);
            black_box(n)
        })
    });
    group.bench_function("shmgate_mapping_write_at", |b| {
        b.iter(|| map.write_at(0, black_box(&src)).expect("write_at"))
    });
    group.finish();
}

fn bench_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_1MiB");
    group.throughput(Throughput::Bytes(MIB as u64));
    let name = Name::new("read");
    let (seg, map) = rw_segment(&name);
    let mut dst = vec![0u8; MIB];

    group.bench_function("memcpy_from_mapping", |b| {
        b.iter(|| {
            // SAFETY: the mapping is MIB bytes long (checked in `rw_segment`)
            // and lives until the end of this function; `dst` is a Rust
            // buffer of MIB bytes and cannot overlap it.
            unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), dst.as_mut_ptr(), MIB) };
            black_box(&mut dst);
        })
    });
    group.bench_function("shmgate_segment_read_at", |b| {
        b.iter(|| {
            let n = seg.read_at(black_box(&mut dst), 0).expect("read_at");
            debug_assert_eq!(n, MIB);
            black_box(n)
        })
    });
    group.bench_function("shmgate_mapping_read_at", |b| {
        b.iter(|| {
            map.read_at(0, black_box(&mut dst)).expect("read_at");
            black_box(&mut dst);
        })
    });
    group.finish();
}

/// `Mapping::read_at` of 4 KiB (the truncation check, two atomic loads,
/// is a larger share of a small copy) against `memcpy`.
fn bench_read_small(c: &mut Criterion) {
    const SMALL: usize = 4096;
    let mut group = c.benchmark_group("read_4KiB");
    group.throughput(Throughput::Bytes(SMALL as u64));
    let name = Name::new("read-small");
    let (_seg, map) = rw_segment(&name);
    let mut dst = vec![0u8; SMALL];
    group.bench_function("memcpy_from_mapping", |b| {
        b.iter(|| {
            // SAFETY: the mapping is MIB >= SMALL bytes long (checked in
            // `rw_segment`) and lives until the end of this function; `dst`
            // is a Rust buffer of SMALL bytes and cannot overlap it.
            unsafe { std::ptr::copy_nonoverlapping(map.as_ptr(), dst.as_mut_ptr(), SMALL) };
            black_box(&mut dst);
        })
    });
    group.bench_function("shmgate_mapping_read_at", |b| {
        b.iter(|| {
            map.read_at(0, black_box(&mut dst)).expect("read_at");
            black_box(&mut dst);
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_read_small,
    bench_open,
    bench_create,
    bench_create_sized,
    bench_write,
    bench_read
);
criterion_main!(benches);
