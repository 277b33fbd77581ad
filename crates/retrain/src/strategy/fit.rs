//! A fit: load the pretrained model and the data, apply the strategy, and turn the result
//! into a trained model (and a bundle).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use super::checkpoint::{self, Checkpoint};
use super::gradient;
use super::options::{FitOptions, Strategy, Validation};
use super::probe;
use super::records::{
    ChosenBy, FitMetrics, FitSummary, Hyperparameters, MetricsFile, PhaseRecord, RunIdentity,
};
use super::schedule::stage_lr_factors;
use super::train::{self, Phase};
use crate::bundle::{self, Manifest, WeightsSource};
use crate::dataset::{DataSummary, Labelled};
use crate::inference::{self, Features, RunOptions};
use crate::metrics;
use crate::observe::{Interrupter, Observer};
use crate::weights::{WeightTensor, Weights};
use crate::zoo::Model;
use crate::zoo::layers::TensorMap;

/// A fitted model: everything a bundle holds, in memory.
pub struct Fitted {
    pub manifest: Manifest,
    /// The pretrained tensors under the origin's names, trained stages updated, the
    /// classifier replaced by the new head.
    pub tensors: BTreeMap<String, WeightTensor>,
    pub metrics: MetricsFile,
    pub summary: FitSummary,
}

impl Fitted {
    /// The trained network with its new classifier, built as a bundle's would be.
    pub fn model(&self, device: &Device) -> Result<Model> {
        let weights = Weights {
            tensors: self.tensors.clone(),
            ..Weights::empty()
        };
        Ok(Model::from_spec(&self.manifest.model, &weights, device)?)
    }

    /// Writes the bundle folder `dir` (which must not exist; see [`bundle::write`]).
    pub fn write_bundle(&self, dir: &Path) -> Result<()> {
        let points: Vec<crate::plots::EpochPoint> = self
            .metrics
            .epochs
            .iter()
            .map(|e| crate::plots::EpochPoint {
                epoch: e.epoch,
                train_loss: e.train_loss,
                val_loss: e.val_loss,
                train_accuracy: e.train_accuracy,
                val_accuracy: e.val_accuracy,
            })
            .collect();
        let val = &self.metrics.final_metrics.val;
        let mut plots = vec![(
            "confusion.png",
            crate::plots::confusion_matrix(&self.manifest.classes, &val.confusion)?,
        )];
        if !points.is_empty() {
            plots.push(("curves.png", crate::plots::training_curves(&points)?));
        }
        bundle::write(
            dir,
            &self.manifest,
            &self.tensors,
            &serde_json::to_value(&self.metrics)?,
            &plots,
        )
    }
}

/// Applies the options' strategy and writes the bundle `opts.out`; gradient runs keep a
/// checkpoint in `<out>.checkpoint` until the bundle is written.
pub fn fit(
    opts: &FitOptions,
    observer: &dyn Observer,
    interrupter: &Interrupter,
    device: &Device,
) -> Result<FitSummary> {
    fit_loaded(opts, None, observer, interrupter, device)
}

/// [`fit`] with the pretrained file already read (`Weights::load(&opts.weights)`, as a
/// caller that needed it to choose the spec did): a large file is read once.
pub fn fit_with_weights(
    opts: &FitOptions,
    weights: &Weights,
    observer: &dyn Observer,
    interrupter: &Interrupter,
    device: &Device,
) -> Result<FitSummary> {
    fit_loaded(opts, Some(weights), observer, interrupter, device)
}

fn fit_loaded(
    opts: &FitOptions,
    weights: Option<&Weights>,
    observer: &dyn Observer,
    interrupter: &Interrupter,
    device: &Device,
) -> Result<FitSummary> {
    let fitted = train(opts, weights, observer, interrupter, device)?;
    fitted.write_bundle(&opts.out)?;
    // The bundle holds the result now; the checkpoint has served.
    let ckpt = checkpoint::path_for(&opts.out);
    if ckpt.exists() {
        std::fs::remove_file(&ckpt).with_context(|| format!("cannot remove {}", ckpt.display()))?;
    }
    Ok(fitted.summary)
}

/// Applies the options' strategy and returns the fitted model without writing a bundle
/// (gradient runs still checkpoint to `<out>.checkpoint`, and `out` must not exist).
pub fn train_model(
    opts: &FitOptions,
    observer: &dyn Observer,
    interrupter: &Interrupter,
    device: &Device,
) -> Result<Fitted> {
    train(opts, None, observer, interrupter, device)
}

/// [`train_model`] with the pretrained file already read (see [`fit_with_weights`]).
pub fn train_model_with_weights(
    opts: &FitOptions,
    weights: &Weights,
    observer: &dyn Observer,
    interrupter: &Interrupter,
    device: &Device,
) -> Result<Fitted> {
    train(opts, Some(weights), observer, interrupter, device)
}

fn train(
    opts: &FitOptions,
    preloaded: Option<&Weights>,
    observer: &dyn Observer,
    interrupter: &Interrupter,
    device: &Device,
) -> Result<Fitted> {
    let started = Instant::now();
    opts.validate()?;
    if opts.out.exists() {
        bail!(
            "{} already exists; choose another --out or remove it first",
            opts.out.display()
        );
    }
    let resume = resumed_checkpoint(opts)?;
    let loaded;
    let weights = match preloaded {
        Some(w) => w,
        None => {
            loaded = Weights::load(&opts.weights)
                .with_context(|| format!("cannot load {}", opts.weights.display()))?;
            &loaded
        }
    };
    let pretrained = WeightsSource::of(&opts.weights, weights);
    let model = Model::from_spec(&opts.spec, weights, device)
        .with_context(|| format!("cannot load {}", opts.weights.display()))?;
    // A Keras Application is built as the graph its config makes with the file's shapes,
    // a timm ViT at the size its position embedding was resampled to: the bundle and the
    // checkpoints record the model as built, which needs no file to rebuild.
    let materialised;
    let opts = if model.config != opts.spec.config {
        materialised = FitOptions {
            spec: crate::zoo::ModelSpec {
                config: model.config.clone(),
                ..opts.spec.clone()
            },
            ..opts.clone()
        };
        &materialised
    } else {
        opts
    };
    // The bundle starts from the backbone as loaded, under the origin's names: a TFLite
    // file's folded BatchNorms are the identity BatchNorms the model trains, and the
    // classifier a transfer-learned file keeps under its own name (adopted as the head) is
    // not carried along beside the new one.
    let mut backbone = TensorMap::new();
    for stage in &model.network.stages {
        stage.export(&mut backbone);
    }
    let model = model.for_inference();
    let (train, val) = load_data(&opts.data, &opts.val, opts.seed, observer)?;
    let ctx = FitContext {
        opts,
        weights,
        pretrained: &pretrained,
        model: &model,
        train: &train,
        val: &val,
        observer,
        interrupter,
        device,
    };
    let run = RunOptions {
        batch_size: opts.batch_size,
        limits: opts.limits,
        ..Default::default()
    };
    // The frozen backbone's features of the validation images never change: compute once.
    let val_features = ctx.features(&val, &run)?;
    let result = match &opts.strategy {
        Strategy::Probe { c, folds } => ctx.probe(*c, *folds, &run, &val_features)?,
        _ => ctx.gradient(resume, &run, &val_features)?,
    };
    let StrategyResult {
        head,
        trained,
        record,
    } = result;
    let mut tensors = backbone;
    tensors.extend(trained);
    let weights_out = Weights {
        tensors,
        ..weights.clone()
    };
    let tensors = bundle::replace_classifier(&weights_out, &opts.spec, head.weight, head.bias);
    let summary = ctx.summary(&record, val_features.labels.len(), started);
    Ok(ctx.fitted(pretrained.clone(), tensors, record, summary))
}

/// The checkpoint to continue, or none; refuses to overwrite an interrupted run's.
fn resumed_checkpoint(opts: &FitOptions) -> Result<Option<Checkpoint>> {
    let path = checkpoint::path_for(&opts.out);
    match (opts.resume, path.exists()) {
        (true, _) if matches!(opts.strategy, Strategy::Probe { .. }) => {
            bail!(
                "--resume applies to --strategy freeze and finetune (a probe keeps no checkpoints)"
            )
        }
        (true, false) => bail!(
            "--resume: there is no checkpoint {} to continue; run without --resume to start",
            path.display()
        ),
        (true, true) => Ok(Some(Checkpoint::read(&path)?)),
        (false, true) => bail!(
            "{} holds an interrupted run: add --resume to continue it, or remove it to start again",
            path.display()
        ),
        (false, false) => Ok(None),
    }
}

/// Loads the training and validation sets, telling `observer` what was left out of the
/// folders.
pub fn load_data(
    data: &Path,
    val: &Validation,
    seed: u64,
    observer: &dyn Observer,
) -> Result<(Labelled, Labelled)> {
    let report = |notes: Vec<(PathBuf, String)>| {
        for (path, why) in &notes {
            observer.event(crate::observe::Event::FolderSkipped { path, why });
        }
    };
    let (all, notes) = Labelled::scan(data, None)?;
    report(notes);
    all.check_trainable()?;
    match val {
        Validation::Folder(dir) => {
            let (v, notes) = Labelled::scan(dir, Some(&all.classes))
                .with_context(|| format!("validation data {}", dir.display()))?;
            report(notes);
            if v.is_empty() {
                bail!("validation folder {} has no images", dir.display());
            }
            Ok((all, v))
        }
        Validation::Split(f) => all.split(*f, seed),
    }
}

/// What a fit works with once the model and the data are loaded.
struct FitContext<'a> {
    opts: &'a FitOptions,
    weights: &'a Weights,
    pretrained: &'a WeightsSource,
    model: &'a Model,
    train: &'a Labelled,
    val: &'a Labelled,
    observer: &'a dyn Observer,
    interrupter: &'a Interrupter,
    device: &'a Device,
}

/// What a strategy produced.
struct StrategyResult {
    head: probe::LinearHead,
    /// Tensors of the stages that were trained, under their origin names.
    trained: TensorMap,
    record: Record,
}

/// What a strategy's run records.
struct Record {
    metrics: FitMetrics,
    hyper: Hyperparameters,
    history: Vec<super::EpochRecord>,
    /// Training images that could be read (and trained on).
    train_images: usize,
}

impl FitContext<'_> {
    /// Pooled features of every readable image of `set` (unreadable ones are skipped with
    /// a warning, as everywhere).
    fn features(&self, set: &Labelled, run: &RunOptions) -> Result<Features> {
        inference::features(self.model, set, run, self.observer, self.device)
    }

    fn probe(
        &self,
        c: Option<f64>,
        folds: usize,
        run: &RunOptions,
        val: &Features,
    ) -> Result<StrategyResult> {
        let xt = self.features(self.train, run)?;
        let set = probe::FeatureSet {
            x: &xt.values,
            dim: xt.shape[0],
            y: &xt.labels,
            classes: xt.classes,
        };
        let (cv, c) = match c {
            Some(c) => (Vec::new(), c),
            None => {
                let cv = probe::cross_validate(
                    &set,
                    probe::DEFAULT_CS,
                    folds,
                    self.opts.seed,
                    self.device,
                );
                let best = cv[0].c;
                (cv, best)
            }
        };
        let head = probe::fit(&set, c, self.device);
        let train_accuracy = head.accuracy(&set);
        let probs = metrics::softmax_rows(&head.logits(&val.values), val.classes);
        let hyper = Hyperparameters::Probe {
            c,
            c_chosen_by: if cv.is_empty() {
                ChosenBy::Given
            } else {
                ChosenBy::CrossValidation
            },
            cv_folds: folds,
            cv,
            solver: "L-BFGS (strong Wolfe), standardised features".to_owned(),
        };
        Ok(StrategyResult {
            head,
            trained: TensorMap::new(),
            record: Record {
                metrics: FitMetrics {
                    train_accuracy,
                    val: metrics::report(&self.val.classes, &probs, &val.labels),
                },
                hyper,
                history: Vec::new(),
                train_images: xt.labels.len(),
            },
        })
    }

    /// A stage's index by name, or an error listing the stages.
    fn stage_index(&self, name: &str) -> Result<usize> {
        self.model.stage_index(name).with_context(|| {
            format!(
                "{} has no stage `{name}`; choose one of: {}",
                self.model.name,
                self.model.stage_names.join(", ")
            )
        })
    }

    /// The phases of a freeze (one, cut at the named stage) or a finetune (head only, then
    /// everything).
    fn phases(&self) -> Result<Vec<Phase>> {
        let last = self.model.stage_names.len() - 1;
        Ok(match &self.opts.strategy {
            Strategy::Freeze {
                until, training, ..
            } => {
                let cut = until.as_deref().map(|u| self.stage_index(u)).transpose()?;
                vec![Phase {
                    frozen_through: Some(cut.unwrap_or(last)),
                    epochs: training.epochs,
                    lr_scale: 1.0,
                    start_size: None,
                }]
            }
            Strategy::Finetune {
                training,
                head_epochs,
                unfrozen_lr_scale,
                start_size,
                augment,
            } => vec![
                Phase {
                    frozen_through: Some(last),
                    epochs: *head_epochs,
                    lr_scale: 1.0,
                    start_size: None,
                },
                Phase {
                    frozen_through: None,
                    epochs: training.epochs,
                    lr_scale: *unfrozen_lr_scale,
                    // Resizing draws smaller random crops; without augmentation the
                    // inputs are computed once, at the model's size.
                    start_size: start_size.filter(|_| *augment),
                },
            ],
            Strategy::Probe { .. } => Vec::new(),
        })
    }

    fn run_identity(&self) -> RunIdentity {
        RunIdentity {
            model: self.opts.spec.clone(),
            pretrained_sha256: self.pretrained.sha256.clone(),
            train: self.train.fingerprint(),
            val: self.val.fingerprint(),
            strategy: self.opts.strategy.clone(),
            seed: self.opts.seed,
            batch_size: self.opts.batch_size,
        }
    }

    fn gradient(
        &self,
        resume: Option<Checkpoint>,
        run: &RunOptions,
        val: &Features,
    ) -> Result<StrategyResult> {
        let (training, augment) = match &self.opts.strategy {
            Strategy::Freeze {
                training, augment, ..
            }
            | Strategy::Finetune {
                training, augment, ..
            } => (training, *augment),
            Strategy::Probe { .. } => unreachable!("a probe has no gradient phases"),
        };
        let phases = self.phases()?;
        let run_id = self.run_identity();
        let ckpt = checkpoint::path_for(&self.opts.out);
        if let Some(c) = &resume {
            let differs = c.state.run.differences(&run_id);
            if !differs.is_empty() {
                bail!(
                    "{} was saved by a different run ({} differ); run the command that started it with --resume, or remove it to start again",
                    ckpt.display(),
                    differs.join(", ")
                );
            }
        }
        let t = train::train(
            train::Setup {
                spec: &self.opts.spec,
                weights: self.weights,
                weights_path: &self.opts.weights,
                model: self.model,
                training,
                augment,
                phases: &phases,
                train: self.train,
                val: self.val,
                val_features: val,
                run: run.clone(),
                run_id,
                checkpoint: ckpt,
                resume,
                observer: self.observer,
                interrupter: self.interrupter,
            },
            self.device,
        )?;
        // `valid()` applies BatchNorm's last pending running-statistics update.
        let net = t.net.valid();
        let (weight, bias) = gradient::head_weights(&net.head);
        let mut trained = TensorMap::new();
        for stage in &net.stages {
            stage.export(&mut trained);
        }
        let head = probe::LinearHead {
            weight,
            bias,
            dim: val.shape[0],
            classes: val.classes,
        };
        let hyper = Hyperparameters::Gradient {
            training: training.clone(),
            augment: augmentation_words(augment, training.color_jitter).to_owned(),
            phases: self.phase_records(&phases, training),
            stopped_early_after_epoch: t.stopped_early_after,
        };
        Ok(StrategyResult {
            head,
            trained,
            record: Record {
                metrics: FitMetrics {
                    train_accuracy: t.train_accuracy,
                    val: t.val,
                },
                hyper,
                history: t.history,
                train_images: t.train_images,
            },
        })
    }

    fn phase_records(&self, phases: &[Phase], training: &super::Training) -> Vec<PhaseRecord> {
        let last = self.model.stage_names.len() - 1;
        phases
            .iter()
            .map(|p| {
                let trainable = p.frozen_through.map_or(last + 1, |c| last - c);
                PhaseRecord {
                    frozen_through: p.frozen_through.map(|c| self.model.stage_names[c].clone()),
                    epochs: p.epochs,
                    lr: training.lr * p.lr_scale,
                    stage_lr_factors: stage_lr_factors(trainable, training.stage_lr_ratio),
                    start_size: p.start_size,
                }
            })
            .collect()
    }

    fn summary(&self, record: &Record, val_images: usize, started: Instant) -> FitSummary {
        FitSummary {
            bundle: self.opts.out.display().to_string(),
            strategy: self.opts.strategy.kind(),
            classes: self.train.classes.clone(),
            train_images: record.train_images,
            val_images,
            train_accuracy: record.metrics.train_accuracy,
            val_accuracy: record.metrics.val.accuracy,
            hyperparameters: record.hyper.clone(),
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// The manifest and metrics of the finished fit.
    fn fitted(
        &self,
        pretrained: WeightsSource,
        tensors: BTreeMap<String, WeightTensor>,
        record: Record,
        summary: FitSummary,
    ) -> Fitted {
        let opts = self.opts;
        let val_source = match &opts.val {
            Validation::Folder(d) => d.display().to_string(),
            Validation::Split(f) => format!(
                "{f} of {} (stratified, seed {})",
                opts.data.display(),
                opts.seed
            ),
        };
        let kind = opts.strategy.kind();
        let manifest = Manifest {
            format: bundle::FORMAT,
            retrain_version: env!("CARGO_PKG_VERSION").to_owned(),
            model: opts.spec.clone(),
            classes: self.train.classes.clone(),
            strategy: kind,
            hyperparameters: record.hyper,
            seed: opts.seed,
            pretrained,
            train: DataSummary::of(self.train, &opts.data.display().to_string()),
            val: Some(DataSummary::of(self.val, &val_source)),
            metrics: record.metrics.clone(),
            created_unix: bundle::now_unix(),
        };
        Fitted {
            manifest,
            tensors,
            metrics: MetricsFile {
                strategy: kind,
                epochs: record.history,
                final_metrics: record.metrics,
            },
            summary,
        }
    }
}

/// The augmentation of a gradient run, in words, for the manifest.
fn augmentation_words(augment: bool, color_jitter: f64) -> &'static str {
    match (augment, color_jitter > 0.0) {
        (false, _) => "none (frozen outputs cached)",
        (true, true) => "random resized crop + horizontal flip + colour jitter",
        (true, false) => "random resized crop + horizontal flip",
    }
}
