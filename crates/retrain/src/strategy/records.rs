//! What a fit records: the history of a gradient run, the hyper-parameters and metrics a
//! bundle's manifest keeps, the identity a resumed run must match, and the summary a fit
//! returns. Each is a typed record; their JSON is the bundle and checkpoint format.

use serde::{Deserialize, Serialize};

use super::options::{Strategy, StrategyKind, Training};
use super::probe::CvScore;
use crate::metrics::Report;
use crate::zoo::ModelSpec;

/// One finished epoch of a gradient run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Counted from 1, over all phases.
    pub epoch: usize,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// The last frozen stage of this epoch's phase (`None`: nothing frozen).
    pub frozen_through: Option<String>,
    /// The base learning rate of the epoch's last step.
    pub lr_end: f64,
    pub seconds: f64,
    /// The side of this epoch's training crops, when not the model's input size
    /// (progressive resizing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_crop: Option<usize>,
}

/// One phase of a gradient run as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub frozen_through: Option<String>,
    pub epochs: usize,
    pub lr: f64,
    /// Learning-rate factor of each trainable stage, first to last.
    #[serde(default)]
    pub stage_lr_factors: Vec<f64>,
    /// Progressive resizing: the first epoch's crop side, rising to the model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_size: Option<usize>,
}

/// How C was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChosenBy {
    #[serde(rename = "given")]
    Given,
    #[serde(rename = "cross-validation")]
    CrossValidation,
}

/// The settings a strategy ran with, and what it chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Hyperparameters {
    Probe {
        c: f64,
        c_chosen_by: ChosenBy,
        cv_folds: usize,
        /// Mean accuracy of each C tried, best first (empty when C was given).
        cv: Vec<CvScore>,
        solver: String,
    },
    Gradient {
        training: Training,
        /// The augmentation, in words.
        augment: String,
        phases: Vec<PhaseRecord>,
        /// The epoch (counted from 1) after which early stopping ended the run.
        stopped_early_after_epoch: Option<usize>,
    },
}

/// How well the fitted model did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitMetrics {
    pub train_accuracy: f64,
    pub val: Report,
}

/// A bundle's `metrics.json`: the per-epoch history and the final figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsFile {
    pub strategy: StrategyKind,
    pub epochs: Vec<EpochRecord>,
    #[serde(rename = "final")]
    pub final_metrics: FitMetrics,
}

/// What a gradient run is: a checkpoint resumes only the same run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub model: ModelSpec,
    pub pretrained_sha256: String,
    /// Fingerprints of the training and validation sets.
    pub train: String,
    pub val: String,
    pub strategy: Strategy,
    pub seed: u64,
    pub batch_size: usize,
}

impl RunIdentity {
    /// The fields whose values differ from `other`'s, by name. Read from the serialised
    /// form, so a field added to the identity is compared without being listed here.
    pub fn differences(&self, other: &RunIdentity) -> Vec<String> {
        let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
            (serde_json::to_value(self), serde_json::to_value(other))
        else {
            unreachable!("a RunIdentity serialises to a JSON object");
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// What a fit reports back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitSummary {
    pub bundle: String,
    pub strategy: StrategyKind,
    pub classes: Vec<String>,
    pub train_images: usize,
    pub val_images: usize,
    pub train_accuracy: f64,
    pub val_accuracy: f64,
    pub hyperparameters: Hyperparameters,
    pub seconds: f64,
}
