//! The `no_std`, allocation-free core of shmgate: what a POSIX shared memory
//! name, a set of open flags and a mode mean.
//!
//! Every path from shmgate into the kernel, native or from a wasm guest, goes
//! through this crate first. It is stricter than glibc, musl and rustix:
//!
//! - [`ShmName`] refuses NUL bytes (glibc lets `"x\0evil"` alias `"x"`), inner
//!   slashes (`"../x"` escaped `/dev/shm` in the Go package shmgate grew
//!   from), `.` and `..` (glibc hands back a directory fd) and control bytes.
//! - [`ShmPath`] builds `/dev/shm/<name>` in a fixed buffer, no allocation.
//! - [`OFlags`] has fixed, portable wire values and refuses `TRUNC` on a
//!   read-only open (glibc really truncates).
//! - [`Mode`] holds POSIX mode bits and maps Go's `os.FileMode`.
//! - [`Errno`] is the Linux errno number, also the wire format to guests.
//!
//! # Examples
//!
//! ```
//! use shmgate_core::{Errno, Mode, OFlags, ShmName, ShmPath};
//!
//! let name = ShmName::new(b"/ring-0")?;
//! let path = ShmPath::new(&name);
//! assert_eq!(path.as_c_str(), c"/dev/shm/ring-0");
//!
//! let flags = OFlags::from_bits(1 | 2)?; // RDWR | CREATE, from the wire
//! let mode = Mode::from_bits(0o600)?;
//! assert!(flags.needs_write() && !mode.is_special());
//!
//! assert_eq!(Errno::from(ShmName::new(b"..").unwrap_err()), Errno::INVAL);
//! # Ok::<(), Errno>(())
//! ```

#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod errno;
pub mod io;
pub mod mode;
pub mod name;
pub mod oflags;
pub mod path;
pub mod ring;

pub use errno::Errno;
pub use mode::Mode;
pub use name::{NameError, ShmName};
pub use oflags::OFlags;
pub use path::ShmPath;

/// The longest name, in bytes after stripping leading slashes (`NAME_MAX` on
/// Linux).
pub const NAME_MAX: usize = 255;

/// The directory shared memory objects live in, with its trailing slash.
pub const SHM_DIR: &str = "/dev/shm/";

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
