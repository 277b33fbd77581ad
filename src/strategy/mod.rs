//! Strategies for reusing a pretrained network on new classes, and the `fit` run that
//! applies one and writes a bundle.
//!
//! - probe: features once, multinomial logistic regression ([`probe`]).
//! - freeze: the whole backbone frozen, a new head trained by gradient descent, optionally
//!   on augmented crops ([`freeze`]).

pub mod freeze;
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

/// The strategy and its own settings.
#[derive(Debug, Clone)]
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
    let weights = Weights::load(&req.weights)
        .with_context(|| format!("cannot load {}", req.weights.display()))?;
    let model = Model::from_spec(&req.spec, &weights, device)
        .with_context(|| format!("cannot load {}", req.weights.display()))?
        .for_inference();
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
            // Phases of (last frozen stage or None for nothing frozen, epochs, lr scale).
            let phases: Vec<(Option<usize>, usize, f64)> = match &req.strategy {
                Strategy::Freeze { until, .. } => {
                    let cut = until
                        .as_deref()
                        .map(stage_index)
                        .transpose()?
                        .unwrap_or(last);
                    vec![(Some(cut), training.epochs, 1.0)]
                }
                Strategy::Finetune {
                    head_epochs,
                    unfrozen_lr_scale,
                    ..
                } => vec![
                    (Some(last), *head_epochs, 1.0),
                    (None, training.epochs, *unfrozen_lr_scale),
                ],
                Strategy::Probe { .. } => unreachable!("handled above"),
            };
            let total_epochs: usize = phases.iter().map(|p| p.1).sum();
            let ad = device.clone().autodiff();
            let mut head = Some(freeze::new_head(
                model.config.feature_dim(),
                k,
                req.seed,
                &ad,
            ));
            let mut net: Option<freeze::Trainable> = None;
            let mut history = Vec::new();
            let (mut acc, mut n_train) = (0.0, 0);
            // Early stopping keeps the epoch with the lowest validation loss.
            let mut best: Option<(f64, usize, freeze::Trainable, metrics::Report, f64)> = None;
            let mut stopped_at = None;
            let mut epoch = 0;
            'phases: for &(cut, epochs, lr_scale) in &phases {
                if epochs == 0 {
                    continue;
                }
                // What the trainable part is fed: pooled features (all frozen), the feature
                // map at the cut, or the preprocessed pixels (nothing frozen).
                let (maps, pixels) = (cut.is_some_and(|c| c < last), cut.is_none());
                let at_cut = RunOptions {
                    stage: cut,
                    keep_maps: maps,
                    pixels_only: pixels,
                    ..run.clone()
                };
                let frozen_output = |opts: &RunOptions,
                                     set: &Labelled|
                 -> Result<(Vec<f32>, [usize; 3], Vec<usize>)> {
                    let (out, labels) = inference::run_labelled(&model, set, opts, device)?;
                    let shape = if maps || pixels {
                        out.map_shape
                    } else {
                        [out.dim, 1, 1]
                    };
                    Ok((out.features, shape, labels))
                };
                let skip = cut.map_or(0, |c| c + 1);
                let stages = if skip <= last {
                    let trainable = Model::from_spec(&req.spec, &weights, &ad)
                        .with_context(|| format!("cannot load {}", req.weights.display()))?;
                    trainable.network.stages.into_iter().skip(skip).collect()
                } else {
                    Vec::new()
                };
                let mut current = freeze::Trainable {
                    stages,
                    head: match net.take() {
                        Some(n) => n.head,
                        None => head.take().expect("a head to start from"),
                    },
                };
                let (xv_cut, shape_v) = if maps || pixels {
                    let (x, s, _) = frozen_output(&at_cut, &val)?;
                    (x, s)
                } else {
                    (xv.clone(), [xv.len() / yv.len().max(1), 1, 1])
                };
                // Without augmentation the training inputs are fixed too.
                let fixed = if *augment {
                    None
                } else {
                    Some(frozen_output(&at_cut, &train)?)
                };
                let phase_cfg = freeze::HeadTraining {
                    epochs,
                    lr: training.lr * lr_scale,
                    ..training.clone()
                };
                let mut trainer = None;
                for _ in 0..epochs {
                    let t0 = Instant::now();
                    let (xt, shape, yt) = match &fixed {
                        Some(f) => f.clone(),
                        None => {
                            let aug = RunOptions {
                                augment: Some(
                                    req.seed
                                        ^ (epoch as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
                                ),
                                ..at_cut.clone()
                            };
                            frozen_output(&aug, &train)?
                        }
                    };
                    let tr = trainer
                        .get_or_insert_with(|| freeze::EpochTrainer::new(&phase_cfg, yt.len()));
                    let (next, loss, a) = tr.epoch(current, &xt, shape, &yt, k, epoch, &ad);
                    current = next;
                    acc = a;
                    n_train = yt.len();
                    let probs = metrics::softmax_rows(&current.predict(&xv_cut, shape_v, &ad), k);
                    let r = metrics::report(&val.classes, &probs, &yv);
                    final_val = Some(r.clone());
                    if req.log_epochs {
                        eprintln!(
                            "epoch {}/{total_epochs}{}: train loss {loss:.4} acc {:.1}%, val loss {:.4} acc {:.1}% ({:.1}s)",
                            epoch + 1,
                            if cut == Some(last) && phases.len() > 1 {
                                " (head only)"
                            } else {
                                ""
                            },
                            a * 100.0,
                            r.loss,
                            r.accuracy * 100.0,
                            t0.elapsed().as_secs_f64()
                        );
                    }
                    history.push(json!({
                        "epoch": epoch + 1, "train_loss": loss, "train_accuracy": a,
                        "val_loss": r.loss, "val_accuracy": r.accuracy,
                        "frozen_through": cut.map(|c| model.stage_names[c].clone()),
                        "lr_end": tr.current_lr(),
                        "seconds": t0.elapsed().as_secs_f64(),
                    }));
                    let since_best = best.as_ref().map_or(0, |b| epoch - b.1);
                    epoch += 1;
                    if training.patience > 0 {
                        if best.as_ref().is_none_or(|b| r.loss < b.0) {
                            best = Some((r.loss, epoch - 1, current.clone(), r, a));
                        } else if since_best >= training.patience {
                            stopped_at = Some(epoch);
                            if req.log_epochs {
                                eprintln!(
                                    "stopping: no lower validation loss for {} epochs",
                                    training.patience
                                );
                            }
                            net = Some(current);
                            break 'phases;
                        }
                    }
                }
                net = Some(current);
            }
            let mut net = net.expect("at least one epoch ran");
            if let Some((_, e, kept, report, train_acc)) = best {
                net = kept;
                final_val = Some(report);
                acc = train_acc;
                if req.log_epochs {
                    eprintln!("keeping epoch {} (lowest validation loss)", e + 1);
                }
            }
            let (w, b) = freeze::head_weights(&net.head);
            for stage in &net.stages {
                stage.export(&mut trained);
            }
            let hyper = json!({
                "training": training,
                "augment": if *augment { "random resized crop + horizontal flip" } else { "none (frozen outputs cached)" },
                "phases": phases.iter().map(|&(cut, epochs, lr_scale)| json!({
                    "frozen_through": cut.map(|c| model.stage_names[c].clone()),
                    "epochs": epochs,
                    "lr": training.lr * lr_scale,
                })).collect::<Vec<_>>(),
                "stopped_early_after_epoch": stopped_at,
            });
            (w, b, acc, n_train, hyper, json!(history))
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
        pretrained: WeightsSource::of(&req.weights, &weights)?,
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
    let mut updated = weights.clone();
    updated.tensors.extend(trained);
    let tensors = bundle::replace_classifier(&updated, &req.spec, head.weight, head.bias);
    bundle::write(
        &req.out,
        &manifest,
        &tensors,
        &json!({"strategy": req.strategy.name(), "epochs": history, "final": metrics}),
    )?;
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
