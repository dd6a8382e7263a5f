//! Turning a module's own memory into a shared one, so it can hold
//! windows (see [`configure`](super::configure)) without rebuilding the
//! guest: Rust's `wasm32-wasip1` standard library is not built with the
//! `atomics` feature, so its linker refuses `--shared-memory`, yet a
//! single-threaded guest runs the same on a shared memory.

use std::borrow::Cow;

use shmgate_core::Errno;

/// The memory section's id in the binary format.
const MEMORY_SECTION: u8 = 5;
/// Limits flags: a maximum is present; the memory is shared; 64-bit.
const HAS_MAX: u32 = 0x01;
const SHARED: u32 = 0x02;
const MEMORY64: u32 = 0x04;
const CUSTOM_PAGE_SIZE: u32 = 0x08;
/// A wasm32 memory's largest size in 64 KiB pages (4 GiB).
const MAX_PAGES: u32 = 65536;

/// Marks every memory a core module defines as `shared` (with a maximum
/// of 4 GiB where it declared none), leaving everything else as it is.
/// A module that needs no change is returned borrowed.
///
/// # Errors
///
/// `EINVAL` if `wasm` is not a core wasm module in the binary format (a
/// component, text, or truncated bytes); wasmtime validates the rest.
///
/// # Examples
///
/// ```
/// let plain = wat::parse_str("(module (memory (export \"memory\") 1))").unwrap();
/// let shared = shmgate_host::wasm::share_memory(&plain)?;
/// let expected = wat::parse_str("(module (memory (export \"memory\") 1 65536 shared))").unwrap();
/// assert_eq!(&*shared, &expected[..]);
/// # Ok::<(), shmgate_host::Errno>(())
/// ```
pub fn share_memory(wasm: &[u8]) -> Result<Cow<'_, [u8]>, Errno> {
    let header = wasm.get(..8).ok_or(Errno::INVAL)?;
    if header != b"\0asm\x01\0\0\0" {
        return Err(Errno::INVAL);
    }
    let mut at = 8;
    while at < wasm.len() {
        let id = wasm[at];
        let (size, n) = read_leb(wasm, at + 1)?;
        let payload = at + 1 + n;
        let end = payload
            .checked_add(size as usize)
            .filter(|&e| e <= wasm.len())
            .ok_or(Errno::INVAL)?;
        if id == MEMORY_SECTION {
            let new_payload = share_memories(&wasm[payload..end])?;
            let Some(new_payload) = new_payload else {
                return Ok(Cow::Borrowed(wasm));
            };
            let mut out = Vec::with_capacity(wasm.len() + 16);
            out.extend_from_slice(&wasm[..at]);
            out.push(MEMORY_SECTION);
            write_leb(
                &mut out,
                u32::try_from(new_payload.len()).map_err(|_| Errno::INVAL)?,
            );
            out.extend_from_slice(&new_payload);
            out.extend_from_slice(&wasm[end..]);
            return Ok(Cow::Owned(out));
        }
        at = end;
    }
    Ok(Cow::Borrowed(wasm))
}

/// The memory section's payload with every 32-bit memory shared, or
/// `None` if all already are.
fn share_memories(section: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    let (count, mut at) = read_leb(section, 0)?;
    let mut out = Vec::with_capacity(section.len() + 8);
    write_leb(&mut out, count);
    let mut changed = false;
    for _ in 0..count {
        let (flags, n) = read_leb(section, at)?;
        at += n;
        if flags & MEMORY64 != 0 {
            return Ok(None); // 64-bit memories cannot hold windows anyway
        }
        let (min, n) = read_leb(section, at)?;
        at += n;
        let max = if flags & HAS_MAX != 0 {
            let (max, n) = read_leb(section, at)?;
            at += n;
            max
        } else {
            MAX_PAGES
        };
        let page_size = if flags & CUSTOM_PAGE_SIZE != 0 {
            let (log2, n) = read_leb(section, at)?;
            at += n;
            Some(log2)
        } else {
            None
        };
        let new_flags = flags | HAS_MAX | SHARED;
        changed |= new_flags != flags;
        write_leb(&mut out, new_flags);
        write_leb(&mut out, min);
        write_leb(&mut out, max);
        if let Some(log2) = page_size {
            write_leb(&mut out, log2);
        }
    }
    if at != section.len() {
        return Err(Errno::INVAL);
    }
    Ok(changed.then_some(out))
}

/// An unsigned LEB128 `u32` at `at`: the value and its length in bytes.
fn read_leb(bytes: &[u8], at: usize) -> Result<(u32, usize), Errno> {
    let mut value: u64 = 0;
    for i in 0..5 {
        let b = *bytes.get(at + i).ok_or(Errno::INVAL)?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((u32::try_from(value).map_err(|_| Errno::INVAL)?, i + 1));
        }
    }
    Err(Errno::INVAL)
}

fn write_leb(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = u8::try_from(value & 0x7f).unwrap_or(0);
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    #[test]
    fn shares_defined_memories_only() {
        let plain = wat("(module (memory 2 300))");
        let with_max = share_memory(&plain).unwrap();
        assert_eq!(&*with_max, &wat("(module (memory 2 300 shared))")[..]);
        let already = wat("(module (memory 1 1 shared))");
        assert!(matches!(share_memory(&already).unwrap(), Cow::Borrowed(_)));
        let imported = wat(r#"(module (import "env" "memory" (memory 1)))"#);
        assert!(matches!(share_memory(&imported).unwrap(), Cow::Borrowed(_)));
        let mem64 = wat("(module (memory i64 1))");
        assert!(matches!(share_memory(&mem64).unwrap(), Cow::Borrowed(_)));
        // Sections after the memory section survive.
        let text = r#"(module (memory (export "memory") 1) (func (export "f") (result i32) i32.const 7) (data (i32.const 0) "hi"))"#;
        let plain = wat(text);
        let shared = share_memory(&plain).unwrap();
        assert_eq!(
            &*shared,
            &wat(&text.replace(
                "(memory (export \"memory\") 1)",
                "(memory (export \"memory\") 1 65536 shared)"
            ))[..]
        );
    }

    #[test]
    fn refuses_what_is_not_a_core_module() {
        assert_eq!(share_memory(b"(module)"), Err(Errno::INVAL));
        assert_eq!(share_memory(b"\0asm\x0d\0\x01\0"), Err(Errno::INVAL));
        let mut truncated = wat("(module (memory 1))");
        truncated.pop();
        assert_eq!(share_memory(&truncated), Err(Errno::INVAL));
        assert_eq!(
            share_memory(b"\0asm\x01\0\0\0\x05\xff\xff\xff\xff\xff"),
            Err(Errno::INVAL)
        );
    }
}
