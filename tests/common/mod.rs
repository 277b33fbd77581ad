//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::prelude::*;
use retrain::outputs::read_npy;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A two-class ImageFolder under `root/data` made of the fixture images, three per class,
/// each copied `copies` times.
pub fn toy_folder_with(root: &Path, copies: usize) -> PathBuf {
    let img = fixtures().join("images");
    let data = root.join("data");
    for (class, files) in [
        ("round", ["rgb.png", "rgb.bmp", "rgb.webp"]),
        ("square", ["gray.png", "cmyk.jpg", "palette.gif"]),
    ] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for f in files {
            for c in 0..copies {
                let name = if copies == 1 {
                    f.to_owned()
                } else {
                    format!("{c}-{f}")
                };
                std::fs::copy(img.join(f), data.join(class).join(name)).unwrap();
            }
        }
    }
    data
}

pub fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    read_npy(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn tensor4(shape: &[usize], data: Vec<f32>, device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(data, [shape[0], shape[1], shape[2], shape[3]]),
        device,
    )
}

pub fn values(t: Tensor<2>) -> (Vec<usize>, Vec<f32>) {
    let dims = t.dims().to_vec();
    (dims, t.into_data().try_into_vec::<f32>().unwrap())
}

/// Largest absolute difference, after checking the shapes agree.
pub fn max_abs_diff(what: &str, got: (Vec<usize>, Vec<f32>), want: (Vec<usize>, Vec<f32>)) -> f32 {
    assert_eq!(got.0, want.0, "{what}: shape");
    got.1
        .iter()
        .zip(&want.1)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

/// Where the real ImageNet weights were fetched (scripts/fetch-weights.sh), if they were.
/// Without them, the test says it is skipped and why; with RETRAIN_REQUIRE_REAL=1 (CI)
/// their absence is a failure.
pub fn real_weights(file: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("RETRAIN_WEIGHTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("weights"));
    let p = dir.join(file);
    if p.is_file() {
        return Some(p);
    }
    let why = format!(
        "{} not found; run scripts/fetch-weights.sh (or set RETRAIN_WEIGHTS_DIR)",
        p.display()
    );
    if std::env::var_os("RETRAIN_REQUIRE_REAL").is_some() {
        panic!("{why}");
    }
    skipped(&why);
    None
}

/// Says a test was skipped and why, past the test harness's output capture (which hides
/// what passing tests print), so a skip is never silent.
pub fn skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

/// The hymenoptera data set beside the project (../shared/data), if present.
pub fn hymenoptera() -> Option<PathBuf> {
    let p = std::env::var_os("HYMENOPTERA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/hymenoptera_data")
        });
    if p.join("val").is_dir() {
        return Some(p);
    }
    let why = format!("{} not found (set HYMENOPTERA_DIR)", p.display());
    if std::env::var_os("RETRAIN_REQUIRE_REAL").is_some() {
        panic!("{why}");
    }
    skipped(&why);
    None
}

/// Runs the `retrain` binary built for the tests.
pub fn retrain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retrain"))
        .args(args)
        .output()
        .expect("run retrain")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
