//! What the example guests share: the segment layout of the producer and
//! consumer, and a deterministic data stream with its checksum, so that a
//! receiver can verify every byte without a copy of the data.
//!
//! [`api`] is the guest SDK the producer and consumer use: the core module
//! API (`shmgate_v1`), or with the `component` feature the component API
//! (`shmgate:shm`), which has the same shape; the same source builds both.

/// The segment API of this build: `shmgate_guest` for core modules,
/// `shmgate_guest::component` for components.
pub mod api {
    #[cfg(feature = "component")]
    pub use shmgate_guest::component::{Segment, unlink};
    pub use shmgate_guest::{Errno, OpenOptions};
    #[cfg(not(feature = "component"))]
    pub use shmgate_guest::{Segment, unlink};
}

/// Segment layout: a 64-byte header, then the payload.
pub mod layout {
    /// Bytes 0..8: this magic.
    pub const MAGIC: &[u8; 8] = b"SHMGATE1";
    /// Bytes 8..16: payload length, little-endian `u64`.
    pub const LEN: u64 = 8;
    /// Bytes 16..24: FNV-1a checksum of the payload, little-endian `u64`.
    pub const CHECKSUM: u64 = 16;
    /// Bytes 24..32: state, little-endian `u64`; [`READY`] once the payload,
    /// length and checksum are all written.
    pub const STATE: u64 = 24;
    /// The state value that publishes the payload.
    pub const READY: u64 = 1;
    /// Where the payload starts.
    pub const PAYLOAD: u64 = 64;
}

/// The 64-bit FNV-1a hash, continued from `state` (start with [`FNV_START`]).
pub fn fnv1a(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    state
}

/// FNV-1a over little-endian `u64` words (the tail, if any, byte by
/// byte): eight times fewer dependent multiplies than [`fnv1a`], so a
/// checksum of every message does not cap a ring's message rate.
pub fn fnv1a_words(mut state: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0; 8];
        b.copy_from_slice(w);
        state ^= u64::from_le_bytes(b);
        state = state.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fnv1a(state, words.remainder())
}

/// The FNV-1a offset basis.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Fills `buf` with the deterministic stream at byte `offset`, so producer
/// and consumer agree on every byte: the stream is made of little-endian
/// `u64` words, word `k` an xorshift of `k`, written a word at a time
/// where `offset` is a multiple of 8 (the guests' blocks are).
pub fn fill(buf: &mut [u8], offset: u64) {
    let word = |k: u64| {
        let mut x = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        x.to_le_bytes()
    };
    if offset % 8 == 0 {
        let mut words = buf.chunks_exact_mut(8);
        let mut k = offset / 8;
        for w in &mut words {
            w.copy_from_slice(&word(k));
            k += 1;
        }
        let tail = words.into_remainder();
        let last = word(k);
        tail.copy_from_slice(&last[..tail.len()]);
    } else {
        for (i, b) in buf.iter_mut().enumerate() {
            let pos = offset + i as u64;
            *b = word(pos / 8)[(pos % 8) as usize];
        }
    }
}

/// Parses a size like `64MiB`, `4096`, `1KiB`.
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().ok()?;
    let mul = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mul)
}
