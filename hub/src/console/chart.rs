//! Bar charts drawn on the server as inline SVG (plotters, SVG backend only): no script, no
//! external resource. Amounts are plotted as whole 万元 (integers), never as floats.

use plotters::prelude::*;

/// A vertical bar chart of `bars` (label, amount in fen), in 万元. Empty when there are none.
pub fn bars_svg(bars: &[(String, i64)]) -> String {
    if bars.is_empty() {
        return String::new();
    }
    let values: Vec<i64> = bars.iter().map(|(_, fen)| fen / 1_000_000).collect();
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let top = max + max / 10 + 1;
    let n = i32::try_from(bars.len()).unwrap_or(i32::MAX);
    let width = 160u32
        .saturating_add(u32::try_from(bars.len()).unwrap_or(0).saturating_mul(70))
        .clamp(480, 1300);
    let mut svg = String::new();
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (width, 280)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n).into_segmented(), 0i64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc("万元")
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => usize::try_from(*i)
                    .ok()
                    .and_then(|i| bars.get(i))
                    .map(|(l, _)| l.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .draw()?;
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(RGBColor(139, 26, 26).filled())
                .margin(8)
                .data(
                    values
                        .iter()
                        .enumerate()
                        .map(|(i, v)| (i32::try_from(i).unwrap_or(0), *v)),
                ),
        )?;
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
    fn draws_svg_without_inline_style() {
        let svg = super::bars_svg(&[("430112".into(), 120_000_000_000), ("431281".into(), 5)]);
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("430112"));
        assert!(
            !svg.contains("style="),
            "inline styles break the CSP: {svg}"
        );
        assert_eq!(super::bars_svg(&[]), "");
    }
}
