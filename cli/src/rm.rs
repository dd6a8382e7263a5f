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
/// --orphaned sees the creator lock that segments created through shmgate
/// carry (see `shmgate ls --help`); an object made without shmgate counts
/// as orphaned once no process has it open or mapped. Without root, other
/// users' processes are invisible in /proc, so run it as root for a
/// system-wide cleanup. Each name is re-checked right before removal: if
/// it was re-created since the listing, or its creator lock is held, it is
/// left alone ("skipped").
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
        if !entry.name.starts_with(prefix) || !entry.meta.is_file() {
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

/// `rm --orphaned`: lists, then removes each orphan only if the re-check
/// right before the unlink agrees.
fn rm_orphaned(prefix: &[u8], older_than: Option<Duration>, dry_run: bool) -> Result<u8, Failure> {
    let candidates: Vec<(Vec<u8>, Identity)> = by_prefix_entries(prefix, older_than)?;
    let mut out = Vec::new();
    let mut failed = false;
    for (name, identity) in candidates {
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
    Ok(if failed { exit::FAILURE } else { 0 })
}

/// The orphans under `prefix` (and at least `older_than` old), with the
/// identity the listing saw.
fn by_prefix_entries(
    prefix: &[u8],
    older_than: Option<Duration>,
) -> Result<Vec<(Vec<u8>, Identity)>, Failure> {
    let entries = listed(prefix, older_than)?;
    // As `ls`: creator locks first, then /proc (our own test descriptors
    // are closed by then).
    let creators: Vec<Option<bool>> = entries.iter().map(devshm::creator_alive).collect();
    let devices: BTreeSet<u64> = entries.iter().map(|e| e.meta.dev()).collect();
    let holders = devshm::holders(&devices);
    Ok(entries
        .into_iter()
        .zip(creators)
        .filter(|(entry, creator)| {
            let orphan = devshm::is_orphaned(entry, *creator, &holders);
            debug!(name = %devshm::escape(&entry.name), creator = ?creator, orphan, "orphan check");
            orphan
        })
        .map(|(entry, _)| {
            let identity = Identity::new(entry.meta.dev(), entry.meta.ino());
            (entry.name, identity)
        })
        .collect())
}
