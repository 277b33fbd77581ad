//! The 1×1 convolution (stride 1, no padding, one group) on contiguous NCHW `f32` slices,
//! as matrix products that read NCHW in place: per image, `y = W · x` (`[cout, cin]` by
//! `[cin, h·w]`), and for training `dx = Wᵀ · dy` and `dW = Σ dy · xᵀ`, the transposes
//! being `gemm`'s strides rather than copies (burn's generic backward transposes the
//! activations to NHWC and back around its products).

use std::cell::RefCell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::fused::{Epilogue, Finish};
use super::{Pointwise, scratch, simd};

/// Most depth per `gemm` call of [`product`] (`gemm`'s own largest depth block here).
const DEPTH_CHUNK: usize = 512;

/// Columns per `gemm` block of the pointwise kernel: the block of `channels_out` rows, 1 MiB,
/// should stay in L2 until the epilogue has passed over it, as on a core with 1 MiB of it.
/// (On cores with 512 KiB, blocks of 256 and 512 KiB measured the same on ResNet-50's 1×1
/// layers, four alternating rounds within ±3%: the epilogue is not what limits them.)
fn block_columns(channels_out: usize, spatial: usize) -> usize {
    ((1usize << 18) / channels_out.max(1))
        .next_multiple_of(16)
        .clamp(64, 4096)
        .min(spatial)
}

/// A 1×1 convolution with stride 1 and no padding (`weight` `[cout, cin]`), then `finish`,
/// over `[n, cin, spatial]`, as `[n, cout, spatial]`. Every size is at least 1.
pub fn forward(
    batch: usize,
    channels_in: usize,
    spatial: usize,
    input: &[f32],
    weight: &[f32],
    finish: Finish,
) -> Vec<f32> {
    let channels_out = weight.len() / channels_in;
    let w = Matrix {
        values: weight,
        rows: channels_out,
        cols: channels_in,
        row_stride: channels_in,
        col_stride: 1,
    };
    let step = block_columns(channels_out, spatial);
    let per_image = channels_in * spatial;
    let x = |i: usize, j0: usize, _: usize, with: &mut dyn FnMut(&[f32], usize)| {
        with(&input[i * per_image..][j0..per_image], spatial)
    };
    per_image_product(batch, spatial, step, w, &x, finish)
}

/// The input gradient `[n, cin, spatial]`: per image `Wᵀ · dy`.
pub fn input_grad(
    batch: usize,
    channels_in: usize,
    spatial: usize,
    weight: &[f32],
    out_grad: &[f32],
) -> Vec<f32> {
    let channels_out = weight.len() / channels_in;
    // `weight` `[cout, cin]` read as its transpose.
    let wt = Matrix {
        values: weight,
        rows: channels_in,
        cols: channels_out,
        row_stride: 1,
        col_stride: channels_in,
    };
    // Nothing to finish while in cache: one `gemm` per image (blocks were 9% slower here).
    let per_image = channels_out * spatial;
    let dy = |i: usize, _: usize, _: usize, with: &mut dyn FnMut(&[f32], usize)| {
        with(&out_grad[i * per_image..][..per_image], spatial)
    };
    per_image_product(batch, spatial, spatial, wt, &dy, Finish::NONE)
}

/// A matrix `rows × cols` in `values` with the given strides.
#[derive(Clone, Copy)]
pub(super) struct Matrix<'a> {
    pub values: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// The right-hand side of [`per_image_product`]: `rhs(i, j0, cols, with)` calls `with` with
/// columns `j0..j0 + cols` of image `i`'s `[a.cols, spatial]` matrix, as a slice that starts
/// at the block's first column, and its row stride (the image as stored, or its patches
/// gathered for the block).
pub(super) type Columns<'a> =
    dyn Fn(usize, usize, usize, &mut dyn FnMut(&[f32], usize)) + Sync + 'a;

/// `finish` of `a · x[i]` (its bias, its residual, its epilogue) for every image `x[i]`
/// `[a.cols, spatial]` that `rhs` gives, as `[n, a.rows, spatial]`.
///
/// The work is split into blocks, in parallel, each block one single-threaded `gemm` then
/// the epilogue while it is in cache: blocks of `step` columns of one image, or, where an
/// image has few columns ([`images_per_block`]), whole images side by side, their columns
/// gathered into one matrix (a product 49 columns wide wastes a quarter of `gemm`'s 64-row
/// micro-tiles, and reads all of `a` for each image). Either way an image's output is the
/// same bits however it is batched and whatever the threads: each output is one dot product
/// in `product`'s fixed order of depth, whichever columns share its block (an evaluation
/// reproduces the figures of the run that trained the model).
pub(super) fn per_image_product(
    batch: usize,
    spatial: usize,
    step: usize,
    a: Matrix,
    rhs: &Columns,
    finish: Finish,
) -> Vec<f32> {
    let rows = a.rows;
    let per_image = rows * spatial;
    assert!(
        finish.residual.is_none_or(|r| r.len() == batch * per_image),
        "a residual the output's shape"
    );
    let group = images_per_block(batch, spatial, a);
    let blocks = blocks(batch, group, spatial, step);
    let mut out = Vec::with_capacity(batch * per_image);
    let dst = Shared(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    blocks.into_par_iter().for_each(|(i0, images, j0)| {
        // SAFETY: the capacity holds `batch · rows · spatial` values; this block's are
        // columns `j0..j0 + cols` of the `rows` rows of its images, which no other block
        // touches.
        let image = |i: usize| unsafe { dst.at(i * per_image) };
        let residual = |i: usize, r: usize, j0: usize, cols: usize| {
            finish
                .residual
                .map(|res| &res[i * per_image + r * spatial + j0..][..cols])
        };
        if images == 1 {
            let cols = step.min(spatial - j0);
            rhs(i0, j0, cols, &mut |x, row_stride| {
                // SAFETY: this block's columns of the image's `rows` rows (stride `spatial`).
                unsafe { product(a, x, row_stride, cols, image(i0).add(j0), spatial) }
            });
            for r in 0..rows {
                // SAFETY: `product` has just written these `cols` values of row `r`, this
                // block's.
                unsafe {
                    let row = image(i0).add(r * spatial + j0);
                    finish_row(finish, r, row, cols, None, residual(i0, r, j0, cols));
                }
            }
            return;
        }
        // The images' columns side by side: `x` `[depth, width]`, then `y` `[rows, width]`.
        thread_local! {
            static GATHERED: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
        }
        let width = images * spatial;
        GATHERED.with_borrow_mut(|[x, y]| {
            let (x, y) = (scratch(x, a.cols * width), scratch(y, rows * width));
            for k in 0..images {
                rhs(i0 + k, 0, spatial, &mut |src, row_stride| {
                    for (d, to) in x.chunks_exact_mut(width).enumerate() {
                        to[k * spatial..][..spatial]
                            .copy_from_slice(&src[d * row_stride..][..spatial]);
                    }
                });
            }
            // SAFETY: `y` holds `rows` rows of `width` values.
            unsafe { product(a, x, width, width, y.as_mut_ptr(), width) };
            for k in 0..images {
                for r in 0..rows {
                    let from = &y[r * width + k * spatial..][..spatial];
                    // SAFETY: row `r` of image `i0 + k`, this block's, only written.
                    unsafe {
                        let row = image(i0 + k).add(r * spatial);
                        finish_row(finish, r, row, spatial, Some(from), residual(i0 + k, r, 0, spatial));
                    }
                }
            }
        });
    });
    // SAFETY: the blocks cover every column of every row of every image, all written above.
    unsafe { out.set_len(batch * per_image) };
    out
}

/// The blocks of a kernel's work, `(first image, images, first part)`: with up to `group`
/// images a block, all of them whole, as many blocks as the kernel's threads
/// ([`super::threads`]) or a multiple where the batch allows, of about as many images each
/// (16 images by 6 would leave one of two threads idle for a third of the time); else each
/// image's `parts` (columns, rows of tiles) `step` at a time.
pub(super) fn blocks(
    batch: usize,
    group: usize,
    parts: usize,
    step: usize,
) -> Vec<(usize, usize, usize)> {
    if group > 1 {
        let count = batch
            .div_ceil(group)
            .next_multiple_of(super::threads())
            .min(batch);
        let group = batch.div_ceil(count);
        (0..batch)
            .step_by(group)
            .map(|i| (i, group.min(batch - i), 0))
            .collect()
    } else {
        (0..batch)
            .flat_map(|i| (0..parts).step_by(step).map(move |p| (i, 1, p)))
            .collect()
    }
}

/// Images side by side in a block of [`per_image_product`]: enough for about 256 columns
/// where an image has fewer (the last 7×7 and 14×14 planes of an ImageNet network), else 1,
/// their gathered columns at most 4 MiB. Never where `gemm` would take its matrix-vector
/// path (one row or one column), whose sums run in another order.
fn images_per_block(batch: usize, spatial: usize, a: Matrix) -> usize {
    if spatial < 2 || a.rows < 2 || a.cols < 3 {
        return 1;
    }
    256usize
        .div_ceil(spatial)
        .min((1 << 20) / (a.cols * spatial))
        .clamp(1, batch)
}

/// `dst[j] = epilogue(from[j] + bias[r] + residual[j])` for the `len` values at `dst`,
/// `from` being `dst` itself where it is `None`.
///
/// # Safety
/// `dst` is valid for writes of `len` values, and for reads of them where `from` is
/// `None` (then they are initialised); `from` and `residual` hold `len` values.
#[inline(always)]
unsafe fn finish_row(
    finish: Finish,
    r: usize,
    dst: *mut f32,
    len: usize,
    from: Option<&[f32]>,
    residual: Option<&[f32]>,
) {
    // SAFETY: the caller's; as `MaybeUninit`, nothing is read before it is written where
    // `from` is given.
    let row = unsafe { std::slice::from_raw_parts_mut(dst.cast::<MaybeUninit<f32>>(), len) };
    let b = finish.bias.map_or(0.0, |b| b[r]);
    per_epilogue!(finish.epilogue, |E| simd::vectorized(
        #[inline(always)]
        || match (from, residual) {
            // SAFETY (the two reads): the caller's, `dst` initialised where `from` is `None`.
            (None, None) => row
                .iter_mut()
                .for_each(|v| *v = MaybeUninit::new(E.value(unsafe { v.assume_init() } + b))),
            (None, Some(res)) => {
                for (v, &s) in row.iter_mut().zip(res) {
                    *v = MaybeUninit::new(E.value(unsafe { v.assume_init() } + b + s));
                }
            }
            (Some(from), None) => {
                for (v, &f) in row.iter_mut().zip(from) {
                    *v = MaybeUninit::new(E.value(f + b));
                }
            }
            (Some(from), Some(res)) => {
                for ((v, &f), &s) in row.iter_mut().zip(from).zip(res) {
                    *v = MaybeUninit::new(E.value(f + b + s));
                }
            }
        }
    ));
}

/// `dst = a · x` on this thread: `a.rows` rows of `cols` values `dst_rs` apart, from
/// `x`'s `a.cols` rows of `cols` values `x_rs` apart.
///
/// # Safety
/// `dst` is valid for writes of `a.rows` rows of `cols` values `dst_rs` apart (they are
/// only written: they may be uninitialised).
pub(super) unsafe fn product(
    a: Matrix,
    x: &[f32],
    x_rs: usize,
    cols: usize,
    dst: *mut f32,
    dst_rs: usize,
) {
    let x = Matrix {
        values: x,
        rows: a.cols,
        cols,
        row_stride: x_rs,
        col_stride: 1,
    };
    // SAFETY: the caller's, with `dst`'s columns 1 apart.
    unsafe { strided_product(a, x, dst, [dst_rs, 1]) }
}

/// [`product`] with any strides: `dst = a · x`, `x` `[a.cols, x.cols]`, `dst`'s element
/// `(r, j)` at `r · dst_rs + j · dst_cs` (channels-last data is its transpose: rows 1
/// apart, columns a row of channels apart). Each output is the same sum in the same order
/// whatever the strides.
///
/// # Safety
/// `dst` is valid for writes of the `a.rows × x.cols` elements those strides place (they
/// are only written: they may be uninitialised).
pub(super) unsafe fn strided_product(
    a: Matrix,
    x: Matrix,
    dst: *mut f32,
    [dst_rs, dst_cs]: [usize; 2],
) {
    let (rows, depth, cols) = (a.rows, a.cols, x.cols);
    assert!(
        rows > 0
            && depth > 0
            && a.values.len() > (rows - 1) * a.row_stride + (depth - 1) * a.col_stride,
        "a convolution needs channels, and its weight all of them"
    );
    assert!(
        x.rows == depth
            && (cols == 0
                || x.values.len() > (depth - 1) * x.row_stride + (cols - 1) * x.col_stride),
        "a block outside its image"
    );
    // Depth in chunks of at most 512, as `gemm` itself would split it here, but whatever
    // the other sizes: then each output is the same sum in the same order however many
    // columns share the product (`gemm` chooses its own depth blocks from all three sizes).
    let chunks = depth.div_ceil(DEPTH_CHUNK);
    let chunk = depth.div_ceil(chunks);
    for d0 in (0..depth).step_by(chunk) {
        let len = chunk.min(depth - d0);
        // SAFETY: `gemm` reads `a`'s columns `d0..d0 + len` (inside `a.values`, asserted)
        // and `cols` columns of `x`'s rows `d0..d0 + len` (inside `x.values`, asserted),
        // and writes `dst` as the caller guarantees; it reads `dst` back only after the
        // first chunk has written it.
        unsafe {
            gemm::gemm(
                rows,
                cols,
                len,
                dst,
                dst_cs as isize,
                dst_rs as isize,
                d0 > 0,
                a.values.as_ptr().add(d0 * a.col_stride),
                a.col_stride as isize,
                a.row_stride as isize,
                x.values.as_ptr().add(d0 * x.row_stride),
                x.col_stride as isize,
                x.row_stride as isize,
                if d0 > 0 { 1.0 } else { 0.0 },
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// The output buffer, shared by the blocks that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(super) struct Shared(pub *mut f32);

// SAFETY: the blocks that share it write disjoint elements (see `per_image_product`).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// # Safety
    /// `offset` is inside the buffer.
    pub(super) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's.
        unsafe { self.0.add(offset) }
    }
}

/// The weight gradient `[cout, cin]`: `Σ over images of dy · xᵀ`.
pub fn weight_grad(
    batch: usize,
    channels_in: usize,
    spatial: usize,
    input: &[f32],
    out_grad: &[f32],
) -> Vec<f32> {
    let per_image = channels_in * spatial;
    let x = |i: usize, _: usize, _: usize, with: &mut dyn FnMut(&[f32], usize)| {
        with(&input[i * per_image..][..per_image], spatial)
    };
    let channels_out = out_grad.len() / (batch * spatial);
    sum_of_products(
        batch,
        spatial,
        spatial,
        channels_out,
        channels_in,
        out_grad,
        &x,
    )
}

/// `Σ over images i and blocks of dy[i] · x[i]ᵀ`, `[rows, depth]`, for `dy` `[n, rows,
/// spatial]` and the `[depth, spatial]` images `x` that `rhs` gives in blocks of `step`
/// columns: each thread sums its share of the images into its own matrix, the matrices then
/// added.
pub(super) fn sum_of_products(
    batch: usize,
    spatial: usize,
    step: usize,
    rows: usize,
    depth: usize,
    out_grad: &[f32],
    rhs: &Columns,
) -> Vec<f32> {
    let size = rows * depth;
    let shares = rayon::current_num_threads().clamp(1, batch);
    let inner = if shares > 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    let partial = |share: usize| {
        let mut dw = vec![0f32; size];
        for i in (share..batch).step_by(shares) {
            let dy = &out_grad[i * rows * spatial..][..rows * spatial];
            for j0 in (0..spatial).step_by(step) {
                let cols = step.min(spatial - j0);
                rhs(i, j0, cols, &mut |x, row_stride| {
                    assert!(
                        x.len() >= (depth - 1) * row_stride + cols,
                        "a block outside its image"
                    );
                    // SAFETY: `gemm` reads columns `j0..j0 + cols` of `dy` `[rows, spatial]`
                    // and `cols` columns of `x`'s `depth` rows (stride `row_stride`, inside
                    // `x`: asserted) as their transpose, and adds into every element of `dw`
                    // `[rows, depth]` (initialised), which this closure owns.
                    unsafe {
                        gemm::gemm(
                            rows,
                            depth,
                            cols,
                            dw.as_mut_ptr(),
                            1,
                            depth as isize,
                            true,
                            dy.as_ptr().add(j0),
                            1,
                            spatial as isize,
                            x.as_ptr(),
                            row_stride as isize,
                            1,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            inner,
                        );
                    }
                });
            }
        }
        dw
    };
    let mut parts: Vec<Vec<f32>> = (0..shares).into_par_iter().map(partial).collect();
    let mut dw = parts.swap_remove(0);
    for p in parts {
        for (d, v) in dw.iter_mut().zip(p) {
            *d += v;
        }
    }
    dw
}
