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
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::depthwise::Depthwise;
use super::fused::{self, Epilogue, Phases};
use super::pointwise::Shared;
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
        let (cols_in, cols_out) = (rows_in * w, (r1 - r0) * ow);
        let image = &x[i * cin * h * w..][..cin * h * w];
        thread_local! {
            static SCRATCH: RefCell<[Vec<f32>; 4]> = Default::default();
        }
        SCRATCH.with_borrow_mut(|[expanded, dw_out, split, acc]| {
            // 1. The expansion of the band's input rows, then its bias and activation.
            expanded.resize(hidden * cols_in.max(1), 0.0);
            if cols_in > 0 {
                // SAFETY: `expanded` holds `hidden · cols_in` values; the weight
                // `[hidden, cin]` (asserted above); the input's `cin` rows of `cols_in`
                // values from row `first` of each channel plane lie inside the image.
                unsafe {
                    product(
                        [hidden, cols_in, cin],
                        expanded.as_mut_ptr(),
                        cols_in,
                        expand.weight,
                        &image[first * w..],
                        h * w,
                    )
                };
                finish_rows(expanded, cols_in, expand.bias, expand.epilogue);
            }
            // 2. The depthwise convolution of each expanded channel, into the band's rows.
            dw_out.resize(hidden * cols_out, 0.0);
            let phases = Phases::of(&wg);
            let taps = g.kernel[0] * g.kernel[1];
            per_epilogue!(depthwise.epilogue, |E| simd::vectorized(
                #[inline(always)]
                || {
                    for (c, out) in dw_out.chunks_mut(cols_out).enumerate() {
                        // SAFETY: `MaybeUninit<f32>` has `f32`'s layout; the plane is
                        // initialised and is only written through this view.
                        let out = unsafe {
                            std::slice::from_raw_parts_mut(
                                out.as_mut_ptr().cast::<MaybeUninit<f32>>(),
                                out.len(),
                            )
                        };
                        fused::depthwise_planes(
                            &wg,
                            &phases,
                            &expanded[c * cols_in..][..cols_in],
                            &depthwise.weight[c * taps..][..taps],
                            Some(depthwise.bias),
                            c,
                            out,
                            #[inline(always)]
                            |v| E.value(v),
                            split,
                            acc,
                        );
                    }
                }
            ));
            // 3. The projection of the band into the output, its bias and the residual.
            // SAFETY: the output's capacity holds `n · cout · oh · ow` values; this task
            // writes rows `r0..r1` of each of image `i`'s `cout` planes, which no other
            // task touches, and `dw_out` is `[hidden, cols_out]`.
            let band_out = unsafe { dst.at(i * per_image + r0 * ow) };
            unsafe {
                product(
                    [cout, cols_out, hidden],
                    band_out,
                    oh * ow,
                    project.weight,
                    dw_out,
                    cols_out,
                )
            };
            // SAFETY: as above; `product` has just written these `cout` rows of the band.
            let mut rows: Vec<&mut [f32]> = (0..cout)
                .map(|co| unsafe {
                    std::slice::from_raw_parts_mut(band_out.add(co * oh * ow), cols_out)
                })
                .collect();
            let residual = b.residual.then(|| (image, r0 * ow, h * w));
            finish_each(&mut rows, project.bias, residual, project.epilogue);
        });
    });
    // SAFETY: the bands cover every row of every output plane of every image, all written.
    unsafe { out.set_len(g.batch * per_image) };
    out
}

/// `dst = lhs · rhs` (all row-major), `[m, n]` = `[m, k]` · `[k, n]`, with the row strides
/// of `dst` and `rhs` given, one thread.
///
/// # Safety
/// `dst` is valid for writes of `m` rows of `n` values `dst_rs` apart; `lhs` holds
/// `m · k` values and `rhs` `k` rows of `n` values `rhs_rs` apart.
unsafe fn product(
    [m, n, k]: [usize; 3],
    dst: *mut f32,
    dst_rs: usize,
    lhs: &[f32],
    rhs: &[f32],
    rhs_rs: usize,
) {
    assert!(lhs.len() >= m * k && rhs.len() >= (k - 1) * rhs_rs + n);
    // SAFETY: the reads are inside `lhs` and `rhs` (asserted), the writes the caller's;
    // `read_dst` is false, so `dst` is only written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Each row `r` of `values` (`cols` wide) becomes `epilogue(v + bias[r])`.
fn finish_rows(values: &mut [f32], cols: usize, bias: &[f32], e: Epilogue) {
    let mut rows: Vec<&mut [f32]> = values.chunks_mut(cols).collect();
    finish_each(&mut rows, bias, None, e);
}

/// Each row `r` becomes `epilogue(v + bias[r] + residual)`, the residual (when given:
/// `(image, offset, plane)`) read from row `r`'s plane of the image at the offset.
fn finish_each(
    rows: &mut [&mut [f32]],
    bias: &[f32],
    residual: Option<(&[f32], usize, usize)>,
    e: Epilogue,
) {
    per_epilogue!(e, |E| simd::vectorized(
        #[inline(always)]
        || {
            for (r, row) in rows.iter_mut().enumerate() {
                let b = bias[r];
                match residual {
                    None => row.iter_mut().for_each(|v| *v = E.value(*v + b)),
                    Some((x, at, plane)) => {
                        let s = &x[r * plane + at..][..row.len()];
                        for (v, &s) in row.iter_mut().zip(s) {
                            *v = E.value(*v + b + s);
                        }
                    }
                }
            }
        }
    ));
}
