//! A TFLite model as a [`crate::graph::Graph`]: its operators, in the file's order,
//! translated to the runtime's (ONNX-named) ops at opset 13.
//!
//! Layout: TFLite computes in NHWC; retrain's images and runtime are NCHW. Every rank-4
//! activation is held in NCHW: the axes an op names (CONCATENATION, MEAN, PAD, MIRROR_PAD,
//! SOFTMAX) are mapped, and constants that broadcast against an NHWC value are permuted
//! alike. An op that depends on the element order (RESHAPE, SQUEEZE, a FULLY_CONNECTED on
//! more than two dimensions, flattening or keeping them) reads the NHWC order through a
//! Transpose, left out where the spatial size is 1×1 (both orders are then one).
//!
//! Numbers: weights are dequantised (see the parent module) and activations computed in
//! f32, so QUANTIZE and DEQUANTIZE of activations are identities, and a quantised image
//! input's scale and zero point become the model's pixel scaling; a float input's is the
//! normalisation the file's metadata gives, if any (see `metadata`).
//!
//! A 1×1 CONV_2D on a 1×1 map whose output is only reshaped to a vector (TF1/slim and Keras
//! MobileNet heads) is the classifier: it becomes a Gemm, like a FULLY_CONNECTED head.

use std::collections::{BTreeMap, BTreeSet};

use super::{AddOptions, DivOptions, MulOptions, SubOptions};
use super::{
    CONV_2D, ConcatenationOptions, Conv2DOptions, DEPTHWISE_CONV_2D, DEQUANTIZE,
    DepthwiseConv2DOptions, FULLY_CONNECTED, FullyConnectedOptions, Graph, Layer, LeakyReluOptions,
    MirrorPadOptions, Pool2DOptions, ReducerOptions, SoftmaxOptions, corrupt,
};
use crate::graph::build::{IrBuilder, unique};
use crate::graph::{Attr, Graph as Ir, InputScaling, ValueInfo};
use crate::weights::{WeightTensor, WeightsError};

const ADD: i32 = 0;
const AVERAGE_POOL_2D: i32 = 1;
const CONCATENATION: i32 = 2;
const LOGISTIC: i32 = 14;
const MAX_POOL_2D: i32 = 17;
const MUL: i32 = 18;
const RELU: i32 = 19;
const RELU_N1_TO_1: i32 = 20;
const RELU6: i32 = 21;
const RESHAPE: i32 = 22;
const SOFTMAX: i32 = 25;
const TANH: i32 = 28;
const PAD: i32 = 34;
const MEAN: i32 = 40;
const SUB: i32 = 41;
const DIV: i32 = 42;
const SQUEEZE: i32 = 43;
const PADV2: i32 = 60;
const EXPAND_DIMS: i32 = 70;
const LEAKY_RELU: i32 = 98;
const MIRROR_PAD: i32 = 100;
const QUANTIZE: i32 = 114;
const HARD_SWISH: i32 = 117;

/// The opset whose signatures the translated nodes follow.
const OPSET: i64 = 13;

/// NHWC axis → NCHW axis.
const TO_NCHW_AXIS: [usize; 4] = [0, 2, 3, 1];

/// The builtin operator's name, for messages.
fn op_name(code: i32) -> String {
    let known = [
        (ADD, "ADD"),
        (AVERAGE_POOL_2D, "AVERAGE_POOL_2D"),
        (CONCATENATION, "CONCATENATION"),
        (CONV_2D, "CONV_2D"),
        (DEPTHWISE_CONV_2D, "DEPTHWISE_CONV_2D"),
        (5, "DEPTH_TO_SPACE"),
        (DEQUANTIZE, "DEQUANTIZE"),
        (FULLY_CONNECTED, "FULLY_CONNECTED"),
        (11, "L2_NORMALIZATION"),
        (LOGISTIC, "LOGISTIC"),
        (MAX_POOL_2D, "MAX_POOL_2D"),
        (MUL, "MUL"),
        (RELU, "RELU"),
        (RELU_N1_TO_1, "RELU_N1_TO_1"),
        (RELU6, "RELU6"),
        (RESHAPE, "RESHAPE"),
        (23, "RESIZE_BILINEAR"),
        (SOFTMAX, "SOFTMAX"),
        (TANH, "TANH"),
        (32, "CUSTOM"),
        (PAD, "PAD"),
        (36, "GATHER"),
        (39, "TRANSPOSE"),
        (MEAN, "MEAN"),
        (SUB, "SUB"),
        (DIV, "DIV"),
        (SQUEEZE, "SQUEEZE"),
        (45, "STRIDED_SLICE"),
        (47, "EXP"),
        (49, "SPLIT"),
        (53, "CAST"),
        (54, "PRELU"),
        (55, "MAXIMUM"),
        (57, "MINIMUM"),
        (PADV2, "PADV2"),
        (65, "SLICE"),
        (67, "TRANSPOSE_CONV"),
        (EXPAND_DIMS, "EXPAND_DIMS"),
        (82, "REDUCE_MAX"),
        (83, "PACK"),
        (97, "RESIZE_NEAREST_NEIGHBOR"),
        (LEAKY_RELU, "LEAKY_RELU"),
        (MIRROR_PAD, "MIRROR_PAD"),
        (111, "ELU"),
        (QUANTIZE, "QUANTIZE"),
        (HARD_SWISH, "HARD_SWISH"),
        (126, "BATCH_MATMUL"),
        (150, "GELU"),
    ];
    known.iter().find(|(c, _)| *c == code).map_or_else(
        || format!("builtin operator {code}"),
        |(_, n)| (*n).to_owned(),
    )
}

/// An IR value standing for a TFLite tensor; `nchw` when it holds the NCHW transpose of
/// the tensor's NHWC shape.
#[derive(Debug, Clone)]
struct Val {
    name: String,
    nchw: bool,
}

/// The scope the converter names an operator's output after (`model/block_2_add/add` →
/// `block_2_add`), if it names one.
fn output_scope(name: &str) -> Option<String> {
    let first = name.split(';').next()?;
    let segments: Vec<&str> = first.split('/').collect();
    (segments.len() >= 2)
        .then(|| segments[segments.len() - 2].to_owned())
        .filter(|s| !s.is_empty())
}

/// Names for the weighted layers when the converter's scopes do not tell them apart (TF1
/// graphs name every depthwise kernel `depthwise`): the scope, made unique.
pub(super) fn node_names(g: &Graph, layers: &[Layer]) -> Vec<String> {
    let mut used = BTreeSet::new();
    layers
        .iter()
        .map(|l| {
            let base = l
                .scope
                .clone()
                .or_else(|| {
                    g.ops[l.op]
                        .2
                        .first()
                        .and_then(|&o| output_scope(&g.name(o)))
                })
                .unwrap_or_else(|| format!("{}_{}", op_name(l.code).to_lowercase(), l.op));
            unique(&mut used, &base)
        })
        .collect()
}

struct Builder<'g, 'a> {
    g: &'g Graph<'a>,
    /// The scope suffix Keras 3 adds to every name (see `common_trace_suffix`).
    suffix: Option<&'g str>,
    /// Operators left out (see [`dead_operators`]).
    dead: BTreeSet<usize>,
    ir: IrBuilder,
    values: BTreeMap<i32, Val>,
}

type R<T> = Result<T, WeightsError>;

/// Translates the operators into the runtime's graph. `layers` and `names` are the weighted
/// operators and the names their weights have in `tensors` (which gains the classifier's
/// weights when a 1×1 convolution is the classifier); `normalisation` is what the file's
/// metadata says of the input's pixels.
pub(super) fn translate(
    g: &Graph,
    layers: &[Layer],
    names: &[String],
    suffix: Option<&str>,
    normalisation: Option<InputScaling>,
    tensors: &mut BTreeMap<String, WeightTensor>,
) -> R<Ir> {
    let mut b = Builder {
        g,
        suffix,
        dead: dead_operators(g),
        // Node names are the layers' (the weights are `<layer>.weight`, apart).
        ir: IrBuilder::avoiding(tensors.keys().cloned()),
        values: BTreeMap::new(),
    };
    let &input = g
        .inputs
        .first()
        .ok_or_else(|| WeightsError::Unsupported("TFLite: the model has no input".into()))?;
    let input_info = b.input(input)?;
    let extra_inputs = g.inputs[1..]
        .iter()
        .map(|&t| {
            Ok(ValueInfo {
                name: g.name(t),
                dims: b.shape(t)?.into_iter().map(Some).collect(),
            })
        })
        .collect::<R<Vec<_>>>()?;
    let by_op: BTreeMap<usize, (&Layer, &str)> = layers
        .iter()
        .zip(names)
        .map(|(l, n)| (l.op, (l, n.as_str())))
        .collect();
    let mut skip = b.dead.clone();
    for k in 0..g.ops.len() {
        if skip.contains(&k) {
            continue;
        }
        if let Some(next) = b.operator(k, by_op.get(&k).copied(), tensors)? {
            skip.insert(next);
        }
    }
    let &out = g
        .outputs
        .first()
        .ok_or_else(|| WeightsError::Unsupported("TFLite: the model has no output".into()))?;
    let output_name = b.plain(out, None)?;
    let output = ValueInfo {
        name: output_name,
        dims: b.shape(out)?.into_iter().map(Some).collect(),
    };
    let mut ir = Ir {
        format: "tflite".into(),
        producer: g.description.clone(),
        opset: OPSET,
        input: input_info,
        extra_inputs,
        output,
        nodes: b.ir.nodes,
        params: b.ir.params,
        constants: b.ir.constants,
        input_scaling: input_scaling(g, input, normalisation),
        weights_in_constants: vec![],
    };
    crate::weights::onnx::canonical_classifier(&mut ir, tensors);
    Ok(ir)
}

/// A float input's scaling is the metadata's normalisation, where the file has one. A
/// quantised image input's scale and zero point are its pixel scaling (its metadata gives
/// the float model's normalisation, which the quantisation already holds): a uint8 input is
/// the pixel value; an int8 one is the pixel minus 128 (TFLite's convention for int8
/// images). Either is `(q − zero_point) · scale` in the float network.
fn input_scaling(
    g: &Graph,
    input: i32,
    normalisation: Option<InputScaling>,
) -> Option<InputScaling> {
    let t = g.tensor(input).ok()?;
    let shift = match t.kind().unwrap_or(0) {
        0 => return normalisation,
        3 => 0.0,
        9 => 128.0,
        _ => return None,
    };
    let q = t.quantization()?;
    let scale = q.scale()?.iter().next()?;
    let zero = q.zero_point().and_then(|z| z.iter().next()).unwrap_or(0) as f64;
    (scale > 0.0 && scale.is_finite()).then(|| InputScaling {
        mean: [(zero + shift) / 255.0; 3],
        std: [1.0 / (f64::from(scale) * 255.0); 3],
        bgr: false,
    })
}

impl Builder<'_, '_> {
    fn shape(&self, t: i32) -> R<Vec<usize>> {
        let def = self.g.tensor(t)?;
        Ok(def
            .shape()
            .map(|s| s.iter().map(|d| usize::try_from(d).unwrap_or(1)).collect())
            .unwrap_or_default())
    }

    /// The graph's image input: an NHWC tensor, declared in NCHW with a free batch.
    fn input(&mut self, t: i32) -> R<ValueInfo> {
        let shape = self.shape(t)?;
        let name = self.ir.unique(&self.g.name(t));
        let (dims, nchw) = match shape.as_slice() {
            &[_, h, w, c] => (vec![None, Some(c), Some(h), Some(w)], true),
            s => (s.iter().map(|&d| Some(d)).collect(), false),
        };
        self.values.insert(
            t,
            Val {
                name: name.clone(),
                nchw,
            },
        );
        Ok(ValueInfo { name, dims })
    }

    /// Whether the tensor's values are stored in the file (perhaps behind a DEQUANTIZE).
    fn is_stored(&self, t: i32) -> bool {
        let stored = |t: i32| {
            self.g
                .tensor(t)
                .ok()
                .and_then(|d| self.g.buffer_bytes(d).ok())
                .is_some_and(|b| !b.is_empty())
        };
        stored(t)
            || self.g.producers.get(&t).is_some_and(|&k| {
                let (code, inputs, _) = &self.g.ops[k];
                *code == DEQUANTIZE && inputs.len() == 1 && stored(inputs[0])
            })
    }

    /// An integer constant (axes, paddings, shapes), read as stored: no quantisation.
    fn ints(&self, t: i32, what: &str) -> R<Vec<i64>> {
        let def = self.g.tensor(t)?;
        let raw = self.g.buffer_bytes(def)?;
        let v: Vec<i64> = match def.kind().unwrap_or(0) {
            2 => raw
                .chunks_exact(4)
                .map(|b| i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            4 => raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect(),
            k => {
                return Err(corrupt(format!(
                    "the {what} of an operator has tensor type {k}, not an integer"
                )));
            }
        };
        if raw.is_empty() {
            return Err(WeightsError::Unsupported(format!(
                "TFLite: the {what} `{}` is computed in the graph, not stored",
                self.g.name(t)
            )));
        }
        Ok(v)
    }

    fn val(&self, t: i32, k: usize) -> R<Val> {
        self.val_for(t, Some(k))
    }

    /// The value of tensor `t` as read by operator `reader` (`None`: the graph's output).
    fn val_for(&self, t: i32, reader: Option<usize>) -> R<Val> {
        self.values.get(&t).cloned().ok_or_else(|| {
            let who = reader.map_or_else(
                || "the graph's output".to_owned(),
                |k| format!("operator {k}"),
            );
            corrupt(format!(
                "{who} reads tensor {t} ({}), which no earlier operator produces",
                self.g.name(t)
            ))
        })
    }

    /// `op` with a fused activation after it; the activation (or the op, without one) is
    /// the node named `base`.
    fn emit(
        &mut self,
        base: &str,
        op: &str,
        inputs: Vec<String>,
        attrs: Vec<(&str, Attr)>,
        activation: i8,
    ) -> R<String> {
        if activation == 0 {
            return Ok(self.ir.push(base, op, inputs, attrs));
        }
        let x = self
            .ir
            .push(&format!("{base}/{}", op.to_lowercase()), op, inputs, attrs);
        self.activation(base, x, activation)
    }

    fn activation(&mut self, base: &str, x: String, activation: i8) -> R<String> {
        let clip = |lo: f32, hi: f32| vec![("min", Attr::Float(lo)), ("max", Attr::Float(hi))];
        Ok(match activation {
            0 => x,
            1 => self.ir.push(base, "Relu", vec![x], vec![]),
            2 => self.ir.push(base, "Clip", vec![x], clip(-1.0, 1.0)),
            3 => self.ir.push(base, "Clip", vec![x], clip(0.0, 6.0)),
            4 => self.ir.push(base, "Tanh", vec![x], vec![]),
            // TFLite's float kernels clamp to a range that SIGN_BIT does not narrow, so
            // they skip it (FULLY_CONNECTED refuses it): no TFLite result to match.
            5 => {
                return Err(WeightsError::Unsupported(format!(
                    "TFLite: operator {base} has fused activation SIGN_BIT, which TFLite's own \
                     float kernels do not compute"
                )));
            }
            a => {
                return Err(WeightsError::Unsupported(format!(
                    "TFLite: operator {base} has fused activation {a}, which TFLite's schema \
                     does not define"
                )));
            }
        })
    }

    /// The tensor's value in NCHW (a Transpose from NHWC where it is held so).
    fn nchw(&mut self, t: i32, k: usize) -> R<String> {
        let v = self.val(t, k)?;
        if v.nchw || self.shape(t)?.len() != 4 {
            return Ok(v.name);
        }
        Ok(self.view(&v.name, false))
    }

    /// The tensor's value in TFLite's own layout.
    fn plain(&mut self, t: i32, reader: Option<usize>) -> R<String> {
        let v = self.val_for(t, reader)?;
        if !v.nchw {
            return Ok(v.name);
        }
        Ok(self.view(&v.name, true))
    }

    /// The tensor's values in TFLite's element order, for an op that only reads that order
    /// (a reshape): an NCHW value whose spatial size is 1×1 already is in it.
    fn flat(&mut self, t: i32, reader: usize) -> R<String> {
        let v = self.val(t, reader)?;
        match self.shape(t)?.as_slice() {
            &[_, 1, 1, _] => Ok(v.name),
            _ => self.plain(t, Some(reader)),
        }
    }

    fn view(&mut self, name: &str, to_nhwc: bool) -> String {
        self.ir.layout_view(name, to_nhwc)
    }

    /// A stored float tensor as a graph constant; broadcast against an NCHW value, its
    /// shape is taken to rank 4 (leading 1s, as broadcasting does) and permuted alike.
    fn float_constant(&mut self, t: i32, base: &str, for_nchw: bool) -> R<String> {
        let c = self.g.constant(t)?;
        let (data, shape) = if for_nchw && c.shape.len() <= 4 {
            let mut s = vec![1; 4 - c.shape.len()];
            s.extend(&c.shape);
            super::permute(&c.data, &s, &[0, 3, 1, 2])
        } else {
            (c.data, c.shape)
        };
        Ok(self.ir.float_constant(base, shape, data))
    }

    fn param(&mut self, name: &str, tensors: &BTreeMap<String, WeightTensor>) -> R<String> {
        let t = tensors
            .get(name)
            .ok_or_else(|| corrupt(format!("no weight {name}")))?;
        Ok(self.ir.param(name, &t.shape))
    }

    fn out(&mut self, t: i32, name: String, nchw: bool) {
        self.values.insert(t, Val { name, nchw });
    }

    fn base(&self, k: usize, code: i32) -> String {
        self.g.ops[k]
            .2
            .first()
            .and_then(|&o| output_scope(&self.g.name(o)))
            .map(|s| match self.suffix {
                Some(x) if s.len() > x.len() && s.ends_with(x) => s[..s.len() - x.len()].to_owned(),
                _ => s,
            })
            .unwrap_or_else(|| format!("{}_{k}", op_name(code).to_lowercase()))
    }

    /// Translates operator `k`; returns the index of the next operator when this one took
    /// it in (the reshape after a convolution that is the classifier).
    fn operator(
        &mut self,
        k: usize,
        layer: Option<(&Layer, &str)>,
        tensors: &mut BTreeMap<String, WeightTensor>,
    ) -> R<Option<usize>> {
        let g = self.g;
        let (code, inputs, outputs) = &g.ops[k];
        let code = *code;
        let operator = g.operators[k];
        // Operators that only widen stored weights (float16, int8 behind a DEQUANTIZE) are
        // read with the weights.
        if !outputs.is_empty() && outputs.iter().all(|&o| self.is_stored(o)) {
            return Ok(None);
        }
        let &out = outputs
            .first()
            .ok_or_else(|| corrupt(format!("operator {k} has no output")))?;
        let input =
            |i: usize| {
                inputs.get(i).copied().filter(|&t| t >= 0).ok_or_else(|| {
                    corrupt(format!("operator {k} ({}) lacks input {i}", op_name(code)))
                })
            };
        let base = match layer {
            Some((_, name)) => name.to_owned(),
            None => self.base(k, code),
        };
        match code {
            CONV_2D | DEPTHWISE_CONV_2D => {
                let (l, name) = layer.ok_or_else(|| corrupt("a convolution without weights"))?;
                let x_t = input(0)?;
                let xs = self.shape(x_t)?;
                let fs = &l.filter.shape;
                // Both options tables have these fields, under the same names.
                macro_rules! conv_options {
                    ($t:ty) => {
                        match operator.options::<$t>() {
                            Some(o) => (
                                o.padding().unwrap_or(0),
                                [o.stride_h().unwrap_or(1), o.stride_w().unwrap_or(1)],
                                [
                                    o.dilation_h_factor().unwrap_or(1),
                                    o.dilation_w_factor().unwrap_or(1),
                                ],
                                o.fused_activation_function().unwrap_or(0),
                            ),
                            None => (0, [1, 1], [1, 1], 0),
                        }
                    };
                }
                let (padding, strides, dilations, act) = if code == CONV_2D {
                    conv_options!(Conv2DOptions)
                } else {
                    conv_options!(DepthwiseConv2DOptions)
                };
                if strides
                    .iter()
                    .chain(&dilations)
                    .any(|&s| !(1..=1 << 16).contains(&s))
                {
                    return Err(corrupt(format!(
                        "operator {name}: strides {strides:?} and dilations {dilations:?} must be positive"
                    )));
                }
                let (&[_, kh, kw, fin], &[_, _, _, cin]) = (fs.as_slice(), xs.as_slice()) else {
                    return Err(corrupt(format!(
                        "operator {name}: filter {fs:?} on input {xs:?}, rank 4 expected"
                    )));
                };
                let group = if code == DEPTHWISE_CONV_2D {
                    cin
                } else if fin > 0 && cin % fin == 0 {
                    cin / fin
                } else {
                    return Err(corrupt(format!(
                        "operator {name}: a filter of {fin} input channels on {cin} channels"
                    )));
                };
                if code == CONV_2D
                    && let Some(next) = self.classifier_conv(k, l, name, &xs, act, tensors)?
                {
                    return Ok(Some(next));
                }
                let x = self.nchw(x_t, k)?;
                let w = self.param(&format!("{name}.weight"), tensors)?;
                let bias = self.param(&format!("{name}.bias"), tensors)?;
                let attrs = vec![
                    ("kernel_shape", Attr::Ints(vec![kh as i64, kw as i64])),
                    (
                        "strides",
                        Attr::Ints(strides.iter().map(|&s| s as i64).collect()),
                    ),
                    (
                        "dilations",
                        Attr::Ints(dilations.iter().map(|&s| s as i64).collect()),
                    ),
                    ("group", Attr::Int(group as i64)),
                    ("auto_pad", pad_attr(padding)),
                ];
                let y = self.emit(&base, "Conv", vec![x, w, bias], attrs, act)?;
                self.out(out, y, true);
            }
            FULLY_CONNECTED => {
                let (l, name) =
                    layer.ok_or_else(|| corrupt("a fully connected without weights"))?;
                let o = operator.options::<FullyConnectedOptions>();
                let act = o.and_then(|o| o.fused_activation_function()).unwrap_or(0);
                let x_t = input(0)?;
                let xs = self.shape(x_t)?;
                let &[units, din] = l.filter.shape.as_slice() else {
                    return Err(corrupt(format!(
                        "operator {name}: filter {:?}",
                        l.filter.shape
                    )));
                };
                // keep_num_dims: TFLite's kernel still multiplies rows of `din` values, and
                // gives them back in the input's leading dimensions.
                let kept = if xs.len() > 2 && o.and_then(|o| o.keep_num_dims()).unwrap_or(false) {
                    let mut kept = xs.clone();
                    match kept.last_mut() {
                        Some(d) if *d == din => *d = units,
                        _ => {
                            return Err(corrupt(format!(
                                "operator {name}: keep_num_dims on input {xs:?} with a filter \
                                 of {din} inputs"
                            )));
                        }
                    }
                    if self.shape(out)? != kept {
                        return Err(corrupt(format!(
                            "operator {name}: output {:?} for input {xs:?} and {units} units",
                            self.shape(out)?
                        )));
                    }
                    Some(kept)
                } else {
                    None
                };
                let x = if xs.len() == 2 {
                    self.plain(x_t, Some(k))?
                } else {
                    let f = self.flat(x_t, k)?;
                    let shape = self
                        .ir
                        .int_constant(&format!("{name}/shape"), vec![-1, din as i64]);
                    self.ir.push(
                        &format!("{name}/flatten"),
                        "Reshape",
                        vec![f, shape],
                        vec![],
                    )
                };
                let w = self.param(&format!("{name}.weight"), tensors)?;
                let bias = self.param(&format!("{name}.bias"), tensors)?;
                let rows = match kept {
                    Some(_) => format!("{base}/rows"),
                    None => base.clone(),
                };
                let y = self.emit(
                    &rows,
                    "Gemm",
                    vec![x, w, bias],
                    vec![("transB", Attr::Int(1))],
                    act,
                )?;
                let y = match kept {
                    Some(kept) => {
                        // The batch free (-1), as the rows were flattened with it.
                        let target = std::iter::once(-1)
                            .chain(kept[1..].iter().map(|&d| d as i64))
                            .collect();
                        let shape = self.ir.int_constant(&format!("{base}/shape"), target);
                        self.ir.push(&base, "Reshape", vec![y, shape], vec![])
                    }
                    None => y,
                };
                self.out(out, y, false);
            }
            ADD | SUB | MUL | DIV => {
                let (op, act) = match code {
                    ADD => (
                        "Add",
                        operator
                            .options::<AddOptions>()
                            .and_then(|o| o.fused_activation_function()),
                    ),
                    SUB => (
                        "Sub",
                        operator
                            .options::<SubOptions>()
                            .and_then(|o| o.fused_activation_function()),
                    ),
                    MUL => (
                        "Mul",
                        operator
                            .options::<MulOptions>()
                            .and_then(|o| o.fused_activation_function()),
                    ),
                    _ => (
                        "Div",
                        operator
                            .options::<DivOptions>()
                            .and_then(|o| o.fused_activation_function()),
                    ),
                };
                let (a, b) = (input(0)?, input(1)?);
                let as_nchw = self.shape(out)?.len() == 4
                    && [a, b]
                        .iter()
                        .any(|t| self.values.get(t).is_some_and(|v| v.nchw));
                let mut operands = Vec::new();
                for (i, t) in [a, b].into_iter().enumerate() {
                    operands.push(if self.values.contains_key(&t) {
                        if as_nchw {
                            self.nchw(t, k)?
                        } else {
                            self.plain(t, Some(k))?
                        }
                    } else if self.is_stored(t) {
                        self.float_constant(t, &format!("{base}/operand{i}"), as_nchw)?
                    } else {
                        self.val(t, k)?.name
                    });
                }
                let y = self.emit(&base, op, operands, vec![], act.unwrap_or(0))?;
                self.out(out, y, as_nchw);
            }
            LOGISTIC | TANH | RELU | RELU6 | RELU_N1_TO_1 | HARD_SWISH | LEAKY_RELU => {
                let v = self.val(input(0)?, k)?;
                let y = match code {
                    LOGISTIC => self.ir.push(&base, "Sigmoid", vec![v.name], vec![]),
                    TANH => self.ir.push(&base, "Tanh", vec![v.name], vec![]),
                    RELU => self.activation(&base, v.name, 1)?,
                    RELU6 => self.activation(&base, v.name, 3)?,
                    RELU_N1_TO_1 => self.activation(&base, v.name, 2)?,
                    HARD_SWISH => self.ir.push(&base, "HardSwish", vec![v.name], vec![]),
                    _ => {
                        let alpha = operator
                            .options::<LeakyReluOptions>()
                            .and_then(|o| o.alpha())
                            .unwrap_or(0.2);
                        self.ir.push(
                            &base,
                            "LeakyRelu",
                            vec![v.name],
                            vec![("alpha", Attr::Float(alpha))],
                        )
                    }
                };
                self.out(out, y, v.nchw);
            }
            QUANTIZE | DEQUANTIZE => {
                let v = self.val(input(0)?, k)?;
                self.values.insert(out, v);
            }
            AVERAGE_POOL_2D | MAX_POOL_2D => {
                let o = operator
                    .options::<Pool2DOptions>()
                    .ok_or_else(|| corrupt(format!("pooling operator {base} has no options")))?;
                let dims = [
                    o.filter_height().unwrap_or(0),
                    o.filter_width().unwrap_or(0),
                    o.stride_h().unwrap_or(0),
                    o.stride_w().unwrap_or(0),
                ];
                if dims.iter().any(|&d| !(1..=1 << 16).contains(&d)) {
                    return Err(corrupt(format!(
                        "pooling operator {base}: filter and strides {dims:?} must be positive"
                    )));
                }
                let x = self.nchw(input(0)?, k)?;
                let op = if code == MAX_POOL_2D {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                let attrs = vec![
                    (
                        "kernel_shape",
                        Attr::Ints(vec![dims[0] as i64, dims[1] as i64]),
                    ),
                    ("strides", Attr::Ints(vec![dims[2] as i64, dims[3] as i64])),
                    ("auto_pad", pad_attr(o.padding().unwrap_or(0))),
                ];
                let act = o.fused_activation_function().unwrap_or(0);
                let y = self.emit(&base, op, vec![x], attrs, act)?;
                self.out(out, y, true);
            }
            MEAN => {
                let x_t = input(0)?;
                let rank = self.shape(x_t)?.len();
                let keep = operator
                    .options::<ReducerOptions>()
                    .and_then(|o| o.keep_dims())
                    .unwrap_or(false);
                let axes = self
                    .ints(input(1)?, "axes")?
                    .into_iter()
                    .map(|a| normalise_axis(a, rank, &base))
                    .collect::<R<Vec<usize>>>()?;
                let v = self.val(x_t, k)?;
                let mapped: Vec<usize> = axes.iter().map(|&a| TO_NCHW_AXIS[a.min(3)]).collect();
                // Without keepdims the kept axes must come out in NHWC's order.
                let kept_in_order = {
                    let kept: Vec<usize> = (0..4)
                        .filter(|a| !axes.contains(a))
                        .map(|a| TO_NCHW_AXIS[a])
                        .collect();
                    kept.windows(2).all(|w| w[0] < w[1])
                };
                let (x, axes, nchw) = if v.nchw && rank == 4 && (keep || kept_in_order) {
                    (v.name, mapped, keep)
                } else {
                    (self.plain(x_t, Some(k))?, axes, false)
                };
                let attrs = vec![
                    ("axes", Attr::Ints(axes.iter().map(|&a| a as i64).collect())),
                    ("keepdims", Attr::Int(i64::from(keep))),
                ];
                let y = self.ir.push(&base, "ReduceMean", vec![x], attrs);
                self.out(out, y, nchw);
            }
            PAD | PADV2 | MIRROR_PAD => {
                let x_t = input(0)?;
                let rank = self.shape(x_t)?.len();
                let p = self.ints(input(1)?, "paddings")?;
                if p.len() != 2 * rank || p.iter().any(|&v| !(0..=1 << 16).contains(&v)) {
                    return Err(corrupt(format!(
                        "operator {base}: paddings {p:?} for rank {rank}"
                    )));
                }
                let value = match inputs.get(2) {
                    Some(&c) if code == PADV2 && c >= 0 => {
                        self.g.constant(c)?.data.first().copied().unwrap_or(0.0)
                    }
                    _ => 0.0,
                };
                // MirrorPadMode: REFLECT (0, ONNX's reflect), SYMMETRIC (1, the edge value
                // repeated: the runtime's own mode).
                let mode = match code {
                    MIRROR_PAD => match operator
                        .options::<MirrorPadOptions>()
                        .and_then(|o| o.mode())
                        .unwrap_or(0)
                    {
                        0 => Some("reflect"),
                        1 => Some("symmetric"),
                        m => {
                            return Err(corrupt(format!("operator {base}: mirror pad mode {m}")));
                        }
                    },
                    _ => None,
                };
                let v = self.val(x_t, k)?;
                let order: Vec<usize> = if v.nchw && rank == 4 {
                    vec![0, 3, 1, 2]
                } else {
                    (0..rank).collect()
                };
                let mut pads: Vec<i64> = order.iter().map(|&a| p[2 * a]).collect();
                pads.extend(order.iter().map(|&a| p[2 * a + 1]));
                let mut attrs = vec![("pads", Attr::Ints(pads)), ("value", Attr::Float(value))];
                if let Some(mode) = mode {
                    attrs.push(("mode", Attr::String(mode.into())));
                }
                let y = self.ir.push(&base, "Pad", vec![v.name], attrs);
                self.out(out, y, v.nchw && rank == 4);
            }
            CONCATENATION => {
                let o = operator.options::<ConcatenationOptions>();
                let rank = self.shape(out)?.len();
                let axis = normalise_axis(
                    i64::from(o.and_then(|o| o.axis()).unwrap_or(0)),
                    rank,
                    &base,
                )?;
                let act = o.and_then(|o| o.fused_activation_function()).unwrap_or(0);
                let parts: Vec<i32> = inputs.iter().copied().filter(|&t| t >= 0).collect();
                let as_nchw = rank == 4
                    && parts
                        .iter()
                        .any(|t| self.values.get(t).is_some_and(|v| v.nchw));
                let mut names = Vec::new();
                for &t in &parts {
                    names.push(if as_nchw {
                        self.nchw(t, k)?
                    } else {
                        self.plain(t, Some(k))?
                    });
                }
                let axis = if as_nchw { TO_NCHW_AXIS[axis] } else { axis };
                let y = self.emit(
                    &base,
                    "Concat",
                    names,
                    vec![("axis", Attr::Int(axis as i64))],
                    act,
                )?;
                self.out(out, y, as_nchw);
            }
            RESHAPE | SQUEEZE | EXPAND_DIMS => {
                let x_t = input(0)?;
                let y = self.reshape(k, x_t, out, &base)?;
                self.out(out, y, false);
            }
            SOFTMAX => {
                let x_t = input(0)?;
                let v = self.val(x_t, k)?;
                let rank = self.shape(x_t)?.len();
                let beta = operator
                    .options::<SoftmaxOptions>()
                    .and_then(|o| o.beta())
                    .unwrap_or(1.0);
                let mut x = v.name;
                if beta != 1.0 {
                    let c = self
                        .ir
                        .float_constant(&format!("{base}/beta"), vec![], vec![beta]);
                    x = self
                        .ir
                        .push(&format!("{base}/scaled"), "Mul", vec![x, c], vec![]);
                }
                let axis = if v.nchw && rank == 4 { 1 } else { -1 };
                let y = self
                    .ir
                    .push(&base, "Softmax", vec![x], vec![("axis", Attr::Int(axis))]);
                self.out(out, y, v.nchw && rank == 4);
            }
            other => {
                // Refused when the graph is analysed, naming the operator; weights-only use
                // of the file (`--model`) still works.
                let known: Vec<String> = inputs
                    .iter()
                    .filter_map(|t| self.values.get(t).map(|v| v.name.clone()))
                    .collect();
                let y = self
                    .ir
                    .push(&base, &format!("TFLite {}", op_name(other)), known, vec![]);
                self.out(out, y, false);
            }
        }
        Ok(None)
    }

    /// A reshape (RESHAPE, SQUEEZE, EXPAND_DIMS) of `x_t` to `out`'s shape, in TFLite's
    /// element order; the batch is copied from the input (Reshape's 0), so any batch runs.
    fn reshape(&mut self, k: usize, x_t: i32, out: i32, base: &str) -> R<String> {
        let xs = self.shape(x_t)?;
        let os = self.shape(out)?;
        let x = self.flat(x_t, k)?;
        let held = match self.values.get(&x_t) {
            Some(v) if v.nchw && x == v.name => vec![xs[0], xs[3], xs[1], xs[2]],
            _ => xs.clone(),
        };
        if held == os {
            return Ok(x);
        }
        let mut target: Vec<i64> = os.iter().map(|&d| d as i64).collect();
        if let (Some(t0), Some(&x0)) = (target.first_mut(), xs.first())
            && *t0 == x0 as i64
        {
            *t0 = 0;
        }
        let shape = self.ir.int_constant(&format!("{base}/shape"), target);
        Ok(self.ir.push(base, "Reshape", vec![x, shape], vec![]))
    }

    /// A 1×1 convolution on a 1×1 map whose output is only reshaped to a vector by the
    /// next operator: the classifier, as a Gemm into the reshape's output. Returns that
    /// operator's index when it is one.
    fn classifier_conv(
        &mut self,
        k: usize,
        l: &Layer,
        name: &str,
        xs: &[usize],
        act: i8,
        tensors: &mut BTreeMap<String, WeightTensor>,
    ) -> R<Option<usize>> {
        let g = self.g;
        // The cheap checks first: no activation, a 1×1 filter on a 1×1 map.
        if act != 0
            || !matches!(l.filter.shape.as_slice(), &[_, 1, 1, _])
            || !matches!(xs, &[_, 1, 1, _])
        {
            return Ok(None);
        }
        let (_, _, outputs) = &g.ops[k];
        let Some(&y) = outputs.first() else {
            return Ok(None);
        };
        let readers: Vec<usize> = (0..g.ops.len())
            .filter(|j| !self.dead.contains(j) && g.ops[*j].1.contains(&y))
            .collect();
        let &[next] = readers.as_slice() else {
            return Ok(None);
        };
        let is_head = g.ops.get(next).is_some_and(|(code, inputs, outs)| {
            matches!(*code, RESHAPE | SQUEEZE)
                && inputs.first() == Some(&y)
                && outs.len() == 1
                && self.shape(outs[0]).is_ok_and(|s| s.len() == 2)
        }) && !g.outputs.contains(&y);
        if !is_head {
            return Ok(None);
        }
        // The layer's own weight, held as (out, in): the zoo's loaders read a 1×1
        // convolution's weight in either shape (`same_layout`).
        let Some(w) = tensors.get_mut(&format!("{name}.weight")) else {
            return Ok(None);
        };
        w.shape = vec![w.shape[0], w.shape[1]];
        let prefix = name;
        let x_t = g.ops[k].1[0];
        let x = self.flat(x_t, k)?;
        let flat = self.ir.push(
            &format!("{name}/flatten"),
            "Flatten",
            vec![x],
            vec![("axis", Attr::Int(1))],
        );
        let w = self.param(&format!("{prefix}.weight"), tensors)?;
        let b = self.param(&format!("{prefix}.bias"), tensors)?;
        let y = self.ir.push(
            name,
            "Gemm",
            vec![flat, w, b],
            vec![("transB", Attr::Int(1))],
        );
        let reshaped = g.ops[next].2[0];
        self.out(reshaped, y, false);
        Ok(Some(next))
    }
}

/// Operators nothing on the way to the output reads: those that only compute a reshape's
/// target shape at run time (Keras' Reshape: SHAPE, STRIDED_SLICE, PACK), since a reshape
/// here takes its static output shape, batch free.
fn dead_operators(g: &Graph) -> BTreeSet<usize> {
    let mut needed: BTreeSet<i32> = g.outputs.iter().copied().collect();
    let mut dead = BTreeSet::new();
    for (k, (code, inputs, outputs)) in g.ops.iter().enumerate().rev() {
        if !outputs.iter().any(|o| needed.contains(o)) {
            dead.insert(k);
            continue;
        }
        let reads = match *code {
            RESHAPE | SQUEEZE | EXPAND_DIMS => &inputs[..inputs.len().min(1)],
            _ => &inputs[..],
        };
        needed.extend(reads.iter().copied());
    }
    dead
}

fn pad_attr(padding: i8) -> Attr {
    Attr::String(if padding == 1 { "VALID" } else { "SAME_UPPER" }.into())
}

fn normalise_axis(a: i64, rank: usize, op: &str) -> R<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(corrupt(format!("operator {op}: axis {a} for rank {rank}")))
    }
}
