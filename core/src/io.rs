//! The "exactly this many bytes" loops over positional reads and writes,
//! shared by the native host and the guest SDK so both end a short transfer
//! the same way: `EOVERFLOW` when a read meets the end of the segment,
//! `EFBIG` when a write does (segments never grow by writing).
//!
//! # Examples
//!
//! ```
//! use shmgate_core::{Errno, io};
//!
//! let segment = *b"0123456789";
//! let read_at = |buf: &mut [u8], off: u64| -> Result<usize, Errno> {
//!     let rest = segment.get(off as usize..).unwrap_or(&[]);
//!     let n = buf.len().min(rest.len()).min(3); // short reads, 3 at a time
//!     buf[..n].copy_from_slice(&rest[..n]);
//!     Ok(n)
//! };
//! let mut buf = [0; 8];
//! io::read_exact_at(&mut buf, 2, read_at, |e| e)?;
//! assert_eq!(&buf, b"23456789");
//! assert_eq!(io::read_exact_at(&mut [0; 4], 8, read_at, |e| e), Err(Errno::OVERFLOW));
//! # Ok::<(), Errno>(())
//! ```

use crate::Errno;

/// Fills `buf` from `offset` by calling `read_at(buf, offset)` (which
/// returns how many bytes it read) until `buf` is full.
///
/// # Errors
///
/// What `read_at` returns, or `short(EOVERFLOW)` if it returns 0 first.
pub fn read_exact_at<E>(
    mut buf: &mut [u8],
    mut offset: u64,
    mut read_at: impl FnMut(&mut [u8], u64) -> Result<usize, E>,
    short: impl FnOnce(Errno) -> E,
) -> Result<(), E> {
    while !buf.is_empty() {
        match read_at(buf, offset)? {
            0 => return Err(short(Errno::OVERFLOW)),
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Writes all of `buf` at `offset` by calling `write_at(buf, offset)`
/// (which returns how many bytes it wrote) until nothing is left.
///
/// # Errors
///
/// What `write_at` returns, or `short(EFBIG)` if it returns 0 first.
pub fn write_all_at<E>(
    mut buf: &[u8],
    mut offset: u64,
    mut write_at: impl FnMut(&[u8], u64) -> Result<usize, E>,
    short: impl FnOnce(Errno) -> E,
) -> Result<(), E> {
    while !buf.is_empty() {
        match write_at(buf, offset)? {
            0 => return Err(short(Errno::FBIG)),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}
