//! Ring ping guest: creates segment NAME (128 KiB) with ring A in its first
//! 64 KiB, waits for a pong end (native or guest) to create ring B in the
//! second, then sends COUNT messages of SIZE bytes (16 to 64, default 16: a
//! number, then the send time on the host's `CLOCK_MONOTONIC`, read with
//! `shmgate_v1`'s `clock_monotonic`, so the pong end can time the one-way
//! trip) one at a time, each answered before the next. Prints every round trip / 2 in
//! nanoseconds on one line, `samples half-rtt: N N ...`, for the caller's
//! histogram.
//!
//! Usage (grant: create and windows): `ring_ping NAME COUNT spin|block [SIZE]`

use std::time::{Duration, Instant};

use shmgate_guest::ring::{Consumer, Producer, WaitMode};
use shmgate_guest::{Errno, Prot, Segment, clock_monotonic};

const HALF: u64 = 64 << 10;
/// The largest message, and the slot size that holds it.
const MAX: usize = 64;
const SLOT: usize = 72;

fn run(name: &str, count: usize, mode: WaitMode, size: usize) -> Result<Vec<u64>, Errno> {
    let seg = Segment::create(name, 2 * HALF)?;
    let (win_a, win_b) = (seg.map(0..HALF, Prot::ReadWrite)?, seg.map(HALF..2 * HALF, Prot::ReadWrite)?);
    let mut tx = Producer::create(&seg, &win_a, 0, SLOT)?;
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
    let mut msg = [0x5a; MAX];
    let mut buf = [0; MAX];
    for i in 0..count as u64 {
        let t0 = clock_monotonic()?;
        msg[..8].copy_from_slice(&i.to_le_bytes());
        msg[8..16].copy_from_slice(&t0.to_le_bytes());
        tx.send(&msg[..size])?;
        let n = rx.recv(&mut buf)?;
        let rtt = clock_monotonic()?.saturating_sub(t0);
        if n != Some(size) || buf[..size] != msg[..size] {
            return Err(Errno::IO);
        }
        samples.push(rtt / 2);
    }
    tx.close()?;
    Ok(samples)
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
        let size = match args.get(4) {
            Some(s) => s.parse().ok().filter(|s| (16..=MAX).contains(s))?,
            None => 16,
        };
        Some((args.get(1)?.clone(), count, mode, size))
    })();
    let Some((name, count, mode, size)) = parsed else {
        eprintln!("usage: ring_ping NAME COUNT spin|block [SIZE 16..=64]");
        std::process::exit(64);
    };
    match run(&name, count, mode, size) {
        Ok(samples) => {
            let all: Vec<String> = samples.iter().map(u64::to_string).collect();
            println!("samples half-rtt: {}", all.join(" "));
        }
        Err(e) => {
            eprintln!("ring_ping: {e}");
            std::process::exit(1);
        }
    }
}
