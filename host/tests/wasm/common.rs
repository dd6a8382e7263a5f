//! Helpers shared by the hostile-guest tests: one compiled WAT guest that
//! forwards every `shmgate_v1` import through a wasm function of its own,
//! a [`Guest`] that drives it with arbitrary (hostile) arguments, a
//! [`Scope`] that gives each test its own `/dev/shm` names and removes them
//! on drop (also on panic), and checks that the host is unharmed.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use shmgate_core::Errno;
use shmgate_host::wasm::{ShmCtx, ShmPolicy, ShmPolicyBuilder, add_to_linker};
use wasmtime::{Engine, Instance, Linker, Memory, Module, Store, TypedFunc};

/// `oflags` wire values, spelled out: the tests pin the ABI, not the core's
/// constants.
pub(crate) const RDONLY: i32 = 0;
/// `RDWR` on the wire.
pub(crate) const RDWR: i32 = 1;
/// `CREATE` on the wire.
pub(crate) const CREATE: i32 = 2;
/// `EXCL` on the wire.
pub(crate) const EXCL: i32 = 4;
/// `TRUNC` on the wire.
pub(crate) const TRUNC: i32 = 8;

/// The size of the guest's memory: one wasm page.
pub(crate) const PAGE: usize = 65536;
/// Where [`Guest::open`] and [`Guest::unlink`] put the name.
pub(crate) const NAME_AT: usize = 1024;
/// Where [`Guest::write_data`] and [`Guest::read_data`] put the data.
pub(crate) const BUF_AT: usize = 8192;

/// The forwarding guest: exports `memory` (one page) and one function per
/// import, with the import's signature, that calls the import. Going
/// through wasm functions makes every call a real guest-to-host call.
const FORWARDER: &str = r#"(module
  (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
  (import "shmgate_v1" "unlink" (func $unlink (param i32 i32) (result i64)))
  (import "shmgate_v1" "close" (func $close (param i32) (result i64)))
  (import "shmgate_v1" "size" (func $size (param i32) (result i64)))
  (import "shmgate_v1" "set_size" (func $set_size (param i32 i64) (result i64)))
  (import "shmgate_v1" "read" (func $read (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "write" (func $write (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "wait32" (func $wait32 (param i32 i64 i32 i64) (result i64)))
  (import "shmgate_v1" "notify" (func $notify (param i32 i64 i32) (result i64)))
  (import "shmgate_v1" "atomic32" (func $atomic32 (param i32 i64 i32 i32 i32) (result i64)))
  MEMORY
  (func (export "wait32") (param i32 i64 i32 i64) (result i64)
    (call $wait32 (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "notify") (param i32 i64 i32) (result i64)
    (call $notify (local.get 0) (local.get 1) (local.get 2)))
  (func (export "atomic32") (param i32 i64 i32 i32 i32) (result i64)
    (call $atomic32 (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "open") (param i32 i32 i32 i32) (result i64)
    (call $open (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "unlink") (param i32 i32) (result i64)
    (call $unlink (local.get 0) (local.get 1)))
  (func (export "close") (param i32) (result i64)
    (call $close (local.get 0)))
  (func (export "size") (param i32) (result i64)
    (call $size (local.get 0)))
  (func (export "set_size") (param i32 i64) (result i64)
    (call $set_size (local.get 0) (local.get 1)))
  (func (export "read") (param i32 i64 i32 i32) (result i64)
    (call $read (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "write") (param i32 i64 i32 i32) (result i64)
    (call $write (local.get 0) (local.get 1) (local.get 2) (local.get 3))))"#;

/// The engine every test shares (compiling is the slow part).
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// Which memory the guest module has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GuestKind {
    /// Exports one page as `memory`.
    WithMemory,
    /// Has a memory, but exports it as `mem`: the host must not find it.
    MemoryMisnamed,
    /// Has no memory at all.
    NoMemory,
}

fn module(kind: GuestKind) -> &'static Module {
    static MODULES: [OnceLock<Module>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let (index, memory) = match kind {
        GuestKind::WithMemory => (0, r#"(memory (export "memory") 1)"#),
        GuestKind::MemoryMisnamed => (1, r#"(memory (export "mem") 1)"#),
        GuestKind::NoMemory => (2, ""),
    };
    MODULES[index].get_or_init(|| {
        Module::new(engine(), FORWARDER.replace("MEMORY", memory)).expect("the WAT guest compiles")
    })
}

/// The data of every test store: only the shmgate context.
pub(crate) struct Host {
    /// The context under test.
    pub(crate) shm: ShmCtx,
}

/// One store with one instance of the forwarding guest.
pub(crate) struct Guest {
    /// The store; dropping it drops the [`ShmCtx`].
    pub(crate) store: Store<Host>,
    memory: Option<Memory>,
    open: TypedFunc<(i32, i32, i32, i32), i64>,
    unlink: TypedFunc<(i32, i32), i64>,
    close: TypedFunc<i32, i64>,
    size: TypedFunc<i32, i64>,
    set_size: TypedFunc<(i32, i64), i64>,
    read: TypedFunc<(i32, i64, i32, i32), i64>,
    write: TypedFunc<(i32, i64, i32, i32), i64>,
    wait32: TypedFunc<(i32, i64, i32, i64), i64>,
    notify: TypedFunc<(i32, i64, i32), i64>,
    atomic32: TypedFunc<(i32, i64, i32, i32, i32), i64>,
}

impl Guest {
    /// A fresh store, linker and instance of the guest with memory.
    pub(crate) fn new(policy: ShmPolicy) -> Guest {
        Guest::of_kind(policy, GuestKind::WithMemory)
    }

    /// A fresh store, linker and instance of the given guest.
    pub(crate) fn of_kind(policy: ShmPolicy, kind: GuestKind) -> Guest {
        let mut linker = Linker::<Host>::new(engine());
        add_to_linker(&mut linker, |h: &mut Host| &mut h.shm).expect("add_to_linker");
        let mut store = Store::new(
            engine(),
            Host {
                shm: ShmCtx::new(policy),
            },
        );
        let instance: Instance = linker
            .instantiate(&mut store, module(kind))
            .expect("instantiate");
        let memory = instance.get_memory(&mut store, "memory");
        assert_eq!(memory.is_some(), kind == GuestKind::WithMemory);
        macro_rules! func {
            ($name:literal) => {
                instance
                    .get_typed_func(&mut store, $name)
                    .expect(concat!("export ", $name))
            };
        }
        Guest {
            memory,
            open: func!("open"),
            unlink: func!("unlink"),
            close: func!("close"),
            size: func!("size"),
            set_size: func!("set_size"),
            read: func!("read"),
            write: func!("write"),
            wait32: func!("wait32"),
            notify: func!("notify"),
            atomic32: func!("atomic32"),
            store,
        }
    }

    /// The store's shmgate context.
    pub(crate) fn ctx(&self) -> &ShmCtx {
        &self.store.data().shm
    }

    fn memory(&self) -> Memory {
        self.memory.expect("this guest has no exported memory")
    }

    /// Copies `bytes` into guest memory at `at`.
    pub(crate) fn mem_write(&mut self, at: usize, bytes: &[u8]) {
        let memory = self.memory();
        memory
            .write(&mut self.store, at, bytes)
            .expect("host write into guest memory");
    }

    /// Copies `len` bytes out of guest memory at `at`.
    pub(crate) fn mem_read(&self, at: usize, len: usize) -> Vec<u8> {
        let mut out = vec![0; len];
        self.memory()
            .read(&self.store, at, &mut out)
            .expect("host read from guest memory");
        out
    }

    /// Grows the guest memory by `pages` wasm pages.
    pub(crate) fn grow(&mut self, pages: u64) {
        let memory = self.memory();
        memory.grow(&mut self.store, pages).expect("memory.grow");
    }

    /// `open` with raw arguments; `Err` only if the call trapped.
    pub(crate) fn try_open_raw(
        &mut self,
        ptr: i32,
        len: i32,
        oflags: i32,
        mode: i32,
    ) -> wasmtime::Result<i64> {
        self.open.call(&mut self.store, (ptr, len, oflags, mode))
    }

    /// `open` with raw arguments.
    #[track_caller]
    pub(crate) fn open_raw(&mut self, ptr: i32, len: i32, oflags: i32, mode: i32) -> i64 {
        self.try_open_raw(ptr, len, oflags, mode)
            .expect("open must not trap")
    }

    /// `open` of `name` (copied to [`NAME_AT`]) with mode `0o600`.
    #[track_caller]
    pub(crate) fn open(&mut self, name: &[u8], oflags: i32) -> i64 {
        self.open_mode(name, oflags, 0o600)
    }

    /// `open` of `name` (copied to [`NAME_AT`]).
    #[track_caller]
    pub(crate) fn open_mode(&mut self, name: &[u8], oflags: i32, mode: i32) -> i64 {
        self.mem_write(NAME_AT, name);
        self.open_raw(wasm_i32(NAME_AT), wasm_i32(name.len()), oflags, mode)
    }

    /// `open` that must succeed: the handle.
    #[track_caller]
    pub(crate) fn open_ok(&mut self, name: &[u8], oflags: i32) -> i32 {
        let ret = self.open(name, oflags);
        handle(ret, &format!("open {:?}", OsStr::from_bytes(name)))
    }

    /// `unlink` with raw arguments; `Err` only if the call trapped.
    pub(crate) fn try_unlink_raw(&mut self, ptr: i32, len: i32) -> wasmtime::Result<i64> {
        self.unlink.call(&mut self.store, (ptr, len))
    }

    /// `unlink` with raw arguments.
    #[track_caller]
    pub(crate) fn unlink_raw(&mut self, ptr: i32, len: i32) -> i64 {
        self.try_unlink_raw(ptr, len).expect("unlink must not trap")
    }

    /// `unlink` of `name` (copied to [`NAME_AT`]).
    #[track_caller]
    pub(crate) fn unlink(&mut self, name: &[u8]) -> i64 {
        self.mem_write(NAME_AT, name);
        self.unlink_raw(wasm_i32(NAME_AT), wasm_i32(name.len()))
    }

    /// `close`; `Err` only if the call trapped.
    pub(crate) fn try_close(&mut self, handle: i32) -> wasmtime::Result<i64> {
        self.close.call(&mut self.store, handle)
    }

    /// `close`.
    #[track_caller]
    pub(crate) fn close(&mut self, handle: i32) -> i64 {
        self.try_close(handle).expect("close must not trap")
    }

    /// `size`; `Err` only if the call trapped.
    pub(crate) fn try_size(&mut self, handle: i32) -> wasmtime::Result<i64> {
        self.size.call(&mut self.store, handle)
    }

    /// `size`.
    #[track_caller]
    pub(crate) fn size(&mut self, handle: i32) -> i64 {
        self.try_size(handle).expect("size must not trap")
    }

    /// `set_size`; `Err` only if the call trapped.
    pub(crate) fn try_set_size(&mut self, handle: i32, size: i64) -> wasmtime::Result<i64> {
        self.set_size.call(&mut self.store, (handle, size))
    }

    /// `set_size`.
    #[track_caller]
    pub(crate) fn set_size(&mut self, handle: i32, size: i64) -> i64 {
        self.try_set_size(handle, size)
            .expect("set_size must not trap")
    }

    /// `read` with raw arguments; `Err` only if the call trapped.
    pub(crate) fn try_read_raw(
        &mut self,
        handle: i32,
        offset: i64,
        ptr: i32,
        len: i32,
    ) -> wasmtime::Result<i64> {
        self.read.call(&mut self.store, (handle, offset, ptr, len))
    }

    /// `read` with raw arguments.
    #[track_caller]
    pub(crate) fn read_raw(&mut self, handle: i32, offset: i64, ptr: i32, len: i32) -> i64 {
        self.try_read_raw(handle, offset, ptr, len)
            .expect("read must not trap")
    }

    /// `write` with raw arguments; `Err` only if the call trapped.
    pub(crate) fn try_write_raw(
        &mut self,
        handle: i32,
        offset: i64,
        ptr: i32,
        len: i32,
    ) -> wasmtime::Result<i64> {
        self.write.call(&mut self.store, (handle, offset, ptr, len))
    }

    /// `write` with raw arguments.
    #[track_caller]
    pub(crate) fn write_raw(&mut self, handle: i32, offset: i64, ptr: i32, len: i32) -> i64 {
        self.try_write_raw(handle, offset, ptr, len)
            .expect("write must not trap")
    }

    /// `write` of `data` (copied to [`BUF_AT`]) at `offset`.
    #[track_caller]
    pub(crate) fn write_data(&mut self, handle: i32, offset: i64, data: &[u8]) -> i64 {
        self.mem_write(BUF_AT, data);
        self.write_raw(handle, offset, wasm_i32(BUF_AT), wasm_i32(data.len()))
    }

    /// `read` of up to `len` bytes at `offset` into [`BUF_AT`]: the result
    /// and, if it is a count, the bytes read.
    #[track_caller]
    pub(crate) fn read_data(&mut self, handle: i32, offset: i64, len: usize) -> (i64, Vec<u8>) {
        let ret = self.read_raw(handle, offset, wasm_i32(BUF_AT), wasm_i32(len));
        let got = usize::try_from(ret).map_or_else(|_| Vec::new(), |n| self.mem_read(BUF_AT, n));
        (ret, got)
    }
}

impl Guest {
    /// `wait32`.
    #[track_caller]
    pub(crate) fn wait32(
        &mut self,
        handle: i32,
        offset: i64,
        expected: i32,
        timeout_ns: i64,
    ) -> i64 {
        let args = (handle, offset, expected, timeout_ns);
        self.wait32
            .call(&mut self.store, args)
            .expect("wait32 must not trap")
    }

    /// `notify`.
    #[track_caller]
    pub(crate) fn notify(&mut self, handle: i32, offset: i64, count: i32) -> i64 {
        let args = (handle, offset, count);
        self.notify
            .call(&mut self.store, args)
            .expect("notify must not trap")
    }

    /// `atomic32`.
    #[track_caller]
    pub(crate) fn atomic32(
        &mut self,
        handle: i32,
        offset: i64,
        op: i32,
        operand: i32,
        expected: i32,
    ) -> i64 {
        let args = (handle, offset, op, operand, expected);
        self.atomic32
            .call(&mut self.store, args)
            .expect("atomic32 must not trap")
    }
}

/// `n` as a wasm `i32` argument (a pointer or length that fits).
#[track_caller]
pub(crate) fn wasm_i32(n: usize) -> i32 {
    i32::try_from(n).expect("fits an i32")
}

/// A result as text: the value, or the errno's name.
pub(crate) fn describe(ret: i64) -> String {
    match Errno::from_wire(ret) {
        Ok(v) => format!("Ok({v})"),
        Err(e) => format!("{} ({ret})", e.name()),
    }
}

/// Asserts that `ret` is exactly `-expected`.
#[track_caller]
pub(crate) fn assert_errno(ret: i64, expected: Errno, what: &str) {
    assert!(
        ret == expected.to_wire(),
        "{what}: expected {} ({}), got {}",
        expected.name(),
        expected.to_wire(),
        describe(ret)
    );
}

/// Asserts that `ret` is a success and returns it.
#[track_caller]
pub(crate) fn ok(ret: i64, what: &str) -> u64 {
    match Errno::from_wire(ret) {
        Ok(v) => v,
        Err(_) => panic!("{what}: expected success, got {}", describe(ret)),
    }
}

/// Asserts that `ret` is a handle (a non-negative `i32`) and returns it.
#[track_caller]
pub(crate) fn handle(ret: i64, what: &str) -> i32 {
    let v = ok(ret, what);
    i32::try_from(v).unwrap_or_else(|_| panic!("{what}: {v} is not a valid handle"))
}

/// Asserts that a call trapped with the "no memory" message.
#[track_caller]
pub(crate) fn assert_memory_trap(result: wasmtime::Result<i64>, what: &str) {
    match result {
        Ok(ret) => panic!("{what}: expected a trap, got {}", describe(ret)),
        Err(e) => {
            let text = format!("{e:?}");
            assert!(
                text.contains("must export a memory named \"memory\""),
                "{what}: unexpected trap: {text}"
            );
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The `/dev/shm` names of one test: everything under
/// `shmgate-wt-<pid>-<n>.`, removed on drop, pass or fail.
///
/// The root ends in `.` so that test 1's root is not a prefix of test 11's.
pub(crate) struct Scope {
    root: String,
}

impl Scope {
    /// A root no other test (in this or any other process) uses.
    pub(crate) fn new() -> Scope {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Scope {
            root: format!("shmgate-wt-{}-{n}.", std::process::id()),
        }
    }

    /// A namespace prefix for a guest: `<root><tag>.`. Tags must not be
    /// prefixes of each other's tags plus `.`.
    pub(crate) fn ns(&self, tag: &str) -> String {
        format!("{}{tag}.", self.root)
    }

    /// A host name under the root that no namespace covers:
    /// `<root>~<rest>` (namespaces are `<root><tag>.`; use tags without
    /// `~`).
    pub(crate) fn outside(&self, rest: &str) -> String {
        format!("{}~{rest}", self.root)
    }

    /// A policy granting everything in namespace `tag`: create, unlink,
    /// resize.
    pub(crate) fn full(&self, tag: &str) -> ShmPolicyBuilder {
        ShmPolicy::builder()
            .namespace(self.ns(tag))
            .allow_create(true)
            .allow_unlink(true)
            .allow_resize(true)
    }

    /// The names in `/dev/shm` under this test's root, sorted.
    pub(crate) fn entries(&self) -> Vec<Vec<u8>> {
        let mut names: Vec<Vec<u8>> = fs::read_dir("/dev/shm")
            .expect("reading /dev/shm")
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                let bytes = name.as_bytes();
                bytes
                    .starts_with(self.root.as_bytes())
                    .then(|| bytes.to_vec())
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        for name in self.entries() {
            let path = shm_path(&name);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {
                    let _ = fs::remove_dir_all(&path);
                }
                Ok(_) => {
                    let _ = fs::remove_file(&path);
                }
                Err(_) => {}
            }
        }
    }
}

/// `/dev/shm/<name>`.
pub(crate) fn shm_path(name: impl AsRef<[u8]>) -> PathBuf {
    PathBuf::from("/dev/shm").join(OsStr::from_bytes(name.as_ref()))
}

/// Whether anything is at `/dev/shm/<name>`.
pub(crate) fn exists(name: impl AsRef<[u8]>) -> bool {
    fs::symlink_metadata(shm_path(name)).is_ok()
}

/// The bytes of `/dev/shm/<name>`, read with `std::fs`.
#[track_caller]
pub(crate) fn contents(name: impl AsRef<[u8]>) -> Vec<u8> {
    let path = shm_path(name);
    fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The size of `/dev/shm/<name>`, from `std::fs`.
#[track_caller]
pub(crate) fn file_len(name: impl AsRef<[u8]>) -> u64 {
    let path = shm_path(name);
    fs::metadata(&path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .len()
}

/// `(st_dev, st_ino)` of `/dev/shm/<name>`.
#[track_caller]
pub(crate) fn inode(name: impl AsRef<[u8]>) -> (u64, u64) {
    let path = shm_path(name);
    let m = fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    (m.dev(), m.ino())
}

/// Creates the segment `name` from the host (with `shmgate_host::open`,
/// `CREATE | EXCL`) holding `data`.
#[track_caller]
pub(crate) fn host_create(name: &str, data: &[u8]) {
    use shmgate_host::{Mode, OFlags};
    let seg = shmgate_host::open(
        name,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL,
        Mode::OWNER_RW,
    )
    .unwrap_or_else(|e| panic!("host create {name}: {e}"));
    seg.set_len(data.len() as u64).expect("host set_len");
    seg.write_all_at(data, 0).expect("host write");
}

/// A segment outside every guest namespace, with known contents and
/// identity: whatever a guest does, it must stay exactly as it is.
pub(crate) struct Sentinel {
    name: String,
    data: Vec<u8>,
    inode: (u64, u64),
}

impl Sentinel {
    /// Creates `<root>~<tag>` from the host.
    pub(crate) fn new(scope: &Scope, tag: &str) -> Sentinel {
        let name = scope.outside(tag);
        let data = format!("sentinel {name}: do not touch").into_bytes();
        host_create(&name, &data);
        let inode = inode(&name);
        Sentinel { name, data, inode }
    }

    /// The host name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Asserts that it still exists, is the same object and holds the
    /// same bytes.
    #[track_caller]
    pub(crate) fn assert_intact(&self) {
        assert_eq!(
            inode(&self.name),
            self.inode,
            "sentinel {} replaced",
            self.name
        );
        assert_eq!(
            contents(&self.name),
            self.data,
            "sentinel {} changed",
            self.name
        );
    }
}

static PROBES: AtomicU32 = AtomicU32::new(0);

/// The host process is unharmed: after whatever a test did, the same
/// store still opens, reads and closes a segment in its namespace (`tag`
/// of `scope`), its handle count comes back, and the sentinels are
/// intact.
#[track_caller]
pub(crate) fn assert_unharmed(
    guest: &mut Guest,
    scope: &Scope,
    tag: &str,
    sentinels: &[&Sentinel],
) {
    let before = guest.ctx().open_handles();
    let guest_name = format!("probe-{}", PROBES.fetch_add(1, Ordering::Relaxed));
    let host_name = format!("{}{guest_name}", scope.ns(tag));
    let data = format!("alive {host_name}").into_bytes();
    host_create(&host_name, &data);

    let h = guest.open_ok(guest_name.as_bytes(), RDONLY);
    assert_eq!(guest.ctx().open_handles(), before + 1);
    assert_eq!(guest.size(h), i64::try_from(data.len()).expect("small"));
    let (ret, got) = guest.read_data(h, 0, data.len() + 8);
    assert_eq!(ok(ret, "probe read"), data.len() as u64);
    assert_eq!(got, data, "probe contents through the guest");
    assert_eq!(guest.close(h), 0, "probe close");
    assert_errno(guest.close(h), Errno::BADF, "probe close twice");
    assert_eq!(guest.ctx().open_handles(), before);

    fs::remove_file(shm_path(&host_name)).expect("removing the probe");
    for s in sentinels {
        s.assert_intact();
    }
}

/// The process umask, from `/proc/self/status` (reading it with
/// `umask(2)` would change it under the other test threads).
pub(crate) fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("a Umask line (Linux 4.7+)");
    u32::from_str_radix(line.trim(), 8).expect("octal umask")
}
