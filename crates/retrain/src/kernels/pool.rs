//! Max pooling for inference on contiguous NCHW `f32` slices. Each input plane is split
//! into its stride phases, padded with -∞ (the depthwise kernel's [`Phases`]), so that
//! every window tap is one unit-stride vector pass over a block of rows, where burn-flex
//! walks each window with its bounds per output element (7% of a ResNet-50 inference).

use super::depthwise::Depthwise;
use super::fused::Phases;
use super::{simd, written_once};

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
                            acc.fill(f32::NEG_INFINITY);
                            let n = acc.len();
                            for &tap in &phases.taps {
                                for (a, &v) in acc.iter_mut().zip(phases.source(split, tap, r0, n))
                                {
                                    // PyTorch's `(val > maxval) || isnan(val)`.
                                    *a = if v > *a || v.is_nan() { v } else { *a };
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
