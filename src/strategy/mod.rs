//! Strategies for reusing a pretrained network on new classes, and the `fit` run that
//! applies one and writes a bundle.
//!
//! - probe: features once, multinomial logistic regression ([`probe`]).
//! - freeze: the backbone frozen through a stage, the rest and a new head trained by
//!   gradient descent, optionally on augmented crops ([`freeze`], [`train`]).
//! - finetune: the head alone first, then every layer, earlier stages at lower rates.
//!
//! Gradient runs save a [`checkpoint`] after every epoch and can be resumed.

pub mod checkpoint;
pub mod freeze;
pub mod probe;
pub mod train;

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
#[derive(Debug, Clone, serde::Serialize)]
pub enum Validation {
    Folder(PathBuf),
    Split(f64),
}

/// The strategy and its own settings.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Probe {
        /// Inverse regularisation strength; chosen by cross-validation when `None`.
        c: Option<f64>,
        folds: usize,
    },
    Freeze {
        training: freeze::HeadTraining,
        augment: bool,
        /// Last frozen stage; `None` freezes the whole backbone.
        until: Option<String>,
    },
    /// Everything trainable: first `head_epochs` with the backbone frozen (the new head
    /// learns before its gradients reach pretrained layers), then `training.epochs` with
    /// every layer training at `unfrozen_lr_scale` × the learning rate.
    Finetune {
        training: freeze::HeadTraining,
        augment: bool,
        head_epochs: usize,
        unfrozen_lr_scale: f64,
    },
}

impl Strategy {
    fn name(&self) -> &'static str {
        match self {
            Strategy::Probe { .. } => "probe",
            Strategy::Freeze { .. } => "freeze",
            Strategy::Finetune { .. } => "finetune",
        }
    }
}

/// Everything a fit needs.
#[derive(Debug, Clone)]
pub struct FitRequest {
    pub spec: ModelSpec,
    pub weights: PathBuf,
    pub data: PathBuf,
    pub val: Validation,
    pub out: PathBuf,
    pub strategy: Strategy,
    pub seed: u64,
    pub batch_size: usize,
    /// Progress bars on stderr (on a terminal).
    pub progress: bool,
    /// One line per epoch on stderr.
    pub log_epochs: bool,
    /// Continue the interrupted run saved in `<out>.checkpoint`.
    pub resume: bool,
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
    pub val_accuracy: f64,
    pub hyperparameters: serde_json::Value,
    pub seconds: f64,
}

/// Top-level keys whose values differ between two JSON objects.
fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let mut all = keys(a);
    all.extend(keys(b));
    all.sort();
    all.dedup();
    all.into_iter().filter(|k| a.get(k) != b.get(k)).collect()
}

/// The bundle's PNG plots: training curves (gradient runs) and the confusion matrix.
fn plot_files(
    history: &serde_json::Value,
    classes: &[String],
    val: &metrics::Report,
) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let mut files = vec![(
        "confusion.png",
        crate::plots::confusion_matrix(classes, &val.confusion)?,
    )];
    let points: Vec<crate::plots::EpochPoint> = history
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(crate::plots::EpochPoint {
                epoch: e["epoch"].as_u64()? as usize,
                train_loss: e["train_loss"].as_f64()?,
                val_loss: e["val_loss"].as_f64()?,
                train_accuracy: e["train_accuracy"].as_f64()?,
                val_accuracy: e["val_accuracy"].as_f64()?,
            })
        })
        .collect();
    if !points.is_empty() {
        files.push(("curves.png", crate::plots::training_curves(&points)?));
    }
    Ok(files)
}

/// Loads the training and validation sets.
pub fn load_data(data: &Path, val: &Validation, seed: u64) -> Result<(Labelled, Labelled)> {
    let all = Labelled::load(data, None)?;
    all.check_trainable()?;
    match val {
        Validation::Folder(dir) => {
            let v = Labelled::load(dir, Some(&all.classes))
                .with_context(|| format!("validation data {}", dir.display()))?;
            if v.is_empty() {
                bail!("validation folder {} has no images", dir.display());
            }
            Ok((all, v))
        }
        Validation::Split(f) => all.split(*f, seed),
    }
}

/// Pooled features of every readable image of `set` and their labels (unreadable images are
/// skipped with a warning, as everywhere).
fn features(
    model: &Model,
    set: &Labelled,
    opts: &RunOptions,
    device: &Device,
) -> Result<(Vec<f32>, usize, Vec<usize>)> {
    let (out, labels) = inference::run_labelled(model, set, opts, device)?;
    Ok((out.features, out.dim, labels))
}

/// Applies the request's strategy and writes the bundle.
pub fn fit(req: &FitRequest, device: &Device) -> Result<FitSummary> {
    let started = Instant::now();
    if req.out.exists() {
        bail!(
            "{} already exists; choose another --out or remove it first",
            req.out.display()
        );
    }
    let ckpt_path = checkpoint::path_for(&req.out);
    let mut resume = match (req.resume, ckpt_path.exists()) {
        (true, _) if matches!(req.strategy, Strategy::Probe { .. }) => {
            bail!(
                "--resume applies to --strategy freeze and finetune (a probe keeps no checkpoints)"
            )
        }
        (true, false) => bail!(
            "--resume: there is no checkpoint {} to continue; run without --resume to start",
            ckpt_path.display()
        ),
        (true, true) => Some(checkpoint::Checkpoint::read(&ckpt_path)?),
        (false, true) => bail!(
            "{} holds an interrupted run: add --resume to continue it, or remove it to start again",
            ckpt_path.display()
        ),
        (false, false) => None,
    };
    let weights = Weights::load(&req.weights)
        .with_context(|| format!("cannot load {}", req.weights.display()))?;
    let pretrained = WeightsSource::of(&req.weights, &weights)?;
    let model = Model::from_spec(&req.spec, &weights, device)
        .with_context(|| format!("cannot load {}", req.weights.display()))?;
    // The bundle starts from the backbone as loaded, under the origin's names: a TFLite
    // file's folded BatchNorms are the identity BatchNorms the model trains, and the
    // classifier a transfer-learned file keeps under its own name (adopted as the head) is
    // not carried along beside the new one.
    let mut backbone = crate::zoo::layers::TensorMap::new();
    for stage in &model.network.stages {
        stage.export(&mut backbone);
    }
    let model = model.for_inference();
    let (train, val) = load_data(&req.data, &req.val, req.seed)?;
    let k = train.classes.len();
    let run = RunOptions {
        batch_size: req.batch_size,
        progress: req.progress,
        ..Default::default()
    };
    // The frozen backbone's features of the validation images never change: compute once.
    let (xv, _, yv) = features(&model, &val, &run, device)?;

    // Tensors of stages that were trained, under their origin names.
    let mut trained = crate::zoo::layers::TensorMap::new();
    let mut final_val: Option<metrics::Report> = None;
    let (head_w, head_b, train_acc, train_images, hyper, history) = match &req.strategy {
        Strategy::Probe { c, folds } => {
            let (xt, dim, yt) = features(&model, &train, &run, device)?;
            let set = probe::FeatureSet {
                x: &xt,
                dim,
                y: &yt,
                classes: k,
            };
            let (cv, c) = match c {
                Some(c) => (Vec::new(), *c),
                None => {
                    let cv =
                        probe::cross_validate(&set, probe::DEFAULT_CS, *folds, req.seed, device);
                    let best = cv[0].c;
                    (cv, best)
                }
            };
            let head = probe::fit(&set, c, device);
            let acc = head.accuracy(&set);
            let hyper = json!({
                "c": c,
                "c_chosen_by": if cv.is_empty() { "given" } else { "cross-validation" },
                "cv_folds": folds,
                "cv": cv,
                "solver": "L-BFGS (strong Wolfe), standardised features",
            });
            (head.weight, head.bias, acc, yt.len(), hyper, json!([]))
        }
        Strategy::Freeze {
            training, augment, ..
        }
        | Strategy::Finetune {
            training, augment, ..
        } => {
            let last = model.stage_names.len() - 1;
            let stage_index = |name: &str| {
                model.stage_index(name).with_context(|| {
                    format!(
                        "{} has no stage `{name}`; choose one of: {}",
                        model.name,
                        model.stage_names.join(", ")
                    )
                })
            };
            let phases: Vec<train::Phase> = match &req.strategy {
                Strategy::Freeze { until, .. } => {
                    let cut = until
                        .as_deref()
                        .map(stage_index)
                        .transpose()?
                        .unwrap_or(last);
                    vec![train::Phase {
                        frozen_through: Some(cut),
                        epochs: training.epochs,
                        lr_scale: 1.0,
                    }]
                }
                Strategy::Finetune {
                    head_epochs,
                    unfrozen_lr_scale,
                    ..
                } => vec![
                    train::Phase {
                        frozen_through: Some(last),
                        epochs: *head_epochs,
                        lr_scale: 1.0,
                    },
                    train::Phase {
                        frozen_through: None,
                        epochs: training.epochs,
                        lr_scale: *unfrozen_lr_scale,
                    },
                ],
                Strategy::Probe { .. } => unreachable!("handled above"),
            };
            let run_id = json!({
                "model": req.spec,
                "pretrained_sha256": pretrained.sha256,
                "train": train.fingerprint(),
                "val": val.fingerprint(),
                "strategy": req.strategy,
                "seed": req.seed,
                "batch_size": req.batch_size,
            });
            if let Some(c) = &resume {
                let differs = differing_keys(&c.state.run, &run_id);
                if !differs.is_empty() {
                    bail!(
                        "{} was saved by a different run ({} differ); run the command that started it with --resume, or remove it to start again",
                        ckpt_path.display(),
                        differs.join(", ")
                    );
                }
            }
            let t = train::train(
                train::Setup {
                    spec: &req.spec,
                    weights: &weights,
                    weights_path: &req.weights,
                    model: &model,
                    training,
                    augment: *augment,
                    phases: &phases,
                    train: &train,
                    val: &val,
                    val_features: (&xv, &yv),
                    run: run.clone(),
                    run_id,
                    checkpoint: ckpt_path.clone(),
                    resume: resume.take(),
                    log_epochs: req.log_epochs,
                },
                device,
            )?;
            final_val = Some(t.val);
            // `valid()` applies BatchNorm's last pending running-statistics update.
            let net = t.net.valid();
            let (w, b) = freeze::head_weights(&net.head);
            for stage in &net.stages {
                stage.export(&mut trained);
            }
            let hyper = json!({
                "training": training,
                "augment": if *augment {
                    if training.color_jitter > 0.0 { "random resized crop + horizontal flip + colour jitter" } else { "random resized crop + horizontal flip" }
                } else { "none (frozen outputs cached)" },
                "phases": phases.iter().map(|p| {
                    let trainable = p.frozen_through.map_or(last + 1, |c| last - c);
                    json!({
                        "frozen_through": p.frozen_through.map(|c| model.stage_names[c].clone()),
                        "epochs": p.epochs,
                        "lr": training.lr * p.lr_scale,
                        "stage_lr_factors": train::stage_lr_factors(trainable, training.stage_lr_ratio),
                    })
                }).collect::<Vec<_>>(),
                "stopped_early_after_epoch": t.stopped_early_after,
            });
            (
                w,
                b,
                t.train_accuracy,
                t.train_images,
                hyper,
                json!(t.history),
            )
        }
    };
    let head = probe::LinearHead {
        weight: head_w,
        bias: head_b,
        dim: xv.len() / yv.len().max(1),
        classes: k,
    };
    // A trained network's own last validation; a probe's head on the cached features.
    let val_report = final_val.unwrap_or_else(|| {
        let probs = metrics::softmax_rows(&head.logits(&xv), k);
        metrics::report(&val.classes, &probs, &yv)
    });
    let metrics = json!({
        "train_accuracy": train_acc,
        "val": val_report,
    });
    let manifest = Manifest {
        format: bundle::FORMAT,
        retrain_version: env!("CARGO_PKG_VERSION").to_owned(),
        model: req.spec.clone(),
        classes: train.classes.clone(),
        strategy: req.strategy.name().to_owned(),
        hyperparameters: hyper.clone(),
        seed: req.seed,
        pretrained,
        train: DataSummary::of(&train, &req.data.display().to_string()),
        val: Some(DataSummary::of(
            &val,
            &match &req.val {
                Validation::Folder(d) => d.display().to_string(),
                Validation::Split(f) => format!(
                    "{f} of {} (stratified, seed {})",
                    req.data.display(),
                    req.seed
                ),
            },
        )),
        metrics: metrics.clone(),
        created_unix: bundle::now_unix(),
    };
    let mut updated = Weights {
        tensors: backbone,
        ..weights.clone()
    };
    updated.tensors.extend(trained);
    let tensors = bundle::replace_classifier(&updated, &req.spec, head.weight, head.bias);
    let plots = plot_files(&history, &val.classes, &val_report)?;
    bundle::write(
        &req.out,
        &manifest,
        &tensors,
        &json!({"strategy": req.strategy.name(), "epochs": history, "final": metrics}),
        &plots,
    )?;
    // The bundle holds the result now; the checkpoint has served.
    if ckpt_path.exists() {
        std::fs::remove_file(&ckpt_path)
            .with_context(|| format!("cannot remove {}", ckpt_path.display()))?;
    }
    Ok(FitSummary {
        bundle: req.out.display().to_string(),
        strategy: req.strategy.name().to_owned(),
        classes: train.classes,
        train_images,
        val_images: yv.len(),
        train_accuracy: train_acc,
        val_accuracy: val_report.accuracy,
        hyperparameters: hyper,
        seconds: started.elapsed().as_secs_f64(),
    })
}
