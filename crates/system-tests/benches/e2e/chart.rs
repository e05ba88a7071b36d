//! The chart of the run: create → analytics-applied latency percentiles against the offered
//! rate, with and without the read load, as SVG.

use std::path::Path;

use plotters::prelude::*;

use crate::Step;

/// Which percentile of a step a line draws.
type Percentile = fn(&Step) -> f64;

pub fn draw(steps: &[Step], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let max_rate = steps.iter().map(|s| s.offered).fold(100.0, f64::max) * 1.05;
    let max_ms = steps.iter().map(|s| s.analytics.p99).fold(10.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("dapr-todo on daprd + Redis, 2 cores: create → analytics applied", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_rate, (0.1..max_ms).log_scale())?;
    chart.configure_mesh().x_desc("offered creates per second").y_desc("latency (ms, log scale)").draw()?;
    let lines: [(&str, Percentile, RGBColor); 3] =
        [("p50", |s| s.analytics.p50, BLUE), ("p95", |s| s.analytics.p95, GREEN), ("p99", |s| s.analytics.p99, RED)];
    for reads in [false, true] {
        let mut points: Vec<&Step> =
            steps.iter().filter(|s| (s.read_rate > 0.0) == reads && s.analytics.count > 0).collect();
        points.sort_by(|a, b| a.offered.total_cmp(&b.offered));
        for (name, value, color) in lines {
            let style = if reads { color.mix(0.45).stroke_width(2) } else { color.stroke_width(2) };
            let label = if reads { format!("{name}, with the read load") } else { format!("{name}, no reads") };
            let series: Vec<(f64, f64)> = points.iter().map(|s| (s.offered, value(s).max(0.1))).collect();
            chart
                .draw_series(LineSeries::new(series.clone(), style).point_size(3))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
