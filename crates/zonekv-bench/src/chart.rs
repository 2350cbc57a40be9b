//! An SVG chart: throughput and p99 latency against client count, one line per target.

use std::fmt::Write as _;

use crate::report::{Cell, Report};

const W: f64 = 460.0;
const H: f64 = 300.0;
const M: f64 = 55.0;
const COLORS: [&str; 6] = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"];

/// Renders the report's cells as two side-by-side line charts.
pub fn render(report: &Report) -> String {
    let cells = report.cells();
    let mut targets: Vec<String> = Vec::new();
    let mut clients: Vec<usize> = Vec::new();
    for c in &cells {
        if !targets.contains(&c.target) {
            targets.push(c.target.clone());
        }
        if !clients.contains(&c.clients) {
            clients.push(c.clients);
        }
    }
    clients.sort_unstable();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12">"#,
        2.0 * W,
        H + 40.0
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="14">{} workload, {} ({})</text>"#,
        W,
        report.workload.workload,
        report.started_at,
        xml(&report.machine.summary())
    );
    panel(&mut svg, 0.0, "throughput (ops/s)", &cells, &targets, &clients, |c| c.throughput);
    panel(&mut svg, W, "p99 latency (ms)", &cells, &targets, &clients, |c| c.p99 as f64 / 1000.0);
    for (i, t) in targets.iter().enumerate() {
        let x = 60.0 + i as f64 * 150.0;
        let color = COLORS[i % COLORS.len()];
        let _ = write!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}" stroke-width="3"/><text x="{tx}" y="{ty}">{}</text>"#,
            xml(t),
            y = H + 25.0,
            x2 = x + 20.0,
            tx = x + 25.0,
            ty = H + 29.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn panel(
    svg: &mut String,
    x0: f64,
    title: &str,
    cells: &[Cell],
    targets: &[String],
    clients: &[usize],
    value: fn(&Cell) -> f64,
) {
    let max = cells.iter().map(value).fold(0.0, f64::max).max(f64::MIN_POSITIVE) * 1.1;
    let (left, top, right, bottom) = (x0 + M, 40.0, x0 + W - 15.0, H - 30.0);
    let xs = |i: usize| {
        if clients.len() <= 1 {
            (left + right) / 2.0
        } else {
            left + (right - left) * i as f64 / (clients.len() - 1) as f64
        }
    };
    let ys = |v: f64| bottom - (bottom - top) * v / max;
    let _ = write!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle">{title}</text><rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        (left + right) / 2.0,
        top - 6.0,
        right - left,
        bottom - top
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#555">{}</text><line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#eee"/>"##,
            left - 4.0,
            ys(v) + 4.0,
            human(v),
            y = ys(v)
        );
    }
    for (i, c) in clients.iter().enumerate() {
        let _ = write!(svg, r#"<text x="{}" y="{}" text-anchor="middle">{c}</text>"#, xs(i), bottom + 15.0);
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">clients</text>"#,
        (left + right) / 2.0,
        bottom + 28.0
    );
    for (ti, t) in targets.iter().enumerate() {
        let points: Vec<String> = clients
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                cells.iter().find(|c| &c.target == t && c.clients == *n).map(|c| (i, value(c)))
            })
            .map(|(i, v)| format!("{:.1},{:.1}", xs(i), ys(v)))
            .collect();
        let color = COLORS[ti % COLORS.len()];
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        for p in &points {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(svg, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
        }
    }
}

fn human(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
