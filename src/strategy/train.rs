//! Gradient training for freeze and finetune: phases of epochs, each with the backbone
//! frozen through some stage (or not at all); validation after every epoch, early stopping,
//! a checkpoint after every epoch and on Ctrl-C, and resumption from one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::ParamGroup;
use burn::nn::Linear;
use burn::prelude::*;
use serde_json::json;

use super::checkpoint::{self, Checkpoint, EpochScore, State};
use super::freeze::{self, EpochEnd, EpochTrainer, HeadTraining, Trainable};
use crate::dataset::Labelled;
use crate::inference::{self, RunOptions};
use crate::metrics::{self, Report};
use crate::weights::Weights;
use crate::zoo::{Model, ModelSpec};

/// Raised by Ctrl-C: the run stops between two batches and saves a checkpoint.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// Epochs with the backbone frozen through stage `frozen_through` (`None`: nothing frozen),
/// at `lr_scale` × the learning rate.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub frozen_through: Option<usize>,
    pub epochs: usize,
    pub lr_scale: f64,
}

/// What a gradient fit works on.
pub struct Setup<'a> {
    pub spec: &'a ModelSpec,
    pub weights: &'a Weights,
    pub weights_path: &'a std::path::Path,
    /// The pretrained model in inference form: it computes the frozen part.
    pub model: &'a Model,
    pub training: &'a HeadTraining,
    pub augment: bool,
    pub phases: &'a [Phase],
    pub train: &'a Labelled,
    pub val: &'a Labelled,
    /// Pooled features of the validation images and their labels (whole backbone frozen).
    pub val_features: (&'a [f32], &'a [usize]),
    pub run: RunOptions,
    /// Identity of the run, stored in checkpoints; a resumed run must have the same.
    pub run_id: serde_json::Value,
    pub checkpoint: PathBuf,
    pub resume: Option<Checkpoint>,
    pub log_epochs: bool,
}

/// The outcome: the trained part and how it scored.
pub struct Trained {
    pub net: Trainable,
    pub train_accuracy: f64,
    pub train_images: usize,
    pub val: Report,
    pub history: Vec<serde_json::Value>,
    pub stopped_early_after: Option<usize>,
}

/// Ctrl-C stopped the run; its state is in the checkpoint.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted {at}; saved to {}: run the same command with --resume to continue",
    checkpoint.display()
)]
pub struct Interrupted {
    pub checkpoint: PathBuf,
    pub at: String,
}

/// The learning-rate factor of each trainable stage: `ratio` for the first, rising
/// geometrically to 1 for the last (the head always trains at the full rate).
pub fn stage_lr_factors(stages: usize, ratio: f64) -> Vec<f64> {
    if stages <= 1 {
        return vec![1.0; stages];
    }
    (0..stages)
        .map(|i| ratio.powf(1.0 - i as f64 / (stages - 1) as f64))
        .collect()
}

pub fn train(s: Setup, device: &Device) -> Result<Trained> {
    let k = s.train.classes.len();
    let model = s.model;
    let last = model.stage_names.len() - 1;
    let ad = device.clone().autodiff();
    let total_epochs: usize = s.phases.iter().map(|p| p.epochs).sum();
    let (xv, yv) = s.val_features;
    let (mut state, mut saved) = match s.resume {
        Some(c) => (c.state, Some((c.model, c.optimizer, c.best))),
        None => (
            State {
                format: checkpoint::FORMAT,
                retrain_version: env!("CARGO_PKG_VERSION").to_owned(),
                run: s.run_id.clone(),
                phase: 0,
                epochs_done: 0,
                partial: None,
                step: 0,
                history: Vec::new(),
                last: None,
                best: None,
                stopped_early_after: None,
            },
            None,
        ),
    };
    // The trainable part of phase `p`: the stages after its cut, fresh from the pretrained
    // weights, and a head (new, or the one trained so far).
    let structure = |p: usize, head: Linear| -> Result<Trainable> {
        let skip = s.phases[p].frozen_through.map_or(0, |c| c + 1);
        let stages = if skip <= last {
            let m = Model::from_spec(s.spec, s.weights, &ad)
                .with_context(|| format!("cannot load {}", s.weights_path.display()))?;
            m.network.stages.into_iter().skip(skip).collect()
        } else {
            Vec::new()
        };
        Ok(Trainable { stages, head })
    };
    let fresh_head = || freeze::new_head(model.config.feature_dim(), k, s.training.seed, &ad);
    let mut best: Option<Trainable> = None;
    if let (Some((_, _, Some(bytes))), Some(score)) = (&saved, &state.best) {
        let phase = phase_of(s.phases, score.epoch);
        let mut b = structure(phase, fresh_head())?;
        checkpoint::load_module(&mut b, bytes)?;
        best = Some(b);
    }
    let mut net: Option<Trainable> = None;
    let mut phase_start = 0;
    for (pi, phase) in s.phases.iter().enumerate() {
        let phase_end = phase_start + phase.epochs;
        let start = phase_start;
        phase_start = phase_end;
        // Phases finished before the checkpoint, and everything after an early stop.
        if phase.epochs == 0 || pi < state.phase || state.stopped_early_after.is_some() {
            continue;
        }
        let resuming_here = pi == state.phase && saved.is_some();
        // The head trained so far, or a new one (seeded: the same whenever it is made).
        let h = net.take().map_or_else(fresh_head, |n| n.head);
        let mut current = structure(pi, h)?;
        let mut optimizer_state = None;
        if resuming_here {
            let (m, o, _) = saved.take().expect("checked");
            checkpoint::load_module(&mut current, &m)?;
            optimizer_state = Some(o);
        }
        let cut = phase.frozen_through;
        let first = state.epochs_done.max(start);
        if first >= phase_end {
            net = Some(current);
            continue;
        }
        // What the trainable part is fed: pooled features (all frozen), the feature map at
        // the cut, or the preprocessed pixels (nothing frozen).
        let (maps, pixels) = (cut.is_some_and(|c| c < last), cut.is_none());
        let at_cut = RunOptions {
            stage: cut,
            keep_maps: maps,
            pixels_only: pixels,
            ..s.run.clone()
        };
        let frozen_output =
            |opts: &RunOptions, set: &Labelled| -> Result<(Vec<f32>, [usize; 3], Vec<usize>)> {
                let (out, labels) = inference::run_labelled(model, set, opts, device)?;
                let shape = if maps || pixels {
                    out.map_shape
                } else {
                    [out.dim, 1, 1]
                };
                Ok((out.features, shape, labels))
            };
        let (xv_cut, shape_v) = if maps || pixels {
            let (x, sh, _) = frozen_output(&at_cut, s.val)?;
            (x, sh)
        } else {
            (xv.to_vec(), [xv.len() / yv.len().max(1), 1, 1])
        };
        // Without augmentation the training inputs are fixed: computed once.
        let fixed = if s.augment {
            None
        } else {
            Some(frozen_output(&at_cut, s.train)?)
        };
        let phase_cfg = HeadTraining {
            epochs: phase.epochs,
            lr: s.training.lr * phase.lr_scale,
            ..s.training.clone()
        };
        let factors = stage_lr_factors(current.stages.len(), s.training.stage_lr_ratio);
        let mut trainer: Option<EpochTrainer> = None;
        for epoch in first..phase_end {
            let t0 = Instant::now();
            let (xt, shape, yt) = match &fixed {
                Some(f) => f.clone(),
                None => {
                    let aug = RunOptions {
                        augment: Some(crate::data::Augment {
                            seed: s.training.seed
                                ^ (epoch as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
                            color_jitter: s.training.color_jitter as f32,
                        }),
                        ..at_cut.clone()
                    };
                    frozen_output(&aug, s.train)?
                }
            };
            let tr = match &mut trainer {
                Some(t) => t,
                None => {
                    let groups = current
                        .stages
                        .iter()
                        .zip(&factors)
                        .filter(|(_, f)| **f != 1.0)
                        .map(|(st, f)| (ParamGroup::ids_from_module(st.clone()), *f))
                        .collect();
                    let mut t = EpochTrainer::new(&phase_cfg, yt.len()).with_lr_factors(groups);
                    if let Some(bytes) = optimizer_state.take() {
                        t.optim = t
                            .optim
                            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                            .map_err(|e| anyhow::anyhow!("damaged optimizer state: {e}"))?;
                        t.step = state.step;
                    }
                    trainer.insert(t)
                }
            };
            let partial = state.partial.take();
            let (next, end) = tr.epoch(current, &xt, shape, &yt, k, epoch, partial, &STOP, &ad);
            current = next;
            let (loss, accuracy) = match end {
                EpochEnd::Interrupted(at) => {
                    state.phase = pi;
                    state.partial = Some(at);
                    state.step = tr.step;
                    save(&s.checkpoint, &state, &current, tr, best.as_ref())?;
                    return Err(Interrupted {
                        checkpoint: s.checkpoint.clone(),
                        at: format!(
                            "in epoch {} after {} of {} batches",
                            epoch + 1,
                            at.batches_done,
                            yt.len().div_ceil(s.training.batch_size.max(1))
                        ),
                    }
                    .into());
                }
                EpochEnd::Done { loss, accuracy } => (loss, accuracy),
            };
            let probs = metrics::softmax_rows(&current.predict(&xv_cut, shape_v, &ad), k);
            let r = metrics::report(&s.val.classes, &probs, yv);
            if s.log_epochs {
                eprintln!(
                    "epoch {}/{total_epochs}{}: train loss {loss:.4} acc {:.1}%, val loss {:.4} acc {:.1}% ({:.1}s)",
                    epoch + 1,
                    if cut == Some(last) && s.phases.len() > 1 {
                        " (head only)"
                    } else {
                        ""
                    },
                    accuracy * 100.0,
                    r.loss,
                    r.accuracy * 100.0,
                    t0.elapsed().as_secs_f64()
                );
            }
            state.history.push(json!({
                "epoch": epoch + 1, "train_loss": loss, "train_accuracy": accuracy,
                "val_loss": r.loss, "val_accuracy": r.accuracy,
                "frozen_through": cut.map(|c| model.stage_names[c].clone()),
                "lr_end": tr.current_lr(),
                "seconds": t0.elapsed().as_secs_f64(),
            }));
            let score = EpochScore {
                epoch,
                val: r,
                train_accuracy: accuracy,
                train_images: yt.len(),
            };
            // Early stopping keeps the epoch with the lowest validation loss.
            if s.training.patience > 0 {
                if state
                    .best
                    .as_ref()
                    .is_none_or(|b| score.val.loss < b.val.loss)
                {
                    state.best = Some(score.clone());
                    // A snapshot: a clone would share BatchNorm's running statistics, which
                    // keep changing as training goes on.
                    best = Some(current.valid());
                } else if epoch - state.best.as_ref().map_or(epoch, |b| b.epoch)
                    >= s.training.patience
                {
                    state.stopped_early_after = Some(epoch + 1);
                }
            }
            state.last = Some(score);
            state.phase = pi;
            state.epochs_done = epoch + 1;
            state.step = tr.step;
            save(&s.checkpoint, &state, &current, tr, best.as_ref())?;
            if state.stopped_early_after.is_some() {
                if s.log_epochs {
                    eprintln!(
                        "stopping: no lower validation loss for {} epochs",
                        s.training.patience
                    );
                }
                break;
            }
            if STOP.load(Ordering::SeqCst) {
                return Err(Interrupted {
                    checkpoint: s.checkpoint.clone(),
                    at: format!("after epoch {}", epoch + 1),
                }
                .into());
            }
        }
        net = Some(current);
    }
    let last_score = state
        .last
        .clone()
        .context("the checkpoint holds no finished epoch")?;
    let (net, score) = match (best, state.best) {
        (Some(b), Some(score)) => {
            if s.log_epochs {
                eprintln!("keeping epoch {} (lowest validation loss)", score.epoch + 1);
            }
            (b, score)
        }
        _ => (net.context("no epoch ran")?, last_score),
    };
    Ok(Trained {
        net,
        train_accuracy: score.train_accuracy,
        train_images: score.train_images,
        val: score.val,
        history: state.history,
        stopped_early_after: state.stopped_early_after,
    })
}

/// Writes the run's state; on failure the previous checkpoint stays as it was.
fn save(
    path: &std::path::Path,
    state: &State,
    current: &Trainable,
    trainer: &EpochTrainer,
    best: Option<&Trainable>,
) -> Result<()> {
    // `valid()` folds BatchNorm's pending running-statistics update in (burn applies each
    // update lazily, at the next one); the parameter ids stay.
    let c = Checkpoint {
        state: state.clone(),
        model: checkpoint::module_bytes(&current.valid())?,
        optimizer: trainer
            .optim
            .into_bytes()
            .map_err(|e| anyhow::anyhow!("cannot serialise the optimizer: {e}"))?
            .to_vec(),
        best: best.map(checkpoint::module_bytes).transpose()?,
    };
    c.write(path).with_context(|| {
        // Say truthfully what is left: the previous checkpoint, untouched by the failed write.
        match Checkpoint::read(path) {
            Ok(prev) => format!(
                "cannot save the checkpoint {}; the one of epoch {} is kept: free some space and run the same command with --resume",
                path.display(),
                prev.state.epochs_done
            ),
            Err(_) => format!(
                "cannot save the checkpoint {}; free some space and run again",
                path.display()
            ),
        }
    })
}

/// The phase epoch `epoch` (counted over all phases) belongs to.
fn phase_of(phases: &[Phase], epoch: usize) -> usize {
    let mut end = 0;
    for (i, p) in phases.iter().enumerate() {
        end += p.epochs;
        if epoch < end {
            return i;
        }
    }
    phases.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_factors_rise_geometrically_to_one() {
        let f = stage_lr_factors(3, 0.01);
        assert!((f[0] - 0.01).abs() < 1e-12);
        assert!((f[1] - 0.1).abs() < 1e-12);
        assert!((f[2] - 1.0).abs() < 1e-12);
        assert_eq!(stage_lr_factors(1, 0.1), vec![1.0]);
        assert!(stage_lr_factors(0, 0.1).is_empty());
    }

    #[test]
    fn epochs_map_to_phases() {
        let p = |epochs| Phase {
            frozen_through: None,
            epochs,
            lr_scale: 1.0,
        };
        let phases = [p(1), p(0), p(3)];
        assert_eq!(phase_of(&phases, 0), 0);
        assert_eq!(phase_of(&phases, 1), 2);
        assert_eq!(phase_of(&phases, 3), 2);
    }
}
