//! POSIX shared memory (`/dev/shm`) for native Rust, without the holes of
//! `shm_open`.
//!
//! [`open`] and [`unlink`] do what glibc's `shm_open`/`shm_unlink` do, and
//! what the Go package shmgate grew from did, with these differences:
//!
//! - Names follow [`shmgate_core`]'s rules: one path component, no NUL, no
//!   `.`/`..`, no control bytes. `"../x"` cannot leave `/dev/shm`.
//! - The open is an `openat` relative to a cached `O_PATH` handle on
//!   `/dev/shm`, with `O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK`: a
//!   symlink planted under the name is `ELOOP` (nothing outside `/dev/shm`
//!   is opened or created), a planted FIFO does not block, and anything but
//!   a regular file is `EINVAL`.
//! - `TRUNC` needs `RDWR` (glibc truncates on a "read-only" open).
//! - Errors carry the operation, the name as passed, and the errno.
//!
//! # Examples
//!
//! ```
//! use shmgate_host::{OpenOptions, Segment};
//! # let name = format!("/shmgate-doc-lib-{}", std::process::id());
//!
//! // Create a 1 KiB segment that is unlinked when `seg` drops.
//! let seg = OpenOptions::new().size(1024).open_owned(&name)?;
//! seg.write_all_at(b"ping", 0)?;
//!
//! // Anyone (another process, glibc's shm_open, Python) can open it by name.
//! let reader = Segment::open_read_only(&name)?;
//! let mut buf = [0; 4];
//! reader.read_exact_at(&mut buf, 0)?;
//! assert_eq!(&buf, b"ping");
//!
//! // Bad names never reach the kernel.
//! let err = Segment::open_read_only("../etc/passwd").unwrap_err();
//! assert_eq!(err.to_string(), r#"open "../etc/passwd": invalid argument (EINVAL)"#);
//! # Ok::<(), shmgate_host::Error>(())
//! ```

#![deny(unsafe_code)]
#![deny(missing_docs)]

mod error;
pub mod mapping;
pub mod ring;
mod segment;
mod sys;
#[cfg(feature = "wasmtime")]
pub mod wasm;

pub use error::{Error, Op};
pub use mapping::Mapping;
pub use segment::{OpenOptions, OwnedSegment, Segment, open, unlink};
pub use shmgate_core::{self as core, Errno, Mode, NameError, OFlags, ShmName, ShmPath};
