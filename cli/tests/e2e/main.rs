//! End-to-end tests of `shmgate run`: real guests compiled from Rust to
//! `wasm32-wasip1` (`examples/guests`), run in real separate processes,
//! sharing real `/dev/shm` segments with each other and with native code.

mod c_guest;
mod common;
mod exchange;
mod grants;
