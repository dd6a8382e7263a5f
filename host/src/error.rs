//! The error of every shmgate-host operation: what was done, to which name,
//! and the errno, like Go's `os.PathError`.

use std::fmt;
use std::sync::Arc;

use shmgate_core::Errno;

/// The operation an [`Error`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// [`open`](crate::open) and the [`OpenOptions`](crate::OpenOptions) that call it.
    Open,
    /// [`unlink`](crate::unlink).
    Unlink,
    /// [`Segment::len`](crate::Segment::len).
    Len,
    /// [`Segment::set_len`](crate::Segment::set_len).
    SetLen,
    /// [`Segment::read_at`](crate::Segment::read_at) and mapping reads.
    Read,
    /// [`Segment::write_at`](crate::Segment::write_at) and mapping writes.
    Write,
    /// [`Segment::map`](crate::Segment::map).
    Map,
    /// A [`ring`](crate::ring) operation on a mapping of the segment.
    Ring,
    /// [`Segment::seal`](crate::Segment::seal) and
    /// [`Segment::seals`](crate::Segment::seals).
    Seal,
    /// [`send_segment`](crate::send_segment).
    Send,
    /// [`recv_segment`](crate::recv_segment).
    Recv,
    /// [`Segment::identity`](crate::Segment::identity) and the checks of
    /// [`lifecycle`](crate::lifecycle).
    Check,
    /// [`wait::wait32`](crate::wait::wait32) and
    /// [`wait::wait32_async`](crate::wait::wait32_async).
    Wait,
    /// [`wait::notify`](crate::wait::notify).
    Notify,
}

impl Op {
    /// The operation's name as shown in messages: `"open"`, `"set_len"`, ….
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Unlink => "unlink",
            Op::Len => "len",
            Op::SetLen => "set_len",
            Op::Read => "read",
            Op::Write => "write",
            Op::Map => "map",
            Op::Ring => "ring",
            Op::Seal => "seal",
            Op::Send => "send",
            Op::Recv => "recv",
            Op::Check => "check",
            Op::Wait => "wait32",
            Op::Notify => "notify",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An operation on a named shared memory object failed.
///
/// Shown as `open "/x": no such file or directory (ENOENT)`. The name is
/// exactly what the caller passed (leading slashes included), shown lossily
/// and escaped if it is not printable UTF-8.
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    op: Op,
    name: Arc<[u8]>,
    errno: Errno,
}

impl Error {
    pub(crate) fn new(op: Op, name: &Arc<[u8]>, errno: Errno) -> Error {
        Error {
            op,
            name: Arc::clone(name),
            errno,
        }
    }

    /// The errno (Linux numbering).
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// The operation that failed.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The name exactly as the caller passed it.
    pub fn name(&self) -> &[u8] {
        &self.name
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:?}` quotes the name and escapes control characters, so a hostile
        // name cannot forge log lines.
        let name = String::from_utf8_lossy(&self.name);
        write!(f, "{} {:?}: {}", self.op, name, self.errno)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("op", &self.op)
            .field("name", &String::from_utf8_lossy(&self.name))
            .field("errno", &self.errno)
            .finish()
    }
}

impl std::error::Error for Error {}

impl From<Error> for Errno {
    /// The errno alone.
    fn from(e: Error) -> Errno {
        e.errno
    }
}

impl From<Error> for std::io::Error {
    /// Keeps the raw OS error, so `raw_os_error()` and `kind()` work; the
    /// operation and name are lost (use [`Error`]'s `Display` first if they
    /// matter).
    fn from(e: Error) -> std::io::Error {
        std::io::Error::from_raw_os_error(i32::from(e.errno.raw()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_go_path_error_shape() {
        let e = Error::new(Op::Open, &Arc::from(&b"/x"[..]), Errno::NOENT);
        assert_eq!(
            e.to_string(),
            r#"open "/x": no such file or directory (ENOENT)"#
        );
        let e = Error::new(Op::SetLen, &Arc::from(&b"a\xff\x1b"[..]), Errno::FBIG);
        assert_eq!(
            e.to_string(),
            "set_len \"a\u{fffd}\\u{1b}\": file too large (EFBIG)"
        );
        assert_eq!(e.name(), b"a\xff\x1b");
        assert_eq!(e.op(), Op::SetLen);
    }

    #[test]
    fn io_error_keeps_raw_os_error() {
        let e = Error::new(Op::Unlink, &Arc::from(&b"x"[..]), Errno::ACCES);
        let io: std::io::Error = e.into();
        assert_eq!(io.raw_os_error(), Some(13));
        assert_eq!(io.kind(), std::io::ErrorKind::PermissionDenied);
    }
}
