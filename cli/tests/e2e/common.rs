//! Unique namespaces, cleanup of everything a test leaves in `/dev/shm`,
//! and running the `shmgate` binary.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// The `shmgate` binary cargo built for these tests.
pub(crate) const SHMGATE: &str = env!("CARGO_BIN_EXE_shmgate");

/// A namespace prefix unique to this process and call; every `/dev/shm`
/// entry starting with it is removed when the value drops (also on panic).
pub(crate) struct Namespace(pub(crate) String);

impl Namespace {
    pub(crate) fn new(tag: &str) -> Namespace {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Namespace(format!("shmgate-e2e-{}-{n}-{tag}.", std::process::id()))
    }

    /// The host name of the guest's `name`.
    pub(crate) fn host_name(&self, name: &str) -> String {
        format!("{}{name}", self.0)
    }

    /// The path of the guest's `name` in `/dev/shm`.
    pub(crate) fn path(&self, name: &str) -> String {
        format!("/dev/shm/{}", self.host_name(name))
    }

    /// The names in `/dev/shm` under this namespace (UTF-8 or not).
    pub(crate) fn entries(&self) -> Vec<OsString> {
        let mut names: Vec<OsString> = std::fs::read_dir("/dev/shm")
            .expect("reading /dev/shm")
            .filter_map(|e| Some(e.ok()?.file_name()))
            .filter(|n| n.as_bytes().starts_with(self.0.as_bytes()))
            .collect();
        names.sort();
        names
    }
}

impl Drop for Namespace {
    /// Removes every entry under the namespace: files, symlinks (not their
    /// targets), FIFOs and empty directories.
    fn drop(&mut self) {
        for name in self.entries() {
            let path = Path::new("/dev/shm").join(name);
            if std::fs::remove_file(&path).is_err() {
                let _ = std::fs::remove_dir(&path);
            }
        }
    }
}

/// Runs `shmgate` with `args` and returns its output.
pub(crate) fn shmgate(args: &[&str]) -> Output {
    Command::new(SHMGATE)
        .args(args)
        .output()
        .expect("running the shmgate binary")
}

/// The output's stdout and stderr as text, for assertion messages.
pub(crate) fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
