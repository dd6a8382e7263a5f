//! Ring producer guest: creates segment NAME holding a ring of MSG-byte
//! messages (`shmgate_guest::ring`), maps it, and streams TOTAL bytes of
//! numbered messages through it, copying through the window (`window`) or
//! with host calls (`host`).
//!
//! Usage (grant: create and windows): `ring_producer NAME TOTAL MSG window|host`

use shmgate_example_guests::{FNV_START, fnv1a_words, parse_size};
use shmgate_guest::ring::{self, Producer, Transport};
use shmgate_guest::{Errno, Prot, Segment};

/// Slots in the ring for a message size: 64 MiB of slots at most, 8 MiB
/// at least, so both tiny and 1 MiB messages stream.
fn segment_len(msg: usize) -> u64 {
    let slot = ring::Geometry::slot_size_for(msg);
    let slots = ((8 << 20) / slot).clamp(16, 1 << 20).next_power_of_two();
    let len = (ring::HEADER + slots * slot) as u64;
    len.next_multiple_of(64 << 10)
}

fn run(name: &str, total: u64, msg: usize, transport: Transport) -> Result<(u64, u64), Errno> {
    let len = segment_len(msg);
    let seg = Segment::create(name, len)?;
    let win = seg.map(0..len, Prot::ReadWrite)?;
    let mut tx = Producer::create(&seg, &win, 0, ring::Geometry::slot_size_for(msg))?.with_transport(transport);
    // Start streaming once the consumer is there, so its timing covers a
    // real stream rather than draining a ring filled in advance.
    tx.wait_for_consumer(std::time::Duration::from_secs(120))?;
    let mut buf = vec![0x5au8; msg];
    let count = total / msg as u64;
    let mut sum = FNV_START;
    for i in 0..count {
        // The number at both ends, so the consumer checks both ends of
        // every copy.
        buf[..8].copy_from_slice(&i.to_le_bytes());
        buf[msg - 8..].copy_from_slice(&i.to_le_bytes());
        tx.send(&buf)?;
        sum = fnv1a_words(sum, &buf);
    }
    tx.close()?;
    Ok((count, sum))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let parsed = (|| {
        let total = parse_size(args.get(2)?)?;
        let msg = usize::try_from(parse_size(args.get(3)?)?).ok().filter(|&m| m >= 8)?;
        let transport = match args.get(4)?.as_str() {
            "window" => Transport::Window,
            "host" => Transport::HostCalls,
            _ => return None,
        };
        Some((args.get(1)?.clone(), total, msg, transport))
    })();
    let Some((name, total, msg, transport)) = parsed else {
        eprintln!("usage: ring_producer NAME TOTAL MSG(>=8) window|host");
        std::process::exit(64);
    };
    match run(&name, total, msg, transport) {
        Ok((n, sum)) => println!("ring_producer: sent {n} messages of {msg} bytes, fnv1a-words {sum:016x}"),
        Err(e) => {
            eprintln!("ring_producer: {e}");
            std::process::exit(1);
        }
    }
}
