//! Linear probe: a multinomial logistic regression on frozen, cached features.
//!
//! The objective is scikit-learn's: `C · Σ cross-entropy + ½‖W‖²` (bias not penalised),
//! here divided by the number of samples, minimised with L-BFGS and a strong-Wolfe line
//! search (burn's, as PyTorch's). Features are standardised for the solve and the scaling
//! folded back into the weights, so the result is a plain linear layer on raw features.
//! `C` is chosen by stratified k-fold cross-validation on the training set unless given.

use burn::module::Param;
use burn::nn::Linear;
use burn::optim::{GradientsParams, LBFGSConfig, LineSearchFn};
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use serde::{Deserialize, Serialize};

use crate::rng::SplitMix64;

/// Features of `n` samples, row-major `n × dim`, with labels in `0..classes`.
pub struct FeatureSet<'a> {
    pub x: &'a [f32],
    pub dim: usize,
    pub y: &'a [usize],
    pub classes: usize,
}

impl FeatureSet<'_> {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }
}

/// A fitted linear classifier on raw features: `logits = x·Wᵀ + b`, W is `classes × dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearHead {
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub dim: usize,
    pub classes: usize,
}

impl LinearHead {
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(x.len() / self.dim * self.classes);
        for row in x.chunks(self.dim) {
            for c in 0..self.classes {
                let w = &self.weight[c * self.dim..(c + 1) * self.dim];
                out.push(self.bias[c] + w.iter().zip(row).map(|(a, b)| a * b).sum::<f32>());
            }
        }
        out
    }

    pub fn accuracy(&self, set: &FeatureSet) -> f64 {
        let logits = self.logits(set.x);
        let correct = logits
            .chunks(self.classes)
            .zip(set.y)
            .filter(|(row, y)| crate::metrics::argmax(row) == **y)
            .count();
        correct as f64 / set.len().max(1) as f64
    }
}

/// Cross-validation result for one value of C.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CvScore {
    pub c: f64,
    pub mean_accuracy: f64,
    pub fold_accuracy: Vec<f64>,
}

/// The C grid searched when none is given (scikit-learn's LogisticRegressionCV range, thinned).
pub const DEFAULT_CS: &[f64] = &[1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0];

/// Fits the logistic regression with inverse regularisation strength `c`.
pub fn fit(set: &FeatureSet, c: f64, device: &Device) -> LinearHead {
    // Standardise: the solve converges in far fewer iterations on unit-scale features.
    let scaling = Standardisation::of(set);
    let head = solve(set, &scaling.apply(set), c, &device.clone().autodiff());
    scaling.fold_into(&head, set.dim, set.classes)
}

/// Per-feature mean and standard deviation of a feature set.
struct Standardisation {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Standardisation {
    fn of(set: &FeatureSet) -> Self {
        let (n, d) = (set.len(), set.dim);
        let mut mean = vec![0f64; d];
        let mut var = vec![0f64; d];
        for row in set.x.chunks(d) {
            for (m, v) in mean.iter_mut().zip(row) {
                *m += *v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        for row in set.x.chunks(d) {
            for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (*v as f64 - m).powi(2);
            }
        }
        // A spread below what f32 resolves of the feature's mean (its last digits, which
        // differ between equally correct kernels) is not scaled up to unit size: the solve
        // would fit rounding noise, and the folded weights (W / s) would amplify it.
        let std = var
            .iter()
            .zip(&mean)
            .map(|(v, m)| (v / n as f64).sqrt().max(1e-6).max(1e-4 * m.abs()))
            .collect();
        Self { mean, std }
    }

    /// The standardised features, row-major like the set's.
    fn apply(&self, set: &FeatureSet) -> Vec<f32> {
        set.x
            .chunks(set.dim)
            .flat_map(|row| {
                row.iter()
                    .zip(&self.mean)
                    .zip(&self.std)
                    .map(|((v, m), s)| ((*v as f64 - m) / s) as f32)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// A head on raw features from one on standardised ones: W' = W / s, b' = b − W'·μ.
    fn fold_into(&self, head: &Linear, d: usize, k: usize) -> LinearHead {
        let w: Vec<f32> = head
            .weight
            .val()
            .inner()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let b: Vec<f32> = head
            .bias
            .as_ref()
            .map(|b| b.val().inner().into_data().try_into_vec::<f32>().unwrap())
            .unwrap_or_else(|| vec![0.0; k]);
        let mut weight = vec![0f32; k * d];
        let mut bias = vec![0f32; k];
        for c in 0..k {
            let mut shift = 0f64;
            for j in 0..d {
                // burn's Linear stores (in, out).
                let wj = w[j * k + c] as f64 / self.std[j];
                weight[c * d + j] = wj as f32;
                shift += wj * self.mean[j];
            }
            bias[c] = (b[c] as f64 - shift) as f32;
        }
        LinearHead {
            weight,
            bias,
            dim: d,
            classes: k,
        }
    }
}

/// Minimises `Σ cross-entropy / n + ‖W‖² / (2·C·n)` over a linear layer on the
/// standardised features `z`, with L-BFGS from zero.
fn solve(set: &FeatureSet, z: &[f32], c: f64, ad: &Device) -> Linear {
    let (n, d, k) = (set.len(), set.dim, set.classes);
    let onehot: Vec<f32> = set
        .y
        .iter()
        .flat_map(|&y| (0..k).map(move |c| (c == y) as u8 as f32))
        .collect();
    let x = Tensor::<2>::from_data(TensorData::new(z.to_vec(), [n, d]), ad);
    let t = Tensor::<2>::from_data(TensorData::new(onehot, [n, k]), ad);
    let head = Linear {
        weight: Param::from_tensor(Tensor::zeros([d, k], ad)),
        bias: Some(Param::from_tensor(Tensor::zeros([k], ad))),
    };
    let penalty = 1.0 / (2.0 * c * n as f64);
    let mut lbfgs = LBFGSConfig::new()
        .with_max_iter(500)
        .with_history_size(20)
        .with_tolerance_grad(1e-6)
        .with_tolerance_change(1e-10)
        .with_line_search_fn(LineSearchFn::StrongWolfe)
        .init();
    let (h, _) = lbfgs.step(1.0, head, |m: Linear| {
        let logits = m.forward(x.clone());
        let ce = -(log_softmax(logits, 1) * t.clone()).sum() / n as f64;
        let l2 = m.weight.val().powi_scalar(2).sum() * penalty;
        let loss = ce + l2;
        let value = loss.clone().into_scalar::<f64>();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        (value, grads)
    });
    h
}

/// Stratified `folds`-fold cross-validation of each C; returns the scores, best first by
/// mean accuracy (ties go to the stronger regularisation, the smaller C).
pub fn cross_validate(
    set: &FeatureSet,
    cs: &[f64],
    folds: usize,
    seed: u64,
    device: &Device,
) -> Vec<CvScore> {
    let assignment = stratified_folds(set.y, set.classes, folds, seed);
    let mut scores: Vec<CvScore> = cs
        .iter()
        .map(|&c| {
            let fold_accuracy = (0..folds)
                .map(|f| {
                    let (tr, va): (Vec<usize>, Vec<usize>) =
                        (0..set.len()).partition(|&i| assignment[i] != f);
                    let pick = |idx: &[usize]| -> (Vec<f32>, Vec<usize>) {
                        (
                            idx.iter()
                                .flat_map(|&i| {
                                    set.x[i * set.dim..(i + 1) * set.dim].iter().copied()
                                })
                                .collect(),
                            idx.iter().map(|&i| set.y[i]).collect(),
                        )
                    };
                    let (xt, yt) = pick(&tr);
                    let (xv, yv) = pick(&va);
                    let train = FeatureSet {
                        x: &xt,
                        dim: set.dim,
                        y: &yt,
                        classes: set.classes,
                    };
                    let val = FeatureSet {
                        x: &xv,
                        dim: set.dim,
                        y: &yv,
                        classes: set.classes,
                    };
                    fit(&train, c, device).accuracy(&val)
                })
                .collect::<Vec<_>>();
            CvScore {
                c,
                mean_accuracy: fold_accuracy.iter().sum::<f64>() / folds as f64,
                fold_accuracy,
            }
        })
        .collect();
    scores.sort_by(|a, b| {
        b.mean_accuracy
            .total_cmp(&a.mean_accuracy)
            .then(a.c.total_cmp(&b.c))
    });
    scores
}

/// Fold index of each sample: each class dealt round-robin over the folds after a seeded
/// shuffle, so every fold sees every class in proportion.
fn stratified_folds(y: &[usize], classes: usize, folds: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64(seed ^ 0xC2B2_AE3D_27D4_EB4F);
    let mut out = vec![0; y.len()];
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..y.len()).filter(|&i| y[i] == c).collect();
        rng.shuffle(&mut idx);
        for (r, i) in idx.into_iter().enumerate() {
            out[i] = r % folds;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian blobs: the probe separates them, and a tiny C shrinks the weights.
    #[test]
    fn separates_blobs_and_regularises() {
        let mut rng = SplitMix64(3);
        let mut u = || rng.uniform();
        let (n, d) = (80, 5);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..n {
            let c = i % 2;
            for j in 0..d {
                let centre = if j == 0 { [-2.0, 2.0][c] } else { 0.0 };
                // Box-Muller
                let g = (-2.0 * u().max(1e-12).ln()).sqrt() * (std::f64::consts::TAU * u()).cos();
                x.push((centre + g + 10.0) as f32); // offset: standardisation must undo it
            }
            y.push(c);
        }
        let set = FeatureSet {
            x: &x,
            dim: d,
            y: &y,
            classes: 2,
        };
        let device = Device::default();
        let strong = fit(&set, 1.0, &device);
        assert!(strong.accuracy(&set) > 0.9, "{}", strong.accuracy(&set));
        let weak = fit(&set, 1e-4, &device);
        let norm = |h: &LinearHead| h.weight.iter().map(|w| w * w).sum::<f32>();
        assert!(norm(&weak) < norm(&strong) / 10.0);
        let cv = cross_validate(&set, &[1e-4, 1.0], 4, 0, &device);
        assert_eq!(cv[0].c, 1.0);
        assert_eq!(cv[0].fold_accuracy.len(), 4);
    }

    #[test]
    fn folds_are_stratified() {
        let y: Vec<usize> = (0..30).map(|i| (i < 20) as usize).collect();
        let f = stratified_folds(&y, 2, 5, 1);
        for fold in 0..5 {
            let members: Vec<usize> = (0..30).filter(|&i| f[i] == fold).collect();
            assert_eq!(members.iter().filter(|&&i| y[i] == 1).count(), 4);
            assert_eq!(members.iter().filter(|&&i| y[i] == 0).count(), 2);
        }
    }
}
