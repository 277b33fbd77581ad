//! Dense 3×3 convolutions with stride 1 or 2 (inference) by Winograd's minimal filtering
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016): each block of
//! output (a tile) comes from the block of input under it as `Aᵀ [Σ over input channels (G
//! g Gᵀ) ⊙ (Bᵀ d B)] A`, so that the channel sums are matrix products `M[k] = U[k] · V[k]`
//! (`U[k]` `[cout, cin]` the transformed weights, `V[k]` `[cin, tiles]` the transformed
//! input), one per value of a transformed tile, and no 9× patch matrix.
//!
//! At stride 1 a tile is 2 rows of 4 outputs, F(2×4, 3×3): F(2, 3) down (points 0, ±1;
//! `Bᵀ`, `G` and `A` of entries 0, ±1, ±1/2) and F(4, 3) along (points 0, ±1, ±2: entries
//! up to 5 in `Bᵀ`, 8 in `A`, and 1/24 in `G`). Its 4×6 transformed input makes 24 products
//! per 8 outputs and channel pair where the direct convolution has 72, and F(2×2, 3×3),
//! this kernel's before, 32; `V` and `M` are smaller by as much. On ResNet-50's stride-1
//! layers (per image, one thread, the AVX2 machine, `examples/resnet_layers.rs`) F(2×2)
//! took 1.8, 1.7, 1.6–1.9 and 1.8–2.2 ms at 56², 28², 14² and 7², this one 1.5, 1.5, 1.3
//! and 1.4–1.6 (with its transforms run image by image on the planes that a block holds
//! several of, 1.3–1.4 and 1.6–1.8 at 14² and 7²). Its outputs there are 1.3e-6 to 3.3e-6
//! of the largest from the direct convolution's (F(2×2): 0.7e-6 to 1.4e-6), inside the 1e-5 every kernel is held to. In
//! an `f32` simulation (`scripts/winograd_error.py`) one axis of F(4, 3) costs about three
//! times F(2×2)'s error (1.9e-6 and 2.8e-6 to 3.2e-6 at 256 and 512 channels, against
//! 0.6e-6 and 0.9e-6 to 1.0e-6; the points 0, 1, -1, 1/2, -2 would give 1.2e-6 to 2.2e-6
//! for transforms of more multiplications), as the kernel measures on those layers; both
//! axes, F(4×4, 3×3), put a kernel's outputs 1e-5 to 2e-5 away at 128 to 256 channels
//! (at the points 0, 1, -1, 1/2, -2, 1.0e-5 at 256 and 1.4e-5 to 1.6e-5 at 512: about three
//! times its simulation), and F(3×3, 3×3) gives 3e-6 to 6e-6 at 512 channels simulated.
//!
//! At stride 2 a tile's 2×2 outputs read a 5×5 block of input. Along each axis its even
//! taps (`g0`, `g2`) see the even inputs as a stride-1 convolution, F(2, 2): 3 products for
//! 2 outputs, and its middle tap (`g1`) the odd inputs, 2 plain products: 5 for 2 where the
//! direct convolution has 6, so 25 per tile and channel pair where it has 36 (ResNet-50's
//! stride-2 layers, per image and one thread on the AVX2 machine, 56²→28²×128 3.2–3.3 →
//! 2.8 ms, 28²→14²×256 3.1–3.3 → 2.4–2.6: `examples/resnet_layers.rs`). Its transforms
//! only add and subtract (`G` holds `g0 + g2`): its outputs there are 0.8e-6 of the largest
//! from the direct convolution's. Either stride runs where its tiles cover the output
//! closely enough to pay ([`applies`]: a 7×7 output at stride 2 does, its 4×4 tiles 400
//! products per channel pair against the direct 441; a 5×5 one, 225 against 225, not).
//!
//! The weights are transformed once, when a network is folded for inference
//! ([`transform_weights`]; `kernels::WinogradWeight`): transformed for every call, they
//! cost as much as the products save on the deep layers (16 MB written per image at 512
//! channels). (Folding does not know the input's size: a stride-2 weight is transformed
//! even where its output will be too small for this kernel, and then kept unused.) Work is
//! split into blocks of whole rows of tiles of one image, each block's `V` and `M` about 2
//! MiB, or, on planes of few tiles, of whole images (their rows of tiles interleaved,
//! [`Block`]); an image's output has the same bits
//! however it is batched, as with the other kernels (each output is one sum in
//! `pointwise::product`'s fixed order, whichever tiles share it). The transforms run as
//! unit-stride vector loops: the input rows split into their column phases, over all of a
//! block's tiles at once, of all its images (planes of 2 to 14 tiles across would leave
//! loops that short, most of their arithmetic scalar).

use std::cell::RefCell;

use rayon::prelude::*;

use super::dense::Dense;
use super::fused::{Epilogue, Finish};
use super::pointwise::{self, Matrix, Shared};
use super::{Pointwise, scratch, simd};

/// Lanes of the weight transform (16 input channels at once), and the multiple that a
/// block's tiles are rounded up to in its products (`gemm`'s rows come in vectors of 16:
/// a remainder costs a whole vector anyway, and as part of a larger micro-tile it shares its
/// loads of `U`).
const L: usize = 16;

/// `V` and `M` of a block, in `f32`s (2 MiB): in L2 and the nearest part of L3 while the
/// products run over them. (1 to 4 MiB measured within a few percent of each other.)
const BLOCK: usize = 1 << 19;

/// Output rows per tile (at either stride).
const OUT: usize = 2;

/// Output columns per tile: 4 at stride 1 (F(4, 3) along the rows), 2 at stride 2.
const fn columns(stride: usize) -> usize {
    if stride == 1 { 4 } else { 2 }
}

/// Products per tile: one per value of the tile's transformed input, 4×6 at stride 1 (the
/// 4×6 input under a 2×4 tile), 5×5 at stride 2 (the input under a 2×2 tile of a stride-2
/// window).
const fn products(stride: usize) -> usize {
    if stride == 1 { 24 } else { 25 }
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

/// Matrices in [`transform_weights`]'s result, the first dimension of its shape: 24 at
/// stride 1, 16 at stride 2.
pub const fn matrices(stride: usize) -> usize {
    if stride == 1 { 24 } else { 16 }
}

/// Fewest input and output channels for which the transforms pay.
pub const MIN_CHANNELS: usize = 8;

/// The shape of [`transform_weights`]'s result for `g`'s weight (at `g`'s stride).
pub fn transformed_shape(g: &Dense) -> Vec<usize> {
    vec![
        matrices(g.window.stride[0]),
        g.channels_out,
        g.window.channels,
    ]
}

/// Tiles (2×4 output blocks at stride 1, 2×2 at stride 2) down and across an image's
/// output plane.
fn tiles(g: &Dense) -> [usize; 2] {
    let [oh, ow] = g.window.out_size;
    [oh.div_ceil(OUT), ow.div_ceil(columns(g.window.stride[1]))]
}

/// Whether [`forward`] takes this convolution: a 3×3 window with dilation 1 and stride 1
/// or 2, enough channels for the transforms to pay, and tiles that cover the output plane
/// closely enough that their products stay under 0.92 of the direct convolution's 9 per
/// output. At stride 2 a 7×7 output takes 4×4 tiles, 400 products per channel pair against
/// 441 (0.91): on one thread 15–20% faster than the patches at 32 to 512 channels
/// (ResNet-50's last stride-2 layer 3.17 → 2.68 ms an image), where a 5×5 output's 3×3
/// tiles (225 against 225) were 30% slower. At stride 1, 24 products per 2×4 tile, only
/// planes a tile or so wide fall short.
pub fn applies(g: &Dense) -> bool {
    let [th, tw] = tiles(g);
    let [oh, ow] = g.window.out_size;
    let pays = 25 * products(g.window.stride[0]) * th * tw <= 23 * 9 * oh * ow;
    takes(g) && pays && g.window.channels >= MIN_CHANNELS && g.channels_out >= MIN_CHANNELS
}

/// Whether [`forward`] computes this convolution: a 3×3 window with stride 1 or 2 and
/// dilation 1 (whether it pays is [`applies`]).
pub(crate) fn takes(g: &Dense) -> bool {
    let w = &g.window;
    w.kernel == [3, 3] && matches!(w.stride, [1, 1] | [2, 2]) && w.dilation == [1, 1]
}

/// `G g Gᵀ` for each 3×3 kernel `g` of `weight` `[cout, cin, 3, 3]`, as `[matrices(stride),
/// cout, cin]` (`U[k]` the `k`-th `[cout, cin]` matrix), 16 input channels at a time, for
/// the convolution's `stride` (1 or 2): at stride 1 `G` down the kernel's columns is F(2,
/// 3)'s and along its rows F(4, 3)'s (4 × 6 matrices), at stride 2 both are the stride-2
/// one's (4 × 4: [`weight_of`] maps the 25 products to them).
pub fn transform_weights(weight: &[f32], cout: usize, cin: usize, stride: usize) -> Vec<f32> {
    assert_eq!(weight.len(), cout * cin * 9, "a 3×3 convolution's weight");
    assert!(
        stride == 1 || stride == 2,
        "Winograd's kernel at stride 1 or 2"
    );
    let k = matrices(stride);
    let across = k / 4;
    // Down, stride 1: F(2, 3)'s G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
    // Stride 2, either way: G = [[1, 0, 0], [1, 0, 1], [0, 0, 1], [0, 1, 0]]
    // (`transform_input_strided`).
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
    // Along, stride 1: F(4, 3)'s G at the points 0, 1, -1, 2, -2 (Lavin & Gray's):
    // [[1/4, 0, 0], [-1/6, -1/6, -1/6], [-1/6, 1/6, -1/6], [1/24, 1/12, 1/6],
    // [1/24, -1/12, 1/6], [0, 0, 1]].
    #[inline(always)]
    fn g4(a: [&Lanes; 3], out: [&mut Lanes; 6]) {
        let [o0, o1, o2, o3, o4, o5] = out;
        for l in 0..L {
            let [a0, a1, a2] = a.map(|v| v[l]);
            o0[l] = a0 / 4.0;
            o1[l] = -(a0 + a1 + a2) / 6.0;
            o2[l] = -(a0 - a1 + a2) / 6.0;
            o3[l] = a0 / 24.0 + a1 / 12.0 + a2 / 6.0;
            o4[l] = a0 / 24.0 - a1 / 12.0 + a2 / 6.0;
            o5[l] = a2;
        }
    }
    let mut u = vec![0f32; k * cout * cin];
    let mut rows = vec![0f32; cout * k * cin];
    rows.par_chunks_mut(k * cin)
        .zip(weight.par_chunks(9 * cin))
        .for_each(|(u, w)| {
            simd::vectorized(
                #[inline(always)]
                || {
                    let mut kernel = [[0f32; L]; 9];
                    let mut t = [[0f32; L]; 4 * 3];
                    let mut v = [[0f32; L]; matrices(1)];
                    for c0 in (0..cin).step_by(L) {
                        let lanes = L.min(cin - c0);
                        for l in 0..lanes {
                            for (i, ki) in kernel.iter_mut().enumerate() {
                                ki[l] = w[(c0 + l) * 9 + i];
                            }
                        }
                        // G down each kernel column, then G along each row.
                        for s in 0..3 {
                            let column = [&kernel[s], &kernel[3 + s], &kernel[6 + s]];
                            g(stride, column, picks(&mut t, s, 3));
                        }
                        for i in 0..4 {
                            let row = [&t[i * 3], &t[i * 3 + 1], &t[i * 3 + 2]];
                            if stride == 1 {
                                g4(row, picks(&mut v, i * across, 1));
                            } else {
                                g(stride, row, picks(&mut v, i * across, 1));
                            }
                        }
                        for (j, vj) in v[..k].iter().enumerate() {
                            put(&mut u[j * cin + c0..], vj, lanes);
                        }
                    }
                },
            )
        });
    // From `[cout, k, cin]` (each output channel's kernels together) to `[k, cout, cin]`.
    for (o, row) in rows.chunks_exact(k * cin).enumerate() {
        for (j, part) in row.chunks_exact(cin).enumerate() {
            u[(j * cout + o) * cin..][..cin].copy_from_slice(part);
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
        input.len() == n * cin * ih * iw && u.len() == matrices(w.stride[0]) * cout * cin,
        "a 3×3 convolution's input and transformed weight"
    );
    assert!(takes(g), "a convolution Winograd's kernel takes");
    let strided = w.stride == [2, 2];
    let k_all = products(w.stride[0]);
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
        let block = Block {
            rows: r0..(r0 + rows).min(th),
            images,
            tw,
            stride,
        };
        // The products run over whole vectors of tiles: the last few columns of `V` and `M`
        // are left from earlier blocks (or zero), and not read back.
        let count = block.tiles().next_multiple_of(L);
        let x = &input[i0 * cin * ih * iw..][..images * cin * ih * iw];
        thread_local! {
            static BUFFERS: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
        }
        BUFFERS.with_borrow_mut(|[v, m, buffer]| {
            let v = scratch(v, k_all * cin * stride);
            let m = scratch(m, k_all * cout * stride);
            simd::vectorized(
                #[inline(always)]
                || match strided {
                    false => transform_input(g, x, &block, v, buffer),
                    true => transform_input_strided(g, x, &block, v, buffer),
                },
            );
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
            // SAFETY: the block's images' outputs are inside the capacity; it writes only the
            // output rows of its rows of tiles, which no other block touches.
            let y = unsafe { dst.at(i0 * out_image) };
            let residual = finish
                .residual
                .map(|r| &r[i0 * out_image..][..images * out_image]);
            let bias = finish.bias;
            per_epilogue!(finish.epilogue, |E| simd::vectorized(
                #[inline(always)]
                || match strided {
                    false => transform_output::<1>(g, m, &block, bias, residual, E, y, buffer),
                    true => transform_output::<2>(g, m, &block, bias, residual, E, y, buffer),
                }
            ));
        });
    });
    // SAFETY: the blocks' rows of tiles cover every output row of every channel of every
    // image, all written.
    unsafe { out.set_len(n * out_image) };
    out
}

/// Whole images side by side in a block of [`forward`] where an image has fewer than 128
/// tiles (planes of 28×28 and less at stride 1, 14×14 at stride 2): a product 8 tiles wide
/// (7×7 at stride 1) runs on `gemm`'s narrowest micro-tile and reads all of `U` (24 MB at
/// 512 channels) for one image. Each output is the same bits either way
/// (`pointwise::product`).
fn images_per_block(batch: usize, tiles: usize) -> usize {
    128usize.div_ceil(tiles).clamp(1, batch)
}

/// Whole rows of tiles of `images` images (one, or whole images side by side): image `i`'s
/// tile `(ty, tx)` is column `((ty - rows.start) · images + i) · tw + tx` of the rows of
/// `stride` values of `V[k][c]` and `M[k][o]`, a row of tiles of every image before the
/// next, so that a tile's row below is `images · tw` columns further in any image, and the
/// transforms run over all of the block's tiles at once (on planes of 2 to 7 tiles across,
/// one image's are few).
struct Block {
    rows: std::ops::Range<usize>,
    images: usize,
    tw: usize,
    stride: usize,
}

impl Block {
    /// The block's tiles: the columns of `V` and `M` it uses.
    fn tiles(&self) -> usize {
        self.rows.len() * self.images * self.tw
    }

    /// Where image `i`'s row of tiles `t` (counted from `rows.start`) starts.
    fn at(&self, t: usize, i: usize) -> usize {
        (t * self.images + i) * self.tw
    }

    /// `(t, i)` for the first `rows` rows of tiles `t` of every image `i`, in the order of
    /// their columns ([`Block::at`]).
    fn parts(&self, rows: usize) -> impl Iterator<Item = (usize, usize)> {
        let images = self.images;
        (0..rows).flat_map(move |t| (0..images).map(move |i| (t, i)))
    }
}

/// `V[k][c]` (in `v`, `[24, cin, stride]`) for the block's tiles of its images `x`
/// `[images, cin, h, w]` at stride 1: a 2×4 tile's outputs read the 4×6 input from row
/// `2ty - pt` and column `4tx - pl`, transformed by F(4, 3)'s `Bᵀ` along (at the points 0, ±1, ±2: entries 0, ±1,
/// ±2, ±4, -5) and F(2, 3)'s down (`[d0 - d2, d1 + d2, d2 - d1, d1 - d3]`).
///
/// Per channel, the padded input rows the block reads are split into their 4 column phases
/// ([`split_rows`]; a row of tiles of every image apart, [`Block`]; the even rows apart
/// from the odd ones): a tile's 6 columns are then phases 0 to 3 at its own place and
/// phases 0 and 1 at the next, except for the last tile of each row, whose two columns
/// past its phases are put right afterwards. A tile row's 4 input rows are even and odd row
/// `ty` and even and odd row `ty + 1`, so that both transforms are unit-stride vector loops
/// over all of the block's tiles at once (a loop per row of 14 tiles or fewer left most of
/// the arithmetic scalar, and a loop per image of 7×7 tiles or fewer much of it), each one
/// loop for all of its outputs in a function of its own (`simd::disjoint!`: inlined, a
/// loop over several parts of one buffer runs scalar behind run-time overlap checks).
#[inline(always)]
fn transform_input(g: &Dense, x: &[f32], block: &Block, v: &mut [f32], buffer: &mut Vec<f32>) {
    const ACROSS: usize = 6;
    let w = &g.window;
    let (cin, [ih, iw], [pt, pl]) = (w.channels, w.in_size, w.pad_begin);
    let tw = block.tw;
    let (rows, n, stride) = (block.rows.len(), block.tiles(), block.stride);
    // The tiles of the rows of tiles read (a row of tiles more than the block's), and a
    // column's values for one parity of rows (one of slack, read only for a last tile).
    let m = block.at(rows + 1, 0);
    let len = m + 1;
    // Padded columns a staged row holds.
    let width = 4 * tw;
    let (staged, rest) =
        scratch(buffer, 2 * 4 * m + 2 * (4 + ACROSS) * len).split_at_mut(2 * 4 * m);
    let (phases, along) = rest.split_at_mut(2 * 4 * len);
    staged.fill(0.0);
    let first = OUT * block.rows.start;
    let below = block.at(1, 0);
    let source =
        |parity: usize, t: usize| (first + 2 * t + parity).checked_sub(pt).filter(|&y| y < ih);
    for c in 0..cin {
        let plane = |i: usize| &x[(i * cin + c) * ih * iw..][..ih * iw];
        for (parity, (staged, (phases, along))) in staged
            .chunks_exact_mut(4 * m)
            .zip(
                phases
                    .chunks_exact_mut(4 * len)
                    .zip(along.chunks_exact_mut(ACROSS * len)),
            )
            .enumerate()
        {
            let row = |t: usize, i: usize| source(parity, t).map(|y| &plane(i)[y * iw..][..iw]);
            let [p0, p1, p2, p3] = parts(phases, len);
            let split = [&mut *p0, &mut *p1, &mut *p2, &mut *p3];
            split_rows(staged, split, block, rows + 1, pl, row);
            // Bᵀ along each split row, from the tile's columns: phases 0 to 3 at the tile,
            // 0 and 1 at the next.
            let mut outs = along.chunks_exact_mut(len).map(|o| &mut o[..m]);
            let mut next = || outs.next().expect("six columns");
            let (v0, v1, v2, v3, v4, v5) = (next(), next(), next(), next(), next(), next());
            let (e0, e1, e2, e3) = (&p0[..m], &p1[..m], &p2[..m], &p3[..m]);
            along_row(e0, e1, e2, e3, &p0[1..], &p1[1..], v0, v1, v2, v3, v4, v5);
            // A row's last tile reads the two columns past its staged ones, not the next
            // row's first two: its outputs again, from those.
            for (t, i) in block.parts(rows + 1) {
                let j = block.at(t, i) + tw - 1;
                let [e0, e1, e2, e3] = [&p0, &p1, &p2, &p3].map(|p| p[j]);
                let row = row(t, i);
                let [e4, e5] = [width, width + 1].map(|u| padded(row, pl, u));
                v0[j] = along_0(e0, e2, e4);
                v1[j] = along_1(e1, e2, e3, e4);
                v2[j] = along_2(e1, e2, e3, e4);
                v3[j] = along_3(e1, e2, e3, e4);
                v4[j] = along_4(e1, e2, e3, e4);
                v5[j] = along_5(e1, e3, e5);
            }
        }
        // Bᵀ down, into `V`: the tile row's input rows 0 to 3 are even and odd split row
        // `ty`, then `ty + 1` (a row of tiles further); column `j`'s 4 outputs are
        // `V[i · 6 + j]`.
        let (even, odd) = along.split_at(ACROSS * len);
        let mut outs: [&mut [f32]; 4 * ACROSS] = {
            let mut k = v
                .chunks_exact_mut(cin * stride)
                .map(|k| &mut k[c * stride..][..n]);
            std::array::from_fn(|_| k.next().expect("24 products"))
        };
        for j in 0..ACROSS {
            let (e, o) = (&even[j * len..], &odd[j * len..]);
            let [v0, v1, v2, v3] = [0, 1, 2, 3].map(|i| std::mem::take(&mut outs[i * ACROSS + j]));
            down(
                &e[..n],
                &o[..n],
                &e[below..][..n],
                &o[below..][..n],
                v0,
                v1,
                v2,
                v3,
            );
        }
    }
}

simd::disjoint! {
    /// F(2, 3)'s `Bᵀ` down a tile's 4 rows `r0..r3` (a value per tile) to `v0..v3`, one
    /// loop for the 4 (as loops of their own they read each row twice).
    fn down(
        r0: &[f32],
        r1: &[f32],
        r2: &[f32],
        r3: &[f32],
        v0: &mut [f32],
        v1: &mut [f32],
        v2: &mut [f32],
        v3: &mut [f32],
    ) {
        let n = v0.len();
        let (r0, r1, r2, r3) = (&r0[..n], &r1[..n], &r2[..n], &r3[..n]);
        let (v1, v2, v3) = (&mut v1[..n], &mut v2[..n], &mut v3[..n]);
        for i in 0..n {
            v0[i] = r0[i] - r2[i];
            v1[i] = r1[i] + r2[i];
            v2[i] = r2[i] - r1[i];
            v3[i] = r1[i] - r3[i];
        }
    }
}

simd::disjoint! {
    /// F(4, 3)'s `Bᵀ` along the rows of tiles, from their columns `e0..e5` (a value per
    /// tile) to `v0..v5`: `[4e0 - 5e2 + e4, e3 + e4 - 4(e1 + e2), 4(e1 - e2) - e3 + e4,
    /// 2(e3 - e1) - e2 + e4, 2(e1 - e3) - e2 + e4, 4e1 - 5e3 + e5]`, one loop for the 6.
    fn along_row(
        e0: &[f32],
        e1: &[f32],
        e2: &[f32],
        e3: &[f32],
        e4: &[f32],
        e5: &[f32],
        v0: &mut [f32],
        v1: &mut [f32],
        v2: &mut [f32],
        v3: &mut [f32],
        v4: &mut [f32],
        v5: &mut [f32],
    ) {
        let n = v0.len();
        let (e0, e1, e2) = (&e0[..n], &e1[..n], &e2[..n]);
        let (e3, e4, e5) = (&e3[..n], &e4[..n], &e5[..n]);
        let (v1, v2, v3) = (&mut v1[..n], &mut v2[..n], &mut v3[..n]);
        let (v4, v5) = (&mut v4[..n], &mut v5[..n]);
        for i in 0..n {
            v0[i] = along_0(e0[i], e2[i], e4[i]);
            v1[i] = along_1(e1[i], e2[i], e3[i], e4[i]);
            v2[i] = along_2(e1[i], e2[i], e3[i], e4[i]);
            v3[i] = along_3(e1[i], e2[i], e3[i], e4[i]);
            v4[i] = along_4(e1[i], e2[i], e3[i], e4[i]);
            v5[i] = along_5(e1[i], e3[i], e5[i]);
        }
    }
}

// F(4, 3)'s `Bᵀ` along a row, output by output (`along_row`): the same operations in the
// vector loop and for a row's last tile, so that both give the same bits.
#[inline(always)]
fn along_0(e0: f32, e2: f32, e4: f32) -> f32 {
    4.0 * e0 - 5.0 * e2 + e4
}
#[inline(always)]
fn along_1(e1: f32, e2: f32, e3: f32, e4: f32) -> f32 {
    e3 + e4 - 4.0 * (e1 + e2)
}
#[inline(always)]
fn along_2(e1: f32, e2: f32, e3: f32, e4: f32) -> f32 {
    4.0 * (e1 - e2) - e3 + e4
}
#[inline(always)]
fn along_3(e1: f32, e2: f32, e3: f32, e4: f32) -> f32 {
    2.0 * (e3 - e1) - e2 + e4
}
#[inline(always)]
fn along_4(e1: f32, e2: f32, e3: f32, e4: f32) -> f32 {
    2.0 * (e1 - e3) - e2 + e4
}
#[inline(always)]
fn along_5(e1: f32, e3: f32, e5: f32) -> f32 {
    4.0 * e1 - 5.0 * e3 + e5
}

/// The input rows of the block's first `parts` rows of tiles, `row(t, i)` for image `i` and
/// row of tiles `t` (`None` outside the input: zeros), split into their 4 column phases for
/// the input transforms: padded column `4tx + p` of a row to `phases[p][at(t, i) + tx]`.
/// The rows are staged side by side in `staged` (`4 ·
/// at(parts, 0)` values, zero where the rows do not reach, which stays so: each channel
/// writes the same places), `4 · tw` columns each, then split in one pass (split row by row,
/// a row's phases only `tw` long, the splitting was most of the transforms' time).
#[inline(always)]
fn split_rows<'a>(
    staged: &mut [f32],
    [p0, p1, p2, p3]: [&mut [f32]; 4],
    block: &Block,
    parts: usize,
    pl: usize,
    row: impl Fn(usize, usize) -> Option<&'a [f32]>,
) {
    for (t, i) in block.parts(parts) {
        if let Some(row) = row(t, i) {
            let inside = row.len().min((4 * block.tw).saturating_sub(pl));
            staged[4 * block.at(t, i) + pl..][..inside].copy_from_slice(&row[..inside]);
        }
    }
    let m = staged.len() / 4;
    simd::split4(
        staged,
        &mut p0[..m],
        &mut p1[..m],
        &mut p2[..m],
        &mut p3[..m],
    );
}

/// `v`'s first `N` parts of `len` values.
fn parts<const N: usize>(v: &mut [f32], len: usize) -> [&mut [f32]; N] {
    let mut parts = v.chunks_exact_mut(len);
    std::array::from_fn(|_| parts.next().expect("N parts of len"))
}

/// Column `u` of a padded input row: `pl` zeros, the row, then zeros (all zeros where the
/// row is outside the input, `None`).
#[inline(always)]
fn padded(row: Option<&[f32]>, pl: usize, u: usize) -> f32 {
    let value = u.checked_sub(pl).and_then(|j| row.and_then(|r| r.get(j)));
    value.copied().unwrap_or(0.0)
}

/// [`transform_input`] for a stride-2 window: a tile's 2×2 outputs read the 5×5 input from
/// row `4ty - pt` and column `4tx - pl`, whose transform along either axis takes `d0..d4`
/// to `[d0 - d2, d2, d4 - d2, d1, d3]`: the even taps' F(2, 2) (the products that `g0`,
/// `g0 + g2` and `g2` make) and the middle tap's two plain ones (by `g1`).
///
/// Per channel, the padded input rows the block reads are staged and split as in
/// [`transform_input`], into their 4 column phases (column `4t + p` to phase `p`) and phase
/// 0 of the next tile, `tw` values a row of tiles, the rows apart by their phase (row `4ty +
/// r` to row phase `r`; a tile's fifth row is row phase 0 a row of tiles further,
/// [`Block`]): each of the 25 values of a tile is
/// then a sum of up to 4 split values, and the transform one unit-stride vector loop a
/// value over all of the block's tiles (a loop per row of tiles, 2 to 14 tiles long, left
/// the arithmetic mostly scalar).
#[inline(always)]
fn transform_input_strided(
    g: &Dense,
    x: &[f32],
    block: &Block,
    v: &mut [f32],
    buffer: &mut Vec<f32>,
) {
    const IN: usize = 5;
    let w = &g.window;
    let (cin, [ih, iw], [pt, pl]) = (w.channels, w.in_size, w.pad_begin);
    let (tw, stride) = (block.tw, block.stride);
    let (rows, n) = (block.rows.len(), block.tiles());
    // The tiles of the rows of tiles read (a row of tiles more than the block's), a split
    // column's values (one of slack), and the staged rows' padded columns, as in
    // `transform_input`.
    let m = block.at(rows + 1, 0);
    let len = m + 1;
    let width = 4 * tw;
    // staged[r]: the rows of row phase r; split[r · IN + p]: their column phase p (p = 4:
    // phase 0 of the next tile).
    let (staged, split) = scratch(buffer, 4 * 4 * m + 4 * IN * len).split_at_mut(4 * 4 * m);
    staged.fill(0.0);
    let below = block.at(1, 0);
    let source = |r: usize, t: usize| {
        (2 * OUT * (block.rows.start + t) + r)
            .checked_sub(pt)
            .filter(|&y| y < ih)
    };
    for c in 0..cin {
        let plane = |i: usize| &x[(i * cin + c) * ih * iw..][..ih * iw];
        let phases = staged
            .chunks_exact_mut(4 * m)
            .zip(split.chunks_exact_mut(IN * len));
        for (r, (staged, columns)) in phases.enumerate() {
            // The last row of tiles only for its row phase 0 (the tiles above read it).
            let read = if r == 0 { rows + 1 } else { rows };
            let row = |t: usize, i: usize| source(r, t).map(|y| &plane(i)[y * iw..][..iw]);
            let [p0, p1, p2, p3, p4] = parts(columns, len);
            split_rows(staged, [&mut *p0, p1, p2, p3], block, read, pl, row);
            // A row's last tile reads the column past its staged ones.
            p4[..m].copy_from_slice(&p0[1..]);
            for (t, i) in block.parts(read) {
                p4[block.at(t, i) + tw - 1] = padded(row(t, i), pl, width);
            }
        }
        // Value (a, b) of a tile: down row `a` of [r0 - r2, r2, r0' - r2, r1, r3] (r0' row
        // phase 0 a row of tiles below), along column `b` of [p0 - p2, p2, p0' - p2, p1, p3]
        // (p0' phase 0 of the next tile).
        let column = |r: usize, p: usize| &split[(r * IN + p) * len..][..below + n];
        let r2 = |p: usize| &column(2, p)[..n];
        for k in 0..IN * IN {
            let (a, b) = (k / IN, k % IN);
            let out = &mut v[(k * cin + c) * stride..][..n];
            // The column phase, and whether phase 2 is subtracted.
            let (p, minus) = ([0, 2, 4, 1, 3][b], b == 0 || b == 2);
            if a == 0 || a == 2 {
                // Down rows r0 - r2 and r0' - r2.
                let r0 = |p: usize| &column(0, p)[if a == 0 { 0 } else { below }..][..n];
                let (x, xm, y, ym) = (r0(p), r2(p), r0(2), r2(2));
                if minus {
                    let terms = x.iter().zip(xm).zip(y.iter().zip(ym));
                    for (o, ((&x, &xm), (&y, &ym))) in out.iter_mut().zip(terms) {
                        *o = (x - xm) - (y - ym);
                    }
                } else {
                    for (o, (&x, &xm)) in out.iter_mut().zip(x.iter().zip(xm)) {
                        *o = x - xm;
                    }
                }
            } else {
                // Down rows r2, r1 and r3: one split row each.
                let r = [2, 2, 2, 1, 3][a];
                let x = &column(r, p)[..n];
                if minus {
                    let y = &column(r, 2)[..n];
                    for (o, (&x, &y)) in out.iter_mut().zip(x.iter().zip(y)) {
                        *o = x - y;
                    }
                } else {
                    out.copy_from_slice(x);
                }
            }
        }
    }
}

/// The block's output rows from `M` (in `m`, `[K, cout, stride]`, `K` the products of a
/// tile: 24 at stride `S` 1, 25 at stride 2): per channel, `A` along each tile's rows (to
/// its output columns: F(4, 3)'s 4 at stride 1, 2 at stride 2) and `Aᵀ` down to its two
/// output rows, over all of the block's tiles at once, then the bias, the residual and the
/// epilogue, the columns interleaved into the images' output `y` `[images, cout, oh, ow]`
/// (and `residual`, the same shape).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_output<const S: usize>(
    g: &Dense,
    m: &[f32],
    block: &Block,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    epilogue: Epilogue,
    y: *mut f32,
    buffer: &mut Vec<f32>,
) {
    let [oh, ow] = g.window.out_size;
    let cout = g.channels_out;
    let (tw, stride) = (block.tw, block.stride);
    // The transforms are per tile: they run over the block's tiles at once (long vectors
    // on planes of few tiles across). The transformed tile: `down` rows of `across`; it
    // gives `phases` output columns (a tile's) of 2 output rows.
    let used = block.tiles();
    let (down, across) = if S == 1 { (4, 6) } else { (5, 5) };
    let phases = columns(S);
    let (along, outs) =
        scratch(buffer, (down + OUT) * phases * used).split_at_mut(down * phases * used);
    for c in 0..cout {
        let b = bias.map_or(0.0, |b| b[c]);
        let mk = |k: usize| &m[(k * cout + c) * stride..][..used];
        // A along each of the tile's rows, then Aᵀ down each output column.
        for (i, row) in along.chunks_exact_mut(phases * used).enumerate() {
            let r = |j: usize| mk(i * across + j);
            if S == 1 {
                a_wide(r, row, used);
            } else {
                let (first, second) = row.split_at_mut(used);
                a_transposed::<S>(r, first, second);
            }
        }
        let along = &*along;
        let (first, second) = outs.split_at_mut(phases * used);
        for p in 0..phases {
            let rows = |i: usize| &along[(i * phases + p) * used..][..used];
            let (f, s) = (
                &mut first[p * used..][..used],
                &mut second[p * used..][..used],
            );
            a_transposed::<S>(rows, f, s);
        }
        let rows = [&*first, &*second];
        for (t, i) in block.parts(block.rows.len()) {
            for (r, values) in rows.into_iter().enumerate() {
                let oy = OUT * (block.rows.start + t) + r;
                if oy >= oh {
                    continue;
                }
                let at = (i * cout + c) * oh * ow + oy * ow;
                // SAFETY: output row `oy` of channel `c` of the block's image `i` is inside
                // the images' `cout · oh · ow` values each, and this block's alone.
                let out = unsafe { std::slice::from_raw_parts_mut(y.add(at), ow) };
                let phase = |p: usize| &values[p * used + block.at(t, i)..][..tw];
                let res = residual.map(|r| &r[at..][..ow]);
                if S == 1 {
                    interleave(
                        [phase(0), phase(1), phase(2), phase(3)],
                        b,
                        res,
                        epilogue,
                        out,
                    );
                } else {
                    interleave([phase(0), phase(1)], b, res, epilogue, out);
                }
            }
        }
    }
}

/// `out[P·t + p] = epilogue(phases[p][t] + b + residual[P·t + p])` (no residual where it is
/// `None`): a row's output columns from its `P` column phases (the last tile's columns past
/// the row dropped).
#[inline(always)]
fn interleave<const P: usize>(
    phases: [&[f32]; P],
    b: f32,
    residual: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    let whole = out.len() / P;
    let (full, last) = out.split_at_mut(whole * P);
    let at = |t: usize| phases.map(|p| p[t]);
    match residual {
        None => {
            for (t, o) in full.chunks_exact_mut(P).enumerate() {
                for (o, v) in o.iter_mut().zip(at(t)) {
                    *o = epilogue.value(v + b);
                }
            }
        }
        Some(res) => {
            let res_full = res.chunks_exact(P);
            for ((t, o), s) in full.chunks_exact_mut(P).enumerate().zip(res_full) {
                for ((o, v), &s) in o.iter_mut().zip(at(t)).zip(s) {
                    *o = epilogue.value(v + b + s);
                }
            }
        }
    }
    for (p, o) in last.iter_mut().enumerate() {
        let s = residual.map_or(0.0, |r| r[whole * P + p]);
        *o = epilogue.value(phases[p][whole] + b + s);
    }
}

/// F(4, 3)'s `Aᵀ` (at the points 0, ±1, ±2) over the 6 rows `r(0)`, …, `r(5)` of `n`
/// values, into the 4 rows of `out` (`4n` values): `r0 + r1 + r2 + r3 + r4`,
/// `r1 - r2 + 2(r3 - r4)`, `r1 + r2 + 4(r3 + r4)`, `r1 - r2 + 8(r3 - r4) + r5`.
#[inline(always)]
fn a_wide<'a>(r: impl Fn(usize) -> &'a [f32], out: &mut [f32], n: usize) {
    let [r0, r1, r2, r3, r4, r5] = [0, 1, 2, 3, 4, 5].map(r);
    let (y0, rest) = out.split_at_mut(n);
    let (y1, rest) = rest.split_at_mut(n);
    let (y2, y3) = rest.split_at_mut(n);
    // One output a loop, as in `transform_input`.
    for (y, ((((&a, &b), &c), &d), &e)) in
        y0.iter_mut().zip(r0.iter().zip(r1).zip(r2).zip(r3).zip(r4))
    {
        *y = a + b + c + d + e;
    }
    for (y, (((&b, &c), &d), &e)) in y1.iter_mut().zip(r1.iter().zip(r2).zip(r3).zip(r4)) {
        *y = b - c + 2.0 * (d - e);
    }
    for (y, (((&b, &c), &d), &e)) in y2.iter_mut().zip(r1.iter().zip(r2).zip(r3).zip(r4)) {
        *y = b + c + 4.0 * (d + e);
    }
    for (y, ((((&b, &c), &d), &e), &f)) in
        y3.iter_mut().zip(r1.iter().zip(r2).zip(r3).zip(r4).zip(r5))
    {
        *y = b - c + 8.0 * (d - e) + f;
    }
}

/// `Aᵀ` down (and at stride 2 also along) over the rows `r(0)`, `r(1)`, … of values, to a
/// tile's 2 outputs: at stride `S` 1, F(2, 3)'s over 4 rows, `first = r0 + r1 + r2`,
/// `second = r1 - r2 - r3`; at stride 2 over 5, `first = r0 + r1 + r3`, `second = r1 + r2
/// + r4` (F(2, 2)'s outputs of the even taps plus the middle tap's products).
#[inline(always)]
fn a_transposed<'a, const S: usize>(
    r: impl Fn(usize) -> &'a [f32],
    first: &mut [f32],
    second: &mut [f32],
) {
    if S == 1 {
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
