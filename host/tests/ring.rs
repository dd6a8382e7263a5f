//! The native ring under contention, between two threads with two mappings
//! of one segment: a consumer that is slow, then fast, then asleep (the
//! producer pauses so it falls asleep in the futex), with batches, flushes
//! and a small ring; no message is lost or duplicated over 10 M messages.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmgate_host::{OpenOptions, OwnedSegment, ring};

fn segment(tag: &str, size: u64) -> OwnedSegment {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("/shmgate-test-ringc-{tag}-{}-{n}", std::process::id());
    OpenOptions::new().size(size).open_owned(name).unwrap()
}

const N: u64 = 10_000_000;
/// Phases by message number: slow consumer, fast, asleep.
const SLOW_END: u64 = 200_000;
const ASLEEP_START: u64 = 9_000_000;

#[test]
fn no_message_lost_or_duplicated_under_contention() {
    let seg = segment("contention", 64 << 10);
    let (tx_map, rx_map) = (seg.map().unwrap(), seg.map().unwrap());
    let start = Instant::now();
    let mut tx = ring::Producer::create(&tx_map, 0..8192, 16).unwrap();
    assert_eq!(tx.geometry().slots(), 256);
    tx.set_batch(48);
    let mut rx = ring::Consumer::attach(&rx_map, 0..8192).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            for i in 0..N {
                tx.send(&i.to_le_bytes()).unwrap();
                if i >= ASLEEP_START && i.is_multiple_of(50_000) {
                    // Pause after a flush: the consumer drains and sleeps.
                    tx.flush().unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                } else if i % 1000 == 7 {
                    tx.flush().unwrap();
                }
            }
            tx.close().unwrap();
        });
        let mut buf = [0; 12];
        let mut next = 0u64;
        while let Some(n) = rx.recv(&mut buf).unwrap() {
            assert_eq!(n, 8);
            let got = u64::from_le_bytes(buf[..8].try_into().unwrap());
            assert_eq!(got, next, "lost or duplicated");
            if next < SLOW_END && next.is_multiple_of(64) {
                std::thread::sleep(Duration::from_micros(20));
            }
            next += 1;
        }
        assert_eq!(next, N);
    });
    eprintln!("10 M messages in {:?}", start.elapsed());
}

#[test]
fn close_and_flush_leave_nothing_unpublished() {
    let seg = segment("flush", 64 << 10);
    let map = seg.map().unwrap();
    for batch in [1, 3, 64, 1000] {
        for count in [0u64, 1, 2, 63, 64, 65, 300] {
            let mut tx = ring::Producer::create(&map, 0..64 << 10, 16).unwrap();
            tx.set_batch(batch);
            let mut rx = ring::Consumer::attach(&map, 0..64 << 10).unwrap();
            rx.set_wait_mode(ring::WaitMode::BLOCK);
            for i in 0..count {
                tx.send(&i.to_le_bytes()).unwrap();
            }
            tx.flush().unwrap();
            let mut buf = [0; 12];
            // Everything flushed is there without waiting: check the `seq`
            // word of the last message's slot, which the consumer reads,
            // directly (layout version 2).
            if let Some(last) = count.checked_sub(1) {
                let last = u32::try_from(last).unwrap();
                assert_eq!(
                    map.load_u32(tx.geometry().slot_offset(last), Ordering::Acquire)
                        .unwrap(),
                    last + 1
                );
            }
            for i in 0..count {
                assert_eq!(rx.recv(&mut buf).unwrap(), Some(8));
                assert_eq!(buf[..8], i.to_le_bytes());
            }
            tx.send(b"after").unwrap();
            tx.close().unwrap();
            assert_eq!(rx.recv(&mut buf).unwrap(), Some(5));
            assert_eq!(rx.recv(&mut buf).unwrap(), None);
        }
    }
}
