//! Ring consumer guest: waits (up to TIMEOUT seconds) for the ring in
//! segment NAME, receives every message, checks they arrive numbered in
//! order, and reports throughput measured from the first message to the
//! end.
//!
//! Usage (grant: read-write and windows): `ring_consumer NAME MSG window|host TIMEOUT`

use std::time::{Duration, Instant};

use shmgate_example_guests::{FNV_START, fnv1a_words, parse_size};
use shmgate_guest::ring::{Consumer, Transport};
use shmgate_guest::{Errno, OpenOptions, Prot, Segment, Window};

/// Opens the segment, maps it and attaches once the producer has made it.
fn attach(name: &str, deadline: Instant) -> Result<(Segment, Window), Errno> {
    loop {
        match Segment::open(name, &OpenOptions::new().read_write(true)) {
            Ok(seg) => {
                let len = seg.len()?;
                if len > 0 {
                    let win = seg.map(0..len, Prot::ReadWrite)?;
                    if Consumer::attach(&seg, &win, 0).is_ok() {
                        return Ok((seg, win));
                    }
                }
            }
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
        if Instant::now() > deadline {
            return Err(Errno::TIMEDOUT);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn run(name: &str, msg: usize, transport: Transport, timeout: Duration) -> Result<String, Errno> {
    let (seg, win) = attach(name, Instant::now() + timeout)?;
    let mut rx = Consumer::attach(&seg, &win, 0)?.with_transport(transport);
    let mut buf = vec![0u8; msg];
    let mut expected = 0u64;
    let mut start = None;
    let mut sum = FNV_START;
    while let Some(n) = rx.recv(&mut buf)? {
        sum = fnv1a_words(sum, &buf[..n]);
        start.get_or_insert_with(Instant::now);
        let seq = u64::from_le_bytes(buf[..8].try_into().map_err(|_| Errno::INVAL)?);
        let last = u64::from_le_bytes(buf[msg - 8..].try_into().map_err(|_| Errno::INVAL)?);
        if n != msg || seq != expected || last != expected || buf[8..16.min(msg - 8).max(8)].iter().any(|&b| b != 0x5a) {
            eprintln!("ring_consumer: message {expected} arrived as #{seq} with {n} bytes");
            return Err(Errno::IO);
        }
        expected += 1;
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64()).max(1e-9);
    let bytes = expected * msg as u64;
    Ok(format!(
        "ring_consumer: received {expected} messages ({bytes} bytes) in order, in {secs:.6} s: \
         {:.1} MiB/s, {:.0} messages/s, fnv1a-words {sum:016x}",
        bytes as f64 / secs / (1 << 20) as f64,
        expected as f64 / secs
    ))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| {
        let msg = usize::try_from(parse_size(args.get(2)?)?).ok().filter(|&m| m >= 8)?;
        let transport = match args.get(3)?.as_str() {
            "window" => Transport::Window,
            "host" => Transport::HostCalls,
            _ => return None,
        };
        let timeout = Duration::from_secs(args.get(4)?.parse().ok()?);
        Some((args.get(1)?.clone(), msg, transport, timeout))
    })();
    let Some((name, msg, transport, timeout)) = parsed else {
        eprintln!("usage: ring_consumer NAME MSG window|host TIMEOUT_SECS");
        std::process::exit(64);
    };
    match run(&name, msg, transport, timeout) {
        Ok(report) => println!("{report}"),
        Err(e) => {
            eprintln!("ring_consumer: {e}");
            std::process::exit(1);
        }
    }
}
