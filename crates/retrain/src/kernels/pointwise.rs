//! The 1×1 convolution (stride 1, no padding, one group) on contiguous NCHW `f32` slices,
//! as matrix products that read NCHW in place: per image, `y = W · x` (`[cout, cin]` by
//! `[cin, h·w]`), and for training `dx = Wᵀ · dy` and `dW = Σ dy · xᵀ`, the transposes
//! being `gemm`'s strides rather than copies (burn's generic backward transposes the
//! activations to NHWC and back around its products).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::fused::{Epilogue, written_once};
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
///
/// The work is split into blocks of columns of each image, in parallel, each block one
/// single-threaded `gemm` then the epilogue while it is in cache. The blocks are the same
/// whatever the batch and the threads, so an image's output is the same bits however it is
/// batched (an evaluation reproduces the figures of the run that trained the model).
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
    let per_image = channels_out * spatial;
    let step = block_columns(channels_out, spatial);
    let blocks: Vec<(usize, usize)> = (0..batch)
        .flat_map(|i| (0..spatial).step_by(step).map(move |j0| (i, j0)))
        .collect();
    let mut out = Vec::with_capacity(batch * per_image);
    let dst = Shared(out.spare_capacity_mut().as_mut_ptr().cast::<f32>());
    blocks.into_par_iter().for_each(|(i, j0)| {
        let cols = step.min(spatial - j0);
        let x = &input[i * channels_in * spatial..][..channels_in * spatial];
        // SAFETY: the capacity holds `batch · cout · spatial` values; this block's are
        // columns `j0..j0 + cols` of the `cout` rows of image `i`, which no other block
        // touches.
        let image = unsafe { dst.at(i * per_image) };
        // SAFETY: `gemm` reads `weight` ([cout, cin], row-major) and `x`'s columns
        // `j0..j0 + cols` of its `cin` rows (stride `spatial`), all inside those slices, and
        // writes this block's columns (stride `spatial`); `read_dst` is false, so the
        // uninitialised destination is only written.
        unsafe {
            gemm::gemm(
                channels_out,
                cols,
                channels_in,
                image.add(j0),
                1,
                spatial as isize,
                false,
                weight.as_ptr(),
                1,
                channels_in as isize,
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
        for co in 0..channels_out {
            // SAFETY: `gemm` has just written these `cols` values of row `co`, this block's.
            let row = unsafe { std::slice::from_raw_parts_mut(image.add(co * spatial + j0), cols) };
            let b = bias.map_or(0.0, |b| b[co]);
            per_epilogue!(epilogue, |E| simd::vectorized(
                #[inline(always)]
                || row.iter_mut().for_each(|v| *v = E.value(*v + b))
            ));
        }
    });
    // SAFETY: the blocks cover every column of every row of every image, all written above.
    unsafe { out.set_len(batch * per_image) };
    out
}

/// The output buffer, shared by the blocks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct Shared(*mut f32);

// SAFETY: the blocks that share it write disjoint elements (see `forward`).
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

/// Whether images go to threads whole (each `gemm` on one thread), else one image at a
/// time with `gemm` parallel inside.
fn by_image(batch: usize) -> bool {
    batch >= 2 * rayon::current_num_threads()
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
    let inner = if by_image(batch) {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    let image = |i: usize, out: &mut [MaybeUninit<f32>]| {
        let dy = &out_grad[i * channels_out * spatial..][..channels_out * spatial];
        // SAFETY: `gemm` reads `weight` `[cout, cin]` as its transpose (row stride 1,
        // column stride cin) and `dy` `[cout, spatial]`, inside both, and writes every
        // element of `out` `[cin, spatial]`, which this closure alone holds; `read_dst` is
        // false, so the uninitialised destination is only written (the contract of
        // `written_once`).
        unsafe {
            gemm::gemm(
                channels_in,
                spatial,
                channels_out,
                out.as_mut_ptr().cast::<f32>(),
                1,
                spatial as isize,
                false,
                weight.as_ptr(),
                channels_in as isize,
                1,
                dy.as_ptr(),
                1,
                spatial as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                inner,
            );
        }
    };
    let per_image = channels_in * spatial;
    if by_image(batch) {
        written_once(batch * per_image, per_image, image)
    } else {
        let mut out = Vec::with_capacity(batch * per_image);
        for (i, chunk) in out.spare_capacity_mut()[..batch * per_image]
            .chunks_mut(per_image)
            .enumerate()
        {
            image(i, chunk);
        }
        // SAFETY: each image's chunk was written whole above.
        unsafe { out.set_len(batch * per_image) };
        out
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
