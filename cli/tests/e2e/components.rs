//! `shmgate run` with components (`wasm32-wasip2`, `shmgate:shm`): two
//! component processes exchange data through one segment, a component and
//! a core module interoperate, and bad components get their exit codes.

use std::process::{Command, Stdio};

use shmgate_guest_artifacts::{
    COMPONENT_CONSUMER, COMPONENT_PRODUCER, COMPONENT_UNKNOWN_IMPORT, CONSUMER,
};
use shmgate_host::Segment;

use crate::common::{Namespace, SHMGATE, shmgate, text};

/// The producer's and consumer's checksum lines agree.
fn same_checksum(produced: &[u8], consumed: &[u8]) {
    let sum = |s: &[u8]| {
        let s = String::from_utf8_lossy(s);
        s.split("fnv1a-words ").nth(1).map(|t| t.trim().to_owned())
    };
    assert!(
        sum(produced).is_some(),
        "{}",
        String::from_utf8_lossy(produced)
    );
    assert_eq!(sum(produced), sum(consumed));
}

/// Starts the consumer `guest` (read-only grant) waiting for `name`.
fn spawn_consumer(ns: &Namespace, guest: &str, name: &str) -> std::process::Child {
    Command::new(SHMGATE)
        .args([
            "run",
            "--namespace",
            &ns.0,
            "--read-only",
            guest,
            "--",
            name,
            "120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the consumer")
}

/// Runs the component producer of `size` into `name`.
fn produce(ns: &Namespace, name: &str, size: &str) -> std::process::Output {
    shmgate(&[
        "run",
        "--namespace",
        &ns.0,
        "--allow-create",
        "--max-size",
        "17MiB",
        COMPONENT_PRODUCER,
        "--",
        name,
        size,
    ])
}

/// A producer component and a consumer component, each in its own
/// `shmgate run` process, move 16 MiB through one segment; the consumer
/// verifies every byte and the checksum.
#[test]
fn two_component_processes_exchange_16_mib() {
    let ns = Namespace::new("cc");
    let consumer = spawn_consumer(&ns, COMPONENT_CONSUMER, "stream");
    let producer = produce(&ns, "stream", "16MiB");
    assert!(producer.status.success(), "producer: {}", text(&producer));
    let consumer = consumer
        .wait_with_output()
        .expect("waiting for the consumer");
    assert!(consumer.status.success(), "consumer: {}", text(&consumer));
    assert!(
        String::from_utf8_lossy(&consumer.stdout).contains("verified 16777216 bytes"),
        "{}",
        text(&consumer)
    );
    same_checksum(&producer.stdout, &consumer.stdout);
    let seg = Segment::open_read_only(ns.host_name("stream")).expect("segment exists");
    assert_eq!(seg.len().unwrap(), 64 + (16 << 20));
}

/// The two ABIs meet in one segment: a component produces, a core module
/// (`shmgate_v1`) consumes.
#[test]
fn component_producer_and_module_consumer_interoperate() {
    let ns = Namespace::new("cm");
    let consumer = spawn_consumer(&ns, CONSUMER, "mixed");
    let producer = produce(&ns, "mixed", "1MiB");
    assert!(producer.status.success(), "producer: {}", text(&producer));
    let consumer = consumer
        .wait_with_output()
        .expect("waiting for the consumer");
    assert!(consumer.status.success(), "consumer: {}", text(&consumer));
    same_checksum(&producer.stdout, &consumer.stdout);
}

/// A component that imports an interface nobody provides is refused
/// before it runs, with exit code 69 (`EX_UNAVAILABLE`) and the
/// interface's name; a file with a component header that is not a valid
/// component is 65 (`EX_DATAERR`).
#[test]
fn bad_components_exit_codes() {
    let out = shmgate(&["run", COMPONENT_UNKNOWN_IMPORT]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("acme:missing/thing"), "{stderr}");
    assert!(stderr.contains("does not provide"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "it must not have run: {}",
        text(&out)
    );

    let dir = std::env::temp_dir().join(format!("shmgate-e2e-comp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.wasm");
    // The component header (layer 1), then junk.
    std::fs::write(&bad, b"\0asm\x0d\0\x01\0junk junk").unwrap();
    let out = shmgate(&["run", bad.to_str().unwrap()]);
    // A core module (text is fine for modules) importing a function
    // nobody provides: the same 69.
    let unknown = dir.join("unknown.wat");
    std::fs::write(
        &unknown,
        r#"(module (import "acme_v1" "poke" (func)) (func (export "_start")))"#,
    )
    .unwrap();
    let module = shmgate(&["run", unknown.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(module.status.code(), Some(69), "{}", text(&module));
    assert!(
        String::from_utf8_lossy(&module.stderr).contains("acme_v1"),
        "{}",
        text(&module)
    );
    assert_eq!(out.status.code(), Some(65), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a valid component"),
        "{}",
        text(&out)
    );
}
