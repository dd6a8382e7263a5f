//! What is in `/dev/shm` and who holds it: the directory listing (never
//! following an entry), owners from `/etc/passwd`, and the processes that
//! have an object open or mapped according to `/proc`.
//!
//! Holders are matched by device and inode, not by name: a process that
//! still maps an object whose name was unlinked (`/proc/PID/maps` shows
//! `/dev/shm/NAME (deleted)`) is not counted as a holder of a new object
//! that was later created under the same name.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{FileType, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use shmgate_core::{Errno, ShmName};

/// Where POSIX shared memory objects live on Linux.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// One entry of `/dev/shm`, as `lstat` sees it.
pub(crate) struct Entry {
    /// The name as stored: any bytes but `/` and NUL.
    pub(crate) name: Vec<u8>,
    /// `symlink_metadata`: a symlink is described, never followed.
    pub(crate) meta: Metadata,
}

/// Reads `/dev/shm`, sorted by name. An entry that disappears between the
/// listing and its `lstat` is left out.
///
/// # Errors
///
/// Reading the directory failed.
pub(crate) fn scan() -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for dirent in std::fs::read_dir(SHM_DIR)? {
        let dirent = dirent?;
        let name = dirent.file_name().as_bytes().to_vec();
        // `dirent.path()` is `/dev/shm` joined with one component (the
        // kernel never returns a name with `/`), and `symlink_metadata`
        // does not follow a symlink.
        match std::fs::symlink_metadata(dirent.path()) {
            Ok(meta) => entries.push(Entry { name, meta }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// The type of a directory entry as shown by `ls`: `file` for a regular
/// file (what a shared memory object is), else `symlink`, `dir`, `fifo`,
/// `socket`, `char-device`, `block-device` or `other`.
pub(crate) fn kind(ft: FileType) -> &'static str {
    if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "char-device"
    } else if ft.is_block_device() {
        "block-device"
    } else {
        "other"
    }
}

/// `name` for a terminal: printable UTF-8 as is; a backslash, control
/// characters and bytes that are not UTF-8 as `\\`, `\x1b`, `\xff`. A hostile
/// name cannot forge table rows or terminal escapes.
pub(crate) fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    for b in c.to_string().bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// User names by uid, from `/etc/passwd` (empty if it cannot be read).
pub(crate) fn users() -> HashMap<u32, String> {
    let Ok(text) = std::fs::read(Path::new("/etc/passwd")) else {
        return HashMap::new();
    };
    let mut users = HashMap::new();
    for line in text.split(|&b| b == b'\n') {
        let mut fields = line.split(|&b| b == b':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Some(uid) = std::str::from_utf8(uid).ok().and_then(|u| u.parse().ok()) else {
            continue;
        };
        // The first line for a uid wins, as getpwuid does.
        users
            .entry(uid)
            .or_insert_with(|| String::from_utf8_lossy(name).into_owned());
    }
    users
}

/// An object's identity: device and inode.
pub(crate) type Id = (u64, u64);

/// The identity of an entry's object.
pub(crate) fn id(meta: &Metadata) -> Id {
    (meta.dev(), meta.ino())
}

/// The processes that hold objects, by object identity, and what `/proc`
/// could not show.
#[derive(Default)]
pub(crate) struct Holders {
    /// Pids with a descriptor open on the object.
    pub(crate) open: BTreeMap<Id, BTreeSet<u32>>,
    /// Pids with the object mapped.
    pub(crate) mapped: BTreeMap<Id, BTreeSet<u32>>,
    /// Live processes whose descriptors or mappings could not be read
    /// (another user's without root, a non-dumpable one): any of them may
    /// hold any object. Processes that exited while being read are not
    /// counted.
    pub(crate) uninspectable: BTreeSet<u32>,
    /// Why `/proc` shows not every process at all: it cannot be read, or it
    /// hides other users' processes (`hidepid`).
    pub(crate) hidden: Option<String>,
}

impl Holders {
    /// Why an object nobody is seen to hold may still be held, if anything
    /// keeps this scan from being complete (for this PID namespace).
    pub(crate) fn incomplete(&self) -> Option<String> {
        if let Some(why) = &self.hidden {
            return Some(why.clone());
        }
        match self.uninspectable.len() {
            0 => None,
            1 => Some("1 process could not be inspected (another user's or non-dumpable)".into()),
            n => Some(format!(
                "{n} processes could not be inspected (other users' or non-dumpable)"
            )),
        }
    }
}

/// Linux's `major()` and `minor()` of a `dev_t`.
fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    (major, minor)
}

/// What reading one `/proc/PID` file gave.
enum Read<T> {
    Ok(T),
    /// The process (or the descriptor) is gone: it holds nothing.
    Gone,
    /// Permission denied: the process is alive and may hold anything.
    Denied,
}

fn classify<T>(result: io::Result<T>) -> Read<T> {
    match result {
        Ok(v) => Read::Ok(v),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Read::Denied,
        // ENOENT, ESRCH: exited (or closed the descriptor) meanwhile.
        Err(_) => Read::Gone,
    }
}

/// Scans `/proc/*/fd` and `/proc/*/maps` for objects on `devices` (the
/// `st_dev` of the `/dev/shm` entries), by device and inode, whatever path
/// a process opened or mapped them through (a bind mount, `/run/shm`, a
/// chroot, a container sharing the tmpfs). Processes whose descriptors or
/// mappings cannot be read are recorded as uninspectable, unless they are
/// gone by then, zombies or kernel threads (which hold nothing).
///
/// `/proc` shows only the processes of this PID namespace: see
/// `shmgate ls --help`.
pub(crate) fn holders(devices: &BTreeSet<u64>) -> Holders {
    let mut holders = Holders::default();
    let procs = match std::fs::read_dir("/proc") {
        Ok(procs) => procs,
        Err(e) => {
            holders.hidden = Some(format!("/proc cannot be read ({e})"));
            return holders;
        }
    };
    holders.hidden = hidepid();
    let majmin: BTreeMap<(u64, u64), u64> = devices.iter().map(|&d| (major_minor(d), d)).collect();
    for proc in procs.flatten() {
        let Some(pid) = proc
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let dir = proc.path();
        if !may_hold(&dir) {
            continue;
        }
        let fds = open_fds(&dir, pid, devices, &mut holders);
        let maps = mappings(&dir, pid, &majmin, &mut holders);
        // Denied, and still there afterwards (and no zombie by then).
        if (fds || maps) && may_hold(&dir) {
            holders.uninspectable.insert(pid);
        }
    }
    holders
}

/// Whether the process at `dir` exists and can hold objects: not a zombie,
/// not a kernel thread (`/proc/PID/stat`, which everyone may read).
fn may_hold(dir: &Path) -> bool {
    let Ok(stat) = std::fs::read(dir.join("stat")) else {
        return false;
    };
    // pid (comm) state ppid pgrp session tty_nr tpgid flags ...; comm may
    // hold anything, so fields are counted after its last ')'.
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return true;
    };
    let mut fields = stat[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let state = fields.next();
    if matches!(state, Some(b"Z" | b"X" | b"x")) {
        return false;
    }
    const PF_KTHREAD: u64 = 0x0020_0000;
    let flags = fields
        .nth(5)
        .and_then(|f| std::str::from_utf8(f).ok())
        .and_then(|f| f.parse::<u64>().ok());
    flags.is_none_or(|f| f & PF_KTHREAD == 0)
}

/// Whether `/proc` is mounted with `hidepid` (other users' processes
/// invisible) and we are not root.
fn hidepid() -> Option<String> {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if root {
        return None;
    }
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    for line in info.split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let mut parts = text.split(" - ");
        let (Some(mount), Some(fs)) = (parts.next(), parts.next()) else {
            continue;
        };
        if mount.split(' ').nth(4) != Some("/proc") {
            continue;
        }
        let hides = fs.split(' ').nth(2).is_some_and(|opts| {
            opts.split(',').any(|o| {
                o.strip_prefix("hidepid=")
                    .is_some_and(|v| !matches!(v, "0" | "off"))
                    || o == "subset=pid"
            })
        });
        if hides {
            return Some("/proc hides other users' processes (hidepid)".into());
        }
    }
    None
}

/// Adds `pid` as a holder of each object its descriptors refer to, by the
/// identity `stat` on `/proc/PID/fd/N` gives (the open object itself, even
/// if its name is gone or it was opened through another path; it opens
/// nothing). Returns whether reading was denied.
fn open_fds(dir: &Path, pid: u32, devices: &BTreeSet<u64>, holders: &mut Holders) -> bool {
    let fds = match classify(std::fs::read_dir(dir.join("fd"))) {
        Read::Ok(fds) => fds,
        Read::Gone => return false,
        Read::Denied => return true,
    };
    let mut denied = false;
    for fd in fds.flatten() {
        match classify(std::fs::metadata(fd.path())) {
            Read::Ok(meta) => {
                if devices.contains(&meta.dev()) {
                    holders.open.entry(id(&meta)).or_default().insert(pid);
                }
            }
            Read::Gone => {}
            Read::Denied => denied = true,
        }
    }
    denied
}

/// Adds `pid` as a holder of each object mapped in its `maps` (device and
/// inode, whatever the path). Returns whether reading was denied.
fn mappings(
    dir: &Path,
    pid: u32,
    majmin: &BTreeMap<(u64, u64), u64>,
    holders: &mut Holders,
) -> bool {
    let maps = match classify(std::fs::read(dir.join("maps"))) {
        Read::Ok(maps) => maps,
        Read::Gone => return false,
        Read::Denied => return true,
    };
    for line in maps.split(|&b| b == b'\n') {
        // address perms offset dev inode pathname
        let mut fields = line.split(|&b| b == b' ').filter(|f| !f.is_empty());
        let (Some(_), Some(_), Some(_), Some(dev), Some(ino)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let Some(dev) = parse_dev(dev).and_then(|mm| majmin.get(&mm)) else {
            continue;
        };
        let Some(ino) = std::str::from_utf8(ino).ok().and_then(|s| s.parse().ok()) else {
            continue;
        };
        holders.mapped.entry((*dev, ino)).or_default().insert(pid);
    }
    false
}

/// Parses `maps`' `MAJOR:MINOR` (hex).
fn parse_dev(field: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(field).ok()?;
    let (major, minor) = text.split_once(':')?;
    Some((
        u64::from_str_radix(major, 16).ok()?,
        u64::from_str_radix(minor, 16).ok()?,
    ))
}

/// The creator and holder locks of an entry's object, as
/// `shmgate_host::lifecycle::inspect` found them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locks {
    /// Tested on the object listed; `open_elsewhere` is `None` where no
    /// write lease could be taken (see `lifecycle::inspect`).
    Tested {
        creator: bool,
        holder: bool,
        open_elsewhere: Option<bool>,
    },
    /// Not a regular file with a valid name: never opened.
    NotTested,
    /// It cannot be opened for reading (no permission): unknown.
    Unreadable,
    /// The name refers to another object than the one listed (or is gone).
    Changed,
}

/// Tests the locks of `entry`'s object (opening it read-only for a moment,
/// taking no lock).
pub(crate) fn locks(entry: &Entry) -> Locks {
    if !entry.meta.is_file() || ShmName::new(&entry.name).is_err() {
        return Locks::NotTested;
    }
    match shmgate_host::lifecycle::inspect(&entry.name) {
        Ok(status) => {
            let listed = shmgate_host::Identity::new(entry.meta.dev(), entry.meta.ino());
            if status.identity == listed {
                Locks::Tested {
                    creator: status.creator_alive,
                    holder: status.holder_alive,
                    open_elsewhere: status.open_elsewhere,
                }
            } else {
                Locks::Changed
            }
        }
        Err(e) if matches!(e.errno(), Errno::NOENT | Errno::INVAL | Errno::LOOP) => Locks::Changed,
        Err(_) => Locks::Unreadable,
    }
}

/// What `ls` says of an entry and `rm --orphaned` does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not a shared memory object shmgate may touch (a directory, FIFO,
    /// symlink, socket, device, or a name shm_open's rules refuse): listed,
    /// never opened, followed or removed.
    Skipped(String),
    /// Someone holds it: a lock, a descriptor or a mapping.
    InUse(String),
    /// Proven free: no lock held, and no process (all of them inspected)
    /// has it open or mapped.
    Orphaned,
    /// Nobody is seen to hold it, but the check is incomplete (the reason).
    Unknown(String),
}

impl Verdict {
    /// The word `ls` shows.
    pub(crate) fn word(&self) -> &'static str {
        match self {
            Verdict::Skipped(_) => "skipped",
            Verdict::InUse(_) => "in-use",
            Verdict::Orphaned => "orphaned",
            Verdict::Unknown(_) => "unknown",
        }
    }

    /// Why, for `ls --json` and `rm`'s messages (empty for an orphan).
    pub(crate) fn reason(&self) -> &str {
        match self {
            Verdict::Skipped(r) | Verdict::InUse(r) | Verdict::Unknown(r) => r,
            Verdict::Orphaned => "",
        }
    }
}

/// The verdict on `entry`, from its locks and the `/proc` scan.
pub(crate) fn verdict(entry: &Entry, locks: Locks, holders: &Holders) -> Verdict {
    let ft = entry.meta.file_type();
    if !ft.is_file() {
        let what = match kind(ft) {
            "symlink" => "a symlink (never followed)",
            "dir" => "a directory",
            "fifo" => "a FIFO",
            "socket" => "a socket",
            "char-device" | "block-device" => "a device",
            _ => "not a regular file",
        };
        return Verdict::Skipped(format!("{what}, not a shared memory object"));
    }
    if let Err(e) = ShmName::new(&entry.name) {
        return Verdict::Skipped(format!(
            "not a valid shared memory name: {e} ({})",
            Errno::from(e).name()
        ));
    }
    let id = id(&entry.meta);
    let pids = |map: &BTreeMap<Id, BTreeSet<u32>>| map.get(&id).map_or(0, BTreeSet::len);
    match locks {
        Locks::Tested { creator: true, .. } => {
            return Verdict::InUse("its creator lock is held".into());
        }
        Locks::Tested { holder: true, .. } => {
            return Verdict::InUse("its holder lock is held (a managed open)".into());
        }
        _ => {}
    }
    if pids(&holders.open) > 0 || pids(&holders.mapped) > 0 {
        return Verdict::InUse("open or mapped".into());
    }
    match locks {
        Locks::Tested {
            open_elsewhere: Some(true),
            ..
        } => {
            return Verdict::InUse(
                "open or mapped by a process /proc does not show (a write lease was refused)"
                    .into(),
            );
        }
        // The kernel says nobody has it open or mapped, in any namespace.
        Locks::Tested {
            open_elsewhere: Some(false),
            ..
        } => return Verdict::Orphaned,
        Locks::Tested { .. } => {}
        Locks::NotTested => unreachable!("a regular file with a valid name is tested"),
        Locks::Unreadable => {
            return Verdict::Unknown(
                "its locks cannot be tested: no read permission (root can)".into(),
            );
        }
        Locks::Changed => return Verdict::Unknown("re-created or removed while listing".into()),
    }
    match holders.incomplete() {
        Some(why) => Verdict::Unknown(format!(
            "{why}, and no lease could be taken to ask the kernel (that needs owning it or CAP_LEASE)"
        )),
        None => Verdict::Orphaned,
    }
}

/// The path of `name` in `/dev/shm`, for `lstat` only: callers pass names
/// validated by `shmgate_core` or read from the directory.
pub(crate) fn path_of(name: &[u8]) -> std::path::PathBuf {
    Path::new(SHM_DIR).join(OsStr::from_bytes(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_a_terminal_would_interpret() {
        assert_eq!(escape(b"plain.name"), "plain.name");
        assert_eq!(escape("caf\u{e9}".as_bytes()), "caf\u{e9}");
        assert_eq!(escape(b"a\xffb"), "a\\xffb");
        assert_eq!(escape(b"a\x1b[31mb"), "a\\x1b[31mb");
        assert_eq!(escape(b"new\nline"), "new\\x0aline");
        assert_eq!(escape(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape("\u{85}".as_bytes()), "\\xc2\\x85");
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(b"a\xff\x00"), "61ff00");
    }

    /// glibc's `makedev`.
    fn makedev(major: u64, minor: u64) -> u64 {
        ((major & 0xffff_f000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffff_ff00) << 12)
            | (minor & 0xff)
    }

    #[test]
    fn device_numbers() {
        for (major, minor) in [
            (0, 26),
            (259, 3),
            (0x12345, 0xabcdef),
            (0xfffff, 0xffffffff),
        ] {
            assert_eq!(major_minor(makedev(major, minor)), (major, minor));
        }
        assert_eq!(major_minor(26), (0, 26));
        assert_eq!(parse_dev(b"00:1a"), Some((0, 26)));
        assert_eq!(parse_dev(b"103:03"), Some((0x103, 3)));
        assert_eq!(parse_dev(b"x"), None);
    }
}
