//! What a graph is as a model: its shapes (found by running it once on a blank image), its
//! classifier (the final Gemm on a pooled vector), and its single-tensor cut points, which
//! become the stages `--layer` and `--freeze-until` name. The result, [`GraphConfig`], is
//! the graph's entry in the zoo's family registry.

use std::collections::{BTreeMap, BTreeSet};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::block::{GraphBlock, Span};
use super::fold::{HostRun, fold_shapes};
use super::{Graph, GraphError, Node};
use crate::weights::Weights;
use crate::zoo::ZooEntry;
use crate::zoo::family::{ClassifierSpec, Family, StageInfo};
use crate::zoo::layers::{Block, BnSpec};
use crate::zoo::loader::WeightLoader;
use crate::zoo::network::Stage;

/// A stage of a graph: the nodes from the previous cut to this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphStage {
    /// The name users give (`--layer`): the node computing the cut value, or the value.
    pub name: String,
    /// The value the stage ends at and its shape at batch 1.
    pub value: String,
    pub shape: Vec<usize>,
    /// Nodes `start..end` of the graph.
    pub start: usize,
    pub end: usize,
}

/// A graph as a zoo family: the graph itself and what [`analyse`] found in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphConfig {
    pub graph: Box<Graph>,
    pub stages: Vec<GraphStage>,
    /// Parameter prefix of the classifier (`<prefix>.weight` as (out, in), `<prefix>.bias`),
    /// when the graph ends in one.
    pub classifier: Option<String>,
    pub input_size: [usize; 2],
    pub input_channels: usize,
    /// The batch size the graph's ops are fixed to (an export whose Reshapes name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_batch: Option<usize>,
}

/// Ops a classifier's output may pass through before the graph's output.
pub const AFTER_CLASSIFIER: &[&str] = &["Softmax", "LogSoftmax", "Identity", "Flatten", "Sigmoid"];

/// The final Gemm that maps a pooled vector to class scores: (its node index, its
/// input value), if the graph ends in one (perhaps followed by a softmax).
pub fn find_classifier(g: &Graph) -> Option<(usize, String)> {
    let producer: BTreeMap<&str, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut v = g.output.name.as_str();
    loop {
        let i = *producer.get(v)?;
        let n = &g.nodes[i];
        if AFTER_CLASSIFIER.contains(&n.op.as_str()) {
            v = n.input(0)?;
            continue;
        }
        let is_linear = n.op == "Gemm"
            && n.int("transA").unwrap_or(0) == 0
            && n.float("alpha").unwrap_or(1.0) == 1.0
            && n.float("beta").unwrap_or(1.0) == 1.0
            && n.input(1)
                .is_some_and(|w| g.params.get(w).is_some_and(|s| s.len() == 2))
            && n.input(2)
                .is_none_or(|b| g.params.get(b).is_some_and(|s| s.len() == 1));
        return is_linear.then(|| (i, n.inputs[0].clone()));
    }
}

fn graph_error(node: &Node, opset: i64, why: impl Into<String>) -> GraphError {
    GraphError {
        node: node.name.clone(),
        op: node.op.clone(),
        opset,
        why: why.into(),
    }
}

/// Checks that every input is defined before it is used (no cycle, nothing dangling) and
/// that no value is defined twice.
fn check_order(g: &Graph) -> Result<(), GraphError> {
    let mut defined: BTreeSet<&str> = g.params.keys().map(String::as_str).collect();
    defined.extend(g.constants.keys().map(String::as_str));
    defined.insert(&g.input.name);
    for n in &g.nodes {
        for i in n.inputs.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(i.as_str()) {
                return Err(graph_error(
                    n,
                    g.opset,
                    format!(
                        "input `{i}` is not produced by any earlier node (a cycle or a dangling input)"
                    ),
                ));
            }
        }
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if !defined.insert(o) {
                return Err(graph_error(
                    n,
                    g.opset,
                    format!("output `{o}` is defined twice"),
                ));
            }
        }
    }
    if !defined.contains(g.output.name.as_str()) {
        return Err(GraphError {
            node: g.output.name.clone(),
            op: "output".into(),
            opset: g.opset,
            why: "the graph's output is computed by no node".into(),
        });
    }
    Ok(())
}

/// Analyses a graph for running as a model: `size` is the image size for an input whose
/// height and width are symbolic (default 224).
pub fn analyse(
    g: &Graph,
    weights: &Weights,
    size: Option<usize>,
    device: &Device,
) -> Result<GraphConfig, GraphError> {
    analyse_folding(g, weights, size, device, None)
}

/// [`analyse`]. `folded`: the batch size the graph is fixed to (or not), found before its
/// shape arithmetic was folded into this graph, which is then neither probed for it nor
/// folded again; `None` for a file's graph.
fn analyse_folding(
    g: &Graph,
    weights: &Weights,
    size: Option<usize>,
    device: &Device,
    folded: Option<Option<usize>>,
) -> Result<GraphConfig, GraphError> {
    check_order(g)?;
    let input_err = |why: String| GraphError {
        node: g.input.name.clone(),
        op: "input".into(),
        opset: g.opset,
        why,
    };
    if !g.extra_inputs.is_empty() {
        let names: Vec<&str> = g.extra_inputs.iter().map(|v| v.name.as_str()).collect();
        return Err(input_err(format!(
            "the graph takes {} more inputs ({}); an image model takes one",
            names.len(),
            names.join(", ")
        )));
    }
    let nchw;
    let g = if is_nhwc(&g.input.dims) {
        nchw = with_nchw_input(g);
        &nchw
    } else {
        g
    };
    let grey;
    let g = if g.input.dims.len() == 4 && g.input.dims[1] == Some(1) {
        grey = with_rgb_input(g);
        &grey
    } else {
        g
    };
    let dims = &g.input.dims;
    if dims.len() != 4 {
        return Err(input_err(format!(
            "the input has rank {}; an image batch [n, c, h, w] is expected",
            dims.len()
        )));
    }
    let channels =
        dims[1].ok_or_else(|| input_err("the input's channel count is symbolic".into()))?;
    if channels != 3 {
        return Err(input_err(format!(
            "the input has {channels} channels: images give 3 (RGB) or 1 (grey), in NCHW or NHWC order"
        )));
    }
    let fallback = size.unwrap_or(224);
    let hw = [dims[2].unwrap_or(fallback), dims[3].unwrap_or(fallback)];
    let classifier = find_classifier(g);
    let (end, feature) = match &classifier {
        Some((i, v)) => (*i, v.clone()),
        None => (g.nodes.len(), g.output.name.clone()),
    };
    // Run the graph up to the classifier's input once (batch 1, and batch 2 to see
    // whether the export fixed its batch size): every op's shapes are checked by this.
    // An exported static batch may be baked into Reshapes: trace at that batch, then try
    // another to see whether the graph is tied to it.
    let batch = dims[0].unwrap_or(1);
    // The file's own sizes are untrusted: the traced batches must fit the value bound.
    super::ops::check_numel(&[batch.saturating_add(2), channels, hw[0], hw[1]])
        .map_err(|why| input_err(format!("its traced batch: {why}")))?;
    let loader = WeightLoader::new(weights, device);
    let whole = Span {
        graph: g,
        nodes: 0..end,
        input: &g.input.name,
        input_shape: vec![batch, channels, hw[0], hw[1]],
        output: &feature,
        fixed_batch: None,
    };
    let block = GraphBlock::build(&whole, &loader)?;
    let blank = |n| Tensor::<4>::zeros([n, channels, hw[0], hw[1]], device);
    let traced = block.trace(blank(batch))?;
    let next = match folded {
        Some(_) => None,
        None => block
            .trace(blank(batch + 1))
            .ok()
            .filter(|t| t.output_shape.first() == Some(&(batch + 1))),
    };
    let fixed_batch = folded.unwrap_or(match next {
        Some(_) => None,
        None => Some(batch),
    });
    if folded.is_none() && !traced.hosts.is_empty() {
        // Shape arithmetic folds to constants, or to lines in the batch size where a third
        // batch confirms them (a graph fixed to one batch: all constants).
        let third = next
            .as_ref()
            .and_then(|_| block.trace(blank(batch + 2)).ok());
        let mut runs = vec![HostRun {
            batch,
            hosts: &traced.hosts,
        }];
        for (k, t) in [&next, &third].into_iter().enumerate() {
            if let Some(t) = t {
                runs.push(HostRun {
                    batch: batch + k + 1,
                    hosts: &t.hosts,
                });
            }
        }
        if let Some(folded) = fold_shapes(g, end, &runs) {
            drop(block);
            return analyse_folding(&folded, weights, size, device, Some(fixed_batch));
        }
    }
    let shapes = traced.shapes;
    let feature_shape = shapes.get(&feature).cloned().unwrap_or_default();
    let classifier = match classifier {
        Some((i, _)) if feature_shape.len() == 2 => {
            let w = g.nodes[i].input(1).unwrap_or_default();
            w.strip_suffix(".weight").map(str::to_owned)
        }
        _ => None,
    };
    let stages = cut_points(g, end, &feature, &shapes);
    Ok(GraphConfig {
        graph: Box::new(g.clone()),
        stages,
        classifier,
        input_size: hw,
        input_channels: channels,
        fixed_batch,
    })
}

/// An image input in NHWC order (TensorFlow's; tf2onnx keeps it): a channel count of 1 to
/// 4 last, and not second.
fn is_nhwc(dims: &[Option<usize>]) -> bool {
    let small = |d: Option<usize>| d.is_some_and(|c| (1..=4).contains(&c));
    dims.len() == 4 && small(dims[3]) && !small(dims[1])
}

/// The graph fed NCHW images, as every retrain model is: a Transpose to NHWC first, into
/// the original input's name.
fn with_nchw_input(g: &Graph) -> Graph {
    let mut g = g.clone();
    let nhwc = g.input.name.clone();
    let mut name = format!("{nhwc}_nchw");
    while g
        .nodes
        .iter()
        .any(|n| n.outputs.contains(&name) || n.inputs.contains(&name))
    {
        name.push('_');
    }
    let d = g.input.dims.clone();
    g.input = super::ValueInfo {
        name: name.clone(),
        dims: vec![d[0], d[3], d[1], d[2]],
    };
    g.nodes.insert(
        0,
        Node {
            name: "retrain_nchw_to_nhwc".into(),
            op: "Transpose".into(),
            inputs: vec![name],
            outputs: vec![nhwc],
            attrs: [("perm".to_owned(), super::Attr::Ints(vec![0, 2, 3, 1]))].into(),
        },
    );
    g
}

/// The graph of a greyscale model fed RGB batches: a 1×1 convolution with PIL's luma
/// weights (ITU-R 601-2: 0.299 R + 0.587 G + 0.114 B) into the original input's name.
/// With equal scaling on the three channels (`--preprocess tf|raw|unit`) this is PIL's
/// `convert("L")` exactly; with ImageNet's per-channel mean/std, nearly.
fn with_rgb_input(g: &Graph) -> Graph {
    let mut g = g.clone();
    let grey = g.input.name.clone();
    let fresh = |g: &Graph, base: &str| {
        let mut name = base.to_owned();
        while g.constants.contains_key(&name)
            || g.params.contains_key(&name)
            || g.nodes
                .iter()
                .any(|n| n.outputs.contains(&name) || n.inputs.contains(&name))
        {
            name.push('_');
        }
        name
    };
    let (rgb, luma) = (fresh(&g, &format!("{grey}_rgb")), fresh(&g, "retrain_luma"));
    g.constants.insert(
        luma.clone(),
        super::HostTensor {
            shape: vec![1, 3, 1, 1],
            data: super::HostData::Float(vec![0.299, 0.587, 0.114]),
        },
    );
    g.input.name = rgb.clone();
    g.input.dims[1] = Some(3);
    g.nodes.insert(
        0,
        Node {
            name: "retrain_rgb_to_grey".into(),
            op: "Conv".into(),
            inputs: vec![rgb, luma],
            outputs: vec![grey],
            attrs: Default::default(),
        },
    );
    g
}

/// The stages: after every node where one float value (an image-shaped map or a vector)
/// is all that later nodes need. Of cuts after consecutive nodes with one shape (conv →
/// BN → ReLU) only the last is kept.
fn cut_points(
    g: &Graph,
    end: usize,
    feature: &str,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Vec<GraphStage> {
    let fixed: BTreeSet<&str> = g
        .params
        .keys()
        .chain(g.constants.keys())
        .map(String::as_str)
        .collect();
    let mut last_use: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, n) in g.nodes[..end].iter().enumerate() {
        for x in n
            .inputs
            .iter()
            .filter(|x| !x.is_empty() && !fixed.contains(x.as_str()))
        {
            last_use.insert(x, i);
        }
    }
    last_use.insert(feature, usize::MAX);
    let first_weighted = g.nodes[..end]
        .iter()
        .position(|n| n.inputs.iter().any(|x| g.params.contains_key(x)))
        .unwrap_or(0);
    // A Keras layer translated into several nodes is one stage: its inner values (named
    // `layer/…`; Keras layer names hold no `/`) are not cuts.
    let inner = |v: &str| g.format == "keras" && v.contains('/');
    let mut live: BTreeSet<&str> = BTreeSet::new();
    live.insert(&g.input.name);
    let mut cuts: Vec<(usize, &str)> = Vec::new();
    for (i, n) in g.nodes[..end].iter().enumerate() {
        for o in &n.outputs {
            if last_use.get(o.as_str()).is_some_and(|&u| u > i) {
                live.insert(o);
            }
        }
        live.retain(|v| last_use.get(v).is_some_and(|&u| u > i));
        // No cut before the first node with weights: the input's own layout and channel
        // conversions (an NHWC Transpose, a grey input's luma) are not stages.
        if live.len() == 1 && i >= first_weighted {
            let v = *live.iter().next().expect("one live value");
            // Image maps, token sequences and vectors.
            let shape_ok = shapes.get(v).is_some_and(|s| (2..=4).contains(&s.len()));
            if shape_ok && !inner(v) && n.outputs.iter().any(|o| o == v) {
                cuts.push((i, v));
            }
        }
    }
    // The feature value must end the last stage even where it is not a clean cut.
    if cuts.last().is_none_or(|(_, v)| *v != feature) {
        cuts.retain(|(_, v)| *v != feature);
        let producer = g.nodes[..end]
            .iter()
            .rposition(|n| n.outputs.iter().any(|o| o == feature));
        if let Some(p) = producer {
            cuts.retain(|(i, _)| *i < p);
            cuts.push((p, feature));
        }
    }
    let kept: Vec<(usize, &str)> = cuts
        .iter()
        .enumerate()
        .filter(|(k, (i, v))| match cuts.get(k + 1) {
            // conv → BN → activation: one stage, at the activation.
            Some((j, next)) => *j != i + 1 || shapes.get(*v) != shapes.get(*next),
            None => true,
        })
        .map(|(_, c)| *c)
        .collect();
    let mut stages = Vec::new();
    let mut start = 0;
    let mut names = BTreeSet::new();
    for (i, v) in kept {
        let node = &g.nodes[i];
        let mut name = if node.name.is_empty() {
            v.to_owned()
        } else {
            node.name.clone()
        };
        if !names.insert(name.clone()) {
            name = v.to_owned();
            names.insert(name.clone());
        }
        stages.push(GraphStage {
            name,
            value: v.to_owned(),
            shape: shapes[v].clone(),
            start,
            end: i + 1,
        });
        start = i + 1;
    }
    stages
}

/// The features a stage's value has per position: an image map's channels, a token
/// sequence's width ([n, tokens, width]), a vector's length.
fn channels(shape: &[usize]) -> usize {
    match shape {
        [_, _, d] => *d,
        _ => shape.get(1).copied().unwrap_or(0),
    }
}

impl GraphConfig {
    /// The stage a user names: by its name or by the value it ends at.
    pub fn stage_index(&self, name: &str) -> Option<usize> {
        self.stages
            .iter()
            .position(|s| s.name == name || s.value == name)
    }

    fn stage_input(&self, k: usize) -> (&str, Vec<usize>) {
        match k {
            0 => (
                &self.graph.input.name,
                vec![
                    self.fixed_batch.unwrap_or(1),
                    self.input_channels,
                    self.input_size[0],
                    self.input_size[1],
                ],
            ),
            k => (&self.stages[k - 1].value, self.stages[k - 1].shape.clone()),
        }
    }
}

impl Family for GraphConfig {
    fn stages(&self) -> Vec<StageInfo> {
        self.stages
            .iter()
            .map(|s| StageInfo {
                name: s.name.clone(),
                channels: channels(&s.shape),
                stride: match s.shape.as_slice() {
                    [_, _, h, _] if *h > 0 => self.input_size[0].div_ceil(*h),
                    _ => 0,
                },
            })
            .collect()
    }

    fn feature_dim(&self) -> usize {
        self.stages.last().map_or(0, |s| channels(&s.shape))
    }

    fn classifier(&self) -> ClassifierSpec {
        ClassifierSpec::linear(
            self.classifier
                .clone()
                .unwrap_or_else(|| "classifier".into()),
        )
    }

    /// BatchNorms come from the graph's own nodes.
    fn batchnorm(&self) -> Option<BnSpec> {
        None
    }

    fn naming_key(&self) -> &'static str {
        ""
    }

    fn build_stages(&self, l: &WeightLoader) -> Vec<Stage> {
        for name in &self.graph.weights_in_constants {
            l.skip(name);
        }
        (0..self.stages.len())
            .map(|k| {
                let (input, input_shape) = self.stage_input(k);
                let s = &self.stages[k];
                let span = Span {
                    graph: &self.graph,
                    nodes: s.start..s.end,
                    input,
                    input_shape,
                    output: &s.value,
                    fixed_batch: self.fixed_batch,
                };
                // `analyse` compiled these nodes already; a graph edited since (a bundle's
                // manifest) that no longer compiles gives a stage that is reported.
                let blocks = match GraphBlock::build(&span, l) {
                    Ok(b) => vec![Block::Graph(b)],
                    Err(e) => {
                        l.report_broken(&s.name, &e.to_string());
                        vec![]
                    }
                };
                Stage { blocks }
            })
            .collect()
    }

    fn entries() -> Vec<ZooEntry> {
        Vec::new()
    }
}

/// The model spec of a file that carries its graph: the graph analysed, named `name`,
/// with ImageNet preprocessing at the graph's input size (resize to 256/224 of it, center
/// crop) unless the caller replaces it.
pub fn model_spec(
    weights: &Weights,
    name: &str,
    size: Option<usize>,
    device: &Device,
) -> Result<crate::zoo::ModelSpec, GraphError> {
    let g = weights.graph.as_deref().ok_or_else(|| GraphError {
        node: String::new(),
        op: String::new(),
        opset: 0,
        why: "the file holds no graph".into(),
    })?;
    let config = analyse(g, weights, size, device)?;
    let crop = config.input_size[0].min(config.input_size[1]);
    // Keras feeds its models images resized to their input size (`load_img(target_size=…)`),
    // as the zoo's Keras entries do; torchvision resizes to 256/224 of it and crops.
    let resize = if g.format == "keras" {
        crop
    } else {
        (crop as f64 * 256.0 / 224.0).round() as usize
    };
    let imagenet =
        crate::zoo::Preprocess::imagenet(resize, crop, crate::zoo::Interpolation::Bilinear);
    // What the file says, else what its producers mostly expect: Keras models and TFLite
    // models converted from them take −1..1 (Keras' "tf" mode), ONNX exports torchvision's
    // scaling.
    let preprocess = match (&g.input_scaling, g.format.as_str()) {
        (Some(s), _) => crate::zoo::Preprocess {
            mean: s.mean,
            std: s.std,
            bgr: s.bgr,
            ..imagenet
        },
        (None, "tflite" | "keras") => imagenet.scaled(crate::zoo::PixelScaling::Tf),
        _ => imagenet,
    };
    Ok(crate::zoo::ModelSpec {
        name: name.to_owned(),
        preprocess,
        config: config.into(),
    })
}
