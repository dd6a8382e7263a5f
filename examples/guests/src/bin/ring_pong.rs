//! Ring pong guest: opens segment NAME (128 KiB, made by a ping end, native
//! or guest), consumes ring A in its first 64 KiB and creates ring B in the
//! second (slots for messages of up to 64 bytes), and echoes every message
//! from A to B until A closes. Messages of 16 bytes or more carry their
//! send time (the host's `CLOCK_MONOTONIC`) in bytes 8..16: for those it
//! prints the one-way latency of each, now (`clock_monotonic`) minus that
//! time, taken before echoing, as `samples one-way: N N ...`.
//!
//! Usage (grant: read-write and windows): `ring_pong NAME spin|block TIMEOUT_SECS`

use std::time::{Duration, Instant};

use shmgate_guest::ring::{Consumer, Producer, WaitMode};
use shmgate_guest::{Errno, OpenOptions, Prot, Segment, clock_monotonic};

const HALF: u64 = 64 << 10;

fn run(name: &str, mode: WaitMode, timeout: Duration) -> Result<Vec<u64>, Errno> {
    let deadline = Instant::now() + timeout;
    let seg = loop {
        match Segment::open(name, &OpenOptions::new().read_write(true)) {
            Ok(seg) if seg.len()? >= 2 * HALF => break seg,
            Ok(_) | Err(Errno::NOENT) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Ok(_) => return Err(Errno::TIMEDOUT),
            Err(e) => return Err(e),
        }
    };
    let (win_a, win_b) = (seg.map(0..HALF, Prot::ReadWrite)?, seg.map(HALF..2 * HALF, Prot::ReadWrite)?);
    let mut rx = loop {
        match Consumer::attach(&seg, &win_a, 0) {
            Ok(rx) => break rx,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e),
        }
    };
    let mut tx = Producer::create(&seg, &win_b, HALF, 72)?;
    tx.set_batch(1);
    tx.set_wait_mode(mode);
    rx.set_wait_mode(mode);
    let mut buf = [0; 68];
    let mut one_way = Vec::new();
    while let Some(len) = rx.recv(&mut buf)? {
        if len >= 16 {
            let now = clock_monotonic()?;
            let sent = u64::from_le_bytes(buf[8..16].try_into().map_err(|_| Errno::INVAL)?);
            one_way.push(now.saturating_sub(sent));
        }
        tx.send(&buf[..len])?;
    }
    Ok(one_way)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| {
        let mode = match args.get(2)?.as_str() {
            "spin" => WaitMode::SPIN,
            "block" => WaitMode::BLOCK,
            _ => return None,
        };
        let timeout = Duration::from_secs(args.get(3)?.parse().ok()?);
        Some((args.get(1)?.clone(), mode, timeout))
    })();
    let Some((name, mode, timeout)) = parsed else {
        eprintln!("usage: ring_pong NAME spin|block TIMEOUT_SECS");
        std::process::exit(64);
    };
    match run(&name, mode, timeout) {
        Ok(one_way) => {
            println!("ring_pong: echoed {} timed messages", one_way.len());
            let all: Vec<String> = one_way.iter().map(u64::to_string).collect();
            println!("samples one-way: {}", all.join(" "));
        }
        Err(e) => {
            eprintln!("ring_pong: {e}");
            std::process::exit(1);
        }
    }
}
