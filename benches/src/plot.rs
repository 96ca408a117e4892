//! Line charts as SVG, written by hand (no plotting dependency): both axes
//! on a log10 scale, the only kind the harness draws.

use std::fmt::Write as _;

/// One line of a chart: a name for the legend and its points (x, y), both
/// positive (points that are not are left out).
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

/// A chart: title, axis names, and the x ticks as (value, label).
#[derive(Clone, Debug)]
pub struct Chart {
    /// Title over the plot.
    pub title: String,
    /// Name under the x axis.
    pub x_label: String,
    /// Name beside the y axis.
    pub y_label: String,
    /// Ticks on the x axis; also its range.
    pub x_ticks: Vec<(f64, String)>,
    /// Lines.
    pub series: Vec<Series>,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// A latency in ns, short: "850 ns", "12 µs", "3 ms".
pub fn ns_label(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{} µs", ns / 1e3)
    } else {
        format!("{ns} ns")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Chart {
    /// The chart as an SVG document; the y axis spans the decades (1, 10,
    /// 100 … ns) around every point, labelled as latencies.
    ///
    /// ```
    /// use zerocast_benches::plot::{Chart, Series};
    /// let svg = Chart {
    ///     title: "t".into(), x_label: "x".into(), y_label: "y".into(),
    ///     x_ticks: vec![(1.0, "1".into()), (100.0, "100".into())],
    ///     series: vec![Series { name: "a".into(), points: vec![(1.0, 500.0), (100.0, 2e4)] }],
    /// }.svg();
    /// assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("10 µs"));
    /// ```
    pub fn svg(&self) -> String {
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .filter(|y| *y > 0.0 && y.is_finite());
        let (lo, hi) = ys.fold((f64::INFINITY, 0.0f64), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
        let (y0, y1) = if lo.is_finite() {
            (
                lo.log10().floor(),
                hi.log10().ceil().max(lo.log10().floor() + 1.0),
            )
        } else {
            (0.0, 1.0)
        };
        let xs = self.x_ticks.iter().map(|t| t.0).filter(|x| *x > 0.0);
        let (xlo, xhi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
        let (x0, x1) = if xlo.is_finite() && xhi > xlo {
            (xlo.log10(), xhi.log10())
        } else {
            (0.0, 1.0)
        };
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |x: f64| LEFT + (x.log10() - x0) / (x1 - x0) * pw;
        let py = |y: f64| TOP + ph - (y.log10() - y0) / (y1 - y0) * ph;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>
"#,
            LEFT + pw / 2.0,
            escape(&self.title)
        );
        // Grid and labels: a line per y decade, per x tick.
        let mut d = y0;
        while d <= y1 + 1e-9 {
            let y = py(10f64.powf(d));
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                y + 4.0,
                ns_label(10f64.powf(d).round())
            );
            d += 1.0;
        }
        for (x, label) in self.x_ticks.iter().filter(|t| t.0 > 0.0) {
            let x = px(*x);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + ph,
                TOP + ph + 18.0,
                escape(label)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>
<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"##,
            LEFT + pw / 2.0,
            HEIGHT - 14.0,
            escape(&self.x_label),
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<String> = series
                .points
                .iter()
                .filter(|(x, y)| *x > 0.0 && *y > 0.0 && x.is_finite() && y.is_finite())
                .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            let ly = TOP + 10.0 + i as f64 * 18.0;
            let lx = LEFT + pw + 12.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
                lx + 20.0,
                lx + 26.0,
                ly + 4.0,
                escape(&series.name)
            );
        }
        s += "</svg>\n";
        s
    }
}
