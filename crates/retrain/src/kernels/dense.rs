//! Dense convolutions (one group; any kernel, stride, dilation and padding) on contiguous
//! NCHW `f32` slices, as matrix products over the input's patches gathered a block of
//! output columns at a time (im2col): per image `y = W · P` (`W` `[cout, cin·kh·kw]`, `P`
//! `[cin·kh·kw, oh·ow]`), and for training `dW = Σ dy · Pᵀ` and `dx = scatter(Wᵀ · dy)`.
//!
//! burn's generic backward takes the weight gradient as a convolution of the transposed
//! input by the output gradient (a kernel the size of the output plane: products nine
//! columns wide, over patch matrices nine times the input), and the input gradient as a
//! transposed convolution. Here every product is a well-shaped `gemm` over a block of
//! patches that stays in cache, and the forward pass finishes each block with its bias and
//! activation (`pointwise::per_image_product`, shared with the 1×1 kernels).

use std::cell::RefCell;

use super::depthwise::Depthwise;
use super::fused::Finish;
use super::pointwise::{self, Matrix};
use super::{scratch, simd, written_once};

/// The geometry of a dense convolution: the sliding window (sizes, kernel, stride,
/// dilation, padding) as a depthwise convolution's with `channels` the input channels and
/// multiplier 1, and the output channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dense {
    pub window: Depthwise,
    pub channels_out: usize,
}

impl Dense {
    /// Rows of the patch matrix: `cin · kh · kw`.
    fn depth(&self) -> usize {
        self.window.channels * self.window.kernel[0] * self.window.kernel[1]
    }

    fn spatial(&self) -> usize {
        self.window.out_size[0] * self.window.out_size[1]
    }

    fn in_image(&self) -> usize {
        self.window.channels * self.window.in_size[0] * self.window.in_size[1]
    }

    /// Output columns per block: the block's patches about 1 MiB (in L2 while `gemm`
    /// packs them, on a core with 1 MiB of it), at least 64 columns. (On a core with 512
    /// KiB, 256 KiB blocks made ResNet-50's stem 4.5% faster, 3.32 → 3.17 ms an image, and
    /// its stride-2 shortcuts no faster: too little to size blocks by the cache found.)
    fn block(&self) -> usize {
        ((1usize << 18) / self.depth())
            .next_multiple_of(16)
            .clamp(64, 4096)
            .min(self.spatial())
    }

    /// The weight `[cout, cin, kh, kw]` as the `[cout, depth]` matrix.
    fn weight<'a>(&self, weight: &'a [f32]) -> Matrix<'a> {
        Matrix {
            values: weight,
            rows: self.channels_out,
            cols: self.depth(),
            row_stride: self.depth(),
            col_stride: 1,
        }
    }

    /// Calls `with` with columns `j0..j0 + cols` of image `i`'s patch matrix (`[depth,
    /// cols]`, in a buffer of the thread) and its row stride.
    fn patches(
        &self,
        input: &[f32],
        i: usize,
        j0: usize,
        cols: usize,
        with: &mut dyn FnMut(&[f32], usize),
    ) {
        thread_local! {
            static PATCHES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
        }
        let x = &input[i * self.in_image()..][..self.in_image()];
        PATCHES.with_borrow_mut(|p| {
            let p = scratch(p, self.depth() * cols);
            simd::vectorized(
                #[inline(always)]
                || {
                    self.walk(
                        j0,
                        cols,
                        #[inline(always)]
                        |row, src| row.copy(p, cols, x, src),
                    )
                },
            );
            with(p, cols)
        })
    }

    /// For every patch row `r` (input channel, kernel row, kernel column) and every output
    /// row that columns `j0..j0 + cols` cover: `f(segment, source)` with the segment's place
    /// in the block's row and, when its kernel row lands inside the input, the input row
    /// it reads. `f` is to be marked `#[inline(always)]`: as a function of its own it would
    /// not get the vector instructions of `simd::vectorized`.
    #[inline(always)]
    fn walk(&self, j0: usize, cols: usize, mut f: impl FnMut(Segment, Option<Source>)) {
        let g = &self.window;
        let [kh, kw] = g.kernel;
        let [ih, iw] = g.in_size;
        let ow = g.out_size[1];
        for c in 0..g.channels {
            for ky in 0..kh {
                for kx in 0..kw {
                    let r = (c * kh + ky) * kw + kx;
                    let (lo, hi, first) = g.valid_columns(kx);
                    let (mut o, mut p) = (0, j0);
                    while o < cols {
                        let (oy, ox0) = (p / ow, p % ow);
                        let n = (ow - ox0).min(cols - o);
                        // The segment's output columns ox0..ox0 + n; lo..hi read the input.
                        let (a, b) = (lo.clamp(ox0, ox0 + n), hi.clamp(ox0, ox0 + n));
                        let seg = Segment {
                            row: r,
                            at: o,
                            len: n,
                            valid: (a - ox0)..(b - ox0).max(a - ox0),
                        };
                        let src = g.input_index(0, oy, ky).map(|y| Source {
                            start: c * ih * iw
                                + y * iw
                                + first
                                + (a.saturating_sub(lo)) * g.stride[1],
                            stride: g.stride[1],
                        });
                        f(seg, src);
                        o += n;
                        p += n;
                    }
                }
            }
        }
    }
}

/// Part of one output row inside a block's patch row: `len` columns from `at`, of which
/// `valid` (relative) read the input; the others are padding.
struct Segment {
    row: usize,
    at: usize,
    len: usize,
    valid: std::ops::Range<usize>,
}

/// Where a segment's first valid column reads the input image, and the step between
/// columns (the stride).
#[derive(Clone, Copy)]
struct Source {
    start: usize,
    stride: usize,
}

impl Segment {
    /// The segment gathered from `x` into the block `p` (`cols` per row): zero where padded.
    #[inline(always)]
    fn copy(&self, p: &mut [f32], cols: usize, x: &[f32], src: Option<Source>) {
        let seg = &mut p[self.row * cols + self.at..][..self.len];
        let Some(s) = src.filter(|_| !self.valid.is_empty()) else {
            seg.fill(0.0);
            return;
        };
        seg[..self.valid.start].fill(0.0);
        seg[self.valid.end..].fill(0.0);
        let dst = &mut seg[self.valid.clone()];
        match s.stride {
            1 => dst.copy_from_slice(&x[s.start..][..dst.len()]),
            2 => simd::every_second(dst, &x[s.start..]),
            _ => {
                for (t, d) in dst.iter_mut().enumerate() {
                    *d = x[s.start + t * s.stride];
                }
            }
        }
    }

    /// The segment of the block `p` added back into the image gradient `dx`, where it read.
    #[inline(always)]
    fn add_into(&self, p: &[f32], cols: usize, dx: &mut [f32], src: Option<Source>) {
        let Some(s) = src.filter(|_| !self.valid.is_empty()) else {
            return;
        };
        let seg = &p[self.row * cols + self.at..][..self.len][self.valid.clone()];
        if s.stride == 1 {
            for (d, &v) in dx[s.start..][..seg.len()].iter_mut().zip(seg) {
                *d += v;
            }
        } else {
            for (t, &v) in seg.iter().enumerate() {
                dx[s.start + t * s.stride] += v;
            }
        }
    }
}

/// The convolution of `input` `[n, cin, h, w]` by `weight` `[cout, cin, kh, kw]`, then
/// `finish`, as `[n, cout, oh, ow]`.
pub fn forward(g: &Dense, input: &[f32], weight: &[f32], finish: Finish) -> Vec<f32> {
    let patches = |i: usize, j0: usize, cols: usize, with: &mut dyn FnMut(&[f32], usize)| {
        g.patches(input, i, j0, cols, with)
    };
    let w = g.weight(weight);
    let (batch, spatial) = (g.window.batch, g.spatial());
    pointwise::per_image_product(batch, spatial, g.block(), w, &patches, finish)
}

/// The weight gradient `[cout, cin, kh, kw]`: `Σ over images of dy · Pᵀ`.
pub fn weight_grad(g: &Dense, input: &[f32], out_grad: &[f32]) -> Vec<f32> {
    let patches = |i: usize, j0: usize, cols: usize, with: &mut dyn FnMut(&[f32], usize)| {
        g.patches(input, i, j0, cols, with)
    };
    pointwise::sum_of_products(
        g.window.batch,
        g.spatial(),
        g.block(),
        g.channels_out,
        g.depth(),
        out_grad,
        &patches,
    )
}

/// The input gradient `[n, cin, h, w]`: per image and block of columns `Wᵀ · dy`, each
/// patch element added back where it was read. One task per image (its gradient is written
/// by one thread), each with `gemm` single-threaded unless the batch is smaller than the
/// threads.
pub fn input_grad(g: &Dense, weight: &[f32], out_grad: &[f32]) -> Vec<f32> {
    let (depth, spatial, cout) = (g.depth(), g.spatial(), g.channels_out);
    assert!(weight.len() == cout * depth && out_grad.len() == g.window.batch * cout * spatial);
    let step = g.block();
    let inner = if g.window.batch >= rayon::current_num_threads() {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    thread_local! {
        static BLOCK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    written_once(g.window.batch * g.in_image(), g.in_image(), |i, dx| {
        let dx = {
            for v in dx.iter_mut() {
                v.write(0.0);
            }
            // SAFETY: every element was just written.
            unsafe { &mut *(dx as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) }
        };
        let dy = &out_grad[i * cout * spatial..][..cout * spatial];
        BLOCK.with_borrow_mut(|p| {
            for j0 in (0..spatial).step_by(step) {
                let cols = step.min(spatial - j0);
                let p = scratch(p, depth * cols);
                // SAFETY: `gemm` reads `weight` `[cout, depth]` as its transpose (inside it:
                // asserted) and columns `j0..j0 + cols` of `dy`'s `cout` rows (stride
                // `spatial`, inside `dy`), and writes all of `p` `[depth, cols]`, which it
                // does not read (`read_dst` false).
                unsafe {
                    gemm::gemm(
                        depth,
                        cols,
                        cout,
                        p.as_mut_ptr(),
                        1,
                        cols as isize,
                        false,
                        weight.as_ptr(),
                        depth as isize,
                        1,
                        dy.as_ptr().add(j0),
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
                simd::vectorized(
                    #[inline(always)]
                    || {
                        g.walk(
                            j0,
                            cols,
                            #[inline(always)]
                            |seg, src| seg.add_into(p, cols, dx, src),
                        )
                    },
                );
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patch matrix of a small padded, strided, dilated case equals its definition,
    /// whatever the block it is gathered in.
    #[test]
    fn patches_are_the_definition() {
        let window = Depthwise {
            batch: 1,
            channels: 2,
            multiplier: 1,
            in_size: [5, 6],
            out_size: [3, 3],
            kernel: [2, 3],
            stride: [2, 2],
            dilation: [1, 2],
            pad_begin: [1, 1],
        };
        let g = Dense {
            window,
            channels_out: 1,
        };
        let x: Vec<f32> = (0..60).map(|v| v as f32 + 1.0).collect();
        let want = |r: usize, p: usize| {
            let (c, ky, kx) = (r / 6, (r / 3) % 2, r % 3);
            let (oy, ox) = (p / 3, p % 3);
            let y = (oy * 2 + ky) as isize - 1;
            let xx = (ox * 2 + kx * 2) as isize - 1;
            if (0..5).contains(&y) && (0..6).contains(&xx) {
                x[c * 30 + y as usize * 6 + xx as usize]
            } else {
                0.0
            }
        };
        for (j0, cols) in [(0, 9), (0, 4), (4, 5), (2, 3)] {
            let mut got = Vec::new();
            g.patches(&x, 0, j0, cols, &mut |p, stride| {
                assert_eq!(stride, cols);
                got = p.to_vec();
            });
            for r in 0..12 {
                for k in 0..cols {
                    assert_eq!(got[r * cols + k], want(r, j0 + k), "r{r} p{}", j0 + k);
                }
            }
        }
    }
}
