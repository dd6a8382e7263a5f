//! `shmgate ls`: the objects in `/dev/shm`, their owners, whether their
//! creator is alive, and which processes have them open or mapped.
//!
//! `--json` prints the [`JSON_SCHEMA`] below: an array of objects, sorted
//! by name, one per directory entry.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;

use clap::Args;
use serde::Serialize;
use tracing::debug;

use crate::devshm::{self, Entry};
use crate::units::rfc3339;
use crate::{Failure, exit, write_stdout};

/// The `--json` format, shown by `shmgate ls --help`. Fields are only ever
/// added, never renamed or removed.
pub(crate) const JSON_SCHEMA: &str = "\
JSON (--json): an array, sorted by name, of objects with the fields
  name        string    the name, lossily decoded if it is not UTF-8
  name_bytes  string    the name's bytes in hex; present only when the
                        name is not UTF-8
  type        string    file (a shared memory object), symlink, dir,
                        fifo, socket, char-device, block-device or other;
                        entries are described, never followed
  size        integer   size in bytes (lstat)
  uid         integer   owner's uid
  user        string    owner's user name from /etc/passwd, or null
  mode        string    permission bits in octal, e.g. \"0600\"
  mtime       string    modification time, RFC 3339 UTC, e.g.
                        \"2024-05-01T12:30:00Z\"
  mtime_unix  integer   modification time, seconds since the Unix epoch
  open_by     [integer] pids with a descriptor open on it (/proc/*/fd)
  mapped_by   [integer] pids with it mapped (/proc/*/maps)
  creator_alive  bool or null
                        whether the process that created it through
                        shmgate still holds its descriptor or a mapping
                        of it (the creator lock, an F_OFD_SETLK read lock
                        on byte 2^63-2); false also for objects made
                        without shmgate; null when it cannot be tested
                        (not a regular file, a name shm_open refuses, or
                        not readable by you)
  holder_alive   bool or null
                        whether a process holds it through a managed open
                        (OpenOptions, a guest's handle or window, the CLI:
                        the holder lock, a read lock on byte 2^63-3), seen
                        from any PID namespace or container; null as for
                        creator_alive
  open_elsewhere bool or null
                        whether any process, in any PID namespace, has it
                        open or mapped: true when a lock is held, else as
                        the kernel tells by refusing a write lease
                        (F_SETLEASE, taken and dropped at once on objects
                        nobody has open); null when no lease
                        can be taken: you neither own it nor have
                        CAP_LEASE, or leases are disabled
  status      string    in-use (a lock, a descriptor or a mapping holds
                        it), orphaned (proven free), unknown (nobody is
                        seen to hold it, but the check is incomplete) or
                        skipped (not a shared memory object shmgate
                        touches: a directory, FIFO, symlink, socket,
                        device, or a name shm_open's rules refuse)
  reason      string    why, for in-use, unknown and skipped; else \"\"
  orphaned    bool      status is orphaned: what `shmgate rm --orphaned`
                        removes
Holders are matched by device and inode, whatever path a process opened
or mapped an object through (a bind mount, /run/shm, a chroot, a
container sharing the tmpfs), and a mapping of an unlinked object
(\"(deleted)\" in /proc/PID/maps) is never attributed to a new object of
the same name.
What ls cannot know: /proc shows only the processes of its own PID
namespace, and without root, other users' and non-dumpable processes
cannot be read; nothing shows other hosts or VMs sharing the memory. An
object is orphaned only if no lock is held, no process /proc shows has
it open or mapped, and either the kernel granted the write lease (nobody
has it open, in any namespace) or every process could be read. Else it
is unknown, and ls says so on stderr too. Where no lease can be taken, a
holder in another PID namespace is seen only through the holder lock of
shmgate's managed opens (the bare shmgate_host::open, glibc's shm_open
and Python take none).";

/// List the objects in /dev/shm and the processes that hold them.
///
/// For each entry: type, mode, size, owner, modification time, and the
/// processes that have it open or mapped. Entries that are not regular
/// files (symlinks, FIFOs, directories) are listed, never followed.
#[derive(Args, Debug)]
#[command(
    after_help = "Example: shmgate ls --json | jq '.[] | select(.open_by == [])'",
    after_long_help = format!(
        "{JSON_SCHEMA}\n\nExample: shmgate ls\nExample: shmgate ls --json | jq '.[] | select(.open_by == [])'"
    )
)]
pub(crate) struct LsArgs {
    /// Print JSON for scripts (the schema is below) instead of a table.
    #[arg(long)]
    json: bool,
}

/// One listed entry: the `--json` schema.
#[derive(Serialize, Debug)]
struct Object {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_bytes: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    uid: u32,
    user: Option<String>,
    mode: String,
    mtime: String,
    mtime_unix: i64,
    open_by: Vec<u32>,
    mapped_by: Vec<u32>,
    creator_alive: Option<bool>,
    holder_alive: Option<bool>,
    open_elsewhere: Option<bool>,
    status: &'static str,
    reason: String,
    orphaned: bool,
}

/// Lists `/dev/shm`.
pub(crate) fn ls(args: &LsArgs) -> Result<u8, Failure> {
    let entries = devshm::scan().map_err(|e| {
        Failure::new(
            exit::NOINPUT,
            format!("cannot read {}: {e}", devshm::SHM_DIR),
        )
    })?;
    debug!(entries = entries.len(), "read {}", devshm::SHM_DIR);
    // Locks first: each test opens the object for a moment, and those
    // descriptors are closed again before /proc is scanned.
    let locks: Vec<devshm::Locks> = entries.iter().map(devshm::locks).collect();
    let devices: BTreeSet<u64> = entries.iter().map(|e| e.meta.dev()).collect();
    let holders = devshm::holders(&devices);
    let users = devshm::users();
    let objects: Vec<(Object, &Entry)> = entries
        .iter()
        .zip(locks)
        .map(|(entry, locks)| {
            let id = devshm::id(&entry.meta);
            let pids = |map: &std::collections::BTreeMap<_, BTreeSet<u32>>| {
                map.get(&id)
                    .map(|p| p.iter().copied().collect())
                    .unwrap_or_default()
            };
            let (creator_alive, holder_alive, open_elsewhere) = match locks {
                devshm::Locks::Tested {
                    creator,
                    holder,
                    open_elsewhere,
                } => (Some(creator), Some(holder), open_elsewhere),
                _ => (None, None, None),
            };
            let verdict = devshm::verdict(entry, locks, &holders);
            let object = Object {
                name: String::from_utf8_lossy(&entry.name).into_owned(),
                name_bytes: std::str::from_utf8(&entry.name)
                    .is_err()
                    .then(|| devshm::hex(&entry.name)),
                kind: devshm::kind(entry.meta.file_type()),
                size: entry.meta.size(),
                uid: entry.meta.uid(),
                user: users.get(&entry.meta.uid()).cloned(),
                mode: format!("{:04o}", entry.meta.mode() & 0o7777),
                mtime: rfc3339(entry.meta.mtime()),
                mtime_unix: entry.meta.mtime(),
                open_by: pids(&holders.open),
                mapped_by: pids(&holders.mapped),
                creator_alive,
                holder_alive,
                open_elsewhere,
                status: verdict.word(),
                reason: verdict.reason().to_owned(),
                orphaned: verdict == devshm::Verdict::Orphaned,
            };
            (object, entry)
        })
        .collect();

    let mut out = Vec::new();
    if args.json {
        let list: Vec<&Object> = objects.iter().map(|(o, _)| o).collect();
        serde_json::to_writer_pretty(&mut out, &list)
            .map_err(|e| Failure::new(exit::SOFTWARE, format!("JSON: {e}")))?;
        out.push(b'\n');
    } else {
        table(&mut out, &objects);
    }
    write_stdout(&out)?;
    let unknown = objects
        .iter()
        .filter(|(o, _)| o.status == "unknown")
        .count();
    if unknown > 0 {
        let why = holders
            .incomplete()
            .unwrap_or_else(|| "their locks cannot be tested without read permission".into());
        eprintln!(
            "shmgate: ls: {unknown} object(s) unknown, not orphaned: {why}; running as root (in the host's PID namespace) would decide"
        );
    }
    Ok(0)
}

/// Writes the table: one row per object, the name last (it is the one
/// column of unbounded width).
fn table(out: &mut Vec<u8>, objects: &[(Object, &Entry)]) {
    let pids = |p: &[u32]| {
        if p.is_empty() {
            "-".to_owned()
        } else {
            p.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    let header = [
        "TYPE",
        "MODE",
        "SIZE",
        "OWNER",
        "MODIFIED (UTC)",
        "CREATOR",
        "STATUS",
        "OPEN BY",
        "MAPPED BY",
        "NAME",
    ];
    let mut rows: Vec<[String; 10]> = vec![header.map(str::to_owned)];
    for (o, entry) in objects {
        rows.push([
            o.kind.to_owned(),
            o.mode.clone(),
            o.size.to_string(),
            o.user.clone().unwrap_or_else(|| o.uid.to_string()),
            o.mtime.clone(),
            match o.creator_alive {
                Some(true) => "alive",
                Some(false) => "gone",
                None => "?",
            }
            .to_owned(),
            o.status.to_owned(),
            pids(&o.open_by),
            pids(&o.mapped_by),
            devshm::escape(&entry.name),
        ]);
    }
    let mut widths = [0; 10];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            match i {
                // The size is a number: right-aligned.
                2 => line.push_str(&format!("{cell:>w$}  ")),
                9 => line.push_str(cell),
                _ => line.push_str(&format!("{cell:<w$}  ")),
            }
        }
        let _ = writeln!(out, "{line}");
    }
}
