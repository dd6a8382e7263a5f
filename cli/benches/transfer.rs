//! Guest-to-guest transfer across two processes, in one run:
//!
//! - `transfer_256MiB/guest_window`: a producer guest and a consumer guest,
//!   each in its own `shmgate run` process, stream 256 MiB in 1 MiB
//!   messages through a ring in a shared window (zero-copy: each side does
//!   one memcpy in guest code);
//! - `transfer_256MiB/guest_read_write`: the same ring, payloads moved with
//!   `write`/`read` host calls;
//! - `transfer_256MiB/native_memcpy`: the baseline, one native memcpy of
//!   256 MiB between two mappings;
//! - `ring_64B/guest_window`: 64-byte messages through the ring, two
//!   processes: messages per second.
//!
//! The guests time themselves from the first message to the last, so
//! process start and module compilation are not counted. Run with
//! `cargo bench -p shmgate-cli --bench transfer`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shmgate_host::OpenOptions;

#[path = "common/stream.rs"]
mod common;

const MIB: u64 = 1 << 20;

/// Streams `total` bytes in `msg`-byte messages from a producer process to
/// a consumer process; returns the consumer's own timing.
fn stream(total: u64, msg: u64, transport: &str) -> Duration {
    static N: AtomicU32 = AtomicU32::new(0);
    let ns = format!(
        "shmgate-bench-ring-{}-{}.",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let report = common::stream(&ns, total, msg, transport);
    let secs: f64 = report
        .split(", in ")
        .nth(1)
        .and_then(|t| t.split(" s:").next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timing in {report:?}"));
    Duration::from_secs_f64(secs)
}

fn transfer(c: &mut Criterion) {
    const TOTAL: u64 = 256 * MIB;
    let mut g = c.benchmark_group("transfer_256MiB");
    g.sample_size(10).throughput(Throughput::Bytes(TOTAL));

    let name = |s: &str| format!("shmgate-bench-memcpy-{}-{s}", std::process::id());
    let a = OpenOptions::new()
        .size(TOTAL)
        .open_owned(name("a"))
        .unwrap();
    let b = OpenOptions::new()
        .size(TOTAL)
        .open_owned(name("b"))
        .unwrap();
    let (ma, mb) = (a.map().unwrap(), b.map().unwrap());
    g.bench_function("native_memcpy", |bench| {
        bench.iter(|| {
            // SAFETY: both mappings are live, TOTAL bytes long, writable,
            // and distinct objects, so the ranges do not overlap; nothing
            // else writes them during the copy.
            unsafe { std::ptr::copy_nonoverlapping(ma.as_ptr(), mb.as_mut_ptr(), ma.len()) }
        })
    });
    for (id, transport) in [("guest_window", "window"), ("guest_read_write", "host")] {
        g.bench_function(id, |bench| {
            bench.iter_custom(|iters| stream(iters * TOTAL, MIB, transport))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("ring_64B");
    g.sample_size(10).throughput(Throughput::Elements(1));
    g.bench_function("guest_window", |bench| {
        // At least a million messages per sample, so start-up noise is small.
        bench.iter_custom(|iters| {
            let n = iters.max(1 << 20);
            stream(n * 64, 64, "window").mul_f64(iters as f64 / n as f64)
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    targets = transfer
}
criterion_main!(benches);
