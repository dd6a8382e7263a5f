//! A single-producer, single-consumer ring of fixed-size messages in a
//! [`Window`], for two guests (in two processes, say) that map the same
//! segment. Messages move at memory speed; the host is called only to sleep
//! when the ring is empty or full (`wait32`) and to wake the other side
//! (`notify`), and only when that side is actually asleep.
//!
//! # Layout (offsets in the window)
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `SGR2` (layout version 2) |
//! | 4 | number of slots (a power of two) |
//! | 8 | slot size in bytes (a multiple of 8, at least 16) |
//! | 64 | reserved |
//! | 128 | `tail`: messages consumed |
//! | 192 | consumer asleep (1) or not (0): its futex word |
//! | 256 | producer asleep: its futex word |
//! | 320 | closed by the producer |
//! | 384 | a consumer has attached |
//! | 4096 | the slots: a `u32` sequence word (`i + 1` once message `i` is in the slot), a `u32` length, then the payload |
//!
//! A message is published by the sequence word of its own slot, so with
//! slots of 64 bytes or less ([`Geometry::slot_size_for`] a message of up
//! to 56 bytes) it crosses from one end to the other in one cache line.
//!
//! The layout and the protocol (batched publication, sleeping only when
//! the other side must wake you, and its invariants) are
//! [`shmgate_core::ring`]'s, which native ends (`shmgate_host::ring`)
//! compile too: a guest and a native process can be the two ends. Sends
//! are published per batch: call [`Producer::flush`] when the stream
//! pauses ([`Producer::close`] and dropping the producer flush too).
//!
//! Correct ordering across processes needs real atomics: build guests with
//! `-C target-feature=+atomics,+bulk-memory` ([`HAS_ATOMICS`](crate::HAS_ATOMICS)).
//! Without them every sleep is bounded by a short timeout, so a missed
//! wake-up costs time, not progress.
//!
//! # Examples
//!
//! ```no_run
//! use shmgate_guest::{Prot, Segment, ring};
//! let seg = Segment::create("ring", 1 << 20)?;
//! let win = seg.map(0..1 << 20, Prot::ReadWrite)?;
//! let mut tx = ring::Producer::create(&seg, &win, 0, 64)?;
//! tx.send(b"hello")?;
//! tx.close()?;
//! # Ok::<(), shmgate_guest::Errno>(())
//! ```

use core::sync::atomic::Ordering;
use core::time::Duration;

use shmgate_core::ring::{self as proto, RingMemory};
pub use shmgate_core::ring::{DEFAULT_BATCH, Geometry, HEADER, WaitMode};

use crate::{Errno, Segment, Window};

/// How message payloads move between a guest's buffer and a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Copied in guest code, straight into or out of the window (zero host
    /// calls per message).
    Window,
    /// Copied by the host with `write`/`read` calls (one per message); the
    /// ring's control words still live in the window. For comparison, and
    /// for hosts that grant a small control window only.
    HostCalls,
}

/// The ring's window as [`shmgate_core::ring`] sees it.
#[derive(Debug)]
struct Region<'a> {
    seg: &'a Segment,
    win: &'a Window,
    /// The segment offset of the window's first byte (for wait/notify).
    base: u64,
    transport: Transport,
}

impl RingMemory for Region<'_> {
    fn len(&self) -> usize {
        self.win.len()
    }

    #[inline]
    fn load(&self, offset: usize, order: Ordering) -> Result<u32, Errno> {
        self.win.load_u32(offset, order)
    }

    #[inline]
    fn store(&self, offset: usize, value: u32, order: Ordering) -> Result<(), Errno> {
        self.win.atomic_u32(offset)?.store(value, order);
        Ok(())
    }

    /// The protocol fences only between an atomic store and an atomic load
    /// (store, fence, load: invariant 4 of [`shmgate_core::ring`]). Wasm's
    /// atomic loads and stores are all sequentially consistent, so such a
    /// store and load are already ordered when they run, and wasmtime
    /// compiles the store with a full barrier on x86 (`mfence`); an
    /// `atomic.fence` would add a second one per publication. The compiler
    /// fence keeps LLVM from moving the load above the store, which it may
    /// do to the `Release` store and `Relaxed` load the protocol asks for.
    /// Without the `atomics` feature there is nothing to fence (see the
    /// module documentation).
    #[inline]
    fn fence(&self) {
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
    }

    #[inline]
    fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        match self.transport {
            Transport::Window => self.win.write_at(offset, bytes),
            Transport::HostCalls => self.seg.write_all_at(bytes, self.base + offset as u64),
        }
    }

    #[inline]
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), Errno> {
        match self.transport {
            Transport::Window => self.win.read_at(offset, buf),
            Transport::HostCalls => self.seg.read_exact_at(buf, self.base + offset as u64),
        }
    }

    fn wait(&self, offset: usize, expected: u32, timeout: Option<Duration>) -> Result<(), Errno> {
        match self
            .seg
            .wait32(self.base + offset as u64, expected, timeout)
        {
            Ok(()) | Err(Errno::AGAIN | Errno::TIMEDOUT | Errno::INTR) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn wake(&self, offset: usize) -> Result<(), Errno> {
        self.seg
            .notify(self.base + offset as u64, u32::MAX)
            .map(drop)
    }
}

/// The sending end.
#[derive(Debug)]
pub struct Producer<'a> {
    inner: proto::Producer<Region<'a>>,
}

impl<'a> Producer<'a> {
    /// Formats a new ring in `win` (a writable window of `seg` starting at
    /// segment offset `base`) with slots of `slot_size` bytes, as many as
    /// fit (a power of two), and returns its producer.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `slot_size` is not a multiple of 8 of at least 16, or
    /// no slot fits; `EACCES` on a read-only window.
    pub fn create(
        seg: &'a Segment,
        win: &'a Window,
        base: u64,
        slot_size: usize,
    ) -> Result<Producer<'a>, Errno> {
        let region = Region {
            seg,
            win,
            base,
            transport: Transport::Window,
        };
        // The default wait mode bounds every sleep, which a guest without
        // atomics needs (see the module documentation).
        Ok(Producer {
            inner: proto::Producer::create(region, slot_size)?,
        })
    }

    /// Moves payloads with `transport` from now on.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.inner.memory_mut().transport = transport;
        self
    }

    /// Publishes at least every `batch` messages (1: each message at once).
    pub fn set_batch(&mut self, batch: u32) {
        self.inner.set_batch(batch);
    }

    /// Waits for room in `mode` from now on.
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.inner.set_wait_mode(mode);
    }

    /// Waits until a consumer has attached (or `timeout` passes), so that
    /// a stream starts with both ends running.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT`, and host errors from sleeping.
    pub fn wait_for_consumer(&self, timeout: Duration) -> Result<(), Errno> {
        self.inner.wait_for_consumer(timeout)
    }

    /// The largest message [`send`](Producer::send) takes.
    pub fn max_message(&self) -> usize {
        self.inner.max_message()
    }

    /// Sends one message, waiting while the ring is full. Messages are
    /// published per batch, when the ring is full, when the consumer is
    /// seen asleep, and on [`flush`](Producer::flush) or
    /// [`close`](Producer::close).
    ///
    /// # Errors
    ///
    /// `EINVAL` for a message longer than
    /// [`max_message`](Producer::max_message); `EPIPE` after `close`; host
    /// errors from sleeping.
    #[inline]
    pub fn send(&mut self, msg: &[u8]) -> Result<(), Errno> {
        self.inner.send(msg)
    }

    /// Publishes every message sent so far.
    ///
    /// # Errors
    ///
    /// Host errors from waking the consumer.
    pub fn flush(&mut self) -> Result<(), Errno> {
        self.inner.flush()
    }

    /// Publishes every message and marks the ring closed: the consumer
    /// drains it and then sees the end. Dropping the producer does the
    /// same.
    ///
    /// # Errors
    ///
    /// Host errors from waking the consumer.
    pub fn close(&mut self) -> Result<(), Errno> {
        self.inner.close()
    }
}

/// The receiving end.
#[derive(Debug)]
pub struct Consumer<'a> {
    inner: proto::Consumer<Region<'a>>,
}

impl<'a> Consumer<'a> {
    /// Attaches to the ring a producer formatted in `win` (a writable
    /// window of `seg` at segment offset `base`; the consumer writes its
    /// progress into the header).
    ///
    /// # Errors
    ///
    /// `EINVAL` if the window holds no ring (yet): retry after the
    /// producer has created it.
    pub fn attach(seg: &'a Segment, win: &'a Window, base: u64) -> Result<Consumer<'a>, Errno> {
        let region = Region {
            seg,
            win,
            base,
            transport: Transport::Window,
        };
        Ok(Consumer {
            inner: proto::Consumer::attach(region)?,
        })
    }

    /// Moves payloads with `transport` from now on.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.inner.memory_mut().transport = transport;
        self
    }

    /// Waits for messages in `mode` from now on.
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
    /// a slot holds an impossible length; host errors from sleeping.
    #[inline]
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Errno> {
        self.inner.recv(buf)
    }
}
