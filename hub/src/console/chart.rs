//! Bar charts drawn on the server as inline SVG (plotters, SVG backend only): no script, no
//! external resource, no inline style (the console's CSP forbids it). Amounts are plotted as
//! whole 万元 (integers), never as floats.

use plotters::prelude::*;

/// The three figures that must stay in step, in the order drawn.
const COLOURS: [RGBColor; 3] = [
    RGBColor(139, 26, 26),
    RGBColor(214, 137, 16),
    RGBColor(46, 125, 50),
];

/// A grouped bar chart: for each `(label, [budget approved, contracted, paid])` in fen, three
/// bars side by side, in 万元, with a legend naming the `series`. Empty when there are none.
pub fn in_step_svg(groups: &[(String, [i64; 3])], series: [&str; 3], unit: &str) -> String {
    if groups.is_empty() {
        return String::new();
    }
    let values: Vec<[i64; 3]> = groups
        .iter()
        .map(|(_, v)| v.map(|fen| fen / 1_000_000))
        .collect();
    let max = values
        .iter()
        .flat_map(|v| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let top = max + max / 8 + 1;
    // Four slots a group: three bars and a gap.
    let slots = i32::try_from(groups.len().saturating_mul(4)).unwrap_or(i32::MAX);
    let width = u32::try_from(groups.len())
        .unwrap_or(0)
        .saturating_mul(96)
        .saturating_add(160)
        .clamp(520, 1300);
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (width, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(34)
            .y_label_area_size(70)
            .build_cartesian_2d(0..slots, 0i64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(usize::try_from(slots).unwrap_or(0).saturating_add(1))
            .y_desc(unit)
            .x_label_formatter(&|slot| {
                if slot % 4 == 1 {
                    usize::try_from(slot / 4)
                        .ok()
                        .and_then(|i| groups.get(i))
                        .map(|(l, _)| l.clone())
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()?;
        for (s, colour) in COLOURS.iter().enumerate() {
            let bars = values.iter().enumerate().map(|(i, v)| {
                let x = i32::try_from(i * 4 + s).unwrap_or(0);
                Rectangle::new([(x, 0), (x + 1, v[s])], colour.filled())
            });
            chart
                .draw_series(bars)?
                .label(series[s])
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        root.present()?;
        Ok(())
    })();
    match drawn {
        Ok(()) => svg,
        Err(e) => {
            tracing::warn!(error = %e, "cannot draw a console chart");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_grouped_svg_without_inline_style() {
        let svg = super::in_step_svg(
            &[
                ("望城区".into(), [120_000_000_000, 80_000_000_000, 5]),
                ("431281".into(), [5, 0, 0]),
            ],
            ["批复预算", "合同金额", "已支付"],
            "万元",
        );
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("望城区") && svg.contains("合同金额"));
        assert!(
            !svg.contains("style="),
            "inline styles break the CSP: {svg}"
        );
        assert_eq!(super::in_step_svg(&[], ["a", "b", "c"], "万元"), "");
    }
}
