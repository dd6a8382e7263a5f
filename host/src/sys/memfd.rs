//! Anonymous segments (`memfd_create`), their seals, and passing
//! descriptors over a Unix socket (`SCM_RIGHTS`).

use std::ffi::CStr;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::fs::{self as rfs, MemfdFlags, SealFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use shmgate_core::Errno;

use super::{errno, retry};

/// `F_SEAL_*` bits, as the kernel numbers them.
pub(crate) type Seals = u32;

/// `memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING)`.
pub(crate) fn memfd_create(label: &CStr) -> Result<OwnedFd, Errno> {
    rfs::memfd_create(label, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).map_err(errno)
}

/// `fcntl(fd, F_ADD_SEALS, seals)`.
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: Seals) -> Result<(), Errno> {
    retry(|| rfs::fcntl_add_seals(fd, SealFlags::from_bits_retain(seals)))
}

/// `fcntl(fd, F_GET_SEALS)`. `EINVAL` for a file that cannot be sealed
/// (anything but a memfd, on tmpfs).
pub(crate) fn get_seals(fd: BorrowedFd<'_>) -> Result<Seals, Errno> {
    rfs::fcntl_get_seals(fd).map(|s| s.bits()).map_err(errno)
}

/// `sendmsg(sock, "S", SCM_RIGHTS [fd], MSG_NOSIGNAL)`: one byte of data
/// (a stream socket cannot carry control data alone) and one descriptor.
pub(crate) fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let fds = [fd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Errno::NOMEM);
    }
    let data = [IoSlice::new(b"S")];
    let sent = retry(|| rustix::net::sendmsg(sock, &data, &mut control, SendFlags::NOSIGNAL))?;
    if sent == 1 { Ok(()) } else { Err(Errno::IO) }
}

/// `recvmsg(sock, 1 byte, MSG_CMSG_CLOEXEC)`: the one descriptor a
/// [`send_fd`] sent, close-on-exec.
///
/// # Errors
///
/// `ENOMSG` if the peer closed or sent no descriptor, `EMSGSIZE` if it
/// sent more than one (all are closed), and the kernel's `recvmsg` errors.
pub(crate) fn recv_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let mut data = [IoSliceMut::new(&mut byte)];
    let msg =
        retry(|| rustix::net::recvmsg(sock, &mut data, &mut control, RecvFlags::CMSG_CLOEXEC))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > 1 {
        return Err(Errno::MSGSIZE); // `fds` are closed on the way out.
    }
    match (msg.bytes, fds.pop()) {
        (1, Some(fd)) => Ok(fd),
        _ => Err(Errno::NOMSG),
    }
}
