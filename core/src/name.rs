//! Shared memory object names: normalisation and validation.
//!
//! A name is what a caller passes to `shm_open`: `"/jobs"` and `"jobs"` name
//! the same object, `/dev/shm/jobs`. [`ShmName::new`] applies these rules, in
//! this order, and stops at the first that fails:
//!
//! | # | rule | error |
//! |---|---|---|
//! | 1 | any NUL byte | [`NameError::Nul`] (`EINVAL`) |
//! | 2 | strip every leading `/` | |
//! | 3 | nothing left | [`NameError::Empty`] (`EINVAL`) |
//! | 4 | more than [`NAME_MAX`] bytes left | [`NameError::TooLong`] (`ENAMETOOLONG`) |
//! | 5 | a `/` left anywhere | [`NameError::Slash`] (`EINVAL`) |
//! | 6 | exactly `.` or `..` | [`NameError::Dot`] (`EINVAL`) |
//! | 7 | a byte in `0x01..=0x1F` or `0x7F` | [`NameError::Control`] (`EINVAL`) |
//!
//! Bytes `0x80..=0xFF` are allowed: names need not be UTF-8, as in glibc.
//!
//! Where this differs from glibc: glibc accepts rules 1 (it stops at the NUL,
//! so `"x\0evil"` aliases `"x"`), 6 (it opens the `/dev/shm` or `/dev`
//! directory) and 7. It agrees on rules 3, 4 and 5.
//!
//! # Examples
//!
//! ```
//! use shmgate_core::{Errno, NameError, ShmName};
//!
//! let name = ShmName::new(b"//jobs")?;
//! assert_eq!(name.as_bytes(), b"jobs");
//!
//! assert_eq!(ShmName::new(b"../etc/passwd").unwrap_err(), NameError::Slash);
//! assert_eq!(Errno::from(ShmName::new(&[b'a'; 256]).unwrap_err()), Errno::NAMETOOLONG);
//! # Ok::<(), NameError>(())
//! ```

use core::fmt;

use crate::{Errno, NAME_MAX};

/// A validated, normalised shared memory object name: one path component of
/// 1 to [`NAME_MAX`] bytes, without `/`, NUL or control bytes, and not `.` or
/// `..`.
///
/// It borrows the caller's bytes; leading slashes are stripped. The only way
/// to get one is [`ShmName::new`], so holding a `ShmName` proves the rules in
/// the [module documentation](self) hold.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShmName<'a> {
    name: &'a [u8],
}

/// Why [`ShmName::new`] refused a name. Each variant is one rule of the
/// [module documentation](self); [`Errno::from`] gives the errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NameError {
    /// Rule 1: the name contains a NUL byte (it would alias a shorter name).
    Nul,
    /// Rule 3: the name is empty or only slashes.
    Empty,
    /// Rule 4: more than [`NAME_MAX`] bytes after stripping leading slashes.
    TooLong,
    /// Rule 5: a `/` after the leading slashes (would leave `/dev/shm`).
    Slash,
    /// Rule 6: the name is `.` or `..` (a directory, not an object).
    Dot,
    /// Rule 7: a control byte (`0x01..=0x1F` or `0x7F`), the first one found.
    Control(u8),
}

impl NameError {
    /// The errno a `shm_open` reports for this error.
    pub const fn errno(self) -> Errno {
        match self {
            NameError::TooLong => Errno::NAMETOOLONG,
            NameError::Nul
            | NameError::Empty
            | NameError::Slash
            | NameError::Dot
            | NameError::Control(_) => Errno::INVAL,
        }
    }
}

impl From<NameError> for Errno {
    fn from(e: NameError) -> Errno {
        e.errno()
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Nul => f.write_str("shared memory name contains a NUL byte"),
            NameError::Empty => f.write_str("shared memory name is empty"),
            NameError::TooLong => write!(f, "shared memory name is longer than {NAME_MAX} bytes"),
            NameError::Slash => f.write_str("shared memory name contains '/' after its start"),
            NameError::Dot => f.write_str("shared memory name is '.' or '..'"),
            NameError::Control(b) => {
                write!(f, "shared memory name contains control byte {b:#04x}")
            }
        }
    }
}

impl core::error::Error for NameError {}

/// Whether `b` is a byte rule 7 refuses (NUL is rule 1's).
const fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Whether `b` is refused anywhere in a name by rule 1, 5 or 7. Written
/// with `|` rather than `||` so that a loop over it has no branches.
#[inline]
const fn is_refused_byte(b: u8) -> bool {
    (b < 0x20) | (b == 0x7f) | (b == b'/')
}

impl<'a> ShmName<'a> {
    /// Validates and normalises a shared memory object name.
    ///
    /// # Errors
    ///
    /// The first rule of the [module documentation](self) that `raw`
    /// breaks, as a [`NameError`].
    #[inline]
    pub fn new(raw: &'a [u8]) -> Result<ShmName<'a>, NameError> {
        // Rule 2. Stripping first is safe for rule 1: a slash is not a NUL.
        let start = raw.iter().position(|&b| b != b'/').unwrap_or(raw.len());
        let name = &raw[start..];

        // The fast path: one branch-free pass that only asks "is any byte
        // one that some rule refuses?", which the compiler vectorises. The
        // rare name that fails is classified again below, in rule order.
        let suspicious = name.iter().fold(false, |acc, &b| acc | is_refused_byte(b));

        if suspicious && name.contains(&0) {
            return Err(NameError::Nul);
        }
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > NAME_MAX {
            return Err(NameError::TooLong);
        }
        if suspicious && name.contains(&b'/') {
            return Err(NameError::Slash);
        }
        if name == b"." || name == b".." {
            return Err(NameError::Dot);
        }
        if suspicious {
            // Neither NUL nor '/' (refused above), so a control byte.
            let b = name
                .iter()
                .copied()
                .find(|&b| is_control(b))
                .unwrap_or(0x7f);
            return Err(NameError::Control(b));
        }
        Ok(ShmName { name })
    }

    /// The normalised name: no leading slash, 1 to [`NAME_MAX`] bytes.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.name
    }

    /// The length of the normalised name in bytes (1 to [`NAME_MAX`]).
    #[allow(clippy::len_without_is_empty)] // a valid name is never empty
    pub const fn len(&self) -> usize {
        self.name.len()
    }
}

impl fmt::Display for ShmName<'_> {
    /// Shows the name as text, with bytes that are not UTF-8 as `\xNN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.name.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ShmName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShmName(\"{self}\")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &[u8]) -> Result<&[u8], NameError> {
        ShmName::new(raw).map(|n| n.as_bytes())
    }

    #[test]
    fn plain_names() {
        assert_eq!(check(b"a"), Ok(&b"a"[..]));
        assert_eq!(check(b"/a"), Ok(&b"a"[..]));
        assert_eq!(check(b"///a"), Ok(&b"a"[..]));
        assert_eq!(check(b"..."), Ok(&b"..."[..]));
        assert_eq!(check(b".x"), Ok(&b".x"[..]));
        assert_eq!(check(b"x."), Ok(&b"x."[..]));
        assert_eq!(check(b"/.hidden"), Ok(&b".hidden"[..]));
        assert_eq!(check(b"a b~!@#$%^&*()"), Ok(&b"a b~!@#$%^&*()"[..]));
    }

    #[test]
    fn rule1_nul_anywhere() {
        assert_eq!(check(b"\0"), Err(NameError::Nul));
        assert_eq!(check(b"x\0evil"), Err(NameError::Nul));
        assert_eq!(check(b"x\0"), Err(NameError::Nul));
        assert_eq!(check(b"/\0"), Err(NameError::Nul));
        // Rule 1 comes before rules 4 and 5.
        let mut long = [b'a'; 300];
        long[299] = 0;
        assert_eq!(check(&long), Err(NameError::Nul));
        assert_eq!(check(b"a/\0"), Err(NameError::Nul));
    }

    #[test]
    fn rule3_empty() {
        assert_eq!(check(b""), Err(NameError::Empty));
        assert_eq!(check(b"/"), Err(NameError::Empty));
        assert_eq!(check(b"//"), Err(NameError::Empty));
        assert_eq!(check(&[b'/'; 255]), Err(NameError::Empty));
        assert_eq!(check(&[b'/'; 4096]), Err(NameError::Empty));
    }

    #[test]
    fn rule4_length_boundaries() {
        for (len, ok) in [(254, true), (255, true), (256, false), (4096, false)] {
            let name = [b'n'; 4096];
            let got = check(&name[..len]);
            assert_eq!(got.is_ok(), ok, "{len}");
            if !ok {
                assert_eq!(got, Err(NameError::TooLong));
            }
            // Leading slashes do not count.
            let mut slashed = [b'/'; 4096 + 3];
            slashed[3..3 + len].copy_from_slice(&name[..len]);
            assert_eq!(check(&slashed[..3 + len]), got, "/// + {len}");
        }
    }

    #[test]
    fn rule4_before_rule5() {
        // POSIX's test suite: a 4096-byte name full of slashes is ENAMETOOLONG.
        let mut name = [b'a'; 4096];
        for (i, b) in name.iter_mut().enumerate() {
            if i % 2 == 1 {
                *b = b'/';
            }
        }
        assert_eq!(check(&name), Err(NameError::TooLong));
        assert_eq!(NameError::TooLong.errno(), Errno::NAMETOOLONG);
    }

    #[test]
    fn rule5_inner_slash() {
        for raw in [
            &b"a/"[..],
            b"a/b",
            b"../x",
            b"/../x",
            b"./x",
            b"x/..",
            b"//a//",
        ] {
            assert_eq!(check(raw), Err(NameError::Slash), "{raw:?}");
        }
    }

    #[test]
    fn rule6_dots() {
        for raw in [&b"."[..], b"..", b"/.", b"/..", b"///.."] {
            assert_eq!(check(raw), Err(NameError::Dot), "{raw:?}");
        }
    }

    #[test]
    fn rule7_every_control_byte() {
        for b in (0x01..=0x1fu8).chain([0x7f]) {
            for raw in [[b, b'x', b'x'], [b'x', b, b'x'], [b'x', b'x', b]] {
                assert_eq!(check(&raw), Err(NameError::Control(b)), "{raw:?}");
            }
        }
        // A slash wins over a control byte (rule 5 before rule 7).
        assert_eq!(check(b"\x1b/x"), Err(NameError::Slash));
    }

    #[test]
    fn high_bit_bytes_allowed() {
        for b in 0x80..=0xffu8 {
            assert_eq!(check(&[b]), Ok(&[b][..]));
        }
        assert_eq!(check("名前".as_bytes()), Ok("名前".as_bytes()));
    }

    #[test]
    fn every_single_byte() {
        for b in 0..=255u8 {
            let raw = [b];
            let got = check(&raw);
            let want = match b {
                0 => Err(NameError::Nul),
                b'/' => Err(NameError::Empty),
                b'.' => Err(NameError::Dot),
                0x01..=0x1f | 0x7f => Err(NameError::Control(b)),
                _ => Ok(&[b][..]),
            };
            assert_eq!(got, want, "{b:#04x}");
        }
    }

    #[test]
    fn errnos() {
        assert_eq!(Errno::from(NameError::Nul), Errno::INVAL);
        assert_eq!(Errno::from(NameError::Empty), Errno::INVAL);
        assert_eq!(Errno::from(NameError::TooLong), Errno::NAMETOOLONG);
        assert_eq!(Errno::from(NameError::Slash), Errno::INVAL);
        assert_eq!(Errno::from(NameError::Dot), Errno::INVAL);
        assert_eq!(Errno::from(NameError::Control(1)), Errno::INVAL);
    }

    #[test]
    fn display_escapes_non_utf8() {
        use core::fmt::Write;
        let mut s = heapless::String::<64>::new();
        write!(s, "{}", ShmName::new(b"/a\xffb").unwrap()).unwrap();
        assert_eq!(s, "a\\xffb");
        s.clear();
        write!(s, "{:?}", ShmName::new(b"jobs").unwrap()).unwrap();
        assert_eq!(s, "ShmName(\"jobs\")");
        s.clear();
        write!(s, "{}", NameError::Control(0x1b)).unwrap();
        assert_eq!(s, "shared memory name contains control byte 0x1b");
    }
}
