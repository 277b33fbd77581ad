//! A Keras full model as a [`crate::graph::Graph`]: the architecture its file stores (the
//! `model_config` of an `.h5`, the `config.json` of a `.keras`) translated layer by layer to
//! the runtime's (ONNX-named) ops at opset 13, the weights read by the parent module.
//!
//! Both config dialects are read: Keras 2's (`inbound_nodes` as `[[layer, node, tensor,
//! kwargs], …]`, `batch_input_shape`) and Keras 3's (`inbound_nodes` as `{args, kwargs}` of
//! `__keras_tensor__`s, `batch_shape`); Functional and Sequential models, and models used as
//! layers of others (a transfer model around a Keras Application), which are inlined.
//!
//! Layout: Keras computes in NHWC; retrain's images and runtime are NCHW. Every rank-4
//! activation is held in NCHW: the axes a layer names (Concatenate, Softmax,
//! BatchNormalization) are mapped, per-channel constants shaped to broadcast, and a layer
//! that depends on the element order (Flatten, Reshape) reads the NHWC order through a
//! Transpose.
//!
//! A layer that runs Python (`Lambda`, TensorFlow ops called on tensors) or that retrain
//! does not know becomes a node named after it that the analysis refuses with the reason;
//! the file's weights are still read (`--model`).

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::graph::build::IrBuilder;
use crate::graph::{Attr, Graph as Ir, InputScaling, ValueInfo};
use crate::weights::{WeightTensor, WeightsError};

/// The opset whose signatures the translated nodes follow.
const OPSET: i64 = 13;

/// NHWC axis → NCHW axis.
const TO_NCHW_AXIS: [usize; 4] = [0, 2, 3, 1];

/// Models within models deeper than this are refused (a config is untrusted input).
const MAX_DEPTH: usize = 16;

type R<T> = Result<T, WeightsError>;

fn unsupported(why: impl std::fmt::Display) -> WeightsError {
    WeightsError::Unsupported(format!("Keras model: {why}"))
}

/// An IR value standing for a Keras tensor: its rank, and whether a rank-4 value is held as
/// the NCHW transpose of Keras' NHWC tensor.
#[derive(Debug, Clone)]
struct Val {
    name: String,
    rank: usize,
    nchw: bool,
}

/// An operand of an element-wise operation: a tensor, or a number in the call.
enum Operand {
    Tensor(Val),
    Number(f32),
}

/// A Keras tensor: (the layer's name within its enclosing models, node index, tensor index).
type Key = (String, usize, usize);

struct Builder<'t> {
    ir: IrBuilder,
    values: BTreeMap<Key, Val>,
    tensors: &'t BTreeMap<String, WeightTensor>,
    /// Keras 2 (tf.keras): its `hard_sigmoid` is 0.2·x + 0.5, Keras 3's relu6(x + 3) / 6.
    keras2: bool,
    input: Option<ValueInfo>,
    /// The first layer that reads the image, and the name of the model it is in (the
    /// pixel scaling a Keras Application expects is known by its name).
    first_layer: Option<(String, String)>,
    /// Weights read into constants (Normalization's adapted statistics).
    weights_in_constants: Vec<String>,
    /// The classes of the layers that read each layer's output (by scoped name).
    consumers: BTreeMap<String, Vec<String>>,
    /// Classifier convolutions' kernels, to hold as (out, in).
    head_kernels: Vec<String>,
}

/// Translates a model config (JSON) into the runtime's graph; `tensors` are the file's
/// weights in PyTorch's conventions, where the classifier's may be renamed.
pub(crate) fn translate(
    config: &str,
    keras_version: Option<&str>,
    tensors: &mut BTreeMap<String, WeightTensor>,
) -> R<Ir> {
    let root: Json = serde_json::from_str(config)
        .map_err(|e| WeightsError::Corrupt(format!("the Keras model config is not JSON: {e}")))?;
    translate_value(&root, keras_version, tensors)
}

/// [`translate`] of a config already parsed.
pub(crate) fn translate_value(
    root: &Json,
    keras_version: Option<&str>,
    tensors: &mut BTreeMap<String, WeightTensor>,
) -> R<Ir> {
    let keras2 = keras_version.is_some_and(|v| v.starts_with("2.") || v.starts_with("1."));
    depthwise_kernels_in_place(root, tensors, 0);
    let mut b = Builder {
        ir: IrBuilder::avoiding(tensors.keys().cloned()),
        values: BTreeMap::new(),
        tensors,
        keras2,
        input: None,
        first_layer: None,
        weights_in_constants: vec![],
        consumers: BTreeMap::new(),
        head_kernels: vec![],
    };
    let class = str_of(root, "class_name").unwrap_or_default();
    let cfg = root
        .get("config")
        .ok_or_else(|| unsupported("the config has no `config` entry"))?;
    let outputs = b.model(class, cfg, "", None, 0)?;
    let out = outputs
        .into_iter()
        .next()
        .ok_or_else(|| unsupported("the model has no output"))?;
    let input = b
        .input
        .clone()
        .ok_or_else(|| unsupported("the model has no input layer"))?;
    // A model without top ends in a map: it stays in NCHW, the layout retrain pools and
    // cuts images in (Keras' NHWC order matters only inside the graph).
    let output_name = out.name.clone();
    let input_scaling = b
        .first_layer
        .as_ref()
        .and_then(|(c, m)| pixel_scaling(c, m));
    let name = str_of(cfg, "name").unwrap_or("model");
    let mut ir = Ir {
        format: "keras".into(),
        producer: match keras_version {
            Some(v) => format!("Keras {v} ({name})"),
            None => format!("Keras ({name})"),
        },
        opset: OPSET,
        input,
        extra_inputs: vec![],
        output: ValueInfo {
            name: output_name,
            dims: vec![None; out.rank],
        },
        nodes: b.ir.nodes,
        params: b.ir.params,
        constants: b.ir.constants,
        input_scaling,
        weights_in_constants: b.weights_in_constants,
    };
    // A classifier convolution's 1×1 kernel is held as (out, in), as its Gemm reads it
    // (the zoo's loaders read either shape).
    for name in b.head_kernels {
        if let Some(t) = tensors.get_mut(&name) {
            t.shape.truncate(2);
        }
    }
    crate::weights::onnx::canonical_classifier(&mut ir, tensors);
    Ok(ir)
}

/// Keras 3 names a DepthwiseConv2D's kernel `kernel`, so that a legacy `.h5` of it reads as
/// a plain convolution's, (multiplier, C, kh, kw): every DepthwiseConv2D of the config gets
/// PyTorch's (C·multiplier, 1, kh, kw), channel-major.
fn depthwise_kernels_in_place(
    v: &Json,
    tensors: &mut BTreeMap<String, WeightTensor>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    match v {
        Json::Object(m) => {
            if m.get("class_name").and_then(Json::as_str) == Some("DepthwiseConv2D")
                && let Some(name) = m.get("config").and_then(|c| str_of(c, "name"))
                && let Some(t) = tensors.get_mut(&format!("{name}.weight"))
                && let &[mult, c, kh, kw] = t.shape.as_slice()
                && c != 1
                && t.data.len() == t.numel()
            {
                let plane = kh * kw;
                let mut data = vec![0.0; t.data.len()];
                for j in 0..mult {
                    for ch in 0..c {
                        let from = (j * c + ch) * plane;
                        let to = (ch * mult + j) * plane;
                        data[to..to + plane].copy_from_slice(&t.data[from..from + plane]);
                    }
                }
                t.data = data;
                t.shape = vec![c * mult, 1, kh, kw];
            }
            m.values()
                .for_each(|x| depthwise_kernels_in_place(x, tensors, depth + 1));
        }
        Json::Array(a) => a
            .iter()
            .for_each(|x| depthwise_kernels_in_place(x, tensors, depth + 1)),
        _ => {}
    }
}

/// The pixels the model expects, where its first layer or its name tells: a model that
/// rescales its own input (EfficientNet, MobileNetV3, a user's `Rescaling(1/255)` or `x /
/// 255.0`) takes 0..255; a Keras Application the scaling of its `preprocess_input`.
fn pixel_scaling(first_class: &str, model: &str) -> Option<InputScaling> {
    let m = model.to_ascii_lowercase();
    let caffe = InputScaling {
        mean: [103.939 / 255.0, 116.779 / 255.0, 123.68 / 255.0],
        std: [1.0 / 255.0; 3],
        bgr: true,
    };
    let tf = InputScaling {
        mean: [0.5; 3],
        std: [0.5; 3],
        bgr: false,
    };
    // The model scales its own pixels: a Rescaling or Normalization layer, or `x / 255`
    // written as an operation (Keras 3) or a TFOpLambda (Keras 2).
    let scales_itself = matches!(
        first_class,
        "Rescaling"
            | "Normalization"
            | "operation Divide"
            | "operation TrueDivide"
            | "operation Multiply"
            | "tf.math.truediv"
            | "tf.math.divide"
            | "tf.math.multiply"
            | "tf.__operators__.truediv"
    );
    if scales_itself {
        return Some(InputScaling {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
            bgr: false,
        });
    }
    let resnet_v1 = ["resnet50", "resnet101", "resnet152"]
        .iter()
        .any(|r| m.starts_with(r) && !m.contains("v2"));
    if resnet_v1 || m.starts_with("vgg16") || m.starts_with("vgg19") {
        Some(caffe)
    } else if m.starts_with("densenet") {
        Some(InputScaling {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            bgr: false,
        })
    } else if ["mobilenet", "inception", "xception", "nasnet", "resnet"]
        .iter()
        .any(|p| m.starts_with(p))
    {
        Some(tf)
    } else {
        None
    }
}

fn str_of<'a>(v: &'a Json, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Json::as_str)
}

/// `[layer, node, tensor]` (a Keras 2 inbound entry, an `input_layers` entry, a Keras 3
/// `keras_history`).
fn key_of(v: &Json) -> Option<(String, usize, usize)> {
    let a = v.as_array()?;
    let name = a.first()?.as_str()?.to_owned();
    let n = a.get(1).and_then(Json::as_u64).unwrap_or(0) as usize;
    let t = a.get(2).and_then(Json::as_u64).unwrap_or(0) as usize;
    Some((name, n, t))
}

/// `input_layers` / `output_layers`: one `[layer, node, tensor]` or a list of them.
fn endpoints(v: Option<&Json>) -> Vec<(String, usize, usize)> {
    match v {
        Some(Json::Array(a)) if a.first().is_some_and(Json::is_string) => {
            key_of(&Json::Array(a.clone())).into_iter().collect()
        }
        Some(Json::Array(a)) => a.iter().filter_map(key_of).collect(),
        _ => vec![],
    }
}

/// The tensors one call of a layer reads, in order: Keras 3's `__keras_tensor__`s anywhere
/// in `args`, or Keras 2's `[layer, node, tensor, kwargs]` entries.
fn call_inputs(call: &Json) -> Vec<(String, usize, usize)> {
    fn keras3(v: &Json, out: &mut Vec<(String, usize, usize)>, depth: usize) {
        if depth > 32 {
            return;
        }
        match v {
            Json::Object(m)
                if m.get("class_name").and_then(Json::as_str) == Some("__keras_tensor__") =>
            {
                if let Some(k) = m
                    .get("config")
                    .and_then(|c| c.get("keras_history"))
                    .and_then(key_of)
                {
                    out.push(k);
                }
            }
            Json::Array(a) => a.iter().for_each(|x| keras3(x, out, depth + 1)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match call {
        Json::Object(m) => keras3(m.get("args").unwrap_or(&Json::Null), &mut out, 0),
        // Keras 2's TFOpLambda: the call is one entry, `[layer, node, tensor, kwargs]`,
        // and a tensor argument among the kwargs is `[layer, node, tensor]` too.
        Json::Array(entry) if entry.first().is_some_and(Json::is_string) => {
            out.extend(key_of(call));
            if let Some(Json::Object(kwargs)) = entry.get(3) {
                out.extend(
                    kwargs
                        .values()
                        .filter(|v| is_tensor_ref(v))
                        .filter_map(key_of),
                );
            }
        }
        Json::Array(entries) => out.extend(entries.iter().filter_map(key_of)),
        _ => {}
    }
    out
}

/// `[layer, node, tensor]`: a Keras 2 reference to a tensor.
fn is_tensor_ref(v: &Json) -> bool {
    matches!(
        v.as_array().map(Vec::as_slice),
        Some([Json::String(_), Json::Number(_), Json::Number(_)])
    )
}

/// An integer pair: `n` or `[a, b]` (kernel sizes, strides, pool sizes).
fn pair(cfg: &Json, key: &str, default: Option<[i64; 2]>, layer: &str) -> R<[i64; 2]> {
    let bad = || unsupported(format!("layer {layer}: `{key}` is not one or two integers"));
    let v = match cfg.get(key) {
        None | Some(Json::Null) => return default.ok_or_else(bad),
        Some(v) => v,
    };
    let pair = match v {
        Json::Number(n) => {
            let n = n.as_i64().ok_or_else(bad)?;
            [n, n]
        }
        Json::Array(a) if a.len() == 2 => [
            a[0].as_i64().ok_or_else(bad)?,
            a[1].as_i64().ok_or_else(bad)?,
        ],
        Json::Array(a) if a.len() == 1 => {
            let n = a[0].as_i64().ok_or_else(bad)?;
            [n, n]
        }
        _ => return Err(bad()),
    };
    if pair.iter().any(|&d| !(1..=1 << 16).contains(&d)) {
        return Err(bad());
    }
    Ok(pair)
}

/// Keras' `padding` / `cropping` of 2-D layers: `n`, `[h, w]` or `[[top, bottom], [left,
/// right]]`, as `[top, bottom, left, right]`.
fn margins(v: Option<&Json>, layer: &str) -> R<[i64; 4]> {
    let bad = || {
        unsupported(format!(
            "layer {layer}: its padding or cropping is not understood"
        ))
    };
    let int = |v: &Json| {
        v.as_i64()
            .filter(|n| (0..=1 << 16).contains(n))
            .ok_or_else(bad)
    };
    Ok(match v {
        Some(Json::Number(_)) => {
            let n = int(v.unwrap())?;
            [n, n, n, n]
        }
        Some(Json::Array(a)) if a.len() == 2 => match (&a[0], &a[1]) {
            (Json::Array(h), Json::Array(w)) if h.len() == 2 && w.len() == 2 => {
                [int(&h[0])?, int(&h[1])?, int(&w[0])?, int(&w[1])?]
            }
            (h, w) => {
                let (h, w) = (int(h)?, int(w)?);
                [h, h, w, w]
            }
        },
        _ => return Err(bad()),
    })
}

/// Numbers as a list: a scalar is one element.
fn floats(v: Option<&Json>) -> Option<Vec<f32>> {
    match v? {
        Json::Number(n) => Some(vec![n.as_f64()? as f32]),
        Json::Array(a) => a.iter().map(|x| x.as_f64().map(|f| f as f32)).collect(),
        _ => None,
    }
}

impl Builder<'_> {
    /// Translates a Functional or Sequential model. `inputs`: the values its inputs are
    /// bound to when it is a layer of another model (`None`: the file's model, whose input
    /// is the graph's). Returns its outputs.
    fn model(
        &mut self,
        class: &str,
        cfg: &Json,
        scope: &str,
        inputs: Option<Vec<Val>>,
        depth: usize,
    ) -> R<Vec<Val>> {
        if depth > MAX_DEPTH {
            return Err(unsupported(format!(
                "models nested more than {MAX_DEPTH} deep"
            )));
        }
        let model_name = str_of(cfg, "name").unwrap_or("model").to_owned();
        let layers = cfg
            .get("layers")
            .and_then(Json::as_array)
            .ok_or_else(|| unsupported(format!("model {model_name} lists no layers")))?;
        if class == "Sequential" {
            return self.sequential(layers, &model_name, scope, inputs, depth);
        }
        if !matches!(class, "Functional" | "Model") {
            return Err(unsupported(format!(
                "a model of class {class} (Functional, Model or Sequential expected)"
            )));
        }
        let scoped = |name: &str| format!("{scope}{name}");
        for layer in layers {
            let class = str_of(layer, "class_name").unwrap_or_default();
            for call in layer
                .get("inbound_nodes")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                for (l, _, _) in call_inputs(call) {
                    let readers = self.consumers.entry(scoped(&l)).or_default();
                    readers.push(class.to_owned());
                }
            }
        }
        let input_layers = endpoints(cfg.get("input_layers"));
        for (i, (name, n, t)) in input_layers.iter().enumerate() {
            let v = match &inputs {
                Some(given) => given.get(i).cloned().ok_or_else(|| {
                    unsupported(format!("model {model_name} is called with too few inputs"))
                })?,
                None => {
                    let layer = layers
                        .iter()
                        .find(|l| layer_name(l) == Some(name.as_str()))
                        .ok_or_else(|| unsupported(format!("input layer {name} is not listed")))?;
                    self.graph_input(layer.get("config").unwrap_or(&Json::Null), name)?
                }
            };
            self.values.insert((scoped(name), *n, *t), v);
        }
        for layer in layers {
            let class = str_of(layer, "class_name").unwrap_or_default();
            let name = layer_name(layer)
                .ok_or_else(|| unsupported(format!("a layer of model {model_name} has no name")))?
                .to_owned();
            if class == "InputLayer" {
                continue;
            }
            let calls = layer
                .get("inbound_nodes")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default();
            for (node, call) in calls.iter().enumerate() {
                let mut xs = Vec::new();
                for (l, n, t) in call_inputs(call) {
                    let v = self
                        .values
                        .get(&(scoped(&l), n, t))
                        .cloned()
                        .ok_or_else(|| {
                            unsupported(format!(
                                "layer {name} reads {l}[{n}][{t}], which no earlier layer gives \
                             (a cycle or a dangling input)"
                            ))
                        })?;
                    xs.push(v);
                }
                let outs = self.layer(class, layer, call, &name, xs, &model_name, scope, depth)?;
                for (t, v) in outs.into_iter().enumerate() {
                    self.values.insert((scoped(&name), node, t), v);
                }
            }
        }
        endpoints(cfg.get("output_layers"))
            .into_iter()
            .map(|(l, n, t)| {
                self.values
                    .get(&(scoped(&l), n, t))
                    .cloned()
                    .ok_or_else(|| {
                        unsupported(format!("model {model_name}'s output {l} is not computed"))
                    })
            })
            .collect()
    }

    fn sequential(
        &mut self,
        layers: &[Json],
        model_name: &str,
        scope: &str,
        inputs: Option<Vec<Val>>,
        depth: usize,
    ) -> R<Vec<Val>> {
        let mut x = inputs.and_then(|v| v.into_iter().next());
        for (k, layer) in layers.iter().enumerate() {
            if let (Some(name), Some(next)) = (layer_name(layer), layers.get(k + 1)) {
                let class = str_of(next, "class_name").unwrap_or_default();
                self.consumers
                    .insert(format!("{scope}{name}"), vec![class.to_owned()]);
            }
            let class = str_of(layer, "class_name").unwrap_or_default();
            let cfg = layer.get("config").unwrap_or(&Json::Null);
            let name = layer_name(layer)
                .ok_or_else(|| unsupported(format!("a layer of model {model_name} has no name")))?
                .to_owned();
            if x.is_none() {
                // The first layer (InputLayer, or any layer given `batch_input_shape`)
                // declares the input.
                x = Some(self.graph_input(cfg, &name)?);
            }
            if class == "InputLayer" {
                continue;
            }
            let v = x.take().expect("set above");
            let outs = self.layer(
                class,
                layer,
                &Json::Null,
                &name,
                vec![v],
                model_name,
                scope,
                depth,
            )?;
            x = Some(outs.into_iter().next().ok_or_else(|| {
                unsupported(format!(
                    "layer {name} of a Sequential model gives no output"
                ))
            })?);
        }
        x.map(|v| vec![v])
            .ok_or_else(|| unsupported(format!("model {model_name} has no layers")))
    }

    /// The model's image input, from its `batch_shape` (Keras 3) or `batch_input_shape`
    /// (Keras 2): NHWC, declared in NCHW with a free batch.
    fn graph_input(&mut self, cfg: &Json, name: &str) -> R<Val> {
        if self.input.is_some() {
            return Err(unsupported(
                "the model has several inputs; retrain runs models of one image input",
            ));
        }
        let shape = cfg
            .get("batch_shape")
            .or_else(|| cfg.get("batch_input_shape"))
            .and_then(Json::as_array)
            .ok_or_else(|| unsupported(format!("input {name} declares no shape")))?;
        let dim = |v: &Json| v.as_u64().map(|d| d as usize).filter(|&d| d <= 1 << 20);
        let dims: Vec<Option<usize>> = shape.iter().map(dim).collect();
        let (dims, rank) = match dims.as_slice() {
            &[_, h, w, c] => (vec![None, c, h, w], 4),
            _ => {
                return Err(unsupported(format!(
                    "input {name} has shape {shape:?}; an image model takes (batch, height, \
                     width, channels)"
                )));
            }
        };
        let name = self.ir.unique(name);
        self.input = Some(ValueInfo {
            name: name.clone(),
            dims,
        });
        Ok(Val {
            name,
            rank,
            nchw: true,
        })
    }

    /// The value in NCHW (a Transpose from NHWC where it is held so).
    fn nchw(&mut self, v: &Val) -> String {
        if v.nchw || v.rank != 4 {
            return v.name.clone();
        }
        self.ir.layout_view(&v.name, false)
    }

    /// The value in Keras' own layout and element order.
    fn plain(&mut self, v: &Val) -> String {
        if !v.nchw || v.rank != 4 {
            return v.name.clone();
        }
        self.ir.layout_view(&v.name, true)
    }

    fn param(&mut self, name: &str, layer: &str) -> R<String> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| unsupported(format!("layer {layer}: the file has no weight {name}")))?;
        Ok(self.ir.param(name, &t.shape))
    }

    fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A float constant that broadcasts over channels: `c` values shaped (c, 1, 1) for a
    /// value held in NCHW, else as they are.
    fn channel_constant(&mut self, base: &str, data: Vec<f32>, x: &Val) -> String {
        let shape = if data.len() == 1 {
            vec![]
        } else if x.rank == 4 && x.nchw {
            vec![data.len(), 1, 1]
        } else {
            vec![data.len()]
        };
        self.ir.float_constant(base, shape, data)
    }

    /// A node the analysis refuses, saying why; the rest of the model is still translated.
    fn refused(&mut self, name: &str, class: &str, xs: &[Val], why: String) -> Vec<Val> {
        let inputs = xs.iter().map(|v| v.name.clone()).collect();
        let y = self.ir.push(
            name,
            &format!("Keras {class}"),
            inputs,
            vec![("why", Attr::String(why))],
        );
        vec![Val {
            name: y,
            rank: xs.first().map_or(4, |v| v.rank),
            nchw: xs.first().is_some_and(|v| v.nchw),
        }]
    }

    /// `op` then the layer's `activation`; the last node is named after the layer.
    fn with_activation(
        &mut self,
        name: &str,
        op: &str,
        inputs: Vec<String>,
        attrs: Vec<(&str, Attr)>,
        activation: &str,
        out: (usize, bool),
    ) -> R<Val> {
        let (rank, nchw) = out;
        if activation == "linear" {
            let y = self.ir.push(name, op, inputs, attrs);
            return Ok(Val {
                name: y,
                rank,
                nchw,
            });
        }
        let y = self
            .ir
            .push(&format!("{name}/{}", op.to_lowercase()), op, inputs, attrs);
        self.activation(
            name,
            &Val {
                name: y,
                rank,
                nchw,
            },
            activation,
        )
    }

    /// A Keras activation function by name, as nodes ending in one named `name`.
    fn activation(&mut self, name: &str, x: &Val, activation: &str) -> R<Val> {
        let same = |y: String| Val {
            name: y,
            rank: x.rank,
            nchw: x.nchw,
        };
        let xn = x.name.clone();
        let unary = |b: &mut Self, op: &str| b.ir.push(name, op, vec![xn.clone()], vec![]);
        let y = match activation {
            "linear" => return Ok(x.clone()),
            "relu" => unary(self, "Relu"),
            "relu6" => self.ir.push(
                name,
                "Clip",
                vec![xn],
                vec![("min", Attr::Float(0.0)), ("max", Attr::Float(6.0))],
            ),
            "sigmoid" => unary(self, "Sigmoid"),
            "tanh" => unary(self, "Tanh"),
            "softplus" => unary(self, "Softplus"),
            "exponential" => unary(self, "Exp"),
            "gelu" => unary(self, "Gelu"),
            "hard_swish" | "hard_silu" => unary(self, "HardSwish"),
            "swish" | "silu" => {
                let s = self.ir.push(
                    &format!("{name}/sigmoid"),
                    "Sigmoid",
                    vec![xn.clone()],
                    vec![],
                );
                self.ir.push(name, "Mul", vec![xn, s], vec![])
            }
            "hard_sigmoid" => {
                // Keras 2: clip(0.2·x + 0.5, 0, 1); Keras 3: relu6(x + 3) / 6.
                let alpha = if self.keras2 { 0.2 } else { 1.0 / 6.0 };
                self.ir.push(
                    name,
                    "HardSigmoid",
                    vec![xn],
                    vec![("alpha", Attr::Float(alpha)), ("beta", Attr::Float(0.5))],
                )
            }
            "elu" => self
                .ir
                .push(name, "Elu", vec![xn], vec![("alpha", Attr::Float(1.0))]),
            "selu" => {
                let e = self.ir.push(
                    &format!("{name}/elu"),
                    "Elu",
                    vec![xn],
                    vec![("alpha", Attr::Float(1.673_263_2))],
                );
                let s = self
                    .ir
                    .float_constant(&format!("{name}/scale"), vec![], vec![1.050_701]);
                self.ir.push(name, "Mul", vec![e, s], vec![])
            }
            "leaky_relu" => self.ir.push(
                name,
                "LeakyRelu",
                vec![xn],
                vec![("alpha", Attr::Float(0.2))],
            ),
            "softmax" | "log_softmax" => {
                let axis = if x.rank == 4 && x.nchw { 1 } else { -1 };
                let op = if activation == "softmax" {
                    "Softmax"
                } else {
                    "LogSoftmax"
                };
                self.ir
                    .push(name, op, vec![xn], vec![("axis", Attr::Int(axis))])
            }
            other => {
                return Ok(self
                    .refused(
                        name,
                        "Activation",
                        std::slice::from_ref(x),
                        format!("the activation `{other}` is not supported"),
                    )
                    .remove(0));
            }
        };
        Ok(same(y))
    }

    /// One call of a layer on `xs` (`call`: its inbound node, where the model lists one);
    /// its outputs.
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &mut self,
        class: &str,
        layer: &Json,
        call: &Json,
        name: &str,
        xs: Vec<Val>,
        model_name: &str,
        scope: &str,
        depth: usize,
    ) -> R<Vec<Val>> {
        let cfg = layer.get("config").unwrap_or(&Json::Null);
        if matches!(class, "Functional" | "Model" | "Sequential") {
            return self.model(class, cfg, &format!("{scope}{name}/"), Some(xs), depth + 1);
        }
        let is_operation = str_of(layer, "module")
            .is_some_and(|m| m.starts_with("keras.src.ops") || m.starts_with("keras.ops"));
        if self.first_layer.is_none() {
            // What the first layer computes (an operation's or a TFOpLambda's own).
            let what = match (is_operation, str_of(cfg, "function")) {
                (true, _) => format!("operation {class}"),
                (false, Some(f)) if class == "TFOpLambda" => format!("tf.{f}"),
                _ => class.to_owned(),
            };
            self.first_layer = Some((what, model_name.to_owned()));
        }
        // Keras 3 records an operation on symbolic tensors (`x + 3.0` in MobileNetV3's
        // hard sigmoid) as a layer of module `keras.src.ops.*`, its numbers in the call.
        if is_operation {
            return self.operation(class, call, name, &xs).map(|v| vec![v]);
        }
        if str_of(cfg, "data_format") == Some("channels_first") {
            return Ok(self.refused(
                name,
                class,
                &xs,
                "channels_first layers are not supported (Keras' default, channels_last, is)"
                    .into(),
            ));
        }
        let activation = match cfg.get("activation") {
            None | Some(Json::Null) => "linear".to_owned(),
            Some(Json::String(s)) => s.clone(),
            Some(other) => str_of(other, "class_name")
                .or_else(|| other.get("config").and_then(|c| str_of(c, "name")))
                .unwrap_or("a custom function")
                .to_owned(),
        };
        let single = |xs: &[Val]| -> R<Val> {
            match xs {
                [x] => Ok(x.clone()),
                _ => Err(unsupported(format!(
                    "layer {name} ({class}) takes one input, not {}",
                    xs.len()
                ))),
            }
        };
        let spatial = |x: &Val| -> R<()> {
            if x.rank == 4 {
                Ok(())
            } else {
                Err(unsupported(format!(
                    "layer {name} ({class}) on a rank-{} tensor (an image map expected)",
                    x.rank
                )))
            }
        };
        let out = match class {
            "Conv2D"
            | "Convolution2D"
            | "DepthwiseConv2D"
            | "SeparableConv2D"
            | "SeparableConvolution2D" => {
                let x = single(&xs)?;
                spatial(&x)?;
                if class == "Conv2D"
                    && self.is_head_conv(layer, cfg, &format!("{scope}{name}"), &activation)
                {
                    return self.head_conv(name, &x).map(|v| vec![v]);
                }
                return self
                    .conv(class, cfg, name, &x, &activation)
                    .map(|v| vec![v]);
            }
            "Dense" => {
                let x = single(&xs)?;
                if x.rank == 4 {
                    return self.pointwise_dense(name, &x, &activation).map(|v| vec![v]);
                }
                if x.rank != 2 {
                    return Ok(self.refused(
                        name,
                        class,
                        &xs,
                        format!(
                            "a Dense layer on a rank-{} tensor is not supported (Flatten or pool first)",
                            x.rank
                        ),
                    ));
                }
                let w = self.param(&format!("{name}.weight"), name)?;
                let mut inputs = vec![x.name.clone(), w];
                if self.has(&format!("{name}.bias")) {
                    inputs.push(self.param(&format!("{name}.bias"), name)?);
                }
                let attrs = vec![("transB", Attr::Int(1))];
                self.with_activation(name, "Gemm", inputs, attrs, &activation, (2, false))?
            }
            "BatchNormalization" => {
                let x = single(&xs)?;
                let axis = match cfg.get("axis") {
                    Some(Json::Array(a)) if a.len() == 1 => a[0].as_i64(),
                    Some(v) => v.as_i64(),
                    None => Some(-1),
                };
                let last = x.rank as i64 - 1;
                if !(x.rank == 4 && matches!(axis, Some(-1) | Some(3))) {
                    return Ok(self.refused(
                        name,
                        class,
                        &xs,
                        format!(
                            "a BatchNormalization over axis {axis:?} of a rank-{} tensor is not \
                             supported (the channels of an image map are; last axis {last})",
                            x.rank
                        ),
                    ));
                }
                let xn = self.nchw(&x);
                let mut inputs = vec![xn];
                for s in ["weight", "bias", "running_mean", "running_var"] {
                    inputs.push(self.param(&format!("{name}.{s}"), name)?);
                }
                let epsilon = cfg.get("epsilon").and_then(Json::as_f64).unwrap_or(1e-3);
                let momentum = cfg.get("momentum").and_then(Json::as_f64).unwrap_or(0.99);
                let attrs = vec![
                    ("epsilon", Attr::Float(epsilon as f32)),
                    ("momentum", Attr::Float(momentum as f32)),
                ];
                let y = self.ir.push(name, "BatchNormalization", inputs, attrs);
                Val {
                    name: y,
                    rank: 4,
                    nchw: true,
                }
            }
            "Activation" => {
                let x = single(&xs)?;
                self.activation(name, &x, &activation)?
            }
            "ReLU" => {
                let x = single(&xs)?;
                let max = cfg.get("max_value").and_then(Json::as_f64);
                let slope = cfg
                    .get("negative_slope")
                    .and_then(Json::as_f64)
                    .unwrap_or(0.0);
                let threshold = cfg.get("threshold").and_then(Json::as_f64).unwrap_or(0.0);
                let (sloped, thresholded) = (slope != 0.0, threshold != 0.0);
                let y = match (max, sloped, thresholded) {
                    (None, false, false) => {
                        self.ir.push(name, "Relu", vec![x.name.clone()], vec![])
                    }
                    (Some(m), false, false) => self.ir.push(
                        name,
                        "Clip",
                        vec![x.name.clone()],
                        vec![("min", Attr::Float(0.0)), ("max", Attr::Float(m as f32))],
                    ),
                    (None, true, false) => self.ir.push(
                        name,
                        "LeakyRelu",
                        vec![x.name.clone()],
                        vec![("alpha", Attr::Float(slope as f32))],
                    ),
                    _ => {
                        return Ok(self.refused(
                            name,
                            class,
                            &xs,
                            "a ReLU with a threshold, or with both a slope and a maximum, is not supported"
                                .into(),
                        ));
                    }
                };
                Val { name: y, ..x }
            }
            "LeakyReLU" => {
                let x = single(&xs)?;
                let slope = cfg
                    .get("negative_slope")
                    .or_else(|| cfg.get("alpha"))
                    .and_then(Json::as_f64)
                    .unwrap_or(0.3);
                let y = self.ir.push(
                    name,
                    "LeakyRelu",
                    vec![x.name.clone()],
                    vec![("alpha", Attr::Float(slope as f32))],
                );
                Val { name: y, ..x }
            }
            "ELU" => {
                let x = single(&xs)?;
                let alpha = cfg.get("alpha").and_then(Json::as_f64).unwrap_or(1.0);
                let y = self.ir.push(
                    name,
                    "Elu",
                    vec![x.name.clone()],
                    vec![("alpha", Attr::Float(alpha as f32))],
                );
                Val { name: y, ..x }
            }
            "PReLU" => {
                // max(0, x) + alpha · min(0, x) = relu(x) − alpha · relu(−x), alpha trained.
                let x = single(&xs)?;
                let xn = self.nchw(&x);
                let alpha = self.param(&format!("{name}.weight"), name)?;
                let pos = self.ir.push(
                    &format!("{name}/positive"),
                    "Relu",
                    vec![xn.clone()],
                    vec![],
                );
                let neg = self
                    .ir
                    .push(&format!("{name}/negated"), "Neg", vec![xn], vec![]);
                let neg = self
                    .ir
                    .push(&format!("{name}/negative"), "Relu", vec![neg], vec![]);
                let neg = self
                    .ir
                    .push(&format!("{name}/sloped"), "Mul", vec![alpha, neg], vec![]);
                let y = self.ir.push(name, "Sub", vec![pos, neg], vec![]);
                Val {
                    name: y,
                    rank: x.rank,
                    nchw: x.rank == 4,
                }
            }
            "Softmax" => {
                let x = single(&xs)?;
                let axis = match cfg.get("axis") {
                    Some(Json::Array(a)) if a.len() == 1 => a[0].as_i64(),
                    Some(v) => v.as_i64(),
                    None => Some(-1),
                }
                .unwrap_or(-1);
                let axis = self.axis(axis, &x, name)?;
                let y = self.ir.push(
                    name,
                    "Softmax",
                    vec![x.name.clone()],
                    vec![("axis", Attr::Int(axis as i64))],
                );
                Val { name: y, ..x }
            }
            "Add" | "Subtract" | "Multiply" | "Average" => self.merge(class, name, &xs)?,
            "Concatenate" => {
                let rank = xs.first().map_or(0, |v| v.rank);
                if xs.is_empty() || xs.iter().any(|v| v.rank != rank) {
                    return Err(unsupported(format!(
                        "layer {name}: Concatenate of tensors of different ranks"
                    )));
                }
                let axis = cfg.get("axis").and_then(Json::as_i64).unwrap_or(-1);
                let nchw = rank == 4 && xs.iter().any(|v| v.nchw);
                let names: Vec<String> = xs
                    .iter()
                    .map(|v| if nchw { self.nchw(v) } else { self.plain(v) })
                    .collect();
                let held = Val {
                    name: String::new(),
                    rank,
                    nchw,
                };
                let axis = self.axis(axis, &held, name)?;
                let y = self.ir.push(
                    name,
                    "Concat",
                    names,
                    vec![("axis", Attr::Int(axis as i64))],
                );
                Val { name: y, ..held }
            }
            "ZeroPadding2D" => {
                let x = single(&xs)?;
                spatial(&x)?;
                let [t, b, l, r] = margins(cfg.get("padding"), name)?;
                let xn = self.nchw(&x);
                let y = self.ir.push(
                    name,
                    "Pad",
                    vec![xn],
                    vec![("pads", Attr::Ints(vec![0, 0, t, l, 0, 0, b, r]))],
                );
                Val {
                    name: y,
                    rank: 4,
                    nchw: true,
                }
            }
            "Cropping2D" => {
                let x = single(&xs)?;
                spatial(&x)?;
                let [t, b, l, r] = margins(cfg.get("cropping"), name)?;
                let end = |m: i64| if m == 0 { i64::MAX } else { -m };
                let xn = self.nchw(&x);
                let starts = self.ir.int_constant(&format!("{name}/starts"), vec![t, l]);
                let ends = self
                    .ir
                    .int_constant(&format!("{name}/ends"), vec![end(b), end(r)]);
                let axes = self.ir.int_constant(&format!("{name}/axes"), vec![2, 3]);
                let y = self
                    .ir
                    .push(name, "Slice", vec![xn, starts, ends, axes], vec![]);
                Val {
                    name: y,
                    rank: 4,
                    nchw: true,
                }
            }
            "MaxPooling2D" | "MaxPool2D" | "AveragePooling2D" | "AvgPool2D" => {
                let x = single(&xs)?;
                spatial(&x)?;
                let size = pair(cfg, "pool_size", Some([2, 2]), name)?;
                let strides = pair(cfg, "strides", Some(size), name)?;
                let xn = self.nchw(&x);
                let max = class.starts_with("Max");
                let mut attrs = vec![
                    ("kernel_shape", Attr::Ints(size.to_vec())),
                    ("strides", Attr::Ints(strides.to_vec())),
                    ("auto_pad", self.padding(cfg, name)?),
                ];
                if !max {
                    // TensorFlow's "same" average leaves the padding out of the count.
                    attrs.push(("count_include_pad", Attr::Int(0)));
                }
                let op = if max { "MaxPool" } else { "AveragePool" };
                let y = self.ir.push(name, op, vec![xn], attrs);
                Val {
                    name: y,
                    rank: 4,
                    nchw: true,
                }
            }
            "GlobalAveragePooling2D"
            | "GlobalAvgPool2D"
            | "GlobalMaxPooling2D"
            | "GlobalMaxPool2D" => {
                let x = single(&xs)?;
                spatial(&x)?;
                let keep = cfg.get("keepdims").and_then(Json::as_bool).unwrap_or(false);
                let op = if class.starts_with("GlobalMax") {
                    "GlobalMaxPool"
                } else {
                    "GlobalAveragePool"
                };
                let xn = self.nchw(&x);
                if keep {
                    let y = self.ir.push(name, op, vec![xn], vec![]);
                    Val {
                        name: y,
                        rank: 4,
                        nchw: true,
                    }
                } else {
                    let p = self.ir.push(&format!("{name}/pool"), op, vec![xn], vec![]);
                    let y = self
                        .ir
                        .push(name, "Flatten", vec![p], vec![("axis", Attr::Int(1))]);
                    Val {
                        name: y,
                        rank: 2,
                        nchw: false,
                    }
                }
            }
            "Flatten" => {
                let x = single(&xs)?;
                if x.rank <= 2 {
                    return Ok(vec![x]);
                }
                let xp = self.plain(&x);
                let y = self
                    .ir
                    .push(name, "Flatten", vec![xp], vec![("axis", Attr::Int(1))]);
                Val {
                    name: y,
                    rank: 2,
                    nchw: false,
                }
            }
            "Dropout" | "SpatialDropout2D" => {
                let x = single(&xs)?;
                let rate = cfg.get("rate").and_then(Json::as_f64).unwrap_or(0.5);
                if !(0.0..1.0).contains(&rate) {
                    return Err(unsupported(format!("layer {name}: dropout rate {rate}")));
                }
                let y = self.ir.push(
                    name,
                    "Dropout",
                    vec![x.name.clone()],
                    vec![("ratio", Attr::Float(rate as f32))],
                );
                Val { name: y, ..x }
            }
            // Identities at inference; their noise is a regulariser of Keras' training.
            "GaussianNoise" | "GaussianDropout" | "AlphaDropout" | "ActivityRegularization" => {
                let x = single(&xs)?;
                let y = self.ir.push(name, "Identity", vec![x.name.clone()], vec![]);
                Val { name: y, ..x }
            }
            "Reshape" => {
                let x = single(&xs)?;
                let target: Vec<i64> = cfg
                    .get("target_shape")
                    .and_then(Json::as_array)
                    .and_then(|a| a.iter().map(Json::as_i64).collect::<Option<Vec<_>>>())
                    .filter(|t| !t.is_empty() && t.iter().all(|&d| d == -1 || d > 0))
                    .ok_or_else(|| unsupported(format!("layer {name}: no valid target_shape")))?;
                if let (2, &[1, 1, c]) = (x.rank, target.as_slice()) {
                    // A vector to a 1×1 map (squeeze-excitation): both layouts are one.
                    let shape = self
                        .ir
                        .int_constant(&format!("{name}/shape"), vec![0, c, 1, 1]);
                    let y = self
                        .ir
                        .push(name, "Reshape", vec![x.name.clone(), shape], vec![]);
                    Val {
                        name: y,
                        rank: 4,
                        nchw: true,
                    }
                } else {
                    let xp = self.plain(&x);
                    let mut shape = vec![0];
                    shape.extend(&target);
                    let rank = shape.len();
                    let shape = self.ir.int_constant(&format!("{name}/shape"), shape);
                    let y = self.ir.push(name, "Reshape", vec![xp, shape], vec![]);
                    Val {
                        name: y,
                        rank,
                        nchw: false,
                    }
                }
            }
            "Rescaling" => {
                let x = single(&xs)?;
                let scale = floats(cfg.get("scale"))
                    .ok_or_else(|| unsupported(format!("layer {name}: no scale")))?;
                let offset = floats(cfg.get("offset")).unwrap_or_else(|| vec![0.0]);
                let s = self.channel_constant(&format!("{name}/scale"), scale, &x);
                let offset_is_zero = offset.iter().all(|&o| o == 0.0);
                let scaled_name = if offset_is_zero {
                    name.to_owned()
                } else {
                    format!("{name}/scaled")
                };
                let mut y = self
                    .ir
                    .push(&scaled_name, "Mul", vec![x.name.clone(), s], vec![]);
                if !offset_is_zero {
                    let o = self.channel_constant(&format!("{name}/offset"), offset, &x);
                    y = self.ir.push(name, "Add", vec![y, o], vec![]);
                }
                Val { name: y, ..x }
            }
            "Normalization" => {
                let x = single(&xs)?;
                return self.normalization(cfg, name, &x).map(|v| vec![v]);
            }
            // InceptionResNetV2 (Keras 3): x[0] + x[1] · scale.
            "CustomScaleLayer" => {
                let scale = cfg
                    .get("scale")
                    .and_then(Json::as_f64)
                    .ok_or_else(|| unsupported(format!("layer {name}: no scale")))?;
                let [a, b] = xs.as_slice() else {
                    return Err(unsupported(format!(
                        "layer {name} (CustomScaleLayer) takes two inputs, not {}",
                        xs.len()
                    )));
                };
                let k =
                    self.ir
                        .float_constant(&format!("{name}/scale"), vec![], vec![scale as f32]);
                let scaled = Val {
                    name: self.ir.push(
                        &format!("{name}/scaled"),
                        "Mul",
                        vec![b.name.clone(), k],
                        vec![],
                    ),
                    ..b.clone()
                };
                self.merge("Add", name, &[a.clone(), scaled])?
            }
            // ConvNeXt's per-channel scale of a block's output (its `gamma`, trained).
            "LayerScale" => {
                let x = single(&xs)?;
                let g = self.param(&format!("{name}.weight"), name)?;
                let g = self.channel_param(name, &g, &x);
                let y = self.ir.push(name, "Mul", vec![x.name.clone(), g], vec![]);
                Val { name: y, ..x }
            }
            // Identities at inference (ConvNeXt's drop path).
            "StochasticDepth" => {
                let x = single(&xs)?;
                let y = self.ir.push(name, "Identity", vec![x.name.clone()], vec![]);
                Val { name: y, ..x }
            }
            "LayerNormalization" => {
                let x = single(&xs)?;
                return self.layer_norm(cfg, name, &x).map(|v| vec![v]);
            }
            "TFOpLambda" if str_of(cfg, "function").is_some_and(|f| tf_op(f).is_some()) => {
                let function = str_of(cfg, "function").unwrap_or_default();
                return self
                    .tf_operation(function, call, name, &xs)
                    .map(|v| vec![v]);
            }
            "TFOpLambda" | "SlicingOpLambda" => {
                let function = str_of(cfg, "function").unwrap_or("an operation");
                return Ok(self.refused(
                    name,
                    class,
                    &xs,
                    format!(
                        "the TensorFlow operation tf.{function} (a {class} layer) is not \
                         supported: rebuild the model with Keras layers, or export it to ONNX \
                         or TFLite"
                    ),
                ));
            }
            "Lambda" => {
                return Ok(self.refused(
                    name,
                    class,
                    &xs,
                    "a Lambda layer is Python code, which retrain does not run: rebuild the \
                     model without it, or export it to ONNX or TFLite"
                        .into(),
                ));
            }
            other => {
                return Ok(self.refused(
                    name,
                    other,
                    &xs,
                    format!("the Keras layer {other} is not supported (see README: Keras layers)"),
                ));
            }
        };
        Ok(vec![out])
    }

    /// A Keras 3 operation on symbolic tensors and numbers (`x + 3.0`, `x * (1 / 6)`,
    /// `a * b`): its tensors are `xs`, its numbers in the call's `args`.
    fn operation(&mut self, class: &str, call: &Json, name: &str, xs: &[Val]) -> R<Val> {
        let args = call.get("args").and_then(Json::as_array);
        let mut tensors = xs.iter();
        let mut operands = Vec::new();
        for a in args.into_iter().flatten() {
            match a {
                Json::Number(n) => operands.push(Operand::Number(n.as_f64().unwrap_or(0.0) as f32)),
                Json::Object(_) => match tensors.next() {
                    Some(v) => operands.push(Operand::Tensor(v.clone())),
                    None => break,
                },
                _ => {}
            }
        }
        self.binary(class, name, operands, xs)
    }

    /// An element-wise operation (a Keras 3 operation's class: Add, Subtract, Multiply,
    /// Divide) of two operands, tensors or numbers; `xs`: the layer's tensors, for a
    /// refusal.
    fn binary(&mut self, class: &str, name: &str, operands: Vec<Operand>, xs: &[Val]) -> R<Val> {
        let op = match class {
            "Add" => "Add",
            "Subtract" => "Sub",
            "Multiply" => "Mul",
            "Divide" | "TrueDivide" => "Div",
            other => {
                return Ok(self
                    .refused(
                        name,
                        other,
                        xs,
                        format!("the Keras operation {other} is not supported"),
                    )
                    .remove(0));
            }
        };
        let [p, q] = operands.as_slice() else {
            return Err(unsupported(format!(
                "layer {name}: the operation {class} of {} operands (two expected)",
                operands.len()
            )));
        };
        let like = match (p, q) {
            (Operand::Tensor(v), _) | (_, Operand::Tensor(v)) => v.clone(),
            _ => return Err(unsupported(format!("layer {name}: {class} of two numbers"))),
        };
        let held = |b: &mut Self, o: &Operand, k: usize| match o {
            Operand::Tensor(v) if v.rank == 4 && like.nchw && !v.nchw => b.nchw(v),
            Operand::Tensor(v) if v.rank == 4 && !like.nchw && v.nchw => b.plain(v),
            Operand::Tensor(v) => v.name.clone(),
            Operand::Number(c) => {
                b.ir.float_constant(&format!("{name}/operand{k}"), vec![], vec![*c])
            }
        };
        let (a, b) = (held(self, p, 0), held(self, q, 1));
        let y = self.ir.push(name, op, vec![a, b], vec![]);
        Ok(Val { name: y, ..like })
    }

    /// Whether a Conv2D is a classifier: a linear 1×1 convolution with a bias on a 1×1 map
    /// (its build shape says so) whose output only a Flatten reads (MobileNetV3's and
    /// MobileNet's `Logits`/`conv_preds`).
    fn is_head_conv(&self, layer: &Json, cfg: &Json, scoped: &str, activation: &str) -> bool {
        let one_by_one = layer
            .get("build_config")
            .and_then(|b| b.get("input_shape"))
            .and_then(Json::as_array)
            .is_some_and(|s| s.len() == 4 && s[1] == 1 && s[2] == 1);
        let pointwise = |key: &str| {
            matches!(cfg.get(key), Some(Json::Array(a)) if a.iter().all(|v| v == 1))
                || cfg.get(key).and_then(Json::as_i64) == Some(1)
        };
        let name = str_of(cfg, "name").unwrap_or_default();
        one_by_one
            && activation == "linear"
            && pointwise("kernel_size")
            && (cfg.get("strides").is_none() || pointwise("strides"))
            && cfg.get("groups").and_then(Json::as_i64).unwrap_or(1) == 1
            && self.has(&format!("{name}.bias"))
            && self
                .consumers
                .get(scoped)
                .is_some_and(|c| c.len() == 1 && c[0] == "Flatten")
    }

    /// A classifier convolution (see [`Self::is_head_conv`]) as a Gemm on the flattened
    /// 1×1 map, its kernel read as (out, in) (`head_kernels` reshapes it once built).
    fn head_conv(&mut self, name: &str, x: &Val) -> R<Val> {
        let weight = format!("{name}.weight");
        let shape = self
            .tensors
            .get(&weight)
            .map(|t| t.shape.clone())
            .ok_or_else(|| unsupported(format!("layer {name}: the file has no weight {weight}")))?;
        let &[out, inp, 1, 1] = shape.as_slice() else {
            return Err(unsupported(format!(
                "layer {name}: a kernel of shape {shape:?}"
            )));
        };
        let flat = self.ir.push(
            &format!("{name}/flatten"),
            "Flatten",
            vec![x.name.clone()],
            vec![("axis", Attr::Int(1))],
        );
        let w = self.ir.param(&weight, &[out, inp]);
        self.head_kernels.push(weight);
        let b = self.param(&format!("{name}.bias"), name)?;
        let y = self.ir.push(
            name,
            "Gemm",
            vec![flat, w, b],
            vec![("transB", Attr::Int(1))],
        );
        Ok(Val {
            name: y,
            rank: 2,
            nchw: false,
        })
    }

    /// A Keras 2 TFOpLambda layer calling a TensorFlow operation retrain knows (see
    /// [`tf_op`]): `x` is the call's tensor, a binary operation's `y` a number or a tensor
    /// among its kwargs.
    fn tf_operation(&mut self, function: &str, call: &Json, name: &str, xs: &[Val]) -> R<Val> {
        let Some(x) = xs.first() else {
            return Err(unsupported(format!(
                "layer {name}: tf.{function} of no tensor"
            )));
        };
        match tf_op(function) {
            Some(TfOp::Activation(a)) => self.activation(name, x, a),
            Some(TfOp::Binary(class)) => {
                let y = call
                    .as_array()
                    .and_then(|e| e.get(3))
                    .and_then(|kw| kw.get("y"));
                let y = match (y, xs.get(1)) {
                    (Some(Json::Number(n)), _) => Operand::Number(n.as_f64().unwrap_or(0.0) as f32),
                    (Some(v), Some(t)) if is_tensor_ref(v) => Operand::Tensor(t.clone()),
                    _ => {
                        return Err(unsupported(format!(
                            "layer {name}: tf.{function} without a number or tensor `y`"
                        )));
                    }
                };
                self.binary(class, name, vec![Operand::Tensor(x.clone()), y], xs)
            }
            None => Err(unsupported(format!(
                "layer {name}: tf.{function} is not supported"
            ))),
        }
    }

    /// A per-channel weight `w` (shape (C)) shaped to broadcast over `x`: (C, 1, 1) for a
    /// map held in NCHW.
    fn channel_param(&mut self, name: &str, w: &str, x: &Val) -> String {
        if !(x.rank == 4 && x.nchw) {
            return w.to_owned();
        }
        let c = self.tensors.get(w).map_or(0, |t| t.numel()) as i64;
        let shape = self
            .ir
            .int_constant(&format!("{name}/channels"), vec![c, 1, 1]);
        self.ir.push(
            &format!("{w}/per_channel"),
            "Reshape",
            vec![w.to_owned(), shape],
            vec![],
        )
    }

    /// A Dense layer on an image map (ConvNeXt's pointwise layers): a 1×1 convolution
    /// with the layer's (out, in) kernel.
    fn pointwise_dense(&mut self, name: &str, x: &Val, activation: &str) -> R<Val> {
        let w = self.param(&format!("{name}.weight"), name)?;
        let (out, inp) = match self.tensors[&w].shape.as_slice() {
            &[o, i] => (o as i64, i as i64),
            s => {
                return Err(unsupported(format!(
                    "layer {name}: a kernel of shape {s:?}"
                )));
            }
        };
        let shape = self
            .ir
            .int_constant(&format!("{name}/kernel_shape"), vec![out, inp, 1, 1]);
        let kernel = self
            .ir
            .push(&format!("{name}/kernel"), "Reshape", vec![w, shape], vec![]);
        let xn = self.nchw(x);
        let mut inputs = vec![xn, kernel];
        if self.has(&format!("{name}.bias")) {
            inputs.push(self.param(&format!("{name}.bias"), name)?);
        }
        let attrs = vec![
            ("kernel_shape", Attr::Ints(vec![1, 1])),
            ("strides", Attr::Ints(vec![1, 1])),
        ];
        self.with_activation(name, "Conv", inputs, attrs, activation, (4, true))
    }

    /// LayerNormalization over the last (channel) axis, Keras' formula: (x − mean) /
    /// √(variance + ε) · γ + β, per position of an image map or per row of a matrix.
    fn layer_norm(&mut self, cfg: &Json, name: &str, x: &Val) -> R<Val> {
        let axis = match cfg.get("axis") {
            Some(Json::Array(a)) if a.len() == 1 => a[0].as_i64(),
            Some(v) => v.as_i64(),
            None => Some(-1),
        };
        let last = x.rank as i64 - 1;
        if !(axis == Some(-1) || axis == Some(last)) {
            return Ok(self
                .refused(
                    name,
                    "LayerNormalization",
                    std::slice::from_ref(x),
                    format!("a LayerNormalization over axis {axis:?} (the last axis is supported)"),
                )
                .remove(0));
        }
        if cfg.get("rms_scaling").and_then(Json::as_bool) == Some(true) {
            return Ok(self
                .refused(
                    name,
                    "LayerNormalization",
                    std::slice::from_ref(x),
                    "a LayerNormalization with rms_scaling is not supported".into(),
                )
                .remove(0));
        }
        let eps = cfg.get("epsilon").and_then(Json::as_f64).unwrap_or(1e-3) as f32;
        let (weight, bias) = (format!("{name}.weight"), format!("{name}.bias"));
        let gamma = self
            .has(&weight)
            .then(|| self.param(&weight, name))
            .transpose()?;
        let beta = self
            .has(&bias)
            .then(|| self.param(&bias, name))
            .transpose()?;
        if !(x.rank == 4 && x.nchw) {
            // The channels are the last axis as it is held: ONNX's LayerNormalization.
            let c = self
                .tensors
                .get(&weight)
                .or_else(|| self.tensors.get(&bias));
            let Some(c) = c.map(|t| t.numel()) else {
                return Err(unsupported(format!(
                    "layer {name}: a LayerNormalization without scale or centre"
                )));
            };
            let gamma = gamma.unwrap_or_else(|| {
                self.ir
                    .float_constant(&format!("{name}/ones"), vec![c], vec![1.0; c])
            });
            let mut inputs = vec![x.name.clone(), gamma];
            inputs.extend(beta);
            let y = self.ir.push(
                name,
                "LayerNormalization",
                inputs,
                vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(eps))],
            );
            return Ok(Val {
                name: y,
                ..x.clone()
            });
        }
        // An NCHW map: the statistics over axis 1, per position.
        let over_channels = vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(1))];
        let mean = self.ir.push(
            &format!("{name}/mean"),
            "ReduceMean",
            vec![x.name.clone()],
            over_channels.clone(),
        );
        let d = self.ir.push(
            &format!("{name}/centred"),
            "Sub",
            vec![x.name.clone(), mean],
            vec![],
        );
        let sq = self.ir.push(
            &format!("{name}/squared"),
            "Mul",
            vec![d.clone(), d.clone()],
            vec![],
        );
        let var = self.ir.push(
            &format!("{name}/variance"),
            "ReduceMean",
            vec![sq],
            over_channels,
        );
        let e = self
            .ir
            .float_constant(&format!("{name}/epsilon"), vec![], vec![eps]);
        let v = self
            .ir
            .push(&format!("{name}/variance_eps"), "Add", vec![var, e], vec![]);
        let s = self
            .ir
            .push(&format!("{name}/std"), "Sqrt", vec![v], vec![]);
        // The last node carries the layer's name (a stage, a --layer).
        let step = |last: bool, what: &str| {
            if last {
                name.to_owned()
            } else {
                format!("{name}/{what}")
            }
        };
        let (scaled, shifted) = (gamma.is_some(), beta.is_some());
        let mut y = self.ir.push(
            &step(!scaled && !shifted, "normalised"),
            "Div",
            vec![d, s],
            vec![],
        );
        if let Some(g) = gamma {
            let g = self.channel_param(name, &g, x);
            y = self
                .ir
                .push(&step(!shifted, "scaled"), "Mul", vec![y, g], vec![]);
        }
        if let Some(b) = beta {
            let b = self.channel_param(name, &b, x);
            y = self.ir.push(name, "Add", vec![y, b], vec![]);
        }
        Ok(Val {
            name: y,
            ..x.clone()
        })
    }

    /// An axis of a Keras tensor as an axis of the value that holds it.
    fn axis(&self, axis: i64, x: &Val, name: &str) -> R<usize> {
        let r = x.rank as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if !(0..r).contains(&a) {
            return Err(unsupported(format!(
                "layer {name}: axis {axis} of a rank-{r} tensor"
            )));
        }
        Ok(if x.rank == 4 && x.nchw {
            TO_NCHW_AXIS[a as usize]
        } else {
            a as usize
        })
    }

    fn padding(&self, cfg: &Json, name: &str) -> R<Attr> {
        match str_of(cfg, "padding").unwrap_or("valid") {
            // TensorFlow's "same" pads the extra row or column at the end.
            "same" => Ok(Attr::String("SAME_UPPER".into())),
            "valid" => Ok(Attr::String("VALID".into())),
            other => Err(unsupported(format!("layer {name}: padding `{other}`"))),
        }
    }

    /// Conv2D, DepthwiseConv2D, SeparableConv2D (a depthwise then a pointwise convolution).
    fn conv(&mut self, class: &str, cfg: &Json, name: &str, x: &Val, activation: &str) -> R<Val> {
        let kernel = pair(cfg, "kernel_size", None, name)?;
        let strides = pair(cfg, "strides", Some([1, 1]), name)?;
        let dilations = pair(cfg, "dilation_rate", Some([1, 1]), name)?;
        let xn = self.nchw(x);
        let attrs =
            |group: i64, kernel: [i64; 2], strides: [i64; 2], dilations: [i64; 2], pad: Attr| {
                vec![
                    ("kernel_shape", Attr::Ints(kernel.to_vec())),
                    ("strides", Attr::Ints(strides.to_vec())),
                    ("dilations", Attr::Ints(dilations.to_vec())),
                    ("group", Attr::Int(group)),
                    ("auto_pad", pad),
                ]
            };
        let pad = self.padding(cfg, name)?;
        let bias = format!("{name}.bias");
        let with_bias = |b: &mut Self, mut inputs: Vec<String>| -> R<Vec<String>> {
            if b.has(&bias) {
                inputs.push(b.param(&bias, name)?);
            }
            Ok(inputs)
        };
        let depthwise_group = |b: &Self, w: &str| -> R<i64> {
            let m = cfg
                .get("depth_multiplier")
                .and_then(Json::as_i64)
                .unwrap_or(1);
            let out = b.tensors[w].shape[0] as i64;
            if m < 1 || out % m != 0 {
                return Err(unsupported(format!(
                    "layer {name}: depth multiplier {m} for {out} output channels"
                )));
            }
            Ok(out / m)
        };
        match class {
            "DepthwiseConv2D" => {
                let w = self.param(&format!("{name}.weight"), name)?;
                let group = depthwise_group(self, &w)?;
                let inputs = with_bias(self, vec![xn, w])?;
                let a = attrs(group, kernel, strides, dilations, pad);
                self.with_activation(name, "Conv", inputs, a, activation, (4, true))
            }
            "SeparableConv2D" | "SeparableConvolution2D" => {
                let dw = self.param(&format!("{name}.depthwise.weight"), name)?;
                let group = depthwise_group(self, &dw)?;
                let a = attrs(group, kernel, strides, dilations, pad);
                let d = self
                    .ir
                    .push(&format!("{name}/depthwise"), "Conv", vec![xn, dw], a);
                let pw = self.param(&format!("{name}.pointwise.weight"), name)?;
                let inputs = with_bias(self, vec![d, pw])?;
                let a = attrs(1, [1, 1], [1, 1], [1, 1], Attr::String("VALID".into()));
                self.with_activation(name, "Conv", inputs, a, activation, (4, true))
            }
            _ => {
                let w = self.param(&format!("{name}.weight"), name)?;
                let group = cfg.get("groups").and_then(Json::as_i64).unwrap_or(1).max(1);
                let inputs = with_bias(self, vec![xn, w])?;
                let a = attrs(group, kernel, strides, dilations, pad);
                self.with_activation(name, "Conv", inputs, a, activation, (4, true))
            }
        }
    }

    /// Add, Subtract, Multiply, Average of tensors of one rank (broadcast as Keras does).
    fn merge(&mut self, class: &str, name: &str, xs: &[Val]) -> R<Val> {
        let rank = xs.first().map_or(0, |v| v.rank);
        if xs.len() < 2
            || xs.iter().any(|v| v.rank != rank)
            || (class == "Subtract" && xs.len() != 2)
        {
            return Err(unsupported(format!(
                "layer {name}: {class} of {} tensors of ranks {:?}",
                xs.len(),
                xs.iter().map(|v| v.rank).collect::<Vec<_>>()
            )));
        }
        let nchw = rank == 4 && xs.iter().any(|v| v.nchw);
        let names: Vec<String> = xs
            .iter()
            .map(|v| if nchw { self.nchw(v) } else { self.plain(v) })
            .collect();
        let op = match class {
            "Subtract" => "Sub",
            "Multiply" => "Mul",
            _ => "Add",
        };
        let last = names.len() - 2;
        let mut acc = names[0].clone();
        for (i, n) in names[1..].iter().enumerate() {
            let base = if i == last && class != "Average" {
                name.to_owned()
            } else {
                format!("{name}/{}{}", op.to_lowercase(), i + 1)
            };
            acc = self.ir.push(&base, op, vec![acc, n.clone()], vec![]);
        }
        if class == "Average" {
            let k = self.ir.float_constant(
                &format!("{name}/count"),
                vec![],
                vec![1.0 / xs.len() as f32],
            );
            acc = self.ir.push(name, "Mul", vec![acc, k], vec![]);
        }
        Ok(Val {
            name: acc,
            rank,
            nchw,
        })
    }

    /// Normalization: (x − mean) / max(√variance, 1e-7), Keras' formula, with the mean and
    /// variance the layer adapted (its weights) or was given (its config).
    fn normalization(&mut self, cfg: &Json, name: &str, x: &Val) -> R<Val> {
        if cfg.get("invert").and_then(Json::as_bool) == Some(true) {
            return Ok(self
                .refused(
                    name,
                    "Normalization",
                    std::slice::from_ref(x),
                    "an inverted Normalization is not supported".into(),
                )
                .remove(0));
        }
        let axis = match cfg.get("axis") {
            Some(Json::Array(a)) if a.len() == 1 => a[0].as_i64(),
            Some(Json::Null) => None,
            Some(v) => v.as_i64(),
            None => Some(-1),
        };
        if !(axis == Some(-1) || x.rank == 4 && axis == Some(3)) {
            return Err(unsupported(format!(
                "layer {name}: a Normalization over axis {axis:?} (the last axis is supported)"
            )));
        }
        let mut stat = |key: &str| {
            let weight = format!("{name}.{key}");
            match self.tensors.get(&weight) {
                Some(t) => {
                    self.weights_in_constants.push(weight);
                    Some(t.data.clone())
                }
                None => floats(cfg.get(key)),
            }
        };
        let (Some(mean), Some(var)) = (stat("mean"), stat("variance")) else {
            return Err(unsupported(format!(
                "layer {name}: a Normalization with neither adapted nor given mean and variance"
            )));
        };
        if mean.len() != var.len() || mean.is_empty() {
            return Err(unsupported(format!(
                "layer {name}: {} means and {} variances",
                mean.len(),
                var.len()
            )));
        }
        let inv: Vec<f32> = var
            .iter()
            .map(|&v| 1.0 / v.max(0.0).sqrt().max(1e-7))
            .collect();
        let xn = self.nchw(x);
        let held = Val {
            name: xn.clone(),
            rank: x.rank,
            nchw: x.rank == 4,
        };
        let m = self.channel_constant(&format!("{name}/mean"), mean, &held);
        let s = self.channel_constant(&format!("{name}/inverse_std"), inv, &held);
        let c = self
            .ir
            .push(&format!("{name}/centred"), "Sub", vec![xn, m], vec![]);
        let y = self.ir.push(name, "Mul", vec![c, s], vec![]);
        Ok(Val { name: y, ..held })
    }
}

/// What a Keras 2 TFOpLambda's TensorFlow function computes, where retrain knows it.
enum TfOp {
    /// An element-wise operation of two operands, as a Keras 3 operation's class.
    Binary(&'static str),
    /// A Keras activation by name.
    Activation(&'static str),
}

fn tf_op(function: &str) -> Option<TfOp> {
    Some(match function {
        "__operators__.add" | "math.add" => TfOp::Binary("Add"),
        "math.subtract" | "__operators__.sub" => TfOp::Binary("Subtract"),
        "math.multiply" | "__operators__.mul" => TfOp::Binary("Multiply"),
        "math.truediv" | "math.divide" | "__operators__.truediv" => TfOp::Binary("Divide"),
        "nn.relu" => TfOp::Activation("relu"),
        "nn.relu6" => TfOp::Activation("relu6"),
        "math.sigmoid" | "nn.sigmoid" => TfOp::Activation("sigmoid"),
        "math.tanh" | "nn.tanh" => TfOp::Activation("tanh"),
        "nn.silu" | "nn.swish" => TfOp::Activation("swish"),
        "math.exp" => TfOp::Activation("exponential"),
        "nn.elu" => TfOp::Activation("elu"),
        "nn.softplus" | "math.softplus" => TfOp::Activation("softplus"),
        _ => return None,
    })
}

/// A layer entry's name: Keras 3 and 2 both put it in `config`; Keras 2 also beside it.
fn layer_name(layer: &Json) -> Option<&str> {
    layer
        .get("config")
        .and_then(|c| str_of(c, "name"))
        .or_else(|| str_of(layer, "name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Weights;
    use burn::prelude::Device;

    /// The residual fixture's config (Keras 3, Functional) and weights.
    fn residual() -> (Json, BTreeMap<String, WeightTensor>) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/keras_graph/residual.keras"
        );
        let file = super::super::read_keras_archive(&std::fs::read(path).unwrap()).unwrap();
        let config = serde_json::from_str(&file.config.unwrap()).unwrap();
        (config, file.tensors)
    }

    /// The layer entry named `name`.
    fn layer<'a>(config: &'a mut Json, name: &str) -> &'a mut Json {
        config["config"]["layers"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|l| l["config"]["name"] == name)
            .unwrap()
    }

    /// Translates `config` and runs the load-time analysis every command runs: its error.
    fn refusal(config: &Json, tensors: &BTreeMap<String, WeightTensor>) -> String {
        let mut tensors = tensors.clone();
        let g = match translate(&config.to_string(), Some("3.15.1"), &mut tensors) {
            Ok(g) => g,
            Err(e) => return e.to_string(),
        };
        let w = Weights {
            tensors,
            ..Weights::empty()
        };
        match crate::graph::analyse(&g, &w, None, &Device::default()) {
            Ok(_) => "accepted".into(),
            Err(e) => e.to_string(),
        }
    }

    /// Hostile or unsupported configs are one-line errors naming the layer, never a panic
    /// or an allocation the file does not justify.
    #[test]
    fn hostile_configs_are_errors_naming_the_layer() {
        let (config, tensors) = residual();
        assert_eq!(refusal(&config, &tensors), "accepted");
        type Edit = fn(&mut Json);
        let cases: [(Edit, &str, &str); 8] = [
            (
                |c| layer(c, "elu")["class_name"] = "Lambda".into(),
                "elu",
                "a Lambda layer is Python code",
            ),
            (
                |c| layer(c, "elu")["class_name"] = "FancyAttention".into(),
                "elu",
                "the Keras layer FancyAttention is not supported",
            ),
            (
                |c| {
                    layer(c, "conv2")["inbound_nodes"][0]["args"][0]["config"]["keras_history"] =
                        serde_json::json!(["nowhere", 0, 0])
                },
                "conv2",
                "which no earlier layer gives (a cycle or a dangling input)",
            ),
            (
                // A cycle: conv1 reads a later layer's output.
                |c| {
                    layer(c, "conv1")["inbound_nodes"][0]["args"][0]["config"]["keras_history"] =
                        serde_json::json!(["elu", 0, 0])
                },
                "conv1",
                "a cycle or a dangling input",
            ),
            (
                |c| {
                    layer(c, "conv2")["config"]["kernel_size"] = serde_json::json!([1_u64 << 40, 3])
                },
                "conv2",
                "is not one or two integers",
            ),
            (
                |c| {
                    layer(c, "input")["config"]["batch_shape"] =
                        serde_json::json!([null, 1 << 20, 1 << 20, 3])
                },
                "input",
                "exceed",
            ),
            (
                |c| layer(c, "sep_bn")["config"]["axis"] = 1.into(),
                "sep_bn",
                "BatchNormalization over axis Some(1)",
            ),
            (
                |c| layer(c, "conv1")["config"]["data_format"] = "channels_first".into(),
                "conv1",
                "channels_first layers are not supported",
            ),
        ];
        for (edit, at, why) in cases {
            let mut c = config.clone();
            edit(&mut c);
            let msg = refusal(&c, &tensors);
            assert!(msg.contains(at) && msg.contains(why), "{at}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        // A weight the config needs and the file lacks.
        let mut t = tensors.clone();
        t.remove("conv2.weight");
        let msg = refusal(&config, &t);
        assert!(
            msg.contains("layer conv2: the file has no weight conv2.weight"),
            "{msg}"
        );
        // A config that is not JSON, and one with no layers.
        let mut t = tensors.clone();
        assert!(translate("{\"class_name\": ", None, &mut t).is_err());
        let e = translate(
            r#"{"class_name": "Functional", "config": {"name": "m"}}"#,
            None,
            &mut t,
        )
        .unwrap_err();
        assert!(e.to_string().contains("model m lists no layers"), "{e}");
    }

    /// Models nested past the depth limit are refused before the recursion goes deep.
    #[test]
    fn deeply_nested_models_are_refused() {
        let mut inner = serde_json::json!({"class_name": "Sequential", "config": {"name": "m0",
            "layers": [{"class_name": "InputLayer",
                        "config": {"name": "in", "batch_shape": [null, 8, 8, 3]}}]}});
        for i in 1..40 {
            inner = serde_json::json!({"class_name": "Sequential", "config": {"name": format!("m{i}"),
                "layers": [{"class_name": "InputLayer",
                            "config": {"name": "in", "batch_shape": [null, 8, 8, 3]}},
                           inner]}});
        }
        let e = translate(&inner.to_string(), None, &mut BTreeMap::new()).unwrap_err();
        assert!(e.to_string().contains("nested more than"), "{e}");
    }
}
