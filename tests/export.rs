//! `retrain export`: bundles and pretrained models written as ONNX, then run by ONNX
//! Runtime (Python, `scripts/check_onnx_export.py`) against retrain's own outputs on the
//! same input, within 1e-4, for every zoo family and every graph producer the fixtures
//! hold. scripts/test.sh installs the checker's packages (scripts/requirements-export-check.txt)
//! in target/venv-export-check; without them the comparison says it was skipped (and fails
//! under CI).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::prelude::*;
use common::*;
use retrain::bundle::Bundle;
use retrain::outputs::npy_bytes;
use retrain::weights::Weights;
use retrain::zoo::{self, InputOverride, Model};

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// The Python that runs the checker: `RETRAIN_EXPORT_CHECK_PYTHON`, or the virtual
/// environment scripts/test.sh makes.
fn checker_python() -> Option<PathBuf> {
    let p = std::env::var_os("RETRAIN_EXPORT_CHECK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venv-export-check/bin/python")
        });
    if p.is_file() {
        return Some(p);
    }
    missing(format!(
        "{} not found: scripts/test.sh installs onnx and onnxruntime there (or set RETRAIN_EXPORT_CHECK_PYTHON)",
        p.display()
    ))
}

/// Runs the checker on the case folders; panics with its output if any case fails.
fn run_checker(cases: &[PathBuf]) {
    let Some(python) = checker_python() else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_onnx_export.py");
    let o = Command::new(python)
        .arg(script)
        .args(cases)
        .output()
        .expect("run the checker");
    let out = format!("{}{}", stdout(&o), stderr(&o));
    eprintln!("{out}");
    assert!(
        o.status.success(),
        "ONNX Runtime disagrees with retrain:\n{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.contains("max |diff|")).count(),
        cases.len(),
        "every case checked"
    );
}

/// Writes retrain's outputs of `model` on `x` beside the exported file in `case`.
fn write_reference(case: &Path, model: &Model, shape: &[usize], x: Vec<f32>) {
    let device = Device::default();
    let (f, l) = model
        .network
        .features_and_logits(tensor4(shape, x.clone(), &device))
        .unwrap();
    std::fs::write(case.join("input.npy"), npy_bytes(&x, shape)).unwrap();
    let (fs, fv) = values(f);
    std::fs::write(case.join("features.npy"), npy_bytes(&fv, &fs)).unwrap();
    if let Some(l) = l {
        let (ls, lv) = values(l);
        std::fs::write(case.join("logits.npy"), npy_bytes(&lv, &ls)).unwrap();
    }
}

/// Exports `--model model --weights weights` into `root/name/model.onnx` and writes
/// retrain's outputs on `input` there; returns the case folder.
fn pretrained_case(
    root: &Path,
    name: &str,
    model: Option<&str>,
    weights: &Path,
    input: &Path,
) -> PathBuf {
    let case = root.join(name);
    std::fs::create_dir_all(&case).unwrap();
    let out = case.join("model.onnx");
    let mut args = vec!["export".to_owned()];
    if let Some(m) = model {
        args.extend(["--model".into(), m.to_owned()]);
    }
    args.extend(["--weights".into(), s(weights), "--out".into(), s(&out)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = retrain(&args);
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    assert!(stdout(&o).contains("opset"), "{name}: {}", stdout(&o));

    let device = Device::default();
    let w = Weights::load(weights).unwrap();
    let spec = zoo::spec_with_input(model, &w, &InputOverride::default(), &device).unwrap();
    let m = Model::from_spec(&spec, &w, &device).unwrap();
    let (shape, x) = npy(input);
    write_reference(&case, &m, &shape, x);
    case
}

/// Every zoo family of the fixtures, from its origin's state dict.
#[test]
fn zoo_networks_export_to_onnx_that_onnx_runtime_runs_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = vec![];
    for name in [
        "resnet_basic",
        "resnet_bottleneck",
        "mobilenet_v2",
        "mobilenet_v3",
        "efficientnet",
        "efficientnet_lite",
        "keras_resnet",
        "keras_efficientnet",
        "keras_vgg",
        "keras_mobilenet",
        "keras_mobilenet_v2",
        "vit",
        "convnext",
        "resnext",
        "wide_resnet",
        "vgg",
        "vgg_bn",
        "densenet",
        "densenet_old_names",
        "regnet_y",
        "regnet_x",
        "efficientnet_v2",
        "mnasnet",
        "shufflenet_v2",
        "swin",
        "swin_v2",
        "maxvit",
        "alexnet",
        "squeezenet1_0",
        "squeezenet1_1",
        "googlenet",
        "inception_v3",
        "timm_vit_augreg",
        "timm_vit_avg",
        "timm_deit",
        "timm_dinov2",
        "timm_dinov2_reg4",
    ] {
        let dir = fixtures().join(name);
        let weights = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_stem().is_some_and(|s| s == "weights"))
            .unwrap();
        let model = s(&dir.join("model.json"));
        cases.push(pretrained_case(
            tmp.path(),
            name,
            Some(&model),
            &weights,
            &dir.join("input.npy"),
        ));
    }
    run_checker(&cases);
}

/// Files that carry their own graph, from every producer the fixtures have: torch.onnx at
/// opsets 9 to 17 and dynamo, tf2onnx, TFLite (Keras and TF1 converters), Keras full
/// models, CNTK v2 and v1.
#[test]
fn graphs_export_to_onnx_that_onnx_runtime_runs_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let f = fixtures();
    let mut cases = vec![];
    let onnx = std::fs::read_dir(f.join("onnx")).unwrap();
    let mut onnx: Vec<PathBuf> = onnx
        .map(|e| e.unwrap().path())
        .filter(|d| d.join("model.onnx").is_file())
        .collect();
    onnx.sort();
    for dir in onnx {
        let name = format!("onnx_{}", dir.file_name().unwrap().to_str().unwrap());
        cases.push(pretrained_case(
            tmp.path(),
            &name,
            None,
            &dir.join("model.onnx"),
            &dir.join("input.npy"),
        ));
    }
    let mut files: Vec<(String, PathBuf, PathBuf)> = vec![
        (
            "tflite_keras_mobilenet".into(),
            f.join("keras_mobilenet/model.tflite"),
            f.join("keras_mobilenet/input.npy"),
        ),
        (
            "tflite_tf_resnet".into(),
            f.join("tf_resnet/model.tflite"),
            f.join("tf_resnet/input.npy"),
        ),
        (
            "tflite_tf1".into(),
            f.join("tflite_tf1/model.tflite"),
            f.join("tflite_tf1/input.npy"),
        ),
        (
            "tflite_dense_keep_dims".into(),
            f.join("tflite_ops/dense_keep_dims.tflite"),
            f.join("tflite_ops/input.npy"),
        ),
        (
            "keras_efficientnet_full".into(),
            f.join("keras_efficientnet/model.keras"),
            f.join("keras_efficientnet/input.npy"),
        ),
        (
            "keras_mobilenet_v2_h5".into(),
            f.join("keras_mobilenet_v2/model.h5"),
            f.join("keras_mobilenet_v2/input.npy"),
        ),
    ];
    // Keras Applications of every family as full models (depthwise-separable blocks,
    // Concat, average pooling, NASNet's cells, ConvNeXt's LayerNorm and GELU, Keras 2's
    // TFOpLambda arithmetic).
    for net in [
        "xception",
        "inception_v3",
        "resnet50v2",
        "densenet121",
        "nasnet",
        "mobilenet_v3_small",
        "efficientnet_v2",
        "convnext",
        "custom_scale",
    ] {
        files.push((
            format!("keras_app_{net}"),
            f.join(format!("keras_apps/{net}.keras")),
            f.join(format!("keras_apps/{net}_input.npy")),
        ));
    }
    files.push((
        "keras_app_tf_ops_keras2".into(),
        f.join("keras_apps/tf_ops_keras2.h5"),
        f.join("keras_apps/tf_ops_keras2_input.npy"),
    ));
    for net in ["cnn", "nested", "residual"] {
        files.push((
            format!("keras_{net}"),
            f.join(format!("keras_graph/{net}.keras")),
            f.join(format!("keras_graph/{net}_input.npy")),
        ));
    }
    for net in [
        "convnet",
        "grouped",
        "plain",
        "resnet",
        "shapes",
        "mobilenet_v2_small",
    ] {
        files.push((
            format!("cntk_{net}"),
            f.join(format!("cntk/{net}.model")),
            f.join(format!("cntk/{net}_input.npy")),
        ));
    }
    for net in ["plain", "resnet"] {
        files.push((
            format!("cntk_v1_{net}"),
            f.join(format!("cntk/{net}_v1.dnn")),
            f.join(format!("cntk/{net}_input.npy")),
        ));
    }
    for (name, file, input) in files {
        cases.push(pretrained_case(tmp.path(), &name, None, &file, &input));
    }
    run_checker(&cases);
}

/// Bundles, as `retrain fit` writes them: a zoo network fine-tuned and a graph fine-tuned
/// (their classifiers replaced, every layer trained), with their class names.
#[test]
fn fine_tuned_bundles_export_with_their_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = toy_folder_with(tmp.path(), 1);
    let f = fixtures();
    let mut cases = vec![];
    let zoo_fixture = f.join("mobilenet_v2");
    let graph_fixture = f.join("onnx/vit_op17");
    for (name, model, weights, input) in [
        (
            "zoo_bundle",
            Some(s(&zoo_fixture.join("model.json"))),
            zoo_fixture.join("weights.safetensors"),
            zoo_fixture.join("input.npy"),
        ),
        (
            "graph_bundle",
            None,
            graph_fixture.join("model.onnx"),
            graph_fixture.join("input.npy"),
        ),
    ] {
        let bundle = tmp.path().join(format!("{name}_fit"));
        let mut args = vec!["fit".to_owned()];
        if let Some(m) = &model {
            args.extend(["--model".into(), m.clone()]);
        }
        args.extend(
            [
                "--weights",
                &s(&weights),
                "--data",
                &s(&data),
                "--val",
                &s(&data),
                "--strategy",
                "finetune",
                "--epochs",
                "1",
                "--batch-size",
                "3",
                "--out",
                &s(&bundle),
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = retrain(&args);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        cases.push(bundle_case(
            tmp.path(),
            name,
            &bundle,
            &input,
            &["round", "square"],
        ));
    }
    run_checker(&cases);
}

/// Exports `bundle` into `root/name/model.onnx`, checks its class names, and writes the
/// bundle's outputs on `input` there.
fn bundle_case(root: &Path, name: &str, bundle: &Path, input: &Path, classes: &[&str]) -> PathBuf {
    let case = root.join(name);
    std::fs::create_dir_all(&case).unwrap();
    let out = case.join("model.onnx");
    let o = retrain(&[
        "export",
        "--bundle",
        &s(bundle),
        "--out",
        &s(&out),
        "--json",
    ]);
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["classes"], classes.len());
    assert_eq!(summary["opset"], 17);
    assert_eq!(
        summary["outputs"],
        serde_json::json!(["logits", "features"])
    );
    let bytes = std::fs::read(&out).unwrap();
    let classes_json = serde_json::to_string(classes).unwrap();
    assert!(
        bytes
            .windows(classes_json.len())
            .any(|w| w == classes_json.as_bytes()),
        "{name}: the class names are in the metadata"
    );
    let b = Bundle::load(bundle, &Device::default()).unwrap();
    let (shape, x) = npy(input);
    write_reference(&case, &b.model, &shape, x);
    case
}

/// The real ImageNet EfficientNet-Lite0, fine-tuned on a few hymenoptera photos, exported.
#[test]
fn a_bundle_fine_tuned_from_the_real_lite0_exports() {
    let (Some(weights), Some(hymenoptera)) =
        (real_weights("efficientnet-lite0.pth"), hymenoptera())
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // Eight photos a class: one fine-tuning epoch is enough to change every layer.
    let data = tmp.path().join("data");
    for class in ["ants", "bees"] {
        let from = hymenoptera.join("train").join(class);
        let mut photos: Vec<PathBuf> = std::fs::read_dir(&from)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        photos.sort();
        std::fs::create_dir_all(data.join(class)).unwrap();
        for p in photos.iter().take(8) {
            std::fs::copy(p, data.join(class).join(p.file_name().unwrap())).unwrap();
        }
    }
    let bundle = tmp.path().join("lite0");
    let o = retrain(&[
        "fit",
        "--model",
        "efficientnet_lite0",
        "--weights",
        &s(&weights),
        "--data",
        &s(&data),
        "--val-split",
        "0.25",
        "--strategy",
        "finetune",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        &s(&bundle),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Two preprocessed validation photos, as retrain feeds them.
    let device = Device::default();
    let b = Bundle::load(&bundle, &device).unwrap();
    let photos: Vec<PathBuf> = ["ants", "bees"]
        .iter()
        .map(|c| {
            let mut v: Vec<PathBuf> = std::fs::read_dir(hymenoptera.join("val").join(c))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            v.sort();
            v.remove(0)
        })
        .collect();
    let opts = retrain::inference::RunOptions {
        output: retrain::inference::Output::Pixels,
        ..Default::default()
    };
    let px = retrain::inference::run(&b.model, &photos, &opts, &retrain::observe::Silent, &device)
        .unwrap();
    let crop = b.model.preprocess.crop;
    let input = tmp.path().join("input.npy");
    std::fs::write(&input, npy_bytes(&px.features, &[2, 3, crop, crop])).unwrap();
    let case = bundle_case(
        tmp.path(),
        "lite0_bundle",
        &bundle,
        &input,
        &["ants", "bees"],
    );
    run_checker(&[case]);
}

/// What cannot be exported is one line naming why, with no file left behind.
#[test]
fn what_cannot_be_exported_says_why_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // TFLite's symmetric MIRROR_PAD has no ONNX op.
    let out = tmp.path().join("mirror.onnx");
    let o = retrain(&[
        "export",
        "--weights",
        &s(&fixtures().join("tflite_ops/mirror_pad.tflite")),
        "--out",
        &s(&out),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("symmetric") && err.contains("no ONNX op"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no temporary file left"
    );

    // Never over the weights file itself.
    let copy = tmp.path().join("model.onnx");
    std::fs::copy(fixtures().join("onnx/resnet_op13/model.onnx"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let o = retrain(&["export", "--weights", &s(&copy), "--out", &s(&copy)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("weights file itself"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&copy).unwrap(), before);

    // A folder that does not exist.
    let o = retrain(&[
        "export",
        "--weights",
        &s(&copy),
        "--out",
        &s(&tmp.path().join("no/such/dir/m.onnx")),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
}
