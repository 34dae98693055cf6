//! The paper's figure, drawn from a [`Report`]: per app, bars of mean time (or device energy)
//! for each input size and configuration, with the spread as error bars. SVG and PNG.

use crate::paper::BenchError;
use crate::report::{Report, Row, Spread};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

const SIZE: (u32, u32) = (1200, 430);
const COLORS: [RGBColor; 4] = [RGBColor(110, 110, 110), RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44)];

/// Writes `time.svg`, `time.png`, `energy.svg` and `energy.png` into `dir`; returns their paths.
pub fn figures(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    fn failed(path: &Path) -> impl FnOnce(DrawError) -> BenchError + use<> {
        let path = path.to_path_buf();
        move |e| BenchError::Figure { path, message: e.0 }
    }
    register_font().map_err(failed(dir))?;
    let metrics: [(&str, &str, fn(&Row) -> Spread); 2] = [
        ("time", "Execution time (s), mean of the runs, error bars: one standard deviation", |r| r.time),
        ("energy", "Device energy (J, modelled, not metered), mean of the runs", |r| r.energy),
    ];
    let mut written = Vec::new();
    for (name, title, metric) in metrics {
        let svg = dir.join(format!("{name}.svg"));
        draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), report, title, metric).map_err(failed(&svg))?;
        let png = dir.join(format!("{name}.png"));
        {
            let area = BitMapBackend::new(&png, SIZE).into_drawing_area();
            draw(area.clone(), report, title, metric).map_err(failed(&png))?;
            area.present().map_err(|e| DrawError(e.to_string())).map_err(failed(&png))?;
        }
        written.extend([svg, png]);
    }
    Ok(written)
}

/// The PNG backend renders text only with a registered font; DejaVu Sans is embedded.
fn register_font() -> Result<(), DrawError> {
    static DONE: std::sync::OnceLock<Result<(), DrawError>> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).map_err(|_| DrawError("the embedded font does not load".into()))
    })
    .clone()
}

/// What the drawing backend said went wrong (its error types differ by backend).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
struct DrawError(String);

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, report: &Report, title: &str, metric: fn(&Row) -> Spread) -> Result<(), DrawError>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| DrawError(e.to_string());
    root.fill(&WHITE).map_err(err)?;
    let (top, body) = root.split_vertically(34);
    top.draw_text(title, &("sans-serif", 17).into_font().color(&BLACK), (12, 10)).map_err(err)?;
    let configs = report.configs();
    let sizes = &report.sizes;
    let panels = body.split_evenly((1, report.apps.len().max(1)));
    for (k, (panel, app)) in panels.iter().zip(&report.apps).enumerate() {
        let spreads: Vec<(usize, usize, Spread)> = sizes
            .iter()
            .enumerate()
            .flat_map(|(i, size)| configs.iter().enumerate().filter_map(move |(j, c)| Some((i, j, metric(report.row(app, size, c)?)))))
            .collect();
        let top_value = spreads.iter().map(|(_, _, s)| s.mean + s.sd).fold(0.0, f64::max).max(1e-6) * 1.15;
        let n = sizes.len() as f64;
        let mut chart = ChartBuilder::on(panel)
            .caption(app, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(52)
            .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..top_value)
            .map_err(err)?;
        let labels: Vec<String> = sizes.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .x_labels(sizes.len() + 1)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 { labels.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
            })
            .y_label_formatter(&|y| format!("{y:.3}").trim_end_matches('0').trim_end_matches('.').to_string())
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        let width = 0.8 / configs.len() as f64;
        for (j, config) in configs.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let bars: Vec<(f64, Spread)> = spreads.iter().filter(|s| s.1 == j).map(|&(i, _, s)| (i as f64 - 0.4 + (j as f64 + 0.5) * width, s)).collect();
            let series = chart
                .draw_series(bars.iter().map(|&(x, s)| Rectangle::new([(x - 0.45 * width, 0.0), (x + 0.45 * width, s.mean)], color.filled())))
                .map_err(err)?;
            if k == 0 {
                series.label(config.as_str()).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
            }
            chart
                .draw_series(bars.iter().filter(|(_, s)| s.sd > 0.0).map(|&(x, s)| {
                    PathElement::new(vec![(x, s.mean - s.sd), (x, s.mean + s.sd)], BLACK.stroke_width(1))
                }))
                .map_err(err)?;
        }
        if k == 0 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()
                .map_err(err)?;
        }
    }
    Ok(())
}
