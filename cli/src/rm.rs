//! `shmgate rm`: removes shared memory objects by name, the old ones
//! under a prefix, or the orphaned ones.
//!
//! `--orphaned` lists `/dev/shm` as `shmgate ls` does (creator locks, then
//! holders from `/proc`), and for each orphan calls
//! `shmgate_host::lifecycle::unlink_if_orphaned` with the identity the
//! listing saw: it re-checks, right before the unlink, that the name still
//! refers to that object (through an `O_PATH | O_NOFOLLOW` descriptor) and
//! that its creator lock is still free, so a name re-created in between is
//! left alone.
//!
//! For tests only, [`TEST_PAUSE_ENV`] makes `rm --orphaned` pause between
//! the listing and the first unlink.
//!
//! Every name goes through `shmgate_core`'s rules and every removal through
//! `shmgate_host::unlink` (an `unlinkat` relative to `/dev/shm`), so no name
//! can reach outside `/dev/shm`. Names are all checked before anything is
//! removed: one invalid name refuses the whole command.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime};

use std::collections::BTreeSet;

use clap::{ArgGroup, Args};
use shmgate_core::{Errno, ShmName};
use shmgate_host::Identity;
use shmgate_host::lifecycle::{self, Removal};
use tracing::{debug, info};

use crate::devshm;
use crate::units::parse_duration;
use crate::{Failure, exit, write_stdout};

/// Remove shared memory objects by name, by prefix and age, or orphaned ones.
///
/// Removes the NAMEs given, or with --prefix every object whose name
/// starts with PREFIX (and with --older-than, only those last modified at
/// least that long ago), or with --orphaned (optionally under --prefix)
/// every object whose creator is gone and that no process has open or
/// mapped. Prints each name removed.
///
/// --orphaned removes only objects proven free: no creator or holder lock
/// held (the locks shmgate's managed creates and opens take, seen from any
/// PID namespace; see `shmgate ls --help`), no process in /proc has it open
/// or mapped (matched by device and inode whatever path it used), and the
/// kernel grants a write lease on it, which it does only while nobody, in
/// any namespace, has it open or mapped. Where no lease can be taken (you
/// neither own the object nor have CAP_LEASE) and some process cannot be
/// inspected (without root: other users' and non-dumpable ones), objects
/// nobody is seen to hold are "not proven orphaned" and skipped, one line
/// each and a count at the end: run as root to decide. /proc cannot show processes of other PID namespaces or
/// other hosts sharing the tmpfs; only the locks reach those. Directories,
/// FIFOs, symlinks and names shm_open refuses are skipped, never followed
/// or removed. Each name is re-checked right before removal: if it was
/// re-created since the listing, or a lock is held, it is left alone
/// ("skipped"). --dry-run lists the same objects with the same verdicts.
///
/// Names follow shm_open's rules (one component, no '/', '.', '..', NUL or
/// control bytes, a leading '/' is dropped); if any NAME breaks them,
/// nothing is removed. Exit status: 0 if everything requested was removed,
/// 1 if some removal failed (one line each, with the name and the errno),
/// 64 for bad usage or an invalid name.
#[derive(Args, Debug)]
#[command(
    group(ArgGroup::new("select").required(true).multiple(true).args(["names", "prefix", "orphaned"])),
    after_help = "Example: shmgate rm myapp.frames myapp.audio\n\
                  Example: shmgate rm --older-than 1h --prefix shmgate-demo- --dry-run\n\
                  Example: shmgate rm --orphaned --prefix myapp. --dry-run"
)]
pub(crate) struct RmArgs {
    /// Names of the objects to remove (as passed to shm_open).
    #[arg(
        value_name = "NAME",
        value_parser = clap::value_parser!(OsString),
        conflicts_with_all = ["older_than", "prefix", "orphaned"]
    )]
    names: Vec<OsString>,
    /// Remove the objects whose names start with PREFIX ('' for all).
    #[arg(long, value_name = "PREFIX", value_parser = clap::value_parser!(OsString))]
    prefix: Option<OsString>,
    /// With --prefix: only objects last modified at least this long ago
    /// (30s, 10m, 1h, 2d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "prefix")]
    older_than: Option<Duration>,
    /// Remove only objects whose creator is gone and that no process has
    /// open or mapped (all of /dev/shm, or those under --prefix).
    #[arg(long)]
    orphaned: bool,
    /// Print what would be removed ("would remove NAME") and remove nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs `shmgate rm`.
pub(crate) fn rm(args: &RmArgs) -> Result<u8, Failure> {
    if args.orphaned {
        let prefix = args.prefix.as_ref().map_or(&b""[..], |p| p.as_bytes());
        return rm_orphaned(prefix, args.older_than, args.dry_run);
    }
    let targets = match &args.prefix {
        Some(prefix) => by_prefix(prefix.as_bytes(), args.older_than)?,
        None => by_name(&args.names)?,
    };
    let mut out = Vec::new();
    let mut failed = false;
    for name in &targets {
        let shown = devshm::escape(name);
        debug!(name = %shown, dry_run = args.dry_run, "removing");
        let result = if args.dry_run {
            // The same check as unlink's; then an lstat inside /dev/shm.
            ShmName::new(name).map_err(Errno::from).and_then(|_| {
                std::fs::symlink_metadata(devshm::path_of(name))
                    .map(|_| ())
                    .map_err(|e| errno_of(&e))
            })
        } else {
            shmgate_host::unlink(name).map_err(|e| e.errno())
        };
        match result {
            Ok(()) if args.dry_run => out.extend(format!("would remove {shown}\n").bytes()),
            Ok(()) => {
                info!(name = %shown, "removed");
                out.extend(format!("removed {shown}\n").bytes());
            }
            Err(errno) => {
                failed = true;
                eprintln!("shmgate: rm \"{shown}\": {errno}");
            }
        }
    }
    write_stdout(&out)?;
    Ok(if failed { exit::FAILURE } else { 0 })
}

/// The errno of an I/O error (`EIO` if it has none).
fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error()
        .and_then(|raw| u16::try_from(raw).ok())
        .map_or(Errno::IO, Errno::from_raw)
}

/// Checks every name before anything is removed.
fn by_name(names: &[OsString]) -> Result<Vec<Vec<u8>>, Failure> {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for name in names {
        match ShmName::new(name.as_bytes()) {
            Ok(n) => valid.push(n.as_bytes().to_vec()),
            Err(e) => invalid.push(format!(
                "rm \"{}\": {e} ({})",
                devshm::escape(name.as_bytes()),
                Errno::from(e).name()
            )),
        }
    }
    if let Some(last) = invalid.pop() {
        for line in invalid {
            eprintln!("shmgate: {line}");
        }
        return Err(Failure::new(
            exit::USAGE,
            format!("{last}; nothing removed"),
        ));
    }
    Ok(valid)
}

/// The regular files in `/dev/shm` whose names start with `prefix`, last
/// modified at least `older_than` ago: what `rm --prefix` and
/// `rm --orphaned` start from.
fn listed(prefix: &[u8], older_than: Option<Duration>) -> Result<Vec<devshm::Entry>, Failure> {
    let entries = devshm::scan().map_err(|e| {
        Failure::new(
            exit::NOINPUT,
            format!("cannot read {}: {e}", devshm::SHM_DIR),
        )
    })?;
    let now = SystemTime::now();
    let mut targets = Vec::new();
    for entry in entries {
        if !entry.name.starts_with(prefix) {
            continue;
        }
        if !entry.meta.is_file() {
            // Listed and skipped, never followed or removed (the same in a
            // dry run).
            let verdict = devshm::verdict(&entry, devshm::Locks::NotTested, &Default::default());
            eprintln!(
                "shmgate: rm \"{}\": skipped: {}",
                devshm::escape(&entry.name),
                verdict.reason()
            );
            continue;
        }
        let age = entry
            .meta
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .unwrap_or(Duration::ZERO);
        let old_enough = older_than.is_none_or(|limit| age >= limit);
        debug!(
            name = %devshm::escape(&entry.name),
            size = entry.meta.size(),
            age_secs = age.as_secs(),
            selected = old_enough,
            "candidate"
        );
        if old_enough {
            targets.push(entry);
        }
    }
    Ok(targets)
}

/// The names [`listed`] finds.
fn by_prefix(prefix: &[u8], older_than: Option<Duration>) -> Result<Vec<Vec<u8>>, Failure> {
    Ok(listed(prefix, older_than)?
        .into_iter()
        .map(|e| e.name)
        .collect())
}

/// The test-only seam of `rm --orphaned`: when this variable is set (and
/// it is no dry run), `rm` prints `shmgate: test pause` on stderr after the
/// listing and waits for a line on stdin before it removes anything, so
/// that a test can re-create a name between the listing and the unlink.
/// It changes nothing else; nothing but the tests sets it.
pub(crate) const TEST_PAUSE_ENV: &str = "SHMGATE_TEST_PAUSE_BEFORE_UNLINK";

/// `rm --orphaned`: lists every entry under `prefix` (and at least
/// `older_than` old), judges each as `shmgate ls` does, reports what it
/// skips and why (the same in a dry run), then removes each proven orphan
/// only if the re-check right before the unlink agrees.
fn rm_orphaned(prefix: &[u8], older_than: Option<Duration>, dry_run: bool) -> Result<u8, Failure> {
    let entries = selected(prefix, older_than)?;
    // As `ls`: locks first, then /proc (our own test descriptors are
    // closed by then).
    let locks: Vec<devshm::Locks> = entries.iter().map(devshm::locks).collect();
    let devices: BTreeSet<u64> = entries.iter().map(|e| e.meta.dev()).collect();
    let holders = devshm::holders(&devices);
    let mut orphans = Vec::new();
    let mut unknown = 0usize;
    let mut unreadable = false;
    for (entry, locks) in entries.into_iter().zip(locks) {
        let verdict = devshm::verdict(&entry, locks, &holders);
        let shown = devshm::escape(&entry.name);
        debug!(name = %shown, locks = ?locks, verdict = ?verdict, "orphan check");
        match verdict {
            devshm::Verdict::Orphaned => {
                let identity = Identity::new(entry.meta.dev(), entry.meta.ino());
                orphans.push((entry.name, identity));
            }
            devshm::Verdict::InUse(_) => {}
            devshm::Verdict::Skipped(why) => {
                eprintln!("shmgate: rm \"{shown}\": skipped: {why}");
            }
            devshm::Verdict::Unknown(why) => {
                unknown += 1;
                unreadable |= locks == devshm::Locks::Unreadable;
                eprintln!("shmgate: rm \"{shown}\": skipped: not proven orphaned: {why}");
            }
        }
    }
    if !dry_run && std::env::var_os(TEST_PAUSE_ENV).is_some() {
        eprintln!("shmgate: test pause");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
    let mut out = Vec::new();
    let mut failed = false;
    for (name, identity) in orphans {
        let shown = devshm::escape(&name);
        if dry_run {
            out.extend(format!("would remove {shown}\n").bytes());
            continue;
        }
        match lifecycle::unlink_if_orphaned(&name, identity) {
            Ok(Removal::Removed) => {
                info!(name = %shown, "removed");
                out.extend(format!("removed {shown}\n").bytes());
            }
            Ok(Removal::Changed) => {
                info!(name = %shown, "re-created since the listing");
                eprintln!("shmgate: rm \"{shown}\": skipped: re-created since the listing");
            }
            Ok(Removal::CreatorAlive) => {
                info!(name = %shown, "creator alive again");
                eprintln!("shmgate: rm \"{shown}\": skipped: its creator lock is held");
            }
            Ok(Removal::OpenElsewhere) => {
                info!(name = %shown, "opened again");
                eprintln!("shmgate: rm \"{shown}\": skipped: a process has it open or mapped");
            }
            Ok(Removal::HolderAlive) => {
                info!(name = %shown, "held again");
                eprintln!("shmgate: rm \"{shown}\": skipped: its holder lock is held");
            }
            Err(e) if e.errno() == Errno::NOENT => {
                debug!(name = %shown, "already gone");
            }
            Err(e) => {
                failed = true;
                eprintln!("shmgate: rm \"{shown}\": {}", e.errno());
            }
        }
    }
    write_stdout(&out)?;
    if unknown > 0 {
        let mut why = holders.incomplete().unwrap_or_default();
        if unreadable {
            if !why.is_empty() {
                why.push_str("; ");
            }
            why.push_str("some objects cannot be opened to test their locks");
        }
        eprintln!(
            "shmgate: rm --orphaned: skipped {unknown} object(s) not proven orphaned: {why}; \
             running as root in the host's PID namespace would decide"
        );
    }
    Ok(if failed { exit::FAILURE } else { 0 })
}

/// Every entry of `/dev/shm` (any type) whose name starts with `prefix`,
/// last modified at least `older_than` ago: what `rm --orphaned` judges.
fn selected(prefix: &[u8], older_than: Option<Duration>) -> Result<Vec<devshm::Entry>, Failure> {
    let entries = devshm::scan().map_err(|e| {
        Failure::new(
            exit::NOINPUT,
            format!("cannot read {}: {e}", devshm::SHM_DIR),
        )
    })?;
    let now = SystemTime::now();
    Ok(entries
        .into_iter()
        .filter(|entry| entry.name.starts_with(prefix))
        .filter(|entry| {
            let age = entry
                .meta
                .modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or(Duration::ZERO);
            older_than.is_none_or(|limit| age >= limit)
        })
        .collect())
}
