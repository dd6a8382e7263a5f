//! The demo's guests, carried in the executable: the build embeds the
//! example guests' bytes (`shmgate_guest_artifacts::*_WASM`), and the demo
//! writes them into a private directory of its own for the `shmgate run`
//! processes it starts. So an installed `shmgate demo` runs from any
//! directory, with no build tree and no wasm toolchain.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use shmgate_guest_artifacts as artifacts;
use tracing::info;

use crate::{Failure, exit};

/// The demo's guests as files in a private directory (mode 0700, made
/// new), removed with the value.
pub(crate) struct Guests {
    dir: PathBuf,
}

/// (file name, bytes) of every guest the demo runs.
const EMBEDDED: [(&str, &[u8]); 6] = [
    ("producer.wasm", artifacts::PRODUCER_WASM),
    ("consumer.wasm", artifacts::CONSUMER_WASM),
    ("ring_producer.wasm", artifacts::RING_PRODUCER_WASM),
    ("ring_consumer.wasm", artifacts::RING_CONSUMER_WASM),
    ("ring_ping.wasm", artifacts::RING_PING_WASM),
    ("ring_pong.wasm", artifacts::RING_PONG_WASM),
];

impl Guests {
    /// `mkdir` of `$TMPDIR/shmgate-demo-PID-guests` (0700; `EEXIST` if it
    /// is there), then one new file (0600) per embedded guest.
    ///
    /// # Errors
    ///
    /// `NOINPUT` if this build carries no guests (a packaged build);
    /// `CANTCREAT` if the directory or a file cannot be made.
    pub(crate) fn write() -> Result<Guests, Failure> {
        if !artifacts::AVAILABLE {
            // A build from the crates.io package: the example guests'
            // sources live in the repository only.
            return Err(Failure::new(
                exit::NOINPUT,
                "this shmgate was built without the example guests (a packaged build); \
                 install it from a source checkout: `cargo install --path cli`",
            ));
        }
        let dir = std::env::temp_dir().join(format!("shmgate-demo-{}-guests", std::process::id()));
        let fail = |what: &Path, e: std::io::Error| {
            Failure::new(
                exit::CANTCREAT,
                format!("cannot write the demo's guests: {}: {e}", what.display()),
            )
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| fail(&dir, e))?;
        let guests = Guests { dir };
        for (name, bytes) in EMBEDDED {
            let path = guests.dir.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
                .map_err(|e| fail(&path, e))?;
        }
        info!(dir = %guests.dir.display(), "wrote the embedded guests");
        Ok(guests)
    }

    /// The private directory holding the guests.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the embedded guest `name` (`ring_ping`, …).
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.wasm"))
    }
}

impl Drop for Guests {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
