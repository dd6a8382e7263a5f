//! The async ring ends (`ring::AsyncProducer`, `ring::AsyncConsumer`)
//! against the sync ends, in both directions, on three executors (tokio
//! multi-thread, tokio current-thread, `futures`' `block_on` and thread
//! pool): no message lost, duplicated or reordered over 1 M messages with
//! a consumer that is slow, then fast, then asleep; and futures dropped at
//! every await point lose nothing and leave no kernel wait behind. (The
//! guest ends, in another process, are in `cli/tests/e2e/async_ring.rs`.)

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use shmgate_host::wait::{notify, pending_async_waits};
use shmgate_host::{Mapping, OpenOptions, OwnedSegment, ring};

fn segment(tag: &str, size: u64) -> (OwnedSegment, Arc<Mapping>) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("/shmgate-test-aring-{tag}-{}-{n}", std::process::id());
    let seg = OpenOptions::new().size(size).open_owned(name).unwrap();
    let map = Arc::new(seg.map().unwrap());
    (seg, map)
}

/// Phases by message number: a slow consumer, then a fast one, then one
/// that falls asleep (its producer pauses after a flush).
const SLOW_END: u64 = 100_000;
const ASLEEP_START: u64 = 900_000;
const N: u64 = 1_000_000;

/// The region of the ring: 256 slots of 16 bytes (a small ring, so the
/// producer waits for room often).
const REGION: std::ops::Range<usize> = 0..8192;

/// Whether message `i` is one after which the producer pauses.
fn pause_after(i: u64) -> bool {
    i >= ASLEEP_START && i.is_multiple_of(20_000)
}

/// A sync producer of `n` numbered messages with the phases' pauses.
fn sync_producer(map: &Mapping, n: u64) -> ring::Producer<'_> {
    let _ = n;
    let mut tx = ring::Producer::create(map, REGION, 16).unwrap();
    tx.set_batch(48);
    tx
}

fn run_sync_producer(mut tx: ring::Producer<'_>, n: u64) {
    for i in 0..n {
        tx.send(&i.to_le_bytes()).unwrap();
        if pause_after(i) {
            tx.flush().unwrap();
            std::thread::sleep(Duration::from_millis(2));
        } else if i % 1000 == 7 {
            tx.flush().unwrap();
        }
    }
    tx.close().unwrap();
}

/// The async consumer's side: every message in order, slow at first.
async fn async_consume(mut rx: ring::AsyncConsumer, n: u64) {
    let mut buf = [0; 12];
    let mut next = 0u64;
    while let Some(len) = rx.recv(&mut buf).await.unwrap() {
        assert_eq!(len, 8);
        assert_eq!(
            u64::from_le_bytes(buf[..8].try_into().unwrap()),
            next,
            "lost or duplicated"
        );
        if next < SLOW_END && next.is_multiple_of(64) {
            // Slow: a blocking pause (as a consumer doing real work).
            std::thread::sleep(Duration::from_micros(20));
        }
        next += 1;
    }
    assert_eq!(next, n);
}

/// The async producer's side, with the phases' pauses.
async fn async_produce(mut tx: ring::AsyncProducer, n: u64) {
    tx.set_batch(48);
    for i in 0..n {
        tx.send(&i.to_le_bytes()).await.unwrap();
        if pause_after(i) {
            tx.flush().await.unwrap();
            std::thread::sleep(Duration::from_millis(2));
        } else if i % 1000 == 7 {
            tx.flush().await.unwrap();
        }
    }
    tx.close().unwrap();
}

fn run_sync_consumer(mut rx: ring::Consumer<'_>, n: u64) {
    let mut buf = [0; 12];
    let mut next = 0u64;
    while let Some(len) = rx.recv(&mut buf).unwrap() {
        assert_eq!(len, 8);
        assert_eq!(
            u64::from_le_bytes(buf[..8].try_into().unwrap()),
            next,
            "lost or duplicated"
        );
        if next < SLOW_END && next.is_multiple_of(64) {
            std::thread::sleep(Duration::from_micros(20));
        }
        next += 1;
    }
    assert_eq!(next, n);
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Sync producer, async consumer, on each executor.
#[test]
fn sync_producer_to_async_consumer_on_three_executors() {
    for executor in ["tokio-multi", "tokio-current", "futures"] {
        let (seg, map) = segment("s2a", 64 << 10);
        let tx_map = seg.map().unwrap();
        let tx = sync_producer(&tx_map, N);
        let rx = ring::AsyncConsumer::attach(Arc::clone(&map), REGION).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| run_sync_producer(tx, N));
            match executor {
                "tokio-multi" => multi_thread()
                    .block_on(async { tokio::spawn(async_consume(rx, N)).await })
                    .unwrap(),
                "tokio-current" => current_thread().block_on(async_consume(rx, N)),
                _ => futures::executor::block_on(async_consume(rx, N)),
            }
        });
        eprintln!("{executor}: ok");
    }
}

/// Async producer, sync consumer, on each executor (the futures one on
/// its thread pool, spawned).
#[test]
fn async_producer_to_sync_consumer_on_three_executors() {
    for executor in ["tokio-multi", "tokio-current", "futures"] {
        let (seg, map) = segment("a2s", 64 << 10);
        let rx_map = seg.map().unwrap();
        let tx = ring::AsyncProducer::create(Arc::clone(&map), REGION, 16).unwrap();
        let rx = ring::Consumer::attach(&rx_map, REGION).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| run_sync_consumer(rx, N));
            match executor {
                "tokio-multi" => multi_thread()
                    .block_on(async { tokio::spawn(async_produce(tx, N)).await })
                    .unwrap(),
                "tokio-current" => current_thread().block_on(async_produce(tx, N)),
                _ => {
                    let pool = futures::executor::ThreadPool::builder()
                        .pool_size(2)
                        .create()
                        .unwrap();
                    let (done_tx, done_rx) = std::sync::mpsc::channel();
                    pool.spawn_ok(async move {
                        async_produce(tx, N).await;
                        done_tx.send(()).unwrap();
                    });
                    done_rx.recv_timeout(Duration::from_secs(600)).unwrap();
                }
            }
        });
        eprintln!("{executor}: ok");
    }
}

/// Both ends async, on one 2-worker runtime: 1 M messages.
#[test]
fn async_to_async_on_one_runtime() {
    let (_seg, map) = segment("a2a", 64 << 10);
    let tx = ring::AsyncProducer::create(Arc::clone(&map), REGION, 16).unwrap();
    let rx = ring::AsyncConsumer::attach(Arc::clone(&map), REGION).unwrap();
    multi_thread().block_on(async {
        let p = tokio::spawn(async_produce(tx, N));
        let c = tokio::spawn(async_consume(rx, N));
        p.await.unwrap();
        c.await.unwrap();
    });
}

/// Polls `fut` once with a waker that does nothing.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

/// Cancellation at every await point: the consumer polls each `recv`
/// once and, if it is pending (it has armed a kernel wait, or is about
/// to), drops it, over and over, and only sometimes lets one run to the
/// end; the producer drops its `send` futures on a full ring the same way
/// and sends the same message again. Every message arrives exactly once
/// and in order (a dropped `send` sent nothing; a dropped `recv` took
/// nothing), and no kernel wait is left: the count of pending waits goes
/// back to zero and a `notify` of either asleep word wakes nobody.
#[test]
fn dropped_futures_lose_nothing_and_leave_no_waiter() {
    const M: u64 = 200_000;
    let (_seg, map) = segment("cancel", 64 << 10);
    let mut tx = ring::AsyncProducer::create(Arc::clone(&map), REGION, 16).unwrap();
    tx.set_batch(1);
    let mut rx = ring::AsyncConsumer::attach(Arc::clone(&map), REGION).unwrap();
    let dropped = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            let mut tries = 0u64;
            while i < M {
                tries += 1;
                let msg = i.to_le_bytes();
                let r = {
                    let mut fut = pin!(tx.send(&msg));
                    if tries.is_multiple_of(5) {
                        Poll::Ready(futures::executor::block_on(fut))
                    } else {
                        poll_once(fut.as_mut())
                    }
                };
                match r {
                    Poll::Ready(r) => {
                        r.unwrap();
                        i += 1;
                    }
                    Poll::Pending => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        std::thread::yield_now();
                    }
                }
                // Pauses let the consumer catch up and find the ring
                // empty (its pending, dropped `recv`s): about 800 of a
                // millisecond each, so the count of drops does not hang
                // on the machine's load.
                if i.is_multiple_of(256) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            tx.close().unwrap();
        });
        let mut buf = [0; 12];
        let mut next = 0u64;
        let mut tries = 0u64;
        loop {
            tries += 1;
            let r = {
                let mut fut = pin!(rx.recv(&mut buf));
                if tries.is_multiple_of(7) {
                    Poll::Ready(futures::executor::block_on(fut))
                } else {
                    poll_once(fut.as_mut())
                }
            };
            match r {
                Poll::Ready(Ok(Some(8))) => {
                    assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), next);
                    next += 1;
                }
                Poll::Ready(Ok(None)) => break,
                Poll::Ready(other) => panic!("{other:?}"),
                Poll::Pending => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    if tries.is_multiple_of(3) {
                        std::thread::yield_now();
                    }
                }
            }
        }
        assert_eq!(next, M, "lost messages");
    });
    let dropped = dropped.load(Ordering::Relaxed);
    eprintln!("{dropped} futures dropped while pending");
    assert!(dropped > 1000, "too few drops to test anything: {dropped}");
    for _ in 0..60_000 {
        if pending_async_waits() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(pending_async_waits(), 0, "a kernel wait was left behind");
    // The asleep words (offsets 192 and 256 of the ring's header; the
    // ring starts at 0): nobody waits there any more.
    for word in [192, 256] {
        assert_eq!(notify(&map, word, u32::MAX).unwrap(), 0);
    }
}

/// A `recv` on an empty ring and a `send` on a full one, each polled once
/// (so its kernel wait is armed) and dropped with nothing else happening:
/// their kernel waits are gone (nothing would ever wake them otherwise:
/// the async ends have no nap), and the ring still works after.
#[test]
fn a_dropped_idle_future_leaves_no_waiter() {
    let (_seg, map) = segment("idle-drop", 64 << 10);
    let mut tx = ring::AsyncProducer::create(Arc::clone(&map), REGION, 16).unwrap();
    let mut rx = ring::AsyncConsumer::attach(Arc::clone(&map), REGION).unwrap();
    let settle = |what: &str| {
        for _ in 0..60_000 {
            if pending_async_waits() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("{what}: a kernel wait was left behind");
    };
    let mut buf = [0; 12];
    {
        let fut = pin!(rx.recv(&mut buf));
        assert!(poll_once(fut).is_pending());
    }
    settle("recv");
    assert_eq!(notify(&map, 192, u32::MAX).unwrap(), 0);
    let slots = tx.geometry().slots();
    for i in 0..u64::from(slots) {
        futures::executor::block_on(tx.send(&i.to_le_bytes())).unwrap();
    }
    {
        let fut = pin!(tx.send(b"one more"));
        assert!(poll_once(fut).is_pending());
    }
    settle("send");
    assert_eq!(notify(&map, 256, u32::MAX).unwrap(), 0);
    // Nothing was lost or added: exactly the ring's worth arrives.
    tx.close().unwrap();
    let mut n = 0;
    while futures::executor::block_on(rx.recv(&mut buf))
        .unwrap()
        .is_some()
    {
        n += 1;
    }
    assert_eq!(n, slots);
}

/// The async ends' futures are `Send` (spawnable on a multi-thread
/// runtime), and the ends are `Send`.
#[test]
fn the_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let (_seg, map) = segment("send", 64 << 10);
    let mut tx = ring::AsyncProducer::create(Arc::clone(&map), REGION, 16).unwrap();
    let mut rx = ring::AsyncConsumer::attach(Arc::clone(&map), REGION).unwrap();
    let mut buf = [0; 12];
    send(&tx.send(b"x"));
    send(&rx.recv(&mut buf));
    send(&tx);
    send(&rx);
}
