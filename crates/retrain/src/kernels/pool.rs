//! Max pooling for inference on contiguous NCHW `f32` slices. Each input plane is split
//! into its stride phases, padded with -∞ (the depthwise kernel's [`Phases`]), so that
//! every window tap is a unit-stride vector run over a block of rows (three taps a pass),
//! where burn-flex walks each window with its bounds per output element (7% of a
//! ResNet-50 inference).

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
