//! The async native ring ends (`shmgate_host::ring::AsyncProducer`,
//! `AsyncConsumer`, on a 2-worker tokio runtime in this test process)
//! against a guest end (`shmgate_guest::ring`, in a `shmgate run` process
//! with a window ring), both directions, 1 M messages each: every message
//! arrives once, in order, and both sides compute the same checksum over
//! every payload byte. The native consumer is slow for the first 100,000
//! messages, then fast; the native producer pauses now and then after a
//! flush, so the guest consumer falls asleep in its `wait32` and is woken
//! by the async end's `notify`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmgate_guest_artifacts::{RING_CONSUMER, RING_PRODUCER};
use shmgate_host::{Segment, ring};

use crate::common::{Namespace, SHMGATE, text};
// The message, checksum and grant of the guests, shared with the sync
// ends' interop tests.
use crate::ring_interop::{FNV_START, MSG, fnv1a, grant, guest_sum, message};

const COUNT: u64 = 1_000_000;
const SLOW_END: u64 = 100_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

#[test]
fn async_native_producer_to_guest_consumer() {
    let ns = Namespace::new("aring-n2g");
    let len = 1 << 20;
    let seg = Segment::create_new(ns.host_name("ring"), len as u64).unwrap();
    let map = Arc::new(seg.map().unwrap());
    let mut tx =
        ring::AsyncProducer::create(map, 0..len, ring::Geometry::slot_size_for(MSG)).unwrap();
    let consumer = Command::new(SHMGATE)
        .arg("run")
        .args(grant(&ns))
        .args([RING_CONSUMER, "--", "ring", "64", "window", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the guest consumer");
    let sum = runtime().block_on(async move {
        tokio::spawn(async move {
            tx.wait_for_consumer(Duration::from_secs(120))
                .await
                .unwrap();
            let mut sum = FNV_START;
            for i in 0..COUNT {
                let m = message(i);
                tx.send(&m).await.unwrap();
                sum = fnv1a(sum, &m);
                if i.is_multiple_of(100_000) {
                    // The guest drains the ring and falls asleep.
                    tx.flush().await.unwrap();
                    tokio::task::yield_now().await;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            tx.close().unwrap();
            sum
        })
        .await
        .unwrap()
    });
    let out = consumer.wait_with_output().unwrap();
    assert!(out.status.success(), "consumer: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("received {COUNT} messages")) && said.contains("in order"),
        "{said}"
    );
    assert_eq!(guest_sum(&said), sum, "{said}");
}

#[test]
fn guest_producer_to_async_native_consumer() {
    let ns = Namespace::new("aring-g2n");
    let total = (COUNT * MSG as u64).to_string();
    let producer = Command::new(SHMGATE)
        .arg("run")
        .args(grant(&ns))
        .arg("--allow-create")
        .args([RING_PRODUCER, "--", "ring", &total, "64", "window"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the guest producer");
    let deadline = Instant::now() + Duration::from_secs(120);
    let (seg, map) = loop {
        assert!(Instant::now() < deadline, "the guest never made its ring");
        if let Ok(seg) = Segment::open_read_write(ns.host_name("ring"))
            && seg.len().unwrap() > 0
        {
            let map = seg.map().unwrap();
            if ring::Consumer::attach(&map, 0..map.len()).is_ok() {
                break (seg, Arc::new(map));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let len = map.len();
    let mut rx = ring::AsyncConsumer::attach(map, 0..len).unwrap();
    let (next, sum) = runtime().block_on(async move {
        tokio::spawn(async move {
            let mut buf = [0; MSG];
            let (mut next, mut sum) = (0u64, FNV_START);
            while let Some(n) = rx.recv(&mut buf).await.unwrap() {
                assert_eq!((n, buf), (MSG, message(next)));
                sum = fnv1a(sum, &buf);
                next += 1;
                if next < SLOW_END && next.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            (next, sum)
        })
        .await
        .unwrap()
    });
    drop(seg);
    let out = producer.wait_with_output().unwrap();
    assert!(out.status.success(), "producer: {}", text(&out));
    assert_eq!(next, COUNT);
    assert_eq!(guest_sum(&String::from_utf8_lossy(&out.stdout)), sum);
}
