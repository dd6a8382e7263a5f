//! Preparing a core module for windows: its own 32-bit memories become
//! shared (so they can hold windows, see [`configure`](super::configure))
//! without rebuilding the guest, with a maximum the embedder chooses, and
//! modules that could park a host thread for good are refused. Rust's
//! `wasm32-wasip1` standard library is not built with the `atomics`
//! feature, so its linker refuses `--shared-memory`, yet a single-threaded
//! guest runs the same on a shared memory.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use shmgate_core::Errno;
use wasmparser::{Encoding, KnownCustom, Name, Operator, Parser, Payload, TypeRef};

/// The memory section's id in the binary format.
const MEMORY_SECTION: u8 = 5;
/// Limits flags: a maximum is present; the memory is shared; 64-bit;
/// a custom page size follows.
const HAS_MAX: u32 = 0x01;
const SHARED: u32 = 0x02;
const MEMORY64: u32 = 0x04;
const CUSTOM_PAGE_SIZE: u32 = 0x08;
/// A wasm32 memory's largest size in 64 KiB pages (4 GiB).
const MAX_PAGES: u32 = 65536;
/// The size of a default wasm page.
const PAGE: u64 = 64 << 10;

/// Why [`share_memory`] or [`check_waits`] refused a module.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareError {
    /// Not a core wasm module in the binary format (a component, text, or
    /// truncated bytes; [`check_waits`] also takes components).
    NotAModule,
    /// The bytes do not parse; wasmparser's message.
    Malformed(String),
    /// A memory's declared minimum is larger than `max_memory`: the module
    /// could never be instantiated under that limit.
    MinimumAboveLimit {
        /// The memory's index (imports first, as in the binary format).
        memory: u32,
        /// Its minimum, in bytes.
        minimum: u64,
        /// The limit it was prepared for, in bytes.
        max_memory: u64,
    },
    /// A `memory.atomic.wait32`/`wait64` on a shared memory: wasmtime
    /// parks the host thread in its own parking lot, where neither epoch
    /// interruption nor `max_wait` nor [`WaitInterrupt`](super::WaitInterrupt)
    /// reach it. Guests wait through `shmgate_v1.wait32` instead.
    BlockingWait {
        /// The function's index (imported functions first).
        func: u32,
        /// Its name, from the name section or an export, if it has one.
        name: Option<String>,
        /// `"memory.atomic.wait32"` or `"memory.atomic.wait64"`.
        instruction: &'static str,
    },
}

impl fmt::Display for ShareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShareError::NotAModule => f.write_str("not a core wasm module in the binary format"),
            ShareError::Malformed(e) => write!(f, "malformed module: {e}"),
            ShareError::MinimumAboveLimit {
                memory,
                minimum,
                max_memory,
            } => write!(
                f,
                "memory {memory} needs at least {minimum} bytes, more than the limit of {max_memory}"
            ),
            ShareError::BlockingWait {
                func,
                name,
                instruction,
            } => {
                write!(f, "function {func}")?;
                if let Some(name) = name {
                    write!(f, " ({name})")?;
                }
                write!(
                    f,
                    " uses {instruction} on a shared memory, which would block the host thread \
                     beyond max_wait and interrupts; wait with shmgate_v1.wait32 instead"
                )
            }
        }
    }
}

impl core::error::Error for ShareError {}

impl From<ShareError> for Errno {
    fn from(e: ShareError) -> Errno {
        match e {
            ShareError::NotAModule | ShareError::Malformed(_) => Errno::INVAL,
            ShareError::MinimumAboveLimit { .. } => Errno::NOMEM,
            ShareError::BlockingWait { .. } => Errno::NOTSUP,
        }
    }
}

/// Prepares a core module for windows: marks every 32-bit memory with
/// 64 KiB pages that it defines as `shared`, with a maximum of at most
/// `max_memory` bytes (rounded down to whole pages; the module's own
/// maximum if that is smaller), and checks the result with
/// [`check_waits`]. 64-bit and custom-page-size memories, which cannot
/// hold windows, are left as they are; so are imported memories.
///
/// `max_memory` is the embedder's memory limit, the one it gives its
/// store's `ResourceLimiter` (`StoreLimits::memory_size`): wasmtime 48
/// does not ask the limiter before growing a *shared* memory, it enforces
/// the declared maximum instead, so the limit must be part of the module.
/// Growth past it fails as under the limiter: the guest's `memory.grow`
/// returns -1 and `shmgate_v1.map` returns `ENOMEM`. Memories the module
/// already declared shared get the same maximum.
///
/// A module that needs no change is returned borrowed.
///
/// # Errors
///
/// [`ShareError::NotAModule`] if `wasm` is not a core wasm module in the
/// binary format (a component, text, or truncated bytes);
/// [`ShareError::MinimumAboveLimit`] if a memory it would share needs
/// more than `max_memory`; [`ShareError::BlockingWait`] (naming the
/// function) if the prepared module waits with `memory.atomic.wait32`/
/// `wait64` on a shared memory; [`ShareError::Malformed`] if it does not
/// parse. wasmtime validates the rest. `From<ShareError> for Errno` gives
/// `EINVAL`, `ENOMEM` and `ENOTSUP`.
///
/// # Examples
///
/// ```
/// let plain = wat::parse_str("(module (memory (export \"memory\") 1))").unwrap();
/// let shared = shmgate_host::wasm::share_memory(&plain, 64 << 20)?; // 64 MiB
/// let expected = wat::parse_str("(module (memory (export \"memory\") 1 1024 shared))").unwrap();
/// assert_eq!(&*shared, &expected[..]);
/// # Ok::<(), shmgate_host::wasm::ShareError>(())
/// ```
pub fn share_memory(wasm: &[u8], max_memory: u64) -> Result<Cow<'_, [u8]>, ShareError> {
    let header = wasm.get(..8).ok_or(ShareError::NotAModule)?;
    if header != b"\0asm\x01\0\0\0" {
        return Err(ShareError::NotAModule);
    }
    let max_pages =
        u32::try_from((max_memory / PAGE).min(u64::from(MAX_PAGES))).unwrap_or(MAX_PAGES);
    let mut imported_memories = 0;
    let mut at = 8;
    while at < wasm.len() {
        let id = wasm[at];
        let (size, n) = read_leb(wasm, at + 1)?;
        let payload = at + 1 + n;
        let end = payload
            .checked_add(size as usize)
            .filter(|&e| e <= wasm.len())
            .ok_or(ShareError::NotAModule)?;
        if id == IMPORT_SECTION {
            imported_memories = count_imported_memories(&wasm[payload..end])?;
        }
        if id == MEMORY_SECTION {
            let new_payload = share_memories(
                &wasm[payload..end],
                max_pages,
                max_memory,
                imported_memories,
            )?;
            let Some(new_payload) = new_payload else {
                break;
            };
            let mut out = Vec::with_capacity(wasm.len() + 16);
            out.extend_from_slice(&wasm[..at]);
            out.push(MEMORY_SECTION);
            write_leb(
                &mut out,
                u32::try_from(new_payload.len()).map_err(|_| ShareError::NotAModule)?,
            );
            out.extend_from_slice(&new_payload);
            out.extend_from_slice(&wasm[end..]);
            check_waits(&out)?;
            return Ok(Cow::Owned(out));
        }
        at = end;
    }
    check_waits(wasm)?;
    Ok(Cow::Borrowed(wasm))
}

/// The import section's id in the binary format.
const IMPORT_SECTION: u8 = 2;

/// How many memories an import section imports.
fn count_imported_memories(section: &[u8]) -> Result<u32, ShareError> {
    let reader = wasmparser::ImportSectionReader::new(wasmparser::BinaryReader::new(section, 0))
        .map_err(malformed)?;
    let mut n = 0;
    for import in reader.into_imports() {
        if matches!(import.map_err(malformed)?.ty, TypeRef::Memory(_)) {
            n += 1;
        }
    }
    Ok(n)
}

fn malformed(e: wasmparser::BinaryReaderError) -> ShareError {
    ShareError::Malformed(e.to_string())
}

/// Checks that no core module in `wasm` (a module, or a component and the
/// modules inside it) can park a host thread beyond shmgate's reach: a
/// `memory.atomic.wait32`/`wait64` on a shared memory, defined or
/// imported, is refused. On a memory that is not shared those
/// instructions trap at once, so they are left alone. [`share_memory`]
/// runs this on every module it prepares; run it yourself on guests that
/// do not go through it (components, modules built for threads) on an
/// engine set up with [`configure`](super::configure), which turns shared
/// memories on for the whole engine.
///
/// # Errors
///
/// [`ShareError::BlockingWait`] naming the first such function of a
/// module; [`ShareError::Malformed`] if the bytes do not parse.
pub fn check_waits(wasm: &[u8]) -> Result<(), ShareError> {
    /// What the scan knows of the module being read.
    #[derive(Default)]
    struct Module {
        /// Whether each memory (imports first) is shared.
        shared: Vec<bool>,
        imported_funcs: u32,
        defined_funcs: u32,
        names: HashMap<u32, String>,
        wait: Option<(u32, &'static str)>,
    }
    // One entry per module or component being read (components: `None`).
    let mut stack: Vec<Option<Module>> = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(malformed)?;
        let top = stack.last_mut().and_then(Option::as_mut);
        match (payload, top) {
            (Payload::Version { encoding, .. }, _) => stack.push(match encoding {
                Encoding::Module => Some(Module::default()),
                Encoding::Component => None,
            }),
            (Payload::ImportSection(reader), Some(m)) => {
                for import in reader.into_imports() {
                    match import.map_err(malformed)?.ty {
                        TypeRef::Memory(ty) => m.shared.push(ty.shared),
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => m.imported_funcs += 1,
                        _ => {}
                    }
                }
            }
            (Payload::MemorySection(reader), Some(m)) => {
                for ty in reader {
                    m.shared.push(ty.map_err(malformed)?.shared);
                }
            }
            (Payload::ExportSection(reader), Some(m)) => {
                for export in reader {
                    let export = export.map_err(malformed)?;
                    if export.kind == wasmparser::ExternalKind::Func {
                        m.names
                            .entry(export.index)
                            .or_insert_with(|| export.name.to_owned());
                    }
                }
            }
            (Payload::CodeSectionEntry(body), Some(m)) => {
                let func = m.imported_funcs + m.defined_funcs;
                m.defined_funcs += 1;
                if m.wait.is_some() {
                    continue;
                }
                let mut ops = body.get_operators_reader().map_err(malformed)?;
                while !ops.eof() {
                    let (memarg, instruction) = match ops.read().map_err(malformed)? {
                        Operator::MemoryAtomicWait32 { memarg } => (memarg, "memory.atomic.wait32"),
                        Operator::MemoryAtomicWait64 { memarg } => (memarg, "memory.atomic.wait64"),
                        _ => continue,
                    };
                    // An index past the memories is for wasmtime to refuse.
                    let index = usize::try_from(memarg.memory).unwrap_or(usize::MAX);
                    if m.shared.get(index).copied().unwrap_or(true) {
                        m.wait = Some((func, instruction));
                        break;
                    }
                }
            }
            (Payload::CustomSection(reader), Some(m)) => {
                if let KnownCustom::Name(names) = reader.as_known() {
                    // A malformed name section only costs the name.
                    for name in names.into_iter().flatten() {
                        if let Name::Function(map) = name {
                            for naming in map.into_iter().flatten() {
                                m.names.insert(naming.index, naming.name.to_owned());
                            }
                        }
                    }
                }
            }
            (Payload::End(_), _) => {
                if let Some(Some(mut m)) = stack.pop()
                    && let Some((func, instruction)) = m.wait
                {
                    return Err(ShareError::BlockingWait {
                        func,
                        name: m.names.remove(&func),
                        instruction,
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The memory section's payload with every 32-bit memory with 64 KiB
/// pages shared and its maximum at most `max_pages`, or `None` if nothing
/// changes.
fn share_memories(
    section: &[u8],
    max_pages: u32,
    max_memory: u64,
    imported: u32,
) -> Result<Option<Vec<u8>>, ShareError> {
    let (count, mut at) = read_leb(section, 0)?;
    let mut out = Vec::with_capacity(section.len() + 8);
    write_leb(&mut out, count);
    let mut changed = false;
    for i in 0..count {
        let (flags, n) = read_leb(section, at)?;
        at += n;
        if flags & !(HAS_MAX | SHARED | MEMORY64 | CUSTOM_PAGE_SIZE) != 0 {
            return Err(ShareError::Malformed(format!(
                "memory {i}: unknown limits flags {flags:#x}"
            )));
        }
        // 64-bit limits are LEB128 u64s.
        let wide = flags & MEMORY64 != 0;
        let (min, n) = read_leb_u64(section, at, wide)?;
        at += n;
        let max = if flags & HAS_MAX != 0 {
            let (max, n) = read_leb_u64(section, at, wide)?;
            at += n;
            Some(max)
        } else {
            None
        };
        let page_size = if flags & CUSTOM_PAGE_SIZE != 0 {
            let (log2, n) = read_leb(section, at)?;
            at += n;
            Some(log2)
        } else {
            None
        };
        // Memories that cannot hold windows (64-bit, other page sizes)
        // stay as they are: unshared ones are under the store's limiter; a
        // shared one only gets the maximum.
        let windowable = !wide && page_size.is_none_or(|log2| log2 == 16);
        if !windowable && flags & SHARED == 0 {
            write_leb(&mut out, flags);
            write_leb_u64(&mut out, min);
            if let Some(max) = max {
                write_leb_u64(&mut out, max);
            }
            if let Some(log2) = page_size {
                write_leb(&mut out, log2);
            }
            continue;
        }
        let page_bytes = 1u64.checked_shl(page_size.unwrap_or(16)).unwrap_or(PAGE);
        let limit_pages = if windowable {
            u64::from(max_pages)
        } else {
            max_memory / page_bytes
        };
        if min > limit_pages {
            return Err(ShareError::MinimumAboveLimit {
                memory: imported + i,
                minimum: min.saturating_mul(page_bytes),
                max_memory,
            });
        }
        let new_max = max.map_or(limit_pages, |m| m.min(limit_pages));
        let new_max = if windowable {
            new_max.min(u64::from(MAX_PAGES))
        } else {
            new_max
        };
        let new_flags = flags | HAS_MAX | SHARED;
        changed |= new_flags != flags || Some(new_max) != max;
        write_leb(&mut out, new_flags);
        write_leb_u64(&mut out, min);
        write_leb_u64(&mut out, new_max);
        if let Some(log2) = page_size {
            write_leb(&mut out, log2);
        }
    }
    if at != section.len() {
        return Err(ShareError::NotAModule);
    }
    Ok(changed.then_some(out))
}

/// An unsigned LEB128 `u64` at `at` (a `u32` unless `wide`): the value
/// and its length in bytes.
fn read_leb_u64(bytes: &[u8], at: usize, wide: bool) -> Result<(u64, usize), ShareError> {
    if !wide {
        let (v, n) = read_leb(bytes, at)?;
        return Ok((u64::from(v), n));
    }
    let mut value: u64 = 0;
    for (i, shift) in (0..10).zip((0..).step_by(7)) {
        let b = *bytes.get(at + i).ok_or(ShareError::NotAModule)?;
        value |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(ShareError::NotAModule)
}

fn write_leb_u64(out: &mut Vec<u8>, mut value: u64) {
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

/// An unsigned LEB128 `u32` at `at`: the value and its length in bytes.
fn read_leb(bytes: &[u8], at: usize) -> Result<(u32, usize), ShareError> {
    let mut value: u64 = 0;
    for i in 0..5 {
        let b = *bytes.get(at + i).ok_or(ShareError::NotAModule)?;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((
                u32::try_from(value).map_err(|_| ShareError::NotAModule)?,
                i + 1,
            ));
        }
    }
    Err(ShareError::NotAModule)
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

    const MAX: u64 = 1 << 32;

    fn wat(text: &str) -> Vec<u8> {
        wat::parse_str(text).unwrap()
    }

    #[test]
    fn shares_defined_memories_only() {
        let plain = wat("(module (memory 2 300))");
        let with_max = share_memory(&plain, MAX).unwrap();
        assert_eq!(&*with_max, &wat("(module (memory 2 300 shared))")[..]);
        let already = wat("(module (memory 1 1 shared))");
        assert!(matches!(
            share_memory(&already, MAX).unwrap(),
            Cow::Borrowed(_)
        ));
        let imported = wat(r#"(module (import "env" "memory" (memory 1)))"#);
        assert!(matches!(
            share_memory(&imported, MAX).unwrap(),
            Cow::Borrowed(_)
        ));
        let mem64 = wat("(module (memory i64 1))");
        assert!(matches!(
            share_memory(&mem64, MAX).unwrap(),
            Cow::Borrowed(_)
        ));
        // Sections after the memory section survive.
        let text = r#"(module (memory (export "memory") 1) (func (export "f") (result i32) i32.const 7) (data (i32.const 0) "hi"))"#;
        let plain = wat(text);
        let shared = share_memory(&plain, MAX).unwrap();
        assert_eq!(
            &*shared,
            &wat(&text.replace(
                "(memory (export \"memory\") 1)",
                "(memory (export \"memory\") 1 65536 shared)"
            ))[..]
        );
    }

    #[test]
    fn declares_the_limit_as_maximum() {
        let limit = 2 << 20; // 32 pages
        let plain = wat("(module (memory 2))");
        assert_eq!(
            &*share_memory(&plain, limit).unwrap(),
            &wat("(module (memory 2 32 shared))")[..]
        );
        // A smaller maximum of its own stays; a larger one shrinks, also
        // for a memory declared shared.
        let small = wat("(module (memory 2 3))");
        assert_eq!(
            &*share_memory(&small, limit).unwrap(),
            &wat("(module (memory 2 3 shared))")[..]
        );
        let threads = wat("(module (memory 1 1000 shared))");
        assert_eq!(
            &*share_memory(&threads, limit).unwrap(),
            &wat("(module (memory 1 32 shared))")[..]
        );
        // Not a whole page: rounded down.
        assert_eq!(
            &*share_memory(&plain, limit + 100).unwrap(),
            &wat("(module (memory 2 32 shared))")[..]
        );
        assert_eq!(
            share_memory(&wat("(module (memory 33))"), limit),
            Err(ShareError::MinimumAboveLimit {
                memory: 0,
                minimum: 33 << 16,
                max_memory: limit
            })
        );
    }

    #[test]
    fn shares_the_32_bit_memories_of_a_mixed_module() {
        let mixed = wat("(module (memory i64 1) (memory 1) (memory 1 (pagesize 1)))");
        assert_eq!(
            &*share_memory(&mixed, MAX).unwrap(),
            &wat("(module (memory i64 1) (memory 1 65536 shared) (memory 1 (pagesize 1)))")[..]
        );
    }

    #[test]
    fn refuses_blocking_waits_naming_the_function() {
        let text = r#"(module
            (import "env" "f" (func))
            (memory 1)
            (func $fine (result i32) (memory.atomic.notify (i32.const 0) (i32.const 1)))
            (func $sleepy (export "sleepy") (result i32)
              (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1))))"#;
        let err = share_memory(&wat(text), MAX).unwrap_err();
        assert_eq!(
            err,
            ShareError::BlockingWait {
                func: 2,
                name: Some("sleepy".into()),
                instruction: "memory.atomic.wait32"
            }
        );
        assert!(
            err.to_string()
                .contains("function 2 (sleepy) uses memory.atomic.wait32")
        );
        assert_eq!(Errno::from(err), Errno::NOTSUP);
        // A wait on a memory that stays unshared (64-bit) traps instead:
        // allowed.
        let unshared = wat("(module (memory i64 1) (func (result i32) \
             (memory.atomic.wait64 (i64.const 0) (i64.const 0) (i64.const -1))))");
        assert!(share_memory(&unshared, MAX).is_ok());
        assert!(check_waits(&unshared).is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_core_module() {
        assert_eq!(share_memory(b"(module)", MAX), Err(ShareError::NotAModule));
        assert_eq!(
            share_memory(b"\0asm\x0d\0\x01\0", MAX),
            Err(ShareError::NotAModule)
        );
        let mut truncated = wat("(module (memory 1))");
        truncated.pop();
        assert_eq!(share_memory(&truncated, MAX), Err(ShareError::NotAModule));
        assert_eq!(
            share_memory(b"\0asm\x01\0\0\0\x05\xff\xff\xff\xff\xff", MAX),
            Err(ShareError::NotAModule)
        );
    }
}
