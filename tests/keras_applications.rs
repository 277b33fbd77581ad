//! Keras Applications as zoo entries (zoo/keras_applications.rs): weights-only files run on
//! the architecture Keras' own application code writes.
//!
//! - Every entry: its architecture, with and without top, translates into a graph whose
//!   parameters are exactly its variables, and its trainable and non-trainable parameter
//!   counts are Keras' (tests/fixtures/keras_applications/parameters.json, written by
//!   scripts/make_keras_applications.py from the models Keras builds).
//! - Reduced models of every family (scripts/make_keras_application_fixtures.py): the top
//!   model's weights as tf_keras (Keras 2) saves them, under Keras 2's layer names (also as
//!   a TensorFlow checkpoint, for three families), and the model without top as Keras 3
//!   saves it, loaded by layer name into Keras 3's architecture
//!   as a model spec gives it; features and logits against tf_keras' (top) and the pooled
//!   map against Keras 3's (no top), 1e-4 absolute, as loaded and with BatchNorm folded.

mod common;

use std::collections::BTreeMap;

use burn::prelude::*;
use common::*;
use retrain::weights::Weights;
use retrain::zoo::keras_applications::{Architecture, KerasApplicationConfig};
use retrain::zoo::{self, ArchConfig, Model, ModelSpec};

const TOL: f32 = 1e-4;

/// (fixture family, zoo entry whose preprocessing it takes)
const FAMILIES: &[(&str, &str)] = &[
    ("xception", "keras_xception"),
    ("vgg19", "keras_vgg19"),
    ("resnet50", "keras_resnet101"),
    ("resnet50_v2", "keras_resnet152_v2"),
    ("inception_v3", "keras_inception_v3"),
    ("inception_resnet_v2", "keras_inception_resnet_v2"),
    ("densenet", "keras_densenet121"),
    ("nasnet", "keras_nasnet_mobile"),
    ("mobilenet_v3_large", "keras_mobilenet_v3_large"),
    (
        "mobilenet_v3_small_minimalistic",
        "keras_mobilenet_v3_small_minimalistic",
    ),
    ("efficientnet", "keras_efficientnet_b1"),
    ("efficientnet_v2", "keras_efficientnet_v2_s"),
    ("convnext", "keras_convnext_tiny"),
];

fn dir() -> std::path::PathBuf {
    fixtures().join("keras_applications")
}

/// A reduced family's model spec: the entry with the fixture's architecture, at the
/// fixture's input size.
fn reduced_spec(family: &str, entry: &str) -> ModelSpec {
    let (shape, _) = npy(&dir().join(format!("{family}_input.npy")));
    let xz = std::fs::read(dir().join(format!("{family}.architecture.json.xz"))).unwrap();
    let mut text = Vec::new();
    lzma_rs::xz_decompress(&mut std::io::Cursor::new(xz), &mut text).unwrap();
    let architecture: Architecture = serde_json::from_slice(&text).unwrap();
    let config = KerasApplicationConfig {
        application: entry.to_owned(),
        architecture: Some(Box::new(architecture)),
    };
    ModelSpec {
        name: entry.to_owned(),
        preprocess: config.preprocess().sized(shape[2]),
        config: config.into(),
    }
}

fn keras_applications() -> Vec<(String, KerasApplicationConfig)> {
    zoo::catalogue()
        .into_iter()
        .filter_map(|e| match e.config {
            ArchConfig::KerasApplication(k) => Some((e.name.to_owned(), k)),
            _ => None,
        })
        .collect()
}

#[test]
fn every_application_has_keras_parameter_counts() {
    let text = std::fs::read_to_string(dir().join("parameters.json")).unwrap();
    let want: BTreeMap<String, BTreeMap<String, [usize; 2]>> = serde_json::from_str(&text).unwrap();
    let entries = keras_applications();
    assert_eq!(entries.len(), want.len(), "every entry has Keras' counts");
    for (name, k) in &entries {
        for (variant, top) in [("top", true), ("notop", false)] {
            let got = k.parameter_counts(top).unwrap();
            let [trainable, frozen] = want[name][variant];
            assert_eq!(got, (trainable, frozen), "{name} {variant}");
        }
        // As `retrain models` lists it: with the 1000-class top.
        let config: ArchConfig = k.clone().into();
        let [trainable, frozen] = want[name]["top"];
        assert_eq!(
            config.parameter_counts(1000),
            (trainable, frozen),
            "{name} as listed"
        );
    }
}

/// The translator knows every layer of every application: each architecture, with and
/// without top, becomes a graph whose parameters are its variables, name for name.
#[test]
fn every_application_translates_into_a_graph_of_its_variables() {
    for (name, k) in keras_applications() {
        for top in [true, false] {
            let (graph, described) = k
                .translate_shapes(top)
                .unwrap_or_else(|e| panic!("{name} (top {top}): {e}"));
            let mut held: Vec<&String> = graph
                .params
                .keys()
                .chain(&graph.weights_in_constants)
                .collect();
            held.sort();
            let mut want: Vec<&String> = described.iter().map(|(n, _)| n).collect();
            want.sort();
            assert_eq!(held, want, "{name} (top {top})");
        }
    }
}

fn run(model: &Model, family: &str, device: &Device) -> (f32, f32) {
    let (shape, x) = npy(&dir().join(format!("{family}_input.npy")));
    let (f, l) = model
        .network
        .features_and_logits(tensor4(&shape, x, device))
        .unwrap();
    let df = max_abs_diff(
        "features",
        values(f),
        npy(&dir().join(format!("{family}_features.npy"))),
    );
    let dl = match l {
        Some(l) => max_abs_diff(
            "logits",
            values(l),
            npy(&dir().join(format!("{family}_logits.npy"))),
        ),
        None => 0.0,
    };
    (df, dl)
}

#[test]
fn reduced_applications_load_weights_only_files_by_layer_name() {
    let device = Device::default();
    for &(family, entry) in FAMILIES {
        let spec = reduced_spec(family, entry);
        // The top, as tf_keras saves it (Keras 2 names).
        let top = Weights::load(&dir().join(format!("{family}_top.h5"))).unwrap();
        let model =
            Model::from_spec(&spec, &top, &device).unwrap_or_else(|e| panic!("{family}: {e}"));
        assert!(matches!(model.config, ArchConfig::Graph(_)), "{family}");
        let (df, dl) = run(&model, family, &device);
        let folded = model.for_inference();
        let (ff, fl) = run(&folded, family, &device);
        eprintln!(
            "{family}: {} stages; max |diff| features {df:.2e}, logits {dl:.2e} \
             (folded {ff:.2e}, {fl:.2e})",
            folded.stage_names.len()
        );
        assert!(
            [df, dl, ff, fl].iter().all(|d| *d <= TOL),
            "{family}: {df:e} {dl:e} {ff:e} {fl:e}"
        );

        // The same top as a TensorFlow checkpoint (tf_keras' save_weights in TF format).
        let checkpoint = dir().join(format!("{family}_checkpoint/model"));
        if checkpoint.with_extension("index").exists() {
            let w = Weights::load(&checkpoint).unwrap();
            let model = Model::from_spec(&spec, &w, &device)
                .unwrap_or_else(|e| panic!("{family} checkpoint: {e}"));
            let (df, dl) = run(&model, family, &device);
            eprintln!("{family} checkpoint: max |diff| features {df:.2e}, logits {dl:.2e}");
            assert!(df <= TOL && dl <= TOL, "{family} checkpoint: {df:e} {dl:e}");
        }

        // Without top, as Keras 3 saves it: the last map, averaged. Its input size is free:
        // the spec's size is the one the graph is built for. (Kept for the families whose
        // HDF5 file stays small.)
        let base = dir().join(format!("{family}_notop.weights.h5"));
        if !base.exists() {
            continue;
        }
        let base = Weights::load(&base).unwrap();
        let (shape, x) = npy(&dir().join(format!("{family}_input.npy")));
        let model = Model::from_spec(&spec, &base, &device)
            .unwrap_or_else(|e| panic!("{family} without top: {e}"));
        assert!(model.network.classifier.is_none(), "{family}");
        let got = model
            .network
            .penultimate(tensor4(&shape, x, &device))
            .unwrap();
        let d = max_abs_diff(
            "pooled",
            values(got),
            npy(&dir().join(format!("{family}_notop_features.npy"))),
        );
        eprintln!("{family} without top: max |diff| {d:.2e}");
        assert!(d <= TOL, "{family} without top: {d:e}");
    }
}

/// Every family trains from its weights-only file through the command line (a model spec
/// file naming the reduced architecture): a probe, a freeze through a middle layer and a
/// fine-tune, each bundle predicting one of the classes.
#[test]
fn reduced_applications_probe_freeze_and_finetune() {
    let device = Device::default();
    let tmp = tempfile::tempdir().unwrap();
    let data = toy_folder_with(tmp.path(), 2);
    for &(family, entry) in FAMILIES {
        let spec = reduced_spec(family, entry);
        let spec_file = tmp.path().join(format!("{family}.json"));
        std::fs::write(&spec_file, serde_json::to_string(&spec).unwrap()).unwrap();
        let weights = dir().join(format!("{family}_top.h5"));
        let stages = Model::from_spec(&spec, &Weights::load(&weights).unwrap(), &device)
            .unwrap()
            .stage_names;
        let middle = stages[stages.len() / 2].clone();
        for (strategy, extra) in [
            ("probe", vec![]),
            ("freeze", vec!["--freeze-until", middle.as_str()]),
            ("finetune", vec!["--head-epochs", "1"]),
        ] {
            let bundle = tmp.path().join(format!("{family}_{strategy}"));
            let mut args = vec![
                "fit",
                "--model",
                spec_file.to_str().unwrap(),
                "--weights",
                weights.to_str().unwrap(),
                "--strategy",
                strategy,
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--val-split",
                "0.34",
                "--data",
                data.to_str().unwrap(),
                "--out",
                bundle.to_str().unwrap(),
            ];
            args.extend(extra);
            let o = retrain(&args);
            assert!(o.status.success(), "{family} {strategy}: {}", stderr(&o));
            bundle_predicts_a_toy_class(&bundle, &data, &format!("{family} {strategy}"));
        }
        eprintln!("{family}: probe, freeze through {middle}, finetune");
    }
}
