//! Ring ping guest: creates segment NAME (128 KiB) with ring A in its first
//! 64 KiB, waits for a pong end (native or guest) to create ring B in the
//! second, then sends COUNT 8-byte messages one at a time, each answered
//! before the next, and prints one-way latency percentiles (round trip / 2,
//! the guest's monotonic clock): `p50 P p99 P p99.9 P ns`, then a line
//! `quantiles:` with the 1000 per-mille quantiles.
//!
//! Usage (grant: create and windows): `ring_ping NAME COUNT spin|block`

use std::time::{Duration, Instant};

use shmgate_guest::ring::{Consumer, Producer, WaitMode};
use shmgate_guest::{Errno, Prot, Segment};

const HALF: u64 = 64 << 10;

fn run(name: &str, count: usize, mode: WaitMode) -> Result<Vec<u64>, Errno> {
    let seg = Segment::create(name, 2 * HALF)?;
    let (win_a, win_b) = (seg.map(0..HALF, Prot::ReadWrite)?, seg.map(HALF..2 * HALF, Prot::ReadWrite)?);
    let mut tx = Producer::create(&seg, &win_a, 0, 16)?;
    tx.wait_for_consumer(Duration::from_secs(120))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rx = loop {
        match Consumer::attach(&seg, &win_b, HALF) {
            Ok(rx) => break rx,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e),
        }
    };
    tx.set_batch(1);
    tx.set_wait_mode(mode);
    rx.set_wait_mode(mode);
    let mut samples = Vec::with_capacity(count);
    let mut buf = [0; 12];
    for i in 0..count as u64 {
        let t0 = Instant::now();
        tx.send(&i.to_le_bytes())?;
        let n = rx.recv(&mut buf)?;
        let rtt = t0.elapsed();
        if n != Some(8) || buf[..8] != i.to_le_bytes() {
            return Err(Errno::IO);
        }
        samples.push((rtt.as_nanos() / 2) as u64);
    }
    tx.close()?;
    samples.sort_unstable();
    Ok((0..1000).map(|q| samples[(samples.len() * q / 1000).min(samples.len() - 1)]).collect())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| {
        let count: usize = args.get(2)?.parse().ok().filter(|&c| c > 0)?;
        let mode = match args.get(3)?.as_str() {
            "spin" => WaitMode::SPIN,
            "block" => WaitMode::BLOCK,
            _ => return None,
        };
        Some((args.get(1)?.clone(), count, mode))
    })();
    let Some((name, count, mode)) = parsed else {
        eprintln!("usage: ring_ping NAME COUNT spin|block");
        std::process::exit(64);
    };
    match run(&name, count, mode) {
        Ok(q) => {
            println!("ring_ping: p50 {} p99 {} p99.9 {} ns", q[500], q[990], q[999]);
            let all: Vec<String> = q.iter().map(u64::to_string).collect();
            println!("quantiles: {}", all.join(" "));
        }
        Err(e) => {
            eprintln!("ring_ping: {e}");
            std::process::exit(1);
        }
    }
}
