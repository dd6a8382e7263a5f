//! The component interface on an async engine
//! (`component::add_to_linker_async`): `wait32` sleeps without holding the
//! executor thread, gives the sync path's results, and the embedder's
//! interrupt reaches it.
//!
//! The proof that no wait blocks the thread is structural, not timed: every
//! waiter and the notifier run on one current-thread runtime. A `wait32`
//! that blocked its thread would keep the notifier from ever running, the
//! waiters would end with `etimedout` at the grant's `max_wait`, and the
//! test would fail on their results.

use std::sync::OnceLock;
use std::time::Duration;

use shmgate_core::Errno;
use shmgate_host::wasm::component::{self, async_bindings};
use shmgate_host::wasm::{ShmCtx, ShmPolicy};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::common::Scope;

mod driver {
    wasmtime::component::bindgen!({
        path: "../examples/guests/driver-wit",
        world: "shmgate:driver/component-driver",
        with: {
            "shmgate:shm/segments": shmgate_host::wasm::component::async_bindings::shmgate::shm::segments,
        },
        exports: { default: async },
    });
}

use async_bindings::shmgate::shm::segments::{ErrorCode, OpenFlags};

/// An async engine with the component model.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        Engine::new(&config).expect("an async engine")
    })
}

/// The driver component, compiled once.
fn driver_component() -> &'static Component {
    static COMPONENT: OnceLock<Component> = OnceLock::new();
    COMPONENT.get_or_init(|| {
        Component::from_file(engine(), shmgate_guest_artifacts::COMPONENT_DRIVER)
            .expect("the driver component compiles")
    })
}

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    shm: ShmCtx,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// One store running the driver with the async linker.
struct Comp {
    store: Store<Host>,
    driver: driver::ComponentDriver,
}

impl Comp {
    async fn new(policy: ShmPolicy) -> Comp {
        let mut linker = Linker::<Host>::new(engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("WASI 0.2");
        component::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.shm)
            .expect("shmgate:shm");
        let host = Host {
            wasi: WasiCtxBuilder::new().inherit_stderr().build(),
            table: ResourceTable::new(),
            shm: ShmCtx::new(policy),
        };
        let mut store = Store::new(engine(), host);
        let driver =
            driver::ComponentDriver::instantiate_async(&mut store, driver_component(), &linker)
                .await
                .expect("instantiating the driver");
        Comp { store, driver }
    }

    /// Opens `name` read-write (creating it with one page) in slot 0.
    async fn open(&mut self, name: &str) -> u32 {
        let api = self.driver.shmgate_driver_driver();
        let slot = api
            .call_open(
                &mut self.store,
                name,
                OpenFlags::READ_WRITE | OpenFlags::CREATE,
                0o600,
            )
            .await
            .expect("no trap")
            .expect("open");
        api.call_set_size(&mut self.store, slot, 4096)
            .await
            .expect("no trap")
            .expect("set-size");
        slot
    }

    async fn wait32(&mut self, slot: u32, timeout_ns: Option<u64>) -> Result<(), Errno> {
        let api = self.driver.shmgate_driver_driver();
        api.call_wait32(&mut self.store, slot, 0, 0, timeout_ns)
            .await
            .expect("no trap")
            .map_err(errno)
    }

    async fn notify(&mut self, slot: u32) -> u32 {
        let api = self.driver.shmgate_driver_driver();
        api.call_notify(&mut self.store, slot, 0, u32::MAX)
            .await
            .expect("no trap")
            .expect("notify")
    }
}

fn errno(code: ErrorCode) -> Errno {
    code.errno().unwrap_or(Errno::IO)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// 20 component stores wait on one word on a single-threaded runtime; a
/// 21st, on the same thread, notifies until all 20 have woken. Each
/// returns `Ok` (woken), none `etimedout` (the grant's `max_wait` is 5 s:
/// a wait that blocked the thread would end that way, one after another).
#[test]
fn waiters_on_one_thread_all_wake_on_notify() {
    const WAITERS: usize = 20;
    let scope = Scope::new();
    let policy = || {
        scope
            .full("a")
            .max_wait(Duration::from_secs(5))
            .build()
            .expect("policy")
    };
    current_thread().block_on(async {
        let mut notifier = Comp::new(policy()).await;
        let slot = notifier.open("word").await;
        let mut waiters = tokio::task::JoinSet::new();
        for _ in 0..WAITERS {
            let mut comp = Comp::new(policy()).await;
            let slot = comp.open("word").await;
            waiters.spawn(async move { comp.wait32(slot, None).await });
        }
        let mut woken = 0;
        // Bounded, so a broken wait fails the test instead of hanging it.
        for _ in 0..20_000 {
            if woken == WAITERS {
                break;
            }
            // Lets every waiter run up to its sleep, then wakes those
            // asleep (a waiter not yet asleep is woken by a later round).
            tokio::task::yield_now().await;
            woken += usize::try_from(notifier.notify(slot).await).expect("fits");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(woken, WAITERS);
        let mut results = Vec::new();
        while let Some(r) = waiters.join_next().await {
            results.push(r.expect("the waiter task"));
        }
        assert_eq!(results, vec![Ok(()); WAITERS]);
    });
}

/// The embedder's interrupt ends an async component wait with `eintr`; a
/// timeout of the guest's own ends it with `etimedout`, as in the sync
/// path; and a word that already differs is `eagain`.
#[test]
fn interrupt_timeout_and_changed_word_match_the_sync_path() {
    let scope = Scope::new();
    let policy = scope.full("b").build().expect("policy");
    current_thread().block_on(async {
        let mut comp = Comp::new(policy).await;
        let slot = comp.open("word").await;
        assert_eq!(
            comp.wait32(slot, Some(1_000_000)).await,
            Err(Errno::TIMEDOUT)
        );

        let interrupt = comp.store.data().shm.interrupt_handle();
        let wait = tokio::spawn(async move { comp.wait32(slot, None).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        interrupt.interrupt();
        assert_eq!(wait.await.expect("the waiter task"), Err(Errno::INTR));
    });

    let policy = scope.full("c").build().expect("policy");
    current_thread().block_on(async {
        let mut comp = Comp::new(policy).await;
        let slot = comp.open("word").await;
        let api = comp.driver.shmgate_driver_driver();
        let store1 = async_bindings::shmgate::shm::segments::AtomicOp::Store(1);
        api.call_atomic32(&mut comp.store, slot, 0, store1)
            .await
            .expect("no trap")
            .expect("store");
        assert_eq!(comp.wait32(slot, None).await, Err(Errno::AGAIN));
    });
}
