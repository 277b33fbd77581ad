//! Max pooling for inference on contiguous NCHW `f32` slices. Each input plane is split
//! into its stride phases, padded with -∞ (the depthwise kernel's [`Phases`]), so that
//! every window tap is one unit-stride vector pass over a block of rows, where burn-flex
//! walks each window with its bounds per output element (7% of a ResNet-50 inference).

use super::depthwise::Depthwise;
use super::fused::{BLOCK, Phases};
use super::{simd, written_once};

/// The max pool of `input` `[n, c, h, w]` over the window `g` describes (its `batch` the
/// number of planes' images, `channels` their channels, multiplier 1), as `[n, c, oh, ow]`;
/// a NaN in a window is its maximum, as PyTorch's.
pub fn max_pool(g: &Depthwise, input: &[f32]) -> Vec<f32> {
    let [ih, iw] = g.in_size;
    let [oh, ow] = g.out_size;
    let phases = Phases::of(g);
    let (width, len) = (phases.width, phases.phase_len());
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
                    let block = (BLOCK / width).clamp(1, oh);
                    acc.resize(block * width, 0.0);
                    for r0 in (0..oh).step_by(block) {
                        let n = (oh - r0).min(block) * width;
                        let acc = &mut acc[..n];
                        acc.fill(f32::NEG_INFINITY);
                        for &(phase, offset) in &phases.taps {
                            let src = &split[phase * len + r0 * width + offset..][..n];
                            for (a, &v) in acc.iter_mut().zip(src) {
                                // PyTorch's `(val > maxval) || isnan(val)`.
                                *a = if v > *a || v.is_nan() { v } else { *a };
                            }
                        }
                        for (row, acc) in out[r0 * ow..].chunks_mut(ow).zip(acc.chunks(width)) {
                            for (o, &a) in row.iter_mut().zip(acc) {
                                o.write(a);
                            }
                        }
                    }
                },
            )
        })
    })
}
