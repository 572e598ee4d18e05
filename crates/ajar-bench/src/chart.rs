//! The one chart: cumulative distributions of open latency (per
//! concurrency) and of expiry lag (new connections refused, live
//! connections cut), drawn with plotters' bitmap backend and an embedded
//! font, so that no system font or fontconfig is needed.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;

/// A named set of samples in milliseconds.
pub type Series = (String, Vec<f64>);

pub fn draw(path: &Path, open: &[Series], expiry: &[Series]) -> anyhow::Result<()> {
    // Registering twice (a second report in one process) is harmless.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, ttf_noto_sans::REGULAR);
    let root = BitMapBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("chart: {e}"))?;
    let (left, right) = root.split_horizontally(700);
    panel(&left, "Open latency: POST /requests to first echo", open)?;
    panel(&right, "Expiry: lag after ends_at", expiry)?;
    root.present().map_err(|e| anyhow!("chart {}: {e}", path.display()))?;
    Ok(())
}

fn panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, title: &str, series: &[Series]) -> anyhow::Result<()> {
    const FLOOR: f64 = 0.01;
    let values = || series.iter().flat_map(|(_, v)| v.iter().copied());
    let high = values().fold(1.0f64, f64::max) * 1.2;
    let low = values().fold(high, f64::min).max(FLOOR) * 0.8;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((low..high).log_scale(), 0.0..100.0)
        .map_err(|e| anyhow!("chart: {e}"))?;
    chart
        .configure_mesh()
        .x_desc("milliseconds (log scale)")
        .y_desc("% of samples at or below")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow!("chart: {e}"))?;
    for (i, (name, samples)) in series.iter().enumerate() {
        if samples.is_empty() {
            continue;
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len() as f64;
        let color = Palette99::pick(i).to_rgba();
        let points = sorted.iter().enumerate().map(|(k, v)| (v.max(low), (k + 1) as f64 / n * 100.0));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| anyhow!("chart: {e}"))?
            .label(format!("{name} (n={})", sorted.len()))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| anyhow!("chart: {e}"))?;
    Ok(())
}
