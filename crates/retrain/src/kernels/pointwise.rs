//! The 1×1 convolution (stride 1, no padding, one group) on contiguous NCHW `f32` slices,
//! as matrix products that read NCHW in place: per image, `y = W · x` (`[cout, cin]` by
//! `[cin, h·w]`), and for training `dx = Wᵀ · dy` and `dW = Σ dy · xᵀ`, the transposes
//! being `gemm`'s strides rather than copies (burn's generic backward transposes the
//! activations to NHWC and back around its products).

use rayon::prelude::*;

use super::fused::{Epilogue, Finish};
use super::{Pointwise, simd};

/// Columns per `gemm` block of the pointwise kernel: the block of `channels_out` rows should
/// stay in L2 (about 1 MiB of it) until the epilogue has passed over it.
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
/// The work is split into blocks of `step` columns of each image, in parallel, each block
/// one single-threaded `gemm` then the epilogue while it is in cache. The blocks are the same
/// whatever the batch and the threads, so an image's output is the same bits however it is
/// batched (an evaluation reproduces the figures of the run that trained the model).
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
    let blocks: Vec<(usize, usize)> = (0..batch)
        .flat_map(|i| (0..spatial).step_by(step).map(move |j0| (i, j0)))
        .collect();
    let mut out = Vec::with_capacity(batch * per_image);
    let dst = Shared(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    blocks.into_par_iter().for_each(|(i, j0)| {
        let cols = step.min(spatial - j0);
        // SAFETY: the capacity holds `batch · rows · spatial` values; this block's are
        // columns `j0..j0 + cols` of the `rows` rows of image `i`, which no other block
        // touches.
        let image = unsafe { dst.at(i * per_image) };
        rhs(i, j0, cols, &mut |x, row_stride| {
            // SAFETY: this block's columns of the image's `rows` rows (stride `spatial`).
            unsafe { product(a, x, row_stride, cols, image.add(j0), spatial) }
        });
        // SAFETY: `product` has just written these `cols` values of each row, this block's.
        let row =
            |r: usize| unsafe { std::slice::from_raw_parts_mut(image.add(r * spatial + j0), cols) };
        per_epilogue!(finish.epilogue, |E| simd::vectorized(
            #[inline(always)]
            || {
                for r in 0..rows {
                    let b = finish.bias.map_or(0.0, |b| b[r]);
                    match finish.residual {
                        None => row(r).iter_mut().for_each(|v| *v = E.value(*v + b)),
                        Some(res) => {
                            let res = &res[i * per_image + r * spatial + j0..][..cols];
                            for (v, &s) in row(r).iter_mut().zip(res) {
                                *v = E.value(*v + b + s);
                            }
                        }
                    }
                }
            }
        ));
    });
    // SAFETY: the blocks cover every column of every row of every image, all written above.
    unsafe { out.set_len(batch * per_image) };
    out
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
    let (rows, depth) = (a.rows, a.cols);
    assert!(
        rows > 0
            && depth > 0
            && a.values.len() > (rows - 1) * a.row_stride + (depth - 1) * a.col_stride,
        "a convolution needs channels, and its weight all of them"
    );
    assert!(
        x.len() >= (depth - 1) * x_rs + cols,
        "a block outside its image"
    );
    // SAFETY: `gemm` reads `a` (inside `a.values`, asserted) and `cols` columns of `x`'s
    // `depth` rows (inside `x`, asserted), and writes `dst` as the caller guarantees;
    // `read_dst` is false, so the destination is only written.
    unsafe {
        gemm::gemm(
            rows,
            cols,
            depth,
            dst,
            1,
            dst_rs as isize,
            false,
            a.values.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            x.as_ptr(),
            1,
            x_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
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
