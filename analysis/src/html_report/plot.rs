//! The report's charts as inline SVG: histograms, box plots on a shared scale, scatter plots
//! and lines with error bars. Each chart is one `<svg class="plot">` with a `viewBox`, so it
//! scales to the page width, and every mark carries a `<title>`, so hovering a point names
//! its document without any script. All text goes through maud and is escaped.
//!
//! This module knows axes and marks only; what is plotted is decided in [`super`].

use maud::{Markup, html};

use crate::stats::quantile;

/// Drawing area of every chart, in SVG user units (the page scales it).
const WIDTH: f64 = 640.0;
/// Left margin: room for the tick labels and the axis label.
const LEFT: f64 = 64.0;
/// Left margin of a box plot and of the histogram beside it: room for the group names.
const BOX_LEFT: f64 = 120.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 46.0;

/// How data values are placed along an axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    /// log(1 + v): counts that start at zero and span orders of magnitude.
    LogCount,
    /// log2(v): positive values that double, such as copy counts.
    Log2,
    /// log10(v): positive values over decades, such as the FPRs of a ROC curve.
    Log10,
}

impl Scale {
    fn apply(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::LogCount => v.max(0.0).ln_1p(),
            Scale::Log2 => v.log2(),
            Scale::Log10 => v.log10(),
        }
    }
}

/// One axis: its label, scale, range (in scaled units) and ticks (data values).
#[derive(Debug, Clone)]
pub struct Axis {
    label: String,
    scale: Scale,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    /// Names of the ticks 0, 1, 2, … of a categorical axis; empty for a numeric one.
    names: Vec<String>,
}

impl Axis {
    /// An axis covering `values` (finite ones; at least `floor` wide, padded by 4%).
    pub fn fit(label: &str, scale: Scale, values: impl IntoIterator<Item = f64>) -> Axis {
        let (min, max) = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let (min, max) = if min <= max { (min, max) } else { (0.0, 1.0) };
        Axis::between(label, scale, min, max)
    }

    /// An axis from `min` to `max` (data values), padded by 4%.
    pub fn between(label: &str, scale: Scale, min: f64, max: f64) -> Axis {
        let (mut lo, mut hi) = (scale.apply(min), scale.apply(max));
        if hi - lo < 1e-9 {
            lo -= 0.5;
            hi += 0.5;
        }
        let pad = (hi - lo) * 0.04;
        let ticks = match scale {
            Scale::Linear => linear_ticks(min.min(max), max.max(min)),
            Scale::LogCount => count_ticks(max),
            Scale::Log2 => power_of_two_ticks(min, max),
            Scale::Log10 => power_of_ten_ticks(min, max),
        };
        Axis { label: label.to_string(), scale, lo: lo - pad, hi: hi + pad, ticks, names: Vec::new() }
    }

    /// An axis that starts at zero, for counts and bar heights.
    pub fn from_zero(label: &str, max: f64) -> Axis {
        let max = max.max(1.0);
        Axis {
            label: label.to_string(),
            scale: Scale::Linear,
            lo: 0.0,
            hi: max * 1.05,
            ticks: linear_ticks(0.0, max),
            names: Vec::new(),
        }
    }

    /// A categorical axis: `names` at 0, 1, 2, … evenly spaced.
    pub fn categories(label: &str, names: &[String]) -> Axis {
        let last = names.len().max(1) as f64 - 1.0;
        Axis {
            label: label.to_string(),
            scale: Scale::Linear,
            lo: -0.3,
            hi: last + 0.3,
            ticks: (0..names.len()).map(|i| i as f64).collect(),
            names: names.to_vec(),
        }
    }

    /// What tick `t` says.
    fn tick_text(&self, t: f64) -> String {
        match self.names.get(t as usize) {
            Some(name) if t.fract() == 0.0 && t >= 0.0 => name.clone(),
            _ => tick_label(t),
        }
    }

    /// Where `v` falls, from 0 (low end) to 1 (high end).
    fn fraction(&self, v: f64) -> f64 {
        (self.scale.apply(v) - self.lo) / (self.hi - self.lo)
    }
}

/// Ticks at 1, 2 or 5 times a power of ten, the step giving closest to five, inside [min, max].
fn linear_ticks(min: f64, max: f64) -> Vec<f64> {
    let span = if max > min { max - min } else { 1.0 };
    let power = 10f64.powf((span / 5.0).log10().floor());
    let ticks_with = |step: f64| (span / step - 5.0).abs();
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .min_by(|a, b| ticks_with(*a).total_cmp(&ticks_with(*b)))
        .expect("four candidates");
    let first = (min / step).ceil() as i64;
    let last = (max / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

/// 0, 1, 2, 5, 10, 20, 50, … up to `max`.
fn count_ticks(max: f64) -> Vec<f64> {
    let mut ticks = vec![0.0];
    let mut power = 1.0;
    while power <= max {
        ticks.extend([1.0, 2.0, 5.0].iter().map(|m| m * power).filter(|t| *t <= max));
        power *= 10.0;
    }
    ticks
}

fn power_of_two_ticks(min: f64, max: f64) -> Vec<f64> {
    let (first, last) = (min.max(1e-9).log2().ceil() as i32, max.max(1e-9).log2().floor() as i32);
    (first..=last).map(|p| 2f64.powi(p)).collect()
}

fn power_of_ten_ticks(min: f64, max: f64) -> Vec<f64> {
    let (first, last) = (min.max(1e-12).log10().ceil() as i32, max.max(1e-12).log10().floor() as i32);
    (first..=last).map(|p| 10f64.powi(p)).collect()
}

fn tick_label(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v.abs() < 0.001 {
        format!("{v:e}")
    } else if v.abs() >= 1000.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The coordinate frame of one chart: maps data to SVG user units.
struct Frame<'a> {
    x: &'a Axis,
    y: &'a Axis,
    height: f64,
    left: f64,
}

impl Frame<'_> {
    fn px(&self, v: f64) -> f64 {
        self.left + self.x.fraction(v) * (WIDTH - self.left - RIGHT)
    }

    fn py(&self, v: f64) -> f64 {
        self.height - BOTTOM - self.y.fraction(v) * (self.height - TOP - BOTTOM)
    }

    fn bottom(&self) -> f64 {
        self.height - BOTTOM
    }

    /// Both axes, their ticks, grid lines and labels.
    fn axes(&self) -> Markup {
        let right = WIDTH - RIGHT;
        html! {
            g class="grid" {
                @for &t in &self.y.ticks {
                    line x1=(self.left) x2=(right) y1=(fmt(self.py(t))) y2=(fmt(self.py(t))) {}
                }
            }
            g class="axis" {
                line x1=(self.left) x2=(right) y1=(fmt(self.bottom())) y2=(fmt(self.bottom())) {}
                line x1=(self.left) x2=(self.left) y1=(TOP) y2=(fmt(self.bottom())) {}
                @for &t in &self.x.ticks {
                    line x1=(fmt(self.px(t))) x2=(fmt(self.px(t))) y1=(fmt(self.bottom())) y2=(fmt(self.bottom() + 4.0)) {}
                    text x=(fmt(self.px(t))) y=(fmt(self.bottom() + 16.0)) text-anchor="middle" { (self.x.tick_text(t)) }
                }
                @for &t in &self.y.ticks {
                    text x=(self.left - 6.0) y=(fmt(self.py(t) + 4.0)) text-anchor="end" { (tick_label(t)) }
                }
                text class="label" x=(fmt((self.left + right) / 2.0)) y=(fmt(self.height - 8.0)) text-anchor="middle" { (self.x.label) }
                text class="label" transform=(format!("translate({},{}) rotate(-90)", self.left - 44.0, fmt((TOP + self.bottom()) / 2.0))) text-anchor="middle" { (self.y.label) }
            }
        }
    }
}

/// Two decimals are finer than a pixel of the 640-unit-wide charts and keep files small.
fn fmt(v: f64) -> String {
    format!("{v:.2}")
}

fn svg(kind: &str, title: &str, height: f64, body: Markup) -> Markup {
    html! {
        svg class="plot" data-plot=(kind) role="img" aria-label=(title) viewBox=(format!("0 0 {WIDTH} {height}"))
            xmlns="http://www.w3.org/2000/svg" {
            title { (title) }
            (body)
        }
    }
}

/// A histogram of `values` in about 2√n equal bins (10 to 40) across `x`.
pub fn histogram(title: &str, values: &[f64], x: &Axis) -> Markup {
    let bins = ((2.0 * (values.len() as f64).sqrt()).round() as usize).clamp(10, 40);
    let (lo, hi) = (x.lo, x.hi);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0usize; bins];
    for v in values.iter().map(|&v| x.scale.apply(v)) {
        counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
    }
    let y = Axis::from_zero("documents", counts.iter().copied().max().unwrap_or(0) as f64);
    let frame = Frame { x, y: &y, height: 300.0, left: BOX_LEFT };
    let left = |i: usize| BOX_LEFT + i as f64 / bins as f64 * (WIDTH - BOX_LEFT - RIGHT);
    svg(
        "histogram",
        title,
        frame.height,
        html! {
            (frame.axes())
            g class="bars" {
                @for (i, &count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                    rect x=(fmt(left(i) + 0.5)) width=(fmt(left(i + 1) - left(i) - 1.0)) y=(fmt(frame.py(count as f64)))
                        height=(fmt(frame.bottom() - frame.py(count as f64))) {
                        title { (format!("{count} documents from {:.3} to {:.3}", lo + i as f64 * width, lo + (i + 1) as f64 * width)) }
                    }
                }
            }
        },
    )
}

/// One group of a box plot: its name, colour and values.
pub struct BoxGroup<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: Vec<f64>,
}

/// One horizontal box per group on the shared axis `x`: quartiles, whiskers to the furthest
/// value within 1.5 IQR (Tukey), the values beyond drawn as points.
pub fn box_plot(title: &str, groups: &[BoxGroup<'_>], x: &Axis) -> Markup {
    const ROW: f64 = 30.0;
    let height = TOP + BOTTOM + ROW * groups.len() as f64;
    let rows = Axis {
        label: String::new(),
        scale: Scale::Linear,
        lo: 0.0,
        hi: groups.len() as f64,
        ticks: vec![],
        names: vec![],
    };
    let frame = Frame { x, y: &rows, height, left: BOX_LEFT };
    let sorted_values: Vec<Vec<f64>> = groups
        .iter()
        .map(|group| {
            let mut values = group.values.clone();
            values.sort_by(f64::total_cmp);
            values
        })
        .collect();
    svg(
        "box",
        title,
        height,
        html! {
            (frame.axes())
            @for (row, (group, sorted)) in groups.iter().zip(&sorted_values).enumerate() {
                @if let Some(stats) = BoxStats::of(sorted) {
                    @let mid = TOP + ROW * (row as f64 + 0.5);
                    @let name: String = group.name.chars().take(16).collect();
                    g fill=(group.color) stroke=(group.color) {
                        title { (format!("{}: {} documents, median {:+.3}, quartiles {:+.3} to {:+.3}",
                            group.name, sorted.len(), stats.median, stats.q1, stats.q3)) }
                        text class="group" x=(BOX_LEFT - 8.0) y=(fmt(mid + 4.0)) text-anchor="end" stroke="none" fill="currentColor" { (name) }
                        line x1=(fmt(frame.px(stats.low))) x2=(fmt(frame.px(stats.high))) y1=(fmt(mid)) y2=(fmt(mid)) {}
                        rect class="box" x=(fmt(frame.px(stats.q1))) width=(fmt((frame.px(stats.q3) - frame.px(stats.q1)).max(1.0)))
                            y=(fmt(mid - ROW * 0.3)) height=(fmt(ROW * 0.6)) {}
                        line class="median" x1=(fmt(frame.px(stats.median))) x2=(fmt(frame.px(stats.median)))
                            y1=(fmt(mid - ROW * 0.3)) y2=(fmt(mid + ROW * 0.3)) {}
                        @for &v in sorted.iter().filter(|&&v| v < stats.low || v > stats.high) {
                            circle cx=(fmt(frame.px(v))) cy=(fmt(mid)) r="2.5" {}
                        }
                    }
                }
            }
        },
    )
}

struct BoxStats {
    q1: f64,
    median: f64,
    q3: f64,
    /// Whisker ends.
    low: f64,
    high: f64,
}

impl BoxStats {
    fn of(sorted: &[f64]) -> Option<BoxStats> {
        let (q1, median, q3) = (quantile(sorted, 0.25)?, quantile(sorted, 0.5)?, quantile(sorted, 0.75)?);
        let reach = 1.5 * (q3 - q1);
        let low = sorted.iter().copied().find(|&v| v >= q1 - reach)?;
        let high = sorted.iter().rev().copied().find(|&v| v <= q3 + reach)?;
        Some(BoxStats { q1, median, q3, low, high })
    }
}

/// A point of a scatter plot, with the text its tooltip shows.
pub struct Point<'a> {
    pub x: f64,
    pub y: f64,
    pub color: &'a str,
    pub label: String,
}

/// Points on `x` and `y`; with `diagonal`, the line y = x is drawn for reference.
pub fn scatter(kind: &str, title: &str, points: &[Point<'_>], x: &Axis, y: &Axis, diagonal: bool) -> Markup {
    let frame = Frame { x, y, height: 360.0, left: LEFT };
    let (lo, hi) = (x.lo.max(y.lo), x.hi.min(y.hi));
    svg(
        kind,
        title,
        frame.height,
        html! {
            (frame.axes())
            @if diagonal && lo < hi {
                line class="reference" x1=(fmt(frame.px(lo))) y1=(fmt(frame.py(lo))) x2=(fmt(frame.px(hi))) y2=(fmt(frame.py(hi))) {}
            }
            g class="points" {
                @for p in points {
                    circle cx=(fmt(frame.px(p.x))) cy=(fmt(frame.py(p.y))) r="3.5" fill=(p.color) { title { (p.label) } }
                }
            }
        },
    )
}

/// One row of a [`stacked_bars`] chart: its name and its parts' counts, in the colours'
/// order.
pub struct StackedRow<'a> {
    pub name: &'a str,
    pub counts: Vec<usize>,
}

/// One horizontal bar per row, its parts side by side as shares of the row's total, each in
/// its colour of `colors` (one per part) and named by `parts` in its title.
pub fn stacked_bars(kind: &str, title: &str, rows: &[StackedRow<'_>], parts: &[&str], colors: &[&str]) -> Markup {
    const BAR: f64 = 22.0;
    let height = TOP + BOTTOM + rows.len() as f64 * (BAR + 8.0);
    let x = Axis::between("share of the documents", Scale::Linear, 0.0, 1.0);
    let y = Axis::from_zero("", 1.0);
    let frame = Frame { x: &x, y: &y, height, left: BOX_LEFT };
    let (x0, x1) = (frame.px(0.0), frame.px(1.0));
    svg(
        kind,
        title,
        height,
        html! {
            g class="axis" {
                line x1=(fmt(x0)) x2=(fmt(x1)) y1=(fmt(frame.bottom())) y2=(fmt(frame.bottom())) {}
                @for &t in &x.ticks {
                    text x=(fmt(frame.px(t))) y=(fmt(frame.bottom() + 16.0)) text-anchor="middle" { (tick_label(t)) }
                }
                text class="label" x=(fmt((x0 + x1) / 2.0)) y=(fmt(height - 8.0)) text-anchor="middle" { (x.label) }
            }
            @for (r, row) in rows.iter().enumerate() {
                @let top = TOP + r as f64 * (BAR + 8.0);
                @let total = row.counts.iter().sum::<usize>().max(1) as f64;
                text x=(fmt(BOX_LEFT - 6.0)) y=(fmt(top + BAR / 2.0 + 4.0)) text-anchor="end" { (row.name) }
                @let starts: Vec<f64> = row.counts.iter().scan(0.0, |at, &c| { let start = *at; *at += c as f64 / total; Some(start) }).collect();
                @for (p, &count) in row.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                    rect x=(fmt(frame.px(starts[p]))) width=(fmt(frame.px(starts[p] + count as f64 / total) - frame.px(starts[p])))
                        y=(fmt(top)) height=(fmt(BAR)) fill=(colors[p % colors.len()]) {
                        title { (format!("{}: {} {count} of {} documents ({:.0}%)", row.name, parts[p], total, 100.0 * count as f64 / total)) }
                    }
                }
            }
        },
    )
}

/// A point of a line chart with an optional error bar from `lo` to `hi`.
pub struct Step {
    pub x: f64,
    pub y: f64,
    pub bar: Option<(f64, f64)>,
    pub label: String,
}

/// Points joined in order of x, with their error bars.
pub fn line_chart(kind: &str, title: &str, steps: &[Step], x: &Axis, y: &Axis) -> Markup {
    let frame = Frame { x, y, height: 320.0, left: LEFT };
    svg(kind, title, frame.height, html! { (frame.axes()) (series(&frame, steps, None)) })
}

/// One coloured line of a [`lines`] chart.
pub struct Line<'a> {
    pub color: &'a str,
    pub steps: Vec<Step>,
}

/// Several lines, each joining its points in order of x, with their error bars.
pub fn lines(kind: &str, title: &str, lines: &[Line<'_>], x: &Axis, y: &Axis) -> Markup {
    let frame = Frame { x, y, height: 360.0, left: LEFT };
    svg(
        kind,
        title,
        frame.height,
        html! {
            (frame.axes())
            @for line in lines {
                (series(&frame, &line.steps, Some(line.color)))
            }
        },
    )
}

/// A line through `steps` with their error bars and points, in `color` or the style's.
fn series(frame: &Frame<'_>, steps: &[Step], color: Option<&str>) -> Markup {
    let path: Vec<String> = steps.iter().map(|s| format!("{},{}", fmt(frame.px(s.x)), fmt(frame.py(s.y)))).collect();
    let stroke = color.map(|c| format!("stroke:{c}"));
    html! {
        polyline class="series" points=(path.join(" ")) style=[stroke.as_deref()] {}
        g class="points" {
            @for s in steps {
                @if let Some((lo, hi)) = s.bar {
                    line class="error" x1=(fmt(frame.px(s.x))) x2=(fmt(frame.px(s.x))) y1=(fmt(frame.py(lo))) y2=(fmt(frame.py(hi))) style=[stroke.as_deref()] {}
                }
                circle cx=(fmt(frame.px(s.x))) cy=(fmt(frame.py(s.y))) r="4" fill=[color] { title { (s.label) } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_ticks_are_round_numbers_inside_the_range() {
        let rounded = |ticks: Vec<f64>| ticks.iter().map(|t| (t * 1e9).round() / 1e9).collect::<Vec<_>>();
        assert_eq!(rounded(linear_ticks(-0.13, 0.92)), [0.0, 0.2, 0.4, 0.6, 0.8]);
        assert_eq!(linear_ticks(0.0, 37.0), [0.0, 10.0, 20.0, 30.0]);
        assert_eq!(count_ticks(60.0), [0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0]);
        assert_eq!(power_of_two_ticks(1.0, 16.0), [1.0, 2.0, 4.0, 8.0, 16.0]);
        assert_eq!(power_of_ten_ticks(1e-4, 1.0), [1e-4, 1e-3, 1e-2, 1e-1, 1.0]);
        assert_eq!(tick_label(1e-4), "1e-4");
        assert_eq!(tick_label(0.01), "0.01");
    }

    #[test]
    fn tukey_whiskers_stop_at_the_last_value_within_reach() {
        let stats = BoxStats::of(&[0.0, 1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
        assert_eq!((stats.q1, stats.median, stats.q3), (1.25, 2.5, 3.75));
        assert_eq!((stats.low, stats.high), (0.0, 4.0));
    }

    #[test]
    fn axes_map_their_range_onto_the_drawing_area() {
        let x = Axis::between("x", Scale::Linear, 0.0, 1.0);
        let y = Axis::from_zero("y", 10.0);
        let frame = Frame { x: &x, y: &y, height: 300.0, left: LEFT };
        let inner = WIDTH - LEFT - RIGHT;
        assert!((frame.px(0.5) - (LEFT + inner / 2.0)).abs() < 1e-9);
        assert!((frame.py(0.0) - (300.0 - BOTTOM)).abs() < 1e-9);
        let counts = Axis::between("n", Scale::LogCount, 0.0, 99.0);
        assert!(counts.fraction(9.0) > 0.45 && counts.fraction(9.0) < 0.55, "log(1+9) is half of log(1+99)");
    }
}
