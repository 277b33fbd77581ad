//! Gradient training for freeze and finetune: phases of epochs, each with the backbone
//! frozen through some stage (or not at all); validation after every epoch, early stopping,
//! a checkpoint after every epoch and when interrupted, and resumption from one.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::ParamGroup;
use burn::nn::Linear;
use burn::prelude::*;

use super::checkpoint::{self, Checkpoint, EpochScore, State};
use super::early_stopping::{EarlyStopping, Verdict};
use super::gradient::{self, EpochEnd, EpochTrainer, PartialEpoch, Trainable};
use super::options::Training;
use super::records::{EpochRecord, RunIdentity};
use super::schedule::stage_lr_factors;
use crate::dataset::Labelled;
use crate::inference::{self, Features, Output, RunOptions};
use crate::metrics::{self, Report};
use crate::observe::{Event, Interrupter, Observer};
use crate::weights::Weights;
use crate::zoo::{Model, ModelSpec};

/// Epochs with the backbone frozen through stage `frozen_through` (`None`: nothing frozen),
/// at `lr_scale` × the learning rate.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub frozen_through: Option<usize>,
    pub epochs: usize,
    pub lr_scale: f64,
    /// Progressive resizing: the first epoch's crops are this size, growing to the model's
    /// by the last epoch (`None`: the model's size throughout).
    pub start_size: Option<usize>,
}

impl Phase {
    /// The crop side of the phase's `i`-th epoch (from 0) for a model that takes `full`:
    /// `start_size` rising linearly in steps of 8 pixels, `full` at the last epoch.
    pub fn crop_at(&self, i: usize, full: usize) -> usize {
        match self.start_size {
            Some(start) if start < full && i + 1 < self.epochs => {
                let t = i as f64 / (self.epochs - 1) as f64;
                let side = start as f64 + t * (full - start) as f64;
                ((side / 8.0).round() as usize * 8).clamp(start, full)
            }
            _ => full,
        }
    }
}

/// What a gradient fit works on.
pub struct Setup<'a> {
    pub spec: &'a ModelSpec,
    pub weights: &'a Weights,
    pub weights_path: &'a std::path::Path,
    /// The pretrained model in inference form: it computes the frozen part.
    pub model: &'a Model,
    pub training: &'a Training,
    pub augment: bool,
    pub phases: &'a [Phase],
    pub train: &'a Labelled,
    pub val: &'a Labelled,
    /// Pooled features of the validation images (whole backbone frozen) and their labels.
    pub val_features: &'a Features,
    pub run: RunOptions,
    /// Identity of the run, stored in checkpoints; a resumed run must have the same.
    pub run_id: RunIdentity,
    pub checkpoint: PathBuf,
    pub resume: Option<Checkpoint>,
    pub observer: &'a dyn Observer,
    pub interrupter: &'a Interrupter,
}

/// The outcome: the trained part and how it scored.
pub struct Trained {
    pub net: Trainable,
    pub train_accuracy: f64,
    pub train_images: usize,
    pub val: Report,
    pub history: Vec<EpochRecord>,
    pub stopped_early_after: Option<usize>,
}

/// The run was interrupted; its state is in the checkpoint.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted {at}; saved to {}: run the same command with --resume to continue",
    checkpoint.display()
)]
pub struct Interrupted {
    pub checkpoint: PathBuf,
    pub at: String,
}

/// Runs every phase and returns the kept epoch's network (the best one under early
/// stopping, otherwise the last).
pub fn train(s: Setup, device: &Device) -> Result<Trained> {
    let mut run = Run::new(s, device)?;
    let mut net = None;
    for pi in 0..run.s.phases.len() {
        net = run.phase(pi, net)?;
    }
    run.finish(net)
}

/// The trainable tensors and optimizer state of the phase a checkpoint stopped in.
struct Saved {
    model: Vec<u8>,
    optimizer: Vec<u8>,
}

/// A training run in progress.
struct Run<'a> {
    s: Setup<'a>,
    device: Device,
    /// The autodiff device the trainable part lives on.
    ad: Device,
    state: State,
    saved: Option<Saved>,
    /// The kept epoch's network under early stopping.
    best: Option<Trainable>,
    stopping: EarlyStopping,
}

/// A finished epoch's training figures.
struct Finished {
    phase: usize,
    epoch: usize,
    loss: f64,
    accuracy: f64,
    train_images: usize,
    /// The training crops' side, when not the model's (progressive resizing).
    train_crop: Option<usize>,
    started: Instant,
}

/// What the trainable part of a phase is fed: how the frozen part runs, its validation
/// output, and its training output when that is the same every epoch (no augmentation).
struct Feed {
    at_cut: RunOptions,
    val: Features,
    fixed: Option<Features>,
}

impl<'a> Run<'a> {
    fn new(mut s: Setup<'a>, device: &Device) -> Result<Self> {
        let resume = s.resume.take();
        let ad = device.clone().autodiff();
        let (state, saved, best_bytes) = match resume {
            Some(c) => (
                c.state,
                Some(Saved {
                    model: c.model,
                    optimizer: c.optimizer,
                }),
                c.best,
            ),
            None => (State::new(s.run_id.clone()), None, None),
        };
        let mut run = Self {
            stopping: EarlyStopping {
                patience: s.training.patience,
            },
            s,
            device: device.clone(),
            ad,
            state,
            saved,
            best: None,
        };
        if let (Some(bytes), Some(score)) = (best_bytes, &run.state.best) {
            let mut b = run.structure(phase_of(run.s.phases, score.epoch), run.fresh_head())?;
            checkpoint::load_module(&mut b, &bytes)?;
            run.best = Some(b);
        }
        Ok(run)
    }

    fn last_stage(&self) -> usize {
        self.s.model.stage_names.len() - 1
    }

    /// Epochs of phase `pi`, counted over all phases.
    fn epochs_of(&self, pi: usize) -> Range<usize> {
        let start: usize = self.s.phases[..pi].iter().map(|p| p.epochs).sum();
        start..start + self.s.phases[pi].epochs
    }

    /// A new head, seeded: the same whenever it is made.
    fn fresh_head(&self) -> Linear {
        let k = self.s.train.classes.len();
        let dim = self.s.model.config.feature_dim();
        gradient::new_head(dim, k, self.s.training.seed, &self.ad)
    }

    /// The trainable part of phase `p`: the stages after its cut, fresh from the pretrained
    /// weights, and `head`.
    fn structure(&self, p: usize, head: Linear) -> Result<Trainable> {
        let skip = self.s.phases[p].frozen_through.map_or(0, |c| c + 1);
        let stages = if skip <= self.last_stage() {
            let m = Model::from_spec(self.s.spec, self.s.weights, &self.ad)
                .with_context(|| format!("cannot load {}", self.s.weights_path.display()))?;
            m.network.stages.into_iter().skip(skip).collect()
        } else {
            Vec::new()
        };
        Ok(Trainable { stages, head })
    }

    /// Trains phase `pi`, starting from `net` (the previous phase's network, whose head
    /// carries over). Phases finished before a checkpoint, and every phase after an early
    /// stop, pass `net` through.
    fn phase(&mut self, pi: usize, net: Option<Trainable>) -> Result<Option<Trainable>> {
        let epochs = self.epochs_of(pi);
        if epochs.is_empty() || pi < self.state.phase || self.state.stopped_early_after.is_some() {
            return Ok(net);
        }
        let head = net.map_or_else(|| self.fresh_head(), |n| n.head);
        let mut current = self.structure(pi, head)?;
        let mut optimizer_state = None;
        if pi == self.state.phase
            && let Some(saved) = self.saved.take()
        {
            checkpoint::load_module(&mut current, &saved.model)?;
            optimizer_state = Some(saved.optimizer);
        }
        let first = self.state.epochs_done.max(epochs.start);
        if first >= epochs.end {
            return Ok(Some(current));
        }
        let feed = self.feed(self.s.phases[pi].frozen_through)?;
        let mut trainer: Option<EpochTrainer> = None;
        for epoch in first..epochs.end {
            let started = Instant::now();
            let full = self.s.model.preprocess.crop;
            let crop = self.s.phases[pi].crop_at(epoch - epochs.start, full);
            let train_crop = (crop != full).then_some(crop);
            let inputs = self.train_inputs(&feed, epoch, train_crop)?;
            let tr = match trainer {
                Some(ref mut t) => t,
                None => {
                    trainer.insert(self.trainer(pi, &current, &inputs, optimizer_state.take())?)
                }
            };
            let partial = self.state.partial.take();
            let (next, end) = tr.epoch(
                current,
                &inputs,
                epoch,
                partial,
                self.s.interrupter,
                &self.ad,
            )?;
            current = next;
            let (loss, accuracy) = match end {
                EpochEnd::Done { loss, accuracy } => (loss, accuracy),
                EpochEnd::Interrupted(at) => {
                    return Err(self.interrupted_in(
                        pi,
                        epoch,
                        at,
                        &current,
                        tr,
                        inputs.labels.len(),
                    ));
                }
            };
            let done = Finished {
                phase: pi,
                epoch,
                loss,
                accuracy,
                train_images: inputs.labels.len(),
                train_crop,
                started,
            };
            let score = self.validate(&current, &feed, done, tr)?;
            if self.end_epoch(pi, score, &current, tr)? {
                break;
            }
        }
        Ok(Some(current))
    }

    /// How the frozen part runs for a phase cut after stage `cut`, and what it gives.
    fn feed(&self, cut: Option<usize>) -> Result<Feed> {
        let last = self.last_stage();
        let output = match cut {
            None => Output::Pixels,
            Some(c) if c < last => Output::FeatureMap(c),
            Some(_) => Output::Pooled,
        };
        let at_cut = RunOptions {
            output,
            ..self.s.run.clone()
        };
        // The pooled validation features are computed once for the whole fit.
        let val = match output {
            Output::Pooled => self.s.val_features.clone(),
            _ => self.frozen_output(&at_cut, self.s.val)?,
        };
        // Without augmentation the training inputs are fixed: computed once.
        let fixed = match self.s.augment {
            true => None,
            false => Some(self.frozen_output(&at_cut, self.s.train)?),
        };
        Ok(Feed { at_cut, val, fixed })
    }

    fn frozen_output(&self, opts: &RunOptions, set: &Labelled) -> Result<Features> {
        inference::features(self.s.model, set, opts, self.s.observer, &self.device)
    }

    /// Epoch `epoch`'s training inputs: the fixed ones, or freshly augmented crops, of side
    /// `size` when given, else the model's.
    fn train_inputs(&self, feed: &Feed, epoch: usize, size: Option<usize>) -> Result<Features> {
        if let Some(f) = &feed.fixed {
            return Ok(f.clone());
        }
        let aug = RunOptions {
            augment: Some(crate::data::Augment {
                seed: self.s.training.seed ^ (epoch as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
                color_jitter: self.s.training.color_jitter as f32,
                size,
            }),
            ..feed.at_cut.clone()
        };
        self.frozen_output(&aug, self.s.train)
    }

    /// The trainer of phase `pi`: its learning rate, per-stage factors, and the optimizer
    /// state a checkpoint saved.
    fn trainer(
        &self,
        pi: usize,
        current: &Trainable,
        inputs: &Features,
        optimizer_state: Option<Vec<u8>>,
    ) -> Result<EpochTrainer> {
        let cfg = Training {
            epochs: self.s.phases[pi].epochs,
            lr: self.s.training.lr * self.s.phases[pi].lr_scale,
            ..self.s.training.clone()
        };
        let factors = stage_lr_factors(current.stages.len(), self.s.training.stage_lr_ratio);
        let groups = current
            .stages
            .iter()
            .zip(&factors)
            .filter(|(_, f)| **f != 1.0)
            .map(|(st, f)| (ParamGroup::ids_from_module(st.clone()), *f))
            .collect();
        let mut t = EpochTrainer::new(&cfg, inputs.labels.len()).with_lr_factors(groups);
        if let Some(bytes) = optimizer_state {
            t.optim = t
                .optim
                .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| anyhow::anyhow!("damaged optimizer state: {e}"))?;
            t.step = self.state.step;
        }
        Ok(t)
    }

    /// Scores the finished epoch on the validation set and records it.
    fn validate(
        &mut self,
        current: &Trainable,
        feed: &Feed,
        done: Finished,
        tr: &EpochTrainer,
    ) -> Result<EpochScore> {
        let Finished {
            phase: pi,
            epoch,
            loss,
            accuracy,
            train_images,
            train_crop,
            started,
        } = done;
        let k = self.s.train.classes.len();
        let logits = current.predict(&feed.val.values, feed.val.shape, &self.ad)?;
        let r = metrics::report(
            &self.s.val.classes,
            &metrics::softmax_rows(&logits, k),
            &feed.val.labels,
        );
        let cut = self.s.phases[pi].frozen_through;
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss,
            train_accuracy: accuracy,
            val_loss: r.loss,
            val_accuracy: r.accuracy,
            frozen_through: cut.map(|c| self.s.model.stage_names[c].clone()),
            lr_end: tr.current_lr(),
            seconds: started.elapsed().as_secs_f64(),
            train_crop,
        };
        self.s.observer.event(Event::Epoch {
            record: &record,
            total_epochs: self.s.phases.iter().map(|p| p.epochs).sum(),
            head_only: cut == Some(self.last_stage()) && self.s.phases.len() > 1,
        });
        self.state.history.push(record);
        Ok(EpochScore {
            epoch,
            val: r,
            train_accuracy: accuracy,
            train_images,
        })
    }

    /// Early stopping, the state and the checkpoint after an epoch; whether to stop.
    fn end_epoch(
        &mut self,
        pi: usize,
        score: EpochScore,
        current: &Trainable,
        tr: &EpochTrainer,
    ) -> Result<bool> {
        let epoch = score.epoch;
        match self.stopping.judge(&mut self.state.best, &score) {
            // A snapshot: a clone would share BatchNorm's running statistics, which keep
            // changing as training goes on.
            Verdict::Improved => self.best = Some(current.valid()),
            Verdict::Stop => self.state.stopped_early_after = Some(epoch + 1),
            Verdict::Continue => {}
        }
        self.state.last = Some(score);
        self.state.phase = pi;
        self.state.epochs_done = epoch + 1;
        self.state.step = tr.step;
        self.save(current, tr)?;
        if self.state.stopped_early_after.is_some() {
            self.s.observer.event(Event::StoppedEarly {
                patience: self.stopping.patience,
            });
            return Ok(true);
        }
        if self.s.interrupter.should_stop() {
            return Err(Interrupted {
                checkpoint: self.s.checkpoint.clone(),
                at: format!("after epoch {}", epoch + 1),
            }
            .into());
        }
        Ok(false)
    }

    /// Saves the run stopped inside epoch `epoch` and says where it stopped.
    fn interrupted_in(
        &mut self,
        pi: usize,
        epoch: usize,
        at: PartialEpoch,
        current: &Trainable,
        tr: &EpochTrainer,
        n: usize,
    ) -> anyhow::Error {
        self.state.phase = pi;
        self.state.partial = Some(at);
        self.state.step = tr.step;
        if let Err(e) = self.save(current, tr) {
            return e;
        }
        Interrupted {
            checkpoint: self.s.checkpoint.clone(),
            at: format!(
                "in epoch {} after {} of {} batches",
                epoch + 1,
                at.batches_done,
                n.div_ceil(self.s.training.batch_size.max(1))
            ),
        }
        .into()
    }

    /// Writes the run's state; on failure the previous checkpoint stays as it was.
    fn save(&self, current: &Trainable, trainer: &EpochTrainer) -> Result<()> {
        let path = &self.s.checkpoint;
        // `valid()` folds BatchNorm's pending running-statistics update in (burn applies
        // each update lazily, at the next one); the parameter ids stay.
        let c = Checkpoint {
            state: self.state.clone(),
            model: checkpoint::module_bytes(&current.valid())?,
            optimizer: trainer
                .optim
                .into_bytes()
                .map_err(|e| anyhow::anyhow!("cannot serialise the optimizer: {e}"))?
                .to_vec(),
            best: self
                .best
                .as_ref()
                .map(checkpoint::module_bytes)
                .transpose()?,
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

    /// The kept epoch: the best under early stopping, otherwise the last.
    fn finish(self, net: Option<Trainable>) -> Result<Trained> {
        let last_score = self
            .state
            .last
            .clone()
            .context("the checkpoint holds no finished epoch")?;
        let (net, score) = match (self.best, self.state.best) {
            (Some(b), Some(score)) => {
                self.s.observer.event(Event::KeptEpoch {
                    epoch: score.epoch + 1,
                });
                (b, score)
            }
            _ => (net.context("no epoch ran")?, last_score),
        };
        Ok(Trained {
            net,
            train_accuracy: score.train_accuracy,
            train_images: score.train_images,
            val: score.val,
            history: self.state.history,
            stopped_early_after: self.state.stopped_early_after,
        })
    }
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
    fn epochs_map_to_phases() {
        let p = |epochs| Phase {
            frozen_through: None,
            epochs,
            lr_scale: 1.0,
            start_size: None,
        };
        let phases = [p(1), p(0), p(3)];
        assert_eq!(phase_of(&phases, 0), 0);
        assert_eq!(phase_of(&phases, 1), 2);
        assert_eq!(phase_of(&phases, 3), 2);
    }

    #[test]
    fn progressive_resizing_rises_to_the_models_size() {
        let p = |epochs, start_size| Phase {
            frozen_through: None,
            epochs,
            lr_scale: 1.0,
            start_size,
        };
        let sides = |ph: Phase, full| {
            (0..ph.epochs)
                .map(|i| ph.crop_at(i, full))
                .collect::<Vec<_>>()
        };
        assert_eq!(sides(p(3, Some(128)), 224), [128, 176, 224]);
        assert_eq!(sides(p(4, Some(160)), 224), [160, 184, 200, 224]);
        assert_eq!(
            sides(p(2, Some(160)), 299),
            [160, 299],
            "the last epoch at the model's size"
        );
        assert_eq!(sides(p(1, Some(128)), 224), [224]);
        assert_eq!(sides(p(3, None), 224), [224, 224, 224]);
        assert_eq!(
            sides(p(2, Some(256)), 224),
            [224, 224],
            "never above the model's size"
        );
    }
}
