//! Compute kernels where burn's generic operations are slow on the CPU, as a burn backend
//! extension ([`Kernels`]): a body for burn-flex and, under `Autodiff`, a backward node
//! that calls the flex bodies of the gradients.
//!
//! Callers use the tensor-level functions here ([`conv2d`], [`conv`], [`activation`]); they
//! route to the extension only on the CPU backend, so GPU backends keep their own kernels.
//!
//! - `depthwise`: the input and weight gradients of a depthwise convolution.
//! - [`Pointwise`]: ReLU6, hard-swish, SiLU and the exact GELU in one pass each way
//!   (`gelu.rs`: an erf without a libm call per element).
//! - `batchnorm`: BatchNorm on the batch's statistics (training), forward and backward.
//! - `fused`: inference convolutions (depthwise, 1×1) with their bias and activation in the
//!   same pass ([`conv_fused`]).
//! - `inverted`: a folded MobileNet inverted residual block in one pass over bands of
//!   output rows, with its squeeze-excitation where it has one ([`inverted_block`]).
//! - `pool`: max pooling for inference ([`max_pool2d`]) and global average pooling with
//!   its gradient ([`global_avg_pool`]).

pub mod depthwise;
mod gelu;
mod simd;

pub use fused::{Epilogue, Finish};
pub use inverted::Gate;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::ops::conv::calculate_pool_output_size;
use burn::backend::ops::{ConvOptions, FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, DispatchDevice, Flex, TensorMetadata,
    backend_extension,
};
use burn::module::{Param, ParamId};
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::{DType, Slice, TensorData};
use std::mem::MaybeUninit;

use rayon::prelude::*;

use depthwise::Depthwise;

/// retrain's own operations. The depthwise convolution's default bodies are burn's
/// operations (what the flex bodies fall back to for other dtypes); the activations have
/// no default, as only burn-flex and its autodiff implement this trait.
#[backend_extension(Flex, Autodiff)]
pub trait Kernels: Backend {
    /// A depthwise convolution without bias (`options.groups` = input channels).
    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// The gradient of [`Kernels::depthwise_conv2d`] for its input.
    fn depthwise_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, out_grad, options)
    }

    /// The gradient of [`Kernels::depthwise_conv2d`] for its weight.
    fn depthwise_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, out_grad, options)
    }

    /// A dense convolution (one group) without bias, as matrix products: on the input as
    /// stored for a 1×1 one with stride 1 and no padding (`pointwise.rs`), on gathered
    /// patches otherwise (`dense.rs`).
    fn dense_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d(x, weight, None, options)
    }

    /// The gradient of [`Kernels::dense_conv2d`] for its input.
    fn dense_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, out_grad, options)
    }

    /// The gradient of [`Kernels::dense_conv2d`] for its weight.
    fn dense_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, out_grad, options)
    }

    /// A convolution with its bias, then `epilogue`, for inference: in one pass where
    /// retrain has the kernel (depthwise and dense convolutions on burn-flex).
    fn conv2d_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
        epilogue: Epilogue,
    ) -> FloatTensor<Self> {
        conv2d_then::<Self>(x, weight, bias, None, options, epilogue)
    }

    /// [`Kernels::conv2d_fused`] with `residual` (a tensor of the output's shape: a
    /// residual block's shortcut) added before `epilogue`, in the same pass for the dense
    /// convolutions on burn-flex.
    fn conv2d_fused_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        options: ConvOptions<2>,
        epilogue: Epilogue,
    ) -> FloatTensor<Self> {
        conv2d_then::<Self>(x, weight, bias, Some(residual), options, epilogue)
    }

    /// [`Kernels::conv2d_fused`] of a 3×3 convolution, its weight also as `transformed`
    /// (`[winograd::matrices(stride), cout, cin]`, [`winograd::transform_weights`] at
    /// `options`' stride, made once when the network was folded): by Winograd's minimal
    /// filtering (F(2×4, 3×3) at stride 1, 2×2 tiles at stride 2) on burn-flex (`winograd.rs`)
    /// where it applies (stride 1, or 2 on large enough outputs; dilation 1), the direct
    /// kernel otherwise.
    fn conv2d_winograd(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        transformed: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
        epilogue: Epilogue,
    ) -> FloatTensor<Self> {
        let _ = transformed;
        conv2d_then::<Self>(x, weight, bias, None, options, epilogue)
    }

    /// [`Kernels::conv2d_winograd`] with `residual` added before `epilogue`.
    #[allow(clippy::too_many_arguments)]
    fn conv2d_winograd_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        transformed: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        options: ConvOptions<2>,
        epilogue: Epilogue,
    ) -> FloatTensor<Self> {
        let _ = transformed;
        conv2d_then::<Self>(x, weight, bias, Some(residual), options, epilogue)
    }

    /// A MobileNet inverted residual block for inference, BatchNorm folded: the 1×1
    /// expansion and its activation `acts[0]`, the depthwise convolution (`depthwise`
    /// options) and `acts[1]`, the linear 1×1 projection, and `x` added with `residual`. In
    /// one pass over bands of output rows on burn-flex (`inverted.rs`).
    #[allow(clippy::too_many_arguments)]
    fn inverted_block(
        x: FloatTensor<Self>,
        expand_weight: FloatTensor<Self>,
        expand_bias: FloatTensor<Self>,
        depthwise_weight: FloatTensor<Self>,
        depthwise_bias: FloatTensor<Self>,
        project_weight: FloatTensor<Self>,
        project_bias: FloatTensor<Self>,
        depthwise: ConvOptions<2>,
        acts: [Epilogue; 2],
        residual: bool,
    ) -> FloatTensor<Self> {
        inverted_then::<Self>(
            x,
            [
                [expand_weight, expand_bias],
                [depthwise_weight, depthwise_bias],
                [project_weight, project_bias],
            ],
            None,
            depthwise,
            acts,
            residual,
        )
    }

    /// [`Kernels::inverted_block`] with a squeeze-excitation (EfficientNet, MobileNetV3)
    /// between the depthwise convolution and the projection: the depthwise output's mean
    /// over each plane through the 1×1 `reduce` convolution and `se.act`, the 1×1 `excite`
    /// one and `se.gate`, scaling its channels. On burn-flex the expansion and the
    /// depthwise convolution still run in bands (`inverted.rs`).
    #[allow(clippy::too_many_arguments)]
    fn inverted_block_squeezed(
        x: FloatTensor<Self>,
        expand_weight: FloatTensor<Self>,
        expand_bias: FloatTensor<Self>,
        depthwise_weight: FloatTensor<Self>,
        depthwise_bias: FloatTensor<Self>,
        reduce_weight: FloatTensor<Self>,
        reduce_bias: FloatTensor<Self>,
        excite_weight: FloatTensor<Self>,
        excite_bias: FloatTensor<Self>,
        project_weight: FloatTensor<Self>,
        project_bias: FloatTensor<Self>,
        depthwise: ConvOptions<2>,
        acts: [Epilogue; 2],
        se: SqueezeActs,
        residual: bool,
    ) -> FloatTensor<Self> {
        inverted_then::<Self>(
            x,
            [
                [expand_weight, expand_bias],
                [depthwise_weight, depthwise_bias],
                [project_weight, project_bias],
            ],
            Some((
                [[reduce_weight, reduce_bias], [excite_weight, excite_bias]],
                se,
            )),
            depthwise,
            acts,
            residual,
        )
    }

    /// A max pool for inference (symmetric padding; no autodiff: [`max_pool2d`] keeps
    /// burn's under autodiff): one vector pass per window tap on burn-flex.
    fn max_pool2d_inference(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    ) -> FloatTensor<Self> {
        Self::max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    }

    /// The mean of each `[h, w]` plane of `x` `[n, c, h, w]`, as `[n, c]` (global average
    /// pooling), in one pass.
    fn global_avg_pool(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The gradient of [`Kernels::global_avg_pool`] for its input, of shape `shape`, in one
    /// pass.
    fn global_avg_pool_backward(
        out_grad: FloatTensor<Self>,
        shape: [usize; 4],
    ) -> FloatTensor<Self>;

    /// An elementwise activation in one pass (burn composes ReLU6, hard-swish and SiLU of
    /// two to four passes each way).
    fn activation(x: FloatTensor<Self>, act: Pointwise) -> FloatTensor<Self>;

    /// The gradient of [`Kernels::activation`] for its input `x`, in one pass.
    fn activation_backward(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        act: Pointwise,
    ) -> FloatTensor<Self>;

    /// Mean and biased variance per channel of `[n, c, h, w]`, as `[2, c]`; not
    /// differentiated (the gradient of [`Kernels::batch_norm_with_stats`] accounts for them).
    fn channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// BatchNorm on the batch's own statistics `stats` (from [`Kernels::channel_stats`]),
    /// then `options.epilogue`, in one pass.
    fn batch_norm_with_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        options: NormOptions,
    ) -> FloatTensor<Self>;

    /// The gradients of [`Kernels::batch_norm_with_stats`] for gamma and beta, as `[2, c]`.
    fn batch_norm_param_grads(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        options: NormOptions,
    ) -> FloatTensor<Self>;

    /// The gradient of [`Kernels::batch_norm_with_stats`] for its input, from the sums of
    /// [`Kernels::batch_norm_param_grads`].
    fn batch_norm_input_grad(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        sums: FloatTensor<Self>,
        options: NormOptions,
    ) -> FloatTensor<Self>;
}

/// A training-mode BatchNorm's epsilon and the activation that follows it in the same pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormOptions {
    pub epsilon: f64,
    pub epilogue: Epilogue,
}

/// Whether a convolution of `weight`'s shape under `options` is a 1×1 one with stride 1, no
/// padding and one group: what the 1×1 kernels (`pointwise.rs`) compute.
fn is_unit(weight: &[usize], options: &ConvOptions<2>) -> bool {
    weight[2..] == [1, 1]
        && options.groups == 1
        && options.stride == [1, 1]
        && options.padding.iter().all(|&p| p == (0, 0))
}

/// burn's convolution with its bias, then the residual and `epilogue` as separate
/// operations: the body of [`Kernels::conv2d_fused`] where no fused kernel applies.
fn conv2d_then<B: Kernels>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    residual: Option<FloatTensor<B>>,
    options: ConvOptions<2>,
    epilogue: Epilogue,
) -> FloatTensor<B> {
    let y = B::conv2d(x, weight, Some(bias), options);
    let y = match residual {
        Some(r) => B::float_add(y, r),
        None => y,
    };
    match epilogue {
        Epilogue::Identity => y,
        Epilogue::Relu => B::relu(y),
        Epilogue::Act(a) => B::activation(y, a),
    }
}

/// What follows a squeeze-excitation's two 1×1 convolutions: `act` after the first, the
/// channel `gate` after the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqueezeActs {
    pub act: Epilogue,
    pub gate: Gate,
}

/// A squeeze-excitation's reduce and excite convolutions (`[weight, bias]` each) and what
/// follows them.
type SqueezeParts<B> = ([[FloatTensor<B>; 2]; 2], SqueezeActs);

/// [`Kernels::inverted_block`] (and with `squeeze`, [`Kernels::inverted_block_squeezed`])
/// as its fused convolutions and, for the squeeze-excitation, burn's operations: its body
/// where the fused block does not apply.
fn inverted_then<B: Kernels>(
    x: FloatTensor<B>,
    [[ew, eb], [dw, db], [pw, pb]]: [[FloatTensor<B>; 2]; 3],
    squeeze: Option<SqueezeParts<B>>,
    depthwise: ConvOptions<2>,
    [e_act, d_act]: [Epilogue; 2],
    residual: bool,
) -> FloatTensor<B> {
    let one = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let e = B::conv2d_fused(x.clone(), ew, eb, one.clone(), e_act);
    let mut d = B::conv2d_fused(e, dw, db, depthwise, d_act);
    if let Some(([[rw, rb], [xw, xb]], se)) = squeeze {
        let mean = B::float_mean_dim(B::float_mean_dim(d.clone(), 2), 3);
        let reduced = B::conv2d_fused(mean, rw, rb, one.clone(), se.act);
        let excited = B::conv2d_fused(reduced, xw, xb, one.clone(), Epilogue::Identity);
        let gate = match se.gate {
            Gate::Sigmoid => B::sigmoid(excited),
            Gate::HardSigmoid => B::hard_sigmoid(excited, (1.0f64 / 6.0).into(), 0.5f64.into()),
        };
        d = B::float_mul(d.clone(), B::float_expand(gate, d.shape()));
    }
    match residual {
        true => B::conv2d_fused_residual(d, pw, pb, x, one, Epilogue::Identity),
        false => B::conv2d_fused(d, pw, pb, one, Epilogue::Identity),
    }
}

/// The activations [`Kernels::activation`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pointwise {
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x · relu6(x + 3) / 6`.
    Hardswish,
    /// `x · sigmoid(x)`.
    Silu,
    /// `x · Φ(x)`, the exact (erf) GELU.
    Gelu,
}

impl Pointwise {
    // Always inlined: with `self` known (`per_activation!`), the `match` folds away and the
    // calling loop vectorises.
    #[inline(always)]
    fn value(self, x: f32) -> f32 {
        match self {
            // NaN propagates, as PyTorch's hardtanh does: each comparison is false for a
            // NaN, which passes through. Written so, each is one `max`/`min` instruction
            // (whose NaN rule is to return the second operand); `is_nan` and `clamp` were a
            // compare and a blend more per vector.
            Pointwise::Relu6 => {
                let x = if x < 0.0 { 0.0 } else { x };
                if x > 6.0 { 6.0 } else { x }
            }
            Pointwise::Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
            Pointwise::Silu => x * gelu::sigmoid(x),
            Pointwise::Gelu => gelu::value(x),
        }
    }

    /// The derivative at `x`, with PyTorch's values at the kinks: ReLU6's is 0 at 0 and 6
    /// (`hardtanh_backward`: inside the open interval only; burn's clamp gives 1 there),
    /// hard-swish's -0.5 at -3 and 1.5 at 3 (`hardswish_backward`).
    #[inline(always)]
    fn derivative(self, x: f32) -> f32 {
        match self {
            Pointwise::Relu6 => {
                if x > 0.0 && x < 6.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Pointwise::Hardswish => {
                if x < -3.0 {
                    0.0
                } else if x <= 3.0 {
                    x / 3.0 + 0.5
                } else {
                    1.0
                }
            }
            Pointwise::Silu => {
                let s = gelu::sigmoid(x);
                s * (1.0 + x * (1.0 - s))
            }
            Pointwise::Gelu => gelu::derivative(x),
        }
    }
}

/// `$body` with `$a` bound to the activation, known at compile time in each copy: the
/// `match` in `value` and `derivative` then folds away and the element loops vectorise
/// (with the activation a run-time value they did not).
macro_rules! per_activation {
    ($act:expr, |$a:ident| $body:expr) => {
        match $act {
            Pointwise::Relu6 => {
                let $a = Pointwise::Relu6;
                $body
            }
            Pointwise::Hardswish => {
                let $a = Pointwise::Hardswish;
                $body
            }
            Pointwise::Silu => {
                let $a = Pointwise::Silu;
                $body
            }
            Pointwise::Gelu => {
                let $a = Pointwise::Gelu;
                $body
            }
        }
    };
}

// After `per_activation!`, which they use; `pointwise` and `batchnorm` after `fused`'s
// `per_epilogue!`.
#[macro_use]
pub mod fused;
pub mod batchnorm;
pub mod dense;
pub mod inverted;
pub mod pointwise;
pub mod pool;
pub mod winograd;

/// Elements per parallel task of the elementwise kernels: large enough to amortise a
/// task, small enough to split a 64×64 map across cores.
const CHUNK: usize = 1 << 14;

/// `f(a[i], b[i])` for every element, in parallel chunks; `f` must be `#[inline(always)]`
/// to be compiled into the vectorised loop.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    written_once(a.len(), CHUNK, |i, o| {
        let (a, b) = (&a[i * CHUNK..][..o.len()], &b[i * CHUNK..][..o.len()]);
        simd::vectorized(
            #[inline(always)]
            || {
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    o.write(f(a, b));
                }
            },
        )
    })
}

thread_local! {
    /// The threads a kernel called on this thread spreads its blocks over; 0: all of
    /// rayon's ([`threads`], [`with_threads`]).
    static THREADS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The threads a kernel called here may keep busy: rayon's, or fewer inside
/// [`with_threads`], where the caller runs other work on the rest.
pub(crate) fn threads() -> usize {
    match THREADS.get() {
        0 => rayon::current_num_threads(),
        n => n,
    }
}

/// `f()`, the kernels it calls on this thread spreading their blocks over `n` threads
/// (at least 1) instead of all of rayon's: for a caller that runs several such `f` at once
/// (`zoo::network::run_stages`' groups of images), so that each kernel keeps its work in
/// few large blocks (a group's images side by side in one product) rather than splitting
/// it for threads that are busy with the other groups.
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            THREADS.set(self.0);
        }
    }
    let _restore = Restore(THREADS.replace(n.max(1)));
    f()
}

/// The first `len` values of a kernel's scratch `buffer` (a thread's, kept between calls),
/// which only grows: sized to each call with `resize`, it was zero-filled afresh wherever
/// a larger layer followed a smaller one, a pass over the grown part each time. The values
/// are what earlier calls left there; callers write before they read.
pub(crate) fn scratch(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// A vector of `len` values whose every element `fill` writes: `fill` gets disjoint chunks
/// of `chunk` elements (the last may be shorter) with their index, in parallel.
pub(crate) fn written_once(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: the capacity is at least `len`, and every element of `..len` was written: the
    // chunks cover it, and `fill` writes its whole chunk (the contract every caller keeps).
    unsafe { out.set_len(len) };
    out
}

/// The geometry of a depthwise convolution from the shapes of its input, weight and output.
fn geometry(x: &[usize], weight: &[usize], out: &[usize], o: &ConvOptions<2>) -> Depthwise {
    Depthwise {
        batch: x[0],
        channels: x[1],
        multiplier: weight[0] / x[1],
        in_size: [x[2], x[3]],
        out_size: [out[2], out[3]],
        kernel: [weight[2], weight[3]],
        stride: o.stride,
        dilation: o.dilation,
        pad_begin: o.padding_begin(),
    }
}

/// A dense convolution's geometry, and whether it is a 1×1 one the kernels take on the
/// input as stored.
struct DenseGeometry {
    dense: dense::Dense,
    unit: bool,
}

impl DenseGeometry {
    fn out_shape(&self) -> Vec<usize> {
        let w = &self.dense.window;
        vec![
            w.batch,
            self.dense.channels_out,
            w.out_size[0],
            w.out_size[1],
        ]
    }
}

/// The geometry of a convolution of `x` by `weight` (shapes) under `options` when it is a
/// dense one (one group) that the kernels take: every size at least 1, and an output.
fn dense_geometry(
    x: &[usize],
    weight: &[usize],
    options: &ConvOptions<2>,
) -> Option<DenseGeometry> {
    let sizes = x.iter().chain(weight).all(|&d| d > 0);
    if options.groups != 1 || weight[1] != x[1] || !sizes {
        return None;
    }
    let out = output_size(x, weight, options)?;
    let shape = [x[0], weight[0], out[0], out[1]];
    Some(DenseGeometry {
        dense: dense::Dense {
            window: geometry(x, weight, &shape, options),
            channels_out: weight[0],
        },
        unit: is_unit(weight, options),
    })
}

/// The forward pass of a dense convolution, then `finish`.
fn dense_forward(g: &DenseGeometry, x: &[f32], weight: &[f32], finish: Finish) -> Vec<f32> {
    if g.unit {
        let w = &g.dense.window;
        let spatial = w.in_size[0] * w.in_size[1];
        pointwise::forward(w.batch, w.channels, spatial, x, weight, finish)
    } else {
        dense::forward(&g.dense, x, weight, finish)
    }
}

/// The output height and width of a convolution of `x` by `weight` (shapes), when the
/// padded input holds the kernel's reach.
fn output_size(x: &[usize], weight: &[usize], options: &ConvOptions<2>) -> Option<[usize; 2]> {
    let out = |a: usize| {
        let reach = options.dilation[a] * (weight[2 + a].checked_sub(1)?) + 1;
        let padded = x[2 + a] + options.padding_begin()[a] + options.padding_end()[a];
        padded.checked_sub(reach).map(|d| d / options.stride[a] + 1)
    };
    Some([out(0)?, out(1)?])
}

/// The `f32` values of a flex tensor, copied only when it is not contiguous.
fn values(
    t: &<Flex as burn::backend::BackendTypes>::FloatTensorPrimitive,
) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => {
            std::borrow::Cow::Owned(t.to_contiguous().as_slice::<f32>().unwrap_or(&[]).to_vec())
        }
    }
}

fn flex_tensor(values: Vec<f32>, shape: Vec<usize>) -> FloatTensor<Flex> {
    burn::backend::flex::FlexTensor::from_data(TensorData::new(values, shape))
}

impl Kernels for Flex {
    fn max_pool2d_inference(
        x: FloatTensor<Self>,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        dilation: [usize; 2],
        ceil_mode: bool,
    ) -> FloatTensor<Self> {
        let xs = x.shape().to_vec();
        // Shapes burn's pool takes: a window that fits the padded input, a padding smaller
        // than the window; anything else goes to burn's own pool (and its error).
        let fits = (0..2).all(|a| {
            let ext = dilation[a] * kernel[a].saturating_sub(1) + 1;
            kernel[a] > 0
                && dilation[a] > 0
                && stride[a] > 0
                && padding[a] < ext
                && xs[a + 2] + 2 * padding[a] >= ext
        });
        if x.dtype() != DType::F32 || xs.contains(&0) || !fits {
            return Self::max_pool2d(x, kernel, stride, padding, dilation, ceil_mode);
        }
        let out = |a: usize| {
            calculate_pool_output_size(
                kernel[a],
                stride[a],
                padding[a],
                dilation[a],
                xs[a + 2],
                ceil_mode,
            )
        };
        let (oh, ow) = (out(0), out(1));
        let g = Depthwise {
            batch: xs[0],
            channels: xs[1],
            multiplier: 1,
            in_size: [xs[2], xs[3]],
            out_size: [oh, ow],
            kernel,
            stride,
            dilation,
            pad_begin: padding,
        };
        flex_tensor(pool::max_pool(&g, &values(&x)), vec![xs[0], xs[1], oh, ow])
    }

    fn dense_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let f32s = [x.dtype(), weight.dtype()] == [DType::F32; 2];
        let Some(g) = dense_geometry(&x.shape(), &weight.shape(), &options).filter(|_| f32s) else {
            return Self::conv2d(x, weight, None, options);
        };
        let (xv, wv) = (values(&x), values(&weight));
        flex_tensor(dense_forward(&g, &xv, &wv, Finish::NONE), g.out_shape())
    }

    fn dense_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let f32s = [x.dtype(), weight.dtype(), out_grad.dtype()] == [DType::F32; 3];
        let xs = x.shape().to_vec();
        let Some(g) = dense_geometry(&xs, &weight.shape(), &options).filter(|_| f32s) else {
            return Self::conv2d_x_backward(x, weight, out_grad, options);
        };
        let (wv, gv) = (values(&weight), values(&out_grad));
        let dx = if g.unit {
            let w = &g.dense.window;
            pointwise::input_grad(w.batch, w.channels, w.in_size[0] * w.in_size[1], &wv, &gv)
        } else {
            dense::input_grad(&g.dense, &wv, &gv)
        };
        flex_tensor(dx, xs)
    }

    fn dense_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let f32s = [x.dtype(), weight.dtype(), out_grad.dtype()] == [DType::F32; 3];
        let ws = weight.shape().to_vec();
        let Some(g) = dense_geometry(&x.shape(), &ws, &options).filter(|_| f32s) else {
            return Self::conv2d_weight_backward(x, weight, out_grad, options);
        };
        let (xv, gv) = (values(&x), values(&out_grad));
        let dw = if g.unit {
            let w = &g.dense.window;
            pointwise::weight_grad(w.batch, w.channels, w.in_size[0] * w.in_size[1], &xv, &gv)
        } else {
            dense::weight_grad(&g.dense, &xv, &gv)
        };
        flex_tensor(dw, ws)
    }

    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        let (xs, ws) = (x.shape().to_vec(), weight.shape().to_vec());
        let sizes = xs.iter().chain(&ws).all(|&d| d > 0);
        let Some([oh, ow]) = output_size(&xs, &ws, &options).filter(|_| sizes) else {
            return Self::conv2d(x, weight, None, options);
        };
        if [x.dtype(), weight.dtype()] != [DType::F32; 2] {
            return Self::conv2d(x, weight, None, options);
        }
        let shape = [xs[0], ws[0], oh, ow];
        let g = geometry(&xs, &ws, &shape, &options);
        let y = fused::depthwise(&g, &values(&x), &values(&weight), None, Epilogue::Identity);
        flex_tensor(y, shape.to_vec())
    }

    fn depthwise_conv2d_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        if [x.dtype(), weight.dtype(), out_grad.dtype()] != [DType::F32; 3] {
            return Self::conv2d_x_backward(x, weight, out_grad, options);
        }
        let xs = x.shape().to_vec();
        let g = geometry(&xs, &weight.shape(), &out_grad.shape(), &options);
        let dx = depthwise::input_grad(&g, &values(&weight), &values(&out_grad));
        flex_tensor(dx, xs)
    }

    fn depthwise_conv2d_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        if [x.dtype(), weight.dtype(), out_grad.dtype()] != [DType::F32; 3] {
            return Self::conv2d_weight_backward(x, weight, out_grad, options);
        }
        let ws = weight.shape().to_vec();
        let g = geometry(&x.shape(), &ws, &out_grad.shape(), &options);
        let dw = depthwise::weight_grad(&g, &values(&x), &values(&out_grad));
        flex_tensor(dw, ws)
    }

    fn conv2d_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
        epilogue: Epilogue,
    ) -> FloatTensor<Self> {
        flex_conv2d_fused([x, weight, bias], None, None, options, epilogue)
    }

    fn conv2d_fused_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        options: ConvOptions<2>,
        epilogue: Epilogue,
    ) -> FloatTensor<Self> {
        flex_conv2d_fused([x, weight, bias], None, Some(residual), options, epilogue)
    }

    fn conv2d_winograd(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        transformed: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        options: ConvOptions<2>,
        epilogue: Epilogue,
    ) -> FloatTensor<Self> {
        flex_conv2d_fused(
            [x, weight, bias],
            Some(transformed),
            None,
            options,
            epilogue,
        )
    }

    fn conv2d_winograd_residual(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        transformed: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        options: ConvOptions<2>,
        epilogue: Epilogue,
    ) -> FloatTensor<Self> {
        let (u, r) = (Some(transformed), Some(residual));
        flex_conv2d_fused([x, weight, bias], u, r, options, epilogue)
    }

    fn inverted_block(
        x: FloatTensor<Self>,
        expand_weight: FloatTensor<Self>,
        expand_bias: FloatTensor<Self>,
        depthwise_weight: FloatTensor<Self>,
        depthwise_bias: FloatTensor<Self>,
        project_weight: FloatTensor<Self>,
        project_bias: FloatTensor<Self>,
        depthwise: ConvOptions<2>,
        acts: [Epilogue; 2],
        residual: bool,
    ) -> FloatTensor<Self> {
        let block = [
            &x,
            &expand_weight,
            &expand_bias,
            &depthwise_weight,
            &depthwise_bias,
            &project_weight,
            &project_bias,
        ];
        match flex_inverted(block, None, &depthwise, acts, residual) {
            Some(y) => y,
            None => inverted_then::<Self>(
                x,
                [
                    [expand_weight, expand_bias],
                    [depthwise_weight, depthwise_bias],
                    [project_weight, project_bias],
                ],
                None,
                depthwise,
                acts,
                residual,
            ),
        }
    }

    fn inverted_block_squeezed(
        x: FloatTensor<Self>,
        expand_weight: FloatTensor<Self>,
        expand_bias: FloatTensor<Self>,
        depthwise_weight: FloatTensor<Self>,
        depthwise_bias: FloatTensor<Self>,
        reduce_weight: FloatTensor<Self>,
        reduce_bias: FloatTensor<Self>,
        excite_weight: FloatTensor<Self>,
        excite_bias: FloatTensor<Self>,
        project_weight: FloatTensor<Self>,
        project_bias: FloatTensor<Self>,
        depthwise: ConvOptions<2>,
        acts: [Epilogue; 2],
        se: SqueezeActs,
        residual: bool,
    ) -> FloatTensor<Self> {
        let block = [
            &x,
            &expand_weight,
            &expand_bias,
            &depthwise_weight,
            &depthwise_bias,
            &project_weight,
            &project_bias,
        ];
        let squeeze = [&reduce_weight, &reduce_bias, &excite_weight, &excite_bias];
        match flex_inverted(block, Some((squeeze, se)), &depthwise, acts, residual) {
            Some(y) => y,
            None => inverted_then::<Self>(
                x,
                [
                    [expand_weight, expand_bias],
                    [depthwise_weight, depthwise_bias],
                    [project_weight, project_bias],
                ],
                Some((
                    [[reduce_weight, reduce_bias], [excite_weight, excite_bias]],
                    se,
                )),
                depthwise,
                acts,
                residual,
            ),
        }
    }

    fn global_avg_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let s = x.shape().to_vec();
        if s.contains(&0) {
            // burn's means, and its NaN over an empty plane.
            let m = Self::float_mean_dim(Self::float_mean_dim(x, 3), 2);
            return Self::float_reshape(m, Shape::new([s[0], s[1]]));
        }
        let dtype = x.dtype();
        let x = as_f32(x);
        let means = pool::plane_means(&values(&x), s[2] * s[3]);
        back_to(flex_tensor(means, vec![s[0], s[1]]), dtype)
    }

    fn global_avg_pool_backward(
        out_grad: FloatTensor<Self>,
        shape: [usize; 4],
    ) -> FloatTensor<Self> {
        let dtype = out_grad.dtype();
        if shape.contains(&0) {
            return back_to(flex_tensor(Vec::new(), shape.to_vec()), dtype);
        }
        let g = as_f32(out_grad);
        let dx = pool::plane_means_grad(&values(&g), shape[2] * shape[3]);
        back_to(flex_tensor(dx, shape.to_vec()), dtype)
    }

    fn activation(x: FloatTensor<Self>, act: Pointwise) -> FloatTensor<Self> {
        let dtype = x.dtype();
        let mut x = as_f32(x);
        if let Some(v) = whole_storage(&mut x) {
            // Inference: the input is not kept, so it becomes the output.
            per_activation!(act, |a| v.par_chunks_mut(CHUNK).for_each(|c| {
                simd::vectorized(
                    #[inline(always)]
                    || c.iter_mut().for_each(|x| *x = a.value(*x)),
                )
            }));
            return back_to(x, dtype);
        }
        let v = values(&x);
        let y = per_activation!(act, |a| zip_map(
            &v,
            &v,
            #[inline(always)]
            |x, _| a.value(x)
        ));
        back_to(flex_tensor(y, x.shape().to_vec()), dtype)
    }

    fn activation_backward(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        act: Pointwise,
    ) -> FloatTensor<Self> {
        let dtype = out_grad.dtype();
        let (x, mut g) = (as_f32(x), as_f32(out_grad));
        if x.is_contiguous() && g.shape() == x.shape() {
            let xv = values(&x);
            if let Some(gv) = whole_storage(&mut g) {
                // The incoming gradient is used once: it becomes the input's.
                per_activation!(act, |a| gv
                    .par_chunks_mut(CHUNK)
                    .zip(xv.par_chunks(CHUNK))
                    .for_each(|(g, x)| {
                        simd::vectorized(
                            #[inline(always)]
                            || {
                                for (g, &x) in g.iter_mut().zip(x) {
                                    *g *= a.derivative(x);
                                }
                            },
                        )
                    }));
                return back_to(g, dtype);
            }
        }
        let (xv, gv) = (values(&x), values(&g));
        let dx = per_activation!(act, |a| zip_map(
            &xv,
            &gv,
            #[inline(always)]
            |x, g| g * a.derivative(x)
        ));
        back_to(flex_tensor(dx, x.shape().to_vec()), dtype)
    }

    fn channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = as_f32(x);
        let s = bn_shape(&x);
        flex_tensor(batchnorm::stats(&s, &values(&x)), vec![2, s.channels])
    }

    fn batch_norm_with_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        options: NormOptions,
    ) -> FloatTensor<Self> {
        let dtype = x.dtype();
        let (x, gamma, beta, stats) = (as_f32(x), as_f32(gamma), as_f32(beta), as_f32(stats));
        let (gamma, beta, stats) = (values(&gamma), values(&beta), values(&stats));
        let p = norm_params(&gamma, &beta, &stats, options);
        let y = batchnorm::forward(&bn_shape(&x), &values(&x), &p, options.epilogue);
        back_to(flex_tensor(y, x.shape().to_vec()), dtype)
    }

    fn batch_norm_param_grads(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        options: NormOptions,
    ) -> FloatTensor<Self> {
        let (x, g) = (as_f32(x), as_f32(out_grad));
        let (gamma, beta, stats) = (as_f32(gamma), as_f32(beta), as_f32(stats));
        let (gamma, beta, stats) = (values(&gamma), values(&beta), values(&stats));
        let p = norm_params(&gamma, &beta, &stats, options);
        let s = bn_shape(&x);
        let sums = batchnorm::param_grads(&s, &values(&x), &values(&g), &p, options.epilogue);
        flex_tensor(sums, vec![2, s.channels])
    }

    fn batch_norm_input_grad(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        sums: FloatTensor<Self>,
        options: NormOptions,
    ) -> FloatTensor<Self> {
        let dtype = out_grad.dtype();
        let (x, g, sums) = (as_f32(x), as_f32(out_grad), as_f32(sums));
        let (gamma, beta, stats) = (as_f32(gamma), as_f32(beta), as_f32(stats));
        let (gamma, beta, stats) = (values(&gamma), values(&beta), values(&stats));
        let p = norm_params(&gamma, &beta, &stats, options);
        let dx = batchnorm::input_grad(
            &bn_shape(&x),
            &values(&x),
            &values(&g),
            &p,
            &values(&sums),
            options.epilogue,
        );
        back_to(flex_tensor(dx, x.shape().to_vec()), dtype)
    }
}

fn norm_params<'a>(
    gamma: &'a [f32],
    beta: &'a [f32],
    stats: &'a [f32],
    options: NormOptions,
) -> batchnorm::Params<'a> {
    batchnorm::Params {
        gamma,
        beta,
        stats,
        eps: options.epsilon,
    }
}

/// The flex body of [`Kernels::conv2d_fused`] and [`Kernels::conv2d_fused_residual`].
/// With `transformed` (the weight for Winograd's kernel), the body of
/// [`Kernels::conv2d_winograd`] and its residual form: Winograd's kernel where its geometry
/// applies and the transformed weight's shape fits, the direct kernels otherwise.
fn flex_conv2d_fused(
    [x, weight, bias]: [FloatTensor<Flex>; 3],
    transformed: Option<FloatTensor<Flex>>,
    residual: Option<FloatTensor<Flex>>,
    options: ConvOptions<2>,
    epilogue: Epilogue,
) -> FloatTensor<Flex> {
    let (xs, ws) = (x.shape().to_vec(), weight.shape().to_vec());
    let f32s = [x.dtype(), weight.dtype(), bias.dtype()] == [DType::F32; 3];
    let sizes = xs.iter().chain(&ws).all(|&d| d > 0);
    let depthwise = options.groups == xs[1] && ws[1] == 1 && ws[0] % xs[1] == 0;
    if let Some(g) = dense_geometry(&xs, &ws, &options).filter(|_| f32s) {
        let fits =
            |r: &FloatTensor<Flex>| r.dtype() == DType::F32 && r.shape().to_vec() == g.out_shape();
        if residual.as_ref().is_none_or(fits) {
            let (xv, bv) = (values(&x), values(&bias));
            let rv = residual.as_ref().map(values);
            let finish = Finish {
                bias: Some(&bv),
                residual: rv.as_deref(),
                epilogue,
            };
            let winograd = transformed.as_ref().filter(|u| {
                u.dtype() == DType::F32
                    && winograd::applies(&g.dense)
                    && u.shape().to_vec() == winograd::transformed_shape(&g.dense)
            });
            let y = match winograd {
                Some(u) => winograd::forward(&g.dense, &xv, &values(u), finish),
                None => dense_forward(&g, &xv, &values(&weight), finish),
            };
            return flex_tensor(y, g.out_shape());
        }
    }
    if !(f32s && sizes && depthwise) || residual.is_some() {
        return conv2d_then::<Flex>(x, weight, bias, residual, options, epilogue);
    }
    let (xv, wv, bv) = (values(&x), values(&weight), values(&bias));
    let Some([oh, ow]) = output_size(&xs, &ws, &options) else {
        return conv2d_then::<Flex>(x, weight, bias, None, options, epilogue);
    };
    let shape = [xs[0], ws[0], oh, ow];
    let g = geometry(&xs, &ws, &shape, &options);
    flex_tensor(
        fused::depthwise(&g, &xv, &wv, Some(&bv), epilogue),
        shape.to_vec(),
    )
}

/// The geometry of an inverted block from the shapes of its input, expansion, depthwise
/// and projection weights and biases, when the fused block takes it: 1×1 expansion and
/// projection, a depthwise convolution with multiplier 1 whose every output row reads an
/// input row (paddings under the window's reach), every size at least 1, and with
/// `residual` the input's shape kept.
fn inverted_geometry(
    shapes: &[Vec<usize>],
    options: &ConvOptions<2>,
    residual: bool,
) -> Option<inverted::Inverted> {
    let [x, ew, eb, dw, db, pw, pb] = shapes else {
        return None;
    };
    let (n, cin, hidden) = (x[0], x[1], ew[0]);
    let cout = pw[0];
    let fits = x.len() == 4
        && x.iter().chain(ew).chain(dw).chain(pw).all(|&d| d > 0)
        && ew[..] == [hidden, cin, 1, 1]
        && eb[..] == [hidden]
        && dw.len() == 4
        && dw[..2] == [hidden, 1]
        && db[..] == [hidden]
        && pw[..] == [cout, hidden, 1, 1]
        && pb[..] == [cout]
        && options.groups == hidden;
    if !fits {
        return None;
    }
    let reach = |a: usize| options.dilation[a] * (dw[2 + a] - 1) + 1;
    let pads_inside = (0..2)
        .all(|a| options.padding_begin()[a] < reach(a) && options.padding_end()[a] < reach(a));
    let [oh, ow] = output_size(&[n, hidden, x[2], x[3]], dw, options)?;
    let window = geometry(&[n, hidden, x[2], x[3]], dw, &[n, hidden, oh, ow], options);
    let keeps = cin == cout && [x[2], x[3]] == [oh, ow];
    (pads_inside && (!residual || keeps)).then_some(inverted::Inverted {
        window,
        channels_in: cin,
        channels_out: cout,
        residual,
    })
}

/// The fused inverted block on burn-flex (`inverted.rs`) from its input and its
/// expansion's, depthwise convolution's and projection's weights and biases, with the
/// squeeze-excitation's (reduce weight and bias, excite weight and bias) where it has one;
/// `None` where the kernel does not take these shapes or dtypes.
fn flex_inverted(
    block: [&FloatTensor<Flex>; 7],
    squeeze: Option<([&FloatTensor<Flex>; 4], SqueezeActs)>,
    depthwise: &ConvOptions<2>,
    acts: [Epilogue; 2],
    residual: bool,
) -> Option<FloatTensor<Flex>> {
    let mut tensors = block.to_vec();
    tensors.extend(squeeze.iter().flat_map(|(t, _)| t));
    let shapes: Vec<Vec<usize>> = tensors.iter().map(|t| t.shape().to_vec()).collect();
    if tensors.iter().any(|t| t.dtype() != DType::F32) {
        return None;
    }
    let b = inverted_geometry(&shapes[..7], depthwise, residual)?;
    let hidden = b.window.channels;
    if let [rw, rb, xw, xb] = &shapes[7..] {
        let squeezed = rb.first().copied().unwrap_or(0);
        let fits = squeezed > 0
            && rw[..] == [squeezed, hidden, 1, 1]
            && rb.len() == 1
            && xw[..] == [hidden, squeezed, 1, 1]
            && xb[..] == [hidden];
        if !fits {
            return None;
        }
    }
    let v: Vec<_> = tensors.iter().map(|t| values(t)).collect();
    let part = |w: usize, epilogue| inverted::Part {
        weight: &v[w],
        bias: &v[w + 1],
        epilogue,
    };
    let parts = [
        part(1, acts[0]),
        part(3, acts[1]),
        part(5, Epilogue::Identity),
    ];
    let squeeze = squeeze.map(|(_, se)| inverted::Squeeze {
        reduce: part(7, se.act),
        expand: part(9, Epilogue::Identity),
        gate: se.gate,
    });
    let g = b.window;
    let shape = vec![g.batch, b.channels_out, g.out_size[0], g.out_size[1]];
    Some(flex_tensor(
        inverted::forward(&b, &v[0], parts, squeeze),
        shape,
    ))
}

/// The `[n, c, rest]` geometry of an activation for the BatchNorm kernels.
fn bn_shape(x: &FloatTensor<Flex>) -> batchnorm::Shape {
    let dims = x.shape().to_vec();
    batchnorm::Shape {
        batch: dims[0],
        channels: dims[1],
        plane: dims[2..].iter().product(),
    }
}

/// The `f32` storage of a tensor that owns all of it, in order (contiguous, no offset,
/// not shared): what an operation may overwrite in place.
fn whole_storage(t: &mut FloatTensor<Flex>) -> Option<&mut [f32]> {
    let n = t.shape().num_elements();
    let whole = t.dtype() == DType::F32
        && t.layout().contiguous_offsets() == Some((0, n))
        && t.bytes().len() == n * 4;
    if whole {
        t.try_storage_mut::<f32>()
    } else {
        None
    }
}

/// The tensor as `f32` (the zoo's and graphs' dtype; others are converted).
fn as_f32(t: FloatTensor<Flex>) -> FloatTensor<Flex> {
    match t.dtype() {
        DType::F32 => t,
        _ => Flex::float_cast(t, burn::tensor::FloatDType::F32),
    }
}

fn back_to(t: FloatTensor<Flex>, dtype: DType) -> FloatTensor<Flex> {
    match dtype {
        DType::F32 => t,
        DType::F64 => Flex::float_cast(t, burn::tensor::FloatDType::F64),
        DType::F16 => Flex::float_cast(t, burn::tensor::FloatDType::F16),
        DType::BF16 => Flex::float_cast(t, burn::tensor::FloatDType::BF16),
        _ => t,
    }
}

/// Which of retrain's convolutions a [`ConvBackward`] node differentiates.
#[derive(Debug, Clone, Copy)]
enum ConvKind {
    /// [`Kernels::depthwise_conv2d`].
    Depthwise,
    /// [`Kernels::dense_conv2d`].
    Dense,
}

/// The backward node of [`Kernels::depthwise_conv2d`] and [`Kernels::dense_conv2d`] under
/// autodiff: keeps the input and the weight.
#[derive(Debug)]
struct ConvBackward(ConvKind);

impl<B: Backend + Kernels> Backward<B, 2> for ConvBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let weight = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(weight_state);
        if let Some(node) = node_x {
            let (x, w, g, o) = (x.clone(), weight.clone(), grad.clone(), options.clone());
            let dx = match self.0 {
                ConvKind::Depthwise => B::depthwise_conv2d_x_backward(x, w, g, o),
                ConvKind::Dense => B::dense_conv2d_x_backward(x, w, g, o),
            };
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            let dw = match self.0 {
                ConvKind::Depthwise => {
                    B::depthwise_conv2d_weight_backward(x, weight, grad, options)
                }
                ConvKind::Dense => B::dense_conv2d_weight_backward(x, weight, grad, options),
            };
            grads.register::<B>(node.id, dw);
        }
    }
}

/// The backward node of [`Kernels::activation`] under autodiff: keeps the input.
#[derive(Debug)]
struct ActivationBackward;

impl<B: Backend + Kernels> Backward<B, 1> for ActivationBackward {
    type State = (NodeId, Pointwise);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, act) = ops.state;
        if let Some(node) = node_x {
            let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
            grads.register::<B>(node.id, B::activation_backward(x, grad, act));
        }
    }
}

/// The backward node of [`Kernels::global_avg_pool`] under autodiff: keeps only the input's
/// shape.
#[derive(Debug)]
struct GlobalPoolBackward;

impl<B: Backend + Kernels> Backward<B, 1> for GlobalPoolBackward {
    type State = [usize; 4];

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::global_avg_pool_backward(grad, ops.state));
        }
    }
}

/// The backward node of [`Kernels::batch_norm_with_stats`]: keeps the input, gamma and beta
/// (the activation's input is recomputed from them), and carries the batch statistics.
#[derive(Debug)]
struct BatchNormBackward;

impl<B: Backend + Kernels> Backward<B, 3> for BatchNormBackward {
    type State = (NodeId, NodeId, NodeId, B::FloatTensorPrimitive, NormOptions);

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, gamma_state, beta_state, stats, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
        let gamma = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(gamma_state);
        let beta = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(beta_state);
        let channels = gamma.shape()[0];
        let sums = B::batch_norm_param_grads(
            x.clone(),
            grad.clone(),
            gamma.clone(),
            beta.clone(),
            stats.clone(),
            options,
        );
        let row = |r: isize| {
            let rows = [Slice::new(r, Some(r + 1), 1), Slice::new(0, None, 1)];
            B::float_reshape(B::float_slice(sums.clone(), &rows), Shape::new([channels]))
        };
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, row(0));
        }
        if let Some(node) = node_beta {
            grads.register::<B>(node.id, row(1));
        }
        if let Some(node) = node_x {
            let dx = B::batch_norm_input_grad(x, grad, gamma, beta, stats, sums, options);
            grads.register::<B>(node.id, dx);
        }
    }
}

impl<B: Backend + Kernels, C: CheckpointStrategy> Kernels for Autodiff<B, C> {
    fn channel_stats(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::from_inner(B::channel_stats(Self::inner(x)))
    }

    fn batch_norm_with_stats(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        options: NormOptions,
    ) -> FloatTensor<Self> {
        let stats = Self::inner(stats);
        match BatchNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let gamma_state = prep.checkpoint(&gamma);
                let beta_state = prep.checkpoint(&beta);
                let y = B::batch_norm_with_stats(
                    x.into_primitive(),
                    gamma.into_primitive(),
                    beta.into_primitive(),
                    stats.clone(),
                    options,
                );
                prep.finish((x_state, gamma_state, beta_state, stats, options), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::batch_norm_with_stats(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                stats,
                options,
            )),
        }
    }

    fn batch_norm_param_grads(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        options: NormOptions,
    ) -> FloatTensor<Self> {
        let (x, g, stats) = (Self::inner(x), Self::inner(out_grad), Self::inner(stats));
        let (gamma, beta) = (Self::inner(gamma), Self::inner(beta));
        Self::from_inner(B::batch_norm_param_grads(x, g, gamma, beta, stats, options))
    }

    fn batch_norm_input_grad(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        sums: FloatTensor<Self>,
        options: NormOptions,
    ) -> FloatTensor<Self> {
        let (x, g, gamma) = (Self::inner(x), Self::inner(out_grad), Self::inner(gamma));
        let (beta, stats, sums) = (Self::inner(beta), Self::inner(stats), Self::inner(sums));
        Self::from_inner(B::batch_norm_input_grad(
            x, g, gamma, beta, stats, sums, options,
        ))
    }

    fn global_avg_pool(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let s = x.shape();
        let shape = [s[0], s[1], s[2], s[3]];
        match GlobalPoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(shape, B::global_avg_pool(x.into_primitive())),
            OpsKind::UnTracked(prep) => prep.finish(B::global_avg_pool(x.into_primitive())),
        }
    }

    fn global_avg_pool_backward(
        out_grad: FloatTensor<Self>,
        shape: [usize; 4],
    ) -> FloatTensor<Self> {
        // A second derivative is never taken in training; this keeps the trait total.
        Self::from_inner(B::global_avg_pool_backward(Self::inner(out_grad), shape))
    }

    fn activation(x: FloatTensor<Self>, act: Pointwise) -> FloatTensor<Self> {
        match ActivationBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                prep.finish((x_state, act), B::activation(x.into_primitive(), act))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::activation(x.into_primitive(), act)),
        }
    }

    fn activation_backward(
        x: FloatTensor<Self>,
        out_grad: FloatTensor<Self>,
        act: Pointwise,
    ) -> FloatTensor<Self> {
        // A second derivative is never taken in training; this keeps the trait total.
        let x = Self::inner(x);
        let g = Self::inner(out_grad);
        Self::from_inner(B::activation_backward(x, g, act))
    }

    fn dense_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        tracked_conv::<B, C>(ConvKind::Dense, x, weight, options)
    }

    fn depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        tracked_conv::<B, C>(ConvKind::Depthwise, x, weight, options)
    }
}

/// A convolution of `kind` under autodiff: the inner backend's, recorded with its
/// [`ConvBackward`] node when tracked.
fn tracked_conv<B: Backend + Kernels, C: CheckpointStrategy>(
    kind: ConvKind,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    options: ConvOptions<2>,
) -> FloatTensor<Autodiff<B, C>> {
    let forward = |x, weight, options| match kind {
        ConvKind::Depthwise => B::depthwise_conv2d(x, weight, options),
        ConvKind::Dense => B::dense_conv2d(x, weight, options),
    };
    match ConvBackward(kind)
        .prepare::<C>([x.node(), weight.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            prep.finish(
                (x_state, weight_state, options.clone()),
                forward(x.into_primitive(), weight.into_primitive(), options),
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(
            x.into_primitive(),
            weight.into_primitive(),
            options,
        )),
    }
}

/// Whether tensors on `device` run on burn-flex (with or without autodiff) and retrain's
/// kernels are not turned off: `RETRAIN_KERNELS=burn` runs burn's own operations instead,
/// to measure one against the other in the same build.
pub(crate) fn on_flex(device: &Device) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(|| std::env::var("RETRAIN_KERNELS").is_ok_and(|v| v == "burn")) {
        return false;
    }
    match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(&**inner, DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// Whether a convolution of `groups` over `x` takes the depthwise kernels: a depthwise
/// convolution (groups = input channels) being trained on the CPU backend (without
/// autodiff the fused inference path, [`conv2d_fused`], has it).
fn takes_depthwise_kernels(groups: usize, x: &Tensor<4>) -> bool {
    let device = x.device();
    groups > 1 && groups == x.dims()[1] && device.is_autodiff() && on_flex(&device)
}

/// Whether a convolution takes the dense kernels: one group, being trained on the CPU
/// backend (without autodiff the fused inference path has it).
fn takes_dense_kernels(options: &ConvOptions<2>, x: &Tensor<4>) -> bool {
    let device = x.device();
    options.groups == 1 && device.is_autodiff() && on_flex(&device)
}

/// A 2-D convolution as `burn::tensor::module::conv2d`, with the depthwise and 1×1
/// convolutions being trained on the CPU through [`Kernels`].
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
) -> Tensor<4> {
    let y = if takes_dense_kernels(&options, &x) {
        Tensor::<4>::from_dispatch(<Dispatch as Kernels>::dense_conv2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            options,
        ))
    } else if takes_depthwise_kernels(options.groups, &x) {
        Tensor::<4>::from_dispatch(<Dispatch as Kernels>::depthwise_conv2d(
            x.into_dispatch(),
            weight.into_dispatch(),
            options,
        ))
    } else {
        return burn::tensor::module::conv2d(x, weight, bias, options);
    };
    match bias {
        Some(b) => y + b.reshape([1, -1, 1, 1]),
        None => y,
    }
}

/// burn's `max_pool2d(x, options)`, through [`Kernels::max_pool2d_inference`] on the CPU
/// backend outside autodiff when the padding is the same on both sides of each axis.
pub fn max_pool2d(x: Tensor<4>, options: burn::tensor::ops::MaxPoolOptions<2>) -> Tensor<4> {
    let device = x.device();
    let symmetric = options.padding.iter().all(|(b, e)| b == e);
    if device.is_autodiff() || !on_flex(&device) || !symmetric {
        return burn::tensor::module::max_pool2d(x, options);
    }
    let dims = x.dims();
    let y = Tensor::<4>::from_dispatch(<Dispatch as Kernels>::max_pool2d_inference(
        x.into_dispatch(),
        options.kernel_size,
        options.stride,
        options.padding.map(|(b, _)| b),
        options.dilation,
        options.ceil_mode,
    ));
    // burn's own rule after the pool in ceil mode: a last window that starts past the
    // input and its leading padding is dropped.
    (0..2).fold(y, |y, a| {
        let size = y.dims()[a + 2];
        let late = size > 1 && (size - 1) * options.stride[a] >= dims[a + 2] + options.padding[a].0;
        if options.ceil_mode && late {
            y.narrow(a + 2, 0, size - 1)
        } else {
            y
        }
    })
}

/// The mean of each plane of `x` `[n, c, h, w]`, as `[n, c]` (global average pooling):
/// through [`Kernels::global_avg_pool`] on the CPU backend, burn's `mean_dim`s elsewhere.
pub fn global_avg_pool(x: Tensor<4>) -> Tensor<2> {
    let [n, c, _, _] = x.dims();
    if !on_flex(&x.device()) {
        return x.mean_dim(3).mean_dim(2).reshape([n, c]);
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::global_avg_pool(x.into_dispatch()))
}

/// [`global_avg_pool`] with the planes' axes kept, `[n, c, 1, 1]`: the squeeze of a
/// squeeze-excitation, ConvNeXt's head, a graph's mean over axes 2 and 3.
pub fn channel_means(x: Tensor<4>) -> Tensor<4> {
    let [n, c, _, _] = x.dims();
    global_avg_pool(x).reshape([n, c, 1, 1])
}

/// `act` of `x`, through [`Kernels`] on the CPU backend and burn's operations elsewhere.
pub fn activation<const D: usize>(x: Tensor<D>, act: Pointwise) -> Tensor<D> {
    if !on_flex(&x.device()) {
        return match act {
            Pointwise::Relu6 => x.clamp(0.0, 6.0),
            Pointwise::Hardswish => burn::tensor::activation::hard_swish(x),
            Pointwise::Silu => burn::tensor::activation::silu(x),
            Pointwise::Gelu => burn::tensor::activation::gelu(x),
        };
    }
    Tensor::from_dispatch(<Dispatch as Kernels>::activation(x.into_dispatch(), act))
}

/// `BatchNorm::forward` (burn-nn's, same semantics: batch statistics while training on an
/// autodiff device and the layer is not frozen, running statistics updated with the biased
/// variance as burn does) with the training path through [`Kernels`] on the CPU backend.
pub fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    batch_norm_then(bn, x, Epilogue::Identity)
}

/// `epilogue(batch_norm(bn, x))`: in training on the CPU backend one kernel, which keeps
/// neither the normalised values nor the activation's input for the backward pass.
pub fn batch_norm_then<const D: usize>(
    bn: &BatchNorm,
    x: Tensor<D>,
    epilogue: Epilogue,
) -> Tensor<D> {
    let device = x.device();
    let training = device.is_autodiff() && bn.training.is_enabled();
    if !training || !on_flex(&device) || D < 3 {
        return then(bn.forward(x), epilogue);
    }
    let stats = Tensor::<2>::from_dispatch(<Dispatch as Kernels>::channel_stats(
        x.clone().into_dispatch(),
    ));
    let y = Tensor::<D>::from_dispatch(<Dispatch as Kernels>::batch_norm_with_stats(
        x.into_dispatch(),
        bn.gamma.val().into_dispatch(),
        bn.beta.val().into_dispatch(),
        stats.clone().into_dispatch(),
        NormOptions {
            epsilon: bn.epsilon,
            epilogue,
        },
    ));
    let c = stats.dims()[1];
    let mean = stats.clone().slice([0..1, 0..c]).reshape([c]);
    let var = stats.slice([1..2, 0..c]).reshape([c]);
    let m = bn.momentum;
    let running_mean = bn.running_mean.value_sync().to_device(&device);
    let running_var = bn.running_var.value_sync().to_device(&device);
    bn.running_mean
        .update((running_mean.mul_scalar(1.0 - m) + mean.detach().mul_scalar(m)).detach());
    bn.running_var
        .update((running_var.mul_scalar(1.0 - m) + var.detach().mul_scalar(m)).detach());
    y
}

/// `epilogue` applied to `y` on its own (as [`activation`]).
fn then<const D: usize>(y: Tensor<D>, epilogue: Epilogue) -> Tensor<D> {
    match epilogue {
        Epilogue::Identity => y,
        Epilogue::Relu => burn::tensor::activation::relu(y),
        Epilogue::Act(a) => activation(y, a),
    }
}

/// `epilogue(conv2d(x, weight, bias))` for inference: through [`Kernels::conv2d_fused`] on
/// the CPU backend without autodiff (one pass for depthwise and dense convolutions), else
/// [`conv2d`] and the activation.
pub fn conv2d_fused(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Option<Tensor<1>>,
    options: ConvOptions<2>,
    epilogue: Epilogue,
) -> Tensor<4> {
    fused(x, (weight, None), bias, None, options, epilogue)
}

/// `epilogue(y + residual)`, or `epilogue(y)` without one, as separate operations.
fn plus_then(y: Tensor<4>, residual: Option<Tensor<4>>, epilogue: Epilogue) -> Tensor<4> {
    match residual {
        Some(r) => then(y + r, epilogue),
        None => then(y, epilogue),
    }
}

/// `epilogue(conv2d(x, weight, bias) + residual)`, as [`conv2d_fused`]; with `weight`'s
/// transform for Winograd's kernel, through [`Kernels::conv2d_winograd`].
fn fused(
    x: Tensor<4>,
    (weight, winograd): (Tensor<4>, Option<&WinogradWeight>),
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<4>>,
    options: ConvOptions<2>,
    epilogue: Epilogue,
) -> Tensor<4> {
    let device = x.device();
    if device.is_autodiff() || !on_flex(&device) {
        return plus_then(conv2d(x, weight, bias, options), residual, epilogue);
    }
    let bias = bias.unwrap_or_else(|| Tensor::zeros([weight.dims()[0]], &device));
    let (x, w, b) = (
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    );
    let u = winograd
        .filter(|u| u.is_for(options.stride))
        .map(|u| u.transformed.clone().into_dispatch());
    let r = residual.map(Tensor::into_dispatch);
    Tensor::from_dispatch(match (r, u) {
        (None, None) => <Dispatch as Kernels>::conv2d_fused(x, w, b, options, epilogue),
        (Some(r), None) => {
            <Dispatch as Kernels>::conv2d_fused_residual(x, w, b, r, options, epilogue)
        }
        (None, Some(u)) => <Dispatch as Kernels>::conv2d_winograd(x, w, u, b, options, epilogue),
        (Some(r), Some(u)) => {
            <Dispatch as Kernels>::conv2d_winograd_residual(x, w, u, b, r, options, epilogue)
        }
    })
}

/// `epilogue(conv.forward(x) + residual)` (without `residual` when it is `None`), through
/// [`Kernels::conv2d_fused`] (a `Same` padding, which the zoo does not use, stays on burn's
/// forward).
pub fn conv_fused(
    conv: &Conv2d,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    epilogue: Epilogue,
) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Valid => [(0, 0); 2],
        PaddingConfig2d::Same => return plus_then(conv.forward(x), residual, epilogue),
    };
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    fused(
        x,
        (conv.weight.val(), None),
        conv.bias.as_ref().map(|b| b.val()),
        residual,
        options,
        epilogue,
    )
}

/// A 3×3 convolution's weight transformed for Winograd's minimal filtering (`winograd.rs`) at
/// the convolution's stride, made when a network is folded for inference and used while its
/// weight is the one it was made from (the same parameter), by a convolution of that
/// stride.
#[derive(Clone, Debug)]
pub struct WinogradWeight {
    of: ParamId,
    stride: usize,
    transformed: Tensor<3>,
}

impl WinogradWeight {
    /// The transformed weight of `conv` when Winograd's kernel can take it (see
    /// [`WinogradWeight::of_weight`]) and its padding is explicit; `None` otherwise.
    pub fn of(conv: &Conv2d) -> Option<Self> {
        let explicit = matches!(conv.padding, PaddingConfig2d::Explicit(..));
        let takes = explicit && conv.dilation == [1, 1];
        if !takes {
            return None;
        }
        Self::of_weight(&conv.weight, conv.groups, conv.stride)
    }

    /// The transformed `weight` of a convolution with `stride` and dilation 1 in `groups`
    /// groups, when Winograd's kernel can take it (a 3×3 window, stride 1 or 2, one group,
    /// enough channels) and it is on the CPU backend without autodiff; `None` otherwise.
    /// (Whether the kernel runs a stride-2 convolution also depends on its output's size,
    /// [`winograd::applies`]; the direct one runs it where not.)
    pub fn of_weight(weight: &Param<Tensor<4>>, groups: usize, stride: [usize; 2]) -> Option<Self> {
        let [cout, cin, kh, kw] = weight.dims();
        let device = weight.device();
        let stride = match stride {
            [1, 1] => 1,
            [2, 2] => 2,
            _ => return None,
        };
        let takes = [kh, kw] == [3, 3]
            && groups == 1
            && cin >= winograd::MIN_CHANNELS
            && cout >= winograd::MIN_CHANNELS
            && !device.is_autodiff()
            && on_flex(&device);
        if !takes {
            return None;
        }
        let values = weight.val().into_data().convert::<f32>();
        let u = winograd::transform_weights(values.as_slice::<f32>().ok()?, cout, cin, stride);
        let shape = [winograd::matrices(stride), cout, cin];
        Some(Self {
            of: weight.id,
            stride,
            transformed: Tensor::from_data(TensorData::new(u, shape), &device),
        })
    }

    /// Whether this is the transformed weight of `weight` (the same parameter).
    pub fn is_of(&self, weight: &Param<Tensor<4>>) -> bool {
        self.of == weight.id
    }

    /// Whether it was transformed for a convolution of this stride.
    fn is_for(&self, stride: [usize; 2]) -> bool {
        stride == [self.stride; 2]
    }
}

/// [`conv_fused`] through [`conv2d_fused_winograd`] when `winograd` is the transformed
/// weight of `conv`'s weight.
pub fn conv_fused_winograd(
    conv: &Conv2d,
    winograd: Option<&WinogradWeight>,
    x: Tensor<4>,
    residual: Option<Tensor<4>>,
    epilogue: Epilogue,
) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        _ => return conv_fused(conv, x, residual, epilogue),
    };
    let Some(w) = winograd.filter(|w| w.is_of(&conv.weight)) else {
        return conv_fused(conv, x, residual, epilogue);
    };
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    let bias = conv.bias.as_ref().map(|b| b.val());
    let weight = conv.weight.val();
    conv2d_fused_winograd(x, weight, w, bias, residual, options, epilogue)
}

/// `epilogue(conv2d(x, weight, bias) + residual)` as [`conv2d_fused`], through
/// [`Kernels::conv2d_winograd`] (with `winograd`, `weight` transformed) on the CPU backend
/// without autodiff.
pub fn conv2d_fused_winograd(
    x: Tensor<4>,
    weight: Tensor<4>,
    winograd: &WinogradWeight,
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<4>>,
    options: ConvOptions<2>,
    epilogue: Epilogue,
) -> Tensor<4> {
    fused(
        x,
        (weight, Some(winograd)),
        bias,
        residual,
        options,
        epilogue,
    )
}

/// An inverted residual block for inference, BatchNorm folded into each convolution:
/// `project(act[1](depthwise(act[0](expand(x)))))`, its channels scaled by the
/// squeeze-excitation `se` (its reduce and excite convolutions) between the depthwise
/// convolution and the projection where it has one, `+ x` with `residual`, through
/// [`Kernels::inverted_block`] or [`Kernels::inverted_block_squeezed`] on the CPU backend
/// without autodiff. `None` where it does not apply (autodiff, another backend, a
/// convolution without its bias, a 1×1 one with a stride or padding, a `Same` padding):
/// the caller runs the layers.
pub fn inverted_block(
    [expand, depthwise, project]: [&Conv2d; 3],
    acts: [Epilogue; 2],
    se: Option<([&Conv2d; 2], SqueezeActs)>,
    x: Tensor<4>,
    residual: bool,
) -> Option<Tensor<4>> {
    let device = x.device();
    if device.is_autodiff() || !on_flex(&device) {
        return None;
    }
    let unit = |c: &Conv2d| {
        c.stride == [1, 1]
            && c.groups == 1
            && c.dilation == [1, 1]
            && matches!(
                c.padding,
                PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0)
            )
    };
    let PaddingConfig2d::Explicit(top, left, bottom, right) = depthwise.padding else {
        return None;
    };
    let units = [expand, project]
        .into_iter()
        .chain(se.iter().flat_map(|(c, _)| *c));
    if !units.clone().all(unit) || units.clone().any(|c| c.kernel_size != [1, 1]) {
        return None;
    }
    let bias = |c: &Conv2d| c.bias.as_ref().map(|b| b.val().into_dispatch());
    let [eb, db, pb] = [bias(expand)?, bias(depthwise)?, bias(project)?];
    let options = ConvOptions::new_with_padding(
        depthwise.stride,
        [(top, bottom), (left, right)],
        depthwise.dilation,
        depthwise.groups,
    );
    let se = match se {
        Some(([reduce, excite], acts)) => {
            Some(([reduce, excite], [bias(reduce)?, bias(excite)?], acts))
        }
        None => None,
    };
    let weight = |c: &Conv2d| c.weight.val().into_dispatch();
    let x = x.into_dispatch();
    let y = match se {
        None => <Dispatch as Kernels>::inverted_block(
            x,
            weight(expand),
            eb,
            weight(depthwise),
            db,
            weight(project),
            pb,
            options,
            acts,
            residual,
        ),
        Some(([reduce, excite], [rb, xb], se)) => <Dispatch as Kernels>::inverted_block_squeezed(
            x,
            weight(expand),
            eb,
            weight(depthwise),
            db,
            weight(reduce),
            rb,
            weight(excite),
            xb,
            weight(project),
            pb,
            options,
            acts,
            se,
            residual,
        ),
    };
    Some(Tensor::from_dispatch(y))
}

/// `Conv2d::forward`, through [`conv2d`] when the depthwise or 1×1 kernels apply. The zoo's
/// paddings are explicit (or valid); any other stays on burn's forward.
pub fn conv(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => [(top, bottom), (left, right)],
        PaddingConfig2d::Valid => [(0, 0); 2],
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let options = ConvOptions::new_with_padding(conv.stride, padding, conv.dilation, conv.groups);
    if !takes_depthwise_kernels(conv.groups, &x) && !takes_dense_kernels(&options, &x) {
        return conv.forward(x);
    }
    conv2d(
        x,
        conv.weight.val(),
        conv.bias.as_ref().map(|b| b.val()),
        options,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator for the kernels' property tests.
    pub(crate) struct Lcg(pub u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// `n` values in [-1, 1], in steps of 0.001.
        pub fn values(&mut self, n: usize) -> Vec<f32> {
            (0..n)
                .map(|_| (self.next() % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        }
    }

    fn close(got: Tensor<4>, want: Tensor<4>, what: &str, case: &str) {
        let got = got.into_data().try_to_vec::<f32>().unwrap();
        let want = want.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-5 * scale, "{what} {g} vs {w} ({case})");
        }
    }

    /// [`max_pool2d`] (the kernel, on burn-flex outside autodiff) equals burn's own pool over
    /// random shapes, windows, strides, dilations, paddings (asymmetric ones stay on burn's)
    /// and both rounding modes: exactly, a maximum being one of its inputs.
    #[test]
    fn max_pool_equals_burns_reference() {
        use burn::tensor::ops::MaxPoolOptions;
        let device = Device::flex();
        let mut r = Lcg(7);
        let mut ran = 0;
        for _ in 0..300 {
            let (n, c) = (1 + r.below(3), 1 + r.below(5));
            let k = [1 + r.below(4), 1 + r.below(4)];
            let stride = [1 + r.below(3), 1 + r.below(3)];
            let dilation = [1 + r.below(2), 1 + r.below(2)];
            let p = [r.below(2), r.below(2)];
            let pad = if r.below(4) == 0 {
                [(p[0], r.below(2)), (p[1], r.below(2))]
            } else {
                [(p[0], p[0]), (p[1], p[1])]
            };
            let ceil_mode = r.below(2) == 1;
            // burn (and PyTorch) ask for a padding at most half the window.
            if (0..2).any(|a| 2 * pad[a].0.max(pad[a].1) > dilation[a] * (k[a] - 1) + 1) {
                continue;
            }
            let size: [usize; 2] =
                std::array::from_fn(|a| dilation[a] * (k[a] - 1) + 1 + r.below(12));
            let case = format!(
                "n{n} c{c} in{size:?} k{k:?} s{stride:?} d{dilation:?} p{pad:?} ceil {ceil_mode}"
            );
            let x = Tensor::<4>::from_data(
                TensorData::new(
                    r.values(n * c * size[0] * size[1]),
                    [n, c, size[0], size[1]],
                ),
                &device,
            );
            let options = MaxPoolOptions {
                kernel_size: k,
                stride,
                padding: pad,
                dilation,
                ceil_mode,
            };
            let ours = max_pool2d(x.clone(), options.clone());
            let theirs = burn::tensor::module::max_pool2d(x, options);
            assert_eq!(ours.dims(), theirs.dims(), "{case}");
            let (ours, theirs) = (
                ours.into_data().try_to_vec::<f32>().unwrap(),
                theirs.into_data().try_to_vec::<f32>().unwrap(),
            );
            assert_eq!(ours, theirs, "{case}");
            ran += 1;
        }
        assert!(ran > 100, "only {ran} cases ran");
    }

    /// A NaN in a window is its maximum, as in PyTorch's `max_pool2d`.
    #[test]
    fn max_pool_propagates_nan() {
        let device = Device::flex();
        let mut v: Vec<f32> = (0..16).map(|i| i as f32).collect();
        v[5] = f32::NAN;
        let x = Tensor::<4>::from_data(TensorData::new(v, [1, 1, 4, 4]), &device);
        let options = burn::tensor::ops::MaxPoolOptions::new([2, 2]).with_stride([2, 2]);
        let y = max_pool2d(x, options)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(y[0].is_nan(), "{y:?}");
        assert_eq!(&y[1..], &[7.0, 13.0, 15.0]);
        // At every tap of windows of 1 to 9 taps (the kernel takes the first tap, then
        // threes, then a pair or a single), and past other NaNs.
        for k in [[1, 1], [1, 2], [1, 3], [2, 2], [1, 5], [2, 3], [3, 3]] {
            for at in 0..k[0] * k[1] {
                for also in [None, Some((at + 1) % (k[0] * k[1]))] {
                    let mut v: Vec<f32> = (0..k[0] * k[1]).map(|i| i as f32).collect();
                    v[at] = f32::NAN;
                    if let Some(a) = also {
                        v[a] = f32::NAN;
                    }
                    let x = Tensor::<4>::from_data(TensorData::new(v, [1, 1, k[0], k[1]]), &device);
                    let y = max_pool2d(x, burn::tensor::ops::MaxPoolOptions::new(k))
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap();
                    assert!(
                        y[0].is_nan(),
                        "window {k:?}, NaN at {at} and {also:?}: {y:?}"
                    );
                }
            }
        }
    }

    /// [`global_avg_pool`] and its gradient equal burn's two `mean_dim`s and their autodiff,
    /// over random batches, channels and planes: narrower than a vector, a few vectors and a
    /// remainder, and larger than a parallel chunk; within 1e-5 of the largest magnitude.
    #[test]
    fn global_avg_pool_and_gradient_equal_burns_reference() {
        let device = Device::flex().autodiff();
        let mut r = Lcg(11);
        for i in 0..60 {
            let (n, c, [h, w]) = if i % 12 == 0 {
                (
                    1 + r.below(2),
                    1 + r.below(3),
                    [250 + r.below(60), 250 + r.below(60)],
                )
            } else {
                (
                    1 + r.below(4),
                    1 + r.below(40),
                    [1 + r.below(20), 1 + r.below(20)],
                )
            };
            let case = format!("n{n} c{c} plane {h}x{w}");
            let xs = r.values(n * c * h * w);
            let make = || {
                Tensor::<4>::from_data(TensorData::new(xs.clone(), [n, c, h, w]), &device)
                    .require_grad()
            };
            let (x1, x2) = (make(), make());
            let ours = global_avg_pool(x1.clone());
            let theirs = x2.clone().mean_dim(3).mean_dim(2).reshape([n, c]);
            let weights = Tensor::<2>::from_data(TensorData::new(r.values(n * c), [n, c]), &device);
            let g1 = (ours.clone() * weights.clone()).sum().backward();
            let g2 = (theirs.clone() * weights).sum().backward();
            let planes = |t: Tensor<2>| t.inner().reshape([n, c, 1, 1]);
            close(planes(ours), planes(theirs), "output", &case);
            close(
                x1.grad(&g1).unwrap(),
                x2.grad(&g2).unwrap(),
                "input grad",
                &case,
            );
        }
        // Outside autodiff (inference), the same means.
        let x = Tensor::<4>::from_data(
            TensorData::new(r.values(2 * 3 * 7 * 7), [2, 3, 7, 7]),
            &Device::flex(),
        );
        let theirs = x.clone().mean_dim(3).mean_dim(2);
        close(
            global_avg_pool(x).reshape([2, 3, 1, 1]),
            theirs,
            "inference output",
            "n2 c3 plane 7x7",
        );
    }

    /// Forward and both gradients of [`conv2d`] equal burn's own convolution and its
    /// autodiff over random shapes, strides, paddings (asymmetric too), dilations and
    /// channel multipliers, within 1e-5 of the largest magnitude.
    #[test]
    fn depthwise_forward_and_gradients_equal_burns_reference() {
        let device = Device::flex().autodiff();
        let mut r = Lcg(42);
        for _ in 0..150 {
            let (n, c, m) = (1 + r.below(3), 1 + r.below(6), 1 + r.below(3));
            let k = [1 + r.below(5), 1 + r.below(5)];
            let stride = [1 + r.below(3), 1 + r.below(3)];
            let dilation = [1 + r.below(2), 1 + r.below(2)];
            let pad = [(r.below(3), r.below(3)), (r.below(3), r.below(3))];
            let size: [usize; 2] = std::array::from_fn(|a| {
                let reach = dilation[a] * (k[a] - 1) + 1;
                reach.saturating_sub(pad[a].0 + pad[a].1).max(1) + r.below(12)
            });
            let case =
                format!("n{n} c{c} m{m} in{size:?} k{k:?} s{stride:?} d{dilation:?} p{pad:?}");
            let options = ConvOptions::new_with_padding(stride, pad, dilation, c);
            let xs = r.values(n * c * size[0] * size[1]);
            let ws = r.values(c * m * k[0] * k[1]);
            let bs = r.values(c * m);
            let make = |v: &Vec<f32>, shape: [usize; 4]| {
                Tensor::<4>::from_data(TensorData::new(v.clone(), shape), &device).require_grad()
            };
            let bias = Tensor::<1>::from_data(TensorData::new(bs, [c * m]), &device).require_grad();
            let (x1, w1) = (
                make(&xs, [n, c, size[0], size[1]]),
                make(&ws, [c * m, 1, k[0], k[1]]),
            );
            let (x2, w2) = (
                make(&xs, [n, c, size[0], size[1]]),
                make(&ws, [c * m, 1, k[0], k[1]]),
            );
            let ours = conv2d(x1.clone(), w1.clone(), Some(bias.clone()), options.clone());
            let theirs = burn::tensor::module::conv2d(x2.clone(), w2.clone(), Some(bias), options);
            // A loss that weights every output differently, so each gradient element differs.
            let weights = Tensor::<4>::from_data(
                TensorData::new(r.values(theirs.shape().num_elements()), theirs.dims()),
                &device,
            );
            let g1 = (ours.clone() * weights.clone()).sum().backward();
            let g2 = (theirs.clone() * weights).sum().backward();
            close(ours.inner(), theirs.inner(), "output", &case);
            close(
                x1.grad(&g1).unwrap(),
                x2.grad(&g2).unwrap(),
                "input grad",
                &case,
            );
            close(
                w1.grad(&g1).unwrap(),
                w2.grad(&g2).unwrap(),
                "weight grad",
                &case,
            );
        }
    }

    /// Forward and both gradients of a dense convolution through [`conv2d`] (the 1×1
    /// kernels, or the patch kernels) equal burn's convolution and its autodiff, over
    /// batches that split by image or not, channel counts, plane sizes (wider than a block
    /// of columns too), kernels, strides, dilations and asymmetric paddings, with and
    /// without a bias, within 1e-5 of the largest magnitude.
    #[test]
    fn dense_forward_and_gradients_equal_burns_reference() {
        let device = Device::flex().autodiff();
        let mut r = Lcg(5);
        for case in 0..120 {
            let (n, c, co) = (1 + r.below(7), 1 + r.below(48), 1 + r.below(48));
            // Even cases 1×1 with stride 1 and no padding, odd ones any window.
            let (k, stride, dilation, pad) = if case % 2 == 0 {
                ([1, 1], [1, 1], [1, 1], [(0, 0); 2])
            } else {
                (
                    [1 + r.below(5), 1 + r.below(5)],
                    [1 + r.below(3), 1 + r.below(3)],
                    [1 + r.below(2), 1 + r.below(2)],
                    [(r.below(3), r.below(3)), (r.below(3), r.below(3))],
                )
            };
            let reach =
                |a: usize| (dilation[a] * (k[a] - 1) + 1).saturating_sub(pad[a].0 + pad[a].1);
            let size = if case % 5 < 2 {
                [60 + r.below(9), 70]
            } else {
                [reach(0).max(1) + r.below(12), reach(1).max(1) + r.below(12)]
            };
            let what =
                format!("n{n} c{c} co{co} in{size:?} k{k:?} s{stride:?} d{dilation:?} p{pad:?}");
            let options = ConvOptions::new_with_padding(stride, pad, dilation, 1);
            let xs = r.values(n * c * size[0] * size[1]);
            let ws = r.values(co * c * k[0] * k[1]);
            let make = |v: &Vec<f32>, shape: [usize; 4]| {
                Tensor::<4>::from_data(TensorData::new(v.clone(), shape), &device).require_grad()
            };
            let bias = (case % 2 == 0).then(|| {
                Tensor::<1>::from_data(TensorData::new(r.values(co), [co]), &device).require_grad()
            });
            let (x1, w1) = (
                make(&xs, [n, c, size[0], size[1]]),
                make(&ws, [co, c, k[0], k[1]]),
            );
            let (x2, w2) = (
                make(&xs, [n, c, size[0], size[1]]),
                make(&ws, [co, c, k[0], k[1]]),
            );
            let ours = conv2d(x1.clone(), w1.clone(), bias.clone(), options.clone());
            let theirs = burn::tensor::module::conv2d(x2.clone(), w2.clone(), bias, options);
            let weights = Tensor::<4>::from_data(
                TensorData::new(r.values(theirs.shape().num_elements()), theirs.dims()),
                &device,
            );
            let g1 = (ours.clone() * weights.clone()).sum().backward();
            let g2 = (theirs.clone() * weights).sum().backward();
            close(ours.inner(), theirs.inner(), "output", &what);
            let (dx1, dx2) = (x1.grad(&g1).unwrap(), x2.grad(&g2).unwrap());
            close(dx1, dx2, "input grad", &what);
            close(
                w1.grad(&g1).unwrap(),
                w2.grad(&g2).unwrap(),
                "weight grad",
                &what,
            );
        }
    }

    /// The 1×1 and patch kernels give each image of a batch the bits it has alone, over
    /// small planes (where a block puts several images side by side), depths past one
    /// `gemm` chunk, residuals and epilogues; and they equal burn's convolution within 1e-5
    /// of the largest magnitude there too.
    #[test]
    fn products_give_an_image_its_own_bits_in_any_batch() {
        let device = Device::flex();
        let mut r = Lcg(77);
        for case in 0..40 {
            let e = EPILOGUES[case % EPILOGUES.len()];
            let n = 2 + r.below(9);
            let c = if case % 2 == 0 {
                3 + r.below(40)
            } else {
                500 + r.below(700)
            };
            let co = 2 + r.below(80);
            let (k, stride, pad) = if case % 3 == 0 {
                ([3, 3], [2, 2], [(1, 1); 2])
            } else {
                ([1, 1], [1, 1], [(0, 0); 2])
            };
            let size = [2 + r.below(15), 2 + r.below(15)];
            let what = format!("{e:?} n{n} c{c} co{co} in{size:?} k{k:?}");
            let options = ConvOptions::new_with_padding(stride, pad, [1, 1], 1);
            let (xs, ws) = (
                r.values(n * c * size[0] * size[1]),
                r.values(co * c * k[0] * k[1]),
            );
            let bias = r.values(co);
            let x = Tensor::<4>::from_data(
                TensorData::new(xs.clone(), [n, c, size[0], size[1]]),
                &device,
            );
            let w =
                Tensor::<4>::from_data(TensorData::new(ws.clone(), [co, c, k[0], k[1]]), &device);
            let b = Tensor::<1>::from_data(TensorData::new(bias.clone(), [co]), &device);
            let plain =
                burn::tensor::module::conv2d(x.clone(), w.clone(), Some(b), options.clone());
            let out = plain.dims();
            let residual = (case % 4 == 1).then(|| r.values(out.iter().product()));
            let theirs = burns_epilogue(
                match &residual {
                    Some(res) => {
                        plain + Tensor::<4>::from_data(TensorData::new(res.clone(), out), &device)
                    }
                    None => plain,
                },
                e,
            );
            let g = dense_geometry(&x.dims(), &w.dims(), &options)
                .unwrap()
                .dense;
            let run = |g: &dense::Dense, xs: &[f32], residual: Option<&[f32]>| {
                let finish = Finish {
                    bias: Some(&bias),
                    residual,
                    epilogue: e,
                };
                if k == [1, 1] {
                    let spatial = size[0] * size[1];
                    pointwise::forward(g.window.batch, c, spatial, xs, &ws, finish)
                } else {
                    dense::forward(g, xs, &ws, finish)
                }
            };
            let ours = run(&g, &xs, residual.as_deref());
            close(
                Tensor::<4>::from_data(TensorData::new(ours.clone(), out), &device),
                theirs,
                "output",
                &what,
            );
            let (image, input) = (ours.len() / n, xs.len() / n);
            let alone = dense::Dense {
                window: Depthwise {
                    batch: 1,
                    ..g.window
                },
                ..g
            };
            for i in 0..n {
                let single = run(
                    &alone,
                    &xs[i * input..][..input],
                    residual.as_deref().map(|r| &r[i * image..][..image]),
                );
                let differs = single
                    .iter()
                    .zip(&ours[i * image..][..image])
                    .position(|(a, b)| a.to_bits() != b.to_bits());
                assert_eq!(
                    differs, None,
                    "image {i} alone, first differing value: {what}"
                );
            }
        }
    }

    const EPILOGUES: [Epilogue; 6] = [
        Epilogue::Identity,
        Epilogue::Relu,
        Epilogue::Act(Pointwise::Relu6),
        Epilogue::Act(Pointwise::Hardswish),
        Epilogue::Act(Pointwise::Silu),
        Epilogue::Act(Pointwise::Gelu),
    ];

    /// `e` of `y` with burn's own activations.
    fn burns_epilogue<const D: usize>(y: Tensor<D>, e: Epilogue) -> Tensor<D> {
        match e {
            Epilogue::Identity => y,
            Epilogue::Relu => burn::tensor::activation::relu(y),
            Epilogue::Act(Pointwise::Relu6) => y.clamp(0.0, 6.0),
            Epilogue::Act(Pointwise::Hardswish) => burn::tensor::activation::hard_swish(y),
            Epilogue::Act(Pointwise::Silu) => burn::tensor::activation::silu(y),
            Epilogue::Act(Pointwise::Gelu) => burn::tensor::activation::gelu(y),
        }
    }

    /// The fused inverted block (1×1 expansion, depthwise k×k, squeeze-excitation in every
    /// other case, 1×1 projection, residual) over random channels, windows, strides,
    /// dilations, paddings, epilogues, gates and bands of output rows (one row to the whole
    /// image), plane by plane and channels-last, equals burn's three convolutions, each then
    /// burn's activation, burn's mean, 1×1 convolutions and gate between the last two, and
    /// the addition, within 1e-5 of the largest magnitude; with a squeeze-excitation, the
    /// first image of a batch has the same bits alone. The tensor-level block
    /// ([`Kernels::inverted_block`]) equals the three fused convolutions it replaces, bit
    /// for bit (within the bound on one-pixel outputs); with a squeeze-excitation, it and the layers its other backends run
    /// ([`Kernels::inverted_block_squeezed`]'s body) equal burn's within the same bound.
    #[test]
    fn inverted_block_equals_burns_three_convolutions() {
        let device = Device::flex();
        let mut r = Lcg(31);
        let tensor = |v: Vec<f32>, shape: [usize; 4]| {
            Tensor::<4>::from_data(TensorData::new(v, shape), &device)
        };
        let vector = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<1>::from_data(TensorData::new(v, [n]), &device)
        };
        for case in 0..120 {
            // Two expanded channels at least: one would be a dense convolution to the layers.
            let (n, cin, hidden) = (1 + r.below(3), 1 + r.below(8), 2 + r.below(23));
            let k = [1 + r.below(5), 1 + r.below(5)];
            let stride = [1 + r.below(2), 1 + r.below(2)];
            let dilation = [1 + r.below(2), 1 + r.below(2)];
            let reach = |a: usize| dilation[a] * (k[a] - 1) + 1;
            let pad: [(usize, usize); 2] =
                std::array::from_fn(|a| (r.below(reach(a)), r.below(reach(a))));
            let size: [usize; 2] = std::array::from_fn(|a| {
                reach(a).saturating_sub(pad[a].0 + pad[a].1).max(1) + r.below(14)
            });
            // Every third case keeps the shape and adds the residual.
            let residual = case % 3 == 0;
            let (stride, pad, cout) = if residual {
                let same = |a: usize| (reach(a) / 2, reach(a) - 1 - reach(a) / 2);
                ([1, 1], [same(0), same(1)], cin)
            } else {
                (stride, pad, 1 + r.below(8))
            };
            let acts = [EPILOGUES[case % 6], EPILOGUES[(case / 6) % 6]];
            let what = format!(
                "{acts:?} n{n} cin{cin} hidden{hidden} cout{cout} in{size:?} k{k:?} s{stride:?} d{dilation:?} p{pad:?}"
            );
            let x = tensor(
                r.values(n * cin * size[0] * size[1]),
                [n, cin, size[0], size[1]],
            );
            let ew = tensor(r.values(hidden * cin), [hidden, cin, 1, 1]).mul_scalar(2.0);
            let dw = tensor(r.values(hidden * k[0] * k[1]), [hidden, 1, k[0], k[1]]);
            let pw = tensor(r.values(cout * hidden), [cout, hidden, 1, 1]);
            let (eb, db, pb) = (
                vector(r.values(hidden)),
                vector(r.values(hidden)),
                vector(r.values(cout)),
            );
            let one = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
            let options = ConvOptions::new_with_padding(stride, pad, dilation, hidden);
            let conv = burn::tensor::module::conv2d;
            let e = burns_epilogue(
                conv(x.clone(), ew.clone(), Some(eb.clone()), one.clone()),
                acts[0],
            );
            let d = burns_epilogue(
                conv(e, dw.clone(), Some(db.clone()), options.clone()),
                acts[1],
            );
            // Every other case a squeeze-excitation of 1 to 6 channels.
            let squeeze = (case % 2 == 1).then(|| {
                let squeezed = 1 + r.below(6);
                let rw = tensor(r.values(squeezed * hidden), [squeezed, hidden, 1, 1]);
                let xw = tensor(r.values(hidden * squeezed), [hidden, squeezed, 1, 1]);
                let (rb, xb) = (vector(r.values(squeezed)), vector(r.values(hidden)));
                let gate = [Gate::Sigmoid, Gate::HardSigmoid][(case / 2) % 2];
                let act = EPILOGUES[(case / 4) % 6];
                (rw, rb, xw, xb, SqueezeActs { act, gate })
            });
            let what = match &squeeze {
                Some((.., se)) => format!("{what} {se:?}"),
                None => what,
            };
            let d = match &squeeze {
                None => d,
                Some((rw, rb, xw, xb, se)) => {
                    let mean = d.clone().mean_dim(2).mean_dim(3);
                    let reduced = conv(mean, rw.clone(), Some(rb.clone()), one.clone());
                    let reduced = burns_epilogue(reduced, se.act);
                    let excited = conv(reduced, xw.clone(), Some(xb.clone()), one.clone());
                    let gate = match se.gate {
                        Gate::Sigmoid => burn::tensor::activation::sigmoid(excited),
                        Gate::HardSigmoid => {
                            burn::tensor::activation::hard_sigmoid(excited, 1.0 / 6.0, 0.5)
                        }
                    };
                    d * gate
                }
            };
            let mut theirs = conv(d, pw.clone(), Some(pb.clone()), one.clone());
            if residual {
                theirs = theirs + x.clone();
            }
            let shapes = [
                x.dims().to_vec(),
                ew.dims().to_vec(),
                vec![hidden],
                dw.dims().to_vec(),
                vec![hidden],
                pw.dims().to_vec(),
                vec![cout],
            ];
            let b = inverted_geometry(&shapes, &options, residual)
                .unwrap_or_else(|| panic!("the fused block takes {what}"));
            let v = |t: &Tensor<4>| t.to_data().try_to_vec::<f32>().unwrap();
            let v1 = |t: &Tensor<1>| t.to_data().try_to_vec::<f32>().unwrap();
            let (xv, ewv, dwv, pwv) = (v(&x), v(&ew), v(&dw), v(&pw));
            let (ebv, dbv, pbv) = (v1(&eb), v1(&db), v1(&pb));
            let part = |weight, bias, epilogue| inverted::Part {
                weight,
                bias,
                epilogue,
            };
            let sv = squeeze
                .as_ref()
                .map(|(rw, rb, xw, xb, se)| (v(rw), v1(rb), v(xw), v1(xb), *se));
            let squeeze_parts = sv.as_ref().map(|(rw, rb, xw, xb, se)| inverted::Squeeze {
                reduce: part(rw, rb, se.act),
                expand: part(xw, xb, Epilogue::Identity),
                gate: se.gate,
            });
            let parts = [
                part(&ewv, &ebv, acts[0]),
                part(&dwv, &dbv, acts[1]),
                part(&pwv, &pbv, Epilogue::Identity),
            ];
            let oh = theirs.dims()[2];
            for (band, channels_last) in [1, 1 + r.below(oh), oh]
                .into_iter()
                .flat_map(|band| [(band, false), (band, true)])
            {
                let ours = inverted::in_bands(&b, band, channels_last, &xv, parts, squeeze_parts);
                if squeeze.is_some() {
                    // The first image alone: the gates are each image's own.
                    let one_image = inverted::Inverted {
                        window: Depthwise {
                            batch: 1,
                            ..b.window
                        },
                        ..b
                    };
                    let first = &xv[..xv.len() / n];
                    let alone = inverted::in_bands(
                        &one_image,
                        band,
                        channels_last,
                        first,
                        parts,
                        squeeze_parts,
                    );
                    assert_eq!(alone[..], ours[..alone.len()], "first image alone: {what}");
                }
                let ours = Tensor::<4>::from_data(TensorData::new(ours, theirs.dims()), &device);
                close(
                    ours,
                    theirs.clone(),
                    "output",
                    &format!("{what} band {band} channels-last {channels_last}"),
                );
            }
            let dispatch = |t: &Tensor<4>| t.clone().into_dispatch();
            if let Some((rw, rb, xw, xb, se)) = squeeze {
                // The tensor-level block, and the layers other backends run, against burn's.
                let block =
                    Tensor::<4>::from_dispatch(<Dispatch as Kernels>::inverted_block_squeezed(
                        dispatch(&x),
                        dispatch(&ew),
                        eb.clone().into_dispatch(),
                        dispatch(&dw),
                        db.clone().into_dispatch(),
                        dispatch(&rw),
                        rb.clone().into_dispatch(),
                        dispatch(&xw),
                        xb.clone().into_dispatch(),
                        dispatch(&pw),
                        pb.clone().into_dispatch(),
                        options.clone(),
                        acts,
                        se,
                        residual,
                    ));
                close(block, theirs.clone(), "tensor-level block", &what);
                let layers = Tensor::<4>::from_dispatch(inverted_then::<Dispatch>(
                    dispatch(&x),
                    [
                        [dispatch(&ew), eb.into_dispatch()],
                        [dispatch(&dw), db.into_dispatch()],
                        [dispatch(&pw), pb.into_dispatch()],
                    ],
                    Some((
                        [
                            [dispatch(&rw), rb.into_dispatch()],
                            [dispatch(&xw), xb.into_dispatch()],
                        ],
                        se,
                    )),
                    options,
                    acts,
                    residual,
                ));
                close(layers, theirs, "layers", &what);
                continue;
            }
            // The tensor-level block against the three fused convolutions it replaces.
            let block = Tensor::<4>::from_dispatch(<Dispatch as Kernels>::inverted_block(
                dispatch(&x),
                dispatch(&ew),
                eb.clone().into_dispatch(),
                dispatch(&dw),
                db.clone().into_dispatch(),
                dispatch(&pw),
                pb.clone().into_dispatch(),
                options.clone(),
                acts,
                residual,
            ));
            let e = conv2d_fused(x.clone(), ew, Some(eb), one.clone(), acts[0]);
            let d = conv2d_fused(e, dw, Some(db), options, acts[1]);
            let layers = fused(
                d,
                (pw, None),
                Some(pb),
                residual.then_some(x),
                one,
                Epilogue::Identity,
            );
            // A one-pixel output is a matrix-vector product to the layers' projection,
            // summed in another order than the block's product over its wide rows.
            if theirs.dims()[2] * theirs.dims()[3] > 1 {
                assert_eq!(v(&block), v(&layers), "block against its layers: {what}");
            } else {
                close(block, layers, "block against its layers", &what);
            }
        }
    }

    /// Inside `with_threads(n)` a kernel splits a group of images into blocks for `n`
    /// threads, not rayon's; the setting is the caller's again afterwards, after a panic
    /// too.
    #[test]
    fn with_threads_sets_the_blocks_threads() {
        let images = |t| with_threads(t, || pointwise::blocks(8, 8, 49, 49));
        assert_eq!(images(1), vec![(0, 8, 0)]);
        assert_eq!(images(2), vec![(0, 4, 0), (4, 4, 0)]);
        assert_eq!(images(3).len(), 3);
        assert_eq!(threads(), rayon::current_num_threads());
        let inner = std::panic::catch_unwind(|| with_threads(1, || panic!("in a kernel")));
        assert!(inner.is_err());
        assert_eq!(threads(), rayon::current_num_threads());
        with_threads(2, || {
            with_threads(1, || assert_eq!(threads(), 1));
            assert_eq!(threads(), 2);
        });
    }

    /// Winograd's 3×3 kernel over random channels, plane sizes (odd and even, down to one
    /// tile), asymmetric paddings, epilogues and residuals equals burn's convolution, then
    /// the addition, then burn's activation, within 1e-5 of the largest magnitude; each
    /// image of a batch has the same bits as that image alone; and the tensor-level
    /// operation takes the kernel where it applies and the direct one (equal within the
    /// same bound) where its transformed weight does not fit.
    #[test]
    fn winograd_equals_burns_convolution() {
        let device = Device::flex();
        let mut r = Lcg(131);
        let tensor = |v: Vec<f32>, shape: [usize; 4]| {
            Tensor::<4>::from_data(TensorData::new(v, shape), &device)
        };
        let v = |t: &Tensor<4>| t.to_data().try_to_vec::<f32>().unwrap();
        for case in 0..100 {
            let e = EPILOGUES[case % EPILOGUES.len()];
            let n = 1 + r.below(5);
            let min = winograd::MIN_CHANNELS;
            let (cin, cout) = (min + r.below(40), min + r.below(72));
            let pad: [(usize, usize); 2] = std::array::from_fn(|_| (r.below(3), r.below(3)));
            let size: [usize; 2] = std::array::from_fn(|a| {
                3usize.saturating_sub(pad[a].0 + pad[a].1).max(1) + r.below(17)
            });
            // Odd cases at stride 2, outputs of odd sizes (partial tiles) among them.
            let stride = 1 + case % 2;
            let options = ConvOptions::new_with_padding([stride; 2], pad, [1, 1], 1);
            let x = tensor(
                r.values(n * cin * size[0] * size[1]),
                [n, cin, size[0], size[1]],
            );
            let w = tensor(r.values(cout * cin * 9), [cout, cin, 3, 3]);
            let b = Tensor::<1>::from_data(TensorData::new(r.values(cout), [cout]), &device);
            let plain = burn::tensor::module::conv2d(
                x.clone(),
                w.clone(),
                Some(b.clone()),
                options.clone(),
            );
            let out = plain.dims();
            let residual = (case % 3 == 0).then(|| tensor(r.values(out.iter().product()), out));
            let theirs = burns_epilogue(
                match &residual {
                    Some(res) => plain + res.clone(),
                    None => plain,
                },
                e,
            );
            let what = format!("{e:?} n{n} cin{cin} cout{cout} in{size:?} p{pad:?} s{stride}");
            let g = dense_geometry(&x.dims(), &w.dims(), &options)
                .unwrap()
                .dense;
            assert!(winograd::takes(&g), "{what}");
            let (xv, bv) = (v(&x), b.to_data().try_to_vec::<f32>().unwrap());
            let u = winograd::transform_weights(&v(&w), cout, cin, stride);
            let rv = residual.as_ref().map(v);
            let finish = Finish {
                bias: Some(&bv),
                residual: rv.as_deref(),
                epilogue: e,
            };
            let ours = winograd::forward(&g, &xv, &u, finish);
            close(tensor(ours.clone(), out), theirs.clone(), "output", &what);
            // The last image alone: the same bits as in the batch.
            let image = ours.len() / n;
            let alone = dense::Dense {
                window: Depthwise {
                    batch: 1,
                    ..g.window
                },
                ..g
            };
            let last = Finish {
                bias: Some(&bv),
                residual: rv.as_deref().map(|r| &r[(n - 1) * image..]),
                epilogue: e,
            };
            let single = winograd::forward(&alone, &xv[(n - 1) * xv.len() / n..], &u, last);
            assert_eq!(
                single,
                ours[(n - 1) * image..],
                "the last image alone: {what}"
            );
            // Through the backend operation, with the transformed weight and with one of
            // another shape (the direct kernel).
            let ut = Tensor::<3>::from_data(
                TensorData::new(u, [winograd::matrices(stride), cout, cin]),
                &device,
            );
            let wrong = Tensor::<3>::zeros([winograd::matrices(stride), cout, cin + 1], &device);
            for (transformed, path) in [(ut, "winograd"), (wrong, "direct")] {
                let (xd, wd) = (x.clone().into_dispatch(), w.clone().into_dispatch());
                let (ud, bd) = (transformed.into_dispatch(), b.clone().into_dispatch());
                let got = Tensor::<4>::from_dispatch(match &residual {
                    None => {
                        <Dispatch as Kernels>::conv2d_winograd(xd, wd, ud, bd, options.clone(), e)
                    }
                    Some(res) => <Dispatch as Kernels>::conv2d_winograd_residual(
                        xd,
                        wd,
                        ud,
                        bd,
                        res.clone().into_dispatch(),
                        options.clone(),
                        e,
                    ),
                });
                close(got, theirs.clone(), path, &what);
            }
        }
    }

    /// A weight transformed for one stride is not used by a convolution of another that
    /// shares it (one parameter, two strides): that one runs the direct kernel, and each
    /// gives burn's convolution.
    #[test]
    fn winograd_weight_serves_only_its_stride() {
        let device = Device::flex();
        let mut r = Lcg(17);
        let (cin, cout) = (16, 24);
        let weight = Tensor::<4>::from_data(
            TensorData::new(r.values(cout * cin * 9), [cout, cin, 3, 3]),
            &device,
        );
        let conv = |stride: usize| Conv2d {
            weight: Param::initialized(ParamId::from(7), weight.clone()),
            bias: None,
            stride: [stride; 2],
            kernel_size: [3, 3],
            dilation: [1, 1],
            groups: 1,
            padding: PaddingConfig2d::Explicit(1, 1, 1, 1),
        };
        let x = Tensor::<4>::from_data(
            TensorData::new(r.values(2 * cin * 20 * 20), [2, cin, 20, 20]),
            &device,
        );
        for (made, used) in [(1, 2), (2, 1), (1, 1), (2, 2)] {
            let transformed = WinogradWeight::of(&conv(made)).expect("a weight it takes");
            let conv = conv(used);
            assert!(transformed.is_of(&conv.weight));
            let got = conv_fused_winograd(
                &conv,
                Some(&transformed),
                x.clone(),
                None,
                Epilogue::Identity,
            );
            let options = ConvOptions::new_with_padding([used; 2], [(1, 1); 2], [1, 1], 1);
            let want = burn::tensor::module::conv2d(x.clone(), weight.clone(), None, options);
            close(
                got,
                want,
                "output",
                &format!("made for stride {made}, used at {used}"),
            );
        }
    }

    /// The fused inference convolutions (depthwise with channel multipliers, strides,
    /// dilations, asymmetric paddings; dense, 1×1 or any window, over batches that split by
    /// image and by block of columns, and single images), with a residual or without, with
    /// each epilogue equal burn's convolution, then the addition, then burn's activation,
    /// within 1e-5 of the largest magnitude.
    #[test]
    fn fused_convolutions_equal_burns_convolution_then_activation() {
        let device = Device::flex();
        let mut r = Lcg(77);
        let epilogues = EPILOGUES;
        let reference = burns_epilogue::<4>;
        let tensor = |v: Vec<f32>, shape: [usize; 4]| {
            Tensor::<4>::from_data(TensorData::new(v, shape), &device)
        };
        for case in 0..160 {
            let e = epilogues[case % epilogues.len()];
            let (n, c, m, k, stride, dilation, pad, size, groups);
            if case % 2 == 0 {
                (n, c, m) = (1 + r.below(3), 1 + r.below(6), 1 + r.below(3));
                k = [1 + r.below(5), 1 + r.below(5)];
                stride = [1 + r.below(3), 1 + r.below(3)];
                dilation = [1 + r.below(2), 1 + r.below(2)];
                pad = [(r.below(3), r.below(3)), (r.below(3), r.below(3))];
                size = std::array::from_fn(|a| {
                    let reach = dilation[a] * (k[a] - 1) + 1;
                    reach.saturating_sub(pad[a].0 + pad[a].1).max(1) + r.below(12)
                });
                groups = c;
            } else {
                // Every fourth dense case has a plane wider than one block of columns; every
                // other one is 1×1, the others any window.
                let wide = case % 4 == 1;
                (n, c, m) = (1 + r.below(6), 1 + r.below(40), 1 + r.below(40));
                (k, stride, dilation, pad) = if case % 4 == 3 {
                    (
                        [1 + r.below(4), 1 + r.below(4)],
                        [1 + r.below(3), 1 + r.below(3)],
                        [1 + r.below(2), 1 + r.below(2)],
                        [(r.below(2), r.below(2)), (r.below(2), r.below(2))],
                    )
                } else {
                    ([1, 1], [1, 1], [1, 1], [(0, 0); 2])
                };
                let reach = |a: usize| {
                    (dilation[a] * (k[a] - 1) + 1)
                        .saturating_sub(pad[a].0 + pad[a].1)
                        .max(1)
                };
                size = if wide {
                    [65 + r.below(8), 66]
                } else {
                    [reach(0) + r.below(9), reach(1) + r.below(9)]
                };
                groups = 1;
            }
            let co = if groups == 1 { m } else { c * m };
            let what = format!(
                "{e:?} n{n} c{c} co{co} in{size:?} k{k:?} s{stride:?} d{dilation:?} p{pad:?}"
            );
            let options = ConvOptions::new_with_padding(stride, pad, dilation, groups);
            let x = tensor(
                r.values(n * c * size[0] * size[1]),
                [n, c, size[0], size[1]],
            );
            let w = tensor(
                r.values(co * (c / groups) * k[0] * k[1]),
                [co, c / groups, k[0], k[1]],
            )
            .mul_scalar(4.0);
            let b = Tensor::<1>::from_data(TensorData::new(r.values(co), [co]), &device);
            let y = burn::tensor::module::conv2d(
                x.clone(),
                w.clone(),
                Some(b.clone()),
                options.clone(),
            );
            // Every third case adds a residual (a shortcut of the output's shape) first.
            let residual =
                (case % 3 == 0).then(|| tensor(r.values(y.shape().num_elements()), y.dims()));
            let (x, w, b) = (x.into_dispatch(), w.into_dispatch(), b.into_dispatch());
            let ours = Tensor::<4>::from_dispatch(match residual.clone() {
                None => <Dispatch as Kernels>::conv2d_fused(x, w, b, options, e),
                Some(res) => {
                    let res = res.into_dispatch();
                    <Dispatch as Kernels>::conv2d_fused_residual(x, w, b, res, options, e)
                }
            });
            let theirs = reference(residual.map_or(y.clone(), |res| y + res), e);
            let what = format!("{what} residual {}", case % 3 == 0);
            assert_eq!(ours.dims(), theirs.dims(), "{what}");
            close(ours, theirs, "output", &what);
        }
    }

    /// Each activation and its gradient equal burn's composition of it (GELU: burn's libm
    /// erf), over values that cross every kink (ReLU6's 0 and 6, hard-swish's ±3) and the
    /// saturated tails.
    #[test]
    fn activations_and_gradients_equal_burns_reference() {
        let device = Device::flex().autodiff();
        let mut r = Lcg(9);
        // Off the kinks themselves, where burn's clamp and PyTorch differ (checked below).
        let mut xs: Vec<f32> = r.values(4000).iter().map(|v| v * 12.0 + 5e-4).collect();
        xs.extend([-40.0, 40.0, -100.0, 100.0]);
        let n = xs.len();
        let weights = Tensor::<1>::from_data(TensorData::new(r.values(n), [n]), &device);
        for act in [
            Pointwise::Relu6,
            Pointwise::Hardswish,
            Pointwise::Silu,
            Pointwise::Gelu,
        ] {
            let x1 =
                Tensor::<1>::from_data(TensorData::new(xs.clone(), [n]), &device).require_grad();
            let x2 =
                Tensor::<1>::from_data(TensorData::new(xs.clone(), [n]), &device).require_grad();
            let ours = activation(x1.clone(), act);
            let theirs = match act {
                Pointwise::Relu6 => x2.clone().clamp(0.0, 6.0),
                Pointwise::Hardswish => burn::tensor::activation::hard_swish(x2.clone()),
                Pointwise::Silu => burn::tensor::activation::silu(x2.clone()),
                Pointwise::Gelu => burn::tensor::activation::gelu(x2.clone()),
            };
            let g1 = (ours.clone() * weights.clone()).sum().backward();
            let g2 = (theirs.clone() * weights.clone()).sum().backward();
            let as4 = |t: Tensor<1>| t.inner().reshape([1, 1, 1, n]);
            let case = format!("{act:?}");
            close(as4(ours), as4(theirs), "output", &case);
            close(
                as4(x1.grad(&g1).unwrap()),
                as4(x2.grad(&g2).unwrap()),
                "grad",
                &case,
            );
        }
    }

    /// BatchNorm in training, alone and with each activation in the same kernel: output,
    /// running statistics and the gradients of the input, gamma and beta equal burn-nn's
    /// `BatchNorm::forward` (then burn's activation) under autodiff, for ranks 3 to 5. The
    /// outputs spread over ±8, across every activation's kinks.
    #[test]
    fn batch_norm_training_equals_burns() {
        use burn::module::Param;
        use burn::nn::BatchNormConfig;
        let device = Device::flex().autodiff();
        let mut r = Lcg(5);
        let cases = [
            (vec![4usize, 3, 17], 1e-5, 0.1),
            (vec![2, 5, 6, 7], 1e-3, 0.01),
            (vec![3, 2, 4, 3, 5], 1e-5, 0.3),
            (vec![1, 4, 1, 1], 1e-3, 0.1),
        ];
        for ((shape, eps, momentum), e) in cases
            .into_iter()
            .flat_map(|case| EPILOGUES.map(|e| (case.clone(), e)))
        {
            let c = shape[1];
            // Two separate layers (a clone would share its running statistics).
            let (gs, bs) = (r.values(c), r.values(c));
            let layer = || {
                let mut bn = BatchNormConfig::new(c)
                    .with_epsilon(eps)
                    .with_momentum(momentum)
                    .init(&device);
                let v =
                    |x: &Vec<f32>| Tensor::<1>::from_data(TensorData::new(x.clone(), [c]), &device);
                bn.gamma = Param::from_tensor(v(&gs).mul_scalar(6.0).add_scalar(1.0));
                bn.beta = Param::from_tensor(v(&bs));
                bn
            };
            let (bn, theirs_bn) = (layer(), layer());
            let n: usize = shape.iter().product();
            let xs: Vec<f32> = r.values(n).iter().map(|v| v * 3.0 + 0.5).collect();
            let ws = r.values(n);
            let case = format!("{shape:?} {e:?}");
            macro_rules! run {
                ($d:literal) => {{
                    let dims: [usize; $d] = shape.clone().try_into().unwrap();
                    let x1 = Tensor::<$d>::from_data(TensorData::new(xs.clone(), dims), &device)
                        .require_grad();
                    let x2 = Tensor::<$d>::from_data(TensorData::new(xs.clone(), dims), &device)
                        .require_grad();
                    let w = Tensor::<$d>::from_data(TensorData::new(ws.clone(), dims), &device);
                    let ours = batch_norm_then(&bn, x1.clone(), e);
                    let theirs = burns_epilogue(theirs_bn.forward(x2.clone()), e);
                    let g1 = (ours.clone() * w.clone()).sum().backward();
                    let g2 = (theirs.clone() * w).sum().backward();
                    let flat = |t: Tensor<$d>| t.inner().reshape([1, 1, 1, n]);
                    close(flat(ours), flat(theirs), "output", &case);
                    close(
                        flat(x1.grad(&g1).unwrap()),
                        flat(x2.grad(&g2).unwrap()),
                        "input grad",
                        &case,
                    );
                    for (p1, p2, what) in [
                        (&bn.gamma, &theirs_bn.gamma, "gamma grad"),
                        (&bn.beta, &theirs_bn.beta, "beta grad"),
                    ] {
                        let a = p1.val().grad(&g1).unwrap().reshape([1, 1, 1, c]);
                        let b = p2.val().grad(&g2).unwrap().reshape([1, 1, 1, c]);
                        close(a, b, what, &case);
                    }
                }};
            }
            match shape.len() {
                3 => run!(3),
                4 => run!(4),
                _ => run!(5),
            }
            let rs = |t: Tensor<1>| t.inner().reshape([1, 1, 1, c]);
            close(
                rs(bn.running_mean.value()),
                rs(theirs_bn.running_mean.value()),
                "running mean",
                &case,
            );
            close(
                rs(bn.running_var.value()),
                rs(theirs_bn.running_var.value()),
                "running var",
                &case,
            );
        }
    }

    /// At the kinks the gradients are PyTorch's (`hardtanh_backward`, `hardswish_backward`).
    #[test]
    fn gradients_at_the_kinks_are_pytorchs() {
        let device = Device::flex().autodiff();
        let xs = [-3.0f32, 0.0, 3.0, 6.0];
        for (act, want) in [
            (Pointwise::Relu6, [0.0, 0.0, 1.0, 0.0]),
            (Pointwise::Hardswish, [-0.5, 0.5, 1.5, 1.0]),
        ] {
            let x =
                Tensor::<1>::from_data(TensorData::new(xs.to_vec(), [4]), &device).require_grad();
            let g = activation(x.clone(), act).sum().backward();
            let got = x.grad(&g).unwrap().into_data().try_to_vec::<f32>().unwrap();
            assert_eq!(got, want, "{act:?}");
        }
    }

    /// Off the CPU backend, or for a grouped (not depthwise) convolution, [`conv2d`] is
    /// burn's: nothing to route.
    #[test]
    fn grouped_convolutions_stay_on_burns_path() {
        let device = Device::flex();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1f32; 2 * 4 * 5 * 5], [2, 4, 5, 5]),
            &device,
        );
        let w = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32; 4 * 2 * 3 * 3], [4, 2, 3, 3]),
            &device,
        );
        let options = ConvOptions::new([1, 1], [1, 1], [1, 1], 2);
        let ours = conv2d(x.clone(), w.clone(), None, options.clone());
        close(
            ours,
            burn::tensor::module::conv2d(x, w, None, options),
            "grouped",
            "g2",
        );
    }
}
