//! The ops a graph runs, typed once at load from a node's attributes (by opset), then
//! executed on burn tensors. Every shape is checked before burn sees it: a graph that does
//! not fit together is an error naming the node, never a panic inside the engine.

use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, MaxPoolOptions, PadMode};
use burn::tensor::{Int, Slice};

use super::value::{F, MAX_RANK, Value, map_f};
use super::{HostData, HostTensor, Node};

/// The most elements one value may have (1 GiB of f32): an absurd shape in a file is an
/// error, not an allocation.
pub const MAX_ELEMENTS: usize = 1 << 28;

type R<T> = Result<T, String>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unary {
    Relu,
    Sigmoid,
    Tanh,
    Erf,
    Exp,
    Log,
    Sqrt,
    Neg,
    Abs,
    Reciprocal,
    HardSwish,
    Gelu,
    GeluTanh,
    Softplus,
    Floor,
    Ceil,
    Identity,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    /// Remainder with the divisor's sign (ONNX Mod, fmod = 0); integers only.
    Mod,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Sliding-window geometry shared by Conv and the pools.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kernel: Option<[usize; 2]>,
    pub strides: [usize; 2],
    /// (begin, end) per spatial axis.
    pub pads: [(usize, usize); 2],
    pub dilations: [usize; 2],
    pub auto_pad: AutoPad,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Unary(Unary),
    Binary(Binary),
    LeakyRelu(f64),
    Elu(f64),
    HardSigmoid(f64, f64),
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    Softmax {
        axis: i64,
        /// Before opset 13: over all dimensions from `axis` on, flattened.
        coerced: bool,
        log: bool,
    },
    Conv {
        window: Window,
        group: usize,
    },
    /// A convolution with the activation that alone reads its output, fused for inference
    /// (`GraphBlock::fold_batchnorm`): the activation runs on the convolution's own
    /// buffer, with no value slot between them.
    ConvAct {
        window: Window,
        group: usize,
        act: Activation,
    },
    /// Index into the block's BatchNorm modules.
    BatchNorm(usize),
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    MatMul,
    MaxPool {
        window: Window,
        ceil: bool,
    },
    AveragePool {
        window: Window,
        ceil: bool,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    GlobalMaxPool,
    Flatten(i64),
    Reshape {
        allow_zero: bool,
    },
    Transpose(Option<Vec<i64>>),
    Squeeze(Option<Vec<i64>>),
    Unsqueeze(Option<Vec<i64>>),
    Concat(i64),
    Split {
        axis: i64,
        sizes: Option<Vec<i64>>,
        outputs: usize,
    },
    /// Attributes before opset 10; inputs after.
    Slice(Option<[Vec<i64>; 3]>),
    Pad {
        mode: PadKind,
        pads: Option<Vec<i64>>,
        value: f32,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Gather(i64),
    ConstantOfShape(HostTensor),
    Expand,
    Cast {
        to_float: bool,
        /// A cast to a half-precision type rounds to it (the runtime computes in f32).
        half: Option<Half>,
    },
    /// Cast to the type of the second input.
    CastLike,
    Resize(Box<super::resize::Resize>),
    /// Ratio, and whether the mask output is named.
    Dropout(f64, bool),
    Reduce {
        kind: ReduceKind,
        axes: Option<Vec<i64>>,
        keep: bool,
        noop_empty: bool,
    },
    LayerNorm {
        axis: i64,
        eps: f64,
    },
    Equal,
    Where,
    Range,
    /// retrain's own (no ONNX op): integers `base + per_batch · n` for a batch of `n`, what
    /// shape arithmetic on the batch size folds into (see `graph::fold`).
    BatchShape {
        base: HostTensor,
        per_batch: Vec<i64>,
    },
}

/// An activation a convolution can carry ([`Op::ConvAct`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Unary(Unary),
    Clip(Option<f32>, Option<f32>),
    LeakyRelu(f64),
    HardSigmoid(f64, f64),
}

impl Activation {
    /// The activation `op` is, where it takes nothing but its input (a Clip's bounds as
    /// attributes, or given here from constants).
    pub fn of(op: &Op, bounds: (Option<f32>, Option<f32>)) -> Option<Self> {
        match op {
            Op::Unary(u) if *u != Unary::Identity => Some(Self::Unary(*u)),
            Op::Clip { min, max } => {
                let (lo, hi) = clip_bounds(bounds.0.or(*min), bounds.1.or(*max));
                Some(Self::Clip(lo, hi))
            }
            Op::LeakyRelu(a) => Some(Self::LeakyRelu(*a)),
            Op::HardSigmoid(a, b) => Some(Self::HardSigmoid(*a, *b)),
            _ => None,
        }
    }

    /// The activation as a fused convolution's epilogue, where the kernels have it.
    fn epilogue(self) -> Option<crate::kernels::Epilogue> {
        use crate::kernels::{Epilogue, Pointwise};
        Some(match self {
            Self::Unary(Unary::Relu) | Self::Clip(Some(0.0), None) => Epilogue::Relu,
            Self::Unary(Unary::HardSwish) => Epilogue::Act(Pointwise::Hardswish),
            Self::Unary(Unary::Gelu) => Epilogue::Act(Pointwise::Gelu),
            Self::Clip(Some(0.0), Some(6.0)) => Epilogue::Act(Pointwise::Relu6),
            _ => return None,
        })
    }

    fn apply(self, x: F) -> F {
        match self {
            Self::Unary(u) => unary(u, x),
            Self::Clip(lo, hi) => clip(x, lo, hi),
            Self::LeakyRelu(a) => map_f!(x, |t| activation::leaky_relu(t, a)),
            Self::HardSigmoid(a, b) => map_f!(x, |t| activation::hard_sigmoid(t, a, b)),
        }
    }
}

/// Clip's bounds as it applies them: a NaN bound is no bound; a lower bound over the
/// upper gives the upper (numpy's clip, ONNX's reference).
fn clip_bounds(lo: Option<f32>, hi: Option<f32>) -> (Option<f32>, Option<f32>) {
    let hi = hi.filter(|h| !h.is_nan());
    let lo = lo
        .filter(|l| !l.is_nan())
        .map(|l| hi.map_or(l, |h| l.min(h)));
    (lo, hi)
}

/// `x` clamped to bounds [`clip_bounds`] gave.
fn clip(x: F, lo: Option<f32>, hi: Option<f32>) -> F {
    match (lo, hi) {
        (Some(l), Some(h)) => map_f!(x, |t| t.clamp(l, h)),
        (Some(l), None) => map_f!(x, |t| t.clamp_min(l)),
        (None, Some(h)) => map_f!(x, |t| t.clamp_max(h)),
        (None, None) => x,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PadKind {
    Constant,
    Reflect,
    Edge,
    /// The edge value repeated, then the rest mirrored (numpy's `symmetric`, TFLite's
    /// MIRROR_PAD SYMMETRIC): not an ONNX mode, written only by the TFLite front-end.
    Symmetric,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReduceKind {
    Mean,
    Sum,
    Max,
}

fn two(v: Option<&[i64]>, default: usize, what: &str) -> R<[usize; 2]> {
    match v {
        None => Ok([default; 2]),
        Some([a, b]) if *a >= 1 && *b >= 1 => Ok([*a as usize, *b as usize]),
        Some(other) if other.len() == 2 => {
            Err(format!("{what} {other:?}: two positive values expected"))
        }
        Some(other) => Err(format!(
            "{what} {other:?}: a {}-D window is not supported (2-D only)",
            other.len()
        )),
    }
}

fn window(node: &Node, needs_kernel: bool) -> R<Window> {
    let kernel = match node.ints("kernel_shape") {
        Some(k) => Some(two(Some(k), 1, "kernel_shape")?),
        None if needs_kernel => return Err("no kernel_shape".into()),
        None => None,
    };
    let pads = match node.ints("pads") {
        None => [(0, 0); 2],
        Some(p) if p.len() == 4 && p.iter().all(|&v| (0..=1 << 16).contains(&v)) => [
            (p[0] as usize, p[2] as usize),
            (p[1] as usize, p[3] as usize),
        ],
        Some(p) => return Err(format!("pads {p:?}: four non-negative values expected")),
    };
    let auto_pad = match node.string("auto_pad").unwrap_or("NOTSET") {
        "NOTSET" | "" => AutoPad::NotSet,
        "SAME_UPPER" => AutoPad::SameUpper,
        "SAME_LOWER" => AutoPad::SameLower,
        "VALID" => AutoPad::Valid,
        other => {
            return Err(format!(
                "auto_pad {other} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID"
            ));
        }
    };
    Ok(Window {
        kernel,
        strides: two(node.ints("strides"), 1, "strides")?,
        pads,
        dilations: two(node.ints("dilations"), 1, "dilations")?,
        auto_pad,
    })
}

impl Op {
    /// The typed op of `node` at `opset`, or why it cannot run.
    pub fn compile(node: &Node, opset: i64) -> R<Op> {
        let unary = |u| Ok(Op::Unary(u));
        let binary = |b| Ok(Op::Binary(b));
        let axes_attr = || node.ints("axes").map(<[i64]>::to_vec);
        match node.op.as_str() {
            "Relu" => unary(Unary::Relu),
            "Sigmoid" => unary(Unary::Sigmoid),
            "Tanh" => unary(Unary::Tanh),
            "Erf" => unary(Unary::Erf),
            "Exp" => unary(Unary::Exp),
            "Log" => unary(Unary::Log),
            "Sqrt" => unary(Unary::Sqrt),
            "Neg" => unary(Unary::Neg),
            "Abs" => unary(Unary::Abs),
            "Reciprocal" => unary(Unary::Reciprocal),
            "HardSwish" => unary(Unary::HardSwish),
            "Softplus" => unary(Unary::Softplus),
            "Floor" => unary(Unary::Floor),
            "Ceil" => unary(Unary::Ceil),
            "Identity" => unary(Unary::Identity),
            "Gelu" => match node.string("approximate").unwrap_or("none") {
                "none" => unary(Unary::Gelu),
                "tanh" => unary(Unary::GeluTanh),
                other => Err(format!("approximate={other} is not none or tanh")),
            },
            "Add" | "Sub" | "Mul" | "Div"
                if node.int("broadcast") == Some(1) && node.int("axis").is_some() =>
            {
                Err("legacy broadcast with an axis (opset < 7) is not supported".into())
            }
            "Add" => binary(Binary::Add),
            "Sub" => binary(Binary::Sub),
            "Mul" => binary(Binary::Mul),
            "Div" => binary(Binary::Div),
            "Pow" => binary(Binary::Pow),
            "Mod" if node.int("fmod").unwrap_or(0) == 0 => binary(Binary::Mod),
            "CastLike" => Ok(Op::CastLike),
            "LeakyRelu" => Ok(Op::LeakyRelu(node.float("alpha").unwrap_or(0.01) as f64)),
            "Elu" => Ok(Op::Elu(node.float("alpha").unwrap_or(1.0) as f64)),
            "HardSigmoid" => Ok(Op::HardSigmoid(
                node.float("alpha").unwrap_or(0.2) as f64,
                node.float("beta").unwrap_or(0.5) as f64,
            )),
            "Clip" => Ok(Op::Clip {
                // Before opset 11 the bounds are attributes; after, optional inputs.
                min: node.float("min"),
                max: node.float("max"),
            }),
            "Softmax" | "LogSoftmax" => Ok(Op::Softmax {
                axis: node.int("axis").unwrap_or(if opset < 13 { 1 } else { -1 }),
                coerced: opset < 13,
                log: node.op == "LogSoftmax",
            }),
            "Conv" => {
                let group = node.int("group").unwrap_or(1);
                if group < 1 {
                    return Err(format!("group {group} must be at least 1"));
                }
                Ok(Op::Conv {
                    window: window(node, false)?,
                    group: group as usize,
                })
            }
            "Gemm" => Ok(Op::Gemm {
                alpha: node.float("alpha").unwrap_or(1.0),
                beta: node.float("beta").unwrap_or(1.0),
                trans_a: node.int("transA").unwrap_or(0) != 0,
                trans_b: node.int("transB").unwrap_or(0) != 0,
            }),
            "MatMul" => Ok(Op::MatMul),
            "MaxPool" if node.outputs.get(1).is_some_and(|o| !o.is_empty()) => {
                Err("MaxPool's Indices output is not supported".into())
            }
            "MaxPool" => Ok(Op::MaxPool {
                window: window(node, true)?,
                ceil: node.int("ceil_mode").unwrap_or(0) != 0,
            }),
            "AveragePool" => Ok(Op::AveragePool {
                window: window(node, true)?,
                ceil: node.int("ceil_mode").unwrap_or(0) != 0,
                count_include_pad: node.int("count_include_pad").unwrap_or(0) != 0,
            }),
            "GlobalAveragePool" => Ok(Op::GlobalAveragePool),
            "GlobalMaxPool" => Ok(Op::GlobalMaxPool),
            "Flatten" => Ok(Op::Flatten(node.int("axis").unwrap_or(1))),
            "Reshape" => Ok(Op::Reshape {
                allow_zero: node.int("allowzero").unwrap_or(0) != 0,
            }),
            "Transpose" => Ok(Op::Transpose(node.ints("perm").map(<[i64]>::to_vec))),
            "Squeeze" => Ok(Op::Squeeze(axes_attr())),
            "Unsqueeze" => Ok(Op::Unsqueeze(axes_attr())),
            "Concat" => Ok(Op::Concat(
                node.int("axis").ok_or("Concat without an axis")?,
            )),
            "Split" => Ok(Op::Split {
                axis: node.int("axis").unwrap_or(0),
                sizes: node.ints("split").map(<[i64]>::to_vec),
                outputs: node.outputs.len(),
            }),
            "Slice" => Ok(Op::Slice(if opset < 10 {
                let starts = node.ints("starts").ok_or("Slice without starts")?.to_vec();
                let ends = node.ints("ends").ok_or("Slice without ends")?.to_vec();
                let axes = axes_attr().unwrap_or_else(|| (0..starts.len() as i64).collect());
                Some([starts, ends, axes])
            } else {
                None
            })),
            "Pad" => Ok(Op::Pad {
                mode: match node.string("mode").unwrap_or("constant") {
                    "constant" => PadKind::Constant,
                    "reflect" => PadKind::Reflect,
                    "edge" => PadKind::Edge,
                    "symmetric" => PadKind::Symmetric,
                    other => return Err(format!("pad mode {other} is not supported")),
                },
                pads: node.ints("pads").map(<[i64]>::to_vec),
                value: node.float("value").unwrap_or(0.0),
            }),
            "Shape" => Ok(Op::Shape {
                start: node.int("start").unwrap_or(0),
                end: node.int("end"),
            }),
            "Gather" => Ok(Op::Gather(node.int("axis").unwrap_or(0))),
            "ConstantOfShape" => Ok(Op::ConstantOfShape(match node.attrs.get("value") {
                Some(super::Attr::Tensor(t)) if t.numel() == 1 => t.clone(),
                Some(_) => return Err("value must be a one-element tensor".into()),
                None => HostTensor {
                    shape: vec![1],
                    data: HostData::Float(vec![0.0]),
                },
            })),
            "Expand" => Ok(Op::Expand),
            "Resize" | "Upsample" => Ok(Op::Resize(Box::new(super::resize::Resize::compile(
                node, opset,
            )?))),
            "Cast" => {
                // TensorProto data types: FLOAT 1, FLOAT16 10, DOUBLE 11, BFLOAT16 16.
                let to = node.int("to").ok_or("Cast without `to`")?;
                Ok(Op::Cast {
                    to_float: matches!(to, 1 | 10 | 11 | 16),
                    half: match to {
                        10 => Some(Half::F16),
                        16 => Some(Half::Bf16),
                        _ => None,
                    },
                })
            }
            "Dropout" => Ok(Op::Dropout(
                node.float("ratio").unwrap_or(0.5) as f64,
                node.outputs.get(1).is_some_and(|o| !o.is_empty()),
            )),
            "ReduceMean" | "ReduceSum" | "ReduceMax" => Ok(Op::Reduce {
                kind: match node.op.as_str() {
                    "ReduceMean" => ReduceKind::Mean,
                    "ReduceSum" => ReduceKind::Sum,
                    _ => ReduceKind::Max,
                },
                axes: axes_attr(),
                keep: node.int("keepdims").unwrap_or(1) != 0,
                noop_empty: node.int("noop_with_empty_axes").unwrap_or(0) != 0,
            }),
            "LayerNormalization" => Ok(Op::LayerNorm {
                axis: node.int("axis").unwrap_or(-1),
                eps: node.float("epsilon").unwrap_or(1e-5) as f64,
            }),
            "Equal" => Ok(Op::Equal),
            "Where" => Ok(Op::Where),
            "Range" => Ok(Op::Range),
            super::fold::BATCH_SHAPE => {
                let base = match node.attrs.get("base") {
                    Some(super::Attr::Tensor(t)) if matches!(t.data, HostData::Int(_)) => t.clone(),
                    _ => return Err("no integer tensor `base`".into()),
                };
                let per_batch = node.ints("per_batch").unwrap_or_default().to_vec();
                if per_batch.len() != base.numel()
                    || base.shape.iter().product::<usize>() != base.numel()
                {
                    return Err("`base` and `per_batch` differ in size".into());
                }
                Ok(Op::BatchShape { base, per_batch })
            }
            // A front-end's layer it could not translate, with its reason.
            other if other.starts_with("Keras ") || other.starts_with("TFLite ") => {
                Err(node.string("why").map_or_else(
                    || format!("the {other} operator is not supported"),
                    str::to_owned,
                ))
            }
            other => Err(format!(
                "the op {other} is not supported (see README: graph ops)"
            )),
        }
    }
}

fn axis(a: i64, rank: usize) -> R<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r.max(1)).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

pub(crate) fn check_numel(shape: &[usize]) -> R<()> {
    let mut n: usize = 1;
    for &d in shape {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| {
                format!("a value of shape {shape:?} would exceed {MAX_ELEMENTS} elements")
            })?;
    }
    if shape.len() > MAX_RANK {
        return Err(format!(
            "rank {} is over the supported {MAX_RANK}",
            shape.len()
        ));
    }
    Ok(())
}

/// Numpy broadcasting of two shapes.
/// A half-precision float type a Cast rounds values to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    F16,
    Bf16,
}

impl Half {
    /// `x` rounded to the nearest value of this type (ties to even), back in f32.
    pub fn round(self, x: f32) -> f32 {
        match self {
            Half::F16 => half::f16::from_f32(x).to_f32(),
            Half::Bf16 => half::bf16::from_f32(x).to_f32(),
        }
    }

    /// Every value rounded; when training, the gradient passes straight through, as a
    /// cast's does.
    fn round_tensor(self, f: F) -> F {
        map_f!(f, |t| {
            let dims = t.dims();
            let data: Vec<f32> = t
                .clone()
                .into_data()
                .iter::<f32>()
                .map(|x| self.round(x))
                .collect();
            let rounded = Tensor::from_data(TensorData::new(data, dims), &t.device());
            if t.is_tracked() {
                t.clone() + (rounded - t).detach()
            } else {
                rounded
            }
        })
    }
}

pub fn broadcast(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let r = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        let off = r - s.len();
        if i < off { 1 } else { s[i - off] }
    };
    (0..r)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

/// Runs a function on two floats of the same rank (lifted to it).
macro_rules! zip_f {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $e:expr) => {{
        let r = $a.rank().max($b.rank());
        match ($a.lift(r), $b.lift(r)) {
            (F::R0($x), F::R0($y)) => F::R0($e),
            (F::R1($x), F::R1($y)) => F::R1($e),
            (F::R2($x), F::R2($y)) => F::R2($e),
            (F::R3($x), F::R3($y)) => F::R3($e),
            (F::R4($x), F::R4($y)) => F::R4($e),
            (F::R5($x), F::R5($y)) => F::R5($e),
            _ => unreachable!("lifted to one rank"),
        }
    }};
}

/// What an op needs of its surroundings while it runs.
pub struct Ctx<'a> {
    pub device: &'a Device,
    /// Training: Dropout drops.
    pub training: bool,
    /// The batch size of the running block's input ([`Op::BatchShape`] computes with it).
    pub batch: usize,
    /// The running convolution's weight transformed for Winograd's kernel, if it has one.
    pub winograd: Option<&'a crate::kernels::WinogradWeight>,
}

fn float(v: &Value, dev: &Device) -> F {
    match v {
        Value::F(f) => f.clone(),
        Value::Host(h) => F::from_host(h, dev),
    }
}

fn host(v: &Value, what: &str) -> R<HostTensor> {
    match v {
        Value::Host(h) => Ok(h.clone()),
        Value::F(f) if f.numel() <= 64 => Ok(HostTensor {
            shape: f.shape(),
            data: HostData::Float(f.to_vec()),
        }),
        Value::F(_) => Err(format!("{what} must be a constant computed from shapes")),
    }
}

fn all_host(inputs: &[Option<&Value>]) -> bool {
    inputs.iter().flatten().all(|v| matches!(v, Value::Host(_)))
}

fn need<'v>(inputs: &[Option<&'v Value>], i: usize) -> R<&'v Value> {
    inputs
        .get(i)
        .copied()
        .flatten()
        .ok_or_else(|| format!("input {i} is missing"))
}

fn unary(u: Unary, x: F) -> F {
    match u {
        Unary::Relu => map_f!(x, |t| activation::relu(t)),
        Unary::Sigmoid => map_f!(x, |t| activation::sigmoid(t)),
        Unary::Tanh => map_f!(x, |t| t.tanh()),
        Unary::Erf => map_f!(x, |t| t.erf()),
        Unary::Exp => map_f!(x, |t| t.exp()),
        Unary::Log => map_f!(x, |t| t.log()),
        Unary::Sqrt => map_f!(x, |t| t.sqrt()),
        Unary::Neg => map_f!(x, |t| t.neg()),
        Unary::Abs => map_f!(x, |t| t.abs()),
        Unary::Reciprocal => map_f!(x, |t| t.recip()),
        Unary::HardSwish => map_f!(x, |t| activation::hard_swish(t)),
        Unary::Gelu => map_f!(x, |t| crate::kernels::activation(
            t,
            crate::kernels::Pointwise::Gelu
        )),
        Unary::GeluTanh => map_f!(x, |t| activation::gelu_approximate(t)),
        Unary::Softplus => map_f!(x, |t| activation::softplus(t, 1.0)),
        Unary::Floor => map_f!(x, |t| t.floor()),
        Unary::Ceil => map_f!(x, |t| t.ceil()),
        Unary::Identity => x,
    }
}

fn host_binary(b: Binary, x: &HostTensor, y: &HostTensor) -> R<HostTensor> {
    let shape = broadcast(&x.shape, &y.shape)?;
    let n: usize = shape.iter().product();
    let index = |t: &HostTensor, flat: usize| -> usize {
        // Position in `t` of the broadcast element `flat`.
        let off = shape.len() - t.shape.len();
        let mut rem = flat;
        let mut idx = 0;
        let mut stride = 1;
        for d in (0..shape.len()).rev() {
            let c = rem % shape[d];
            rem /= shape[d];
            if d >= off {
                let td = t.shape[d - off];
                if td != 1 {
                    idx += c * stride;
                }
                stride *= td;
            }
        }
        idx
    };
    let data = match (&x.data, &y.data) {
        (HostData::Int(a), HostData::Int(c)) => HostData::Int(
            (0..n)
                .map(|i| {
                    let (p, q) = (a[index(x, i)], c[index(y, i)]);
                    match b {
                        Binary::Add => p.wrapping_add(q),
                        Binary::Sub => p.wrapping_sub(q),
                        Binary::Mul => p.wrapping_mul(q),
                        Binary::Div => p.checked_div(q).unwrap_or(0),
                        Binary::Pow => p.wrapping_pow(q.clamp(0, 63) as u32),
                        Binary::Mod => p
                            .checked_rem_euclid(q)
                            .map_or(0, |r| if r != 0 && q < 0 { r + q } else { r }),
                    }
                })
                .collect(),
        ),
        _ => {
            let (a, c) = (x.as_floats(), y.as_floats());
            HostData::Float(
                (0..n)
                    .map(|i| {
                        let (p, q) = (a[index(x, i)], c[index(y, i)]);
                        match b {
                            Binary::Add => p + q,
                            Binary::Sub => p - q,
                            Binary::Mul => p * q,
                            Binary::Div => p / q,
                            Binary::Pow => p.powf(q),
                            Binary::Mod => {
                                let r = p % q;
                                if r != 0.0 && (r < 0.0) != (q < 0.0) {
                                    r + q
                                } else {
                                    r
                                }
                            }
                        }
                    })
                    .collect(),
            )
        }
    };
    Ok(HostTensor { shape, data })
}

/// `x + y`, broadcast.
pub(crate) fn add_f(x: F, y: F) -> R<F> {
    float_binary(Binary::Add, x, y)
}

fn float_binary(b: Binary, x: F, y: F) -> R<F> {
    broadcast(&x.shape(), &y.shape())?;
    Ok(match b {
        Binary::Add => zip_f!(x, y, |p, q| p.add(q)),
        Binary::Sub => zip_f!(x, y, |p, q| p.sub(q)),
        Binary::Mul => zip_f!(x, y, |p, q| p.mul(q)),
        Binary::Div => zip_f!(x, y, |p, q| p.div(q)),
        Binary::Mod => {
            return Err("Mod of computed tensors is not supported (only of shapes)".into());
        }
        Binary::Pow => {
            // A constant exponent (x², x^0.5) is the common case and far cheaper.
            let ys = y.shape();
            if ys.iter().product::<usize>() == 1 && ys.len() <= x.rank() {
                let e = y.to_vec()[0];
                if e == 2.0 {
                    map_f!(x, |t| t.clone().mul(t))
                } else {
                    map_f!(x, |t| t.powf_scalar(e))
                }
            } else {
                zip_f!(x, y, |p, q| p.powf(q))
            }
        }
    })
}

/// Output size of a sliding window over `size` (pads already resolved).
fn window_out(
    size: usize,
    k: usize,
    s: usize,
    d: usize,
    pads: (usize, usize),
    ceil: bool,
) -> R<usize> {
    let span = (k - 1) * d + 1;
    let padded = size + pads.0 + pads.1;
    if padded < span {
        return Err(format!(
            "a {k}-wide window (dilation {d}) does not fit an input of {size} padded by {pads:?}"
        ));
    }
    let num = padded - span;
    Ok(if ceil {
        num.div_ceil(s) + 1
    } else {
        num / s + 1
    })
}

/// The pads `auto_pad` asks for on `size` inputs.
fn resolve_pads(w: &Window, size: [usize; 2], kernel: [usize; 2]) -> [(usize, usize); 2] {
    match w.auto_pad {
        AutoPad::NotSet => w.pads,
        AutoPad::Valid => [(0, 0); 2],
        AutoPad::SameUpper | AutoPad::SameLower => std::array::from_fn(|i| {
            let out = size[i].div_ceil(w.strides[i]);
            let span = (kernel[i] - 1) * w.dilations[i] + 1;
            let total = ((out - 1) * w.strides[i] + span).saturating_sub(size[i]);
            let (small, big) = (total / 2, total - total / 2);
            if w.auto_pad == AutoPad::SameUpper {
                (small, big)
            } else {
                (big, small)
            }
        }),
    }
}

/// An image-like input as rank 4 (a 1-D signal `[n, c, l]` as `[n, c, 1, l]`).
fn as_image(x: F, what: &str) -> R<(Tensor<4>, bool)> {
    match x {
        F::R4(t) => Ok((t, false)),
        F::R3(t) => {
            let [n, c, l] = t.dims();
            Ok((t.reshape([n, c, 1, l]), true))
        }
        other => Err(format!(
            "{what} of a rank-{} input (2-D images expected)",
            other.rank()
        )),
    }
}

fn from_image(t: Tensor<4>, was_1d: bool) -> F {
    if was_1d {
        let [n, c, _, l] = t.dims();
        F::R3(t.reshape([n, c, l]))
    } else {
        F::R4(t)
    }
}

/// A convolution (window, group, and its weight transformed for Winograd's kernel where it
/// has one), then `epilogue` (in the same pass where the kernels have it).
fn conv(
    x: F,
    w: F,
    b: Option<F>,
    (win, group, winograd): (&Window, usize, Option<&crate::kernels::WinogradWeight>),
    epilogue: crate::kernels::Epilogue,
) -> R<F> {
    let (x, one_d) = as_image(x, "Conv")?;
    let w = match w {
        F::R4(t) => t,
        F::R3(t) if one_d => {
            let [o, i, k] = t.dims();
            t.reshape([o, i, 1, k])
        }
        other => return Err(format!("a rank-{} convolution weight", other.rank())),
    };
    let [_, c, h, wd] = x.dims();
    let [o, ci, kh, kw] = w.dims();
    if o % group != 0 || ci * group != c {
        return Err(format!(
            "weight {:?} with group {group} does not fit {c} input channels",
            w.dims()
        ));
    }
    if let Some(k) = win.kernel {
        let k = if one_d { [1, k[1].max(k[0])] } else { k };
        if k != [kh, kw] {
            return Err(format!("kernel_shape {k:?} but the weight is {kh}x{kw}"));
        }
    }
    let mut win = win.clone();
    if one_d {
        win.strides = [1, win.strides[0]];
        win.dilations = [1, win.dilations[0]];
        win.pads = [(0, 0), (win.pads[0].0, win.pads[1].0)];
    }
    let pads = resolve_pads(&win, [h, wd], [kh, kw]);
    for i in 0..2 {
        let size = [h, wd][i];
        let out = window_out(
            size,
            [kh, kw][i],
            win.strides[i],
            win.dilations[i],
            pads[i],
            false,
        )?;
        check_numel(&[x.dims()[0], o, out, out])?;
    }
    let bias = match b {
        None => None,
        Some(F::R1(t)) if t.dims()[0] == o => Some(t),
        Some(other) => return Err(format!("bias of shape {:?} for {o} outputs", other.shape())),
    };
    let opts = ConvOptions {
        stride: win.strides,
        padding: pads,
        dilation: win.dilations,
        groups: group,
    };
    let y = match winograd {
        Some(u) => crate::kernels::conv2d_fused_winograd(x, w, u, bias, None, opts, epilogue),
        None => crate::kernels::conv2d_fused(x, w, bias, opts, epilogue),
    };
    Ok(from_image(y, one_d))
}

fn pool(x: F, win: &Window, ceil: bool, avg: Option<bool>) -> R<F> {
    let (x, one_d) = as_image(x, "a pool")?;
    let mut win = win.clone();
    let mut k = win.kernel.unwrap_or([1, 1]);
    if one_d {
        k = [1, k[0]];
        win.strides = [1, win.strides[0]];
        win.dilations = [1, win.dilations[0]];
        win.pads = [(0, 0), (win.pads[0].0, win.pads[1].0)];
    }
    let [_, _, h, w] = x.dims();
    let pads = resolve_pads(&win, [h, w], k);
    for i in 0..2 {
        window_out(
            [h, w][i],
            k[i],
            win.strides[i],
            win.dilations[i],
            pads[i],
            ceil,
        )?;
        if pads[i].0.max(pads[i].1) > k[i] {
            return Err(format!(
                "padding {:?} is wider than the kernel {k:?}",
                pads[i]
            ));
        }
    }
    let y = match avg {
        None => crate::kernels::max_pool2d(
            x,
            MaxPoolOptions {
                kernel_size: k,
                stride: win.strides,
                padding: pads,
                dilation: win.dilations,
                ceil_mode: ceil,
            },
        ),
        Some(count_include_pad) => {
            if win.dilations != [1, 1] {
                return Err("a dilated AveragePool is not supported".into());
            }
            avg_pool2d(
                x,
                AvgPoolOptions {
                    kernel_size: k,
                    stride: win.strides,
                    padding: pads,
                    count_include_pad,
                    ceil_mode: ceil,
                },
            )
        }
    };
    Ok(from_image(y, one_d))
}

fn matmul(a: F, b: F) -> R<F> {
    let (sa, sb) = (a.shape(), b.shape());
    if sa.is_empty() || sb.is_empty() {
        return Err("MatMul of a scalar".into());
    }
    // Numpy semantics: a vector is a row (left) or a column (right), dropped afterwards.
    let (a1, b1) = (sa.len() == 1, sb.len() == 1);
    let a = if a1 { a.reshape(&[1, sa[0]]) } else { a };
    let b = if b1 { b.reshape(&[sb[0], 1]) } else { b };
    let (sa, sb) = (a.shape(), b.shape());
    if sa[sa.len() - 1] != sb[sb.len() - 2] {
        return Err(format!("shapes {sa:?} and {sb:?} do not multiply"));
    }
    let batch = broadcast(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
    let mut out = batch;
    out.extend([sa[sa.len() - 2], sb[sb.len() - 1]]);
    check_numel(&out)?;
    let y = zip_f!(a, b, |p, q| p.matmul(q));
    let mut shape = y.shape();
    if a1 {
        shape.remove(shape.len() - 2);
    }
    if b1 {
        shape.pop();
    }
    Ok(if a1 || b1 { y.reshape(&shape) } else { y })
}

pub(crate) fn transpose_f(x: F, perm: &[usize]) -> F {
    fn arr<const N: usize>(p: &[usize]) -> [usize; N] {
        std::array::from_fn(|i| p[i])
    }
    match x {
        F::R0(t) => F::R0(t),
        F::R1(t) => F::R1(t),
        F::R2(t) => F::R2(t.permute(arr::<2>(perm))),
        F::R3(t) => F::R3(t.permute(arr::<3>(perm))),
        F::R4(t) => F::R4(t.permute(arr::<4>(perm))),
        F::R5(t) => F::R5(t.permute(arr::<5>(perm))),
    }
}

fn permutation(perm: Option<&[i64]>, rank: usize) -> R<Vec<usize>> {
    let p: Vec<usize> = match perm {
        None => (0..rank).rev().collect(),
        Some(p) => p.iter().map(|&a| axis(a, rank)).collect::<R<_>>()?,
    };
    let mut seen = vec![false; rank];
    if p.len() != rank || p.iter().any(|&a| std::mem::replace(&mut seen[a], true)) {
        return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
    }
    Ok(p)
}

/// Host-side gather along `axis` of `data` by `idx` (ints), numpy `take`.
fn host_gather(data: &HostTensor, idx: &HostTensor, ax: usize) -> R<HostTensor> {
    let d = &data.shape;
    if d.is_empty() {
        return Err("Gather from a scalar".into());
    }
    let outer: usize = d[..ax].iter().product();
    let inner: usize = d[ax + 1..].iter().product();
    let len = d[ax];
    let ids = normalised_indices(&idx.as_ints(), len)?;
    let mut shape = d[..ax].to_vec();
    shape.extend(&idx.shape);
    shape.extend(&d[ax + 1..]);
    check_numel(&shape)?;
    let order = |push: &mut dyn FnMut(usize)| {
        for o in 0..outer {
            for &i in &ids {
                for k in 0..inner {
                    push((o * len + i) * inner + k);
                }
            }
        }
    };
    let data = match &data.data {
        HostData::Int(v) => {
            let mut out = Vec::new();
            order(&mut |j| out.push(v[j]));
            HostData::Int(out)
        }
        HostData::Float(v) => {
            let mut out = Vec::new();
            order(&mut |j| out.push(v[j]));
            HostData::Float(out)
        }
    };
    Ok(HostTensor { shape, data })
}

fn normalised_indices(ids: &[i64], len: usize) -> R<Vec<usize>> {
    ids.iter()
        .map(|&i| {
            let j = if i < 0 { i + len as i64 } else { i };
            if (0..len as i64).contains(&j) {
                Ok(j as usize)
            } else {
                Err(format!(
                    "index {i} is out of range for a dimension of {len}"
                ))
            }
        })
        .collect()
}

/// ONNX Slice bounds for one axis, clamped as the spec says; positive steps only.
/// One axis of a slice: `start..end` by a positive `step`, reversed after when `flip`.
type Range1 = (usize, usize, usize, bool);

/// ONNX Slice's bounds on an axis of length `dim`. A negative step (torch exports `F.pad`'s
/// reversed pads that way) walks back from `start`: the same elements taken forward from
/// the last one reached, then flipped.
fn slice_range(start: i64, end: i64, step: i64, dim: usize) -> R<Range1> {
    let d = dim as i64;
    let wrap = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    if step > 0 {
        let (s, e) = (
            wrap(start).clamp(0, d) as usize,
            wrap(end).clamp(0, d) as usize,
        );
        return Ok((s, e.max(s), step as usize, false));
    }
    if step == 0 {
        return Err("Slice step 0".into());
    }
    let k = step.unsigned_abs() as i64;
    let (first, last) = (wrap(start).clamp(-1, d - 1), wrap(end).clamp(-1, d - 1));
    if first <= last {
        return Ok((0, 0, 1, false));
    }
    let count = (first - last + k - 1) / k;
    let lo = (first - (count - 1) * k) as usize;
    Ok((lo, first as usize + 1, k as usize, true))
}

fn host_slice(x: &HostTensor, ranges: &[Range1]) -> HostTensor {
    // Only 1-D host slices occur in shape arithmetic; higher ranks go row by row.
    let shape: Vec<usize> = ranges
        .iter()
        .map(|&(s, e, st, _)| e.saturating_sub(s).div_ceil(st))
        .collect();
    let strides: Vec<usize> = (0..x.shape.len())
        .map(|i| x.shape[i + 1..].iter().product())
        .collect();
    let n: usize = shape.iter().product();
    let src = |flat: usize| {
        let mut rem = flat;
        let mut off = 0;
        for d in (0..shape.len()).rev() {
            let c = rem % shape[d];
            rem /= shape[d];
            let c = if ranges[d].3 { shape[d] - 1 - c } else { c };
            off += (ranges[d].0 + c * ranges[d].2) * strides[d];
        }
        off
    };
    let data = match &x.data {
        HostData::Int(v) => HostData::Int((0..n).map(|i| v[src(i)]).collect()),
        HostData::Float(v) => HostData::Float((0..n).map(|i| v[src(i)]).collect()),
    };
    HostTensor { shape, data }
}

fn reshape_target(input: &[usize], spec: &[i64], allow_zero: bool) -> R<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            0 if !allow_zero => out.push(
                *input
                    .get(i)
                    .ok_or("a 0 in the shape past the input's rank")?,
            ),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            s if s >= 0 => out.push(s as usize),
            _ => return Err(format!("shape {spec:?} is not a valid Reshape target")),
        }
    }
    // The target's dimensions come from the file: multiplied with overflow checked.
    let known = out
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("cannot reshape {input:?} to {spec:?}: its size overflows"))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {spec:?}"));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(format!(
            "cannot reshape {input:?} ({total} values) to {spec:?}"
        ));
    }
    check_numel(&out)?;
    Ok(out)
}

fn reduce(x: F, kind: ReduceKind, axes: &[usize], keep: bool) -> F {
    // A mean over a rank-4 tensor's planes (GlobalAveragePool, ReduceMean over [2, 3]) is
    // global average pooling: one pass through retrain's kernel on the CPU backend.
    if let F::R4(t) = &x
        && kind == ReduceKind::Mean
        && axes == [2, 3]
        && !t.dims().contains(&0)
    {
        let [n, c, _, _] = t.dims();
        let means = F::R4(crate::kernels::channel_means(t.clone()));
        return if keep { means } else { means.reshape(&[n, c]) };
    }
    let mut y = x;
    for &a in axes {
        let s = y.shape();
        if s[a] == 0 {
            // Over an empty set: the reduction's identity (numpy's and ONNX's).
            let mut shape = s;
            shape[a] = 1;
            let v = match kind {
                ReduceKind::Mean => f32::NAN,
                ReduceKind::Sum => 0.0,
                ReduceKind::Max => f32::NEG_INFINITY,
            };
            let n = shape.iter().product();
            let h = HostTensor {
                shape,
                data: HostData::Float(vec![v; n]),
            };
            y = F::from_host(&h, &y.device());
            continue;
        }
        y = match kind {
            ReduceKind::Mean => map_f!(y, |t| t.mean_dim(a)),
            ReduceKind::Sum => map_f!(y, |t| t.sum_dim(a)),
            ReduceKind::Max => map_f!(y, |t| t.max_dim(a)),
        };
    }
    if keep {
        return y;
    }
    let shape: Vec<usize> = y
        .shape()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !axes.contains(i))
        .map(|(_, d)| d)
        .collect();
    y.reshape(&shape)
}

fn axes_of(v: Option<&Value>, attr: &Option<Vec<i64>>, rank: usize) -> R<Option<Vec<usize>>> {
    let raw = match (attr, v) {
        (Some(a), _) => a.clone(),
        (None, Some(v)) => host(v, "axes")?.as_ints(),
        (None, None) => return Ok(None),
    };
    let mut axes = raw.iter().map(|&a| axis(a, rank)).collect::<R<Vec<_>>>()?;
    axes.sort_unstable();
    axes.dedup();
    Ok(Some(axes))
}

fn expand_f(x: F, target: &[usize]) -> R<F> {
    let out = broadcast(&x.shape(), target)?;
    check_numel(&out)?;
    fn arr<const N: usize>(p: &[usize]) -> [usize; N] {
        std::array::from_fn(|i| p[i])
    }
    let x = x.lift(out.len());
    Ok(match x {
        F::R0(t) => F::R0(t),
        F::R1(t) => F::R1(t.expand(arr::<1>(&out))),
        F::R2(t) => F::R2(t.expand(arr::<2>(&out))),
        F::R3(t) => F::R3(t.expand(arr::<3>(&out))),
        F::R4(t) => F::R4(t.expand(arr::<4>(&out))),
        F::R5(t) => F::R5(t.expand(arr::<5>(&out))),
    })
}

fn slice_f(x: F, ranges: &[Range1]) -> F {
    if ranges.iter().any(|&(a, b, _, _)| b <= a) {
        // An empty slice (a start past the end): burn's slice wants at least one element.
        let shape: Vec<usize> = ranges
            .iter()
            .map(|&(a, b, st, _)| b.saturating_sub(a).div_ceil(st))
            .collect();
        let h = HostTensor {
            shape,
            data: HostData::Float(vec![]),
        };
        return F::from_host(&h, &x.device());
    }
    let s: Vec<Slice> = ranges
        .iter()
        .map(|&(a, b, st, _)| Slice::new(a as isize, Some(b as isize), st as isize))
        .collect();
    let mut y = map_f!(x, |t| t.slice(s.as_slice()));
    for (axis, _) in ranges.iter().enumerate().filter(|(_, r)| r.3) {
        y = map_f!(y, |t| t.flip([axis]));
    }
    y
}

fn concat(vals: Vec<Value>, ax: i64, dev: &Device) -> R<Value> {
    let first = vals.first().ok_or("Concat of nothing")?.shape();
    let a = axis(ax, first.len())?;
    for v in &vals {
        let s = v.shape();
        if s.len() != first.len()
            || s.iter()
                .zip(&first)
                .enumerate()
                .any(|(i, (p, q))| i != a && p != q)
        {
            return Err(format!(
                "shapes {first:?} and {s:?} do not concatenate on axis {a}"
            ));
        }
    }
    if vals.iter().all(|v| matches!(v, Value::Host(_))) {
        let hs: Vec<HostTensor> = vals.iter().map(|v| host(v, "")).collect::<R<_>>()?;
        if first.len() != 1 {
            // Shape arithmetic is 1-D; anything else goes to the device.
            let fs: Vec<F> = hs.iter().map(|h| F::from_host(h, dev)).collect();
            return concat_f(fs, a).map(Value::F);
        }
        let len: usize = hs.iter().map(|h| h.shape[0]).sum();
        let data = if hs.iter().all(|h| matches!(h.data, HostData::Int(_))) {
            HostData::Int(hs.iter().flat_map(|h| h.as_ints()).collect())
        } else {
            HostData::Float(hs.iter().flat_map(|h| h.as_floats()).collect())
        };
        return Ok(Value::Host(HostTensor {
            shape: vec![len],
            data,
        }));
    }
    let fs: Vec<F> = vals.iter().map(|v| float(v, dev)).collect();
    concat_f(fs, a).map(Value::F)
}

/// Pads each axis with its first `a` and last `b` values mirrored (`a`, `b` at most the
/// axis' length): burn has no such mode, so slices, flips and a concatenation.
fn pad_symmetric(mut x: F, pairs: &[(usize, usize)]) -> R<F> {
    for (axis, &(a, b)) in pairs.iter().enumerate() {
        if a == 0 && b == 0 {
            continue;
        }
        let shape = x.shape();
        let d = shape[axis];
        let mirrored = |x: &F, from: usize, to: usize| {
            let ranges: Vec<Range1> = shape
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    if i == axis {
                        (from, to, 1, true)
                    } else {
                        (0, n, 1, false)
                    }
                })
                .collect();
            slice_f(x.clone(), &ranges)
        };
        let mut parts = Vec::with_capacity(3);
        if a > 0 {
            parts.push(mirrored(&x, 0, a));
        }
        parts.push(x.clone());
        if b > 0 {
            parts.push(mirrored(&x, d - b, d));
        }
        x = concat_f(parts, axis)?;
    }
    Ok(x)
}

fn concat_f(fs: Vec<F>, a: usize) -> R<F> {
    macro_rules! cat {
        ($variant:ident) => {{
            let ts: Vec<_> = fs
                .into_iter()
                .map(|f| match f {
                    F::$variant(t) => t,
                    _ => unreachable!("same rank checked"),
                })
                .collect();
            F::$variant(Tensor::cat(ts, a))
        }};
    }
    if fs[0].rank() == 0 {
        return Err("Concat of scalars".into());
    }
    let mut shape = fs[0].shape();
    shape[a] = fs.iter().map(|f| f.shape()[a]).sum();
    check_numel(&shape)?;
    Ok(match fs[0].rank() {
        1 => cat!(R1),
        2 => cat!(R2),
        3 => cat!(R3),
        4 => cat!(R4),
        _ => cat!(R5),
    })
}

/// Runs `op` on its inputs (the BatchNorm op is run by the block, which owns the module).
pub fn run(op: &Op, inputs: &[Option<&Value>], ctx: &Ctx) -> R<Vec<Value>> {
    let dev = ctx.device;
    let x0 = || need(inputs, 0);
    let one = |f: F| -> R<Vec<Value>> {
        check_numel(&f.shape())?;
        Ok(vec![Value::F(f)])
    };
    match op {
        Op::Unary(u) => match x0()? {
            Value::Host(h) if *u == Unary::Identity => Ok(vec![Value::Host(h.clone())]),
            Value::Host(h) if matches!(u, Unary::Neg | Unary::Abs) => {
                let data = match &h.data {
                    HostData::Int(v) => HostData::Int(
                        v.iter()
                            .map(|&i| {
                                if *u == Unary::Neg {
                                    i.wrapping_neg()
                                } else {
                                    i.wrapping_abs()
                                }
                            })
                            .collect(),
                    ),
                    HostData::Float(v) => HostData::Float(
                        v.iter()
                            .map(|&f| if *u == Unary::Neg { -f } else { f.abs() })
                            .collect(),
                    ),
                };
                Ok(vec![Value::Host(HostTensor {
                    shape: h.shape.clone(),
                    data,
                })])
            }
            v => one(unary(*u, float(v, dev))),
        },
        Op::Binary(b) => {
            let (x, y) = (x0()?, need(inputs, 1)?);
            if all_host(&[Some(x), Some(y)]) {
                let (Value::Host(p), Value::Host(q)) = (x, y) else {
                    unreachable!()
                };
                let out = host_binary(*b, p, q)?;
                check_numel(&out.shape)?;
                return Ok(vec![Value::Host(out)]);
            }
            one(float_binary(*b, float(x, dev), float(y, dev))?)
        }
        Op::LeakyRelu(a) => one(map_f!(float(x0()?, dev), |t| activation::leaky_relu(t, *a))),
        Op::Elu(a) => {
            let x = float(x0()?, dev);
            // elu(x) = x for x > 0, a·(eˣ − 1) otherwise.
            one(map_f!(x, |t| {
                let neg = t
                    .clone()
                    .clamp_max(0.0)
                    .exp()
                    .sub_scalar(1.0)
                    .mul_scalar(*a);
                t.clamp_min(0.0).add(neg)
            }))
        }
        Op::HardSigmoid(a, b) => one(map_f!(float(x0()?, dev), |t| activation::hard_sigmoid(
            t, *a, *b
        ))),
        Op::Clip { min, max } => {
            let bound = |i: usize, attr: Option<f32>| -> R<Option<f32>> {
                match inputs.get(i).copied().flatten() {
                    Some(v) => Ok(host(v, "a Clip bound")?.as_floats().first().copied()),
                    None => Ok(attr),
                }
            };
            let (lo, hi) = clip_bounds(bound(1, *min)?, bound(2, *max)?);
            one(clip(float(x0()?, dev), lo, hi))
        }
        Op::Softmax {
            axis: ax,
            coerced,
            log,
        } => {
            let x = float(x0()?, dev);
            let shape = x.shape();
            let a = axis(*ax, shape.len())?;
            let sm = |x: F, a: usize| {
                if *log {
                    map_f!(x, |t| activation::log_softmax(t, a))
                } else {
                    map_f!(x, |t| activation::softmax(t, a))
                }
            };
            if *coerced && a + 1 < shape.len() {
                let rows: usize = shape[..a].iter().product();
                let cols: usize = shape[a..].iter().product();
                one(sm(x.reshape(&[rows, cols]), 1).reshape(&shape))
            } else {
                one(sm(x, a))
            }
        }
        Op::Conv { window, group } => {
            let b = inputs.get(2).copied().flatten().map(|v| float(v, dev));
            one(conv(
                float(x0()?, dev),
                float(need(inputs, 1)?, dev),
                b,
                (window, *group, ctx.winograd),
                crate::kernels::Epilogue::Identity,
            )?)
        }
        Op::ConvAct { window, group, act } => {
            let b = inputs.get(2).copied().flatten().map(|v| float(v, dev));
            // An activation the kernels have runs in the convolution's pass.
            let fused = act.epilogue();
            let y = conv(
                float(x0()?, dev),
                float(need(inputs, 1)?, dev),
                b,
                (window, *group, ctx.winograd),
                fused.unwrap_or(crate::kernels::Epilogue::Identity),
            )?;
            one(if fused.is_some() { y } else { act.apply(y) })
        }
        Op::BatchNorm(_) => Err("BatchNormalization runs in its block".into()),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let a = float(x0()?, dev);
            let b = float(need(inputs, 1)?, dev);
            let (F::R2(a), F::R2(b)) = (a, b) else {
                return Err("Gemm of inputs that are not matrices".into());
            };
            let a = if *trans_a { a.transpose() } else { a };
            let b = if *trans_b { b.transpose() } else { b };
            let ([m, k], [k2, n]) = (a.dims(), b.dims());
            if k != k2 {
                return Err(format!("shapes [{m}, {k}] and [{k2}, {n}] do not multiply"));
            }
            let mut y = a.matmul(b);
            if *alpha != 1.0 {
                y = y.mul_scalar(*alpha);
            }
            let mut y = F::R2(y);
            if let Some(c) = inputs.get(2).copied().flatten() {
                let c = float(c, dev);
                let c = if *beta != 1.0 {
                    map_f!(c, |t| t.mul_scalar(*beta))
                } else {
                    c
                };
                if broadcast(&c.shape(), &[m, n])? != vec![m, n] {
                    return Err(format!(
                        "bias of shape {:?} for a [{m}, {n}] result",
                        c.shape()
                    ));
                }
                y = float_binary(Binary::Add, y, c)?;
            }
            one(y)
        }
        Op::MatMul => one(matmul(float(x0()?, dev), float(need(inputs, 1)?, dev))?),
        Op::MaxPool { window, ceil } => one(pool(float(x0()?, dev), window, *ceil, None)?),
        Op::AveragePool {
            window,
            ceil,
            count_include_pad,
        } => one(pool(
            float(x0()?, dev),
            window,
            *ceil,
            Some(*count_include_pad),
        )?),
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let x = float(x0()?, dev);
            if x.rank() < 3 {
                return Err(format!("a global pool of a rank-{} input", x.rank()));
            }
            let axes: Vec<usize> = (2..x.rank()).collect();
            let kind = if *op == Op::GlobalAveragePool {
                ReduceKind::Mean
            } else {
                ReduceKind::Max
            };
            one(reduce(x, kind, &axes, true))
        }
        Op::Flatten(ax) => {
            let x = x0()?;
            let s = x.shape();
            let a = if *ax == s.len() as i64 {
                s.len()
            } else {
                axis(*ax, s.len())?
            };
            let rows: usize = s[..a].iter().product();
            let cols: usize = s[a..].iter().product();
            reshape_value(x, &[rows, cols], dev)
        }
        Op::Reshape { allow_zero } => {
            let x = x0()?;
            let spec = host(need(inputs, 1)?, "the Reshape shape")?.as_ints();
            let target = reshape_target(&x.shape(), &spec, *allow_zero)?;
            reshape_value(x, &target, dev)
        }
        Op::Transpose(perm) => {
            let x = float(x0()?, dev);
            let p = permutation(perm.as_deref(), x.rank())?;
            one(transpose_f(x, &p))
        }
        Op::Squeeze(attr) => {
            let x = x0()?;
            let s = x.shape();
            let axes = axes_of(inputs.get(1).copied().flatten(), attr, s.len())?;
            let keep: Vec<usize> = s
                .iter()
                .enumerate()
                .filter(|&(i, &d)| match &axes {
                    Some(a) => !a.contains(&i),
                    None => d != 1,
                })
                .map(|(_, &d)| d)
                .collect();
            if let Some(a) = &axes
                && a.iter().any(|&i| s[i] != 1)
            {
                return Err(format!(
                    "Squeeze of axes {a:?} of shape {s:?}: not all of size 1"
                ));
            }
            reshape_value(x, &keep, dev)
        }
        Op::Unsqueeze(attr) => {
            let x = x0()?;
            let s = x.shape();
            let raw = match attr {
                Some(a) => a.clone(),
                None => host(need(inputs, 1)?, "the Unsqueeze axes")?.as_ints(),
            };
            let rank = s.len() + raw.len();
            let mut axes = raw.iter().map(|&a| axis(a, rank)).collect::<R<Vec<_>>>()?;
            axes.sort_unstable();
            let mut out = s.clone();
            for a in axes {
                if a > out.len() {
                    return Err(format!("Unsqueeze axis {a} past rank {rank}"));
                }
                out.insert(a, 1);
            }
            reshape_value(x, &out, dev)
        }
        Op::Concat(ax) => {
            let vals: Vec<Value> = inputs.iter().flatten().map(|v| (*v).clone()).collect();
            Ok(vec![concat(vals, *ax, dev)?])
        }
        Op::Split {
            axis: ax,
            sizes,
            outputs,
        } => {
            let x = float(x0()?, dev);
            let s = x.shape();
            let a = axis(*ax, s.len())?;
            let sizes: Vec<usize> = match (sizes, inputs.get(1).copied().flatten()) {
                (Some(v), _) => v.iter().map(|&i| i.max(0) as usize).collect(),
                (None, Some(v)) => host(v, "the split sizes")?
                    .as_ints()
                    .iter()
                    .map(|&i| i.max(0) as usize)
                    .collect(),
                (None, None) => {
                    let n = (*outputs).max(1);
                    let each = s[a].div_ceil(n);
                    (0..n)
                        .map(|i| each.min(s[a].saturating_sub(i * each)))
                        .collect()
                }
            };
            if sizes.iter().sum::<usize>() != s[a] || sizes.len() != *outputs {
                return Err(format!(
                    "split sizes {sizes:?} do not cover {} into {outputs} outputs",
                    s[a]
                ));
            }
            let mut start = 0;
            let mut out = Vec::new();
            for n in sizes {
                let ranges: Vec<_> = s
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| {
                        if i == a {
                            (start, start + n, 1, false)
                        } else {
                            (0, d, 1, false)
                        }
                    })
                    .collect();
                out.push(Value::F(slice_f(x.clone(), &ranges)));
                start += n;
            }
            Ok(out)
        }
        Op::Slice(attrs) => {
            let x = x0()?;
            let s = x.shape();
            let (starts, ends, axes, steps) = match attrs {
                Some([st, en, ax]) => (st.clone(), en.clone(), ax.clone(), vec![1; st.len()]),
                None => {
                    let get = |i: usize| {
                        inputs
                            .get(i)
                            .copied()
                            .flatten()
                            .map(|v| host(v, "a Slice bound").map(|h| h.as_ints()))
                    };
                    let starts = get(1).ok_or("Slice without starts")??;
                    let ends = get(2).ok_or("Slice without ends")??;
                    let axes = get(3)
                        .transpose()?
                        .unwrap_or_else(|| (0..starts.len() as i64).collect());
                    let steps = get(4).transpose()?.unwrap_or_else(|| vec![1; starts.len()]);
                    (starts, ends, axes, steps)
                }
            };
            if starts.len() != ends.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err("Slice starts, ends, axes and steps differ in length".into());
            }
            let mut ranges: Vec<Range1> = s.iter().map(|&d| (0, d, 1, false)).collect();
            for i in 0..starts.len() {
                let a = axis(axes[i], s.len())?;
                ranges[a] = slice_range(starts[i], ends[i], steps[i], s[a])?;
            }
            match x {
                Value::Host(h) => Ok(vec![Value::Host(host_slice(h, &ranges))]),
                Value::F(f) => one(slice_f(f.clone(), &ranges)),
            }
        }
        Op::Pad { mode, pads, value } => {
            let x = float(x0()?, dev);
            let r = x.rank();
            let pads = match (pads, inputs.get(1).copied().flatten()) {
                (_, Some(v)) => host(v, "the pads")?.as_ints(),
                (Some(p), None) => p.clone(),
                (None, None) => return Err("Pad without pads".into()),
            };
            let value = match inputs.get(2).copied().flatten() {
                Some(v) => host(v, "the pad value")?
                    .as_floats()
                    .first()
                    .copied()
                    .unwrap_or(0.0),
                None => *value,
            };
            if inputs.get(3).copied().flatten().is_some() {
                return Err("Pad with axes (opset 18) is not supported".into());
            }
            if pads.len() != 2 * r || pads.iter().any(|&p| !(0..=1 << 16).contains(&p)) {
                return Err(format!(
                    "pads {pads:?}: {} non-negative values expected",
                    2 * r
                ));
            }
            let pairs: Vec<(usize, usize)> = (0..r)
                .map(|i| (pads[i] as usize, pads[i + r] as usize))
                .collect();
            let shape: Vec<usize> = x
                .shape()
                .iter()
                .zip(&pairs)
                .map(|(d, (a, b))| d + a + b)
                .collect();
            check_numel(&shape)?;
            let m = match mode {
                PadKind::Constant => PadMode::Constant(value),
                PadKind::Reflect => {
                    if x.shape()
                        .iter()
                        .zip(&pairs)
                        .any(|(&d, &(a, b))| a.max(b) >= d)
                    {
                        return Err("reflect padding as wide as the input".into());
                    }
                    PadMode::Reflect
                }
                PadKind::Edge => PadMode::Edge,
                PadKind::Symmetric => {
                    if x.shape()
                        .iter()
                        .zip(&pairs)
                        .any(|(&d, &(a, b))| a.max(b) > d)
                    {
                        return Err("symmetric padding wider than the input".into());
                    }
                    return one(pad_symmetric(x, &pairs)?);
                }
            };
            one(map_f!(x, |t| t.pad(pairs.clone(), m)))
        }
        Op::Shape { start, end } => {
            let s = x0()?.shape();
            let r = s.len() as i64;
            let fix = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (a, b) = (fix(*start), fix(end.unwrap_or(r)));
            let dims: Vec<i64> = s[a..b.max(a)].iter().map(|&d| d as i64).collect();
            Ok(vec![Value::Host(HostTensor::ints(vec![dims.len()], dims))])
        }
        Op::Gather(ax) => {
            let (x, idx) = (x0()?, host(need(inputs, 1)?, "the Gather indices")?);
            let s = x.shape();
            let a = axis(*ax, s.len())?;
            match x {
                Value::Host(h) => Ok(vec![Value::Host(host_gather(h, &idx, a)?)]),
                Value::F(f) => {
                    let ids = normalised_indices(&idx.as_ints(), s[a])?;
                    let t = Tensor::<1, Int>::from_data(
                        TensorData::new(
                            ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                            [ids.len()],
                        ),
                        dev,
                    );
                    let y = map_f!(f.clone(), |v| v.select(a, t.clone()));
                    let mut shape = s[..a].to_vec();
                    shape.extend(&idx.shape);
                    shape.extend(&s[a + 1..]);
                    one(y.reshape(&shape))
                }
            }
        }
        Op::ConstantOfShape(value) => {
            let shape: Vec<usize> = host(x0()?, "the shape")?
                .as_ints()
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
                .collect::<R<_>>()?;
            check_numel(&shape)?;
            let n = shape.iter().product();
            let data = match &value.data {
                HostData::Int(v) => HostData::Int(vec![v[0]; n]),
                HostData::Float(v) => HostData::Float(vec![v[0]; n]),
            };
            let h = HostTensor { shape, data };
            if n <= 64 || matches!(h.data, HostData::Int(_)) {
                Ok(vec![Value::Host(h)])
            } else {
                one(F::from_host(&h, dev))
            }
        }
        Op::Expand => {
            let x = x0()?;
            let target: Vec<usize> = host(need(inputs, 1)?, "the Expand shape")?
                .as_ints()
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d}")))
                .collect::<R<_>>()?;
            match x {
                Value::Host(h) => {
                    let shape = broadcast(&h.shape, &target)?;
                    check_numel(&shape)?;
                    let zero = HostTensor {
                        shape: shape.clone(),
                        data: match h.data {
                            HostData::Int(_) => HostData::Int(vec![0; shape.iter().product()]),
                            HostData::Float(_) => {
                                HostData::Float(vec![0.0; shape.iter().product()])
                            }
                        },
                    };
                    Ok(vec![Value::Host(host_binary(Binary::Add, &zero, h)?)])
                }
                Value::F(f) => one(expand_f(f.clone(), &target)?),
            }
        }
        Op::Cast { to_float, half } => match x0()? {
            Value::Host(h) => Ok(vec![Value::Host(HostTensor {
                shape: h.shape.clone(),
                data: match (*to_float, half) {
                    (true, Some(half)) => {
                        HostData::Float(h.as_floats().into_iter().map(|x| half.round(x)).collect())
                    }
                    (true, None) => HostData::Float(h.as_floats()),
                    (false, _) => HostData::Int(h.as_ints()),
                },
            })]),
            Value::F(f) if *to_float => Ok(vec![Value::F(match half {
                Some(half) => half.round_tensor(f.clone()),
                None => f.clone(),
            })]),
            Value::F(f) => Ok(vec![Value::Host(host(
                &Value::F(f.clone()),
                "a Cast to integers",
            )?)])
            .map(|v: Vec<Value>| {
                v.into_iter()
                    .map(|v| match v {
                        Value::Host(h) => Value::Host(HostTensor {
                            shape: h.shape.clone(),
                            data: HostData::Int(h.as_ints()),
                        }),
                        o => o,
                    })
                    .collect()
            }),
        },
        Op::Resize(r) => {
            let x = float(x0()?, dev);
            one(r.run(x, |i| {
                inputs
                    .get(i)
                    .copied()
                    .flatten()
                    .map(|v| host(v, "Resize's roi, scales and sizes"))
                    .transpose()
            })?)
        }
        Op::CastLike => {
            let like = need(inputs, 1)?;
            let to_float = match like {
                Value::F(_) => true,
                Value::Host(h) => matches!(h.data, HostData::Float(_)),
            };
            run(
                &Op::Cast {
                    to_float,
                    half: None,
                },
                &inputs[..1],
                ctx,
            )
        }
        Op::Dropout(p, with_mask) => {
            let x = x0()?;
            // Opset 12 takes the ratio and training_mode as inputs. retrain drops when it
            // trains (an autodiff device), whatever the file says.
            let p = match inputs.get(1).copied().flatten() {
                Some(v) => host(v, "Dropout's ratio")?
                    .as_floats()
                    .first()
                    .map_or(*p, |&r| r as f64),
                None => *p,
            };
            if let Some(t) = inputs.get(2).copied().flatten()
                && host(t, "Dropout's training_mode")?.as_ints().first() == Some(&1)
            {
                return Err(
                    "Dropout with training_mode set in the graph is not supported (retrain \
                     applies dropout itself when it trains)"
                        .into(),
                );
            }
            let (y, mask) = match x {
                Value::F(f) if ctx.training && p > 0.0 && p < 1.0 => {
                    let keep = 1.0 - p;
                    let mask = map_f!(f.clone(), |t| t
                        .random_like(burn::tensor::Distribution::Bernoulli(keep)));
                    let y = float_binary(Binary::Mul, f.clone(), mask.clone())?;
                    (
                        Value::F(map_f!(y, |t| t.mul_scalar(1.0 / keep))),
                        Value::F(mask),
                    )
                }
                v => {
                    let s = v.shape();
                    let n = s.iter().product();
                    (v.clone(), Value::Host(HostTensor::ints(s, vec![1; n])))
                }
            };
            Ok(if *with_mask { vec![y, mask] } else { vec![y] })
        }
        Op::Reduce {
            kind,
            axes,
            keep,
            noop_empty,
        } => {
            let x = float(x0()?, dev);
            let r = x.rank();
            let axes = match axes_of(inputs.get(1).copied().flatten(), axes, r)? {
                Some(a) if !a.is_empty() => a,
                _ if *noop_empty => return one(x),
                _ => (0..r).collect(),
            };
            one(reduce(x, *kind, &axes, *keep))
        }
        Op::LayerNorm { axis: ax, eps } => {
            let x = float(x0()?, dev);
            let s = x.shape();
            let a = axis(*ax, s.len())?;
            let axes: Vec<usize> = (a..s.len()).collect();
            let mean = reduce(x.clone(), ReduceKind::Mean, &axes, true);
            let centred = float_binary(Binary::Sub, x, mean.clone())?;
            let var = reduce(
                map_f!(centred.clone(), |t| t.clone().mul(t)),
                ReduceKind::Mean,
                &axes,
                true,
            );
            let std = map_f!(var, |t| t.add_scalar(*eps).sqrt());
            let inv_std = map_f!(std.clone(), |t| t.recip());
            let mut y = float_binary(Binary::Div, centred, std)?;
            if let Some(sc) = inputs.get(1).copied().flatten() {
                y = float_binary(Binary::Mul, y, float(sc, dev))?;
            }
            if let Some(b) = inputs.get(2).copied().flatten() {
                y = float_binary(Binary::Add, y, float(b, dev))?;
            }
            if y.shape() != s {
                return Err(format!("scale or bias does not fit the input {s:?}"));
            }
            // The optional Mean and InvStdDev outputs, kept-dims shaped.
            Ok(vec![Value::F(y), Value::F(mean), Value::F(inv_std)])
        }
        Op::Equal => {
            let (a, b) = (
                host(x0()?, "Equal's input")?,
                host(need(inputs, 1)?, "Equal's input")?,
            );
            let d = host_binary(Binary::Sub, &a, &b)?;
            let data = d.as_floats().iter().map(|&v| (v == 0.0) as i64).collect();
            Ok(vec![Value::Host(HostTensor::ints(d.shape, data))])
        }
        Op::Where => {
            let c = host(x0()?, "Where's condition")?;
            let (x, y) = (
                host(need(inputs, 1)?, "Where's input")?,
                host(need(inputs, 2)?, "Where's input")?,
            );
            // where(c, x, y) = y + c·(x − y), on host values.
            let diff = host_binary(Binary::Sub, &x, &y)?;
            let picked = host_binary(Binary::Mul, &c, &diff)?;
            Ok(vec![Value::Host(host_binary(Binary::Add, &y, &picked)?)])
        }
        Op::Range => {
            let get = |i| {
                host(need(inputs, i)?, "a Range bound")
                    .map(|h| h.as_floats().first().copied().unwrap_or(0.0))
            };
            let (start, limit, delta) = (get(0)?, get(1)?, get(2)?);
            if delta == 0.0 {
                return Err("Range with a zero step".into());
            }
            let n = ((limit - start) / delta).ceil().max(0.0) as usize;
            check_numel(&[n])?;
            let ints = matches!(host(x0()?, "")?.data, HostData::Int(_));
            let vals: Vec<f32> = (0..n).map(|i| start + i as f32 * delta).collect();
            Ok(vec![Value::Host(HostTensor {
                shape: vec![n],
                data: if ints {
                    HostData::Int(vals.iter().map(|&v| v as i64).collect())
                } else {
                    HostData::Float(vals)
                },
            })])
        }
        Op::BatchShape { base, per_batch } => {
            let n = ctx.batch as i64;
            let data = base
                .as_ints()
                .iter()
                .zip(per_batch)
                .map(|(&b, &k)| b.saturating_add(k.saturating_mul(n)))
                .collect();
            Ok(vec![Value::Host(HostTensor::ints(
                base.shape.clone(),
                data,
            ))])
        }
    }
}

fn reshape_value(x: &Value, dims: &[usize], _dev: &Device) -> R<Vec<Value>> {
    check_numel(dims)?;
    Ok(vec![match x {
        Value::Host(h) => Value::Host(HostTensor {
            shape: dims.to_vec(),
            data: h.data.clone(),
        }),
        Value::F(f) => Value::F(f.clone().reshape(dims)),
    }])
}

/// The value an op consumes as a float tensor, whatever it was stored as.
pub fn as_float(v: &Value, dev: &Device) -> F {
    float(v, dev)
}

#[cfg(test)]
mod tests {
    use super::{F, Half};
    use burn::prelude::*;

    /// A Cast to float16 or bfloat16 rounds each value to the type (ties to even, overflow
    /// to infinity) and, when training, passes the gradient through unchanged.
    #[test]
    fn half_casts_round_and_pass_the_gradient_through() {
        let values = vec![0.819_105_45f32, 1.0 + 1.0 / 2048.0, 70000.0, -3.0];
        assert_eq!(
            values
                .iter()
                .map(|&x| Half::Bf16.round(x))
                .collect::<Vec<_>>(),
            vec![0.820_312_5, 1.0, 70144.0, -3.0]
        );
        assert_eq!(
            values
                .iter()
                .map(|&x| Half::F16.round(x))
                .collect::<Vec<_>>(),
            vec![0.819_335_94, 1.0, f32::INFINITY, -3.0]
        );
        let device = Device::default().autodiff();
        let x = Tensor::<1>::from_data(TensorData::new(values, [4]), &device).require_grad();
        let F::R1(y) = Half::Bf16.round_tensor(F::R1(x.clone() * 2.0)) else {
            panic!("rank 1")
        };
        assert_eq!(y.to_data().try_to_vec::<f32>().unwrap()[0], 1.640_625);
        let grads = (y * 3.0).sum().backward();
        let g = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(g, vec![6.0; 4]);
    }

    /// Symmetric padding (TFLite's MIRROR_PAD SYMMETRIC) equals numpy's `symmetric`, up to
    /// a pad as wide as the axis; a wider one is refused.
    #[test]
    fn symmetric_padding_mirrors_the_edge_too() {
        let device = Device::default();
        let ctx = super::Ctx {
            device: &device,
            training: false,
            batch: 2,
            winograd: None,
        };
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]),
            &device,
        );
        let pad = |pads: Vec<i64>| {
            let op = super::Op::Pad {
                mode: super::PadKind::Symmetric,
                pads: Some(pads),
                value: 0.0,
            };
            let x = super::Value::F(F::R2(x.clone()));
            super::run(&op, &[Some(&x)], &ctx).map(|mut v| match v.remove(0) {
                super::Value::F(F::R2(t)) => (t.dims(), t.into_data().try_to_vec::<f32>().unwrap()),
                _ => panic!("a rank-2 float"),
            })
        };
        // np.pad([[1, 2, 3], [4, 5, 6]], ((2, 1), (1, 3)), 'symmetric')
        let want = [
            4, 4, 5, 6, 6, 5, 4, 1, 1, 2, 3, 3, 2, 1, 1, 1, 2, 3, 3, 2, 1, 4, 4, 5, 6, 6, 5, 4, 4,
            4, 5, 6, 6, 5, 4,
        ];
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        assert_eq!(pad(vec![2, 1, 1, 3]).unwrap(), ([5, 7], want));
        let e = pad(vec![3, 0, 0, 0]).unwrap_err();
        assert!(e.contains("wider than the input"), "{e}");
    }

    /// Found by fuzzing (onnx target): a Reshape whose target dimensions multiply past
    /// usize overflowed in the product (a panic with overflow checks, a wrapped count
    /// without). 7 × 7905747460161236407 wraps to exactly 1, so without the bound the
    /// inferred dimension came out as the whole input and only a later check saw it.
    #[test]
    fn reshape_targets_that_overflow_are_refused() {
        let e =
            super::reshape_target(&[6], &[-1, 7, 7_905_747_460_161_236_407], false).unwrap_err();
        assert!(e.starts_with("cannot reshape [6]"), "{e}");
        assert!(super::reshape_target(&[17, 32], &[17, 1 << 56, 16], false).is_err());
        assert_eq!(
            super::reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
    }
}
