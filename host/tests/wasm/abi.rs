//! The two ABIs a guest reaches shmgate through, behind one trait, so the
//! hostile cases ([`crate::cases`]) are written once and run through both:
//!
//! - [`Core`]: the WAT forwarding guest of [`crate::common`], calling the
//!   `shmgate_v1` imports of a core module;
//! - [`Comp`]: the driver component (`examples/guests`, built for
//!   `wasm32-wasip2`), calling the `shmgate:shm/segments` imports of a
//!   component with exactly the arguments the test picks.
//!
//! An operation a given ABI cannot even express (a non-UTF-8 name for the
//! component's `string`, `oflags` bits that are not among its four flags,
//! an `atomic32` op number that is not one of its `atomic-op` cases)
//! is `None`: the component model refuses it in the guest's own bindings,
//! before any host call.

use std::sync::OnceLock;

use shmgate_core::Errno;
use shmgate_host::wasm::component::{self, AtomicOp, CompareExchange, ErrorCode, OpenFlags};
use shmgate_host::wasm::{ShmCtx, ShmPolicy};
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::common::{Guest, engine, handle};

/// A handle as the test sees it: the core ABI's handle or the driver's
/// slot.
pub(crate) type H = u32;

/// What a hostile case can do through an ABI.
pub(crate) trait Abi {
    /// The ABI's name, for messages.
    fn name(&self) -> &'static str;
    /// `open`; `None` if this ABI cannot express the arguments.
    fn open(&mut self, name: &[u8], flags: i32, mode: i32) -> Option<Result<H, Errno>>;
    /// `unlink`; `None` if this ABI cannot express the name.
    fn unlink(&mut self, name: &[u8]) -> Option<Result<(), Errno>>;
    /// Closes `h`, which must be open.
    fn close(&mut self, h: H);
    /// `size`.
    fn size(&mut self, h: H) -> Result<u64, Errno>;
    /// `set_size`.
    fn set_size(&mut self, h: H, size: i64) -> Result<(), Errno>;
    /// `write` of `data` at `offset`: the count.
    fn write(&mut self, h: H, offset: i64, data: &[u8]) -> Result<u64, Errno>;
    /// `read` of up to `len` bytes at `offset`.
    fn read(&mut self, h: H, offset: i64, len: usize) -> Result<Vec<u8>, Errno>;
    /// `wait32` (`timeout_ns` negative: none of its own).
    fn wait32(&mut self, h: H, offset: i64, expected: u32, timeout_ns: i64) -> Result<(), Errno>;
    /// `notify`: how many woke.
    fn notify(&mut self, h: H, offset: i64, count: u32) -> Result<u64, Errno>;
    /// `atomic32` with the core ABI's op numbers; `None` for an op this ABI
    /// cannot express.
    fn atomic32(
        &mut self,
        h: H,
        offset: i64,
        op: i32,
        operand: u32,
        expected: u32,
    ) -> Option<Result<u64, Errno>>;
    /// The store's shmgate context.
    fn ctx(&self) -> &ShmCtx;
}

/// A `u32` as the core ABI's `i32` argument: the same bits.
fn bits(v: u32) -> i32 {
    i32::from_ne_bytes(v.to_ne_bytes())
}

/// A core-ABI result as a `Result`.
fn core_result(ret: i64) -> Result<u64, Errno> {
    Errno::from_wire(ret)
}

/// The core module ABI, through the WAT forwarding guest.
pub(crate) struct Core(pub(crate) Guest);

impl Core {
    /// A fresh store and instance enforcing `policy`.
    pub(crate) fn new(policy: ShmPolicy) -> Core {
        Core(Guest::new(policy))
    }
}

impl Abi for Core {
    fn name(&self) -> &'static str {
        "shmgate_v1 (core module)"
    }
    fn open(&mut self, name: &[u8], flags: i32, mode: i32) -> Option<Result<H, Errno>> {
        let ret = self.0.open_mode(name, flags, mode);
        Some(core_result(ret).map(|_| u32::try_from(handle(ret, "open")).expect("a handle")))
    }
    fn unlink(&mut self, name: &[u8]) -> Option<Result<(), Errno>> {
        Some(core_result(self.0.unlink(name)).map(|_| ()))
    }
    fn close(&mut self, h: H) {
        assert_eq!(self.0.close(wire(h)), 0, "close");
    }
    fn size(&mut self, h: H) -> Result<u64, Errno> {
        core_result(self.0.size(wire(h)))
    }
    fn set_size(&mut self, h: H, size: i64) -> Result<(), Errno> {
        core_result(self.0.set_size(wire(h), size)).map(|_| ())
    }
    fn write(&mut self, h: H, offset: i64, data: &[u8]) -> Result<u64, Errno> {
        core_result(self.0.write_data(wire(h), offset, data))
    }
    fn read(&mut self, h: H, offset: i64, len: usize) -> Result<Vec<u8>, Errno> {
        let (ret, got) = self.0.read_data(wire(h), offset, len);
        core_result(ret).map(|_| got)
    }
    fn wait32(&mut self, h: H, offset: i64, expected: u32, timeout_ns: i64) -> Result<(), Errno> {
        core_result(self.0.wait32(wire(h), offset, bits(expected), timeout_ns)).map(|_| ())
    }
    fn notify(&mut self, h: H, offset: i64, count: u32) -> Result<u64, Errno> {
        core_result(self.0.notify(wire(h), offset, bits(count)))
    }
    fn atomic32(
        &mut self,
        h: H,
        offset: i64,
        op: i32,
        operand: u32,
        expected: u32,
    ) -> Option<Result<u64, Errno>> {
        let ret = self
            .0
            .atomic32(wire(h), offset, op, bits(operand), bits(expected));
        Some(core_result(ret))
    }
    fn ctx(&self) -> &ShmCtx {
        self.0.ctx()
    }
}

/// A handle as the core ABI's `i32`.
fn wire(h: H) -> i32 {
    i32::try_from(h).expect("handles are non-negative i32s")
}

mod driver {
    wasmtime::component::bindgen!({
        path: "../examples/guests/driver-wit",
        world: "shmgate:driver/component-driver",
        with: {
            "shmgate:shm/segments": shmgate_host::wasm::component::bindings::shmgate::shm::segments,
        },
    });
}

/// What the driver component's store holds: WASI 0.2 (the driver is a
/// Rust `wasm32-wasip2` program) and the shmgate context.
pub(crate) struct CompHost {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The context under test.
    pub(crate) shm: ShmCtx,
}

impl WasiView for CompHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The driver component, compiled once.
fn driver_component() -> &'static Component {
    static COMPONENT: OnceLock<Component> = OnceLock::new();
    COMPONENT.get_or_init(|| {
        Component::from_file(engine(), shmgate_guest_artifacts::COMPONENT_DRIVER)
            .expect("the driver component compiles")
    })
}

/// The component ABI, through the driver component.
pub(crate) struct Comp {
    /// The store; dropping it drops the [`ShmCtx`].
    pub(crate) store: Store<CompHost>,
    driver: driver::ComponentDriver,
}

impl Comp {
    /// A fresh store and instance enforcing `policy`.
    pub(crate) fn new(policy: ShmPolicy) -> Comp {
        let mut linker = Linker::<CompHost>::new(engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI 0.2");
        component::add_to_linker(&mut linker, |h: &mut CompHost| &mut h.shm).expect("shmgate:shm");
        let host = CompHost {
            wasi: WasiCtxBuilder::new().inherit_stderr().build(),
            table: ResourceTable::new(),
            shm: ShmCtx::new(policy),
        };
        let mut store = Store::new(engine(), host);
        let driver = driver::ComponentDriver::instantiate(&mut store, driver_component(), &linker)
            .expect("instantiating the driver");
        Comp { store, driver }
    }

    fn api(&self) -> &driver::exports::shmgate::driver::driver::Guest {
        self.driver.shmgate_driver_driver()
    }

    /// `segment.size` on a resource handle the driver never got; `Err` is
    /// the trap.
    pub(crate) fn forged_size(&mut self, handle: u32) -> wasmtime::Result<Result<u64, Errno>> {
        let api = self.driver.shmgate_driver_driver();
        Ok(api
            .call_forged_size(&mut self.store, handle)?
            .map_err(errno))
    }
}

/// The errno an `error-code` stands for.
fn errno(code: ErrorCode) -> Errno {
    code.errno()
        .unwrap_or_else(|| panic!("error-code {code:?}"))
}

/// An `i64` of the core ABI as the component's `u64`: the same bits, so a
/// negative value is one above `i64::MAX`.
fn unsigned(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

/// The component's flags for core `oflags` bits; `None` for bits it has no
/// flag for.
fn open_flags(bits: i32) -> Option<OpenFlags> {
    let bits = u32::try_from(bits).ok().filter(|b| b & !15 == 0)?;
    let mut flags = OpenFlags::empty();
    for (bit, flag) in [
        (1, OpenFlags::READ_WRITE),
        (2, OpenFlags::CREATE),
        (4, OpenFlags::EXCLUSIVE),
        (8, OpenFlags::TRUNCATE),
    ] {
        if bits & bit != 0 {
            flags |= flag;
        }
    }
    Some(flags)
}

impl Abi for Comp {
    fn name(&self) -> &'static str {
        "shmgate:shm (component)"
    }
    fn open(&mut self, name: &[u8], flags: i32, mode: i32) -> Option<Result<H, Errno>> {
        let name = std::str::from_utf8(name).ok()?;
        let flags = open_flags(flags)?;
        let mode = u32::from_ne_bytes(mode.to_ne_bytes());
        let api = self.api().clone();
        let r = api
            .call_open(&mut self.store, name, flags, mode)
            .expect("open must not trap");
        Some(r.map_err(errno))
    }
    fn unlink(&mut self, name: &[u8]) -> Option<Result<(), Errno>> {
        let name = std::str::from_utf8(name).ok()?;
        let api = self.api().clone();
        let r = api
            .call_unlink(&mut self.store, name)
            .expect("unlink must not trap");
        Some(r.map_err(errno))
    }
    fn close(&mut self, h: H) {
        let api = self.api().clone();
        assert!(
            api.call_close(&mut self.store, h)
                .expect("close must not trap")
        );
    }
    fn size(&mut self, h: H) -> Result<u64, Errno> {
        let api = self.api().clone();
        let r = api
            .call_size(&mut self.store, h)
            .expect("size must not trap");
        r.map_err(errno)
    }
    fn set_size(&mut self, h: H, size: i64) -> Result<(), Errno> {
        let api = self.api().clone();
        let r = api
            .call_set_size(&mut self.store, h, unsigned(size))
            .expect("set-size must not trap");
        r.map_err(errno)
    }
    fn write(&mut self, h: H, offset: i64, data: &[u8]) -> Result<u64, Errno> {
        let api = self.api().clone();
        let r = api
            .call_write(&mut self.store, h, unsigned(offset), data)
            .expect("write must not trap");
        r.map_err(errno)
    }
    fn read(&mut self, h: H, offset: i64, len: usize) -> Result<Vec<u8>, Errno> {
        let api = self.api().clone();
        let len = u64::try_from(len).expect("fits");
        let r = api
            .call_read(&mut self.store, h, unsigned(offset), len)
            .expect("read must not trap");
        r.map_err(errno)
    }
    fn wait32(&mut self, h: H, offset: i64, expected: u32, timeout_ns: i64) -> Result<(), Errno> {
        let api = self.api().clone();
        let timeout = u64::try_from(timeout_ns).ok();
        let r = api
            .call_wait32(&mut self.store, h, unsigned(offset), expected, timeout)
            .expect("wait32 must not trap");
        r.map_err(errno)
    }
    fn notify(&mut self, h: H, offset: i64, count: u32) -> Result<u64, Errno> {
        let api = self.api().clone();
        let r = api
            .call_notify(&mut self.store, h, unsigned(offset), count)
            .expect("notify must not trap");
        r.map(u64::from).map_err(errno)
    }
    fn atomic32(
        &mut self,
        h: H,
        offset: i64,
        op: i32,
        operand: u32,
        expected: u32,
    ) -> Option<Result<u64, Errno>> {
        let op = match op {
            0 => AtomicOp::Load,
            1 => AtomicOp::Store(operand),
            2 => AtomicOp::FetchAdd(operand),
            3 => AtomicOp::Swap(operand),
            4 => AtomicOp::CompareExchange(CompareExchange {
                expected,
                replacement: operand,
            }),
            _ => return None,
        };
        let api = self.api().clone();
        let r = api
            .call_atomic32(&mut self.store, h, unsigned(offset), op)
            .expect("atomic32 must not trap");
        Some(r.map(u64::from).map_err(errno))
    }
    fn ctx(&self) -> &ShmCtx {
        &self.store.data().shm
    }
}
