//! `retrain fit` (probe), bundles, `retrain eval` and `--bundle` on predict/embed.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A two-class ImageFolder made of the fixture images, three per class.
fn toy_folder(root: &Path) -> PathBuf {
    toy_folder_with(root, 1)
}

fn fixture_model() -> (String, String) {
    let d = fixtures().join("mobilenet_v2");
    (s(&d.join("model.json")), s(&d.join("weights.safetensors")))
}

/// `retrain fit` of `model` with `weights` on `data`, validated on the same images, with
/// `rest`.
fn fit_with(model: &str, weights: &str, data: &Path, rest: &[&str]) -> std::process::Output {
    let data = s(data);
    let mut args = vec![
        "fit",
        "--model",
        model,
        "--weights",
        weights,
        "--data",
        &data,
        "--val",
        &data,
    ];
    args.extend_from_slice(rest);
    retrain(&args)
}

#[test]
fn probe_bundle_round_trip_on_fixtures() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let (model, weights) = fixture_model();
    let bundle = dir.path().join("bundle");
    let o = fit_with(
        &model,
        &weights,
        &data,
        &[
            "--strategy",
            "probe",
            "--folds",
            "3",
            "--out",
            &s(&bundle),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["classes"], serde_json::json!(["round", "square"]));
    assert_eq!(summary["train_images"], 6);
    assert_eq!(
        summary["hyperparameters"]["c_chosen_by"],
        "cross-validation"
    );

    let manifest = json_file(&bundle.join("manifest.json"));
    assert_eq!(manifest["format"], 1);
    assert_eq!(manifest["strategy"], "probe");
    assert_eq!(manifest["model"]["config"]["family"], "mobilenet_v2");
    assert_eq!(manifest["pretrained"]["format"], "safetensors");
    assert_eq!(manifest["pretrained"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(manifest["train"]["fingerprint"].as_str().unwrap().len(), 32);
    assert!(bundle.join("metrics.json").is_file());

    // The bundle predicts with its own class names, and evaluates.
    let o = retrain(&[
        "predict",
        "--bundle",
        &s(&bundle),
        "--json",
        &s(&data.join("round/rgb.png")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let label = v["predictions"][0]["top"][0]["label"].as_str().unwrap();
    assert!(label == "round" || label == "square");

    let o = retrain(&[
        "eval",
        "--bundle",
        &s(&bundle),
        "--data",
        &s(&data),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let report = &v["report"];
    assert_eq!(report["images"], 6);
    let confusion: Vec<Vec<u64>> = serde_json::from_value(report["confusion"].clone()).unwrap();
    assert_eq!(confusion.iter().flatten().sum::<u64>(), 6);
    // Eval agrees with the fit's own validation figure (same images).
    assert_eq!(report["accuracy"], manifest["metrics"]["val"]["accuracy"]);

    let out = dir.path().join("e.npy");
    let o = retrain(&[
        "embed",
        "--bundle",
        &s(&bundle),
        "--out",
        &s(&out),
        &s(&data),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // An existing bundle is never overwritten.
    let before = std::fs::read(bundle.join("manifest.json")).unwrap();
    let o = retrain(&[
        "fit",
        "--model",
        &model,
        "--weights",
        &weights,
        "--data",
        &s(&data),
        "--out",
        &s(&bundle),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(bundle.join("manifest.json")).unwrap(), before);
}

#[test]
fn same_seed_same_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let (model, weights) = fixture_model();
    let mut heads = Vec::new();
    for name in ["a", "b"] {
        let out = dir.path().join(name);
        let o = retrain(&[
            "fit",
            "--model",
            &model,
            "--weights",
            &weights,
            "--data",
            &s(&data),
            "--val-split",
            "0.34",
            "--folds",
            "2",
            "--seed",
            "5",
            "--out",
            &s(&out),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        heads.push(std::fs::read(out.join("model.safetensors")).unwrap());
    }
    assert_eq!(heads[0], heads[1]);
}

#[test]
fn freeze_trains_a_head_and_repeats_with_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let (model, weights) = fixture_model();
    let mut outputs = Vec::new();
    for (name, extra) in [("a", "sgd"), ("b", "sgd"), ("c", "adamw")] {
        let out = dir.path().join(name);
        let o = fit_with(
            &model,
            &weights,
            &data,
            &[
                "--strategy",
                "freeze",
                "--epochs",
                "3",
                "--optimizer",
                extra,
                "--label-smoothing",
                "0.1",
                "--warmup",
                "1",
                "--train-batch",
                "4",
                "--seed",
                "9",
                "--out",
                &s(&out),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stderr(&o).matches("epoch ").count(), 3, "{}", stderr(&o));
        let m = json_file(&out.join("metrics.json"));
        assert_eq!(m["epochs"].as_array().unwrap().len(), 3);
        let manifest = json_file(&out.join("manifest.json"));
        assert_eq!(manifest["strategy"], "freeze");
        assert_eq!(manifest["hyperparameters"]["training"]["epochs"], 3);
        outputs.push(std::fs::read(out.join("model.safetensors")).unwrap());
    }
    assert_eq!(outputs[0], outputs[1], "same seed, same bundle");
    assert_ne!(outputs[0], outputs[2], "AdamW trains differently from SGD");
}

/// Frozen through stage2: later stages train (their tensors change, BatchNorm statistics
/// included), earlier ones stay bit-identical, and the bundle reloads to the same accuracy.
#[test]
fn freeze_until_a_stage_trains_the_rest_and_exports_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let (model, weights) = fixture_model();
    let out = dir.path().join("partial");
    let o = fit_with(
        &model,
        &weights,
        &data,
        &[
            "--strategy",
            "freeze",
            "--freeze-until",
            "stage2",
            "--epochs",
            "2",
            "--lr",
            "0.05",
            "--train-batch",
            "3",
            "--out",
            &s(&out),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let before = retrain::weights::Weights::load(Path::new(&weights)).unwrap();
    let after = retrain::weights::Weights::load(&out.join("model.safetensors")).unwrap();
    // features.0-3 are stem, stage1 and stage2 of the fixture; features.4+ come after the cut.
    for (k, t) in &before.tensors {
        if k.starts_with("classifier") || k.ends_with("num_batches_tracked") {
            continue;
        }
        let a = after.get(k).unwrap_or_else(|| panic!("bundle lacks {k}"));
        let layer: usize = k.split('.').nth(1).unwrap().parse().unwrap();
        if layer <= 3 {
            assert_eq!(a.data, t.data, "{k} is frozen");
        } else if k.ends_with("running_mean") || k.ends_with(".weight") {
            assert_ne!(a.data, t.data, "{k} was trained");
        }
    }
    let manifest = json_file(&out.join("manifest.json"));
    assert_eq!(
        manifest["hyperparameters"]["phases"][0]["frozen_through"],
        "stage2"
    );
    let o = retrain(&["eval", "--bundle", &s(&out), "--data", &s(&data), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["report"]["accuracy"],
        manifest["metrics"]["val"]["accuracy"]
    );
    let o = retrain(&[
        "fit",
        "--model",
        &model,
        "--weights",
        &weights,
        "--data",
        &s(&data),
        "--strategy",
        "freeze",
        "--freeze-until",
        "nope",
        "--out",
        &s(&dir.path().join("x")),
    ]);
    assert!(stderr(&o).contains("has no stage `nope`"), "{}", stderr(&o));
}

/// Early stopping keeps the epoch with the lowest validation loss, and the bundle holds
/// exactly that epoch's weights; class balancing is recorded.
#[test]
fn early_stopping_keeps_the_best_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let (model, weights) = fixture_model();
    let out = dir.path().join("es");
    // A learning rate this high overshoots, so validation loss rises and training stops.
    let o = fit_with(
        &model,
        &weights,
        &data,
        &[
            "--strategy",
            "freeze",
            "--epochs",
            "12",
            "--lr",
            "20",
            "--patience",
            "2",
            "--balanced",
            "--no-augment",
            "--train-batch",
            "2",
            "--out",
            &s(&out),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = json_file(&out.join("metrics.json"));
    let epochs = m["epochs"].as_array().unwrap();
    let losses: Vec<f64> = epochs
        .iter()
        .map(|e| e["val_loss"].as_f64().unwrap())
        .collect();
    let best = losses.iter().copied().fold(f64::INFINITY, f64::min);
    let manifest = json_file(&out.join("manifest.json"));
    assert_eq!(manifest["hyperparameters"]["training"]["balanced"], true);
    let kept = manifest["metrics"]["val"]["loss"].as_f64().unwrap();
    assert_eq!(
        kept, best,
        "the bundle keeps the lowest-loss epoch of {losses:?}"
    );
    if epochs.len() < 12 {
        assert!(
            stderr(&o).contains("stopping: no lower validation loss"),
            "{}",
            stderr(&o)
        );
        assert_eq!(
            manifest["hyperparameters"]["stopped_early_after_epoch"],
            epochs.len()
        );
    }
    let o = retrain(&["eval", "--bundle", &s(&out), "--data", &s(&data), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((v["report"]["loss"].as_f64().unwrap() - kept).abs() < 1e-4);
}

/// Without augmentation the inputs are computed once at the model's size, so no smaller
/// crops are drawn, and none are recorded.
#[test]
fn finetune_without_augmentation_trains_at_the_models_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let (model, weights) = fixture_model();
    let out = dir.path().join("b");
    let o = fit_with(
        &model,
        &weights,
        &data,
        &[
            "--strategy",
            "finetune",
            "--no-augment",
            "--epochs",
            "2",
            "--train-batch",
            "3",
            "--start-size",
            "32",
            "--out",
            &s(&out),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("crops)"), "{}", stderr(&o));
    let manifest = json_file(&out.join("manifest.json"));
    assert!(manifest["hyperparameters"]["phases"][1]["start_size"].is_null());
    let metrics = json_file(&out.join("metrics.json"));
    let epochs = metrics["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    assert!(epochs.iter().all(|e| e["train_crop"].is_null()));
}

/// Fine-tuning: a head-only epoch, then every layer trains (stem included) and the whole
/// network is saved; same seed, same bundle.
#[test]
fn finetune_trains_every_layer() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let (model, weights) = fixture_model();
    let mut bundles = Vec::new();
    for name in ["a", "b"] {
        let out = dir.path().join(name);
        let o = fit_with(
            &model,
            &weights,
            &data,
            &[
                "--strategy",
                "finetune",
                "--epochs",
                "2",
                "--head-epochs",
                "1",
                "--lr",
                "0.05",
                "--train-batch",
                "3",
                "--seed",
                "4",
                "--start-size",
                "32",
                "--out",
                &s(&out),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("epoch 1/3 (head only)"),
            "{}",
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("epoch 2/3 (32x32 crops)"),
            "progressive resizing: {}",
            stderr(&o)
        );
        bundles.push(out);
    }
    let before = retrain::weights::Weights::load(Path::new(&weights)).unwrap();
    let after = retrain::weights::Weights::load(&bundles[0].join("model.safetensors")).unwrap();
    for k in [
        "features.0.0.weight",
        "features.0.1.running_mean",
        "features.5.conv.3.weight",
    ] {
        assert_ne!(
            after.get(k).unwrap().data,
            before.get(k).unwrap().data,
            "{k} was trained"
        );
    }
    let manifest = json_file(&bundles[0].join("manifest.json"));
    assert_eq!(manifest["strategy"], "finetune");
    assert_eq!(
        manifest["hyperparameters"]["phases"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The unfrozen epochs rise from 32x32 crops to the model's 64x64.
    assert_eq!(manifest["hyperparameters"]["phases"][1]["start_size"], 32);
    let metrics = json_file(&bundles[0].join("metrics.json"));
    let crops: Vec<_> = metrics["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["train_crop"].as_u64())
        .collect();
    assert_eq!(crops, [None, Some(32), None]);
    assert_eq!(
        std::fs::read(bundles[0].join("model.safetensors")).unwrap(),
        std::fs::read(bundles[1].join("model.safetensors")).unwrap(),
        "a CPU run repeats exactly"
    );
    let o = retrain(&[
        "eval",
        "--bundle",
        &s(&bundles[0]),
        "--data",
        &s(&data),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["report"]["accuracy"],
        manifest["metrics"]["val"]["accuracy"]
    );
}

#[test]
fn bad_training_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let (model, weights) = fixture_model();
    let fit = |data: &Path| {
        retrain(&[
            "fit",
            "--model",
            &model,
            "--weights",
            &weights,
            "--data",
            &s(data),
            "--out",
            &s(&dir.path().join("never")),
        ])
    };
    // A class folder with a single image.
    let lonely = dir.path().join("lonely");
    std::fs::create_dir_all(lonely.join("one")).unwrap();
    std::fs::create_dir_all(lonely.join("many")).unwrap();
    std::fs::copy(data.join("round/rgb.png"), lonely.join("one/x.png")).unwrap();
    for f in ["a.png", "b.png"] {
        std::fs::copy(data.join("round/rgb.png"), lonely.join("many").join(f)).unwrap();
    }
    let o = fit(&lonely);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("class `one` has 1 image"),
        "{}",
        stderr(&o)
    );

    // A CSV naming a file that does not exist.
    let csv = dir.path().join("labels.csv");
    std::fs::write(
        &csv,
        "path,label\ndata/round/rgb.png,round\ndata/round/missing.png,round\n",
    )
    .unwrap();
    let o = fit(&csv);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("line 3") && stderr(&o).contains("does not exist"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("never").exists());

    // No class folders at all.
    let flat = dir.path().join("flat");
    std::fs::create_dir_all(&flat).unwrap();
    std::fs::copy(data.join("round/rgb.png"), flat.join("x.png")).unwrap();
    let o = fit(&flat);
    assert!(stderr(&o).contains("no class folders"), "{}", stderr(&o));
}

#[test]
fn bundle_from_another_format_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("b");
    std::fs::create_dir(&b).unwrap();
    std::fs::write(
        b.join("manifest.json"),
        r#"{"format": 99, "retrain_version": "9.0.0"}"#,
    )
    .unwrap();
    let o = retrain(&["eval", "--bundle", &s(&b), "--data", &s(dir.path())]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("format 99") && e.contains("retrain 9.0.0"),
        "{e}"
    );
    let o = retrain(&["eval", "--bundle", &s(dir.path()), "--data", &s(dir.path())]);
    assert!(
        stderr(&o).contains("is not a retrain bundle"),
        "{}",
        stderr(&o)
    );
}

/// Fits `strategy` on hymenoptera train with the real Lite0 weights; the val accuracy.
fn fit_hymenoptera(strategy: &str) -> Option<f64> {
    let (Some(w), Some(data)) = (real_weights("efficientnet-lite0.pth"), hymenoptera()) else {
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("lite0-{strategy}"));
    let o = retrain(&[
        "fit",
        "--model",
        "efficientnet_lite0",
        "--weights",
        &s(&w),
        "--data",
        &s(&data.join("train")),
        "--val",
        &s(&data.join("val")),
        "--strategy",
        strategy,
        "--out",
        &s(&out),
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["val_images"], 153);
    let acc = v["val_accuracy"].as_f64().unwrap();
    eprintln!(
        "{strategy} val accuracy {acc:.4}, hyper-parameters {}",
        v["hyperparameters"]
    );
    Some(acc)
}

/// Acceptance: a probe on EfficientNet-Lite0 ImageNet features reaches at least 94% on
/// hymenoptera val (PyTorch reference: 94.8%).
#[test]
fn probe_on_hymenoptera_with_lite0() {
    if let Some(acc) = fit_hymenoptera("probe") {
        assert!(acc >= 0.94, "val accuracy {acc}");
    }
}

/// Acceptance: frozen Lite0 backbone, new head trained 5 epochs on augmented crops: at least
/// 95% on hymenoptera val (PyTorch reference: 96.7%).
#[test]
fn freeze_on_hymenoptera_with_lite0() {
    if let Some(acc) = fit_hymenoptera("freeze") {
        assert!(acc >= 0.95, "val accuracy {acc}");
    }
}

/// The strategies on Keras-loaded models (Keras MobileNetV2 and VGG fixtures, `.h5`): each trains,
/// the bundle loads back through the zoo, and records where its weights came from.
#[test]
fn strategies_on_a_keras_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    for (fixture, file, strategy, format) in [
        ("keras_mobilenet_v2", "weights.h5", "probe", "keras-h5"),
        ("keras_mobilenet_v2", "weights.h5", "freeze", "keras-h5"),
        ("keras_mobilenet_v2", "weights.h5", "finetune", "keras-h5"),
        // VGG with its top: fc1/fc2 train as 1x1 convolutions and go back into the bundle.
        ("keras_vgg", "weights.h5", "finetune", "keras-h5"),
        // EfficientNet: its input normalisation stays fixed while everything else trains.
        ("keras_efficientnet", "weights.h5", "finetune", "keras-h5"),
        // TensorFlow's own formats: a sharded checkpoint, and int8 TFLite whose folded
        // BatchNorms come back as trainable identity BatchNorms.
        (
            "tf_mobilenet_v2",
            "checkpoint/model",
            "finetune",
            "tf-checkpoint",
        ),
        ("tf_mobilenet_v2", "model_int8.tflite", "freeze", "tflite"),
        ("tf_resnet", "model.tflite", "finetune", "tflite"),
    ] {
        let d = fixtures().join(fixture);
        let (model, weights) = (s(&d.join("model.json")), s(&d.join(file)));
        let out = dir
            .path()
            .join(format!("{fixture}-{}-{strategy}", file.replace('/', "_")));
        let o = fit_with(
            &model,
            &weights,
            &data,
            &[
                "--strategy",
                strategy,
                "--epochs",
                "2",
                "--folds",
                "2",
                "--train-batch",
                "3",
                "--out",
                &s(&out),
                "--json",
            ],
        );
        assert!(o.status.success(), "{strategy}: {}", stderr(&o));
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["train_images"], 6, "{strategy}");
        let manifest = json_file(&out.join("manifest.json"));
        assert_eq!(manifest["pretrained"]["format"], format, "{strategy}");
        assert!(
            manifest["pretrained"]["path"]
                .as_str()
                .unwrap()
                .ends_with(file)
        );
        // The bundle's weights (PyTorch conventions, Keras layer names) load back, and eval
        // reproduces the fit's validation figure.
        let o = retrain(&["eval", "--bundle", &s(&out), "--data", &s(&data), "--json"]);
        assert!(o.status.success(), "{strategy}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["report"]["accuracy"], manifest["metrics"]["val"]["accuracy"],
            "{strategy}"
        );
    }
}

/// A token model (the reduced torchvision ViT) freezes at an encoder block and trains the
/// blocks after it: the patch embedding and the first block keep their values, the later
/// block, the final norm and the head change; the bundle scores as the fit reported.
#[test]
fn a_vit_freezes_at_an_encoder_block_and_trains_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let f = fixtures().join("vit");
    let weights = f.join("weights.safetensors");
    let out = dir.path().join("vit");
    let o = retrain(&[
        "fit",
        "--model",
        &s(&f.join("model.json")),
        "--weights",
        &s(&weights),
        "--data",
        &s(&data),
        "--val",
        &s(&data),
        "--strategy",
        "freeze",
        "--freeze-until",
        "encoder_layer_0",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--train-batch",
        "3",
        "--out",
        &s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = retrain::weights::Weights::load(&weights).unwrap();
    let after = retrain::weights::Weights::load(&out.join("model.safetensors")).unwrap();
    for (k, t) in &before.tensors {
        if k.starts_with("heads.") {
            continue;
        }
        let a = after.get(k).unwrap_or_else(|| panic!("bundle lacks {k}"));
        let frozen = k.starts_with("conv_proj")
            || k == "class_token"
            || k == "encoder.pos_embedding"
            || k.starts_with("encoder.layers.encoder_layer_0.");
        if frozen {
            assert_eq!(a.data, t.data, "{k} is frozen");
        } else {
            assert_ne!(a.data, t.data, "{k} was trained");
        }
    }
    let manifest = json_file(&out.join("manifest.json"));
    let o = retrain(&["eval", "--bundle", &s(&out), "--data", &s(&data), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["report"]["accuracy"],
        manifest["metrics"]["val"]["accuracy"]
    );
}

/// Swin V2 fine-tunes through windows that pad the map (the padded keys are zero vectors,
/// whose cosine normalisation must keep a finite gradient) and MaxViT through its head
/// without bias: every loss finite, and the bundle (a head with a bias) scores as the fit
/// reported.
#[test]
fn windowed_attention_models_fine_tune_to_finite_losses() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    for name in ["swin_v2", "maxvit"] {
        let f = fixtures().join(name);
        let out = dir.path().join(name);
        let o = retrain(&[
            "fit",
            "--model",
            &s(&f.join("model.json")),
            "--weights",
            &s(&f.join("weights.pt")),
            "--data",
            &s(&data),
            "--val",
            &s(&data),
            "--strategy",
            "finetune",
            "--epochs",
            "2",
            "--lr",
            "0.01",
            "--train-batch",
            "3",
            "--out",
            &s(&out),
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let text = format!("{}{}", stdout(&o), stderr(&o));
        assert!(!text.contains("NaN"), "{name}: {text}");
        let manifest = json_file(&out.join("manifest.json"));
        let loss = manifest["metrics"]["val"]["loss"].as_f64().unwrap();
        assert!(loss.is_finite(), "{name}: val loss {loss}");
        let o = retrain(&["eval", "--bundle", &s(&out), "--data", &s(&data), "--json"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["report"]["accuracy"], manifest["metrics"]["val"]["accuracy"],
            "{name}"
        );
    }
}

/// A timm DINOv2 with registers whose position embedding is for another size than it runs
/// at (the reduced fixture: 3x3 patches in the file, 4x4 at its 56x56 crop) freezes at
/// `blocks.0` and trains the rest: the bundle records the model as it ran (its config at
/// 56, the position embedding resampled, frozen, as timm resamples it), and loads back
/// to score as the fit reported.
#[test]
fn a_timm_dinov2_at_another_size_freezes_at_a_block_and_its_bundle_says_the_size() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let f = fixtures().join("timm_dinov2_reg4");
    let weights = f.join("weights.safetensors");
    let out = dir.path().join("dinov2");
    let o = retrain(&[
        "fit",
        "--model",
        &s(&f.join("model.json")),
        "--weights",
        &s(&weights),
        "--data",
        &s(&data),
        "--val",
        &s(&data),
        "--strategy",
        "freeze",
        "--freeze-until",
        "blocks.0",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--train-batch",
        "3",
        "--out",
        &s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = json_file(&out.join("manifest.json"));
    assert_eq!(manifest["model"]["config"]["img_size"], 56, "{manifest}");
    assert_eq!(manifest["model"]["preprocess"]["crop"], 56);
    let before = retrain::weights::Weights::load(&weights).unwrap();
    let after = retrain::weights::Weights::load(&out.join("model.safetensors")).unwrap();
    let (shape, resampled) = npy(&f.join("pos_embed.npy"));
    let pos = after.get("pos_embed").unwrap();
    assert_eq!(pos.shape, shape);
    let d = pos
        .data
        .iter()
        .zip(&resampled)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        d <= 1e-4,
        "the bundle's pos_embed is timm's resampled one ({d:e})"
    );
    for (k, t) in &before.tensors {
        if k.starts_with("head.") || k == "pos_embed" {
            continue;
        }
        let a = after.get(k).unwrap_or_else(|| panic!("bundle lacks {k}"));
        let frozen = k.starts_with("patch_embed.")
            || k == "cls_token"
            || k == "reg_token"
            || k.starts_with("blocks.0.");
        if frozen {
            assert_eq!(a.data, t.data, "{k} is frozen");
        } else {
            assert_ne!(a.data, t.data, "{k} was trained");
        }
    }
    let o = retrain(&["eval", "--bundle", &s(&out), "--data", &s(&data), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["report"]["accuracy"],
        manifest["metrics"]["val"]["accuracy"]
    );
}

/// timm's CNNs and Swin freeze at a stage by timm's name (`s2`, `stages.1`, `layers.0`;
/// `layer2` as torchvision's in ResNet; the generic `stage2` in EfficientNet), train the
/// rest, and write a bundle under timm's names: the frozen stages' tensors exactly the
/// file's, a trained one changed, and the bundle scores as the fit reported.
#[test]
fn timm_families_freeze_at_a_timm_stage_and_bundle_under_timm_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    // (fixture, weights file, stage frozen through, a frozen tensor, a trained tensor)
    let cases = [
        (
            "timm_regnet",
            "weights.safetensors",
            "s2",
            "s2.b1.conv2.conv.weight",
            "s3.b1.conv2.conv.weight",
        ),
        (
            "timm_convnext",
            "weights.safetensors",
            "stages.1",
            "stages.1.blocks.0.gamma",
            "stages.2.blocks.0.mlp.fc1.weight",
        ),
        (
            "timm_swin",
            "weights.safetensors",
            "layers.0",
            "layers.0.blocks.1.attn.qkv.weight",
            "layers.1.blocks.0.mlp.fc2.weight",
        ),
        (
            "timm_efficientnet",
            "weights.pt",
            "stage2",
            "blocks.1.0.conv_pwl.weight",
            "blocks.2.0.conv_pw.weight",
        ),
        (
            "timm_resnet",
            "weights.safetensors",
            "layer2",
            "layer2.0.conv2.weight",
            "layer3.0.conv2.weight",
        ),
    ];
    for (name, file, stage, frozen, trained) in cases {
        let f = fixtures().join(name);
        let weights = f.join(file);
        let out = dir.path().join(name);
        let o = retrain(&[
            "fit",
            "--model",
            &s(&f.join("model.json")),
            "--weights",
            &s(&weights),
            "--data",
            &s(&data),
            "--val",
            &s(&data),
            "--strategy",
            "freeze",
            "--freeze-until",
            stage,
            "--epochs",
            "2",
            "--lr",
            "0.05",
            "--train-batch",
            "3",
            "--out",
            &s(&out),
        ]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let before = retrain::weights::Weights::load(&weights).unwrap();
        let after = retrain::weights::Weights::load(&out.join("model.safetensors")).unwrap();
        let get = |w: &retrain::weights::Weights, k: &str| {
            w.get(k)
                .unwrap_or_else(|| panic!("{name}: no `{k}`"))
                .data
                .clone()
        };
        assert_eq!(
            get(&after, frozen),
            get(&before, frozen),
            "{name}: {frozen}"
        );
        assert_ne!(
            get(&after, trained),
            get(&before, trained),
            "{name}: {trained}"
        );
        let manifest = json_file(&out.join("manifest.json"));
        let o = retrain(&["eval", "--bundle", &s(&out), "--data", &s(&data), "--json"]);
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["report"]["accuracy"], manifest["metrics"]["val"]["accuracy"],
            "{name}"
        );
    }
}
