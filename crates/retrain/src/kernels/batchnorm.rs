//! BatchNorm in training mode (statistics of the batch) on contiguous NCHW `f32` slices.
//!
//! burn's default `batch_norm_train` and its backward are tensor compositions: each
//! reduction transposes the activation to channels-first (a full copy), and forward and
//! backward take about ten passes over it. Here the statistics are one pass, the output
//! one, and the backward two (the two per-channel sums, then the input gradient), in
//! parallel over channels or planes. Sums are taken in `f64`.

use rayon::prelude::*;

use super::simd;

/// An activation `[n, c, plane]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl Shape {
    fn count(&self) -> f64 {
        (self.batch * self.plane) as f64
    }

    /// The `plane` values of channel `c` of sample `n`.
    fn plane_of<'a>(&self, v: &'a [f32], n: usize, c: usize) -> &'a [f32] {
        &v[(n * self.channels + c) * self.plane..][..self.plane]
    }
}

/// Mean and biased variance of every channel: `[mean₀ … mean_c-1, var₀ … var_c-1]`, as
/// burn's `batch_norm_train` returns them.
pub fn stats(s: &Shape, x: &[f32]) -> Vec<f32> {
    let per: Vec<(f32, f32)> = (0..s.channels)
        .into_par_iter()
        .map(|c| {
            let (mut sum, mut sq) = (0f64, 0f64);
            for n in 0..s.batch {
                let (a, b) = simd::vectorized(
                    #[inline(always)]
                    || sum_and_squares(s.plane_of(x, n, c)),
                );
                sum += a;
                sq += b;
            }
            let mean = sum / s.count();
            (
                (mean) as f32,
                (sq / s.count() - mean * mean).max(0.0) as f32,
            )
        })
        .collect();
    per.iter()
        .map(|p| p.0)
        .chain(per.iter().map(|p| p.1))
        .collect()
}

/// Per channel `gamma / sqrt(var + eps)` and `beta - mean · that`: the output is
/// `x · scale + shift`.
fn affine(gamma: &[f32], beta: &[f32], stats: &[f32], eps: f64) -> Vec<(f32, f32)> {
    let c = gamma.len();
    (0..c)
        .map(|i| {
            let inv_std = 1.0 / (f64::from(stats[c + i]) + eps).sqrt();
            let scale = f64::from(gamma[i]) * inv_std;
            (
                scale as f32,
                (f64::from(beta[i]) - f64::from(stats[i]) * scale) as f32,
            )
        })
        .collect()
}

/// The normalised, scaled and shifted output.
pub fn forward(
    s: &Shape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &[f32],
    eps: f64,
) -> Vec<f32> {
    let ab = affine(gamma, beta, stats, eps);
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(s.plane)
        .zip(x.par_chunks(s.plane))
        .enumerate()
        .for_each(|(p, (y, x))| {
            let (a, b) = ab[p % s.channels];
            simd::vectorized(
                #[inline(always)]
                || {
                    for (y, &x) in y.iter_mut().zip(x) {
                        *y = x * a + b;
                    }
                },
            )
        });
    y
}

/// The gradients of gamma and beta, `[Σ dy·x̂ per channel …, Σ dy per channel …]`, where
/// `x̂ = (x - mean) / sqrt(var + eps)`.
pub fn param_grads(s: &Shape, x: &[f32], dy: &[f32], stats: &[f32], eps: f64) -> Vec<f32> {
    let c = s.channels;
    let per: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|i| {
            let (mut sdy, mut sdyx) = (0f64, 0f64);
            for n in 0..s.batch {
                let g = s.plane_of(dy, n, i);
                let (a, b) = simd::vectorized(
                    #[inline(always)]
                    || (sum(g), dot(g, s.plane_of(x, n, i))),
                );
                sdy += a;
                sdyx += b;
            }
            let mean = f64::from(stats[i]);
            let inv_std = 1.0 / (f64::from(stats[c + i]) + eps).sqrt();
            (((sdyx - mean * sdy) * inv_std) as f32, sdy as f32)
        })
        .collect();
    per.iter()
        .map(|p| p.0)
        .chain(per.iter().map(|p| p.1))
        .collect()
}

/// The input gradient, `gamma / sqrt(var + eps) · (dy - mean(dy) - x̂ · mean(dy · x̂))`,
/// from the sums of [`param_grads`]; per channel it is `dy · a + x · b + k`.
pub fn input_grad(
    s: &Shape,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    stats: &[f32],
    sums: &[f32],
    eps: f64,
) -> Vec<f32> {
    let c = s.channels;
    let m = s.count();
    let coef: Vec<(f32, f32, f32)> = (0..c)
        .map(|i| {
            let inv_std = 1.0 / (f64::from(stats[c + i]) + eps).sqrt();
            let a = f64::from(gamma[i]) * inv_std;
            let mean_dyx = f64::from(sums[i]) / m;
            let mean_dy = f64::from(sums[c + i]) / m;
            let b = -a * inv_std * mean_dyx;
            let k = -a * mean_dy - b * f64::from(stats[i]);
            (a as f32, b as f32, k as f32)
        })
        .collect();
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(s.plane)
        .zip(x.par_chunks(s.plane).zip(dy.par_chunks(s.plane)))
        .enumerate()
        .for_each(|(p, (dx, (x, dy)))| {
            let (a, b, k) = coef[p % c];
            simd::vectorized(
                #[inline(always)]
                || {
                    for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                        *d = g * a + x * b + k;
                    }
                },
            )
        });
    dx
}

/// Σx and Σx² of a slice, in eight `f32` lanes per 1024 values, then `f64`.
#[inline(always)]
fn sum_and_squares(v: &[f32]) -> (f64, f64) {
    let (mut sum, mut sq) = (0f64, 0f64);
    for block in v.chunks(1024) {
        let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
        let chunks = block.chunks_exact(8);
        for &x in chunks.remainder() {
            sum += f64::from(x);
            sq += f64::from(x) * f64::from(x);
        }
        for x in chunks {
            for i in 0..8 {
                a[i] += x[i];
                b[i] += x[i] * x[i];
            }
        }
        sum += a.iter().map(|&v| f64::from(v)).sum::<f64>();
        sq += b.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    (sum, sq)
}

/// Σx of a slice, in eight `f32` lanes per 1024 values, then `f64`.
#[inline(always)]
fn sum(v: &[f32]) -> f64 {
    let mut total = 0f64;
    for block in v.chunks(1024) {
        let mut a = [0f32; 8];
        let chunks = block.chunks_exact(8);
        total += chunks
            .remainder()
            .iter()
            .map(|&x| f64::from(x))
            .sum::<f64>();
        for x in chunks {
            for i in 0..8 {
                a[i] += x[i];
            }
        }
        total += a.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    total
}

/// A dot product in eight `f32` lanes per 1024 values, blocks summed in `f64`.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.chunks(1024)
        .zip(b.chunks(1024))
        .map(|(a, b)| f64::from(super::depthwise::dot(a, b)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_and_gradients_equal_the_definition() {
        let s = Shape {
            batch: 3,
            channels: 4,
            plane: 37,
        };
        let mut r = crate::kernels::tests::Lcg(3);
        let len = 3 * 4 * 37;
        let x: Vec<f32> = r.values(len).iter().map(|v| 2.0 * v + 3.0).collect();
        let dy = r.values(len);
        let gamma = r.values(4);
        let beta = r.values(4);
        let eps = 1e-3;
        let st = stats(&s, &x);
        let y = forward(&s, &x, &gamma, &beta, &st, eps);
        let sums = param_grads(&s, &x, &dy, &st, eps);
        let dx = input_grad(&s, &x, &dy, &gamma, &st, &sums, eps);
        let m = 3.0 * 37.0;
        for c in 0..4 {
            let idx: Vec<usize> = (0..3)
                .flat_map(|n| ((n * 4 + c) * 37..(n * 4 + c + 1) * 37).collect::<Vec<_>>())
                .collect();
            let mean = idx.iter().map(|&i| f64::from(x[i])).sum::<f64>() / m;
            let var = idx
                .iter()
                .map(|&i| (f64::from(x[i]) - mean).powi(2))
                .sum::<f64>()
                / m;
            assert!(
                (f64::from(st[c]) - mean).abs() < 1e-5 && (f64::from(st[4 + c]) - var).abs() < 1e-5
            );
            let is = 1.0 / (var + eps).sqrt();
            let xh = |i: usize| (f64::from(x[i]) - mean) * is;
            let sdy: f64 = idx.iter().map(|&i| f64::from(dy[i])).sum();
            let sdyx: f64 = idx.iter().map(|&i| f64::from(dy[i]) * xh(i)).sum();
            assert!(
                (f64::from(sums[c]) - sdyx).abs() < 1e-4
                    && (f64::from(sums[4 + c]) - sdy).abs() < 1e-4
            );
            for &i in &idx {
                let want_y = xh(i) * f64::from(gamma[c]) + f64::from(beta[c]);
                assert!((f64::from(y[i]) - want_y).abs() < 1e-5, "y");
                let want_dx =
                    f64::from(gamma[c]) * is * (f64::from(dy[i]) - sdy / m - xh(i) * sdyx / m);
                assert!(
                    (f64::from(dx[i]) - want_dx).abs() < 1e-4,
                    "dx {} {}",
                    dx[i],
                    want_dx
                );
            }
        }
    }
}
