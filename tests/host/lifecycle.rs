//! The creator lock and orphan removal (`shmgate_host::lifecycle`), against
//! creators that live, exit, or are killed with `SIGKILL`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use shmgate_core::{Errno, Mode, OFlags};
use shmgate_host::lifecycle::{self, Removal};
use shmgate_host::{Identity, OpenOptions, Segment};

use crate::common::{Cleanup, Probe, TestResult, errno_of, exists, ident_of_name, shm_path, spawn};

/// A probe holding a segment; killed (and reaped) on drop if the test
/// did not end it.
struct Holder(Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a probe that creates `name` and holds it; returns once the
/// segment exists.
fn holder(name: &str) -> Holder {
    let mut child = spawn(
        Probe::same_user()
            .command(["hold", name, "4096"])
            .stdin(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped stdout"))
        .read_line(&mut line)
        .expect("reading the probe");
    let holder = Holder(child);
    assert_eq!(line.trim(), "ok", "the holder could not create {name}");
    holder
}

fn identity_of(name: &str) -> Identity {
    let (dev, ino) = ident_of_name(name);
    Identity::new(dev, ino)
}

/// A creator killed with `SIGKILL` leaves an orphan: its lock is gone, and
/// `unlink_if_orphaned` removes it.
#[test]
fn killed_creator_leaves_an_orphan() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let mut child = holder(&name);
    assert!(lifecycle::creator_alive(&name)?);
    let id = identity_of(&name);
    assert_eq!(
        lifecycle::unlink_if_orphaned(&name, id)?,
        Removal::CreatorAlive
    );
    child.0.kill()?; // SIGKILL
    child.0.wait()?;
    assert!(!lifecycle::creator_alive(&name)?);
    assert_eq!(lifecycle::unlink_if_orphaned(&name, id)?, Removal::Removed);
    assert!(!exists(&shm_path(&name)));
    Ok(())
}

/// A live creator keeps its segment: the lock is held while the process
/// lives, and released when it exits normally.
#[test]
fn live_creator_is_alive_until_it_exits() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let mut child = holder(&name);
    let status = lifecycle::inspect(&name)?;
    assert!(status.creator_alive);
    assert_eq!(status.identity, identity_of(&name));
    drop(child.0.stdin.take()); // EOF: the probe exits
    child.0.wait()?;
    assert!(!lifecycle::creator_alive(&name)?);
    Ok(())
}

/// A name re-created between the listing (which recorded the identity)
/// and the removal is left alone, whether its new creator lives or not.
#[test]
fn recreated_name_is_left_alone() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    drop(Segment::create_new(&name, 4096)?); // an orphan at listing time
    let listed = identity_of(&name);
    assert!(!lifecycle::creator_alive(&name)?);
    // Someone removes it and creates a new one under the same name.
    shmgate_host::unlink(&name)?;
    let newcomer = Segment::create_new(&name, 4096)?;
    let newcomer_id = newcomer.identity()?;
    drop(newcomer); // even an orphan newcomer is not what was listed
    assert_ne!(newcomer_id, listed);
    assert_eq!(
        lifecycle::unlink_if_orphaned(&name, listed)?,
        Removal::Changed
    );
    assert!(!lifecycle::unlink_if_same(&name, listed)?);
    assert!(exists(&shm_path(&name)));
    assert_eq!(identity_of(&name), newcomer_id);
    Ok(())
}

/// A mapping made through the creator's descriptor keeps the lock after
/// the descriptor is closed; a duplicate of the descriptor does too.
#[test]
fn mappings_and_duplicates_keep_the_lock() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let seg = OpenOptions::new().create_new(true).size(4096).open(&name)?;
    let map = seg.map()?;
    drop(seg);
    assert!(
        lifecycle::creator_alive(&name)?,
        "the mapping holds the lock"
    );
    drop(map);
    assert!(!lifecycle::creator_alive(&name)?);
    shmgate_host::unlink(&name)?;

    let seg = OpenOptions::new().create_new(true).open(&name)?;
    let dup = std::os::fd::AsFd::as_fd(&seg).try_clone_to_owned()?;
    drop(seg);
    assert!(
        lifecycle::creator_alive(&name)?,
        "the duplicate holds the lock"
    );
    drop(dup);
    assert!(!lifecycle::creator_alive(&name)?);
    Ok(())
}

/// A plain open (no create) takes no lock, nor does the bare `open` (the
/// exact `shm_open`) when it creates; an object created by glibc has none
/// either; a name that is not a regular file is refused.
#[test]
fn only_managed_creates_take_the_lock() -> TestResult {
    let mut cleanup = Cleanup::new();
    let bare = cleanup.name();
    let seg = shmgate_host::open(
        &bare,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        Mode::OWNER_RW,
    )?;
    assert!(!lifecycle::creator_alive(&bare)?);
    drop(seg);
    let name = cleanup.name();
    let path = shm_path(&name);
    std::fs::write(&path, b"made without shmgate")?;
    let _reader = Segment::open_read_write(&name)?;
    assert!(!lifecycle::creator_alive(&name)?);
    let missing = cleanup.name();
    assert_eq!(errno_of(lifecycle::creator_alive(&missing)), Errno::NOENT);
    let dir = cleanup.name();
    std::fs::create_dir(shm_path(&dir))?;
    assert_eq!(errno_of(lifecycle::creator_alive(&dir)), Errno::INVAL);
    let id = identity_of(&dir);
    assert_eq!(lifecycle::unlink_if_orphaned(&dir, id)?, Removal::Changed);
    Ok(())
}

/// Managed opens of an existing object (`Segment::open_read_only`,
/// `OpenOptions::open`) hold the holder lock for as long as their
/// descriptor or a mapping made through it lives; the bare `open` takes
/// none, but the kernel's lease test sees it; `unlink_if_orphaned` spares
/// the object while either holds it.
#[test]
fn managed_opens_hold_the_holder_lock() -> TestResult {
    let mut cleanup = Cleanup::new();
    let name = cleanup.name();
    let made = shmgate_host::open(
        &name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        Mode::OWNER_RW,
    )?;
    made.set_len(4096)?;
    drop(made);
    let id = identity_of(&name);
    let free = lifecycle::inspect(&name)?;
    assert!(!free.creator_alive && !free.holder_alive, "{free:?}");
    assert_eq!(free.open_elsewhere, Some(false));

    let bare = shmgate_host::open(&name, OFlags::RDONLY, Mode::OWNER_RW)?;
    let status = lifecycle::inspect(&name)?;
    assert!(
        !status.holder_alive,
        "the bare open takes no lock: {status:?}"
    );
    assert_eq!(status.open_elsewhere, Some(true));
    assert_eq!(
        lifecycle::unlink_if_orphaned(&name, id)?,
        Removal::OpenElsewhere
    );
    drop(bare);

    let reader = Segment::open_read_only(&name)?;
    assert!(lifecycle::inspect(&name)?.holder_alive);
    assert_eq!(
        lifecycle::unlink_if_orphaned(&name, id)?,
        Removal::HolderAlive
    );
    let map = reader.map()?;
    drop(reader);
    assert!(
        lifecycle::inspect(&name)?.holder_alive,
        "the mapping keeps it"
    );
    drop(map);
    assert!(!lifecycle::inspect(&name)?.holder_alive);

    let writer = OpenOptions::new().open(&name)?;
    assert!(lifecycle::inspect(&name)?.holder_alive);
    drop(writer);
    assert_eq!(lifecycle::unlink_if_orphaned(&name, id)?, Removal::Removed);
    assert!(!exists(&shm_path(&name)));
    Ok(())
}
