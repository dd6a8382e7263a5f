//! Integration tests of `shmgate-host` against the real kernel, glibc and
//! Python: one test binary for the host, one module per area.
//!
//! - [`conformance`]: the Open POSIX Test Suite's `shm_open`/`shm_unlink`
//!   assertions.
//! - [`hazards`]: symlinks, FIFOs, directories and hostile names planted in
//!   `/dev/shm`.
//! - [`interop_glibc`], [`interop_python`]: objects shared with glibc's
//!   `shm_open` and Python's `multiprocessing.shared_memory`.
//! - [`errors`]: what an `Error` says about a real failure.
//! - [`atomic`]: atomic creation against a concurrent opener.
//! - [`sealed`]: anonymous segments, seals, and `SCM_RIGHTS` between
//!   processes.
//! - [`lifecycle`]: the creator lock and orphan removal against creators
//!   that live, exit or are killed.
//! - [`truncation`]: native mappings survive a peer that shrinks them.
//!
//! Every test uses its own names (`shmgate-test-<pid>-<n>`) and removes
//! what it created, pass or fail. Tests that need a second process, another
//! user or another umask run the `shmgate-probe` binary of this crate.
#![deny(unsafe_code)]

mod atomic;
mod common;
mod conformance;
mod errors;
mod hazards;
mod interop_glibc;
mod interop_python;
mod lifecycle;
mod sealed;
mod sys;
mod truncation;
