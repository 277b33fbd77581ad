//! Strategies for reusing a pretrained network on new classes, and the `fit` run that
//! applies one and writes a bundle.

pub mod probe;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde_json::json;

use crate::bundle::{self, Manifest, WeightsSource};
use crate::dataset::{DataSummary, Labelled};
use crate::inference::{self, RunOptions};
use crate::metrics;
use crate::weights::Weights;
use crate::zoo::{Model, ModelSpec};

/// Where the validation images come from.
#[derive(Debug, Clone)]
pub enum Validation {
    Folder(PathBuf),
    Split(f64),
}

/// Options of a probe fit.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Inverse regularisation strength; chosen by cross-validation when `None`.
    pub c: Option<f64>,
    pub folds: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub progress: bool,
}

/// What a fit reports back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FitSummary {
    pub bundle: String,
    pub strategy: String,
    pub classes: Vec<String>,
    pub train_images: usize,
    pub val_images: usize,
    pub train_accuracy: f64,
    pub val_accuracy: Option<f64>,
    pub hyperparameters: serde_json::Value,
    pub seconds: f64,
}

/// Loads the training and validation sets.
pub fn load_data(
    data: &Path,
    val: Option<&Validation>,
    seed: u64,
) -> Result<(Labelled, Option<Labelled>)> {
    let all = Labelled::load(data, None)?;
    all.check_trainable()?;
    match val {
        None => Ok((all, None)),
        Some(Validation::Folder(dir)) => {
            let v = Labelled::load(dir, Some(&all.classes))
                .with_context(|| format!("validation data {}", dir.display()))?;
            if v.is_empty() {
                bail!("validation folder {} has no images", dir.display());
            }
            Ok((all, Some(v)))
        }
        Some(Validation::Split(f)) => {
            let (tr, va) = all.split(*f, seed)?;
            Ok((tr, Some(va)))
        }
    }
}

/// Pooled features of every readable image of `set`, and their labels (unreadable images
/// are skipped with a warning, as everywhere).
fn features(
    model: &Model,
    set: &Labelled,
    opts: &RunOptions,
    device: &Device,
) -> Result<(Vec<f32>, usize, Vec<usize>)> {
    let out = inference::run(model, &set.paths, opts, device)?;
    let label_of: std::collections::HashMap<&PathBuf, usize> =
        set.paths.iter().zip(set.labels.iter().copied()).collect();
    let labels = out.paths.iter().map(|p| label_of[p]).collect();
    Ok((out.features, out.dim, labels))
}

/// Fits a linear probe and writes the bundle to `out`.
#[allow(clippy::too_many_arguments)]
pub fn fit_probe(
    spec: &ModelSpec,
    weights_path: &Path,
    data: &Path,
    val: Option<&Validation>,
    out: &Path,
    opts: &ProbeOptions,
    device: &Device,
) -> Result<FitSummary> {
    let started = Instant::now();
    if out.exists() {
        bail!(
            "{} already exists; choose another --out or remove it first",
            out.display()
        );
    }
    let weights = Weights::load(weights_path)
        .with_context(|| format!("cannot load {}", weights_path.display()))?;
    let model = Model::from_spec(spec, &weights, device)
        .with_context(|| format!("cannot load {}", weights_path.display()))?
        .for_inference();
    let (train, val_set) = load_data(data, val, opts.seed)?;
    let run = RunOptions {
        batch_size: opts.batch_size,
        progress: opts.progress,
        ..Default::default()
    };
    let (xt, dim, yt) = features(&model, &train, &run, device)?;
    let train_feats = probe::FeatureSet {
        x: &xt,
        dim,
        y: &yt,
        classes: train.classes.len(),
    };
    let (cv, c) = match opts.c {
        Some(c) => (Vec::new(), c),
        None => {
            let cv = probe::cross_validate(
                &train_feats,
                probe::DEFAULT_CS,
                opts.folds,
                opts.seed,
                device,
            );
            let best = cv[0].c;
            (cv, best)
        }
    };
    let head = probe::fit(&train_feats, c, device);
    let train_acc = head.accuracy(&train_feats);
    let (val_report, val_images) = match &val_set {
        Some(v) => {
            let (xv, _, yv) = features(&model, v, &run, device)?;
            let probs = metrics::softmax_rows(&head.logits(&xv), head.classes);
            (Some(metrics::report(&v.classes, &probs, &yv)), yv.len())
        }
        None => (None, 0),
    };
    let hyper = json!({
        "c": c,
        "c_chosen_by": if opts.c.is_some() { "given" } else { "cross-validation" },
        "cv_folds": opts.folds,
        "cv": cv,
        "solver": "L-BFGS (strong Wolfe), standardised features",
    });
    let metrics = json!({
        "train_accuracy": train_acc,
        "val": val_report,
    });
    let manifest = Manifest {
        format: bundle::FORMAT,
        retrain_version: env!("CARGO_PKG_VERSION").to_owned(),
        model: spec.clone(),
        classes: train.classes.clone(),
        strategy: "probe".to_owned(),
        hyperparameters: hyper.clone(),
        seed: opts.seed,
        pretrained: WeightsSource::of(weights_path, &weights)?,
        train: DataSummary::of(&train, &data.display().to_string()),
        val: val_set.as_ref().map(|v| {
            let source = match val {
                Some(Validation::Folder(d)) => d.display().to_string(),
                Some(Validation::Split(f)) => {
                    format!("{f} of {} (stratified, seed {})", data.display(), opts.seed)
                }
                None => String::new(),
            };
            DataSummary::of(v, &source)
        }),
        metrics: metrics.clone(),
        created_unix: bundle::now_unix(),
    };
    let tensors =
        bundle::replace_classifier(&weights, spec, head.weight.clone(), head.bias.clone());
    bundle::write(out, &manifest, &tensors, &json!({"probe": metrics}))?;
    Ok(FitSummary {
        bundle: out.display().to_string(),
        strategy: "probe".into(),
        classes: train.classes,
        train_images: yt.len(),
        val_images,
        train_accuracy: train_acc,
        val_accuracy: val_report.map(|r| r.accuracy),
        hyperparameters: hyper,
        seconds: started.elapsed().as_secs_f64(),
    })
}
