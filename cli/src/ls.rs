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
                        (not a regular file, or not readable by you)
  orphaned    bool      a regular file whose creator_alive is false and
                        that no listed process has open or mapped: what
                        `shmgate rm --orphaned` removes
Holders are matched by device and inode, so a mapping of an unlinked
object (\"(deleted)\" in /proc/PID/maps) is never attributed to a new
object of the same name. Processes whose /proc entries cannot be read
(other users', without root) are not listed.";

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
    // Creator locks first: each test opens the object for a moment, and
    // those descriptors are closed again before /proc is scanned.
    let creators: Vec<Option<bool>> = entries.iter().map(devshm::creator_alive).collect();
    let devices: BTreeSet<u64> = entries.iter().map(|e| e.meta.dev()).collect();
    let holders = devshm::holders(&devices);
    let users = devshm::users();
    let objects: Vec<(Object, &Entry)> = entries
        .iter()
        .zip(creators)
        .map(|(entry, creator_alive)| {
            let id = devshm::id(&entry.meta);
            let pids = |map: &std::collections::BTreeMap<_, BTreeSet<u32>>| {
                map.get(&id)
                    .map(|p| p.iter().copied().collect())
                    .unwrap_or_default()
            };
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
                orphaned: devshm::is_orphaned(entry, creator_alive, &holders),
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
        "OPEN BY",
        "MAPPED BY",
        "NAME",
    ];
    let mut rows: Vec<[String; 9]> = vec![header.map(str::to_owned)];
    for (o, entry) in objects {
        rows.push([
            o.kind.to_owned(),
            o.mode.clone(),
            o.size.to_string(),
            o.user.clone().unwrap_or_else(|| o.uid.to_string()),
            o.mtime.clone(),
            match (o.creator_alive, o.orphaned) {
                (Some(true), _) => "alive",
                (_, true) => "orphaned",
                (Some(false), false) => "gone",
                (None, _) => "?",
            }
            .to_owned(),
            pids(&o.open_by),
            pids(&o.mapped_by),
            devshm::escape(&entry.name),
        ]);
    }
    let mut widths = [0; 9];
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
                8 => line.push_str(cell),
                _ => line.push_str(&format!("{cell:<w$}  ")),
            }
        }
        let _ = writeln!(out, "{line}");
    }
}
