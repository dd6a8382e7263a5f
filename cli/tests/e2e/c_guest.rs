//! A C guest built from `examples/c-guest/hello.c` against
//! `guest-sdk/include/shmgate.h` with clang, run by `shmgate run`: proves
//! the header declares the imports the host provides.

use std::path::Path;
use std::process::Command;

use crate::common::{Namespace, shmgate, text};

#[test]
fn c_guest_uses_the_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let ns = Namespace::new("c");
    let wasm = std::env::temp_dir().join(format!("{}hello.wasm", ns.0));
    let built = Command::new("clang")
        .args([
            "--target=wasm32",
            "-nostdlib",
            "-O2",
            "-Wl,--no-entry",
            "-Wl,--export=_start",
        ])
        .arg("-I")
        .arg(root.join("guest-sdk/include"))
        .arg("-o")
        .arg(&wasm)
        .arg(root.join("examples/c-guest/hello.c"))
        .status();
    match built {
        Ok(status) => assert!(status.success(), "clang failed to build the C guest"),
        Err(e) => {
            eprintln!(
                "\n*** SKIPPED c_guest_uses_the_header: clang is not installed ({e}); \
                 .ci/run installs clang and lld ***\n"
            );
            return;
        }
    }
    let out = shmgate(&[
        "run",
        "--namespace",
        &ns.0,
        "--allow-create",
        wasm.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&wasm);
    assert!(out.status.success(), "{}", text(&out));
    let data = std::fs::read(format!("/dev/shm/{}", ns.host_name("hello"))).unwrap();
    assert_eq!(data.len(), 4096);
    assert!(data.starts_with(b"hello from a C guest"));
}
