//! The async ends of the ring: the same protocol ([`shmgate_core::ring`])
//! over a mapping they own, whose waits are futures of the
//! [`wait`](crate::wait) engine instead of blocking `futex` calls.
//!
//! The core's protocol asks its memory to sleep in exactly one place (the
//! side's asleep word, invariant 4 of [`shmgate_core::ring`]), after it
//! has stored 1 to that word, fenced and looked at the other side's index
//! again. This memory does not sleep there: it notes the word and returns
//! an error, which unwinds the protocol call before it changed anything
//! but the asleep word (a send has written no slot, a receive has taken no
//! message). The async end then awaits [`wait32_async`] on that word, and
//! calls the protocol again. So:
//!
//! - the wire format and the protocol are the sync ends' and the guest
//!   SDK's, from the same code: either end can face any other;
//! - a dropped `send`, `recv` or `flush` future loses no message: until
//!   the future returns `Ready`, the message was not taken (or not
//!   written); the dropped wait future cancels its kernel wait;
//! - a wake-up is never lost: the async wait expects the asleep word to
//!   hold 1, and the other side stores 0 to it before it wakes it, so a
//!   wake that comes before the wait is armed makes it return at once.

use std::cell::Cell;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shmgate_core::ring::{self as proto, RingMemory};

use super::{Geometry, HEADER, WaitMode};
use crate::wait::wait32_async;
use crate::{Errno, Error, Mapping, Op, sys};

/// How the async ends wait by default: no spinning (a spin would hold the
/// executor's thread), and no nap (a periodic wake-up of every idle end
/// would cost CPU): a wake-up from the other side is never lost.
pub const ASYNC_WAIT_MODE: WaitMode = WaitMode {
    spins: 0,
    nap: None,
};

/// A wait the protocol asked for and the memory declined: the word's
/// offset in the region, the value it held, and the longest sleep.
type Parked = (usize, u32, Option<Duration>);

/// The ring's region of a mapping this end owns (an `Arc`), whose `wait`
/// declines (see the module docs).
#[derive(Debug)]
struct OwnedRegion {
    map: Arc<Mapping>,
    base: usize,
    len: usize,
    parked: Cell<Option<Parked>>,
}

impl OwnedRegion {
    fn new(map: Arc<Mapping>, range: Range<usize>) -> Result<OwnedRegion, Errno> {
        let len = range.end.checked_sub(range.start).ok_or(Errno::INVAL)?;
        if range.end > map.len() || !range.start.is_multiple_of(64) || len < HEADER {
            return Err(Errno::INVAL);
        }
        Ok(OwnedRegion {
            map,
            base: range.start,
            len,
            parked: Cell::new(None),
        })
    }

    /// `EINVAL` unless `offset..offset + n` lies in the region.
    fn check(&self, offset: usize, n: usize) -> Result<usize, Errno> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len => Ok(self.base + offset),
            _ => Err(Errno::INVAL),
        }
    }

    fn word(&self, offset: usize) -> Result<&std::sync::atomic::AtomicU32, Errno> {
        let at = self.check(offset, 4)?;
        self.map.atomic_u32(at).map_err(|e| e.errno())
    }
}

impl RingMemory for OwnedRegion {
    fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn load(&self, offset: usize, order: Ordering) -> Result<u32, Errno> {
        Ok(self.word(offset)?.load(order))
    }

    #[inline]
    fn store(&self, offset: usize, value: u32, order: Ordering) -> Result<(), Errno> {
        self.word(offset)?.store(value, order);
        Ok(())
    }

    #[inline]
    fn fence(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    #[inline]
    fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        let at = self.check(offset, bytes.len())?;
        self.map.write_at(at, bytes).map_err(|e| e.errno())
    }

    #[inline]
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), Errno> {
        let at = self.check(offset, buf.len())?;
        self.map.read_at(at, buf).map_err(|e| e.errno())
    }

    /// Declines: notes the wait for the async end (which awaits it) and
    /// fails with `EAGAIN`, unwinding the protocol call.
    fn wait(&self, offset: usize, expected: u32, timeout: Option<Duration>) -> Result<(), Errno> {
        self.check(offset, 4)?;
        self.parked.set(Some((offset, expected, timeout)));
        Err(Errno::AGAIN)
    }

    fn wake(&self, offset: usize) -> Result<(), Errno> {
        sys::futex::wake(self.word(offset)?)
    }
}

/// Awaits the wait `mem` declined, if it declined one; `Err(e)` passes a
/// protocol error on. The side that woke us has already reset our asleep
/// word (it stores 0 before it wakes); after a spurious wake-up it stays
/// 1 until the other side next publishes, which then wakes nobody.
async fn park(
    map: &Arc<Mapping>,
    base: usize,
    parked: Option<Parked>,
    e: Errno,
) -> Result<(), Errno> {
    let Some((offset, expected, nap)) = parked else {
        return Err(e);
    };
    match wait32_async(map, base + offset, expected, nap).await {
        Ok(()) => {}
        Err(e) if matches!(e.errno(), Errno::AGAIN | Errno::TIMEDOUT) => {}
        Err(e) => return Err(e.errno()),
    }
    Ok(())
}

/// The sending end of a ring, async: [`send`](AsyncProducer::send) waits
/// for room without blocking the thread. Wire compatible with
/// [`Producer`](super::Producer) and the guest SDK's ends.
#[derive(Debug)]
pub struct AsyncProducer {
    inner: proto::Producer<OwnedRegion>,
}

/// The receiving end of a ring, async: [`recv`](AsyncConsumer::recv)
/// waits for messages without blocking the thread. Wire compatible with
/// [`Consumer`](super::Consumer) and the guest SDK's ends.
#[derive(Debug)]
pub struct AsyncConsumer {
    inner: proto::Consumer<OwnedRegion>,
}

impl AsyncProducer {
    /// Formats a new ring in `range` of `map` with slots of `slot_size`
    /// bytes, as [`Producer::create`](super::Producer::create) does.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a bad range or slot size, `EACCES` for a read-only
    /// mapping.
    pub fn create(
        map: Arc<Mapping>,
        range: Range<usize>,
        slot_size: usize,
    ) -> Result<AsyncProducer, Error> {
        let name = Arc::clone(map.name());
        let err = |e| Error::new(Op::Ring, &name, e);
        let region = OwnedRegion::new(map, range).map_err(err)?;
        let mut inner = proto::Producer::create(region, slot_size).map_err(err)?;
        inner.set_wait_mode(ASYNC_WAIT_MODE);
        Ok(AsyncProducer { inner })
    }

    fn err(&self, e: Errno) -> Error {
        Error::new(Op::Ring, self.inner.memory().map.name(), e)
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    /// The largest message [`send`](AsyncProducer::send) takes.
    pub fn max_message(&self) -> usize {
        self.inner.max_message()
    }

    /// Publishes at least every `batch` messages (1: each message at once).
    pub fn set_batch(&mut self, batch: u32) {
        self.inner.set_batch(batch);
    }

    /// Waits for room in `mode` from now on ([`ASYNC_WAIT_MODE`] by
    /// default; spins run inside `poll`, on the executor's thread).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.inner.set_wait_mode(mode);
    }

    /// Waits until a consumer has attached, at most `timeout`.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT`.
    pub async fn wait_for_consumer(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
            match self.inner.wait_for_consumer(left) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let (map, base) = (
                        Arc::clone(&self.inner.memory().map),
                        self.inner.memory().base,
                    );
                    let parked = self.inner.memory().parked.take();
                    park(&map, base, parked, e).await.map_err(|e| self.err(e))?;
                }
            }
        }
    }

    /// Sends one message, waiting (as a future) while the ring is full;
    /// published as [`Producer::send`](super::Producer::send) says: flush
    /// when the stream pauses. Dropped before it is ready, the future has
    /// sent nothing.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a message longer than
    /// [`max_message`](AsyncProducer::max_message); `EPIPE` after `close`.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), Error> {
        loop {
            match self.inner.send(msg) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let (map, base) = (
                        Arc::clone(&self.inner.memory().map),
                        self.inner.memory().base,
                    );
                    let parked = self.inner.memory().parked.take();
                    park(&map, base, parked, e).await.map_err(|e| self.err(e))?;
                }
            }
        }
    }

    /// Publishes every message sent so far (it never waits: the future is
    /// ready at its first poll).
    ///
    /// # Errors
    ///
    /// Errors from waking the consumer (none expected).
    pub async fn flush(&mut self) -> Result<(), Error> {
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

impl AsyncConsumer {
    /// Attaches to the ring a producer formatted in `range` of `map`, as
    /// [`Consumer::attach`](super::Consumer::attach) does.
    ///
    /// # Errors
    ///
    /// `EINVAL` if the range holds no ring (yet); `EACCES` for a read-only
    /// mapping.
    pub fn attach(map: Arc<Mapping>, range: Range<usize>) -> Result<AsyncConsumer, Error> {
        let name = Arc::clone(map.name());
        let err = |e| Error::new(Op::Ring, &name, e);
        let region = OwnedRegion::new(map, range).map_err(err)?;
        let mut inner = proto::Consumer::attach(region).map_err(err)?;
        inner.set_wait_mode(ASYNC_WAIT_MODE);
        Ok(AsyncConsumer { inner })
    }

    fn err(&self, e: Errno) -> Error {
        Error::new(Op::Ring, self.inner.memory().map.name(), e)
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    /// Waits for messages in `mode` from now on ([`ASYNC_WAIT_MODE`] by
    /// default).
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.inner.set_wait_mode(mode);
    }

    /// Receives one message into `buf`, waiting (as a future) while the
    /// ring is empty; its length, or `None` once the producer has closed
    /// the ring and it is drained. Dropped before it is ready, the future
    /// has taken no message.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `buf` is shorter than the message (it stays queued) or
    /// a slot holds an impossible length.
    pub async fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        loop {
            match self.inner.recv(buf) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let (map, base) = (
                        Arc::clone(&self.inner.memory().map),
                        self.inner.memory().base,
                    );
                    let parked = self.inner.memory().parked.take();
                    park(&map, base, parked, e).await.map_err(|e| self.err(e))?;
                }
            }
        }
    }
}
