//! The demo's headline: the zero-copy path. Two guests in two `shmgate run`
//! processes stream through a ring in a shared window (bulk data in 1 MiB
//! messages, then 64-byte messages), then ping-pong for latency, each number
//! next to a baseline run right before and right after it: the same bulk
//! transfer between two native processes with the native ring ends
//! (`crate::native`; a memcpy into a mapping shown as the ceiling), the C
//! ring, and the C ring ping-pong of 64-byte messages of
//! `benches/c/baselines.c` (built here with the system C compiler; left out
//! if there is none). When the two C runs around the guests disagree (this
//! VM switches between a fast and a slow mode), the report says the
//! machine was disturbed. Every segment is made under the demo's
//! namespace, which the demo removes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use hdrhistogram::Histogram;
use tracing::info;

use crate::guests::Guests;
use crate::{Failure, exit, latency};

/// The C baselines' source.
const BASELINES_C: &str = include_str!("../benches/c/baselines.c");
const BULK: u64 = 256 << 20;
const MESSAGES: u64 = 4 << 20;
const ROUND_TRIPS: u32 = 20_000;
/// Messages of the C ring probe that tells the machine's mode.
const PROBE: u64 = 2_000_000;

fn exe() -> Result<PathBuf, Failure> {
    std::env::current_exe().map_err(|e| {
        Failure::new(
            exit::OSERR,
            format!("cannot find the shmgate executable: {e}"),
        )
    })
}

/// `shmgate run` with a windows grant in `ns`.
fn run(ns: &str, create: bool, guest: &str, args: &[&str]) -> Result<Command, Failure> {
    let mut cmd = Command::new(exe()?);
    cmd.args([
        "run",
        "--namespace",
        ns,
        "--max-size",
        "80MiB",
        "--max-mapped",
        "80MiB",
    ]);
    if create {
        cmd.arg("--allow-create");
    }
    cmd.arg(guest).arg("--").args(args).stdin(Stdio::null());
    info!(guest, ?args, "starting guest");
    Ok(cmd)
}

/// Runs a consumer-like guest in the background and a producer-like one to
/// completion; returns both outputs (producer, consumer).
fn pair(mut background: Command, mut foreground: Command) -> Result<(Output, Output), Failure> {
    let spawn_err = |e: std::io::Error| Failure::new(exit::OSERR, format!("starting a guest: {e}"));
    let child = background
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(spawn_err)?;
    let fg = foreground
        .stderr(Stdio::inherit())
        .output()
        .map_err(spawn_err)?;
    let bg = child.wait_with_output().map_err(spawn_err)?;
    for out in [&fg, &bg] {
        if !out.status.success() {
            return Err(Failure::new(
                exit::FAILURE,
                format!("demo failed: a zero-copy guest exited with {}", out.status),
            ));
        }
    }
    Ok((fg, bg))
}

/// The number after `label` in `text`.
fn number_after(text: &str, label: &str) -> Option<f64> {
    text.split(label)
        .nth(1)?
        .split_whitespace()
        .next()?
        .trim_end_matches(',')
        .parse()
        .ok()
}

/// The word after `label` in `text`.
fn word_after<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.split(label).nth(1)?.split_whitespace().next()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Streams `total` bytes in `msg`-byte messages guest to guest; returns the
/// consumer's (MiB/s, messages/s) and whether both checksums agree.
fn stream(
    ns: &str,
    producer: &str,
    consumer: &str,
    name: &str,
    total: u64,
    msg: u64,
) -> Result<(f64, f64, bool), Failure> {
    let (msg_s, total_s) = (msg.to_string(), total.to_string());
    let consumer = run(ns, false, consumer, &[name, &msg_s, "window", "120"])?;
    let producer = run(ns, true, producer, &[name, &total_s, &msg_s, "window"])?;
    let (produced, consumed) = pair(consumer, producer)?;
    let (said, got) = (stdout(&produced), stdout(&consumed));
    let bad = || {
        Failure::new(
            exit::FAILURE,
            format!("demo failed: unexpected guest output {got:?}"),
        )
    };
    let mib_s = number_after(&got, "s: ").ok_or_else(bad)?;
    let msgs = number_after(&got, "MiB/s, ").ok_or_else(bad)?;
    let agree = word_after(&said, "fnv1a-words ").is_some()
        && word_after(&said, "fnv1a-words ") == word_after(&got, "fnv1a-words ");
    Ok((mib_s, msgs, agree))
}

/// A memcpy of `BULK` bytes from private memory into a mapping; bytes/s.
fn memcpy_rate(ns: &str) -> Result<f64, Failure> {
    let fail = |e: shmgate_host::Error| Failure::new(exit::FAILURE, format!("demo failed: {e}"));
    let seg = shmgate_host::OpenOptions::new()
        .size(64 << 20)
        .open_owned(format!("{ns}memcpy"))
        .map_err(fail)?;
    let map = seg.map().map_err(fail)?;
    let buf = vec![0x5au8; 64 << 20];
    map.write_at(0, &buf).map_err(fail)?; // fault the pages in
    let start = Instant::now();
    for _ in 0..BULK / (64 << 20) {
        map.write_at(0, &buf).map_err(fail)?;
    }
    Ok(BULK as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// Builds the C baselines; `None` without a working C compiler.
fn c_baselines() -> Option<PathBuf> {
    let dir = std::env::temp_dir();
    let src = dir.join(format!("shmgate-demo-{}-baselines.c", std::process::id()));
    let bin = dir.join(format!("shmgate-demo-{}-baselines", std::process::id()));
    std::fs::write(&src, BASELINES_C).ok()?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let ok = Command::new(cc)
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let _ = std::fs::remove_file(&src);
    ok.then_some(bin)
}

fn c_run(bin: &PathBuf, what: &str, n: u64) -> Option<String> {
    let out = Command::new(bin)
        .args([what, &n.to_string()])
        .output()
        .ok()?;
    out.status.success().then(|| stdout(&out).trim().to_owned())
}

/// A C ring probe of `PROBE` messages: the machine's mode (this VM
/// switches between a fast and a slow one; rings drop 3-4x in the slow).
fn c_probe(c: &PathBuf) -> Option<f64> {
    c_run(c, "ring", PROBE)?.parse().ok()
}

/// The C like-with-like latency baseline: the ring ping-pong of 64-byte
/// messages (two SPSC rings laid out as shmgate's); with the probe run
/// just before it.
fn c_pingpong(c: &PathBuf) -> Option<(f64, Lat)> {
    let probe = c_probe(c)?;
    let out = Command::new(c)
        .args(["ringpp", &ROUND_TRIPS.to_string(), "64"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let text = stdout(&out);
    Some((
        probe,
        (
            latency::parse(&text, "one-way")?,
            latency::parse(&text, "half-rtt")?,
        ),
    ))
}

/// One-way and round trip / 2 samples.
type Lat = (Histogram<u64>, Histogram<u64>);

/// Whether two C runs around a guest run tell of a disturbed machine: a
/// probe dropped under half the other's, or the C p50 moved by more than
/// a third.
fn disturbed(before: &(f64, Lat), after: &(f64, Lat)) -> bool {
    let (p0, p1) = (before.0, after.0);
    let (l0, l1) = (
        latency::percentiles(&before.1.0)[0] as f64,
        latency::percentiles(&after.1.0)[0] as f64,
    );
    p0.min(p1) < p0.max(p1) / 2.0 || l0.max(l1) > l0.min(l1).max(1.0) * 4.0 / 3.0
}

/// Runs the zero-copy measurements in namespace `ns` with the embedded
/// `guests`, drawing the latency spectrum into `plot_to` if given; returns
/// the report.
pub(crate) fn measure(
    ns: &str,
    guests: &Guests,
    plot_to: Option<&Path>,
) -> Result<String, Failure> {
    let c = c_baselines();
    let guest = |name: &str| guests.path(name).display().to_string();
    let (ring_producer, ring_consumer) = (guest("ring_producer"), guest("ring_consumer"));
    let (ring_ping, ring_pong) = (guest("ring_ping"), guest("ring_pong"));
    // Bulk: the native ring right before and after the guests, the same
    // transfer (1 MiB messages, two processes, same fill and checksum).
    let (native_before, native_agree0) =
        crate::native::ring_stream(&format!("{ns}zc-native0"), BULK, 1 << 20)?;
    let (bulk_mib_s, _, bulk_agree) =
        stream(ns, &ring_producer, &ring_consumer, "zc-bulk", BULK, 1 << 20)?;
    let (native_after, native_agree1) =
        crate::native::ring_stream(&format!("{ns}zc-native1"), BULK, 1 << 20)?;
    let memcpy = memcpy_rate(ns)?;
    let c_before = c.as_ref().and_then(c_probe);
    let (_, msgs, msgs_agree) = stream(
        ns,
        &ring_producer,
        &ring_consumer,
        "zc-msgs",
        MESSAGES * 64,
        64,
    )?;
    let c_after = c.as_ref().and_then(c_probe);
    // Latency: the C ring ping-pong right before and after the guests.
    let lat_before = c.as_ref().and_then(c_pingpong);
    let pong = run(ns, false, &ring_pong, &["zc-ping", "spin", "120"])?;
    let ping = run(
        ns,
        true,
        &ring_ping,
        &["zc-ping", &ROUND_TRIPS.to_string(), "spin", "64"],
    )?;
    let (pinged, ponged) = pair(pong, ping)?;
    let lat_after = c.as_ref().and_then(c_pingpong);
    let no_samples = || {
        Failure::new(
            exit::FAILURE,
            "demo failed: no latency samples from the ping-pong guests",
        )
    };
    let guest_one_way = latency::parse(&stdout(&ponged), "one-way").ok_or_else(no_samples)?;
    let guest_rtt = latency::parse(&stdout(&pinged), "half-rtt").ok_or_else(no_samples)?;
    // The C runs of the pair in one histogram each.
    let c_lat = match (&lat_before, &lat_after) {
        (Some(b), Some(a)) => {
            let (mut o, mut h) = (b.1.0.clone(), b.1.1.clone());
            o.add(&a.1.0)
                .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
            h.add(&a.1.1)
                .map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
            Some((o, h))
        }
        _ => None,
    };
    let mut plotted = None;
    if let Some(path) = plot_to {
        let mut curves = vec![(
            "guest <-> guest, shmgate ring".to_owned(),
            0,
            &guest_one_way,
        )];
        if let Some((one_way, _)) = &c_lat {
            curves.push((
                "C ring ping-pong, right before and after".to_owned(),
                0,
                one_way,
            ));
        }
        latency::spectrum_svg(
            path,
            "one-way latency, 64-byte messages, two processes, spinning",
            &curves,
        )
        .map_err(|e| {
            Failure::new(
                exit::CANTCREAT,
                format!("cannot write the plot {}: {e}", path.display()),
            )
        })?;
        plotted = Some(path.display().to_string());
    }
    if let Some(bin) = &c {
        let _ = std::fs::remove_file(bin);
    }

    let gb = |bytes_s: f64| bytes_s / 1e9;
    let bulk = bulk_mib_s * f64::from(1u32 << 20);
    let native = (native_before + native_after) / 2.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "shmgate demo: zero-copy, two guests in two processes, a ring in a shared window"
    );
    let _ = writeln!(
        out,
        "  bulk        {} MiB in 1 MiB messages: {:.2} GB/s; native ring ends, same transfer, right before and after: \
         {:.2} and {:.2} GB/s ({:.2}x); memcpy into a mapping (the ceiling): {:.2} GB/s",
        BULK >> 20,
        gb(bulk),
        gb(native_before),
        gb(native_after),
        bulk / native,
        gb(memcpy),
    );
    let c_ring = match (c_before, c_after) {
        (Some(b), Some(a)) => format!(
            "C ring right before and after: {:.1} and {:.1} M msg/s ({:.2}x)",
            b / 1e6,
            a / 1e6,
            msgs / ((a + b) / 2.0)
        ),
        _ => "C ring: not measured (no C compiler)".to_owned(),
    };
    let _ = writeln!(
        out,
        "  messages    {MESSAGES} of 64 bytes: {:.1} M msg/s; {c_ring}",
        msgs / 1e6
    );
    let _ = writeln!(
        out,
        "  latency     one-way (timestamp in the message), spinning, {ROUND_TRIPS} ping-pongs of 64-byte messages: {}",
        latency::summary(&guest_one_way)
    );
    match (&lat_before, &lat_after, &c_lat) {
        (Some(b), Some(a), Some(c)) => {
            let _ = writeln!(
                out,
                "              C ring ping-pong, 64 bytes, right before: {}; right after: {}",
                latency::summary(&b.1.0),
                latency::summary(&a.1.0)
            );
            let _ = writeln!(
                out,
                "              guests over the C pair: one-way {}",
                latency::ratios(&guest_one_way, &c.0)
            );
            let _ = writeln!(
                out,
                "              round trip / 2: {}; C pair {} ({})",
                latency::summary(&guest_rtt),
                latency::summary(&c.1),
                latency::ratios(&guest_rtt, &c.1)
            );
            if disturbed(b, a) {
                let _ = writeln!(
                    out,
                    "              the machine was disturbed during this pair (C ring probe {:.1} -> {:.1} M msg/s, \
                     C p50 {} -> {} ns): the ratios are no fair ones; run the demo again",
                    b.0 / 1e6,
                    a.0 / 1e6,
                    latency::percentiles(&b.1.0)[0],
                    latency::percentiles(&a.1.0)[0]
                );
            }
        }
        _ => {
            let _ = writeln!(
                out,
                "              round trip / 2: {}; C ring ping-pong: not measured (no C compiler)",
                latency::summary(&guest_rtt)
            );
        }
    }
    let agree = if bulk_agree && msgs_agree && native_agree0 && native_agree1 {
        "computed by both ends of each stream (guests and native): they agree"
    } else {
        "the two ends DISAGREE"
    };
    let _ = writeln!(out, "  checksums   {agree}");
    if let Some(path) = plotted {
        let _ = writeln!(
            out,
            "  plot        latency percentile spectrum written to {path} \
             (iceoryx2 beside each line: `SHMGATE_RING_PLOT=FILE.svg cargo bench -p shmgate-cli --bench ring`)"
        );
    }
    if !(bulk_agree && msgs_agree && native_agree0 && native_agree1) {
        return Err(Failure::new(
            exit::FAILURE,
            format!("demo failed: checksums disagree\n{out}"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guest_reports() {
        let got = "ring_consumer: received 4 messages (256 bytes) in order, in 0.5 s: \
                   12.5 MiB/s, 8 messages/s, fnv1a-words 00ab";
        assert_eq!(number_after(got, "s: "), Some(12.5));
        assert_eq!(number_after(got, "MiB/s, "), Some(8.0));
        assert_eq!(word_after(got, "fnv1a-words "), Some("00ab"));
    }

    #[test]
    fn parses_and_ranks_latency_samples() {
        let text = "ring_pong: echoed 4 timed messages\nsamples one-way: 100 200 300 4000\n";
        let h = latency::parse(text, "one-way").unwrap();
        assert_eq!(h.len(), 4);
        let [p50, p99, p999] = latency::percentiles(&h);
        assert!((199..=201).contains(&p50), "{p50}");
        assert!((3995..=4005).contains(&p99) && p999 >= p99, "{p99} {p999}");
        assert!(latency::parse(text, "half-rtt").is_none());
        assert!(latency::parse("samples one-way: 1 x", "one-way").is_none());
        assert!(
            latency::summary(&h).ends_with("mean 1150 ns"),
            "{}",
            latency::summary(&h)
        );
    }
}
