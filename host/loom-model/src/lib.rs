//! The window registry's record protocol (`host/src/sys/window/record.rs`),
//! compiled here on its own against loom's atomics so that model checking
//! needs neither wasmtime nor the rest of `shmgate-host`. The file is the
//! one the host runs; only the atomics differ (see its `sync` module).
//!
//! ```text
//! RUSTFLAGS="--cfg shmgate_loom" cargo test -p shmgate-loom-model --release
//! ```
#![cfg(shmgate_loom)]
#![allow(dead_code, unreachable_pub, missing_docs, unexpected_cfgs)]

#[path = "../../src/sys/window/sync.rs"]
mod sync;

#[path = "../../src/sys/window/record.rs"]
pub mod record;

#[path = "../../src/sys/window/doorbell.rs"]
pub mod doorbell;
