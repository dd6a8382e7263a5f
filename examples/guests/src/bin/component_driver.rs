//! Driver component (`wasm32-wasip2`): exports `shmgate:driver/driver`
//! (`examples/guests/driver-wit/driver.wit`), which passes whatever the host
//! picks straight to the `shmgate:shm` imports (no guest-side checks, so
//! the host's rules are what the tests see), plus loops for the benches.

use std::cell::RefCell;

mod bindings {
    wit_bindgen::generate!({
        path: "driver-wit",
        world: "shmgate:driver/component-driver",
        generate_all,
    });
}

use bindings::exports::shmgate::driver::driver::Guest;
use bindings::shmgate::shm::segments::{self as shm, AtomicOp, ErrorCode, OpenFlags, Segment};

thread_local! {
    /// The guest's segments, by slot.
    static SLOTS: RefCell<Vec<Option<Segment>>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the segment in `slot`; a missing slot is the driver's
/// misuse, so it traps.
fn with<R>(slot: u32, f: impl FnOnce(&Segment) -> R) -> R {
    SLOTS.with_borrow(|slots| {
        let seg = slots
            .get(slot as usize)
            .and_then(Option::as_ref)
            .expect("driver: no segment in that slot");
        f(seg)
    })
}

thread_local! {
    /// The guest's buffer for the write loop, made once per length so the
    /// loop times only the writes.
    static PAYLOAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

struct Driver;

impl Guest for Driver {
    fn open(name: String, flags: OpenFlags, mode: u32) -> Result<u32, ErrorCode> {
        let seg = Segment::open(&name, flags, mode)?;
        SLOTS.with_borrow_mut(|slots| {
            let slot = slots.iter().position(Option::is_none).unwrap_or_else(|| {
                slots.push(None);
                slots.len() - 1
            });
            slots[slot] = Some(seg);
            Ok(u32::try_from(slot).expect("fewer than 2^32 slots"))
        })
    }

    fn close(slot: u32) -> bool {
        SLOTS.with_borrow_mut(|slots| {
            slots
                .get_mut(slot as usize)
                .and_then(Option::take)
                .is_some()
        })
    }

    fn size(slot: u32) -> Result<u64, ErrorCode> {
        with(slot, |seg| seg.size())
    }

    fn set_size(slot: u32, size: u64) -> Result<(), ErrorCode> {
        with(slot, |seg| seg.set_size(size))
    }

    fn read(slot: u32, offset: u64, len: u64) -> Result<Vec<u8>, ErrorCode> {
        with(slot, |seg| seg.read(offset, len))
    }

    fn write(slot: u32, offset: u64, data: Vec<u8>) -> Result<u64, ErrorCode> {
        with(slot, |seg| seg.write(offset, &data))
    }

    fn wait32(
        slot: u32,
        offset: u64,
        expected: u32,
        timeout_ns: Option<u64>,
    ) -> Result<(), ErrorCode> {
        with(slot, |seg| seg.wait32(offset, expected, timeout_ns))
    }

    fn notify(slot: u32, offset: u64, count: u32) -> Result<u32, ErrorCode> {
        with(slot, |seg| seg.notify(offset, count))
    }

    fn atomic32(slot: u32, offset: u64, op: AtomicOp) -> Result<u32, ErrorCode> {
        with(slot, |seg| seg.atomic32(offset, op))
    }

    fn unlink(name: String) -> Result<(), ErrorCode> {
        shm::unlink(&name)
    }

    fn forged_size(handle: u32) -> Result<u64, ErrorCode> {
        // SAFETY: deliberately wrong: the host must reject a handle this
        // instance was never given (wasmtime traps the call).
        let forged = unsafe { Segment::from_handle(handle) };
        let size = forged.size();
        // Never drop a resource we do not own.
        std::mem::forget(forged);
        size
    }

    fn open_close_loop(name: String, n: u32) -> Result<(), ErrorCode> {
        for _ in 0..n {
            drop(Segment::open(&name, OpenFlags::empty(), 0)?);
        }
        Ok(())
    }

    fn write_loop(slot: u32, len: u64, n: u32) -> Result<(), ErrorCode> {
        let len = usize::try_from(len).map_err(|_| ErrorCode::Einval)?;
        PAYLOAD.with_borrow_mut(|data| {
            if data.len() != len {
                *data = (0..len).map(|i| i.to_le_bytes()[0]).collect();
            }
            with(slot, |seg| {
                for _ in 0..n {
                    seg.write(0, data)?;
                }
                Ok(())
            })
        })
    }

    fn read_loop(slot: u32, len: u64, n: u32) -> Result<(), ErrorCode> {
        with(slot, |seg| {
            for _ in 0..n {
                std::hint::black_box(seg.read(0, len)?);
            }
            Ok(())
        })
    }

    fn clock_monotonic() -> u64 {
        shm::clock_monotonic()
    }

    fn clock_loop(n: u32) -> u64 {
        let first = shm::clock_monotonic();
        let mut last = first;
        for _ in 1..n {
            last = std::hint::black_box(shm::clock_monotonic());
        }
        last - first
    }

    fn wasi_clock_loop(n: u32) -> u64 {
        let first = std::time::Instant::now();
        let mut last = first;
        for _ in 1..n {
            last = std::hint::black_box(std::time::Instant::now());
        }
        u64::try_from((last - first).as_nanos()).unwrap_or(u64::MAX)
    }
}

bindings::export!(Driver with_types_in bindings);

fn main() {}
