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

/// The mean in nanoseconds.
pub(crate) fn mean(h: &Histogram<u64>) -> f64 {
    h.mean()
}

/// `p50 A ns, p99 B ns, p99.9 C ns, mean D ns`: every latency line's form.
#[allow(dead_code)] // benches/ring.rs includes this file and prints its own table
pub(crate) fn summary(h: &Histogram<u64>) -> String {
    let [p50, p99, p999] = percentiles(h);
    format!(
        "p50 {p50} ns, p99 {p99} ns, p99.9 {p999} ns, mean {:.0} ns",
        mean(h)
    )
}

/// `p50 1.23x p99 1.50x p99.9 2.00x mean 1.10x`: `h` over `base`.
pub(crate) fn ratios(h: &Histogram<u64>, base: &Histogram<u64>) -> String {
    let (v, b) = (percentiles(h), percentiles(base));
    let r = |x: u64, y: u64| x as f64 / y.max(1) as f64;
    format!(
        "p50 {:.2}x p99 {:.2}x p99.9 {:.2}x mean {:.2}x",
        r(v[0], b[0]),
        r(v[1], b[1]),
        r(v[2], b[2]),
        mean(h) / mean(base).max(1e-9)
    )
}

/// The highest nines the spectrum shows: 99.99%.
const NINES: f64 = 4.0;

/// The x of quantile `q` on the spectrum's axis: log10(1 / (1 - q)), so
/// 50% is at 0.3, 90% at 1, 99% at 2, 99.9% at 3 and 99.99% at 4.
pub(crate) fn spectrum_x(q: f64) -> f64 {
    (1.0 / (1.0 - q).max(1e-12)).log10()
}

/// Draws the latency percentile spectrum of `curves` into the SVG file
/// `path`, the way HdrHistogram plots are read: the x axis is log10 of
/// 1/(1 - q), labelled 50%, 90%, 99%, 99.9%, 99.99%, so the tail has as
/// much room as the body; the y axis is nanoseconds, log scale. A curve's
/// label is shown in the legend; curves with the same `group` share a
/// colour (a shmgate line and its baselines), told apart by line style.
pub(crate) fn spectrum_svg(
    path: &std::path::Path,
    title: &str,
    curves: &[(String, usize, &Histogram<u64>)],
) -> Result<(), String> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let points = |h: &Histogram<u64>| -> Vec<(f64, f64)> {
        (0..=400)
            .map(|k| {
                let x = f64::from(k) / 100.0;
                let q = 1.0 - 10f64.powf(-x);
                (x, h.value_at_quantile(q).max(1) as f64)
            })
            .collect()
    };
    let all: Vec<Vec<(f64, f64)>> = curves.iter().map(|(_, _, h)| points(h)).collect();
    let (lo, hi) = all
        .iter()
        .flatten()
        .fold((f64::MAX, 1.0f64), |(lo, hi), &(_, y)| {
            (lo.min(y), hi.max(y))
        });
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..NINES, ((lo / 1.5).max(1.0)..hi * 1.5).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc("percentile (log scale of 1 / (1 - q))")
        .y_desc("ns")
        .draw()
        .map_err(|x| e(&x))?;
    // The percentile grid and its labels, placed by hand: plotters picks
    // its own x label positions, the spectrum needs these five.
    let grid = [
        (0.5, "50%"),
        (0.9, "90%"),
        (0.99, "99%"),
        (0.999, "99.9%"),
        (0.9999, "99.99%"),
    ];
    let (y0, y1) = ((lo / 1.5).max(1.0), hi * 1.5);
    for (q, label) in grid {
        let x = spectrum_x(q);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, y0), (x, y1)],
                BLACK.mix(0.2),
            )))
            .map_err(|x| e(&x))?;
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (x, y0),
                ("sans-serif", 13).into_font().color(&BLACK),
            )))
            .map_err(|x| e(&x))?;
    }
    let mut styles_used = std::collections::HashMap::new();
    for ((label, group, _), pts) in curves.iter().zip(&all) {
        let color = Palette99::pick(*group).to_rgba();
        let nth = styles_used.entry(*group).or_insert(0usize);
        let width = [3, 1, 2][*nth % 3];
        *nth += 1;
        chart
            .draw_series(LineSeries::new(
                pts.iter().copied(),
                color.stroke_width(width),
            ))
            .map_err(|x| e(&x))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(width))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}
