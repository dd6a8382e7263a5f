//! The atomics (and the mutex) the registry's record protocol and the
//! async engine's doorbell use: std's in real builds,
//! loom's under `--cfg shmgate_loom`, so the protocol in [`record`](super::record)
//! is model-checked with the same code that runs (tokio's `src/loom/`
//! pattern).

#[cfg(shmgate_loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(shmgate_loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(shmgate_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

#[cfg(not(shmgate_loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(shmgate_loom))]
pub(crate) use std::sync::Mutex;
#[cfg(not(shmgate_loom))]
pub(crate) use std::sync::atomic::AtomicU32;
#[cfg(not(shmgate_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
