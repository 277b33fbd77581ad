//! Strict binding of a weights file's tensors to a model's parameters, by name.
//!
//! Building a model asks this loader for each parameter by its origin-framework name and
//! shape. Every problem (missing, wrong shape, left over) is collected rather than failing
//! at the first, so the user gets one report that says what the file really is.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;

use burn::prelude::*;
use serde::Serialize;

use crate::weights::Weights;

/// What did not match between a weights file and an architecture.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LoadReport {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, expected shape, shape in the file)
    pub shape_mismatches: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl LoadReport {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shape_mismatches.is_empty()
    }

    /// Parameters that were found with the right shape, out of those the model asked for.
    pub fn matched_fraction(&self, asked: usize) -> f64 {
        if asked == 0 {
            return 0.0;
        }
        let bad = self.missing.len() + self.shape_mismatches.len();
        (asked.saturating_sub(bad)) as f64 / asked as f64
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list(f: &mut fmt::Formatter<'_>, what: &str, items: &[String]) -> fmt::Result {
            if items.is_empty() {
                return Ok(());
            }
            let shown: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
            let more = if items.len() > 5 {
                format!(" and {} more", items.len() - 5)
            } else {
                String::new()
            };
            write!(f, " {} {what}: {}{more};", items.len(), shown.join(", "))
        }
        list(f, "missing", &self.missing)?;
        list(f, "unexpected", &self.unexpected)?;
        let shapes: Vec<String> = self
            .shape_mismatches
            .iter()
            .map(|(n, want, got)| format!("{n} (model {want:?}, file {got:?})"))
            .collect();
        list(f, "with the wrong shape", &shapes)
    }
}

/// True when a tensor stored with shape `file` holds the values of one of shape `model` in
/// the same row-major order: the shapes agree once unit dimensions are dropped. Keras files
/// need this: a depthwise kernel Keras 3 saved as a plain `kernel` reads as (1, C, kh, kw)
/// for PyTorch's (C, 1, kh, kw); a Dense run as a 1x1 convolution (VGG's fc1) is (out, in)
/// for (out, in, 1, 1), and a 1x1-convolution classifier (MobileNet's `conv_preds`) the
/// reverse.
pub fn same_layout(file: &[usize], model: &[usize]) -> bool {
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    file == model || squeeze(file) == squeeze(model)
}

/// Hands out parameters by name and records what did not fit.
pub struct WeightLoader<'a> {
    weights: &'a Weights,
    device: Device,
    used: RefCell<BTreeSet<String>>,
    report: RefCell<LoadReport>,
    asked: RefCell<usize>,
    /// Shape checking only: hand out 1-element placeholders instead of copying data.
    dry: bool,
    numel: RefCell<usize>,
    frozen: RefCell<usize>,
    /// Architecture name → the file's name, for a classifier saved under another name.
    aliases: RefCell<std::collections::BTreeMap<String, String>>,
}

impl<'a> WeightLoader<'a> {
    pub fn new(weights: &'a Weights, device: &Device) -> Self {
        Self {
            weights,
            device: device.clone(),
            used: RefCell::default(),
            report: RefCell::default(),
            asked: RefCell::new(0),
            dry: false,
            numel: RefCell::new(0),
            frozen: RefCell::new(0),
            aliases: RefCell::default(),
        }
    }

    /// A loader that checks names and shapes and counts parameters without copying any data:
    /// the network it builds is a skeleton, good for reports only.
    pub fn dry_run(weights: &'a Weights, device: &Device) -> Self {
        Self {
            dry: true,
            ..Self::new(weights, device)
        }
    }

    /// Values in all the parameters asked for so far.
    pub fn parameter_count(&self) -> usize {
        *self.numel.borrow()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The file folded every BatchNorm into the convolution before it.
    pub fn batchnorm_folded(&self) -> bool {
        self.weights.batchnorm_folded
    }

    /// The file's name for the architecture's tensor `name`.
    fn resolve(&self, name: &str) -> String {
        self.aliases
            .borrow()
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// True if the file holds a tensor of that name (for optional parts such as a classifier).
    pub fn has(&self, name: &str) -> bool {
        self.weights.get(&self.resolve(name)).is_some()
    }

    /// Shape of a tensor in the file, if present.
    pub fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.weights
            .get(&self.resolve(name))
            .map(|t| t.shape.clone())
    }

    /// A transfer-learned model keeps its new classifier under a name of its own (Keras'
    /// `dense` after a `MobileNetV2` backbone, PyTorch's `fc = nn.Sequential(Linear, ReLU,
    /// Dropout, Linear)` as `fc.0` and `fc.3`, or deeper: `Linear, ReLU, Linear, ReLU,
    /// Linear`). When, once the backbone is loaded, the only tensors left are dense layers
    /// that chain one way from `din` features (each layer's input the previous one's output,
    /// whatever their names), the last is taken as the classifier `prefix`. Returns `None`
    /// when they are not, else the hidden layers' file prefixes and widths, in order.
    pub fn adopt_classifier(&self, prefix: &str, din: usize) -> Option<Vec<(String, usize)>> {
        let used = self.used.borrow();
        let left: Vec<&String> = self
            .weights
            .tensors
            .keys()
            .filter(|k| !used.contains(*k) && !k.ends_with("num_batches_tracked"))
            .collect();
        // Dense layers: (file prefix, in, out), from a `.weight` and `.bias` pair each.
        let mut layers = Vec::new();
        for k in &left {
            let Some(layer) = k.strip_suffix(".weight") else {
                continue;
            };
            let (w, Some(bias)) = (
                &self.weights.tensors[*k],
                self.weights.tensors.get(&format!("{layer}.bias")),
            ) else {
                return None;
            };
            // A dense layer, or one held as a 1x1 convolution (Keras' `Logits` conv):
            // [out, in] or [out, in, 1, 1].
            if w.shape.len() < 2 || w.shape[2..].iter().any(|&d| d != 1) {
                return None;
            }
            let (out, inp) = (w.shape[0], w.shape[1]);
            if bias.shape != [out] {
                return None;
            }
            layers.push((layer.to_owned(), inp, out));
        }
        if layers.is_empty() || left.len() != 2 * layers.len() {
            return None;
        }
        // The chain from `din`: at each width exactly one layer takes it, and every layer
        // is taken once.
        let mut chain = Vec::with_capacity(layers.len());
        let mut width = din;
        while chain.len() < layers.len() {
            let mut next = layers.iter().filter(|(_, i, _)| *i == width);
            let (Some(layer), None) = (next.next(), next.next()) else {
                return None;
            };
            if chain.iter().any(|(p, _)| p == &layer.0) {
                return None;
            }
            width = layer.2;
            chain.push((layer.0.clone(), layer.2));
        }
        let (out_layer, _) = chain.pop()?;
        let mut aliases = self.aliases.borrow_mut();
        aliases.insert(format!("{prefix}.weight"), format!("{out_layer}.weight"));
        aliases.insert(format!("{prefix}.bias"), format!("{out_layer}.bias"));
        Some(chain)
    }

    /// Reads the architecture's tensor `name` from the file's `file_name` (a file that names
    /// it as an older release of the origin did).
    pub fn alias(&self, name: &str, file_name: &str) {
        self.aliases
            .borrow_mut()
            .insert(name.to_owned(), file_name.to_owned());
    }

    /// The file the tensors come from.
    pub fn weights(&self) -> &'a Weights {
        self.weights
    }

    /// Whether this loader only checks names and shapes ([`dry_run`](Self::dry_run)).
    pub fn is_dry_run(&self) -> bool {
        self.dry
    }

    /// Checks that the file holds `name` with `shape` (of any rank) without loading it: what
    /// a dry run asks of an architecture that builds its parameters elsewhere. Counted as
    /// trainable (`Some(true)`) or not (`Some(false)`), or not at all (`None`: no variable
    /// of the origin's, such as a BatchNorm's implicit scale).
    pub fn check_shape(&self, name: &str, shape: &[usize], trainable: Option<bool>) {
        if let Some(trainable) = trainable {
            self.count(shape, trainable);
        }
        self.check_resolved(&self.resolve(name), shape);
    }

    /// Counts `n` more values that are not trained (a Keras Normalization's sample count).
    pub fn count_frozen(&self, n: usize) {
        *self.frozen.borrow_mut() += n;
    }

    /// Values in the non-trainable state asked for so far (BatchNorm's statistics).
    pub fn frozen_count(&self) -> usize {
        *self.frozen.borrow()
    }

    fn count(&self, shape: &[usize], trainable: bool) {
        let n = shape.iter().product::<usize>();
        *if trainable { &self.numel } else { &self.frozen }.borrow_mut() += n;
    }

    fn check_resolved(&self, name: &str, shape: &[usize]) {
        *self.asked.borrow_mut() += 1;
        match self.weights.get(name) {
            None => self.report.borrow_mut().missing.push(name.to_owned()),
            Some(t) => {
                self.used.borrow_mut().insert(name.to_owned());
                if !same_layout(&t.shape, shape) {
                    self.report.borrow_mut().shape_mismatches.push((
                        name.to_owned(),
                        shape.to_vec(),
                        t.shape.clone(),
                    ));
                }
            }
        }
    }

    /// The parameter `name` with the given shape; zeros (and a report entry) if absent or misshapen.
    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Tensor<D> {
        self.load(name, shape, true)
    }

    /// Like [`tensor`](Self::tensor) for state that is not a trainable parameter (BatchNorm's
    /// running statistics): loaded the same way, counted apart.
    pub fn buffer<const D: usize>(&self, name: &str, shape: [usize; D]) -> Tensor<D> {
        self.load(name, shape, false)
    }

    fn load<const D: usize>(&self, name: &str, shape: [usize; D], trainable: bool) -> Tensor<D> {
        self.count(&shape, trainable);
        let name = &self.resolve(name);
        if self.dry {
            self.check_resolved(name, &shape);
            return Tensor::zeros([1; D], &self.device);
        }
        *self.asked.borrow_mut() += 1;
        match self.weights.get(name) {
            None => self.report.borrow_mut().missing.push(name.to_owned()),
            Some(t) if !same_layout(&t.shape, &shape) => {
                self.used.borrow_mut().insert(name.to_owned());
                self.report.borrow_mut().shape_mismatches.push((
                    name.to_owned(),
                    shape.to_vec(),
                    t.shape.clone(),
                ))
            }
            Some(t) => {
                self.used.borrow_mut().insert(name.to_owned());
                return Tensor::from_data(TensorData::new(t.data.clone(), shape), &self.device);
            }
        }
        Tensor::zeros(shape, &self.device)
    }

    /// Records a part of a graph that could not be built (listed with the missing tensors,
    /// so the load fails with the reason).
    pub fn report_broken(&self, part: &str, why: &str) {
        self.report
            .borrow_mut()
            .missing
            .push(format!("{part} (cannot be built: {why})"));
    }

    /// Marks a tensor the architecture knows but does not need (e.g. BatchNorm's
    /// `num_batches_tracked`) as consumed.
    pub fn skip(&self, name: &str) {
        if self.has(name) {
            self.used.borrow_mut().insert(name.to_owned());
        }
    }

    /// Ends loading: the report of everything that did not match, and how many parameters were asked for.
    pub fn finish(self) -> (LoadReport, usize) {
        let used = self.used.into_inner();
        let mut report = self.report.into_inner();
        report.unexpected = self
            .weights
            .tensors
            .keys()
            .filter(|k| !used.contains(*k) && !k.ends_with("num_batches_tracked"))
            .cloned()
            .collect();
        (report, self.asked.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::same_layout;

    #[test]
    fn shapes_with_the_same_row_major_order() {
        assert!(same_layout(&[1, 8, 3, 3], &[8, 1, 3, 3]));
        assert!(same_layout(&[32, 64], &[32, 64, 1, 1]));
        assert!(same_layout(&[5, 7, 1, 1], &[5, 7]));
        assert!(
            !same_layout(&[64, 32], &[32, 64, 1, 1]),
            "a transpose is not a reshape"
        );
        assert!(!same_layout(&[8, 3, 3, 3], &[16, 3, 3, 3]));
    }
}
