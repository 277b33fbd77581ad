//! Strategies for reusing a pretrained network on new classes, and the `fit` run that
//! applies one and writes a bundle.
//!
//! - probe: features once, multinomial logistic regression ([`probe`]).
//! - freeze: the backbone frozen through a stage, the rest and a new head trained by
//!   gradient descent, optionally on augmented crops ([`train`] over [`gradient`]).
//! - finetune: the head alone first, then every layer, earlier stages at lower rates.
//!
//! Gradient runs save a [`checkpoint`] after every epoch and can be resumed.

pub mod checkpoint;
pub mod early_stopping;
mod fit;
pub mod gradient;
pub mod options;
pub mod probe;
pub mod records;
pub mod schedule;
pub mod train;

pub use fit::{Fitted, fit, fit_with_weights, load_data, train_model, train_model_with_weights};
pub use options::{
    FitOptions, InvalidOption, Optimizer, Schedule, Strategy, StrategyKind, Training, Validation,
};
pub use records::{EpochRecord, FitMetrics, FitSummary, Hyperparameters, MetricsFile, RunIdentity};
