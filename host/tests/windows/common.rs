//! A configured engine, a guest that re-exports every import, unique
//! namespaces that clean up after themselves.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use shmgate_host::wasm::{
    ShmCtx, ShmMemoryCreator, ShmPolicy, add_to_linker, configure, share_memory,
};
use wasmtime::{
    Config, Engine, Extern, Instance, InstancePre, Linker, Memory, Module, ResourceLimiter,
    SharedMemory, Store, StoreLimitsBuilder, TypedFunc, WasmParams, WasmResults,
};

/// The test guest: every `shmgate_v1` import re-exported as is, plus raw
/// loads, stores and an atomic add on its memory, and a spin loop that
/// keeps touching one address.
pub(crate) const GUEST: &str = r#"(module
  (import "shmgate_v1" "open" (func $open (param i32 i32 i32 i32) (result i64)))
  (import "shmgate_v1" "close" (func $close (param i32) (result i64)))
  (import "shmgate_v1" "read" (func $read (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "write" (func $write (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "map" (func $map (param i32 i64 i32 i32) (result i64)))
  (import "shmgate_v1" "unmap" (func $unmap (param i32 i32) (result i64)))
  (import "shmgate_v1" "wait32" (func $wait32 (param i32 i64 i32 i64) (result i64)))
  (import "shmgate_v1" "notify" (func $notify (param i32 i64 i32) (result i64)))
  (import "shmgate_v1" "atomic32" (func $atomic32 (param i32 i64 i32 i32 i32) (result i64)))
  (memory (export "memory") 1 1000 shared)
  (func (export "atomic32") (param i32 i64 i32 i32 i32) (result i64)
    (call $atomic32 (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4)))
  (func (export "host_add_loop") (param $h i32) (param $off i64) (param $n i32) (result i64)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (drop (call $atomic32 (local.get $h) (local.get $off) (i32.const 2) (i32.const 1) (i32.const 0)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (call $atomic32 (local.get $h) (local.get $off) (i32.const 0) (i32.const 0) (i32.const 0)))
  (func (export "open") (param i32 i32 i32 i32) (result i64)
    (call $open (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "close") (param i32) (result i64) (call $close (local.get 0)))
  (func (export "read") (param i32 i64 i32 i32) (result i64)
    (call $read (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "write") (param i32 i64 i32 i32) (result i64)
    (call $write (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "map") (param i32 i64 i32 i32) (result i64)
    (call $map (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "unmap") (param i32 i32) (result i64) (call $unmap (local.get 0) (local.get 1)))
  (func (export "wait32") (param i32 i64 i32 i64) (result i64)
    (call $wait32 (local.get 0) (local.get 1) (local.get 2) (local.get 3)))
  (func (export "notify") (param i32 i64 i32) (result i64)
    (call $notify (local.get 0) (local.get 1) (local.get 2)))
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0)))
  (func (export "store") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
  (func (export "atomic_add") (param i32 i32) (result i32)
    (i32.atomic.rmw.add (local.get 0) (local.get 1)))
  (func (export "spin") (param $addr i32) (param $n i32) (result i32)
    (block $done
      (loop $again
        (br_if $done (i32.eqz (local.get $n)))
        (i32.store (local.get $addr) (i32.add (i32.load (local.get $addr)) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $again)))
    (i32.load (local.get $addr))))"#;

/// The engine with windows configured. The memory creator (and with it
/// our signal handler) exists before the engine, so wasmtime's handler
/// sees faults first, as in production.
pub(crate) fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        configure(&mut config);
        Engine::new(&config).expect("configured engine")
    })
}

/// Installs the windows signal handler before any engine of this test
/// binary exists (the pooling test makes its own engine).
pub(crate) fn init() {
    let _ = ShmMemoryCreator::new();
    let _ = engine();
}

/// The store data of these tests.
pub(crate) struct Host {
    pub(crate) shm: ShmCtx,
}

/// The memory limit of every store [`Guest`] makes: [`GUEST`]'s own
/// maximum, 1,000 pages, so that the limiter binds without changing what
/// the tests see.
pub(crate) const MEMORY_LIMIT: usize = 1000 * (64 << 10);

/// Every store [`Guest`] makes has a limiter, as a multi-tenant embedder's
/// would: `StoreLimits` with a memory size of [`MEMORY_LIMIT`].
impl ResourceLimiter for Host {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        StoreLimitsBuilder::new()
            .memory_size(MEMORY_LIMIT)
            .build()
            .memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        StoreLimitsBuilder::new()
            .build()
            .table_growing(current, desired, maximum)
    }
}

/// A namespace unique to the test; removes its `/dev/shm` entries on drop.
pub(crate) struct Ns(pub(crate) String);

impl Ns {
    pub(crate) fn new() -> Ns {
        static N: AtomicU32 = AtomicU32::new(0);
        Ns(format!(
            "shmgate-win-{}-{}.",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }
    pub(crate) fn name(&self, guest: &str) -> String {
        format!("{}{guest}", self.0)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        if let Ok(dir) = std::fs::read_dir("/dev/shm") {
            for e in dir.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.0) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// A store running [`GUEST`] under a policy.
pub(crate) struct Guest {
    pub(crate) store: Store<Host>,
    pub(crate) instance: Instance,
    pub(crate) memory: Mem,
}

/// The guest's memory: shared (windows need that) or, in the tests that
/// check windows are refused elsewhere, local.
pub(crate) enum Mem {
    Local(Memory),
    Shared(SharedMemory),
}

impl Mem {
    /// Its size in wasm pages.
    pub(crate) fn size(&self, store: &Store<Host>) -> u64 {
        match self {
            Mem::Local(m) => m.size(store),
            Mem::Shared(m) => m.size(),
        }
    }

    /// Writes `bytes` at guest address `offset`.
    pub(crate) fn write(&self, store: &mut Store<Host>, offset: usize, bytes: &[u8]) {
        match self {
            Mem::Local(m) => m.write(store, offset, bytes).unwrap(),
            Mem::Shared(m) => {
                let cells = &m.data()[offset..offset + bytes.len()];
                for (cell, &b) in cells.iter().zip(bytes) {
                    // SAFETY: the cell is in bounds of the live memory and
                    // no wasm runs on this thread while we write it.
                    unsafe { *cell.get() = b };
                }
            }
        }
    }
}

/// [`GUEST`] with a local (non-shared) memory.
pub(crate) fn local_guest() -> String {
    GUEST.replace(" 1 1000 shared)", " 1 1000)")
}

impl Guest {
    /// A store running [`GUEST`] (compiled and linked once per process).
    pub(crate) fn new(policy: ShmPolicy) -> Guest {
        static PRE: OnceLock<InstancePre<Host>> = OnceLock::new();
        let pre = PRE.get_or_init(|| {
            // Prepared as an embedder would, for the store's memory limit.
            let wasm = wat::parse_str(GUEST).unwrap();
            let wasm = share_memory(&wasm, MEMORY_LIMIT as u64).expect("prepare the test guest");
            let module = Module::new(engine(), &*wasm).expect("test guest");
            let mut linker = Linker::<Host>::new(engine());
            add_to_linker(&mut linker, |h: &mut Host| &mut h.shm).unwrap();
            linker
                .instantiate_pre(&module)
                .expect("link the test guest")
        });
        let mut store = Store::new(
            engine(),
            Host {
                shm: ShmCtx::new(policy),
            },
        );
        store.limiter(|h| h);
        let instance = pre.instantiate(&mut store).expect("instantiate");
        Guest::from_instance(store, instance)
    }

    fn from_instance(mut store: Store<Host>, instance: Instance) -> Guest {
        let memory = match instance.get_export(&mut store, "memory") {
            Some(Extern::SharedMemory(m)) => Mem::Shared(m),
            Some(Extern::Memory(m)) => Mem::Local(m),
            _ => panic!("the test guest exports its memory"),
        };
        Guest {
            store,
            instance,
            memory,
        }
    }

    /// The host address of guest address `addr`.
    pub(crate) fn host_addr(&self, addr: i32) -> *const u8 {
        let base = match &self.memory {
            Mem::Local(m) => m.data_ptr(&self.store).cast_const(),
            Mem::Shared(m) => m.data().as_ptr().cast::<u8>(),
        };
        base.wrapping_add(addr as u32 as usize)
    }

    pub(crate) fn with_engine(engine: &Engine, wat: &str, policy: ShmPolicy) -> Guest {
        let module = Module::new(engine, wat).expect("test guest");
        let mut linker = Linker::<Host>::new(engine);
        add_to_linker(&mut linker, |h: &mut Host| &mut h.shm).unwrap();
        let mut store = Store::new(
            engine,
            Host {
                shm: ShmCtx::new(policy),
            },
        );
        store.limiter(|h| h);
        let instance = linker
            .instantiate(&mut store, &module)
            .expect("instantiate");
        Guest::from_instance(store, instance)
    }

    pub(crate) fn func<P: WasmParams, R: WasmResults>(&mut self, name: &str) -> TypedFunc<P, R> {
        self.instance.get_typed_func(&mut self.store, name).unwrap()
    }

    pub(crate) fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, args: P) -> R {
        let f = self.func::<P, R>(name);
        f.call(&mut self.store, args)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    /// Opens `name` (written at guest address 0) with `flags`.
    pub(crate) fn open(&mut self, name: &str, flags: i32) -> i64 {
        self.memory.write(&mut self.store, 0, name.as_bytes());
        self.call("open", (0, name.len() as i32, flags, 0o600))
    }

    pub(crate) fn map(&mut self, handle: i64, offset: i64, len: i32, prot: i32) -> i64 {
        self.call("map", (handle as i32, offset, len, prot))
    }
}

/// A policy for namespace `ns` that allows windows.
pub(crate) fn policy(ns: &Ns) -> shmgate_host::wasm::ShmPolicyBuilder {
    ShmPolicy::builder().namespace(&ns.0).max_mapped(64 << 20)
}

/// 64 KiB, the window granularity.
pub(crate) const PAGE: i32 = 64 << 10;

/// Whether `/proc/self/maps` shows a mapping of `/dev/shm/<name>`.
pub(crate) fn mapped_in_proc(name: &str) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let needle = format!("/dev/shm/{name}");
    maps.lines()
        .any(|l| l.ends_with(&needle) || l.contains(&format!("{needle} (deleted)")))
}

/// The environment variable that tells a re-executed test binary which
/// child role to play.
const CHILD: &str = "SHMGATE_WINDOWS_CHILD";

/// Whether this process is the child `role` of a test (see [`run_child`]).
pub(crate) fn is_child(role: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|r| r == role)
}

/// Runs test `test` (its full path, `module::name`) of this binary again in
/// a process of its own, as child `role`, and returns its output. Children
/// measure their own CPU time and memory, change their own resource
/// limits, and may die of a signal without taking the test binary along.
///
/// A child that runs longer than five minutes is killed and the test fails:
/// a hang is a bug too.
pub(crate) fn run_child(test: &str, role: &str, env: &[(&str, String)]) -> std::process::Output {
    use std::process::Stdio;
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("re-running the test binary");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while child.try_wait().expect("waiting for the child").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{role}: the child hung for 5 minutes and was killed\nstdout:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("the child's output")
}

/// Panics with the child's output unless it exited with status 0.
pub(crate) fn assert_child_ok(out: &std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: child {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Shrinks `/dev/shm/<name>` to `len` bytes from a separate process.
pub(crate) fn truncate_elsewhere(name: &str, len: u64) {
    let status = std::process::Command::new("truncate")
        .args(["-s", &len.to_string(), &format!("/dev/shm/{name}")])
        .status()
        .expect("running truncate(1)");
    assert!(status.success());
}

/// A line `key=value` a child printed.
pub(crate) fn child_value(out: &std::process::Output, key: &str) -> Option<String> {
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        // libtest may print "test name ... " before the child's line.
        let at = l.find(&format!("{key}="))?;
        Some(l[at + key.len() + 1..].trim().to_owned())
    })
}
