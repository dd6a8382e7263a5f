//! Latency samples as the ring guests (`ring_ping`, `ring_pong`) and the C
//! baselines (`benches/c/baselines.c`) print them, one line of nanoseconds
//! after a label (`samples one-way: 120 131 ...`), recorded in an HDR
//! histogram (3 significant digits) for percentiles. Shared by the demo
//! and `benches/ring.rs`.

use hdrhistogram::Histogram;

/// An empty histogram of nanoseconds: 1 ns to 100 s, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds")
}

/// Records `ns` (clamped into the histogram's range).
pub(crate) fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.max(1));
}

/// The samples on the line `samples LABEL: ...` of `text`, recorded.
pub(crate) fn parse(text: &str, label: &str) -> Option<Histogram<u64>> {
    let head = format!("samples {label}:");
    let line = text.lines().find_map(|l| l.strip_prefix(head.as_str()))?;
    let mut h = histogram();
    for word in line.split_whitespace() {
        record(&mut h, word.parse().ok()?);
    }
    (!h.is_empty()).then_some(h)
}

/// p50, p99 and p99.9 in nanoseconds.
pub(crate) fn percentiles(h: &Histogram<u64>) -> [u64; 3] {
    [0.5, 0.99, 0.999].map(|q| h.value_at_quantile(q))
}

/// The 1000 per-mille quantiles (for a plot).
#[allow(dead_code)] // benches/ring.rs includes this file and does not plot
pub(crate) fn curve(h: &Histogram<u64>) -> Vec<f64> {
    (0..1000)
        .map(|k| h.value_at_quantile(f64::from(k) / 1000.0) as f64)
        .collect()
}
