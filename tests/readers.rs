//! Weights readers on files torch.save wrote (scripts/make_fixtures.py), and on damaged or
//! hostile versions of them: errors, never panics, never code execution.

mod common;

use common::fixtures;
use retrain::weights::{DType, Weights, WeightsError, WeightsFormat};

fn check_contents(w: &Weights) {
    let a = w.get("a.weight").unwrap();
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(a.data, vec![0., 1., 2., 3., 4., 5.]);
    let b = w.get("a.bias").unwrap();
    assert_eq!((b.dtype, b.data.clone()), (DType::F64, vec![0.5, -0.5]));
    let h = w.get("b.half").unwrap();
    assert_eq!((h.dtype, h.data.clone()), (DType::F16, vec![1.5, 2.0]));
    // (3,2) arange transposed: a strided view whose row-major values are 0 2 4 / 1 3 5.
    let t = w.get("b.transposed").unwrap();
    assert!(t.strided);
    assert_eq!(
        (t.shape.clone(), t.data.clone()),
        (vec![2, 3], vec![0., 2., 4., 1., 3., 5.])
    );
    let n = w.get("n").unwrap();
    assert_eq!(
        (n.dtype, n.data.clone(), n.shape.len()),
        (DType::I64, vec![7.0], 0)
    );
}

#[test]
fn zip_with_a_21_character_root_folder() {
    let w = Weights::load(&fixtures().join("files/abcdefghijklmnopqrstu.pt")).unwrap();
    assert_eq!(w.format, WeightsFormat::TorchZip);
    check_contents(&w);
}

#[test]
fn legacy_stream_with_every_dtype() {
    let w = Weights::load(&fixtures().join("files/legacy.pth")).unwrap();
    assert_eq!(w.format, WeightsFormat::TorchLegacy);
    check_contents(&w);
}

#[test]
fn pickle_naming_os_system_is_refused_and_never_run() {
    let _ = std::fs::remove_file("/tmp/retrain-pwned");
    let err = Weights::load(&fixtures().join("files/malicious.pt")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("refused") && msg.contains("system"), "{msg}");
    assert!(!std::path::Path::new("/tmp/retrain-pwned").exists());
}

/// Every truncation of every format is an error (or, for a cut that only removes padding a
/// reader never needs, a complete read) and never a panic.
#[test]
fn truncated_files_fail_cleanly() {
    for f in [
        "files/abcdefghijklmnopqrstu.pt",
        "files/legacy.pth",
        "mobilenet_v2/weights.safetensors",
        "keras_mobilenet_v2/weights.h5",
        "keras_mobilenet_v2/model.keras",
    ] {
        let bytes = std::fs::read(fixtures().join(f)).unwrap();
        let step = (bytes.len() / 400).max(1);
        for n in (0..bytes.len()).step_by(step) {
            match Weights::from_bytes(&bytes[..n]) {
                Err(_) => {}
                Ok(w) => panic!(
                    "{f} cut to {n} of {} bytes read {} tensors",
                    bytes.len(),
                    w.tensors.len()
                ),
            }
        }
    }
}

/// Flipped bytes anywhere: any outcome but a panic or a runaway allocation.
#[test]
fn corrupted_bytes_never_panic() {
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for f in [
        "files/abcdefghijklmnopqrstu.pt",
        "files/legacy.pth",
        "mobilenet_v2/weights.safetensors",
        "keras_mobilenet_v2/weights.h5",
        "keras_mobilenet_v2/model.keras",
    ] {
        let bytes = std::fs::read(fixtures().join(f)).unwrap();
        for _ in 0..300 {
            let mut b = bytes.clone();
            for _ in 0..1 + rand() % 4 {
                let i = (rand() as usize) % b.len();
                b[i] = rand() as u8;
            }
            let _ = Weights::from_bytes(&b);
        }
    }
}

#[test]
fn unknown_and_empty_files_say_so() {
    assert!(matches!(
        Weights::from_bytes(b"hello world, not weights"),
        Err(WeightsError::UnknownFormat)
    ));
    assert!(matches!(
        Weights::from_bytes(b""),
        Err(WeightsError::Truncated(_))
    ));
}
