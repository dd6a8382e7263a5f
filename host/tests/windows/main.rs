//! Windows (`map`/`unmap`) and `wait32`/`notify`, against real wasmtime
//! engines, real segments and real second processes: each safety
//! requirement of the windows design is one or more tests here.

// The ABI's handles and addresses are `i32` on the wire while results are
// `i64`: these tests narrow them on purpose, after asserting they are valid.
#![allow(clippy::cast_possible_truncation)]

mod async_wait;
mod atomic_waits;
mod bulk;
mod common;
mod errno;
mod errors;
mod findings;
mod lifecycle;
mod limits;
mod memory_kinds;
mod share_diff;
mod signals;
mod stress;
mod wait;
mod watch;
