//! The library on its own, as a Rust user calls it: no command line, no printing. Embeds a
//! folder, fits a probe and a freeze run in memory, and checks that the model a fit returns
//! is the one its bundle reloads to.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::prelude::*;
use retrain::bundle::Bundle;
use retrain::inference::{self, Output, RunOptions};
use retrain::observe::{Event, Interrupter, Observer, Silent};
use retrain::strategy::{self, FitOptions, Strategy, Training, Validation};
use retrain::weights::Weights;
use retrain::zoo::{self, Model};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Two classes of three fixture images each.
fn toy_folder(root: &Path) -> PathBuf {
    let img = fixtures().join("images");
    let data = root.join("data");
    for (class, files) in [
        ("round", ["rgb.png", "rgb.bmp", "rgb.webp"]),
        ("square", ["gray.png", "cmyk.jpg", "palette.gif"]),
    ] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        for f in files {
            std::fs::copy(img.join(f), data.join(class).join(f)).unwrap();
        }
    }
    data
}

fn spec_and_weights() -> (zoo::ModelSpec, PathBuf) {
    let d = fixtures().join("mobilenet_v2");
    let spec = zoo::resolve(d.join("model.json").to_str().unwrap()).unwrap();
    (spec, d.join("weights.safetensors"))
}

/// Counts what a run reports.
#[derive(Default)]
struct Counter {
    images: Mutex<usize>,
    epochs: Mutex<Vec<usize>>,
}

impl Observer for Counter {
    fn event(&self, e: Event<'_>) {
        match e {
            Event::ImagesDone { count } => *self.images.lock().unwrap() += count,
            Event::Epoch { record, .. } => self.epochs.lock().unwrap().push(record.epoch),
            _ => {}
        }
    }
}

fn logits(model: &Model, paths: &[PathBuf], device: &Device) -> Vec<f32> {
    let opts = RunOptions {
        output: Output::PooledAndLogits,
        ..RunOptions::default()
    };
    let out = inference::run(model, paths, &opts, &Silent, device).unwrap();
    out.logits.unwrap()
}

#[test]
fn embed_then_fit_in_memory_and_the_bundle_reloads_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let device = retrain::default_device();
    let (spec, weights) = spec_and_weights();

    let w = Weights::load(&weights).unwrap();
    let model = Model::from_spec(&spec, &w, &device)
        .unwrap()
        .for_inference();
    let images = retrain::data::collect_images(std::slice::from_ref(&data)).unwrap();
    let seen = Counter::default();
    let out = inference::run(&model, &images, &RunOptions::default(), &seen, &device).unwrap();
    assert_eq!(out.paths.len(), 6);
    assert_eq!(out.features.len(), 6 * out.dim);
    assert_eq!(
        *seen.images.lock().unwrap(),
        6,
        "the observer saw every image"
    );

    let opts = FitOptions {
        val: Validation::Folder(data.clone()),
        strategy: Strategy::Probe { c: None, folds: 3 },
        ..FitOptions::new(spec.clone(), &weights, &data, dir.path().join("probe"))
    };
    let fitted = strategy::train_model(&opts, &Silent, &Interrupter::new(), &device).unwrap();
    assert!(!opts.out.exists(), "train_model writes no bundle");
    let trained = fitted.model(&device).unwrap().for_inference();
    fitted.write_bundle(&opts.out).unwrap();
    let reloaded = Bundle::load(&opts.out, &device)
        .unwrap()
        .model
        .for_inference();
    assert_eq!(
        logits(&trained, &images, &device),
        logits(&reloaded, &images, &device)
    );
    assert_eq!(fitted.summary.classes, vec!["round", "square"]);

    // A freeze run through the same path reports one event per epoch.
    let freeze = FitOptions {
        strategy: Strategy::Freeze {
            training: Training {
                epochs: 2,
                ..Training::default()
            },
            augment: false,
            until: None,
        },
        out: dir.path().join("freeze"),
        ..opts.clone()
    };
    let seen = Counter::default();
    let summary = strategy::fit(&freeze, &seen, &Interrupter::new(), &device).unwrap();
    assert_eq!(*seen.epochs.lock().unwrap(), vec![1, 2]);
    assert_eq!(summary.strategy, strategy::StrategyKind::Freeze);
    assert!(freeze.out.join("manifest.json").is_file());
}

#[test]
fn options_are_checked_by_the_library() {
    let (spec, weights) = spec_and_weights();
    let mut opts = FitOptions::new(spec, weights, "data", "out");
    opts.strategy = Strategy::Freeze {
        training: Training {
            label_smoothing: 1.5,
            ..Training::default()
        },
        augment: true,
        until: None,
    };
    let e = opts.validate().unwrap_err();
    assert_eq!(e.name, "label_smoothing");
    let device = retrain::default_device();
    let err = strategy::train_model(&opts, &Silent, &Interrupter::new(), &device)
        .err()
        .expect("refused before any work");
    assert!(err.to_string().contains("label_smoothing"), "{err}");
}

#[test]
fn an_interrupter_stops_a_gradient_run_with_its_state_saved() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_folder(dir.path());
    let device = retrain::default_device();
    let (spec, weights) = spec_and_weights();
    let opts = FitOptions {
        val: Validation::Folder(data.clone()),
        strategy: Strategy::finetune(),
        ..FitOptions::new(spec, weights, &data, dir.path().join("b"))
    };
    let stop = Interrupter::new();
    stop.stop();
    let err = strategy::fit(&opts, &Silent, &stop, &device)
        .expect_err("a raised interrupter stops the run");
    assert!(err.is::<strategy::train::Interrupted>(), "{err}");
    assert!(dir.path().join("b.checkpoint").is_file());
    assert!(!opts.out.exists());
}
