//! Data through guest memory: bytes written by the guest are what the host
//! reads in `/dev/shm` and the other way round, reads are short at the end
//! of a segment, writes never grow it, and bad offsets are refused.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use shmgate_core::Errno;

use crate::common::*;

#[test]
fn data_round_trips_through_guest_memory() {
    let scope = Scope::new();
    let host = format!("{}seg", scope.ns("a"));
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let h = guest.open_ok(b"seg", RDWR | CREATE | EXCL);
    assert_eq!(guest.set_size(h, 4096), 0);

    // Guest to host: every byte value, at an odd offset.
    let pattern: Vec<u8> = (0..=255).collect();
    assert_eq!(guest.write_data(h, 101, &pattern), 256);
    let file = contents(&host);
    assert_eq!(file.len(), 4096);
    assert_eq!(&file[101..357], pattern.as_slice());
    assert!(file[..101].iter().chain(&file[357..]).all(|&b| b == 0));

    // Host to guest, into a canaried buffer: only `len` bytes change.
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&host))
        .unwrap();
    f.write_all_at(b"from the host", 2000).unwrap();
    guest.mem_write(BUF_AT - 8, &[0xcc; 64]);
    let ret = guest.read_raw(h, 2000, wasm_i32(BUF_AT), 13);
    assert_eq!(ret, 13);
    assert_eq!(guest.mem_read(BUF_AT, 13), b"from the host");
    assert_eq!(guest.mem_read(BUF_AT - 8, 8), [0xcc; 8]);
    assert_eq!(guest.mem_read(BUF_AT + 13, 43), [0xcc; 43]);

    // A read-only handle of another store sees the same bytes.
    let mut reader = Guest::new(scope.full("a").build().unwrap());
    let r = reader.open_ok(b"seg", RDONLY);
    let (ret, got) = reader.read_data(r, 101, 256);
    assert_eq!(ret, 256);
    assert_eq!(got, pattern);
    assert_eq!(reader.close(r), 0);

    // Zero-length reads and writes are fine anywhere in memory.
    assert_eq!(guest.read_raw(h, 0, 0, 0), 0);
    assert_eq!(guest.write_raw(h, 0, 0, 0), 0);
    assert_eq!(guest.close(h), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn read_is_short_at_the_end() {
    let scope = Scope::new();
    let host = format!("{}seg", scope.ns("a"));
    host_create(&host, b"0123456789");
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let h = guest.open_ok(b"seg", RDONLY);

    guest.mem_write(BUF_AT, &[0xee; 32]);
    assert_eq!(guest.read_raw(h, 4, wasm_i32(BUF_AT), 16), 6);
    assert_eq!(guest.mem_read(BUF_AT, 6), b"456789");
    assert_eq!(
        guest.mem_read(BUF_AT + 6, 26),
        [0xee; 26],
        "past the short read"
    );
    for offset in [10, 11, 4096, 1 << 40, i64::MAX - 16] {
        assert_eq!(guest.read_data(h, offset, 16).0, 0, "offset {offset}");
    }
    assert_eq!(
        guest.read_raw(h, 0, 0, wasm_i32(PAGE)),
        10,
        "a page-sized buffer"
    );

    // The size can change under the guest; reads follow.
    OpenOptions::new()
        .write(true)
        .open(shm_path(&host))
        .unwrap()
        .set_len(4)
        .unwrap();
    assert_eq!(guest.size(h), 4);
    let (ret, got) = guest.read_data(h, 0, 16);
    assert_eq!((ret, got.as_slice()), (4, &b"0123"[..]));
    assert_eq!(guest.close(h), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn write_never_grows_the_segment() {
    let scope = Scope::new();
    let host = format!("{}seg", scope.ns("a"));
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let h = guest.open_ok(b"seg", RDWR | CREATE | EXCL);

    // An empty segment takes nothing.
    assert_eq!(guest.write_data(h, 0, b"abc"), 0);
    assert_eq!(file_len(&host), 0);

    assert_eq!(guest.set_size(h, 10), 0);
    assert_eq!(guest.write_data(h, 4, b"ABCDEFGHIJKLMNOP"), 6);
    assert_eq!(contents(&host), b"\0\0\0\0ABCDEF");
    for offset in [10, 11, 4096, 1 << 40, i64::MAX - 16] {
        assert_eq!(guest.write_data(h, offset, b"xyz"), 0, "offset {offset}");
    }
    assert_eq!(
        guest.write_raw(h, 0, 0, wasm_i32(PAGE)),
        10,
        "a page-sized buffer"
    );
    assert_eq!(guest.size(h), 10);
    assert_eq!(file_len(&host), 10);
    assert_eq!(guest.close(h), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn offsets_up_to_i64_max_are_accepted() {
    let scope = Scope::new();
    let host = format!("{}seg", scope.ns("a"));
    host_create(&host, b"0123456789");
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let h = guest.open_ok(b"seg", RDWR);

    // Negative offsets (EINVAL) and offset + len past i64::MAX
    // (EOVERFLOW) are rows of the `cases` table. Ending exactly at i64::MAX is allowed (and past the end: 0 bytes).
    assert_eq!(guest.read_data(h, i64::MAX - 4, 4).0, 0);
    assert_eq!(guest.write_data(h, i64::MAX - 4, b"edge"), 0);
    assert_eq!(guest.read_data(h, i64::MAX, 0).0, 0);

    assert_eq!(contents(&host), b"0123456789");
    assert_eq!(guest.close(h), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn an_unlinked_segment_stays_usable_through_its_handle() {
    let scope = Scope::new();
    let host = format!("{}seg", scope.ns("a"));
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let h = guest.open_ok(b"seg", RDWR | CREATE | EXCL);
    assert_eq!(guest.set_size(h, 8), 0);
    assert_eq!(guest.unlink(b"seg"), 0);
    assert!(!exists(&host));
    assert_errno(guest.open(b"seg", RDONLY), Errno::NOENT, "gone by name");
    // The object lives on while the handle is open, as with POSIX shm.
    assert_eq!(guest.write_data(h, 0, b"orphaned"), 8);
    let (ret, got) = guest.read_data(h, 0, 8);
    assert_eq!((ret, got.as_slice()), (8, &b"orphaned"[..]));
    assert_eq!(guest.size(h), 8);
    // A new segment under the name is a different object.
    let n = guest.open_ok(b"seg", RDWR | CREATE | EXCL);
    assert_eq!(guest.size(n), 0);
    assert_eq!(guest.close(h), 0);
    assert_eq!(guest.close(n), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}
