//! The `retrain` program as a user runs it: outputs, and bad input (corrupt images, wrong or
//! truncated weights, empty folders, unwritable outputs) giving a clear one-line error, a
//! non-zero exit and no partial output.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{fixtures, retrain, stderr, stdout};
use retrain::outputs::read_npy;

/// The reduced MobileNetV2 fixture, through a model spec file.
fn model_args() -> Vec<String> {
    let d = fixtures().join("mobilenet_v2");
    vec![
        "--model".into(),
        d.join("model.json").display().to_string(),
        "--weights".into(),
        d.join("weights.safetensors").display().to_string(),
    ]
}

fn images() -> PathBuf {
    fixtures().join("images")
}

fn run_embed(out: &Path, extra: &[&str], inputs: &[&Path]) -> Output {
    let mut args: Vec<String> = vec!["embed".into()];
    args.extend(model_args());
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(inputs.iter().map(|p| p.display().to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    retrain(&refs)
}

fn assert_fails(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(o));
    let e = stderr(o);
    assert!(e.starts_with("error: "), "{e}");
    assert!(e.contains(needle), "expected `{needle}` in: {e}");
}

#[test]
fn embed_writes_every_format_with_paths_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let img = images();
    // Every image kind in the fixtures: PNG, gray, CMYK JPEG, GIF, BMP, WebP, EXIF-rotated.
    let expected: Vec<String> = {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&img)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v.iter().map(|p| p.display().to_string()).collect()
    };
    assert_eq!(expected.len(), 7);

    let npy = dir.path().join("f.npy");
    let o = run_embed(&npy, &[], &[&img]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (shape, values) = read_npy(&std::fs::read(&npy).unwrap()).unwrap();
    assert_eq!(shape, vec![7, 1280]);
    assert!(values.iter().all(|v| v.is_finite()));
    let paths = std::fs::read_to_string(dir.path().join("f.paths.txt")).unwrap();
    assert_eq!(paths.lines().collect::<Vec<_>>(), expected);

    let csv = dir.path().join("f.csv");
    assert!(run_embed(&csv, &[], &[&img]).status.success());
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 8);
    assert!(rows[0].starts_with("path,f0,f1,"));
    assert_eq!(rows[0].split(',').count(), 1281);
    let first: Vec<f32> = rows[1]
        .split(',')
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(first, values[..1280].to_vec(), "csv and npy agree exactly");
    assert!(rows[1].starts_with(&expected[0]));

    let st = dir.path().join("f.safetensors");
    assert!(run_embed(&st, &[], &[&img]).status.success());
    let bytes = std::fs::read(&st).unwrap();
    let w = retrain::weights::Weights::from_bytes(&bytes).unwrap();
    let e = w.get("embeddings").unwrap();
    assert_eq!(
        (e.shape.clone(), e.data.clone()),
        (vec![7, 1280], values.clone())
    );

    let pq = dir.path().join("f.parquet");
    assert!(run_embed(&pq, &[], &[&img]).status.success());
    let file = std::fs::File::open(&pq).unwrap();
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(file).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 7);
    let mut rows = reader.get_row_iter(None).unwrap();
    let row = rows.next().unwrap().unwrap();
    let s = row.to_string();
    assert!(s.contains(&expected[0]), "{s}");
}

#[test]
fn embed_from_a_named_stage() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.npy");
    let o = run_embed(
        &out,
        &["--layer", "stage2", "--json"],
        &[&images().join("rgb.png")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        (v["layer"].as_str(), v["dim"].as_u64(), v["images"].as_u64()),
        (Some("stage2"), Some(16), Some(1))
    );
    let (shape, _) = read_npy(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        shape,
        vec![1, 16],
        "stage2 of the width-0.5 fixture has 16 channels"
    );
    let o = run_embed(&out, &["--layer", "nope"], &[&images().join("rgb.png")]);
    assert_fails(&o, "has no stage `nope`; choose one of: stem, stage1");
}

#[test]
fn corrupt_image_is_skipped_with_a_warning_or_fatal_when_strict() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("imgs");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(images().join("rgb.png"), data.join("a.png")).unwrap();
    let bytes = std::fs::read(images().join("cmyk.jpg")).unwrap();
    std::fs::write(data.join("b_truncated.jpg"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(data.join("c_not_an_image.png"), b"definitely not a png").unwrap();

    let out = dir.path().join("out.npy");
    let o = run_embed(&out, &[], &[&data]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("warning: skipping") && e.contains("c_not_an_image.png"),
        "{e}"
    );
    assert!(e.contains("b_truncated.jpg"), "{e}");
    let (shape, _) = read_npy(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(shape[0], 1);

    // --strict: fails naming the file, and the earlier output is left as it was.
    std::fs::write(&out, b"earlier result").unwrap();
    let o = run_embed(&out, &["--strict"], &[&data]);
    assert_fails(&o, "b_truncated.jpg");
    assert_eq!(std::fs::read(&out).unwrap(), b"earlier result");
}

#[test]
fn weights_for_another_architecture() {
    let d = fixtures().join("mobilenet_v2");
    let w = d.join("weights.safetensors").display().to_string();
    let o = retrain(&[
        "predict",
        "--model",
        "resnet18",
        "--weights",
        &w,
        &images().join("rgb.png").display().to_string(),
    ]);
    assert_fails(&o, "weights do not fit resnet18");
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "one line: {}", stderr(&o));
}

#[test]
fn truncated_weights_file() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "resnet_basic/weights.pt",
        "efficientnet_lite/weights.pth",
        "mobilenet_v2/weights.safetensors",
    ] {
        let bytes = std::fs::read(fixtures().join(f)).unwrap();
        let cut = dir.path().join(Path::new(f).file_name().unwrap());
        std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let o = retrain(&["inspect", &cut.display().to_string()]);
        assert_eq!(o.status.code(), Some(1), "{f}");
        let e = stderr(&o);
        assert!(e.contains("truncated") || e.contains("corrupt"), "{f}: {e}");
    }
}

#[test]
fn empty_folder_and_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.npy");
    let o = run_embed(&out, &[], &[dir.path()]);
    assert_fails(&o, "no images in folder");
    assert!(!out.exists());
    let o = run_embed(&out, &[], &[&dir.path().join("missing")]);
    assert_fails(&o, "no such file or folder");
    let mut args: Vec<String> = vec!["predict".into(), "--model".into(), "mobilenet_v2".into()];
    args.extend([
        "--weights".into(),
        dir.path().join("nope.pth").display().to_string(),
    ]);
    args.push(images().display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_fails(&retrain(&refs), "does not exist");
}

#[test]
fn unwritable_output_fails_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a_file");
    std::fs::write(&blocker, b"x").unwrap();
    let out = blocker.join("out.npy");
    let o = run_embed(&out, &[], &[&images()]);
    assert_fails(&o, "does not exist");
    let o = run_embed(&dir.path().join("out.xyz"), &[], &[&images()]);
    assert_fails(&o, "use a .npy, .safetensors, .parquet or .csv extension");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary or partial files");
}

#[test]
fn hostile_weights_are_refused() {
    let w = fixtures().join("files/malicious.pt").display().to_string();
    let o = retrain(&["inspect", &w]);
    assert_fails(&o, "refused to load");
}

#[test]
fn predict_json_and_text() {
    let mut args: Vec<String> = vec![
        "predict".into(),
        "--top".into(),
        "3".into(),
        "--json".into(),
    ];
    args.extend(model_args());
    args.push(images().display().to_string());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = retrain(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let preds = v["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), 7);
    let top = preds[0]["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    // A 5-class head has no ImageNet labels.
    assert!(top[0]["label"].is_null());
    let p: Vec<f64> = top
        .iter()
        .map(|t| t["probability"].as_f64().unwrap())
        .collect();
    assert!(p[0] >= p[1] && p[1] >= p[2] && p[0] <= 1.0);
}

#[test]
fn models_and_inspect() {
    let o = retrain(&["models", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let lite0 = v
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "efficientnet_lite0")
        .unwrap();
    assert_eq!(lite0["parameters"], 4652008);
    assert_eq!(lite0["feature_dim"], 1280);
    assert_eq!(v.as_array().unwrap().len(), 35);
    // Trainable parameters of keras.applications.MobileNetV2 / MobileNet(alpha) / ResNet50 /
    // VGG16 / EfficientNetB0 (weights=None), as Keras 3.15 counts them.
    for (name, keras) in [
        ("keras_mobilenet_v2_035", 1677128),
        ("keras_mobilenet_v2_050", 1968680),
        ("keras_mobilenet_v2_075", 2636424),
        ("keras_mobilenet_v2", 3504872),
        ("keras_mobilenet_v2_130", 5386792),
        ("keras_mobilenet_v2_140", 6108776),
        ("keras_mobilenet_025", 470072),
        ("keras_mobilenet_050", 1331592),
        ("keras_mobilenet_075", 2585560),
        ("keras_mobilenet", 4231976),
        ("keras_resnet50", 25583592),
        ("keras_vgg16", 138357544),
        ("keras_efficientnet_b0", 5288548),
    ] {
        let m = v.as_array().unwrap().iter().find(|m| m["name"] == name);
        assert_eq!(m.unwrap()["parameters"], keras, "{name}");
    }

    let w = fixtures()
        .join("resnet_basic/weights.pt")
        .display()
        .to_string();
    let o = retrain(&["inspect", "--json", &w]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["format"], "torch-zip");
    assert_eq!(v["parameters"], 97522);

    // A Keras file that fits a zoo entry exactly is named; one of a custom width gets the
    // closest entry and what did not map.
    let keras = |f: &str| fixtures().join(f).display().to_string();
    let o = retrain(&["inspect", &keras("keras_mobilenet/weights.h5")]);
    assert!(
        stdout(&o).contains("architecture: keras_mobilenet_025 (every tensor matches)"),
        "{}",
        stdout(&o)
    );
    let o = retrain(&["inspect", &keras("keras_mobilenet_v2/weights.h5")]);
    let out = stdout(&o);
    assert!(out.contains("format:      Keras HDF5"), "{out}");
    assert!(
        out.contains("closest is keras_mobilenet_v2")
            && out.contains("not mapped: ")
            && out.contains("Conv1.weight (model ["),
        "{out}"
    );
    let o = retrain(&[
        "inspect",
        "--json",
        &keras("keras_mobilenet_v2/model.keras"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["format"], "keras");
    assert!(
        v["closest"]["shape_mismatches"].as_array().unwrap().len() > 100,
        "{v}"
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_eq!(retrain(&["embed"]).status.code(), Some(2));
    assert_eq!(retrain(&["frobnicate"]).status.code(), Some(2));
    for cmd in ["models", "inspect", "predict", "embed"] {
        let o = retrain(&[cmd, "--help"]);
        assert!(o.status.success() && stdout(&o).contains("Usage"), "{cmd}");
    }
}
