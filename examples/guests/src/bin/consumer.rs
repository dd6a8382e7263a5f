//! Consumer guest: waits (up to TIMEOUT seconds) for segment NAME to be
//! published by the producer, reads the payload, and checks it against both
//! the published checksum and the deterministic stream. It prints the time
//! of its read loop (`read` calls, the check and word-wise FNV-1a, in 1 MiB
//! blocks), which the demo turns into the copy path's rate.
//!
//! The same source builds a core module (`shmgate_v1`) and, with the
//! `component` feature, a component (`shmgate:shm`).
//!
//! Usage (a read-only grant is enough): `consumer NAME TIMEOUT_SECS`

use std::time::{Duration, Instant};

use shmgate_example_guests::{FNV_START, fill, fnv1a_words, layout};
use shmgate_example_guests::api::{Errno, OpenOptions, Segment};

fn read_u64(seg: &Segment, offset: u64) -> Result<u64, Errno> {
    let mut b = [0; 8];
    seg.read_exact_at(&mut b, offset)?;
    Ok(u64::from_le_bytes(b))
}

/// Opens the segment and waits for READY; `None` on timeout.
fn wait_ready(name: &str, deadline: Instant) -> Result<Option<Segment>, Errno> {
    loop {
        match Segment::open(name, &OpenOptions::new()) {
            Ok(seg) => {
                let ready = seg.len()? >= layout::PAYLOAD
                    && read_u64(&seg, layout::STATE)? == layout::READY;
                if ready {
                    return Ok(Some(seg));
                }
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn run(name: &str, timeout: Duration) -> Result<Result<(u64, u64, f64), String>, Errno> {
    let Some(seg) = wait_ready(name, Instant::now() + timeout)? else {
        return Ok(Err(format!("timed out after {timeout:?} waiting for {name:?}")));
    };
    let mut magic = [0; 8];
    seg.read_exact_at(&mut magic, 0)?;
    if &magic != layout::MAGIC {
        return Ok(Err("bad magic".into()));
    }
    let len = read_u64(&seg, layout::LEN)?;
    let published = read_u64(&seg, layout::CHECKSUM)?;
    let (mut got, mut want) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let (mut sum, mut done) = (FNV_START, 0);
    let start = Instant::now();
    while done < len {
        let n = got.len().min((len - done) as usize);
        seg.read_exact_at(&mut got[..n], layout::PAYLOAD + done)?;
        fill(&mut want[..n], done);
        if got[..n] != want[..n] {
            return Ok(Err(format!("payload differs in the block at byte {done}")));
        }
        sum = fnv1a_words(sum, &got[..n]);
        done += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    if sum != published {
        return Ok(Err(format!("checksum {sum:016x} != published {published:016x}")));
    }
    Ok(Ok((len, sum, secs)))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(secs)) = (args.get(1), args.get(2).and_then(|s| s.parse().ok())) else {
        eprintln!("usage: consumer NAME TIMEOUT_SECS");
        std::process::exit(64);
    };
    match run(name, Duration::from_secs(secs)) {
        Ok(Ok((len, sum, secs))) => {
            println!("consumer: verified {len} bytes from {name:?} in {secs:.6} s, fnv1a-words {sum:016x}")
        }
        Ok(Err(why)) => {
            eprintln!("consumer: {why}");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("consumer: {name:?}: {e}");
            std::process::exit(1);
        }
    }
}
