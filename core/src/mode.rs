//! POSIX permission and special mode bits, and Go's `os.FileMode` layout.
//!
//! # Examples
//!
//! ```
//! use shmgate_core::{Errno, Mode};
//!
//! let mode = Mode::from_bits(0o640)?;
//! assert_eq!(mode.permissions(), 0o640);
//! assert!(!mode.is_special());
//!
//! // Go's os.ModeSetuid | 0o755, as the original Go package mapped it.
//! let go = Mode::from_go_file_mode((1 << 23) | 0o755)?;
//! assert_eq!(go.bits(), 0o4755);
//! assert_eq!(go.to_go_file_mode(), (1 << 23) | 0o755);
//!
//! // Go's os.ModeDir has no meaning for a shared memory object.
//! assert_eq!(Mode::from_go_file_mode(1 << 31), Err(Errno::INVAL));
//! # Ok::<(), Errno>(())
//! ```

use core::fmt;
use core::ops::BitOr;

use crate::Errno;

/// POSIX mode bits of a shared memory object: permissions (`0o777`) plus
/// set-user-ID, set-group-ID and sticky (`0o7000`). Never more than `0o7777`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mode(u16);

/// Go's `os.ModeSetuid`.
const GO_SETUID: u32 = 1 << 23;
/// Go's `os.ModeSetgid`.
const GO_SETGID: u32 = 1 << 22;
/// Go's `os.ModeSticky`.
const GO_STICKY: u32 = 1 << 20;

impl Mode {
    /// Set-user-ID on execution.
    #[doc(alias = "S_ISUID")]
    pub const SUID: Mode = Mode(0o4000);
    /// Set-group-ID on execution.
    #[doc(alias = "S_ISGID")]
    pub const SGID: Mode = Mode(0o2000);
    /// Sticky bit.
    #[doc(alias = "S_ISVTX")]
    pub const SVTX: Mode = Mode(0o1000);
    /// Read, write, execute for the owner.
    #[doc(alias = "S_IRWXU")]
    pub const RWXU: Mode = Mode(0o700);
    /// Read for the owner.
    #[doc(alias = "S_IRUSR")]
    pub const RUSR: Mode = Mode(0o400);
    /// Write for the owner.
    #[doc(alias = "S_IWUSR")]
    pub const WUSR: Mode = Mode(0o200);
    /// Execute for the owner.
    #[doc(alias = "S_IXUSR")]
    pub const XUSR: Mode = Mode(0o100);
    /// Read, write, execute for the group.
    #[doc(alias = "S_IRWXG")]
    pub const RWXG: Mode = Mode(0o070);
    /// Read for the group.
    #[doc(alias = "S_IRGRP")]
    pub const RGRP: Mode = Mode(0o040);
    /// Write for the group.
    #[doc(alias = "S_IWGRP")]
    pub const WGRP: Mode = Mode(0o020);
    /// Execute for the group.
    #[doc(alias = "S_IXGRP")]
    pub const XGRP: Mode = Mode(0o010);
    /// Read, write, execute for others.
    #[doc(alias = "S_IRWXO")]
    pub const RWXO: Mode = Mode(0o007);
    /// Read for others.
    #[doc(alias = "S_IROTH")]
    pub const ROTH: Mode = Mode(0o004);
    /// Write for others.
    #[doc(alias = "S_IWOTH")]
    pub const WOTH: Mode = Mode(0o002);
    /// Execute for others.
    #[doc(alias = "S_IXOTH")]
    pub const XOTH: Mode = Mode(0o001);
    /// `0o600`: read and write for the owner only, the usual mode for a
    /// private segment.
    pub const OWNER_RW: Mode = Mode(0o600);

    /// The largest valid value, `0o7777`.
    pub const MAX: u32 = 0o7777;

    /// Decodes POSIX mode bits.
    ///
    /// # Errors
    ///
    /// `EINVAL` for any bit above `0o7777` (such as a file type bit).
    pub const fn from_bits(bits: u32) -> Result<Mode, Errno> {
        if bits > Mode::MAX {
            return Err(Errno::INVAL);
        }
        #[allow(clippy::cast_possible_truncation)] // checked just above
        Ok(Mode(bits as u16))
    }

    /// Maps a Go `os.FileMode` to POSIX bits: the permission bits `0o777`,
    /// `ModeSetuid` (`1 << 23`) to `S_ISUID`, `ModeSetgid` (`1 << 22`) to
    /// `S_ISGID` and `ModeSticky` (`1 << 20`) to `S_ISVTX`, as the Go package
    /// shmgate grew from did.
    ///
    /// # Errors
    ///
    /// `EINVAL` for any other bit (`ModeDir`, `ModeAppend`, a raw `0o4000`,
    /// …), which the Go package silently dropped.
    pub const fn from_go_file_mode(go: u32) -> Result<Mode, Errno> {
        if go & !(0o777 | GO_SETUID | GO_SETGID | GO_STICKY) != 0 {
            return Err(Errno::INVAL);
        }
        let mut bits = (go & 0o777) as u16;
        if go & GO_SETUID != 0 {
            bits |= Mode::SUID.0;
        }
        if go & GO_SETGID != 0 {
            bits |= Mode::SGID.0;
        }
        if go & GO_STICKY != 0 {
            bits |= Mode::SVTX.0;
        }
        Ok(Mode(bits))
    }

    /// The reverse of [`Mode::from_go_file_mode`]: these bits as a Go
    /// `os.FileMode`.
    pub const fn to_go_file_mode(self) -> u32 {
        let mut go = self.permissions();
        if self.0 & Mode::SUID.0 != 0 {
            go |= GO_SETUID;
        }
        if self.0 & Mode::SGID.0 != 0 {
            go |= GO_SETGID;
        }
        if self.0 & Mode::SVTX.0 != 0 {
            go |= GO_STICKY;
        }
        go
    }

    /// The mode bits, at most `0o7777`.
    pub const fn bits(self) -> u32 {
        self.0 as u32
    }

    /// The permission bits only (`bits() & 0o777`).
    pub const fn permissions(self) -> u32 {
        (self.0 & 0o777) as u32
    }

    /// Whether set-user-ID, set-group-ID or sticky is set. A sandboxed guest
    /// may not ask for these.
    pub const fn is_special(self) -> bool {
        self.0 & 0o7000 != 0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Mode) -> bool {
        self.0 & other.0 == other.0
    }

    /// Clears the bits set in `mask`, as the kernel applies a umask.
    pub const fn without(self, mask: Mode) -> Mode {
        Mode(self.0 & !mask.0)
    }
}

impl BitOr for Mode {
    type Output = Mode;
    fn bitor(self, rhs: Mode) -> Mode {
        Mode(self.0 | rhs.0)
    }
}

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mode({:#06o})", self.0)
    }
}

impl fmt::Octal for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Octal::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `os.FileMode` bits, from `io/fs`.
    const GO_BITS: [(u32, &str); 13] = [
        (1 << 31, "ModeDir"),
        (1 << 30, "ModeAppend"),
        (1 << 29, "ModeExclusive"),
        (1 << 28, "ModeTemporary"),
        (1 << 27, "ModeSymlink"),
        (1 << 26, "ModeDevice"),
        (1 << 25, "ModeNamedPipe"),
        (1 << 24, "ModeSocket"),
        (1 << 23, "ModeSetuid"),
        (1 << 22, "ModeSetgid"),
        (1 << 21, "ModeCharDevice"),
        (1 << 20, "ModeSticky"),
        (1 << 19, "ModeIrregular"),
    ];

    #[test]
    fn from_bits_range() {
        for bits in 0..=0o7777 {
            assert_eq!(Mode::from_bits(bits).map(Mode::bits), Ok(bits));
        }
        assert_eq!(Mode::from_bits(0o10000), Err(Errno::INVAL));
        assert_eq!(Mode::from_bits(0o100644), Err(Errno::INVAL)); // S_IFREG
        assert_eq!(Mode::from_bits(u32::MAX), Err(Errno::INVAL));
    }

    #[test]
    fn go_special_bits_map() {
        assert_eq!(Mode::from_go_file_mode(GO_SETUID), Ok(Mode::SUID));
        assert_eq!(Mode::from_go_file_mode(GO_SETGID), Ok(Mode::SGID));
        assert_eq!(Mode::from_go_file_mode(GO_STICKY), Ok(Mode::SVTX));
        assert_eq!(
            Mode::from_go_file_mode(GO_SETUID | GO_SETGID | GO_STICKY | 0o777).map(Mode::bits),
            Ok(0o7777)
        );
    }

    #[test]
    fn go_other_bits_rejected() {
        for (bit, name) in GO_BITS {
            let ok = matches!(name, "ModeSetuid" | "ModeSetgid" | "ModeSticky");
            assert_eq!(Mode::from_go_file_mode(bit | 0o644).is_ok(), ok, "{name}");
        }
        // Every undefined bit, including raw POSIX 0o7000 in Go's layout.
        for bit in 9..19 {
            assert_eq!(
                Mode::from_go_file_mode(1 << bit),
                Err(Errno::INVAL),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn go_round_trip_all_valid_modes() {
        for bits in 0..=0o7777 {
            let mode = Mode::from_bits(bits).unwrap();
            assert_eq!(Mode::from_go_file_mode(mode.to_go_file_mode()), Ok(mode));
        }
    }

    #[test]
    fn helpers() {
        let m = Mode::from_bits(0o2640).unwrap();
        assert!(m.is_special());
        assert_eq!(m.permissions(), 0o640);
        assert!(m.contains(Mode::SGID | Mode::RUSR));
        assert!(!Mode::OWNER_RW.is_special());
        assert_eq!(
            Mode::from_bits(0o666)
                .unwrap()
                .without(Mode::from_bits(0o022).unwrap()),
            Mode::from_bits(0o644).unwrap()
        );
        assert_eq!(
            Mode::RWXU | Mode::RWXG | Mode::RWXO,
            Mode::from_bits(0o777).unwrap()
        );
    }
}
