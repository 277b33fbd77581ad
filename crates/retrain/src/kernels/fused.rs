//! Inference convolutions with the bias and the activation in the same pass
//! ([`Epilogue`]), on contiguous NCHW `f32` slices: here the depthwise convolution, in
//! `pointwise.rs` the 1×1 convolution (most of a MobileNet's or an EfficientNet's work).
//!
//! burn-flex's own run the convolution into a zero-filled buffer, add the bias in a second
//! pass and leave the activation to a third. Here each block of output rows is finished
//! while it is in cache: accumulators that start as the bias, written out once through the
//! activation (never zero-filled first).

use std::mem::MaybeUninit;

use super::depthwise::Depthwise;
use super::{Pointwise, scratch, simd, written_once};

/// What follows a convolution in the same pass: its bias (when it has one), then this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    Identity,
    /// `max(x, 0)`; NaN stays NaN, as PyTorch's.
    Relu,
    Act(Pointwise),
}

impl Epilogue {
    #[inline(always)]
    pub(crate) fn value(self, x: f32) -> f32 {
        match self {
            Epilogue::Identity => x,
            Epilogue::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            Epilogue::Act(a) => a.value(x),
        }
    }

    /// A comparison or two per value (no arithmetic of its own): cheap enough to apply
    /// inside another loop, such as a copy, without making it slower.
    pub(crate) const fn is_cheap(self) -> bool {
        matches!(
            self,
            Epilogue::Identity | Epilogue::Relu | Epilogue::Act(Pointwise::Relu6)
        )
    }

    /// The derivative at `x`, with PyTorch's values at the kinks (ReLU's is 0 at 0, as
    /// `threshold_backward` gives it).
    #[inline(always)]
    pub(crate) fn derivative(self, x: f32) -> f32 {
        match self {
            Epilogue::Identity => 1.0,
            Epilogue::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Epilogue::Act(a) => a.derivative(x),
        }
    }
}

/// What a convolution's pass does after the product, in this order: adds its bias and a
/// residual (`[n, cout, oh, ow]`, the output's shape: a residual block's shortcut), then
/// applies the epilogue.
#[derive(Debug, Clone, Copy)]
pub struct Finish<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub epilogue: Epilogue,
}

impl Finish<'_> {
    /// The product alone.
    pub const NONE: Finish<'static> = Finish {
        bias: None,
        residual: None,
        epilogue: Epilogue::Identity,
    };
}

/// `$body` with `$e` a constant of the epilogue in each copy (a constant, not a captured
/// value, so that it folds into every closure and function the body passes it to), so that
/// the element loops are compiled for each epilogue with its function inlined.
macro_rules! per_epilogue {
    ($epi:expr, |$e:ident| $body:expr) => {{
        #[allow(non_upper_case_globals)]
        match $epi {
            Epilogue::Identity => {
                const $e: Epilogue = Epilogue::Identity;
                $body
            }
            Epilogue::Relu => {
                const $e: Epilogue = Epilogue::Relu;
                $body
            }
            Epilogue::Act(Pointwise::Relu6) => {
                const $e: Epilogue = Epilogue::Act(Pointwise::Relu6);
                $body
            }
            Epilogue::Act(Pointwise::Hardswish) => {
                const $e: Epilogue = Epilogue::Act(Pointwise::Hardswish);
                $body
            }
            Epilogue::Act(Pointwise::Silu) => {
                const $e: Epilogue = Epilogue::Act(Pointwise::Silu);
                $body
            }
            Epilogue::Act(Pointwise::Gelu) => {
                const $e: Epilogue = Epilogue::Act(Pointwise::Gelu);
                $body
            }
        }
    }};
}

/// A depthwise convolution (`g.multiplier` output channels per input channel), its bias
/// and `epilogue`, as `[n, c · multiplier, oh, ow]`.
pub fn depthwise(
    g: &Depthwise,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) -> Vec<f32> {
    per_epilogue!(epilogue, |E| depthwise_with(
        g,
        input,
        weight,
        bias,
        #[inline(always)]
        |v| E.value(v)
    ))
}

fn depthwise_with(
    g: &Depthwise,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: impl Fn(f32) -> f32 + Sync + Copy,
) -> Vec<f32> {
    let (m, plane) = (g.multiplier, g.out_size[0] * g.out_size[1]);
    let phases = Phases::of(g);
    let [ih, iw] = g.in_size;
    let [kh, kw] = g.kernel;
    // One task per input plane: it is split into phases once for its `m` output planes,
    // which lie together in the output.
    written_once(g.batch * g.channels * m * plane, m * plane, |t, out| {
        let c = t % g.channels;
        let x = &input[t * ih * iw..][..ih * iw];
        let w = &weight[c * m * kh * kw..][..m * kh * kw];
        // Buffers of the thread, kept from plane to plane (a plane's size or less).
        thread_local! {
            static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = Default::default();
        }
        SCRATCH.with_borrow_mut(|(split, acc)| {
            simd::vectorized(
                #[inline(always)]
                || depthwise_planes(g, &phases, x, w, bias, c, out, epilogue, split, acc),
            )
        })
    })
}

/// How a depthwise convolution reads its input: the zero-padded plane split into
/// `stride[0] × stride[1]` phases (rows ≡ a mod the row stride, columns ≡ b mod the column
/// stride), each `rows × width`. A kernel tap then reads one phase at a fixed offset
/// from the output element's own index in a `width`-wide grid, so that every tap is one
/// unit-stride pass over a block of whole rows (the columns past the output's are
/// computed and dropped): long vector loops even where the output's rows are 7 wide.
pub(super) struct Phases {
    stride: [usize; 2],
    pad: [usize; 2],
    rows: usize,
    width: usize,
    /// Per tap (kernel row-major): the phase it reads and its offset there.
    pub(super) taps: Vec<(usize, usize)>,
}

impl Phases {
    pub(super) fn of(g: &Depthwise) -> Self {
        let [sh, sw] = g.stride;
        // The padded extent the outputs reach, and at least the input with its leading pad.
        let padded = |a: usize| {
            let reach = (g.out_size[a] - 1) * g.stride[a] + g.dilation[a] * (g.kernel[a] - 1) + 1;
            reach.max(g.pad_begin[a] + g.in_size[a])
        };
        let (rows, width) = (padded(0).div_ceil(sh), padded(1).div_ceil(sw));
        let taps = (0..g.kernel[0])
            .flat_map(|i| (0..g.kernel[1]).map(move |j| (i * g.dilation[0], j * g.dilation[1])))
            .map(|(a, b)| ((a % sh) * sw + b % sw, (a / sh) * width + b / sw))
            .collect();
        Phases {
            stride: g.stride,
            pad: g.pad_begin,
            rows,
            width,
            taps,
        }
    }

    /// The row width of the phases and of the rows [`Phases::depthwise_rows`] computes.
    pub(super) fn width(&self) -> usize {
        self.width
    }

    /// Elements of one phase, with a row and a vector of slack: the dropped columns of the
    /// last output row read up to a row past the phase's end, and a block of
    /// [`Phases::by_blocks`] rounded up to whole vectors up to [`LANES`] - 1 past that.
    fn phase_len(&self) -> usize {
        (self.rows + 1) * self.width + LANES
    }

    /// Tap `tap`'s inputs to `n` accumulators from output row `r0` on: its phase's
    /// elements from the tap's offset.
    #[inline(always)]
    pub(super) fn source<'a>(
        &self,
        split: &'a [f32],
        (phase, offset): (usize, usize),
        r0: usize,
        n: usize,
    ) -> &'a [f32] {
        &split[phase * self.phase_len() + r0 * self.width + offset..][..n]
    }

    /// The output plane `out` (`oh × ow`) a block of about [`BLOCK`] accumulators at a
    /// time: `block(r0, acc)` computes the rows from `r0` on into `acc` (`width` per row,
    /// the columns past `ow` dropped), and each kept one goes out through `finish`. Every
    /// element of `out` is written. `block` is to be passed in place, marked
    /// `#[inline(always)]`: left as a function of its own, a closure is compiled with the
    /// crate's baseline instructions, not those of the caller's `simd::vectorized`.
    #[inline(always)]
    pub(super) fn by_blocks(
        &self,
        [oh, ow]: [usize; 2],
        acc: &mut Vec<f32>,
        out: &mut [MaybeUninit<f32>],
        mut block: impl FnMut(usize, &mut [f32]),
        finish: impl Fn(f32) -> f32,
    ) {
        let width = self.width;
        let rows = (BLOCK / width).clamp(1, oh);
        let acc = scratch(acc, (rows * width).next_multiple_of(LANES));
        for r0 in (0..oh).step_by(rows) {
            // Whole vectors: the accumulators past the block's are computed and dropped,
            // so that no loop over them ends in a scalar remainder (up to 15 of 77 values
            // on a 7×7 plane with a 5×5 window, each pass of taps and the activation).
            let acc = &mut acc[..((oh - r0).min(rows) * width).next_multiple_of(LANES)];
            block(r0, acc);
            // Narrow rows: `finish` over the whole block first, dropped columns too, as
            // one long vector loop (rows 7 or 14 long left SiLU's arithmetic mostly scalar,
            // a third of EfficientNet's depthwise time), then the kept columns copied out.
            let narrow = ow < NARROW;
            if narrow {
                acc.iter_mut().for_each(|a| *a = finish(*a));
            }
            for (row, acc) in out[r0 * ow..].chunks_mut(ow).zip(acc.chunks(width)) {
                for (o, &a) in row.iter_mut().zip(acc) {
                    o.write(if narrow { a } else { finish(a) });
                }
            }
        }
    }

    /// The depthwise convolution of the `split` plane by the taps' weights `w`, plus `b`,
    /// for the output rows from `r0` on, into `acc` (`width` per row, whole rows: the
    /// columns past the output's are computed too).
    #[inline(always)]
    pub(super) fn depthwise_rows(
        &self,
        split: &[f32],
        w: &[f32],
        b: f32,
        r0: usize,
        acc: &mut [f32],
    ) {
        acc.fill(b);
        let n = acc.len();
        let src = |t| self.source(split, t, r0, n);
        // Three taps per pass over the accumulators (a kernel row of a 3×3), added in the
        // taps' order: the same sums as one tap at a time, a third of the loads and stores
        // of the block. Short blocks (narrow planes) go by whole vectors, each by value in
        // one register, then the rest, if any (`by_blocks` leaves none): the compiler's own
        // vector loop ends in up to 15 scalar steps, as costly as the vectors on 80 values.
        // Long blocks keep its loop, unrolled over several vectors (faster there by a tenth).
        let whole = if n <= SHORT { n - n % LANES } else { 0 };
        let (w3, taps3) = (w.chunks_exact(3), self.taps.chunks_exact(3));
        let (w1, taps1) = (w3.remainder(), taps3.remainder());
        for (w, t) in w3.zip(taps3) {
            let (s0, s1, s2) = (src(t[0]), src(t[1]), src(t[2]));
            let (vectors, rest) = acc.split_at_mut(whole);
            for (k, a) in vectors.chunks_exact_mut(LANES).enumerate() {
                let at = k * LANES..(k + 1) * LANES;
                let (x0, x1, x2) = (&s0[at.clone()], &s1[at.clone()], &s2[at]);
                let mut v: Lanes = a.try_into().expect("a vector");
                for l in 0..LANES {
                    v[l] = v[l] + w[0] * x0[l] + w[1] * x1[l] + w[2] * x2[l];
                }
                a.copy_from_slice(&v);
            }
            let (s0, s1, s2) = (&s0[whole..], &s1[whole..], &s2[whole..]);
            for (((a, &x0), &x1), &x2) in rest.iter_mut().zip(s0).zip(s1).zip(s2) {
                *a = *a + w[0] * x0 + w[1] * x1 + w[2] * x2;
            }
        }
        for (&wv, &t) in w1.iter().zip(taps1) {
            for (a, &s) in acc.iter_mut().zip(src(t)) {
                *a += wv * s;
            }
        }
    }

    /// The input plane `x` `[h, w]` split into its phases in `out`, `pad` where padded.
    #[inline(always)]
    pub(super) fn split(&self, x: &[f32], w: usize, pad: f32, out: &mut Vec<f32>) {
        self.split_with::<true>(x, w, pad, out, |v| v)
    }

    /// [`Phases::split`] of `f` of each input value (`pad` itself where padded): a
    /// convolution's bias and activation applied on the way, rather than in a pass of
    /// their own over the whole input first.
    #[inline(always)]
    pub(super) fn split_map(
        &self,
        x: &[f32],
        w: usize,
        pad: f32,
        out: &mut Vec<f32>,
        f: impl Fn(f32) -> f32,
    ) {
        self.split_with::<false>(x, w, pad, out, f)
    }

    /// [`Phases::split_map`]; with `COPY` (`f` the identity), rows without a stride are
    /// copied by `memcpy`, which on 14-wide rows beats a vector loop and its remainder.
    #[inline(always)]
    fn split_with<const COPY: bool>(
        &self,
        x: &[f32],
        w: usize,
        pad: f32,
        out: &mut Vec<f32>,
        f: impl Fn(f32) -> f32,
    ) {
        let [sh, sw] = self.stride;
        let len = self.phase_len();
        let h = x.len() / w;
        // Only sized here: every element is written below, the input's or `pad` (a fill of
        // the whole buffer first was a pass as long as the copy).
        let out = scratch(out, sh * sw * len);
        if sw == 2 {
            return self.split_pairs(x, w, pad, out, f);
        }
        for (p, phase) in out.chunks_exact_mut(len).enumerate() {
            let (a, b) = (p / sw, p % sw);
            // Input columns x with (x + pad) % sw == b land at (x + pad) / sw, from `lead`.
            let first = (b + sw - self.pad[1] % sw) % sw;
            let lead = (first + self.pad[1]) / sw;
            let n = w.saturating_sub(first).div_ceil(sw);
            for (u, row) in phase.chunks_mut(self.width).enumerate() {
                let y = self.input_row(u, a, h);
                let Some(y) = y.filter(|_| row.len() == self.width && n > 0) else {
                    row.fill(pad);
                    continue;
                };
                let src = &x[y * w + first..(y + 1) * w];
                let dst = padded_middle(row, lead, n, pad);
                match sw {
                    1 if COPY => dst.copy_from_slice(src),
                    1 => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = f(s)),
                    _ => {
                        for (d, s) in dst.iter_mut().zip(src.chunks(sw)) {
                            *d = f(s[0]);
                        }
                    }
                }
            }
        }
    }

    /// [`Phases::split_with`] for a column stride of 2 (most strided layers): each input
    /// row read once into both its phases' rows, its even columns to one and its odd ones
    /// to the other, where a pass per phase read it twice (from L3, on the expanded rows
    /// of an inverted block's band).
    #[inline(always)]
    fn split_pairs(&self, x: &[f32], w: usize, pad: f32, out: &mut [f32], f: impl Fn(f32) -> f32) {
        let len = self.phase_len();
        let h = x.len() / w;
        let pw = self.pad[1];
        // Input column c lands in phase (c + pw) % 2 at (c + pw) / 2: the even columns in
        // phase pw % 2 from pw / 2 on, the odd ones in the other from (pw + 1) / 2 on.
        let (even_lead, odd_lead) = (pw / 2, pw.div_ceil(2));
        let (evens, odds) = (w.div_ceil(2), w / 2);
        for (a, phases) in out.chunks_exact_mut(2 * len).enumerate() {
            let (p0, p1) = phases.split_at_mut(len);
            let rows = p0.chunks_mut(self.width).zip(p1.chunks_mut(self.width));
            for (u, (r0, r1)) in rows.enumerate() {
                let y = self.input_row(u, a, h);
                let Some(y) = y.filter(|_| r0.len() == self.width && evens > 0) else {
                    r0.fill(pad);
                    r1.fill(pad);
                    continue;
                };
                let (even_row, odd_row) = if pw.is_multiple_of(2) {
                    (r0, r1)
                } else {
                    (r1, r0)
                };
                let even_dst = padded_middle(even_row, even_lead, evens, pad);
                let odd_dst = padded_middle(odd_row, odd_lead, odds, pad);
                simd::deinterleave(even_dst, odd_dst, &x[y * w..(y + 1) * w], &f);
            }
        }
    }

    /// The input row (of `h`) that phase row `u` of the phases of row offset `a` holds:
    /// `u · stride + a - pad`, none in the padding and the rows of slack.
    #[inline(always)]
    fn input_row(&self, u: usize, a: usize, h: usize) -> Option<usize> {
        (u * self.stride[0] + a)
            .checked_sub(self.pad[0])
            .filter(|&y| y < h)
    }
}

/// The `n` values of a phase row from `lead` on, to be written, with `pad` written before
/// and after them.
#[inline(always)]
fn padded_middle(row: &mut [f32], lead: usize, n: usize, pad: f32) -> &mut [f32] {
    let (before, rest) = row.split_at_mut(lead);
    let (middle, after) = rest.split_at_mut(n);
    pad_few(before, pad);
    pad_few(after, pad);
    middle
}

/// `v` into each of the few elements of `s` (a row's padding, a column or two), by plain
/// stores: a fill is compiled to a call of `memset`, which for 4 or 8 bytes cost more than
/// the row's copy (two of them on every row of every split plane).
#[inline(always)]
fn pad_few(s: &mut [f32], v: f32) {
    for x in s {
        // SAFETY: `x` is a valid, aligned, exclusive reference. A volatile store is one the
        // compiler keeps as it is, not merged into a call of `memset`.
        unsafe { std::ptr::write_volatile(x, v) };
    }
}

/// A vector of `f32`s (AVX-512's 16): the unit [`Phases::by_blocks`] rounds its blocks to.
const LANES: usize = 16;
type Lanes = [f32; LANES];

/// Blocks of at most this many accumulators are computed a vector at a time
/// ([`Phases::depthwise_rows`]).
const SHORT: usize = 512;

/// Output rows per pass: a block of about 4096 accumulators (16 KiB), in L1.
const BLOCK: usize = 4096;

/// Output rows narrower than this are finished as a whole block rather than row by row
/// (the extra pass costs more than short vector loops on 28 values and up).
const NARROW: usize = 28;

/// The `m` output planes of input channel `c` (input plane `x`, their weights `w`), with
/// the thread's buffers `split` and `acc`: every element of `out` is written (the contract
/// of `written_once`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn depthwise_planes(
    g: &Depthwise,
    phases: &Phases,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    c: usize,
    out: &mut [MaybeUninit<f32>],
    epilogue: impl Fn(f32) -> f32,
    split: &mut Vec<f32>,
    acc: &mut Vec<f32>,
) {
    let [oh, ow] = g.out_size;
    phases.split(x, g.in_size[1], 0.0, split);
    let split = &split[..];
    let taps = g.kernel[0] * g.kernel[1];
    for (j, out) in out.chunks_mut(oh * ow).enumerate() {
        let co = c * g.multiplier + j;
        let b = bias.map_or(0.0, |b| b[co]);
        let w = &w[j * taps..][..taps];
        phases.by_blocks(
            g.out_size,
            acc,
            out,
            #[inline(always)]
            |r0: usize, acc: &mut [f32]| phases.depthwise_rows(split, w, b, r0, acc),
            &epilogue,
        );
    }
}
