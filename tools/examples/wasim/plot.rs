//! The sweep's figure: write amplification against utilization, one line
//! per policy × workload, as SVG. Plotters is built without its `ttf`
//! feature, so text is written as SVG `<text>` elements (the viewer picks
//! the font) and no font file is read.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

/// One line of the figure.
pub struct Series {
    pub policy: String,
    /// Its workload, as shown in the legend.
    pub workload: String,
    /// Dashed with triangles (else solid with circles).
    pub dashed: bool,
    /// (utilization, write amplification), by utilization.
    pub points: Vec<(f64, f64)>,
}

fn color(policy: &str) -> RGBColor {
    match policy {
        "spec" => RGBColor(0x1f, 0x77, 0xb4),
        "greedy" => RGBColor(0xd6, 0x27, 0x28),
        "fifo" => RGBColor(0x2c, 0xa0, 0x2c),
        "cost-benefit" => RGBColor(0x94, 0x67, 0xbd),
        "cost-benefit-sep" => RGBColor(0xff, 0x7f, 0x0e),
        "survival" => RGBColor(0x17, 0xbe, 0xcf),
        "lifetime" => RGBColor(0x8c, 0x56, 0x4b),
        _ => RGBColor(0x40, 0x40, 0x40),
    }
}

/// Draws `series` into the SVG file `path`.
pub fn draw(path: &Path, series: &[Series], caption: &str) -> Result<(), String> {
    draw_inner(path, series, caption).map_err(|e| format!("{}: {e}", path.display()))
}

fn draw_inner(path: &Path, series: &[Series], caption: &str) -> Result<(), Box<dyn Error>> {
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 1.0f64);
    for &(x, y) in series.iter().flat_map(|s| &s.points) {
        (x0, x1, y1) = (x0.min(x), x1.max(x), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((x0 - 0.02)..(x1 + 0.02), 1.0..(y1 * 1.05).ceil())?;
    chart
        .configure_mesh()
        .x_desc("utilization (live data / space target)")
        .y_desc("write amplification")
        .x_label_formatter(&|x| format!("{x:.2}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 17))
        .draw()?;
    for s in series {
        let c = color(&s.policy);
        let line = c.stroke_width(2);
        let label = format!("{}, {}", s.policy, s.workload);
        let points = s.points.iter().copied();
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(points, 8, 5, line))?
                .label(label)
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (7, 0)], line)
                        + PathElement::new(vec![(13, 0), (20, 0)], line)
                        + TriangleMarker::new((10, 0), 4, c.filled())
                });
            chart.draw_series(
                s.points
                    .iter()
                    .map(|&p| TriangleMarker::new(p, 5, c.filled())),
            )?;
        } else {
            chart
                .draw_series(LineSeries::new(points, line))?
                .label(label)
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (20, 0)], line)
                        + Circle::new((10, 0), 3, c.filled())
                });
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
