//! The native ends of shmgate's single-producer, single-consumer ring, wire
//! compatible with the guest SDK's (`shmgate_guest::ring`): a native
//! process and a wasm guest, two natives or two guests can be the two ends.
//!
//! The layout and the lock-free protocol (batched publication, sleeping in
//! the futex only when the other side must wake you, and the invariants
//! that make it correct) live in [`shmgate_core::ring`], which both sides
//! compile; this module gives it a [`Mapping`]: atomics for the control
//! words, bounds-checked copies for payloads, and shared futexes, which a
//! guest's `wait32`/`notify` reach too.
//!
//! # Examples
//!
//! ```
//! use shmgate_host::{OpenOptions, ring};
//! # let name = format!("/shmgate-doc-ring-{}", std::process::id());
//! let seg = OpenOptions::new().size(64 << 10).open_owned(&name)?;
//! let map = seg.map()?;
//! let mut tx = ring::Producer::create(&map, 0..64 << 10, ring::Geometry::slot_size_for(64))?;
//! // Usually in another process (or a guest) that maps the same segment:
//! let mut rx = ring::Consumer::attach(&map, 0..64 << 10)?;
//! tx.send(b"hello")?;
//! tx.flush()?; // sends are published per batch: flush when you pause
//! let mut buf = [0; 64];
//! assert_eq!(rx.recv(&mut buf)?, Some(5));
//! assert_eq!(&buf[..5], b"hello");
//! tx.close()?;
//! assert_eq!(rx.recv(&mut buf)?, None);
//! # Ok::<(), shmgate_host::Error>(())
//! ```

use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shmgate_core::ring::{self as proto, RingMemory};
pub use shmgate_core::ring::{DEFAULT_BATCH, Geometry, HEADER, WaitMode};

use crate::sys::RawMapping;
use crate::{Errno, Error, Mapping, Op, sys};

mod asynchronous;
pub use asynchronous::{ASYNC_WAIT_MODE, AsyncConsumer, AsyncProducer};

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds: the clock for
/// timestamps that travel in ring messages. Every process on the machine
/// reads the same clock, and so do guests under `shmgate run`, whose WASI
/// monotonic clock it is (`shmgate_guest::monotonic_ns`); so a receiver's
/// `monotonic_ns() - timestamp` is the message's one-way latency.
///
/// # References
///
/// - [clock_gettime(2)](https://man7.org/linux/man-pages/man2/clock_gettime.2.html)
#[doc(alias = "clock_gettime")]
pub fn monotonic_ns() -> u64 {
    sys::monotonic_ns()
}

/// The ring's region of a [`Mapping`], with its control words looked up
/// once.
///
/// The per-message accesses (a slot's `seq`, length and payload) go to the
/// raw mapping, bounds-checked but without the revocation check that
/// [`Mapping`]'s own accessors make around each access (a registry lookup
/// each, five per message). The ring checks revocation once per message
/// instead, where it matters: before a `seq` store publishes a slot (so a
/// message written into pages a peer's shrink diverted is never published)
/// and after a payload is read (so one read from diverted pages is an
/// `ENXIO`, not a message), and before every sleep.
#[derive(Debug)]
struct Region<'a> {
    map: &'a Mapping,
    raw: &'a RawMapping,
    base: usize,
    len: usize,
    tail: &'a AtomicU32,
    consumer_asleep: &'a AtomicU32,
    producer_asleep: &'a AtomicU32,
}

impl<'a> Region<'a> {
    fn new(map: &'a Mapping, range: Range<usize>) -> Result<Region<'a>, Errno> {
        let len = range.end.checked_sub(range.start).ok_or(Errno::INVAL)?;
        if range.end > map.len() || !range.start.is_multiple_of(64) || len < HEADER {
            return Err(Errno::INVAL);
        }
        let word = |offset: usize| map.atomic_u32(range.start + offset).map_err(|e| e.errno());
        Ok(Region {
            map,
            raw: map.unchecked(),
            base: range.start,
            len,
            tail: word(proto::TAIL)?,
            consumer_asleep: word(proto::CONSUMER_ASLEEP)?,
            producer_asleep: word(proto::PRODUCER_ASLEEP)?,
        })
    }

    /// The word at `offset` of the region.
    #[inline]
    fn word(&self, offset: usize) -> Result<&'a AtomicU32, Errno> {
        Ok(match offset {
            proto::TAIL => self.tail,
            proto::CONSUMER_ASLEEP => self.consumer_asleep,
            proto::PRODUCER_ASLEEP => self.producer_asleep,
            _ => self.raw.atomic_u32(self.check(offset, 4)?)?,
        })
    }

    /// `EINVAL` unless `offset..offset + n` lies in the region.
    #[inline]
    fn check(&self, offset: usize, n: usize) -> Result<usize, Errno> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => Ok(self.base + offset),
            _ => Err(Errno::INVAL),
        }
    }

    /// `ENXIO` once the mapping is revoked (see [`Mapping::is_revoked`]).
    #[inline]
    fn intact(&self) -> Result<(), Errno> {
        if self.map.is_revoked() {
            Err(Errno::NXIO)
        } else {
            Ok(())
        }
    }
}

impl RingMemory for Region<'_> {
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn load(&self, offset: usize, order: Ordering) -> Result<u32, Errno> {
        Ok(self.word(offset)?.load(order))
    }

    #[inline]
    fn store(&self, offset: usize, value: u32, order: Ordering) -> Result<(), Errno> {
        let word = self.word(offset)?;
        if order != Ordering::Relaxed {
            // A publishing store (a slot's `seq`, `closed`, `tail`, the
            // magic): what it publishes reached the segment.
            self.intact()?;
        }
        word.store(value, order);
        Ok(())
    }

    #[inline]
    fn fence(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    #[inline]
    fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        // Checked for revocation by the `seq` store that publishes it.
        self.raw.copy_in(self.check(offset, bytes.len())?, bytes)
    }

    #[inline]
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), Errno> {
        self.raw.copy_out(self.check(offset, buf.len())?, buf)?;
        self.intact()
    }

    fn wait(&self, offset: usize, expected: u32, timeout: Option<Duration>) -> Result<(), Errno> {
        self.intact()?;
        sys::futex::wait(self.word(offset)?, expected, timeout)
    }

    fn wake(&self, offset: usize) -> Result<(), Errno> {
        sys::futex::wake(self.word(offset)?)
    }
}

/// The sending end of a ring in a [`Mapping`].
#[derive(Debug)]
pub struct Producer<'a> {
    inner: proto::Producer<Region<'a>>,
}

impl<'a> Producer<'a> {
    /// Formats a new ring in `range` of `map` (64-byte aligned, at least
    /// [`HEADER`] bytes plus one slot) with slots of `slot_size` bytes
    /// ([`Geometry::slot_size_for`] a message size), as many as fit.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a bad range or slot size, `EACCES` for a read-only
    /// mapping.
    pub fn create(
        map: &'a Mapping,
        range: Range<usize>,
        slot_size: usize,
    ) -> Result<Producer<'a>, Error> {
        let err = |e| Error::new(Op::Ring, map.name(), e);
        let region = Region::new(map, range).map_err(err)?;
        let inner = proto::Producer::create(region, slot_size).map_err(err)?;
        Ok(Producer { inner })
    }

    fn err(&self, e: Errno) -> Error {
        Error::new(Op::Ring, self.inner.memory().map.name(), e)
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    /// The largest message [`send`](Producer::send) takes.
    pub fn max_message(&self) -> usize {
        self.inner.max_message()
    }

    /// Publishes at least every `batch` messages (1: each message at once).
    pub fn set_batch(&mut self, batch: u32) {
        self.inner.set_batch(batch);
    }

    /// Waits for room in `mode` from now on ([`WaitMode::ADAPTIVE`] by
    /// default).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.inner.set_wait_mode(mode);
    }

    /// Waits until a consumer has attached (or `timeout` passes), so a
    /// stream starts with both ends running.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT`.
    pub fn wait_for_consumer(&self, timeout: Duration) -> Result<(), Error> {
        self.inner
            .wait_for_consumer(timeout)
            .map_err(|e| self.err(e))
    }

    /// Sends one message, waiting while the ring is full. Messages are
    /// published per batch, when the ring is full, when the consumer is
    /// seen asleep, and on [`flush`](Producer::flush) or
    /// [`close`](Producer::close): flush when the stream pauses.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a message longer than
    /// [`max_message`](Producer::max_message); `EPIPE` after `close`.
    #[inline]
    pub fn send(&mut self, msg: &[u8]) -> Result<(), Error> {
        match self.inner.send(msg) {
            Ok(()) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Publishes every message sent so far.
    ///
    /// # Errors
    ///
    /// Errors from waking the consumer (none expected).
    pub fn flush(&mut self) -> Result<(), Error> {
        self.inner.flush().map_err(|e| self.err(e))
    }

    /// Publishes every message and marks the ring closed; dropping the
    /// producer does the same.
    ///
    /// # Errors
    ///
    /// Errors from waking the consumer (none expected).
    pub fn close(&mut self) -> Result<(), Error> {
        self.inner.close().map_err(|e| self.err(e))
    }
}

/// The receiving end of a ring in a [`Mapping`].
#[derive(Debug)]
pub struct Consumer<'a> {
    inner: proto::Consumer<Region<'a>>,
}

impl<'a> Consumer<'a> {
    /// Attaches to the ring a producer formatted in `range` of `map` (which
    /// must be writable: the consumer hands slots back).
    ///
    /// # Errors
    ///
    /// `EINVAL` if the range holds no ring (yet): retry after the producer
    /// has created it; `EACCES` for a read-only mapping.
    pub fn attach(map: &'a Mapping, range: Range<usize>) -> Result<Consumer<'a>, Error> {
        let err = |e| Error::new(Op::Ring, map.name(), e);
        let region = Region::new(map, range).map_err(err)?;
        let inner = proto::Consumer::attach(region).map_err(err)?;
        Ok(Consumer { inner })
    }

    fn err(&self, e: Errno) -> Error {
        Error::new(Op::Ring, self.inner.memory().map.name(), e)
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    /// Waits for messages in `mode` from now on ([`WaitMode::ADAPTIVE`] by
    /// default).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.inner.set_wait_mode(mode);
    }

    /// Receives one message into `buf`, waiting while the ring is empty;
    /// returns its length, or `None` once the producer has closed the ring
    /// and it is drained.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `buf` is shorter than the message (it stays queued) or
    /// a slot holds an impossible length.
    #[inline]
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        match self.inner.recv(buf) {
            Ok(r) => Ok(r),
            Err(e) => Err(self.err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::{OpenOptions, OwnedSegment};

    fn segment(tag: &str, size: u64) -> OwnedSegment {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("/shmgate-test-ring-{tag}-{}-{n}", std::process::id());
        OpenOptions::new().size(size).open_owned(name).unwrap()
    }

    #[test]
    fn regions_are_checked() {
        let seg = segment("regions", 64 << 10);
        let map = seg.map().unwrap();
        let e = Producer::create(&map, 8..(64 << 10), 72).unwrap_err();
        assert_eq!((e.op(), e.errno()), (Op::Ring, Errno::INVAL));
        let e = Producer::create(&map, 0..(128 << 10), 72).unwrap_err();
        assert_eq!(e.errno(), Errno::INVAL);
        let e = Consumer::attach(&map, 0..(64 << 10)).unwrap_err();
        assert_eq!(e.errno(), Errno::INVAL, "no ring yet");
        assert!(
            e.to_string()
                .starts_with("ring \"/shmgate-test-ring-regions-")
        );
    }

    #[test]
    fn a_shrunk_segment_is_an_error_not_a_message() {
        let seg = segment("shrunk", 64 << 10);
        let map = seg.map().unwrap();
        let mut tx = Producer::create(&map, 0..64 << 10, 16).unwrap();
        let mut rx = Consumer::attach(&map, 0..64 << 10).unwrap();
        tx.set_batch(1);
        tx.send(b"before").unwrap();
        let mut buf = [0; 8];
        assert_eq!(rx.recv(&mut buf).unwrap(), Some(6));
        // A peer cuts the slots off: the header page stays.
        seg.set_len(HEADER as u64).unwrap();
        // The payload lands in diverted pages: never published.
        assert_eq!(tx.send(b"after").unwrap_err().errno(), Errno::NXIO);
        assert_eq!(rx.recv(&mut buf).unwrap_err().errno(), Errno::NXIO);
        assert!(map.is_revoked());
    }

    #[test]
    fn threads_stream_in_order_in_every_wait_mode() {
        let seg = segment("threads", 64 << 10);
        let map = seg.map().unwrap();
        for mode in [WaitMode::SPIN, WaitMode::BLOCK, WaitMode::ADAPTIVE] {
            let mut tx = Producer::create(&map, 0..8192, 16).unwrap();
            tx.set_wait_mode(mode);
            let mut rx = Consumer::attach(&map, 0..8192).unwrap();
            rx.set_wait_mode(mode);
            const N: u64 = 200_000;
            std::thread::scope(|s| {
                s.spawn(move || {
                    for i in 0..N {
                        tx.send(&i.to_le_bytes()).unwrap();
                    }
                });
                let mut buf = [0; 12];
                let mut next = 0u64;
                while let Some(n) = rx.recv(&mut buf).unwrap() {
                    assert_eq!(n, 8);
                    assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), next);
                    next += 1;
                }
                assert_eq!(next, N, "{mode:?}");
            });
        }
    }
}
