//! `ShmName::new` + `ShmPath::new` against glibc's own name check, in one run.
//!
//! The baseline is what glibc's `__shm_get_name` does (glibc 2.34+,
//! `posix/shm-directory.c`): strip leading slashes, `strlen`, copy
//! `/dev/shm/` and the name with its NUL into a fixed buffer, `memchr` for
//! `/`. It calls the machine's own glibc `strlen` and `memchr`. shmgate does
//! strictly more (NUL, `.`/`..` and control bytes). Run with
//! `cargo bench -p shmgate-core --bench name`.

use std::ffi::{CStr, CString};
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use shmgate_core::{ShmName, ShmPath};

/// glibc's `__shm_get_name`, transcribed: returns the path length or an errno.
fn glibc_shm_get_name(name: &CStr, out: &mut [u8; 265]) -> Result<usize, i32> {
    let mut p = name.as_ptr();
    // SAFETY: `p` points into `name`, a NUL-terminated string; the loop
    // stops at the first byte that is not '/', at the latest at the NUL.
    unsafe {
        while *p == b'/' as libc::c_char {
            p = p.add(1);
        }
    }
    // SAFETY: `p` still points into `name` at or before its NUL.
    let namelen = unsafe { libc::strlen(p) };
    const DIR: &[u8] = b"/dev/shm/";
    out[..DIR.len()].copy_from_slice(DIR);
    let total = DIR.len() + namelen + 1;
    let fits = total <= out.len();
    if fits {
        // SAFETY: `p` is valid for `namelen + 1` bytes (the name and its
        // NUL), and `out` has room for them after `DIR` (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(
                p.cast::<u8>(),
                out.as_mut_ptr().add(DIR.len()),
                namelen + 1,
            )
        };
    }
    // SAFETY: `p` is valid for `namelen` bytes.
    let slash = unsafe { libc::memchr(p.cast(), b'/' as i32, namelen) };
    if namelen == 0 || !slash.is_null() {
        return Err(libc::EINVAL);
    }
    if !fits {
        return Err(if namelen > 255 {
            libc::ENAMETOOLONG
        } else {
            libc::EINVAL
        });
    }
    Ok(total - 1)
}

fn bench_names(c: &mut Criterion) {
    let mut group = c.benchmark_group("name");
    for len in [8usize, 255] {
        let raw: Vec<u8> = std::iter::once(b'/')
            .chain((0..len).map(|i| b"abcdefghijklmnopqrstuvwxyz"[i % 26]))
            .collect();
        let c_raw = CString::new(raw.clone()).unwrap();

        group.bench_with_input(BenchmarkId::new("glibc_baseline", len), &c_raw, |b, n| {
            let mut out = [0u8; 265];
            b.iter(|| {
                let r = glibc_shm_get_name(black_box(n), &mut out);
                black_box(&out);
                black_box(r)
            })
        });
        group.bench_with_input(BenchmarkId::new("shmgate", len), &raw, |b, n| {
            b.iter(|| {
                let path = ShmName::new(black_box(n)).map(|name| ShmPath::new(&name));
                black_box(&path);
            })
        });
        // The checks alone, without building the path.
        group.bench_with_input(BenchmarkId::new("shmgate_name_only", len), &raw, |b, n| {
            b.iter(|| black_box(ShmName::new(black_box(n)).is_ok()))
        });
        // The `CStr` view checks for the NUL (no unsafe in the core), so it
        // costs a scan of the path; measured on its own.
        let path = ShmPath::new(&ShmName::new(&raw).unwrap());
        group.bench_with_input(BenchmarkId::new("shmgate_as_c_str", len), &path, |b, p| {
            b.iter(|| black_box(black_box(p).as_c_str().as_ptr()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_names);
criterion_main!(benches);
