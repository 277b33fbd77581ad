//! The graph runtime: a model file that carries its own graph (ONNX, TFLite) runs as that
//! graph. A front-end in `weights/` turns the file into the [`Graph`] IR (named values,
//! ops with their attributes, small integer constants) and its float initializers into
//! named weights; [`analyse`] runs it once to infer and check every shape, finds the
//! classifier and the single-tensor cut points, and describes it as a zoo family
//! ([`GraphConfig`]) whose stages are [`block::GraphBlock`]s: burn modules whose
//! parameters autodiff trains, so every command works on a graph as on a zoo network.

pub mod analyse;
pub mod block;
pub(crate) mod build;
pub mod fold;
pub mod ops;
pub mod resize;
pub mod value;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use analyse::{GraphConfig, analyse};

/// A model's graph, in topological order, independent of the file format it came from.
/// Serialisable: a bundle stores it (with the trained tensors by the initializers' names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The file format and the program that wrote it (`onnx`, `pytorch 2.5`).
    pub format: String,
    pub producer: String,
    /// The default-domain opset the ops follow (ONNX: `ai.onnx` version).
    pub opset: i64,
    /// The image input: its name and dimensions (`None` for a symbolic one).
    pub input: ValueInfo,
    /// The graph's other runtime inputs, in the file's order (an image model has none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_inputs: Vec<ValueInfo>,
    pub output: ValueInfo,
    pub nodes: Vec<Node>,
    /// Float initializers (the weights, in [`crate::weights::Weights`] by these names).
    pub params: BTreeMap<String, Vec<usize>>,
    /// Integer and small constant tensors (shapes, axes, indices), held in the graph.
    pub constants: BTreeMap<String, HostTensor>,
    /// How the file says the input's pixels are scaled, where it does (a TFLite model's
    /// quantised input; a Keras model that rescales its own input, or a Keras Application
    /// known by its name); ONNX files never do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_scaling: Option<InputScaling>,
    /// The file's tensors a front-end read into `constants` (a Keras Normalization's
    /// adapted mean and variance): not trained, and not unexpected either.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights_in_constants: Vec<String>,
}

/// Per-channel mean and standard deviation on 0..1 pixels, as [`crate::zoo::Preprocess`]
/// holds them, and whether the channels are taken in BGR order (Keras' "caffe" mode).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputScaling {
    pub mean: [f64; 3],
    pub std: [f64; 3],
    #[serde(default)]
    pub bgr: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValueInfo {
    pub name: String,
    pub dims: Vec<Option<usize>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub op: String,
    /// Input value names; an empty name is an omitted optional input.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, Attr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    String(String),
    Tensor(HostTensor),
}

/// A tensor held on the host: integers (shapes, indices) or small float constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostData {
    Int(Vec<i64>),
    Float(Vec<f32>),
}

impl HostTensor {
    pub fn ints(shape: Vec<usize>, data: Vec<i64>) -> Self {
        Self {
            shape,
            data: HostData::Int(data),
        }
    }

    pub fn numel(&self) -> usize {
        match &self.data {
            HostData::Int(v) => v.len(),
            HostData::Float(v) => v.len(),
        }
    }

    /// The values as integers (floats truncated, as ONNX's Cast does).
    pub fn as_ints(&self) -> Vec<i64> {
        match &self.data {
            HostData::Int(v) => v.clone(),
            HostData::Float(v) => v.iter().map(|&f| f as i64).collect(),
        }
    }

    pub fn as_floats(&self) -> Vec<f32> {
        match &self.data {
            HostData::Int(v) => v.iter().map(|&i| i as f32).collect(),
            HostData::Float(v) => v.clone(),
        }
    }
}

impl Graph {
    /// Removes `Identity` nodes over initializers and constants (the TorchScript exporter
    /// shares equal initializers that way), renaming their uses: a value that only
    /// renames a weight must not look like an activation kept alive across the network.
    pub fn alias_identities(&mut self) {
        let mut alias: BTreeMap<String, String> = BTreeMap::new();
        self.nodes.retain(|n| {
            let fixed = |v: &str| self.params.contains_key(v) || self.constants.contains_key(v);
            match (n.op.as_str(), n.inputs.first(), n.outputs.first()) {
                ("Identity", Some(i), Some(o))
                    if n.outputs.len() == 1 && o != &self.output.name =>
                {
                    let target = alias.get(i).cloned().unwrap_or_else(|| i.clone());
                    if fixed(&target) {
                        alias.insert(o.clone(), target);
                        return false;
                    }
                    true
                }
                _ => true,
            }
        });
        for n in &mut self.nodes {
            for i in &mut n.inputs {
                if let Some(a) = alias.get(i) {
                    *i = a.clone();
                }
            }
        }
    }
}

impl Node {
    pub fn int(&self, name: &str) -> Option<i64> {
        match self.attrs.get(name) {
            Some(Attr::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        match self.attrs.get(name) {
            Some(Attr::Float(f)) => Some(*f),
            Some(Attr::Int(i)) => Some(*i as f32),
            _ => None,
        }
    }

    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        match self.attrs.get(name) {
            Some(Attr::Ints(v)) => Some(v),
            _ => None,
        }
    }

    pub fn string(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Attr::String(s)) => Some(s),
            _ => None,
        }
    }

    /// The `i`-th input's name, if given (optional inputs may be omitted or empty).
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// A graph that cannot run, naming the node and what is wrong with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("node `{node}` ({op}, opset {opset}): {why}")]
pub struct GraphError {
    pub node: String,
    pub op: String,
    pub opset: i64,
    pub why: String,
}
