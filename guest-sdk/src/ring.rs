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
//! | 0 | magic `SGR1` |
//! | 4 | number of slots (a power of two) |
//! | 8 | slot size in bytes (a multiple of 8, at least 16) |
//! | 64 | `head`: messages published (wrapping `u32`) |
//! | 128 | `tail`: messages consumed |
//! | 192 | consumer asleep (1) or not (0) |
//! | 256 | producer asleep |
//! | 320 | closed by the producer |
//! | 384 | a consumer has attached |
//! | 4096 | the slots: a `u32` length, then the payload |
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

use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use crate::{Errno, Segment, Window};

const MAGIC: u32 = u32::from_le_bytes(*b"SGR1");
const SLOTS: usize = 4;
const SLOT_SIZE: usize = 8;
const HEAD: usize = 64;
const TAIL: usize = 128;
const CONSUMER_ASLEEP: usize = 192;
const PRODUCER_ASLEEP: usize = 256;
const CLOSED: usize = 320;
const ATTACHED: usize = 384;
/// Where the slots start.
pub const HEADER: usize = 4096;

/// The consumer publishes `tail` at least this often.
const TAIL_BATCH: u32 = 32;

/// How often to re-check before sleeping, and the longest single sleep.
const SPINS: u32 = 200;
const NAP: Duration = Duration::from_millis(10);

/// What both ends share: the window, where it sits in the segment, and
/// the geometry read from (or written to) the header.
struct Shared<'a> {
    seg: &'a Segment,
    win: &'a Window,
    /// The segment offset of the window's first byte (for wait/notify).
    base: u64,
    slots: u32,
    slot_size: usize,
}

impl<'a> Shared<'a> {
    fn word(&self, offset: usize) -> Result<&'a AtomicU32, Errno> {
        self.win.atomic_u32(offset)
    }

    fn slot(&self, index: u32) -> usize {
        HEADER + (index & (self.slots - 1)) as usize * self.slot_size
    }

    fn open(seg: &'a Segment, win: &'a Window, base: u64) -> Result<Shared<'a>, Errno> {
        if win.load_u32(0, Ordering::Acquire)? != MAGIC {
            return Err(Errno::INVAL);
        }
        let slots = win.load_u32(SLOTS, Ordering::Relaxed)?;
        let slot_size = win.load_u32(SLOT_SIZE, Ordering::Relaxed)? as usize;
        let shared = Shared {
            seg,
            win,
            base,
            slots,
            slot_size,
        };
        shared.check_geometry()?;
        Ok(shared)
    }

    fn check_geometry(&self) -> Result<(), Errno> {
        let fits = (self.slots as usize)
            .checked_mul(self.slot_size)
            .and_then(|n| n.checked_add(HEADER))
            .is_some_and(|end| end <= self.win.len());
        let ok = self.slots.is_power_of_two()
            && self.slot_size >= 16
            && self.slot_size.is_multiple_of(8)
            && fits;
        if ok { Ok(()) } else { Err(Errno::INVAL) }
    }

    /// Sleeps while the word at `offset` still holds `seen`, telling the
    /// other side through `asleep` that it must notify.
    fn sleep_on(&self, offset: usize, seen: u32, asleep: usize) -> Result<(), Errno> {
        let flag = self.word(asleep)?;
        flag.store(1, Ordering::SeqCst);
        let r = if self.word(offset)?.load(Ordering::SeqCst) == seen {
            self.seg.wait32(self.base + offset as u64, seen, Some(NAP))
        } else {
            Ok(())
        };
        flag.store(0, Ordering::SeqCst);
        match r {
            Ok(()) | Err(Errno::AGAIN) | Err(Errno::TIMEDOUT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Re-reads the word at `offset` until `done` makes something of it:
    /// spinning first, then sleeping on it (flagged in `asleep`).
    fn wait_until<R>(
        &self,
        offset: usize,
        asleep: usize,
        mut done: impl FnMut(u32) -> Result<Option<R>, Errno>,
    ) -> Result<R, Errno> {
        let word = self.word(offset)?;
        let mut spins = 0;
        loop {
            let seen = word.load(Ordering::Acquire);
            if let Some(r) = done(seen)? {
                return Ok(r);
            }
            spins += 1;
            if spins < SPINS {
                core::hint::spin_loop();
            } else {
                self.sleep_on(offset, seen, asleep)?;
            }
        }
    }

    /// Wakes the other side if it said it is asleep.
    fn wake(&self, offset: usize, asleep: usize) -> Result<(), Errno> {
        if self.word(asleep)?.load(Ordering::SeqCst) != 0 {
            self.seg.notify(self.base + offset as u64, 1)?;
        }
        Ok(())
    }
}

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

/// The sending end.
pub struct Producer<'a> {
    shared: Shared<'a>,
    head: u32,
    /// The consumer's `tail` as last read: re-read only when the ring
    /// looks full, so the consumer's cache line is not pulled over for
    /// every message.
    tail_seen: u32,
    transport: Transport,
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
        let room = win.len().checked_sub(HEADER).ok_or(Errno::INVAL)?;
        let fit = room / slot_size.max(1);
        if fit == 0 {
            return Err(Errno::INVAL);
        }
        let slots = u32::try_from(1usize << fit.ilog2()).map_err(|_| Errno::INVAL)?;
        let shared = Shared {
            seg,
            win,
            base,
            slots,
            slot_size,
        };
        shared.check_geometry()?;
        for offset in [
            HEAD,
            TAIL,
            CONSUMER_ASLEEP,
            PRODUCER_ASLEEP,
            CLOSED,
            ATTACHED,
        ] {
            shared.word(offset)?.store(0, Ordering::Relaxed);
        }
        shared.word(SLOTS)?.store(slots, Ordering::Relaxed);
        let slot_size = u32::try_from(slot_size).map_err(|_| Errno::INVAL)?;
        shared.word(SLOT_SIZE)?.store(slot_size, Ordering::Relaxed);
        // Last: a consumer trusts the header once it sees the magic.
        shared.word(0)?.store(MAGIC, Ordering::Release);
        Ok(Producer {
            shared,
            head: 0,
            tail_seen: 0,
            transport: Transport::Window,
        })
    }

    /// Moves payloads with `transport` from now on.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Waits until a consumer has attached (or `timeout` passes), so that
    /// a stream starts with both ends running.
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT`, and host errors from sleeping.
    pub fn wait_for_consumer(&self, timeout: Duration) -> Result<(), Errno> {
        let s = &self.shared;
        let attached = s.word(ATTACHED)?;
        let mut left = timeout;
        while attached.load(Ordering::SeqCst) == 0 {
            if left.is_zero() {
                return Err(Errno::TIMEDOUT);
            }
            let nap = left.min(NAP);
            match s.seg.wait32(s.base + ATTACHED as u64, 0, Some(nap)) {
                Ok(()) | Err(Errno::AGAIN) | Err(Errno::TIMEDOUT) => {}
                Err(e) => return Err(e),
            }
            left = left.saturating_sub(nap);
        }
        Ok(())
    }

    /// The largest message [`send`](Producer::send) takes.
    pub fn max_message(&self) -> usize {
        self.shared.slot_size - 4
    }

    /// Sends one message, waiting while the ring is full.
    ///
    /// # Errors
    ///
    /// `EMSGSIZE`-like `EINVAL` for a message longer than
    /// [`max_message`](Producer::max_message); host errors from sleeping.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), Errno> {
        if msg.len() > self.max_message() {
            return Err(Errno::INVAL);
        }
        let s = &self.shared;
        if self.head.wrapping_sub(self.tail_seen) >= s.slots {
            let head = self.head;
            self.tail_seen = s.wait_until(TAIL, PRODUCER_ASLEEP, |tail| {
                Ok((head.wrapping_sub(tail) < s.slots).then_some(tail))
            })?;
        }
        let slot = s.slot(self.head);
        // `msg.len() <= max_message() < slot_size`, which fits a u32.
        let len = u32::try_from(msg.len()).map_err(|_| Errno::INVAL)?;
        // A plain store: wasm has only sequentially consistent atomic
        // stores, each a fence on x86; the `head` store below publishes it.
        s.win.write_at(slot, &len.to_le_bytes())?;
        match self.transport {
            Transport::Window => s.win.write_at(slot + 4, msg)?,
            Transport::HostCalls => s.seg.write_all_at(msg, s.base + slot as u64 + 4)?,
        }
        self.head = self.head.wrapping_add(1);
        // SeqCst: the store must be ordered before the load of the
        // consumer's asleep flag in `wake` (the consumer does the mirror
        // image in `sleep_on`), or a wake-up could be missed.
        s.word(HEAD)?.store(self.head, Ordering::SeqCst);
        s.wake(HEAD, CONSUMER_ASLEEP)
    }

    /// Marks the ring closed: the consumer drains it and then sees the end.
    ///
    /// # Errors
    ///
    /// Host errors from waking the consumer.
    pub fn close(&mut self) -> Result<(), Errno> {
        let s = &self.shared;
        s.word(CLOSED)?.store(1, Ordering::SeqCst);
        // Bump head's futex so a sleeping consumer re-checks.
        s.seg.notify(s.base + HEAD as u64, u32::MAX).map(drop)
    }
}

/// The receiving end.
pub struct Consumer<'a> {
    shared: Shared<'a>,
    tail: u32,
    /// The producer's `head` as last read: re-read only when caught up.
    head_seen: u32,
    transport: Transport,
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
        let shared = Shared::open(seg, win, base)?;
        shared.word(ATTACHED)?.store(1, Ordering::SeqCst);
        seg.notify(base + ATTACHED as u64, u32::MAX)?;
        let tail = shared.word(TAIL)?.load(Ordering::Acquire);
        Ok(Consumer {
            shared,
            tail,
            head_seen: tail,
            transport: Transport::Window,
        })
    }

    /// Moves payloads with `transport` from now on.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// Receives one message into `buf`, waiting while the ring is empty;
    /// returns its length, or `None` once the producer has closed the ring
    /// and it is drained.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `buf` is shorter than the message (it stays queued) or
    /// a slot holds an impossible length; host errors from sleeping.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Errno> {
        let s = &self.shared;
        if self.head_seen == self.tail {
            let tail = self.tail;
            let closed = s.word(CLOSED)?;
            // Some(Some(head)): new messages; Some(None): closed and drained.
            let next = s.wait_until(HEAD, CONSUMER_ASLEEP, |head| {
                if head != tail {
                    Ok(Some(Some(head)))
                } else if closed.load(Ordering::SeqCst) != 0
                    && s.word(HEAD)?.load(Ordering::SeqCst) == tail
                {
                    Ok(Some(None))
                } else {
                    Ok(None)
                }
            })?;
            match next {
                Some(head) => self.head_seen = head,
                None => return Ok(None),
            }
        }
        let slot = s.slot(self.tail);
        let len = s.win.load_u32(slot, Ordering::Relaxed)? as usize;
        if len > s.slot_size - 4 || len > buf.len() {
            return Err(Errno::INVAL);
        }
        match self.transport {
            Transport::Window => s.win.read_at(slot + 4, &mut buf[..len])?,
            Transport::HostCalls => s
                .seg
                .read_exact_at(&mut buf[..len], s.base + slot as u64 + 4)?,
        }
        self.tail = self.tail.wrapping_add(1);
        // Hand slots back in batches: when we have drained what we saw of
        // `head` (always before we could sleep), or every TAIL_BATCH
        // messages; each store pulls the producer's cache line over.
        if self.tail == self.head_seen || self.tail.is_multiple_of(TAIL_BATCH) {
            s.word(TAIL)?.store(self.tail, Ordering::SeqCst);
            s.wake(TAIL, PRODUCER_ASLEEP)?;
        }
        Ok(Some(len))
    }
}
