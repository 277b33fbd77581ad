//! A run of graph nodes between two single-tensor cut points, as a burn module: its
//! float initializers are `Param`s (trained by autodiff), its BatchNorms burn's
//! `BatchNorm` (batch statistics when training), and the nodes a typed program over value
//! slots, freed after their last use.

use std::collections::BTreeMap;
use std::sync::Arc;

use burn::module::{Param, RunningState};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;

use super::ops::{self, Ctx, Op, Unary};
use super::value::{F, Value};
use super::{Graph, GraphError, HostTensor, Node};
use crate::kernels::WinogradWeight;
use crate::zoo::layers::TensorMap;
use crate::zoo::loader::WeightLoader;

/// Where a parameter lives in the block: its rank's list and index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamRef {
    rank: usize,
    index: usize,
    /// A rank-0 initializer, held as `[1]`.
    scalar: bool,
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    inputs: Vec<Option<usize>>,
    outputs: Vec<usize>,
    output_names: Vec<String>,
    /// Slots whose last use is this step.
    frees: Vec<usize>,
    node: String,
    op_type: String,
}

/// The compiled nodes of one block.
#[derive(Debug, Clone)]
pub struct Program {
    slots: usize,
    input: usize,
    /// The input value's shape at batch 1 (a rank other than 4 is unpacked from it).
    input_shape: Vec<usize>,
    output: usize,
    consts: Vec<(usize, HostTensor)>,
    params: Vec<(usize, ParamRef, String)>,
    /// Initializer names of each BatchNorm: scale, bias, mean, variance.
    bn_names: Vec<[String; 4]>,
    steps: Vec<Step>,
    opset: i64,
    /// The batch size the graph was exported with, where its ops depend on it.
    fixed_batch: Option<usize>,
}

#[derive(Module, Debug)]
pub struct GraphBlock {
    p1: Vec<Param<Tensor<1>>>,
    p2: Vec<Param<Tensor<2>>>,
    p3: Vec<Param<Tensor<3>>>,
    p4: Vec<Param<Tensor<4>>>,
    p5: Vec<Param<Tensor<5>>>,
    bns: Vec<BatchNorm>,
    #[module(skip)]
    program: Arc<Program>,
    /// By the slot of its weight: each 3×3 convolution's weight (the index in `p4`)
    /// transformed for Winograd's kernel, made when folded for inference.
    #[module(skip)]
    winograd: BTreeMap<usize, (usize, WinogradWeight)>,
}

/// What one run of a block computed: every value's shape and every host value, by name,
/// and the (packed) output's shape.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub shapes: BTreeMap<String, Vec<usize>>,
    pub hosts: BTreeMap<String, HostTensor>,
    pub output_shape: Vec<usize>,
}

/// What compiling a block needs to know of the whole graph.
pub struct Span<'a> {
    pub graph: &'a Graph,
    pub nodes: std::ops::Range<usize>,
    /// The cut value the block starts from and its shape at batch 1.
    pub input: &'a str,
    pub input_shape: Vec<usize>,
    /// The value it ends at.
    pub output: &'a str,
    pub fixed_batch: Option<usize>,
}

fn err(node: &Node, opset: i64, why: impl Into<String>) -> GraphError {
    GraphError {
        node: node.name.clone(),
        op: node.op.clone(),
        opset,
        why: why.into(),
    }
}

impl GraphBlock {
    /// Compiles the nodes of `span`, loading their initializers through `l`.
    pub fn build(span: &Span, l: &WeightLoader) -> Result<Self, GraphError> {
        let g = span.graph;
        let mut slot_of: BTreeMap<&str, usize> = BTreeMap::new();
        let mut slots = 0;
        let mut block = GraphBlock {
            p1: vec![],
            p2: vec![],
            p3: vec![],
            p4: vec![],
            p5: vec![],
            bns: vec![],
            program: Arc::new(Program {
                slots: 0,
                input: 0,
                input_shape: span.input_shape.clone(),
                output: 0,
                consts: vec![],
                params: vec![],
                bn_names: vec![],
                steps: vec![],
                opset: g.opset,
                fixed_batch: span.fixed_batch,
            }),
            winograd: BTreeMap::new(),
        };
        let mut prog = (*block.program).clone();
        slot_of.insert(span.input, 0);
        slots += 1;
        let device = l.device().clone();
        for node in &g.nodes[span.nodes.clone()] {
            let mut inputs = Vec::new();
            for (i, name) in node.inputs.iter().enumerate() {
                if name.is_empty() {
                    inputs.push(None);
                    continue;
                }
                // BatchNorm's scale, bias and statistics belong to its module.
                if node.op == "BatchNormalization" && i > 0 {
                    inputs.push(None);
                    continue;
                }
                let s = match slot_of.get(name.as_str()) {
                    Some(&s) => s,
                    None => {
                        let s = slots;
                        slots += 1;
                        if let Some(c) = g.constants.get(name) {
                            prog.consts.push((s, c.clone()));
                        } else if let Some(shape) = g.params.get(name) {
                            let r = block
                                .load_param(l, name, shape)
                                .map_err(|w| err(node, g.opset, w))?;
                            prog.params.push((s, r, name.clone()));
                        } else {
                            return Err(err(
                                node,
                                g.opset,
                                format!(
                                    "input `{name}` is not produced by any earlier node (a cycle or a dangling input)"
                                ),
                            ));
                        }
                        slot_of.insert(name, s);
                        s
                    }
                };
                inputs.push(Some(s));
            }
            let op = if node.op == "BatchNormalization" {
                let idx = block.bns.len();
                let names = block
                    .load_batchnorm(l, node, g, &device)
                    .map_err(|w| err(node, g.opset, w))?;
                prog.bn_names.push(names);
                Op::BatchNorm(idx)
            } else {
                Op::compile(node, g.opset).map_err(|w| err(node, g.opset, w))?
            };
            let mut outputs = Vec::new();
            for name in &node.outputs {
                let s = slots;
                slots += 1;
                slot_of.insert(name, s);
                outputs.push(s);
            }
            prog.steps.push(Step {
                op,
                inputs,
                outputs,
                output_names: node.outputs.clone(),
                frees: vec![],
                node: node.name.clone(),
                op_type: node.op.clone(),
            });
        }
        prog.output = *slot_of.get(span.output).ok_or_else(|| GraphError {
            node: span.output.to_owned(),
            op: "output".into(),
            opset: g.opset,
            why: "the block's output is not produced by its nodes".into(),
        })?;
        prog.slots = slots;
        prog.compute_frees();
        block.program = Arc::new(prog);
        Ok(block)
    }

    fn load_param(
        &mut self,
        l: &WeightLoader,
        name: &str,
        shape: &[usize],
    ) -> Result<ParamRef, String> {
        let scalar = shape.is_empty();
        let (rank, index) = match shape.len() {
            0 => {
                self.p1.push(Param::from_tensor(l.tensor(name, [1])));
                (1, self.p1.len() - 1)
            }
            1 => {
                self.p1.push(Param::from_tensor(l.tensor(name, [shape[0]])));
                (1, self.p1.len() - 1)
            }
            2 => {
                self.p2
                    .push(Param::from_tensor(l.tensor(name, [shape[0], shape[1]])));
                (2, self.p2.len() - 1)
            }
            3 => {
                self.p3.push(Param::from_tensor(
                    l.tensor(name, [shape[0], shape[1], shape[2]]),
                ));
                (3, self.p3.len() - 1)
            }
            4 => {
                self.p4.push(Param::from_tensor(
                    l.tensor(name, std::array::from_fn(|i| shape[i])),
                ));
                (4, self.p4.len() - 1)
            }
            5 => {
                self.p5.push(Param::from_tensor(
                    l.tensor(name, std::array::from_fn(|i| shape[i])),
                ));
                (5, self.p5.len() - 1)
            }
            r => {
                return Err(format!(
                    "initializer `{name}` has rank {r}; at most 5 is supported"
                ));
            }
        };
        Ok(ParamRef {
            rank,
            index,
            scalar,
        })
    }

    fn load_batchnorm(
        &mut self,
        l: &WeightLoader,
        node: &Node,
        g: &Graph,
        device: &Device,
    ) -> Result<[String; 4], String> {
        let name = |i: usize| -> Result<String, String> {
            let n = node
                .input(i)
                .ok_or_else(|| format!("input {i} is missing"))?;
            match g.params.get(n) {
                Some(s) if s.len() == 1 => Ok(n.to_owned()),
                Some(s) => Err(format!("`{n}` has shape {s:?}; a vector expected")),
                None => Err(format!(
                    "`{n}` is not an initializer (a BatchNorm computed at run time is not supported)"
                )),
            }
        };
        let names = [name(1)?, name(2)?, name(3)?, name(4)?];
        let c = g.params[&names[0]][0];
        if names.iter().any(|n| g.params[n] != [c]) {
            return Err("scale, bias, mean and variance differ in length".into());
        }
        if node.int("training_mode").unwrap_or(0) != 0
            || node.outputs.len() > 1 && node.outputs[1..].iter().any(|o| !o.is_empty())
        {
            return Err("a BatchNormalization exported in training mode is not supported".into());
        }
        // ONNX's momentum weighs the old statistics (0.9); PyTorch's and burn's the new.
        let momentum = 1.0 - node.float("momentum").unwrap_or(0.9) as f64;
        let mut bn = BatchNormConfig::new(c)
            .with_epsilon(node.float("epsilon").unwrap_or(1e-5) as f64)
            .with_momentum(momentum)
            .init(device);
        bn.gamma = Param::from_tensor(l.tensor(&names[0], [c]));
        bn.beta = Param::from_tensor(l.tensor(&names[1], [c]));
        bn.running_mean = RunningState::new(l.buffer(&names[2], [c]));
        bn.running_var = RunningState::new(l.buffer(&names[3], [c]));
        self.bns.push(bn);
        Ok(names)
    }

    fn param(&self, r: ParamRef) -> F {
        match r.rank {
            1 if r.scalar => F::R0(self.p1[r.index].val()),
            1 => F::R1(self.p1[r.index].val()),
            2 => F::R2(self.p2[r.index].val()),
            3 => F::R3(self.p3[r.index].val()),
            4 => F::R4(self.p4[r.index].val()),
            _ => F::R5(self.p5[r.index].val()),
        }
    }

    /// Runs the block on a batch (a cut value packed as rank 4). Shapes were checked at
    /// load by running the graph; an op can still fail on a batch size that check could not
    /// see, and says so.
    pub fn forward(&self, x: Tensor<4>) -> Result<Tensor<4>, GraphError> {
        let p = &self.program;
        let n = x.dims()[0];
        match p.fixed_batch {
            Some(b) if b != n && b > 0 => {
                // A graph exported for a fixed batch runs chunk by chunk (the last padded).
                let mut outs = Vec::new();
                let mut start = 0;
                while start < n {
                    let take = b.min(n - start);
                    let mut chunk = x.clone().narrow(0, start, take);
                    if take < b {
                        let [_, c, h, w] = chunk.dims();
                        let pad = Tensor::zeros([b - take, c, h, w], &chunk.device());
                        chunk = Tensor::cat(vec![chunk, pad], 0);
                    }
                    let y = self.run(chunk, None)?;
                    outs.push(y.narrow(0, 0, take));
                    start += take;
                }
                Ok(Tensor::cat(outs, 0))
            }
            _ => self.run(x, None),
        }
    }

    /// Runs the block once and returns the shape of every value it computes, and the
    /// host values (shape arithmetic) themselves, by name.
    pub fn trace(&self, x: Tensor<4>) -> Result<Trace, GraphError> {
        let mut trace = Trace::default();
        trace.output_shape = self.run(x, Some(&mut trace))?.dims().to_vec();
        Ok(trace)
    }

    fn run(&self, x: Tensor<4>, mut trace: Option<&mut Trace>) -> Result<Tensor<4>, GraphError> {
        let p = &self.program;
        let device = x.device();
        let mut ctx = Ctx {
            device: &device,
            training: device.is_autodiff(),
            batch: x.dims()[0],
            winograd: None,
        };
        let mut slots: Vec<Option<Value>> = vec![None; p.slots];
        let input = if p.input_shape.len() == 4 {
            F::R4(x)
        } else {
            F::from_r4(x, &p.input_shape)
        };
        slots[p.input] = Some(Value::F(input));
        for (s, c) in &p.consts {
            slots[*s] = Some(Value::Host(c.clone()));
        }
        for (s, r, _) in &p.params {
            slots[*s] = Some(Value::F(self.param(*r)));
        }
        for step in &p.steps {
            let fail = |why: String| GraphError {
                node: step.node.clone(),
                op: step.op_type.clone(),
                opset: p.opset,
                why,
            };
            let outs = {
                let inputs: Vec<Option<&Value>> = step
                    .inputs
                    .iter()
                    .map(|s| s.and_then(|s| slots[s].as_ref()))
                    .collect();
                match &step.op {
                    Op::BatchNorm(i) => {
                        let x = inputs
                            .first()
                            .copied()
                            .flatten()
                            .ok_or_else(|| fail("input 0 is missing".into()))?;
                        vec![Value::F(
                            self.batchnorm(*i, ops::as_float(x, &device))
                                .map_err(fail)?,
                        )]
                    }
                    op => {
                        // A convolution's weight transformed at fold, while it is that weight.
                        ctx.winograd = step
                            .inputs
                            .get(1)
                            .copied()
                            .flatten()
                            .and_then(|s| self.winograd.get(&s))
                            .filter(|(i, w)| w.is_of(&self.p4[*i]))
                            .map(|(_, w)| w);
                        ops::run(op, &inputs, &ctx).map_err(fail)?
                    }
                }
            };
            if outs.len() < step.outputs.len() {
                return Err(fail(format!(
                    "gives {} outputs, {} named",
                    outs.len(),
                    step.outputs.len()
                )));
            }
            for ((s, v), name) in step.outputs.iter().zip(outs).zip(&step.output_names) {
                if let Some(t) = trace.as_deref_mut() {
                    t.shapes.insert(name.clone(), v.shape());
                    if let Value::Host(h) = &v {
                        t.hosts.insert(name.clone(), h.clone());
                    }
                }
                slots[*s] = Some(v);
            }
            for s in &step.frees {
                slots[*s] = None;
            }
        }
        match slots[p.output].take() {
            Some(Value::F(f)) => Ok(f.into_r4()),
            Some(Value::Host(h)) => Ok(F::from_host(&h, &device).into_r4()),
            None => Err(GraphError {
                node: "output".into(),
                op: "output".into(),
                opset: p.opset,
                why: "the block's output was never computed".into(),
            }),
        }
    }

    fn batchnorm(&self, i: usize, x: F) -> Result<F, String> {
        let bn = &self.bns[i];
        let c = bn.gamma.dims()[0];
        let s = x.shape();
        if s.len() < 2 || s[1] != c {
            return Err(format!("input of shape {s:?} for {c} channels"));
        }
        Ok(match x {
            F::R2(t) => F::R2(bn.forward(t)),
            F::R3(t) => F::R3(crate::kernels::batch_norm(bn, t)),
            F::R4(t) => F::R4(crate::kernels::batch_norm(bn, t)),
            F::R5(t) => F::R5(crate::kernels::batch_norm(bn, t)),
            _ => unreachable!("rank checked"),
        })
    }

    /// The op of each step, in order (fused steps as `Conv+BatchNormalization+Relu`).
    pub fn step_ops(&self) -> Vec<&str> {
        self.program
            .steps
            .iter()
            .map(|s| s.op_type.as_str())
            .collect()
    }

    /// Adds the block's tensors under the graph's initializer names.
    pub fn export(&self, out: &mut TensorMap) {
        for (_, r, name) in &self.program.params {
            let f = self.param(*r);
            let shape = if r.scalar { vec![] } else { f.shape() };
            out.insert(name.clone(), weight_tensor(f.to_vec(), shape));
        }
        for (bn, names) in self.bns.iter().zip(&self.program.bn_names) {
            let vecs = [
                bn.gamma.val(),
                bn.beta.val(),
                bn.running_mean.value(),
                bn.running_var.value(),
            ];
            for (t, name) in vecs.into_iter().zip(names) {
                let v = F::R1(t).to_vec();
                let n = v.len();
                out.insert(name.clone(), weight_tensor(v, vec![n]));
            }
        }
    }

    /// Folds each BatchNorm that follows a convolution (its only consumer) into the
    /// convolution's weight and bias; for inference.
    pub fn fold_batchnorm(mut self) -> Self {
        let mut prog = (*self.program).clone();
        let mut producer: BTreeMap<usize, usize> = BTreeMap::new();
        for (i, s) in prog.steps.iter().enumerate() {
            for &o in &s.outputs {
                producer.insert(o, i);
            }
        }
        let uses = prog.use_counts();
        let param_at: BTreeMap<usize, ParamRef> =
            prog.params.iter().map(|(s, r, _)| (*s, *r)).collect();
        for i in 0..prog.steps.len() {
            let Op::BatchNorm(b) = prog.steps[i].op else {
                continue;
            };
            let Some(Some(x)) = prog.steps[i].inputs.first().copied() else {
                continue;
            };
            let Some(&j) = producer.get(&x) else { continue };
            if uses[x] != 1 || !matches!(prog.steps[j].op, Op::Conv { .. }) {
                continue;
            }
            let w_slot = prog.steps[j].inputs.get(1).copied().flatten();
            let Some(w_ref) = w_slot.and_then(|s| param_at.get(&s).copied()) else {
                continue;
            };
            if w_ref.rank != 4 {
                continue;
            }
            let bias = prog.steps[j]
                .inputs
                .get(2)
                .copied()
                .flatten()
                .and_then(|s| param_at.get(&s).copied());
            let bn = &self.bns[b];
            let w = self.p4[w_ref.index].val();
            let [o, ..] = w.dims();
            let scale = bn
                .gamma
                .val()
                .div(bn.running_var.value().add_scalar(bn.epsilon).sqrt());
            let shift = bn
                .beta
                .val()
                .sub(bn.running_mean.value().mul(scale.clone()));
            let b0 = match bias {
                Some(r) => self.p1[r.index].val(),
                None => Tensor::zeros([o], &w.device()),
            };
            let new_w = w.mul(scale.clone().reshape([o, 1, 1, 1]));
            let new_b = b0.mul(scale).add(shift);
            // Fresh slots and parameters: the originals may be shared with other nodes.
            let (ws, bs) = (prog.slots, prog.slots + 1);
            prog.slots += 2;
            // New leaves: folding is not part of any gradient.
            self.p4.push(Param::from_tensor(new_w.detach()));
            self.p1.push(Param::from_tensor(new_b.detach()));
            prog.params.push((
                ws,
                ParamRef {
                    rank: 4,
                    index: self.p4.len() - 1,
                    scalar: false,
                },
                format!("{}#folded.weight", prog.steps[j].node),
            ));
            prog.params.push((
                bs,
                ParamRef {
                    rank: 1,
                    index: self.p1.len() - 1,
                    scalar: false,
                },
                format!("{}#folded.bias", prog.steps[j].node),
            ));
            let conv = &mut prog.steps[j];
            conv.inputs.resize(3, None);
            conv.inputs[1] = Some(ws);
            conv.inputs[2] = Some(bs);
            prog.steps[i].op = Op::Unary(Unary::Identity);
        }
        prog.fuse_activations();
        // Parameters no step reads any more (the unfolded weights) are dropped from the
        // slots; their tensors stay in the module but are never read.
        prog.compute_frees();
        self.winograd = self.winograd_weights(&prog);
        self.program = Arc::new(prog);
        self
    }

    /// The weights of `prog`'s 3×3 convolutions with dilation 1 transformed
    /// for Winograd's kernel, by their slots, where it takes them.
    fn winograd_weights(&self, prog: &Program) -> BTreeMap<usize, (usize, WinogradWeight)> {
        let param_at: BTreeMap<usize, ParamRef> =
            prog.params.iter().map(|(s, r, _)| (*s, *r)).collect();
        prog.steps
            .iter()
            .filter_map(|step| {
                let (Op::Conv { window, group } | Op::ConvAct { window, group, .. }) = &step.op
                else {
                    return None;
                };
                let undilated = window.dilations == [1, 1];
                let slot = step
                    .inputs
                    .get(1)
                    .copied()
                    .flatten()
                    .filter(|_| undilated)?;
                let r = param_at.get(&slot).filter(|r| r.rank == 4)?;
                let w = WinogradWeight::of_weight(&self.p4[r.index], *group, window.strides)?;
                Some((slot, (r.index, w)))
            })
            .collect()
    }
}

impl Program {
    /// For inference: drops the Identity a folded BatchNorm leaves (its producer writes the
    /// Identity's output directly), then fuses each convolution with the activation that
    /// alone reads it (conv → BN → ReLU/ReLU6/HardSwish/… becomes one step).
    fn fuse_activations(&mut self) {
        let consts: BTreeMap<usize, f32> = self
            .consts
            .iter()
            .filter_map(|(s, c)| Some((*s, *c.as_floats().first()?)))
            .collect();
        let mut i = 0;
        while i < self.steps.len() {
            let uses = self.use_counts();
            let producer = |slot: usize, steps: &[Step]| {
                steps[..i]
                    .iter()
                    .rposition(|s| s.outputs.len() == 1 && s.outputs[0] == slot)
            };
            let step = &self.steps[i];
            let Some(Some(x)) = step.inputs.first().copied() else {
                i += 1;
                continue;
            };
            let Some(j) = producer(x, &self.steps).filter(|_| uses[x] == 1) else {
                i += 1;
                continue;
            };
            // A Clip bound given as an input fuses when it is a constant (`Some(None)`: none
            // given), not when computed at run time (`None`).
            let bound = |k: usize| match step.inputs.get(k).copied().flatten() {
                None => Some(None),
                Some(s) => consts.get(&s).map(|v| Some(*v)),
            };
            let fused = match (&step.op, &self.steps[j].op) {
                // (A folded BatchNorm's other inputs are empty: its module held them.)
                (Op::Unary(Unary::Identity), _) if step.inputs[1..].iter().all(Option::is_none) => {
                    Some(self.steps[j].op.clone())
                }
                (act, Op::Conv { window, group }) => bound(1)
                    .zip(bound(2))
                    .and_then(|bounds| ops::Activation::of(act, bounds))
                    .map(|act| Op::ConvAct {
                        window: window.clone(),
                        group: *group,
                        act,
                    }),
                _ => None,
            };
            let Some(op) = fused else {
                i += 1;
                continue;
            };
            // The producer computes this step's outputs; this step goes.
            let gone = self.steps.remove(i);
            let p = &mut self.steps[j];
            p.op = op;
            p.outputs = gone.outputs;
            p.output_names = gone.output_names;
            p.node = format!("{}+{}", p.node, gone.node);
            p.op_type = format!("{}+{}", p.op_type, gone.op_type);
        }
    }

    fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.slots];
        for s in &self.steps {
            for i in s.inputs.iter().flatten() {
                uses[*i] += 1;
            }
        }
        uses[self.output] += 1;
        uses
    }

    /// Frees every slot after the step that reads it last (never the output).
    fn compute_frees(&mut self) {
        let mut last = vec![None; self.slots];
        for (i, s) in self.steps.iter().enumerate() {
            for &x in s.inputs.iter().flatten() {
                last[x] = Some(i);
            }
        }
        for s in &mut self.steps {
            s.frees.clear();
        }
        for (slot, l) in last.into_iter().enumerate() {
            if let Some(i) = l.filter(|_| slot != self.output) {
                self.steps[i].frees.push(slot);
            }
        }
        // Parameters and constants no step reads are not loaded into slots at all.
        let read: std::collections::BTreeSet<usize> = self
            .steps
            .iter()
            .flat_map(|s| s.inputs.iter().flatten().copied())
            .collect();
        self.params.retain(|(s, _, _)| read.contains(s));
    }
}

fn weight_tensor(data: Vec<f32>, shape: Vec<usize>) -> crate::weights::WeightTensor {
    crate::weights::WeightTensor {
        dtype: crate::weights::DType::F32,
        shape,
        data,
        strided: false,
    }
}
