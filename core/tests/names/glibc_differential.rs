//! Differential test against the machine's glibc `shm_open`/`shm_unlink`.
//!
//! For generated names, shmgate's verdict must match glibc's wherever the
//! rules do not deliberately differ. The deliberate differences are rule 1
//! (NUL: glibc stops at it), rule 6 (`.`/`..`: glibc opens a directory),
//! rule 7 (control bytes: glibc accepts them) and the order of rules 4 and 5
//! (a long name with a slash: glibc says EINVAL, shmgate ENAMETOOLONG as
//! POSIX's test suite expects); those names are only checked for the
//! verdict, or not sent to glibc at all.

use std::ffi::CString;
use std::sync::atomic::{AtomicU32, Ordering};

use proptest::prelude::*;
use shmgate_core::{Errno, NameError, ShmName};

/// Opens with glibc and returns the errno, or `Ok` after closing and
/// unlinking what it created.
fn glibc_create(raw: &[u8]) -> Result<(), i32> {
    let c = CString::new(raw).expect("NUL names are not sent to glibc");
    // SAFETY: `c` is a valid NUL-terminated string for the call's duration.
    let fd = unsafe {
        libc::shm_open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
            0o600,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: `fd` was just returned by shm_open and is owned here.
    unsafe { libc::close(fd) };
    // SAFETY: as above, `c` is a valid C string.
    let rc = unsafe { libc::shm_unlink(c.as_ptr()) };
    assert_eq!(rc, 0, "cleaning up {c:?}");
    Ok(())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, so no test touches an object it
/// did not create.
fn unique_prefix() -> Vec<u8> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("shmgate-diff-{}-{n}-", std::process::id()).into_bytes()
}

fn body_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        8 => b'a'..=b'z',
        1 => Just(b'/'),
        1 => Just(b'.'),
        1 => 0x80u8..=0xff,
        1 => 0x20u8..0x7f,
    ]
}

/// Checks one raw name against glibc. `raw` never holds a NUL.
fn compare(raw: &[u8]) -> Result<(), TestCaseError> {
    let ours = ShmName::new(raw);
    let deliberate = matches!(ours, Err(NameError::Dot) | Err(NameError::Control(_)));
    if deliberate {
        return Ok(());
    }
    let theirs = glibc_create(raw);
    match (&ours, &theirs) {
        (Ok(_), Ok(())) => {}
        (Err(e), Err(errno)) => {
            let long_with_slash = *e == NameError::TooLong && *errno == libc::EINVAL;
            if !long_with_slash {
                prop_assert_eq!(Errno::from(*e).raw() as i32, *errno, "{:?}", raw);
            }
        }
        _ => prop_assert!(false, "shmgate {ours:?} vs glibc {theirs:?} for {raw:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Unique names with a generated tail of any length around NAME_MAX,
    /// behind any number of slashes.
    #[test]
    fn verdicts_match_glibc(
        slashes in 0usize..4,
        tail in prop::collection::vec(body_byte(), 0..260),
    ) {
        let mut raw = vec![b'/'; slashes];
        raw.extend(unique_prefix());
        raw.extend(tail);
        compare(&raw)?;
    }
}

/// The fixed cases around every boundary, against glibc.
#[test]
fn boundaries_match_glibc() {
    let prefix = unique_prefix();
    let mut cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"/".to_vec(),
        b"//".to_vec(),
        [&b"/"[..], &prefix].concat(),
        [&b"///"[..], &prefix, b"..."].concat(),
        [&prefix[..], b"/x"].concat(),
        [&b"../"[..], &prefix].concat(),
        vec![b'/'; 4096],
    ];
    for len in [254usize, 255, 256, 257, 261, 4096] {
        let mut name = unique_prefix();
        name.resize(len, b'z');
        cases.push(name.clone());
        cases.push([&b"/"[..], &name].concat());
    }
    for raw in cases {
        compare(&raw).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// The deliberate differences really are differences: glibc accepts what
/// shmgate refuses. (If glibc ever tightens, this tells us.)
#[test]
fn deliberate_differences_are_real() {
    // Rule 7: glibc creates a name with an escape byte.
    let mut raw = unique_prefix();
    raw.push(0x1b);
    assert_eq!(ShmName::new(&raw), Err(NameError::Control(0x1b)));
    assert_eq!(glibc_create(&raw), Ok(()));

    // Rule 6: glibc opens /dev/shm itself for ".".
    let c = c".";
    // SAFETY: `c` is a valid C string.
    let fd = unsafe { libc::shm_open(c.as_ptr(), libc::O_RDONLY, 0) };
    assert!(
        fd >= 0,
        "glibc refused \".\": {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` is ours.
    unsafe { libc::close(fd) };
    assert_eq!(ShmName::new(b"."), Err(NameError::Dot));
}
