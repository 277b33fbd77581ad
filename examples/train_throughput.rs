//! Training-step throughput on synthetic 224×224 input, as the peer's bench_throughput.py
//! measures it (no decoding, no augmentation), for one architecture:
//!
//! - `train_b16`: full fine-tune step, batch 16: every stage in training mode (BatchNorm on
//!   batch statistics), forward, cross-entropy, backward, SGD momentum step.
//! - `freeze_b16`: step of a frozen backbone, batch 16: the backbone in inference form (BN
//!   folded, no autodiff) gives pooled features, the new head trains on them.
//! - `infer_b32`: model-only inference, batch 32: the inference form to pooled features.
//!
//! `cargo run --release --example train_throughput -- <arch> <weights> [iters] [warmup] [only]`
//! prints one JSON line with the median images/s of `iters` timed steps after `warmup`;
//! `only` (`train`, `freeze` or `infer`) runs that figure alone (for profiling one of them).
//! `<arch>` `-` runs the file as its own graph (an .onnx, .tflite or Keras model).

use std::time::Instant;

use burn::prelude::*;
use retrain::inference::Features;
use retrain::observe::Interrupter;
use retrain::strategy::Training;
use retrain::strategy::gradient::{self, EpochTrainer, Trainable};

/// The median step time; infinite for a figure that did not run, so its rate reads 0.
fn median_or_zero(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::INFINITY)
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        eprintln!("usage: train_throughput <arch> <weights> [iters] [warmup]");
        std::process::exit(2);
    }
    retrain::tune_allocator();
    let device = retrain::default_device();
    let ad = device.clone().autodiff();
    let w = retrain::weights::Weights::load(std::path::Path::new(&a[2])).unwrap();
    let spec = if a[1] == "-" {
        retrain::zoo::spec_for(None, &w, &device).unwrap()
    } else {
        retrain::zoo::resolve(&a[1]).unwrap()
    };
    let iters: usize = a.get(3).map_or(5, |s| s.parse().unwrap());
    let warmup: usize = a.get(4).map_or(1, |s| s.parse().unwrap());
    let only = a.get(5).map(String::as_str);
    let runs = |what: &str| only.is_none_or(|o| o == what);
    let (batch, classes, s) = (16usize, 2usize, spec.preprocess.crop);
    let per = 3 * s * s;
    let x: Vec<f32> = (0..batch * per)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let y: Vec<usize> = (0..batch).map(|i| i % classes).collect();
    let cfg = Training {
        epochs: 1,
        lr: 1e-3,
        batch_size: batch,
        ..Training::default()
    };
    let never = Interrupter::new();
    let pixels = Features {
        values: x.clone(),
        shape: [3, s, s],
        labels: y.clone(),
        classes,
    };
    let dim = spec.config.feature_dim();

    // Full fine-tune: every stage and the head train; one epoch over 16 samples = one step.
    let net = retrain::zoo::Model::from_spec(&spec, &w, &ad)
        .unwrap()
        .network;
    let mut model = Trainable {
        stages: net.stages,
        head: gradient::new_head(dim, classes, 0, &ad),
    };
    let mut trainer = EpochTrainer::new(&cfg, batch);
    let mut times = Vec::new();
    for i in 0..if runs("train") { warmup + iters } else { 0 } {
        let t = Instant::now();
        let (m, _) = trainer.epoch(model, &pixels, i, None, &never, &ad).unwrap();
        model = m;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let train = batch as f64 / median_or_zero(times);
    drop(model);

    // Frozen backbone: inference-form forward to pooled features, then a head step.
    let frozen = retrain::zoo::Model::from_spec(&spec, &w, &device)
        .unwrap()
        .for_inference();
    let mut head = Trainable {
        stages: Vec::new(),
        head: gradient::new_head(dim, classes, 0, &ad),
    };
    let mut trainer = EpochTrainer::new(&cfg, batch);
    let mut times = Vec::new();
    for i in 0..if runs("freeze") {
        warmup + iters.max(3)
    } else {
        0
    } {
        let t = Instant::now();
        let xt = Tensor::<4>::from_data(TensorData::new(x.clone(), [batch, 3, s, s]), &device);
        let f: Vec<f32> = frozen
            .network
            .penultimate(xt)
            .unwrap()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let pooled = Features {
            values: f,
            shape: [dim, 1, 1],
            labels: y.clone(),
            classes,
        };
        let (h, _) = trainer.epoch(head, &pooled, i, None, &never, &ad).unwrap();
        head = h;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let freeze = batch as f64 / median_or_zero(times);

    // Model-only inference: batch 32 to pooled features.
    let big: Vec<f32> = x.iter().cycle().take(2 * x.len()).copied().collect();
    let mut times = Vec::new();
    for i in 0..if runs("infer") {
        warmup + iters.max(3)
    } else {
        0
    } {
        let t = Instant::now();
        let xt =
            Tensor::<4>::from_data(TensorData::new(big.clone(), [2 * batch, 3, s, s]), &device);
        let f = frozen.network.penultimate(xt).unwrap().into_data();
        std::hint::black_box(f);
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let infer = (2 * batch) as f64 / median_or_zero(times);
    println!(
        "{}",
        serde_json::json!({"arch": spec.name, "train_b16": train, "freeze_b16": freeze, "infer_b32": infer, "iters": iters, "warmup": warmup, "device": format!("{device:?}")})
    );
}
