//! Hostile-guest tests of the `shmgate_v1` host functions and the
//! `shmgate:shm` component interface: a WAT guest (core module) or the
//! driver component calls every import with whatever arguments a test
//! picks, and each test asserts the exact errno and that the host is
//! unharmed (the same store still works, segments outside the namespace
//! are untouched).
//!
//! - [`table`], [`cases`]: the hostile cases as one table of (grant,
//!   operation, errno), run through both ABIs ([`abi`]); forged component
//!   handles.
//! - [`names`]: `/`, `.`, `..`, NUL, control bytes, 300 bytes, names
//!   outside the namespace, no namespace at all.
//! - [`pointers`]: out-of-bounds and wrapping pointers, `-1` and
//!   `i32::MIN` lengths, a guest without `memory`.
//! - [`handles`]: forged, closed, reused and foreign handles.
//! - [`rights`]: flags, modes, read-only grants, create, truncate, resize
//!   and unlink rights.
//! - [`quotas`]: `max_handles`, `max_created`, `max_segment_size`.
//! - [`io`]: data through guest memory, short reads, writes that never
//!   grow, offsets.
//! - [`isolation`]: two namespaces, `auto_unlink`.
//!
//! Descriptor counting lives in the `wasm_fds` test binary, alone, so no
//! other test thread changes `/proc/self/fd` under it.
//!
//! Every test uses its own names (`shmgate-wt-<pid>-<n>.…`) and removes
//! them on drop, pass or fail.
#![deny(unsafe_code)]

mod abi;
mod cases;
mod common;
mod component_async;
mod handles;
mod io;
mod isolation;
mod liveness;
mod names;
mod pointers;
mod quotas;
mod rights;
mod table;
