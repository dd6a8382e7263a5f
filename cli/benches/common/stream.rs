//! Streaming through the ring between two guest processes, for the
//! benches: one copy of the spawning both `transfer` and `ring` use.

use std::process::{Command, Stdio};

use shmgate_guest_artifacts::{RING_CONSUMER, RING_PRODUCER};

/// The `shmgate` executable: `$SHMGATE_BIN` if set (a copy taken right
/// after the build, where a shared target directory may be rebuilt under
/// the bench), else the one cargo built.
fn shmgate() -> String {
    std::env::var("SHMGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shmgate").to_owned())
}

/// Streams `total` bytes in `msg`-byte messages from a producer guest to a
/// consumer guest, each in its own `shmgate run` process, under namespace
/// `ns`, over `transport` (`window` or `copy`); returns what the consumer
/// printed (its own timing, first message to last).
pub(crate) fn stream(ns: &str, total: u64, msg: u64, transport: &str) -> String {
    let grant = [
        "--namespace",
        ns,
        "--max-size",
        "80MiB",
        "--max-mapped",
        "80MiB",
    ];
    let msg = msg.to_string();
    let consumer = Command::new(shmgate())
        .arg("run")
        .args(grant)
        .args([RING_CONSUMER, "--", "ring", &msg, transport, "120"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("consumer");
    let producer = Command::new(shmgate())
        .arg("run")
        .args(grant)
        .arg("--allow-create")
        .args([
            RING_PRODUCER,
            "--",
            "ring",
            &total.to_string(),
            &msg,
            transport,
        ])
        .output()
        .expect("producer");
    let consumed = consumer.wait_with_output().expect("consumer");
    let _ = shmgate_host::unlink(format!("{ns}ring"));
    assert!(
        producer.status.success(),
        "producer: {}",
        String::from_utf8_lossy(&producer.stderr)
    );
    assert!(consumed.status.success(), "consumer failed");
    String::from_utf8_lossy(&consumed.stdout).into_owned()
}
