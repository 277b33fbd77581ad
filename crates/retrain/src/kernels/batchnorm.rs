//! BatchNorm in training mode (statistics of the batch) on contiguous NCHW `f32` slices,
//! with the activation after it ([`Epilogue`]) in the same passes.
//!
//! burn's default `batch_norm_train` and its backward are tensor compositions: each
//! reduction transposes the activation to channels-first (a full copy), and forward and
//! backward take about ten passes over it. Here the statistics are one pass, the output
//! one, and the backward two (the two per-channel sums, then the input gradient), in
//! parallel over channels or planes. Sums are taken in `f64`. The activation's input (the
//! normalised value) is recomputed where the backward needs it rather than stored: one
//! activation-sized buffer and two passes fewer per layer than BatchNorm, then activation.

use rayon::prelude::*;

use super::{Epilogue, Pointwise, simd, written_once};

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

/// A BatchNorm layer's scale and shift, the batch's statistics (from [`stats`]) and the
/// layer's epsilon.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub stats: &'a [f32],
    pub eps: f64,
}

impl Params<'_> {
    /// `1 / sqrt(var + eps)` of channel `i`.
    fn inv_std(&self, i: usize) -> f64 {
        1.0 / (f64::from(self.stats[self.gamma.len() + i]) + self.eps).sqrt()
    }

    /// Per channel the mean, `gamma / sqrt(var + eps)` and beta: the normalised output is
    /// `(x - mean) · scale + beta` (centred first: `x · scale + shift` loses the output's
    /// digits to cancellation where the variance is small). The backward pass recomputes it
    /// from the same `f32` values, so the activation's derivative sees the forward's very
    /// input.
    fn affine(&self) -> Vec<Affine> {
        (0..self.gamma.len())
            .map(|i| Affine {
                mean: self.stats[i],
                scale: (f64::from(self.gamma[i]) * self.inv_std(i)) as f32,
                beta: self.beta[i],
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
struct Affine {
    mean: f32,
    scale: f32,
    beta: f32,
}

impl Affine {
    #[inline(always)]
    fn of(self, x: f32) -> f32 {
        (x - self.mean) * self.scale + self.beta
    }
}

/// `epilogue` of the normalised, scaled and shifted input, written once.
pub fn forward(s: &Shape, x: &[f32], p: &Params, epilogue: Epilogue) -> Vec<f32> {
    let ab = p.affine();
    per_epilogue!(epilogue, |E| written_once(x.len(), s.plane, |i, y| {
        let f = ab[i % s.channels];
        let x = &x[i * s.plane..][..s.plane];
        simd::vectorized(
            #[inline(always)]
            || {
                for (y, &x) in y.iter_mut().zip(x) {
                    y.write(E.value(f.of(x)));
                }
            },
        )
    }))
}

/// The gradients of gamma and beta, `[Σ dz·x̂ per channel …, Σ dz per channel …]`, where
/// `x̂ = (x - mean) / sqrt(var + eps)` and `dz = dy · epilogue'(x̂ · gamma + beta)` (the
/// gradient at the normalisation's output, recomputed, never stored).
pub fn param_grads(s: &Shape, x: &[f32], dy: &[f32], p: &Params, epilogue: Epilogue) -> Vec<f32> {
    let (c, ab) = (s.channels, p.affine());
    let per: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|i| {
            let f = ab[i];
            let (mut sdz, mut sdzx) = (0f64, 0f64);
            for n in 0..s.batch {
                let (g, x) = (s.plane_of(dy, n, i), s.plane_of(x, n, i));
                let (u, v) = per_epilogue!(epilogue, |E| simd::vectorized(
                    #[inline(always)]
                    || grad_sums(
                        g,
                        x,
                        #[inline(always)]
                        |x| E.derivative(f.of(x))
                    )
                ));
                sdz += u;
                sdzx += v;
            }
            let mean = f64::from(p.stats[i]);
            (((sdzx - mean * sdz) * p.inv_std(i)) as f32, sdz as f32)
        })
        .collect();
    per.iter()
        .map(|p| p.0)
        .chain(per.iter().map(|p| p.1))
        .collect()
}

/// The input gradient, `gamma / sqrt(var + eps) · (dz - mean(dz) - x̂ · mean(dz · x̂))`,
/// from the sums of [`param_grads`] (`dz` as there), with `x̂ = (x - mean) / sqrt(var + eps)`.
pub fn input_grad(
    s: &Shape,
    x: &[f32],
    dy: &[f32],
    p: &Params,
    sums: &[f32],
    epilogue: Epilogue,
) -> Vec<f32> {
    let c = s.channels;
    let m = s.count();
    let ab = p.affine();
    // Per channel: gamma / sqrt(var + eps), mean(dz) and mean(dz · x̂) / sqrt(var + eps).
    let coef: Vec<(f32, f32, f32)> = (0..c)
        .map(|i| {
            let inv_std = p.inv_std(i);
            let a = f64::from(p.gamma[i]) * inv_std;
            let mean_dz = f64::from(sums[c + i]) / m;
            let q = f64::from(sums[i]) / m * inv_std;
            (a as f32, mean_dz as f32, q as f32)
        })
        .collect();
    per_epilogue!(epilogue, |E| written_once(x.len(), s.plane, |i, dx| {
        let (a, mean_dz, q) = coef[i % c];
        let f = ab[i % c];
        let (x, dy) = (&x[i * s.plane..][..s.plane], &dy[i * s.plane..][..s.plane]);
        simd::vectorized(
            #[inline(always)]
            || {
                for ((d, &x), &g) in dx.iter_mut().zip(x).zip(dy) {
                    let dz = g * E.derivative(f.of(x));
                    d.write(a * (dz - mean_dz - (x - f.mean) * q));
                }
            },
        )
    }))
}

/// `Σ g·d(x)` and `Σ g·d(x)·x` of two slices, in sixteen `f32` lanes per 1024 values, then
/// `f64`.
#[inline(always)]
fn grad_sums(g: &[f32], x: &[f32], d: impl Fn(f32) -> f32) -> (f64, f64) {
    let (mut s, mut sx) = (0f64, 0f64);
    for (g, x) in g.chunks(1024).zip(x.chunks(1024)) {
        let (mut a, mut b) = ([0f32; 16], [0f32; 16]);
        let (gc, xc) = (g.chunks_exact(16), x.chunks_exact(16));
        for (&g, &x) in gc.remainder().iter().zip(xc.remainder()) {
            let dz = g * d(x);
            s += f64::from(dz);
            sx += f64::from(dz * x);
        }
        for (g, x) in gc.zip(xc) {
            for i in 0..16 {
                let dz = g[i] * d(x[i]);
                a[i] += dz;
                b[i] += dz * x[i];
            }
        }
        s += a.iter().map(|&v| f64::from(v)).sum::<f64>();
        sx += b.iter().map(|&v| f64::from(v)).sum::<f64>();
    }
    (s, sx)
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
        let p = Params {
            gamma: &gamma,
            beta: &beta,
            stats: &st,
            eps,
        };
        let y = forward(&s, &x, &p, Epilogue::Identity);
        let sums = param_grads(&s, &x, &dy, &p, Epilogue::Identity);
        let dx = input_grad(&s, &x, &dy, &p, &sums, Epilogue::Identity);
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
