//! The ring's numbers next to what the hardware allows, all in one run:
//!
//! - throughput, 64-byte messages, two processes: the C ring
//!   (`benches/c/baselines.c`, built here with the system C compiler),
//!   the native ring (`shmgate_host::ring`, this binary re-run as the
//!   consumer) and the guest ring (two `shmgate run` processes, the
//!   example ring guests);
//! - latency, two processes, ping-pong over two rings, each message
//!   carrying its send time (`CLOCK_MONOTONIC`; guests read the same clock
//!   through WASI under `shmgate run`): the receiving end records the
//!   one-way trip (its clock minus the send time), the sender the round
//!   trip / 2, every sample into an HDR histogram (`hdrhistogram`) for
//!   p50/p99/p99.9: C spin and C futex baselines; native<->native,
//!   native<->guest (guest pong) and guest<->guest (`ring_ping`/`ring_pong`
//!   guests), each spinning (`WaitMode::SPIN`) and blocking
//!   (`WaitMode::BLOCK`, the waiting side asleep in the futex).
//!
//! The configurations take turns, round after round, so a noisy neighbour
//! hurts them alike; throughput is the median of the rounds, latency the
//! percentiles of all rounds' samples, each with its ratio to the baseline.
//! Run with `cargo bench -p shmgate-cli --bench ring`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shmgate_guest_artifacts::{RING_PING, RING_PONG};
use shmgate_host::{OwnedSegment, Segment, ring};

const SHMGATE: &str = env!("CARGO_BIN_EXE_shmgate");

#[path = "common/stream.rs"]
mod common;
#[path = "../src/latency.rs"]
mod latency;
const ROLE: &str = "SHMGATE_RING_BENCH_ROLE";
const MSG: usize = 64;
/// Messages per throughput sample.
const MESSAGES: u64 = 20_000_000;
/// Round trips per latency sample.
const ROUND_TRIPS: usize = 100_000;
const ROUNDS: usize = 5;
/// Slot size of the ping-pong rings: 16-byte messages (number, send time).
const PING_SLOT: usize = 24;
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
        .stdout(Stdio::piped())
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
    let child = spawn_role(&["consume", &name]);
    tx.wait_for_consumer(Duration::from_secs(60)).unwrap();
    let start = Instant::now();
    let mut msg = [0x5au8; MSG];
    for i in 0..MESSAGES {
        msg[0] = i.to_le_bytes()[0] | 1;
        tx.send(&msg).unwrap();
    }
    tx.close().unwrap();
    assert!(
        child.wait_with_output().unwrap().status.success(),
        "native consumer failed"
    );
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

/// Latency of one configuration: one-way (the receiver's clock minus the
/// send time in the message) and round trip / 2, in HDR histograms.
struct Latency {
    one_way: Histogram<u64>,
    half_rtt: Histogram<u64>,
}

impl Latency {
    fn new() -> Latency {
        Latency {
            one_way: latency::histogram(),
            half_rtt: latency::histogram(),
        }
    }

    /// Adds one run's samples (every run's go into one histogram).
    fn add(&mut self, one_way: &Histogram<u64>, half_rtt: &Histogram<u64>) {
        self.one_way.add(one_way).unwrap();
        self.half_rtt.add(half_rtt).unwrap();
    }

    /// Adds the two sample lines of `ping`'s and `pong`'s output.
    fn add_printed(&mut self, what: &str, pong: &str, ping: &str) {
        let one_way = latency::parse(pong, "one-way")
            .unwrap_or_else(|| panic!("{what}: no one-way samples in {pong:.200?}"));
        let half_rtt = latency::parse(ping, "half-rtt")
            .unwrap_or_else(|| panic!("{what}: no round-trip samples in {ping:.200?}"));
        self.add(&one_way, &half_rtt);
    }
}

/// A ping message: its number, then its send time.
fn ping_message(i: u64, sent: u64) -> [u8; 16] {
    let mut msg = [0; 16];
    msg[..8].copy_from_slice(&i.to_le_bytes());
    msg[8..].copy_from_slice(&sent.to_le_bytes());
    msg
}

/// Ping-pong from this process over two rings (A: us to the other end,
/// B: back), each message published at once, against a native pong (this
/// binary re-run) or a guest pong (`shmgate run` of the `ring_pong`
/// guest). Each message carries its send time; the pong end times the
/// one-way trip, we time the round trip. Untimed (`lat` is `None`), the
/// messages carry only their number, so the pong end reads no clock: the
/// round trip of the rings alone, which shows what the pong end's clock
/// read costs (a WASI call in a guest).
fn native_pingpong(mode: &str, guest_pong: bool, lat: Option<&mut Latency>) -> Histogram<u64> {
    let ns = format!("{}.", unique("ping"));
    let name = format!("{ns}ping");
    let seg: OwnedSegment = shmgate_host::OpenOptions::new()
        .size(128 << 10)
        .open_owned(&name)
        .unwrap();
    let map = seg.map().unwrap();
    let mut tx = ring::Producer::create(&map, 0..64 << 10, PING_SLOT).unwrap();
    let child = if guest_pong {
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
            .stdout(Stdio::piped())
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
    let mut half_rtt = latency::histogram();
    let mut buf = [0; 20];
    for i in 0..ROUND_TRIPS as u64 {
        let t0 = ring::monotonic_ns();
        let msg = ping_message(i, t0);
        let len = if lat.is_some() { 16 } else { 8 };
        tx.send(&msg[..len]).unwrap();
        let n = rx.recv(&mut buf).unwrap();
        let rtt = ring::monotonic_ns() - t0;
        assert_eq!((n, &buf[..len]), (Some(len), &msg[..len]));
        latency::record(&mut half_rtt, rtt / 2);
    }
    tx.close().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pong failed");
    let pong = String::from_utf8_lossy(&out.stdout);
    if let Some(lat) = lat {
        let one_way = latency::parse(&pong, "one-way").expect("one-way samples from the pong end");
        lat.add(&one_way, &half_rtt);
    }
    half_rtt
}

/// Guest ping to guest pong, two `shmgate run` processes; the ping guest
/// times round trips, the pong guest one-way trips, each with its own
/// clock (the host's `CLOCK_MONOTONIC`).
fn guest_pingpong(mode: &str, lat: &mut Latency) {
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
        .stdout(Stdio::piped())
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
    lat.add_printed(
        "guest ping-pong",
        &String::from_utf8_lossy(&ponged.stdout),
        &String::from_utf8_lossy(&ping.stdout),
    );
}

fn wait_mode(mode: &str) -> ring::WaitMode {
    match mode {
        "spin" => ring::WaitMode::SPIN,
        _ => ring::WaitMode::BLOCK,
    }
}

/// The native pong end: echoes ring A to ring B, timing the one-way trip
/// of each message (its clock read before echoing, as the C baseline's
/// and the guest's pong ends do), and prints the samples.
fn pong(name: &str, mode: &str) {
    let (_seg, map) = open_map(name);
    let mut rx = ring::Consumer::attach(&map, 0..64 << 10).unwrap();
    let mut tx = ring::Producer::create(&map, 64 << 10..128 << 10, PING_SLOT).unwrap();
    let wait = wait_mode(mode);
    tx.set_batch(1);
    tx.set_wait_mode(wait);
    rx.set_wait_mode(wait);
    let mut buf = [0; 20];
    let mut one_way = Vec::with_capacity(ROUND_TRIPS);
    while let Some(n) = rx.recv(&mut buf).unwrap() {
        if n == 16 {
            let now = ring::monotonic_ns();
            let sent = u64::from_le_bytes(buf[8..16].try_into().unwrap());
            one_way.push(now.saturating_sub(sent));
        }
        tx.send(&buf[..n]).unwrap();
    }
    let all: Vec<String> = one_way.iter().map(u64::to_string).collect();
    println!("samples one-way: {}", all.join(" "));
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
    let mut lat: [Latency; 8] = std::array::from_fn(|_| Latency::new());
    // Spinning, the pong end reading no clock: native pong, guest pong.
    let mut untimed = [latency::histogram(), latency::histogram()];
    for round in 0..rounds {
        c_ring.push(c_run(&c, "ring", MESSAGES).parse::<f64>().unwrap());
        native.push(native_throughput());
        guest.push(guest_throughput());
        for (i, what) in ["spin", "futex"].into_iter().enumerate() {
            let out = c_run(&c, what, ROUND_TRIPS as u64);
            lat[i].add_printed(what, &out, &out);
        }
        for (i, mode) in ["spin", "block"].into_iter().enumerate() {
            native_pingpong(mode, false, Some(&mut lat[2 + i]));
            native_pingpong(mode, true, Some(&mut lat[4 + i]));
            guest_pingpong(mode, &mut lat[6 + i]);
        }
        for (i, guest_pong) in [false, true].into_iter().enumerate() {
            untimed[i]
                .add(native_pingpong("spin", guest_pong, None))
                .unwrap();
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
    println!(
        "\nlatency, ns, two processes, {rounds} runs of {ROUND_TRIPS} round trips in one HDR histogram each:"
    );
    println!(
        "  {:<28} {:>8} {:>8} {:>9}   {:>8} {:>8} {:>9}",
        "", "one-way", "", "", "rtt / 2", "", ""
    );
    println!(
        "  {:<28} {:>8} {:>8} {:>9}   {:>8} {:>8} {:>9}",
        "", "p50", "p99", "p99.9", "p50", "p99", "p99.9"
    );
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
    let mut p = [([0u64; 3], [0u64; 3]); 8];
    for (i, label) in labels.iter().enumerate() {
        p[i] = (
            latency::percentiles(&lat[i].one_way),
            latency::percentiles(&lat[i].half_rtt),
        );
        let ([a, b, c], [d, e, f]) = p[i];
        println!("  {label:<28} {a:>8} {b:>8} {c:>9}   {d:>8} {e:>8} {f:>9}");
    }
    let ratio = |i: usize, base: usize, k: usize| {
        let pick = |x: ([u64; 3], [u64; 3])| if k == 0 { x.0 } else { x.1 };
        let (v, b) = (pick(p[i]), pick(p[base]));
        format!(
            "p50 {:.2}x p99 {:.2}x p99.9 {:.2}x",
            v[0] as f64 / b[0] as f64,
            v[1] as f64 / b[1] as f64,
            v[2] as f64 / b[2] as f64
        )
    };
    for (label, h) in [
        ("native<->native, untimed", &untimed[0]),
        ("native<->guest, untimed", &untimed[1]),
    ] {
        let [d, e, f] = latency::percentiles(h);
        println!(
            "  {label:<28} {:>8} {:>8} {:>9}   {d:>8} {e:>8} {f:>9}",
            "-", "-", "-"
        );
    }
    println!(
        "  (untimed: spinning, 8-byte messages, so the pong end reads no clock; \
         guest pong rtt/2 p50 {:.2}x the C spin's)",
        latency::percentiles(&untimed[1])[0] as f64 / p[0].1[0] as f64
    );
    for (i, pair) in ["native<->native", "native<->guest", "guest<->guest"]
        .into_iter()
        .enumerate()
    {
        let (spin, block) = (2 + 2 * i, 3 + 2 * i);
        println!(
            "  {pair}: spinning vs C spin: one-way {}, rtt/2 {}",
            ratio(spin, 0, 0),
            ratio(spin, 0, 1)
        );
        println!(
            "  {pair}: blocking vs C futex: one-way {}, rtt/2 {}",
            ratio(block, 1, 0),
            ratio(block, 1, 1)
        );
    }
}
