//! The single-producer, single-consumer ring both ends compile: its layout
//! in shared memory, its index arithmetic, and the lock-free protocol
//! (publication, batching, sleeping and waking), written once over a
//! [`RingMemory`] so a native process ([`shmgate-host`]'s `ring`), a wasm
//! guest (`shmgate-guest`'s `ring`) and a model checker drive the very
//! same code.
//!
//! [`shmgate-host`]: https://docs.rs/shmgate-host
//!
//! # Layout (offsets from the start of the ring's region)
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `SGR2` (version 2 of the layout; version 1, `SGR1`, kept a `head` word) |
//! | 4 | number of slots (a power of two) |
//! | 8 | slot size in bytes (a multiple of 8, at least 16) |
//! | 64 | reserved (version 1's `head`; version 2 publishes in the slots) |
//! | 128 | `tail`: messages consumed and handed back |
//! | 192 | consumer asleep (1) or not (0); the consumer's futex word |
//! | 256 | producer asleep; the producer's futex word |
//! | 320 | closed by the producer |
//! | 384 | a consumer has attached (futex word of `wait_for_consumer`) |
//! | 4096 | the slots |
//!
//! A slot is a `u32` sequence word (`seq`, at [`SEQ_AT`]), a `u32` length
//! (little-endian, at [`LEN_AT`]), then the payload (at [`LEN_PREFIX`]).
//! Message `i` (a free-running `u32` count) goes to slot `i mod slots`, and
//! its `seq` reads `i + 1` (wrapping) once it is there: the consumer learns
//! that a message arrived from the very cache line that holds it, so a
//! message of up to 56 bytes in a 64-byte slot ([`Geometry::slot_size_for`])
//! crosses between the two ends in one cache line.
//!
//! Each control word has a 64-byte cache line of its own, so the producer
//! and the consumer (writing `tail`) never write the same line.
//!
//! # The protocol and its invariants
//!
//! Indices are free-running `u32` message counts (`head`: sent, `tail`:
//! consumed); slot `i` is `i mod slots`. Writers: only the producer writes
//! `closed` and the slots (their `seq`, length and payload); only the
//! consumer writes `tail` and `attached`; each side sets its own asleep
//! word to 1 and either side may reset it to 0. [`Producer::create`] zeroes
//! every `seq` before it stores the magic.
//!
//! 1. **Bounds.** `0 <= head - tail <= slots` (wrapping), because the
//!    producer fills slot `h` only after seeing `tail > h - slots`, and the
//!    consumer reads slot `t` only after seeing its `seq` read `t + 1`.
//! 2. **Publication.** The producer writes a slot's length and payload,
//!    then stores its `seq` (`i + 1` for message `i`) with `Release`; the
//!    consumer loads the `seq` of slot `t` with `Acquire` and reads the slot
//!    only if it reads `t + 1`. So a message is complete when seen. The
//!    value is unambiguous: the slot held message `t - slots` before (`seq`
//!    `t - slots + 1`, a different value since `slots < 2^32`), or, on the
//!    first lap, the zero `create` stored, which is `t + 1` for no first-lap
//!    `t`. Symmetrically the consumer reads a slot before storing `tail`
//!    (`Release`), and the producer loads `tail` (`Acquire`) before reusing
//!    it. No message is read before it is written, or overwritten before it
//!    is read: none is lost or duplicated.
//! 3. **Batching.** Every message is visible at once (its `seq`), but
//!    [`Producer::send`] *publishes* (full fence, then the wake-up check of
//!    4) only per batch ([`Producer::set_batch`]), when the ring is full
//!    (before it waits), when it sees the consumer asleep, on
//!    [`Producer::flush`] and on [`Producer::close`]. The consumer hands
//!    `tail` back (store, fence, wake-up check) every [`TAIL_BATCH`]
//!    messages (or half the ring, if less) and always before it waits. So after `flush` or `close`
//!    every sent message is published, and a side never sleeps past the
//!    other's next publication while the other holds work for it.
//! 4. **No lost wake-up.** A side that found nothing to do sleeps like
//!    this: store 1 to its asleep word, full fence, load the word it waits
//!    on again (the consumer: the next slot's `seq`; the producer: `tail`),
//!    and only if it is unchanged `futex_wait(asleep, 1)`. The other side,
//!    after publishing (store, full fence), loads the asleep word and, if it
//!    is 1, stores 0 to it and `futex_wake`s it. The two fences are ordered
//!    one way or the other: either the sleeper's re-load sees the new value,
//!    or the waker's load sees the 1 and wakes. The sleeper waits on its
//!    *asleep* word, which every waker changes before waking, so a wake-up
//!    that lands before the sleeper is in the kernel makes `futex_wait`
//!    return at once (the value is no longer 1): nothing is lost between
//!    the check and the sleep, whatever the reason for the wake-up (a new
//!    message, `closed`, a new `tail`). Spurious wake-ups are harmless: the
//!    sleeper looks again.
//! 5. **End.** `close` publishes, stores `closed` (`Release`), fences, and
//!    wakes the consumer as in 4. The consumer reports the end only after
//!    seeing `closed` and then the next slot's `seq` still not `tail + 1`,
//!    so the end comes after the last message.
//!
//! The fences are `SeqCst` fences (not `SeqCst` accesses) so that the model
//! checker can check them: `RUSTFLAGS="--cfg shmgate_loom" cargo test -p
//! shmgate-host --release --test ring_loom` runs the protocol on loom's
//! atomics, with a futex built from loom's mutex and condition variable,
//! through every interleaving of a small ring.
//!
//! # Examples
//!
//! ```
//! use shmgate_core::ring::{Geometry, HEADER};
//!
//! // A ring of 64-byte messages in one 64 KiB window.
//! let g = Geometry::fit(64 << 10, Geometry::slot_size_for(64))?;
//! assert_eq!((g.slots(), g.slot_size()), (512, 72));
//! assert_eq!(g.slot_offset(513), HEADER + 72);
//! assert_eq!(g.max_message(), 64);
//! // Messages of up to 56 bytes: one 64-byte slot, one cache line each.
//! assert_eq!(Geometry::slot_size_for(56), 64);
//! # Ok::<(), shmgate_core::Errno>(())
//! ```

use core::sync::atomic::Ordering;
use core::time::Duration;

use crate::Errno;

/// The magic at offset 0: the ring's header is valid once it reads so.
/// `SGR2`: the layout with a `seq` word in each slot (version 1, `SGR1`,
/// published a `head` word instead; the two do not interoperate, and a
/// consumer refuses a magic it does not know).
pub const MAGIC: u32 = u32::from_le_bytes(*b"SGR2");
/// Offset of the magic.
pub const MAGIC_AT: usize = 0;
/// Offset of the number of slots.
pub const SLOTS: usize = 4;
/// Offset of the slot size.
pub const SLOT_SIZE: usize = 8;
/// Offset of version 1's `head` word, reserved in version 2 (messages are
/// published by the `seq` word of their slot, see [`SEQ_AT`]); nothing
/// reads or writes it.
pub const HEAD: usize = 64;
/// Offset of `tail`, the count of consumed messages.
pub const TAIL: usize = 128;
/// Offset of the consumer's asleep word (its futex word).
pub const CONSUMER_ASLEEP: usize = 192;
/// Offset of the producer's asleep word (its futex word).
pub const PRODUCER_ASLEEP: usize = 256;
/// Offset of the closed flag.
pub const CLOSED: usize = 320;
/// Offset of the attached flag.
pub const ATTACHED: usize = 384;
/// Where the slots start.
pub const HEADER: usize = 4096;
/// Offset in a slot of its `seq` word: `i + 1` (wrapping) once message `i`
/// is in it.
pub const SEQ_AT: usize = 0;
/// Offset in a slot of the message's length (a little-endian `u32`).
pub const LEN_AT: usize = 4;
/// Bytes before each slot's payload: `seq` and length.
pub const LEN_PREFIX: usize = 8;
/// The consumer hands `tail` back at least this often (and at least every
/// half ring).
pub const TAIL_BATCH: u32 = 64;
/// The producer's default batch (see [`Producer::set_batch`]).
pub const DEFAULT_BATCH: u32 = 64;

/// The shape of a ring: how many slots of what size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    slots: u32,
    slot_size: u32,
}

impl Geometry {
    /// A geometry of `slots` slots of `slot_size` bytes.
    ///
    /// # Errors
    ///
    /// `EINVAL` unless `slots` is a power of two, `slot_size` a multiple of
    /// 8 of at least 16, and header plus slots fit in `region_len` bytes.
    pub fn new(slots: u32, slot_size: u32, region_len: usize) -> Result<Geometry, Errno> {
        let fits = (slots as usize)
            .checked_mul(slot_size as usize)
            .and_then(|n| n.checked_add(HEADER))
            .is_some_and(|end| end <= region_len);
        let ok = slots.is_power_of_two() && slot_size >= 16 && slot_size.is_multiple_of(8);
        if ok && fits {
            Ok(Geometry { slots, slot_size })
        } else {
            Err(Errno::INVAL)
        }
    }

    /// As many slots of `slot_size` bytes as fit in `region_len` bytes (a
    /// power of two).
    ///
    /// # Errors
    ///
    /// `EINVAL` for a bad `slot_size` or when not one slot fits.
    pub fn fit(region_len: usize, slot_size: usize) -> Result<Geometry, Errno> {
        let room = region_len.checked_sub(HEADER).ok_or(Errno::INVAL)?;
        let fit = room / slot_size.max(1);
        if fit == 0 {
            return Err(Errno::INVAL);
        }
        let slots = u32::try_from(1usize << fit.ilog2()).unwrap_or(1 << 31);
        let slot_size = u32::try_from(slot_size).map_err(|_| Errno::INVAL)?;
        Geometry::new(slots, slot_size, region_len)
    }

    /// The slot size that holds messages of up to `max_message` bytes: a
    /// power of two up to 64 bytes (16, 32 or 64, so that no slot straddles
    /// two cache lines: a message of up to 56 bytes moves in one), a
    /// multiple of 8 above.
    pub const fn slot_size_for(max_message: usize) -> usize {
        let n = max_message + LEN_PREFIX;
        if n <= 16 {
            16
        } else if n <= 64 {
            n.next_power_of_two()
        } else {
            n.div_ceil(8) * 8
        }
    }

    /// The region a ring of this geometry needs, header included.
    pub const fn region_len(&self) -> usize {
        HEADER + self.slots as usize * self.slot_size as usize
    }

    /// The number of slots.
    pub const fn slots(&self) -> u32 {
        self.slots
    }

    /// The slot size in bytes.
    pub const fn slot_size(&self) -> usize {
        self.slot_size as usize
    }

    /// The largest message.
    pub const fn max_message(&self) -> usize {
        self.slot_size as usize - LEN_PREFIX
    }

    /// The offset of the slot message `index` uses.
    pub const fn slot_offset(&self, index: u32) -> usize {
        HEADER + (index & (self.slots - 1)) as usize * self.slot_size as usize
    }

    /// Messages in flight between `tail` and `head`.
    pub const fn used(head: u32, tail: u32) -> u32 {
        head.wrapping_sub(tail)
    }

    /// Whether the producer at `head` must wait for a consumer at `tail`.
    pub const fn is_full(&self, head: u32, tail: u32) -> bool {
        Geometry::used(head, tail) >= self.slots
    }
}

/// The shared memory a ring lives in, as each end reaches it. Offsets are
/// from the start of the ring's region; word offsets are 4-byte aligned.
///
/// Implementations: `shmgate_host::ring` over a `Mapping`, the guest SDK's
/// `ring` over a `Window`, and the loom model's memory.
#[allow(clippy::len_without_is_empty)] // a ring's region is never empty
pub trait RingMemory {
    /// The region's length in bytes.
    fn len(&self) -> usize;
    /// An atomic load of the `u32` at `offset`.
    ///
    /// # Errors
    ///
    /// `EINVAL` out of bounds.
    fn load(&self, offset: usize, order: Ordering) -> Result<u32, Errno>;
    /// An atomic store to the `u32` at `offset`.
    ///
    /// # Errors
    ///
    /// `EINVAL` out of bounds, `EACCES` read-only.
    fn store(&self, offset: usize, value: u32, order: Ordering) -> Result<(), Errno>;
    /// A `SeqCst` fence.
    fn fence(&self);
    /// Copies `bytes` into the region at `offset` (a payload).
    ///
    /// # Errors
    ///
    /// As [`store`](RingMemory::store).
    fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), Errno>;
    /// Copies `buf.len()` bytes at `offset` out of the region.
    ///
    /// # Errors
    ///
    /// `EINVAL` out of bounds.
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), Errno>;
    /// Sleeps while the `u32` at `offset` holds `expected`, at most
    /// `timeout` (`None`: until woken). Returning early (a spurious wake-up,
    /// a changed value, a timeout) is allowed: callers look again.
    ///
    /// # Errors
    ///
    /// Errors of the underlying wait, other than "changed" and "timed out".
    fn wait(&self, offset: usize, expected: u32, timeout: Option<Duration>) -> Result<(), Errno>;
    /// Wakes every waiter on the `u32` at `offset`, in any process.
    ///
    /// # Errors
    ///
    /// Errors of the underlying wake.
    fn wake(&self, offset: usize) -> Result<(), Errno>;
}

/// How a side waits for the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitMode {
    /// Re-checks (with a spin-loop hint) before sleeping; `u32::MAX` never
    /// sleeps.
    pub spins: u32,
    /// The longest single sleep (`None`: until woken). A bound recovers from
    /// a peer without real atomics (a guest built without the `atomics`
    /// feature), whose missing fences could lose a wake-up.
    pub nap: Option<Duration>,
}

impl WaitMode {
    /// Spin a little, then sleep in the futex (the default).
    pub const ADAPTIVE: WaitMode = WaitMode {
        spins: 1 << 10,
        nap: Some(Duration::from_millis(50)),
    };
    /// Never sleep: lowest latency, one core busy while waiting.
    pub const SPIN: WaitMode = WaitMode {
        spins: u32::MAX,
        nap: None,
    };
    /// Sleep in the futex as soon as there is nothing to do.
    pub const BLOCK: WaitMode = WaitMode {
        spins: 0,
        nap: Some(Duration::from_millis(50)),
    };
}

impl Default for WaitMode {
    fn default() -> Self {
        WaitMode::ADAPTIVE
    }
}

/// Re-reads the word at `watch` until `done` makes something of it,
/// spinning first, then sleeping on `asleep` (invariant 4).
fn wait_until<M: RingMemory, R>(
    mem: &M,
    mode: WaitMode,
    watch: usize,
    asleep: usize,
    mut done: impl FnMut(&M, u32) -> Result<Option<R>, Errno>,
) -> Result<R, Errno> {
    let mut spins = 0u32;
    loop {
        let seen = mem.load(watch, Ordering::Acquire)?;
        if let Some(r) = done(mem, seen)? {
            return Ok(r);
        }
        if spins < mode.spins {
            spins += 1;
            core::hint::spin_loop();
            continue;
        }
        mem.store(asleep, 1, Ordering::Relaxed)?;
        mem.fence();
        let again = mem.load(watch, Ordering::Acquire)?;
        let r = if let Some(r) = done(mem, again)? {
            Some(r)
        } else {
            mem.wait(asleep, 1, mode.nap)?;
            None
        };
        mem.store(asleep, 0, Ordering::Relaxed)?;
        if let Some(r) = r {
            return Ok(r);
        }
    }
}

/// After a store and a fence: wakes the side sleeping on `asleep`, if any
/// (invariant 4).
fn wake_if_asleep<M: RingMemory>(mem: &M, asleep: usize) -> Result<(), Errno> {
    if mem.load(asleep, Ordering::Relaxed)? != 0 {
        mem.store(asleep, 0, Ordering::Relaxed)?;
        mem.wake(asleep)?;
    }
    Ok(())
}

/// Reads and checks the geometry a producer wrote.
fn read_geometry<M: RingMemory>(mem: &M) -> Result<Geometry, Errno> {
    if mem.load(MAGIC_AT, Ordering::Acquire)? != MAGIC {
        return Err(Errno::INVAL);
    }
    let slots = mem.load(SLOTS, Ordering::Relaxed)?;
    let slot_size = mem.load(SLOT_SIZE, Ordering::Relaxed)?;
    Geometry::new(slots, slot_size, mem.len())
}

/// The sending end of a ring, over any [`RingMemory`].
#[derive(Debug)]
pub struct Producer<M: RingMemory> {
    mem: M,
    geometry: Geometry,
    /// Messages written into slots (each visible by its `seq`).
    head: u32,
    /// `head` at the last publication (fence and wake-up check).
    published: u32,
    /// The consumer's `tail` as last read: re-read only when the ring looks
    /// full, so the consumer's cache line is not pulled over per message.
    tail_seen: u32,
    batch: u32,
    mode: WaitMode,
    closed: bool,
}

impl<M: RingMemory> Producer<M> {
    /// Formats a new ring in `mem` with slots of `slot_size` bytes, as many
    /// as fit, and returns its producer.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a bad `slot_size` or no room; `EACCES` read-only.
    pub fn create(mem: M, slot_size: usize) -> Result<Producer<M>, Errno> {
        let geometry = Geometry::fit(mem.len(), slot_size)?;
        for offset in [
            MAGIC_AT,
            HEAD,
            TAIL,
            CONSUMER_ASLEEP,
            PRODUCER_ASLEEP,
            CLOSED,
            ATTACHED,
        ] {
            mem.store(offset, 0, Ordering::Relaxed)?;
        }
        // A `seq` left from an earlier ring in this memory could read as a
        // message of this one (invariant 2).
        for i in 0..geometry.slots {
            mem.store(geometry.slot_offset(i) + SEQ_AT, 0, Ordering::Relaxed)?;
        }
        mem.store(SLOTS, geometry.slots, Ordering::Relaxed)?;
        mem.store(SLOT_SIZE, geometry.slot_size, Ordering::Relaxed)?;
        // Last: a consumer trusts the header once it sees the magic.
        mem.store(MAGIC_AT, MAGIC, Ordering::Release)?;
        Ok(Producer {
            mem,
            geometry,
            head: 0,
            published: 0,
            tail_seen: 0,
            batch: DEFAULT_BATCH,
            mode: WaitMode::default(),
            closed: false,
        })
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The memory the ring lives in, to adjust how it is reached (not
    /// where: the ring must stay in the same memory).
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    /// Publishes at least every `batch` messages (1: every message; at
    /// least 1).
    pub fn set_batch(&mut self, batch: u32) {
        self.batch = batch.max(1);
    }

    /// Waits for room in `mode` from now on.
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.mode = mode;
    }

    /// The largest message [`send`](Producer::send) takes.
    pub fn max_message(&self) -> usize {
        self.geometry.max_message()
    }

    /// Messages sent so far (published or not).
    pub fn sent(&self) -> u32 {
        self.head
    }

    /// Waits until a consumer has attached, at most `timeout` (in `nap`
    /// slices of at most 10 ms).
    ///
    /// # Errors
    ///
    /// `ETIMEDOUT`, and errors from sleeping.
    pub fn wait_for_consumer(&self, timeout: Duration) -> Result<(), Errno> {
        const NAP: Duration = Duration::from_millis(10);
        let mut left = timeout;
        while self.mem.load(ATTACHED, Ordering::Acquire)? == 0 {
            if left.is_zero() {
                return Err(Errno::TIMEDOUT);
            }
            let nap = left.min(NAP);
            self.mem.wait(ATTACHED, 0, Some(nap))?;
            left = left.saturating_sub(nap);
        }
        Ok(())
    }

    /// Sends one message, waiting while the ring is full. It is published
    /// with its batch: call [`flush`](Producer::flush) when the stream
    /// pauses.
    ///
    /// # Errors
    ///
    /// `EINVAL` for a message longer than
    /// [`max_message`](Producer::max_message), `EPIPE` after
    /// [`close`](Producer::close), and errors from sleeping.
    #[inline]
    pub fn send(&mut self, msg: &[u8]) -> Result<(), Errno> {
        self.send_with(msg.len(), |mem, at| mem.write(at, msg))
    }

    /// Sends one message of `len` bytes that `fill(memory, offset)` writes
    /// into the slot at `offset` (with [`RingMemory::write`]): a zero-copy
    /// send for callers that build the message in place.
    ///
    /// # Errors
    ///
    /// As [`send`](Producer::send), and `fill`'s errors.
    #[inline]
    pub fn send_with(
        &mut self,
        len: usize,
        fill: impl FnOnce(&M, usize) -> Result<(), Errno>,
    ) -> Result<(), Errno> {
        if len > self.geometry.max_message() {
            return Err(Errno::INVAL);
        }
        if self.closed {
            return Err(Errno::PIPE);
        }
        if self.geometry.is_full(self.head, self.tail_seen) {
            self.wait_for_room()?;
        }
        let slot = self.geometry.slot_offset(self.head);
        // `len <= max_message() < slot_size`, a u32.
        let len32 = u32::try_from(len).map_err(|_| Errno::INVAL)?;
        // A plain copy, not an atomic store: a wasm atomic store is
        // sequentially consistent (a fence on x86) whatever the ordering
        // asked for. The `seq` store publishes it (invariant 2).
        self.mem.write(slot + LEN_AT, &len32.to_le_bytes())?;
        fill(&self.mem, slot + LEN_PREFIX)?;
        self.head = self.head.wrapping_add(1);
        self.mem
            .store(slot + SEQ_AT, self.head, Ordering::Release)?;
        if self.head.wrapping_sub(self.published) >= self.batch
            || self.mem.load(CONSUMER_ASLEEP, Ordering::Relaxed)? != 0
        {
            self.publish()?;
        }
        Ok(())
    }

    /// Publishes what was sent, then waits until the consumer frees a slot.
    #[cold]
    fn wait_for_room(&mut self) -> Result<(), Errno> {
        // Never wait on a full ring the consumer cannot see (invariant 3).
        self.publish()?;
        let (head, g) = (self.head, self.geometry);
        self.tail_seen = wait_until(&self.mem, self.mode, TAIL, PRODUCER_ASLEEP, |_, tail| {
            Ok((!g.is_full(head, tail)).then_some(tail))
        })?;
        Ok(())
    }

    /// The fence and wake-up check after the `seq` stores since the last
    /// one (invariants 3 and 4).
    fn publish(&mut self) -> Result<(), Errno> {
        if self.published == self.head {
            return Ok(());
        }
        self.published = self.head;
        self.mem.fence();
        wake_if_asleep(&self.mem, CONSUMER_ASLEEP)
    }

    /// Publishes every message sent so far.
    ///
    /// # Errors
    ///
    /// Errors from waking the consumer.
    pub fn flush(&mut self) -> Result<(), Errno> {
        self.publish()
    }

    /// Publishes every message and marks the ring closed: the consumer
    /// drains it and then sees the end. Closing twice does nothing.
    ///
    /// # Errors
    ///
    /// Errors from waking the consumer.
    pub fn close(&mut self) -> Result<(), Errno> {
        if self.closed {
            return Ok(());
        }
        self.publish()?;
        self.closed = true;
        self.mem.store(CLOSED, 1, Ordering::Release)?;
        self.mem.fence();
        wake_if_asleep(&self.mem, CONSUMER_ASLEEP)
    }
}

impl<M: RingMemory> Drop for Producer<M> {
    /// Closes the ring (errors are ignored: nobody could act on them).
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The receiving end of a ring, over any [`RingMemory`].
#[derive(Debug)]
pub struct Consumer<M: RingMemory> {
    mem: M,
    geometry: Geometry,
    /// Messages consumed.
    tail: u32,
    /// The `tail` last stored (handed back).
    released: u32,
    /// Hands `tail` back at least this often: [`TAIL_BATCH`], or half the
    /// ring if that is less, so a producer never waits on a full ring that
    /// a busy consumer has mostly drained.
    release_every: u32,
    mode: WaitMode,
}

impl<M: RingMemory> Consumer<M> {
    /// Attaches to the ring a producer formatted in `mem`.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `mem` holds no ring (yet): retry after the producer has
    /// created it.
    pub fn attach(mem: M) -> Result<Consumer<M>, Errno> {
        let geometry = read_geometry(&mem)?;
        let tail = mem.load(TAIL, Ordering::Acquire)?;
        mem.store(ATTACHED, 1, Ordering::Release)?;
        mem.wake(ATTACHED)?;
        Ok(Consumer {
            mem,
            geometry,
            tail,
            released: tail,
            release_every: TAIL_BATCH.min(geometry.slots / 2).max(1),
            mode: WaitMode::default(),
        })
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The memory the ring lives in.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The memory the ring lives in, to adjust how it is reached (not
    /// where: the ring must stay in the same memory).
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    /// Waits for messages in `mode` from now on.
    pub fn set_wait_mode(&mut self, mode: WaitMode) {
        self.mode = mode;
    }

    /// Receives one message into `buf`, waiting while the ring is empty;
    /// returns its length, or `None` once the producer has closed the ring
    /// and it is drained.
    ///
    /// # Errors
    ///
    /// `EINVAL` if `buf` is shorter than the message (it stays queued) or
    /// a slot holds an impossible length; errors from sleeping.
    #[inline]
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Errno> {
        let n = buf.len();
        self.recv_with(|mem, at, len| {
            if len > n {
                return Err(Errno::INVAL);
            }
            mem.read(at, &mut buf[..len])?;
            Ok(len)
        })
    }

    /// Receives one message by handing `take(memory, offset, len)` the
    /// slot's payload in place (read it with [`RingMemory::read`]); returns
    /// what `take` returns, or `None` at the end. If `take` fails the
    /// message stays queued.
    ///
    /// # Errors
    ///
    /// `EINVAL` for an impossible length, `take`'s errors, errors from
    /// sleeping.
    #[inline]
    pub fn recv_with<R>(
        &mut self,
        take: impl FnOnce(&M, usize, usize) -> Result<R, Errno>,
    ) -> Result<Option<R>, Errno> {
        let slot = self.geometry.slot_offset(self.tail);
        let seq = slot + SEQ_AT;
        let want = self.tail.wrapping_add(1);
        if self.mem.load(seq, Ordering::Acquire)? != want && !self.wait_for_message(seq, want)? {
            return Ok(None);
        }
        let mut len = [0; 4];
        self.mem.read(slot + LEN_AT, &mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > self.geometry.max_message() {
            return Err(Errno::INVAL);
        }
        let r = take(&self.mem, slot + LEN_PREFIX, len)?;
        self.tail = want;
        if self.tail.wrapping_sub(self.released) >= self.release_every {
            self.release()?;
        }
        Ok(Some(r))
    }

    /// Waits until the `seq` word at `seq` reads `want` (`true`), or the
    /// stream ends (`false`).
    #[cold]
    fn wait_for_message(&mut self, seq: usize, want: u32) -> Result<bool, Errno> {
        // Hand every slot back before waiting (invariant 3).
        self.release()?;
        wait_until(&self.mem, self.mode, seq, CONSUMER_ASLEEP, |mem, seen| {
            if seen == want {
                Ok(Some(true))
            } else if mem.load(CLOSED, Ordering::Acquire)? != 0 {
                // `closed` is stored after the last `seq`: look again.
                Ok(Some(mem.load(seq, Ordering::Acquire)? == want))
            } else {
                Ok(None)
            }
        })
    }

    fn release(&mut self) -> Result<(), Errno> {
        if self.released == self.tail {
            return Ok(());
        }
        self.mem.store(TAIL, self.tail, Ordering::Release)?;
        self.released = self.tail;
        self.mem.fence();
        wake_if_asleep(&self.mem, PRODUCER_ASLEEP)
    }
}

#[cfg(test)]
mod tests {
    use core::cell::{Cell, RefCell};

    use super::*;

    /// A single-threaded memory: enough to test the arithmetic and the
    /// batching (the concurrent protocol is model-checked with loom).
    struct Plain {
        bytes: RefCell<[u8; HEADER + 8 * 32]>,
        wakes: Cell<u32>,
        fences: Cell<u32>,
    }

    impl Plain {
        fn new() -> Plain {
            Plain {
                bytes: RefCell::new([0; HEADER + 8 * 32]),
                wakes: Cell::new(0),
                fences: Cell::new(0),
            }
        }
    }

    impl RingMemory for &Plain {
        fn len(&self) -> usize {
            self.bytes.borrow().len()
        }
        fn load(&self, offset: usize, _: Ordering) -> Result<u32, Errno> {
            let b = self.bytes.borrow();
            let w = b.get(offset..offset + 4).ok_or(Errno::INVAL)?;
            Ok(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        }
        fn store(&self, offset: usize, value: u32, _: Ordering) -> Result<(), Errno> {
            self.write(offset, &value.to_le_bytes())
        }
        fn fence(&self) {
            self.fences.set(self.fences.get() + 1);
        }
        fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
            let mut b = self.bytes.borrow_mut();
            let dst = b
                .get_mut(offset..offset + bytes.len())
                .ok_or(Errno::INVAL)?;
            dst.copy_from_slice(bytes);
            Ok(())
        }
        fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), Errno> {
            let b = self.bytes.borrow();
            buf.copy_from_slice(b.get(offset..offset + buf.len()).ok_or(Errno::INVAL)?);
            Ok(())
        }
        fn wait(&self, _: usize, _: u32, _: Option<Duration>) -> Result<(), Errno> {
            // Nobody else could wake us.
            Err(Errno::BUSY)
        }
        fn wake(&self, _: usize) -> Result<(), Errno> {
            self.wakes.set(self.wakes.get() + 1);
            Ok(())
        }
    }

    #[test]
    fn geometry_rules() {
        assert_eq!(Geometry::slot_size_for(1), 16);
        assert_eq!(Geometry::slot_size_for(8), 16);
        assert_eq!(Geometry::slot_size_for(9), 32);
        assert_eq!(Geometry::slot_size_for(16), 32);
        assert_eq!(Geometry::slot_size_for(56), 64);
        assert_eq!(Geometry::slot_size_for(57), 72);
        assert_eq!(Geometry::slot_size_for(64), 72);
        assert_eq!(Geometry::new(3, 16, 1 << 20), Err(Errno::INVAL));
        assert_eq!(Geometry::new(4, 12, 1 << 20), Err(Errno::INVAL));
        assert_eq!(Geometry::new(4, 16, HEADER + 63), Err(Errno::INVAL));
        assert_eq!(Geometry::fit(HEADER + 100, 16).map(|g| g.slots()), Ok(4));
        assert_eq!(Geometry::fit(HEADER, 16), Err(Errno::INVAL));
        let g = Geometry::new(4, 16, HEADER + 64).unwrap();
        assert_eq!(g.max_message(), 8);
        assert_eq!(g.slot_offset(u32::MAX), HEADER + 3 * 16);
        assert!(g.is_full(3, u32::MAX)); // wrapping: 4 in flight
        assert!(!g.is_full(2, u32::MAX));
    }

    /// The `seq` word of slot `index`.
    fn seq(mem: &Plain, g: Geometry, index: u32) -> u32 {
        mem.load(g.slot_offset(index) + SEQ_AT, Ordering::Relaxed)
            .unwrap()
    }

    #[test]
    fn messages_are_visible_at_once_and_published_per_batch() {
        let mem = Plain::new();
        let mut tx = Producer::create(&mem, 16).unwrap();
        let g = tx.geometry();
        assert_eq!(g.slots(), 16);
        tx.set_batch(4);
        let mut rx = Consumer::attach(&mem).unwrap();
        for i in 0..3u8 {
            tx.send(&[i; 3]).unwrap();
        }
        // In the slots, each with its `seq`, but not yet published (no
        // fence, no wake-up check).
        assert_eq!(
            [seq(&mem, g, 0), seq(&mem, g, 2), seq(&mem, g, 3)],
            [1, 3, 0]
        );
        assert_eq!(mem.fences.get(), 0);
        tx.flush().unwrap();
        assert_eq!(mem.fences.get(), 1);
        tx.flush().unwrap(); // nothing new: no fence
        assert_eq!(mem.fences.get(), 1);
        let mut buf = [0; 8];
        for i in 0..3u8 {
            assert_eq!(rx.recv(&mut buf), Ok(Some(3)));
            assert_eq!(buf[..3], [i; 3]);
        }
        for i in 0..4u8 {
            tx.send(&[i]).unwrap();
        }
        assert_eq!(mem.fences.get(), 2); // a full batch
        tx.send(b"last").unwrap();
        tx.close().unwrap();
        assert_eq!(tx.send(b"x"), Err(Errno::PIPE));
        let mut n = 0;
        while rx.recv(&mut buf).unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 5);
        assert_eq!(&buf[..4], b"last");
        assert_eq!(rx.recv(&mut buf), Ok(None));
        // Waiting for the end handed every slot back.
        assert_eq!((&mem).load(TAIL, Ordering::Relaxed), Ok(8));
    }

    #[test]
    fn messages_wrap_around_the_ring() {
        let mem = Plain::new();
        let mut tx = Producer::create(&mem, 16).unwrap();
        let slots = tx.geometry().slots();
        let mut rx = Consumer::attach(&mem).unwrap();
        let mut buf = [0; 8];
        for i in 0..5 * slots {
            tx.send(&i.to_le_bytes()).unwrap();
            assert_eq!(rx.recv(&mut buf), Ok(Some(4)));
            assert_eq!(buf[..4], i.to_le_bytes());
        }
        assert_eq!(seq(&mem, tx.geometry(), 0), 4 * slots + 1);
    }

    #[test]
    fn oversized_messages_and_buffers_are_refused() {
        let mem = Plain::new();
        let mut tx = Producer::create(&mem, 16).unwrap();
        assert_eq!(tx.max_message(), 8);
        assert_eq!(tx.send(&[0; 9]), Err(Errno::INVAL));
        tx.send(&[7; 8]).unwrap();
        tx.flush().unwrap();
        let mut rx = Consumer::attach(&mem).unwrap();
        let mut small = [0; 4];
        assert_eq!(rx.recv(&mut small), Err(Errno::INVAL));
        let mut buf = [0; 8];
        assert_eq!(rx.recv(&mut buf), Ok(Some(8))); // still queued
    }

    #[test]
    fn a_full_ring_publishes_before_waiting() {
        let mem = Plain::new();
        let mut tx = Producer::create(&mem, 16).unwrap();
        tx.set_batch(1000);
        tx.set_wait_mode(WaitMode::BLOCK);
        let slots = tx.geometry().slots();
        for _ in 0..slots {
            tx.send(b"x").unwrap();
        }
        assert_eq!(mem.fences.get(), 0);
        // The next send must publish, then wait (here: EBUSY from the
        // memory, since no consumer runs).
        assert_eq!(tx.send(b"x"), Err(Errno::BUSY));
        assert!(mem.fences.get() >= 1);
        assert_eq!((&mem).load(PRODUCER_ASLEEP, Ordering::Relaxed), Ok(1));
    }

    #[test]
    fn a_sleeping_consumer_is_woken() {
        let mem = Plain::new();
        let mut tx = Producer::create(&mem, 16).unwrap();
        (&mem).store(CONSUMER_ASLEEP, 1, Ordering::Relaxed).unwrap();
        tx.send(b"x").unwrap(); // seen asleep: published at once
        assert_eq!(seq(&mem, tx.geometry(), 0), 1);
        assert_eq!((&mem).load(CONSUMER_ASLEEP, Ordering::Relaxed), Ok(0));
        assert_eq!(mem.wakes.get(), 1);
    }

    #[test]
    fn a_new_ring_forgets_the_old_ones_messages() {
        let mem = Plain::new();
        let mut old = Producer::create(&mem, 16).unwrap();
        old.send(b"stale").unwrap();
        old.close().unwrap();
        drop(old);
        let _tx = Producer::create(&mem, 16).unwrap();
        let mut rx = Consumer::attach(&mem).unwrap();
        rx.set_wait_mode(WaitMode::BLOCK);
        // Nothing sent: the consumer must wait (EBUSY from the memory),
        // not read the old ring's message.
        assert_eq!(rx.recv(&mut [0; 8]), Err(Errno::BUSY));
    }

    #[test]
    fn other_layouts_are_refused() {
        let mem = Plain::new();
        drop(Producer::create(&mem, 16).unwrap());
        (&mem)
            .store(MAGIC_AT, u32::from_le_bytes(*b"SGR1"), Ordering::Relaxed)
            .unwrap();
        assert_eq!(Consumer::attach(&mem).err(), Some(Errno::INVAL));
    }
}
