//! Linux error numbers, the error type of every shmgate layer.
//!
//! [`Errno`] is a newtype over the Linux errno number rather than an enum,
//! because the kernel (and a wasm guest on the other side of the ABI) may hand
//! us a number we do not know, and decoding it must never fail or panic. The
//! same numbering is the wire format of the `shmgate_v1` wasm ABI: a host
//! function returns `-errno`.
//!
//! # Examples
//!
//! ```
//! use shmgate_core::Errno;
//!
//! let e = Errno::from_raw(22);
//! assert_eq!(e, Errno::INVAL);
//! assert_eq!(e.name(), "EINVAL");
//! assert_eq!(format!("{e}"), "invalid argument (EINVAL)");
//!
//! // Numbers we do not know still decode and display.
//! let odd = Errno::from_raw(4000);
//! assert_eq!(odd.name(), "EUNKNOWN");
//! assert_eq!(format!("{odd}"), "unknown error 4000 (EUNKNOWN)");
//! ```

use core::fmt;

/// A Linux errno number (`EINVAL` is 22), as returned by the kernel and as
/// sent to wasm guests.
///
/// Any `u16` is a valid `Errno`; [`Errno::name`] and [`Errno::message`] fall
/// back to `"EUNKNOWN"` and `"unknown error"` for numbers this crate does not
/// name.
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Errno(u16);

/// One row per errno this crate names: the constant, its number, its name and
/// its message. Generates the constants, `name()` and `message()` from one
/// table so the three cannot drift apart.
macro_rules! errnos {
    ($( $(#[$attr:meta])* $konst:ident = $num:literal, $name:literal, $msg:literal; )*) => {
        impl Errno {
            $(
                #[doc = concat!("`", $name, "` (", stringify!($num), "): ", $msg, ".")]
                $(#[$attr])*
                pub const $konst: Errno = Errno($num);
            )*

            /// The symbolic name, such as `"EINVAL"`, or `"EUNKNOWN"` for a
            /// number this crate does not name.
            pub const fn name(self) -> &'static str {
                match self.0 {
                    $( $num => $name, )*
                    _ => "EUNKNOWN",
                }
            }

            /// A short lowercase description, such as `"invalid argument"`, or
            /// `"unknown error"` for a number this crate does not name.
            pub const fn message(self) -> &'static str {
                match self.0 {
                    $( $num => $msg, )*
                    _ => "unknown error",
                }
            }

            /// Whether this crate has a name for this number.
            pub const fn is_known(self) -> bool {
                matches!(self.0, $( $num )|*)
            }
        }
    };
}

errnos! {
    PERM = 1, "EPERM", "operation not permitted";
    NOENT = 2, "ENOENT", "no such file or directory";
    INTR = 4, "EINTR", "interrupted system call";
    IO = 5, "EIO", "input/output error";
    NXIO = 6, "ENXIO", "no such device or address";
    BADF = 9, "EBADF", "bad file descriptor";
    /// Also `EWOULDBLOCK` on Linux.
    AGAIN = 11, "EAGAIN", "resource temporarily unavailable";
    NOMEM = 12, "ENOMEM", "cannot allocate memory";
    ACCES = 13, "EACCES", "permission denied";
    FAULT = 14, "EFAULT", "bad address";
    BUSY = 16, "EBUSY", "device or resource busy";
    EXIST = 17, "EEXIST", "file exists";
    NODEV = 19, "ENODEV", "no such device";
    NOTDIR = 20, "ENOTDIR", "not a directory";
    ISDIR = 21, "EISDIR", "is a directory";
    INVAL = 22, "EINVAL", "invalid argument";
    NFILE = 23, "ENFILE", "too many open files in system";
    MFILE = 24, "EMFILE", "too many open files";
    TXTBSY = 26, "ETXTBSY", "text file busy";
    FBIG = 27, "EFBIG", "file too large";
    NOSPC = 28, "ENOSPC", "no space left on device";
    SPIPE = 29, "ESPIPE", "illegal seek";
    ROFS = 30, "EROFS", "read-only file system";
    PIPE = 32, "EPIPE", "broken pipe";
    RANGE = 34, "ERANGE", "numerical result out of range";
    NAMETOOLONG = 36, "ENAMETOOLONG", "file name too long";
    NOSYS = 38, "ENOSYS", "function not implemented";
    LOOP = 40, "ELOOP", "too many levels of symbolic links";
    NOMSG = 42, "ENOMSG", "no message of desired type";
    OVERFLOW = 75, "EOVERFLOW", "value too large for defined data type";
    MSGSIZE = 90, "EMSGSIZE", "message too long";
    /// Also `EOPNOTSUPP` on Linux.
    NOTSUP = 95, "ENOTSUP", "operation not supported";
    TIMEDOUT = 110, "ETIMEDOUT", "connection timed out";
    DQUOT = 122, "EDQUOT", "disk quota exceeded";
}

impl Errno {
    /// Wraps a raw Linux errno number. Never fails: unknown numbers are kept.
    pub const fn from_raw(raw: u16) -> Errno {
        Errno(raw)
    }

    /// The raw Linux errno number.
    pub const fn raw(self) -> u16 {
        self.0
    }

    /// Decodes the result of a `shmgate_v1` host function: a value `>= 0` is
    /// a result, a negative value is `-errno`.
    ///
    /// A negative value whose magnitude does not fit an errno (below
    /// `-65535`) decodes as [`Errno::IO`], so a guest never sees a bogus
    /// success.
    ///
    /// ```
    /// use shmgate_core::Errno;
    /// assert_eq!(Errno::from_wire(7), Ok(7));
    /// assert_eq!(Errno::from_wire(-2), Err(Errno::NOENT));
    /// assert_eq!(Errno::from_wire(i64::MIN), Err(Errno::IO));
    /// ```
    pub const fn from_wire(ret: i64) -> Result<u64, Errno> {
        if ret >= 0 {
            return Ok(ret as u64);
        }
        let magnitude = ret.unsigned_abs();
        if magnitude > u16::MAX as u64 {
            Err(Errno::IO)
        } else {
            #[allow(clippy::cast_possible_truncation)] // checked just above
            Err(Errno(magnitude as u16))
        }
    }

    /// Encodes this errno as a `shmgate_v1` host function result: `-errno`.
    ///
    /// ```
    /// use shmgate_core::Errno;
    /// assert_eq!(Errno::ACCES.to_wire(), -13);
    /// ```
    pub const fn to_wire(self) -> i64 {
        -(self.0 as i64)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            write!(f, "{} ({})", self.message(), self.name())
        } else {
            write!(f, "unknown error {} (EUNKNOWN)", self.0)
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_known() {
            write!(f, "Errno({})", self.name())
        } else {
            write!(f, "Errno({})", self.0)
        }
    }
}

impl core::error::Error for Errno {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Linux numbers are a wire format: pin every one of them.
    #[test]
    fn linux_numbers_are_pinned() {
        let expected: &[(Errno, u16, &str)] = &[
            (Errno::PERM, 1, "EPERM"),
            (Errno::NOENT, 2, "ENOENT"),
            (Errno::INTR, 4, "EINTR"),
            (Errno::IO, 5, "EIO"),
            (Errno::NXIO, 6, "ENXIO"),
            (Errno::BADF, 9, "EBADF"),
            (Errno::AGAIN, 11, "EAGAIN"),
            (Errno::NOMEM, 12, "ENOMEM"),
            (Errno::ACCES, 13, "EACCES"),
            (Errno::FAULT, 14, "EFAULT"),
            (Errno::BUSY, 16, "EBUSY"),
            (Errno::EXIST, 17, "EEXIST"),
            (Errno::NODEV, 19, "ENODEV"),
            (Errno::NOTDIR, 20, "ENOTDIR"),
            (Errno::ISDIR, 21, "EISDIR"),
            (Errno::INVAL, 22, "EINVAL"),
            (Errno::NFILE, 23, "ENFILE"),
            (Errno::MFILE, 24, "EMFILE"),
            (Errno::TXTBSY, 26, "ETXTBSY"),
            (Errno::FBIG, 27, "EFBIG"),
            (Errno::NOSPC, 28, "ENOSPC"),
            (Errno::SPIPE, 29, "ESPIPE"),
            (Errno::ROFS, 30, "EROFS"),
            (Errno::PIPE, 32, "EPIPE"),
            (Errno::RANGE, 34, "ERANGE"),
            (Errno::NAMETOOLONG, 36, "ENAMETOOLONG"),
            (Errno::NOSYS, 38, "ENOSYS"),
            (Errno::LOOP, 40, "ELOOP"),
            (Errno::NOMSG, 42, "ENOMSG"),
            (Errno::OVERFLOW, 75, "EOVERFLOW"),
            (Errno::MSGSIZE, 90, "EMSGSIZE"),
            (Errno::NOTSUP, 95, "ENOTSUP"),
            (Errno::TIMEDOUT, 110, "ETIMEDOUT"),
            (Errno::DQUOT, 122, "EDQUOT"),
        ];
        for &(errno, raw, name) in expected {
            assert_eq!(errno.raw(), raw, "{name}");
            assert_eq!(errno.name(), name);
            assert_eq!(Errno::from_raw(raw), errno);
            assert!(errno.is_known());
            assert_ne!(errno.message(), "unknown error");
        }
    }

    #[test]
    fn every_u16_decodes() {
        for raw in 0..=u16::MAX {
            let e = Errno::from_raw(raw);
            assert_eq!(e.raw(), raw);
            assert!(!e.name().is_empty());
            assert!(!e.message().is_empty());
            assert_eq!(e.is_known(), e.name() != "EUNKNOWN");
        }
    }

    #[test]
    fn display_and_debug() {
        use core::fmt::Write;
        let mut s = heapless::String::<64>::new();
        write!(s, "{}", Errno::NOENT).unwrap();
        assert_eq!(s, "no such file or directory (ENOENT)");
        s.clear();
        write!(s, "{:?}", Errno::NOENT).unwrap();
        assert_eq!(s, "Errno(ENOENT)");
        s.clear();
        write!(s, "{:?}", Errno::from_raw(0)).unwrap();
        assert_eq!(s, "Errno(0)");
        s.clear();
        write!(s, "{}", Errno::from_raw(u16::MAX)).unwrap();
        assert_eq!(s, "unknown error 65535 (EUNKNOWN)");
    }

    #[test]
    fn wire_round_trip() {
        for raw in [1u16, 22, 122, u16::MAX] {
            let e = Errno::from_raw(raw);
            assert_eq!(Errno::from_wire(e.to_wire()), Err(e));
        }
        assert_eq!(Errno::from_wire(0), Ok(0));
        assert_eq!(Errno::from_wire(i64::MAX), Ok(i64::MAX as u64));
        assert_eq!(Errno::from_wire(-65_536), Err(Errno::IO));
        assert_eq!(Errno::from_wire(i64::MIN), Err(Errno::IO));
    }
}
