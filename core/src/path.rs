//! The full `/dev/shm/<name>` path, NUL-terminated, in a fixed buffer.
//!
//! # Examples
//!
//! ```
//! use shmgate_core::{ShmName, ShmPath};
//!
//! let path = ShmPath::new(&ShmName::new(b"/jobs")?);
//! assert_eq!(path.as_bytes(), b"/dev/shm/jobs");
//! assert_eq!(path.as_c_str(), c"/dev/shm/jobs");
//! assert_eq!(path.name(), b"jobs");
//! assert_eq!(path.name_c_str(), c"jobs");
//! # Ok::<(), shmgate_core::NameError>(())
//! ```

use core::ffi::CStr;
use core::fmt;

use crate::{NAME_MAX, SHM_DIR, ShmName};

/// Capacity of a [`ShmPath`]: `/dev/shm/`, the longest name, and the NUL.
pub const PATH_CAPACITY: usize = SHM_DIR.len() + NAME_MAX + 1;

/// The path of a shared memory object, `"/dev/shm/<name>"` plus a trailing
/// NUL, built without allocating.
///
/// Built only from a [`ShmName`], so the path always has exactly one
/// component below `/dev/shm/`, which is never `.` or `..`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ShmPath {
    /// `/dev/shm/`, the name, and one NUL at the end (the only NUL, since a
    /// `ShmName` has none).
    path: heapless::Vec<u8, PATH_CAPACITY>,
}

impl ShmPath {
    /// Builds `/dev/shm/<name>` for a validated name.
    #[inline]
    pub fn new(name: &ShmName<'_>) -> ShmPath {
        let mut path = heapless::Vec::new();
        // None of these can fail: the capacity holds `SHM_DIR`, `NAME_MAX`
        // bytes and the NUL.
        let pushed = path.extend_from_slice(SHM_DIR.as_bytes()).is_ok()
            && path.extend_from_slice(name.as_bytes()).is_ok()
            && path.push(0).is_ok();
        debug_assert!(pushed);
        ShmPath { path }
    }

    /// The path as a C string, for `open(2)` and friends.
    #[inline]
    pub fn as_c_str(&self) -> &CStr {
        // The buffer always ends in its only NUL (see `new`), so this never
        // takes the fallback; the empty path it would give opens nothing.
        CStr::from_bytes_with_nul(&self.path).unwrap_or(c"")
    }

    /// The path bytes without the trailing NUL.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.path.split_last().map_or(&[], |(_nul, path)| path)
    }

    /// The normalised name: the bytes after `/dev/shm/`.
    pub fn name(&self) -> &[u8] {
        &self.as_bytes()[SHM_DIR.len()..]
    }

    /// The name alone as a C string, for `openat(2)` relative to a handle
    /// on `/dev/shm` (an absolute path would make `openat` ignore the
    /// handle).
    pub fn name_c_str(&self) -> &CStr {
        // As in `as_c_str`: the tail always ends in the buffer's only NUL.
        CStr::from_bytes_with_nul(&self.path[SHM_DIR.len()..]).unwrap_or(c"")
    }
}

impl fmt::Display for ShmPath {
    /// Shows `/dev/shm/` and the name as [`ShmName`]'s `Display` does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SHM_DIR)?;
        match ShmName::new(self.name()) {
            Ok(name) => fmt::Display::fmt(&name, f),
            Err(_) => Ok(()),
        }
    }
}

impl fmt::Debug for ShmPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShmPath(\"{self}\")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_exact() {
        assert_eq!(PATH_CAPACITY, 9 + 255 + 1);
        let long = [0xe9u8; NAME_MAX];
        let path = ShmPath::new(&ShmName::new(&long).unwrap());
        assert_eq!(path.as_bytes().len(), SHM_DIR.len() + NAME_MAX);
        assert_eq!(path.name(), &long[..]);
        assert_eq!(path.as_c_str().to_bytes(), path.as_bytes());
        assert_eq!(path.as_c_str().to_bytes_with_nul().len(), PATH_CAPACITY);
    }

    #[test]
    fn short_name() {
        let path = ShmPath::new(&ShmName::new(b"///x").unwrap());
        assert_eq!(path.as_bytes(), b"/dev/shm/x");
        assert_eq!(path.as_c_str(), c"/dev/shm/x");
        assert_eq!(path.name(), b"x");
        assert_eq!(path.name_c_str(), c"x");
    }

    #[test]
    fn display() {
        use core::fmt::Write;
        let mut s = heapless::String::<64>::new();
        write!(s, "{}", ShmPath::new(&ShmName::new(b"a\xff").unwrap())).unwrap();
        assert_eq!(s, "/dev/shm/a\\xff");
    }
}
