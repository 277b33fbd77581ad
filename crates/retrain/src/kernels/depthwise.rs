//! The two gradients of a depthwise convolution (groups = input channels, each input
//! channel feeding `multiplier` output channels), on contiguous NCHW `f32` slices.
//!
//! burn's generic backward runs one small convolution and a slice-assign per channel group
//! for the weight gradient and a generic transposed convolution for the input gradient:
//! for MobileNet's 32- to 960-channel depthwise layers that is hundreds of tiny ops a layer.
//! Here each gradient is one pass over the planes, in parallel over planes (input gradient)
//! or output channels (weight gradient), so no two threads write the same memory. The rows
//! of a plane are walked once per kernel row, and each kernel column reuses them from cache.

use rayon::prelude::*;

use super::simd;

/// The geometry of one depthwise convolution, input `[n, c, h, w]`, weight
/// `[c · multiplier, 1, kh, kw]`, output `[n, c · multiplier, oh, ow]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depthwise {
    pub batch: usize,
    pub channels: usize,
    pub multiplier: usize,
    pub in_size: [usize; 2],
    pub out_size: [usize; 2],
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    /// Padding before the first row and column (padding after only shapes the output size).
    pub pad_begin: [usize; 2],
}

impl Depthwise {
    fn in_plane(&self) -> usize {
        self.in_size[0] * self.in_size[1]
    }
    fn out_plane(&self) -> usize {
        self.out_size[0] * self.out_size[1]
    }

    /// The input row that output row `o` reads through kernel row `k` (axis 0) or the first
    /// input column of kernel column `k` (axis 1), when inside the input.
    pub(crate) fn input_index(&self, axis: usize, o: usize, k: usize) -> Option<usize> {
        (o * self.stride[axis] + k * self.dilation[axis])
            .checked_sub(self.pad_begin[axis])
            .filter(|&i| i < self.in_size[axis])
    }

    /// The output columns `lo..hi` whose input column through kernel column `k` is inside the
    /// input, and the input column of `lo`.
    pub(crate) fn valid_columns(&self, k: usize) -> (usize, usize, usize) {
        let (s, w) = (self.stride[1], self.in_size[1]);
        let offset = k * self.dilation[1];
        let p = self.pad_begin[1];
        // First output column with ow·s + offset ≥ p.
        let lo = p.saturating_sub(offset).div_ceil(s);
        // One past the last with ow·s + offset - p < w.
        let hi = if w + p > offset {
            (w + p - offset).div_ceil(s).min(self.out_size[1])
        } else {
            0
        };
        if hi <= lo {
            return (0, 0, 0); // this kernel column never lands inside the input
        }
        (lo, hi, lo * s + offset - p)
    }
}

/// The input gradient `[n, c, h, w]` from the output gradient and the weight.
pub fn input_grad(g: &Depthwise, weight: &[f32], out_grad: &[f32]) -> Vec<f32> {
    let (ip, op, m) = (g.in_plane(), g.out_plane(), g.multiplier);
    let [kh, kw] = g.kernel;
    let (ow, iw, sw) = (g.out_size[1], g.in_size[1], g.stride[1]);
    let columns: Vec<_> = (0..kw).map(|k| g.valid_columns(k)).collect();
    let mut dx = vec![0f32; g.batch * g.channels * ip];
    dx.par_chunks_mut(ip).enumerate().for_each(|(plane, dx)| {
        simd::vectorized(
            #[inline(always)]
            || {
                let (n, c) = (plane / g.channels, plane % g.channels);
                for j in 0..m {
                    let co = c * m + j;
                    let dy = &out_grad[(n * g.channels * m + co) * op..][..op];
                    let w = &weight[co * kh * kw..][..kh * kw];
                    for oh in 0..g.out_size[0] {
                        let dy_row = &dy[oh * ow..][..ow];
                        for ki in 0..kh {
                            let Some(ih) = g.input_index(0, oh, ki) else {
                                continue;
                            };
                            let dx_row = &mut dx[ih * iw..][..iw];
                            for (kj, &(lo, hi, first)) in columns.iter().enumerate() {
                                let wv = w[ki * kw + kj];
                                let src = &dy_row[lo..hi];
                                if sw == 1 {
                                    for (d, &s) in
                                        dx_row[first..first + src.len()].iter_mut().zip(src)
                                    {
                                        *d += wv * s;
                                    }
                                } else {
                                    for (t, &s) in src.iter().enumerate() {
                                        dx_row[first + t * sw] += wv * s;
                                    }
                                }
                            }
                        }
                    }
                }
            },
        )
    });
    dx
}

/// The weight gradient `[c · multiplier, 1, kh, kw]` from the input and the output gradient.
/// Each row's products are summed in eight `f32` lanes, rows in `f64`.
pub fn weight_grad(g: &Depthwise, input: &[f32], out_grad: &[f32]) -> Vec<f32> {
    let (ip, op, m) = (g.in_plane(), g.out_plane(), g.multiplier);
    let [kh, kw] = g.kernel;
    let (ow, iw, sw) = (g.out_size[1], g.in_size[1], g.stride[1]);
    let columns: Vec<_> = (0..kw).map(|k| g.valid_columns(k)).collect();
    let mut dw = vec![0f32; g.channels * m * kh * kw];
    dw.par_chunks_mut(kh * kw).enumerate().for_each(|(co, dw)| {
        simd::vectorized(
            #[inline(always)]
            || {
                let c = co / m;
                let mut acc = vec![0f64; kh * kw];
                for n in 0..g.batch {
                    let x = &input[(n * g.channels + c) * ip..][..ip];
                    let dy = &out_grad[(n * g.channels * m + co) * op..][..op];
                    for oh in 0..g.out_size[0] {
                        let dy_row = &dy[oh * ow..][..ow];
                        for ki in 0..kh {
                            let Some(ih) = g.input_index(0, oh, ki) else {
                                continue;
                            };
                            let x_row = &x[ih * iw..][..iw];
                            for (kj, &(lo, hi, first)) in columns.iter().enumerate() {
                                let d = &dy_row[lo..hi];
                                let s = if sw == 1 {
                                    dot(d, &x_row[first..first + d.len()])
                                } else {
                                    d.iter()
                                        .enumerate()
                                        .map(|(t, &v)| v * x_row[first + t * sw])
                                        .sum()
                                };
                                acc[ki * kw + kj] += f64::from(s);
                            }
                        }
                    }
                }
                for (d, a) in dw.iter_mut().zip(acc) {
                    *d = a as f32;
                }
            },
        )
    });
    dw
}

/// A dot product in eight independent lanes, which the compiler turns into SIMD (a single
/// running sum would pin the order of the additions and stay scalar).
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct definition, one output element at a time, in f64.
    fn reference(g: &Depthwise, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let [h, wd] = g.in_size;
        let [oh, ow] = g.out_size;
        let [kh, kw] = g.kernel;
        let m = g.multiplier;
        let mut dx = vec![0f64; g.batch * g.channels * h * wd];
        let mut dw = vec![0f64; g.channels * m * kh * kw];
        for n in 0..g.batch {
            for co in 0..g.channels * m {
                let c = co / m;
                for i in 0..oh {
                    for j in 0..ow {
                        let d = f64::from(dy[((n * g.channels * m + co) * oh + i) * ow + j]);
                        for a in 0..kh {
                            for b in 0..kw {
                                let y = (i * g.stride[0] + a * g.dilation[0])
                                    .checked_sub(g.pad_begin[0]);
                                let z = (j * g.stride[1] + b * g.dilation[1])
                                    .checked_sub(g.pad_begin[1]);
                                let (Some(y), Some(z)) = (y, z) else { continue };
                                if y >= h || z >= wd {
                                    continue;
                                }
                                let xi = ((n * g.channels + c) * h + y) * wd + z;
                                let wi = (co * kh + a) * kw + b;
                                dx[xi] += d * f64::from(w[wi]);
                                dw[wi] += d * f64::from(x[xi]);
                            }
                        }
                    }
                }
            }
        }
        (dx, dw)
    }

    #[test]
    fn both_gradients_equal_the_definition_for_odd_geometries() {
        let mut r = crate::kernels::tests::Lcg(7);
        // (in h, w, kernel, stride, dilation, pad begin, pad end, multiplier)
        let cases = [
            ([9, 13], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1], 1),
            ([9, 13], [3, 3], [2, 2], [1, 1], [1, 1], [1, 1], 1),
            ([10, 11], [5, 3], [2, 1], [2, 1], [2, 0], [1, 2], 2),
            ([7, 7], [7, 7], [1, 1], [1, 1], [3, 3], [3, 3], 1),
            ([8, 6], [3, 2], [3, 2], [1, 2], [0, 1], [2, 0], 3),
            ([5, 20], [1, 3], [1, 1], [1, 3], [0, 0], [0, 0], 1),
        ];
        for (in_size, kernel, stride, dilation, pb, pe, m) in cases {
            let out = |a: usize| {
                (in_size[a] + pb[a] + pe[a] - dilation[a] * (kernel[a] - 1) - 1) / stride[a] + 1
            };
            let g = Depthwise {
                batch: 2,
                channels: 3,
                multiplier: m,
                in_size,
                out_size: [out(0), out(1)],
                kernel,
                stride,
                dilation,
                pad_begin: pb,
            };
            let x = r.values(2 * 3 * in_size[0] * in_size[1]);
            let w = r.values(3 * m * kernel[0] * kernel[1]);
            let dy = r.values(2 * 3 * m * g.out_plane());
            let (rdx, rdw) = reference(&g, &x, &w, &dy);
            for (got, want) in input_grad(&g, &w, &dy).iter().zip(&rdx) {
                assert!(
                    (f64::from(*got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{g:?}"
                );
            }
            for (got, want) in weight_grad(&g, &x, &dy).iter().zip(&rdw) {
                assert!(
                    (f64::from(*got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{g:?}"
                );
            }
        }
    }
}
