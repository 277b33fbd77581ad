//! Image decoding: every container and colour model to RGB, EXIF orientation applied.

mod common;

use common::fixtures;
use retrain::data::{Limits, load_rgb, load_rgb_with};

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

#[test]
fn a_header_claiming_a_huge_size_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let (png, jpg) = (dir.path().join("huge.png"), dir.path().join("huge.jpg"));
    common::png_claiming(&png, 65500, 65500);
    common::jpeg_claiming(&jpg, 65500, 65500);
    for f in [&png, &jpg] {
        let e = format!("{:#}", load_rgb(f).unwrap_err());
        assert!(
            e.contains(
                "image claims 65500x65500 pixels (4290250000), over the limit of 89478485 pixels"
            ),
            "{e}"
        );
    }
    // A limit of its own: exactly the pixels of the image passes, one fewer does not.
    let rgb = fixtures().join("images/rgb.png");
    assert!(
        load_rgb_with(
            &rgb,
            &Limits {
                max_pixels: 80 * 48
            }
        )
        .is_ok()
    );
    assert!(
        load_rgb_with(
            &rgb,
            &Limits {
                max_pixels: 80 * 48 - 1
            }
        )
        .is_err()
    );
    assert!(Limits { max_pixels: 0 }.validate().is_err());
}

#[test]
fn a_wide_image_is_resized_through_its_crop_only() {
    let dir = tempfile::tempdir().unwrap();
    let wide = dir.path().join("wide.png");
    common::png_of_size(&wide, 10000, 2);
    let p = retrain::zoo::Preprocess::lite(224);
    let t = retrain::data::load_tensor(&wide, &p).unwrap();
    assert_eq!(t.len(), 3 * 224 * 224);
    assert!(t.iter().all(|v| v.is_finite()));
}

#[test]
fn folders_of_a_data_set_skip_hidden_classes_and_report_loops() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::toy_folder_with(dir.path(), 1);
    std::fs::create_dir_all(data.join("__MACOSX/round")).unwrap();
    std::fs::write(data.join("__MACOSX/round/x.jpg"), b"junk").unwrap();
    std::fs::create_dir(data.join(".thumbnails")).unwrap();
    std::fs::write(data.join("round/Thumbs.db"), b"junk").unwrap();
    std::fs::write(data.join("round/._rgb.png"), b"junk").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink("..", data.join("square/loop")).unwrap();
    let (set, notes) = retrain::dataset::Labelled::scan(&data, None).unwrap();
    assert_eq!(set.classes, ["round", "square"]);
    assert_eq!(set.counts(), [3, 3]);
    if cfg!(unix) {
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].0, data.join("square/loop"));
        assert!(notes[0].1.contains("symbolic-link loop"), "{notes:?}");
    }
}
