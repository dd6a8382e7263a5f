//! Two guests in two `shmgate run` processes stream through a ring in a
//! shared window (`shmgate_guest::ring`): every message arrives, in order.

use std::process::{Command, Stdio};

use shmgate_guest_artifacts::{RING_CONSUMER, RING_PRODUCER};

use crate::common::{Namespace, SHMGATE, shmgate, text};

fn stream(tag: &str, total: &str, msg: &str, transport: &str) {
    let ns = Namespace::new(tag);
    let grant = [
        "--namespace",
        &ns.0,
        "--max-size",
        "80MiB",
        "--max-mapped",
        "80MiB",
    ];
    let consumer = Command::new(SHMGATE)
        .arg("run")
        .args(grant)
        .args([RING_CONSUMER, "--", "ring", msg, transport, "120"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the consumer");
    let mut args = vec!["run"];
    args.extend(grant);
    args.extend([
        "--allow-create",
        RING_PRODUCER,
        "--",
        "ring",
        total,
        msg,
        transport,
    ]);
    let producer = shmgate(&args);
    let consumer = consumer
        .wait_with_output()
        .expect("waiting for the consumer");
    assert!(producer.status.success(), "producer: {}", text(&producer));
    assert!(consumer.status.success(), "consumer: {}", text(&consumer));
    let sent = String::from_utf8_lossy(&producer.stdout);
    let count = sent.split_whitespace().nth(2).expect("a count").to_owned();
    let got = String::from_utf8_lossy(&consumer.stdout);
    assert!(
        got.contains(&format!("received {count} messages")) && got.contains("in order"),
        "{got}"
    );
}

#[test]
fn ring_over_a_window_between_two_processes() {
    stream("ring-win", "16MiB", "4096", "window");
}

#[test]
fn small_messages_through_the_ring() {
    stream("ring-small", "4MiB", "64", "window");
}

#[test]
fn ring_with_host_call_payloads() {
    stream("ring-host", "16MiB", "65536", "host");
}

/// Without a window grant the consumer cannot map: ENOMEM, and it says so.
#[test]
fn windows_need_a_grant() {
    let ns = Namespace::new("ring-deny");
    let out = shmgate(&[
        "run",
        "--namespace",
        &ns.0,
        "--allow-create",
        RING_PRODUCER,
        "--",
        "ring",
        "4096",
        "64",
        "window",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ENOMEM"),
        "{}",
        text(&out)
    );
}
