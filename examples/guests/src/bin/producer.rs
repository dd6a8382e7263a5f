//! Producer guest: creates segment NAME with a SIZE payload from the
//! deterministic stream, then publishes length, checksum and READY. It
//! prints the time of its write loop (fill, word-wise FNV-1a and `write`
//! calls, in 1 MiB blocks), which the demo turns into the copy path's rate
//! without process start-up or compilation.
//!
//! The same source builds a core module (`shmgate_v1`) and, with the
//! `component` feature, a component (`shmgate:shm`).
//!
//! Usage (under a grant with create rights): `producer NAME SIZE`

use std::time::Instant;

use shmgate_example_guests::{FNV_START, fill, fnv1a_words, layout, parse_size};
use shmgate_example_guests::api::{Errno, Segment};

fn run(name: &str, size: u64) -> Result<(u64, f64), Errno> {
    let seg = Segment::create(name, layout::PAYLOAD + size)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut sum = FNV_START;
    let mut done = 0;
    let start = Instant::now();
    while done < size {
        let n = chunk.len().min((size - done) as usize);
        fill(&mut chunk[..n], done);
        sum = fnv1a_words(sum, &chunk[..n]);
        seg.write_all_at(&chunk[..n], layout::PAYLOAD + done)?;
        done += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    seg.write_all_at(layout::MAGIC, 0)?;
    seg.write_all_at(&size.to_le_bytes(), layout::LEN)?;
    seg.write_all_at(&sum.to_le_bytes(), layout::CHECKSUM)?;
    // Last: the consumer trusts nothing before it sees READY.
    seg.write_all_at(&layout::READY.to_le_bytes(), layout::STATE)?;
    Ok((sum, secs))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(size)) = (args.get(1), args.get(2).and_then(|s| parse_size(s))) else {
        eprintln!("usage: producer NAME SIZE");
        std::process::exit(64);
    };
    match run(name, size) {
        Ok((sum, secs)) => {
            println!("producer: wrote {size} bytes to {name:?} in {secs:.6} s, fnv1a-words {sum:016x}")
        }
        Err(e) => {
            eprintln!("producer: {name:?}: {e}");
            std::process::exit(1);
        }
    }
}
