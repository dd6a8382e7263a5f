//! The async native ring ends against the sync ones, in one run (no
//! timed assertions: numbers and ratios are printed).
//!
//! - **Idle cost**: 10,000 `AsyncConsumer`s, one per ring, each a task
//!   waiting in `recv` on a 2-worker tokio runtime. The process's CPU time
//!   (`getrusage(RUSAGE_SELF)`: workers, reactor and all) over 10 s of
//!   idleness, as a share of one core; then one message to each ring, and
//!   each consumer must wake with its own message.
//! - **Throughput**: 2 M messages of 64 bytes from a sync producer thread,
//!   into a sync consumer and into an async consumer (a current-thread
//!   runtime), neither spinning (`spins: 0`), and the ratio.
//! - **Wake latency**: a sleeping consumer woken by a message every
//!   200 µs, one-way (the producer's `monotonic_ns` in the message to the
//!   consumer's): sync blocking `recv` against async `recv`, p50, p99,
//!   p99.9 and mean from an HDR histogram, and the ratios.
//!
//! Run with `cargo bench -p shmgate-host --bench async_native`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shmgate_host::ring::{self, WaitMode};
use shmgate_host::wait::pending_async_waits;
use shmgate_host::{Mapping, OpenOptions, OwnedSegment};

const NO_SPIN: WaitMode = WaitMode {
    spins: 0,
    nap: None,
};

fn segment(tag: &str, size: u64) -> (OwnedSegment, Arc<Mapping>) {
    let name = format!("/shmgate-bench-anative-{tag}-{}", std::process::id());
    let seg = OpenOptions::new().size(size).open_owned(name).unwrap();
    let map = Arc::new(seg.map().unwrap());
    (seg, map)
}

/// User plus system CPU time of this process.
fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    #[allow(unsafe_code)]
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn idle_consumers() {
    const RINGS: usize = 10_000;
    const REGION: usize = 8192;
    const IDLE: Duration = Duration::from_secs(10);
    let (_seg, map) = segment("idle", (RINGS * REGION) as u64);
    let mut producers: Vec<_> = (0..RINGS)
        .map(|i| ring::Producer::create(&map, i * REGION..(i + 1) * REGION, 16).unwrap())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let woken = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..RINGS)
        .map(|i| {
            let mut rx =
                ring::AsyncConsumer::attach(Arc::clone(&map), i * REGION..(i + 1) * REGION)
                    .unwrap();
            let woken = Arc::clone(&woken);
            rt.spawn(async move {
                let mut buf = [0; 8];
                let n = rx.recv(&mut buf).await.unwrap();
                assert_eq!(n, Some(8));
                assert_eq!(
                    u64::from_le_bytes(buf),
                    i as u64,
                    "woke on another's message"
                );
                woken.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let t = Instant::now();
    while pending_async_waits() < RINGS {
        assert!(t.elapsed() < Duration::from_secs(120), "waits never armed");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (c0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(IDLE);
    let (cpu, wall) = (cpu_time() - c0, t0.elapsed());
    let share = cpu.as_secs_f64() / wall.as_secs_f64() * 100.0;
    let t = Instant::now();
    for (i, tx) in producers.iter_mut().enumerate() {
        tx.send(&(i as u64).to_le_bytes()).unwrap();
        tx.flush().unwrap();
    }
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    let all = t.elapsed();
    assert_eq!(woken.load(Ordering::SeqCst), RINGS);
    println!(
        "idle: {RINGS} async consumers on 2 workers: {:.3}% of a core over {:.1} s idle \
         (cpu {:?}); then each woke on its own message, all in {:?}",
        share,
        wall.as_secs_f64(),
        cpu,
        all
    );
}

const MSG: usize = 64;

fn throughput() {
    const COUNT: u64 = 2_000_000;
    let (_seg, map) = segment("tput", 1 << 20);
    let region = 0..map.len();
    let slot = ring::Geometry::slot_size_for(MSG);
    fn producer(map: &Mapping, region: std::ops::Range<usize>, slot: usize) -> ring::Producer<'_> {
        let mut tx = ring::Producer::create(map, region, slot).unwrap();
        tx.set_wait_mode(NO_SPIN);
        tx
    }
    let send_all = |mut tx: ring::Producer<'_>| {
        let mut m = [0x5au8; MSG];
        for i in 0..COUNT {
            m[..8].copy_from_slice(&i.to_le_bytes());
            tx.send(&m).unwrap();
        }
        tx.close().unwrap();
    };
    let mut rates = Vec::new();
    for round in 0..2 {
        // Sync consumer.
        let tx = producer(&map, region.clone(), slot);
        let mut rx = ring::Consumer::attach(&map, region.clone()).unwrap();
        rx.set_wait_mode(NO_SPIN);
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| send_all(tx));
            let mut buf = [0; MSG];
            let mut n = 0u64;
            while rx.recv(&mut buf).unwrap().is_some() {
                n += 1;
            }
            assert_eq!(n, COUNT);
        });
        let sync = COUNT as f64 / t.elapsed().as_secs_f64();
        // Async consumer, current-thread runtime.
        let tx = producer(&map, region.clone(), slot);
        let mut rx = ring::AsyncConsumer::attach(Arc::clone(&map), region.clone()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let t = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| send_all(tx));
            rt.block_on(async {
                let mut buf = [0; MSG];
                let mut n = 0u64;
                while rx.recv(&mut buf).await.unwrap().is_some() {
                    n += 1;
                }
                assert_eq!(n, COUNT);
            });
        });
        let asy = COUNT as f64 / t.elapsed().as_secs_f64();
        println!(
            "throughput round {round}: 64-byte messages, no spinning: sync {:.2} M msg/s, \
             async {:.2} M msg/s, async/sync {:.2}",
            sync / 1e6,
            asy / 1e6,
            asy / sync
        );
        rates.push(asy / sync);
    }
}

fn latency() {
    const SAMPLES: u64 = 5_000;
    const GAP: Duration = Duration::from_micros(200);
    let (_seg, map) = segment("lat", 1 << 20);
    let region = 0..map.len();
    let send_timed = |mut tx: ring::Producer<'_>| {
        tx.set_batch(1);
        for _ in 0..SAMPLES {
            std::thread::sleep(GAP);
            tx.send(&ring::monotonic_ns().to_le_bytes()).unwrap();
        }
        tx.close().unwrap();
    };
    let record = |h: &mut Histogram<u64>, buf: &[u8; 8]| {
        let sent = u64::from_le_bytes(*buf);
        h.record(ring::monotonic_ns().saturating_sub(sent).max(1))
            .unwrap();
    };
    // Sync blocking consumer.
    let mut sync = Histogram::<u64>::new(3).unwrap();
    {
        let tx = ring::Producer::create(&map, region.clone(), 16).unwrap();
        let mut rx = ring::Consumer::attach(&map, region.clone()).unwrap();
        rx.set_wait_mode(NO_SPIN);
        std::thread::scope(|s| {
            s.spawn(|| send_timed(tx));
            let mut buf = [0; 8];
            while rx.recv(&mut buf).unwrap().is_some() {
                record(&mut sync, &buf);
            }
        });
    }
    // Async consumer on a 2-worker runtime.
    let mut asy = Histogram::<u64>::new(3).unwrap();
    {
        let tx = ring::Producer::create(&map, region.clone(), 16).unwrap();
        let mut rx = ring::AsyncConsumer::attach(Arc::clone(&map), region.clone()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        std::thread::scope(|s| {
            s.spawn(|| send_timed(tx));
            asy = rt
                .block_on(rt.spawn(async move {
                    let mut h = Histogram::<u64>::new(3).unwrap();
                    let mut buf = [0; 8];
                    while rx.recv(&mut buf).await.unwrap().is_some() {
                        let sent = u64::from_le_bytes(buf);
                        h.record(ring::monotonic_ns().saturating_sub(sent).max(1))
                            .unwrap();
                    }
                    h
                }))
                .unwrap();
        });
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    for (q, name) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")] {
        let (s, a) = (sync.value_at_quantile(q), asy.value_at_quantile(q));
        println!(
            "wake latency {name}: sync {:.1} us, async {:.1} us, async/sync {:.2}",
            us(s),
            us(a),
            a as f64 / s as f64
        );
    }
    println!(
        "wake latency mean: sync {:.1} us, async {:.1} us, async/sync {:.2} ({SAMPLES} samples each)",
        sync.mean() / 1000.0,
        asy.mean() / 1000.0,
        asy.mean() / sync.mean()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("engine: {:?}", shmgate_host::wait::async_wait_engine());
    throughput();
    latency();
    idle_consumers();
}
