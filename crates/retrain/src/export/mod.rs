//! **Shipping a model to other runtimes**: a loaded [`Model`] (a bundle's or a pretrained
//! one) written as an ONNX file that ONNX Runtime, TensorRT, OpenVINO or a browser runs
//! without retrain.
//!
//! The file takes the normalised NCHW float tensor retrain feeds the network (named
//! `input`, batch dimension free) and gives `logits` (when the model has a classifier) and
//! `features` (the classifier's input, what `retrain embed` writes). Its
//! `metadata_props` say how to make that input from an image (`retrain.preprocess`, JSON:
//! resize, crop, interpolation, mean, std, bgr) and name the classes (`retrain.classes`,
//! a JSON list). Opset 17, or the model file's own where that is higher.
//!
//! A zoo network is written layer by layer from its modules (`zoo.rs`); a model that runs
//! its file's own graph is written from that graph, each node brought up to the export's
//! opset (`graph.rs`). Every parameter is the model's current value, under its origin name.

mod graph;
mod zoo;

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Result, bail};
use burn::prelude::*;
use prost::Message;
use serde::Serialize;

use crate::outputs::write_atomic;
use crate::weights::onnx::proto::{
    AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TensorTypeProto, TypeProto,
    ValueInfoProto,
};
use crate::zoo::layers::{Act, shape_and_values};
use crate::zoo::network::Classifier;
use crate::zoo::{ArchConfig, Interpolation, Model};

/// The opset exports follow (a graph of a later opset keeps its own).
pub const OPSET: i64 = 17;
/// The names of the exported model's input and outputs.
pub const INPUT: &str = "input";
pub const LOGITS: &str = "logits";
pub const FEATURES: &str = "features";
/// The metadata keys.
pub const META_PREPROCESS: &str = "retrain.preprocess";
pub const META_CLASSES: &str = "retrain.classes";

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub opset: i64,
    pub nodes: usize,
    pub parameters: usize,
    pub input: [usize; 3],
    /// The batch size a graph exported for one batch size keeps (its Reshapes name it);
    /// `None`: any batch size.
    pub fixed_batch: Option<usize>,
    pub outputs: Vec<&'static str>,
    pub bytes: usize,
}

/// The preprocessing as the metadata states it: `(pixel / 255 − mean) / std` per channel
/// of the `crop`×`crop` center crop of the image resized (shorter side) to `resize`.
#[derive(Serialize)]
struct PreprocessMeta {
    resize: usize,
    crop: usize,
    interpolation: Interpolation,
    mean: [f64; 3],
    std: [f64; 3],
    /// Channels (and `mean`, `std`) in BGR order.
    bgr: bool,
    layout: &'static str,
}

/// The ONNX file of `model`, whose classes are `classes` (one per classifier output, or
/// empty where unknown).
pub fn to_onnx(model: &Model, classes: &[String]) -> Result<(Vec<u8>, Exported)> {
    let [h, w] = input_size(model);
    let (channels, batch) = match &model.config {
        ArchConfig::Graph(c) => (c.input_channels, c.fixed_batch),
        _ => (3, None),
    };
    let mut g = Builder::new(match &model.config {
        ArchConfig::Graph(c) => c.graph.opset.max(OPSET),
        _ => OPSET,
    });
    // The last stage's map, kept for a classifier that runs on it (SqueezeNet's).
    let mut map = None;
    let pooled = match &model.config {
        ArchConfig::Graph(c) => graph::emit(&mut g, c, &model.network, INPUT)?,
        _ => {
            let last = zoo::emit(&mut g, &model.network, INPUT, [h, w])?;
            let pooled = g.global_pool(&last);
            map = Some(last);
            pooled
        }
    };
    g.rename_output(&pooled, FEATURES);
    let mut outputs = vec![FEATURES];
    let classes_out = match &model.network.classifier {
        Some(c) => {
            let logits = match (&map, c.on_map) {
                (Some(map), true) => classifier_on_map(&mut g, c, model, map),
                _ => classifier(&mut g, c, model, FEATURES)?,
            };
            g.rename_output(&logits, LOGITS);
            outputs.insert(0, LOGITS);
            c.num_classes()
        }
        None => 0,
    };
    if !classes.is_empty() && classes.len() != classes_out {
        bail!(
            "{} class names for a classifier of {classes_out} outputs",
            classes.len()
        );
    }
    let feature_dim = model.config.feature_dim();
    let p = &model.preprocess;
    let meta = PreprocessMeta {
        resize: p.resize,
        crop: p.crop,
        interpolation: p.interpolation,
        mean: p.mean,
        std: p.std,
        bgr: p.bgr,
        layout: "NCHW float32: (pixel / 255 - mean) / std, channels in RGB order (BGR when bgr)",
    };
    let dims = |d: &[Option<usize>]| TypeProto {
        tensor_type: Some(TensorTypeProto {
            elem_type: FLOAT,
            shape: Some(TensorShapeProto {
                dim: d
                    .iter()
                    .map(|v| match v {
                        Some(n) => Dimension {
                            dim_value: Some(*n as i64),
                            dim_param: None,
                        },
                        None => Dimension {
                            dim_value: None,
                            dim_param: Some("batch".into()),
                        },
                    })
                    .collect(),
            }),
        }),
    };
    let value_info = |name: &str, d: &[Option<usize>]| ValueInfoProto {
        name: name.into(),
        r#type: Some(dims(d)),
    };
    let mut out_info = vec![value_info(FEATURES, &[batch, Some(feature_dim)])];
    if classes_out > 0 {
        out_info.insert(0, value_info(LOGITS, &[batch, Some(classes_out)]));
    }
    let parameters = g.parameters;
    let nodes = g.nodes.len();
    let opset = g.opset;
    let proto = ModelProto {
        ir_version: 8,
        producer_name: "retrain".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "{}: input `{INPUT}` is the preprocessed image batch (see metadata {META_PREPROCESS}); outputs `{LOGITS}` (class scores before softmax) and `{FEATURES}` (the classifier's input)",
            model.name
        ),
        graph: Some(GraphProto {
            node: g.nodes,
            name: model.name.clone(),
            initializer: g.initializers,
            input: vec![value_info(
                INPUT,
                &[batch, Some(channels), Some(h), Some(w)],
            )],
            output: out_info,
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        metadata_props: vec![
            StringStringEntryProto {
                key: META_PREPROCESS.into(),
                value: serde_json::to_string(&meta)?,
            },
            StringStringEntryProto {
                key: META_CLASSES.into(),
                value: serde_json::to_string(classes)?,
            },
        ],
    };
    let bytes = proto.encode_to_vec();
    let summary = Exported {
        opset,
        nodes,
        parameters,
        input: [channels, h, w],
        fixed_batch: batch,
        outputs,
        bytes: bytes.len(),
    };
    Ok((bytes, summary))
}

/// Writes `model` to `path` as ONNX (a temporary file, then renamed: an existing file is
/// replaced only by a complete one).
pub fn write_onnx(path: &Path, model: &Model, classes: &[String]) -> Result<Exported> {
    let (bytes, summary) = to_onnx(model, classes)?;
    write_atomic(path, |w| Ok(w.write_all(&bytes)?))?;
    Ok(summary)
}

/// The network's input height and width.
fn input_size(model: &Model) -> [usize; 2] {
    match &model.config {
        ArchConfig::Graph(c) => c.input_size,
        _ => [model.preprocess.crop; 2],
    }
}

fn classifier(g: &mut Builder, c: &Classifier, model: &Model, x: &str) -> Result<String> {
    let (hidden, out) = model.config.classifier_prefixes();
    let mut x = x.to_owned();
    for (i, h) in c.hidden.iter().enumerate() {
        let name = match (hidden, c.hidden.len()) {
            (Some(prefix), 1) => prefix.to_owned(),
            _ => format!("classifier.hidden.{i}"),
        };
        x = g.linear(h, &name, &x);
        x = g.act(c.hidden_act, &x);
    }
    Ok(g.linear(&c.out, &out, &x))
}

/// SqueezeNet's classifier: the output layer as the origin's 1x1 convolution (its weight
/// `[classes, C, 1, 1]`, as the file holds it) on the last map, ReLU, global average pool.
fn classifier_on_map(g: &mut Builder, c: &Classifier, model: &Model, map: &str) -> String {
    let (_, out) = model.config.classifier_prefixes();
    let w = c.out.weight.val().transpose();
    let [k, d] = w.dims();
    let w = g.param_of(&format!("{out}.weight"), w.reshape([k, d, 1, 1]));
    let mut inputs = vec![map.to_owned(), w];
    if let Some(b) = &c.out.bias {
        inputs.push(g.param_of(&format!("{out}.bias"), b.val()));
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let y = g.node(
        "Conv",
        &refs,
        vec![attr_ints("kernel_shape", &[1, 1])],
        &out,
    );
    let y = g.act(Act::Relu, &y);
    g.global_pool(&y)
}

const FLOAT: i32 = 1;
const INT64: i32 = 7;

/// The graph being written: nodes in order, initializers, and the value names taken.
struct Builder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    names: BTreeSet<String>,
    opset: i64,
    /// Float parameters written, counted.
    parameters: usize,
}

/// A node attribute (ONNX's AttributeProto type codes).
fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: 2,
        ..Default::default()
    }
}

fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        f,
        r#type: 1,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: 7,
        ..Default::default()
    }
}

fn attr_floats(name: &str, floats: &[f32]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        floats: floats.to_vec(),
        r#type: 6,
        ..Default::default()
    }
}

fn attr_s(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: s.as_bytes().to_vec(),
        r#type: 3,
        ..Default::default()
    }
}

fn attr_t(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        t: Some(t),
        r#type: 4,
        ..Default::default()
    }
}

fn float_tensor(name: &str, shape: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: FLOAT,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn int_tensor(name: &str, shape: &[usize], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: shape.iter().map(|&d| d as i64).collect(),
        data_type: INT64,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

impl Builder {
    fn new(opset: i64) -> Self {
        Self {
            nodes: vec![],
            initializers: vec![],
            names: [INPUT, LOGITS, FEATURES].map(String::from).into(),
            opset,
            parameters: 0,
        }
    }

    /// A value name not taken yet, from `hint`.
    fn fresh(&mut self, hint: &str) -> String {
        let hint = if hint.is_empty() { "v" } else { hint };
        let mut name = hint.to_owned();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{hint}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Appends a node with the given outputs (names already taken).
    fn node_with(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) {
        let name = self.fresh(&format!(
            "{}/{op}",
            outputs.first().map_or("node", String::as_str)
        ));
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs,
            name,
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        });
    }

    /// Appends a one-output node and returns its output's name (from `hint`).
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
        hint: &str,
    ) -> String {
        let out = self.fresh(hint);
        self.node_with(op, inputs, vec![out.clone()], attrs);
        out
    }

    /// A float initializer: a parameter (counted), or a BatchNorm statistic (`counted`
    /// false: PyTorch counts neither as a parameter).
    fn weight(&mut self, name: &str, shape: &[usize], data: &[f32], counted: bool) -> String {
        let name = self.fresh(name);
        if counted {
            self.parameters += data.len();
        }
        self.initializers.push(float_tensor(&name, shape, data));
        name
    }

    fn param_of<const D: usize>(&mut self, name: &str, t: Tensor<D>) -> String {
        let (shape, data) = shape_and_values(t);
        self.weight(name, &shape, &data, true)
    }

    fn statistic_of<const D: usize>(&mut self, name: &str, t: Tensor<D>) -> String {
        let (shape, data) = shape_and_values(t);
        self.weight(name, &shape, &data, false)
    }

    /// A float constant (not a parameter).
    fn float_const(&mut self, hint: &str, shape: &[usize], data: &[f32]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(float_tensor(&name, shape, data));
        name
    }

    fn int_const(&mut self, hint: &str, shape: &[usize], data: &[i64]) -> String {
        let name = self.fresh(hint);
        self.initializers.push(int_tensor(&name, shape, data));
        name
    }

    /// A 1-D int64 constant (axes, shapes, pads).
    fn ints(&mut self, hint: &str, data: &[i64]) -> String {
        self.int_const(hint, &[data.len()], data)
    }

    fn scalar(&mut self, hint: &str, v: f32) -> String {
        self.float_const(hint, &[], &[v])
    }

    /// Renames the value `from` (the output of the last node that wrote it) to `to`.
    fn rename_output(&mut self, from: &str, to: &str) {
        if from == to {
            return;
        }
        match self
            .nodes
            .iter_mut()
            .rev()
            .find(|n| n.output.iter().any(|o| o == from))
        {
            Some(n) => {
                for o in &mut n.output {
                    if o == from {
                        *o = to.into();
                    }
                }
                for later in self.nodes.iter_mut() {
                    for i in &mut later.input {
                        if i == from {
                            *i = to.into();
                        }
                    }
                }
            }
            // The graph input itself, or an initializer: an Identity names it.
            None => self.node_with("Identity", &[from], vec![to.into()], vec![]),
        }
    }

    /// Global average pooling of an NCHW value to `[N, C]`.
    fn global_pool(&mut self, x: &str) -> String {
        let p = self.node("GlobalAveragePool", &[x], vec![], "pool");
        self.node("Flatten", &[&p], vec![attr_i("axis", 1)], "pooled")
    }

    /// A burn `Linear` (weights `[in, out]`) as a Gemm under PyTorch's naming and layout.
    fn linear(&mut self, l: &burn::nn::Linear, prefix: &str, x: &str) -> String {
        let w = self.param_of(&format!("{prefix}.weight"), l.weight.val().transpose());
        let mut inputs = vec![x.to_owned(), w];
        if let Some(b) = &l.bias {
            inputs.push(self.param_of(&format!("{prefix}.bias"), b.val()));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.node("Gemm", &refs, vec![attr_i("transB", 1)], prefix)
    }

    /// GELU before opset 20 has it: `x · Φ(x)` with the error function, or its tanh
    /// approximation.
    fn gelu(&mut self, x: &str, tanh: bool) -> String {
        let half = self.scalar("half", 0.5);
        let one = self.scalar("one", 1.0);
        let inner = if tanh {
            let c = self.scalar("gelu_c", 0.044715);
            let k = self.scalar("sqrt_2_over_pi", (2.0 / std::f32::consts::PI).sqrt());
            let x2 = self.node("Mul", &[x, x], vec![], "gelu_x2");
            let x3 = self.node("Mul", &[&x2, x], vec![], "gelu_x3");
            let cx3 = self.node("Mul", &[&x3, &c], vec![], "gelu_cx3");
            let sum = self.node("Add", &[x, &cx3], vec![], "gelu_sum");
            let arg = self.node("Mul", &[&sum, &k], vec![], "gelu_arg");
            self.node("Tanh", &[&arg], vec![], "gelu_tanh")
        } else {
            let r = self.scalar("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
            let s = self.node("Mul", &[x, &r], vec![], "gelu_scaled");
            self.node("Erf", &[&s], vec![], "gelu_erf")
        };
        let p = self.node("Add", &[&inner, &one], vec![], "gelu_1p");
        let hx = self.node("Mul", &[x, &half], vec![], "gelu_half");
        self.node("Mul", &[&hx, &p], vec![], "gelu")
    }

    fn act(&mut self, act: Act, x: &str) -> String {
        match act {
            Act::Identity => x.to_owned(),
            Act::Relu => self.node("Relu", &[x], vec![], "relu"),
            Act::Relu6 => {
                let lo = self.scalar("zero", 0.0);
                let hi = self.scalar("six", 6.0);
                self.node("Clip", &[x, &lo, &hi], vec![], "relu6")
            }
            // ONNX has no SiLU before opset 24's Swish: x · sigmoid(x).
            Act::Silu => {
                let s = self.node("Sigmoid", &[x], vec![], "sigmoid");
                self.node("Mul", &[x, &s], vec![], "silu")
            }
            Act::Hardswish => self.node("HardSwish", &[x], vec![], "hardswish"),
            Act::Gelu => self.gelu(x, false),
            Act::Tanh => self.node("Tanh", &[x], vec![], "tanh"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_never_repeat_and_keep_the_reserved_ones() {
        let mut b = Builder::new(OPSET);
        assert_eq!(b.fresh("conv"), "conv");
        assert_eq!(b.fresh("conv"), "conv_1");
        assert_eq!(b.fresh("input"), "input_1");
        assert_eq!(b.fresh(""), "v");
    }

    #[test]
    fn renaming_an_output_renames_its_readers() {
        let mut b = Builder::new(OPSET);
        let r = b.node("Relu", &[INPUT], vec![], "r");
        let s = b.node("Sigmoid", &[&r], vec![], "s");
        b.rename_output(&r, "named");
        assert_eq!(b.nodes[0].output, ["named"]);
        assert_eq!(b.nodes[1].input, ["named"]);
        // The graph input is named through an Identity.
        b.rename_output(INPUT, "copy");
        assert_eq!(b.nodes[2].op_type, "Identity");
        assert_eq!(b.nodes[2].output, ["copy"]);
        let _ = s;
    }
}
