//! Pooling on contiguous NCHW `f32` slices.
//!
//! Max pooling for inference: each input plane is split into its stride phases, padded with
//! -∞ (the depthwise kernel's [`Phases`]), so that every window tap is a unit-stride vector
//! run over a block of rows (three taps a pass), where burn-flex walks each window with its
//! bounds per output element (7% of a ResNet-50 inference).
//!
//! Global average pooling and its gradient: one pass each way ([`plane_means`],
//! [`plane_means_grad`]), where burn's two `mean_dim`s take two passes forward and their
//! gradients two expansions and two divisions back.

use super::depthwise::Depthwise;
use super::fused::Phases;
use super::{simd, written_once};

/// Values per parallel chunk of the global pool's passes: a few planes, or one large one.
const CHUNK_VALUES: usize = 1 << 16;

/// The mean of each plane of `plane` values of `input` (`[n, c, h, w]` as `n · c` planes of
/// `h · w`), as `n · c` values. A plane is summed in 16 lanes, then the lanes in order, so
/// that the loop vectorises (a plain sum is one chain of additions).
pub fn plane_means(input: &[f32], plane: usize) -> Vec<f32> {
    let planes = input.len() / plane;
    let per_chunk = (CHUNK_VALUES / plane).max(1);
    written_once(planes, per_chunk, |t, out| {
        simd::vectorized(
            #[inline(always)]
            || {
                for (k, mean) in out.iter_mut().enumerate() {
                    let x = &input[(t * per_chunk + k) * plane..][..plane];
                    let mut lanes = [0f32; 16];
                    let mut rows = x.chunks_exact(16);
                    for row in &mut rows {
                        lanes.iter_mut().zip(row).for_each(|(l, v)| *l += v);
                    }
                    lanes
                        .iter_mut()
                        .zip(rows.remainder())
                        .for_each(|(l, v)| *l += v);
                    mean.write(lanes.iter().sum::<f32>() / plane as f32);
                }
            },
        )
    })
}

/// The gradient of [`plane_means`] for its input, from its output's `out_grad`: every value
/// of a plane of `plane` values gets its mean's gradient over `plane`.
pub fn plane_means_grad(out_grad: &[f32], plane: usize) -> Vec<f32> {
    let per_chunk = (CHUNK_VALUES / plane).max(1);
    written_once(out_grad.len() * plane, per_chunk * plane, |t, out| {
        simd::vectorized(
            #[inline(always)]
            || {
                for (k, values) in out.chunks_mut(plane).enumerate() {
                    let g = out_grad[t * per_chunk + k] / plane as f32;
                    values.iter_mut().for_each(|v| {
                        v.write(g);
                    });
                }
            },
        )
    })
}

/// The max pool of `input` `[n, c, h, w]` over the window `g` describes (its `batch` the
/// number of planes' images, `channels` their channels, multiplier 1), as `[n, c, oh, ow]`;
/// a NaN in a window is its maximum, as PyTorch's.
pub fn max_pool(g: &Depthwise, input: &[f32]) -> Vec<f32> {
    let [ih, iw] = g.in_size;
    let [oh, ow] = g.out_size;
    let phases = Phases::of(g);
    written_once(g.batch * g.channels * oh * ow, oh * ow, |t, out| {
        let x = &input[t * ih * iw..][..ih * iw];
        thread_local! {
            static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = Default::default();
        }
        SCRATCH.with_borrow_mut(|(split, acc)| {
            simd::vectorized(
                #[inline(always)]
                || {
                    phases.split(x, iw, f32::NEG_INFINITY, split);
                    let split = &split[..];
                    phases.by_blocks(
                        g.out_size,
                        acc,
                        out,
                        #[inline(always)]
                        |r0: usize, acc: &mut [f32]| {
                            let n = acc.len();
                            let src = |t| phases.source(split, t, r0, n);
                            // The first tap copied, then three at a time, each accumulator
                            // stored once a pass: a pass per tap compiled its select into
                            // a masked store (a tenth of the speed on AMD's cores); one or
                            // two taps left over go as a pair (the one twice).
                            let (first, rest) = phases.taps.split_first().expect("a window");
                            acc.copy_from_slice(src(*first));
                            let threes = rest.chunks_exact(3);
                            if let [t0, ..] = threes.remainder() {
                                let t1 = threes.remainder().last().expect("a tap");
                                let (s0, s1) = (src(*t0), src(*t1));
                                for ((a, &v0), &v1) in acc.iter_mut().zip(s0).zip(s1) {
                                    *a = larger(larger(*a, v0), v1);
                                }
                            }
                            for t in threes {
                                let (s0, s1, s2) = (src(t[0]), src(t[1]), src(t[2]));
                                for (((a, &v0), &v1), &v2) in acc.iter_mut().zip(s0).zip(s1).zip(s2)
                                {
                                    *a = larger(larger(larger(*a, v0), v1), v2);
                                }
                            }
                        },
                        |a| a,
                    );
                },
            )
        })
    })
}

/// PyTorch's `(val > maxval) || isnan(val)`: the larger, a NaN as the largest.
#[inline(always)]
fn larger(acc: f32, v: f32) -> f32 {
    if v > acc || v.is_nan() { v } else { acc }
}
