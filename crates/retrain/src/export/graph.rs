//! A model that runs its file's own graph, written back as ONNX: the graph's nodes up to
//! the classifier's input, each in the export's opset, with the model's current parameters
//! under the initializers' names. Ops whose signature changed before 17 are rewritten:
//! attributes that became inputs (an older ONNX file's, and the front-ends' — TFLite,
//! Keras and CNTK translate to ONNX ops but keep a Clip's bounds or a Pad's pads as
//! attributes, which the runtime reads either way), Softmax's 2-D coercion before 13,
//! Upsample; and retrain's own folded shape arithmetic becomes Shape arithmetic again.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, anyhow, bail};

use super::{
    Builder, attr_f, attr_floats, attr_i, attr_ints, attr_s, attr_t, float_tensor, int_tensor,
};
use crate::graph::fold::BATCH_SHAPE;
use crate::graph::{Attr, GraphConfig, HostData, HostTensor, Node};
use crate::weights::onnx::proto::{AttributeProto, TensorProto};
use crate::zoo::layers::TensorMap;
use crate::zoo::network::Network;

/// Writes the graph of `cfg` through its last stage, reading `input`; returns the pooled
/// features `[N, C]` (what the classifier reads).
pub(super) fn emit(
    g: &mut Builder,
    cfg: &GraphConfig,
    net: &Network,
    input: &str,
) -> Result<String> {
    let graph = &cfg.graph;
    if !graph.extra_inputs.is_empty() {
        bail!("the graph has inputs besides the image; it cannot be exported as an image model");
    }
    if graph.opset < 7 {
        bail!(
            "the graph is at opset {} (before 7's broadcasting rules); it cannot be exported",
            graph.opset
        );
    }
    let last = cfg
        .stages
        .last()
        .ok_or_else(|| anyhow!("the graph has no stages"))?;
    let mut params = TensorMap::new();
    for stage in &net.stages {
        stage.export(&mut params);
    }
    let mut w = Writer {
        g,
        cfg,
        params,
        values: BTreeMap::from([(graph.input.name.clone(), input.to_owned())]),
        statistics: graph
            .nodes
            .iter()
            .filter(|n| n.op == "BatchNormalization")
            .flat_map(|n| n.inputs.iter().skip(3).take(2).cloned())
            .collect(),
        input: input.to_owned(),
    };
    for node in &graph.nodes[..last.end] {
        w.node(node)
            .with_context(|| format!("node `{}` ({}) cannot be exported", node.name, node.op))?;
    }
    let x = w.value(&last.value)?;
    let g = w.g;
    // The pooling the network applies to its last stage (see `graph::value::F::into_r4`).
    Ok(match last.shape.len() {
        2 => x,
        1 => {
            let axes = g.ints("axes", &[1]);
            g.node("Unsqueeze", &[&x, &axes], vec![], "pooled")
        }
        3 => reduce_mean(g, &x, &[1]),
        r => reduce_mean(g, &x, &(2..r as i64).collect::<Vec<_>>()),
    })
}

/// The mean over `axes`, not kept (ReduceMean's axes are an input from opset 18).
fn reduce_mean(g: &mut Builder, x: &str, axes: &[i64]) -> String {
    let keep = attr_i("keepdims", 0);
    if g.opset >= 18 {
        let a = g.ints("axes", axes);
        g.node("ReduceMean", &[x, &a], vec![keep], "pooled")
    } else {
        g.node(
            "ReduceMean",
            &[x],
            vec![attr_ints("axes", axes), keep],
            "pooled",
        )
    }
}

struct Writer<'a> {
    g: &'a mut Builder,
    cfg: &'a GraphConfig,
    /// The model's parameters by initializer name (not yet written).
    params: TensorMap,
    /// Graph value name → the name written (values, and initializers once written).
    values: BTreeMap<String, String>,
    /// The BatchNorms' running means and variances (not parameters, as PyTorch counts).
    statistics: BTreeSet<String>,
    input: String,
}

fn attribute(name: &str, a: &Attr) -> AttributeProto {
    match a {
        Attr::Int(i) => attr_i(name, *i),
        Attr::Float(f) => attr_f(name, *f),
        Attr::Ints(v) => attr_ints(name, v),
        Attr::Floats(v) => attr_floats(name, v),
        Attr::String(s) => attr_s(name, s),
        Attr::Tensor(t) => attr_t(name, host_tensor("value", t)),
    }
}

fn host_tensor(name: &str, t: &HostTensor) -> TensorProto {
    match &t.data {
        HostData::Int(v) => int_tensor(name, &t.shape, v),
        HostData::Float(v) => float_tensor(name, &t.shape, v),
    }
}

impl Writer<'_> {
    /// The written name of graph value `name`: a node's output, or an initializer or
    /// constant, written on first use.
    fn value(&mut self, name: &str) -> Result<String> {
        if name.is_empty() {
            return Ok(String::new());
        }
        if let Some(v) = self.values.get(name) {
            return Ok(v.clone());
        }
        let written = if let Some(t) = self.params.remove(name) {
            let counted = !self.statistics.contains(name);
            self.g.weight(name, &t.shape, &t.data, counted)
        } else if let Some(c) = self.cfg.graph.constants.get(name) {
            let n = self.g.fresh(name);
            self.g.initializers.push(host_tensor(&n, c));
            n
        } else {
            bail!("input `{name}` is neither a node's output nor a weight of the model");
        };
        self.values.insert(name.to_owned(), written.clone());
        Ok(written)
    }

    fn inputs(&mut self, node: &Node) -> Result<Vec<String>> {
        node.inputs.iter().map(|i| self.value(i)).collect()
    }

    /// Names the node's outputs (the first `count`, or all).
    fn outputs(&mut self, node: &Node, count: Option<usize>) -> Vec<String> {
        let n = count.unwrap_or(node.outputs.len()).min(node.outputs.len());
        node.outputs[..n]
            .iter()
            .map(|o| {
                let w = if o.is_empty() {
                    String::new()
                } else {
                    self.g.fresh(o)
                };
                self.values.insert(o.clone(), w.clone());
                w
            })
            .collect()
    }

    /// The node's attributes, less those named.
    fn attrs(node: &Node, without: &[&str]) -> Vec<AttributeProto> {
        node.attrs
            .iter()
            .filter(|(k, _)| !without.contains(&k.as_str()))
            .map(|(k, a)| attribute(k, a))
            .collect()
    }

    fn emit(
        &mut self,
        op: &str,
        inputs: &[String],
        outputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) {
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.g.node_with(op, &refs, outputs, attrs);
    }

    /// `inputs` with `extra` appended at `index`, empty names filling any gap.
    fn with_input(mut inputs: Vec<String>, index: usize, extra: String) -> Vec<String> {
        if inputs.len() < index {
            inputs.resize(index, String::new());
        }
        inputs.insert(index.min(inputs.len()), extra);
        inputs
    }

    fn node(&mut self, node: &Node) -> Result<()> {
        let opset = self.cfg.graph.opset;
        let op = node.op.as_str();
        if op == BATCH_SHAPE {
            return self.batch_shape(node);
        }
        let inputs = self.inputs(node)?;
        match op {
            "BatchNormalization" => {
                let out = self.outputs(node, Some(1));
                let attrs = Self::attrs(
                    node,
                    &["spatial", "training_mode", "is_test", "consumed_inputs"],
                );
                self.emit(op, &inputs, out, attrs);
            }
            // Inference: a Dropout is the identity (its mask output cannot be read).
            "Dropout" => {
                let out = self.outputs(node, Some(1));
                self.emit("Identity", &inputs[..1], out, vec![]);
            }
            "Pad" if node.string("mode") == Some("symmetric") => {
                bail!("symmetric (TFLite MIRROR_PAD) padding has no ONNX op");
            }
            "Gelu" if self.g.opset < 20 => {
                let tanh = match node.string("approximate").unwrap_or("none") {
                    "none" => false,
                    "tanh" => true,
                    other => bail!("GELU approximation {other} is not supported"),
                };
                let y = self.g.gelu(&inputs[0], tanh);
                let out = self.outputs(node, None);
                self.g.rename_output(&y, &out[0]);
            }
            "Squeeze" | "Unsqueeze" if node.attrs.contains_key("axes") => {
                let out = self.outputs(node, None);
                let mut inputs = inputs;
                if let Some(axes) = node.ints("axes") {
                    inputs.push(self.g.ints("axes", axes));
                }
                self.emit(op, &inputs, out, vec![]);
            }
            "Split" if node.attrs.contains_key("split") => {
                let out = self.outputs(node, None);
                let mut inputs = inputs;
                if let Some(split) = node.ints("split") {
                    inputs.push(self.g.ints("split", split));
                }
                self.emit(op, &inputs, out, Self::attrs(node, &["split"]));
            }
            "ReduceSum" if node.attrs.contains_key("axes") => {
                let out = self.outputs(node, None);
                let mut inputs = inputs;
                if let Some(axes) = node.ints("axes") {
                    inputs.push(self.g.ints("axes", axes));
                }
                self.emit(op, &inputs, out, Self::attrs(node, &["axes"]));
            }
            "Softmax" | "LogSoftmax" if opset < 13 => {
                // Before 13: over the input flattened to 2-D at `axis`.
                let out = self.outputs(node, None);
                let axis = node.int("axis").unwrap_or(1);
                let shape = self.g.node("Shape", &[&inputs[0]], vec![], "shape");
                let flat =
                    self.g
                        .node("Flatten", &[&inputs[0]], vec![attr_i("axis", axis)], "flat");
                let s = self
                    .g
                    .node(op, &[&flat], vec![attr_i("axis", 1)], "softmax");
                self.emit("Reshape", &[s, shape], out, vec![]);
            }
            "Clip" if node.attrs.contains_key("min") || node.attrs.contains_key("max") => {
                let out = self.outputs(node, None);
                let mut inputs = inputs;
                for (i, bound) in ["min", "max"].into_iter().enumerate() {
                    let name = match node.float(bound) {
                        Some(v) => self.g.scalar(bound, v),
                        None => String::new(),
                    };
                    inputs = Self::with_input(inputs, 1 + i, name);
                }
                self.emit(op, &inputs, out, vec![]);
            }
            "Pad" if node.attrs.contains_key("pads") => {
                let out = self.outputs(node, None);
                let pads = node
                    .ints("pads")
                    .ok_or_else(|| anyhow!("Pad without pads"))?;
                let mut inputs = inputs;
                inputs.push(self.g.ints("pads", pads));
                inputs.push(
                    self.g
                        .scalar("pad_value", node.float("value").unwrap_or(0.0)),
                );
                self.emit(op, &inputs, out, Self::attrs(node, &["pads", "value"]));
            }
            "Slice" if node.attrs.contains_key("starts") => {
                let out = self.outputs(node, None);
                let mut inputs = inputs;
                for key in ["starts", "ends", "axes"] {
                    if let Some(v) = node.ints(key) {
                        inputs.push(self.g.ints(key, v));
                    }
                }
                self.emit(op, &inputs, out, vec![]);
            }
            "Upsample" | "Resize" if op == "Upsample" || opset < 11 => {
                // Upsample and Resize 10: output pixel x reads input x / scale, the pixel
                // below for nearest: Resize 11's asymmetric coordinates with floor.
                let out = self.outputs(node, None);
                let scales = match node.attrs.get("scales") {
                    Some(Attr::Floats(s)) => self.g.float_const("scales", &[s.len()], s),
                    _ => inputs
                        .get(1)
                        .cloned()
                        .ok_or_else(|| anyhow!("{op} without scales"))?,
                };
                let mode = match node.string("mode").unwrap_or("nearest") {
                    "bilinear" => "linear",
                    m => m,
                };
                let attrs = vec![
                    attr_s("mode", mode),
                    attr_s("coordinate_transformation_mode", "asymmetric"),
                    attr_s("nearest_mode", "floor"),
                ];
                self.emit(
                    "Resize",
                    &[inputs[0].clone(), String::new(), scales],
                    out,
                    attrs,
                );
            }
            _ => {
                let out = self.outputs(node, None);
                self.emit(op, &inputs, out, Self::attrs(node, &[]));
            }
        }
        Ok(())
    }

    /// `base + per_batch · n` for the input's batch size `n` (see `graph::fold`).
    fn batch_shape(&mut self, node: &Node) -> Result<()> {
        let (Some(Attr::Tensor(base)), Some(per_batch)) =
            (node.attrs.get("base"), node.ints("per_batch"))
        else {
            bail!("a folded shape without its base and per-batch values");
        };
        let out = self.outputs(node, None);
        let g = &mut *self.g;
        let n = g.node(
            "Shape",
            &[&self.input],
            vec![attr_i("start", 0), attr_i("end", 1)],
            "batch",
        );
        let zero = g.ints("axes", &[0]);
        let n = g.node("Squeeze", &[&n, &zero], vec![], "batch");
        let per = g.int_const("per_batch", &base.shape, per_batch);
        let base = g.int_const("base", &base.shape, &base.as_ints());
        let m = g.node("Mul", &[&per, &n], vec![], "per_batch");
        self.emit("Add", &[base, m], out, vec![]);
        Ok(())
    }
}
