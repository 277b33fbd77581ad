//! What a fit is asked to do: the strategy and its settings, with the defaults of the
//! command line and the checks every caller gets (the command line only parses flags into
//! these).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::zoo::ModelSpec;

/// An option outside its valid range: `name` is the option's field, `rule` what it must be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} must be {rule}, got {value}")]
pub struct InvalidOption {
    pub name: &'static str,
    pub rule: &'static str,
    pub value: String,
}

fn check(
    ok: bool,
    name: &'static str,
    rule: &'static str,
    value: impl ToString,
) -> Result<(), InvalidOption> {
    if ok {
        Ok(())
    } else {
        Err(InvalidOption {
            name,
            rule,
            value: value.to_string(),
        })
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

/// Hyper-parameters of gradient training (freeze and finetune). The defaults are the
/// command line's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Training {
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

impl Default for Training {
    fn default() -> Self {
        Self {
            epochs: 5,
            lr: 0.003,
            optimizer: Optimizer::Sgd { momentum: 0.9 },
            warmup_epochs: 0.0,
            label_smoothing: 0.0,
            batch_size: 16,
            seed: 0,
            balanced: false,
            patience: 0,
            schedule: Schedule::Cosine,
            stage_lr_ratio: 1.0,
            color_jitter: 0.0,
        }
    }
}

impl Training {
    pub fn validate(&self) -> Result<(), InvalidOption> {
        check(self.epochs >= 1, "epochs", "at least 1", self.epochs)?;
        check(
            self.lr > 0.0 && self.lr.is_finite(),
            "lr",
            "a positive number",
            self.lr,
        )?;
        check(
            self.batch_size >= 1,
            "batch_size",
            "at least 1",
            self.batch_size,
        )?;
        check(
            self.warmup_epochs >= 0.0,
            "warmup_epochs",
            "0 or more",
            self.warmup_epochs,
        )?;
        check(
            (0.0..1.0).contains(&self.label_smoothing),
            "label_smoothing",
            "in [0, 1)",
            self.label_smoothing,
        )?;
        check(
            self.stage_lr_ratio > 0.0 && self.stage_lr_ratio <= 1.0,
            "stage_lr_ratio",
            "in (0, 1]",
            self.stage_lr_ratio,
        )?;
        check(
            (0.0..=1.0).contains(&self.color_jitter),
            "color_jitter",
            "in [0, 1]",
            self.color_jitter,
        )
    }
}

/// Where the validation images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Validation {
    Folder(PathBuf),
    /// Hold out this fraction of each class of the training data (stratified, seeded).
    Split(f64),
}

impl Default for Validation {
    fn default() -> Self {
        Validation::Split(0.2)
    }
}

/// The strategy and its own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Probe {
        /// Inverse regularisation strength; chosen by cross-validation when `None`.
        c: Option<f64>,
        folds: usize,
    },
    Freeze {
        training: Training,
        augment: bool,
        /// Last frozen stage, by name; `None` freezes the whole backbone.
        until: Option<String>,
    },
    /// Everything trainable: first `head_epochs` with the backbone frozen (the new head
    /// learns before its gradients reach pretrained layers), then `training.epochs` with
    /// every layer training at `unfrozen_lr_scale` × the learning rate.
    Finetune {
        training: Training,
        augment: bool,
        head_epochs: usize,
        unfrozen_lr_scale: f64,
        /// Progressive resizing: the first unfrozen epoch trains on crops this size, rising
        /// to the model's size by the last (`None`: the model's size throughout).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_size: Option<usize>,
    },
}

/// The three strategies by name, as manifests and summaries record them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StrategyKind {
    Probe,
    Freeze,
    Finetune,
}

impl StrategyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Probe => "probe",
            StrategyKind::Freeze => "freeze",
            StrategyKind::Finetune => "finetune",
        }
    }
}

impl std::fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Strategy {
    /// A probe with C chosen by 5-fold cross-validation.
    pub fn probe() -> Self {
        Strategy::Probe { c: None, folds: 5 }
    }

    /// The whole backbone frozen, the head trained on augmented crops.
    pub fn freeze() -> Self {
        Strategy::Freeze {
            training: Training::default(),
            augment: true,
            until: None,
        }
    }

    /// One head-only epoch, then three with every layer, earlier stages slower, on crops
    /// rising from 128 pixels to the model's size (as accurate on hymenoptera as five
    /// epochs at full size, in half their time: BENCHMARKS.md).
    pub fn finetune() -> Self {
        Strategy::Finetune {
            training: Training {
                epochs: 3,
                stage_lr_ratio: 0.1,
                ..Training::default()
            },
            augment: true,
            head_epochs: 1,
            unfrozen_lr_scale: 1.0,
            start_size: Some(128),
        }
    }

    pub fn kind(&self) -> StrategyKind {
        match self {
            Strategy::Probe { .. } => StrategyKind::Probe,
            Strategy::Freeze { .. } => StrategyKind::Freeze,
            Strategy::Finetune { .. } => StrategyKind::Finetune,
        }
    }

    /// The gradient settings, for freeze and finetune.
    pub fn training(&self) -> Option<&Training> {
        match self {
            Strategy::Probe { .. } => None,
            Strategy::Freeze { training, .. } | Strategy::Finetune { training, .. } => {
                Some(training)
            }
        }
    }

    pub fn validate(&self) -> Result<(), InvalidOption> {
        match self {
            Strategy::Probe { c, folds } => {
                check(*folds >= 2, "folds", "at least 2", folds)?;
                let c = c.unwrap_or(1.0);
                check(c > 0.0 && c.is_finite(), "c", "a positive number", c)
            }
            Strategy::Freeze { training, .. } => training.validate(),
            Strategy::Finetune {
                training,
                unfrozen_lr_scale,
                start_size,
                ..
            } => {
                training.validate()?;
                if let Some(s) = start_size {
                    check(*s >= 32, "start_size", "at least 32 pixels", s)?;
                }
                check(
                    *unfrozen_lr_scale > 0.0 && unfrozen_lr_scale.is_finite(),
                    "unfrozen_lr_scale",
                    "a positive number",
                    unfrozen_lr_scale,
                )
            }
        }
    }
}

/// Everything a fit needs.
#[derive(Debug, Clone)]
pub struct FitOptions {
    pub spec: ModelSpec,
    /// The pretrained weights: a file, a SavedModel folder or a TensorFlow checkpoint prefix.
    pub weights: PathBuf,
    /// Training images: class sub-folders, or a CSV of `path,label`.
    pub data: PathBuf,
    pub val: Validation,
    /// The bundle folder to create; gradient runs checkpoint to `<out>.checkpoint`.
    pub out: PathBuf,
    pub strategy: Strategy,
    /// Seed of the split and the folds (the strategy's training has its own).
    pub seed: u64,
    /// Images per forward pass of the frozen part.
    pub batch_size: usize,
    /// Continue the interrupted run saved in `<out>.checkpoint`.
    pub resume: bool,
    /// Images over this size are skipped (from their header, before decoding).
    pub limits: crate::data::Limits,
}

impl FitOptions {
    /// A probe of `spec` with the command line's defaults.
    pub fn new(
        spec: ModelSpec,
        weights: impl Into<PathBuf>,
        data: impl Into<PathBuf>,
        out: impl Into<PathBuf>,
    ) -> Self {
        Self {
            spec,
            weights: weights.into(),
            data: data.into(),
            val: Validation::default(),
            out: out.into(),
            strategy: Strategy::probe(),
            seed: 0,
            batch_size: 32,
            resume: false,
            limits: crate::data::Limits::default(),
        }
    }

    pub fn validate(&self) -> Result<(), InvalidOption> {
        self.strategy.validate()?;
        check(
            self.batch_size >= 1,
            "batch_size",
            "at least 1",
            self.batch_size,
        )?;
        if let Validation::Split(f) = self.val {
            check(f > 0.0 && f < 1.0, "val_split", "between 0 and 1", f)?;
        }
        self.limits.validate()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_are_checked() {
        for s in [Strategy::probe(), Strategy::freeze(), Strategy::finetune()] {
            assert_eq!(s.validate(), Ok(()));
        }
        let bad = Training {
            label_smoothing: 1.0,
            ..Training::default()
        };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.name, "label_smoothing");
        assert_eq!(e.to_string(), "label_smoothing must be in [0, 1), got 1");
        let none = Training {
            epochs: 0,
            ..Training::default()
        };
        assert_eq!(none.validate().unwrap_err().name, "epochs");
        let folds = Strategy::Probe { c: None, folds: 1 };
        assert_eq!(folds.validate().unwrap_err().name, "folds");
    }
}
