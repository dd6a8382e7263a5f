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

/// The processes that hold objects, by object identity.
#[derive(Default)]
pub(crate) struct Holders {
    /// Pids with a descriptor open on the object.
    pub(crate) open: BTreeMap<Id, BTreeSet<u32>>,
    /// Pids with the object mapped.
    pub(crate) mapped: BTreeMap<Id, BTreeSet<u32>>,
}

/// Linux's `major()` and `minor()` of a `dev_t`.
fn major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    (major, minor)
}

/// Scans `/proc/*/fd` and `/proc/*/maps` for objects on `devices` (the
/// `st_dev` of the `/dev/shm` entries). Processes whose `/proc` entries
/// cannot be read (another user's, or gone) are skipped.
pub(crate) fn holders(devices: &BTreeSet<u64>) -> Holders {
    let mut holders = Holders::default();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return holders;
    };
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
        open_fds(&dir, pid, devices, &mut holders);
        mappings(&dir, pid, &majmin, &mut holders);
    }
    holders
}

/// Adds `pid` as a holder of each object its descriptors link to.
fn open_fds(dir: &Path, pid: u32, devices: &BTreeSet<u64>, holders: &mut Holders) {
    let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
        return;
    };
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if !target.as_os_str().as_bytes().starts_with(b"/dev/shm/") {
            continue;
        }
        // `stat` on the magic link gives the open object itself, even if
        // its name is gone; it opens nothing.
        let Ok(meta) = std::fs::metadata(fd.path()) else {
            continue;
        };
        if devices.contains(&meta.dev()) {
            holders.open.entry(id(&meta)).or_default().insert(pid);
        }
    }
}

/// Adds `pid` as a holder of each object mapped in its `maps`.
fn mappings(dir: &Path, pid: u32, majmin: &BTreeMap<(u64, u64), u64>, holders: &mut Holders) {
    let Ok(maps) = std::fs::read(dir.join("maps")) else {
        return;
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

/// Whether the creator lock of `entry`'s object is held (see
/// `shmgate_host::lifecycle`): `None` if it is not a regular file, cannot
/// be opened for reading, or is no longer the object listed.
pub(crate) fn creator_alive(entry: &Entry) -> Option<bool> {
    if !entry.meta.is_file() {
        return None;
    }
    let status = shmgate_host::lifecycle::inspect(&entry.name).ok()?;
    let listed = shmgate_host::Identity::new(entry.meta.dev(), entry.meta.ino());
    (status.identity == listed).then_some(status.creator_alive)
}

/// A regular file whose creator is known to be gone and that no process
/// (that this user can see in `/proc`) has open or mapped.
pub(crate) fn is_orphaned(entry: &Entry, creator_alive: Option<bool>, holders: &Holders) -> bool {
    let id = id(&entry.meta);
    entry.meta.is_file()
        && creator_alive == Some(false)
        && holders.open.get(&id).is_none_or(BTreeSet::is_empty)
        && holders.mapped.get(&id).is_none_or(BTreeSet::is_empty)
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
