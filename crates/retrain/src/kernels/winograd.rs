//! Dense 3×3 convolutions with stride 1 or 2 (inference) by Winograd's minimal filtering
//! F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
//! each 2×2 block of output (a tile) comes from the 4×4 block of input under it as
//! `Aᵀ [Σ over input channels (G g Gᵀ) ⊙ (Bᵀ d B)] A`, so that the channel sums are 16
//! matrix products `M[k] = U[k] · V[k]` (`U[k]` `[cout, cin]` the transformed weights,
//! `V[k]` `[cin, tiles]` the transformed input) with 16 multiply-adds per tile and channel
//! pair where the direct convolution has 36, and no 9× patch matrix.
//!
//! At stride 2 a tile's 2×2 outputs read a 5×5 block of input. Along each axis its even
//! taps (`g0`, `g2`) see the even inputs as a stride-1 convolution, F(2, 2): 3 products for
//! 2 outputs, and its middle tap (`g1`) the odd inputs, 2 plain products: 5 for 2 where the
//! direct convolution has 6, so 25 per tile and channel pair where it has 36 (ResNet-50's
//! stride-2 layers, per image and one thread on the AVX2 machine, 56²→28²×128 3.2–3.3 →
//! 2.8–2.9 ms, 28²→14²×256 3.1–3.3 → 2.6–2.8: `examples/resnet_layers.rs`). Its transforms
//! only add and subtract (`G` holds `g0 + g2`): its outputs there are 0.8e-6 of the largest
//! from the direct convolution's (the stride-1 layers' 0.7e-6 to 1.4e-6 on the same data),
//! well inside the 1e-5 every kernel is held to. It runs where its tiles cover the output closely
//! ([`applies`]: not on a 7×7 output, whose 4×4 tiles would take 400 products per channel
//! pair against the direct 441).
//!
//! F(2×2, 3×3) rather than the larger F(4×4, 3×3) (36 products per 16 outputs against 16
//! per 4): at Lavin's points 0, ±1, ±2 the larger one's transforms (entries up to 8, and
//! 1/6, 1/24) put its outputs 1e-5 to 2e-5 of their largest magnitude away from the direct
//! convolution's at 128 to 256 channels, over the bound every kernel here is held to; this
//! one's entries are 0, ±1 and ±1/2. At the better conditioned points 0, 1, -1, 1/2, -2
//! (about 4e-6 on random data in an `f32` simulation), `examples/winograd_layers.rs`'s data
//! still gave 1.0e-5 at 256 channels and 1.4e-5 to 1.6e-5 at 512 (this kernel: 0.9e-6 to
//! 1.8e-6, on the example's data then), and at batch 8 it was faster only on the 56×56 and
//! 28×28 layers (by a sixth), not on the 14×14 and 7×7 ones, whose `V` and `M` grow and
//! whose planes have few tiles. F(3×3, 3×3) (25 products per 9 outputs; points 0, ±1 and
//! ±1/2 or ±2) gives 3.3e-6 to 6.3e-6 at 512 channels in such a simulation, where F(2×2,
//! 3×3) gives 0.9e-6 to 1.0e-6 (`scripts/winograd_error.py`): measured as F(4×4, 3×3)
//! was, about 1e-5 or more again.
//!
//! The weights are transformed once, when a network is folded for inference
//! ([`transform_weights`]; `kernels::WinogradWeight`): transformed for every call, they
//! cost as much as the products save on the deep layers (16 MB written per image at 512
//! channels). (Folding does not know the input's size: a stride-2 weight is transformed
//! even where its output will be too small for this kernel, as ResNet-50's last one at
//! 224×224, 16 MB kept unused.) Work is split into blocks of whole rows of tiles of one image, each block's
//! `V` and `M` about 2 MiB, or, on planes of few tiles, of whole images side by side; an
//! image's output has the same bits however it is batched, as with the other kernels (each
//! output is one sum in `pointwise::product`'s fixed order, whichever tiles share it). The
//! transforms run over unit-stride rows: the input rows split into even and odd columns,
//! the output transform over all of a block's tiles at once (planes of 7 tiles across
//! would leave vector loops 7 long).

use std::cell::RefCell;

use rayon::prelude::*;

use super::dense::Dense;
use super::fused::{Epilogue, Finish};
use super::pointwise::{self, Matrix, Shared};
use super::{Pointwise, simd};

/// Lanes of the weight transform (16 input channels at once), and the multiple that a
/// block's tiles are rounded up to in its products (`gemm`'s rows come in vectors of 16:
/// a remainder costs a whole vector anyway, and as part of a larger micro-tile it shares its
/// loads of `U`).
const L: usize = 16;

/// `V` and `M` of a block, in `f32`s (2 MiB): in L2 and the nearest part of L3 while the
/// products run over them. (1 to 4 MiB measured within a few percent of each other.)
const BLOCK: usize = 1 << 19;

/// Output rows and columns per tile (at either stride).
const OUT: usize = 2;

/// Products per tile: one per value of the tile's transformed input, 4×4 at stride 1, 5×5
/// at stride 2 (the input under a 2×2 tile of a stride-2 window).
const fn products(stride: usize) -> usize {
    if stride == 1 { 16 } else { 25 }
}

/// Which of the transformed weight's matrices product `k` takes: at stride 2, the last two
/// of each axis's 5 both take the kernel's middle tap (`g1`), so 16 matrices serve the 25
/// products.
const fn weight_of(stride: usize, k: usize) -> usize {
    if stride == 1 {
        return k;
    }
    let (i, j) = (k / 5, k % 5);
    (if i == 4 { 3 } else { i }) * 4 + if j == 4 { 3 } else { j }
}

/// Matrices in [`transform_weights`]'s result, the first dimension of its shape, at either
/// stride.
pub const PRODUCTS: usize = 16;

/// Fewest input and output channels for which the transforms pay.
pub const MIN_CHANNELS: usize = 8;

/// The shape of [`transform_weights`]'s result for `g`'s weight.
pub fn transformed_shape(g: &Dense) -> Vec<usize> {
    vec![PRODUCTS, g.channels_out, g.window.channels]
}

/// Tiles (2×2 output blocks) down and across an image's output plane.
fn tiles(g: &Dense) -> [usize; 2] {
    let [oh, ow] = g.window.out_size;
    [oh.div_ceil(OUT), ow.div_ceil(OUT)]
}

/// Whether [`forward`] takes this convolution: a 3×3 window with dilation 1, enough
/// channels for the transforms to pay, and stride 1, or stride 2 where the tiles cover the
/// output plane closely enough that their 25 products per 4 outputs stay under 0.8 of the
/// direct convolution's 36 (a 7×7 output takes 4×4 tiles: 400 products per channel pair
/// against 441).
pub fn applies(g: &Dense) -> bool {
    let [th, tw] = tiles(g);
    let [oh, ow] = g.window.out_size;
    let pays = g.window.stride == [1, 1] || 5 * products(2) * th * tw <= 4 * 9 * oh * ow;
    takes(g) && pays && g.window.channels >= MIN_CHANNELS && g.channels_out >= MIN_CHANNELS
}

/// Whether [`forward`] computes this convolution: a 3×3 window with stride 1 or 2 and
/// dilation 1 (whether it pays is [`applies`]).
pub(crate) fn takes(g: &Dense) -> bool {
    let w = &g.window;
    w.kernel == [3, 3] && matches!(w.stride, [1, 1] | [2, 2]) && w.dilation == [1, 1]
}

/// `G g Gᵀ` for each 3×3 kernel `g` of `weight` `[cout, cin, 3, 3]`, as `[16, cout, cin]`
/// (`U[k]` the `k`-th `[cout, cin]` matrix), 16 input channels at a time, for the
/// convolution's `stride` (1 or 2).
pub fn transform_weights(weight: &[f32], cout: usize, cin: usize, stride: usize) -> Vec<f32> {
    assert_eq!(weight.len(), cout * cin * 9, "a 3×3 convolution's weight");
    assert!(
        stride == 1 || stride == 2,
        "Winograd's kernel at stride 1 or 2"
    );
    const K: usize = PRODUCTS;
    // Stride 1: G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
    // Stride 2: G = [[1, 0, 0], [1, 0, 1], [0, 0, 1], [0, 1, 0]] (`transform_input_strided`).
    #[inline(always)]
    fn g(stride: usize, a: [&Lanes; 3], out: [&mut Lanes; 4]) {
        let [o0, o1, o2, o3] = out;
        for l in 0..L {
            let [a0, a1, a2] = a.map(|v| v[l]);
            o0[l] = a0;
            if stride == 1 {
                o1[l] = (a0 + a1 + a2) * 0.5;
                o2[l] = (a0 - a1 + a2) * 0.5;
                o3[l] = a2;
            } else {
                o1[l] = a0 + a2;
                o2[l] = a2;
                o3[l] = a1;
            }
        }
    }
    let mut u = vec![0f32; K * cout * cin];
    let mut rows = vec![0f32; cout * K * cin];
    rows.par_chunks_mut(K * cin)
        .zip(weight.par_chunks(9 * cin))
        .for_each(|(u, w)| {
            simd::vectorized(
                #[inline(always)]
                || {
                    let mut k = [[0f32; L]; 9];
                    let mut t = [[0f32; L]; 4 * 3];
                    let mut v = [[0f32; L]; K];
                    for c0 in (0..cin).step_by(L) {
                        let lanes = L.min(cin - c0);
                        for l in 0..lanes {
                            for (i, ki) in k.iter_mut().enumerate() {
                                ki[l] = w[(c0 + l) * 9 + i];
                            }
                        }
                        // G down each kernel column, then G along each row.
                        for s in 0..3 {
                            g(stride, [&k[s], &k[3 + s], &k[6 + s]], picks(&mut t, s, 3));
                        }
                        for i in 0..4 {
                            let row = [&t[i * 3], &t[i * 3 + 1], &t[i * 3 + 2]];
                            g(stride, row, picks(&mut v, i * 4, 1));
                        }
                        for (j, vj) in v.iter().enumerate() {
                            put(&mut u[j * cin + c0..], vj, lanes);
                        }
                    }
                },
            )
        });
    // From `[cout, K, cin]` (each output channel's kernels together) to `[K, cout, cin]`.
    for (o, row) in rows.chunks_exact(K * cin).enumerate() {
        for (k, part) in row.chunks_exact(cin).enumerate() {
            u[(k * cout + o) * cin..][..cin].copy_from_slice(part);
        }
    }
    u
}

type Lanes = [f32; L];

/// The first `lanes` of `v` to the start of `dst`: a whole vector at once when all are used.
#[inline(always)]
fn put(dst: &mut [f32], v: &Lanes, lanes: usize) {
    if lanes == L {
        dst[..L].copy_from_slice(v);
    } else {
        dst[..lanes].copy_from_slice(&v[..lanes]);
    }
}

/// Mutable references to `N` distinct elements of `v`, at `first + i · step`.
fn picks<const N: usize>(v: &mut [Lanes], first: usize, step: usize) -> [&mut Lanes; N] {
    let mut it = v.iter_mut().skip(first).step_by(step);
    std::array::from_fn(|_| it.next().expect("inside the tile"))
}

/// The convolution of `input` `[n, cin, h, w]` by the weight `[cout, cin, 3, 3]` that
/// [`transform_weights`] made `u` of (at `g`'s stride; dilation 1, padding as `g` says),
/// then `finish`, as `[n, cout, oh, ow]`; `g` is one that it [`takes`].
pub fn forward(g: &Dense, input: &[f32], u: &[f32], finish: Finish) -> Vec<f32> {
    let w = &g.window;
    let (n, cin, cout) = (w.batch, w.channels, g.channels_out);
    let [ih, iw] = w.in_size;
    let [oh, ow] = w.out_size;
    let [th, tw] = tiles(g);
    assert!(
        input.len() == n * cin * ih * iw && u.len() == PRODUCTS * cout * cin,
        "a 3×3 convolution's input and transformed weight"
    );
    assert!(takes(g), "a convolution Winograd's kernel takes");
    let strided = w.stride == [2, 2];
    const K1: usize = products(1);
    const K2: usize = products(2);
    let k_all = if strided { K2 } else { K1 };
    let out_image = cout * oh * ow;
    assert!(
        finish.residual.is_none_or(|r| r.len() == n * out_image),
        "a residual the output's shape"
    );
    // Rows of tiles per block: V and M (products · tiles · (cin + cout) values) about
    // `BLOCK`, spread evenly over the image's rows of tiles. Where an image has few tiles, a
    // block is whole images side by side instead (`images_per_block`).
    let most = (BLOCK / (k_all * (cin + cout) * tw)).max(1);
    let group = images_per_block(n, th * tw);
    let rows = if group > 1 {
        th
    } else {
        th.div_ceil(th.div_ceil(most))
    };
    let stride = (group * rows * tw).next_multiple_of(L);
    // (first image, images, first row of tiles)
    let blocks = pointwise::blocks(n, group, th, rows);
    let mut out = Vec::with_capacity(n * out_image);
    let dst = Shared(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    blocks.into_par_iter().for_each(|(i0, images, r0)| {
        // Image `i0 + k`'s part of the block: its rows of tiles, from column `k · th · tw`.
        let part = |k: usize| Block {
            rows: r0..(r0 + rows).min(th),
            tw,
            stride,
            base: k * rows * tw,
        };
        // The products run over whole vectors of tiles: the last few columns of `V` and `M`
        // are left from earlier blocks (or zero), and not read back.
        let count = (images * part(0).rows.len() * tw).next_multiple_of(L);
        thread_local! {
            static BUFFERS: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
        }
        BUFFERS.with_borrow_mut(|[v, m, scratch]| {
            v.resize(k_all * cin * stride, 0.0);
            m.resize(k_all * cout * stride, 0.0);
            for k in 0..images {
                let x = &input[(i0 + k) * cin * ih * iw..][..cin * ih * iw];
                simd::vectorized(
                    #[inline(always)]
                    || match strided {
                        false => transform_input(g, x, &part(k), v, scratch),
                        true => transform_input_strided(g, x, &part(k), v, scratch),
                    },
                );
            }
            for k in 0..k_all {
                let uk = Matrix {
                    values: &u[weight_of(w.stride[0], k) * cout * cin..][..cout * cin],
                    rows: cout,
                    cols: cin,
                    row_stride: cin,
                    col_stride: 1,
                };
                let vk = &v[k * cin * stride..][..cin * stride];
                let mk = &mut m[k * cout * stride..][..cout * stride];
                // SAFETY: `mk` holds `cout` rows of `stride >= count` values.
                unsafe { pointwise::product(uk, vk, stride, count, mk.as_mut_ptr(), stride) };
            }
            for k in 0..images {
                let i = i0 + k;
                // SAFETY: image `i`'s output is inside the capacity; this block writes only
                // the output rows of its rows of tiles, which no other block touches.
                let y = unsafe { dst.at(i * out_image) };
                let residual = finish.residual.map(|r| &r[i * out_image..][..out_image]);
                let (bias, part) = (finish.bias, part(k));
                per_epilogue!(finish.epilogue, |E| simd::vectorized(
                    #[inline(always)]
                    || match strided {
                        false => transform_output::<K1>(g, m, &part, bias, residual, E, y, scratch),
                        true => transform_output::<K2>(g, m, &part, bias, residual, E, y, scratch),
                    }
                ));
            }
        });
    });
    // SAFETY: the blocks' rows of tiles cover every output row of every channel of every
    // image, all written.
    unsafe { out.set_len(n * out_image) };
    out
}

/// Whole images side by side in a block of [`forward`] where an image has fewer than 128
/// tiles (planes of 14×14 and less): a product 16 tiles wide (7×7) runs on `gemm`'s
/// narrowest micro-tile and reads all of `U` (16 MB at 512 channels) for one image.
/// Each output is the same bits either way (`pointwise::product`).
fn images_per_block(batch: usize, tiles: usize) -> usize {
    128usize.div_ceil(tiles).clamp(1, batch)
}

/// Whole rows of tiles of one image, laid out `t = base + (ty - rows.start) · tw + tx` in
/// rows of `stride` values of `V[k][c]` and `M[k][o]`.
struct Block {
    rows: std::ops::Range<usize>,
    tw: usize,
    stride: usize,
    base: usize,
}

/// `V[k][c]` (in `v`, `[K, cin, stride]`) for the block's tiles of image `x` `[cin, h, w]`.
/// Per channel and row of tiles, the 4 padded input rows under it are split into their even
/// and odd columns (a tile's 4 columns are even[tx], odd[tx], even[tx + 1], odd[tx + 1]),
/// so that `Bᵀ` down and `B` along are unit-stride vector arithmetic over the row's tiles.
#[inline(always)]
fn transform_input(g: &Dense, x: &[f32], block: &Block, v: &mut [f32], scratch: &mut Vec<f32>) {
    const IN: usize = 4;
    let w = &g.window;
    let (cin, [ih, iw], [pt, pl]) = (w.channels, w.in_size, w.pad_begin);
    let (tw, stride) = (block.tw, block.stride);
    // Each row: `half` even columns then `half` odd ones (padded column j reads j - pl).
    let half = tw + 1;
    scratch.resize(2 * IN * 2 * half, 0.0);
    let (rows, down) = scratch.split_at_mut(IN * 2 * half);
    for c in 0..cin {
        let plane = &x[c * ih * iw..][..ih * iw];
        for (q, ty) in block.rows.clone().enumerate() {
            for (r, row) in rows.chunks_exact_mut(2 * half).enumerate() {
                let (even, odd) = row.split_at_mut(half);
                match (OUT * ty + r).checked_sub(pt).filter(|&y| y < ih) {
                    Some(y) => deinterleave(&plane[y * iw..][..iw], pl, even, odd),
                    None => row.fill(0.0),
                }
            }
            // Bᵀ down the columns: [p0 - p2, p1 + p2, p2 - p1, p1 - p3].
            let (p0, rest) = rows.split_at(2 * half);
            let (p1, rest) = rest.split_at(2 * half);
            let (p2, p3) = rest.split_at(2 * half);
            let (d0, rest) = down.split_at_mut(2 * half);
            let (d1, rest) = rest.split_at_mut(2 * half);
            let (d2, d3) = rest.split_at_mut(2 * half);
            for j in 0..2 * half {
                d0[j] = p0[j] - p2[j];
                d1[j] = p1[j] + p2[j];
                d2[j] = p2[j] - p1[j];
                d3[j] = p1[j] - p3[j];
            }
            // B along: [e0 - e2, d1 + e2, e2 - d1, d1 - d3] of each tile's columns.
            for (i, row) in down.chunks_exact(2 * half).enumerate() {
                let (even, odd) = row.split_at(half);
                let at = |j: usize| ((i * IN + j) * cin + c) * stride + block.base + q * tw;
                let (v0, rest) = v[at(0)..].split_at_mut(cin * stride);
                let (v1, rest) = rest.split_at_mut(cin * stride);
                let (v2, rest) = rest.split_at_mut(cin * stride);
                let (v0, v1, v2, v3) =
                    (&mut v0[..tw], &mut v1[..tw], &mut v2[..tw], &mut rest[..tw]);
                let (e0, e2, d1, d3) = (&even[..tw], &even[1..][..tw], &odd[..tw], &odd[1..][..tw]);
                // One output row a loop: with four, the checks that they overlap none of
                // the inputs were too many for LLVM, which left the loop scalar.
                for (v, (&a, &b)) in v0.iter_mut().zip(e0.iter().zip(e2)) {
                    *v = a - b;
                }
                for (v, (&a, &b)) in v1.iter_mut().zip(d1.iter().zip(e2)) {
                    *v = a + b;
                }
                for (v, (&a, &b)) in v2.iter_mut().zip(e2.iter().zip(d1)) {
                    *v = a - b;
                }
                for (v, (&a, &b)) in v3.iter_mut().zip(d1.iter().zip(d3)) {
                    *v = a - b;
                }
            }
        }
    }
}

/// [`transform_input`] for a stride-2 window: a tile's 2×2 outputs read the 5×5 input from
/// row `4ty - pt` and column `4tx - pl`, whose transform along either axis takes `d0..d4`
/// to `[d0 - d2, d2, d4 - d2, d1, d3]`: the even taps' F(2, 2) (the products that `g0`,
/// `g0 + g2` and `g2` make) and the middle tap's two plain ones (by `g1`). Each padded input
/// row is split into its 4 column phases (column `4t + p` to phase `p`, through its even
/// and odd columns), so that the transform along is unit-stride arithmetic over the row's
/// tiles (a tile's 5 columns are phase 0, 1, 2 and 3 at `tx`, and phase 0 at `tx + 1`).
#[inline(always)]
fn transform_input_strided(
    g: &Dense,
    x: &[f32],
    block: &Block,
    v: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    const IN: usize = 5;
    let w = &g.window;
    let (cin, [ih, iw], [pt, pl]) = (w.channels, w.in_size, w.pad_begin);
    let (tw, stride) = (block.tw, block.stride);
    // Columns per phase; a row is its 4 phases one after the other. Scratch: the tile row's
    // IN split input rows, one row's even and odd halves, the two computed rows down.
    let q = tw + 1;
    scratch.resize((IN + 1 + 2) * 4 * q, 0.0);
    let (rows, rest) = scratch.split_at_mut(IN * 4 * q);
    let (halves, down) = rest.split_at_mut(4 * q);
    for c in 0..cin {
        let plane = &x[c * ih * iw..][..ih * iw];
        for (t, ty) in block.rows.clone().enumerate() {
            for (r, row) in rows.chunks_exact_mut(4 * q).enumerate() {
                let Some(y) = (2 * OUT * ty + r).checked_sub(pt).filter(|&y| y < ih) else {
                    row.fill(0.0);
                    continue;
                };
                let (even, odd) = halves.split_at_mut(2 * q);
                deinterleave(&plane[y * iw..][..iw], pl, even, odd);
                let (p0, rest) = row.split_at_mut(q);
                let (p1, rest) = rest.split_at_mut(q);
                let (p2, p3) = rest.split_at_mut(q);
                simd::deinterleave(p0, p2, even, |v| v);
                simd::deinterleave(p1, p3, odd, |v| v);
            }
            // Down the columns: [r0 - r2, r2, r4 - r2, r1, r3].
            let row = |i: usize| &rows[i * 4 * q..][..4 * q];
            let (d0, d2) = down.split_at_mut(4 * q);
            for (d, (&a, &b)) in d0.iter_mut().zip(row(0).iter().zip(row(2))) {
                *d = a - b;
            }
            for (d, (&a, &b)) in d2.iter_mut().zip(row(4).iter().zip(row(2))) {
                *d = a - b;
            }
            // Along each: [p0 - p2, p2, p0' - p2, p1, p3] (p0' the next tile's phase 0).
            for (i, d) in [&*d0, row(2), &*d2, row(1), row(3)].into_iter().enumerate() {
                let phase = |p: usize, from: usize| &d[p * q + from..][..tw];
                let at = (i * IN * cin + c) * stride + block.base + t * tw;
                let (v0, rest) = v[at..].split_at_mut(cin * stride);
                let (v1, rest) = rest.split_at_mut(cin * stride);
                let (v2, rest) = rest.split_at_mut(cin * stride);
                let (v3, rest) = rest.split_at_mut(cin * stride);
                let (p0, p2, next) = (phase(0, 0), phase(2, 0), phase(0, 1));
                for (v, (&a, &b)) in v0[..tw].iter_mut().zip(p0.iter().zip(p2)) {
                    *v = a - b;
                }
                v1[..tw].copy_from_slice(p2);
                for (v, (&a, &b)) in v2[..tw].iter_mut().zip(next.iter().zip(p2)) {
                    *v = a - b;
                }
                v3[..tw].copy_from_slice(phase(1, 0));
                rest[..tw].copy_from_slice(phase(3, 0));
            }
        }
    }
}

/// `even[h]`, `odd[h]` = columns `2h`, `2h + 1` of `src` padded with `pl` zeros before it
/// (and zeros after it).
#[inline(always)]
fn deinterleave(src: &[f32], pl: usize, even: &mut [f32], odd: &mut [f32]) {
    let col = |j: usize| {
        j.checked_sub(pl)
            .and_then(|j| src.get(j))
            .copied()
            .unwrap_or(0.0)
    };
    let half = even.len();
    // Pairs whose both columns are inside `src`: 2h >= pl and 2h + 1 - pl < len.
    let lo = pl.div_ceil(2).min(half);
    let hi = ((src.len() + pl) / 2).clamp(lo, half);
    for h in (0..lo).chain(hi..half) {
        even[h] = col(2 * h);
        odd[h] = col(2 * h + 1);
    }
    let pairs = src[2 * lo - pl..].chunks_exact(2);
    for ((e, o), p) in even[lo..hi].iter_mut().zip(&mut odd[lo..hi]).zip(pairs) {
        *e = p[0];
        *o = p[1];
    }
}

/// The block's output rows from `M` (in `m`, `[K, cout, stride]`, `K` the products of a
/// tile: 16 at stride 1, 25 at stride 2): per channel and row of tiles, `A` along each
/// tile's columns and `Aᵀ` down to the even and odd columns of its two output rows, then the
/// bias, the residual and the epilogue, interleaved into the image's output `y` `[cout,
/// oh, ow]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_output<const K: usize>(
    g: &Dense,
    m: &[f32],
    block: &Block,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    epilogue: Epilogue,
    y: *mut f32,
    scratch: &mut Vec<f32>,
) {
    let [oh, ow] = g.window.out_size;
    let cout = g.channels_out;
    let (tw, stride) = (block.tw, block.stride);
    // The transforms are per tile: they run over the block's tiles at once (long vectors
    // on planes of few tiles across). Rows: each tile row along (even and odd columns of
    // each of 4), then the 2 output rows' even and odd columns.
    let used = block.rows.len() * tw;
    // The transformed tile's side.
    let side = if K == products(1) { 4 } else { 5 };
    scratch.resize(2 * side * used + 2 * OUT * used, 0.0);
    let (along, outs) = scratch.split_at_mut(2 * side * used);
    for c in 0..cout {
        let b = bias.map_or(0.0, |b| b[c]);
        let mk = |k: usize| &m[(k * cout + c) * stride + block.base..][..used];
        // A along each of the tile's rows, then Aᵀ down the even and the odd columns.
        for (i, eo) in along.chunks_exact_mut(2 * used).enumerate() {
            let (even, odd) = eo.split_at_mut(used);
            a_transposed::<K>(|j| mk(i * side + j), even, odd);
        }
        let along = &*along;
        let rows = |from: usize| move |i: usize| &along[(2 * i + from) * used..][..used];
        let (e0, rest) = outs.split_at_mut(used);
        let (e1, rest) = rest.split_at_mut(used);
        let (o0, o1) = rest.split_at_mut(used);
        a_transposed::<K>(rows(0), e0, e1);
        a_transposed::<K>(rows(1), o0, o1);
        for (q, ty) in block.rows.clone().enumerate() {
            let (e0, o0, e1, o1) = (
                &e0[q * tw..][..tw],
                &o0[q * tw..][..tw],
                &e1[q * tw..][..tw],
                &o1[q * tw..][..tw],
            );
            for (r, (even, odd)) in [(e0, o0), (e1, o1)].into_iter().enumerate() {
                let oy = OUT * ty + r;
                if oy >= oh {
                    continue;
                }
                let at = c * oh * ow + oy * ow;
                // SAFETY: output row `oy` of channel `c` is inside the image's `cout · oh ·
                // ow` values, and this block's alone.
                let out = unsafe { std::slice::from_raw_parts_mut(y.add(at), ow) };
                let pairs = ow / 2;
                let (full, last) = out.split_at_mut(2 * pairs);
                let values = even.iter().zip(odd);
                match residual.map(|r| &r[at..][..ow]) {
                    None => {
                        for (o, (&e, &d)) in full.chunks_exact_mut(2).zip(values) {
                            o[0] = epilogue.value(e + b);
                            o[1] = epilogue.value(d + b);
                        }
                        if let Some(o) = last.first_mut() {
                            *o = epilogue.value(even[pairs] + b);
                        }
                    }
                    Some(res) => {
                        let rp = res.chunks_exact(2);
                        for ((o, (&e, &d)), s) in full.chunks_exact_mut(2).zip(values).zip(rp) {
                            o[0] = epilogue.value(e + b + s[0]);
                            o[1] = epilogue.value(d + b + s[1]);
                        }
                        if let Some(o) = last.first_mut() {
                            *o = epilogue.value(even[pairs] + b + res[2 * pairs]);
                        }
                    }
                }
            }
        }
    }
}

/// `Aᵀ` over the rows `r(0)`, `r(1)`, … of values: for the 16 products of stride 1 (4
/// rows) `first = r0 + r1 + r2`, `second = r1 - r2 - r3`; for the 25 of stride 2 (5 rows)
/// `first = r0 + r1 + r3`, `second = r1 + r2 + r4` (F(2, 2)'s outputs of the even taps
/// plus the middle tap's products).
#[inline(always)]
fn a_transposed<'a, const K: usize>(
    r: impl Fn(usize) -> &'a [f32],
    first: &mut [f32],
    second: &mut [f32],
) {
    if K == products(1) {
        let [r0, r1, r2, r3] = [0, 1, 2, 3].map(r);
        let rows = r0.iter().zip(r1).zip(r2).zip(r3);
        for ((f, s), (((&a, &b), &c), &d)) in first.iter_mut().zip(second.iter_mut()).zip(rows) {
            *f = a + b + c;
            *s = b - c - d;
        }
    } else {
        // One output a loop, as in `transform_input`.
        let [r0, r1, r2, r3, r4] = [0, 1, 2, 3, 4].map(r);
        for (f, ((&a, &b), &d)) in first.iter_mut().zip(r0.iter().zip(r1).zip(r3)) {
            *f = a + b + d;
        }
        for (s, ((&b, &c), &e)) in second.iter_mut().zip(r1.iter().zip(r2).zip(r4)) {
            *s = b + c + e;
        }
    }
}
