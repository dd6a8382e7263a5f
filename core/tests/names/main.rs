//! Integration tests of the name grammar: properties over generated names
//! and a differential test against the machine's glibc `shm_open`.
//!
//! Both need the real machine (proptest's runner, glibc), so Miri skips them;
//! `cargo miri test -p shmgate-core` runs the unit tests and doctests.
#![cfg(not(miri))]

mod glibc_differential;
mod properties;
