//! Charts for `--plot`: line charts stacked in one SVG. PNG is refused: drawing text into a
//! bitmap needs a font library from the system, which Drover does not require.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

/// One line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart: lines over shared axes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

impl Chart {
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Chart {
        Chart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: vec![],
        }
    }

    pub fn line(mut self, name: &str, points: Vec<(f64, f64)>) -> Chart {
        self.series.push(Series {
            name: name.into(),
            points,
        });
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{0}: only .svg plots are supported (PNG would need a system font library)")]
    Format(String),
    #[error("nothing to plot")]
    Empty,
    #[error("cannot draw {path}: {message}")]
    Draw { path: String, message: String },
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 360;
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws `charts` one under another into the SVG file `path`.
pub fn write_svg(path: &Path, charts: &[Chart]) -> Result<(), PlotError> {
    let shown = path.display().to_string();
    if path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
        != Some("svg")
    {
        return Err(PlotError::Format(shown));
    }
    let charts: Vec<&Chart> = charts
        .iter()
        .filter(|c| c.series.iter().any(|s| !s.points.is_empty()))
        .collect();
    if charts.is_empty() {
        return Err(PlotError::Empty);
    }
    let err = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: shown.clone(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, (WIDTH, HEIGHT * charts.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let areas = root.split_evenly((charts.len(), 1));
    for (chart, area) in charts.iter().zip(areas) {
        draw(chart, &area).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn bounds(chart: &Chart) -> (f64, f64, f64, f64) {
    let pts = chart.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for (x, y) in pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    (x0, x1, y0, y1 * 1.05)
}

fn draw<DB: DrawingBackend>(
    chart: &Chart,
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (x0, x1, y0, y1) = bounds(chart);
    let mut ctx = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    ctx.configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        ctx.draw_series(LineSeries::new(
            s.points.iter().copied(),
            color.stroke_width(2),
        ))?
        .label(s.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    if chart.series.len() > 1 || chart.series.first().is_some_and(|s| !s.name.is_empty()) {
        ctx.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_written_png_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Chart::new("t", "x", "y").line("a", vec![(0.0, 0.0), (1.0, 2.0)]);
        let p = dir.path().join("p.svg");
        write_svg(&p, std::slice::from_ref(&c)).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("<svg"));
        assert!(matches!(
            write_svg(&dir.path().join("p.png"), &[c]),
            Err(PlotError::Format(_))
        ));
    }
}
