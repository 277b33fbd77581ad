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
                max_pixels: 80 * 48,
                ..Default::default()
            }
        )
        .is_ok()
    );
    assert!(
        load_rgb_with(
            &rgb,
            &Limits {
                max_pixels: 80 * 48 - 1,
                ..Default::default()
            }
        )
        .is_err()
    );
    let zero = Limits {
        max_pixels: 0,
        ..Default::default()
    };
    assert!(zero.validate().is_err());
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

/// A smooth `w`×`h` test picture (gradients and a slow wave: no detail finer than the
/// draft's scale), grey or colour, as a quality-95 JPEG.
fn smooth_jpeg(w: u32, h: u32, grey: bool) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (x as f32 / w as f32, y as f32 / h as f32);
        let wave = ((u * 7.0).sin() * (v * 5.0).cos() * 0.5 + 0.5) * 255.0;
        let px = [u * 255.0, v * 255.0, wave].map(|c| c as u8);
        if grey {
            image::Rgb([px[2]; 3])
        } else {
            image::Rgb(px)
        }
    });
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95);
    if grey {
        enc.encode_image(&image::DynamicImage::ImageRgb8(img).to_luma8())
            .unwrap();
    } else {
        enc.encode_image(&img).unwrap();
    }
    out
}

/// `--jpeg-draft`: a large JPEG decodes at the smallest DCT scale whose shorter side still
/// covers the resize, and the preprocessed tensor stays close to the full decode's (stated
/// bound: mean |diff| under 0.01 and max under 0.1 in normalised units, about 0.6 and 6
/// 8-bit levels). Small JPEGs, augmentation and other formats decode in full.
#[test]
fn a_jpeg_draft_decodes_at_a_reduced_scale_near_the_full_decode() {
    use retrain::data::{decode_rgb_for, decode_rgb_with, preprocess_into};
    let draft = Limits {
        jpeg_draft: true,
        ..Default::default()
    };
    let p = retrain::zoo::Preprocess::imagenet(256, 224, retrain::zoo::Interpolation::Bilinear);
    for (w, h, grey, scaled) in [
        (2400, 1800, false, (600, 450)), // 1/4: 450 >= 256, 1/8 would be 225
        (1800, 2400, true, (450, 600)),  // portrait, greyscale
        (1000, 700, false, (500, 350)),  // 1/2
        (600, 400, false, (600, 400)),   // no reduction keeps a short side of 256
    ] {
        let bytes = smooth_jpeg(w, h, grey);
        let full = decode_rgb_with(&bytes, &Limits::default()).unwrap();
        let small = decode_rgb_for(&bytes, &draft, Some(256)).unwrap();
        assert_eq!(small.dimensions(), scaled, "{w}x{h}");
        // Without a resize to cover (augmentation), the full image.
        assert_eq!(
            decode_rgb_for(&bytes, &draft, None).unwrap().dimensions(),
            (w, h)
        );
        let (mut a, mut b) = (vec![0f32; 3 * 224 * 224], vec![0f32; 3 * 224 * 224]);
        preprocess_into(&full, &p, &mut a).unwrap();
        preprocess_into(&small, &p, &mut b).unwrap();
        let diffs: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).collect();
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        let max = diffs.iter().fold(0f32, |m, &d| m.max(d));
        eprintln!("{w}x{h} grey={grey}: draft {scaled:?}, mean |diff| {mean:.2e}, max {max:.2e}");
        assert!(mean < 0.01 && max < 0.1, "{w}x{h}: mean {mean}, max {max}");
    }
    // A PNG is never drafted.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("big.png");
    common::png_of_size(&png, 2048, 1536);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(
        decode_rgb_for(&bytes, &draft, Some(256))
            .unwrap()
            .dimensions(),
        (2048, 1536)
    );
}
