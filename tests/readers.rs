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
        "tf_mobilenet_v2/model_int8.tflite",
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
    let mut rand = common::xorshift(0x2545F4914F6CDD1Du64);
    for f in [
        "files/abcdefghijklmnopqrstu.pt",
        "files/legacy.pth",
        "mobilenet_v2/weights.safetensors",
        "keras_mobilenet_v2/weights.h5",
        "keras_mobilenet_v2/model.keras",
        "tf_mobilenet_v2/model_int8.tflite",
        // TFLite metadata, a flatbuffer inside the model's, and a zip after it.
        "tflite_ops/metadata.tflite",
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

/// A TensorFlow checkpoint is several files: each damage is found and named.
#[test]
fn tf_checkpoint_damage_is_detected() {
    let src = fixtures().join("tf_mobilenet_v2/checkpoint");
    let tmp = tempfile::tempdir().unwrap();
    let copy = |dir: &std::path::Path| {
        std::fs::create_dir_all(dir).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
        dir.join("model")
    };
    let err = |prefix: &std::path::Path| Weights::load(prefix).unwrap_err().to_string();

    // One flipped byte in a data shard: that tensor's checksum.
    let prefix = copy(&tmp.path().join("flipped"));
    let shard = prefix.with_file_name("model.data-00001-of-00002");
    let mut b = std::fs::read(&shard).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&shard, &b).unwrap();
    assert!(
        err(&prefix).contains("checksum mismatch"),
        "{}",
        err(&prefix)
    );

    // A shard cut short, and a shard missing (named).
    let prefix = copy(&tmp.path().join("short"));
    let shard = prefix.with_file_name("model.data-00000-of-00002");
    std::fs::write(&shard, &std::fs::read(&shard).unwrap()[..1000]).unwrap();
    assert!(err(&prefix).contains("truncated"), "{}", err(&prefix));
    std::fs::remove_file(&shard).unwrap();
    assert!(
        err(&prefix).contains("model.data-00000-of-00002"),
        "{}",
        err(&prefix)
    );

    // The index cut anywhere, or with flipped bytes: an error or (bytes that no check covers,
    // e.g. the footer's padding) the same tensors; never a panic.
    let prefix = copy(&tmp.path().join("index"));
    let index = prefix.with_file_name("model.index");
    let good = std::fs::read(&index).unwrap();
    let whole = Weights::load(&prefix).unwrap();
    for n in (0..good.len()).step_by(97) {
        std::fs::write(&index, &good[..n]).unwrap();
        assert!(Weights::load(&prefix).is_err(), "index cut to {n} bytes");
    }
    let mut seed = 0x9E3779B97F4A7C15u64;
    for _ in 0..300 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut b = good.clone();
        let i = (seed as usize) % b.len();
        b[i] ^= 1 << (seed >> 60 & 7);
        std::fs::write(&index, &b).unwrap();
        if let Ok(w) = Weights::load(&prefix) {
            assert_eq!(
                w.tensors, whole.tensors,
                "flipped index byte {i} changed the weights"
            );
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

/// CNTK files (v2 protobuf and v1 binary) cut anywhere and with flipped bytes: errors or
/// graphs the analysis refuses, never a panic or a runaway allocation. A v1 network ends
/// in its `ECN` marker, so every cut of one is an error.
#[test]
fn damaged_cntk_files_never_panic() {
    let device = burn::prelude::Device::default();
    let mut rand = common::xorshift(0x9E3779B97F4A7C15u64);
    for f in [
        "cntk/convnet.model",
        "cntk/resnet.model",
        "cntk/mobilenet_v2_small.model",
        "cntk/plain_v1.dnn",
        "cntk/resnet_v1.dnn",
    ] {
        let bytes = std::fs::read(fixtures().join(f)).unwrap();
        let v1 = f.ends_with(".dnn");
        let analyse = |w: &Weights| {
            let _ = retrain::graph::analyse::model_spec(w, "damaged", None, &device);
        };
        for n in (0..bytes.len()).step_by((bytes.len() / 300).max(1)) {
            match Weights::from_bytes(&bytes[..n]) {
                Ok(w) if v1 => panic!("{f} cut to {n} bytes read {} tensors", w.tensors.len()),
                Ok(w) => analyse(&w),
                Err(_) => {}
            }
        }
        for _ in 0..200 {
            let mut b = bytes.clone();
            for _ in 0..1 + rand() % 4 {
                let i = (rand() as usize) % b.len();
                b[i] = rand() as u8;
            }
            if let Ok(w) = Weights::from_bytes(&b) {
                analyse(&w);
            }
        }
    }
}

/// A CNTK model that is not an image model is refused in one line saying why.
#[test]
fn a_recurrent_cntk_model_is_refused_by_name() {
    let err = Weights::load(&fixtures().join("cntk/lstm.model")).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, WeightsError::Unsupported(_)), "{msg}");
    assert!(
        msg.contains("recurrent network, not an image model"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}
