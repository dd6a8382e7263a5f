//! The ring between a native end (`shmgate_host::ring`, in this test
//! process) and a guest end (`shmgate_guest::ring`, in a `shmgate run`
//! process), both directions: every message arrives once, in order, and
//! both sides compute the same checksum over every payload byte.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmgate_guest_artifacts::{RING_CONSUMER, RING_PONG, RING_PRODUCER};
use shmgate_host::{Segment, ring};

use crate::common::{Namespace, SHMGATE, text};

pub(crate) const MSG: usize = 64;
const COUNT: u64 = 200_000;
pub(crate) const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over little-endian `u64` words, as the example guests compute it
/// (`shmgate_example_guests::fnv1a_words`; messages are whole words here).
pub(crate) fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for w in bytes.chunks_exact(8) {
        state ^= u64::from_le_bytes(w.try_into().unwrap());
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state
}

/// Message `i` as the example guests write it: the number at both ends,
/// 0x5a between.
pub(crate) fn message(i: u64) -> [u8; MSG] {
    let mut buf = [0x5a; MSG];
    buf[..8].copy_from_slice(&i.to_le_bytes());
    buf[MSG - 8..].copy_from_slice(&i.to_le_bytes());
    buf
}

/// The `fnv1a-words HEX` a guest printed.
pub(crate) fn guest_sum(out: &str) -> u64 {
    let hex = out
        .split("fnv1a-words ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no checksum in {out:?}"));
    u64::from_str_radix(hex, 16).unwrap()
}

pub(crate) fn grant(ns: &Namespace) -> Vec<String> {
    [
        "--namespace",
        &ns.0,
        "--max-size",
        "80MiB",
        "--max-mapped",
        "80MiB",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn native_producer_to_guest_consumer() {
    let ns = Namespace::new("ring-n2g");
    let len = 1 << 20;
    let seg = Segment::create_new(ns.host_name("ring"), len as u64).unwrap();
    let map = seg.map().unwrap();
    let mut tx = ring::Producer::create(&map, 0..len, ring::Geometry::slot_size_for(MSG)).unwrap();
    let consumer = Command::new(SHMGATE)
        .arg("run")
        .args(grant(&ns))
        .args([RING_CONSUMER, "--", "ring", "64", "window", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the guest consumer");
    tx.wait_for_consumer(Duration::from_secs(120)).unwrap();
    let mut sum = FNV_START;
    for i in 0..COUNT {
        let m = message(i);
        tx.send(&m).unwrap();
        sum = fnv1a(sum, &m);
    }
    tx.close().unwrap();
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
fn guest_producer_to_native_consumer() {
    let ns = Namespace::new("ring-g2n");
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
    // Attach once the guest has created and formatted the ring.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (seg, map) = loop {
        assert!(Instant::now() < deadline, "the guest never made its ring");
        if let Ok(seg) = Segment::open_read_write(ns.host_name("ring"))
            && seg.len().unwrap() > 0
        {
            let map = seg.map().unwrap();
            if ring::Consumer::attach(&map, 0..map.len()).is_ok() {
                break (seg, map);
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut rx = ring::Consumer::attach(&map, 0..map.len()).unwrap();
    let mut buf = [0; MSG];
    let (mut next, mut sum) = (0u64, FNV_START);
    while let Some(n) = rx.recv(&mut buf).unwrap() {
        assert_eq!((n, buf), (MSG, message(next)));
        sum = fnv1a(sum, &buf);
        next += 1;
    }
    drop(seg);
    let out = producer.wait_with_output().unwrap();
    assert!(out.status.success(), "producer: {}", text(&out));
    assert_eq!(next, COUNT);
    assert_eq!(guest_sum(&String::from_utf8_lossy(&out.stdout)), sum);
}

/// Timestamps cross the process boundary: this process sends timed
/// messages to a `ring_pong` guest, which echoes them (native to guest and
/// back over two rings) and reports each one's one-way trip, its monotonic
/// clock minus the send time we wrote with `ring::monotonic_ns`. Under
/// `shmgate run` the guest's WASI clock is the host's `CLOCK_MONOTONIC`, so
/// every one-way trip is positive and shorter than its round trip (with
/// wasmtime-wasi's default clock, counting from the guest's start, they
/// would all be far off).
#[test]
fn timestamps_mean_the_same_to_a_native_end_and_a_guest() {
    const TIMED: u64 = 2_000;
    let ns = Namespace::new("ring-clock");
    let seg = Segment::create_new(ns.host_name("ping"), 128 << 10).unwrap();
    let map = seg.map().unwrap();
    let mut tx = ring::Producer::create(&map, 0..64 << 10, 24).unwrap();
    let pong = Command::new(SHMGATE)
        .arg("run")
        .args(grant(&ns))
        .args([RING_PONG, "--", "ping", "block", "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the guest pong");
    tx.wait_for_consumer(Duration::from_secs(120)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rx = loop {
        if let Ok(rx) = ring::Consumer::attach(&map, 64 << 10..128 << 10) {
            break rx;
        }
        assert!(Instant::now() < deadline, "the guest never made its ring");
        std::thread::sleep(Duration::from_millis(1));
    };
    tx.set_batch(1);
    let mut longest = 0;
    let mut buf = [0; 20];
    for i in 0..TIMED {
        let sent = ring::monotonic_ns();
        let mut msg = [0; 16];
        msg[..8].copy_from_slice(&i.to_le_bytes());
        msg[8..].copy_from_slice(&sent.to_le_bytes());
        tx.send(&msg).unwrap();
        assert_eq!(rx.recv(&mut buf).unwrap(), Some(16));
        longest = longest.max(ring::monotonic_ns() - sent);
        assert_eq!(buf[..16], msg);
    }
    tx.close().unwrap();
    let out = pong.wait_with_output().unwrap();
    assert!(out.status.success(), "pong: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    let one_way: Vec<u64> = said
        .lines()
        .find_map(|l| l.strip_prefix("samples one-way:"))
        .unwrap_or_else(|| panic!("no samples in {said:.200}"))
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(one_way.len() as u64, TIMED);
    // `ring_pong` clamps a negative trip (a clock behind ours) to 0.
    assert!(
        one_way.iter().all(|&t| t > 0 && t <= longest),
        "{longest} {one_way:?}"
    );
}
