//! The ring's numbers next to what the hardware allows and next to the
//! field's best, all in one run:
//!
//! - throughput, 64-byte messages, two processes: the C ring
//!   (`benches/c/baselines.c`, built here with the system C compiler),
//!   the native ring (`shmgate_host::ring`, this binary re-run as the
//!   consumer), the guest ring (two `shmgate run` processes, the example
//!   ring guests) and iceoryx2's publish-subscribe (`peers/iceoryx2.rs`);
//! - latency, two processes, ping-pong of 16- and 64-byte messages, each
//!   carrying its send time (`CLOCK_MONOTONIC`; guests read the same clock
//!   under `shmgate run`): the receiving end records the one-way trip
//!   (its clock minus the send time), the sender the round trip / 2, every
//!   sample into an HDR histogram (`hdrhistogram`) for p50/p99/p99.9 and
//!   the mean: native<->native, native<->guest (guest pong),
//!   guest<->guest and iceoryx2, spinning; native and guest blocking
//!   (`WaitMode::BLOCK`, the waiting side asleep in the futex).
//!
//! Like with like: each latency configuration's baseline is the C
//! ping-pong moving the same message size through the same kind of layout
//! (`baselines ringpp`: two SPSC rings laid out as shmgate's, a copy in and
//! out per message); the blocking ones have the C futex ping-pong. The C
//! spin over one shared word is shown as the floor.
//!
//! Pairs: this VM switches every few seconds between a fast and a slow
//! mode (rings drop 3-4x; a peer's latency can triple while a C spin
//! barely moves). So every peer run sits between two C runs of its
//! baseline, right before and after it, and ratios are taken within a
//! pair. Each C run also measures a short C ring throughput probe: a pair
//! is *fast* when both its probes reach half the run's best probe, *slow*
//! otherwise. Summaries use the fast pairs (all pairs if none was fast,
//! and say so); the per-pair ratios are listed with their mode.
//!
//! `SHMGATE_RING_ROUNDS=N` sets the number of rounds (5).
//! `SHMGATE_RING_PLOT=FILE.svg` also draws the one-way latency percentile
//! spectrum (log scale of 1/(1-q)): each shmgate line with its C baseline
//! and iceoryx2 beside it.
//!
//! Run with `cargo bench -p shmgate-cli --bench ring`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shmgate_guest_artifacts::{RING_PING, RING_PONG};
use shmgate_host::{OwnedSegment, Segment, ring};

/// The `shmgate` executable: `$SHMGATE_BIN` if set (a copy taken right
/// after the build, where a shared target directory may be rebuilt under
/// the bench), else the one cargo built.
fn shmgate() -> String {
    std::env::var("SHMGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shmgate").to_owned())
}

#[path = "common/stream.rs"]
mod common;
#[path = "peers/iceoryx2.rs"]
mod iceoryx2_peer;
#[path = "../src/latency.rs"]
mod latency;
const ROLE: &str = "SHMGATE_RING_BENCH_ROLE";
const MSG: usize = 64;
/// Messages per throughput sample.
const MESSAGES: u64 = 20_000_000;
/// Messages of the C ring probe that tells the machine's mode.
const PROBE: u64 = 2_000_000;
/// Round trips per latency sample.
const ROUND_TRIPS: usize = 100_000;
const ROUNDS: usize = 5;
/// Slot size of the ping-pong rings: messages of up to 64 bytes.
const PING_SLOT: usize = ring::Geometry::slot_size_for(64);
/// The throughput ring: 4096 slots, as the C ring.
const RING_LEN: usize = ring::HEADER + 4096 * ring::Geometry::slot_size_for(MSG);

/// One-way and round trip / 2 samples of one run.
type Lat = (Histogram<u64>, Histogram<u64>);

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

fn c_run(bin: &PathBuf, what: &str, n: u64, size: Option<usize>) -> String {
    let out = Command::new(bin)
        .args([what, &n.to_string()])
        .args(size.map(|s| s.to_string()))
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
fn native_throughput(messages: u64) -> f64 {
    let name = unique("tput");
    let seg = shmgate_host::OpenOptions::new()
        .size(512 << 10)
        .open_owned(&name)
        .unwrap();
    let map = seg.map().unwrap();
    let mut tx = ring::Producer::create(&map, 0..RING_LEN, 72).unwrap();
    let child = spawn_role(&["consume", &name, &messages.to_string()]);
    tx.wait_for_consumer(Duration::from_secs(60)).unwrap();
    let start = Instant::now();
    let mut msg = [0x5au8; MSG];
    for i in 0..messages {
        msg[0] = i.to_le_bytes()[0] | 1;
        tx.send(&msg).unwrap();
    }
    tx.close().unwrap();
    assert!(
        child.wait_with_output().unwrap().status.success(),
        "native consumer failed"
    );
    messages as f64 / start.elapsed().as_secs_f64()
}

fn consume(name: &str, messages: u64) {
    let (_seg, map) = open_map(name);
    let mut rx = ring::Consumer::attach(&map, 0..RING_LEN).unwrap();
    let mut buf = [0; MSG];
    let (mut n, mut sum) = (0u64, 0u64);
    while let Some(len) = rx.recv(&mut buf).unwrap() {
        assert_eq!(len, MSG);
        sum += u64::from(buf[0]);
        n += 1;
    }
    assert!(n == messages && sum >= n, "lost messages");
}

/// Guest throughput: the consumer guest's own msg/s (first message to
/// end).
fn guest_throughput(messages: u64) -> f64 {
    let ns = format!("{}.", unique("guest"));
    let report = common::stream(&ns, messages * MSG as u64, MSG as u64, "window");
    report
        .split("MiB/s, ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {report:?}"))
}

/// Ping-pong of `size`-byte messages (16 to 64) from this process over
/// two rings (A: us to the other end, B: back), each message published at
/// once, against a native pong (this binary re-run) or a guest pong
/// (`shmgate run` of the `ring_pong` guest). Each message carries its
/// number and send time; the pong end times the one-way trip, we time the
/// round trip. Returns (one-way, round trip / 2).
fn native_pingpong(mode: &str, guest_pong: bool, size: usize, round_trips: usize) -> Lat {
    let ns = format!("{}.", unique("ping"));
    let name = format!("{ns}ping");
    let seg: OwnedSegment = shmgate_host::OpenOptions::new()
        .size(128 << 10)
        .open_owned(&name)
        .unwrap();
    let map = seg.map().unwrap();
    let mut tx = ring::Producer::create(&map, 0..64 << 10, PING_SLOT).unwrap();
    let child = if guest_pong {
        Command::new(shmgate())
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
    let mut msg = [0x5au8; 64];
    let mut buf = [0; 64];
    for i in 0..round_trips as u64 {
        let t0 = ring::monotonic_ns();
        msg[..8].copy_from_slice(&i.to_le_bytes());
        msg[8..16].copy_from_slice(&t0.to_le_bytes());
        tx.send(&msg[..size]).unwrap();
        let n = rx.recv(&mut buf).unwrap();
        let rtt = ring::monotonic_ns() - t0;
        assert_eq!((n, &buf[..size]), (Some(size), &msg[..size]));
        latency::record(&mut half_rtt, rtt / 2);
    }
    tx.close().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "pong failed");
    let pong = String::from_utf8_lossy(&out.stdout);
    let one_way = latency::parse(&pong, "one-way").expect("one-way samples from the pong end");
    (one_way, half_rtt)
}

/// Guest ping to guest pong, two `shmgate run` processes, `size`-byte
/// messages; the ping guest times round trips, the pong guest one-way
/// trips, each with its own clock (the host's `CLOCK_MONOTONIC`).
fn guest_pingpong(mode: &str, size: usize, round_trips: usize) -> Lat {
    let ns = format!("{}.", unique("gping"));
    let grant = [
        "--namespace",
        &ns,
        "--max-size",
        "1MiB",
        "--max-mapped",
        "1MiB",
    ];
    let pong = Command::new(shmgate())
        .arg("run")
        .args(grant)
        .args([RING_PONG, "--", "ping", mode, "120"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ping = Command::new(shmgate())
        .arg("run")
        .args(grant)
        .arg("--allow-create")
        .args([RING_PING, "--", "ping", &round_trips.to_string(), mode])
        .arg(size.to_string())
        .output()
        .unwrap();
    let ponged = pong.wait_with_output().unwrap();
    let _ = shmgate_host::unlink(format!("{ns}ping"));
    assert!(
        ping.status.success() && ponged.status.success(),
        "guest ping-pong failed"
    );
    printed("guest ping-pong", &ponged.stdout, &ping.stdout)
}

/// The one-way samples `pong` printed and the round-trip samples `ping`
/// printed.
fn printed(what: &str, pong: &[u8], ping: &[u8]) -> Lat {
    let (pong, ping) = (String::from_utf8_lossy(pong), String::from_utf8_lossy(ping));
    let one_way = latency::parse(&pong, "one-way")
        .unwrap_or_else(|| panic!("{what}: no one-way samples in {pong:.200?}"));
    let half_rtt = latency::parse(&ping, "half-rtt")
        .unwrap_or_else(|| panic!("{what}: no round-trip samples in {ping:.200?}"));
    (one_way, half_rtt)
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
    let mut buf = [0; 64];
    let mut one_way = Vec::with_capacity(ROUND_TRIPS);
    while let Some(n) = rx.recv(&mut buf).unwrap() {
        if n >= 16 {
            let now = ring::monotonic_ns();
            let sent = u64::from_le_bytes(buf[8..16].try_into().unwrap());
            one_way.push(now.saturating_sub(sent));
        }
        tx.send(&buf[..n]).unwrap();
    }
    let all: Vec<String> = one_way.iter().map(u64::to_string).collect();
    println!("samples one-way: {}", all.join(" "));
}

/// What a peer configuration is measured against.
#[derive(Clone, Copy)]
enum Baseline {
    /// The C ring, 64-byte messages.
    Ring,
    /// The C ping-pong over two rings laid out as shmgate's, this size.
    RingPingPong(usize),
    /// The C futex ping-pong (one word).
    Futex,
}

impl Baseline {
    fn label(self) -> String {
        match self {
            Baseline::Ring => "C ring, 64 B".to_owned(),
            Baseline::RingPingPong(size) => format!("C ring ping-pong, {size} B, spinning"),
            Baseline::Futex => "C futex ping-pong".to_owned(),
        }
    }
}

/// A configuration under test.
#[derive(Clone, Copy)]
enum Peer {
    NativeTput,
    GuestTput,
    IceTput,
    /// (mode, size)
    Native(&'static str, usize),
    /// Native ping, guest pong, spinning.
    NativeGuest(usize),
    Guest(&'static str, usize),
    Ice(usize),
}

/// One measurement: a rate or latency samples.
enum Measure {
    Rate(f64),
    Lat(Lat),
}

impl Measure {
    fn rate(&self) -> f64 {
        match self {
            Measure::Rate(r) => *r,
            Measure::Lat(_) => unreachable!("a rate was measured"),
        }
    }
    fn lat(&self) -> &Lat {
        match self {
            Measure::Lat(l) => l,
            Measure::Rate(_) => unreachable!("latency was measured"),
        }
    }
}

/// A C run beside a peer run: the machine's mode probe and the baseline.
struct CSide {
    probe: f64,
    base: Measure,
}

/// A peer run between two C runs.
struct Pair {
    before: CSide,
    peer: Result<Measure, String>,
    after: CSide,
}

/// The sizes of one run of the bench.
struct Sizes {
    messages: u64,
    round_trips: usize,
}

fn c_side(c: &PathBuf, base: Baseline, sz: &Sizes) -> CSide {
    let probe_run = |n| c_run(c, "ring", n, None).parse::<f64>().unwrap();
    let lat = |out: String| Measure::Lat(printed("C", out.as_bytes(), out.as_bytes()));
    let n = sz.round_trips as u64;
    match base {
        // The full C ring run is its own probe.
        Baseline::Ring => {
            let r = probe_run(sz.messages);
            CSide {
                probe: r,
                base: Measure::Rate(r),
            }
        }
        Baseline::RingPingPong(size) => CSide {
            probe: probe_run(PROBE.min(sz.messages)),
            base: lat(c_run(c, "ringpp", n, Some(size))),
        },
        Baseline::Futex => CSide {
            probe: probe_run(PROBE.min(sz.messages)),
            base: lat(c_run(c, "futex", n, None)),
        },
    }
}

fn run_peer(peer: Peer, sz: &Sizes) -> Result<Measure, String> {
    let spawn = |args: &[&str]| spawn_role(args);
    let n = sz.round_trips;
    Ok(match peer {
        Peer::NativeTput => Measure::Rate(native_throughput(sz.messages)),
        Peer::GuestTput => Measure::Rate(guest_throughput(sz.messages)),
        Peer::IceTput => Measure::Rate(iceoryx2_peer::throughput::<MSG>(&spawn, sz.messages)?),
        Peer::Native(mode, size) => Measure::Lat(native_pingpong(mode, false, size, n)),
        Peer::NativeGuest(size) => Measure::Lat(native_pingpong("spin", true, size, n)),
        Peer::Guest(mode, size) => Measure::Lat(guest_pingpong(mode, size, n)),
        Peer::Ice(16) => Measure::Lat(iceoryx2_peer::pingpong::<16>(&spawn, n)?),
        Peer::Ice(_) => Measure::Lat(iceoryx2_peer::pingpong::<64>(&spawn, n)?),
    })
}

/// A configuration, its baseline, and its pairs so far.
struct Config {
    label: &'static str,
    peer: Peer,
    base: Baseline,
    pairs: Vec<Pair>,
}

fn config(label: &'static str, peer: Peer, base: Baseline) -> Config {
    Config {
        label,
        peer,
        base,
        pairs: Vec::new(),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The pairs a summary uses: the fast ones, or all if none was fast.
fn chosen<'a>(pairs: &'a [Pair], fast: &dyn Fn(&Pair) -> bool) -> (Vec<&'a Pair>, &'static str) {
    let ok: Vec<&Pair> = pairs.iter().filter(|p| p.peer.is_ok()).collect();
    let f: Vec<&Pair> = ok.iter().copied().filter(|p| fast(p)).collect();
    if f.is_empty() {
        (ok, "no fast pair: slow mode")
    } else {
        (f, "fast pairs")
    }
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        let args: Vec<&str> = role.split(' ').collect();
        if let Some(result) = iceoryx2_peer::role(&args) {
            if let Err(e) = result {
                eprintln!("{e}");
                std::process::exit(1);
            }
            return;
        }
        match args[..] {
            ["consume", name, n] => consume(name, n.parse().unwrap()),
            ["pong", name, mode] => pong(name, mode),
            _ => panic!("unknown role {role:?}"),
        }
        return;
    }
    // `cargo bench` passes `--bench`; a plain `cargo test --benches` run
    // passes nothing: then one short round only checks that all runs.
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, sz) = if full {
        (
            std::env::var("SHMGATE_RING_ROUNDS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(ROUNDS),
            Sizes {
                messages: MESSAGES,
                round_trips: ROUND_TRIPS,
            },
        )
    } else {
        (
            1,
            Sizes {
                messages: 1_000_000,
                round_trips: 5_000,
            },
        )
    };
    let c = build_c();
    let pp = Baseline::RingPingPong;
    let mut configs = [
        config("native ring", Peer::NativeTput, Baseline::Ring),
        config("guest ring", Peer::GuestTput, Baseline::Ring),
        config("iceoryx2 pub-sub", Peer::IceTput, Baseline::Ring),
        config("native<->native, 16 B", Peer::Native("spin", 16), pp(16)),
        config("native<->native, 64 B", Peer::Native("spin", 64), pp(64)),
        config("native<->guest, 64 B", Peer::NativeGuest(64), pp(64)),
        config("guest<->guest, 16 B", Peer::Guest("spin", 16), pp(16)),
        config("guest<->guest, 64 B", Peer::Guest("spin", 64), pp(64)),
        config("iceoryx2, 16 B", Peer::Ice(16), pp(16)),
        config("iceoryx2, 64 B", Peer::Ice(64), pp(64)),
        config(
            "native<->native, blocking",
            Peer::Native("block", 16),
            Baseline::Futex,
        ),
        config(
            "guest<->guest, blocking",
            Peer::Guest("block", 16),
            Baseline::Futex,
        ),
    ];
    // The floor: one word in one cache line, no ring (unpaired).
    let mut floor = (latency::histogram(), latency::histogram());
    for round in 0..rounds {
        for cfg in &mut configs {
            let before = c_side(&c, cfg.base, &sz);
            let peer = run_peer(cfg.peer, &sz);
            let after = c_side(&c, cfg.base, &sz);
            if let Err(e) = &peer {
                eprintln!("round {round}: {}: did not run: {e}", cfg.label);
            }
            cfg.pairs.push(Pair {
                before,
                peer,
                after,
            });
        }
        let out = c_run(&c, "spin", sz.round_trips as u64, None);
        let (o, h) = printed("C spin", out.as_bytes(), out.as_bytes());
        floor.0.add(o).unwrap();
        floor.1.add(h).unwrap();
        eprintln!("round {round} done");
    }
    report(&configs, &floor, rounds, &sz);
}

/// Prints the summary (and draws the plot if asked).
fn report(configs: &[Config], floor: &Lat, rounds: usize, sz: &Sizes) {
    let best = configs
        .iter()
        .flat_map(|c| &c.pairs)
        .flat_map(|p| [p.before.probe, p.after.probe])
        .fold(0f64, f64::max);
    let fast = |p: &Pair| p.before.probe.min(p.after.probe) >= best / 2.0;
    let mode = |p: &Pair| if fast(p) { 'F' } else { 'S' };
    let (nfast, nall) = configs
        .iter()
        .flat_map(|c| &c.pairs)
        .fold((0, 0), |(f, a), p| (f + usize::from(fast(p)), a + 1));
    println!(
        "\nmachine mode: every peer run sits between two C runs of its baseline (a pair); \
         each C run also measures a C ring probe; a pair is fast (F) when both probes reach \
         half the run's best ({:.1} M msg/s), slow (S) otherwise: {nfast} of {nall} pairs fast",
        best / 1e6
    );
    println!(
        "\nthroughput, {MSG}-byte messages, two processes, {rounds} pairs each; \
         ratio = peer / mean of its pair's two C ring runs:"
    );
    for cfg in configs.iter().filter(|c| matches!(c.base, Baseline::Ring)) {
        if cfg.pairs.iter().all(|p| p.peer.is_err()) {
            let why = cfg
                .pairs
                .iter()
                .find_map(|p| p.peer.as_ref().err())
                .unwrap();
            println!("  {:<28} did not run here: {why}", cfg.label);
            continue;
        }
        let (pairs, which) = chosen(&cfg.pairs, &fast);
        let ratio = |p: &Pair| {
            let peer = p.peer.as_ref().unwrap().rate();
            peer / ((p.before.base.rate() + p.after.base.rate()) / 2.0)
        };
        let mut peer: Vec<f64> = pairs
            .iter()
            .map(|p| p.peer.as_ref().unwrap().rate())
            .collect();
        let mut cs: Vec<f64> = pairs
            .iter()
            .flat_map(|p| [p.before.base.rate(), p.after.base.rate()])
            .collect();
        let mut ratios: Vec<f64> = pairs.iter().map(|p| ratio(p)).collect();
        let each: Vec<String> = cfg
            .pairs
            .iter()
            .filter(|p| p.peer.is_ok())
            .map(|p| format!("{:.2}{}", ratio(p), mode(p)))
            .collect();
        println!(
            "  {:<28} {:>6.1} M msg/s; its C rings {:>5.1} M msg/s; {:.2}x (median of {} {which}); pairs: {}",
            cfg.label,
            median(&mut peer) / 1e6,
            median(&mut cs) / 1e6,
            median(&mut ratios),
            pairs.len(),
            each.join(" ")
        );
    }
    println!(
        "\nlatency, ns, two processes, {rounds} pairs of {} round trips each, \
         one HDR histogram per line (the chosen pairs' samples); \
         ratios of the peer over its pair's C runs:",
        sz.round_trips
    );
    println!(
        "  {:<34} {:>6} {:>6} {:>7} {:>6}   {:>6} {:>6} {:>7} {:>6}",
        "", "one-way", "", "", "", "rtt/2", "", "", ""
    );
    println!(
        "  {:<34} {:>6} {:>6} {:>7} {:>6}   {:>6} {:>6} {:>7} {:>6}",
        "", "p50", "p99", "p99.9", "mean", "p50", "p99", "p99.9", "mean"
    );
    let row = |label: &str, (o, h): &Lat| {
        let [a, b, c] = latency::percentiles(o);
        let [d, e, f] = latency::percentiles(h);
        println!(
            "  {label:<34} {a:>6} {b:>6} {c:>7} {:>6.0}   {d:>6} {e:>6} {f:>7} {:>6.0}",
            latency::mean(o),
            latency::mean(h)
        );
    };
    row("C spin, one word (the floor)", floor);
    let mut plotted: Vec<(String, Lat, Lat)> = Vec::new();
    let mut ice: Option<Lat> = None;
    for cfg in configs.iter().filter(|c| !matches!(c.base, Baseline::Ring)) {
        if cfg.pairs.iter().all(|p| p.peer.is_err()) {
            let why = cfg
                .pairs
                .iter()
                .find_map(|p| p.peer.as_ref().err())
                .unwrap();
            println!("  {:<34} did not run here: {why}", cfg.label);
            continue;
        }
        let (pairs, which) = chosen(&cfg.pairs, &fast);
        let mut peer = (latency::histogram(), latency::histogram());
        let mut base = (latency::histogram(), latency::histogram());
        for p in &pairs {
            let (o, h) = p.peer.as_ref().unwrap().lat();
            peer.0.add(o).unwrap();
            peer.1.add(h).unwrap();
            for side in [&p.before, &p.after] {
                let (o, h) = side.base.lat();
                base.0.add(o).unwrap();
                base.1.add(h).unwrap();
            }
        }
        row(cfg.label, &peer);
        row(&format!("  its {}", cfg.base.label()), &base);
        let each: Vec<String> = cfg
            .pairs
            .iter()
            .filter(|p| p.peer.is_ok())
            .map(|p| {
                let peer = latency::percentiles(&p.peer.as_ref().unwrap().lat().0)[0] as f64;
                let c = (latency::percentiles(&p.before.base.lat().0)[0]
                    + latency::percentiles(&p.after.base.lat().0)[0])
                    as f64
                    / 2.0;
                format!("{:.2}{}", peer / c, mode(p))
            })
            .collect();
        println!(
            "    ratio ({} {which}): one-way {}; rtt/2 {}; per pair one-way p50: {}",
            pairs.len(),
            latency::ratios(&peer.0, &base.0),
            latency::ratios(&peer.1, &base.1),
            each.join(" ")
        );
        if matches!(cfg.peer, Peer::Ice(64)) {
            ice = Some(peer);
        } else if matches!(cfg.peer, Peer::Native("spin", 64) | Peer::Guest("spin", 64)) {
            plotted.push((cfg.label.to_owned(), peer, base));
        }
    }
    if let Ok(path) = std::env::var("SHMGATE_RING_PLOT") {
        let mut curves = Vec::new();
        for (group, (label, peer, base)) in plotted.iter().enumerate() {
            curves.push((format!("shmgate {label}"), group, &peer.0));
            curves.push(("  C ring ping-pong, its pairs".to_owned(), group, &base.0));
            if let Some(ice) = &ice {
                curves.push(("  iceoryx2, 64 B".to_owned(), group, &ice.0));
            }
        }
        latency::spectrum_svg(
            std::path::Path::new(&path),
            "one-way latency, 64-byte messages, two processes, spinning",
            &curves,
        )
        .unwrap();
        println!("\nplot: {path}");
    }
}
