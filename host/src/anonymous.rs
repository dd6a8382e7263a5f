//! Anonymous, sealable segments (`memfd_create`) and passing any segment
//! to another process over a Unix socket (`SCM_RIGHTS`).
//!
//! A POSIX shared memory object cannot be sealed: anyone who can open it
//! can shrink it under everyone's mappings. A memfd has no name (nobody can
//! open it; it is shared only by passing its descriptor) and can carry
//! seals that even its creator cannot lift: [`Seals::SHRINK`] guarantees
//! every mapping of the segment stays backed, so mappings of a segment
//! sealed against shrinking never meet `SIGBUS`.
//!
//! # Examples
//!
//! ```
//! use std::os::unix::net::UnixStream;
//! use shmgate_host::{Seals, Segment, recv_segment, send_segment};
//!
//! let seg = Segment::anonymous(4096)?;
//! seg.write_all_at(b"hello", 0)?;
//! seg.seal(Seals::SHRINK | Seals::GROW | Seals::SEAL)?;
//!
//! let (a, b) = UnixStream::pair().expect("socketpair");
//! send_segment(&a, &seg)?; // usually to another process
//! let got = recv_segment(&b)?;
//! assert!(got.seals()?.contains(Seals::SHRINK));
//! assert_eq!(got.set_len(0).unwrap_err().errno(), shmgate_host::Errno::PERM);
//! let mut buf = [0; 5];
//! got.read_exact_at(&mut buf, 0)?;
//! assert_eq!(&buf, b"hello");
//! # Ok::<(), shmgate_host::Error>(())
//! ```

use std::fmt;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use shmgate_core::Errno;

use crate::sys;
use crate::{Error, Op, Segment};

/// The name an anonymous segment shows in errors.
const ANONYMOUS: &[u8] = b"memfd:shmgate";
/// The name a received segment shows in errors.
const RECEIVED: &[u8] = b"memfd:received";

/// Seals of an anonymous segment (`F_SEAL_*`): restrictions that, once
/// added, hold for every descriptor and mapping of it, forever.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Seals(u32);

impl Seals {
    /// No seals.
    pub const NONE: Seals = Seals(0);
    /// `F_SEAL_SEAL`: no more seals can be added.
    #[doc(alias = "F_SEAL_SEAL")]
    pub const SEAL: Seals = Seals(0x0001);
    /// `F_SEAL_SHRINK`: the size can no longer shrink, so no mapping can
    /// ever meet `SIGBUS`.
    #[doc(alias = "F_SEAL_SHRINK")]
    pub const SHRINK: Seals = Seals(0x0002);
    /// `F_SEAL_GROW`: the size can no longer grow.
    #[doc(alias = "F_SEAL_GROW")]
    pub const GROW: Seals = Seals(0x0004);
    /// `F_SEAL_WRITE`: the contents can no longer change (`EBUSY` while a
    /// writable shared mapping exists).
    #[doc(alias = "F_SEAL_WRITE")]
    pub const WRITE: Seals = Seals(0x0008);
    /// `F_SEAL_FUTURE_WRITE` (Linux 5.1): no new writes or writable
    /// mappings, while existing writable mappings keep working, so the
    /// sealer can keep writing and its peers only read.
    #[doc(alias = "F_SEAL_FUTURE_WRITE")]
    pub const FUTURE_WRITE: Seals = Seals(0x0010);

    /// The `F_SEAL_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Seals from `F_SEAL_*` bits (unknown bits are kept).
    pub const fn from_bits(bits: u32) -> Seals {
        Seals(bits)
    }

    /// Whether every seal of `other` is in `self`.
    pub const fn contains(self, other: Seals) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Seals {
    type Output = Seals;
    fn bitor(self, rhs: Seals) -> Seals {
        Seals(self.0 | rhs.0)
    }
}

impl fmt::Debug for Seals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Seals::SEAL, "SEAL"),
            (Seals::SHRINK, "SHRINK"),
            (Seals::GROW, "GROW"),
            (Seals::WRITE, "WRITE"),
            (Seals::FUTURE_WRITE, "FUTURE_WRITE"),
        ];
        let mut shown: Vec<&str> = names
            .iter()
            .filter(|(s, _)| self.contains(*s))
            .map(|(_, n)| *n)
            .collect();
        let known = names.iter().fold(0, |acc, (s, _)| acc | s.0);
        let unknown = format!("{:#x}", self.0 & !known);
        if self.0 & !known != 0 {
            shown.push(&unknown);
        }
        if shown.is_empty() {
            shown.push("NONE");
        }
        write!(f, "Seals({})", shown.join(" | "))
    }
}

impl Segment {
    /// `memfd_create("shmgate", MFD_CLOEXEC | MFD_ALLOW_SEALING)`, then
    /// `ftruncate(size)`: a read-write segment with no name, which can be
    /// [sealed](Segment::seal) and [sent](send_segment) to other processes.
    /// Errors show its name as `memfd:shmgate`. It works everywhere a named
    /// segment does (I/O, [`map`](Segment::map), `AsFd`).
    ///
    /// # Errors
    ///
    /// `EMFILE`, `ENFILE`, `ENOMEM`; as [`Segment::set_len`].
    ///
    /// # References
    ///
    /// - [`memfd_create(2)`](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
    #[doc(alias = "memfd_create")]
    pub fn anonymous(size: u64) -> Result<Segment, Error> {
        let name: Arc<[u8]> = Arc::from(ANONYMOUS);
        let fd = sys::memfd_create(c"shmgate").map_err(|e| Error::new(Op::Open, &name, e))?;
        let seg = Segment::from_parts(fd, name, true);
        if size > 0 {
            seg.set_len(size)?;
        }
        Ok(seg)
    }

    /// `fcntl(F_ADD_SEALS)`: adds `seals`, which then bind every descriptor
    /// and mapping of the segment, in every process, for good.
    ///
    /// # Errors
    ///
    /// `EPERM` if [`Seals::SEAL`] is set (a named `/dev/shm` object always
    /// carries it: it can never be sealed), `EBUSY` for [`Seals::WRITE`]
    /// while a writable mapping exists, `EINVAL` for a read-only
    /// descriptor or a file that is not on tmpfs.
    ///
    /// # References
    ///
    /// - [`memfd_create(2)`](https://man7.org/linux/man-pages/man2/memfd_create.2.html), "File sealing"
    #[doc(alias = "F_ADD_SEALS")]
    pub fn seal(&self, seals: Seals) -> Result<(), Error> {
        sys::add_seals(self.fd(), seals.bits())
            .map_err(|e| Error::new(Op::Seal, &self.name_arc(), e))
    }

    /// `fcntl(F_GET_SEALS)`: the seals the segment carries. A named
    /// `/dev/shm` object reports [`Seals::SEAL`] alone: no seal can ever be
    /// added to it.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a file that is not on tmpfs.
    #[doc(alias = "F_GET_SEALS")]
    pub fn seals(&self) -> Result<Seals, Error> {
        sys::get_seals(self.fd())
            .map(Seals::from_bits)
            .map_err(|e| Error::new(Op::Seal, &self.name_arc(), e))
    }

    fn name_arc(&self) -> Arc<[u8]> {
        Arc::from(self.name())
    }
}

/// `sendmsg` with `SCM_RIGHTS`: passes a duplicate of `seg`'s descriptor
/// (and with it, the segment and its seals) to the process at the other end
/// of `sock`, with one byte of data. The peer receives it with
/// [`recv_segment`]. Named and anonymous segments both work.
///
/// # Errors
///
/// The kernel's `sendmsg` errors (`EPIPE` when the peer is gone; never
/// `SIGPIPE`).
///
/// # References
///
/// - [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html), `SCM_RIGHTS`
#[doc(alias = "SCM_RIGHTS")]
pub fn send_segment(sock: &UnixStream, seg: &Segment) -> Result<(), Error> {
    sys::send_fd(sock.as_fd(), seg.fd()).map_err(|e| Error::new(Op::Send, &seg.name_arc(), e))
}

/// `recvmsg` with `SCM_RIGHTS`: receives a segment that [`send_segment`]
/// sent, close-on-exec. It is writable if the sender's descriptor was open
/// read-write (the seals decide what writes succeed); errors show it as
/// `memfd:received`. Check [`Segment::seals`] before trusting its size.
///
/// # Errors
///
/// `ENOMSG` if the peer closed or sent no descriptor, `EMSGSIZE` if it
/// sent more than one (all are closed), `EINVAL` if the descriptor is not a regular file,
/// and the kernel's `recvmsg` errors.
pub fn recv_segment(sock: &UnixStream) -> Result<Segment, Error> {
    let name: Arc<[u8]> = Arc::from(RECEIVED);
    let fail = |e| Error::new(Op::Recv, &name, e);
    let fd = sys::recv_fd(sock.as_fd()).map_err(fail)?;
    let (regular, writable) = sys::regular_and_writable(fd.as_fd()).map_err(fail)?;
    if !regular {
        return Err(fail(Errno::INVAL));
    }
    Ok(Segment::from_parts(fd, name, writable))
}
