//! `shmgate_host::Error` on real failures: its `Display`, accessors and the
//! conversion into `std::io::Error` keep the operation, the name exactly as
//! passed (leading slashes included) and the errno.

use std::io;

use shmgate_core::{Errno, Mode, OFlags};
use shmgate_host::{Error, Op, OpenOptions, Segment, open, unlink};

use crate::common::{Cleanup, TestResult};

/// Opens `name` read-only through a function returning `io::Result`, so
/// that `?` does the conversion.
fn open_io(name: &str) -> io::Result<Segment> {
    Ok(Segment::open_read_only(name)?)
}

/// A missing object: `open "/name": no such file or directory (ENOENT)`,
/// and as an `io::Error`, raw OS error 2 and `NotFound`.
#[test]
fn enoent_keeps_the_name_as_passed() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    for spelling in [format!("/{name}"), name.clone(), format!("//{name}")] {
        let err: Error = Segment::open_read_only(&spelling).unwrap_err();
        assert_eq!(err.op(), Op::Open);
        assert_eq!(err.errno(), Errno::NOENT);
        assert_eq!(err.name(), spelling.as_bytes());
        assert_eq!(
            err.to_string(),
            format!(r#"open "{spelling}": no such file or directory (ENOENT)"#)
        );

        let io = open_io(&spelling).unwrap_err();
        assert_eq!(io.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(io.kind(), io::ErrorKind::NotFound);

        let err = unlink(&spelling).unwrap_err();
        assert_eq!(err.op(), Op::Unlink);
        assert_eq!(err.name(), spelling.as_bytes());
        assert_eq!(
            err.to_string(),
            format!(r#"unlink "{spelling}": no such file or directory (ENOENT)"#)
        );
    }
    Ok(())
}

/// `EEXIST` on a real object and `EINVAL` from a resize of a read-only
/// segment: the operation is named and the raw OS error kept.
#[test]
fn other_errors_name_the_operation() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let slashed = format!("/{name}");
    let _seg = OpenOptions::new()
        .create_new(true)
        .size(4096)
        .open(&slashed)?;

    let err = open(
        &slashed,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        Mode::OWNER_RW,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(r#"open "{slashed}": file exists (EEXIST)"#)
    );
    let io = io::Error::from(err);
    assert_eq!(io.raw_os_error(), Some(libc::EEXIST));
    assert_eq!(io.kind(), io::ErrorKind::AlreadyExists);

    let ro = Segment::open_read_only(&slashed)?;
    let err = ro.set_len(0).unwrap_err();
    assert_eq!(err.op(), Op::SetLen);
    assert_eq!(err.name(), slashed.as_bytes());
    assert_eq!(
        err.to_string(),
        format!(r#"set_len "{slashed}": invalid argument (EINVAL)"#)
    );
    Ok(())
}

/// A name with a control byte is refused, and shown escaped so it cannot
/// forge a log line; the raw bytes are kept in `name()`.
#[test]
fn hostile_name_is_escaped() {
    let raw = "/evil\x1b[31m\nline";
    let err = open(raw, OFlags::RDWR | OFlags::CREATE, Mode::OWNER_RW).unwrap_err();
    assert_eq!(err.errno(), Errno::INVAL);
    assert_eq!(err.name(), raw.as_bytes());
    assert_eq!(
        err.to_string(),
        r#"open "/evil\u{1b}[31m\nline": invalid argument (EINVAL)"#
    );
    let io = io::Error::from(err);
    assert_eq!(io.raw_os_error(), Some(libc::EINVAL));
    assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
}
