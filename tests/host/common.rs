//! Helpers shared by the host tests: unique names, a cleanup guard that
//! removes what a test created even when it fails, the `shmgate-probe`
//! helper process (as this user or as `nobody`), and small accessors.

use std::ffi::OsStr;
use std::fmt::Debug;
use std::fs::{self, File};
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shmgate_core::Errno;

use crate::sys;

/// What the tests return: any error fails the test with its message.
pub(crate) type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The uid and gid of `nobody`, the unprivileged user of the permission
/// tests.
pub(crate) const NOBODY: u32 = 65534;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (in this or any other process) uses:
/// `shmgate-test-<pid>-<n>`, without a leading slash.
pub(crate) fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("shmgate-test-{}-{n}", std::process::id())
}

/// `/dev/shm/<name>`, leading slashes of `name` stripped.
pub(crate) fn shm_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name.trim_start_matches('/'))
}

/// Removes everything a test registered with it when dropped, so a failing
/// test leaves nothing behind: shared memory objects and anything planted
/// in `/dev/shm` (symlinks, FIFOs, directories), directories outside it.
///
/// It removes with `std::fs`, not with the code under test.
#[derive(Default)]
pub(crate) struct Cleanup {
    paths: Vec<PathBuf>,
}

impl Cleanup {
    pub(crate) fn new() -> Cleanup {
        Cleanup::default()
    }

    /// A fresh [`unique_name`], whose `/dev/shm` entry is removed on drop.
    pub(crate) fn name(&mut self) -> String {
        let name = unique_name();
        self.track(shm_path(&name));
        name
    }

    /// Removes `path` (file, symlink, FIFO or directory tree) on drop.
    pub(crate) fn track(&mut self, path: PathBuf) {
        self.paths.push(path);
    }

    /// A fresh empty directory outside `/dev/shm` (under `/tmp`), mode
    /// `0o755`, removed with its contents on drop.
    pub(crate) fn outside_dir(&mut self) -> PathBuf {
        let dir = std::env::temp_dir().join(unique_name());
        fs::create_dir(&dir).expect("creating a temporary directory");
        self.track(dir.clone());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        dir
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in self.paths.iter().rev() {
            remove_any(path);
        }
    }
}

/// Removes whatever is at `path` without following a symlink; nothing there
/// is fine.
pub(crate) fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// Whether something (of any type, a dangling symlink included) is at
/// `path`.
pub(crate) fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// The errno of a result that must be an error.
#[track_caller]
pub(crate) fn errno_of<T: Debug>(r: Result<T, shmgate_host::Error>) -> Errno {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e.errno(),
    }
}

/// `(st_dev, st_ino)` of an open descriptor: which object it is.
pub(crate) fn ident(fd: BorrowedFd<'_>) -> (u64, u64) {
    let m = file_of(fd).metadata().expect("fstat");
    (m.dev(), m.ino())
}

/// `(st_dev, st_ino)` of the object at `/dev/shm/<name>`.
pub(crate) fn ident_of_name(name: &str) -> (u64, u64) {
    let m = fs::symlink_metadata(shm_path(name)).expect("lstat");
    (m.dev(), m.ino())
}

/// A `File` on a duplicate of `fd` (same open file description).
pub(crate) fn file_of(fd: BorrowedFd<'_>) -> File {
    File::from(fd.try_clone_to_owned().expect("dup"))
}

/// The permission bits (`& 0o7777`) of `/dev/shm/<name>`.
pub(crate) fn mode_of(name: &str) -> u32 {
    fs::symlink_metadata(shm_path(name)).expect("lstat").mode() & 0o7777
}

/// Sets the permission bits of `/dev/shm/<name>` (independent of the umask).
pub(crate) fn chmod(name: &str, mode: u32) {
    fs::set_permissions(shm_path(name), fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Whether this process runs as root; if not, says loudly that `test` is
/// skipped (it needs to run a process as another user).
pub(crate) fn root_or_skip(test: &str) -> bool {
    let root = sys::geteuid() == 0;
    if !root {
        eprintln!(
            "\n*** SKIPPED {test}: needs root to run the probe as uid {NOBODY}; \
             this test did NOT run ***\n"
        );
    }
    root
}

/// The `shmgate-probe` helper binary (see `src/bin/shmgate-probe.rs`), run
/// as this user or as `nobody`.
pub(crate) struct Probe {
    path: PathBuf,
    nobody: bool,
}

impl Probe {
    /// The probe as built by cargo, run as the current user.
    pub(crate) fn same_user() -> Probe {
        Probe {
            path: PathBuf::from(env!("CARGO_BIN_EXE_shmgate-probe")),
            nobody: false,
        }
    }

    /// The probe run as uid/gid [`NOBODY`]. The target directory may sit
    /// where `nobody` cannot reach (under `/root`), so the binary is copied
    /// to a fresh `0o755` directory under `/tmp`, which `cleanup` removes.
    pub(crate) fn nobody(cleanup: &mut Cleanup) -> Probe {
        let dir = cleanup.outside_dir();
        let path = dir.join("shmgate-probe");
        fs::copy(env!("CARGO_BIN_EXE_shmgate-probe"), &path).expect("copying the probe");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
        Probe { path, nobody: true }
    }

    /// Where the probe binary is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A command that runs the probe (stdin closed, output captured).
    pub(crate) fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.path);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if self.nobody {
            // std drops supplementary groups too when root sets a uid.
            cmd.uid(NOBODY).gid(NOBODY).current_dir("/");
        }
        cmd
    }

    /// Runs the probe to completion and returns its verdict.
    #[track_caller]
    pub(crate) fn run<I, S>(&self, args: I) -> Result<(), Errno>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let child = spawn(&mut self.command(args));
        verdict(&child.wait_with_output().expect("waiting for the probe"))
    }
}

/// Spawns `cmd`, retrying on `ETXTBSY`: a binary just copied can still be
/// open for writing in a child that another test thread forked and that has
/// not reached `exec` yet. The retry is a wait for that, not an assertion.
#[track_caller]
pub(crate) fn spawn(cmd: &mut Command) -> Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("spawning {cmd:?}: {e}"),
        }
    }
}

/// Decodes the probe's one-line answer (`ok` or `err <n> <NAME>`); panics if
/// the probe failed in any other way.
#[track_caller]
pub(crate) fn verdict(out: &Output) -> Result<(), Errno> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "probe failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let words: Vec<&str> = stdout.split_whitespace().collect();
    match words.as_slice() {
        ["ok"] => Ok(()),
        ["err", n, _] => Err(Errno::from_raw(n.parse().expect("errno number"))),
        _ => panic!("unexpected probe output: {stdout:?} (stderr: {stderr})"),
    }
}
