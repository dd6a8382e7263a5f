//! The demo's headline: the zero-copy path. Two guests in two `shmgate run`
//! processes stream through a ring in a shared window (bulk data in 1 MiB
//! messages, then 64-byte messages), then ping-pong for latency, each number
//! next to a native baseline measured in the same run: a memcpy into a
//! mapping, and the C ring and spin ping-pong of `benches/c/baselines.c`
//! (built here with the system C compiler; left out if there is none).
//! Every segment is made under the demo's namespace, which the demo
//! removes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use shmgate_guest_artifacts::{RING_CONSUMER, RING_PING, RING_PONG, RING_PRODUCER};
use tracing::info;

use crate::{Failure, exit, latency};

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

/// Draws the latency distributions (quantile curves, log scale) as an SVG.
fn plot(path: &Path, curves: &[(&str, &[f64])]) -> Result<(), String> {
    use plotters::prelude::*;
    let hi = curves
        .iter()
        .flat_map(|(_, q)| q.iter())
        .fold(1.0f64, |a, &b| a.max(b));
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "one-way latency, two processes, spinning (receiver's clock - send time)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..100f64, (1f64..hi * 2.0).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("ns")
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (label, q)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = q
            .iter()
            .enumerate()
            .map(|(k, &v)| (k as f64 / 10.0, v.max(1.0)));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Runs the zero-copy measurements in namespace `ns`, drawing the latency
/// distributions into `plot_to` if given; returns the report.
pub(crate) fn measure(ns: &str, plot_to: Option<&Path>) -> Result<String, Failure> {
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
        &["zc-ping", &ROUND_TRIPS.to_string(), "spin", "64"],
    )?;
    let (pinged, ponged) = pair(pong, ping)?;
    let no_samples = || {
        Failure::new(
            exit::FAILURE,
            "demo failed: no latency samples from the ping-pong guests",
        )
    };
    let guest_one_way = latency::parse(&stdout(&ponged), "one-way").ok_or_else(no_samples)?;
    let guest_rtt = latency::parse(&stdout(&pinged), "half-rtt").ok_or_else(no_samples)?;
    let c_spin = c
        .as_ref()
        .and_then(|c| c_run(c, "spin", u64::from(ROUND_TRIPS)))
        .and_then(|out| {
            Some((
                latency::parse(&out, "one-way")?,
                latency::parse(&out, "half-rtt")?,
            ))
        });
    let mut plotted = None;
    if let Some(path) = plot_to {
        let guest_q = latency::curve(&guest_one_way);
        let mut curves: Vec<(&str, Vec<f64>)> = vec![("guest <-> guest, shmgate ring", guest_q)];
        if let Some((one_way, _)) = &c_spin {
            curves.push(("C spin ping-pong, one cache line", latency::curve(one_way)));
        }
        let curves: Vec<(&str, &[f64])> = curves.iter().map(|(l, q)| (*l, q.as_slice())).collect();
        plot(path, &curves).map_err(|e| {
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
    let pct = |h: &hdrhistogram::Histogram<u64>| {
        let [p50, p99, p999] = latency::percentiles(h);
        format!("p50 {p50} ns, p99 {p99} ns, p99.9 {p999} ns")
    };
    let c_line =
        |h: Option<&hdrhistogram::Histogram<u64>>, g: &hdrhistogram::Histogram<u64>| match h {
            Some(c) => format!(
                "C spin ping-pong, same run: {} (p50 {:.2}x)",
                pct(c),
                latency::percentiles(g)[0] as f64 / latency::percentiles(c)[0] as f64
            ),
            None => "C spin ping-pong: not measured".to_owned(),
        };
    let _ = writeln!(
        out,
        "  latency     one-way (timestamp in the message), spinning, {ROUND_TRIPS} ping-pongs of 64-byte messages: {}",
        pct(&guest_one_way)
    );
    let _ = writeln!(
        out,
        "              {}",
        c_line(c_spin.as_ref().map(|c| &c.0), &guest_one_way)
    );
    let _ = writeln!(
        out,
        "              round trip / 2: {}; {}",
        pct(&guest_rtt),
        c_line(c_spin.as_ref().map(|c| &c.1), &guest_rtt)
    );
    let agree = if bulk_agree && msgs_agree {
        "computed by both guests of each stream: they agree"
    } else {
        "the guests DISAGREE"
    };
    let _ = writeln!(out, "  checksums   {agree}");
    if let Some(path) = plotted {
        let _ = writeln!(out, "  plot        latency distributions written to {path}");
    }
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
        assert_eq!(latency::curve(&h).len(), 1000);
    }
}
