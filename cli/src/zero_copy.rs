//! The demo's headline: the zero-copy path. Two guests in two `shmgate run`
//! processes stream through a ring in a shared window (bulk data in 1 MiB
//! messages, then 64-byte messages), then ping-pong for latency, each number
//! next to a native baseline measured in the same run: a memcpy into a
//! mapping, and the C ring and spin ping-pong of `benches/c/baselines.c`
//! (built here with the system C compiler; left out if there is none).
//! Every segment is made under the demo's namespace, which the demo
//! removes.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use shmgate_guest_artifacts::{RING_CONSUMER, RING_PING, RING_PONG, RING_PRODUCER};
use tracing::info;

use crate::{Failure, exit};

/// The C baselines' source.
const BASELINES_C: &str = include_str!("../benches/c/baselines.c");
const BULK: u64 = 256 << 20;
const MESSAGES: u64 = 4 << 20;
const ROUND_TRIPS: u32 = 20_000;

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
fn stream(ns: &str, name: &str, total: u64, msg: u64) -> Result<(f64, f64, bool), Failure> {
    let (msg_s, total_s) = (msg.to_string(), total.to_string());
    let consumer = run(ns, false, RING_CONSUMER, &[name, &msg_s, "window", "120"])?;
    let producer = run(ns, true, RING_PRODUCER, &[name, &total_s, &msg_s, "window"])?;
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

/// Runs the zero-copy measurements in namespace `ns`; returns the report.
pub(crate) fn measure(ns: &str) -> Result<String, Failure> {
    let c = c_baselines();
    let (bulk_mib_s, _, bulk_agree) = stream(ns, "zc-bulk", BULK, 1 << 20)?;
    let memcpy = memcpy_rate(ns)?;
    let (_, msgs, msgs_agree) = stream(ns, "zc-msgs", MESSAGES * 64, 64)?;
    let c_ring = c
        .as_ref()
        .and_then(|c| c_run(c, "ring", MESSAGES))
        .and_then(|s| s.parse::<f64>().ok());
    let pong = run(ns, false, RING_PONG, &["zc-ping", "spin", "120"])?;
    let ping = run(
        ns,
        true,
        RING_PING,
        &["zc-ping", &ROUND_TRIPS.to_string(), "spin"],
    )?;
    let (pinged, _) = pair(pong, ping)?;
    let lat = stdout(&pinged);
    let c_spin = c
        .as_ref()
        .and_then(|c| c_run(c, "spin", u64::from(ROUND_TRIPS)));
    if let Some(bin) = &c {
        let _ = std::fs::remove_file(bin);
    }

    let gb = |bytes_s: f64| bytes_s / 1e9;
    let bulk = bulk_mib_s * f64::from(1u32 << 20);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "shmgate demo: zero-copy, two guests in two processes, a ring in a shared window"
    );
    let _ = writeln!(
        out,
        "  bulk        {} MiB in 1 MiB messages: {:.2} GB/s; native memcpy into a mapping, same run: {:.2} GB/s ({:.2}x)",
        BULK >> 20,
        gb(bulk),
        gb(memcpy),
        bulk / memcpy
    );
    let c_ring = match c_ring {
        Some(c) => format!(
            "C ring, same run: {:.1} M msg/s ({:.2}x)",
            c / 1e6,
            msgs / c
        ),
        None => "C ring: not measured (no C compiler)".to_owned(),
    };
    let _ = writeln!(
        out,
        "  messages    {MESSAGES} of 64 bytes: {:.1} M msg/s; {c_ring}",
        msgs / 1e6
    );
    let p = |label| number_after(&lat, label).map_or("?".to_owned(), |v| format!("{v:.0}"));
    let c_spin = match c_spin.as_deref().map(|s| s.split(' ').collect::<Vec<_>>()) {
        Some(v) if v.len() == 3 => format!(
            "C spin ping-pong, same run: p50 {} ns, p99 {} ns",
            v[0], v[1]
        ),
        _ => "C spin ping-pong: not measured".to_owned(),
    };
    let _ = writeln!(
        out,
        "  latency     one-way, spinning, {ROUND_TRIPS} ping-pongs: p50 {} ns, p99 {} ns; {c_spin}",
        p("p50 "),
        p("p99 ")
    );
    let agree = if bulk_agree && msgs_agree {
        "computed by both guests of each stream: they agree"
    } else {
        "the guests DISAGREE"
    };
    let _ = writeln!(out, "  checksums   {agree}");
    if !(bulk_agree && msgs_agree) {
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
        let lat = "ring_ping: p50 120 p99 300 p99.9 900 ns";
        assert_eq!(number_after(lat, "p50 "), Some(120.0));
        assert_eq!(number_after(lat, "p99 "), Some(300.0));
    }
}
