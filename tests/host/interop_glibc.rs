//! Interoperability with glibc's `shm_open`/`shm_unlink`, `ftruncate` and
//! `mmap`: an object created by one side is opened, read and written by the
//! other, and removed by either.

use std::os::fd::AsFd;

use shmgate_core::{Errno, Mode, OFlags};
use shmgate_host::{OpenOptions, Segment, open, unlink};

use crate::common::{Cleanup, TestResult, errno_of, file_of, ident, shm_path};
use crate::sys::{self, Map};

/// shmgate creates and writes (with `pwrite` and through its own mapping);
/// glibc opens the object under both spellings, sees the size and the data
/// through `mmap`, and writes back; shmgate reads that; glibc's
/// `shm_unlink` removes it for shmgate too.
#[test]
fn shmgate_creates_glibc_opens() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let seg = OpenOptions::new().create_new(true).size(8192).open(&name)?;
    seg.write_all_at(b"written by shmgate", 0)?;
    seg.map()?.write_at(5000, b"mapped by shmgate")?;

    for spelling in [format!("/{name}"), name.clone()] {
        let fd = sys::shm_open(&spelling, libc::O_RDWR, 0)
            .map_err(|e| format!("glibc shm_open({spelling}): {e}"))?;
        assert_eq!(ident(fd.as_fd()), ident(seg.as_fd()), "{spelling}");
        assert_eq!(file_of(fd.as_fd()).metadata()?.len(), 8192);
        let map = Map::new(fd.as_fd(), 8192, true)?;
        let mut buf = [0; 18];
        map.read(0, &mut buf);
        assert_eq!(&buf, b"written by shmgate");
        let mut buf = [0; 17];
        map.read(5000, &mut buf);
        assert_eq!(&buf, b"mapped by shmgate");
        map.write(100, spelling.as_bytes());
    }
    // The last write was through the name without a slash.
    let mut buf = vec![0; name.len()];
    seg.read_exact_at(&mut buf, 100)?;
    assert_eq!(buf, name.as_bytes());

    sys::shm_unlink(&format!("/{name}"))?;
    assert_eq!(errno_of(Segment::open_read_only(&name)), Errno::NOENT);
    assert!(!shm_path(&name).exists());
    Ok(())
}

/// glibc creates (`O_CREAT | O_EXCL`), sizes with `ftruncate` and writes
/// through `mmap`; shmgate opens it under both spellings, sees the size and
/// the data, writes back with `pwrite` and through its mapping; glibc's
/// mapping sees both; shmgate's unlink removes it for glibc too.
#[test]
fn glibc_creates_shmgate_opens() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let fd = sys::shm_open(
        &format!("/{name}"),
        libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
        0o600,
    )?;
    sys::ftruncate(fd.as_fd(), 8192)?;
    let map = Map::new(fd.as_fd(), 8192, true)?;
    map.write(0, b"written by glibc");

    for spelling in [name.clone(), format!("/{name}")] {
        let seg = Segment::open_read_write(&spelling)?;
        assert_eq!(ident(seg.as_fd()), ident(fd.as_fd()), "{spelling}");
        assert_eq!(seg.len()?, 8192);
        let mut buf = [0; 16];
        seg.read_exact_at(&mut buf, 0)?;
        assert_eq!(&buf, b"written by glibc");
    }
    let seg = open(&name, OFlags::RDWR, Mode::OWNER_RW)?;
    seg.write_all_at(b"pwritten by shmgate", 4000)?;
    seg.map_range(4096, 4096)?
        .write_at(904, b"mapped by shmgate")?;
    let mut buf = [0; 19];
    map.read(4000, &mut buf);
    assert_eq!(&buf, b"pwritten by shmgate");
    let mut buf = [0; 17];
    map.read(5000, &mut buf);
    assert_eq!(&buf, b"mapped by shmgate");

    unlink(&name)?;
    assert_eq!(
        sys::shm_open(&format!("/{name}"), libc::O_RDONLY, 0).err(),
        Some(Errno::NOENT)
    );
    // glibc's mapping outlives the name.
    let mut buf = [0; 16];
    map.read(0, &mut buf);
    assert_eq!(&buf, b"written by glibc");
    Ok(())
}
