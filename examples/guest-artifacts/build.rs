//! Builds `examples/guests` for `wasm32-wasip1` (core modules) and, with
//! its `component` feature, for `wasm32-wasip2` (components), with a nested
//! cargo, in a target directory of its own under `OUT_DIR` (sharing the
//! outer one would deadlock on its lock), and writes their paths for
//! `src/lib.rs`. This is wasmtime's `test-programs-artifacts` pattern: no
//! `.wasm` is committed.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUESTS: [&str; 7] = [
    "producer",
    "consumer",
    "echo",
    "ring_producer",
    "ring_consumer",
    "ring_ping",
    "ring_pong",
];

/// The component guests (`wasm32-wasip2`), and the names their paths get.
const COMPONENTS: [(&str, &str); 4] = [
    ("producer", "COMPONENT_PRODUCER"),
    ("consumer", "COMPONENT_CONSUMER"),
    ("component_driver", "COMPONENT_DRIVER"),
    ("component_unknown_import", "COMPONENT_UNKNOWN_IMPORT"),
];

/// Makes sure the toolchain building us has the `target` standard
/// library: on a fresh machine `rust-toolchain.toml` lists the target, but
/// rustup adds listed targets only when it installs the toolchain, not to
/// one that is already there. So the README's first command can be the only
/// one, this adds the target through rustup when it is missing.
fn ensure_wasm_target(target: &str) {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed =
        sysroot.is_some_and(|root| root.join(format!("lib/rustlib/{target}/lib")).is_dir());
    if installed {
        return;
    }
    println!("cargo:warning=adding the {target} target with rustup, to build the example guests");
    let added = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        added,
        "the {target} target is missing and `rustup target add {target}` failed; \
         install it and build again"
    );
}

/// Writes `paths.rs` for a build without the guests' sources: a packaged
/// copy of this crate (`cargo package`, crates.io) holds only itself, not the
/// repository's `examples/guests`. The paths are empty and `AVAILABLE` says
/// so; users of the paths (the demo) report it instead of failing here.
fn write_unavailable(out: &Path) {
    let mut paths = String::from(
        "/// False: this build had no `examples/guests` sources (a packaged copy of this crate).\n\
         pub const AVAILABLE: bool = false;\n",
    );
    let consts = GUESTS
        .iter()
        .map(|g| (*g, g.to_uppercase()))
        .chain(COMPONENTS.iter().map(|(g, k)| (*g, (*k).to_owned())));
    for (guest, konst) in consts {
        paths.push_str(&format!(
            "/// Empty: the `{guest}` example guest was not built (no sources).\n\
             pub const {konst}: &str = \"\";\n"
        ));
    }
    for guest in GUESTS {
        paths.push_str(&format!(
            "/// Empty: the `{guest}` example guest was not built (no sources).\n\
             pub const {}_WASM: &[u8] = &[];\n",
            guest.to_uppercase()
        ));
    }
    std::fs::write(out.join("paths.rs"), paths).expect("writing paths.rs");
}

/// A `cargo build --release` of the guests for `target`, with what the
/// outer build sets for itself removed.
fn guest_build(target: &str, guests: &Path, target_dir: &Path, root: &Path) -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg(format!("--target={target}"))
        .arg("--manifest-path")
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(root);
    // What the outer build sets for itself must not leak into the guests'
    // build: host RUSTFLAGS, clippy's wrapper, coverage or sanitizer flags.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Appends the line of `paths.rs` for one guest.
fn path_const(paths: &mut String, wasm: &Path, konst: &str, doc: &str) {
    assert!(wasm.exists(), "{} was not built", wasm.display());
    paths.push_str(&format!(
        "/// Path of {doc}.\npub const {konst}: &str = {:?};\n",
        wasm.display().to_string()
    ));
}

/// Appends the line of `paths.rs` that embeds one guest's bytes
/// (`include_bytes!`, so a binary using it carries the guest and needs no
/// build tree or wasm toolchain where it runs).
fn bytes_const(paths: &mut String, wasm: &Path, konst: &str, doc: &str) {
    paths.push_str(&format!(
        "/// The bytes of {doc}, embedded at build time.\n\
         pub const {konst}_WASM: &[u8] = include_bytes!({:?});\n",
        wasm.display().to_string()
    ));
}

fn main() {
    let here = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guests = here.join("../guests");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    if !guests.join("Cargo.toml").exists() {
        println!(
            "cargo:warning=no example guest sources beside this crate; the guests are not built"
        );
        write_unavailable(&out);
        return;
    }
    ensure_wasm_target("wasm32-wasip1");
    ensure_wasm_target("wasm32-wasip2");
    let root = here.join("../..");
    for watched in [
        "examples/guests/src",
        "examples/guests/Cargo.toml",
        "examples/guests/driver-wit",
        "wit",
        "guest-sdk/src",
        "guest-sdk/Cargo.toml",
        "core/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = out.join("wasm-target");
    let mut cmd = guest_build("wasm32-wasip1", &guests, &target_dir, &root);
    // Real wasm atomics, so windows shared between processes (the ring
    // buffer) get atomic read-modify-writes and fences. `atomics` is an
    // unstable target feature: rustc warns, and the engine must enable the
    // threads proposal (`shmgate_host::wasm::configure` does).
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        "-Ctarget-feature=+atomics,+bulk-memory",
    );
    let status = cmd.status().expect("running cargo for the example guests");
    assert!(
        status.success(),
        "building examples/guests for wasm32-wasip1 failed; is the target installed? \
         (`rustup target add wasm32-wasip1`; rust-toolchain.toml lists it)"
    );

    // The components: no atomics (nothing in them maps windows), the
    // component API of the guest SDK.
    let mut cmd = guest_build("wasm32-wasip2", &guests, &target_dir, &root);
    cmd.arg("--features=component");
    for (bin, _) in COMPONENTS {
        cmd.arg(format!("--bin={bin}"));
    }
    let status = cmd
        .status()
        .expect("running cargo for the component guests");
    assert!(
        status.success(),
        "building examples/guests for wasm32-wasip2 failed; is the target installed? \
         (`rustup target add wasm32-wasip2`; rust-toolchain.toml lists it)"
    );

    let mut paths = String::from(
        "/// True: the example guests below were built from `examples/guests`.\n\
         pub const AVAILABLE: bool = true;\n",
    );
    for guest in GUESTS {
        let wasm = target_dir
            .join("wasm32-wasip1/release")
            .join(format!("{guest}.wasm"));
        let doc = format!("the `{guest}` example guest (`examples/guests/src/bin/{guest}.rs`)");
        path_const(&mut paths, &wasm, &guest.to_uppercase(), &doc);
        bytes_const(&mut paths, &wasm, &guest.to_uppercase(), &doc);
    }
    for (bin, konst) in COMPONENTS {
        let wasm = target_dir
            .join("wasm32-wasip2/release")
            .join(format!("{bin}.wasm"));
        let doc = format!(
            "the `{bin}` example guest built as a component \
             (`examples/guests/src/bin/{bin}.rs`, `wasm32-wasip2`)"
        );
        path_const(&mut paths, &wasm, konst, &doc);
    }
    std::fs::write(out.join("paths.rs"), paths).expect("writing paths.rs");
}
