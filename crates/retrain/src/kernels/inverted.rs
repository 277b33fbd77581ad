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

use super::depthwise::{Depthwise, dot};
use super::fused::{Epilogue, Phases};
use super::pointwise::{Matrix, Shared, product, strided_product};
use super::{Pointwise, scratch, simd};

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

    /// Whether [`forward`] runs the bands channels-last ([`channels_last_front`]): on input
    /// planes of 28×28 and less with a stride, and on planes of 8×8 and less. There
    /// splitting each expanded plane into its phases (four with a stride) and the passes
    /// over planes of 49 to 196 outputs cost about as much as the taps: on MobileNetV2's
    /// and EfficientNet-Lite0's blocks of those sizes the channels-last bands took 4% to 21%
    /// less time. On larger planes, and on 14×14 ones without a stride, the planes' long
    /// unit-stride passes were faster (by 10% to 70%).
    ///
    /// Only where `gemm` runs both products on its packed kernels in either layout (no
    /// matrix-vector product, no depth of 2 or less, rows 2 wide at least), so that each
    /// output has the same bits as plane by plane: three input channels at least, two
    /// output channels.
    fn channels_last(&self) -> bool {
        let g = &self.window;
        let plane = g.in_size[0] * g.in_size[1];
        let small = plane <= 8 * 8 || (plane <= 28 * 28 && g.stride != [1, 1]);
        let regular = self.channels_in >= 3
            && g.channels >= 3
            && self.channels_out >= 2
            && g.in_size[1] >= 2
            && g.out_size[1] >= 2;
        small && regular
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

/// A squeeze-excitation between the depthwise convolution and the projection (EfficientNet,
/// MobileNetV3): each image's depthwise output, averaged over its plane, through `reduce`
/// (`[squeezed, hidden]`, with its activation) and `expand` (`[hidden, squeezed]`, its
/// epilogue unused), then `gate`, scales the channels the projection reads.
#[derive(Clone, Copy)]
pub struct Squeeze<'a> {
    pub reduce: Part<'a>,
    pub expand: Part<'a>,
    pub gate: Gate,
}

/// The function that turns a squeeze-excitation's output into channel gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `clamp(x / 6 + 1/2, 0, 1)` (MobileNetV3's, PyTorch's `hardsigmoid`).
    HardSigmoid,
}

impl Gate {
    #[inline(always)]
    fn value(self, x: f32) -> f32 {
        match self {
            Gate::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Gate::HardSigmoid => (x / 6.0 + 0.5).clamp(0.0, 1.0),
        }
    }
}

/// `project(depthwise(expand(x)))` (+ `x` with a residual), `[n, cout, oh, ow]`, from `x`
/// `[n, cin, h, w]`, with `squeeze`'s gates between the depthwise convolution and the
/// projection where there is one. Images and bands run in parallel; each band's output is
/// the same whatever the batch and the threads, and every element of the output is written.
pub fn forward(b: &Inverted, x: &[f32], parts: [Part; 3], squeeze: Option<Squeeze>) -> Vec<f32> {
    in_bands(b, b.band(), b.channels_last(), x, parts, squeeze)
}

/// [`forward`] in bands of `band` output rows, each band channels-last
/// ([`channels_last_front`]) or plane by plane ([`planes_front`]) (the tests choose both).
///
/// Without a squeeze-excitation each band runs from the expansion to the output at once,
/// its depthwise output in a scratch buffer. With one, the gates need the whole image's
/// depthwise output first: every band's is held (a band's expanded rows still never leave
/// it), with its sums per channel; then each image's gates; then each band's projection.
pub(super) fn in_bands(
    b: &Inverted,
    band: usize,
    channels_last: bool,
    x: &[f32],
    [expand, depthwise, project]: [Part; 3],
    squeeze: Option<Squeeze>,
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
    if let Some(se) = &squeeze {
        let squeezed = se.reduce.bias.len();
        assert!(
            se.reduce.weight.len() == squeezed * hidden
                && se.expand.weight.len() == hidden * squeezed
                && se.expand.bias.len() == hidden,
            "a squeeze-excitation's weights and biases fit its block"
        );
    }
    let band = band.clamp(1, oh.max(1));
    let tasks: Vec<(usize, usize)> = (0..g.batch)
        .flat_map(|i| (0..oh).step_by(band).map(move |r0| (i, r0)))
        .collect();
    let per_image = cout * oh * ow;
    let mut out = Vec::with_capacity(g.batch * per_image);
    let dst = Shared(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    // The channels-last bands' depthwise weight `[taps, hidden]`, and where a band's
    // projection may be small, its weight `[hidden, cout]` (see `channels_last_back`).
    let taps = g.kernel[0] * g.kernel[1];
    let weights = match channels_last {
        true => [
            transposed(depthwise.weight, hidden, taps),
            match cout * ow <= SMALL_PRODUCT {
                true => transposed(project.weight, cout, hidden),
                false => Vec::new(),
            },
        ],
        false => [Vec::new(), Vec::new()],
    };
    // A band's depthwise output: `[hidden, rows · width]` in the phases' wide rows, or
    // `[rows · ow, hidden]` channels-last.
    let width = Phases::of(g).width();
    let cols = |rows: usize| rows * if channels_last { ow } else { width };
    let image = |i: usize| &x[i * cin * h * w..][..cin * h * w];
    let front = |i: usize, r0: usize, r1: usize, dw_out: &mut [f32]| match channels_last {
        true => channels_last_front(
            b,
            image(i),
            r0..r1,
            [expand, depthwise],
            &weights[0],
            dw_out,
        ),
        false => planes_front(b, image(i), r0..r1, [expand, depthwise], dw_out),
    };
    let back = |i: usize, r0: usize, r1: usize, dw_out: &[f32]| {
        // SAFETY: image `i`'s output is inside the capacity; the task of band `r0..r1` of
        // image `i` alone writes its rows.
        let y = unsafe { dst.at(i * per_image) };
        match channels_last {
            // SAFETY: as above.
            true => unsafe {
                channels_last_back(b, image(i), r0..r1, project, &weights[1], dw_out, y)
            },
            // SAFETY: as above.
            false => unsafe { planes_back(b, image(i), r0..r1, project, dw_out, width, y) },
        }
    };
    match squeeze {
        None => tasks.into_par_iter().for_each(|(i, r0)| {
            let r1 = (r0 + band).min(oh);
            thread_local! {
                static DW_OUT: RefCell<Vec<f32>> = Default::default();
            }
            DW_OUT.with_borrow_mut(|dw_out| {
                let dw_out = scratch(dw_out, hidden * cols(r1 - r0));
                front(i, r0, r1, dw_out);
                back(i, r0, r1, dw_out);
            });
        }),
        Some(se) => {
            let chunk = hidden * cols(band);
            let mut held = vec![0f32; tasks.len() * chunk];
            let mut sums = vec![0f32; tasks.len() * hidden];
            let each = held.par_chunks_mut(chunk).zip(sums.par_chunks_mut(hidden));
            each.zip(&tasks).for_each(|((dw_out, sums), &(i, r0))| {
                let r1 = (r0 + band).min(oh);
                let dw_out = &mut dw_out[..hidden * cols(r1 - r0)];
                front(i, r0, r1, dw_out);
                match channels_last {
                    true => sum_pixels(dw_out, sums),
                    false => sum_planes(dw_out, width, ow, sums),
                }
            });
            let bands = oh.div_ceil(band);
            let gates: Vec<f32> = sums
                .par_chunks(bands * hidden)
                .flat_map_iter(|sums| gates(&se, sums, hidden, oh * ow))
                .collect();
            held.par_chunks_mut(chunk)
                .zip(&tasks)
                .for_each(|(dw_out, &(i, r0))| {
                    let r1 = (r0 + band).min(oh);
                    let dw_out = &mut dw_out[..hidden * cols(r1 - r0)];
                    let gate = &gates[i * hidden..][..hidden];
                    simd::vectorized(
                        #[inline(always)]
                        || match channels_last {
                            true => dw_out
                                .chunks_exact_mut(hidden)
                                .for_each(|px| px.iter_mut().zip(gate).for_each(|(v, &s)| *v *= s)),
                            false => {
                                let c = dw_out.chunks_exact_mut(cols(r1 - r0));
                                c.zip(gate)
                                    .for_each(|(p, &s)| p.iter_mut().for_each(|v| *v *= s))
                            }
                        },
                    );
                    back(i, r0, r1, dw_out);
                });
        }
    }
    // SAFETY: the bands cover every row of every output plane of every image, all written.
    unsafe { out.set_len(g.batch * per_image) };
    out
}

/// One image's gates from its bands' sums per channel (`[bands, hidden]`) over its
/// `plane` outputs: the means through the squeeze-excitation.
fn gates(se: &Squeeze, sums: &[f32], hidden: usize, plane: usize) -> Vec<f32> {
    simd::vectorized(
        #[inline(always)]
        || {
            let mut mean = vec![0f32; hidden];
            for band in sums.chunks_exact(hidden) {
                mean.iter_mut().zip(band).for_each(|(m, &s)| *m += s);
            }
            mean.iter_mut().for_each(|m| *m /= plane as f32);
            let squeezed = se.reduce.bias.len();
            let reduced: Vec<f32> = (0..squeezed)
                .map(|j| {
                    let row = &se.reduce.weight[j * hidden..][..hidden];
                    se.reduce
                        .epilogue
                        .value(se.reduce.bias[j] + dot(row, &mean))
                })
                .collect();
            (0..hidden)
                .map(|c| {
                    let row = &se.expand.weight[c * squeezed..][..squeezed];
                    se.gate.value(se.expand.bias[c] + dot(row, &reduced))
                })
                .collect()
        },
    )
}

/// `sums[c] = Σ` of channel `c` over a channels-last band `[pixels, hidden]`.
fn sum_pixels(dw_out: &[f32], sums: &mut [f32]) {
    simd::vectorized(
        #[inline(always)]
        || {
            for px in dw_out.chunks_exact(sums.len()) {
                sums.iter_mut().zip(px).for_each(|(s, &v)| *s += v);
            }
        },
    )
}

/// `sums[c] = Σ` of plane `c`'s first `ow` columns of each `width`-wide row of a band.
fn sum_planes(dw_out: &[f32], width: usize, ow: usize, sums: &mut [f32]) {
    let cols = dw_out.len() / sums.len().max(1);
    for (plane, s) in dw_out.chunks_exact(cols).zip(sums) {
        *s = simd::vectorized(
            #[inline(always)]
            || {
                let mut acc = [0f32; L];
                let mut tail = 0f32;
                for row in plane.chunks_exact(width) {
                    let row = &row[..ow];
                    let c = row.chunks_exact(L);
                    tail += c.remainder().iter().sum::<f32>();
                    for v in c {
                        for l in 0..L {
                            acc[l] += v[l];
                        }
                    }
                }
                acc.iter().sum::<f32>() + tail
            },
        );
    }
}

/// The expansion and the depthwise convolution of output rows `rows` of image `x` `[cin,
/// h, w]`, plane by plane: the expansion of the rows they read, then its bias and
/// activation; the depthwise convolution of each expanded channel, its bias and
/// activation, into `dw_out` `[hidden, rows · width]`, kept in the phases' `width`-wide
/// rows: the columns past the output's go through the projection and are dropped after it
/// ([`planes_back`]), rather than each of the `hidden` planes being copied out narrower
/// (`cout` are, after).
fn planes_front(
    b: &Inverted,
    x: &[f32],
    rows: std::ops::Range<usize>,
    [expand, depthwise]: [Part; 2],
    dw_out: &mut [f32],
) {
    let g = &b.window;
    let (cin, hidden) = (b.channels_in, g.channels);
    let [h, w] = g.in_size;
    let (r0, r1) = (rows.start, rows.end);
    let (first, last, pad_top) = b.rows_read(r0, r1);
    let rows_in = last - first;
    // The band's depthwise convolution: its rows of the expanded image as the input.
    let wg = Depthwise {
        batch: 1,
        in_size: [rows_in, w],
        out_size: [r1 - r0, g.out_size[1]],
        pad_begin: [pad_top, g.pad_begin[1]],
        ..*g
    };
    let cols_in = rows_in * w;
    thread_local! {
        static SCRATCH: RefCell<[Vec<f32>; 2]> = Default::default();
    }
    SCRATCH.with_borrow_mut(|[expanded, split]| {
        let expanded = scratch(expanded, hidden * cols_in.max(1));
        if cols_in > 0 {
            // SAFETY: `expanded` holds `hidden · cols_in` values; the weight `[hidden, cin]`
            // (asserted by `in_bands`); the input's `cin` rows of `cols_in` values from row
            // `first` of each channel plane lie inside the image.
            unsafe {
                product(
                    rows_of(expand.weight, hidden, cin),
                    &x[first * w..],
                    h * w,
                    cols_in,
                    expanded.as_mut_ptr(),
                    cols_in,
                )
            };
        }
        let phases = Phases::of(&wg);
        let cols_wide = (r1 - r0) * phases.width();
        let taps = g.kernel[0] * g.kernel[1];
        // Each expanded channel's bias and activation just before its split, not in a pass
        // of their own over the band's expanded rows first: a cheap activation in the
        // split's copy (a pass fewer over the plane), a costly one (SiLU, hard-swish) over
        // the plane in place first, one long vector loop, where in the copy each row's
        // remainder, and every value of a stride's de-interleave, went scalar.
        per_epilogue!(expand.epilogue, |X| simd::vectorized(
            #[inline(always)]
            || {
                for (c, acc) in dw_out.chunks_mut(cols_wide).enumerate() {
                    let plane = &mut expanded[c * cols_in..][..cols_in];
                    let bias = expand.bias[c];
                    if X.is_cheap() {
                        phases.split_map(plane, w, 0.0, split, |v| X.value(v + bias));
                    } else {
                        plane.iter_mut().for_each(|v| *v = X.value(*v + bias));
                        phases.split(plane, w, 0.0, split);
                    }
                    let weight = &depthwise.weight[c * taps..][..taps];
                    phases.depthwise_rows(split, weight, depthwise.bias[c], 0, acc);
                    per_epilogue!(depthwise.epilogue, |E| acc
                        .iter_mut()
                        .for_each(|v| *v = E.value(*v)));
                }
            }
        ));
    });
}

/// The projection of [`planes_front`]'s band `dw_out` (`width`-wide rows), then its
/// output columns into output rows `rows` of `y` `[cout, oh, ow]` with the bias and the
/// residual (image `x`).
///
/// # Safety
/// `y` is valid for writes of the `cout` planes' rows `rows`, which no one else touches.
unsafe fn planes_back(
    b: &Inverted,
    x: &[f32],
    rows: std::ops::Range<usize>,
    project: Part,
    dw_out: &[f32],
    width: usize,
    y: *mut f32,
) {
    let g = &b.window;
    let (hidden, cout) = (g.channels, b.channels_out);
    let [h, w] = g.in_size;
    let [oh, ow] = g.out_size;
    let r0 = rows.start;
    let cols_wide = rows.len() * width;
    thread_local! {
        static PROJECTED: RefCell<Vec<f32>> = Default::default();
    }
    PROJECTED.with_borrow_mut(|projected| {
        let projected = scratch(projected, cout * cols_wide);
        // SAFETY: `projected` holds `cout · cols_wide` values, the weight `[cout, hidden]`
        // (asserted by `in_bands`) and `dw_out` `[hidden, cols_wide]`.
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
        // SAFETY: rows `r0..` of each of the `cout` output planes, the caller's to write.
        let band_out = unsafe { y.add(r0 * ow) };
        per_epilogue!(project.epilogue, |E| simd::vectorized(
            #[inline(always)]
            || {
                for (co, p) in projected.chunks(cols_wide).enumerate() {
                    let bias = project.bias[co];
                    for (t, p) in p.chunks(width).enumerate() {
                        // SAFETY: as above: row `r0 + t` of plane `co`.
                        let o = unsafe {
                            std::slice::from_raw_parts_mut(band_out.add(co * oh * ow + t * ow), ow)
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
                                let s = &x[at..][..ow];
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
}

/// The expansion and the depthwise convolution of output rows `rows` of image `x` `[cin,
/// h, w]` into `dw_out` `[pixels, hidden]`, channels-last: the expansion writes its
/// product transposed (`strided_product`), the depthwise convolution runs 16 channels to a
/// vector (`dw_t` its weight `[taps, hidden]`); [`channels_last_back`] reads it
/// transposed. No plane is split or padded per channel: on planes of 28×28 and less that
/// per-plane work cost as much as the taps. Each output is the same sum in the same order
/// as with the planes (padded taps, which add zeros there, are skipped).
fn channels_last_front(
    b: &Inverted,
    x: &[f32],
    rows: std::ops::Range<usize>,
    [expand, depthwise]: [Part; 2],
    dw_t: &[f32],
    dw_out: &mut [f32],
) {
    let g = &b.window;
    let (cin, hidden) = (b.channels_in, g.channels);
    let [h, w] = g.in_size;
    let ow = g.out_size[1];
    let (r0, r1) = (rows.start, rows.end);
    let (first, last, _) = b.rows_read(r0, r1);
    let pixels_in = (last - first) * w;
    thread_local! {
        static EXPANDED: RefCell<Vec<f32>> = Default::default();
    }
    EXPANDED.with_borrow_mut(|expanded| {
        // 1. The expansion, channels-last, then its bias and activation.
        let expanded = scratch(expanded, pixels_in * hidden);
        if pixels_in > 0 {
            let input = Matrix {
                values: &x[first * w..],
                rows: cin,
                cols: pixels_in,
                row_stride: h * w,
                col_stride: 1,
            };
            // SAFETY: `expanded` holds `pixels_in` rows of `hidden` values: element
            // (channel c, pixel j) at `c + j · hidden`.
            unsafe {
                strided_product(
                    rows_of(expand.weight, hidden, cin),
                    input,
                    expanded.as_mut_ptr(),
                    [1, hidden],
                )
            };
            per_epilogue!(expand.epilogue, |E| simd::vectorized(
                #[inline(always)]
                || {
                    for px in expanded.chunks_exact_mut(hidden) {
                        for (v, &b) in px.iter_mut().zip(expand.bias) {
                            *v = E.value(*v + b);
                        }
                    }
                }
            ));
        }
        // 2. The depthwise convolution, 16 channels at a time, each output pixel's taps
        // those inside the image.
        let [kh, kw] = g.kernel;
        let ([sh, sw], [dh, dwd], [ph, pw]) = (g.stride, g.dilation, g.pad_begin);
        let inside = |o: usize, s: usize, d: usize, p: usize, k: usize, n: usize| {
            // Taps k with 0 <= o·s + k·d - p < n.
            let lo = p.saturating_sub(o * s).div_ceil(d);
            let hi = (n + p).saturating_sub(o * s).div_ceil(d).min(k);
            lo..hi.max(lo)
        };
        // Each output column's taps inside the image, found once (a division each).
        let columns: Vec<_> = (0..ow).map(|ox| inside(ox, sw, dwd, pw, kw, w)).collect();
        per_epilogue!(depthwise.epilogue, |E| simd::vectorized(
            #[inline(always)]
            || {
                for c0 in (0..hidden).step_by(L) {
                    let lanes = L.min(hidden - c0);
                    let mut bias = [0f32; L];
                    bias[..lanes].copy_from_slice(&depthwise.bias[c0..][..lanes]);
                    // Each pixel: the bias, then its taps inside the image in order, by
                    // blocks of 4 pixels (4 independent sums: one pixel's taps alone are a
                    // chain of dependent additions), or one at a time in narrow rows and
                    // the last, partial vector of channels.
                    let pixel = |oy: usize, ox: usize, ys: &std::ops::Range<usize>, acc| {
                        let mut acc = acc;
                        for ky in ys.clone() {
                            let iy = oy * sh + ky * dh - ph - first;
                            for kx in columns[ox].clone() {
                                let ix = ox * sw + kx * dwd - pw;
                                let from = &expanded[(iy * w + ix) * hidden + c0..];
                                let wt = &dw_t[(ky * kw + kx) * hidden + c0..];
                                acc = if lanes == L {
                                    tap(acc, wt, from)
                                } else {
                                    tap_partial(acc, wt, from, lanes)
                                };
                            }
                        }
                        acc
                    };
                    for oy in r0..r1 {
                        let ys = inside(oy, sh, dh, ph, kh, h);
                        let row = (oy - r0) * ow;
                        if lanes < L || ow < 4 {
                            for ox in 0..ow {
                                let acc = pixel(oy, ox, &ys, bias);
                                let o = &mut dw_out[(row + ox) * hidden + c0..][..lanes];
                                for (o, &a) in o.iter_mut().zip(&acc) {
                                    *o = E.value(a);
                                }
                            }
                            continue;
                        }
                        // Blocks of 4 pixels, the last one ending at the row's end (the
                        // pixels it shares with the one before are computed again, the same).
                        for ox in (0..ow).step_by(4).map(|ox| ox.min(ow - 4)) {
                            let mut acc = [bias; 4];
                            for ky in ys.clone() {
                                let iy = oy * sh + ky * dh - ph - first;
                                let wrow = &dw_t[ky * kw * hidden + c0..];
                                let at = |p: usize, kx: usize| {
                                    let ix = (ox + p) * sw + kx * dwd - pw;
                                    &expanded[(iy * w + ix) * hidden + c0..]
                                };
                                for kx in 0..kw {
                                    let wt = &wrow[kx * hidden..];
                                    // The columns' ranges of taps grow with `ox`: the
                                    // block's first and last pixels bound the others.
                                    let ends = [&columns[ox], &columns[ox + 3]];
                                    if ends.iter().all(|r| r.contains(&kx)) {
                                        acc = tap4(
                                            acc,
                                            wt,
                                            [at(0, kx), at(1, kx), at(2, kx), at(3, kx)],
                                        );
                                    } else {
                                        for (p, a) in acc.iter_mut().enumerate() {
                                            if columns[ox + p].contains(&kx) {
                                                *a = tap(*a, wt, at(p, kx));
                                            }
                                        }
                                    }
                                }
                            }
                            for (p, acc) in acc.iter().enumerate() {
                                let o = &mut dw_out[(row + ox + p) * hidden + c0..][..L];
                                for (o, &a) in o.iter_mut().zip(acc) {
                                    *o = E.value(a);
                                }
                            }
                        }
                    }
                }
            }
        ));
    });
}

/// The projection of [`channels_last_front`]'s band `dw_out` `[pixels, hidden]`, read
/// transposed, into output rows `rows` of `y` `[cout, oh, ow]` in place, then their bias
/// and the residual (image `x`); with `pw_t`, the weight `[hidden, cout]`, where the
/// product has at most [`SMALL_PRODUCT`] outputs: there, with both operands contiguous
/// along the depth, `gemm` takes a path of horizontal sums, in another order than the
/// plane-by-plane block's.
///
/// # Safety
/// `y` is valid for writes of the `cout` planes' rows `rows`, which no one else touches.
unsafe fn channels_last_back(
    b: &Inverted,
    x: &[f32],
    rows: std::ops::Range<usize>,
    project: Part,
    pw_t: &[f32],
    dw_out: &[f32],
    y: *mut f32,
) {
    let g = &b.window;
    let (hidden, cout) = (g.channels, b.channels_out);
    let [h, w] = g.in_size;
    let [oh, ow] = g.out_size;
    let r0 = rows.start;
    let pixels = rows.len() * ow;
    let depth = Matrix {
        values: dw_out,
        rows: hidden,
        cols: pixels,
        row_stride: 1,
        col_stride: hidden,
    };
    // SAFETY: rows `rows` of each of the `cout` output planes (`oh · ow` apart), the
    // caller's to write.
    let band = unsafe { y.add(r0 * ow) };
    let weight = match pixels * cout <= SMALL_PRODUCT {
        true => Matrix {
            values: pw_t,
            rows: cout,
            cols: hidden,
            row_stride: 1,
            col_stride: cout,
        },
        false => rows_of(project.weight, cout, hidden),
    };
    // SAFETY: as above.
    unsafe { strided_product(weight, depth, band, [oh * ow, 1]) };
    per_epilogue!(project.epilogue, |E| simd::vectorized(
        #[inline(always)]
        || {
            for co in 0..cout {
                // SAFETY: the band's values of plane `co`, just written by the product.
                let o = unsafe { std::slice::from_raw_parts_mut(band.add(co * oh * ow), pixels) };
                let bias = project.bias[co];
                if b.residual {
                    let s = &x[co * h * w + r0 * ow..][..pixels];
                    for (o, &s) in o.iter_mut().zip(s) {
                        *o = E.value(*o + bias + s);
                    }
                } else {
                    for o in o.iter_mut() {
                        *o = E.value(*o + bias);
                    }
                }
            }
        }
    ));
}

/// `gemm` sums products of at most this many outputs horizontally (along the depth) when
/// both operands are contiguous along it.
const SMALL_PRODUCT: usize = 16 * 16;

/// `w` `[rows, cols]` as `[cols, rows]`.
fn transposed(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for (r, row) in w.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            t[c * rows + r] = v;
        }
    }
    t
}

/// Channels to a vector in [`channels_last_front`]'s depthwise convolution.
const L: usize = 16;

/// `acc + w · x` over a vector of channels, by value (a loop through references to the
/// arrays stayed scalar).
#[inline(always)]
fn tap(acc: [f32; L], w: &[f32], x: &[f32]) -> [f32; L] {
    let w: [f32; L] = w[..L].try_into().expect("a vector");
    let x: [f32; L] = x[..L].try_into().expect("a vector");
    let mut a = acc;
    for l in 0..L {
        a[l] += w[l] * x[l];
    }
    a
}

/// [`tap`] for 4 pixels at once, by one vector of weights.
#[inline(always)]
fn tap4(acc: [[f32; L]; 4], w: &[f32], x: [&[f32]; 4]) -> [[f32; L]; 4] {
    let w: [f32; L] = w[..L].try_into().expect("a vector");
    let mut a = acc;
    for p in 0..4 {
        let xp: [f32; L] = x[p][..L].try_into().expect("a vector");
        for l in 0..L {
            a[p][l] += w[l] * xp[l];
        }
    }
    a
}

/// [`tap`] over the first `lanes` channels (the last, partial vector).
#[inline(always)]
fn tap_partial(acc: [f32; L], w: &[f32], x: &[f32], lanes: usize) -> [f32; L] {
    let mut a = acc;
    for l in 0..lanes {
        a[l] += w[l] * x[l];
    }
    a
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
