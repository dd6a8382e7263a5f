//! Portable open flags for shared memory objects.
//!
//! These are shmgate's own bit values, fixed because they are the wire format
//! of the `shmgate_v1` wasm ABI; the host maps them to the platform's
//! `O_*` flags. They are not Linux's `O_*` values.
//!
//! | flag | value | POSIX |
//! |---|---|---|
//! | [`OFlags::RDONLY`] | 0 | `O_RDONLY` |
//! | [`OFlags::RDWR`] | 1 | `O_RDWR` |
//! | [`OFlags::CREATE`] | 2 | `O_CREAT` |
//! | [`OFlags::EXCL`] | 4 | `O_EXCL` |
//! | [`OFlags::TRUNC`] | 8 | `O_TRUNC` |
//!
//! Rules ([`OFlags::from_bits`], [`OFlags::validate`]): unknown bits, `EXCL`
//! without `CREATE`, and `TRUNC` without `RDWR` are `EINVAL`. glibc really truncates a "read-only"
//! `O_RDONLY|O_TRUNC` open; shmgate refuses it.
//!
//! # Examples
//!
//! ```
//! use shmgate_core::{Errno, OFlags};
//!
//! let flags = OFlags::from_bits(1 | 2 | 4)?;
//! assert_eq!(flags, OFlags::RDWR | OFlags::CREATE | OFlags::EXCL);
//! assert!(flags.needs_write());
//!
//! assert_eq!(OFlags::from_bits(8), Err(Errno::INVAL)); // TRUNC | RDONLY
//! assert_eq!(OFlags::from_bits(16), Err(Errno::INVAL)); // unknown bit
//! # Ok::<(), Errno>(())
//! ```

use core::fmt;
use core::ops::BitOr;

use crate::Errno;

/// Open flags with shmgate's portable wire values. Combine with `|`; check
/// the combination with [`OFlags::validate`] (the host does so before every
/// open).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct OFlags(u32);

impl OFlags {
    /// Open for reading only (the access mode when `RDWR` is absent).
    #[doc(alias = "O_RDONLY")]
    pub const RDONLY: OFlags = OFlags(0);
    /// Open for reading and writing.
    #[doc(alias = "O_RDWR")]
    pub const RDWR: OFlags = OFlags(1);
    /// Create the object if it does not exist.
    #[doc(alias = "O_CREAT")]
    pub const CREATE: OFlags = OFlags(2);
    /// With `CREATE`: fail with `EEXIST` if the object exists.
    #[doc(alias = "O_EXCL")]
    pub const EXCL: OFlags = OFlags(4);
    /// Truncate the object to length 0 (needs `RDWR`).
    #[doc(alias = "O_TRUNC")]
    pub const TRUNC: OFlags = OFlags(8);

    /// Every defined bit.
    pub const ALL: OFlags = OFlags(1 | 2 | 4 | 8);

    /// Decodes untrusted flag bits and [validates](OFlags::validate) them.
    ///
    /// # Errors
    ///
    /// `EINVAL` for an unknown bit or a combination the rules refuse.
    pub const fn from_bits(bits: u32) -> Result<OFlags, Errno> {
        if bits & !OFlags::ALL.0 != 0 {
            return Err(Errno::INVAL);
        }
        OFlags(bits).validate()
    }

    /// The flags an `OpenOptions`-style builder stands for: `RDWR` if
    /// `read_write`, `CREATE` if `create` or `create_new`, `EXCL` if
    /// `create_new`, `TRUNC` if `truncate`. Not validated (see
    /// [`OFlags::validate`]). The host's and the guest SDK's `OpenOptions`
    /// both use it.
    ///
    /// ```
    /// use shmgate_core::OFlags;
    /// assert_eq!(OFlags::from_options(true, false, true, false), OFlags::RDWR | OFlags::CREATE | OFlags::EXCL);
    /// ```
    pub const fn from_options(
        read_write: bool,
        create: bool,
        create_new: bool,
        truncate: bool,
    ) -> OFlags {
        const fn bit(on: bool, flag: OFlags) -> u32 {
            if on { flag.0 } else { 0 }
        }
        OFlags(
            bit(read_write, OFlags::RDWR)
                | bit(create || create_new, OFlags::CREATE)
                | bit(create_new, OFlags::EXCL)
                | bit(truncate, OFlags::TRUNC),
        )
    }

    /// The wire value.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set in `self` (`RDONLY`, being 0, is
    /// contained in everything; use [`OFlags::is_read_only`]).
    pub const fn contains(self, other: OFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the access mode is read-only (no `RDWR`).
    pub const fn is_read_only(self) -> bool {
        !self.contains(OFlags::RDWR)
    }

    /// Whether opening with these flags needs write access to the object or
    /// its directory: `RDWR`, `CREATE` or `TRUNC`. A read-only grant must
    /// refuse all three (forgetting `TRUNC` was a wasmtime advisory,
    /// GHSA-2r75-cxrj-cmph).
    pub const fn needs_write(self) -> bool {
        self.0 & (OFlags::RDWR.0 | OFlags::CREATE.0 | OFlags::TRUNC.0) != 0
    }

    /// Checks the flag rules: `EXCL` only with `CREATE`, `TRUNC` only with
    /// `RDWR`. (Unknown bits cannot get into an `OFlags`: [`OFlags::from_bits`]
    /// refuses them.)
    ///
    /// # Errors
    ///
    /// `EINVAL` if a rule is broken.
    pub const fn validate(self) -> Result<OFlags, Errno> {
        if self.contains(OFlags::EXCL) && !self.contains(OFlags::CREATE) {
            return Err(Errno::INVAL);
        }
        if self.contains(OFlags::TRUNC) && self.is_read_only() {
            return Err(Errno::INVAL);
        }
        Ok(self)
    }
}

impl BitOr for OFlags {
    type Output = OFlags;
    fn bitor(self, rhs: OFlags) -> OFlags {
        OFlags(self.0 | rhs.0)
    }
}

impl fmt::Debug for OFlags {
    /// Shows the flags as `RDWR | CREATE`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_read_only() {
            "RDONLY"
        } else {
            "RDWR"
        })?;
        for (flag, name) in [
            (OFlags::CREATE, "CREATE"),
            (OFlags::EXCL, "EXCL"),
            (OFlags::TRUNC, "TRUNC"),
        ] {
            if self.contains(flag) {
                write!(f, " | {name}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_are_pinned() {
        assert_eq!(OFlags::RDONLY.bits(), 0);
        assert_eq!(OFlags::RDWR.bits(), 1);
        assert_eq!(OFlags::CREATE.bits(), 2);
        assert_eq!(OFlags::EXCL.bits(), 4);
        assert_eq!(OFlags::TRUNC.bits(), 8);
    }

    /// Every 4-bit combination against the rules written out longhand.
    #[test]
    fn every_combination() {
        for bits in 0..16u32 {
            let rdwr = bits & 1 != 0;
            let create = bits & 2 != 0;
            let excl = bits & 4 != 0;
            let trunc = bits & 8 != 0;
            let valid = (create || !excl) && (rdwr || !trunc);
            let got = OFlags::from_bits(bits);
            assert_eq!(got.is_ok(), valid, "{bits:#b}");
            if let Ok(flags) = got {
                assert_eq!(flags.bits(), bits);
                assert_eq!(flags.needs_write(), rdwr || create || trunc);
                assert_eq!(flags.is_read_only(), !rdwr);
            } else {
                assert_eq!(got, Err(Errno::INVAL));
            }
        }
    }

    #[test]
    fn unknown_bits_rejected() {
        for bit in 4..32 {
            assert_eq!(OFlags::from_bits(1 << bit), Err(Errno::INVAL), "bit {bit}");
            assert_eq!(OFlags::from_bits(1 | (1 << bit)), Err(Errno::INVAL));
        }
        assert_eq!(OFlags::from_bits(u32::MAX), Err(Errno::INVAL));
    }

    #[test]
    fn needs_write_covers_trunc_and_create() {
        assert!(!OFlags::RDONLY.needs_write());
        assert!(OFlags::RDWR.needs_write());
        assert!(OFlags::CREATE.needs_write());
        assert!((OFlags::RDWR | OFlags::TRUNC).needs_write());
        // Even an invalid combination reports the write it would need.
        assert!(OFlags::TRUNC.needs_write());
    }

    #[test]
    fn composed_flags_validate() {
        assert_eq!(OFlags::EXCL.validate(), Err(Errno::INVAL));
        assert_eq!(OFlags::TRUNC.validate(), Err(Errno::INVAL));
        assert!((OFlags::CREATE | OFlags::EXCL).validate().is_ok());
        assert!((OFlags::RDWR | OFlags::TRUNC).validate().is_ok());
    }

    #[test]
    fn debug() {
        use core::fmt::Write;
        let mut s = heapless::String::<64>::new();
        write!(s, "{:?}", OFlags::RDWR | OFlags::CREATE | OFlags::EXCL).unwrap();
        assert_eq!(s, "RDWR | CREATE | EXCL");
        s.clear();
        write!(s, "{:?}", OFlags::RDONLY).unwrap();
        assert_eq!(s, "RDONLY");
    }
}
