//! The demo's native baselines: the guests' work done by native code
//! through `shmgate_host`, in the same run, so each guest number stands
//! next to the same transfer without the sandbox.
//!
//! - The copy path: the producer guest's loop (fill a 1 MiB block, word-wise
//!   FNV-1a, `write`) and the consumer guest's (`read`, check against the
//!   stream, word-wise FNV-1a), with `Segment::write_all_at` and
//!   `Segment::read_exact_at`, timed the same way (the loops only).
//! - Bulk through the ring: 1 MiB messages between two native processes
//!   (this executable re-run as the consumer: `shmgate demo --native-end`),
//!   with the ring guests' geometry, fill (the message number at both ends)
//!   and word-wise checksum, timed by the consumer from its first message
//!   to the end as the consumer guest does.
//!
//! The fill and checksum are those of `examples/guests/src/lib.rs`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shmgate_host::{OpenOptions, Segment, ring};

use crate::{Failure, exit};

/// The FNV-1a offset basis.
pub(crate) const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a over little-endian `u64` words, the tail byte by byte (the
/// guests' `fnv1a_words`).
pub(crate) fn fnv1a_words(mut state: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0; 8];
        b.copy_from_slice(w);
        state ^= u64::from_le_bytes(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    for &b in words.remainder() {
        state ^= u64::from(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state
}

/// The deterministic stream at byte `offset` (a multiple of 8), as the
/// guests' `fill`: word `k` is an xorshift of `k`.
pub(crate) fn fill(buf: &mut [u8], offset: u64) {
    let word = |k: u64| {
        let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        x.to_le_bytes()
    };
    let mut words = buf.chunks_exact_mut(8);
    let mut k = offset / 8;
    for w in &mut words {
        w.copy_from_slice(&word(k));
        k += 1;
    }
    let tail = words.into_remainder();
    let last = word(k);
    tail.copy_from_slice(&last[..tail.len()]);
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::new(exit::FAILURE, format!("demo failed: {e}"))
}

/// The native copy path over `size` bytes of a new segment `name`:
/// (write loop bytes/s, read loop bytes/s, checksum).
pub(crate) fn copy_path(name: &str, size: u64) -> Result<(f64, f64, u64), Failure> {
    let seg = OpenOptions::new()
        .size(size)
        .open_owned(name)
        .map_err(failed)?;
    let mut block = vec![0u8; 1 << 20];
    let (mut sum, mut done) = (FNV_START, 0u64);
    let start = Instant::now();
    while done < size {
        let n = block
            .len()
            .min(usize::try_from(size - done).unwrap_or(usize::MAX));
        fill(&mut block[..n], done);
        sum = fnv1a_words(sum, &block[..n]);
        seg.write_all_at(&block[..n], done).map_err(failed)?;
        done += n as u64;
    }
    let write = start.elapsed().as_secs_f64();
    let reader = Segment::open_read_only(name).map_err(failed)?;
    let (mut want, mut check, mut done) = (vec![0u8; 1 << 20], FNV_START, 0u64);
    let start = Instant::now();
    while done < size {
        let n = block
            .len()
            .min(usize::try_from(size - done).unwrap_or(usize::MAX));
        reader
            .read_exact_at(&mut block[..n], done)
            .map_err(failed)?;
        fill(&mut want[..n], done);
        if block[..n] != want[..n] {
            return Err(failed(format!("native copy path: block at {done} differs")));
        }
        check = fnv1a_words(check, &block[..n]);
        done += n as u64;
    }
    let read = start.elapsed().as_secs_f64();
    if check != sum {
        return Err(failed("native copy path: checksums differ"));
    }
    let rate = |secs: f64| size as f64 / secs.max(1e-9);
    Ok((rate(write), rate(read), sum))
}

/// The ring guests' segment length and slot size for `msg`-byte messages
/// (`examples/guests/src/bin/ring_producer.rs`): 8 MiB of slots, at least
/// 16.
fn ring_shape(msg: usize) -> (usize, usize) {
    let slot = ring::Geometry::slot_size_for(msg);
    let slots = ((8 << 20) / slot).clamp(16, 1 << 20).next_power_of_two();
    (
        (ring::HEADER + slots * slot).next_multiple_of(64 << 10),
        slot,
    )
}

/// Streams `total` bytes in `msg`-byte messages from this process to a
/// native consumer process through a ring in segment `name`; returns the
/// consumer's bytes/s (first message to end) and whether both checksums
/// agree.
pub(crate) fn ring_stream(name: &str, total: u64, msg: usize) -> Result<(f64, bool), Failure> {
    let (len, slot) = ring_shape(msg);
    let seg = OpenOptions::new()
        .size(len as u64)
        .open_owned(name)
        .map_err(failed)?;
    let map = seg.map().map_err(failed)?;
    let mut tx = ring::Producer::create(&map, 0..len, slot).map_err(failed)?;
    let exe = std::env::current_exe().map_err(failed)?;
    let child = Command::new(exe)
        .args([
            "demo",
            "--native-end",
            &format!("ring-consume {name} {msg}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(exit::OSERR, format!("starting the native consumer: {e}")))?;
    tx.wait_for_consumer(Duration::from_secs(120))
        .map_err(failed)?;
    let mut buf = vec![0x5au8; msg];
    let mut sum = FNV_START;
    for i in 0..total / msg as u64 {
        buf[..8].copy_from_slice(&i.to_le_bytes());
        buf[msg - 8..].copy_from_slice(&i.to_le_bytes());
        tx.send(&buf).map_err(failed)?;
        sum = fnv1a_words(sum, &buf);
    }
    tx.close().map_err(failed)?;
    let out = child.wait_with_output().map_err(failed)?;
    let said = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(failed(format!(
            "the native consumer exited with {}",
            out.status
        )));
    }
    let mut words = said.split_whitespace();
    let (Some(rate), Some(got)) = (
        words.next().and_then(|w| w.parse::<f64>().ok()),
        words.next(),
    ) else {
        return Err(failed(format!(
            "unexpected native consumer output {said:?}"
        )));
    };
    Ok((rate, got == format!("{sum:016x}")))
}

/// The consumer end of [`ring_stream`] (`--native-end "ring-consume NAME
/// MSG"`): receives every message, checks the numbering as the consumer
/// guest does, and prints `BYTES_PER_S CHECKSUM`.
fn ring_consume(name: &str, msg: usize) -> Result<(), Failure> {
    let seg = Segment::open_read_write(name).map_err(failed)?;
    let map = seg.map().map_err(failed)?;
    let len = map.len();
    let mut rx = ring::Consumer::attach(&map, 0..len).map_err(failed)?;
    let mut buf = vec![0u8; msg];
    let (mut expected, mut sum, mut start) = (0u64, FNV_START, None);
    while let Some(n) = rx.recv(&mut buf).map_err(failed)? {
        sum = fnv1a_words(sum, &buf[..n]);
        start.get_or_insert_with(Instant::now);
        let word = |at: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&buf[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if n != msg || word(0) != expected || word(msg - 8) != expected {
            return Err(failed(format!(
                "native consumer: message {expected} arrived wrong"
            )));
        }
        expected += 1;
    }
    let secs = start.map_or(0.0, |s| s.elapsed().as_secs_f64()).max(1e-9);
    println!("{} {sum:016x}", (expected * msg as u64) as f64 / secs);
    Ok(())
}

/// Runs the native end `role` (`shmgate demo --native-end ROLE`, hidden:
/// the demo starts it).
pub(crate) fn end(role: &str) -> Result<u8, Failure> {
    let words: Vec<&str> = role.split(' ').collect();
    match words[..] {
        ["ring-consume", name, msg] => {
            let msg = msg
                .parse()
                .ok()
                .filter(|&m: &usize| m >= 8)
                .ok_or_else(|| Failure::new(exit::USAGE, format!("bad native end {role:?}")))?;
            ring_consume(name, msg)?;
            Ok(0)
        }
        _ => Err(Failure::new(
            exit::USAGE,
            format!("unknown native end {role:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_the_word_stream_at_any_block() {
        let mut whole = vec![0u8; 64];
        fill(&mut whole, 0);
        let mut part = vec![0u8; 24];
        fill(&mut part, 16);
        assert_eq!(part[..], whole[16..40]);
        // Word 1 of the stream: an xorshift of 1.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        x ^= x >> 29;
        assert_eq!(whole[8..16], x.to_le_bytes());
    }

    #[test]
    fn fnv1a_words_hashes_words_then_the_tail() {
        assert_eq!(fnv1a_words(FNV_START, &[]), FNV_START);
        let w = fnv1a_words(FNV_START, &[1, 0, 0, 0, 0, 0, 0, 0, 7]);
        let mut s = (FNV_START ^ 1).wrapping_mul(0x0000_0100_0000_01b3);
        s = (s ^ 7).wrapping_mul(0x0000_0100_0000_01b3);
        assert_eq!(w, s);
    }
}
