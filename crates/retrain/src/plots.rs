//! PNG plots of a fit for its bundle: loss and accuracy per epoch, and the validation
//! confusion matrix. Drawn with plotters into a pixel buffer, text in the embedded DejaVu
//! Sans (no system fonts needed), encoded by `image`.

use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is valid; if it were not, text would be missing, not a crash.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn encode_png(buf: Vec<u8>, (w, h): (u32, u32)) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("plot buffer size"))?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(png)
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("cannot draw the plot: {e:?}")
}

/// Picks a (train, validation) pair of figures from an epoch.
type Pick = fn(&EpochPoint) -> (f64, f64);

/// One epoch's figures, as in `metrics.json`.
#[derive(Debug, Clone, Copy)]
pub struct EpochPoint {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub train_accuracy: f64,
    pub val_accuracy: f64,
}

/// Loss (left) and accuracy (right) per epoch, training and validation.
pub fn training_curves(points: &[EpochPoint]) -> Result<Vec<u8>> {
    register_font();
    let size = (1000u32, 420u32);
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let (left, right) = root.split_horizontally(size.0 / 2);
        let last = points.iter().map(|p| p.epoch).max().unwrap_or(1).max(2) as i32;
        let panels: [(&DrawingArea<_, _>, &str, Pick); 2] = [
            (&left, "loss", |p| (p.train_loss, p.val_loss)),
            (&right, "accuracy", |p| (p.train_accuracy, p.val_accuracy)),
        ];
        for (area, name, get) in panels {
            let values = points.iter().flat_map(|p| {
                let (a, b) = get(p);
                [a, b]
            });
            let top = values.fold(0.0f64, |m, v| if v.is_finite() { m.max(v) } else { m });
            let top = if name == "accuracy" {
                1.0
            } else {
                (top * 1.1).max(1e-3)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(name, (FONT, 22))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(52)
                .build_cartesian_2d(1i32..last, 0f64..top)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .label_style((FONT, 14))
                .x_labels(last.min(15) as usize)
                .draw()
                .map_err(plot_err)?;
            for (label, colour, pick) in [("train", BLUE, 0usize), ("validation", RED, 1usize)] {
                let series = points.iter().map(|p| {
                    let (a, b) = get(p);
                    (p.epoch as i32, if pick == 0 { a } else { b })
                });
                chart
                    .draw_series(LineSeries::new(series.clone(), colour.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                chart
                    .draw_series(series.map(|(x, y)| Circle::new((x, y), 3, colour.filled())))
                    .map_err(plot_err)?;
            }
            chart
                .configure_series_labels()
                .position(if name == "loss" {
                    SeriesLabelPosition::UpperRight
                } else {
                    SeriesLabelPosition::LowerRight
                })
                .label_font((FONT, 14))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    encode_png(buf, size)
}

/// The confusion matrix (rows: true class, columns: predicted), cells shaded by the share
/// of their row and labelled with their count.
pub fn confusion_matrix(classes: &[String], confusion: &[Vec<usize>]) -> Result<Vec<u8>> {
    register_font();
    let k = classes.len().max(1);
    let cell = (560 / k as u32).clamp(12, 120);
    let label_w = 20 + 8 * classes.iter().map(|c| c.chars().count()).max().unwrap_or(1) as u32;
    let label_w = label_w.min(220);
    let size = (
        label_w + cell * k as u32 + 30,
        label_w + cell * k as u32 + 60,
    );
    let mut buf = vec![255u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        root.draw(&Text::new(
            "confusion matrix (validation)",
            (10, 8),
            (FONT, 18).into_font(),
        ))
        .map_err(plot_err)?;
        root.draw(&Text::new(
            "rows: true class, columns: predicted, shade: share of the row",
            (10, 32),
            (FONT, 13).into_font(),
        ))
        .map_err(plot_err)?;
        let (x0, y0) = (label_w as i32, 60i32);
        let text = (FONT, 13).into_font();
        let show_counts = cell >= 28;
        for (t, row) in confusion.iter().enumerate() {
            let total: usize = row.iter().sum();
            for (p, &n) in row.iter().enumerate() {
                let share = if total > 0 {
                    n as f64 / total as f64
                } else {
                    0.0
                };
                let shade = (255.0 * (1.0 - share)) as u8;
                let (x, y) = (x0 + p as i32 * cell as i32, y0 + t as i32 * cell as i32);
                let rect = [(x, y), (x + cell as i32, y + cell as i32)];
                root.draw(&Rectangle::new(rect, RGBColor(shade, shade, 255).filled()))
                    .map_err(plot_err)?;
                root.draw(&Rectangle::new(rect, BLACK.mix(0.3)))
                    .map_err(plot_err)?;
                if show_counts {
                    let colour = if share > 0.5 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        n.to_string(),
                        (x + 6, y + cell as i32 / 2 - 7),
                        text.clone().color(&colour),
                    ))
                    .map_err(plot_err)?;
                }
            }
        }
        for (i, name) in classes.iter().enumerate() {
            let short: String = name.chars().take(24).collect();
            let y = y0 + i as i32 * cell as i32 + cell as i32 / 2 - 7;
            root.draw(&Text::new(short.clone(), (6, y), text.clone()))
                .map_err(plot_err)?;
            let yb = y0 + k as i32 * cell as i32 + 6;
            // Column labels: across when they fit the cell, else turned to read downwards.
            if 8 * short.chars().count() as u32 <= cell {
                let x = x0 + i as i32 * cell as i32 + 4;
                root.draw(&Text::new(short, (x, yb), text.clone()))
                    .map_err(plot_err)?;
            } else {
                let x = x0 + i as i32 * cell as i32 + cell as i32 / 2 + 7;
                root.draw(&Text::new(
                    short,
                    (x, yb),
                    text.clone().transform(FontTransform::Rotate90),
                ))
                .map_err(plot_err)?;
            }
        }
        root.present().map_err(plot_err)?;
    }
    encode_png(buf, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> image::RgbImage {
        image::load_from_memory(png).expect("a PNG").to_rgb8()
    }

    #[test]
    fn curves_are_a_png_with_both_colours() {
        let points: Vec<EpochPoint> = (1..=4)
            .map(|e| EpochPoint {
                epoch: e,
                train_loss: 1.0 / e as f64,
                val_loss: 1.2 / e as f64,
                train_accuracy: 0.5 + 0.1 * e as f64,
                val_accuracy: 0.45 + 0.1 * e as f64,
            })
            .collect();
        let img = decode(&training_curves(&points).unwrap());
        assert_eq!(img.dimensions(), (1000, 420));
        let has = |c: [u8; 3]| img.pixels().any(|p| p.0 == c);
        assert!(has([0, 0, 255]) && has([255, 0, 0]), "train and val lines");
        // Text was drawn: some pixels are neither white nor a line colour nor pure black.
        assert!(
            img.pixels()
                .any(|p| p.0[0] == p.0[1] && p.0[0] > 40 && p.0[0] < 200)
        );
    }

    #[test]
    fn confusion_shades_the_diagonal() {
        let classes = vec!["ants".to_owned(), "bees".to_owned()];
        let img = decode(&confusion_matrix(&classes, &[vec![9, 1], vec![0, 10]]).unwrap());
        let (w, h) = img.dimensions();
        assert!(w > 100 && h > 100);
        assert!(
            img.pixels().filter(|p| p.0 == [0, 0, 255]).count() > 100,
            "a full row is pure blue"
        );
        assert!(confusion_matrix(&[], &[]).is_ok(), "no classes, no panic");
    }
}
