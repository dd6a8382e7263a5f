//! What `shmgate run` grants (to core modules and components alike), and
//! its exit codes.

use shmgate_guest_artifacts::{COMPONENT_PRODUCER, CONSUMER, PRODUCER};

use crate::common::{Namespace, shmgate, text};

/// The producer guest built both ways: the grant flags mean the same to a
/// core module and to a component.
const PRODUCERS: [&str; 2] = [PRODUCER, COMPONENT_PRODUCER];

/// Without a namespace the guest gets no segments: EACCES, and it says so.
#[test]
fn no_grant_means_eacces() {
    for producer in PRODUCERS {
        let ns = Namespace::new("deny");
        let out = shmgate(&["run", producer, "--", "x", "4096"]);
        assert_eq!(out.status.code(), Some(1), "{producer}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("EACCES"), "{producer}: {stderr}");
        assert!(ns.entries().is_empty(), "{producer}: {:?}", ns.entries());
    }
}

/// A read-only grant refuses a create with EACCES and creates nothing.
#[test]
fn read_only_grant_refuses_create() {
    for producer in PRODUCERS {
        let ns = Namespace::new("ro");
        let out = shmgate(&[
            "run",
            "--namespace",
            &ns.0,
            "--read-only",
            producer,
            "--",
            "x",
            "4096",
        ]);
        assert_eq!(out.status.code(), Some(1), "{producer}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("EACCES"),
            "{producer}: {}",
            text(&out)
        );
        assert!(ns.entries().is_empty(), "{producer}: {:?}", ns.entries());
    }
}

/// Creating is granted but the size limit is not: EFBIG, and the guest
/// SDK removes the half-made segment (unlink is not granted, so the
/// segment stays; it must be empty).
#[test]
fn size_limit_is_efbig() {
    let ns = Namespace::new("fbig");
    let out = shmgate(&[
        "run",
        "--namespace",
        &ns.0,
        "--allow-create",
        "--max-size",
        "1MiB",
        PRODUCER,
        "--",
        "big",
        "2MiB",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("EFBIG"),
        "{}",
        text(&out)
    );
    let meta = std::fs::metadata(format!("/dev/shm/{}", ns.host_name("big"))).unwrap();
    assert_eq!(meta.len(), 0);
}

/// --auto-unlink removes what the guest created when it exits.
#[test]
fn auto_unlink_cleans_up() {
    let ns = Namespace::new("auto");
    let out = shmgate(&[
        "run",
        "--namespace",
        &ns.0,
        "--allow-create",
        "--auto-unlink",
        PRODUCER,
        "--",
        "tmp",
        "4096",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(ns.entries().is_empty(), "{:?}", ns.entries());
}

/// The guest's exit code is the process's; sysexits for our own errors.
#[test]
fn exit_codes() {
    // The consumer exits 64 on bad usage (no arguments).
    let out = shmgate(&["run", CONSUMER]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));

    let missing = shmgate(&["run", "/nonexistent/guest.wasm"]);
    assert_eq!(missing.status.code(), Some(66), "{}", text(&missing));

    let dir = std::env::temp_dir().join(format!("shmgate-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let bad = shmgate(&["run", junk.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(bad.status.code(), Some(65), "{}", text(&bad));

    let usage = shmgate(&["run", "--max-size", "lots", CONSUMER]);
    assert_eq!(usage.status.code(), Some(64), "{}", text(&usage));
    let bad_ns = shmgate(&["run", "--namespace", "a/b", CONSUMER]);
    assert_eq!(bad_ns.status.code(), Some(64), "{}", text(&bad_ns));

    let help = shmgate(&["run", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Example:"));
}
