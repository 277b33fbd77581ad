//! The 1×1 convolution (stride 1, no padding, one group) on contiguous NCHW `f32` slices,
//! as matrix products that read NCHW in place: per image, `y = W · x` (`[cout, cin]` by
//! `[cin, h·w]`), and for training `dx = Wᵀ · dy` and `dW = Σ dy · xᵀ`, the transposes
//! being `gemm`'s strides rather than copies (burn's generic backward transposes the
//! activations to NHWC and back around its products).

use rayon::prelude::*;

use super::fused::Epilogue;
use super::{Pointwise, simd};

/// Columns per `gemm` block of the pointwise kernel: the block of `channels_out` rows should
/// stay in L2 (about 1 MiB of it) until the epilogue has passed over it.
fn block_columns(channels_out: usize, spatial: usize) -> usize {
    ((1usize << 18) / channels_out.max(1))
        .next_multiple_of(16)
        .clamp(64, 4096)
        .min(spatial)
}

/// A 1×1 convolution with stride 1 and no padding (`weight` `[cout, cin]`), its bias and
/// `epilogue`, over `[n, cin, spatial]`, as `[n, cout, spatial]`. Every size is at least 1.
pub fn forward(
    batch: usize,
    channels_in: usize,
    spatial: usize,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
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
    per_image_product(batch, spatial, step, w, input, bias, epilogue)
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
    per_image_product(
        batch,
        spatial,
        spatial,
        wt,
        out_grad,
        None,
        Epilogue::Identity,
    )
}

/// A matrix `rows × cols` in `values` with the given strides.
#[derive(Clone, Copy)]
struct Matrix<'a> {
    values: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// `epilogue(a · x[i] + bias)` for every image `x[i]` `[a.cols, spatial]` of `input`, as
/// `[n, a.rows, spatial]`.
///
/// The work is split into blocks of `step` columns of each image, in parallel, each block
/// one single-threaded `gemm` then the epilogue while it is in cache. The blocks are the same
/// whatever the batch and the threads, so an image's output is the same bits however it is
/// batched (an evaluation reproduces the figures of the run that trained the model).
fn per_image_product(
    batch: usize,
    spatial: usize,
    step: usize,
    a: Matrix,
    input: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) -> Vec<f32> {
    let (rows, depth) = (a.rows, a.cols);
    assert!(
        rows > 0
            && depth > 0
            && a.values.len() > (rows - 1) * a.row_stride + (depth - 1) * a.col_stride,
        "a 1×1 convolution needs channels, and its weight all of them"
    );
    let per_image = rows * spatial;
    let blocks: Vec<(usize, usize)> = (0..batch)
        .flat_map(|i| (0..spatial).step_by(step).map(move |j0| (i, j0)))
        .collect();
    let mut out = Vec::with_capacity(batch * per_image);
    let dst = Shared(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    blocks.into_par_iter().for_each(|(i, j0)| {
        let cols = step.min(spatial - j0);
        let x = &input[i * depth * spatial..][..depth * spatial];
        // SAFETY: the capacity holds `batch · rows · spatial` values; this block's are
        // columns `j0..j0 + cols` of the `rows` rows of image `i`, which no other block
        // touches.
        let image = unsafe { dst.at(i * per_image) };
        // SAFETY: `gemm` reads `a` (inside `a.values`, asserted above) and `x`'s columns
        // `j0..j0 + cols` of its `depth` rows (stride `spatial`), inside `x`, and writes
        // this block's columns (stride `spatial`); `read_dst` is false, so the
        // uninitialised destination is only written.
        unsafe {
            gemm::gemm(
                rows,
                cols,
                depth,
                image.add(j0),
                1,
                spatial as isize,
                false,
                a.values.as_ptr(),
                a.col_stride as isize,
                a.row_stride as isize,
                x.as_ptr().add(j0),
                1,
                spatial as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        // SAFETY: `gemm` has just written these `cols` values of each row, this block's.
        let row =
            |r: usize| unsafe { std::slice::from_raw_parts_mut(image.add(r * spatial + j0), cols) };
        per_epilogue!(epilogue, |E| simd::vectorized(
            #[inline(always)]
            || {
                for r in 0..rows {
                    let b = bias.map_or(0.0, |b| b[r]);
                    row(r).iter_mut().for_each(|v| *v = E.value(*v + b));
                }
            }
        ));
    });
    // SAFETY: the blocks cover every column of every row of every image, all written above.
    unsafe { out.set_len(batch * per_image) };
    out
}

/// The output buffer, shared by the blocks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

// SAFETY: the blocks that share it write disjoint elements (see `per_image_product`).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// # Safety
    /// `offset` is inside the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's.
        unsafe { self.0.add(offset) }
    }
}

/// The weight gradient `[cout, cin]`: `Σ over images of dy · xᵀ`, each thread summing its
/// share of the images into its own matrix, the matrices then added.
pub fn weight_grad(
    batch: usize,
    channels_in: usize,
    spatial: usize,
    input: &[f32],
    out_grad: &[f32],
) -> Vec<f32> {
    let channels_out = out_grad.len() / (batch * spatial);
    let size = channels_out * channels_in;
    let shares = rayon::current_num_threads().clamp(1, batch);
    let inner = if shares > 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    let partial = |share: usize| {
        let mut dw = vec![0f32; size];
        for i in (share..batch).step_by(shares) {
            let dy = &out_grad[i * channels_out * spatial..][..channels_out * spatial];
            let x = &input[i * channels_in * spatial..][..channels_in * spatial];
            // SAFETY: `gemm` reads `dy` `[cout, spatial]` and `x` `[cin, spatial]` as its
            // transpose (row stride 1, column stride spatial), inside both, and adds into
            // every element of `dw` `[cout, cin]` (initialised), which this closure owns.
            unsafe {
                gemm::gemm(
                    channels_out,
                    channels_in,
                    spatial,
                    dw.as_mut_ptr(),
                    1,
                    channels_in as isize,
                    true,
                    dy.as_ptr(),
                    1,
                    spatial as isize,
                    x.as_ptr(),
                    spatial as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    inner,
                );
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
