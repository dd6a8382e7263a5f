//! Data exchanged through granted segments: guest to guest across two OS
//! processes, and native code to guest and back.

use std::process::{Command, Stdio};

use shmgate_guest_artifacts::{CONSUMER, ECHO, PRODUCER};
use shmgate_host::{OpenOptions, Segment};

use crate::common::{Namespace, SHMGATE, shmgate, text};

/// The example guests' header layout (`examples/guests/src/lib.rs`).
const LEN: u64 = 8;
const CHECKSUM: u64 = 16;
const STATE: u64 = 24;
const READY: u64 = 1;
const PAYLOAD: u64 = 64;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A producer guest and a consumer guest, each in its own `shmgate run`
/// process, move 64 MiB through one segment; the consumer verifies every
/// byte and the checksum. The consumer starts first and waits for the
/// segment, under a read-only grant.
#[test]
fn producer_and_consumer_processes_exchange_64_mib() {
    let ns = Namespace::new("pc");
    let consumer = Command::new(SHMGATE)
        .args([
            "run",
            "--namespace",
            &ns.0,
            "--read-only",
            CONSUMER,
            "--",
            "stream",
            "120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the consumer");
    let producer = shmgate(&[
        "run",
        "--namespace",
        &ns.0,
        "--allow-create",
        "--max-size",
        "65MiB",
        PRODUCER,
        "--",
        "stream",
        "64MiB",
    ]);
    assert!(producer.status.success(), "producer: {}", text(&producer));
    let consumer = consumer
        .wait_with_output()
        .expect("waiting for the consumer");
    assert!(consumer.status.success(), "consumer: {}", text(&consumer));

    let produced = String::from_utf8_lossy(&producer.stdout);
    let consumed = String::from_utf8_lossy(&consumer.stdout);
    assert!(consumed.contains("verified 67108864 bytes"), "{consumed}");
    // Both sides computed the same checksum independently.
    let sum = |s: &str| s.split("fnv1a-words ").nth(1).map(|t| t.trim().to_owned());
    assert_eq!(sum(&produced), sum(&consumed));
    assert!(sum(&produced).is_some(), "{produced}");

    // The segment is a real /dev/shm object of the announced size.
    let seg = Segment::open_read_only(ns.host_name("stream")).expect("segment exists");
    assert_eq!(seg.len().unwrap(), PAYLOAD + (64 << 20));
}

/// Native code writes a message, a guest process reads it and writes it
/// back reversed into a segment it creates, and native code verifies.
#[test]
fn native_program_and_guest_exchange_both_ways() {
    let ns = Namespace::new("echo");
    let message: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let inbox = OpenOptions::new()
        .size(PAYLOAD + message.len() as u64)
        .open_owned(ns.host_name("inbox"))
        .expect("creating the inbox");
    inbox.write_all_at(&message, PAYLOAD).unwrap();
    inbox
        .write_all_at(&(message.len() as u64).to_le_bytes(), LEN)
        .unwrap();
    inbox.write_all_at(&READY.to_le_bytes(), STATE).unwrap();

    let out = shmgate(&[
        "run",
        "--namespace",
        &ns.0,
        "--allow-create",
        "--max-size",
        "1MiB",
        ECHO,
        "--",
        "inbox",
        "reply",
    ]);
    assert!(out.status.success(), "echo: {}", text(&out));

    let reply = Segment::open_read_only(ns.host_name("reply")).expect("the guest created reply");
    let mut word = [0; 8];
    reply.read_exact_at(&mut word, STATE).unwrap();
    assert_eq!(u64::from_le_bytes(word), READY);
    reply.read_exact_at(&mut word, LEN).unwrap();
    assert_eq!(u64::from_le_bytes(word), message.len() as u64);
    let mut got = vec![0; message.len()];
    reply.read_exact_at(&mut got, PAYLOAD).unwrap();
    let mut want = message.clone();
    want.reverse();
    assert_eq!(got, want);
    reply.read_exact_at(&mut word, CHECKSUM).unwrap();
    assert_eq!(u64::from_le_bytes(word), fnv1a(&want));
}
