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
    missing(format!(
        "{} not found; run scripts/fetch-weights.sh (or set RETRAIN_WEIGHTS_DIR)",
        p.display()
    ))
}

/// What a test does without data it needs: with RETRAIN_REQUIRE_REAL=1 (CI) that is a
/// failure; otherwise it says it was skipped and why.
pub fn missing<T>(why: String) -> Option<T> {
    if std::env::var_os("RETRAIN_REQUIRE_REAL").is_some() {
        panic!("{why}");
    }
    skipped(&why);
    None
}

/// A xorshift generator: the same pseudo-random bytes on every run, for damaging files.
pub fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
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
    missing(format!("{} not found (set HYMENOPTERA_DIR)", p.display()))
}

/// The real CNTK model files beside the project (../shared/data/cntk), if present.
pub fn cntk_files() -> Option<PathBuf> {
    let p = std::env::var_os("CNTK_FILES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cntk"));
    if p.join("mnist_conv.cmf").is_file() {
        return Some(p);
    }
    missing(format!("{} not found (set CNTK_FILES_DIR)", p.display()))
}

/// Runs the `retrain` binary built for the tests.
/// A JSON file (a bundle's manifest, its metrics) as a value.
pub fn json_file(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

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

/// CRC-32 (IEEE) of a PNG chunk's type and data.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A valid PNG header claiming `w`×`h` RGB pixels, with a tiny IDAT (an empty zlib
/// stream): a few dozen bytes that a naive decoder turns into gigabytes.
pub fn png_claiming(path: &Path, w: u32, h: u32) {
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut b, b"IHDR", &ihdr);
    png_chunk(
        &mut b,
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut b, b"IEND", &[]);
    std::fs::write(path, b).unwrap();
}

/// The fixture JPEG with its frame header (SOF) rewritten to claim `w`×`h` pixels: a
/// well-formed file of a few hundred bytes.
pub fn jpeg_claiming(path: &Path, w: u16, h: u16) {
    let mut b = std::fs::read(fixtures().join("images/rotated.jpg")).unwrap();
    let mut i = 2;
    loop {
        assert_eq!(b[i], 0xFF, "JPEG marker expected at {i}");
        let m = b[i + 1];
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if (0xC0..=0xCF).contains(&m) && ![0xC4, 0xC8, 0xCC].contains(&m) {
            b[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
            b[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
            break;
        }
        i += 2 + len;
    }
    std::fs::write(path, b).unwrap();
}

/// A `w`×`h` gradient PNG.
pub fn png_of_size(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x % 251) as u8, (y * 90) as u8, 40])
    })
    .save(path)
    .unwrap();
}

/// `command` run under an address-space limit of `bytes` with prlimit, or None (with the
/// reason printed) where prlimit is missing.
pub fn under_memory_limit(bytes: u64, program: &Path, args: &[String]) -> Option<Output> {
    let probe = Command::new("prlimit").arg("--version").output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skipped("prlimit not found: the memory bound is not checked");
        return None;
    }
    Some(
        Command::new("prlimit")
            .arg(format!("--as={bytes}"))
            .arg("--")
            .arg(program)
            .args(args)
            .output()
            .expect("run prlimit"),
    )
}

/// `retrain predict --bundle` on the toy folder: it succeeds and names one of its classes.
pub fn bundle_predicts_a_toy_class(bundle: &Path, data: &Path, what: &str) {
    let o = retrain(&[
        "predict",
        "--json",
        "--bundle",
        bundle.to_str().unwrap(),
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{what}: {}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let label = j["predictions"][0]["top"][0]["label"].as_str().unwrap();
    assert!(["round", "square"].contains(&label), "{what}: {label}");
}
