//! Atomic creation: a segment created with a size (and contents) is never
//! seen by anyone before it is complete, and keeps exact `CREATE | EXCL`
//! semantics.

use std::os::unix::fs::symlink;
use std::process::Stdio;

use shmgate_core::Errno;
use shmgate_host::{Error, OpenOptions, Segment};

use crate::common::{
    Cleanup, Probe, TestResult, errno_of, exists, mode_of, root_or_skip, shm_path, spawn, verdict,
};

const SIZE: usize = 256 * 1024;

/// A probe process opens the name in a loop while this test creates it
/// with 256 KiB of contents, removes it and creates it again: every open
/// the probe makes fails with `ENOENT` or shows the whole contents, never
/// an empty, short or half-written object.
#[test]
fn concurrent_opener_sees_nothing_or_everything() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let contents = vec![0xa7u8; SIZE];
    let mut child = spawn(
        Probe::same_user()
            .command(["hammer", &name, &SIZE.to_string(), "167"])
            .stdin(Stdio::null()),
    );
    let mut rounds = 0;
    while child.try_wait()?.is_none() {
        let seg = Segment::create_new_with(&name, SIZE as u64, &contents)?;
        shmgate_host::unlink(&name)?;
        drop(seg);
        rounds += 1;
    }
    let out = child.wait_with_output()?;
    assert_eq!(verdict(&out), Ok(()), "after {rounds} creates");
    Ok(())
}

/// The same through `OpenOptions::size` with `create_new`, and an `init`
/// callback that fails: nothing is left behind and the error is `init`'s.
#[test]
fn failed_init_leaves_nothing() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let err = OpenOptions::new()
        .create_new(true)
        .size(4096)
        .open_with(&name, |seg| {
            seg.write_all_at(b"half", 0)?;
            Err(std::io::Error::other("the init failed"))
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "the init failed");
    assert!(!exists(&shm_path(&name)));
    // Contents longer than the size: EFBIG, nothing published.
    let r = Segment::create_new_with(&name, 4, b"too long");
    assert_eq!(errno_of(r), Errno::FBIG);
    assert!(!exists(&shm_path(&name)));
    Ok(())
}

/// Exact `CREATE | EXCL`: an existing object or a planted (dangling)
/// symlink under the name is `EEXIST`, and neither is touched.
#[test]
fn atomic_create_is_exclusive() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let first = Segment::create_new_with(&name, 4096, b"first")?;
    let r = Segment::create_new_with(&name, 8192, b"second");
    assert_eq!(errno_of(r), Errno::EXIST);
    let mut buf = [0; 5];
    first.read_exact_at(&mut buf, 0)?;
    assert_eq!(&buf, b"first");
    assert_eq!(first.len()?, 4096);

    let link = cleanup.name();
    let outside = cleanup.outside_dir().join("target");
    symlink(&outside, shm_path(&link))?;
    let r = Segment::create_new(&link, 4096);
    assert_eq!(errno_of(r), Errno::EXIST);
    assert!(!exists(&outside), "created through a symlink");
    Ok(())
}

/// `create(true)` with a size: creates atomically when the name is free,
/// opens (and resizes) what is there otherwise; `init` runs only for the
/// create. The mode is the requested one, less the umask (0o022 at most in
/// the test environment, so 0o640 stays 0o640 or loses group bits only).
#[test]
fn create_or_open_with_size() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let mut runs = 0;
    let mut opts = OpenOptions::new();
    opts.create(true)
        .size(4096)
        .mode(shmgate_host::Mode::from_bits(0o600)?);
    let seg = opts.open_with(&name, |seg| {
        runs += 1;
        seg.write_all_at(b"init", 0)
    })?;
    let _: &Segment = &seg;
    assert_eq!(mode_of(&name), 0o600);
    let again = opts.open_with(&name, |_| {
        runs += 1;
        Ok::<(), Error>(())
    })?;
    assert_eq!(runs, 1);
    let mut buf = [0; 4];
    again.read_exact_at(&mut buf, 0)?;
    assert_eq!(&buf, b"init");
    drop((seg, again));
    Ok(())
}

/// The other process's view: a probe that opens right after the create
/// returns finds the contents (the name was published complete).
#[test]
fn contents_are_there_for_another_process() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let _seg = Segment::create_new_with(&name, 4096, b"ready")?;
    let flags = shmgate_core::OFlags::RDONLY.bits().to_string();
    Probe::same_user().run(["open", &name, &flags, "600"])?;
    Ok(())
}

/// Atomic creation's temporary-name route (taken where `/proc` is not
/// mounted: here a mount namespace with a tmpfs over `/proc`): during the
/// initialisation the temporary entry has an unguessable name and mode 0,
/// so another user cannot open it (`EACCES`) although the final mode
/// (0644) would let them read; after the initialisation fails, neither the
/// temporary name nor the name is left.
#[test]
fn temp_name_route_is_private_and_leaves_nothing() {
    if !root_or_skip("temp_name_route_is_private_and_leaves_nothing") {
        return;
    }
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let other = Probe::nobody(&mut cleanup);
    let probe = env!("CARGO_BIN_EXE_shmgate-probe");
    let script = format!(
        "mount -t tmpfs none /proc && exec {probe} create-private {name} {}",
        other.path().display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("running unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{report}");
    let temp = lines[0].strip_prefix("temp ").expect("a temp line");
    let (temp_name, mode) = temp.split_once(' ').expect("name and mode");
    let random = temp_name
        .strip_prefix(".shmgate-new-")
        .unwrap_or_else(|| panic!("the temporary-name route was not taken: {report}"));
    assert!(
        random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit()),
        "a guessable temporary name: {report}"
    );
    assert_eq!(mode, "0", "{report}");
    assert_eq!(lines[1], "other err 13 EACCES", "{report}");
    assert_eq!(lines[2], "err 5 EIO", "{report}");
    assert!(!exists(&shm_path(temp_name)), "{temp_name} left behind");
    assert!(!exists(&shm_path(&name)), "{name} exists");
}
