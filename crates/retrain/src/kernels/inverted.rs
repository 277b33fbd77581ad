//! A MobileNet inverted residual block for inference (BatchNorm folded): the 1×1 expansion,
//! the depthwise k×k and the 1×1 projection, with their biases, activations and the
//! residual, in one pass over bands of output rows.
//!
//! Run layer by layer, the expanded activation (six times the block's input: 1.8 MB for
//! one 56×56×144 image) is written out by the expansion and read back by the depthwise
//! convolution, whose output the projection reads in turn: both leave the core's L2 and
//! come back from L3. Here each band's expanded rows (with the rows above and below that
//! its depthwise window reaches, computed again by the next band) are about 1 MiB and its
//! depthwise output less: they stay in or near L2 between the three steps.

use std::cell::RefCell;

use rayon::prelude::*;

use super::depthwise::Depthwise;
use super::fused::{Epilogue, Phases};
use super::pointwise::{Matrix, Shared, product};
use super::{Pointwise, simd};

/// The block's geometry: `window` is the depthwise convolution's over a whole image
/// (`batch` images, `channels` the expanded ones, multiplier 1).
#[derive(Debug, Clone, Copy)]
pub struct Inverted {
    pub window: Depthwise,
    pub channels_in: usize,
    pub channels_out: usize,
    /// The block's input is added to the projection (stride 1, `channels_in` =
    /// `channels_out`).
    pub residual: bool,
}

/// A convolution's weight `[rows, cols]` (or `[c, kh · kw]` for the depthwise), its bias
/// and what follows it.
#[derive(Clone, Copy)]
pub struct Part<'a> {
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub epilogue: Epilogue,
}

impl Inverted {
    /// Output rows per band: the band's expanded rows about 1 MiB (a core's L2 here;
    /// 256 KiB to 4 MiB measured within a few percent of it, 128 KiB much slower: the
    /// rows the window reaches above and below are expanded again by each band), at least
    /// one row.
    fn band(&self) -> usize {
        let g = &self.window;
        let reach = g.dilation[0] * (g.kernel[0] - 1) + 1;
        let rows_in = (1usize << 18) / (g.channels * g.in_size[1]).max(1);
        (rows_in.saturating_sub(reach) / g.stride[0] + 1).clamp(1, g.out_size[0])
    }

    /// The input rows `first..last` (clamped to the image) that output rows `r0..r1`
    /// read, and the padding above `first` that row `r0` still sees.
    fn rows_read(&self, r0: usize, r1: usize) -> (usize, usize, usize) {
        let g = &self.window;
        let (s, p) = (g.stride[0], g.pad_begin[0]);
        let reach = g.dilation[0] * (g.kernel[0] - 1) + 1;
        let first = (r0 * s).saturating_sub(p);
        let last = ((r1 - 1) * s + reach).saturating_sub(p).min(g.in_size[0]);
        (first, last.max(first), first + p - r0 * s)
    }
}

/// `project(depthwise(expand(x)))` (+ `x` with a residual), `[n, cout, oh, ow]`, from `x`
/// `[n, cin, h, w]`. Images and bands run in parallel; each band's output is the same
/// whatever the batch and the threads, and every element of the output is written.
pub fn forward(b: &Inverted, x: &[f32], expand: Part, depthwise: Part, project: Part) -> Vec<f32> {
    in_bands(b, b.band(), x, expand, depthwise, project)
}

/// [`forward`] in bands of `band` output rows (the tests choose theirs).
pub(super) fn in_bands(
    b: &Inverted,
    band: usize,
    x: &[f32],
    expand: Part,
    depthwise: Part,
    project: Part,
) -> Vec<f32> {
    let g = &b.window;
    let (cin, hidden, cout) = (b.channels_in, g.channels, b.channels_out);
    let [h, w] = g.in_size;
    let [oh, ow] = g.out_size;
    assert!(
        x.len() == g.batch * cin * h * w
            && expand.weight.len() == hidden * cin
            && expand.bias.len() == hidden
            && depthwise.weight.len() == hidden * g.kernel[0] * g.kernel[1]
            && depthwise.bias.len() == hidden
            && project.weight.len() == cout * hidden
            && project.bias.len() == cout
            && g.multiplier == 1
            && (!b.residual || (cin == cout && [h, w] == [oh, ow])),
        "an inverted block's weights, biases and input fit its geometry"
    );
    let band = band.clamp(1, oh.max(1));
    let tasks: Vec<(usize, usize)> = (0..g.batch)
        .flat_map(|i| (0..oh).step_by(band).map(move |r0| (i, r0)))
        .collect();
    let per_image = cout * oh * ow;
    let mut out = Vec::with_capacity(g.batch * per_image);
    let dst = Shared(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    tasks.into_par_iter().for_each(|(i, r0)| {
        let r1 = (r0 + band).min(oh);
        let (first, last, pad_top) = b.rows_read(r0, r1);
        let rows_in = last - first;
        // The band's depthwise convolution: its rows of the expanded image as the input.
        let wg = Depthwise {
            batch: 1,
            in_size: [rows_in, w],
            out_size: [r1 - r0, ow],
            pad_begin: [pad_top, g.pad_begin[1]],
            ..*g
        };
        let cols_in = rows_in * w;
        let image = &x[i * cin * h * w..][..cin * h * w];
        thread_local! {
            static SCRATCH: RefCell<[Vec<f32>; 4]> = Default::default();
        }
        SCRATCH.with_borrow_mut(|[expanded, dw_out, split, projected]| {
            // 1. The expansion of the band's input rows, then its bias and activation.
            expanded.resize(hidden * cols_in.max(1), 0.0);
            if cols_in > 0 {
                // SAFETY: `expanded` holds `hidden · cols_in` values; the weight
                // `[hidden, cin]` (asserted above); the input's `cin` rows of `cols_in`
                // values from row `first` of each channel plane lie inside the image.
                unsafe {
                    product(
                        rows_of(expand.weight, hidden, cin),
                        &image[first * w..],
                        h * w,
                        cols_in,
                        expanded.as_mut_ptr(),
                        cols_in,
                    )
                };
                finish_rows(expanded, cols_in, expand.bias, expand.epilogue);
            }
            // 2. The depthwise convolution of each expanded channel, its bias and
            // activation, kept in the phases' `width`-wide rows: the columns past the
            // output's go through the projection and are dropped after it, rather than
            // each of the `hidden` planes being copied out narrower (`cout` are, after).
            let phases = Phases::of(&wg);
            let width = phases.width();
            let cols_wide = (r1 - r0) * width;
            dw_out.resize(hidden * cols_wide, 0.0);
            let taps = g.kernel[0] * g.kernel[1];
            per_epilogue!(depthwise.epilogue, |E| simd::vectorized(
                #[inline(always)]
                || {
                    for (c, acc) in dw_out.chunks_mut(cols_wide).enumerate() {
                        phases.split(&expanded[c * cols_in..][..cols_in], w, 0.0, split);
                        let weight = &depthwise.weight[c * taps..][..taps];
                        phases.depthwise_rows(split, weight, depthwise.bias[c], 0, acc);
                        acc.iter_mut().for_each(|v| *v = E.value(*v));
                    }
                }
            ));
            // 3. The projection of the band's wide rows, then its output columns to the
            // output with the bias and the residual.
            projected.resize(cout * cols_wide, 0.0);
            // SAFETY: `projected` holds `cout · cols_wide` values, the weight `[cout,
            // hidden]` (asserted above) and `dw_out` `[hidden, cols_wide]`.
            unsafe {
                product(
                    rows_of(project.weight, cout, hidden),
                    dw_out,
                    cols_wide,
                    cols_wide,
                    projected.as_mut_ptr(),
                    cols_wide,
                )
            };
            // SAFETY: the output's capacity holds `n · cout · oh · ow` values; this task
            // writes rows `r0..r1` of each of image `i`'s `cout` planes, which no other
            // task touches.
            let band_out = unsafe { dst.at(i * per_image + r0 * ow) };
            per_epilogue!(project.epilogue, |E| simd::vectorized(
                #[inline(always)]
                || {
                    for (co, p) in projected.chunks(cols_wide).enumerate() {
                        let bias = project.bias[co];
                        for (t, p) in p.chunks(width).enumerate() {
                            // SAFETY: as above: row `r0 + t` of plane `co` of image `i`.
                            let o = unsafe {
                                std::slice::from_raw_parts_mut(
                                    band_out.add(co * oh * ow + t * ow),
                                    ow,
                                )
                            };
                            let p = &p[..ow];
                            match b.residual {
                                false => {
                                    for (o, &v) in o.iter_mut().zip(p) {
                                        *o = E.value(v + bias);
                                    }
                                }
                                true => {
                                    let at = co * h * w + (r0 + t) * ow;
                                    let s = &image[at..][..ow];
                                    for ((o, &v), &s) in o.iter_mut().zip(p).zip(s) {
                                        *o = E.value(v + bias + s);
                                    }
                                }
                            }
                        }
                    }
                }
            ));
        });
    });
    // SAFETY: the bands cover every row of every output plane of every image, all written.
    unsafe { out.set_len(g.batch * per_image) };
    out
}

/// A row-major `[rows, cols]` weight as a [`Matrix`].
fn rows_of(values: &[f32], rows: usize, cols: usize) -> Matrix<'_> {
    Matrix {
        values,
        rows,
        cols,
        row_stride: cols,
        col_stride: 1,
    }
}

/// Each row `r` of `values` (`cols` wide) becomes `epilogue(v + bias[r])`.
fn finish_rows(values: &mut [f32], cols: usize, bias: &[f32], e: Epilogue) {
    per_epilogue!(e, |E| simd::vectorized(
        #[inline(always)]
        || {
            for (row, &b) in values.chunks_mut(cols).zip(bias) {
                row.iter_mut().for_each(|v| *v = E.value(*v + b));
            }
        }
    ));
}
