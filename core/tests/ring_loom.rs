//! Model-checks the ring protocol of `shmgate_core::ring` (the code both
//! ends run) with loom: every interleaving of a producer and a consumer on
//! a two-slot ring, with loom's atomics and `SeqCst` fences, each slot's
//! `seq` word a loom atomic and its length and payload a loom cell (so a
//! slot read before its write is published is a reported data race), and a
//! futex built from loom's mutex and condition variable
//! without timeouts (so a lost wake-up is a reported deadlock).
//!
//! `RUSTFLAGS="--cfg shmgate_loom" cargo test -p shmgate-core --release --test ring_loom`

#![cfg(shmgate_loom)]
#![allow(unsafe_code)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU32, fence};
use loom::sync::{Arc, Condvar, Mutex};
use shmgate_core::Errno;
use shmgate_core::ring::{
    ATTACHED, CLOSED, CONSUMER_ASLEEP, Consumer, HEAD, HEADER, LEN_AT, LEN_PREFIX, MAGIC_AT,
    PRODUCER_ASLEEP, Producer, RingMemory, SEQ_AT, SLOT_SIZE, SLOTS, TAIL, WaitMode,
};

const SLOT: usize = 16;
const NSLOTS: usize = 2;
/// The header's words, then each slot's `seq`.
const WORDS: [usize; 9 + NSLOTS] = [
    MAGIC_AT,
    SLOTS,
    SLOT_SIZE,
    HEAD,
    TAIL,
    CONSUMER_ASLEEP,
    PRODUCER_ASLEEP,
    CLOSED,
    ATTACHED,
    HEADER + SEQ_AT,
    HEADER + SLOT + SEQ_AT,
];

/// One futex: its waiters sleep on the condition variable under the mutex,
/// after checking the word under it, as the kernel does under its hash
/// bucket lock.
struct Futex {
    lock: Mutex<()>,
    cond: Condvar,
}

struct Mem {
    words: Vec<AtomicU32>,
    futexes: Vec<Futex>,
    /// Each slot's length and payload (all but its `seq`, a word): loom
    /// checks every byte.
    slots: Vec<UnsafeCell<[u8; SLOT - LEN_AT]>>,
}

#[derive(Clone)]
struct Shared(Arc<Mem>);

impl Shared {
    fn new() -> Shared {
        Shared(Arc::new(Mem {
            words: WORDS.iter().map(|_| AtomicU32::new(0)).collect(),
            futexes: WORDS
                .iter()
                .map(|_| Futex {
                    lock: Mutex::new(()),
                    cond: Condvar::new(),
                })
                .collect(),
            slots: (0..NSLOTS)
                .map(|_| UnsafeCell::new([0; SLOT - LEN_AT]))
                .collect(),
        }))
    }

    fn index(offset: usize) -> Result<usize, Errno> {
        WORDS.iter().position(|&w| w == offset).ok_or(Errno::INVAL)
    }

    fn word(&self, offset: usize) -> Result<&AtomicU32, Errno> {
        Ok(&self.0.words[Shared::index(offset)?])
    }

    /// The slot and the place in its cell that `offset..offset + n` is:
    /// only its length and payload (a byte access to a `seq` is an error).
    fn payload(offset: usize, n: usize) -> Result<(usize, usize), Errno> {
        let rel = offset.checked_sub(HEADER).ok_or(Errno::INVAL)?;
        let (slot, at) = (rel / SLOT, rel % SLOT);
        if slot >= NSLOTS || at < LEN_AT || at + n > SLOT {
            return Err(Errno::INVAL);
        }
        Ok((slot, at - LEN_AT))
    }
}

impl RingMemory for Shared {
    fn len(&self) -> usize {
        HEADER + NSLOTS * SLOT
    }
    fn load(&self, offset: usize, order: Ordering) -> Result<u32, Errno> {
        Ok(self.word(offset)?.load(order))
    }
    fn store(&self, offset: usize, value: u32, order: Ordering) -> Result<(), Errno> {
        self.word(offset)?.store(value, order);
        Ok(())
    }
    fn fence(&self) {
        fence(Ordering::SeqCst);
    }
    fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), Errno> {
        let (slot, at) = Shared::payload(offset, bytes.len())?;
        self.0.slots[slot].with_mut(|p| {
            // SAFETY: loom checks that this write does not race any other
            // access to the cell; that check is what this model is for.
            unsafe { (&mut *p)[at..at + bytes.len()].copy_from_slice(bytes) }
        });
        Ok(())
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), Errno> {
        let (slot, at) = Shared::payload(offset, buf.len())?;
        self.0.slots[slot].with(|p| {
            // SAFETY: as in `write`: loom reports a racing access.
            buf.copy_from_slice(unsafe { &(&*p)[at..at + buf.len()] })
        });
        Ok(())
    }
    fn wait(&self, offset: usize, expected: u32, _: Option<Duration>) -> Result<(), Errno> {
        let futex = &self.0.futexes[Shared::index(offset)?];
        let guard = futex.lock.lock().map_err(|_| Errno::IO)?;
        if self.word(offset)?.load(Ordering::SeqCst) == expected {
            // No timeout: a lost wake-up leaves both threads blocked, which
            // loom reports as a deadlock.
            drop(futex.cond.wait(guard).map_err(|_| Errno::IO)?);
        }
        Ok(())
    }
    fn wake(&self, offset: usize) -> Result<(), Errno> {
        let futex = &self.0.futexes[Shared::index(offset)?];
        let _guard = futex.lock.lock().map_err(|_| Errno::IO)?;
        futex.cond.notify_all();
        Ok(())
    }
}

/// No timeouts, no spinning: every wait is a real sleep.
const BLOCK: WaitMode = WaitMode {
    spins: 0,
    nap: None,
};

/// The producer sends `count` messages with `batch` (and a `flush` after
/// message `flush_after`, if any), then drops (closes); the consumer must
/// receive exactly them, in order, then the end.
fn stream(count: u8, batch: u32, flush_after: Option<u8>) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(move || {
        let mem = Shared::new();
        let mut tx = Producer::create(mem.clone(), SLOT).unwrap();
        assert_eq!(tx.geometry().slots() as usize, NSLOTS);
        tx.set_batch(batch);
        tx.set_wait_mode(BLOCK);
        let mut rx = Consumer::attach(mem).unwrap();
        rx.set_wait_mode(BLOCK);
        let producer = loom::thread::spawn(move || {
            for i in 0..count {
                tx.send(&[i, i ^ 0xff]).unwrap();
                if flush_after == Some(i) {
                    tx.flush().unwrap();
                }
            }
            // Dropped: close.
        });
        let mut buf = [0; SLOT - LEN_PREFIX];
        for i in 0..count {
            assert_eq!(rx.recv(&mut buf), Ok(Some(2)));
            assert_eq!(buf[..2], [i, i ^ 0xff]);
        }
        assert_eq!(rx.recv(&mut buf), Ok(None));
        producer.join().unwrap();
    });
}

#[test]
fn every_message_once_in_order_publishing_each() {
    stream(3, 1, None);
}

#[test]
fn batches_are_published_when_the_ring_fills_and_on_close() {
    // A batch larger than the ring: publication happens only because the
    // ring is full, or because of the close.
    stream(3, 8, None);
}

#[test]
fn flush_publishes_a_partial_batch() {
    stream(2, 8, Some(0));
}
