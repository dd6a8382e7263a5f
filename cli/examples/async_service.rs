//! A native tokio service fed by N guests: each guest is a `shmgate run`
//! process running the `ring_ping` example guest, which makes a segment
//! with two window rings, sends timed messages on the first and waits for
//! each answer on the second. The service, on a 2-worker runtime, holds
//! one `AsyncConsumer` and one `AsyncProducer` per guest and echoes every
//! message: no thread per guest, and no thread at all while a ring is
//! idle.
//!
//! It prints the CPU time the whole service process used while every
//! guest was connected and idle (before the service opens the answer
//! rings, the guests wait), then an HDR histogram of the one-way latency
//! guest -> service (the guest's `CLOCK_MONOTONIC` send time, carried in
//! the message, to the service's receive time).
//!
//! ```text
//! cargo build --release -p shmgate-cli
//! cargo run --release -p shmgate-cli --example async_service -- 8 20000
//! ```
//!
//! Arguments: guests (default 8), messages per guest (default 20,000).
//! The `shmgate` binary is taken from `$SHMGATE`, else from beside this
//! example's target directory.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shmgate_guest_artifacts::RING_PING;
use shmgate_host::{Segment, ring, unlink};

const HALF: usize = 64 << 10;
const SLOT: usize = 72;
const IDLE: Duration = Duration::from_secs(5);

/// `target/<profile>/shmgate`, from `target/<profile>/examples/<this>`.
fn shmgate_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SHMGATE") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("shmgate"))
        .expect("no target directory")
}

/// User plus system CPU time of this process (`/proc/self/stat` fields
/// 14 and 15, in clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // After the `)`: state is field 3 (not a number), so utime (14) and
    // stime (15) are the 11th and 12th numbers.
    let ticks = fields.get(10).unwrap_or(&0) + fields.get(11).unwrap_or(&0);
    Duration::from_millis(ticks * 10)
}

/// Removes the guests' segments when the service ends, however it ends.
struct Cleanup(Vec<String>, Vec<Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.1 {
            let _ = child.kill();
            let _ = child.wait();
        }
        for name in &self.0 {
            let _ = unlink(name);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let guests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(8);
    let count: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let ns = format!("shmgate-example-svc-{}.", std::process::id());
    let shmgate = shmgate_binary();
    let mut cleanup = Cleanup(Vec::new(), Vec::new());
    for g in 0..guests {
        let child = Command::new(&shmgate)
            .arg("run")
            .args([
                "--namespace",
                &ns,
                "--max-size",
                "1MiB",
                "--max-mapped",
                "1MiB",
            ])
            .arg("--allow-create")
            .args([
                RING_PING,
                "--",
                &format!("g{g}"),
                &count.to_string(),
                "block",
                "16",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", shmgate.display()));
        cleanup.0.push(format!("{ns}g{g}"));
        cleanup.1.push(child);
    }
    // Attach to each guest's ring A once it is there.
    let mut ends = Vec::new();
    for name in &cleanup.0 {
        let deadline = Instant::now() + Duration::from_secs(120);
        let (map, rx) = loop {
            assert!(
                Instant::now() < deadline,
                "guest {name} never made its ring"
            );
            if let Ok(seg) = Segment::open_read_write(name)
                && seg.len().unwrap_or(0) >= 2 * HALF as u64
            {
                let map = Arc::new(seg.map().unwrap());
                if let Ok(rx) = ring::AsyncConsumer::attach(Arc::clone(&map), 0..HALF) {
                    break (map, rx);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        ends.push((map, rx));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    // Idle: every consumer waits in `recv` on an empty ring; the guests
    // wait for their answer ring, which the service has not made yet.
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = ends
        .into_iter()
        .map(|(map, mut rx)| {
            let mut gate = gate_rx.clone();
            rt.spawn(async move {
                let mut hist = Histogram::<u64>::new(3).unwrap();
                let mut buf = [0u8; 64];
                // The first message cannot come before the answer ring
                // exists: wait for the gate, then make it.
                let _ = gate.wait_for(|open| *open).await;
                let mut tx = ring::AsyncProducer::create(map, HALF..2 * HALF, SLOT).unwrap();
                tx.set_batch(1);
                while let Some(n) = rx.recv(&mut buf).await.unwrap() {
                    let now = ring::monotonic_ns();
                    let sent = u64::from_le_bytes(buf[8..16].try_into().unwrap());
                    hist.record(now.saturating_sub(sent).max(1)).unwrap();
                    tx.send(&buf[..n]).await.unwrap();
                }
                hist
            })
        })
        .collect();
    let (c0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(IDLE);
    let (idle_cpu, idle_wall) = (cpu_time() - c0, t0.elapsed());
    println!(
        "{guests} guests connected and idle for {:.1} s: the service used {:?} of CPU ({:.2}% of a core)",
        idle_wall.as_secs_f64(),
        idle_cpu,
        idle_cpu.as_secs_f64() / idle_wall.as_secs_f64() * 100.0
    );
    let t = Instant::now();
    gate_tx.send(true).unwrap();
    let mut all = Histogram::<u64>::new(3).unwrap();
    rt.block_on(async {
        for task in tasks {
            all.add(task.await.unwrap()).unwrap();
        }
    });
    let wall = t.elapsed();
    for child in &mut cleanup.1 {
        assert!(child.wait().unwrap().success(), "a guest failed");
    }
    cleanup.1.clear();
    println!(
        "{} messages from {guests} guests echoed in {:.2} s; one-way latency guest -> service (us):",
        all.len(),
        wall.as_secs_f64()
    );
    for (q, name) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99"), (0.999, "p99.9")] {
        println!(
            "  {name:>6}: {:8.1}",
            all.value_at_quantile(q) as f64 / 1000.0
        );
    }
    println!("  {:>6}: {:8.1}", "mean", all.mean() / 1000.0);
    println!("  {:>6}: {:8.1}", "max", all.max() as f64 / 1000.0);
    // A coarse histogram: counts per power-of-two bucket of microseconds.
    println!("  histogram (us: count):");
    let mut lo = 1u64;
    while lo * 1000 <= all.max() {
        let hi = lo * 2;
        let n = all.count_between(lo * 1000, hi * 1000 - 1);
        if n > 0 {
            let bar = "#".repeat(usize::try_from((n * 50).div_ceil(all.len())).unwrap_or(50));
            println!("  {lo:>6}-{:<6} {n:>8} {bar}", hi - 1);
        }
        lo = hi;
    }
}
