//! Figures and how they are shown. A [`Figure`] is one measured value; it may name the machine
//! limit it is bounded by (measured in the same run) with the ratio to it, and the bar it is
//! held to (a [`Target`], from the performance issue) with PASS or MISS and how far from the
//! bar it is. The benchmark reports; it never asserts.

use std::time::Duration;

use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    /// The limit this figure is compared with, by name, and the ratio to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
}

/// The bar a figure is held to.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The bar as people read it: `≥ 0.80 ×` (of the limit), `≤ 60 s`, `= 0`.
    pub bar: String,
    pub pass: bool,
    /// The figure (or its ratio) over the bar's number: how far from the bar it is.
    pub of_bar: f64,
    /// A second, harder bar (a stretch goal), reported beside the first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stretch: Option<Box<Target>>,
}

impl Target {
    fn at_least(bar: String, got: f64, need: f64) -> Target {
        Target {
            bar,
            pass: got >= need,
            of_bar: if need > 0.0 { got / need } else { 1.0 },
            stretch: None,
        }
    }

    fn at_most(bar: String, got: f64, allowed: f64) -> Target {
        Target {
            bar,
            pass: got <= allowed,
            of_bar: if allowed > 0.0 {
                got / allowed
            } else if got > 0.0 {
                f64::INFINITY
            } else {
                0.0
            },
            stretch: None,
        }
    }

    /// `PASS`, or `MISS` with how far from the bar (a share of it for a floor, a multiple
    /// of it for a ceiling); a stretch bar follows.
    pub fn verdict(&self) -> String {
        let mut out = if self.pass {
            "PASS".to_owned()
        } else if self.bar.starts_with('≥') || self.bar.starts_with('>') {
            format!("MISS ({:.0} % of the bar)", self.of_bar * 100.0)
        } else if self.of_bar.is_finite() {
            format!("MISS ({:.2} × the bar)", self.of_bar)
        } else {
            "MISS".to_owned()
        };
        if let Some(s) = &self.stretch {
            let word = if s.pass { "met" } else { "not met" };
            out.push_str(&format!("; stretch {} {word}", s.bar));
        }
        out
    }
}

impl Figure {
    /// A figure with no limit and no bar.
    pub fn value(name: &str, unit: &'static str, value: f64) -> Figure {
        Figure {
            name: name.to_owned(),
            unit,
            value,
            limit: None,
            ratio: None,
            target: None,
        }
    }

    /// `count` things in `took`, per second.
    pub fn rate(name: &str, count: usize, took: Duration) -> Figure {
        Figure::value(name, "/s", count as f64 / took.as_secs_f64().max(1e-9))
    }

    /// A duration in milliseconds.
    pub fn ms(name: &str, ms: f64) -> Figure {
        Figure::value(name, "ms", ms)
    }

    /// A size in bytes, shown in megabytes (10^6).
    pub fn megabytes(name: &str, bytes: u64) -> Figure {
        Figure::value(name, "MB", bytes as f64 / 1e6)
    }

    /// Compares this figure with `limit` (the ratio is this value over the limit's).
    pub fn against(mut self, limit: &Figure) -> Figure {
        self.ratio = Some(self.value / limit.value);
        self.limit = Some(limit.name.clone());
        self
    }

    /// The bar: the ratio to the limit is at least `bar`.
    pub fn ratio_at_least(mut self, bar: f64) -> Figure {
        let got = self.ratio.unwrap_or(0.0);
        self.target = Some(Target::at_least(format!("≥ {bar:.2} ×"), got, bar));
        self
    }

    /// A stretch bar beside the first one: the ratio is above `bar`.
    pub fn stretch_ratio_above(mut self, bar: f64) -> Figure {
        let got = self.ratio.unwrap_or(0.0);
        if let Some(t) = &mut self.target {
            let mut s = Target::at_least(format!("> {bar:.2} ×"), got, bar);
            s.pass = got > bar;
            t.stretch = Some(Box::new(s));
        }
        self
    }

    /// The bar: the value is at most `bar` (in the figure's unit).
    pub fn at_most(mut self, bar: f64) -> Figure {
        let text = if bar == 0.0 {
            "= 0".to_owned()
        } else {
            format!("≤ {} {}", number(bar, self.unit), self.unit)
        };
        self.target = Some(Target::at_most(text, self.value, bar));
        self
    }

    /// The bar: the value is at least `bar` (in the figure's unit).
    pub fn at_least(mut self, bar: f64) -> Figure {
        let text = format!("≥ {} {}", number(bar, self.unit), self.unit);
        self.target = Some(Target::at_least(text, self.value, bar));
        self
    }
}

/// `value` as people read it in `unit`: rates and counts whole with thousands separators,
/// times and sizes with a few decimals.
pub fn number(value: f64, unit: &str) -> String {
    match unit {
        "ms" if value < 10.0 => format!("{value:.2}"),
        "ms" | "s" | "MB" | "%" => format!("{value:.1}"),
        "×" => format!("{value:.2}"),
        _ => thousands(value.round() as i64),
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// Prints `figures` as a table: value and unit, the ratio to the limit (named at the end of
/// the line), the bar and the verdict.
pub fn print_figures(figures: &[Figure]) {
    for f in figures {
        let ratio = f.ratio.map_or_else(String::new, |r| format!("{r:.3} ×"));
        let (bar, verdict) = f
            .target
            .as_ref()
            .map_or_else(Default::default, |t| (t.bar.clone(), t.verdict()));
        let limit = f
            .limit
            .as_ref()
            .map_or_else(String::new, |l| format!("  (ratio to: {l})"));
        let line = format!(
            "  {:<52} {:>12} {:<3} {:>9}  {:<11} {verdict}{limit}",
            f.name,
            number(f.value, f.unit),
            f.unit,
            ratio,
            bar
        );
        println!("{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_say_how_far_from_the_bar() {
        let limit = Figure::value("ring sign, one core", "/s", 50_000.0);
        let f = Figure::value("intake", "/s", 20_000.0)
            .against(&limit)
            .ratio_at_least(0.8);
        let t = f.target.clone().unwrap_or_else(|| unreachable!());
        assert!(!t.pass);
        assert_eq!(t.verdict(), "MISS (50 % of the bar)");
        let f = Figure::value("catch-up", "s", 30.0).at_most(60.0);
        assert_eq!(f.target.map(|t| t.verdict()).as_deref(), Some("PASS"));
        let f = Figure::value("errors", "count", 3.0).at_most(0.0);
        let t = f.target.unwrap_or_else(|| unreachable!());
        assert_eq!((t.bar.as_str(), t.verdict().as_str()), ("= 0", "MISS"));
        let f = Figure::ms("p99", 25.0).at_most(10.0);
        assert_eq!(
            f.target.map(|t| t.verdict()).as_deref(),
            Some("MISS (2.50 × the bar)")
        );
        let f = Figure::value("ingest", "/s", 90.0)
            .against(&Figure::value("verify", "/s", 100.0))
            .ratio_at_least(0.85)
            .stretch_ratio_above(1.0);
        assert_eq!(
            f.target.map(|t| t.verdict()).as_deref(),
            Some("PASS; stretch > 1.00 × not met")
        );
        assert_eq!(number(1_234_567.4, "/s"), "1,234,567");
        assert_eq!(number(4.256, "ms"), "4.26");
    }
}
