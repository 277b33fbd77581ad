//! A CNTK network ([`Net`]) as a [`crate::graph::Graph`]: the functions the model's output
//! needs, in dependency order, translated to the runtime's (ONNX-named) ops at opset 13.
//!
//! Layout: CNTK stores shapes column-major (`[W, H, C]` for an image, `[kW, kH, Cin, Cout]`
//! for a kernel) with the batch as a dynamic axis. Reversed, a shape is the row-major one
//! of the same data (`[C, H, W]`, OIHW), so values are held as NCHW with the batch in
//! front and no data is reordered, except dense weights, which a Gemm reads as (out, in).
//! CNTK broadcasts element-wise operands aligned at axis 0 (column-major), numpy at the
//! last axis: the reversed shapes broadcast alike.
//!
//! Blocks (the layers API's `Convolution`, `Dense`, `BatchNormalization`, …) are unfolded:
//! a placeholder stands for the value the block was called on, the block's output for its
//! composite's root. Blocks whose composite uses comparisons and selection to express one
//! activation (`ELU` with its alpha, `LeakyReLU`) become that activation. A `Dense` block's
//! Times and Plus become one Gemm, a convolution's Plus of a per-channel bias its bias.
//!
//! Weights are named after the layer that owns them (the innermost named block, else the
//! function, else the parameter's uid) and their role: `conv1.weight`, `bn1.running_var`.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use super::{Func, Net, Value, Var, VarKind, corrupt, numel, unsupported};
use crate::graph::build::IrBuilder;
use crate::graph::{Attr, Graph, InputScaling, ValueInfo};
use crate::weights::{DType, WeightTensor, WeightsError};

/// The opset whose signatures the translated nodes follow.
const OPSET: i64 = 13;

/// Functions a model may hold; more are refused (a file is untrusted input).
const MAX_FUNCTIONS: usize = 100_000;

type R<T> = Result<T, WeightsError>;

/// Ops that pass their input through at inference.
const IDENTITIES: &[&str] = &["Pass", "StopGradient", "NoOp", "Dropout"];

/// Blocks that stand for one activation (their composite selects between branches).
const ACTIVATION_BLOCKS: &[&str] = &["ELU", "LeakyReLU"];

/// An activation value: its IR name and CNTK's static shape reversed (row-major, without
/// the batch). `packed` when CNTK holds the batch as a static axis of size 1 (the first,
/// row-major) rather than as a dynamic axis: models imported from ONNX take such inputs,
/// unpacking the batch axis around each convolution and pooling.
#[derive(Debug, Clone)]
struct Val {
    name: String,
    shape: Vec<usize>,
    packed: bool,
}

impl Val {
    fn new(name: String, shape: Vec<usize>) -> Self {
        Self {
            name,
            shape,
            packed: false,
        }
    }

    fn like(&self, name: String, shape: Vec<usize>) -> Self {
        Self {
            name,
            shape,
            packed: self.packed,
        }
    }

    /// CNTK's (column-major) shape of it, the batch included when packed.
    fn cntk_shape(&self) -> Vec<usize> {
        let mut s = reversed(&self.shape);
        if self.packed {
            s.push(1);
        }
        s
    }
}

/// What a function's input is: an activation, or a parameter or constant (as stored, or
/// computed here from others).
enum Operand {
    Value(Val),
    Var(String, Rc<Var>),
}

/// Ops computed here when all their inputs are parameters or constants (an ONNX import
/// reshapes and scales its weights in the graph).
const FOLDABLE: &[&str] = &[
    "Reshape",
    "ElementTimes",
    "Plus",
    "Minus",
    "TransposeAxes",
    "Negate",
];

struct Translator<'n> {
    net: &'n Net,
    ir: IrBuilder,
    tensors: BTreeMap<String, WeightTensor>,
    /// IR names of parameters already made, by uid.
    params: BTreeMap<String, String>,
    values: BTreeMap<String, Val>,
    /// Placeholders and block outputs → the value they stand for.
    alias: BTreeMap<String, String>,
    /// Function index by the value it computes.
    producer: BTreeMap<String, usize>,
    /// The functions reading each value, once per reading (for fusing a bias into its
    /// Conv or Gemm).
    readers: BTreeMap<String, Vec<usize>>,
    /// The innermost named block that lists a parameter among its inputs.
    owner: BTreeMap<String, String>,
    /// Functions already folded into the one before them (a bias Plus).
    fused: BTreeSet<usize>,
    /// Names of the named blocks, by the value they compute (resolved).
    block_names: BTreeMap<String, String>,
    /// Parameters and constants, and what functions of them computed here.
    consts: BTreeMap<String, Rc<Var>>,
    /// The image input holds its batch as a static axis (an ONNX import).
    input_packed: bool,
    input: Option<ValueInfo>,
}

fn reversed(shape: &[usize]) -> Vec<usize> {
    shape.iter().rev().copied().collect()
}

fn is_activation_block(f: &Func) -> bool {
    f.block
        .as_ref()
        .is_some_and(|b| ACTIVATION_BLOCKS.contains(&b.op_name.as_str()) && b.arguments.len() == 1)
}

/// Translates a CNTK network into the runtime's graph and its weights.
pub(crate) fn translate(net: &Net) -> R<(BTreeMap<String, WeightTensor>, Graph)> {
    if net.funcs.len() > MAX_FUNCTIONS {
        return Err(unsupported(format!(
            "{} functions; at most {MAX_FUNCTIONS} are read",
            net.funcs.len()
        )));
    }
    let mut t = Translator {
        net,
        ir: IrBuilder::avoiding(std::iter::empty()),
        tensors: BTreeMap::new(),
        params: BTreeMap::new(),
        values: BTreeMap::new(),
        alias: BTreeMap::new(),
        producer: BTreeMap::new(),
        readers: BTreeMap::new(),
        owner: BTreeMap::new(),
        fused: BTreeSet::new(),
        block_names: BTreeMap::new(),
        consts: net
            .vars
            .iter()
            .filter(|(_, v)| v.kind != VarKind::Input)
            .map(|(k, v)| (k.clone(), Rc::new(v.clone())))
            .collect(),
        input_packed: false,
        input: None,
    };
    for (i, f) in net.funcs.iter().enumerate() {
        match &f.block {
            Some(b) if !is_activation_block(f) => {
                for (placeholder, outer) in &b.arguments {
                    t.alias.insert(placeholder.clone(), outer.clone());
                }
                for o in &f.outputs {
                    t.alias.insert(o.clone(), b.root.clone());
                }
                if !f.name.is_empty() {
                    for v in &f.inputs {
                        if net.vars.contains_key(v) && !t.owner.contains_key(v) {
                            t.owner.insert(v.clone(), f.name.clone());
                        }
                    }
                }
            }
            _ if f.op == "Combine" => {
                // A Combine's i-th output is its i-th input.
                for (k, v) in f.inputs.iter().enumerate() {
                    t.alias.insert(format!("{}_Output_{k}", f.uid), v.clone());
                }
            }
            _ => {
                for o in &f.outputs {
                    t.producer.insert(o.clone(), i);
                }
            }
        }
    }
    for f in &net.funcs {
        if let Some(b) = &f.block
            && !f.name.is_empty()
            && !is_activation_block(f)
        {
            let v = t.resolve(&b.root)?;
            t.block_names.entry(v).or_insert_with(|| f.name.clone());
        }
    }
    let output = t.model_output()?;
    let order = t.order(&output)?;
    for &i in &order {
        for v in t.func_inputs(&net.funcs[i]) {
            t.readers.entry(v).or_default().push(i);
        }
    }
    for &i in &order {
        t.fold(i)?;
    }
    for &i in &order {
        let f = &net.funcs[i];
        if !t.fused.contains(&i) && !f.outputs.iter().all(|o| t.consts.contains_key(o)) {
            t.function(i)?;
        }
    }
    let out = t.value(&output)?;
    let input_packed = t.input_packed;
    let input = t
        .input
        .take()
        .ok_or_else(|| unsupported("the model's output does not depend on an image input"))?;
    let ir = Graph {
        format: "cntk".into(),
        producer: net.description.clone(),
        opset: OPSET,
        input,
        extra_inputs: vec![],
        output: ValueInfo {
            name: out.name,
            dims: vec![None; out.shape.len() + 1],
        },
        nodes: t.ir.nodes,
        params: t.ir.params,
        constants: t.ir.constants,
        // CNTK's image reader gives BGR pixels in 0..255, which its models are trained on;
        // a model imported from ONNX (its batch a static axis) expects what ONNX files do.
        input_scaling: (!input_packed).then_some(InputScaling {
            mean: [0.0; 3],
            std: [1.0 / 255.0; 3],
            bgr: true,
        }),
        weights_in_constants: vec![],
    };
    Ok((t.tensors, ir))
}

impl<'n> Translator<'n> {
    /// A value id with placeholders and block outputs followed to what they stand for.
    fn resolve(&self, id: &str) -> R<String> {
        let mut v = id.to_owned();
        for _ in 0..=self.alias.len() {
            match self.alias.get(&v) {
                Some(next) => v = next.clone(),
                None => return Ok(v),
            }
        }
        Err(corrupt(format!("the placeholders of `{id}` form a cycle")))
    }

    /// A function's inputs, resolved; an activation block's is its one argument.
    fn func_inputs(&self, f: &Func) -> Vec<String> {
        let raw: Vec<&String> = match &f.block {
            Some(b) => b.arguments.iter().map(|(_, v)| v).collect(),
            None => f.inputs.iter().collect(),
        };
        raw.into_iter()
            .map(|v| self.resolve(v).unwrap_or_else(|_| v.clone()))
            .collect()
    }

    /// The model's output: the root's, or of a training graph's several outputs (the model
    /// combined with its loss and metric) the first that needs no input but the image.
    fn model_output(&self) -> R<String> {
        let outputs: Vec<String> = self
            .net
            .outputs
            .iter()
            .map(|o| self.resolve(o))
            .collect::<R<_>>()?;
        if outputs.len() == 1 {
            return Ok(outputs[0].clone());
        }
        for o in &outputs {
            let inputs = self.inputs_of(o)?;
            if inputs.len() == 1 && self.net.vars[&inputs[0]].shape.len() == 3 {
                return Ok(o.clone());
            }
        }
        Err(unsupported(format!(
            "none of the root's {} outputs is computed from one image input",
            outputs.len()
        )))
    }

    /// The input variables a value depends on.
    fn inputs_of(&self, v: &str) -> R<Vec<String>> {
        let order = self.order(v)?;
        let mut inputs = BTreeSet::new();
        let mut consider = |id: &String| {
            if self
                .net
                .vars
                .get(id)
                .is_some_and(|x| x.kind == VarKind::Input)
            {
                inputs.insert(id.clone());
            }
        };
        consider(&v.to_owned());
        for i in order {
            for id in self.func_inputs(&self.net.funcs[i]) {
                consider(&id);
            }
        }
        Ok(inputs.into_iter().collect())
    }

    /// The functions `output` needs, each after those it reads (iteratively: a file's
    /// depth must not exhaust the stack).
    fn order(&self, output: &str) -> R<Vec<usize>> {
        let mut order = Vec::new();
        // 0 unseen, 1 on the path, 2 done.
        let mut state = vec![0u8; self.net.funcs.len()];
        let mut stack: Vec<(usize, bool)> = Vec::new();
        if let Some(&i) = self.producer.get(output) {
            stack.push((i, false));
        }
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                state[i] = 2;
                order.push(i);
                continue;
            }
            match state[i] {
                2 => continue,
                1 => {
                    return Err(unsupported(format!(
                        "function `{}` is in a loop (a recurrent network, not an image model)",
                        self.net.funcs[i].uid
                    )));
                }
                _ => {}
            }
            state[i] = 1;
            stack.push((i, true));
            for v in self.func_inputs(&self.net.funcs[i]) {
                if let Some(&j) = self.producer.get(&v) {
                    match state[j] {
                        0 => stack.push((j, false)),
                        1 => {
                            return Err(unsupported(format!(
                                "function `{}` is in a loop (a recurrent network, not an \
                                 image model)",
                                self.net.funcs[j].uid
                            )));
                        }
                        _ => {}
                    }
                } else if !self.net.vars.contains_key(&v) {
                    return Err(corrupt(format!(
                        "`{v}`, an input of `{}`, is computed by no function",
                        self.net.funcs[i].uid
                    )));
                }
            }
        }
        Ok(order)
    }

    fn operand(&mut self, id: &str) -> R<Operand> {
        let id = self.resolve(id)?;
        if let Some(v) = self.values.get(&id) {
            return Ok(Operand::Value(v.clone()));
        }
        if let Some(c) = self.consts.get(&id) {
            return Ok(Operand::Var(id, c.clone()));
        }
        let net = self.net;
        match net.vars.get_key_value(&id) {
            Some((uid, var)) if var.kind == VarKind::Input => {
                Ok(Operand::Value(self.image_input(uid, var)?))
            }
            _ => Err(corrupt(format!("`{id}` is read before it is computed"))),
        }
    }

    /// A parameter or constant (stored or computed here), by value id.
    fn constant(&self, id: &str) -> Option<Rc<Var>> {
        self.consts.get(id).cloned()
    }

    /// Computes function `i` here if it is a reshape or element-wise op of constants.
    fn fold(&mut self, i: usize) -> R<()> {
        let f = &self.net.funcs[i];
        if f.block.is_some() || !FOLDABLE.contains(&f.op.as_str()) {
            return Ok(());
        }
        let inputs: Vec<Rc<Var>> = match self
            .func_inputs(f)
            .iter()
            .map(|v| self.constant(v))
            .collect::<Option<Vec<_>>>()
        {
            Some(v) if !v.is_empty() => v,
            _ => return Ok(()),
        };
        let data = |v: &Var| -> R<Vec<f32>> {
            v.value
                .clone()
                .ok_or_else(|| corrupt(format!("`{}` has no value", f.uid)))
        };
        let x = &inputs[0];
        let (shape, value) = match f.op.as_str() {
            "Reshape" => {
                let old = x.shape.clone();
                (reshaped(f, &old)?, data(x)?)
            }
            "Negate" => (x.shape.clone(), data(x)?.iter().map(|v| -v).collect()),
            "TransposeAxes" => {
                let rank = x.shape.len();
                let index = |key| match static_axis(f, key, rank) {
                    Some(StaticAxis::Index(a)) if a < rank => Some(a),
                    _ => None,
                };
                let (Some(a), Some(b)) = (index("axis1"), index("axis2")) else {
                    return Ok(());
                };
                // Row-major axes of the swap.
                let (ra, rb) = (rank - 1 - a, rank - 1 - b);
                let rm = reversed(&x.shape);
                let mut perm: Vec<usize> = (0..rank).collect();
                perm.swap(ra, rb);
                let out_rm: Vec<usize> = perm.iter().map(|&p| rm[p]).collect();
                let src = data(x)?;
                let mut out = vec![0f32; src.len()];
                let strides = row_major_strides(&rm);
                for (j, o) in out.iter_mut().enumerate() {
                    let mut rest = j;
                    let mut at = 0;
                    for (d, &n) in out_rm.iter().enumerate().rev() {
                        at += (rest % n) * strides[perm[d]];
                        rest /= n;
                    }
                    *o = src[at];
                }
                (reversed(&out_rm), out)
            }
            op => {
                if inputs.len() != 2 {
                    return Ok(());
                }
                let (a, b) = (reversed(&inputs[0].shape), reversed(&inputs[1].shape));
                let Some(out_rm) = broadcast(&a, &b) else {
                    return Err(unsupported(format!(
                        "{op} `{}` of shapes {:?} and {:?}",
                        f.uid, inputs[0].shape, inputs[1].shape
                    )));
                };
                let (da, db) = (data(&inputs[0])?, data(&inputs[1])?);
                // A weight scaled or offset by another: never more values than the larger
                // holds (a file is untrusted; an outer product of constants is no weight).
                let n = numel(&out_rm).unwrap_or(usize::MAX);
                if n > da.len().max(db.len()) {
                    return Err(unsupported(format!(
                        "{op} `{}` broadcasts constants of shapes {:?} and {:?} to more values \
                         than either holds",
                        f.uid, inputs[0].shape, inputs[1].shape
                    )));
                }
                let (sa, sb) = (row_major_strides(&a), row_major_strides(&b));
                let value: Vec<f32> = (0..n)
                    .map(|j| {
                        let (x, y) = (
                            da[broadcast_index(j, &out_rm, &a, &sa)],
                            db[broadcast_index(j, &out_rm, &b, &sb)],
                        );
                        match op {
                            "ElementTimes" => x * y,
                            "Plus" => x + y,
                            _ => x - y,
                        }
                    })
                    .collect();
                (reversed(&out_rm), value)
            }
        };
        let kind = if inputs.iter().any(|v| v.kind == VarKind::Parameter) {
            VarKind::Parameter
        } else {
            VarKind::Constant
        };
        let var = Rc::new(Var {
            name: x.name.clone(),
            kind,
            shape,
            value: Some(value),
        });
        for o in &f.outputs {
            self.consts.insert(o.clone(), var.clone());
        }
        Ok(())
    }

    fn value(&mut self, id: &str) -> R<Val> {
        match self.operand(id)? {
            Operand::Value(v) => Ok(v),
            Operand::Var(uid, _) => Err(unsupported(format!(
                "`{uid}` is a parameter where an activation is expected"
            ))),
        }
    }

    fn image_input(&mut self, uid: &str, var: &Var) -> R<Val> {
        // Values are kept by uid: a second call is a second input.
        if let Some(input) = &self.input {
            return Err(unsupported(format!(
                "the model reads two inputs (`{}` and `{uid}`); an image model reads one",
                input.name
            )));
        }
        // [W, H, C], or [W, H, C, 1] with the batch as a static axis (an ONNX import's).
        let packed = var.shape.len() == 4 && var.shape[3] == 1;
        if var.shape.len() != 3 && !packed {
            return Err(unsupported(format!(
                "input `{uid}` has shape {:?}; an image [W, H, C] is expected",
                var.shape
            )));
        }
        let shape = reversed(&var.shape[..3]);
        let name = if var.name.is_empty() {
            uid.to_owned()
        } else {
            self.ir.unique(&var.name)
        };
        self.input = Some(ValueInfo {
            name: name.clone(),
            dims: std::iter::once(None)
                .chain(shape.iter().map(|&d| Some(d)))
                .collect(),
        });
        self.input_packed = packed;
        let v = Val {
            name,
            shape,
            packed,
        };
        self.values.insert(uid.to_owned(), v.clone());
        Ok(v)
    }

    /// A node's name: the named block whose value it computes, the function's own name, or
    /// (within a named block) `<block>/<op>`, else its uid.
    fn node_name(&self, f: &Func) -> String {
        if let Some(n) = f.outputs.first().and_then(|o| self.block_names.get(o)) {
            return n.clone();
        }
        if !f.name.is_empty() {
            return f.name.clone();
        }
        let owned = f.inputs.iter().find_map(|v| self.owner.get(v));
        match owned {
            Some(layer) => format!("{layer}/{}", f.op.to_lowercase()),
            None => f.uid.clone(),
        }
    }

    /// The name of a convolution or dense node (`kind`) whose weight is `wid`, with the bias
    /// Plus `fused` into it: the block name of what it computes, else its layer's
    /// `<layer>/<kind>`, else `name`.
    fn weighted_name(
        &self,
        f: &Func,
        fused: Option<usize>,
        wid: &str,
        name: &str,
        kind: &str,
    ) -> String {
        let computes = fused.map_or(f, |j| &self.net.funcs[j]);
        if let Some(n) = computes
            .outputs
            .first()
            .and_then(|o| self.block_names.get(o))
        {
            return n.clone();
        }
        if !f.name.is_empty() {
            return f.name.clone();
        }
        match self.owner.get(wid) {
            Some(layer) => format!("{layer}/{kind}"),
            None => name.to_owned(),
        }
    }

    /// The layer a parameter belongs to, for naming it.
    fn owner_of(&self, uid: &str, f: &Func) -> String {
        if let Some(o) = self.owner.get(uid) {
            return o.clone();
        }
        if !f.name.is_empty() {
            return f.name.clone();
        }
        f.uid.clone()
    }

    /// A variable's values as a row-major tensor of the reversed shape (the same data).
    fn var_tensor(uid: &str, var: &Var) -> R<WeightTensor> {
        let data = var
            .value
            .clone()
            .ok_or_else(|| corrupt(format!("parameter `{uid}` has no value")))?;
        Ok(WeightTensor {
            dtype: DType::F32,
            shape: reversed(&var.shape),
            data,
            strided: false,
        })
    }

    /// A parameter (trained) or constant as an IR parameter named `<layer>.<role>`, with
    /// its tensor reshaped to `shape` (same element count, same order).
    fn param(
        &mut self,
        uid: &str,
        var: &Var,
        layer: &str,
        role: &str,
        shape: Vec<usize>,
    ) -> R<String> {
        if let Some(name) = self.params.get(uid) {
            return Ok(name.clone());
        }
        let mut t = Self::var_tensor(uid, var)?;
        if numel(&shape) != Some(t.data.len()) {
            return Err(corrupt(format!(
                "`{uid}` of shape {:?} cannot be read as {shape:?}",
                var.shape
            )));
        }
        t.shape = shape.clone();
        let name = self.ir.unique(&format!("{layer}.{role}"));
        self.ir.param(&name, &shape);
        self.tensors.insert(name.clone(), t);
        self.params.insert(uid.to_owned(), name.clone());
        Ok(name)
    }

    /// An element-wise operand: an activation (its static shape, whether its batch is
    /// packed), or a parameter/constant in its own shape (without a leading 1 standing for
    /// a packed batch when `packed`).
    fn elementwise(
        &mut self,
        id: &str,
        f: &Func,
        role: &str,
        packed: bool,
    ) -> R<(String, Vec<usize>, bool)> {
        match self.operand(id)? {
            Operand::Value(v) => Ok((v.name, v.shape, v.packed)),
            Operand::Var(uid, var) => {
                let uid = uid.as_str();
                let layer = self.owner_of(uid, f);
                let mut shape = reversed(&var.shape);
                if packed && shape.len() == 4 && shape[0] == 1 {
                    shape.remove(0);
                }
                let name =
                    if var.kind == VarKind::Constant && var.shape.iter().product::<usize>() <= 64 {
                        let data = var
                            .value
                            .clone()
                            .ok_or_else(|| corrupt(format!("constant `{uid}` has no value")))?;
                        self.ir
                            .float_constant(&format!("{layer}.{role}"), shape.clone(), data)
                    } else {
                        self.param(uid, &var, &layer, role, shape.clone())?
                    };
                Ok((name, shape, false))
            }
        }
    }

    fn set(&mut self, f: &Func, v: Val) {
        for o in &f.outputs {
            self.values.insert(o.clone(), v.clone());
        }
    }

    /// The function adding a bias to `f`'s output, if `f`'s output is read by it alone (or
    /// through ops that leave the tensor as it is: an ONNX import's batch unpacking): its
    /// index, the bias's uid, and the functions in between.
    fn bias_reader(&self, f: &Func) -> Option<(usize, String, Vec<usize>)> {
        let mut out = f.outputs.first()?.clone();
        let mut between = vec![];
        for _ in 0..4 {
            let [i] = self.readers.get(&out)?[..] else {
                return None;
            };
            let g = &self.net.funcs[i];
            if self.fused.contains(&i) || g.block.is_some() {
                return None;
            }
            match g.op.as_str() {
                "Plus" => {
                    let inputs = self.func_inputs(g);
                    let other = inputs.iter().find(|v| **v != out)?.clone();
                    return (inputs.len() == 2 && self.constant(&other).is_some())
                        .then_some((i, other, between));
                }
                "UnpackBatch" | "ToBatch" | "Pass" | "StopGradient" | "NoOp" => {
                    between.push(i);
                    out = g.outputs.first()?.clone();
                }
                _ => return None,
            }
        }
        None
    }

    /// Marks a bias Plus and the functions before it fused into the node computing `v`
    /// (which the Plus's output then is, its batch unpacked as theirs left it).
    fn fuse_bias(&mut self, plus: usize, between: &[usize], v: &Val) {
        let mut packed = v.packed;
        for &j in between {
            self.fused.insert(j);
            match self.net.funcs[j].op.as_str() {
                "UnpackBatch" => packed = true,
                "ToBatch" => packed = false,
                _ => {}
            }
        }
        self.fused.insert(plus);
        let f = &self.net.funcs[plus];
        self.set(
            f,
            Val {
                packed,
                ..v.clone()
            },
        );
    }

    fn function(&mut self, i: usize) -> R<()> {
        let net = self.net;
        let f = &net.funcs[i];
        let inputs = self.func_inputs(f);
        let name = self.node_name(f);
        let op = if is_activation_block(f) {
            f.block.as_ref().map_or("", |b| b.op_name.as_str())
        } else {
            f.op.as_str()
        };
        let unary = |t: &mut Self, ir_op: &str, attrs: Vec<(&str, Attr)>| -> R<()> {
            let x = t.value(first(&inputs, f)?)?;
            let y = t.ir.push(&name, ir_op, vec![x.name.clone()], attrs);
            let v = x.like(y, x.shape.clone());
            t.set(f, v);
            Ok(())
        };
        match op {
            _ if IDENTITIES.contains(&op) => {
                let x = self.value(first(&inputs, f)?)?;
                self.set(f, x);
            }
            "ReLU" => unary(self, "Relu", vec![])?,
            "Sigmoid" | "StableSigmoid" => unary(self, "Sigmoid", vec![])?,
            "Tanh" => unary(self, "Tanh", vec![])?,
            "Exp" => unary(self, "Exp", vec![])?,
            "Log" => unary(self, "Log", vec![])?,
            "Sqrt" => unary(self, "Sqrt", vec![])?,
            "Floor" => unary(self, "Floor", vec![])?,
            "Abs" => unary(self, "Abs", vec![])?,
            "Negate" => unary(self, "Neg", vec![])?,
            "Reciprocal" => unary(self, "Reciprocal", vec![])?,
            "ELU" => {
                let alpha = float(f, "alpha").unwrap_or(1.0);
                unary(self, "Elu", vec![("alpha", Attr::Float(alpha as f32))])?
            }
            "LeakyReLU" => {
                let alpha = float(f, "alpha").unwrap_or(0.01);
                unary(
                    self,
                    "LeakyRelu",
                    vec![("alpha", Attr::Float(alpha as f32))],
                )?
            }
            "Softmax" | "LogSoftmax" => self.softmax(f, &inputs, &name)?,
            "Plus" | "Minus" | "ElementTimes" => {
                let ir_op = match op {
                    "Plus" => "Add",
                    "Minus" => "Sub",
                    _ => "Mul",
                };
                let role = match op {
                    "Plus" => "bias",
                    "Minus" => "offset",
                    _ => "scale",
                };
                if inputs.len() != 2 {
                    return Err(corrupt(format!(
                        "{op} `{}` has {} inputs",
                        f.uid,
                        inputs.len()
                    )));
                }
                // Whether a value operand holds its batch packed, for the other's shape.
                let packed = inputs.iter().any(|v| {
                    self.resolve(v)
                        .ok()
                        .and_then(|v| self.values.get(&v))
                        .is_some_and(|x| x.packed)
                });
                let (a, sa, pa) = self.elementwise(&inputs[0], f, role, packed)?;
                let (b, sb, pb) = self.elementwise(&inputs[1], f, role, packed)?;
                let shape = broadcast(&sa, &sb).ok_or_else(|| {
                    unsupported(format!("{op} `{}` of shapes {sa:?} and {sb:?}", f.uid))
                })?;
                let y = self.ir.push(&name, ir_op, vec![a, b], vec![]);
                self.set(
                    f,
                    Val {
                        name: y,
                        shape,
                        packed: pa || pb,
                    },
                );
            }
            "Clip" => {
                let x = self.value(first(&inputs, f)?)?;
                let mut attrs = vec![];
                for (key, id) in ["min", "max"].iter().zip(inputs.iter().skip(1)) {
                    let bound = self
                        .constant(id)
                        .and_then(|c| c.value.clone())
                        .filter(|v| v.len() == 1)
                        .ok_or_else(|| {
                            unsupported(format!(
                                "Clip `{}` with a computed or non-scalar {key}",
                                f.uid
                            ))
                        })?;
                    attrs.push((*key, Attr::Float(bound[0])));
                }
                let y = self.ir.push(&name, "Clip", vec![x.name.clone()], attrs);
                self.set(f, x.like(y, x.shape.clone()));
            }
            // The batch axis made static and back: the tensor is the same.
            "ToBatch" | "UnpackBatch" => {
                let x = self.value(first(&inputs, f)?)?;
                let to_batch = op == "ToBatch";
                if x.packed != to_batch {
                    return Err(unsupported(format!(
                        "{op} `{}` of a value whose batch is {}",
                        f.uid,
                        if x.packed { "static" } else { "dynamic" }
                    )));
                }
                self.set(
                    f,
                    Val {
                        packed: !to_batch,
                        ..x
                    },
                );
            }
            "Pad" => self.pad(f, &inputs, &name)?,
            "Slice" => self.slice(f, &inputs, &name)?,
            "TransposeAxes" => self.transpose(f, &inputs, &name)?,
            "Convolution" => self.convolution(i, &inputs, &name)?,
            "Pooling" => self.pooling(f, &inputs, &name)?,
            "BatchNormalization" => self.batch_norm(f, &inputs, &name)?,
            "Times" => self.times(i, &inputs, &name)?,
            "Splice" => {
                let mut names = vec![];
                let mut shapes = vec![];
                let mut packed = vec![];
                for v in &inputs {
                    let x = self.value(v)?;
                    names.push(x.name);
                    shapes.push(x.shape);
                    packed.push(x.packed);
                }
                let rank = shapes.first().map_or(0, Vec::len);
                let packed = packed.first().copied().unwrap_or(false);
                let axis =
                    static_axis(f, "axis", rank + packed as usize).unwrap_or(StaticAxis::Index(0));
                let at = match axis {
                    StaticAxis::Index(a) if a < rank => Some(rank - 1 - a),
                    _ => None,
                };
                let at = at
                    .filter(|_| shapes.iter().all(|s| s.len() == rank))
                    .ok_or_else(|| {
                        unsupported(format!(
                            "Splice `{}` along axis {axis:?} of shapes {shapes:?}",
                            f.uid
                        ))
                    })?;
                let mut shape = shapes[0].clone();
                shape[at] = shapes.iter().map(|s| s[at]).sum();
                let y = self.ir.push(
                    &name,
                    "Concat",
                    names,
                    vec![("axis", Attr::Int(at as i64 + 1))],
                );
                self.set(
                    f,
                    Val {
                        name: y,
                        shape,
                        packed,
                    },
                );
            }
            "Reshape" => self.reshape(f, &inputs, &name)?,
            "ReduceElements" => self.reduce(f, &inputs, &name)?,
            "PastValue" | "FutureValue" | "OptimizedRNNStack" => {
                return Err(unsupported(format!(
                    "`{}` is a recurrent op ({op}): a sequence model, not an image model",
                    f.uid
                )));
            }
            other => {
                let named = if f.name.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", f.name)
                };
                return Err(unsupported(format!(
                    "the op {other} of function `{}`{named} is not supported",
                    f.uid
                )));
            }
        }
        Ok(())
    }

    fn softmax(&mut self, f: &Func, inputs: &[String], name: &str) -> R<()> {
        let x = self.value(first(inputs, f)?)?;
        let ir_op = if f.op == "LogSoftmax" {
            "LogSoftmax"
        } else {
            "Softmax"
        };
        let y = match static_axis(f, "axis", x.shape.len()) {
            Some(StaticAxis::Index(a)) if a < x.shape.len() => {
                let at = x.shape.len() - a;
                self.ir.push(
                    name,
                    ir_op,
                    vec![x.name.clone()],
                    vec![("axis", Attr::Int(at as i64))],
                )
            }
            // Over all of a sample's values.
            _ if x.shape.len() <= 1 => self.ir.push(
                name,
                ir_op,
                vec![x.name.clone()],
                vec![("axis", Attr::Int(-1))],
            ),
            _ => {
                let flat = self.ir.push(
                    &format!("{name}/flatten"),
                    "Flatten",
                    vec![x.name.clone()],
                    vec![("axis", Attr::Int(1))],
                );
                let s = self.ir.push(
                    &format!("{name}/softmax"),
                    ir_op,
                    vec![flat],
                    vec![("axis", Attr::Int(-1))],
                );
                let c = self.batch_shape(&format!("{name}/shape"), &x.shape);
                self.ir.push(name, "Reshape", vec![s, c], vec![])
            }
        };
        self.set(f, x.like(y, x.shape.clone()));
        Ok(())
    }

    /// A Convolution's or Times' operands: a parameter (`what`) first, then a value.
    fn weight_and_value(
        &mut self,
        f: &Func,
        inputs: &[String],
        what: &str,
    ) -> R<(String, Rc<Var>, Val)> {
        if inputs.len() != 2 {
            return Err(corrupt(format!(
                "{} `{}` has {} inputs",
                f.op,
                f.uid,
                inputs.len()
            )));
        }
        let Operand::Var(wid, w) = self.operand(&inputs[0])? else {
            return Err(unsupported(format!(
                "{} `{}` computes its first operand; {what} parameter is expected",
                f.op, f.uid
            )));
        };
        Ok((wid, w, self.value(&inputs[1])?))
    }

    fn convolution(&mut self, i: usize, inputs: &[String], name: &str) -> R<()> {
        let f = &self.net.funcs[i];
        if bool_attr(f, "transpose").unwrap_or(false) {
            return Err(unsupported(format!(
                "convolution `{}` is transposed (a deconvolution)",
                f.uid
            )));
        }
        let (wid, w, x) = self.weight_and_value(f, inputs, "a kernel")?;
        let (wid, w) = (wid.as_str(), &*w);
        // Kernel [kW, kH, Cin/groups, Cout] → OIHW.
        if w.shape.len() != 4 || x.shape.len() != 3 {
            return Err(unsupported(format!(
                "convolution `{}` of a {:?} kernel over a {:?} map; 2-d convolutions of \
                 [W, H, C] maps with [kW, kH, C, K] kernels are supported",
                f.uid,
                w.shape,
                reversed(&x.shape)
            )));
        }
        let [k_w, k_h, cin_g, cout] = [w.shape[0], w.shape[1], w.shape[2], w.shape[3]];
        // v1 files do not store the groups: a kernel over a part of the channels says them.
        let groups = match int_attr(f, "groups") {
            Some(g) => g.max(1) as usize,
            None if cin_g > 0 && x.shape[0] % cin_g == 0 => x.shape[0] / cin_g,
            None => 1,
        };
        if cin_g * groups != x.shape[0] || cout % groups != 0 {
            return Err(unsupported(format!(
                "convolution `{}`: a kernel of {cin_g} channels in {groups} groups over {} channels",
                f.uid, x.shape[0]
            )));
        }
        let geometry = Geometry::of(f, "strides")?;
        // Column-major axes: 0 = W, 1 = H, 2 = C.
        let (out_w, crop_w, pw) = geometry.axis(0, x.shape[2], k_w)?;
        let (out_h, crop_h, ph) = geometry.axis(1, x.shape[1], k_h)?;
        let (out_c, _, _) = geometry.axis(2, x.shape[0], cin_g)?;
        if out_c != 1 && groups == 1 {
            return Err(unsupported(format!(
                "convolution `{}` slides over the channels ({out_c} positions)",
                f.uid
            )));
        }
        let layer = self.owner_of(wid, f);
        let wname = self.param(wid, w, &layer, "weight", vec![cout, cin_g, k_h, k_w])?;
        // A per-channel bias [1, 1, K] (or [K] over a 1x1 map) added next is the Conv's.
        let bias = self.bias_reader(f).and_then(|(j, bid, between)| {
            let b = self.constant(&bid)?;
            // [1, 1, K] (and a packed batch's 1), or [K] over a 1x1 map.
            let s = &b.shape;
            let per_channel =
                s.len() >= 3 && s[..2] == [1, 1] && s[2] == cout && s[3..].iter().all(|&d| d == 1);
            (per_channel || (s[..] == [cout] && out_h * out_w == 1)).then_some((j, bid, b, between))
        });
        let name = &self.weighted_name(f, bias.as_ref().map(|b| b.0), wid, name, "conv");
        let x = self.crop(x, [crop_h, crop_w], name);
        let mut conv_inputs = vec![x.name, wname];
        if let Some((_, bid, b, _)) = &bias {
            conv_inputs.push(self.param(bid, b, &layer, "bias", vec![cout])?);
        }
        let y = self.ir.push(
            name,
            "Conv",
            conv_inputs,
            conv_attrs(&geometry, [ph, pw], groups),
        );
        let v = Val::new(y, vec![cout, out_h, out_w]);
        if let Some((j, _, _, between)) = bias {
            self.fuse_bias(j, &between, &v);
        }
        self.set(f, v);
        Ok(())
    }

    /// A Reshape's target: the batch as it is (0), then `shape`.
    fn batch_shape(&mut self, name: &str, shape: &[usize]) -> String {
        let dims = std::iter::once(0).chain(shape.iter().map(|&d| d as i64));
        self.ir.int_constant(name, dims.collect())
    }

    /// `x` without its first `[h, w]` rows and columns (no window reads them).
    fn crop(&mut self, x: Val, [h, w]: [usize; 2], name: &str) -> Val {
        if h == 0 && w == 0 {
            return x;
        }
        let starts = self
            .ir
            .int_constant(&format!("{name}/crop_starts"), vec![h as i64, w as i64]);
        let ends = self
            .ir
            .int_constant(&format!("{name}/crop_ends"), vec![i64::MAX; 2]);
        let axes = self
            .ir
            .int_constant(&format!("{name}/crop_axes"), vec![2, 3]);
        let y = self.ir.push(
            &format!("{name}/crop"),
            "Slice",
            vec![x.name.clone(), starts, ends, axes],
            vec![],
        );
        let shape = vec![x.shape[0], x.shape[1] - h, x.shape[2] - w];
        x.like(y, shape)
    }

    fn pooling(&mut self, f: &Func, inputs: &[String], name: &str) -> R<()> {
        let x = self.value(first(inputs, f)?)?;
        if x.shape.len() != 3 {
            return Err(unsupported(format!(
                "pooling `{}` of a {:?} value",
                f.uid, x.shape
            )));
        }
        let window = shape_attr(f, "poolingWindowShape")
            .ok_or_else(|| corrupt(format!("pooling `{}` has no window", f.uid)))?;
        if window.len() < 2 || window.iter().skip(2).any(|&d| d != 1) {
            return Err(unsupported(format!(
                "pooling `{}` over a {window:?} window; 2-d windows are supported",
                f.uid
            )));
        }
        let kind = int_attr(f, "poolingType").unwrap_or(0);
        let geometry = Geometry::of(f, "strides")?;
        let (out_w, crop_w, pw) = geometry.axis(0, x.shape[2], window[0] as usize)?;
        let (out_h, crop_h, ph) = geometry.axis(1, x.shape[1], window[1] as usize)?;
        let x = self.crop(x, [crop_h, crop_w], name);
        let [k_h, k_w] = [window[1] as i64, window[0] as i64];
        let global =
            [k_h, k_w] == [x.shape[1] as i64, x.shape[2] as i64] && (ph, pw) == ((0, 0), (0, 0));
        let y = match (kind, global) {
            (0, true) => self
                .ir
                .push(name, "GlobalMaxPool", vec![x.name.clone()], vec![]),
            (1, true) => self
                .ir
                .push(name, "GlobalAveragePool", vec![x.name.clone()], vec![]),
            (0 | 1, false) => {
                let mut attrs = vec![
                    ("kernel_shape", Attr::Ints(vec![k_h, k_w])),
                    (
                        "strides",
                        Attr::Ints(vec![geometry.stride(1), geometry.stride(0)]),
                    ),
                    (
                        "pads",
                        Attr::Ints(vec![ph.0 as i64, pw.0 as i64, ph.1 as i64, pw.1 as i64]),
                    ),
                ];
                if kind == 1 {
                    let include = bool_attr(f, "includePad").unwrap_or(false);
                    attrs.push(("count_include_pad", Attr::Int(include as i64)));
                }
                let op = if kind == 0 { "MaxPool" } else { "AveragePool" };
                self.ir.push(name, op, vec![x.name.clone()], attrs)
            }
            _ => {
                return Err(unsupported(format!(
                    "pooling `{}` of type {kind}; max (0) and average (1) are supported",
                    f.uid
                )));
            }
        };
        self.set(f, Val::new(y, vec![x.shape[0], out_h, out_w]));
        Ok(())
    }

    fn batch_norm(&mut self, f: &Func, inputs: &[String], name: &str) -> R<()> {
        if inputs.len() < 5 {
            return Err(corrupt(format!(
                "batch normalisation `{}` has {} inputs",
                f.uid,
                inputs.len()
            )));
        }
        let x = self.value(&inputs[0])?;
        let spatial = bool_attr(f, "spatial").unwrap_or(true);
        let epsilon = float(f, "epsilon").unwrap_or(1e-5);
        let n = if spatial {
            *x.shape.first().ok_or_else(|| {
                unsupported(format!("batch normalisation `{}` of a scalar", f.uid))
            })?
        } else {
            numel(&x.shape).unwrap_or(0)
        };
        let mut names = vec![];
        for (id, role) in inputs[1..5]
            .iter()
            .zip(["weight", "bias", "running_mean", "running_var"])
        {
            let Operand::Var(uid, var) = self.operand(id)? else {
                return Err(unsupported(format!(
                    "batch normalisation `{}` computes its {role}; parameters are expected",
                    f.uid
                )));
            };
            let (uid, var) = (uid.as_str(), &*var);
            if var.value.as_ref().map(Vec::len) != Some(n) {
                return Err(unsupported(format!(
                    "batch normalisation `{}`: its {role} has shape {:?} for a {:?} value ({})",
                    f.uid,
                    var.shape,
                    reversed(&x.shape),
                    if spatial {
                        "per channel"
                    } else {
                        "per element"
                    }
                )));
            }
            let layer = self.owner_of(uid, f);
            names.push(self.param(uid, var, &layer, role, vec![n])?);
        }
        let attrs = vec![("epsilon", Attr::Float(epsilon as f32))];
        let y = if spatial || x.shape.len() <= 1 {
            let mut ins = vec![x.name.clone()];
            ins.extend(names);
            self.ir.push(name, "BatchNormalization", ins, attrs)
        } else {
            // Per element of a map: a BatchNorm of the flattened values.
            let flat = self.ir.push(
                &format!("{name}/flatten"),
                "Flatten",
                vec![x.name.clone()],
                vec![("axis", Attr::Int(1))],
            );
            let mut ins = vec![flat];
            ins.extend(names);
            let bn = self
                .ir
                .push(&format!("{name}/bn"), "BatchNormalization", ins, attrs);
            let c = self.batch_shape(&format!("{name}/shape"), &x.shape);
            self.ir.push(name, "Reshape", vec![bn, c], vec![])
        };
        self.set(f, x.like(y, x.shape.clone()));
        Ok(())
    }

    fn times(&mut self, i: usize, inputs: &[String], name: &str) -> R<()> {
        let f = &self.net.funcs[i];
        let (wid, w, x) = self.weight_and_value(f, inputs, "a weight")?;
        let (wid, w) = (wid.as_str(), &*w);
        let out_rank = int_attr(f, "outputRank").unwrap_or(1).max(0) as usize;
        if out_rank > w.shape.len() {
            return Err(corrupt(format!(
                "Times `{}`: output rank {out_rank} of a {:?} weight",
                f.uid, w.shape
            )));
        }
        // W [out…, in…] (column-major) times x [in…].
        let outs = &w.shape[..out_rank];
        let n_out = numel(outs).unwrap_or(0);
        let n_in = numel(&w.shape[out_rank..]).unwrap_or(0);
        if numel(&x.shape) != Some(n_in) || n_out == 0 {
            return Err(unsupported(format!(
                "Times `{}` of a {:?} weight and a {:?} value",
                f.uid,
                w.shape,
                reversed(&x.shape)
            )));
        }
        let layer = self.owner_of(wid, f);
        let wname = self.dense_weight(wid, w, &layer, n_out, n_in)?;
        let bias = self.bias_reader(f).and_then(|(j, bid, between)| {
            // [out…], or with trailing 1s (BrainScript's [10, 1]).
            let b = self.constant(&bid)?;
            let s = &b.shape;
            (s.len() >= outs.len()
                && s[..outs.len()] == *outs
                && s[outs.len()..].iter().all(|&d| d == 1))
            .then_some((j, bid, b, between))
        });
        let name = &self.weighted_name(f, bias.as_ref().map(|b| b.0), wid, name, "linear");
        let flat = if x.shape.len() == 1 {
            x.name.clone()
        } else {
            self.ir.push(
                &format!("{name}/flatten"),
                "Flatten",
                vec![x.name.clone()],
                vec![("axis", Attr::Int(1))],
            )
        };
        let mut gemm = vec![flat, wname];
        if let Some((_, bid, b, _)) = &bias {
            gemm.push(self.param(bid, b, &layer, "bias", vec![n_out])?);
        }
        let mut y = self
            .ir
            .push(name, "Gemm", gemm, vec![("transB", Attr::Int(1))]);
        let shape = reversed(outs);
        if shape.len() != 1 {
            let c = self.batch_shape(&format!("{name}/shape"), &shape);
            y = self
                .ir
                .push(&format!("{name}/reshape"), "Reshape", vec![y, c], vec![]);
        }
        let v = x.like(y, shape);
        if let Some((j, _, _, between)) = bias {
            self.fuse_bias(j, &between, &v);
        }
        self.set(f, v);
        Ok(())
    }

    /// A dense weight as the (out, in) matrix a Gemm with `transB` reads: CNTK's column-major
    /// [out, in] is the row-major (in, out) matrix, transposed here once.
    fn dense_weight(
        &mut self,
        uid: &str,
        var: &Var,
        layer: &str,
        n_out: usize,
        n_in: usize,
    ) -> R<String> {
        if let Some(name) = self.params.get(uid) {
            return Ok(name.clone());
        }
        let t = Self::var_tensor(uid, var)?;
        let mut data = vec![0f32; t.data.len()];
        for i in 0..n_in {
            for o in 0..n_out {
                data[o * n_in + i] = t.data[i * n_out + o];
            }
        }
        let name = self.ir.unique(&format!("{layer}.weight"));
        self.ir.param(&name, &[n_out, n_in]);
        self.tensors.insert(
            name.clone(),
            WeightTensor {
                dtype: DType::F32,
                shape: vec![n_out, n_in],
                data,
                strided: false,
            },
        );
        self.params.insert(uid.to_owned(), name.clone());
        Ok(name)
    }

    /// A static axis of `x` an attribute value names, as a column-major index below its
    /// rank (a packed batch is no static axis here).
    fn axis_of(f: &Func, v: &Value, x: &Val) -> R<usize> {
        let rank = x.shape.len();
        match static_axis_of(v, rank + x.packed as usize) {
            Some(StaticAxis::Index(a)) if a < rank => Ok(a),
            _ => Err(unsupported(format!(
                "{} `{}` along {v:?}, not a static axis of a {:?} value",
                f.op, f.uid, x.shape
            ))),
        }
    }

    fn slice(&mut self, f: &Func, inputs: &[String], name: &str) -> R<()> {
        let x = self.value(first(inputs, f)?)?;
        let ints = |key: &str| -> Vec<i64> {
            match attr(f, key) {
                Some(Value::List(v)) => v
                    .iter()
                    .map(|d| match d {
                        Value::Int(i) => *i,
                        _ => 0,
                    })
                    .collect(),
                Some(Value::Int(i)) => vec![*i],
                _ => vec![],
            }
        };
        let axes: Vec<Value> = match attr(f, "axisVec").or_else(|| attr(f, "axis")) {
            Some(Value::List(v)) => v.clone(),
            Some(v) => vec![v.clone()],
            None => return Err(corrupt(format!("Slice `{}` names no axis", f.uid))),
        };
        let pick = |vec: &str, one: &str| {
            let v = ints(vec);
            if v.is_empty() { ints(one) } else { v }
        };
        let (begins, ends) = (
            pick("beginIndexVec", "beginIndex"),
            pick("endIndexVec", "endIndex"),
        );
        let mut strides = pick("sliceStridesVec", "sliceStrides");
        strides.resize(axes.len(), 1);
        if begins.len() != axes.len() || ends.len() != axes.len() {
            return Err(corrupt(format!(
                "Slice `{}`: axes and indices differ in number",
                f.uid
            )));
        }
        let rank = x.shape.len();
        let mut shape = x.shape.clone();
        let (mut starts_ir, mut ends_ir, mut axes_ir, mut steps) = (vec![], vec![], vec![], vec![]);
        for (k, v) in axes.iter().enumerate() {
            let a = Self::axis_of(f, v, &x)?;
            let r = rank - 1 - a;
            let dim = x.shape[r] as i64;
            // Negative indices count from the end; an end of 0 or less too (0 = the end).
            let b = if begins[k] < 0 {
                begins[k] + dim
            } else {
                begins[k]
            };
            let e = if ends[k] <= 0 { ends[k] + dim } else { ends[k] };
            let step = strides[k];
            if !(0..=dim).contains(&b) || !(0..=dim).contains(&e) || b >= e || step < 1 {
                return Err(unsupported(format!(
                    "Slice `{}` of {b}..{e} (step {step}) along an axis of {dim}",
                    f.uid
                )));
            }
            shape[r] = ((e - b + step - 1) / step) as usize;
            starts_ir.push(b);
            ends_ir.push(e);
            axes_ir.push(r as i64 + 1);
            steps.push(step);
        }
        let mut ins = vec![x.name.clone()];
        for (what, v) in [
            ("starts", starts_ir),
            ("ends", ends_ir),
            ("axes", axes_ir),
            ("steps", steps),
        ] {
            ins.push(self.ir.int_constant(&format!("{name}/{what}"), v));
        }
        let y = self.ir.push(name, "Slice", ins, vec![]);
        self.set(f, x.like(y, shape));
        Ok(())
    }

    fn transpose(&mut self, f: &Func, inputs: &[String], name: &str) -> R<()> {
        let x = self.value(first(inputs, f)?)?;
        let rank = x.shape.len();
        // Column-major: out.dims[i] = in.dims[perm[i]].
        let perm: Vec<usize> = match attr(f, "axisVec") {
            Some(Value::List(v)) => v
                .iter()
                .map(|a| Self::axis_of(f, a, &x))
                .collect::<R<_>>()?,
            _ => {
                let (a, b) = match (attr(f, "axis1"), attr(f, "axis2")) {
                    (Some(a), Some(b)) => (Self::axis_of(f, a, &x)?, Self::axis_of(f, b, &x)?),
                    _ => return Err(corrupt(format!("TransposeAxes `{}` names no axes", f.uid))),
                };
                let mut p: Vec<usize> = (0..rank).collect();
                p.swap(a, b);
                p
            }
        };
        let mut sorted = perm.clone();
        sorted.sort_unstable();
        if sorted != (0..rank).collect::<Vec<_>>() {
            return Err(unsupported(format!(
                "TransposeAxes `{}`: {perm:?} is not a permutation of {rank} axes",
                f.uid
            )));
        }
        // Row-major output axis r is column-major i = rank-1-r, read from input axis perm[i].
        let mut ir_perm = vec![0i64];
        ir_perm.extend((0..rank).map(|r| (rank - 1 - perm[rank - 1 - r]) as i64 + 1));
        let shape: Vec<usize> = (0..rank)
            .map(|r| x.shape[rank - 1 - perm[rank - 1 - r]])
            .collect();
        let y = self.ir.push(
            name,
            "Transpose",
            vec![x.name.clone()],
            vec![("perm", Attr::Ints(ir_perm))],
        );
        self.set(f, x.like(y, shape));
        Ok(())
    }

    fn pad(&mut self, f: &Func, inputs: &[String], name: &str) -> R<()> {
        let x = self.value(first(inputs, f)?)?;
        let amounts = |key| -> Vec<i64> {
            match attr(f, key) {
                Some(Value::List(v)) => v
                    .iter()
                    .map(|d| match d {
                        Value::Int(i) => *i,
                        _ => -1,
                    })
                    .collect(),
                Some(Value::Shape(v)) => v.iter().map(|&d| d as i64).collect(),
                _ => vec![],
            }
        };
        // Column-major, one per static axis (a packed batch's last).
        let rank = x.shape.len();
        let (mut head, mut foot) = (amounts("paddingHead"), amounts("paddingFoot"));
        head.resize(rank + x.packed as usize, 0);
        foot.resize(rank + x.packed as usize, 0);
        let bad = |why: &str| unsupported(format!("Pad `{}`: {why}", f.uid));
        if head
            .iter()
            .chain(&foot)
            .any(|&p| !(0..1 << 20).contains(&p))
        {
            return Err(bad("padding amounts out of range"));
        }
        if x.packed && (head[rank] != 0 || foot[rank] != 0) {
            return Err(bad("it pads the batch"));
        }
        let mode = match int_attr(f, "paddingMode").unwrap_or(0) {
            0 => "constant",
            1 => "reflect",
            m => {
                return Err(bad(&format!(
                    "padding mode {m} (symmetric) is not supported"
                )));
            }
        };
        // ONNX pads: [N, C, H, W begins, then ends], row-major.
        let mut pads = vec![0i64];
        pads.extend((0..rank).rev().map(|a| head[a]));
        pads.push(0);
        pads.extend((0..rank).rev().map(|a| foot[a]));
        let shape: Vec<usize> = (0..rank)
            .map(|r| x.shape[r] + (head[rank - 1 - r] + foot[rank - 1 - r]) as usize)
            .collect();
        let value = float(f, "paddingConstantValue").unwrap_or(0.0);
        let y = self.ir.push(
            name,
            "Pad",
            vec![x.name.clone()],
            vec![
                ("mode", Attr::String(mode.into())),
                ("pads", Attr::Ints(pads)),
                ("value", Attr::Float(value as f32)),
            ],
        );
        self.set(f, x.like(y, shape));
        Ok(())
    }

    fn reshape(&mut self, f: &Func, inputs: &[String], name: &str) -> R<()> {
        let x = self.value(first(inputs, f)?)?;
        let mut shape = reversed(&reshaped(f, &x.cntk_shape())?);
        // A packed batch stays the first axis, of size 1.
        if x.packed && shape.first() != Some(&1) {
            return Err(unsupported(format!(
                "reshape `{}` moves the batch of a {:?} value to {shape:?}",
                f.uid,
                x.cntk_shape()
            )));
        }
        if x.packed {
            shape.remove(0);
        }
        let c = self.batch_shape(&format!("{name}/shape"), &shape);
        let y = self
            .ir
            .push(name, "Reshape", vec![x.name.clone(), c], vec![]);
        self.set(f, x.like(y, shape));
        Ok(())
    }

    fn reduce(&mut self, f: &Func, inputs: &[String], name: &str) -> R<()> {
        let x = self.value(first(inputs, f)?)?;
        let ir_op = match string_attr(f, "reductionOpName").unwrap_or("Sum") {
            "Sum" => "ReduceSum",
            "Mean" => "ReduceMean",
            "Max" => "ReduceMax",
            other => {
                return Err(unsupported(format!(
                    "reduction {other} of `{}`; Sum, Mean and Max are supported",
                    f.uid
                )));
            }
        };
        let rank = x.shape.len();
        // `axis`, or `axisVec` (what Python's reductions write); IR axes, batch first.
        let named: Vec<Value> = match (attr(f, "axisVec"), attr(f, "axis")) {
            (Some(Value::List(v)), _) => v.clone(),
            (_, Some(v)) => vec![v.clone()],
            _ => vec![Value::Axis {
                static_index: ALL_STATIC_AXES,
                name: String::new(),
            }],
        };
        let mut axes = BTreeSet::new();
        for v in &named {
            match static_axis_of(v, rank + x.packed as usize) {
                Some(StaticAxis::Index(a)) if a < rank => {
                    axes.insert(rank - a);
                }
                Some(StaticAxis::All) => axes.extend(1..=rank),
                _ => {
                    return Err(unsupported(format!(
                        "reduction `{}` over a dynamic axis (batch or sequence)",
                        f.uid
                    )));
                }
            }
        }
        let axes: Vec<usize> = axes.into_iter().collect();
        let keep = bool_attr(f, "reductionKeepDimensions").unwrap_or(true);
        let mut shape = x.shape.clone();
        for &a in axes.iter().rev() {
            if keep {
                shape[a - 1] = 1;
            } else {
                shape.remove(a - 1);
            }
        }
        let y = self.ir.push(
            name,
            ir_op,
            vec![x.name.clone()],
            vec![
                ("axes", Attr::Ints(axes.iter().map(|&a| a as i64).collect())),
                ("keepdims", Attr::Int(keep as i64)),
            ],
        );
        self.set(f, x.like(y, shape));
        Ok(())
    }
}

/// The column-major shape a Reshape makes of `old`: `old[..begin] + newShape +
/// old[end..]`, an inferred dimension (0 or u64::MAX) taking what is left.
fn reshaped(f: &Func, old: &[usize]) -> R<Vec<usize>> {
    let new = shape_attr(f, "newShape")
        .ok_or_else(|| corrupt(format!("reshape `{}` has no shape", f.uid)))?;
    let rank = old.len();
    let index = |key| match static_axis(f, key, rank) {
        Some(StaticAxis::Index(a)) => Some(a),
        _ => None,
    };
    let begin = index("beginAxis").unwrap_or(0);
    let end = index("endAxis").unwrap_or(rank);
    if begin > end {
        return Err(corrupt(format!(
            "reshape `{}` of axes {begin}..{end}",
            f.uid
        )));
    }
    let mut dims: Vec<Option<usize>> = old[..begin].iter().map(|&d| Some(d)).collect();
    dims.extend(
        new.iter()
            .map(|&d| (d != u64::MAX && d != 0).then_some(d as usize)),
    );
    dims.extend(old[end..].iter().map(|&d| Some(d)));
    let known = dims
        .iter()
        .flatten()
        .try_fold(1usize, |n, &d| n.checked_mul(d));
    let total = numel(old).unwrap_or(0);
    let unknown = dims.iter().filter(|d| d.is_none()).count();
    match (unknown, known) {
        (0, Some(k)) if k == total => Ok(dims.into_iter().flatten().collect()),
        (1, Some(k)) if k > 0 && total.is_multiple_of(k) => {
            Ok(dims.into_iter().map(|d| d.unwrap_or(total / k)).collect())
        }
        _ => Err(unsupported(format!(
            "reshape `{}` of a {old:?} value to {new:?}",
            f.uid
        ))),
    }
}

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// The index into a row-major tensor of shape `from` (its `strides`), broadcast to `to`,
/// of element `j` of `to`.
fn broadcast_index(j: usize, to: &[usize], from: &[usize], strides: &[usize]) -> usize {
    let offset = to.len() - from.len();
    let mut rest = j;
    let mut at = 0;
    for d in (0..to.len()).rev() {
        let i = rest % to[d];
        rest /= to[d];
        if d >= offset && from[d - offset] != 1 {
            at += i * strides[d - offset];
        }
    }
    at
}

fn first<'a>(inputs: &'a [String], f: &Func) -> R<&'a String> {
    inputs
        .first()
        .ok_or_else(|| corrupt(format!("{} `{}` has no input", f.op, f.uid)))
}

fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| {
        if i + s.len() >= n {
            s[i + s.len() - n]
        } else {
            1
        }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

fn attr<'f>(f: &'f Func, key: &str) -> Option<&'f Value> {
    f.attrs.get(key)
}

fn float(f: &Func, key: &str) -> Option<f64> {
    match attr(f, key)? {
        Value::Float(x) => Some(*x),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

fn int_attr(f: &Func, key: &str) -> Option<i64> {
    match attr(f, key)? {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn bool_attr(f: &Func, key: &str) -> Option<bool> {
    match attr(f, key)? {
        Value::Bool(b) => Some(*b),
        Value::Int(i) => Some(*i != 0),
        _ => None,
    }
}

fn string_attr<'f>(f: &'f Func, key: &str) -> Option<&'f str> {
    match attr(f, key)? {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

fn shape_attr(f: &Func, key: &str) -> Option<Vec<u64>> {
    match attr(f, key)? {
        Value::Shape(s) => Some(s.clone()),
        _ => None,
    }
}

/// A static axis an attribute names, of a value of `rank` static axes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StaticAxis {
    /// Column-major index (0 = the innermost axis, W of an image); `rank` = the end.
    Index(usize),
    All,
}

/// CNTK's axis sentinels (Common.cpp): AllStaticAxes, EndStaticAxis, AllAxes.
pub(super) const ALL_STATIC_AXES: i32 = i32::MAX - 1;
const END_STATIC_AXIS: i32 = i32::MAX - 3;
const ALL_AXES: i32 = i32::MAX - 4;

/// The static axis attribute `key` names (see [`static_axis_of`]).
fn static_axis(f: &Func, key: &str, rank: usize) -> Option<StaticAxis> {
    static_axis_of(attr(f, key)?, rank)
}

/// The static axis an attribute value names, normalised: negative indices count from the
/// end (Python's axis p is stored as -p-1); `None` for a dynamic axis or one out of range.
fn static_axis_of(v: &Value, rank: usize) -> Option<StaticAxis> {
    let k = match v {
        Value::Axis { static_index, .. } => *static_index,
        Value::Int(i) => i32::try_from(*i).ok()?,
        _ => return None,
    };
    match k {
        ALL_STATIC_AXES | ALL_AXES => Some(StaticAxis::All),
        END_STATIC_AXIS => Some(StaticAxis::Index(rank)),
        k if k < 0 => usize::try_from(rank as i64 + k as i64)
            .ok()
            .map(StaticAxis::Index),
        k if (k as usize) <= rank => Some(StaticAxis::Index(k as usize)),
        _ => None,
    }
}

/// A convolution's or pooling's per-axis settings (column-major axes; a list shorter than
/// the rank repeats its last entry, as CNTK's `ConvolveGeometry` does).
struct Geometry {
    strides: Vec<u64>,
    auto_pad: Vec<bool>,
    lower: Vec<u64>,
    upper: Vec<u64>,
    dilation: Vec<u64>,
    ceil: bool,
    uid: String,
}

impl Geometry {
    fn of(f: &Func, strides: &str) -> R<Self> {
        let auto_pad = match attr(f, "autoPadding") {
            Some(Value::List(v)) => v.iter().map(|b| matches!(b, Value::Bool(true))).collect(),
            Some(Value::Bool(b)) => vec![*b],
            _ => vec![false],
        };
        Ok(Self {
            strides: shape_attr(f, strides).unwrap_or_else(|| vec![1]),
            auto_pad,
            lower: shape_attr(f, "lowerPad").unwrap_or_else(|| vec![0]),
            upper: shape_attr(f, "upperPad").unwrap_or_else(|| vec![0]),
            dilation: shape_attr(f, "dilation").unwrap_or_else(|| vec![1]),
            ceil: bool_attr(f, "ceilOutDim").unwrap_or(false),
            uid: f.uid.clone(),
        })
    }

    fn at<T: Copy>(v: &[T], i: usize, default: T) -> T {
        v.get(i).or(v.last()).copied().unwrap_or(default)
    }

    fn stride(&self, i: usize) -> i64 {
        Self::at(&self.strides, i, 1).max(1) as i64
    }

    fn dilation(&self, i: usize) -> i64 {
        Self::at(&self.dilation, i, 1).max(1) as i64
    }

    /// Output size, the leading inputs no window reads, and (before, after) padding along
    /// column-major axis `i` of size `n` for a kernel of `k`: CNTK's `ConvolveGeometry`.
    /// Auto-padding gives ceil(n / stride) outputs, the windows centred on the input (an odd
    /// kernel's spare padding cell before, an even kernel's after). The padding after may
    /// be negative (the last window ends before the input does: no padding then, the same
    /// outputs); so may the padding before, with strides of 3 or more: the first window
    /// starts inside the input, whose leading values are cropped.
    fn axis(&self, i: usize, n: usize, k: usize) -> R<(usize, usize, (usize, usize))> {
        let (n, k) = (n as i64, k as i64);
        let s = self.stride(i);
        let d = self.dilation(i);
        let bad = || corrupt(format!("`{}`: a kernel of {k} over {n} values", self.uid));
        if k < 1 || n < 1 || s > 1 << 20 || d > 1 << 20 || k > 1 << 20 {
            return Err(bad());
        }
        let eff = (k - 1) * d + 1;
        let rounded = |steps: i64| {
            if self.ceil {
                (steps + s - 1).div_euclid(s) + 1
            } else {
                steps.div_euclid(s) + 1
            }
        };
        let (out, lo) = if Self::at(&self.auto_pad, i, false) {
            let out = rounded(n + d * (k - 1) - eff);
            let extra = n - ((out - 1) * s + 1);
            // C++ integer division truncates toward zero, as Rust's does.
            (out, (eff - 1) / 2 - extra / 2)
        } else {
            let lo = Self::at(&self.lower, i, 0) as i64;
            let hi = Self::at(&self.upper, i, 0) as i64;
            if lo > 1 << 20 || hi > 1 << 20 || n + lo + hi < eff {
                return Err(bad());
            }
            (rounded(n + lo + hi - eff), lo)
        };
        if out < 1 {
            return Err(bad());
        }
        let crop = (-lo).max(0);
        let lo = lo.max(0);
        // The padding after that a floor-rounding runtime needs for `out` outputs.
        let hi = ((out - 1) * s + eff - (n - crop) - lo).max(0);
        Ok((out as usize, crop as usize, (lo as usize, hi as usize)))
    }
}

fn conv_attrs(
    g: &Geometry,
    [ph, pw]: [(usize, usize); 2],
    groups: usize,
) -> Vec<(&'static str, Attr)> {
    vec![
        ("strides", Attr::Ints(vec![g.stride(1), g.stride(0)])),
        ("dilations", Attr::Ints(vec![g.dilation(1), g.dilation(0)])),
        (
            "pads",
            Attr::Ints(vec![ph.0 as i64, pw.0 as i64, ph.1 as i64, pw.1 as i64]),
        ),
        ("group", Attr::Int(groups as i64)),
    ]
}
