//! A trained model, self-contained in a folder: weights in the origin framework's naming
//! (safetensors, loadable by the same zoo code), and a JSON manifest saying what it is,
//! how it was made and how well it did.
//!
//! ```text
//! bundle/manifest.json        architecture, preprocessing, classes, strategy, metrics…
//! bundle/model.safetensors    every tensor, the classifier sized to the classes
//! bundle/metrics.json         the training history
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::DataSummary;
use crate::outputs::write_atomic;
use crate::strategy::{FitMetrics, Hyperparameters, StrategyKind};
use crate::weights::{WeightTensor, Weights, WeightsFormat};
use crate::zoo::{Model, ModelSpec};

/// Bumped whenever a bundle written by this version could not be read by an older one.
pub const FORMAT: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const METRICS: &str = "metrics.json";

/// Where the pretrained weights came from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WeightsSource {
    pub path: String,
    pub format: WeightsFormat,
    pub sha256: String,
}

impl WeightsSource {
    /// Describes the file `weights` were loaded from (its hash was taken while reading it).
    pub fn of(path: &Path, weights: &Weights) -> Self {
        Self {
            path: path.display().to_string(),
            format: weights.format,
            sha256: weights.sha256.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub retrain_version: String,
    pub model: ModelSpec,
    pub classes: Vec<String>,
    pub strategy: StrategyKind,
    pub hyperparameters: Hyperparameters,
    pub seed: u64,
    pub pretrained: WeightsSource,
    pub train: DataSummary,
    pub val: Option<DataSummary>,
    pub metrics: FitMetrics,
    pub created_unix: u64,
}

/// A loaded bundle: its manifest and the network with the trained classifier.
pub struct Bundle {
    pub manifest: Manifest,
    pub model: Model,
}

impl Bundle {
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let mpath = dir.join(MANIFEST);
        if !mpath.is_file() {
            bail!(
                "{} is not a retrain bundle (no {MANIFEST}); give the folder `retrain fit --out` wrote",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&mpath)
            .with_context(|| format!("cannot read {}", mpath.display()))?;
        let raw: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", mpath.display()))?;
        let format = raw.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
        if format != FORMAT as u64 {
            bail!(
                "bundle {} has format {format} (written by retrain {}); this retrain {} reads format {FORMAT}: retrain it or use a matching retrain",
                dir.display(),
                raw.get("retrain_version")
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown"),
                env!("CARGO_PKG_VERSION")
            );
        }
        let manifest: Manifest = serde_json::from_value(raw)
            .with_context(|| format!("{} is not a valid bundle manifest", mpath.display()))?;
        let weights = Weights::load(&dir.join(WEIGHTS))
            .with_context(|| format!("cannot load bundle weights in {}", dir.display()))?;
        let model = Model::from_spec(&manifest.model, &weights, device)
            .with_context(|| format!("bundle {} is inconsistent", dir.display()))?;
        let classes = model
            .network
            .classifier
            .as_ref()
            .map_or(0, |c| c.num_classes());
        if classes != manifest.classes.len() {
            bail!(
                "bundle {}: its classifier has {classes} outputs but the manifest names {} classes",
                dir.display(),
                manifest.classes.len()
            );
        }
        Ok(Self { manifest, model })
    }
}

/// Writes a bundle folder: everything goes into a fresh temporary folder beside `dir`,
/// which is renamed into place only when complete. An existing `dir` is never touched.
pub fn write(
    dir: &Path,
    manifest: &Manifest,
    tensors: &BTreeMap<String, WeightTensor>,
    metrics: &serde_json::Value,
    extra: &[(&str, Vec<u8>)],
) -> Result<()> {
    if dir.exists() {
        bail!(
            "{} already exists; choose another --out or remove it first",
            dir.display()
        );
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !parent.is_dir() {
        bail!(
            "cannot write {}: folder {} does not exist",
            dir.display(),
            parent.display()
        );
    }
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755));
    let tmp = builder
        .prefix(".retrain-bundle-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a folder in {}", parent.display()))?;
    let floats: Vec<(String, Vec<usize>, &[f32])> = tensors
        .iter()
        .filter(|(_, t)| t.dtype.is_float())
        .map(|(k, t)| (k.clone(), t.shape.clone(), t.data.as_slice()))
        .collect();
    let meta = HashMap::from([("format".to_owned(), "retrain-bundle".to_owned())]);
    let bytes = crate::weights::write_safetensors(&floats, Some(meta))?;
    write_atomic(&tmp.path().join(WEIGHTS), |w| Ok(w.write_all(&bytes)?))?;
    let m = serde_json::to_vec_pretty(manifest)?;
    write_atomic(&tmp.path().join(MANIFEST), |w| Ok(w.write_all(&m)?))?;
    let h = serde_json::to_vec_pretty(metrics)?;
    write_atomic(&tmp.path().join(METRICS), |w| Ok(w.write_all(&h)?))?;
    for (name, bytes) in extra {
        write_atomic(&tmp.path().join(name), |w| Ok(w.write_all(bytes)?))?;
    }
    let done = tmp.keep();
    std::fs::rename(&done, dir).with_context(|| {
        let _ = std::fs::remove_dir_all(&done);
        format!("cannot move the finished bundle to {}", dir.display())
    })?;
    Ok(())
}

/// The pretrained state dict with its classifier replaced by `weight` (classes × dim) and
/// `bias`, under the architecture's classifier name.
pub fn replace_classifier(
    pretrained: &Weights,
    spec: &ModelSpec,
    weight: Vec<f32>,
    bias: Vec<f32>,
) -> BTreeMap<String, WeightTensor> {
    let (hidden, out) = spec.config.classifier_prefixes();
    let mut tensors: BTreeMap<String, WeightTensor> = pretrained
        .tensors
        .iter()
        .filter(|(k, _)| {
            !k.starts_with(&format!("{out}."))
                && hidden.is_none_or(|h| !k.starts_with(&format!("{h}.")))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let classes = bias.len();
    let dim = weight.len() / classes.max(1);
    let float = |shape: Vec<usize>, data: Vec<f32>| WeightTensor {
        dtype: crate::weights::DType::F32,
        shape,
        data,
        strided: false,
    };
    tensors.insert(format!("{out}.weight"), float(vec![classes, dim], weight));
    tensors.insert(format!("{out}.bias"), float(vec![classes], bias));
    tensors
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Manifests as retrain wrote them before its records were typed (built with
    /// `serde_json::json!`): they must still read.
    #[test]
    fn manifests_of_earlier_versions_read() {
        let common = r#""format": 1, "retrain_version": "0.1.0",
            "model": {"name": "resnet18", "config": {"family": "resnet", "bottleneck": false,
              "layers": [2, 2, 2, 2], "width": 64},
              "preprocess": {"resize": 256, "crop": 224, "interpolation": "bilinear",
              "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}},
            "classes": ["ants", "bees"], "seed": 0,
            "pretrained": {"path": "w.pth", "format": "torch-zip", "sha256": "ab"},
            "train": {"source": "t", "images": 4, "per_class": {"ants": 2, "bees": 2}, "fingerprint": "f"},
            "val": null, "created_unix": 1,
            "metrics": {"train_accuracy": 1.0, "val": {"accuracy": 0.5, "images": 2, "loss": 0.7,
              "confusion": [[1, 0], [1, 0]], "per_class": []}}"#;
        let probe = format!(
            r#"{{{common}, "strategy": "probe", "hyperparameters": {{"c": 0.1,
            "c_chosen_by": "cross-validation", "cv_folds": 5,
            "cv": [{{"c": 0.1, "mean_accuracy": 0.9, "fold_accuracy": [0.9]}}],
            "solver": "L-BFGS (strong Wolfe), standardised features"}}}}"#
        );
        let m: Manifest = serde_json::from_str(&probe).unwrap();
        assert_eq!(m.strategy, StrategyKind::Probe);
        assert!(matches!(m.hyperparameters, Hyperparameters::Probe { c, .. } if c == 0.1));
        let finetune = format!(
            r#"{{{common}, "strategy": "finetune", "hyperparameters": {{
            "training": {{"epochs": 5, "lr": 0.003, "optimizer": {{"name": "sgd", "momentum": 0.9}},
              "warmup_epochs": 0.0, "label_smoothing": 0.0, "batch_size": 16, "seed": 0,
              "balanced": false, "patience": 0, "schedule": "cosine", "stage_lr_ratio": 0.1,
              "color_jitter": 0.0}},
            "augment": "random resized crop + horizontal flip",
            "phases": [{{"frozen_through": "layer4", "epochs": 1, "lr": 0.003, "stage_lr_factors": []}},
                       {{"frozen_through": null, "epochs": 5, "lr": 0.0015,
                         "stage_lr_factors": [0.1, 0.17, 0.31, 0.56, 1.0]}}],
            "stopped_early_after_epoch": null}}}}"#
        );
        let m: Manifest = serde_json::from_str(&finetune).unwrap();
        assert_eq!(m.strategy, StrategyKind::Finetune);
        let Hyperparameters::Gradient {
            phases, training, ..
        } = &m.hyperparameters
        else {
            panic!("a gradient run's hyper-parameters: {:?}", m.hyperparameters);
        };
        assert_eq!(phases.len(), 2);
        assert_eq!(training.stage_lr_ratio, 0.1);
        // And what this version writes reads back the same.
        let again: Manifest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(again, m);
    }
}
