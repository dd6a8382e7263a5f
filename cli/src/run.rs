//! `shmgate run`: a guest with WASI and a shared memory grant. A core
//! module (`wasm32-wasip1`) gets WASI preview 1 and `shmgate_v1`; a
//! component (`wasm32-wasip2`) gets WASI 0.2 and `shmgate:shm`. Both get
//! the same grant, enforced by the same `ShmCtx`.

use std::path::PathBuf;

use clap::Args;
use shmgate_core::Mode;
use shmgate_host::wasm::{
    ShareError, ShmCtx, ShmMemoryCreator, ShmPolicy, add_to_linker, check_waits, component,
    configure, share_memory,
};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, Linker, Module, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::Command as WasiCommand;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::units::{parse_mode, parse_size};
use crate::{Failure, exit};

/// Run a wasm guest (a wasm32-wasip1 module or a wasm32-wasip2 component)
/// with a grant to shared memory.
///
/// A core module gets WASI preview 1 (stdio, args, env) and the shmgate_v1
/// imports; a component gets WASI 0.2 and the shmgate:shm/segments@0.1.0
/// interface, under the same grant (components have no windows:
/// --max-mapped does not apply). Without --namespace it gets no segments.
#[derive(Args, Debug)]
#[command(
    after_help = "Exit codes: the guest's own exit code (a component whose run returns an error: 1); \
64 bad usage; 65 not a valid module or component, or it cannot be instantiated; \
66 the guest file cannot be read; 69 the guest imports something shmgate does not provide \
(an unknown module, function or interface, or one with another type); 70 internal error; \
134 the guest trapped.\n\n\
Example: shmgate run --namespace demo. --allow-create --max-size 64MiB producer.wasm -- frames 16MiB"
)]
pub(crate) struct RunArgs {
    /// Grant the segments named PREFIX*: the guest's `foo` is /dev/shm/PREFIXfoo.
    #[arg(long, value_name = "PREFIX")]
    namespace: Option<String>,
    /// Read-only grant: RDWR, CREATE and TRUNC are refused with EACCES.
    #[arg(long)]
    read_only: bool,
    /// Allow creating segments (open with CREATE).
    #[arg(long)]
    allow_create: bool,
    /// Allow unlinking segments.
    #[arg(long)]
    allow_unlink: bool,
    /// Allow resizing any granted segment and opening with TRUNC.
    #[arg(long)]
    allow_resize: bool,
    /// Largest segment size set_size may set, e.g. 64MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "64MiB")]
    max_size: u64,
    /// Most handles the guest may hold open at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_handles: usize,
    /// Most segments the guest may create.
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_created: usize,
    /// Most permissive mode for segments the guest creates (octal).
    #[arg(long, value_name = "MODE", value_parser = parse_mode, default_value = "600")]
    create_mode: Mode,
    /// Most bytes of windows (map) mapped into the guest at once, e.g. 1GiB (default: no windows).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "0")]
    max_mapped: u64,
    /// Largest linear memory of the guest, windows included, e.g. 256MiB
    /// (default: 1GiB plus --max-mapped). Like wasmtime's
    /// -W max-memory-size: past it the guest's memory.grow returns -1 and
    /// map ENOMEM; a guest whose memory starts larger does not run.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<u64>,
    /// Longest single wait32 in seconds, whatever timeout the guest asks for.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    max_wait: u64,
    /// Unlink the segments the guest created when it exits.
    #[arg(long)]
    auto_unlink: bool,
    /// Set an environment variable for the guest (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    envs: Vec<String>,
    /// The guest: a core module or a component (binary).
    guest: PathBuf,
    /// Arguments for the guest (after --).
    #[arg(last = true)]
    args: Vec<String>,
}

/// The default `--max-memory` beside the windows: 1 GiB.
const DEFAULT_MAX_MEMORY: u64 = 1 << 30;

impl RunArgs {
    /// `--max-memory`, or its default: 1 GiB plus `--max-mapped`.
    fn max_memory(&self) -> u64 {
        self.max_memory
            .unwrap_or_else(|| DEFAULT_MAX_MEMORY.saturating_add(self.max_mapped))
    }

    /// The store's limiter: every memory at most `--max-memory`.
    fn limits(&self) -> StoreLimits {
        StoreLimitsBuilder::new()
            .memory_size(usize::try_from(self.max_memory()).unwrap_or(usize::MAX))
            .build()
    }

    fn policy(&self) -> Result<ShmPolicy, Failure> {
        let mut b = ShmPolicy::builder()
            .read_only(self.read_only)
            .allow_create(self.allow_create)
            .allow_unlink(self.allow_unlink)
            .allow_resize(self.allow_resize)
            .max_segment_size(self.max_size)
            .max_handles(self.max_handles)
            .max_created(self.max_created)
            .create_mode(self.create_mode)
            .max_mapped(self.max_mapped)
            .max_wait(std::time::Duration::from_secs(self.max_wait))
            .auto_unlink(self.auto_unlink);
        if let Some(ns) = &self.namespace {
            b = b.namespace(ns);
        }
        b.build()
            .map_err(|e| Failure::new(exit::USAGE, format!("bad grant: {e}")))
    }
}

/// The guest's WASI monotonic clock: the host's `CLOCK_MONOTONIC` as it
/// is, not wasmtime-wasi's default (which counts from the guest's start),
/// so that a timestamp one guest writes into a ring message means the same
/// to a native process or a guest in another process: one-way latency
/// between processes is measured that way. It reveals no more than the
/// default clock does (the machine's uptime, give or take).
struct HostMonotonic;

impl wasmtime_wasi::HostMonotonicClock for HostMonotonic {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        shmgate_host::ring::monotonic_ns()
    }
}

/// What a core module's store holds: WASI preview 1 and shmgate state.
struct Host {
    wasi: WasiP1Ctx,
    shm: ShmCtx,
    limits: StoreLimits,
}

/// What a component's store holds: WASI 0.2, its resources, and shmgate
/// state (the same `ShmCtx` as for modules).
struct ComponentHost {
    wasi: WasiCtx,
    table: ResourceTable,
    shm: ShmCtx,
    limits: StoreLimits,
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Runs the guest; returns its exit code.
pub(crate) fn run(args: RunArgs) -> Result<u8, Failure> {
    let policy = args.policy()?;
    tracing::info!(
        guest = %args.guest.display(),
        namespace = args.namespace.as_deref().unwrap_or("(none: no segments)"),
        read_only = args.read_only,
        allow_create = args.allow_create,
        allow_unlink = args.allow_unlink,
        allow_resize = args.allow_resize,
        max_size = args.max_size,
        max_handles = args.max_handles,
        max_created = args.max_created,
        max_mapped = args.max_mapped,
        max_memory = args.max_memory(),
        create_mode = format_args!("{:04o}", args.create_mode.bits()),
        auto_unlink = args.auto_unlink,
        "grant"
    );
    let bytes = std::fs::read(&args.guest)
        .map_err(|e| Failure::new(exit::NOINPUT, format!("{}: {e}", args.guest.display())))?;
    if let Some(what) = not_wasm(&bytes) {
        return Err(Failure::new(
            exit::DATAERR,
            format!(
                "{}: neither a WebAssembly module nor a component: {what}",
                args.guest.display()
            ),
        ));
    }
    // A guest that could park this thread in memory.atomic.wait32/wait64
    // on a shared memory, beyond --max-wait, does not run (configure turns
    // shared memories on; see docs/ABI.md). Text is parsed here first.
    let bytes = binary(&args, bytes)?;
    match check_waits(&bytes) {
        // wasmtime says what is wrong with bytes that do not parse.
        Ok(()) | Err(ShareError::Malformed(_)) => {}
        Err(e) => return Err(refused(&args, &e)),
    }
    // Windows need shmgate's memories (and its signal handler installed
    // before the engine's); see shmgate_host::wasm::configure. Its memory
    // creator is also the ceiling for memories the store's limiter does
    // not see grow (shared ones).
    let mut config = Config::new();
    configure(&mut config).with_host_memory(std::sync::Arc::new(
        ShmMemoryCreator::with_max_memory(args.max_memory()),
    ));
    config.wasm_component_model(true);
    let engine =
        Engine::new(&config).map_err(|e| Failure::new(exit::SOFTWARE, format!("{e:#}")))?;
    let mut wasi = WasiCtxBuilder::new();
    wasi.inherit_stdio();
    wasi.monotonic_clock(HostMonotonic);
    let program = args.guest.file_name().map_or_else(
        || args.guest.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    wasi.arg(program);
    wasi.args(&args.args);
    for env in &args.envs {
        let (k, v) = env.split_once('=').ok_or_else(|| {
            Failure::new(exit::USAGE, format!("--env {env:?}: expected NAME=VALUE"))
        })?;
        wasi.env(k, v);
    }
    let shm = ShmCtx::new(policy);
    let code = if wasmparser::Parser::is_component(&bytes) {
        run_component(&args, &engine, &bytes, wasi, shm)?
    } else {
        run_module(&args, &engine, bytes, wasi, shm)?
    };
    tracing::info!(guest = %args.guest.display(), code, "guest exited");
    Ok(code)
}

/// What `bytes` is if it is certainly no guest: neither binary WebAssembly
/// (`\0asm`, core module or component) nor WebAssembly text (which
/// starts with `(` or a `;;` comment after white space).
fn not_wasm(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\0asm") {
        return None;
    }
    if bytes.is_empty() {
        return Some("an empty file");
    }
    if bytes.starts_with(b"\x7fELF") {
        return Some("an ELF executable");
    }
    if bytes.starts_with(b"#!") {
        return Some("a script (#!)");
    }
    let text = std::str::from_utf8(bytes).ok().map(str::trim_start);
    match text {
        Some(t) if t.starts_with('(') || t.starts_with(";;") => None,
        Some("") => Some("only white space"),
        Some(_) => Some("text that is not WebAssembly text"),
        None => Some("no \\0asm header"),
    }
}

/// The guest in the binary format: a `.wat` module is parsed here, so
/// that every guest is checked the same way.
fn binary(args: &RunArgs, bytes: Vec<u8>) -> Result<Vec<u8>, Failure> {
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes)
        .map(std::borrow::Cow::into_owned)
        .map_err(|e| {
            Failure::new(
                exit::DATAERR,
                format!("{}: not a valid guest: {e}", args.guest.display()),
            )
        })
}

/// EX_DATAERR: a guest shmgate refuses to run (`share_memory`,
/// `check_waits`).
fn refused(args: &RunArgs, e: &ShareError) -> Failure {
    Failure::new(
        exit::DATAERR,
        format!("{}: refused: {e}", args.guest.display()),
    )
}

/// What a guest that could not be linked gets: the imports it needs that
/// shmgate does not provide are named in `e`.
fn unlinkable(args: &RunArgs, e: &wasmtime::Error) -> Failure {
    Failure::new(
        exit::UNAVAILABLE,
        format!(
            "{}: imports what shmgate does not provide: {e:#}",
            args.guest.display()
        ),
    )
}

/// EX_DATAERR: the guest file is no guest shmgate can run (`what` says
/// why).
fn not_runnable(args: &RunArgs, what: &str, e: &wasmtime::Error) -> Failure {
    Failure::new(
        exit::DATAERR,
        format!("{}: {what}: {e:#}", args.guest.display()),
    )
}

/// The exit code for how the guest's entry point ended: its own code
/// (`proc_exit`, `wasi:cli/exit`), or a trap.
fn exit_code(result: wasmtime::Result<()>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            // Exit codes are 8 bits on Unix; keep the low byte as the shell would.
            Some(code) => code.0.to_le_bytes()[0],
            None => {
                eprintln!("shmgate: guest trapped: {e:?}");
                exit::TRAP
            }
        },
    }
}

/// A core module: WASI preview 1 and `shmgate_v1`.
fn run_module(
    args: &RunArgs,
    engine: &Engine,
    bytes: Vec<u8>,
    mut wasi: WasiCtxBuilder,
    shm: ShmCtx,
) -> Result<u8, Failure> {
    // Windows live only in shared memories, so every host function (WASI
    // too) copies through raw pointers instead of borrowing bytes another
    // process can change: with windows granted, the guest's own memory is
    // made shared, with --max-memory as its maximum (wasmtime does not ask
    // the limiter before growing a shared memory).
    let bytes = if args.max_mapped > 0 {
        share_memory(&bytes, args.max_memory())
            .map_err(|e| refused(args, &e))?
            .into_owned()
    } else {
        bytes
    };
    let module =
        Module::new(engine, &bytes).map_err(|e| not_runnable(args, "not a valid guest", &e))?;

    let mut linker: Linker<Host> = Linker::new(engine);
    let internal = |e: wasmtime::Error| Failure::new(exit::SOFTWARE, format!("{e:#}"));
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |h: &mut Host| &mut h.wasi)
        .map_err(internal)?;
    add_to_linker(&mut linker, |h: &mut Host| &mut h.shm).map_err(internal)?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| unlinkable(args, &e))?;

    let host = Host {
        wasi: wasi.build_p1(),
        shm,
        limits: args.limits(),
    };
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limits);
    let instance = pre
        .instantiate(&mut store)
        .map_err(|e| not_runnable(args, "cannot instantiate", &e))?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(|e| not_runnable(args, "no _start", &e))?;
    tracing::debug!(guest = %args.guest.display(), "starting the module");
    Ok(exit_code(start.call(&mut store, ())))
}

/// A component: WASI 0.2 and `shmgate:shm`; it must export
/// `wasi:cli/run` (what `wasm32-wasip2` binaries do).
fn run_component(
    args: &RunArgs,
    engine: &Engine,
    bytes: &[u8],
    mut wasi: WasiCtxBuilder,
    shm: ShmCtx,
) -> Result<u8, Failure> {
    let guest = Component::new(engine, bytes)
        .map_err(|e| not_runnable(args, "not a valid component", &e))?;
    if args.max_mapped > 0 {
        tracing::info!("--max-mapped: components have no windows (docs/WIT.md)");
    }
    let mut linker = wasmtime::component::Linker::<ComponentHost>::new(engine);
    let internal = |e: wasmtime::Error| Failure::new(exit::SOFTWARE, format!("{e:#}"));
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(internal)?;
    component::add_to_linker(&mut linker, |h: &mut ComponentHost| &mut h.shm).map_err(internal)?;
    let pre = linker
        .instantiate_pre(&guest)
        .map_err(|e| unlinkable(args, &e))?;

    let host = ComponentHost {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        shm,
        limits: args.limits(),
    };
    let mut store = Store::new(engine, host);
    store.limiter(|h| &mut h.limits);
    let instance = pre
        .instantiate(&mut store)
        .map_err(|e| not_runnable(args, "cannot instantiate", &e))?;
    let command = WasiCommand::new(&mut store, &instance)
        .map_err(|e| not_runnable(args, "not a command (no wasi:cli/run export)", &e))?;
    tracing::debug!(guest = %args.guest.display(), "running the component");
    let ran = command.wasi_cli_run().call_run(&mut store);
    Ok(match ran {
        // `run` returned `err`: a failure without a code of its own.
        Ok(Err(())) => 1,
        Ok(Ok(())) => 0,
        Err(e) => exit_code(Err(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::not_wasm;

    #[test]
    fn files_that_are_no_guests_are_named() {
        assert_eq!(not_wasm(b"\0asm\x01\0\0\0"), None);
        assert_eq!(not_wasm(b"  (module)"), None);
        assert_eq!(not_wasm(b";; a comment\n(component)"), None);
        assert_eq!(not_wasm(b""), Some("an empty file"));
        assert_eq!(not_wasm(b"\x7fELF\x02\x01"), Some("an ELF executable"));
        assert_eq!(not_wasm(b"#!/bin/sh\n"), Some("a script (#!)"));
        assert_eq!(not_wasm(b" \n\t"), Some("only white space"));
        assert_eq!(
            not_wasm(b"hello"),
            Some("text that is not WebAssembly text")
        );
        assert_eq!(not_wasm(b"\xff\xfe"), Some("no \\0asm header"));
    }
}
