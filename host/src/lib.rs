//! POSIX shared memory (`/dev/shm`) for native Rust, without the holes of
//! `shm_open`.
//!
//! [`open`] and [`unlink`] do what glibc's `shm_open`/`shm_unlink` do, and
//! what the Go package shmgate grew from did, with these differences:
//!
//! - Names follow [`shmgate_core`]'s rules: one path component, no NUL, no
//!   `.`/`..`, no control bytes. `"../x"` cannot leave `/dev/shm`.
//! - The open is an `open("/dev/shm/<name>")` with `O_NOFOLLOW | O_CLOEXEC
//!   | O_NOCTTY | O_NONBLOCK`: a symlink planted under the name is `ELOOP`
//!   (nothing outside `/dev/shm` is opened or created), a planted FIFO does
//!   not block, and anything but a regular file is `EINVAL`. No descriptor
//!   is kept between calls, so the caller gets the lowest free descriptor
//!   and closing descriptors it does not own cannot redirect a later call.
//! - Creating with a size ([`OpenOptions::size`], [`OpenOptions::open_with`])
//!   is atomic: the name appears only once the segment is sized and
//!   initialised.
//! - Created segments carry a creator lock, so a segment whose creator died
//!   can be told from a live one ([`lifecycle`]).
//! - [`Segment::anonymous`] makes a sealable segment without a name, which
//!   [`send_segment`] passes to another process.
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

mod anonymous;
mod error;
pub mod lifecycle;
pub mod mapping;
pub mod ring;
mod segment;
mod sys;
pub mod wait;
#[cfg(feature = "wasmtime")]
pub mod wasm;

pub use anonymous::{Seals, recv_segment, send_segment};
pub use error::{Error, Op};
pub use mapping::Mapping;
pub use segment::{Identity, OpenOptions, OwnedSegment, Segment, open, unlink};
pub use shmgate_core::{self as core, Errno, Mode, NameError, OFlags, ShmName, ShmPath};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
