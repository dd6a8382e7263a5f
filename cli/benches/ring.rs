//! The ring's numbers next to what the hardware allows, all in one run:
//!
//! - throughput, 64-byte messages, two processes: the C ring
//!   (`benches/c/baselines.c`, built here with the system C compiler),
//!   the native ring (`shmgate_host::ring`, this binary re-run as the
//!   consumer) and the guest ring (two `shmgate run` processes, the
//!   example ring guests);
//! - latency, two processes, ping-pong (one-way = round trip / 2), every
//!   sample kept and sorted for p50/p99/p99.9: C spin and C futex
//!   baselines; native<->native, native<->guest (guest pong) and
//!   guest<->guest (`ring_ping`/`ring_pong` guests, the ping guest timing
//!   with its own clock), each spinning (`WaitMode::SPIN`) and blocking
//!   (`WaitMode::BLOCK`).
//!
//! The configurations take turns, round after round, so a noisy neighbour
//! hurts them alike; medians are reported with their ratio to the baseline.
//! Run with `cargo bench -p shmgate-cli --bench ring`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmgate_guest_artifacts::{RING_PING, RING_PONG};
use shmgate_host::{OwnedSegment, Segment, ring};

const SHMGATE: &str = env!("CARGO_BIN_EXE_shmgate");

#[path = "common/stream.rs"]
mod common;
const ROLE: &str = "SHMGATE_RING_BENCH_ROLE";
const MSG: usize = 64;
/// Messages per throughput sample.
const MESSAGES: u64 = 20_000_000;
/// Round trips per latency sample.
const ROUND_TRIPS: usize = 100_000;
const ROUNDS: usize = 5;
/// The throughput ring: 4096 slots, as the C ring.
const RING_LEN: usize = ring::HEADER + 4096 * 72;

fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("shmgate-bench-ring-{}-{n}-{tag}", std::process::id())
}

/// Builds the C baselines with `$CC` (default `cc`) `-O2`.
fn build_c() -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ring-baselines");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/c/baselines.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(&cc)
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(status.success(), "{cc} failed on {}", src.display());
    out
}

fn c_run(bin: &PathBuf, what: &str, n: u64) -> String {
    let out = Command::new(bin)
        .args([what, &n.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "baselines {what} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Re-runs this binary as the other end.
fn spawn_role(args: &[&str]) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE, args.join(" "))
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn open_map(name: &str) -> (Segment, shmgate_host::Mapping) {
    let seg = Segment::open_read_write(name).unwrap();
    let map = seg.map().unwrap();
    (seg, map)
}

/// Native throughput: we produce, a child process consumes; msg/s from
/// the consumer's attach to its exit.
fn native_throughput() -> f64 {
    let name = unique("tput");
    let seg = shmgate_host::OpenOptions::new()
        .size(512 << 10)
        .open_owned(&name)
        .unwrap();
    let map = seg.map().unwrap();
    let mut tx = ring::Producer::create(&map, 0..RING_LEN, 72).unwrap();
    let mut child = spawn_role(&["consume", &name]);
    tx.wait_for_consumer(Duration::from_secs(60)).unwrap();
    let start = Instant::now();
    let mut msg = [0x5au8; MSG];
    for i in 0..MESSAGES {
        msg[0] = i.to_le_bytes()[0] | 1;
        tx.send(&msg).unwrap();
    }
    tx.close().unwrap();
    assert!(child.wait().unwrap().success(), "native consumer failed");
    MESSAGES as f64 / start.elapsed().as_secs_f64()
}

fn consume(name: &str) {
    let (_seg, map) = open_map(name);
    let mut rx = ring::Consumer::attach(&map, 0..RING_LEN).unwrap();
    let mut buf = [0; MSG];
    let (mut n, mut sum) = (0u64, 0u64);
    while let Some(len) = rx.recv(&mut buf).unwrap() {
        assert_eq!(len, MSG);
        sum += u64::from(buf[0]);
        n += 1;
    }
    assert!(n == MESSAGES && sum >= n, "lost messages");
}

/// Guest throughput: the consumer guest's own msg/s (first message to
/// end).
fn guest_throughput() -> f64 {
    let ns = format!("{}.", unique("guest"));
    let report = common::stream(&ns, MESSAGES * MSG as u64, MSG as u64, "window");
    report
        .split("MiB/s, ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {report:?}"))
}

/// Ping-pong from this process over two rings (A: us to the other end,
/// B: back), each message published at once, against a native pong (this
/// binary re-run) or a guest pong (`shmgate run` of the `ring_pong`
/// guest); one-way nanoseconds, sorted.
fn native_pingpong(mode: &str, guest_pong: bool) -> Vec<u64> {
    let ns = format!("{}.", unique("ping"));
    let name = format!("{ns}ping");
    let seg: OwnedSegment = shmgate_host::OpenOptions::new()
        .size(128 << 10)
        .open_owned(&name)
        .unwrap();
    let map = seg.map().unwrap();
    let mut tx = ring::Producer::create(&map, 0..64 << 10, 16).unwrap();
    let mut child = if guest_pong {
        Command::new(SHMGATE)
            .arg("run")
            .args([
                "--namespace",
                &ns,
                "--max-size",
                "1MiB",
                "--max-mapped",
                "1MiB",
            ])
            .args([RING_PONG, "--", "ping", mode, "120"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    } else {
        spawn_role(&["pong", &name, mode])
    };
    tx.wait_for_consumer(Duration::from_secs(120)).unwrap();
    let mut rx = loop {
        if let Ok(rx) = ring::Consumer::attach(&map, 64 << 10..128 << 10) {
            break rx;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let wait = wait_mode(mode);
    tx.set_batch(1);
    tx.set_wait_mode(wait);
    rx.set_wait_mode(wait);
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    let mut buf = [0; 12];
    for i in 0..ROUND_TRIPS as u64 {
        let t0 = Instant::now();
        tx.send(&i.to_le_bytes()).unwrap();
        let n = rx.recv(&mut buf).unwrap();
        let rtt = t0.elapsed();
        assert_eq!((n, &buf[..8]), (Some(8), &i.to_le_bytes()[..]));
        samples.push(u64::try_from(rtt.as_nanos() / 2).unwrap_or(u64::MAX));
    }
    tx.close().unwrap();
    assert!(child.wait().unwrap().success(), "pong failed");
    samples.sort_unstable();
    samples
}

/// Guest ping to guest pong, two `shmgate run` processes; the ping guest
/// measures with its own clock and prints the percentiles.
fn guest_pingpong(mode: &str) -> [u64; 3] {
    let ns = format!("{}.", unique("gping"));
    let grant = [
        "--namespace",
        &ns,
        "--max-size",
        "1MiB",
        "--max-mapped",
        "1MiB",
    ];
    let pong = Command::new(SHMGATE)
        .arg("run")
        .args(grant)
        .args([RING_PONG, "--", "ping", mode, "120"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let ping = Command::new(SHMGATE)
        .arg("run")
        .args(grant)
        .arg("--allow-create")
        .args([RING_PING, "--", "ping", &ROUND_TRIPS.to_string(), mode])
        .output()
        .unwrap();
    let ponged = pong.wait_with_output().unwrap();
    let _ = shmgate_host::unlink(format!("{ns}ping"));
    assert!(
        ping.status.success() && ponged.status.success(),
        "guest ping-pong failed"
    );
    let out = String::from_utf8_lossy(&ping.stdout);
    let words: Vec<&str> = out.split_whitespace().collect();
    let num = |label: &str| -> u64 {
        let i = words.iter().position(|w| *w == label).unwrap();
        words[i + 1].parse().unwrap()
    };
    [num("p50"), num("p99"), num("p99.9")]
}

fn wait_mode(mode: &str) -> ring::WaitMode {
    match mode {
        "spin" => ring::WaitMode::SPIN,
        _ => ring::WaitMode::BLOCK,
    }
}

fn pong(name: &str, mode: &str) {
    let (_seg, map) = open_map(name);
    let mut rx = ring::Consumer::attach(&map, 0..64 << 10).unwrap();
    let mut tx = ring::Producer::create(&map, 64 << 10..128 << 10, 16).unwrap();
    let wait = wait_mode(mode);
    tx.set_batch(1);
    tx.set_wait_mode(wait);
    rx.set_wait_mode(wait);
    let mut buf = [0; 12];
    while let Some(n) = rx.recv(&mut buf).unwrap() {
        tx.send(&buf[..n]).unwrap();
    }
}

fn percentiles(sorted: &[u64]) -> [u64; 3] {
    // Per mille, so the index stays in integers.
    let at = |q: usize| sorted[(sorted.len() * q / 1000).min(sorted.len() - 1)];
    [at(500), at(990), at(999)]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let args: Vec<&str> = role.split(' ').collect();
        match args[..] {
            ["consume", name] => consume(name),
            ["pong", name, mode] => pong(name, mode),
            _ => panic!("unknown role {role:?}"),
        }
        return;
    }
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` run
    // passes nothing: then one short round only checks that all runs.
    let full = std::env::args().any(|a| a == "--bench");
    let rounds = if full { ROUNDS } else { 1 };
    let c = build_c();
    let (mut c_ring, mut native, mut guest) = (Vec::new(), Vec::new(), Vec::new());
    let mut lat: [Vec<[u64; 3]>; 8] = Default::default();
    for round in 0..rounds {
        c_ring.push(c_run(&c, "ring", MESSAGES).parse::<f64>().unwrap());
        native.push(native_throughput());
        guest.push(guest_throughput());
        for (i, what) in ["spin", "futex"].into_iter().enumerate() {
            let line = c_run(&c, what, ROUND_TRIPS as u64);
            let p: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            lat[i].push([p[0], p[1], p[2]]);
        }
        for (i, mode) in ["spin", "block"].into_iter().enumerate() {
            lat[2 + i].push(percentiles(&native_pingpong(mode, false)));
            lat[4 + i].push(percentiles(&native_pingpong(mode, true)));
            lat[6 + i].push(guest_pingpong(mode));
        }
        eprintln!(
            "round {round}: C ring {:.1} M/s, native {:.1} M/s, guest {:.1} M/s",
            c_ring[round] / 1e6,
            native[round] / 1e6,
            guest[round] / 1e6
        );
    }
    let c_med = median(&mut c_ring);
    println!("\nthroughput, 64-byte messages, two processes (median of {rounds}):");
    println!(
        "  {:<28} {:>10.1} M msg/s",
        "C ring (baseline)",
        c_med / 1e6
    );
    for (label, v) in [("native ring", &mut native), ("guest ring", &mut guest)] {
        let m = median(v);
        println!(
            "  {label:<28} {:>10.1} M msg/s  {:.2}x the C ring",
            m / 1e6,
            m / c_med
        );
    }
    println!("\nlatency, one-way ns (ping-pong / 2), medians of {rounds} runs of {ROUND_TRIPS}:");
    println!("  {:<28} {:>7} {:>7} {:>8}", "", "p50", "p99", "p99.9");
    let labels = [
        "C spin (baseline)",
        "C futex (baseline)",
        "native<->native, spinning",
        "native<->native, blocking",
        "native<->guest, spinning",
        "native<->guest, blocking",
        "guest<->guest, spinning",
        "guest<->guest, blocking",
    ];
    let mut p50 = [0f64; 8];
    for (i, label) in labels.iter().enumerate() {
        let col = |k: usize| {
            let mut v: Vec<f64> = lat[i].iter().map(|p| p[k] as f64).collect();
            median(&mut v)
        };
        p50[i] = col(0);
        println!(
            "  {label:<28} {:>7.0} {:>7.0} {:>8.0}",
            col(0),
            col(1),
            col(2)
        );
    }
    for (i, pair) in ["native<->native", "native<->guest", "guest<->guest"]
        .into_iter()
        .enumerate()
    {
        println!(
            "  {pair}: spinning p50 {:.2}x the C spin baseline, blocking p50 {:.2}x the C futex baseline",
            p50[2 + 2 * i] / p50[0],
            p50[3 + 2 * i] / p50[1]
        );
    }
}
