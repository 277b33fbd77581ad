//! Image decoding: every container and colour model to RGB, EXIF orientation applied.

mod common;

use common::fixtures;
use retrain::data::load_rgb;

#[test]
fn every_format_and_colour_model_decodes_to_rgb() {
    let dir = fixtures().join("images");
    let reference = load_rgb(&dir.join("rgb.png")).unwrap();
    assert_eq!(reference.dimensions(), (80, 48));
    for f in ["rgb.bmp", "rgb.webp", "palette.gif", "gray.png", "cmyk.jpg"] {
        let img = load_rgb(&dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e:#}"));
        assert_eq!(img.dimensions(), (80, 48), "{f}");
    }
    // Lossless containers give back the exact pixels.
    for f in ["rgb.bmp", "rgb.webp"] {
        assert_eq!(load_rgb(&dir.join(f)).unwrap(), reference, "{f}");
    }
    let gray = load_rgb(&dir.join("gray.png")).unwrap();
    assert!(gray.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    // CMYK JPEG (lossy, quality 90 on noise): colours come back near the original.
    let cmyk = load_rgb(&dir.join("cmyk.jpg")).unwrap();
    let mean_err: f64 = cmyk
        .as_raw()
        .iter()
        .zip(reference.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / reference.as_raw().len() as f64;
    assert!(
        mean_err < 40.0,
        "CMYK converted badly: mean error {mean_err}"
    );
}

#[test]
fn exif_orientation_is_applied() {
    let img = load_rgb(&fixtures().join("images/rotated.jpg")).unwrap();
    assert_eq!(
        img.dimensions(),
        (48, 80),
        "stored 80x48 with orientation 6"
    );
}
