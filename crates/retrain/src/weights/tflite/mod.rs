//! TensorFlow Lite models (`TFL3` flatbuffers), read through the flatbuffers verifier.
//!
//! A TFLite file is a graph, not a list of layer weights: the converter folds each
//! BatchNorm into the convolution before it (its bias) and fuses activations. Weights are
//! the constant inputs of `CONV_2D` (filter OHWI), `DEPTHWISE_CONV_2D` (filter 1×kh×kw×C·m)
//! and `FULLY_CONNECTED` (out×in) operators; they may be stored as int8/uint8 (per-tensor or
//! per-channel scale and zero point), float16 behind a `DEQUANTIZE` operator, or float32.
//! Everything is dequantised to f32 here and laid out in PyTorch's conventions.
//!
//! Names: the converter names a weight after the graph operations it came from, e.g.
//! `mobilenetv2_1.00_224/block_1_expand/convolution` or (folded) `…/expanded_conv_depthwise_
//! relu/Relu6;…/expanded_conv_depthwise_BN/batchnorm/mul_1;…/expanded_conv_depthwise/
//! depthwise`; the scope before the convolution's own operation is the Keras layer. Keras 3
//! traces the model a second time when converting and suffixes every scope alike (`Conv1_1`
//! in `mobilenetv2_…_1`); that common suffix is removed. The folded bias is stored as
//! `<layer>.bias`, and the file is marked `batchnorm_folded`: the zoo's loader turns the
//! missing BatchNorm into an identity. What the converter turns into graph constants instead
//! of weights is listed in [`ABSENT`], to explain a model's missing tensors.

use std::collections::BTreeMap;

use flatbuffers::{
    Follow, ForwardsUOffset, InvalidFlatbuffer, Table, Vector, Verifiable, Verifier,
    VerifierOptions,
};

use super::keras::permute;
use super::{DType, WeightTensor, WeightsError};
use crate::graph::Graph as GraphIr;

mod graph;

/// Declares a flatbuffer table by the fields retrain reads. The verifier and the accessors
/// come from the same list, so a field is only ever read as the type it was verified as.
macro_rules! table {
    ($name:ident { $($field:ident : $ty:ty = $slot:expr),* $(,)? }) => {
        #[derive(Clone, Copy)]
        struct $name<'a>(Table<'a>);

        impl<'a> Follow<'a> for $name<'a> {
            type Inner = $name<'a>;
            unsafe fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
                // Safety: only reached through a verified parent (see `root`).
                $name(unsafe { Table::new(buf, loc) })
            }
        }

        impl<'a> Verifiable for $name<'a> {
            fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
                v.visit_table(pos)?
                    $(.visit_field::<$ty>(stringify!($field), 4 + 2 * $slot, false)?)*
                    .finish();
                Ok(())
            }
        }

        #[allow(dead_code)]
        impl<'a> $name<'a> {
            $(
                fn $field(&self) -> Option<<$ty as Follow<'a>>::Inner> {
                    // Safety: the verifier checked this slot as `$ty` (same declaration).
                    unsafe { self.0.get::<$ty>(4 + 2 * $slot, None) }
                }
            )*
        }
    };
}

type List<'a, T> = ForwardsUOffset<Vector<'a, T>>;
type Tables<'a, T> = ForwardsUOffset<Vector<'a, ForwardsUOffset<T>>>;

// Field slots from tensorflow/compiler/mlir/lite/schema/schema.fbs.
table!(Model {
    operator_codes: Tables<'a, OperatorCode<'a>> = 1,
    subgraphs: Tables<'a, SubGraph<'a>> = 2,
    description: ForwardsUOffset<&'a str> = 3,
    buffers: Tables<'a, Buffer<'a>> = 4,
    metadata: Tables<'a, MetadataEntry<'a>> = 6,
});
table!(MetadataEntry {
    name: ForwardsUOffset<&'a str> = 0,
    buffer: u32 = 1,
});
table!(OperatorCode {
    deprecated_builtin_code: i8 = 0,
    builtin_code: i32 = 3,
});
table!(SubGraph {
    tensors: Tables<'a, TensorDef<'a>> = 0,
    inputs: List<'a, i32> = 1,
    outputs: List<'a, i32> = 2,
    operators: Tables<'a, Operator<'a>> = 3,
});
table!(TensorDef {
    shape: List<'a, i32> = 0,
    kind: i8 = 1,
    buffer: u32 = 2,
    name: ForwardsUOffset<&'a str> = 3,
    quantization: ForwardsUOffset<Quantization<'a>> = 4,
});
table!(Quantization {
    scale: List<'a, f32> = 2,
    zero_point: List<'a, i64> = 3,
    quantized_dimension: i32 = 6,
});
table!(Buffer {
    data: List<'a, u8> = 0,
    offset: u64 = 1,
    size: u64 = 2,
});

/// Declares the builtin options tables retrain reads, each with its key in the
/// `BuiltinOptions` union; the operator's verifier checks the options table as the type its
/// key names, and [`Operator::options`] reads it only as that type.
macro_rules! options {
    ($($name:ident = $key:literal { $($field:ident : $ty:ty = $slot:expr),* $(,)? })*) => {
        $(
            table!($name { $($field: $ty = $slot),* });
            impl<'a> OptionsTable<'a> for $name<'a> {
                const KEY: u8 = $key;
            }
        )*

        fn verify_options(key: u8, v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
            match key {
                $($key => v.verify_union_variant::<ForwardsUOffset<$name>>(stringify!($name), pos),)*
                _ => Ok(()),
            }
        }
    };
}

trait OptionsTable<'a>: Follow<'a, Inner = Self> + Verifiable {
    const KEY: u8;
}

// Keys from the order of `union BuiltinOptions` in schema.fbs (NONE = 0).
options! {
    Conv2DOptions = 1 {
        padding: i8 = 0,
        stride_w: i32 = 1,
        stride_h: i32 = 2,
        fused_activation_function: i8 = 3,
        dilation_w_factor: i32 = 4,
        dilation_h_factor: i32 = 5,
    }
    DepthwiseConv2DOptions = 2 {
        padding: i8 = 0,
        stride_w: i32 = 1,
        stride_h: i32 = 2,
        depth_multiplier: i32 = 3,
        fused_activation_function: i8 = 4,
        dilation_w_factor: i32 = 5,
        dilation_h_factor: i32 = 6,
    }
    Pool2DOptions = 5 {
        padding: i8 = 0,
        stride_w: i32 = 1,
        stride_h: i32 = 2,
        filter_width: i32 = 3,
        filter_height: i32 = 4,
        fused_activation_function: i8 = 5,
    }
    FullyConnectedOptions = 8 {
        fused_activation_function: i8 = 0,
        weights_format: i8 = 1,
        keep_num_dims: bool = 2,
    }
    SoftmaxOptions = 9 { beta: f32 = 0 }
    ConcatenationOptions = 10 { axis: i32 = 0, fused_activation_function: i8 = 1 }
    AddOptions = 11 { fused_activation_function: i8 = 0 }
    ReshapeOptions = 17 { new_shape: List<'a, i32> = 0 }
    MulOptions = 21 { fused_activation_function: i8 = 0 }
    ReducerOptions = 27 { keep_dims: bool = 0 }
    SubOptions = 28 { fused_activation_function: i8 = 0 }
    DivOptions = 29 { fused_activation_function: i8 = 0 }
    SqueezeOptions = 30 { squeeze_dims: List<'a, i32> = 0 }
    LeakyReluOptions = 75 { alpha: f32 = 0 }
    MirrorPadOptions = 77 { mode: i8 = 0 }
}

mod metadata;

/// An operator: its code's index, its tensors and its builtin options (a union: the key
/// at slot 3, the table at slot 4).
#[derive(Clone, Copy)]
struct Operator<'a>(Table<'a>);

impl<'a> Follow<'a> for Operator<'a> {
    type Inner = Operator<'a>;
    unsafe fn follow(buf: &'a [u8], loc: usize) -> Self::Inner {
        // Safety: only reached through a verified parent (see `root`).
        Operator(unsafe { Table::new(buf, loc) })
    }
}

impl Verifiable for Operator<'_> {
    fn run_verifier(v: &mut Verifier, pos: usize) -> Result<(), InvalidFlatbuffer> {
        v.visit_table(pos)?
            .visit_field::<u32>("opcode_index", 4, false)?
            .visit_field::<List<i32>>("inputs", 6, false)?
            .visit_field::<List<i32>>("outputs", 8, false)?
            .visit_union::<u8, _>(
                "builtin_options_type",
                10,
                "builtin_options",
                12,
                false,
                verify_options,
            )?
            .finish();
        Ok(())
    }
}

impl<'a> Operator<'a> {
    fn opcode_index(&self) -> Option<u32> {
        // Safety: verified as u32 above.
        unsafe { self.0.get::<u32>(4, None) }
    }

    fn inputs(&self) -> Option<Vector<'a, i32>> {
        // Safety: verified as a vector of i32 above.
        unsafe { self.0.get::<List<'a, i32>>(6, None) }
    }

    fn outputs(&self) -> Option<Vector<'a, i32>> {
        // Safety: verified as a vector of i32 above.
        unsafe { self.0.get::<List<'a, i32>>(8, None) }
    }

    /// The builtin options, when they are a `T` table.
    fn options<T: OptionsTable<'a> + 'a>(&self) -> Option<T> {
        // Safety: the key was verified as u8, and the table as the type its key names;
        // it is read only when that type is `T`.
        let key = unsafe { self.0.get::<u8>(10, Some(0)) }?;
        (key == T::KEY).then(|| unsafe { self.0.get::<ForwardsUOffset<T>>(12, None) })?
    }
}

const CONV_2D: i32 = 3;
const DEPTHWISE_CONV_2D: i32 = 4;
const DEQUANTIZE: i32 = 6;
const FULLY_CONNECTED: i32 = 9;

/// `TFL3` at bytes 4..8: the file identifier of every TFLite model.
pub fn looks_like(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(b"TFL3")
}

fn corrupt(what: impl std::fmt::Display) -> WeightsError {
    WeightsError::Corrupt(format!("TFLite: {what}"))
}

/// One constant tensor of the graph, dequantised.
struct Constant {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<f32>,
}

struct Graph<'a> {
    bytes: &'a [u8],
    tensors: Vec<TensorDef<'a>>,
    buffers: Vec<Buffer<'a>>,
    ops: &'a [Op],
    /// The operators themselves (their options), in `ops`' order.
    operators: Vec<Operator<'a>>,
    /// The subgraph's input and output tensors.
    inputs: Vec<i32>,
    outputs: Vec<i32>,
    /// What the converter says it is (`MLIR Converted.`, `TOCO Converted.`).
    description: String,
    /// The operator (an index into `ops`) that produces each tensor.
    producers: BTreeMap<i32, usize>,
}

/// How many `DEQUANTIZE` operators a weight may pass through to its stored values (the
/// converter emits one; a loop of them must not recurse forever).
const MAX_DEQUANTIZE_CHAIN: usize = 4;

impl<'a> Graph<'a> {
    fn tensor(&self, i: i32) -> Result<TensorDef<'a>, WeightsError> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.tensors.get(i).copied())
            .ok_or_else(|| corrupt(format!("operator input {i} is not a tensor")))
    }

    fn name(&self, i: i32) -> String {
        self.tensor(i)
            .ok()
            .and_then(|t| t.name())
            .unwrap_or_default()
            .to_owned()
    }

    /// The stored values of tensor `i`, following a `DEQUANTIZE` to its input.
    fn constant(&self, i: i32) -> Result<Constant, WeightsError> {
        let mut i = i;
        let mut hops = 0;
        let (t, name, raw) = loop {
            let t = self.tensor(i)?;
            let name = t.name().unwrap_or("?");
            let raw = self.buffer_bytes(t)?;
            if !raw.is_empty() {
                break (t, name, raw);
            }
            match self.producers.get(&i).map(|&k| &self.ops[k]) {
                Some((DEQUANTIZE, inputs, _)) if inputs.len() == 1 => {
                    hops += 1;
                    if hops > MAX_DEQUANTIZE_CHAIN {
                        return Err(corrupt(format!(
                            "weight {name} is behind a loop or a chain of over \
                             {MAX_DEQUANTIZE_CHAIN} DEQUANTIZE operators"
                        )));
                    }
                    i = inputs[0];
                }
                _ => {
                    return Err(WeightsError::Unsupported(format!(
                        "TFLite: weight {name} is computed in the graph, not stored"
                    )));
                }
            }
        };
        let shape: Vec<usize> = t
            .shape()
            .map(|s| s.iter().map(|d| usize::try_from(d).unwrap_or(0)).collect())
            .unwrap_or_default();
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| corrupt(format!("{name}: shape {shape:?} overflows")))?;
        let dtype = match t.kind().unwrap_or(0) {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::I32,
            3 => DType::U8,
            4 => DType::I64,
            7 => DType::I16,
            9 => DType::I8,
            10 => DType::F64,
            k => {
                return Err(WeightsError::Unsupported(format!(
                    "TFLite: weight {name} has tensor type {k}"
                )));
            }
        };
        if numel.checked_mul(dtype.size()) != Some(raw.len()) {
            return Err(corrupt(format!(
                "{name}: {} bytes for {shape:?} of {dtype}",
                raw.len()
            )));
        }
        let stored: Vec<f32> = raw
            .chunks_exact(dtype.size())
            .map(|b| dtype.to_f32(b))
            .collect();
        let data = if dtype.is_float() {
            stored
        } else {
            dequantise(&stored, &shape, &QuantParams::of(t.quantization()), name)?
        };
        Ok(Constant { dtype, shape, data })
    }

    fn buffer_bytes(&self, t: TensorDef<'a>) -> Result<&'a [u8], WeightsError> {
        self.buffer(t.buffer().unwrap_or(0))
    }

    /// The bytes of buffer `index` (empty for a tensor computed at run time).
    fn buffer(&self, index: u32) -> Result<&'a [u8], WeightsError> {
        let b = usize::try_from(index)
            .ok()
            .and_then(|i| self.buffers.get(i).copied())
            .ok_or_else(|| {
                corrupt(format!(
                    "a tensor names buffer {index}, which does not exist"
                ))
            })?;
        if let Some(data) = b.data().filter(|d| !d.is_empty()) {
            return Ok(data.bytes());
        }
        // Models past 2 GiB keep buffers after the flatbuffer, at an offset from the start.
        match (b.offset().unwrap_or(0), b.size().unwrap_or(0)) {
            (offset, size) if offset > 1 => usize::try_from(offset)
                .ok()
                .zip(usize::try_from(size).ok())
                .and_then(|(o, s)| self.bytes.get(o..o.checked_add(s)?))
                .ok_or_else(|| {
                    WeightsError::Truncated("TFLite: a buffer lies past the end of the file".into())
                }),
            _ => Ok(&[]),
        }
    }
}

/// Scales, zero points and axis of a quantised tensor.
struct QuantParams {
    scales: Vec<f32>,
    zeros: Vec<f32>,
    axis: usize,
}

impl QuantParams {
    fn of(q: Option<Quantization>) -> Self {
        Self {
            scales: q
                .and_then(|p| p.scale())
                .map(|s| s.iter().collect())
                .unwrap_or_default(),
            zeros: q
                .and_then(|p| p.zero_point())
                .map(|z| z.iter().map(|v| v as f32).collect())
                .unwrap_or_default(),
            axis: q
                .and_then(|p| p.quantized_dimension())
                .and_then(|d| usize::try_from(d).ok())
                .unwrap_or(0),
        }
    }
}

/// `(q − zero_point) · scale`, per tensor or per channel along the quantised axis.
fn dequantise(
    q: &[f32],
    shape: &[usize],
    p: &QuantParams,
    name: &str,
) -> Result<Vec<f32>, WeightsError> {
    let channels = p.scales.len();
    if channels == 0 {
        return Err(WeightsError::Unsupported(format!(
            "TFLite: integer weight {name} has no quantisation scale"
        )));
    }
    let (axis_len, inner) = if channels == 1 {
        (1, 1)
    } else {
        let len = shape.get(p.axis).copied().unwrap_or(0);
        if len != channels || p.zeros.len() > 1 && p.zeros.len() != channels {
            return Err(corrupt(format!(
                "{name}: {channels} scales for axis {} of {shape:?}",
                p.axis
            )));
        }
        (len, shape[p.axis + 1..].iter().product::<usize>())
    };
    Ok(q.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / inner) % axis_len;
            let z = p.zeros.get(c).or(p.zeros.first()).copied().unwrap_or(0.0);
            (v - z) * p.scales[c]
        })
        .collect())
}

/// The Keras layer a weight belongs to: in the `;`-joined names the converter gives a fused
/// constant, the part that ends in the layer's own operation, and in it the scope before it.
fn layer_scope(name: &str, ops: &[&str]) -> Option<String> {
    let parts: Vec<&str> = name.split(';').filter(|p| p.contains('/')).collect();
    let part = parts
        .iter()
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|last| ops.iter().any(|op| last.starts_with(op)))
        })
        .or(parts.first())?;
    let segments: Vec<&str> = part.split('/').collect();
    (segments.len() >= 2).then(|| segments[segments.len() - 2].to_owned())
}

/// Keras 3 suffixes every scope of the converted graph alike (`_1`): when the model's scope
/// and every layer's share one `_N`, it is not part of the layer names.
fn common_trace_suffix(model_scope: &str, layers: &[String]) -> Option<String> {
    let (_, n) = model_scope.rsplit_once('_')?;
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let suffix = format!("_{n}");
    layers
        .iter()
        .all(|l| l.len() > suffix.len() && l.ends_with(&suffix))
        .then_some(suffix)
}

/// Tensors a TFLite file never holds as weights, with why (see `Weights::hint_for_missing`).
pub const ABSENT: &[(&str, &str)] = &[(
    "normalization.mean",
    "TFLite folds EfficientNet's input Normalization into graph constants, which retrain \
     does not read: use the model's .h5 or .keras",
)];

/// One operator: builtin code, input and output tensor indices.
type Op = (i32, Vec<i32>, Vec<i32>);

/// A weighted layer found in the graph: the operator (an index into the ops), its scope
/// (the Keras layer, when the converter's names tell it), operator kind, filter and bias.
struct Layer {
    op: usize,
    scope: Option<String>,
    code: i32,
    filter: Constant,
    bias: Option<Constant>,
}

/// Reads a TFLite model: its graph (see [`graph`]), and its weights in PyTorch's layouts,
/// named `<layer>.weight` / `<layer>.bias` after the Keras layers where the converter's
/// names tell them apart (so that the zoo's loaders read them too), otherwise after the
/// graph's own nodes.
pub fn read(bytes: &[u8]) -> Result<(BTreeMap<String, WeightTensor>, GraphIr), WeightsError> {
    let opts = VerifierOptions {
        max_apparent_size: 1 << 34,
        ..Default::default()
    };
    let model = flatbuffers::root_with_opts::<Model>(&opts, bytes).map_err(|e| {
        if bytes.len() < 64 || e.to_string().contains("range") {
            WeightsError::Truncated(format!("TFLite: {e}"))
        } else {
            corrupt(e)
        }
    })?;
    let ops = operators(&model)?;
    let graph = model
        .subgraphs()
        .and_then(|s| s.iter().next())
        .ok_or_else(|| corrupt("the model has no subgraph"))?;
    let list = |v: Option<Vector<'_, i32>>| v.map(|v| v.iter().collect()).unwrap_or_default();
    let g = Graph {
        bytes,
        tensors: graph
            .tensors()
            .map(|t| t.iter().collect())
            .unwrap_or_default(),
        buffers: model
            .buffers()
            .map(|b| b.iter().collect())
            .unwrap_or_default(),
        ops: &ops,
        operators: graph
            .operators()
            .map(|o| o.iter().collect())
            .unwrap_or_default(),
        inputs: list(graph.inputs()),
        outputs: list(graph.outputs()),
        description: model.description().unwrap_or_default().to_owned(),
        producers: ops
            .iter()
            .enumerate()
            .flat_map(|(k, (_, _, outputs))| outputs.iter().map(move |&o| (o, k)))
            .collect(),
    };
    let layers = weighted_layers(&g, &ops)?;
    let suffix = trace_suffix(&g, &ops, &layers);
    let names = layer_names(&layers, suffix.as_deref(), |l| {
        g.name(ops[l.op].1.get(1).copied().unwrap_or(-1))
    })
    .unwrap_or_else(|_| graph::node_names(&g, &layers));
    let mut tensors = BTreeMap::new();
    for (l, name) in layers.iter().zip(&names) {
        let (weight, bias) = to_pytorch(name, l)?;
        tensors.insert(format!("{name}.weight"), weight);
        tensors.insert(format!("{name}.bias"), bias);
    }
    let normalisation = model
        .metadata()
        .and_then(|m| m.iter().find(|e| e.name() == Some(metadata::NAME)))
        .and_then(|e| g.buffer(e.buffer()?).ok())
        .and_then(metadata::input_normalisation);
    let ir = graph::translate(
        &g,
        &layers,
        &names,
        suffix.as_deref(),
        normalisation,
        &mut tensors,
    )?;
    Ok((tensors, ir))
}

/// The scope suffix Keras 3 gives every name of the converted graph, if it does.
fn trace_suffix(g: &Graph, ops: &[Op], layers: &[Layer]) -> Option<String> {
    let model_scope = g
        .name(layers_first_filter(ops))
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let scopes: Option<Vec<String>> = layers.iter().map(|l| l.scope.clone()).collect();
    common_trace_suffix(&model_scope, &scopes?)
}

/// The Keras layer of each weighted operator, with the scope `suffix` removed; an error
/// when the converter's names do not tell every layer apart (`filter_name` names a
/// layer's weight for the message).
fn layer_names(
    layers: &[Layer],
    suffix: Option<&str>,
    filter_name: impl Fn(&Layer) -> String,
) -> Result<Vec<String>, WeightsError> {
    let mut seen = std::collections::BTreeSet::new();
    layers
        .iter()
        .map(|l| {
            let scope = l.scope.clone().ok_or_else(|| {
                WeightsError::Unsupported(format!(
                    "TFLite: cannot tell which layer the weight `{}` belongs to",
                    filter_name(l)
                ))
            })?;
            let layer = match suffix {
                Some(s) => scope[..scope.len() - s.len()].to_owned(),
                None => scope,
            };
            if !seen.insert(layer.clone()) {
                return Err(WeightsError::Unsupported(format!(
                    "TFLite: two operators carry the weights of layer {layer}"
                )));
            }
            Ok(layer)
        })
        .collect()
}

/// The first subgraph's operators, with their builtin codes resolved.
fn operators(model: &Model) -> Result<Vec<Op>, WeightsError> {
    let codes: Vec<i32> = model
        .operator_codes()
        .map(|c| {
            c.iter()
                .map(|c| {
                    i32::from(c.deprecated_builtin_code().unwrap_or(0))
                        .max(c.builtin_code().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default();
    let graph = model
        .subgraphs()
        .and_then(|s| s.iter().next())
        .ok_or_else(|| corrupt("the model has no subgraph"))?;
    Ok(graph
        .operators()
        .map(|ops| {
            ops.iter()
                .map(|op| {
                    let code = usize::try_from(op.opcode_index().unwrap_or(0))
                        .ok()
                        .and_then(|i| codes.get(i).copied())
                        .unwrap_or(-1);
                    let list =
                        |v: Option<Vector<i32>>| v.map(|v| v.iter().collect()).unwrap_or_default();
                    (code, list(op.inputs()), list(op.outputs()))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Every convolution, depthwise convolution and fully connected operator with its
/// (dequantised) constants and the converter's scope for it.
fn weighted_layers(g: &Graph, ops: &[Op]) -> Result<Vec<Layer>, WeightsError> {
    let mut layers = Vec::new();
    for (k, (code, inputs, outputs)) in ops.iter().enumerate() {
        let marks: &[&str] = match *code {
            CONV_2D => &["convolution", "Conv2D", "BiasAdd"],
            DEPTHWISE_CONV_2D => &["depthwise", "BiasAdd"],
            FULLY_CONNECTED => &["MatMul", "BiasAdd", "Tensordot"],
            _ => continue,
        };
        let filter_index = *inputs
            .get(1)
            .ok_or_else(|| corrupt("a convolution without a filter"))?;
        let scope = layer_scope(&g.name(filter_index), marks).or_else(|| {
            outputs
                .first()
                .and_then(|&o| layer_scope(&g.name(o), marks))
        });
        let filter = g.constant(filter_index)?;
        let bias = match inputs.get(2) {
            Some(&b) if b >= 0 => Some(g.constant(b)?),
            _ => None,
        };
        layers.push(Layer {
            op: k,
            scope,
            code: *code,
            filter,
            bias,
        });
    }
    Ok(layers)
}

/// A layer's weight in PyTorch's layout (OIHW; depthwise as (C·m, 1, kh, kw); dense as
/// (out, in)) and its bias (zeros when the operator has none).
fn to_pytorch(layer: &str, l: &Layer) -> Result<(WeightTensor, WeightTensor), WeightsError> {
    let filter = &l.filter;
    let (data, shape) = match (l.code, filter.shape.as_slice()) {
        (CONV_2D, [_, _, _, _]) => permute(&filter.data, &filter.shape, &[0, 3, 1, 2]),
        // (1, kh, kw, C·m) → (C·m, 1, kh, kw)
        (DEPTHWISE_CONV_2D, [1, _, _, _]) => permute(&filter.data, &filter.shape, &[3, 0, 1, 2]),
        (FULLY_CONNECTED, [_, _]) => (filter.data.clone(), filter.shape.clone()),
        (_, s) => {
            return Err(WeightsError::Unsupported(format!(
                "TFLite: layer {layer} has a filter of shape {s:?}"
            )));
        }
    };
    let cout = shape[0];
    let weight = WeightTensor {
        dtype: filter.dtype,
        shape,
        data,
        strided: false,
    };
    let bias = match &l.bias {
        Some(b) if b.data.len() == cout => WeightTensor {
            dtype: b.dtype,
            shape: vec![cout],
            data: b.data.clone(),
            strided: false,
        },
        Some(b) => {
            return Err(corrupt(format!(
                "layer {layer}: {} bias values for {cout} outputs",
                b.data.len()
            )));
        }
        None => WeightTensor {
            dtype: DType::F32,
            shape: vec![cout],
            data: vec![0.0; cout],
            strided: false,
        },
    };
    Ok((weight, bias))
}

/// The filter of the first weighted operator (its name carries the model's scope).
fn layers_first_filter(ops: &[Op]) -> i32 {
    ops.iter()
        .find(|(c, ..)| matches!(*c, CONV_2D | DEPTHWISE_CONV_2D | FULLY_CONNECTED))
        .and_then(|(_, inputs, _)| inputs.get(1).copied())
        .unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_and_per_tensor_dequantisation() {
        // uint8, one scale and zero point 128.
        let p = QuantParams {
            scales: vec![0.5],
            zeros: vec![128.0],
            axis: 0,
        };
        assert_eq!(
            dequantise(&[0.0, 128.0, 255.0], &[3], &p, "t").unwrap(),
            vec![-64.0, 0.0, 63.5]
        );
        // int8 per output channel: axis 0 of a 2×1×2 filter, and axis 2 (depthwise).
        let p = QuantParams {
            scales: vec![0.5, 0.25],
            zeros: vec![0.0, 0.0],
            axis: 0,
        };
        assert_eq!(
            dequantise(&[1.0, -2.0, 3.0, 4.0], &[2, 1, 2], &p, "t").unwrap(),
            vec![0.5, -1.0, 0.75, 1.0]
        );
        let p = QuantParams { axis: 2, ..p };
        assert_eq!(
            dequantise(&[1.0, -2.0, 3.0, 4.0], &[2, 1, 2], &p, "t").unwrap(),
            vec![0.5, -0.5, 1.5, 1.0]
        );
        // Scales that do not fit the axis, or none at all, are refused.
        assert!(dequantise(&[1.0; 6], &[3, 2], &QuantParams { axis: 0, ..p }, "t").is_err());
        let none = QuantParams {
            scales: vec![],
            zeros: vec![],
            axis: 0,
        };
        assert!(dequantise(&[1.0], &[1], &none, "t").is_err());
    }

    /// A float16 model's weights sit behind DEQUANTIZE operators. Pointing one such
    /// operator's input at its own output made the reader recurse until the stack
    /// overflowed; it is an error naming the loop now.
    #[test]
    fn a_dequantize_loop_is_an_error_not_a_stack_overflow() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let bytes = std::fs::read(dir.join("tf_mobilenet_v2/model_f16.tflite")).unwrap();
        assert!(read(&bytes).is_ok());
        let model = flatbuffers::root::<Model>(&bytes).unwrap();
        let graph = model.subgraphs().unwrap().get(0);
        let ops = operators(&model).unwrap();
        let k = ops
            .iter()
            .position(|(code, ..)| *code == DEQUANTIZE)
            .unwrap();
        let inputs = graph.operators().unwrap().get(k).inputs().unwrap();
        let at = inputs.bytes().as_ptr() as usize - bytes.as_ptr() as usize;
        let mut looped = bytes.clone();
        looped[at..at + 4].copy_from_slice(&ops[k].2[0].to_le_bytes());
        let e = read(&looped).unwrap_err().to_string();
        assert!(e.contains("loop or a chain"), "{e}");
    }

    /// An operator outside the supported set stays in the graph under its TFLite name, so
    /// that analysing the graph refuses it by name (and `--model` still reads the weights).
    #[test]
    fn an_unsupported_operator_is_refused_by_name() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let bytes = std::fs::read(dir.join("tf_mobilenet_v2/model_f16.tflite")).unwrap();
        let model = flatbuffers::root::<Model>(&bytes).unwrap();
        let codes = model.operator_codes().unwrap();
        let mean = codes
            .iter()
            .position(|c| c.builtin_code() == Some(40))
            .expect("MEAN");
        // Its builtin_code (slot 3, i32) and deprecated_builtin_code (slot 0, i8) become
        // RESIZE_BILINEAR; the vtable gives each field's offset.
        let table = codes.get(mean).0;
        let field = |slot: u16| table.loc() + table.vtable().get(4 + 2 * slot) as usize;
        let mut patched = bytes.clone();
        patched[field(3)..field(3) + 4].copy_from_slice(&23i32.to_le_bytes());
        patched[field(0)] = 23;
        let w = crate::weights::Weights::from_bytes(&patched).unwrap();
        let e = crate::graph::analyse::model_spec(&w, "m", None, &Default::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("TFLite RESIZE_BILINEAR") && e.contains("not supported"),
            "{e}"
        );
    }

    /// SIGN_BIT (fused activation 5): TFLite's float CONV_2D, DEPTHWISE_CONV_2D, ADD, MUL
    /// and pooling kernels clamp to the range `CalculateActivationRange` gives, which it
    /// leaves whole, and FULLY_CONNECTED refuses it (checked with TF 2.21's interpreter), so
    /// there is no TFLite result to match: refused, saying so.
    #[test]
    fn a_sign_bit_activation_is_refused() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let bytes = std::fs::read(dir.join("tf_mobilenet_v2/model.tflite")).unwrap();
        let model = flatbuffers::root::<Model>(&bytes).unwrap();
        let ops = operators(&model).unwrap();
        let graph = model.subgraphs().unwrap().get(0);
        // The first convolution with a fused activation stored (ReLU6).
        let (table, slot) = ops
            .iter()
            .enumerate()
            .filter(|(_, (code, ..))| *code == CONV_2D)
            .find_map(|(k, _)| {
                let o = graph
                    .operators()
                    .unwrap()
                    .get(k)
                    .options::<Conv2DOptions>()?;
                (o.fused_activation_function() == Some(3)).then_some((o.0, 3))
            })
            .expect("a CONV_2D with ReLU6");
        let at = table.loc() + table.vtable().get(4 + 2 * slot) as usize;
        let mut patched = bytes.clone();
        patched[at] = 5;
        let e = crate::weights::Weights::from_bytes(&patched)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SIGN_BIT") && e.contains("TFLite's own float kernels do not compute"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn layer_scopes_from_converter_names() {
        let conv = ["convolution", "Conv2D"];
        assert_eq!(
            layer_scope("m_1/block_1_expand_1/convolution", &conv).as_deref(),
            Some("block_1_expand_1")
        );
        let fused = "m_1/dw_relu_1/Relu6;m_1/dw_BN_1/batchnorm/mul_1;m_1/dw_1/depthwise;";
        assert_eq!(layer_scope(fused, &["depthwise"]).as_deref(), Some("dw_1"));
        assert_eq!(layer_scope("arith.constant3", &conv), None);
        let layers = vec!["Conv1_1".to_owned(), "block_1_expand_1".to_owned()];
        assert_eq!(
            common_trace_suffix("mobilenetv2_1.00_224_1", &layers).as_deref(),
            Some("_1")
        );
        // A Keras 2 graph: no common suffix, names kept.
        let layers = vec!["Conv1".to_owned(), "Conv_1".to_owned()];
        assert_eq!(common_trace_suffix("mobilenetv2_1.00_224", &layers), None);
    }
}
