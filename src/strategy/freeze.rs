//! Frozen backbone up to a stage, the stages after it and a new softmax head trained by
//! mini-batch gradient descent.
//!
//! The frozen part runs in inference mode (BatchNorm on its ImageNet statistics, folded
//! into the convolutions), so its output at the cut is all the trainable part ever sees.
//! Without augmentation that output is computed once and every epoch costs only the
//! trainable part; with augmentation (random resized crop + flip, as torchvision's recipe)
//! each epoch recomputes it from freshly augmented crops, decoding in parallel with the
//! network. The trainable stages train with BatchNorm in training mode.

use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::{Param, ParamGroup};
use burn::nn::Linear;
use burn::optim::lr_scheduler::LrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrSchedulerConfig};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use crate::dataset::SplitMix64;
use crate::zoo::network::{Stage, global_avg_pool};

/// What gradient descent updates: the stages after the cut (maybe none) and the new head.
#[derive(Module, Debug)]
pub struct Trainable {
    pub stages: Vec<Stage>,
    pub head: Linear,
}

impl Trainable {
    /// Logits from the frozen part's output (a feature map; pooled features as `n×d×1×1`).
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<2> {
        for s in &self.stages {
            x = s.forward(x);
        }
        self.head.forward(global_avg_pool(x))
    }

    /// Logits in inference mode (BatchNorm on running statistics, no autodiff).
    pub fn predict(&self, x: &[f32], shape: [usize; 3], device: &Device) -> Vec<f32> {
        let eval = self.valid();
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
                eval.forward(xt)
                    .into_data()
                    .try_into_vec::<f32>()
                    .unwrap_or_default(),
            );
        }
        out
    }
}

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "name")]
pub enum Optimizer {
    /// SGD with (PyTorch-style, undampened) momentum.
    Sgd {
        momentum: f64,
    },
    AdamW {
        weight_decay: f64,
    },
}

/// How the learning rate moves over the steps of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Linear warm-up (`warmup_epochs`), then cosine decay to zero.
    #[default]
    Cosine,
    /// PyTorch's `OneCycleLR` defaults: cosine rise from lr/25 to lr over the first 30% of
    /// the steps, then cosine fall to lr/25e4 (momentum is not cycled).
    OneCycle,
}

/// Hyper-parameters of head training.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeadTraining {
    pub epochs: usize,
    pub lr: f64,
    pub optimizer: Optimizer,
    /// Linear warm-up, in epochs, before the cosine decay.
    pub warmup_epochs: f64,
    pub label_smoothing: f64,
    pub batch_size: usize,
    pub seed: u64,
    /// Weight classes inversely to their frequency (`n / (k · n_c)`), for imbalanced data.
    #[serde(default)]
    pub balanced: bool,
    /// Stop after this many epochs without a lower validation loss and keep the best epoch
    /// (0: train every epoch, keep the last).
    #[serde(default)]
    pub patience: usize,
    #[serde(default)]
    pub schedule: Schedule,
    /// Learning-rate factor of the first trainable stage; later stages rise geometrically to
    /// the full rate (discriminative fine-tuning). 1: every layer at the same rate.
    #[serde(default = "one")]
    pub stage_lr_ratio: f64,
    /// Colour jitter strength of the augmentation (0: none).
    #[serde(default)]
    pub color_jitter: f64,
}

fn one() -> f64 {
    1.0
}

/// Learning rate at `step` of `total`: linear warm-up then cosine decay to zero.
pub fn cosine_lr(base: f64, step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = (total - warmup).max(1) as f64;
    let t = (step - warmup) as f64 / span;
    base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Learning rate at `step` of `total` under PyTorch's one-cycle policy (defaults
/// `pct_start` 0.3, `div_factor` 25, `final_div_factor` 1e4, cosine annealing).
pub fn one_cycle_lr(base: f64, step: usize, total: usize) -> f64 {
    let (start, end) = (base / 25.0, base / 25.0 / 1e4);
    let rise = (0.3 * total as f64 - 1.0).max(1.0);
    let fall = (total as f64 - 1.0 - rise).max(1.0);
    let anneal = |from: f64, to: f64, t: f64| {
        to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * t.clamp(0.0, 1.0)).cos())
    };
    let s = step as f64;
    if s <= rise {
        anneal(start, base, s / rise)
    } else {
        anneal(base, end, (s - rise) / fall)
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
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
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
    cfg: HeadTraining,
    /// Parameter groups whose learning rate is a fraction of the base rate (earlier stages
    /// of a fine-tune); the rest (the head, later stages) train at the base rate.
    lr_groups: Vec<(ParamGroup, f64)>,
}

impl EpochTrainer {
    pub fn new(cfg: &HeadTraining, n: usize) -> Self {
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

    /// One pass over `x` (per sample a `shape` tensor, row-major) in a seeded order,
    /// starting after `resume`'s batches when given. Returns early, between two batches,
    /// once `stop` is raised.
    #[allow(clippy::too_many_arguments)]
    pub fn epoch(
        &mut self,
        mut model: Trainable,
        x: &[f32],
        shape: [usize; 3],
        y: &[usize],
        classes: usize,
        epoch: usize,
        resume: Option<PartialEpoch>,
        stop: &AtomicBool,
        device: &Device,
    ) -> (Trainable, EpochEnd) {
        let n = y.len();
        let dim = shape.iter().product::<usize>();
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = SplitMix64(self.cfg.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9));
        for i in (1..n).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let eps = self.cfg.label_smoothing;
        // Per-class loss weights: PyTorch's weighted mean, Σ w_y·CE / Σ w_y.
        let class_weight: Vec<f64> = if self.cfg.balanced {
            let mut count = vec![0usize; classes];
            for &c in y {
                count[c] += 1;
            }
            count
                .iter()
                .map(|&c| {
                    if c > 0 {
                        n as f64 / (classes * c) as f64
                    } else {
                        0.0
                    }
                })
                .collect()
        } else {
            vec![1.0; classes]
        };
        let mut at = resume.unwrap_or(PartialEpoch {
            batches_done: 0,
            loss_sum: 0.0,
            correct: 0,
        });
        let batches: Vec<&[usize]> = order.chunks(self.cfg.batch_size.max(1)).collect();
        for batch in &batches[at.batches_done.min(batches.len())..] {
            if stop.load(Ordering::SeqCst) {
                return (model, EpochEnd::Interrupted(at));
            }
            let b = batch.len();
            let xb: Vec<f32> = batch
                .iter()
                .flat_map(|&i| x[i * dim..(i + 1) * dim].iter().copied())
                .collect();
            let target: Vec<f32> = batch
                .iter()
                .flat_map(|&i| {
                    (0..classes).map(move |c| {
                        eps / classes as f64 + if c == y[i] { 1.0 - eps } else { 0.0 }
                    })
                })
                .map(|v| v as f32)
                .collect();
            let xt = Tensor::<4>::from_data(
                TensorData::new(xb, [b, shape[0], shape[1], shape[2]]),
                device,
            );
            let sample_w: Vec<f32> = batch.iter().map(|&i| class_weight[y[i]] as f32).collect();
            let norm: f64 = sample_w.iter().map(|&w| w as f64).sum::<f64>().max(1e-12);
            let tt = Tensor::<2>::from_data(TensorData::new(target, [b, classes]), device)
                * Tensor::<2>::from_data(TensorData::new(sample_w, [b, 1]), device);
            let logits = model.forward(xt);
            let loss = -(log_softmax(logits.clone(), 1) * tt).sum() / norm;
            let preds: Vec<f32> = logits
                .inner()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            for (row, &i) in preds.chunks(classes).zip(batch.iter()) {
                at.correct += (crate::metrics::argmax(row) == y[i]) as usize;
            }
            at.loss_sum += loss.clone().into_scalar::<f64>() * b as f64;
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
        (model, end)
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
    fn schedule_warms_up_then_decays() {
        assert!((cosine_lr(1.0, 0, 100, 10) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(1.0, 9, 100, 10) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(1.0, 10, 100, 10) - 1.0).abs() < 1e-12);
        assert!(cosine_lr(1.0, 55, 100, 10) < 0.51 && cosine_lr(1.0, 55, 100, 10) > 0.49);
        assert!(cosine_lr(1.0, 99, 100, 10) < 0.01);
    }

    #[test]
    fn one_cycle_rises_then_falls_like_pytorch() {
        // torch.optim.lr_scheduler.OneCycleLR(max_lr=1, total_steps=100): 0.04 at step 0,
        // 1.0 at step 29, 0.5000... near step 64, 4e-6 at step 99.
        assert!((one_cycle_lr(1.0, 0, 100) - 0.04).abs() < 1e-12);
        assert!((one_cycle_lr(1.0, 29, 100) - 1.0).abs() < 1e-12);
        assert!((one_cycle_lr(1.0, 99, 100) - 4e-6).abs() < 1e-12);
        assert!(one_cycle_lr(1.0, 64, 100) > 0.45 && one_cycle_lr(1.0, 64, 100) < 0.55);
    }

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
        let cfg = HeadTraining {
            epochs: 20,
            lr: 0.1,
            optimizer: Optimizer::Sgd { momentum: 0.9 },
            warmup_epochs: 1.0,
            label_smoothing: 0.1,
            batch_size: 8,
            seed: 3,
            balanced: false,
            patience: 0,
            schedule: Schedule::Cosine,
            stage_lr_ratio: 1.0,
            color_jitter: 0.0,
        };
        let run = || {
            let mut m = Trainable {
                stages: Vec::new(),
                head: new_head(d, 2, 3, &device),
            };
            let mut t = EpochTrainer::new(&cfg, n);
            let mut acc = 0.0;
            let never = AtomicBool::new(false);
            for e in 0..cfg.epochs {
                let (next, end) = t.epoch(m, &x, [d, 1, 1], &y, 2, e, None, &never, &device);
                m = next;
                if let EpochEnd::Done { accuracy, .. } = end {
                    acc = accuracy;
                }
            }
            let logits = m.predict(&x, [d, 1, 1], &device);
            assert_eq!(logits.len(), n * 2);
            (acc, head_weights(&m.head))
        };
        let (acc, w1) = run();
        assert_eq!(acc, 1.0);
        let (_, w2) = run();
        assert_eq!(w1, w2, "same seed, same weights");
    }
}
