//! A tiny SVG writer: elements as strings with attributes in the order given and numbers
//! rounded to 0.1 px, so the same input always writes the same bytes (the snapshot tests
//! depend on it). Hand-built rather than `plotters`: the pages need stable ids, classes and
//! `data-*` attributes on every element for the browser tests and the inline scripts, which a
//! plotting backend does not expose, and the whole writer is smaller than the dependency.

use std::fmt::{Display, Write};

/// Escapes text for an attribute value or element content.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
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

/// A coordinate rounded to 0.1, without a trailing `.0` (`12`, `12.5`, `-3.1`).
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "0".into();
    }
    let r = (x * 10.0).round() / 10.0;
    // `-0` prints as `0`: rounding must not make equal layouts print differently.
    let r = if r == 0.0 { 0.0 } else { r };
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// One element under construction.
pub struct Tag {
    name: &'static str,
    head: String,
}

impl Tag {
    pub fn new(name: &'static str) -> Tag {
        Tag {
            name,
            head: format!("<{name}"),
        }
    }

    /// A text attribute (escaped).
    pub fn a(mut self, key: &str, value: impl Display) -> Tag {
        let _ = write!(self.head, " {key}=\"{}\"", esc(&value.to_string()));
        self
    }

    /// A numeric attribute (rounded by [`num`]).
    pub fn x(mut self, key: &str, value: f64) -> Tag {
        let _ = write!(self.head, " {key}=\"{}\"", num(value));
        self
    }

    /// The element with no content: `<rect …/>`.
    pub fn empty(self) -> String {
        self.head + "/>"
    }

    /// The element around already-written markup.
    pub fn wrap(self, inner: &str) -> String {
        format!("{}>{inner}</{}>", self.head, self.name)
    }

    /// The element around text (escaped).
    pub fn text(self, text: &str) -> String {
        let inner = esc(text);
        self.wrap(&inner)
    }

    /// The element with a `<title>` child: the browser's hover tooltip.
    pub fn titled(self, title: &str) -> String {
        let inner = Tag::new("title").text(title);
        self.wrap(&inner)
    }
}

/// An `<svg>` root of the given size around `inner`.
pub fn svg(class: &str, width: f64, height: f64, inner: &str) -> String {
    Tag::new("svg")
        .a("xmlns", "http://www.w3.org/2000/svg")
        .a("class", class)
        .x("width", width)
        .x("height", height)
        .a("viewBox", format!("0 0 {} {}", num(width), num(height)))
        .wrap(inner)
}

/// A colour-blind-friendly categorical palette (Okabe-Ito, then tints).
pub const PALETTE: [&str; 12] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999999",
    "#7fb8d8", "#f2cf7f", "#7fcfb9", "#e6bcd3",
];

/// The palette colour for index `i`, cycling.
pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// One segment of a stacked bar.
pub struct Segment<'a> {
    pub label: &'a str,
    pub value: f64,
}

/// A horizontal stacked bar with a legend underneath: `unit` labels the values, `limit`
/// (e.g. the device's memory capacity) draws a marked line and sets the scale when larger
/// than the stack.
pub fn stacked_bar(
    class: &str,
    segments: &[Segment],
    unit: &str,
    limit: Option<(&str, f64)>,
) -> String {
    let width = 860.0;
    let bar_w = 760.0;
    let total: f64 = segments.iter().map(|s| s.value.max(0.0)).sum();
    let scale_max = limit.map(|l| l.1).unwrap_or(0.0).max(total).max(1e-12);
    let mut s = String::new();
    let mut x = 10.0;
    for (i, seg) in segments.iter().enumerate() {
        let w = seg.value.max(0.0) / scale_max * bar_w;
        let pct = if total > 0.0 {
            seg.value / total * 100.0
        } else {
            0.0
        };
        let title = format!("{}: {:.2} {unit} ({pct:.1}%)", seg.label, seg.value);
        s += &Tag::new("rect")
            .a("class", "seg")
            .a("data-label", seg.label)
            .x("x", x)
            .x("y", 10.0)
            .x("width", w)
            .x("height", 34.0)
            .a("fill", colour(i))
            .titled(&title);
        x += w;
    }
    s += &Tag::new("text")
        .x("x", x + 6.0)
        .x("y", 32.0)
        .text(&format!("{total:.2} {unit}"));
    if let Some((name, v)) = limit {
        let lx = 10.0 + v / scale_max * bar_w;
        let over = total > v;
        s += &Tag::new("line")
            .a("class", if over { "limit over" } else { "limit" })
            .x("x1", lx)
            .x("y1", 2.0)
            .x("x2", lx)
            .x("y2", 52.0)
            .empty();
        s += &Tag::new("text")
            .a("class", "limit-label")
            .x("x", lx)
            .x("y", 64.0)
            .a("text-anchor", "end")
            .text(&format!("{name} {v:.1} {unit}"));
    }
    // The legend: three entries a row.
    for (i, seg) in segments.iter().enumerate() {
        let lx = 10.0 + (i % 3) as f64 * 285.0;
        let ly = 80.0 + (i / 3) as f64 * 20.0;
        s += &Tag::new("rect")
            .x("x", lx)
            .x("y", ly - 10.0)
            .x("width", 12.0)
            .x("height", 12.0)
            .a("fill", colour(i))
            .empty();
        let pct = if total > 0.0 {
            seg.value / total * 100.0
        } else {
            0.0
        };
        s += &Tag::new("text").x("x", lx + 16.0).x("y", ly).text(&format!(
            "{} {:.2} {unit} ({pct:.1}%)",
            seg.label, seg.value
        ));
    }
    let height = 90.0 + segments.len().div_ceil(3) as f64 * 20.0;
    svg(class, width, height, &s)
}

/// One point of a line chart: its x label, and its y value if it has one (a point without
/// one is drawn as a cross on the axis, e.g. a layout that does not fit).
pub struct Point {
    pub label: String,
    pub y: Option<f64>,
    pub title: String,
}

/// A line chart over evenly spaced categories (device counts double from one to the next).
pub fn line_chart(class: &str, points: &[Point], y_label: &str, y_min_max: f64) -> String {
    let (width, height) = (860.0, 300.0);
    let (left, right, top, bottom) = (60.0, 20.0, 20.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let y_max = points
        .iter()
        .filter_map(|p| p.y)
        .fold(y_min_max, f64::max)
        .max(1e-12);
    let px = |i: usize| {
        if points.len() <= 1 {
            left + plot_w / 2.0
        } else {
            left + i as f64 * plot_w / (points.len() - 1) as f64
        }
    };
    let py = |y: f64| top + plot_h - y / y_max * plot_h;
    let mut s = String::new();
    for k in 0..=4 {
        let v = y_max * k as f64 / 4.0;
        s += &Tag::new("line")
            .a("class", "grid")
            .x("x1", left)
            .x("y1", py(v))
            .x("x2", width - right)
            .x("y2", py(v))
            .empty();
        s += &Tag::new("text")
            .x("x", left - 6.0)
            .x("y", py(v) + 4.0)
            .a("text-anchor", "end")
            .text(&format!("{v:.0}"));
    }
    s += &Tag::new("text")
        .x("x", 14.0)
        .x("y", top + plot_h / 2.0)
        .a(
            "transform",
            format!("rotate(-90 14 {})", num(top + plot_h / 2.0)),
        )
        .a("text-anchor", "middle")
        .text(y_label);
    let mut path = String::new();
    for (i, p) in points.iter().enumerate() {
        if let Some(y) = p.y {
            let cmd = if path.is_empty() { 'M' } else { 'L' };
            let _ = write!(path, "{cmd}{} {}", num(px(i)), num(py(y)));
        }
        s += &Tag::new("text")
            .x("x", px(i))
            .x("y", height - bottom + 18.0)
            .a("text-anchor", "middle")
            .text(&p.label);
    }
    if !path.is_empty() {
        s += &Tag::new("path").a("class", "curve").a("d", path).empty();
    }
    for (i, p) in points.iter().enumerate() {
        s += &match p.y {
            Some(y) => Tag::new("circle")
                .a("class", "pt")
                .x("cx", px(i))
                .x("cy", py(y))
                .x("r", 5.0)
                .titled(&p.title),
            None => Tag::new("text")
                .a("class", "pt nofit")
                .x("x", px(i))
                .x("y", py(0.0) + 4.0)
                .a("text-anchor", "middle")
                .wrap(&format!("×{}", Tag::new("title").text(&p.title))),
        };
    }
    svg(class, width, height, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_rounded_and_stable() {
        assert_eq!(num(12.0), "12");
        assert_eq!(num(12.04), "12");
        assert_eq!(num(12.06), "12.1");
        assert_eq!(num(-0.04), "0");
        assert_eq!(num(f64::NAN), "0");
    }

    #[test]
    fn text_is_escaped() {
        let t = Tag::new("text").a("data-x", "a\"b").text("<&>");
        assert_eq!(t, "<text data-x=\"a&quot;b\">&lt;&amp;&gt;</text>");
    }

    #[test]
    fn capacity_line_is_marked_over_when_exceeded() {
        let segs = [
            Segment {
                label: "a",
                value: 6.0,
            },
            Segment {
                label: "b",
                value: 5.0,
            },
        ];
        let s = stacked_bar("mem", &segs, "GiB", Some(("capacity", 10.0)));
        assert!(s.contains("class=\"limit over\""), "{s}");
        assert_eq!(s.matches("class=\"seg\"").count(), 2);
        let s = stacked_bar("mem", &segs, "GiB", Some(("capacity", 20.0)));
        assert!(s.contains("class=\"limit\""), "{s}");
    }
}
