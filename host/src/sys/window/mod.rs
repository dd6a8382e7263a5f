//! Windows: segments mapped into wasm linear memory, and the signal
//! handling that keeps a shrunk or read-only window from killing the host.
//!
//! One idea per file:
//!
//! - [`record`]: one registration and the protocol its owner and the
//!   signal handler follow (invariants written there; model-checked with
//!   loom).
//! - [`registry`]: the process-wide records and the O(1) address index the
//!   handler looks faults up in.
//! - [`signals`]: the `SIGBUS`/`SIGSEGV` handler and its chaining.
//! - [`memory`]: [`ShmMemoryCreator`], the linear memories windows live in.
//! - [`map`]: mapping and unmapping windows without ever leaving a hole.
//! - [`guarded`]: host mappings the handler guards the same way (native
//!   [`Mapping`](crate::Mapping)s, the pages `wait32` uses).
//! - [`guest`]: host access to guest memory through raw pointers only.
//! - [`wait`]: waiting on a shared word and an interrupt word at once.
//! - [`doorbell`]: how tasks hand async waits to the io_uring reactor
//!   (model-checked with loom too).
//!
//! # The safety model
//!
//! Windows live only in memories wasmtime treats as *shared* (module-defined
//! `shared` memories, which wasmtime creates through our memory creator and
//! wraps in `SharedMemory`). For those, every host function, ours and
//! WASI's (wiggle's `GuestMemory::Shared`), copies bytes in and out through
//! raw pointers: no Rust reference is ever formed over bytes another
//! process can change.

pub(crate) mod doorbell;
pub(crate) mod guarded;
#[cfg(feature = "wasmtime")]
pub(crate) mod guest;
#[cfg(feature = "wasmtime")]
pub(crate) mod map;
#[cfg(feature = "wasmtime")]
pub(crate) mod memory;
pub(crate) mod record;
pub(crate) mod registry;
pub(crate) mod signals;
mod sync;
pub(crate) mod wait;

#[cfg(feature = "wasmtime")]
pub use memory::ShmMemoryCreator;
