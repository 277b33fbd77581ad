//! The gradient trainer behind freeze and finetune: the trainable part (the stages after
//! the cut and a new softmax head), one epoch of mini-batch descent over its inputs in a
//! seeded order, and the optimizer, schedule and per-stage learning rates it steps with.
//!
//! Whatever is frozen runs in inference mode before this (BatchNorm folded into the
//! convolutions), so its output at the cut is all the trainable part ever sees; the
//! trainable stages train with BatchNorm in training mode.

use burn::module::{Param, ParamGroup};
use burn::nn::Linear;
use burn::optim::lr_scheduler::LrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrSchedulerConfig};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use super::options::{Optimizer, Schedule, Training};
use super::schedule::{cosine_lr, one_cycle_lr};
use crate::graph::GraphError;
use crate::inference::Features;
use crate::observe::Interrupter;
use crate::rng::SplitMix64;
use crate::zoo::network::{Stage, global_avg_pool, run_stages};

/// What gradient descent updates: the stages after the cut (maybe none) and the new head.
#[derive(Module, Debug)]
pub struct Trainable {
    pub stages: Vec<Stage>,
    pub head: Linear,
}

impl Trainable {
    /// Logits from the frozen part's output (a feature map; pooled features as `n×d×1×1`).
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<2>, GraphError> {
        let x = run_stages(&self.stages, x)?;
        Ok(self.head.forward(global_avg_pool(x)))
    }

    /// Logits in inference mode (BatchNorm on running statistics, folded into the
    /// convolutions as the bundle's model will be; no autodiff).
    pub fn predict(
        &self,
        x: &[f32],
        shape: [usize; 3],
        device: &Device,
    ) -> Result<Vec<f32>, GraphError> {
        let valid = self.valid();
        let eval = Trainable {
            stages: valid
                .stages
                .into_iter()
                .map(Stage::fold_batchnorm)
                .collect(),
            head: valid.head,
        };
        let per = shape.iter().product::<usize>();
        let n = x.len() / per.max(1);
        let mut out = Vec::new();
        for start in (0..n).step_by(64) {
            let b = (n - start).min(64);
            let xt = Tensor::<4>::from_data(
                TensorData::new(
                    x[start * per..(start + b) * per].to_vec(),
                    [b, shape[0], shape[1], shape[2]],
                ),
                &device.clone().inner(),
            );
            out.extend(
                eval.forward(xt)?
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap_or_default(),
            );
        }
        Ok(out)
    }
}

/// Where an interrupted epoch stopped: enough to finish it exactly as if it had not been.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    pub batches_done: usize,
    pub loss_sum: f64,
    pub correct: usize,
}

/// The end of [`EpochTrainer::epoch`]: a finished epoch, or one stopped between two
/// batches because `stop` was raised.
pub enum EpochEnd {
    Done { loss: f64, accuracy: f64 },
    Interrupted(PartialEpoch),
}

/// A linear head on the autodiff device, initialised as PyTorch's `nn.Linear`
/// (U(±1/√in) for weights and bias) from a seeded generator.
pub fn new_head(dim: usize, classes: usize, seed: u64, device: &Device) -> Linear {
    let mut rng = SplitMix64(seed ^ 0x1D8E_4E27_C47D_124F);
    let bound = 1.0 / (dim as f64).sqrt();
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = rng.uniform();
                ((2.0 * u - 1.0) * bound) as f32
            })
            .collect()
    };
    let w = draw(dim * classes);
    let b = draw(classes);
    Linear {
        weight: Param::from_tensor(Tensor::from_data(
            TensorData::new(w, [dim, classes]),
            device,
        )),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [classes]),
            device,
        ))),
    }
}

/// Trains a [`Trainable`] epoch by epoch over one phase: the optimizer state, the step
/// count the schedule follows, and per-stage learning-rate factors.
pub struct EpochTrainer {
    pub optim: burn::optim::ModuleOptimizer,
    pub step: usize,
    total_steps: usize,
    warmup_steps: usize,
    cfg: Training,
    /// Parameter groups whose learning rate is a fraction of the base rate (earlier stages
    /// of a fine-tune); the rest (the head, later stages) train at the base rate.
    lr_groups: Vec<(ParamGroup, f64)>,
}

impl EpochTrainer {
    pub fn new(cfg: &Training, n: usize) -> Self {
        let per_epoch = n.div_ceil(cfg.batch_size.max(1));
        let optim = match cfg.optimizer {
            Optimizer::Sgd { momentum } => SgdConfig::new()
                .with_momentum(Some(
                    MomentumConfig::new()
                        .with_momentum(momentum)
                        .with_dampening(0.0),
                ))
                .init(),
            Optimizer::AdamW { weight_decay } => AdamWConfig::new()
                .with_weight_decay(weight_decay as f32)
                .init(),
        };
        Self {
            optim,
            step: 0,
            total_steps: per_epoch * cfg.epochs,
            warmup_steps: (cfg.warmup_epochs * per_epoch as f64).round() as usize,
            cfg: cfg.clone(),
            lr_groups: Vec::new(),
        }
    }

    /// Trains the parameters of each `(module group, factor)` at `factor` × the rate.
    pub fn with_lr_factors(mut self, groups: Vec<(ParamGroup, f64)>) -> Self {
        self.lr_groups = groups;
        self
    }

    fn lr_at(&self, step: usize) -> f64 {
        match self.cfg.schedule {
            Schedule::Cosine => cosine_lr(self.cfg.lr, step, self.total_steps, self.warmup_steps),
            Schedule::OneCycle => one_cycle_lr(self.cfg.lr, step, self.total_steps),
        }
    }

    /// The base learning rate of the last step taken.
    pub fn current_lr(&self) -> f64 {
        self.lr_at(self.step.saturating_sub(1))
    }

    fn module_lr(&self, lr: f64) -> ModuleLearningRate {
        if self.lr_groups.is_empty() {
            return lr.into();
        }
        let mut cfg = ModuleLrSchedulerConfig::new(LrSchedulerConfig::Constant(lr));
        for (group, factor) in &self.lr_groups {
            cfg = cfg.with_group(group.clone(), LrSchedulerConfig::Constant(lr * factor));
        }
        cfg.init().expect("constant schedules always build").step()
    }

    /// One pass over `inputs` in a seeded order, starting after `resume`'s batches when
    /// given. Returns early, between two batches, once `interrupter` is raised.
    pub fn epoch(
        &mut self,
        mut model: Trainable,
        inputs: &Features,
        epoch: usize,
        resume: Option<PartialEpoch>,
        interrupter: &Interrupter,
        device: &Device,
    ) -> Result<(Trainable, EpochEnd), GraphError> {
        let n = inputs.labels.len();
        let mut order: Vec<usize> = (0..n).collect();
        SplitMix64(self.cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9)).shuffle(&mut order);
        let class_weight = self.class_weights(&inputs.labels, inputs.classes);
        let mut at = resume.unwrap_or(PartialEpoch {
            batches_done: 0,
            loss_sum: 0.0,
            correct: 0,
        });
        let batches: Vec<&[usize]> = order.chunks(self.cfg.batch_size.max(1)).collect();
        for batch in &batches[at.batches_done.min(batches.len())..] {
            if interrupter.should_stop() {
                return Ok((model, EpochEnd::Interrupted(at)));
            }
            let (xt, target) = self.batch_tensors(inputs, batch, &class_weight, device);
            let norm: f64 = batch
                .iter()
                .map(|&i| class_weight[inputs.labels[i]] as f32 as f64)
                .sum();
            let logits = model.forward(xt)?;
            let loss = -(log_softmax(logits.clone(), 1) * target).sum() / norm.max(1e-12);
            let preds: Vec<f32> = logits
                .inner()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            for (row, &i) in preds.chunks(inputs.classes).zip(batch.iter()) {
                at.correct += (crate::metrics::argmax(row) == inputs.labels[i]) as usize;
            }
            at.loss_sum += loss.clone().into_scalar::<f64>() * batch.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let lr = self.module_lr(self.lr_at(self.step));
            model = self.optim.step(lr, model, grads);
            self.step += 1;
            at.batches_done += 1;
        }
        let end = EpochEnd::Done {
            loss: at.loss_sum / n.max(1) as f64,
            accuracy: at.correct as f64 / n.max(1) as f64,
        };
        Ok((model, end))
    }

    /// Per-class loss weights: PyTorch's weighted mean, Σ w_y·CE / Σ w_y, with
    /// `n / (k · n_c)` when balancing and 1 otherwise.
    fn class_weights(&self, y: &[usize], classes: usize) -> Vec<f64> {
        if !self.cfg.balanced {
            return vec![1.0; classes];
        }
        let mut count = vec![0usize; classes];
        for &c in y {
            count[c] += 1;
        }
        count
            .iter()
            .map(|&c| {
                if c > 0 {
                    y.len() as f64 / (classes * c) as f64
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// A batch's inputs and its (smoothed, class-weighted) one-hot targets.
    fn batch_tensors(
        &self,
        inputs: &Features,
        batch: &[usize],
        class_weight: &[f64],
        device: &Device,
    ) -> (Tensor<4>, Tensor<2>) {
        let (b, k, dim) = (batch.len(), inputs.classes, inputs.sample_len());
        let eps = self.cfg.label_smoothing;
        let xb: Vec<f32> = batch
            .iter()
            .flat_map(|&i| inputs.values[i * dim..(i + 1) * dim].iter().copied())
            .collect();
        let target: Vec<f32> = batch
            .iter()
            .flat_map(|&i| {
                let y = inputs.labels[i];
                let w = class_weight[y];
                (0..k).map(move |c| {
                    let t = eps / k as f64 + if c == y { 1.0 - eps } else { 0.0 };
                    // The same product the f32 tensors computed before: target × weight.
                    (t as f32) * (w as f32)
                })
            })
            .collect();
        let [c, h, w] = inputs.shape;
        let xt = Tensor::<4>::from_data(TensorData::new(xb, [b, c, h, w]), device);
        let tt = Tensor::<2>::from_data(TensorData::new(target, [b, k]), device);
        (xt, tt)
    }
}

/// The head's weights as a row-major classes × dim matrix and a bias vector.
pub fn head_weights(head: &Linear) -> (Vec<f32>, Vec<f32>) {
    let w = head.weight.val().inner();
    let [dim, classes] = w.dims();
    let w: Vec<f32> = w.into_data().try_into_vec::<f32>().unwrap_or_default();
    let mut t = vec![0f32; dim * classes];
    for i in 0..dim {
        for c in 0..classes {
            t[c * dim + i] = w[i * classes + c];
        }
    }
    let b = head
        .bias
        .as_ref()
        .map(|b| {
            b.val()
                .inner()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap_or_default()
        })
        .unwrap_or_else(|| vec![0.0; classes]);
    (t, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_learns_separable_features_and_repeats_exactly() {
        let device = Device::default().autodiff();
        let (n, d) = (40, 3);
        let x: Vec<f32> = (0..n)
            .flat_map(|i| {
                let s = if i % 2 == 0 { 1.0 } else { -1.0 };
                [s * 2.0, 0.5, -s]
            })
            .collect();
        let y: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let cfg = Training {
            epochs: 20,
            lr: 0.1,
            optimizer: Optimizer::Sgd { momentum: 0.9 },
            warmup_epochs: 1.0,
            label_smoothing: 0.1,
            batch_size: 8,
            seed: 3,
            ..Training::default()
        };
        let inputs = Features {
            values: x.clone(),
            shape: [d, 1, 1],
            labels: y.clone(),
            classes: 2,
        };
        let run = || {
            let mut m = Trainable {
                stages: Vec::new(),
                head: new_head(d, 2, 3, &device),
            };
            let mut t = EpochTrainer::new(&cfg, n);
            let mut acc = 0.0;
            let never = Interrupter::new();
            for e in 0..cfg.epochs {
                let (next, end) = t.epoch(m, &inputs, e, None, &never, &device).unwrap();
                m = next;
                if let EpochEnd::Done { accuracy, .. } = end {
                    acc = accuracy;
                }
            }
            let logits = m.predict(&x, [d, 1, 1], &device).unwrap();
            assert_eq!(logits.len(), n * 2);
            (acc, head_weights(&m.head))
        };
        let (acc, w1) = run();
        assert_eq!(acc, 1.0);
        let (_, w2) = run();
        assert_eq!(w1, w2, "same seed, same weights");
    }
}
