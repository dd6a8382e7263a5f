//! End-to-end tests of the `shmgate` binary: `run` with real guests
//! compiled from Rust to `wasm32-wasip1` modules and `wasm32-wasip2`
//! components (`examples/guests`), run in real
//! separate processes, sharing real `/dev/shm` segments with each other and
//! with native code; `ls`, `rm` and `demo` on real `/dev/shm` entries.

mod async_ring;
mod c_guest;
mod common;
mod components;
mod demo;
mod exchange;
mod grants;
mod limits;
mod liveness;
mod ls;
mod orphans;
mod ring;
mod ring_interop;
mod rm;
