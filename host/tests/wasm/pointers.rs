//! Hostile pointers and lengths: every `(ptr, len)` a guest passes is read
//! as unsigned 32-bit and must lie inside its memory, or the call fails
//! with `EFAULT` without touching the segment or the memory. The only
//! trap is a guest that exports no `memory`.

use shmgate_core::Errno;

use crate::common::*;

/// `(ptr, len)` pairs that are not inside one page of memory: past the
/// end, wrapping around 2^32, and `-1`/`i32::MIN` lengths.
fn hostile_ranges() -> Vec<(i32, i32)> {
    let page = wasm_i32(PAGE);
    vec![
        (page, 1),
        (page - 1, 2),
        (page + 1, 0),
        (0, page + 1),
        (i32::MAX, 0),
        (i32::MAX, 1),
        (i32::MAX, i32::MAX),
        (-1, 0),
        (-1, 1),
        (-1, 2),                        // 0xffff_ffff + 2 wraps to 1 in 32 bits
        (0xffff_fff0_u32 as i32, 0x20), // wraps to 0x10
        (i32::MIN, 0),
        (i32::MIN, 16),
        (0, -1),
        (16, -1),
        (0, i32::MIN),
        (16, i32::MIN),
        (-1, -1),
        (i32::MIN, i32::MIN),
        (i32::MIN, i32::MAX), // 0x8000_0000 + 0x7fff_ffff: in u32, no wrap
    ]
}

#[test]
fn open_and_unlink_names_out_of_bounds_are_efault() {
    let scope = Scope::new();
    let outside = Sentinel::new(&scope, "x");
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    // Memory is all zeros but for a valid name at the start, so an
    // in-bounds misread would be a NUL (EINVAL) or a real name.
    guest.mem_write(0, b"valid");
    for (ptr, len) in hostile_ranges() {
        for flags in [RDONLY, RDWR | CREATE] {
            let ret = guest.open_raw(ptr, len, flags, 0o600);
            assert_errno(
                ret,
                Errno::FAULT,
                &format!("open ptr {ptr:#x} len {len:#x}"),
            );
        }
        let ret = guest.unlink_raw(ptr, len);
        assert_errno(
            ret,
            Errno::FAULT,
            &format!("unlink ptr {ptr:#x} len {len:#x}"),
        );
    }
    assert_eq!(scope.entries(), vec![outside.name().as_bytes().to_vec()]);
    assert_eq!(guest.ctx().open_handles(), 0);

    // A name that ends exactly at the end of memory is fine, and so is an
    // empty range at the end (EINVAL for the empty name, not EFAULT).
    let page = wasm_i32(PAGE);
    guest.mem_write(PAGE - 4, b"last");
    let h = handle(
        guest.open_raw(page - 4, 4, RDWR | CREATE, 0o600),
        "name at the end",
    );
    assert!(exists(format!("{}last", scope.ns("a"))));
    assert_eq!(guest.close(h), 0);
    assert_errno(
        guest.open_raw(page, 0, RDONLY, 0),
        Errno::INVAL,
        "empty at end",
    );
    assert_eq!(guest.unlink_raw(page - 4, 4), 0);
    assert_unharmed(&mut guest, &scope, "a", &[&outside]);
}

#[test]
fn read_and_write_buffers_out_of_bounds_are_efault() {
    let scope = Scope::new();
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let h = handle(guest.open(b"seg", RDWR | CREATE | EXCL), "create");
    assert_eq!(guest.set_size(h, 64), 0);
    let data: Vec<u8> = (0..64).collect();
    assert_eq!(guest.write_data(h, 0, &data), 64);
    let host_name = format!("{}seg", scope.ns("a"));

    // Canary the whole memory: a failed read must not write any of it.
    let canary = vec![0xa5; PAGE];
    guest.mem_write(0, &canary);
    for (ptr, len) in hostile_ranges() {
        for offset in [0, 8] {
            let what = format!("ptr {ptr:#x} len {len:#x} offset {offset}");
            let ret = guest.read_raw(h, offset, ptr, len);
            assert_errno(ret, Errno::FAULT, &format!("read {what}"));
            let ret = guest.write_raw(h, offset, ptr, len);
            assert_errno(ret, Errno::FAULT, &format!("write {what}"));
        }
    }
    assert_eq!(guest.mem_read(0, PAGE), canary, "guest memory untouched");
    assert_eq!(contents(&host_name), data, "segment untouched");
    assert_eq!(guest.size(h), 64);

    // Ranges ending exactly at the end of memory work.
    let page = wasm_i32(PAGE);
    assert_eq!(guest.read_raw(h, 0, page - 16, 16), 16);
    assert_eq!(guest.mem_read(PAGE - 16, 16), data[..16]);
    assert_eq!(guest.read_raw(h, 0, page, 0), 0, "empty read at the end");
    assert_eq!(guest.write_raw(h, 48, page - 16, 16), 16);
    assert_eq!(guest.write_raw(h, 0, page, 0), 0, "empty write at the end");
    let mut expected = data.clone();
    expected[48..].copy_from_slice(&data[..16]);
    assert_eq!(contents(&host_name), expected);

    assert_eq!(guest.close(h), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn bounds_follow_memory_growth() {
    let scope = Scope::new();
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    let h = handle(guest.open(b"seg", RDWR | CREATE | EXCL), "create");
    assert_eq!(guest.set_size(h, 8), 0);
    assert_eq!(guest.write_data(h, 0, b"12345678"), 8);
    let page = wasm_i32(PAGE);

    assert_errno(guest.read_raw(h, 0, page, 8), Errno::FAULT, "before grow");
    guest.grow(1);
    assert_eq!(guest.read_raw(h, 0, page, 8), 8, "after grow");
    assert_eq!(guest.mem_read(PAGE, 8), b"12345678");
    assert_errno(
        guest.read_raw(h, 0, 2 * page - 4, 8),
        Errno::FAULT,
        "new end",
    );
    assert_eq!(guest.close(h), 0);
    assert_unharmed(&mut guest, &scope, "a", &[]);
}

#[test]
fn guest_without_memory_traps_only_where_memory_is_needed() {
    let scope = Scope::new();
    let outside = Sentinel::new(&scope, "x");
    host_create(&format!("{}seg", scope.ns("a")), b"data");

    for kind in [GuestKind::NoMemory, GuestKind::MemoryMisnamed] {
        let mut guest = Guest::of_kind(scope.full("a").build().unwrap(), kind);
        let what = format!("{kind:?}");
        assert_memory_trap(guest.try_open_raw(0, 3, RDONLY, 0), &format!("{what} open"));
        assert_memory_trap(guest.try_unlink_raw(0, 3), &format!("{what} unlink"));
        assert_memory_trap(guest.try_read_raw(0, 0, 0, 0), &format!("{what} read"));
        assert_memory_trap(guest.try_write_raw(0, 0, 0, 0), &format!("{what} write"));
        // The calls that take no guest memory answer normally, and the
        // store keeps answering after the traps.
        assert_errno(guest.try_close(0).unwrap(), Errno::BADF, "close");
        assert_errno(guest.try_size(0).unwrap(), Errno::BADF, "size");
        assert_errno(guest.try_set_size(0, 1).unwrap(), Errno::BADF, "set_size");
        assert_memory_trap(guest.try_open_raw(0, 3, RDONLY, 0), "open again");
        assert_eq!(guest.ctx().open_handles(), 0);
    }
    assert_eq!(contents(format!("{}seg", scope.ns("a"))), b"data");
    outside.assert_intact();

    // A guest with memory in the same engine is unaffected.
    let mut guest = Guest::new(scope.full("a").build().unwrap());
    assert_unharmed(&mut guest, &scope, "a", &[&outside]);
}
