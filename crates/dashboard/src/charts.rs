//! Charts as pictures: a small renderer of bar and line charts to SVG, drawn on the server so
//! they read without JavaScript. The SVG sits inline in the page, so its colours come from the
//! stylesheet's custom properties (light and dark mode alike) and it scales to the width of
//! the screen through its `viewBox`. Every bar and point carries a `<title>`, which browsers
//! show on hover and screen readers read; the page shows the same numbers as a table and
//! offers them as CSV.
//!
//! A renderer of its own rather than a plotting crate: the charts need stacked bars and lines
//! over an hour, day, week or month axis, and horizontal bars for a funnel, themeable through CSS, with text escaped — a few hundred
//! lines, tested here, against a dependency tree that would bring fonts and image codecs.

use std::fmt::Write as _;

/// How the series are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One bar per bucket, the series stacked on each other (counts that add up).
    StackedBars,
    /// One line per series (levels, such as followers).
    Lines,
    /// One horizontal bar per bucket, of the first series, each labelled with its bucket and
    /// value (steps of a funnel, reasons): totals over the range rather than a time axis.
    Funnel,
}

/// One series: its legend label and a value per bucket.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) values: Vec<i64>,
}

/// A chart: the buckets' labels (days or hours) and the series over them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Chart {
    pub(crate) id: &'static str,
    pub(crate) title: String,
    pub(crate) kind: Kind,
    pub(crate) buckets: Vec<String>,
    pub(crate) series: Vec<Series>,
}

/// The drawing's size in its own units: a wide one for desktops and a narrow one for phones
/// (the page shows one of them by the screen's width), so the text stays readable when the
/// drawing is scaled to the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Size {
    Wide,
    Narrow,
}

impl Size {
    fn width(self) -> f64 {
        match self {
            Size::Wide => 720.0,
            Size::Narrow => 360.0,
        }
    }

    fn height(self) -> f64 {
        match self {
            Size::Wide => 240.0,
            Size::Narrow => 220.0,
        }
    }

    /// X-axis labels shown at most (the rest are in the titles and the table).
    fn x_labels(self) -> usize {
        match self {
            Size::Wide => 6,
            Size::Narrow => 3,
        }
    }

    fn class(self) -> &'static str {
        match self {
            Size::Wide => "wide",
            Size::Narrow => "narrow",
        }
    }
}

const LEFT: f64 = 44.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 28.0;
/// Colours in the stylesheet (`--chart-0` …): series beyond these reuse them in turn.
const PALETTE: usize = 6;

/// The smallest "nice" number (1, 2 or 5 × 10ⁿ) at or above `max`, for the axis' top.
pub(crate) fn nice_ceiling(max: i64) -> i64 {
    if max <= 0 {
        return 1;
    }
    let mut step = 1_i64;
    loop {
        for factor in [1, 2, 5] {
            let candidate = step.saturating_mul(factor);
            if candidate >= max {
                return candidate;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Text for XML: `&`, `<`, `>` and quotes escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A count for an axis: `12`, `3.4k`, `1.2M`.
fn short(value: i64) -> String {
    match value {
        v if v >= 10_000_000 => format!("{}M", v / 1_000_000),
        v if v >= 1_000_000 => format!("{:.1}M", v as f64 / 1e6),
        v if v >= 10_000 => format!("{}k", v / 1_000),
        v if v >= 1_000 => format!("{:.1}k", v as f64 / 1e3),
        v => v.to_string(),
    }
}

impl Chart {
    /// Whether there is anything to draw.
    pub(crate) fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.values.iter().all(|v| *v == 0))
    }

    /// The top of the value axis.
    fn axis_max(&self) -> i64 {
        let max = match self.kind {
            Kind::StackedBars => (0..self.buckets.len())
                .map(|i| {
                    self.series
                        .iter()
                        .map(|s| s.values.get(i).copied().unwrap_or(0))
                        .sum()
                })
                .max()
                .unwrap_or(0),
            Kind::Lines | Kind::Funnel => self
                .series
                .iter()
                .flat_map(|s| s.values.iter().copied())
                .max()
                .unwrap_or(0),
        };
        nice_ceiling(max)
    }

    /// The chart as an inline SVG element of `size`, labelled for screen readers by `title`.
    pub(crate) fn svg(&self, size: Size, empty_text: &str) -> String {
        if self.kind == Kind::Funnel {
            return self.funnel_svg(size, empty_text);
        }
        let (width, height) = (size.width(), size.height());
        let mut out = String::with_capacity(4096 + self.buckets.len() * self.series.len() * 120);
        let _ = write!(
            out,
            "<svg class=\"chart {class}\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
             aria-labelledby=\"{id}-{class}-title\">\
             <title id=\"{id}-{class}-title\">{title}</title>",
            class = size.class(),
            id = self.id,
            title = escape(&self.title),
        );
        let plot_w = width - LEFT - RIGHT;
        let plot_h = height - TOP - BOTTOM;
        let max = self.axis_max();
        let y = |value: i64| TOP + plot_h - (value as f64 / max as f64) * plot_h;
        // Grid lines at whole values: quarters of the top when they are whole, else halves,
        // else only zero and the top.
        let parts = [4, 2, 1].into_iter().find(|p| max % p == 0).unwrap_or(1);
        for part in 0..=parts {
            let value = max * part / parts;
            let at = y(value);
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{at:.1}\" y2=\"{at:.1}\"/>\
                 <text class=\"axis\" x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{label}</text>",
                x2 = width - RIGHT,
                lx = LEFT - 6.0,
                ty = at + 4.0,
                label = short(value),
            );
        }
        let n = self.buckets.len().max(1);
        let slot = plot_w / n as f64;
        // X labels: the first, the last and evenly between.
        let every = n.div_ceil(size.x_labels()).max(1);
        for (i, bucket) in self.buckets.iter().enumerate() {
            if i % every == 0 || i + 1 == n {
                if i + 1 == n && i % every != 0 && (i % every) * 2 < every {
                    // Too close to the previous label: the last bucket is in the titles.
                    continue;
                }
                let _ = write!(
                    out,
                    "<text class=\"axis\" x=\"{x:.1}\" y=\"{ty}\" text-anchor=\"middle\">{label}</text>",
                    x = LEFT + slot * (i as f64 + 0.5),
                    ty = height - 8.0,
                    label = escape(bucket),
                );
            }
        }
        if self.is_empty() {
            let _ = write!(
                out,
                "<text class=\"empty-chart\" x=\"{x}\" y=\"{y}\" text-anchor=\"middle\">{text}</text>",
                x = LEFT + plot_w / 2.0,
                y = TOP + plot_h / 2.0,
                text = escape(empty_text),
            );
        }
        match self.kind {
            Kind::StackedBars => {
                let bar = (slot * 0.7).max(1.0);
                for (i, bucket) in self.buckets.iter().enumerate() {
                    let mut base = 0_i64;
                    for (s, series) in self.series.iter().enumerate() {
                        let value = series.values.get(i).copied().unwrap_or(0);
                        if value == 0 {
                            continue;
                        }
                        let (top, bottom) = (y(base + value), y(base));
                        let _ = write!(
                            out,
                            "<rect class=\"s{c}\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{bar:.1}\" \
                             height=\"{h:.1}\"><title>{b} · {l}: {value}</title></rect>",
                            c = s % PALETTE,
                            x = LEFT + slot * i as f64 + (slot - bar) / 2.0,
                            h = (bottom - top).max(0.5),
                            b = escape(bucket),
                            l = escape(&series.label),
                        );
                        base += value;
                    }
                }
            }
            Kind::Funnel => {}
            Kind::Lines => {
                for (s, series) in self.series.iter().enumerate() {
                    let points: Vec<String> = series
                        .values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| format!("{:.1},{:.1}", LEFT + slot * (i as f64 + 0.5), y(*v)))
                        .collect();
                    let _ = write!(
                        out,
                        "<polyline class=\"line s{c}\" points=\"{p}\"/>",
                        c = s % PALETTE,
                        p = points.join(" "),
                    );
                    for (i, value) in series.values.iter().enumerate() {
                        let _ = write!(
                            out,
                            "<circle class=\"dot s{c}\" cx=\"{x:.1}\" cy=\"{cy:.1}\" r=\"3\">\
                             <title>{b} · {l}: {value}</title></circle>",
                            c = s % PALETTE,
                            x = LEFT + slot * (i as f64 + 0.5),
                            cy = y(*value),
                            b = escape(self.buckets.get(i).map_or("", String::as_str)),
                            l = escape(&series.label),
                        );
                    }
                }
            }
        }
        out.push_str("</svg>");
        out
    }

    /// A funnel: a row per bucket, its label over a bar as long as its share of the largest
    /// value, the value at the bar's end.
    fn funnel_svg(&self, size: Size, empty_text: &str) -> String {
        const ROW: f64 = 38.0;
        const PAD: f64 = 8.0;
        let width = size.width();
        let values = self.series.first().map_or(&[][..], |s| &s.values[..]);
        let rows = self.buckets.len().max(1) as f64;
        let height = TOP + rows * ROW;
        let mut out = String::with_capacity(1024 + self.buckets.len() * 240);
        let _ = write!(
            out,
            "<svg class=\"chart funnel {class}\" viewBox=\"0 0 {width} {height}\" role=\"img\" \
             aria-labelledby=\"{id}-{class}-title\">\
             <title id=\"{id}-{class}-title\">{title}</title>",
            class = size.class(),
            id = self.id,
            title = escape(&self.title),
        );
        if self.is_empty() {
            let _ = write!(
                out,
                "<text class=\"empty-chart\" x=\"{x}\" y=\"{y}\" text-anchor=\"middle\">{text}</text>",
                x = width / 2.0,
                y = height / 2.0,
                text = escape(empty_text),
            );
        }
        let max = values.iter().copied().max().unwrap_or(0).max(1);
        // Room at the end of the longest bar for its number.
        let full = width - 2.0 * PAD - 56.0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            let value = values.get(i).copied().unwrap_or(0);
            let top = TOP + i as f64 * ROW;
            let long = if value > 0 {
                (value as f64 / max as f64 * full).max(2.0)
            } else {
                0.0
            };
            let b = escape(bucket);
            let _ = write!(
                out,
                "<text class=\"axis step\" x=\"{PAD}\" y=\"{ty:.1}\">{b}</text>",
                ty = top + 10.0
            );
            if value > 0 {
                let _ = write!(
                    out,
                    "<rect class=\"s0\" x=\"{PAD}\" y=\"{ry:.1}\" width=\"{long:.1}\" height=\"14\">\
                     <title>{b}: {value}</title></rect>",
                    ry = top + 16.0,
                );
            }
            let _ = write!(
                out,
                "<text class=\"axis\" x=\"{vx:.1}\" y=\"{vy:.1}\">{value}</text>",
                vx = PAD + long + 6.0,
                vy = top + 27.0,
            );
        }
        out.push_str("</svg>");
        out
    }

    /// The legend: each series' label with its colour class.
    pub(crate) fn legend(&self) -> Vec<(String, String)> {
        if self.kind == Kind::Funnel {
            // Each bar is labelled where it is drawn.
            return Vec::new();
        }
        self.series
            .iter()
            .enumerate()
            .map(|(s, series)| (format!("s{}", s % PALETTE), series.label.clone()))
            .collect()
    }

    /// The data as CSV: a header of the bucket column and each series, a row per bucket.
    pub(crate) fn csv(&self, bucket_header: &str) -> String {
        let mut out = String::new();
        crate::audit::csv_field(&mut out, bucket_header);
        for series in &self.series {
            out.push(',');
            crate::audit::csv_field(&mut out, &series.label);
        }
        out.push_str("\r\n");
        for (i, bucket) in self.buckets.iter().enumerate() {
            crate::audit::csv_field(&mut out, bucket);
            for series in &self.series {
                let _ = write!(out, ",{}", series.values.get(i).copied().unwrap_or(0));
            }
            out.push_str("\r\n");
        }
        out
    }

    /// The data as table rows: the bucket and each series' value.
    pub(crate) fn rows(&self) -> Vec<(String, Vec<i64>)> {
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, bucket)| {
                (
                    bucket.clone(),
                    self.series
                        .iter()
                        .map(|s| s.values.get(i).copied().unwrap_or(0))
                        .collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(kind: Kind, series: Vec<(&str, Vec<i64>)>) -> Chart {
        let n = series.first().map_or(0, |s| s.1.len());
        Chart {
            id: "test",
            title: "Logins <&> \"today\"".to_owned(),
            kind,
            buckets: (1..=n).map(|d| format!("11-{d:02}")).collect(),
            series: series
                .into_iter()
                .map(|(label, values)| Series {
                    label: label.to_owned(),
                    values,
                })
                .collect(),
        }
    }

    #[test]
    fn the_axis_top_is_the_next_nice_number() {
        let cases = [
            (0, 1),
            (1, 1),
            (3, 5),
            (7, 10),
            (11, 20),
            (40, 50),
            (51, 100),
            (1_234, 2_000),
        ];
        for (max, top) in cases {
            assert_eq!(nice_ceiling(max), top, "{max}");
        }
    }

    #[test]
    fn stacked_bars_have_one_titled_rect_per_nonzero_value_stacked_to_the_total() {
        let c = chart(
            Kind::StackedBars,
            vec![("ok", vec![3, 0, 5]), ("failed", vec![1, 2, 0])],
        );
        let svg = c.svg(Size::Wide, "no data");
        assert_eq!(svg.matches("<rect ").count(), 4);
        assert!(svg.contains("<title>11-01 · ok: 3</title>"));
        assert!(svg.contains("<title>11-02 · failed: 2</title>"));
        // The tallest stack is 5, the axis' top: the third bucket's bar reaches the top.
        let top = format!("y=\"{TOP:.1}\"");
        assert!(svg.contains(&top), "{svg}");
        assert!(!svg.contains("no data"));
    }

    #[test]
    fn lines_have_a_titled_point_per_bucket() {
        let c = chart(Kind::Lines, vec![("followers", vec![10, 12, 11, 15])]);
        let svg = c.svg(Size::Wide, "no data");
        assert_eq!(svg.matches("<circle ").count(), 4);
        assert_eq!(svg.matches("<polyline ").count(), 1);
        assert!(svg.contains("<title>11-04 · followers: 15</title>"));
    }

    #[test]
    fn grid_lines_fall_on_whole_values() {
        for (max, labels) in [
            (20, vec!["0", "5", "10", "15", "20"]),
            (10, vec!["0", "5", "10"]),
            (5, vec!["0", "5"]),
        ] {
            let c = chart(Kind::StackedBars, vec![("n", vec![max])]);
            let svg = c.svg(Size::Wide, "");
            let found: Vec<&str> = svg
                .split("text-anchor=\"end\">")
                .skip(1)
                .map(|rest| rest.split('<').next().unwrap())
                .collect();
            assert_eq!(found, labels, "{max}");
        }
    }

    #[test]
    fn text_is_escaped_and_an_empty_chart_says_so() {
        let c = chart(Kind::StackedBars, vec![("<b>", vec![0, 0])]);
        let svg = c.svg(Size::Wide, "暂无数据");
        assert!(svg.contains("Logins &lt;&amp;&gt; &quot;today&quot;"));
        assert!(!svg.contains("<b>"));
        assert!(svg.contains("暂无数据"));
        assert!(c.is_empty());
    }

    #[test]
    fn x_labels_are_thinned_to_a_few() {
        let c = chart(Kind::StackedBars, vec![("n", vec![1; 30])]);
        for size in [Size::Wide, Size::Narrow] {
            let svg = c.svg(size, "");
            let labels = svg.matches("text-anchor=\"middle\">11-").count();
            let most = size.x_labels();
            assert!(
                (most - 1..=most + 1).contains(&labels),
                "{size:?}: {labels}"
            );
        }
    }

    #[test]
    fn csv_and_rows_carry_every_value() {
        let c = chart(
            Kind::StackedBars,
            vec![("ok", vec![3, 4]), ("a,b", vec![0, 1])],
        );
        assert_eq!(c.csv("day"), "day,ok,\"a,b\"\r\n11-01,3,0\r\n11-02,4,1\r\n");
        assert_eq!(c.rows()[1], ("11-02".to_owned(), vec![4, 1]));
    }

    #[test]
    fn a_funnel_has_a_labelled_bar_per_step_scaled_to_the_largest() {
        let mut funnel = chart(Kind::Funnel, vec![("logins", vec![10, 5, 0])]);
        funnel.buckets = vec![
            "Started".into(),
            "Back <from> WeChat".into(),
            "Followed".into(),
        ];
        let svg = funnel.svg(Size::Wide, "none");
        assert!(svg.contains("<title>Started: 10</title>"), "{svg}");
        assert!(
            svg.contains("<title>Back &lt;from&gt; WeChat: 5</title>"),
            "{svg}"
        );
        // A step nobody reached has its label and a zero, but no bar to hover.
        assert!(svg.contains(">Followed</text>") && !svg.contains("Followed: 0</title>"));
        let widths: Vec<f64> = svg
            .match_indices("width=\"")
            .map(|(i, _)| {
                let rest = &svg[i + 7..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(widths.len(), 2);
        assert!((widths[0] - 2.0 * widths[1]).abs() < 0.2, "{widths:?}");
        assert!(funnel.legend().is_empty());
        assert!(
            chart(Kind::Funnel, vec![("x", vec![0, 0])])
                .svg(Size::Narrow, "none")
                .contains(">none<")
        );
    }

    #[test]
    fn short_counts_for_the_axis() {
        assert_eq!(short(999), "999");
        assert_eq!(short(1_500), "1.5k");
        assert_eq!(short(25_000), "25k");
        assert_eq!(short(2_500_000), "2.5M");
    }
}
