//! Telling live segments from orphans, with no daemon: the creator lock,
//! and removing a name only while it still refers to a given object.
//!
//! # The creator lock
//!
//! Every segment created through shmgate's managed paths
//! ([`OpenOptions`](crate::OpenOptions), [`Segment::create_new`](crate::Segment::create_new),
//! [`OwnedSegment`](crate::OwnedSegment), wasm guests, the `shmgate`
//! command) carries an open-file-description read lock (`fcntl(F_OFD_SETLK)`)
//! on one byte far past any real size (offset `2^63 - 2`), taken on the
//! creator's own descriptor before the name is published (or, for a create
//! that cannot be atomic, right after the exclusive create: for those few
//! microseconds the name exists without the lock, but with the creator's
//! descriptor open, which `shmgate rm --orphaned` sees in `/proc`). The
//! bare [`open`](crate::open), shmgate's exact `shm_open`, takes none. The kernel drops it when the last
//! reference to that open file description goes away: every duplicate of
//! the descriptor closed *and* every mapping made through it unmapped, or
//! the process dead, `SIGKILL` included. [`creator_alive`] tests it from
//! another description with `F_OFD_GETLK`.
//!
//! So "creator alive" means a process still holds the creator's
//! descriptor or a mapping of it (a child that inherited the descriptor
//! counts). "Not alive" means the creator is gone *or* the object was
//! created by something else (glibc's `shm_open`, Python): to know whether
//! anyone else uses it, also look for processes with it open or mapped, as
//! `shmgate ls` and `shmgate rm --orphaned` do.
//!
//! # The holder lock
//!
//! Every managed open of an existing object (the same paths, except the
//! bare [`open`](crate::open)) takes the same kind of lock on the byte before
//! (offset `2^63 - 3`), and keeps it as long as its descriptor or a mapping
//! made through it lives. [`Status::holder_alive`] tests it. A lock lives in
//! the inode, so it is seen from every mount and PID namespace, every
//! container sharing the tmpfs, where `/proc` shows only the processes of
//! the inspector's own PID namespace. If another description holds a write
//! lock covering that byte (a whole-file `lockf`), the open goes on without
//! the holder lock: that lock is then seen instead.
//!
//! ## What the lock costs and what it can meet
//!
//! Taking it is one `fcntl` (about 1.2 µs on the development machine, where
//! a whole glibc create + size + close + unlink takes 9 µs). While it is
//! held, the object's inode has a lock context, so every `close` of any
//! descriptor of it, in any process, runs the kernel's POSIX-lock cleanup
//! (about 0.3 µs more per close there). It never meets a lock an
//! application takes on a range that ends before byte `2^63 - 2`; a
//! *whole-file* write lock (`lockf(F_LOCK)`, `F_SETLK` with `l_len` 0 and
//! `F_WRLCK`) does cover that byte and fails with `EAGAIN` (or waits, with
//! `F_SETLKW`) while the creator lives. `flock` locks are unaffected.
//!
//! The holder lock costs one more `fcntl` per managed open of an existing
//! object (measured against glibc's `shm_open` in `--bench host`,
//! `open_existing`), and the same `close` cleanup. Whole-file write locks
//! meet it as they meet the creator lock: they cover both bytes, so they
//! wait or fail while a managed open holds the object, the locking
//! process's own managed open included (OFD locks conflict with POSIX
//! locks of the same process); lock the data's range (`l_len` = the size)
//! or use `flock` instead. Conversely, a managed open that finds such a
//! write lock held goes on without its holder lock.
//!
//! # The unlink race
//!
//! Linux has no "unlink this name only if it refers to this inode". The
//! best is to check and unlink in two back-to-back system calls, which
//! [`unlink_if_same`] does: the check goes through a descriptor opened
//! with `O_PATH | O_NOFOLLOW`, which pins the inode (its number cannot be
//! freed and reused while we compare) and needs no read permission. What
//! remains: between that check and the `unlink`, another process would
//! have to remove the name *and* create a new object under it; the
//! `unlink` then removes the newcomer's name (not its data: processes that
//! have it open keep it). The window is two system calls wide.
//!
//! # Examples
//!
//! ```
//! use shmgate_host::{OpenOptions, lifecycle};
//! # let name = format!("/shmgate-doc-lifecycle-{}", std::process::id());
//! let seg = OpenOptions::new().create_new(true).size(4096).open(&name)?;
//! assert!(lifecycle::creator_alive(&name)?); // our descriptor holds the lock
//! let id = seg.identity()?;
//! drop(seg); // the creator's description is gone: the lock with it
//! assert!(!lifecycle::creator_alive(&name)?);
//! assert_eq!(lifecycle::unlink_if_orphaned(&name, id)?, lifecycle::Removal::Removed);
//! # Ok::<(), shmgate_host::Error>(())
//! ```

use std::sync::Arc;

use shmgate_core::{Errno, Mode, OFlags};

use crate::segment::path_of;
use crate::sys;
use crate::{Error, Op, Segment};

pub use crate::segment::Identity;

fn check_err(name: &[u8]) -> impl FnOnce(Errno) -> Error + '_ {
    move |errno| Error::new(Op::Check, &Arc::from(name), errno)
}

/// What [`inspect`] found: which object the name refers to and whether its
/// creator lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The object the name referred to when it was opened.
    pub identity: Identity,
    /// Whether another open file description holds the creator lock.
    pub creator_alive: bool,
    /// Whether another open file description holds the holder lock: a
    /// process, in any PID namespace, opened the object through a managed
    /// path and still holds it (or a lock covers that byte).
    pub holder_alive: bool,
    /// Whether any other open file description has the object open or
    /// mapped, in any process and any PID namespace: `Some(true)` if a lock
    /// is held (a lock lives only as long as its description), else what a
    /// write lease says (`F_SETLEASE`, see [`inspect`]); `None` where a
    /// lease cannot be taken: this process neither owns the object nor has
    /// `CAP_LEASE`, or leases are disabled.
    pub open_elsewhere: Option<bool>,
}

/// Opens `name` read-only (`O_NOFOLLOW | O_NONBLOCK`, regular files only,
/// like [`open`](crate::open), taking no lock), tests its creator and
/// holder locks with `F_OFD_GETLK`, and whether anyone else has it open or
/// mapped by taking a write lease (`F_SETLEASE`) and dropping it at once:
/// the kernel grants one only while no other open file description of the
/// object exists, so this sees holders in every PID namespace, glibc's and
/// Python's included, but not which processes they are. While the lease is
/// held (two system calls), another process opening the object waits for
/// it or, with `O_NONBLOCK`, gets `EAGAIN`; only an object nobody has open
/// is ever leased.
///
/// # Errors
///
/// As [`open`](crate::open) (`ENOENT`, `EACCES` without read permission,
/// `ELOOP`, `EINVAL`); `Op::Check` errors from `fcntl`.
pub fn inspect(name: impl AsRef<[u8]>) -> Result<Status, Error> {
    let name = name.as_ref();
    let seg = crate::open(name, OFlags::RDONLY, Mode::OWNER_RW)?;
    status_of(&seg)
}

fn status_of(seg: &Segment) -> Result<Status, Error> {
    let identity = seg.identity()?;
    let creator_alive = sys::creator_lock_held(seg.fd()).map_err(check_err(seg.name()))?;
    let holder_alive = sys::holder_lock_held(seg.fd()).map_err(check_err(seg.name()))?;
    // A held lock is a live open file description: no lease needed.
    let open_elsewhere = if creator_alive || holder_alive {
        Some(true)
    } else {
        sys::open_elsewhere(seg.fd()).ok()
    };
    Ok(Status {
        identity,
        creator_alive,
        holder_alive,
        open_elsewhere,
    })
}

/// Whether a process still holds the creator's descriptor (or a mapping
/// made through it) of the object `name` refers to. See the
/// [module documentation](self) for what `false` means.
///
/// # Errors
///
/// As [`inspect`].
pub fn creator_alive(name: impl AsRef<[u8]>) -> Result<bool, Error> {
    inspect(name).map(|s| s.creator_alive)
}

/// What [`unlink_if_orphaned`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The name was removed.
    Removed,
    /// The name now refers to another object (or to no regular file): left
    /// alone.
    Changed,
    /// Its creator is alive: left alone.
    CreatorAlive,
    /// A managed open holds it (the holder lock): left alone.
    HolderAlive,
    /// Some process has it open or mapped (a write lease was refused):
    /// left alone.
    OpenElsewhere,
}

/// `unlink(name)` only if the name still refers to `identity`, checked
/// through an `O_PATH | O_NOFOLLOW` descriptor immediately before the
/// unlink. `Ok(false)` if it refers to something else (or is not a regular
/// file); the residual race is described in the
/// [module documentation](self#the-unlink-race).
///
/// # Errors
///
/// `ENOENT` if the name is gone; as [`unlink`](crate::unlink).
pub fn unlink_if_same(name: impl AsRef<[u8]>, identity: Identity) -> Result<bool, Error> {
    let name = name.as_ref();
    let unlink_err = |errno| Error::new(Op::Unlink, &Arc::from(name), errno);
    let path = path_of(name).map_err(unlink_err)?;
    let (_pin, current) = match sys::open_path(&path) {
        Ok(found) => found,
        Err(Errno::INVAL | Errno::LOOP) => return Ok(false),
        Err(e) => return Err(unlink_err(e)),
    };
    if Identity::new(current.dev, current.ino) != identity {
        return Ok(false);
    }
    sys::unlink(&path).map_err(unlink_err)?;
    Ok(true)
}

/// Removes `name` if it still refers to `identity` (the object a listing
/// found), neither that object's creator lock nor its holder lock is
/// held, and (where a lease can be taken, see [`inspect`]) no other process
/// has it open or mapped, re-checking all of them
/// right before the unlink; this is `shmgate rm --orphaned`'s last step.
/// A name re-created since the listing is [`Removal::Changed`] and left
/// alone.
///
/// Where no lease can be taken it does not look for other processes that
/// have the object open or mapped (that needs a scan of `/proc`, which the
/// caller does first).
///
/// # Errors
///
/// `ENOENT` if the name is gone; `EACCES` if the object cannot be opened
/// for reading (its lock cannot be tested, so it is not removed); as
/// [`unlink`](crate::unlink).
pub fn unlink_if_orphaned(name: impl AsRef<[u8]>, identity: Identity) -> Result<Removal, Error> {
    let name = name.as_ref();
    let unlink_err = |errno| Error::new(Op::Unlink, &Arc::from(name), errno);
    let path = path_of(name).map_err(unlink_err)?;
    // Pins what the name refers to now, without needing read permission.
    let (_pin, current) = match sys::open_path(&path) {
        Ok(found) => found,
        Err(Errno::INVAL | Errno::LOOP) => return Ok(Removal::Changed),
        Err(e) => return Err(unlink_err(e)),
    };
    if Identity::new(current.dev, current.ino) != identity {
        return Ok(Removal::Changed);
    }
    let seg = match crate::open(name, OFlags::RDONLY, Mode::OWNER_RW) {
        Ok(seg) => seg,
        Err(e) if matches!(e.errno(), Errno::NOENT | Errno::INVAL | Errno::LOOP) => {
            return Ok(Removal::Changed);
        }
        Err(e) => return Err(e),
    };
    let status = status_of(&seg)?;
    if status.identity != identity {
        return Ok(Removal::Changed);
    }
    if status.creator_alive {
        return Ok(Removal::CreatorAlive);
    }
    if status.holder_alive {
        return Ok(Removal::HolderAlive);
    }
    if status.open_elsewhere == Some(true) {
        return Ok(Removal::OpenElsewhere);
    }
    sys::unlink(&path).map_err(unlink_err)?;
    Ok(Removal::Removed)
}
